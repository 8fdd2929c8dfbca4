/*
 * test_inspect.c — tally_inspect and tally_verify on clean and damaged data
 * directories.
 *
 * Description: each test builds a store through the public API (background
 * worker off, frozen clock): tenant "acme" with 10/20/30 events on days
 * D-2/D-1/D and "globex" with 5/7 events on days D-1/D go into the first
 * segment file (one flush); "initech" with 500 hex-id events on day D goes
 * into the second (another flush). The small segments are packed row groups
 * (one block); initech's encodes to more than ROWGROUP_PACKED_BYTES_MAX, so
 * it is stored one block per column — both block layouts are covered.
 * Tests then damage exactly one thing (one byte of a block, of the manifest,
 * of a WAL record; a stray file; a held lock) and pin the exact report: how
 * many problems, and that the message names the file and the exact decimal
 * offset of the damaged block. Internal headers (segment.h, manifest.h) are
 * used only to find offsets and file ids, never to check results.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "manifest.h"
#include "rollup.h"
#include "rows.h"
#include "segment.h"
#include "strdict.h"
#include "support/fault_io.h"
#include "support/manifest_file.h"
#include "support/segment_header.h"
#include "support/test_dir.h"
#include "tally.h"

#define NOW_US (INT64_C(1790000000) * 1000000) /* 2026-09-21T14:13:20Z */
#define MINUTE_US (INT64_C(60) * 1000000)
#define DAY_NOW ((int32_t)(NOW_US / TALLY_US_PER_DAY))
#define INITECH_ROWS 500
#define PROBLEMS_MAX 128

static char dir[256];
static char segment_dir[300];
static char wal_dir[300];
static fault_io *fio;
/* compact_section_rows_max of the stores the tests open (0: the default). */
static uint64_t section_rows_max;

static void setup(void)
{
	section_rows_max = 0;
	fio = test_dir_store_setup(dir, sizeof(dir), "inspect", NOW_US);
	snprintf(segment_dir, sizeof(segment_dir), "%s/segments", dir);
	snprintf(wal_dir, sizeof(wal_dir), "%s/wal", dir);
}

static void teardown(void)
{
	test_dir_store_teardown(dir, fio);
}

TestSuite(inspect, .init = setup, .fini = teardown);

/* ---- building a store --------------------------------------------------- */

/* Opens dir as the tests do (fault io, no background threads): the
 * open's code, *s and err as tally_store_open leaves them. */
static int store_try_open(tally_store **s, char *err)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	o.compact_section_rows_max = section_rows_max;
	*s = NULL;
	return tally_store_open(dir, &o, s, err);
}

static tally_store *open_store(void)
{
	tally_store *s;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = store_try_open(&s, err);
	cr_assert_eq(rc, 0, "open: %s (%s)", tally_strerror(rc), err);
	return s;
}

#define S(x) ((tally_str){(x), (uint32_t)strlen(x)})

static int64_t row_time(int32_t day, int i)
{
	/* Off whole minutes, so footer bounds (to the minute) and the first and
	 * last event times differ. */
	return (int64_t)day * TALLY_US_PER_DAY + (int64_t)(i + 1) * MINUTE_US +
	       (int64_t)(i % 59) * 1000000 + 1234;
}

/* The `count` events ingest_day stores for tenant on day (times day start
 * + 1, 2, ... minutes), ids "<tenant>-<day>-<i>" or, with hex_ids, 32 hex
 * digits. Static: valid until the next call. */
static const tally_event *day_events(const char *tenant, int32_t day, int count, int hex_ids)
{
	static const char *models[3] = {"gpt-4o", "claude-3", "llama-3"};
	static char ids[INITECH_ROWS][65];
	static char users[INITECH_ROWS][32];
	static tally_event events[INITECH_ROWS];
	cr_assert_leq(count, INITECH_ROWS);
	for (int i = 0; i < count; i++) {
		if (hex_ids)
			snprintf(ids[i], sizeof(ids[i]), "%016" PRIx64 "%016" PRIx64,
				 (uint64_t)i * UINT64_C(0x9e3779b97f4a7c15) ^ UINT64_C(0xabcdef),
				 (uint64_t)(i + 7) * UINT64_C(0xc2b2ae3d27d4eb4f));
		else
			snprintf(ids[i], sizeof(ids[i]), "%s-%" PRId32 "-%d", tenant, day, i);
		snprintf(users[i], sizeof(users[i]), "user-%d", i % 17);
		tally_event *e = &events[i];
		memset(e, 0, sizeof(*e));
		e->event_id = S(ids[i]);
		e->time_us = row_time(day, i);
		e->type = S("llm.call");
		e->project = S("proj-a");
		e->agent = S("agent-1");
		e->model = S(models[i % 3]);
		e->user = S(users[i]);
		e->status = (uint32_t)(i % TALLY_STATUS_COUNT);
		e->tokens_in = (uint64_t)(100 + i * 13);
		e->tokens_out = (uint64_t)(50 + i * 7);
		e->cost_micros = 1000 + i * 31;
		e->duration_ms = (uint32_t)(200 + i);
	}
	return events;
}

/* Ingests day_events(tenant, day, count, hex_ids), every one accepted. */
static void ingest_day(tally_store *s, const char *tenant, int32_t day, int count, int hex_ids)
{
	static tally_ingest_result results[INITECH_ROWS];
	const tally_event *events = day_events(tenant, day, count, hex_ids);
	cr_assert_eq(tally_ingest(s, tenant, events, (size_t)count, results), 0);
	for (int i = 0; i < count; i++)
		cr_assert_eq(results[i].code, TALLY_ACCEPTED, "%s event %d", tenant, i);
}

/* The reference store: two segment files, three tenants, six segments. */
static void build_store(void)
{
	tally_store *s = open_store();
	ingest_day(s, "acme", DAY_NOW - 2, 10, 0);
	ingest_day(s, "acme", DAY_NOW - 1, 20, 0);
	ingest_day(s, "globex", DAY_NOW - 1, 5, 0);
	ingest_day(s, "acme", DAY_NOW, 30, 0);
	ingest_day(s, "globex", DAY_NOW, 7, 0);
	cr_assert_eq(tally_flush(s), 0);
	ingest_day(s, "initech", DAY_NOW, INITECH_ROWS, 1);
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- helpers: problems, files ------------------------------------------ */

typedef struct problems {
	int count;
	char message[PROBLEMS_MAX][TALLY_ERRMSG_SIZE];
} problems;

static void collect_problem(void *ctx, const char *message)
{
	problems *p = ctx;
	if (p->count < PROBLEMS_MAX)
		snprintf(p->message[p->count], TALLY_ERRMSG_SIZE, "%s", message);
	p->count++;
}

static problems *verify(int *rc)
{
	static problems p;
	memset(&p, 0, sizeof(p));
	*rc = tally_verify(dir, collect_problem, &p);
	for (int i = 0; i < p.count && i < PROBLEMS_MAX; i++)
		fprintf(stderr, "  problem: %s\n", p.message[i]);
	return &p;
}

/* Index of the first message containing both substrings (b may be NULL), or -1. */
static int find_message(const problems *p, const char *a, const char *b)
{
	for (int i = 0; i < p->count && i < PROBLEMS_MAX; i++)
		if (strstr(p->message[i], a) && (!b || strstr(p->message[i], b)))
			return i;
	return -1;
}

static void flip_byte(const char *path, uint64_t offset)
{
	int fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0, "open %s", path);
	uint8_t byte;
	cr_assert_eq(pread(fd, &byte, 1, (off_t)offset), 1);
	byte ^= 0x5a;
	cr_assert_eq(pwrite(fd, &byte, 1, (off_t)offset), 1);
	close(fd);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "create %s", path);
	fputs(text, f);
	fclose(f);
}

static uint64_t file_size(const char *path)
{
	struct stat st;
	cr_assert_eq(stat(path, &st), 0, "stat %s", path);
	return (uint64_t)st.st_size;
}

/* The manifest's segment file ids (two for the reference store). */
static void manifest_file_ids(uint64_t ids[2], uint64_t *generation)
{
	manifest m;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(manifest_read(tally_io_default(), dir, &m, err), 0, "%s", err);
	cr_assert_eq(m.file_count, 2);
	ids[0] = m.file_ids[0];
	ids[1] = m.file_ids[1];
	if (generation)
		*generation = m.generation;
	manifest_free(&m);
}

static segment_file *open_segment(uint64_t file_id)
{
	segment_file *f = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = segment_file_open(tally_io_default(), segment_dir, file_id, &f, err);
	cr_assert_eq(rc, 0, "%s", err);
	return f;
}

/* Block `column` of the first row group of file_id, which must not be
 * packed (one block per column: initech's, in build_store). */
static seg_block unpacked_block(uint64_t file_id, int column)
{
	segment_file *f = open_segment(file_id);
	cr_assert_eq(f->rowgroups[0].packed, 0);
	seg_block b = f->blocks[f->rowgroups[0].first_block + column];
	segment_file_close(f);
	return b;
}

static void segment_path(char *path, size_t size, uint64_t file_id)
{
	char name[64];
	segment_file_name(name, sizeof(name), file_id);
	snprintf(path, size, "%s/%s", segment_dir, name);
}

/* "<file name> offset <decimal>", the way every problem names a place. */
static void place(char *out, size_t size, uint64_t file_id, uint64_t offset)
{
	char name[64];
	segment_file_name(name, sizeof(name), file_id);
	snprintf(out, size, "%s offset %" PRIu64 ":", name, offset);
}

typedef struct wal_files {
	int count;
	char names[8][64];
	uint64_t bytes;
} wal_files;

static wal_files list_wal(void)
{
	wal_files w;
	memset(&w, 0, sizeof(w));
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "ls %s | grep -E '^[0-9a-f]{16}\\.wal$'", wal_dir);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	char line[128];
	while (fgets(line, sizeof(line), p)) {
		cr_assert_lt(w.count, 8);
		line[strcspn(line, "\n")] = 0;
		snprintf(w.names[w.count], sizeof(w.names[0]), "%s", line);
		char path[400];
		snprintf(path, sizeof(path), "%s/%s", wal_dir, line);
		w.bytes += file_size(path);
		w.count++;
	}
	pclose(p);
	return w;
}

/* ---- inspect ------------------------------------------------------------ */

typedef struct seen_segment {
	char tenant[TALLY_TENANT_SIZE_MAX + 1];
	uint64_t file_id;
	int32_t day;
	uint64_t rows;
	int64_t time_min_us;
	int64_t time_max_us;
	uint64_t stored_bytes;
	uint64_t raw_bytes;
} seen_segment;

typedef struct seen {
	int count;
	seen_segment segment[16];
} seen;

static void collect_segment(void *ctx, const tally_segment_info *info)
{
	seen *s = ctx;
	cr_assert_lt(s->count, 16);
	seen_segment *out = &s->segment[s->count++];
	snprintf(out->tenant, sizeof(out->tenant), "%s", info->tenant);
	out->file_id = info->file_id;
	out->day = info->day;
	out->rows = info->rows;
	out->time_min_us = info->time_min_us;
	out->time_max_us = info->time_max_us;
	out->stored_bytes = info->stored_bytes;
	out->raw_bytes = info->raw_bytes;
}

static int seen_compare(const void *a, const void *b)
{
	const seen_segment *x = a, *y = b;
	int c = strcmp(x->tenant, y->tenant);
	return c ? c : (x->day > y->day) - (x->day < y->day);
}

Test(inspect, reports_exact_rows_segments_files_and_per_segment_details)
{
	build_store();
	uint64_t ids[2], generation;
	manifest_file_ids(ids, &generation);

	tally_inspect_report report;
	seen s;
	memset(&s, 0, sizeof(s));
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_inspect(dir, &report, collect_segment, &s, err);
	cr_assert_eq(rc, 0, "inspect: %s (%s)", tally_strerror(rc), err);

	cr_expect_eq(report.rows, 10 + 20 + 30 + 5 + 7 + INITECH_ROWS);
	cr_expect_eq(report.segment_count, 6);
	cr_expect_eq(report.segment_file_count, 2);
	char path[512];
	segment_path(path, sizeof(path), ids[0]);
	uint64_t bytes = file_size(path);
	segment_path(path, sizeof(path), ids[1]);
	bytes += file_size(path);
	cr_expect_eq(report.file_bytes, bytes);
	cr_expect_eq(report.manifest_generation, generation);
	manifest m;
	cr_assert_eq(manifest_read(tally_io_default(), dir, &m, err), 0, "%s", err);
	cr_expect_eq(report.manifest_version, 3);
	cr_expect_eq(report.wal_replay_lsn, m.wal_replay_lsn);
	cr_expect_eq(report.wal_file_id_next, m.wal_file_id_next);
	cr_expect_geq(report.wal_file_id_next, 1);
	manifest_free(&m);
	wal_files w = list_wal();
	cr_expect_eq(report.wal_file_count, (uint64_t)w.count);
	cr_expect_eq(report.wal_bytes, w.bytes);

	/* Per segment: exact tenant, day, rows, file and time range. */
	cr_assert_eq(s.count, 6);
	qsort(s.segment, (size_t)s.count, sizeof(s.segment[0]), seen_compare);
	struct {
		const char *tenant;
		int32_t day;
		uint64_t rows;
		uint64_t file_id;
	} expect[6] = {
		{"acme", DAY_NOW - 2, 10, ids[0]},   {"acme", DAY_NOW - 1, 20, ids[0]},
		{"acme", DAY_NOW, 30, ids[0]},       {"globex", DAY_NOW - 1, 5, ids[0]},
		{"globex", DAY_NOW, 7, ids[0]},      {"initech", DAY_NOW, INITECH_ROWS, ids[1]},
	};
	uint64_t segment_stored = 0, segment_raw = 0;
	for (int i = 0; i < 6; i++) {
		const seen_segment *g = &s.segment[i];
		cr_expect_str_eq(g->tenant, expect[i].tenant, "segment %d", i);
		cr_expect_eq(g->day, expect[i].day, "segment %d: day %d", i, g->day);
		cr_expect_eq(g->rows, expect[i].rows, "segment %d: rows %" PRIu64, i, g->rows);
		cr_expect_eq(g->file_id, expect[i].file_id, "segment %d", i);
		cr_expect_eq(g->time_min_us, row_time(expect[i].day, 0), "segment %d", i);
		cr_expect_eq(g->time_max_us, row_time(expect[i].day, (int)expect[i].rows - 1),
			     "segment %d", i);
		cr_expect_gt(g->stored_bytes, 0);
		cr_expect_gt(g->raw_bytes, 0);
		segment_stored += g->stored_bytes;
		segment_raw += g->raw_bytes;
	}

	/* Columns: every stored byte of every row-group block is attributed to
	 * exactly one column; dictionaries and file framing make up the rest. */
	uint64_t column_stored = 0, column_raw = 0;
	for (int c = 0; c < TALLY_COL_COUNT; c++) {
		column_stored += report.column_stored_bytes[c];
		column_raw += report.column_raw_bytes[c];
	}
	cr_expect_eq(column_stored, segment_stored);
	cr_expect_leq(column_raw, segment_raw); /* packed directories are not column bytes */
	cr_expect_gt(column_raw, segment_raw - 12 * 6); /* ... and are at most 12 varints each */
	cr_expect_gt(report.column_raw_bytes[TALLY_COL_TIME], 0);
	cr_expect_geq(report.column_raw_bytes[TALLY_COL_EVENT_ID], INITECH_ROWS * 16);
	cr_expect_gt(report.dictionary_bytes, 0);
	cr_expect_lt(column_stored + report.dictionary_bytes, report.file_bytes);

	/* The check does not keep the lock: the store opens again. */
	cr_assert_eq(tally_store_close(open_store()), 0);
}

/* What tally_inspect_files reported, in call order. */
typedef struct file_calls {
	int file_count;
	tally_file_info file[4];
	uint64_t segment_rows[4];  /* per file: the rows of its segments, as segment_fn saw them */
	uint64_t segments[4];
	int segment_out_of_place;  /* a segment not of the file reported last */
} file_calls;

static void on_file(void *ctx, const tally_file_info *info)
{
	file_calls *c = ctx;
	cr_assert_lt(c->file_count, 4);
	c->file[c->file_count++] = *info;
}

static void on_file_segment(void *ctx, const tally_segment_info *info)
{
	file_calls *c = ctx;
	if (!c->file_count || c->file[c->file_count - 1].file_id != info->file_id) {
		c->segment_out_of_place++;
		return;
	}
	c->segment_rows[c->file_count - 1] += info->rows;
	c->segments[c->file_count - 1]++;
}

static file_calls inspect_files(void)
{
	file_calls c;
	memset(&c, 0, sizeof(c));
	tally_inspect_report report;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_inspect_files(dir, &report, on_file, on_file_segment, &c, err);
	cr_assert_eq(rc, 0, "inspect: %s (%s)", tally_strerror(rc), err);
	cr_expect_eq(report.segment_file_count, (uint64_t)c.file_count);
	return c;
}

/* Description: a compaction that cuts acme (130 rows in its inputs, spans
 * of about 40 rows cut only between row groups: here 90 and 40) writes a
 * run of two files; tally_inspect_files reports each file once, in id
 * order, before its segments: the first with no RUN_NEXT flag (acme's
 * first span: three days, 90 rows), the second flagged (acme's today, 40
 * rows, and globex's 5: 2 tenants, 2 segments, 45 rows), both version 5,
 * with their sizes on disk. A file set back to version 4 (no flags) is
 * reported as such. */
Test(inspect, files_report_their_version_run_flag_and_contents)
{
	section_rows_max = 40;
	tally_store *s = open_store();
	for (int32_t day = DAY_NOW - 3; day <= DAY_NOW; day++)
		ingest_day(s, "acme", day, 30, 0);
	ingest_day(s, "globex", DAY_NOW, 5, 0);
	cr_assert_eq(tally_flush(s), 0);
	ingest_day(s, "acme", DAY_NOW, 10, 1); /* hex ids: new events */
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_compact(s), 0);
	cr_assert_eq(tally_store_close(s), 0);

	file_calls c = inspect_files();
	cr_assert_eq(c.file_count, 2);
	cr_expect_eq(c.segment_out_of_place, 0);
	static const struct {
		bool run_next;
		uint32_t tenants;
		uint64_t segments, rows;
	} expect[2] = {{false, 1, 3, 90}, {true, 2, 2, 45}};
	for (int i = 0; i < 2; i++) {
		const tally_file_info *f = &c.file[i];
		cr_expect_eq(f->version, 5, "file %d", i);
		cr_expect_eq(f->run_next, expect[i].run_next, "file %d", i);
		cr_expect_eq(f->tenant_count, expect[i].tenants, "file %d", i);
		cr_expect_eq(f->segment_count, expect[i].segments, "file %d", i);
		cr_expect_eq(f->rows, expect[i].rows, "file %d", i);
		cr_expect_eq(c.segments[i], f->segment_count, "file %d", i);
		cr_expect_eq(c.segment_rows[i], f->rows, "file %d", i);
		char path[512];
		segment_path(path, sizeof(path), f->file_id);
		cr_expect_eq(f->bytes, file_size(path), "file %d", i);
	}
	cr_expect_eq(c.file[1].file_id, c.file[0].file_id + 1, "a run is consecutive ids");

	char path[512];
	segment_path(path, sizeof(path), c.file[1].file_id);
	segment_header_set_u32(path, SEGMENT_HEADER_FLAGS_OFFSET, 0);
	segment_header_set_u32(path, SEGMENT_HEADER_VERSION_OFFSET, 4);
	c = inspect_files();
	cr_assert_eq(c.file_count, 2);
	cr_expect_eq(c.file[1].version, 4);
	cr_expect(!c.file[1].run_next);
	cr_expect_eq(c.file[1].rows, 45);
	cr_expect_eq(c.file[0].version, 5);
}

Test(inspect, refuses_a_directory_that_is_not_a_store)
{
	tally_inspect_report report;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(tally_inspect(dir, &report, NULL, NULL, err), TALLY_E_NOTFOUND);
	cr_expect(strstr(err, "not a tally data directory"), "%s", err);
	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, TALLY_E_NOTFOUND);
	cr_expect_eq(p->count, 1); /* the reason, not a problem */
	cr_expect(strstr(p->message[0], "not a tally data directory"), "%s", p->message[0]);
	/* Nothing was created in it. */
	char path[400];
	snprintf(path, sizeof(path), "%s/LOCK", dir);
	cr_expect_neq(access(path, F_OK), 0);

	char missing[400];
	snprintf(missing, sizeof(missing), "%s/nope", dir);
	cr_expect_eq(tally_inspect(missing, &report, NULL, NULL, err), -ENOENT);
	cr_expect(strstr(err, "no such directory"), "%s", err);
	cr_expect_eq(tally_verify(missing, NULL, NULL), -ENOENT);
}

/* ---- verify ------------------------------------------------------------- */

Test(inspect, verify_finds_no_problem_in_a_clean_store)
{
	build_store();
	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, 0);
	cr_expect_eq(p->count, 0);
	/* Events still in the WAL (not flushed) are checked too, and clean. */
	tally_store *s = open_store();
	ingest_day(s, "acme", DAY_NOW, 3, 1);
	cr_assert_eq(tally_store_close(s), 0);
	p = verify(&rc);
	cr_expect_eq(rc, 0);
	cr_expect_eq(p->count, 0);
}

Test(inspect, verify_names_file_and_offset_of_every_damaged_block)
{
	build_store();
	uint64_t ids[2];
	manifest_file_ids(ids, NULL);

	/* File 1 (acme, globex): packed row groups. Damage acme's day D-1 block. */
	segment_file *f = open_segment(ids[0]);
	cr_assert_eq(f->tenant_count, 2);
	cr_assert_str_eq(f->tenants[0].name, "acme");
	const seg_segment *seg = &f->segments[f->tenants[0].first_segment + 1];
	cr_assert_eq(seg->day, DAY_NOW - 1);
	const seg_rowgroup *rg = &f->rowgroups[seg->first_rowgroup];
	cr_assert_eq(rg->packed, 1);
	seg_block packed = f->blocks[rg->first_block];
	segment_file_close(f);

	/* File 2 (initech): one block per column. Damage the event_id block. */
	f = open_segment(ids[1]);
	cr_assert_eq(f->rowgroup_count, 1);
	cr_assert_eq(f->rowgroups[0].packed, 0, "initech's row group should not be packed");
	seg_block id_block = f->blocks[f->rowgroups[0].first_block + TALLY_COL_EVENT_ID];
	segment_file_close(f);

	char path[512];
	segment_path(path, sizeof(path), ids[0]);
	flip_byte(path, packed.offset + packed.stored_size / 2);
	segment_path(path, sizeof(path), ids[1]);
	flip_byte(path, id_block.offset + id_block.stored_size / 2);

	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, 2, "one problem per damaged block, got %d", rc);
	cr_expect_eq(p->count, 2);
	char where[128];
	place(where, sizeof(where), ids[0], packed.offset);
	cr_expect_geq(find_message(p, where, NULL), 0, "no problem names '%s'", where);
	place(where, sizeof(where), ids[1], id_block.offset);
	cr_expect_geq(find_message(p, where, NULL), 0, "no problem names '%s'", where);

	/* Inspect needs the packed block to split it by column: it fails and
	 * names the place. */
	tally_inspect_report report;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(tally_inspect(dir, &report, NULL, NULL, err), TALLY_E_CORRUPT);
	place(where, sizeof(where), ids[0], packed.offset);
	cr_expect(strstr(err, where), "%s", err);
}

Test(inspect, verify_names_a_damaged_dictionary_block)
{
	build_store();
	uint64_t ids[2];
	manifest_file_ids(ids, NULL);
	segment_file *f = open_segment(ids[0]);
	seg_block dict = f->tenants[1].dict; /* globex */
	cr_assert_str_eq(f->tenants[1].name, "globex");
	segment_file_close(f);
	char path[512];
	segment_path(path, sizeof(path), ids[0]);
	flip_byte(path, dict.offset + dict.stored_size / 2);

	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, 1);
	char where[128];
	place(where, sizeof(where), ids[0], dict.offset);
	cr_expect_geq(find_message(p, where, NULL), 0, "no problem names '%s'", where);
}

Test(inspect, verify_reports_a_damaged_footer)
{
	build_store();
	uint64_t ids[2];
	manifest_file_ids(ids, NULL);
	char path[512];
	segment_path(path, sizeof(path), ids[1]);
	uint64_t size = file_size(path);
	/* The last byte before the 40-byte trailer is the footer's. */
	flip_byte(path, size - SEGMENT_TRAILER_SIZE - 1);
	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, 1);
	char name[64];
	segment_file_name(name, sizeof(name), ids[1]);
	cr_expect_geq(find_message(p, name, "footer"), 0);
}

Test(inspect, verify_names_a_damaged_manifest)
{
	build_store();
	char path[400];
	snprintf(path, sizeof(path), "%s/MANIFEST", dir);
	flip_byte(path, 20); /* inside the generation field */
	int rc;
	problems *p = verify(&rc);
	/* Only the manifest: the segment files are still checked, and are clean. */
	cr_expect_eq(rc, 1);
	cr_expect_geq(find_message(p, "MANIFEST", "offset"), 0);

	tally_inspect_report report;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(tally_inspect(dir, &report, NULL, NULL, err), TALLY_E_CORRUPT);
	cr_expect(strstr(err, "MANIFEST"), "%s", err);
}

Test(inspect, verify_reports_every_unreferenced_file)
{
	build_store();
	char path[512];
	snprintf(path, sizeof(path), "%s/junk.txt", segment_dir);
	write_file(path, "not a segment");
	snprintf(path, sizeof(path), "%s/00000000000000ff.seg", segment_dir);
	write_file(path, "a segment name, but not in the manifest");
	snprintf(path, sizeof(path), "%s/0000000000000077.seg.tmp", segment_dir);
	write_file(path, "debris of an interrupted flush");
	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, 3);
	cr_expect_geq(find_message(p, "unreferenced", "/junk.txt offset 0"), 0);
	cr_expect_geq(find_message(p, "unreferenced", "/00000000000000ff.seg offset 0"), 0);
	cr_expect_geq(find_message(p, "unreferenced", "/0000000000000077.seg.tmp offset 0"), 0);
	/* Debris does not stop inspect: it reads only what the manifest names. */
	tally_inspect_report report;
	cr_expect_eq(tally_inspect(dir, &report, NULL, NULL, NULL), 0);
	cr_expect_eq(report.segment_file_count, 2);
}

Test(inspect, verify_reports_a_missing_segment_file)
{
	build_store();
	uint64_t ids[2];
	manifest_file_ids(ids, NULL);
	char path[512];
	segment_path(path, sizeof(path), ids[0]);
	cr_assert_eq(unlink(path), 0);
	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, 1);
	char name[64];
	segment_file_name(name, sizeof(name), ids[0]);
	cr_expect_geq(find_message(p, name, "missing"), 0);
}

/* A store whose events are only in the WAL: eight batches, no flush. */
static wal_files build_wal_only_store(void)
{
	tally_store *s = open_store();
	for (int b = 0; b < 8; b++) {
		char tenant[16];
		snprintf(tenant, sizeof(tenant), "t%d", b % 3);
		ingest_day(s, tenant, DAY_NOW - b % 4, 10 + b, 0);
	}
	cr_assert_eq(tally_store_close(s), 0);
	wal_files w = list_wal();
	cr_assert_eq(w.count, 1, "expected one WAL file, found %d", w.count);
	return w;
}

Test(inspect, verify_names_the_wal_file_of_a_damaged_middle_record)
{
	wal_files w = build_wal_only_store();
	int rc;
	problems *p = verify(&rc);
	cr_assert_eq(rc, 0, "clean before the damage");
	char path[400];
	snprintf(path, sizeof(path), "%s/%s", wal_dir, w.names[0]);
	flip_byte(path, w.bytes / 2);
	p = verify(&rc);
	cr_expect_geq(rc, 1);
	cr_expect_eq(p->count, rc);
	cr_expect_geq(find_message(p, w.names[0], "offset"), 0, "no problem names %s", w.names[0]);
}

Test(inspect, verify_forgives_a_torn_wal_tail)
{
	wal_files w = build_wal_only_store();
	char path[400];
	snprintf(path, sizeof(path), "%s/%s", wal_dir, w.names[0]);
	cr_assert_eq(truncate(path, (off_t)(w.bytes - 5)), 0);
	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, 0, "a torn tail is what recovery truncates; not a problem");
	cr_expect_eq(p->count, 0);
}

Test(inspect, refuses_a_directory_held_by_a_live_store)
{
	build_store();
	tally_store *s = open_store();
	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, TALLY_E_LOCKED);
	cr_expect_eq(p->count, 1); /* the reason, not a problem */
	cr_expect(strstr(p->message[0], "LOCK"), "%s", p->message[0]);
	tally_inspect_report report;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(tally_inspect(dir, &report, NULL, NULL, err), TALLY_E_LOCKED);
	cr_expect(strstr(err, "LOCK"), "%s", err);
	cr_assert_eq(tally_store_close(s), 0);

	/* Released by the store: both run; and they released it in turn. */
	p = verify(&rc);
	cr_expect_eq(rc, 0);
	cr_expect_eq(tally_inspect(dir, &report, NULL, NULL, err), 0, "%s", err);
	cr_assert_eq(tally_store_close(open_store()), 0);
}

/* Rows whose dictionary codes or status are out of range, or that come
 * without rollup pages, never reach the disk: the writer checks before
 * writing (verify and the reader check again after reading, as defence in
 * depth against a writer bug). */
Test(inspect, writer_refuses_rows_outside_dictionary_or_status)
{
	build_store();
	const tally_io *io = tally_io_default();
	manifest m;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(manifest_read(io, dir, &m, err), 0, "%s", err);
	uint32_t acme = m.tenant_count;
	for (uint32_t t = 0; t < m.tenant_count; t++)
		if (strcmp(m.tenants[t].name, "acme") == 0)
			acme = t;
	cr_assert_lt(acme, m.tenant_count);
	uint64_t file_id = m.next_file_id;

	/* Four rows; one string per dimension; row 2 has model code 3 and
	 * status 7. */
	enum { N = 4 };
	rows r;
	memset(&r, 0, sizeof(r));
	cr_assert_eq(rows_reserve(&r, N), 0);
	for (uint32_t i = 0; i < N; i++) {
		r.time_us[i] = row_time(DAY_NOW - 3, (int)i);
		r.status[i] = i == 2 ? 7 : 0;
		r.duration_ms[i] = 10;
		r.tokens_in[i] = 1;
		r.tokens_out[i] = 2;
		r.cost_micros[i] = 3;
		for (int d = 0; d < DIM_COUNT; d++)
			r.dim[d][i] = (d == DIM_MODEL && i == 2) ? 3 : 0;
		char id[16];
		int size = snprintf(id, sizeof(id), "bad-%u", i);
		r.id_kind[i] = ID_KIND_RAW;
		cr_assert_eq(bytebuf_append(&r.id_bytes, id, (size_t)size), 0);
		r.id_offset[i + 1] = (uint32_t)r.id_bytes.size;
	}
	r.count = N;
	strdict dict[DIM_COUNT];
	memset(dict, 0, sizeof(dict));
	for (int d = 0; d < DIM_COUNT; d++) {
		uint32_t code;
		cr_assert_eq(strdict_intern(&dict[d], "x", 1, &code), 0);
	}
	segment_writer *w;
	cr_assert_eq(segment_writer_open(io, segment_dir, file_id, 0, 3, &w, err), 0, "%s", err);
	cr_expect_eq(segment_writer_add_tenant(w, acme, "acme", &r, dict, NULL), TALLY_E_INVALID);
	r.status[2] = 0; /* still a code past the dictionary */
	cr_expect_eq(segment_writer_add_tenant(w, acme, "acme", &r, dict, NULL), TALLY_E_INVALID);
	r.dim[DIM_MODEL][2] = 0; /* valid rows, but no rollup pages */
	cr_expect_eq(segment_writer_add_tenant(w, acme, "acme", &r, dict, NULL), TALLY_E_INVALID);
	static const seg_rollup_in no_groups;
	cr_expect_eq(segment_writer_add_tenant(w, acme, "acme", &r, dict, &no_groups), TALLY_E_INVALID);
	segment_writer_abort(w);
	rows_free(&r);
	for (int d = 0; d < DIM_COUNT; d++)
		strdict_free(&dict[d]);
	manifest_free(&m);
	int rc;
	verify(&rc);
	cr_expect_eq(rc, 0);
}

Test(inspect, verify_names_each_bad_block_of_one_row_group_once)
{
	build_store();
	uint64_t ids[2];
	manifest_file_ids(ids, NULL);
	seg_block id_block = unpacked_block(ids[1], TALLY_COL_EVENT_ID);
	seg_block user_block = unpacked_block(ids[1], TALLY_COL_USER);
	char path[512];
	segment_path(path, sizeof(path), ids[1]);
	flip_byte(path, id_block.offset);
	flip_byte(path, user_block.offset + user_block.stored_size - 1);

	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, 2);
	char where[128];
	place(where, sizeof(where), ids[1], id_block.offset);
	cr_expect_geq(find_message(p, where, "column event_id"), 0, "no problem names '%s'", where);
	place(where, sizeof(where), ids[1], user_block.offset);
	cr_expect_geq(find_message(p, where, "column user"), 0, "no problem names '%s'", where);
}

Test(inspect, verify_stops_a_file_after_one_hundred_problems)
{
	/* 120 tenants in one file, every dictionary block damaged: 100 problems
	 * are listed, then one line says the rest of the file was skipped. */
	tally_store *s = open_store();
	for (int t = 0; t < 120; t++) {
		char tenant[16];
		snprintf(tenant, sizeof(tenant), "tenant%03d", t);
		ingest_day(s, tenant, DAY_NOW, 1, 0);
	}
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_store_close(s), 0);
	manifest m;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(manifest_read(tally_io_default(), dir, &m, err), 0, "%s", err);
	cr_assert_eq(m.file_count, 1);
	uint64_t file_id = m.file_ids[0];
	manifest_free(&m);
	segment_file *f = open_segment(file_id);
	cr_assert_eq(f->tenant_count, 120);
	char path[512];
	segment_path(path, sizeof(path), file_id);
	for (uint32_t t = 0; t < f->tenant_count; t++)
		flip_byte(path, f->tenants[t].dict.offset);
	segment_file_close(f);

	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, 101);
	cr_expect_eq(p->count, 101);
	cr_expect(strstr(p->message[100], "more than 100 problems"), "%s", p->message[100]);
	cr_expect_eq(find_message(p, "more than 100 problems", NULL), 100);
}

Test(inspect, verify_is_clean_and_inspect_exact_through_restarts_flushes_and_compaction)
{
	/* No false alarms: a healthy store stays clean whatever its history
	 * (WAL replay, rotation and retirement, several files, compaction). */
	uint64_t ingested = 0;
	for (int round = 0; round < 6; round++) {
		tally_store *s = open_store();
		for (int b = 0; b < 3; b++) {
			char tenant[16];
			snprintf(tenant, sizeof(tenant), "r%d-t%d", round % 2, b);
			/* ids are unique per (tenant, day): a distinct day per round */
			ingest_day(s, tenant, DAY_NOW - round * 3 - b, 4 + b, 0);
			ingested += 4 + (uint64_t)b;
		}
		if (round % 2 == 1)
			cr_assert_eq(tally_flush(s), 0);
		if (round == 3 || round == 5)
			cr_assert_eq(tally_compact(s), 0);
		cr_assert_eq(tally_store_close(s), 0);
		int rc;
		problems *p = verify(&rc);
		cr_expect_eq(rc, 0, "round %d", round);
		cr_expect_eq(p->count, 0, "round %d", round);
		tally_inspect_report report;
		char err[TALLY_ERRMSG_SIZE] = "";
		cr_assert_eq(tally_inspect(dir, &report, NULL, NULL, err), 0, "%s", err);
		if (round % 2 == 1)
			cr_expect_eq(report.rows, ingested, "round %d: rows %" PRIu64, round,
				     report.rows);
		if (round == 5)
			cr_expect_eq(report.segment_file_count, 1, "compaction leaves one file");
	}
}

Test(inspect, verify_reports_a_lost_manifest_and_still_checks_the_files)
{
	build_store();
	char path[400];
	snprintf(path, sizeof(path), "%s/MANIFEST", dir);
	cr_assert_eq(unlink(path), 0);
	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, 1, "the lost manifest only; the segment files are clean");
	cr_expect_geq(find_message(p, "MANIFEST offset 0", "missing"), 0);
	tally_inspect_report report;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(tally_inspect(dir, &report, NULL, NULL, err), TALLY_E_NOTFOUND);
}

/* Description: with MANIFEST lost, segments/ that is not a directory (a
 * plain file of that name) cannot be listed: verify does not take the
 * store for "not a tally data directory" but reports the lost MANIFEST
 * naming the listing's error, then segments/ itself, and still checks
 * the WAL (clean). Without segments/ at all, the WAL's file shows it is a
 * store: the lost MANIFEST, and "directory missing". */
Test(inspect, verify_reports_a_lost_manifest_beside_an_unlistable_segments_directory)
{
	build_store();
	tally_store *s = open_store();
	ingest_day(s, "hooli", DAY_NOW, 3, 0); /* left in the WAL */
	cr_assert_eq(tally_store_close(s), 0);
	char path[400], command[900];
	snprintf(path, sizeof(path), "%s/MANIFEST", dir);
	cr_assert_eq(unlink(path), 0);
	snprintf(command, sizeof(command), "rm -r '%s'", segment_dir);
	cr_assert_eq(system(command), 0);
	write_file(segment_dir, "not a directory");
	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, 2, "the lost manifest and the unlistable directory");
	char want[700];
	snprintf(want, sizeof(want), "MANIFEST offset 0: missing, and %s cannot be listed: %s",
		 segment_dir, strerror(ENOTDIR));
	cr_expect_geq(find_message(p, want, NULL), 0, "no problem says: %s", want);
	snprintf(want, sizeof(want), "%s: cannot be listed: %s", segment_dir, strerror(ENOTDIR));
	cr_expect_geq(find_message(p, want, NULL), 0, "no problem says: %s", want);

	cr_assert_eq(unlink(segment_dir), 0);
	p = verify(&rc);
	cr_expect_eq(rc, 2, "the lost manifest and the missing directory");
	cr_expect_geq(find_message(p, "MANIFEST offset 0", "wal/ hold files"), 0);
	snprintf(want, sizeof(want), "%s: directory missing", segment_dir);
	cr_expect_geq(find_message(p, want, NULL), 0, "no problem says: %s", want);
}

Test(inspect, verify_names_a_damaged_type_column_once_not_the_scalars_encoded_against_it)
{
	build_store();
	uint64_t ids[2];
	manifest_file_ids(ids, NULL);
	seg_block type_block = unpacked_block(ids[1], TALLY_COL_TYPE);
	char path[512];
	segment_path(path, sizeof(path), ids[1]);
	flip_byte(path, type_block.offset);

	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, 1, "one problem, not one per column decoded against type");
	char where[128];
	place(where, sizeof(where), ids[1], type_block.offset);
	cr_expect_geq(find_message(p, where, "column type"), 0, "no problem names '%s'", where);
	cr_expect_lt(find_message(p, "column cost_micros", ""), 0);
	cr_expect_lt(find_message(p, "column duration_ms", ""), 0);
}

/* Rewrites the u32 at `offset` of a segment file's header (and the header
 * checksum). */
static void set_segment_version(const char *path, uint32_t version)
{
	segment_header_set_u32(path, SEGMENT_HEADER_VERSION_OFFSET, version);
}

/* Description: a segment file of this build (version 5) opens, as do
 * versions 2 to 4 (their layouts are version 5's without header flags,
 * version 3's without wraps, and without minute bounds for version 2);
 * versions 1, 6 and the maximum are refused as versions, naming the file. */
Test(inspect, segment_files_of_versions_2_to_5_open_and_others_are_refused)
{
	build_store();
	uint64_t ids[2];
	manifest_file_ids(ids, NULL);
	char path[512];
	segment_path(path, sizeof(path), ids[1]);
	segment_file *f = open_segment(ids[1]);
	cr_assert_eq(f->version, SEGMENT_VERSION);
	segment_file_close(f);
	const uint32_t refused[] = { 1, SEGMENT_VERSION + 1, UINT32_MAX };
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		set_segment_version(path, refused[i]);
		f = NULL;
		char err[TALLY_ERRMSG_SIZE] = "";
		cr_assert_eq(segment_file_open(tally_io_default(), segment_dir, ids[1], &f, err),
			     TALLY_E_VERSION, "version %u", refused[i]);
		cr_assert_null(f);
		cr_assert_not_null(strstr(err, "format version"), "%s", err);
		cr_assert_not_null(strstr(err, path), "%s", err);
	}
	for (uint32_t version = 2; version <= 4; version++) {
		set_segment_version(path, version);
		f = open_segment(ids[1]);
		cr_assert_eq(f->version, version);
		segment_file_close(f);
	}
}

/* The bytes of a file, to put back after damaging it (free them). */
static uint8_t *file_bytes(const char *path, uint64_t *size)
{
	*size = file_size(path);
	uint8_t *data = malloc(*size);
	cr_assert_not_null(data);
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "open %s", path);
	cr_assert_eq(fread(data, 1, *size, f), *size);
	fclose(f);
	return data;
}

static void file_put(const char *path, const uint8_t *data, uint64_t size)
{
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f, "create %s", path);
	cr_assert_eq(fwrite(data, 1, size, f), size);
	cr_assert_eq(fclose(f), 0);
}

/* The store refuses to open with TALLY_E_CORRUPT and a message holding
 * `says`, and tally_verify reports a problem holding it too. */
static void expect_segment_refused(const char *says, const char *what)
{
	tally_store *s;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = store_try_open(&s, err);
	cr_assert_eq(rc, TALLY_E_CORRUPT, "%s: open: %s (%s)", what, tally_strerror(rc), err);
	cr_assert_null(s);
	cr_assert_not_null(strstr(err, says), "%s: open said \"%s\", not \"%s\"", what, err, says);
	problems *p = verify(&rc);
	cr_assert_geq(rc, 1, "%s: verify found nothing", what);
	cr_assert_geq(find_message(p, says, NULL), 0, "%s: no problem says \"%s\"", what, says);
}

/* Description: a segment file damaged where no block checksum looks: its
 * header (magic or checksum), a file copied under another file's name
 * (misdirected: the header names the other id), its trailer, bytes
 * written as zeros that are not (the header's flags, the trailer's
 * reserved bytes), and a file cut below a header and a trailer. The
 * store refuses to open, and verify reports each, naming the file, the
 * offset and what is wrong. */
Test(inspect, verify_and_open_name_a_segment_file_damaged_at_its_edges)
{
	build_store();
	uint64_t ids[2];
	manifest_file_ids(ids, NULL);
	char path[512], other[512], name[64], says[200];
	segment_path(path, sizeof(path), ids[1]);
	segment_path(other, sizeof(other), ids[0]);
	segment_file_name(name, sizeof(name), ids[1]);
	uint64_t size;
	uint8_t *good = file_bytes(path, &size);

	flip_byte(path, 3);
	snprintf(says, sizeof(says), "%s offset 0: bad header (magic or checksum)", name);
	expect_segment_refused(says, "a damaged header");
	file_put(path, good, size);

	uint64_t other_size;
	uint8_t *misdirected = file_bytes(other, &other_size);
	file_put(path, misdirected, other_size);
	snprintf(says, sizeof(says), "%s offset 16: header names file id %" PRIu64 ", expected %" PRIu64,
		 name, ids[0], ids[1]);
	expect_segment_refused(says, "a misdirected file");
	free(misdirected);
	file_put(path, good, size);

	flip_byte(path, size - 4); /* the trailer's magic */
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": bad trailer", name,
		 size - SEGMENT_TRAILER_SIZE);
	expect_segment_refused(says, "a damaged trailer");
	file_put(path, good, size);

	/* Header flags the file's version does not know (under the header
	 * checksum, made again here): any but SEGMENT_FLAG_RUN_NEXT in version
	 * 5, any at all before; and the trailer's 7 zero bytes (under none). */
	segment_header_set_u32(path, SEGMENT_HEADER_FLAGS_OFFSET, 4);
	snprintf(says, sizeof(says), "%s offset 12: header flags are 4, version 5 knows only 1",
		 name);
	expect_segment_refused(says, "header flags");
	segment_header_set_u32(path, SEGMENT_HEADER_FLAGS_OFFSET, SEGMENT_FLAG_RUN_NEXT);
	segment_header_set_u32(path, SEGMENT_HEADER_VERSION_OFFSET, 4);
	snprintf(says, sizeof(says), "%s offset 12: header flags are 1, version 4 knows only 0",
		 name);
	expect_segment_refused(says, "a run flag in a version 4 file");
	file_put(path, good, size);

	flip_byte(path, size - SEGMENT_TRAILER_SIZE + 20);
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": trailer byte is 90, expected 0", name,
		 size - SEGMENT_TRAILER_SIZE + 20);
	expect_segment_refused(says, "a trailer byte that should be zero");
	file_put(path, good, size);

	file_put(path, good, 20);
	snprintf(says, sizeof(says), "%s offset 0: file too short (20 bytes)", name);
	expect_segment_refused(says, "a cut file");
	file_put(path, good, size);
	free(good);

	int rc;
	verify(&rc);
	cr_assert_eq(rc, 0, "the file put back is clean");
}

/* ---- footers with a good checksum and a bad structure ------------------- */

/* A segment file with its footer decoded (raw form). */
typedef struct footer_image {
	uint8_t *file;
	uint64_t size, footer_offset;
	uint8_t *raw;
	size_t raw_size;
} footer_image;

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void footer_load(const char *path, footer_image *img)
{
	img->file = file_bytes(path, &img->size);
	const uint8_t *trailer = img->file + img->size - SEGMENT_TRAILER_SIZE;
	img->footer_offset = le64(trailer);
	uint32_t stored = (uint32_t)(trailer[8] | trailer[9] << 8 | trailer[10] << 16 |
				     (uint32_t)trailer[11] << 24);
	img->raw_size = (size_t)(trailer[12] | trailer[13] << 8 | trailer[14] << 16 |
				 (uint32_t)trailer[15] << 24);
	img->raw = malloc(img->raw_size + 1);
	cr_assert_not_null(img->raw);
	if (trailer[16] == 0) {
		cr_assert_eq(stored, img->raw_size);
		memcpy(img->raw, img->file + img->footer_offset, stored);
	} else {
		size_t got = ZSTD_decompress(img->raw, img->raw_size, img->file + img->footer_offset,
					     stored);
		cr_assert(!ZSTD_isError(got) && got == img->raw_size, "footer of %s", path);
	}
}

/* Writes the file again with `stored` (stored_size bytes) as its footer,
 * with a trailer and checksum made for it that give the footer's codec
 * and raw size as asked: only the footer's contents can be wrong. */
static void footer_store_as(const char *path, uint64_t file_id, const footer_image *img,
			    const uint8_t *stored, size_t stored_size, uint8_t codec, size_t raw_size)
{
	uint64_t size = img->footer_offset + stored_size + SEGMENT_TRAILER_SIZE;
	uint8_t *out = calloc(1, size);
	cr_assert_not_null(out);
	memcpy(out, img->file, img->footer_offset);
	memcpy(out + img->footer_offset, stored, stored_size);
	uint8_t *trailer = out + img->footer_offset + stored_size;
	put_le64(trailer, img->footer_offset);
	for (int i = 0; i < 4; i++) {
		trailer[8 + i] = (uint8_t)(stored_size >> (8 * i));
		trailer[12 + i] = (uint8_t)(raw_size >> (8 * i));
	}
	trailer[16] = codec;
	put_le64(trailer + 24, XXH3_64bits_withSeed(stored, stored_size, file_id));
	memcpy(trailer + 32, "TLYSEGE1", 8);
	file_put(path, out, size);
	free(out);
}

/* Writes the file again with `raw` (raw_size bytes) as its footer, stored
 * RAW, with a trailer and checksum made for it: only the structure can be
 * wrong. */
static void footer_store(const char *path, uint64_t file_id, const footer_image *img,
			 const uint8_t *raw, size_t raw_size)
{
	footer_store_as(path, file_id, img, raw, raw_size, 0, raw_size);
}

/* Skips a varint at raw[*at]. */
static void skip_varint(const uint8_t *raw, size_t *at)
{
	while (raw[(*at)++] & 0x80)
		;
}

static uint64_t varint_at(const uint8_t *raw, size_t at)
{
	uint64_t v = 0;
	for (int shift = 0;; shift += 7) {
		v |= (uint64_t)(raw[at] & 0x7f) << shift;
		if (!(raw[at++] & 0x80))
			return v;
	}
}

/* raw with the varint at `at` replaced by `value`, into out (raw_size + 10
 * bytes); returns the new size. */
static size_t splice_varint(const uint8_t *raw, size_t raw_size, size_t at, uint64_t value,
			    uint8_t *out)
{
	size_t end = at;
	skip_varint(raw, &end);
	memcpy(out, raw, at);
	size_t n = at;
	do {
		uint8_t byte = value & 0x7f;
		value >>= 7;
		out[n++] = (uint8_t)(byte | (value ? 0x80 : 0));
	} while (value);
	memcpy(out + n, raw + end, raw_size - end);
	return n + raw_size - end;
}

/* A varint of a raw footer to replace, and what open and verify then say
 * after "<file> offset <footer offset>: ". */
typedef struct footer_case {
	size_t at;
	uint64_t value;
	const char *says;
} footer_case;

/* Each case's footer, written with a good checksum, is refused by open and
 * reported by verify at the footer's offset. */
static void expect_footer_cases_refused(const char *path, uint64_t file_id, const char *name,
					const footer_image *img, const footer_case *cases, size_t count)
{
	uint8_t *raw = malloc(img->raw_size + 16);
	cr_assert_not_null(raw);
	char says[300];
	for (size_t i = 0; i < count; i++) {
		size_t n = splice_varint(img->raw, img->raw_size, cases[i].at, cases[i].value, raw);
		footer_store(path, file_id, img, raw, n);
		snprintf(says, sizeof(says), "%s offset %" PRIu64 ": %s", name, img->footer_offset,
			 cases[i].says);
		expect_segment_refused(says, cases[i].says);
	}
	free(raw);
}

/* Puts the file's own footer back, expects verify to find the store
 * clean, and frees img. */
static void footer_restore(const char *path, uint64_t file_id, footer_image *img)
{
	footer_store(path, file_id, img, img->raw, img->raw_size);
	int rc;
	verify(&rc);
	cr_assert_eq(rc, 0, "the footer put back is clean");
	free(img->raw);
	free(img->file);
}

/* build_store, then the footer of its first segment file (ids[0]) with
 * the file's path and name. */
static void first_file_footer(footer_image *img, uint64_t ids[2], char path[512], char name[64])
{
	build_store();
	manifest_file_ids(ids, NULL);
	segment_path(path, 512, ids[0]);
	segment_file_name(name, 64, ids[0]);
	footer_load(path, img);
}

/* Description: a footer rewritten with a good checksum but a bad
 * structure: a tenant entry with an empty name, a block entry pointing
 * past the footer, a tenant with no segments, the footer cut inside a
 * block entry, and tenants out of order. Open refuses the file and verify
 * reports it, at the footer's offset, saying which. The untouched footer,
 * written the same way, opens: only the edit is wrong. */
Test(inspect, a_footer_with_a_good_checksum_and_a_bad_structure_is_refused)
{
	uint64_t ids[2];
	char path[512], name[64], says[200];
	footer_image img;
	first_file_footer(&img, ids, path, name);
	uint8_t *raw = malloc(img.raw_size + 16);
	cr_assert_not_null(raw);
	/* The first tenant entry: id, name size, name, then the dictionary's
	 * block entry (gap, stored size, raw size, codec, checksum), then the
	 * segment count. */
	cr_assert_eq(img.raw[0], 0, "tenant id 0 first");
	size_t name_at = 1, block_at = 2 + img.raw[1], segments_at = block_at;
	cr_assert_lt(img.raw[1], 0x80);
	skip_varint(img.raw, &segments_at);
	size_t stored_at = segments_at;
	skip_varint(img.raw, &segments_at);
	skip_varint(img.raw, &segments_at);
	segments_at += 9;
	cr_assert_lt(img.raw[segments_at], 0x80, "a segment count of one byte");

	footer_store(path, ids[0], &img, img.raw, img.raw_size);
	int rc;
	verify(&rc);
	cr_assert_eq(rc, 0, "the footer rewritten unchanged is clean");

	memcpy(raw, img.raw, img.raw_size);
	raw[name_at] = 0;
	footer_store(path, ids[0], &img, raw, img.raw_size);
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": footer: bad tenant entry 0", name,
		 img.footer_offset);
	expect_segment_refused(says, "an empty tenant name");

	/* A stored size past the footer. */
	size_t n = splice_varint(img.raw, img.raw_size, stored_at, UINT32_MAX, raw);
	footer_store(path, ids[0], &img, raw, n);
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": footer names an impossible block", name,
		 img.footer_offset);
	expect_segment_refused(says, "a block past the footer");

	memcpy(raw, img.raw, img.raw_size);
	raw[segments_at] = 0;
	footer_store(path, ids[0], &img, raw, img.raw_size);
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": footer: bad segment count for tenant acme",
		 name, img.footer_offset);
	expect_segment_refused(says, "a tenant without segments");

	footer_store(path, ids[0], &img, img.raw, segments_at - 4);
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": footer truncated in a block entry", name,
		 img.footer_offset);
	expect_segment_refused(says, "a footer cut in a block entry");

	/* The first tenant (acme, id 0) named id 5: the next one (globex,
	 * id 1) comes out of order. */
	memcpy(raw, img.raw, img.raw_size);
	raw[0] = 5;
	footer_store(path, ids[0], &img, raw, img.raw_size);
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": footer: tenants out of order", name,
		 img.footer_offset);
	expect_segment_refused(says, "tenants out of order");

	free(raw);
	footer_restore(path, ids[0], &img);
}

/* Where the fields of the first tenant entry of a raw footer are. */
typedef struct footer_walk {
	size_t segment_count;
	size_t day_at[8], time_min_at[8]; /* per segment */
	size_t rowgroup_count_at;
	size_t rowgroup_rows_at; /* the first row group's */
	size_t rollup_at;        /* the rollup entry, after the row groups */
} footer_walk;

/* Skips a block entry: gap, stored size, raw size, codec, checksum. */
static void skip_block_entry(const uint8_t *raw, size_t *at)
{
	for (int i = 0; i < 3; i++)
		skip_varint(raw, at);
	*at += 9;
}

static footer_walk footer_walk_first(const uint8_t *raw)
{
	footer_walk w = {0};
	size_t at = 0;
	skip_varint(raw, &at);     /* tenant id */
	at += 1 + raw[at];         /* name */
	skip_block_entry(raw, &at); /* the dictionary */
	w.segment_count = (size_t)varint_at(raw, at);
	cr_assert_leq(w.segment_count, 8);
	skip_varint(raw, &at);
	for (size_t s = 0; s < w.segment_count; s++) {
		w.day_at[s] = at;
		skip_varint(raw, &at);
		skip_varint(raw, &at); /* rows */
		w.time_min_at[s] = at;
		skip_varint(raw, &at);
		skip_varint(raw, &at); /* span */
	}
	w.rowgroup_count_at = at;
	uint64_t rowgroups = varint_at(raw, at);
	skip_varint(raw, &at);
	w.rowgroup_rows_at = at;
	for (uint64_t g = 0; g < rowgroups; g++) {
		skip_varint(raw, &at); /* rows */
		int blocks = raw[at++] ? 1 : TALLY_COL_COUNT;
		for (int b = 0; b < blocks; b++)
			skip_block_entry(raw, &at);
	}
	w.rollup_at = at;
	return w;
}

/* Description: deeper in a footer with a good checksum: a segment's day
 * step of 0 (days out of order), a segment whose first minute is past the
 * day's last, a first day whose times overflow an int64, a tenant with no row group, and row groups that hold fewer
 * rows than the segments. Open refuses each and verify reports it at the
 * footer's offset, naming the tenant. */
Test(inspect, a_footer_whose_segments_and_row_groups_disagree_is_refused)
{
	uint64_t ids[2];
	char path[512], name[64];
	footer_image img;
	first_file_footer(&img, ids, path, name);
	footer_walk w = footer_walk_first(img.raw);
	cr_assert_eq(w.segment_count, 3, "acme has three days in the first file");
	cr_assert_eq(varint_at(img.raw, w.day_at[1]), 1, "a step of one day");
	cr_assert_eq(varint_at(img.raw, w.rowgroup_count_at), 1, "small days share a row group");
	cr_assert_eq(varint_at(img.raw, w.rowgroup_rows_at), 60);
	const footer_case cases[] = {
		{w.day_at[1], 0, "footer: days out of order in tenant acme"},
		{w.time_min_at[0], 1440, "footer: impossible segment 0 of tenant acme"},
		/* Day 233,435,816 (zigzag): its microseconds overflow an int64
		 * (fuzz/fuzz_segment.c). */
		{w.day_at[0], UINT64_C(2) * 233435816, "footer: impossible segment 0 of tenant acme"},
		{w.rowgroup_count_at, 0, "footer: bad row group count for tenant acme"},
		{w.rowgroup_rows_at, 59, "footer: row groups of tenant acme hold 59 rows, its segments 60"},
	};
	expect_footer_cases_refused(path, ids[0], name, &img, cases, sizeof(cases) / sizeof(cases[0]));
	footer_restore(path, ids[0], &img);
}

/* Where the fields of the first tenant's rollup entry are: the minute
 * retention bound, the group count (its table's block entry follows),
 * then per chunk list the chunk count and the first chunk's bucket field
 * and cell count (0 when the list has no chunk). */
typedef struct rollup_walk {
	size_t minute_from_at, group_count_at, groups_end;
	size_t count_at[SEG_ROLLUP_LISTS];
	size_t field_at[SEG_ROLLUP_LISTS], cells_at[SEG_ROLLUP_LISTS];
	size_t second_field_at[SEG_ROLLUP_LISTS]; /* the second chunk's, 0 when none */
} rollup_walk;

static rollup_walk rollup_walk_first(const uint8_t *raw)
{
	rollup_walk w = {0};
	size_t at = footer_walk_first(raw).rollup_at;
	w.minute_from_at = at;
	skip_varint(raw, &at);
	w.group_count_at = at;
	uint64_t groups = varint_at(raw, at);
	skip_varint(raw, &at);
	if (groups)
		skip_block_entry(raw, &at);
	w.groups_end = at;
	for (int list = 0; list < SEG_ROLLUP_LISTS; list++) {
		w.count_at[list] = at;
		uint64_t chunks = varint_at(raw, at);
		skip_varint(raw, &at);
		for (uint64_t k = 0; k < chunks; k++) {
			if (k == 0) {
				w.field_at[list] = at;
				w.cells_at[list] = at;
				skip_varint(raw, &w.cells_at[list]);
			}
			if (k == 1)
				w.second_field_at[list] = at;
			skip_varint(raw, &at);
			skip_varint(raw, &at);
			skip_block_entry(raw, &at);
		}
	}
	return w;
}

/* Description: the rollup entry of a footer with a good checksum: a
 * minute retention bound no clock reaches, chunks without a group table,
 * more chunks than the footer has bytes, a chunk of no cells, and a chunk
 * whose first bucket is past any time. Open refuses each and verify
 * reports it at the footer's offset, naming the tenant. A chunk the
 * footer counts one cell more than it holds is not a structural error:
 * open takes the file, verify names the chunk's offset and both counts,
 * and a query that reads the chunk fails TALLY_E_CORRUPT, naming it,
 * instead of trusting either count. */
Test(inspect, a_footer_whose_rollup_entry_is_impossible_is_refused)
{
	uint64_t ids[2];
	char path[512], name[64], says[300];
	footer_image img;
	first_file_footer(&img, ids, path, name);
	rollup_walk w = rollup_walk_first(img.raw);
	int hour = 1; /* LIST_HOUR: every event has an hour cell */
	cr_assert_gt(varint_at(img.raw, w.group_count_at), 0);
	cr_assert_gt(varint_at(img.raw, w.count_at[hour]), 0, "acme has hour chunks");
	uint64_t cells = varint_at(img.raw, w.cells_at[hour]);
	const footer_case cases[] = {
		{w.minute_from_at, UINT64_MAX - 1, "footer: bad rollup entry of tenant acme"},
		{w.count_at[hour], UINT64_C(1) << 40, "footer: bad rollup chunk count of tenant acme"},
		{w.cells_at[hour], 0, "footer: bad rollup chunk of tenant acme"},
		/* zigzag: bucket 2^41, past the 2^40 a decoder accepts */
		{w.field_at[hour], UINT64_C(1) << 42, "footer: bad rollup chunk of tenant acme"},
	};
	expect_footer_cases_refused(path, ids[0], name, &img, cases, sizeof(cases) / sizeof(cases[0]));

	/* No group table (count 0, its block entry cut out), chunks still. */
	uint8_t *raw = malloc(img.raw_size + 16);
	cr_assert_not_null(raw);
	size_t n = splice_varint(img.raw, img.raw_size, w.group_count_at, 0, raw);
	size_t cut = w.groups_end - w.group_count_at - 1; /* the block entry; the count stays one byte */
	cr_assert_lt(img.raw[w.group_count_at], 0x80);
	memmove(raw + w.group_count_at + 1, raw + w.groups_end, n - w.groups_end);
	footer_store(path, ids[0], &img, raw, n - cut);
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": footer: tenant acme has 60 rows and no "
		 "rollup pages", name, img.footer_offset);
	expect_segment_refused(says, "chunks without a group table");

	/* One cell more than the chunk holds. */
	n = splice_varint(img.raw, img.raw_size, w.cells_at[hour], cells + 1, raw);
	footer_store(path, ids[0], &img, raw, n);
	tally_store *s = open_store();
	segment_file *f = open_segment(ids[0]);
	const seg_chunk *c = &f->chunks[f->tenants[0].first_chunk[hour]];
	uint64_t chunk_offset = c->block.offset;
	int64_t first_bucket = c->first_bucket;
	segment_file_close(f);
	tally_query q = {.from_us = NOW_US - 3 * TALLY_US_PER_DAY, .to_us = NOW_US,
			 .bucket = TALLY_BUCKET_HOUR};
	tally_result *result = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(tally_query_run(s, "acme", &q, &result, err), TALLY_E_CORRUPT);
	cr_expect_null(result);
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": rollup chunk of tenant acme is malformed", name,
		 chunk_offset);
	cr_expect_not_null(strstr(err, says), "the query said \"%s\", not \"%s\"", err, says);
	cr_assert_eq(tally_store_close(s), 0);
	int rc;
	problems *p = verify(&rc);
	cr_expect_geq(rc, 1);
	snprintf(says, sizeof(says),
		 "%s offset %" PRIu64 ": hour rollup chunk 0 of tenant acme holds %" PRIu64 " cells of buckets %" PRId64,
		 name, chunk_offset, cells, first_bucket);
	cr_expect_geq(find_message(p, says, NULL), 0, "no problem says \"%s\"", says);
	snprintf(says, sizeof(says), "the footer says %" PRIu64 " from %" PRId64, cells + 1, first_bucket);
	cr_expect_geq(find_message(p, says, NULL), 0, "no problem says \"%s\"", says);
	free(raw);
	footer_restore(path, ids[0], &img);
}

/* Description: a tenant with more minute cells than a chunk closes at
 * (three models a minute over a day and a half) has two minute chunks;
 * its footer rewritten with a good checksum so the second chunk starts
 * at the first one's bucket (a step of 0: chunks out of order) is refused
 * by open and reported by verify at the footer's offset. */
Test(inspect, a_footer_whose_rollup_chunks_are_out_of_order_is_refused)
{
	static const char *models[3] = {"gpt-4o", "claude-3", "llama-3"};
	enum { MINUTES = 1440 + 852, EVENTS = 3 * MINUTES };
	static char ids[EVENTS][24];
	static tally_event events[EVENTS];
	static tally_ingest_result results[EVENTS];
	int64_t from = (int64_t)(DAY_NOW - 1) * TALLY_US_PER_DAY;
	for (int i = 0; i < EVENTS; i++) {
		snprintf(ids[i], sizeof(ids[i]), "busy-%d", i);
		events[i] = (tally_event){.event_id = S(ids[i]), .time_us = from + (i / 3) * MINUTE_US + 1234,
					  .type = S("llm.call"), .model = S(models[i % 3]), .duration_ms = 100};
	}
	cr_assert_lt(from + MINUTES * MINUTE_US, NOW_US);
	tally_store *s = open_store();
	cr_assert_eq(tally_ingest(s, "busy", events, EVENTS, results), 0);
	for (int i = 0; i < EVENTS; i++)
		cr_assert_eq(results[i].code, TALLY_ACCEPTED);
	cr_assert_eq(tally_flush(s), 0);
	ingest_day(s, "acme", DAY_NOW, 1, 0); /* a second file, as manifest_file_ids expects */
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_store_close(s), 0);

	uint64_t ids_live[2];
	char path[512], name[64];
	manifest_file_ids(ids_live, NULL);
	segment_path(path, sizeof(path), ids_live[0]);
	segment_file_name(name, sizeof(name), ids_live[0]);
	footer_image img;
	footer_load(path, &img);
	rollup_walk w = rollup_walk_first(img.raw);
	cr_assert_eq(varint_at(img.raw, w.count_at[0]), 2, "two minute chunks");
	cr_assert_eq(varint_at(img.raw, w.cells_at[0]), 3 * 1440, "the first closes at the day's end");
	const footer_case step_0 = {w.second_field_at[0], 0, "footer: bad rollup chunk of tenant busy"};
	expect_footer_cases_refused(path, ids_live[0], name, &img, &step_0, 1);
	footer_restore(path, ids_live[0], &img);
}

/* ---- blocks with a good checksum and bad contents ----------------------- */

/* The first byte of the varint whose last byte is raw[last]. */
static size_t varint_start(const uint8_t *raw, size_t last)
{
	while (last > 0 && (raw[last - 1] & 0x80))
		last--;
	return last;
}

/* Block b of file_id, raw (verified and decompressed), into out. */
static void block_raw(uint64_t file_id, const seg_block *b, bytebuf *out)
{
	segment_file *f = open_segment(file_id);
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(segment_read_block(f, b, out, err), 0, "%s", err);
	segment_file_close(f);
}

/*
 * Writes the segment file at path (id file_id) again with block b's stored
 * bytes replaced by `stored` (stored_size bytes), and the block's footer
 * entry made for them with the codec and raw size asked (and a checksum
 * over them). The blocks after it move; their entries stay as they were,
 * since a gap counts from the previous block's end. The footer is stored
 * RAW with a trailer made for it (footer_store). Every checksum is good:
 * only the contents can be wrong.
 */
static void block_store_as(const char *path, uint64_t file_id, const seg_block *b,
			   const uint8_t *stored, size_t stored_size, uint8_t codec, size_t raw_size)
{
	footer_image img;
	footer_load(path, &img);
	uint8_t want[8];
	put_le64(want, b->checksum);
	size_t checksum_at = 0;
	int found = 0;
	for (size_t i = 0; i + 8 <= img.raw_size; i++)
		if (!memcmp(img.raw + i, want, 8)) {
			checksum_at = i;
			found++;
		}
	cr_assert_eq(found, 1, "the block's checksum is in the footer once");
	/* The entry: varint gap, varint stored size, varint raw size, u8 codec,
	 * u64 checksum. */
	size_t raw_at = varint_start(img.raw, checksum_at - 2);
	size_t stored_at = varint_start(img.raw, raw_at - 1);
	cr_assert_eq(varint_at(img.raw, stored_at), b->stored_size);
	cr_assert_eq(varint_at(img.raw, raw_at), b->raw_size);
	img.raw[checksum_at - 1] = codec;
	put_le64(img.raw + checksum_at, XXH3_64bits_withSeed(stored, stored_size, file_id));
	uint8_t *once = malloc(img.raw_size + 16), *twice = malloc(img.raw_size + 32);
	cr_assert(once && twice);
	size_t n = splice_varint(img.raw, img.raw_size, raw_at, raw_size, once);
	n = splice_varint(once, n, stored_at, stored_size, twice);
	uint64_t after = b->offset + b->stored_size, tail = img.footer_offset - after;
	footer_image body = {.footer_offset = b->offset + stored_size + tail};
	body.file = malloc(body.footer_offset + 1);
	cr_assert_not_null(body.file);
	memcpy(body.file, img.file, b->offset);
	memcpy(body.file + b->offset, stored, stored_size);
	memcpy(body.file + b->offset + stored_size, img.file + after, tail);
	footer_store(path, file_id, &body, twice, n);
	free(body.file);
	free(twice);
	free(once);
	free(img.raw);
	free(img.file);
}

/* block_store_as with raw (size bytes) stored RAW. */
static void block_store(const char *path, uint64_t file_id, const seg_block *b,
			const uint8_t *raw, size_t size)
{
	block_store_as(path, file_id, b, raw, size, 0, size);
}

/* A segment file to damage: its id, path and name, and its bytes to put
 * back. */
typedef struct file_copy {
	uint64_t id;
	char path[512], name[64];
	uint8_t *good;
	uint64_t size;
} file_copy;

/* build_store, then its second file: initech's 500 rows, one row group of
 * a block per column. */
static file_copy initech_file_load(void)
{
	build_store();
	uint64_t ids[2];
	manifest_file_ids(ids, NULL);
	file_copy f = {.id = ids[1]};
	segment_path(f.path, sizeof(f.path), f.id);
	segment_file_name(f.name, sizeof(f.name), f.id);
	f.good = file_bytes(f.path, &f.size);
	return f;
}

/* Verify reports exactly the `count` problems `says`, in order; with
 * `opens`, the store still opens (nothing the open reads is wrong). Then
 * the file's own bytes go back and verify finds it clean. */
static void expect_exact_problems(file_copy *f, const char *const *says, int count, int opens)
{
	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, count, "verify counts %d problems, expected %d", rc, count);
	for (int i = 0; i < count && i < p->count; i++)
		cr_expect_str_eq(p->message[i], says[i]);
	if (opens) {
		tally_store *s = open_store();
		cr_assert_eq(tally_store_close(s), 0);
	}
	file_put(f->path, f->good, f->size);
	verify(&rc);
	cr_assert_eq(rc, 0, "the file put back is clean");
}

/* initech's dictionary block (its footer entry), raw into out. */
static seg_block initech_dict(const file_copy *f, bytebuf *out)
{
	segment_file *sf = open_segment(f->id);
	seg_block dict = sf->tenants[0].dict;
	segment_file_close(sf);
	block_raw(f->id, &dict, out);
	return dict;
}

/* The open refuses the store saying `says`, and verify reports exactly
 * that, once; then the file's own bytes go back (expect_exact_problems). */
static void expect_refused_once(file_copy *f, const char *says, const char *what)
{
	expect_segment_refused(says, what);
	const char *const list[] = {says};
	expect_exact_problems(f, list, 1, 0);
}

/* Rewrites initech's dictionary block, with a good checksum, without its
 * last user string ("user-16", code 16 of its 17): 29 of its 500 rows (16,
 * 33, ...) then hold a code past the dictionary. */
static void initech_dict_drop_last_user(const file_copy *f)
{
	bytebuf raw = {0};
	seg_block dict = initech_dict(f, &raw);
	/* Five dimensions: varint count, then each string as varint size and
	 * bytes. The user dimension is the last; its last string ends the block. */
	size_t at = 0, count_at = 0, last_at = 0;
	uint64_t count = 0;
	for (int d = 0; d < DIM_COUNT; d++) {
		count_at = at;
		count = varint_at(raw.data, at);
		skip_varint(raw.data, &at);
		for (uint64_t k = 0; k < count; k++) {
			last_at = at;
			uint64_t len = varint_at(raw.data, at);
			skip_varint(raw.data, &at);
			at += len;
		}
	}
	cr_assert_eq(at, raw.size);
	cr_assert_eq(count, 17);
	cr_assert_eq(memcmp(raw.data + last_at + 1, "user-16", 7), 0);
	uint8_t *less = malloc(raw.size + 16);
	cr_assert_not_null(less);
	size_t n = splice_varint(raw.data, last_at, count_at, count - 1, less);
	block_store(f->path, f->id, &dict, less, n);
	free(less);
	bytebuf_free(&raw);
}

/* Description: initech's dictionary block rewritten, with a good checksum,
 * without its last user string ("user-16", code 16 of 17). Verify names
 * the user column's block, the dictionary's new size, how many rows hold
 * a code past it (29: rows 16, 33, ... of 500) and the first of them; and
 * each rollup chunk (one per list), whose cells count users by the same
 * codes, as malformed. The store still opens: the footer is sound. */
Test(inspect, verify_names_codes_outside_the_dictionary)
{
	file_copy f = initech_file_load();
	initech_dict_drop_last_user(&f);

	segment_file *sf = open_segment(f.id); /* the blocks after the dictionary moved */
	const seg_tenant *t = &sf->tenants[0];
	char says[1 + SEG_ROLLUP_LISTS][300];
	snprintf(says[0], sizeof(says[0]),
		 "%s offset %" PRIu64 ": user codes >= the dictionary size 16 in 29 rows "
		 "(first: row 16, code 16) (tenant initech, day 2026-09-21, row group 0)", f.path,
		 sf->blocks[sf->rowgroups[0].first_block + TALLY_COL_USER].offset);
	static const char *const lists[SEG_ROLLUP_LISTS] = {"minute", "hour", "day", "day total"};
	for (int list = 0; list < SEG_ROLLUP_LISTS; list++) {
		cr_assert_eq(t->chunk_count[list], 1, "one %s chunk", lists[list]);
		snprintf(says[1 + list], sizeof(says[0]),
			 "%s offset %" PRIu64 ": %s rollup chunk 0 of tenant initech is malformed", f.path,
			 sf->chunks[t->first_chunk[list]].block.offset, lists[list]);
	}
	segment_file_close(sf);
	const char *const list[] = {says[0], says[1], says[2], says[3], says[4]};
	expect_exact_problems(&f, list, 5, 1);
	free(f.good);
}

/* Block `column` of initech's row group (its file's one row group, a block
 * per column), raw, into out; *b is its footer entry. */
static void initech_column(const file_copy *f, int column, seg_block *b, bytebuf *out)
{
	*b = unpacked_block(f->id, column);
	block_raw(f->id, b, out);
}

/* The footer offset of f's file as it is now. */
static uint64_t footer_offset_now(const file_copy *f)
{
	segment_file *sf = open_segment(f->id);
	uint64_t offset = sf->footer_offset;
	segment_file_close(sf);
	return offset;
}

/* Description: initech's status column rewritten, with a good checksum,
 * so that row 7 holds status 9 and row 100 status 4 (the known ones are
 * 0..3). Verify names the status block, the two rows, the first of them
 * and its value, once. */
Test(inspect, verify_names_rows_of_an_unknown_status)
{
	file_copy f = initech_file_load();
	seg_block b;
	bytebuf raw = {0}, out = {0};
	initech_column(&f, TALLY_COL_STATUS, &b, &raw);
	uint8_t status[INITECH_ROWS];
	cr_assert_eq(codec_u8_decode(raw.data, raw.size, status, INITECH_ROWS), 0);
	cr_assert_eq(status[7], 7 % TALLY_STATUS_COUNT);
	status[7] = 9;
	status[100] = 4;
	cr_assert_eq(codec_u8_encode(&out, status, INITECH_ROWS), 0);
	block_store(f.path, f.id, &b, out.data, out.size);
	char says[300];
	snprintf(says, sizeof(says),
		 "%s offset %" PRIu64 ": unknown status in 2 rows (first: row 7, status 9) "
		 "(tenant initech, day 2026-09-21, row group 0)", f.path, b.offset);
	const char *const list[] = {says};
	expect_exact_problems(&f, list, 1, 1);
	bytebuf_free(&out);
	bytebuf_free(&raw);
	free(f.good);
}

/* The time column of initech's row group: times after the minute of its
 * first row (row_time(DAY_NOW, 0)), as stored. */
static int64_t initech_base_us(void)
{
	return row_time(DAY_NOW, 0) / MINUTE_US * MINUTE_US;
}

/* Description: initech's time column rewritten, with a good checksum: rows
 * 10 and 11 swapped, then (from the good file) the last row an hour later.
 * The swap is one row earlier than its predecessor, inside the segment's
 * range and with its first and last rows in place: one problem. The late
 * last row lies outside the segment's range, and the footer's range (to
 * the minute) is no longer the one its rows give: two problems, the
 * footer's first (at the footer's offset, with both ranges), then the
 * row's (at the time block, with the row and its time). */
Test(inspect, verify_names_times_unsorted_or_outside_their_segment)
{
	file_copy f = initech_file_load();
	seg_block b;
	bytebuf raw = {0}, out = {0};
	initech_column(&f, TALLY_COL_TIME, &b, &raw);
	static int64_t t[INITECH_ROWS];
	cr_assert_eq(codec_time_decode(raw.data, raw.size, t, INITECH_ROWS), 0);
	int64_t base = initech_base_us();
	for (int i = 0; i < INITECH_ROWS; i++)
		cr_assert_eq(t[i], row_time(DAY_NOW, i) - base, "row %d as stored", i);

	int64_t swapped = t[10];
	t[10] = t[11];
	t[11] = swapped;
	cr_assert_eq(codec_time_encode(&out, t, INITECH_ROWS), 0);
	block_store(f.path, f.id, &b, out.data, out.size);
	char says[2][400];
	snprintf(says[0], sizeof(says[0]),
		 "%s offset %" PRIu64 ": times are not sorted (1 rows earlier than their predecessor; "
		 "first: row 11) (tenant initech, row group 0)", f.path, b.offset);
	const char *const one[] = {says[0]};
	expect_exact_problems(&f, one, 1, 1);

	t[11] = t[10];
	t[10] = swapped;
	t[INITECH_ROWS - 1] += 60 * MINUTE_US;
	bytebuf_reset(&out);
	cr_assert_eq(codec_time_encode(&out, t, INITECH_ROWS), 0);
	block_store(f.path, f.id, &b, out.data, out.size);
	int64_t first = row_time(DAY_NOW, 0), last = row_time(DAY_NOW, INITECH_ROWS - 1);
	int64_t late = last + 60 * MINUTE_US;
	snprintf(says[0], sizeof(says[0]),
		 "%s offset %" PRIu64 ": footer gives tenant initech day 2026-09-21 the time range "
		 "[%" PRId64 ", %" PRId64 "], its rows span [%" PRId64 ", %" PRId64 "]", f.path,
		 footer_offset_now(&f), first / MINUTE_US * MINUTE_US,
		 last / MINUTE_US * MINUTE_US + MINUTE_US - 1, first, late);
	snprintf(says[1], sizeof(says[1]),
		 "%s offset %" PRIu64 ": 1 of 500 times lie outside their segment's range (first: "
		 "row 499, time %" PRId64 ") (tenant initech, row group 0)", f.path, b.offset, late);
	const char *const two[] = {says[0], says[1]};
	expect_exact_problems(&f, two, 2, 1);
	bytebuf_free(&out);
	bytebuf_free(&raw);
	free(f.good);
}

/* Description: initech's footer rewritten, with a good checksum, so that
 * its segment's time span is a minute longer (still inside its day, so
 * the store opens). Its rows all lie inside that range, but the range is
 * not the one they give: verify reports that once, at the footer's
 * offset, with both ranges. */
Test(inspect, verify_names_a_footer_time_range_its_rows_do_not_give)
{
	file_copy f = initech_file_load();
	footer_image img;
	footer_load(f.path, &img);
	footer_walk w = footer_walk_first(img.raw);
	cr_assert_eq(w.segment_count, 1);
	size_t span_at = w.time_min_at[0];
	skip_varint(img.raw, &span_at);
	cr_assert_eq(varint_at(img.raw, span_at), INITECH_ROWS - 1, "minutes 1..500 of the day");
	uint8_t *raw = malloc(img.raw_size + 16);
	cr_assert_not_null(raw);
	size_t n = splice_varint(img.raw, img.raw_size, span_at, INITECH_ROWS, raw);
	footer_store(f.path, f.id, &img, raw, n);
	int64_t first = row_time(DAY_NOW, 0), last = row_time(DAY_NOW, INITECH_ROWS - 1);
	char says[400];
	snprintf(says, sizeof(says),
		 "%s offset %" PRIu64 ": footer gives tenant initech day 2026-09-21 the time range "
		 "[%" PRId64 ", %" PRId64 "], its rows span [%" PRId64 ", %" PRId64 "]", f.path,
		 img.footer_offset, first / MINUTE_US * MINUTE_US,
		 last / MINUTE_US * MINUTE_US + 2 * MINUTE_US - 1, first, last);
	const char *const list[] = {says};
	expect_exact_problems(&f, list, 1, 1);
	free(raw);
	free(img.raw);
	free(img.file);
	free(f.good);
}

/* Description: initech's rollup group table rewritten, with a good
 * checksum: with version 2 (only 1 exists), then with its second group's
 * type code 99 (the dictionary has 1 type). Verify names the table's
 * block as malformed, once each time, and reads none of the chunks that
 * refer to it. */
Test(inspect, verify_names_a_malformed_rollup_group_table)
{
	file_copy f = initech_file_load();
	segment_file *sf = open_segment(f.id);
	seg_block b = sf->tenants[0].rollup_groups;
	uint32_t groups = sf->tenants[0].rollup_group_count;
	segment_file_close(sf);
	cr_assert_gt(groups, 1);
	bytebuf raw = {0};
	block_raw(f.id, &b, &raw);
	cr_assert_eq(raw.data[0], 1, "version 1");
	cr_assert_eq(varint_at(raw.data, 1), groups);
	char says[300];
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": rollup group table of tenant initech "
		 "is malformed", f.path, b.offset);
	const char *const list[] = {says};

	raw.data[0] = 2;
	block_store(f.path, f.id, &b, raw.data, raw.size);
	expect_exact_problems(&f, list, 1, 1);
	raw.data[0] = 1;

	/* Groups: 4 codes, then the status, each a varint; group 0 first. */
	size_t at = 1;
	skip_varint(raw.data, &at);
	for (int k = 0; k < 5; k++)
		skip_varint(raw.data, &at);
	uint8_t *bad = malloc(raw.size + 16);
	cr_assert_not_null(bad);
	size_t n = splice_varint(raw.data, raw.size, at, 99, bad);
	block_store(f.path, f.id, &b, bad, n);
	expect_exact_problems(&f, list, 1, 1);
	free(bad);
	bytebuf_free(&raw);
	free(f.good);
}

/* Description: initech's footer rewritten, with a good checksum, to name
 * it with tenant id 1, which the manifest gives globex. The store refuses
 * to open (its rows would be read as globex's), and verify reports it, once,
 * at the footer's offset, naming the tenant and the id. */
Test(inspect, verify_names_a_footer_tenant_id_the_manifest_does_not_give)
{
	file_copy f = initech_file_load();
	footer_image img;
	footer_load(f.path, &img);
	cr_assert_eq(img.raw[0], 2, "initech is tenant 2");
	img.raw[0] = 1;
	footer_store(f.path, f.id, &img, img.raw, img.raw_size);
	char says[300];
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": footer names tenant initech with id 1, "
		 "which the manifest does not", f.path, img.footer_offset);
	expect_refused_once(&f, says, "a tenant id the manifest gives another tenant");
	free(img.raw);
	free(img.file);
	free(f.good);
}

/* Description: the manifest rewritten, with a good checksum, so that its
 * tenant 1 (globex) is named "glo ex", then "acme" like tenant 0. The
 * store refuses to open either; verify reports the name at its entry's offset in the manifest (invalid, or
 * repeating tenant 0), and the first segment file's footer, which names
 * globex with id 1, at the footer's offset. */
Test(inspect, verify_names_manifest_tenants_invalid_or_repeated)
{
	build_store();
	uint64_t ids[2];
	manifest_file_ids(ids, NULL);
	char path[512], manifest_path[300], says[2][300];
	segment_path(path, sizeof(path), ids[0]);
	snprintf(manifest_path, sizeof(manifest_path), "%s/MANIFEST", dir);
	segment_file *sf = open_segment(ids[0]);
	uint64_t footer_offset = sf->footer_offset;
	segment_file_close(sf);
	manifest_bytes m;
	manifest_file_load(dir, &m);
	size_t at = m.tenants_offset; /* entries: u8 size, name */
	cr_assert_eq(m.data[at], 4);
	cr_assert_eq(memcmp(m.data + at + 1, "acme", 4), 0);
	size_t globex_at = at + 5;
	cr_assert_eq(m.data[globex_at], 6);
	cr_assert_eq(memcmp(m.data + globex_at + 1, "globex", 6), 0);
	snprintf(says[1], sizeof(says[1]), "%s offset %" PRIu64 ": footer names tenant globex with "
		 "id 1, which the manifest does not", path, footer_offset);

	uint8_t *bytes = malloc(m.size);
	cr_assert_not_null(bytes);
	memcpy(bytes, m.data, m.size);
	memcpy(bytes + globex_at + 1, "glo ex", 6);
	manifest_file_store(dir, bytes, m.size);
	snprintf(says[0], sizeof(says[0]), "%s offset %zu: tenant 1 has an invalid name",
		 manifest_path, globex_at);
	tally_store *s;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(store_try_open(&s, err), TALLY_E_CORRUPT, "an invalid name: %s", err);
	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, 2);
	cr_expect_str_eq(p->message[0], says[0]);
	cr_expect_str_eq(p->message[1], says[1]);

	/* "acme" is two bytes shorter than "globex": the rest moves up. */
	memcpy(bytes, m.data, globex_at);
	bytes[globex_at] = 4;
	memcpy(bytes + globex_at + 1, "acme", 4);
	memcpy(bytes + globex_at + 5, m.data + globex_at + 7, m.size - globex_at - 7);
	manifest_file_store(dir, bytes, m.size - 2);
	snprintf(says[0], sizeof(says[0]), "%s offset %zu: tenant name 'acme' repeats tenant 0",
		 manifest_path, globex_at);
	cr_expect_eq(store_try_open(&s, err), TALLY_E_CORRUPT, "a repeated name: %s", err);
	p = verify(&rc);
	cr_expect_eq(rc, 2);
	cr_expect_str_eq(p->message[0], says[0]);
	cr_expect_str_eq(p->message[1], says[1]);

	manifest_file_store(dir, m.data, m.size);
	verify(&rc);
	cr_assert_eq(rc, 0, "the manifest put back is clean");
	free(bytes);
	free(m.data);
}

/* Description: acme's packed row group (the first file's first block after
 * acme's dictionary) rewritten, with a good checksum, so that its column
 * directory gives the time column one byte more than it has: the columns
 * no longer add up to the block. Verify names the block once, as a bad
 * column directory, with its tenant, day and row group; inspect, which
 * splits packed blocks to count each column's bytes, stops with the same
 * words, and so does the store's open, which reads the rows to rebuild its
 * dedup index. */
Test(inspect, verify_and_inspect_name_a_packed_row_group_with_a_bad_directory)
{
	build_store();
	uint64_t ids[2];
	manifest_file_ids(ids, NULL);
	file_copy f = {.id = ids[0]}; /* the first file: acme and globex */
	segment_path(f.path, sizeof(f.path), f.id);
	f.good = file_bytes(f.path, &f.size);
	segment_file *sf = open_segment(f.id);
	cr_assert_eq(sf->rowgroups[0].packed, 1);
	seg_block b = sf->blocks[sf->rowgroups[0].first_block];
	segment_file_close(sf);
	bytebuf raw = {0};
	block_raw(f.id, &b, &raw);
	uint8_t *bad = malloc(raw.size + 16);
	cr_assert_not_null(bad);
	size_t n = splice_varint(raw.data, raw.size, 0, varint_at(raw.data, 0) + 1, bad);
	block_store(f.path, f.id, &b, bad, n);
	char says[300];
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": packed row group has a bad column "
		 "directory", f.path, b.offset);
	tally_inspect_report report;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(tally_inspect(dir, &report, NULL, NULL, err), TALLY_E_CORRUPT);
	cr_expect_str_eq(err, says);
	expect_segment_refused(says, "a bad column directory");
	char with_place[400];
	snprintf(with_place, sizeof(with_place), "%s (tenant acme, day 2026-09-19, row group 0)", says);
	const char *const list[] = {with_place};
	expect_exact_problems(&f, list, 1, 0);
	free(bad);
	bytebuf_free(&raw);
	free(f.good);
}

/* Chunk 0 of a rollup list of initech (its list's only chunk), raw, with
 * its columns found: version u8, varint cell count, then 13 columns, each
 * a varint byte length and the column (docs/formats.md, "Rollup blocks":
 * 0 bucket, 1 group, 2 count, ..., 12 totals, counted from 0 here). */
typedef struct chunk_image {
	seg_block block;
	bytebuf raw;
	uint32_t cells;
	size_t columns_at; /* where the first column's length is */
	const uint8_t *col[ROLLUP_CHUNK_COLUMNS];
	size_t size[ROLLUP_CHUNK_COLUMNS];
} chunk_image;

static void chunk_load(const file_copy *f, int list, chunk_image *ci)
{
	memset(ci, 0, sizeof(*ci));
	segment_file *sf = open_segment(f->id);
	const seg_tenant *t = &sf->tenants[0];
	cr_assert_eq(t->chunk_count[list], 1);
	const seg_chunk *c = &sf->chunks[t->first_chunk[list]];
	ci->block = c->block;
	uint32_t footer_cells = c->cells;
	segment_file_close(sf);
	block_raw(f->id, &ci->block, &ci->raw);
	cr_assert_eq(ci->raw.data[0], 1, "version 1");
	ci->cells = (uint32_t)varint_at(ci->raw.data, 1);
	cr_assert_eq(ci->cells, footer_cells);
	size_t at = 1;
	skip_varint(ci->raw.data, &at);
	ci->columns_at = at;
	for (int k = 0; k < ROLLUP_CHUNK_COLUMNS_V1; k++) {
		ci->size[k] = (size_t)varint_at(ci->raw.data, at);
		skip_varint(ci->raw.data, &at);
		ci->col[k] = ci->raw.data + at;
		at += ci->size[k];
	}
	cr_assert_eq(at, ci->raw.size);
}

/* Writes the chunk back (block_store) with column k replaced by with[k]
 * where that is not NULL, and frees ci. */
static void chunk_store(const file_copy *f, chunk_image *ci, const bytebuf *with[ROLLUP_CHUNK_COLUMNS])
{
	bytebuf out = {0};
	cr_assert_eq(bytebuf_append(&out, ci->raw.data, ci->columns_at), 0);
	for (int k = 0; k < ROLLUP_CHUNK_COLUMNS_V1; k++) {
		const uint8_t *data = with[k] ? with[k]->data : ci->col[k];
		size_t size = with[k] ? with[k]->size : ci->size[k];
		cr_assert_eq(varint_append(&out, size), 0);
		cr_assert_eq(bytebuf_append(&out, data, size), 0);
	}
	block_store(f->path, f->id, &ci->block, out.data, out.size);
	bytebuf_free(&out);
	bytebuf_free(&ci->raw);
}

/*
 * Rewrites chunk 0 of rollup list `list` of initech (f, a good copy on
 * disk), with a good checksum, its last cell moved `shift` buckets later
 * (cells stay in bucket order; the chunk is the list's only one). Returns
 * the moved cell's count and sets *bucket to where it was.
 */
static uint64_t rollup_last_cell_move(const file_copy *f, int list, int64_t shift, int64_t *bucket)
{
	chunk_image ci;
	chunk_load(f, list, &ci);
	cr_assert_gt(ci.cells, 1);
	uint64_t *u = calloc(ci.cells, sizeof(*u)), *count = calloc(ci.cells, sizeof(*count));
	cr_assert(u && count);
	cr_assert_eq(codec_u64_decode(ci.col[0], ci.size[0], u, ci.cells), 0);
	cr_assert_eq(codec_u64_decode(ci.col[2], ci.size[2], count, ci.cells), 0);
	*bucket = zigzag_decode(u[0]); /* then steps */
	for (uint32_t i = 1; i < ci.cells; i++)
		*bucket += (int64_t)u[i];
	u[ci.cells - 1] += (uint64_t)shift;
	bytebuf bucket_col = {0};
	cr_assert_eq(codec_u64_encode(&bucket_col, u, ci.cells), 0);
	const bytebuf *with[ROLLUP_CHUNK_COLUMNS] = {&bucket_col};
	chunk_store(f, &ci, with);
	uint64_t moved = count[ci.cells - 1];
	free(u);
	free(count);
	bytebuf_free(&bucket_col);
	return moved;
}

/* Description: initech's hour chunk rewritten, with a good checksum, its
 * last cell (hour 8 of day 2026-09-21) moved a day later. The hour cells
 * still count every row, but no longer the day's: verify reports that
 * the day cells of 2026-09-21 count 500 events and its hour cells 500
 * less the moved cell's. */
Test(inspect, verify_names_a_day_whose_hour_cells_count_other_events)
{
	file_copy f = initech_file_load();
	int64_t hour;
	uint64_t moved = rollup_last_cell_move(&f, 1, 24, &hour);
	cr_assert_eq(hour, (int64_t)DAY_NOW * 24 + 8, "the last hour holds minute 500");
	char says[300];
	snprintf(says, sizeof(says), "%s: day 2026-09-21 of tenant initech: day cells count 500 "
		 "events, hour cells %" PRIu64, f.path, INITECH_ROWS - moved);
	const char *const list[] = {says};
	expect_exact_problems(&f, list, 1, 1);
	free(f.good);
}

/* Description: initech's day chunk rewritten, with a good checksum, its
 * last group cell moved a day later. Its day's total cell (in the day
 * total chunk) then counts more than the day's group cells, and the group
 * cells of both days disagree with their hour cells: three problems,
 * naming the bucket, the day and both counts. */
Test(inspect, verify_names_a_day_total_its_groups_do_not_add_up_to)
{
	file_copy f = initech_file_load();
	int64_t day;
	uint64_t moved = rollup_last_cell_move(&f, 2, 1, &day);
	cr_assert_eq(day, DAY_NOW);
	char says[3][300];
	snprintf(says[0], sizeof(says[0]), "%s: day 2026-09-21 of tenant initech: total cell counts "
		 "500 events, its groups %" PRIu64, f.path, INITECH_ROWS - moved);
	snprintf(says[1], sizeof(says[1]), "%s: day 2026-09-21 of tenant initech: day cells count "
		 "%" PRIu64 " events, hour cells 500", f.path, INITECH_ROWS - moved);
	snprintf(says[2], sizeof(says[2]), "%s: day 2026-09-22 of tenant initech: day cells count "
		 "%" PRIu64 " events, hour cells 0", f.path, moved);
	const char *const list[] = {says[0], says[1], says[2]};
	expect_exact_problems(&f, list, 3, 1);
	free(f.good);
}

/* Description: initech's footer rewritten, with a good checksum, without
 * rollup pages (a group count of 0 and no chunks) for its 500 rows. Its
 * rows would be invisible to queries, which read only the pages: the open
 * refuses the file, and verify reports it once, at the footer's offset. */
Test(inspect, a_tenant_section_without_rollup_pages_is_refused)
{
	file_copy f = initech_file_load();
	footer_image img;
	footer_load(f.path, &img);
	rollup_walk w = rollup_walk_first(img.raw);
	uint8_t *raw = malloc(img.raw_size + 16);
	cr_assert_not_null(raw);
	memcpy(raw, img.raw, w.group_count_at);
	memset(raw + w.group_count_at, 0, 1 + SEG_ROLLUP_LISTS); /* no groups, no chunks */
	footer_store(f.path, f.id, &img, raw, w.group_count_at + 1 + SEG_ROLLUP_LISTS);
	char says[300];
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": footer: tenant initech has 500 rows and "
		 "no rollup pages", f.path, img.footer_offset);
	expect_refused_once(&f, says, "a section without rollup pages");
	free(raw);
	free(img.raw);
	free(img.file);
	free(f.good);
}

/* Description: initech's day total chunk (one cell: the day's total)
 * rewritten, with a good checksum, to hold a group cell instead (group 1,
 * no totals column). Verify names the chunk as mixing total and group
 * cells; the day's group cells then count 1000 events, against 500 in its
 * hour cells and 500 in the section. */
Test(inspect, verify_names_a_day_total_chunk_holding_a_group_cell)
{
	file_copy f = initech_file_load();
	chunk_image ci;
	chunk_load(&f, LIST_DAY_TOTAL, &ci);
	cr_assert_eq(ci.cells, 1);
	uint32_t group;
	cr_assert_eq(codec_codes_decode(ci.col[1], ci.size[1], &group, 1), 0);
	cr_assert_eq(group, 0, "the total");
	group = 1;
	bytebuf group_col = {0}, no_totals = {0};
	cr_assert_eq(codec_codes_encode(&group_col, &group, 1), 0);
	const bytebuf *with[ROLLUP_CHUNK_COLUMNS] = {[1] = &group_col, [12] = &no_totals};
	uint64_t offset = ci.block.offset;
	chunk_store(&f, &ci, with);
	char says[3][300];
	snprintf(says[0], sizeof(says[0]), "%s offset %" PRIu64 ": day total rollup chunk 0 of tenant "
		 "initech mixes total and group cells", f.path, offset);
	snprintf(says[1], sizeof(says[1]), "%s: day rollup cells of tenant initech count 1000 events, "
		 "the section holds 500", f.path);
	snprintf(says[2], sizeof(says[2]), "%s: day 2026-09-21 of tenant initech: day cells count "
		 "1000 events, hour cells 500", f.path);
	const char *const list[] = {says[0], says[1], says[2]};
	expect_exact_problems(&f, list, 3, 1);
	bytebuf_free(&group_col);
	free(f.good);
}

/* Description: contents behind good checksums that do not decode at all:
 * initech's dictionary block with a byte after its last string, its
 * status block stored zstd-compressed but one byte longer by the footer
 * than it decompresses to, and the footer stored as zstd that is not
 * zstd. Verify names each at its offset, once: a malformed dictionary, a
 * block that does not decompress to its size (with the column: the store
 * still opens, as it reads neither), a footer that does not decompress
 * (which the open refuses too). */
Test(inspect, verify_names_blocks_and_footers_that_do_not_decode)
{
	file_copy f = initech_file_load();
	bytebuf raw = {0};
	seg_block dict = initech_dict(&f, &raw);
	cr_assert_eq(bytebuf_append(&raw, "", 1), 0); /* one byte past the last string */
	block_store(f.path, f.id, &dict, raw.data, raw.size);
	char says[300];
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": dictionary of tenant initech is malformed",
		 f.path, dict.offset);
	const char *const one[] = {says};
	expect_exact_problems(&f, one, 1, 1);

	seg_block status;
	bytebuf_reset(&raw);
	initech_column(&f, TALLY_COL_STATUS, &status, &raw);
	size_t bound = ZSTD_compressBound(raw.size);
	uint8_t *z = malloc(bound);
	cr_assert_not_null(z);
	size_t zsize = ZSTD_compress(z, bound, raw.data, raw.size, 3);
	cr_assert(!ZSTD_isError(zsize));
	block_store_as(f.path, f.id, &status, z, zsize, 1, raw.size + 1);
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": block does not decompress to %zu bytes "
		 "(tenant initech, day 2026-09-21, row group 0, column status)", f.path, status.offset,
		 raw.size + 1);
	expect_exact_problems(&f, one, 1, 1);

	footer_image img;
	footer_load(f.path, &img);
	static const uint8_t not_zstd[16] = "not a zstd frame";
	footer_store_as(f.path, f.id, &img, not_zstd, sizeof(not_zstd), 1, img.raw_size);
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": footer does not decompress", f.path,
		 img.footer_offset);
	expect_refused_once(&f, says, "a footer that is not zstd");
	free(img.raw);
	free(img.file);
	free(z);
	bytebuf_free(&raw);
	free(f.good);
}

/* How many files the segment directory holds. */
static int segment_files_now(void)
{
	DIR *d = opendir(segment_dir);
	cr_assert_not_null(d);
	int files = 0;
	for (struct dirent *e; (e = readdir(d));)
		files += e->d_name[0] != '.';
	closedir(d);
	return files;
}

/* What a reader of initech's rows says once initech_dict_drop_last_user
 * has run: row 16's user code, named at the user column's block (the
 * blocks after the dictionary moved). */
static void row16_refused(const file_copy *f, char *says, size_t size)
{
	segment_file *sf = open_segment(f->id);
	snprintf(says, size,
		 "%s offset %" PRIu64 ": tenant initech row group 0, row 16: user code 16 is past "
		 "its dictionary of 16 strings",
		 f->path, sf->blocks[sf->rowgroups[0].first_block + TALLY_COL_USER].offset);
	segment_file_close(sf);
}

/* Description: a compaction that meets rows holding a code past their
 * dictionary (initech's, behind good checksums) fails with
 * TALLY_E_CORRUPT naming the file, the user column's block, the tenant,
 * the row group and the first such row, and
 * changes nothing: the manifest names the same two files, no other file
 * is left in the segment directory, and the store still takes events and
 * closes cleanly. It never writes such rows into a new file. */
Test(inspect, compaction_refuses_rows_outside_their_dictionary)
{
	file_copy f = initech_file_load();
	initech_dict_drop_last_user(&f);
	uint64_t before[2], after[2];
	manifest_file_ids(before, NULL);
	tally_store *s = open_store();
	cr_expect_eq(tally_compact(s), TALLY_E_CORRUPT);
	char err[TALLY_ERRMSG_SIZE], says[300];
	tally_store_errmsg_copy(s, err, sizeof(err));
	row16_refused(&f, says, sizeof(says));
	cr_expect_not_null(strstr(err, says), "\"%s\" does not say \"%s\"", err, says);
	ingest_day(s, "hooli", DAY_NOW, 1, 0); /* a new tenant: still writable */
	cr_assert_eq(tally_store_close(s), 0);
	manifest_file_ids(after, NULL);
	cr_expect(before[0] == after[0] && before[1] == after[1], "the same two files");
	cr_expect_eq(segment_files_now(), 2, "nothing else in %s", segment_dir);
	free(f.good);
}

/* Description: a backfill's check of old history that meets a row holding
 * a code past its dictionary (initech's row 16, user code 16 of a
 * dictionary of 16, behind good checksums) fails the call with
 * TALLY_E_CORRUPT naming the file, the user column's block, the tenant,
 * the row group and the row, and stores nothing of it: a new event of the same call is accepted
 * afterwards. The check is the found row's: row 15 (code 15) is still
 * found a duplicate, and the store stays writable. */
Test(inspect, backfill_refuses_rows_outside_their_dictionary)
{
	file_copy f = initech_file_load();
	initech_dict_drop_last_user(&f);
	fault_io_clock_advance_us(fio, 40 * TALLY_US_PER_DAY); /* DAY_NOW is history now */
	tally_store *s = open_store();
	const tally_event *e = day_events("initech", DAY_NOW, INITECH_ROWS, 1);
	tally_event fresh = e[15];
	fresh.event_id = S("feedfacefeedfacefeedfacefeedface");
	tally_event call[2] = {fresh, e[16]};
	tally_ingest_result r[2];
	cr_expect_eq(tally_ingest_backfill(s, "initech", call, 2, r), TALLY_E_CORRUPT);
	char err[TALLY_ERRMSG_SIZE], says[300];
	tally_store_errmsg_copy(s, err, sizeof(err));
	row16_refused(&f, says, sizeof(says));
	cr_expect_not_null(strstr(err, says), "\"%s\" does not say \"%s\"", err, says);

	call[1] = e[15];
	cr_assert_eq(tally_ingest_backfill(s, "initech", call, 2, r), 0);
	cr_expect_eq(r[0].code, TALLY_ACCEPTED, "the failed call stored nothing");
	cr_expect_eq(r[1].code, TALLY_DUPLICATE, "row 15's code is inside the dictionary");
	cr_assert_eq(tally_store_close(s), 0);
	s = open_store();
	cr_assert_eq(tally_ingest_backfill(s, "initech", &fresh, 1, r), 0);
	cr_expect_eq(r[0].code, TALLY_DUPLICATE, "acknowledged before the reopen");
	cr_assert_eq(tally_store_close(s), 0);
	free(f.good);
}

static int count_event(void *ctx, const tally_event *e)
{
	(void)e;
	(*(int *)ctx)++;
	return 0;
}

/* errmsg, or the store's message when errmsg is empty, holds `says`. */
static void expect_said(tally_store *s, const char *errmsg, const char *says, const char *what)
{
	char err[TALLY_ERRMSG_SIZE];
	if (errmsg && errmsg[0])
		snprintf(err, sizeof(err), "%s", errmsg);
	else
		tally_store_errmsg_copy(s, err, sizeof(err));
	cr_expect_not_null(strstr(err, says), "%s: \"%s\" does not say \"%s\"", what, err, says);
}

/* A query over [row i - 1 ms, row i + 1 ms) of initech's day: not minute
 * aligned, so it reads raw rows. */
static int query_around_row(tally_store *s, int i, char *err)
{
	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = row_time(DAY_NOW, i) - 1000;
	q.to_us = row_time(DAY_NOW, i) + 1000;
	q.bucket = TALLY_BUCKET_NONE;
	tally_result *res = NULL;
	int rc = tally_query_run(s, "initech", &q, &res, err);
	if (!rc)
		tally_result_free(res);
	return rc;
}

/* Description: initech's rows hold a user code past their dictionary
 * (row 16, code 16 of a dictionary of 16, behind good checksums; the
 * footer is sound, so the store opens). Every reader of rows refuses
 * them with TALLY_E_CORRUPT naming the file, the user column's block, the
 * row group and the row: a scan, an events listing, a query that reads
 * raw rows, and the duplicate check of an event sent again (row 16's).
 * Before 2026-12-02 each of these looked the code up past the end of the
 * dictionary (a crash, or a blank user). The failed ingest stores
 * nothing, and the store still takes new events. */
Test(inspect, readers_refuse_rows_outside_their_dictionary)
{
	file_copy f = initech_file_load();
	initech_dict_drop_last_user(&f);
	char says[300];
	row16_refused(&f, says, sizeof(says));
	tally_store *s = open_store();
	int64_t day_us = (int64_t)DAY_NOW * TALLY_US_PER_DAY;
	int handed = 0;
	cr_expect_eq(tally_scan(s, "initech", day_us, day_us + TALLY_US_PER_DAY, count_event,
				&handed), TALLY_E_CORRUPT);
	expect_said(s, NULL, says, "scan");

	tally_list_request lr = {.from_us = day_us, .to_us = day_us + TALLY_US_PER_DAY,
				 .limit = 10};
	char next[TALLY_CURSOR_SIZE], err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(tally_list_events(s, "initech", &lr, count_event, &handed, next, err),
		     TALLY_E_CORRUPT);
	expect_said(s, err, says, "listing");

	err[0] = 0;
	cr_expect_eq(query_around_row(s, 16, err), TALLY_E_CORRUPT);
	expect_said(s, err, says, "query");
	cr_expect_eq(handed, 0, "no row was handed out");

	const tally_event *e = day_events("initech", DAY_NOW, INITECH_ROWS, 1);
	tally_event again[2] = {e[16], e[0]};
	again[1].event_id = S("0123456789abcdef0123456789abcdef");
	tally_ingest_result r[2];
	cr_expect_eq(tally_ingest(s, "initech", again, 2, r), TALLY_E_CORRUPT);
	expect_said(s, NULL, says, "duplicate check");
	cr_assert_eq(tally_ingest(s, "initech", &again[1], 1, r), 0);
	cr_expect_eq(r[0].code, TALLY_ACCEPTED, "the failed call stored nothing");
	cr_assert_eq(tally_store_close(s), 0);
	free(f.good);
}

/* initech's status column rewritten, with a good checksum, so that row 7
 * holds `status`. */
static void initech_status_set(file_copy *f, uint8_t status)
{
	seg_block b;
	bytebuf raw = {0}, out = {0};
	initech_column(f, TALLY_COL_STATUS, &b, &raw);
	uint8_t column[INITECH_ROWS];
	cr_assert_eq(codec_u8_decode(raw.data, raw.size, column, INITECH_ROWS), 0);
	column[7] = status;
	cr_assert_eq(codec_u8_encode(&out, column, INITECH_ROWS), 0);
	block_store(f->path, f->id, &b, out.data, out.size);
	bytebuf_free(&out);
	bytebuf_free(&raw);
}

/* Description: initech's row 7 holds status 4, 9 or 255 (the known ones
 * are 0..3), behind a good checksum. A query that reads that raw row and
 * a scan fail with TALLY_E_CORRUPT naming the status column's block, the
 * row group, the row and the status; so does a compaction, which writes
 * nothing. Before 2026-12-02 the query counted the row into a status
 * array of four (heap memory past it overwritten; a crash for 4 and 9),
 * and the compaction failed with TALLY_E_INVALID naming no input. */
Test(inspect, readers_refuse_an_unknown_status)
{
	const uint8_t bad[] = {4, 9, 255};
	for (size_t k = 0; k < sizeof(bad); k++) {
		file_copy f = initech_file_load();
		initech_status_set(&f, bad[k]);
		seg_block b = unpacked_block(f.id, TALLY_COL_STATUS);
		char says[300];
		snprintf(says, sizeof(says),
			 "%s offset %" PRIu64 ": tenant initech row group 0, row 7: unknown status %u",
			 f.path, b.offset, bad[k]);
		tally_store *s = open_store();
		char err[TALLY_ERRMSG_SIZE] = "";
		cr_expect_eq(query_around_row(s, 7, err), TALLY_E_CORRUPT, "status %u", bad[k]);
		expect_said(s, err, says, "query");
		int64_t day_us = (int64_t)DAY_NOW * TALLY_US_PER_DAY;
		int handed = 0;
		cr_expect_eq(tally_scan(s, "initech", day_us, day_us + TALLY_US_PER_DAY,
					count_event, &handed), TALLY_E_CORRUPT);
		expect_said(s, NULL, says, "scan");
		ingest_day(s, "initech", DAY_NOW - 1, 3, 0);
		cr_assert_eq(tally_flush(s), 0);
		cr_expect_eq(tally_compact(s), TALLY_E_CORRUPT, "status %u", bad[k]);
		expect_said(s, NULL, says, "compaction");
		cr_assert_eq(tally_store_close(s), 0);
		cr_expect_eq(segment_files_now(), 3, "the compaction wrote nothing");
		free(f.good);
		teardown();
		setup();
	}
}

/* Description: a segment's trailer (which no checksum covers) names a
 * footer of 2^32 - 1 bytes at an offset where offset + size wraps 2^64
 * onto the trailer's own offset. The store refuses to open with
 * TALLY_E_CORRUPT, "bad trailer", naming the trailer's offset, and verify
 * says the same. Before 2026-12-02 the sum passed the check: the open
 * reserved 4 GiB and failed with EINVAL, and verify named offset 0. */
Test(inspect, a_trailer_whose_footer_range_wraps_is_refused)
{
	build_store();
	uint64_t ids[2];
	manifest_file_ids(ids, NULL);
	char path[512];
	segment_path(path, sizeof(path), ids[0]);
	uint64_t size;
	uint8_t *data = file_bytes(path, &size);
	uint64_t trailer_offset = size - SEGMENT_TRAILER_SIZE;
	uint8_t *trailer = data + trailer_offset;
	put_le64(trailer, trailer_offset - (uint64_t)UINT32_MAX);
	memset(trailer + 8, 0xff, 4);
	file_put(path, data, size);
	char says[600];
	snprintf(says, sizeof(says), "%s offset %" PRIu64 ": bad trailer", path, trailer_offset);
	expect_segment_refused(says, "a footer range that wraps");
	free(data);
}

/* Description: the manifest's tenant entry "acme" (4 bytes) rewritten,
 * with a good checksum, as the 5 bytes "acme\0". The store refuses to
 * open (TALLY_E_CORRUPT, naming the entry), and verify reports the same.
 * Before 2026-12-02 the open read it as "acme" and its next manifest
 * rewrote the entry, while verify called it invalid. */
Test(inspect, a_tenant_name_holding_a_nul_is_refused)
{
	build_store();
	manifest_bytes m;
	manifest_file_load(dir, &m);
	size_t at = m.tenants_offset;
	cr_assert_eq(m.data[at], 4);
	cr_assert_eq(memcmp(m.data + at + 1, "acme", 4), 0);
	uint8_t *data = malloc(m.size + 1);
	cr_assert_not_null(data);
	memcpy(data, m.data, at + 5);
	data[at] = 5;
	data[at + 5] = 0;
	memcpy(data + at + 6, m.data + at + 5, m.size - at - 5);
	manifest_file_store(dir, data, m.size + 1);
	char says[600];
	snprintf(says, sizeof(says), "MANIFEST offset %zu: bad tenant entry 0", at);
	tally_store *s;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(store_try_open(&s, err), TALLY_E_CORRUPT);
	cr_expect_null(s);
	cr_expect_not_null(strstr(err, says), "open said \"%s\", not \"%s\"", err, says);
	int rc;
	problems *p = verify(&rc);
	cr_expect_eq(rc, 1);
	cr_expect_geq(find_message(p, says, NULL), 0, "verify: no problem says \"%s\"", says);
	free(data);
	free(m.data);
}
