/*
 * test_query_cache.c — the query cache's warm against the store's file
 * lifecycle, white-box: it reaches into store_internal.h to make, by hand,
 * interleavings of the flush and compaction threads that cannot be forced
 * through the public API.
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
	snprintf(dir, sizeof(dir), "/tmp/tally-test-query-cache-XXXXXX");
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

TestSuite(query_cache, .init = setup, .fini = teardown);

#define S(x) ((tally_str){(x), (uint32_t)strlen(x)})

/* The bytes the query cache holds. */
static uint64_t query_cache_held(tally_store *s)
{
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	return st.query_cache_bytes;
}

/* A store without background threads in dir, holding one segment file
 * with 16 events of tenant acme, whose pages the flush warmed because a
 * query had read acme before it. */
static tally_store *store_with_one_warmed_file(void)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	tally_store *s = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_store_open(dir, &o, &s, err);
	cr_assert_eq(rc, 0, "open: %s (%s)", tally_strerror(rc), err);
	enum { N = 16 };
	char ids[N][8];
	tally_event e[N];
	tally_ingest_result r[N];
	for (int i = 0; i < N; i++) {
		snprintf(ids[i], sizeof(ids[i]), "r%d", i);
		memset(&e[i], 0, sizeof(e[i]));
		e[i].event_id = S(ids[i]);
		e[i].time_us = NOW_US - MINUTE_US * (1 + i);
		e[i].type = S("llm.call");
		e[i].user = S(ids[i]);
		e[i].tokens_in = (uint64_t)i;
	}
	cr_assert_eq(tally_ingest(s, "acme", e, N, r), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(r[i].code, TALLY_ACCEPTED);
	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = NOW_US - TALLY_US_PER_DAY;
	q.to_us = NOW_US + MINUTE_US;
	tally_result *res = NULL;
	cr_assert_eq(tally_query_run(s, "acme", &q, &res, err), 0, "%s", err);
	cr_assert_eq(res->rows[0].count, N);
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
Test(query_cache, a_warm_adds_nothing_for_a_file_retired_while_it_ran)
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
