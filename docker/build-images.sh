#!/usr/bin/env bash
# Builds the lab's images from the static binaries in dist/<arch>/ and prints
# their sizes; fails when a FROM scratch image is over 3 MiB.
#
#   docker/build-images.sh [ARCH]
#
# ARCH is amd64 or arm64, by default the Docker engine's own. For the engine's
# own architecture it builds localhost/tcpfile/server-{iterative,parallel,
# preforked,evented}, localhost/tcpfile/client and localhost/tcpfile/tcpdump,
# tagged latest and VERSION-ARCH. For the
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

# The images' names: never a bare name, which a pull would look up on Docker
# Hub. The lab (compose.yaml) finds them there by default.
PREFIX=localhost/tcpfile
INPUTS_LABEL=org.tcpfile.inputs

# What an image is made of, as one hash: a build with the same inputs would
# make the same image, so it is not made again.
inputs_of() {
    local dockerfile=$1
    shift
    {
        echo "$arch $version $*"
        cat "$dockerfile" docker/passwd docker/group
        case "$dockerfile" in
            docker/tcpdump.Dockerfile)
                docker image inspect -f '{{.Id}}' debian:bookworm-slim
                cat docker/capture.sh docker/make-samples.sh docker/tcpfile-flows.sh
                ;;
            *) cat "dist/$arch/SHA256SUMS" ;;
        esac
    } | sha256sum | cut -d' ' -f1
}

# build NAME DOCKERFILE [DOCKER BUILD ARGUMENT...]: builds $PREFIX/NAME for
# this architecture, tagged VERSION-ARCH (and latest for the engine's own),
# unless an image of the same inputs exists, which is tagged instead. An image
# the tags named before and no tag names now is removed: only what this
# build made obsolete, never another lab's images.
build() {
    local image=$PREFIX/$1 dockerfile=$2
    shift 2
    local tags=("$image:$version-$arch")
    if $native; then
        tags+=("$image:latest")
    fi
    local inputs before=() tag
    inputs=$(inputs_of "$dockerfile" "$@")
    for tag in "${tags[@]}"; do
        before+=("$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)")
    done
    local existing
    existing=$(docker image ls --quiet --no-trunc --filter "label=$INPUTS_LABEL=$inputs" "$image" | head -n 1)
    if [ -n "$existing" ]; then
        echo "$image ($arch): unchanged"
        for tag in "${tags[@]}"; do
            docker tag "$existing" "$tag"
        done
    else
        echo "building $image ($arch)"
        local output tag_options=()
        for tag in "${tags[@]}"; do
            tag_options+=(--tag "$tag")
        done
        if ! output=$(docker build --file "$dockerfile" "${tag_options[@]}" \
            --platform "linux/$arch" \
            --label "$INPUTS_LABEL=$inputs" \
            --build-arg "TARGETARCH=$arch" \
            --build-arg "VERSION=$version" \
            --build-arg "REVISION=$revision" \
            "$@" . 2>&1); then
            echo "$output" >&2
            return 1
        fi
    fi
    local old
    for old in "${before[@]}"; do
        if [ -n "$old" ] && [ -z "$(docker image inspect -f '{{join .RepoTags " "}}' "$old" 2>/dev/null)" ]; then
            docker image rm "$old" >/dev/null 2>&1 || true
        fi
    done
}

scratch_images=()
# The classic builder's cache ignores the platform: a COPY layer cached for
# one architecture would be reused for the other and carry the wrong platform.
# So what is built is built afresh; what is unchanged is not built at all.
for mode in "${SERVER_MODES[@]}"; do
    build "server-$mode" docker/server.Dockerfile --no-cache --target "$mode"
    scratch_images+=("$PREFIX/server-$mode")
done
build client docker/client.Dockerfile --no-cache
scratch_images+=("$PREFIX/client")

all_images=("${scratch_images[@]}")
if $native; then
    build tcpdump docker/tcpdump.Dockerfile
    all_images+=("$PREFIX/tcpdump")
fi

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
printf '%-36s %-18s %12s\n' IMAGE TAG BYTES
for image in "${all_images[@]}"; do
    size=$(docker image inspect -f '{{.Size}}' "$image:$version-$arch")
    printf '%-36s %-18s %12d\n' "$image" "$version-$arch" "$size"
done
for image in "${scratch_images[@]}"; do
    size=$(docker image inspect -f '{{.Size}}' "$image:$version-$arch")
    if [ "$size" -gt "$SCRATCH_LIMIT" ]; then
        echo "error: $image:$version-$arch is $size bytes, over the limit of $SCRATCH_LIMIT" >&2
        too_large=1
    fi
done
exit "$too_large"
