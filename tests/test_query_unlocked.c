/*
 * test_query_unlocked.c — queries and events listings read their sources
 * without the store lock, and one tenant's read holds up no other's.
 *
 * A query pins its tenant's files and memtables in one hold of the store
 * lock, then reads the files, the frozen memtable and the active
 * memtable's rollup cells with the lock let go (query.c, note 3). These
 * tests stop a read in its first segment-file read (a tally_io whose pread
 * waits there) and, from another thread: ingest an event and compact the
 * very files the read is reading (the ingest must be acknowledged and the
 * compaction published while the read waits, every event counted once,
 * the inputs unlinked once the read lets them go, the cache's bytes its
 * entries' exactly); flush the read's own tenant (the flush returns); or
 * query another tenant of the same files (it answers). Others stop a read
 * that has pinned a frozen memtable (the store's query_test_hook) until a
 * flush has published and dropped it, or grow and flush the active
 * memtable a query holds, or add new names to it while queries run: the
 * read answers from what it pinned, and its unpin frees what was dropped.
 * An events listing pins its sources the same way and is run through the
 * same races. A query whose tenant's active memtable is far behind its
 * rollup rolls it up first, a slice at a time with the store lock let go
 * (the store's step_test_hook acknowledges events of another tenant
 * and of its own in each slice).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "store_internal.h"
#include "support/fault_io.h"
#include "support/test_dir.h"
#include "tally.h"

#define NOW_US (INT64_C(1790000000) * 1000000) /* 2026-09-21 */
#define DAY_US TALLY_US_PER_DAY
#define MINUTE_US (INT64_C(60) * 1000000)
#define S(x) ((tally_str){(x), (uint32_t)strlen(x)})
#define WAIT_MS_MAX 10000 /* how long the stopped read waits for the other thread */

static char dir[256];
static fault_io *fio;

static void setup(void)
{
	fio = test_dir_store_setup(dir, sizeof(dir), "unlocked", NOW_US);
}

static void teardown(void)
{
	test_dir_store_teardown(dir, fio);
}

TestSuite(unlocked, .init = setup, .fini = teardown, .timeout = 120);

/* ---- the events ------------------------------------------------------------ */

/* 40 events on each of the days 3 and 2 before today (one segment file
 * each), 20 on yesterday (left in the memtable). Users: u0..u7 in the
 * files, u4..u11 in the memtable, so only a merge of both counts 12. */
#define FILE_EVENTS 40
#define EVENT_COUNT (2 * FILE_EVENTS + 20)

static char ids[EVENT_COUNT][16];
static char users[EVENT_COUNT][8];
static tally_event events[EVENT_COUNT];

static int64_t day_start(int days_back)
{
	return (NOW_US / DAY_US - days_back) * DAY_US;
}

static void events_make(void)
{
	for (uint32_t n = 0; n < EVENT_COUNT; n++) {
		int days_back = n < FILE_EVENTS ? 3 : n < 2 * FILE_EVENTS ? 2 : 1;
		snprintf(ids[n], sizeof(ids[n]), "ev-%u", n);
		snprintf(users[n], sizeof(users[n]), "u%u", n < 2 * FILE_EVENTS ? n % 8 : 4 + n % 8);
		tally_event *e = &events[n];
		memset(e, 0, sizeof(*e));
		e->event_id = S(ids[n]);
		e->time_us = day_start(days_back) + (int64_t)(n % 40) * 7 * MINUTE_US + 1000;
		e->type = S("llm.call");
		e->project = S(n % 2 ? "web" : "api");
		e->model = S("gpt-4o");
		e->user = S(users[n]);
		e->duration_ms = 10 + n;
		e->tokens_in = 1000 + n;
		e->cost_micros = 7 * (int64_t)n;
	}
}

static void ingest(tally_store *s, const char *name, const tally_event *e, size_t count)
{
	tally_ingest_result r[EVENT_COUNT];
	cr_assert_leq(count, EVENT_COUNT);
	int rc = tally_ingest(s, name, e, count, r);
	cr_assert_eq(rc, 0, "ingest: %s (%s)", tally_strerror(rc), tally_store_errmsg(s));
	for (size_t i = 0; i < count; i++)
		cr_assert_eq(r[i].code, TALLY_ACCEPTED, "event %zu: %s", i, tally_result_name(r[i].code));
}

/* ---- the read that stops, and the other thread ------------------------------ */

static tally_io stop_io;
static atomic_int stop_armed;
static tally_store *race_store;
static pthread_mutex_t race_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t race_cond = PTHREAD_COND_INITIALIZER;
/* What the other thread does while the read is stopped. */
static enum {
	RACE_COMPACT, /* stores another tenant's event, then compacts every file */
	RACE_FLUSH,   /* stores an event of the read's own tenant, then flushes */
	RACE_QUERY,   /* queries another tenant, whose events are in the same files */
} race_mode;
/* race_first: the other thread's first step is done (its event
 * acknowledged, or with RACE_QUERY its query answered). */
static int race_go, race_first, race_flushed; /* under race_mutex */
static int race_ingest_rc = -1, race_ingest_code = -1, race_compact_rc = -1, race_flush_rc = -1;
static int race_query_rc = -1;
static uint64_t race_query_count, race_query_tokens;
static int saw_first, saw_compaction, saw_flush_return; /* what the stopped read saw */

static void deadline_in(struct timespec *t, int ms)
{
	clock_gettime(CLOCK_REALTIME, t);
	t->tv_sec += ms / 1000;
	t->tv_nsec += (long)(ms % 1000) * 1000000;
	if (t->tv_nsec >= 1000000000) {
		t->tv_sec++;
		t->tv_nsec -= 1000000000;
	}
}

/* A query of [from, to) in one bucket, nothing grouped. */
static tally_query range_query(int64_t from, int64_t to)
{
	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = from;
	q.to_us = to;
	q.bucket = TALLY_BUCKET_NONE;
	return q;
}

/* RACE_QUERY's query: tenant other over the days of the files (no
 * criterion assert off the test's thread: the main thread checks). */
static void race_query(void)
{
	tally_query q = range_query(day_start(4), day_start(0));
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	race_query_rc = tally_query_run(race_store, "other", &q, &res, err);
	if (race_query_rc == 0 && res->row_count == 1) {
		race_query_count = res->rows[0].count;
		race_query_tokens = res->rows[0].tokens_in;
	}
	tally_result_free(res);
}

/* The other thread (race_mode): one event of another tenant, then a
 * compaction of every file (the files the query has pinned among them);
 * or one more event of the query's own tenant (today, outside the query's
 * range), then a flush, whose file the flush warms the query cache with
 * (the query read the tenant, so it is watched); or a query of another
 * tenant. */
static void *race_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&race_mutex);
	while (!race_go)
		pthread_cond_wait(&race_cond, &race_mutex);
	pthread_mutex_unlock(&race_mutex);
	if (race_mode == RACE_QUERY) {
		race_query();
	} else {
		tally_event e = events[0];
		e.time_us = NOW_US - MINUTE_US;
		e.event_id = S("ev-today");
		tally_ingest_result r;
		race_ingest_rc = tally_ingest(race_store, race_mode == RACE_FLUSH ? "acme" : "other",
					      &e, 1, &r);
		race_ingest_code = r.code;
	}
	pthread_mutex_lock(&race_mutex);
	race_first = 1;
	pthread_cond_broadcast(&race_cond);
	pthread_mutex_unlock(&race_mutex);
	if (race_mode == RACE_QUERY)
		return NULL;
	if (race_mode == RACE_COMPACT) {
		race_compact_rc = tally_compact(race_store);
		return NULL;
	}
	race_flush_rc = tally_flush(race_store);
	pthread_mutex_lock(&race_mutex);
	race_flushed = 1;
	pthread_cond_broadcast(&race_cond);
	pthread_mutex_unlock(&race_mutex);
	return NULL;
}

/* The first pread once armed (the query's first read of a segment file):
 * starts the other thread and waits, up to WAIT_MS_MAX each, until its
 * first step is done and then its compaction has published or its flush
 * returned (a query that held a lock they need here would keep them
 * waiting: the waits time out and the test fails, without hanging). */
static int64_t stop_pread(const tally_io *io, int fd, void *buf, size_t size, uint64_t offset)
{
	(void)io;
	const tally_io *base = fault_io_table(fio);
	if (atomic_exchange(&stop_armed, 0)) {
		struct timespec deadline;
		deadline_in(&deadline, WAIT_MS_MAX);
		pthread_mutex_lock(&race_mutex);
		race_go = 1;
		pthread_cond_broadcast(&race_cond);
		int rc = 0;
		while (!race_first && rc == 0)
			rc = pthread_cond_timedwait(&race_cond, &race_mutex, &deadline);
		saw_first = race_first;
		rc = 0;
		while (race_mode == RACE_FLUSH && saw_first && !race_flushed && rc == 0)
			rc = pthread_cond_timedwait(&race_cond, &race_mutex, &deadline);
		saw_flush_return = race_flushed;
		pthread_mutex_unlock(&race_mutex);
		for (int waited = 0; race_mode == RACE_COMPACT && saw_first && waited < WAIT_MS_MAX &&
				     !saw_compaction;
		     waited++) {
			tally_stats st;
			if (tally_store_stats(race_store, &st) == 0 && st.compaction_count > 0)
				saw_compaction = 1;
			else
				nanosleep(&(struct timespec){0, 1000000}, NULL);
		}
	}
	return base->pread(base, fd, buf, size, offset);
}

/* A store in dir through io with background threads (their query
 * catch-up rule at behind_max) or, behind_max 0, without. */
static tally_store *open_store_with(const tally_io *io, uint32_t behind_max)
{
	tally_options o;
	tally_options_default(&o);
	o.io = io;
	o.background = behind_max > 0;
	o.query_rows_behind_max = behind_max;
	tally_store *s = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_store_open(dir, &o, &s, err);
	cr_assert_eq(rc, 0, "open: %s (%s)", tally_strerror(rc), err);
	return s;
}

/* A store in dir through io, without background threads. */
static tally_store *open_store(const tally_io *io)
{
	return open_store_with(io, 0);
}

/* ---- the query and its oracle ---------------------------------------------- */

typedef struct expected {
	uint64_t count, tokens_in;
	int64_t cost;
	uint64_t users;
} expected;

/* acme's events in [from, to), counted by brute force. */
static expected expect_range(int64_t from, int64_t to)
{
	expected x = {0};
	char seen[12] = {0};
	for (uint32_t n = 0; n < EVENT_COUNT; n++) {
		if (events[n].time_us < from || events[n].time_us >= to)
			continue;
		x.count++;
		x.tokens_in += events[n].tokens_in;
		x.cost += events[n].cost_micros;
		int u = users[n][1] - '0';
		if (users[n][2])
			u = 10 * u + users[n][2] - '0';
		x.users += !seen[u];
		seen[u] = 1;
	}
	return x;
}

static void expect_query(tally_store *s, int64_t from, int64_t to, const char *when)
{
	tally_query q = range_query(from, to);
	q.distinct_users = true;
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_query_run(s, "acme", &q, &res, err);
	cr_assert_eq(rc, 0, "%s: query: %s (%s)", when, tally_strerror(rc), err);
	expected x = expect_range(from, to);
	cr_assert_eq(res->row_count, 1, "%s", when);
	cr_expect_eq(res->rows[0].count, x.count, "%s: count", when);
	cr_expect_eq(res->rows[0].tokens_in, x.tokens_in, "%s: tokens_in", when);
	cr_expect_eq(res->rows[0].cost_micros, x.cost, "%s: cost", when);
	cr_expect_eq(res->rows[0].distinct_users, x.users, "%s: distinct users", when);
	tally_result_free(res);
}

/* ---- the listing and its oracle -------------------------------------------- */

#define PAGE_LIMIT 7 /* several pages, the first of them the stopped one */

typedef struct listed {
	uint32_t count;
	uint32_t n[EVENT_COUNT]; /* the events[] index of each one listed, in order */
} listed;

static int list_one(void *ctx, const tally_event *e)
{
	listed *l = ctx;
	uint32_t n = 0;
	while (n < EVENT_COUNT && (strlen(ids[n]) != e->event_id.len ||
				   memcmp(ids[n], e->event_id.ptr, e->event_id.len) != 0))
		n++;
	cr_assert_lt(n, EVENT_COUNT, "an event no one stored");
	cr_assert_eq(e->time_us, events[n].time_us);
	cr_assert_eq(e->tokens_in, events[n].tokens_in);
	cr_assert_lt(l->count, EVENT_COUNT, "more events listed than stored");
	l->n[l->count++] = n;
	return 0;
}

/* acme's events in [from, to) listed page by page: each exactly once, in
 * (time, id) order (the events' times are distinct). */
static void expect_listing(tally_store *s, int64_t from, int64_t to, const char *when)
{
	listed l = {0};
	char cursor[TALLY_CURSOR_SIZE] = "";
	uint32_t pages = 0;
	do {
		char next[TALLY_CURSOR_SIZE], err[TALLY_ERRMSG_SIZE] = "";
		tally_list_request r;
		memset(&r, 0, sizeof(r));
		r.from_us = from;
		r.to_us = to;
		r.cursor = cursor;
		r.limit = PAGE_LIMIT;
		uint32_t before = l.count;
		int rc = tally_list_events(s, "acme", &r, list_one, &l, next, err);
		cr_assert_eq(rc, 0, "%s: page %u: %s (%s)", when, pages, tally_strerror(rc), err);
		cr_assert(l.count - before == PAGE_LIMIT || !next[0], "%s: a short page goes on", when);
		snprintf(cursor, sizeof(cursor), "%s", next);
		pages++;
	} while (cursor[0] && pages <= EVENT_COUNT);
	uint32_t expect = 0;
	for (uint32_t n = 0; n < EVENT_COUNT; n++)
		expect += events[n].time_us >= from && events[n].time_us < to;
	cr_assert_eq(l.count, expect, "%s: events listed", when);
	for (uint32_t i = 0; i < l.count; i++) {
		const tally_event *e = &events[l.n[i]];
		cr_assert(e->time_us >= from && e->time_us < to, "%s: %s in range", when, ids[l.n[i]]);
		if (i)
			cr_assert_gt(e->time_us, events[l.n[i - 1]].time_us, "%s: order at %u", when, i);
	}
}

typedef void (*reader_fn)(tally_store *s, int64_t from, int64_t to, const char *when);

/* Stores acme's events (two files and the memtable), then runs read (a
 * query, a listing) over [from, to) with its first file read stopped while
 * the other thread does its part; returns the store once that thread has
 * ended. */
static tally_store *race_run(int64_t from, int64_t to, reader_fn read)
{
	events_make();
	stop_io = *fault_io_table(fio);
	stop_io.pread = stop_pread;
	tally_store *s = open_store(&stop_io);
	race_store = s;
	ingest(s, "acme", events, FILE_EVENTS);
	if (race_mode == RACE_QUERY)
		ingest(s, "other", events, FILE_EVENTS);
	cr_assert_eq(tally_flush(s), 0);
	ingest(s, "acme", events + FILE_EVENTS, FILE_EVENTS);
	cr_assert_eq(tally_flush(s), 0);
	ingest(s, "acme", events + 2 * FILE_EVENTS, EVENT_COUNT - 2 * FILE_EVENTS);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_assert_eq(st.segment_file_count, 2);
	cr_assert_eq(st.compaction_count, 0);

	pthread_t other;
	cr_assert_eq(pthread_create(&other, NULL, race_main, NULL), 0);
	atomic_store(&stop_armed, 1);
	read(s, from, to, "the stopped read");
	cr_assert_eq(atomic_load(&stop_armed), 0, "the read read a segment file");
	pthread_mutex_lock(&race_mutex);
	race_go = 1; /* the read did not stop: let the thread end */
	pthread_cond_broadcast(&race_cond);
	pthread_mutex_unlock(&race_mutex);
	cr_assert_eq(pthread_join(other, NULL), 0);
	return s;
}

/* The query cache's bytes are its entries' exactly: once the entries of
 * every live file are forgotten (the retired ones' went at their last
 * unpin), it holds none. An entry freed while a query still filled it in
 * (a forgetting that ignored its pin) would leave the bytes the query
 * counted afterwards. */
static void expect_cache_accounted(tally_store *s)
{
	uint64_t file_ids[8];
	pthread_mutex_lock(&s->lock);
	uint32_t n = s->file_count;
	cr_assert_leq(n, 8);
	for (uint32_t i = 0; i < n; i++)
		file_ids[i] = s->files[i]->file_id;
	pthread_mutex_unlock(&s->lock);
	query_cache_forget_files(s, file_ids, n);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.query_cache_bytes, 0, "the cache's bytes are its entries'");
}

/* race_run with the other thread ingesting another tenant's event and
 * compacting the files read is reading. */
static void race(int64_t from, int64_t to, reader_fn read)
{
	tally_store *s = race_run(from, to, read);
	tally_stats st;
	cr_expect(saw_first, "another tenant's ingest was acknowledged while the query read");
	cr_expect(saw_compaction, "a compaction of the files it read published meanwhile");
	cr_expect_eq(race_ingest_rc, 0);
	cr_expect_eq(race_ingest_code, TALLY_ACCEPTED);
	cr_expect_eq(race_compact_rc, 0);
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_file_count, 1);
	cr_expect_eq(st.compaction_count, 1);
	cr_expect_eq(test_dir_segment_files(dir), 1,
		     "the inputs were unlinked once the query let them go");
	read(s, from, to, "the same read after the race");
	expect_cache_accounted(s);
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: whole days: the query stops in its first read of a file's
 * rollup pages (its cache entry pinned and its tenant's query_lock held,
 * neither the store lock nor cache_lock). The compaction forgets the
 * inputs' cache entries meanwhile, all but the one the query has pinned,
 * which the query forgets when it lets the file go. */
Test(unlocked, a_query_over_whole_days_lets_ingest_and_compaction_through)
{
	race(day_start(4), day_start(0), expect_query);
}

/* Description: a range that starts and ends inside minutes: the query
 * stops in its first read of a file's raw rows (raw edges are read before
 * the cells, with neither lock held). */
Test(unlocked, a_query_with_raw_edges_lets_ingest_and_compaction_through)
{
	race(day_start(3) + 90 * 1000000, day_start(1) + 30 * MINUTE_US + 1, expect_query);
}

/* Description: an events listing, paged: its first page stops in its
 * first read of a segment file (the memtables were read under the store
 * lock with the files pinned, the files are read without it). Every event
 * is listed once, in order, across pages that read the files before and
 * after the compaction. */
Test(unlocked, an_events_listing_lets_ingest_and_compaction_through)
{
	race(day_start(4), day_start(0), expect_listing);
}

/* Description: a query stopped in its first read of a file's rollup pages,
 * in its file merge, while the other thread stores an event of the
 * query's own tenant and flushes it. The flush warms the query cache with
 * the new file's section of that tenant (the query made it watched), which
 * takes the cache's lock for a moment, not the query's tenant lock: it
 * returns (and lets the next flush start) while the query is still
 * stopped. The query's answer is unchanged: it had merged the memtable and
 * pinned its files before the flush. */
Test(unlocked, a_query_merging_files_does_not_hold_up_a_flush)
{
	race_mode = RACE_FLUSH;
	tally_store *s = race_run(day_start(4), day_start(0), expect_query);
	cr_expect(saw_first, "the event was acknowledged while the query merged files");
	cr_expect(saw_flush_return, "the flush returned while the query merged files");
	cr_expect_eq(race_ingest_code, TALLY_ACCEPTED);
	cr_expect_eq(race_flush_rc, 0);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_file_count, 3);
	cr_expect_eq(st.events_memtable, 0);
	expect_query(s, day_start(4), day_start(0), "the same query after the flush");
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: a query of acme stopped in its first read of a file's
 * rollup pages, in its file merge; meanwhile another tenant's query of
 * the same files (its sections sit beside acme's) merges them and answers.
 * Queries of different tenants fill and read their own cache entries, each
 * under its tenant's query_lock, so neither waits for the other (before,
 * one cache lock held for a whole file merge made every tenant's query
 * wait behind one huge one). */
Test(unlocked, a_query_merging_files_does_not_hold_up_another_tenants_query)
{
	race_mode = RACE_QUERY;
	tally_store *s = race_run(day_start(4), day_start(0), expect_query);
	cr_expect(saw_first, "the other tenant's query answered while acme's merged files");
	cr_expect_eq(race_query_rc, 0);
	uint64_t tokens = 0;
	for (uint32_t n = 0; n < FILE_EVENTS; n++)
		tokens += events[n].tokens_in;
	cr_expect_eq(race_query_count, FILE_EVENTS);
	cr_expect_eq(race_query_tokens, tokens);
	expect_query(s, day_start(4), day_start(0), "the same query after the other's");
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- a frozen memtable dropped while a query reads it ---------------------- */

static int flush_waiting, query_pinned, flush_done; /* under race_mutex */
static int flush_rc = -1, saw_flush;
static uint64_t bytes_after_flush;

/* Waits on race_cond, up to WAIT_MS_MAX, until *flag (race_mutex held). */
static int wait_for(int *flag)
{
	struct timespec deadline;
	deadline_in(&deadline, WAIT_MS_MAX);
	int rc = 0;
	while (!*flag && rc == 0)
		rc = pthread_cond_timedwait(&race_cond, &race_mutex, &deadline);
	return *flag;
}

static void raise_flag(int *flag)
{
	pthread_mutex_lock(&race_mutex);
	*flag = 1;
	pthread_cond_broadcast(&race_cond);
	pthread_mutex_unlock(&race_mutex);
}

/* The flush, its files written and not yet published: waits for the
 * query to pin the frozen memtable. */
static void flush_hook(tally_store *s, void *ctx)
{
	(void)s;
	(void)ctx;
	pthread_mutex_lock(&race_mutex);
	flush_waiting = 1;
	pthread_cond_broadcast(&race_cond);
	wait_for(&query_pinned);
	pthread_mutex_unlock(&race_mutex);
}

static void *flush_main(void *arg)
{
	flush_rc = tally_flush(arg);
	raise_flag(&flush_done);
	return NULL;
}

/* The query, its sources pinned and the store lock let go: lets the flush
 * publish (dropping the frozen memtable it pinned) and waits for it. */
static void query_hook(tally_store *s, void *ctx)
{
	(void)ctx;
	s->query_test_hook = NULL; /* this query only */
	pthread_mutex_lock(&race_mutex);
	query_pinned = 1;
	pthread_cond_broadcast(&race_cond);
	saw_flush = wait_for(&flush_done);
	pthread_mutex_unlock(&race_mutex);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	bytes_after_flush = st.memtable_bytes;
}

/* A flush froze acme's memtable (two days of events) and waits, its file
 * written; read (a query, a listing) pins the frozen memtable, lets the
 * flush publish and drop it (query_hook), then reads it. */
static void frozen_race(reader_fn read)
{
	events_make();
	tally_store *s = open_store(fault_io_table(fio));
	ingest(s, "acme", events, FILE_EVENTS);
	cr_assert_eq(tally_flush(s), 0);
	ingest(s, "acme", events + FILE_EVENTS, EVENT_COUNT - FILE_EVENTS);

	s->flush_test_hook = flush_hook;
	pthread_t flusher;
	cr_assert_eq(pthread_create(&flusher, NULL, flush_main, s), 0);
	pthread_mutex_lock(&race_mutex);
	int frozen = wait_for(&flush_waiting);
	pthread_mutex_unlock(&race_mutex);
	cr_assert(frozen, "the flush froze the memtable and wrote its file");
	s->query_test_hook = query_hook;
	read(s, day_start(4), day_start(0), "the read of the dropped memtable");
	raise_flag(&query_pinned); /* the hook did not run: let the flush end */
	cr_assert_eq(pthread_join(flusher, NULL), 0);
	s->flush_test_hook = NULL;

	cr_expect(saw_flush, "the flush published while the read held the frozen memtable");
	cr_expect_eq(flush_rc, 0);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_file_count, 2);
	cr_expect_eq(st.events_memtable, 0);
	cr_expect_eq(st.memtable_bytes, bytes_after_flush,
		     "the dropped memtable's rollup is not counted again");
	read(s, day_start(4), day_start(0), "the same read from the files");
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: a flush publishes and drops the frozen memtable that a
 * query has pinned, before the query reads it. The query counts its events
 * once (they are in the new file too, which the query did not pin), the
 * memtable stays readable until the query's unpin frees it (a free at the
 * flush would be a use after free: the ASan run), and the unpin does not
 * count its rollup in the memtable bytes any more. */
Test(unlocked, a_frozen_memtable_dropped_while_a_query_reads_it)
{
	frozen_race(expect_query);
}

/* Description: the same for an events listing, whose first page pins
 * the frozen memtable and reads its rows without the store lock; the
 * later pages read the flush's file instead. */
Test(unlocked, a_frozen_memtable_dropped_while_a_listing_reads_it)
{
	frozen_race(expect_listing);
}

/* ---- the active memtable read while it grows -------------------------------- */

/* acme's events over the days of the test, by project. */
static tally_query by_project(void)
{
	tally_query q = range_query(day_start(4), day_start(0));
	q.group_by = 1u << TALLY_DIM_PROJECT;
	return q;
}

/* Stores n events of acme, numbers [first, first + n), each with a new
 * 100-byte project name ('z' padding then the number: they sort after
 * api and web). 0 when every one was accepted. */
#define LONG_NAMES_MAX 10000
static int ingest_long_names(tally_store *s, uint32_t first, uint32_t n)
{
	static char long_ids[LONG_NAMES_MAX][24], projects[LONG_NAMES_MAX][104];
	static tally_event e[LONG_NAMES_MAX];
	static tally_ingest_result r[LONG_NAMES_MAX];
	if (n > LONG_NAMES_MAX)
		return -1;
	for (uint32_t i = 0; i < n; i++) {
		snprintf(long_ids[i], sizeof(long_ids[i]), "long-%u", first + i);
		memset(projects[i], 'z', 100);
		snprintf(projects[i] + 90, 14, "%06u", first + i);
		e[i] = events[i % EVENT_COUNT];
		e[i].event_id = S(long_ids[i]);
		e[i].project = S(projects[i]);
	}
	int rc = tally_ingest(s, "acme", e, n, r);
	for (uint32_t i = 0; i < n && rc == 0; i++)
		if (r[i].code != TALLY_ACCEPTED)
			rc = -1;
	return rc;
}

#define GROW_EVENTS LONG_NAMES_MAX
static int grow_ingest_rc = -1, grow_flush_rc = -1;

/* The query, its active memtable pinned, its rollup held and the store
 * lock let go: acme stores GROW_EVENTS more events with new 100-byte
 * project names (its dictionary grows by about 1 MiB, and moves), and a
 * flush freezes, writes, publishes and drops the very memtable the query
 * is about to read. */
static void grow_hook(tally_store *s, void *ctx)
{
	(void)ctx;
	s->query_test_hook = NULL; /* this query only */
	grow_ingest_rc = ingest_long_names(s, 0, GROW_EVENTS);
	grow_flush_rc = tally_flush(s);
}

/* Description: a query reads its tenant's active memtable in two parts:
 * its rows under the store lock, its rollup's cells after (the costly
 * part, 0.4–1 s for a memtable of 159,320 groups), with the memtable
 * pinned, its rollup_lock held and a copy of its dictionary's codes. In
 * between, the tenant stores events with new strings and a flush drops
 * the memtable: the answer is exactly what was stored when the query
 * began, group names included (reading the grown dictionary's moved
 * arena, or the freed memtable, is a use after free: the ASan run). */
Test(unlocked, a_query_reads_the_active_memtable_while_it_grows_and_is_flushed)
{
	events_make();
	tally_store *s = open_store(fault_io_table(fio));
	ingest(s, "acme", events, EVENT_COUNT);
	s->query_test_hook = grow_hook;
	tally_query q = by_project();
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_query_run(s, "acme", &q, &res, err), 0, "%s", err);
	cr_expect_eq(grow_ingest_rc, 0, "the hook's events were stored");
	cr_expect_eq(grow_flush_rc, 0, "the hook's flush published");
	cr_assert_eq(res->row_count, 2, "api and web only: the hook's projects came later");
	for (uint32_t k = 0; k < 2; k++) {
		const char *name = k ? "web" : "api";
		uint64_t count = 0, tokens = 0;
		for (uint32_t n = 0; n < EVENT_COUNT; n++)
			if (!strcmp(events[n].project.ptr, name)) {
				count++;
				tokens += events[n].tokens_in;
			}
		const tally_row *row = &res->rows[k];
		cr_expect_eq(row->group[TALLY_DIM_PROJECT].len, strlen(name));
		cr_expect(!memcmp(row->group[TALLY_DIM_PROJECT].ptr, name, strlen(name)), "row %u", k);
		cr_expect_eq(row->count, count, "%s", name);
		cr_expect_eq(row->tokens_in, tokens, "%s", name);
	}
	tally_result_free(res);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.events_memtable, 0, "the flush took the memtable");
	cr_expect_eq(st.memtable_bytes, 0, "the dropped memtable is not counted");
	q.group_by = 0;
	cr_assert_eq(tally_query_run(s, "acme", &q, &res, err), 0, "%s", err);
	cr_expect_eq(res->rows[0].count, EVENT_COUNT + GROW_EVENTS, "then every event, from the file");
	tally_result_free(res);
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- the dictionary copied ahead ---------------------------------------------- */

#define AHEAD_EVENTS 300
static int ahead_flush, ahead_rc = -1;

/* Between the query's copy of acme's dictionary and its hold of the store
 * lock: with ahead_flush, a flush takes the memtable copied; then acme
 * stores AHEAD_EVENTS events, each with a new project name. */
static void ahead_hook(tally_store *s, void *ctx)
{
	(void)ctx;
	s->query_ahead_test_hook = NULL; /* this query only */
	ahead_rc = ahead_flush ? tally_flush(s) : 0;
	if (!ahead_rc)
		ahead_rc = ingest_long_names(s, 0, AHEAD_EVENTS);
}

/* The query stopped by ahead_hook answers with every project name: api
 * and web (half of acme's first events each), then the hook's, once each
 * (its names sort after them: 'z' * 90 and a number). */
static void expect_ahead(tally_store *s)
{
	events_make();
	ingest(s, "acme", events, EVENT_COUNT);
	s->query_ahead_test_hook = ahead_hook;
	tally_query q = by_project();
	q.limit = 2 + AHEAD_EVENTS;
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_query_run(s, "acme", &q, &res, err), 0, "%s", err);
	cr_assert_eq(ahead_rc, 0, "the hook's flush and events");
	cr_assert_eq(res->row_count, 2 + AHEAD_EVENTS);
	for (uint32_t k = 0; k < 2 + AHEAD_EVENTS; k++) {
		char name[104] = "api";
		if (k == 1)
			snprintf(name, sizeof(name), "web");
		if (k >= 2) {
			memset(name, 'z', 90);
			snprintf(name + 90, 14, "%06u", k - 2);
		}
		const tally_row *row = &res->rows[k];
		cr_assert_eq(row->group[TALLY_DIM_PROJECT].len, strlen(name), "row %u", k);
		cr_assert(!memcmp(row->group[TALLY_DIM_PROJECT].ptr, name, strlen(name)), "row %u", k);
		cr_expect_eq(row->count, k < 2 ? EVENT_COUNT / 2 : 1, "row %u", k);
	}
	tally_result_free(res);
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: a query copies its tenant's active memtable's dictionary
 * before its hold of the store lock, a step per hold; in its hold it
 * copies only the strings added since: 300 new project names stored in
 * between are all in the answer, each under its own name. */
Test(unlocked, a_query_copies_only_the_names_added_since_its_dictionary_copy)
{
	ahead_flush = 0;
	expect_ahead(open_store(fault_io_table(fio)));
}

/* Description: the memtable whose dictionary the query copied is flushed
 * before the query's hold, and a new one takes the 300 new names: the
 * query copies the new memtable's dictionary whole (a copy of the old
 * one's names would be read with the new one's codes). */
Test(unlocked, a_query_whose_memtable_is_flushed_after_its_dictionary_copy)
{
	ahead_flush = 1;
	expect_ahead(open_store(fault_io_table(fio)));
}

/* The other thread of the test below: GROW_ROUNDS calls, each storing
 * GROW_BATCH events of acme with new 100-byte project names. */
#define GROW_ROUNDS 20
#define GROW_BATCH 500
static atomic_int grow_done;

static void *grow_main(void *arg)
{
	tally_store *s = arg;
	for (uint32_t round = 0; round < GROW_ROUNDS; round++)
		if (ingest_long_names(s, round * GROW_BATCH, GROW_BATCH) != 0)
			grow_ingest_rc = -1;
	atomic_store(&grow_done, 1);
	return NULL;
}

/* Description: queries grouped by project read acme's active memtable
 * while another thread keeps adding new project names to it (10,000 of
 * 100 bytes: its dictionary grows and moves again and again). The cells
 * are merged without the store lock, through a copy of the dictionary's
 * codes: every answer still has api and web exactly as stored, and the
 * ASan run reports no read of a moved dictionary. */
Test(unlocked, queries_read_the_active_memtable_while_its_dictionary_grows)
{
	events_make();
	tally_store *s = open_store(fault_io_table(fio));
	ingest(s, "acme", events, EVENT_COUNT);
	grow_ingest_rc = 0;
	pthread_t grower;
	cr_assert_eq(pthread_create(&grower, NULL, grow_main, s), 0);
	uint32_t queries = 0;
	while (!atomic_load(&grow_done) || queries < 3) {
		tally_query q = by_project();
		q.limit = 2; /* api, web: the grown names sort after them ('z...') */
		tally_result *res = NULL;
		char err[TALLY_ERRMSG_SIZE] = "";
		cr_assert_eq(tally_query_run(s, "acme", &q, &res, err), 0, "%s", err);
		cr_assert_eq(res->row_count, 2);
		cr_expect_eq(res->rows[0].group[TALLY_DIM_PROJECT].len, 3);
		cr_expect(!memcmp(res->rows[0].group[TALLY_DIM_PROJECT].ptr, "api", 3));
		cr_expect(!memcmp(res->rows[1].group[TALLY_DIM_PROJECT].ptr, "web", 3));
		cr_expect_eq(res->rows[0].count, EVENT_COUNT / 2);
		cr_expect_eq(res->rows[1].count, EVENT_COUNT / 2);
		tally_result_free(res);
		queries++;
	}
	cr_assert_eq(pthread_join(grower, NULL), 0);
	cr_expect_eq(grow_ingest_rc, 0, "the grown events were stored");
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- the first query of a memtable far behind its rollup ------------------- */

/* acme's events: yesterday, none in a file, none rolled up yet: 8 slices
 * of MEMTABLE_ROLLUP_SLICE, the last one short. */
#define BEHIND_EVENTS 2000
#define BEHIND_SLICES ((BEHIND_EVENTS + MEMTABLE_ROLLUP_SLICE - 1) / MEMTABLE_ROLLUP_SLICE)

static void ingest_behind(tally_store *s)
{
	static char behind_ids[BEHIND_EVENTS][16];
	static tally_event behind[BEHIND_EVENTS];
	static tally_ingest_result r[BEHIND_EVENTS];
	for (uint32_t n = 0; n < BEHIND_EVENTS; n++) {
		snprintf(behind_ids[n], sizeof(behind_ids[n]), "behind-%u", n);
		behind[n] = events[2 * FILE_EVENTS + n % (EVENT_COUNT - 2 * FILE_EVENTS)];
		behind[n].event_id = S(behind_ids[n]);
		behind[n].tokens_in = n;
	}
	cr_assert_eq(tally_ingest(s, "acme", behind, BEHIND_EVENTS, r), 0);
	for (uint32_t n = 0; n < BEHIND_EVENTS; n++)
		cr_assert_eq(r[n].code, TALLY_ACCEPTED, "event %u", n);
}

/* What the catch-up hook saw on the query's thread (the rollup thread's
 * slices are not counted). */
static pthread_t catch_up_thread;
static uint32_t catch_up_slices, catch_up_stored, catch_up_refused;
static uint64_t catch_up_tokens;

/* Each slice of a catch-up on the query's thread, its store lock let go:
 * one event of another tenant and one of acme itself (past the rows the
 * catch-up set out to roll up), each acknowledged here, on the same
 * thread (a catch-up that still held the store lock would hang here). */
static void catch_up_hook(tally_store *s, void *ctx, int step)
{
	(void)ctx;
	if (step != STORE_STEP_CATCH_UP || !pthread_equal(pthread_self(), catch_up_thread))
		return;
	static char id[24];
	snprintf(id, sizeof(id), "meanwhile-%u", catch_up_slices++);
	tally_event e = events[EVENT_COUNT - 1];
	e.event_id = S(id);
	e.tokens_in = 1000000 + catch_up_slices;
	tally_ingest_result r;
	for (int k = 0; k < 2; k++) {
		int rc = tally_ingest(s, k ? "acme" : "other", &e, 1, &r);
		if (rc || r.code != TALLY_ACCEPTED)
			catch_up_refused++;
		else if (k)
			catch_up_stored++, catch_up_tokens += e.tokens_in;
	}
}

/* acme's events of yesterday by query: the BEHIND_EVENTS, and what the
 * hook stored meanwhile. */
static void expect_behind(tally_store *s, const char *when)
{
	tally_query q = range_query(day_start(1), day_start(0));
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_query_run(s, "acme", &q, &res, err), 0, "%s: %s", when, err);
	cr_assert_eq(res->row_count, 1, "%s", when);
	uint64_t tokens = (uint64_t)BEHIND_EVENTS * (BEHIND_EVENTS - 1) / 2 + catch_up_tokens;
	cr_expect_eq(res->rows[0].count, BEHIND_EVENTS + catch_up_stored, "%s: count", when);
	cr_expect_eq(res->rows[0].tokens_in, tokens, "%s: tokens_in", when);
	tally_result_free(res);
}

/* Whitebox: acme's active memtable's rollup holds all its rows. */
static void expect_rolled_up(tally_store *s)
{
	pthread_mutex_lock(&s->lock);
	const tenant *t = store_tenant_find(s, "acme");
	cr_assert(t && t->active);
	uint32_t rolled = t->active->rolled, count = t->active->rows.count;
	pthread_mutex_unlock(&s->lock);
	cr_expect_eq(rolled, count, "the rollup holds all the rows the query found");
}

/* Description: without a rollup thread, a query rolls up its tenant's
 * active memtable before it reads it. It does that a slice at a time, each
 * slice's cells added with the store lock let go (this took 0.45 s of
 * store lock for 400,000 rows, every tenant's ingest waiting): another
 * tenant's event and one of acme's own are acknowledged in each of the 8
 * slices, the catch-up stops at the rows it found, and the answer counts
 * every event acknowledged before the query pinned its sources. */
Test(unlocked, a_query_rolls_up_a_memtable_far_behind_without_the_store_lock)
{
	events_make();
	tally_store *s = open_store(fault_io_table(fio));
	ingest_behind(s);
	catch_up_thread = pthread_self();
	s->step_test_hook = catch_up_hook;
	expect_behind(s, "the first query");
	s->step_test_hook = NULL;
	cr_expect_eq(catch_up_slices, BEHIND_SLICES);
	cr_expect_eq(catch_up_refused, 0, "every event stored meanwhile was acknowledged");
	cr_expect_eq(catch_up_stored, BEHIND_SLICES);
	expect_rolled_up(s);
	tally_query q = range_query(day_start(1), day_start(0));
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_query_run(s, "other", &q, &res, err), 0, "%s", err);
	cr_expect_eq(res->rows[0].count, BEHIND_SLICES, "the other tenant's events");
	tally_result_free(res);
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: with the rollup thread, the first query of a tenant nobody
 * queried finds its memtable more than query_rows_behind_max (500) rows
 * behind and rolls it up the same way, slice by slice with the store lock
 * let go (the rollup thread, which now watches acme, may take some of the
 * slices); once the rollup is within 500 rows, a query rolls up nothing
 * itself. Both answers are exact. */
Test(unlocked, a_first_query_rolls_up_only_a_memtable_past_its_limit)
{
	events_make();
	tally_store *s = open_store_with(fault_io_table(fio), 500);
	ingest_behind(s);
	catch_up_thread = pthread_self();
	s->step_test_hook = catch_up_hook;
	expect_behind(s, "the first query");
	cr_expect_geq(catch_up_slices, 1, "the query rolled up slices");
	cr_expect_leq(catch_up_slices, BEHIND_SLICES);
	cr_expect_eq(catch_up_refused, 0);
	uint32_t first = catch_up_slices;
	expect_behind(s, "a second query");
	cr_expect_eq(catch_up_slices, first, "a rollup within 500 rows is not rolled up by a query");
	s->step_test_hook = NULL;
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- an events listing of a large active memtable --------------------------- */

/* acme's events of yesterday, one every millisecond, all in the active
 * memtable (3 steps of MEMTABLE_SCAN_STEP_ROWS); every SCAN_MATCH_EVERY-th
 * has project "match", the rest "api". */
#define SCAN_EVENTS 20000
#define SCAN_STEPS ((SCAN_EVENTS + MEMTABLE_SCAN_STEP_ROWS - 1) / MEMTABLE_SCAN_STEP_ROWS)
#define SCAN_MATCH_EVERY 5000
#define SCAN_MATCHES (SCAN_EVENTS / SCAN_MATCH_EVERY)

static tally_event scan_event(uint32_t n, char id[24])
{
	snprintf(id, 24, "scan-%u", n);
	tally_event e = events[EVENT_COUNT - 1];
	e.event_id = S(id);
	e.time_us = day_start(1) + (int64_t)n * 1000;
	e.project = S(n % SCAN_MATCH_EVERY ? "api" : "match");
	return e;
}

static void ingest_scan(tally_store *s)
{
	static char scan_ids[SCAN_EVENTS][24];
	static tally_event scan[SCAN_EVENTS];
	static tally_ingest_result r[SCAN_EVENTS];
	for (uint32_t n = 0; n < SCAN_EVENTS; n++)
		scan[n] = scan_event(n, scan_ids[n]);
	cr_assert_eq(tally_ingest(s, "acme", scan, SCAN_EVENTS, r), 0);
	for (uint32_t n = 0; n < SCAN_EVENTS; n++)
		cr_assert_eq(r[n].code, TALLY_ACCEPTED, "event %u", n);
}

/* What the scan hook did: steps seen, events stored (a "match" of acme
 * and one of another tenant per step), refusals, and with scan_flush its
 * flush of acme's memtable after the first step. */
static uint32_t scan_steps, scan_refused;
static int scan_flush, scan_flush_rc = -1;

static void scan_hook(tally_store *s, void *ctx, int step)
{
	(void)ctx;
	if (step != STORE_STEP_SCAN)
		return;
	static char id[24];
	tally_event e = scan_event(SCAN_EVENTS + scan_steps * SCAN_MATCH_EVERY, id);
	scan_steps++;
	if (scan_flush && scan_steps == 1)
		scan_flush_rc = tally_flush(s);
	tally_ingest_result r;
	for (int k = 0; k < 2; k++) {
		int rc = tally_ingest(s, k ? "acme" : "other", &e, 1, &r);
		scan_refused += rc != 0 || r.code != TALLY_ACCEPTED;
	}
}

typedef struct scan_listed {
	uint32_t count;
	uint32_t n[2 * SCAN_MATCHES + SCAN_STEPS]; /* the scan_event number of each */
} scan_listed;

static int scan_list_one(void *ctx, const tally_event *e)
{
	scan_listed *l = ctx;
	char id[24];
	unsigned n;
	cr_assert_lt(e->event_id.len, sizeof(id));
	memcpy(id, e->event_id.ptr, e->event_id.len);
	id[e->event_id.len] = 0;
	cr_assert_eq(sscanf(id, "scan-%u", &n), 1, "%s", id);
	cr_assert_lt(l->count, sizeof(l->n) / sizeof(l->n[0]), "more events listed than stored");
	l->n[l->count++] = n;
	return 0;
}

/* One page of acme's "match" events of yesterday (room for all): the
 * scan_event numbers 0, SCAN_MATCH_EVERY, ... of the first `count`. */
static void expect_scan_page(tally_store *s, uint32_t count, const char *when)
{
	tally_str match = S("match");
	tally_filter f = {TALLY_DIM_PROJECT, &match, 1};
	tally_list_request r;
	memset(&r, 0, sizeof(r));
	r.from_us = day_start(1);
	r.to_us = day_start(0);
	r.filters = &f;
	r.filter_count = 1;
	r.limit = 100;
	scan_listed l = {0};
	char next[TALLY_CURSOR_SIZE], err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_list_events(s, "acme", &r, scan_list_one, &l, next, err);
	cr_assert_eq(rc, 0, "%s: %s (%s)", when, tally_strerror(rc), err);
	cr_assert_eq(next[0], 0, "%s: one page", when);
	cr_assert_eq(l.count, count, "%s: events listed", when);
	for (uint32_t i = 0; i < count; i++)
		cr_assert_eq(l.n[i], i * SCAN_MATCH_EVERY, "%s: event %u", when, i);
}

/* A listing page over acme's SCAN_EVENTS with scan_hook at each step. */
static void scan_race(int flush)
{
	events_make();
	tally_store *s = open_store(fault_io_table(fio));
	ingest_scan(s);
	scan_flush = flush;
	s->step_test_hook = scan_hook;
	expect_scan_page(s, SCAN_MATCHES, "the page read in steps");
	s->step_test_hook = NULL;
	cr_expect_eq(scan_steps, SCAN_STEPS);
	cr_expect_eq(scan_refused, 0, "every event stored meanwhile was acknowledged");
	if (flush) {
		cr_expect_eq(scan_flush_rc, 0, "the flush published");
		tally_stats st;
		cr_assert_eq(tally_store_stats(s, &st), 0);
		cr_expect_eq(st.segment_file_count, 1);
	}
	expect_scan_page(s, SCAN_MATCHES + SCAN_STEPS, "the next page");
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: an events listing page reads its tenant's active memtable
 * a step of MEMTABLE_SCAN_STEP_ROWS rows per hold of the store lock (a page
 * whose filter matches little read every row under it: 20,000 here, millions
 * in a large tenant). Between the steps, another tenant's event and a
 * matching one of acme's own are acknowledged on the page's own thread
 * (a step that still held the lock would hang there): the page lists
 * exactly the 4 matching events it found when it started; the next lists
 * the 3 stored meanwhile too. */
Test(unlocked, an_events_listing_reads_the_active_memtable_a_step_at_a_time)
{
	scan_race(0);
}

/* Description: the same, with acme's memtable frozen, written and dropped
 * by a flush after the page's first step: the page reads the rest of the
 * memtable it pinned (not the flush's file, which holds the same events),
 * each event once. */
Test(unlocked, an_events_listing_reads_its_active_memtable_while_it_is_flushed)
{
	scan_race(1);
}

/* ---- giving way to ingest between steps -------------------------------------- */

static atomic_int waiter_has_lock;

static void *lock_waiter_main(void *arg)
{
	tally_store *s = arg;
	store_lock_counted(s);
	atomic_store(&waiter_has_lock, 1);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Waits up to WAIT_MS_MAX for *v == want. */
static int wait_count(atomic_uint *v, unsigned want)
{
	for (int ms = 0; ms < WAIT_MS_MAX; ms++) {
		if (atomic_load(v) == want)
			return 1;
		nanosleep(&(struct timespec){0, 1000000}, NULL);
	}
	return 0;
}

/* Description: an ingest call (or a query's or a listing's pinning hold)
 * that finds the store lock held counts itself in lock_waiting until it
 * has the lock. A read done in steps yields while the count is not zero,
 * so the call gets the lock between two steps: a mutex does not queue its
 * waiters, and the reader, letting it go and taking it again at once,
 * kept it for its whole listing (another tenant's ack waited 0.49-1.35 s).
 * One whose trylock succeeds is not counted. The give-way is bounded: with
 * a count that never drops it still returns. */
Test(unlocked, a_caller_waiting_for_the_store_lock_is_counted_and_given_way)
{
	tally_store *s = open_store(fault_io_table(fio));
	store_lock_counted(s);
	cr_assert_eq(atomic_load(&s->lock_waiting), 0, "the lock was free: not counted");
	pthread_t waiter;
	cr_assert_eq(pthread_create(&waiter, NULL, lock_waiter_main, s), 0);
	cr_assert(wait_count(&s->lock_waiting, 1), "the waiting call is counted");
	cr_assert_eq(atomic_load(&waiter_has_lock), 0);
	pthread_mutex_unlock(&s->lock);
	store_step_give_way(s);
	cr_assert(wait_count(&s->lock_waiting, 0), "no longer counted once it has the lock");
	cr_assert_eq(pthread_join(waiter, NULL), 0);
	cr_expect_eq(atomic_load(&waiter_has_lock), 1);
	atomic_store(&s->lock_waiting, 1); /* a count that never drops */
	store_step_give_way(s);
	atomic_store(&s->lock_waiting, 0);
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- a query's memtable rows read in steps ------------------------------------- */

/* acme's events of yesterday from `from` on, by query: one row. */
static uint64_t scan_count(tally_store *s, int64_t from)
{
	tally_query q = range_query(from, day_start(0));
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_query_run(s, "acme", &q, &res, err), 0, "%s", err);
	cr_assert_eq(res->row_count, 1);
	uint64_t count = res->rows[0].count;
	tally_result_free(res);
	return count;
}

/* Once the query has pinned its sources, before it reads them: one more
 * event of acme, in range, so its memtable has more rows than noted. */
static int pinned_ingest_rc = -1;

static void pinned_hook(tally_store *s, void *ctx)
{
	(void)ctx;
	s->query_test_hook = NULL; /* this query only */
	static char id[24];
	tally_event e = scan_event(10 * SCAN_EVENTS, id);
	tally_ingest_result r;
	pinned_ingest_rc = tally_ingest(s, "acme", &e, 1, &r);
	if (!pinned_ingest_rc && r.code != TALLY_ACCEPTED)
		pinned_ingest_rc = -1;
}

/* A query of acme's SCAN_EVENTS from `from` with pinned_hook once it has
 * pinned its sources and scan_hook at each step of its memtable rows: it
 * counts `expect`, the events it found when it pinned them; the next
 * query, those the hooks stored too. */
static void scan_query(tally_store *s, int64_t from, uint64_t expect)
{
	scan_flush = 0;
	s->query_test_hook = pinned_hook;
	s->step_test_hook = scan_hook;
	cr_expect_eq(scan_count(s, from), expect, "the query read in steps");
	s->step_test_hook = NULL;
	cr_expect_eq(pinned_ingest_rc, 0);
	cr_expect_eq(scan_steps, SCAN_STEPS);
	cr_expect_eq(scan_refused, 0, "every event stored meanwhile was acknowledged");
	cr_expect_eq(scan_count(s, from), expect + 1 + SCAN_STEPS, "the next query");
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: a query whose range starts inside a minute reads that
 * minute's events from the rows (a raw edge), checking every row of the
 * active memtable by time. It does that a step of MEMTABLE_SCAN_STEP_ROWS
 * rows per hold of the store lock, after its other sources are merged,
 * with the rows it noted when it pinned them: between the steps another
 * tenant's event and one of acme's own, in range, are acknowledged on the
 * query's thread (a step that kept the lock would hang there), and the
 * answer counts exactly the events stored before it began. */
Test(unlocked, a_query_reads_raw_edges_of_the_active_memtable_a_step_at_a_time)
{
	events_make();
	tally_store *s = open_store(fault_io_table(fio));
	ingest_scan(s);
	scan_query(s, day_start(1) + 1500, SCAN_EVENTS - 2); /* events 0 and 1 come before */
}

/* Description: the same for the rows a memtable's rollup does not hold:
 * here all of them, since its rollup failed (as when memory ran out), so
 * the query merges every row into its cells, a step per hold. */
Test(unlocked, a_query_reads_the_rows_past_a_failed_rollup_a_step_at_a_time)
{
	events_make();
	tally_store *s = open_store(fault_io_table(fio));
	ingest_scan(s);
	pthread_mutex_lock(&s->lock);
	tenant *t = store_tenant_find(s, "acme");
	cr_assert(t && t->active);
	pthread_mutex_lock(&t->active->rollup_lock);
	t->active->rollup_failed = -ENOMEM;
	pthread_mutex_unlock(&t->active->rollup_lock);
	pthread_mutex_unlock(&s->lock);
	scan_query(s, day_start(1), SCAN_EVENTS);
}
