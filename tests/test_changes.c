/*
 * test_changes.c — the change map: which UTC days changed after a
 * watermark, for the billing export (tally_changed_days,
 * tally_day_change_lsn, tally_change_watermark, tally_change_barrier).
 *
 * Description: pins that every ACCEPTED event marks its UTC day with the
 * LSN of its WAL record (late and backfilled events too; DUPLICATE,
 * CONFLICT and REJECTED events never), that only days marked after a
 * watermark are listed, that the map is identical after WAL replay, flush,
 * compaction and reopen, that the manifest carries it (version 3, byte
 * for byte), still reads versions 2 and 1, the latter with an empty map and refuses a damaged
 * change section, that the map is bounded (CHANGE_DAYS_MAX) with a floor
 * that never loses a mark, that an event appended but not yet durable when
 * the watermark is read is reported after it, that the barrier fails
 * when the WAL does, and that a flush's manifest leaves out events stored
 * while it runs (a gated segment-file open holds the flush after its
 * freeze). Two crash tests fork a writer for 12 rounds on one directory:
 * one stops without closing, one loses power at a random write or fsync
 * (support/power_io); the map after each recovery equals the acknowledged
 * batches' marks (plus the one batch in flight, wholly or not at all), and
 * `tally verify` accepts the directory. Two property tests compare with a
 * brute-force oracle: random calls, flushes, compactions and reopens
 * against the store, and random marks (in order and shuffled, past the
 * bound) against the map alone (SEED=... replays them; seeds are printed).
 * Every test opens a fresh data directory under /tmp with a frozen clock.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "changes.h" /* the map itself, for its own property test */
#include "support/fault_io.h"
#include "support/test_dir.h"
#include "support/manifest_file.h"
#include "support/power_io.h"
#include "tally.h"
#include "tally_limits.h" /* CHANGE_DAYS_MAX */

#define NOW_US (INT64_C(1790000000) * 1000000) /* 2026-09-21 14:13:20 UTC */
#define DAY_US TALLY_US_PER_DAY
#define HOUR_US (INT64_C(3600) * 1000000)
#define MINUTE_US (INT64_C(60) * 1000000)
#define TODAY ((int32_t)(NOW_US / DAY_US))
#define ID_SLOT_SIZE 48
#define ID_POOL_SLOTS 8192u
#define CHANGE_FIXED_SIZE 16
#define CHANGE_ENTRY_SIZE 12

static char dir[256];
static fault_io *fio;
static char (*id_pool)[ID_SLOT_SIZE];
static size_t id_pool_used;

static void setup(void)
{
	fio = test_dir_store_setup(dir, sizeof(dir), "changes", NOW_US);
	id_pool = calloc(ID_POOL_SLOTS, ID_SLOT_SIZE);
	cr_assert_not_null(id_pool);
	id_pool_used = 0;
}

static void teardown(void)
{
	test_dir_store_teardown(dir, fio);
	free(id_pool);
}

TestSuite(changes, .init = setup, .fini = teardown);

static void options_for_test(tally_options *o)
{
	tally_options_default(o);
	o->io = fault_io_table(fio);
	o->background = false;
}

static tally_store *open_with(const tally_options *o)
{
	tally_store *s = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_store_open(dir, o, &s, err);
	cr_assert_eq(rc, 0, "open: %s (%s)", tally_strerror(rc), err);
	return s;
}

static tally_store *open_store(void)
{
	tally_options o;
	options_for_test(&o);
	return open_with(&o);
}

static tally_store *reopen(tally_store *s)
{
	cr_assert_eq(tally_store_close(s), 0);
	return open_store();
}

#define S(x) ((tally_str){(x), (uint32_t)strlen(x)})

/* An id that outlives the call it is used in: a slot of the pool. */
static const char *id_make(const char *tag, uint64_t n)
{
	cr_assert_lt(id_pool_used, ID_POOL_SLOTS, "id pool exhausted");
	char *p = id_pool[id_pool_used++];
	snprintf(p, ID_SLOT_SIZE, "%s-%" PRIu64, tag, n);
	return p;
}

/* An event whose payload is a function of n. */
static tally_event make_event(const char *id, int64_t time_us, uint64_t n)
{
	tally_event e;
	memset(&e, 0, sizeof(e));
	e.event_id = S(id);
	e.time_us = time_us;
	e.type = S("llm.call");
	e.project = S(n % 2 ? "proj-a" : "proj-b");
	e.agent = S("agent-1");
	e.model = S(n % 3 ? "gpt-4o" : "claude-3");
	e.user = S(n % 5 ? "user-1" : "");
	e.status = (uint32_t)(n % TALLY_STATUS_COUNT);
	e.duration_ms = (uint32_t)(n % 5000);
	e.tokens_in = n % 1000 + 1;
	e.tokens_out = n % 77;
	e.cost_micros = (int64_t)(n % 100000) * 3 - 500;
	return e;
}

/* Noon of a UTC day (for today: an hour before NOW, which is 14:13). */
static int64_t noon(int32_t day)
{
	return (int64_t)day * DAY_US + 12 * HOUR_US;
}

/* One batch in one call: checks the status and every code (codes NULL:
 * all ACCEPTED), waits for durability, returns the commit LSN. */
static uint64_t ingest_codes(tally_store *s, const char *tenant, const tally_event *e,
			     size_t count, bool backfill, const uint8_t *codes, const char *when)
{
	tally_ingest_result *r = calloc(count + 1, sizeof(*r));
	cr_assert_not_null(r);
	tally_batch b = {.tenant = tenant, .events = e, .count = count, .results = r,
			 .backfill = backfill};
	uint64_t lsn = 0;
	int rc = tally_ingest_submit_many(s, &b, 1, &lsn);
	cr_assert_eq(rc, 0, "%s: %s (%s)", when, tally_strerror(rc), tally_store_errmsg(s));
	cr_assert_eq(b.status, 0, "%s: batch status %s", when, tally_strerror(b.status));
	for (size_t i = 0; i < count; i++)
		cr_assert_eq(r[i].code, codes ? codes[i] : TALLY_ACCEPTED,
			     "%s: event %zu: %s (reason %u)", when, i, tally_result_name(r[i].code),
			     r[i].reason);
	cr_assert_eq(tally_commit_wait(s, lsn), 0, "%s: commit wait", when);
	free(r);
	return lsn;
}

static uint64_t ingest_all(tally_store *s, const char *tenant, const tally_event *e, size_t count,
			   const char *when)
{
	return ingest_codes(s, tenant, e, count, false, NULL, when);
}

/* ---- reading the map ---------------------------------------------------- */

typedef struct change_list {
	size_t count;
	int32_t days[CHANGE_DAYS_MAX];
	uint64_t lsns[CHANGE_DAYS_MAX];
} change_list;

static change_list list_a, list_b;

static void changes_get(tally_store *s, uint64_t since, change_list *out)
{
	int rc = tally_changed_days(s, since, out->days, out->lsns, CHANGE_DAYS_MAX, &out->count);
	cr_assert_eq(rc, 0, "tally_changed_days(%" PRIu64 "): %s", since, tally_strerror(rc));
}

/* The days changed after `since` are exactly days[0..n) with lsns[0..n). */
static void changes_expect(tally_store *s, uint64_t since, const int32_t *days,
			   const uint64_t *lsns, size_t n, const char *when)
{
	change_list *got = &list_a;
	changes_get(s, since, got);
	cr_assert_eq(got->count, n, "%s: after LSN %" PRIu64 ": %zu days, expected %zu", when, since,
		     got->count, n);
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(got->days[i], days[i], "%s: entry %zu: day %d, expected %d", when, i,
			     got->days[i], days[i]);
		cr_assert_eq(got->lsns[i], lsns[i], "%s: day %d: LSN %" PRIu64 ", expected %" PRIu64,
			     when, days[i], got->lsns[i], lsns[i]);
	}
}

static void lists_equal(const change_list *a, const change_list *b, const char *when)
{
	cr_assert_eq(a->count, b->count, "%s: %zu days, before %zu", when, b->count, a->count);
	for (size_t i = 0; i < a->count; i++)
		cr_assert(a->days[i] == b->days[i] && a->lsns[i] == b->lsns[i],
			  "%s: entry %zu: day %d LSN %" PRIu64 ", before day %d LSN %" PRIu64, when, i,
			  b->days[i], b->lsns[i], a->days[i], a->lsns[i]);
}

static uint64_t day_lsn(tally_store *s, int32_t day)
{
	uint64_t lsn = 12345;
	cr_assert_eq(tally_day_change_lsn(s, day, &lsn), 0);
	return lsn;
}

static int count_fn(void *ctx, const tally_event *e)
{
	(void)e;
	(*(uint64_t *)ctx)++;
	return 0;
}

static uint64_t scan_count(tally_store *s, const char *tenant, int64_t from_us, int64_t to_us)
{
	uint64_t n = 0;
	cr_assert_eq(tally_scan(s, tenant, from_us, to_us, count_fn, &n), 0);
	return n;
}

static void problem_print(void *ctx, const char *message)
{
	(void)ctx;
	fprintf(stderr, "verify: %s\n", message);
}

static int verify_dir(void)
{
	return tally_verify(dir, problem_print, NULL);
}

/* ---- the manifest's bytes ------------------------------------------------ */

static void manifest_load(manifest_bytes *m)
{
	manifest_file_load(dir, m);
}

static void manifest_store(uint8_t *data, size_t size)
{
	manifest_file_store(dir, data, size);
}

/* The first `body` bytes of m, as a manifest of `version` (an older one
 * is a prefix of the newer one's sections). */
static void manifest_store_as(const manifest_bytes *m, size_t body, uint32_t version)
{
	uint8_t *older = malloc(body + 8);
	cr_assert_not_null(older);
	memcpy(older, m->data, body);
	manifest_put_u32(older + 8, version);
	manifest_store(older, body + 8);
	free(older);
}

/* ======================================================================== */

Test(changes, accepted_events_mark_their_days_and_a_late_event_only_its_own)
{
	tally_store *s = open_store();
	const int32_t d0 = TODAY - 2, d1 = TODAY - 1, d2 = TODAY;
	tally_event e[5];

	e[0] = make_event(id_make("a", 1), noon(d0), 1);
	e[1] = make_event(id_make("a", 2), (int64_t)d2 * DAY_US + HOUR_US, 2);
	cr_assert_eq(ingest_all(s, "acme", e, 2, "call 1"), 1);
	e[0] = make_event(id_make("a", 3), noon(d1), 3);
	cr_assert_eq(ingest_all(s, "acme", e, 1, "call 2"), 2);
	e[0] = make_event(id_make("a", 4), (int64_t)d2 * DAY_US + 2 * HOUR_US, 4);
	cr_assert_eq(ingest_all(s, "beta", e, 1, "call 3"), 3);

	int32_t days[3] = {d0, d1, d2};
	uint64_t lsns[3] = {1, 2, 3};
	changes_expect(s, 0, days, lsns, 3, "three days");
	changes_expect(s, 1, days + 1, lsns + 1, 2, "after LSN 1");

	/* The exporter reads the watermark, exports, later asks again. */
	uint64_t watermark = tally_change_watermark(s);
	cr_assert_eq(watermark, 3);
	changes_expect(s, watermark, NULL, NULL, 0, "nothing after the watermark");

	/* A late event on an exported day: only that day. */
	e[0] = make_event(id_make("a", 5), noon(d0) + HOUR_US, 5);
	cr_assert_eq(ingest_all(s, "acme", e, 1, "late event"), 4);
	int32_t late_day[1] = {d0};
	uint64_t late_lsn[1] = {4};
	changes_expect(s, watermark, late_day, late_lsn, 1, "late event on d0");
	cr_assert_eq(day_lsn(s, d0), 4);
	cr_assert_eq(day_lsn(s, d1), 2);
	cr_assert_eq(day_lsn(s, d2), 3);
	cr_assert_eq(day_lsn(s, TODAY - 20), 0, "a day without events never changed");

	/* Duplicates, conflicts and rejected events mark nothing and append
	 * nothing: the commit LSN stays 4. */
	e[0] = make_event(id_make("a", 1), noon(d0), 1);                 /* DUPLICATE */
	e[1] = make_event(id_make("a", 3), noon(d1), 999);               /* CONFLICT */
	e[2] = make_event(id_make("a", 6), noon(TODAY - 40), 6);         /* too old */
	e[3] = make_event(id_make("a", 7), NOW_US + DAY_US, 7);          /* future */
	e[4] = make_event("", noon(d1), 8);                              /* no id */
	uint8_t codes[5] = {TALLY_DUPLICATE, TALLY_CONFLICT, TALLY_REJECTED, TALLY_REJECTED,
			    TALLY_REJECTED};
	cr_assert_eq(ingest_codes(s, "acme", e, 5, false, codes, "nothing new"), 4);
	changes_expect(s, 4, NULL, NULL, 0, "after duplicates, conflicts, rejections");
	days[0] = d0, lsns[0] = 4;
	changes_expect(s, 0, days, lsns, 3, "whole map unchanged");
	cr_assert_eq(tally_change_watermark(s), 4);

	/* A duplicate beside a new event: only the new event's day. */
	e[0] = make_event(id_make("a", 2), (int64_t)d2 * DAY_US + HOUR_US, 2); /* DUPLICATE */
	e[1] = make_event(id_make("a", 9), noon(d1) + MINUTE_US, 9);
	uint8_t mixed[2] = {TALLY_DUPLICATE, TALLY_ACCEPTED};
	cr_assert_eq(ingest_codes(s, "acme", e, 2, false, mixed, "mixed"), 5);
	int32_t one_day[1] = {d1};
	uint64_t one_lsn[1] = {5};
	changes_expect(s, 4, one_day, one_lsn, 1, "only d1 after the mixed call");

	/* The caller's buffer: TALLY_E_LIMIT with the count, the first cap
	 * written; a count-only call; bad arguments. */
	int32_t small_days[2] = {0, 0};
	uint64_t small_lsns[2] = {0, 0};
	size_t count = 0;
	cr_assert_eq(tally_changed_days(s, 0, small_days, small_lsns, 2, &count), TALLY_E_LIMIT);
	cr_assert_eq(count, 3);
	cr_assert(small_days[0] == d0 && small_lsns[0] == 4 && small_days[1] == d1 &&
		  small_lsns[1] == 5);
	cr_assert_eq(tally_changed_days(s, 3, NULL, NULL, 0, &count), TALLY_E_LIMIT);
	cr_assert_eq(count, 2);
	cr_assert_eq(tally_changed_days(s, 5, NULL, NULL, 0, &count), 0);
	cr_assert_eq(count, 0);
	cr_assert_eq(tally_changed_days(s, 0, NULL, NULL, 0, NULL), TALLY_E_INVALID);
	cr_assert_eq(tally_changed_days(s, 0, NULL, small_lsns, 2, &count), TALLY_E_INVALID);
	cr_assert_eq(tally_day_change_lsn(s, d0, NULL), TALLY_E_INVALID);
	cr_assert_eq(tally_store_close(s), 0);
}

Test(changes, map_is_identical_after_replay_flush_compaction_and_reopen)
{
	tally_store *s = open_store();
	tally_event acme[2], beta[2];
	acme[0] = make_event(id_make("m", 1), noon(TODAY - 1), 1);
	acme[1] = make_event(id_make("m", 2), noon(TODAY - 3), 2);
	beta[0] = make_event(id_make("m", 3), noon(TODAY - 3) + HOUR_US, 3);
	beta[1] = make_event(id_make("m", 4), NOW_US - HOUR_US, 4);
	tally_ingest_result r_acme[2], r_beta[2];
	tally_batch batches[3] = {
		{.tenant = "acme", .events = acme, .count = 2, .results = r_acme},
		{.tenant = "bad tenant!", .events = acme, .count = 2, .results = r_acme},
		{.tenant = "beta", .events = beta, .count = 2, .results = r_beta},
	};
	uint64_t lsn = 0;
	cr_assert_eq(tally_ingest_submit_many(s, batches, 3, &lsn), 0);
	cr_assert_eq(batches[1].status, TALLY_E_TENANT);
	cr_assert_eq(lsn, 1, "one WAL record for the call");
	cr_assert_eq(tally_commit_wait(s, lsn), 0);
	tally_event e[1];
	e[0] = make_event(id_make("m", 5), noon(TODAY - 5), 5);
	cr_assert_eq(ingest_all(s, "acme", e, 1, "T-5"), 2);
	e[0] = make_event(id_make("m", 6), noon(TODAY - 1) + HOUR_US, 6);
	cr_assert_eq(ingest_all(s, "beta", e, 1, "T-1 again"), 3);

	int32_t days[5] = {TODAY - 5, TODAY - 3, TODAY - 1, TODAY};
	uint64_t lsns[5] = {2, 1, 3, 1};
	changes_expect(s, 0, days, lsns, 4, "before any restart");
	change_list *before = &list_b;
	changes_get(s, 0, before);

	s = reopen(s);
	changes_expect(s, 0, days, lsns, 4, "after WAL replay");

	cr_assert_eq(tally_flush(s), 0);
	changes_expect(s, 0, days, lsns, 4, "after a flush");
	e[0] = make_event(id_make("m", 7), noon(TODAY - 3) + 2 * HOUR_US, 7);
	cr_assert_eq(ingest_all(s, "acme", e, 1, "T-3 again"), 4);
	cr_assert_eq(tally_flush(s), 0);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_assert_eq(st.segment_file_count, 2);
	lsns[1] = 4;
	changes_expect(s, 0, days, lsns, 4, "after a second flush");
	s = reopen(s);
	changes_expect(s, 0, days, lsns, 4, "after flushes and reopen (manifest only)");

	e[0] = make_event(id_make("m", 8), noon(TODAY - 7), 8);
	cr_assert_eq(ingest_all(s, "beta", e, 1, "T-7"), 5, "LSNs continue after a reopen");
	cr_assert_eq(tally_compact(s), 0);
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_assert_eq(st.segment_file_count, 1);
	int32_t days2[5] = {TODAY - 7, TODAY - 5, TODAY - 3, TODAY - 1, TODAY};
	uint64_t lsns2[5] = {5, 2, 4, 3, 1};
	changes_expect(s, 0, days2, lsns2, 5, "after a compaction");
	changes_get(s, 0, before);
	s = reopen(s);
	changes_expect(s, 0, days2, lsns2, 5, "after compaction, manifest and replay");
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_compact(s), 0);
	s = reopen(s);
	change_list *after = &list_a;
	changes_get(s, 0, after);
	lists_equal(before, after, "after flush, compaction and reopen");
	cr_assert_eq(tally_change_watermark(s), 5);
	cr_assert_eq(scan_count(s, "acme", 0, INT64_MAX), 4);
	cr_assert_eq(scan_count(s, "beta", 0, INT64_MAX), 4);
	cr_assert_eq(tally_store_close(s), 0);

	manifest_bytes m;
	manifest_load(&m);
	cr_assert_eq(manifest_get_u32(m.data + 8), 3, "manifest version 3");
	cr_assert_eq(manifest_get_u32(m.data + m.changes_offset), 5, "five days in the manifest");
	free(m.data);
	cr_assert_eq(verify_dir(), 0, "tally verify accepts the version 3 manifest");
}

Test(changes, backfilled_old_days_are_reported)
{
	tally_store *s = open_store();
	tally_event e[4];
	e[0] = make_event(id_make("b", 1), noon(TODAY - 3000), 1);
	e[1] = make_event(id_make("b", 2), noon(TODAY - 1000), 2);
	e[2] = make_event(id_make("b", 3), noon(TODAY - 400), 3);
	e[3] = make_event(id_make("b", 4), noon(TODAY - 2), 4);
	cr_assert_eq(ingest_codes(s, "acme", e, 4, true, NULL, "backfill"), 1);
	int32_t days[4] = {TODAY - 3000, TODAY - 1000, TODAY - 400, TODAY - 2};
	uint64_t lsns[4] = {1, 1, 1, 1};
	changes_expect(s, 0, days, lsns, 4, "backfilled days");

	/* An old event in a normal batch is rejected and marks nothing. */
	e[0] = make_event(id_make("b", 5), noon(TODAY - 400), 5);
	uint8_t rejected[1] = {TALLY_REJECTED};
	cr_assert_eq(ingest_codes(s, "acme", e, 1, false, rejected, "old, not backfill"), 1);
	changes_expect(s, 1, NULL, NULL, 0, "nothing after the rejected old event");

	/* A re-run import: the old event again is a DUPLICATE, one older than
	 * the backfill horizon is REJECTED, a new one on an old day marks it. */
	e[0] = make_event(id_make("b", 2), noon(TODAY - 1000), 2);
	e[1] = make_event(id_make("b", 6), noon(TODAY - 3700), 6);
	e[2] = make_event(id_make("b", 7), noon(TODAY - 1000) + HOUR_US, 7);
	e[3] = make_event(id_make("b", 1), noon(TODAY - 3000), 11); /* CONFLICT */
	uint8_t codes[4] = {TALLY_DUPLICATE, TALLY_REJECTED, TALLY_ACCEPTED, TALLY_CONFLICT};
	cr_assert_eq(ingest_codes(s, "acme", e, 4, true, codes, "re-run"), 2);
	int32_t one_day[1] = {TODAY - 1000};
	uint64_t one_lsn[1] = {2};
	changes_expect(s, 1, one_day, one_lsn, 1, "the re-run's new event");
	lsns[1] = 2;
	changes_expect(s, 0, days, lsns, 4, "whole map after the re-run");
	cr_assert_eq(day_lsn(s, TODAY - 3700), 0);

	cr_assert_eq(tally_flush(s), 0);
	s = reopen(s);
	changes_expect(s, 0, days, lsns, 4, "backfilled days after flush and reopen");
	cr_assert_eq(tally_store_close(s), 0);
}

Test(changes, manifest_version_3_bytes_and_versions_2_and_1_read)
{
	tally_store *s = open_store();
	tally_event e[1];
	e[0] = make_event(id_make("v", 1), noon(TODAY - 4), 1);
	cr_assert_eq(ingest_all(s, "acme", e, 1, "T-4"), 1);
	cr_assert_eq(tally_flush(s), 0);
	e[0] = make_event(id_make("v", 2), noon(TODAY - 2), 2);
	cr_assert_eq(ingest_all(s, "acme", e, 1, "T-2"), 2);
	cr_assert_eq(tally_store_close(s), 0);

	/* Version 3: the change section holds the flushed day only (T-2 is in
	 * the WAL, after the replay LSN 2), then the next WAL file id: the
	 * flush retired file 1, the WAL's only one, so WAL file ids go on
	 * from 2. */
	manifest_bytes m;
	manifest_load(&m);
	const uint8_t *c = m.data + m.changes_offset;
	cr_assert_eq(manifest_get_u32(m.data + 8), 3);
	cr_assert_eq(manifest_get_u64(m.data + 24), 2, "replay LSN");
	cr_assert_eq(m.wal_offset, m.changes_offset + CHANGE_FIXED_SIZE + CHANGE_ENTRY_SIZE);
	cr_assert_eq(m.size, m.wal_offset + 8 + 8);
	cr_assert_eq(manifest_get_u64(m.data + m.wal_offset), 2, "next WAL file id");
	cr_assert_eq(manifest_get_u32(c), 1, "one day");
	cr_assert_eq((int32_t)manifest_get_u32(c + 4), INT32_MIN, "no floor");
	cr_assert_eq(manifest_get_u64(c + 8), 0, "no floor LSN");
	cr_assert_eq((int32_t)manifest_get_u32(c + 16), TODAY - 4);
	cr_assert_eq(manifest_get_u64(c + 20), 1);

	/* The same manifest as version 2: no next WAL file id (the WAL's own
	 * files give it). */
	manifest_store_as(&m, m.wal_offset, 2);
	cr_assert_eq(verify_dir(), 0, "tally verify reads version 2");
	s = open_store();
	int32_t both_days[2] = {TODAY - 4, TODAY - 2};
	uint64_t both_lsns[2] = {1, 2};
	changes_expect(s, 0, both_days, both_lsns, 2, "version 2: the flushed day and the replayed");
	cr_assert_eq(tally_store_close(s), 0);

	/* The same manifest as version 1: no change section. */
	manifest_store_as(&m, m.changes_offset, 1);
	free(m.data);
	cr_assert_eq(verify_dir(), 0, "tally verify reads version 1");

	s = open_store();
	int32_t wal_day[1] = {TODAY - 2};
	uint64_t wal_lsn[1] = {2};
	changes_expect(s, 0, wal_day, wal_lsn, 1, "version 1: only the replayed day");
	cr_assert_eq(day_lsn(s, TODAY - 4), 0, "flushed before the map existed");
	cr_assert_eq(scan_count(s, "acme", 0, INT64_MAX), 2, "both events are there");
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_store_close(s), 0);

	manifest_load(&m);
	cr_assert_eq(manifest_get_u32(m.data + 8), 3, "the next flush writes version 3");
	cr_assert_eq(manifest_get_u32(m.data + m.changes_offset), 1);
	cr_assert_eq(manifest_get_u64(m.data + m.wal_offset), 3,
		     "after file 2, found at open and retired by the flush");
	cr_assert_eq((int32_t)manifest_get_u32(m.data + m.changes_offset + 16), TODAY - 2);
	free(m.data);
	s = open_store();
	changes_expect(s, 0, wal_day, wal_lsn, 1, "after the upgrade flush");
	cr_assert_eq(tally_store_close(s), 0);
}

Test(changes, damaged_change_section_is_refused_naming_the_offset)
{
	tally_store *s = open_store();
	tally_event e[1];
	e[0] = make_event(id_make("c", 1), noon(TODAY - 4), 1);
	cr_assert_eq(ingest_all(s, "acme", e, 1, "T-4"), 1);
	e[0] = make_event(id_make("c", 2), noon(TODAY - 2), 2);
	cr_assert_eq(ingest_all(s, "acme", e, 1, "T-2"), 2);
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_store_close(s), 0);

	manifest_bytes m;
	manifest_load(&m);
	uint8_t *good = malloc(m.size);
	cr_assert_not_null(good);
	memcpy(good, m.data, m.size);
	size_t first = m.changes_offset + CHANGE_FIXED_SIZE, second = first + CHANGE_ENTRY_SIZE;
	cr_assert_eq(manifest_get_u32(m.data + m.changes_offset), 2);

	struct {
		const char *what;
		size_t field;     /* byte to change */
		size_t bad_entry; /* offset the error must name */
		uint8_t value;
	} cases[] = {
		/* T-2 -> T-5: below the entry before it. */
		{"days out of order", second, second, (uint8_t)(good[second] - 3)},
		/* LSN 2 -> 3: not before the replay LSN (3). */
		{"LSN at the replay LSN", second + 4, second, 3},
		/* LSN 1 -> 0. */
		{"LSN 0", first + 4, first, 0},
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		memcpy(m.data, good, m.size);
		m.data[cases[k].field] = cases[k].value;
		manifest_store(m.data, m.size);
		tally_options o;
		options_for_test(&o);
		char err[TALLY_ERRMSG_SIZE] = "";
		tally_store *bad = NULL;
		int rc = tally_store_open(dir, &o, &bad, err);
		cr_assert_eq(rc, TALLY_E_CORRUPT, "%s: open gave %s", cases[k].what, tally_strerror(rc));
		cr_assert_null(bad);
		char expected[64];
		snprintf(expected, sizeof(expected), "MANIFEST offset %zu:", cases[k].bad_entry);
		cr_assert_not_null(strstr(err, expected), "%s: '%s' lacks '%s'", cases[k].what, err,
				   expected);
		cr_assert_eq(verify_dir(), 1, "%s: one problem", cases[k].what);
	}
	memcpy(m.data, good, m.size);
	manifest_store(m.data, m.size);
	s = open_store();
	int32_t days[2] = {TODAY - 4, TODAY - 2};
	uint64_t lsns[2] = {1, 2};
	changes_expect(s, 0, days, lsns, 2, "the undamaged manifest");
	cr_assert_eq(tally_store_close(s), 0);
	free(good);
	free(m.data);
}

/* The bound: 4,100 days marked, the four smallest go under the floor. */
Test(changes, bounded_map_drops_the_smallest_days_under_a_floor_that_keeps_their_marks)
{
	tally_options o;
	options_for_test(&o);
	o.lateness_future_us = 500 * DAY_US; /* so one batch can reach 440 days ahead */
	tally_store *s = open_with(&o);
	const uint32_t past_days = 3660, future_days = 440;
	_Static_assert(3660 + 440 - CHANGE_DAYS_MAX == 4, "four days dropped");
	const int32_t oldest = TODAY - (int32_t)past_days + 1;
	tally_event *e = malloc(sizeof(*e) * past_days);
	cr_assert_not_null(e);
	for (uint32_t i = 0; i < past_days; i++)
		e[i] = make_event(id_make("f", i), noon(oldest + (int32_t)i), i);
	cr_assert_eq(ingest_codes(s, "acme", e, past_days, true, NULL, "10 years"), 1);
	for (uint32_t i = 0; i < future_days; i++)
		e[i] = make_event(id_make("g", i), noon(TODAY + 1 + (int32_t)i), i);
	cr_assert_eq(ingest_all(s, "acme", e, future_days, "440 days ahead"), 2);
	size_t count = 99;
	cr_assert_eq(tally_changed_days(s, 0, NULL, NULL, 0, &count), TALLY_E_NOTFOUND,
		     "days marked at LSN 1 were dropped");
	cr_assert_eq(count, 0);
	changes_get(s, 1, &list_a);
	cr_assert_eq(list_a.count, future_days);
	for (uint32_t i = 0; i < future_days; i++)
		cr_assert(list_a.days[i] == TODAY + 1 + (int32_t)i && list_a.lsns[i] == 2,
			  "future day %u", i);
	cr_assert_eq(day_lsn(s, oldest), 1, "under the floor");
	cr_assert_eq(day_lsn(s, oldest + 3), 1, "the floor day");
	cr_assert_eq(day_lsn(s, oldest + 4), 1, "the smallest listed day");
	cr_assert_eq(day_lsn(s, TODAY - 10), 1);
	/* A day at or below the floor (oldest + 3), still inside the backfill
	 * horizon: its mark goes to the floor. Then an ordinary day. */
	e[0] = make_event(id_make("h", 1), noon(oldest + 1), 1);
	cr_assert_eq(ingest_codes(s, "acme", e, 1, true, NULL, "below the floor"), 3);
	e[0] = make_event(id_make("h", 2), noon(TODAY - 10), 2);
	cr_assert_eq(ingest_all(s, "acme", e, 1, "T-10"), 4);

	for (int pass = 0; pass < 3; pass++) {
		const char *when = pass == 0 ? "live" : pass == 1 ? "after replay" : "after flush and reopen";
		count = 99;
		cr_assert_eq(tally_changed_days(s, 0, NULL, NULL, 0, &count), TALLY_E_NOTFOUND, "%s",
			     when);
		cr_assert_eq(count, 0);
		cr_assert_eq(tally_changed_days(s, 2, NULL, NULL, 0, &count), TALLY_E_NOTFOUND,
			     "%s: the floor's LSN is now 3", when);
		for (uint32_t i = 0; i < future_days; i++)
			cr_assert_eq(day_lsn(s, TODAY + 1 + (int32_t)i), 2, "%s: future day %u", when, i);
		int32_t one_day[1] = {TODAY - 10};
		uint64_t one_lsn[1] = {4};
		changes_expect(s, 3, one_day, one_lsn, 1, when);
		cr_assert_eq(day_lsn(s, oldest), 3, "%s: under the floor", when);
		cr_assert_eq(day_lsn(s, oldest + 3), 3, "%s: the floor day", when);
		cr_assert_eq(day_lsn(s, oldest + 4), 1, "%s: the smallest listed day", when);
		cr_assert_eq(day_lsn(s, TODAY - 5000), 3, "%s: far below: the floor bound", when);
		cr_assert_eq(day_lsn(s, TODAY + 440), 2, "%s", when);
		cr_assert_eq(day_lsn(s, TODAY + 441), 0, "%s", when);
		cr_assert_eq(tally_store_close(s), 0);
		if (pass == 1) {
			s = open_with(&o);
			cr_assert_eq(tally_flush(s), 0);
			cr_assert_eq(tally_store_close(s), 0);
		}
		s = open_with(&o);
	}
	cr_assert_eq(tally_store_close(s), 0);
	cr_assert_eq(verify_dir(), 0);
	free(e);
}

/* A table that stops the first creation of a segment file (the flush's,
 * after it froze the memtables and released the store lock) until the
 * test lets it go. */
static tally_io gate_io;
static pthread_mutex_t gate_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_armed, gate_reached, gate_released;

static int gate_open(const tally_io *io, const char *path, int flags, int mode)
{
	(void)io;
	const tally_io *inner = fault_io_table(fio);
	if ((flags & O_CREAT) && strstr(path, "/segments/")) {
		pthread_mutex_lock(&gate_mutex);
		if (gate_armed) {
			gate_armed = 0;
			gate_reached = 1;
			pthread_cond_broadcast(&gate_cond);
			while (!gate_released)
				pthread_cond_wait(&gate_cond, &gate_mutex);
		}
		pthread_mutex_unlock(&gate_mutex);
	}
	return inner->open(inner, path, flags, mode);
}

static void *flush_main(void *arg)
{
	return (void *)(intptr_t)tally_flush(arg);
}

/* The manifest a flush publishes claims exactly the marks of what it
 * flushed: an event stored while the flush runs (after the freeze) is
 * left to the WAL, or the manifest would hold an LSN its replay LSN does
 * not cover. */
Test(changes, events_stored_while_a_flush_runs_stay_out_of_its_manifest)
{
	gate_io = *fault_io_table(fio);
	gate_io.open = gate_open;
	tally_options o;
	options_for_test(&o);
	o.io = &gate_io;
	tally_store *s = open_with(&o);
	tally_event e[1];
	e[0] = make_event(id_make("g", 1), noon(TODAY - 3), 1);
	cr_assert_eq(ingest_all(s, "acme", e, 1, "T-3"), 1);

	gate_armed = 1;
	pthread_t flusher;
	cr_assert_eq(pthread_create(&flusher, NULL, flush_main, s), 0);
	pthread_mutex_lock(&gate_mutex);
	while (!gate_reached)
		pthread_cond_wait(&gate_cond, &gate_mutex);
	pthread_mutex_unlock(&gate_mutex);
	/* Frozen (flush boundary 2), not yet published. */
	e[0] = make_event(id_make("g", 2), noon(TODAY - 1), 2);
	cr_assert_eq(ingest_all(s, "acme", e, 1, "T-1 during the flush"), 2);
	int32_t days[2] = {TODAY - 3, TODAY - 1};
	uint64_t lsns[2] = {1, 2};
	changes_expect(s, 0, days, lsns, 2, "during the flush");
	pthread_mutex_lock(&gate_mutex);
	gate_released = 1;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_mutex);
	void *flush_rc;
	cr_assert_eq(pthread_join(flusher, &flush_rc), 0);
	cr_assert_eq((intptr_t)flush_rc, 0, "flush: %s", tally_strerror((int)(intptr_t)flush_rc));
	changes_expect(s, 0, days, lsns, 2, "after the flush");
	cr_assert_eq(tally_store_close(s), 0);

	manifest_bytes m;
	manifest_load(&m);
	cr_assert_eq(manifest_get_u64(m.data + 24), 2, "replay LSN: the flush boundary");
	cr_assert_eq(manifest_get_u32(m.data + m.changes_offset), 1, "only the flushed day");
	cr_assert_eq((int32_t)manifest_get_u32(m.data + m.changes_offset + 16), TODAY - 3);
	free(m.data);
	s = open_with(&o);
	changes_expect(s, 0, days, lsns, 2, "after reopen");
	cr_assert_eq(tally_store_close(s), 0);
	cr_assert_eq(verify_dir(), 0);
}

/* The race the watermark must survive: an event appended (LSN assigned,
 * visible to reads) but not durable when the watermark is read. */
Test(changes, event_not_yet_durable_at_the_watermark_is_reported_after_it)
{
	tally_store *s = open_store();
	tally_event e[1];
	e[0] = make_event(id_make("w", 1), noon(TODAY - 1), 1);
	cr_assert_eq(ingest_all(s, "acme", e, 1, "T-1"), 1);
	cr_assert_eq(tally_store_close(s), 0);

	/* With the clock frozen, a group commit window keeps the writer
	 * waiting: a submitted batch stays appended but not durable. */
	tally_options o;
	options_for_test(&o);
	o.group_commit_window_us = 200000;
	s = open_with(&o);
	tally_ingest_result r[1];
	uint64_t lsn = 0;
	e[0] = make_event(id_make("w", 2), noon(TODAY - 2), 2);
	cr_assert_eq(tally_ingest_submit(s, "acme", e, 1, r, &lsn), 0);
	cr_assert_eq(lsn, 2);
	uint64_t watermark = tally_change_watermark(s);
	cr_assert_eq(watermark, 1, "LSN 2 is not durable");
	/* The export's read sees the event... */
	cr_assert_eq(scan_count(s, "acme", (int64_t)(TODAY - 2) * DAY_US,
				(int64_t)(TODAY - 1) * DAY_US), 1);
	/* ...and the day is reported after the watermark all the same. */
	int32_t day[1] = {TODAY - 2};
	uint64_t day_lsn2[1] = {2};
	changes_expect(s, watermark, day, day_lsn2, 1, "appended, not durable");
	/* The barrier returns once everything a read saw is durable. */
	fault_io_clock_advance_us(fio, 1000000);
	cr_assert_eq(tally_change_barrier(s), 0);
	cr_assert_geq(tally_durable_lsn(s), 2);
	cr_assert_eq(tally_change_watermark(s), 2);
	cr_assert_eq(tally_store_close(s), 0);
	s = open_store();
	changes_expect(s, watermark, day, day_lsn2, 1, "after a restart");
	cr_assert_eq(tally_store_close(s), 0);
}

Test(changes, barrier_fails_when_the_wal_fsync_fails)
{
	tally_store *s = open_store();
	cr_assert_eq(tally_change_barrier(s), 0, "nothing pending");
	fault_io_path_filter_set(fio, ".wal");
	fault_io_fsync_fail_from(fio, 1, EIO);
	tally_ingest_result r[1];
	tally_event e[1];
	e[0] = make_event(id_make("x", 1), noon(TODAY - 1), 1);
	uint64_t lsn = 0;
	cr_assert_eq(tally_ingest_submit(s, "acme", e, 1, r, &lsn), 0);
	cr_assert_eq(tally_change_barrier(s), -EIO, "what the read saw may be lost");
	cr_assert_neq(tally_change_barrier(s), 0, "and stays so");
	cr_assert_neq(tally_store_close(s), 0);
}

/* ---- crashes ------------------------------------------------------------ */

#define CRASH_DAYS 35              /* days TODAY - 34 .. TODAY: inside the horizon */
#define CRASH_ROUNDS 12
#define CRASH_BATCHES 40           /* per child */
#define CRASH_CUT_OPS_MAX 160      /* power cut at one of the first mutating calls */
#define CRASH_EVENTS_MAX 8         /* new events per batch */
#define CRASH_EXIT_OK 0
#define CRASH_EXIT_OPEN 2
#define CRASH_EXIT_WORK 3   /* a flush, a compaction or the pipe failed */
#define CRASH_EXIT_INGEST 4
#define CRASH_EXIT_RESULT 5 /* an event's result was not the expected one */

enum { MSG_SUBMIT = 1, MSG_ACK = 2 };

typedef struct crash_msg {
	uint32_t kind;
	uint32_t batch;
	uint64_t lsn;      /* MSG_ACK: the commit LSN */
	uint64_t day_mask; /* MSG_SUBMIT: bit k = day TODAY - k has a new event */
} crash_msg;

static uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t seed_get(const char *name)
{
	const char *env = getenv("SEED");
	uint64_t seed;
	if (env && *env) {
		seed = strtoull(env, NULL, 0);
	} else {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		seed = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
		seed ^= (uint64_t)getpid() << 32;
	}
	fprintf(stderr, "test_changes %s: SEED=0x%016" PRIx64 "\n", name, seed);
	return seed;
}

static void child_send(int fd, uint32_t kind, uint32_t batch, uint64_t lsn, uint64_t mask)
{
	crash_msg m = {kind, batch, lsn, mask};
	if (write(fd, &m, sizeof(m)) != (ssize_t)sizeof(m))
		_exit(CRASH_EXIT_WORK);
}


/* Event i of batch b of a crash round: a pure function of its numbers, so
 * the writer can re-send it without remembering it. */
static void crash_event(char *id, tally_event *e, uint64_t seed, uint32_t round, uint32_t batch,
			uint32_t i, uint32_t *back)
{
	uint64_t state = seed ^ ((uint64_t)round << 48) ^ ((uint64_t)batch << 24) ^ i;
	*back = (uint32_t)(rng_next(&state) % CRASH_DAYS);
	snprintf(id, ID_SLOT_SIZE, "r%u-b%u-i%u", round, batch, i);
	*e = make_event(id, NOW_US - (int64_t)*back * DAY_US - MINUTE_US,
			(uint64_t)round * 1000000 + batch * 100 + i);
}

/* The writer: batches of new events on random days of the last 35, with
 * event 0 of an acknowledged batch re-sent (a DUPLICATE, which must not
 * mark its day) now and then, flushes and compactions between them. Ends
 * without closing the store, or at the power cut (power_io exits with
 * POWER_IO_EXIT_CODE). No criterion in here: failures are exit codes. */
static void crash_child(int fd, uint64_t seed, uint32_t round, uint64_t cut_after)
{
	fault_io *f = fault_io_create();
	if (!f)
		_exit(CRASH_EXIT_OPEN);
	fault_io_clock_set_us(f, NOW_US);
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(f);
	o.background = false;
	if (cut_after) {
		power_io *p = power_io_create(fault_io_table(f));
		if (!p)
			_exit(CRASH_EXIT_OPEN);
		power_io_cut_after(p, cut_after);
		o.io = power_io_table(p);
	}
	tally_store *s = NULL;
	if (tally_store_open(dir, &o, &s, NULL))
		_exit(CRASH_EXIT_OPEN);
	uint64_t rng = seed ^ ((uint64_t)round << 32) ^ 0x5eed;
	char ids[CRASH_EVENTS_MAX + 1][ID_SLOT_SIZE];
	tally_event e[CRASH_EVENTS_MAX + 1];
	tally_ingest_result r[CRASH_EVENTS_MAX + 1];
	uint32_t acked = 0; /* batches 0 .. acked - 1 were acknowledged */
	for (uint32_t b = 0; b < CRASH_BATCHES; b++) {
		uint64_t x = rng_next(&rng);
		if (x % 9 == 0 && tally_flush(s))
			_exit(CRASH_EXIT_WORK);
		if (x % 23 == 0 && tally_compact(s))
			_exit(CRASH_EXIT_WORK);
		uint32_t n = 1 + (uint32_t)((x >> 8) % CRASH_EVENTS_MAX), count = n, back;
		uint64_t mask = 0;
		for (uint32_t i = 0; i < n; i++) {
			crash_event(ids[i], &e[i], seed, round, b, i, &back);
			mask |= UINT64_C(1) << back;
		}
		if (acked && (x >> 16) % 3 == 0) {
			crash_event(ids[count], &e[count], seed, round, (uint32_t)((x >> 24) % acked), 0,
				    &back);
			count++;
		}
		child_send(fd, MSG_SUBMIT, b, 0, mask);
		uint64_t lsn = 0;
		if (tally_ingest_submit(s, "acme", e, count, r, &lsn) || tally_commit_wait(s, lsn))
			_exit(CRASH_EXIT_INGEST);
		for (uint32_t i = 0; i < count; i++)
			if (r[i].code != (i < n ? TALLY_ACCEPTED : TALLY_DUPLICATE))
				_exit(CRASH_EXIT_RESULT);
		child_send(fd, MSG_ACK, b, lsn, 0);
		acked = b + 1;
	}
	_exit(CRASH_EXIT_OK); /* like a kill: the store is never closed */
}

/* What the parent knows: per day TODAY - k, the change LSN the
 * acknowledged (and resolved) batches give it. */
typedef struct crash_oracle {
	uint64_t lsn[CRASH_DAYS];
	uint64_t last_lsn;
} crash_oracle;

static void oracle_mark(crash_oracle *o, uint64_t mask, uint64_t lsn)
{
	for (uint32_t k = 0; k < CRASH_DAYS; k++)
		if ((mask >> k & 1) && lsn > o->lsn[k])
			o->lsn[k] = lsn;
	if (lsn > o->last_lsn)
		o->last_lsn = lsn;
}

static bool oracle_matches(const crash_oracle *o, const change_list *l)
{
	size_t j = 0;
	for (int k = CRASH_DAYS - 1; k >= 0; k--) {
		if (!o->lsn[k])
			continue;
		if (j >= l->count || l->days[j] != TODAY - k || l->lsns[j] != o->lsn[k])
			return false;
		j++;
	}
	return j == l->count;
}

typedef struct crash_acked {
	uint64_t mask;
	uint64_t lsn;
} crash_acked;

/* Rounds of a forked writer on one directory, each ended by a power cut
 * (cut true) or by exiting without close; after each, the parent recovers
 * the store and compares the whole map with the oracle. */
static void crash_rounds(bool cut, const char *name)
{
	uint64_t seed = seed_get(name);
	uint64_t rng = seed;
	crash_oracle o;
	memset(&o, 0, sizeof(o));
	uint32_t in_flight_present = 0, in_flight_absent = 0;
	for (uint32_t round = 0; round < CRASH_ROUNDS; round++) {
		uint64_t cut_after = cut ? 1 + rng_next(&rng) % CRASH_CUT_OPS_MAX : 0;
		int fds[2];
		cr_assert_eq(pipe(fds), 0);
		fflush(NULL);
		pid_t pid = fork();
		cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
		if (pid == 0) {
			close(fds[0]);
			crash_child(fds[1], seed, round, cut_after);
		}
		close(fds[1]);
		crash_acked acked[CRASH_BATCHES];
		uint32_t acked_count = 0;
		crash_msg m, pending = {0, 0, 0, 0};
		bool in_flight = false;
		size_t got = 0;
		for (;;) {
			ssize_t n = read(fds[0], (uint8_t *)&m + got, sizeof(m) - got);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			got += (size_t)n;
			if (got < sizeof(m))
				continue;
			got = 0;
			if (m.kind == MSG_SUBMIT) {
				pending = m;
				in_flight = true;
				continue;
			}
			cr_assert(m.kind == MSG_ACK && in_flight && m.batch == pending.batch,
				  "SEED=0x%016" PRIx64 " round %u: stray message", seed, round);
			cr_assert_eq(m.lsn, o.last_lsn + 1,
				     "SEED=0x%016" PRIx64 " round %u batch %u: commit LSN %" PRIu64
				     ", expected the next one, %" PRIu64, seed, round, m.batch, m.lsn,
				     o.last_lsn + 1);
			oracle_mark(&o, pending.day_mask, m.lsn);
			acked[acked_count++] = (crash_acked){pending.day_mask, m.lsn};
			in_flight = false;
		}
		close(fds[0]);
		int status;
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFEXITED(status) && (WEXITSTATUS(status) == CRASH_EXIT_OK ||
						(cut && WEXITSTATUS(status) == POWER_IO_EXIT_CODE)),
			  "SEED=0x%016" PRIx64 " round %u: child status 0x%x", seed, round, status);

		tally_store *s = open_store();
		changes_get(s, 0, &list_a);
		if (!oracle_matches(&o, &list_a)) {
			/* Only the batch in flight may add to it, wholly, with the
			 * next LSN. */
			crash_oracle with = o;
			cr_assert(in_flight, "SEED=0x%016" PRIx64 " round %u: the map (%zu days) is not "
				  "the acknowledged batches' and nothing was in flight", seed, round,
				  list_a.count);
			oracle_mark(&with, pending.day_mask, o.last_lsn + 1);
			cr_assert(oracle_matches(&with, &list_a),
				  "SEED=0x%016" PRIx64 " round %u: the map (%zu days) is neither the "
				  "acknowledged batches' nor theirs and the batch in flight", seed, round,
				  list_a.count);
			o = with;
			in_flight_present++;
		} else if (in_flight) {
			in_flight_absent++;
		}
		/* Stated as the issue puts it: every acknowledged event's day has
		 * a change LSN at least its batch's commit LSN. */
		for (uint32_t a = 0; a < acked_count; a++)
			for (uint32_t k = 0; k < CRASH_DAYS; k++)
				if (acked[a].mask >> k & 1)
					cr_assert_geq(day_lsn(s, TODAY - (int32_t)k), acked[a].lsn);
		cr_assert_eq(tally_change_watermark(s), o.last_lsn,
			     "SEED=0x%016" PRIx64 " round %u: the watermark is the last LSN", seed,
			     round);
		cr_assert_eq(tally_store_close(s), 0);
		cr_assert_eq(verify_dir(), 0, "SEED=0x%016" PRIx64 " round %u: tally verify", seed,
			     round);
	}
	fprintf(stderr, "test_changes %s: last LSN %" PRIu64 ", batches in flight found present %u, "
		"absent %u\n", name, o.last_lsn, in_flight_present, in_flight_absent);
	cr_assert_gt(o.last_lsn, 0, "some batches were acknowledged");
}

Test(changes, writer_stopped_without_close_recovers_every_acknowledged_mark)
{
	crash_rounds(false, "stop without close");
}

Test(changes, power_cut_at_random_writes_recovers_every_acknowledged_mark)
{
	crash_rounds(true, "power cut");
}

/* ---- property: random calls against a brute-force oracle ---------------- */

#define PROP_STEPS 300
#define PROP_TENANTS 3
#define PROP_STORED_MAX 8192
#define PROP_BATCH_EVENTS_MAX 10
#define PROP_HORIZON_DAYS 34 /* TODAY - 33 .. TODAY: inside the 35-day horizon */
#define PROP_OLD_DAYS 24     /* backfill days, TODAY - 40 - 120 j */
#define PROP_DAYS (PROP_HORIZON_DAYS + PROP_OLD_DAYS)
#define PROP_CONFLICT_SHIFT 7777777 /* a payload seed that changes every field */

static const char *const prop_tenants[PROP_TENANTS] = {"t0", "t1", "t2"};

typedef struct prop_event {
	uint64_t n;
	int64_t time_us;
	uint32_t tenant;
} prop_event;

typedef struct prop_state {
	uint64_t rng;
	int32_t days[PROP_DAYS];  /* ascending */
	uint64_t lsns[PROP_DAYS]; /* the oracle: brute force over every accepted event */
	uint64_t last_lsn;
	uint64_t next_n;
	prop_event stored[PROP_STORED_MAX];
	size_t stored_count;
} prop_state;

static prop_state prop;

static size_t prop_day_index(int32_t day)
{
	for (size_t i = 0; i < PROP_DAYS; i++)
		if (prop.days[i] == day)
			return i;
	cr_assert_fail("day %d is not a candidate", day);
	return 0;
}

static void prop_check(tally_store *s, uint64_t seed, int step, const char *action)
{
	uint64_t sinces[2] = {0, rng_next(&prop.rng) % (prop.last_lsn + 2)};
	for (int k = 0; k < 2; k++) {
		changes_get(s, sinces[k], &list_a);
		size_t j = 0;
		for (size_t i = 0; i < PROP_DAYS; i++) {
			if (prop.lsns[i] <= sinces[k])
				continue;
			cr_assert(j < list_a.count && list_a.days[j] == prop.days[i] &&
				  list_a.lsns[j] == prop.lsns[i],
				  "SEED=0x%016" PRIx64 " step %d (%s): after LSN %" PRIu64 ", entry %zu: "
				  "expected day %d LSN %" PRIu64, seed, step, action, sinces[k], j,
				  prop.days[i], prop.lsns[i]);
			j++;
		}
		cr_assert_eq(list_a.count, j, "SEED=0x%016" PRIx64 " step %d (%s): after LSN %" PRIu64
			     ": %zu days, expected %zu", seed, step, action, sinces[k], list_a.count, j);
	}
	size_t i = rng_next(&prop.rng) % PROP_DAYS;
	cr_assert_eq(day_lsn(s, prop.days[i]), prop.lsns[i], "SEED=0x%016" PRIx64 " step %d: day %d",
		     seed, step, prop.days[i]);
	cr_assert_eq(tally_change_watermark(s), prop.last_lsn,
		     "SEED=0x%016" PRIx64 " step %d (%s): watermark", seed, step, action);
}

/* One event of a batch for tenant t; sets the code the store must give. */
static tally_event prop_event_make(uint32_t t, bool backfill, uint8_t *code, prop_event *accepted)
{
	uint64_t x = rng_next(&prop.rng);
	uint32_t kind = (uint32_t)(x % 100);
	const int64_t horizon_us = NOW_US - 35 * DAY_US;
	if (kind < 30 && prop.stored_count) {
		/* A stored event of this tenant again: same payload (DUPLICATE)
		 * or another one (CONFLICT). Old ones only in a backfill batch. */
		for (int tries = 0; tries < 8; tries++) {
			const prop_event *p = &prop.stored[rng_next(&prop.rng) % prop.stored_count];
			if (p->tenant != t || (p->time_us < horizon_us && !backfill))
				continue;
			bool conflict = kind < 8;
			*code = conflict ? TALLY_CONFLICT : TALLY_DUPLICATE;
			return make_event(id_make("p", p->n), p->time_us,
					  conflict ? p->n + PROP_CONFLICT_SHIFT : p->n);
		}
	}
	if (kind >= 30 && kind < 42) {
		*code = TALLY_REJECTED;
		uint32_t which = (uint32_t)((x >> 8) % 3);
		int64_t too_old = backfill ? NOW_US - 3700 * DAY_US : NOW_US - 40 * DAY_US;
		return make_event(which == 2 ? "" : id_make("q", prop.next_n++),
				  which == 0 ? too_old : which == 1 ? NOW_US + DAY_US : NOW_US - HOUR_US,
				  x);
	}
	/* A new event: a day inside the horizon, or (backfill) an old one. */
	size_t i = backfill && (x >> 8) % 2 ? (x >> 16) % PROP_OLD_DAYS
					    : PROP_OLD_DAYS + (x >> 16) % PROP_HORIZON_DAYS;
	int32_t day = prop.days[i];
	int64_t start = (int64_t)day * DAY_US;
	int64_t span = day == TODAY ? NOW_US - start : DAY_US;
	accepted->n = prop.next_n++;
	accepted->time_us = start + (int64_t)((x >> 24) % (uint64_t)span);
	accepted->tenant = t;
	*code = TALLY_ACCEPTED;
	return make_event(id_make("p", accepted->n), accepted->time_us, accepted->n);
}

static void prop_ingest(tally_store *s, uint64_t seed, int step)
{
	tally_batch batches[PROP_TENANTS];
	tally_event events[PROP_TENANTS][PROP_BATCH_EVENTS_MAX];
	tally_ingest_result results[PROP_TENANTS][PROP_BATCH_EVENTS_MAX];
	uint8_t codes[PROP_TENANTS][PROP_BATCH_EVENTS_MAX];
	prop_event accepted[PROP_TENANTS * PROP_BATCH_EVENTS_MAX];
	size_t accepted_count = 0;
	uint32_t batch_count = 1 + (uint32_t)(rng_next(&prop.rng) % PROP_TENANTS);
	uint32_t first = (uint32_t)(rng_next(&prop.rng) % PROP_TENANTS);
	for (uint32_t b = 0; b < batch_count; b++) {
		uint32_t t = (first + b) % PROP_TENANTS;
		bool backfill = rng_next(&prop.rng) % 10 < 3;
		uint32_t n = 1 + (uint32_t)(rng_next(&prop.rng) % PROP_BATCH_EVENTS_MAX);
		for (uint32_t i = 0; i < n; i++) {
			prop_event a;
			events[b][i] = prop_event_make(t, backfill, &codes[b][i], &a);
			if (codes[b][i] == TALLY_ACCEPTED)
				accepted[accepted_count++] = a;
		}
		batches[b] = (tally_batch){.tenant = prop_tenants[t], .events = events[b], .count = n,
					   .results = results[b], .backfill = backfill};
	}
	uint64_t lsn = 0;
	int rc = tally_ingest_submit_many(s, batches, batch_count, &lsn);
	cr_assert_eq(rc, 0, "SEED=0x%016" PRIx64 " step %d: %s (%s)", seed, step, tally_strerror(rc),
		     tally_store_errmsg(s));
	cr_assert_eq(tally_commit_wait(s, lsn), 0);
	for (uint32_t b = 0; b < batch_count; b++) {
		cr_assert_eq(batches[b].status, 0);
		for (size_t i = 0; i < batches[b].count; i++)
			cr_assert_eq(results[b][i].code, codes[b][i],
				     "SEED=0x%016" PRIx64 " step %d batch %u event %zu: %s, expected %s",
				     seed, step, b, i, tally_result_name(results[b][i].code),
				     tally_result_name(codes[b][i]));
	}
	if (accepted_count == 0) {
		cr_assert_eq(lsn, prop.last_lsn, "SEED=0x%016" PRIx64 " step %d: nothing appended",
			     seed, step);
		return;
	}
	cr_assert_eq(lsn, prop.last_lsn + 1, "SEED=0x%016" PRIx64 " step %d: one record per call",
		     seed, step);
	prop.last_lsn = lsn;
	for (size_t i = 0; i < accepted_count; i++) {
		int64_t day = accepted[i].time_us / DAY_US;
		size_t d = prop_day_index((int32_t)day);
		if (lsn > prop.lsns[d])
			prop.lsns[d] = lsn;
		cr_assert_lt(prop.stored_count, PROP_STORED_MAX);
		prop.stored[prop.stored_count++] = accepted[i];
	}
}

Test(changes, random_calls_flushes_compactions_and_reopens_match_a_brute_force_oracle)
{
	uint64_t seed = seed_get("property");
	memset(&prop, 0, sizeof(prop));
	prop.rng = seed;
	for (size_t j = 0; j < PROP_OLD_DAYS; j++)
		prop.days[j] = TODAY - 40 - 120 * (int32_t)(PROP_OLD_DAYS - 1 - j);
	for (size_t k = 0; k < PROP_HORIZON_DAYS; k++)
		prop.days[PROP_OLD_DAYS + k] = TODAY - (PROP_HORIZON_DAYS - 1) + (int32_t)k;
	tally_store *s = open_store();
	uint32_t counts[4] = {0, 0, 0, 0};
	for (int step = 0; step < PROP_STEPS; step++) {
		id_pool_used = 0;
		uint32_t action = (uint32_t)(rng_next(&prop.rng) % 100);
		const char *name;
		if (action < 70) {
			name = "ingest";
			prop_ingest(s, seed, step);
			counts[0]++;
		} else if (action < 80) {
			name = "flush";
			cr_assert_eq(tally_flush(s), 0);
			counts[1]++;
		} else if (action < 87) {
			name = "compact";
			cr_assert_eq(tally_compact(s), 0);
			counts[2]++;
		} else {
			name = "reopen";
			s = reopen(s);
			counts[3]++;
		}
		prop_check(s, seed, step, name);
	}
	cr_assert_eq(tally_store_close(s), 0);
	cr_assert_eq(verify_dir(), 0);
	size_t marked = 0;
	for (size_t i = 0; i < PROP_DAYS; i++)
		marked += prop.lsns[i] != 0;
	fprintf(stderr, "test_changes property: %u calls, %u flushes, %u compactions, %u reopens; "
		"%zu events, %zu days marked, last LSN %" PRIu64 "\n", counts[0], counts[1], counts[2],
		counts[3], prop.stored_count, marked, prop.last_lsn);
	cr_assert_gt(marked, PROP_HORIZON_DAYS / 2, "the run marked days");
}

/* ---- the map alone: any order of marks, the bound, the encoding --------- */

#define MAP_MARKS 30000
#define MAP_DAY_RANGE_MAX 6000 /* wider than CHANGE_DAYS_MAX: days are dropped */

static int32_t map_mark_day[MAP_MARKS];
static uint64_t map_mark_lsn[MAP_MARKS];
static uint64_t map_oracle[MAP_DAY_RANGE_MAX]; /* per day offset: the highest LSN, 0 none */

/* Both maps hold exactly what the brute force says: the CHANGE_DAYS_MAX
 * highest days ever marked with their highest LSN, the floor the highest
 * other day and the highest LSN of any mark on the other days. */
static void map_expect(const change_map *m, int32_t base, uint32_t range, uint64_t seed,
		       const char *when)
{
	uint32_t kept = 0, i = range;
	int32_t floor_day = CHANGE_FLOOR_NONE;
	uint64_t floor_lsn = 0;
	uint32_t marked = 0;
	for (uint32_t d = 0; d < range; d++)
		marked += map_oracle[d] != 0;
	uint32_t listed = marked < CHANGE_DAYS_MAX ? marked : CHANGE_DAYS_MAX;
	cr_assert_eq(m->count, listed, "SEED=0x%016" PRIx64 " %s: %u days, expected %u", seed, when,
		     m->count, listed);
	while (i-- > 0) {
		if (!map_oracle[i])
			continue;
		if (kept < listed) {
			uint32_t at = listed - 1 - kept;
			cr_assert(m->days[at] == base + (int32_t)i && m->lsns[at] == map_oracle[i],
				  "SEED=0x%016" PRIx64 " %s: entry %u: day %d LSN %" PRIu64 ", expected "
				  "day %d LSN %" PRIu64, seed, when, at, m->days[at], m->lsns[at],
				  base + (int32_t)i, map_oracle[i]);
			kept++;
			continue;
		}
		if (floor_day == CHANGE_FLOOR_NONE)
			floor_day = base + (int32_t)i;
		if (map_oracle[i] > floor_lsn)
			floor_lsn = map_oracle[i];
	}
	cr_assert(m->floor_day == floor_day && m->floor_lsn == floor_lsn,
		  "SEED=0x%016" PRIx64 " %s: floor day %d LSN %" PRIu64 ", expected %d %" PRIu64,
		  seed, when, m->floor_day, m->floor_lsn, floor_day, floor_lsn);
	for (uint32_t d = 0; d < range; d += 7) {
		uint64_t want = base + (int32_t)d <= floor_day && floor_day != CHANGE_FLOOR_NONE
					? floor_lsn
					: map_oracle[d];
		cr_assert_eq(change_map_day_lsn(m, base + (int32_t)d), want,
			     "SEED=0x%016" PRIx64 " %s: day %d", seed, when, base + (int32_t)d);
	}
}

Test(changes, change_map_matches_a_brute_force_oracle_in_any_order_of_marks)
{
	uint64_t seed = seed_get("change map");
	uint64_t rng = seed;
	change_map a, b, c;
	cr_assert_eq(change_map_init(&a), 0);
	cr_assert_eq(change_map_init(&b), 0);
	cr_assert_eq(change_map_init(&c), 0);
	uint8_t *encoded = malloc(CHANGE_SECTION_FIXED_SIZE + CHANGE_DAYS_MAX * CHANGE_ENTRY_SIZE);
	cr_assert_not_null(encoded);
	const uint32_t ranges[3] = {3000, CHANGE_DAYS_MAX + 1, MAP_DAY_RANGE_MAX};
	for (int round = 0; round < 3; round++) {
		uint32_t range = ranges[round];
		int32_t base = -1000 + (int32_t)(rng_next(&rng) % 30000);
		memset(map_oracle, 0, sizeof(map_oracle));
		change_map_free(&a);
		change_map_free(&b);
		cr_assert_eq(change_map_init(&a), 0);
		cr_assert_eq(change_map_init(&b), 0);
		uint64_t lsn_max = 0;
		for (uint32_t k = 0; k < MAP_MARKS; k++) {
			/* Runs of one day (the hint), LSNs in any order. */
			uint32_t d = k && rng_next(&rng) % 3 == 0
					     ? (uint32_t)(map_mark_day[k - 1] - base)
					     : (uint32_t)(rng_next(&rng) % range);
			map_mark_day[k] = base + (int32_t)d;
			map_mark_lsn[k] = 1 + rng_next(&rng) % 1000000;
			if (map_mark_lsn[k] > map_oracle[d])
				map_oracle[d] = map_mark_lsn[k];
			if (map_mark_lsn[k] > lsn_max)
				lsn_max = map_mark_lsn[k];
			change_map_mark(&a, map_mark_day[k], map_mark_lsn[k]);
		}
		/* The same marks shuffled (Fisher-Yates) give the same map. */
		for (uint32_t k = MAP_MARKS - 1; k > 0; k--) {
			uint32_t j = (uint32_t)(rng_next(&rng) % (k + 1));
			int32_t day = map_mark_day[k];
			uint64_t lsn = map_mark_lsn[k];
			map_mark_day[k] = map_mark_day[j], map_mark_lsn[k] = map_mark_lsn[j];
			map_mark_day[j] = day, map_mark_lsn[j] = lsn;
		}
		for (uint32_t k = 0; k < MAP_MARKS; k++)
			change_map_mark(&b, map_mark_day[k], map_mark_lsn[k]);
		char when[64];
		snprintf(when, sizeof(when), "range %u, in order", range);
		map_expect(&a, base, range, seed, when);
		snprintf(when, sizeof(when), "range %u, shuffled", range);
		map_expect(&b, base, range, seed, when);

		/* Lists after random watermarks. */
		for (int q = 0; q < 20; q++) {
			uint64_t since = rng_next(&rng) % (lsn_max + 2);
			size_t count = 0;
			int rc = change_map_list(&a, since, list_a.days, list_a.lsns, CHANGE_DAYS_MAX,
						 &count);
			if (since < a.floor_lsn) {
				cr_assert_eq(rc, TALLY_E_NOTFOUND);
				cr_assert_eq(count, 0);
				continue;
			}
			cr_assert_eq(rc, 0);
			size_t j = 0;
			for (uint32_t i = 0; i < a.count; i++)
				if (a.lsns[i] > since) {
					cr_assert(j < count && list_a.days[j] == a.days[i] &&
						  list_a.lsns[j] == a.lsns[i]);
					j++;
				}
			cr_assert_eq(count, j);
		}

		/* Encoding round trip; the LSN bound is checked. */
		size_t size = change_map_encoded_size(&a), used = 0, bad = 0;
		const char *why = NULL;
		cr_assert_eq(size, CHANGE_SECTION_FIXED_SIZE + (size_t)a.count * CHANGE_ENTRY_SIZE);
		change_map_encode(&a, encoded);
		cr_assert_eq(change_map_decode(&c, encoded, size, lsn_max + 1, &used, &bad, &why), 0);
		cr_assert_eq(used, size);
		map_expect(&c, base, range, seed, "decoded");
		cr_assert_eq(change_map_decode(&c, encoded, size, lsn_max, &used, &bad, &why),
			     TALLY_E_CORRUPT, "an LSN at the bound is refused");
		cr_assert_eq(c.count, 0, "a refused section leaves the map empty");
		cr_assert_eq(change_map_decode(&c, encoded, size - 1, lsn_max + 1, &used, &bad, &why),
			     TALLY_E_CORRUPT, "a truncated section is refused");
		change_map_copy(&c, &a);
		map_expect(&c, base, range, seed, "copied");
	}

	/* A section with a floor and room left (a build with a smaller bound
	 * wrote it): a day at or below the floor stays under it. */
	uint8_t small[CHANGE_SECTION_FIXED_SIZE + CHANGE_ENTRY_SIZE];
	uint32_t one = 1, floor_day = 100;
	uint64_t floor_lsn = 5, lsn = 7;
	int32_t day = 200;
	memcpy(small, &one, 4);
	memcpy(small + 4, &floor_day, 4);
	memcpy(small + 8, &floor_lsn, 8);
	memcpy(small + 16, &day, 4);
	memcpy(small + 20, &lsn, 8);
	size_t used = 0, bad = 0;
	const char *why = NULL;
	cr_assert_eq(change_map_decode(&c, small, sizeof(small), 100, &used, &bad, &why), 0);
	change_map_mark(&c, 90, 9);
	cr_assert(c.count == 1 && c.floor_day == 100 && c.floor_lsn == 9);
	cr_assert_eq(change_map_day_lsn(&c, 90), 9);
	cr_assert_eq(change_map_day_lsn(&c, 100), 9);
	change_map_mark(&c, 150, 3);
	cr_assert(c.count == 2 && c.days[0] == 150 && c.lsns[0] == 3 && c.days[1] == 200);
	/* Its bad entry is named: day 200 -> 100, at the floor. */
	day = 100;
	memcpy(small + 16, &day, 4);
	cr_assert_eq(change_map_decode(&c, small, sizeof(small), 100, &used, &bad, &why),
		     TALLY_E_CORRUPT);
	cr_assert_eq(bad, CHANGE_SECTION_FIXED_SIZE);

	free(encoded);
	change_map_free(&a);
	change_map_free(&b);
	change_map_free(&c);
}
