#!/usr/bin/env bash
# Measures the tcpfile server models beside nginx, on this machine, over
# loopback, with the same load generator for both, and writes the report.
#
#   ci/bench.sh            the full run: rewrites BENCHMARKS.md and
#                          docs/bench-chart.svg (a quarter of an hour or more)
#   ci/bench.sh --smoke    small files, one run, a few hundred requests; prints
#                          the targets and removes its report. Fails on any
#                          error or byte count that does not add up, never on
#                          a speed.
#
# Options:
#   --runs N        runs of every case; the report gives the median (default 5)
#   --requests N    requests per run of the small-request case (default 20000;
#                   300 in the smoke run)
#   --out DIR       where the report goes instead, kept with the raw results
#                   (the full run's default is the repository)
#   --baseline REF  also build the servers of git revision REF and run them
#                   beside this tree's, interleaved, in the small-request case:
#                   the check that the lab models' figures did not fall
#
# Cases: a 1 GiB file (bulk) against `cat`; many 4 KiB requests, a new
# connection each, at several concurrencies, every server driven by
# tcpfile-bench (nginx in its HTTP/1.0 mode) and nginx by wrk as a second
# view; a 1 KiB fetch behind 1,000 idle connections; the whole server's
# memory with 10,000 connections held open. ci/bench_report.py writes the
# report and the chart from the raw results.
#
# Environment: CARGO_TARGET_DIR is honoured; BENCH_TMPDIR is where the
# fixtures and the copies go (default /tmp; the full run needs 3 GiB there).
# Source and copies share one file system: across two, `cat` cannot use
# copy_file_range and falls back to read and write. BENCH_PYTHON names a
# Python with matplotlib for the report (default: /usr/bin/python3 or python3,
# whichever has it; as root, Debian's python3-matplotlib is installed if
# neither has). The smoke run needs no matplotlib: without it, it draws no
# chart.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)

invocation="ci/bench.sh $*"
smoke=false
runs=""
requests=""
out=""
baseline=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --smoke) smoke=true ;;
        --runs) runs=${2:?--runs needs a number}; shift ;;
        --requests) requests=${2:?--requests needs a number}; shift ;;
        --out) out=${2:?--out needs a folder}; shift ;;
        --baseline) baseline=${2:?--baseline needs a git revision}; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# Every tcpfile server model the run measures: name, binary, process count
# ("-" for none), and how the report names it. A model whose binary is not
# built is left out, and the targets that concern it read "n/a".
MODELS=(
    "iterative tcpfile-server-iterative - iterative"
    "parallel-64 tcpfile-server-parallel 64 parallel, 64 children"
    "preforked-2 tcpfile-server-preforked 2 preforked, 2 workers"
    "preforked-8 tcpfile-server-preforked 8 preforked, 8 workers"
    "evented-2 tcpfile-server-evented 2 evented, 2 workers"
)
# The models that were there before the evented one, compared with
# --baseline.
LAB_MODELS=(iterative parallel-64 preforked-2 preforked-8)
NGINX_WORKERS=(2 8)

CONCURRENCY_LEVELS=(1 8 64 256)
SMALL_SIZE=4096
TINY_SIZE=1024
if $smoke; then
    BIG_SIZE=$((8 * 1024 * 1024))
    REQUESTS=${requests:-300}
    runs=${runs:-1}
    WARMUP=0
    TIME_BOUND=20
    IDLE=50
    HELD=200
    # How long a fetch behind the idle connections may wait.
    IDLE_PATIENCE=1
else
    BIG_SIZE=$((1024 * 1024 * 1024))
    REQUESTS=${requests:-20000}
    runs=${runs:-5}
    WARMUP=1
    TIME_BOUND=120
    IDLE=1000
    HELD=10000
    IDLE_PATIENCE=3
fi
for number in "$runs" "$REQUESTS"; do
    case "$number" in '' | *[!0-9]* | 0) echo "--runs and --requests take a positive number" >&2; exit 2 ;; esac
done

started_at=$(date +%s)
load_before=$(cut -d ' ' -f 1-3 /proc/loadavg)

# --- Tools ------------------------------------------------------------------

missing_packages=()
need() {
    command -v "$1" >/dev/null 2>&1 || missing_packages+=("$2")
}
need nginx nginx-light
need wrk wrk
need curl curl
need python3 python3
need pgrep procps
need ss iproute2
need cmp diffutils
need lscpu util-linux

# The Python for the report, the connection holder and the helpers: one with
# matplotlib. Debian's python3-matplotlib belongs to /usr/bin/python3, which
# need not be the python3 first on the PATH.
find_python() {
    local candidate
    for candidate in ${BENCH_PYTHON:+"$BENCH_PYTHON"} /usr/bin/python3 python3; do
        if "$candidate" -c 'import matplotlib' >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}
# The smoke run does without: it installs nothing that large for a chart
# it removes.
if ! PYTHON=$(find_python) && ! $smoke; then
    missing_packages+=(python3-matplotlib)
fi

if [ "${#missing_packages[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${missing_packages[*]}; install them as root (apt-get install ...)" >&2
        exit 1
    fi
    echo "installing ${missing_packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null
fi
if [ -z "$PYTHON" ]; then
    PYTHON=$(find_python || command -v python3)
fi
NGINX=$(command -v nginx)

BENCH_TMPDIR=${BENCH_TMPDIR:-/tmp}
WORK=$(mktemp -d "$BENCH_TMPDIR/tcpfile-bench.XXXXXX")
# nginx's workers run as an unprivileged user and must read the fixtures.
chmod 755 "$WORK"
SERVED="$WORK/served"
FETCHED="$WORK/fetched"
RESULTS="$WORK/results"
mkdir -p "$SERVED" "$FETCHED" "$RESULTS"

SERVER_PIDS=()
HOLDER_PID=""

# Stops one process we started and reaps it: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
    local pid=$1 tries=0 status=0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 100 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || status=$?
    return "$status"
}

cleanup() {
    local pid
    if [ -n "$HOLDER_PID" ]; then
        stop_pid "$HOLDER_PID" || true
    fi
    for pid in "${SERVER_PIDS[@]}"; do
        stop_pid "$pid" || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits, for at most SECONDS, until the command succeeds; fails the run
# with WHAT otherwise.
wait_until() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$(($(date +%s%N) + seconds * 1000000000))
    until "$@"; do
        if [ "$(date +%s%N)" -ge "$deadline" ]; then
            echo "gave up after ${seconds} s waiting for $what" >&2
            exit 1
        fi
        sleep 0.05
    done
}

# --- Build ------------------------------------------------------------------

echo "building the release binaries"
cargo build --release --locked --bins
BIN="${CARGO_TARGET_DIR:-target}/release"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac

# The models of this build, one line each in models.tsv for the report:
# name, label, group, binary, process count.
MODELS_TSV="$RESULTS/models.tsv"
: >"$MODELS_TSV"
RUN_MODELS=()
declare -A binary_of count_of label_of
for entry in "${MODELS[@]}"; do
    read -r name binary count label <<<"$entry"
    if [ ! -x "$BIN/$binary" ]; then
        echo "no $binary in this build: the $name model is left out"
        continue
    fi
    RUN_MODELS+=("$name")
    binary_of[$name]="$BIN/$binary"
    count_of[$name]=$count
    label_of[$name]=$label
    printf '%s\t%s\tmodel\t%s\t%s\n' "$name" "$label" "$binary" "$count" >>"$MODELS_TSV"
done

BASE_MODELS=()
if [ -n "$baseline" ]; then
    base_commit=$(git rev-parse --short=12 "$baseline^{commit}")
    base_src="$WORK/baseline-src"
    base_target="${CARGO_TARGET_DIR:-$REPO/target}/bench-baseline"
    echo "building the servers of $baseline ($base_commit) in $base_target"
    mkdir -p "$base_src"
    git archive "$base_commit" | tar -x -C "$base_src"
    CARGO_TARGET_DIR=$base_target TCPFILE_COMMIT=$base_commit cargo build --release --locked --bins \
        --manifest-path "$base_src/Cargo.toml"
    for name in "${LAB_MODELS[@]}"; do
        [ -n "${binary_of[$name]:-}" ] || continue
        base_binary="$base_target/release/$(basename "${binary_of[$name]}")"
        [ -x "$base_binary" ] || continue
        BASE_MODELS+=("$name@base")
        binary_of[$name@base]=$base_binary
        count_of[$name@base]=${count_of[$name]}
        label_of[$name@base]="${label_of[$name]}, at $base_commit"
        printf '%s\t%s\tbaseline\t%s\t%s\n' "$name@base" "${label_of[$name@base]}" \
            "$(basename "$base_binary")" "${count_of[$name]}" >>"$MODELS_TSV"
    done
fi
for workers in "${NGINX_WORKERS[@]}"; do
    printf 'nginx-%s\tnginx, %s workers\tnginx\tnginx\t%s\n' "$workers" "$workers" "$workers" >>"$MODELS_TSV"
done

# --- Servers ----------------------------------------------------------------

# The first line a tcpfile server prints.
has_address_line() {
    [ -n "$(head -n 1 "$1")" ] || ! kill -0 "$2" 2>/dev/null
}

# Starts model NAME on a free port with `--timeout TIMEOUT`, and allowed FDS
# descriptors when given; sets SERVER_PID and SERVER_PORT.
start_model() {
    local name=$1 timeout=$2 fds=${3:-}
    local label="$name-$((${#SERVER_PIDS[@]} + 1))"
    local args=("${binary_of[$name]}" 127.0.0.1 0 "$SERVED")
    [ "${count_of[$name]}" = "-" ] || args+=("${count_of[$name]}")
    args+=(--timeout "$timeout" --grace 5 -q)
    : >"$WORK/$label.out"
    (if [ -n "$fds" ]; then ulimit -n "$fds"; fi && exec "${args[@]}") \
        >"$WORK/$label.out" 2>"$WORK/$label.err" &
    SERVER_PID=$!
    SERVER_PIDS+=("$SERVER_PID")
    wait_until 10 "$name to print its address" has_address_line "$WORK/$label.out" "$SERVER_PID"
    local line
    line=$(head -n 1 "$WORK/$label.out")
    case "$line" in
        "listening on "*) SERVER_PORT=${line##*:} ;;
        *)
            echo "$name did not start: '$line'" >&2
            cat "$WORK/$label.err" >&2
            exit 1
            ;;
    esac
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

nginx_answers() {
    curl -sf -o /dev/null "http://127.0.0.1:$1/small.bin" || ! kill -0 "$2" 2>/dev/null
}

# Starts nginx with WORKERS workers from its own configuration in the work
# folder; the system's nginx configuration is never read.
start_nginx() {
    local label=$1 workers=$2
    local dir="$WORK/$label"
    mkdir -p "$dir"
    SERVER_PORT=$(free_port)
    cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    sendfile on;
    default_type application/octet-stream;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$SERVER_PORT backlog=4096;
        root $SERVED;
    }
}
EOF
    "$NGINX" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stdout" 2>&1 &
    SERVER_PID=$!
    SERVER_PIDS+=("$SERVER_PID")
    wait_until 10 "nginx ($label) to answer" nginx_answers "$SERVER_PORT" "$SERVER_PID"
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "nginx ($label) did not start:" >&2
        cat "$dir/error.log" "$dir/stdout" >&2 || true
        exit 1
    fi
}

# Stops a server started above; tcpfile servers must exit 0 on SIGTERM.
stop_server() {
    local pid=$1 name=$2 status=0
    stop_pid "$pid" || status=$?
    local remaining=() kept
    for kept in "${SERVER_PIDS[@]}"; do
        [ "$kept" = "$pid" ] || remaining+=("$kept")
    done
    SERVER_PIDS=("${remaining[@]}")
    if [ "$status" -ne 0 ]; then
        echo "$name exited with status $status after SIGTERM" >&2
        cat "$WORK/$name"*.err >&2 2>/dev/null || true
        exit 1
    fi
}

# A server's processes: PID and all its descendants.
process_tree() {
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END {
            inside[root] = 1
            do {
                grown = 0
                for (pid in parent)
                    if (!(pid in inside) && (parent[pid] in inside)) { inside[pid] = 1; grown = 1 }
            } while (grown)
            for (pid in inside) print pid
        }'
}

# Whether PID has COUNT workers: child processes, or else threads.
has_workers() {
    [ "$(pgrep -c -P "$1")" -ge "$2" ] || [ "$(find "/proc/$1/task" -mindepth 1 -maxdepth 1 | wc -l)" -gt "$2" ]
}

# Waits until the server PID has started its COUNT workers, at most 10 s.
wait_for_workers() {
    wait_until 10 "$2 workers of PID $1" has_workers "$1" "$2"
}

# Prints "PROCESSES RSS PSS PRIVATE" for the processes PIDS..., in KiB,
# summed from their smaps_rollup; a process that has gone is left out.
memory_of() {
    local pid files=()
    for pid in "$@"; do
        [ -r "/proc/$pid/smaps_rollup" ] && files+=("/proc/$pid/smaps_rollup")
    done
    [ "${#files[@]}" -gt 0 ] || { echo "0 0 0 0"; return 0; }
    awk 'FNR == 1 { processes++ } /^Rss:/ { rss += $2 } /^Pss:/ { pss += $2 }
         /^Private_(Clean|Dirty):/ { private += $2 }
         END { print processes + 0, rss + 0, pss + 0, private + 0 }' "${files[@]}" 2>/dev/null
}

memory_of_tree() {
    # shellcheck disable=SC2046 # one PID a word
    memory_of $(process_tree "$1")
}

FOOTPRINT="$RESULTS/footprint.tsv"
: >"$FOOTPRINT"
# A footprint row: what, processes, resident, proportional, private (KiB).
note_footprint() {
    local what=$1 processes rss pss private
    read -r processes rss pss private <<<"$2"
    printf '%s\t%s\t%s\t%s\t%s\n' "$what" "$processes" "$rss" "$pss" "$private" >>"$FOOTPRINT"
}

# The exact commands, as the report shows them.
COMMANDS="$RESULTS/commands.txt"
: >"$COMMANDS"
declare -A noted
# Records a command once per KIND as the report shows it: words with spaces
# quoted, the build and work folders named as the report names them.
note_command() {
    local kind=$1 word line=""
    shift
    [ -z "${noted[$kind]:-}" ] || return 0
    noted[$kind]=1
    for word in "$@"; do
        case "$word" in
            *[[:space:]]*) line+="'$word' " ;;
            *) line+="$word " ;;
        esac
    done
    note_line "${line% }"
}
note_line() {
    printf '%s\n' "$1" | sed -e "s|$BIN/|target/release/|g" -e "s|$WORK|\$WORK|g" >>"$COMMANDS"
}

# "N requests, R/s" from a tcpfile-bench or wrk report.
summary_of() {
    sed -n 's/.*"completed": \([0-9]*\),.*"elapsed_s": \([0-9.]*\),.*/\1 \2/p' <<<"$1" |
        awk '{ printf "%d requests, %.0f/s\n", $1, ($2 > 0 ? $1 / $2 : 0) }'
}

# How a single fetch went, from its tcpfile-bench report.
fetch_of() {
    case "$1" in
        *'"completed": 1,'*)
            sed -n 's/.*"latency_us": {[^}]*"max": \([0-9.]*\)}.*/\1/p' <<<"$1" |
                awk '{ printf "fetched in %.1f ms\n", $1 / 1000 }'
            ;;
        *) echo "gave up: $(sed -n 's/.*"errors": \({[^}]*}\).*/\1/p' <<<"$1")" ;;
    esac
}

listen_drops() {
    awk '/^TcpExt:/ { if (!seen) { for (i = 1; i <= NF; i++) name[i] = $i; seen = 1 }
                      else { for (i = 1; i <= NF; i++) if (name[i] == "ListenDrops") print $i } }' \
        /proc/net/netstat
}

# Connections waiting in PORT's accept queue, and established ones the
# server holds (accepted or queued).
accept_queue() {
    ss -Hltn "sport = :$1" | awk '{ sum += $2 } END { print sum + 0 }'
}
server_connections() {
    ss -Htn state established "sport = :$1" | wc -l
}

# --- Fixtures ---------------------------------------------------------------

echo "making the fixtures in $WORK"
head -c "$SMALL_SIZE" /dev/urandom >"$SERVED/small.bin"
head -c "$TINY_SIZE" /dev/urandom >"$SERVED/tiny.bin"
head -c "$BIG_SIZE" /dev/urandom >"$SERVED/big.bin"
chmod 644 "$SERVED"/*.bin
# Written back now rather than during the measurements.
sync
# Into the page cache: the bulk case measures copying, not the disk.
cat "$SERVED/big.bin" >/dev/null

# --- Bulk -------------------------------------------------------------------

echo "bulk: one $((BIG_SIZE / 1024 / 1024)) MiB file, $runs round(s)"
client_command() {
    printf '%q -q 127.0.0.1 %s big.bin 2G -o %q' "$BIN/tcpfile-client" "$1" "$FETCHED/$2.bin"
}
bulk_names=(cat)
bulk_commands=("cat $(printf '%q' "$SERVED/big.bin") > $(printf '%q' "$FETCHED/cat.bin")")
bulk_servers=()
for name in "${RUN_MODELS[@]}"; do
    start_model "$name" 10
    bulk_servers+=("$SERVER_PID $name")
    bulk_names+=("client-$name")
    bulk_commands+=("$(client_command "$SERVER_PORT" "client-$name")")
done
start_nginx bulk-nginx 2
bulk_servers+=("$SERVER_PID nginx")
bulk_names+=(nginx-curl)
bulk_commands+=("curl -sS --fail -o $(printf '%q' "$FETCHED/nginx-curl.bin") http://127.0.0.1:$SERVER_PORT/big.bin")
for index in "${!bulk_names[@]}"; do
    note_line "${bulk_commands[$index]}"
done
# Rounds of every command in turn rather than all runs of one command, so
# that whatever else the machine does falls on all of them alike.
BULK="$RESULTS/bulk.tsv"
: >"$BULK"
for round in $(seq $((1 - WARMUP)) "$runs"); do
    for index in "${!bulk_names[@]}"; do
        name=${bulk_names[$index]}
        begin=$(date +%s%N)
        eval "${bulk_commands[$index]}"
        end=$(date +%s%N)
        if [ "$round" -ge 1 ]; then
            printf '%s\t%d\t%d\n' "$name" "$round" $((end - begin)) >>"$BULK"
        fi
        # Every copy must be the file, byte for byte; checking and removing
        # it are not part of the measurement.
        cmp "$SERVED/big.bin" "$FETCHED/$name.bin"
        rm -f "$FETCHED/$name.bin"
        printf '  round %d  %-22s %6.3f s\n' "$round" "$name" "$(echo "$begin $end" | awk '{ print ($2 - $1) / 1e9 }')"
    done
done
echo "bulk: every copy matched the source"
for server in "${bulk_servers[@]}"; do
    read -r pid name <<<"$server"
    stop_server "$pid" "$name"
done

# --- Many small requests ----------------------------------------------------

# wrk makes a number of requests only with a script: each thread stops after
# its share, and the last one to finish interrupts wrk, which then prints the
# summary at once instead of sleeping out its duration.
WRK_SCRIPT="$WORK/count.lua"
cat >"$WRK_SCRIPT" <<'EOF'
-- wrk ... -- REQUESTS BODY_SIZE MARK_DIR THREADS
local threads = {}
local created = 0
function setup(thread)
  created = created + 1
  thread:set("id", created)
  table.insert(threads, thread)
end

seen, wrong = 0, 0
local share, size, marks, count, stopped = 0, 0, "", 1, false
function init(args)
  local total = tonumber(args[1])
  count = tonumber(args[4])
  share = math.floor(total / count) + ((id <= total % count) and 1 or 0)
  size = tonumber(args[2])
  marks = args[3]
end

function response(status, headers, body)
  seen = seen + 1
  if status ~= 200 or #body ~= size then wrong = wrong + 1 end
  if seen >= share and not stopped then
    stopped = true
    wrk.thread:stop()
    local last = string.format("touch %s/%d; [ $(ls %s | wc -l) -ge %d ] && kill -INT $PPID",
                               marks, id, marks, count)
    io.popen(last):close()
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do bad = bad + thread:get("wrong") end
  local e = summary.errors
  io.write(string.format('JSON {"completed": %d, "elapsed_s": %.6f, "bytes": %d, '
    .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d}, '
    .. '"bad_responses": %d, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration / 1e6, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    bad, e.connect, e.read, e.write, e.status, e.timeout))
end
EOF

echo "small requests: $REQUESTS requests of a 4 KiB file, concurrency ${CONCURRENCY_LEVELS[*]}, $runs round(s)"
# What each round runs: a server and the client that loads it.
small_cases=()
declare -A port_of pid_of
for name in "${RUN_MODELS[@]}" "${BASE_MODELS[@]}"; do
    start_model "$name" 10
    port_of[$name]=$SERVER_PORT
    pid_of[$name]=$SERVER_PID
    small_cases+=("$name tcpfile-bench")
done
for workers in "${NGINX_WORKERS[@]}"; do
    start_nginx "nginx-$workers" "$workers"
    port_of[nginx-$workers]=$SERVER_PORT
    pid_of[nginx-$workers]=$SERVER_PID
    small_cases+=("nginx-$workers tcpfile-bench" "nginx-$workers wrk")
done

# Footprint of servers that have not served anything yet, once their workers
# are all there.
for name in "${RUN_MODELS[@]}"; do
    case "$name" in preforked-* | evented-*) wait_for_workers "${pid_of[$name]}" "${count_of[$name]}" ;; esac
    note_footprint "${label_of[$name]}, before any request" "$(memory_of_tree "${pid_of[$name]}")"
done
if [ -n "${pid_of[preforked-2]:-}" ]; then
    note_footprint "one preforked worker, idle, before any request" \
        "$(memory_of "$(pgrep -P "${pid_of[preforked-2]}" | head -n 1)")"
fi

SMALL="$RESULTS/small.jsonl"
: >"$SMALL"
for run in $(seq 1 "$runs"); do
    for concurrency in "${CONCURRENCY_LEVELS[@]}"; do
        # Every case once per round, so that what else the machine does
        # during the session falls on all of them alike.
        for small_case in "${small_cases[@]}"; do
            read -r server client <<<"$small_case"
            port=${port_of[$server]}
            drops_before=$(listen_drops)
            case "$client" in
                wrk)
                    threads=$((concurrency < 2 ? concurrency : 2))
                    marks="$WORK/marks"
                    rm -rf "$marks"
                    mkdir "$marks"
                    command=(wrk -t "$threads" -c "$concurrency" -d "${TIME_BOUND}s" --timeout 10s
                        -H 'Connection: close' -s "$WRK_SCRIPT"
                        "http://127.0.0.1:$port/small.bin" -- "$REQUESTS" "$SMALL_SIZE" "$marks" "$threads")
                    note_command wrk "${command[@]}"
                    report=$("${command[@]}" | sed -n 's/^JSON //p')
                    ;;
                tcpfile-bench)
                    command=("$BIN/tcpfile-bench" 127.0.0.1 "$port" small.bin -c "$concurrency"
                        -n "$REQUESTS" -d "$TIME_BOUND" --timeout 10 --expect-size "$SMALL_SIZE" --json)
                    case "$server" in
                        nginx-*) command+=(--protocol http); kind=bench-http ;;
                        *) kind=bench ;;
                    esac
                    note_command "$kind" "${command[@]}"
                    status=0
                    report=$("${command[@]}") || status=$?
                    # 3: the run finished and counted failed requests, which
                    # the report shows.
                    if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
                        echo "tcpfile-bench failed against $server (status $status)" >&2
                        exit 1
                    fi
                    ;;
            esac
            drops=$(($(listen_drops) - drops_before))
            if [ -z "$report" ]; then
                echo "$client printed no report against $server" >&2
                exit 1
            fi
            printf '{"server": "%s", "client": "%s", "concurrency": %d, "run": %d, "drops": %d, "report": %s}\n' \
                "$server" "$client" "$concurrency" "$run" "$drops" "$report" >>"$SMALL"
            printf '  run %d  c=%-3d %-22s %-13s %s\n' "$run" "$concurrency" "$server" "$client" \
                "$(summary_of "$report")"
        done
    done
done

for name in "${RUN_MODELS[@]}"; do
    note_footprint "${label_of[$name]}, after the runs" "$(memory_of_tree "${pid_of[$name]}")"
done
if [ -n "${pid_of[preforked-8]:-}" ]; then
    note_footprint "one preforked worker, idle, after the runs" \
        "$(memory_of "$(pgrep -P "${pid_of[preforked-8]}" | head -n 1)")"
fi
note_footprint "nginx, 2 workers, after the runs" "$(memory_of_tree "${pid_of[nginx-2]}")"
for name in "${RUN_MODELS[@]}" "${BASE_MODELS[@]}"; do
    stop_server "${pid_of[$name]}" "$name"
done
for workers in "${NGINX_WORKERS[@]}"; do
    stop_server "${pid_of[nginx-$workers]}" "nginx-$workers"
done

# --- Idle and held-open connections -----------------------------------------

# Descriptors for the connection holder and for a server that accepts every
# connection it holds.
HOLD_FDS=$((HELD + 1024))
if (ulimit -n "$HOLD_FDS") 2>/dev/null; then
    held_possible=true
else
    held_possible=false
    echo "cannot allow $HOLD_FDS descriptors (ulimit -n; hard limit $(ulimit -Hn)): the held-open case is left out" >&2
fi

holder_ready() {
    [ -s "$1" ] || ! kill -0 "$HOLDER_PID" 2>/dev/null
}

# Opens COUNT idle connections to PORT; sets HELD_ESTABLISHED.
hold_connections() {
    local port=$1 count=$2 status="$WORK/holder.status"
    rm -f "$status"
    (ulimit -n "$((count + 64))" && exec "$PYTHON" "$REPO/ci/bench_hold.py" 127.0.0.1 "$port" "$count" "$status") &
    HOLDER_PID=$!
    wait_until 60 "the connection holder" holder_ready "$status"
    if [ ! -s "$status" ]; then
        echo "the connection holder stopped before it held its connections" >&2
        exit 1
    fi
    HELD_ESTABLISHED=$(sed -n 's/^established //p' "$status")
}

release_connections() {
    stop_pid "$HOLDER_PID" || true
    HOLDER_PID=""
}

# Waits until the server has taken what it will from its accept queue: the
# queue empty, or no change for half a second; at most 10 s.
settle() {
    local port=$1 previous=-1 queue still=0 tries=0
    while [ "$tries" -lt 100 ]; do
        queue=$(accept_queue "$port")
        [ "$queue" -eq 0 ] && return 0
        if [ "$queue" -eq "$previous" ]; then
            still=$((still + 1))
            [ "$still" -ge 5 ] && return 0
        else
            still=0
        fi
        previous=$queue
        sleep 0.1
        tries=$((tries + 1))
    done
}

# Nothing left of the connections: none established, none queued.
no_connections_left() {
    [ "$(server_connections "$1")" -eq 0 ] && [ "$(accept_queue "$1")" -eq 0 ]
}

echo "a $TINY_SIZE-byte fetch behind $IDLE idle connections, $runs round(s); then $HELD connections held open"
IDLE_RESULTS="$RESULTS/idle.jsonl"
HELD_RESULTS="$RESULTS/held.jsonl"
: >"$IDLE_RESULTS"
: >"$HELD_RESULTS"
for name in "${RUN_MODELS[@]}"; do
    # --timeout 60: idle connections must not be dropped while they are
    # counted; the fetch gives up long before.
    if $held_possible; then
        start_model "$name" 60 "$HOLD_FDS"
    else
        start_model "$name" 60
    fi
    port=$SERVER_PORT
    pid=$SERVER_PID
    case "$name" in preforked-* | evented-*) wait_for_workers "$pid" "${count_of[$name]}" ;; esac
    for run in $(seq 1 "$runs"); do
        hold_connections "$port" "$IDLE"
        settle "$port"
        command=("$BIN/tcpfile-bench" 127.0.0.1 "$port" tiny.bin -n 1 --timeout "$IDLE_PATIENCE"
            -d "$((IDLE_PATIENCE + 2))" --expect-size "$TINY_SIZE" --json)
        note_command idle "${command[@]}"
        status=0
        report=$("${command[@]}") || status=$?
        if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
            echo "tcpfile-bench failed behind idle connections to $name (status $status)" >&2
            exit 1
        fi
        printf '{"server": "%s", "run": %d, "idle": %d, "established": %d, "patience_s": %d, "report": %s}\n' \
            "$name" "$run" "$IDLE" "$HELD_ESTABLISHED" "$IDLE_PATIENCE" "$report" >>"$IDLE_RESULTS"
        printf '  run %d  %-22s %s\n' "$run" "$name" "$(fetch_of "$report")"
        release_connections
        wait_until 30 "$name to close the idle connections" no_connections_left "$port"
    done

    if $held_possible; then
        read -r _ rss_before pss_before _ <<<"$(memory_of_tree "$pid")"
        hold_connections "$port" "$HELD"
        settle "$port"
        queued=$(accept_queue "$port")
        connections=$(server_connections "$port")
        read -r processes rss pss private <<<"$(memory_of_tree "$pid")"
        printf '{"server": "%s", "asked": %d, "established": %d, "queued": %d, "accepted": %d, "processes": %d, "rss_kib_before": %d, "pss_kib_before": %d, "rss_kib": %d, "pss_kib": %d, "private_kib": %d}\n' \
            "$name" "$HELD" "$HELD_ESTABLISHED" "$queued" "$((connections - queued))" "$processes" \
            "$rss_before" "$pss_before" "$rss" "$pss" "$private" >>"$HELD_RESULTS"
        printf '  %-22s %d of %d connections established, %d accepted; %d processes, %.1f MiB resident\n' \
            "$name" "$HELD_ESTABLISHED" "$HELD" "$((connections - queued))" "$processes" "$(echo "$rss" | awk '{ print $1 / 1024 }')"
        release_connections
    fi
    stop_server "$pid" "$name"
done

# --- Sizes ------------------------------------------------------------------

SIZES="$RESULTS/sizes.tsv"
: >"$SIZES"
host_triple=$(rustc -vV | sed -n 's/^host: //p')
for binary in tcpfile-client tcpfile-server-iterative tcpfile-server-parallel tcpfile-server-preforked tcpfile-server-evented tcpfile-bench; do
    [ -f "$BIN/$binary" ] || continue
    printf 'binary\t%s (release, %s)\t%s\n' "$binary" "$host_triple" "$(stat -c %s "$BIN/$binary")" >>"$SIZES"
    if [ -f "dist/amd64/$binary" ]; then
        printf 'binary\t%s (static, dist/amd64)\t%s\n' "$binary" "$(stat -c %s "dist/amd64/$binary")" >>"$SIZES"
    fi
done
for image in tcpfile/server-iterative tcpfile/server-parallel tcpfile/server-preforked tcpfile/server-evented tcpfile/client tcpfile/tcpdump; do
    size=""
    if command -v docker >/dev/null 2>&1; then
        size=$(docker image inspect --format '{{.Size}}' "$image" 2>/dev/null || true)
    fi
    printf 'image\t%s\t%s\n' "$image" "${size:-not built}" >>"$SIZES"
done

# --- Report -----------------------------------------------------------------

keep_report=true
if [ -z "$out" ]; then
    if $smoke; then
        out="$WORK/report"
        keep_report=false
    else
        out=$REPO
    fi
fi
mkdir -p "$out/docs"

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# The report's own files do not change what was measured.
if ! git diff --quiet HEAD -- . ':!BENCHMARKS.md' ':!docs/bench-chart.svg' 2>/dev/null; then
    commit="$commit (with local changes)"
fi
# What the report says about the machine, the tools and the run.
{
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'cpu\t%s\n' "$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)"
    printf 'cores\t%s\n' "$(nproc)"
    printf 'memory\t%s\n' "$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1024 / 1024 }' /proc/meminfo)"
    printf 'kernel\t%s\n' "$(uname -sr)"
    printf 'os\t%s\n' "$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release)"
    printf 'filesystem\t%s\n' "$(df -T "$WORK" | awk 'NR == 2 { print $2 }')"
    printf 'workdir\t%s\n' "$BENCH_TMPDIR"
    printf 'rustc\t%s\n' "$(rustc --version)"
    printf 'commit\t%s\n' "$commit"
    printf 'baseline\t%s\n' "${base_commit:-}"
    printf 'nginx\t%s\n' "$("$NGINX" -v 2>&1 | sed 's/^nginx version: nginx\///')"
    printf 'curl\t%s\n' "$(curl --version | head -n 1 | cut -d ' ' -f 1-2)"
    # wrk -v prints its version and usage and exits 1.
    printf 'wrk\t%s\n' "$({ wrk -v 2>&1 || true; } | head -n 1 | cut -d ' ' -f 1-2)"
    printf 'matplotlib\t%s\n' "$("$PYTHON" -c 'import matplotlib; print(matplotlib.__version__)' 2>/dev/null || true)"
    printf 'load\t%s\n' "$load_before"
    printf 'load_after\t%s\n' "$(cut -d ' ' -f 1-3 /proc/loadavg)"
    printf 'seconds\t%s\n' "$(($(date +%s) - started_at))"
    printf 'smoke\t%s\n' "$smoke"
    printf 'invocation\t%s\n' "$invocation"
    printf 'runs\t%s\n' "$runs"
    printf 'requests\t%s\n' "$REQUESTS"
    printf 'big_size\t%s\n' "$BIG_SIZE"
    printf 'small_size\t%s\n' "$SMALL_SIZE"
    printf 'tiny_size\t%s\n' "$TINY_SIZE"
    printf 'idle\t%s\n' "$IDLE"
    printf 'held\t%s\n' "$HELD"
    printf 'held_possible\t%s\n' "$held_possible"
} >"$RESULTS/meta.tsv"

status=0
"$PYTHON" "$REPO/ci/bench_report.py" "$RESULTS" "$out/BENCHMARKS.md" "$out/docs/bench-chart.svg" || status=$?
if $keep_report; then
    if [ "$out" != "$REPO" ]; then
        mkdir -p "$out/results"
        cp -r "$RESULTS/." "$out/results/"
    fi
    echo "report: $out/BENCHMARKS.md, chart: $out/docs/bench-chart.svg"
fi
echo "the run took $(($(date +%s) - started_at)) s"
# 3: some requests failed their checks, which the report lists.
if [ "$status" -eq 3 ] && $smoke; then
    echo "smoke run failed: some requests failed their checks or bytes do not add up" >&2
    exit 1
elif [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
    echo "the report could not be written (status $status)" >&2
    exit 1
fi
