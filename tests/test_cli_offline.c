/*
 * test_cli_offline.c — `tally inspect` and `tally verify` as a script sees
 * them: the exact lines on stdout and stderr and the exit code, for a
 * clean directory, a damaged one, a locked one, one that is not a data
 * directory, and bad arguments (tools/cmd_inspect.c, tools/cmd_verify.c,
 * the exit codes of tools/cli.h).
 *
 * The commands run in the test process (their `run` function, as main()
 * dispatches it), with stdout and stderr sent to files that the test reads
 * back. The engine's results behind them are tested in test_inspect.c;
 * here it is the command's words and codes.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "support/cli_run.h"
#include "support/fault_io.h"
#include "support/segment_header.h"
#include "support/test_dir.h"
#include "tally.h"

#define NOW_US (INT64_C(1790000000) * 1000000) /* 2026-09-21T14:13:20Z */
#define MINUTE_US (INT64_C(60) * 1000000)
#define DAY_US (INT64_C(86400) * 1000000)

static char dir[64];
static fault_io *fio;

static void setup(void)
{
	fio = test_dir_store_setup(dir, sizeof(dir), "cli-offline", NOW_US);
}

static void teardown(void)
{
	test_dir_store_teardown(dir, fio);
}

TestSuite(cli_offline, .init = setup, .fini = teardown);

/* ---- running a command ---------------------------------------------------- */

static cli_run_result *run(const cli_command *command, int argc, const char **argv)
{
	return cli_run(dir, command, argc, argv);
}

static cli_run_result *run_inspect(const char *flag, const char *path)
{
	const char *argv[3] = {"inspect", flag ? flag : path, path};
	return run(&cli_command_inspect, flag ? 3 : 2, argv);
}

static cli_run_result *run_verify(const char *flag, const char *path)
{
	const char *argv[3] = {"verify", flag ? flag : path, path};
	return run(&cli_command_verify, flag ? 3 : 2, argv);
}

/* ---- the data directory --------------------------------------------------- */

static tally_store *store_open(void)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	tally_store *s = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_store_open(dir, &o, &s, err), 0, "%s", err);
	return s;
}

static void ingest(tally_store *s, const char *tenant, const char *id, int64_t time_us)
{
	tally_event e;
	memset(&e, 0, sizeof(e));
	e.event_id = (tally_str){id, (uint32_t)strlen(id)};
	e.time_us = time_us;
	e.type = (tally_str){"llm.call", 8};
	e.tokens_in = 100;
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, tenant, &e, 1, &r), 0);
	cr_assert_eq(r.code, TALLY_ACCEPTED, "%s", id);
}

/* The first and last event times of build_store's segments. */
#define T_FIRST (NOW_US - DAY_US - 30 * MINUTE_US)
#define T_LAST (NOW_US - 10 * MINUTE_US)

/* acme: two events a day ago and one ten minutes ago; beta: one ten
 * minutes ago: LSNs 1..4, flushed into one segment file (3 segments:
 * acme's two days, beta's one). Then acme's fifth event (LSN 5), left in
 * the WAL. The flush retired WAL file 1, so the next is file 2. */
static void build_store(void)
{
	tally_store *s = store_open();
	ingest(s, "acme", "a1", T_FIRST);
	ingest(s, "acme", "a2", T_FIRST + MINUTE_US);
	ingest(s, "acme", "a3", T_LAST);
	ingest(s, "beta", "b1", T_LAST - MINUTE_US);
	cr_assert_eq(tally_flush(s), 0);
	ingest(s, "acme", "a4", NOW_US - MINUTE_US);
	cr_assert_eq(tally_store_close(s), 0);
}

static uint64_t file_size(const char *path)
{
	struct stat st;
	cr_assert_eq(stat(path, &st), 0, "stat %s", path);
	return (uint64_t)st.st_size;
}

/* The path of the store's only segment file. */
static void segment_path(char *path, size_t size)
{
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "ls %s/segments", dir);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	char name[64] = "";
	cr_assert_not_null(fgets(name, sizeof(name), p));
	char more[64];
	cr_assert_null(fgets(more, sizeof(more), p), "one segment file");
	pclose(p);
	name[strcspn(name, "\n")] = 0;
	snprintf(path, size, "%s/segments/%s", dir, name);
}

static void wal_path(char *path, size_t size, uint64_t file_id)
{
	snprintf(path, size, "%s/wal/%016" PRIx64 ".wal", dir, file_id);
}

/* ---- inspect -------------------------------------------------------------- */

/* Description: `tally inspect DIR` exits 0 and prints the summary lines
 * exactly: manifest version and generation, segment files and bytes,
 * tenants, segments, rows, the time range, and the WAL's files, bytes,
 * replay LSN and next file id; every tenant has its line. */
Test(cli_offline, inspect_prints_the_summary_of_a_data_directory)
{
	build_store();
	char path[160], bytes[CLI_BYTES_SIZE], line[256], t0[CLI_TIME_SIZE], t1[CLI_TIME_SIZE];
	cli_run_result *r = run_inspect(NULL, dir);
	cr_assert_eq(r->code, CLI_EXIT_OK, "stderr: %s", r->err);
	cr_assert_str_empty(r->err);

	snprintf(line, sizeof(line), "data directory   %s", dir);
	cli_expect_line(r->out, line);
	cli_expect_line(r->out, "manifest         version 3, generation 2");
	segment_path(path, sizeof(path));
	cli_format_bytes(bytes, file_size(path));
	snprintf(line, sizeof(line), "segment files    1 (%s)", bytes);
	cli_expect_line(r->out, line);
	cli_expect_line(r->out, "tenants          2 (with rows in segments)");
	cli_expect_line(r->out, "segments         3 (tenant-days, per file)");
	cli_expect_line(r->out, "rows             4");
	cli_format_time(t0, T_FIRST);
	cli_format_time(t1, T_LAST);
	snprintf(line, sizeof(line), "time range       %s .. %s", t0, t1);
	cli_expect_line(r->out, line);
	wal_path(path, sizeof(path), 2);
	cli_format_bytes(bytes, file_size(path));
	snprintf(line, sizeof(line), "WAL              1 file, %s; replay from LSN 5; next file id 2",
		 bytes);
	cli_expect_line(r->out, line);
	cr_assert_not_null(strstr(r->out, "\n  acme "), "%s", r->out);
	cr_assert_not_null(strstr(r->out, "\n  beta "), "%s", r->out);
}

/* Description: `tally inspect --segments DIR` adds a table of the
 * segments, one line per tenant-day of each file: tenant, day, file id,
 * rows, bytes and the first and last event; a store with nothing flushed
 * says so in the time range and in both tables. */
Test(cli_offline, inspect_segments_lists_each_tenant_day)
{
	build_store();
	cli_run_result *r = run_inspect("--segments", dir);
	cr_assert_eq(r->code, CLI_EXIT_OK, "stderr: %s", r->err);
	cr_expect_not_null(strstr(r->out, "\n  tenant day        file                   rows      stored"),
			   "%s", r->out);
	/* acme's rows of yesterday and of today, beta's of today: in file 1. */
	static const struct {
		const char *tenant;
		int64_t day_us;
		int rows;
		int64_t first, last;
	} segs[] = {
		{"acme", T_FIRST, 2, T_FIRST, T_FIRST + MINUTE_US},
		{"acme", T_LAST, 1, T_LAST, T_LAST},
		{"beta", T_LAST, 1, T_LAST - MINUTE_US, T_LAST - MINUTE_US},
	};
	for (size_t i = 0; i < sizeof(segs) / sizeof(segs[0]); i++) {
		char day[CLI_TIME_SIZE], t0[CLI_TIME_SIZE], t1[CLI_TIME_SIZE], start[128];
		cli_format_day(day, (int32_t)(segs[i].day_us / DAY_US));
		cli_format_time(t0, segs[i].first);
		cli_format_time(t1, segs[i].last);
		snprintf(start, sizeof(start), "\n  %-6s %-10s %016x %10d ", segs[i].tenant, day, 1,
			 segs[i].rows);
		const char *line = strstr(r->out, start);
		cr_expect_not_null(line, "'%s' in:\n%s", start + 1, r->out);
		if (line) {
			size_t len = strcspn(line + 1, "\n");
			char tail[128];
			snprintf(tail, sizeof(tail), "  %s  %s", t0, t1);
			cr_expect(len > strlen(tail) &&
					  strncmp(line + 1 + len - strlen(tail), tail, strlen(tail)) == 0,
				  "segment %zu ends with its times: %.*s", i, (int)len, line + 1);
		}
	}

	test_dir_remove_tree(dir);
	cr_assert_eq(mkdir(dir, 0700), 0);
	tally_store *s = store_open();
	cr_assert_eq(tally_store_close(s), 0);
	r = run_inspect("--segments", dir);
	cr_assert_eq(r->code, CLI_EXIT_OK, "stderr: %s", r->err);
	cli_expect_line(r->out, "time range       - (no rows in segments)");
	const char *none = strstr(r->out, "  (no segments)\n");
	cr_expect_not_null(none, "%s", r->out);
	cr_expect_not_null(none ? strstr(none + 1, "  (no segments)\n") : NULL, "in both tables: %s",
			   r->out);
}

/* Description: `tally inspect --json --segments DIR` prints one JSON
 * object with the same figures as exact integers, and every segment. */
Test(cli_offline, inspect_json_has_the_exact_figures)
{
	build_store();
	const char *argv[4] = {"inspect", "--json", "--segments", dir};
	cli_run_result *r = run(&cli_command_inspect, 4, argv);
	cr_assert_eq(r->code, CLI_EXIT_OK, "stderr: %s", r->err);
	json_error_t error;
	json_t *root = json_loads(r->out, 0, &error);
	cr_assert_not_null(root, "not JSON (%s): %s", error.text, r->out);
	cr_expect_str_eq(json_string_value(json_object_get(root, "dir")), dir);
	cr_expect_eq(json_integer_value(json_object_get(root, "manifest_version")), 3);
	cr_expect_eq(json_integer_value(json_object_get(root, "manifest_generation")), 2);
	cr_expect_eq(json_integer_value(json_object_get(root, "segment_file_count")), 1);
	cr_expect_eq(json_integer_value(json_object_get(root, "segment_count")), 3);
	cr_expect_eq(json_integer_value(json_object_get(root, "tenant_count")), 2);
	cr_expect_eq(json_integer_value(json_object_get(root, "rows")), 4);
	cr_expect_eq(json_integer_value(json_object_get(root, "time_min_us")), T_FIRST);
	cr_expect_eq(json_integer_value(json_object_get(root, "time_max_us")), T_LAST);
	char path[160];
	segment_path(path, sizeof(path));
	cr_expect_eq((uint64_t)json_integer_value(json_object_get(root, "file_bytes")),
		     file_size(path));
	json_t *wal = json_object_get(root, "wal");
	wal_path(path, sizeof(path), 2);
	cr_expect_eq(json_integer_value(json_object_get(wal, "file_count")), 1);
	cr_expect_eq((uint64_t)json_integer_value(json_object_get(wal, "bytes")), file_size(path));
	cr_expect_eq(json_integer_value(json_object_get(wal, "replay_lsn")), 5);
	cr_expect_eq(json_integer_value(json_object_get(wal, "file_id_next")), 2);

	json_t *tenants = json_object_get(root, "tenants");
	cr_assert_eq(json_array_size(tenants), 2);
	int64_t rows = 0;
	for (size_t i = 0; i < 2; i++)
		rows += json_integer_value(json_object_get(json_array_get(tenants, i), "rows"));
	cr_expect_eq(rows, 4);
	json_t *segments = json_object_get(root, "segments");
	cr_assert_eq(json_array_size(segments), 3);
	int acme_days = 0;
	for (size_t i = 0; i < 3; i++) {
		json_t *g = json_array_get(segments, i);
		const char *tenant = json_string_value(json_object_get(g, "tenant"));
		cr_assert_not_null(tenant);
		int64_t n = json_integer_value(json_object_get(g, "rows"));
		if (strcmp(tenant, "acme") == 0) {
			acme_days++;
			cr_expect(n == 1 || n == 2, "acme: %" PRId64 " rows in a day", n);
		} else {
			cr_expect_str_eq(tenant, "beta");
			cr_expect_eq(n, 1);
		}
	}
	cr_expect_eq(acme_days, 2);
	json_decref(root);
}

/* Description: 150 tenants (more than inspect's first tenant table holds,
 * so it grows twice), tenant k with k % 4 + 1 events, in two flushes (the
 * second file holding every third tenant again): inspect's JSON lists each
 * tenant once with its exact rows and segments, 150 in all. */
Test(cli_offline, inspect_counts_each_of_many_tenants_once)
{
	enum { TENANTS = 150 };
	tally_store *s = store_open();
	int64_t expected_rows[TENANTS], expected_segments[TENANTS];
	for (int round = 0; round < 2; round++) {
		for (int k = round; k < TENANTS; k += round ? 3 : 1) {
			char tenant[16], id[32];
			snprintf(tenant, sizeof(tenant), "t%03d", k);
			int events = round ? 1 : k % 4 + 1;
			for (int i = 0; i < events; i++) {
				snprintf(id, sizeof(id), "%s-%d-%d", tenant, round, i);
				ingest(s, tenant, id, T_LAST - (int64_t)(i + 1) * MINUTE_US);
			}
			expected_rows[k] = (round ? expected_rows[k] : 0) + events;
			expected_segments[k] = round + 1;
		}
		cr_assert_eq(tally_flush(s), 0);
	}
	cr_assert_eq(tally_store_close(s), 0);
	const char *argv[3] = {"inspect", "--json", dir};
	cli_run_result *r = run(&cli_command_inspect, 3, argv);
	cr_assert_eq(r->code, CLI_EXIT_OK, "stderr: %s", r->err);
	json_error_t error;
	json_t *root = json_loads(r->out, 0, &error);
	cr_assert_not_null(root, "not JSON (%s)", error.text);
	cr_expect_eq(json_integer_value(json_object_get(root, "tenant_count")), TENANTS);
	json_t *tenants = json_object_get(root, "tenants");
	cr_assert_eq(json_array_size(tenants), TENANTS);
	bool seen[TENANTS] = {false};
	for (size_t i = 0; i < TENANTS; i++) {
		json_t *t = json_array_get(tenants, i);
		const char *name = json_string_value(json_object_get(t, "name"));
		cr_assert(name && name[0] == 't', "tenant %zu", i);
		int k = atoi(name + 1);
		cr_assert(k >= 0 && k < TENANTS && !seen[k], "%s listed once", name);
		seen[k] = true;
		cr_expect_eq(json_integer_value(json_object_get(t, "rows")), expected_rows[k], "%s", name);
		cr_expect_eq(json_integer_value(json_object_get(t, "segment_count")), expected_segments[k],
			     "%s", name);
	}
	json_decref(root);
}

/* Description: a manifest written before version 3 has no next WAL file
 * id; inspect says so instead of printing a number (JSON: null). */
Test(cli_offline, inspect_of_a_version_2_manifest_says_the_next_wal_id_is_not_recorded)
{
	build_store();
	/* Version 2 is version 3 without its last field: cut it and put the
	 * checksum back. */
	char path[160];
	snprintf(path, sizeof(path), "%s/MANIFEST", dir);
	uint64_t size = file_size(path);
	uint8_t data[4096];
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f);
	cr_assert_lt(size, sizeof(data));
	cr_assert_eq(fread(data, 1, size, f), size);
	fclose(f);
	size -= 8;
	data[8] = 2;
	uint64_t sum = XXH3_64bits(data, size - 8);
	for (int i = 0; i < 8; i++)
		data[size - 8 + i] = (uint8_t)(sum >> (8 * i));
	f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(data, 1, size, f), size);
	cr_assert_eq(fclose(f), 0);

	cli_run_result *r = run_inspect(NULL, dir);
	cr_assert_eq(r->code, CLI_EXIT_OK, "stderr: %s", r->err);
	cr_assert_not_null(strstr(r->out, "; replay from LSN 5; next file id not recorded (manifest "
					  "version 2)\n"), "%s", r->out);
	cli_expect_line(r->out, "manifest         version 2, generation 2");
	r = run_inspect("--json", dir);
	cr_assert_eq(r->code, CLI_EXIT_OK);
	json_t *root = json_loads(r->out, 0, NULL);
	cr_assert_not_null(root);
	cr_expect(json_is_null(json_object_get(json_object_get(root, "wal"), "file_id_next")));
	json_decref(root);
}

/* ---- verify --------------------------------------------------------------- */

/* `tally verify --json DIR`, which must report `problems` problems with
 * the exit code that goes with them; the object (json_decref it). */
static json_t *verify_json(int problems)
{
	cli_run_result *r = run_verify("--json", dir);
	cr_assert_eq(r->code, problems ? CLI_EXIT_FINDINGS : CLI_EXIT_OK, "%s", r->err);
	json_t *root = json_loads(r->out, 0, NULL);
	cr_assert_not_null(root, "%s", r->out);
	cr_expect_str_eq(json_string_value(json_object_get(root, "dir")), dir);
	cr_expect_eq(json_is_true(json_object_get(root, "clean")), problems == 0);
	cr_expect_eq(json_integer_value(json_object_get(root, "problem_count")), problems);
	cr_assert_eq(json_array_size(json_object_get(root, "problems")), (size_t)problems);
	return root;
}

/* Description: `tally verify DIR` on a clean directory exits 0 and prints
 * one line; --json says clean with no problems. */
Test(cli_offline, verify_of_a_clean_directory_exits_0)
{
	build_store();
	cli_run_result *r = run_verify(NULL, dir);
	cr_assert_eq(r->code, CLI_EXIT_OK, "stdout: %s stderr: %s", r->out, r->err);
	char line[200];
	snprintf(line, sizeof(line), "tally verify: %s: no problems found\n", dir);
	cr_expect_str_eq(r->out, line);
	cr_expect_str_empty(r->err);

	json_decref(verify_json(0));
}

/* Description: `verify --json` and `inspect --json` of a data directory
 * whose path is not UTF-8 (byte 0xff) report it, the path's non-ASCII
 * bytes written '?' (before 2026-12-02 both exited 2, "could not build the
 * JSON output"); the text forms print the path as it is. */
Test(cli_offline, json_reports_of_a_path_that_is_not_utf8)
{
	build_store();
	char odd[80], shown[80];
	snprintf(odd, sizeof(odd), "/tmp/tally-test-odd-%d-\xff", (int)getpid());
	snprintf(shown, sizeof(shown), "/tmp/tally-test-odd-%d-?", (int)getpid());
	unlink(odd);
	cr_assert_eq(symlink(dir, odd), 0, "symlink %s", odd);

	cli_run_result *r = run_verify("--json", odd);
	cr_expect_eq(r->code, CLI_EXIT_OK, "stdout: %s stderr: %s", r->out, r->err);
	json_error_t error;
	json_t *root = json_loads(r->out, 0, &error);
	cr_expect_not_null(root, "%s: %s", error.text, r->out);
	cr_expect_str_eq(json_string_value(json_object_get(root, "dir")), shown);
	cr_expect(json_is_true(json_object_get(root, "clean")));
	json_decref(root);

	r = run_inspect("--json", odd);
	cr_expect_eq(r->code, CLI_EXIT_OK, "stdout: %s stderr: %s", r->out, r->err);
	root = json_loads(r->out, 0, &error);
	cr_expect_not_null(root, "%s: %s", error.text, r->out);
	cr_expect_str_eq(json_string_value(json_object_get(root, "dir")), shown);
	json_decref(root);

	r = run_verify(NULL, odd);
	cr_expect_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	char line[200];
	snprintf(line, sizeof(line), "tally verify: %s: no problems found\n", odd);
	cr_expect_str_eq(r->out, line);
	cr_assert_eq(unlink(odd), 0);
}

/* The byte offset a verify message gives right after the file's path. */
static uint64_t message_offset(const char *message, const char *path)
{
	const char *p = strstr(message, path);
	cr_assert_not_null(p, "\"%s\" does not name %s", message, path);
	p += strlen(path);
	uint64_t offset;
	cr_assert_eq(sscanf(p, " offset %" SCNu64, &offset), 1, "\"%s\": no offset after the path",
		     message);
	return offset;
}

/* Flips bit 0 of the byte at offset in path. */
static void flip_byte(const char *path, uint64_t offset)
{
	int fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0, "open %s", path);
	uint8_t b;
	cr_assert_eq(pread(fd, &b, 1, (off_t)offset), 1);
	b ^= 1;
	cr_assert_eq(pwrite(fd, &b, 1, (off_t)offset), 1);
	close(fd);
}

/* Description: a flipped byte in the segment file's first block (which
 * starts right after the 32-byte header) makes `tally verify` exit 1,
 * print the problem naming the file and the block's offset, and count it
 * in the summary; --json lists the same message. */
Test(cli_offline, verify_of_a_damaged_segment_exits_1_naming_file_and_offset)
{
	build_store();
	char path[160];
	segment_path(path, sizeof(path));
	flip_byte(path, 40);
	cli_run_result *r = run_verify(NULL, dir);
	cr_assert_eq(r->code, CLI_EXIT_FINDINGS, "stdout: %s stderr: %s", r->out, r->err);
	cr_expect_str_empty(r->err);
	char first[1024];
	size_t n = strcspn(r->out, "\n");
	cr_assert_lt(n, sizeof(first));
	memcpy(first, r->out, n);
	first[n] = 0;
	cr_expect_eq(message_offset(first, path), 32, "%s", first);
	cr_expect_not_null(strstr(first, ": block checksum mismatch ("), "%s", first);
	char summary[200];
	snprintf(summary, sizeof(summary), "tally verify: %s: 1 problem found\n", dir);
	cr_expect_str_eq(r->out + n + 1, summary, "one problem, then the summary: %s", r->out);

	json_t *root = verify_json(1);
	cr_expect_str_eq(json_string_value(json_array_get(json_object_get(root, "problems"), 0)),
			 first);
	json_decref(root);
}

/* Description: a flipped byte inside the record of the newest WAL file is
 * a torn tail (recovery truncates it), not a problem: exit 0. The same
 * damage in a file that is not the newest is: exit 1, the problem named
 * with the file and the record's offset (40, after the header), then the
 * gap it leaves before the next file. */
Test(cli_offline, verify_of_a_damaged_wal_record_names_file_and_offset)
{
	build_store();
	tally_store *s = store_open(); /* a new process starts WAL file 3 */
	ingest(s, "acme", "a5", NOW_US - MINUTE_US);
	cr_assert_eq(tally_store_close(s), 0);
	char older[160], newest[160];
	wal_path(older, sizeof(older), 2);
	wal_path(newest, sizeof(newest), 3);
	flip_byte(newest, 40 + 24); /* the record's first payload byte */
	cli_run_result *r = run_verify(NULL, dir);
	cr_assert_eq(r->code, CLI_EXIT_OK, "a torn tail of the newest file: %s", r->out);

	flip_byte(older, 40 + 24);
	r = run_verify(NULL, dir);
	cr_assert_eq(r->code, CLI_EXIT_FINDINGS, "stdout: %s stderr: %s", r->out, r->err);
	cr_expect_eq(message_offset(r->out, older), 40, "%s", r->out);
	/* Then what follows from it: file 3 starts after LSN 5, which is now
	 * nowhere. */
	cr_expect_not_null(strstr(r->out, "missing WAL before file 0000000000000003: it starts at "
					  "LSN 6 but replay starts at LSN 5\n"), "%s", r->out);
	char summary[200];
	snprintf(summary, sizeof(summary), "\ntally verify: %s: 2 problems found\n", dir);
	cr_expect_not_null(strstr(r->out, summary), "%s", r->out);
}

/* Description: a directory held by an open store is not checked: both
 * commands exit 2 and say why on stderr, printing nothing on stdout. */
Test(cli_offline, a_locked_directory_exits_2)
{
	build_store();
	tally_store *s = store_open();
	cli_run_result *r = run_verify(NULL, dir);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_empty(r->out);
	char says[200];
	snprintf(says, sizeof(says), "tally verify: cannot check %s: ", dir);
	cr_expect_eq(strncmp(r->err, says, strlen(says)), 0, "%s", r->err);
	cr_expect_not_null(strstr(r->err, "/LOCK is held by a running process"), "%s", r->err);
	r = run_inspect(NULL, dir);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_empty(r->out);
	snprintf(says, sizeof(says), "tally inspect: cannot inspect %s: ", dir);
	cr_expect_eq(strncmp(r->err, says, strlen(says)), 0, "%s", r->err);
	cr_assert_eq(tally_store_close(s), 0);
	cr_expect_eq(run_verify(NULL, dir)->code, CLI_EXIT_OK, "closed, it checks again");
}

/* Description: an empty directory is not a data directory: exit 2, with
 * the reason on stderr. */
Test(cli_offline, a_directory_without_a_manifest_exits_2)
{
	cli_run_result *r = run_inspect(NULL, dir);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	char says[200];
	snprintf(says, sizeof(says),
		 "tally inspect: cannot inspect %s: %s: not a tally data directory (no MANIFEST)\n",
		 dir, dir);
	cr_expect_str_eq(r->err, says);
	r = run_verify(NULL, dir);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_empty(r->out);
	snprintf(says, sizeof(says), "tally verify: cannot check %s: ", dir);
	cr_expect_eq(strncmp(r->err, says, strlen(says)), 0, "%s", r->err);
}

/* Description: usage errors exit 2 with the message and the usage line on
 * stderr: an unknown option, no directory, two directories. */
Test(cli_offline, usage_errors_exit_2_with_the_usage_line)
{
	cli_run_result *r = run_verify("--bogus", dir);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_eq(r->err, "tally verify: unknown option '--bogus'\n"
				 "usage: tally verify [--json] DIR   (see 'tally help verify')\n");
	cr_expect_str_empty(r->out);
	const char *none[1] = {"verify"};
	r = run(&cli_command_verify, 1, none);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_eq(r->err, "tally verify: missing the data directory\n"
				 "usage: tally verify [--json] DIR   (see 'tally help verify')\n");
	const char *two[3] = {"inspect", dir, "/tmp"};
	r = run(&cli_command_inspect, 3, two);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_not_null(strstr(r->err, "unexpected argument '/tmp'"), "%s", r->err);
	cr_expect_not_null(strstr(r->err, "usage: tally inspect [--json] [--files] [--segments] DIR"),
			   "%s", r->err);
}

/* ---- inspect --files ---------------------------------------------------- */

/* acme: 30 events on each of four days, globex: 5 today, flushed; acme's
 * 10 more today, flushed; then a compaction that cuts tenants of more than
 * 40 rows by time: acme's 120 rows of the first flush (one row group) are
 * its first span, and its later span begins a file of its own, marked
 * RUN_NEXT, which globex's section follows. */
static void build_run_store(void)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	o.compact_section_rows_max = 40;
	tally_store *s = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_store_open(dir, &o, &s, err), 0, "%s", err);
	char id[32];
	for (int d = 3; d >= 0; d--)
		for (int i = 0; i < 30; i++) {
			snprintf(id, sizeof(id), "a%d-%d", d, i);
			ingest(s, "acme", id, NOW_US - d * DAY_US - 200 * MINUTE_US + i * MINUTE_US);
		}
	for (int i = 0; i < 5; i++) {
		snprintf(id, sizeof(id), "g%d", i);
		ingest(s, "globex", id, NOW_US - 100 * MINUTE_US + i * MINUTE_US);
	}
	cr_assert_eq(tally_flush(s), 0);
	for (int i = 0; i < 10; i++) {
		snprintf(id, sizeof(id), "b%d", i);
		ingest(s, "acme", id, NOW_US - 50 * MINUTE_US + i * MINUTE_US);
	}
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_compact(s), 0);
	cr_assert_eq(tally_store_close(s), 0);
}

/* The path of segment file id. */
static void segment_id_path(char *path, size_t size, uint64_t id)
{
	snprintf(path, size, "%s/segments/%016" PRIx64 ".seg", dir, id);
}

/* Description: `tally inspect --files DIR` adds a table of the segment
 * files, one line each: id, format version, run (first, or next for a file
 * continuing a flush's or compaction's run), tenants, segments, rows, size
 * and first and last event; a file of a version before 5 (no run flag)
 * shows "-". --json --files gives the same as exact figures, run_next
 * null before version 5. */
Test(cli_offline, inspect_files_lists_each_segment_file_and_its_run)
{
	build_run_store();
	/* The compaction's run: files 3 and 4 (the flushes wrote 1 and 2). */
	static const struct {
		uint64_t id;
		const char *run;
		int tenants, segments, rows;
		int64_t first, last;
	} files[] = {
		{3, "first", 1, 4, 120, NOW_US - 3 * DAY_US - 200 * MINUTE_US,
		 NOW_US - 200 * MINUTE_US + 29 * MINUTE_US},
		{4, "next", 2, 2, 15, NOW_US - 100 * MINUTE_US, NOW_US - 41 * MINUTE_US},
	};
	for (int pass = 0; pass < 2; pass++) {
		cli_run_result *r = run_inspect("--files", dir);
		cr_assert_eq(r->code, CLI_EXIT_OK, "stderr: %s", r->err);
		cr_expect_not_null(strstr(r->out, "\n  file             version run   tenants segments"
						  "         rows        size  first event"),
				   "%s", r->out);
		for (size_t i = 0; i < 2; i++) {
			char path[160], size[CLI_BYTES_SIZE], t0[CLI_TIME_SIZE], t1[CLI_TIME_SIZE];
			char line[256];
			segment_id_path(path, sizeof(path), files[i].id);
			cli_format_bytes(size, file_size(path));
			cli_format_time(t0, files[i].first);
			cli_format_time(t1, files[i].last);
			const char *run = pass == 1 && i == 0 ? "-" : files[i].run;
			snprintf(line, sizeof(line), "  %016" PRIx64 " %7d %-5s %7d %8d %12d %11s  %-27s  %s",
				 files[i].id, pass == 1 && i == 0 ? 4 : 5, run, files[i].tenants,
				 files[i].segments, files[i].rows, size, t0, t1);
			cli_expect_line(r->out, line);
		}
		const char *argv[4] = {"inspect", "--json", "--files", dir};
		r = run(&cli_command_inspect, 4, argv);
		cr_assert_eq(r->code, CLI_EXIT_OK, "stderr: %s", r->err);
		json_error_t error;
		json_t *root = json_loads(r->out, 0, &error);
		cr_assert_not_null(root, "not JSON (%s): %s", error.text, r->out);
		json_t *list = json_object_get(root, "files");
		cr_assert_eq(json_array_size(list), 2);
		for (size_t i = 0; i < 2; i++) {
			json_t *f = json_array_get(list, i);
			char path[160], t0[CLI_TIME_SIZE], t1[CLI_TIME_SIZE];
			segment_id_path(path, sizeof(path), files[i].id);
			cli_format_time(t0, files[i].first);
			cli_format_time(t1, files[i].last);
			cr_expect_eq((uint64_t)json_integer_value(json_object_get(f, "file_id")), files[i].id);
			cr_expect_eq(json_integer_value(json_object_get(f, "version")),
				     pass == 1 && i == 0 ? 4 : 5);
			json_t *next = json_object_get(f, "run_next");
			if (pass == 1 && i == 0)
				cr_expect(json_is_null(next), "file %zu", i);
			else
				cr_expect(json_is_boolean(next) && json_boolean_value(next) == (i == 1),
					  "file %zu", i);
			cr_expect_eq((uint64_t)json_integer_value(json_object_get(f, "bytes")),
				     file_size(path));
			cr_expect_eq(json_integer_value(json_object_get(f, "tenant_count")), files[i].tenants);
			cr_expect_eq(json_integer_value(json_object_get(f, "segment_count")),
				     files[i].segments);
			cr_expect_eq(json_integer_value(json_object_get(f, "rows")), files[i].rows);
			cr_expect_str_eq(json_string_value(json_object_get(f, "time_min")), t0);
			cr_expect_str_eq(json_string_value(json_object_get(f, "time_max")), t1);
		}
		json_decref(root);
		/* Then file 3 as a version 4 file (no flags there to clear). */
		char path[160];
		segment_id_path(path, sizeof(path), 3);
		segment_header_set_u32(path, SEGMENT_HEADER_VERSION_OFFSET, 4);
	}
}
