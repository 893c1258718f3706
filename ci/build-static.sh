#!/usr/bin/env bash
# Builds the static release binaries for each target into dist/<arch>/ with a
# SHA256SUMS file, and checks every binary: statically linked, every LOAD
# segment aligned for the largest page size its kernels use, and `--version`
# naming the target and the commit (run under qemu for a foreign architecture,
# emulating the oldest CPU the target is for).
#
#   ci/build-static.sh [TARGET...]
#
# TARGET defaults to all of them:
#   x86_64-unknown-linux-musl        dist/amd64
#   aarch64-unknown-linux-musl       dist/arm64   (64-bit ARM: Raspberry Pi 3, 4, 5)
#   armv7-unknown-linux-musleabihf   dist/armv7   (32-bit ARMv7, hard float: Pi 2 and later)
#   arm-unknown-linux-musleabi       dist/armv6   (32-bit ARMv6, soft float: Pi 1, Zero)
# x86_64 and aarch64 are built with rustup's target (its std and musl) and the
# toolchain's rust-lld (see .cargo/config.toml), here and on GitHub alike, so
# the binaries a release publishes are built the way the ones tested here
# are. The 32-bit ARM targets, which rustup has no standard library for here,
# are built with nightly's build-std against Debian's musl
# (ci/cargo-build-std.sh) where ci/setup.sh installed it, and with `cross`
# elsewhere (on GitHub). Needs readelf (binutils) and file.
set -euo pipefail

cd "$(dirname "$0")/.."
BINARIES=(tcpfile-client tcpfile-server-iterative tcpfile-server-parallel tcpfile-server-preforked
    tcpfile-server-evented)

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(
        x86_64-unknown-linux-musl
        aarch64-unknown-linux-musl
        armv7-unknown-linux-musleabihf
        arm-unknown-linux-musleabi
    )
fi

for tool in readelf file; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "error: $tool is missing (ci/setup.sh installs it)" >&2
        exit 1
    }
done

dist_arch() {
    case "$1" in
        x86_64-unknown-linux-musl) echo amd64 ;;
        aarch64-unknown-linux-musl) echo arm64 ;;
        armv7-unknown-linux-musleabihf) echo armv7 ;;
        arm-unknown-linux-musleabi) echo armv6 ;;
        *) echo "unsupported target: $1" >&2; return 1 ;;
    esac
}

# The smallest alignment every LOAD segment needs: the largest page size of
# the kernels the target runs on. aarch64 kernels use 4, 16 (Raspberry Pi 5)
# or 64 KiB pages; x86_64 and 32-bit ARM ones use 4 KiB.
min_load_alignment() {
    case "$1" in
        aarch64-*) echo $((64 * 1024)) ;;
        *) echo 4096 ;;
    esac
}

# Sets $runner to the command prefix that runs a binary of the target on
# this machine for the version check: none, or qemu emulating the target's
# oldest CPU (the ARM1176 of a Pi 1 or Zero, the Cortex-A7 of a Pi 2). Sets
# $can_run to false when qemu is missing.
set_runner() {
    local target=$1 qemu cpu
    runner=()
    can_run=true
    case "$target" in
        "$(uname -m)"-*) return ;;
        x86_64-*) qemu=qemu-x86_64-static cpu="" ;;
        aarch64-*) qemu=qemu-aarch64-static cpu="" ;;
        armv7-*) qemu=qemu-arm-static cpu=cortex-a7 ;;
        arm-*) qemu=qemu-arm-static cpu=arm1176 ;;
    esac
    if ! command -v "$qemu" >/dev/null 2>&1; then
        can_run=false
    elif [ -n "$cpu" ]; then
        runner=(env "QEMU_CPU=$cpu" "$qemu")
    else
        runner=("$qemu")
    fi
}

# Whether Debian's musl for 32-bit ARM is here for ci/cargo-build-std.sh.
debian_musl_for() {
    case "$1" in
        armv7-*) [ -f /usr/lib/arm-linux-musleabihf/libc.a ] ;;
        arm-*) [ -f /usr/lib/arm-linux-musleabi/libc.a ] ;;
    esac
}

# Docker builds have no .git; the commit can come from the environment.
if [ -z "${TCPFILE_COMMIT:-}" ] && git rev-parse --git-dir >/dev/null 2>&1; then
    TCPFILE_COMMIT=$(git rev-parse --short=12 HEAD)
    export TCPFILE_COMMIT
fi

for target in "${targets[@]}"; do
    arch=$(dist_arch "$target")
    started=$SECONDS
    case "$target" in
        armv7-* | arm-*)
            if debian_musl_for "$target" || ! command -v cross >/dev/null 2>&1; then
                echo "building $target with nightly's -Zbuild-std and rust-lld"
                ci/cargo-build-std.sh "$target" build --release --locked
            else
                echo "building $target with cross"
                cross build --release --locked --target "$target"
            fi
            ;;
        *)
            rustup target add "$target" >/dev/null
            echo "building $target with cargo and rust-lld"
            cargo build --release --locked --target "$target"
            ;;
    esac
    built_in=$((SECONDS - started))

    out="dist/$arch"
    rm -rf "$out"
    mkdir -p "$out"
    set_runner "$target"
    if ! $can_run; then
        echo "WARNING: no qemu here to run $target binaries: --version is NOT checked" >&2
    fi
    commit=${TCPFILE_COMMIT:-unknown}
    min_alignment=$(min_load_alignment "$target")
    smallest_alignment=""
    for binary in "${BINARIES[@]}"; do
        cp "${CARGO_TARGET_DIR:-target}/$target/release/$binary" "$out/"
        description=$(file -b "$out/$binary")
        case "$description" in
            *"statically linked"* | *"static-pie linked"*) ;;
            *) echo "error: $out/$binary is not statically linked: $description" >&2; exit 1 ;;
        esac
        mapfile -t alignments < <(readelf -lW "$out/$binary" | awk '$1 == "LOAD" { print $NF }')
        if [ "${#alignments[@]}" -eq 0 ]; then
            echo "error: readelf found no LOAD segment in $out/$binary" >&2
            exit 1
        fi
        for alignment in "${alignments[@]}"; do
            alignment=$((alignment))
            if [ "$alignment" -lt "$min_alignment" ]; then
                echo "error: $out/$binary has a LOAD segment aligned to $alignment bytes;" \
                    "$target needs at least $min_alignment" >&2
                exit 1
            fi
            if [ -z "$smallest_alignment" ] || [ "$alignment" -lt "$smallest_alignment" ]; then
                smallest_alignment=$alignment
            fi
        done
        if $can_run; then
            version=$("${runner[@]}" "$out/$binary" --version)
            case "$version" in
                *"($target, commit $commit)"*) ;;
                *) echo "error: $out/$binary --version does not name $target and commit $commit: $version" >&2; exit 1 ;;
            esac
        fi
    done
    (cd "$out" && sha256sum "${BINARIES[@]}" > SHA256SUMS)
    echo "$out ($target), built in $built_in s:"
    echo "  LOAD segments aligned to $((smallest_alignment / 1024)) KiB or more (needed: $((min_alignment / 1024)) KiB)"
    if $can_run; then
        echo "  --version names $target and commit $commit${runner[*]:+ (under ${runner[*]})}"
    fi
    for binary in "${BINARIES[@]}"; do
        printf '  %-28s %8d bytes\n' "$binary" "$(stat -c %s "$out/$binary")"
    done
done
