#!/bin/sh
# Prints the directory holding Debian's x86-64 kernel, extracted (never
# installed) from the linux-image package into CACHE: boot/vmlinuz-* and
# lib/modules/<version> with modules.dep. The OSIE and the sandbox's OS
# image both boot it. The package is fetched once with apt-get download;
# later builds are offline. KERNEL_DEB names a .deb to use instead.
# Usage: scripts/debian-kernel.sh CACHE
set -eu
CACHE=${1:?usage: $0 CACHE}
say() { printf 'kernel: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
mkdir -p "$CACHE"
# One build at a time in a cache: the OSIE's and the OS image's tests run
# side by side, and two extractions of one package into one directory
# remove each other's files (rm -rf below). The lock ends with the script.
exec 9>"$CACHE/.lock"
flock 9

if [ -z "${KERNEL_DEB:-}" ]; then
	# A fresh machine may have no package lists yet.
	if ! apt-cache policy linux-image-amd64 2>/dev/null | grep -q 'Candidate: [0-9]' && [ "$(id -u)" = 0 ]; then
		say "no package lists: apt-get update"
		apt-get update -qq >&2 || true
	fi
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')
	if [ -n "$pkg" ]; then
		ver=$(apt-cache policy "$pkg" | awk '/Candidate:/ { print $2; exit }')
		KERNEL_DEB=$(find "$CACHE" -maxdepth 1 -name "${pkg}_$(echo "$ver" | sed 's/:/%3a/')_amd64.deb" | head -n 1)
		if [ -z "$KERNEL_DEB" ]; then
			say "downloading $pkg $ver (apt-get download)"
			(cd "$CACHE" && apt-get download "$pkg=$ver" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) || true
			KERNEL_DEB=$(find "$CACHE" -maxdepth 1 -name "${pkg}_*_amd64.deb" | sort | tail -n 1)
		fi
	else # no apt lists: use what the cache has
		KERNEL_DEB=$(find "$CACHE" -maxdepth 1 -name 'linux-image-*-amd64_*_amd64.deb' | sort | tail -n 1)
	fi
fi
[ -f "${KERNEL_DEB:-}" ] || die "no kernel package (apt-get update, or set KERNEL_DEB)"
kdir=$CACHE/$(basename "$KERNEL_DEB" .deb)
if [ ! -f "$kdir/.done" ]; then
	say "extracting $(basename "$KERNEL_DEB")"
	rm -rf "$kdir"
	mkdir -p "$kdir"
	dpkg-deb -x "$KERNEL_DEB" "$kdir"
	depmod -b "$kdir" "$(ls "$kdir/lib/modules")"
	touch "$kdir/.done"
fi
[ -n "$(ls "$kdir/lib/modules")" ] || die "no modules in $KERNEL_DEB"
echo "$kdir"
