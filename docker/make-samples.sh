#!/usr/bin/env bash
# Makes the lab's sample files, as compose's one-shot "prepare" service.
#
#   tcpfile-make-samples SAMPLES_DIR
#
# SAMPLES_DIR gets the files the server offers, unless they are already there
# intact: an empty file, a short text, two random binaries of several MiB, and
# SHA256SUMS listing them all.
set -euo pipefail

if [ "$#" -ne 1 ]; then
    echo "usage: tcpfile-make-samples SAMPLES_DIR" >&2
    exit 1
fi
samples=$1

# SHA256SUMS is written last, so a set that was cut short is made again.
if [ -f "$samples/SHA256SUMS" ] && (cd "$samples" && sha256sum --quiet --check SHA256SUMS); then
    echo "the samples in $samples are intact"
else
    umask 022
    mkdir -p "$samples"
    cd "$samples"
    rm -f SHA256SUMS
    : > empty.txt
    cat > hello.txt <<'EOF'
Hello from the tcpfile lab.

This file came over one TCP connection: a 260-byte request, a 16-byte
response, a 1-byte reply, then the content, then the server's FIN.
EOF
    # Sizes that are not multiples of the server's chunk or of a segment, so
    # the last piece of each transfer is a short one.
    head -c $((5 * 1024 * 1024 + 4321)) /dev/urandom > random.bin
    head -c $((12 * 1024 * 1024 + 17)) /dev/urandom > big.bin
    sha256sum empty.txt hello.txt random.bin big.bin > SHA256SUMS
    cd - >/dev/null
    echo "made the samples in $samples:"
fi
(cd "$samples" && ls -l)
