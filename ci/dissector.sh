#!/usr/bin/env bash
# Tests the Wireshark dissector docker/tcpfile.lua with Debian's tshark.
#
#   ci/dissector.sh
#       Captures conversations on loopback with tcpdump, twice at once (whole
#       packets, and the first 512 bytes of each as the compose lab keeps
#       them): the real client and server (empty, small and multi-MiB files, a
#       refusal, a missing file, a version mismatch, a server on port 7070),
#       hand-made requests (name lengths 0 and 300, an unknown message type, a
#       name with '/', an unknown reply, a request one byte per segment, a
#       request and its reply in one segment) and a hand-made server (an
#       unknown status, more content than announced). Then decodes both
#       captures with tshark and the dissector and checks that every field
#       equals what each client asked for and got, with the expert infos each
#       bad message deserves and none elsewhere. Needs root (tcpdump); runs the
#       release binaries `cargo build --release` makes, or TCPFILE_BIN_DIR's.
#
#   ci/dissector.sh --check [--decode-as PORT]... EXPECTATIONS CAPTURE...
#       Checks captures made elsewhere, such as the compose lab's: CAPTURE...
#       are the parts of one capture (server.pcap server.pcap1 ...), read in
#       the order of their numbers; EXPECTATIONS is a file, or - for stdin,
#       with one line per connection, as ci/dissector.py describes:
#         name=random.bin status=OK size=5247201 reply=READY_TO_RECEIVE content=5247201
#       The dissector decodes port 7070 by itself; --decode-as adds a port.
#
# Installs tshark, tcpdump and python3 from Debian when they are missing (as
# root); tshark's question whether others may capture is answered no.
set -euo pipefail

cd "$(dirname "$0")/.."

LUA=docker/tcpfile.lua
CHECKER=ci/dissector.py
# Bounds, in seconds, on starting a process and on tcpdump's catching up.
START_LIMIT=10
FLUSH_LIMIT=20

declare -A STATUS_NAMES=([0]=OK [1]=PROTOCOL_MISMATCH [2]=INVALID_FILENAME [3]=FILE_NOT_FOUND
    [4]=ACCESS_DENIED [5]=INTERNAL_ERROR [6]=BAD_REQUEST)

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
}

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

install_missing() {
    local missing=() command
    for command in "$@"; do
        command -v "$command" >/dev/null 2>&1 || missing+=("$command")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    [ "$(id -u)" -eq 0 ] || fail "missing ${missing[*]}: run as root or install them"
    echo "installing ${missing[*]}"
    echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

check_tshark() {
    install_missing tshark python3
    tshark -v 2>/dev/null | grep -q 'with Lua' || fail "this tshark is built without Lua"
    tshark -v 2>/dev/null | head -n 1
}

# check_capture EXPECTATIONS CAPTURE [--decode-as PORT]...
check_capture() {
    python3 "$CHECKER" check --lua "$LUA" "${@:3}" "$1" "$2"
}

if [ "${1:-}" = --check ]; then
    shift
    decode_as=()
    while [ "${1:-}" = --decode-as ]; do
        [[ ${2:-} =~ ^[0-9]+$ ]] || usage
        decode_as+=(--decode-as "$2")
        shift 2
    done
    [ "$#" -ge 2 ] || usage
    check_tshark
    expectations=$1
    shift
    capture=$1
    if [ "$#" -gt 1 ]; then
        capture=$(mktemp /tmp/tcpfile-dissector-merged.XXXXXX)
        # shellcheck disable=SC2064 # the name is fixed from here on
        trap "rm -f '$capture'" EXIT
        printf '%s\n' "$@" | sort -V | xargs -d '\n' mergecap -a -F pcap -w "$capture"
        echo "merged $# capture files in the order of their numbers"
    fi
    check_capture "$expectations" "$capture" "${decode_as[@]}"
    exit
fi
[ "$#" -eq 0 ] || usage

started=$SECONDS
if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP: capturing on loopback needs root; the dissector was not tested" >&2
    echo "dissector: 0 passed, 1 skipped"
    exit 0
fi
install_missing tcpdump
check_tshark

if [ -n "${TCPFILE_BIN_DIR:-}" ]; then
    bin=$TCPFILE_BIN_DIR
else
    cargo build --locked --release --bins
    bin=$(cargo metadata --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release
fi

work=$(mktemp -d /tmp/tcpfile-dissector.XXXXXX)
# The processes started here and still running, by name.
declare -A pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

served=$work/served
mkdir "$served" "$work/downloads"
: >"$served/empty.txt"
head -c 4321 /dev/urandom | base64 | head -c 4321 >"$served/small.txt"
head -c $((6 * 1024 * 1024 + 7)) /dev/urandom >"$served/large.bin"
head -c $((3 * 1024 * 1024 + 1)) /dev/urandom >"$served/refused.bin"
for name in reply-7.txt split.txt coalesced.txt split-tail.txt port-7070.txt; do
    echo "the file $name" >"$served/$name"
done

# start NAME out|err COMMAND...: runs COMMAND in the background with its
# output in $work/NAME.out and errors in $work/NAME.err, and waits until the
# one named has a line: the server's address, or tcpdump's "listening on".
start() {
    local name=$1 ready=$work/$1.$2 waited
    shift 2
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pids[$name]=$!
    for ((waited = 0; waited < START_LIMIT * 10; waited++)); do
        [ -s "$ready" ] && return 0
        kill -0 "${pids[$name]}" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

start server out "$bin/tcpfile-server-iterative" 127.0.0.1 0 "$served" ||
    fail "the server did not start: $(cat "$work/server.err")"
port=$(sed -n '1s/^listening on .*:\([0-9]*\)$/\1/p' "$work/server.out")
start broken out python3 "$CHECKER" server || fail "the hand-made server did not start: $(cat "$work/broken.err")"
broken_port=$(head -n 1 "$work/broken.out")
# Port 7070 shows that the dissector is registered there, without -d. On
# 127.0.0.2, an address no one else on this machine is likely to use.
skipped=0
registered_port=7070
if ! start registered out "$bin/tcpfile-server-iterative" 127.0.0.2 "$registered_port" "$served"; then
    echo "SKIP: no server on 127.0.0.2:$registered_port ($(tail -n 1 "$work/registered.err")):" \
        "the registration on port $registered_port is not tested" >&2
    skipped=1
    registered_port=
fi
echo "servers: tcpfile-server-iterative on 127.0.0.1:$port${registered_port:+ and 127.0.0.2:$registered_port}," \
    "the hand-made one on 127.0.0.1:$broken_port"

filter="tcp port $port or tcp port $broken_port or (host 127.0.0.2 and tcp port 7070) or udp port $port"
# -B: a multi-MiB transfer bursts faster than tcpdump writes; the default
# buffer drops packets on a busy machine.
for snaplen in 0 512; do
    start "capture-$snaplen" err tcpdump -i lo -nn -U -B 32768 -s "$snaplen" -w "$work/snaplen-$snaplen.pcap" "$filter" ||
        fail "tcpdump did not start: $(cat "$work/capture-$snaplen.err")"
done

expected=$work/expected
# fetch_with_client EXTRA ADDRESS PORT NAME MAX_SIZE [CLIENT OPTION...]: runs
# tcpfile-client and writes down what it asked for and got (from the header
# it prints, its exit code and the file it wrote), with the expectation words
# EXTRA.
fetch_with_client() {
    local extra=$1 address=$2 server_port=$3 name=$4 max_size=$5
    shift 5
    local version=1 code=0 output=$work/downloads/$name status size reply content=0
    if [ "${1:-}" = --protocol-version ]; then
        version=$2
    fi
    "$bin/tcpfile-client" "$address" "$server_port" "$name" "$max_size" -o "$output" "$@" \
        2>"$work/client.err" || code=$?
    read -r status size < <(sed -n 's/^received header: .*, status \([0-9]*\), file size \([0-9]*\)$/\1 \2/p' \
        "$work/client.err")
    [ -n "${size:-}" ] || fail "tcpfile-client $name printed no header: $(cat "$work/client.err")"
    case $code in
        0) reply=READY_TO_RECEIVE ;;
        4) reply=REFUSE_TO_RECEIVE ;;
        *) reply=- ;;
    esac
    [ ! -f "$output" ] || content=$(stat -c %s "$output")
    echo "name=$name version=$version type=FILE_REQUEST name_length=${#name}" \
        "status=${STATUS_NAMES[$status]:-$status} size=$size reply=$reply content=$content $extra" >>"$expected"
    printf '  tcpfile-client %-18s exit %d: status %s, size %s, reply %s, %s bytes written\n' \
        "$name" "$code" "${STATUS_NAMES[$status]:-$status}" "$size" "$reply" "$content"
}

# fetch_with_peer EXTRA PORT NAME [PEER OPTION...]: the same with the
# hand-made client of ci/dissector.py.
fetch_with_peer() {
    local extra=$1 server_port=$2 name=$3
    shift 3
    local got
    got=$(python3 "$CHECKER" client "$server_port" "$name" "$@") || fail "the hand-made client failed for '$name'"
    echo "$got $extra" >>"$expected"
    printf '  hand-made client %q %s: %s\n' "${name:0:16}" "$*" "${got#* }" | cut -c 1-160
}

echo "conversations:"
fetch_with_client experts=none 127.0.0.1 "$port" empty.txt 1M
fetch_with_client experts=none 127.0.0.1 "$port" small.txt 1M
fetch_with_client experts=none 127.0.0.1 "$port" large.bin 64M
fetch_with_client experts=none 127.0.0.1 "$port" refused.bin 1M
fetch_with_client experts=none 127.0.0.1 "$port" no-such-file.txt 1M
fetch_with_client experts=version_mismatch 127.0.0.1 "$port" version-2.txt 1M --protocol-version 2
fetch_with_peer experts=bad_name_length "$port" '' --name-length 0
fetch_with_peer experts=bad_name_length "$port" "$(printf 'x%.0s' {1..256})" --name-length 300
fetch_with_peer experts=unknown_type "$port" type-9.txt --type 9
fetch_with_peer experts=invalid_name "$port" sub/dir.txt
fetch_with_peer experts=unknown_reply "$port" reply-7.txt --reply 7
# The request in 260 segments, then the reply: 261.
fetch_with_peer "experts=none client_segments=261" "$port" split.txt --split
fetch_with_peer "experts=none client_segments=1" "$port" coalesced.txt --reply-with-request
# The request's last byte and the reply share the 260th segment.
fetch_with_peer "experts=none client_segments=260" "$port" split-tail.txt --split --reply-with-request
fetch_with_peer experts=unknown_status "$broken_port" status-9.txt
fetch_with_peer experts=content_beyond_size "$broken_port" too-much.txt
if [ -n "$registered_port" ]; then
    fetch_with_client experts=none 127.0.0.2 "$registered_port" port-7070.txt 1M
fi

# The last packet of the captures: a datagram to a port no one listens on.
# Once tcpdump has written it, it has written every packet before it.
echo last >"/dev/udp/127.0.0.1/$port"

# stop_capture SNAPLEN: stops that tcpdump once it has written the last
# packet, and checks that the kernel dropped nothing for it.
stop_capture() {
    local name=capture-$1 capture=$work/snaplen-$1.pcap waited
    local log=$work/$name.err
    for ((waited = 0; waited < FLUSH_LIMIT * 5; waited++)); do
        [ -z "$(tcpdump -r "$capture" -nn -c 1 udp 2>/dev/null)" ] || break
        sleep 0.2
    done
    [ -n "$(tcpdump -r "$capture" -nn -c 1 udp 2>/dev/null)" ] ||
        fail "tcpdump has not written the last packet after ${FLUSH_LIMIT}s"
    kill -TERM "${pids[$name]}"
    wait "${pids[$name]}" || true
    unset "pids[$name]"
    local dropped
    dropped=$(sed -n 's/^\([0-9]*\) packets dropped by kernel$/\1/p' "$log" | tail -n 1)
    [ "$dropped" = 0 ] || fail "tcpdump reports '${dropped:-no count of}' packets dropped by the kernel"
    echo "  $(sed -n 's/^\([0-9]*\) packets captured$/\1/p' "$log") packets captured, none dropped"
}

decode_as=(--decode-as "$port" --decode-as "$broken_port")
checks=0
for snaplen in 0 512; do
    case $snaplen in
        0) echo "the capture of whole packets:" ;;
        *) echo "the capture of the first $snaplen bytes of each packet:" ;;
    esac
    stop_capture "$snaplen"
    check_capture "$expected" "$work/snaplen-$snaplen.pcap" "${decode_as[@]}" || fail "snap length $snaplen"
    checks=$((checks + 1))
done

# The check itself must notice a wrong field.
echo "a wrong expectation (large.bin one byte larger) must fail:"
large_size=$(stat -c %s "$served/large.bin")
sed "s/ size=$large_size / size=$((large_size + 1)) /" "$expected" >"$work/wrong"
! cmp -s "$expected" "$work/wrong" || fail "no expectation for large.bin to get wrong"
if check_capture "$work/wrong" "$work/snaplen-512.pcap" "${decode_as[@]}" >"$work/wrong.out" 2>&1; then
    fail "the check passed with a wrong size for large.bin"
fi
grep '^FAIL' "$work/wrong.out" | sed 's/^/  /'
checks=$((checks + 1))

echo "dissector: $checks passed, $skipped skipped in $((SECONDS - started)) s"
