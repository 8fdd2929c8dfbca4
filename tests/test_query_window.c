/*
 * test_query_window.c — a query in one bucket, grouped, in the default
 * order answers its page however many groups its range holds (query.c,
 * query_window): an attempt that stops at the cells limit narrows the
 * window to the limit-th smallest group it built, and the next attempt
 * builds only the groups between the cursor and that bound.
 *
 * The property test lowers the store's cells limit (store_internal.h,
 * query_cells_max) below the number of groups and pages through random
 * events, in segment files and the memtable, against a brute-force
 * oracle; another ingests more groups than TALLY_QUERY_CELLS_MAX itself.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
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
#define MINUTE_US (INT64_C(60) * 1000000)
#define S(x) ((tally_str){(x), (uint32_t)strlen(x)})

static char dir[256];
static fault_io *fio;

static void setup(void)
{
	fio = test_dir_store_setup(dir, sizeof(dir), "window", NOW_US);
}

static void teardown(void)
{
	test_dir_store_teardown(dir, fio);
}

TestSuite(window, .init = setup, .fini = teardown, .timeout = 600);

static tally_store *open_store(void)
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

static void ingest(tally_store *s, const tally_event *e, size_t count)
{
	static tally_ingest_result r[TALLY_BATCH_EVENTS_MAX];
	for (size_t first = 0; first < count; first += TALLY_BATCH_EVENTS_MAX) {
		size_t n = count - first < TALLY_BATCH_EVENTS_MAX ? count - first : TALLY_BATCH_EVENTS_MAX;
		int rc = tally_ingest(s, "acme", e + first, n, r);
		cr_assert_eq(rc, 0, "ingest: %s (%s)", tally_strerror(rc), tally_store_errmsg(s));
		for (size_t i = 0; i < n; i++)
			cr_assert_eq(r[i].code, TALLY_ACCEPTED, "event %zu: %s (%s)", first + i,
				     tally_result_name(r[i].code), tally_reason_text(r[i].reason));
	}
}

static int str_cmp(tally_str a, tally_str b)
{
	uint32_t n = a.len < b.len ? a.len : b.len;
	int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
	return c ? c : a.len < b.len ? -1 : a.len > b.len;
}

/* ---- random events and their oracle ------------------------------------------ */

enum { PROP_EVENTS = 3000, PROP_ROUNDS = 8, PROP_PAGES_MAX = 40 };

static char prop_ids[PROP_EVENTS][16];
static char prop_names[PROP_EVENTS][3][8];
static tally_event prop_events[PROP_EVENTS];

/* One oracle row: the grouped dimensions' values and what it adds up. */
typedef struct orow {
	tally_str group[TALLY_DIM_COUNT];
	uint64_t count, tokens_in;
	int64_t cost;
} orow;

static uint32_t oracle_group_by;

static tally_str event_value(const tally_event *e, int d)
{
	switch (d) {
	case TALLY_DIM_PROJECT: return e->project;
	case TALLY_DIM_AGENT: return e->agent;
	case TALLY_DIM_MODEL: return e->model;
	case TALLY_DIM_TYPE: return e->type;
	default: return S(tally_status_name((int)e->status));
	}
}

static int orow_cmp(const void *a, const void *b)
{
	const orow *x = a, *y = b;
	for (int d = 0; d < TALLY_DIM_COUNT; d++) {
		if (!(oracle_group_by & (1u << d)))
			continue;
		int c = str_cmp(x->group[d], y->group[d]);
		if (c)
			return c;
	}
	return 0;
}

/* The rows of the events in [from, to) whose model passes (all when
 * model_filter is NULL), by group, in the default order. */
static orow *oracle(int64_t from, int64_t to, uint32_t group_by, const char *model_filter,
		    size_t *count)
{
	oracle_group_by = group_by;
	orow *grouped = calloc(PROP_EVENTS, sizeof(*grouped));
	cr_assert_not_null(grouped);
	size_t n = 0;
	for (size_t i = 0; i < PROP_EVENTS; i++) {
		const tally_event *e = &prop_events[i];
		if (e->time_us < from || e->time_us >= to)
			continue;
		if (model_filter && str_cmp(e->model, S(model_filter)))
			continue;
		orow r = {0};
		for (int d = 0; d < TALLY_DIM_COUNT; d++)
			if (group_by & (1u << d))
				r.group[d] = event_value(e, d);
		size_t k = 0;
		while (k < n && orow_cmp(&grouped[k], &r))
			k++;
		if (k == n)
			grouped[n++] = r;
		grouped[k].count++;
		grouped[k].tokens_in += e->tokens_in;
		grouped[k].cost += e->cost_micros;
	}
	qsort(grouped, n, sizeof(*grouped), orow_cmp);
	*count = n;
	return grouped;
}

/* ---- pages against the oracle ---------------------------------------------------- */

/* Checks the page after `after` (NULL: the first) of at most limit rows,
 * with the store's cells limit at cells_max, against rows [from, ...) of
 * the oracle's n. Returns the rows it held. */
static size_t page_check(tally_store *s, tally_query *q, const orow *want, size_t n, size_t from,
			 const orow *after, uint32_t cells_max, uint64_t seed, int round)
{
	q->after = after != NULL;
	if (after)
		memcpy(q->after_group, after->group, sizeof(q->after_group));
	s->query_cells_max = cells_max;
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_query_run(s, "acme", q, &res, err);
	cr_assert_eq(rc, 0, "seed=%" PRIu64 " round %d: the page at row %zu of %zu (limit %u, cells "
			    "max %u): %s (%s)",
		     seed, round, from, n, q->limit, cells_max, tally_strerror(rc), err);
	size_t expect = n - from < q->limit ? n - from : q->limit;
	cr_assert_eq(res->row_count, expect, "seed=%" PRIu64 " round %d: row %zu of %zu, limit %u",
		     seed, round, from, n, q->limit);
	cr_assert_eq(res->truncated, from + expect < n, "seed=%" PRIu64 " round %d: row %zu", seed,
		     round, from);
	for (size_t i = 0; i < expect; i++) {
		const tally_row *got = &res->rows[i];
		const orow *w = &want[from + i];
		for (int d = 0; d < TALLY_DIM_COUNT; d++)
			cr_assert(!str_cmp(got->group[d], w->group[d]),
				  "seed=%" PRIu64 " round %d: row %zu, dimension %s: got %.*s, want %.*s",
				  seed, round, from + i, tally_dim_name(d), (int)got->group[d].len,
				  got->group[d].ptr, (int)w->group[d].len, w->group[d].ptr);
		cr_assert_eq(got->count, w->count, "seed=%" PRIu64 " round %d: row %zu", seed, round,
			     from + i);
		cr_assert_eq(got->tokens_in, w->tokens_in, "seed=%" PRIu64 " round %d: row %zu", seed,
			     round, from + i);
		cr_assert_eq(got->cost_micros, w->cost, "seed=%" PRIu64 " round %d: row %zu", seed,
			     round, from + i);
	}
	tally_result_free(res);
	s->query_cells_max = TALLY_QUERY_CELLS_MAX;
	return expect;
}

/* Description: random events of one tenant-day (8 projects, 40 agents, 3
 * models, 2 types, 4 statuses: up to 7,680 groups), a third in each of two
 * segment files (one compacted, at random) and a third in the memtable.
 * Each round picks a range inside the day (raw edges and minute and hour
 * cells around whole hours), a random non-empty set of dimensions to group
 * by, a model filter half the time, a limit and a cells limit below the
 * number of groups (at least sqrt(8 x limit x groups), so a window narrows
 * in a few attempts), then pages through the first PROP_PAGES_MAX pages
 * and, from a random row near the end, to the last: every page equals the
 * oracle's rows (values, count, tokens, cost) and is truncated exactly
 * when rows follow. Before windows, every page whose groups after the
 * cursor passed the cells limit was TALLY_E_LIMIT. */
Test(window, pages_past_the_cells_limit_match_the_oracle)
{
	test_rng rng;
	test_rng_seed(&rng, "test_query_window", "pages_past_the_cells_limit_match_the_oracle");
	uint64_t seed = rng.state;
	int64_t day = (NOW_US / DAY_US - 1) * DAY_US;
	for (size_t i = 0; i < PROP_EVENTS; i++) {
		tally_event *e = &prop_events[i];
		memset(e, 0, sizeof(*e));
		snprintf(prop_ids[i], sizeof(prop_ids[i]), "w-%zu", i);
		snprintf(prop_names[i][0], 8, "p%" PRIu64, test_rng_below(&rng, 8));
		snprintf(prop_names[i][1], 8, "a%02" PRIu64, test_rng_below(&rng, 40));
		snprintf(prop_names[i][2], 8, "m%" PRIu64, test_rng_below(&rng, 3));
		e->event_id = S(prop_ids[i]);
		e->time_us = day + (int64_t)test_rng_below(&rng, (uint64_t)DAY_US);
		e->project = S(prop_names[i][0]);
		e->agent = S(prop_names[i][1]);
		e->model = S(prop_names[i][2]);
		const char *type = test_rng_below(&rng, 2) ? "llm.call" : "tool.call";
		e->type = S(type); /* (S evaluates its argument twice) */
		e->status = (uint32_t)test_rng_below(&rng, TALLY_STATUS_COUNT);
		e->tokens_in = test_rng_below(&rng, 100000);
		e->cost_micros = (int64_t)test_rng_below(&rng, 1000000) - 1000;
		e->duration_ms = (uint32_t)test_rng_below(&rng, 5000);
	}
	tally_store *s = open_store();
	ingest(s, prop_events, PROP_EVENTS / 3);
	cr_assert_eq(tally_flush(s), 0);
	ingest(s, prop_events + PROP_EVENTS / 3, PROP_EVENTS / 3);
	cr_assert_eq(tally_flush(s), 0);
	if (test_rng_below(&rng, 2))
		cr_assert_eq(tally_compact(s), 0);
	ingest(s, prop_events + 2 * (PROP_EVENTS / 3), PROP_EVENTS - 2 * (PROP_EVENTS / 3));

	int narrowed_pages = 0;
	for (int round = 0; round < PROP_ROUNDS; round++) {
		tally_query q;
		memset(&q, 0, sizeof(q));
		q.from_us = day + (int64_t)test_rng_below(&rng, 3 * 3600) * 1000000 +
			    (int64_t)test_rng_below(&rng, 1000000);
		q.to_us = day + DAY_US - (int64_t)test_rng_below(&rng, 3 * 3600) * 1000000;
		q.bucket = TALLY_BUCKET_NONE;
		while (!q.group_by)
			q.group_by = (uint32_t)test_rng_below(&rng, 1u << TALLY_DIM_COUNT);
		const char *model = test_rng_below(&rng, 2) ? "m1" : NULL;
		tally_str model_value = model ? S(model) : (tally_str){0};
		tally_filter f = {TALLY_DIM_MODEL, &model_value, 1};
		if (model) {
			q.filters = &f;
			q.filter_count = 1;
		}
		size_t n;
		orow *want = oracle(q.from_us, q.to_us, q.group_by, model, &n);
		cr_assert_gt(n, 0);
		q.limit = 1 + (uint32_t)test_rng_below(&rng, n < 20 ? n : 20);
		uint32_t cells_lo = (uint32_t)ceil(sqrt(8.0 * q.limit * (double)n));
		if (cells_lo <= q.limit)
			cells_lo = q.limit + 1;
		printf("round %d: group_by 0x%x, %zu groups, limit %u, cells max from %u\n", round,
		       q.group_by, n, q.limit, cells_lo);
		size_t at = 0;
		const orow *after = NULL;
		for (int page = 0; page < PROP_PAGES_MAX && at < n; page++) {
			uint32_t cells = cells_lo + (uint32_t)test_rng_below(&rng, n > cells_lo ? n - cells_lo : 1);
			narrowed_pages += n - at > cells;
			at += page_check(s, &q, want, n, at, after, cells, seed, round);
			after = &want[at - 1];
		}
		if (at < n) { /* on from a random row near the end */
			at = n - 1 - (size_t)test_rng_below(&rng, 3 * q.limit < n ? 3 * q.limit : n);
			after = &want[at];
			at++;
			while (at < n) {
				at += page_check(s, &q, want, n, at, after, cells_lo, seed, round);
				after = &want[at - 1];
			}
		}
		free(want);
	}
	printf("%d pages had more groups after their cursor than the cells limit\n", narrowed_pages);
	cr_expect_gt(narrowed_pages, 0);
	tally_store_close(s);
}

/* ---- past TALLY_QUERY_CELLS_MAX itself ------------------------------------------- */

enum { BIG_PROJECTS = 100, BIG_AGENTS = 10001, BIG_BATCH = 50000, BIG_LIMIT = 1000 };

static char big_ids[BIG_BATCH][16];
static char big_names[BIG_BATCH][2][8];
static tally_event big_events[BIG_BATCH];

/* The page of group_by project and agent after (project pa, agent aa), or
 * the first with pa < 0: BIG_LIMIT rows of count 1 from (pb, ab) on. */
static void big_page(tally_store *s, int64_t day, int pa, int aa, int pb, int ab, bool truncated)
{
	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = day;
	q.to_us = day + DAY_US;
	q.bucket = TALLY_BUCKET_NONE;
	q.group_by = 1u << TALLY_DIM_PROJECT | 1u << TALLY_DIM_AGENT;
	q.limit = BIG_LIMIT;
	char after_project[8], after_agent[8];
	if (pa >= 0) {
		snprintf(after_project, sizeof(after_project), "p%02d", pa);
		snprintf(after_agent, sizeof(after_agent), "a%05d", aa);
		q.after = true;
		q.after_group[TALLY_DIM_PROJECT] = S(after_project);
		q.after_group[TALLY_DIM_AGENT] = S(after_agent);
	}
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_query_run(s, "acme", &q, &res, err);
	cr_assert_eq(rc, 0, "after p%02d/a%05d: %s (%s)", pa, aa, tally_strerror(rc), err);
	cr_assert_eq(res->row_count, BIG_LIMIT);
	cr_expect_eq(res->truncated, truncated);
	for (size_t i = 0; i < res->row_count; i++) {
		char want_project[8], want_agent[8];
		snprintf(want_project, sizeof(want_project), "p%02d", pb);
		snprintf(want_agent, sizeof(want_agent), "a%05d", ab);
		const tally_row *r = &res->rows[i];
		cr_assert(!str_cmp(r->group[TALLY_DIM_PROJECT], S(want_project)) &&
				  !str_cmp(r->group[TALLY_DIM_AGENT], S(want_agent)),
			  "row %zu: got %.*s/%.*s, want %s/%s", i, (int)r->group[TALLY_DIM_PROJECT].len,
			  r->group[TALLY_DIM_PROJECT].ptr, (int)r->group[TALLY_DIM_AGENT].len,
			  r->group[TALLY_DIM_AGENT].ptr, want_project, want_agent);
		cr_assert_eq(r->count, 1, "row %zu", i);
		if (++ab == BIG_AGENTS) {
			ab = 0;
			pb++;
		}
	}
	tally_result_free(res);
}

/* Description: one tenant-day of 1,000,100 groups (100 projects x 10,001
 * agents, an event each), past TALLY_QUERY_CELLS_MAX, grouped by project
 * and agent in pages of 1,000 with the store's own cells limit: the first
 * page is p00/a00000..a00999, truncated; the page after p49/a09999 starts
 * at p49/a10000 and runs on into p50; the page after p99/a09000 is the
 * last thousand, not truncated. Before windows the first page was
 * TALLY_E_LIMIT (as a query in minute buckets of as many rows still is:
 * test_query.c, too_many_result_cells_is_a_limit_error). */
Test(window, a_tenant_day_past_the_cells_limit_answers_its_pages)
{
	int64_t day = (NOW_US / DAY_US - 1) * DAY_US;
	tally_store *s = open_store();
	cr_assert_eq(s->query_cells_max, TALLY_QUERY_CELLS_MAX);
	size_t total = (size_t)BIG_PROJECTS * BIG_AGENTS;
	cr_assert_gt(total, TALLY_QUERY_CELLS_MAX);
	for (size_t first = 0; first < total; first += BIG_BATCH) {
		size_t n = total - first < BIG_BATCH ? total - first : BIG_BATCH;
		for (size_t k = 0; k < n; k++) {
			size_t i = first + k;
			tally_event *e = &big_events[k];
			memset(e, 0, sizeof(*e));
			snprintf(big_ids[k], sizeof(big_ids[k]), "b%zu", i);
			snprintf(big_names[k][0], 8, "p%02zu", i % BIG_PROJECTS);
			snprintf(big_names[k][1], 8, "a%05zu", i / BIG_PROJECTS);
			e->event_id = S(big_ids[k]);
			e->time_us = day + (int64_t)(i % 86400) * 1000000;
			e->type = S("llm.call");
			e->project = S(big_names[k][0]);
			e->agent = S(big_names[k][1]);
			e->duration_ms = 10;
		}
		ingest(s, big_events, n);
	}
	big_page(s, day, -1, 0, 0, 0, true);
	big_page(s, day, 49, 9999, 49, 10000, true);
	big_page(s, day, 99, 9000, 99, 9001, false);
	tally_store_close(s);
}
