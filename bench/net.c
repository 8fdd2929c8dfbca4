/*
 * net.c — keys, sessions, pre-encoded batches and the protocol ingest of
 * the protocol benchmarks (contracts in net.h).
 *
 * NOTES ON THE INGEST
 *
 * 1. Nothing is built while timed. The batches are built, packed and
 *    unpacked before the sessions open (net_batches_build), so the timed
 *    part costs the client what any client pays per request: the packing
 *    inside tally_client_ingest_send, the write, the read of the ack.
 *
 * 2. One thread per connection, a blocking client each. A thread fills
 *    its connection up to `inflight` batches, then blocks in
 *    tally_client_ingest_recv for the next ack (the server may answer out
 *    of order; the request id names the batch). Batches are claimed in
 *    send order from one atomic counter, so the connections share the work
 *    the way a producer pool shares a queue.
 *
 * 3. Pacing (a rate): batch i is due at start + (events before it) / rate
 *    and is claimed only once due. A thread with nothing in flight sleeps
 *    until the next batch is due; one with batches in flight blocks for an
 *    ack, so a due batch may wait for that ack (a blocking client cannot
 *    wait for an ack and a clock at once) — or be taken by another
 *    connection that is idle. How late each batch left is measured against
 *    its schedule (send lag), so a run whose pacing slipped shows it.
 *
 * 4. Ack latency: from just before a batch's first send to the moment its
 *    ack was read (a retried batch keeps its first send time). Acks come
 *    only after the batch is durable on the server (fsync): that is the
 *    server's contract.
 *
 * 5. Backpressure: a batch refused with RESOURCE_EXHAUSTED or UNAVAILABLE
 *    is sent again after the server's retry_after_ms (capped) and counted
 *    in `retries`; a retry waiting keeps its place in the in-flight budget,
 *    so a connection never holds more than `inflight` batches. Any other
 *    Error, and any transport error, stops the run with the server's code
 *    and message.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "builder.h"
#include "common.h"
#include "net.h"


/* ---- keys and sessions ---------------------------------------------------------- */

int net_key_load(const char *key, const char *key_file, char *out, size_t size)
{
	if ((key != NULL) == (key_file != NULL)) {
		fprintf(stderr, "tally-bench: give the API key with exactly one of --key KEY or --key-file FILE "
			"(tallyd writes an admin key to DATA/admin.key on first start)\n");
		return 2;
	}
	if (key) {
		if (strlen(key) >= size || key[0] == 0) {
			fprintf(stderr, "tally-bench: --key: %s\n", key[0] ? "key too long" : "empty key");
			return 2;
		}
		snprintf(out, size, "%s", key);
		return 0;
	}
	FILE *f = fopen(key_file, "r");
	if (!f) {
		fprintf(stderr, "tally-bench: cannot open key file %s: %s\n", key_file, strerror(errno));
		return 2;
	}
	bool read = fgets(out, (int)size, f) != NULL;
	int read_errno = errno;
	bool failed = ferror(f);
	fclose(f);
	if (failed) {
		fprintf(stderr, "tally-bench: cannot read key file %s: %s\n", key_file, strerror(read_errno));
		return 2;
	}
	size_t n = read ? strlen(out) : 0;
	bool whole_line = n > 0 && out[n - 1] == '\n';
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' ' || out[n - 1] == '\t'))
		out[--n] = 0;
	if (n == 0) {
		fprintf(stderr, "tally-bench: key file %s holds no key on its first line\n", key_file);
		return 2;
	}
	if (!whole_line && n + 1 >= size) {
		fprintf(stderr, "tally-bench: key file %s: the key is longer than %zu bytes\n", key_file,
			size - 1);
		return 2;
	}
	return 0;
}

int net_session_open(const char *server, const char *key, const char *client_name,
		     tally_client **out, tally_session_info *info)
{
	char errmsg[TALLY_CLIENT_ERRMSG_SIZE] = "";
	int rc = tally_client_open(server, key, client_name, out, info, errmsg);
	if (rc) {
		fprintf(stderr, "tally-bench: %s%s\n", errmsg[0] ? errmsg : tally_client_strerror(rc),
			rc == -ECONNREFUSED ? " (is tallyd listening there?)" : "");
		return 1;
	}
	if ((rc = tally_client_set_timeout(*out, NET_TIMEOUT_MS))) {
		fprintf(stderr, "tally-bench: cannot set a %u ms timeout on the connection to %s: %s\n",
			NET_TIMEOUT_MS, server, tally_client_strerror(rc));
		tally_client_close(*out);
		*out = NULL;
		return 1;
	}
	return 0;
}

int net_server_probe(const char *address, const char *key, const char *key_file,
		     const char *client_name, uint32_t batch_events, net_server *out,
		     tally_client **session)
{
	memset(out, 0, sizeof(*out));
	out->address = address;
	if (session)
		*session = NULL;
	int rc = net_key_load(key, key_file, out->key, sizeof(out->key));
	if (rc)
		return rc;
	tally_client *c = NULL;
	if (net_session_open(address, out->key, client_name, &c, &out->info))
		return 1;
	const tally_client_limits *limits = &out->info.limits;
	out->frame_bytes_max = limits->frame_bytes_max ? limits->frame_bytes_max : FRAME_BYTES_MAX_DEFAULT;
	int status = 0;
	if (!out->info.admin) {
		fprintf(stderr, "tally-bench: the key is tenant %s's key; the benchmark names the tenant "
			"of each request, which needs an admin key (tallyd writes one to DATA/admin.key)\n",
			out->info.tenant);
		status = 2;
	} else if (limits->batch_events_max && batch_events > limits->batch_events_max) {
		fprintf(stderr, "tally-bench: --batch %" PRIu32 " is over the batch limit of %s (%" PRIu32
			" events)\n", batch_events, address, limits->batch_events_max);
		status = 2;
	}
	if (status || !session)
		tally_client_close(c);
	else
		*session = c;
	return status;
}

void net_failure_text(char *text, size_t size, const char *what, const tally_client *c, int rc)
{
	if (rc == TALLY_CLIENT_REFUSED) {
		const tally_client_error *e = tally_client_last_error(c);
		snprintf(text, size, "%s: refused by the server: %s: %s%s", what,
			 tally_client_error_code_name(e->code), e->message,
			 e->request_id == 0 ? " (about the connection; the server closed it)" : "");
	} else {
		snprintf(text, size, "%s: %s", what, tally_client_strerror(rc));
	}
}

/* ---- batches -------------------------------------------------------------------- */

static tally_client_str client_str(tally_str s)
{
	return (tally_client_str){.ptr = s.ptr, .len = s.len};
}

/* e as the builder takes it, with the live id and time of cut (net.h);
 * id_buffer (NET_ID_PREFIX_SIZE_MAX + e's id bytes) holds a prefixed id. */
static tally_client_event event_convert(const workload *w, const net_cut *cut, const tally_event *e,
					char *id_buffer)
{
	tally_client_event ce = {
		.event_id = client_str(e->event_id),
		.time_us = e->time_us,
		.type = client_str(e->type),
		.project = client_str(e->project),
		.agent = client_str(e->agent),
		.model = client_str(e->model),
		.user = client_str(e->user),
		.status = e->status,
		.duration_ms = e->duration_ms,
		.tokens_in = e->tokens_in,
		.tokens_out = e->tokens_out,
		.cost_micros = e->cost_micros,
	};
	if (cut->id_prefix) {
		size_t prefix = strlen(cut->id_prefix);
		memcpy(id_buffer, cut->id_prefix, prefix);
		memcpy(id_buffer + prefix, e->event_id.ptr, e->event_id.len);
		ce.event_id = (tally_client_str){.ptr = id_buffer, .len = (uint32_t)prefix + e->event_id.len};
	}
	if (cut->time_span_us > 0) {
		uint64_t u = workload_unique_index(w, e);
		ce.time_us = cut->time_base_us +
			     (int64_t)(u * (uint64_t)cut->time_span_us / w->unique_count);
	}
	return ce;
}

/* The builder's batch as an owned message appended to out (out->batch
 * holds *capacity entries, grown here when full). 0 or -ENOMEM. */
static int batch_keep(builder *b, uint32_t tenant, net_batches *out, uint64_t *capacity,
		      uint8_t **buffer, size_t *buffer_size)
{
	if (out->count == *capacity) {
		net_batch *grown = realloc(out->batch, sizeof(*grown) * (*capacity * 2 + 1));
		if (!grown)
			return -ENOMEM;
		out->batch = grown;
		*capacity = *capacity * 2 + 1;
	}
	Tally__V1__IngestBatch message;
	if (builder_message(b, &message))
		return -ENOMEM;
	size_t size = tally__v1__ingest_batch__get_packed_size(&message);
	if (size > *buffer_size) {
		uint8_t *grown = realloc(*buffer, size);
		if (!grown)
			return -ENOMEM;
		*buffer = grown;
		*buffer_size = size;
	}
	tally__v1__ingest_batch__pack(&message, *buffer);
	Tally__V1__IngestBatch *kept = tally__v1__ingest_batch__unpack(NULL, size, *buffer);
	if (!kept)
		return -ENOMEM; /* it was packed just now: only memory can fail */
	out->batch[out->count++] = (net_batch){
		.message = kept,
		.event_count = builder_count(b),
		.tenant = tenant,
		.events_before = out->event_count,
	};
	out->event_count += builder_count(b);
	out->encoded_bytes += size;
	return 0;
}

int net_batches_build(const workload *w, const net_cut *cut, net_batches *out, char *errmsg)
{
	memset(out, 0, sizeof(*out));
	assert(cut->batch_events >= 1);
	assert(!cut->id_prefix || strlen(cut->id_prefix) < NET_ID_PREFIX_SIZE_MAX);
	/* Every workload batch gives ceil(count / batch_events) batches, more
	 * only when the frame limit cuts one early: grown then. */
	uint64_t capacity = 0;
	for (uint64_t i = 0; i < w->batch_count; i++)
		capacity += (w->batches[i].count + cut->batch_events - 1) / cut->batch_events;
	out->batch = malloc(sizeof(*out->batch) * (capacity ? capacity : 1));
	builder b;
	builder_init(&b);
	uint8_t *buffer = NULL;
	size_t buffer_size = 0;
	int rc = out->batch ? 0 : -ENOMEM;
	char id_buffer[NET_ID_PREFIX_SIZE_MAX + TALLY_EVENT_ID_SIZE_MAX];
	for (uint64_t i = 0; !rc && i < w->batch_count; i++) {
		const workload_batch *wb = &w->batches[i];
		builder_reset(&b);
		if (builder_set_tenant(&b, w->tenant_names[wb->tenant])) {
			rc = -EINVAL; /* the workload's names are short: a broken invariant */
			break;
		}
		builder_set_create_tenant(&b, true);
		for (uint32_t k = 0; !rc && k < wb->count; k++) {
			tally_client_event e = event_convert(w, cut, &w->events[wb->first + k], id_buffer);
			uint32_t held = builder_count(&b);
			bool full = held == cut->batch_events ||
				    (held && builder_bytes_with(&b, &e) > cut->frame_bytes_max);
			if (full) {
				if ((rc = batch_keep(&b, wb->tenant, out, &capacity, &buffer, &buffer_size)))
					break;
				builder_reset(&b);
			}
			if (builder_bytes_with(&b, &e) > cut->frame_bytes_max) {
				snprintf(errmsg, NET_ERROR_SIZE,
					 "an event of tenant %s does not fit in one frame of %zu bytes",
					 w->tenant_names[wb->tenant], cut->frame_bytes_max);
				rc = -E2BIG;
				break;
			}
			if ((rc = builder_add(&b, &e)))
				break;
		}
		if (!rc && builder_count(&b)) {
			rc = batch_keep(&b, wb->tenant, out, &capacity, &buffer, &buffer_size);
		}
	}
	builder_free(&b);
	free(buffer);
	if (rc) {
		if (rc != -E2BIG)
			snprintf(errmsg, NET_ERROR_SIZE, "cannot build the batches: %s", strerror(-rc));
		net_batches_free(out);
	}
	return rc;
}

void net_batches_free(net_batches *b)
{
	for (uint64_t i = 0; b->batch && i < b->count; i++)
		tally__v1__ingest_batch__free_unpacked(b->batch[i].message, NULL);
	free(b->batch);
	memset(b, 0, sizeof(*b));
}

int net_workload_generate(workload *w, const workload_params *params, double *generate_s)
{
	fprintf(stderr, "tally-bench: generating %" PRIu64 " events for %" PRIu32 " tenants (seed %" PRIu64
		")...\n", params->event_count, params->tenant_count, params->seed);
	int64_t t0 = bench_clock_ns();
	int rc = workload_generate(w, params);
	if (rc) {
		fprintf(stderr, "tally-bench: cannot generate the workload: %s\n", strerror(-rc));
		return 1;
	}
	*generate_s = (double)(bench_clock_ns() - t0) / 1e9;
	return 0;
}

int net_batches_prepare(const workload *w, const net_cut *cut, net_batches *out, double *build_s)
{
	fprintf(stderr, "tally-bench: encoding %" PRIu64 " events into batches of up to %" PRIu32
		" events...\n", w->event_count, cut->batch_events);
	char errmsg[NET_ERROR_SIZE] = "";
	int64_t t0 = bench_clock_ns();
	if (net_batches_build(w, cut, out, errmsg)) {
		fprintf(stderr, "tally-bench: %s\n", errmsg);
		return 1;
	}
	*build_s = (double)(bench_clock_ns() - t0) / 1e9;
	return 0;
}

int net_tenants_create(const net_server *server, const char *client_name, const net_batches *b,
		       uint64_t *created, uint64_t *existing, double *seconds)
{
	*created = *existing = 0;
	*seconds = 0;
	uint32_t tenant_limit = 0;
	for (uint64_t i = 0; i < b->count; i++)
		if (b->batch[i].tenant >= tenant_limit)
			tenant_limit = b->batch[i].tenant + 1;
	uint8_t *done = calloc(tenant_limit ? tenant_limit : 1, 1);
	if (!done) {
		fprintf(stderr, "tally-bench: out of memory for %" PRIu32 " tenants\n", tenant_limit);
		return 1;
	}
	tally_client *c = NULL;
	tally_session_info info;
	int status = 1;
	if (net_session_open(server->address, server->key, client_name, &c, &info))
		goto out;
	fprintf(stderr, "tally-bench: creating the tenants before the clock starts...\n");
	int64_t t0 = bench_clock_ns();
	for (uint64_t i = 0; i < b->count; i++) {
		const net_batch *nb = &b->batch[i];
		if (done[nb->tenant])
			continue;
		done[nb->tenant] = 1;
		Tally__V1__TenantCreated *answer = NULL;
		int rc = tally_client_create_tenant(c, nb->message->tenant, &answer);
		if (rc == 0) {
			tally__v1__tenant_created__free_unpacked(answer, NULL);
			++*created;
		} else if (rc == TALLY_CLIENT_REFUSED &&
			   tally_client_last_error(c)->code == TALLY__V1__ERROR__CODE__CONFLICT) {
			++*existing;
		} else {
			char what[120], text[NET_ERROR_SIZE];
			snprintf(what, sizeof(what), "creating tenant %s", nb->message->tenant);
			net_failure_text(text, sizeof(text), what, c, rc);
			fprintf(stderr, "tally-bench: %s\n", text);
			goto out;
		}
	}
	*seconds = (double)(bench_clock_ns() - t0) / 1e9;
	status = 0;
out:
	tally_client_close(c);
	free(done);
	return status;
}

/* ---- ingest ----------------------------------------------------------------------- */

typedef struct slot {
	uint64_t request_id;
	uint64_t batch;
} slot;

typedef struct retry {
	uint64_t batch;
	int64_t due_ns;
	uint32_t attempts;
} retry;

typedef struct ingest_run ingest_run;

typedef struct connection {
	pthread_t thread;
	ingest_run *run;
	uint32_t index;
	tally_client *client;
	slot *slots;              /* batches in flight: run->inflight entries */
	uint32_t *attempts;       /* sends of each slot's batch so far */
	uint32_t inflight;
	retry *retries;           /* refused batches waiting to be sent again */
	uint32_t retry_count;     /* inflight + retry_count <= run->inflight (note 5) */
	int64_t first_send_ns;    /* 0 until the first send */
	int64_t last_ack_ns;
	uint64_t events_acked;
	uint64_t batches_acked;
	uint64_t result_count[4];
	uint32_t first_reject_reason;
	uint64_t resends;
	char error[NET_ERROR_SIZE]; /* the first failure; "" if none */
} connection;

struct ingest_run {
	const net_ingest_options *options;
	const net_batches *b;
	uint32_t inflight;
	int64_t *send_ns;         /* per batch: its first send */
	int64_t *latency_ns;      /* per batch: first send -> ack */
	int64_t *lag_ns;          /* per batch, paced: first send - due */
	atomic_uint_fast64_t next; /* the next batch to claim */
	atomic_int failed;
	int64_t start_ns;         /* the schedule's start, set when the gate opens */
	pthread_mutex_t gate_lock;
	pthread_cond_t gate_cond;
	int gate_open;
};

/* When batch i is due: start + (events before it) / rate; 0 unpaced. */
static int64_t batch_due_ns(const ingest_run *r, uint64_t i)
{
	uint64_t rate = r->options->rate;
	if (!rate)
		return 0;
	return r->start_ns + (int64_t)(r->b->batch[i].events_before * UINT64_C(1000000000) / rate);
}

/* Claims the next batch if one is left and due by now. true with *batch;
 * false with *next_due_ns the time the next one is due (INT64_MAX when
 * none is left). */
static bool batch_claim(ingest_run *r, int64_t now, uint64_t *batch, int64_t *next_due_ns)
{
	uint_fast64_t i = atomic_load(&r->next);
	for (;;) {
		if (i >= r->b->count) {
			*next_due_ns = INT64_MAX;
			return false;
		}
		int64_t due = batch_due_ns(r, i);
		if (due > now) {
			*next_due_ns = due;
			return false;
		}
		if (atomic_compare_exchange_weak(&r->next, &i, i + 1)) {
			*batch = i;
			return true;
		}
	}
}

static int connection_fail(connection *c, const char *what, int rc)
{
	net_failure_text(c->error, sizeof(c->error), what, c->client, rc);
	atomic_store(&c->run->failed, 1);
	return 1;
}

/* Sends batch (its attempts-th send, 1 the first). 0 or 1 (failed). */
static int connection_send(connection *c, uint64_t batch, uint32_t attempts)
{
	ingest_run *r = c->run;
	const net_batch *nb = &r->b->batch[batch];
	int64_t now = bench_clock_ns();
	if (attempts == 1) {
		r->send_ns[batch] = now;
		if (r->options->rate)
			r->lag_ns[batch] = now - batch_due_ns(r, batch);
	}
	if (!c->first_send_ns)
		c->first_send_ns = now;
	uint64_t id = 0;
	int rc = tally_client_ingest_send(c->client, nb->message, &id);
	if (rc) {
		char what[160];
		snprintf(what, sizeof(what), "sending a batch of %" PRIu32 " events for tenant %s",
			 nb->event_count, nb->message->tenant);
		return connection_fail(c, what, rc);
	}
	c->slots[c->inflight] = (slot){.request_id = id, .batch = batch};
	c->attempts[c->inflight] = attempts;
	c->inflight++;
	return 0;
}

/* The slot of request id, removed from the in-flight set; false if none. */
static bool slot_take(connection *c, uint64_t request_id, slot *out, uint32_t *attempts)
{
	for (uint32_t i = 0; i < c->inflight; i++)
		if (c->slots[i].request_id == request_id) {
			*out = c->slots[i];
			*attempts = c->attempts[i];
			c->inflight--;
			c->slots[i] = c->slots[c->inflight];
			c->attempts[i] = c->attempts[c->inflight];
			return true;
		}
	return false;
}

/* Receives one ack (or refusal) and accounts for it. 0 or 1 (failed). */
static int connection_receive(connection *c)
{
	ingest_run *r = c->run;
	tally_ingest_ack ack;
	int rc = tally_client_ingest_recv(c->client, &ack);
	int64_t now = bench_clock_ns();
	if (rc == 0) {
		slot s;
		uint32_t attempts;
		if (!slot_take(c, ack.request_id, &s, &attempts)) {
			tally_ingest_ack_free(&ack);
			return connection_fail(c, "an ack for a request this connection did not send", -EPROTO);
		}
		r->latency_ns[s.batch] = now - r->send_ns[s.batch];
		c->events_acked += ack.event_count;
		c->batches_acked++;
		c->last_ack_ns = now;
		c->result_count[0] += ack.accepted;
		c->result_count[1] += ack.duplicate;
		c->result_count[2] += ack.conflict;
		c->result_count[3] += ack.rejected;
		for (uint32_t i = 0; ack.reason && !c->first_reject_reason && i < ack.event_count; i++)
			c->first_reject_reason = ack.reason[i];
		tally_ingest_ack_free(&ack);
		return 0;
	}
	if (rc != TALLY_CLIENT_REFUSED || tally_client_last_error(c->client)->request_id == 0)
		return connection_fail(c, "receiving an ack", rc);
	const tally_client_error *e = tally_client_last_error(c->client);
	slot s;
	uint32_t attempts;
	if (!slot_take(c, e->request_id, &s, &attempts))
		return connection_fail(c, "an Error for a request this connection did not send", -EPROTO);
	const net_batch *nb = &r->b->batch[s.batch];
	bool retryable = e->code == TALLY__V1__ERROR__CODE__RESOURCE_EXHAUSTED ||
			 e->code == TALLY__V1__ERROR__CODE__UNAVAILABLE;
	if (!retryable || attempts > NET_RETRIES_MAX) {
		char what[200];
		snprintf(what, sizeof(what), "a batch of %" PRIu32 " events for tenant %s%s",
			 nb->event_count, nb->message->tenant,
			 retryable ? " (after the most retries allowed)" : "");
		return connection_fail(c, what, rc);
	}
	uint32_t wait_ms = e->retry_after_ms;
	if (wait_ms < 1)
		wait_ms = 1;
	if (wait_ms > NET_RETRY_WAIT_MS_MAX)
		wait_ms = NET_RETRY_WAIT_MS_MAX;
	c->retries[c->retry_count++] = (retry){
		.batch = s.batch, .due_ns = now + (int64_t)wait_ms * 1000000, .attempts = attempts + 1};
	c->resends++;
	return 0;
}

/* The index of the earliest retry, or -1 when none waits. */
static int retry_earliest(const connection *c)
{
	int best = -1;
	for (uint32_t i = 0; i < c->retry_count; i++)
		if (best < 0 || c->retries[i].due_ns < c->retries[best].due_ns)
			best = (int)i;
	return best;
}

static void sleep_until(int64_t when_ns)
{
	struct timespec ts = {.tv_sec = when_ns / 1000000000, .tv_nsec = when_ns % 1000000000};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static bool run_stopped(const ingest_run *r)
{
	return atomic_load(&r->failed) || (r->options->abort && atomic_load(r->options->abort));
}

static void *connection_main(void *arg)
{
	connection *c = arg;
	ingest_run *r = c->run;
	pthread_mutex_lock(&r->gate_lock);
	while (!r->gate_open)
		pthread_cond_wait(&r->gate_cond, &r->gate_lock);
	pthread_mutex_unlock(&r->gate_lock);
	while (!run_stopped(r)) {
		int64_t now = bench_clock_ns();
		int64_t wake_ns = INT64_MAX;
		/* Fill the connection: due retries first, then new batches. */
		for (;;) {
			int k = retry_earliest(c);
			if (k >= 0 && c->retries[k].due_ns <= now) {
				retry due = c->retries[k];
				c->retries[k] = c->retries[--c->retry_count];
				if (connection_send(c, due.batch, due.attempts))
					return NULL;
			} else {
				uint64_t batch;
				if (c->inflight + c->retry_count >= r->inflight ||
				    !batch_claim(r, now, &batch, &wake_ns))
					break;
				if (connection_send(c, batch, 1))
					return NULL;
			}
			now = bench_clock_ns();
		}
		if (c->inflight) {
			if (connection_receive(c))
				return NULL;
			continue;
		}
		int k = retry_earliest(c);
		if (k >= 0 && c->retries[k].due_ns < wake_ns)
			wake_ns = c->retries[k].due_ns;
		if (wake_ns == INT64_MAX)
			break; /* nothing left to claim, no retry waiting */
		sleep_until(wake_ns);
	}
	if (!c->error[0] && run_stopped(r) && c->inflight + c->retry_count)
		snprintf(c->error, sizeof(c->error), "stopped with %" PRIu32 " batches unacknowledged",
			 c->inflight + c->retry_count);
	return NULL;
}

static void connections_close(connection *connections, uint32_t count)
{
	for (uint32_t i = 0; connections && i < count; i++) {
		tally_client_close(connections[i].client);
		free(connections[i].slots);
		free(connections[i].attempts);
		free(connections[i].retries);
	}
	free(connections);
}

int net_ingest_run(const net_ingest_options *o, const net_batches *b, net_ingest_figures *f)
{
	memset(f, 0, sizeof(*f));
	int status = 1;
	ingest_run r = {.options = o, .b = b, .inflight = o->inflight};
	uint64_t n = b->count ? b->count : 1;
	r.send_ns = calloc(n, sizeof(*r.send_ns));
	r.latency_ns = calloc(n, sizeof(*r.latency_ns));
	r.lag_ns = calloc(n, sizeof(*r.lag_ns));
	connection *connections = calloc(o->connection_count, sizeof(*connections));
	uint32_t opened = 0, started = 0;
	if (!r.send_ns || !r.latency_ns || !r.lag_ns || !connections) {
		fprintf(stderr, "tally-bench: out of memory for %" PRIu64 " batches\n", b->count);
		goto out;
	}
	/* Sessions first, untimed; the in-flight budget is the smallest the
	 * server allows on any of them. */
	for (; opened < o->connection_count; opened++) {
		connection *c = &connections[opened];
		tally_session_info info;
		if (net_session_open(o->server, o->key, o->client_name, &c->client, &info))
			goto out;
		if (!info.admin) {
			fprintf(stderr, "tally-bench: the key is tenant %s's key; batches that name their "
				"tenant need an admin key\n", info.tenant);
			goto out;
		}
		uint32_t limit = info.limits.inflight_requests_max;
		if (limit && limit < r.inflight)
			r.inflight = limit;
		if (r.inflight > TALLY_CLIENT_INFLIGHT_MAX)
			r.inflight = TALLY_CLIENT_INFLIGHT_MAX;
	}
	for (uint32_t i = 0; i < o->connection_count; i++) {
		connection *c = &connections[i];
		c->run = &r;
		c->index = i;
		c->slots = malloc(sizeof(*c->slots) * r.inflight);
		c->attempts = malloc(sizeof(*c->attempts) * r.inflight);
		c->retries = malloc(sizeof(*c->retries) * r.inflight);
		if (!c->slots || !c->attempts || !c->retries) {
			fprintf(stderr, "tally-bench: out of memory for connection %" PRIu32 "\n", i);
			goto out;
		}
	}
	f->inflight = r.inflight;
	atomic_init(&r.next, 0);
	atomic_init(&r.failed, 0);
	pthread_mutex_init(&r.gate_lock, NULL);
	pthread_cond_init(&r.gate_cond, NULL);
	for (; started < o->connection_count; started++)
		if (pthread_create(&connections[started].thread, NULL, connection_main,
				   &connections[started]) != 0) {
			fprintf(stderr, "tally-bench: cannot start the thread of connection %" PRIu32 "\n",
				started);
			atomic_store(&r.failed, 1); /* the started ones stop at once */
			break;
		}
	pthread_mutex_lock(&r.gate_lock);
	r.start_ns = bench_clock_ns();
	r.gate_open = 1;
	pthread_cond_broadcast(&r.gate_cond);
	pthread_mutex_unlock(&r.gate_lock);
	for (uint32_t i = 0; i < started; i++)
		pthread_join(connections[i].thread, NULL);
	pthread_cond_destroy(&r.gate_cond);
	pthread_mutex_destroy(&r.gate_lock);
	if (started < o->connection_count)
		goto out;

	/* The first real failure; a connection that only stopped because
	 * another failed says so, and comes second. */
	const connection *failed = NULL;
	for (uint32_t i = 0; i < o->connection_count; i++) {
		const connection *c = &connections[i];
		if (c->error[0] && (!failed || strncmp(failed->error, "stopped", 7) == 0))
			failed = c;
	}
	if (failed || atomic_load(&r.failed) || (o->abort && atomic_load(o->abort))) {
		if (failed)
			fprintf(stderr, "tally-bench: connection %" PRIu32 " to %s: %s\n", failed->index,
				o->server, failed->error);
		else
			fprintf(stderr, "tally-bench: the ingest was stopped\n");
		goto out;
	}

	int64_t first_ns = INT64_MAX, last_ns = 0;
	for (uint32_t i = 0; i < o->connection_count; i++) {
		const connection *c = &connections[i];
		if (c->first_send_ns && c->first_send_ns < first_ns)
			first_ns = c->first_send_ns;
		if (c->last_ack_ns > last_ns)
			last_ns = c->last_ack_ns;
		f->events_acked += c->events_acked;
		f->batches_acked += c->batches_acked;
		for (int k = 0; k < 4; k++)
			f->result_count[k] += c->result_count[k];
		if (!f->first_reject_reason)
			f->first_reject_reason = c->first_reject_reason;
		f->retries += c->resends;
	}
	if (first_ns == INT64_MAX)
		first_ns = last_ns = r.start_ns; /* no batch at all */
	f->ingest_s = (double)(last_ns - first_ns) / 1e9;
	f->events_per_s = f->ingest_s > 0 ? (double)f->events_acked / f->ingest_s : 0.0;
	bench_latency_summary_us(r.latency_ns, b->count, f->ack_us);
	if (o->rate) {
		f->schedule_s = (double)b->event_count / (double)o->rate;
		double span_s = (double)(last_ns - r.start_ns) / 1e9;
		f->paced_events_per_s = span_s > 0 ? (double)f->events_acked / span_s : 0.0;
		f->rate_held = f->paced_events_per_s >= NET_RATE_HELD_FRACTION * (double)o->rate;
		bench_latency_summary_us(r.lag_ns, b->count, f->send_lag_us);
	}
	status = 0;
out:
	connections_close(connections, o->connection_count);
	free(r.send_ns);
	free(r.latency_ns);
	free(r.lag_ns);
	return status;
}

bool net_results_check(const net_ingest_figures *f, uint64_t unique_count, uint64_t resend_count,
		       const char *what)
{
	const uint64_t *n = f->result_count;
	bool match = f->events_acked == unique_count + resend_count && n[0] == unique_count &&
		     n[1] == resend_count && n[2] == 0 && n[3] == 0;
	if (match)
		return true;
	fprintf(stderr,
		"tally-bench: %s: the server's results do not match the workload: expected %" PRIu64
		" ACCEPTED and %" PRIu64 " DUPLICATE, got %" PRIu64 " ACCEPTED, %" PRIu64
		" DUPLICATE, %" PRIu64 " CONFLICT, %" PRIu64 " REJECTED (%" PRIu64 " of %" PRIu64
		" events acknowledged)%s\n",
		what, unique_count, resend_count, n[0], n[1], n[2], n[3], f->events_acked,
		unique_count + resend_count,
		n[0] < unique_count && (n[1] > resend_count || n[2] > 0)
			? "; DUPLICATE beyond the re-sends, or CONFLICT, means the server held events "
			  "with these ids already (a workload's ids repeat for its seed, its times move "
			  "with the clock): start tallyd on a fresh data directory"
			: "");
	if (f->first_reject_reason)
		fprintf(stderr, "tally-bench: first rejection: %s\n",
			tally_reason_text((int)f->first_reject_reason));
	return false;
}

/* ---- reports --------------------------------------------------------------------- */

void net_figures_print(const net_ingest_figures *f, uint64_t rate, bool results_match, int indent)
{
	const uint64_t *n = f->result_count;
	printf("%*s%.0f events/s acknowledged (%" PRIu64 " events in %" PRIu64
	       " batches, %.3f s from first send to last ack; %" PRIu32 " in flight per connection)\n",
	       indent, "", f->events_per_s, f->events_acked, f->batches_acked, f->ingest_s, f->inflight);
	printf("%*sresults: %" PRIu64 " ACCEPTED, %" PRIu64 " DUPLICATE, %" PRIu64 " CONFLICT, %" PRIu64
	       " REJECTED: %s\n",
	       indent, "", n[0], n[1], n[2], n[3],
	       results_match ? "as the workload expects" : "MISMATCH (details on stderr)");
	printf("%*sack latency per batch (first send -> ack, sent after fsync): P50 %.2f ms, P95 %.2f ms, "
	       "P99 %.2f ms, max %.2f ms\n",
	       indent, "", f->ack_us[0] / 1e3, f->ack_us[1] / 1e3, f->ack_us[2] / 1e3, f->ack_us[3] / 1e3);
	if (rate)
		printf("%*spaced at %" PRIu64 " events/s: %.0f events/s from the schedule's start to the "
		       "last ack (%s, threshold %.0f%%); schedule %.3f s; send lag behind schedule P50 "
		       "%.2f ms, P99 %.2f ms, max %.2f ms\n",
		       indent, "", rate, f->paced_events_per_s,
		       f->rate_held ? "rate held" : "RATE NOT HELD", NET_RATE_HELD_FRACTION * 100,
		       f->schedule_s, f->send_lag_us[0] / 1e3, f->send_lag_us[2] / 1e3,
		       f->send_lag_us[3] / 1e3);
	if (f->retries)
		printf("%*s%" PRIu64 " batches sent again after RESOURCE_EXHAUSTED / UNAVAILABLE\n",
		       indent, "", f->retries);
}

static json_t *real_rounded(double x, int places)
{
	return json_real(bench_round(x, places));
}

int net_figures_json(json_t *o, const net_ingest_figures *f, uint64_t rate, bool results_match)
{
	static const char *const ACK_KEYS[4] = {"ack_p50_us", "ack_p95_us", "ack_p99_us", "ack_max_us"};
	static const char *const LAG_KEYS[4] = {"send_lag_p50_us", "send_lag_p95_us",
						"send_lag_p99_us", "send_lag_max_us"};
	int bad = 0;
	bad |= bench_json_put(o, "inflight", json_integer(f->inflight));
	bad |= bench_json_put(o, "ingest_s", real_rounded(f->ingest_s, 6));
	bad |= bench_json_put(o, "events_per_s", json_integer((json_int_t)(f->events_per_s + 0.5)));
	bad |= bench_json_put(o, "events_acked", json_integer((json_int_t)f->events_acked));
	bad |= bench_json_put(o, "batches_acked", json_integer((json_int_t)f->batches_acked));
	for (int k = 0; k < 4; k++)
		bad |= bench_json_put(o, ACK_KEYS[k], real_rounded(f->ack_us[k], 1));
	bad |= bench_json_put(o, "accepted", json_integer((json_int_t)f->result_count[0]));
	bad |= bench_json_put(o, "duplicates", json_integer((json_int_t)f->result_count[1]));
	bad |= bench_json_put(o, "conflicts", json_integer((json_int_t)f->result_count[2]));
	bad |= bench_json_put(o, "rejected", json_integer((json_int_t)f->result_count[3]));
	bad |= bench_json_put(o, "results_match", json_boolean(results_match));
	bad |= bench_json_put(o, "retries", json_integer((json_int_t)f->retries));
	if (rate) {
		bad |= bench_json_put(o, "rate", json_integer((json_int_t)rate));
		bad |= bench_json_put(o, "schedule_s", real_rounded(f->schedule_s, 6));
		bad |= bench_json_put(o, "paced_events_per_s",
				      json_integer((json_int_t)(f->paced_events_per_s + 0.5)));
		bad |= bench_json_put(o, "rate_held", json_boolean(f->rate_held));
		for (int k = 0; k < 4; k++)
			bad |= bench_json_put(o, LAG_KEYS[k], real_rounded(f->send_lag_us[k], 1));
	}
	return bad ? -1 : 0;
}

void net_server_memory_read(long pid, net_server_memory *m)
{
	memset(m, 0, sizeof(*m));
	m->pid = pid;
	if (!pid)
		return;
	int rc = bench_process_rss_read(pid, &m->rss_bytes, &m->rss_peak_bytes);
	if (rc) {
		fprintf(stderr, "tally-bench: cannot read the memory of process %ld from /proc/%ld/status: %s; "
			"server RSS not reported\n", pid, pid, strerror(-rc));
		return;
	}
	m->read = true;
}

int net_server_memory_json(json_t *o, const net_server_memory *m)
{
	if (!m->read)
		return 0;
	int bad = 0;
	bad |= bench_json_put(o, "server_pid", json_integer(m->pid));
	bad |= bench_json_put(o, "server_rss_bytes", json_integer((json_int_t)m->rss_bytes));
	bad |= bench_json_put(o, "server_rss_peak_bytes", json_integer((json_int_t)m->rss_peak_bytes));
	return bad ? -1 : 0;
}
