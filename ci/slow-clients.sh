#!/usr/bin/env bash
# The slow-client study: how long one well-behaved client waits for a small
# file while idle connections (clients that connect and send nothing) hold a
# server's serving processes, for each model and a few settings, and what
# each serving process costs in resident memory. Prints a table.
#
#   ci/slow-clients.sh [SERVER_TIMEOUT_SECS]     (default 2)
#
# Runs the release binaries `cargo build --release` makes, or those in
# TCPFILE_BIN_DIR (for example dist/amd64 after ci/build-static.sh). The idle
# connections are bash's /dev/tcp; everything stays on 127.0.0.1. Takes about
# twelve times SERVER_TIMEOUT_SECS.
set -euo pipefail

cd "$(dirname "$0")/.."

timeout=${1:-2}
if [[ ! $timeout =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: ci/slow-clients.sh [SERVER_TIMEOUT_SECS]" >&2
    exit 2
fi

if [[ -n ${TCPFILE_BIN_DIR:-} ]]; then
    bin=$TCPFILE_BIN_DIR
else
    cargo build --locked --release --bins
    bin=$(cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release
fi

work=$(mktemp -d)
server_pid=
client_pid=
trap 'kill -KILL $server_pid $client_pid 2>/dev/null || true; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

mkdir "$work/served"
head -c 1024 /dev/urandom >"$work/served/notes.txt"

# Starts a server binary with its arguments after ADDR PORT DIR and sets
# `port` from the address it prints.
start_server() {
    local binary=$1
    shift
    rm -f "$work/address"
    "$bin/$binary" 127.0.0.1 0 "$work/served" "$@" --timeout "$timeout" -q \
        >"$work/address" 2>"$work/server.log" &
    server_pid=$!
    local tries
    for ((tries = 0; tries < 100; tries++)); do
        port=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$work/address" 2>/dev/null || true)
        if [[ -n $port ]]; then
            # Time for the preforked server's workers to start.
            sleep 0.5
            return
        fi
        sleep 0.1
    done
    echo "the server did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
}

stop_server() {
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=
}

microseconds() {
    local now=${EPOCHREALTIME/./}
    echo $((10#$now))
}

# Resident memory, in KiB, of each child of the server (workers, or the
# children serving connections), as "count x average".
children_resident() {
    local pids total=0 count=0 pid kib
    pids=$(cat "/proc/$server_pid/task/$server_pid/children")
    for pid in $pids; do
        kib=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$pid/status")
        total=$((total + kib))
        count=$((count + 1))
    done
    if ((count > 0)); then
        echo "$count x $((total / count)) KiB"
    else
        echo "-"
    fi
}

# Opens IDLE connections that send nothing, then fetches notes.txt with the
# real client (its --timeout CLIENT_TIMEOUT) and prints one row of the table.
measure() {
    local label=$1 idle=$2 client_timeout=${3:-30}
    local fds=() fd i code=0 started waited memory
    for ((i = 0; i < idle; i++)); do
        exec {fd}<>"/dev/tcp/127.0.0.1/$port"
        fds+=("$fd")
    done
    started=$(microseconds)
    {
        "$bin/tcpfile-client" 127.0.0.1 "$port" notes.txt 1M -o "$work/fetched" \
            --timeout "$client_timeout" -q 2>"$work/client.log" || code=$?
        microseconds >"$work/ended"
        exit "$code"
    } &
    client_pid=$!
    sleep 0.3
    memory=$(children_resident)
    wait "$client_pid" || code=$?
    client_pid=
    waited=$(($(cat "$work/ended") - started))
    for fd in "${fds[@]}"; do
        exec {fd}>&-
    done
    printf '%-34s %5d %9s %8d.%02d s %5d   %s\n' "$label" "$idle" "$client_timeout s" \
        $((waited / 1000000)) $((waited % 1000000 / 10000)) "$code" "$memory"
    if ((code != 0)); then
        sed 's/^/    client: /' "$work/client.log"
    fi
    rm -f "$work/fetched"
    # Let the server drop the idle connections before the next row.
    sleep 0.5
}

echo "server --timeout $timeout s; one client fetches a 1 KiB file behind IDLE idle connections"
printf '%-34s %5s %9s %11s %5s   %s\n' "server" idle "client" "waited" exit \
    "children while idle (resident)"

start_server tcpfile-server-iterative
for idle in 0 1 3; do
    measure "iterative" "$idle"
done
stop_server

start_server tcpfile-server-parallel 4
for idle in 0 3 4 8; do
    measure "parallel, MAX_CHILDREN 4" "$idle"
done
stop_server

start_server tcpfile-server-parallel 64
measure "parallel, MAX_CHILDREN 64" 8
stop_server

start_server tcpfile-server-preforked 4
for idle in 0 3 4 8; do
    measure "preforked, 4 workers" "$idle"
done
measure "preforked, 4 workers" 8 $((2 * timeout - 1))
stop_server

start_server tcpfile-server-evented 2
for idle in 0 8 64; do
    measure "evented, 2 workers" "$idle"
done
stop_server
