/*
 * test_server.c — tallyd end to end over loopback: ingest with duplicates,
 * conflicts and rejections, every query kind, listings, pipelining,
 * restart without losing an acknowledged event, administration, tenant
 * isolation across every ordered pair of 20 tenants, and the billing
 * export's DailyUsage and ChangedDays (a tenant created while a page waits
 * for its worker is after the page's watermark).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "latency.h"
#include "server_internal.h" /* server.stopping */
#include "support/fault_io.h"
#include "support/server_batches.h"
#include "support/server_harness.h"
#include "support/store_limits.h"
#include "support/threads.h"

#define HOUR_US (INT64_C(3600) * 1000000)

/* Two hours ago, on a whole hour: every test event is inside the horizon. */
static int64_t base_time(void)
{
	int64_t now = (int64_t)time(NULL) * 1000000;
	return now - now % HOUR_US - 2 * HOUR_US;
}

/* The batch of harness events prefix-from .. prefix-(to - 1), in b (free
 * it after use of *m). */
static void batch_of_range(builder *b, Tally__V1__IngestBatch *m, const char *prefix, int from, int to,
			   int64_t base)
{
	builder_init(b);
	for (int i = from; i < to; i++) {
		tally_client_event e = harness_event(prefix, i, base);
		cr_assert_eq(builder_add(b, &e), 0);
	}
	cr_assert_eq(builder_message(b, m), 0);
}

static tally_ingest_ack ingest_range(tally_client *c, const char *prefix, int from, int to, int64_t base)
{
	builder b;
	Tally__V1__IngestBatch m;
	batch_of_range(&b, &m, prefix, from, to, base);
	tally_ingest_ack ack;
	int rc = tally_client_ingest(c, &m, &ack);
	cr_assert_eq(rc, 0, "ingest: %s %s", tally_client_strerror(rc), tally_client_last_error(c)->message);
	builder_free(&b);
	return ack;
}

static uint64_t count_events(tally_client *c, const char *tenant, int64_t from, int64_t to)
{
	Tally__V1__Query q = TALLY__V1__QUERY__INIT;
	q.tenant = (char *)tenant;
	q.from_us = from;
	q.to_us = to;
	q.bucket = TALLY__V1__BUCKET__NONE;
	Tally__V1__QueryResult *r;
	int rc = tally_client_query(c, &q, &r);
	cr_assert_eq(rc, 0, "query: %s %s", tally_client_strerror(rc), tally_client_last_error(c)->message);
	uint64_t n = r->n_rows ? r->rows[0]->count : 0;
	tally__v1__query_result__free_unpacked(r, NULL);
	return n;
}

/* Description: a tenant ingests 1,000 events in two batches (all
 * ACCEPTED), re-sends one (all DUPLICATE), sends a changed copy (CONFLICT)
 * and invalid events (REJECTED with their reasons); queries by hour, by
 * model with quantiles and distinct users, top-N, and a listing in pages
 * see exactly the accepted events; a listing by a user name past the
 * dimension limit is BAD_REQUEST. */
Test(server, ingest_query_list_end_to_end)
{
	harness h;
	harness_init(&h, "srv-e2e");
	harness_start(&h);
	char key[80];
	harness_create_tenant(&h, "acme", key);
	tally_client *c = harness_connect(&h, key);
	cr_expect_str_eq(tally_client_session(c)->tenant, "acme");
	cr_expect_not(tally_client_session(c)->admin);
	int64_t base = base_time();

	tally_ingest_ack a = ingest_range(c, "ev", 0, 500, base);
	cr_expect_eq(a.accepted, 500);
	tally_ingest_ack_free(&a);
	a = ingest_range(c, "ev", 500, 1000, base);
	cr_expect_eq(a.accepted, 500);
	tally_ingest_ack_free(&a);
	a = ingest_range(c, "ev", 250, 750, base);
	cr_expect_eq(a.duplicate, 500);
	cr_expect_eq(a.accepted, 0);
	tally_ingest_ack_free(&a);

	/* A changed copy of ev-3, an event without id, one too old. */
	builder b;
	builder_init(&b);
	tally_client_event e = harness_event("ev", 3, base);
	e.tokens_in += 1;
	builder_add(&b, &e);
	e = harness_event("bad", 0, base);
	e.event_id.len = 0;
	builder_add(&b, &e);
	e = harness_event("old", 0, base - INT64_C(400) * 24 * HOUR_US);
	builder_add(&b, &e);
	Tally__V1__IngestBatch m;
	builder_message(&b, &m);
	cr_assert_eq(tally_client_ingest(c, &m, &a), 0);
	cr_expect_eq(a.conflict, 1);
	cr_expect_eq(a.rejected, 2);
	cr_expect_eq(a.result[0], TALLY__V1__INGEST_ACK__RESULT__CONFLICT);
	cr_expect_eq(a.result[1], TALLY__V1__INGEST_ACK__RESULT__REJECTED);
	cr_assert_not_null(a.reason);
	cr_expect_eq(a.reason[1], 1 /* TALLY_REASON_MISSING_ID */);
	cr_expect_eq(a.reason[2], 3 /* TALLY_REASON_TIME_TOO_OLD */);
	tally_ingest_ack_free(&a);
	builder_free(&b);

	/* By hour: events are one second apart from base, so 1,000 seconds
	 * fall in the first hour. */
	cr_expect_eq(count_events(c, "", base, base + 4 * HOUR_US), 1000);
	cr_expect_eq(count_events(c, "acme", base, base + 4 * HOUR_US), 1000, "own name is allowed");

	Tally__V1__Query q = TALLY__V1__QUERY__INIT;
	q.from_us = base;
	q.to_us = base + 4 * HOUR_US;
	q.bucket = TALLY__V1__BUCKET__HOUR;
	Tally__V1__Dimension dims[] = {TALLY__V1__DIMENSION__MODEL};
	q.group_by = dims;
	q.n_group_by = 1;
	double quantiles[] = {0.5, 0.95};
	q.quantiles = quantiles;
	q.n_quantiles = 2;
	q.distinct_users = true;
	Tally__V1__QueryResult *r;
	cr_assert_eq(tally_client_query(c, &q, &r), 0, "%s", tally_client_last_error(c)->message);
	cr_assert_eq(r->n_rows, 3, "one hour, three models");
	uint64_t total = 0, tokens_in = 0;
	for (size_t i = 0; i < r->n_rows; i++) {
		cr_expect_eq(r->rows[i]->bucket_start_us, base);
		cr_expect_eq(r->rows[i]->n_group, 1);
		cr_expect_eq(r->rows[i]->n_quantile_ms, 2);
		cr_expect_eq(r->rows[i]->distinct_users, 7);
		total += r->rows[i]->count;
		tokens_in += r->rows[i]->tokens_in;
	}
	cr_expect_eq(total, 1000);
	cr_expect_eq(tokens_in, 1000 * 10 + 999 * 1000 / 2, "sum of 10 + i");
	/* Models in bytewise order: claude-4 (i % 3 == 1), gpt-5, llama-4. */
	cr_expect_eq(r->rows[0]->group[0].len, 8);
	cr_expect_eq(memcmp(r->rows[0]->group[0].data, "claude-4", 8), 0);
	cr_expect_eq(r->rows[0]->count, 333);
	tally__v1__query_result__free_unpacked(r, NULL);

	/* Top 1 project by cost. */
	Tally__V1__Query top = TALLY__V1__QUERY__INIT;
	top.from_us = base;
	top.to_us = base + 4 * HOUR_US;
	top.bucket = TALLY__V1__BUCKET__NONE;
	Tally__V1__Dimension pdim[] = {TALLY__V1__DIMENSION__PROJECT};
	top.group_by = pdim;
	top.n_group_by = 1;
	top.order_by_aggregate = true;
	top.order_aggregate = TALLY__V1__AGGREGATE__COST;
	top.descending = true;
	top.limit = 1;
	cr_assert_eq(tally_client_query(c, &top, &r), 0);
	cr_assert_eq(r->n_rows, 1);
	cr_expect(r->truncated);
	cr_expect_eq(memcmp(r->rows[0]->group[0].data, "beta", 4), 0, "odd i pay 1 more each");
	tally__v1__query_result__free_unpacked(r, NULL);

	/* A bad query: BAD_REQUEST with the engine's message. */
	Tally__V1__Query bad = TALLY__V1__QUERY__INIT;
	bad.from_us = base;
	bad.to_us = base;
	cr_expect_eq(tally_client_query(c, &bad, &r), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(c)->code, TALLY__V1__ERROR__CODE__BAD_REQUEST);

	/* Listing: pages of 300 return every event once, in time order. */
	Tally__V1__ListEvents le = TALLY__V1__LIST_EVENTS__INIT;
	le.from_us = base;
	le.to_us = base + 4 * HOUR_US;
	le.limit = 300;
	char cursor[256] = "";
	int seen = 0, pages = 0;
	int64_t last = INT64_MIN;
	do {
		le.cursor = cursor;
		Tally__V1__EventPage *page;
		cr_assert_eq(tally_client_list_events(c, &le, &page), 0, "%s", tally_client_last_error(c)->message);
		for (size_t i = 0; i < page->n_events; i++) {
			Tally__V1__Event *ev = page->events[i];
			char want[32];
			snprintf(want, sizeof(want), "ev-%d", seen);
			cr_assert_eq(ev->event_id.len, strlen(want));
			cr_assert_eq(memcmp(ev->event_id.data, want, strlen(want)), 0, "event %d", seen);
			cr_assert_gt(ev->time_us, last);
			last = ev->time_us;
			cr_expect_eq(ev->tokens_in, (uint64_t)(10 + seen));
			seen++;
		}
		snprintf(cursor, sizeof(cursor), "%s", page->next_cursor);
		tally__v1__event_page__free_unpacked(page, NULL);
		pages++;
	} while (cursor[0]);
	cr_expect_eq(seen, 1000);
	cr_expect_eq(pages, 4);

	/* A listing by a user name past the dimension limit: BAD_REQUEST
	 * naming the limit; one at the limit is a listing of nothing. */
	uint8_t long_user[TALLY_DIMENSION_SIZE_MAX + 1];
	memset(long_user, 'u', sizeof(long_user));
	le.cursor = "";
	le.user = (ProtobufCBinaryData){sizeof(long_user), long_user};
	Tally__V1__EventPage *page;
	cr_expect_eq(tally_client_list_events(c, &le, &page), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(c)->code, TALLY__V1__ERROR__CODE__BAD_REQUEST);
	cr_expect_str_eq(tally_client_last_error(c)->message, "user: longer than 128 bytes");
	le.user.len = TALLY_DIMENSION_SIZE_MAX;
	cr_assert_eq(tally_client_list_events(c, &le, &page), 0, "%s", tally_client_last_error(c)->message);
	cr_expect_eq(page->n_events, 0);
	tally__v1__event_page__free_unpacked(page, NULL);

	tally_client_close(c);
	harness_finish(&h);
}

/* Description: a tallyd told to listen on [::1]:0 serves over IPv6: a
 * tenant is created and 10 events are ingested and counted through
 * [::1]:PORT, and nothing answers on 127.0.0.1 at that port. Skipped
 * where the machine has no IPv6 loopback. */
Test(server, listens_on_ipv6)
{
	int probe = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in6 loopback = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	bool v6 = probe >= 0 && bind(probe, (struct sockaddr *)&loopback, sizeof(loopback)) == 0;
	if (probe >= 0)
		close(probe);
	if (!v6)
		cr_skip_test("no IPv6 loopback here");
	harness h;
	harness_init(&h, "srv-ipv6");
	snprintf(h.config.listen, sizeof(h.config.listen), "[::1]:0");
	harness_start(&h);
	cr_expect_eq(strncmp(h.address, "[::1]:", 6), 0, "%s", h.address);
	char key[80];
	harness_create_tenant(&h, "acme", key);
	tally_client *c = harness_connect(&h, key);
	int64_t base = base_time();
	tally_ingest_ack ack = ingest_range(c, "v6", 0, 10, base);
	cr_expect_eq(ack.accepted, 10);
	tally_ingest_ack_free(&ack);
	cr_expect_eq(count_events(c, "acme", base, base + HOUR_US), 10);
	tally_client_close(c);

	char v4[64], err[TALLY_CLIENT_ERRMSG_SIZE] = "";
	snprintf(v4, sizeof(v4), "127.0.0.1:%u", server_port(h.server));
	tally_client *x = NULL;
	cr_expect_neq(tally_client_open(v4, key, "test", &x, NULL, err), 0, "served on IPv4 too");
	harness_finish(&h);
}

/* Description: 64 batches sent back to back on one connection (up to the
 * in-flight limit) are all acknowledged, each by its own request id; after
 * a restart every acknowledged event is counted once and a re-send is all
 * DUPLICATE. */
Test(server, pipelining_and_restart)
{
	harness h;
	harness_init(&h, "srv-pipe");
	harness_start(&h);
	char key[80];
	harness_create_tenant(&h, "pipe", key);
	tally_client *c = harness_connect(&h, key);
	int64_t base = base_time();
	uint32_t limit = tally_client_session(c)->limits.inflight_requests_max;
	cr_assert_geq(limit, 8);
	enum { BATCHES = 64, PER = 100 };
	builder b[BATCHES];
	uint64_t ids[BATCHES];
	int sent = 0, acked = 0;
	bool got[BATCHES] = {false};
	while (acked < BATCHES) {
		while (sent < BATCHES && tally_client_inflight(c) < limit) {
			builder_init(&b[sent]);
			for (int i = 0; i < PER; i++) {
				tally_client_event e = harness_event("p", sent * PER + i, base);
				builder_add(&b[sent], &e);
			}
			Tally__V1__IngestBatch m;
			builder_message(&b[sent], &m);
			cr_assert_eq(tally_client_ingest_send(c, &m, &ids[sent]), 0);
			sent++;
		}
		tally_ingest_ack a;
		int rc = tally_client_ingest_recv(c, &a);
		cr_assert_eq(rc, 0, "%s", tally_client_strerror(rc));
		int k = -1;
		for (int i = 0; i < sent; i++)
			if (ids[i] == a.request_id)
				k = i;
		cr_assert_geq(k, 0, "an ack for an unknown id");
		cr_assert_not(got[k], "two acks for one batch");
		got[k] = true;
		cr_expect_eq(a.accepted, PER);
		tally_ingest_ack_free(&a);
		acked++;
	}
	for (int i = 0; i < BATCHES; i++)
		builder_free(&b[i]);
	tally_client_close(c);

	harness_stop(&h);
	harness_start(&h);
	c = harness_connect(&h, key);
	cr_expect_eq(count_events(c, "", base, base + 4 * HOUR_US), BATCHES * PER);
	tally_ingest_ack a = ingest_range(c, "p", 0, 1000, base);
	cr_expect_eq(a.duplicate, 1000);
	tally_ingest_ack_free(&a);
	tally_client_close(c);
	harness_finish(&h);
}

/* Description: administration by the admin key: tenants created, listed
 * with their active keys, a duplicate name is CONFLICT, a bad name
 * BAD_REQUEST; keys issued, listed and revoked (the revoked key is refused
 * on its next request, also on an open connection; an unknown key id is
 * BAD_REQUEST naming it); a query by the admin key without a tenant is
 * BAD_REQUEST saying so; a suspended tenant's
 * key is refused and works again after resume; an admin ingest for an
 * unknown tenant is refused unless create_tenant is set; an empty batch
 * is acked at once; stats count the
 * tenants. */
Test(server, administration)
{
	harness h;
	harness_init(&h, "srv-admin");
	harness_start(&h);
	tally_client *admin = harness_connect(&h, h.admin_key);
	cr_expect(tally_client_session(admin)->admin);
	Tally__V1__TenantCreated *tc;
	cr_assert_eq(tally_client_create_tenant(admin, "one", &tc), 0);
	char key1[80];
	snprintf(key1, sizeof(key1), "%s", tc->api_key);
	tally__v1__tenant_created__free_unpacked(tc, NULL);
	cr_expect_eq(tally_client_create_tenant(admin, "one", &tc), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(admin)->code, TALLY__V1__ERROR__CODE__CONFLICT);
	cr_expect_eq(tally_client_create_tenant(admin, "no spaces", &tc), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(admin)->code, TALLY__V1__ERROR__CODE__BAD_REQUEST);

	Tally__V1__KeyIssued *ki;
	cr_assert_eq(tally_client_issue_key(admin, "one", &ki), 0);
	char key2[80], key2_id[32];
	snprintf(key2, sizeof(key2), "%s", ki->api_key);
	snprintf(key2_id, sizeof(key2_id), "%s", ki->key_id);
	cr_expect_str_eq(ki->tenant, "one");
	tally__v1__key_issued__free_unpacked(ki, NULL);
	cr_expect_eq(tally_client_issue_key(admin, "nobody", &ki), TALLY_CLIENT_REFUSED);

	Tally__V1__TenantList *tl;
	cr_assert_eq(tally_client_list_tenants(admin, &tl), 0);
	cr_assert_eq(tl->n_tenants, 1);
	cr_expect_str_eq(tl->tenants[0]->name, "one");
	cr_expect_eq(tl->tenants[0]->active_keys, 2);
	tally__v1__tenant_list__free_unpacked(tl, NULL);

	Tally__V1__KeyList *kl;
	cr_assert_eq(tally_client_list_keys(admin, "one", &kl), 0);
	cr_expect_eq(kl->n_keys, 2);
	tally__v1__key_list__free_unpacked(kl, NULL);
	cr_assert_eq(tally_client_list_keys(admin, "", &kl), 0);
	cr_expect_eq(kl->n_keys, 3, "two tenant keys and the admin key");
	tally__v1__key_list__free_unpacked(kl, NULL);

	/* key2 works, then is revoked while its connection is open. */
	tally_client *t2 = harness_connect(&h, key2), *t2_pings = harness_connect(&h, key2);
	cr_expect_eq(tally_client_ping(t2, "x", 1), 0);
	cr_expect_eq(count_events(t2, "", base_time(), base_time() + HOUR_US), 0);
	cr_assert_eq(tally_client_revoke_key(admin, key2_id, NULL), 0);
	/* A Ping is refused too (it kept a revoked key's connection alive). */
	cr_expect_eq(tally_client_ping(t2_pings, "x", 1), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(t2_pings)->code, TALLY__V1__ERROR__CODE__UNAUTHENTICATED);
	cr_expect_str_eq(tally_client_last_error(t2_pings)->message, "the key was revoked");
	tally_client_close(t2_pings);
	Tally__V1__QueryResult *r;
	Tally__V1__Query q = TALLY__V1__QUERY__INIT;
	q.from_us = base_time();
	q.to_us = q.from_us + HOUR_US;
	cr_expect_eq(tally_client_query(t2, &q, &r), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(t2)->code, TALLY__V1__ERROR__CODE__UNAUTHENTICATED);
	tally_client_close(t2);
	tally_client *t;
	char err[TALLY_CLIENT_ERRMSG_SIZE];
	cr_expect_eq(tally_client_open(h.address, key2, "test", &t, NULL, err), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_revoke_key(admin, "0000000000000000", NULL), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(admin)->code, TALLY__V1__ERROR__CODE__BAD_REQUEST);
	cr_expect_str_eq(tally_client_last_error(admin)->message, "no key 0000000000000000");

	/* An admin key names the tenant it reads. */
	cr_expect_eq(tally_client_query(admin, &q, &r), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(admin)->code, TALLY__V1__ERROR__CODE__BAD_REQUEST);
	cr_expect_str_eq(tally_client_last_error(admin)->message,
			 "an admin key must name the tenant of a query request");

	/* Suspension. */
	cr_assert_eq(tally_client_set_tenant_state(admin, "one", true, NULL), 0);
	cr_expect_eq(tally_client_open(h.address, key1, "test", &t, NULL, err), TALLY_CLIENT_REFUSED);
	cr_assert_eq(tally_client_set_tenant_state(admin, "one", false, NULL), 0);
	t = harness_connect(&h, key1);
	tally_client_close(t);

	/* Admin ingest for a tenant that does not exist. */
	builder b;
	builder_init(&b);
	tally_client_event e = harness_event("adm", 0, base_time());
	builder_add(&b, &e);
	builder_set_tenant(&b, "fresh");
	Tally__V1__IngestBatch m;
	builder_message(&b, &m);
	tally_ingest_ack a;
	cr_expect_eq(tally_client_ingest(admin, &m, &a), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(admin)->code, TALLY__V1__ERROR__CODE__BAD_REQUEST);
	builder_set_create_tenant(&b, true);
	builder_message(&b, &m);
	cr_assert_eq(tally_client_ingest(admin, &m, &a), 0);
	cr_expect_eq(a.accepted, 1);
	tally_ingest_ack_free(&a);
	builder_free(&b);
	cr_expect_eq(count_events(admin, "fresh", base_time(), base_time() + 4 * HOUR_US), 1);

	/* An empty batch is answered at once (an ack of no events), and may
	 * create its tenant. */
	builder_init(&b);
	builder_set_tenant(&b, "empty");
	builder_set_create_tenant(&b, true);
	builder_message(&b, &m);
	cr_assert_eq(tally_client_ingest(admin, &m, &a), 0);
	cr_expect_eq(a.event_count, 0);
	cr_expect_eq(a.accepted, 0);
	tally_ingest_ack_free(&a);
	builder_free(&b);

	Tally__V1__Stats *st;
	cr_assert_eq(tally_client_stats(admin, &st), 0);
	cr_expect_eq(st->tenants, 3);
	cr_expect_eq(st->events_memtable + st->segment_rows, 1);
	tally__v1__stats__free_unpacked(st, NULL);
	tally_client_close(admin);
	harness_finish(&h);
}

#define ISO_TENANTS 20

/* Description: 20 tenants each ingest their own events; then every tenant
 * key tries every tenant request against every other tenant (ingest,
 * query, listing, all 380 ordered pairs) and every admin request: each is
 * PERMISSION_DENIED, and nothing foreign is ever returned; queries without
 * a tenant name see exactly the key's own events. */
Test(server, isolation_all_ordered_pairs)
{
	harness h;
	harness_init(&h, "srv-iso");
	harness_start(&h);
	char keys[ISO_TENANTS][80], names[ISO_TENANTS][16];
	int64_t base = base_time();
	tally_client *c[ISO_TENANTS];
	for (int i = 0; i < ISO_TENANTS; i++) {
		snprintf(names[i], sizeof(names[i]), "tenant%02d", i);
		harness_create_tenant(&h, names[i], keys[i]);
		c[i] = harness_connect(&h, keys[i]);
		tally_ingest_ack a = ingest_range(c[i], names[i], 0, 10 + i, base);
		cr_assert_eq(a.accepted, (uint32_t)(10 + i));
		tally_ingest_ack_free(&a);
	}
	int refused = 0;
	for (int i = 0; i < ISO_TENANTS; i++) {
		for (int j = 0; j < ISO_TENANTS; j++) {
			if (i == j)
				continue;
			/* ingest into j */
			builder b;
			builder_init(&b);
			tally_client_event e = harness_event("intruder", i, base);
			builder_add(&b, &e);
			builder_set_tenant(&b, names[j]);
			Tally__V1__IngestBatch m;
			builder_message(&b, &m);
			tally_ingest_ack a;
			cr_assert_eq(tally_client_ingest(c[i], &m, &a), TALLY_CLIENT_REFUSED);
			cr_assert_eq(tally_client_last_error(c[i])->code, TALLY__V1__ERROR__CODE__PERMISSION_DENIED);
			builder_free(&b);
			/* query j */
			Tally__V1__Query q = TALLY__V1__QUERY__INIT;
			q.tenant = names[j];
			q.from_us = base;
			q.to_us = base + HOUR_US;
			Tally__V1__QueryResult *r;
			cr_assert_eq(tally_client_query(c[i], &q, &r), TALLY_CLIENT_REFUSED);
			cr_assert_eq(tally_client_last_error(c[i])->code, TALLY__V1__ERROR__CODE__PERMISSION_DENIED);
			/* list j */
			Tally__V1__ListEvents le = TALLY__V1__LIST_EVENTS__INIT;
			le.tenant = names[j];
			le.from_us = base;
			le.to_us = base + HOUR_US;
			le.limit = 100;
			Tally__V1__EventPage *page;
			cr_assert_eq(tally_client_list_events(c[i], &le, &page), TALLY_CLIENT_REFUSED);
			cr_assert_eq(tally_client_last_error(c[i])->code, TALLY__V1__ERROR__CODE__PERMISSION_DENIED);
			refused += 3;
		}
		/* Admin requests from a tenant key. */
		Tally__V1__TenantCreated *tc;
		cr_assert_eq(tally_client_create_tenant(c[i], "sneaky", &tc), TALLY_CLIENT_REFUSED);
		cr_assert_eq(tally_client_last_error(c[i])->code, TALLY__V1__ERROR__CODE__PERMISSION_DENIED);
		Tally__V1__TenantList *tl;
		cr_assert_eq(tally_client_list_tenants(c[i], &tl), TALLY_CLIENT_REFUSED);
		Tally__V1__KeyList *kl;
		cr_assert_eq(tally_client_list_keys(c[i], names[i], &kl), TALLY_CLIENT_REFUSED);
		Tally__V1__KeyIssued *ki;
		cr_assert_eq(tally_client_issue_key(c[i], names[i], &ki), TALLY_CLIENT_REFUSED);
		cr_assert_eq(tally_client_revoke_key(c[i], "0000000000000000", NULL), TALLY_CLIENT_REFUSED);
		cr_assert_eq(tally_client_set_tenant_state(c[i], names[(i + 1) % ISO_TENANTS], true, NULL), TALLY_CLIENT_REFUSED);
		Tally__V1__Stats *st;
		cr_assert_eq(tally_client_stats(c[i], &st), TALLY_CLIENT_REFUSED);
		cr_assert_eq(tally_client_last_error(c[i])->code, TALLY__V1__ERROR__CODE__PERMISSION_DENIED);
		/* Own scope: exactly its own events, by query and by listing. */
		cr_assert_eq(count_events(c[i], "", base, base + HOUR_US), (uint64_t)(10 + i));
		Tally__V1__ListEvents le = TALLY__V1__LIST_EVENTS__INIT;
		le.from_us = base;
		le.to_us = base + HOUR_US;
		le.limit = 1000;
		Tally__V1__EventPage *page;
		cr_assert_eq(tally_client_list_events(c[i], &le, &page), 0);
		cr_assert_eq(page->n_events, (size_t)(10 + i));
		for (size_t k = 0; k < page->n_events; k++)
			cr_assert_eq(memcmp(page->events[k]->event_id.data, names[i], strlen(names[i])), 0,
				     "a foreign event in %s's listing", names[i]);
		tally__v1__event_page__free_unpacked(page, NULL);
	}
	cr_expect_eq(refused, 3 * ISO_TENANTS * (ISO_TENANTS - 1));
	for (int i = 0; i < ISO_TENANTS; i++)
		tally_client_close(c[i]);
	harness_finish(&h);
}

/* Today's UTC day, as the server reckons it. */
static int32_t utc_today(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int32_t)(ts.tv_sec / 86400);
}

/* DailyUsage of day: its page (checked for the day) when want_page, else
 * the BAD_REQUEST that names the day and the range up to today. */
static void daily_usage_expect(tally_client *admin, int32_t day, bool want_page)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		int32_t today = utc_today();
		Tally__V1__DailyUsagePage *page = NULL;
		int rc = tally_client_daily_usage(admin, day, "", NULL, 0, &page);
		if (utc_today() != today)
			continue; /* midnight passed during the request: again */
		if (want_page) {
			cr_assert_eq(rc, 0, "day %d: %s", day,
				     tally_client_last_error(admin)->message);
			cr_expect_eq(page->day, day);
			tally__v1__daily_usage_page__free_unpacked(page, NULL);
			return;
		}
		cr_assert_eq(rc, TALLY_CLIENT_REFUSED, "day %d answered", day);
		const tally_client_error *e = tally_client_last_error(admin);
		cr_expect_eq(e->code, TALLY__V1__ERROR__CODE__BAD_REQUEST, "day %d: %s", day,
			     e->message);
		char want[200];
		snprintf(want, sizeof(want),
			 "day %d is outside the days a DailyUsage may ask for: "
			 "0 (1970-01-01) to %d (today, UTC)",
			 day, today);
		cr_expect_str_eq(e->message, want);
		return;
	}
	cr_assert_fail("day %d: midnight passed twice", day);
}

/* DailyUsage takes a day from 0 (1970-01-01) to today (UTC) and refuses
 * every other day with BAD_REQUEST naming the range, before the day is
 * turned into microseconds: the edges at 1970 and today, the last day whose
 * microseconds fit int64 (106,751,991) and the first that does not, and
 * INT32_MIN and INT32_MAX (once an empty page: the multiplication's
 * overflow). */
static void daily_usage_days_checked(tally_client *admin)
{
	int32_t today = utc_today();
	daily_usage_expect(admin, 0, true);
	daily_usage_expect(admin, today, true);
	daily_usage_expect(admin, -1, false);
	daily_usage_expect(admin, today + 1, false);
	daily_usage_expect(admin, 106751991, false);
	daily_usage_expect(admin, 106751992, false);
	daily_usage_expect(admin, INT32_MAX, false);
	daily_usage_expect(admin, INT32_MIN, false);
}

/* n events of tenant (created by the batch) from base on, harness_event's;
 * with one_project_each, event i of project "p%04d" and status ok (n
 * groups, in order). */
static void usage_tenant_ingest(tally_client *admin, const char *tenant, int n, int64_t base,
				bool one_project_each)
{
	static char projects[1000][16];
	cr_assert(!one_project_each || n <= 1000);
	builder b;
	builder_init(&b);
	builder_set_tenant(&b, tenant);
	builder_set_create_tenant(&b, true);
	for (int i = 0; i < n; i++) {
		tally_client_event e = harness_event(tenant, i, base);
		if (one_project_each) {
			snprintf(projects[i], sizeof(projects[i]), "p%04d", i);
			e.project = (tally_client_str){projects[i], 5};
			e.status = 0;
		}
		builder_add(&b, &e);
	}
	Tally__V1__IngestBatch m;
	builder_message(&b, &m);
	tally_ingest_ack a;
	cr_assert_eq(tally_client_ingest(admin, &m, &a), 0);
	tally_ingest_ack_free(&a);
	builder_free(&b);
}

/* Description: the billing export's DailyUsage returns one UTC day's usage
 * of every tenant in pages of tenants, rows in the documented order, with
 * exact sums, errors and a checksum the client verifies; ChangedDays
 * reports the day after watermark 0, nothing after the page's watermark,
 * and the day again after a late event (a duplicate changes nothing); both
 * are refused to tenant keys; a day before 1970 or after today is
 * BAD_REQUEST naming the range (daily_usage_days_checked). */
Test(server, daily_usage_and_changed_days)
{
	harness h;
	harness_init(&h, "srv-usage");
	harness_start(&h);
	tally_client *admin = harness_connect(&h, h.admin_key);
	int64_t base = base_time();
	int32_t day = (int32_t)(base / TALLY_US_PER_DAY);
	const char *names[3] = {"u-c", "u-a", "u-b"};
	for (int t = 0; t < 3; t++)
		usage_tenant_ingest(admin, names[t], 100 * (t + 1), base, false);
	/* Two pages: u-a and u-b, then u-c. */
	const char *want_tenant[3] = {"u-a", "u-b", "u-c"};
	uint64_t want_count[3] = {200, 300, 100};
	char after[80] = "";
	int pages = 0, tenant_seen = 0;
	uint64_t watermark = UINT64_MAX;
	do {
		Tally__V1__DailyUsagePage *page;
		cr_assert_eq(tally_client_daily_usage(admin, day, after, NULL, 2, &page), 0, "%s",
			     tally_client_last_error(admin)->message);
		cr_expect_eq(page->day, day);
		if (page->watermark < watermark)
			watermark = page->watermark;
		const char *cur = NULL;
		uint64_t count = 0, errors = 0, tokens_in = 0;
		for (size_t i = 0; i <= page->n_rows; i++) {
			Tally__V1__UsageRow *r = i < page->n_rows ? page->rows[i] : NULL;
			if (cur && (!r || strcmp(r->tenant, cur) != 0)) {
				cr_assert_lt(tenant_seen, 3);
				cr_expect_str_eq(cur, want_tenant[tenant_seen]);
				cr_expect_eq(count, want_count[tenant_seen]);
				uint64_t n = want_count[tenant_seen];
				cr_expect_eq(errors, (n + 4) / 5, "status error for i %% 5 == 0");
				cr_expect_eq(tokens_in, n * 10 + n * (n - 1) / 2);
				tenant_seen++;
				count = errors = tokens_in = 0;
			}
			if (!r)
				break;
			if (i > 0 && strcmp(page->rows[i - 1]->tenant, r->tenant) == 0) {
				Tally__V1__UsageRow *p = page->rows[i - 1];
				int c = memcmp(p->project.data, r->project.data, p->project.len < r->project.len ? p->project.len : r->project.len);
				cr_expect(c < 0 || (c == 0 && p->project.len <= r->project.len), "rows out of order");
			}
			cur = r->tenant;
			count += r->count;
			errors += r->errors;
			tokens_in += r->tokens_in;
			cr_expect_eq(r->errors, r->status ? r->count : 0);
		}
		snprintf(after, sizeof(after), "%s", page->next_after_tenant);
		tally__v1__daily_usage_page__free_unpacked(page, NULL);
		pages++;
	} while (after[0]);
	cr_expect_eq(pages, 2);
	cr_expect_eq(tenant_seen, 3);

	Tally__V1__ChangedDaysResult *ch;
	cr_assert_eq(tally_client_changed_days(admin, 0, &ch), 0);
	cr_assert_eq(ch->n_days, 1);
	cr_expect_eq(ch->days[0], day);
	tally__v1__changed_days_result__free_unpacked(ch, NULL);
	cr_assert_eq(tally_client_changed_days(admin, watermark, &ch), 0);
	cr_expect_eq(ch->n_days, 0, "nothing changed after the export's watermark");
	tally__v1__changed_days_result__free_unpacked(ch, NULL);

	/* A duplicate changes nothing; a late event changes its day. */
	builder b;
	builder_init(&b);
	builder_set_tenant(&b, "u-a");
	tally_client_event e = harness_event("u-a", 0, base);
	builder_add(&b, &e);
	Tally__V1__IngestBatch m;
	builder_message(&b, &m);
	tally_ingest_ack a;
	cr_assert_eq(tally_client_ingest(admin, &m, &a), 0);
	cr_expect_eq(a.duplicate, 1);
	tally_ingest_ack_free(&a);
	cr_assert_eq(tally_client_changed_days(admin, watermark, &ch), 0);
	cr_expect_eq(ch->n_days, 0, "a duplicate is no change");
	tally__v1__changed_days_result__free_unpacked(ch, NULL);
	builder_reset(&b);
	e = harness_event("u-a-late", 0, base);
	builder_add(&b, &e);
	builder_message(&b, &m);
	cr_assert_eq(tally_client_ingest(admin, &m, &a), 0);
	cr_expect_eq(a.accepted, 1);
	tally_ingest_ack_free(&a);
	builder_free(&b);
	cr_assert_eq(tally_client_changed_days(admin, watermark, &ch), 0);
	cr_assert_eq(ch->n_days, 1);
	cr_expect_eq(ch->days[0], day);
	cr_expect_gt(ch->change[0], watermark);
	tally__v1__changed_days_result__free_unpacked(ch, NULL);

	daily_usage_days_checked(admin);
	Tally__V1__DailyUsagePage *page;
	char key[80];
	harness_create_tenant(&h, "plain", key);
	tally_client *t = harness_connect(&h, key);
	cr_expect_eq(tally_client_daily_usage(t, day, "", NULL, 0, &page), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(t)->code, TALLY__V1__ERROR__CODE__PERMISSION_DENIED);
	cr_expect_eq(tally_client_changed_days(t, 0, &ch), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(t)->code, TALLY__V1__ERROR__CODE__PERMISSION_DENIED);
	tally_client_close(t);
	tally_client_close(admin);
	harness_finish(&h);
}

/* Whether ListTenants (through admin) lists name. */
static bool tenant_listed(tally_client *admin, const char *name)
{
	Tally__V1__TenantList *list;
	int rc = tally_client_list_tenants(admin, &list);
	cr_assert_eq(rc, 0, "list tenants: %s %s", tally_client_strerror(rc),
		     tally_client_last_error(admin)->message);
	bool listed = false;
	for (size_t i = 0; i < list->n_tenants; i++)
		listed |= strcmp(list->tenants[i]->name, name) == 0;
	tally__v1__tenant_list__free_unpacked(list, NULL);
	return listed;
}

/* Sends m through admin as a raw request (the client would not send a
 * batch over the limit), which the server must refuse with code and
 * message; tenant name is still not listed. */
static void create_tenant_refused(tally_client *admin, Tally__V1__IngestBatch *m,
				  const char *name, int code, const char *message)
{
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	req.body_case = TALLY__V1__REQUEST__BODY_INGEST;
	req.ingest = m;
	Tally__V1__Response *resp;
	int rc = tally_client_call(admin, &req, &resp);
	cr_assert_eq(rc, 0, "%s", tally_client_strerror(rc));
	cr_assert_eq(resp->body_case, TALLY__V1__RESPONSE__BODY_ERROR, "the batch was taken");
	cr_expect_eq(resp->error->code, code, "%s", resp->error->message);
	cr_expect_str_eq(resp->error->message, message);
	tally__v1__response__free_unpacked(resp, NULL);
	cr_expect_not(tenant_listed(admin, name), "the refused batch created tenant %s", name);
}

/* An admin's batch of events "ghost-0" .. for tenant ghost, with
 * create_tenant, in b (free it after use of *m). */
static void ghost_batch(builder *b, Tally__V1__IngestBatch *m, int count, int64_t base)
{
	batch_of_range(b, m, "ghost", 0, count, base);
	cr_assert_eq(builder_set_tenant(b, "ghost"), 0);
	builder_set_create_tenant(b, true);
	cr_assert_eq(builder_message(b, m), 0);
}

/* Description: an admin ingest with create_tenant creates its tenant only
 * when the batch is accepted: a batch with a malformed column
 * (BAD_REQUEST), one over batch_events_max (TOO_LARGE) and one naming a
 * malformed tenant (BAD_REQUEST) create nothing; ListTenants does not list
 * the tenant after each. The same tenant's good batch is acknowledged and
 * creates it. */
Test(server, a_refused_create_tenant_batch_creates_nothing)
{
	harness h;
	harness_init(&h, "srv-ghost");
	h.config.batch_events_max = 4;
	harness_start(&h);
	tally_client *admin = harness_connect(&h, h.admin_key);
	int64_t base = base_time();
	builder b;
	Tally__V1__IngestBatch m;
	ghost_batch(&b, &m, 2, base);
	uint32_t one_duration[1] = {7};
	Tally__V1__IngestBatch bad = m;
	bad.n_duration_ms = 1;
	bad.duration_ms = one_duration;
	create_tenant_refused(admin, &bad, "ghost", TALLY__V1__ERROR__CODE__BAD_REQUEST,
			      "column duration_ms: 1 values for 2 events");
	bad = m;
	bad.tenant = (char *)"ghost!";
	create_tenant_refused(admin, &bad, "ghost!", TALLY__V1__ERROR__CODE__BAD_REQUEST,
			      "malformed tenant name 'ghost!': 1..64 bytes of [A-Za-z0-9._-]");
	builder_free(&b);

	ghost_batch(&b, &m, 5, base);
	create_tenant_refused(admin, &m, "ghost", TALLY__V1__ERROR__CODE__TOO_LARGE,
			      "a batch of 5 events is over the limit of 4");
	builder_free(&b);

	ghost_batch(&b, &m, 4, base);
	tally_ingest_ack ack;
	int rc = tally_client_ingest(admin, &m, &ack);
	cr_assert_eq(rc, 0, "%s %s", tally_client_strerror(rc),
		     tally_client_last_error(admin)->message);
	cr_expect_eq(ack.accepted, 4);
	tally_ingest_ack_free(&ack);
	builder_free(&b);
	cr_expect(tenant_listed(admin, "ghost"), "the accepted batch created its tenant");
	tally_client_close(admin);
	harness_finish(&h);
}

/* Description: a tenant created by an admin ingest is written to
 * tenants.json lazily; if the registry lost it (tenants.json gone before
 * it was written), the next start adds it back from the store, which
 * holds its acknowledged events, and the tenant is listed and queryable. */
Test(server, tenants_created_by_ingest_come_back_from_the_store)
{
	harness h;
	harness_init(&h, "srv-lazy");
	harness_start(&h);
	tally_client *admin = harness_connect(&h, h.admin_key);
	builder b;
	builder_init(&b);
	builder_set_tenant(&b, "lazy");
	builder_set_create_tenant(&b, true);
	tally_client_event e = harness_event("lazy", 0, base_time());
	builder_add(&b, &e);
	Tally__V1__IngestBatch m;
	builder_message(&b, &m);
	tally_ingest_ack a;
	cr_assert_eq(tally_client_ingest(admin, &m, &a), 0);
	cr_expect_eq(a.accepted, 1);
	tally_ingest_ack_free(&a);
	builder_free(&b);
	tally_client_close(admin);
	harness_stop(&h);
	char path[sizeof(h.config.data_dir) + 32];
	snprintf(path, sizeof(path), "%s/tenants.json", h.config.data_dir);
	cr_assert_eq(unlink(path), 0, "%s", path);
	harness_start(&h);
	admin = harness_connect(&h, h.admin_key);
	Tally__V1__TenantList *tl;
	cr_assert_eq(tally_client_list_tenants(admin, &tl), 0);
	cr_assert_eq(tl->n_tenants, 1);
	cr_expect_str_eq(tl->tenants[0]->name, "lazy");
	tally__v1__tenant_list__free_unpacked(tl, NULL);
	cr_expect_eq(count_events(admin, "lazy", base_time(), base_time() + 4 * HOUR_US), 1);
	tally_client_close(admin);
	harness_finish(&h);
}

/* Description: the query threads and the loop ask for the configured
 * scheduler slice (server/latency.c), so a dashboard's work preempts a
 * long-running thread when it wakes; 0 leaves the kernel's default. On a
 * kernel without custom slices for ordinary threads (before 6.12: a fresh
 * thread reports no slice, or the request is ignored) there is nothing to
 * see: skipped, saying so. */
Test(server, latency_threads_get_their_scheduler_slice)
{
	uint32_t mine = 0;
	cr_assert_eq(latency_slice_get(0, &mine), 0);
	cr_assert_eq(latency_slice_set(250), 0);
	uint32_t set = 0;
	cr_assert_eq(latency_slice_get(0, &set), 0);
	if (!mine || set != 250)
		cr_skip("this kernel has no custom slices for ordinary threads (default %u us, asked 250, got %u)",
			mine, set);
	/* Threads inherit their creator's slice: back to the default. */
	cr_assert_eq(latency_slice_set(mine), 0);

	harness h;
	harness_init(&h, "srv-slice");
	cr_assert_eq(h.config.latency_slice_us, CONFIG_DEFAULT_LATENCY_SLICE_US);
	harness_start(&h);
	for (unsigned i = 0; i < h.config.query_threads; i++) {
		char name[16];
		snprintf(name, sizeof(name), "tally-query-%u", i);
		pid_t tid = test_thread_named(name);
		cr_assert_gt(tid, 0, "%s", name);
		uint32_t slice = 0;
		for (int wait = 0; wait < 100 && slice != CONFIG_DEFAULT_LATENCY_SLICE_US; wait++) {
			cr_assert_eq(latency_slice_get(tid, &slice), 0);
			if (slice != CONFIG_DEFAULT_LATENCY_SLICE_US)
				usleep(10 * 1000); /* the thread sets it as it starts */
		}
		cr_expect_eq(slice, CONFIG_DEFAULT_LATENCY_SLICE_US, "%s", name);
	}
	/* The committer waits on the WAL: the default slice. */
	uint32_t commit = 0;
	cr_assert_eq(latency_slice_get(test_thread_named("tally-commit"), &commit), 0);
	cr_expect_eq(commit, mine);
	harness_finish(&h);

	/* 0: the threads keep the default. */
	harness_init(&h, "srv-slice0");
	h.config.latency_slice_us = 0;
	harness_start(&h);
	uint32_t slice = 0;
	cr_assert_eq(latency_slice_get(test_thread_named("tally-query-0"), &slice), 0);
	cr_expect_eq(slice, mine);
	harness_finish(&h);
}

/* The submitter held in the engine's place: group number held_group
 * (0: the first) waits in the hook until the test releases it (at most
 * HOLD_TIMEOUT_S). */
#define HOLD_TIMEOUT_S 10
typedef struct submit_hold {
	sem_t entered, release;
	int held_group;
	atomic_int groups;
	atomic_bool timed_out;
} submit_hold;

static void hold_one_group(void *arg)
{
	submit_hold *hold = arg;
	if (atomic_fetch_add(&hold->groups, 1) != hold->held_group)
		return;
	sem_post(&hold->entered);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += HOLD_TIMEOUT_S;
	if (sem_timedwait(&hold->release, &until) != 0)
		atomic_store(&hold->timed_out, true);
}

/* A harness named `name` whose submitter the hold holds at group
 * held_group (0: the first); not started (harness_start). */
static void held_harness_init(harness *h, submit_hold *hold, const char *name, int held_group)
{
	memset(hold, 0, sizeof(*hold));
	hold->held_group = held_group;
	cr_assert_eq(sem_init(&hold->entered, 0, 0), 0);
	cr_assert_eq(sem_init(&hold->release, 0, 0), 0);
	harness_init(h, name);
	h->submit_hook = hold_one_group;
	h->submit_hook_arg = hold;
}

/* held_harness_init, started. */
static void held_harness_start_at(harness *h, submit_hold *hold, const char *name, int held_group)
{
	held_harness_init(h, hold, name, held_group);
	harness_start(h);
}

static void held_harness_start(harness *h, submit_hold *hold, const char *name)
{
	held_harness_start_at(h, hold, name, 0);
}

/* Waits (at most HOLD_TIMEOUT_S) until the first group is held. */
static void hold_wait_entered(submit_hold *hold)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += HOLD_TIMEOUT_S;
	cr_assert_eq(sem_timedwait(&hold->entered, &until), 0, "the first group never reached the engine");
}

static void hold_destroy(submit_hold *hold)
{
	sem_destroy(&hold->entered);
	sem_destroy(&hold->release);
}

static void ingest_send_range(tally_client *c, const char *prefix, int from, int to, int64_t base)
{
	builder b;
	Tally__V1__IngestBatch m;
	batch_of_range(&b, &m, prefix, from, to, base);
	uint64_t id;
	cr_assert_eq(tally_client_ingest_send(c, &m, &id), 0);
	builder_free(&b);
}

/* Description: the engine's ingest runs on the submitter thread, not the
 * loop: while a group of batches is held in the engine's place, the loop
 * still answers a Ping and a query, and collects another batch; released,
 * the held group is acknowledged and the batch that arrived meanwhile goes
 * to the engine as the next group. Nothing is acknowledged before its
 * group has been through the engine. */
Test(server, loop_answers_while_ingest_is_in_the_engine)
{
	submit_hold hold;
	harness h;
	held_harness_start(&h, &hold, "srv-submit");
	char key[80];
	harness_create_tenant(&h, "acme", key);
	/* a and b send batches; c asks (one request at a time). */
	tally_client *a = harness_connect(&h, key), *b = harness_connect(&h, key), *c = harness_connect(&h, key);
	int64_t base = base_time();

	ingest_send_range(a, "held", 0, 10, base);
	hold_wait_entered(&hold);

	/* The group is in the engine (held): the loop is not. */
	cr_expect_eq(tally_client_ping(c, "x", 1), 0);
	cr_expect_eq(count_events(c, "acme", base, base + HOUR_US), 0, "nothing of the held group is counted yet");
	ingest_send_range(b, "next", 0, 5, base);
	cr_expect_eq(tally_client_ping(c, "y", 1), 0, "the second batch is read, its ack waits");
	cr_expect_not(atomic_load(&hold.timed_out), "the loop waited for the submitter");

	sem_post(&hold.release);
	tally_ingest_ack ack;
	cr_assert_eq(tally_client_ingest_recv(a, &ack), 0);
	cr_expect_eq(ack.accepted, 10);
	tally_ingest_ack_free(&ack);
	cr_assert_eq(tally_client_ingest_recv(b, &ack), 0);
	cr_expect_eq(ack.accepted, 5);
	tally_ingest_ack_free(&ack);
	cr_expect_eq(atomic_load(&hold.groups), 2, "the batch that arrived meanwhile was the next group");
	cr_expect_eq(count_events(c, "acme", base, base + HOUR_US), 15);
	cr_expect_not(atomic_load(&hold.timed_out));

	tally_client_close(a);
	tally_client_close(b);
	tally_client_close(c);
	harness_finish(&h);
	hold_destroy(&hold);
}

/* The pool's worker held by a job of the test's own (no connection: the
 * loop drops its answer) until released, at most HOLD_TIMEOUT_S. */
typedef struct worker_plug {
	sem_t entered, release;
	atomic_bool timed_out;
} worker_plug;

static void worker_plug_run(worker_job *job)
{
	worker_plug *plug = job->arg;
	sem_post(&plug->entered);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += HOLD_TIMEOUT_S;
	if (sem_timedwait(&plug->release, &until) != 0)
		atomic_store(&plug->timed_out, true);
}

/* Holds the only worker of h (query_threads 1) in plug until released. */
static void worker_plug_in(harness *h, worker_plug *plug)
{
	cr_assert_eq(h->config.query_threads, 1);
	memset(plug, 0, sizeof(*plug));
	cr_assert_eq(sem_init(&plug->entered, 0, 0), 0);
	cr_assert_eq(sem_init(&plug->release, 0, 0), 0);
	worker_job *job = calloc(1, sizeof(*job));
	cr_assert_not_null(job);
	job->fn = worker_plug_run;
	job->arg = plug;
	job->slot = UINT32_MAX;
	worker_pool_submit(h->server->workers, job);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += HOLD_TIMEOUT_S;
	cr_assert_eq(sem_timedwait(&plug->entered, &until), 0, "the worker never took the plug");
}

/* Waits until the pool holds jobs jobs, queued or running. */
static void worker_jobs_wait(harness *h, size_t jobs)
{
	for (int waited_ms = 0; worker_pool_busy(h->server->workers) != jobs; waited_ms++) {
		cr_assert_lt(waited_ms, 10000, "the pool never held %zu jobs", jobs);
		usleep(1000);
	}
}

/* Creates tenant (create_tenant) with events "<tenant>-0" .. "-(count - 1)"
 * from base, through admin, all ACCEPTED. */
static void tenant_ingested(tally_client *admin, const char *tenant, int count, int64_t base)
{
	builder b;
	Tally__V1__IngestBatch m;
	batch_of_range(&b, &m, tenant, 0, count, base);
	cr_assert_eq(builder_set_tenant(&b, tenant), 0);
	builder_set_create_tenant(&b, true);
	cr_assert_eq(builder_message(&b, &m), 0);
	tally_ingest_ack a;
	cr_assert_eq(tally_client_ingest(admin, &m, &a), 0, "%s",
		     tally_client_last_error(admin)->message);
	cr_assert_eq(a.accepted, (uint32_t)count);
	tally_ingest_ack_free(&a);
	builder_free(&b);
}

/* The tenants (comma-separated, in page order) and the watermark of a
 * DailyUsagePage answer. */
static uint64_t page_tenants(const Tally__V1__Response *resp, char *tenants, size_t size)
{
	bool error = resp->body_case == TALLY__V1__RESPONSE__BODY_ERROR;
	cr_assert_eq(resp->body_case, TALLY__V1__RESPONSE__BODY_DAILY_USAGE, "%s",
		     error ? resp->error->message : "not a page");
	const Tally__V1__DailyUsagePage *page = resp->daily_usage;
	size_t used = 0;
	tenants[0] = '\0';
	for (size_t i = 0; i < page->n_rows; i++) {
		const char *t = page->rows[i]->tenant;
		if (i == 0 || strcmp(page->rows[i - 1]->tenant, t) != 0)
			used += (size_t)snprintf(tenants + used, size - used, "%s%s",
						 used ? "," : "", t);
	}
	cr_assert_lt(used, size);
	return page->watermark;
}

/* Description: DailyUsage reads the store's change watermark before it
 * copies its page's tenants. A tenant created, and its events ingested
 * and made durable, after the loop copied the page's tenants but before
 * the worker ran (the only worker held meanwhile) is not on the page, and
 * so its events' changes must be after the page's watermark: ChangedDays
 * of that watermark lists the day, and a second DailyUsage has the
 * tenant. Read on the worker, the watermark came after those events and
 * the day was never listed. */
Test(server, daily_usage_watermark_precedes_its_tenants)
{
	harness h;
	harness_init(&h, "srv-usage-order");
	h.config.query_threads = 1;
	harness_start(&h);
	tally_client *admin = harness_connect(&h, h.admin_key);
	tally_client *other = harness_connect(&h, h.admin_key);
	int64_t base = base_time();
	int32_t day = (int32_t)(base / TALLY_US_PER_DAY);
	tenant_ingested(admin, "early", 3, base);

	worker_plug plug;
	worker_plug_in(&h, &plug);
	Tally__V1__DailyUsage body = TALLY__V1__DAILY_USAGE__INIT;
	body.day = day;
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	req.body_case = TALLY__V1__REQUEST__BODY_DAILY_USAGE;
	req.daily_usage = &body;
	uint64_t id;
	cr_assert_eq(tally_client_send(admin, &req, &id), 0);
	worker_jobs_wait(&h, 2); /* the page's tenants are copied: its job waits */
	tenant_ingested(other, "late", 4, base);
	sem_post(&plug.release);

	Tally__V1__Response *resp;
	cr_assert_eq(tally_client_recv(admin, &resp), 0);
	cr_assert_eq(resp->request_id, id);
	char tenants[128];
	uint64_t watermark = page_tenants(resp, tenants, sizeof(tenants));
	tally__v1__response__free_unpacked(resp, NULL);
	cr_expect_str_eq(tenants, "early", "the page's tenants are those before the request");
	Tally__V1__ChangedDaysResult *ch;
	cr_assert_eq(tally_client_changed_days(admin, watermark, &ch), 0);
	cr_expect_eq(ch->n_days, 1, "the late tenant's day changed after the page's watermark %"
		     PRIu64, watermark);
	if (ch->n_days == 1) {
		cr_expect_eq(ch->days[0], day);
		cr_expect_gt(ch->change[0], watermark);
	}
	tally__v1__changed_days_result__free_unpacked(ch, NULL);
	cr_assert_eq(tally_client_call(admin, &req, &resp), 0);
	page_tenants(resp, tenants, sizeof(tenants));
	tally__v1__response__free_unpacked(resp, NULL);
	cr_expect_str_eq(tenants, "early,late");
	cr_expect_not(atomic_load(&plug.timed_out));

	sem_destroy(&plug.entered);
	sem_destroy(&plug.release);
	tally_client_close(other);
	tally_client_close(admin);
	harness_finish(&h);
}

/* Description: a tenant key's query waits behind the only worker (held);
 * meanwhile an admin revokes the key. The query still runs once the worker
 * is free, but its answer is not sent: the loop checks the key again when
 * the job comes back, and the connection gets UNAUTHENTICATED ("the key
 * was revoked") instead of the tenant's counts. Before, a query already
 * at the workers was answered after its key was revoked. */
Test(server, a_query_at_the_workers_is_not_answered_once_its_key_is_revoked)
{
	harness h;
	harness_init(&h, "srv-revoke-job");
	h.config.query_threads = 1;
	harness_start(&h);
	tally_client *admin = harness_connect(&h, h.admin_key);
	int64_t base = base_time();
	tenant_ingested(admin, "acme", 5, base);
	Tally__V1__KeyIssued *ki;
	cr_assert_eq(tally_client_issue_key(admin, "acme", &ki), 0);
	char key[80], key_id[32];
	snprintf(key, sizeof(key), "%s", ki->api_key);
	snprintf(key_id, sizeof(key_id), "%s", ki->key_id);
	tally__v1__key_issued__free_unpacked(ki, NULL);
	tally_client *t = harness_connect(&h, key);
	cr_expect_eq(count_events(t, "", base, base + HOUR_US), 5, "the key works");

	worker_plug plug;
	worker_plug_in(&h, &plug);
	Tally__V1__Query q = TALLY__V1__QUERY__INIT;
	q.from_us = base;
	q.to_us = base + HOUR_US;
	q.bucket = TALLY__V1__BUCKET__NONE;
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	req.body_case = TALLY__V1__REQUEST__BODY_QUERY;
	req.query = &q;
	uint64_t id;
	cr_assert_eq(tally_client_send(t, &req, &id), 0);
	worker_jobs_wait(&h, 2); /* the query waits behind the plug */
	cr_assert_eq(tally_client_revoke_key(admin, key_id, NULL), 0);
	sem_post(&plug.release);

	Tally__V1__Response *resp;
	cr_assert_eq(tally_client_recv(t, &resp), 0);
	cr_expect_eq(resp->request_id, id);
	cr_assert_eq(resp->body_case, TALLY__V1__RESPONSE__BODY_ERROR, "the counts were sent");
	cr_expect_eq(resp->error->code, TALLY__V1__ERROR__CODE__UNAUTHENTICATED);
	cr_expect_str_eq(resp->error->message, "the key was revoked");
	tally__v1__response__free_unpacked(resp, NULL);
	cr_expect_not(atomic_load(&plug.timed_out));
	sem_destroy(&plug.entered);
	sem_destroy(&plug.release);
	tally_client_close(t);
	tally_client_close(admin);
	harness_finish(&h);
}

/* A held harness (held_harness_start, name) with tenant acme (its key into
 * key); returns a client that sent events "held-0" .. "held-9" from base,
 * once that batch is waiting in the engine's place. other, when not NULL,
 * gets a second client, connected before. */
static tally_client *held_batch_in_engine(harness *h, submit_hold *hold, const char *name,
					  char *key, int64_t base, tally_client **other)
{
	held_harness_start(h, hold, name);
	harness_create_tenant(h, "acme", key);
	tally_client *a = harness_connect(h, key);
	if (other)
		*other = harness_connect(h, key);
	ingest_send_range(a, "held", 0, 10, base);
	hold_wait_entered(hold);
	return a;
}

/* server_stop, then waits until the server's loop has begun the stop. */
static void stop_begun(harness *h)
{
	server_stop(h->server);
	for (int waited_ms = 0; !atomic_load(&h->server->stopping); waited_ms++) {
		cr_assert_lt(waited_ms, 10000, "the loop never began the stop");
		usleep(1000);
	}
}

/* Releases the held batch of held_batch_in_engine's client a, and expects
 * its 10 events acknowledged. */
static void held_batch_acknowledged(submit_hold *hold, tally_client *a)
{
	sem_post(&hold->release);
	tally_ingest_ack ack;
	cr_assert_eq(tally_client_ingest_recv(a, &ack), 0);
	cr_expect_eq(ack.accepted, 10);
	tally_ingest_ack_free(&ack);
	cr_expect_not(atomic_load(&hold->timed_out));
}

/* Description: a stop (server_stop, as SIGTERM does) while a batch is
 * held in the engine's place finishes it: the client gets its
 * acknowledgement, the server then ends and closes cleanly, and after
 * a restart on the same directory the acknowledged events are
 * counted once. */
Test(server, stop_finishes_the_ingest_in_flight)
{
	submit_hold hold;
	harness h;
	char key[80];
	int64_t base = base_time();
	tally_client *a = held_batch_in_engine(&h, &hold, "srv-stop", key, base, NULL);
	stop_begun(&h);
	held_batch_acknowledged(&hold, a); /* only now: the ack comes from a stopping server */
	tally_client_close(a);
	harness_stop(&h); /* joins the loop and closes the server, asserting both clean */

	h.submit_hook = NULL;
	harness_start(&h);
	tally_client *c = harness_connect(&h, key);
	cr_expect_eq(count_events(c, "acme", base, base + HOUR_US), 10);
	tally_client_close(c);
	harness_finish(&h);
	hold_destroy(&hold);
}

/* Description: once a stop has begun, a batch sent on a connection
 * already open is never stored: the stopping server does not read it (the
 * connection closes after the batch in the engine is acknowledged), or,
 * if it was read in the moment the stop began, refuses it with
 * UNAVAILABLE ("the server is stopping"). After a restart only the
 * acknowledged batch is counted, and the other, sent again, is accepted
 * (docs/protocol.md, "Shutdown": resending unanswered batches is safe). */
Test(server, a_batch_sent_to_a_stopping_server_is_never_stored)
{
	submit_hold hold;
	harness h;
	char key[80];
	int64_t base = base_time();
	tally_client *b;
	tally_client *a = held_batch_in_engine(&h, &hold, "srv-stopping", key, base, &b);
	stop_begun(&h);
	builder bb;
	Tally__V1__IngestBatch m;
	batch_of_range(&bb, &m, "late", 0, 5, base);
	uint64_t late_id;
	cr_assert_eq(tally_client_ingest_send(b, &m, &late_id), 0);

	held_batch_acknowledged(&hold, a);
	tally_ingest_ack ack;
	int rc = tally_client_ingest_recv(b, &ack);
	if (rc == TALLY_CLIENT_REFUSED) {
		const tally_client_error *e = tally_client_last_error(b);
		cr_expect_eq(e->request_id, late_id);
		cr_expect_eq(e->code, TALLY__V1__ERROR__CODE__UNAVAILABLE, "%s", e->message);
		cr_expect_str_eq(e->message, "the server is stopping");
	} else {
		cr_expect_lt(rc, 0, "no answer but the close: %s", tally_client_strerror(rc));
	}
	tally_client_close(a);
	tally_client_close(b);
	harness_stop(&h);

	h.submit_hook = NULL;
	harness_start(&h);
	tally_client *c = harness_connect(&h, key);
	cr_expect_eq(count_events(c, "acme", base, base + HOUR_US), 10, "the late batch is nowhere");
	cr_assert_eq(tally_client_ingest(c, &m, &ack), 0);
	cr_expect_eq(ack.accepted, 5);
	tally_ingest_ack_free(&ack);
	builder_free(&bb);
	cr_expect_eq(count_events(c, "acme", base, base + HOUR_US), 15);
	tally_client_close(c);
	harness_finish(&h);
	hold_destroy(&hold);
}

/* Overwrites every byte after the 32-byte header of the file at path; an
 * open store keeps the file's index in memory, so only reads of its blocks
 * fail (TALLY_E_CORRUPT). */
static void segment_file_garble(const char *path)
{
	FILE *f = fopen(path, "r+");
	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fseek(f, 0, SEEK_END), 0);
	long size = ftell(f);
	cr_assert_gt(size, 32, "%s", path);
	cr_assert_eq(fseek(f, 32, SEEK_SET), 0);
	for (long i = 32; i < size; i++)
		cr_assert_neq(fputc(0x5a, f), EOF);
	cr_assert_eq(fclose(f), 0);
}

/* The segment files in the harness's data directory; with garble, each is
 * garbled (segment_file_garble) too. */
static int segment_files_each(const harness *h, bool garble)
{
	char path[sizeof(h->config.data_dir) + 16];
	snprintf(path, sizeof(path), "%s/segments", h->config.data_dir);
	DIR *d = opendir(path);
	cr_assert_not_null(d, "%s", path);
	int n = 0;
	for (struct dirent *e; (e = readdir(d));) {
		if (!strstr(e->d_name, ".seg"))
			continue;
		n++;
		char file[sizeof(path) + 256];
		snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
		if (garble)
			segment_file_garble(file);
	}
	closedir(d);
	return n;
}

static int segment_files(const harness *h)
{
	return segment_files_each(h, false);
}

/* Description: a query and a listing over a segment file that no longer
 * reads back fail INTERNAL. A tenant key is told the code and where the
 * server's log has the details, never the message naming the data
 * directory's files; an admin key is told the whole message. */
Test(server, a_tenant_is_never_shown_the_data_directorys_files)
{
	harness h;
	harness_init(&h, "srv-no-paths");
	harness_start(&h);
	char key[80];
	harness_create_tenant(&h, "acme", key);
	tally_client *c = harness_connect(&h, key), *admin = harness_connect(&h, h.admin_key);
	int64_t base = base_time();
	tally_ingest_ack ack = ingest_range(c, "ev", 0, 10, base);
	cr_assert_eq(ack.accepted, 10);
	tally_ingest_ack_free(&ack);
	cr_assert_eq(tally_flush(h.server->store), 0);
	cr_assert_gt(segment_files_each(&h, true), 0);

	for (int who = 0; who < 2; who++) {
		tally_client *k = who ? admin : c;
		Tally__V1__Query q = TALLY__V1__QUERY__INIT;
		q.tenant = who ? "acme" : "";
		q.from_us = base;
		q.to_us = base + HOUR_US;
		Tally__V1__QueryResult *r;
		cr_assert_eq(tally_client_query(k, &q, &r), TALLY_CLIENT_REFUSED);
		const tally_client_error *e = tally_client_last_error(k);
		cr_expect_eq(e->code, TALLY__V1__ERROR__CODE__INTERNAL, "%s", e->message);
		char told[160];
		snprintf(told, sizeof(told),
			 "query failed: data corruption detected (the server's log has the details, "
			 "under request %llu)", (unsigned long long)e->request_id);
		if (who)
			cr_expect_not_null(strstr(e->message, "/segments/"), "the admin is told: %s",
					   e->message);
		else
			cr_expect_str_eq(e->message, told);

		Tally__V1__ListEvents le = TALLY__V1__LIST_EVENTS__INIT;
		le.tenant = q.tenant;
		le.from_us = base;
		le.to_us = base + HOUR_US;
		le.limit = 100;
		Tally__V1__EventPage *page;
		cr_assert_eq(tally_client_list_events(k, &le, &page), TALLY_CLIENT_REFUSED);
		e = tally_client_last_error(k);
		cr_expect_eq(e->code, TALLY__V1__ERROR__CODE__INTERNAL, "%s", e->message);
		snprintf(told, sizeof(told),
			 "list_events failed: data corruption detected (the server's log has the "
			 "details, under request %llu)", (unsigned long long)e->request_id);
		if (who)
			cr_expect_not_null(strstr(e->message, "/segments/"), "the admin is told: %s",
					   e->message);
		else
			cr_expect_str_eq(e->message, told);
	}
	tally_client_close(c);
	tally_client_close(admin);
	harness_finish(&h);
}

/* Description: the last admin key cannot be revoked (nothing would bring
 * one back: a start issues one only into an empty key list): BAD_REQUEST
 * saying so, and the key still works. Once another admin key is issued,
 * the first is revoked, and then the second is the last. */
Test(server, the_last_admin_key_is_never_revoked)
{
	harness h;
	harness_init(&h, "srv-last-admin");
	harness_start(&h);
	char key[80];
	harness_create_tenant(&h, "acme", key);
	tally_client *admin = harness_connect(&h, h.admin_key);
	Tally__V1__KeyList *kl;
	cr_assert_eq(tally_client_list_keys(admin, "", &kl), 0);
	char first_id[32] = "";
	for (size_t i = 0; i < kl->n_keys; i++)
		if (!kl->keys[i]->tenant[0])
			snprintf(first_id, sizeof(first_id), "%s", kl->keys[i]->key_id);
	tally__v1__key_list__free_unpacked(kl, NULL);
	cr_assert(first_id[0], "no admin key listed");
	char told[200];
	snprintf(told, sizeof(told),
		 "key %s is the last admin key: issue another admin key (IssueKey with no tenant) "
		 "before revoking it", first_id);
	cr_expect_eq(tally_client_revoke_key(admin, first_id, NULL), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(admin)->code, TALLY__V1__ERROR__CODE__BAD_REQUEST);
	cr_expect_str_eq(tally_client_last_error(admin)->message, told);
	cr_expect_eq(tally_client_ping(admin, "x", 1), 0, "the key still works");

	Tally__V1__KeyIssued *ki;
	cr_assert_eq(tally_client_issue_key(admin, "", &ki), 0);
	char second[80], second_id[32];
	snprintf(second, sizeof(second), "%s", ki->api_key);
	snprintf(second_id, sizeof(second_id), "%s", ki->key_id);
	tally__v1__key_issued__free_unpacked(ki, NULL);
	cr_expect_eq(tally_client_revoke_key(admin, first_id, NULL), 0);
	tally_client_close(admin);
	admin = harness_connect(&h, second);
	cr_expect_eq(tally_client_revoke_key(admin, second_id, NULL), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(admin)->code, TALLY__V1__ERROR__CODE__BAD_REQUEST);
	tally_client_close(admin);
	harness_finish(&h);
}

/* Description: an Error's message is valid UTF-8 even when it echoes a
 * client's invalid bytes, or cuts a character where it truncates what it
 * echoes: each byte that starts no valid sequence is shown as '?'. */
Test(server, error_messages_are_valid_utf8)
{
	harness h;
	harness_init(&h, "srv-utf8");
	harness_start(&h);
	char key[80];
	harness_create_tenant(&h, "acme", key);
	tally_client *c = harness_connect(&h, key);
	char cut[82];
	memset(cut, 'a', 79);
	memcpy(cut + 79, "\xc3\xa9", 3); /* 'e' with acute: the 80-byte echo cuts it */
	const char *named[] = {"ab\xff" "cd\xe2\x82", cut};
	const char *shown[] = {"ab?cd??", NULL};
	for (int i = 0; i < 2; i++) {
		Tally__V1__Query q = TALLY__V1__QUERY__INIT;
		q.tenant = (char *)named[i];
		q.from_us = base_time();
		q.to_us = q.from_us + HOUR_US;
		Tally__V1__QueryResult *r;
		cr_assert_eq(tally_client_query(c, &q, &r), TALLY_CLIENT_REFUSED);
		const tally_client_error *e = tally_client_last_error(c);
		cr_expect_eq(e->code, TALLY__V1__ERROR__CODE__PERMISSION_DENIED, "%s", e->message);
		cr_expect_eq(tally_utf8_invalid_at((const uint8_t *)e->message, strlen(e->message)),
			     SIZE_MAX, "%s", e->message);
		char told[160];
		if (shown[i])
			snprintf(told, sizeof(told), "this key belongs to tenant acme: it cannot act for %s",
				 shown[i]);
		else
			snprintf(told, sizeof(told), "this key belongs to tenant acme: it cannot act for %.79s?",
				 cut);
		cr_expect_str_eq(e->message, told);
	}
	tally_client_close(c);
	harness_finish(&h);
}

/* Waits (at most HOLD_TIMEOUT_S) until the server has read n ingest requests. */
static void ingest_requests_read(const harness *h, uint64_t n)
{
	uint64_t read;
	for (int waited_ms = 0; (read = metrics_counter(h->server->metrics, M_REQUESTS_INGEST)) < n;
	     waited_ms++) {
		cr_assert_lt(waited_ms, HOLD_TIMEOUT_S * 1000,
			     "the server read %llu ingest requests of %llu",
			     (unsigned long long)read, (unsigned long long)n);
		usleep(1000);
	}
}

/* Description: one tenant's batch that fails in the engine fails alone.
 * Tenant beta's stored events are in a segment file that no longer reads
 * back; beta re-sends them (deduplication reads the file: data corruption)
 * in the same group as two batches of tenant alpha. Alpha's batches are
 * acknowledged, each stored once (sent again, all DUPLICATE); beta's is
 * refused INTERNAL with a message naming only beta, and nothing of it is
 * counted. */
Test(server, a_tenants_failure_in_a_group_fails_only_its_own_batch)
{
	submit_hold hold;
	harness h;
	held_harness_start_at(&h, &hold, "srv-group-failure", 1);
	char alpha_key[80], beta_key[80];
	harness_create_tenant(&h, "alpha", alpha_key);
	harness_create_tenant(&h, "beta", beta_key);
	tally_client *first = harness_connect(&h, alpha_key), *a1 = harness_connect(&h, alpha_key),
		     *a2 = harness_connect(&h, alpha_key), *b = harness_connect(&h, beta_key);
	int64_t base = base_time();
	tally_ingest_ack ack = ingest_range(b, "beta", 0, 10, base); /* group 0 */
	cr_assert_eq(ack.accepted, 10);
	tally_ingest_ack_free(&ack);
	cr_assert_eq(tally_flush(h.server->store), 0);
	cr_assert_gt(segment_files_each(&h, true), 0, "a segment file holds beta's events");

	ingest_send_range(first, "first", 0, 1, base); /* group 1, held */
	hold_wait_entered(&hold);
	ingest_send_range(a1, "a1", 0, 10, base);
	ingest_send_range(b, "beta", 0, 10, base);
	ingest_send_range(a2, "a2", 0, 5, base);
	ingest_requests_read(&h, 5);
	sem_post(&hold.release);

	cr_assert_eq(tally_client_ingest_recv(first, &ack), 0);
	tally_ingest_ack_free(&ack);
	int rc = tally_client_ingest_recv(a1, &ack);
	cr_assert_eq(rc, 0, "alpha's batch: %s %s", tally_client_strerror(rc),
		     tally_client_last_error(a1)->message);
	cr_expect_eq(ack.accepted, 10);
	tally_ingest_ack_free(&ack);
	rc = tally_client_ingest_recv(a2, &ack);
	cr_assert_eq(rc, 0, "alpha's other batch: %s %s", tally_client_strerror(rc),
		     tally_client_last_error(a2)->message);
	cr_expect_eq(ack.accepted, 5);
	tally_ingest_ack_free(&ack);
	cr_assert_eq(tally_client_ingest_recv(b, &ack), TALLY_CLIENT_REFUSED);
	const tally_client_error *e = tally_client_last_error(b);
	cr_expect_eq(e->code, TALLY__V1__ERROR__CODE__INTERNAL, "%s", e->message);
	cr_expect_str_eq(e->message, "ingest refused for tenant beta: data corruption detected");
	cr_expect_eq(atomic_load(&hold.groups), 3, "alpha's and beta's batches were one group");
	cr_expect_not(atomic_load(&hold.timed_out));

	cr_expect_eq(count_events(a1, "alpha", base, base + HOUR_US), 16);
	ack = ingest_range(a1, "a1", 0, 10, base);
	cr_expect_eq(ack.duplicate, 10, "stored once");
	tally_ingest_ack_free(&ack);
	ack = ingest_range(a2, "a2", 0, 5, base);
	cr_expect_eq(ack.duplicate, 5, "stored once");
	tally_ingest_ack_free(&ack);
	tally_client_close(first);
	tally_client_close(a1);
	tally_client_close(a2);
	tally_client_close(b);
	harness_finish(&h);
	hold_destroy(&hold);
}

/* Description: a failure of the whole store fails every batch of a group,
 * with a message that names no tenant: after the WAL's fsync failed, a
 * group of tenant alpha's and tenant beta's batches is refused INTERNAL,
 * "ingest refused: store refuses writes ...", to both. */
Test(server, a_store_failure_fails_a_group_naming_no_tenant)
{
	fault_io *fio = fault_io_create();
	cr_assert_not_null(fio);
	submit_hold hold;
	harness h;
	held_harness_init(&h, &hold, "srv-group-readonly", 2);
	h.config.io = fault_io_table(fio);
	harness_start(&h);
	char alpha_key[80], beta_key[80];
	harness_create_tenant(&h, "alpha", alpha_key);
	harness_create_tenant(&h, "beta", beta_key);
	tally_client *a = harness_connect(&h, alpha_key), *b = harness_connect(&h, beta_key);
	int64_t base = base_time();
	tally_ingest_ack ack = ingest_range(a, "ok", 0, 1, base); /* group 0 */
	tally_ingest_ack_free(&ack);
	fault_io_path_filter_set(fio, ".wal");
	fault_io_fsync_fail_nth(fio, 1, EIO);
	ingest_send_range(a, "lost", 0, 1, base); /* group 1: its fsync fails */
	cr_assert_eq(tally_client_ingest_recv(a, &ack), TALLY_CLIENT_REFUSED);

	ingest_send_range(a, "first", 0, 1, base); /* group 2, held */
	hold_wait_entered(&hold);
	ingest_send_range(b, "beta", 0, 3, base);
	ingest_send_range(a, "alpha", 0, 3, base);
	ingest_requests_read(&h, 5);
	sem_post(&hold.release);
	const char *want = "ingest refused: store refuses writes after a failed write or fsync; "
			   "reopen to recover";
	tally_client *clients[3] = {a, b, a};
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(tally_client_ingest_recv(clients[i], &ack), TALLY_CLIENT_REFUSED);
		const tally_client_error *e = tally_client_last_error(clients[i]);
		cr_expect_eq(e->code, TALLY__V1__ERROR__CODE__INTERNAL, "%s", e->message);
		cr_expect_str_eq(e->message, want);
	}
	cr_expect_eq(atomic_load(&hold.groups), 4, "alpha's and beta's batches were one group");
	tally_client_close(a);
	tally_client_close(b);
	server_stop(h.server);
	pthread_join(h.thread, NULL);
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_expect_eq(server_close(h.server, err), -EIO, "%s", err);
	h.server = NULL;
	harness_finish(&h);
	fault_io_destroy(fio);
	hold_destroy(&hold);
}

/* Description: tallyd hands --memtable-age-max-s to the engine: on a
 * clock the test moves (the io seam), a store with a few events and far
 * from memtable_bytes_max writes no segment file until its oldest event
 * is that old, then flushes it, and the events are still counted once. */
Test(server, memtable_age_max_s_flushes_a_slow_store)
{
	fault_io *fio = fault_io_create();
	cr_assert_not_null(fio);
	fault_io_clock_set_us(fio, (int64_t)time(NULL) * 1000000);
	harness h;
	harness_init(&h, "age");
	h.config.io = fault_io_table(fio);
	h.config.memtable_age_max_s = 60;
	harness_start(&h);
	char key[80];
	harness_create_tenant(&h, "acme", key);
	tally_client *c = harness_connect(&h, key);
	int64_t base = batches_base_time();
	uint32_t duplicates = 1;
	cr_assert_eq(batches_send(c, "slow", 10, base, &duplicates), 0);
	cr_assert_eq(duplicates, 0);
	fault_io_clock_advance_us(fio, 59 * INT64_C(1000000));
	usleep(600 * 1000); /* three of the worker's ticks */
	cr_expect_eq(segment_files(&h), 0, "a second short of the age");
	fault_io_clock_advance_us(fio, INT64_C(1000000));
	for (int waited_ms = 0; waited_ms < 20000 && segment_files(&h) == 0; waited_ms += 10)
		usleep(10 * 1000);
	cr_expect_eq(segment_files(&h), 1, "flushed at the age");
	uint64_t n = 0;
	cr_assert_eq(batches_count(c, base, &n), 0);
	cr_expect_eq(n, 10);
	tally_client_close(c);
	harness_finish(&h);
	fault_io_destroy(fio);
}

/* Exports the day's pages: u-big's rows (count 1 each, projects
 * p0000...) and u-small's 3; the pages inside u-big name its last row. */
static void usage_pages_walk(tally_client *admin, int32_t day, int big_groups, int *pages_out,
			     int *inside_out)
{
	Tally__V1__DailyUsagePage *prev = NULL;
	int pages = 0, inside = 0, big_rows = 0, small_rows = 0;
	for (;;) {
		Tally__V1__DailyUsagePage *page;
		cr_assert_eq(tally_client_daily_usage(admin, day, prev ? prev->next_after_tenant : "",
						      prev ? prev->next_after_row : NULL, 0, &page), 0,
			     "%s", tally_client_last_error(admin)->message);
		pages++;
		cr_assert_lt(pages, 50);
		for (size_t i = 0; i < page->n_rows; i++) {
			const Tally__V1__UsageRow *r = page->rows[i];
			cr_assert_eq(r->count, 1);
			if (strcmp(r->tenant, "u-big") == 0) {
				char want[16];
				snprintf(want, sizeof(want), "p%04d", big_rows++);
				cr_assert(r->project.len == 5 && !memcmp(r->project.data, want, 5),
					  "row %d of u-big is project %s", big_rows - 1, want);
			} else {
				cr_assert_str_eq(r->tenant, "u-small");
				small_rows++;
			}
		}
		if (page->next_after_row) {
			inside++;
			cr_assert_str_eq(page->next_after_tenant, "u-big");
			const Tally__V1__UsageRow *last = page->rows[page->n_rows - 1];
			cr_assert(page->next_after_row->project.len == last->project.len &&
				  !memcmp(page->next_after_row->project.data, last->project.data, 5));
		}
		if (prev)
			tally__v1__daily_usage_page__free_unpacked(prev, NULL);
		prev = page;
		if (!page->next_after_tenant[0])
			break;
	}
	tally__v1__daily_usage_page__free_unpacked(prev, NULL);
	cr_expect_eq(big_rows, big_groups);
	cr_expect_eq(small_rows, 3);
	*pages_out = pages;
	*inside_out = inside;
}

/* A server of 64 KiB frames (a page holds about a hundred rows; its
 * store's cells limit at cells_max unless 0) where u-big has 700 groups
 * (one project each) and u-small 3 on one day (*day), exported a page at
 * a time (usage_pages_walk): u-big's rows span pages. Returns an admin
 * connection. */
static tally_client *usage_pages_run(harness *h, const char *name, uint32_t cells_max, int32_t *day)
{
	harness_init(h, name);
	h->config.frame_bytes_max = 64 * 1024;
	harness_start(h);
	if (cells_max)
		store_limits_query_cells_max(h->server->store, cells_max);
	tally_client *admin = harness_connect(h, h->admin_key);
	int64_t base = base_time();
	*day = (int32_t)(base / TALLY_US_PER_DAY);
	enum { GROUPS = 700 };
	usage_tenant_ingest(admin, "u-big", GROUPS, base, true);
	usage_tenant_ingest(admin, "u-small", 3, base, true);
	int pages, inside;
	usage_pages_walk(admin, *day, GROUPS, &pages, &inside);
	cr_expect_geq(inside, 5, "u-big's rows span pages");
	fprintf(stderr, "test_server daily usage: %d pages, %d inside u-big\n", pages, inside);
	return admin;
}

/* Description: DailyUsage pages inside a tenant. With 64 KiB frames a
 * page holds about a hundred rows, and tenant u-big has 700 groups (one
 * project each) in the day: its rows come over several pages, each ending
 * inside u-big with next_after_row at its last row, the next page asked
 * after that row; the rows add up to every group exactly once, in order,
 * and u-small's rows follow. A cursor without its tenant, or with an
 * unknown status, is BAD_REQUEST. */
Test(server, daily_usage_pages_inside_a_tenant)
{
	harness h;
	int32_t day;
	tally_client *admin = usage_pages_run(&h, "srv-usage-rows", 0, &day);

	Tally__V1__DailyUsagePage *page = NULL;
	Tally__V1__UsageKey key = TALLY__V1__USAGE_KEY__INIT;
	cr_expect_eq(tally_client_daily_usage(admin, day, "", &key, 0, &page), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(admin)->code, TALLY__V1__ERROR__CODE__BAD_REQUEST);
	cr_expect(strstr(tally_client_last_error(admin)->message, "after_tenant") != NULL);
	key.status = 4;
	cr_expect_eq(tally_client_daily_usage(admin, day, "u-big", &key, 0, &page), TALLY_CLIENT_REFUSED);
	cr_expect(strstr(tally_client_last_error(admin)->message, "unknown status 4") != NULL,
		  "%s", tally_client_last_error(admin)->message);
	tally_client_close(admin);
	harness_finish(&h);
}

/* Description: a tenant-day past the engine's cells limit exports in
 * pages. The store's limit lowered to 300 (TALLY_QUERY_CELLS_MAX in
 * production; support/store_limits.h), u-big's 700 groups are past it:
 * each page inside u-big is answered in a window the engine narrows
 * (query.c, query_window), and the pages hold every group once, in order,
 * as with the limit's default. Before windows the first page was TOO_LARGE, and so
 * was the export of that day for every tenant. */
Test(server, daily_usage_pages_a_tenant_day_past_the_cells_limit)
{
	harness h;
	int32_t day;
	tally_client *admin = usage_pages_run(&h, "srv-usage-cells", 300, &day);
	tally_client_close(admin);
	harness_finish(&h);
}

/* Description: query_bytes_max reaches the store. With 1 MiB, a query of
 * 200 projects, each with a 0 ms and a 4,000,000,000 ms event, grouped by
 * project with a quantile (about 8.9 KB of duration sketch per project) is
 * TOO_LARGE (as a query past TALLY_QUERY_CELLS_MAX is) with the engine's
 * message; without the quantile it answers. */
Test(server, query_bytes_max_bounds_a_query)
{
	enum { WIDE = 200 };
	harness h;
	harness_init(&h, "srv-query-bytes");
	h.config.query_bytes_max = 1u << 20;
	harness_start(&h);
	char key[80];
	harness_create_tenant(&h, "acme", key);
	tally_client *c = harness_connect(&h, key);
	int64_t base = base_time();
	builder b;
	builder_init(&b);
	char projects[WIDE][8];
	for (int i = 0; i < 2 * WIDE; i++) {
		tally_client_event e = harness_event("wide", i, base);
		snprintf(projects[i / 2], sizeof(projects[i / 2]), "p%03d", i / 2);
		e.project = (tally_client_str){projects[i / 2], 4};
		e.duration_ms = i % 2 ? 4000000000u : 0;
		builder_add(&b, &e);
	}
	Tally__V1__IngestBatch m;
	builder_message(&b, &m);
	tally_ingest_ack a;
	cr_assert_eq(tally_client_ingest(c, &m, &a), 0);
	cr_assert_eq(a.accepted, 2 * WIDE);
	tally_ingest_ack_free(&a);
	builder_free(&b);
	Tally__V1__Query q = TALLY__V1__QUERY__INIT;
	q.from_us = base - HOUR_US;
	q.to_us = base + HOUR_US;
	Tally__V1__Dimension dims[] = {TALLY__V1__DIMENSION__PROJECT};
	q.group_by = dims;
	q.n_group_by = 1;
	double half = 0.5;
	q.quantiles = &half;
	q.n_quantiles = 1;
	Tally__V1__QueryResult *r = NULL;
	cr_expect_eq(tally_client_query(c, &q, &r), TALLY_CLIENT_REFUSED);
	cr_expect_eq(tally_client_last_error(c)->code, TALLY__V1__ERROR__CODE__TOO_LARGE);
	cr_expect_str_eq(tally_client_last_error(c)->message,
			 "the answer needs more than 1048576 bytes of memory (query_bytes_max): use "
			 "coarser buckets, fewer group-by dimensions, filters, or fewer quantiles and no "
			 "distinct users");
	q.n_quantiles = 0;
	cr_assert_eq(tally_client_query(c, &q, &r), 0, "%s", tally_client_last_error(c)->message);
	cr_expect_eq(r->n_rows, WIDE);
	tally__v1__query_result__free_unpacked(r, NULL);
	tally_client_close(c);
	harness_finish(&h);
}

/* ---- ListTenants and ListKeys in pages ------------------------------------- */

/* One ListTenants page (after, limit) through admin: its names
 * (comma-separated) into names, its next_after into next; or the refusal's
 * code (0 when answered). */
static int tenants_page(tally_client *admin, const char *after, uint32_t limit, char *names,
			size_t size, char *next, size_t next_size)
{
	Tally__V1__ListTenants body = TALLY__V1__LIST_TENANTS__INIT;
	body.after = (char *)after;
	body.limit = limit;
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	req.body_case = TALLY__V1__REQUEST__BODY_LIST_TENANTS;
	req.list_tenants = &body;
	Tally__V1__Response *resp;
	cr_assert_eq(tally_client_call(admin, &req, &resp), 0);
	int code = 0;
	names[0] = next[0] = '\0';
	if (resp->body_case == TALLY__V1__RESPONSE__BODY_ERROR) {
		code = (int)resp->error->code;
	} else {
		cr_assert_eq(resp->body_case, TALLY__V1__RESPONSE__BODY_TENANTS);
		size_t used = 0;
		for (size_t i = 0; i < resp->tenants->n_tenants; i++) {
			const Tally__V1__TenantInfo *ti = resp->tenants->tenants[i];
			used += (size_t)snprintf(names + used, size - used, "%s%s:%u", i ? "," : "",
						 ti->name, ti->active_keys);
			cr_assert_lt(used, size);
		}
		snprintf(next, next_size, "%s", resp->tenants->next_after);
	}
	tally__v1__response__free_unpacked(resp, NULL);
	return code;
}

/* Description: ListTenants in pages. Tenants t0..t6 (t2 with a second
 * key): pages of 3 after "" / "t2" / "t5" hold t0-t2 (next "t2"), t3-t5
 * (next "t5"), t6 (no next), with their keys counted on each page; limit
 * 0 gives all seven with no next; an unknown `after` and a limit over
 * 100,000 are BAD_REQUEST. ListKeys pages the same way, by key id, a
 * tenant's keys alone when named. */
Test(server, tenants_and_keys_are_listed_in_pages)
{
	harness h;
	harness_init(&h, "srv-list-pages");
	harness_start(&h);
	tally_client *admin = harness_connect(&h, h.admin_key);
	char key[80];
	for (int i = 0; i < 7; i++) {
		char name[8];
		snprintf(name, sizeof(name), "t%d", i);
		harness_create_tenant(&h, name, key);
	}
	Tally__V1__KeyIssued *ki;
	cr_assert_eq(tally_client_issue_key(admin, "t2", &ki), 0);
	char t2_second[32];
	snprintf(t2_second, sizeof(t2_second), "%s", ki->key_id);
	tally__v1__key_issued__free_unpacked(ki, NULL);

	char names[512], next[80];
	cr_assert_eq(tenants_page(admin, "", 3, names, sizeof(names), next, sizeof(next)), 0);
	cr_expect_str_eq(names, "t0:1,t1:1,t2:2");
	cr_expect_str_eq(next, "t2");
	cr_assert_eq(tenants_page(admin, "t2", 3, names, sizeof(names), next, sizeof(next)), 0);
	cr_expect_str_eq(names, "t3:1,t4:1,t5:1");
	cr_expect_str_eq(next, "t5");
	cr_assert_eq(tenants_page(admin, "t5", 3, names, sizeof(names), next, sizeof(next)), 0);
	cr_expect_str_eq(names, "t6:1");
	cr_expect_str_eq(next, "", "the last page");
	cr_assert_eq(tenants_page(admin, "", 0, names, sizeof(names), next, sizeof(next)), 0);
	cr_expect_str_eq(names, "t0:1,t1:1,t2:2,t3:1,t4:1,t5:1,t6:1");
	cr_expect_str_eq(next, "");
	cr_expect_eq(tenants_page(admin, "nobody", 3, names, sizeof(names), next, sizeof(next)),
		     TALLY__V1__ERROR__CODE__BAD_REQUEST);
	cr_expect_eq(tenants_page(admin, "", 100001, names, sizeof(names), next, sizeof(next)),
		     TALLY__V1__ERROR__CODE__BAD_REQUEST);
	cr_expect_eq(tenants_page(admin, "", 100000, names, sizeof(names), next, sizeof(next)), 0);

	/* Keys: the admin key and one per tenant, t2's second last. */
	Tally__V1__ListKeys lk = TALLY__V1__LIST_KEYS__INIT;
	lk.limit = 5;
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	req.body_case = TALLY__V1__REQUEST__BODY_LIST_KEYS;
	req.list_keys = &lk;
	Tally__V1__Response *resp;
	size_t listed = 0;
	char after[40] = "";
	for (int page = 0; page < 3; page++) {
		lk.after = after;
		cr_assert_eq(tally_client_call(admin, &req, &resp), 0);
		cr_assert_eq(resp->body_case, TALLY__V1__RESPONSE__BODY_KEYS);
		cr_expect_eq(resp->keys->n_keys, page < 1 ? 5u : 4u, "page %d", page);
		listed += resp->keys->n_keys;
		snprintf(after, sizeof(after), "%s", resp->keys->next_after);
		if (page == 1)
			cr_expect_str_eq(resp->keys->keys[resp->keys->n_keys - 1]->key_id, t2_second);
		tally__v1__response__free_unpacked(resp, NULL);
		if (!after[0])
			break;
	}
	cr_expect_eq(listed, 9, "the admin key, seven tenant keys and t2's second");
	cr_expect_str_eq(after, "");
	lk.tenant = "t2";
	lk.after = "";
	lk.limit = 1;
	cr_assert_eq(tally_client_call(admin, &req, &resp), 0);
	cr_assert_eq(resp->keys->n_keys, 1);
	cr_expect_str_eq(resp->keys->keys[0]->tenant, "t2");
	snprintf(after, sizeof(after), "%s", resp->keys->next_after);
	tally__v1__response__free_unpacked(resp, NULL);
	lk.after = after;
	cr_assert_eq(tally_client_call(admin, &req, &resp), 0);
	cr_assert_eq(resp->keys->n_keys, 1);
	cr_expect_str_eq(resp->keys->keys[0]->key_id, t2_second);
	cr_expect_str_eq(resp->keys->next_after, "");
	tally__v1__response__free_unpacked(resp, NULL);
	lk.after = "0000000000000000";
	cr_assert_eq(tally_client_call(admin, &req, &resp), 0);
	cr_expect_eq(resp->body_case, TALLY__V1__RESPONSE__BODY_ERROR, "an unknown key id");
	tally__v1__response__free_unpacked(resp, NULL);
	tally_client_close(admin);
	harness_finish(&h);
}

/* Description: the client's tally_client_list_tenants asks for
 * TALLY_CLIENT_LIST_PAGE tenants at a time and hands back one list: with
 * 1,001 tenants (two pages) it has every one, once, in creation order,
 * and no next_after. */
Test(server, the_client_lists_every_tenant_over_pages)
{
	harness h;
	harness_init(&h, "srv-list-client");
	harness_start(&h);
	tally_client *admin = harness_connect(&h, h.admin_key);
	enum { TENANTS = TALLY_CLIENT_LIST_PAGE + 1 };
	int64_t base = base_time();
	for (int i = 0; i < TENANTS; i++) {
		char name[16];
		snprintf(name, sizeof(name), "p%04d", i);
		tenant_ingested(admin, name, 1, base);
	}
	Tally__V1__TenantList *tl;
	cr_assert_eq(tally_client_list_tenants(admin, &tl), 0, "%s",
		     tally_client_last_error(admin)->message);
	cr_assert_eq(tl->n_tenants, TENANTS);
	for (int i = 0; i < TENANTS; i++) {
		char name[16];
		snprintf(name, sizeof(name), "p%04d", i);
		cr_assert_str_eq(tl->tenants[i]->name, name, "tenant %d", i);
	}
	cr_expect_str_eq(tl->next_after, "");
	tally__v1__tenant_list__free_unpacked(tl, NULL);
	tally_client_close(admin);
	harness_finish(&h);
}
