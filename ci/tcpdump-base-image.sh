#!/usr/bin/env bash
# Makes the Debian base of the tcpdump sidecar image for an architecture the
# engine does not run natively: localhost/tcpfile/tcpdump-base:bookworm-ARCH,
# holding Debian's tcpdump and what the sidecar's scripts use (bash, dash,
# coreutils, grep, mawk, sed, getent), for that architecture's platform.
#
#   ci/tcpdump-base-image.sh ARCH        (amd64, arm64 or armv7; as root)
#
# mmdebstrap only unpacks the packages (its extract variant) and no package
# script runs, so nothing runs under emulation and the build takes as long as
# the download. What those scripts would have made is made here: /etc/passwd
# and /etc/group from base-passwd, the awk link to mawk. The image has no apt
# or dpkg database: it is a sidecar's file system, not a system to maintain.
#
# An image of the same inputs (this script, the architecture, the Debian
# release and mirror) is reused; a new one replaces the older one of that
# architecture. DEBIAN_MIRROR overrides the mirror apt uses here. Prints the
# image's name last, on stdout.
set -euo pipefail

cd "$(dirname "$0")/.."
SUITE=bookworm
REPOSITORY=localhost/tcpfile/tcpdump-base
INPUTS_LABEL=org.tcpfile.inputs
PACKAGES=(tcpdump bash dash coreutils grep mawk sed libc-bin base-files base-passwd)

say() { echo "$*" >&2; }
fail() { say "error: $*"; exit 1; }

[ "$#" -eq 1 ] || fail "usage: ci/tcpdump-base-image.sh amd64|arm64|armv7"
arch=$1
case "$arch" in
    amd64) debian_arch=amd64 platform=linux/amd64 ;;
    arm64) debian_arch=arm64 platform=linux/arm64 ;;
    armv7) debian_arch=armhf platform=linux/arm/v7 ;;
    *) fail "unsupported architecture: $arch (amd64, arm64 or armv7)" ;;
esac
image=$REPOSITORY:$SUITE-$arch

configured_mirror() {
    # shellcheck disable=SC2016 # apt's own $(...) placeholders
    apt-get indextargets --format '$(REPO_URI)' 2>/dev/null |
        grep -E '/debian/?$' | sort -u | head -n 1 || true
}
mirror=${DEBIAN_MIRROR:-$(configured_mirror)}
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
security_mirror=${mirror%/debian}/debian-security

inputs=$( (cat "$0"; echo "$arch $SUITE $mirror") | sha256sum | cut -d' ' -f1)
existing=$(docker image ls --quiet --no-trunc --filter "label=$INPUTS_LABEL=$inputs" "$REPOSITORY" | head -n 1)
before=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
if [ -n "$existing" ]; then
    docker tag "$existing" "$image"
    say "$image: unchanged"
    echo "$image"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || fail "$image is missing, and only root can unpack it (mmdebstrap)"
if ! command -v mmdebstrap >/dev/null 2>&1; then
    say "installing mmdebstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

work=$(mktemp -d /var/tmp/tcpfile-tcpdump-base.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT
rootfs=$work/rootfs

started=$SECONDS
say "unpacking Debian $SUITE's tcpdump for $debian_arch from $mirror"
packages=$(IFS=,; echo "${PACKAGES[*]}")
# merged-usr: /bin, /lib and /sbin are links into /usr, as in any bookworm
# system; the extract variant would not make them. Left out: documentation,
# translations and glibc's character set converters, which nothing here uses.
mmdebstrap --variant=extract --architectures="$debian_arch" --include="$packages" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/lib/*/gconv/*' \
    "$SUITE" "$rootfs" \
    "deb $mirror $SUITE main" "deb $mirror $SUITE-updates main" \
    "deb $security_mirror $SUITE-security main" \
    > "$work/mmdebstrap.log" 2>&1 ||
    { tail -n 30 "$work/mmdebstrap.log" >&2; fail "mmdebstrap"; }

# What base-passwd's and mawk's scripts would have done.
cp "$rootfs/usr/share/base-passwd/passwd.master" "$rootfs/etc/passwd"
cp "$rootfs/usr/share/base-passwd/group.master" "$rootfs/etc/group"
ln -sf mawk "$rootfs/usr/bin/awk"
# The build machine's identity and apt's state do not belong in an image;
# the engine provides /dev.
rm -rf "${rootfs:?}/dev"/* "$rootfs/var/cache/apt"/* "$rootfs/var/lib/apt/lists"/* "$rootfs/var/log"/*
: > "$rootfs/etc/hostname"
: > "$rootfs/etc/resolv.conf"
say "unpacked in $((SECONDS - started)) s"

# The classic builder gives a FROM scratch image's first layer the platform
# asked for (docker import ignores --platform on older engines).
mkdir "$work/context"
tar --numeric-owner --xattrs -C "$rootfs" -cf "$work/context/rootfs.tar" .
cat > "$work/context/Dockerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["bash"]
EOF
docker build --quiet --platform "$platform" --label "$INPUTS_LABEL=$inputs" \
    --tag "$image" "$work/context" >/dev/null
actual=$(docker image inspect -f '{{.Os}}/{{.Architecture}}{{with index . "Variant"}}/{{.}}{{end}}' "$image")
[ "$actual" = "$platform" ] || fail "$image is for $actual, not $platform"
if [ -n "$before" ] && [ -z "$(docker image inspect -f '{{join .RepoTags " "}}' "$before" 2>/dev/null)" ]; then
    docker image rm "$before" >/dev/null 2>&1 || true
fi
say "$image: $(docker image inspect -f '{{.Size}}' "$image") bytes, made in $((SECONDS - started)) s"
echo "$image"
