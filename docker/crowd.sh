#!/usr/bin/env bash
# Sends a crowd of clients at the running lab's server all at once, and shows
# from the server's capture how its model served them: one after another
# (iterative) or side by side (parallel, preforked).
#
#   docker/crowd.sh [CLIENTS]
#
# CLIENTS defaults to 8. The lab must be up (make up). Each client fetches
# big.bin into downloads/crowd-big.bin. The server is paused while the
# clients connect, so that every connection is already waiting in its queue
# when it resumes: otherwise containers that start a few hundred milliseconds
# apart would each find the server idle, whatever its model.
set -euo pipefail

cd "$(dirname "$0")/.."
clients=${1:-8}
project=${COMPOSE_PROJECT_NAME:-tcpfile}
# Bounds, in seconds.
CONNECT_LIMIT=60
FINISH_LIMIT=120

# TCPFILE_COMPOSE=v1 or v2 picks the compose that made the lab.
case "${TCPFILE_COMPOSE:-}" in
    v1) compose=(docker-compose -p "$project") ;;
    v2) compose=(docker compose -p "$project") ;;
    *)
        if docker compose version >/dev/null 2>&1; then
            compose=(docker compose -p "$project")
        else
            compose=(docker-compose -p "$project")
        fi
        ;;
esac

containers_of() {
    docker ps -a -q --filter "label=com.docker.compose.project=$project" \
        --filter "label=com.docker.compose.service=$1"
}

server=$(containers_of server)
capture=$(containers_of capture-server)
if [ -z "$server" ] || [ -z "$capture" ]; then
    echo "error: the lab is not up; start it with 'make up'" >&2
    exit 1
fi

# wait_for DESCRIPTION LIMIT COMMAND...: until COMMAND succeeds.
wait_for() {
    local description=$1 limit=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "error: no $description after ${limit}s" >&2
            return 1
        fi
        sleep 0.2
    done
}

capture_healthy() {
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$capture")" = healthy ]
}

# Connections to port 7070 (1B9E) established in the server's network
# namespace, which the capture sidecar shares: accepted or still queued.
all_connected() {
    [ "$(docker exec "$capture" awk '$2 ~ /:1B9E$/ && $4 == "01"' /proc/net/tcp | wc -l)" -ge "$clients" ]
}

all_exited() {
    local id
    for id in $crowd; do
        [ "$(docker inspect -f '{{.State.Status}}' "$id")" = exited ] || return 1
    done
}

"${compose[@]}" --profile crowd up --no-start --no-deps --scale "crowd=$clients" crowd
crowd=$(containers_of crowd)
wait_for "capture" 30 capture_healthy

# The clock the capture's timestamps come from: inside the engine's machine,
# which on Docker Desktop is a VM of its own.
started=$(docker exec "$capture" date +%s.%N)
docker pause "$server" >/dev/null
trap 'docker unpause "$server" >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC2086 # one argument per container
docker start $crowd >/dev/null
wait_for "$clients connections" "$CONNECT_LIMIT" all_connected
docker unpause "$server" >/dev/null
trap - EXIT
echo "$clients clients connected while the server was paused; it runs again"

wait_for "end of the crowd's transfers" "$FINISH_LIMIT" all_exited
failed=0
for id in $crowd; do
    code=$(docker inspect -f '{{.State.ExitCode}}' "$id")
    [ "$code" = 0 ] || failed=$((failed + 1))
done
echo "$((clients - failed)) of $clients clients fetched big.bin"

# The capture is quiet now: every transfer has ended, and the health checks
# use loopback, which it does not capture. Times count from the first response.
docker exec "$capture" bash -c 'tcpfile-flows -s "$1" /captures/server.pcap*' - "$started" |
    awk '
        function value(pair) { split(pair, parts, "="); return parts[2] }
        function since_first(time) { return time == "-" ? "(not seen)" : sprintf("%5.0f ms", (time - first) * 1000) }
        {
            line[NR] = $1 " " $2 " " $8
            answered[NR] = value($13); closed[NR] = value($14)
            if (answered[NR] != "-" && (!seen || answered[NR] < first)) { first = answered[NR]; seen = 1 }
        }
        END { for (i = 1; i <= NR; i++) print "  " line[i], "served from", since_first(answered[i]), "to", since_first(closed[i]) }'
# On the wire, an iterative server overlaps two transfers at most: the next
# one starts while the kernel still sends the tail of the last from its
# buffers. The forking servers overlap as many as they have processes.
docker exec "$capture" bash -c 'tcpfile-flows -m -s "$1" /captures/server.pcap*' - "$started" |
    sed 's/^most_at_once=\(.*\)/at most \1 transfers on the wire at once/'
[ "$failed" -eq 0 ]
