/*
 * cmd_inspect.c — `tally inspect [--json] [--files] [--segments] DIR`: what a data
 * directory holds, read offline through tally_inspect (engine/tally.h).
 *
 * The engine reports totals and calls back once per (tenant, day) segment;
 * this file adds the views an operator asks for: per-tenant totals (a
 * tenant's day may have segments in several files until compaction merges
 * them, so tenants are aggregated here, in an open-addressing table keyed by
 * name), the store's time range, bytes per column with bytes per row and
 * share of the files, with --files every segment file (its format version,
 * whether it continues a run, and its segments' rows and time range), and,
 * with --segments, every segment. Text output is a
 * set of aligned tables; --json prints one object with exact integers
 * (jansson), for scripts.
 *
 * Bounds: at most TENANTS_MAX tenants, with --files FILES_MAX files and,
 * with --segments, SEGMENTS_MAX segment rows are held; past that the
 * command fails rather than grow
 * without limit. The directory must not be held by a running tallyd (the
 * engine refuses with TALLY_E_LOCKED; exit code 2).
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <xxhash.h>

#include "cli.h"
#include "format.h"
#include "tally.h"

#define TENANTS_MAX (1u << 22)
#define SEGMENTS_MAX (1u << 22)
#define RUN_FLAG_VERSION_MIN 5u /* the segment format that gave files the RUN_NEXT flag */
#define FILES_MAX (1u << 20) /* a store compacts long before: 4,096 files make ingest BUSY */
#define TENANT_NAME_WIDTH_MIN 6

typedef struct tenant_stats {
	char name[TALLY_TENANT_SIZE_MAX + 1];
	uint64_t segment_count;
	uint64_t rows;
	uint64_t stored_bytes;
	uint64_t raw_bytes;
	int64_t time_min_us;
	int64_t time_max_us;
} tenant_stats;

typedef struct segment_row {
	uint32_t tenant_index;
	int32_t day;
	uint64_t file_id;
	uint64_t rows;
	uint64_t stored_bytes;
	uint64_t raw_bytes;
	int64_t time_min_us;
	int64_t time_max_us;
} segment_row;

typedef struct file_row {
	tally_file_info info;
	int64_t time_min_us; /* its segments' first and last event; INT64_MAX / INT64_MIN: none */
	int64_t time_max_us;
} file_row;

typedef struct inspect_state {
	tenant_stats *tenants;
	size_t tenant_count;
	size_t tenant_capacity;
	uint32_t *slots; /* tenant index + 1; 0 = empty */
	size_t slot_count; /* a power of two, or 0 */
	segment_row *segments;
	size_t segment_count;
	size_t segment_capacity;
	int keep_segments;
	file_row *files;
	size_t file_count;
	size_t file_capacity;
	int keep_files;
	int have_rows;
	int64_t time_min_us;
	int64_t time_max_us;
	const char *error; /* set by the callback: why it stopped collecting */
} inspect_state;

static uint64_t name_hash(const char *name)
{
	return XXH3_64bits(name, strlen(name));
}

static int slots_grow(inspect_state *s)
{
	size_t count = s->slot_count ? s->slot_count * 2 : 64;
	uint32_t *slots = calloc(count, sizeof(*slots));
	if (!slots)
		return -1;
	for (size_t i = 0; i < s->tenant_count; i++) {
		size_t j = name_hash(s->tenants[i].name) & (count - 1);
		while (slots[j])
			j = (j + 1) & (count - 1);
		slots[j] = (uint32_t)i + 1;
	}
	free(s->slots);
	s->slots = slots;
	s->slot_count = count;
	return 0;
}

/* The index of tenant `name`, added if new; -1 when out of memory or past
 * TENANTS_MAX (s->error says which). */
static int64_t tenant_index(inspect_state *s, const char *name)
{
	if (s->slot_count) {
		size_t j = name_hash(name) & (s->slot_count - 1);
		while (s->slots[j]) {
			if (strcmp(s->tenants[s->slots[j] - 1].name, name) == 0)
				return s->slots[j] - 1;
			j = (j + 1) & (s->slot_count - 1);
		}
	}
	if (s->tenant_count == TENANTS_MAX) {
		s->error = "too many tenants for this tool's table";
		return -1;
	}
	if ((s->tenant_count + 1) * 10 > s->slot_count * 7 && slots_grow(s)) {
		s->error = "out of memory";
		return -1;
	}
	if (s->tenant_count == s->tenant_capacity) {
		size_t capacity = s->tenant_capacity ? s->tenant_capacity * 2 : 64;
		tenant_stats *tenants = realloc(s->tenants, capacity * sizeof(*tenants));
		if (!tenants) {
			s->error = "out of memory";
			return -1;
		}
		s->tenants = tenants;
		s->tenant_capacity = capacity;
	}
	tenant_stats *t = &s->tenants[s->tenant_count];
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->time_min_us = INT64_MAX;
	t->time_max_us = INT64_MIN;
	size_t j = name_hash(name) & (s->slot_count - 1);
	while (s->slots[j])
		j = (j + 1) & (s->slot_count - 1);
	s->slots[j] = (uint32_t)s->tenant_count + 1;
	return (int64_t)s->tenant_count++;
}

static void on_file(void *ctx, const tally_file_info *info)
{
	inspect_state *s = ctx;
	if (s->error)
		return;
	if (s->file_count == FILES_MAX) {
		s->error = "too many segment files to list";
		return;
	}
	if (s->file_count == s->file_capacity) {
		size_t capacity = s->file_capacity ? s->file_capacity * 2 : 64;
		file_row *files = realloc(s->files, capacity * sizeof(*files));
		if (!files) {
			s->error = "out of memory";
			return;
		}
		s->files = files;
		s->file_capacity = capacity;
	}
	s->files[s->file_count++] = (file_row){*info, INT64_MAX, INT64_MIN};
}

static void on_segment(void *ctx, const tally_segment_info *info)
{
	inspect_state *s = ctx;
	if (s->error)
		return;
	int64_t index = tenant_index(s, info->tenant);
	if (index < 0)
		return;
	tenant_stats *t = &s->tenants[index];
	t->segment_count++;
	t->rows += info->rows;
	t->stored_bytes += info->stored_bytes;
	t->raw_bytes += info->raw_bytes;
	if (info->time_min_us < t->time_min_us)
		t->time_min_us = info->time_min_us;
	if (info->time_max_us > t->time_max_us)
		t->time_max_us = info->time_max_us;
	if (!s->have_rows || info->time_min_us < s->time_min_us)
		s->time_min_us = info->time_min_us;
	if (!s->have_rows || info->time_max_us > s->time_max_us)
		s->time_max_us = info->time_max_us;
	s->have_rows = 1;
	/* A file's segments come right after it (tally_inspect_files). */
	if (s->file_count && s->files[s->file_count - 1].info.file_id == info->file_id) {
		file_row *f = &s->files[s->file_count - 1];
		if (info->time_min_us < f->time_min_us)
			f->time_min_us = info->time_min_us;
		if (info->time_max_us > f->time_max_us)
			f->time_max_us = info->time_max_us;
	}
	if (!s->keep_segments)
		return;
	if (s->segment_count == SEGMENTS_MAX) {
		s->error = "too many segments to list";
		return;
	}
	if (s->segment_count == s->segment_capacity) {
		size_t capacity = s->segment_capacity ? s->segment_capacity * 2 : 256;
		segment_row *rows = realloc(s->segments, capacity * sizeof(*rows));
		if (!rows) {
			s->error = "out of memory";
			return;
		}
		s->segments = rows;
		s->segment_capacity = capacity;
	}
	s->segments[s->segment_count++] = (segment_row){
		.tenant_index = (uint32_t)index,
		.day = info->day,
		.file_id = info->file_id,
		.rows = info->rows,
		.stored_bytes = info->stored_bytes,
		.raw_bytes = info->raw_bytes,
		.time_min_us = info->time_min_us,
		.time_max_us = info->time_max_us,
	};
}

static void state_free(inspect_state *s)
{
	free(s->tenants);
	free(s->slots);
	free(s->segments);
	free(s->files);
}

/* Sorting needs the tenant names; qsort has no context argument. */
static const tenant_stats *sort_tenants;

static int tenant_compare(const void *a, const void *b)
{
	return strcmp(((const tenant_stats *)a)->name, ((const tenant_stats *)b)->name);
}

static int segment_compare(const void *a, const void *b)
{
	const segment_row *x = a, *y = b;
	int c = strcmp(sort_tenants[x->tenant_index].name, sort_tenants[y->tenant_index].name);
	if (c)
		return c;
	if (x->day != y->day)
		return x->day < y->day ? -1 : 1;
	return (x->file_id > y->file_id) - (x->file_id < y->file_id);
}

/* Sorts segments by (tenant, day, file), then tenants by name (segment rows
 * keep pointing at the right tenant through a remap). */
static int state_sort(inspect_state *s)
{
	sort_tenants = s->tenants;
	if (s->segment_count)
		qsort(s->segments, s->segment_count, sizeof(*s->segments), segment_compare);
	if (!s->tenant_count)
		return 0;
	uint32_t *new_index = malloc(s->tenant_count * sizeof(*new_index));
	tenant_stats *sorted = malloc(s->tenant_count * sizeof(*sorted));
	if (!new_index || !sorted) {
		free(new_index);
		free(sorted);
		return -1;
	}
	memcpy(sorted, s->tenants, s->tenant_count * sizeof(*sorted));
	qsort(sorted, s->tenant_count, sizeof(*sorted), tenant_compare);
	/* Names are unique: find each old tenant's new place by binary search. */
	for (size_t i = 0; i < s->tenant_count; i++) {
		const tenant_stats *t = bsearch(&s->tenants[i], sorted, s->tenant_count,
						sizeof(*sorted), tenant_compare);
		new_index[i] = (uint32_t)(t - sorted);
	}
	for (size_t i = 0; i < s->segment_count; i++)
		s->segments[i].tenant_index = new_index[s->segments[i].tenant_index];
	free(s->tenants);
	s->tenants = sorted;
	s->tenant_capacity = s->tenant_count;
	free(new_index);
	free(s->slots); /* the table indexes the old order; no longer needed */
	s->slots = NULL;
	s->slot_count = 0;
	return 0;
}

static uint64_t column_stored_total(const tally_inspect_report *r)
{
	uint64_t total = 0;
	for (int c = 0; c < TALLY_COL_COUNT; c++)
		total += r->column_stored_bytes[c];
	return total;
}

static uint64_t column_raw_total(const tally_inspect_report *r)
{
	uint64_t total = 0;
	for (int c = 0; c < TALLY_COL_COUNT; c++)
		total += r->column_raw_bytes[c];
	return total;
}

static double per_row(uint64_t bytes, uint64_t rows)
{
	return rows ? (double)bytes / (double)rows : 0.0;
}

static double percent(uint64_t part, uint64_t whole)
{
	return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

/* ---- text output -------------------------------------------------------- */

static void print_ratio(uint64_t raw, uint64_t stored)
{
	if (stored)
		printf(" %7.2fx", (double)raw / (double)stored);
	else
		printf(" %8s", "-");
}

static void print_column_row(const char *name, uint64_t stored, const char *raw_text,
			     uint64_t raw, int has_raw, uint64_t rows, uint64_t file_bytes)
{
	char stored_text[CLI_BYTES_SIZE], raw_buffer[CLI_BYTES_SIZE];
	cli_format_bytes(stored_text, stored);
	if (has_raw)
		cli_format_bytes(raw_buffer, raw);
	printf("  %-14s %11s %11s %10.2f %6.1f%%", name, stored_text,
	       has_raw ? raw_buffer : raw_text, per_row(stored, rows), percent(stored, file_bytes));
	if (has_raw)
		print_ratio(raw, stored);
	printf("\n");
}

static int name_width(const inspect_state *s)
{
	size_t width = TENANT_NAME_WIDTH_MIN;
	for (size_t i = 0; i < s->tenant_count; i++) {
		size_t n = strlen(s->tenants[i].name);
		if (n > width)
			width = n;
	}
	return (int)width;
}

/* The run column: files before format version 5 carry no RUN_NEXT flag
 * (the compactor recognises their runs by their tenants). */
static const char *run_text(const tally_file_info *info)
{
	if (info->version < RUN_FLAG_VERSION_MIN)
		return "-";
	return info->run_next ? "next" : "first";
}

static void print_text(const char *dir, const tally_inspect_report *r, const inspect_state *s)
{
	char a[CLI_BYTES_SIZE], b[CLI_BYTES_SIZE], t0[CLI_TIME_SIZE], t1[CLI_TIME_SIZE];
	uint64_t stored = column_stored_total(r), raw = column_raw_total(r);

	printf("data directory   %s\n", dir);
	printf("manifest         version %" PRIu32 ", generation %" PRIu64 "\n", r->manifest_version,
	       r->manifest_generation);
	cli_format_bytes(a, r->file_bytes);
	printf("segment files    %" PRIu64 " (%s)\n", r->segment_file_count, a);
	printf("tenants          %zu (with rows in segments)\n", s->tenant_count);
	printf("segments         %" PRIu64 " (tenant-days, per file)\n", r->segment_count);
	printf("rows             %" PRIu64 "\n", r->rows);
	if (s->have_rows) {
		cli_format_time(t0, s->time_min_us);
		cli_format_time(t1, s->time_max_us);
		printf("time range       %s .. %s\n", t0, t1);
	} else {
		printf("time range       - (no rows in segments)\n");
	}
	cli_format_bytes(a, stored);
	cli_format_bytes(b, raw);
	printf("columns          %s stored, %s encoded before zstd", a, b);
	if (stored)
		printf(" (ratio %.2fx)", (double)raw / (double)stored);
	printf("\n");
	printf("bytes per row    %.2f on disk (whole files), %.2f in columns\n",
	       per_row(r->file_bytes, r->rows), per_row(stored, r->rows));
	cli_format_bytes(a, r->wal_bytes);
	printf("WAL              %" PRIu64 " file%s, %s; replay from LSN %" PRIu64,
	       r->wal_file_count, r->wal_file_count == 1 ? "" : "s", a, r->wal_replay_lsn);
	if (r->wal_file_id_next)
		printf("; next file id %" PRIu64 "\n", r->wal_file_id_next);
	else
		printf("; next file id not recorded (manifest version %" PRIu32 ")\n",
		       r->manifest_version);

	printf("\n  %-14s %11s %11s %10s %7s %8s\n", "column", "stored", "raw", "bytes/row",
	       "share", "ratio");
	for (int c = 0; c < TALLY_COL_COUNT; c++)
		print_column_row(tally_column_name(c), r->column_stored_bytes[c], NULL,
				 r->column_raw_bytes[c], 1, r->rows, r->file_bytes);
	print_column_row("dictionaries", r->dictionary_bytes, "-", 0, 0, r->rows, r->file_bytes);
	static const char *const rollup_names[3] = {"rollup minute", "rollup hour", "rollup day"};
	print_column_row("rollup groups", r->rollup_group_bytes, "-", 0, 0, r->rows, r->file_bytes);
	uint64_t rollup_total = r->rollup_group_bytes;
	for (int res = 0; res < 3; res++) {
		print_column_row(rollup_names[res], r->rollup_bytes[res], "-", 0, 0, r->rows,
				 r->file_bytes);
		rollup_total += r->rollup_bytes[res];
	}
	uint64_t accounted = stored + r->dictionary_bytes + rollup_total;
	uint64_t framing = r->file_bytes > accounted ? r->file_bytes - accounted : 0;
	print_column_row("file framing", framing, "-", 0, 0, r->rows, r->file_bytes);
	print_column_row("total", r->file_bytes, "-", 0, 0, r->rows, r->file_bytes);
	printf("  (share: of the segment files' bytes; file framing: headers, footers, trailers)\n");
	printf("  rollup cells: %" PRIu64 " minute, %" PRIu64 " hour, %" PRIu64 " day\n",
	       r->rollup_cells[0], r->rollup_cells[1], r->rollup_cells[2]);

	int width = name_width(s);
	printf("\n  %-*s %8s %12s %11s %11s  %-27s  %s\n", width, "tenant", "segments", "rows",
	       "stored", "raw", "first event", "last event");
	for (size_t i = 0; i < s->tenant_count; i++) {
		const tenant_stats *t = &s->tenants[i];
		cli_format_bytes(a, t->stored_bytes);
		cli_format_bytes(b, t->raw_bytes);
		cli_format_time(t0, t->time_min_us);
		cli_format_time(t1, t->time_max_us);
		printf("  %-*s %8" PRIu64 " %12" PRIu64 " %11s %11s  %-27s  %s\n", width, t->name,
		       t->segment_count, t->rows, a, b, t0, t1);
	}
	if (!s->tenant_count)
		printf("  (no segments)\n");

	if (s->keep_files) {
		printf("\n  %-16s %7s %-5s %7s %8s %12s %11s  %-27s  %s\n", "file", "version", "run",
		       "tenants", "segments", "rows", "size", "first event", "last event");
		for (size_t i = 0; i < s->file_count; i++) {
			const file_row *f = &s->files[i];
			cli_format_bytes(a, f->info.bytes);
			if (f->info.rows) {
				cli_format_time(t0, f->time_min_us);
				cli_format_time(t1, f->time_max_us);
			} else {
				snprintf(t0, sizeof(t0), "-");
				snprintf(t1, sizeof(t1), "-");
			}
			printf("  %016" PRIx64 " %7" PRIu32 " %-5s %7" PRIu32 " %8" PRIu64 " %12" PRIu64
			       " %11s  %-27s  %s\n",
			       f->info.file_id, f->info.version, run_text(&f->info),
			       f->info.tenant_count, f->info.segment_count, f->info.rows, a, t0, t1);
		}
		if (!s->file_count)
			printf("  (no segment files)\n");
		printf("  (run: next when the file continues the run of the file before it, the files\n"
		       "   one flush or compaction wrote; - before format version 5, which has no flag)\n");
	}

	if (!s->keep_segments)
		return;
	printf("\n  %-*s %-10s %-16s %10s %11s %11s  %-27s  %s\n", width, "tenant", "day",
	       "file", "rows", "stored", "raw", "first event", "last event");
	for (size_t i = 0; i < s->segment_count; i++) {
		const segment_row *g = &s->segments[i];
		char day[CLI_TIME_SIZE];
		cli_format_day(day, g->day);
		cli_format_bytes(a, g->stored_bytes);
		cli_format_bytes(b, g->raw_bytes);
		cli_format_time(t0, g->time_min_us);
		cli_format_time(t1, g->time_max_us);
		printf("  %-*s %-10s %016" PRIx64 " %10" PRIu64 " %11s %11s  %-27s  %s\n", width,
		       s->tenants[g->tenant_index].name, day, g->file_id, g->rows, a, b, t0, t1);
	}
	if (!s->segment_count)
		printf("  (no segments)\n");
}

/* ---- JSON output -------------------------------------------------------- */

/* Sets key to value (stolen); records a failure in *bad (value NULL when
 * its constructor ran out of memory). */
static void jset(json_t *object, const char *key, json_t *value, int *bad)
{
	if (!value || json_object_set_new(object, key, value))
		*bad = 1;
}

static json_t *jtime(int64_t time_us)
{
	char text[CLI_TIME_SIZE];
	cli_format_time(text, time_us);
	return json_string(text);
}

static json_t *jratio(uint64_t raw, uint64_t stored)
{
	return stored ? json_real((double)raw / (double)stored) : json_null();
}

static int print_json(const char *dir, const tally_inspect_report *r, const inspect_state *s)
{
	int bad = 0;
	uint64_t stored = column_stored_total(r), raw = column_raw_total(r);
	json_t *root = json_object();
	if (!root)
		return -1;
	jset(root, "dir", format_json_text(dir, strlen(dir)), &bad);
	jset(root, "manifest_generation", json_integer((json_int_t)r->manifest_generation), &bad);
	jset(root, "manifest_version", json_integer((json_int_t)r->manifest_version), &bad);
	jset(root, "segment_file_count", json_integer((json_int_t)r->segment_file_count), &bad);
	jset(root, "segment_count", json_integer((json_int_t)r->segment_count), &bad);
	jset(root, "tenant_count", json_integer((json_int_t)s->tenant_count), &bad);
	jset(root, "rows", json_integer((json_int_t)r->rows), &bad);
	jset(root, "file_bytes", json_integer((json_int_t)r->file_bytes), &bad);
	jset(root, "column_stored_bytes", json_integer((json_int_t)stored), &bad);
	jset(root, "column_raw_bytes", json_integer((json_int_t)raw), &bad);
	jset(root, "dictionary_bytes", json_integer((json_int_t)r->dictionary_bytes), &bad);
	static const char *const res_keys[3] = {"minute", "hour", "day"};
	json_t *rollup = json_object();
	for (int res = 0; rollup && res < 3; res++) {
		json_t *one = json_object();
		jset(one, "bytes", json_integer((json_int_t)r->rollup_bytes[res]), &bad);
		jset(one, "cells", json_integer((json_int_t)r->rollup_cells[res]), &bad);
		jset(rollup, res_keys[res], one, &bad);
	}
	jset(rollup, "group_table_bytes", json_integer((json_int_t)r->rollup_group_bytes), &bad);
	jset(root, "rollup", rollup, &bad);
	jset(root, "compression_ratio", jratio(raw, stored), &bad);
	jset(root, "file_bytes_per_row", json_real(per_row(r->file_bytes, r->rows)), &bad);
	jset(root, "time_min", s->have_rows ? jtime(s->time_min_us) : json_null(), &bad);
	jset(root, "time_max", s->have_rows ? jtime(s->time_max_us) : json_null(), &bad);
	jset(root, "time_min_us", s->have_rows ? json_integer(s->time_min_us) : json_null(), &bad);
	jset(root, "time_max_us", s->have_rows ? json_integer(s->time_max_us) : json_null(), &bad);

	json_t *wal = json_object();
	if (wal) {
		jset(wal, "file_count", json_integer((json_int_t)r->wal_file_count), &bad);
		jset(wal, "bytes", json_integer((json_int_t)r->wal_bytes), &bad);
		jset(wal, "replay_lsn", json_integer((json_int_t)r->wal_replay_lsn), &bad);
		jset(wal, "file_id_next",
		     r->wal_file_id_next ? json_integer((json_int_t)r->wal_file_id_next) : json_null(),
		     &bad);
	}
	jset(root, "wal", wal, &bad);

	json_t *columns = json_array();
	for (int c = 0; columns && c < TALLY_COL_COUNT && !bad; c++) {
		json_t *column = json_object();
		if (!column) {
			bad = 1;
			break;
		}
		uint64_t cs = r->column_stored_bytes[c], cr = r->column_raw_bytes[c];
		jset(column, "name", json_string(tally_column_name(c)), &bad);
		jset(column, "stored_bytes", json_integer((json_int_t)cs), &bad);
		jset(column, "raw_bytes", json_integer((json_int_t)cr), &bad);
		jset(column, "stored_bytes_per_row", json_real(per_row(cs, r->rows)), &bad);
		jset(column, "share_of_file_bytes", json_real(r->file_bytes ? (double)cs /
							      (double)r->file_bytes : 0.0), &bad);
		jset(column, "compression_ratio", jratio(cr, cs), &bad);
		if (json_array_append_new(columns, column))
			bad = 1;
	}
	jset(root, "columns", columns, &bad);

	json_t *tenants = json_array();
	for (size_t i = 0; tenants && i < s->tenant_count && !bad; i++) {
		const tenant_stats *t = &s->tenants[i];
		json_t *tenant = json_object();
		if (!tenant) {
			bad = 1;
			break;
		}
		jset(tenant, "name", json_string(t->name), &bad);
		jset(tenant, "segment_count", json_integer((json_int_t)t->segment_count), &bad);
		jset(tenant, "rows", json_integer((json_int_t)t->rows), &bad);
		jset(tenant, "stored_bytes", json_integer((json_int_t)t->stored_bytes), &bad);
		jset(tenant, "raw_bytes", json_integer((json_int_t)t->raw_bytes), &bad);
		jset(tenant, "time_min", jtime(t->time_min_us), &bad);
		jset(tenant, "time_max", jtime(t->time_max_us), &bad);
		if (json_array_append_new(tenants, tenant))
			bad = 1;
	}
	jset(root, "tenants", tenants, &bad);

	if (s->keep_files) {
		json_t *files = json_array();
		for (size_t i = 0; files && i < s->file_count && !bad; i++) {
			const file_row *f = &s->files[i];
			json_t *file = json_object();
			if (!file) {
				bad = 1;
				break;
			}
			int rows = f->info.rows != 0;
			jset(file, "file_id", json_integer((json_int_t)f->info.file_id), &bad);
			jset(file, "version", json_integer((json_int_t)f->info.version), &bad);
			jset(file, "run_next",
			     f->info.version >= RUN_FLAG_VERSION_MIN ? json_boolean(f->info.run_next)
								     : json_null(),
			     &bad);
			jset(file, "bytes", json_integer((json_int_t)f->info.bytes), &bad);
			jset(file, "tenant_count", json_integer((json_int_t)f->info.tenant_count), &bad);
			jset(file, "segment_count", json_integer((json_int_t)f->info.segment_count), &bad);
			jset(file, "rows", json_integer((json_int_t)f->info.rows), &bad);
			jset(file, "time_min", rows ? jtime(f->time_min_us) : json_null(), &bad);
			jset(file, "time_max", rows ? jtime(f->time_max_us) : json_null(), &bad);
			if (json_array_append_new(files, file))
				bad = 1;
		}
		jset(root, "files", files, &bad);
	}

	if (s->keep_segments) {
		json_t *segments = json_array();
		for (size_t i = 0; segments && i < s->segment_count && !bad; i++) {
			const segment_row *g = &s->segments[i];
			json_t *segment = json_object();
			if (!segment) {
				bad = 1;
				break;
			}
			char day[CLI_TIME_SIZE];
			cli_format_day(day, g->day);
			jset(segment, "tenant", json_string(s->tenants[g->tenant_index].name), &bad);
			jset(segment, "day", json_string(day), &bad);
			jset(segment, "file_id", json_integer((json_int_t)g->file_id), &bad);
			jset(segment, "rows", json_integer((json_int_t)g->rows), &bad);
			jset(segment, "stored_bytes", json_integer((json_int_t)g->stored_bytes), &bad);
			jset(segment, "raw_bytes", json_integer((json_int_t)g->raw_bytes), &bad);
			jset(segment, "time_min", jtime(g->time_min_us), &bad);
			jset(segment, "time_max", jtime(g->time_max_us), &bad);
			if (json_array_append_new(segments, segment))
				bad = 1;
		}
		jset(root, "segments", segments, &bad);
	}

	if (!bad && json_dumpf(root, stdout, JSON_INDENT(2)) == 0)
		printf("\n");
	else
		bad = 1;
	json_decref(root);
	return bad ? -1 : 0;
}

/* ---- the command -------------------------------------------------------- */

static int inspect_run(const cli_command *command, int argc, char **argv)
{
	static const struct option options[] = {
		{"json", no_argument, NULL, 'j'},
		{"segments", no_argument, NULL, 's'},
		{"files", no_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int json = 0, segments = 0, files = 0, opt;
	opterr = 0;
	optind = 0; /* glibc: a full reset, so commands can parse in turn */
	uint64_t seen = 0;
	while ((opt = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
		if (cli_option_once(command, options, opt, NULL, &seen))
			return CLI_EXIT_FAILURE;
		switch (opt) {
		case 'j': json = 1; break;
		case 's': segments = 1; break;
		case 'f': files = 1; break;
		case 'h': cli_command_help(command); return CLI_EXIT_OK;
		default: return cli_option_error(command, argc, argv, opt);
		}
	}
	if (optind == argc)
		return cli_usage_error(command, "missing the data directory");
	if (argc - optind > 1)
		return cli_usage_error(command, "unexpected argument '%s'", argv[optind + 1]);
	const char *dir = argv[optind];

	inspect_state state;
	memset(&state, 0, sizeof(state));
	state.keep_segments = segments;
	state.keep_files = files;
	tally_inspect_report report;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_inspect_files(dir, &report, files ? on_file : NULL, on_segment, &state, errmsg);
	if (rc) {
		fprintf(stderr, "tally inspect: cannot inspect %s: %s\n", dir,
			errmsg[0] ? errmsg : tally_strerror(rc));
		if (rc == TALLY_E_CORRUPT || rc == TALLY_E_VERSION)
			fprintf(stderr, "tally inspect: run 'tally verify %s' to list every problem\n",
				dir);
		state_free(&state);
		return CLI_EXIT_FAILURE;
	}
	if (!state.error && state_sort(&state))
		state.error = "out of memory";
	if (state.error) {
		fprintf(stderr, "tally inspect: %s: %s\n", dir, state.error);
		state_free(&state);
		return CLI_EXIT_FAILURE;
	}
	int code = CLI_EXIT_OK;
	if (json) {
		if (print_json(dir, &report, &state)) {
			fprintf(stderr, "tally inspect: could not build the JSON output\n");
			code = CLI_EXIT_FAILURE;
		}
	} else {
		print_text(dir, &report, &state);
	}
	state_free(&state);
	return code;
}

const cli_command cli_command_inspect = {
	.name = "inspect",
	.synopsis = "inspect [--json] [--files] [--segments] DIR",
	.summary = "what a data directory holds: tenants, rows, bytes per column, time ranges",
	.help =
		"Reads the manifest and every segment file of DIR offline; DIR must not be\n"
		"held by a running tallyd.\n"
		"\n"
		"Prints the segment files, tenants, (tenant, day) segments and rows; the time\n"
		"range of the stored events (RFC 3339, UTC); for each column the stored\n"
		"(zstd) and raw (encoded) bytes, stored bytes per row, share of the segment\n"
		"files and compression ratio; per-tenant totals; and the WAL files and bytes\n"
		"(events not yet flushed to segments live there), the LSN the WAL is replayed\n"
		"from and the id the next WAL file gets (both from the manifest).\n"
		"\n"
		"options:\n"
		"  --json       one JSON object with exact integers, for scripts\n"
		"  --files      also list every segment file: id, format version, run\n"
		"               (first, or next: written by the same flush or compaction\n"
		"               as the file before it), tenants, segments, rows, size,\n"
		"               time range\n"
		"  --segments   also list every segment: tenant, day, file, rows, bytes,\n"
		"               time range\n"
		"  -h, --help   this text\n"
		"\n"
		"exit codes: 0 printed; 2 usage error, or DIR could not be inspected (locked,\n"
		"not a tally data directory, damaged: then run 'tally verify DIR').\n",
	.run = inspect_run,
};
