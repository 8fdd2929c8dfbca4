/*
 * net.h — what the protocol benchmarks (`tally-bench ingest`, `tally-bench
 * mixed`) share: the API key, sessions opened with a clear message, the
 * reference workload cut into pre-encoded per-tenant IngestBatch messages,
 * and the pipelined, optionally paced, ingest of those batches over several
 * connections (bench/README.md, "Protocol benchmarks"). Everything goes
 * through proto/client.h and proto/builder.h; nothing here knows the
 * server's internals.
 */
#ifndef TALLY_BENCH_NET_H
#define TALLY_BENCH_NET_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"
#include "workload.h"

#define NET_CONNECTIONS_MAX 64u
#define NET_INFLIGHT_DEFAULT 8u          /* batches in flight per connection, before the server's limit */
#define NET_BATCH_EVENTS_DEFAULT 5000u
#define NET_RATE_MAX UINT64_C(100000000) /* events/s of a paced run */
#define NET_TIMEOUT_MS 60000u            /* a call the server leaves unanswered this long fails */
#define NET_RETRIES_MAX 100u             /* resends of one batch after RESOURCE_EXHAUSTED / UNAVAILABLE */
#define NET_RETRY_WAIT_MS_MAX 1000u      /* the longest retry_after_ms honoured */
#define NET_KEY_SIZE_MAX 256             /* an API key, NUL included */
#define NET_ERROR_SIZE 512               /* one failure's message */
#define NET_ID_PREFIX_SIZE_MAX 24        /* net_cut.id_prefix, NUL included: ids stay within 64 bytes */
#define NET_RATE_HELD_FRACTION 0.98      /* a paced run held its rate at >= 98% of it */

/* ---- keys and sessions ---------------------------------------------------------- */

/*
 * The API key: `key` itself, or the first line of key_file without its line
 * end (exactly one of them is not NULL). Writes it into out (size bytes,
 * NUL-terminated). 0, or 2 (the usage exit status) after printing why on
 * stderr: both or neither given, a file that cannot be read, an empty key,
 * a key longer than size - 1.
 */
int net_key_load(const char *key, const char *key_file, char *out, size_t size);

/*
 * Connects to server ("HOST:PORT") and authenticates with key; client_name
 * goes to the server's logs. Every later call on *out times out after
 * NET_TIMEOUT_MS. 0 with *out open and *info filled; or 1 after printing
 * one line on stderr naming the server and the cause (server down, key
 * refused with the server's code and message, a transport error).
 */
int net_session_open(const char *server, const char *key, const char *client_name,
		     tally_client **out, tally_session_info *info);

/* What a first session told about the server. */
typedef struct net_server {
	const char *address;          /* "HOST:PORT" as given */
	char key[NET_KEY_SIZE_MAX];
	tally_session_info info;      /* version, limits (0 where the server sent none) */
	uint32_t frame_bytes_max;     /* info's, or the protocol's default */
} net_server;

/*
 * Loads the key (net_key_load), opens one session with it (client_name for
 * the server's logs) and checks that it is an admin key and that
 * batch_events fits the server's batch limit. Fills *out; the session is
 * kept in *session when session is not NULL (the caller closes it), else
 * closed. 0; 1 when the server cannot be reached or refuses the key; 2 for
 * a bad key or key file, a tenant key, or batch_events over the limit —
 * each after printing why.
 */
int net_server_probe(const char *address, const char *key, const char *key_file,
		     const char *client_name, uint32_t batch_events, net_server *out,
		     tally_client **session);

/*
 * Writes "WHAT: refused by the server: CODE: message" (rc is
 * TALLY_CLIENT_REFUSED: the server's Error on c) or "WHAT: <description of
 * rc>" into text (size bytes).
 */
void net_failure_text(char *text, size_t size, const char *what, const tally_client *c, int rc);

/* ---- batches -------------------------------------------------------------------- */

/* How the workload's per-tenant batches become protocol batches. */
typedef struct net_cut {
	uint32_t batch_events;    /* at most this many events per batch, 1..65,536 */
	size_t frame_bytes_max;   /* a batch's Request stays under this (HelloOk's frame limit) */
	/* Live traffic (`mixed`), else NULL and 0: each event id gets this
	 * prefix (a run's own ids, so no id of another run comes back as a
	 * CONFLICT), and unique event u (time order) gets the time
	 * time_base_us + u * time_span_us / unique events, so the events of a
	 * paced run happen while it runs. An original and its re-sends get the
	 * same id and time, so re-sends stay DUPLICATE. */
	const char *id_prefix;    /* < NET_ID_PREFIX_SIZE_MAX bytes */
	int64_t time_base_us;
	int64_t time_span_us;
} net_cut;

typedef struct net_batch {
	Tally__V1__IngestBatch *message; /* owned (protobuf-c unpacked); admin fields set */
	uint32_t event_count;
	uint32_t tenant;                 /* index into the workload's tenant_names */
	uint64_t events_before;          /* events of all earlier batches: its place in a paced schedule */
} net_batch;

typedef struct net_batches {
	net_batch *batch;                /* in send order */
	uint64_t count;
	uint64_t event_count;
	uint64_t encoded_bytes;          /* packed IngestBatch messages, all batches */
} net_batches;

/*
 * Cuts every batch of w (one tenant's events of one delivery window, in
 * delivery order) into protocol batches of at most cut->batch_events events
 * (fewer when the frame limit needs it), in w's batch order, each naming
 * its tenant with create_tenant set (admin keys create tenants on first
 * use). Each message is built with builder.h, packed and unpacked again,
 * so what is kept is exactly what goes on the wire and owns its memory
 * (w may be freed afterwards). 0, or -ENOMEM / -E2BIG (an event alone over
 * the frame limit) with errmsg (NET_ERROR_SIZE bytes) saying so; *out is
 * then empty.
 */
int net_batches_build(const workload *w, const net_cut *cut, net_batches *out, char *errmsg);

/* Frees the messages; *b becomes empty. */
void net_batches_free(net_batches *b);

/*
 * workload_generate with a progress line on stderr and its duration in
 * *generate_s. 0, or 1 after printing why (w is then empty).
 */
int net_workload_generate(workload *w, const workload_params *params, double *generate_s);

/*
 * net_batches_build with a progress line on stderr and its duration in
 * *build_s. 0, or 1 after printing why.
 */
int net_batches_prepare(const workload *w, const net_cut *cut, net_batches *out, double *build_s);

/*
 * Creates every tenant that b's batches name, with CreateTenant on one
 * session, one at a time (the server issues each a key too); a tenant that
 * exists already (CONFLICT) is counted in *existing. Lets a run time the
 * ingest path apart from the first-use creation of its tenants. 0 with
 * *created, *existing and *seconds filled, or 1 after printing the failure.
 */
int net_tenants_create(const net_server *server, const char *client_name, const net_batches *b,
		       uint64_t *created, uint64_t *existing, double *seconds);

/* ---- ingest ----------------------------------------------------------------------- */

typedef struct net_ingest_options {
	const char *server;
	const char *key;                 /* an admin key: the batches name their tenants */
	const char *client_name;
	uint32_t connection_count;       /* 1..NET_CONNECTIONS_MAX, one thread each */
	uint32_t inflight;               /* batches in flight per connection (lowered to the server's limit) */
	uint64_t rate;                   /* events/s over all connections; 0: as fast as acks come */
	atomic_int *abort;               /* may be NULL; set by someone else: stop sending */
} net_ingest_options;

typedef struct net_ingest_figures {
	uint32_t inflight;               /* per connection, after the server's limit */
	double ingest_s;                 /* first send to last ack */
	double events_per_s;             /* acknowledged events / ingest_s */
	double schedule_s;               /* paced: events / rate, the time the schedule takes */
	double paced_events_per_s;       /* paced: acknowledged events / (last ack - schedule start) */
	bool rate_held;                  /* paced: paced_events_per_s >= NET_RATE_HELD_FRACTION x rate */
	double ack_us[4];                /* per batch, first send -> ack: P50, P95, P99, max */
	double send_lag_us[4];           /* paced: first send - scheduled time: P50, P95, P99, max */
	uint64_t events_acked;
	uint64_t batches_acked;
	uint64_t result_count[4];        /* accepted, duplicate, conflict, rejected */
	uint32_t first_reject_reason;    /* engine/tally.h enum tally_reject_reason, 0 if none */
	uint64_t retries;                /* resends after RESOURCE_EXHAUSTED / UNAVAILABLE */
} net_ingest_figures;

/*
 * Opens options->connection_count sessions (untimed), then sends every
 * batch of b and waits for its ack. Batches are claimed in order from one
 * counter by whichever connection has room: up to `inflight` in flight per
 * connection; with a rate, batch i is not sent before start + (events
 * before it) / rate. A batch refused with RESOURCE_EXHAUSTED or
 * UNAVAILABLE is sent again after retry_after_ms (at most NET_RETRIES_MAX
 * times). Fills *f (zeroed first). Returns 0 when every batch was
 * acknowledged (whether the results are the expected ones is the caller's
 * to check: net_results_check), or 1 after printing the first failure on
 * stderr (a session refused, a batch refused by the server with its code
 * and message, a transport error, options->abort set).
 */
int net_ingest_run(const net_ingest_options *options, const net_batches *b, net_ingest_figures *f);

/*
 * Compares f's results with a workload's: ACCEPTED must equal its unique
 * events, DUPLICATE its re-sends, nothing CONFLICT or REJECTED, every event
 * acknowledged. Prints the difference on stderr (labelled with `what`) and
 * returns false when they differ.
 */
bool net_results_check(const net_ingest_figures *f, uint64_t unique_count, uint64_t resend_count,
		       const char *what);

/* ---- reports --------------------------------------------------------------------- */

/*
 * Prints f on stdout as the lines of a text report, each indented by
 * `indent` spaces: throughput, results (MISMATCH when results_match is
 * false), ack latency, pacing when rate is not 0, retries.
 */
void net_figures_print(const net_ingest_figures *f, uint64_t rate, bool results_match, int indent);

/*
 * Adds f to object: events_per_s, ingest_s, ack_p50_us ... ack_max_us,
 * accepted, duplicates, conflicts, rejected, results_match, retries,
 * inflight; with a rate also rate, schedule_s, paced_events_per_s,
 * rate_held, send_lag_p50_us ... send_lag_max_us. 0, or -1 when memory ran
 * out.
 */
int net_figures_json(json_t *object, const net_ingest_figures *f, uint64_t rate, bool results_match);

/* A server's memory, read from /proc/PID/status when pid is not 0. */
typedef struct net_server_memory {
	long pid;               /* 0: not asked */
	bool read;              /* the figures below were read */
	uint64_t rss_bytes;     /* VmRSS */
	uint64_t rss_peak_bytes; /* VmHWM */
} net_server_memory;

/* Reads pid's VmRSS and VmHWM into *m (m->pid = pid); pid 0 reads nothing.
 * A process that cannot be read is reported on stderr and leaves
 * m->read false (the run goes on: the figure is optional). */
void net_server_memory_read(long pid, net_server_memory *m);

/* Adds m to object when it was read: server_pid, server_rss_bytes,
 * server_rss_peak_bytes. 0, or -1 when memory ran out. */
int net_server_memory_json(json_t *object, const net_server_memory *m);

#endif /* TALLY_BENCH_NET_H */
