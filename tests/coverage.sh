#!/bin/sh
# tests/coverage.sh BUILD — the line coverage that make test left in BUILD
# (a build with --coverage; make coverage): one line per source file of
# engine/, server/, tools/ and proto/, the least covered first, then the
# total. gcov (part of gcc) reads the counts; -n writes no .gcov files.
# Lines no test ran are where a claim may have no test: read them with
# `gcov -o BUILD/DIR DIR/FILE.c` run in a scratch directory.
set -eu
build=$1
lines=$(for dir in engine server tools proto; do
	for data in "$build/$dir"/*.gcda; do
		[ -e "$data" ] || continue
		source=$dir/$(basename "$data" .gcda).c
		[ -e "$source" ] || continue
		gcov -n -o "$build/$dir" "$source" 2>/dev/null |
			awk -v f="$source" '
				$0 == "File '\''" f "'\''" { mine = 1; next }
				mine && /^Lines executed:/ {
					split($2, a, ":"); pct = a[2]; sub("%", "", pct)
					print pct, $4, f; exit
				}'
	done
done)
if [ -z "$lines" ]; then
	echo "coverage: no counts in $build (build it with --coverage and run the tests)" >&2
	exit 2
fi
echo "$lines" | sort -n | awk '
	{ printf "%7.2f%% of %5d lines  %s\n", $1, $2, $3; run += $1 * $2 / 100; all += $2 }
	END { printf "%7.2f%% of %5d lines  in all\n", 100 * run / all, all }'
