/*
 * test_server_oom.c — allocation failures inside tallyd: what a client is
 * told, and what the server still promises afterwards.
 *
 * The injector. Like test_oom.c, this binary is linked with -Wl,--wrap for
 * malloc, calloc, realloc, aligned_alloc, mmap and mremap (Makefile), so
 * every such call of the server's, the engine's and the wire side's code
 * comes here first (protobuf-c decodes into the server's arena, so its
 * messages count; the shared libraries' own allocations do not). Here the
 * failures are not tied to one thread: armed with n, the nth allocation
 * made by any thread of the process but the test's own (the client's)
 * fails, on the event loop, the submitter, the committer, a query worker,
 * or the store's background threads, whichever comes to it; "persistent",
 * every later one fails too. Which allocation that is depends on thread
 * timing, so a sweep covers each path many times over rather than exactly
 * once.
 *
 * The sweep. For n = 1, 2, 3, ... a fresh server with one tenant and two
 * acknowledged batches gets one request with the nth allocation failing:
 *   - the request is answered (success, or an Error), or its connection
 *     is closed; never a hang, never a crash;
 *   - a success is exact: an ingest's events are all ACCEPTED (and so
 *     acknowledged), a query counts exactly the acknowledged events;
 *   - a batch that was refused, or whose connection closed, is stored
 *     whole or not at all: re-sent without failures it comes back all
 *     ACCEPTED or all DUPLICATE;
 *   - the server still takes a connection, an ingest and a query, and
 *     its store did not turn read-only;
 *   - after a restart, it counts exactly the acknowledged events, and
 *     every one of them comes back DUPLICATE when re-sent.
 * The sweep ends at the first n no allocation reached while the request
 * was out (SWEEP_MAX bounds it).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "support/server_batches.h"
#include "support/server_harness.h"

/* ---- the injector ------------------------------------------------------------ */

static atomic_bool oom_armed;
static atomic_uint_fast64_t oom_seen; /* allocations since arming, other threads' */
static uint64_t oom_at;               /* the one that fails (1-based); set before arming */
static bool oom_persistent;
static _Thread_local bool oom_exempt; /* the test's thread: never failed, not counted */

static bool oom_fails(void)
{
	if (oom_exempt || !atomic_load_explicit(&oom_armed, memory_order_acquire))
		return false;
	uint64_t seen = atomic_fetch_add(&oom_seen, 1) + 1;
	if (seen == oom_at || (oom_persistent && seen > oom_at)) {
		errno = ENOMEM;
		return true;
	}
	return false;
}

/* Fails the nth allocation of another thread from now on (and, with
 * persistent, every later one). */
static void oom_arm(uint64_t n, bool persistent)
{
	oom_exempt = true;
	oom_at = n;
	oom_persistent = persistent;
	atomic_store(&oom_seen, 0);
	atomic_store_explicit(&oom_armed, true, memory_order_release);
}

/* Disarms; true when the nth allocation was reached. */
static bool oom_disarm(void)
{
	atomic_store_explicit(&oom_armed, false, memory_order_release);
	return atomic_load(&oom_seen) >= oom_at;
}

#include "support/oom_wrap.h"

/* ---- a server and what it acknowledged ---------------------------------------- */

#define HOUR_US (INT64_C(3600) * 1000000)
#define BATCH_EVENTS 50
#define BATCHES_MAX 8
#define SWEEP_MAX 3000 /* a request making more allocations than this is a test bug */
/* A client waits this long for an answer: a failure must never leave a
 * request unanswered on an open connection. */
#define ANSWER_TIMEOUT_MS 10000

static const char *const prefixes[BATCHES_MAX] = {"b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"};

typedef struct state {
	harness h;
	char key[80];
	int64_t base_us;
	uint32_t batch_count;
	bool acked[BATCHES_MAX]; /* batch k (events prefixes[k]-0 ..) is stored */
	bool maybe[BATCHES_MAX]; /* sent, outcome unknown */
	char beta_key[80];       /* tenant beta's key, once it exists */
} state;

static tally_client *client_open(const state *st)
{
	tally_client *c = harness_connect(&st->h, st->key);
	cr_assert_eq(tally_client_set_timeout(c, ANSWER_TIMEOUT_MS), 0);
	return c;
}

/* Sends batch k of the test (batches_send). */
static int batch_send(tally_client *c, const state *st, uint32_t k, uint32_t *dup_count)
{
	return batches_send(c, prefixes[k], BATCH_EVENTS, st->base_us, dup_count);
}

static int count_query(tally_client *c, const state *st, uint64_t *count)
{
	return batches_count(c, st->base_us, count);
}

static uint64_t acked_events(const state *st)
{
	uint64_t n = 0;
	for (uint32_t k = 0; k < st->batch_count; k++)
		n += st->acked[k] ? BATCH_EVENTS : 0;
	return n;
}

static void expect_count(tally_client *c, const state *st, const char *when, uint64_t n)
{
	uint64_t count = 0;
	int rc = count_query(c, st, &count);
	cr_assert_eq(rc, 0, "%s (allocation %" PRIu64 "): query: %s %s", when, n,
		     tally_client_strerror(rc), tally_client_last_error(c)->message);
	cr_assert_eq(count, acked_events(st), "%s (allocation %" PRIu64 "): %" PRIu64
		     " events counted, %" PRIu64 " acknowledged", when, n, count, acked_events(st));
}

/* A new batch, acknowledged (every event ACCEPTED). */
static void batch_acked(tally_client *c, state *st, const char *when, uint64_t n)
{
	uint32_t k = st->batch_count++;
	cr_assert_lt(k, BATCHES_MAX);
	uint32_t dup = 0;
	int rc = batch_send(c, st, k, &dup);
	cr_assert_eq(rc, 0, "%s (allocation %" PRIu64 "): ingest: %s %s", when, n,
		     tally_client_strerror(rc), tally_client_last_error(c)->message);
	cr_assert_eq(dup, 0);
	st->acked[k] = true;
}

/* What the steps of a sweep saw: an answer, an Error, a closed
 * connection. */
static struct {
	uint32_t answered, refused, closed;
} outcomes;

static void outcome_count(int rc)
{
	if (rc == 0)
		outcomes.answered++;
	else if (rc == TALLY_CLIENT_REFUSED)
		outcomes.refused++;
	else
		outcomes.closed++;
}

/* An answer, an Error, or a closed connection: what the client may see
 * when the server runs out of memory. An Error says so, and that it
 * passes: UNAVAILABLE with a retry_after_ms (never BAD_REQUEST, which
 * would tell the client its request is wrong, nor INTERNAL, a fault to
 * alert on). A timeout is never right: the server left a request on an
 * open connection unanswered. */
static void expect_answered(tally_client *c, int rc, const char *call, uint64_t n)
{
	cr_assert_neq(rc, -ETIMEDOUT, "%s, allocation %" PRIu64 " failed: no answer in %d ms", call,
		      n, ANSWER_TIMEOUT_MS);
	outcome_count(rc);
	if (rc != TALLY_CLIENT_REFUSED)
		return;
	const tally_client_error *e = tally_client_last_error(c);
	cr_assert(e->code == TALLY__V1__ERROR__CODE__UNAVAILABLE && e->retry_after_ms > 0 &&
			  strstr(e->message, "memory"),
		  "%s, allocation %" PRIu64 " failed: %s (retry after %u ms): %s", call, n,
		  tally_client_error_code_name(e->code), e->retry_after_ms, e->message);
}

/* ---- the requests swept -------------------------------------------------------- */

typedef enum {
	REQ_INGEST,
	REQ_PIPELINED,
	REQ_QUERY,
	REQ_LIST,
	REQ_CREATE_TENANT,
	REQ_DAILY_USAGE,
	REQ_CONNECT,
} request_kind;

static const char *const request_names[] = {"ingest", "pipelined ingest", "query", "listing", "tenant creation",
					    "daily usage", "connect"};

/* The events of the test's day in the billing export's first page, on an
 * admin connection, with the nth allocation failing once connected; *rc
 * the client's code. Returns whether the nth allocation was reached. */
static bool daily_usage_count(const state *st, uint64_t n, bool persistent, uint64_t *count,
			      int *rc)
{
	tally_client *admin = harness_connect(&st->h, st->h.admin_key);
	cr_assert_eq(tally_client_set_timeout(admin, ANSWER_TIMEOUT_MS), 0);
	Tally__V1__DailyUsagePage *page = NULL;
	oom_arm(n, persistent);
	*rc = tally_client_daily_usage(admin, (int32_t)(st->base_us / TALLY_US_PER_DAY), "", NULL, 0, &page);
	bool reached = oom_disarm();
	expect_answered(admin, *rc, "daily usage", n);
	*count = 0;
	if (*rc == 0) {
		for (size_t i = 0; i < page->n_rows; i++) {
			cr_assert_str_eq(page->rows[i]->tenant, "acme");
			*count += page->rows[i]->count;
		}
		cr_assert_str_empty(page->next_after_tenant);
		tally__v1__daily_usage_page__free_unpacked(page, NULL);
	}
	tally_client_close(admin);
	return reached;
}

/* Every event of the tenant, listed in one page: 0 and *count, or the
 * client's code. */
static int list_count(tally_client *c, const state *st, uint64_t *count)
{
	Tally__V1__ListEvents m = TALLY__V1__LIST_EVENTS__INIT;
	m.from_us = st->base_us;
	m.to_us = st->base_us + 4 * HOUR_US;
	m.limit = BATCHES_MAX * BATCH_EVENTS;
	Tally__V1__EventPage *page;
	int rc = tally_client_list_events(c, &m, &page);
	if (rc)
		return rc;
	*count = page->n_events;
	cr_assert_str_empty(page->next_cursor, "one page holds them all");
	tally__v1__event_page__free_unpacked(page, NULL);
	return 0;
}

/* Tenant "beta", on a new admin connection; with the nth allocation
 * failing once connected (n = 0: none). 0 with its key in st->beta_key,
 * or the client's code with the Error in *e; *reached as oom_disarm. */
static int tenant_create(state *st, uint64_t n, bool persistent, tally_client_error *e,
			 bool *reached)
{
	tally_client *admin = harness_connect(&st->h, st->h.admin_key);
	cr_assert_eq(tally_client_set_timeout(admin, ANSWER_TIMEOUT_MS), 0);
	Tally__V1__TenantCreated *tc = NULL;
	if (n)
		oom_arm(n, persistent);
	int rc = tally_client_create_tenant(admin, "beta", &tc);
	*reached = n && oom_disarm();
	if (rc == 0) {
		snprintf(st->beta_key, sizeof(st->beta_key), "%s", tc->api_key);
		tally__v1__tenant_created__free_unpacked(tc, NULL);
	}
	*e = *tally_client_last_error(admin);
	tally_client_close(admin);
	return rc;
}

/* A new key for tenant "beta" (one whose creation answer was lost), into
 * st->beta_key. */
static void beta_key_issue(state *st)
{
	tally_client *admin = harness_connect(&st->h, st->h.admin_key);
	Tally__V1__KeyIssued *k;
	int rc = tally_client_issue_key(admin, "beta", &k);
	cr_assert_eq(rc, 0, "a key for beta: %s %s", tally_client_strerror(rc),
		     tally_client_last_error(admin)->message);
	snprintf(st->beta_key, sizeof(st->beta_key), "%s", k->api_key);
	tally__v1__key_issued__free_unpacked(k, NULL);
	tally_client_close(admin);
}

/* PIPELINED new batches sent back to back on one connection (so that
 * the server takes them in one pass, one engine call), then their
 * answers in whatever order they come, with the nth allocation failing:
 * each batch acknowledged (all ACCEPTED) or refused, and in doubt. 0, or
 * the first code other than an acknowledgement (a transport error: the
 * connection is gone and the batches not answered stay in doubt). */
enum { PIPELINED = 4 };

static int pipelined_ingest(tally_client *c, state *st, uint64_t n, bool persistent,
			    bool *reached)
{
	builder b[PIPELINED];
	Tally__V1__IngestBatch m[PIPELINED];
	uint64_t id[PIPELINED];
	uint32_t k0 = st->batch_count;
	cr_assert_leq(k0 + PIPELINED, BATCHES_MAX);
	st->batch_count += PIPELINED;
	for (uint32_t i = 0; i < PIPELINED; i++) {
		batches_build(&b[i], &m[i], prefixes[k0 + i], BATCH_EVENTS, st->base_us);
		st->maybe[k0 + i] = true;
	}
	int first_rc = 0;
	uint32_t sent = 0, answered = 0;
	oom_arm(n, persistent);
	for (; sent < PIPELINED; sent++) {
		int rc = tally_client_ingest_send(c, &m[sent], &id[sent]);
		if (rc) {
			first_rc = rc;
			break;
		}
	}
	while (answered < sent) {
		tally_ingest_ack ack;
		int rc = tally_client_ingest_recv(c, &ack);
		if (rc && rc != TALLY_CLIENT_REFUSED) {
			first_rc = first_rc ? first_rc : rc;
			break;
		}
		uint64_t request_id = rc ? tally_client_last_error(c)->request_id : ack.request_id;
		if (rc) {
			first_rc = first_rc ? first_rc : rc;
			expect_answered(c, rc, "pipelined ingest", n);
			if (request_id == 0)
				break; /* about the connection: it is closed */
		}
		uint32_t i = 0;
		while (i < sent && id[i] != request_id)
			i++;
		cr_assert_lt(i, sent, "an answer to request %" PRIu64 ", not sent", request_id);
		answered++;
		if (rc == 0) {
			cr_assert_eq(ack.accepted, BATCH_EVENTS, "pipelined batch %u: %u accepted", k0 + i,
				     ack.accepted);
			st->acked[k0 + i] = true;
			st->maybe[k0 + i] = false;
			tally_ingest_ack_free(&ack);
		}
	}
	*reached = oom_disarm();
	for (uint32_t i = 0; i < PIPELINED; i++)
		builder_free(&b[i]);
	return first_rc;
}

/* The request with the nth allocation failing; true when it was reached. */
static bool request_run(state *st, tally_client **c, request_kind kind, uint64_t n,
			bool persistent)
{
	const char *call = request_names[kind];
	int rc = 0;
	bool reached;
	switch (kind) {
	case REQ_INGEST: {
		uint32_t k = st->batch_count++;
		uint32_t dup = 0;
		oom_arm(n, persistent);
		rc = batch_send(*c, st, k, &dup);
		reached = oom_disarm();
		if (rc == 0) {
			cr_assert_eq(dup, 0, "ingest, allocation %" PRIu64 ": a new batch DUPLICATE", n);
			st->acked[k] = true;
		} else {
			st->maybe[k] = true;
		}
		break;
	}
	case REQ_PIPELINED:
		rc = pipelined_ingest(*c, st, n, persistent, &reached);
		if (rc == TALLY_CLIENT_REFUSED) {
			/* expect_answered has judged each Error; whether the
			 * connection is still open is what matters here. */
			if (tally_client_last_error(*c)->request_id == 0) {
				tally_client_close(*c);
				*c = client_open(st);
			}
			return reached;
		}
		break;
	case REQ_QUERY: {
		uint64_t count = 0;
		oom_arm(n, persistent);
		rc = count_query(*c, st, &count);
		reached = oom_disarm();
		if (rc == 0)
			cr_assert_eq(count, acked_events(st), "query, allocation %" PRIu64
				     " failed: %" PRIu64 " events counted", n, count);
		break;
	}
	case REQ_LIST: {
		uint64_t count = 0;
		oom_arm(n, persistent);
		rc = list_count(*c, st, &count);
		reached = oom_disarm();
		if (rc == 0)
			cr_assert_eq(count, acked_events(st), "listing, allocation %" PRIu64
				     " failed: %" PRIu64 " events listed", n, count);
		break;
	}
	case REQ_CREATE_TENANT: {
		/* Created or not; created again then, or it exists (CONFLICT:
		 * its answer was lost, so it gets a new key). Either way a key
		 * of it takes a connection, here and after the restart. */
		tally_client_error e;
		rc = tenant_create(st, n, persistent, &e, &reached);
		cr_assert_neq(rc, -ETIMEDOUT, "tenant creation, allocation %" PRIu64 " failed", n);
		outcome_count(rc);
		if (!reached)
			cr_assert_eq(rc, 0, "tenant creation without a failure: %s",
				     tally_client_strerror(rc));
		if (rc == TALLY_CLIENT_REFUSED)
			cr_assert(e.code == TALLY__V1__ERROR__CODE__UNAVAILABLE && e.retry_after_ms > 0 &&
					  strstr(e.message, "memory"),
				  "tenant creation, allocation %" PRIu64 " failed: %s: %s", n,
				  tally_client_error_code_name(e.code), e.message);
		if (rc) {
			bool unused;
			int again = tenant_create(st, 0, false, &e, &unused);
			if (again == TALLY_CLIENT_REFUSED) {
				cr_assert_eq(e.code, TALLY__V1__ERROR__CODE__CONFLICT, "%s", e.message);
				beta_key_issue(st);
			} else {
				cr_assert_eq(again, 0, "tenant creation again: %s",
					     tally_client_strerror(again));
			}
		}
		tally_client_close(harness_connect(&st->h, st->beta_key));
		return reached;
	}
	case REQ_DAILY_USAGE: {
		uint64_t count = 0;
		reached = daily_usage_count(st, n, persistent, &count, &rc);
		if (!reached)
			cr_assert_eq(rc, 0, "daily usage without a failure: %s", tally_client_strerror(rc));
		if (rc == 0)
			cr_assert_eq(count, acked_events(st), "daily usage, allocation %" PRIu64
				     " failed: %" PRIu64 " events", n, count);
		return reached;
	}
	case REQ_CONNECT: {
		tally_client *other = NULL;
		char err[TALLY_CLIENT_ERRMSG_SIZE] = "";
		oom_arm(n, persistent);
		rc = tally_client_open(st->h.address, st->key, "oom", &other, NULL, err);
		reached = oom_disarm();
		cr_assert_neq(rc, -ETIMEDOUT, "connect, allocation %" PRIu64 " failed: %s", n, err);
		outcome_count(rc);
		if (rc == TALLY_CLIENT_REFUSED)
			cr_assert(strstr(err, "refused the hello: ") && strstr(err, "memory") &&
					  strstr(err, "(UNAVAILABLE)"),
				  "connect, allocation %" PRIu64 " failed: %s", n, err);
		if (other)
			tally_client_close(other);
		return reached;
	}
	default:
		cr_assert_fail("no such request");
	}
	if (!reached)
		cr_assert_eq(rc, 0, "%s without a failure: %s %s", call, tally_client_strerror(rc),
			     tally_client_last_error(*c)->message);
	expect_answered(*c, rc, call, n);
	/* A transport error, or an Error about the connection (request id 0):
	 * the server closed it. */
	if (rc && (rc != TALLY_CLIENT_REFUSED || tally_client_last_error(*c)->request_id == 0)) {
		tally_client_close(*c);
		*c = client_open(st);
	}
	return reached;
}

/* Re-sends every batch whose outcome is unknown: whole or absent, and now
 * stored. */
static void resolve_maybe(tally_client *c, state *st, uint64_t n)
{
	for (uint32_t k = 0; k < st->batch_count; k++) {
		if (!st->maybe[k])
			continue;
		uint32_t dup = 0;
		int rc = batch_send(c, st, k, &dup);
		cr_assert_eq(rc, 0, "allocation %" PRIu64 ": re-send of batch %u: %s %s", n, k,
			     tally_client_strerror(rc), tally_client_last_error(c)->message);
		st->maybe[k] = false;
		st->acked[k] = true;
	}
}

static void expect_resend_duplicates(tally_client *c, const state *st, uint64_t n)
{
	for (uint32_t k = 0; k < st->batch_count; k++) {
		if (!st->acked[k])
			continue;
		uint32_t dup = 0;
		int rc = batch_send(c, st, k, &dup);
		cr_assert_eq(rc, 0, "allocation %" PRIu64 ": re-send of batch %u after a restart: %s",
			     n, k, tally_client_strerror(rc));
		cr_assert_eq(dup, BATCH_EVENTS, "allocation %" PRIu64 ": batch %u stored twice", n, k);
	}
}

/* One step of a sweep: true once the request made fewer than n
 * allocations. */
static bool sweep_step(request_kind kind, uint64_t n, bool persistent)
{
	state *st = calloc(1, sizeof(*st));
	cr_assert_not_null(st);
	oom_exempt = true;
	harness_init(&st->h, "srv-oom");
	harness_start(&st->h);
	harness_create_tenant(&st->h, "acme", st->key);
	st->base_us = batches_base_time();
	tally_client *c = client_open(st);
	batch_acked(c, st, "before", n);
	batch_acked(c, st, "before", n);

	bool reached = request_run(st, &c, kind, n, persistent);

	/* The server goes on: the batches in doubt settle whole, a new one is
	 * taken, and a query counts exactly what was acknowledged. */
	resolve_maybe(c, st, n);
	batch_acked(c, st, "after", n);
	expect_count(c, st, "after", n);
	tally_client_close(c);
	/* A restart finds every acknowledged event once. */
	harness_stop(&st->h);
	harness_start(&st->h);
	c = client_open(st);
	expect_count(c, st, "after a restart", n);
	expect_resend_duplicates(c, st, n);
	tally_client_close(c);
	if (st->beta_key[0])
		tally_client_close(harness_connect(&st->h, st->beta_key));
	harness_finish(&st->h);
	free(st);
	return !reached;
}

static void sweep(request_kind kind, bool persistent)
{
	memset(&outcomes, 0, sizeof(outcomes));
	uint64_t n = 1;
	while (!sweep_step(kind, n, persistent)) {
		n++;
		cr_assert_lt(n, SWEEP_MAX, "%s: still allocating at %" PRIu64, request_names[kind], n);
	}
	cr_log_info("%s: %" PRIu64 " allocations swept (%s): %u answered, %u refused, %u connections "
		    "closed", request_names[kind], n - 1, persistent ? "persistent" : "transient",
		    outcomes.answered, outcomes.refused, outcomes.closed);
	cr_expect_gt(outcomes.refused, 0, "%s: no failure was answered with an Error",
		     request_names[kind]);
	cr_expect_gt(n, 1, "%s made no allocation: the injector is not wired in",
		     request_names[kind]);
}

Test(server_oom, ingest_transient, .timeout = 600)
{
	sweep(REQ_INGEST, false);
}

Test(server_oom, ingest_persistent, .timeout = 600)
{
	sweep(REQ_INGEST, true);
}

Test(server_oom, pipelined_ingest_transient, .timeout = 600)
{
	sweep(REQ_PIPELINED, false);
}

Test(server_oom, query_transient, .timeout = 600)
{
	sweep(REQ_QUERY, false);
}

Test(server_oom, query_persistent, .timeout = 600)
{
	sweep(REQ_QUERY, true);
}

Test(server_oom, listing_transient, .timeout = 600)
{
	sweep(REQ_LIST, false);
}

Test(server_oom, tenant_creation_transient, .timeout = 600)
{
	sweep(REQ_CREATE_TENANT, false);
}

Test(server_oom, daily_usage_transient, .timeout = 600)
{
	sweep(REQ_DAILY_USAGE, false);
}

Test(server_oom, connect_transient, .timeout = 600)
{
	sweep(REQ_CONNECT, false);
}
