/*
 * query_bench.h — `tally-bench query`: five dashboard queries timed with
 * tally_query_run on the reference workload, for tenants drawn by activity
 * (bench/README.md).
 */
#ifndef TALLY_BENCH_QUERY_BENCH_H
#define TALLY_BENCH_QUERY_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#define BENCH_QUERY_REPEAT_DEFAULT 1000u
#define BENCH_QUERY_REPEAT_MAX 1000000u
#define BENCH_QUERY_CHECKED_DRAWS 20u   /* draws of daily_30d and project_model_30d checked */

typedef struct bench_query_options {
	const char *data_dir;      /* a fresh (missing or empty) directory, or a store with its marker */
	uint64_t event_count;      /* used when DIR is fresh; must match the marker otherwise */
	uint32_t tenant_count;
	uint64_t seed;
	bool event_count_given;    /* the flag was on the command line (checked against the marker) */
	bool tenant_count_given;
	bool seed_given;
	uint32_t repeat;           /* draws per query, 1..BENCH_QUERY_REPEAT_MAX */
	bool no_compact;           /* fresh DIR: flush but do not compact after the ingest */
	bool warm;                 /* run each query's draws once untimed first (warm caches) */
	bool json;                 /* one JSON object on stdout instead of text */
} bench_query_options;

/*
 * Makes sure DIR holds the reference workload (ingesting it when DIR is
 * fresh, and writing DIR/bench-workload.json), then times the five queries
 * and prints the report on stdout (progress and errors on stderr). Returns
 * the process exit status: 0 when every checked answer matched the
 * workload; 1 when an engine call failed, the store does not hold the
 * workload its marker names, or an answer was wrong (the difference is
 * printed; so is the report, marked); 2 when DIR is neither fresh nor a
 * store with its marker, or the flags contradict the marker.
 */
int bench_query_run(const bench_query_options *options);

#endif /* TALLY_BENCH_QUERY_BENCH_H */
