#!/usr/bin/env bash
# Publishes the lab's images as multi-arch images in a registry of its own and
# pulls them back as a machine of each platform would: one name per image
# (server-iterative, server-parallel, server-preforked, server-evented,
# client, tcpdump), each an image index with linux/amd64, linux/arm64 and
# linux/arm/v7 entries.
#
#   ci/registry-e2e.sh          (as root on a fresh machine: it installs what is missing)
#
# 1. Builds the images of the three platforms, or reuses them
#    (docker/build-images.sh; dist/ is built by ci/build-static.sh when missing).
# 2. Starts Debian's docker-registry on 127.0.0.1 and a free port, storing into
#    a temporary folder.
# 3. Pushes every platform's image and assembles each index with
#    `docker manifest`, tagged VERSION and latest.
# 4. Reads each index back from the registry: exactly the three platforms;
#    each entry's image is the one built here (same image ID); each FROM
#    scratch image's layers, downloaded from the registry, hold the binaries
#    of dist/<arch>/ that image is for (same SHA-256), and no others.
# 5. `docker pull --platform` of every image and platform gets that platform's
#    image; `TCPFILE_REGISTRY=127.0.0.1:PORT docker compose pull` gets the
#    host's images for every service of every server model, and with
#    DOCKER_DEFAULT_PLATFORM=linux/arm64 or linux/arm/v7 the ARM ones.
#
# It stops the registry and removes its storage and every tag it made on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
IMAGES=(server-iterative server-parallel server-preforked server-evented client tcpdump)
ARCHES=(amd64 arm64 armv7)
declare -A PLATFORM_OF=([amd64]=linux/amd64 [arm64]=linux/arm64 [armv7]=linux/arm/v7)
declare -A TARGET_OF=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl
    [armv7]=armv7-unknown-linux-musleabihf)
PROJECT=tcpfile-registry-$$
START_LIMIT=30
COMMAND_LIMIT=300
MANIFEST_TYPES=application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.oci.image.index.v1+json,application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.manifest.v1+json

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

work=$(mktemp -d /tmp/tcpfile-registry.XXXXXX)
registry_pid=""
made_tags=()
on_exit() {
    local status=$?
    if [ -n "$registry_pid" ]; then
        kill "$registry_pid" 2>/dev/null || true
        wait "$registry_pid" 2>/dev/null || true
        if [ "$status" -ne 0 ]; then
            echo "--- the registry's log" >&2
            tail -n 20 "$work/registry.log" >&2 || true
        fi
    fi
    local tag
    for tag in "${made_tags[@]}"; do
        docker image rm "$tag" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
    exit "$status"
}
trap on_exit EXIT

started=$SECONDS
step "tools"
ci/docker-engine.sh
compose=(docker-compose)
docker compose version >/dev/null 2>&1 && compose=(docker compose)
echo "compose: ${compose[*]} $("${compose[@]}" version --short)"
missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || fail "missing ${missing[*]}; run as root or install them"
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [[ " ${missing[*]} " = *" docker-registry "* ]]; then
        ci/registry-service-off.sh
    fi
fi
echo "registry: $(docker-registry --version)"
ci/binfmt.sh
echo "tools ready after $((SECONDS - started)) s"

step "binaries and images"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
for arch in "${ARCHES[@]}"; do
    if [ ! -f "dist/$arch/SHA256SUMS" ]; then
        ci/build-static.sh "${TARGET_OF[$arch]}"
    fi
done
ci/debian-base-image.sh
# Each image is held by a tag of this run's own at once: another build on the
# same engine may move the shared localhost/tcpfile tags meanwhile, and remove
# the image they named.
own=localhost/tcpfile-registry-$$
declare -A local_id
for arch in "${ARCHES[@]}"; do
    docker/build-images.sh "$arch"
    for image in "${IMAGES[@]}"; do
        local_id[$image/$arch]=$(docker image inspect -f '{{.Id}}' "localhost/tcpfile/$image:$version-$arch")
        docker tag "${local_id[$image/$arch]}" "$own/$image:$arch"
        made_tags+=("$own/$image:$arch")
    done
done
echo "images ready after $((SECONDS - started)) s"

step "registry"
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
answers() {
    curl -fsS -o /dev/null -D - "http://$registry/v2/" 2>/dev/null |
        grep -qi '^docker-distribution-api-version: registry/2.0'
}
# A port found free may be taken before the registry binds it: another try
# then, with another port.
for attempt in 1 2 3; do
    port=$(free_port)
    registry=127.0.0.1:$port
    mkdir -p "$work/storage"
    cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: $registry
EOF
    docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
    registry_pid=$!
    deadline=$((SECONDS + START_LIMIT))
    until answers; do
        if ! kill -0 "$registry_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            kill "$registry_pid" 2>/dev/null || true
            wait "$registry_pid" 2>/dev/null || true
            registry_pid=""
            break
        fi
        sleep 0.2
    done
    [ -n "$registry_pid" ] && break
    echo "the registry did not start on $registry (attempt $attempt): $(tail -n 3 "$work/registry.log")"
done
[ -n "$registry_pid" ] || fail "no registry could be started"
listening=$(ss -Hltnp "sport = :$port" | grep -c "pid=$registry_pid," || true)
[ "$listening" -ge 1 ] || fail "the registry (PID $registry_pid) does not listen on $registry"
if ss -Hltn "sport = :$port" | awk '{ print $4 }' | grep -qv "^$registry$"; then
    fail "port $port is open on other addresses than 127.0.0.1: $(ss -Hltn "sport = :$port")"
fi
echo "docker-registry (PID $registry_pid) listens on $registry only, storing into $work/storage"

step "push"
push_started=$SECONDS
# docker manifest keeps its lists beside the client's configuration: this
# run's own, so nothing of the user's is read or left behind.
export DOCKER_CONFIG=$work/docker-config
mkdir -p "$DOCKER_CONFIG"
for image in "${IMAGES[@]}"; do
    platform_refs=()
    for arch in "${ARCHES[@]}"; do
        ref=$registry/tcpfile/$image:$version-$arch
        docker tag "$own/$image:$arch" "$ref"
        made_tags+=("$ref")
        docker push --quiet "$ref" >/dev/null
        platform_refs+=("$ref")
    done
    for tag in "$version" latest; do
        index=$registry/tcpfile/$image:$tag
        docker manifest create --insecure "$index" "${platform_refs[@]}" >/dev/null
        # The variant is in the image's configuration, but an index entry
        # says it only when told.
        docker manifest annotate --os linux --arch arm --variant v7 "$index" "$registry/tcpfile/$image:$version-armv7"
        docker manifest push --insecure --purge "$index" >/dev/null
    done
    echo "  $registry/tcpfile/$image:{$version,latest}: ${ARCHES[*]}"
done
echo "pushed in $((SECONDS - push_started)) s"

step "indexes, as the registry serves them"
# registry_get PATH: the registry's answer to GET /v2/PATH.
registry_get() {
    curl -fsS -H "Accept: $MANIFEST_TYPES" "http://$registry/v2/$1"
}
# The index's entries, one per line: "os/architecture[/variant] digest".
index_entries() {
    python3 -c '
import json, sys
index = json.load(sys.stdin)
for entry in index.get("manifests", []):
    p = entry["platform"]
    print("/".join(filter(None, [p["os"], p["architecture"], p.get("variant")])), entry["digest"])
'
}
# A manifest's config digest on the first line, then its layers' digests.
manifest_parts() {
    python3 -c '
import json, sys
manifest = json.load(sys.stdin)
print(manifest["config"]["digest"])
for layer in manifest["layers"]:
    print(layer["digest"])
'
}
expected_platforms=$(for arch in "${ARCHES[@]}"; do echo "${PLATFORM_OF[$arch]}"; done | sort)
for image in "${IMAGES[@]}"; do
    for tag in "$version" latest; do
        entries=$(registry_get "tcpfile/$image/manifests/$tag" | index_entries)
        [ "$(awk '{ print $1 }' <<< "$entries" | sort)" = "$expected_platforms" ] ||
            fail "$image:$tag is an index of: $(awk '{ print $1 }' <<< "$entries" | xargs)"
    done
    for arch in "${ARCHES[@]}"; do
        platform=${PLATFORM_OF[$arch]}
        digest=$(awk -v p="$platform" '$1 == p { print $2 }' <<< "$entries")
        mapfile -t parts < <(registry_get "tcpfile/$image/manifests/$digest" | manifest_parts)
        [ "${parts[0]}" = "${local_id[$image/$arch]}" ] ||
            fail "$image for $platform in the registry is ${parts[0]}, not the image built here, ${local_id[$image/$arch]}"
        [ "$image" = tcpdump ] && continue
        unpacked=$work/unpacked
        rm -rf "$unpacked"
        mkdir "$unpacked"
        for layer in "${parts[@]:1}"; do
            registry_get "tcpfile/$image/blobs/$layer" | tar -xz -C "$unpacked"
        done
        case "$image" in
            server-*) wanted="tcpfile-client tcpfile-$image" ;;
            client) wanted=tcpfile-client ;;
        esac
        held=$(find "$unpacked/usr/local/bin" -mindepth 1 -printf '%f\n' | sort | xargs)
        [ "$held" = "$wanted" ] || fail "$image for $platform holds $held, not $wanted"
        # shellcheck disable=SC2086 # one name per binary
        (cd "$unpacked/usr/local/bin" && sha256sum $wanted) > "$work/held.sums"
        grep -qvxFf "dist/$arch/SHA256SUMS" "$work/held.sums" &&
            fail "$image for $platform holds binaries that differ from dist/$arch/:"$'\n'"$(cat "$work/held.sums")"
    done
    echo "  $image: $(awk '{ print $1 }' <<< "$entries" | sort | xargs), each the image built here"
done
echo "  the binaries in every server and client image are those of dist/<arch>/ (SHA-256)"

step "docker pull --platform"
for image in "${IMAGES[@]}"; do
    index=$registry/tcpfile/$image:latest
    made_tags+=("$index")
    for arch in "${ARCHES[@]}"; do
        platform=${PLATFORM_OF[$arch]}
        docker pull --quiet --platform "$platform" "$index" >/dev/null
        pulled=$(docker image inspect -f '{{.Id}} {{.Os}}/{{.Architecture}}{{with index . "Variant"}}/{{.}}{{end}}' "$index")
        [ "$pulled" = "${local_id[$image/$arch]} $platform" ] ||
            fail "docker pull --platform $platform $index got $pulled, not ${local_id[$image/$arch]} $platform"
        if [ "$image" = tcpdump ]; then
            # The sidecar runs on each platform (the ARM ones under qemu).
            machine=$(docker run --rm --platform "$platform" --entrypoint uname "$index" -m)
            tcpdump_version=$(docker run --rm --platform "$platform" --entrypoint tcpdump "$index" --version | head -n 1)
            echo "  tcpdump for $platform: $tcpdump_version, on $machine"
        fi
    done
    echo "  $image: ${ARCHES[*]}"
done

step "docker compose pull"
export COMPOSE_PROJECT_NAME=$PROJECT
host_arch=$(docker version -f '{{.Server.Arch}}')
[ "$host_arch" = arm ] && host_arch=armv7
compose_pull() {
    local arch=$1 mode output
    for mode in iterative parallel preforked evented; do
        # compose prints its progress even with --quiet: shown on failure only.
        output=$(SERVER_MODE=$mode TCPFILE_REGISTRY=$registry timeout "$COMMAND_LIMIT" "${compose[@]}" pull --quiet 2>&1) ||
            fail "compose pull (SERVER_MODE=$mode) failed:"$'\n'"$output"
        for image in "server-$mode" client tcpdump; do
            [ "$(docker image inspect -f '{{.Id}}' "$registry/tcpfile/$image:latest")" = "${local_id[$image/$arch]}" ] ||
                fail "compose pull (SERVER_MODE=$mode${DOCKER_DEFAULT_PLATFORM:+, DOCKER_DEFAULT_PLATFORM=$DOCKER_DEFAULT_PLATFORM}) got another $image than the one for $arch"
        done
    done
}
echo "  TCPFILE_REGISTRY=$registry ${compose[*]} pull"
compose_pull "$host_arch"
echo "    every service's image, for every server model: the $host_arch images"
for arch in arm64 armv7; do
    echo "  DOCKER_DEFAULT_PLATFORM=${PLATFORM_OF[$arch]} TCPFILE_REGISTRY=$registry ${compose[*]} pull"
    DOCKER_DEFAULT_PLATFORM=${PLATFORM_OF[$arch]} compose_pull "$arch"
    echo "    every service's image, for every server model: the $arch images"
done
[ -z "$(docker ps -a -q --filter "label=com.docker.compose.project=$PROJECT")" ] ||
    fail "compose pull made containers"

echo
echo "registry-e2e: ${#IMAGES[@]} images for ${ARCHES[*]} pushed and pulled back, in $((SECONDS - started)) s"
