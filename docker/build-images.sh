#!/usr/bin/env bash
# Builds the lab's images from the static binaries in dist/<arch>/ and prints
# their sizes; fails when a FROM scratch image is over 3 MiB.
#
#   docker/build-images.sh [--scratch-only | --tcpdump-only] [ARCH]
#
# ARCH is amd64, arm64 or armv7 (the platform linux/arm/v7), by default the
# Docker engine's own (an engine on 32-bit ARM is armv7). It builds
# localhost/tcpfile/server-{iterative,parallel,preforked,evented},
# localhost/tcpfile/client and localhost/tcpfile/tcpdump for that platform,
# tagged VERSION-ARCH, and also latest for the engine's own. Images for
# another architecture are what ci/registry-e2e.sh assembles into multi-arch
# images, what ci/arm-lab.sh runs under emulation, and what can be carried to
# such a machine (docker save | docker load).
#
# The FROM scratch images need no emulation to build. For another
# architecture, the tcpdump image starts from the Debian tree that
# ci/tcpdump-base-image.sh unpacks (as root, the first time), and its one RUN
# step runs under qemu (ci/binfmt.sh registers it). --scratch-only builds the
# FROM scratch images alone, --tcpdump-only the tcpdump image alone.
#
# Run it from anywhere, after ci/build-static.sh and, for the engine's own
# tcpdump image on a machine without a registry, ci/debian-base-image.sh.
set -euo pipefail

cd "$(dirname "$0")/.."
SCRATCH_LIMIT=$((3 * 1024 * 1024))
SERVER_MODES=(iterative parallel preforked evented)

build_scratch=true
build_tcpdump=true
case "${1:-}" in
    --scratch-only) build_tcpdump=false; shift ;;
    --tcpdump-only) build_scratch=false; shift ;;
esac

# dist/ names an architecture; the engine and the images name a platform.
declare -A PLATFORM_OF=([amd64]=linux/amd64 [arm64]=linux/arm64 [armv7]=linux/arm/v7)
engine_arch=$(docker version -f '{{.Server.Arch}}')
[ "$engine_arch" = arm ] && engine_arch=armv7
arch=${1:-$engine_arch}
platform=${PLATFORM_OF[$arch]:-}
if [ -z "$platform" ]; then
    echo "error: unsupported architecture: $arch (amd64, arm64 or armv7)" >&2
    exit 1
fi
# What BuildKit would set from the platform: dist/$TARGETARCH$TARGETVARIANT.
IFS=/ read -r _ target_arch target_variant <<< "$platform"
if $build_scratch && [ ! -x "dist/$arch/tcpfile-client" ]; then
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
                docker image inspect -f '{{.Id}}' "$tcpdump_base"
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
# build made obsolete, never another lab's images. The image's ID goes into
# built_id: the checks below look at that image, even if another build on the
# same engine moves the tags meanwhile.
declare -A built_id
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
        built_id[$image]=$existing
    else
        echo "building $image ($arch)"
        local output tag_options=() id_file
        for tag in "${tags[@]}"; do
            tag_options+=(--tag "$tag")
        done
        id_file=$(mktemp)
        if ! output=$(docker build --file "$dockerfile" "${tag_options[@]}" --iidfile "$id_file" \
            --platform "$platform" \
            --label "$INPUTS_LABEL=$inputs" \
            --build-arg "TARGETARCH=$target_arch" \
            --build-arg "TARGETVARIANT=$target_variant" \
            --build-arg "VERSION=$version" \
            --build-arg "REVISION=$revision" \
            "$@" . 2>&1); then
            echo "$output" >&2
            rm -f "$id_file"
            return 1
        fi
        built_id[$image]=$(cat "$id_file")
        rm -f "$id_file"
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
if $build_scratch; then
    for mode in "${SERVER_MODES[@]}"; do
        build "server-$mode" docker/server.Dockerfile --no-cache --target "$mode"
        scratch_images+=("$PREFIX/server-$mode")
    done
    build client docker/client.Dockerfile --no-cache
    scratch_images+=("$PREFIX/client")
fi

all_images=("${scratch_images[@]}")
if $build_tcpdump; then
    if $native; then
        tcpdump_base=debian:bookworm-slim
    else
        case "$arch" in
            arm64) ci/binfmt.sh aarch64 ;;
            armv7) ci/binfmt.sh arm ;;
            amd64) ;;
        esac
        tcpdump_base=$(ci/tcpdump-base-image.sh "$arch")
    fi
    build tcpdump docker/tcpdump.Dockerfile --build-arg "BASE=$tcpdump_base"
    all_images+=("$PREFIX/tcpdump")
fi

# Every image must be for the platform it was built for.
for image in "${all_images[@]}"; do
    built_for=$(docker image inspect -f '{{.Os}}/{{.Architecture}}{{with index . "Variant"}}/{{.}}{{end}}' "${built_id[$image]}")
    if [ "$built_for" != "$platform" ]; then
        echo "error: $image:$version-$arch is for $built_for, not $platform" >&2
        exit 1
    fi
done

# Each FROM scratch image must hold exactly the binaries in dist/<arch>/ and
# no shell.
verify() {
    local reference=$1 id=$2
    local container unpacked
    unpacked=$(mktemp -d)
    container=$(docker create --platform "$platform" "$id")
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
    verify "$image:$version-$arch" "${built_id[$image]}"
done

too_large=0
printf '%-36s %-18s %12s\n' IMAGE TAG BYTES
for image in "${all_images[@]}"; do
    size=$(docker image inspect -f '{{.Size}}' "${built_id[$image]}")
    printf '%-36s %-18s %12d\n' "$image" "$version-$arch" "$size"
done
for image in "${scratch_images[@]}"; do
    size=$(docker image inspect -f '{{.Size}}' "${built_id[$image]}")
    if [ "$size" -gt "$SCRATCH_LIMIT" ]; then
        echo "error: $image:$version-$arch is $size bytes, over the limit of $SCRATCH_LIMIT" >&2
        too_large=1
    fi
done
exit "$too_large"
