#!/usr/bin/env bash
# Lays out the static binaries of dist/<arch>/ as a release's files: one file
# per binary and architecture, tcpfile-<program>-<arch> (tcpfile-client-arm64,
# tcpfile-server-preforked-armv7, ...), and one SHA256SUMS for them all, so
# that a user downloads the two or three files a machine needs and checks them
# with `sha256sum --check --ignore-missing SHA256SUMS`.
#
#   ci/release-assets.sh OUT_DIR [ARCH...]
#
# ARCH defaults to every dist/<arch>/ that holds a SHA256SUMS; each is checked
# against it first. The workflow's release job publishes OUT_DIR; ci/arm-lab.sh
# serves it on 127.0.0.1 to run the README's download commands.
set -euo pipefail

cd "$(dirname "$0")/.."

if [ "$#" -lt 1 ]; then
    echo "usage: ci/release-assets.sh OUT_DIR [ARCH...]" >&2
    exit 1
fi
out=$1
shift
if [ "$#" -gt 0 ]; then
    arches=("$@")
else
    arches=()
    for sums in dist/*/SHA256SUMS; do
        [ -f "$sums" ] && arches+=("$(basename "$(dirname "$sums")")")
    done
fi
if [ "${#arches[@]}" -eq 0 ]; then
    echo "error: no dist/<arch>/SHA256SUMS; run ci/build-static.sh first" >&2
    exit 1
fi

mkdir -p "$out"
for arch in "${arches[@]}"; do
    (cd "dist/$arch" && sha256sum --quiet --check --strict SHA256SUMS)
    while read -r _ binary; do
        install -m 0755 "dist/$arch/$binary" "$out/$binary-$arch"
    done < "dist/$arch/SHA256SUMS"
done
(cd "$out" && find . -maxdepth 1 -type f -name 'tcpfile-*' -printf '%f\n' | sort | xargs sha256sum > SHA256SUMS)
echo "$out: $(grep -c . "$out/SHA256SUMS") binaries for ${arches[*]}, and SHA256SUMS"
