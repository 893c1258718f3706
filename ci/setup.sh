#!/usr/bin/env bash
# Installs what the full test run needs and a fresh Debian or Ubuntu machine
# lacks: Debian packages (with the armhf and armel architectures, whose musl
# and GCC unwinder the 32-bit ARM builds link against), the rustup targets and
# components, and the nightly toolchain's rust-src for those builds. Installs
# only what is missing, so a second run is quick.
#
#   ci/setup.sh
set -euo pipefail

cd "$(dirname "$0")/.."

# Waits for another apt-get on the same machine instead of failing at once.
APT_GET=(apt-get -o DPkg::Lock::Timeout=600)

# command -> Debian package that provides it
declare -A packages=(
    [qemu-aarch64-static]=qemu-user-static
    [qemu-arm-static]=qemu-user-static
    [readelf]=binutils
    [shellcheck]=shellcheck
    [file]=file
    [tcpdump]=tcpdump
    [debootstrap]=debootstrap
    [nginx]=nginx-light
    [wrk]=wrk
    [curl]=curl
    [python3]=python3
    [pip3]=python3-pip
    [tshark]=tshark
    [luacheck]=lua-check
    [iptables]=iptables
    [tc]=iproute2
    [nsenter]=util-linux
    [ethtool]=ethtool
    [mmdebstrap]=mmdebstrap
    [docker-registry]=docker-registry
    [qemu-system-x86_64]=qemu-system-x86
    [qemu-system-aarch64]=qemu-system-arm
    [qemu-img]=qemu-utils
)
# file -> package of a foreign architecture that provides it
declare -A foreign_packages=(
    [/usr/lib/arm-linux-musleabihf/libc.a]=musl-dev:armhf
    [/usr/lib/gcc/arm-linux-gnueabihf/12/libgcc_eh.a]=libgcc-12-dev:armhf
    [/usr/lib/arm-linux-musleabi/libc.a]=musl-dev:armel
    [/usr/lib/gcc/arm-linux-gnueabi/12/libgcc_eh.a]=libgcc-12-dev:armel
)

missing=()
for command in "${!packages[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("${packages[$command]}")
done
for file in "${!foreign_packages[@]}"; do
    [ -f "$file" ] || missing+=("${foreign_packages[$file]}")
done
missing_architectures=()
for architecture in armhf armel; do
    dpkg --print-foreign-architectures | grep -qx "$architecture" || missing_architectures+=("$architecture")
done
# ci/bench.sh draws its chart with matplotlib; Debian's package is for
# /usr/bin/python3.
if ! /usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1; then
    missing+=(python3-matplotlib)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing packages (${missing[*]}); run as root or install them" >&2
        exit 1
    fi
    for architecture in "${missing_architectures[@]}"; do
        echo "adding the Debian architecture $architecture"
        dpkg --add-architecture "$architecture"
    done
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether users may capture: no, only root.
    echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
    "${APT_GET[@]}" update -qq
    "${APT_GET[@]}" install -y -qq --no-install-recommends "${missing[@]}"
    # ci/registry-e2e.sh runs the registry program on 127.0.0.1 itself; the
    # service the package starts would listen on every address.
    if [[ " ${missing[*]} " = *" docker-registry "* ]]; then
        ci/registry-service-off.sh
    fi
fi

rustup component add rustfmt clippy >/dev/null
installed_targets=$(rustup target list --installed)
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    if ! grep -qx "$target" <<< "$installed_targets"; then
        echo "adding the rustup target $target"
        rustup target add "$target"
    fi
done

# rustup offers no prebuilt standard library for the 32-bit ARM musl targets
# here: ci/cargo-build-std.sh compiles it from nightly's rust-src.
if ! rustup toolchain list | grep -q '^nightly-'; then
    echo "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal --no-self-update
fi
if ! rustup component list --installed --toolchain nightly | grep -q '^rust-src'; then
    echo "adding rust-src to the nightly toolchain"
    rustup component add rust-src --toolchain nightly
fi

# Docker with compose v2 beside Debian's v1, and qemu's ARM handlers for
# Docker's ARM images and the arm64 VM image.
ci/docker-engine.sh
ci/compose-v2.sh
ci/binfmt.sh
