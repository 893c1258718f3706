#!/usr/bin/env bash
# Runs the whole test suite the way `cross test` runs it on GitHub: as an
# unprivileged user (1001:1001) inside a container with Docker's default
# capabilities and seccomp profile. The tests are the static x86_64 (musl)
# build, so they run in any container; the checkout is mounted read-only at
# its own path, where the tests find the binaries they start. Tests that need
# root must say that they skip, never fail; the skips are listed.
#
#   ci/unprivileged-tests.sh
#
# Needs Docker (ci/docker-engine.sh) and the debian:bookworm-slim image
# (ci/debian-base-image.sh makes it where no registry answers).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
TARGET=x86_64-unknown-linux-musl
USER_SPEC=1001:1001
IMAGE=debian:bookworm-slim
# Bound on the whole run, in seconds.
LIMIT=900

ci/docker-engine.sh
docker image inspect "$IMAGE" >/dev/null 2>&1 || ci/debian-base-image.sh

echo "building the test binaries for $TARGET"
executables=$(cargo test --locked --target "$TARGET" --tests --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") and message["profile"]["test"]:
        print(message["executable"])
')
[ -n "$executables" ] || { echo "error: no test binaries were built" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 0777 "$work"
: > "$work/skips"
chmod 0666 "$work/skips"

# One container for the whole suite; each test binary in turn, all of them
# even when one fails. Expanded in the container, not here.
# shellcheck disable=SC2016
script='
failed=0
for executable in "$@"; do
    echo "=== $(basename "$executable")"
    "$executable" --test-threads=2 || failed=$((failed + 1))
done
exit "$failed"'
status=0
# shellcheck disable=SC2086 # one argument per test binary
timeout "$LIMIT" docker run --rm \
    --user "$USER_SPEC" \
    --volume "$REPO:$REPO:ro" \
    --volume "$work:/results" \
    --env TCPFILE_SKIP_LOG=/results/skips \
    --workdir /tmp \
    "$IMAGE" bash -c "$script" unprivileged $executables || status=$?

skipped=$(grep -c . "$work/skips" || true)
echo
echo "=== as $USER_SPEC with Docker's default capabilities: $skipped checks skipped"
sed 's/^/  /' "$work/skips"
# Counted with the other stages' skips when ci/test.sh runs this.
if [ -n "${TCPFILE_SKIP_LOG:-}" ]; then
    sed 's/^SKIPPED /SKIPPED (as 1001) /' "$work/skips" >> "$TCPFILE_SKIP_LOG"
fi
if [ "$status" -ne 0 ]; then
    echo "error: $status test binaries failed as an unprivileged user" >&2
    exit 1
fi
echo "unprivileged run: every test binary passed"
