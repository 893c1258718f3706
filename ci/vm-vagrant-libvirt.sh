#!/usr/bin/env bash
# Brings the lab up with Vagrant itself: vagrant-libvirt, a qemu domain
# without KVM, and a box made here from the image of ci/vm-image.sh, under the
# name of the box the Vagrantfile asks for, so that vagrant/Vagrantfile is
# used exactly as it is. `vagrant up server client1` boots, names, networks
# and provisions both; the check fetches a file byte-exact from client1 over
# the private network; `vagrant destroy` ends it.
#
#   ci/vm-vagrant-libvirt.sh
#
# amd64 only (the Vagrantfile's default). Runs as root and installs vagrant,
# vagrant-libvirt and libvirt when missing. libvirtd, virtlogd and all the
# networks they make run in a network namespace of their own, and Vagrant
# with them; the box, Vagrant's state and the storage pool live in a
# temporary directory. All of it is removed at the end. Refuses to run where
# a libvirtd already runs, rather than touch its networks and domains.
set -euo pipefail

NAMESPACE=tcpfile-vmboot-libvirt
POOL=default
BOX=debian/bookworm64
MACHINES=(server client1)
UP_TIMEOUT=2400

fail() {
    echo "vm-vagrant-libvirt: FAILED: $*" >&2
    exit 1
}

step() {
    echo "vm-vagrant-libvirt: $*"
}

[ "$(id -u)" -eq 0 ] || fail "run as root: libvirtd and the network namespace need it"
cd "$(dirname "$0")/.."
repository=$(pwd)
started=$SECONDS

pgrep -x libvirtd >/dev/null && fail "a libvirtd runs already; this check starts its own"
ip netns list | grep -qw "$NAMESPACE" && fail "the network namespace $NAMESPACE exists already"

missing=()
command -v vagrant >/dev/null 2>&1 || missing+=(vagrant)
dpkg -s vagrant-libvirt >/dev/null 2>&1 || missing+=(vagrant-libvirt)
command -v libvirtd >/dev/null 2>&1 || missing+=(libvirt-daemon-system)
command -v virsh >/dev/null 2>&1 || missing+=(libvirt-clients)
dpkg -s dnsmasq-base >/dev/null 2>&1 || missing+=(dnsmasq-base)
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -f dist/amd64/SHA256SUMS ] || ci/build-static.sh x86_64-unknown-linux-musl
image=$(ci/vm-image.sh amd64)

# Under /var/tmp with open directories: qemu runs as libvirt's own user and
# must reach the box's kernel, initrd and disk.
work=$(mktemp -d /var/tmp/tcpfile-vmboot-vagrant.XXXXXX)
chmod 0755 "$work"
export VAGRANT_HOME="$work/vagrant-home" VAGRANT_DOTFILE_PATH="$work/vagrant-state"
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1 VAGRANT_DEFAULT_PROVIDER=libvirt
daemons=()
cleanup() {
    local pid domain network
    # Everything here is tried, whatever fails.
    set +e
    if [ -d "$VAGRANT_DOTFILE_PATH" ]; then
        (cd "$repository/vagrant" &&
            timeout 300 ip netns exec "$NAMESPACE" vagrant destroy -f >/dev/null 2>&1) || true
    fi
    # What vagrant destroy could not remove. Every domain and network named
    # vagrant* in this libvirtd is this run's: it refused to start beside
    # another libvirtd.
    for domain in $(virsh -c qemu:///system list --all --name 2>/dev/null | grep '^vagrant'); do
        virsh -c qemu:///system destroy "$domain" >/dev/null 2>&1
        virsh -c qemu:///system undefine "$domain" >/dev/null 2>&1
    done
    for network in $(virsh -c qemu:///system net-list --all --name 2>/dev/null | grep '^vagrant'); do
        virsh -c qemu:///system net-destroy "$network" >/dev/null 2>&1
        virsh -c qemu:///system net-undefine "$network" >/dev/null 2>&1
    done
    virsh -c qemu:///system pool-destroy "$POOL" >/dev/null 2>&1 || true
    for pid in "${daemons[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    ip netns delete "$NAMESPACE" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "making the box $BOX for libvirt from $image"
box="$work/box"
mkdir -p "$box"
qemu-img convert -O qcow2 "$image/disk.img" "$box/box.img"
cp "$image/vmlinuz" "$image/initrd.img" "$image/id_ed25519" "$box/"
echo '{"provider": "libvirt", "format": "qcow2", "virtual_size": 2}' > "$box/metadata.json"
# The box's own Vagrantfile, merged under the project's: root logs in with the
# image's key (there is no vagrant user and no sudo), and libvirt boots the
# image's kernel under TCG.
cat > "$box/Vagrantfile" <<'EOF'
BOX_DIR = File.expand_path(__dir__)
Vagrant.configure("2") do |config|
  config.ssh.username = "root"
  config.ssh.private_key_path = File.join(BOX_DIR, "id_ed25519")
  config.ssh.insert_key = false
  config.ssh.sudo_command = "%c"
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "qemu"
    libvirt.cpu_mode = "custom"
    libvirt.cpu_model = "qemu64"
    libvirt.kernel = File.join(BOX_DIR, "vmlinuz")
    libvirt.initrd = File.join(BOX_DIR, "initrd.img")
    libvirt.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet mitigations=off"
    libvirt.disk_bus = "virtio"
    libvirt.nic_model_type = "virtio"
    libvirt.graphics_type = "none"
    libvirt.video_type = "none"
  end
end
EOF
tar -C "$box" -cf "$work/box.tar" .
vagrant box add --name "$BOX" "$work/box.tar" >/dev/null
rm -rf "$box" "$work/box.tar"

step "starting virtlogd and libvirtd in the network namespace $NAMESPACE"
ip netns add "$NAMESPACE"
ip netns exec "$NAMESPACE" ip link set lo up
ip netns exec "$NAMESPACE" virtlogd -d -p "$work/virtlogd.pid"
ip netns exec "$NAMESPACE" libvirtd -d -p "$work/libvirtd.pid"
for _ in $(seq 100); do
    [ -s "$work/libvirtd.pid" ] && virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
done
for daemon in libvirtd virtlogd; do
    [ -s "$work/$daemon.pid" ] || fail "$daemon did not start"
    daemons+=("$(cat "$work/$daemon.pid")")
done
virsh -c qemu:///system version >/dev/null || fail "libvirtd does not answer"
mkdir -p "$work/pool"
chmod 0755 "$work/pool"
virsh -c qemu:///system pool-create-as "$POOL" dir --target "$work/pool" >/dev/null

up_started=$SECONDS
step "vagrant up ${MACHINES[*]} --provider=libvirt (qemu without KVM)"
(cd vagrant && timeout "$UP_TIMEOUT" ip netns exec "$NAMESPACE" vagrant up "${MACHINES[@]}" --provider=libvirt) |
    tr '\r' '\n' | grep --line-buffered -v 'Progress: ' | sed 's/^/  /'
step "vagrant up took $((SECONDS - up_started)) s"

in_vagrant() {
    local machine=$1
    shift
    (cd vagrant && timeout 300 ip netns exec "$NAMESPACE" vagrant ssh "$machine" -c "$*" 2>/dev/null)
}
expected=$(in_vagrant server "sha256sum /srv/tcpfile/random-16M.bin" | cut -d' ' -f1)
for port in 9001 9002 9003; do
    fetched=$(in_vagrant client1 "tcpfile-client -q 192.168.56.10 $port random-16M.bin 64M -o /tmp/random-16M.bin &&
        sha256sum /tmp/random-16M.bin" | cut -d' ' -f1)
    if [ -z "$expected" ] || [ "$fetched" != "$expected" ]; then
        fail "client1 did not fetch random-16M.bin byte-exact from port $port"
    fi
    step "client1 fetched random-16M.bin from 192.168.56.10 port $port, byte-exact"
done

(cd vagrant && timeout 300 ip netns exec "$NAMESPACE" vagrant destroy -f >/dev/null)
rm -rf "$VAGRANT_DOTFILE_PATH"
step "passed in $((SECONDS - started)) s; the machines are destroyed"
