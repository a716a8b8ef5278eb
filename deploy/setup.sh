#!/usr/bin/env bash
# Prepares a host to run herd's stack, with the envrc sourced (made by
# deploy/generate-envrc.sh; a Tinkerbell v0.6 envrc works too):
#
#	source ./envrc && deploy/setup.sh && cd deploy && docker-compose up -d
#
# It checks what it needs, puts the host IP on the interface when missing,
# makes a CA and a server certificate, fills the webroot herd-boots serves
# (iPXE binaries, the OSIE), builds the images, starts the registry and
# pushes the core action images to it, and writes the resolved settings to
# deploy/.env for docker-compose. Running it again redoes only what is
# missing or stale. deploy/README.md lists every setting.
set -euo pipefail

deploy=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
compose_dir=${HERD_COMPOSE_DIR:-$deploy}
env_file=$compose_dir/.env

say() { printf '==> %s\n' "$*"; }
fail() {
	printf 'setup.sh: %s\n' "$1" >&2
	shift
	for l in "$@"; do printf '  %s\n' "$l" >&2; done
	exit 1
}

# shellcheck source=deploy/settings.sh
. "$deploy/settings.sh"
resolve_settings

# Prerequisites, each with the Debian package that brings it.
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 (apt-get install $2)"); }
need docker docker.io
need ip iproute2
need openssl openssl
need curl curl
need make make
if command -v docker-compose >/dev/null 2>&1; then
	compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
	compose=(docker compose)
else
	missing+=("docker-compose (apt-get install docker-compose)")
fi
[ ${#missing[@]} -eq 0 ] || fail "missing:" "${missing[@]}"
docker info >/dev/null 2>&1 ||
	fail "no Docker engine answers${DOCKER_HOST:+ at $DOCKER_HOST}" \
		"apt-get install docker.io && systemctl start docker (or set DOCKER_HOST)"
ip link show dev "$HERD_INTERFACE" >/dev/null 2>&1 ||
	fail "no interface $HERD_INTERFACE (HERD_INTERFACE); there are: $(ip -o link show | awk -F': ' '{printf "%s ", $2}')"
[ -f "$HERD_SOURCE_DIR/Makefile" ] ||
	fail "HERD_SOURCE_DIR=$HERD_SOURCE_DIR holds no herd source tree (its Makefile builds the images)"
dc() { (cd "$compose_dir" && "${compose[@]}" "$@"); }

# The host IP on the interface.
if ip -o -4 addr show dev "$HERD_INTERFACE" | grep -qw "inet $HERD_HOST_IP"; then
	say "$HERD_INTERFACE has $HERD_HOST_IP"
elif [ -n "$HERD_SKIP_NETWORKING" ]; then
	say "$HERD_INTERFACE lacks $HERD_HOST_IP; HERD_SKIP_NETWORKING is set, so it is left as it is"
else
	say "adding $HERD_HOST_IP/$HERD_CIDR to $HERD_INTERFACE (not kept across a reboot: put it in your network configuration)"
	ip addr add "$HERD_HOST_IP/$HERD_CIDR" dev "$HERD_INTERFACE"
	ip link set "$HERD_INTERFACE" up
fi

state=$HERD_STATE_DIR
mkdir -p "$state"/certs "$state"/webroot/ipxe "$state"/webroot/osie "$state"/registry/storage "$state"/registry/auth "$state"/server
# herd-server runs as 65532 in its image.
chown 65532:65532 "$state/server"
chmod 700 "$state/server"

# Certificates: a CA, and a server certificate for HERD_HOST_IP signed by
# it (RSA: iPXE speaks TLS only with RSA keys). herd-server serves the CA
# at /cert; the registry and herd-server use the server pair.
certs=$state/certs
cert_ok() {
	[ -f "$certs/server.pem" ] && [ -f "$certs/server-key.pem" ] &&
		openssl verify -CAfile "$certs/ca.pem" "$certs/server.pem" >/dev/null 2>&1 &&
		openssl x509 -in "$certs/server.pem" -noout -checkend 2592000 >/dev/null &&
		openssl x509 -in "$certs/server.pem" -noout -checkip "$HERD_HOST_IP" | grep -q 'does match'
}
if [ ! -f "$certs/ca.pem" ] || [ ! -f "$certs/ca-key.pem" ]; then
	say "creating a CA in $certs"
	(umask 077 && openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 \
		-subj "/CN=herd CA" -addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-keyout "$certs/ca-key.pem" -out "$certs/ca.pem" 2>/dev/null)
	rm -f "$certs/server.pem"
fi
if cert_ok; then
	say "server certificate for $HERD_HOST_IP is current"
else
	say "creating a server certificate for $HERD_HOST_IP"
	(umask 077 && openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "/CN=herd $HERD_HOST_IP" \
		-keyout "$certs/server-key.pem" -out "$certs/server.csr" 2>/dev/null)
	printf '%s\n' "subjectAltName=IP:$HERD_HOST_IP,IP:127.0.0.1,DNS:localhost" \
		"basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
		"extendedKeyUsage=serverAuth" >"$certs/server.ext"
	openssl x509 -req -sha256 -days 825 -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca-key.pem" \
		-CAcreateserial -extfile "$certs/server.ext" -out "$certs/server.pem" 2>/dev/null
	rm -f "$certs/server.csr" "$certs/server.ext"
fi
# herd-server (uid 65532) reads the key through its group.
chown root:65532 "$certs/server-key.pem"
chmod 640 "$certs/server-key.pem"
chmod 644 "$certs/ca.pem" "$certs/server.pem"

# The webroot: iPXE binaries (TFTP and /ipxe/) and the OSIE (/osie/).
src=$HERD_SOURCE_DIR
place() { cmp -s "$1" "$2" || cp -f "$1" "$2"; }
if [ ! -f "$src/bin/ipxe/undionly.kpxe" ]; then
	say "collecting the iPXE binaries: make ipxe"
	make -C "$src" ipxe >/dev/null
fi
for f in "$src"/bin/ipxe/*; do place "$f" "$state/webroot/ipxe/${f##*/}"; done
if [ ! -f "$src/bin/osie/vmlinuz" ] || [ ! -f "$src/bin/osie/initramfs.img" ]; then
	say "building the OSIE: make osie (a few minutes)"
	make -C "$src" osie
fi
place "$src/bin/osie/vmlinuz" "$state/webroot/osie/vmlinuz-x86_64"
place "$src/bin/osie/initramfs.img" "$state/webroot/osie/initramfs-x86_64"
say "webroot $state/webroot: $(cd "$state/webroot" && find . -type f | sort | tr '\n' ' ')"

# The images, tagged HERD_VERSION.
say "building the images: make images IMAGE_TAG=$HERD_VERSION"
make -C "$src" images IMAGE_TAG="$HERD_VERSION"

write_compose_env
say "wrote $env_file"

# The registry: htpasswd, started, trusted by this host's Docker engine.
registry=$HERD_HOST_IP:$HERD_REGISTRY_PORT
if ! docker run --rm --network none -v "$state/registry/auth:/auth:ro" --entrypoint htpasswd "$HERD_REGISTRY_IMAGE" \
	-vb /auth/htpasswd "$HERD_REGISTRY_USER" "$HERD_REGISTRY_PASSWORD" >/dev/null 2>&1; then
	say "writing the registry's htpasswd for $HERD_REGISTRY_USER"
	dc run --rm registry-auth >/dev/null
fi
say "starting the registry on $registry"
dc up -d registry
for i in $(seq 60); do
	code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$certs/ca.pem" "https://$registry/v2/" || true)
	[ "$code" = 401 ] && break
	[ "$i" -lt 60 ] || fail "the registry did not answer on https://$registry/v2/ (last status: $code)" \
		"see: cd $compose_dir && ${compose[*]} logs registry"
	sleep 1
done
docker_certs=${HERD_DOCKER_CERTS_DIR:-/etc/docker/certs.d}
mkdir -p "$docker_certs/$registry"
place "$certs/ca.pem" "$docker_certs/$registry/ca.crt"
printf '%s' "$HERD_REGISTRY_PASSWORD" | docker login --username "$HERD_REGISTRY_USER" --password-stdin "$registry" >/dev/null
say "pushing the action images (image2disk, writefile, reboot) to $registry, tag $HERD_VERSION"
make -C "$src" action-images ACTION_REGISTRY="$registry" ACTION_TAG="$HERD_VERSION" >/dev/null

cat <<EOF

herd is ready to start:

	cd $compose_dir && ${compose[*]} up -d

then, with the envrc sourced, the herd CLI (bin/herd, or: ${compose[*]} run --rm herd ...):

	herd hardware push --file machine.json
	herd template create --file template.yaml   (actions: image: image2disk:$HERD_VERSION ...)
	herd workflow create -t TEMPLATE -r '{"device_1":"MAC"}'

Machines boot from $HERD_INTERFACE: DHCP ($HERD_DHCP_MODE), http://$HERD_HOST_IP:$HERD_BOOTS_HTTP_PORT/auto.ipxe.
EOF
