#!/usr/bin/env bash
# Builds herd's container images with the Docker engine DOCKER_HOST names,
# with the classic builder and no network (`make images` runs it; see
# README.md beside it):
#
#	REPO/herd-server:TAG, REPO/herd-boots:TAG, REPO/herd-metadata:TAG,
#	REPO/herd-bmc:TAG
#		FROM scratch, from the static binaries in BIN_DIR; rebuilt every run
#	REPO/postgres:TAG, REPO/registry:TAG
#		from Debian's packages: mmdebstrap | docker import makes a root
#		file system image (REPO/NAME-rootfs:KEY, KEY a hash of what went
#		into it), the Dockerfile beside adds the entrypoint, the settings,
#		the labels and the health check. Skipped when REPO/NAME:TAG is
#		there already (built from the same files), and the root file
#		system is reused when its KEY is, unless IMAGE_REBUILD=1 (older
#		KEYs are untagged).
#
# Then it prints each image's size. Arguments pick images (default all).
# Settings (make passes them): IMAGE_REPO (herd), IMAGE_TAG, BIN_DIR (the
# binaries herd-server, herd, herd-boots, herd-metadata, herd-bmc), VERSION,
# REVISION, CREATED, IMAGE_SOURCE (the OCI labels), IMAGE_REBUILD,
# DEBIAN_SUITE (bookworm), WORK_DIR (the build contexts and logs).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=${IMAGE_REPO:-herd}
tag=${IMAGE_TAG:?set IMAGE_TAG (make images sets it to the version)}
bin=${BIN_DIR:-}
version=${VERSION:-$tag}
revision=${REVISION:-unknown}
created=${CREATED:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}
source_url=${IMAGE_SOURCE:-https://github.com/herd-metal/herd}
rebuild=${IMAGE_REBUILD:-0}
suite=${DEBIAN_SUITE:-bookworm}
work=${WORK_DIR:-$here/../../.tmp/images}
export DOCKER_BUILDKIT=0

all=(herd-server herd-boots herd-metadata herd-bmc postgres registry)
[ $# -gt 0 ] || set -- "${all[@]}"

fail() {
	printf 'images: %s\n' "$*" >&2
	exit 1
}
say() { printf '==> %s\n' "$*"; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

command -v docker >/dev/null 2>&1 || fail "no docker command (apt-get install docker.io)"
docker version >/dev/null 2>&1 || fail "no Docker engine answers${DOCKER_HOST:+ at $DOCKER_HOST}"
mkdir -p "$work"

# build NAME CONTEXT [docker build options...]: REPO/NAME:TAG from
# CONTEXT/Dockerfile, its output in WORK/NAME.log (shown when it fails).
# The image the tag named before goes, unless something else holds it.
build() {
	local name=$1 ctx=$2 log=$work/$1.log old
	shift 2
	old=$(docker image inspect -f '{{.Id}}' "$repo/$name:$tag" 2>/dev/null || true)
	if ! docker build --network none --force-rm -t "$repo/$name:$tag" \
		--build-arg VERSION="$version" --build-arg REVISION="$revision" \
		--build-arg CREATED="$created" --build-arg SOURCE="$source_url" \
		"$@" "$ctx" >"$log" 2>&1; then
		cat "$log" >&2
		fail "building $repo/$name:$tag failed (log: $log)"
	fi
	if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$repo/$name:$tag")" ]; then
		docker rmi "$old" >/dev/null 2>&1 || true
	fi
}

# The root file system of the scratch images: /etc/passwd and /etc/group
# (root and nonroot, 65532, as distroless has them) and /tmp. Dockerfile.source
# makes the same in its build stage.
skeleton() {
	mkdir -p "$1/etc" "$1/tmp"
	chmod 1777 "$1/tmp"
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$1/etc/passwd"
	printf 'root:x:0:\nnonroot:x:65532:\n' >"$1/etc/group"
}

# herd_image NAME BINARY...: FROM scratch, from BIN_DIR's binaries.
herd_image() {
	local name=$1 ctx=$work/$1 b
	shift
	[ -n "$bin" ] || fail "BIN_DIR is not set: the directory of the static binaries (make images builds them)"
	rm -rf "$ctx"
	mkdir -p "$ctx"
	skeleton "$ctx/rootfs"
	if [ "$name" = herd-server ]; then
		mkdir -p "$ctx/rootfs/var/lib" "$ctx/state/herd"
		chmod 700 "$ctx/state/herd"
	fi
	for b in "$@"; do
		[ -x "$bin/$b" ] || fail "no binary $bin/$b (make images builds it)"
		cp "$bin/$b" "$ctx/"
	done
	cp "$here/$name/Dockerfile" "$ctx/"
	build "$name" "$ctx"
	status[$name]=built
}

# What mmdebstrap leaves out of every image: documentation (but the
# copyright files), manual pages, translations, perl's C headers and CJK
# encoding tables (perl is there for adduser and debconf, which need
# neither), and, after installing, the logs (mmdebstrap removes apt's lists
# and caches itself). In the hooks, $1 is mmdebstrap's: the root directory.
# shellcheck disable=SC2016
trim=(
	--dpkgopt='path-exclude=/usr/share/doc/*'
	--dpkgopt='path-include=/usr/share/doc/*/copyright'
	--dpkgopt='path-exclude=/usr/share/man/*'
	--dpkgopt='path-exclude=/usr/share/info/*'
	--dpkgopt='path-exclude=/usr/share/locale/*'
	--dpkgopt='path-include=/usr/share/locale/locale.alias'
	--dpkgopt='path-exclude=/usr/share/lintian/*'
	--dpkgopt='path-exclude=/usr/lib/*/perl/5.*/CORE/*.h'
	--dpkgopt='path-exclude=/usr/lib/*/perl/5.*/auto/Encode/??/*'
	--customize-hook='rm -rf "$1"/var/cache/debconf/*-old "$1"/var/log/*.log "$1"/var/log/apt/*'
)

# What each Debian image's root file system holds beyond the trimmed
# --variant=apt system.
# shellcheck disable=SC2016
postgres_rootfs=(
	--include=postgresql-15
	# No JIT: its LLVM (and z3) is about 155 MB, close to half of the
	# file system; postgres runs without it as with jit = off.
	--dpkgopt='path-exclude=/usr/lib/postgresql/*/lib/llvmjit*'
	--dpkgopt='path-exclude=/usr/lib/postgresql/*/lib/bitcode/*'
	--dpkgopt='path-exclude=/usr/lib/*/libLLVM-*'
	--dpkgopt='path-exclude=/usr/lib/*/libz3.so*'
	# The sources of locales to generate (none is: initdb uses C.UTF-8,
	# which is built in).
	--dpkgopt='path-exclude=/usr/share/i18n/*'
	# The postgres user as the official image has it (999:999), so a
	# volume moves between the two, made before postgresql-common's
	# postinst would pick a uid; and no cluster of Debian's own
	# (/var/lib/postgresql/15/main): the entrypoint makes one in PGDATA.
	--essential-hook='echo "postgres:x:999:999:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash" >>"$1/etc/passwd"; echo "postgres:x:999:" >>"$1/etc/group"'
	--essential-hook='mkdir -p "$1/etc/postgresql-common/createcluster.d" && echo "create_main_cluster = false" >"$1/etc/postgresql-common/createcluster.d/herd.conf"'
	# PGDATA and the socket directory, postgres's (/run kept: mmdebstrap
	# would empty it), for a container started as postgres; ssl-cert's
	# snakeoil key out (unused: the cluster runs without TLS, as the
	# official image's does).
	--skip=cleanup/run
	--customize-hook='mkdir -p "$1/var/lib/postgresql/data" "$1/run/postgresql" && chown 999:999 "$1/var/lib/postgresql" "$1/var/lib/postgresql/data" "$1/run/postgresql" && chmod 700 "$1/var/lib/postgresql/data" && chmod 2775 "$1/run/postgresql"'
	--customize-hook='rm -f "$1"/etc/ssl/private/ssl-cert-snakeoil.key "$1"/etc/ssl/certs/ssl-cert-snakeoil.pem && find "$1"/etc/ssl/certs -xtype l -delete'
)
# shellcheck disable=SC2016
registry_rootfs=(
	--include=docker-registry
	--include=apache2-utils
	# The health check's HTTPS client (see healthcheck.sh): its TLS
	# library is apt's, in already.
	--include=wget
	--customize-hook='mkdir -p "$1/var/lib/registry"'
)

# debian_image NAME: REPO/NAME:TAG from Debian's packages (NAME_rootfs
# above) and deploy/images/NAME/. Its label $inputs_label is a hash of
# both: an image of that tag built from other inputs (an edited
# entrypoint, say) is built again.
inputs_label=io.github.herd-metal.herd.inputs
debian_image() {
	local name=$1 ref=$repo/$1:$tag key inputs rootfs log=$work/$1-rootfs.log
	local -a extra
	case $name in
	postgres) extra=("${postgres_rootfs[@]}") ;;
	registry) extra=("${registry_rootfs[@]}") ;;
	esac
	local args=(--variant=apt "${trim[@]}" "${extra[@]}")
	key=$(printf '%s\n' "$suite" "${args[@]}" | sha256sum | cut -c1-12)
	inputs=$( (echo "$key" && cd "$here/$name" && for f in *; do printf '%s\n' "$f" && cat "$f"; done) | sha256sum | cut -c1-12)
	if [ "$rebuild" != 1 ] && have_image "$ref" &&
		[ "$(docker image inspect -f "{{index .Config.Labels \"$inputs_label\"}}" "$ref")" = "$inputs" ]; then
		status[$name]=cached
		return
	fi
	rootfs=$repo/$name-rootfs:$key
	if [ "$rebuild" = 1 ] || ! have_image "$rootfs"; then
		command -v mmdebstrap >/dev/null 2>&1 || fail "no mmdebstrap (apt-get install mmdebstrap)"
		say "$name: mmdebstrap $suite (${extra[0]}) | docker import $rootfs (log: $log)"
		if ! mmdebstrap "${args[@]}" "$suite" - 2>"$log" |
			docker import --message "mmdebstrap $suite for $repo/$name" - "$rootfs" >>"$log" 2>&1; then
			tail -n 30 "$log" >&2
			fail "the root file system of $repo/$name failed (log: $log)"
		fi
		status[$name]="built (root file system too)"
		# Older root file systems of NAME (other keys) go.
		docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo/$name-rootfs" | grep -vxF "$rootfs" |
			xargs -r docker rmi >/dev/null 2>&1 || true
	else
		status[$name]="built (root file system $key reused)"
	fi
	build "$name" "$here/$name" --build-arg BASE="$rootfs" --label "$inputs_label=$inputs"
}

declare -A status
for image in "$@"; do
	case $image in
	herd-server) herd_image herd-server herd-server herd ;;
	herd-boots) herd_image herd-boots herd-boots ;;
	herd-metadata) herd_image herd-metadata herd-metadata ;;
	herd-bmc) herd_image herd-bmc herd-bmc ;;
	postgres | registry) debian_image "$image" ;;
	*) fail "unknown image $image (${all[*]})" ;;
	esac
done

printf '\n%-36s %10s  %s\n' IMAGE "SIZE (MB)" "(docker image inspect -f '{{.Size}}', 1 MB = 10^6 bytes)"
for image in "$@"; do
	size=$(docker image inspect -f '{{.Size}}' "$repo/$image:$tag")
	printf '%-36s %10s  %s\n' "$repo/$image:$tag" "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1e6 }')" "${status[$image]}"
done
echo "images: done in ${SECONDS} s"
