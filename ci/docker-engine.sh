#!/usr/bin/env bash
# Makes sure a Docker engine answers and a compose (the docker compose plugin
# or docker-compose) is installed: installs Debian's docker.io and
# docker-compose when they are missing, starts dockerd
# when none answers, and waits for it for at most TCPFILE_DOCKER_WAIT seconds
# (60 by default).
#
#   ci/docker-engine.sh
set -euo pipefail

SOCKET=/var/run/docker.sock
WAIT=${TCPFILE_DOCKER_WAIT:-60}

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
    missing+=(docker-compose)
fi

if [ "${#missing[@]}" -eq 0 ] && docker info >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "error: Docker is not ready (missing: ${missing[*]:-none}; 'docker info' fails) and only root can set it up" >&2
    exit 1
fi

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
