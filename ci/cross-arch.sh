#!/usr/bin/env bash
# Cross-architecture check: for each server model, the aarch64 server (under
# qemu user-mode emulation) serves a multi-MiB random file to the x86_64
# client, and the x86_64 server serves it to the aarch64 client; both copies
# must be byte-exact. Uses the binaries in dist/ (ci/build-static.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
qemu=$(command -v qemu-aarch64-static) || {
    echo "qemu-aarch64-static is missing (apt-get install qemu-user-static)" >&2
    exit 1
}
for arch in amd64 arm64; do
    [ -x "dist/$arch/tcpfile-client" ] || { echo "dist/$arch is missing: run ci/build-static.sh" >&2; exit 1; }
done

work=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/served" "$work/out"
head -c $((6 * 1024 * 1024 + 7)) /dev/urandom > "$work/served/random.bin"

# Sets $invocation to run a dist binary of the given arch, under qemu for arm64.
# An array rather than a function: the server must be the background job
# itself, so that the SIGTERM sent to $! reaches it.
set_command() {
    local arch=$1 binary=$2
    if [ "$arch" = arm64 ]; then
        invocation=("$qemu" "dist/arm64/$binary")
    else
        invocation=("dist/amd64/$binary")
    fi
}

# Starts a server in the background and sets $port from its first line.
start_server() {
    local arch=$1 model=$2
    local -a count=()
    [ "$model" = iterative ] || count=(2)
    set_command "$arch" "tcpfile-server-$model"
    # The redirection happens in the background job: without this, the loop
    # below could read the previous server's address.
    rm -f "$work/server.out"
    "${invocation[@]}" 127.0.0.1 0 "$work/served" "${count[@]}" -q \
        > "$work/server.out" 2> "$work/server.err" &
    server_pid=$!
    for _ in $(seq 1 200); do
        if [ -s "$work/server.out" ]; then
            port=$(sed -n '1s/^listening on 127\.0\.0\.1://p' "$work/server.out")
            [ -n "$port" ] && return 0
        fi
        sleep 0.1
    done
    echo "the $arch $model server did not start:" >&2
    cat "$work/server.err" >&2
    exit 1
}

stop_server() {
    kill -TERM "$server_pid"
    local status=0
    wait "$server_pid" || status=$?
    server_pid=""
    if [ "$status" -ne 0 ]; then
        echo "the server exited with status $status after SIGTERM" >&2
        cat "$work/server.err" >&2
        exit 1
    fi
}

failures=0
for model in iterative parallel preforked evented; do
    for pair in "arm64 amd64" "amd64 arm64"; do
        read -r server_arch client_arch <<< "$pair"
        start_server "$server_arch" "$model"
        copy="$work/out/$model-$server_arch-$client_arch.bin"
        set_command "$client_arch" tcpfile-client
        if "${invocation[@]}" 127.0.0.1 "$port" random.bin 64M -o "$copy" -q \
            && cmp -s "$work/served/random.bin" "$copy"; then
            echo "ok: $model server on $server_arch -> client on $client_arch, byte-exact"
        else
            echo "FAILED: $model server on $server_arch -> client on $client_arch" >&2
            failures=$((failures + 1))
        fi
        stop_server
    done
done
[ "$failures" -eq 0 ]
