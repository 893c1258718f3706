#!/usr/bin/env bash
# Faults on the wire, provoked for real against every server model with the
# real client and server binaries, and in the compose lab. Prints what each
# case did and what it measured, and its time.
#
#   ci/net-faults.sh [all|namespaces|compose]      (default all)
#
# In network namespaces (run for every server model in MODELS):
#   drops-5     8 MiB with 5 % of the packets dropped at random in each
#               direction: byte-exact;
#   drops-20    512 KiB with 20 % dropped in each direction: byte-exact;
#   slow-link   a 1 Mbit/s link: a transfer of about 11 s with a server
#               --timeout of 1 s and a client --timeout of 2 s completes, with
#               progress shown all along, because the timeouts bound each stall
#               and not the whole transfer;
#   partition   every packet dropped in the middle of a transfer: the client
#               gives up within its --timeout with exit 5 and keeps no file,
#               the server gives up within its own --timeout, and once the
#               partition heals the same server serves the next client.
# Each of them runs for every model: a model decides how connections reach
# the handler and how its processes wait (the evented one with a loop of its
# own), and the iterative one serves the next client only once it has given
# up on the last.
#
# In the compose lab (once, with SERVER_MODE, default preforked): the server
# is killed with SIGKILL mid-transfer (the client exits 5 and keeps no file;
# restart: unless-stopped brings the server back and it serves), then a
# client container is killed mid-transfer (the server logs it and serves the
# next one). Neither depends on the model: the engine restarts whatever the
# container runs, and a peer that vanishes mid-transfer is covered for every
# model by the partition above. The kill is the host's SIGKILL to the
# server's process, as a crash or the OOM killer deals it: `docker kill`
# counts as a deliberate stop, which disables the restart policy.
#
# The lab in namespaces: three network namespaces named after this script's
# PID, client -- wire -- server, joined by two veth pairs. The wire namespace
# forwards between them and carries the faults: tc's tbf for the rate, and
# iptables' statistic match (or a plain DROP for the partition) in its FORWARD
# chain, so neither end sees anything but a bad network. The addresses are
# from the documentation ranges (192.0.2.0/24, 198.51.100.0/24); no namespace
# has a default route or any link but these, so no packet can leave them.
# Segmentation offloads are off, so a drop loses one segment, as on a real
# wire. The server's namespace pins its TCP send buffer at 1 MiB (tcp_wmem),
# so that the files here are larger than what the kernel buffers and the
# server's own send loop runs for seconds, longer than its --timeout. Retransmissions are
# counted from a capture on the server's side (tcpdump, read back with
# docker/tcpfile-flows.sh) and from each namespace's own TcpRetransSegs.
#
# Runs the release binaries `cargo build --release` makes, or those in
# TCPFILE_BIN_DIR. A model joins when its binary tcpfile-server-MODEL is
# there. Needs root: run without it, it says so and skips everything.
# Installs iptables, ethtool and tcpdump from Debian when they are missing.
# The compose part needs Docker (ci/docker-engine.sh) and the images
# tcpfile/server-MODE, tcpfile/client and tcpfile/tcpdump; it builds them
# (ci/build-static.sh, ci/debian-base-image.sh, docker/build-images.sh) only
# when one is missing. About 2 minutes on a 2-core machine, besides the builds.
set -euo pipefail

cd "$(dirname "$0")/.."

# Every server model with its process-count argument.
MODELS=(iterative "parallel 4" "preforked 4" "evented 2")

PORT=7070
NS=tcpfile-netfaults-$$
NS_CLIENT=$NS-client
NS_WIRE=$NS-wire
NS_SERVER=$NS-server
CLIENT_ADDR=192.0.2.2
WIRE_CLIENT_ADDR=192.0.2.1
SERVER_ADDR=198.51.100.2
WIRE_SERVER_ADDR=198.51.100.1
SERVER_SEND_BUFFER=1048576
# How much later than its --timeout a side may give up, in microseconds.
GIVE_UP_SLACK_US=1000000
# Hard limits, in seconds.
FETCH_LIMIT=90
SERVER_LIMIT=300
WAIT_LIMIT=30
COMPOSE_LIMIT=300
# The server container's sending rate in the lab: big.bin takes 25 s, so a
# kill after the first progress line lands early in the transfer, with more
# of the file left than the kernel's buffers hold.
LAB_RATE=4mbit

part=${1:-all}
case "$part" in
    all | namespaces | compose) ;;
    *) echo "usage: ci/net-faults.sh [all|namespaces|compose]" >&2; exit 2 ;;
esac

passed=0
if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: ci/net-faults.sh needs root (network namespaces, iptables, tc, Docker); nothing was checked" >&2
    echo "net-faults: 0 passed, 0 failed, 1 skipped"
    exit 0
fi

work=$(mktemp -d /tmp/tcpfile-netfaults.XXXXXX)
server_pid=
capture_pid=
fetch_pid=
namespaces_made=false
compose_project=
compose_runs=()

on_exit() {
    local status=$?
    local pid
    for pid in $fetch_pid $capture_pid $server_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if $namespaces_made; then
        ip netns del "$NS_CLIENT" 2>/dev/null || true
        ip netns del "$NS_WIRE" 2>/dev/null || true
        ip netns del "$NS_SERVER" 2>/dev/null || true
    fi
    if [ -n "$compose_project" ]; then
        if [ "$status" -ne 0 ]; then
            echo "--- the lab at the failure" >&2
            compose logs --no-color --tail 30 server >&2 || true
        fi
        if [ "${#compose_runs[@]}" -gt 0 ]; then
            docker rm -f "${compose_runs[@]}" >/dev/null 2>&1 || true
        fi
        compose --profile crowd down --volumes --remove-orphans >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    if [ "$status" -ne 0 ]; then
        echo "net-faults: $passed passed, 1 failed"
    fi
    exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

say() { echo "  $*"; }

micros() {
    local now=${EPOCHREALTIME/./}
    echo $((10#$now))
}

# A duration in microseconds as seconds with two decimals.
seconds() {
    printf '%d.%02d' $(($1 / 1000000)) $(($1 % 1000000 / 10000))
}

# run_case NAME FUNCTION [ARGUMENT...]: runs one case and prints its time.
run_case() {
    local name=$1
    shift
    local started
    started=$(micros)
    echo
    echo "== $name"
    "$@"
    passed=$((passed + 1))
    echo "  passed in $(seconds $(($(micros) - started))) s"
}

# wait_until LIMIT COMMAND...: until COMMAND succeeds, at most LIMIT seconds.
wait_until() {
    local deadline=$(($(micros) + $1 * 1000000))
    shift
    until "$@"; do
        [ "$(micros)" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

install_missing() {
    local -A package_of=([iptables]=iptables [ethtool]=ethtool [tcpdump]=tcpdump [tc]=iproute2 [nstat]=iproute2)
    local command
    local -A missing=()
    for command in "${!package_of[@]}"; do
        command -v "$command" >/dev/null 2>&1 || missing[${package_of[$command]}]=1
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing ${!missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
            "${!missing[@]}" >/dev/null
    fi
}

# ---------------------------------------------------------------- the lab

in_ns() {
    local namespace=$1
    shift
    ip netns exec "$namespace" "$@"
}

make_lab() {
    namespaces_made=true
    ip netns add "$NS_CLIENT"
    ip netns add "$NS_WIRE"
    ip netns add "$NS_SERVER"
    ip link add wire netns "$NS_CLIENT" type veth peer name to-client netns "$NS_WIRE"
    ip link add wire netns "$NS_SERVER" type veth peer name to-server netns "$NS_WIRE"
    ip -n "$NS_CLIENT" addr add "$CLIENT_ADDR/24" dev wire
    ip -n "$NS_WIRE" addr add "$WIRE_CLIENT_ADDR/24" dev to-client
    ip -n "$NS_WIRE" addr add "$WIRE_SERVER_ADDR/24" dev to-server
    ip -n "$NS_SERVER" addr add "$SERVER_ADDR/24" dev wire
    local namespace link
    for namespace in "$NS_CLIENT" "$NS_WIRE" "$NS_SERVER"; do
        ip -n "$namespace" link set lo up
    done
    for link in "$NS_CLIENT wire" "$NS_WIRE to-client" "$NS_WIRE to-server" "$NS_SERVER wire"; do
        read -r namespace link <<< "$link"
        in_ns "$namespace" ethtool -K "$link" tso off gso off gro off
        ip -n "$namespace" link set "$link" up
    done
    ip -n "$NS_CLIENT" route add "${SERVER_ADDR%.*}.0/24" via "$WIRE_CLIENT_ADDR"
    ip -n "$NS_SERVER" route add "${CLIENT_ADDR%.*}.0/24" via "$WIRE_SERVER_ADDR"
    in_ns "$NS_WIRE" sysctl -qw net.ipv4.ip_forward=1
    in_ns "$NS_SERVER" sysctl -qw net.ipv4.tcp_wmem="4096 $SERVER_SEND_BUFFER $SERVER_SEND_BUFFER"

    local links
    links=$(for namespace in "$NS_CLIENT" "$NS_WIRE" "$NS_SERVER"; do
        ip -n "$namespace" -o link show | awk -F': ' '{ sub(/@.*/, "", $2); printf "%s ", $2 }'
    done)
    [ "$links" = "lo wire lo to-client to-server lo wire " ] || fail "the namespaces hold other links: $links"
    if ip -n "$NS_CLIENT" route show default | grep -q . || ip -n "$NS_SERVER" route show default | grep -q .; then
        fail "a namespace has a default route"
    fi
    say "client $CLIENT_ADDR ($NS_CLIENT) -- wire ($NS_WIRE) -- server $SERVER_ADDR ($NS_SERVER)"
    say "links: lo and the veth pairs only; no default route; offloads off"
}

# Clears every fault: no drop, no rate limit.
wire_clear() {
    in_ns "$NS_WIRE" iptables -F FORWARD
    tc -n "$NS_WIRE" qdisc del dev to-client root 2>/dev/null || true
    tc -n "$NS_WIRE" qdisc del dev to-server root 2>/dev/null || true
}

# Drops packets at random with PROBABILITY in each direction. The rule
# before each drop only counts the packets of its direction.
wire_drop() {
    local probability=$1
    in_ns "$NS_WIRE" iptables -F FORWARD
    in_ns "$NS_WIRE" iptables -A FORWARD -i to-server -o to-client
    in_ns "$NS_WIRE" iptables -A FORWARD -i to-server -o to-client \
        -m statistic --mode random --probability "$probability" -j DROP
    in_ns "$NS_WIRE" iptables -A FORWARD -i to-client -o to-server
    in_ns "$NS_WIRE" iptables -A FORWARD -i to-client -o to-server \
        -m statistic --mode random --probability "$probability" -j DROP
}

# "SEEN DROPPED SEEN DROPPED": packets toward the client, then the server.
wire_drop_counts() {
    in_ns "$NS_WIRE" iptables -L FORWARD -n -v -x | awk 'NR > 2 { printf "%s ", $1 }'
}

# Limits the rate in each direction, with a queue of at most 100 ms.
wire_rate() {
    local rate=$1 link
    for link in to-client to-server; do
        tc -n "$NS_WIRE" qdisc replace dev "$link" root tbf rate "$rate" burst 8kb latency 100ms
    done
}

wire_partition() {
    in_ns "$NS_WIRE" iptables -I FORWARD 1 -j DROP
}

wire_heal() {
    in_ns "$NS_WIRE" iptables -D FORWARD -j DROP
}

retransmitted_segments() {
    in_ns "$1" nstat -asz TcpRetransSegs | awk '$1 == "TcpRetransSegs" { print $2 }'
}

# ---------------------------------------------------------------- processes

# start_server MODEL [SERVER OPTION...]: the model's server in the server's
# namespace, serving $work/served, its log in $work/server.log.
start_server() {
    local name arguments
    read -r name arguments <<< "$1"
    shift
    rm -f "$work/server.address"
    # shellcheck disable=SC2086 # the process count, when the model takes one
    timeout -k 2 "$SERVER_LIMIT" ip netns exec "$NS_SERVER" "$bin/tcpfile-server-$name" \
        "$SERVER_ADDR" "$PORT" "$work/served" $arguments "$@" \
        >"$work/server.address" 2>"$work/server.log" &
    server_pid=$!
    wait_until 10 grep -qs "^listening on" "$work/server.address" ||
        fail "the $name server did not start: $(cat "$work/server.log")"
}

stop_server() {
    kill -TERM "$server_pid"
    wait "$server_pid" || fail "the server exited with $? on SIGTERM: $(tail -n 5 "$work/server.log")"
    server_pid=
}

# Prefixes each line with the seconds since STARTED (in microseconds).
stamp() {
    local started=$1 line
    while IFS= read -r line; do
        printf '%6s s  %s\n' "$(seconds $(($(micros) - started)))" "$line"
    done
}

# start_fetch NAME CLIENT_TIMEOUT: the real client in the client's namespace
# fetches NAME into $work/downloads; its stderr goes to $work/client.log, each
# line stamped with the seconds since the start.
start_fetch() {
    local name=$1 client_timeout=$2
    rm -rf "$work/downloads" "$work/client.log" "$work/client.fifo"
    mkdir "$work/downloads"
    mkfifo "$work/client.fifo"
    fetch_started=$(micros)
    stamp "$fetch_started" <"$work/client.fifo" >"$work/client.log" &
    stamp_pid=$!
    timeout -k 2 "$FETCH_LIMIT" ip netns exec "$NS_CLIENT" "$bin/tcpfile-client" \
        "$SERVER_ADDR" "$PORT" "$name" 1G -o "$work/downloads/$name" \
        --timeout "$client_timeout" 2>"$work/client.fifo" >/dev/null &
    fetch_pid=$!
}

# Waits for the fetch; sets fetch_code, fetch_ended (in microseconds) and
# fetch_us, its duration.
finish_fetch() {
    fetch_code=0
    wait "$fetch_pid" || fetch_code=$?
    fetch_ended=$(micros)
    fetch_pid=
    wait "$stamp_pid" || true
    fetch_us=$((fetch_ended - fetch_started))
}

# The client's log and the server's warnings, for a fetch that failed.
show_client_log() {
    sed 's/^/    client: /' "$work/client.log"
    grep ' WARN ' "$work/server.log" | sed 's/^/    server: /' || true
}

# The fetched file must be NAME, byte for byte.
check_byte_exact() {
    local name=$1
    cmp -s "$work/served/$name" "$work/downloads/$name" ||
        fail "$name did not arrive byte-exact (exit $fetch_code)"
}

# Starts tcpdump on the server's side of the wire, into $work/NAME.pcap.
start_capture() {
    capture_file=$work/$1.pcap
    rm -f "$work/capture.err"
    timeout -k 2 "$SERVER_LIMIT" ip netns exec "$NS_SERVER" tcpdump -i wire -Z root -nn -s 512 -U --immediate-mode \
        -B 32768 -w "$capture_file" "tcp port $PORT" 2>"$work/capture.err" &
    capture_pid=$!
    wait_until 10 grep -q 'listening on' "$work/capture.err" ||
        fail "tcpdump did not start: $(cat "$work/capture.err")"
}

file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# Stops the capture once it has written everything it saw, checks that it
# lost nothing, and sets capture_flows to tcpfile-flows.sh's summary.
stop_capture() {
    local last=-1 size
    local deadline=$(($(micros) + 10000000))
    while size=$(file_size "$capture_file") && [ "$size" != "$last" ] && [ "$(micros)" -lt "$deadline" ]; do
        last=$size
        sleep 0.3
    done
    kill -INT "$capture_pid"
    wait "$capture_pid" || true
    capture_pid=
    local captured received dropped
    captured=$(sed -n 's/^\([0-9]*\) packets\{0,1\} captured$/\1/p' "$work/capture.err")
    received=$(sed -n 's/^\([0-9]*\) packets\{0,1\} received by filter$/\1/p' "$work/capture.err")
    dropped=$(sed -n 's/^\([0-9]*\) packets\{0,1\} dropped by kernel$/\1/p' "$work/capture.err")
    if [ -z "$captured" ] || [ "$captured" != "$received" ] || [ "$dropped" != 0 ]; then
        fail "the capture lost packets: $(tr '\n' ' ' < "$work/capture.err")"
    fi
    capture_flows=$(docker/tcpfile-flows.sh -p "$PORT" "$capture_file")
}

# The value of KEY in the capture's summary of the first connection that
# asked for NAME.
flow_value() {
    local name=$1 key=$2
    awk -v name="$name" -v key="$key" '
        {
            for (i = 1; i <= NF; i++) { split($i, pair, "="); field[pair[1]] = pair[2] }
            if (field["file"] == name) { print field[key]; exit }
        }' <<< "$capture_flows"
}

# within_timeout MICROSECONDS TIMEOUT_SECS: whether a side that gave up after
# MICROSECONDS did so because of its --timeout: not before it (less half a
# second for the data still on its way), and at most the slack after it.
within_timeout() {
    local took=$1 limit=$(($2 * 1000000))
    [ "$took" -ge $((limit - 500000)) ] && [ "$took" -le $((limit + GIVE_UP_SLACK_US)) ]
}

# A log line's timestamp, in microseconds since the epoch.
log_time() {
    date -u -d "${1%% *}" +%s%6N
}

# ---------------------------------------------------------------- the cases

# drops MODEL PERCENT NAME
case_drops() {
    local model=$1 percent=$2 name=$3
    local size
    size=$(file_size "$work/served/$name")
    start_server "$model"
    wire_drop "0.$(printf '%02d' "$percent")"
    start_capture "drops-$percent"
    local server_before client_before
    server_before=$(retransmitted_segments "$NS_SERVER")
    client_before=$(retransmitted_segments "$NS_CLIENT")
    start_fetch "$name" 30
    finish_fetch
    stop_capture
    local counts
    counts=$(wire_drop_counts)
    stop_server
    wire_clear

    say "$name ($size bytes), $percent % of the packets dropped in each direction;" \
        "server --timeout 10, client --timeout 30"
    [ "$fetch_code" = 0 ] || { show_client_log; fail "the client exited with $fetch_code"; }
    check_byte_exact "$name"
    say "byte-exact in $(seconds "$fetch_us") s"
    local seen dropped direction
    for direction in "toward the client" "toward the server"; do
        read -r seen dropped counts <<< "$counts"
        [ "$dropped" -gt 0 ] || fail "no packet was dropped $direction"
        say "$direction: $dropped of $seen packets dropped" \
            "($((dropped * 100 / seen)).$((dropped * 1000 / seen % 10)) %)"
    done
    local server_retransmitted client_retransmitted bytes_again
    server_retransmitted=$(($(retransmitted_segments "$NS_SERVER") - server_before))
    client_retransmitted=$(($(retransmitted_segments "$NS_CLIENT") - client_before))
    bytes_again=$(flow_value "$name" retransmitted)
    [ "$(flow_value "$name" content)" = "$size" ] || fail "the capture does not show all $size bytes sent: $capture_flows"
    [ "$server_retransmitted" -gt 0 ] || fail "the server retransmitted nothing (TcpRetransSegs)"
    [ "${bytes_again:-0}" -gt 0 ] ||
        fail "no retransmission by the server: TcpRetransSegs +$server_retransmitted, capture: $capture_flows"
    say "retransmitted: $server_retransmitted segments by the server, $client_retransmitted by the client" \
        "(TcpRetransSegs); $bytes_again bytes sent again in the server's capture"
}

# slow-link MODEL: a 1 Mbit/s link; the transfer takes many times either
# side's --timeout.
case_slow_link() {
    local model=$1 name=slow.bin server_timeout=1 client_timeout=2
    local size
    size=$(file_size "$work/served/$name")
    start_server "$model" --timeout "$server_timeout"
    wire_rate 1mbit
    start_capture slow-link
    start_fetch "$name" "$client_timeout"
    finish_fetch
    stop_capture
    stop_server
    wire_clear

    say "$name ($size bytes) over 1 Mbit/s; server --timeout $server_timeout, client --timeout $client_timeout"
    [ "$fetch_code" = 0 ] || { show_client_log; fail "the client exited with $fetch_code"; }
    check_byte_exact "$name"
    local rate_kbit=$((size * 8 * 1000 / fetch_us))
    say "byte-exact in $(seconds "$fetch_us") s ($rate_kbit kbit/s)"
    [ "$fetch_us" -gt $((4 * client_timeout * 1000000)) ] ||
        fail "the transfer took $(seconds "$fetch_us") s, not much longer than the client's --timeout"
    local progress
    progress=$(grep -c 'received [0-9]* of [0-9]* bytes' "$work/client.log" || true)
    [ "$progress" -ge 8 ] || { show_client_log; fail "the client showed $progress progress lines"; }
    local first_progress
    first_progress=$(awk '/received [0-9]+ of/ { print $1; exit }' "$work/client.log")
    say "the client showed progress $progress times, the first after $first_progress s:"
    grep -E 'received [0-9]+ of|transfer complete' "$work/client.log" | sed -n '1p;4p;$p' | sed 's/^/    client: /'
    local sending
    sending=$(sed -n "s/.*: transfer complete: $size bytes in \([0-9.]*\) s.*/\1/p" "$work/server.log")
    [ -n "$sending" ] || fail "the server logged no complete transfer: $(tail -n 3 "$work/server.log")"
    awk -v sending="$sending" -v limit="$server_timeout" 'BEGIN { exit !(sending > 2 * limit) }' ||
        fail "the server's send loop took $sending s: the file fit in its buffers, so its --timeout was not put to the test"
    say "the server's send loop ran for $sending s with --timeout $server_timeout;" \
        "$(flow_value "$name" retransmitted) bytes sent again (the link's queue overflows)"
}

# partition MODEL: every packet dropped mid-transfer, then healed.
case_partition() {
    local model=$1 name=partition.bin server_timeout=3 client_timeout=2
    local size
    size=$(file_size "$work/served/$name")
    start_server "$model" --timeout "$server_timeout"
    wire_rate 2mbit
    start_capture partition
    start_fetch "$name" "$client_timeout"
    wait_until "$WAIT_LIMIT" grep -qsE '\(([3-9]0)%\)' "$work/client.log" ||
        { show_client_log; fail "the transfer did not reach 30 %"; }
    local partitioned
    wire_partition
    partitioned=$(micros)
    say "$name ($size bytes) over 2 Mbit/s; server --timeout $server_timeout, client --timeout $client_timeout"
    say "partition (every packet dropped) after $(seconds $((partitioned - fetch_started))) s, at" \
        "$(grep -oE '\([0-9]+%\)' "$work/client.log" | tail -n 1)"
    finish_fetch
    local broken_code=$fetch_code kept
    local client_gave_up=$((fetch_ended - partitioned))
    kept=$(ls -A "$work/downloads")
    local give_up_line
    wait_until $((server_timeout + WAIT_LIMIT)) grep -q "$CLIENT_ADDR:[0-9]*: .*timed out" "$work/server.log" ||
        fail "the server did not log giving up: $(tail -n 5 "$work/server.log")"
    give_up_line=$(grep "$CLIENT_ADDR:[0-9]*: .*timed out" "$work/server.log" | head -n 1)
    local server_gave_up=$(($(log_time "$give_up_line") - partitioned))
    wire_heal
    wire_clear
    local healed
    healed=$(micros)
    local broken_log
    broken_log=$(cat "$work/client.log")
    start_fetch "$name" "$client_timeout"
    finish_fetch
    local next_code=$fetch_code next_us=$fetch_us
    stop_capture
    stop_server

    grep -E 'error:' <<< "$broken_log" | sed 's/^/    client: /'
    say "the client gave up $(seconds "$client_gave_up") s after the partition began," \
        "exit $broken_code, files kept: ${kept:-none}"
    [ "$broken_code" = 5 ] || fail "the client exited with $broken_code, not 5"
    [ -z "$kept" ] || fail "the client kept $kept"
    within_timeout "$client_gave_up" "$client_timeout" ||
        fail "the client gave up after $(seconds "$client_gave_up") s, not within its --timeout of $client_timeout s"
    grep -q 'error: transfer broke: timed out waiting for the content' <<< "$broken_log" ||
        fail "the client does not say it timed out: $broken_log"
    say "server: ${give_up_line#*] }"
    say "the server gave up $(seconds "$server_gave_up") s after the partition began"
    within_timeout "$server_gave_up" "$server_timeout" ||
        fail "the server gave up after $(seconds "$server_gave_up") s, not within its --timeout of $server_timeout s"
    say "healed $(seconds $((healed - partitioned))) s after the partition began; the next fetch:" \
        "exit $next_code in $(seconds "$next_us") s"
    [ "$next_code" = 0 ] || { show_client_log; fail "the next client exited with $next_code"; }
    check_byte_exact "$name"
    say "byte-exact; $(flow_value "$name" retransmitted) bytes sent again by the first connection in the capture"
}

run_namespaces() {
    echo
    echo "=== in network namespaces"
    install_missing
    if [ -n "${TCPFILE_BIN_DIR:-}" ]; then
        bin=$TCPFILE_BIN_DIR
    else
        cargo build --locked --release --bins
        bin=$(cargo metadata --format-version 1 --no-deps |
            sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release
    fi
    [ -x "$bin/tcpfile-client" ] || fail "no tcpfile-client in $bin"
    local entry name models=()
    for entry in "${MODELS[@]}"; do
        read -r name _ <<< "$entry"
        if [ -x "$bin/tcpfile-server-$name" ]; then
            models+=("$entry")
        else
            echo "note: no tcpfile-server-$name in $bin: the $name model is not checked"
        fi
    done
    [ "${#models[@]}" -gt 0 ] || fail "no server binary in $bin"

    mkdir "$work/served"
    head -c $((8 * 1024 * 1024)) /dev/urandom >"$work/served/drops-5.bin"
    head -c $((512 * 1024)) /dev/urandom >"$work/served/drops-20.bin"
    head -c $((1280 * 1024 + 17)) /dev/urandom >"$work/served/slow.bin"
    head -c $((2 * 1024 * 1024 + 5)) /dev/urandom >"$work/served/partition.bin"
    make_lab

    local model
    for model in "${models[@]}"; do
        read -r name _ <<< "$model"
        run_case "$name: drops-5" case_drops "$model" 5 drops-5.bin
        run_case "$name: drops-20" case_drops "$model" 20 drops-20.bin
        run_case "$name: slow-link" case_slow_link "$model"
        run_case "$name: partition" case_partition "$model"
    done
}

# ---------------------------------------------------------------- compose

compose_command=(docker-compose)
compose() {
    timeout "$COMPOSE_LIMIT" "${compose_command[@]}" -p "$compose_project" "$@"
}

# The lab's containers of a service, running or not.
containers_of() {
    docker ps -a -q --filter "label=com.docker.compose.project=$compose_project" \
        --filter "label=com.docker.compose.service=$1"
}

# A time the engine reports (RFC 3339), in microseconds since the epoch.
engine_time() {
    date -u -d "$1" +%s%6N
}

server_healthy() {
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$lab_server")" = healthy ]
}

# Slows the server container's sending to RATE with tc in its network
# namespace, so that a transfer of big.bin lasts a few seconds.
slow_lab_server() {
    local pid
    pid=$(docker inspect -f '{{.State.Pid}}' "$lab_server")
    nsenter -t "$pid" -n tc qdisc replace dev eth0 root tbf rate "$1" burst 32kb latency 100ms
}

# start_lab_fetch NAME FILE CLIENT_TIMEOUT: a client container of the lab,
# named after this run, fetching FILE into the lab's downloads.
start_lab_fetch() {
    local container=$compose_project-$1
    compose_runs+=("$container")
    compose --profile crowd run -d --no-deps --name "$container" crowd \
        server "$PORT" "$2" 100M -o "/downloads/$2" --timeout "$3" >"$work/compose.out" 2>&1 ||
        fail "compose could not start $container: $(cat "$work/compose.out")"
    lab_fetch=$container
}

lab_fetch_exited() {
    [ "$(docker inspect -f '{{.State.Status}}' "$lab_fetch")" = exited ]
}

lab_fetch_progress() {
    docker logs "$lab_fetch" 2>&1 | grep -q '%)$'
}

lab_fetch_reached() {
    docker logs "$lab_fetch" 2>&1 | grep -oE '\([0-9]+%\)' | tail -n 1
}

# Fetches random.bin with a new client container over the full-speed lab
# network and checks it byte for byte.
lab_fetch_random() {
    local sum pid
    pid=$(docker inspect -f '{{.State.Pid}}' "$lab_server")
    nsenter -t "$pid" -n tc qdisc del dev eth0 root 2>/dev/null || true
    start_lab_fetch "$1" random.bin 10
    wait_until "$WAIT_LIMIT" lab_fetch_exited || fail "the client $lab_fetch still runs"
    local code
    code=$(docker inspect -f '{{.State.ExitCode}}' "$lab_fetch")
    [ "$code" = 0 ] || fail "the client $lab_fetch exited with $code: $(docker logs "$lab_fetch" 2>&1 | tail -n 3)"
    sum=$(sha256sum < "$TCPFILE_DOWNLOADS/random.bin")
    [ "${sum%% *}" = "$random_sum" ] || fail "random.bin did not arrive byte-exact"
    rm -f "$TCPFILE_DOWNLOADS/random.bin"
    say "a new client fetched random.bin byte-exact:" \
        "$(docker logs "$lab_fetch" 2>&1 | sed -n 's/^transfer complete: //p')"
}

lab_server_restarts() {
    docker inspect -f '{{.RestartCount}}' "$lab_server"
}

case_lab_server_killed() {
    slow_lab_server "$LAB_RATE"
    start_lab_fetch server-killed big.bin 5
    wait_until "$WAIT_LIMIT" lab_fetch_progress || fail "the transfer of big.bin shows no progress"
    local killed pid
    pid=$(docker inspect -f '{{.State.Pid}}' "$lab_server")
    killed=$(micros)
    kill -KILL "$pid"
    say "big.bin (12 MiB) at $LAB_RATE, client --timeout 5; the server's process got SIGKILL" \
        "from the host at $(lab_fetch_reached)"
    wait_until "$WAIT_LIMIT" lab_fetch_exited || fail "the client still runs"
    local code gave_up kept
    code=$(docker inspect -f '{{.State.ExitCode}}' "$lab_fetch")
    gave_up=$(($(engine_time "$(docker inspect -f '{{.State.FinishedAt}}' "$lab_fetch")") - killed))
    kept=$(ls -A "$TCPFILE_DOWNLOADS")
    docker logs "$lab_fetch" 2>&1 | grep 'error:' | sed 's/^/    client: /'
    say "the client ended $(seconds "$gave_up") s after the kill, exit $code, files kept: ${kept:-none}"
    [ "$code" = 5 ] || fail "the client exited with $code, not 5"
    [ -z "$kept" ] || fail "the client kept $kept"
    [ "$gave_up" -le $((5000000 + GIVE_UP_SLACK_US)) ] || fail "the client took longer than its --timeout"

    wait_until 60 server_healthy || fail "the server is not back: $(docker inspect -f '{{.State.Status}}' "$lab_server")"
    local back restarts
    back=$(($(micros) - killed))
    restarts=$(lab_server_restarts)
    [ "$restarts" = 1 ] || fail "the engine restarted the server $restarts times, not once"
    local started
    started=$(engine_time "$(docker inspect -f '{{.State.StartedAt}}' "$lab_server")")
    say "the engine restarted the server $(seconds $((started - killed))) s after the kill" \
        "(restart: unless-stopped); healthy after $(seconds "$back") s"
    lab_fetch_random after-restart
}

# The server's line about a connection from ADDRESS that broke off.
lab_server_logged() {
    docker logs "$lab_server" 2>&1 | grep -F "$1:" | grep -E 'broke off|timed out' | tail -n 1 | grep .
}

case_lab_client_killed() {
    slow_lab_server "$LAB_RATE"
    local restarts
    restarts=$(lab_server_restarts)
    start_lab_fetch client-killed big.bin 5
    wait_until "$WAIT_LIMIT" lab_fetch_progress || fail "the transfer of big.bin shows no progress"
    local address killed
    address=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$lab_fetch")
    killed=$(micros)
    docker kill -s KILL "$lab_fetch" >/dev/null
    say "big.bin (12 MiB) at $LAB_RATE; docker kill -s KILL on the client container ($address)" \
        "at $(lab_fetch_reached)"
    wait_until "$WAIT_LIMIT" lab_server_logged "$address" >/dev/null || fail "the server logged nothing about $address"
    local line
    line=$(lab_server_logged "$address")
    say "server: ${line#*] }"
    say "the server logged it $(seconds $(($(log_time "$line") - killed))) s after the kill"
    [ "$(lab_server_restarts)" = "$restarts" ] || fail "the server restarted"
    [ "$(docker inspect -f '{{.State.Status}}' "$lab_server")" = running ] || fail "the server is not running"
    lab_fetch_random after-client-killed
}

run_compose() {
    echo
    echo "=== in the compose lab"
    ci/docker-engine.sh
    if docker compose version >/dev/null 2>&1; then
        compose_command=(docker compose)
    fi
    command -v nsenter >/dev/null 2>&1 || fail "nsenter (util-linux) is missing"
    local mode=${SERVER_MODE:-preforked} image absent=()
    for image in "tcpfile/server-$mode" tcpfile/client tcpfile/tcpdump; do
        docker image inspect "$image" >/dev/null 2>&1 || absent+=("$image")
    done
    if [ "${#absent[@]}" -gt 0 ]; then
        echo "building the images (${absent[*]} missing)"
        local arch
        arch=$(docker version -f '{{.Server.Arch}}')
        local -A target_of=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl)
        [ -f "dist/$arch/SHA256SUMS" ] || ci/build-static.sh "${target_of[$arch]}"
        ci/debian-base-image.sh
        docker/build-images.sh
    fi
    local revision
    revision=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.revision"}}' "tcpfile/server-$mode")
    say "tcpfile/server-$mode was built from revision ${revision:0:12}" \
        "$([ "$revision" = "$(git rev-parse HEAD 2>/dev/null)" ] || echo "(this tree is at $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown))")"

    compose_project=tcpfile-netfaults-$$
    export SERVER_MODE=$mode TCPFILE_HEALTH_INTERVAL=1s
    export TCPFILE_CAPTURES=$work/lab-captures TCPFILE_DOWNLOADS=$work/lab-downloads
    # The clients run as nobody, to whom "prepare" hands the downloads.
    export TCPFILE_UID=65534 TCPFILE_GID=65534
    mkdir "$TCPFILE_CAPTURES" "$TCPFILE_DOWNLOADS"
    compose up -d server >"$work/compose.out" 2>&1 || fail "compose up failed: $(cat "$work/compose.out")"
    lab_server=$(containers_of server)
    [ -n "$lab_server" ] || fail "compose made no server"
    wait_until 60 server_healthy || fail "the server is not healthy"
    random_sum=$(compose run --rm --no-deps -T --entrypoint sha256sum prepare /srv/files/random.bin 2>/dev/null)
    random_sum=${random_sum%% *}
    say "project $compose_project, server model $mode, healthy"

    run_case "compose: the server killed mid-transfer" case_lab_server_killed
    run_case "compose: a client killed mid-transfer" case_lab_client_killed

    docker rm -f "${compose_runs[@]}" >/dev/null
    compose_runs=()
    compose --profile crowd down --volumes --remove-orphans >/dev/null 2>&1
    local left
    left=$(docker ps -a -q --filter "label=com.docker.compose.project=$compose_project"
        docker network ls -q --filter "label=com.docker.compose.project=$compose_project"
        docker volume ls -q --filter "label=com.docker.compose.project=$compose_project")
    compose_project=
    [ -z "$left" ] || fail "down left these behind: $left"
}

if [ "$part" != compose ]; then
    run_namespaces
fi
if [ "$part" != namespaces ]; then
    run_compose
fi
echo
echo "net-faults: $passed passed, 0 failed"
