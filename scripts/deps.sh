#!/bin/sh
# Installs the Debian packages herd's build and tests use, when missing.
# Needs root for apt-get; without root it only reports what is missing.
set -eu
need=""
have() { command -v "$1" >/dev/null 2>&1; }
have protoc || need="$need protobuf-compiler libprotobuf-dev"
[ -f /usr/include/google/protobuf/timestamp.proto ] || need="$need libprotobuf-dev"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing Debian packages:$need (run as root, or apt-get install them)" >&2
	exit 1
fi
echo "installing:$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need
