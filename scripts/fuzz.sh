#!/bin/sh
# Runs each fuzzer (PKG:FuzzName) for FUZZTIME. A fuzzer that finds a
# failing input fails the run. Go's fuzzing engine sometimes ends a run on
# a loaded machine with its own "context deadline exceeded" and no failing
# input (a worker missed the end of the time budget): that run is made
# once more rather than failing make test on the engine's timing.
set -u
FUZZTIME=${FUZZTIME:-5s}
for f in "$@"; do
	pkg=${f%%:*}
	name=${f#*:}
	try=1
	while :; do
		out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "./$pkg" 2>&1)
		rc=$?
		printf '%s\n' "$out"
		[ "$rc" -eq 0 ] && break
		if [ "$try" -eq 1 ] && printf '%s' "$out" | grep -q 'context deadline exceeded' &&
			! printf '%s' "$out" | grep -q 'Failing input written'; then
			echo "fuzz: $name: the fuzzing engine's own timeout, no failing input: once more"
			try=2
			continue
		fi
		exit 1
	done
done
