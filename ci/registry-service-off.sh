#!/usr/bin/env bash
# Stops and disables the registry service that Debian's docker-registry
# package starts on installation, listening on port 5000 of every address:
# ci/registry-e2e.sh runs the program itself, on 127.0.0.1 only, for as long
# as it needs it. Does nothing where the service does not run.
#
#   ci/registry-service-off.sh        (as root)
set -euo pipefail

if [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
elif [ -x /etc/init.d/docker-registry ]; then
    /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
    update-rc.d docker-registry disable >/dev/null 2>&1 || true
fi
echo "the docker-registry service is off; ci/registry-e2e.sh runs its own"
