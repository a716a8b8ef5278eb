#!/bin/sh
# Builds the small OS disk image herd's sandbox installs on its virtual
# machine (image2disk writes it to the disk, writefile then puts the
# machine's host name in /etc/hostname on partition 2), without mounting
# anything and without loop devices:
#
#   sector 0      syslinux's MBR boot code and an MBR partition table
#   partition 1   FAT, bootable: syslinux (ldlinux.sys) for BIOS, syslinux
#                 for UEFI at the removable-media path EFI/BOOT/BOOTX64.EFI
#                 (with ldlinux.e64), one syslinux.cfg for both, the
#                 Debian kernel and an initramfs whose /init is firstboot
#                 (./firstboot) with the disk, NIC and ext4 modules
#   partition 2   ext4, label herd-root: /etc/hostname (a placeholder) and
#                 the directories writefile actions usually target
#
# The same disk boots under SeaBIOS and under OVMF. At boot firstboot
# reads /etc/hostname from partition 2, leases an address by DHCP on every
# Ethernet NIC, asks herd-metadata for the host name, prints
#   herd-installed-os: hostname=NAME (metadata) file=NAME
# on the serial console and powers off.
#
# The kernel comes from the same cache as worker/osie/build.sh (one
# download for both). Offline once the kernel package is cached.
#
# Environment:
#   OUT               output folder (default: bin/osimage): disk.img,
#                     disk.img.gz, SHA256SUMS, layout.env
#   METADATA_URL      herd-metadata's base URL on the kernel command line
#                     (default: none: firstboot asks http://<DHCP server>:50061
#                     of each lease in turn)
#   APPEND            more kernel parameters
#   HOSTNAME_PLACEHOLDER  /etc/hostname as built (default: herd-unprovisioned)
#   BOOT_MB, ROOT_MB  partition sizes in MiB (default: 40 and 16; FAT16: BOOT_MB <= 2000)
#   CACHE             kernel package cache (default: .tmp/osie-cache)
#   KERNEL_DEB        a linux-image-*.deb to use instead of apt-get download
#   SOURCE_DATE_EPOCH time stamp of every file (default: the last commit's)
#   GZIP_IMAGE        0: do not write disk.img.gz (default: 1)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
OUT=${OUT:-$root/bin/osimage}
CACHE=${CACHE:-$root/.tmp/osie-cache}
METADATA_URL=${METADATA_URL:-}
APPEND=${APPEND:-}
HOSTNAME_PLACEHOLDER=${HOSTNAME_PLACEHOLDER:-herd-unprovisioned}
BOOT_MB=${BOOT_MB:-40}
if [ "$BOOT_MB" -lt 16 ] || [ "$BOOT_MB" -gt 2000 ]; then
	echo "osimage: BOOT_MB=$BOOT_MB: want 16 to 2000 (FAT16)" >&2
	exit 1
fi
ROOT_MB=${ROOT_MB:-16}
GZIP_IMAGE=${GZIP_IMAGE:-1}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
# mke2fs stamps its own times with this one.
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
export E2FSPROGS_FAKE_TIME
MTOOLS_SKIP_CHECK=1
export MTOOLS_SKIP_CHECK
mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd)

say() { printf 'osimage: %s\n' "$*" >&2; }
die() {
	say "error: $*"
	exit 1
}

for tool in dpkg-deb modprobe cpio zstd go sfdisk mkfs.vfat mcopy mmd syslinux mke2fs debugfs gzip sha256sum; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (make deps installs what sandbox/osimage/deps.txt lists)"
done
mbr=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$mbr" ] || die "$mbr is missing (Debian package syslinux-common)"
# UEFI: syslinux's x86-64 EFI loader and its core module.
efi=/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi
[ -f "$efi" ] || die "$efi is missing (Debian package syslinux-efi)"
efild=/usr/lib/syslinux/modules/efi64/ldlinux.e64
[ -f "$efild" ] || die "$efild is missing (Debian package syslinux-common)"

work=$(mktemp -d "${TMPDIR:-/tmp}/herd-osimage.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# 1. The kernel: Debian's linux-image package, extracted, never installed
# (scripts/debian-kernel.sh; the OSIE and the OS image share its cache).
kdir=$("$root/scripts/debian-kernel.sh" "$CACHE") || die "no kernel"
kver=$(ls "$kdir/lib/modules")

# 2. The initramfs: firstboot as /init, the modules of modules.txt with
# their dependencies, and their load order in /etc/herd/modules.list.
stage=$work/initramfs
mkdir -p "$stage/etc/herd" "$stage/dev" "$stage/proc" "$stage/sys" "$stage/mnt/root"
say "building firstboot"
(cd "$root/sandbox" && GOWORK=off CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -buildvcs=false \
	-ldflags '-s -w -buildid=' -o "$stage/init" ./osimage/firstboot)
{
	echo "# kernel modules in load order (dependencies first), written by build.sh"
	grep -v '^#' "$here/modules.txt" | awk 'NF { print $1 }' | while read -r m; do
		modprobe -d "$kdir" -S "$kver" --show-depends "$m" 2>/dev/null >"$work/dep" ||
			die "module $m is not in $(basename "$kdir")"
		awk '$1 == "insmod" { print $2 }' "$work/dep"
	done | awk '!seen[$0]++' | sed "s|^$kdir/*|/|; s|^/\./|/|"
} >"$stage/etc/herd/modules.list"
grep '^/' "$stage/etc/herd/modules.list" | while read -r ko; do
	mkdir -p "$stage$(dirname "$ko")"
	cp "$kdir$ko" "$stage$ko"
done
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$stage" && find . -mindepth 1 -print | LC_ALL=C sort |
	cpio --quiet -o -H newc -R 0:0 --reproducible) | zstd -q -10 -T0 >"$work/initrd.img"

# 3. Partition 1: FAT with the kernel, the initramfs and syslinux.cfg
# (BIOS syslinux itself is installed once the partition is in the disk),
# and EFI/BOOT/: the path UEFI firmware boots from a disk without boot
# entries (OVMF finds it on this type 0x0e partition, no 0xEF needed).
# syslinux.efi loads ldlinux.e64 from its own folder and, finding no
# syslinux.cfg there, reads /syslinux.cfg: one file for both firmwares.
cmdline="console=tty0 console=ttyS0,115200 quiet loglevel=4 panic=-1 root=LABEL=herd-root"
[ -z "$METADATA_URL" ] || cmdline="$cmdline herd.metadata=$METADATA_URL"
[ -z "$APPEND" ] || cmdline="$cmdline $APPEND"
cat >"$work/syslinux.cfg" <<EOF
# herd sandbox OS image (sandbox/osimage/build.sh)
SERIAL 0 115200
PROMPT 0
TIMEOUT 0
DEFAULT herd
LABEL herd
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND $cmdline
EOF
cp "$kdir/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$efi" "$work/BOOTX64.EFI"
cp "$efild" "$work/ldlinux.e64"
touch -d "@$SOURCE_DATE_EPOCH" "$work/vmlinuz" "$work/initrd.img" "$work/syslinux.cfg" "$work/BOOTX64.EFI" "$work/ldlinux.e64"

start1=2048 # 1 MiB: the usual alignment
size1=$((BOOT_MB * 2048))
start2=$((start1 + size1))
size2=$((ROOT_MB * 2048))
total=$((start2 + size2))
need=$(($(wc -c <"$work/vmlinuz") + $(wc -c <"$work/initrd.img") + 1048576))
[ "$need" -lt $((size1 * 512)) ] || die "BOOT_MB=$BOOT_MB is too small for the kernel and initramfs ($((need / 1048576)) MiB)"
mkfs.vfat -C --invariant -F 16 -n HERDBOOT -i 68657264 -h "$start1" "$work/boot.fat" $((size1 / 2)) >/dev/null
mcopy -m -i "$work/boot.fat" "$work/vmlinuz" "$work/initrd.img" "$work/syslinux.cfg" ::/
# mtools stamps the new folders with SOURCE_DATE_EPOCH.
mmd -i "$work/boot.fat" ::/EFI ::/EFI/BOOT
mcopy -m -i "$work/boot.fat" "$work/BOOTX64.EFI" "$work/ldlinux.e64" ::/EFI/BOOT/

# 4. Partition 2: ext4 made from a directory by mke2fs -d (no mount).
rootdir=$work/rootfs
for d in etc etc/herd etc/network etc/systemd/network root var/lib/cloud/seed/nocloud tmp; do
	mkdir -p "$rootdir/$d"
done
chmod 0700 "$rootdir/root"
chmod 1777 "$rootdir/tmp"
printf '%s\n' "$HOSTNAME_PLACEHOLDER" >"$rootdir/etc/hostname"
printf 'NAME="herd sandbox OS"\nID=herd-sandbox\nPRETTY_NAME="herd sandbox OS (Debian kernel %s)"\n' "$kver" >"$rootdir/etc/os-release"
printf '%s\n' "$cmdline" >"$rootdir/etc/herd/cmdline"
find "$rootdir" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
uuid=68657264-0000-4000-8000-000000000002
truncate -s "$((size2 * 512))" "$work/root.ext4"
mke2fs -q -F -t ext4 -L herd-root -U "$uuid" -E "hash_seed=$uuid,root_owner=0:0" -d "$rootdir" \
	"$work/root.ext4" "$((size2 / 2))k"
# mke2fs -d copies each file's ctime, which touch cannot set: reset them.
(cd "$rootdir" && find . -print | LC_ALL=C sort | sed "s|^\.||; s|^\$|/|; s|.*|sif \"&\" ctime @$SOURCE_DATE_EPOCH|") |
	debugfs -w -f - "$work/root.ext4" >/dev/null 2>&1 || die "debugfs could not set the ctimes"

# 5. The disk: partition table, both partitions, syslinux, MBR code.
rm -f "$work/disk.img"
truncate -s $((total * 512)) "$work/disk.img"
sfdisk -q --no-reread --no-tell-kernel "$work/disk.img" <<EOF
label: dos
label-id: 0x68657264
unit: sectors

start=$start1, size=$size1, type=e, bootable
start=$start2, size=$size2, type=83
EOF
dd if="$work/boot.fat" of="$work/disk.img" bs=512 seek="$start1" conv=notrunc,sparse status=none
dd if="$work/root.ext4" of="$work/disk.img" bs=512 seek="$start2" conv=notrunc,sparse status=none
syslinux --offset $((start1 * 512)) --install "$work/disk.img"
dd if="$mbr" of="$work/disk.img" bs=440 count=1 conv=notrunc status=none

# 6. The outputs.
mv "$work/disk.img" "$OUT/disk.img"
rm -f "$OUT/disk.img.gz"
if [ "$GZIP_IMAGE" != 0 ]; then
	gzip -n -6 -c "$OUT/disk.img" >"$OUT/disk.img.gz"
fi
cat >"$OUT/layout.env" <<EOF
# sandbox/osimage/build.sh: where the partitions of disk.img are (bytes)
KERNEL_RELEASE=$kver
BOOT_OFFSET=$((start1 * 512))
BOOT_SIZE=$((size1 * 512))
ROOT_OFFSET=$((start2 * 512))
ROOT_SIZE=$((size2 * 512))
ROOT_LABEL=herd-root
FIRMWARE="bios uefi"
EFI_LOADER=/EFI/BOOT/BOOTX64.EFI
CMDLINE="$cmdline"
EOF
(cd "$OUT" && sha256sum disk.img* >SHA256SUMS)
say "kernel $kver: $(($(wc -c <"$work/vmlinuz") / 1024)) KiB, initramfs $(($(wc -c <"$work/initrd.img") / 1024)) KiB ($(grep -c '^/' "$stage/etc/herd/modules.list") modules)"
say "disk: $OUT/disk.img $((total / 2048)) MiB (boot $BOOT_MB MiB FAT, root $ROOT_MB MiB ext4)"
if [ -f "$OUT/disk.img.gz" ]; then
	say "compressed: $OUT/disk.img.gz $(($(wc -c <"$OUT/disk.img.gz") / 1024)) KiB (image2disk COMPRESSED=true)"
fi
