#!/usr/bin/env bash
# Validates compose.yaml with compose itself, for every server model and with
# the crowd profile. (hadolint checks the Dockerfiles in ci/lint.sh.)
#
#   docker/lint.sh
set -euo pipefail

cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    compose=(docker-compose)
fi

for mode in iterative parallel preforked evented; do
    SERVER_MODE=$mode "${compose[@]}" --profile crowd config --quiet
done
echo "compose.yaml is valid for every server model"
