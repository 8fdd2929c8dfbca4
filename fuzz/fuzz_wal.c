/*
 * fuzz_wal.c — libFuzzer target for crash recovery: a store opened on a
 * WAL whose records all have good checksums and consecutive LSNs, so what
 * reaches the replay is what a writer bug or a crafted file could put in
 * a record's payload.
 *
 * The input is a list of records, each a type byte, a u32 little-endian
 * payload size and the payload (a size past the input's end takes what is
 * left). The target writes them as DIR/wal/0000000000000001.wal in the
 * format the engine writes today, version 2 (header with a fixed salt,
 * LSNs from 1, checksums keyed with the salt, padding: docs/formats.md,
 * "WAL"; version 1 differs only in its header and seed) beside an empty
 * MANIFEST, in a fresh directory under /dev/shm, and opens the store
 * without background threads. The replay either refuses the WAL
 * (TALLY_E_CORRUPT, naming the record) or takes it; then the target
 * flushes what it took, closes the store, and runs tally_verify on the
 * directory, then reopens it. A finding is a sanitizer report, a crash,
 * or a replay that was taken and then flushed into files that verify
 * finds damaged, that do not reopen, that hold other than the events the
 * replay took, or that answer dashboard queries other than the memtables
 * did before the flush (the target aborts): whatever a replay accepts, the
 * engine must write consistent files from it, lose none of it, and give
 * the same answers from live rollups and from rollup pages.
 *
 * Seeds (fuzz/corpus-wal/) are real WAL records, extracted by
 * fuzz/wal_seed.c from the WAL of a store that was ingested into and not
 * flushed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "endian.h"
#include "fuzz_dir.h"
#include "manifest.h"
#include "tally.h"

#define FUZZ_WAL_FILE_ID 1
#define FUZZ_WAL_SALT 0x5a17ed5a17ed5a17ull
#define WAL_HEADER_SIZE 40
#define RECORD_HEADER_SIZE 24

static char dir[64];

/* The WAL file of the input's records; 0, or -1 when it cannot be written. */
static int write_wal(const uint8_t *data, size_t size)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/wal", dir);
	if (mkdir(path, 0755))
		return -1;
	snprintf(path, sizeof(path), "%s/wal/%016x.wal", dir, FUZZ_WAL_FILE_ID);
	FILE *out = fopen(path, "wb");
	if (!out)
		return -1;
	uint8_t header[WAL_HEADER_SIZE] = {0};
	memcpy(header, "TLYWAL01", 8);
	le_put_u32(header + 8, 2);
	le_put_u64(header + 16, FUZZ_WAL_FILE_ID);
	le_put_u64(header + 24, 1); /* first LSN */
	le_put_u64(header + 32, FUZZ_WAL_SALT);
	/* [12, 16): the low half of XXH3 over the header with these 4 bytes zero */
	le_put_u32(header + 12, (uint32_t)XXH3_64bits(header, sizeof(header)));
	int bad = fwrite(header, 1, sizeof(header), out) != sizeof(header);
	uint8_t *record = NULL;
	size_t at = 0;
	for (uint64_t lsn = 1; at + 5 <= size && !bad; lsn++) {
		uint8_t type = data[at];
		size_t n = le_get_u32(data + at + 1);
		at += 5;
		if (n > size - at)
			n = size - at;
		size_t padded = (n + 7) & ~(size_t)7;
		uint8_t *grown = realloc(record, RECORD_HEADER_SIZE + padded);
		if (!grown) {
			bad = 1;
			break;
		}
		record = grown;
		memset(record, 0, RECORD_HEADER_SIZE + padded);
		le_put_u64(record + 8, lsn);
		le_put_u32(record + 16, (uint32_t)n);
		record[20] = type;
		memcpy(record + RECORD_HEADER_SIZE, data + at, n);
		le_put_u64(record, XXH3_64bits_withSeed(record + 8, 16 + n,
							FUZZ_WAL_FILE_ID ^ FUZZ_WAL_SALT));
		bad = fwrite(record, 1, RECORD_HEADER_SIZE + padded, out) != RECORD_HEADER_SIZE + padded;
		at += n;
	}
	free(record);
	if (fclose(out))
		bad = 1;
	return bad ? -1 : 0;
}

/* ---- the same questions before the flush and after the reopen ---------- */

#define CHECKED_TENANTS 8

typedef struct tenant_list {
	uint32_t count;
	char name[CHECKED_TENANTS][TALLY_TENANT_SIZE_MAX + 1];
} tenant_list;

static void add_tenant(void *ctx, const char *tenant)
{
	tenant_list *l = ctx;
	if (l->count < CHECKED_TENANTS)
		snprintf(l->name[l->count++], sizeof(l->name[0]), "%s", tenant);
}

typedef struct time_span {
	int64_t min, max;
	uint64_t events;
} time_span;

static int span_event(void *ctx, const tally_event *e)
{
	time_span *t = ctx;
	t->min = e->time_us < t->min ? e->time_us : t->min;
	t->max = e->time_us > t->max ? e->time_us : t->max;
	t->events++;
	return 0;
}

static void print_result(FILE *out, const tally_result *r, uint32_t quantiles)
{
	for (size_t i = 0; i < r->row_count; i++) {
		const tally_row *w = &r->rows[i];
		fprintf(out, "%lld %lld", (long long)w->bucket_start_us, (long long)w->bucket_end_us);
		for (int d = 0; d < TALLY_DIM_COUNT; d++)
			fprintf(out, " [%.*s]", (int)w->group[d].len, w->group[d].ptr ? w->group[d].ptr : "");
		fprintf(out, " %llu %llu %llu %lld %llu %u %u", (unsigned long long)w->count,
			(unsigned long long)w->tokens_in, (unsigned long long)w->tokens_out,
			(long long)w->cost_micros, (unsigned long long)w->duration_ms_sum,
			w->duration_ms_min, w->duration_ms_max);
		for (int k = 0; k < TALLY_STATUS_COUNT; k++)
			fprintf(out, " %llu", (unsigned long long)w->status_count[k]);
		for (uint32_t k = 0; k < quantiles; k++)
			fprintf(out, " %a", w->quantile_ms[k]);
		fprintf(out, " %llu\n", (unsigned long long)w->distinct_users);
	}
}

/*
 * The answers of the first CHECKED_TENANTS tenants (by name) to two
 * dashboard questions over whole UTC days covering their events: per day
 * by model and status with quantiles and distinct users, and over the
 * whole range by agent with a quantile (a projection's path). Whole days
 * keep minute retention out of it. Returns a malloc-ed text, NULL when
 * memory ran out.
 */
static char *answers(tally_store *s)
{
	tenant_list l = {0};
	tally_tenants(s, add_tenant, &l);
	qsort(l.name, l.count, sizeof(l.name[0]), (int (*)(const void *, const void *))strcmp);
	char *text = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&text, &size);
	if (!out)
		return NULL;
	for (uint32_t t = 0; t < l.count; t++) {
		time_span span = {INT64_MAX, INT64_MIN, 0};
		fprintf(out, "tenant %s: ", l.name[t]);
		if (tally_scan(s, l.name[t], INT64_MIN, INT64_MAX, span_event, &span) || !span.events ||
		    span.min < -(INT64_MAX / 4) || span.max > INT64_MAX / 4) {
			fprintf(out, "no range\n");
			continue;
		}
		int64_t from = span.min / TALLY_US_PER_DAY - (span.min % TALLY_US_PER_DAY < 0);
		from *= TALLY_US_PER_DAY;
		int64_t to = (span.max / TALLY_US_PER_DAY - (span.max % TALLY_US_PER_DAY < 0) + 1) *
			     TALLY_US_PER_DAY;
		if (to - from > TALLY_QUERY_RANGE_MAX_US)
			to = from + TALLY_QUERY_RANGE_MAX_US;
		fprintf(out, "%llu events\n", (unsigned long long)span.events);
		tally_query q[2] = {
			{.from_us = from, .to_us = to, .bucket = TALLY_BUCKET_DAY,
			 .group_by = 1u << TALLY_DIM_MODEL | 1u << TALLY_DIM_STATUS,
			 .quantiles = {0.5, 0.95}, .quantile_count = 2, .distinct_users = true},
			{.from_us = from, .to_us = to, .bucket = TALLY_BUCKET_NONE,
			 .group_by = 1u << TALLY_DIM_AGENT, .quantiles = {0.99}, .quantile_count = 1},
		};
		for (int k = 0; k < 2; k++) {
			tally_result *r = NULL;
			char errmsg[TALLY_ERRMSG_SIZE] = "";
			int rc = tally_query_run(s, l.name[t], &q[k], &r, errmsg);
			if (rc)
				fprintf(out, "query %d: %d %s\n", k, rc, errmsg);
			else
				print_result(out, r, q[k].quantile_count);
			tally_result_free(r);
		}
	}
	if (fclose(out)) {
		free(text);
		return NULL;
	}
	return text;
}

static void problem(void *ctx, const char *message)
{
	(void)ctx;
	fprintf(stderr, "fuzz_wal: verify: %s\n", message);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	snprintf(dir, sizeof(dir), "/dev/shm/fuzz-wal-%d", (int)getpid());
	fuzz_remove_tree(dir);
	if (mkdir(dir, 0755))
		return 0;
	manifest m;
	memset(&m, 0, sizeof(m));
	m.wal_replay_lsn = 1;
	m.next_file_id = 1;
	m.wal_file_id_next = 1;
	char errmsg[TALLY_ERRMSG_SIZE];
	if (manifest_write(tally_io_default(), dir, &m, errmsg) || write_wal(data, size)) {
		fuzz_remove_tree(dir);
		return 0;
	}
	tally_options o;
	tally_options_default(&o);
	o.background = false;
	tally_store *s = NULL;
	if (!tally_store_open(dir, &o, &s, errmsg)) {
		tally_stats before;
		int rc = tally_store_stats(s, &before);
		char *answered = answers(s); /* from the memtables' live rollups */
		int flushed = tally_flush(s);
		int closed = tally_store_close(s);
		if (!rc && !flushed && !closed) {
			int problems = tally_verify(dir, problem, NULL);
			if (problems > 0) {
				fprintf(stderr, "fuzz_wal: the replay was taken, and verify found %d problems in "
					"what the flush wrote\n", problems);
				abort();
			}
			/* Reopened, the store holds in segments exactly what the
			 * replay took, and nothing is left to replay. */
			tally_stats after;
			if (!tally_store_open(dir, &o, &s, errmsg)) {
				rc = tally_store_stats(s, &after);
				if (!rc && (after.segment_rows != before.events_memtable + before.segment_rows ||
					    after.events_memtable != 0)) {
					fprintf(stderr, "fuzz_wal: the replay took %llu events; after the flush and "
						"a reopen %llu are in segments and %llu in memtables\n",
						(unsigned long long)before.events_memtable,
						(unsigned long long)after.segment_rows,
						(unsigned long long)after.events_memtable);
					abort();
				}
				/* From the segment files' rollup pages: the same answers. */
				char *again = answered ? answers(s) : NULL;
				if (answered && again && strcmp(answered, again) != 0) {
					fprintf(stderr, "fuzz_wal: queries answered differently after the flush\n"
						"before:\n%s\nafter:\n%s\n", answered, again);
					abort();
				}
				free(again);
				tally_store_close(s);
			} else {
				fprintf(stderr, "fuzz_wal: the flushed store does not reopen: %s\n", errmsg);
				abort();
			}
		}
		free(answered);
	}
	fuzz_remove_tree(dir);
	return 0;
}
