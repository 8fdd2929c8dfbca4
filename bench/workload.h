/*
 * workload.h — the reference multi-tenant usage workload (bench/README.md
 * describes it precisely), generated in memory before anything is timed.
 *
 * The generator produces every event the producers will submit, already
 * laid out as the batches they will submit: the delivery order is cut into
 * windows of `window_events` events; inside a window the events are grouped
 * by tenant (tenants in order of first appearance, events in delivery order)
 * and each group is one batch (split at TALLY_BATCH_EVENTS_MAX). Submitting
 * costs the producers nothing but the engine call.
 */
#ifndef TALLY_BENCH_WORKLOAD_H
#define TALLY_BENCH_WORKLOAD_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "tally.h"

#define WORKLOAD_EVENTS_MAX UINT64_C(50000000)   /* about 300 bytes of RAM per event */
#define WORKLOAD_TENANTS_MAX UINT32_C(1000000)   /* the engine holds up to 2^20 */
#define WORKLOAD_WINDOW_EVENTS_MAX UINT32_C(10000000)
#define WORKLOAD_TENANT_NAME_SIZE 16             /* "t" + up to 7 digits + NUL, padded */
#define WORKLOAD_HISTORY_DAYS 30

typedef struct workload_params {
	uint64_t event_count;    /* delivered events, re-sends included; 1..WORKLOAD_EVENTS_MAX */
	uint32_t tenant_count;   /* 1..WORKLOAD_TENANTS_MAX */
	uint64_t seed;
	uint32_t window_events;  /* 1..WORKLOAD_WINDOW_EVENTS_MAX */
	int64_t end_us;          /* the history ends here (the wall clock at generation) */
} workload_params;

/* One batch: `count` events of one tenant starting at events[first]. */
typedef struct workload_batch {
	uint64_t first;
	uint32_t count;
	uint32_t tenant;
} workload_batch;

typedef struct workload_arena_block workload_arena_block;

typedef struct workload {
	workload_params params;

	/* tenant_names[i] is the NUL-terminated name of tenant i. */
	char (*tenant_names)[WORKLOAD_TENANT_NAME_SIZE];

	/* Every delivered event in submission order (batch by batch). Strings
	 * point into memory the workload owns. */
	tally_event *events;
	uint64_t event_count;

	workload_batch *batches;    /* in submission order */
	uint64_t batch_count;
	uint64_t *window_batch;     /* window w is batches [window_batch[w], window_batch[w + 1]) */
	uint64_t window_count;

	/* What the engine must answer, counted while generating. */
	uint64_t unique_count;      /* distinct events: expected ACCEPTED */
	uint64_t resend_count;      /* exact re-sends: expected DUPLICATE */
	uint64_t late_count;        /* unique events delivered out of time order */
	uint32_t active_tenant_count; /* tenants with at least one event */

	/* Owned memory behind the strings. */
	char *id_text;              /* 32 hex chars per unique event */
	workload_arena_block *arena;
} workload;

/*
 * Generates the workload for params into *w (which the caller zeroes or
 * owns; previous content is ignored). Deterministic: the same params give
 * the same events, byte for byte, on the same platform. Returns 0, or
 * -ENOMEM with *w freed. Takes a few seconds per million events.
 */
int workload_generate(workload *w, const workload_params *params);

/* Frees everything workload_generate allocated; *w becomes empty. */
void workload_free(workload *w);

/*
 * The index, among the unique events in time order (0..unique_count-1), of
 * a delivered event e of w->events. An original and each of its re-sends
 * share it — a re-send is a copy of its original, event_id pointing at the
 * same 32 characters of id_text — so counting each index once counts what
 * the engine must store. O(1).
 */
static inline uint64_t workload_unique_index(const workload *w, const tally_event *e)
{
	assert(e->event_id.ptr >= w->id_text && e->event_id.len == 32);
	uint64_t offset = (uint64_t)(e->event_id.ptr - w->id_text);
	assert(offset % 32 == 0 && offset / 32 < w->unique_count);
	return offset / 32;
}

#endif /* TALLY_BENCH_WORKLOAD_H */
