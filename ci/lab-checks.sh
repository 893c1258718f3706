# shellcheck shell=bash
# The compose lab's end-to-end checks, shared by ci/compose-e2e.sh (the
# engine's own images) and ci/arm-lab.sh (ARM images under emulation). Sourced
# from the repository's root by a bash script with set -euo pipefail, never
# run on its own:
#
#   source ci/lab-checks.sh
#   lab_begin NAME       compose project NAME-PID, its folders, the clean-up
#   lab_tools            Docker, compose, tcpdump; validates compose.yaml
#   lab_check_model MODEL   up, then every check, then down
#
# What the lab runs comes from the environment compose reads: TCPFILE_REGISTRY,
# TCPFILE_TAG and DOCKER_DEFAULT_PLATFORM. TCPFILE_COMPOSE picks the compose:
# v2 (`docker compose`, the default where it answers) or v1 (docker-compose).
# The caller may set LAB_CROWD (clients sent at once, default 4),
# LAB_CLIENTS_LIMIT and LAB_HEALTH_LIMIT (seconds, defaults 90 and 30) before
# sourcing; the stop is always held to 2 s. It may define lab_after_clients,
# run once the clients have exited while every container is still there, and
# add to lab_pids the processes of its own the exit must stop.
#
# A run has a compose project and folders of its own (NAME-PID, and captures/
# and downloads/ in a temporary folder), so it never touches a lab a user
# runs, and two runs can share an engine. As root, those folders belong to an
# unprivileged user (nobody), as a checkout does on a laptop: whatever the lab
# writes there must end up that user's.

# Bounds, in seconds: the clients finish in a few, but builds and a loaded
# machine can slow anything down.
CROWD=${LAB_CROWD:-4}
CLIENTS_LIMIT=${LAB_CLIENTS_LIMIT:-90}
HEALTH_LIMIT=${LAB_HEALTH_LIMIT:-30}
STOP_LIMIT_MS=2000
COMMAND_LIMIT=300

declare -A EXPECTED_EXIT=([client-ok]=0 [client-empty]=0 [client-refused]=4 [client-missing]=3)

case "${TCPFILE_COMPOSE:-}" in
    "" | v1 | v2) ;;
    *) echo "error: TCPFILE_COMPOSE must be v1 or v2" >&2; exit 1 ;;
esac

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# Decided once lab_tools has installed what was missing.
compose_command=(docker-compose)
compose() {
    timeout "$COMMAND_LIMIT" "${compose_command[@]}" "$@"
}

# The containers of a service, running or not, whichever compose made them.
containers_of() {
    docker ps -a -q --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1"
}

project_leftovers() {
    local filter="label=com.docker.compose.project=$PROJECT"
    docker ps -a -q --filter "$filter"
    docker network ls -q --filter "$filter"
    docker volume ls -q --filter "$filter"
}

lab_pids=()
lab_on_exit() {
    local status=$? pid
    for pid in "${lab_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ] && [ -n "$(containers_of server)" ]; then
        echo "--- state at the failure" >&2
        compose --profile crowd ps >&2 || true
        compose --profile crowd logs --no-color --tail 40 >&2 || true
    fi
    compose --profile crowd down --volumes --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$status"
}

# lab_begin NAME: the project NAME-PID, its folders in /tmp/NAME.XXXXXX, and
# the trap that removes both.
lab_begin() {
    PROJECT=$1-$$
    export COMPOSE_PROJECT_NAME=$PROJECT
    work=$(mktemp -d "/tmp/$1.XXXXXX")
    chmod 0755 "$work"
    captures=$work/captures
    downloads=$work/downloads
    export TCPFILE_CAPTURES=$captures TCPFILE_DOWNLOADS=$downloads
    trap lab_on_exit EXIT

    # Who owns captures/ and downloads/, and so everything the lab writes there.
    if [ "$(id -u)" -eq 0 ]; then
        owner=65534
        group=65534
    else
        owner=$(id -u)
        group=$(id -g)
    fi
    # Small capture files, so that every run rotates them (the clients'
    # captures keep whole packets for that); a health check every second, so
    # that the server turns healthy while the clients run.
    export CAPTURE_FILE_MB=1 TCPFILE_HEALTH_INTERVAL=1s
}

lab_tools() {
    ci/docker-engine.sh
    case "${TCPFILE_COMPOSE:-}" in
        v1) compose_command=(docker-compose) ;;
        v2) compose_command=(docker compose) ;;
        "") docker compose version >/dev/null 2>&1 && compose_command=(docker compose) ;;
    esac
    echo "compose: ${compose_command[*]} $("${compose_command[@]}" version --short)"
    if ! command -v tcpdump >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends tcpdump
    fi
    docker/lint.sh
}

# wait_exited SERVICE...: until every container of these services has exited.
wait_exited() {
    local deadline=$((SECONDS + CLIENTS_LIMIT)) service id
    for service in "$@"; do
        [ -n "$(containers_of "$service")" ] || fail "no container for $service"
        for id in $(containers_of "$service"); do
            while [ "$(docker inspect -f '{{.State.Status}}' "$id")" != exited ]; do
                [ "$SECONDS" -lt "$deadline" ] || fail "$service still runs after ${CLIENTS_LIMIT}s"
                sleep 0.5
            done
        done
    done
}

# The lines of SUMMARY (from tcpfile-flows.sh) that show every key=value given.
flows_with() {
    local summary=$1 expectation
    shift
    local flows
    # A space after every line, so that the last pair matches like the others.
    flows=$(awk '{ print $0 " " }' <<< "$summary" | grep -vF " request=0 " || true)
    for expectation in "$@"; do
        flows=$(grep -F " $expectation " <<< "$flows" || true)
    done
    sed '/^ *$/d' <<< "$flows"
}

# The one connection that asked for NAME must show each key=value given.
check_flow() {
    local where=$1 summary=$2 name=$3
    shift 3
    local count expectation
    count=$(flows_with "$summary" "file=$name" | grep -c . || true)
    [ "$count" -eq 1 ] || fail "$where: $count connections asked for $name, not 1:"$'\n'"$summary"
    for expectation in "$@"; do
        [ -n "$(flows_with "$summary" "file=$name" "$expectation")" ] ||
            fail "$where: the connection for $name lacks $expectation: $(flows_with "$summary" "file=$name")"
    done
    echo "  $where: $name: $*"
}

# Stops the capture sidecars, so their files are complete, and checks that
# tcpdump lost nothing.
stop_captures() {
    compose stop capture-server capture-client >/dev/null 2>&1
    local sidecar dropped
    for sidecar in capture-server capture-client; do
        dropped=$(docker logs "$(containers_of "$sidecar")" 2>&1 | sed -n 's/^\([0-9]*\) packets dropped by kernel$/\1/p' | tail -n 1)
        [ "$dropped" = 0 ] || fail "$sidecar: tcpdump reports '${dropped:-no count of}' packets dropped by the kernel"
    done
}

# In the sample volume, the output of COMMAND ARGUMENT... run in /srv/files.
in_samples() {
    compose run --rm --no-deps -T -w /srv/files --entrypoint "$1" prepare "${@:2}"
}

# lab_check_model MODEL: the lab with that server model, from up to down.
lab_check_model() {
    local mode=$1
    local started=$SECONDS
    # Every compose command must see the same model, or it would recreate the
    # server as another one.
    export SERVER_MODE=$mode CAPTURE_SNAPLEN=0
    step "$mode: compose up"
    compose --profile crowd down --volumes --remove-orphans >/dev/null 2>&1
    rm -rf "$captures" "$downloads"
    mkdir -p "$captures" "$downloads"
    chown "$owner:$group" "$captures" "$downloads"
    compose up -d

    step "$mode: clients"
    wait_exited "${!EXPECTED_EXIT[@]}"
    local service code
    for service in "${!EXPECTED_EXIT[@]}"; do
        code=$(docker inspect -f '{{.State.ExitCode}}' "$(containers_of "$service")")
        [ "$code" = "${EXPECTED_EXIT[$service]}" ] ||
            fail "$service exited with $code, not ${EXPECTED_EXIT[$service]}"
        echo "  $service exited with $code"
    done

    local server deadline health
    server=$(containers_of server)
    deadline=$((SECONDS + HEALTH_LIMIT))
    until health=$(docker inspect -f '{{.State.Health.Status}}' "$server") && [ "$health" = healthy ]; do
        [ "$SECONDS" -lt "$deadline" ] || fail "the server is $health after ${HEALTH_LIMIT}s"
        sleep 0.5
    done
    echo "  the server is healthy"
    if declare -F lab_after_clients >/dev/null; then
        lab_after_clients
    fi

    step "$mode: downloads"
    local listed
    listed=$(cd "$downloads" && ls -A)
    [ "$listed" = $'empty.txt\nrandom.bin' ] || fail "downloads/ holds: $listed"
    local file
    for file in "$downloads"/*; do
        [ "$(stat -c %u:%g "$file")" = "$owner:$group" ] || fail "$file belongs to $(stat -c %u:%g "$file"), not $owner:$group"
    done
    local sources downloaded
    sources=$(in_samples sha256sum empty.txt random.bin)
    downloaded=$(cd "$downloads" && sha256sum empty.txt random.bin)
    [ "$sources" = "$downloaded" ] || fail "downloads differ from their sources:"$'\n'"$sources"$'\n'"$downloaded"
    in_samples sha256sum --quiet --check SHA256SUMS || fail "the samples do not match their SHA256SUMS"
    awk '{ print "  " $0 }' <<< "$downloaded"

    step "$mode: captures"
    stop_captures
    [ -f "$captures/server.pcap1" ] || fail "captures/server.pcap was not rotated"
    for file in "$captures"/*; do
        [ "$(stat -c %u "$file")" = "$owner" ] || fail "$file belongs to $(stat -c %u "$file"), not $owner"
    done
    local sizes random_size big_size server_summary client_summary
    sizes=$(in_samples stat -c '%n %s' random.bin big.bin)
    random_size=$(awk '$1 == "random.bin" { print $2 }' <<< "$sizes")
    big_size=$(awk '$1 == "big.bin" { print $2 }' <<< "$sizes")
    local server_parts=("$captures"/server.pcap*) client_parts=("$captures"/client.pcap*)
    echo "  server capture: ${#server_parts[@]} files; client capture: ${#client_parts[@]} files"
    server_summary=$(docker/tcpfile-flows.sh "${server_parts[@]}")
    client_summary=$(docker/tcpfile-flows.sh "${client_parts[@]}")
    check_flow server "$server_summary" random.bin request=260 response=16 status=0 \
        "size=$random_size" reply=3 "content=$random_size" server_fin=yes
    check_flow server "$server_summary" empty.txt request=260 response=16 status=0 \
        size=0 reply=3 content=0 server_fin=yes
    check_flow server "$server_summary" big.bin request=260 response=16 status=0 \
        "size=$big_size" reply=4 content=0 server_fin=yes
    check_flow server "$server_summary" no-such-file.txt request=260 response=16 status=3 \
        size=0 reply=- content=0 server_fin=yes
    check_flow client "$client_summary" random.bin request=260 response=16 status=0 \
        "size=$random_size" reply=3 "content=$random_size" server_fin=yes
    [ "$(grep -cvF " request=0 " <<< "$client_summary")" -eq 1 ] ||
        fail "the client's capture shows other clients' connections:"$'\n'"$client_summary"
    ci/dissector.sh --check - "${server_parts[@]}" <<EOF || fail "the Wireshark dissector disagrees on the server's capture"
name=random.bin status=OK size=$random_size reply=READY_TO_RECEIVE content=$random_size
name=empty.txt status=OK size=0 reply=READY_TO_RECEIVE content=0
name=big.bin status=OK size=$big_size reply=REFUSE_TO_RECEIVE content=0
name=no-such-file.txt status=FILE_NOT_FOUND size=0 reply=- content=0
EOF
    ci/dissector.sh --check - "${client_parts[@]}" <<EOF || fail "the Wireshark dissector disagrees on the client's capture"
name=random.bin status=OK size=$random_size reply=READY_TO_RECEIVE content=$random_size
EOF
    echo "  the Wireshark dissector shows the same conversations"

    # With the default snap length, as a user runs it: whole packets of several
    # transfers at once could outrun tcpdump.
    step "$mode: a crowd of $CROWD clients"
    rm -f "$captures"/*.pcap*
    unset CAPTURE_SNAPLEN
    compose up -d --no-deps capture-server capture-client >/dev/null 2>&1
    docker/crowd.sh "$CROWD"
    stop_captures
    local served
    server_summary=$(docker/tcpfile-flows.sh "$captures"/server.pcap*)
    served=$(flows_with "$server_summary" file=big.bin "content=$big_size" server_fin=yes | grep -c . || true)
    [ "$served" -eq "$CROWD" ] || fail "$served of $CROWD crowd transfers are complete in the capture"
    in_samples sha256sum big.bin | awk '{ print $1 "  crowd-big.bin" }' | (cd "$downloads" && sha256sum --quiet --check) ||
        fail "downloads/crowd-big.bin differs from big.bin"
    echo "  $served transfers complete in the capture, and crowd-big.bin is big.bin"
    ci/dissector.sh --check - "$captures"/server.pcap* <<EOF || fail "the Wireshark dissector disagrees on the crowd's capture"
name=big.bin count=$CROWD status=OK size=$big_size reply=READY_TO_RECEIVE content=$big_size
EOF

    # What compose stop and down do to the server: SIGTERM, then SIGKILL if it
    # is still there after the timeout. The engine's own events time it from
    # the signal to the exit, without the engine's overhead on a busy machine.
    step "$mode: stop"
    local stop_started stop_ms events signalled_ns exited_ns
    stop_started=$(date +%s)
    docker stop --time 10 "$server" >/dev/null
    code=$(docker inspect -f '{{.State.ExitCode}}' "$server")
    events=$(docker events --since "$stop_started" --until "$(($(date +%s) + 1))" \
        --filter "container=$server" --filter event=kill --filter event=die \
        --format '{{.Action}} {{.TimeNano}}')
    signalled_ns=$(awk '$1 == "kill" { print $2; exit }' <<< "$events")
    exited_ns=$(awk '$1 == "die" { print $2; exit }' <<< "$events")
    if [ -z "$signalled_ns" ] || [ -z "$exited_ns" ]; then
        fail "the engine reported no kill and die for the server: $events"
    fi
    stop_ms=$(((exited_ns - signalled_ns) / 1000000))
    echo "  the server exited ${stop_ms} ms after SIGTERM, with exit code $code"
    [ "$code" = 0 ] || fail "the server exited with $code on SIGTERM"
    [ "$stop_ms" -lt "$STOP_LIMIT_MS" ] || fail "the server took ${stop_ms} ms to stop"

    compose --profile crowd down --volumes --remove-orphans >/dev/null 2>&1
    local left
    left=$(project_leftovers)
    [ -z "$left" ] || fail "down left these behind: $left"
    echo "  down left no container, network or volume"
    echo "  $mode passed in $((SECONDS - started))s"
}
