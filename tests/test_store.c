/*
 * test_store.c — the store end to end through the public API: per-event
 * results, dedup within a batch / across batches / across restarts and
 * flushes, conflicts, scans in time order, flush, compaction and recovery.
 *
 * Description: each test opens a fresh data directory under /tmp with a
 * frozen clock, so the lateness horizon is deterministic.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <limits.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "support/fault_io.h"
#include "support/rng.h"
#include "support/test_dir.h"
#include "support/threads.h"
#include "tally.h"
#include "tally_limits.h"
#include "wal.h"

#define NOW_US (INT64_C(1790000000) * 1000000) /* 2026-09-21 */
#define MINUTE_US (INT64_C(60) * 1000000)

static char dir[256];
static fault_io *fio;

static void setup(void)
{
	fio = test_dir_store_setup(dir, sizeof(dir), "store", NOW_US);
}

static void teardown(void)
{
	test_dir_store_teardown(dir, fio);
}

/* The store in dir, opened with options o. */
static tally_store *open_store_options(const tally_options *o)
{
	tally_store *s = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_store_open(dir, o, &s, err);
	cr_assert_eq(rc, 0, "open: %s (%s)", tally_strerror(rc), err);
	return s;
}

/* The store in dir with these options on top of the defaults. */
static tally_store *open_store_with(const tally_io *io, bool background, uint32_t flush_threads)
{
	tally_options o;
	tally_options_default(&o);
	o.io = io;
	o.background = background;
	o.flush_threads = flush_threads;
	return open_store_options(&o);
}

static tally_store *open_store(int background)
{
	return open_store_with(fault_io_table(fio), background, 0);
}

#define S(x) ((tally_str){(x), (uint32_t)strlen(x)})

static tally_event make_event(const char *id, int64_t time_us, uint64_t tokens)
{
	tally_event e;
	memset(&e, 0, sizeof(e));
	e.event_id = S(id);
	e.time_us = time_us;
	e.type = S("llm.call");
	e.project = S("proj-a");
	e.agent = S("agent-1");
	e.model = S("gpt-4o");
	e.user = S("user-42");
	e.status = TALLY_STATUS_OK;
	e.tokens_in = tokens;
	e.tokens_out = tokens / 2;
	e.cost_micros = (int64_t)tokens * 3;
	e.duration_ms = 1200;
	return e;
}

typedef struct collected {
	int count;
	char ids[64][65];
	int64_t times[64];
	uint64_t tokens[64];
	char model[64][129];
} collected;

static int collect(void *ctx, const tally_event *e)
{
	collected *c = ctx;
	cr_assert_lt(c->count, 64);
	memcpy(c->ids[c->count], e->event_id.ptr, e->event_id.len);
	c->ids[c->count][e->event_id.len] = 0;
	memcpy(c->model[c->count], e->model.ptr, e->model.len);
	c->model[c->count][e->model.len] = 0;
	c->times[c->count] = e->time_us;
	c->tokens[c->count] = e->tokens_in;
	c->count++;
	return 0;
}

static collected scan_all(tally_store *s, const char *tenant)
{
	collected c;
	memset(&c, 0, sizeof(c));
	int rc = tally_scan(s, tenant, 0, INT64_MAX, collect, &c);
	cr_assert_eq(rc, 0, "scan: %s", tally_strerror(rc));
	return c;
}

TestSuite(store, .init = setup, .fini = teardown);

Test(store, per_event_results_and_reasons)
{
	tally_store *s = open_store(0);
	char long_id[70];
	memset(long_id, 'x', 65);
	long_id[65] = 0;
	char long_model[140];
	memset(long_model, 'm', 129);
	long_model[129] = 0;
	tally_event e[8] = {
		make_event("a1", NOW_US - MINUTE_US, 10),
		make_event("", NOW_US, 10),
		make_event(long_id, NOW_US, 10),
		make_event("old", NOW_US - 36 * TALLY_US_PER_DAY, 10),
		make_event("future", NOW_US + 6 * MINUTE_US, 10),
		make_event("model", NOW_US, 10),
		make_event("status", NOW_US, 10),
		make_event("a2", NOW_US - 34 * TALLY_US_PER_DAY, 10),
	};
	e[5].model = S(long_model);
	e[6].status = 4;
	tally_ingest_result r[8];
	cr_assert_eq(tally_ingest(s, "acme", e, 8, r), 0);
	int codes[8] = {TALLY_ACCEPTED, TALLY_REJECTED, TALLY_REJECTED, TALLY_REJECTED,
			TALLY_REJECTED, TALLY_REJECTED, TALLY_REJECTED, TALLY_ACCEPTED};
	int reasons[8] = {0, TALLY_REASON_MISSING_ID, TALLY_REASON_ID_TOO_LONG,
			  TALLY_REASON_TIME_TOO_OLD, TALLY_REASON_TIME_IN_FUTURE,
			  TALLY_REASON_MODEL_TOO_LONG, TALLY_REASON_UNKNOWN_STATUS, 0};
	for (int i = 0; i < 8; i++) {
		cr_expect_eq(r[i].code, codes[i], "event %d: code %d", i, r[i].code);
		cr_expect_eq(r[i].reason, reasons[i], "event %d: reason %d", i, r[i].reason);
	}
	collected c = scan_all(s, "acme");
	cr_assert_eq(c.count, 2);
	cr_expect_str_eq(c.ids[0], "a2"); /* time order */
	cr_expect_str_eq(c.ids[1], "a1");
	cr_expect_eq(tally_ingest(s, "bad tenant", e, 1, r), TALLY_E_TENANT);
	cr_expect_eq(tally_store_close(s), 0);
}

/* Description: every string has its own limit and its own reason: a
 * string at its limit is ACCEPTED, one byte over is REJECTED naming that
 * string, and the others of the batch are unaffected. */
Test(store, each_string_over_its_limit_is_rejected_with_its_own_reason)
{
	tally_store *s = open_store(0);
	char at[TALLY_DIMENSION_SIZE_MAX + 2], over[TALLY_DIMENSION_SIZE_MAX + 2];
	enum { FIELDS = 5 };
	static const int reasons[FIELDS] = {TALLY_REASON_TYPE_TOO_LONG, TALLY_REASON_PROJECT_TOO_LONG,
					    TALLY_REASON_AGENT_TOO_LONG, TALLY_REASON_MODEL_TOO_LONG,
					    TALLY_REASON_USER_TOO_LONG};
	for (int f = 0; f < FIELDS; f++) {
		size_t limit = f == 0 ? TALLY_TYPE_SIZE_MAX : TALLY_DIMENSION_SIZE_MAX;
		memset(at, 'a' + f, limit);
		at[limit] = 0;
		memset(over, 'a' + f, limit + 1);
		over[limit + 1] = 0;
		char id_at[16], id_over[16];
		snprintf(id_at, sizeof(id_at), "at-%d", f);
		snprintf(id_over, sizeof(id_over), "over-%d", f);
		tally_event e[2] = {make_event(id_at, NOW_US, 1), make_event(id_over, NOW_US, 2)};
		tally_str *field_at[FIELDS] = {&e[0].type, &e[0].project, &e[0].agent, &e[0].model,
					       &e[0].user};
		tally_str *field_over[FIELDS] = {&e[1].type, &e[1].project, &e[1].agent, &e[1].model,
						 &e[1].user};
		*field_at[f] = S(at);
		*field_over[f] = S(over);
		tally_ingest_result r[2];
		cr_assert_eq(tally_ingest(s, "acme", e, 2, r), 0);
		cr_expect_eq(r[0].code, TALLY_ACCEPTED, "field %d at its limit of %zu bytes", f, limit);
		cr_expect_eq(r[1].code, TALLY_REJECTED, "field %d one byte over", f);
		cr_expect_eq(r[1].reason, reasons[f], "field %d: reason %d", f, r[1].reason);
	}
	cr_assert_eq(scan_all(s, "acme").count, FIELDS);
	cr_expect_eq(tally_store_close(s), 0);
}

/* Description: every string of an event must be UTF-8 without NUL (each
 * may reach the billing database, which takes nothing else): the id and
 * each of the five strings, holding a byte that is not, or a NUL, makes
 * its event REJECTED with TALLY_REASON_NOT_UTF8; the same field holding
 * text with sequences of two, three and four bytes is ACCEPTED. */
Test(store, a_string_that_is_not_utf8_is_rejected)
{
	tally_store *s = open_store(0);
	enum { FIELDS = 6 };
	static const struct {
		const char *bytes;
		uint32_t len;
	} bad[] = {{"x\xff", 2}, {"x\0y", 3}, {"\xed\xa0\x80", 3}, {"\xc3", 1},
		   {"abcdefg\xff", 8}, {"abcdefgh\0", 9}, {"abcdefghijklmno\x80z", 17}};
	const char *good = "caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80";
	uint32_t accepted = 0;
	for (int f = 0; f < FIELDS; f++)
		for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
			char id_ok[16];
			snprintf(id_ok, sizeof(id_ok), "ok-%d-%zu", f, k);
			tally_event e[2] = {make_event(id_ok, NOW_US, 1),
					    make_event("bad", NOW_US, 2)};
			tally_str *field_ok[FIELDS] = {&e[0].event_id, &e[0].type, &e[0].project,
						       &e[0].agent, &e[0].model, &e[0].user};
			tally_str *field_bad[FIELDS] = {&e[1].event_id, &e[1].type, &e[1].project,
							&e[1].agent, &e[1].model, &e[1].user};
			if (f) /* an id of text, unique per event */
				*field_ok[f] = (tally_str){good, (uint32_t)strlen(good)};
			*field_bad[f] = (tally_str){bad[k].bytes, bad[k].len};
			tally_ingest_result r[2];
			cr_assert_eq(tally_ingest(s, "acme", e, 2, r), 0);
			cr_expect_eq(r[0].code, TALLY_ACCEPTED, "field %d, case %zu: text", f, k);
			accepted += r[0].code == TALLY_ACCEPTED;
			cr_expect_eq(r[1].code, TALLY_REJECTED, "field %d, case %zu", f, k);
			cr_expect_eq(r[1].reason, TALLY_REASON_NOT_UTF8,
				     "field %d, case %zu: reason %d", f, k, r[1].reason);
		}
	collected c = scan_all(s, "acme");
	cr_assert_eq(c.count, accepted);
	cr_expect_str_eq(tally_reason_text(TALLY_REASON_NOT_UTF8),
			 "a string is not UTF-8 or holds a NUL byte");
	cr_expect_eq(tally_store_close(s), 0);
}

/* In a fresh store at DIR/<name> holding one acknowledged event, a WAL
 * record of `type` and `payload` appended after it, with a valid
 * checksum: the store must refuse to open, naming the record's LSN and
 * `says`, and must not have replayed anything of it. */
static void expect_replay_refused(const char *name, uint8_t type, const void *payload, size_t size,
				  const char *says)
{
	char store_dir[400], wal_dir[420], err[TALLY_ERRMSG_SIZE] = "";
	snprintf(store_dir, sizeof(store_dir), "%s/%s", dir, name);
	snprintf(wal_dir, sizeof(wal_dir), "%s/wal", store_dir);
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	tally_store *s = NULL;
	cr_assert_eq(tally_store_open(store_dir, &o, &s, err), 0, "%s", err);
	tally_event e = make_event("kept", NOW_US - MINUTE_US, 1);
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", &e, 1, &r), 0);
	cr_assert_eq(tally_store_close(s), 0);

	wal *w = NULL;
	cr_assert_eq(wal_open(tally_io_default(), wal_dir, NULL, 0, NULL, NULL, &w, err), 0, "%s", err);
	uint64_t lsn = 0;
	cr_assert_eq(wal_append(w, type, payload, size, &lsn), 0);
	cr_assert_eq(wal_close(w), 0);
	cr_assert_eq(lsn, 2);

	s = NULL;
	int rc = tally_store_open(store_dir, &o, &s, err);
	cr_assert_eq(rc, TALLY_E_CORRUPT, "%s: %s (%s)", name, tally_strerror(rc), err);
	cr_assert_null(s);
	/* The WAL names the file and offset, the store what is wrong. */
	cr_assert(strstr(err, "/wal/0000000000000002.wal offset 40: replay stopped at LSN 2: WAL "
			      "record LSN 2 has a valid checksum but") &&
			  strstr(err, says),
		  "%s: \"%s\" does not say \"%s\"", name, err, says);
}

/* Description: a WAL record whose checksum is good but whose contents are
 * not a batch (a bug's record, or one of a future type) stops the open
 * with a message naming its LSN, instead of replaying part of it: a
 * payload that ends inside its first field, a batch that promises an
 * event it does not hold, an unknown record type, and a list of batches
 * with fewer than two. */
Test(store, a_wal_record_with_a_good_checksum_and_a_bad_payload_stops_the_open)
{
	enum { WAL_RECORD_BATCH = 1, WAL_RECORD_BATCHES = 2 }; /* docs/formats.md, "WAL" */
	static const uint8_t cut[] = {0xff};
	static const uint8_t promised[] = {4, 'a', 'c', 'm', 'e', 1, 0}; /* 1 event, 0 strings, none */
	static const uint8_t list_of_one[] = {1, 7, 4, 'a', 'c', 'm', 'e', 0, 0};
	expect_replay_refused("cut", WAL_RECORD_BATCH, cut, sizeof(cut), "malformed batch payload");
	expect_replay_refused("promised", WAL_RECORD_BATCH, promised, sizeof(promised),
			      "malformed batch payload");
	expect_replay_refused("type", 9, promised, sizeof(promised), "unknown type 9");
	expect_replay_refused("list", WAL_RECORD_BATCHES, list_of_one, sizeof(list_of_one),
			      "malformed list of batches");
}

/* Ingests n new events (ids "<prefix>0".."<prefix>(n-1)", n <= 16) for
 * tenant; each is ACCEPTED. */
static void ingest_new(tally_store *s, const char *tenant, const char *prefix, int n)
{
	char ids[16][16];
	tally_event e[16];
	tally_ingest_result r[16];
	for (int i = 0; i < n; i++) {
		snprintf(ids[i], sizeof(ids[i]), "%s%d", prefix, i);
		e[i] = make_event(ids[i], NOW_US - MINUTE_US * (1 + i), (uint64_t)i);
	}
	cr_assert_eq(tally_ingest(s, tenant, e, (size_t)n, r), 0);
	for (int i = 0; i < n; i++)
		cr_assert_eq(r[i].code, TALLY_ACCEPTED);
}

/* The bytes of DIR/wal/<id>.wal (malloc'ed), or NULL when it does not exist. */
static uint8_t *wal_file_bytes(uint64_t file_id, size_t *size)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/wal/%016" PRIx64 ".wal", dir, file_id);
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	cr_assert_eq(fseek(f, 0, SEEK_END), 0);
	long n = ftell(f);
	cr_assert_gt(n, 0);
	rewind(f);
	uint8_t *data = malloc((size_t)n);
	cr_assert_not_null(data);
	cr_assert_eq(fread(data, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*size = (size_t)n;
	return data;
}

/* Description: a flush that retires every WAL file leaves the WAL
 * directory empty; the next open still gives the next file a new id (the
 * manifest keeps the next WAL file id), so the old file's records, should
 * a stale block of them surface at the new file's tail, fail their
 * checksum there and are cut off as a torn tail: the open succeeds with
 * every event once. */
Test(store, an_emptied_wal_directory_gives_no_file_id_again)
{
	tally_store *s = open_store(0);
	ingest_new(s, "acme", "first", 3);
	size_t old_size = 0, size = 0;
	uint8_t *old = wal_file_bytes(1, &old_size);
	cr_assert_not_null(old, "the first WAL file is 1");
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_null(wal_file_bytes(1, &size), "the flush retired it");
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_assert_eq(st.wal_file_count, 0, "the WAL directory is empty");
	cr_assert_eq(tally_store_close(s), 0);

	s = open_store(0);
	ingest_new(s, "acme", "second", 2);
	cr_assert_eq(tally_store_close(s), 0);
	uint8_t *data = wal_file_bytes(1, &size);
	cr_assert_null(data, "id 1 is not given again");
	data = wal_file_bytes(2, &size);
	cr_assert_not_null(data, "the next file is 2");
	free(data);

	char path[400];
	snprintf(path, sizeof(path), "%s/wal/%016" PRIx64 ".wal", dir, (uint64_t)2);
	FILE *f = fopen(path, "ab");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(old + 40, 1, old_size - 40, f), old_size - 40); /* after its header */
	cr_assert_eq(fclose(f), 0);
	free(old);

	s = open_store(0);
	collected c = scan_all(s, "acme");
	cr_assert_eq(c.count, 5, "three flushed events and two replayed, each once");
	cr_assert_eq(tally_store_close(s), 0);
	data = wal_file_bytes(2, &old_size);
	cr_assert_not_null(data);
	cr_assert_eq(old_size, size, "the stale records were cut off as a torn tail");
	free(data);
	cr_assert_eq(tally_verify(dir, NULL, NULL), 0);
}

Test(store, memtable_bytes_peak_keeps_the_most_held_since_open)
{
	tally_store *s = open_store(0);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.memtable_bytes_peak, 0);
	ingest_new(s, "a", "a", 10);
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_assert_gt(st.memtable_bytes, 0);
	cr_expect_eq(st.memtable_bytes_peak, st.memtable_bytes);
	ingest_new(s, "b", "b", 10);
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.memtable_bytes_peak, st.memtable_bytes, "a second tenant's memtable adds to it");
	uint64_t peak = st.memtable_bytes_peak;
	cr_assert_eq(tally_flush(s), 0);
	ingest_new(s, "c", "c", 1);
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_assert_lt(st.memtable_bytes, peak);
	cr_expect_eq(st.memtable_bytes_peak, peak, "a flush leaves the peak");
	cr_assert_eq(tally_store_close(s), 0);
	s = open_store(0);
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_assert_eq(st.events_memtable, 1, "the WAL replayed c's event");
	cr_expect_eq(st.memtable_bytes_peak, st.memtable_bytes, "counted from the replay");
	cr_expect_eq(tally_store_close(s), 0);
}

Test(store, duplicates_within_and_across_batches_and_conflicts)
{
	tally_store *s = open_store(0);
	tally_event e[3] = {make_event("0123abcd", NOW_US - 5, 7), make_event("0123abcd", NOW_US - 5, 7),
			    make_event("0123abcd", NOW_US - 5, 8)};
	tally_ingest_result r[3];
	cr_assert_eq(tally_ingest(s, "acme", e, 3, r), 0);
	cr_expect_eq(r[0].code, TALLY_ACCEPTED);
	cr_expect_eq(r[1].code, TALLY_DUPLICATE);
	cr_expect_eq(r[2].code, TALLY_CONFLICT);
	cr_assert_eq(tally_ingest(s, "acme", e, 3, r), 0);
	cr_expect_eq(r[0].code, TALLY_DUPLICATE);
	cr_expect_eq(r[1].code, TALLY_DUPLICATE);
	cr_expect_eq(r[2].code, TALLY_CONFLICT);
	/* The same id in another tenant is a different event. */
	cr_assert_eq(tally_ingest(s, "other", e, 1, r), 0);
	cr_expect_eq(r[0].code, TALLY_ACCEPTED);
	collected c = scan_all(s, "acme");
	cr_assert_eq(c.count, 1);
	cr_expect_eq(c.tokens[0], 7);
	cr_expect_eq(tally_store_close(s), 0);
}

Test(store, dedup_survives_restart_flush_and_compaction)
{
	tally_event e[4] = {make_event("DEADBEEF", NOW_US - TALLY_US_PER_DAY, 1),
			    make_event("123e4567-e89b-12d3-a456-426614174000", NOW_US - 2 * TALLY_US_PER_DAY, 2),
			    make_event("plain id", NOW_US - 3, 3),
			    make_event("00ff", NOW_US - 4, 4)};
	tally_ingest_result r[4];
	tally_store *s = open_store(0);
	cr_assert_eq(tally_ingest(s, "acme", e, 2, r), 0);
	cr_assert_eq(tally_store_close(s), 0);

	/* Restart: WAL replay. */
	s = open_store(0);
	cr_assert_eq(tally_ingest(s, "acme", e, 2, r), 0);
	cr_expect_eq(r[0].code, TALLY_DUPLICATE);
	cr_expect_eq(r[1].code, TALLY_DUPLICATE);
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_ingest(s, "acme", e + 2, 1, r), 0);
	cr_assert_eq(tally_flush(s), 0);
	/* Now in segments: verification reads them. */
	cr_assert_eq(tally_ingest(s, "acme", e, 3, r), 0);
	for (int i = 0; i < 3; i++)
		cr_expect_eq(r[i].code, TALLY_DUPLICATE, "event %d", i);
	cr_assert_eq(tally_store_close(s), 0);

	/* Restart: fingerprint index rebuilt from segments. */
	s = open_store(0);
	tally_event conflict = e[0];
	conflict.tokens_in = 99;
	cr_assert_eq(tally_ingest(s, "acme", &conflict, 1, r), 0);
	cr_expect_eq(r[0].code, TALLY_CONFLICT);
	cr_assert_eq(tally_ingest(s, "acme", e + 3, 1, r), 0);
	cr_expect_eq(r[0].code, TALLY_ACCEPTED);
	cr_assert_eq(tally_compact(s), 0);
	tally_stats st;
	tally_store_stats(s, &st);
	cr_expect_eq(st.segment_file_count, 1);
	cr_assert_eq(tally_ingest(s, "acme", e, 4, r), 0);
	for (int i = 0; i < 4; i++)
		cr_expect_eq(r[i].code, TALLY_DUPLICATE, "event %d after compaction", i);
	collected c = scan_all(s, "acme");
	cr_assert_eq(c.count, 4);
	cr_expect_str_eq(c.ids[0], "123e4567-e89b-12d3-a456-426614174000");
	cr_expect_str_eq(c.ids[1], "DEADBEEF");
	cr_expect_str_eq(c.ids[2], "00ff");
	cr_expect_str_eq(c.ids[3], "plain id");
	cr_assert_eq(tally_store_close(s), 0);
}

/* 300 events in three calls, two flushes, a compaction and a reopen: each
 * event is scanned back once, in time order. */
static void flush_compact_reopen_round_trip(void)
{
	tally_store *s = open_store(0);
	char ids[300][32];
	tally_ingest_result r[100];
	for (int round = 0; round < 3; round++) {
		tally_event e[100];
		for (int i = 0; i < 100; i++) {
			int n = round * 100 + i;
			snprintf(ids[n], sizeof(ids[n]), "%032x", n * 7919);
			/* Spread over 3 days, deliberately out of order. */
			e[i] = make_event(ids[n], NOW_US - (int64_t)((n * 37) % 300) * 15 * MINUTE_US, n);
		}
		cr_assert_eq(tally_ingest(s, "acme", e, 100, r), 0);
		for (int i = 0; i < 100; i++)
			cr_assert_eq(r[i].code, TALLY_ACCEPTED);
		if (round < 2)
			cr_assert_eq(tally_flush(s), 0);
	}
	tally_stats st;
	tally_store_stats(s, &st);
	cr_expect_eq(st.segment_file_count, 2);
	cr_expect_eq(st.segment_rows, 200);
	cr_expect_eq(st.events_memtable, 100);
	cr_assert_eq(tally_compact(s), 0);
	tally_store_stats(s, &st);
	cr_expect_eq(st.segment_file_count, 1);
	cr_expect_eq(st.segment_rows, 200);
	cr_assert_eq(tally_store_close(s), 0);

	s = open_store(0);
	tally_store_stats(s, &st);
	cr_expect_eq(st.segment_rows + st.events_memtable, 300);
	cr_expect_eq(st.dedup_entries, 300);
	uint64_t seen[300] = {0};
	collected c;
	/* Scan in windows small enough for the collector. */
	int total = 0;
	int64_t previous = INT64_MIN;
	for (int64_t from = NOW_US - 4 * TALLY_US_PER_DAY; from < NOW_US + 1; from += 15 * MINUTE_US) {
		memset(&c, 0, sizeof(c));
		cr_assert_eq(tally_scan(s, "acme", from, from + 15 * MINUTE_US, collect, &c), 0);
		for (int i = 0; i < c.count; i++) {
			cr_assert_geq(c.times[i], previous);
			previous = c.times[i];
			seen[c.tokens[i]]++;
		}
		total += c.count;
	}
	cr_expect_eq(total, 300);
	for (int n = 0; n < 300; n++)
		cr_expect_eq(seen[n], 1, "event %d seen %" PRIu64 " times", n, seen[n]);
	cr_assert_eq(tally_store_close(s), 0);
}

Test(store, flush_compact_and_reopen_keep_every_event_once)
{
	flush_compact_reopen_round_trip();
}

/* Description: the same round trip with TALLY_IO_URING=off, the plain
 * system call path every thread of the store then takes (engine/io.c,
 * note 4: where io_uring is disabled or blocked by a container). */
Test(store, the_round_trip_on_plain_system_calls)
{
	cr_assert_eq(setenv("TALLY_IO_URING", "off", 1), 0);
	flush_compact_reopen_round_trip();
}

Test(store, second_open_is_refused_while_locked)
{
	tally_store *s = open_store(0);
	tally_store *t = NULL;
	char err[TALLY_ERRMSG_SIZE];
	cr_expect_eq(tally_store_open(dir, NULL, &t, err), TALLY_E_LOCKED);
	cr_expect_null(t);
	cr_expect_neq(strstr(err, "LOCK"), NULL, "message names the lock file: %s", err);
	cr_assert_eq(tally_store_close(s), 0);
}

Test(store, scan_merges_many_segment_files_in_time_order)
{
	/* 40 flushes, newest events first: the scan must merge 40 files plus
	 * the memtable back into time order (and grow its source table). */
	tally_store *s = open_store(0);
	char ids[41][32];
	tally_ingest_result r;
	for (int n = 0; n < 41; n++) {
		snprintf(ids[n], sizeof(ids[n]), "id-%d", n);
		tally_event e = make_event(ids[n], NOW_US - (int64_t)n * MINUTE_US, (uint64_t)n);
		cr_assert_eq(tally_ingest(s, "acme", &e, 1, &r), 0);
		cr_assert_eq(r.code, TALLY_ACCEPTED);
		if (n < 40)
			cr_assert_eq(tally_flush(s), 0);
	}
	collected c = scan_all(s, "acme");
	cr_assert_eq(c.count, 41);
	for (int i = 0; i < 41; i++)
		cr_expect_eq(c.tokens[i], (uint64_t)(40 - i), "position %d", i);
	cr_assert_eq(tally_store_close(s), 0);
}

Test(store, missing_manifest_with_data_is_refused_not_emptied)
{
	tally_store *s = open_store(0);
	tally_event e = make_event("keep-me", NOW_US - MINUTE_US, 1);
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", &e, 1, &r), 0);
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_store_close(s), 0);
	char path[300];
	snprintf(path, sizeof(path), "%s/MANIFEST", dir);
	cr_assert_eq(unlink(path), 0);
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(tally_store_open(dir, &o, &s, err), TALLY_E_CORRUPT);
	cr_expect_neq(strstr(err, "MANIFEST is missing"), NULL, "message: %s", err);
	snprintf(path, sizeof(path), "%s/segments/0000000000000001.seg", dir);
	cr_expect_eq(access(path, F_OK), 0, "the segment file is still there");
}

/* Description: with no MANIFEST, a directory of data files that cannot
 * be listed (EMFILE) is not taken for an empty one: the open fails with the
 * listing's error and names the directory, and nothing is removed (a new
 * store would have deleted the segment file as debris). Once the listing
 * works, the open is refused as damage, as above. `flush` chooses where the
 * data is: in segments/ (flushed) or only in wal/. */
static void unlistable_directory_without_manifest(bool flush, const char *sub)
{
	tally_store *s = open_store(0);
	tally_event e = make_event("keep-me", NOW_US - MINUTE_US, 1);
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", &e, 1, &r), 0);
	if (flush)
		cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_store_close(s), 0);
	char path[300], data_path[300];
	snprintf(path, sizeof(path), "%s/MANIFEST", dir);
	cr_assert_eq(unlink(path), 0);
	snprintf(data_path, sizeof(data_path), flush ? "%s/segments/0000000000000001.seg"
						     : "%s/wal/0000000000000001.wal", dir);
	cr_assert_eq(access(data_path, F_OK), 0, "%s holds the event", data_path);
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	char want[300];
	snprintf(want, sizeof(want), "%s/%s cannot be listed (%s)", dir, sub,
		 tally_strerror(-EMFILE));
	fault_io_path_filter_set(fio, sub);
	fault_io_list_dir_fail(fio, EMFILE);
	char err[TALLY_ERRMSG_SIZE] = "";
	s = NULL;
	cr_expect_eq(tally_store_open(dir, &o, &s, err), -EMFILE);
	cr_expect_null(s);
	cr_expect_neq(strstr(err, "MANIFEST is missing"), NULL, "message: %s", err);
	cr_expect_neq(strstr(err, want), NULL, "message names %s: %s", want, err);
	cr_expect_eq(access(data_path, F_OK), 0, "%s is still there", data_path);
	snprintf(path, sizeof(path), "%s/MANIFEST", dir);
	cr_expect_neq(access(path, F_OK), 0, "no MANIFEST was written");
	fault_io_faults_off(fio);
	cr_expect_eq(tally_store_open(dir, &o, &s, err), TALLY_E_CORRUPT);
	cr_expect_neq(strstr(err, "holds data files"), NULL, "message: %s", err);
	cr_expect_eq(access(data_path, F_OK), 0, "%s is still there", data_path);
}

Test(store, missing_manifest_and_unlistable_segments_directory_is_refused_not_emptied)
{
	unlistable_directory_without_manifest(true, "segments");
}

Test(store, missing_manifest_and_unlistable_wal_directory_is_refused_not_emptied)
{
	unlistable_directory_without_manifest(false, "wal");
}

/* Debris of interrupted flushes and compactions is removed at open, in
 * batches of 64 names: 150 of them (more than two batches) must all go,
 * and the live file must stay. */
Test(store, open_removes_more_than_a_batch_of_debris_files)
{
	tally_store *s = open_store(0);
	tally_event e = make_event("keep-me", NOW_US - MINUTE_US, 1);
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", &e, 1, &r), 0);
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_store_close(s), 0);
	char path[400];
	for (int i = 0; i < 150; i++) {
		snprintf(path, sizeof(path), "%s/segments/%016x.seg.tmp", dir, 0x100 + i);
		FILE *f = fopen(path, "w");
		cr_assert_not_null(f);
		fclose(f);
	}
	s = open_store(0);
	for (int i = 0; i < 150; i++) {
		snprintf(path, sizeof(path), "%s/segments/%016x.seg.tmp", dir, 0x100 + i);
		cr_expect_neq(access(path, F_OK), 0, "%s was removed", path);
	}
	snprintf(path, sizeof(path), "%s/segments/0000000000000001.seg", dir);
	cr_expect_eq(access(path, F_OK), 0, "the live segment file is still there");
	collected c = scan_all(s, "acme");
	cr_expect_eq(c.count, 1);
	cr_assert_eq(tally_store_close(s), 0);
}

Test(store, stats_say_whether_the_wal_writes_with_direct_io,
     .description = "tally_stats.wal_direct_io: false before the first WAL file, then true where "
		    "the file system takes O_DIRECT; false where it refuses it")
{
	bool supported = test_dir_direct_io_supported(dir);

	tally_store *s = open_store(0);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_not(st.wal_direct_io, "no WAL file yet");
	tally_event e = make_event("d1", NOW_US - MINUTE_US, 1);
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", &e, 1, &r), 0);
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.wal_direct_io, supported);
	cr_assert_eq(tally_store_close(s), 0);

	fault_io_direct_unsupported(fio, true);
	s = open_store(0);
	e = make_event("d2", NOW_US - MINUTE_US, 2);
	cr_assert_eq(tally_ingest(s, "acme", &e, 1, &r), 0);
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_not(st.wal_direct_io, "the file system refused O_DIRECT");
	cr_assert_eq(tally_store_close(s), 0);
}

Test(store, flush_retires_every_wal_file_it_covered)
{
	tally_store *s = open_store(0);
	tally_event e = make_event("w1", NOW_US - MINUTE_US, 1);
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", &e, 1, &r), 0);
	cr_assert_eq(tally_flush(s), 0);
	tally_stats st;
	tally_store_stats(s, &st);
	cr_expect_eq(st.wal_file_count, 0, "the WAL file the flush covered is gone");
	cr_expect_eq(st.wal_bytes, 0);
	cr_assert_eq(tally_store_close(s), 0);
	/* Recovery with an empty WAL directory continues the LSNs. */
	s = open_store(0);
	e = make_event("w2", NOW_US - MINUTE_US, 2);
	cr_assert_eq(tally_ingest(s, "acme", &e, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_ACCEPTED);
	tally_store_stats(s, &st);
	cr_expect_eq(st.wal_file_count, 1);
	cr_assert_eq(tally_store_close(s), 0);
	s = open_store(0);
	collected c = scan_all(s, "acme");
	cr_expect_eq(c.count, 2);
	cr_assert_eq(tally_store_close(s), 0);
}

Test(store, submit_many_applies_each_batch_and_replays_as_one_record)
{
	tally_store *s = open_store(0);
	tally_event a[2] = {make_event("a-1", NOW_US - 10, 1), make_event("a-2", NOW_US - 9, 2)};
	tally_event b[1] = {make_event("b-1", NOW_US - 8, 3)};
	tally_event a_again[2] = {make_event("a-2", NOW_US - 9, 2), make_event("a-3", NOW_US - 7, 4)};
	tally_ingest_result ra[2], rb[1], rbad[1] = {{99, 99}}, ra2[2];
	tally_batch batches[4] = {
		{.tenant = "acme", .events = a, .count = 2, .results = ra},
		{.tenant = "bad tenant!", .events = b, .count = 1, .results = rbad},
		{.tenant = "globex", .events = b, .count = 1, .results = rb},
		{.tenant = "acme", .events = a_again, .count = 2, .results = ra2},
	};
	uint64_t lsn = 0;
	cr_assert_eq(tally_ingest_submit_many(s, batches, 4, &lsn), 0);
	cr_assert_eq(tally_commit_wait(s, lsn), 0);
	cr_expect_eq(batches[0].status, 0);
	cr_expect_eq(batches[1].status, TALLY_E_TENANT);
	cr_expect_eq(rbad[0].code, 99, "a refused batch's results are untouched");
	cr_expect_eq(batches[2].status, 0);
	cr_expect_eq(ra[0].code, TALLY_ACCEPTED);
	cr_expect_eq(ra[1].code, TALLY_ACCEPTED);
	cr_expect_eq(rb[0].code, TALLY_ACCEPTED);
	cr_expect_eq(ra2[0].code, TALLY_DUPLICATE, "duplicate of an earlier batch in the same call");
	cr_expect_eq(ra2[1].code, TALLY_ACCEPTED);
	tally_stats st;
	tally_store_stats(s, &st);
	cr_expect_eq(st.durable_lsn, 1, "one WAL record for the whole call");
	cr_assert_eq(tally_store_close(s), 0);

	s = open_store(0); /* replay of the multi-batch record */
	collected c = scan_all(s, "acme");
	cr_assert_eq(c.count, 3);
	cr_expect_str_eq(c.ids[0], "a-1");
	cr_expect_str_eq(c.ids[1], "a-2");
	cr_expect_str_eq(c.ids[2], "a-3");
	c = scan_all(s, "globex");
	cr_assert_eq(c.count, 1);
	cr_expect_str_eq(c.ids[0], "b-1");
	cr_assert_eq(tally_ingest(s, "globex", b, 1, rb), 0);
	cr_expect_eq(rb[0].code, TALLY_DUPLICATE);
	cr_assert_eq(tally_store_close(s), 0);
}

static int count_event(void *ctx, const tally_event *e)
{
	(void)e;
	(*(uint64_t *)ctx)++;
	return 0;
}

/* Description: a flush that would make more live segment files than a
 * MANIFEST may name (SEGMENT_FILE_COUNT_MAX, 4,096; the compactor is off)
 * is refused with TALLY_E_LIMIT saying so, and writes nothing: the store
 * stays writable, a compaction brings the count down, the same flush then
 * succeeds, and the store reopens with every event. Before, the flush
 * wrote a MANIFEST of 4,097 files, and the next open refused it as
 * corrupt. About 15 s: 4,096 flushes. */
Test(store, a_flush_never_names_more_files_than_a_manifest_may, .timeout = 120)
{
	tally_store *s = open_store_with(fault_io_table(fio), false, 1);
	tally_ingest_result r;
	char id[32];
	for (uint32_t n = 0; n <= SEGMENT_FILE_COUNT_MAX; n++) {
		snprintf(id, sizeof(id), "ev-%u", n);
		tally_event e = make_event(id, NOW_US - MINUTE_US, 1);
		cr_assert_eq(tally_ingest(s, "acme", &e, 1, &r), 0);
		cr_assert_eq(r.code, TALLY_ACCEPTED);
		int rc = tally_flush(s);
		if (n < SEGMENT_FILE_COUNT_MAX) {
			cr_assert_eq(rc, 0, "flush %u: %s", n, tally_store_errmsg(s));
			continue;
		}
		cr_assert_eq(rc, TALLY_E_LIMIT, "flush %u: %s", n, tally_strerror(rc));
		cr_expect_str_eq(tally_store_errmsg(s), "flush: 4097 live segment files would pass the "
							"manifest's 4096: waiting for compaction");
	}
	tally_event e = make_event("after", NOW_US - MINUTE_US, 1);
	cr_assert_eq(tally_ingest(s, "acme", &e, 1, &r), 0, "still writable");
	cr_assert_eq(r.code, TALLY_ACCEPTED);
	cr_assert_eq(tally_compact(s), 0, "%s", tally_store_errmsg(s));
	cr_assert_eq(tally_flush(s), 0, "%s", tally_store_errmsg(s));
	cr_assert_eq(tally_store_close(s), 0);
	s = open_store_with(fault_io_table(fio), false, 1);
	uint64_t count = 0;
	cr_assert_eq(tally_scan(s, "acme", 0, INT64_MAX, count_event, &count), 0);
	cr_expect_eq(count, SEGMENT_FILE_COUNT_MAX + 2);
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: memtable_bytes_max is at most TALLY_MEMTABLE_BYTES_MAX_LIMIT
 * (768 MiB): one more byte is refused at open with TALLY_E_INVALID naming
 * the limit (a larger memtable could hold a tenant dictionary no segment
 * block takes, or ids past 32-bit offsets), the limit itself is taken. */
Test(store, memtable_bytes_max_is_at_most_the_limit)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	o.memtable_bytes_max = TALLY_MEMTABLE_BYTES_MAX_LIMIT + 1;
	tally_store *s = NULL;
	char err[TALLY_ERRMSG_SIZE] = "", want[TALLY_ERRMSG_SIZE];
	cr_expect_eq(tally_store_open(dir, &o, &s, err), TALLY_E_INVALID);
	cr_expect_null(s);
	snprintf(want, sizeof(want),
		 "open %s: memtable_bytes_max 805306369 is over 805306368 (TALLY_MEMTABLE_BYTES_MAX_LIMIT: "
		 "a memtable must fit a segment's blocks)", dir);
	cr_expect_str_eq(err, want);
	o.memtable_bytes_max = TALLY_MEMTABLE_BYTES_MAX_LIMIT;
	s = open_store_options(&o);
	cr_assert_eq(tally_store_close(s), 0);
}

/* Writes `size` characters of text unique to (event, field) into out. */
static void unique_text(char *out, size_t size, uint32_t event, uint32_t field)
{
	char head[32];
	int n = snprintf(head, sizeof(head), "%u.%u.", event, field);
	for (size_t i = 0; i < size; i++)
		out[i] = i < (size_t)n ? head[i] : (char)('a' + (event * 7 + field * 13 + i) % 26);
}

/*
 * Two batches of TALLY_BATCH_EVENTS_MAX events whose strings are all as
 * long as allowed and all different: one WAL record for the call would be
 * about 85 MB, over WAL_RECORD_PAYLOAD_MAX. (A server submits every
 * IngestBatch request of an event loop pass in one call, so a few large
 * requests at once make such a call.) The call is stored in parts, each
 * with its own record; every event is accepted, the store stays writable,
 * and a reopen replays them all.
 */
Test(store, a_call_over_the_wal_record_limit_is_stored_in_parts)
{
	enum { N = TALLY_BATCH_EVENTS_MAX, FIELD = TALLY_DIMENSION_SIZE_MAX };
	const char *tenants[2] = {"acme", "globex"};
	char *text = malloc((size_t)2 * N * (TALLY_EVENT_ID_SIZE_MAX + TALLY_TYPE_SIZE_MAX + 4 * FIELD));
	tally_event *events = calloc((size_t)2 * N, sizeof(*events));
	tally_ingest_result *results = calloc((size_t)2 * N, sizeof(*results));
	cr_assert(text && events && results);
	char *p = text;
	for (uint32_t i = 0; i < 2 * N; i++) {
		tally_event *e = &events[i];
		e->time_us = NOW_US - MINUTE_US - i;
		e->status = TALLY_STATUS_OK;
		e->tokens_in = i;
		unique_text(p, TALLY_EVENT_ID_SIZE_MAX, i, 0);
		e->event_id = (tally_str){p, TALLY_EVENT_ID_SIZE_MAX}, p += TALLY_EVENT_ID_SIZE_MAX;
		unique_text(p, TALLY_TYPE_SIZE_MAX, i, 1);
		e->type = (tally_str){p, TALLY_TYPE_SIZE_MAX}, p += TALLY_TYPE_SIZE_MAX;
		tally_str *dims[4] = {&e->project, &e->agent, &e->model, &e->user};
		for (uint32_t d = 0; d < 4; d++) {
			unique_text(p, FIELD, i, 2 + d);
			*dims[d] = (tally_str){p, FIELD}, p += FIELD;
		}
	}
	tally_batch batches[2];
	for (int b = 0; b < 2; b++)
		batches[b] = (tally_batch){
			.tenant = tenants[b], .events = events + b * N, .count = N, .results = results + b * N};
	tally_store *s = open_store(0);
	uint64_t lsn = 0;
	int rc = tally_ingest_submit_many(s, batches, 2, &lsn);
	cr_assert_eq(rc, 0, "%s: %s", tally_strerror(rc), tally_store_errmsg(s));
	cr_assert_eq(tally_commit_wait(s, lsn), 0);
	for (uint32_t i = 0; i < 2 * N; i++)
		cr_assert_eq(results[i].code, TALLY_ACCEPTED, "event %u: %s", i,
			     tally_result_name(results[i].code));
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.sticky_error, 0);
	cr_expect_eq(st.durable_lsn, 2, "one record for each part");
	/* One batch of the longest strings fits in a record with room to
	 * spare: each part here is one such batch. */
	fprintf(stderr, "test_store: two records of %" PRIu64 " bytes in all\n", st.wal_bytes);
	cr_expect_lt(st.wal_bytes, (uint64_t)2 * 48000000);
	for (int pass = 0; pass < 2; pass++) {
		for (int b = 0; b < 2; b++) {
			uint64_t n = 0;
			cr_assert_eq(tally_scan(s, tenants[b], 0, INT64_MAX, count_event, &n), 0);
			cr_expect_eq(n, N, "%s: %" PRIu64 " events", tenants[b], n);
		}
		cr_assert_eq(tally_store_close(s), 0);
		if (pass == 0)
			s = open_store(0); /* the replay of both records */
	}
	free(text);
	free(events);
	free(results);
}

/*
 * A call of 600 batches of 100 events (a WAL record of about 3 MB) is
 * stored in parts of at most INGEST_PART_BYTES_MAX (1 MiB) of records,
 * each with its own lock hold, so that one call cannot hold the store lock
 * for long; every event is accepted, and a reopen replays them all.
 */
Test(store, a_large_call_is_stored_in_parts_of_bounded_size)
{
	enum { BATCHES = 600, EVENTS = 100 };
	static char ids[BATCHES][EVENTS][48];
	static char names[BATCHES][8];
	static tally_event events[BATCHES][EVENTS];
	static tally_ingest_result results[BATCHES][EVENTS];
	tally_batch *batches = calloc(BATCHES, sizeof(*batches));
	cr_assert_not_null(batches);
	for (int b = 0; b < BATCHES; b++) {
		snprintf(names[b], sizeof(names[b]), "t%03d", b % 50);
		for (int i = 0; i < EVENTS; i++) {
			snprintf(ids[b][i], sizeof(ids[b][i]), "call-%03d-%03d-of-a-large-ingest-call", b, i);
			events[b][i] = make_event(ids[b][i], NOW_US - MINUTE_US - i, (uint64_t)(b * EVENTS + i));
		}
		batches[b] = (tally_batch){
			.tenant = names[b], .events = events[b], .count = EVENTS, .results = results[b]};
	}
	tally_store *s = open_store(0);
	uint64_t lsn = 0;
	cr_assert_eq(tally_ingest_submit_many(s, batches, BATCHES, &lsn), 0);
	cr_assert_eq(tally_commit_wait(s, lsn), 0);
	for (int b = 0; b < BATCHES; b++)
		for (int i = 0; i < EVENTS; i++)
			cr_assert_eq(results[b][i].code, TALLY_ACCEPTED);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(lsn, st.durable_lsn, "the call's commit LSN is its last part's");
	fprintf(stderr, "test_store: %" PRIu64 " WAL bytes in %" PRIu64 " records\n", st.wal_bytes,
		st.durable_lsn);
	cr_expect_gt(st.wal_bytes, 2u << 20, "the call is larger than two parts");
	cr_expect_geq(st.durable_lsn, st.wal_bytes / (1u << 20), "parts of at most 1 MiB");
	for (int pass = 0; pass < 2; pass++) {
		uint64_t n = 0;
		for (int t = 0; t < 50; t++)
			cr_assert_eq(tally_scan(s, names[t], 0, INT64_MAX, count_event, &n), 0);
		cr_expect_eq(n, (uint64_t)BATCHES * EVENTS);
		cr_assert_eq(tally_store_close(s), 0);
		if (pass == 0)
			s = open_store(0);
	}
	free(batches);
}

/* Description: calls of many batches in every shape the lookahead of
 * tally_ingest_submit_many meets (empty batches, batches whose events are
 * all rejected, refused tenant names, a tenant twice in one call, tenants
 * new mid-call, duplicates and conflicts within and across calls), against
 * a brute-force record of what was accepted: every result, then every
 * tenant's stored count, before and after a reopen. Prints its seed. */
Test(store, submit_many_of_every_batch_shape_matches_an_oracle)
{
	enum { TENANTS = 40, CALLS = 60, BATCHES_MAX = 40, EVENTS_MAX = 6, IDS = 300 };
	test_rng rng;
	test_rng_seed(&rng, "test_store", "submit_many_of_every_batch_shape_matches_an_oracle");
	static uint8_t stored[TENANTS][IDS]; /* tokens + 1 of the stored event; 0: none */
	memset(stored, 0, sizeof(stored));
	static char names[TENANTS][8];
	for (int t = 0; t < TENANTS; t++)
		snprintf(names[t], sizeof(names[t]), "t%02d", t);
	static char ids[BATCHES_MAX][EVENTS_MAX][12];
	static tally_event events[BATCHES_MAX][EVENTS_MAX];
	static tally_ingest_result results[BATCHES_MAX][EVENTS_MAX];
	static uint8_t expected[BATCHES_MAX][EVENTS_MAX];
	tally_batch batches[BATCHES_MAX];
	int tenant_of[BATCHES_MAX];
	tally_store *s = open_store(0);
	for (int call = 0; call < CALLS; call++) {
		int batch_count = 1 + (int)test_rng_below(&rng, BATCHES_MAX);
		for (int b = 0; b < batch_count; b++) {
			/* Tenants from a pool that grows with the calls, so some are
			 * new in the middle of a call. */
			int pool = 2 + call * (TENANTS - 2) / (CALLS - 1); /* up to TENANTS */
			tenant_of[b] = test_rng_below(&rng, 10) == 0 ? -1
								   : (int)test_rng_below(&rng, (uint64_t)pool);
			size_t count = test_rng_below(&rng, EVENTS_MAX + 1);
			int all_rejected = test_rng_below(&rng, 8) == 0;
			for (size_t i = 0; i < count; i++) {
				int id = (int)test_rng_below(&rng, IDS);
				uint64_t tokens = test_rng_below(&rng, 3);
				int rejected = all_rejected || test_rng_below(&rng, 10) == 0;
				snprintf(ids[b][i], sizeof(ids[b][i]), "id-%d", id);
				events[b][i] = make_event(rejected ? "" : ids[b][i],
							  NOW_US - MINUTE_US - id, tokens);
				results[b][i] = (tally_ingest_result){.code = 99};
				if (tenant_of[b] < 0)
					expected[b][i] = 99; /* a refused batch: results untouched */
				else if (rejected)
					expected[b][i] = TALLY_REJECTED;
				else if (stored[tenant_of[b]][id])
					expected[b][i] = stored[tenant_of[b]][id] == tokens + 1
								 ? TALLY_DUPLICATE
								 : TALLY_CONFLICT;
				else {
					expected[b][i] = TALLY_ACCEPTED;
					stored[tenant_of[b]][id] = (uint8_t)(tokens + 1);
				}
			}
			batches[b] = (tally_batch){
				.tenant = tenant_of[b] < 0 ? "bad tenant!" : names[tenant_of[b]],
				.events = events[b],
				.count = count,
				.results = results[b],
			};
		}
		uint64_t lsn = 0;
		cr_assert_eq(tally_ingest_submit_many(s, batches, (size_t)batch_count, &lsn), 0);
		cr_assert_eq(tally_commit_wait(s, lsn), 0);
		for (int b = 0; b < batch_count; b++) {
			cr_assert_eq(batches[b].status, tenant_of[b] < 0 ? TALLY_E_TENANT : 0,
				     "call %d batch %d (%s): status %d", call, b, batches[b].tenant,
				     batches[b].status);
			for (size_t i = 0; i < batches[b].count; i++)
				cr_assert_eq(results[b][i].code, expected[b][i],
					     "call %d batch %d event %zu (%s): %d, expected %d", call, b,
					     i, ids[b][i], results[b][i].code, expected[b][i]);
		}
	}
	for (int pass = 0; pass < 2; pass++) {
		for (int t = 0; t < TENANTS; t++) {
			uint64_t want = 0, got = 0;
			for (int id = 0; id < IDS; id++)
				want += stored[t][id] != 0;
			int rc = tally_scan(s, names[t], 0, INT64_MAX, count_event, &got);
			cr_assert(rc == 0 || (rc == TALLY_E_NOTFOUND && want == 0), "scan %s: %s",
				  names[t], tally_strerror(rc));
			cr_expect_eq(got, want, "%s%s: %" PRIu64 " stored, expected %" PRIu64, names[t],
				     pass ? " after reopen" : "", got, want);
		}
		cr_assert_eq(tally_store_close(s), 0);
		if (pass == 0)
			s = open_store(0);
	}
}

typedef struct day_counter {
	int64_t previous;
	uint64_t count;
	uint64_t per_day[8];
	int sorted;
} day_counter;

static int count_days(void *ctx, const tally_event *e)
{
	day_counter *c = ctx;
	if (e->time_us < c->previous)
		c->sorted = 0;
	c->previous = e->time_us;
	int64_t day = (NOW_US - e->time_us) / TALLY_US_PER_DAY;
	if (day >= 0 && day < 8)
		c->per_day[day]++;
	c->count++;
	return 0;
}

/* ---- flushes split across threads ----------------------------------------- */

#define BIG_TENANTS 6
#define BIG_EVENTS (FLUSH_PARALLEL_ROWS_MIN + 12000u) /* past the one-file limit */

static tally_store *open_store_flush_threads(uint32_t flush_threads)
{
	return open_store_with(fault_io_table(fio), false, flush_threads);
}

/* Tenant t gets t + 1 shares of BIG_EVENTS, so the parts must balance
 * rows, not tenants. Ids are "b<tenant>-<n>", one minute apart. */
static uint32_t big_tenant_events(uint32_t t)
{
	uint32_t shares = BIG_TENANTS * (BIG_TENANTS + 1) / 2;
	uint32_t share = BIG_EVENTS / shares;
	return share * (t + 1) + (t + 1 == BIG_TENANTS ? BIG_EVENTS - share * shares : 0);
}

static void big_ingest(tally_store *s, const char *prefix)
{
	static tally_event e[4096];
	static tally_ingest_result r[4096];
	static char ids[4096][24];
	for (uint32_t t = 0; t < BIG_TENANTS; t++) {
		char tenant[16];
		snprintf(tenant, sizeof(tenant), "big%u", t);
		uint32_t total = big_tenant_events(t);
		for (uint32_t at = 0; at < total; at += 4096) {
			uint32_t n = total - at < 4096 ? total - at : 4096;
			for (uint32_t i = 0; i < n; i++) {
				snprintf(ids[i], sizeof(ids[i]), "%s%u-%u", prefix, t, at + i);
				e[i] = make_event(ids[i], NOW_US - MINUTE_US * (1 + (at + i) % 3000),
						  at + i);
			}
			cr_assert_eq(tally_ingest(s, tenant, e, n, r), 0);
			for (uint32_t i = 0; i < n; i++)
				cr_assert_eq(r[i].code, TALLY_ACCEPTED, "tenant %u event %u", t, at + i);
		}
	}
}

/* Every big tenant holds its events exactly once (`copies` ingests of
 * distinct ids each). */
static void big_expect_counts(tally_store *s, uint32_t copies, const char *when)
{
	for (uint32_t t = 0; t < BIG_TENANTS; t++) {
		char tenant[16];
		snprintf(tenant, sizeof(tenant), "big%u", t);
		uint64_t n = 0;
		cr_assert_eq(tally_scan(s, tenant, 0, INT64_MAX, count_event, &n), 0);
		cr_expect_eq(n, (uint64_t)big_tenant_events(t) * copies, "%s: tenant %u: %" PRIu64,
			     when, t, n);
	}
}

/* Files in the segment directory whose names contain `part`. */
static uint32_t segment_dir_count(const char *part)
{
	char path[300];
	snprintf(path, sizeof(path), "%s/segments", dir);
	DIR *d = opendir(path);
	cr_assert_not_null(d);
	uint32_t n = 0;
	struct dirent *ent;
	while ((ent = readdir(d)))
		n += strstr(ent->d_name, part) != NULL;
	closedir(d);
	return n;
}

static uint32_t segment_files_on_disk(void)
{
	return segment_dir_count(".seg");
}

/* A flush past FLUSH_PARALLEL_ROWS_MIN rows splits its tenants into
 * flush_threads files written at once; a smaller one writes one file. Every
 * event is in exactly one of them, before and after a reopen. */
Test(store, a_big_flush_writes_one_file_per_thread_and_every_event_once)
{
	uint32_t total = 0;
	for (uint32_t t = 0; t < BIG_TENANTS; t++)
		total += big_tenant_events(t);
	cr_assert_eq(total, BIG_EVENTS);
	tally_store *s = open_store_flush_threads(3);
	big_ingest(s, "b");
	cr_assert_eq(tally_flush(s), 0);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_file_count, 3, "three files: %" PRIu64, st.segment_file_count);
	cr_expect_eq(st.flush_count, 1);
	big_expect_counts(s, 1, "after the flush");
	/* A small flush: one file more. */
	tally_event e = make_event("small-1", NOW_US - MINUTE_US, 1);
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "big0", &e, 1, &r), 0);
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_file_count, 4);
	cr_assert_eq(tally_store_close(s), 0);
	cr_expect_eq(segment_files_on_disk(), 4);
	cr_expect_eq(tally_verify(dir, NULL, NULL), 0);

	s = open_store_flush_threads(3);
	uint64_t n = 0;
	cr_assert_eq(tally_scan(s, "big0", 0, INT64_MAX, count_event, &n), 0);
	cr_expect_eq(n, big_tenant_events(0) + 1u);
	for (uint32_t t = 1; t < BIG_TENANTS; t++) {
		char tenant[16];
		snprintf(tenant, sizeof(tenant), "big%u", t);
		n = 0;
		cr_assert_eq(tally_scan(s, tenant, 0, INT64_MAX, count_event, &n), 0);
		cr_expect_eq(n, big_tenant_events(t), "after reopen: tenant %u", t);
	}
	/* The fingerprints came back from all three files. */
	char id[24];
	snprintf(id, sizeof(id), "b%u-%u", BIG_TENANTS - 1, 17u);
	e = make_event(id, NOW_US - MINUTE_US * (1 + 17 % 3000), 17);
	cr_assert_eq(tally_ingest(s, "big5", &e, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_DUPLICATE);
	cr_assert_eq(tally_store_close(s), 0);
}

/* One part of a big flush cannot write: the flush fails, the files the
 * other parts wrote are removed, nothing is lost, the store stays
 * writable, and the next flush writes them all. */
Test(store, a_failed_part_of_a_big_flush_loses_nothing_and_leaves_no_file)
{
	tally_store *s = open_store_flush_threads(2);
	big_ingest(s, "b");
	fault_io_path_filter_set(fio, ".seg");
	fault_io_pwrite_fail_nth(fio, 2, ENOSPC); /* one part fails, the other writes its file */
	int rc = tally_flush(s);
	cr_expect_neq(rc, 0, "the flush fails");
	cr_expect_eq(segment_files_on_disk(), 0, "no segment file is left behind");
	fault_io_path_filter_set(fio, "/no-such-file/"); /* the knob now matches nothing */
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.sticky_error, 0, "a failed flush before the manifest leaves writes on");
	big_expect_counts(s, 1, "after the failed flush");
	big_ingest(s, "c");
	cr_assert_eq(tally_flush(s), 0, "%s", tally_store_errmsg(s));
	cr_assert_eq(tally_flush(s), 0, "%s", tally_store_errmsg(s));
	big_expect_counts(s, 2, "after the flushes");
	cr_assert_eq(tally_store_close(s), 0);
	cr_expect_eq(tally_verify(dir, NULL, NULL), 0);
	s = open_store_flush_threads(2);
	big_expect_counts(s, 2, "after reopen");
	cr_assert_eq(tally_store_close(s), 0);
}

/* A compaction past FLUSH_PARALLEL_ROWS_MIN input rows splits its tenants
 * into flush_threads files written at once, as a flush does: two flushes
 * of two files each become two files, every event in exactly one of them,
 * before and after a reopen, and every id still a duplicate. */
/* A store of two big flushes of two files each: every big tenant's
 * events twice over, ids "b..." and "c...". */
static tally_store *big_two_flushes(void)
{
	tally_store *s = open_store_flush_threads(2);
	big_ingest(s, "b");
	cr_assert_eq(tally_flush(s), 0);
	big_ingest(s, "c");
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(segment_files_on_disk(), 4);
	return s;
}

Test(store, a_big_compaction_writes_one_file_per_thread_and_every_event_once)
{
	tally_store *s = big_two_flushes();
	tally_stats st;
	cr_assert_eq(tally_compact(s), 0, "%s", tally_store_errmsg(s));
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_file_count, 2, "two files: %" PRIu64, st.segment_file_count);
	cr_expect_eq(st.compaction_count, 1);
	cr_expect_eq(segment_files_on_disk(), 2, "the inputs are gone");
	big_expect_counts(s, 2, "after the compaction");
	cr_assert_eq(tally_store_close(s), 0);
	cr_expect_eq(tally_verify(dir, NULL, NULL), 0);

	s = open_store_flush_threads(2);
	big_expect_counts(s, 2, "after reopen");
	const char *prefixes[2] = {"b", "c"};
	for (uint32_t t = 0; t < BIG_TENANTS; t++)
		for (int p = 0; p < 2; p++) {
			char tenant[16], id[24];
			snprintf(tenant, sizeof(tenant), "big%u", t);
			snprintf(id, sizeof(id), "%s%u-%u", prefixes[p], t, 17u);
			tally_event e = make_event(id, NOW_US - MINUTE_US * (1 + 17 % 3000), 17);
			tally_ingest_result r;
			cr_assert_eq(tally_ingest(s, tenant, &e, 1, &r), 0);
			cr_expect_eq(r.code, TALLY_DUPLICATE, "tenant %u id %s", t, id);
		}
	cr_assert_eq(tally_store_close(s), 0);
}

/* One part of a big compaction cannot write: the compaction fails, the
 * file the other part wrote is removed, the inputs stay live and whole. */
Test(store, a_failed_part_of_a_big_compaction_loses_nothing_and_leaves_no_file)
{
	tally_store *s = big_two_flushes();
	fault_io_path_filter_set(fio, ".seg");
	fault_io_pwrite_fail_nth(fio, 2, ENOSPC); /* one part fails, the other writes its file */
	cr_expect_neq(tally_compact(s), 0, "the compaction fails");
	fault_io_path_filter_set(fio, "/no-such-file/"); /* the knob now matches nothing */
	cr_expect_eq(segment_files_on_disk(), 4, "only the inputs are left");
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.segment_file_count, 4);
	cr_expect_eq(st.compaction_count, 0);
	cr_expect_eq(st.sticky_error, 0, "a failed compaction before the manifest leaves writes on");
	big_expect_counts(s, 2, "after the failed compaction");
	cr_assert_eq(tally_compact(s), 0, "%s", tally_store_errmsg(s));
	big_expect_counts(s, 2, "after the compaction");
	cr_assert_eq(tally_store_close(s), 0);
	cr_expect_eq(segment_files_on_disk(), 2);
	cr_expect_eq(tally_verify(dir, NULL, NULL), 0);
}

/* The store in dir with the background threads on and these options
 * (0: the default) on top of the defaults. */
static tally_store *open_store_worker(uint64_t memtable_bytes_max, uint32_t compact_files_min,
				      uint32_t flush_threads, uint64_t flush_parallel_rows_min)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = true;
	if (memtable_bytes_max)
		o.memtable_bytes_max = memtable_bytes_max;
	if (compact_files_min)
		o.compact_files_min = compact_files_min;
	o.flush_threads = flush_threads;
	o.flush_parallel_rows_min = flush_parallel_rows_min;
	return open_store_options(&o);
}

/* The background compactor's size-tiered compaction merges runs, the
 * files one flush or compaction wrote together, never the files of one
 * run alone: their tenants are disjoint, so that would rewrite them for
 * nothing. Every flush is split in two here (flush_parallel_rows_min 1),
 * and 2 live files are enough to compact; the compactor's own compactions
 * write one file. */
static tally_store *open_store_runs(void)
{
	return open_store_worker(0, 2, 2, 1);
}

/* Ingests `per` new events (at most 10) for each of tenants <name>0 ..
 * <name>(count - 1), ids "<prefix><tenant>-<i>"; each is ACCEPTED. */
static void tenants_ingest(tally_store *s, const char *name, int count, int per, const char *prefix)
{
	for (int t = 0; t < count; t++) {
		char tenant[16], ids[10][24];
		tally_event e[10];
		tally_ingest_result r[10];
		snprintf(tenant, sizeof(tenant), "%s%d", name, t);
		for (int i = 0; i < per; i++) {
			snprintf(ids[i], sizeof(ids[i]), "%s%d-%d", prefix, t, i);
			e[i] = make_event(ids[i], NOW_US - MINUTE_US * (1 + i), (uint64_t)i);
		}
		cr_assert_eq(tally_ingest(s, tenant, e, (size_t)per, r), 0);
		for (int i = 0; i < per; i++)
			cr_assert_eq(r[i].code, TALLY_ACCEPTED);
	}
}

/* Each of tenants <name>0 .. <name>(count - 1) holds `each` events. */
static void tenants_expect(tally_store *s, const char *name, int count, uint64_t each)
{
	for (int t = 0; t < count; t++) {
		char tenant[16];
		snprintf(tenant, sizeof(tenant), "%s%d", name, t);
		uint64_t n = 0;
		cr_assert_eq(tally_scan(s, tenant, 0, INT64_MAX, count_event, &n), 0);
		cr_expect_eq(n, each, "%s", tenant);
	}
}

static void runs_ingest(tally_store *s, const char *prefix)
{
	tenants_ingest(s, "run", 4, 10, prefix);
}

static tally_stats runs_stats_after_ticks(tally_store *s, unsigned ticks)
{
	usleep(ticks * BACKGROUND_TICK_MS * 1000);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	return st;
}

/* Ingests and flushes a run of two files, then waits (50 ticks at most)
 * for the worker's compaction count to pass `compactions`; the stats. */
static tally_stats runs_flush_and_wait(tally_store *s, const char *prefix, uint64_t compactions)
{
	runs_ingest(s, prefix);
	cr_assert_eq(tally_flush(s), 0);
	tally_stats st = runs_stats_after_ticks(s, 1);
	for (int i = 0; i < 50 && st.compaction_count == compactions; i++)
		st = runs_stats_after_ticks(s, 1);
	return st;
}

Test(store, tiered_compaction_merges_runs_not_the_files_of_one)
{
	tally_store *s = open_store_runs();
	runs_ingest(s, "a");
	cr_assert_eq(tally_flush(s), 0);
	tally_stats st = runs_stats_after_ticks(s, 4);
	cr_expect_eq(st.segment_file_count, 2, "one flush, two files");
	cr_expect_eq(st.compaction_count, 0, "one run alone is not compacted");
	st = runs_flush_and_wait(s, "b", 0);
	cr_expect_eq(st.compaction_count, 1, "two runs are merged");
	st = runs_stats_after_ticks(s, 4);
	cr_expect_eq(st.segment_file_count, 1, "the worker's compaction writes one file");
	st = runs_flush_and_wait(s, "c", 1);
	cr_expect_eq(st.compaction_count, 2, "a new run and the output are merged");
	st = runs_stats_after_ticks(s, 4);
	cr_expect_eq(st.compaction_count, 2, "and their output, alone, is left alone");
	cr_expect_eq(st.segment_file_count, 1);
	tenants_expect(s, "run", 4, 30);
	cr_assert_eq(tally_store_close(s), 0);
	cr_expect_eq(tally_verify(dir, NULL, NULL), 0);
}

/* A background compaction gives way to tally_compact: it stops between two
 * tenants and drops what it wrote, and the caller's compaction, split as a
 * flush is, merges everything (had it finished, the caller would have
 * found one file and done nothing, after waiting for a niced one-file
 * compaction). Segment reads sleep 20 ms, so the background one lasts. */
Test(store, a_background_compaction_gives_way_to_tally_compact)
{
	tally_store *s = open_store_runs();
	runs_ingest(s, "a");
	cr_assert_eq(tally_flush(s), 0);
	fault_io_path_filter_set(fio, ".seg");
	fault_io_delay_set(fio, 20 * 1000, 0);
	runs_ingest(s, "b");
	cr_assert_eq(tally_flush(s), 0); /* a second run: the compactor starts at once */
	int waited = 0;
	for (; waited < 4000 && !segment_dir_count(".tmp"); waited++)
		usleep(1000);
	cr_assert_lt(waited, 4000, "the background compaction is writing");
	cr_assert_eq(tally_compact(s), 0);
	fault_io_delay_set(fio, 0, 0);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.compaction_count, 1, "only the caller's compaction published");
	cr_expect_eq(st.segment_file_count, 2, "split in two, as a flush of its rows");
	cr_expect_eq(segment_dir_count(".tmp"), 0, "the background's file was removed");
	cr_assert_eq(tally_store_close(s), 0);
	cr_expect_eq(tally_verify(dir, NULL, NULL), 0);
	s = open_store(0);
	tenants_expect(s, "run", 4, 20);
	cr_assert_eq(tally_store_close(s), 0);
}

/* A flush runs beside a compaction. Ingest past memtable_bytes_max during
 * a slow compaction (every segment file read sleeps 2 ms) is held to twice
 * the limit: the worker flushes while the compaction writes, and
 * backpressure waits for its freeze and for its publish. The flushes take file ids after the
 * compaction's and publish first; the compaction's output still goes
 * before them (the manifest's ids ascend), so the store reopens with every
 * event once. */
#define SLOW_TENANTS 150
#define SLOW_LIMIT (128u << 10)
#define HOT_TENANTS 16
#define HOT_BATCH 50
#define HOT_BATCHES_MAX 1600

/* tally_flush or tally_compact on a thread of its own. */
typedef struct maintenance_thread {
	tally_store *s;
	int (*run)(tally_store *s);
	int rc;
	atomic_bool done;
} maintenance_thread;

static void *maintenance_main(void *arg)
{
	maintenance_thread *m = arg;
	m->rc = m->run(m->s);
	atomic_store(&m->done, true);
	return NULL;
}

Test(store, a_flush_runs_beside_a_slow_compaction_and_memory_stays_bounded)
{
	/* One CPU for every thread: the niced worker then wakes late behind
	 * the ingesting thread, which must wait for its freeze, not run on. */
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	cr_assert_eq(sched_setaffinity(0, sizeof(one), &one), 0);
	tally_store *s = open_store_worker(SLOW_LIMIT, 1000 /* no compaction but the test's */, 0, 0);
	const char *rounds[3] = {"r0-", "r1-", "r2-"};
	for (int round = 0; round < 3; round++) {
		tenants_ingest(s, "slow", SLOW_TENANTS, 4, rounds[round]);
		cr_assert_eq(tally_flush(s), 0);
	}
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_assert_eq(st.segment_file_count, 3);
	uint64_t flushes_before = st.flush_count;

	fault_io_path_filter_set(fio, ".seg");
	fault_io_delay_set(fio, 2000, 0);
	maintenance_thread c = {.s = s, .run = tally_compact};
	pthread_t thread;
	cr_assert_eq(pthread_create(&thread, NULL, maintenance_main, &c), 0);
	/* Hot ingest while it runs: batches of 200 new events, far more in all
	 * than the limit, checked after each batch. */
	static tally_event e[HOT_BATCH];
	static tally_ingest_result r[HOT_BATCH];
	static char ids[HOT_BATCH][24];
	uint64_t peak = 0, during = 0, flushes_during = 0, commit_lsn = 0;
	uint32_t batches = 0;
	for (; batches < HOT_BATCHES_MAX && !atomic_load(&c.done); batches++) {
		char tenant[16];
		snprintf(tenant, sizeof(tenant), "hot%u", batches % HOT_TENANTS);
		for (int i = 0; i < HOT_BATCH; i++) {
			snprintf(ids[i], sizeof(ids[i]), "hot-%u-%d", batches, i);
			e[i] = make_event(ids[i], NOW_US - MINUTE_US * (1 + i), (uint64_t)i);
		}
		/* Not waiting for the fsync, as the server's event loop: the
		 * ingesting thread never sleeps, so only backpressure stops it. */
		cr_assert_eq(tally_ingest_submit(s, tenant, e, HOT_BATCH, r, &commit_lsn), 0);
		cr_assert_eq(tally_store_stats(s, &st), 0);
		if (st.compaction_count == 0) { /* the compaction has not published yet */
			during++;
			peak = st.memtable_bytes_peak;
			flushes_during = st.flush_count - flushes_before;
		}
	}
	cr_assert_eq(tally_commit_wait(s, commit_lsn), 0);
	pthread_join(thread, NULL);
	fault_io_delay_set(fio, 0, 0);
	cr_assert_eq(c.rc, 0, "%s", tally_store_errmsg(s));
	fprintf(stderr, "slow compaction: %u calls of %d events (%" PRIu64 " while it ran), memtable "
		"peak %" PRIu64 " bytes (limit %u), %" PRIu64 " flushes during it\n",
		batches, HOT_BATCH, during, peak, SLOW_LIMIT, flushes_during);
	cr_assert_geq(during, 20, "the compaction lasted while ingest passed the limit many times");
	/* Frozen and active memtables, each up to the limit plus one call's
	 * growth (HOT_BATCH events, and a column of a tenant's memtable
	 * doubling: under 16 KiB). Without the wait for the worker's freeze
	 * it came to 348,800 bytes; with a compaction holding off the flush,
	 * to 11.3 MB. */
	cr_expect_leq(peak, 2 * SLOW_LIMIT + 2 * (16u << 10), "memtable bytes stay within twice the limit");
	cr_expect_geq(flushes_during, 2, "the worker flushed while the compaction ran");
	for (int reopened = 0; reopened < 2; reopened++) {
		uint64_t n = 0;
		for (uint32_t t = 0; t < HOT_TENANTS; t++) {
			char tenant[16];
			snprintf(tenant, sizeof(tenant), "hot%u", t);
			cr_assert_eq(tally_scan(s, tenant, 0, INT64_MAX, count_event, &n), 0);
		}
		cr_expect_eq(n, (uint64_t)batches * HOT_BATCH);
		n = 0;
		cr_assert_eq(tally_scan(s, "slow7", 0, INT64_MAX, count_event, &n), 0);
		cr_expect_eq(n, 12);
		cr_assert_eq(tally_store_close(s), 0);
		cr_expect_eq(tally_verify(dir, NULL, NULL), 0);
		if (!reopened)
			s = open_store_worker(SLOW_LIMIT, 1000, 0, 0);
	}
}

/* An explicit flush slow to write its segment file does not make the
 * worker flush again behind it. The worker counts frozen memtables as due
 * only when no flush is writing them (a failed flush's, left to retry):
 * it once took another flush's frozen memtables for its own work, waited
 * for that flush, and then flushed whatever had come in meanwhile, an
 * extra small file (found under valgrind, where the worker's ticks fall
 * inside a flush). Here the events ingested during the flush stay in the
 * memtable. */
Test(store, the_worker_does_not_flush_again_behind_a_flush_in_progress)
{
	tally_store *s = open_store_worker(0, 1000 /* no compaction */, 1, 0);
	ingest_new(s, "first", "a-", 5);
	fault_io_counts before, now;
	fault_io_counts_get(fio, &before);
	fault_io_path_filter_set(fio, ".seg");
	fault_io_delay_set(fio, 0, 3 * BACKGROUND_TICK_MS * 1000); /* each write: 3 ticks */
	maintenance_thread f = {.s = s, .run = tally_flush};
	pthread_t thread;
	cr_assert_eq(pthread_create(&thread, NULL, maintenance_main, &f), 0);
	/* The flush opens its segment file only after freezing the memtables,
	 * and nothing else opens a file meanwhile. */
	do {
		usleep(1000);
		fault_io_counts_get(fio, &now);
	} while (now.open_count == before.open_count);
	ingest_new(s, "second", "b-", 5);
	pthread_join(thread, NULL);
	fault_io_delay_set(fio, 0, 0);
	cr_assert_eq(f.rc, 0, "%s", tally_store_errmsg(s));
	tally_stats st = runs_stats_after_ticks(s, 3);
	cr_expect_eq(st.flush_count, 1, "only the explicit flush");
	cr_expect_eq(st.segment_file_count, 1);
	cr_expect_eq(st.events_memtable, 5, "the events ingested during the flush");
	cr_assert_eq(tally_store_close(s), 0);
}

/* A compaction started while a flush holds file ids it has not published
 * waits for that flush (its data is newer than every input, so its ids
 * must come first), and then merges its file too. Segment writes sleep
 * 100 ms each, so the flush lasts. */

Test(store, a_compaction_waits_for_a_flush_that_took_file_ids_first)
{
	tally_store *s = open_store(0);
	tenants_ingest(s, "age", 3, 4, "a-");
	cr_assert_eq(tally_flush(s), 0);
	tenants_ingest(s, "age", 3, 4, "b-");
	cr_assert_eq(tally_flush(s), 0);
	tenants_ingest(s, "age", 3, 4, "c-");
	fault_io_path_filter_set(fio, ".seg");
	fault_io_delay_set(fio, 0, 100 * 1000);
	fault_io_counts_reset(fio);
	maintenance_thread f = {.s = s, .run = tally_flush};
	pthread_t thread;
	cr_assert_eq(pthread_create(&thread, NULL, maintenance_main, &f), 0);
	/* Nothing else runs: the flush's first open (the WAL's next file or
	 * its segment file) is in or after the lock hold that takes its ids,
	 * and tally_compact starts by taking the lock. */
	fault_io_counts counts = {0};
	for (int wait = 0; wait < 2000 && !counts.open_count; wait++) {
		usleep(500);
		fault_io_counts_get(fio, &counts);
	}
	cr_assert_gt(counts.open_count, 0, "the flush started");
	cr_assert_eq(tally_compact(s), 0);
	pthread_join(thread, NULL);
	fault_io_delay_set(fio, 0, 0);
	cr_assert_eq(f.rc, 0);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.flush_count, 3);
	cr_expect_eq(st.compaction_count, 1);
	cr_expect_eq(st.segment_file_count, 1, "the flush's file was an input too");
	cr_assert_eq(tally_store_close(s), 0);
	s = open_store(0);
	tenants_expect(s, "age", 3, 12);
	cr_assert_eq(tally_store_close(s), 0);
	cr_expect_eq(tally_verify(dir, NULL, NULL), 0);
}

Test(store, small_days_share_row_groups_and_big_days_stand_alone)
{
	/* Six days of 3 events (they share one row group) around one day of
	 * 5,000 (more than ROWGROUP_SMALL_ROWS_MAX: its own row group): scans of
	 * any window, dedup after a reopen (rebuilt from shared row groups) and
	 * verify all see every event exactly once. */
	tally_store *s = open_store(0);
	static tally_event e[5000];
	static char ids[5000][16];
	tally_ingest_result *r = calloc(5000, sizeof(*r));
	uint64_t expected[8] = {0};
	for (int day = 0; day < 7; day++) {
		int n = day == 3 ? 5000 : 3;
		for (int i = 0; i < n; i++) {
			snprintf(ids[i], sizeof(ids[i]), "d%d-%d", day, i);
			e[i] = make_event(ids[i], NOW_US - day * TALLY_US_PER_DAY - 1000 - i * 10, (uint64_t)i);
		}
		cr_assert_eq(tally_ingest(s, "acme", e, (size_t)n, r), 0);
		for (int i = 0; i < n; i++)
			cr_assert_eq(r[i].code, TALLY_ACCEPTED);
		expected[day] = (uint64_t)n;
	}
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_store_close(s), 0);
	s = open_store(0);
	day_counter c = {.previous = INT64_MIN, .sorted = 1};
	cr_assert_eq(tally_scan(s, "acme", 0, INT64_MAX, count_days, &c), 0);
	cr_expect_eq(c.count, 5018);
	cr_expect(c.sorted);
	for (int day = 0; day < 7; day++)
		cr_expect_eq(c.per_day[day], expected[day], "day %d", day);
	/* A window over one small day reads a shared row group but returns only
	 * that day's events. */
	day_counter one = {.previous = INT64_MIN, .sorted = 1};
	cr_assert_eq(tally_scan(s, "acme", NOW_US - 5 * TALLY_US_PER_DAY - TALLY_US_PER_DAY / 2,
				NOW_US - 4 * TALLY_US_PER_DAY - TALLY_US_PER_DAY / 2, count_days, &one), 0);
	cr_expect_eq(one.count, 3);
	/* Every id is known again after the reopen. */
	for (int day = 0; day < 7; day += 3) {
		snprintf(ids[0], sizeof(ids[0]), "d%d-%d", day, 1);
		e[0] = make_event(ids[0], NOW_US - day * TALLY_US_PER_DAY - 1000 - 10, 1);
		cr_assert_eq(tally_ingest(s, "acme", e, 1, r), 0);
		cr_expect_eq(r[0].code, TALLY_DUPLICATE, "day %d", day);
	}
	tally_stats st;
	tally_store_stats(s, &st);
	cr_expect_eq(st.dedup_entries, 5018);
	cr_expect_eq(st.segment_count, 7);
	cr_assert_eq(tally_store_close(s), 0);
	int problems = tally_verify(dir, NULL, NULL);
	cr_expect_eq(problems, 0);
	free(r);
}

Test(store, blocks_stored_raw_by_the_zstd_gate_read_back_exactly)
{
	/* 300 tenants of 40 events with random hex ids, tokens and times: their
	 * id, time and token blocks do not compress, so the segment writer's
	 * block gates (codec.h) close and most blocks of a flush and of the
	 * compaction are stored raw untried (checked when this test was
	 * written: thousands of blocks). Every event reads back exactly, from
	 * the flushed files, the compacted file and after a reopen. Prints its
	 * seed. */
	enum { TENANTS = 300, EVENTS = 40 };
	test_rng rng;
	test_rng_seed(&rng, "test_store", "blocks_stored_raw_by_the_zstd_gate_read_back_exactly");
	static char ids[TENANTS][EVENTS][33];
	static int64_t times[TENANTS][EVENTS];
	static uint64_t tokens[TENANTS][EVENTS];
	tally_store *s = open_store(0);
	for (int half = 0; half < 2; half++) {
		for (int t = 0; t < TENANTS; t++) {
			char tenant[16];
			snprintf(tenant, sizeof(tenant), "t%03d", t);
			tally_event e[EVENTS / 2];
			tally_ingest_result r[EVENTS / 2];
			for (int i = 0; i < EVENTS / 2; i++) {
				int k = half * (EVENTS / 2) + i;
				snprintf(ids[t][k], sizeof(ids[t][k]), "%016" PRIx64 "%016" PRIx64,
					 test_rng_next(&rng), test_rng_next(&rng));
				times[t][k] = NOW_US - (int64_t)test_rng_below(&rng, 2 * TALLY_US_PER_DAY);
				tokens[t][k] = test_rng_below(&rng, UINT64_C(1) << 40);
				e[i] = make_event(ids[t][k], times[t][k], tokens[t][k]);
			}
			cr_assert_eq(tally_ingest(s, tenant, e, EVENTS / 2, r), 0);
			for (int i = 0; i < EVENTS / 2; i++)
				cr_assert_eq(r[i].code, TALLY_ACCEPTED);
		}
		cr_assert_eq(tally_flush(s), 0);
	}
	for (int pass = 0; pass < 3; pass++) {
		if (pass == 1)
			cr_assert_eq(tally_compact(s), 0);
		if (pass == 2) {
			cr_assert_eq(tally_store_close(s), 0);
			s = open_store(0);
		}
		tally_stats st;
		tally_store_stats(s, &st);
		cr_assert_eq(st.segment_file_count, pass == 0 ? 2u : 1u);
		cr_assert_eq(st.segment_rows, TENANTS * EVENTS);
		for (int t = 0; t < TENANTS; t++) {
			char tenant[16];
			snprintf(tenant, sizeof(tenant), "t%03d", t);
			collected c = scan_all(s, tenant);
			cr_assert_eq(c.count, EVENTS, "pass %d tenant %d", pass, t);
			int seen[EVENTS] = {0};
			for (int j = 0; j < c.count; j++) {
				int k = 0;
				while (k < EVENTS && strcmp(ids[t][k], c.ids[j]) != 0)
					k++;
				cr_assert_lt(k, EVENTS, "pass %d tenant %d: unknown id %s", pass, t, c.ids[j]);
				cr_assert_eq(seen[k]++, 0, "pass %d tenant %d: %s twice", pass, t, c.ids[j]);
				cr_assert_eq(c.times[j], times[t][k]);
				cr_assert_eq(c.tokens[j], tokens[t][k]);
			}
		}
	}
	cr_assert_eq(tally_store_close(s), 0);
	cr_expect_eq(tally_verify(dir, NULL, NULL), 0);
}

/* ---- WAL fsync timings --------------------------------------------------- */

/* A tally_io that passes everything to the default table except the clock:
 * its own, which every fdatasync moves forward by sync_latency_us. The WAL
 * times its commit fdatasync on this clock, so each timing is exactly the
 * latency the test set. */
static tally_io timed_io;
static _Atomic int64_t timed_clock_us;
static _Atomic int64_t sync_latency_us;

static int64_t timed_now_us(const tally_io *io)
{
	(void)io;
	return atomic_load(&timed_clock_us);
}

static int timed_fdatasync(const tally_io *io, int fd)
{
	(void)io;
	const tally_io *base = tally_io_default();
	int rc = base->fdatasync(base, fd);
	atomic_fetch_add(&timed_clock_us, atomic_load(&sync_latency_us));
	return rc;
}

/* The store in dir, on io, with no background thread. */
static tally_store *open_store_on(const tally_io *io)
{
	return open_store_with(io, false, 0);
}

static tally_store *open_timed_store(void)
{
	timed_io = *tally_io_default();
	timed_io.now_us = timed_now_us;
	timed_io.fdatasync = timed_fdatasync;
	return open_store_on(&timed_io);
}

Test(store, fsync_histogram_bounds_are_the_documented_ones)
{
	const int64_t expected[TALLY_FSYNC_HIST_BUCKETS] = {
		50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000,
		INT64_MAX,
	};
	for (int i = 0; i < TALLY_FSYNC_HIST_BUCKETS; i++)
		cr_expect_eq(tally_fsync_hist_bound_us(i), expected[i], "bucket %d", i);
	cr_expect_eq(tally_fsync_hist_bound_us(-1), TALLY_E_INVALID);
	cr_expect_eq(tally_fsync_hist_bound_us(TALLY_FSYNC_HIST_BUCKETS), TALLY_E_INVALID);
}

/* Each tally_ingest below waits for its own group commit: one commit
 * fdatasync per ingest, timed at the latency set just before it. Bounds
 * are inclusive (50 us is bucket 0, 51 us bucket 1). */
Test(store, wal_fsync_count_total_and_buckets_follow_each_commit)
{
	atomic_store(&timed_clock_us, NOW_US);
	atomic_store(&sync_latency_us, 0);
	tally_store *s = open_timed_store();
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.wal_fsync_count, 0, "no commit before the first ingest");

	const int64_t latencies_us[7] = {30, 50, 51, 300, 7000, 1000000, 1000001};
	const int buckets[7] = {0, 0, 1, 3, 7, 12, 13};
	uint64_t expected_hist[TALLY_FSYNC_HIST_BUCKETS] = {0};
	uint64_t expected_total = 0;
	for (int n = 0; n < 7; n++) {
		char id[16];
		snprintf(id, sizeof(id), "sync-%d", n);
		tally_event e = make_event(id, NOW_US - MINUTE_US, (uint64_t)n);
		tally_ingest_result r;
		atomic_store(&sync_latency_us, latencies_us[n]);
		cr_assert_eq(tally_ingest(s, "acme", &e, 1, &r), 0);
		cr_assert_eq(r.code, TALLY_ACCEPTED);
		expected_hist[buckets[n]]++;
		expected_total += (uint64_t)latencies_us[n];

		cr_assert_eq(tally_store_stats(s, &st), 0);
		cr_expect_eq(st.wal_fsync_count, (uint64_t)n + 1, "after commit %d", n);
		cr_expect_eq(st.wal_fsync_us_total, expected_total, "after commit %d: %" PRIu64,
			     n, st.wal_fsync_us_total);
		uint64_t sum = 0;
		for (int i = 0; i < TALLY_FSYNC_HIST_BUCKETS; i++) {
			cr_expect_eq(st.wal_fsync_hist[i], expected_hist[i],
				     "after commit %d, bucket %d: %" PRIu64, n, i, st.wal_fsync_hist[i]);
			sum += st.wal_fsync_hist[i];
		}
		cr_expect_eq(sum, st.wal_fsync_count, "the buckets sum to the count");
	}
	/* A batch of only duplicates appends no record: no commit, no fsync. */
	tally_event again = make_event("sync-0", NOW_US - MINUTE_US, 0);
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", &again, 1, &r), 0);
	cr_expect_eq(r.code, TALLY_DUPLICATE);
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.wal_fsync_count, 7);
	cr_assert_eq(tally_store_close(s), 0);

	/* The figures count since open. */
	s = open_timed_store();
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.wal_fsync_count, 0);
	cr_expect_eq(st.wal_fsync_us_total, 0);
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- store lock timings -------------------------------------------------- */

/* A clock that moves LOCK_TICK_US forward after each read made on the
 * thread that opened the store (reads on the engine's own threads, such
 * as the WAL writer timing its fsyncs, do not move it), so the timings of
 * an ingest call on that thread are exact. */
enum { LOCK_TICK_US = 10 };
static tally_io ticking_io;
static _Atomic int64_t ticking_clock_us;
static pthread_t ticking_thread;

static int64_t ticking_now_us(const tally_io *io)
{
	(void)io;
	if (!pthread_equal(pthread_self(), ticking_thread))
		return atomic_load(&ticking_clock_us);
	return atomic_fetch_add(&ticking_clock_us, LOCK_TICK_US);
}

/* Each call reads the clock before it waits for the lock, once it holds it
 * and is about to apply its events, and when it lets it go: one tick of
 * wait and one of hold per call. The figures count since open. */
Test(store, ingest_lock_hold_and_wait_are_counted_per_call_on_the_io_clock)
{
	ticking_io = *tally_io_default();
	ticking_io.now_us = ticking_now_us;
	ticking_thread = pthread_self();
	atomic_store(&ticking_clock_us, NOW_US);
	tally_store *s = open_store_on(&ticking_io);
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.ingest_calls, 0);
	cr_expect_eq(st.ingest_lock_hold_us, 0);
	cr_expect_eq(st.ingest_lock_wait_us, 0);
	cr_expect_eq(st.ingest_lock_hold_max_us, 0);
	for (int n = 0; n < 3; n++) {
		char id[16];
		snprintf(id, sizeof(id), "lock-%d", n);
		tally_event e[2] = {make_event(id, NOW_US - MINUTE_US, (uint64_t)n),
				    make_event("lock-shared", NOW_US - MINUTE_US, 7)};
		tally_ingest_result r[2];
		cr_assert_eq(tally_ingest(s, "acme", e, 2, r), 0);
		cr_assert_eq(tally_store_stats(s, &st), 0);
		cr_expect_eq(st.ingest_calls, (uint64_t)n + 1);
		cr_expect_eq(st.ingest_lock_hold_us, (uint64_t)(n + 1) * LOCK_TICK_US,
			     "after call %d: %" PRIu64, n, st.ingest_lock_hold_us);
		cr_expect_eq(st.ingest_lock_wait_us, (uint64_t)(n + 1) * LOCK_TICK_US,
			     "after call %d: %" PRIu64, n, st.ingest_lock_wait_us);
		cr_expect_eq(st.ingest_lock_hold_max_us, LOCK_TICK_US,
			     "after call %d: the longest single hold, %" PRIu64, n,
			     st.ingest_lock_hold_max_us);
	}
	cr_assert_eq(tally_store_close(s), 0);
	s = open_store_on(&ticking_io);
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.ingest_calls, 0, "the figures count since open");
	cr_expect_eq(st.ingest_lock_hold_us, 0);
	cr_assert_eq(tally_store_close(s), 0);
}

/* The nice value of this process's thread named `name`, or INT_MIN when
 * there is none. */
static int thread_nice(const char *name)
{
	pid_t tid = test_thread_named(name);
	if (tid < 0)
		return INT_MIN;
	errno = 0;
	int nice = getpriority(PRIO_PROCESS, (id_t)tid);
	cr_assert_eq(errno, 0);
	return nice;
}

/* Description: the flush worker and the compactor (seconds of CPU each)
 * run at nice BACKGROUND_NICE, so queries and acks win the CPU; the rollup
 * and WAL threads stay at the process's priority. */
Test(store, background_worker_runs_at_a_lower_priority)
{
	tally_store *s = open_store(1);
	int base = getpriority(PRIO_PROCESS, 0);
	int expected = base + BACKGROUND_NICE > 19 ? 19 : base + BACKGROUND_NICE;
	const char *niced[2] = {"tally-flush", "tally-compact"};
	for (int t = 0; t < 2; t++) {
		int nice = INT_MIN;
		for (int wait = 0; wait < 100 && nice != expected; wait++) {
			nice = thread_nice(niced[t]);
			if (nice != expected)
				usleep(10 * 1000); /* each thread sets it as it starts */
		}
		cr_expect_eq(nice, expected, "%s", niced[t]);
	}
	cr_expect_eq(thread_nice("tally-rollup"), base);
	cr_expect_eq(thread_nice("tally-wal"), base);
	cr_assert_eq(tally_store_close(s), 0);
}

/* One event of acme; returns its result code. */
static uint8_t ingest_code(tally_store *s, const tally_event *e)
{
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(s, "acme", e, 1, &r), 0);
	return r.code;
}

/* Description: once the horizon has passed the day of an id's event, the
 * id is new again (docs/architecture.md, "Deduplication"), at once: the
 * lookup ignores fingerprints of days the horizon left, whether or not an
 * expiry pass has removed them yet (this store runs none). One id's event
 * is in a segment, the other's in the memtable. */
Test(store, an_id_is_new_again_once_its_day_left_the_horizon)
{
	tally_store *s = open_store(0);
	int64_t first_day_us = NOW_US - 35 * TALLY_US_PER_DAY + MINUTE_US;
	tally_event in_segment = make_event("in-segment", first_day_us, 1);
	tally_event in_memtable = make_event("in-memtable", first_day_us, 1);
	cr_assert_eq(ingest_code(s, &in_segment), TALLY_ACCEPTED);
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(ingest_code(s, &in_memtable), TALLY_ACCEPTED);
	/* Within the horizon, the same ids with another payload conflict. */
	tally_event later[2] = {make_event("in-segment", NOW_US - MINUTE_US, 2),
				make_event("in-memtable", NOW_US - MINUTE_US, 2)};
	for (int i = 0; i < 2; i++)
		cr_expect_eq(ingest_code(s, &later[i]), TALLY_CONFLICT, "%s", later[i].event_id.ptr);

	/* Two days on, the first day and its grace day are out. */
	fault_io_clock_advance_us(fio, 2 * TALLY_US_PER_DAY);
	for (int i = 0; i < 2; i++) {
		later[i].time_us = NOW_US + 2 * TALLY_US_PER_DAY - MINUTE_US;
		cr_expect_eq(ingest_code(s, &later[i]), TALLY_ACCEPTED, "%s", later[i].event_id.ptr);
		cr_expect_eq(ingest_code(s, &later[i]), TALLY_DUPLICATE, "%s retried",
			     later[i].event_id.ptr);
	}
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.dedup_expiry_count, 0, "no background worker, no pass");
	cr_expect_eq(st.dedup_entries, 4, "the two dead fingerprints are still there");
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: the background worker runs the expiry pass once the
 * horizon passes a day, and not at open (the rebuild adds nothing older). */
Test(store, the_background_worker_expires_fingerprints_when_a_day_passes)
{
	tally_store *s = open_store(0);
	char ids[20][16];
	for (int i = 0; i < 20; i++) {
		snprintf(ids[i], sizeof(ids[i]), "exp-%d", i);
		int64_t t = i < 5 ? NOW_US - 35 * TALLY_US_PER_DAY + MINUTE_US : NOW_US - MINUTE_US;
		tally_event e = make_event(ids[i], t, (uint64_t)i);
		cr_assert_eq(ingest_code(s, &e), TALLY_ACCEPTED);
	}
	cr_assert_eq(tally_store_close(s), 0);
	s = open_store(1);
	usleep(3 * BACKGROUND_TICK_MS * 1000); /* the worker's first ticks */
	tally_stats st;
	cr_assert_eq(tally_store_stats(s, &st), 0);
	cr_expect_eq(st.dedup_entries, 20);
	cr_expect_eq(st.dedup_expiry_count, 0, "no pass at open");
	fault_io_clock_advance_us(fio, 2 * TALLY_US_PER_DAY);
	for (int waited_ms = 0; waited_ms < 20000; waited_ms += 10) {
		cr_assert_eq(tally_store_stats(s, &st), 0);
		if (st.dedup_expiry_count)
			break;
		usleep(10000);
	}
	cr_expect_eq(st.dedup_expiry_count, 1, "one pass, for the one day that passed");
	cr_expect_eq(st.dedup_entries, 15);
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- flush by age (memtable_age_max_us) ---------------------------------- */

#define AGE_US (10 * MINUTE_US)

/* The store in dir with the background threads on, no compaction, and
 * memtable_age_max_us = age_us. */
static tally_store *open_store_aged(int64_t age_us)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = true;
	o.compact_files_min = 1000;
	o.memtable_age_max_us = age_us;
	return open_store_options(&o);
}

/* The stats after waiting up to 20 s for flush_count to reach flushes,
 * or, with wal_files_at_most >= 0, for wal_file_count to fall to it (the
 * worker retires the WAL files a flush covered after it counts the flush). */
static tally_stats aged_wait(tally_store *s, uint64_t flushes, int wal_files_at_most)
{
	tally_stats st;
	for (int waited_ms = 0;; waited_ms += 10) {
		cr_assert_eq(tally_store_stats(s, &st), 0);
		if ((st.flush_count >= flushes &&
		     (wal_files_at_most < 0 || st.wal_file_count <= (uint64_t)wal_files_at_most)) ||
		    waited_ms >= 20000)
			return st;
		usleep(10000);
	}
}

static tally_stats aged_wait_flushes(tally_store *s, uint64_t flushes)
{
	return aged_wait(s, flushes, -1);
}

/* The worker wakes every tick: after three, a flush that was due has
 * started. Expects that none did: flush_count is still flushes and
 * `rows` events are still in the memtables. */
static void aged_expect_no_flush(tally_store *s, uint64_t flushes, uint64_t rows, const char *when)
{
	tally_stats st = runs_stats_after_ticks(s, 3);
	cr_expect_eq(st.flush_count, flushes, "%s: flushes", when);
	cr_expect_eq(st.events_memtable, rows, "%s: unflushed events", when);
}

/* Expects the worker's flush number `flushes`, leaving no event unflushed
 * and `rows` in segments. */
static void aged_expect_flush(tally_store *s, uint64_t flushes, uint64_t rows, const char *when)
{
	tally_stats st = aged_wait_flushes(s, flushes);
	cr_expect_eq(st.flush_count, flushes, "%s: flushes", when);
	cr_expect_eq(st.events_memtable, 0, "%s: unflushed events", when);
	cr_expect_eq(st.segment_rows, rows, "%s: events in segments", when);
}

/* Moves the clock to 1 us short of AGE_US after now - elapsed_us and
 * expects no flush (flushes so far, `rows` unflushed), then 1 us more and
 * expects the next flush, with segment_rows in segments. */
static void aged_expect_flush_at_the_age(tally_store *s, int64_t elapsed_us, uint64_t flushes,
					  uint64_t rows, uint64_t segment_rows, const char *from)
{
	char when[160];
	fault_io_clock_advance_us(fio, AGE_US - elapsed_us - 1);
	snprintf(when, sizeof(when), "1 us short of the age since %s", from);
	aged_expect_no_flush(s, flushes, rows, when);
	fault_io_clock_advance_us(fio, 1);
	snprintf(when, sizeof(when), "the age since %s", from);
	aged_expect_flush(s, flushes + 1, segment_rows, when);
}

/* The memtables are flushed once their oldest event was acknowledged
 * memtable_age_max_us ago (on the io clock), though they are far under
 * memtable_bytes_max; the age then counts again from the next event. */
Test(store, the_worker_flushes_memtables_once_their_oldest_event_is_memtable_age_max_old)
{
	tally_store *s = open_store_aged(AGE_US);
	ingest_new(s, "aged", "a-", 5);
	fault_io_clock_advance_us(fio, MINUTE_US);
	ingest_new(s, "aged", "b-", 5); /* younger: the age is the oldest's */
	aged_expect_flush_at_the_age(s, MINUTE_US, 0, 10, 10, "the oldest event");
	tally_stats st = aged_wait(s, 1, 0);
	cr_expect_eq(st.wal_file_count, 0, "the flush retired the WAL it covered");

	/* Nothing to flush: the age does not run without an event. */
	fault_io_clock_advance_us(fio, 2 * AGE_US);
	aged_expect_no_flush(s, 1, 0, "empty memtables");
	ingest_new(s, "aged", "c-", 3);
	aged_expect_flush_at_the_age(s, 0, 1, 3, 13, "the next event");
	cr_assert_eq(tally_store_close(s), 0);

	s = open_store(0);
	uint64_t n = 0;
	cr_assert_eq(tally_scan(s, "aged", 0, INT64_MAX, count_event, &n), 0);
	cr_expect_eq(n, 13, "every event once after a reopen");
	cr_assert_eq(tally_store_close(s), 0);
	cr_expect_eq(segment_files_on_disk(), 2);
}

Test(store, memtable_age_max_zero_is_no_age_limit)
{
	tally_store *s = open_store_aged(0);
	ingest_new(s, "aged", "a-", 5);
	fault_io_clock_advance_us(fio, 30 * TALLY_US_PER_DAY);
	aged_expect_no_flush(s, 0, 5, "30 days later");
	cr_assert_eq(tally_store_close(s), 0);
}

/* When replayed events first arrived is not in the WAL: their age counts
 * from the open that replayed them. */
Test(store, replayed_events_age_from_the_open)
{
	tally_store *s = open_store(0);
	ingest_new(s, "aged", "a-", 4);
	cr_assert_eq(tally_store_close(s), 0);
	fault_io_clock_advance_us(fio, 2 * AGE_US);
	s = open_store_aged(AGE_US);
	aged_expect_no_flush(s, 0, 4, "just reopened, events 2 ages old");
	aged_expect_flush_at_the_age(s, 0, 0, 4, 4, "the open");
	cr_assert_eq(tally_store_close(s), 0);
}

/* A wall clock stepped back before the oldest event restarts its age from
 * the clock's new time: the flush comes later, never at once. */
Test(store, a_clock_stepped_back_restarts_the_age)
{
	tally_store *s = open_store_aged(AGE_US);
	ingest_new(s, "aged", "a-", 4);
	fault_io_clock_set_us(fio, NOW_US - AGE_US);
	aged_expect_no_flush(s, 0, 4, "the clock stepped back an age");
	aged_expect_flush_at_the_age(s, 0, 0, 4, 4, "the step back");
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: an open without a directory, or with a path longer than
 * the engine keeps (4,095 bytes), is TALLY_E_INVALID saying which, and
 * creates nothing. */
Test(store, an_open_without_a_usable_path_is_refused)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	tally_store *s = (tally_store *)&o;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(tally_store_open(NULL, &o, &s, err), TALLY_E_INVALID);
	cr_expect_null(s);
	cr_expect_str_eq(err, "open: no directory given");
	char *path = malloc(4097);
	cr_assert_not_null(path);
	memset(path, 'd', 4096);
	path[0] = '/';
	path[4096] = '\0';
	cr_expect_eq(tally_store_open(path, &o, &s, err), TALLY_E_INVALID);
	cr_expect_null(s);
	cr_expect_str_eq(err, "open: the directory's path is 4096 bytes, longer than 4095");
	path[4095] = '\0'; /* 4,095 bytes: the path is taken, and the system refuses it */
	cr_expect_neq(tally_store_open(path, &o, &s, err), TALLY_E_INVALID);
	cr_expect_null(s);
	free(path);
	cr_expect_eq(tally_store_open(NULL, &o, &s, NULL), TALLY_E_INVALID, "errmsg may be NULL");
}

Test(store, a_negative_memtable_age_max_is_refused_at_open)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.memtable_age_max_us = -1;
	tally_store *s = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(tally_store_open(dir, &o, &s, err), TALLY_E_INVALID);
	cr_expect_null(s);
	cr_expect(strstr(err, "memtable_age_max_us is negative (-1)") != NULL, "message: %s", err);
	tally_options_default(&o);
	cr_expect_eq(o.memtable_age_max_us, INT64_C(3600) * 1000000, "the default is an hour");
}
