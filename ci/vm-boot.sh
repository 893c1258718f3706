#!/usr/bin/env bash
# Boots the VM lab of vagrant/ for real, on one architecture, under qemu:
#
#   ci/vm-boot.sh amd64|arm64
#
# 1. Builds the Debian 12 guest image, or takes it from its cache
#    (ci/vm-image.sh), and builds dist/ with ci/build-static.sh if a binary is
#    missing.
# 2. Boots two guests from it: "server" (2 vCPUs) and "client" (1 vCPU), 512
#    MiB each, like the Vagrantfile's machines. Each has qemu's user-mode
#    network, restricted to forwarded ports on 127.0.0.1 chosen free at run
#    time, and both share a lab network that qemu carries between them over
#    a pair of Unix datagram sockets, with the Vagrantfile's addresses
#    (192.168.56.10 and .11). KVM runs when the guest's architecture is the
#    host's and a probe shows that KVM boots a kernel here; TCG (full
#    emulation) otherwise. TCPFILE_VM_ACCEL=tcg|kvm forces one.
# 3. Provisions both with vagrant/provision.sh, the script Vagrant runs, from
#    dist/ARCH and vagrant/systemd uploaded as Vagrant uploads them.
# 4. Checks, for each server model: systemd runs the unit, the journal has
#    the server's first lines, the sandbox holds inside the guest (no
#    privileges, a read-only system and served directory even for root in the
#    unit's mount namespace, a private /tmp, an exposure of 2.0 or less), and
#    files arrive byte-exact at this host's client through the forwarded port
#    and at the client guest over the lab network.
# 5. Powers the server off and boots it again from its disk, as `vagrant
#    reload` does, and fetches again: the units are enabled.
# 6. Stops each unit while the client guest's transfer is in flight (the lab
#    link is slowed until the stop is under way): the transfer completes
#    byte-exact within the server's grace period, and the unit ends inactive
#    with result success.
# 7. Powers both guests off and checks that nothing is left running.
#
# 8. With TCPFILE_VM_VAGRANT=libvirt (amd64 only), brings the lab up once more
#    with Vagrant itself: ci/vm-vagrant-libvirt.sh runs `vagrant up` with the
#    vagrant-libvirt provider on a box made from the same image.
#
# Prints the boot time of each guest, whether KVM or TCG ran, and how long
# each step took. Every wait is bounded; the guests are killed on any exit.
# Runs as root; installs qemu and the other tools it lacks.
set -euo pipefail

LAB_NETWORK_PREFIX=192.168.56
SERVER_IP=$LAB_NETWORK_PREFIX.10
CLIENT_IP=$LAB_NETWORK_PREFIX.11
MODELS=(iterative parallel preforked evented)
declare -A MODEL_PORT=([iterative]=9001 [parallel]=9002 [preforked]=9003 [evented]=9004)
SAMPLES=(hello.txt random-1M.bin random-16M.bin)
SERVED_DIR=/srv/tcpfile
STAGING=/root/tcpfile-provision
# The unit's stop timeout, and the server's default grace period.
STOP_TIMEOUT=15
GRACE=5
# The lab link's speed until a stop is under way: random-1M.bin would take
# 16 s, so however slowly an emulated guest reacts, the stop finds it in
# flight. Once the server has the stop, the link is fast again and the rest
# of the file must arrive within the grace period.
SLOW_RATE=512kbit
# Bounds, generous for emulation on a busy 2-core machine.
BOOT_TIMEOUT=900
COMMAND_TIMEOUT=180
POWEROFF_TIMEOUT=120

arch=${1:-}
case "$arch" in
    amd64 | arm64) ;;
    *) echo "usage: ci/vm-boot.sh amd64|arm64" >&2; exit 2 ;;
esac

fail() {
    echo "vm-boot[$arch]: FAILED: $*" >&2
    exit 1
}

step() {
    echo "vm-boot[$arch]: $*"
}

[ "$(id -u)" -eq 0 ] || fail "run as root: the image is built as root and qemu may need /dev/kvm"
case "${TCPFILE_VM_VAGRANT:-}" in
    "") ;;
    libvirt) [ "$arch" = amd64 ] || fail "TCPFILE_VM_VAGRANT=libvirt brings up the amd64 lab only" ;;
    *) fail "TCPFILE_VM_VAGRANT must be libvirt or unset" ;;
esac
cd "$(dirname "$0")/.."
repository=$(pwd)
run_started=$SECONDS

host_arch=$(dpkg --print-architecture)
case "$arch" in
    amd64)
        qemu_binary=qemu-system-x86_64
        qemu_package=qemu-system-x86
        machine=(-M q35)
        tcg_cpu=(-cpu max)
        console=ttyS0
        # On a busy host an emulated timer can miss the kernel's early check
        # of the IO-APIC timer, which then panics.
        kernel_options="no_timer_check"
        ;;
    arm64)
        qemu_binary=qemu-system-aarch64
        qemu_package=qemu-system-arm
        machine=(-M virt)
        # Pointer authentication with qemu's own cheap algorithm instead of
        # the architected one, which costs emulation a lot of time.
        tcg_cpu=(-cpu "max,pauth-impdef=on")
        console=ttyAMA0
        kernel_options=""
        ;;
esac

missing=()
command -v "$qemu_binary" >/dev/null 2>&1 || missing+=("$qemu_package")
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

rust_target() {
    case "$1" in
        amd64) echo x86_64-unknown-linux-musl ;;
        arm64) echo aarch64-unknown-linux-musl ;;
        *) fail "no static build for $1" ;;
    esac
}
targets=()
for needed in "$arch" "$host_arch"; do
    [ -f "dist/$needed/SHA256SUMS" ] || targets+=("$(rust_target "$needed")")
done
if [ "${#targets[@]}" -gt 0 ]; then
    step "building the static binaries (${targets[*]})"
    ci/build-static.sh "${targets[@]}"
fi
host_client="$repository/dist/$host_arch/tcpfile-client"

image_started=$SECONDS
image=$(ci/vm-image.sh "$arch")
image_seconds=$((SECONDS - image_started))

work=$(mktemp -d "/tmp/tcpfile-vmboot-$arch.XXXXXX")
declare -A QEMU_PID=() SSH_PORT=() BOOT_ID=() BOOT_STARTED=()
cleanup() {
    local name pid job control
    # Everything here is tried, whatever fails.
    set +e
    for job in $(jobs -p); do
        kill -TERM "$job" 2>/dev/null || true
    done
    for control in "$work"/ssh-*; do
        [ -S "$control" ] && timeout 10 ssh -o ControlPath="$control" -O exit tcpfile-vm 2>/dev/null
    done
    for name in "${!QEMU_PID[@]}"; do
        pid=${QEMU_PID[$name]}
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- acceleration ------------------------------------------------------------

# KVM counts only when it boots the guest's kernel far enough to print its
# banner: on some hosts /dev/kvm exists and qemu starts, but the guest never
# runs a single instruction.
kvm_boots_a_kernel() {
    local log="$work/kvm-probe.log" pid="" banner=false
    [ "$arch" = "$host_arch" ] && [ -w /dev/kvm ] || return 1
    # In a group of its own, so that a qemu that aborts is reaped there
    # without the shell reporting it here.
    {
        "$qemu_binary" "${machine[@]}" -accel kvm -cpu host -m 256 -nodefaults -no-user-config \
            -display none -no-reboot -kernel "$image/vmlinuz" \
            -append "console=$console panic=-1" -serial "file:$log" > "$work/kvm-probe.err" 2>&1 &
        echo $! > "$work/kvm-probe.pid"
        wait
    } 2>/dev/null &
    local group=$!
    for _ in $(seq 100); do
        [ -n "$pid" ] || pid=$(cat "$work/kvm-probe.pid" 2>/dev/null) || true
        if grep -q 'Linux version' "$log" 2>/dev/null; then
            banner=true
            break
        fi
        kill -0 "$group" 2>/dev/null || break
        sleep 0.1
    done
    [ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true
    wait "$group" || true
    $banner
}

case "${TCPFILE_VM_ACCEL:-auto}" in
    tcg) accel=tcg ;;
    kvm)
        kvm_boots_a_kernel || fail "TCPFILE_VM_ACCEL=kvm, but KVM does not boot the kernel here"
        accel=kvm
        ;;
    auto)
        if kvm_boots_a_kernel; then
            accel=kvm
        else
            accel=tcg
        fi
        ;;
    *) fail "TCPFILE_VM_ACCEL must be auto, kvm or tcg" ;;
esac
if [ "$accel" = kvm ]; then
    accel_args=(-accel kvm -cpu host)
    step "KVM boots a kernel here: the guests run under KVM"
else
    accel_args=(-accel tcg "${tcg_cpu[@]}")
    if [ "$arch" = "$host_arch" ]; then
        step "KVM does not boot a kernel here: the guests run under TCG, full emulation"
    else
        step "an $arch guest on an $host_arch host: the guests run under TCG, full emulation"
    fi
fi

# --- guests ------------------------------------------------------------------

declare -A USED_PORTS=()
# A TCP port that nothing on this machine uses now and this run has not
# handed out yet. qemu binds it a moment later; start_guest tries again if
# someone else was quicker.
free_port() {
    local port in_use
    in_use=$(ss -Htan | awk '{ sub(/.*:/, "", $4); print $4 }' | sort -u)
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        [ -z "${USED_PORTS[$port]+set}" ] || continue
        grep -qx "$port" <<< "$in_use" && continue
        USED_PORTS[$port]=1
        echo "$port"
        return 0
    done
    fail "found no free TCP port"
}

declare -A FORWARDED=()

SSH_OPTIONS=(-F none -i "$image/id_ed25519" -o BatchMode=yes -o IdentitiesOnly=yes
    -o HostKeyAlias=tcpfile-vm -o UserKnownHostsFile="$image/known_hosts"
    -o StrictHostKeyChecking=yes -o ConnectTimeout=10 -o LogLevel=ERROR
    -o ServerAliveInterval=10 -o ServerAliveCountMax=6)
# Under emulation a login costs seconds: the commands to a guest share the
# connection that wait_for_boot opens, and make their own only without it.
SHARED_CONNECTION=(-o ControlMaster=no -o ControlPath="$work/ssh-%p")

# guest NAME COMMAND...: runs COMMAND as root in the guest, bounded in time.
guest() {
    guest_with_input "$@" < /dev/null
}

# The same, with this script's standard input as the command's.
guest_with_input() {
    local name=$1
    shift
    timeout "$COMMAND_TIMEOUT" ssh "${SSH_OPTIONS[@]}" "${SHARED_CONNECTION[@]}" \
        -p "${SSH_PORT[$name]}" root@127.0.0.1 "$@"
}

console_tail() {
    echo "--- the last lines on $1's console:" >&2
    tail -n 25 "$work/$1.console" >&2 || true
}

# start_guest NAME CPUS MAC PEER [GUEST_PORT...]: boots NAME from its disk,
# with its SSH port and the GUEST_PORTs forwarded from free ports on
# 127.0.0.1, and its lab link on the socket pair it shares with PEER. The
# disk is a copy-on-write layer over the image, made at the first start and
# kept across restarts; the image itself is never written.
start_guest() {
    local name=$1 cpus=$2 mac=$3 peer=$4
    shift 4
    local guest_ports=("$@") attempt forward port machine_id pid
    machine_id=$(printf '%s' "tcpfile-vm-$name" | sha256sum | cut -c1-32)
    if [ ! -f "$work/$name.qcow2" ]; then
        qemu-img create -q -f qcow2 -F raw -b "$image/disk.img" "$work/$name.qcow2"
    fi
    for attempt in 1 2 3; do
        SSH_PORT[$name]=$(free_port)
        forward="hostfwd=tcp:127.0.0.1:${SSH_PORT[$name]}-:22"
        for port in "${guest_ports[@]}"; do
            FORWARDED[$name:$port]=$(free_port)
            forward+=",hostfwd=tcp:127.0.0.1:${FORWARDED[$name:$port]}-:$port"
        done
        rm -f "$work/$name.lab"
        "$qemu_binary" "${machine[@]}" "${accel_args[@]}" -smp "$cpus" -m 512 \
            -nodefaults -no-user-config -display none \
            -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
            -append "root=/dev/vda rw console=$console net.ifnames=0 quiet mitigations=off $kernel_options systemd.machine_id=$machine_id" \
            -drive "file=$work/$name.qcow2,format=qcow2,if=none,id=disk" -device virtio-blk-pci,drive=disk \
            -netdev "user,id=user,restrict=on,ipv6=off,$forward" -device virtio-net-pci,netdev=user \
            -netdev "dgram,id=lab,local.type=unix,local.path=$work/$name.lab,remote.type=unix,remote.path=$work/$peer.lab" \
            -device "virtio-net-pci,netdev=lab,mac=$mac" \
            -device virtio-rng-pci -serial "file:$work/$name.console" \
            > "$work/$name.qemu.log" 2>&1 &
        pid=$!
        QEMU_PID[$name]=$pid
        BOOT_STARTED[$name]=$(date +%s.%N)
        sleep 1
        if kill -0 "$pid" 2>/dev/null; then
            step "$name: qemu $pid started, SSH on 127.0.0.1:${SSH_PORT[$name]}"
            return 0
        fi
        unset "QEMU_PID[$name]"
        grep -q 'host forwarding' "$work/$name.qemu.log" || break
        step "$name: a forwarded port was taken meanwhile (attempt $attempt); picking others"
    done
    cat "$work/$name.qemu.log" >&2
    fail "$name: qemu did not start"
}
# wait_for_boot NAME [OLD_BOOT_ID]: until the guest's console announces a
# boot other than OLD_BOOT_ID (the image's tcpfile-vm-ready.service does,
# once SSH runs), then logs in, and waits for systemd to finish starting it.
wait_for_boot() {
    local name=$1 old=${2:-} deadline=$((SECONDS + BOOT_TIMEOUT)) id="" state logged_in=false
    while :; do
        kill -0 "${QEMU_PID[$name]}" 2>/dev/null || { console_tail "$name"; fail "$name: qemu exited"; }
        id=$(grep -ao 'tcpfile-vm: up, boot [0-9a-f-]*' "$work/$name.console" | tail -n 1 | cut -d' ' -f4) || id=""
        if [ -n "$id" ] && [ "$id" != "$old" ]; then
            break
        fi
        if grep -aq 'Kernel panic' "$work/$name.console"; then
            console_tail "$name"
            fail "$name: the kernel panicked"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            console_tail "$name"
            fail "$name: not up within $BOOT_TIMEOUT s"
        fi
        sleep 0.5
    done
    BOOT_ID[$name]=$id
    BOOT_SECONDS=$(awk -v start="${BOOT_STARTED[$name]}" -v now="$(date +%s.%N)" \
        'BEGIN { printf "%.1f", now - start }')
    # The connection the later commands share; the first login under
    # emulation on a busy machine can take tens of seconds.
    deadline=$((SECONDS + 300))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if timeout 90 ssh "${SSH_OPTIONS[@]}" -o ControlMaster=yes -o ControlPath="$work/ssh-%p" -N -f \
            -p "${SSH_PORT[$name]}" root@127.0.0.1 < /dev/null > /dev/null 2> "$work/$name.ssh.log"; then
            logged_in=true
            break
        fi
        sleep 2
    done
    if ! $logged_in; then
        console_tail "$name"
        cat "$work/$name.ssh.log" >&2
        fail "$name: up, but no SSH login within 300 s"
    fi
    [ "$(guest "$name" cat /proc/sys/kernel/random/boot_id)" = "$id" ] ||
        fail "$name: SSH reaches another boot than the console announced"
    state=$(guest "$name" timeout 120 systemctl is-system-running --wait) || true
    if [ "$state" != running ]; then
        guest "$name" systemctl --failed --no-pager >&2 || true
        fail "$name: systemd is $state after boot, not running"
    fi
}

# power_off NAME: a clean shutdown from inside, and qemu ends with it.
power_off() {
    local name=$1 pid=${QEMU_PID[$1]} deadline=$((SECONDS + POWEROFF_TIMEOUT)) status=0
    # Without D-Bus in the guest, `systemctl poweroff` cannot ask logind;
    # starting the target directly is the same clean shutdown.
    guest "$name" systemctl start --no-block --job-mode=replace-irreversibly poweroff.target
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        console_tail "$name"
        fail "$name: qemu still runs $POWEROFF_TIMEOUT s after the guest was told to power off"
    fi
    wait "$pid" || status=$?
    unset "QEMU_PID[$name]"
    [ "$status" -eq 0 ] || fail "$name: qemu exited with status $status"
}

# --- the lab -------------------------------------------------------------------

# What Vagrant does for node.vm.hostname and a private_network: the host
# name, and a static address on the link with the lab's MAC address.
configure_lab_link() {
    local name=$1 hostname=$2 address=$3 mac=$4
    guest_with_input "$name" bash -s -- "$hostname" "$address" "$mac" <<'EOF'
set -euo pipefail
hostname=$1 address=$2 mac=$3
echo "$hostname" > /etc/hostname
hostname "$hostname"
grep -q " $hostname\$" /etc/hosts || echo "127.0.1.1 $hostname" >> /etc/hosts
cat > /etc/systemd/network/20-lab.network <<NETWORK
[Match]
MACAddress=$mac

[Network]
Address=$address/24
LinkLocalAddressing=no
IPv6AcceptRA=no
NETWORK
systemctl restart systemd-networkd
for _ in $(seq 100); do
    ip -4 -brief address show to "$address" | grep -q . && exit 0
    sleep 0.2
done
echo "the lab address $address did not come up" >&2
exit 1
EOF
}

# The upload the Vagrantfile's file provisioners make, then its shell
# provisioner: provision.sh ROLE STAGING, as root.
provision() {
    local name=$1 role=$2
    tar -C "$repository" -c "dist/$arch" vagrant/systemd vagrant/provision.sh |
        guest_with_input "$name" "rm -rf $STAGING && mkdir -p $STAGING && tar -C $STAGING -x"
    guest "$name" bash "$STAGING/vagrant/provision.sh" "$role" "$STAGING" |
        sed "s/^/  $name: /"
}

declare -A SUM=()
read_sample_sums() {
    local sum name
    while read -r sum name; do
        SUM[$name]=$sum
    done < <(guest server "cd $SERVED_DIR && sha256sum ${SAMPLES[*]}")
    for name in "${SAMPLES[@]}"; do
        [ -n "${SUM[$name]:-}" ] || fail "no checksum for $SERVED_DIR/$name in the server"
    done
}

check_unit() {
    local model=$1 unit="tcpfile-server@$1.service" port=${MODEL_PORT[$1]} journal
    [ "$(guest server systemctl is-active "$unit")" = active ] || fail "$unit is not active"
    [ "$(guest server systemctl is-enabled "$unit")" = enabled ] || fail "$unit is not enabled"
    journal=$(guest server journalctl --boot --no-pager --output=cat --unit "$unit")
    grep -qx "listening on 0.0.0.0:$port" <<< "$journal" ||
        fail "$unit: the journal lacks the server's first line, 'listening on 0.0.0.0:$port'"
    grep -q "\] $model server listening on 0.0.0.0:$port, serving $SERVED_DIR\$" <<< "$journal" ||
        fail "$unit: the journal lacks the server's start-up log line"
}

# The sandbox, seen from inside the guest. Writes are tried as root in the
# unit's own mount namespace, where only the mounts can refuse them; the same
# writes in PID 1's namespace must succeed, or the check proves nothing.
check_sandbox() {
    local model=$1
    guest_with_input server bash -s -- "$model" "$SERVED_DIR" <<'EOF'
set -euo pipefail
model=$1 served=$2 unit="tcpfile-server@$1.service"
fail() { echo "$unit: $*" >&2; exit 1; }
pid=$(systemctl show --property MainPID --value "$unit")
[ "$pid" -gt 0 ] || fail "no main process"
status=/proc/$pid/status
grep -Eq "^Uid:[[:space:]]+$(id -u tcpfile)[[:space:]]" "$status" || fail "does not run as tcpfile"
grep -Eq '^NoNewPrivs:[[:space:]]+1$' "$status" || fail "may gain privileges"
grep -Eq '^CapEff:[[:space:]]+0+$' "$status" || fail "has effective capabilities"
grep -Eq '^CapBnd:[[:space:]]+0+$' "$status" || fail "keeps capabilities in its bounding set"
grep -Eq '^Seccomp:[[:space:]]+2$' "$status" || fail "runs without a system call filter"
for dir in "$served" /etc /usr/local/bin /var/lib; do
    probe="$dir/.tcpfile-sandbox-probe"
    if nsenter --target "$pid" --mount touch "$probe" 2>/dev/null; then
        nsenter --target "$pid" --mount rm -f "$probe"
        fail "root in the unit's mount namespace may write to $dir"
    fi
    touch "$probe" || fail "root outside the sandbox cannot write to $dir either: the check proves nothing"
    rm -f "$probe"
done
if nsenter --target "$pid" --mount setpriv --reuid=tcpfile --regid=tcpfile --clear-groups \
    sh -c ": > /tmp/tcpfile-sandbox-probe" 2>/dev/null; then
    [ ! -e /tmp/tcpfile-sandbox-probe ] || fail "its /tmp is the system's"
    nsenter --target "$pid" --mount rm -f /tmp/tcpfile-sandbox-probe
else
    fail "its user cannot write to its own private /tmp"
fi
exposure=$(systemd-analyze security --no-pager "$unit" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
awk -v exposure="$exposure" 'BEGIN { exit !(exposure != "" && exposure <= 2.0) }' ||
    fail "exposure level '$exposure' is above 2.0"
echo "  $unit: user tcpfile, no capabilities, seccomp filter, read-only $served /etc /usr/local/bin /var/lib, private /tmp, exposure $exposure"
EOF
}

# fetch_from_host MODEL NAME LABEL: through the forwarded port, with this
# host's client.
fetch_from_host() {
    local model=$1 name=$2 label=$3 copy started seconds
    copy="$work/fetched-$label-$model-$name"
    started=$(date +%s.%N)
    timeout "$COMMAND_TIMEOUT" "$host_client" -q --timeout 60 127.0.0.1 \
        "${FORWARDED[server:${MODEL_PORT[$model]}]}" "$name" 64M -o "$copy" ||
        fail "$label: the host's client could not fetch $name from the $model server"
    seconds=$(awk -v start="$started" -v now="$(date +%s.%N)" 'BEGIN { printf "%.2f", now - start }')
    [ "$(sha256sum "$copy" | cut -d' ' -f1)" = "${SUM[$name]}" ] ||
        fail "$label: $name from the $model server arrived altered"
    echo "  $label: $name from $model, byte-exact, $(stat -c %s "$copy") bytes in $seconds s"
    rm -f "$copy"
}

# fetch_from_client_guest MODEL NAME LABEL: over the lab network, the way
# the Vagrantfile's client machines fetch.
fetch_from_client_guest() {
    local model=$1 name=$2 label=$3 sum
    sum=$(guest client "tcpfile-client -q --timeout 60 $SERVER_IP ${MODEL_PORT[$model]} $name 64M -o /tmp/$name &&
        sha256sum /tmp/$name && rm -f /tmp/$name" | cut -d' ' -f1) ||
        fail "$label: the client guest could not fetch $name from the $model server"
    [ "$sum" = "${SUM[$name]}" ] || fail "$label: $name from the $model server arrived altered in the client guest"
    echo "  $label: $name from $model at $SERVER_IP, byte-exact in the client guest"
}

fetch_everything() {
    local label=$1 model name
    for model in "${MODELS[@]}"; do
        for name in "${SAMPLES[@]}"; do
            fetch_from_host "$model" "$name" "$label, host"
        done
        fetch_from_client_guest "$model" random-16M.bin "$label, client guest"
    done
}

# The server stops the unit as soon as the client guest's connection is
# established, lifts the slow link as the stop goes out, and reports how long
# `systemctl stop` took; the client guest fetches random-1M.bin meanwhile.
stop_in_flight() {
    local model=$1 unit="tcpfile-server@$1.service" port=${MODEL_PORT[$1]} stopper sum state order
    stopper="$work/stop-$model.out"
    guest server tc qdisc replace dev eth1 root tbf rate "$SLOW_RATE" burst 16kb latency 400ms
    guest_with_input server bash -s -- "$unit" "$port" "$STOP_TIMEOUT" > "$stopper" <<'EOF' &
set -euo pipefail
unit=$1 port=$2 stop_timeout=$3
echo ready
for _ in $(seq 1200); do
    ss -Htn state established "( sport = :$port )" | grep -q . && break
    sleep 0.05
done
started=$(date +%s%N)
# The stop job sends SIGTERM before the next command here has even started
# under emulation; the journal check afterwards tells if it ever did not.
systemctl stop --no-block "$unit"
tc qdisc del dev eth1 root
for _ in $(seq $((stop_timeout * 20 + 100))); do
    case "$(systemctl show --property ActiveState --value "$unit")" in
        inactive | failed) break ;;
    esac
    sleep 0.05
done
echo "stopped $(( ($(date +%s%N) - started) / 1000000 ))"
EOF
    local stopper_pid=$!
    for _ in $(seq 600); do
        grep -qx ready "$stopper" && break
        kill -0 "$stopper_pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -qx ready "$stopper" || fail "$unit: the stop could not be prepared"
    sum=$(guest client "tcpfile-client -q --timeout 60 $SERVER_IP $port random-1M.bin 64M -o /tmp/in-flight &&
        sha256sum /tmp/in-flight && rm -f /tmp/in-flight" | cut -d' ' -f1) ||
        fail "$unit: the transfer in flight during the stop failed"
    wait "$stopper_pid" || fail "$unit: systemctl stop failed"
    [ "$sum" = "${SUM[random-1M.bin]}" ] || fail "$unit: the transfer in flight during the stop arrived altered"
    local stop_ms
    stop_ms=$(sed -n 's/^stopped //p' "$stopper")
    if [ -z "$stop_ms" ] || [ "$stop_ms" -ge $((STOP_TIMEOUT * 1000)) ]; then
        fail "$unit: the stop took ${stop_ms:-?} ms"
    fi
    state=$(guest server systemctl show --property ActiveState --property Result --property ExecMainStatus "$unit" |
        sort | paste -sd' ')
    [ "$state" = "ActiveState=inactive ExecMainStatus=0 Result=success" ] ||
        fail "$unit ended with $state"
    # In the journal of this run of the unit: the stop came after the client
    # was ready to receive and before the transfer completed, and the
    # transfer completed within the grace period. Children that log the stop
    # as well count as one stop.
    order=$(guest server journalctl --boot --no-pager --output=short-unix --unit "$unit" | awk '
        function saw(event) { if (event != last) order = order " " event; last = event }
        / server listening on / { order = ""; last = ""; stop = ""; finish = "" }
        /: client is ready to receive$/ { saw("ready") }
        /received: stopping; transfers in flight have / { saw("stop"); if (stop == "") stop = $1 }
        /: transfer complete: / { saw("complete"); if (stop != "") finish = $1 }
        END { printf "%s|%s\n", order, (stop != "" && finish != "") ? sprintf("%.2f", finish - stop) : "" }')
    local after_stop=${order#*|}
    order=${order%|*}
    case "$order" in
        *" ready stop complete") ;;
        *) fail "$unit: the journal shows '$order', not a stop between 'ready' and 'complete'" ;;
    esac
    if ! awk -v after="$after_stop" -v grace="$GRACE" 'BEGIN { exit !(after != "" && after < grace) }'; then
        fail "$unit: the transfer completed ${after_stop:-?} s after the stop, not within the $GRACE s grace period"
    fi
    echo "  $unit: random-1M.bin in flight completed byte-exact $after_stop s after the stop (grace $GRACE s); systemctl stop took $stop_ms ms; the unit is inactive, result success, status 0"
}

# --- the run ---------------------------------------------------------------------

boot_started=$SECONDS
start_guest server 2 52:54:00:56:00:10 client "${MODEL_PORT[@]}"
start_guest client 1 52:54:00:56:00:11 server
wait_for_boot server
server_boot=$BOOT_SECONDS
step "server: up after $server_boot s ($accel): $(guest server systemd-analyze time | head -n 1)"
wait_for_boot client
client_boot=$BOOT_SECONDS
step "client: up after $client_boot s ($accel): $(guest client systemd-analyze time | head -n 1)"
boot_seconds=$((SECONDS - boot_started))

provision_started=$SECONDS
configure_lab_link server tcpfile-server "$SERVER_IP" 52:54:00:56:00:10
configure_lab_link client tcpfile-client "$CLIENT_IP" 52:54:00:56:00:11
step "provisioning the server with vagrant/provision.sh"
provision server server
step "provisioning the client with vagrant/provision.sh"
provision client client
provision_seconds=$((SECONDS - provision_started))
read_sample_sums

checks_started=$SECONDS
step "the units, their journals and their sandboxes"
for model in "${MODELS[@]}"; do
    check_unit "$model"
    check_sandbox "$model"
done
step "fetching"
fetch_everything "first boot"
checks_seconds=$((SECONDS - checks_started))

# A power cycle rather than a reboot inside the guest: under TCG a guest's
# own reset has hung here in its next kernel's early module loading.
reboot_started=$SECONDS
step "powering the server off and booting it again, as vagrant reload does"
power_off server
start_guest server 2 52:54:00:56:00:10 client "${MODEL_PORT[@]}"
wait_for_boot server "${BOOT_ID[server]}"
server_reboot=$BOOT_SECONDS
step "server: up again after $server_reboot s: $(guest server systemd-analyze time | head -n 1)"
for model in "${MODELS[@]}"; do
    check_unit "$model"
done
step "the units are enabled and serve again; fetching"
for model in "${MODELS[@]}"; do
    fetch_from_host "$model" random-1M.bin "after the power cycle, host"
    fetch_from_client_guest "$model" random-16M.bin "after the power cycle, client guest"
done
reboot_seconds=$((SECONDS - reboot_started))

stop_started=$SECONDS
step "stopping each unit with a transfer in flight (lab link at $SLOW_RATE until the stop, grace $GRACE s)"
for model in "${MODELS[@]}"; do
    stop_in_flight "$model"
done
stop_seconds=$((SECONDS - stop_started))

poweroff_started=$SECONDS
step "powering the guests off"
power_off server
power_off client
for port in "${!USED_PORTS[@]}"; do
    if ss -Htln "( sport = :$port )" | grep -q .; then
        fail "port $port on 127.0.0.1 still listens after the guests powered off"
    fi
done
poweroff_seconds=$((SECONDS - poweroff_started))
step "both guests powered off; no qemu and no forwarded port is left"

vagrant_summary=""
if [ "${TCPFILE_VM_VAGRANT:-}" = libvirt ]; then
    vagrant_started=$SECONDS
    ci/vm-vagrant-libvirt.sh
    vagrant_summary=", vagrant-libvirt $((SECONDS - vagrant_started)) s"
fi

step "passed in $((SECONDS - run_started)) s ($accel): image $image_seconds s, boot $boot_seconds s (server $server_boot s, client $client_boot s), provisioning $provision_seconds s, checks and fetches $checks_seconds s, power cycle and fetches $reboot_seconds s (server up again after $server_reboot s), stops in flight $stop_seconds s, poweroff $poweroff_seconds s$vagrant_summary"
