/*
 * stress.c — the store's threads under ThreadSanitizer (`make tsan`).
 *
 * Criterion's test runner cannot start under ThreadSanitizer on this
 * platform ("Could not initialize inheritable arena"), so this is a plain
 * program. Built with -fsanitize=thread, it makes every thread of the
 * engine run at once on one store:
 *
 *   - WRITERS threads ingest their own batches (tally_ingest) and re-send
 *     some earlier ones (DUPLICATE expected);
 *   - READERS reader threads run aggregate queries (with a median and
 *     distinct users, so sketches and cached blocks are read while the
 *     query holds only its tenant's query lock; grouped by project, from
 *     a raw edge), events listings page by page, and scans, and check each count
 *     against what the writers had acknowledged before the query and
 *     submitted after it (acked_before <= count <= submitted_after: a flush
 *     or compaction that published a moment of double-counted or missing
 *     events fails it);
 *   - a maintenance thread calls tally_flush and tally_compact;
 *   - the background worker flushes (the memtable limit is small) and
 *     compacts (compact_files_min is small), and every flush and every
 *     tally_compact is split into files written by several threads at once
 *     (flush_parallel_rows_min 1);
 *   - the WAL writer thread commits groups;
 *   - a clock thread moves the store's clock on a day at a time, four
 *     times, so the background worker runs fingerprint expiry passes
 *     (steps that let the store lock go) while the writers ingest: the
 *     history ingested first into tenants of its own, 34.5 days before
 *     the writers' events, leaves the horizon. Afterwards every history
 *     fingerprint is gone, a retry of a history event is REJECTED (too
 *     old), and each history event is stored once.
 *
 * Then every acknowledged event must be stored exactly once
 * (tests/support/events.h's ledger), in the open store and after a
 * reopen. Exit status: 0 when clean, 1 on a failed check; ThreadSanitizer
 * makes a run with a report exit with TSAN_OPTIONS' exitcode (the Makefile
 * sets 66 and halt_on_error).
 *
 * STRESS_BATCHES (environment) sets the batches per writer (default 400).
 * STRESS_FLUSH_ROWS (environment), when set, runs the same threads over
 * large memtables: the memtable limit is LARGE_MEMTABLE_BYTES_MAX, so
 * the background worker does not flush, and the maintenance thread
 * flushes only once the memtables hold that many rows, and compacts
 * after each flush. Each tenant's memtable then passes whole blocks of
 * MEMTABLE_TIME_BLOCK_ROWS (4,096) rows before it is frozen: their
 * time ranges are noted by reads under the store lock while the memtable
 * is active and read without it once it is frozen (`make tsan` runs
 * both modes).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../support/events.h"
#include "stress_fail.h"
#include "tally.h"

#define WRITERS 3
#define READERS 2 /* queries run beside each other too */
#define TENANTS 4
#define EVENTS_PER_BATCH 16
#define BUSY_RETRIES_MAX 100       /* sends of one batch refused TALLY_E_BUSY */
#define RESEND_EVERY 5             /* every 5th batch of a writer re-sends an earlier one */
#define BATCHES_DEFAULT 400
#define MEMTABLE_BYTES_MAX (64u << 10) /* a flush every few hundred events */
#define LARGE_MEMTABLE_BYTES_MAX (256u << 20) /* STRESS_FLUSH_ROWS: flushes are the maintenance thread's */
#define SEED UINT64_C(0x7a5a11)
#define HISTORY_TENANTS 4
#define HISTORY_EVENTS 256         /* per history tenant */
#define HISTORY_AGE_US (34 * TALLY_US_PER_DAY + TALLY_US_PER_DAY / 2)
#define CLOCK_DAYS 4               /* days the clock thread moves the store's clock on */
#define CLOCK_STEP_MS 400          /* between two of its moves */
#define EXPIRY_WAIT_MS 20000       /* for the pass after the last move */

/* The default io with a clock offset_us ahead of the wall clock. */
static struct {
	tally_io io;
	_Atomic int64_t offset_us;
} clock_io;

static int64_t shifted_now_us(const tally_io *io)
{
	(void)io;
	const tally_io *real = tally_io_default();
	return real->now_us(real) + atomic_load(&clock_io.offset_us);
}

typedef struct stress {
	tally_store *store;
	ev_ledger ledger; /* filled after the writers are done */
	int64_t base_us;
	uint32_t batches_per_writer;
	uint64_t flush_rows; /* STRESS_FLUSH_ROWS, or 0 */
	atomic_uint_fast64_t submitted[TENANTS]; /* unique events handed to tally_ingest */
	atomic_uint_fast64_t acked[TENANTS];     /* unique events acknowledged */
	atomic_bool writers_done;
	atomic_int failures;
	atomic_uint busy_retries; /* ingest calls refused TALLY_E_BUSY and sent again */
} stress;

#define fail(s, ...) stress_fail(&(s)->failures, "tsan stress", __VA_ARGS__)

static uint32_t tenant_of(uint32_t batch)
{
	return batch % TENANTS;
}

/* Ingests batch `batch` and checks that every result is `expected`. */
static void ingest_batch(stress *s, uint32_t batch, int expected)
{
	ev_event events[EVENTS_PER_BATCH];
	tally_event batch_events[EVENTS_PER_BATCH];
	tally_ingest_result results[EVENTS_PER_BATCH];
	for (uint32_t i = 0; i < EVENTS_PER_BATCH; i++) {
		ev_make(&events[i], SEED, s->base_us, 0, batch, i);
		batch_events[i] = events[i].event;
	}
	uint32_t tenant = tenant_of(batch);
	if (expected == TALLY_ACCEPTED)
		atomic_fetch_add(&s->submitted[tenant], EVENTS_PER_BATCH);
	/* TALLY_E_BUSY stores nothing: the call waited for the lock while the
	 * clock thread moved two days on and another call raised the horizon
	 * floor (store.c, horizon_floor_raise). A client retries it; so does
	 * this, a bounded number of times. */
	int rc = TALLY_E_BUSY;
	for (int attempt = 0; rc == TALLY_E_BUSY && attempt < BUSY_RETRIES_MAX; attempt++) {
		rc = tally_ingest(s->store, s->ledger.tenants[tenant], batch_events,
				  EVENTS_PER_BATCH, results);
		if (rc == TALLY_E_BUSY)
			atomic_fetch_add(&s->busy_retries, 1);
	}
	if (rc) {
		fail(s, "batch %" PRIu32 ": tally_ingest: %s", batch, tally_strerror(rc));
		return;
	}
	for (uint32_t i = 0; i < EVENTS_PER_BATCH; i++)
		if (results[i].code != expected)
			fail(s, "batch %" PRIu32 " event %" PRIu32 ": %s, expected %s", batch, i,
			     tally_result_name(results[i].code), tally_result_name(expected));
	if (expected == TALLY_ACCEPTED)
		atomic_fetch_add(&s->acked[tenant], EVENTS_PER_BATCH);
}

typedef struct writer {
	stress *s;
	uint32_t index;
	pthread_t thread;
} writer;

static void *writer_main(void *arg)
{
	writer *w = arg;
	stress *s = w->s;
	for (uint32_t k = 0; k < s->batches_per_writer; k++) {
		ingest_batch(s, k * WRITERS + w->index, TALLY_ACCEPTED);
		if (k % RESEND_EVERY == RESEND_EVERY - 1)
			ingest_batch(s, (k / 2) * WRITERS + w->index, TALLY_DUPLICATE);
	}
	return NULL;
}

/* The tenant's event count by an aggregate query over the ledger's span,
 * grouped by project (so the active memtable's cells are merged through a
 * copy of its dictionary's codes), from inside a minute a day before the
 * first event (so a raw edge reads every memtable row, a step per hold of
 * the store lock). */
static int query_count(stress *s, uint32_t tenant, uint64_t *count)
{
	tally_query q = {
		.from_us = s->base_us - EV_LATE_SPREAD_US - TALLY_US_PER_DAY + 1234,
		.to_us = s->base_us + TALLY_US_PER_DAY,
		.bucket = TALLY_BUCKET_NONE,
		.group_by = 1u << TALLY_DIM_PROJECT,
		.quantiles = {0.5},
		.quantile_count = 1,
		.distinct_users = true,
	};
	tally_result *result = NULL;
	char errmsg[TALLY_ERRMSG_SIZE];
	int rc = tally_query_run(s->store, s->ledger.tenants[tenant], &q, &result, errmsg);
	if (rc) {
		fail(s, "query of tenant %" PRIu32 ": %s (%s)", tenant, tally_strerror(rc), errmsg);
		return rc;
	}
	*count = 0;
	for (size_t i = 0; i < result->row_count; i++) {
		*count += result->rows[i].count;
		if (result->rows[i].distinct_users > result->rows[i].count)
			fail(s, "tenant %" PRIu32 ": %" PRIu64 " distinct users in %" PRIu64 " events",
			     tenant, result->rows[i].distinct_users, result->rows[i].count);
	}
	tally_result_free(result);
	return 0;
}

static int count_event(void *ctx, const tally_event *event)
{
	(void)event;
	(*(uint64_t *)ctx)++;
	return 0;
}

/* The tenant's event count by events listing pages of LIST_PAGE_EVENTS over
 * the ledger's span: each page reads its own snapshot (the active
 * memtable a step per hold of the store lock), and a page goes on after
 * the last event of the one before, so an event acknowledged before the
 * first page is listed once and no event twice. */
#define LIST_PAGE_EVENTS 500
static int list_count(stress *s, uint32_t tenant, uint64_t *count)
{
	char cursor[TALLY_CURSOR_SIZE] = "";
	*count = 0;
	do {
		tally_list_request r = {
			.from_us = s->base_us - EV_LATE_SPREAD_US - TALLY_US_PER_DAY,
			.to_us = s->base_us + TALLY_US_PER_DAY,
			.cursor = cursor,
			.limit = LIST_PAGE_EVENTS,
		};
		char next[TALLY_CURSOR_SIZE], errmsg[TALLY_ERRMSG_SIZE];
		int rc = tally_list_events(s->store, s->ledger.tenants[tenant], &r, count_event, count,
					   next, errmsg);
		if (rc) {
			fail(s, "listing of tenant %" PRIu32 ": %s (%s)", tenant, tally_strerror(rc),
			     errmsg);
			return rc;
		}
		memcpy(cursor, next, sizeof(cursor));
	} while (cursor[0]);
	return 0;
}

/* acked before <= what a query or a scan counts <= submitted after. */
static void *reader_main(void *arg)
{
	stress *s = arg;
	uint64_t checks = 0;
	while (!atomic_load(&s->writers_done) && atomic_load(&s->failures) == 0) {
		for (uint32_t t = 0; t < TENANTS; t++) {
			uint64_t low = atomic_load(&s->acked[t]);
			uint64_t counted = 0, scanned = 0, listed = 0;
			if (query_count(s, t, &counted) || list_count(s, t, &listed))
				return NULL;
			int rc = tally_scan(s->store, s->ledger.tenants[t], INT64_MIN, INT64_MAX,
					    count_event, &scanned);
			if (rc) {
				fail(s, "scan of tenant %" PRIu32 ": %s", t, tally_strerror(rc));
				return NULL;
			}
			uint64_t high = atomic_load(&s->submitted[t]);
			if (counted < low || counted > high || scanned < low || scanned > high ||
			    listed < low || listed > high)
				fail(s, "tenant %" PRIu32 ": query counted %" PRIu64 ", scan %" PRIu64
				     ", listing %" PRIu64 ", outside [%" PRIu64 ", %" PRIu64 "]",
				     t, counted, scanned, listed, low, high);
			checks++;
		}
		tally_stats stats;
		if (tally_store_stats(s->store, &stats))
			fail(s, "tally_store_stats failed");
	}
	printf("tsan stress: %" PRIu64 " concurrent count checks\n", checks);
	return NULL;
}

/* Flushes and compacts: a flush or (every third round) a compaction each
 * round, or (flush_rows) a flush and a compaction once the memtables hold
 * flush_rows rows. */
static void *maintenance_main(void *arg)
{
	stress *s = arg;
	for (uint32_t round = 0; !atomic_load(&s->writers_done);) {
		tally_stats stats;
		if (s->flush_rows && (tally_store_stats(s->store, &stats) ||
				      stats.events_memtable < s->flush_rows)) {
			usleep(2000);
			continue;
		}
		int compact = s->flush_rows ? 0 : round % 3 == 2;
		int rc = compact ? tally_compact(s->store) : tally_flush(s->store);
		if (rc)
			fail(s, "%s: %s", compact ? "tally_compact" : "tally_flush", tally_strerror(rc));
		if (s->flush_rows && !rc && (rc = tally_compact(s->store)))
			fail(s, "tally_compact: %s", tally_strerror(rc));
		round++;
		usleep(2000);
	}
	return NULL;
}

static tally_store *open_store(const stress *s, const char *dir)
{
	tally_options options;
	tally_options_default(&options);
	options.io = &clock_io.io;
	options.memtable_bytes_max = s->flush_rows ? LARGE_MEMTABLE_BYTES_MAX : MEMTABLE_BYTES_MAX;
	options.compact_files_min = 3;
	options.flush_threads = 3;
	options.flush_parallel_rows_min = 1;
	options.query_rows_behind_max = 64; /* queries roll up memtables far behind, in slices */
	tally_store *store = NULL;
	char errmsg[TALLY_ERRMSG_SIZE];
	int rc = tally_store_open(dir, &options, &store, errmsg);
	if (rc) {
		fprintf(stderr, "tsan stress: open %s: %s (%s)\n", dir, tally_strerror(rc), errmsg);
		exit(1);
	}
	return store;
}

/* History event i of history tenant t, at base_us - HISTORY_AGE_US. */
static void history_event(const stress *s, uint32_t t, uint32_t i, char id[32], char tenant[16],
			  tally_event *e)
{
	snprintf(id, 32, "hist-%" PRIu32 "-%" PRIu32, t, i);
	snprintf(tenant, 16, "history-%" PRIu32, t);
	memset(e, 0, sizeof(*e));
	e->event_id = (tally_str){id, (uint32_t)strlen(id)};
	e->time_us = s->base_us - HISTORY_AGE_US + i;
	e->type = (tally_str){"llm.call", 8};
	e->tokens_in = i;
}

/* Ingests (or retries) every history event, one call per tenant, and
 * checks that each result is `expected`. */
static void history_ingest(stress *s, int expected)
{
	static tally_event events[HISTORY_EVENTS];
	static char ids[HISTORY_EVENTS][32];
	static tally_ingest_result results[HISTORY_EVENTS];
	for (uint32_t t = 0; t < HISTORY_TENANTS; t++) {
		char tenant[16];
		for (uint32_t i = 0; i < HISTORY_EVENTS; i++)
			history_event(s, t, i, ids[i], tenant, &events[i]);
		int rc = tally_ingest(s->store, tenant, events, HISTORY_EVENTS, results);
		if (rc) {
			fail(s, "history of %s: tally_ingest: %s", tenant, tally_strerror(rc));
			continue;
		}
		for (uint32_t i = 0; i < HISTORY_EVENTS; i++)
			if (results[i].code != expected)
				fail(s, "history event %s of %s: %s, expected %s", ids[i], tenant,
				     tally_result_name(results[i].code), tally_result_name(expected));
	}
}

/* Moves the store's clock on a day every CLOCK_STEP_MS, CLOCK_DAYS times,
 * or at once when the writers are done. */
static void *clock_main(void *arg)
{
	stress *s = arg;
	for (int day = 1; day <= CLOCK_DAYS; day++) {
		for (int ms = 0; ms < CLOCK_STEP_MS && !atomic_load(&s->writers_done); ms += 10)
			usleep(10000);
		atomic_store(&clock_io.offset_us, day * TALLY_US_PER_DAY);
	}
	return NULL;
}

/* After the last move: waits for the worker's expiry pass of that day,
 * then checks that the history's fingerprints are gone and its events
 * are stored once and too old to retry. */
static int history_check(stress *s)
{
	int problems = 0;
	tally_stats stats;
	int64_t day_min = (s->base_us + CLOCK_DAYS * TALLY_US_PER_DAY - 35 * TALLY_US_PER_DAY) /
			  TALLY_US_PER_DAY - 1;
	uint64_t expected = ev_ledger_present_events(&s->ledger);
	for (int ms = 0;; ms += 10) {
		if (tally_store_stats(s->store, &stats)) {
			fprintf(stderr, "tsan stress: tally_store_stats failed\n");
			return 1;
		}
		if (stats.dedup_entries == expected || ms >= EXPIRY_WAIT_MS)
			break;
		usleep(10000);
	}
	printf("tsan stress: %" PRIu64 " expiry passes (the last for day %" PRId64 "), longest "
	       "step %" PRIu64 " us\n",
	       stats.dedup_expiry_count, day_min, stats.dedup_expiry_hold_max_us);
	if (stats.dedup_entries != expected) {
		fprintf(stderr, "tsan stress: %" PRIu64 " fingerprints, expected %" PRIu64
			" (the writers' events alone)\n", stats.dedup_entries, expected);
		problems++;
	}
	if (stats.dedup_expiry_count < 1) {
		fprintf(stderr, "tsan stress: no expiry pass ran\n");
		problems++;
	}
	history_ingest(s, TALLY_REJECTED);
	for (uint32_t t = 0; t < HISTORY_TENANTS; t++) {
		char tenant[16];
		snprintf(tenant, sizeof(tenant), "history-%" PRIu32, t);
		uint64_t scanned = 0;
		int rc = tally_scan(s->store, tenant, INT64_MIN, INT64_MAX, count_event, &scanned);
		if (rc || scanned != HISTORY_EVENTS) {
			fprintf(stderr, "tsan stress: %s holds %" PRIu64 " events (%s), expected %d\n",
				tenant, scanned, tally_strerror(rc), HISTORY_EVENTS);
			problems++;
		}
	}
	return problems;
}

static int verify(stress *s, const char *when)
{
	ev_report report;
	memset(&report, 0, sizeof(report));
	int problems = ev_ledger_verify(&s->ledger, s->store, false, &report);
	printf("tsan stress: %s: %" PRIu64 " events scanned, %d problems\n", when,
	       report.events_scanned, problems);
	if (problems)
		fprintf(stderr, "%s", report.text);
	if (report.events_scanned != ev_ledger_present_events(&s->ledger)) {
		fprintf(stderr, "tsan stress: %s: expected %" PRIu64 " events\n", when,
			ev_ledger_present_events(&s->ledger));
		problems++;
	}
	return problems;
}

int main(void)
{
	static stress s;
	const char *batches = getenv("STRESS_BATCHES");
	s.batches_per_writer = batches ? (uint32_t)strtoul(batches, NULL, 10) : BATCHES_DEFAULT;
	if (s.batches_per_writer < RESEND_EVERY) {
		fprintf(stderr, "tsan stress: STRESS_BATCHES must be at least %d\n", RESEND_EVERY);
		return 2;
	}
	const char *flush_rows = getenv("STRESS_FLUSH_ROWS");
	s.flush_rows = flush_rows ? strtoull(flush_rows, NULL, 10) : 0;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	s.base_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
	ev_ledger_init(&s.ledger, SEED, TENANTS);
	uint32_t round = ev_ledger_round_begin(&s.ledger, s.base_us);

	char dir[] = "/tmp/tally-tsan-XXXXXX";
	if (!mkdtemp(dir)) {
		perror("tsan stress: mkdtemp");
		return 1;
	}
	clock_io.io = *tally_io_default();
	clock_io.io.now_us = shifted_now_us;
	s.store = open_store(&s, dir);
	history_ingest(&s, TALLY_ACCEPTED);

	writer writers[WRITERS];
	pthread_t readers[READERS], maintenance, clock;
	for (uint32_t i = 0; i < READERS; i++)
		pthread_create(&readers[i], NULL, reader_main, &s);
	pthread_create(&maintenance, NULL, maintenance_main, &s);
	pthread_create(&clock, NULL, clock_main, &s);
	for (uint32_t i = 0; i < WRITERS; i++) {
		writers[i] = (writer){.s = &s, .index = i};
		pthread_create(&writers[i].thread, NULL, writer_main, &writers[i]);
	}
	for (uint32_t i = 0; i < WRITERS; i++)
		pthread_join(writers[i].thread, NULL);
	atomic_store(&s.writers_done, true);
	for (uint32_t i = 0; i < READERS; i++)
		pthread_join(readers[i], NULL);
	pthread_join(maintenance, NULL);
	pthread_join(clock, NULL);

	uint32_t batch_total = s.batches_per_writer * WRITERS;
	for (uint32_t b = 0; b < batch_total; b++)
		ev_ledger_put(&s.ledger, round, b, tenant_of(b), EVENTS_PER_BATCH, EV_ACKED);
	int problems = verify(&s, "open store");
	problems += history_check(&s);
	problems += atomic_load(&s.failures);
	tally_stats stats;
	if (tally_store_stats(s.store, &stats) == 0)
		printf("tsan stress: %" PRIu64 " flushes, %" PRIu64 " compactions, %u busy retries\n",
		       stats.flush_count, stats.compaction_count, atomic_load(&s.busy_retries));
	int rc = tally_store_close(s.store);
	if (rc) {
		fprintf(stderr, "tsan stress: close: %s\n", tally_strerror(rc));
		problems++;
	}
	s.store = open_store(&s, dir);
	problems += verify(&s, "after reopen");
	tally_store_close(s.store);
	ev_ledger_free(&s.ledger);

	char command[sizeof(dir) + 16];
	snprintf(command, sizeof(command), "rm -rf %s", dir);
	if (system(command) != 0)
		fprintf(stderr, "tsan stress: could not remove %s\n", dir);
	printf("tsan stress: %s\n", problems ? "FAILED" : "clean");
	return problems ? 1 : 0;
}
