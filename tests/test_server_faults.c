/*
 * test_server_faults.c — a failing disk under tallyd: what a client is
 * told, and that nothing acknowledged is lost.
 *
 * The server runs in-process (support/server_harness.c) with its files on
 * a fault-injecting io (support/fault_io.h, server_config.io), so the
 * failures test_faults.c pins for the engine are met here through the
 * protocol: an fsync of the WAL that fails, a WAL on a full disk, and
 * segment files that cannot be written while the memtables fill. In each,
 * a client's request is answered with an Error that names the failure, a
 * batch in doubt is stored whole or not at all, and after the disk is
 * well again and the server restarted, every acknowledged event is there
 * once (re-sent, each is a DUPLICATE).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keys.h"
#include "tenants.h"
#include "support/fault_io.h"
#include "support/server_batches.h"
#include "support/server_harness.h"

#define BATCH_EVENTS 100
#define BATCHES_MAX 400
#define ANSWER_TIMEOUT_MS 10000
/* How long a test waits for the server to take a batch again once the
 * disk is well: the background flush retries with a backoff of at most a
 * few seconds. */
#define RECOVERY_WAIT_MS 30000

typedef struct state {
	harness h;
	fault_io *fio;
	char key[80];
	int64_t base_us;
	uint32_t batch_count;
	bool acked[BATCHES_MAX]; /* batch k (events "b<k>-0" ..) is stored */
	bool maybe[BATCHES_MAX]; /* sent, outcome unknown */
} state;

static void prefix_of(uint32_t k, char *prefix)
{
	snprintf(prefix, 16, "b%u", k);
}

/* Starts the server; submit_done_hook as harness.h says (NULL: none). */
static void setup_hooked(state *st, uint64_t memtable_bytes_max, void (*submit_done_hook)(void *))
{
	memset(st, 0, sizeof(*st));
	st->fio = fault_io_create();
	cr_assert_not_null(st->fio);
	harness_init(&st->h, "srv-faults");
	st->h.config.io = fault_io_table(st->fio);
	if (memtable_bytes_max)
		st->h.config.memtable_bytes_max = memtable_bytes_max;
	st->h.submit_done_hook = submit_done_hook;
	harness_start(&st->h);
	harness_create_tenant(&st->h, "acme", st->key);
	st->base_us = batches_base_time();
}

static void setup(state *st, uint64_t memtable_bytes_max)
{
	setup_hooked(st, memtable_bytes_max, NULL);
}

static tally_client *client_open(const state *st)
{
	tally_client *c = harness_connect(&st->h, st->key);
	cr_assert_eq(tally_client_set_timeout(c, ANSWER_TIMEOUT_MS), 0);
	return c;
}

/* Sends batch k: the client's code; on 0 the batch is acknowledged (and
 * *duplicates says whether it was stored before). */
static int batch_send(tally_client *c, state *st, uint32_t k, uint32_t *duplicates)
{
	char prefix[16];
	prefix_of(k, prefix);
	int rc = batches_send(c, prefix, BATCH_EVENTS, st->base_us, duplicates);
	if (rc == 0) {
		st->acked[k] = true;
		st->maybe[k] = false;
	}
	return rc;
}

/* A new batch, which must be acknowledged, all ACCEPTED. */
static void batch_acked(tally_client *c, state *st)
{
	uint32_t k = st->batch_count++;
	cr_assert_lt(k, BATCHES_MAX);
	uint32_t dup = 0;
	int rc = batch_send(c, st, k, &dup);
	cr_assert_eq(rc, 0, "batch %u: %s %s", k, tally_client_strerror(rc),
		     tally_client_last_error(c)->message);
	cr_assert_eq(dup, 0);
}

/* A new batch, which the server must refuse with `code`, saying `says`;
 * it is then in doubt. */
static void batch_refused(tally_client *c, state *st, int code, const char *says)
{
	uint32_t k = st->batch_count++;
	uint32_t dup = 0;
	int rc = batch_send(c, st, k, &dup);
	const tally_client_error *e = tally_client_last_error(c);
	cr_assert_eq(rc, TALLY_CLIENT_REFUSED, "batch %u: %s", k, tally_client_strerror(rc));
	cr_assert_eq(e->code, code, "batch %u: %s: %s", k, tally_client_error_code_name(e->code),
		     e->message);
	cr_assert_not_null(strstr(e->message, says), "batch %u: \"%s\" does not say \"%s\"", k,
			   e->message, says);
	st->maybe[k] = true;
}

static uint64_t acked_events(const state *st)
{
	uint64_t n = 0;
	for (uint32_t k = 0; k < st->batch_count; k++)
		n += st->acked[k] ? BATCH_EVENTS : 0;
	return n;
}

static uint64_t count(tally_client *c, const state *st)
{
	uint64_t n = 0;
	int rc = batches_count(c, st->base_us, &n);
	cr_assert_eq(rc, 0, "query: %s %s", tally_client_strerror(rc),
		     tally_client_last_error(c)->message);
	return n;
}

/* Stops the server, whose close returns close_rc (a store that refused
 * writes cannot flush at shutdown: its WAL keeps the events), and starts
 * it again on the same directory, with the disk well. */
static void restart(state *st, int close_rc)
{
	server_stop(st->h.server);
	pthread_join(st->h.thread, NULL);
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = server_close(st->h.server, err);
	cr_assert_eq(rc, close_rc, "server_close: %d (%s)", rc, err);
	if (rc)
		cr_assert_not_null(strstr(err, "the WAL still holds every acknowledged event"), "%s",
				   err);
	st->h.server = NULL;
	fault_io_destroy(st->fio);
	st->fio = fault_io_create();
	cr_assert_not_null(st->fio);
	st->h.config.io = fault_io_table(st->fio);
	harness_start(&st->h);
}

/* Every batch in doubt is stored whole or not at all: re-sent, it is all
 * ACCEPTED or all DUPLICATE (batches_send fails a mix), and now stored.
 * Then a reopen-proof count, and every batch re-sent is a DUPLICATE. */
static void expect_exactly_once(tally_client *c, state *st)
{
	for (uint32_t k = 0; k < st->batch_count; k++) {
		if (!st->maybe[k])
			continue;
		uint32_t dup = 0;
		int rc = batch_send(c, st, k, &dup);
		cr_assert_eq(rc, 0, "batch %u again: %s %s", k, tally_client_strerror(rc),
			     tally_client_last_error(c)->message);
	}
	cr_assert_eq(count(c, st), acked_events(st));
	for (uint32_t k = 0; k < st->batch_count; k++) {
		uint32_t dup = 0;
		cr_assert_eq(batch_send(c, st, k, &dup), 0);
		cr_assert_eq(dup, BATCH_EVENTS, "batch %u stored twice", k);
	}
}

static void finish(state *st)
{
	harness_finish(&st->h);
	fault_io_destroy(st->fio);
}

/* Description: the WAL's fsync fails (EIO) under a batch. Its client is
 * told it was not acknowledged (INTERNAL, naming the WAL), the server
 * refuses writes from then on (INTERNAL, "refuses writes") while queries go on,
 * and after a restart the batch is there whole or not at all, and every
 * acknowledged one once. */
Test(server_faults, a_wal_fsync_error_refuses_the_batch_and_later_writes)
{
	state st;
	setup(&st, 0);
	tally_client *c = client_open(&st);
	batch_acked(c, &st);
	fault_io_path_filter_set(st.fio, ".wal");
	fault_io_fsync_fail_nth(st.fio, 1, EIO);
	batch_refused(c, &st, TALLY__V1__ERROR__CODE__INTERNAL, "write-ahead log failed");
	batch_refused(c, &st, TALLY__V1__ERROR__CODE__INTERNAL, "refuses writes");
	uint64_t n = count(c, &st);
	/* The failed batch may be visible until the restart: whole. */
	cr_assert(n == BATCH_EVENTS || n == 2 * BATCH_EVENTS, "%" PRIu64 " events counted", n);
	tally_client_close(c);

	restart(&st, -EIO);
	c = client_open(&st);
	n = count(c, &st);
	cr_assert(n == BATCH_EVENTS || n == 2 * BATCH_EVENTS, "%" PRIu64 " after the restart", n);
	batch_acked(c, &st);
	expect_exactly_once(c, &st);
	tally_client_close(c);
	finish(&st);
}

static void sleep_ms(uint32_t ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static atomic_uint slow_report_us; /* submitter_slow_to_report's sleep */

/* A submitter thread descheduled between the engine's return and its
 * report to the event loop. */
static void submitter_slow_to_report(void *arg)
{
	(void)arg;
	unsigned us = atomic_load(&slow_report_us);
	if (us)
		usleep(us);
}

/* Description: a batch of resent events (all DUPLICATE: it appends
 * nothing to the WAL) comes back from the engine with the commit LSN of a
 * batch whose fsync fails, after the server has heard of that failure.
 * It is refused at once (INTERNAL, naming the WAL), as the failed batch
 * is. Before 2026-12-02 it was never answered: it waited for a commit
 * event that the failure had already sent, and the shutdown waited out
 * its whole drain time for it. Timeline: batch N's WAL write takes 500 ms
 * and its fsync fails (t = 500 ms); the submitter reports each group
 * 300 ms late, so batch N is reported at 300 ms, the duplicates, taken
 * next, are in the engine before the failure and reported after it. */
Test(server_faults, a_batch_of_duplicates_after_a_failed_commit_is_refused, .timeout = 60)
{
	state st;
	setup_hooked(&st, 0, submitter_slow_to_report);
	tally_client *c1 = client_open(&st);
	tally_client *c2 = client_open(&st);
	batch_acked(c1, &st); /* batch 0, durable */

	fault_io_path_filter_set(st.fio, ".wal");
	fault_io_delay_set(st.fio, 0, 500000);
	fault_io_fsync_fail_nth(st.fio, 1, EIO);
	atomic_store(&slow_report_us, 300000);
	builder bn, bd;
	Tally__V1__IngestBatch mn, md;
	uint32_t k = st.batch_count++;
	char prefix[16], prefix0[16];
	prefix_of(k, prefix);
	prefix_of(0, prefix0);
	st.maybe[k] = true;
	batches_build(&bn, &mn, prefix, BATCH_EVENTS, st.base_us);
	batches_build(&bd, &md, prefix0, BATCH_EVENTS, st.base_us); /* batch 0 again */
	cr_assert_eq(tally_client_ingest_send(c1, &mn, NULL), 0);
	sleep_ms(50);
	cr_assert_eq(tally_client_ingest_send(c2, &md, NULL), 0);
	tally_client *clients[2] = {c1, c2};
	for (int i = 0; i < 2; i++) {
		tally_ingest_ack ack;
		int rc = tally_client_ingest_recv(clients[i], &ack);
		const tally_client_error *e = tally_client_last_error(clients[i]);
		cr_assert_eq(rc, TALLY_CLIENT_REFUSED, "client %d: %s", i + 1,
			     tally_client_strerror(rc));
		cr_assert_eq(e->code, TALLY__V1__ERROR__CODE__INTERNAL, "client %d: %s", i + 1,
			     e->message);
		cr_assert_not_null(strstr(e->message, "write-ahead log failed"), "%s", e->message);
	}
	atomic_store(&slow_report_us, 0);
	builder_free(&bn);
	builder_free(&bd);
	tally_client_close(c1);
	tally_client_close(c2);

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	restart(&st, -EIO);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* Nothing was left waiting: no drain time spent (SHUTDOWN_DRAIN_MS). */
	cr_assert_lt(t1.tv_sec - t0.tv_sec, 5, "the shutdown took %ld s",
		     (long)(t1.tv_sec - t0.tv_sec));
	tally_client *c = client_open(&st);
	uint64_t n = count(c, &st);
	cr_assert(n == BATCH_EVENTS || n == 2 * BATCH_EVENTS, "%" PRIu64 " after the restart", n);
	expect_exactly_once(c, &st);
	tally_client_close(c);
	finish(&st);
}

/* Description: the disk fills under the WAL (ENOSPC). The batch whose
 * record did not fit is refused naming the full disk, later writes are
 * refused, and after the restart (space freed) the torn record is gone:
 * every acknowledged batch once, the refused one whole or not at all. */
Test(server_faults, a_full_disk_under_the_wal_refuses_the_batch)
{
	state st;
	setup(&st, 0);
	tally_client *c = client_open(&st);
	batch_acked(c, &st);
	batch_acked(c, &st);
	fault_io_path_filter_set(st.fio, ".wal");
	fault_io_disk_limit_set(st.fio, 1000); /* less than a record of this batch */
	batch_refused(c, &st, TALLY__V1__ERROR__CODE__INTERNAL, "No space left on device");
	batch_refused(c, &st, TALLY__V1__ERROR__CODE__INTERNAL, "refuses writes");
	tally_client_close(c);

	restart(&st, -ENOSPC);
	c = client_open(&st);
	batch_acked(c, &st);
	expect_exactly_once(c, &st);
	tally_client_close(c);
	finish(&st);
}

/* Description: segment files cannot be written (ENOSPC) while ingest
 * fills the memtables (1 MiB). Batches are acknowledged from the WAL until
 * the memtables are full; then they are refused with UNAVAILABLE and a
 * retry_after_ms, the message naming the failing flush, and nothing of
 * them is stored. Once the disk has room, the same batch is taken (after
 * the flush's backoff), and after a restart every acknowledged event is
 * there once. */
Test(server_faults, flushes_on_a_full_disk_refuse_ingest_until_there_is_room, .timeout = 120)
{
	state st;
	setup(&st, 1u << 20);
	tally_client *c = client_open(&st);
	batch_acked(c, &st);
	fault_io_path_filter_set(st.fio, "segments");
	fault_io_disk_limit_set(st.fio, 0);
	uint32_t refused = UINT32_MAX;
	while (st.batch_count < BATCHES_MAX) {
		uint32_t k = st.batch_count++;
		uint32_t dup = 0;
		int rc = batch_send(c, &st, k, &dup);
		if (rc == 0) {
			cr_assert_eq(dup, 0);
			continue;
		}
		const tally_client_error *e = tally_client_last_error(c);
		cr_assert_eq(rc, TALLY_CLIENT_REFUSED, "batch %u: %s", k, tally_client_strerror(rc));
		cr_assert_eq(e->code, TALLY__V1__ERROR__CODE__UNAVAILABLE, "batch %u: %s: %s", k,
			     tally_client_error_code_name(e->code), e->message);
		cr_assert_gt(e->retry_after_ms, 0);
		cr_assert(strstr(e->message, "flush failed") &&
				  strstr(e->message, "No space left on device"),
			  "batch %u: %s", k, e->message);
		refused = k;
		break;
	}
	cr_assert_neq(refused, UINT32_MAX, "%u batches taken on a full disk", BATCHES_MAX);
	cr_log_info("the memtables filled after %u batches", refused);
	/* Nothing of the refused batch was stored. */
	cr_assert_eq(count(c, &st), acked_events(&st));

	fault_io_disk_limit_clear(st.fio);
	int rc = TALLY_CLIENT_REFUSED;
	uint32_t waited_ms = 0;
	for (; rc == TALLY_CLIENT_REFUSED && waited_ms < RECOVERY_WAIT_MS; waited_ms += 100) {
		uint32_t dup = 0;
		rc = batch_send(c, &st, refused, &dup);
		if (rc == 0)
			cr_assert_eq(dup, 0, "a refused batch was stored");
		else
			sleep_ms(100);
	}
	cr_assert_eq(rc, 0, "still refused after %u ms: %s", waited_ms,
		     tally_client_last_error(c)->message);
	batch_acked(c, &st);
	tally_client_close(c);

	restart(&st, 0);
	c = client_open(&st);
	expect_exactly_once(c, &st);
	tally_client_close(c);
	finish(&st);
}

/* ---- the first admin key ------------------------------------------------- */

/* Opens tallyd's server on dir (io: NULL, or a fault io), then closes it:
 * server_open's code and message. */
static int server_start_stop(const char *dir, const tally_io *io, char *err)
{
	server_config c;
	config_default(&c);
	snprintf(c.data_dir, sizeof(c.data_dir), "%s", dir);
	snprintf(c.listen, sizeof(c.listen), "127.0.0.1:0");
	snprintf(c.metrics, sizeof(c.metrics), "off");
	c.io = io;
	server *s = NULL;
	err[0] = 0;
	int rc = server_open(&c, &s, err);
	if (!rc) {
		char close_err[TALLY_ERRMSG_SIZE];
		cr_assert_eq(server_close(s, close_err), 0, "%s", close_err);
	}
	return rc;
}

/* The key in DIR/<name> ("" when absent). */
static void key_file_read(const char *dir, const char *name, char key[KEY_TEXT_SIZE])
{
	char path[600];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	key[0] = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	if (!fgets(key, KEY_TEXT_SIZE, f))
		key[0] = 0;
	key[strcspn(key, "\n")] = 0;
	fclose(f);
}

/* The entry of keys.json in dir for key text: live, an admin key. */
static void expect_live_admin_key(const char *dir, const char *key, const char *what)
{
	char err[TALLY_ERRMSG_SIZE] = "";
	keystore *ks;
	cr_assert_eq(keys_open(NULL, dir, &ks, err), 0, "%s", err);
	const key_entry *e = keys_lookup(ks, key);
	cr_expect_not_null(e, "%s: admin.key holds no live key", what);
	if (e)
		cr_expect_str_eq(e->tenant, "", "%s: not an admin key", what);
	keys_close(ks);
}

/* A hand-over that writes the key to DIR/admin.key.tmp as tallyd stages
 * it: a first start that dies after keys.json recorded its key. */
static int stage_only(void *ctx, const char *key_text, char *errmsg)
{
	(void)errmsg;
	char path[600];
	snprintf(path, sizeof(path), "%s/admin.key.tmp", (const char *)ctx);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fprintf(f, "%s\n", key_text);
	cr_assert_eq(fclose(f), 0);
	return 0;
}

/* Description: a first start interrupted anywhere never leaves a server
 * no one can administer. (1) keys.json records the staged key, and the
 * start dies before the rename: the next start finishes it, admin.key
 * holds that key. (2) admin.key.tmp holds a key keys.json never recorded:
 * the next start issues a new one. (3) A store from before 2026-12-02
 * whose first start recorded its key and died before admin.key: the next
 * start revokes it, and its issue of a new one fails on a full disk; the
 * start after that issues one (before, it started with no live admin key
 * at all, saying "use one of them"). Each time admin.key ends up holding
 * a live admin key. */
Test(server_faults, an_interrupted_first_start_is_finished_or_done_again)
{
	test_dir dir;
	char err[TALLY_ERRMSG_SIZE] = "", key[KEY_TEXT_SIZE], id[KEY_ID_SIZE], got[KEY_TEXT_SIZE];
	keystore *ks;

	test_dir_make(&dir, "boot-staged");
	cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	cr_assert_eq(keys_issue_delivered(ks, stage_only, dir.path, key, id, err), 0, "%s", err);
	keys_close(ks);
	cr_assert_eq(server_start_stop(dir.path, NULL, err), 0, "%s", err);
	key_file_read(dir.path, "admin.key", got);
	cr_expect_str_eq(got, key, "(1) admin.key holds the staged key");
	expect_live_admin_key(dir.path, key, "(1)");
	test_dir_remove_tree(dir.path);

	test_dir_make(&dir, "boot-unrecorded");
	char unrecorded[KEY_TEXT_SIZE];
	snprintf(unrecorded, sizeof(unrecorded), "tk_%064d", 7);
	stage_only(dir.path, unrecorded, err);
	cr_assert_eq(server_start_stop(dir.path, NULL, err), 0, "%s", err);
	key_file_read(dir.path, "admin.key", got);
	cr_expect_str_neq(got, unrecorded, "(2) a new key");
	expect_live_admin_key(dir.path, got, "(2)");
	test_dir_remove_tree(dir.path);

	test_dir_make(&dir, "boot-legacy");
	cr_assert_eq(keys_open(NULL, dir.path, &ks, err), 0, "%s", err);
	cr_assert_eq(keys_issue(ks, NULL, key, id, err), 0, "%s", err);
	keys_close(ks);
	fault_io *fio = fault_io_create();
	fault_io_path_filter_set(fio, "keys.json");
	fault_io_pwrite_fail_nth(fio, 2, ENOSPC); /* the revocation is written, the new key not */
	cr_expect_eq(server_start_stop(dir.path, fault_io_table(fio), err), -ENOSPC, "%s", err);
	fault_io_destroy(fio);
	cr_assert_eq(server_start_stop(dir.path, NULL, err), 0, "%s", err);
	key_file_read(dir.path, "admin.key", got);
	cr_expect_str_neq(got, key, "(3) a new key");
	expect_live_admin_key(dir.path, got, "(3)");
	test_dir_remove_tree(dir.path);
}

/* Description: admin.key is there but keys.json is gone (a partial
 * restore): tallyd refuses to start, naming both files and the ways out,
 * rather than start with no key that works (as it did before
 * 2026-12-02, without a word). Moving admin.key away lets it start, with a
 * new admin key. */
Test(server_faults, admin_key_without_keys_json_refuses_to_start)
{
	test_dir dir;
	test_dir_make(&dir, "boot-nokeys");
	char err[TALLY_ERRMSG_SIZE] = "", path[600];
	cr_assert_eq(server_start_stop(dir.path, NULL, err), 0, "%s", err);
	snprintf(path, sizeof(path), "%s/keys.json", dir.path);
	cr_assert_eq(unlink(path), 0);
	cr_expect_eq(server_start_stop(dir.path, NULL, err), TALLY_E_CORRUPT);
	char says[1400];
	snprintf(says, sizeof(says),
		 "%s/admin.key exists but %s/keys.json holds no live admin key (missing or "
		 "replaced?): restore keys.json from a backup, or move admin.key away to have a new "
		 "admin key issued", dir.path, dir.path);
	cr_expect_str_eq(err, says);
	char moved[600];
	snprintf(path, sizeof(path), "%s/admin.key", dir.path);
	snprintf(moved, sizeof(moved), "%s/admin.key.old", dir.path);
	cr_assert_eq(rename(path, moved), 0);
	cr_assert_eq(server_start_stop(dir.path, NULL, err), 0, "%s", err);
	char got[KEY_TEXT_SIZE];
	key_file_read(dir.path, "admin.key", got);
	expect_live_admin_key(dir.path, got, "after admin.key moved away");
	test_dir_remove_tree(dir.path);
}

/* Whether DIR/tenants.json records tenant name. */
static bool tenants_file_has(const char *dir, const char *name)
{
	char err[TALLY_ERRMSG_SIZE] = "";
	tenant_registry *r;
	cr_assert_eq(tenants_open(NULL, dir, &r, err), 0, "%s", err);
	bool has = tenants_find(r, name) != NULL;
	tenants_close(r);
	return has;
}

/* Description: a tenant created by ingest that tenants.json does not
 * record yet (the server stopped before its periodic save), and a start
 * on a disk that cannot write tenants.json (full): the start goes on,
 * logging the failure, as the periodic save does while running; a later
 * start on a good disk records the tenant. (Before 2026-12-02 such a
 * start failed, so a server whose WAL had stopped it on a full disk
 * could not start to serve reads until room was made.) */
Test(server_faults, a_start_that_cannot_record_tenants_created_by_ingest_goes_on)
{
	test_dir dir;
	test_dir_make(&dir, "reconcile");
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(server_start_stop(dir.path, NULL, err), 0, "%s", err);
	/* A tenant only the store knows. */
	tally_options o;
	tally_options_default(&o);
	tally_store *store = NULL;
	cr_assert_eq(tally_store_open(dir.path, &o, &store, err), 0, "%s", err);
	tally_event e;
	memset(&e, 0, sizeof(e));
	e.event_id = (tally_str){"r1", 2};
	e.time_us = (int64_t)time(NULL) * 1000000 - 60000000;
	e.type = (tally_str){"llm.call", 8};
	tally_ingest_result r;
	cr_assert_eq(tally_ingest(store, "newco", &e, 1, &r), 0);
	cr_assert_eq(r.code, TALLY_ACCEPTED);
	cr_assert_eq(tally_store_close(store), 0);
	cr_assert(!tenants_file_has(dir.path, "newco"));

	fault_io *fio = fault_io_create();
	fault_io_path_filter_set(fio, "tenants.json");
	fault_io_pwrite_fail_from(fio, 1, ENOSPC);
	cr_expect_eq(server_start_stop(dir.path, fault_io_table(fio), err), 0, "%s", err);
	fault_io_destroy(fio);
	cr_expect(!tenants_file_has(dir.path, "newco"), "no write of tenants.json got through");

	cr_assert_eq(server_start_stop(dir.path, NULL, err), 0, "%s", err);
	cr_expect(tenants_file_has(dir.path, "newco"));
	test_dir_remove_tree(dir.path);
}
