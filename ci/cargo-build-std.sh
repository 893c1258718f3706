#!/usr/bin/env bash
# Runs a cargo command for a 32-bit ARM musl target whose standard library
# rustup cannot install here: the nightly toolchain compiles std from its
# rust-src component (-Zbuild-std), and rust-lld links the result statically
# against Debian's musl for the target and GCC's unwinder for it.
#
#   ci/cargo-build-std.sh TARGET CARGO_COMMAND [ARGS...]
#   ci/cargo-build-std.sh armv7-unknown-linux-musleabihf build --release --locked
#   TCPFILE_TEST_RUNNER=qemu-arm-static ci/cargo-build-std.sh arm-unknown-linux-musleabi test --locked
#
# TARGET is armv7-unknown-linux-musleabihf (hard float: ARMv7, Debian's armhf)
# or arm-unknown-linux-musleabi (soft float: ARMv6, Debian's armel). The
# linker and the qemu runner come from .cargo/config.toml; ci/setup.sh
# installs the packages and the nightly rust-src this needs.
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "$#" -lt 2 ]; then
    echo "usage: ci/cargo-build-std.sh TARGET CARGO_COMMAND [ARGS...]" >&2
    exit 2
fi
target=$1
command=$2
shift 2

# The C runtime comes from Debian's musl-dev for the target's architecture,
# the unwinder from GCC's libgcc_eh for it (libgcc-N-dev), which needs nothing
# from glibc. Debian builds no LLVM libunwind for armel, and its armhf one
# calls glibc's __fprintf_chk, which musl lacks.
case "$target" in
    armv7-unknown-linux-musleabihf) triplet=arm-linux-gnueabihf musl=/usr/lib/arm-linux-musleabihf ;;
    arm-unknown-linux-musleabi) triplet=arm-linux-gnueabi musl=/usr/lib/arm-linux-musleabi ;;
    *)
        echo "error: $target is not a target this script builds (armv7-unknown-linux-musleabihf, arm-unknown-linux-musleabi)" >&2
        exit 2
        ;;
esac
unwinder=$(find /usr/lib/gcc/"$triplet" -name libgcc_eh.a 2>/dev/null | sort -V | tail -n 1)

for file in "$musl/crt1.o" "$musl/libc.a" "${unwinder:-/usr/lib/gcc/$triplet/N/libgcc_eh.a}"; do
    if [ ! -f "$file" ]; then
        echo "error: $file is missing: run ci/setup.sh as root" >&2
        exit 1
    fi
done
if ! rustup component list --installed --toolchain nightly 2>/dev/null | grep -q '^rust-src'; then
    echo "error: the nightly toolchain with rust-src is missing: run ci/setup.sh" >&2
    exit 1
fi

# Rust's std for musl links the unwinder as -lunwind, so libgcc_eh.a gets a
# directory of its own where it has that name (and Debian's glibc directory
# for the architecture stays off the search path). The directory is named
# after GCC's version, so that a new one changes the flags and cargo relinks.
unwind_dir="${CARGO_TARGET_DIR:-target}/$target/libgcc_eh-$(basename "$(dirname "$unwinder")")"
mkdir -p "$unwind_dir"
ln -sfn "$unwinder" "$unwind_dir/libunwind.a"
unwind_dir=$(cd "$unwind_dir" && pwd)

# rust-lld adds no C runtime start files by itself: crt1.o and crti.o come
# first and crtn.o last, as a C compiler driver would place them.
rustflags=(
    -C link-self-contained=no
    -L "native=$musl"
    -L "native=$unwind_dir"
    -Z "pre-link-arg=$musl/crt1.o"
    -Z "pre-link-arg=$musl/crti.o"
    -C "link-arg=$musl/crtn.o"
)
variable="CARGO_TARGET_$(tr '[:lower:]-' '[:upper:]_' <<< "$target")_RUSTFLAGS"
export "$variable=${rustflags[*]}"

exec cargo +nightly "$command" -Zbuild-std=std,panic_abort --target "$target" "$@"
