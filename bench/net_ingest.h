/*
 * net_ingest.h — `tally-bench ingest`: the reference workload sent to a
 * running tallyd over the protocol, from several pipelining connections,
 * as fast as the acks come or paced at a rate (bench/README.md).
 */
#ifndef TALLY_BENCH_NET_INGEST_H
#define TALLY_BENCH_NET_INGEST_H

#include <stdbool.h>
#include <stdint.h>

#define BENCH_NET_CONNECTIONS_DEFAULT 2u

typedef struct bench_net_ingest_options {
	const char *server;        /* "HOST:PORT" */
	const char *key;           /* exactly one of key and key_file */
	const char *key_file;
	uint64_t event_count;
	uint32_t tenant_count;
	uint64_t seed;
	uint32_t connection_count; /* 1..NET_CONNECTIONS_MAX */
	uint32_t batch_events;     /* at most this many events per batch */
	uint32_t window_events;    /* 0: the whole workload (up to WORKLOAD_WINDOW_EVENTS_MAX) */
	uint32_t inflight;         /* per connection */
	uint64_t rate;             /* events/s; 0: unpaced */
	bool create_tenants;       /* create the tenants (CreateTenant) before the clock starts */
	long server_pid;           /* 0: server RSS not read */
	bool json;
} bench_net_ingest_options;

/*
 * Runs `tally-bench ingest` and prints its report on stdout (progress and
 * errors on stderr). Returns the exit status: 0 every batch was
 * acknowledged with the results the workload expects; 1 the server could
 * not be reached, refused the key or a request (its code and message are
 * printed), a transport error, or results that do not match (the report is
 * still printed, marked); 2 a bad key or key file, a key that is not an
 * admin key, or a --batch over the server's batch limit.
 */
int bench_net_ingest_run(const bench_net_ingest_options *options);

#endif /* TALLY_BENCH_NET_INGEST_H */
