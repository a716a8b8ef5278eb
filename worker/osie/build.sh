#!/bin/sh
# Builds herd's OSIE, the in-memory OS that carries herd-worker: a Debian
# kernel and a zstd-compressed newc initramfs holding the Go init, the
# kernel modules of modules.txt (with their dependencies and a
# modules.dep), Debian's runc (and with ENGINE=docker its dockerd,
# containerd, shim and docker-init) with the shared libraries they link,
# and herd-worker when its source exists.
#
# Offline once the kernel package is cached, and reproducible: the same
# inputs (this tree, the Debian packages, the Go toolchain and
# SOURCE_DATE_EPOCH) give the same bytes.
#
# Environment:
#   OUT               where vmlinuz and initramfs.img go (default: bin/osie)
#   CACHE             kernel package cache (default: .tmp/osie-cache)
#   KERNEL_DEB        a linux-image-*.deb to use instead of apt-get download
#   SOURCE_DATE_EPOCH time stamp of every file (default: the last commit's)
#   ZSTD_LEVEL        zstd level of the initramfs (default: 10)
#   ENGINE            runc (default: herd-worker runs the actions with runc,
#                     no engine) or docker (dockerd and containerd too, for
#                     a worker that needs the Docker API: a tink-worker)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
OUT=${OUT:-$root/bin/osie}
CACHE=${CACHE:-$root/.tmp/osie-cache}
ZSTD_LEVEL=${ZSTD_LEVEL:-10}
ENGINE=${ENGINE:-runc}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH
mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd)

say() { printf 'osie: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
case "$ENGINE" in
runc | docker) ;;
*) die "ENGINE=$ENGINE: want runc or docker" ;;
esac

for tool in dpkg-deb depmod modprobe cpio zstd ldd go; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (make deps installs what worker/osie/deps.txt lists)"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/herd-osie.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
stage=$work/root

# 1. The kernel: Debian's linux-image package, extracted, never installed
# (scripts/debian-kernel.sh; the OSIE and the OS image share its cache).
kdir=$("$root/scripts/debian-kernel.sh" "$CACHE") || die "no kernel"
kver=$(ls "$kdir/lib/modules")

# 2. The tree.
mkdir -p "$stage"
for d in dev proc sys run tmp root etc/herd etc/ssl/certs \
	usr/bin usr/sbin lib/x86_64-linux-gnu lib64 var/lib var/log; do
	mkdir -p "$stage/$d"
done
ln -s ../run "$stage/var/run"
ln -s usr/bin "$stage/bin"
ln -s usr/sbin "$stage/sbin"

say "building the init"
(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -buildvcs=false \
	-ldflags '-s -w -buildid=' -o "$stage/init" ./worker/osie/init)
if [ -d "$root/worker/cmd/herd-worker" ]; then
	say "building herd-worker"
	(cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -buildvcs=false \
		-ldflags '-s -w -buildid=' -o "$stage/usr/bin/herd-worker" ./worker/cmd/herd-worker)
else
	say "warning: worker/cmd/herd-worker does not exist yet: this OSIE has no worker (herd.worker= can name one)"
fi

# The container runtime: Debian's binaries and every library they link.
# runc alone: herd-worker pulls the images and runs runc itself (the init
# starts no engine when the initramfs has no dockerd).
copy_bin() { # SOURCE DEST
	src=$(readlink -f "$1")
	[ -f "$src" ] || die "$1 is missing (make deps)"
	cp "$src" "$stage/$2"
	chmod 0755 "$stage/$2"
	ldd "$src" 2>/dev/null | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }' >>"$work/libs"
}
: >"$work/libs"
copy_bin /usr/sbin/runc usr/sbin/runc
if [ "$ENGINE" = docker ]; then
	copy_bin /usr/sbin/dockerd usr/sbin/dockerd
	copy_bin /usr/bin/containerd usr/bin/containerd
	copy_bin /usr/bin/containerd-shim-runc-v2 usr/bin/containerd-shim-runc-v2
	copy_bin /usr/bin/docker-init usr/bin/docker-init
fi
sort -u "$work/libs" | while read -r lib; do
	case "$lib" in
	*/ld-linux-x86-64.so.2) cp "$(readlink -f "$lib")" "$stage/lib64/ld-linux-x86-64.so.2" ;;
	*) cp "$(readlink -f "$lib")" "$stage/lib/x86_64-linux-gnu/$(basename "$lib")" ;;
	esac
done
[ -f "$stage/lib64/ld-linux-x86-64.so.2" ] || die "runc links no ld-linux-x86-64.so.2?"

# The kernel modules of modules.txt, their dependencies, and modules.dep.
mdir=lib/modules/$kver
mkdir -p "$stage/$mdir"
grep -v "^#" "$here/modules.txt" | sed "/^ *$/d" >"$stage/etc/herd/modules"
awk "{ print \$1 }" "$stage/etc/herd/modules" >"$work/modnames"
: >"$work/kos"
while read -r m; do
	modprobe -d "$kdir" -S "$kver" --show-depends "$m" >"$work/dep" 2>/dev/null ||
		die "module $m is not in $(basename "$kdir")"
	awk '$1 == "insmod" { print $2 }' "$work/dep" >>"$work/kos"
done <"$work/modnames"
sort -u "$work/kos" | while read -r ko; do
	rel=${ko#"$kdir/$mdir/"}
	mkdir -p "$stage/$mdir/$(dirname "$rel")"
	cp "$ko" "$stage/$mdir/$rel"
done
cp "$kdir/$mdir/modules.builtin" "$kdir/$mdir/modules.order" "$stage/$mdir/"
[ -f "$kdir/$mdir/modules.builtin.modinfo" ] && cp "$kdir/$mdir/modules.builtin.modinfo" "$stage/$mdir/"
depmod -b "$stage" "$kver"
rm -f "$stage/$mdir"/modules.*.bin # modprobe's indexes: the init reads modules.dep and modules.alias

# /etc.
cat >"$stage/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
HOSTS
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$stage/etc/passwd"
printf 'root:x:0:\ntty:x:5:\ndocker:x:999:\nnogroup:x:65534:\n' >"$stage/etc/group"
printf 'hosts: files dns\n' >"$stage/etc/nsswitch.conf"
: >"$stage/etc/resolv.conf"
printf 'NAME="herd OSIE"\nID=herd-osie\nPRETTY_NAME="herd OSIE (Debian kernel %s)"\n' "$kver" >"$stage/etc/os-release"
if [ "$ENGINE" = docker ]; then
	mkdir -p "$stage/etc/containerd"
	cat >"$stage/etc/containerd/config.toml" <<'TOML'
# herd OSIE: containerd serves dockerd only.
version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.native",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
TOML
fi
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then # registries over HTTPS
	cp /etc/ssl/certs/ca-certificates.crt "$stage/etc/ssl/certs/"
fi

# 3. The archive: sorted names, fixed owners and times (cpio --reproducible
# numbers the inodes in order and zeroes the device numbers).
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$stage" && find . -mindepth 1 -print | LC_ALL=C sort |
	cpio --quiet -o -H newc -R 0:0 --reproducible) >"$work/initramfs.cpio"
zstd -q -f -T0 -"$ZSTD_LEVEL" "$work/initramfs.cpio" -o "$OUT/initramfs.img"
cp "$kdir/boot/vmlinuz-$kver" "$OUT/vmlinuz"
touch -d "@$SOURCE_DATE_EPOCH" "$OUT/initramfs.img" "$OUT/vmlinuz"
printf '%s\n' "$kver" >"$OUT/kernel-release"

raw=$(wc -c <"$work/initramfs.cpio")
img=$(wc -c <"$OUT/initramfs.img")
krn=$(wc -c <"$OUT/vmlinuz")
nmod=$(find "$stage/$mdir" -name '*.ko' | wc -l)
say "kernel $kver: $OUT/vmlinuz $((krn / 1024)) KiB"
say "initramfs: $OUT/initramfs.img $((img / 1048576)) MiB (zstd -$ZSTD_LEVEL; $((raw / 1048576)) MiB unpacked; $nmod modules; engine $ENGINE)"
if [ "$img" -gt $((120 * 1048576)) ]; then
	say "warning: the initramfs is over the 120 MiB target"
fi
