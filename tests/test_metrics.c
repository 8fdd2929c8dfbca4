/*
 * test_metrics.c — server/metrics.c: counters, histograms and gauges as a
 * Prometheus scraper sees them over HTTP (libcurl), exact to the unit;
 * 404/405; "off"; a port in use; updates from 4 threads during scrapes.
 */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "server.h"
#include "support/server_batches.h"
#include "support/server_harness.h"
#include "tally.h"

static void setup(void)
{
	cr_assert_eq(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
}

static void teardown(void)
{
	curl_global_cleanup();
}

TestSuite(metrics, .init = setup, .fini = teardown);

/* ---- HTTP and text helpers ------------------------------------------------ */

typedef struct reply {
	long status;
	char *body; /* NUL-terminated */
	size_t size;
	char content_type[128];
	char allow[64];
} reply;

static size_t on_body(char *data, size_t size, size_t count, void *user)
{
	reply *r = user;
	size_t n = size * count;
	char *grown = realloc(r->body, r->size + n + 1);
	if (!grown)
		return 0;
	memcpy(grown + r->size, data, n);
	r->body = grown;
	r->size += n;
	r->body[r->size] = '\0';
	return n;
}

static size_t on_header(char *data, size_t size, size_t count, void *user)
{
	reply *r = user;
	size_t n = size * count;
	if (n > 7 && strncasecmp(data, "Allow: ", 7) == 0)
		snprintf(r->allow, sizeof(r->allow), "%.*s", (int)strcspn(data + 7, "\r\n"), data + 7);
	return n;
}

/* One request; false (and a message in *error) when it could not be made,
 * so that threads can report instead of asserting. */
static bool http_try(const char *method, const char *url, reply *r, char *error, size_t error_size)
{
	memset(r, 0, sizeof(*r));
	CURL *curl = curl_easy_init();
	if (!curl) {
		snprintf(error, error_size, "curl_easy_init failed");
		return false;
	}
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, r);
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
	else if (strcmp(method, "POST") == 0)
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "metric=1");
	else if (strcmp(method, "GET") != 0)
		curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	CURLcode rc = curl_easy_perform(curl);
	if (rc == CURLE_OK) {
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
		char *type = NULL;
		curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &type);
		snprintf(r->content_type, sizeof(r->content_type), "%s", type ? type : "");
	} else {
		snprintf(error, error_size, "%s %s: %s", method, url, curl_easy_strerror(rc));
	}
	curl_easy_cleanup(curl);
	return rc == CURLE_OK;
}

static void http(const char *method, const char *url, reply *r)
{
	char error[256];
	cr_assert(http_try(method, url, r, error, sizeof(error)), "%s", error);
}

static void url_of(const metrics *m, const char *path, char *url, size_t size)
{
	snprintf(url, size, "http://127.0.0.1:%u%s", (unsigned)metrics_port(m), path);
}

/* GET /metrics from 127.0.0.1:port; the body (free it). */
static char *scrape_port(uint16_t port)
{
	char url[128];
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/metrics", (unsigned)port);
	reply r;
	http("GET", url, &r);
	cr_assert_eq(r.status, 200, "GET %s: %ld", url, r.status);
	cr_assert_not_null(r.body);
	return r.body;
}

static char *scrape(const metrics *m)
{
	return scrape_port(metrics_port(m));
}

/* The value text of the sample whose series (name and labels) is exactly
 * series, or false. Exactly one such line must exist. */
static bool sample_text(const char *text, const char *series, char *value, size_t value_size)
{
	size_t n = strlen(series);
	bool found = false;
	for (const char *line = text; *line;) {
		const char *end = strchr(line, '\n');
		if (!end)
			end = line + strlen(line);
		if ((size_t)(end - line) > n && strncmp(line, series, n) == 0 && line[n] == ' ') {
			if (found)
				return false; /* a series twice */
			snprintf(value, value_size, "%.*s", (int)(end - line - n - 1), line + n + 1);
			found = true;
		}
		line = *end ? end + 1 : end;
	}
	return found;
}

static bool sample_u64(const char *text, const char *series, uint64_t *value)
{
	char v[64];
	if (!sample_text(text, series, v, sizeof(v)))
		return false;
	char *end;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || end == v || *end)
		return false;
	*value = x;
	return true;
}

static uint64_t sample(const char *text, const char *series)
{
	uint64_t v = 0;
	cr_assert(sample_u64(text, series, &v), "no single integer sample '%s' in:\n%s", series, text);
	return v;
}

static void expect_sample_text(const char *text, const char *series, const char *expected)
{
	char v[64];
	cr_assert(sample_text(text, series, v, sizeof(v)), "no single sample '%s'", series);
	cr_expect_str_eq(v, expected, "%s", series);
}

static metrics *open_http(metrics_gauge_fn fn, void *ctx)
{
	metrics *m;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(metrics_open("127.0.0.1:0", fn, ctx, &m, err), 0, "%s", err);
	cr_assert_neq(metrics_port(m), 0);
	return m;
}

/* The series of every counter, written out here so that a renamed metric
 * fails the test (dashboards and alerts depend on the names). */
static const struct {
	enum metric_counter counter;
	const char *series;
} counter_series[M_COUNTER_COUNT] = {
	{M_CONNECTIONS_ACCEPTED, "tally_connections_accepted_total"},
	{M_CONNECTIONS_REFUSED, "tally_connections_refused_total"},
	{M_CONNECTIONS_CLOSED, "tally_connections_closed_total"},
	{M_REQUESTS_HELLO, "tally_requests_total{kind=\"hello\"}"},
	{M_REQUESTS_INGEST, "tally_requests_total{kind=\"ingest\"}"},
	{M_REQUESTS_QUERY, "tally_requests_total{kind=\"query\"}"},
	{M_REQUESTS_LIST_EVENTS, "tally_requests_total{kind=\"list_events\"}"},
	{M_REQUESTS_ADMIN, "tally_requests_total{kind=\"admin\"}"},
	{M_REQUESTS_EXPORT, "tally_requests_total{kind=\"export\"}"},
	{M_REQUESTS_STATS, "tally_requests_total{kind=\"stats\"}"},
	{M_REQUESTS_PING, "tally_requests_total{kind=\"ping\"}"},
	{M_EVENTS_ACCEPTED, "tally_events_total{result=\"accepted\"}"},
	{M_EVENTS_DUPLICATE, "tally_events_total{result=\"duplicate\"}"},
	{M_EVENTS_CONFLICT, "tally_events_total{result=\"conflict\"}"},
	{M_EVENTS_REJECTED, "tally_events_total{result=\"rejected\"}"},
	{M_BYTES_RECEIVED, "tally_received_bytes_total"},
	{M_BYTES_SENT, "tally_sent_bytes_total"},
	{M_BACKPRESSURE_PAUSES, "tally_backpressure_pauses_total"},
	{M_READS_DEFERRED, "tally_deferred_reads_total"},
	{M_TIMEOUTS_IDLE, "tally_timeouts_total{kind=\"idle\"}"},
	{M_TIMEOUTS_FRAME, "tally_timeouts_total{kind=\"frame\"}"},
	{M_TIMEOUTS_HELLO, "tally_timeouts_total{kind=\"hello\"}"},
	{M_ADMIN_ACTING_FOR_TENANT, "tally_admin_acting_for_tenant_total"},
};

static const char *const error_series[METRICS_ERROR_CODE_MAX + 1] = {
	NULL,
	"tally_errors_total{code=\"bad_request\"}",
	"tally_errors_total{code=\"unauthenticated\"}",
	"tally_errors_total{code=\"permission_denied\"}",
	"tally_errors_total{code=\"resource_exhausted\"}",
	"tally_errors_total{code=\"too_large\"}",
	"tally_errors_total{code=\"unavailable\"}",
	"tally_errors_total{code=\"conflict\"}",
	"tally_errors_total{code=\"internal\"}",
};

/* The bucket bounds, in microseconds and as a scraper sees them. */
static const int64_t bounds_us[14] = {50,    100,    250,    500,    1000,    2500,    5000,
				      10000, 25000,  50000,  100000, 250000, 1000000, INT64_MAX};

static void le_of(int i, char *out, size_t size)
{
	static const char *const texts[14] = {"0.00005", "0.0001", "0.00025", "0.0005", "0.001",
					      "0.0025",  "0.005",  "0.01",    "0.025",  "0.05",
					      "0.1",     "0.25",   "1",       "+Inf"};
	snprintf(out, size, "%s", texts[i]);
}

/* ---- Tests ---------------------------------------------------------------------- */

/* Description: a scrape returns exactly the counters and error counts
 * added, each in its own series, and metrics_render says the same. */
Test(metrics, scrape_returns_exactly_the_counters_added)
{
	metrics *m = open_http(NULL, NULL);
	for (int i = 0; i < M_COUNTER_COUNT; i++) {
		enum metric_counter c = counter_series[i].counter;
		/* Different amounts, several adds each, one very large. */
		metrics_add(m, c, 1000003u * (uint64_t)(i + 1));
		metrics_add(m, c, (uint64_t)i);
	}
	metrics_add(m, M_BYTES_SENT, UINT64_C(1) << 50);
	for (int code = 1; code <= METRICS_ERROR_CODE_MAX; code++)
		for (int k = 0; k < code * 7; k++)
			metrics_error(m, code);

	char *text = scrape(m);
	char *rendered = metrics_render(m);
	cr_assert_not_null(rendered);
	for (int i = 0; i < M_COUNTER_COUNT; i++) {
		enum metric_counter c = counter_series[i].counter;
		uint64_t expected = 1000003u * (uint64_t)(i + 1) + (uint64_t)i;
		if (c == M_BYTES_SENT)
			expected += UINT64_C(1) << 50;
		cr_expect_eq(sample(text, counter_series[i].series), expected, "%s", counter_series[i].series);
		cr_expect_eq(sample(rendered, counter_series[i].series), expected, "%s", counter_series[i].series);
		cr_expect_eq(metrics_counter(m, c), expected, "%s", counter_series[i].series);
	}
	for (int code = 1; code <= METRICS_ERROR_CODE_MAX; code++) {
		cr_expect_eq(sample(text, error_series[code]), (uint64_t)code * 7, "%s", error_series[code]);
		cr_expect_eq(sample(rendered, error_series[code]), (uint64_t)code * 7, "%s", error_series[code]);
	}
	free(rendered);
	free(text);

	/* Adding again moves only what was added. */
	metrics_add(m, M_REQUESTS_PING, 5);
	text = scrape(m);
	cr_expect_eq(sample(text, "tally_requests_total{kind=\"ping\"}"), 1000003u * 11 + 10 + 5);
	cr_expect_eq(sample(text, "tally_requests_total{kind=\"stats\"}"), 1000003u * 10 + 9);
	free(text);
	metrics_close(m);
}

/* Description: histogram buckets are cumulative with inclusive upper bounds
 * (an observation equal to a bound is in that bucket), +Inf equals _count,
 * and _sum is the exact total in seconds; the untouched histograms are
 * all zero. */
Test(metrics, histogram_buckets_cumulative_count_and_sum_exact)
{
	metrics *m = open_http(NULL, NULL);
	static const uint64_t observations[] = {0,      1,      50,      51,      100,     2500,
						2501,   9999,   1000000, 1000001, 5000000, UINT64_C(86400000000)};
	size_t n = sizeof(observations) / sizeof(observations[0]);
	uint64_t sum = 0;
	for (size_t i = 0; i < n; i++) {
		metrics_observe_us(m, H_QUERY_US, observations[i]);
		sum += observations[i];
	}
	metrics_observe_us(m, H_COMMIT_WAIT_US, 300);

	char *text = scrape(m);
	for (int b = 0; b < 14; b++) {
		uint64_t expected = 0;
		for (size_t i = 0; i < n; i++)
			if (bounds_us[b] == INT64_MAX || observations[i] <= (uint64_t)bounds_us[b])
				expected++;
		char le[16], series[128];
		le_of(b, le, sizeof(le));
		snprintf(series, sizeof(series), "tally_query_duration_seconds_bucket{le=\"%s\"}", le);
		cr_expect_eq(sample(text, series), expected, "%s", series);
	}
	/* By hand, for a few: 0, 1, 50 are <= 50 us; 51 and 100 join at 100 us. */
	cr_expect_eq(sample(text, "tally_query_duration_seconds_bucket{le=\"0.00005\"}"), 3);
	cr_expect_eq(sample(text, "tally_query_duration_seconds_bucket{le=\"0.0001\"}"), 5);
	cr_expect_eq(sample(text, "tally_query_duration_seconds_bucket{le=\"0.0025\"}"), 6);
	cr_expect_eq(sample(text, "tally_query_duration_seconds_bucket{le=\"1\"}"), 9);
	cr_expect_eq(sample(text, "tally_query_duration_seconds_bucket{le=\"+Inf\"}"), n);
	cr_expect_eq(sample(text, "tally_query_duration_seconds_count"), n);
	cr_expect_eq(sum, UINT64_C(86407015203));
	expect_sample_text(text, "tally_query_duration_seconds_sum", "86407.015203");

	expect_sample_text(text, "tally_commit_wait_duration_seconds_sum", "0.0003");
	cr_expect_eq(sample(text, "tally_commit_wait_duration_seconds_bucket{le=\"0.00025\"}"), 0);
	cr_expect_eq(sample(text, "tally_commit_wait_duration_seconds_bucket{le=\"0.0005\"}"), 1);
	cr_expect_eq(sample(text, "tally_commit_wait_duration_seconds_count"), 1);
	static const char *const untouched[] = {"tally_list_events_duration_seconds",
						"tally_ingest_ack_duration_seconds"};
	for (int h = 0; h < 2; h++) {
		char series[128];
		for (int b = 0; b < 14; b++) {
			char le[16];
			le_of(b, le, sizeof(le));
			snprintf(series, sizeof(series), "%s_bucket{le=\"%s\"}", untouched[h], le);
			cr_expect_eq(sample(text, series), 0, "%s", series);
		}
		snprintf(series, sizeof(series), "%s_count", untouched[h]);
		cr_expect_eq(sample(text, series), 0);
		snprintf(series, sizeof(series), "%s_sum", untouched[h]);
		expect_sample_text(text, series, "0");
	}
	free(text);
	metrics_close(m);
}

typedef struct gauge_source {
	_Atomic int calls;
	void *ctx_seen;
	bool with_histogram;
} gauge_source;

static void fill_gauges(void *ctx, metrics_gauges *g)
{
	gauge_source *src = ctx;
	atomic_fetch_add(&src->calls, 1);
	src->ctx_seen = ctx;
	g->connections = 11;
	g->tenants = 12;
	g->wal_bytes = 13;
	g->wal_files = 14;
	g->segment_files = 15;
	g->segment_bytes = 16;
	g->segment_rows = 17;
	g->memtable_events = 18;
	g->memtable_bytes = 19;
	g->rollup_bytes = 20;
	g->dedup_bytes = 21;
	g->query_cache_bytes = 26;
	g->durable_lsn = UINT64_C(1) << 40;
	g->pending_bytes = 23;
	g->store_readonly = 1;
	g->wal_direct_io = 1;
	g->flush_count = 24;
	g->compaction_count = 25;
	g->ingest_calls = 27;
	g->ingest_lock_hold_us = 3500000;
	g->ingest_lock_wait_us = 1250;
	g->ingest_lock_hold_max_us = 9000;
	g->dedup_expiry_count = 28;
	g->dedup_expiry_us_last = 104563;
	g->dedup_expiry_hold_max_us = 169;
	g->fsync_count = 10;
	g->fsync_us_total = 123456;
	if (src->with_histogram) {
		/* Copied as from a tally_stats on this stack frame: into the
		 * struct's storage, as metrics.h asks. */
		static const uint64_t counts[4] = {3, 0, 5, 2};
		static const int64_t bounds[4] = {100, 1000, 10000, INT64_MAX};
		memcpy(g->fsync_hist_storage, counts, sizeof(counts));
		memcpy(g->fsync_hist_bounds_storage, bounds, sizeof(bounds));
		g->fsync_hist = g->fsync_hist_storage;
		g->fsync_hist_bounds_us = g->fsync_hist_bounds_storage;
		g->fsync_hist_buckets = 4;
	}
}

/* Description: gauges and the fsync histogram come from the callback, with
 * its ctx, at every scrape; without a histogram the fsync count is the
 * +Inf bucket; without a callback there are no store gauges but the
 * process's resident memory. */
Test(metrics, gauges_come_from_the_callback)
{
	gauge_source src = {.with_histogram = true};
	metrics *m = open_http(fill_gauges, &src);
	char *text = scrape(m);
	cr_expect_eq(atomic_load(&src.calls), 1);
	cr_expect_eq(src.ctx_seen, &src);
	static const struct {
		const char *series;
		uint64_t value;
	} expected[] = {
		{"tally_connections", 11},     {"tally_tenants", 12},
		{"tally_wal_bytes", 13},       {"tally_wal_files", 14},
		{"tally_segment_files", 15},   {"tally_segment_bytes", 16},
		{"tally_segment_rows", 17},    {"tally_memtable_events", 18},
		{"tally_memtable_bytes", 19},  {"tally_rollup_bytes", 20},
		{"tally_dedup_bytes", 21},     {"tally_durable_lsn", UINT64_C(1) << 40},
		{"tally_query_cache_bytes", 26},
		{"tally_pending_bytes", 23},   {"tally_store_readonly", 1},
		{"tally_wal_direct_io", 1},
		{"tally_flushes_total", 24},   {"tally_compactions_total", 25},
		{"tally_ingest_calls_total", 27},
		{"tally_dedup_expiries_total", 28},
		{"tally_wal_fsync_duration_seconds_bucket{le=\"0.0001\"}", 3},
		{"tally_wal_fsync_duration_seconds_bucket{le=\"0.001\"}", 3},
		{"tally_wal_fsync_duration_seconds_bucket{le=\"0.01\"}", 8},
		{"tally_wal_fsync_duration_seconds_bucket{le=\"+Inf\"}", 10},
		{"tally_wal_fsync_duration_seconds_count", 10},
	};
	for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
		cr_expect_eq(sample(text, expected[i].series), expected[i].value, "%s", expected[i].series);
	expect_sample_text(text, "tally_wal_fsync_duration_seconds_sum", "0.123456");
	expect_sample_text(text, "tally_ingest_lock_hold_seconds_total", "3.5");
	expect_sample_text(text, "tally_ingest_lock_wait_seconds_total", "0.00125");
	expect_sample_text(text, "tally_ingest_lock_hold_max_seconds", "0.009");
	expect_sample_text(text, "tally_dedup_expiry_last_seconds", "0.104563");
	expect_sample_text(text, "tally_dedup_expiry_hold_max_seconds", "0.000169");
	uint64_t resident = sample(text, "tally_process_resident_memory_bytes");
	cr_expect_gt(resident, 1u << 20, "a process holds more than 1 MiB: %" PRIu64, resident);
	cr_expect_lt(resident, UINT64_C(1) << 40);
	free(text);
	text = scrape(m);
	cr_expect_eq(atomic_load(&src.calls), 2, "read at every scrape");
	free(text);
	metrics_close(m);

	gauge_source plain = {.with_histogram = false};
	m = open_http(fill_gauges, &plain);
	text = scrape(m);
	cr_expect_eq(sample(text, "tally_wal_fsync_duration_seconds_bucket{le=\"+Inf\"}"), 10);
	cr_expect_eq(sample(text, "tally_wal_fsync_duration_seconds_count"), 10);
	cr_expect_null(strstr(text, "tally_wal_fsync_duration_seconds_bucket{le=\"0.0001\"}"));
	free(text);
	metrics_close(m);

	m = open_http(NULL, NULL);
	text = scrape(m);
	cr_expect_null(strstr(text, "tally_connections "), "no callback, no gauges");
	cr_expect_null(strstr(text, "tally_wal_fsync"));
	cr_expect_gt(sample(text, "tally_process_resident_memory_bytes"), 0);
	free(text);
	metrics_close(m);
}

/* Description: the exposition is well formed: the Content-Type of format
 * 0.0.4; every sample's family has exactly one HELP and one TYPE line
 * before its samples; counters end in _total; histogram samples are
 * _bucket/_sum/_count of a histogram family; no series repeats; every
 * line ends with a newline. */
Test(metrics, exposition_is_well_formed)
{
	gauge_source src = {.with_histogram = true};
	metrics *m = open_http(fill_gauges, &src);
	metrics_add(m, M_EVENTS_ACCEPTED, 1);
	char url[128];
	url_of(m, "/metrics", url, sizeof(url));
	reply r;
	http("GET", url, &r);
	cr_assert_eq(r.status, 200);
	cr_expect_str_eq(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
	cr_assert_gt(r.size, 0);
	cr_expect_eq(r.body[r.size - 1], '\n');

	enum { FAMILIES_MAX = 64, SERIES_MAX = 256 };
	char families[FAMILIES_MAX][80], types[FAMILIES_MAX][16];
	bool helped[FAMILIES_MAX] = {false};
	int family_count = 0;
	static char series[SERIES_MAX][160];
	int series_count = 0;
	char *save = NULL;
	for (char *line = strtok_r(r.body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[80], rest[160];
		if (strncmp(line, "# HELP ", 7) == 0) {
			cr_assert_eq(sscanf(line + 7, "%79s %159[^\n]", name, rest), 2, "%s", line);
			cr_assert_lt(family_count, FAMILIES_MAX);
			for (int i = 0; i < family_count; i++)
				cr_assert_str_neq(families[i], name, "family %s twice", name);
			snprintf(families[family_count], sizeof(families[0]), "%s", name);
			helped[family_count] = true;
			types[family_count][0] = '\0';
			family_count++;
			continue;
		}
		if (strncmp(line, "# TYPE ", 7) == 0) {
			char type[16];
			cr_assert_eq(sscanf(line + 7, "%79s %15s", name, type), 2, "%s", line);
			cr_assert_gt(family_count, 0);
			cr_assert_str_eq(families[family_count - 1], name, "TYPE right after its HELP: %s", line);
			cr_assert_eq(types[family_count - 1][0], '\0', "two TYPE lines: %s", line);
			cr_assert(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
					  strcmp(type, "histogram") == 0,
				  "%s", line);
			snprintf(types[family_count - 1], sizeof(types[0]), "%s", type);
			continue;
		}
		cr_assert_neq(line[0], '#', "unknown comment: %s", line);
		/* A sample: series, one space, value. */
		char *space = strchr(line, ' ');
		cr_assert_not_null(space, "%s", line);
		cr_assert_null(strchr(space + 1, ' '), "%s", line);
		size_t series_len = (size_t)(space - line);
		size_t name_len = strcspn(line, "{ ");
		snprintf(name, sizeof(name), "%.*s", (int)name_len, line);
		cr_assert_gt(family_count, 0, "%s", line);
		const char *family = families[family_count - 1];
		const char *type = types[family_count - 1];
		cr_assert(helped[family_count - 1]);
		if (strcmp(type, "histogram") == 0) {
			size_t f = strlen(family);
			cr_assert(strncmp(name, family, f) == 0 &&
					  (strcmp(name + f, "_bucket") == 0 || strcmp(name + f, "_sum") == 0 ||
					   strcmp(name + f, "_count") == 0),
				  "%s outside its histogram %s", line, family);
		} else {
			cr_assert_str_eq(name, family, "sample of another family: %s", line);
			if (strcmp(type, "counter") == 0)
				cr_assert(series_len > 6 && strcmp(name + strlen(name) - 6, "_total") == 0, "%s", line);
		}
		char *end;
		strtod(space + 1, &end);
		cr_assert(end != space + 1 && *end == '\0', "value of %s", line);
		cr_assert_lt(series_count, SERIES_MAX);
		snprintf(series[series_count], sizeof(series[0]), "%.*s", (int)series_len, line);
		for (int i = 0; i < series_count; i++)
			cr_assert_str_neq(series[i], series[series_count], "series twice");
		series_count++;
	}
	for (int i = 0; i < family_count; i++)
		cr_expect_neq(types[i][0], '\0', "%s has no TYPE", families[i]);
	/* 11 counter families, errors, 4 histograms, 16 gauges, 4 engine
	 * counters, 2 engine counters and 3 engine gauges in seconds, the
	 * fsync histogram, resident memory, HTTP errors. */
	cr_expect_eq(family_count, 11 + 1 + 4 + 16 + 4 + 2 + 3 + 1 + 1 + 1);
	free(r.body);
	metrics_close(m);
}

/* Description: only GET and HEAD of /metrics are served: other paths are
 * 404, other methods 405 with Allow: GET, HEAD; a query string is ignored. */
Test(metrics, not_found_and_method_not_allowed)
{
	metrics *m = open_http(NULL, NULL);
	static const char *const missing[] = {"/", "/metricsx", "/metrics/", "/metric", "/favicon.ico"};
	char url[128];
	reply r;
	for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
		url_of(m, missing[i], url, sizeof(url));
		http("GET", url, &r);
		cr_expect_eq(r.status, 404, "%s: %ld", missing[i], r.status);
		cr_expect(r.body && strstr(r.body, "not found"), "%s", missing[i]);
		free(r.body);
	}
	static const char *const methods[] = {"POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
	url_of(m, "/metrics", url, sizeof(url));
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		http(methods[i], url, &r);
		cr_expect_eq(r.status, 405, "%s: %ld", methods[i], r.status);
		cr_expect_str_eq(r.allow, "GET, HEAD", "%s", methods[i]);
		free(r.body);
	}
	http("HEAD", url, &r);
	cr_expect_eq(r.status, 200);
	cr_expect_eq(r.size, 0, "HEAD has no body");
	free(r.body);

	metrics_add(m, M_REQUESTS_QUERY, 42);
	url_of(m, "/metrics?name[]=tally_requests_total", url, sizeof(url));
	http("GET", url, &r);
	cr_expect_eq(r.status, 200);
	cr_expect_eq(sample(r.body, "tally_requests_total{kind=\"query\"}"), 42);
	free(r.body);
	metrics_close(m);
}

/* Description: "off" and NULL start no HTTP (port 0) and still count:
 * counters, errors and histograms show in metrics_render. */
Test(metrics, off_counts_without_http)
{
	static const char *const addrs[] = {"off", NULL};
	for (int i = 0; i < 2; i++) {
		metrics *m;
		char err[TALLY_ERRMSG_SIZE] = "";
		cr_assert_eq(metrics_open(addrs[i], NULL, NULL, &m, err), 0, "%s", err);
		cr_expect_eq(metrics_port(m), 0);
		metrics_add(m, M_CONNECTIONS_ACCEPTED, 3);
		metrics_add(m, M_EVENTS_REJECTED, 9);
		metrics_error(m, 8);
		metrics_observe_us(m, H_INGEST_ACK_US, 700);
		char *text = metrics_render(m);
		cr_assert_not_null(text);
		cr_expect_eq(sample(text, "tally_connections_accepted_total"), 3);
		cr_expect_eq(sample(text, "tally_events_total{result=\"rejected\"}"), 9);
		cr_expect_eq(sample(text, "tally_errors_total{code=\"internal\"}"), 1);
		cr_expect_eq(sample(text, "tally_errors_total{code=\"bad_request\"}"), 0);
		cr_expect_eq(sample(text, "tally_ingest_ack_duration_seconds_bucket{le=\"0.0005\"}"), 0);
		cr_expect_eq(sample(text, "tally_ingest_ack_duration_seconds_bucket{le=\"0.001\"}"), 1);
		expect_sample_text(text, "tally_ingest_ack_duration_seconds_sum", "0.0007");
		free(text);
		metrics_close(m);
	}
	metrics_close(NULL);
}

/* Description: a port already in use fails metrics_open with -EADDRINUSE
 * and a message naming the address and the reason; the first server keeps
 * serving. */
Test(metrics, port_in_use_fails_clearly)
{
	metrics *first = open_http(NULL, NULL);
	char addr[64], err[TALLY_ERRMSG_SIZE] = "", expected[TALLY_ERRMSG_SIZE];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)metrics_port(first));
	metrics *second = (metrics *)0x1;
	cr_expect_eq(metrics_open(addr, NULL, NULL, &second, err), -EADDRINUSE, "%s", err);
	cr_expect_null(second);
	snprintf(expected, sizeof(expected),
		 "metrics: cannot serve on %s: Failed to bind to port %u: Address already in use", addr,
		 (unsigned)metrics_port(first));
	cr_expect_str_eq(err, expected);
	metrics_add(first, M_BYTES_RECEIVED, 77);
	char *text = scrape(first);
	cr_expect_eq(sample(text, "tally_received_bytes_total"), 77);
	free(text);
	metrics_close(first);
}

/* Description: malformed addresses and an address of no local interface
 * are refused with the address in the message. */
Test(metrics, bad_addresses)
{
	static const struct {
		const char *addr;
		int rc;
		const char *message;
	} cases[] = {
		{"nonsense", -EINVAL, "metrics: bad address 'nonsense' (host:port or [v6]:port)"},
		{"::1:9411", -EINVAL, "metrics: bad address '::1:9411' (host:port or [v6]:port)"},
		{"127.0.0.1:99999", -EINVAL, "metrics: bad address '127.0.0.1:99999' (host:port or [v6]:port)"},
		/* TEST-NET-1 (RFC 5737): no interface has it. */
		{"192.0.2.1:0", -EADDRNOTAVAIL,
		 "metrics: cannot serve on 192.0.2.1:0: Failed to bind to port 0: Cannot assign requested address"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		metrics *m = NULL;
		char err[TALLY_ERRMSG_SIZE] = "";
		cr_expect_eq(metrics_open(cases[i].addr, NULL, NULL, &m, err), cases[i].rc, "%s: %s", cases[i].addr,
			     err);
		cr_expect_null(m);
		cr_expect_str_eq(err, cases[i].message);
	}
}

/* Description: an IPv6 address in brackets is served over IPv6. */
Test(metrics, serves_ipv6)
{
	metrics *m;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = metrics_open("[::1]:0", NULL, NULL, &m, err);
	if (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT)
		cr_skip_test("no IPv6 loopback here: %s", err);
	cr_assert_eq(rc, 0, "%s", err);
	cr_assert_neq(metrics_port(m), 0);
	metrics_add(m, M_TIMEOUTS_FRAME, 6);
	char url[128];
	snprintf(url, sizeof(url), "http://[::1]:%u/metrics", (unsigned)metrics_port(m));
	reply r;
	http("GET", url, &r);
	cr_expect_eq(r.status, 200);
	cr_expect_eq(sample(r.body, "tally_timeouts_total{kind=\"frame\"}"), 6);
	free(r.body);
	/* Not on IPv4. */
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/metrics", (unsigned)metrics_port(m));
	char error[256];
	cr_expect_not(http_try("GET", url, &r, error, sizeof(error)), "served on IPv4 too");
	free(r.body);
	metrics_close(m);
}

/* ---- Concurrency ---------------------------------------------------------------- */

#define UPDATERS 4
#define SCRAPERS 2
#define UPDATES_PER_THREAD 100000 /* a multiple of 8 */

typedef struct race {
	metrics *m;
	int index;
	atomic_int updaters_done;
} race;

static uint64_t race_observation(uint64_t i)
{
	return (i * 37) % 3000000;
}

static void *updater(void *arg)
{
	race *r = arg;
	for (uint64_t i = 0; i < UPDATES_PER_THREAD; i++) {
		metrics_add(r->m, M_EVENTS_ACCEPTED, 1);
		metrics_add(r->m, M_BYTES_RECEIVED, (uint64_t)r->index + 1);
		metrics_observe_us(r->m, H_INGEST_ACK_US, race_observation(i));
		metrics_error(r->m, 1 + (int)(i % 8));
	}
	return NULL;
}

/* A scraper's findings, checked on the main thread (criterion asserts
 * belong there). */
typedef struct scraper_state {
	race *shared;
	int scrapes;
	char failure[256];
} scraper_state;

/* Scrapes until the updaters are done (at least twice); each scrape must be
 * consistent in itself and never go backwards. */
static void *scraper(void *arg)
{
	scraper_state *s = arg;
	char url[128];
	url_of(s->shared->m, "/metrics", url, sizeof(url));
	uint64_t last_events = 0, last_count = 0;
	do {
		reply r;
		if (!http_try("GET", url, &r, s->failure, sizeof(s->failure))) {
			free(r.body);
			return NULL;
		}
		s->scrapes++;
		uint64_t events, count, infinite, previous = 0;
		if (r.status != 200 || !sample_u64(r.body, "tally_events_total{result=\"accepted\"}", &events) ||
		    !sample_u64(r.body, "tally_ingest_ack_duration_seconds_count", &count) ||
		    !sample_u64(r.body, "tally_ingest_ack_duration_seconds_bucket{le=\"+Inf\"}", &infinite)) {
			snprintf(s->failure, sizeof(s->failure), "scrape %d: status %ld or a sample missing",
				 s->scrapes, r.status);
			free(r.body);
			return NULL;
		}
		for (int b = 0; b < 14; b++) {
			char le[16], series[128];
			uint64_t v;
			le_of(b, le, sizeof(le));
			snprintf(series, sizeof(series), "tally_ingest_ack_duration_seconds_bucket{le=\"%s\"}", le);
			if (!sample_u64(r.body, series, &v) || v < previous) {
				snprintf(s->failure, sizeof(s->failure), "scrape %d: %s not cumulative", s->scrapes,
					 series);
				break;
			}
			previous = v;
		}
		free(r.body);
		if (s->failure[0])
			return NULL;
		if (infinite != count || events < last_events || count < last_count ||
		    events > (uint64_t)UPDATERS * UPDATES_PER_THREAD) {
			snprintf(s->failure, sizeof(s->failure),
				 "scrape %d: +Inf %" PRIu64 " count %" PRIu64 " (last %" PRIu64 ") events %" PRIu64
				 " (last %" PRIu64 ")",
				 s->scrapes, infinite, count, last_count, events, last_events);
			return NULL;
		}
		last_events = events;
		last_count = count;
	} while (atomic_load(&s->shared->updaters_done) < UPDATERS || s->scrapes < 2);
	return NULL;
}

/* Description: 4 threads update counters, errors and a histogram while 2
 * threads scrape over HTTP: every scrape is consistent and monotone, and
 * the final totals are exact (no update lost). */
Test(metrics, concurrent_updates_while_scraping_exact_totals)
{
	metrics *m = open_http(NULL, NULL);
	race shared = {.m = m};
	race updaters[UPDATERS];
	scraper_state scrapers[SCRAPERS];
	pthread_t update_threads[UPDATERS], scrape_threads[SCRAPERS];
	for (int i = 0; i < SCRAPERS; i++) {
		scrapers[i] = (scraper_state){.shared = &shared};
		cr_assert_eq(pthread_create(&scrape_threads[i], NULL, scraper, &scrapers[i]), 0);
	}
	for (int i = 0; i < UPDATERS; i++) {
		updaters[i] = (race){.m = m, .index = i};
		cr_assert_eq(pthread_create(&update_threads[i], NULL, updater, &updaters[i]), 0);
	}
	for (int i = 0; i < UPDATERS; i++) {
		cr_assert_eq(pthread_join(update_threads[i], NULL), 0);
		atomic_fetch_add(&shared.updaters_done, 1);
	}
	for (int i = 0; i < SCRAPERS; i++) {
		cr_assert_eq(pthread_join(scrape_threads[i], NULL), 0);
		cr_expect_str_eq(scrapers[i].failure, "", "scraper %d", i);
		cr_expect_geq(scrapers[i].scrapes, 2);
	}

	/* The oracle: the same observations, counted by brute force. */
	uint64_t buckets[14] = {0}, sum = 0;
	for (uint64_t i = 0; i < UPDATES_PER_THREAD; i++) {
		uint64_t us = race_observation(i);
		int b = 0;
		while (bounds_us[b] != INT64_MAX && us > (uint64_t)bounds_us[b])
			b++;
		buckets[b] += UPDATERS;
		sum += us * UPDATERS;
	}
	char *text = scrape(m);
	const uint64_t total = (uint64_t)UPDATERS * UPDATES_PER_THREAD;
	cr_expect_eq(sample(text, "tally_events_total{result=\"accepted\"}"), total);
	cr_expect_eq(sample(text, "tally_received_bytes_total"), (uint64_t)UPDATES_PER_THREAD * (1 + 2 + 3 + 4));
	for (int code = 1; code <= METRICS_ERROR_CODE_MAX; code++)
		cr_expect_eq(sample(text, error_series[code]), total / 8, "%s", error_series[code]);
	uint64_t cumulative = 0;
	for (int b = 0; b < 14; b++) {
		cumulative += buckets[b];
		char le[16], series[128];
		le_of(b, le, sizeof(le));
		snprintf(series, sizeof(series), "tally_ingest_ack_duration_seconds_bucket{le=\"%s\"}", le);
		cr_expect_eq(sample(text, series), cumulative, "%s", series);
	}
	cr_expect_eq(cumulative, total);
	cr_expect_eq(sample(text, "tally_ingest_ack_duration_seconds_count"), total);
	char sum_text[64];
	snprintf(sum_text, sizeof(sum_text), "%" PRIu64 ".%06" PRIu64, sum / 1000000, sum % 1000000);
	while (sum_text[strlen(sum_text) - 1] == '0')
		sum_text[strlen(sum_text) - 1] = '\0';
	if (sum_text[strlen(sum_text) - 1] == '.')
		sum_text[strlen(sum_text) - 1] = '\0';
	expect_sample_text(text, "tally_ingest_ack_duration_seconds_sum", sum_text);
	free(text);
	metrics_close(m);
}

/* Description: a tallyd's /metrics gauges are its store's figures: after
 * 10 events, a restart (they go to a segment file) and 3 more, each
 * gauge the Stats request also reports has the same value (1 tenant, 3
 * memtable events, 10 segment rows, the same bytes, WAL and durable LSN,
 * 2 connections); the store is writable, and the fsync histogram counts
 * every WAL fsync. */
/* Starts a tallyd in h (metrics on; query_cache_bytes_max when not 0)
 * with tenant acme (its key into key), sends it events "before-0" ..
 * "before-9" from base and restarts it, so they are in a segment file. */
static void tallyd_with_ten_rows(harness *h, const char *name, uint64_t query_cache_bytes_max,
				 char *key, int64_t base)
{
	log_set_level(LOG_LEVEL_ERROR); /* the tallyd in this process: errors only */
	harness_init(h, name);
	snprintf(h->config.metrics, sizeof(h->config.metrics), "127.0.0.1:0");
	if (query_cache_bytes_max)
		h->config.query_cache_bytes_max = query_cache_bytes_max;
	harness_start(h);
	harness_create_tenant(h, "acme", key);
	uint32_t duplicates;
	tally_client *c = harness_connect(h, key);
	cr_assert_eq(batches_send(c, "before", 10, base, &duplicates), 0);
	tally_client_close(c);
	harness_stop(h);
	harness_start(h);
}

Test(metrics, a_servers_gauges_are_its_store_figures)
{
	harness h;
	char key[80];
	int64_t base = batches_base_time();
	tallyd_with_ten_rows(&h, "metrics-gauges", 0, key, base);
	uint32_t duplicates;
	tally_client *c = harness_connect(&h, key);
	cr_assert_eq(batches_send(c, "after", 3, base, &duplicates), 0);
	tally_client *admin = harness_connect(&h, h.admin_key);
	Tally__V1__Stats *st = NULL;
	cr_assert_eq(tally_client_stats(admin, &st), 0);
	char *text = scrape_port(server_metrics_port(h.server));

	cr_expect_eq(st->tenants, 1);
	cr_expect_eq(st->events_memtable, 3);
	cr_expect_eq(st->segment_rows, 10);
	cr_expect_eq(st->connections, 2);
	cr_expect_geq(st->segment_files, 1);
	cr_expect_gt(st->segment_bytes, 0);
	cr_expect_gt(st->rollup_bytes, 0);
	cr_expect_gt(st->wal_bytes, 0);
	cr_expect_gt(st->durable_lsn, 0);
	static const struct {
		const char *series;
		size_t offset;
	} same[] = {
		{"tally_tenants", offsetof(Tally__V1__Stats, tenants)},
		{"tally_memtable_events", offsetof(Tally__V1__Stats, events_memtable)},
		{"tally_segment_files", offsetof(Tally__V1__Stats, segment_files)},
		{"tally_segment_rows", offsetof(Tally__V1__Stats, segment_rows)},
		{"tally_segment_bytes", offsetof(Tally__V1__Stats, segment_bytes)},
		{"tally_wal_bytes", offsetof(Tally__V1__Stats, wal_bytes)},
		{"tally_rollup_bytes", offsetof(Tally__V1__Stats, rollup_bytes)},
		{"tally_connections", offsetof(Tally__V1__Stats, connections)},
		{"tally_durable_lsn", offsetof(Tally__V1__Stats, durable_lsn)},
	};
	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
		uint64_t want;
		memcpy(&want, (const char *)st + same[i].offset, sizeof(want));
		cr_expect_eq(sample(text, same[i].series), want, "%s", same[i].series);
	}
	cr_expect_eq(sample(text, "tally_store_readonly"), 0);
	cr_expect_geq(sample(text, "tally_wal_files"), 1);
	cr_expect_gt(sample(text, "tally_memtable_bytes"), 0);
	cr_expect_gt(sample(text, "tally_dedup_bytes"), 0);
	cr_expect_eq(sample(text, "tally_ingest_calls_total"), 1, "one call since the restart");
	uint64_t fsyncs = sample(text, "tally_wal_fsync_duration_seconds_count");
	cr_expect_geq(fsyncs, 1);
	cr_expect_eq(sample(text, "tally_wal_fsync_duration_seconds_bucket{le=\"+Inf\"}"), fsyncs);
	free(text);
	tally__v1__stats__free_unpacked(st, NULL);
	tally_client_close(admin);
	tally_client_close(c);
	harness_finish(&h);
}

/* Description: tallyd's query_cache_bytes_max (--query-cache-bytes-max)
 * reaches its store. 10 events go to a segment file (a restart); a query
 * counts them. With the default limit the decoded pages stay cached
 * (tally_query_cache_bytes > 0); with a limit of 1 byte none does (0),
 * and the answer is the same. */
Test(metrics, query_cache_bytes_max_reaches_the_store)
{
	for (int tiny = 0; tiny < 2; tiny++) {
		harness h;
		char key[80];
		int64_t base = batches_base_time();
		tallyd_with_ten_rows(&h, tiny ? "metrics-cache-tiny" : "metrics-cache", tiny ? 1 : 0,
				     key, base);
		tally_client *c = harness_connect(&h, key);
		char *text = scrape_port(server_metrics_port(h.server));
		cr_expect_eq(sample(text, "tally_query_cache_bytes"), 0, "nothing read at the open");
		free(text);
		uint64_t count = 0;
		cr_assert_eq(batches_count(c, base, &count), 0);
		cr_expect_eq(count, 10);
		text = scrape_port(server_metrics_port(h.server));
		if (tiny)
			cr_expect_eq(sample(text, "tally_query_cache_bytes"), 0, "a 1-byte cache");
		else
			cr_expect_gt(sample(text, "tally_query_cache_bytes"), 0, "the default cache");
		free(text);
		tally_client_close(c);
		harness_finish(&h);
	}
}
