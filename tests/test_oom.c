/*
 * test_oom.c — allocation failures inside the engine: what the caller is
 * told, what the store refuses afterwards, and what a reopen finds.
 *
 * The injector. This binary is linked with -Wl,--wrap for malloc, calloc,
 * realloc, aligned_alloc, mmap and mremap (Makefile, OOM_WRAP), so every
 * such call the engine's code makes comes here first. Armed with n, the
 * nth call on the arming thread fails (NULL or MAP_FAILED, errno ENOMEM);
 * "persistent", every later one on that thread fails too. Other threads
 * (the WAL writer) and the libraries' own allocations (zstd, liburing,
 * glibc) are never failed. The test's own code calls these too, so the
 * injector is armed only around one engine call.
 *
 * The sweep. For n = 1, 2, 3, ... a fresh store is brought to the same
 * state, the engine call runs with the nth allocation failing, and then:
 *   - the call returned 0 or -ENOMEM (never "corrupt", say);
 *   - the store did not turn read-only;
 *   - it holds exactly what the ledger says: every acknowledged event
 *     once, and nothing of a failed ingest, not even in memory (the rows a
 *     failed call appended are taken out again before it returns);
 *   - when the call failed, a flush at once and a reopen find the same;
 *   - the same call made again without failures succeeds, and so does
 *     the next ingest;
 *   - after a close and a reopen without failures, the store holds every
 *     acknowledged event once and nothing of the failed batch, and
 *     re-sending every stored batch gives only DUPLICATEs (the fingerprint
 *     index was rebuilt).
 * The sweep ends at the first n the call no longer reaches. Under `make
 * asan` the leak checker also sees every error path's cleanup.
 *
 * Calls swept: an ingest (into tenants that exist and one that does not;
 * one batch, four batches of three tenants in one call, or one batch
 * large enough that the WAL's buffer must grow), a re-send of
 * stored events (the fingerprint hits are verified by reading them), a
 * backfill of events older than the lateness horizon (probed in the
 * segment files of their days and in the memtable), a re-send of
 * backfilled events (found in a segment file by that probe), a flush, a compaction, an open that replays a WAL, a scan, a query, and
 * the offline tally_verify and tally_inspect of the directory. One more
 * sweep runs tally_verify on a directory with a damaged WAL record: it
 * must report the damage or return -ENOMEM, never "clean".
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_internal.h"
#include "support/events.h"
#include "support/fault_io.h"
#include "support/test_dir.h"
#include "tally.h"

/* ---- the injector ------------------------------------------------------------ */

static _Thread_local uint64_t oom_at;   /* the call that fails (1-based); 0: disarmed */
static _Thread_local uint64_t oom_seen; /* calls since arming */
static _Thread_local bool oom_persistent;

/* Set: every call on the WAL writer thread (named tally-wal) fails too. */
static volatile bool oom_wal_thread;

static bool on_wal_thread(void)
{
	char name[16] = "";
	return pthread_getname_np(pthread_self(), name, sizeof(name)) == 0 &&
	       strcmp(name, "tally-wal") == 0;
}

static bool oom_fails(void)
{
	if (oom_wal_thread && on_wal_thread()) {
		errno = ENOMEM;
		return true;
	}
	if (!oom_at)
		return false;
	uint64_t k = ++oom_seen;
	if (k == oom_at || (oom_persistent && k > oom_at)) {
		errno = ENOMEM;
		return true;
	}
	return false;
}

static void oom_arm(uint64_t at, bool persistent)
{
	oom_seen = 0;
	oom_persistent = persistent;
	oom_at = at;
}

/* Disarms; true when the armed call was reached (it failed). */
static bool oom_disarm(void)
{
	bool reached = oom_at && oom_seen >= oom_at;
	oom_at = 0;
	return reached;
}

#include "support/oom_wrap.h"

/* ---- a store and its ledger -------------------------------------------------- */

#define NOW_US (INT64_C(1790000000) * 1000000) /* the store's frozen clock */
#define BASE_US (NOW_US - 1000000)              /* newest event time */
/* The newest event time of the backfill round: every one of its events is
 * older than the lateness horizon (35 days by default). */
#define OLD_BASE_US (NOW_US - 60 * TALLY_US_PER_DAY)
#define TENANTS 3
#define BATCH_EVENTS 40
/* A batch whose WAL record is larger than the WAL's first buffer (1 MiB),
 * so that the append grows it. */
#define LARGE_BATCH_EVENTS 32000
/* A call of PART_BATCHES batches is stored in as many parts: the store is
 * opened with parts of at most PART_BYTES_MAX, less than one batch's WAL
 * entry (a batch is never split). */
#define PART_BATCHES 3
#define PART_BYTES_MAX 1024
#define SWEEP_MAX 20000 /* a call making more allocations than this is a test bug */

static char dir[64];
static fault_io *fio;
static ev_ledger ledger;
static uint32_t round_no;       /* the latest round: new batches go here */
static uint32_t backfill_round; /* the round whose batches are backfills, or UINT32_MAX */
static uint32_t part_bytes_max; /* the store's ingest_part_bytes_max (0: its default) */
static uint64_t wal_file_bytes_max; /* the store's wal_file_bytes_max (0: its default) */

static void fresh(void)
{
	fio = test_dir_store_setup(dir, sizeof(dir), "oom", NOW_US);
	ev_ledger_init(&ledger, 0x00d1, TENANTS);
	round_no = ev_ledger_round_begin(&ledger, BASE_US);
	backfill_round = UINT32_MAX;
}

static void cleanup(void)
{
	test_dir_store_teardown(dir, fio);
	ev_ledger_free(&ledger);
}

static int store_try_open(tally_store **s, char *errmsg)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	o.ingest_part_bytes_max = part_bytes_max;
	if (wal_file_bytes_max)
		o.wal_file_bytes_max = wal_file_bytes_max;
	*s = NULL;
	return tally_store_open(dir, &o, s, errmsg);
}

static tally_store *store_open(void)
{
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	tally_store *s;
	int rc = store_try_open(&s, errmsg);
	cr_assert_eq(rc, 0, "open %s: %s (%s)", dir, tally_strerror(rc), errmsg);
	return s;
}

/* The events of batches [first, first + batches) of ledger round `round`,
 * `count` each, back to back, made anew (before the injector is armed),
 * with a result slot each. */
typedef struct batch_events {
	ev_event *slots;
	tally_event *events;
	tally_ingest_result *results;
} batch_events;

static batch_events batch_events_make(uint32_t round, uint32_t first, uint32_t batches,
				      uint32_t count)
{
	int64_t base_us = ledger.rounds[round].base_us;
	size_t total = (size_t)batches * count;
	batch_events e = {
		.slots = calloc(total, sizeof(*e.slots)),
		.events = calloc(total, sizeof(*e.events)),
		.results = calloc(total, sizeof(*e.results)),
	};
	cr_assert(e.slots && e.events && e.results);
	for (uint32_t b = 0; b < batches; b++)
		for (uint32_t i = 0; i < count; i++) {
			ev_make(&e.slots[(size_t)b * count + i], ledger.seed, base_us, round, first + b, i);
			e.events[(size_t)b * count + i] = e.slots[(size_t)b * count + i].event;
		}
	return e;
}

static void batch_events_free(batch_events *e)
{
	free(e->slots);
	free(e->events);
	free(e->results);
}

/* One batch of round `round` for tenant `who`: a backfill in the
 * backfill round, else a normal ingest. */
static int round_ingest(tally_store *s, uint32_t round, uint32_t who, const batch_events *e,
			uint32_t count)
{
	const char *name = ledger.tenants[who];
	return round == backfill_round ? tally_ingest_backfill(s, name, e->events, count, e->results)
				       : tally_ingest(s, name, e->events, count, e->results);
}

/* The ledger's next batch, for tenant `who`, with the fail_at-th
 * allocation failing (0: none). On 0 every result must be ACCEPTED and
 * the batch is acknowledged; otherwise it is MAYBE (after_failure then
 * expects it absent). */
static int batch_ingest_of(tally_store *s, uint32_t who, uint32_t count, uint64_t fail_at,
			   bool persistent, bool *reached)
{
	uint32_t batch = ledger.rounds[round_no].batch_count;
	batch_events e = batch_events_make(round_no, batch, 1, count);
	oom_arm(fail_at, persistent);
	int rc = round_ingest(s, round_no, who, &e, count);
	bool hit = oom_disarm();
	if (reached)
		*reached = hit;
	if (rc == 0)
		for (uint32_t i = 0; i < count; i++)
			cr_assert_eq(e.results[i].code, TALLY_ACCEPTED, "batch %u event %u: %s", batch, i,
				     tally_result_name(e.results[i].code));
	ev_ledger_add(&ledger, round_no, batch, who, count, rc == 0 ? EV_ACKED : EV_MAYBE);
	batch_events_free(&e);
	return rc;
}

static int batch_ingest(tally_store *s, uint32_t who, uint64_t fail_at, bool persistent,
			bool *reached)
{
	return batch_ingest_of(s, who, BATCH_EVENTS, fail_at, persistent, reached);
}

static void ingest_acked(tally_store *s, uint32_t who)
{
	int rc = batch_ingest(s, who, 0, false, NULL);
	cr_assert_eq(rc, 0, "ingest: %s: %s", tally_strerror(rc), tally_store_errmsg(s));
}

/* Every acknowledged event once, exact; MAYBE batches whole or absent;
 * nothing else. */
static void verify(tally_store *s, const char *when, uint64_t n)
{
	ev_report *report = calloc(1, sizeof(*report));
	cr_assert_not_null(report);
	ev_ledger_verify(&ledger, s, 0, report);
	cr_assert_eq(report->problem_count, 0, "%s, allocation %" PRIu64 " failed: %d problems:\n%s",
		     when, n, report->problem_count, report->text);
	free(report);
}

/* Re-sends every stored batch of every round: each event must be a
 * DUPLICATE. */
static void expect_resend_duplicates(tally_store *s, uint64_t n)
{
	for (uint32_t round = 0; round < ledger.round_count; round++)
		for (uint32_t batch = 0; batch < ledger.rounds[round].batch_count; batch++) {
			ev_batch *b = ev_ledger_find(&ledger, round, batch);
			if (b->state != EV_ACKED && b->state != EV_PRESENT)
				continue;
			batch_events e = batch_events_make(round, batch, 1, b->count);
			int rc = round_ingest(s, round, b->tenant, &e, b->count);
			cr_assert_eq(rc, 0, "allocation %" PRIu64 ": re-send of round %u batch %u: %s",
				     n, round, batch, tally_strerror(rc));
			for (uint32_t i = 0; i < b->count; i++)
				cr_assert_eq(e.results[i].code, TALLY_DUPLICATE,
					     "allocation %" PRIu64 ": re-sent round %u batch %u event %u: %s",
					     n, round, batch, i, tally_result_name(e.results[i].code));
			batch_events_free(&e);
		}
}

/* White-box: tally_stats' memtable bytes are those of every memtable the
 * tenants hold (no thread runs beside the test: no background worker). */
static void expect_memtable_bytes_counted(tally_store *s, const char *when, uint64_t n)
{
	uint64_t held = 0;
	for (uint32_t i = 0; i < s->tenant_count; i++) {
		const tenant *t = s->tenants[i];
		held += t->active ? memtable_bytes(t->active) : 0;
		held += t->frozen ? memtable_bytes(t->frozen) : 0;
	}
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_assert_eq(stats.memtable_bytes, held, "%s, allocation %" PRIu64 " failed: the stats "
		     "count %" PRIu64 " memtable bytes, the memtables hold %" PRIu64, when, n,
		     stats.memtable_bytes, held);
}

static int sticky_error(tally_store *s)
{
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	return stats.sticky_error;
}

/* After the call with the nth allocation failing: the store's state, the
 * same call again without failures (`again`, when not NULL), the next
 * ingest, then a reopen. */
static void after_failure(tally_store *s, int rc, uint64_t n, const char *call,
			  int (*again)(tally_store *s))
{
	cr_expect(rc == 0 || rc == -ENOMEM, "%s, allocation %" PRIu64 " failed: returned %s (%s)",
		  call, n, tally_strerror(rc), tally_store_errmsg(s));
	int sticky = sticky_error(s);
	cr_assert_eq(sticky, 0, "%s, allocation %" PRIu64 " failed: the store turned read-only (%s)",
		     call, n, tally_strerror(sticky));
	/* Nothing of a failed ingest is stored, not even in memory. */
	for (uint32_t batch = 0; batch < ledger.rounds[round_no].batch_count; batch++) {
		ev_batch *b = ev_ledger_find(&ledger, round_no, batch);
		if (b->state == EV_MAYBE)
			b->state = EV_ABSENT;
	}
	verify(s, call, n);
	expect_memtable_bytes_counted(s, call, n);
	if (rc) {
		/* A flush right after the failed call, then a reopen: nothing
		 * the call left in memory (a day marked changed at an LSN no
		 * record has, say) reaches the manifest. */
		int flushed = tally_flush(s);
		cr_assert_eq(flushed, 0, "%s, allocation %" PRIu64 " failed: the flush after it: "
			     "%s: %s", call, n, tally_strerror(flushed), tally_store_errmsg(s));
		expect_memtable_bytes_counted(s, call, n);
		cr_expect_eq(tally_store_close(s), 0);
		s = store_open();
		verify(s, "after a flush and a reopen", n);
	}
	if (again) {
		int rc_again = again(s);
		cr_assert_eq(rc_again, 0, "%s again after allocation %" PRIu64 " failed: %s: %s", call,
			     n, tally_strerror(rc_again), tally_store_errmsg(s));
		verify(s, call, n);
	}
	/* A store still writable takes the next batch. */
	cr_assert_eq(batch_ingest(s, 0, 0, false, NULL), 0, "%s, allocation %" PRIu64
		     " failed: the next ingest: %s", call, n, tally_store_errmsg(s));
	verify(s, call, n);
	cr_expect_eq(tally_store_close(s), 0);
	s = store_open();
	verify(s, "after the reopen", n);
	expect_resend_duplicates(s, n);
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- the calls swept ------------------------------------------------------------ */

/* Two flushed segment files, and events in the WAL and the memtables of
 * tenants 0 and 1 (tenant 2 is never written before the call). */
static tally_store *base_state(void)
{
	tally_store *s = store_open();
	ingest_acked(s, 0);
	ingest_acked(s, 1);
	cr_assert_eq(tally_flush(s), 0);
	ingest_acked(s, 0);
	cr_assert_eq(tally_flush(s), 0);
	ingest_acked(s, 1);
	ingest_acked(s, 0);
	return s;
}

/* base_state, then a backfill round of events 57-60 days old (older than
 * the lateness horizon): tenants 0 and 1 each have a backfilled batch in
 * a segment file, and tenant 1 another one in its memtable. New batches
 * go to the backfill round from here on, as backfills. */
static tally_store *backfill_state(void)
{
	tally_store *s = base_state();
	round_no = backfill_round = ev_ledger_round_begin(&ledger, OLD_BASE_US);
	ingest_acked(s, 0);
	ingest_acked(s, 1);
	cr_assert_eq(tally_flush(s), 0);
	ingest_acked(s, 1);
	return s;
}

static int flush_call(tally_store *s)
{
	return tally_flush(s);
}

static int compact_call(tally_store *s)
{
	return tally_compact(s);
}

/* Four batches in one call (tally_ingest_submit_many), for tenants 1, 2
 * (new), 1 again and 0, and a fifth the call refuses (a bad tenant name)
 * between the first two, with the nth allocation failing: on 0 every
 * batch but that one is accepted whole and acknowledged once durable;
 * otherwise none is. */
static int ingest_many(tally_store *s, uint64_t n, bool persistent, bool *reached)
{
	enum { BATCHES = 4 };
	static const uint32_t tenant_of[BATCHES] = {1, 2, 1, 0};
	tally_batch batches[BATCHES + 1];
	uint32_t first = ledger.rounds[round_no].batch_count;
	batch_events e = batch_events_make(round_no, first, BATCHES, BATCH_EVENTS);
	for (uint32_t b = 0; b < BATCHES; b++)
		batches[b] = (tally_batch){
			.tenant = ledger.tenants[tenant_of[b]],
			.events = e.events + b * BATCH_EVENTS,
			.count = BATCH_EVENTS,
			.results = e.results + b * BATCH_EVENTS,
		};
	/* The refused batch goes second: the call's batches shift by one. */
	tally_ingest_result refused_results[1] = {{.code = 99}};
	memmove(batches + 2, batches + 1, sizeof(*batches) * (BATCHES - 1));
	batches[1] = (tally_batch){
		.tenant = "bad tenant!", .events = e.events, .count = 1, .results = refused_results};
	uint64_t commit_lsn = 0;
	oom_arm(n, persistent);
	int rc = tally_ingest_submit_many(s, batches, BATCHES + 1, &commit_lsn);
	*reached = oom_disarm();
	if (rc == 0) {
		cr_assert_eq(batches[1].status, TALLY_E_TENANT);
		cr_assert_eq(refused_results[0].code, 99, "a refused batch's results are untouched");
		memmove(batches + 1, batches + 2, sizeof(*batches) * (BATCHES - 1));
		rc = tally_commit_wait(s, commit_lsn);
	}
	for (uint32_t b = 0; b < BATCHES; b++) {
		if (rc == 0) {
			cr_assert_eq(batches[b].status, 0);
			for (uint32_t i = 0; i < BATCH_EVENTS; i++)
				cr_assert_eq(e.results[b * BATCH_EVENTS + i].code, TALLY_ACCEPTED);
		}
		ev_ledger_add(&ledger, round_no, first + b, tenant_of[b], BATCH_EVENTS,
			      rc == 0 ? EV_ACKED : EV_MAYBE);
	}
	batch_events_free(&e);
	return rc;
}

/* Three batches in one call, for tenants 1, 0 and 2 (new), which the
 * store takes in three parts (one record and lock hold each), with
 * the nth allocation failing: each part is stored or not on its own. On 0
 * a batch with status 0 is accepted whole and acknowledged once durable,
 * one with the failed part's error is not stored (and the call returns 0
 * only if some part was stored); otherwise no batch is. */
static int ingest_parts(tally_store *s, uint64_t n, bool persistent, bool *reached)
{
	static const uint32_t tenant_of[PART_BATCHES] = {1, 0, 2};
	tally_batch batches[PART_BATCHES];
	uint32_t first = ledger.rounds[round_no].batch_count;
	batch_events e = batch_events_make(round_no, first, PART_BATCHES, BATCH_EVENTS);
	for (uint32_t b = 0; b < PART_BATCHES; b++)
		batches[b] = (tally_batch){
			.tenant = ledger.tenants[tenant_of[b]],
			.events = e.events + (size_t)b * BATCH_EVENTS,
			.count = BATCH_EVENTS,
			.results = e.results + (size_t)b * BATCH_EVENTS,
		};
	uint64_t lsn_before = tally_durable_lsn(s), commit_lsn = 0;
	oom_arm(n, persistent);
	int rc = tally_ingest_submit_many(s, batches, PART_BATCHES, &commit_lsn);
	*reached = oom_disarm();
	uint32_t stored = 0;
	for (uint32_t b = 0; rc == 0 && b < PART_BATCHES; b++) {
		cr_assert(batches[b].status == 0 || batches[b].status == -ENOMEM,
			  "parts, allocation %" PRIu64 ": batch %u status %s", n, b,
			  tally_strerror(batches[b].status));
		stored += batches[b].status == 0;
	}
	if (!*reached)
		cr_assert_eq(stored, PART_BATCHES, "a call of %u batches stored whole", PART_BATCHES);
	if (rc == 0) {
		cr_assert_gt(stored, 0, "parts, allocation %" PRIu64 ": 0 with nothing stored", n);
		cr_assert_eq(commit_lsn - lsn_before, stored,
			     "parts, allocation %" PRIu64 ": one record per stored part", n);
		cr_assert_eq(tally_commit_wait(s, commit_lsn), 0);
	}
	for (uint32_t b = 0; b < PART_BATCHES; b++) {
		bool acked = rc == 0 && batches[b].status == 0;
		for (uint32_t i = 0; acked && i < BATCH_EVENTS; i++)
			cr_assert_eq(e.results[(size_t)b * BATCH_EVENTS + i].code, TALLY_ACCEPTED);
		ev_ledger_add(&ledger, round_no, first + b, tenant_of[b], BATCH_EVENTS,
			      acked ? EV_ACKED : EV_MAYBE);
	}
	batch_events_free(&e);
	return rc;
}

/* Re-sends batch 0 of `round` (in a segment file by then) with the nth
 * allocation failing: on 0 every event must be a DUPLICATE, whatever
 * failed inside (in the horizon the fingerprint hits are verified against
 * the stored ids; a backfill's old events are looked up in the segment
 * files of their days). */
static int resend_first_batch(tally_store *s, uint32_t round, uint64_t n, bool persistent,
			      bool *reached)
{
	ev_batch *b = ev_ledger_find(&ledger, round, 0);
	cr_assert_not_null(b);
	batch_events e = batch_events_make(round, 0, 1, b->count);
	oom_arm(n, persistent);
	int rc = round_ingest(s, round, b->tenant, &e, b->count);
	*reached = oom_disarm();
	for (uint32_t i = 0; rc == 0 && i < b->count; i++)
		cr_assert_eq(e.results[i].code, TALLY_DUPLICATE,
			     "re-send, allocation %" PRIu64 " failed: event %u: %s", n, i,
			     tally_result_name(e.results[i].code));
	batch_events_free(&e);
	return rc;
}

/* A scan's figures, from a callback that allocates nothing. */
typedef struct scan_sum {
	uint64_t events;
	uint64_t tokens_in;
	int64_t cost_micros;
} scan_sum;

static int scan_add(void *ctx, const tally_event *e)
{
	scan_sum *sum = ctx;
	sum->events++;
	sum->tokens_in += e->tokens_in;
	sum->cost_micros += e->cost_micros;
	return 0;
}

/* A full scan of tenant 0, with the nth allocation failing: 0 with the
 * figures a scan without failures gives, or -ENOMEM. */
static int scan_call(tally_store *s, uint64_t n, bool persistent, bool *reached)
{
	scan_sum want = {0}, got = {0};
	cr_assert_eq(tally_scan(s, ledger.tenants[0], INT64_MIN, INT64_MAX, scan_add, &want), 0);
	oom_arm(n, persistent);
	int rc = tally_scan(s, ledger.tenants[0], INT64_MIN, INT64_MAX, scan_add, &got);
	*reached = oom_disarm();
	if (rc == 0)
		cr_assert(got.events == want.events && got.tokens_in == want.tokens_in &&
				  got.cost_micros == want.cost_micros,
			  "scan, allocation %" PRIu64 " failed: %" PRIu64 " events, not %" PRIu64, n,
			  got.events, want.events);
	return rc;
}

/* A grouped hourly query of tenant 0 over the events' three days, with
 * the nth allocation failing: 0 with the rows a query without failures
 * gives, or -ENOMEM and no result. */
static int query_call(tally_store *s, uint64_t n, bool persistent, bool *reached)
{
	tally_query q = {
		.from_us = BASE_US - EV_LATE_SPREAD_US - TALLY_US_PER_DAY,
		.to_us = BASE_US + TALLY_US_PER_DAY,
		.bucket = TALLY_BUCKET_HOUR,
		.group_by = 1u << TALLY_DIM_MODEL,
		.quantiles = {0.5},
		.quantile_count = 1,
		.distinct_users = true,
	};
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	tally_result *want = NULL, *got = NULL;
	int rc = tally_query_run(s, ledger.tenants[0], &q, &want, errmsg);
	cr_assert_eq(rc, 0, "query: %s (%s)", tally_strerror(rc), errmsg);
	cr_assert_gt(want->row_count, 1);
	oom_arm(n, persistent);
	rc = tally_query_run(s, ledger.tenants[0], &q, &got, errmsg);
	*reached = oom_disarm();
	if (rc == 0) {
		cr_assert_eq(got->row_count, want->row_count, "query, allocation %" PRIu64 " failed", n);
		for (size_t i = 0; i < want->row_count; i++) {
			const tally_row *a = &want->rows[i], *b = &got->rows[i];
			cr_assert(a->bucket_start_us == b->bucket_start_us && a->count == b->count &&
					  a->tokens_in == b->tokens_in && a->cost_micros == b->cost_micros &&
					  a->distinct_users == b->distinct_users &&
					  a->quantile_ms[0] == b->quantile_ms[0],
				  "query, allocation %" PRIu64 " failed: row %zu differs", n, i);
		}
	} else {
		cr_expect_null(got, "a failed query hands back no result");
		cr_expect_neq(errmsg[0], '\0', "query, allocation %" PRIu64 " failed: no message", n);
	}
	tally_result_free(want);
	tally_result_free(got);
	return rc;
}

static void problem_count(void *ctx, const char *message)
{
	(void)message;
	(*(uint32_t *)ctx)++;
}

/* tally_verify and tally_inspect of the closed store's directory, with
 * the nth allocation failing: a clean directory is never reported
 * damaged for want of memory (0, or -ENOMEM: could not run). */
static int offline_call(tally_store *s, bool inspect, uint64_t n, bool persistent, bool *reached)
{
	cr_assert_eq(tally_store_close(s), 0);
	int rc;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	uint32_t problems = 0;
	tally_inspect_report report;
	oom_arm(n, persistent);
	if (inspect)
		rc = tally_inspect(dir, &report, NULL, NULL, errmsg);
	else
		rc = tally_verify(dir, problem_count, &problems);
	*reached = oom_disarm();
	/* tally_verify returns the number of problems, or a negative code
	 * when it could not run (its message then goes to problem_fn too). */
	cr_assert(rc == 0 || rc == -ENOMEM, "%s, allocation %" PRIu64 " failed: %d (%s; %s)",
		  inspect ? "inspect" : "verify", n, rc, rc < 0 ? tally_strerror(rc) : "problems",
		  errmsg);
	if (rc == 0)
		cr_assert_eq(problems, 0);
	if (inspect && rc == 0)
		cr_assert_gt(report.rows, 0);
	return rc;
}

typedef enum {
	CALL_INGEST,
	CALL_INGEST_NEW_TENANT,
	CALL_INGEST_MANY,
	CALL_INGEST_LARGE,
	CALL_INGEST_PARTS,
	CALL_RESEND,
	CALL_BACKFILL,
	CALL_BACKFILL_RESEND,
	CALL_FLUSH,
	CALL_COMPACT,
	CALL_OPEN,
	CALL_SCAN,
	CALL_QUERY,
	CALL_VERIFY,
	CALL_INSPECT,
} call_kind;

static const char *const call_names[] = {
	"ingest", "ingest for a new tenant", "ingest of four batches in one call",
	"ingest of a batch larger than the WAL's first buffer",
	"ingest of a call stored in three parts", "re-send", "backfill",
	"re-send of a backfill", "flush",
	"compaction", "open", "scan", "query", "verify", "inspect",
};

/* One step of a sweep: true once the call made fewer than n allocations. */
static bool sweep_step(call_kind kind, uint64_t n, bool persistent)
{
	part_bytes_max = kind == CALL_INGEST_PARTS ? PART_BYTES_MAX : 0;
	fresh();
	bool backfill = kind == CALL_BACKFILL || kind == CALL_BACKFILL_RESEND;
	tally_store *s = backfill ? backfill_state() : base_state();
	const char *call = call_names[kind];
	bool reached = false;
	int rc = 0;
	switch (kind) {
	case CALL_INGEST:
	case CALL_INGEST_NEW_TENANT:
		rc = batch_ingest(s, kind == CALL_INGEST ? 1 : 2, n, persistent, &reached);
		break;
	case CALL_INGEST_LARGE: {
		tally_stats before, after;
		cr_assert_eq(tally_store_stats(s, &before), 0);
		rc = batch_ingest_of(s, 1, LARGE_BATCH_EVENTS, n, persistent, &reached);
		cr_assert_eq(tally_store_stats(s, &after), 0);
		if (rc == 0) /* else the sweep would miss the WAL buffer's growth */
			cr_assert_gt(after.wal_bytes - before.wal_bytes, 1u << 20,
				     "a record of %" PRIu64 " bytes", after.wal_bytes - before.wal_bytes);
		break;
	}
	case CALL_INGEST_MANY:
		rc = ingest_many(s, n, persistent, &reached);
		break;
	case CALL_INGEST_PARTS:
		rc = ingest_parts(s, n, persistent, &reached);
		break;
	case CALL_RESEND:
	case CALL_BACKFILL_RESEND:
		rc = resend_first_batch(s, kind == CALL_RESEND ? 0 : backfill_round, n, persistent,
					&reached);
		break;
	case CALL_BACKFILL:
		rc = batch_ingest(s, 1, n, persistent, &reached);
		break;
	case CALL_SCAN:
		rc = scan_call(s, n, persistent, &reached);
		break;
	case CALL_QUERY:
		rc = query_call(s, n, persistent, &reached);
		break;
	case CALL_VERIFY:
	case CALL_INSPECT:
		rc = offline_call(s, kind == CALL_INSPECT, n, persistent, &reached);
		s = store_open();
		rc = 0; /* the store was closed: nothing of it to judge by rc */
		break;
	case CALL_FLUSH:
	case CALL_COMPACT:
		oom_arm(n, persistent);
		rc = kind == CALL_FLUSH ? tally_flush(s) : tally_compact(s);
		reached = oom_disarm();
		break;
	case CALL_OPEN: {
		cr_assert_eq(tally_store_close(s), 0);
		char errmsg[TALLY_ERRMSG_SIZE] = "";
		oom_arm(n, persistent);
		rc = store_try_open(&s, errmsg);
		reached = oom_disarm();
		if (rc) {
			cr_expect_eq(rc, -ENOMEM, "open, allocation %" PRIu64 " failed: %d (%s): %s",
				     n, rc, tally_strerror(rc), errmsg);
			cr_expect_null(s, "a failed open hands back no store");
			cr_expect_neq(errmsg[0], '\0', "open, allocation %" PRIu64 " failed: %s, no message",
				      n, tally_strerror(rc));
			s = store_open();
			rc = 0;
		}
		break;
	}
	}
	if (!reached)
		cr_assert_eq(rc, 0, "%s without a failure: %s: %s", call, tally_strerror(rc),
			     s ? tally_store_errmsg(s) : "");
	int (*again)(tally_store *) = kind == CALL_FLUSH     ? flush_call
				      : kind == CALL_COMPACT ? compact_call
							     : NULL;
	after_failure(s, rc, n, call, again);
	cleanup();
	return !reached;
}

static void sweep(call_kind kind, bool persistent)
{
	uint64_t n = 1;
	while (!sweep_step(kind, n, persistent)) {
		n++;
		cr_assert_lt(n, SWEEP_MAX, "%s: still allocating at %" PRIu64, call_names[kind], n);
	}
	cr_log_info("%s: %" PRIu64 " allocations swept (%s)", call_names[kind], n - 1,
		    persistent ? "persistent" : "transient");
	cr_expect_gt(n, 1, "%s made no allocation: the injector is not wired in", call_names[kind]);
}

Test(oom, ingest_transient)
{
	sweep(CALL_INGEST, false);
}

Test(oom, ingest_persistent)
{
	sweep(CALL_INGEST, true);
}

Test(oom, ingest_for_a_new_tenant)
{
	sweep(CALL_INGEST_NEW_TENANT, false);
}

Test(oom, ingest_of_several_batches_in_one_call)
{
	sweep(CALL_INGEST_MANY, false);
}

Test(oom, ingest_of_a_large_batch)
{
	sweep(CALL_INGEST_LARGE, false);
}

Test(oom, ingest_of_a_call_stored_in_parts)
{
	sweep(CALL_INGEST_PARTS, false);
}

Test(oom, resend_of_stored_events)
{
	sweep(CALL_RESEND, false);
}

Test(oom, backfill_transient)
{
	sweep(CALL_BACKFILL, false);
}

Test(oom, backfill_persistent)
{
	sweep(CALL_BACKFILL, true);
}

Test(oom, resend_of_backfilled_events)
{
	sweep(CALL_BACKFILL_RESEND, false);
}

Test(oom, flush_transient)
{
	sweep(CALL_FLUSH, false);
}

Test(oom, flush_persistent)
{
	sweep(CALL_FLUSH, true);
}

Test(oom, compaction_transient)
{
	sweep(CALL_COMPACT, false);
}

Test(oom, compaction_persistent)
{
	sweep(CALL_COMPACT, true);
}

Test(oom, open_transient)
{
	sweep(CALL_OPEN, false);
}

Test(oom, open_persistent)
{
	sweep(CALL_OPEN, true);
}

Test(oom, verify)
{
	sweep(CALL_VERIFY, false);
}

/* Flips one byte of the first record of the newest WAL file of the closed
 * store in dir: the damage is followed by valid records, so it is
 * corruption in the middle, which verify must report. */
static void wal_first_record_damage(void)
{
	char wal_dir[300];
	snprintf(wal_dir, sizeof(wal_dir), "%s/wal", dir);
	DIR *d = opendir(wal_dir);
	cr_assert_not_null(d, "opendir %s", wal_dir);
	char newest[64] = "";
	struct dirent *entry;
	while ((entry = readdir(d)))
		if (strstr(entry->d_name, ".wal") && strcmp(entry->d_name, newest) > 0)
			snprintf(newest, sizeof(newest), "%s", entry->d_name);
	closedir(d);
	cr_assert_neq(newest[0], '\0', "no WAL file in %s", wal_dir);
	char path[400];
	snprintf(path, sizeof(path), "%s/%s", wal_dir, newest);
	FILE *f = fopen(path, "r+b");
	cr_assert_not_null(f, "open %s", path);
	long offset = 40 + 24 + 8; /* file header, record header, into the payload */
	cr_assert_eq(fseek(f, offset, SEEK_SET), 0);
	int c = fgetc(f);
	cr_assert_neq(c, EOF, "%s is shorter than %ld bytes", path, offset + 1);
	cr_assert_eq(fseek(f, offset, SEEK_SET), 0);
	cr_assert_neq(fputc(c ^ 0x20, f), EOF);
	cr_assert_eq(fclose(f), 0);
}

/* Removes the MANIFEST of the closed store in dir (segments/ and wal/
 * still hold files). */
static void manifest_removal(void)
{
	char path[300];
	snprintf(path, sizeof(path), "%s/MANIFEST", dir);
	cr_assert_eq(unlink(path), 0, "unlink %s", path);
}

/* tally_verify of base_state's directory after damage(), with the nth
 * allocation failing (and, persistent, every later one), for every n it
 * reaches: it either reports the
 * damage (at least one problem) or says it could not run (-ENOMEM);
 * never 0, "clean", nor another reason not to run, for want of memory. */
static void verify_damaged_sweep(void (*damage)(void), const char *what, bool persistent)
{
	uint64_t n = 1;
	for (bool reached = true; reached; n++) {
		cr_assert_lt(n, SWEEP_MAX, "verify: still allocating at %" PRIu64, n);
		fresh();
		cr_assert_eq(tally_store_close(base_state()), 0);
		damage();
		uint32_t problems = 0;
		oom_arm(n, persistent);
		int rc = tally_verify(dir, problem_count, &problems);
		reached = oom_disarm();
		cr_assert(rc == -ENOMEM || rc >= 1,
			  "verify of a directory with %s, allocation %" PRIu64 " failed: %d (%s)",
			  what, n, rc, rc < 0 ? tally_strerror(rc) : "problems");
		if (rc >= 1)
			cr_assert_eq(problems, (uint32_t)rc);
		cleanup();
	}
	cr_log_info("verify of a directory with %s: %" PRIu64 " allocations swept (%s)", what,
		    n - 2, persistent ? "persistent" : "transient");
	cr_expect_gt(n, 2, "verify made no allocation: the injector is not wired in");
}

/* Description: verify_damaged_sweep with a damaged WAL record. (Listing
 * wal/ once ran out of memory silently: the check of the WAL was skipped
 * and 0 returned.) */
Test(oom, verify_never_calls_a_damaged_wal_clean)
{
	verify_damaged_sweep(wal_first_record_damage, "a damaged WAL record", false);
	verify_damaged_sweep(wal_first_record_damage, "a damaged WAL record", true);
}

/* Description: verify_damaged_sweep with the MANIFEST removed. (A listing
 * of segments/ out of memory once made it "not a tally data directory",
 * TALLY_E_NOTFOUND.) */
Test(oom, verify_never_calls_a_store_without_manifest_not_a_store)
{
	verify_damaged_sweep(manifest_removal, "no MANIFEST", false);
	verify_damaged_sweep(manifest_removal, "no MANIFEST", true);
}

Test(oom, inspect)
{
	sweep(CALL_INSPECT, false);
}

Test(oom, scan)
{
	sweep(CALL_SCAN, false);
}

Test(oom, query)
{
	sweep(CALL_QUERY, false);
}

static uint64_t dedup_entries(tally_store *s)
{
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	return stats.dedup_entries;
}

/* A call of two batches: the ledger's next batch for tenant 1 (the same
 * events every time), then one for a tenant new at each attempt (attempt
 * names it). With fail, the new tenant's memtable cannot be made (only
 * aligned_alloc fails: oom_wrap.h), after the first batch was applied. */
static int retried_call(tally_store *s, uint32_t attempt, bool fail)
{
	char fresh_tenant[32];
	snprintf(fresh_tenant, sizeof(fresh_tenant), "attempt-%u", attempt);
	batch_events e = batch_events_make(round_no, ledger.rounds[round_no].batch_count, 2,
					   BATCH_EVENTS);
	tally_batch batches[2] = {
		{.tenant = ledger.tenants[1], .events = e.events, .count = BATCH_EVENTS,
		 .results = e.results},
		{.tenant = fresh_tenant, .events = e.events + BATCH_EVENTS, .count = BATCH_EVENTS,
		 .results = e.results + BATCH_EVENTS},
	};
	uint64_t lsn = 0;
	oom_aligned_only = true;
	oom_arm(fail ? 1 : 0, true);
	int rc = tally_ingest_submit_many(s, batches, 2, &lsn);
	bool reached = oom_disarm();
	oom_aligned_only = false;
	cr_assert_eq(reached, fail);
	if (!rc)
		rc = tally_commit_wait(s, lsn);
	batch_events_free(&e);
	return rc;
}

/* Description: a call that fails after its first batch was applied (the
 * second batch's new tenant gets no memtable) is undone, but the
 * fingerprints of the first batch's ids stay (harmless: a match is always
 * verified against the stored events). Retried and failing again, it adds
 * none: one entry per id and day, not one per attempt. Once it succeeds,
 * each event is stored once, and re-sent is a DUPLICATE. */
Test(oom, a_call_retried_after_failures_leaves_one_fingerprint_per_id)
{
	fresh();
	tally_store *s = base_state();
	uint64_t before = dedup_entries(s);
	uint32_t attempt = 0;
	for (int failed = 0; failed < 4; failed++) {
		cr_assert_eq(retried_call(s, attempt++, true), -ENOMEM);
		cr_expect_eq(dedup_entries(s), before + BATCH_EVENTS,
			     "after failed attempt %d: %" PRIu64 " fingerprints more", failed,
			     dedup_entries(s) - before);
	}
	cr_assert_eq(retried_call(s, attempt++, false), 0, "%s", tally_store_errmsg(s));
	cr_expect_eq(dedup_entries(s), before + 2 * BATCH_EVENTS, "and the second batch's ids");
	ev_ledger_add(&ledger, round_no, ledger.rounds[round_no].batch_count, 1, BATCH_EVENTS,
		      EV_ACKED);
	verify(s, "after the retried call", 0);
	expect_resend_duplicates(s, 0);
	cr_assert_eq(tally_store_close(s), 0);
	cleanup();
}

/* Description: the WAL writer thread allocates nothing to start a file:
 * with every allocation on it failing, the first ingest after an open
 * (its first file, the list of live files growing from empty), ingests
 * after flushes (each rotates the WAL to a new file) and, with 4 KiB WAL
 * files and no flush, 60 ingests each starting a file (the list of live
 * files growing past 16 and 32 entries) are acknowledged, and the store
 * stays writable. Before
 * 2026-12-02 the writer grew the list itself, and its ENOMEM failed the
 * WAL for good ("WAL write or fsync failed"; every later write refused
 * until a reopen) although nothing had been written. The appender grows
 * it now, where a failure assigns nothing (the sweeps above fail it). */
Test(oom, the_wal_writer_allocates_nothing_to_start_a_file)
{
	fresh();
	tally_store *s = store_open();
	oom_wal_thread = true;
	for (int i = 0; i < 20; i++) {
		ingest_acked(s, (uint32_t)i % TENANTS);
		int rc = tally_flush(s);
		cr_assert_eq(rc, 0, "flush %d: %s: %s", i, tally_strerror(rc), tally_store_errmsg(s));
	}
	ingest_acked(s, 0);
	oom_wal_thread = false;
	cr_assert_eq(tally_store_close(s), 0);

	wal_file_bytes_max = 4096; /* less than a batch's record: a file per batch */
	s = store_open();
	oom_wal_thread = true;
	for (int i = 0; i < 60; i++)
		ingest_acked(s, (uint32_t)i % TENANTS);
	oom_wal_thread = false;
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.sticky_error, 0);
	cr_expect_geq(st.wal_file_count, 60, "live WAL files: %" PRIu64, st.wal_file_count);
	verify(s, "after the ingests", 0);
	cr_assert_eq(tally_store_close(s), 0);
	wal_file_bytes_max = 0;
	s = store_open();
	verify(s, "reopen", 0);
	expect_resend_duplicates(s, 0);
	cr_assert_eq(tally_store_close(s), 0);
	cleanup();
}
