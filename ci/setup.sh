#!/usr/bin/env bash
# Installs what the full test run needs and a fresh Debian or Ubuntu machine
# lacks: Debian packages and the rustup targets and components. Installs
# only what is missing, so a second run is quick.
#
#   ci/setup.sh
set -euo pipefail

cd "$(dirname "$0")/.."

# command -> Debian package that provides it
declare -A packages=(
    [qemu-aarch64-static]=qemu-user-static
    [shellcheck]=shellcheck
    [file]=file
    [tcpdump]=tcpdump
    [debootstrap]=debootstrap
    [nginx]=nginx-light
    [wrk]=wrk
    [curl]=curl
    [python3]=python3
    [pip3]=python3-pip
)
missing=()
for command in "${!packages[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("${packages[$command]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing packages (${missing[*]}); run as root or install them" >&2
        exit 1
    fi
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

rustup component add rustfmt clippy >/dev/null
installed_targets=$(rustup target list --installed)
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    if ! grep -qx "$target" <<< "$installed_targets"; then
        echo "adding the rustup target $target"
        rustup target add "$target"
    fi
done
