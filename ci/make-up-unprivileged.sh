#!/usr/bin/env bash
# Walks the quick start's `make up` the way a user who is not root does it:
# a user in the docker group, in a fresh clone of this checkout that the user
# owns, with the static binaries already built (no Rust needed). Checks the
# clients' results, that every file the lab wrote into the checkout belongs to
# that user (who can delete it), and that `make down` leaves nothing.
#
#   ci/make-up-unprivileged.sh
#
# Run as root: it creates the user tcpfile-lab when missing (and removes it
# again if it made it), and puts it in the docker group. The lab runs as a
# compose project of its own, so a lab that runs already is not touched.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
LAB_USER=tcpfile-lab
PROJECT=tcpfile-lab-$$
# Bounds, in seconds.
UP_LIMIT=600
CLIENTS_LIMIT=120
declare -A EXPECTED_EXIT=([client-ok]=0 [client-empty]=0 [client-refused]=4 [client-missing]=3)

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "run as root: it sets up the user it runs the lab as"
ci/docker-engine.sh
arch=$(docker version -f '{{.Server.Arch}}')
[ -f "dist/$arch/SHA256SUMS" ] || fail "dist/$arch/ holds no binaries; run ci/build-static.sh first"

created_user=false
if ! id "$LAB_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash "$LAB_USER"
    created_user=true
fi
groupadd -f docker
usermod -a -G docker "$LAB_USER"
# A dockerd started before the docker group existed made its socket root's.
socket=/var/run/docker.sock
if [ -S "$socket" ] && [ "$(stat -c %G "$socket")" != docker ]; then
    chgrp docker "$socket"
    chmod g+rw "$socket"
fi

work=$(mktemp -d /tmp/tcpfile-lab.XXXXXX)
lab=$work/tcpfile
as_user() {
    runuser -u "$LAB_USER" -- env -i HOME="$(getent passwd "$LAB_USER" | cut -d: -f6)" \
        PATH=/usr/local/bin:/usr/bin:/bin COMPOSE_PROJECT_NAME="$PROJECT" "$@"
}
cleanup() {
    local status=$?
    if [ -d "$lab" ]; then
        as_user make -C "$lab" down >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    if $created_user; then
        userdel --remove "$LAB_USER" 2>/dev/null || true
    fi
    exit "$status"
}
trap cleanup EXIT

git clone --quiet --no-hardlinks "$REPO" "$lab"
# Built from the same sources, and copied after the clone: newer than every
# source file, as make wants them.
mkdir -p "$lab/dist"
cp -r "dist/$arch" "$lab/dist/"
chown -R "$LAB_USER:$LAB_USER" "$work"

echo "== make up, as $LAB_USER (groups: $(id -nG "$LAB_USER"))"
as_user timeout "$UP_LIMIT" make -C "$lab" up UP_OPTIONS=-d

containers_of() {
    docker ps -a -q --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1"
}
deadline=$((SECONDS + CLIENTS_LIMIT))
for service in "${!EXPECTED_EXIT[@]}"; do
    id=$(containers_of "$service")
    [ -n "$id" ] || fail "no container for $service"
    until [ "$(docker inspect -f '{{.State.Status}}' "$id")" = exited ]; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$service still runs after ${CLIENTS_LIMIT}s"
        sleep 0.5
    done
    code=$(docker inspect -f '{{.State.ExitCode}}' "$id")
    [ "$code" = "${EXPECTED_EXIT[$service]}" ] || fail "$service exited with $code, not ${EXPECTED_EXIT[$service]}"
    echo "  $service exited with $code"
done

echo "== what the lab left in the checkout"
[ -s "$lab/downloads/random.bin" ] || fail "downloads/random.bin is missing"
[ -n "$(find "$lab/captures" -name 'server.pcap*')" ] || fail "captures/ holds no capture"
strangers=$(find "$lab/captures" "$lab/downloads" ! -user "$LAB_USER" -printf '%p (%u)\n')
[ -z "$strangers" ] || fail "files that are not $LAB_USER's:"$'\n'"$strangers"
find "$lab/captures" "$lab/downloads" -type f -printf '  %u:%g %p\n'

echo "== make down, and the user removes what the lab wrote"
as_user make -C "$lab" down >/dev/null
left=$(docker ps -a -q --filter "label=com.docker.compose.project=$PROJECT"
    docker network ls -q --filter "label=com.docker.compose.project=$PROJECT"
    docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$left" ] || fail "make down left: $left"
as_user find "$lab/captures" "$lab/downloads" -mindepth 1 ! -name .gitkeep -delete
echo "make up as $LAB_USER: the clients' results are right, every file is $LAB_USER's, nothing is left"
