/*
 * test_scan.c — the pruned segment scan against a brute-force model.
 *
 * store_scan_rows_locked starts each tenant section at the row group a
 * binary search on the groups' last times finds, and stops after the
 * group that reaches the end of its range or passes the caller's bound
 * (an events listing's heap, once full). These tests build stores where
 * that matters — days of several 65,536-row groups whose rows share a few
 * instants (ties across group edges), small days sharing a row group, the
 * same days in a second file, compactions, rows left in the memtable —
 * and compare listing pages (random ranges, cursors, limits and user
 * filters) and raw scans (with and without a bound) with the model.
 * Random ids make (time, id) order differ from ingest order.
 *
 * Seeds: the seed is printed (support/rng.h); SEED=N replays it.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"
#include "support/fault_io.h"
#include "support/rng.h"
#include "support/test_dir.h"
#include "tally.h"

#define NOW_US (INT64_C(1790000000) * 1000000) /* 2026-09-21 */
#define DAY_US TALLY_US_PER_DAY
#define S(x) ((tally_str){(x), (uint32_t)strlen(x)})
#define PAGE_MAX 20

static char dir[256];
static fault_io *fio;

static void setup(void)
{
	fio = test_dir_store_setup(dir, sizeof(dir), "scan", NOW_US);
}

static void teardown(void)
{
	test_dir_store_teardown(dir, fio);
}

TestSuite(scan, .init = setup, .fini = teardown, .timeout = 300);

/* ---- randomness and the model ---------------------------------------------- */

static test_rng rng;

static uint64_t rng_next(void)
{
	return test_rng_next(&rng);
}

/* One stored event as the model keeps it. */
typedef struct model_event {
	int64_t time_us;
	char id[24];
	uint64_t tokens_in; /* the event's number: tells events apart */
	int user;           /* 0 ("u0") or 1 ("u1") */
} model_event;

static model_event *model;
static uint32_t model_count, model_capacity, event_number;

static int64_t day_start(int days_back)
{
	return (NOW_US / DAY_US - days_back) * DAY_US;
}

/* n new events of tenant acme on the day days_back before now, at
 * `instants` distinct times spread over the day (n / instants share each). */
static void ingest_day(tally_store *s, int days_back, uint32_t n, uint32_t instants)
{
	enum { BATCH = 1000 };
	static char ids[BATCH][24];
	static tally_event e[BATCH];
	static tally_ingest_result r[BATCH];
	for (uint32_t done = 0; done < n;) {
		uint32_t k = n - done < BATCH ? n - done : BATCH;
		for (uint32_t i = 0; i < k; i++) {
			if (model_count == model_capacity) {
				model_capacity = model_capacity ? model_capacity * 2 : 4096;
				model = realloc(model, sizeof(*model) * model_capacity);
				cr_assert_not_null(model);
			}
			model_event *m = &model[model_count++];
			uint32_t q = event_number++;
			snprintf(m->id, sizeof(m->id), "%08x-%u", (unsigned)((q * 2654435761u) >> 3), q);
			int64_t slot = (int64_t)(rng_next() % instants);
			m->time_us = day_start(days_back) + 1000000 + slot * (DAY_US - 2000000) / instants;
			m->tokens_in = q;
			m->user = rng_next() % 3 == 0;
			memcpy(ids[i], m->id, sizeof(m->id));
			memset(&e[i], 0, sizeof(e[i]));
			e[i].event_id = S(ids[i]);
			e[i].time_us = m->time_us;
			e[i].type = S("llm.call");
			e[i].user = m->user ? S("u1") : S("u0");
			e[i].tokens_in = m->tokens_in;
		}
		cr_assert_eq(tally_ingest(s, "acme", e, k, r), 0);
		for (uint32_t i = 0; i < k; i++)
			cr_assert_eq(r[i].code, TALLY_ACCEPTED);
		done += k;
	}
}

/* (time, id bytewise): the listing's order. The ids are NUL-free text. */
static int model_compare(const void *a, const void *b)
{
	const model_event *x = a, *y = b;
	if (x->time_us != y->time_us)
		return x->time_us < y->time_us ? -1 : 1;
	return strcmp(x->id, y->id);
}

static tally_store *store_open(void)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	tally_store *s = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_store_open(dir, &o, &s, err);
	cr_assert_eq(rc, 0, "open: %s (%s)", tally_strerror(rc), err);
	return s;
}

/* ---- the checks ---------------------------------------------------------------- */

typedef struct page {
	uint32_t count;
	uint64_t tokens_in[PAGE_MAX];
} page;

static int page_add(void *ctx, const tally_event *e)
{
	page *p = ctx;
	cr_assert_lt(p->count, PAGE_MAX);
	p->tokens_in[p->count++] = e->tokens_in;
	return 0;
}

/* A listing page of [from, to) after model event `after` (-1: the first
 * page), `limit` events, of user `user` (-1: every user), against the
 * model (sorted): the same events in order, and a next cursor exactly
 * when more follow. */
static void check_page(tally_store *s, int64_t from, int64_t to, int64_t after, uint32_t limit,
		       int user)
{
	tally_list_request req;
	memset(&req, 0, sizeof(req));
	req.from_us = from;
	req.to_us = to;
	req.limit = limit;
	char cursor[TALLY_CURSOR_SIZE];
	if (after >= 0) {
		const model_event *m = &model[after];
		int n = snprintf(cursor, sizeof(cursor), "%" PRId64 ":", m->time_us);
		for (size_t i = 0; m->id[i]; i++)
			n += snprintf(cursor + n, sizeof(cursor) - (size_t)n, "%02x", (unsigned char)m->id[i]);
		req.cursor = cursor;
	}
	if (user >= 0)
		req.user = user ? S("u1") : S("u0");
	page got = {0};
	char next[TALLY_CURSOR_SIZE] = "", err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_list_events(s, "acme", &req, page_add, &got, next, err), 0, "%s", err);
	uint32_t want = 0;
	uint64_t want_tokens[PAGE_MAX];
	bool more = false;
	for (uint32_t i = after >= 0 ? (uint32_t)after + 1 : 0; i < model_count && !more; i++) {
		if (model[i].time_us < from || model[i].time_us >= to || (user >= 0 && model[i].user != user))
			continue;
		if (want == limit)
			more = true;
		else
			want_tokens[want++] = model[i].tokens_in;
	}
	cr_assert_eq(got.count, want, "[%" PRId64 ", %" PRId64 ") after %" PRId64 ", limit %u, user %d",
		     from, to, after, limit, user);
	for (uint32_t i = 0; i < want; i++)
		cr_assert_eq(got.tokens_in[i], want_tokens[i], "[%" PRId64 ", %" PRId64 ") after %" PRId64
			     ", event %u", from, to, after, i);
	cr_assert_eq(next[0] != 0, more, "next cursor '%s'", next);
}

typedef struct scan_seen {
	int64_t from, to, bound;
	uint64_t wanted, wanted_sum; /* rows at or before bound */
} scan_seen;

static int scan_row(void *ctx, const rows *r, const strdict *const dict[DIM_COUNT], uint32_t row)
{
	(void)dict;
	scan_seen *seen = ctx;
	int64_t t = r->time_us[row];
	cr_assert(t >= seen->from && t < seen->to, "a row at %" PRId64 " outside the range", t);
	if (t <= seen->bound) {
		seen->wanted++;
		seen->wanted_sum += r->tokens_in[row];
	}
	return 0;
}

/* A raw scan of [from, to), with *bound (NULL: none): only rows in range,
 * and every row at or before the bound exactly once. */
static void check_scan(tally_store *s, int64_t from, int64_t to, const int64_t *bound)
{
	scan_seen seen = {from, to, bound ? *bound : INT64_MAX, 0, 0};
	uint64_t want = 0, want_sum = 0;
	for (uint32_t i = 0; i < model_count; i++)
		if (model[i].time_us >= from && model[i].time_us < to && model[i].time_us <= seen.bound) {
			want++;
			want_sum += model[i].tokens_in;
		}
	char err[TALLY_ERRMSG_SIZE] = "";
	uint64_t rows_read = 0;
	pthread_mutex_lock(&s->lock);
	int rc = store_scan_rows_locked(s, store_tenant_find(s, "acme"), from, to, bound, scan_row,
					&seen, &rows_read, err);
	pthread_mutex_unlock(&s->lock);
	cr_assert_eq(rc, 0, "%s", err);
	cr_assert_eq(seen.wanted, want, "[%" PRId64 ", %" PRId64 "), bound %" PRId64, from, to,
		     seen.bound);
	cr_assert_eq(seen.wanted_sum, want_sum);
}

/* `rounds` random pages (ranges: the whole week, between two events,
 * around one event, whole days), and every fourth a scan without and with
 * a bound at an event's time. */
static void check_random(tally_store *s, uint32_t rounds)
{
	qsort(model, model_count, sizeof(*model), model_compare);
	for (uint32_t k = 0; k < rounds; k++) {
		const model_event *a = &model[rng_next() % model_count];
		const model_event *b = &model[rng_next() % model_count];
		if (model_compare(a, b) > 0) {
			const model_event *swap = a;
			a = b;
			b = swap;
		}
		int64_t from, to;
		switch (rng_next() % 4) {
		case 0: from = day_start(12); to = NOW_US + 1; break;
		case 1: from = a->time_us; to = b->time_us + (int64_t)(rng_next() % 3); break;
		case 2:
			from = a->time_us - (int64_t)(rng_next() % 2);
			to = from + 1 + (int64_t)(rng_next() % (2 * (uint64_t)DAY_US));
			break;
		default:
			from = day_start((int)(rng_next() % 12));
			to = from + DAY_US * (int64_t)(1 + rng_next() % 3);
			break;
		}
		if (to <= from)
			to = from + 1;
		int64_t after = rng_next() % 3 == 0 ? -1 : (int64_t)(rng_next() % model_count);
		check_page(s, from, to, after, 1 + (uint32_t)(rng_next() % PAGE_MAX),
			   (int)(rng_next() % 3) - 1);
		if (k % 4 == 0) {
			check_scan(s, from, to, NULL);
			int64_t bound = model[rng_next() % model_count].time_us;
			check_scan(s, from, to, &bound);
		}
	}
}

/* Description: a first file with small days sharing a row group, a day of
 * 140,000 events at 7 instants (three row groups, 20,000 rows per instant,
 * ties across both group edges) and a day of 4,097 (a group of its own);
 * a second file with late events of the same days; rows in the memtable.
 * 600 random pages and 300 scans agree with the model. */
Test(scan, pages_and_scans_of_days_of_several_row_groups_match_a_model)
{
	test_rng_seed(&rng, "test_scan", "scan");
	tally_store *s = store_open();
	ingest_day(s, 7, 40, 5);
	ingest_day(s, 6, 3000, 50);
	ingest_day(s, 5, 140000, 7);
	ingest_day(s, 4, 10, 3);
	ingest_day(s, 3, 4097, 4097);
	ingest_day(s, 2, 30, 2);
	cr_assert_eq(tally_flush(s), 0);
	ingest_day(s, 6, 20, 5);
	ingest_day(s, 5, 300, 7);
	ingest_day(s, 2, 5, 2);
	cr_assert_eq(tally_flush(s), 0);
	ingest_day(s, 5, 50, 7);
	ingest_day(s, 1, 10, 3);
	pthread_mutex_lock(&s->lock);
	cr_assert_eq(s->file_count, 2);
	cr_assert_geq(s->files[0]->rowgroup_count, 5, "%u row groups", s->files[0]->rowgroup_count);
	pthread_mutex_unlock(&s->lock);
	check_random(s, 600);
	cr_assert_eq(tally_store_close(s), 0);
	free(model);
	model = NULL;
	model_count = model_capacity = 0;
}

/* Description: three random layouts, each a day of 70,000 to 140,000
 * events at 2 to 5 instants, a small day, late events of both in a second
 * file, a compaction (but in the second layout), and rows in the memtable:
 * 400 random pages and 200 scans each agree with the model. */
Test(scan, pages_and_scans_after_late_events_and_compaction_match_a_model)
{
	test_rng_seed(&rng, "test_scan", "scan");
	for (int layout = 0; layout < 3; layout++) {
		tally_store *s = store_open();
		ingest_day(s, 10 + layout, 1, 1);
		ingest_day(s, 7, 70000 + (uint32_t)(rng_next() % 70000), 2 + (uint32_t)(rng_next() % 4));
		ingest_day(s, 6, 1 + (uint32_t)(rng_next() % 5000), 3);
		cr_assert_eq(tally_flush(s), 0);
		ingest_day(s, 7, 5000, 2);
		ingest_day(s, 5, 1 + (uint32_t)(rng_next() % 300), 2);
		cr_assert_eq(tally_flush(s), 0);
		if (layout != 1)
			cr_assert_eq(tally_compact(s), 0);
		ingest_day(s, 7, 30, 2);
		check_random(s, 400);
		cr_assert_eq(tally_store_close(s), 0);
		test_dir_store_teardown(dir, fio);
		fio = test_dir_store_setup(dir, sizeof(dir), "scan", NOW_US);
		model_count = 0;
	}
	free(model);
	model = NULL;
	model_capacity = 0;
}

/* Description: everything in the active memtable, 60,000 rows (14 whole
 * blocks of MEMTABLE_TIME_BLOCK_ROWS): days ingested a few thousand events
 * at a time, out of order, with a few late events of other days among them,
 * so blocks have narrow, wide and overlapping time ranges. The first pages
 * note the blocks' ranges, the later ones skip blocks by them (outside the
 * range, or after the heap's bound once the page is full); 600 random
 * pages and 300 scans agree with the model, and the blocks were noted. */
Test(scan, pages_and_scans_of_a_large_memtable_match_a_model)
{
	test_rng_seed(&rng, "test_scan", "memtable");
	tally_store *s = store_open();
	static const int days[] = {3, 5, 4, 6, 2, 5, 1, 3, 6, 4};
	for (uint32_t k = 0; k < sizeof(days) / sizeof(days[0]); k++) {
		ingest_day(s, days[k], 5000 + (uint32_t)(rng_next() % 2000), 40);
		ingest_day(s, 1 + (int)(rng_next() % 6), 1 + (uint32_t)(rng_next() % 3), 5);
	}
	while (model_count < 14 * MEMTABLE_TIME_BLOCK_ROWS + 100)
		ingest_day(s, 2, 1000, 40);
	check_random(s, 600);
	/* Whitebox: each noted range is its block's rows' exactly. */
	enum { BLOCKS_MAX = 32 };
	time_range noted[BLOCKS_MAX];
	pthread_mutex_lock(&s->lock);
	const tenant *t = store_tenant_find(s, "acme");
	cr_assert(t && t->active && s->file_count == 0);
	const memtable *mt = t->active;
	uint32_t blocks = mt->blocks_known;
	cr_expect_eq(blocks, mt->rows.count / MEMTABLE_TIME_BLOCK_ROWS,
		     "every whole block's range noted");
	cr_assert_leq(blocks, BLOCKS_MAX);
	for (uint32_t b = 0; b < blocks; b++) {
		time_range rows_range = {INT64_MAX, INT64_MIN};
		for (uint32_t i = b * MEMTABLE_TIME_BLOCK_ROWS; i < (b + 1) * MEMTABLE_TIME_BLOCK_ROWS;
		     i++) {
			int64_t tm = mt->rows.time_us[i];
			rows_range.min_us = tm < rows_range.min_us ? tm : rows_range.min_us;
			rows_range.max_us = tm > rows_range.max_us ? tm : rows_range.max_us;
		}
		noted[b] = mt->blocks[b];
		cr_expect(noted[b].min_us == rows_range.min_us && noted[b].max_us == rows_range.max_us,
			  "block %u", b);
	}
	pthread_mutex_unlock(&s->lock);
	/* Pages and scans at each block's edges: one microsecond at its
	 * earliest and at its latest time, and a bound at its earliest. */
	for (uint32_t b = 0; b < blocks; b++) {
		int64_t lo = noted[b].min_us, hi = noted[b].max_us;
		check_page(s, lo, lo + 1, -1, PAGE_MAX, -1);
		check_page(s, hi, hi + 1, -1, PAGE_MAX, -1);
		check_scan(s, lo, lo + 1, NULL);
		check_scan(s, hi, hi + 1, NULL);
		check_scan(s, day_start(7), NOW_US, &lo);
	}
	cr_assert_eq(tally_store_close(s), 0);
	free(model);
	model = NULL;
	model_count = model_capacity = 0;
}
