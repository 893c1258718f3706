#!/usr/bin/env bash
# Makes sure a Docker engine answers and a compose (the docker compose plugin
# or docker-compose) is installed. An engine that answers is used whatever it
# is; only when none answers, and only as root, it installs Debian's docker.io
# and docker-compose where they are missing, starts dockerd, and waits for it
# for at most TCPFILE_DOCKER_WAIT seconds (60 by default).
#
#   ci/docker-engine.sh
set -euo pipefail

SOCKET=/var/run/docker.sock
WAIT=${TCPFILE_DOCKER_WAIT:-60}

has_compose() {
    docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1
}

# An engine that answers is used as it is, wherever it runs: Docker Desktop,
# a remote DOCKER_HOST, Podman's docker shim, or a local dockerd that is not
# on a user's PATH (/usr/sbin). Nothing is installed or started then.
if docker info >/dev/null 2>&1; then
    if has_compose; then
        exit 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: Docker answers, but neither 'docker compose' nor docker-compose is installed: install Docker Compose, or run this as root to get Debian's docker-compose" >&2
        exit 1
    fi
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "error: no Docker engine answers ('docker info' fails) and only root can install or start one; start yours (Docker Desktop, 'systemctl start docker') or run this as root" >&2
    exit 1
fi

missing=()
command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
has_compose || missing+=(docker-compose)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
fi

if docker info >/dev/null 2>&1; then
    exit 0
fi

if [ -d /run/systemd/system ]; then
    systemctl start docker
else
    # No init system to own the daemon (a container or a bare CI machine):
    # it runs detached, outliving this script, with its log beside the socket.
    echo "starting dockerd (log: /var/log/dockerd.log)"
    nohup setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
fi

for _ in $(seq "$WAIT"); do
    if [ -S "$SOCKET" ] && docker info >/dev/null 2>&1; then
        echo "Docker engine $(docker version -f '{{.Server.Version}}') is ready"
        exit 0
    fi
    sleep 1
done
echo "error: no Docker engine answered on $SOCKET within ${WAIT}s; see /var/log/dockerd.log" >&2
exit 1
