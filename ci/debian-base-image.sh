#!/usr/bin/env bash
# Makes sure the local Docker engine has an image tagged debian:bookworm-slim,
# so Dockerfiles that start FROM it build on a machine that reaches no
# container registry.
#
#   ci/debian-base-image.sh
#
# An existing image is kept as it is. Otherwise the script tries a pull (bounded
# by TCPFILE_PULL_TIMEOUT seconds, 60 by default) and, when no registry
# answers, builds a minimal Debian 12 root file system with debootstrap from
# the Debian mirror that apt already uses here (DEBIAN_MIRROR overrides it) and
# imports it under that tag.
set -euo pipefail

IMAGE=debian:bookworm-slim
SUITE=bookworm

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE is present"
    exit 0
fi

if timeout "${TCPFILE_PULL_TIMEOUT:-60}" docker pull "$IMAGE"; then
    exit 0
fi
echo "no registry answers; building $IMAGE with debootstrap"

if [ "$(id -u)" -ne 0 ]; then
    echo "error: debootstrap needs root; run this script as root" >&2
    exit 1
fi

missing=()
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The first Debian archive (not the security one) that apt is configured with,
# in either the one-line or the deb822 format; deb.debian.org when there is
# none, as on a machine that is not Debian.
configured_mirror() {
    local files=()
    local file
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] && files+=("$file")
    done
    [ "${#files[@]}" -gt 0 ] || return 0
    awk '
        /^[[:space:]]*#/ { next }
        $1 == "deb" {
            for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break }
        }
        $1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }
    ' "${files[@]}" | grep -E '/debian/?$' | head -n 1 || true
}

mirror=${DEBIAN_MIRROR:-$(configured_mirror)}
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
security_mirror=${mirror%/debian}/debian-security
echo "mirror: $mirror"

workdir=$(mktemp -d /var/tmp/debian-base.XXXXXX)
rootfs="$workdir/rootfs"
# debootstrap mounts /proc and /sys inside the new system while it configures
# packages; a run that breaks off can leave them mounted, and those must be
# let go before the tree is removed.
cleanup() {
    local mounted
    awk -v root="$rootfs" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r mounted; do umount -l "$mounted" || true; done
    rm -rf "$workdir"
}
trap cleanup EXIT

debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    "$SUITE" "$rootfs" "$mirror"

# What the official slim image leaves out: documentation, manual pages and
# translations, also for packages installed later.
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/groff/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
EOF
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs/usr/share/man"/* "$rootfs/usr/share/info"/*
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +

# apt as in the official image: no package caches or downloaded packages left
# in a layer after an install, compressed indexes, no translations.
cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
cat > "$rootfs/etc/apt/apt.conf.d/docker-slim" <<'EOF'
Acquire::GzipIndexes "true";
Acquire::CompressionTypes::Order:: "gz";
Acquire::Languages "none";
APT::AutoRemove::SuggestsImportant "false";
EOF

# The same sources as the official image, security updates included, so that
# images built on this one install current packages.
rm -f "$rootfs/etc/apt/sources.list"
cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# The build machine's identity and package caches do not belong in an image.
rm -rf "$rootfs/var/cache/apt"/*.bin "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/var/lib/apt/lists"/* \
    "$rootfs/var/log"/*.log "$rootfs/var/log/apt"/*
: > "$rootfs/etc/hostname"
: > "$rootfs/etc/resolv.conf"

tar --numeric-owner --xattrs -C "$rootfs" -c . |
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        --message "debootstrap --variant=minbase $SUITE from $mirror" \
        - "$IMAGE"
docker image ls "$IMAGE"
