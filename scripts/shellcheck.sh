#!/bin/sh
# Runs shellcheck on every shell script of the tree (make vet): the files
# git knows, tracked or new and not ignored, named *.sh or *.bash or whose
# first line runs sh, bash or dash (#!/bin/sh, #!/usr/bin/env bash, ...).
# -x follows the scripts' `# shellcheck source=PATH` (paths from the top).
set -eu
cd "$(dirname "$0")/.."
list=$(mktemp)
trap 'rm -f "$list"' EXIT
git ls-files -z --cached --others --exclude-standard | tr '\0' '\n' | while IFS= read -r f; do
	[ -f "$f" ] || continue # deleted in the work tree
	case $f in
	*.sh | *.bash) printf '%s\n' "$f" ;;
	*) if head -n 1 "$f" | grep -Eq '^#![[:space:]]*[^[:space:]]*/(env[[:space:]]+)?(sh|bash|dash)([[:space:]]|$)'; then
		printf '%s\n' "$f"
	fi ;;
	esac
done >"$list"
[ -s "$list" ] || { echo "shellcheck: no shell script found" >&2; exit 1; }
# One file name per line: none of the tree's holds a newline.
tr '\n' '\0' <"$list" | xargs -0 shellcheck -x
echo "shellcheck: $(wc -l <"$list") scripts clean"
