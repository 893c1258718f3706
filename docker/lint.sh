#!/usr/bin/env bash
# Validates compose.yaml with compose itself, for every server model and with
# the crowd profile, and the Swarm stack (docker/stack.yaml, alone and with
# docker/stack-host-port.yaml) for both endpoint modes. (hadolint checks the
# Dockerfiles in ci/lint.sh.)
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

# `docker stack config` (Docker 23 and later) reads the files as `docker
# stack deploy` does; elsewhere compose checks their syntax.
stack_config() {
    if docker stack config --help >/dev/null 2>&1; then
        docker stack config "${@/#/--compose-file=}" >/dev/null
    else
        "${compose[@]}" "${@/#/--file=}" config --quiet
    fi
}
for endpoint_mode in vip dnsrr; do
    TCPFILE_ENDPOINT_MODE=$endpoint_mode stack_config docker/stack.yaml
    TCPFILE_ENDPOINT_MODE=$endpoint_mode stack_config docker/stack.yaml docker/stack-host-port.yaml
done
echo "docker/stack.yaml is valid for both endpoint modes, alone and with docker/stack-host-port.yaml"
