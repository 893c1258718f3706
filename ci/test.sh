#!/usr/bin/env bash
# The whole test run, as CI runs it, in stages; installs what a fresh machine
# lacks. With stage names, runs only those (in the order of the lists below).
#
#   ci/test.sh                 every stage of STAGES, as .ci/run does
#   ci/test.sh --all           those and the long ones of LONG_STAGES
#   ci/test.sh STAGE...        some of them, e.g. ci/test.sh lint tests
#   ci/test.sh --list          the stages, one per line
#
# Every stage prints its time; the tests that cannot run somewhere (no root,
# no IPv6, an emulator) say so, and each stage lists its skips.
set -euo pipefail

cd "$(dirname "$0")/.."

# name|what it is|command
STAGES=(
    "setup|install what is missing|ci/setup.sh"
    "lint|rustfmt, clippy, shellcheck, hadolint, actionlint, luacheck|ci/lint.sh"
    "tests|the test suite, x86_64, as root|native_tests"
    "tests-unprivileged|the test suite, static x86_64, as user 1001 in a container|ci/unprivileged-tests.sh"
    "tests-aarch64|the test suite, aarch64 under qemu|aarch64_tests"
    "tests-armv7|the test suite, armv7 under qemu|armv7_tests"
    "static|static release binaries for every target|ci/build-static.sh"
    "cross-arch|arm64 and amd64 servers and clients together|ci/cross-arch.sh"
    "dissector|the Wireshark dissector|env TCPFILE_BIN_DIR=dist/amd64 ci/dissector.sh"
    "net-faults|drops, a slow link and a partition, in namespaces and in the compose lab|env TCPFILE_BIN_DIR=dist/amd64 ci/net-faults.sh"
    "compose|the compose lab, every model, compose v2|env TCPFILE_COMPOSE=v2 ci/compose-e2e.sh"
    "compose-v1|the compose lab, one model, compose v1|env TCPFILE_COMPOSE=v1 ci/compose-e2e.sh evented"
    "swarm|the lab as a Swarm stack, single-node swarm|ci/swarm-e2e.sh"
    "registry|multi-arch images through a local registry, the lab on arm64 and armv7|registry_and_arm_lab"
    "make-up|make up as a user in the docker group|ci/make-up-unprivileged.sh"
    "vm-checks|the VM lab's files, checked in containers|ci/vm-checks.sh"
    "vm-amd64|the VM lab booted under qemu, amd64|ci/vm-boot.sh amd64"
    "vm-arm64|the VM lab booted under qemu, arm64|ci/vm-boot.sh arm64"
    "fuzz|20 s per fuzz target|ci/fuzz.sh 20"
    "soak|10 s per model|ci/soak.sh 10"
    "bench|the benchmark's smoke run|ci/bench.sh --smoke"
)
# Too long for a 2-core CI run that must end within the hour: mutation
# testing takes hours. Scheduled CI runs it (.github/workflows/ci.yml), and so
# does --all.
LONG_STAGES=(
    "mutants|mutation testing of the protocol, the served directory, the options and the destination|ci/mutants.sh src/protocol.rs src/served_dir.rs src/cli.rs src/destination.rs"
)

native_tests() {
    cargo test --locked
}

aarch64_tests() {
    TCPFILE_TEST_RUNNER=qemu-aarch64-static \
        cargo test --locked --target aarch64-unknown-linux-musl
}

# No prebuilt std for 32-bit ARM here: ci/cargo-build-std.sh builds it with
# nightly, and with the test profile's opt-level 0 unless told otherwise:
# optimised, std and the dependencies make the emulated suite four times
# faster (2.5 instead of 9.5 minutes here). qemu emulates a Cortex-A7, the CPU
# of a Raspberry Pi 2, the oldest board the target is for, so an instruction
# it lacks fails the run.
armv7_tests() {
    QEMU_CPU=cortex-a7 TCPFILE_TEST_RUNNER=qemu-arm-static \
        ci/cargo-build-std.sh armv7-unknown-linux-musleabihf test --locked \
        --config 'profile.dev.package."*".opt-level=2'
}

# The images of the three platforms through a registry of its own, then the
# lab with the arm64 and with the armv7 images, the ones it holds, under qemu.
registry_and_arm_lab() {
    ci/registry-e2e.sh
    ci/arm-lab.sh arm64
    ci/arm-lab.sh armv7
}

skip_log=$(mktemp -t tcpfile-skips.XXXXXX)
trap 'rm -f "$skip_log" "$cpu_log" "$cpu_log.before" "$cpu_log.after"' EXIT
export TCPFILE_SKIP_LOG=$skip_log

# CPU seconds the finished children of this shell have used, user and system:
# unlike the wall time, hardly changed by what else the machine runs. `times`
# must run in this shell itself: a subshell has children of its own.
cpu_log=$(mktemp -t tcpfile-cpu.XXXXXX)
children_cpu() {
    times > "$cpu_log"
    tail -n 1 "$cpu_log" | awk '{
        total = 0
        for (i = 1; i <= 2; i++) { split($i, part, /[ms]/); total += part[1] * 60 + part[2] }
        printf "%d", total
    }'
}

stage() {
    local name=$1 command=$2
    local started=$SECONDS skips_before cpu_before
    skips_before=$(wc -l < "$skip_log")
    children_cpu > "$cpu_log.before"
    cpu_before=$(< "$cpu_log.before")
    echo
    echo "=== $name"
    # The command is one of the lines above: words, no quoting.
    # shellcheck disable=SC2086
    $command
    local skipped=$(($(wc -l < "$skip_log") - skips_before))
    if [ "$skipped" -gt 0 ]; then
        echo "=== $name: $skipped checks skipped:"
        tail -n "$skipped" "$skip_log" | sed 's/^/  /'
    fi
    children_cpu > "$cpu_log.after"
    echo "=== $name: passed in $((SECONDS - started)) s ($(($(< "$cpu_log.after") - cpu_before)) s of CPU)"
}

if [ "${1:-}" = --list ]; then
    for entry in "${STAGES[@]}"; do
        IFS='|' read -r name what _ <<< "$entry"
        printf '%-20s %s\n' "$name" "$what"
    done
    for entry in "${LONG_STAGES[@]}"; do
        IFS='|' read -r name what _ <<< "$entry"
        printf '%-20s %s (long: --all or by name)\n' "$name" "$what"
    done
    exit 0
fi
run=("${STAGES[@]}")
if [ "${1:-}" = --all ]; then
    shift
    run+=("${LONG_STAGES[@]}")
fi
names=()
for entry in "${STAGES[@]}" "${LONG_STAGES[@]}"; do
    names+=("${entry%%|*}")
done
for wanted in "$@"; do
    printf '%s\n' "${names[@]}" | grep -qx -- "$wanted" ||
        { echo "error: no stage named $wanted (ci/test.sh --list)" >&2; exit 2; }
done
if [ "$#" -gt 0 ]; then
    run=("${STAGES[@]}" "${LONG_STAGES[@]}")
fi

for entry in "${run[@]}"; do
    IFS='|' read -r name _ command <<< "$entry"
    if [ "$#" -eq 0 ] || printf '%s\n' "$@" | grep -qx -- "$name"; then
        stage "$name" "$command"
    fi
done
echo
echo "checks skipped: $(wc -l < "$skip_log")"
echo "all checks passed in $SECONDS s"
