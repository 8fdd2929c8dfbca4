/*
 * handlers.c — what tallyd does with each request (docs/protocol.md).
 *
 * Every request is scoped by the server from the connection's key: a
 * tenant key acts only for its own tenant (a request naming another tenant
 * is PERMISSION_DENIED; naming its own is allowed), an admin key names the
 * tenant it acts for and every such request is logged. Administration is
 * for admin keys only. The engine is then called with that tenant and no
 * other, and it checks the name again.
 *
 * Ingest: a decoded batch waits in the pass queue until the end of the
 * loop pass, when every batch waiting there goes to the submitter thread
 * as one group (unless it still holds the previous one), which puts them
 * into the engine with one tally_ingest_submit_many (one WAL record); then
 * it waits in the ack queue until the committer reports its LSN durable,
 * and only then is its IngestAck sent. If the WAL write or fsync fails, the waiting batches get
 * INTERNAL and nothing of them is acknowledged. A group call that fails for
 * a reason of one batch is retried one call per batch, so one tenant's
 * failure never fails another's batch, and a client is told only its own
 * batch's failure, never the store's message about another tenant
 * (handlers_submit_group, ingest_refused).
 *
 * Queries and listings run on the worker pool; administration and stats
 * run on the loop thread (the registry and key store are the loop's).
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "batch.h"
#include "convert.h"
#include "fail.h"
#include "log.h"
#include "server_internal.h"

#define ADMIN_KEY_FILE "admin.key"

/* ---- queues --------------------------------------------------------------- */

/* Room for one more item in q: 0 or -ENOMEM. */
static int queue_reserve(ingest_queue *q)
{
	if (q->len == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 64;
		pending_ingest *items = malloc(cap * sizeof(*items));
		if (!items)
			return -ENOMEM;
		for (size_t i = 0; i < q->len; i++)
			items[i] = q->items[(q->head + i) % q->cap];
		free(q->items);
		q->items = items;
		q->cap = cap;
		q->head = 0;
	}
	return 0;
}

/* Appends item to q: 0, or -ENOMEM (q unchanged); after a successful
 * queue_reserve, 0. */
static int queue_push(ingest_queue *q, const pending_ingest *item)
{
	int rc = queue_reserve(q);
	if (rc)
		return rc;
	q->items[(q->head + q->len) % q->cap] = *item;
	q->len++;
	return 0;
}

static pending_ingest *queue_front(ingest_queue *q) { return q->len ? &q->items[q->head] : NULL; }

static void queue_pop(ingest_queue *q)
{
	q->head = (q->head + 1) % q->cap;
	q->len--;
}

static void pending_free(pending_ingest *p)
{
	if (p->request)
		pb_arena_free(p->request);
	free(p->events);
	free(p->results);
	memset(p, 0, sizeof(*p));
}

void ingest_queue_free(ingest_queue *q)
{
	while (q->len) {
		pending_free(queue_front(q));
		queue_pop(q);
	}
	free(q->items);
	memset(q, 0, sizeof(*q));
}

/* ---- responses -------------------------------------------------------------- */

/* A framed response in a malloc-ed buffer, for worker threads. A response
 * over the frame limit becomes TOO_LARGE. NULL when out of memory. */
uint8_t *response_frame(const Tally__V1__Response *resp, uint32_t limit, metrics *m, size_t *size_out)
{
	size_t size = tally__v1__response__get_packed_size(resp);
	if (size > limit) {
		if (m)
			metrics_error(m, ERR_TOO_LARGE);
		Tally__V1__Error err = TALLY__V1__ERROR__INIT;
		err.code = TALLY__V1__ERROR__CODE__TOO_LARGE;
		char text[160];
		snprintf(text, sizeof(text),
			 "the response would be %zu bytes (frame limit %u): narrow the range or lower the limit",
			 size, limit);
		err.message = text;
		Tally__V1__Response small = TALLY__V1__RESPONSE__INIT;
		small.request_id = resp->request_id;
		small.body_case = TALLY__V1__RESPONSE__BODY_ERROR;
		small.error = &err;
		return response_frame(&small, limit, NULL, size_out);
	}
	uint8_t *buf = malloc(FRAME_HEADER_SIZE + size);
	if (!buf)
		return NULL;
	frame_header_put(buf, (uint32_t)size);
	tally__v1__response__pack(resp, buf + FRAME_HEADER_SIZE);
	*size_out = FRAME_HEADER_SIZE + size;
	return buf;
}

static uint8_t *error_frame(uint64_t request_id, int code, const char *message, uint32_t limit,
			    size_t *size)
{
	char text[TALLY_ERRMSG_SIZE];
	snprintf(text, sizeof(text), "%s", message);
	Tally__V1__Error err = TALLY__V1__ERROR__INIT;
	err.code = (Tally__V1__Error__Code)code;
	err.message = server_text_utf8(text);
	err.retry_after_ms = retry_after_of(code);
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.request_id = request_id;
	resp.body_case = TALLY__V1__RESPONSE__BODY_ERROR;
	resp.error = &err;
	return response_frame(&resp, limit, NULL, size);
}

/* The protocol code for an engine error. */
static int code_of_engine_error(int rc)
{
	switch (rc) {
	case TALLY_E_INVALID:
	case TALLY_E_TENANT:
		return ERR_BAD_REQUEST;
	case TALLY_E_LIMIT:
		return ERR_TOO_LARGE;
	case TALLY_E_BUSY:
	case TALLY_E_CLOSED:
		return ERR_UNAVAILABLE;
	default:
		return error_code_of_failure(rc);
	}
}

/* ---- authentication and scope --------------------------------------------- */

/* Contract in server_internal.h. */
bool handlers_auth_still_valid(server *s, conn *c, uint64_t request_id, uint64_t frame_bytes)
{
	if (c->auth_generation == s->auth_generation)
		return true;
	const key_entry *e = keys_lookup(s->keys, c->key_text);
	const tenant_entry *t = e && e->tenant[0] ? tenants_find(s->tenants, e->tenant) : NULL;
	const char *why = !e ? "the key was revoked" : e->tenant[0] && (!t || t->suspended) ? "the tenant is suspended" : NULL;
	if (!why) {
		c->auth_generation = s->auth_generation;
		return true;
	}
	log_warn("%s: key %s refused: %s", c->peer, c->key_id, why);
	conn_respond_error(s, c, request_id, frame_bytes, ERR_UNAUTHENTICATED, 0, "%s", why);
	conn_close_after_send(s, c);
	return false;
}

/* Answers a request refused because a tenant cannot be created: rc and
 * errmsg from tenants.h. */
static void tenant_error_respond(server *s, conn *c, uint64_t request_id, uint64_t frame_bytes,
				 int rc, const char *errmsg)
{
	int code = rc == -EEXIST ? ERR_CONFLICT : rc == TALLY_E_TENANT ? ERR_BAD_REQUEST
		   : rc == TALLY_E_LIMIT ? ERR_RESOURCE_EXHAUSTED : error_code_of_failure(rc);
	conn_respond_error(s, c, request_id, frame_bytes, code, retry_after_of(code), "%s", errmsg);
}

/*
 * The tenant a tenant request acts for, into out: the key's tenant, or for
 * an admin key the named one, which must exist unless create is not NULL
 * (an ingest with create_tenant): then a tenant that could be created
 * (tenants_check_new) sets *create, and the caller creates it once the
 * request is accepted (ingest_tenant_create), so a refused request creates
 * nothing. Answers the request and returns false when refused.
 */
static bool scope_tenant(server *s, conn *c, uint64_t request_id, uint64_t frame_bytes,
			 const char *named, bool *create, const char *what, char *out)
{
	named = named ? named : "";
	if (!c->admin) {
		if (named[0] && strcmp(named, c->tenant) != 0) {
			conn_respond_error(s, c, request_id, frame_bytes, ERR_PERMISSION_DENIED, 0,
					   "this key belongs to tenant %s: it cannot act for %.80s", c->tenant, named);
			return false;
		}
		snprintf(out, TALLY_TENANT_SIZE_MAX + 1, "%s", c->tenant);
		return true;
	}
	if (!named[0]) {
		conn_respond_error(s, c, request_id, frame_bytes, ERR_BAD_REQUEST, 0,
				   "an admin key must name the tenant of a %s request", what);
		return false;
	}
	if (!tenants_find(s->tenants, named)) {
		if (!create) {
			conn_respond_error(s, c, request_id, frame_bytes, ERR_BAD_REQUEST, 0,
					   "no tenant %.80s (ingest may create it with create_tenant)", named);
			return false;
		}
		char errmsg[TALLY_ERRMSG_SIZE];
		int rc = tenants_check_new(s->tenants, named, errmsg);
		if (rc) {
			tenant_error_respond(s, c, request_id, frame_bytes, rc, errmsg);
			return false;
		}
		*create = true;
	}
	metrics_add(s->metrics, M_ADMIN_ACTING_FOR_TENANT, 1);
	log_info("admin key %s (%s): %s for tenant %s", c->key_id, c->peer, what, named);
	snprintf(out, TALLY_TENANT_SIZE_MAX + 1, "%s", named);
	return true;
}

static void on_hello(server *s, conn *c, Tally__V1__Request *req, uint64_t fb)
{
	const Tally__V1__Hello *h = req->hello;
	if (c->authed) {
		conn_respond_error(s, c, req->request_id, fb, ERR_BAD_REQUEST, 0,
				   "already authenticated on this connection");
		return;
	}
	if (h->protocol_version > PROTOCOL_VERSION) {
		conn_respond_error(s, c, req->request_id, fb, ERR_BAD_REQUEST, 0,
				   "protocol version %u is not supported (this server speaks %d)",
				   h->protocol_version, PROTOCOL_VERSION);
		conn_close_after_send(s, c);
		return;
	}
	const key_entry *e = keys_lookup(s->keys, h->api_key);
	const tenant_entry *t = e && e->tenant[0] ? tenants_find(s->tenants, e->tenant) : NULL;
	const char *why = !e ? "unknown or revoked API key"
			  : e->tenant[0] && !t ? "the key's tenant does not exist"
			  : t && t->suspended ? "the tenant is suspended" : NULL;
	if (why) {
		log_warn("%s: Hello refused: %s", c->peer, why);
		conn_respond_error(s, c, req->request_id, fb, ERR_UNAUTHENTICATED, 0, "%s", why);
		conn_close_after_send(s, c);
		return;
	}
	uint32_t same_key = 0;
	for (uint32_t i = 0; i < s->conn_slots; i++) {
		const conn *o = &s->conns[i];
		if (o->fd >= 0 && o->authed && !o->close_submitted && strcmp(o->key_id, e->id) == 0)
			same_key++;
	}
	if (same_key >= s->config.connections_per_key_max) {
		conn_respond_error(s, c, req->request_id, fb, ERR_RESOURCE_EXHAUSTED, 1000,
				   "key %s already has %u connections (the limit)", e->id, same_key);
		conn_close_after_send(s, c);
		return;
	}
	c->authed = true;
	c->reader.limit = s->config.frame_bytes_max; /* HELLO_FRAME_BYTES_MAX until now */
	c->admin = e->tenant[0] == 0;
	snprintf(c->tenant, sizeof(c->tenant), "%s", e->tenant);
	snprintf(c->key_id, sizeof(c->key_id), "%s", e->id);
	snprintf(c->key_text, sizeof(c->key_text), "%s", h->api_key);
	c->auth_generation = s->auth_generation;
	Tally__V1__Limits limits = TALLY__V1__LIMITS__INIT;
	limits.frame_bytes_max = s->config.frame_bytes_max;
	limits.batch_events_max = s->config.batch_events_max;
	limits.inflight_requests_max = s->config.inflight_max;
	limits.query_rows_max = TALLY_QUERY_ROWS_MAX;
	limits.list_events_max = TALLY_LIST_EVENTS_MAX;
	Tally__V1__HelloOk ok = TALLY__V1__HELLO_OK__INIT;
	ok.tenant = c->tenant;
	ok.admin = c->admin;
	ok.server_version = SERVER_VERSION;
	ok.protocol_version = PROTOCOL_VERSION;
	ok.limits = &limits;
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.request_id = req->request_id;
	resp.body_case = TALLY__V1__RESPONSE__BODY_HELLO;
	resp.hello = &ok;
	conn_respond(s, c, &resp, fb);
}

/* ---- ingest --------------------------------------------------------------- */

/*
 * Creates the tenant an admin's ingest named with create_tenant, once its
 * batch is accepted (scope_tenant checked that it can be created). In
 * memory at once; in tenants.json within a second (handlers_save_tenants).
 * Until then the tenant's existence is carried by its events: the WAL holds
 * them before the ack, and server_open adds every tenant the store knows to
 * the registry. Answers the request and returns false when refused.
 */
static bool ingest_tenant_create(server *s, conn *c, uint64_t request_id, uint64_t frame_bytes,
				 const char *name)
{
	char errmsg[TALLY_ERRMSG_SIZE];
	int rc = tenants_add_pending(s->tenants, name, errmsg);
	if (rc) {
		tenant_error_respond(s, c, request_id, frame_bytes, rc, errmsg);
		return false;
	}
	log_info("admin key %s creates tenant %s by ingest", c->key_id, name);
	return true;
}

/*
 * An IngestBatch: scoped, checked and decoded, then into the pass queue.
 * Every refusal comes before the tenant that create_tenant names is
 * created, so a refused batch creates nothing.
 */
static void on_ingest(server *s, conn *c, Tally__V1__Request *req, uint64_t fb, bool *kept)
{
	const Tally__V1__IngestBatch *b = req->ingest;
	if (!c->admin && (b->create_tenant || b->backfill)) {
		conn_respond_error(s, c, req->request_id, fb, ERR_PERMISSION_DENIED, 0,
				   "%s is for admin keys only", b->backfill ? "backfill" : "create_tenant");
		return;
	}
	pending_ingest p = {0};
	bool create = false;
	if (!scope_tenant(s, c, req->request_id, fb, b->tenant, b->create_tenant ? &create : NULL,
			  "ingest", p.tenant))
		return;
	size_t n = b->n_time_us;
	if (n > s->config.batch_events_max) {
		conn_respond_error(s, c, req->request_id, fb, ERR_TOO_LARGE, 0,
				   "a batch of %zu events is over the limit of %u", n, s->config.batch_events_max);
		return;
	}
	p.events = malloc((n ? n : 1) * sizeof(*p.events));
	p.results = malloc((n ? n : 1) * sizeof(*p.results));
	if (!p.events || !p.results) {
		pending_free(&p);
		conn_respond_error(s, c, req->request_id, fb, ERR_UNAVAILABLE, RETRY_AFTER_MS,
				   "out of memory for a batch of %zu events", n);
		return;
	}
	char errmsg[TALLY_ERRMSG_SIZE];
	int st = batch_decode(b, p.events, s->config.batch_events_max, &p.count, errmsg);
	if (st != BATCH_OK) {
		pending_free(&p);
		conn_respond_error(s, c, req->request_id, fb,
				   st == BATCH_TOO_LARGE ? ERR_TOO_LARGE : ERR_BAD_REQUEST, 0, "%s", errmsg);
		return;
	}
	/* Room in the queue before the tenant is created: after it, nothing
	 * refuses the batch. */
	if (queue_reserve(&s->pass)) {
		pending_free(&p);
		conn_respond_error(s, c, req->request_id, fb, ERR_UNAVAILABLE, RETRY_AFTER_MS,
				   "out of memory queueing a batch");
		return;
	}
	if (create && !ingest_tenant_create(s, c, req->request_id, fb, p.tenant)) {
		pending_free(&p);
		return;
	}
	p.slot = (uint32_t)(c - s->conns);
	p.gen = c->gen;
	p.request_id = req->request_id;
	p.frame_bytes = fb;
	p.request = req;
	p.backfill = b->backfill;
	p.received_us = server_now_us();
	int rc = queue_push(&s->pass, &p);
	assert(rc == 0); /* reserved */
	(void)rc;
	*kept = true;
}

void handlers_submit_pass(server *s)
{
	size_t n = s->pass.len;
	if (!n || s->submit_busy)
		return; /* a busy submitter takes this pass's batches with the next group */
	ingest_queue group = s->pass;
	s->pass = s->submitting; /* empty: its storage is reused */
	s->submitting = group;
	int rc = 0;
	if (n > s->submit_batch_cap) {
		uint32_t cap = s->submit_batch_cap ? s->submit_batch_cap : 64;
		while (cap < n)
			cap *= 2;
		tally_batch *b = realloc(s->submit_batches, cap * sizeof(*b));
		if (b) {
			s->submit_batches = b;
			s->submit_batch_cap = cap;
		} else {
			rc = -ENOMEM;
		}
	}
	if (rc) { /* answered at once, as the engine's refusal would be */
		pthread_mutex_lock(&s->submit_lock);
		s->submit_rc = rc;
		s->submit_lsn = 0;
		pthread_mutex_unlock(&s->submit_lock);
		handlers_submit_done(s);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		pending_ingest *p = &group.items[(group.head + i) % group.cap];
		s->submit_batches[i] = (tally_batch){.tenant = p->tenant, .events = p->events, .count = p->count,
						     .results = p->results, .backfill = p->backfill};
	}
	s->submit_busy = true;
	pthread_mutex_lock(&s->submit_lock);
	s->submit_go = true;
	pthread_cond_signal(&s->submit_cond);
	pthread_mutex_unlock(&s->submit_lock);
}

/* A batch the engine's own checks refused alone (its tenant name, its
 * size): nothing else of its call was affected. */
static bool ingest_failure_alone(int status)
{
	return status == TALLY_E_TENANT || status == TALLY_E_LIMIT || status == TALLY_E_INVALID;
}

/* A failure of the whole store, not of one batch: writes refused after the
 * WAL failed, the store closing, or its memtables full while flushes fail
 * (a full disk). Every batch would meet it. */
static bool ingest_failure_store_wide(int status)
{
	return status == TALLY_E_READONLY || status == TALLY_E_CLOSED || status == TALLY_E_BUSY;
}

/*
 * The group's batches are of several connections and tenants, and a call
 * of the engine (or a part of one) fails whole: one tenant's failure (its
 * damaged segment read while deduplicating, say) would fail every batch
 * with it. So every batch whose call or part failed for another reason
 * than a store-wide one is submitted again, alone: it gets its own outcome,
 * which handlers_submit_done may tell its client. A failed call or part
 * stored nothing of its batches, and each retry is all or nothing too, so
 * no batch is stored twice. The first store-wide failure ends the retries
 * and is every remaining batch's too. *lsn covers every batch stored.
 */
int handlers_submit_group(server *s, uint64_t *lsn)
{
	tally_batch *batches = s->submit_batches;
	size_t n = s->submitting.len;
	*lsn = 0;
	int rc = tally_ingest_submit_many(s->store, batches, n, lsn);
	if (n == 1 || rc == TALLY_E_READONLY || rc == TALLY_E_CLOSED)
		return rc; /* a batch alone has its own outcome; the store's failures are all's */
	int store_failure = 0;
	for (size_t i = 0; i < n; i++) {
		tally_batch *b = &batches[i];
		if ((!rc && !b->status) || ingest_failure_alone(b->status))
			continue; /* stored, or refused alone */
		if (store_failure) {
			b->status = store_failure;
			continue;
		}
		uint64_t batch_lsn = 0;
		int batch_rc = tally_ingest_submit_many(s->store, b, 1, &batch_lsn);
		if (batch_rc)
			b->status = batch_rc;
		if (!b->status && batch_lsn > *lsn)
			*lsn = batch_lsn;
		if (ingest_failure_store_wide(b->status))
			store_failure = b->status;
	}
	return 0;
}

/*
 * Answers a batch the engine refused, status its failure. The store's
 * message is the store's last one, whatever thread and tenant it was
 * about, so no client is ever shown it: a failure of the batch's own
 * (handlers_submit_group retried it alone) is told naming the batch's own
 * tenant only, and the store's message goes to the log, for the operator.
 * A store-wide failure is told by its code, naming no tenant; for
 * TALLY_E_BUSY (the memtables are full while flushes fail) with the failing
 * flush's error, from the store's stats.
 */
static void ingest_refused(server *s, conn *c, const pending_ingest *p, int status, bool live)
{
	if (!ingest_failure_alone(status) && !ingest_failure_store_wide(status)) {
		char why[TALLY_ERRMSG_SIZE]; /* the engine's other threads may be writing it */
		tally_store_errmsg_copy(s->store, why, sizeof(why));
		log_warn("ingest for tenant %s refused: %s (the store's last message: %s)",
			 p->tenant, tally_strerror(status), why);
	}
	if (!live) {
		server_request_dropped(s, p->slot, p->gen, p->frame_bytes);
		return;
	}
	int code = code_of_engine_error(status);
	tally_stats stats;
	if (!ingest_failure_store_wide(status))
		conn_respond_error(s, c, p->request_id, p->frame_bytes, code, retry_after_of(code),
				   "ingest refused for tenant %s: %s", p->tenant,
				   tally_strerror(status));
	else if (status == TALLY_E_BUSY && !tally_store_stats(s->store, &stats) &&
		 stats.flush_failing)
		conn_respond_error(s, c, p->request_id, p->frame_bytes, code, retry_after_of(code),
				   "ingest refused: %s: the memtables are full and the last "
				   "flush failed (%s); nothing of this batch was stored: retry "
				   "once a flush succeeds", tally_strerror(status),
				   tally_strerror(stats.flush_failing));
	else
		conn_respond_error(s, c, p->request_id, p->frame_bytes, code, retry_after_of(code),
				   "ingest refused: %s", tally_strerror(status));
}

/* Whether a WAL commit failed: the store then refuses writes for good. */
static bool handlers_commit_failed(server *s)
{
	pthread_mutex_lock(&s->commit_lock);
	bool failed = s->commit_error != 0;
	pthread_mutex_unlock(&s->commit_lock);
	return failed;
}

void handlers_submit_done(server *s)
{
	pthread_mutex_lock(&s->submit_lock);
	int rc = s->submit_rc;
	uint64_t lsn = s->submit_lsn;
	pthread_mutex_unlock(&s->submit_lock);
	s->submit_busy = false;
	size_t n = s->submitting.len;
	tally_batch *batches = s->submit_batches;
	for (size_t i = 0; i < n; i++) {
		pending_ingest p = *queue_front(&s->submitting);
		queue_pop(&s->submitting);
		/* The engine copied what it keeps: the request can go now. */
		pb_arena_free(p.request);
		p.request = NULL;
		free(p.events);
		p.events = NULL;
		conn *c = &s->conns[p.slot];
		bool live = c->fd >= 0 && c->gen == p.gen && !c->close_submitted;
		int status = rc ? rc : batches[i].status;
		if (status) {
			ingest_refused(s, c, &p, status, live);
			pending_free(&p);
			continue;
		}
		p.commit_lsn = lsn;
		if (queue_push(&s->acks, &p)) {
			/* Cannot keep it: the client hears it was not acknowledged
			 * (it may be durable; a retry is then a DUPLICATE). */
			if (live)
				conn_respond_error(s, c, p.request_id, p.frame_bytes, ERR_UNAVAILABLE,
						   RETRY_AFTER_MS, "out of memory waiting for durability; retry");
			else
				server_request_dropped(s, p.slot, p.gen, p.frame_bytes);
			pending_free(&p);
		}
	}
	/* A group that appended nothing new (all duplicates, say) may already
	 * be durable: ack it now, no commit event would come for it. Nor would
	 * one come after the WAL failed: the committer reported its failure
	 * once, perhaps before this group came back with a commit LSN it had
	 * already failed on. Then the group is refused now. */
	if (s->acks.len && (lsn <= tally_durable_lsn(s->store) || handlers_commit_failed(s)))
		handlers_ack_durable(s);
	else if (s->acks.len)
		server_commit_request(s, lsn);
	/* What arrived meanwhile goes next. */
	handlers_submit_pass(s);
}

static void send_ack(server *s, conn *c, pending_ingest *p)
{
	Tally__V1__IngestAck ack = TALLY__V1__INGEST_ACK__INIT;
	Tally__V1__IngestAck__Result *results = malloc((p->count ? p->count : 1) * sizeof(*results));
	uint32_t *reasons = malloc((p->count ? p->count : 1) * sizeof(*reasons));
	if (!results || !reasons) {
		free(results);
		free(reasons);
		conn_respond_error(s, c, p->request_id, p->frame_bytes, ERR_UNAVAILABLE, RETRY_AFTER_MS,
				   "the batch is durable but its ack could not be built (out of memory): resend it, every event will be a DUPLICATE");
		return;
	}
	uint32_t counts[4] = {0};
	for (size_t i = 0; i < p->count; i++) {
		results[i] = (Tally__V1__IngestAck__Result)p->results[i].code;
		reasons[i] = p->results[i].reason;
		counts[p->results[i].code & 3]++;
	}
	ack.n_result = p->count;
	ack.result = results;
	ack.n_reason = counts[TALLY_REJECTED] ? p->count : 0;
	ack.reason = reasons;
	ack.accepted = counts[TALLY_ACCEPTED];
	ack.duplicate = counts[TALLY_DUPLICATE];
	ack.conflict = counts[TALLY_CONFLICT];
	ack.rejected = counts[TALLY_REJECTED];
	metrics_add(s->metrics, M_EVENTS_ACCEPTED, ack.accepted);
	metrics_add(s->metrics, M_EVENTS_DUPLICATE, ack.duplicate);
	metrics_add(s->metrics, M_EVENTS_CONFLICT, ack.conflict);
	metrics_add(s->metrics, M_EVENTS_REJECTED, ack.rejected);
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.request_id = p->request_id;
	resp.body_case = TALLY__V1__RESPONSE__BODY_INGEST;
	resp.ingest = &ack;
	conn_respond(s, c, &resp, p->frame_bytes);
	metrics_observe_us(s->metrics, H_INGEST_ACK_US, (uint64_t)(server_now_us() - p->received_us));
	free(results);
	free(reasons);
}

void handlers_ack_durable(server *s)
{
	uint64_t durable = tally_durable_lsn(s->store);
	pthread_mutex_lock(&s->commit_lock);
	int error = s->commit_error;
	pthread_mutex_unlock(&s->commit_lock);
	pending_ingest *p;
	while ((p = queue_front(&s->acks)) && (p->commit_lsn <= durable || error)) {
		conn *c = &s->conns[p->slot];
		bool live = c->fd >= 0 && c->gen == p->gen && !c->close_submitted;
		if (live && p->commit_lsn <= durable)
			send_ack(s, c, p);
		else if (live)
			conn_respond_error(s, c, p->request_id, p->frame_bytes, ERR_INTERNAL, 0,
					   "not acknowledged: the write-ahead log failed (%s); the server refuses writes until restarted",
					   tally_strerror(error));
		else
			server_request_dropped(s, p->slot, p->gen, p->frame_bytes);
		if (live && c->closing && !c->inflight && !c->out_len && !c->sending)
			conn_close_after_send(s, c);
		pending_free(p);
		queue_pop(&s->acks);
	}
}

/* ---- queries and listings (worker pool) ----------------------------------- */

typedef struct read_job {
	tally_store *store;
	uint32_t frame_limit;
	metrics *metrics;
	Tally__V1__Request *request;
	bool admin; /* the request came with an admin key */
	char tenant[TALLY_TENANT_SIZE_MAX + 1];
	char key_id[KEY_ID_SIZE];
} read_job;

/*
 * The Error for a query or listing that failed with rc. A failure of the
 * request's own (a bad argument, a named limit) is told as the engine
 * worded it. Any other (an I/O error, a corrupt segment, out of memory) is
 * the server's: its message names files of the data directory, so a tenant
 * key is told only its code and the log has the whole message; an admin
 * key is told the message too.
 */
static void read_failed(worker_job *job, const read_job *r, const char *what, int rc, char *errmsg)
{
	int code = code_of_engine_error(rc);
	if (!errmsg[0])
		snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s", tally_strerror(rc));
	metrics_error(r->metrics, code);
	if (code != ERR_BAD_REQUEST && code != ERR_TOO_LARGE) {
		log_error("%s for tenant %s (key %s, request %llu) failed: %s", what, r->tenant,
			  r->key_id, (unsigned long long)job->request_id, errmsg);
		if (!r->admin)
			snprintf(errmsg, TALLY_ERRMSG_SIZE,
				 "%s failed: %s (the server's log has the details, under request %llu)",
				 what, tally_strerror(rc), (unsigned long long)job->request_id);
	}
	job->frame = error_frame(job->request_id, code, errmsg, r->frame_limit, &job->frame_size);
}

static void run_query(worker_job *job)
{
	read_job *r = job->arg;
	const Tally__V1__Query *m = r->request->query;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	query_storage *st = malloc(sizeof(*st));
	tally_query q;
	tally_result *result = NULL;
	int rc = st ? convert_query(m, &q, st, errmsg) : -ENOMEM;
	if (!rc)
		rc = tally_query_run(r->store, r->tenant, &q, &result, errmsg);
	if (rc) {
		read_failed(job, r, "query", rc, errmsg);
	} else {
		Tally__V1__QueryResult qr;
		if (convert_query_result(m, result, &qr) == 0) {
			Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
			resp.request_id = job->request_id;
			resp.body_case = TALLY__V1__RESPONSE__BODY_QUERY;
			resp.query = &qr;
			job->frame = response_frame(&resp, r->frame_limit, r->metrics, &job->frame_size);
			convert_query_result_free(&qr);
		}
	}
	tally_result_free(result);
	free(st);
	metrics_observe_us(r->metrics, H_QUERY_US, (uint64_t)(server_now_us() - job->started_us));
	pb_arena_free(r->request);
	free(r);
}

/* Listed events as protocol Events (copies: the engine's strings live only
 * during the callback). */
typedef struct event_list {
	Tally__V1__Event *events;
	Tally__V1__Event **ptrs;
	uint8_t *bytes; /* every string of the page, back to back */
	size_t count, cap, bytes_len, bytes_cap;
} event_list;

/* Adds e to the list: 0, or -ENOMEM, which stops the listing and is what
 * tally_list_events then returns. */
static int list_collect(void *ctx, const tally_event *e)
{
	event_list *l = ctx;
	if (l->count == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		Tally__V1__Event *ev = realloc(l->events, cap * sizeof(*ev));
		if (!ev)
			return -ENOMEM;
		l->events = ev;
		l->cap = cap;
	}
	const tally_str *strs[6] = {&e->event_id, &e->type, &e->project, &e->agent, &e->model, &e->user};
	size_t need = 0;
	for (int k = 0; k < 6; k++)
		need += strs[k]->len;
	if (l->bytes_len + need > l->bytes_cap) {
		size_t cap = l->bytes_cap ? l->bytes_cap : 1 << 16;
		while (cap < l->bytes_len + need)
			cap *= 2;
		uint8_t *b = realloc(l->bytes, cap);
		if (!b)
			return -ENOMEM;
		l->bytes = b;
		l->bytes_cap = cap;
	}
	Tally__V1__Event *out = &l->events[l->count++];
	tally__v1__event__init(out);
	/* Strings are stored as offsets now and turned into pointers at the
	 * end, since the byte buffer may still move. */
	ProtobufCBinaryData *fields[6] = {&out->event_id, &out->type, &out->project, &out->agent, &out->model, &out->user};
	for (int k = 0; k < 6; k++) {
		if (strs[k]->len)
			memcpy(l->bytes + l->bytes_len, strs[k]->ptr, strs[k]->len);
		fields[k]->data = (uint8_t *)(uintptr_t)l->bytes_len;
		fields[k]->len = strs[k]->len;
		l->bytes_len += strs[k]->len;
	}
	out->time_us = e->time_us;
	out->status = e->status;
	out->duration_ms = e->duration_ms;
	out->tokens_in = e->tokens_in;
	out->tokens_out = e->tokens_out;
	out->cost_micros = e->cost_micros;
	return 0;
}

static void run_list_events(worker_job *job)
{
	read_job *r = job->arg;
	const Tally__V1__ListEvents *m = r->request->list_events;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	int rc = 0;
	query_storage *st = malloc(sizeof(*st));
	if (!st)
		rc = -ENOMEM;
	/* Filters through the query converter: one set of checks. */
	Tally__V1__Query fq = TALLY__V1__QUERY__INIT;
	fq.n_filters = m->n_filters;
	fq.filters = m->filters;
	tally_query q;
	if (!rc)
		rc = convert_query(&fq, &q, st, errmsg);
	tally_list_request lr = {0};
	lr.from_us = m->from_us;
	lr.to_us = m->to_us;
	lr.filters = rc ? NULL : q.filters;
	lr.filter_count = rc ? 0 : q.filter_count;
	lr.user = (tally_str){(const char *)m->user.data, (uint32_t)m->user.len};
	lr.cursor = m->cursor;
	lr.limit = m->limit;
	if (!rc && m->user.len > TALLY_DIMENSION_SIZE_MAX)
		rc = server_fail(errmsg, TALLY_E_INVALID, "user: longer than %d bytes", TALLY_DIMENSION_SIZE_MAX);
	event_list l = {0};
	char cursor[TALLY_CURSOR_SIZE] = "";
	if (!rc)
		rc = tally_list_events(r->store, r->tenant, &lr, list_collect, &l, cursor, errmsg);
	if (!rc)
		l.ptrs = malloc((l.count ? l.count : 1) * sizeof(*l.ptrs));
	if (!rc && !l.ptrs)
		rc = -ENOMEM;
	if (rc) {
		read_failed(job, r, "list_events", rc, errmsg);
	} else {
		for (size_t i = 0; i < l.count; i++) {
			Tally__V1__Event *e = &l.events[i];
			ProtobufCBinaryData *fields[6] = {&e->event_id, &e->type, &e->project, &e->agent, &e->model, &e->user};
			for (int k = 0; k < 6; k++)
				fields[k]->data = l.bytes + (uintptr_t)fields[k]->data;
			l.ptrs[i] = e;
		}
		Tally__V1__EventPage page = TALLY__V1__EVENT_PAGE__INIT;
		page.n_events = l.count;
		page.events = l.ptrs;
		page.next_cursor = cursor;
		Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
		resp.request_id = job->request_id;
		resp.body_case = TALLY__V1__RESPONSE__BODY_EVENTS;
		resp.events = &page;
		job->frame = response_frame(&resp, r->frame_limit, r->metrics, &job->frame_size);
	}
	free(l.events);
	free(l.ptrs);
	free(l.bytes);
	free(st);
	metrics_observe_us(r->metrics, H_LIST_EVENTS_US, (uint64_t)(server_now_us() - job->started_us));
	pb_arena_free(r->request);
	free(r);
}

static void on_read_request(server *s, conn *c, Tally__V1__Request *req, uint64_t fb, bool *kept)
{
	bool query = req->body_case == TALLY__V1__REQUEST__BODY_QUERY;
	const char *named = query ? req->query->tenant : req->list_events->tenant;
	read_job *r = calloc(1, sizeof(*r));
	worker_job *job = calloc(1, sizeof(*job));
	if (!r || !job) {
		free(r);
		free(job);
		conn_respond_error(s, c, req->request_id, fb, ERR_UNAVAILABLE, RETRY_AFTER_MS, "out of memory");
		return;
	}
	if (!scope_tenant(s, c, req->request_id, fb, named, NULL, query ? "query" : "list_events",
			  r->tenant)) {
		free(r);
		free(job);
		return;
	}
	r->store = s->store;
	r->admin = c->admin;
	snprintf(r->key_id, sizeof(r->key_id), "%s", c->key_id);
	r->frame_limit = s->config.frame_bytes_max;
	r->metrics = s->metrics;
	r->request = req;
	job->fn = query ? run_query : run_list_events;
	job->serial = query; /* the engine runs one aggregate query of a tenant at a time */
	job->arg = r;
	job->slot = (uint32_t)(c - s->conns);
	job->gen = c->gen;
	job->request_id = req->request_id;
	job->frame_bytes = fb;
	job->started_us = server_now_us();
	memcpy(job->lane, r->tenant, sizeof(job->lane));
	if (worker_pool_submit(s->workers, job)) {
		free(r);
		free(job);
		conn_respond_error(s, c, req->request_id, fb, ERR_UNAVAILABLE, RETRY_AFTER_MS, "out of memory");
		return;
	}
	*kept = true;
}

/* ---- administration (loop thread) ------------------------------------------ */

static void respond_body(server *s, conn *c, uint64_t request_id, uint64_t fb, Tally__V1__Response *resp)
{
	resp->request_id = request_id;
	conn_respond(s, c, resp, fb);
}

static void on_create_tenant(server *s, conn *c, Tally__V1__Request *req, uint64_t fb)
{
	const char *name = req->create_tenant->name;
	char errmsg[TALLY_ERRMSG_SIZE];
	int rc = tenants_create(s->tenants, name, errmsg);
	if (rc) {
		tenant_error_respond(s, c, req->request_id, fb, rc, errmsg);
		return;
	}
	char key[KEY_TEXT_SIZE], key_id[KEY_ID_SIZE];
	if ((rc = keys_issue(s->keys, name, key, key_id, errmsg))) {
		int code = rc == TALLY_E_LIMIT ? ERR_RESOURCE_EXHAUSTED : error_code_of_failure(rc);
		conn_respond_error(s, c, req->request_id, fb, code, retry_after_of(code),
				   "tenant %s was created, but its key could not be issued (%s): issue one with IssueKey",
				   name, errmsg);
		return;
	}
	log_info("admin key %s created tenant %s with key %s", c->key_id, name, key_id);
	Tally__V1__TenantCreated tc = TALLY__V1__TENANT_CREATED__INIT;
	tc.name = (char *)name;
	tc.api_key = key;
	tc.key_id = key_id;
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.body_case = TALLY__V1__RESPONSE__BODY_TENANT_CREATED;
	resp.tenant_created = &tc;
	respond_body(s, c, req->request_id, fb, &resp);
	OPENSSL_cleanse(key, sizeof(key));
}

/* Checks a ListTenants or ListKeys page's limit; answers BAD_REQUEST if it
 * is over LIST_ENTRIES_PAGE_MAX. */
static bool list_limit_valid(server *s, conn *c, uint64_t request_id, uint64_t fb, uint32_t limit)
{
	if (limit <= LIST_ENTRIES_PAGE_MAX)
		return true;
	conn_respond_error(s, c, request_id, fb, ERR_BAD_REQUEST, 0,
			   "limit must be 1 to %u entries, or 0 for all of them", LIST_ENTRIES_PAGE_MAX);
	return false;
}

static void on_list_tenants(server *s, conn *c, Tally__V1__Request *req, uint64_t fb)
{
	const Tally__V1__ListTenants *m = req->list_tenants;
	const char *after = m->after ? m->after : "";
	if (!list_limit_valid(s, c, req->request_id, fb, m->limit))
		return;
	size_t n, nkeys;
	const tenant_entry *list = tenants_list(s->tenants, &n);
	const key_entry *keys = keys_list(s->keys, &nkeys);
	/* The page: entries [first, end) in creation order. */
	size_t first = 0;
	if (after[0]) {
		const tenant_entry *a = tenants_find(s->tenants, after);
		if (!a) {
			conn_respond_error(s, c, req->request_id, fb, ERR_BAD_REQUEST, 0,
					   "no tenant '%.80s' to list after", after);
			return;
		}
		first = (size_t)(a - list) + 1;
	}
	size_t end = m->limit && n - first > m->limit ? first + m->limit : n;
	size_t count = end - first;
	Tally__V1__TenantInfo *infos = calloc(count ? count : 1, sizeof(*infos));
	Tally__V1__TenantInfo **ptrs = calloc(count ? count : 1, sizeof(*ptrs));
	if (!infos || !ptrs) {
		free(infos);
		free(ptrs);
		conn_respond_error(s, c, req->request_id, fb, ERR_UNAVAILABLE, RETRY_AFTER_MS, "out of memory");
		return;
	}
	for (size_t i = 0; i < count; i++) {
		tally__v1__tenant_info__init(&infos[i]);
		infos[i].name = (char *)list[first + i].name;
		infos[i].suspended = list[first + i].suspended;
		ptrs[i] = &infos[i];
	}
	for (size_t k = 0; k < nkeys; k++) {
		const tenant_entry *t = keys[k].tenant[0] && !keys[k].revoked ? tenants_find(s->tenants, keys[k].tenant) : NULL;
		if (t && (size_t)(t - list) >= first && (size_t)(t - list) < end)
			infos[t - list - first].active_keys++;
	}
	Tally__V1__TenantList tl = TALLY__V1__TENANT_LIST__INIT;
	tl.n_tenants = count;
	tl.tenants = ptrs;
	tl.next_after = end < n ? (char *)list[end - 1].name : "";
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.body_case = TALLY__V1__RESPONSE__BODY_TENANTS;
	resp.tenants = &tl;
	respond_body(s, c, req->request_id, fb, &resp);
	free(infos);
	free(ptrs);
}

static void on_set_tenant_state(server *s, conn *c, Tally__V1__Request *req, uint64_t fb)
{
	const Tally__V1__SetTenantState *m = req->set_tenant_state;
	char errmsg[TALLY_ERRMSG_SIZE];
	int rc = tenants_set_suspended(s->tenants, m->name, m->suspended, errmsg);
	if (rc && rc != TALLY_E_NOTFOUND) {
		s->auth_generation++; /* the tenant is left suspended: its conns re-check */
		log_error("admin key %s: %s tenant %s failed, the tenant is left suspended: %s",
			  c->key_id, m->suspended ? "suspending" : "resuming", m->name, errmsg);
		int code = error_code_of_failure(rc);
		conn_respond_error(s, c, req->request_id, fb, code, retry_after_of(code),
				   "%s; tenant %s is suspended until it is set again", errmsg, m->name);
		return;
	}
	if (rc) {
		conn_respond_error(s, c, req->request_id, fb, ERR_BAD_REQUEST, 0, "%s", errmsg);
		return;
	}
	s->auth_generation++; /* every conn of the tenant re-checks on its next request */
	log_info("admin key %s %s tenant %s", c->key_id, m->suspended ? "suspended" : "resumed", m->name);
	Tally__V1__TenantStateSet set = TALLY__V1__TENANT_STATE_SET__INIT;
	set.name = m->name;
	set.suspended = m->suspended;
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.body_case = TALLY__V1__RESPONSE__BODY_TENANT_STATE;
	resp.tenant_state = &set;
	respond_body(s, c, req->request_id, fb, &resp);
}

static void on_issue_key(server *s, conn *c, Tally__V1__Request *req, uint64_t fb)
{
	const char *tenant = req->issue_key->tenant ? req->issue_key->tenant : "";
	if (tenant[0] && !tenants_find(s->tenants, tenant)) {
		conn_respond_error(s, c, req->request_id, fb, ERR_BAD_REQUEST, 0, "no tenant %.80s", tenant);
		return;
	}
	char key[KEY_TEXT_SIZE], key_id[KEY_ID_SIZE], errmsg[TALLY_ERRMSG_SIZE];
	/* A key only for a tenant that is durable. */
	int rc = tenants_commit(s->tenants, errmsg);
	if (rc) {
		int code = error_code_of_failure(rc);
		conn_respond_error(s, c, req->request_id, fb, code, retry_after_of(code), "%s", errmsg);
		return;
	}
	rc = keys_issue(s->keys, tenant, key, key_id, errmsg);
	if (rc) {
		int code = rc == TALLY_E_LIMIT ? ERR_RESOURCE_EXHAUSTED : error_code_of_failure(rc);
		conn_respond_error(s, c, req->request_id, fb, code, retry_after_of(code), "%s",
				   rc == TALLY_E_LIMIT ? "too many keys" : errmsg);
		return;
	}
	log_info("admin key %s issued key %s for %s", c->key_id, key_id, tenant[0] ? tenant : "(admin)");
	Tally__V1__KeyIssued ki = TALLY__V1__KEY_ISSUED__INIT;
	ki.key_id = key_id;
	ki.api_key = key;
	ki.tenant = (char *)tenant;
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.body_case = TALLY__V1__RESPONSE__BODY_KEY_ISSUED;
	resp.key_issued = &ki;
	respond_body(s, c, req->request_id, fb, &resp);
	OPENSSL_cleanse(key, sizeof(key));
}

static void on_list_keys(server *s, conn *c, Tally__V1__Request *req, uint64_t fb)
{
	const Tally__V1__ListKeys *m = req->list_keys;
	const char *tenant = m->tenant ? m->tenant : "";
	const char *after = m->after ? m->after : "";
	if (!list_limit_valid(s, c, req->request_id, fb, m->limit))
		return;
	size_t n;
	const key_entry *keys = keys_list(s->keys, &n);
	/* The page: the listed keys (not ephemeral, of tenant if named) after
	 * the key `after`, in issue order, at most limit of them. */
	size_t i = 0;
	if (after[0]) {
		while (i < n && strcmp(keys[i].id, after) != 0)
			i++;
		if (i == n || keys[i].ephemeral) {
			conn_respond_error(s, c, req->request_id, fb, ERR_BAD_REQUEST, 0,
					   "no key %.40s to list after", after);
			return;
		}
		i++;
	}
	size_t room = m->limit ? m->limit : n;
	size_t slots = room < n ? room : n;
	Tally__V1__KeyInfo *infos = calloc(slots ? slots : 1, sizeof(*infos));
	Tally__V1__KeyInfo **ptrs = calloc(slots ? slots : 1, sizeof(*ptrs));
	if (!infos || !ptrs) {
		free(infos);
		free(ptrs);
		conn_respond_error(s, c, req->request_id, fb, ERR_UNAVAILABLE, RETRY_AFTER_MS, "out of memory");
		return;
	}
	size_t count = 0;
	bool more = false;
	for (; i < n && !more; i++) {
		if (keys[i].ephemeral || (tenant[0] && strcmp(keys[i].tenant, tenant) != 0))
			continue;
		if (count == room) {
			more = true;
			break;
		}
		tally__v1__key_info__init(&infos[count]);
		infos[count].key_id = (char *)keys[i].id;
		infos[count].tenant = (char *)keys[i].tenant;
		infos[count].created_us = keys[i].created_us;
		infos[count].revoked = keys[i].revoked;
		ptrs[count] = &infos[count];
		count++;
	}
	Tally__V1__KeyList kl = TALLY__V1__KEY_LIST__INIT;
	kl.n_keys = count;
	kl.keys = ptrs;
	kl.next_after = more ? infos[count - 1].key_id : "";
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.body_case = TALLY__V1__RESPONSE__BODY_KEYS;
	resp.keys = &kl;
	respond_body(s, c, req->request_id, fb, &resp);
	free(infos);
	free(ptrs);
}

/* Whether the key `id` is the only live admin key that lasts (an ephemeral
 * one is gone at the next start): revoking it would leave no way to
 * administer the server, since a start issues one only into an empty
 * key list. */
static bool last_admin_key(const keystore *ks, const char *id)
{
	size_t n;
	const key_entry *keys = keys_list(ks, &n);
	bool target = false;
	size_t others = 0;
	for (size_t i = 0; i < n; i++) {
		const key_entry *e = &keys[i];
		if (e->tenant[0] || e->revoked || e->ephemeral)
			continue;
		if (strcmp(e->id, id) == 0)
			target = true;
		else
			others++;
	}
	return target && others == 0;
}

static void on_revoke_key(server *s, conn *c, Tally__V1__Request *req, uint64_t fb)
{
	const char *id = req->revoke_key->key_id ? req->revoke_key->key_id : "";
	if (last_admin_key(s->keys, id)) {
		conn_respond_error(s, c, req->request_id, fb, ERR_BAD_REQUEST, 0,
				   "key %s is the last admin key: issue another admin key (IssueKey with no "
				   "tenant) before revoking it", id);
		return;
	}
	char errmsg[TALLY_ERRMSG_SIZE];
	int rc = keys_revoke(s->keys, id, errmsg);
	if (rc == TALLY_E_NOTFOUND) {
		conn_respond_error(s, c, req->request_id, fb, ERR_BAD_REQUEST, 0, "no key %.40s", id);
		return;
	}
	if (rc) {
		s->auth_generation++; /* refused from now on all the same: conns re-check */
		log_error("admin key %s: revoking key %s failed; it is refused from now on, but "
			  "keys.json may still hold it live: %s", c->key_id, id, errmsg);
		int code = error_code_of_failure(rc);
		conn_respond_error(s, c, req->request_id, fb, code, retry_after_of(code),
				   "%s; key %s is refused from now on, but keys.json may still hold it "
				   "live: revoke it again", errmsg, id);
		return;
	}
	s->auth_generation++; /* every conn re-checks its key on its next request */
	log_info("admin key %s revoked key %s", c->key_id, id);
	Tally__V1__KeyRevoked kr = TALLY__V1__KEY_REVOKED__INIT;
	kr.key_id = (char *)id;
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.body_case = TALLY__V1__RESPONSE__BODY_KEY_REVOKED;
	resp.key_revoked = &kr;
	respond_body(s, c, req->request_id, fb, &resp);
}

static void on_stats(server *s, conn *c, Tally__V1__Request *req, uint64_t fb)
{
	tally_stats st;
	int rc = tally_store_stats(s->store, &st);
	if (rc) {
		int code = error_code_of_failure(rc);
		conn_respond_error(s, c, req->request_id, fb, code, retry_after_of(code), "stats: %s",
				   tally_strerror(rc));
		return;
	}
	size_t tenants;
	tenants_list(s->tenants, &tenants);
	Tally__V1__Stats m = TALLY__V1__STATS__INIT;
	m.tenants = tenants;
	m.events_memtable = st.events_memtable;
	m.segment_files = st.segment_file_count;
	m.segment_rows = st.segment_rows;
	m.segment_bytes = st.segment_bytes;
	m.wal_bytes = st.wal_bytes;
	m.rollup_bytes = st.rollup_bytes;
	m.connections = s->conn_count;
	m.durable_lsn = st.durable_lsn;
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.body_case = TALLY__V1__RESPONSE__BODY_STATS;
	resp.stats = &m;
	respond_body(s, c, req->request_id, fb, &resp);
}

static void on_ping(server *s, conn *c, Tally__V1__Request *req, uint64_t fb)
{
	Tally__V1__Pong pong = TALLY__V1__PONG__INIT;
	pong.payload = req->ping->payload;
	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	resp.body_case = TALLY__V1__RESPONSE__BODY_PONG;
	resp.pong = &pong;
	respond_body(s, c, req->request_id, fb, &resp);
}

/* ---- dispatch --------------------------------------------------------------- */

static enum metric_counter counter_of(Tally__V1__Request__BodyCase body)
{
	switch (body) {
	case TALLY__V1__REQUEST__BODY_HELLO: return M_REQUESTS_HELLO;
	case TALLY__V1__REQUEST__BODY_INGEST: return M_REQUESTS_INGEST;
	case TALLY__V1__REQUEST__BODY_QUERY: return M_REQUESTS_QUERY;
	case TALLY__V1__REQUEST__BODY_LIST_EVENTS: return M_REQUESTS_LIST_EVENTS;
	case TALLY__V1__REQUEST__BODY_STATS: return M_REQUESTS_STATS;
	case TALLY__V1__REQUEST__BODY_PING: return M_REQUESTS_PING;
	case TALLY__V1__REQUEST__BODY_DAILY_USAGE:
	case TALLY__V1__REQUEST__BODY_CHANGED_DAYS: return M_REQUESTS_EXPORT;
	default: return M_REQUESTS_ADMIN;
	}
}

void handle_request(server *s, conn *c, Tally__V1__Request *req, uint64_t fb)
{
	bool kept = false; /* the request moved into a queue or a job */
	uint64_t id = req->request_id;
	Tally__V1__Request__BodyCase body = req->body_case;
	if (body != TALLY__V1__REQUEST__BODY__NOT_SET)
		metrics_add(s->metrics, counter_of(body), 1);
	if (c->authed && !handlers_auth_still_valid(s, c, id, fb)) {
		/* answered and closing: a revoked key's connection, whatever it
		 * sends (a request with no body too: before 2026-12-04 that was
		 * answered BAD_REQUEST first, and the connection stayed open) */
	} else if (body == TALLY__V1__REQUEST__BODY__NOT_SET) {
		conn_respond_error(s, c, id, fb, ERR_BAD_REQUEST, 0, "a request with no body (or of a type this server does not know)");
	} else if (body == TALLY__V1__REQUEST__BODY_PING) {
		on_ping(s, c, req, fb);
	} else if (body == TALLY__V1__REQUEST__BODY_HELLO) {
		on_hello(s, c, req, fb);
	} else if (!c->authed) {
		conn_respond_error(s, c, id, fb, ERR_UNAUTHENTICATED, 0, "send Hello with an API key first");
	} else if (body == TALLY__V1__REQUEST__BODY_INGEST) {
		if (atomic_load(&s->stopping))
			conn_respond_error(s, c, id, fb, ERR_UNAVAILABLE, RETRY_AFTER_MS, "the server is stopping");
		else
			on_ingest(s, c, req, fb, &kept);
	} else if (body == TALLY__V1__REQUEST__BODY_QUERY || body == TALLY__V1__REQUEST__BODY_LIST_EVENTS) {
		on_read_request(s, c, req, fb, &kept);
	} else if (!c->admin) {
		conn_respond_error(s, c, id, fb, ERR_PERMISSION_DENIED, 0, "%s is for admin keys only",
				   body == TALLY__V1__REQUEST__BODY_STATS ? "stats"
				   : body == TALLY__V1__REQUEST__BODY_DAILY_USAGE || body == TALLY__V1__REQUEST__BODY_CHANGED_DAYS
					   ? "the billing export"
					   : "administration");
	} else {
		switch (body) {
		case TALLY__V1__REQUEST__BODY_CREATE_TENANT: on_create_tenant(s, c, req, fb); break;
		case TALLY__V1__REQUEST__BODY_LIST_TENANTS: on_list_tenants(s, c, req, fb); break;
		case TALLY__V1__REQUEST__BODY_SET_TENANT_STATE: on_set_tenant_state(s, c, req, fb); break;
		case TALLY__V1__REQUEST__BODY_ISSUE_KEY: on_issue_key(s, c, req, fb); break;
		case TALLY__V1__REQUEST__BODY_LIST_KEYS: on_list_keys(s, c, req, fb); break;
		case TALLY__V1__REQUEST__BODY_REVOKE_KEY: on_revoke_key(s, c, req, fb); break;
		case TALLY__V1__REQUEST__BODY_STATS: on_stats(s, c, req, fb); break;
		case TALLY__V1__REQUEST__BODY_DAILY_USAGE: on_daily_usage(s, c, req, fb); break;
		case TALLY__V1__REQUEST__BODY_CHANGED_DAYS: on_changed_days(s, c, req, fb); break;
		default:
			conn_respond_error(s, c, id, fb, ERR_BAD_REQUEST, 0, "unknown request type %d", (int)body);
		}
	}
	if (!kept)
		pb_arena_free(req);
}

/* ---- the registry's lazy writes ------------------------------------------------- */

/* Writes tenants created by ingest to tenants.json; a failure is logged
 * and left to the next save (their events are in the store). */
static void tenants_save(server *s)
{
	char errmsg[TALLY_ERRMSG_SIZE];
	if (tenants_commit(s->tenants, errmsg))
		log_error("tenant registry: %s (retrying; the tenants' events are safe in the store)", errmsg);
}

void handlers_save_tenants(server *s)
{
	int64_t now = server_now_us();
	if (now - s->tenants_saved_us < TENANTS_SAVE_INTERVAL_US)
		return;
	tenants_save(s);
	s->tenants_saved_us = now;
}

static void add_store_tenant(void *ctx, const char *name)
{
	tenant_registry *r = ctx;
	if (!tenants_find(r, name) && tenants_name_valid(name))
		tenants_add_pending(r, name, NULL);
}

void handlers_reconcile_tenants(server *s)
{
	size_t before;
	tenants_list(s->tenants, &before);
	tally_tenants(s->store, add_store_tenant, s->tenants);
	size_t after;
	tenants_list(s->tenants, &after);
	if (after == before)
		return;
	log_info("tenant registry: %zu tenant(s) created by ingest before the last stop added from the store",
		 after - before);
	/* Not a reason to refuse the start (a full disk, say): the store holds
	 * them, the periodic save retries, and every start adds them again. */
	tenants_save(s);
}

/* ---- first start ------------------------------------------------------------ */

/*
 * The first admin key reaches its operator through DIR/admin.key, and is
 * handed over before keys.json records it: written to admin.key.tmp (mode
 * 0600, fsynced), then recorded, then renamed to admin.key (directory
 * fsynced). A start that dies anywhere in between leaves either no
 * recorded key (the next start issues one) or a recorded key whose text
 * is in admin.key.tmp (the next start finishes the rename): never a live
 * admin key whose text no one has.
 */

#define ADMIN_KEY_PATH_SIZE 4200

/* DIR/admin.key<suffix> into path (ADMIN_KEY_PATH_SIZE bytes). */
static void admin_key_path(const server *s, const char *suffix, char *path)
{
	snprintf(path, ADMIN_KEY_PATH_SIZE, "%s/%s%s", s->config.data_dir, ADMIN_KEY_FILE, suffix);
}

/* The io the store and the key files use. */
static const tally_io *admin_io(const server *s)
{
	return s->config.io ? s->config.io : tally_io_default();
}

/* Writes key to DIR/admin.key.tmp, mode 0600, fsynced (keys_issue_delivered's
 * hand-over). */
static int admin_key_stage(void *ctx, const char *key, char *errmsg)
{
	server *s = ctx;
	const tally_io *io = admin_io(s);
	char tmp[ADMIN_KEY_PATH_SIZE];
	admin_key_path(s, ".tmp", tmp);
	int fd = io->open(io, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return server_fail(errmsg, fd, "create %s: %s", tmp, strerror(-fd));
	char line[KEY_TEXT_SIZE + 1];
	int len = snprintf(line, sizeof(line), "%s\n", key);
	int rc = tally_io_write_all(io, fd, line, (size_t)len, 0);
	if (!rc)
		rc = io->fsync(io, fd);
	io->close(io, fd);
	OPENSSL_cleanse(line, sizeof(line));
	if (rc)
		return server_fail(errmsg, rc, "write %s: %s", tmp, strerror(-rc));
	return 0;
}

/* Renames admin.key.tmp to admin.key and fsyncs the directory. */
static int admin_key_publish(server *s, char *errmsg)
{
	const tally_io *io = admin_io(s);
	char tmp[ADMIN_KEY_PATH_SIZE], path[ADMIN_KEY_PATH_SIZE];
	admin_key_path(s, ".tmp", tmp);
	admin_key_path(s, "", path);
	int rc = io->rename(io, tmp, path);
	if (!rc)
		rc = io->fsync_dir(io, s->config.data_dir);
	if (rc)
		return server_fail(errmsg, rc, "write %s: %s", path, strerror(-rc));
	return 0;
}

/* The key text admin.key.tmp holds (key, KEY_TEXT_SIZE): 1, or 0 when it
 * is absent or holds no whole key. */
static int admin_key_staged(server *s, char *key)
{
	char tmp[ADMIN_KEY_PATH_SIZE];
	admin_key_path(s, ".tmp", tmp);
	int fd = open(tmp, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char line[KEY_TEXT_SIZE + 1];
	ssize_t n = read(fd, line, sizeof(line));
	close(fd);
	int whole = n == KEY_TEXT_SIZE && line[KEY_TEXT_SIZE - 1] == '\n';
	if (whole) {
		memcpy(key, line, KEY_TEXT_SIZE - 1);
		key[KEY_TEXT_SIZE - 1] = 0;
	}
	OPENSSL_cleanse(line, sizeof(line));
	return whole;
}

int handlers_bootstrap_admin(server *s, char *errmsg)
{
	char path[ADMIN_KEY_PATH_SIZE];
	admin_key_path(s, "", path);
	size_t n, live_admin = 0;
	const key_entry *keys = keys_list(s->keys, &n);
	for (size_t i = 0; i < n; i++)
		live_admin += !keys[i].tenant[0] && !keys[i].revoked && !keys[i].ephemeral;
	struct stat sb;
	if (stat(path, &sb) == 0) {
		/* The last admin key is never revoked: with none live, keys.json
		 * is not the one that went with this directory. */
		if (!live_admin)
			return server_fail(errmsg, TALLY_E_CORRUPT,
					   "%s exists but %s/keys.json holds no live admin key (missing or "
					   "replaced?): restore keys.json from a backup, or move admin.key "
					   "away to have a new admin key issued",
					   path, s->config.data_dir);
		return 0;
	}
	char key[KEY_TEXT_SIZE], key_id[KEY_ID_SIZE];
	if (admin_key_staged(s, key)) {
		const key_entry *e = keys_lookup(s->keys, key);
		OPENSSL_cleanse(key, sizeof(key));
		if (e && !e->tenant[0]) {
			snprintf(key_id, sizeof(key_id), "%s", e->id);
			int rc = admin_key_publish(s, errmsg);
			if (!rc)
				log_info("an interrupted first start finished: admin key %s is in %s (mode 0600)",
					 key_id, path);
			return rc;
		}
	}
	/* The only key, a live admin key, and no admin.key: before 2026-12-02
	 * a first start recorded its key before writing admin.key, and one
	 * that died between the two left this; or admin.key was deleted. Its
	 * text is nowhere tallyd can show it: revoked, and a new one issued. */
	if (n == 1 && live_admin == 1) {
		int rc = keys_revoke(s->keys, keys[0].id, errmsg);
		if (rc)
			return rc;
		log_warn("revoked admin key %s: %s is absent (an interrupted first start, or the file "
			 "was removed)", keys[0].id, path);
		live_admin = 0;
	}
	if (live_admin) {
		log_warn("%s is absent; %zu admin key(s) exist: use one of them, none is issued", path,
			 live_admin);
		return 0;
	}
	/* A first start, or no live admin key at all (only tenant keys and
	 * revoked ones): no one could administer the server. */
	int rc = keys_issue_delivered(s->keys, admin_key_stage, s, key, key_id, errmsg);
	OPENSSL_cleanse(key, sizeof(key));
	if (!rc)
		rc = admin_key_publish(s, errmsg);
	if (rc)
		return rc;
	if (n)
		log_warn("no live admin key: issued admin key %s into %s (mode 0600)", key_id, path);
	else
		log_info("first start: issued admin key %s into %s (mode 0600)", key_id, path);
	return 0;
}
