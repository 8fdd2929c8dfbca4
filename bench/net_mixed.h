/*
 * net_mixed.h — `tally-bench mixed`: ingest paced at a fixed rate through
 * a running tallyd's protocol while query clients ask it the five
 * reference dashboard queries (bench/README.md).
 */
#ifndef TALLY_BENCH_NET_MIXED_H
#define TALLY_BENCH_NET_MIXED_H

#include <stdbool.h>
#include <stdint.h>

#define BENCH_MIXED_PRELOAD_DEFAULT UINT64_C(1000000)
#define BENCH_MIXED_RATE_DEFAULT UINT64_C(100000)
#define BENCH_MIXED_DURATION_S_DEFAULT 30u
#define BENCH_MIXED_DURATION_S_MAX 3600u
#define BENCH_MIXED_CONNECTIONS_DEFAULT 2u
#define BENCH_MIXED_BATCH_DEFAULT 1000u
#define BENCH_MIXED_QUERY_CLIENTS_DEFAULT 4u
#define BENCH_MIXED_QUERY_CLIENTS_MAX 64u
#define BENCH_MIXED_QUERY_RATE_DEFAULT 200u   /* queries/s over all query clients */
#define BENCH_MIXED_QUERY_RATE_MAX 1000000u
#define BENCH_MIXED_REPEAT_DEFAULT 1000u      /* tenant draws */
#define BENCH_MIXED_REPEAT_MAX 1000000u

typedef struct bench_net_mixed_options {
	const char *server;
	const char *key;              /* exactly one of key and key_file */
	const char *key_file;
	uint64_t preload_events;      /* the history: the reference workload of this many events */
	bool no_preload;              /* the server holds that history already: ingest nothing first */
	uint32_t tenant_count;
	uint64_t seed;
	uint64_t rate;                /* live events/s */
	uint32_t duration_s;          /* of the live ingest: rate x duration events */
	uint32_t connection_count;    /* live ingest connections */
	uint32_t batch_events;        /* live batches: at most this many events */
	uint32_t window_events;       /* live delivery window; 0: one second of traffic (rate) */
	uint32_t inflight;            /* per ingest connection */
	uint32_t query_client_count;
	uint32_t query_rate;          /* queries/s over all query clients; 0: back to back */
	uint32_t repeat;              /* tenant draws, cycled by the query clients */
	bool warm;                    /* ask every draw's queries once, untimed, before the live ingest */
	long server_pid;              /* 0: server RSS not read */
	bool json;
} bench_net_mixed_options;

/*
 * Runs `tally-bench mixed` and prints its report on stdout (progress and
 * errors on stderr). Returns the exit status: 0 the run completed with the
 * results the workload expects (a live rate that fell short is reported,
 * not an error); 1 the server could not be reached, refused the key, a
 * batch or a query (its code and message are printed), a transport error,
 * ingest results that do not match, or (--no-preload) a server holding
 * fewer events than the history; 2 a bad key or key file, a tenant key, or
 * a --batch over the server's batch limit.
 */
int bench_net_mixed_run(const bench_net_mixed_options *options);

#endif /* TALLY_BENCH_NET_MIXED_H */
