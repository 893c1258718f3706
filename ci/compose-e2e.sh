#!/usr/bin/env bash
# Runs the compose lab end to end for each server model and checks what a user
# would look at: the clients' exit codes, the downloads against their sources,
# the conversations in the captures, a crowd of clients, a prompt stop, and
# that `down` leaves nothing. Validates compose.yaml first.
#
#   ci/compose-e2e.sh [iterative|parallel|preforked|evented ...]
#
# With no argument, all four models. TCPFILE_COMPOSE picks the compose: v2
# (`docker compose`, the default where it answers) or v1 (docker-compose).
# Needs Docker (ci/docker-engine.sh makes sure of it) and the static binaries:
# dist/<arch>/ is used as it is, and built with ci/build-static.sh when it is
# missing.
#
# A run has a compose project and folders of its own (tcpfile-e2e-PID, and
# captures/ and downloads/ in a temporary folder), so it never touches a lab
# a user runs, and two runs can share an engine. The checks live in
# ci/lab-checks.sh, which ci/arm-lab.sh runs on ARM images.
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "$#" -gt 0 ]; then
    modes=("$@")
else
    modes=(iterative parallel preforked evented)
fi
for mode in "${modes[@]}"; do
    case "$mode" in
        iterative | parallel | preforked | evented) ;;
        *) echo "error: unknown server model: $mode" >&2; exit 1 ;;
    esac
done

# shellcheck source=ci/lab-checks.sh
source ci/lab-checks.sh
lab_begin tcpfile-e2e

step "tools"
lab_tools

arch=$(docker version -f '{{.Server.Arch}}')
step "binaries and images"
declare -A TARGET_OF=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl)
for binaries in amd64 arm64; do
    if [ ! -f "dist/$binaries/SHA256SUMS" ]; then
        ci/build-static.sh "${TARGET_OF[$binaries]}"
    fi
done
ci/debian-base-image.sh
docker/build-images.sh
for other in amd64 arm64; do
    [ "$other" = "$arch" ] || docker/build-images.sh --scratch-only "$other"
done

for mode in "${modes[@]}"; do
    lab_check_model "$mode"
done
echo
echo "server models checked with ${compose_command[*]}: ${modes[*]}"
echo "compose-e2e: ${#modes[@]} passed, 0 failed"
