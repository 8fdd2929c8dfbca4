/*
 * test_compact_span.c — a compaction cuts a tenant with more rows in its
 * inputs than compact_section_rows_max by time into spans, a section each,
 * the spans after its first in files of their own (store.c,
 * compaction_cut; docs/architecture.md, "Large tenants"), so its memory
 * stays bounded however large one tenant grows.
 *
 * The property test lowers the limit to tens or hundreds of rows and
 * checks, against an oracle of what was ingested, that every event is
 * there once after the compaction and after a reopen, that the spans of a
 * tenant are disjoint in time and ordered by file id, that no span passes
 * its bound, that the files of one compaction form one run (the
 * background compactor leaves them alone), and that an event sent again is
 * still found in its span.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "segment.h"
#include "store_internal.h"
#include "support/fault_io.h"
#include "support/rng.h"
#include "support/test_dir.h"
#include "tally.h"

#define NOW_US (INT64_C(1790000000) * 1000000) /* 2026-09-21 */
#define DAY_US TALLY_US_PER_DAY
#define S(x) ((tally_str){(x), (uint32_t)strlen(x)})
#define EVENTS_MAX 12000

static char dir[256];
static fault_io *fio;

static void setup(void)
{
	fio = test_dir_store_setup(dir, sizeof(dir), "span", NOW_US);
}

static void teardown(void)
{
	test_dir_store_teardown(dir, fio);
}

TestSuite(span, .init = setup, .fini = teardown, .timeout = 600);

static tally_store *open_store(uint64_t rows_max, bool background, uint32_t flush_threads)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = background;
	o.compact_files_min = 2;
	o.flush_threads = flush_threads;
	o.flush_parallel_rows_min = 1;
	o.compact_section_rows_max = rows_max;
	tally_store *s = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_store_open(dir, &o, &s, err);
	cr_assert_eq(rc, 0, "open: %s (%s)", tally_strerror(rc), err);
	return s;
}

/* What was ingested: tenant, id, time, tokens (the payload's one varying
 * field). */
typedef struct sent {
	const char *tenant;
	char id[24];
	int64_t time_us;
	uint64_t tokens;
} sent;

static sent events[EVENTS_MAX];
static uint32_t event_count;

static const char *const tenant_names[] = {"big", "huge", "mid", "t0", "t1", "t2"};
#define TENANTS (sizeof(tenant_names) / sizeof(tenant_names[0]))

static tally_event event_of(const sent *x)
{
	static const char *const models[] = {"gpt-4o", "claude", "mistral", "llama"};
	static const char *const users[] = {"u1", "u2", "u3", "u4", "u5", "u6", "u7"};
	tally_event e;
	memset(&e, 0, sizeof(e));
	e.event_id = S(x->id);
	e.time_us = x->time_us;
	e.type = S("llm.call");
	e.project = S("proj");
	e.agent = S("agent");
	e.model = S(models[x->tokens % 4]);
	e.user = S(users[x->tokens % 7]);
	e.status = TALLY_STATUS_OK;
	e.tokens_in = x->tokens;
	e.cost_micros = (int64_t)x->tokens * 3;
	return e;
}

static void ingest_range(tally_store *s, uint32_t from, uint32_t to)
{
	static tally_event e[EVENTS_MAX];
	static tally_ingest_result r[EVENTS_MAX];
	for (uint32_t i = from; i < to;) {
		uint32_t j = i, n = 0;
		for (; j < to && events[j].tenant == events[i].tenant; j++)
			e[n++] = event_of(&events[j]);
		cr_assert_eq(tally_ingest(s, events[i].tenant, e, n, r), 0);
		for (uint32_t k = 0; k < n; k++)
			cr_assert_eq(r[k].code, TALLY_ACCEPTED, "%s", events[i + k].id);
		i = j;
	}
}

/* Random events: each tenant's share, times over the last 20 days, a few
 * clusters of many events at one instant (never cut apart). */
static void events_make(test_rng *rng)
{
	event_count = 0;
	static const uint32_t share[TENANTS] = {4000, 3000, 400, 5, 30, 1};
	for (uint32_t t = 0; t < TENANTS; t++) {
		uint32_t n = 1 + share[t] / 2 + (uint32_t)test_rng_below(rng, share[t]);
		int64_t cluster = NOW_US - (int64_t)test_rng_below(rng, 20 * DAY_US);
		for (uint32_t i = 0; i < n && event_count < EVENTS_MAX; i++) {
			sent *x = &events[event_count++];
			x->tenant = tenant_names[t];
			snprintf(x->id, sizeof(x->id), "%s-%u", tenant_names[t], i);
			x->time_us = test_rng_below(rng, 8) == 0
					     ? cluster
					     : NOW_US - (int64_t)test_rng_below(rng, 20 * DAY_US);
			x->tokens = test_rng_below(rng, 1000);
		}
	}
	/* Shuffled, so every flush holds some of each tenant's days. */
	for (uint32_t i = event_count; i > 1; i--) {
		uint32_t j = (uint32_t)test_rng_below(rng, i);
		sent tmp = events[i - 1];
		events[i - 1] = events[j];
		events[j] = tmp;
	}
}

typedef struct seen {
	char id[24];
	int64_t time_us;
	uint64_t tokens;
} seen;

typedef struct seen_list {
	seen *items;
	uint32_t count;
} seen_list;

static int seen_add(void *ctx, const tally_event *e)
{
	seen_list *l = ctx;
	cr_assert_lt(l->count, EVENTS_MAX);
	seen *x = &l->items[l->count++];
	cr_assert_lt(e->event_id.len, sizeof(x->id));
	memcpy(x->id, e->event_id.ptr, e->event_id.len);
	x->id[e->event_id.len] = 0;
	x->time_us = e->time_us;
	x->tokens = e->tokens_in;
	return 0;
}

static int seen_compare(const void *a, const void *b)
{
	const seen *x = a, *y = b;
	return strcmp(x->id, y->id);
}

/* Each of the first `tenants` tenants holds exactly the events sent to it,
 * each once. */
static void expect_every_event_once_of(tally_store *s, uint32_t tenants)
{
	static seen got[EVENTS_MAX], want[EVENTS_MAX];
	for (uint32_t t = 0; t < tenants; t++) {
		seen_list l = {got, 0};
		cr_assert_eq(tally_scan(s, tenant_names[t], INT64_MIN, INT64_MAX, seen_add, &l), 0);
		uint32_t n = 0;
		for (uint32_t i = 0; i < event_count; i++)
			if (events[i].tenant == tenant_names[t]) {
				snprintf(want[n].id, sizeof(want[n].id), "%s", events[i].id);
				want[n].time_us = events[i].time_us;
				want[n++].tokens = events[i].tokens;
			}
		cr_assert_eq(l.count, n, "%s: %u events, sent %u", tenant_names[t], l.count, n);
		qsort(got, n, sizeof(*got), seen_compare);
		qsort(want, n, sizeof(*want), seen_compare);
		for (uint32_t i = 0; i < n; i++) {
			cr_assert_str_eq(got[i].id, want[i].id, "%s", tenant_names[t]);
			cr_assert_eq(got[i].time_us, want[i].time_us, "%s", got[i].id);
			cr_assert_eq(got[i].tokens, want[i].tokens, "%s", got[i].id);
		}
	}
}

static void expect_every_event_once(tally_store *s)
{
	expect_every_event_once_of(s, TENANTS);
}

static uint32_t tenant_id_of(tally_store *s, const char *name)
{
	for (uint32_t i = 0; i < s->tenant_count; i++)
		if (!strcmp(s->tenants[i]->name, name))
			return s->tenants[i]->id;
	cr_assert_fail("no tenant %s", name);
	return 0;
}

/* One section of a tenant: its file, rows and first and last times. */
typedef struct section {
	uint64_t file_id;
	uint64_t rows;
	int64_t first_us, last_us;
} section;

static uint32_t sections_of(tally_store *s, const char *name, section *out, uint32_t max)
{
	uint32_t tid = tenant_id_of(s, name), n = 0;
	rows r = {0};
	char err[TALLY_ERRMSG_SIZE];
	for (uint32_t fi = 0; fi < s->file_count; fi++) {
		segment_file *f = s->files[fi];
		int64_t ti = segment_file_find_tenant(f, tid);
		if (ti < 0)
			continue;
		cr_assert_lt(n, max);
		const seg_tenant *st = &f->tenants[ti];
		section *x = &out[n++];
		x->file_id = f->file_id;
		x->rows = 0;
		for (uint32_t g = 0; g < st->rowgroup_count; g++)
			x->rows += f->rowgroups[st->first_rowgroup + g].rows;
		uint32_t last = st->first_rowgroup + st->rowgroup_count - 1;
		cr_assert_eq(segment_read_rowgroup(f, st->first_rowgroup, 1u << TALLY_COL_TIME, &r,
						   err), 0, "%s", err);
		x->first_us = r.time_us[0];
		cr_assert_eq(segment_read_rowgroup(f, last, 1u << TALLY_COL_TIME, &r, err), 0, "%s",
			     err);
		x->last_us = r.time_us[r.count - 1];
	}
	rows_free(&r);
	return n;
}

/* The largest row group of any live file. */
static uint32_t rowgroup_rows_max(tally_store *s)
{
	uint32_t most = 0;
	for (uint32_t fi = 0; fi < s->file_count; fi++)
		for (uint32_t g = 0; g < s->files[fi]->rowgroup_count; g++)
			if (s->files[fi]->rowgroups[g].rows > most)
				most = s->files[fi]->rowgroups[g].rows;
	return most;
}

/* Description: over random events of six tenants (two of thousands of
 * events, one of hundreds, three small), ingested in 3 to 6 flushes of
 * random slices (and sometimes compacted once midway, so a compaction's
 * inputs hold spans already), with compact_section_rows_max 40 to 1,000,
 * tally_compact:
 * - keeps every event exactly once (scan against the oracle), also after
 *   a reopen;
 * - writes each tenant's sections over disjoint times, in file id order
 *   (so rows of one instant are never cut apart), the tenants of more
 *   rows than the limit in more than one, each span within its bound
 *   (rows_max plus a row group, plus one row group per input);
 * - marks every file after its first SEGMENT_FLAG_RUN_NEXT, ids
 *   consecutive, so after a reopen the background compactor (compacting
 *   at 2 files) sees one run and leaves it alone, also once a flush of
 *   20 newer events adds a small run beside it;
 * - finds an event sent again as DUPLICATE, with another payload as
 *   CONFLICT, in whichever span holds it;
 * and tally verify passes. The seed is printed. */
Test(span, a_large_tenant_is_compacted_in_time_spans_with_every_event_once)
{
	test_rng rng;
	test_rng_seed(&rng, "test_compact_span", "a_large_tenant_is_compacted_in_time_spans");
	static const uint64_t limits[] = {40, 150, 1000};
	for (int round = 0; round < 6; round++) {
		test_dir_remove_tree(dir);
		events_make(&rng);
		uint64_t rows_max = limits[test_rng_below(&rng, 3)];
		uint32_t threads = 1 + (uint32_t)test_rng_below(&rng, 2);
		tally_store *s = open_store(rows_max, false, threads);
		uint32_t flushes = 3 + (uint32_t)test_rng_below(&rng, 4), done = 0;
		uint32_t midway = (uint32_t)test_rng_below(&rng, flushes + 1);
		for (uint32_t k = 0; k < flushes; k++) {
			uint32_t to = k + 1 == flushes ? event_count
						       : done + (uint32_t)test_rng_below(
								       &rng, 2 * event_count / flushes);
			if (to > event_count)
				to = event_count;
			ingest_range(s, done, to);
			done = to;
			cr_assert_eq(tally_flush(s), 0);
			if (k == midway)
				cr_assert_eq(tally_compact(s), 0);
		}
		uint32_t inputs = s->file_count;
		uint64_t group_max = rowgroup_rows_max(s);
		uint64_t compactions = s->compaction_count;
		cr_assert_eq(tally_compact(s), 0);
		cr_assert_eq(s->compaction_count, compactions + (inputs > 1));
		expect_every_event_once(s);
		uint64_t bound = rows_max + group_max * (inputs + 1);
		for (uint32_t t = 0; t < TENANTS; t++) {
			section sec[256];
			uint32_t n = sections_of(s, tenant_names[t], sec, 256);
			uint64_t total = 0;
			for (uint32_t k = 0; k < n; k++) {
				total += sec[k].rows;
				cr_expect_leq(sec[k].rows, bound, "%s span %u", tenant_names[t], k);
				if (k)
					cr_expect_lt(sec[k - 1].last_us, sec[k].first_us,
						     "%s spans %u and %u overlap", tenant_names[t],
						     k - 1, k);
			}
			if (total > rows_max + group_max * (inputs + 1))
				cr_expect_gt(n, 1, "%s: %" PRIu64 " rows in one section", tenant_names[t],
					     total);
			if (total <= rows_max)
				cr_expect_eq(n, 1, "%s", tenant_names[t]);
		}
		for (uint32_t fi = 1; fi < s->file_count; fi++) {
			cr_expect_eq(s->files[fi]->file_id, s->files[fi - 1]->file_id + 1);
			cr_expect_eq(s->files[fi]->flags, SEGMENT_FLAG_RUN_NEXT);
		}
		cr_expect_eq(s->files[0]->flags, 0);
		uint32_t files = s->file_count;
		section big[256];
		printf("test_compact_span: rows_max %" PRIu64 ", %u threads, %u events: %u inputs, "
		       "%u files, big in %u sections\n", rows_max, threads, event_count, inputs, files,
		       sections_of(s, "big", big, 256));
		cr_assert_eq(tally_store_close(s), 0);

		/* One run after a reopen: the compactor leaves it alone. */
		s = open_store(rows_max, true, threads);
		usleep(3 * BACKGROUND_TICK_MS * 1000);
		tally_stats st;
		cr_assert_eq(tally_store_stats(s, &st), 0);
		cr_expect_eq(st.compaction_count, 0, "one compaction's files are one run");
		cr_expect_eq(st.segment_file_count, files);
		expect_every_event_once(s);

		/* Sent again: found in its span. */
		tally_event e[40];
		tally_ingest_result r[40];
		const sent *again[40];
		uint32_t n = 0;
		for (uint32_t i = 0; i < event_count && n < 40; i += 1 + event_count / 40)
			if (events[i].tenant == tenant_names[0])
				again[n++] = &events[i];
		for (uint32_t i = 0; i < n; i++) {
			e[i] = event_of(again[i]);
			if (i % 2)
				e[i].duration_ms = 7; /* another payload */
		}
		cr_assert_eq(tally_ingest(s, "big", e, n, r), 0);
		for (uint32_t i = 0; i < n; i++)
			cr_expect_eq(r[i].code, i % 2 ? TALLY_CONFLICT : TALLY_DUPLICATE, "%s",
				     again[i]->id);

		/* Newer events in a flush of their own: a run far smaller
		 * than the compaction's, which the compactor does not merge
		 * with it yet (size-tiered), and every event is still there. */
		uint32_t before = event_count;
		for (uint32_t i = 0; i < 20; i++) {
			sent *x = &events[event_count++];
			x->tenant = tenant_names[0];
			snprintf(x->id, sizeof(x->id), "late-%u", i);
			x->time_us = NOW_US - (int64_t)test_rng_below(&rng, 20 * DAY_US);
			x->tokens = i;
		}
		ingest_range(s, before, event_count);
		cr_assert_eq(tally_flush(s), 0);
		usleep(3 * BACKGROUND_TICK_MS * 1000);
		cr_assert_eq(tally_store_stats(s, &st), 0);
		cr_expect_eq(st.compaction_count, 0, "a small run beside a large one");
		cr_expect_eq(st.segment_file_count, files + 1);
		expect_every_event_once(s);
		cr_assert_eq(tally_store_close(s), 0);
		cr_expect_eq(tally_verify(dir, NULL, NULL), 0);
	}
}

static int tmp_files(void)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/segments", dir);
	int n = 0;
	DIR *d = opendir(path);
	cr_assert_not_null(d, "%s", path);
	for (struct dirent *e; (e = readdir(d));)
		n += strstr(e->d_name, ".tmp") != NULL;
	closedir(d);
	return n;
}

/* Description: a compaction whose third output file cannot be created (a
 * tenant of 2,000 events from 8 flushes, cut into spans of 100 rows, a
 * file each) fails as a whole: no later file is started, the files it
 * wrote are removed, nothing is published (the inputs stay live, the file
 * ids after them unused), every event is still there once and the store
 * takes writes; once the fault is gone the same compaction succeeds. */
/* A store of one tenant, "big": 2,000 events over ten days from 8
 * flushes (8 files), cut into spans of 100 rows by a compaction. */
static tally_store *eight_flushes_of_one_tenant(void)
{
	tally_store *s = open_store(100, false, 1);
	event_count = 0;
	for (uint32_t k = 0; k < 8; k++) {
		uint32_t from = event_count;
		for (uint32_t i = 0; i < 250; i++) {
			sent *x = &events[event_count];
			x->tenant = tenant_names[0];
			snprintf(x->id, sizeof(x->id), "f-%u", event_count);
			x->time_us = NOW_US - (int64_t)(event_count % 10) * DAY_US -
				     (int64_t)event_count * 1000;
			x->tokens = event_count++;
		}
		ingest_range(s, from, event_count);
		cr_assert_eq(tally_flush(s), 0);
	}
	cr_assert_eq(s->file_count, 8);
	return s;
}

Test(span, a_compaction_whose_later_span_file_fails_publishes_nothing)
{
	tally_store *s = eight_flushes_of_one_tenant();
	char name[64];
	segment_file_name(name, sizeof(name), s->manifest.next_file_id + 2);
	strcat(name, ".tmp");
	fault_io_open_fail(fio, name, EIO);
	fault_io_counts before, after;
	fault_io_counts_get(fio, &before);
	cr_expect_eq(tally_compact(s), -EIO);
	fault_io_counts_get(fio, &after);
	fault_io_open_fail(fio, NULL, 0);
	cr_expect_eq(after.open_count - before.open_count, 5,
		     "two files created and opened to read, the third's creation "
		     "failed and nothing after it was started");
	cr_expect_eq(s->file_count, 8, "the inputs stay live");
	cr_expect_eq(test_dir_segment_files(dir), 8, "the outputs written are removed");
	cr_expect_eq(tmp_files(), 0);
	cr_expect_eq(s->compaction_count, 0);
	expect_every_event_once_of(s, 1);

	sent *x = &events[event_count++];
	*x = (sent){.tenant = tenant_names[0], .time_us = NOW_US, .tokens = 1};
	snprintf(x->id, sizeof(x->id), "after");
	ingest_range(s, event_count - 1, event_count);

	cr_assert_eq(tally_compact(s), 0);
	cr_expect_eq(s->compaction_count, 1);
	section sec[64];
	uint32_t n = sections_of(s, "big", sec, 64);
	cr_expect_geq(n, 3, "cut into spans: %u", n);
	cr_expect_eq(s->file_count, n);
	expect_every_event_once_of(s, 1);
	cr_assert_eq(tally_store_close(s), 0);
	cr_expect_eq(tally_verify(dir, NULL, NULL), 0);
	s = open_store(100, false, 1);
	expect_every_event_once_of(s, 1);
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: a compaction into span files whose directory fsyncs fail
 * (each file's rename happened, the fsync of segments/ after it did not)
 * fails with EIO and leaves segments/ holding only the 8 live inputs: each
 * output file it renamed into place is removed again, where before each
 * stayed until a reopen, one more for every retry. Every event is still
 * there once; once the fault is gone the compaction succeeds and verify is
 * clean. */
Test(span, a_compaction_whose_directory_fsync_fails_leaves_no_file)
{
	tally_store *s = eight_flushes_of_one_tenant();
	char segments[300];
	snprintf(segments, sizeof(segments), "%s/segments", dir);
	fault_io_fsync_dir_fail_at(fio, segments, EIO);
	for (int attempt = 0; attempt < 3; attempt++) {
		cr_expect_eq(tally_compact(s), -EIO, "attempt %d", attempt);
		cr_expect_eq(s->file_count, 8, "the inputs stay live");
		cr_expect_eq(test_dir_segment_files(dir), 8, "attempt %d leaves no output behind",
			     attempt);
		cr_expect_eq(tmp_files(), 0);
	}
	fault_io_fsync_dir_fail_at(fio, NULL, 0);
	expect_every_event_once_of(s, 1);
	cr_assert_eq(tally_compact(s), 0);
	cr_expect_eq(s->compaction_count, 1);
	cr_expect_eq(test_dir_segment_files(dir), s->file_count);
	expect_every_event_once_of(s, 1);
	cr_assert_eq(tally_store_close(s), 0);
	cr_expect_eq(tally_verify(dir, NULL, NULL), 0);
}
