#!/usr/bin/env bash
# Soaks each server model in turn: 64 connections at once for SECONDS,
# mixing whole fetches of files of several sizes (some by the real client),
# refusals, every kind of bad request and clients that leave early. Checks
# that every valid response is byte-exact, every bad request gets its status,
# and that afterwards the server holds the descriptors and processes it held
# before, has no zombie, and grew its resident memory by less than 1 MiB;
# prints those figures for each model.
#
#   ci/soak.sh [SECONDS]     (default 60, per model)
#
# The load is the ignored soak test in tests/faults.rs, run against the debug
# binaries `cargo test` builds.
set -euo pipefail

cd "$(dirname "$0")/.."

seconds=${1:-60}
if [[ ! $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: ci/soak.sh [SECONDS]" >&2
    exit 2
fi

# The test and the servers it starts run in a session of their own, so that
# an interrupted soak leaves none of them behind.
soak_pid=
trap '[[ -z $soak_pid ]] || kill -KILL -- "-$soak_pid" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM

cargo test --locked --test faults --no-run

started=$SECONDS
TCPFILE_SOAK_SECONDS=$seconds setsid \
    cargo test --locked --test faults -- --ignored --exact --nocapture --test-threads=1 \
    soak::soak_iterative soak::soak_parallel soak::soak_preforked soak::soak_evented &
soak_pid=$!
code=0
wait "$soak_pid" || code=$?
soak_pid=
echo "=== soak: $seconds s per model, $((SECONDS - started)) s in all, exit $code"
exit "$code"
