/*
 * test_whitebox.c — the store's flush, compaction and query cache against
 * each other, white-box: these tests reach into store_internal.h to make
 * interleavings of the background threads that cannot be forced through
 * the public API.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segment.h"
#include "store_internal.h"
#include "support/fault_io.h"
#include "tally.h"

#define NOW_US (INT64_C(1790000000) * 1000000) /* 2026-09-21 */
#define MINUTE_US (INT64_C(60) * 1000000)

static char dir[256];
static fault_io *fio;

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/tally-test-whitebox-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	fio = fault_io_create();
	fault_io_clock_set_us(fio, NOW_US);
}

static void teardown(void)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_expect_eq(system(cmd), 0);
	fault_io_destroy(fio);
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
 * had it pinned adds nothing to the query cache. The compaction forgot the
 * file's entries when it retired it (under the store lock); an entry added
 * after that would keep a dead file's pages until the LRU evicted them.
 * The retirement is made by hand, as compact_locked_maintenance makes it
 * for a pinned input. */
Test(whitebox, a_warm_adds_nothing_for_a_file_retired_while_it_ran)
{
	tally_store *s = store_with_one_warmed_file();
	pthread_mutex_lock(&s->lock);
	cr_assert_eq(s->file_count, 1);
	segment_file *f = s->files[0];
	uint32_t tenant_id = store_tenant_find(s, "acme")->id;
	query_cache_forget_file(s, f->file_id);
	f->pins++; /* the flush's pin, held across its warm */
	f->retired = 1;
	pthread_mutex_unlock(&s->lock);
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
