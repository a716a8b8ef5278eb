#!/bin/sh
# Installs the Debian packages herd's build and tests use, when missing.
# Each part lists what it needs in its deps.txt: lines "PATH-OR-COMMAND
# PACKAGE..." (a command looked up in PATH, or a path that must exist; a
# glob is fine). Arguments name other lists instead (benchmarks keep
# theirs apart, so the tests do not install what only a benchmark uses).
# Needs root for apt-get; without root it only reports.
set -eu
cd "$(dirname "$0")/.."
need=""
[ $# -gt 0 ] || set -- deps.txt */deps.txt */*/deps.txt
for list in "$@"; do
	[ -f "$list" ] || continue
	while read -r what pkgs; do
		case "$what" in ""|\#*) continue ;; esac
		case "$what" in
		/*) # shellcheck disable=SC2086
			ls $what >/dev/null 2>&1 && continue ;;
		*) command -v "$what" >/dev/null 2>&1 && continue ;;
		esac
		need="$need $pkgs"
	done < "$list"
done
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
