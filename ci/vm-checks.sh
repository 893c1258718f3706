#!/usr/bin/env bash
# Checks the VM deployment in vagrant/ without a hypervisor:
#
# 1. `vagrant validate` (Debian's vagrant) passes on vagrant/Vagrantfile, for
#    the amd64 and the arm64 boxes.
# 2. In a Debian 12 container without systemd, from the debian:bookworm-slim
#    image that ci/debian-base-image.sh provides, vagrant/provision.sh runs
#    twice, installs tcpdump, the binaries and the unit, and keeps the sample
#    and env files on the second run. Then, for each server model, the unit's
#    own ExecStart= line, expanded the way systemd expands it (%i, ${VAR} and
#    $VAR from the model's env file), runs as the unit's User= and Group= with
#    its NoNewPrivileges=, CapabilityBoundingSet= and UMask=. The client must
#    fetch byte-exact files from it, and SIGTERM, which is what KillMode=mixed
#    sends, must stop the server and all its children with status 0.
# 3. `systemd-analyze verify` passes on the unit and env files exactly as
#    provisioning installed them, for each model, and `systemd-analyze
#    security` rates the unit's exposure at 2.0 or less.
# 4. In a second container, systemd runs as PID 1: provisioning starts the
#    three units and each one, inside its sandbox, runs as its own user with no
#    capabilities and a read-only served directory, serves byte-exact files,
#    also through a symbolic link inside the directory, and stops cleanly.
#
#   ci/vm-checks.sh
#
# Runs as root. Installs vagrant and systemd when missing, starts Docker and
# makes the base image through the ci/ scripts for them, and builds dist/ with
# ci/build-static.sh when a binary is missing. Inside the containers the
# script runs itself again with an internal first argument.
set -euo pipefail

MODELS=(iterative parallel preforked evented)
UNIT=tcpfile-server@.service
UNIT_PATH=/etc/systemd/system/$UNIT
SERVED_DIR=/srv/tcpfile
SAMPLES=(hello.txt random-1M.bin random-16M.bin)
IMAGE=debian:bookworm-slim
# On the scale of `systemd-analyze security`, where 0.0 is fully sandboxed.
MAX_EXPOSURE=2.0

fail() {
    echo "vm-checks: FAILED: $*" >&2
    exit 1
}

step() {
    echo "vm-checks: $*"
}

# The value of a setting in the installed unit, which must occur exactly once.
unit_setting() {
    local key=$1 lines
    lines=$(grep -c "^$key=" "$UNIT_PATH" || true)
    [ "$lines" -eq 1 ] || fail "$UNIT has $lines $key= lines, expected one"
    sed -n "s/^$key=//p" "$UNIT_PATH"
}

# Expands the specifiers the unit uses: %i, the instance, and %% for a percent
# sign. Any other specifier is beyond this check.
expand_specifiers() {
    local text=$1 instance=$2 result=""
    while [[ "$text" == *%* ]]; do
        result+=${text%%\%*}
        text=${text#*%}
        case "$text" in
            i*) result+=$instance ;;
            %*) result+=% ;;
            *) fail "specifier %${text:0:1} is beyond this check" ;;
        esac
        text=${text:1}
    done
    printf '%s' "$result$text"
}

declare -A UNIT_ENV=()

# Reads an env file the way systemd's EnvironmentFile= does, for the plain
# KEY=VALUE lines provisioning writes: blank lines and lines starting with #
# or ; are skipped, whitespace around a value is dropped. Quoting and
# continuation lines are beyond this check.
load_env_file() {
    local file=$1 line value
    UNIT_ENV=()
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line#"${line%%[![:space:]]*}"}
        case "$line" in
            '' | '#'* | ';'*) continue ;;
        esac
        [[ "$line" =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || fail "$file: not KEY=VALUE: $line"
        value=${BASH_REMATCH[2]}
        value=${value#"${value%%[![:space:]]*}"}
        value=${value%"${value##*[![:space:]]}"}
        case "$value" in
            *[\"\'\\]*) fail "$file: quotes and backslashes are beyond this check: $line" ;;
        esac
        UNIT_ENV[${BASH_REMATCH[1]}]=$value
    done < "$file"
}

env_value() {
    [ -n "${UNIT_ENV[$1]+set}" ] || fail "the unit uses \$$1, which its env file does not set"
    printf '%s' "${UNIT_ENV[$1]}"
}

COMMAND=()

# Turns an ExecStart= value into COMMAND the way systemd does: words split at
# whitespace; a word that is just $NAME becomes the value split at whitespace,
# zero or more words; ${NAME} inside or as a word is replaced by the value,
# whitespace and all, and the word stays one word, even when empty.
expand_exec_start() {
    local line=$1 word rest expanded value
    local -a words parts
    local braced='^([^$]*)\$\{([A-Za-z_][A-Za-z0-9_]*)\}(.*)$'
    case "$line" in
        *[\"\'\\]*) fail "quotes and backslashes in ExecStart= are beyond this check" ;;
    esac
    read -r -a words <<< "$line"
    COMMAND=()
    for word in "${words[@]}"; do
        if [[ "$word" =~ ^\$([A-Za-z_][A-Za-z0-9_]*)$ ]]; then
            value=$(env_value "${BASH_REMATCH[1]}")
            read -r -a parts <<< "$value"
            COMMAND+=("${parts[@]}")
            continue
        fi
        expanded=""
        rest=$word
        while [[ "$rest" =~ $braced ]]; do
            expanded+=${BASH_REMATCH[1]}
            rest=${BASH_REMATCH[3]}
            value=$(env_value "${BASH_REMATCH[2]}")
            expanded+=$value
        done
        [[ "$rest" != *'$'* ]] || fail "cannot expand '$word' in ExecStart="
        COMMAND+=("$expanded$rest")
    done
    case "${COMMAND[0]}" in
        /*) ;;
        *) fail "ExecStart= must start with an absolute path without prefixes: ${COMMAND[0]}" ;;
    esac
    [ -x "${COMMAND[0]}" ] || fail "${COMMAND[0]} is not an executable"
}

# Whether a process has ended: gone, or a zombie waiting for its parent.
process_ended() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    [ "${stat%% *}" = Z ]
}

# fetch_samples HOST PORT LABEL: each sample, byte-exact.
fetch_samples() {
    local host=$1 port=$2 label=$3 name copy
    for name in "${SAMPLES[@]}"; do
        copy="/tmp/fetched/$label-$name"
        tcpfile-client -q "$host" "$port" "$name" 64M -o "$copy" ||
            fail "$label: the client could not fetch $name"
        cmp -s "$SERVED_DIR/$name" "$copy" || fail "$label: $name arrived altered"
        rm -f "$copy"
    done
}

# Step 2 for one model: the unit's ExecStart= as its user, without systemd.
check_exec_start() {
    local model=$1 user group umask stop_timeout setting env_file exec_start port pid status
    local -a sandbox
    user=$(unit_setting User)
    group=$(unit_setting Group)
    umask=$(unit_setting UMask)
    stop_timeout=$(unit_setting TimeoutStopSec)
    [[ "$stop_timeout" =~ ^[0-9]+$ ]] || fail "TimeoutStopSec=$stop_timeout is not whole seconds, which this check expects"
    setting=$(unit_setting KillMode)
    [ "$setting" = mixed ] || fail "KillMode= is not mixed, which SIGTERMs the main process only"
    setting=$(unit_setting EnvironmentFile)
    env_file=$(expand_specifiers "$setting" "$model")
    load_env_file "$env_file"
    setting=$(unit_setting ExecStart)
    exec_start=$(expand_specifiers "$setting" "$model")
    expand_exec_start "$exec_start"
    [ "${COMMAND[0]}" = "/usr/local/bin/tcpfile-server-$model" ] ||
        fail "the $model instance runs ${COMMAND[0]}"

    sandbox=(--reuid="$user" --regid="$group" --init-groups)
    setting=$(unit_setting NoNewPrivileges)
    [ "$setting" = yes ] || fail "NoNewPrivileges= is not yes"
    sandbox+=(--no-new-privs)
    setting=$(unit_setting CapabilityBoundingSet)
    [ -z "$setting" ] || fail "CapabilityBoundingSet= is not empty"
    sandbox+=(--bounding-set=-all --inh-caps=-all)

    if setpriv "${sandbox[@]}" -- test -w "$SERVED_DIR"; then
        fail "$user may write to $SERVED_DIR"
    fi

    step "$model: running ${COMMAND[*]} as $user"
    (
        umask "$umask"
        exec setpriv "${sandbox[@]}" -- "${COMMAND[@]}" > "/tmp/$model.out" 2> "/tmp/$model.err"
    ) &
    pid=$!
    for _ in $(seq 100); do
        [ -s "/tmp/$model.out" ] && break
        process_ended "$pid" && break
        sleep 0.1
    done
    port=$(sed -n '1s/^listening on .*:\([0-9][0-9]*\)$/\1/p' "/tmp/$model.out")
    if [ -z "$port" ]; then
        cat "/tmp/$model.err" >&2
        fail "$model: the server did not announce its address"
    fi
    setting=$(env_value TCPFILE_PORT)
    [ "$port" = "$setting" ] || fail "$model listens on port $port, not the env file's $setting"
    [ "$(stat -c %U "/proc/$pid")" = "$user" ] || fail "$model: the server does not run as $user"

    fetch_samples 127.0.0.1 "$port" "$model"
    status=0
    tcpfile-client -q 127.0.0.1 "$port" no-such-file 1M -o /tmp/fetched/none 2>/dev/null || status=$?
    [ "$status" -eq 3 ] || fail "$model: a missing file gave client exit code $status, not 3"

    kill -TERM "$pid"
    for _ in $(seq $((stop_timeout * 10))); do
        process_ended "$pid" && break
        sleep 0.1
    done
    if ! process_ended "$pid"; then
        kill -KILL "$pid"
        fail "$model: the server outlived TimeoutStopSec=$stop_timeout after SIGTERM"
    fi
    status=0
    wait "$pid" || status=$?
    if [ "$status" -ne 0 ]; then
        cat "/tmp/$model.err" >&2
        fail "$model: the server exited with status $status after SIGTERM"
    fi
    if find /proc -mindepth 1 -maxdepth 1 -regex '/proc/[0-9]+' -user "$user" | grep -q .; then
        fail "$model: processes of $user are left after the server stopped"
    fi
    step "$model: byte-exact transfers, a clean stop"
}

inside_without_systemd() {
    local arch before after model
    arch=$(dpkg --print-architecture)
    mkdir -p /tmp/fetched

    bash /vagrant/vagrant/provision.sh server
    before=$(sha256sum "$SERVED_DIR"/* /etc/tcpfile/*)
    step "provisioning a second time"
    bash /vagrant/vagrant/provision.sh server /vagrant
    after=$(sha256sum "$SERVED_DIR"/* /etc/tcpfile/*)
    [ "$before" = "$after" ] || fail "the second provisioning changed the sample or env files"

    command -v tcpdump >/dev/null || fail "tcpdump is not installed"
    (cd /usr/local/bin && sha256sum --check --strict --quiet "/vagrant/dist/$arch/SHA256SUMS") ||
        fail "the installed binaries differ from dist/$arch"
    cmp -s "/vagrant/vagrant/systemd/$UNIT" "$UNIT_PATH" || fail "$UNIT_PATH differs from vagrant/systemd/$UNIT"

    for model in "${MODELS[@]}"; do
        check_exec_start "$model"
    done
    cp -a --parents "$UNIT_PATH" /etc/tcpfile /usr/local/bin/tcpfile-* /out/
}

# The options of the mount that holds PATH in the mount namespace of PID.
mount_options() {
    local pid=$1 path=$2
    awk -v path="$path" '
        index(path "/", $5 == "/" ? "/" : $5 "/") == 1 && length($5) >= length(best) {
            best = $5
            options = $6
        }
        END { print options }
    ' "/proc/$pid/mountinfo"
}

inside_with_systemd() {
    local model unit pid port user_id
    mkdir -p /tmp/fetched
    bash /vagrant/vagrant/provision.sh server
    ln -sfn hello.txt "$SERVED_DIR/link-to-hello.txt"
    SAMPLES+=(link-to-hello.txt)
    user_id=$(id -u tcpfile)
    for model in "${MODELS[@]}"; do
        unit="tcpfile-server@$model.service"
        systemctl is-active --quiet "$unit" || fail "$unit is not active"
        pid=$(systemctl show --property MainPID --value "$unit")
        grep -Eq "^Uid:[[:space:]]+${user_id}[[:space:]]" "/proc/$pid/status" || fail "$unit does not run as tcpfile"
        grep -Eq '^NoNewPrivs:[[:space:]]+1$' "/proc/$pid/status" || fail "$unit may gain privileges"
        grep -Eq '^CapBnd:[[:space:]]+0+$' "/proc/$pid/status" || fail "$unit keeps capabilities"
        case "$(mount_options "$pid" "$SERVED_DIR")" in
            ro,* | ro) ;;
            *) fail "$unit sees $SERVED_DIR writable" ;;
        esac

        if journalctl --no-pager --quiet --unit "$unit" | grep -q 'openat2 is not available'; then
            fail "the sandbox of $unit refuses openat2, so links inside $SERVED_DIR are not followed"
        fi
        port=$(sed -n 's/^TCPFILE_PORT=//p' "/etc/tcpfile/$model.env")
        fetch_samples 127.0.0.1 "$port" "$model-under-systemd"

        systemctl stop "$unit"
        [ "$(systemctl show --property Result --value "$unit")" = success ] ||
            fail "$unit did not stop cleanly"
        [ "$(systemctl show --property ExecMainStatus --value "$unit")" = 0 ] ||
            fail "$unit exited with status $(systemctl show --property ExecMainStatus --value "$unit")"
        step "$model under systemd: sandboxed, byte-exact transfers, a clean stop"
    done
}

case "${1:-}" in
    --inside-without-systemd)
        inside_without_systemd
        exit 0
        ;;
    --inside-with-systemd)
        inside_with_systemd
        exit 0
        ;;
    "") ;;
    *) fail "usage: ci/vm-checks.sh" ;;
esac

cd "$(dirname "$0")/.."
repository=$(pwd)
[ "$(id -u)" -eq 0 ] || fail "run as root: the checks install packages and run containers"

missing=()
command -v vagrant >/dev/null 2>&1 || missing+=(vagrant)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

targets=()
[ -f dist/amd64/SHA256SUMS ] || targets+=(x86_64-unknown-linux-musl)
[ -f dist/arm64/SHA256SUMS ] || targets+=(aarch64-unknown-linux-musl)
if [ "${#targets[@]}" -gt 0 ]; then
    ci/build-static.sh "${targets[@]}"
fi

ci/docker-engine.sh
ci/debian-base-image.sh

work=$(mktemp -d)
containers=()
cleanup() {
    if [ "${#containers[@]}" -gt 0 ]; then
        docker rm -f "${containers[@]}" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step "vagrant validate"
for arch in amd64 arm64; do
    # A state directory and a Vagrant home of its own: the check leaves no
    # .vagrant/ in the tree and does not depend on plugins installed here.
    (
        cd vagrant
        TCPFILE_VAGRANT_ARCH=$arch VAGRANT_DOTFILE_PATH="$work/vagrant-state" \
            VAGRANT_HOME="$work/vagrant-home" VAGRANT_CHECKPOINT_DISABLE=1 \
            vagrant validate --ignore-provider
    ) || fail "vagrant validate for $arch"
done

step "provisioning in a Debian container without systemd"
installed="$work/installed"
mkdir -p "$installed"
name="tcpfile-vm-check-$$"
containers+=("$name")
docker run --rm --name "$name" \
    --volume "$repository:/vagrant:ro" --volume "$installed:/out" \
    "$IMAGE" bash /vagrant/ci/vm-checks.sh --inside-without-systemd

step "systemd-analyze on the unit as installed"
# The unit's default dependencies name the system's own targets.
mkdir -p "$installed/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$installed/usr/lib/systemd/"
for model in "${MODELS[@]}"; do
    status=0
    report=$(systemd-analyze verify --root="$installed" --recursive-errors=no --man=no \
        "tcpfile-server@$model.service" 2>&1) || status=$?
    if [ "$status" -ne 0 ] || [ -n "$report" ]; then
        printf '%s\n' "$report" >&2
        fail "systemd-analyze verify tcpfile-server@$model.service"
    fi
done
threshold=$(awk -v exposure="$MAX_EXPOSURE" 'BEGIN { print exposure * 10 }')
status=0
report=$(systemd-analyze security --offline=yes --root="$installed" --threshold="$threshold" \
    tcpfile-server@preforked.service 2>&1) || status=$?
printf '%s\n' "$report" | tail -n 1
[ "$status" -eq 0 ] || fail "the unit's exposure is above $MAX_EXPOSURE"

step "provisioning in a Debian container with systemd running"
name="tcpfile-vm-check-systemd-$$"
containers+=("$name")
# systemd as PID 1 needs its cgroups writable, tmpfs on /run, and the
# privileges to set up each unit's mount namespace and seccomp filter.
docker run --detach --name "$name" \
    --cap-add SYS_ADMIN --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --cgroupns=host --volume /sys/fs/cgroup:/sys/fs/cgroup:rw \
    --tmpfs /run --tmpfs /run/lock --env container=docker \
    --volume "$repository:/vagrant:ro" \
    "$IMAGE" bash -c 'apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null &&
        exec /lib/systemd/systemd' >/dev/null
for _ in $(seq 180); do
    docker exec "$name" test -d /run/systemd/system 2>/dev/null && break
    [ "$(docker inspect --format '{{.State.Running}}' "$name")" = true ] || break
    sleep 1
done
if ! docker exec "$name" test -d /run/systemd/system 2>/dev/null; then
    docker logs "$name" 2>&1 | tail -n 20 >&2
    fail "systemd did not start in the container"
fi
state=$(docker exec "$name" timeout 60 systemctl is-system-running --wait || true)
case "$state" in
    running | degraded) ;;
    *) fail "systemd in the container is $state" ;;
esac
docker exec "$name" bash /vagrant/ci/vm-checks.sh --inside-with-systemd

step "all passed"
