#!/usr/bin/env bash
# Lets this machine run ARM programs, and Docker run ARM images, through
# qemu's user-mode emulation: registers Debian's qemu-user-static handlers
# with the kernel (binfmt_misc) for each architecture asked for, with the F
# flag, so that the handler works inside containers too. A handler that is
# already registered is left as it is; nothing is ever removed.
#
#   ci/binfmt.sh [aarch64] [arm]      (default: both)
#
# Needs root when something is missing; installs qemu-user-static if needed.
set -euo pipefail

MOUNT=/proc/sys/fs/binfmt_misc
CONFIGS=/usr/lib/binfmt.d

if [ "$#" -gt 0 ]; then
    arches=("$@")
else
    arches=(aarch64 arm)
fi
for arch in "${arches[@]}"; do
    case "$arch" in
        aarch64 | arm) ;;
        *) echo "error: unsupported architecture: $arch (aarch64 or arm)" >&2; exit 1 ;;
    esac
done

registered() {
    [ -f "$MOUNT/qemu-$1" ] && head -n 1 "$MOUNT/qemu-$1" | grep -qx enabled
}

missing=()
for arch in "${arches[@]}"; do
    registered "$arch" || missing+=("$arch")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "binfmt: qemu handlers for ${arches[*]} are registered"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: no qemu handler for ${missing[*]} is registered, and only root can register one" >&2
    exit 1
fi

if [ ! -f "$CONFIGS/qemu-${missing[0]}.conf" ]; then
    echo "installing qemu-user-static"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends qemu-user-static
fi
if [ ! -f "$MOUNT/register" ]; then
    mount -t binfmt_misc binfmt_misc "$MOUNT"
fi

for arch in "${missing[@]}"; do
    # Registered earlier, then disabled by hand: enabling it keeps whatever
    # its owner set up.
    if [ -f "$MOUNT/qemu-$arch" ]; then
        echo 1 > "$MOUNT/qemu-$arch"
    else
        # One line, ":name:type:offset:magic:mask:interpreter:flags", as
        # Debian's package writes it for systemd-binfmt.
        grep -v '^#' "$CONFIGS/qemu-$arch.conf" | sed '/^$/d' > "$MOUNT/register"
    fi
    registered "$arch" || { echo "error: the kernel did not take the handler for $arch" >&2; exit 1; }
    flags=$(sed -n 's/^flags: //p' "$MOUNT/qemu-$arch")
    echo "binfmt: registered qemu-$arch (flags: $flags)"
done
