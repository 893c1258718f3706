#!/usr/bin/env bash
# Mutation testing with cargo-mutants: breaks the code of each FILE in many
# small ways, one mutant at a time, and checks that a test fails for each.
# Prints, per file, how many mutants the tests caught, missed, timed out on,
# or could not build (unviable), and lists the missed ones.
#
#   ci/mutants.sh [FILE...]
#
# FILE defaults to src/protocol.rs, src/served_dir.rs, src/cli.rs,
# src/destination.rs, src/conversation.rs, src/handler.rs, src/transfer.rs,
# src/lifecycle.rs and src/server/*.rs. Each file gets its own run, with the
# tests that exercise it (see tests_for below), so that a mutant costs one
# build and a short test run. Every mutant is built and tested in a copy of
# the tree under /tmp, never in this one; `cargo test` rebuilds the binaries
# the integration tests start, so the servers and the client under test carry
# the mutant.
#
# Results go to mutants.out/NAME/mutants.out/ (caught.txt, missed.txt,
# timeout.txt, unviable.txt, outcomes.json and a log per mutant), where NAME
# is the file's path below src/ with / as -, such as server-parallel. The
# build directory mutants.out/target is shared by the runs, one after another.
#
# Environment: MUTANTS_JOBS (default 1, at most 2 on a shared 2-core machine)
# mutants built and tested at once. A run over the four default files of the
# client's and the protocol's side takes about two hours on a busy 2-core
# machine. Installs cargo-mutants when it is missing. Run it as root, as CI
# runs the tests: some tests that kill mutants need root and skip otherwise.
# Exits 1 when any mutant was missed or timed out, 2 on a usage error.
set -euo pipefail

cd "$(dirname "$0")/.."

CARGO_MUTANTS_VERSION=27.1.0
jobs=${MUTANTS_JOBS:-1}
if [[ ! $jobs =~ ^[12]$ ]]; then
    echo "ci/mutants.sh: MUTANTS_JOBS must be 1 or 2" >&2
    exit 2
fi

if [[ $# -gt 0 ]]; then
    files=("$@")
else
    files=(src/protocol.rs src/served_dir.rs src/cli.rs src/destination.rs
        src/conversation.rs src/handler.rs src/transfer.rs src/lifecycle.rs src/server/*.rs)
fi
for file in "${files[@]}"; do
    if [[ ! -f $file || $file != src/*.rs ]]; then
        echo "ci/mutants.sh: $file is not a Rust file under src/" >&2
        exit 2
    fi
done

if ! cargo mutants --version 2>/dev/null | grep -qx "cargo-mutants $CARGO_MUTANTS_VERSION"; then
    echo "mutants: installing cargo-mutants $CARGO_MUTANTS_VERSION"
    cargo install cargo-mutants --locked --version "$CARGO_MUTANTS_VERSION"
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "mutants: WARNING: not root: the tests that need root skip, and mutants only they kill are missed" >&2
fi

# Tests bounded by wall-clock time. They guard the timeouts, the grace period
# and the signal handling of conversation.rs, handler.rs, transfer.rs and
# lifecycle.rs, and can fail on a loaded machine; for other files such a
# failure would count a mutant as caught by chance, so runs of other files
# leave them out.
timing_tests=(
    idle_connection_is_dropped_and_the_next_client_served
    withheld_reply_is_dropped_at_the_timeout
    stalled_reader_is_dropped_at_the_timeout
    trickled_request_is_dropped_at_the_timeout
    stop_ends_a_stalled_transfer_at_the_grace_period
    sigterm_while_idle_exits_promptly
    second_signal_ends_everything_at_once
    burst_of_connections_sees_no_syn_drop
    out_of_descriptors_sheds_a_burst_without_spinning
    stopped_and_continued_server_finishes_byte_exact
)
# Tests of the server's processes and of the send loop, which the files of the
# protocol, the served directory, the command line and the destination do not
# take part in.
server_process_tests=(
    a_file_over_4_gib_arrives_whole
    parallel_server_that_cannot_fork_closes_the_connection_and_goes_on
    preforked_server_that_cannot_start_every_worker_stops_those_it_started
)

skips() {
    local name
    for name in "$@"; do
        printf -- '--skip\n%s\n' "$name"
    done
}

# The `cargo test` arguments for the mutants of one file, one per line. cargo
# runs the library's unit tests first and stops at the first test binary that
# fails, so a mutant the unit tests catch costs no integration test.
tests_for() {
    case $1 in
        src/protocol.rs)
            # Pure: the unit tests and proptests judge every rule. client.rs
            # drives the client's side (the request it encodes, the responses
            # it judges, the statuses it names), serving.rs the server's
            # (decoding, the status of every bad request, the response), for
            # each server model.
            printf '%s\n' --lib --test client --test serving --
            skips "${timing_tests[@]}" "${server_process_tests[@]}"
            ;;
        src/served_dir.rs)
            # serving.rs: links, directories, FIFOs, sockets and devices, the
            # status of each failed open; faults.rs: a served directory removed
            # and made anew, a file truncated, replaced or deleted while sent;
            # process_models.rs: a DIR that is missing or not a directory.
            # Not the client's own faults (a full disk, a file size limit).
            printf '%s\n' --lib --test serving --test faults --test process_models --
            skips "${timing_tests[@]}" "${server_process_tests[@]}" \
                file_size_limit_breaks_the_transfer_and_keeps_no_file \
                full_disk_breaks_the_transfer_and_keeps_the_old_file
            ;;
        src/cli.rs)
            # The options and usage errors of the client (client.rs) and of
            # the servers (process_models.rs); verbosity is seen in the
            # client's output.
            printf '%s\n' --lib --test client --test process_models --
            skips "${timing_tests[@]}" "${server_process_tests[@]}"
            ;;
        src/destination.rs)
            # The client's output: client.rs (staging, stop signals, SIGKILL,
            # devices, FIFOs, stdout) and faults.rs (a full disk, a file size
            # limit, a transfer cut short: no partial file, the old one kept).
            printf '%s\n' --lib --test client --test faults --
            skips "${timing_tests[@]}" "${server_process_tests[@]}" \
                removed_directory_is_an_error_until_it_returns
            ;;
        *)
            # The connection handler, the send loop, the lifecycle and the
            # server models: everything, timing tests included, since these
            # files are what those tests time. Run on a quiet machine.
            printf '%s\n' --lib --tests
            ;;
    esac
}

# Mutants that cannot change behaviour, left out by name. `a | b` becomes
# `a ^ b`, which is the same value when a and b share no bit: in these files
# every `|` joins distinct open, resolve or flock flags. Other files keep them.
# Also `|` made `&` where the flags it drops cannot matter: O_DIRECTORY when
# opening `.` (openat2_works), or a folder that the next openat would refuse
# with the same ENOTDIR (AtomicFile::create's first open, named by its line).
equivalent_for() {
    case $1 in
        src/served_dir.rs)
            echo 'replace \| with \^ in |replace \| with & in openat2_works'
            ;;
        src/destination.rs)
            echo 'replace \| with \^ in |destination.rs:189:[0-9]+: replace \| with & in AtomicFile::create'
            ;;
        src/protocol.rs | src/cli.rs)
            echo 'replace \| with \^ in '
            ;;
    esac
}

# Lines in one of cargo-mutants' result lists.
count() {
    if [[ -f $results/$1.txt ]]; then
        wc -l < "$results/$1.txt"
    else
        echo 0
    fi
}

export CARGO_TARGET_DIR=$PWD/mutants.out/target
mkdir -p mutants.out
summary=()
failed=0
for file in "${files[@]}"; do
    name=${file#src/}
    name=${name%.rs}
    name=${name//\//-}
    mapfile -t test_args < <(tests_for "$file")
    # --gitignore: the copy leaves out dist/, fuzz/target/ and the like.
    options=(--file "$file" --jobs "$jobs" --no-shuffle --gitignore true
        --timeout-multiplier 3 --minimum-test-timeout 120
        --output "mutants.out/$name")
    equivalent=$(equivalent_for "$file")
    if [[ -n $equivalent ]]; then
        options+=(--exclude-re "$equivalent")
    fi
    echo
    echo "=== mutants: $file"
    echo "+ cargo mutants ${options[*]} -- ${test_args[*]}"
    started=$SECONDS
    code=0
    nice -n 10 cargo mutants "${options[@]}" -- "${test_args[@]}" || code=$?
    results=mutants.out/$name/mutants.out
    excluded=0
    if [[ -n $equivalent ]]; then
        excluded=$(cargo mutants --list --file "$file" | grep -cE "$equivalent" || true)
    fi
    summary+=("$(printf '%-22s %6s %6s %7s %8s %9s %6s s' "$file" \
        "$(count caught)" "$(count missed)" "$(count timeout)" \
        "$(count unviable)" "$excluded" "$((SECONDS - started))")")
    # 0: all caught; 2: some missed; 3: some timed out. Anything else (a
    # failing baseline, an interrupted run) stops here.
    case $code in
        0) ;;
        2 | 3) failed=1 ;;
        *)
            echo "mutants: cargo mutants failed on $file (exit $code); see $results/" >&2
            exit "$code"
            ;;
    esac
    if [[ -s $results/missed.txt ]]; then
        echo "missed in $file:"
        sed 's/^/  /' "$results/missed.txt"
    fi
done

echo
echo "=== mutants: summary (excluded: equivalent by construction, not built)"
printf '%-22s %6s %6s %7s %8s %9s %8s\n' file caught missed timeout unviable excluded time
printf '%s\n' "${summary[@]}"
exit "$failed"
