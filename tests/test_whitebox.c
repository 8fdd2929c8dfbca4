/*
 * test_whitebox.c — the store's flush, compaction and query cache against
 * each other, white-box: these tests reach into store_internal.h to make
 * interleavings of the background threads that cannot be forced through
 * the public API.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segment.h"
#include "store_internal.h"
#include "support/fault_io.h"
#include "support/test_dir.h"
#include "tally.h"

#define NOW_US (INT64_C(1790000000) * 1000000) /* 2026-09-21 */
#define MINUTE_US (INT64_C(60) * 1000000)

static char dir[256];
static fault_io *fio;

static void setup(void)
{
	fio = test_dir_store_setup(dir, sizeof(dir), "whitebox", NOW_US);
}

static void teardown(void)
{
	test_dir_store_teardown(dir, fio);
}

TestSuite(whitebox, .init = setup, .fini = teardown);

#define S(x) ((tally_str){(x), (uint32_t)strlen(x)})

/* The bytes the query cache holds. */
static uint64_t query_cache_held(tally_store *s)
{
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	return st.query_cache_bytes;
}

/* A store in dir without background threads: flushes and compactions run
 * only when a test calls them. */
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

enum { EVENTS = 16 };

/* Ingests EVENTS new events for tenant_name, ids "<prefix>0" .. ; each is
 * ACCEPTED. */
static void ingest_new(tally_store *s, const char *tenant_name, const char *prefix)
{
	char ids[EVENTS][16];
	tally_event e[EVENTS];
	tally_ingest_result r[EVENTS];
	for (int i = 0; i < EVENTS; i++) {
		snprintf(ids[i], sizeof(ids[i]), "%s%d", prefix, i);
		memset(&e[i], 0, sizeof(e[i]));
		e[i].event_id = S(ids[i]);
		e[i].time_us = NOW_US - MINUTE_US * (1 + i);
		e[i].type = S("llm.call");
		e[i].user = S(ids[i]);
		e[i].tokens_in = (uint64_t)i;
	}
	cr_assert_eq(tally_ingest(s, tenant_name, e, EVENTS, r), 0);
	for (int i = 0; i < EVENTS; i++)
		cr_assert_eq(r[i].code, TALLY_ACCEPTED);
}

/* A store holding one segment file with EVENTS events of tenant acme,
 * whose pages the flush warmed because a query had read acme before it. */
static tally_store *store_with_one_warmed_file(void)
{
	tally_store *s = store_open();
	ingest_new(s, "acme", "r");
	char err[TALLY_ERRMSG_SIZE] = "";
	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = NOW_US - TALLY_US_PER_DAY;
	q.to_us = NOW_US + MINUTE_US;
	tally_result *res = NULL;
	cr_assert_eq(tally_query_run(s, "acme", &q, &res, err), 0, "%s", err);
	cr_assert_eq(res->rows[0].count, EVENTS);
	tally_result_free(res);
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_gt(query_cache_held(s), 0, "the flush warmed the queried tenant's pages");
	return s;
}

/* Description: the warm of a file that a compaction retired while a flush
 * had it pinned adds nothing to the query cache. The compaction retired it
 * under the store lock and then forgot the file's entries (under
 * cache_lock); an entry added after that would keep a dead file's pages
 * until the LRU evicted them. The retirement is made by hand, as
 * compact_locked_maintenance makes it for a pinned input. */
Test(whitebox, a_warm_adds_nothing_for_a_file_retired_while_it_ran)
{
	tally_store *s = store_with_one_warmed_file();
	pthread_mutex_lock(&s->lock);
	cr_assert_eq(s->file_count, 1);
	segment_file *f = s->files[0];
	uint32_t tenant_id = store_tenant_find(s, "acme")->id;
	f->pins++; /* the flush's pin, held across its warm */
	f->retired = 1;
	pthread_mutex_unlock(&s->lock);
	query_cache_forget_files(s, &f->file_id, 1);
	cr_assert_eq(query_cache_held(s), 0, "the retirement forgot the file's entries");

	query_cache_warm(s, f, &tenant_id, 1);
	cr_expect_eq(query_cache_held(s), 0, "nothing was added for the retired file");

	/* The control: the same warm of the file while it is live. */
	pthread_mutex_lock(&s->lock);
	f->retired = 0;
	f->pins--;
	pthread_mutex_unlock(&s->lock);
	query_cache_warm(s, f, &tenant_id, 1);
	cr_expect_gt(query_cache_held(s), 0, "the warm of a live file adds its pages");
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: a warm skips, without reading a byte of it, a section the
 * cache could not keep: its decoded size is at least its cells' scalar
 * columns and its group table, known from the footer (a huge tenant's
 * section took 15.6 s and 780 MiB to decode, then was dropped as too big).
 * The floor is a true floor: with room for exactly what the section
 * decodes to, the warm adds it. */
Test(whitebox, a_warm_does_not_read_a_section_too_big_to_keep)
{
	tally_store *s = store_with_one_warmed_file();
	uint64_t decoded = query_cache_held(s);
	pthread_mutex_lock(&s->lock);
	cr_assert_eq(s->file_count, 1);
	segment_file *f = s->files[0];
	uint32_t tenant_id = store_tenant_find(s, "acme")->id;
	pthread_mutex_unlock(&s->lock);

	/* Room for it exactly (half the limit is the warm's). */
	query_cache_forget_files(s, &f->file_id, 1);
	cr_assert_eq(query_cache_held(s), 0);
	s->options.query_cache_bytes_max = 2 * decoded;
	query_cache_warm(s, f, &tenant_id, 1);
	cr_expect_eq(query_cache_held(s), decoded, "a section that fits is warmed");

	/* Room for one byte: skipped, nothing read. */
	query_cache_forget_files(s, &f->file_id, 1);
	s->options.query_cache_bytes_max = 2;
	fault_io_counts before, after;
	fault_io_counts_get(fio, &before);
	query_cache_warm(s, f, &tenant_id, 1);
	fault_io_counts_get(fio, &after);
	cr_expect_eq(after.pread_count, before.pread_count, "the section was not read");
	cr_expect_eq(query_cache_held(s), 0);
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: the last reader of a retired file forgets the query
 * cache's entries of it (store_files_unpin). A query that pinned a file
 * may decode its pages after the compaction that retired it forgot them:
 * without this, a dead file's pages would stay until the LRU evicted them.
 * The file holds another reader's pin too, so the unpin under test
 * forgets without closing it; the control unpins the live file first and
 * keeps its entries. */
Test(whitebox, an_unpin_forgets_the_cache_entries_of_a_retired_file)
{
	tally_store *s = store_with_one_warmed_file();
	uint64_t held = query_cache_held(s);
	pthread_mutex_lock(&s->lock);
	segment_file *f = s->files[0];
	f->pins += 3; /* the control's, the query's and the other reader's */
	pthread_mutex_unlock(&s->lock);
	segment_file *one[1] = {f};
	store_files_unpin(s, one, 1);
	cr_expect_eq(query_cache_held(s), held, "a live file's entries stay");

	pthread_mutex_lock(&s->lock);
	f->retired = 1;
	pthread_mutex_unlock(&s->lock);
	one[0] = f;
	store_files_unpin(s, one, 1);
	cr_expect_eq(query_cache_held(s), 0, "a retired file's entries go with a reader's unpin");
	pthread_mutex_lock(&s->lock);
	cr_expect_eq(f->pins, 1, "the other reader's pin is left: the file stays open");
	f->pins = 0;
	f->retired = 0; /* still in the catalog: the store closes it */
	pthread_mutex_unlock(&s->lock);
	cr_assert_eq(tally_store_close(s), 0);
}

/* The flush a compaction's test hook runs, once. */
static void flush_in_compaction(tally_store *s, void *ctx)
{
	int *flushed = ctx;
	if (!*flushed)
		cr_assert_eq(tally_flush(s), 0);
	*flushed = 1;
}

/* Whether file f holds rows of tenant id. */
static int file_holds(const segment_file *f, uint32_t tenant_id)
{
	return segment_file_find_tenant(f, tenant_id) >= 0;
}

/* Description: a compaction takes its output ids in the same hold of the
 * store lock as its inputs, so a flush that freezes just after (between
 * the two, before) gets higher ids for its newer data, and the catalog
 * keeps file ids in the order of the data's age. The hook runs the flush
 * at the point where the compaction has let the lock go; when the ids
 * were taken later, the flush's file came before the compaction's output. */
Test(whitebox, a_flush_while_a_compaction_reads_gets_later_ids)
{
	tally_store *s = store_open();
	ingest_new(s, "old", "a");
	cr_assert_eq(tally_flush(s), 0);
	ingest_new(s, "old", "b");
	cr_assert_eq(tally_flush(s), 0);
	ingest_new(s, "new", "c"); /* still in memory: the hook's flush writes it */
	int flushed = 0;
	s->compact_test_hook = flush_in_compaction;
	s->compact_test_ctx = &flushed;
	cr_assert_eq(tally_compact(s), 0);
	s->compact_test_hook = NULL;
	cr_assert_eq(flushed, 1, "the hook ran inside the compaction");

	pthread_mutex_lock(&s->lock);
	uint32_t old_id = store_tenant_find(s, "old")->id;
	uint32_t new_id = store_tenant_find(s, "new")->id;
	cr_assert_eq(s->file_count, 2, "the compaction's output and the flush's file");
	cr_expect_lt(s->files[0]->file_id, s->files[1]->file_id, "the catalog ascends");
	cr_expect(file_holds(s->files[0], old_id) && !file_holds(s->files[0], new_id),
		  "the lower id is the compaction's output, with the older data");
	cr_expect(file_holds(s->files[1], new_id) && !file_holds(s->files[1], old_id),
		  "the higher id is the flush's file, with the newer data");
	pthread_mutex_unlock(&s->lock);
	cr_assert_eq(tally_store_close(s), 0);

	/* The manifest names the same files, and nothing is lost or doubled. */
	s = store_open();
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_rows, 3 * EVENTS);
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- fingerprint expiry in steps ---------------------------------------- */

#define DAY_US TALLY_US_PER_DAY
#define HORIZON_EVENTS 20000

/* HORIZON_EVENTS events of tenant acme, ids "<prefix>00000" .. , one
 * millisecond apart from `from_us`; each is ACCEPTED. */
static void ingest_run(tally_store *s, const char *prefix, int64_t from_us)
{
	static char ids[HORIZON_EVENTS][16];
	static tally_event e[HORIZON_EVENTS];
	static tally_ingest_result r[HORIZON_EVENTS];
	for (int i = 0; i < HORIZON_EVENTS; i++) {
		snprintf(ids[i], sizeof(ids[i]), "%s%05d", prefix, i);
		memset(&e[i], 0, sizeof(e[i]));
		e[i].event_id = S(ids[i]);
		e[i].time_us = from_us + i * 1000;
		e[i].type = S("llm.call");
		e[i].tokens_in = (uint64_t)i;
	}
	cr_assert_eq(tally_ingest(s, "acme", e, HORIZON_EVENTS, r), 0);
	for (int i = 0; i < HORIZON_EVENTS; i++)
		cr_assert_eq(r[i].code, TALLY_ACCEPTED, "%s", ids[i]);
}

/* One event of acme; returns its result code. */
static uint8_t ingest_one(tally_store *s, const char *id, int64_t time_us, uint64_t tokens)
{
	tally_event e;
	memset(&e, 0, sizeof(e));
	e.event_id = S(id);
	e.time_us = time_us;
	e.type = S("llm.call");
	e.tokens_in = tokens;
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", &e, 1, &r), 0);
	return r.code;
}

typedef struct expiry_probe {
	int steps;            /* hook calls: the pass let the lock go this often */
	int64_t now_us;
} expiry_probe;

/* Between two expiry steps: ingest goes on, and dedup stays exact. */
static void ingest_between_steps(tally_store *s, void *ctx)
{
	expiry_probe *p = ctx;
	if (!p->steps++) {
		/* b00007 was ingested at NOW_US - 1 h + 7 ms, tokens 7. */
		cr_expect_eq(ingest_one(s, "b00007", NOW_US - 60 * MINUTE_US + 7000, 7),
			     TALLY_DUPLICATE, "a retry of a live event");
		cr_expect_eq(ingest_one(s, "c0", p->now_us - MINUTE_US, 1), TALLY_ACCEPTED,
			     "a new event");
		cr_expect_eq(ingest_one(s, "a00007", p->now_us - MINUTE_US, 2), TALLY_ACCEPTED,
			     "an id whose first use left the horizon is a new event");
	}
}

static uint64_t dedup_entries_of(tally_store *s)
{
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	return st.dedup_entries;
}

/* Description: the daily fingerprint expiry lets the store lock go between
 * steps of at most DEDUP_EXPIRY_STEP_SLOTS slots, so ingest runs during
 * it; it removes exactly the days the horizon left, and leaves what a
 * reopen rebuilds. The tenant's table (40,000 ids) spans several steps.
 * Sweeping every table in one hold of the lock (the old expiry) runs no
 * hook at all. */
Test(whitebox, the_fingerprint_expiry_lets_ingest_run_between_its_steps)
{
	tally_store *s = store_open();
	ingest_run(s, "a", NOW_US - 35 * DAY_US + MINUTE_US); /* the horizon's first day */
	ingest_run(s, "b", NOW_US - 60 * MINUTE_US);
	cr_assert_eq(tally_flush(s), 0); /* "a" is found in segments, "b" too */
	cr_assert_eq(dedup_entries_of(s), 2 * HORIZON_EVENTS);
	pthread_mutex_lock(&s->lock);
	uint32_t capacity = store_tenant_find(s, "acme")->dedup.capacity;
	pthread_mutex_unlock(&s->lock);
	cr_assert_gt(capacity, 2 * DEDUP_EXPIRY_STEP_SLOTS, "the table spans three steps or more");

	store_expire_dedup(s);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.dedup_expiry_count, 0, "no day left the horizon since open: no pass");

	/* Three days later, day "a" is out of the horizon (and its grace day). */
	expiry_probe probe = {.now_us = NOW_US + 3 * DAY_US};
	fault_io_clock_set_us(fio, probe.now_us);
	s->expiry_test_hook = ingest_between_steps;
	s->expiry_test_ctx = &probe;
	fault_io_clock_tick_us(fio, 1); /* durations count clock reads */
	store_expire_dedup(s);
	fault_io_clock_tick_us(fio, 0);
	cr_expect_geq(probe.steps, (int)(capacity / DEDUP_EXPIRY_STEP_SLOTS),
		      "%d steps for %u slots", probe.steps, capacity);
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.dedup_expiry_count, 1);
	/* The pass's duration spans every step and the ingest between them;
	 * the longest hold is one step's. */
	cr_expect_geq(st.dedup_expiry_hold_max_us, 1);
	cr_expect_lt(st.dedup_expiry_hold_max_us * 2, st.dedup_expiry_us_last,
		     "longest hold %" PRIu64 " us, pass %" PRIu64 " us", st.dedup_expiry_hold_max_us,
		     st.dedup_expiry_us_last);
	cr_expect_eq(st.dedup_entries, HORIZON_EVENTS + 2, "b, c0 and the new a00007");
	pthread_mutex_lock(&s->lock);
	const dedup_table *t = &store_tenant_find(s, "acme")->dedup;
	int64_t day_min = (NOW_US + 3 * DAY_US - 35 * DAY_US) / DAY_US - 1;
	uint32_t old = 0;
	for (uint32_t i = 0; i < t->capacity; i++)
		old += t->slots[i] && (int64_t)(uint16_t)t->slots[i] < day_min;
	pthread_mutex_unlock(&s->lock);
	cr_expect_eq(old, 0, "no fingerprint of a day before %" PRId64 " is left", day_min);

	/* The same day again: nothing to do. */
	int steps = probe.steps;
	store_expire_dedup(s);
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.dedup_expiry_count, 1);
	cr_expect_eq(probe.steps, steps);
	s->expiry_test_hook = NULL;
	cr_assert_eq(tally_store_close(s), 0);

	/* A reopen rebuilds the same fingerprints from segments and the WAL. */
	s = store_open();
	cr_expect_eq(dedup_entries_of(s), HORIZON_EVENTS + 2);
	cr_expect_eq(ingest_one(s, "b00007", NOW_US - 60 * MINUTE_US + 7000, 7), TALLY_DUPLICATE);
	cr_expect_eq(ingest_one(s, "a00007", probe.now_us - MINUTE_US, 2), TALLY_DUPLICATE);
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: a wall clock stepped back by days after an expiry pass does
 * not move the horizon's floor back with it. The pass removed the
 * fingerprints of the days it left; were those days trusted to the
 * fingerprints again, a retry of one of their events would find none and
 * be stored twice. A retry from under the floor, in a normal batch or a
 * backfill, is checked against the stored history by day instead
 * (DUPLICATE); before 2026-12-02 the normal one was REJECTED as too old,
 * though the clock's own horizon covered it. */
Test(whitebox, a_clock_stepped_back_after_an_expiry_keeps_the_horizon)
{
	tally_store *s = store_open();
	int64_t first_day_us = NOW_US - 35 * DAY_US + MINUTE_US;
	cr_assert_eq(ingest_one(s, "early", first_day_us, 5), TALLY_ACCEPTED);
	cr_assert_eq(ingest_one(s, "recent", NOW_US - MINUTE_US, 6), TALLY_ACCEPTED);
	cr_assert_eq(tally_flush(s), 0);
	fault_io_clock_set_us(fio, NOW_US + 3 * DAY_US);
	store_expire_dedup(s);
	cr_assert_eq(dedup_entries_of(s), 1, "the pass removed the fingerprint of \"early\"");

	fault_io_clock_set_us(fio, NOW_US); /* stepped back three days */
	cr_expect_eq(ingest_one(s, "early", first_day_us, 5), TALLY_DUPLICATE,
		     "a retry from a day the pass left is checked by day, not new");
	tally_event e;
	memset(&e, 0, sizeof(e));
	e.event_id = S("early");
	e.time_us = first_day_us;
	e.type = S("llm.call");
	e.tokens_in = 5;
	tally_ingest_result r;
	cr_assert_eq(tally_ingest_backfill(s, "acme", &e, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_DUPLICATE, "a backfill finds it in the stored history");
	cr_expect_eq(ingest_one(s, "recent", NOW_US - MINUTE_US, 6), TALLY_DUPLICATE);
	cr_expect_eq(ingest_one(s, "new", NOW_US - MINUTE_US, 7), TALLY_ACCEPTED);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_rows + st.events_memtable, 3, "early, recent and new, once each");
	cr_expect_eq(st.dedup_expiry_count, 1, "no pass for the earlier day");
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: an id's fingerprint is listed on DEDUP_DAY_CANDIDATES_MAX
 * (16) other days already (put there directly: through the API it takes
 * a 48-bit fingerprint collision), so a lookup's list is full before it
 * reaches the id's own day. The id's event is ACCEPTED, and its exact
 * resend is a DUPLICATE: a full list is taken as possibly cut short, and
 * the own day is looked at all the same. Before 2026-12-02 the resend
 * was ACCEPTED too, and the event stored twice. */
Test(whitebox, a_full_list_of_fingerprint_days_still_finds_the_own_day)
{
	tally_store *s = store_open();
	cr_assert_eq(ingest_one(s, "first", NOW_US - MINUTE_US, 1), TALLY_ACCEPTED);
	uint8_t packed[ID_PACKED_SIZE_MAX];
	size_t size;
	int kind = id_pack("x", 1, packed, &size);
	uint64_t hash = dedup_hash(kind, packed, size);
	uint16_t day = (uint16_t)(NOW_US / TALLY_US_PER_DAY);
	pthread_mutex_lock(&s->lock);
	dedup_table *t = &store_tenant_find(s, "acme")->dedup;
	for (uint32_t i = 0; i < DEDUP_DAY_CANDIDATES_MAX; i++)
		cr_assert_eq(dedup_insert(t, hash, (uint16_t)(day - 1), (uint16_t)(day - 30)), 0);
	pthread_mutex_unlock(&s->lock);
	cr_expect_eq(ingest_one(s, "x", NOW_US - MINUTE_US, 2), TALLY_ACCEPTED);
	cr_expect_eq(ingest_one(s, "x", NOW_US - MINUTE_US, 2), TALLY_DUPLICATE, "the resend");
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.events_memtable, 2, "first and x, once each");
	cr_assert_eq(tally_store_close(s), 0);
}

/* The bytes of DIR/MANIFEST now, into out (MANIFEST_BYTES_CHECK bytes). */
#define MANIFEST_BYTES_CHECK 65536
static size_t manifest_now(uint8_t *out)
{
	char path[300];
	snprintf(path, sizeof(path), "%s/MANIFEST", dir);
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "%s", path);
	size_t n = fread(out, 1, MANIFEST_BYTES_CHECK, f);
	fclose(f);
	cr_assert_lt(n, MANIFEST_BYTES_CHECK);
	return n;
}

typedef struct failed_flush {
	int ran;
	size_t size; /* of the MANIFEST after the failed flush */
	uint8_t manifest[MANIFEST_BYTES_CHECK];
} failed_flush;

/* A flush, inside a compaction, whose manifest rename fails: the store
 * turns read-only while the compaction writes its outputs. Keeps the
 * MANIFEST the disk then holds. */
static void flush_fails_in_compaction(tally_store *s, void *ctx)
{
	failed_flush *ff = ctx;
	fault_io_path_filter_set(fio, "MANIFEST");
	fault_io_rename_fail(fio, EIO);
	cr_expect_eq(tally_flush(s), -EIO);
	fault_io_rename_fail(fio, 0);
	fault_io_path_filter_set(fio, NULL);
	ff->size = manifest_now(ff->manifest);
	ff->ran = 1;
}

/* Description: the store turns read-only (a flush's manifest rename
 * fails) while a compaction writes its outputs. The compaction publishes
 * nothing: it returns the store's error, the MANIFEST is the one the disk
 * held after the failed flush, the store's message stays the flush's, and
 * its outputs are gone. Before 2026-12-02 it wrote a new manifest over
 * one whose rename was in doubt. A reopen finds every event once. */
Test(whitebox, a_compaction_publishes_nothing_once_the_store_is_read_only)
{
	tally_store *s = store_open();
	ingest_new(s, "acme", "a");
	cr_assert_eq(tally_flush(s), 0);
	ingest_new(s, "acme", "b");
	cr_assert_eq(tally_flush(s), 0);
	ingest_new(s, "acme", "c"); /* the hook's flush */
	static failed_flush ff;
	static uint8_t after[MANIFEST_BYTES_CHECK];
	s->compact_test_hook = flush_fails_in_compaction;
	s->compact_test_ctx = &ff;
	cr_expect_eq(tally_compact(s), -EIO);
	s->compact_test_hook = NULL;
	cr_assert_eq(ff.ran, 1, "the hook ran inside the compaction");
	cr_assert_eq(manifest_now(after), ff.size);
	cr_expect_eq(memcmp(ff.manifest, after, ff.size), 0, "the MANIFEST is unchanged");
	char err[TALLY_ERRMSG_SIZE];
	tally_store_errmsg_copy(s, err, sizeof(err));
	cr_expect_null(strstr(err, "compaction"), "the message stays the flush's: %s", err);
	pthread_mutex_lock(&s->lock);
	cr_expect_eq(s->file_count, 2, "the two flushed files, no output");
	pthread_mutex_unlock(&s->lock);
	cr_expect_neq(tally_store_close(s), 0, "a read-only store cannot flush at close");
	s = store_open();
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_rows + st.events_memtable, 3 * EVENTS, "every event once");
	cr_assert_eq(tally_store_close(s), 0);
}

/* A WAL fsync that fails under an ingest while a flush writes its files:
 * the store turns read-only before the flush publishes. */
static void wal_fails_in_flush(tally_store *s, void *ctx)
{
	int *ran = ctx;
	fault_io_path_filter_set(fio, ".wal");
	fault_io_fsync_fail_nth(fio, 1, EIO);
	char id[16] = "w0";
	tally_event e;
	memset(&e, 0, sizeof(e));
	e.event_id = S(id);
	e.time_us = NOW_US - MINUTE_US;
	e.type = S("llm.call");
	tally_ingest_result r;
	cr_expect_eq(tally_ingest(s, "acme", &e, 1, &r), -EIO);
	fault_io_faults_off(fio);
	*ran = 1;
}

/* Description: the store turns read-only (a WAL fsync fails) while a flush
 * writes its files. The flush publishes nothing: it returns the store's
 * error, the MANIFEST is unchanged, the store's message stays the WAL's,
 * and no file of the flush is left. Before 2026-12-02 it wrote a manifest
 * after the store had turned read-only, the mirror of what a compaction
 * no longer does (the test above). A reopen finds every acknowledged
 * event once. */
Test(whitebox, a_flush_publishes_nothing_once_the_store_is_read_only)
{
	tally_store *s = store_open();
	ingest_new(s, "acme", "a");
	cr_assert_eq(tally_flush(s), 0);
	ingest_new(s, "acme", "b");
	static uint8_t before[MANIFEST_BYTES_CHECK], after[MANIFEST_BYTES_CHECK];
	size_t size = manifest_now(before);
	int ran = 0;
	s->flush_test_hook = wal_fails_in_flush;
	s->flush_test_ctx = &ran;
	cr_expect_eq(tally_flush(s), -EIO);
	s->flush_test_hook = NULL;
	cr_assert_eq(ran, 1, "the hook ran inside the flush");
	cr_expect_eq(manifest_now(after), size);
	cr_expect_eq(memcmp(before, after, size), 0, "the MANIFEST is unchanged");
	char err[TALLY_ERRMSG_SIZE];
	tally_store_errmsg_copy(s, err, sizeof(err));
	cr_expect(strstr(err, "WAL") && !strstr(err, "flush"), "the WAL's message: %s", err);
	pthread_mutex_lock(&s->lock);
	cr_expect_eq(s->file_count, 1, "the first flush's file only");
	pthread_mutex_unlock(&s->lock);
	cr_expect_neq(tally_store_close(s), 0, "a read-only store cannot flush at close");
	s = store_open();
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_rows + st.events_memtable, 2 * EVENTS, "every event once");
	cr_expect_eq(st.segment_file_count, 1);
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: the wall clock steps 40 days ahead (a bad NTP source, a
 * VM resumed) for one ingest call and one expiry pass, then is corrected.
 * The floor they raised lies 5 days past the true now; events between the
 * clock's horizon and the floor are checked against the stored history
 * by day: a new event now is ACCEPTED (before 2026-12-02's second change
 * it was REJECTED as too old, with every other current event, until a
 * reopen or 5 days later), its retry and a retry of an event from before
 * the step are DUPLICATEs, and each is stored once, also after a reopen. */
Test(whitebox, a_corrected_clock_step_past_the_horizon_refuses_no_current_event)
{
	tally_store *s = store_open();
	cr_assert_eq(ingest_one(s, "before", NOW_US - MINUTE_US, 1), TALLY_ACCEPTED);
	fault_io_clock_set_us(fio, NOW_US + 40 * DAY_US);
	cr_assert_eq(ingest_one(s, "during", NOW_US + 40 * DAY_US - MINUTE_US, 2), TALLY_ACCEPTED);
	store_expire_dedup(s);
	fault_io_clock_set_us(fio, NOW_US + MINUTE_US); /* corrected */
	cr_expect_eq(ingest_one(s, "fresh", NOW_US, 3), TALLY_ACCEPTED);
	cr_expect_eq(ingest_one(s, "fresh", NOW_US, 3), TALLY_DUPLICATE);
	cr_expect_eq(ingest_one(s, "before", NOW_US - MINUTE_US, 1), TALLY_DUPLICATE);
	cr_assert_eq(tally_flush(s), 0);
	cr_expect_eq(ingest_one(s, "fresh", NOW_US, 3), TALLY_DUPLICATE, "found in its segment");
	cr_assert_eq(tally_store_close(s), 0);
	s = store_open();
	cr_expect_eq(ingest_one(s, "fresh", NOW_US, 3), TALLY_DUPLICATE);
	cr_expect_eq(ingest_one(s, "before", NOW_US - MINUTE_US, 1), TALLY_DUPLICATE);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_rows + st.events_memtable, 3, "before, during and fresh, once each");
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- scans that read only the row groups they need ----------------------- */

enum { DENSE_EVENTS = 300000, DENSE_BATCH = 1000 };
#define DENSE_STEP_US INT64_C(200000) /* 300,000 events 0.2 s apart: 16.7 hours */

static int64_t dense_time(uint32_t i)
{
	return (NOW_US / TALLY_US_PER_DAY - 1) * TALLY_US_PER_DAY + (int64_t)i * DENSE_STEP_US;
}

/* DENSE_EVENTS events of tenant acme in one UTC day, flushed into one
 * section of five row groups (4 x 65,536 rows, then 37,856). */
static tally_store *store_with_a_dense_day(void)
{
	tally_store *s = store_open();
	static char ids[DENSE_BATCH][16];
	static tally_event e[DENSE_BATCH];
	static tally_ingest_result r[DENSE_BATCH];
	for (uint32_t b = 0; b < DENSE_EVENTS; b += DENSE_BATCH) {
		for (uint32_t i = 0; i < DENSE_BATCH; i++) {
			snprintf(ids[i], sizeof(ids[i]), "ev-%06u", b + i);
			memset(&e[i], 0, sizeof(e[i]));
			e[i].event_id = S(ids[i]);
			e[i].time_us = dense_time(b + i);
			e[i].type = S("llm.call");
			e[i].tokens_in = b + i;
		}
		cr_assert_eq(tally_ingest(s, "acme", e, DENSE_BATCH, r), 0);
		for (uint32_t i = 0; i < DENSE_BATCH; i++)
			cr_assert_eq(r[i].code, TALLY_ACCEPTED);
	}
	cr_assert_eq(tally_flush(s), 0);
	pthread_mutex_lock(&s->lock);
	cr_assert_eq(s->file_count, 1);
	cr_assert_eq(s->files[0]->rowgroup_count, 5, "row groups: %u", s->files[0]->rowgroup_count);
	pthread_mutex_unlock(&s->lock);
	return s;
}

typedef struct dense_seen {
	uint64_t calls;
	uint64_t tokens_in_sum;
} dense_seen;

static int dense_count(void *ctx, const rows *r, const strdict *const dict[DIM_COUNT], uint32_t row)
{
	(void)dict;
	dense_seen *seen = ctx;
	seen->calls++;
	seen->tokens_in_sum += r->tokens_in[row];
	return 0;
}

/* Description: a scan of a short range inside a day of five row groups
 * decodes only the row group holding it (found by a binary search on the
 * groups' times), and a scan with a bound stops after the row group that
 * passes it. Before 2026-12-02 a scan decoded every row group of every
 * segment its range touched: an events listing page or a raw query edge
 * of a big tenant decoded its whole day under the store lock. */
Test(whitebox, a_scan_decodes_only_the_row_groups_its_range_needs, .timeout = 60)
{
	tally_store *s = store_with_a_dense_day();
	pthread_mutex_lock(&s->lock);
	tenant *t = store_tenant_find(s, "acme");
	cr_assert_not_null(t);
	char err[TALLY_ERRMSG_SIZE] = "";
	dense_seen seen = {0};
	uint64_t rows_read = 0;
	int rc = store_scan_rows_locked(s, t, dense_time(200000), dense_time(200001), NULL,
					dense_count, &seen, &rows_read, err);
	cr_assert_eq(rc, 0, "%s", err);
	cr_expect_eq(seen.calls, 1);
	cr_expect_eq(seen.tokens_in_sum, 200000);
	cr_expect_eq(rows_read, 65536, "only row group 3 (rows 196,608-262,143): %" PRIu64,
		     rows_read);

	/* The last row group's first row, and the range past every row. */
	memset(&seen, 0, sizeof(seen));
	rows_read = 0;
	rc = store_scan_rows_locked(s, t, dense_time(262144), dense_time(DENSE_EVENTS + 10), NULL,
				    dense_count, &seen, &rows_read, err);
	cr_assert_eq(rc, 0, "%s", err);
	cr_expect_eq(seen.calls, DENSE_EVENTS - 262144);
	cr_expect_eq(rows_read, DENSE_EVENTS - 262144);

	/* A bound inside row group 1: groups 0 and 1 are decoded, not 2-4. */
	memset(&seen, 0, sizeof(seen));
	rows_read = 0;
	int64_t bound = dense_time(70000);
	rc = store_scan_rows_locked(s, t, dense_time(0), dense_time(DENSE_EVENTS), &bound,
				    dense_count, &seen, &rows_read, err);
	cr_assert_eq(rc, 0, "%s", err);
	cr_expect_eq(rows_read, 2 * 65536);
	cr_expect_eq(seen.calls, 2 * 65536);
	pthread_mutex_unlock(&s->lock);
	cr_assert_eq(tally_store_close(s), 0);
}

typedef struct dense_page {
	uint32_t count;
	uint64_t tokens_in[16];
} dense_page;

static int dense_page_add(void *ctx, const tally_event *e)
{
	dense_page *p = ctx;
	cr_assert_lt(p->count, 16);
	p->tokens_in[p->count++] = e->tokens_in;
	return 0;
}

/* Description: pages of an events listing inside a day of five row groups
 * come in (time, id) order from the cursor on, across row group edges,
 * with the scan's binary search and bound in their path. */
Test(whitebox, listing_pages_inside_a_dense_day_follow_their_cursor, .timeout = 60)
{
	tally_store *s = store_with_a_dense_day();
	const uint32_t starts[] = {0, 65530, 131071, 196607, 262140, DENSE_EVENTS - 5};
	for (size_t k = 0; k < sizeof(starts) / sizeof(starts[0]); k++) {
		tally_list_request req;
		memset(&req, 0, sizeof(req));
		req.from_us = dense_time(starts[k]);
		req.to_us = dense_time(DENSE_EVENTS + 1);
		req.limit = 1;
		char cursor[TALLY_CURSOR_SIZE] = "", err[TALLY_ERRMSG_SIZE] = "";
		dense_page page = {0};
		cr_assert_eq(tally_list_events(s, "acme", &req, dense_page_add, &page, cursor, err), 0,
			     "%s", err);
		cr_assert_eq(page.count, 1);
		cr_expect_eq(page.tokens_in[0], starts[k]);
		cr_assert(cursor[0], "a next page");
		req.cursor = cursor;
		req.limit = 10;
		char next[TALLY_CURSOR_SIZE] = "";
		memset(&page, 0, sizeof(page));
		cr_assert_eq(tally_list_events(s, "acme", &req, dense_page_add, &page, next, err), 0,
			     "%s", err);
		uint32_t want = DENSE_EVENTS - starts[k] - 1 < 10 ? DENSE_EVENTS - starts[k] - 1 : 10;
		cr_expect_eq(page.count, want, "start %u: %u events", starts[k], page.count);
		for (uint32_t i = 0; i < page.count; i++)
			cr_expect_eq(page.tokens_in[i], starts[k] + 1 + i, "start %u, event %u",
				     starts[k], i);
		cr_expect_eq(next[0] != 0, want == 10 && starts[k] + 11 < DENSE_EVENTS);
	}
	cr_assert_eq(tally_store_close(s), 0);
}
