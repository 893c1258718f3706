#!/usr/bin/env bash
# Measures the three server models beside what a user would otherwise use,
# on this machine, over loopback, and writes the report.
#
#   ci/bench.sh            the full run: rewrites BENCHMARKS.md and
#                          docs/bench-chart.svg (about a quarter of an hour)
#   ci/bench.sh --smoke    small files, one run, a few hundred requests; the
#                          report goes to a temporary folder. Fails on any
#                          error or byte count that does not add up, never on
#                          a speed.
#
# Options:
#   --runs N     runs of every case; the report gives the median (default 5)
#   --out DIR    where the report goes instead (the full run's default is the
#                repository; the smoke run's a new folder under /tmp)
#
# Environment: CARGO_TARGET_DIR is honoured; BENCH_TMPDIR is where the
# fixtures and the copies go (default /tmp; the full run needs 3 GiB there).
# Source and copies share one file system: across two, `cat` cannot use
# copy_file_range and falls back to read and write.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)

smoke=false
runs=""
out=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --smoke) smoke=true ;;
        --runs) runs=${2:?--runs needs a number}; shift ;;
        --out) out=${2:?--out needs a folder}; shift ;;
        -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

CONCURRENCY_LEVELS=(1 8 64 256)
SMALL_SIZE=4096
if $smoke; then
    BIG_SIZE=$((8 * 1024 * 1024))
    REQUESTS=300
    runs=${runs:-1}
    WARMUP=0
    TIME_BOUND=20
else
    BIG_SIZE=$((1024 * 1024 * 1024))
    REQUESTS=20000
    runs=${runs:-5}
    WARMUP=1
    TIME_BOUND=120
fi
case "$runs" in '' | *[!0-9]* | 0) echo "--runs must be a positive number" >&2; exit 2 ;; esac

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
need cmp diffutils
need lscpu util-linux
if [ "${#missing_packages[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${missing_packages[*]}; install them as root (apt-get install ...)" >&2
        exit 1
    fi
    echo "installing ${missing_packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null
fi
NGINX=$(command -v nginx)

echo "building the release binaries"
cargo build --release --locked --bins
BIN="${CARGO_TARGET_DIR:-target}/release"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac

# --- Servers ----------------------------------------------------------------

BENCH_TMPDIR=${BENCH_TMPDIR:-/tmp}
WORK=$(mktemp -d "$BENCH_TMPDIR/tcpfile-bench.XXXXXX")
# nginx's workers run as an unprivileged user and must read the fixtures.
chmod 755 "$WORK"
SERVED="$WORK/served"
FETCHED="$WORK/fetched"
RESULTS="$WORK/results"
mkdir -p "$SERVED" "$FETCHED" "$RESULTS"

SERVER_PIDS=()

# Stops one server and reaps it: SIGTERM, then SIGKILL after 10 s.
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
    for pid in "${SERVER_PIDS[@]}"; do
        stop_pid "$pid" || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts a tcpfile server on a free port; sets SERVER_PID and SERVER_PORT.
start_tcpfile() {
    local label=$1
    shift
    : >"$WORK/$label.out"
    "$@" >"$WORK/$label.out" 2>"$WORK/$label.err" &
    SERVER_PID=$!
    SERVER_PIDS+=("$SERVER_PID")
    local line="" tries=0
    while [ "$tries" -lt 100 ]; do
        line=$(head -n 1 "$WORK/$label.out")
        [ -n "$line" ] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "$label did not start:" >&2
            cat "$WORK/$label.err" >&2
            exit 1
        fi
        sleep 0.1
        tries=$((tries + 1))
    done
    case "$line" in
        "listening on "*) SERVER_PORT=${line##*:} ;;
        *) echo "$label printed no address: '$line'" >&2; exit 1 ;;
    esac
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
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
    local tries=0
    until curl -sf -o /dev/null "http://127.0.0.1:$SERVER_PORT/small.bin"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 100 ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "nginx ($label) did not start:" >&2
            cat "$dir/error.log" "$dir/stdout" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
}

# Stops a server started above; tcpfile servers must exit 0 on SIGTERM.
stop_server() {
    local pid=$1 label=$2 status=0
    stop_pid "$pid" || status=$?
    local remaining=()
    local kept
    for kept in "${SERVER_PIDS[@]}"; do
        [ "$kept" = "$pid" ] || remaining+=("$kept")
    done
    SERVER_PIDS=("${remaining[@]}")
    if [ "$status" -ne 0 ]; then
        echo "$label exited with status $status after SIGTERM" >&2
        cat "$WORK/$label.err" >&2 2>/dev/null || true
        exit 1
    fi
}

# The exact commands, as the report shows them.
COMMANDS="$RESULTS/commands.txt"
: >"$COMMANDS"
# Records a command as the report shows it: words with spaces quoted, the
# build and work folders named as the report names them.
note_command() {
    local word line=""
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

listen_drops() {
    awk '/^TcpExt:/ { if (!seen) { for (i = 1; i <= NF; i++) name[i] = $i; seen = 1 }
                      else { for (i = 1; i <= NF; i++) if (name[i] == "ListenDrops") print $i } }' \
        /proc/net/netstat
}

# --- Fixtures ---------------------------------------------------------------

echo "making the fixtures in $WORK"
head -c "$SMALL_SIZE" /dev/urandom >"$SERVED/small.bin"
head -c "$BIG_SIZE" /dev/urandom >"$SERVED/big.bin"
chmod 644 "$SERVED"/*.bin
# Written back now rather than during the measurements.
sync
# Into the page cache: the bulk case measures copying, not the disk.
cat "$SERVED/big.bin" >/dev/null

SERVER_ARGS=(--timeout 10 --grace 5 -q)

# --- Bulk -------------------------------------------------------------------

echo "bulk: one $((BIG_SIZE / 1024 / 1024)) MiB file, $runs round(s)"
start_tcpfile bulk-iterative "$BIN/tcpfile-server-iterative" 127.0.0.1 0 "$SERVED" "${SERVER_ARGS[@]}"
bulk_iterative=("$SERVER_PID" "$SERVER_PORT")
start_tcpfile bulk-parallel "$BIN/tcpfile-server-parallel" 127.0.0.1 0 "$SERVED" 64 "${SERVER_ARGS[@]}"
bulk_parallel=("$SERVER_PID" "$SERVER_PORT")
start_tcpfile bulk-preforked "$BIN/tcpfile-server-preforked" 127.0.0.1 0 "$SERVED" 2 "${SERVER_ARGS[@]}"
bulk_preforked=("$SERVER_PID" "$SERVER_PORT")
start_nginx bulk-nginx 2
bulk_nginx=("$SERVER_PID" "$SERVER_PORT")

client_command() {
    printf '%q -q 127.0.0.1 %s big.bin 2G -o %q' "$BIN/tcpfile-client" "$1" "$FETCHED/$2.bin"
}
bulk_names=(cat client-iterative client-parallel client-preforked nginx-curl)
bulk_commands=(
    "cat $(printf '%q' "$SERVED/big.bin") > $(printf '%q' "$FETCHED/cat.bin")"
    "$(client_command "${bulk_iterative[1]}" client-iterative)"
    "$(client_command "${bulk_parallel[1]}" client-parallel)"
    "$(client_command "${bulk_preforked[1]}" client-preforked)"
    "curl -sS --fail -o $(printf '%q' "$FETCHED/nginx-curl.bin") http://127.0.0.1:${bulk_nginx[1]}/big.bin"
)
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
        printf '  round %d  %-17s %6.3f s\n' "$round" "$name" "$(echo "$begin $end" | awk '{ print ($2 - $1) / 1e9 }')"
    done
done
echo "bulk: every copy matched the source"
stop_server "${bulk_iterative[0]}" bulk-iterative
stop_server "${bulk_parallel[0]}" bulk-parallel
stop_server "${bulk_preforked[0]}" bulk-preforked
stop_server "${bulk_nginx[0]}" bulk-nginx

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
small_servers=(iterative parallel-64 preforked-2 preforked-8 nginx-2 nginx-8)
declare -A port_of pid_of
start_tcpfile iterative "$BIN/tcpfile-server-iterative" 127.0.0.1 0 "$SERVED" "${SERVER_ARGS[@]}"
port_of[iterative]=$SERVER_PORT; pid_of[iterative]=$SERVER_PID
start_tcpfile parallel-64 "$BIN/tcpfile-server-parallel" 127.0.0.1 0 "$SERVED" 64 "${SERVER_ARGS[@]}"
port_of[parallel-64]=$SERVER_PORT; pid_of[parallel-64]=$SERVER_PID
start_tcpfile preforked-2 "$BIN/tcpfile-server-preforked" 127.0.0.1 0 "$SERVED" 2 "${SERVER_ARGS[@]}"
port_of[preforked-2]=$SERVER_PORT; pid_of[preforked-2]=$SERVER_PID
start_tcpfile preforked-8 "$BIN/tcpfile-server-preforked" 127.0.0.1 0 "$SERVED" 8 "${SERVER_ARGS[@]}"
port_of[preforked-8]=$SERVER_PORT; pid_of[preforked-8]=$SERVER_PID
start_nginx nginx-2 2
port_of[nginx-2]=$SERVER_PORT; pid_of[nginx-2]=$SERVER_PID
start_nginx nginx-8 8
port_of[nginx-8]=$SERVER_PORT; pid_of[nginx-8]=$SERVER_PID

# Footprint of servers that have not served anything yet.
FOOTPRINT="$RESULTS/footprint.tsv"
: >"$FOOTPRINT"
memory_of() {
    local what=$1 pid=$2
    local rss private
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    private=$(awk '/^Private_(Clean|Dirty):/ { sum += $2 } END { print sum + 0 }' "/proc/$pid/smaps_rollup")
    printf '%s\t%s\t%s\n' "$what" "$rss" "$private" >>"$FOOTPRINT"
}
first_child() {
    pgrep -P "$1" | head -n 1
}
sleep 0.5
memory_of "preforked worker, idle, before any request" "$(first_child "${pid_of[preforked-2]}")"
memory_of "preforked parent" "${pid_of[preforked-2]}"
memory_of "parallel parent, before any request" "${pid_of[parallel-64]}"
memory_of "iterative server, before any request" "${pid_of[iterative]}"

SMALL="$RESULTS/small.jsonl"
: >"$SMALL"
noted_bench=false
noted_wrk=false
for run in $(seq 1 "$runs"); do
    for concurrency in "${CONCURRENCY_LEVELS[@]}"; do
        # Every server once per round, so that what else the machine does
        # during the session falls on all of them alike.
        for server in "${small_servers[@]}"; do
            port=${port_of[$server]}
            case "$server" in
                nginx-*)
                    threads=$((concurrency < 2 ? concurrency : 2))
                    marks="$WORK/marks"
                    rm -rf "$marks"
                    mkdir "$marks"
                    command=(wrk -t "$threads" -c "$concurrency" -d "${TIME_BOUND}s" --timeout 10s
                        -H 'Connection: close' -s "$WRK_SCRIPT"
                        "http://127.0.0.1:$port/small.bin" -- "$REQUESTS" "$SMALL_SIZE" "$marks" "$threads")
                    if ! $noted_wrk; then note_command "${command[@]}"; noted_wrk=true; fi
                    drops_before=$(listen_drops)
                    report=$("${command[@]}" | sed -n 's/^JSON //p')
                    drops=$(($(listen_drops) - drops_before))
                    tool=wrk
                    ;;
                *)
                    command=("$BIN/tcpfile-bench" 127.0.0.1 "$port" small.bin -c "$concurrency"
                        -n "$REQUESTS" -d "$TIME_BOUND" --timeout 10 --expect-size "$SMALL_SIZE" --json)
                    if ! $noted_bench; then note_command "${command[@]}"; noted_bench=true; fi
                    status=0
                    report=$("${command[@]}") || status=$?
                    # 3: the run finished and counted failed requests, which
                    # the report shows.
                    if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
                        echo "tcpfile-bench failed against $server (status $status)" >&2
                        exit 1
                    fi
                    drops=null
                    tool=tcpfile-bench
                    ;;
            esac
            if [ -z "$report" ]; then
                echo "$tool printed no report against $server" >&2
                exit 1
            fi
            printf '{"server": "%s", "concurrency": %d, "run": %d, "tool": "%s", "drops": %s, "report": %s}\n' \
                "$server" "$concurrency" "$run" "$tool" "$drops" "$report" >>"$SMALL"
            printf '  run %d  c=%-3d %-12s %s\n' "$run" "$concurrency" "$server" \
                "$(python3 -c 'import json, sys; r = json.loads(sys.argv[1]); c = r["completed"]; print("%d requests, %.0f/s" % (c, c / r["elapsed_s"]))' "$report")"
        done
    done
done

memory_of "preforked worker, idle, after the runs" "$(first_child "${pid_of[preforked-8]}")"
memory_of "parallel parent, after the runs" "${pid_of[parallel-64]}"
memory_of "nginx worker, idle, after the runs" "$(first_child "${pid_of[nginx-2]}")"
for server in "${small_servers[@]}"; do
    stop_server "${pid_of[$server]}" "$server"
done

# --- Sizes ------------------------------------------------------------------

SIZES="$RESULTS/sizes.tsv"
: >"$SIZES"
for binary in tcpfile-client tcpfile-server-iterative tcpfile-server-parallel tcpfile-server-preforked tcpfile-bench; do
    printf 'binary\t%s (release, %s)\t%s\n' "$binary" "$(rustc -vV | sed -n 's/^host: //p')" \
        "$(stat -c %s "$BIN/$binary")" >>"$SIZES"
    if [ -f "dist/amd64/$binary" ]; then
        printf 'binary\t%s (static, dist/amd64)\t%s\n' "$binary" "$(stat -c %s "dist/amd64/$binary")" >>"$SIZES"
    fi
done
for image in tcpfile/server-iterative tcpfile/server-parallel tcpfile/server-preforked tcpfile/client tcpfile/tcpdump; do
    size=""
    if command -v docker >/dev/null 2>&1; then
        size=$(docker image inspect --format '{{.Size}}' "$image" 2>/dev/null || true)
    fi
    printf 'image\t%s\t%s\n' "$image" "${size:-not built}" >>"$SIZES"
done

# --- Report -----------------------------------------------------------------

if [ -z "$out" ]; then
    if $smoke; then
        out=$(mktemp -d /tmp/tcpfile-bench-smoke.XXXXXX)
    else
        out=$REPO
    fi
fi
mkdir -p "$out/docs"

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD 2>/dev/null; then
    commit="$commit (with local changes)"
fi
# What the report says about the machine and the tools.
export META_DATE META_CPU META_CORES META_MEMORY META_KERNEL META_OS META_FILESYSTEM META_WORKDIR \
    META_RUSTC META_COMMIT META_NGINX META_CURL META_WRK META_LOAD META_SECONDS \
    META_SMOKE META_RUNS META_REQUESTS META_BIG_SIZE META_SMALL_SIZE
META_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
META_CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
META_CORES=$(nproc)
META_MEMORY=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1024 / 1024 }' /proc/meminfo)
META_KERNEL=$(uname -sr)
META_OS=$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release)
META_FILESYSTEM=$(df -T "$WORK" | awk 'NR == 2 { print $2 }')
META_WORKDIR=$BENCH_TMPDIR
META_RUSTC=$(rustc --version)
META_COMMIT=$commit
META_NGINX=$("$NGINX" -v 2>&1 | sed 's/^nginx version: nginx\///')
META_CURL=$(curl --version | head -n 1 | cut -d ' ' -f 1-2)
# wrk -v prints its version and usage and exits 1.
META_WRK=$({ wrk -v 2>&1 || true; } | head -n 1 | cut -d ' ' -f 1-2)
META_LOAD=$load_before
META_SECONDS=$(($(date +%s) - started_at))
META_SMOKE=$smoke
META_RUNS=$runs
META_REQUESTS=$REQUESTS
META_BIG_SIZE=$BIG_SIZE
META_SMALL_SIZE=$SMALL_SIZE

python3 - "$RESULTS" "$out/BENCHMARKS.md" "$out/docs/bench-chart.svg" <<'PY'
import json
import os
import statistics
import sys

results, markdown_path, chart_path = sys.argv[1:4]
meta = {key[len("META_"):].lower(): value for key, value in os.environ.items()
        if key.startswith("META_")}
for key in ("cores", "seconds", "runs", "requests", "big_size", "small_size"):
    meta[key] = int(meta[key])
meta["smoke"] = meta["smoke"] == "true"
bulk_times = {}
for line in open(os.path.join(results, "bulk.tsv")):
    name, _, nanos = line.split("\t")
    bulk_times.setdefault(name, []).append(int(nanos) / 1e9)
small = [json.loads(line) for line in open(os.path.join(results, "small.jsonl"))]
commands = open(os.path.join(results, "commands.txt")).read().splitlines()
footprint = [line.split("\t") for line in open(os.path.join(results, "footprint.tsv")).read().splitlines()]
sizes = [line.split("\t") for line in open(os.path.join(results, "sizes.tsv")).read().splitlines()]

SERVERS = ["iterative", "parallel-64", "preforked-2", "preforked-8", "nginx-2", "nginx-8"]
LABELS = {
    "iterative": "iterative",
    "parallel-64": "parallel, 64 children",
    "preforked-2": "preforked, 2 workers",
    "preforked-8": "preforked, 8 workers",
    "nginx-2": "nginx, 2 workers",
    "nginx-8": "nginx, 8 workers",
}
LEVELS = sorted({entry["concurrency"] for entry in small})
problems = []

# --- Small requests: one row per run, then medians. ------------------------
def failures(entry):
    report = entry["report"]
    if entry["tool"] == "wrk":
        return sum(report["errors"].values()) + report["bad_responses"]
    return report["failed"]

rows = {}
for entry in small:
    report = entry["report"]
    completed = report["completed"]
    key = (entry["server"], entry["concurrency"])
    row = rows.setdefault(key, {"rps": [], "p99": [], "max": [], "failed": 0, "drops": 0,
                                "cpu": [], "abandoned": 0})
    row["rps"].append(completed / report["elapsed_s"])
    row["p99"].append(report["latency_us"]["p99"] / 1000)
    row["max"].append(report["latency_us"]["max"] / 1000)
    row["failed"] += failures(entry)
    if entry["tool"] == "tcpfile-bench":
        row["drops"] += report["listen_drops"] or 0
        row["cpu"].append(report["client_cpu_us_per_request"])
        row["abandoned"] += report["abandoned"]
        if report["failed"] or completed != meta["requests"] or report["bytes"] != completed * meta["small_size"]:
            problems.append(f"{entry['server']} c={entry['concurrency']} run {entry['run']}: "
                            f"{completed} served, {report['failed']} failed {report['errors']}, "
                            f"{report['bytes']} bytes")
    else:
        row["drops"] += entry["drops"]
        if failures(entry) or completed < meta["requests"]:
            problems.append(f"{entry['server']} c={entry['concurrency']} run {entry['run']}: "
                            f"wrk: {completed} responses, errors {report['errors']}, "
                            f"{report['bad_responses']} not 200 with {meta['small_size']} bytes")

median = statistics.median

def fmt_rate(value):
    return f"{value:,.0f}"

def fmt_ms(value):
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"

# --- Bulk -------------------------------------------------------------------
bulk_median = {name: statistics.median(times) for name, times in bulk_times.items()}
cat_median = bulk_median["cat"]
BULK_LABELS = {
    "cat": "`cat SRC > DST` (the copy limit)",
    "client-iterative": "tcpfile-client from the iterative server",
    "client-parallel": "tcpfile-client from the parallel server",
    "client-preforked": "tcpfile-client from the preforked server",
    "nginx-curl": "curl from nginx (sendfile on)",
}

# --- Targets ----------------------------------------------------------------
def verdict(ok):
    return "met" if ok else "**missed**"

preforked_bulk = bulk_median["client-preforked"]
nginx_bulk = bulk_median["nginx-curl"]
targets = [
    ("Bulk: tcpfile-client from the preforked server takes at most 1.3 × `cat`",
     f"{preforked_bulk / cat_median:.2f} × `cat`", preforked_bulk <= 1.3 * cat_median, ""),
    ("Bulk: and less time than nginx + curl",
     f"{preforked_bulk:.3f} s vs {nginx_bulk:.3f} s", preforked_bulk < nginx_bulk, ""),
]
if 64 in LEVELS:
    ours = median(rows[("preforked-8", 64)]["rps"])
    theirs = median(rows[("nginx-2", 64)]["rps"])
    targets.append(("Small requests, concurrency 64: preforked (8 workers) serves at least as many requests/s as nginx (2 workers)",
                    f"{fmt_rate(ours)} vs {fmt_rate(theirs)} requests/s ({ours / theirs:.2f} ×)", ours >= theirs, ""))
if 256 in LEVELS:
    row = rows[("preforked-8", 256)]
    typical, worst = median(row["max"]), max(row["max"])
    targets.append(("Small requests, concurrency 256: preforked (8 workers) max latency under 100 ms, no SYN drops",
                    f"max {fmt_ms(typical)} ms (median of {len(row['max'])} runs; worst run {fmt_ms(worst)} ms), "
                    f"{row['drops']} listen drops",
                    typical < 100 and row["drops"] == 0,
                    "" if worst < 100 else "not in every run"))
idle_workers = [int(rss) for what, rss, _ in footprint if what.startswith("preforked worker")]
targets.append(("An idle preforked worker's resident memory under 2 MiB",
                f"{max(idle_workers) / 1024:.2f} MiB (VmRSS)", max(idle_workers) < 2048, ""))

# --- Chart ------------------------------------------------------------------
import math
COLOURS = {"iterative": "#7f7f7f", "parallel-64": "#d62728", "preforked-2": "#1f77b4",
           "preforked-8": "#17becf", "nginx-2": "#2ca02c", "nginx-8": "#98df8a"}
DASHED = {"nginx-2", "nginx-8"}
width, height = 760, 420
left, right, top, bottom = 70, 200, 50, 60
plot_w, plot_h = width - left - right, height - top - bottom
peak = max(median(row["rps"]) for row in rows.values())
# The finest of 1, 2, 2.5 and 5 times a power of ten that needs at most six
# gridlines.
step = 10 ** (math.floor(math.log10(peak)) - 1)
for factor in (1, 2, 2.5, 5, 10):
    if peak / (step * factor) <= 6:
        step *= factor
        break
y_max = step * math.ceil(peak * 1.05 / step)
x_min, x_max = math.log2(LEVELS[0]), math.log2(LEVELS[-1])

def x_of(level):
    span = (x_max - x_min) or 1
    return left + (math.log2(level) - x_min) / span * plot_w

def y_of(value):
    return top + plot_h - value / y_max * plot_h

svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
       f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
       f'<rect width="{width}" height="{height}" fill="white"/>',
       f'<text x="{left}" y="22" font-size="15" font-weight="bold">Requests per second, '
       f'{meta["small_size"] // 1024} KiB file, one connection per request</text>',
       f'<text x="{left}" y="39" fill="#555">median of {meta["runs"]} run(s) of '
       f'{meta["requests"]:,} requests; {meta["cores"]} cores, {meta["date"]}</text>']
value = 0
while value <= y_max + 1e-9:
    y = y_of(value)
    svg.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e5e5"/>')
    svg.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{value:,.0f}</text>')
    value += step
for level in LEVELS:
    x = x_of(level)
    svg.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#f0f0f0"/>')
    svg.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{level}</text>')
svg.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#333"/>')
svg.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>')
svg.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 18}" text-anchor="middle">'
           'concurrent requests (log scale)</text>')
svg.append(f'<text transform="translate(18 {top + plot_h / 2:.1f}) rotate(-90)" '
           'text-anchor="middle">requests per second</text>')
for index, server in enumerate(SERVERS):
    points = [(x_of(level), y_of(median(rows[(server, level)]["rps"]))) for level in LEVELS
              if (server, level) in rows]
    colour = COLOURS[server]
    dash = ' stroke-dasharray="6 4"' if server in DASHED else ""
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    svg.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
    for x, y in points:
        svg.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>')
    legend_y = top + 10 + index * 22
    legend_x = left + plot_w + 20
    svg.append(f'<line x1="{legend_x}" y1="{legend_y}" x2="{legend_x + 24}" y2="{legend_y}" '
               f'stroke="{colour}" stroke-width="2"{dash}/>')
    svg.append(f'<text x="{legend_x + 30}" y="{legend_y + 4}">{LABELS[server]}</text>')
svg.append("</svg>")
with open(chart_path, "w") as chart:
    chart.write("\n".join(svg) + "\n")

# --- BENCHMARKS.md ----------------------------------------------------------
NOTES_START, NOTES_END = "<!-- notes: kept when the file is rewritten -->", "<!-- end of notes -->"
notes = ""
if os.path.exists(markdown_path):
    text = open(markdown_path).read()
    if NOTES_START in text and NOTES_END in text:
        notes = text[text.index(NOTES_START) + len(NOTES_START):text.index(NOTES_END)].strip("\n")

def mib(size):
    return f"{size / 1024 / 1024:,.0f} MiB" if size >= 1024 * 1024 else f"{size // 1024} KiB"

md = []
title = "Benchmarks (smoke run: small sizes, not figures to quote)" if meta["smoke"] else "Benchmarks"
md += [f"# {title}", "",
       "Written by `ci/bench.sh`, which builds the release binaries, makes the fixtures, runs every "
       "case below in one session on one machine over loopback, and rewrites this file and "
       "[the chart](docs/bench-chart.svg). Run it to get the figures for your own machine. "
       "Figures from different machines, or from different sessions on one machine, do not "
       "compare; the ratios within one run do.", "",
       "## Machine and session", "",
       f"- Date: {meta['date']}; the run took {meta['seconds'] / 60:.1f} minutes, build included",
       f"- CPU: {meta['cpu']}, {meta['cores']} cores; memory {meta['memory']}",
       f"- Kernel: {meta['kernel']}; {meta['os']}; fixtures and copies on {meta['filesystem']} "
       f"({meta['workdir']})",
       f"- Load average when the run started: {meta['load']}",
       f"- tcpfile {meta['commit']}, built with {meta['rustc']} (release profile)",
       f"- Others: nginx {meta['nginx']} (Debian's nginx-light), {meta['curl']}, {meta['wrk']}",
       f"- Every figure is the median of {meta['runs']} run(s).", ""]

md += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
md += [f"| {name} | {measured} | {verdict(ok)}{(', ' + caveat) if ok and caveat else ''} |"
       for name, measured, ok, caveat in targets]
md += [""]

md += [f"## Bulk: one {mib(meta['big_size'])} file", "",
       "The file is in the page cache. Each round runs every command once, in turn"
       f"{' (a first round warms up and is not counted)' if not meta['smoke'] else ''}; a time is "
       "wall-clock from start to exit. Every copy is then compared byte for byte with the source "
       "and removed, outside the time. `cat` (coreutils 9) copies with "
       "`copy_file_range`, one copy inside the kernel: the floor for any way of making a copy.", "",
       "| how | median | fastest – slowest | time ÷ `cat` |", "|---|---:|---:|---:|"]
for name in ["cat", "client-iterative", "client-parallel", "client-preforked", "nginx-curl"]:
    times = bulk_times[name]
    md.append(f"| {BULK_LABELS[name]} | {bulk_median[name]:.3f} s | {min(times):.3f} – {max(times):.3f} s "
              f"| {bulk_median[name] / cat_median:.2f} |")
md += [""]

md += [f"## Many small requests: {meta['requests']:,} requests of a {mib(meta['small_size'])} file", "",
       "A new TCP connection for every request, as the protocol has it. tcpfile-bench drives the "
       "tcpfile servers; wrk drives nginx with `Connection: close`. tcpfile-bench times a request "
       "from `connect` to the server's close; wrk from the first byte it writes, after the "
       "handshake. Both check every response (status and size).", "",
       "![requests per second against concurrency](docs/bench-chart.svg)", ""]
header = "| server | " + " | ".join(f"c = {level}" for level in LEVELS) + " |"
rule = "|---|" + "---:|" * len(LEVELS)

def table(title, cell):
    lines = [f"**{title}**", "", header, rule]
    for server in SERVERS:
        cells = [cell(rows[(server, level)]) if (server, level) in rows else "" for level in LEVELS]
        lines.append(f"| {LABELS[server]} | " + " | ".join(cells) + " |")
    return lines + [""]

md += table("Requests per second", lambda row: fmt_rate(median(row["rps"])))
md += table("p99 latency, ms", lambda row: fmt_ms(median(row["p99"])))
md += table("Max latency, ms (median of the runs / worst run)",
            lambda row: f"{fmt_ms(median(row['max']))} / {fmt_ms(max(row['max']))}")
md += table("Failed requests and listen-queue drops, all runs together",
            lambda row: f"{row['failed']} / {row['drops']}")
cpu = [value for row in rows.values() for value in row["cpu"]]
if cpu:
    md += [f"tcpfile-bench ran one event loop and used {median(cpu):.0f} µs of CPU per request "
           f"(median over all cases; {min(cpu):.0f} – {max(cpu):.0f}), system time of the "
           "loopback handshake included.", ""]

md += ["## Footprint", "",
       "Resident memory (VmRSS) counts the pages a process shares with its parent and with "
       "the C library; private memory (Private_Clean + Private_Dirty in smaps_rollup) is what "
       "the process alone holds.", "",
       "| process | resident | private |", "|---|---:|---:|"]
for what, rss, private in footprint:
    md.append(f"| {what} | {int(rss) / 1024:.2f} MiB | {int(private) / 1024:.2f} MiB |")
md += ["", "| file | size |", "|---|---:|"]
for kind, what, size in sizes:
    shown = f"{int(size) / 1024 / 1024:.2f} MiB" if size.isdigit() else size
    md.append(f"| {kind} {what} | {shown} |")
md += [""]

md += ["## Commands", "",
       "As run (ports picked at start; `$WORK` is the run's temporary folder):", "", "```"]
md += commands
md += ["```", "",
       "nginx ran from its own configuration in `$WORK` (`worker_processes N; sendfile on; "
       "access_log off; listen 127.0.0.1:PORT backlog=4096; daemon off`); wrk's script makes "
       "each thread stop after its share of the requests and checks each response's status "
       "and body size.", ""]

md += ["## Notes", "", NOTES_START]
if notes:
    md += [notes]
md += [NOTES_END, ""]
with open(markdown_path, "w") as output:
    output.write("\n".join(md))

if problems:
    print("requests that failed their checks:", file=sys.stderr)
    for problem in problems:
        print("  " + problem, file=sys.stderr)
    open(os.path.join(results, "problems.txt"), "w").write("\n".join(problems) + "\n")
PY

if [ "$out" != "$REPO" ]; then
    cp -r "$RESULTS" "$out/results"
fi
echo "report: $out/BENCHMARKS.md, chart: $out/docs/bench-chart.svg"
echo "the run took $(($(date +%s) - started_at)) s"
if $smoke && [ -s "$RESULTS/problems.txt" ]; then
    echo "smoke run failed: some requests failed their checks or bytes do not add up" >&2
    exit 1
fi
