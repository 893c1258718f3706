#!/usr/bin/env bash
# The whole test run, as CI runs it: lints, the test suite natively and for
# aarch64 and armv7 under qemu, the static builds and the cross-architecture
# check, the compose end-to-end run for each server model, the VM checks, and
# short fuzz, soak and benchmark runs. Installs what a fresh machine lacks.
#
#   ci/test.sh
set -euo pipefail

cd "$(dirname "$0")/.."

stage() {
    local name=$1
    shift
    local started=$SECONDS
    echo
    echo "=== $name"
    "$@"
    echo "=== $name: passed in $((SECONDS - started)) s"
}

native_tests() {
    cargo test --locked
}

# The static x86_64 build is what ships, and musl differs from glibc in ways
# the tests can see (its SOMAXCONN, its resolver).
musl_tests() {
    cargo test --locked --target x86_64-unknown-linux-musl --tests
}

aarch64_tests() {
    TCPFILE_TEST_RUNNER=qemu-aarch64-static \
        cargo test --locked --target aarch64-unknown-linux-musl
}

# No prebuilt std for 32-bit ARM here: ci/cargo-build-std.sh builds it with
# nightly. qemu emulates a Cortex-A7, the CPU of a Raspberry Pi 2, the oldest
# board the target is for, so an instruction it lacks fails the run.
armv7_tests() {
    QEMU_CPU=cortex-a7 TCPFILE_TEST_RUNNER=qemu-arm-static \
        ci/cargo-build-std.sh armv7-unknown-linux-musleabihf test --locked
}

stage "setup" ci/setup.sh
stage "lint" ci/lint.sh
stage "tests (x86_64)" native_tests
stage "tests (x86_64 musl)" musl_tests
stage "tests (aarch64 under qemu)" aarch64_tests
stage "tests (armv7 under qemu)" armv7_tests
stage "static builds" ci/build-static.sh
stage "cross-architecture check" ci/cross-arch.sh
stage "compose end to end" ci/compose-e2e.sh
stage "VM checks" ci/vm-checks.sh
stage "fuzz (20 s per target)" ci/fuzz.sh 20
stage "soak (10 s per model)" ci/soak.sh 10
stage "benchmark smoke run" ci/bench.sh --smoke
echo
echo "all checks passed in $SECONDS s"
