/*
 * ingest.c — producers that submit the reference workload and acknowledge
 * after durable group commit (contract in ingest.h).
 *
 * NOTES ON THE PRODUCERS
 *
 * 1. They emulate a server that acknowledges after group commit. Each
 *    producer thread claims the next window of the delivery order (an atomic
 *    counter, so windows go out roughly in order), submits the window's
 *    per-tenant batches G at a time with tally_ingest_submit_many (G = 1:
 *    tally_ingest_submit), and keeps a bounded FIFO of (commit LSN, submit
 *    time, batch) not yet acknowledged. After each submit it acknowledges
 *    every queued batch whose LSN tally_durable_lsn() has reached; when the
 *    FIFO is full it blocks in tally_commit_wait on the oldest. A batch's ack
 *    latency is the time from just before its submit to the moment its
 *    producer saw it durable.
 *
 * 2. Throughput = delivered events (re-sends included: each is acknowledged,
 *    as DUPLICATE) / (last acknowledgement - first submit).
 *
 * 3. Correctness is checked, not assumed: ACCEPTED must equal the unique
 *    events, DUPLICATE the re-sends, nothing CONFLICT or REJECTED.
 *
 * 4. Nothing but the engine call and the clock is on the producers' path;
 *    every buffer is allocated before the start gate opens.
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "ingest.h"

typedef struct pending {
	uint64_t lsn;
	uint64_t batch;
	int64_t submit_ns;
} pending;

typedef struct run run;

typedef struct producer {
	pthread_t thread;
	run *run;
	pending *queue;           /* FIFO ring of inflight_batches entries */
	tally_batch *group;       /* group_batches entries: one submit_many call */
	uint32_t head;
	uint32_t count;
	int64_t first_submit_ns;  /* 0 until the first submit */
	int64_t last_ack_ns;
	int64_t commit_wait_ns;   /* blocked in tally_commit_wait: the FIFO was full */
	uint64_t events_acked;
	int rc;                   /* the first failure, 0 if none */
	const char *failed_call;
} producer;

struct run {
	const bench_ingest_options *options;
	const workload *w;
	tally_store *store;
	tally_ingest_result *results; /* one per event, same layout as w->events */
	int64_t *latency_ns;          /* one per batch */
	atomic_uint_fast64_t next_window;
	atomic_int failed;
	/* The start gate: producers wait until every one of them exists (or
	 * starting one failed, and failed is set), so timing starts together. */
	pthread_mutex_t gate_lock;
	pthread_cond_t gate_cond;
	int gate_open;
};

/* Acknowledges queued batches that are durable, oldest first. With
 * wait_oldest, first blocks until the oldest is durable. 0 or the engine's
 * code. */
static int producer_ack(producer *p, int wait_oldest)
{
	run *r = p->run;
	uint32_t capacity = r->options->inflight_batches;
	uint64_t durable = tally_durable_lsn(r->store);
	while (p->count) {
		pending *q = &p->queue[p->head];
		if (q->lsn > durable) {
			if (!wait_oldest)
				return 0;
			int64_t wait_from_ns = bench_clock_ns();
			int rc = tally_commit_wait(r->store, q->lsn);
			p->commit_wait_ns += bench_clock_ns() - wait_from_ns;
			if (rc) {
				p->failed_call = "tally_commit_wait";
				return rc;
			}
			wait_oldest = 0;
			durable = tally_durable_lsn(r->store);
			if (durable < q->lsn)
				durable = q->lsn;
		}
		int64_t now = bench_clock_ns();
		r->latency_ns[q->batch] = now - q->submit_ns;
		p->events_acked += r->w->batches[q->batch].count;
		p->last_ack_ns = now;
		p->head = p->head + 1 == capacity ? 0 : p->head + 1;
		p->count--;
	}
	return 0;
}

/* Submits batches [first, first + count) with one tally_ingest_submit_many
 * call (tally_ingest_submit when count is 1); count <= inflight capacity. */
static int producer_submit(producer *p, uint64_t first, uint32_t count)
{
	run *r = p->run;
	uint32_t capacity = r->options->inflight_batches;
	int rc;
	while (p->count + count > capacity)
		if ((rc = producer_ack(p, 1)))
			return rc;
	for (uint32_t i = 0; i < count; i++) {
		const workload_batch *batch = &r->w->batches[first + i];
		p->group[i] = (tally_batch){
			.tenant = r->w->tenant_names[batch->tenant],
			.events = r->w->events + batch->first,
			.count = batch->count,
			.results = r->results + batch->first,
		};
	}
	uint64_t lsn = 0;
	int64_t now = bench_clock_ns();
	if (!p->first_submit_ns)
		p->first_submit_ns = now;
	if (count == 1) {
		rc = tally_ingest_submit(r->store, p->group[0].tenant, p->group[0].events,
					 p->group[0].count, p->group[0].results, &lsn);
		p->failed_call = "tally_ingest_submit";
	} else {
		rc = tally_ingest_submit_many(r->store, p->group, count, &lsn);
		p->failed_call = "tally_ingest_submit_many";
		for (uint32_t i = 0; !rc && i < count; i++)
			rc = p->group[i].status;
	}
	if (rc)
		return rc;
	p->failed_call = NULL;
	for (uint32_t i = 0; i < count; i++) {
		uint32_t tail = p->head + p->count;
		if (tail >= capacity)
			tail -= capacity;
		p->queue[tail] = (pending){.lsn = lsn, .batch = first + i, .submit_ns = now};
		p->count++;
	}
	return producer_ack(p, 0);
}

static void *producer_main(void *arg)
{
	producer *p = arg;
	run *r = p->run;
	const workload *w = r->w;
	int rc = 0;
	pthread_mutex_lock(&r->gate_lock);
	while (!r->gate_open)
		pthread_cond_wait(&r->gate_cond, &r->gate_lock);
	pthread_mutex_unlock(&r->gate_lock);
	while (!atomic_load(&r->failed)) {
		uint64_t win = atomic_fetch_add(&r->next_window, 1);
		if (win >= w->window_count)
			break;
		uint32_t group = r->options->group_batches;
		if (group > r->options->inflight_batches)
			group = r->options->inflight_batches;
		for (uint64_t b = w->window_batch[win]; b < w->window_batch[win + 1]; b += group) {
			uint64_t left = w->window_batch[win + 1] - b;
			if ((rc = producer_submit(p, b, left < group ? (uint32_t)left : group)))
				goto fail;
		}
	}
	while (p->count)
		if ((rc = producer_ack(p, 1)))
			goto fail;
	return NULL;
fail:
	p->rc = rc;
	atomic_store(&r->failed, 1);
	return NULL;
}

/* ---- The run ------------------------------------------------------------------ */

int bench_ingest_run(const bench_ingest_options *o, const workload *w, tally_store *store,
		     bench_ingest_figures *f)
{
	int status = 1;
	memset(f, 0, sizeof(*f));
	run r = {.options = o, .w = w, .store = store};
	producer *producers = calloc(o->producer_count, sizeof(*producers));
	r.results = malloc(sizeof(*r.results) * w->event_count);
	r.latency_ns = malloc(sizeof(*r.latency_ns) * (w->batch_count ? w->batch_count : 1));
	if (!producers || !r.results || !r.latency_ns) {
		fprintf(stderr, "tally-bench: out of memory for %" PRIu64 " results\n", w->event_count);
		goto out;
	}
	atomic_init(&r.next_window, 0);
	atomic_init(&r.failed, 0);
	pthread_mutex_init(&r.gate_lock, NULL);
	pthread_cond_init(&r.gate_cond, NULL);
	r.gate_open = 0;
	uint32_t started = 0;
	for (; started < o->producer_count; started++) {
		producer *p = &producers[started];
		p->run = &r;
		p->queue = malloc(sizeof(*p->queue) * o->inflight_batches);
		p->group = malloc(sizeof(*p->group) * (o->group_batches ? o->group_batches : 1));
		if (!p->queue || !p->group || pthread_create(&p->thread, NULL, producer_main, p) != 0) {
			fprintf(stderr, "tally-bench: cannot start producer %" PRIu32 "\n", started);
			atomic_store(&r.failed, 1); /* the started ones exit at once */
			break;
		}
	}
	struct rusage usage_before, usage_after;
	getrusage(RUSAGE_SELF, &usage_before);
	pthread_mutex_lock(&r.gate_lock);
	r.gate_open = 1;
	pthread_cond_broadcast(&r.gate_cond);
	pthread_mutex_unlock(&r.gate_lock);
	for (uint32_t i = 0; i < started; i++)
		pthread_join(producers[i].thread, NULL);
	getrusage(RUSAGE_SELF, &usage_after);
	f->cpu_s = bench_cpu_s(&usage_after) - bench_cpu_s(&usage_before);
	f->page_faults = (uint64_t)(usage_after.ru_minflt + usage_after.ru_majflt) -
			 (uint64_t)(usage_before.ru_minflt + usage_before.ru_majflt);
	pthread_cond_destroy(&r.gate_cond);
	pthread_mutex_destroy(&r.gate_lock);
	if (started < o->producer_count)
		goto out;

	int64_t first_ns = INT64_MAX, last_ns = 0;
	uint64_t acked = 0;
	for (uint32_t i = 0; i < o->producer_count; i++) {
		producer *p = &producers[i];
		if (p->rc) {
			bench_engine_failed(p->failed_call, p->rc, store, NULL);
			goto out;
		}
		if (p->first_submit_ns && p->first_submit_ns < first_ns)
			first_ns = p->first_submit_ns;
		if (p->last_ack_ns > last_ns)
			last_ns = p->last_ack_ns;
		acked += p->events_acked;
		f->commit_wait_s += (double)p->commit_wait_ns / 1e9;
	}
	f->ingest_s = (double)(last_ns - first_ns) / 1e9;
	f->events_per_s = f->ingest_s > 0 ? (double)acked / f->ingest_s : 0.0;

	bench_latency_summary_us(r.latency_ns, w->batch_count, f->ack_us);

	f->first_reject_reason = TALLY_REASON_NONE;
	for (uint64_t i = 0; i < w->event_count; i++) {
		uint8_t code = r.results[i].code;
		f->result_count[code < 4 ? code : TALLY_REJECTED]++;
		if (code == TALLY_REJECTED && f->first_reject_reason == TALLY_REASON_NONE)
			f->first_reject_reason = r.results[i].reason;
	}
	f->results_match = acked == w->event_count &&
			   f->result_count[TALLY_ACCEPTED] == w->unique_count &&
			   f->result_count[TALLY_DUPLICATE] == w->resend_count &&
			   f->result_count[TALLY_CONFLICT] == 0 && f->result_count[TALLY_REJECTED] == 0;
	if (!f->results_match) {
		fprintf(stderr,
			"tally-bench: engine results do not match the workload: expected %" PRIu64
			" ACCEPTED and %" PRIu64 " DUPLICATE, got %" PRIu64 " ACCEPTED, %" PRIu64
			" DUPLICATE, %" PRIu64 " CONFLICT, %" PRIu64 " REJECTED (%" PRIu64
			" of %" PRIu64 " acknowledged)\n",
			w->unique_count, w->resend_count, f->result_count[TALLY_ACCEPTED],
			f->result_count[TALLY_DUPLICATE], f->result_count[TALLY_CONFLICT],
			f->result_count[TALLY_REJECTED], acked, w->event_count);
		if (f->first_reject_reason != TALLY_REASON_NONE)
			fprintf(stderr, "tally-bench: first rejection: %s\n",
				tally_reason_text(f->first_reject_reason));
	}
	status = 0;
out:
	if (producers)
		for (uint32_t i = 0; i < o->producer_count; i++) {
			free(producers[i].queue);
			free(producers[i].group);
		}
	free(producers);
	free(r.results);
	free(r.latency_ns);
	return status;
}
