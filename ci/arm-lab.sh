#!/usr/bin/env bash
# Runs the compose lab with every image of an ARM platform (the server, the
# clients, the capture sidecars and the sample maker) under qemu's user-mode
# emulation, and makes the checks of ci/compose-e2e.sh (ci/lab-checks.sh):
# the clients' exit codes, the SHA-256 of every download, the 260/16/1
# exchanges and the content in both captures, a crowd, the stop within 2 s,
# nothing left after `down`. Then the README's download commands for the
# release binaries of that architecture, run here under emulation too.
#
# The capture sidecars are the platform's too when its tcpdump can capture
# under emulation; qemu 7.2 cannot carry libpcap's packet ring, and then they
# run the engine's own tcpdump image, which the run reports as a skip.
#
#   ci/arm-lab.sh arm64|armv7 [iterative|parallel|preforked|evented ...]
#
# One server model by default, to keep the emulated run short: preforked for
# arm64, the lab's default, which a Raspberry Pi runs after `docker compose
# up`; evented for armv7, the model for many or slow clients on a small
# board, and the one that leans most on the kernel's interfaces (epoll, whose
# event structure is laid out differently on x86_64 than on ARM, and
# non-blocking sendfile with 64-bit offsets from a 32-bit program). The other
# models' code runs on both platforms in the emulated test suites
# (ci/test.sh tests-aarch64, tests-armv7). The crowd is 2 clients.
#
# The images are localhost/tcpfile/NAME:VERSION-ARCH (docker/build-images.sh
# ARCH, built here when missing or out of date), which ci/registry-e2e.sh
# shows to be the very images a board pulls. compose gets them through
# TCPFILE_TAG and DOCKER_DEFAULT_PLATFORM, as on a board. Needs root the first
# time: it registers the qemu handler (ci/binfmt.sh) and unpacks the
# sidecar's Debian base (ci/tcpdump-base-image.sh).
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "$#" -lt 1 ]; then
    echo "usage: ci/arm-lab.sh arm64|armv7 [MODEL...]" >&2
    exit 1
fi
arch=$1
shift
case "$arch" in
    arm64) platform=linux/arm64 qemu_arch=aarch64 target=aarch64-unknown-linux-musl
        default_model=preforked ;;
    armv7) platform=linux/arm/v7 qemu_arch=arm target=armv7-unknown-linux-musleabihf
        default_model=evented ;;
    *) echo "error: unsupported architecture: $arch (arm64 or armv7)" >&2; exit 1 ;;
esac
if [ "$#" -gt 0 ]; then
    modes=("$@")
else
    modes=("$default_model")
fi
for mode in "${modes[@]}"; do
    case "$mode" in
        iterative | parallel | preforked | evented) ;;
        *) echo "error: unknown server model: $mode" >&2; exit 1 ;;
    esac
done

LAB_CROWD=2
# shellcheck source=ci/lab-checks.sh
source ci/lab-checks.sh
lab_begin "tcpfile-armlab-$arch"
started=$SECONDS

step "tools"
lab_tools
ci/binfmt.sh "$qemu_arch"
qemu=$(readlink -f "$(sed -n 's/^interpreter //p' "/proc/sys/fs/binfmt_misc/qemu-$qemu_arch")")

step "binaries and images"
if [ ! -f "dist/$arch/SHA256SUMS" ]; then
    ci/build-static.sh "$target"
fi
docker/build-images.sh "$arch"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
export TCPFILE_REGISTRY=localhost TCPFILE_TAG=$version-$arch DOCKER_DEFAULT_PLATFORM=$platform
echo "the lab runs localhost/tcpfile/*:$TCPFILE_TAG, DOCKER_DEFAULT_PLATFORM=$platform"

# libpcap 1.10 captures through the kernel's memory-mapped packet ring and
# asks the interface for its time stamp types (SIOCETHTOOL) first; qemu's
# user-mode emulation passes neither through (qemu 7.2). When the platform's
# tcpdump cannot capture here, the two capture sidecars run the engine's own
# tcpdump image instead, and that is reported as a skip; everything else,
# the sample maker in the same image included, stays on the platform.
step "tcpdump under emulation"
probe=$(docker run --rm --network none --entrypoint bash "localhost/tcpfile/tcpdump:$TCPFILE_TAG" \
    -c 'timeout 5 tcpdump -i lo -w /dev/null 2>&1; echo "exit status $?"')
capture_platform=$platform
if grep -qx 'exit status 124' <<< "$probe"; then
    echo "  the $platform tcpdump captures under $qemu: the capture sidecars are $platform too"
else
    engine_arch=$(docker version -f '{{.Server.Arch}}')
    capture_platform=$(docker version -f '{{.Server.Os}}')/$engine_arch
    reason=$(grep -m 1 '^tcpdump:' <<< "$probe" || echo "$probe")
    echo "SKIP: the $platform tcpdump cannot capture under $qemu ($reason): the capture sidecars run the $capture_platform tcpdump image" >&2
    if [ -n "${TCPFILE_SKIP_LOG:-}" ]; then
        echo "SKIPPED arm-lab $arch, capture sidecars on $platform: $reason" >> "$TCPFILE_SKIP_LOG"
    fi
    ci/debian-base-image.sh
    docker/build-images.sh --tcpdump-only "$engine_arch"
    cat > "$work/native-captures.yaml" <<EOF
services:
  capture-server:
    image: localhost/tcpfile/tcpdump:$version-$engine_arch
    platform: $capture_platform
  capture-client:
    image: localhost/tcpfile/tcpdump:$version-$engine_arch
    platform: $capture_platform
EOF
    export COMPOSE_FILE=compose.yaml:$work/native-captures.yaml
fi
echo "ready after $((SECONDS - started)) s"

# Run by lab_check_model once the clients have exited: every container the
# lab made is of this platform's images (the capture sidecars of
# $capture_platform), and the server runs under qemu.
lab_after_clients() {
    local id service image built_for wanted count=0
    for id in $(docker ps -a -q --filter "label=com.docker.compose.project=$PROJECT"); do
        service=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$id")
        image=$(docker inspect -f '{{.Image}}' "$id")
        built_for=$(docker image inspect -f '{{.Os}}/{{.Architecture}}{{with index . "Variant"}}/{{.}}{{end}}' "$image")
        case "$service" in
            capture-*) wanted=$capture_platform ;;
            *) wanted=$platform ;;
        esac
        [ "$built_for" = "$wanted" ] || fail "$service runs an image for $built_for, not $wanted"
        count=$((count + 1))
    done
    local server_pid
    server_pid=$(docker inspect -f '{{.State.Pid}}' "$(containers_of server)")
    [ "$(readlink "/proc/$server_pid/exe")" = "$qemu" ] ||
        fail "the server runs as $(readlink "/proc/$server_pid/exe"), not under $qemu"
    echo "  $count containers: $platform images, the capture sidecars' $capture_platform; the server runs under $qemu"
}

for mode in "${modes[@]}"; do
    lab_check_model "$mode"
done

# The README's commands for a board without Docker: download two release
# binaries and the checksums, check, chmod +x, serve and fetch. Here the
# release is dist/ laid out as the workflow publishes it, served on
# 127.0.0.1, and the ARM binaries run through the qemu handler.
step "release binaries"
release=$work/release
ci/release-assets.sh "$release" "$arch" >/dev/null
http_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$release" "$http_port" >/dev/null 2>&1 &
lab_pids+=($!)
url=http://127.0.0.1:$http_port
for _ in $(seq 50); do
    curl -fsS -o /dev/null "$url/SHA256SUMS" 2>/dev/null && break
    sleep 0.1
done
board=$work/board
mkdir -p "$board/served"
head -c $((3 * 1024 * 1024 + 5)) /dev/urandom > "$board/served/photo.jpg"
server=tcpfile-server-$default_model-$arch
client=tcpfile-client-$arch
echo "  as on a board, with the release at $url:"
(
    cd "$board"
    set -x
    curl -fsSL --remote-name-all "$url/$server" "$url/$client" "$url/SHA256SUMS"
    sha256sum --check --ignore-missing SHA256SUMS
    chmod +x tcpfile-*-"$arch"
) 2>&1 | sed 's/^/    /'
echo "    + ./$server 127.0.0.1 0 served 2 &"
(cd "$board" && exec "./$server" 127.0.0.1 0 served 2 > address 2> server.log) &
server_pid=$!
lab_pids+=("$server_pid")
for _ in $(seq 100); do
    [ -s "$board/address" ] && break
    sleep 0.1
done
address=$(sed -n 's/^listening on //p' "$board/address")
[ -n "$address" ] || fail "the release's server did not start: $(cat "$board/server.log")"
[ "$(readlink "/proc/$server_pid/exe")" = "$qemu" ] || fail "the release's server does not run under $qemu"
echo "    + ./$client ${address%:*} ${address##*:} photo.jpg 50M -o fetched.jpg"
(cd "$board" && "./$client" -q "${address%:*}" "${address##*:}" photo.jpg 50M -o fetched.jpg) ||
    fail "the release's client could not fetch photo.jpg"
kill "$server_pid"
wait "$server_pid" || fail "the release's server exited with $? on SIGTERM"
cmp "$board/served/photo.jpg" "$board/fetched.jpg" || fail "fetched.jpg differs from photo.jpg"
echo "  ./$server served photo.jpg to ./$client, byte-exact, both under $qemu"

echo
echo "arm-lab $arch ($platform): ${modes[*]} passed, and the release binaries, in $((SECONDS - started)) s"
