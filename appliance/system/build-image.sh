#!/usr/bin/env bash
# Build Cairn's bootable disk image: a minimal Debian 12 with Cairn in /opt/cairn, booting under BIOS
# and UEFI (GRUB), as OUT/cairn.raw and OUT/cairn.qcow2 (compressed).
#
#   appliance/system/build-image.sh OUT    (as root, from the repository; `make image` runs it)
#
# The disk: GPT with a BIOS boot partition, an EFI system partition and the root file system (ext4,
# label cairn-root). Nothing made per machine is in it: the SSH host keys of the front doors, the TLS
# certificate and the first administrator's password are made at first boot (cairn-firstboot.sh).
# Reproducible: a fixed package list, fixed partition and file system ids, and every time stamp at
# SOURCE_DATE_EPOCH (the last commit's time unless given).
set -euo pipefail

OUT=${1:?usage: build-image.sh OUT}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SIZE=${SIZE:-3G}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct)}
export LC_ALL=C DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" = 0 ] || { echo "build-image.sh: run as root (loop devices, mounts, chroot)" >&2; exit 1; }

# Everything the appliance runs on, and nothing else (the versions are bookworm's).
PACKAGES=$(grep -v '^#' "$HERE/packages.txt" | tr '\n' ',' | sed 's/,*$//')
# Fixed ids: the same inputs give the same disk.
DISK_GUID=6f1d9a52-3c1e-4c55-9a1b-0ca1d0000001
ROOT_UUID=6f1d9a52-3c1e-4c55-9a1b-0ca1d0000003
ESP_ID=CA1A0002

WORK=$(mktemp -d /var/tmp/cairn-image.XXXXXX)
ROOT=$WORK/root
LOOPS=()
cleanup() {
    set +e
    for m in dev/pts dev proc sys run; do mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m"; done
    mountpoint -q "$ROOT" && umount -l "$ROOT"
    for l in "${LOOPS[@]}"; do losetup -d "$l"; done
    if [ "${KEEP_WORK:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

echo "== wheels of Cairn and everything it imports"
WHEELS=$WORK/wheels
mkdir -p "$WHEELS"
PY=$REPO/.venv/bin/python
"$PY" -m pip wheel -q --no-deps -w "$WHEELS" "$REPO/.venv/src/pyfuse3-3.5.0"  # patched by `make setup`
"$PY" -m pip wheel -q -w "$WHEELS" --find-links "$WHEELS" "$REPO"

echo "== the disk ($SIZE, GPT: BIOS boot, EFI, root)"
mkdir -p "$OUT"
RAW=$OUT/cairn.raw
rm -f "$RAW"
truncate -s "$SIZE" "$RAW"
sgdisk -U "$DISK_GUID" \
    -n 1:2048:+1M -t 1:EF02 -c 1:bios -u 1:6f1d9a52-3c1e-4c55-9a1b-0ca1d0000011 \
    -n 2:0:+63M -t 2:EF00 -c 2:efi -u 2:6f1d9a52-3c1e-4c55-9a1b-0ca1d0000012 \
    -n 3:0:0 -t 3:8300 -c 3:root -u 3:6f1d9a52-3c1e-4c55-9a1b-0ca1d0000013 "$RAW" >/dev/null
part() { partx -g -o "$2" -n "$1" "$RAW" | tr -d ' '; }  # a partition's START or SECTORS
# A loop device per partition, by offset: partition scanning needs udev, which a build machine may lack.
ESP=$(losetup --show -f -o $(($(part 2 START) * 512)) --sizelimit $(($(part 2 SECTORS) * 512)) "$RAW")
LOOPS+=("$ESP")
DEV=$(losetup --show -f -o $(($(part 3 START) * 512)) --sizelimit $(($(part 3 SECTORS) * 512)) "$RAW")
LOOPS+=("$DEV")
mkfs.vfat -F 32 -n EFI -i "$ESP_ID" "$ESP" >/dev/null
mkfs.ext4 -q -L cairn-root -U "$ROOT_UUID" -E hash_seed="$ROOT_UUID" "$DEV"
mkdir -p "$ROOT"
mount "$DEV" "$ROOT"

echo "== Debian 12 (mmdebstrap from $MIRROR)"
# mmdebstrap rather than debootstrap: apt fetches in parallel and dpkg skips its fsyncs (57 s, not 90 s).
mmdebstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOT" "$MIRROR" >"$WORK/mmdebstrap.log" 2>&1 \
    || { tail -30 "$WORK/mmdebstrap.log"; exit 1; }
for m in dev dev/pts proc sys run; do mount --bind "/$m" "$ROOT/$m"; done
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C \
    DEBIAN_FRONTEND=noninteractive SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" "$@"; }

echo "== Cairn in /opt/cairn"
cp -r "$WHEELS" "$ROOT/tmp/wheels"
in_root python3 -m venv /opt/cairn
in_root /opt/cairn/bin/pip install -q --no-index --find-links /tmp/wheels cairn-backup
rm -rf "$ROOT/tmp/wheels"

echo "== the system: units, first boot, console, network"
install -m 0755 "$HERE/cairn-firstboot.sh" "$ROOT/usr/local/sbin/cairn-firstboot"
install -m 0755 "$HERE/cairn-ready.sh" "$ROOT/usr/local/sbin/cairn-ready"
install -m 0755 "$HERE/seed_network.py" "$ROOT/usr/local/sbin/cairn-seed-network"
for unit in cairn.service cairn-seed.service cairn-firstboot.service cairn-ready.service cairn-ready.path \
        cairn-scrub.service cairn-scrub.timer; do
    install -m 0644 "$HERE/$unit" "$ROOT/etc/systemd/system/$unit"
done
install -m 0644 "$HERE/interfaces" "$ROOT/etc/network/interfaces"
echo cairn >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tcairn\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
printf 'UUID=%s\t/\text4\terrors=remount-ro\t0\t1\n' "$ROOT_UUID" >"$ROOT/etc/fstab"
mkdir -p "$ROOT/var/lib/cairn" "$ROOT/srv/cairn"
chmod 0700 "$ROOT/var/lib/cairn"
in_root systemctl enable -q cairn-seed.service cairn-firstboot.service cairn.service cairn-ready.path \
    cairn-scrub.timer
# The appliance runs its own sshd, rsync daemon and smbd on its doors: the packages' own services stay off.
in_root systemctl disable -q ssh.service smbd.service nmbd.service rsync.service 2>/dev/null || true
in_root systemctl mask -q ssh.socket samba-ad-dc.service 2>/dev/null || true
rm -f "$ROOT/etc/resolv.conf"  # the build machine's: DHCP writes this machine's own
# Root has no password: the console shows the web address and the administrator's one-time password.
in_root passwd -l root >/dev/null

echo "== GRUB for BIOS and UEFI (serial console and screen)"
# Made here rather than by grub-install, which must map the root file system to a disk it can see.
# Both images find the root file system by its UUID and read /boot/grub/grub.cfg from it.
printf 'search --no-floppy --fs-uuid --set=root %s\nset prefix=($root)/boot/grub\n' "$ROOT_UUID" >"$WORK/early.cfg"
GRUB_MODULES="part_gpt ext2 search search_fs_uuid normal linux configfile serial terminal echo test"
grub-mkimage -O i386-pc -o "$WORK/core.img" -c "$WORK/early.cfg" -p /boot/grub biosdisk $GRUB_MODULES
mkdir -p "$ROOT/boot/grub"
grub-mkimage -O x86_64-efi -o "$WORK/BOOTX64.EFI" -c "$WORK/early.cfg" -p /boot/grub \
    fat efi_gop all_video $GRUB_MODULES
# The EFI partition holds that one file, written with mtools (no vfat mount needed, nor in fstab).
mmd -i "$ESP" ::/EFI ::/EFI/BOOT
touch -d "@$SOURCE_DATE_EPOCH" "$WORK/BOOTX64.EFI"
mcopy -m -i "$ESP" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
cp -r /usr/lib/grub/i386-pc /usr/lib/grub/x86_64-efi "$ROOT/boot/grub/"
KERNEL=$(cd "$ROOT/boot" && ls vmlinuz-* | sort -V | tail -n1)
INITRD=initrd.img-${KERNEL#vmlinuz-}
cat >"$ROOT/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=1
menuentry "Cairn" {
    search --no-floppy --fs-uuid --set=root $ROOT_UUID
    linux /boot/$KERNEL root=UUID=$ROOT_UUID ro quiet net.ifnames=0 console=tty0 console=ttyS0,115200n8
    initrd /boot/$INITRD
}
EOF

echo "== what a backup appliance does not need: documentation, translations, drivers of sound, video and radio"
find "$ROOT/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete  # the licences stay
rm -rf "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/lintian "$ROOT"/usr/share/locale/*/
MODULES_DIR=$(echo "$ROOT"/lib/modules/*)
for dir in sound media gpu/drm/amd gpu/drm/nouveau gpu/drm/i915 gpu/drm/radeon net/wireless bluetooth \
        infiniband staging isdn iio input/touchscreen input/joystick; do
    rm -rf "$MODULES_DIR/kernel/drivers/$dir"
done
rm -rf "$MODULES_DIR/kernel/net/wireless" "$MODULES_DIR/kernel/net/mac80211" "$MODULES_DIR/kernel/net/bluetooth"
in_root depmod "$(basename "$MODULES_DIR")"
# No floppy: probing the empty drive a virtual machine offers costs each disk scan a read error.
echo "blacklist floppy" >"$ROOT/etc/modprobe.d/cairn.conf"
in_root update-initramfs -u -k all >/dev/null

echo "== what is made per machine goes; the rest is dated $SOURCE_DATE_EPOCH"
rm -f "$ROOT"/etc/ssh/ssh_host_* "$ROOT/var/lib/dbus/machine-id"
: >"$ROOT/etc/machine-id"  # systemd makes one at first boot
in_root apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/log/*.log "$ROOT"/tmp/* \
    "$ROOT"/var/cache/ldconfig/aux-cache
find "$ROOT" -xdev -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0 -r touch -h -d "@$SOURCE_DATE_EPOCH"
du -sh --exclude=proc --exclude=sys --exclude=dev "$ROOT" | sed 's/^/root file system: /'
sync -f "$ROOT"  # the journal commits the deletions: only then are their blocks free to trim
fstrim -v "$ROOT"  # deleted files' blocks become holes: the qcow2 compresses what is left

for m in dev/pts dev proc sys run; do umount "$ROOT/$m"; done
umount "$ROOT"
for l in "${LOOPS[@]}"; do losetup -d "$l"; done
LOOPS=()
# BIOS: GRUB's boot sector in the MBR (its partition table kept) and its core image in the BIOS boot
# partition, each told where the next part is (what grub-bios-setup does): the MBR code loads sector
# START, whose block list continues at START+1.
START=$(part 1 START)
dd if=/usr/lib/grub/i386-pc/boot.img of="$RAW" bs=440 count=1 conv=notrunc status=none
dd if="$WORK/core.img" of="$RAW" bs=512 seek="$START" conv=notrunc status=none
le64() { printf '%016x' "$1" | sed -E 's/(..)(..)(..)(..)(..)(..)(..)(..)/\8\7\6\5\4\3\2\1/' | xxd -r -p; }
le64 "$START" | dd of="$RAW" bs=1 seek=$((0x5c)) conv=notrunc status=none
le64 $((START + 1)) | dd of="$RAW" bs=1 seek=$((START * 512 + 500)) conv=notrunc status=none
echo "== $OUT/cairn.qcow2"
qemu-img convert -c -O qcow2 "$RAW" "$OUT/cairn.qcow2"
ls -l "$RAW" "$OUT/cairn.qcow2"
