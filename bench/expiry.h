/*
 * expiry.h — the engine benchmark's fingerprint-expiry phase.
 *
 * The store runs on a clock that tally-bench can move forward (a copy of
 * the default io table with its now_us shifted). After the ingest, the
 * clock moves on until the workload's oldest UTC day leaves the
 * fingerprint horizon; the background worker's next expiry pass drops that
 * day's fingerprints. The phase reports how long the pass took and the
 * longest it held the store lock (tally_stats), and checks that exactly
 * that day's ids left the index.
 */
#ifndef TALLY_BENCH_EXPIRY_H
#define TALLY_BENCH_EXPIRY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "tally.h"
#include "workload.h"

/* How long the phase waits for the worker's pass before it gives up. */
#define BENCH_EXPIRY_WAIT_MS 120000

/* The default io with a clock that runs offset_us ahead of the wall
 * clock. Initialise with bench_shift_io_init; it must outlive the store. */
typedef struct bench_shift_io {
	tally_io io;
	_Atomic int64_t offset_us;
} bench_shift_io;

void bench_shift_io_init(bench_shift_io *b);

typedef struct bench_expiry_figures {
	int64_t day_expired;        /* the UTC day (days since the epoch) whose ids expire */
	uint64_t entries_before;    /* dedup_entries before the pass */
	uint64_t entries_after;
	uint64_t entries_expected;  /* distinct ids of the workload on days after day_expired */
	uint64_t bytes_after;       /* dedup_bytes after the pass */
	double pass_ms;             /* tally_stats.dedup_expiry_us_last */
	double hold_max_ms;         /* tally_stats.dedup_expiry_hold_max_us */
	bool match;                 /* entries_after == entries_expected */
} bench_expiry_figures;

/*
 * Moves io's clock so that the workload's oldest day, and nothing newer,
 * leaves the fingerprint horizon of a store opened with `options`, waits
 * for the store's next expiry pass, and fills *out. The clock stays moved.
 * 0; -ENOMEM; -ETIMEDOUT when no pass finished in BENCH_EXPIRY_WAIT_MS; or
 * a store error (tally_store_stats).
 */
int bench_expiry_run(tally_store *store, bench_shift_io *io, const tally_options *options,
		     const workload *w, bench_expiry_figures *out);

#endif /* TALLY_BENCH_EXPIRY_H */
