/*
 * metrics.c — counters, histograms and the /metrics endpoint (metrics.h).
 *
 * NOTES ON THE DESIGN
 *
 * 1. The update path is one relaxed atomic add per counter (two for a
 *    histogram: its bucket and its sum). Relaxed is enough: a counter is
 *    not used to publish other memory, and each add is still atomic, so no
 *    increment is ever lost, whatever the threads.
 *
 * 2. Histograms keep per-bucket counts, not cumulative ones, and no
 *    separate count: rendering sums the buckets as it reads them, so the
 *    cumulative series is monotone and `le="+Inf"` equals `_count` even
 *    when observations land during a scrape. Durations are kept in integer
 *    microseconds and printed as exact decimal seconds (2500 us is
 *    "0.0025"), never through a float.
 *
 * 3. The HTTP side is libmicrohttpd with its own polling thread (epoll on
 *    Linux: a tallyd with more than 1024 descriptors would break select()).
 *    It serves several scrapers at once, at most METRICS_HTTP_CONNECTIONS_MAX,
 *    each idle at most METRICS_HTTP_TIMEOUT_S. The response is rendered into
 *    one malloc-ed buffer that libmicrohttpd frees (MHD_RESPMEM_MUST_FREE).
 *
 * 4. libmicrohttpd reports why it could not start (a port in use) only to
 *    its logger. The logger keeps the first message of metrics_open's
 *    start for errmsg; once serving, it counts messages (failed accepts,
 *    clients gone mid-response) in tally_metrics_http_errors_total rather
 *    than writing to stderr outside the server's log format.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "config.h"
#include "fail.h"
#include "metrics.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

static const int64_t histogram_bounds_us[METRICS_HISTOGRAM_BUCKETS] = METRICS_HISTOGRAM_BOUNDS_US;

typedef struct histogram {
	_Atomic uint64_t buckets[METRICS_HISTOGRAM_BUCKETS]; /* per bucket, not cumulative */
	_Atomic uint64_t sum_us;
} histogram;

struct metrics {
	_Atomic uint64_t counters[M_COUNTER_COUNT];
	_Atomic uint64_t errors[METRICS_ERROR_CODE_MAX + 1]; /* [0] unused: codes start at 1 */
	histogram histograms[H_HISTOGRAM_COUNT];
	_Atomic uint64_t http_errors; /* libmicrohttpd log messages while serving */

	metrics_gauge_fn gauge_fn;
	void *gauge_ctx;

	struct MHD_Daemon *daemon; /* NULL: counters only */
	uint16_t port;
	atomic_bool serving;     /* the logger counts instead of keeping the message */
	pthread_mutex_t start_lock; /* guards start_error (the logger may run on MHD's thread) */
	char start_error[256];   /* the first libmicrohttpd message while starting */
};

/* ---- Families --------------------------------------------------------------- */

typedef struct counter_spec {
	const char *family; /* consecutive counters of one family share HELP and TYPE */
	const char *help;
	const char *labels; /* "kind=\"ingest\"" or NULL */
} counter_spec;

static const counter_spec counter_specs[M_COUNTER_COUNT] = {
	[M_CONNECTIONS_ACCEPTED] = {"tally_connections_accepted_total", "Protocol connections accepted.", NULL},
	[M_CONNECTIONS_REFUSED] = {"tally_connections_refused_total",
				   "Protocol connections closed at once because a connection limit was reached.",
				   NULL},
	[M_CONNECTIONS_CLOSED] = {"tally_connections_closed_total",
				  "Protocol connections closed, for any reason (by the client, a timeout, an error).",
				  NULL},
	[M_REQUESTS_HELLO] = {"tally_requests_total", "Requests received, by kind.", "kind=\"hello\""},
	[M_REQUESTS_INGEST] = {"tally_requests_total", NULL, "kind=\"ingest\""},
	[M_REQUESTS_QUERY] = {"tally_requests_total", NULL, "kind=\"query\""},
	[M_REQUESTS_LIST_EVENTS] = {"tally_requests_total", NULL, "kind=\"list_events\""},
	[M_REQUESTS_ADMIN] = {"tally_requests_total", NULL, "kind=\"admin\""},
	[M_REQUESTS_EXPORT] = {"tally_requests_total", NULL, "kind=\"export\""},
	[M_REQUESTS_STATS] = {"tally_requests_total", NULL, "kind=\"stats\""},
	[M_REQUESTS_PING] = {"tally_requests_total", NULL, "kind=\"ping\""},
	[M_EVENTS_ACCEPTED] = {"tally_events_total", "Ingested events, by their result in the acknowledgement.",
			       "result=\"accepted\""},
	[M_EVENTS_DUPLICATE] = {"tally_events_total", NULL, "result=\"duplicate\""},
	[M_EVENTS_CONFLICT] = {"tally_events_total", NULL, "result=\"conflict\""},
	[M_EVENTS_REJECTED] = {"tally_events_total", NULL, "result=\"rejected\""},
	[M_BYTES_RECEIVED] = {"tally_received_bytes_total", "Bytes read from protocol connections.", NULL},
	[M_BYTES_SENT] = {"tally_sent_bytes_total", "Bytes written to protocol connections.", NULL},
	[M_BACKPRESSURE_PAUSES] = {"tally_backpressure_pauses_total",
				   "Times the server stopped reading requests because pending request bytes reached "
				   "pending_bytes_max.",
				   NULL},
	[M_READS_DEFERRED] = {"tally_deferred_reads_total",
			      "Times a connection's received bytes were set aside because it had "
			      "inflight_max requests in flight or too much unsent output; it is read "
			      "again as answers go out.",
			      NULL},
	[M_TIMEOUTS_IDLE] = {"tally_timeouts_total", "Connections closed by a timeout, by kind.", "kind=\"idle\""},
	[M_TIMEOUTS_FRAME] = {"tally_timeouts_total", NULL, "kind=\"frame\""},
	[M_TIMEOUTS_HELLO] = {"tally_timeouts_total", NULL, "kind=\"hello\""},
	[M_ADMIN_ACTING_FOR_TENANT] = {"tally_admin_acting_for_tenant_total",
				       "Requests made with an admin key on behalf of a named tenant.", NULL},
};

/* Protocol Error.Code names (proto/tally.proto), lower case. */
static const char *const error_names[METRICS_ERROR_CODE_MAX + 1] = {
	NULL, "bad_request", "unauthenticated", "permission_denied", "resource_exhausted",
	"too_large", "unavailable", "conflict", "internal",
};

typedef struct histogram_spec {
	const char *family;
	const char *help;
} histogram_spec;

static const histogram_spec histogram_specs[H_HISTOGRAM_COUNT] = {
	[H_QUERY_US] = {"tally_query_duration_seconds",
			"Query requests, from their hand-over to the query threads to the answer being ready."},
	[H_LIST_EVENTS_US] = {"tally_list_events_duration_seconds",
			      "ListEvents requests, from their hand-over to the query threads to the page being "
			      "ready."},
	[H_INGEST_ACK_US] = {"tally_ingest_ack_duration_seconds",
			     "Ingest batches, from decoded to the acknowledgement being queued (the WAL fsync "
			     "included)."},
	[H_COMMIT_WAIT_US] = {"tally_commit_wait_duration_seconds",
			      "Waits for the write-ahead log to become durable up to a position (one per group "
			      "commit, covering every batch before it)."},
};

typedef struct gauge_spec {
	const char *family;
	const char *help;
	size_t offset; /* of a uint64_t in metrics_gauges */
} gauge_spec;

#define GAUGE(field) offsetof(metrics_gauges, field)

static const gauge_spec gauge_specs[] = {
	{"tally_connections", "Protocol connections open.", GAUGE(connections)},
	{"tally_pending_bytes", "Request bytes accepted but not yet answered, server-wide.", GAUGE(pending_bytes)},
	{"tally_tenants", "Tenants in the store.", GAUGE(tenants)},
	{"tally_wal_bytes", "Bytes in live write-ahead-log files.", GAUGE(wal_bytes)},
	{"tally_wal_files", "Live write-ahead-log files.", GAUGE(wal_files)},
	{"tally_durable_lsn", "The last log sequence number known durable.", GAUGE(durable_lsn)},
	{"tally_segment_files", "Live segment files.", GAUGE(segment_files)},
	{"tally_segment_bytes", "Bytes in live segment files.", GAUGE(segment_bytes)},
	{"tally_segment_rows", "Events in live segment files.", GAUGE(segment_rows)},
	{"tally_memtable_events", "Events in memtables, not yet flushed to segments.", GAUGE(memtable_events)},
	{"tally_memtable_bytes", "Bytes held by memtables.", GAUGE(memtable_bytes)},
	{"tally_rollup_bytes", "Bytes of rollup pages in live segment files.", GAUGE(rollup_bytes)},
	{"tally_dedup_bytes", "Bytes of RAM held by the duplicate-detection index.", GAUGE(dedup_bytes)},
	{"tally_query_cache_bytes", "Bytes of RAM held by decoded rollup pages kept for queries.",
	 GAUGE(query_cache_bytes)},
	{"tally_store_readonly", "1 when the store refuses writes after a failed write or fsync (restart to recover), "
				 "else 0.",
	 GAUGE(store_readonly)},
	{"tally_wal_direct_io", "1 when the write-ahead log writes its files with O_DIRECT, 0 when through the "
				"page cache (the file system refused direct I/O, or no WAL file yet).",
	 GAUGE(wal_direct_io)},
};

/* Counters the engine keeps, read through the gauge callback. */
static const gauge_spec engine_counter_specs[] = {
	{"tally_flushes_total", "Memtable flushes since the store opened.", GAUGE(flush_count)},
	{"tally_compactions_total", "Segment compactions since the store opened.", GAUGE(compaction_count)},
	{"tally_ingest_calls_total", "Engine ingest calls since the store opened.", GAUGE(ingest_calls)},
	{"tally_dedup_expiries_total", "Daily fingerprint expiry passes finished since the store opened.",
	 GAUGE(dedup_expiry_count)},
};

/* Engine counters of microseconds, rendered in seconds. */
static const gauge_spec engine_seconds_specs[] = {
	{"tally_ingest_lock_hold_seconds_total",
	 "Time ingest calls held the store lock applying events; its rate near 1 means ingest is bound by the lock.",
	 GAUGE(ingest_lock_hold_us)},
	{"tally_ingest_lock_wait_seconds_total",
	 "Time ingest calls waited for the store lock, or for a flush to catch up.",
	 GAUGE(ingest_lock_wait_us)},
};

/* Engine gauges of microseconds, rendered in seconds. */
static const gauge_spec engine_seconds_gauge_specs[] = {
	{"tally_ingest_lock_hold_max_seconds",
	 "The longest one ingest call held the store lock since the store opened (queries and other "
	 "ingest waited behind it).",
	 GAUGE(ingest_lock_hold_max_us)},
	{"tally_dedup_expiry_last_seconds", "How long the last fingerprint expiry pass took.",
	 GAUGE(dedup_expiry_us_last)},
	{"tally_dedup_expiry_hold_max_seconds",
	 "The longest one step of a fingerprint expiry pass held the store lock since the store opened "
	 "(what an ingest or a query may have waited for).",
	 GAUGE(dedup_expiry_hold_max_us)},
};

/* ---- Updates ------------------------------------------------------------------ */

void metrics_add(metrics *m, enum metric_counter c, uint64_t n)
{
	assert((unsigned)c < M_COUNTER_COUNT);
	atomic_fetch_add_explicit(&m->counters[c], n, memory_order_relaxed);
}

void metrics_error(metrics *m, int error_code)
{
	assert(error_code >= 1 && error_code <= METRICS_ERROR_CODE_MAX);
	atomic_fetch_add_explicit(&m->errors[error_code], 1, memory_order_relaxed);
}

void metrics_observe_us(metrics *m, enum metric_histogram h, uint64_t us)
{
	assert((unsigned)h < H_HISTOGRAM_COUNT);
	/* The last bound is INT64_MAX: the loop always stops at it or before. */
	int b = 0;
	while (b < METRICS_HISTOGRAM_BUCKETS - 1 && us > (uint64_t)histogram_bounds_us[b])
		b++;
	atomic_fetch_add_explicit(&m->histograms[h].buckets[b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->histograms[h].sum_us, us, memory_order_relaxed);
}

uint64_t metrics_counter(const metrics *m, enum metric_counter c)
{
	assert((unsigned)c < M_COUNTER_COUNT);
	return atomic_load_explicit(&((metrics *)m)->counters[c], memory_order_relaxed);
}

/* ---- Rendering ---------------------------------------------------------------- */

static void family_header(FILE *f, const char *family, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", family, help, family, type);
}

/* us as exact decimal seconds: 50 -> "0.00005", 2500000 -> "2.5", 0 -> "0". */
static void format_seconds(char *out, size_t out_size, uint64_t us)
{
	int n = snprintf(out, out_size, "%" PRIu64 ".%06" PRIu64, us / 1000000, us % 1000000);
	assert(n > 0 && (size_t)n < out_size);
	while (out[n - 1] == '0')
		out[--n] = '\0';
	if (out[n - 1] == '.')
		out[n - 1] = '\0';
}

/* Renders specs[0, n) of g, microseconds shown as seconds, as `type`. */
static void render_seconds(FILE *f, const gauge_spec *specs, size_t n, const char *type,
			   const metrics_gauges *g)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t us;
		memcpy(&us, (const char *)g + specs[i].offset, sizeof(us));
		char seconds[32];
		format_seconds(seconds, sizeof(seconds), us);
		family_header(f, specs[i].family, type, specs[i].help);
		fprintf(f, "%s %s\n", specs[i].family, seconds);
	}
}

/* One histogram family from per-bucket counts (bounds ascending, in us;
 * INT64_MAX is +Inf, and a +Inf bucket is added when the bounds lack one). */
static void render_histogram(FILE *f, const char *family, const char *help, const uint64_t *buckets,
			     const int64_t *bounds_us, int bucket_count, uint64_t sum_us)
{
	family_header(f, family, "histogram", help);
	uint64_t cumulative = 0;
	bool infinite = false;
	for (int i = 0; i < bucket_count; i++) {
		assert(i == 0 || bounds_us[i] > bounds_us[i - 1]);
		assert(bounds_us[i] >= 0);
		cumulative += buckets[i];
		char le[32];
		if (bounds_us[i] == INT64_MAX) {
			assert(i == bucket_count - 1);
			infinite = true;
			snprintf(le, sizeof(le), "+Inf");
		} else {
			format_seconds(le, sizeof(le), (uint64_t)bounds_us[i]);
		}
		fprintf(f, "%s_bucket{le=\"%s\"} %" PRIu64 "\n", family, le, cumulative);
	}
	if (!infinite)
		fprintf(f, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", family, cumulative);
	char sum[32];
	format_seconds(sum, sizeof(sum), sum_us);
	fprintf(f, "%s_sum %s\n%s_count %" PRIu64 "\n", family, sum, family, cumulative);
}

/* Resident set size from /proc/self/statm (its second field, in pages).
 * false when it cannot be read: the metric is then left out of the scrape
 * rather than reported as 0. */
static bool process_resident_bytes(uint64_t *bytes)
{
	int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	char text[128];
	ssize_t n;
	do
		n = read(fd, text, sizeof(text) - 1);
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n <= 0)
		return false;
	text[n] = '\0';
	unsigned long long size_pages, resident_pages;
	long page_size = sysconf(_SC_PAGESIZE);
	if (sscanf(text, "%llu %llu", &size_pages, &resident_pages) != 2 || page_size <= 0)
		return false;
	*bytes = (uint64_t)resident_pages * (uint64_t)page_size;
	return true;
}

static void render(metrics *m, FILE *f)
{
	for (int c = 0; c < M_COUNTER_COUNT; c++) {
		const counter_spec *s = &counter_specs[c];
		assert(s->family);
		if (c == 0 || strcmp(s->family, counter_specs[c - 1].family) != 0)
			family_header(f, s->family, "counter", s->help);
		uint64_t v = atomic_load_explicit(&m->counters[c], memory_order_relaxed);
		if (s->labels)
			fprintf(f, "%s{%s} %" PRIu64 "\n", s->family, s->labels, v);
		else
			fprintf(f, "%s %" PRIu64 "\n", s->family, v);
	}

	family_header(f, "tally_errors_total", "counter", "Error responses sent, by protocol error code.");
	for (int code = 1; code <= METRICS_ERROR_CODE_MAX; code++)
		fprintf(f, "tally_errors_total{code=\"%s\"} %" PRIu64 "\n", error_names[code],
			atomic_load_explicit(&m->errors[code], memory_order_relaxed));

	for (int h = 0; h < H_HISTOGRAM_COUNT; h++) {
		uint64_t buckets[METRICS_HISTOGRAM_BUCKETS];
		for (int b = 0; b < METRICS_HISTOGRAM_BUCKETS; b++)
			buckets[b] = atomic_load_explicit(&m->histograms[h].buckets[b], memory_order_relaxed);
		uint64_t sum_us = atomic_load_explicit(&m->histograms[h].sum_us, memory_order_relaxed);
		render_histogram(f, histogram_specs[h].family, histogram_specs[h].help, buckets,
				 histogram_bounds_us, METRICS_HISTOGRAM_BUCKETS, sum_us);
	}

	if (m->gauge_fn) {
		metrics_gauges g;
		memset(&g, 0, sizeof(g));
		m->gauge_fn(m->gauge_ctx, &g);
		for (size_t i = 0; i < sizeof(gauge_specs) / sizeof(gauge_specs[0]); i++) {
			uint64_t v;
			memcpy(&v, (const char *)&g + gauge_specs[i].offset, sizeof(v));
			family_header(f, gauge_specs[i].family, "gauge", gauge_specs[i].help);
			fprintf(f, "%s %" PRIu64 "\n", gauge_specs[i].family, v);
		}
		for (size_t i = 0; i < sizeof(engine_counter_specs) / sizeof(engine_counter_specs[0]); i++) {
			uint64_t v;
			memcpy(&v, (const char *)&g + engine_counter_specs[i].offset, sizeof(v));
			family_header(f, engine_counter_specs[i].family, "counter", engine_counter_specs[i].help);
			fprintf(f, "%s %" PRIu64 "\n", engine_counter_specs[i].family, v);
		}
		render_seconds(f, engine_seconds_specs,
			       sizeof(engine_seconds_specs) / sizeof(engine_seconds_specs[0]), "counter", &g);
		render_seconds(f, engine_seconds_gauge_specs,
			       sizeof(engine_seconds_gauge_specs) / sizeof(engine_seconds_gauge_specs[0]),
			       "gauge", &g);
		/* Without the engine's histogram, the count alone: a histogram
		 * with only the +Inf bucket. */
		static const int64_t infinity_only[1] = {INT64_MAX};
		const char *help = "WAL commit fdatasync calls, by duration.";
		if (g.fsync_hist && g.fsync_hist_buckets > 0) {
			assert(g.fsync_hist_bounds_us);
			render_histogram(f, "tally_wal_fsync_duration_seconds", help, g.fsync_hist,
					 g.fsync_hist_bounds_us, g.fsync_hist_buckets, g.fsync_us_total);
		} else {
			render_histogram(f, "tally_wal_fsync_duration_seconds", help, &g.fsync_count, infinity_only, 1,
					 g.fsync_us_total);
		}
	}

	uint64_t resident;
	if (process_resident_bytes(&resident)) {
		family_header(f, "tally_process_resident_memory_bytes", "gauge",
			      "Resident memory of the tallyd process (/proc/self/statm).");
		fprintf(f, "tally_process_resident_memory_bytes %" PRIu64 "\n", resident);
	}

	family_header(f, "tally_metrics_http_errors_total", "counter",
		      "Errors libmicrohttpd reported while serving /metrics (failed accepts, clients gone).");
	fprintf(f, "tally_metrics_http_errors_total %" PRIu64 "\n",
		atomic_load_explicit(&m->http_errors, memory_order_relaxed));
}

char *metrics_render(metrics *m)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);
	if (!f)
		return NULL;
	render(m, f);
	/* A failed write (out of memory) shows in the stream's error flag or
	 * in fclose; either way the text is incomplete and is dropped. */
	bool failed = ferror(f) != 0;
	if (fclose(f) != 0 || failed) {
		free(text);
		return NULL;
	}
	return text;
}

/* ---- HTTP ------------------------------------------------------------------------ */

static enum MHD_Result reply_static(struct MHD_Connection *connection, unsigned status, const char *text,
				    bool allow)
{
	struct MHD_Response *response =
		MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
	if (!response)
		return MHD_NO; /* libmicrohttpd then closes the connection */
	enum MHD_Result ok = MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
						     "text/plain; charset=utf-8");
	if (ok == MHD_YES && allow)
		ok = MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	if (ok == MHD_YES)
		ok = MHD_queue_response(connection, status, response);
	MHD_destroy_response(response);
	return ok;
}

/* Answers on the first call for a request, before any body is read: a
 * scrape has none, and anything else is refused; libmicrohttpd then
 * discards the body or closes the connection. */
static enum MHD_Result handle_request(void *cls, struct MHD_Connection *connection, const char *url,
				      const char *method, const char *version, const char *upload_data,
				      size_t *upload_data_size, void **request_state)
{
	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)request_state;
	metrics *m = cls;
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply_static(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: use GET\n", true);
	if (strcmp(url, "/metrics") != 0)
		return reply_static(connection, MHD_HTTP_NOT_FOUND, "not found: the metrics are at /metrics\n",
				    false);
	char *text = metrics_render(m);
	if (!text)
		return reply_static(connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n", false);
	struct MHD_Response *response = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	if (!response) {
		free(text);
		return MHD_NO;
	}
	enum MHD_Result ok = MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, METRICS_CONTENT_TYPE);
	if (ok == MHD_YES)
		ok = MHD_queue_response(connection, MHD_HTTP_OK, response);
	MHD_destroy_response(response);
	return ok;
}

static void http_log(void *cls, const char *format, va_list args)
{
	metrics *m = cls;
	if (atomic_load(&m->serving)) {
		atomic_fetch_add_explicit(&m->http_errors, 1, memory_order_relaxed);
		return;
	}
	pthread_mutex_lock(&m->start_lock);
	if (!m->start_error[0]) {
		vsnprintf(m->start_error, sizeof(m->start_error), format, args);
		size_t n = strlen(m->start_error);
		while (n && (m->start_error[n - 1] == '\n' || m->start_error[n - 1] == '.'))
			m->start_error[--n] = '\0';
	}
	pthread_mutex_unlock(&m->start_lock);
}

/* Starts libmicrohttpd on addr; m->daemon and m->port on success. */
static int http_start(metrics *m, const char *addr, char *errmsg)
{
	char host[CONFIG_ADDR_SIZE], port[8];
	if (config_split_addr(addr, host, sizeof(host), port, sizeof(port)))
		return server_fail(errmsg, -EINVAL, "metrics: bad address '%s' (host:port or [v6]:port)", addr);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *found = NULL;
	int gai = getaddrinfo(host, port, &hints, &found);
	if (gai)
		return server_fail(errmsg, gai == EAI_SYSTEM ? -errno : -EINVAL, "metrics: cannot resolve '%s': %s",
				   host, gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
	/* The first address getaddrinfo prefers; one listener is enough for a
	 * scrape endpoint (name [::] or 0.0.0.0 for every address). */
	struct addrinfo *a = found;
	while (a && a->ai_family != AF_INET && a->ai_family != AF_INET6)
		a = a->ai_next;
	if (!a) {
		freeaddrinfo(found);
		return server_fail(errmsg, -EINVAL, "metrics: '%s' has no IPv4 or IPv6 address", host);
	}
	unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
	if (a->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;

	/* The HTTP thread inherits this thread's mask: block everything so
	 * that SIGTERM and friends reach the server's own threads. */
	sigset_t all, old;
	sigfillset(&all);
	int rc = pthread_sigmask(SIG_BLOCK, &all, &old);
	if (rc) {
		freeaddrinfo(found);
		return server_fail(errmsg, -rc, "metrics: pthread_sigmask: %s", strerror(rc));
	}
	errno = 0;
	m->daemon = MHD_start_daemon(flags, (uint16_t)strtoul(port, NULL, 10), NULL, NULL, handle_request, m,
				     MHD_OPTION_EXTERNAL_LOGGER, http_log, m,
				     MHD_OPTION_SOCK_ADDR, a->ai_addr,
				     MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_HTTP_CONNECTIONS_MAX,
				     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_HTTP_TIMEOUT_S,
				     MHD_OPTION_END);
	int start_errno = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	freeaddrinfo(found);
	if (!m->daemon) {
		const char *why = start_errno ? strerror(start_errno) : "libmicrohttpd did not start";
		pthread_mutex_lock(&m->start_lock);
		rc = server_fail(errmsg, start_errno ? -start_errno : -EIO, "metrics: cannot serve on %s: %s", addr,
				 m->start_error[0] ? m->start_error : why);
		pthread_mutex_unlock(&m->start_lock);
		return rc;
	}
	atomic_store(&m->serving, true);
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
	m->port = info ? info->port : 0;
	if (!m->port) {
		MHD_stop_daemon(m->daemon);
		m->daemon = NULL;
		return server_fail(errmsg, -EIO, "metrics: serving on %s, but its port is unknown", addr);
	}
	return 0;
}

int metrics_open(const char *addr, metrics_gauge_fn fn, void *ctx, metrics **out, char *errmsg)
{
	*out = NULL;
	metrics *m = calloc(1, sizeof(*m));
	if (!m)
		return server_fail(errmsg, -ENOMEM, "metrics: out of memory");
	m->gauge_fn = fn;
	m->gauge_ctx = ctx;
	int rc = pthread_mutex_init(&m->start_lock, NULL);
	if (rc) {
		free(m);
		return server_fail(errmsg, -rc, "metrics: pthread_mutex_init: %s", strerror(rc));
	}
	if (addr && strcmp(addr, "off") != 0) {
		rc = http_start(m, addr, errmsg);
		if (rc) {
			pthread_mutex_destroy(&m->start_lock);
			free(m);
			return rc;
		}
	}
	*out = m;
	return 0;
}

uint16_t metrics_port(const metrics *m)
{
	return m->port;
}

void metrics_close(metrics *m)
{
	if (!m)
		return;
	if (m->daemon)
		MHD_stop_daemon(m->daemon);
	pthread_mutex_destroy(&m->start_lock);
	free(m);
}
