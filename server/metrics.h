/*
 * metrics.h — tallyd's counters, latency histograms and gauges, served in
 * the Prometheus text format (version 0.0.4) at GET /metrics by
 * libmicrohttpd on its own thread.
 *
 * Two sides, two threads:
 *   - Updates (metrics_add, metrics_error, metrics_observe_us) come from the
 *     event loop and the server's workers. Each is one or two relaxed
 *     atomic additions on a preallocated array: no lock, no allocation, no
 *     system call, so the event loop never waits for a scrape.
 *   - Reads (metrics_render, and GET /metrics on the HTTP thread) load each
 *     atomic once and call the server's gauge callback. A scrape racing
 *     with updates sees each counter at some recent value; a histogram's
 *     _count is always the sum of its buckets as read (so `le="+Inf"` equals
 *     _count), its _sum may be a few observations ahead or behind.
 *
 * docs/operations.md ("Metrics") lists every family, its type, labels and
 * meaning.
 */
#ifndef TALLY_SERVER_METRICS_H
#define TALLY_SERVER_METRICS_H

#include <stdint.h>

enum metric_counter {
	M_CONNECTIONS_ACCEPTED,
	M_CONNECTIONS_REFUSED, /* over a connection limit */
	M_CONNECTIONS_CLOSED,
	M_REQUESTS_HELLO,
	M_REQUESTS_INGEST,
	M_REQUESTS_QUERY,
	M_REQUESTS_LIST_EVENTS,
	M_REQUESTS_ADMIN,
	M_REQUESTS_EXPORT,
	M_REQUESTS_STATS,
	M_REQUESTS_PING,
	M_EVENTS_ACCEPTED,
	M_EVENTS_DUPLICATE,
	M_EVENTS_CONFLICT,
	M_EVENTS_REJECTED,
	M_BYTES_RECEIVED,
	M_BYTES_SENT,
	M_BACKPRESSURE_PAUSES, /* times reading was paused */
	M_READS_DEFERRED,      /* a connection's input set aside: it was at its own limits */
	M_TIMEOUTS_IDLE,
	M_TIMEOUTS_FRAME,
	M_TIMEOUTS_HELLO,
	M_ADMIN_ACTING_FOR_TENANT,
	M_COUNTER_COUNT
};

/* Errors sent, by protocol Error.Code 1..8 (BAD_REQUEST, UNAUTHENTICATED,
 * PERMISSION_DENIED, RESOURCE_EXHAUSTED, TOO_LARGE, UNAVAILABLE, CONFLICT,
 * INTERNAL); rendered as tally_errors_total{code="bad_request"} etc. */
#define METRICS_ERROR_CODE_MAX 8

enum metric_histogram {
	H_QUERY_US,
	H_LIST_EVENTS_US,
	H_INGEST_ACK_US, /* request received -> ack sent */
	H_COMMIT_WAIT_US,
	H_HISTOGRAM_COUNT
};

/* Every histogram's buckets: an observation of us microseconds falls in
 * the first bucket whose bound is >= us; the last bound is +Inf. The same
 * bounds as the engine's fsync histogram (tally_fsync_hist_bound_us). */
#define METRICS_HISTOGRAM_BUCKETS 14
#define METRICS_HISTOGRAM_BOUNDS_US                                                                      \
	{50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000, INT64_MAX}

/* The HTTP side's limits: scrapers served at once (more wait in the
 * kernel's backlog), and how long a connection may sit idle. */
#define METRICS_HTTP_CONNECTIONS_MAX 32
#define METRICS_HTTP_TIMEOUT_S 10

/* Room in metrics_gauges for a copied fsync histogram (the engine's has
 * TALLY_FSYNC_HIST_BUCKETS). */
#define METRICS_FSYNC_BUCKETS_MAX 32

/* Gauges are read at scrape time through a callback the server supplies.
 * Fields the callback leaves alone render as 0 (the struct is zeroed
 * before each call). */
typedef struct metrics_gauges {
	uint64_t connections, tenants, wal_bytes, wal_files, segment_files, segment_bytes, segment_rows,
		memtable_events, memtable_bytes, rollup_bytes, dedup_bytes, query_cache_bytes,
		durable_lsn, pending_bytes;
	uint64_t fsync_count, fsync_us_total;
	const uint64_t *fsync_hist;          /* fsync_hist_buckets per-bucket counts (not cumulative), or NULL */
	const int64_t *fsync_hist_bounds_us; /* ascending upper bounds; the last is INT64_MAX meaning +Inf */
	int fsync_hist_buckets;
	/* Storage the two pointers above may point into, so that a callback
	 * can copy a tally_stats it read into a local variable (the struct
	 * lives until the scrape is rendered; the callback's stack does not). */
	uint64_t fsync_hist_storage[METRICS_FSYNC_BUCKETS_MAX];
	int64_t fsync_hist_bounds_storage[METRICS_FSYNC_BUCKETS_MAX];
	/* From tally_stats as well: */
	uint64_t store_readonly;   /* 1 when the store refuses writes (sticky_error set), else 0 */
	uint64_t wal_direct_io;    /* 1 when the WAL writes with O_DIRECT (tally_stats.wal_direct_io) */
	uint64_t flush_count;      /* memtable flushes since the store opened */
	uint64_t compaction_count; /* compactions since the store opened */
	uint64_t ingest_calls;        /* engine ingest calls since the store opened */
	uint64_t ingest_lock_hold_us; /* their time holding the store lock */
	uint64_t ingest_lock_wait_us; /* their time waiting for it */
	uint64_t ingest_lock_hold_max_us;  /* the longest one ingest call held it */
	uint64_t dedup_expiry_count;       /* fingerprint expiry passes since the store opened */
	uint64_t dedup_expiry_us_last;     /* the last pass's duration */
	uint64_t dedup_expiry_hold_max_us; /* the longest hold of the store lock by one step of a pass */
} metrics_gauges;

/* Fills *out (zeroed by the caller). Called on the HTTP thread for each
 * scrape and on any thread that calls metrics_render, possibly at the same
 * time: it must be thread-safe, and quick (a scraper waits on it; the event
 * loop does not). fsync_hist and fsync_hist_bounds_us must point into *out's
 * storage or to memory that outlives the scrape, never to the callback's
 * own stack. */
typedef void (*metrics_gauge_fn)(void *ctx, metrics_gauges *out);

typedef struct metrics metrics;

/*
 * Starts the metrics. addr is "host:port" or "[v6]:port" (config_split_addr;
 * the host is resolved with getaddrinfo, IPv4 or IPv6; port 0 picks a free
 * port, see metrics_port); NULL or "off": counters only, no HTTP. fn (may
 * be NULL: no gauges but the process's memory) is called with ctx.
 *
 * The HTTP thread starts with every signal blocked, so the process's
 * signals go to the server's own threads.
 *
 * Returns 0 and *out (free with metrics_close), or -EINVAL (a bad or
 * unresolvable address), -ENOMEM, or the error libmicrohttpd left in errno
 * (-EADDRINUSE for a port in use; -EIO when it left none), with errmsg
 * (TALLY_ERRMSG_SIZE) starting "metrics: " and naming the address.
 */
int metrics_open(const char *addr, metrics_gauge_fn fn, void *ctx, metrics **out, char *errmsg);

/* The TCP port the HTTP server listens on; 0 without HTTP. */
uint16_t metrics_port(const metrics *m);

/* Stops the HTTP thread first (closing scrapes in progress), then frees m.
 * No update may run or follow. NULL: nothing. */
void metrics_close(metrics *m);

/* Adds n to counter c. Any thread. */
void metrics_add(metrics *m, enum metric_counter c, uint64_t n);

/* Counts one Error sent with protocol code error_code (1..METRICS_ERROR_CODE_MAX). Any thread. */
void metrics_error(metrics *m, int error_code);

/* Records one observation of us microseconds in histogram h. Any thread. */
void metrics_observe_us(metrics *m, enum metric_histogram h, uint64_t us);

/* The current value of counter c (for `tally stats` and tests). */
uint64_t metrics_counter(const metrics *m, enum metric_counter c);

/* The exposition text (the same as GET /metrics returns), NUL-terminated,
 * malloc-ed: the caller frees it. NULL when memory ran out. Any thread. */
char *metrics_render(metrics *m);

#endif /* TALLY_SERVER_METRICS_H */
