#!/usr/bin/env bash
# Builds the lab's images from the static binaries in dist/<arch>/ and prints
# their sizes; fails when a FROM scratch image is over 3 MiB.
#
#   docker/build-images.sh [ARCH]
#
# ARCH is amd64 or arm64, by default the Docker engine's own. For the engine's
# own architecture it builds tcpfile/server-{iterative,parallel,preforked,evented},
# tcpfile/client and tcpfile/tcpdump, tagged latest and VERSION-ARCH. For the
# other architecture it builds only the FROM scratch images, tagged
# VERSION-ARCH, to carry to such a machine (docker save | docker load): those
# need no emulation to build, but the tcpdump image runs apt.
#
# Run it from anywhere, after ci/build-static.sh and, for the tcpdump image on a
# machine without a registry, ci/debian-base-image.sh.
set -euo pipefail

cd "$(dirname "$0")/.."
SCRATCH_LIMIT=$((3 * 1024 * 1024))
SERVER_MODES=(iterative parallel preforked evented)
SOURCE_LABEL=org.opencontainers.image.source=https://github.com/tcpfile/tcpfile

engine_arch=$(docker version -f '{{.Server.Arch}}')
arch=${1:-$engine_arch}
case "$arch" in
    amd64 | arm64) ;;
    *) echo "error: unsupported architecture: $arch (amd64 or arm64)" >&2; exit 1 ;;
esac
if [ ! -x "dist/$arch/tcpfile-client" ]; then
    echo "error: dist/$arch/ holds no binaries; run ci/build-static.sh first" >&2
    exit 1
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
revision=${TCPFILE_REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
native=false
[ "$arch" = "$engine_arch" ] && native=true

# build IMAGE DOCKERFILE [DOCKER BUILD ARGUMENT...]
build() {
    local image=$1 dockerfile=$2
    shift 2
    local tags=(--tag "$image:$version-$arch")
    if $native; then
        tags+=(--tag "$image:latest")
    fi
    echo "building $image ($arch)"
    local output
    if ! output=$(docker build --file "$dockerfile" "${tags[@]}" \
        --platform "linux/$arch" \
        --build-arg "TARGETARCH=$arch" \
        --build-arg "VERSION=$version" \
        --build-arg "REVISION=$revision" \
        "$@" . 2>&1); then
        echo "$output" >&2
        return 1
    fi
}

scratch_images=()
# The classic builder's cache ignores the platform: a COPY layer cached for
# one architecture would be reused for the other and carry the wrong platform.
# These images are a few COPY steps, so they are always built afresh.
for mode in "${SERVER_MODES[@]}"; do
    build "tcpfile/server-$mode" docker/server.Dockerfile --no-cache --target "$mode"
    scratch_images+=("tcpfile/server-$mode")
done
build tcpfile/client docker/client.Dockerfile --no-cache
scratch_images+=(tcpfile/client)

all_images=("${scratch_images[@]}")
if $native; then
    build tcpfile/tcpdump docker/tcpdump.Dockerfile
    all_images+=(tcpfile/tcpdump)
fi

# What rebuilding left untagged: the images the tags named before, and the
# server stages built on the way to another --target. Only this project's
# images carry its source label.
docker image ls --quiet --filter dangling=true --filter "label=$SOURCE_LABEL" |
    xargs --no-run-if-empty docker image rm >/dev/null 2>&1 || true

# Each FROM scratch image must be for the architecture it was built for,
# hold exactly the binaries in dist/<arch>/ and no shell.
verify() {
    local reference=$1
    local platform container unpacked
    platform=$(docker image inspect -f '{{.Os}}/{{.Architecture}}' "$reference")
    if [ "$platform" != "linux/$arch" ]; then
        echo "error: $reference is for $platform, not linux/$arch" >&2
        return 1
    fi
    unpacked=$(mktemp -d)
    container=$(docker create "$reference")
    docker export "$container" | tar -x -C "$unpacked"
    docker rm "$container" >/dev/null
    local status=0
    if find "$unpacked" -name sh -o -name bash -o -name busybox | grep -q .; then
        echo "error: $reference contains a shell" >&2
        status=1
    fi
    local binary
    for binary in "$unpacked"/usr/local/bin/*; do
        if ! grep -qx "$(sha256sum < "$binary" | cut -d' ' -f1)  $(basename "$binary")" "dist/$arch/SHA256SUMS"; then
            echo "error: $reference holds a $(basename "$binary") that is not the one in dist/$arch/" >&2
            status=1
        fi
    done
    rm -rf "$unpacked"
    return "$status"
}

for image in "${scratch_images[@]}"; do
    verify "$image:$version-$arch"
done

too_large=0
printf '%-28s %-18s %12s\n' IMAGE TAG BYTES
for image in "${all_images[@]}"; do
    size=$(docker image inspect -f '{{.Size}}' "$image:$version-$arch")
    printf '%-28s %-18s %12d\n' "$image" "$version-$arch" "$size"
done
for image in "${scratch_images[@]}"; do
    size=$(docker image inspect -f '{{.Size}}' "$image:$version-$arch")
    if [ "$size" -gt "$SCRATCH_LIMIT" ]; then
        echo "error: $image:$version-$arch is $size bytes, over the limit of $SCRATCH_LIMIT" >&2
        too_large=1
    fi
done
exit "$too_large"
