#!/usr/bin/env bash
# Builds, or finds in its cache, the Debian 12 guest that ci/vm-boot.sh boots:
# a root file system made with mmdebstrap (through qemu-user for a foreign
# architecture) with systemd, udev, an SSH server, tcpdump and Debian's
# kernel, put on an ext4 disk image without loop devices, beside the kernel
# and the initrd of the same packages and an SSH key that root accepts.
#
#   ci/vm-image.sh amd64|arm64
#
# Prints the guest's directory on stdout, and what it did on stderr:
#   disk.img        raw ext4 image of the root file system (boot it read-only:
#                   qemu's -snapshot keeps a guest's writes elsewhere)
#   vmlinuz, initrd.img
#   id_ed25519      the key root accepts over SSH
#   known_hosts     the guest's host key, under the name tcpfile-vm
# The cache is ${TCPFILE_VM_CACHE:-.cache/vm} in the checkout, one directory
# per architecture and hash of its inputs: this script (the package list, the
# hooks, the release) and the Debian mirror. A build for new inputs replaces
# the older ones of that architecture. DEBIAN_MIRROR overrides the mirror,
# which is otherwise the Debian archive apt uses here.
#
# Runs as root; installs mmdebstrap and, for a foreign architecture,
# arch-test and the qemu-user handlers (ci/binfmt.sh) when they are missing.
set -euo pipefail

SUITE=bookworm

fail() {
    echo "vm-image: FAILED: $*" >&2
    exit 1
}

say() {
    echo "vm-image: $*" >&2
}

arch=${1:-}
case "$arch" in
    amd64)
        kernel_package=linux-image-cloud-amd64
        qemu_arch=x86_64
        ;;
    arm64)
        # Debian 12 has no cloud flavour for arm64.
        kernel_package=linux-image-arm64
        qemu_arch=aarch64
        ;;
    *) fail "usage: ci/vm-image.sh amd64|arm64" ;;
esac
[ "$(id -u)" -eq 0 ] || fail "run as root: the root file system is built as root"

cd "$(dirname "$0")/.."
repository=$(pwd)
cache=${TCPFILE_VM_CACHE:-$repository/.cache/vm}

# Only what the lab needs: systemd as init with udev (networkd configures a
# link only once udev has seen it), networkd (part of systemd) for the
# addresses, an SSH server for the checks and for provisioning, tcpdump so
# that provisioning finds it, iproute2 for ip, ss and tc, and the kernel.
PACKAGES=(systemd systemd-sysv udev openssh-server iproute2 tcpdump kmod "$kernel_package")
# Kernel modules for hardware a qemu guest does not have: less to unpack
# under emulation, a smaller disk.
UNUSED_MODULES=(drivers/gpu drivers/media drivers/net/wireless drivers/net/ethernet
    drivers/infiniband drivers/staging drivers/usb drivers/bluetooth drivers/iio
    drivers/input drivers/hid drivers/isdn drivers/mtd drivers/hwmon drivers/scsi sound)
# The initrd only has to find an ext4 root on a virtio disk; a short list
# keeps it small, quick to build under emulation and quick to unpack.
INITRD_MODULES=(virtio_pci virtio_mmio virtio_blk ext4)
# A guest lives for minutes and is thrown away, and under emulation every
# unit started costs seconds: no timers, consoles, kernel modules loaded in
# advance, debug or hugepage mounts, saved random seeds, utmp records or
# first-boot updates. The root file system is mounted read-write from the
# kernel command line and never checked or remounted.
MASKED_UNITS=(apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer fstrim.timer
    e2scrub_all.timer systemd-tmpfiles-clean.timer
    getty@.service serial-getty@.service getty-static.service
    modprobe@.service kmod-static-nodes.service
    dev-hugepages.mount dev-mqueue.mount sys-kernel-debug.mount sys-kernel-tracing.mount
    sys-kernel-config.mount sys-fs-fuse-connections.mount
    proc-sys-fs-binfmt_misc.automount systemd-binfmt.service
    systemd-pstore.service systemd-random-seed.service systemd-journal-flush.service
    systemd-update-utmp.service systemd-update-utmp-runlevel.service
    systemd-network-generator.service systemd-remount-fs.service systemd-firstboot.service
    ldconfig.service systemd-update-done.service)

configured_mirror() {
    # shellcheck disable=SC2016 # apt's own $(...) placeholders
    apt-get indextargets --format '$(REPO_URI)' 2>/dev/null |
        grep -E '/debian/?$' | sort -u | head -n 1 || true
}
mirror=${DEBIAN_MIRROR:-$(configured_mirror)}
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
security_mirror=${mirror%/debian}/debian-security

key=$( (cat "$0"; echo "$arch $SUITE $mirror") | sha256sum | cut -c1-16)
guest="$cache/$arch-$key"
if [ -f "$guest/complete" ]; then
    say "reusing $guest"
    echo "$guest"
    exit 0
fi

missing=()
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
host_arch=$(dpkg --print-architecture)
if [ "$arch" != "$host_arch" ]; then
    command -v arch-test >/dev/null 2>&1 || missing+=(arch-test)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$arch" != "$host_arch" ]; then
    case "$qemu_arch" in
        aarch64) ci/binfmt.sh aarch64 >&2 ;;
        *) [ -e "/proc/sys/fs/binfmt_misc/qemu-$qemu_arch" ] ||
            fail "building an $arch guest here needs a qemu-$qemu_arch binfmt handler" ;;
    esac
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/.build-$arch.XXXXXX")
rootfs="$work/rootfs"
mkdir "$rootfs"
cleanup() {
    local mounted
    awk -v root="$work" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r mounted; do umount -l "$mounted" || true; done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
# dpkg syncs every file it writes; in memory the build does not wait for the
# disk. Where mounting is not allowed, the disk does it.
mount -t tmpfs -o size=3G,mode=0755 tmpfs "$rootfs" 2>/dev/null ||
    say "no tmpfs for the build; building on disk"

started=$SECONDS
say "building a Debian $SUITE $arch root file system from $mirror"
TCPFILE_INITRD_MODULES=$(printf '%s\n' "${INITRD_MODULES[@]}")
export TCPFILE_INITRD_MODULES
packages=$(IFS=,; echo "${PACKAGES[*]}")
dpkg_options=(--dpkgopt=force-unsafe-io
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*')
for modules in "${UNUSED_MODULES[@]}"; do
    dpkg_options+=("--dpkgopt=path-exclude=/lib/modules/*/kernel/$modules/*")
done
# The essential variant resolves and downloads with this host's apt, natively,
# and installs no apt in the guest, which needs none. The essential hook runs
# before the kernel is installed, so that its initrd is built with this
# configuration from the start.
# shellcheck disable=SC2016 # the hook's $1 is mmdebstrap's, not ours
mmdebstrap --variant=essential --arch="$arch" --include="$packages" "${dpkg_options[@]}" \
    --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d" &&
        echo MODULES=list > "$1/etc/initramfs-tools/conf.d/tcpfile-vm.conf" &&
        printf "%s\n" "$TCPFILE_INITRD_MODULES" > "$1/usr/share/initramfs-tools/modules.d/tcpfile-vm"' \
    "$SUITE" "$rootfs" \
    "deb $mirror $SUITE main" "deb $mirror $SUITE-updates main" \
    "deb $security_mirror $SUITE-security main" \
    > "$work/mmdebstrap.log" 2>&1 ||
    { tail -n 30 "$work/mmdebstrap.log" >&2; fail "mmdebstrap"; }
say "root file system built in $((SECONDS - started)) s"

# The guest boots with root=/dev/vda rw: nothing more to mount.
echo '# The root file system is mounted from the kernel command line.' > "$rootfs/etc/fstab"
printf '%s\n' '127.0.0.1 localhost' '::1 localhost ip6-localhost ip6-loopback' > "$rootfs/etc/hosts"
# The journal lasts as long as the guest, in memory.
mkdir -p "$rootfs/etc/systemd/journald.conf.d"
printf '%s\n' '[Journal]' 'Storage=volatile' > "$rootfs/etc/systemd/journald.conf.d/tcpfile-vm.conf"
rm -rf "$rootfs/var/log/journal"
# sshd checks its configuration before each start: one more run of it.
mkdir -p "$rootfs/etc/systemd/system/ssh.service.d"
printf '%s\n' '[Service]' 'ExecStartPre=' > "$rootfs/etc/systemd/system/ssh.service.d/tcpfile-vm.conf"
# The first link is qemu's user-mode network (10.0.2.15 by DHCP, forwarded
# ports); ci/vm-boot.sh configures the second, the lab network, the way
# Vagrant configures a private network: after boot.
cat > "$rootfs/etc/systemd/network/10-eth0.network" <<'EOF'
[Match]
Name=eth0

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
cat > "$rootfs/etc/ssh/sshd_config.d/tcpfile-vm.conf" <<'EOF'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
EOF
# The serial-console hook: one line on the console once SSH runs and the
# network is configured, so that ci/vm-boot.sh sees the end of the boot
# without polling SSH, which costs a login each time under emulation.
cat > "$rootfs/etc/systemd/system/tcpfile-vm-ready.service" <<'EOF'
[Unit]
Description=Announce on the console that the guest is up
Wants=network-online.target
After=ssh.service network-online.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "tcpfile-vm: up, boot $(cat /proc/sys/kernel/random/boot_id)" > /dev/console'

[Install]
WantedBy=multi-user.target
EOF
chroot "$rootfs" systemctl enable --quiet systemd-networkd.service tcpfile-vm-ready.service
chroot "$rootfs" systemctl mask --quiet "${MASKED_UNITS[@]}"

ssh-keygen -q -t ed25519 -N '' -C "tcpfile-vm root" -f "$work/id_ed25519"
install -d -m 0700 "$rootfs/root/.ssh"
install -m 0600 "$work/id_ed25519.pub" "$rootfs/root/.ssh/authorized_keys"
echo "tcpfile-vm $(cut -d' ' -f1,2 "$rootfs/etc/ssh/ssh_host_ed25519_key.pub")" > "$work/known_hosts"

kernels=("$rootfs"/boot/vmlinuz-*)
initrds=("$rootfs"/boot/initrd.img-*)
if [ "${#kernels[@]}" -ne 1 ] || [ ! -f "${kernels[0]}" ]; then
    fail "expected one kernel in /boot"
fi
if [ "${#initrds[@]}" -ne 1 ] || [ ! -f "${initrds[0]}" ]; then
    fail "expected one initrd in /boot"
fi
cp "${kernels[0]}" "$work/vmlinuz"
cp "${initrds[0]}" "$work/initrd.img"

# Room for the samples, the journal and a few runs of provisioning.
used_mib=$(du -sm "$rootfs" | cut -f1)
size_mib=$((used_mib + 512))
mkfs.ext4 -q -F -L tcpfile-root -d "$rootfs" "$work/disk.img" "${size_mib}M" >&2
umount "$rootfs" 2>/dev/null || true
rm -rf "$rootfs"

printf '%s\n' "suite=$SUITE" "arch=$arch" "mirror=$mirror" "kernel=$(basename "${kernels[0]}")" \
    "packages=${PACKAGES[*]}" > "$work/inputs"
touch "$work/complete"
for old in "$cache/$arch"-*; do
    [ "$old" = "$guest" ] || rm -rf "$old"
done
mv "$work" "$guest"
trap - EXIT
say "built $guest in $((SECONDS - started)) s: $(basename "${kernels[0]}"), a ${size_mib} MiB disk with ${used_mib} MiB used"
echo "$guest"
