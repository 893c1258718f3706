#!/usr/bin/env bash
# Builds the static release binaries for each target into dist/<docker-arch>/
# with a SHA256SUMS file, and checks that every binary is statically linked.
#
#   ci/build-static.sh [TARGET...]
#
# TARGET defaults to x86_64-unknown-linux-musl and aarch64-unknown-linux-musl.
# Uses `cross` when it is installed and its Docker engine answers; otherwise
# rustup's target and the toolchain's rust-lld (see .cargo/config.toml).
set -euo pipefail

cd "$(dirname "$0")/.."
BINARIES=(tcpfile-client tcpfile-server-iterative tcpfile-server-parallel tcpfile-server-preforked
    tcpfile-server-evented)

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
fi

docker_arch() {
    case "$1" in
        x86_64-*) echo amd64 ;;
        aarch64-*) echo arm64 ;;
        *) echo "unsupported target: $1" >&2; return 1 ;;
    esac
}

# How to run a binary of this target on this machine, for the version check.
runner_for() {
    case "$1" in
        "$(uname -m)"-*) echo "" ;;
        aarch64-*) command -v qemu-aarch64-static || echo "none" ;;
        x86_64-*) command -v qemu-x86_64-static || echo "none" ;;
    esac
}

use_cross=false
if command -v cross >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    use_cross=true
fi

# Docker builds have no .git; the commit can come from the environment.
if [ -z "${TCPFILE_COMMIT:-}" ] && git rev-parse --git-dir >/dev/null 2>&1; then
    TCPFILE_COMMIT=$(git rev-parse --short=12 HEAD)
    export TCPFILE_COMMIT
fi

for target in "${targets[@]}"; do
    arch=$(docker_arch "$target")
    if $use_cross; then
        echo "building $target with cross"
        cross build --release --locked --target "$target"
    else
        rustup target add "$target" >/dev/null
        echo "building $target with cargo and rust-lld"
        cargo build --release --locked --target "$target"
    fi

    out="dist/$arch"
    rm -rf "$out"
    mkdir -p "$out"
    runner=$(runner_for "$target")
    for binary in "${BINARIES[@]}"; do
        cp "${CARGO_TARGET_DIR:-target}/$target/release/$binary" "$out/"
        description=$(file -b "$out/$binary")
        case "$description" in
            *"statically linked"* | *"static-pie linked"*) ;;
            *) echo "error: $out/$binary is not statically linked: $description" >&2; exit 1 ;;
        esac
        if [ "$runner" != "none" ]; then
            version=$($runner "$out/$binary" --version)
            case "$version" in
                *"$target"*) ;;
                *) echo "error: $out/$binary --version does not name $target: $version" >&2; exit 1 ;;
            esac
        fi
    done
    (cd "$out" && sha256sum "${BINARIES[@]}" > SHA256SUMS)
    echo "$out ($target):"
    for binary in "${BINARIES[@]}"; do
        printf '  %-28s %8d bytes\n' "$binary" "$(stat -c %s "$out/$binary")"
    done
done
