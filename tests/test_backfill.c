/*
 * test_backfill.c — admin imports of history older than the lateness
 * horizon (tally_batch.backfill, tally_ingest_backfill).
 *
 * Description: pins which old events a backfill accepts (back to
 * TALLY_BACKFILL_AGE_MAX_US, never in a normal batch), the dedup rule for
 * them (same tenant, id and UTC day: DUPLICATE or CONFLICT; another day:
 * another event), that a re-run import counts nothing twice whether the
 * first run is in memtables, segments, compacted segments or only in the
 * WAL, that in-horizon events of a backfill batch behave as in any batch,
 * and that queries over the old days equal a brute force over tally_scan.
 * Every test opens a fresh data directory under /tmp with a frozen clock.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/fault_io.h"
#include "support/test_dir.h"
#include "tally.h"
#include "tally_limits.h" /* HISTORY_PROBE_ROUNDS_MAX */

#define NOW_US (INT64_C(1790000000) * 1000000)       /* 2026-09-21 */
#define DAY_US TALLY_US_PER_DAY
#define HOUR_US (INT64_C(3600) * 1000000)
#define MINUTE_US (INT64_C(60) * 1000000)
#define HORIZON_US (35 * DAY_US)                      /* the default lateness_past_us */
#define JAN_2025_US (INT64_C(1735689600) * 1000000)  /* 2025-01-01 00:00 UTC */
#define MONTH_DAYS 31

static char dir[256];
static fault_io *fio;

static void setup(void)
{
	fio = test_dir_store_setup(dir, sizeof(dir), "backfill", NOW_US);
}

static void teardown(void)
{
	test_dir_store_teardown(dir, fio);
}

TestSuite(backfill, .init = setup, .fini = teardown);

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

#define S(x) ((tally_str){(x), (uint32_t)strlen(x)})

static const char *const models[3] = {"gpt-4o", "claude-3", "llama-3"};
#define MODEL_COUNT 3

/* An event whose payload is a function of n; id is the caller's (it must
 * outlive the event). */
static tally_event make_event(const char *id, int64_t time_us, uint32_t n)
{
	tally_event e;
	memset(&e, 0, sizeof(e));
	e.event_id = S(id);
	e.time_us = time_us;
	e.type = S("llm.call");
	e.project = S(n % 2 ? "proj-a" : "proj-b");
	e.agent = S("agent-1");
	e.model = S(models[n % MODEL_COUNT]);
	e.user = S(n % 5 ? "user-1" : "");
	e.status = n % TALLY_STATUS_COUNT;
	e.duration_ms = n % 5000;
	e.tokens_in = n % 1000 + 1;
	e.tokens_out = n % 77;
	e.cost_micros = (int64_t)n * 3 - 500;
	return e;
}

/* Ingests events as one backfill batch and checks every result code. */
static void backfill_expect(tally_store *s, const char *tenant, const tally_event *e, size_t count,
			    const uint8_t *codes, const char *when)
{
	tally_ingest_result *r = calloc(count + 1, sizeof(*r));
	cr_assert_not_null(r);
	int rc = tally_ingest_backfill(s, tenant, e, count, r);
	cr_assert_eq(rc, 0, "%s: %s (%s)", when, tally_strerror(rc), tally_store_errmsg(s));
	for (size_t i = 0; i < count; i++)
		cr_assert_eq(r[i].code, codes[i], "%s: event %zu: code %s, reason %u, expected %s", when,
			     i, tally_result_name(r[i].code), r[i].reason, tally_result_name(codes[i]));
	free(r);
}

/* The same with one code for all. */
static void backfill_expect_all(tally_store *s, const char *tenant, const tally_event *e,
				size_t count, uint8_t code, const char *when)
{
	uint8_t *codes = malloc(count + 1);
	cr_assert_not_null(codes);
	memset(codes, code, count);
	backfill_expect(s, tenant, e, count, codes, when);
	free(codes);
}

/* ---- scans -------------------------------------------------------------- */

#define SEEN_MAX 64

typedef struct seen {
	size_t count;
	char ids[SEEN_MAX][TALLY_EVENT_ID_SIZE_MAX + 1];
	int64_t times[SEEN_MAX];
	uint64_t tokens_in[SEEN_MAX];
} seen;

static int seen_add(void *ctx, const tally_event *e)
{
	seen *c = ctx;
	cr_assert_lt(c->count, SEEN_MAX);
	memcpy(c->ids[c->count], e->event_id.ptr, e->event_id.len);
	c->ids[c->count][e->event_id.len] = 0;
	c->times[c->count] = e->time_us;
	c->tokens_in[c->count] = e->tokens_in;
	c->count++;
	return 0;
}

static seen scan_all(tally_store *s, const char *tenant)
{
	seen c;
	memset(&c, 0, sizeof(c));
	int rc = tally_scan(s, tenant, INT64_MIN, INT64_MAX, seen_add, &c);
	cr_assert_eq(rc, 0, "scan: %s", tally_strerror(rc));
	return c;
}

/* Scans everything and checks it is exactly events[0, count) (by id, time
 * and tokens_in), each once, in time order. */
static void expect_stored_exactly(tally_store *s, const char *tenant, const tally_event *events,
				  size_t count, const char *when)
{
	seen c = scan_all(s, tenant);
	cr_assert_eq(c.count, count, "%s: %zu events stored, expected %zu", when, c.count, count);
	int *used = calloc(count + 1, sizeof(*used));
	cr_assert_not_null(used);
	for (size_t i = 0; i < c.count; i++) {
		if (i)
			cr_expect_geq(c.times[i], c.times[i - 1], "%s: time order", when);
		int found = 0;
		for (size_t j = 0; j < count && !found; j++) {
			const tally_event *e = &events[j];
			if (used[j] || e->event_id.len != strlen(c.ids[i]) ||
			    memcmp(e->event_id.ptr, c.ids[i], e->event_id.len) ||
			    e->time_us != c.times[i] || e->tokens_in != c.tokens_in[i])
				continue;
			used[j] = found = 1;
		}
		cr_expect(found, "%s: stored event %s at %" PRId64 " tokens %" PRIu64 " was not expected",
			  when, c.ids[i], c.times[i], c.tokens_in[i]);
	}
	free(used);
}

/* ---- queries against a brute force over tally_scan ---------------------- */

typedef struct cell {
	uint64_t count, tokens_in, tokens_out, duration_sum;
	uint64_t status[TALLY_STATUS_COUNT];
	int64_t cost;
	uint32_t duration_min, duration_max;
} cell;

typedef struct oracle {
	int64_t from_us, unit_us;
	size_t bucket_count;
	cell *cells; /* [bucket * MODEL_COUNT + model] */
	uint64_t events;
} oracle;

static int model_index(tally_str m)
{
	for (int i = 0; i < MODEL_COUNT; i++)
		if (m.len == strlen(models[i]) && memcmp(m.ptr, models[i], m.len) == 0)
			return i;
	return -1;
}

static int oracle_add(void *ctx, const tally_event *e)
{
	oracle *o = ctx;
	int m = model_index(e->model);
	cr_assert_geq(m, 0);
	size_t bucket = (size_t)((e->time_us - o->from_us) / o->unit_us);
	cr_assert_lt(bucket, o->bucket_count);
	cell *c = &o->cells[bucket * MODEL_COUNT + (size_t)m];
	if (!c->count || e->duration_ms < c->duration_min)
		c->duration_min = e->duration_ms;
	if (!c->count || e->duration_ms > c->duration_max)
		c->duration_max = e->duration_ms;
	c->count++;
	c->tokens_in += e->tokens_in;
	c->tokens_out += e->tokens_out;
	c->duration_sum += e->duration_ms;
	c->status[e->status]++;
	c->cost += e->cost_micros;
	o->events++;
	return 0;
}

/* Runs a query of [from, to) by `bucket` (unit_us long, from aligned to it)
 * grouped by model and checks every row against the scanned events.
 * Returns the number of events the scan saw. */
static uint64_t expect_query_equals_scan(tally_store *s, const char *tenant, int64_t from_us,
					 int64_t to_us, int bucket, int64_t unit_us,
					 const char *when)
{
	oracle o = {.from_us = from_us, .unit_us = unit_us,
		    .bucket_count = (size_t)((to_us - from_us) / unit_us)};
	o.cells = calloc(o.bucket_count * MODEL_COUNT, sizeof(*o.cells));
	cr_assert_not_null(o.cells);
	cr_assert_eq(tally_scan(s, tenant, from_us, to_us, oracle_add, &o), 0);

	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = from_us;
	q.to_us = to_us;
	q.bucket = bucket;
	q.group_by = 1u << TALLY_DIM_MODEL;
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_query_run(s, tenant, &q, &res, err);
	cr_assert_eq(rc, 0, "%s: query: %s (%s)", when, tally_strerror(rc), err);
	cr_expect(!res->truncated, "%s", when);
	size_t expected_rows = 0;
	for (size_t i = 0; i < o.bucket_count * MODEL_COUNT; i++)
		expected_rows += o.cells[i].count > 0;
	cr_expect_eq(res->row_count, expected_rows, "%s: %zu rows, expected %zu", when,
		     res->row_count, expected_rows);
	uint64_t counted = 0;
	for (size_t i = 0; i < res->row_count; i++) {
		const tally_row *row = &res->rows[i];
		cr_assert_eq((row->bucket_start_us - from_us) % unit_us, 0, "%s: row %zu", when, i);
		cr_expect_eq(row->bucket_end_us, row->bucket_start_us + unit_us, "%s: row %zu", when, i);
		size_t b = (size_t)((row->bucket_start_us - from_us) / unit_us);
		int m = model_index(row->group[TALLY_DIM_MODEL]);
		cr_assert(b < o.bucket_count && m >= 0, "%s: row %zu outside the oracle", when, i);
		const cell *c = &o.cells[b * MODEL_COUNT + (size_t)m];
		cr_expect_eq(row->count, c->count, "%s: bucket %zu model %d count", when, b, m);
		cr_expect_eq(row->tokens_in, c->tokens_in, "%s: bucket %zu model %d", when, b, m);
		cr_expect_eq(row->tokens_out, c->tokens_out, "%s: bucket %zu model %d", when, b, m);
		cr_expect_eq(row->cost_micros, c->cost, "%s: bucket %zu model %d", when, b, m);
		cr_expect_eq(row->duration_ms_sum, c->duration_sum, "%s: bucket %zu model %d", when, b, m);
		cr_expect_eq(row->duration_ms_min, c->duration_min, "%s: bucket %zu model %d", when, b, m);
		cr_expect_eq(row->duration_ms_max, c->duration_max, "%s: bucket %zu model %d", when, b, m);
		for (int st = 0; st < TALLY_STATUS_COUNT; st++)
			cr_expect_eq(row->status_count[st], c->status[st], "%s: bucket %zu model %d status %d",
				     when, b, m, st);
		counted += row->count;
	}
	cr_expect_eq(counted, o.events, "%s: the rows count every scanned event", when);
	tally_result_free(res);
	free(o.cells);
	return o.events;
}

/* Day, hour and (over its first day) minute buckets of January 2025. */
static void expect_january_queries(tally_store *s, const char *tenant, uint64_t events,
				   const char *when)
{
	int64_t to = JAN_2025_US + MONTH_DAYS * DAY_US;
	cr_expect_eq(expect_query_equals_scan(s, tenant, JAN_2025_US, to, TALLY_BUCKET_DAY, DAY_US, when),
		     events, "%s: events in January", when);
	expect_query_equals_scan(s, tenant, JAN_2025_US, to, TALLY_BUCKET_HOUR, HOUR_US, when);
	expect_query_equals_scan(s, tenant, JAN_2025_US, JAN_2025_US + DAY_US, TALLY_BUCKET_MINUTE,
				 MINUTE_US, when);
}

/* ---- old events: acceptance and limits ---------------------------------- */

Test(backfill, old_events_are_accepted_and_visible_to_scan_and_query)
{
	tally_store *s = open_store();
	static char ids[40][16];
	tally_event e[40];
	for (uint32_t n = 0; n < 40; n++) {
		snprintf(ids[n], sizeof(ids[n]), "jan-%u", n);
		/* Two events a day on 20 days of January 2025, at odd hours. */
		e[n] = make_event(ids[n], JAN_2025_US + (n / 2) * DAY_US + (n % 2) * 13 * HOUR_US +
						  (int64_t)n * 61 * 1000000,
				  n);
	}
	backfill_expect_all(s, "acme", e, 40, TALLY_ACCEPTED, "first import");
	expect_stored_exactly(s, "acme", e, 40, "memtable");
	expect_january_queries(s, "acme", 40, "memtable");
	cr_assert_eq(tally_flush(s), 0);
	expect_stored_exactly(s, "acme", e, 40, "segments");
	expect_january_queries(s, "acme", 40, "segments");
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_count, 20, "one segment per (tenant, old day)");
	cr_expect_eq(st.dedup_entries, 0, "old events take no fingerprint");
	cr_assert_eq(tally_store_close(s), 0);
}

Test(backfill, age_limit_is_ten_years_and_the_future_limit_is_unchanged)
{
	tally_store *s = open_store();
	tally_event e[5] = {
		make_event("oldest", NOW_US - TALLY_BACKFILL_AGE_MAX_US, 1),
		make_event("too-old", NOW_US - TALLY_BACKFILL_AGE_MAX_US - 1, 2),
		make_event("way-too-old", NOW_US - 20 * TALLY_BACKFILL_AGE_MAX_US, 3),
		make_event("future-ok", NOW_US + 5 * MINUTE_US, 4),
		make_event("future", NOW_US + 5 * MINUTE_US + 1, 5),
	};
	tally_ingest_result r[5];
	cr_assert_eq(tally_ingest_backfill(s, "acme", e, 5, r), 0);
	const uint8_t codes[5] = {TALLY_ACCEPTED, TALLY_REJECTED, TALLY_REJECTED, TALLY_ACCEPTED,
				  TALLY_REJECTED};
	const uint8_t reasons[5] = {TALLY_REASON_NONE, TALLY_REASON_TIME_TOO_OLD,
				    TALLY_REASON_TIME_TOO_OLD, TALLY_REASON_NONE,
				    TALLY_REASON_TIME_IN_FUTURE};
	for (int i = 0; i < 5; i++) {
		cr_expect_eq(r[i].code, codes[i], "event %d: %s", i, tally_result_name(r[i].code));
		cr_expect_eq(r[i].reason, reasons[i], "event %d: reason %u", i, r[i].reason);
	}
	tally_event stored[2] = {e[0], e[3]};
	expect_stored_exactly(s, "acme", stored, 2, "after the import");
	cr_assert_eq(tally_store_close(s), 0);
}

Test(backfill, a_normal_batch_still_rejects_old_events)
{
	tally_store *s = open_store();
	tally_event e[3] = {
		make_event("old", JAN_2025_US + HOUR_US, 1),
		make_event("just-too-old", NOW_US - HORIZON_US - 1, 2),
		make_event("in-horizon", NOW_US - HORIZON_US, 3),
	};
	tally_ingest_result r[3];
	cr_assert_eq(tally_ingest(s, "acme", e, 3, r), 0);
	cr_expect_eq(r[0].code, TALLY_REJECTED);
	cr_expect_eq(r[0].reason, TALLY_REASON_TIME_TOO_OLD);
	cr_expect_eq(r[1].code, TALLY_REJECTED);
	cr_expect_eq(r[1].reason, TALLY_REASON_TIME_TOO_OLD);
	cr_expect_eq(r[2].code, TALLY_ACCEPTED);
	/* submit_many: the flag is per batch. */
	tally_ingest_result normal[1], old[1];
	tally_batch batches[2] = {
		{.tenant = "acme", .events = e, .count = 1, .results = normal},
		{.tenant = "acme", .events = e, .count = 1, .results = old, .backfill = true},
	};
	uint64_t lsn = 0;
	cr_assert_eq(tally_ingest_submit_many(s, batches, 2, &lsn), 0);
	cr_assert_eq(tally_commit_wait(s, lsn), 0);
	cr_expect_eq(batches[0].status, 0);
	cr_expect_eq(batches[1].status, 0);
	cr_expect_eq(normal[0].code, TALLY_REJECTED);
	cr_expect_eq(normal[0].reason, TALLY_REASON_TIME_TOO_OLD);
	cr_expect_eq(old[0].code, TALLY_ACCEPTED);
	tally_event stored[2] = {e[0], e[2]};
	expect_stored_exactly(s, "acme", stored, 2, "after both calls");
	cr_assert_eq(tally_store_close(s), 0);
}

/* One call with refused batches around backfill and normal ones: each
 * batch gets its own status, the old events of the second backfill batch
 * of a tenant are DUPLICATEs of the first one's, and everything is one
 * WAL record. */
Test(backfill, submit_many_mixes_backfill_normal_and_refused_batches)
{
	tally_store *s = open_store();
	tally_event old[2] = {
		make_event("o-1", JAN_2025_US + HOUR_US, 1),
		make_event("o-2", JAN_2025_US + DAY_US, 2),
	};
	tally_event recent[1] = {make_event("r-1", NOW_US - MINUTE_US, 3)};
	tally_ingest_result r_bad[1] = {{99, 99}}, r_acme[2], r_globex[1], r_acme_again[2],
			    r_limit[1] = {{99, 99}};
	tally_batch batches[5] = {
		{.tenant = "bad tenant!", .events = old, .count = 1, .results = r_bad, .backfill = true},
		{.tenant = "acme", .events = old, .count = 2, .results = r_acme, .backfill = true},
		{.tenant = "globex", .events = recent, .count = 1, .results = r_globex},
		{.tenant = "acme", .events = old, .count = 2, .results = r_acme_again, .backfill = true},
		{.tenant = "acme", .events = old, .count = TALLY_BATCH_EVENTS_MAX + 1, .results = r_limit,
		 .backfill = true},
	};
	uint64_t lsn = 0;
	cr_assert_eq(tally_ingest_submit_many(s, batches, 5, &lsn), 0);
	cr_assert_eq(tally_commit_wait(s, lsn), 0);
	const int statuses[5] = {TALLY_E_TENANT, 0, 0, 0, TALLY_E_LIMIT};
	for (int b = 0; b < 5; b++)
		cr_expect_eq(batches[b].status, statuses[b], "batch %d: %d", b, batches[b].status);
	cr_expect_eq(r_bad[0].code, 99, "a refused batch's results are untouched");
	cr_expect_eq(r_limit[0].code, 99, "a refused batch's results are untouched");
	cr_expect_eq(r_acme[0].code, TALLY_ACCEPTED);
	cr_expect_eq(r_acme[1].code, TALLY_ACCEPTED);
	cr_expect_eq(r_globex[0].code, TALLY_ACCEPTED);
	cr_expect_eq(r_acme_again[0].code, TALLY_DUPLICATE);
	cr_expect_eq(r_acme_again[1].code, TALLY_DUPLICATE);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.durable_lsn, 1, "one WAL record for the whole call");
	cr_assert_eq(tally_store_close(s), 0);
	s = open_store();
	expect_stored_exactly(s, "acme", old, 2, "acme after replay");
	expect_stored_exactly(s, "globex", recent, 1, "globex after replay");
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- the dedup rule for old events -------------------------------------- */

Test(backfill, reimport_of_the_same_batch_is_all_duplicate_wherever_the_first_run_is)
{
	tally_store *s = open_store();
	static char ids[30][16];
	tally_event e[30];
	for (uint32_t n = 0; n < 30; n++) {
		snprintf(ids[n], sizeof(ids[n]), "%08x", 0xabc000u + n); /* hex ids pack as bytes */
		e[n] = make_event(ids[n], JAN_2025_US + (n % 10) * DAY_US + n * MINUTE_US, n);
	}
	backfill_expect_all(s, "acme", e, 30, TALLY_ACCEPTED, "first import");
	backfill_expect_all(s, "acme", e, 30, TALLY_DUPLICATE, "re-import (memtable)");
	cr_assert_eq(tally_flush(s), 0);
	backfill_expect_all(s, "acme", e, 30, TALLY_DUPLICATE, "re-import (one segment file)");
	/* A second file holding the same days, then both compacted into one. */
	static char more_ids[10][16];
	tally_event more[10];
	for (uint32_t n = 0; n < 10; n++) {
		snprintf(more_ids[n], sizeof(more_ids[n]), "more-%u", n);
		more[n] = make_event(more_ids[n], JAN_2025_US + n * DAY_US + 7 * HOUR_US, 100 + n);
	}
	backfill_expect_all(s, "acme", more, 10, TALLY_ACCEPTED, "second import");
	cr_assert_eq(tally_flush(s), 0);
	backfill_expect_all(s, "acme", e, 30, TALLY_DUPLICATE, "re-import (two files)");
	backfill_expect_all(s, "acme", more, 10, TALLY_DUPLICATE, "re-import of the second (two files)");
	cr_assert_eq(tally_compact(s), 0);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_file_count, 1);
	cr_expect_eq(st.segment_count, 10);
	backfill_expect_all(s, "acme", e, 30, TALLY_DUPLICATE, "re-import (compacted)");
	backfill_expect_all(s, "acme", more, 10, TALLY_DUPLICATE, "re-import of the second (compacted)");
	tally_event all[40];
	memcpy(all, e, sizeof(e));
	memcpy(all + 30, more, sizeof(more));
	expect_stored_exactly(s, "acme", all, 40, "after every re-import");
	cr_assert_eq(tally_store_close(s), 0);
}

Test(backfill, a_changed_payload_is_a_conflict_and_the_stored_event_stands)
{
	tally_store *s = open_store();
	tally_event e[3] = {
		make_event("a", JAN_2025_US + HOUR_US, 1),
		make_event("b", JAN_2025_US + 2 * HOUR_US, 2),
		make_event("c", JAN_2025_US + 3 * HOUR_US, 3),
	};
	backfill_expect_all(s, "acme", e, 3, TALLY_ACCEPTED, "first import");
	tally_event changed[3] = {e[0], e[1], e[2]};
	changed[0].tokens_in += 1;
	changed[1].time_us += 1; /* same day, another instant: another payload */
	changed[2].model = S("other-model");
	backfill_expect_all(s, "acme", changed, 3, TALLY_CONFLICT, "changed (memtable)");
	cr_assert_eq(tally_flush(s), 0);
	backfill_expect_all(s, "acme", changed, 3, TALLY_CONFLICT, "changed (segments)");
	const uint8_t mixed_codes[3] = {TALLY_DUPLICATE, TALLY_CONFLICT, TALLY_DUPLICATE};
	tally_event mixed[3] = {e[0], changed[1], e[2]};
	backfill_expect(s, "acme", mixed, 3, mixed_codes, "mixed (segments)");
	expect_stored_exactly(s, "acme", e, 3, "the first payloads stand");
	cr_assert_eq(tally_store_close(s), 0);
}

Test(backfill, duplicates_and_conflicts_within_one_batch)
{
	tally_store *s = open_store();
	tally_event e[6] = {
		make_event("x", JAN_2025_US + HOUR_US, 1),
		make_event("y", JAN_2025_US + 2 * HOUR_US, 2),
		make_event("x", JAN_2025_US + HOUR_US, 1),  /* same as the first */
		make_event("x", JAN_2025_US + HOUR_US, 9),  /* same id and day, other payload */
		make_event("y", JAN_2025_US + 2 * HOUR_US, 2),
		make_event("x", JAN_2025_US + 2 * DAY_US, 1), /* same id, another day */
	};
	const uint8_t codes[6] = {TALLY_ACCEPTED, TALLY_ACCEPTED, TALLY_DUPLICATE, TALLY_CONFLICT,
				  TALLY_DUPLICATE, TALLY_ACCEPTED};
	backfill_expect(s, "acme", e, 6, codes, "one batch");
	tally_event stored[3] = {e[0], e[1], e[5]};
	expect_stored_exactly(s, "acme", stored, 3, "after the batch");
	/* The batch again, now against what it stored. */
	const uint8_t again[6] = {TALLY_DUPLICATE, TALLY_DUPLICATE, TALLY_DUPLICATE, TALLY_CONFLICT,
				  TALLY_DUPLICATE, TALLY_DUPLICATE};
	backfill_expect(s, "acme", e, 6, again, "the batch again");
	cr_assert_eq(tally_flush(s), 0);
	backfill_expect(s, "acme", e, 6, again, "the batch again, from segments");
	expect_stored_exactly(s, "acme", stored, 3, "at the end");
	cr_assert_eq(tally_store_close(s), 0);
}

/* Small days share a row group in a segment file: the probe must match
 * the day too, not only the id. */
Test(backfill, the_same_id_on_another_old_day_is_another_event)
{
	tally_store *s = open_store();
	tally_event e[4];
	for (uint32_t d = 0; d < 4; d++)
		e[d] = make_event("reused", JAN_2025_US + d * DAY_US + HOUR_US, d);
	backfill_expect_all(s, "acme", e, 1, TALLY_ACCEPTED, "day 0");
	backfill_expect_all(s, "acme", e + 1, 1, TALLY_ACCEPTED, "day 1 (day 0 in the memtable)");
	cr_assert_eq(tally_flush(s), 0);
	backfill_expect_all(s, "acme", e + 2, 1, TALLY_ACCEPTED, "day 2 (days 0, 1 in a segment)");
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_compact(s), 0);
	backfill_expect_all(s, "acme", e + 3, 1, TALLY_ACCEPTED, "day 3 (days 0-2 compacted)");
	backfill_expect_all(s, "acme", e, 4, TALLY_DUPLICATE, "every day again");
	tally_event changed[4] = {e[0], e[1], e[2], e[3]};
	for (int d = 0; d < 4; d++)
		changed[d].tokens_out += 1;
	backfill_expect_all(s, "acme", changed, 4, TALLY_CONFLICT, "every day changed");
	expect_stored_exactly(s, "acme", e, 4, "one event per day");
	/* Another tenant's history is not this one's. */
	backfill_expect_all(s, "globex", e, 4, TALLY_ACCEPTED, "another tenant");
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- in-horizon events of a backfill batch, and normal ingest ----------- */

Test(backfill, a_mixed_batch_treats_in_horizon_events_as_any_batch_does)
{
	tally_store *s = open_store();
	tally_event first[2] = {
		make_event("recent", NOW_US - 2 * DAY_US, 1),
		make_event("recent-2", NOW_US - 3 * DAY_US, 2),
	};
	tally_ingest_result r[2];
	cr_assert_eq(tally_ingest(s, "acme", first, 2, r), 0);
	cr_assert_eq(r[0].code, TALLY_ACCEPTED);
	cr_assert_eq(r[1].code, TALLY_ACCEPTED);
	tally_event e[7] = {
		make_event("recent", NOW_US - 2 * DAY_US, 1),    /* duplicate in the horizon */
		make_event("recent-2", NOW_US - 1 * DAY_US, 2),  /* same id, other day, in the horizon */
		make_event("recent", JAN_2025_US + HOUR_US, 1),  /* the same id in old history */
		make_event("new-recent", NOW_US - HOUR_US, 3),
		make_event("new-old", JAN_2025_US + 2 * HOUR_US, 4),
		make_event("new-old", JAN_2025_US + 2 * HOUR_US, 4),
		make_event("new-recent", NOW_US - HOUR_US, 3),
	};
	const uint8_t codes[7] = {TALLY_DUPLICATE, TALLY_CONFLICT, TALLY_ACCEPTED, TALLY_ACCEPTED,
				  TALLY_ACCEPTED, TALLY_DUPLICATE, TALLY_DUPLICATE};
	backfill_expect(s, "acme", e, 7, codes, "mixed batch");
	tally_event stored[5] = {first[0], first[1], e[2], e[3], e[4]};
	expect_stored_exactly(s, "acme", stored, 5, "after the mixed batch");
	const uint8_t again[7] = {TALLY_DUPLICATE, TALLY_CONFLICT, TALLY_DUPLICATE, TALLY_DUPLICATE,
				  TALLY_DUPLICATE, TALLY_DUPLICATE, TALLY_DUPLICATE};
	backfill_expect(s, "acme", e, 7, again, "mixed batch again");
	cr_assert_eq(tally_flush(s), 0);
	backfill_expect(s, "acme", e, 7, again, "mixed batch again, from segments");
	cr_assert_eq(tally_store_close(s), 0);
	s = open_store();
	backfill_expect(s, "acme", e, 7, again, "mixed batch again, after a reopen");
	expect_stored_exactly(s, "acme", stored, 5, "at the end");
	cr_assert_eq(tally_store_close(s), 0);
}

/* An id backfilled on an old day and used again in the horizon: a retry of
 * the recent event is a DUPLICATE of the recent one, never compared with
 * the old one (in the memtable, and in a shared row group of a segment). */
Test(backfill, normal_ingest_compares_only_with_the_event_on_its_own_day)
{
	tally_store *s = open_store();
	tally_event old = make_event("shared-id", NOW_US - 40 * DAY_US, 1);
	tally_event recent = make_event("shared-id", NOW_US - 3 * DAY_US, 2);
	backfill_expect_all(s, "acme", &old, 1, TALLY_ACCEPTED, "old");
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", &recent, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_ACCEPTED, "the old event has no fingerprint");
	cr_assert_eq(tally_ingest(s, "acme", &recent, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_DUPLICATE, "retry with both in the memtable");
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_ingest(s, "acme", &recent, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_DUPLICATE, "retry with both in one row group");
	tally_event changed = recent;
	changed.cost_micros += 1;
	cr_assert_eq(tally_ingest(s, "acme", &changed, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_CONFLICT);
	backfill_expect_all(s, "acme", &old, 1, TALLY_DUPLICATE, "old again");
	tally_event both[2] = {old, recent};
	expect_stored_exactly(s, "acme", both, 2, "both");
	cr_assert_eq(tally_store_close(s), 0);
}

/* The fingerprint table covers the horizon's day minus one: an old event
 * on those days gets a fingerprint like any event there, before and after
 * a reopen, so normal ingest sees it the same way both times. */
Test(backfill, an_old_event_on_the_horizon_day_is_known_to_normal_ingest)
{
	tally_store *s = open_store();
	tally_event old = make_event("edge", NOW_US - HORIZON_US - HOUR_US, 1);
	backfill_expect_all(s, "acme", &old, 1, TALLY_ACCEPTED, "old, on the horizon's day");
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.dedup_entries, 1);
	tally_event recent = make_event("edge", NOW_US - DAY_US, 2);
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", &recent, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_CONFLICT, "an id is unique within the fingerprint horizon");
	cr_assert_eq(tally_store_close(s), 0);
	s = open_store(); /* WAL replay */
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.dedup_entries, 1);
	cr_assert_eq(tally_ingest(s, "acme", &recent, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_CONFLICT, "after WAL replay");
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_store_close(s), 0);
	s = open_store(); /* the rebuild from segments */
	cr_assert_eq(tally_ingest(s, "acme", &recent, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_CONFLICT, "after the rebuild from segments");
	backfill_expect_all(s, "acme", &old, 1, TALLY_DUPLICATE, "old again");
	expect_stored_exactly(s, "acme", &old, 1, "only the old event");
	cr_assert_eq(tally_store_close(s), 0);
}

/* The other order: a recent event first, then an old one with its id on
 * the horizon's day (another day of old history: accepted). The id then
 * has a fingerprint on two days, and an exact resend of the recent event
 * is a DUPLICATE wherever the two are (memtable, segments, after the
 * rebuild at open), never a CONFLICT with the old one; another payload on
 * the recent event's day is a CONFLICT. Before the fix (found writing
 * fuzz_ops's model) the resend was answered CONFLICT once both were in
 * segments and the store reopened. */
Test(backfill, a_resend_is_a_duplicate_when_its_id_is_also_on_the_horizon_day)
{
	tally_store *s = open_store();
	tally_event recent = make_event("twice", NOW_US - DAY_US, 2);
	tally_event old = make_event("twice", NOW_US - HORIZON_US - HOUR_US, 1);
	tally_event changed = recent;
	changed.tokens_out += 1;
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", &recent, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_ACCEPTED);
	backfill_expect_all(s, "acme", &old, 1, TALLY_ACCEPTED, "old, on the horizon's day");
	for (int stage = 0; stage < 4; stage++) {
		static const char *const where[4] = {"in the memtable", "in segments", "after a reopen",
						     "after a compaction and a reopen"};
		if (stage == 1) {
			cr_assert_eq(tally_flush(s), 0);
		} else if (stage >= 2) {
			if (stage == 3)
				cr_assert_eq(tally_compact(s), 0);
			cr_assert_eq(tally_store_close(s), 0);
			s = open_store();
		}
		cr_assert_eq(tally_ingest(s, "acme", &recent, 1, &r), 0);
		cr_expect_eq(r.code, TALLY_DUPLICATE, "an exact resend %s: %s", where[stage],
			     tally_result_name(r.code));
		cr_assert_eq(tally_ingest(s, "acme", &changed, 1, &r), 0);
		cr_expect_eq(r.code, TALLY_CONFLICT, "another payload %s: %s", where[stage],
			     tally_result_name(r.code));
		backfill_expect_all(s, "acme", &old, 1, TALLY_DUPLICATE, where[stage]);
	}
	tally_event both[2] = {old, recent};
	expect_stored_exactly(s, "acme", both, 2, "both, once each");
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- durability --------------------------------------------------------- */

Test(backfill, survives_wal_replay_with_exact_dedup)
{
	tally_store *s = open_store();
	static char ids[20][16];
	tally_event e[20];
	for (uint32_t n = 0; n < 20; n++) {
		snprintf(ids[n], sizeof(ids[n]), "w-%u", n);
		e[n] = make_event(ids[n], JAN_2025_US + (n % 7) * DAY_US + n * HOUR_US, n);
	}
	backfill_expect_all(s, "acme", e, 20, TALLY_ACCEPTED, "import");
	cr_assert_eq(tally_store_close(s), 0);

	/* Time moves on: the events are older still, and replay keeps them. */
	fault_io_clock_advance_us(fio, 30 * DAY_US);
	s = open_store();
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.events_memtable, 20, "replayed");
	cr_expect_eq(st.dedup_entries, 0, "replay adds no fingerprint for old days");
	expect_stored_exactly(s, "acme", e, 20, "after replay");
	expect_january_queries(s, "acme", 20, "after replay");
	backfill_expect_all(s, "acme", e, 20, TALLY_DUPLICATE, "re-import after replay");
	tally_event changed = e[4];
	changed.duration_ms += 1;
	backfill_expect_all(s, "acme", &changed, 1, TALLY_CONFLICT, "changed after replay");
	cr_assert_eq(tally_store_close(s), 0);
	s = open_store(); /* replay again: the duplicates added no record */
	expect_stored_exactly(s, "acme", e, 20, "after a second replay");
	cr_assert_eq(tally_store_close(s), 0);
}

Test(backfill, survives_flush_compaction_and_reopen_with_exact_dedup)
{
	tally_store *s = open_store();
	static char ids[60][16];
	tally_event e[60];
	for (uint32_t n = 0; n < 60; n++) {
		snprintf(ids[n], sizeof(ids[n]), "f-%u", n);
		e[n] = make_event(ids[n], JAN_2025_US + (n % 12) * DAY_US + n * 17 * MINUTE_US, n);
	}
	backfill_expect_all(s, "acme", e, 20, TALLY_ACCEPTED, "first third");
	cr_assert_eq(tally_flush(s), 0);
	backfill_expect_all(s, "acme", e + 20, 20, TALLY_ACCEPTED, "second third");
	cr_assert_eq(tally_flush(s), 0);
	backfill_expect_all(s, "acme", e + 40, 20, TALLY_ACCEPTED, "last third");
	cr_assert_eq(tally_store_close(s), 0);

	s = open_store();
	backfill_expect_all(s, "acme", e, 60, TALLY_DUPLICATE, "after reopen: two files and the WAL");
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_compact(s), 0);
	cr_assert_eq(tally_store_close(s), 0);

	s = open_store();
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_file_count, 1);
	cr_expect_eq(st.segment_rows, 60);
	cr_expect_eq(st.events_memtable, 0);
	backfill_expect_all(s, "acme", e, 60, TALLY_DUPLICATE, "after compaction and reopen");
	tally_event changed[2] = {e[7], e[51]};
	changed[0].status = (changed[0].status + 1) % TALLY_STATUS_COUNT;
	changed[1].user = S("someone-else");
	backfill_expect_all(s, "acme", changed, 2, TALLY_CONFLICT, "changed after compaction");
	expect_stored_exactly(s, "acme", e, 60, "after compaction and reopen");
	expect_january_queries(s, "acme", 60, "after compaction and reopen");
	cr_assert_eq(tally_store_close(s), 0);
	cr_expect_eq(tally_verify(dir, NULL, NULL), 0, "verify finds no problem");
}

/* ---- one old month ------------------------------------------------------- */

#define MONTH_EVENTS 100000
#define EXTRA_EVENTS 1000

/* 100,000 events over January 2025, imported in batches of 10,000, then
 * re-imported from memtables, from segments and after compaction (with
 * 1,000 more events in a second file, and ten changed payloads): every
 * re-import gives exactly the expected codes, and day, hour and minute
 * queries equal the scan at each stage. */
Test(backfill, one_old_month_of_100k_events_imports_once_and_queries_exactly)
{
	tally_store *s = open_store();
	const size_t total = MONTH_EVENTS + EXTRA_EVENTS;
	char (*ids)[16] = malloc(sizeof(*ids) * total);
	tally_event *e = malloc(sizeof(*e) * total);
	uint8_t *codes = malloc(total);
	cr_assert(ids && e && codes);
	const int64_t month_seconds = MONTH_DAYS * 86400;
	for (uint32_t n = 0; n < total; n++) {
		snprintf(ids[n], sizeof(ids[n]), "%s%07u", n < MONTH_EVENTS ? "m" : "x", n);
		int64_t second = ((int64_t)n * 26777) % month_seconds; /* spread, out of order */
		e[n] = make_event(ids[n], JAN_2025_US + second * 1000000 + n % 1000, n);
	}
	const size_t batch = 10000;
	for (size_t i = 0; i < MONTH_EVENTS; i += batch)
		backfill_expect_all(s, "acme", e + i, batch, TALLY_ACCEPTED, "import");
	expect_january_queries(s, "acme", MONTH_EVENTS, "memtable");
	for (size_t i = 0; i < MONTH_EVENTS; i += batch)
		backfill_expect_all(s, "acme", e + i, batch, TALLY_DUPLICATE, "re-import (memtable)");
	cr_assert_eq(tally_flush(s), 0);
	for (size_t i = 0; i < MONTH_EVENTS; i += batch)
		backfill_expect_all(s, "acme", e + i, batch, TALLY_DUPLICATE, "re-import (segments)");
	expect_january_queries(s, "acme", MONTH_EVENTS, "segments");

	/* A second file over the same days, then one compacted file. */
	backfill_expect_all(s, "acme", e + MONTH_EVENTS, EXTRA_EVENTS, TALLY_ACCEPTED, "more");
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_compact(s), 0);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_file_count, 1);
	cr_expect_eq(st.segment_rows, total);
	cr_expect_eq(st.segment_count, MONTH_DAYS);
	memset(codes, TALLY_DUPLICATE, total);
	for (uint32_t n = 0; n < 10; n++) {
		e[n * 10100].tokens_out += 1;
		codes[n * 10100] = TALLY_CONFLICT;
	}
	for (size_t i = 0; i < total; i += batch) {
		size_t count = total - i < batch ? total - i : batch;
		backfill_expect(s, "acme", e + i, count, codes + i, "re-import, ten changed (compacted)");
	}
	for (uint32_t n = 0; n < 10; n++)
		e[n * 10100].tokens_out -= 1;
	cr_assert_eq(tally_store_close(s), 0);

	s = open_store();
	expect_january_queries(s, "acme", total, "after reopen");
	for (size_t i = 0; i < total; i += batch) {
		size_t count = total - i < batch ? total - i : batch;
		backfill_expect_all(s, "acme", e + i, count, TALLY_DUPLICATE, "re-import after reopen");
	}
	cr_assert_eq(tally_store_close(s), 0);
	free(ids);
	free(e);
	free(codes);
}

/* ---- concurrency and failures --------------------------------------------- */

typedef struct maintainer {
	tally_store *s;
	atomic_int stop;
	int flush_failures;
	int compact_failures;
	int rounds;
} maintainer;

static void *maintainer_main(void *arg)
{
	maintainer *m = arg;
	while (!atomic_load(&m->stop)) {
		m->flush_failures += tally_flush(m->s) != 0;
		m->compact_failures += tally_compact(m->s) != 0;
		m->rounds++;
	}
	return NULL;
}

#define RACE_ROUNDS 60
#define RACE_EVENTS 100

/* While another thread flushes and compacts without pause (moving the
 * memtables into files and rewriting the files between a backfill's probe
 * and its apply), every re-import is still all DUPLICATE and every event
 * is stored once. */
Test(backfill, concurrent_flush_and_compaction_never_count_a_reimport_twice)
{
	tally_store *s = open_store();
	static char ids[RACE_ROUNDS * RACE_EVENTS][16];
	static tally_event e[RACE_ROUNDS * RACE_EVENTS];
	for (uint32_t n = 0; n < RACE_ROUNDS * RACE_EVENTS; n++) {
		snprintf(ids[n], sizeof(ids[n]), "r%06u", n);
		e[n] = make_event(ids[n], JAN_2025_US + (n % 9) * DAY_US + n * 1000000, n);
	}
	maintainer m = {.s = s};
	pthread_t thread;
	cr_assert_eq(pthread_create(&thread, NULL, maintainer_main, &m), 0);
	for (int round = 0; round < RACE_ROUNDS; round++) {
		tally_event *batch = e + round * RACE_EVENTS;
		backfill_expect_all(s, "acme", batch, RACE_EVENTS, TALLY_ACCEPTED, "new");
		backfill_expect_all(s, "acme", batch, RACE_EVENTS, TALLY_DUPLICATE, "again");
		if (round)
			backfill_expect_all(s, "acme", batch - RACE_EVENTS, RACE_EVENTS, TALLY_DUPLICATE,
					    "the previous round again");
	}
	atomic_store(&m.stop, 1);
	cr_assert_eq(pthread_join(thread, NULL), 0);
	cr_expect_eq(m.flush_failures, 0);
	cr_expect_eq(m.compact_failures, 0);
	cr_log_info("maintenance rounds during the race: %d", m.rounds);
	backfill_expect_all(s, "acme", e, RACE_ROUNDS * RACE_EVENTS, TALLY_DUPLICATE, "everything again");
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_rows + st.events_memtable, RACE_ROUNDS * RACE_EVENTS);
	expect_january_queries(s, "acme", RACE_ROUNDS * RACE_EVENTS, "after the race");
	cr_assert_eq(tally_store_close(s), 0);
}

/* A tally_io that forwards to the fault_io table, except that the first
 * pread after hook_armed is set first flushes and compacts the store (on
 * the reading thread: a backfill's probe reads with no lock held). */
static tally_io hook_io;
static atomic_int hook_armed;
static tally_store *hook_store;
static int hook_flush_rc = -1, hook_compact_rc = -1;

static int64_t hook_pread(const tally_io *io, int fd, void *buf, size_t size, uint64_t offset)
{
	(void)io;
	const tally_io *base = fault_io_table(fio);
	if (atomic_exchange(&hook_armed, 0)) {
		hook_flush_rc = tally_flush(hook_store);
		hook_compact_rc = tally_compact(hook_store);
	}
	return base->pread(base, fd, buf, size, offset);
}

/* The probe reads segment file 1 without the lock; meanwhile a flush moves
 * the memtable's events (same day) into file 2 and a compaction merges
 * files 1 and 2 into file 3, retiring file 1 while the probe still reads
 * it. The call must see file 3 too (re-probe), and file 1 must go once
 * the probe lets it go. */
Test(backfill, a_flush_and_compaction_during_the_probe_are_caught)
{
	hook_io = *fault_io_table(fio);
	hook_io.pread = hook_pread;
	tally_options o;
	tally_options_default(&o);
	o.io = &hook_io;
	o.background = false;
	tally_store *s = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_store_open(dir, &o, &s, err), 0, "open: %s", err);
	hook_store = s;
	static char ids[20][16];
	tally_event e[20];
	for (uint32_t n = 0; n < 20; n++) {
		snprintf(ids[n], sizeof(ids[n]), "%s-%u", n < 10 ? "in-file" : "in-memtable", n);
		e[n] = make_event(ids[n], JAN_2025_US + 3 * DAY_US + n * MINUTE_US, n);
	}
	backfill_expect_all(s, "acme", e, 10, TALLY_ACCEPTED, "the first ten");
	cr_assert_eq(tally_flush(s), 0);
	backfill_expect_all(s, "acme", e + 10, 10, TALLY_ACCEPTED, "the next ten");

	atomic_store(&hook_armed, 1);
	backfill_expect_all(s, "acme", e, 20, TALLY_DUPLICATE, "all twenty again");
	cr_expect_eq(atomic_load(&hook_armed), 0, "the probe read a segment file");
	cr_expect_eq(hook_flush_rc, 0);
	cr_expect_eq(hook_compact_rc, 0);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_file_count, 1);
	cr_expect_eq(st.segment_rows, 20);
	cr_expect_eq(st.events_memtable, 0);
	cr_expect_eq(test_dir_segment_files(dir), 1,
		     "the retired input was unlinked by the last unpin");
	expect_stored_exactly(s, "acme", e, 20, "after the race");
	cr_assert_eq(tally_store_close(s), 0);
}

/* A second hook: on the first pread of each new file descriptor (a file
 * the probe has not read yet), while fires are left, backfill the next
 * extra event (on the probed day) and flush it into a new file, so every
 * probe round finds a newer file than it probed. Its own calls' reads do
 * not fire it. */
static tally_io rounds_io;
static tally_event rounds_extra[HISTORY_PROBE_ROUNDS_MAX];
static atomic_int rounds_fires_left;
static int rounds_in_hook, rounds_last_fd = -1, rounds_fired, rounds_failures;

static int64_t rounds_pread(const tally_io *io, int fd, void *buf, size_t size, uint64_t offset)
{
	(void)io;
	const tally_io *base = fault_io_table(fio);
	if (!rounds_in_hook && fd != rounds_last_fd && atomic_load(&rounds_fires_left) > 0) {
		atomic_fetch_sub(&rounds_fires_left, 1);
		rounds_in_hook = 1;
		rounds_last_fd = fd;
		tally_ingest_result r;
		rounds_failures += tally_ingest_backfill(hook_store, "acme", &rounds_extra[rounds_fired], 1, &r) != 0 ||
				   r.code != TALLY_ACCEPTED;
		rounds_failures += tally_flush(hook_store) != 0;
		rounds_fired++;
		rounds_in_hook = 0;
	}
	return base->pread(base, fd, buf, size, offset);
}

/* Files keep appearing during every probe round: after
 * HISTORY_PROBE_ROUNDS_MAX rounds without the lock, the last runs under
 * it, and it still settles the event that only the newest file holds. */
Test(backfill, probes_repeat_while_files_appear_and_the_last_round_holds_the_lock)
{
	rounds_io = *fault_io_table(fio);
	rounds_io.pread = rounds_pread;
	tally_options o;
	tally_options_default(&o);
	o.io = &rounds_io;
	o.background = false;
	tally_store *s = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_store_open(dir, &o, &s, err), 0, "open: %s", err);
	hook_store = s;
	enum { BASE = 5, EXTRA = HISTORY_PROBE_ROUNDS_MAX };
	static char ids[BASE + EXTRA][16];
	tally_event e[BASE + EXTRA];
	for (uint32_t n = 0; n < BASE + EXTRA; n++) {
		snprintf(ids[n], sizeof(ids[n]), "%s-%u", n < BASE ? "base" : "extra", n);
		e[n] = make_event(ids[n], JAN_2025_US + 9 * DAY_US + n * MINUTE_US, n);
		if (n >= BASE)
			rounds_extra[n - BASE] = e[n];
	}
	backfill_expect_all(s, "acme", e, BASE, TALLY_ACCEPTED, "base");
	cr_assert_eq(tally_flush(s), 0);

	/* Each extra event is stored (and flushed) only while the call runs,
	 * one more per probe round: all are DUPLICATEs of those. */
	atomic_store(&rounds_fires_left, EXTRA);
	backfill_expect_all(s, "acme", e, BASE + EXTRA, TALLY_DUPLICATE, "base and extras");
	cr_expect_eq(rounds_fired, EXTRA, "one new file per unlocked round");
	cr_expect_eq(rounds_failures, 0);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_file_count, 1 + EXTRA);
	expect_stored_exactly(s, "acme", e, BASE + EXTRA, "each once");
	cr_assert_eq(tally_store_close(s), 0);
}

/* Garbles every byte of segment file 1 after its header, on disk (an
 * open store has the file's index in memory: it reads the blocks). */
static void garble_first_segment(void)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/segments/0000000000000001.seg", dir);
	struct stat sb;
	cr_assert_eq(stat(path, &sb), 0);
	int fd = open(path, O_WRONLY);
	cr_assert_geq(fd, 0);
	char *junk = malloc((size_t)sb.st_size);
	cr_assert_not_null(junk);
	memset(junk, 0x5a, (size_t)sb.st_size);
	cr_assert_eq(pwrite(fd, junk, (size_t)sb.st_size - 32, 32), sb.st_size - 32);
	close(fd);
	free(junk);
}

/* A segment block that no longer reads back: the backfill call fails with
 * TALLY_E_CORRUPT naming the file, applies nothing, and the store stays
 * writable. */
Test(backfill, unreadable_history_fails_the_call_but_not_the_store)
{
	tally_store *s = open_store();
	tally_event e[2] = {
		make_event("kept", JAN_2025_US + HOUR_US, 1),
		make_event("other-day", JAN_2025_US + 5 * DAY_US, 2),
	};
	backfill_expect_all(s, "acme", e, 1, TALLY_ACCEPTED, "import");
	cr_assert_eq(tally_flush(s), 0);
	garble_first_segment();

	tally_ingest_result r[2];
	cr_expect_eq(tally_ingest_backfill(s, "acme", e, 2, r), TALLY_E_CORRUPT);
	cr_expect_neq(strstr(tally_store_errmsg(s), "backfill"), NULL, "%s", tally_store_errmsg(s));
	cr_expect_neq(strstr(tally_store_errmsg(s), "0000000000000001.seg"), NULL, "%s",
		      tally_store_errmsg(s));
	/* A day with no segment reads nothing and goes through. */
	backfill_expect_all(s, "acme", e + 1, 1, TALLY_ACCEPTED, "another day");
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.sticky_error, 0);
	cr_expect_eq(st.events_memtable, 1, "the failed call applied nothing");
	tally_event recent = make_event("recent", NOW_US - MINUTE_US, 3);
	cr_assert_eq(tally_ingest(s, "acme", &recent, 1, r), 0);
	cr_expect_eq(r[0].code, TALLY_ACCEPTED);
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: a call that fails after its apply (here: a recent event's
 * duplicate check reads a garbled segment) is undone, and retried 20
 * times. Its old event of the horizon's first day (which gets a
 * fingerprint) leaves one fingerprint in all, not one per attempt. Before
 * 2026-12-02 each attempt left one: past DEDUP_DAY_CANDIDATES_MAX (16) of
 * them, the same id used by a recent event on another day was stored, and
 * then its exact resend was ACCEPTED again (the resend's own day, behind
 * the 16 dead entries, was never looked at). */
Test(backfill, a_call_that_keeps_failing_leaves_one_fingerprint_of_an_old_event)
{
	tally_store *s = open_store();
	tally_event recent = make_event("r", NOW_US - HOUR_US, 1);
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", &recent, 1, &r), 0);
	cr_assert_eq(tally_flush(s), 0);
	garble_first_segment();
	tally_event old = make_event("o", NOW_US - HORIZON_US - HOUR_US, 2);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	uint64_t before = st.dedup_entries;
	for (int attempt = 0; attempt < 20; attempt++) {
		tally_ingest_result ro, rr;
		tally_batch b[2] = {
			{.tenant = "acme", .events = &old, .count = 1, .results = &ro, .backfill = true},
			{.tenant = "acme", .events = &recent, .count = 1, .results = &rr},
		};
		uint64_t lsn = 0;
		cr_assert_eq(tally_ingest_submit_many(s, b, 2, &lsn), TALLY_E_CORRUPT,
			     "attempt %d", attempt);
	}
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.dedup_entries, before + 1, "%" PRIu64 " fingerprints, %" PRIu64 " before",
		     (uint64_t)st.dedup_entries, before);
	cr_expect_eq(st.events_memtable, 0, "every attempt was undone");
	tally_event again = make_event("o", NOW_US - HOUR_US, 3); /* the id, on another day */
	cr_assert_eq(tally_ingest(s, "acme", &again, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_ACCEPTED);
	cr_assert_eq(tally_ingest(s, "acme", &again, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_DUPLICATE, "its exact resend: %s", tally_result_name(r.code));
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.events_memtable, 1, "stored once");
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: the clock runs three days ahead, a backfill stores an
 * event that is old on that clock (no fingerprint: checked by day), and
 * the clock is set back before any fingerprint expiry. The horizon's
 * floor stays where the backfill put it: a normal retry of the event,
 * under the floor, is checked against the stored history by day and is a
 * DUPLICATE, not ACCEPTED as new; so is a backfill retry. The event is
 * stored once. Before 2026-12-02 the horizon went back with the clock
 * (only an expiry pass held it), and the normal retry stored the event
 * twice. */
Test(backfill, a_clock_set_ahead_then_back_keeps_the_horizon_of_a_backfill)
{
	tally_store *s = open_store();
	fault_io_clock_set_us(fio, NOW_US + 3 * DAY_US);
	tally_event e = make_event("x", NOW_US - HORIZON_US + HOUR_US, 1);
	backfill_expect_all(s, "acme", &e, 1, TALLY_ACCEPTED, "old on the clock ahead");
	fault_io_clock_set_us(fio, NOW_US); /* set back */
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", &e, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_DUPLICATE, "a normal retry: %s", tally_result_name(r.code));
	backfill_expect_all(s, "acme", &e, 1, TALLY_DUPLICATE, "a backfill retry");
	seen c = scan_all(s, "acme");
	cr_expect_eq(c.count, 1, "x stored %zu times", c.count);
	cr_assert_eq(tally_store_close(s), 0);
}

typedef struct slow_backfill {
	tally_store *s;
	tally_event e;
	tally_ingest_result r;
	int rc;
} slow_backfill;

static void *slow_backfill_run(void *arg)
{
	slow_backfill *c = arg;
	c->rc = tally_ingest_backfill(c->s, "acme", &c->e, 1, &c->r);
	return NULL;
}

/* Description: a backfill call reads the clock, then probes the stored
 * history slowly (every read 300 ms); meanwhile the clock jumps three
 * days ahead and a normal call acts on the later horizon. When the
 * backfill reaches the store lock, its view of which events are recent is
 * more than the grace day behind the fingerprints': it is refused with
 * TALLY_E_BUSY, saying the clock moved, and stores nothing; its retry
 * reads the clock again and is ACCEPTED. */
Test(backfill, a_call_prepared_before_the_clock_jumped_ahead_is_refused)
{
	tally_store *s = open_store();
	tally_event history = make_event("h", JAN_2025_US + HOUR_US, 1);
	backfill_expect_all(s, "acme", &history, 1, TALLY_ACCEPTED, "history");
	cr_assert_eq(tally_flush(s), 0); /* the probe of its day reads the file */
	slow_backfill c = {.s = s, .e = make_event("h2", JAN_2025_US + 2 * HOUR_US, 2)};
	fault_io_delay_set(fio, 300000, 0);
	pthread_t thread;
	cr_assert_eq(pthread_create(&thread, NULL, slow_backfill_run, &c), 0);
	usleep(100000);
	fault_io_clock_set_us(fio, NOW_US + 3 * DAY_US);
	tally_event now = make_event("n", NOW_US + 3 * DAY_US - MINUTE_US, 3);
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", &now, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_ACCEPTED);
	cr_assert_eq(pthread_join(thread, NULL), 0);
	fault_io_delay_set(fio, 0, 0);
	cr_expect_eq(c.rc, TALLY_E_BUSY, "%s", tally_strerror(c.rc));
	cr_expect_not_null(strstr(tally_store_errmsg(s), "clock moved"), "%s",
			   tally_store_errmsg(s));
	backfill_expect_all(s, "acme", &c.e, 1, TALLY_ACCEPTED, "the retry");
	tally_event stored[3] = {history, now, c.e};
	expect_stored_exactly(s, "acme", stored, 3, "after the retry");
	cr_assert_eq(tally_store_close(s), 0);
}
