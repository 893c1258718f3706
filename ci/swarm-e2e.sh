#!/usr/bin/env bash
# Runs docker/stack.yaml on a single-node Docker Swarm and checks what a user
# of the service would notice:
#   - a client started before any replica is healthy retries the service's
#     name until it resolves (--wait), then fetches;
#   - 3 replicas serve a crowd of 24 client containers on the overlay network,
#     byte-exact, and the replicas' logs show every replica serving some;
#   - a replica's container killed with SIGKILL mid-transfer is replaced by
#     Swarm; the clients it was serving end with exit 5 and keep no file, the
#     others finish byte-exact, and clients started afterwards succeed;
#   - a rolling update (start-first) while clients fetch in a loop: not one
#     fetch fails;
#   - `docker stack rm` leaves no service, container or network behind.
#
#   ci/swarm-e2e.sh
#
# As root (tc in the replicas' network namespaces slows their sending, so
# that the kill lands mid-transfer). Installs iproute2 and util-linux when
# tc or nsenter is missing. Needs Docker (ci/docker-engine.sh) and the static
# binaries for the engine's architecture (built with ci/build-static.sh when
# dist/ lacks them); builds the images with docker/build-images.sh.
#
# The swarm: when this engine is in none, the script makes a single-node one
# (`docker swarm init --advertise-addr 127.0.0.1`) and leaves it at the end.
# A swarm that was there before is not touched: the run is skipped (and
# counted as a skip), unless TCPFILE_SWARM=existing asks to deploy into it,
# which must then be a single-node swarm managed here, since the images and
# files are on this node only; it stays. The stack, its network, the clients,
# the folders and the images' tag carry tcpfile-swarm-PID, so the run shares
# the engine with other work (another lab rebuilding the images included).
#
# The endpoint mode: Swarm's default virtual IP needs the kernel's IPVS,
# which this script looks for in /proc/net/ip_vs (after `modprobe ip_vs`);
# without it, clients get "Host is unreachable" from the virtual IP, so the
# stack runs with dnsrr. TCPFILE_ENDPOINT_MODE=vip or dnsrr chooses. The run
# prints which mode ran. TCPFILE_REGISTRY and TCPFILE_TAG choose the images
# as in compose.yaml; by default they are built here.
set -Eeuo pipefail

cd "$(dirname "$0")/.."

RUN=tcpfile-swarm-$$
STACK=$RUN
SERVICE=${STACK}_server
NETWORK=${STACK}_files
REPLICAS=3
CROWD=24
KILL_CLIENTS=6
AFTER_CLIENTS=6
LOOP_WORKERS=2
# Each replica's sending while the kill is prepared: big.bin (12 MiB) takes
# 6 s or more, so the kill lands mid-transfer.
SLOW_RATE=16mbit
# The clients' --timeout in the kill: a replica killed takes its network
# with it, so no FIN or reset tells the client; it gives up after this.
KILL_TIMEOUT=5
# Bounds, in seconds: what takes a few seconds here may take much longer on
# a loaded machine.
CONVERGE_LIMIT=90
CLIENTS_LIMIT=120
UPDATE_LIMIT=180
RM_LIMIT=90
COMMAND_LIMIT=120
# A container's log, read whole: a few seconds at most. (`docker service
# logs` is not used: it may hang for good, docker/cli#4678; on one node the
# replicas' own logs say the same.)
LOGS_LIMIT=20

step() { printf '\n== %s (at %d s)\n' "$*" "$((SECONDS - started))"; }
say() { echo "  $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# skip REASON: nothing is checked; says so, and counts it where ci/test.sh
# collects the skips.
skip() {
    echo "SKIP: ci/swarm-e2e.sh: $*; nothing was checked" >&2
    if [ -n "${TCPFILE_SKIP_LOG:-}" ]; then
        echo "SKIPPED swarm-e2e: $*" >> "$TCPFILE_SKIP_LOG"
    fi
    echo "swarm-e2e: 0 passed, 0 failed, 1 skipped"
    exit 0
}

started=$SECONDS
# A command that fails where nothing checks it ends the run: say which.
trap 'echo "FAIL: line $LINENO: $BASH_COMMAND (exit $?)" >&2' ERR

if [ "$(id -u)" -ne 0 ]; then
    skip "it needs root (tc in the replicas' network namespaces)"
fi

work=$(mktemp -d "/tmp/$RUN.XXXXXX")
chmod 0755 "$work"
files=$work/files
downloads=$work/downloads
loop=$work/loop
registry=${TCPFILE_REGISTRY:-localhost}
tag=${TCPFILE_TAG:-latest}
built_here=false
[ "$registry" != localhost ] || built_here=true
run_tagged=()
created_swarm=false
made_gwbridge=false
deployed=false
client_containers=()

# logs OPTION... CONTAINER: its output and errors, in one stream; a log that
# cannot be read in time is said so on stderr and read as far as it came.
logs() {
    local status=0
    timeout "$LOGS_LIMIT" docker logs "$@" 2>&1 || status=$?
    [ "$status" -eq 0 ] || echo "  (docker logs $*: exit $status)" >&2
}

# The service's containers, running or not: on one node, all its tasks'.
service_containers() {
    docker ps -a -q --filter "label=com.docker.swarm.service.name=$SERVICE"
}

task_of() { docker inspect -f '{{index .Config.Labels "com.docker.swarm.task.name"}}' "$1"; }

# wait_until SECONDS COMMAND...: until COMMAND succeeds, for at most SECONDS.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

now_ms() { date +%s%3N; }
# A time the engine reports (RFC 3339), in milliseconds since the epoch.
engine_ms() { date -u -d "$1" +%s%3N; }
seconds() { printf '%d.%01d' $(($1 / 1000)) $(($1 % 1000 / 100)); }

stack_leftovers() {
    local filter="label=com.docker.stack.namespace=$STACK"
    docker service ls -q --filter "$filter"
    docker ps -a -q --filter "$filter"
    docker network ls -q --filter "$filter"
}

no_stack_leftovers() { [ -z "$(stack_leftovers)" ]; }

on_exit() {
    local status=$? container
    trap - ERR
    set +e
    if [ "$status" -ne 0 ] && $deployed; then
        echo "--- state at the failure" >&2
        docker service ps --no-trunc "$SERVICE" >&2
        for container in $(service_containers); do
            echo "--- $(task_of "$container"), the end of its log" >&2
            logs --tail 40 "$container" | grep -v ' 127\.0\.0\.1:' | tail -n 8 >&2
        done
    fi
    if [ "${#client_containers[@]}" -gt 0 ]; then
        docker rm -f "${client_containers[@]}" >/dev/null 2>&1
    fi
    if $deployed; then
        docker stack rm "$STACK" >/dev/null 2>&1
        wait_until "$RM_LIMIT" no_stack_leftovers || echo "cleanup: the stack $STACK is not gone: $(stack_leftovers | tr '\n' ' ')" >&2
    fi
    if $created_swarm; then
        docker swarm leave --force >/dev/null && echo "left the swarm this run made"
        if $made_gwbridge; then
            docker network rm docker_gwbridge >/dev/null 2>&1
        fi
    fi
    if [ "${#run_tagged[@]}" -gt 0 ]; then
        docker image rm "${run_tagged[@]}" >/dev/null 2>&1
    fi
    rm -rf "$work"
    exit "$status"
}
trap on_exit EXIT

step "tools"
ci/docker-engine.sh
missing=()
command -v tc >/dev/null 2>&1 || missing+=(iproute2)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
docker/lint.sh

step "the swarm"
swarm_state=$(docker info --format '{{.Swarm.LocalNodeState}}')
case "$swarm_state" in
    inactive)
        docker network inspect docker_gwbridge >/dev/null 2>&1 || made_gwbridge=true
        output=$(docker swarm init --advertise-addr 127.0.0.1 2>&1) || fail "docker swarm init: $output"
        created_swarm=true
        say "made a single-node swarm (advertised on 127.0.0.1); it goes at the end"
        ;;
    active)
        [ "${TCPFILE_SWARM:-}" = existing ] ||
            skip "this engine is in a swarm that was here before, which this run leaves alone (TCPFILE_SWARM=existing deploys into it)"
        [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] ||
            fail "this engine is a worker in a swarm; run this on a manager, or on an engine in no swarm"
        nodes=$(docker node ls -q | wc -l)
        [ "$nodes" -eq 1 ] ||
            fail "the swarm here has $nodes nodes; this run needs a single-node one (its images and files are on this node only)"
        say "using the single-node swarm that was here; it stays"
        ;;
    *) fail "the swarm on this engine is $swarm_state; leave it alone or fix it first" ;;
esac

# Virtual IPs are IPVS's: the module may be built in, loaded, or loadable.
if [ -n "${TCPFILE_ENDPOINT_MODE:-}" ]; then
    endpoint_mode=$TCPFILE_ENDPOINT_MODE
    why="TCPFILE_ENDPOINT_MODE"
else
    [ -e /proc/net/ip_vs ] || modprobe -q ip_vs 2>/dev/null || true
    if [ -e /proc/net/ip_vs ]; then
        endpoint_mode=vip
        why="the kernel has IPVS"
    else
        endpoint_mode=dnsrr
        why="the kernel has no IPVS (/proc/net/ip_vs is missing), so a virtual IP would not answer"
    fi
fi
case "$endpoint_mode" in
    vip | dnsrr) ;;
    *) fail "TCPFILE_ENDPOINT_MODE must be vip or dnsrr, not $endpoint_mode" ;;
esac
say "endpoint mode: $endpoint_mode ($why)"

step "binaries and images"
arch=$(docker version -f '{{.Server.Arch}}')
declare -A TARGET_OF=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl)
[ -f "dist/$arch/SHA256SUMS" ] || ci/build-static.sh "${TARGET_OF[$arch]}"
ci/debian-base-image.sh
docker/build-images.sh --scratch-only
# Images built here get this run's own tag, so that another lab rebuilding
# them (their latest tag) changes nothing under the stack; the tag goes at
# the end.
if $built_here; then
    for name in server-evented client; do
        docker tag "localhost/tcpfile/$name:$tag" "localhost/tcpfile/$name:$RUN"
        run_tagged+=("localhost/tcpfile/$name:$RUN")
    done
    tag=$RUN
else
    for name in server-evented client; do
        docker pull -q "$registry/tcpfile/$name:$tag" >/dev/null || fail "cannot pull $registry/tcpfile/$name:$tag"
    done
fi
server_image=$registry/tcpfile/server-evented:$tag
client_image=$registry/tcpfile/client:$tag
say "server: $server_image; clients: $client_image"

docker/make-samples.sh "$files" >/dev/null
chmod -R a+rX "$files"
mkdir -m 0777 "$downloads" "$loop"
declare -A SUM_OF
while read -r sum name; do
    SUM_OF[$name]=$sum
done < "$files/SHA256SUMS"

deploy() {
    local resolve=always output
    ! $built_here || resolve=never
    output=$(TCPFILE_REGISTRY=$registry TCPFILE_TAG=$tag TCPFILE_FILES=$files TCPFILE_REPLICAS=$1 TCPFILE_ENDPOINT_MODE=$endpoint_mode \
        TCPFILE_HEALTH_INTERVAL=1s \
        timeout "$COMMAND_LIMIT" docker stack deploy --resolve-image "$resolve" \
        -c docker/stack.yaml "$STACK" 2>&1) || fail "docker stack deploy: $output"
}

# The service's containers that run and are healthy.
healthy_replicas() {
    docker ps -q --filter "label=com.docker.swarm.service.name=$SERVICE" --filter health=healthy
}

running_tasks() {
    docker service ps -q --no-trunc --filter desired-state=running "$SERVICE"
}

converged() {
    [ "$(running_tasks | wc -l)" -eq "$REPLICAS" ] && [ "$(healthy_replicas | wc -l)" -eq "$REPLICAS" ]
}

# client NAME ARGUMENT...: a client container on the stack's network,
# writing into downloads/; its name is NAME of this run.
client() {
    local name=$RUN-$1
    shift
    client_containers+=("$name")
    docker run -d --name "$name" --network "$NETWORK" -v "$downloads:/downloads" \
        "$client_image" "$@" >/dev/null
}

# start_fetches PREFIX COUNT CLIENT_ARGUMENT... FILE...: COUNT clients at
# once, PREFIX-1 to PREFIX-COUNT, asking in turn for each FILE given after
# "--", into downloads/PREFIX-N-FILE.
start_fetches() {
    local prefix=$1 count=$2
    shift 2
    local options=() names=()
    while [ "$1" != -- ]; do
        options+=("$1")
        shift
    done
    shift
    names=("$@")
    local i pids=() name
    for ((i = 1; i <= count; i++)); do
        name=${names[$(((i - 1) % ${#names[@]}))]}
        client "$prefix-$i" "${options[@]}" -o "/downloads/$prefix-$i-$name" server 7070 "$name" 100M &
        pids+=($!)
        client_containers+=("$RUN-$prefix-$i")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || fail "a client container of $prefix did not start"
    done
}

exited() {
    [ "$(docker inspect -f '{{.State.Status}}' "$RUN-$1")" = exited ]
}

all_exited() {
    local prefix=$1 count=$2 i
    for ((i = 1; i <= count; i++)); do
        exited "$prefix-$i" || return 1
    done
}

exit_code() { docker inspect -f '{{.State.ExitCode}}' "$RUN-$1"; }

# check_fetched PREFIX-N: the client exited 0 and its file is byte-exact.
check_fetched() {
    local name=$1 code path file
    code=$(exit_code "$name")
    [ "$code" = 0 ] || fail "$name exited with $code: $(logs "$RUN-$name" | tail -n 2)"
    path=$(compgen -G "$downloads/$name-*") || fail "$name saved nothing"
    file=${path#"$downloads/$name-"}
    [ "$(sha256sum < "$path" | cut -d' ' -f1)" = "${SUM_OF[$file]}" ] || fail "$name: $file is not byte-exact"
}

# Per task of the service, the transfers it completed since $1 for clients
# other than its own health check: "TASK COUNT" lines, for tasks that served.
served_per_task() {
    local container
    for container in $(service_containers); do
        logs --since "$1" "$container" |
            awk -v task="$(task_of "$container")" '/: transfer complete: / && !/ 127\.0\.0\.1:/ { n++ }
                 END { if (n) print task, n }'
    done | sort
}

served_total() {
    served_per_task "$1" | awk '{ total += $2 } END { print total + 0 }'
}

served_at_least() { [ "$(served_total "$1")" -ge "$2" ]; }

# The connections of a replica container since $2 that are past the reply
# and not closed yet, by address: its transfers in flight.
in_flight() {
    logs --since "$2" "$1" |
        awk '/: client is ready to receive$/ && !/ 127\.0\.0\.1:/ { sub(/:$/, "", $5); open[$5] = 1 }
             /closed connection from / { delete open[$NF] }
             END { n = 0; for (a in open) n++; print n }'
}

ready_total() {
    local since=$1 container total=0 count
    for container in $(docker ps -q --filter "label=com.docker.swarm.service.name=$SERVICE"); do
        count=$(logs --since "$since" "$container" | grep ': client is ready to receive$' | grep -cv ' 127\.0\.0\.1:' || true)
        total=$((total + count))
    done
    echo "$total"
}

all_ready() { [ "$(ready_total "$1")" -ge "$2" ]; }

# The network interface of a replica on the stack's network.
overlay_device() {
    local container=$1 pid address
    pid=$(docker inspect -f '{{.State.Pid}}' "$container")
    address=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "$container")
    nsenter -t "$pid" -n ip -o -4 addr show | awk -v address="$address" '{ split($4, a, "/") } a[1] == address { print $2 }'
}

# slow_sending CONTAINER RATE|off
slow_sending() {
    local container=$1 pid device
    pid=$(docker inspect -f '{{.State.Pid}}' "$container")
    device=$(overlay_device "$container")
    [ -n "$device" ] || fail "no interface of $container is on $NETWORK"
    if [ "$2" = off ]; then
        nsenter -t "$pid" -n tc qdisc del dev "$device" root 2>/dev/null || true
    else
        nsenter -t "$pid" -n tc qdisc replace dev "$device" root tbf rate "$2" burst 32kb latency 100ms
    fi
}

rfc3339_now() { date -u +%Y-%m-%dT%H:%M:%S.%NZ; }

step "deploy with no replica, then a client, then $REPLICAS replicas"
deploy 0
deployed=true
say "stack $STACK: service $SERVICE on the overlay network $NETWORK"
client early --wait 60 -o /downloads/early-hello.txt server 7070 hello.txt 1M
name_missing() { logs "$RUN-early" | grep -q 'does not answer yet (cannot resolve server'; }
wait_until 30 name_missing || fail "the early client did not report an unresolvable name: $(logs "$RUN-early")"
say "early client: $(logs "$RUN-early" | grep 'does not answer yet')"
deploy_started=$(now_ms)
deploy "$REPLICAS"
wait_until "$CONVERGE_LIMIT" converged || fail "the service has not $REPLICAS healthy replicas after ${CONVERGE_LIMIT}s"
say "$REPLICAS replicas healthy $(seconds $(($(now_ms) - deploy_started))) s after the deploy"
wait_until 60 exited early || fail "the early client still runs"
check_fetched early
say "the early client retried until the name resolved, then fetched hello.txt byte-exact"

step "a crowd of $CROWD clients"
since=$(rfc3339_now)
crowd_started=$(now_ms)
start_fetches crowd "$CROWD" --wait 30 --timeout 10 -- random.bin big.bin hello.txt empty.txt
wait_until "$CLIENTS_LIMIT" all_exited crowd "$CROWD" || fail "crowd clients still run after ${CLIENTS_LIMIT}s"
say "$CROWD client containers started and finished in $(seconds $(($(now_ms) - crowd_started))) s"
for ((i = 1; i <= CROWD; i++)); do
    check_fetched "crowd-$i"
done
say "every client exited 0 and every file is byte-exact"
wait_until 20 served_at_least "$since" "$CROWD" ||
    fail "the replicas' logs show $(served_total "$since") of $CROWD transfers: $(served_per_task "$since")"
per_task=$(served_per_task "$since")
awk '{ print "  " $1 " served " $2 }' <<< "$per_task"
[ "$(wc -l <<< "$per_task")" -eq "$REPLICAS" ] || fail "not every replica served: $per_task"
[ "$(served_total "$since")" -eq "$CROWD" ] || fail "the replicas served $(served_total "$since") transfers, not $CROWD"
say "each of the $REPLICAS replicas served some of the $CROWD"

step "SIGKILL to a replica mid-transfer"
replicas=$(healthy_replicas)
for container in $replicas; do
    slow_sending "$container" "$SLOW_RATE"
done
since=$(rfc3339_now)
start_fetches kill "$KILL_CLIENTS" --wait 30 --timeout "$KILL_TIMEOUT" -- big.bin
wait_until 30 all_ready "$since" "$KILL_CLIENTS" ||
    fail "$(ready_total "$since") of $KILL_CLIENTS transfers started"
victim="" cut=0
for container in $replicas; do
    count=$(in_flight "$container" "$since")
    if [ "$count" -gt "$cut" ]; then
        victim=$container cut=$count
    fi
done
[ -n "$victim" ] || fail "no replica has a transfer in flight"
victim_task=$(docker inspect -f '{{index .Config.Labels "com.docker.swarm.task.id"}}' "$victim")
cut=$(in_flight "$victim" "$since")
killed=$(now_ms)
docker kill -s KILL "$victim" >/dev/null
say "killed $(docker inspect -f '{{.Name}}' "$victim" | cut -c2-) with SIGKILL; $cut of the $KILL_CLIENTS transfers of big.bin (12 MiB) ran on it"
for container in $replicas; do
    [ "$container" = "$victim" ] || slow_sending "$container" off
done
wait_until "$CLIENTS_LIMIT" all_exited kill "$KILL_CLIENTS" || fail "clients of the kill still run"
broken=0
for ((i = 1; i <= KILL_CLIENTS; i++)); do
    code=$(exit_code "kill-$i")
    case "$code" in
        0) check_fetched "kill-$i" ;;
        5)
            broken=$((broken + 1))
            gave_up=$(($(engine_ms "$(docker inspect -f '{{.State.FinishedAt}}' "$RUN-kill-$i")") - killed))
            say "kill-$i: exit 5 after $(seconds "$gave_up") s: $(logs "$RUN-kill-$i" | grep '^error:')"
            ! compgen -G "$downloads/kill-$i-*" >/dev/null || fail "kill-$i kept $(compgen -G "$downloads/kill-$i-*")"
            ;;
        *) fail "kill-$i exited with $code: $(logs "$RUN-kill-$i" | tail -n 2)" ;;
    esac
done
[ "$broken" -eq "$cut" ] || fail "$broken clients ended with exit 5, but $cut transfers ran on the killed replica"
say "the $cut cut clients kept no file; the other $((KILL_CLIENTS - broken)) fetched big.bin byte-exact"
leftovers=$(find "$downloads" -name '.*' | head -n 3)
[ -z "$leftovers" ] || fail "staging files left in downloads/: $leftovers"
replaced() { converged && ! running_tasks | grep -q "^$victim_task"; }
wait_until "$CONVERGE_LIMIT" replaced || fail "Swarm did not replace the killed replica within ${CONVERGE_LIMIT}s"
say "Swarm replaced it: $REPLICAS healthy replicas again $(seconds $(($(now_ms) - killed))) s after the kill"
start_fetches after "$AFTER_CLIENTS" --wait 30 --timeout 10 -- random.bin
wait_until "$CLIENTS_LIMIT" all_exited after "$AFTER_CLIENTS" || fail "clients after the kill still run"
for ((i = 1; i <= AFTER_CLIENTS; i++)); do
    check_fetched "after-$i"
done
say "$AFTER_CLIENTS clients started afterwards fetched random.bin byte-exact"

step "a rolling update while clients fetch in a loop"
# Fresh clients one after another, each resolving the name and connecting
# anew, without --wait: a connection the update refuses is a failure.
cat > "$loop/fetch-loop.sh" <<'EOF'
worker() {
    local ok=0 failed=0
    while [ ! -e /loop/stop ] && [ "$SECONDS" -lt 300 ]; do
        if tcpfile-client -q --timeout 5 -o "/tmp/random-$1" server 7070 random.bin 100M 2>"/tmp/error-$1" &&
            cmp -s "/tmp/random-$1" /files/random.bin; then
            ok=$((ok + 1))
        else
            failed=$((failed + 1))
            echo "worker $1: $(cat "/tmp/error-$1")" >> /loop/failures
        fi
        rm -f "/tmp/random-$1"
    done
    echo "$ok $failed" > "/loop/result-$1"
}
for w in $(seq "$1"); do worker "$w" & done
wait
EOF
client_containers+=("$RUN-loop")
docker run -d --name "$RUN-loop" --network "$NETWORK" \
    -v "$PWD/dist/$arch/tcpfile-client:/usr/local/bin/tcpfile-client:ro" \
    -v "$files:/files:ro" -v "$loop:/loop" \
    debian:bookworm-slim bash /loop/fetch-loop.sh "$LOOP_WORKERS" >/dev/null
before=$(running_tasks | sort)
sleep 2
update_started=$(now_ms)
resolve=()
! $built_here || resolve=(--no-resolve-image)
output=$(timeout "$COMMAND_LIMIT" docker service update --force --detach "${resolve[@]}" "$SERVICE" 2>&1) ||
    fail "docker service update: $output"
most=0 state=""
update_done() {
    local running
    running=$(docker ps -q --filter "label=com.docker.swarm.service.name=$SERVICE" | wc -l)
    [ "$running" -le "$most" ] || most=$running
    state=$(docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$SERVICE")
    case "$state" in
        completed) return 0 ;;
        paused | rollback_*) fail "the update ended $state: $(docker service inspect -f '{{.UpdateStatus.Message}}' "$SERVICE")" ;;
    esac
    return 1
}
wait_until "$UPDATE_LIMIT" update_done || fail "the update is $state after ${UPDATE_LIMIT}s"
wait_until "$CONVERGE_LIMIT" converged || fail "the service did not settle after the update"
update_ms=$(($(now_ms) - update_started))
sleep 2
touch "$loop/stop"
loop_ended() { [ "$(docker inspect -f '{{.State.Status}}' "$RUN-loop")" = exited ]; }
wait_until 30 loop_ended || fail "the loop of clients did not stop"
after=$(running_tasks | sort)
kept=$(comm -12 <(echo "$before") <(echo "$after"))
[ -z "$kept" ] || fail "some replicas were not replaced: $kept"
order=$(docker service inspect -f '{{.Spec.UpdateConfig.Order}}' "$SERVICE")
say "all $REPLICAS replicas replaced ($order, one at a time) in $(seconds "$update_ms") s; at most $most replicas ran at once"
[ "$most" -gt "$REPLICAS" ] || fail "start-first never ran a new replica beside the old ones"
fetches=0 failures=0
for ((w = 1; w <= LOOP_WORKERS; w++)); do
    [ -f "$loop/result-$w" ] || fail "loop worker $w left no result: $(logs "$RUN-loop" | tail -n 3)"
    read -r ok failed < "$loop/result-$w"
    fetches=$((fetches + ok + failed))
    failures=$((failures + failed))
done
if [ "$failures" -gt 0 ]; then
    head -n 5 "$loop/failures" >&2
    fail "$failures of $fetches fetches during the update failed"
fi
say "$fetches fetches of random.bin by $LOOP_WORKERS loops of fresh clients during the update: all byte-exact, none failed"

step "docker stack rm"
rm_started=$(now_ms)
docker rm -f "${client_containers[@]}" >/dev/null
client_containers=()
timeout "$COMMAND_LIMIT" docker stack rm "$STACK" >/dev/null
wait_until "$RM_LIMIT" no_stack_leftovers || fail "the stack left behind: $(stack_leftovers | tr '\n' ' ')"
deployed=false
say "no service, container or network of $STACK is left, $(seconds $(($(now_ms) - rm_started))) s after the rm"

echo
echo "swarm-e2e: passed in $((SECONDS - started)) s (endpoint mode $endpoint_mode, $REPLICAS replicas)"
