/*
 * engine_bench.h — `tally-bench engine`: the reference workload ingested
 * in-process into a fresh store with durable group commit, then flushed,
 * compacted, measured on disk and reopened (bench/README.md).
 */
#ifndef TALLY_BENCH_ENGINE_BENCH_H
#define TALLY_BENCH_ENGINE_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#include "ingest.h" /* BENCH_*_MAX, BENCH_*_DEFAULT */

#define BENCH_MEMTABLE_MIB_MAX 768u /* --memtable-mib: TALLY_MEMTABLE_BYTES_MAX_LIMIT */

typedef struct bench_engine_options {
	uint64_t event_count;      /* delivered events, re-sends included */
	uint32_t tenant_count;
	uint64_t seed;
	const char *data_dir;      /* created if missing; must be empty; gets the workload marker */
	bool json;                 /* one JSON object on stdout instead of text */
	uint32_t producer_count;   /* 1..BENCH_PRODUCERS_MAX */
	uint32_t window_events;    /* delivery window that is cut into per-tenant batches */
	uint32_t inflight_batches; /* per producer: submitted, not yet acknowledged */
	uint32_t group_batches;    /* batches per tally_ingest_submit_many call (1: tally_ingest_submit) */
	uint64_t memtable_bytes_max; /* the store's option; 0: the engine's default */
} bench_engine_options;

/*
 * Runs the benchmark and prints the report on stdout (progress and errors on
 * stderr). After a run that matched, writes DIR/bench-workload.json
 * (marker.h) so `tally-bench query` can reuse the store. Returns the
 * process exit status: 0 when the run completed and the engine's results
 * matched the workload, 1 when the engine reported an error, a mismatch or
 * could not write the marker (the message names the call and carries the
 * store's message), 2 when the data directory is not a fresh directory.
 */
int bench_engine_run(const bench_engine_options *options);

#endif /* TALLY_BENCH_ENGINE_BENCH_H */
