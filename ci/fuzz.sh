#!/usr/bin/env bash
# Fuzzes the request decoder and name rules, the client's response decoder,
# and the conversation every server model drives (fuzz/fuzz_targets/), each for a bounded
# time, with cargo-fuzz on the nightly toolchain. Prints the executions and
# crashes of every target and exits non-zero if any target crashed or hung;
# the input that did it is kept in fuzz/artifacts/TARGET/, to become a test
# of the code it broke.
#
#   ci/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
#
# The corpus grows in fuzz/corpus/TARGET/ from one run to the next; every run
# first writes the seeds below, built from the golden vectors of
# docs/PROTOCOL.md.
set -euo pipefail

cd "$(dirname "$0")/.."

seconds=${1:-60}
if [[ ! $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: ci/fuzz.sh [SECONDS_PER_TARGET]" >&2
    exit 2
fi
targets=(request response serve)

fuzzer_pid=
logs=$(mktemp -d)
cleanup() {
    if [[ -n $fuzzer_pid ]]; then
        kill "$fuzzer_pid" 2>/dev/null || true
        wait "$fuzzer_pid" 2>/dev/null || true
    fi
    rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! cargo +nightly --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Writes the bytes given in hex to FILE, then zero bytes up to LENGTH.
emit() {
    local file=$1 length=$2
    shift 2
    local hex escaped="" i
    hex=$(tr -d ' ' <<<"$*")
    for ((i = 0; i < ${#hex}; i += 2)); do
        escaped+="\\x${hex:i:2}"
    done
    {
        printf '%b' "$escaped"
        head -c $((length - ${#hex} / 2)) /dev/zero
    } >"$file"
}

name_hex() {
    printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'
}

# A 260-byte request: version, message type, name length, name.
request_hex() {
    local version=$1 type=$2 length=$3 name=$4
    printf '%02x %02x %02x %02x %s' "$version" "$type" $((length % 256)) $((length / 256)) \
        "$(name_hex "$name")"
}

# A seed of the serve target: the client sends the 260-byte request given in
# hex, then the reply byte if one is given.
conversation() {
    local name=$1 request=$2 reply=${3:-}
    local file=fuzz/corpus/serve/$name
    if [ -n "$reply" ]; then
        emit "$file" 261 "83 $request"
        printf '%b' "\\x$reply" >>"$file"
    else
        emit "$file" 261 "82 $request"
    fi
}

write_seeds() {
    local corpus=fuzz/corpus
    mkdir -p "$corpus/request" "$corpus/response" "$corpus/serve"

    # The golden request for g101.pdf; then each way a request can be refused.
    local golden="01 01 08 00 67 31 30 31 2e 70 64 66"
    emit "$corpus/request/golden-g101" 260 "$golden"
    emit "$corpus/request/version-2" 260 "$(request_hex 2 1 8 g101.pdf)"
    emit "$corpus/request/type-7" 260 "$(request_hex 1 7 8 g101.pdf)"
    emit "$corpus/request/length-0" 260 "$(request_hex 1 1 0 '')"
    emit "$corpus/request/length-256" 260 "$(request_hex 1 1 256 g101.pdf)"
    emit "$corpus/request/path" 260 "$(request_hex 1 1 13 ../etc/passwd)"
    emit "$corpus/request/dot-dot" 260 "$(request_hex 1 1 2 ..)"
    emit "$corpus/request/control-byte" 260 "$(request_hex 1 1 3 a)09 62"

    # The golden OK and not-found responses, and OK with a limit below the size.
    local ok="01 02 00 00 00 00 00 00 5e a7 11 00 00 00 00 00"
    emit "$corpus/response/golden-ok" 16 "$ok"
    emit "$corpus/response/golden-not-found" 16 "01 02 03"
    emit "$corpus/response/ok-over-limit" 25 "$ok 00 00 10 00 00 00 00 00 01"

    # Whole conversations from the client's side: a byte giving half the
    # length of what the client sends, the request, then the reply byte.
    conversation "golden-ready" "$golden" 03
    conversation "golden-refuse" "$golden" 04
    conversation "golden-no-reply" "$golden"
    conversation "big-ready" "$(request_hex 1 1 3 big)" 03
    conversation "shrinks-ready" "$(request_hex 1 1 7 shrinks)" 03
    conversation "missing" "$(request_hex 1 1 11 missing.pdf)"
    conversation "escape" "$(request_hex 1 1 6 escape)"
    conversation "subdir" "$(request_hex 1 1 6 subdir)"
    conversation "version-2" "$(request_hex 2 1 8 g101.pdf)"
    emit "$corpus/serve/half-request" 101 "32 $golden"
}

write_seeds

started=$SECONDS
echo "=== building the fuzz targets (nightly, AddressSanitizer)"
cargo +nightly fuzz build
echo "=== built in $((SECONDS - started)) s"

target_dir=$(cargo +nightly metadata --format-version 1 --no-deps --manifest-path fuzz/Cargo.toml |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
host=$(rustc +nightly -vV | sed -n 's/^host: //p')

declare -A executions crashes
failed=0
for target in "${targets[@]}"; do
    artifacts=fuzz/artifacts/$target
    mkdir -p "$artifacts"
    before=$(find "$artifacts" -type f | wc -l)
    log=$logs/$target.log
    touch "$logs/$target.start"
    echo "=== fuzzing $target for $seconds s"
    "$target_dir/$host/release/$target" \
        -max_total_time="$seconds" \
        -timeout=10 \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/" \
        "fuzz/corpus/$target" >"$log" 2>&1 &
    fuzzer_pid=$!
    code=0
    wait "$fuzzer_pid" || code=$?
    fuzzer_pid=
    executions[$target]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    crashes[$target]=$(($(find "$artifacts" -type f | wc -l) - before))
    if ((code != 0 || crashes[$target] > 0)); then
        failed=1
        echo "--- $target failed (exit $code); the fuzzer's last lines:"
        tail -n 40 "$log"
        find "$artifacts" -type f -newer "$logs/$target.start" -printf '    kept %p\n'
    fi
done

echo
echo "=== fuzzing: $seconds s per target"
printf '%-10s %14s %8s %14s\n' target executions crashes "corpus inputs"
for target in "${targets[@]}"; do
    printf '%-10s %14s %8s %14s\n' "$target" "${executions[$target]:-?}" "${crashes[$target]}" \
        "$(find "fuzz/corpus/$target" -type f | wc -l)"
done
if ((failed)); then
    echo "a fuzz target crashed or hung: its input is kept in fuzz/artifacts/TARGET/;" >&2
    echo "'cargo +nightly fuzz run TARGET INPUT' repeats it; add it as a test of the code it broke" >&2
    exit 1
fi
