#!/bin/sh
# tests/memcheck.sh BUILD TEST... — runs criterion test binaries under
# valgrind's memcheck (make memcheck). Not part of make check: it takes
# about half an hour.
#
# What it adds to make asan: memcheck reports a branch on, or a system call
# given, bytes nobody wrote. The one that matters most here is a pwrite of
# such bytes: heap garbage, perhaps another tenant's, reaching a file.
#
# The engine runs with TALLY_IO_URING=off, its plain system call path:
# memcheck does not see io_uring fill a read buffer, so every byte read
# through a ring would look unwritten (and a ring's writes would not be
# checked at all). tallyd's event loop has no such switch, which is why
# the server's tests are not in the default list (tests/README.md).
#
# Each test binary's processes log to BUILD/memcheck/TEST/; the run fails
# when a test fails or any log counts an error.
set -u
build=$1
shift
if ! command -v valgrind >/dev/null 2>&1; then
	echo "memcheck: valgrind is not installed (apt-get install valgrind)" >&2
	exit 2
fi
failed=""
for t in "$@"; do
	# Tests memcheck cannot run as written: two exhaust the process's
	# mappings (vm.max_map_count), and valgrind's own table of mappings
	# runs out first; two run a tallyd, whose event loop reads through
	# io_uring (see above).
	case $t in
	test_memtable) filter='!(memtable/rows_stay_in_a_block_when_no_mapping_is_left)' ;;
	test_grow) filter='!(grow/slots_alloc_maps_every_page_and_zeroes)' ;;
	test_metrics) filter='!(metrics/a_servers_gauges_are_its_store_figures|metrics/query_cache_bytes_max_reaches_the_store)' ;;
	*) filter='*' ;;
	esac
	logs=$build/memcheck/$t
	rm -rf "$logs"
	mkdir -p "$logs"
	# Children are traced (criterion runs each test in one), except the
	# system's programs: PostgreSQL's, which the export tests (not in the
	# default list) run as their own user, could not even write a log.
	TALLY_IO_URING=off valgrind --tool=memcheck --trace-children=yes \
		--trace-children-skip='/usr/*,/bin/*' \
		--log-file="$logs/%p.log" "$build/tests/$t" --jobs 1 --filter "$filter" \
		>"$logs/criterion.txt" 2>&1
	rc=$?
	errors=$(grep -l "ERROR SUMMARY: [1-9]" "$logs"/*.log 2>/dev/null | wc -l)
	echo "$t: $(tail -n 1 "$logs/criterion.txt"); $errors process(es) with memcheck errors"
	if [ "$rc" -ne 0 ] || [ "$errors" -ne 0 ]; then
		failed="$failed $t"
		grep -l "ERROR SUMMARY: [1-9]" "$logs"/*.log 2>/dev/null | head -n 3
	fi
done
if [ -n "$failed" ]; then
	echo "memcheck: failed:$failed (logs in $build/memcheck/)"
	exit 1
fi
echo "memcheck: no errors"
