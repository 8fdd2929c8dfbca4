/*
 * ingest.c — `tally ingest` over a connection (ingest.h).
 *
 * NOTES
 *
 * 1. Batches: a slot holds a builder, the file line of each of its events
 *    and its tenant. A slot is "open" while rows go into it (one per
 *    tenant, at most INGEST_TENANTS_OPEN_MAX: past that every open batch
 *    is sent), "in flight" from its send to its ack, and free again after
 *    the ack. A batch is sent when it has batch_events events, when the
 *    next event could take it past the server's frame limit
 *    (builder_bytes_with, an upper bound of the batch with it), and at the
 *    end. Slots are bounded by the open and
 *    in-flight limits, so memory is too.
 *
 * 2. Before a send finds the in-flight limit reached, one ack is received:
 *    the reading waits for the server, which is the backpressure. A
 *    refused batch that may be retried keeps its slot and is sent again
 *    (a new request id) after the server's delay.
 *
 * 3. Problems (CONFLICT, REJECTED) are kept by lowest line number, so the
 *    summary lists the first ones in the file whatever order the acks came.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "builder.h"
#include "ingest.h"
#include "rows.h"
#include "tally.h"

#define INGEST_STOP 100 /* a row callback's "stop": the reason is in the state */
#define PROGRESS_INTERVAL_NS 250000000L

const char *ingest_reason_text(uint32_t reason)
{
	return tally_reason_text(reason < TALLY_REASON_COUNT ? (int)reason : -1);
}

typedef struct slot {
	builder b;
	uint64_t *lines;
	uint32_t lines_capacity;
	char tenant[BUILDER_TENANT_SIZE_MAX + 1];
	bool open, in_flight;
	uint64_t request_id;
	uint32_t attempts;
} slot;

typedef struct state {
	tally_client *c;
	const ingest_options *o;
	const tally_session_info *info;
	const char *name;
	ingest_summary *sum;
	char *errmsg;
	bool failed;         /* errmsg is set: stop reading */
	bool refused;        /* the server refused a batch: send nothing more */
	bool connection_dead;
	uint32_t batch_events, inflight_max;
	size_t frame_bytes;
	slot *slots;
	size_t slot_count, slots_capacity;
	size_t open_count, inflight_count;
	slot *last_open;     /* the slot the previous row went to */
	struct timespec started, drawn;
} state;

__attribute__((format(printf, 2, 3)))
static int fail(state *s, const char *format, ...)
{
	if (s->failed)
		return INGEST_STOP; /* the first reason is the one reported */
	va_list args;
	va_start(args, format);
	vsnprintf(s->errmsg, INGEST_ERRMSG_SIZE, format, args);
	va_end(args);
	s->failed = true;
	return INGEST_STOP;
}

static slot *slot_get(state *s)
{
	for (size_t i = 0; i < s->slot_count; i++)
		if (!s->slots[i].open && !s->slots[i].in_flight)
			return &s->slots[i];
	if (s->slot_count == s->slots_capacity)
		return NULL; /* sized in ingest_run: cannot happen */
	slot *sl = &s->slots[s->slot_count++];
	builder_init(&sl->b);
	return sl;
}

static void problem_keep(ingest_summary *sum, uint64_t line, uint32_t result, uint32_t reason)
{
	size_t n = sum->problem_count;
	if (n == INGEST_PROBLEMS_SHOWN && line >= sum->problems[n - 1].line)
		return;
	size_t at = n < INGEST_PROBLEMS_SHOWN ? n : n - 1;
	while (at > 0 && sum->problems[at - 1].line > line) {
		if (at < INGEST_PROBLEMS_SHOWN)
			sum->problems[at] = sum->problems[at - 1];
		at--;
	}
	sum->problems[at] = (ingest_problem){line, result, reason};
	if (n < INGEST_PROBLEMS_SHOWN)
		sum->problem_count++;
}

static void lines_span(const slot *sl, uint64_t *first, uint64_t *last)
{
	uint32_t n = builder_count(&sl->b);
	*first = n ? sl->lines[0] : 0;
	*last = n ? sl->lines[n - 1] : 0;
}

static int send_slot(state *s, slot *sl);

/* Receives one answer to a batch in flight and accounts for it. 0, or
 * INGEST_STOP with the state failed. */
static int receive_one(state *s)
{
	tally_ingest_ack ack;
	int rc = tally_client_ingest_recv(s->c, &ack);
	slot *sl = NULL;
	for (size_t i = 0; i < s->slot_count && (rc == 0 || rc == TALLY_CLIENT_REFUSED); i++)
		if (s->slots[i].in_flight && s->slots[i].request_id == ack.request_id)
			sl = &s->slots[i];
	if (rc == 0 && sl) {
		s->inflight_count--;
		sl->in_flight = false;
		s->sum->batches_acked++;
		s->sum->accepted += ack.accepted;
		s->sum->duplicate += ack.duplicate;
		s->sum->conflict += ack.conflict;
		s->sum->rejected += ack.rejected;
		for (uint32_t i = 0; i < ack.event_count; i++)
			if (ack.result[i] == TALLY__V1__INGEST_ACK__RESULT__CONFLICT ||
			    ack.result[i] == TALLY__V1__INGEST_ACK__RESULT__REJECTED)
				problem_keep(s->sum, sl->lines[i], ack.result[i], ack.reason ? ack.reason[i] : 0);
		tally_ingest_ack_free(&ack);
		builder_reset(&sl->b);
		return 0;
	}
	if (rc == TALLY_CLIENT_REFUSED && sl) {
		s->inflight_count--;
		sl->in_flight = false;
		const tally_client_error *e = tally_client_last_error(s->c);
		bool retry = (e->code == TALLY__V1__ERROR__CODE__RESOURCE_EXHAUSTED ||
			      e->code == TALLY__V1__ERROR__CODE__UNAVAILABLE) &&
			     sl->attempts <= INGEST_RETRIES_MAX && !s->refused; /* sends, the first too */
		if (retry) {
			uint32_t ms = e->retry_after_ms;
			ms = ms < INGEST_RETRY_DELAY_MIN_MS ? INGEST_RETRY_DELAY_MIN_MS : ms;
			ms = ms > INGEST_RETRY_DELAY_MAX_MS ? INGEST_RETRY_DELAY_MAX_MS : ms;
			struct timespec delay = {ms / 1000, (long)(ms % 1000) * 1000000L};
			while (nanosleep(&delay, &delay) && errno == EINTR)
				;
			s->sum->retries++;
			return send_slot(s, sl);
		}
		uint64_t first, last;
		lines_span(sl, &first, &last);
		builder_reset(&sl->b);
		s->refused = true;
		return fail(s, "the server refused the batch of lines %" PRIu64 "-%" PRIu64 "%s: %s (%s)", first, last,
			    sl->attempts > 1 ? " after retries" : "", e->message, tally_client_error_code_name(e->code));
	}
	if (rc == TALLY_CLIENT_REFUSED) {
		const tally_client_error *e = tally_client_last_error(s->c);
		s->connection_dead = true;
		return fail(s, "the server closed the connection: %s (%s)", e->message,
			    tally_client_error_code_name(e->code));
	}
	s->connection_dead = true;
	if (rc == 0)
		tally_ingest_ack_free(&ack);
	return fail(s, "waiting for acks: %s", rc ? tally_client_strerror(rc) : "an ack for no batch sent");
}

/* Sends sl (open, or refused and retried), first making room in flight. */
static int send_slot(state *s, slot *sl)
{
	while (s->inflight_count >= s->inflight_max)
		if (receive_one(s))
			return INGEST_STOP;
	Tally__V1__IngestBatch m;
	int rc = builder_message(&sl->b, &m);
	if (rc == 0)
		rc = tally_client_ingest_send(s->c, &m, &sl->request_id);
	if (rc) {
		s->connection_dead = rc != -ENOMEM && rc != -E2BIG && rc != -EMSGSIZE;
		return fail(s, "sending a batch of %u events: %s", builder_count(&sl->b), tally_client_strerror(rc));
	}
	if (sl->open) {
		sl->open = false;
		s->open_count--;
		s->sum->events_sent += builder_count(&sl->b);
		if (s->last_open == sl)
			s->last_open = NULL;
	}
	sl->attempts++;
	sl->in_flight = true;
	s->inflight_count++;
	return 0;
}

static int send_open_batches(state *s)
{
	for (size_t i = 0; i < s->slot_count; i++)
		if (s->slots[i].open && send_slot(s, &s->slots[i]))
			return INGEST_STOP;
	return 0;
}

/* The open batch of tenant, opening one (and sending all when too many
 * are open). NULL with the state failed. */
static slot *batch_for(state *s, const char *tenant)
{
	if (s->last_open && strcmp(s->last_open->tenant, tenant) == 0)
		return s->last_open;
	for (size_t i = 0; i < s->slot_count; i++)
		if (s->slots[i].open && strcmp(s->slots[i].tenant, tenant) == 0)
			return s->last_open = &s->slots[i];
	if (s->open_count == INGEST_TENANTS_OPEN_MAX && send_open_batches(s))
		return NULL;
	slot *sl = slot_get(s);
	if (!sl) {
		fail(s, "internal: no free batch slot");
		return NULL;
	}
	snprintf(sl->tenant, sizeof(sl->tenant), "%s", tenant);
	builder_reset(&sl->b);
	if (builder_set_tenant(&sl->b, tenant)) {
		fail(s, "tenant name '%s' is too long", tenant);
		return NULL;
	}
	builder_set_create_tenant(&sl->b, s->o->create_tenants);
	builder_set_backfill(&sl->b, s->o->backfill);
	sl->open = true;
	sl->attempts = 0;
	s->open_count++;
	return s->last_open = sl;
}

static double seconds_since(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static void progress_draw(state *s, bool last)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!last && seconds_since(&s->drawn, &now) * 1e9 < PROGRESS_INTERVAL_NS)
		return;
	s->drawn = now;
	double elapsed = seconds_since(&s->started, &now);
	uint64_t acked = s->sum->accepted + s->sum->duplicate + s->sum->conflict + s->sum->rejected;
	if (last) {
		fputs("\r\033[K", s->o->progress);
	} else {
		fprintf(s->o->progress, "\r\033[K%s: %" PRIu64 " rows read, %" PRIu64 " acknowledged, %.0f events/s",
			s->name, s->sum->rows_read, acked, elapsed > 0 ? (double)acked / elapsed : 0.0);
	}
	fflush(s->o->progress);
}

static int on_row(void *ctx, const rows_row *row)
{
	state *s = ctx;
	if (s->failed)
		return INGEST_STOP;
	/* The row's tenant: its own column, else --tenant, else the key's. */
	char tenant[BUILDER_TENANT_SIZE_MAX + 1];
	if (row->tenant) {
		if (row->tenant_len > BUILDER_TENANT_SIZE_MAX || memchr(row->tenant, '\0', row->tenant_len))
			return fail(s, "%s:%" PRIu64 ": field 'tenant': not a tenant name (1 to 64 bytes)", s->name,
				    row->line);
		memcpy(tenant, row->tenant, row->tenant_len);
		tenant[row->tenant_len] = '\0';
	} else {
		snprintf(tenant, sizeof(tenant), "%s", s->o->tenant ? s->o->tenant : "");
	}
	if (s->info->admin && !tenant[0])
		return fail(s, "%s:%" PRIu64 ": no tenant for this row: an admin key needs a tenant column or --tenant",
			    s->name, row->line);
	if (!s->info->admin && tenant[0]) {
		if (strcmp(tenant, s->info->tenant) != 0)
			return fail(s, "%s:%" PRIu64 ": tenant '%s': this key belongs to tenant %s", s->name, row->line,
				    tenant, s->info->tenant);
		tenant[0] = '\0'; /* a tenant key names no tenant */
	}
	slot *sl = batch_for(s, tenant);
	if (!sl)
		return INGEST_STOP;
	const tally_client_event *e = &row->event;
	if (builder_count(&sl->b) && builder_bytes_with(&sl->b, e) > s->frame_bytes) {
		if (send_slot(s, sl) || !(sl = batch_for(s, tenant)))
			return INGEST_STOP;
	}
	if (builder_bytes_with(&sl->b, e) > s->frame_bytes)
		return fail(s, "%s:%" PRIu64 ": the event alone is larger than the server's frame limit (%zu bytes)",
			    s->name, row->line, s->frame_bytes);
	uint32_t n = builder_count(&sl->b);
	if (n == sl->lines_capacity) {
		uint32_t capacity = sl->lines_capacity ? sl->lines_capacity * 2 : 1024;
		uint64_t *lines = realloc(sl->lines, capacity * sizeof(*lines));
		if (!lines)
			return fail(s, "out of memory");
		sl->lines = lines;
		sl->lines_capacity = capacity;
	}
	if (builder_add(&sl->b, e))
		return fail(s, "out of memory");
	sl->lines[n] = row->line;
	s->sum->rows_read++;
	if (builder_count(&sl->b) >= s->batch_events && send_slot(s, sl))
		return INGEST_STOP;
	if (s->o->progress && (s->sum->rows_read & 1023) == 0)
		progress_draw(s, false);
	return 0;
}

int ingest_run(tally_client *c, const tally_session_info *info, const ingest_options *options, FILE *in,
	       const char *name, ingest_summary *summary, char *errmsg)
{
	memset(summary, 0, sizeof(*summary));
	errmsg[0] = '\0';
	state s;
	memset(&s, 0, sizeof(s));
	s.c = c;
	s.o = options;
	s.info = info;
	s.name = name;
	s.sum = summary;
	s.errmsg = errmsg;
	uint32_t server_batch = info->limits.batch_events_max ? info->limits.batch_events_max : TALLY_BATCH_EVENTS_MAX;
	s.batch_events = options->batch_events ? options->batch_events : INGEST_BATCH_DEFAULT;
	if (s.batch_events > server_batch)
		s.batch_events = server_batch;
	s.inflight_max = INGEST_INFLIGHT_MAX;
	if (info->limits.inflight_requests_max && info->limits.inflight_requests_max < s.inflight_max)
		s.inflight_max = info->limits.inflight_requests_max;
	s.frame_bytes = info->limits.frame_bytes_max ? info->limits.frame_bytes_max : FRAME_BYTES_MAX_DEFAULT;
	s.slots_capacity = INGEST_TENANTS_OPEN_MAX + s.inflight_max;
	s.slots = calloc(s.slots_capacity, sizeof(*s.slots));
	if (!s.slots) {
		snprintf(errmsg, INGEST_ERRMSG_SIZE, "out of memory");
		return INGEST_FAILED;
	}
	clock_gettime(CLOCK_MONOTONIC, &s.started);
	char rows_error[ROWS_ERRMSG_SIZE];
	int rc = rows_read(in, name, options->format, on_row, &s, rows_error);
	/* Whatever stopped the reading, the rows read before are sent and
	 * every answer awaited, unless the connection itself is gone. */
	if (rc != INGEST_STOP && rc != ROWS_OK) {
		snprintf(errmsg, INGEST_ERRMSG_SIZE, "%s", rows_error);
		s.failed = true;
	}
	if (!s.connection_dead && !s.refused)
		send_open_batches(&s);
	while (s.inflight_count && !s.connection_dead)
		receive_one(&s);
	if (s.connection_dead)
		for (size_t i = 0; i < s.slot_count; i++)
			if (s.slots[i].in_flight)
				summary->unanswered += builder_count(&s.slots[i].b);
	if (options->progress)
		progress_draw(&s, true);
	for (size_t i = 0; i < s.slot_count; i++) {
		builder_free(&s.slots[i].b);
		free(s.slots[i].lines);
	}
	free(s.slots);
	return s.failed ? INGEST_FAILED : INGEST_DONE;
}

void ingest_summary_print(const ingest_summary *sum, const char *name, FILE *out)
{
	uint64_t acked = sum->accepted + sum->duplicate + sum->conflict + sum->rejected;
	fprintf(out,
		"%s: %" PRIu64 " rows read, %" PRIu64 " events acknowledged: %" PRIu64 " accepted, %" PRIu64
		" duplicate, %" PRIu64 " conflict, %" PRIu64 " rejected\n",
		name, sum->rows_read, acked, sum->accepted, sum->duplicate, sum->conflict, sum->rejected);
	if (sum->unanswered)
		fprintf(out,
			"%s: %" PRIu64 " events sent got no answer: they may or may not be stored (sending them again "
			"is safe)\n",
			name, sum->unanswered);
	for (size_t i = 0; i < sum->problem_count; i++) {
		const ingest_problem *p = &sum->problems[i];
		if (p->result == TALLY__V1__INGEST_ACK__RESULT__CONFLICT)
			fprintf(out, "%s:%" PRIu64 ": conflict: an event with this id and another payload is stored\n", name,
				p->line);
		else
			fprintf(out, "%s:%" PRIu64 ": rejected: %s\n", name, p->line, ingest_reason_text(p->reason));
	}
	uint64_t problems = sum->conflict + sum->rejected;
	if (problems > sum->problem_count)
		fprintf(out, "%s: ... and %" PRIu64 " more rejected or conflicting events\n", name,
			problems - sum->problem_count);
}
