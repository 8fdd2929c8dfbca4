/*
 * ingest.h — the reference workload submitted to an open store by producer
 * threads that acknowledge after durable group commit, as a server does
 * (bench/README.md, `tally-bench engine`, step 3). Shared by `tally-bench
 * engine` (which measures it) and `tally-bench query` (which only needs the
 * data stored the same way).
 */
#ifndef TALLY_BENCH_INGEST_H
#define TALLY_BENCH_INGEST_H

#include <stdbool.h>
#include <stdint.h>

#include "tally.h"
#include "workload.h"

#define BENCH_PRODUCERS_MAX 64u
#define BENCH_INFLIGHT_MAX 1000000u
#define BENCH_GROUP_MAX 65536u

/* The defaults of both subcommands. */
#define BENCH_EVENTS_DEFAULT UINT64_C(1000000)
#define BENCH_TENANTS_DEFAULT UINT64_C(10000)
#define BENCH_SEED_DEFAULT UINT64_C(1)
#define BENCH_PRODUCERS_DEFAULT 2u
#define BENCH_WINDOW_DEFAULT 10000u
#define BENCH_INFLIGHT_DEFAULT 4096u /* bench/README.md: why not fewer */
#define BENCH_GROUP_DEFAULT 256u

typedef struct bench_ingest_options {
	uint32_t producer_count;   /* 1..BENCH_PRODUCERS_MAX */
	uint32_t inflight_batches; /* per producer: submitted, not yet acknowledged */
	uint32_t group_batches;    /* batches per tally_ingest_submit_many call (1: tally_ingest_submit) */
} bench_ingest_options;

typedef struct bench_ingest_figures {
	double ingest_s;          /* first submit to last acknowledgement */
	double events_per_s;      /* delivered events (re-sends included) / ingest_s */
	double ack_us[4];         /* per batch, submit -> durable: P50, P95, P99, max */
	double commit_wait_s;     /* producers' time blocked on their oldest batch, summed */
	double cpu_s;             /* CPU time of every thread of the process (producers, the
				   * store's WAL, flush and compaction threads, io_uring
				   * workers), user + system, from start to the last join */
	uint64_t page_faults;     /* the process's page faults over the same span (minor and
				   * major, getrusage) */
	uint64_t result_count[4]; /* by enum tally_result_code */
	int first_reject_reason;  /* TALLY_REASON_NONE unless something was REJECTED */
	bool results_match;       /* ACCEPTED = unique, DUPLICATE = re-sends, nothing else */
} bench_ingest_figures;

/*
 * Submits every batch of w to store with options->producer_count threads
 * and waits until all are acknowledged (durable). Fills *figures (zeroed
 * first). Returns 0 when every batch was acknowledged — figures->results_match
 * then says whether the engine's answers matched the workload (a mismatch
 * has been described on stderr) — or 1 when an engine call failed or memory
 * ran out (the message, naming the call and carrying the store's message,
 * has been printed on stderr). The store stays open and owned by the caller.
 */
int bench_ingest_run(const bench_ingest_options *options, const workload *w, tally_store *store,
		     bench_ingest_figures *figures);

#endif /* TALLY_BENCH_INGEST_H */
