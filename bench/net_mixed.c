/*
 * net_mixed.c — `tally-bench mixed`: dashboard queries over the protocol
 * while ingest runs at a fixed rate (contract in net_mixed.h;
 * bench/README.md).
 *
 * NOTES ON THE MEASUREMENT
 *
 * 1. The history. By default the reference workload of --preload N events
 *    (30 days, T tenants, seed S) is ingested first, as `tally-bench
 *    ingest` does (2 connections, batches of up to 5,000 events per
 *    tenant), and its results checked. With --no-preload the server is
 *    taken to hold it already (from `tally-bench ingest --events N
 *    --tenants T --seed S`): the workload is regenerated only to draw the
 *    tenants, and the server's event count must be at least its unique
 *    events.
 *
 * 2. The tenants asked about are drawn as `tally-bench query` draws them
 *    (dashboard.c): the tenant of a uniformly random delivered event of the
 *    history, so every drawn tenant has data and the big ones are drawn
 *    most. The query clients cycle through the R draws, each from its own
 *    offset, asking the five queries in turn for each.
 *
 * 3. The live ingest. rate x duration events of the same generator (same
 *    tenants, same seed) get ids of this run's own (a prefix) and times
 *    spread over the run starting when the batches were built, so they are
 *    "now" and the queries' ranges, which end at the end of the run's last
 *    minute, hold them. Delivery windows of one second of traffic (by
 *    default) are cut per tenant into batches of at most B events, sent
 *    paced at the rate (net.c, note 3) over C connections; whether the rate
 *    held is measured, not assumed, and so are the results (ACCEPTED and
 *    DUPLICATE exactly as the live workload expects).
 *
 * 4. The queries: Q threads, one session each (the admin key, naming the
 *    drawn tenant), paced at --query-rate queries/s in all (staggered; a
 *    client that falls behind skips, it does not burst) or back to back
 *    with --query-rate 0. Each tally_client_query call is timed at the
 *    client: request packing, the loopback round trip, the server's work
 *    and the unpacking of the answer. They run from the live ingest's start
 *    to its last ack; nothing is warmed up.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "dashboard.h"
#include "net.h"
#include "net_mixed.h"
#include "workload.h"

#define CLIENT_NAME "tally-bench mixed"
#define PRELOAD_BATCH_EVENTS 5000u
#define PRELOAD_CONNECTIONS 2u
/* Samples one query client keeps per query kind when not paced (back to
 * back); it stops asking when they are full (reported). */
#define SAMPLES_UNPACED_PER_SECOND 10000u
#define SAMPLES_PER_KIND_MAX 1000000u
#define SAMPLES_SLACK_S 60u       /* paced: room for a live ingest that overruns its schedule */
#define LIVE_WINDOW_S 1u          /* default live window: one second of traffic */
#define LIVE_ID_PREFIX_FORMAT "r%" PRIx64 "-"

_Static_assert((int)TALLY_BUCKET_DAY == (int)TALLY__V1__BUCKET__DAY &&
		       (int)TALLY_BUCKET_HOUR == (int)TALLY__V1__BUCKET__HOUR &&
		       (int)TALLY_BUCKET_NONE == (int)TALLY__V1__BUCKET__NONE &&
		       (int)TALLY_BUCKET_MINUTE == (int)TALLY__V1__BUCKET__MINUTE &&
		       (int)TALLY_BUCKET_MONTH == (int)TALLY__V1__BUCKET__MONTH,
	       "engine and protocol buckets are numbered alike");
_Static_assert((int)TALLY_DIM_PROJECT == (int)TALLY__V1__DIMENSION__PROJECT &&
		       (int)TALLY_DIM_AGENT == (int)TALLY__V1__DIMENSION__AGENT &&
		       (int)TALLY_DIM_MODEL == (int)TALLY__V1__DIMENSION__MODEL &&
		       (int)TALLY_DIM_TYPE == (int)TALLY__V1__DIMENSION__TYPE &&
		       (int)TALLY_DIM_STATUS == (int)TALLY__V1__DIMENSION__STATUS,
	       "engine and protocol dimensions are numbered alike");

/* ---- The queries over the protocol ------------------------------------------------- */

/* One dashboard query as a protocol Query; points into itself. */
typedef struct proto_query {
	Tally__V1__Query message;
	Tally__V1__Dimension group_by[TALLY_DIM_COUNT];
	double quantiles[TALLY_QUANTILES_MAX];
} proto_query;

static void proto_query_build(proto_query *p, const tally_query *q)
{
	tally__v1__query__init(&p->message);
	p->message.from_us = q->from_us;
	p->message.to_us = q->to_us;
	p->message.bucket = (Tally__V1__Bucket)q->bucket;
	size_t n = 0;
	for (int d = 0; d < TALLY_DIM_COUNT; d++)
		if (q->group_by >> d & 1u)
			p->group_by[n++] = (Tally__V1__Dimension)d;
	p->message.n_group_by = n;
	p->message.group_by = n ? p->group_by : NULL;
	for (size_t i = 0; i < q->quantile_count; i++)
		p->quantiles[i] = q->quantiles[i];
	p->message.n_quantiles = q->quantile_count;
	p->message.quantiles = q->quantile_count ? p->quantiles : NULL;
	p->message.distinct_users = q->distinct_users;
	p->message.limit = q->limit;
}

typedef struct query_samples {
	int64_t *latency_ns;
	uint32_t *rows;
	uint64_t count;
	uint64_t empty;           /* answers without rows (every drawn tenant has data) */
	uint64_t truncated;
} query_samples;

typedef struct mixed_run mixed_run;

typedef struct query_client {
	pthread_t thread;
	mixed_run *run;
	uint32_t index;
	tally_client *client;
	proto_query queries[DASHBOARD_QUERY_COUNT]; /* its own: the tenant is set per call */
	query_samples samples[DASHBOARD_QUERY_COUNT];
	bool capped;              /* stopped early: its sample arrays were full */
	char error[NET_ERROR_SIZE];
} query_client;

struct mixed_run {
	const bench_net_mixed_options *options;
	tally_query queries[DASHBOARD_QUERY_COUNT];
	char (*draw_names)[WORKLOAD_TENANT_NAME_SIZE]; /* the drawn tenants, repeat entries */
	uint64_t capacity;        /* samples per client and kind */
	atomic_int stop;          /* the live ingest is over */
	atomic_int abort;         /* a query failed: stop everything */
	pthread_mutex_t gate_lock;
	pthread_cond_t gate_cond;
	int gate_open;
	int64_t start_ns;
};

static void sleep_until_ns(int64_t when_ns)
{
	struct timespec ts = {.tv_sec = when_ns / 1000000000, .tv_nsec = when_ns % 1000000000};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void *query_client_main(void *arg)
{
	query_client *qc = arg;
	mixed_run *r = qc->run;
	const bench_net_mixed_options *o = r->options;
	pthread_mutex_lock(&r->gate_lock);
	while (!r->gate_open)
		pthread_cond_wait(&r->gate_cond, &r->gate_lock);
	pthread_mutex_unlock(&r->gate_lock);
	for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++)
		proto_query_build(&qc->queries[k], &r->queries[k]);
	int64_t interval_ns = o->query_rate
				      ? (int64_t)o->query_client_count * 1000000000 / o->query_rate
				      : 0;
	int64_t due_ns = r->start_ns + interval_ns * qc->index / (int64_t)o->query_client_count;
	uint64_t draw = (uint64_t)o->repeat * qc->index / o->query_client_count;
	for (uint64_t n = 0; !atomic_load(&r->stop) && !atomic_load(&r->abort); n++) {
		int kind = (int)(n % DASHBOARD_QUERY_COUNT);
		query_samples *s = &qc->samples[kind];
		if (s->count == r->capacity) {
			qc->capped = true;
			break;
		}
		if (interval_ns) {
			int64_t now = bench_clock_ns();
			if (due_ns < now - interval_ns)
				due_ns = now; /* fell behind: skip, do not burst */
			sleep_until_ns(due_ns);
			due_ns += interval_ns;
			if (atomic_load(&r->stop))
				break;
		}
		proto_query *q = &qc->queries[kind];
		const char *tenant = r->draw_names[draw % o->repeat];
		q->message.tenant = (char *)tenant;
		Tally__V1__QueryResult *result = NULL;
		int64_t t0 = bench_clock_ns();
		int rc = tally_client_query(qc->client, &q->message, &result);
		int64_t t1 = bench_clock_ns();
		if (rc) {
			char what[160];
			snprintf(what, sizeof(what), "query %s for tenant %s", DASHBOARD_QUERIES[kind].name,
				 tenant);
			net_failure_text(qc->error, sizeof(qc->error), what, qc->client, rc);
			atomic_store(&r->abort, 1);
			break;
		}
		s->latency_ns[s->count] = t1 - t0;
		s->rows[s->count] = (uint32_t)result->n_rows;
		s->count++;
		s->empty += result->n_rows == 0;
		s->truncated += result->truncated;
		tally__v1__query_result__free_unpacked(result, NULL);
		if (kind == DASHBOARD_QUERY_COUNT - 1)
			draw++;
	}
	return NULL;
}

/* ---- Figures ------------------------------------------------------------------------ */

typedef struct query_figures {
	uint64_t count;
	double latency_us[4];     /* P50, P95, P99, max */
	double latency_mean_us;
	uint32_t rows_median;
	uint64_t empty;
	uint64_t truncated;
} query_figures;

typedef struct figures {
	/* history */
	uint64_t history_events, history_unique, history_resends;
	uint32_t active_tenant_count;
	double history_generate_s;
	bool preloaded;
	net_ingest_figures preload;
	bool preload_match;
	uint64_t server_events;   /* --no-preload: what the server said it holds */
	uint32_t distinct_tenants;
	/* live */
	uint64_t live_events, live_unique, live_resends;
	uint32_t live_window_events;
	double live_generate_s, live_build_s;
	uint64_t live_batch_count;
	net_ingest_figures live;
	bool live_match;
	/* queries */
	query_figures query[DASHBOARD_QUERY_COUNT];
	bool queries_capped;
	double warm_s;            /* --warm: the untimed pass */
	net_server_memory memory;
} figures;

static int compare_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/* Merges the clients' samples of each kind into f (sorting them in place). */
static int query_figures_merge(const mixed_run *r, const query_client *clients, figures *f)
{
	uint32_t client_count = r->options->query_client_count;
	for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++) {
		uint64_t total = 0;
		for (uint32_t c = 0; c < client_count; c++)
			total += clients[c].samples[k].count;
		int64_t *latency = malloc(sizeof(*latency) * (total ? total : 1));
		uint32_t *rows = malloc(sizeof(*rows) * (total ? total : 1));
		if (!latency || !rows) {
			free(latency);
			free(rows);
			return -ENOMEM;
		}
		query_figures *qf = &f->query[k];
		uint64_t at = 0;
		double sum_us = 0;
		for (uint32_t c = 0; c < client_count; c++) {
			const query_samples *s = &clients[c].samples[k];
			memcpy(latency + at, s->latency_ns, sizeof(*latency) * s->count);
			memcpy(rows + at, s->rows, sizeof(*rows) * s->count);
			at += s->count;
			qf->empty += s->empty;
			qf->truncated += s->truncated;
		}
		for (uint64_t i = 0; i < total; i++)
			sum_us += (double)latency[i] / 1e3;
		bench_latency_summary_us(latency, total, qf->latency_us);
		qsort(rows, total, sizeof(*rows), compare_u32);
		qf->count = total;
		qf->latency_mean_us = total ? sum_us / (double)total : 0.0;
		qf->rows_median = total ? rows[(total + 1) / 2 - 1] : 0;
		free(latency);
		free(rows);
	}
	return 0;
}

/* ---- Reports ---------------------------------------------------------------------------- */

static double mib(uint64_t bytes)
{
	return (double)bytes / (1024.0 * 1024.0);
}

static void print_text(const bench_net_mixed_options *o, const net_server *server, const figures *f)
{
	printf("tally-bench mixed: tallyd %s at %s; %" PRIu32 " tenants (%" PRIu32 " active in the history), seed %" PRIu64 "\n",
	       server->info.server_version, server->address, o->tenant_count, f->active_tenant_count,
	       o->seed);
	if (f->preloaded) {
		printf("  history: %" PRIu64 " events (%" PRIu64 " unique + %" PRIu64
		       " re-sends) over 30 days, preloaded by this run:\n",
		       f->history_events, f->history_unique, f->history_resends);
		net_figures_print(&f->preload, 0, f->preload_match, 4);
	} else {
		printf("  history: %" PRIu64 " events (%" PRIu64 " unique) over 30 days, already on the "
		       "server (--no-preload; it holds %" PRIu64 " events)\n",
		       f->history_events, f->history_unique, f->server_events);
	}
	printf("  live: %" PRIu64 " events (%" PRIu64 " unique + %" PRIu64 " re-sends) at %" PRIu64
	       " events/s for %" PRIu32 " s: windows of %" PRIu32 " events cut per tenant into %" PRIu64
	       " batches of at most %" PRIu32 " events (mean %.1f), %" PRIu32
	       " connections; generated in %.2f s, encoded in %.2f s (not timed)\n",
	       f->live_events, f->live_unique, f->live_resends, o->rate, o->duration_s,
	       f->live_window_events, f->live_batch_count, o->batch_events,
	       f->live_batch_count ? (double)f->live_events / (double)f->live_batch_count : 0.0,
	       o->connection_count, f->live_generate_s, f->live_build_s);
	printf("\nlive ingest:\n");
	net_figures_print(&f->live, o->rate, f->live_match, 2);
	printf("\nqueries over the protocol while it ran: %" PRIu32 " clients, ", o->query_client_count);
	if (o->query_rate)
		printf("%" PRIu32 " queries/s in all", o->query_rate);
	else
		printf("back to back");
	printf(", %" PRIu32 " tenant draws (%" PRIu32 " distinct tenants); round trip at the client, us\n",
	       o->repeat, f->distinct_tenants);
	printf("  %-18s %8s %9s %9s %9s %9s %9s | %6s %6s %9s\n", "query", "count", "P50", "P95", "P99",
	       "max", "mean", "rows", "empty", "truncated");
	for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++) {
		const query_figures *qf = &f->query[k];
		printf("  %-18s %8" PRIu64 " %9.1f %9.1f %9.1f %9.1f %9.1f | %6" PRIu32 " %6" PRIu64
		       " %9" PRIu64 "\n",
		       DASHBOARD_QUERIES[k].name, qf->count, qf->latency_us[0], qf->latency_us[1],
		       qf->latency_us[2], qf->latency_us[3], qf->latency_mean_us, qf->rows_median,
		       qf->empty, qf->truncated);
	}
	printf("  (rows: median rows per answer; empty: answers without rows)\n");
	if (o->warm)
		printf("  warm: every draw's queries ran once, untimed, before the live ingest (%.2f s)\n",
		       f->warm_s);
	else
		printf("  cold: no warm-up; the first query of a tenant pays for whatever it touches first\n");
	if (f->queries_capped)
		printf("  a query client filled its sample arrays and stopped asking before the ingest ended\n");
	if (f->memory.read)
		printf("\nserver memory (pid %ld) after the run: VmRSS %.1f MiB, peak (VmHWM) %.1f MiB\n",
		       o->server_pid, mib(f->memory.rss_bytes), mib(f->memory.rss_peak_bytes));
}

static json_t *real_rounded(double x, int places)
{
	return json_real(bench_round(x, places));
}

static int print_json(const bench_net_mixed_options *o, const net_server *server, const figures *f)
{
	json_t *root = json_object(), *preload = json_object(), *live = json_object(),
	       *queries = json_object();
	int bad = !root || !preload || !live || !queries;
	bad |= bench_json_put(root, "benchmark", json_string("mixed"));
	bad |= bench_json_put(root, "server", json_string(server->address));
	bad |= bench_json_put(root, "server_version", json_string(server->info.server_version));
	bad |= bench_json_put(root, "tenants", json_integer(o->tenant_count));
	bad |= bench_json_put(root, "active_tenants", json_integer(f->active_tenant_count));
	bad |= bench_json_put(root, "seed", bench_json_u64(o->seed));
	bad |= bench_json_put(root, "history_events", json_integer((json_int_t)f->history_events));
	bad |= bench_json_put(root, "history_unique_events", json_integer((json_int_t)f->history_unique));
	bad |= bench_json_put(root, "preloaded", json_boolean(f->preloaded));
	if (f->preloaded && !bad) {
		bad |= net_figures_json(preload, &f->preload, 0, f->preload_match);
		bad |= bench_json_put(root, "preload", json_incref(preload));
	} else {
		bad |= bench_json_put(root, "server_events", json_integer((json_int_t)f->server_events));
	}
	bad |= bench_json_put(root, "duration_s", json_integer(o->duration_s));
	bad |= bench_json_put(root, "live_events", json_integer((json_int_t)f->live_events));
	bad |= bench_json_put(root, "live_unique_events", json_integer((json_int_t)f->live_unique));
	bad |= bench_json_put(root, "live_window_events", json_integer(f->live_window_events));
	bad |= bench_json_put(root, "live_batches", json_integer((json_int_t)f->live_batch_count));
	bad |= bench_json_put(root, "connections", json_integer(o->connection_count));
	bad |= bench_json_put(root, "batch_events", json_integer(o->batch_events));
	if (!bad)
		bad |= net_figures_json(live, &f->live, o->rate, f->live_match);
	bad |= bench_json_put(root, "live", json_incref(live));
	bad |= bench_json_put(root, "rate_held", json_boolean(f->live.rate_held));
	bad |= bench_json_put(root, "query_clients", json_integer(o->query_client_count));
	bad |= bench_json_put(root, "query_rate", json_integer(o->query_rate));
	bad |= bench_json_put(root, "repeat", json_integer(o->repeat));
	bad |= bench_json_put(root, "warm", json_boolean(o->warm));
	if (o->warm)
		bad |= bench_json_put(root, "warm_s", real_rounded(f->warm_s, 3));
	bad |= bench_json_put(root, "distinct_tenants", json_integer(f->distinct_tenants));
	for (int k = 0; k < DASHBOARD_QUERY_COUNT && !bad; k++) {
		const query_figures *qf = &f->query[k];
		json_t *q = json_object();
		if (!q) {
			bad = 1;
			break;
		}
		bad |= bench_json_put(q, "count", json_integer((json_int_t)qf->count));
		bad |= bench_json_put(q, "p50_us", real_rounded(qf->latency_us[0], 1));
		bad |= bench_json_put(q, "p95_us", real_rounded(qf->latency_us[1], 1));
		bad |= bench_json_put(q, "p99_us", real_rounded(qf->latency_us[2], 1));
		bad |= bench_json_put(q, "max_us", real_rounded(qf->latency_us[3], 1));
		bad |= bench_json_put(q, "mean_us", real_rounded(qf->latency_mean_us, 1));
		bad |= bench_json_put(q, "rows_median", json_integer(qf->rows_median));
		bad |= bench_json_put(q, "empty", json_integer((json_int_t)qf->empty));
		bad |= bench_json_put(q, "truncated", json_integer((json_int_t)qf->truncated));
		bad |= bench_json_put(queries, DASHBOARD_QUERIES[k].name, q);
	}
	bad |= bench_json_put(root, "queries", json_incref(queries));
	bad |= bench_json_put(root, "queries_capped", json_boolean(f->queries_capped));
	bad |= net_server_memory_json(root, &f->memory);
	json_decref(preload);
	json_decref(live);
	json_decref(queries);
	return bench_json_print(root, bad);
}

/* ---- The phases ---------------------------------------------------------------------------- */

/* The history: generated, its tenants drawn into r->draw_names, and
 * preloaded unless --no-preload (then checked against the server's count
 * on session). 0 or the exit status. */
static int history_phase(const bench_net_mixed_options *o, const net_server *server,
			 tally_client *session, mixed_run *r, figures *f)
{
	workload_params params = {
		.event_count = o->preload_events,
		.tenant_count = o->tenant_count,
		.seed = o->seed,
		.window_events = o->preload_events < WORKLOAD_WINDOW_EVENTS_MAX
					 ? (uint32_t)o->preload_events
					 : WORKLOAD_WINDOW_EVENTS_MAX,
		.end_us = bench_wall_clock_us(),
	};
	workload w;
	if (net_workload_generate(&w, &params, &f->history_generate_s))
		return 1;
	f->history_events = w.event_count;
	f->history_unique = w.unique_count;
	f->history_resends = w.resend_count;
	f->active_tenant_count = w.active_tenant_count;
	int status = 1;
	net_batches batches = {0};
	uint32_t *tenant = malloc(sizeof(*tenant) * o->repeat);
	uint8_t *drawn = calloc(w.params.tenant_count, 1);
	if (!tenant || !drawn) {
		fprintf(stderr, "tally-bench: out of memory for %" PRIu32 " draws\n", o->repeat);
		goto out;
	}
	f->distinct_tenants = dashboard_tenants_draw(&w, tenant, o->repeat, drawn);
	for (uint32_t i = 0; i < o->repeat; i++)
		memcpy(r->draw_names[i], w.tenant_names[tenant[i]], WORKLOAD_TENANT_NAME_SIZE);

	if (o->no_preload) {
		Tally__V1__Stats *stats = NULL;
		int rc = tally_client_stats(session, &stats);
		if (rc) {
			char text[NET_ERROR_SIZE];
			net_failure_text(text, sizeof(text), "asking the server for its figures (Stats)",
					 session, rc);
			fprintf(stderr, "tally-bench: %s\n", text);
			goto out;
		}
		f->server_events = stats->segment_rows + stats->events_memtable;
		tally__v1__stats__free_unpacked(stats, NULL);
		if (f->server_events < w.unique_count) {
			fprintf(stderr, "tally-bench: --no-preload: %s holds %" PRIu64 " events, fewer than the "
				"%" PRIu64 " unique events of the history (--preload %" PRIu64 " --tenants %" PRIu32
				" --seed %" PRIu64 "); load it first with tally-bench ingest and the same flags, "
				"or drop --no-preload\n",
				server->address, f->server_events, w.unique_count, o->preload_events,
				o->tenant_count, o->seed);
			goto out;
		}
		status = 0;
		goto out;
	}
	double build_s;
	net_cut cut = {.batch_events = PRELOAD_BATCH_EVENTS < o->batch_events ? o->batch_events
									     : PRELOAD_BATCH_EVENTS,
		       .frame_bytes_max = server->frame_bytes_max};
	if (server->info.limits.batch_events_max && cut.batch_events > server->info.limits.batch_events_max)
		cut.batch_events = server->info.limits.batch_events_max;
	if (net_batches_prepare(&w, &cut, &batches, &build_s))
		goto out;
	fprintf(stderr, "tally-bench: preloading the history: %" PRIu64 " batches over %u connections...\n",
		batches.count, PRELOAD_CONNECTIONS);
	net_ingest_options preload = {
		.server = server->address,
		.key = server->key,
		.client_name = CLIENT_NAME,
		.connection_count = PRELOAD_CONNECTIONS,
		.inflight = o->inflight,
	};
	if (net_ingest_run(&preload, &batches, &f->preload))
		goto out;
	f->preloaded = true;
	f->preload_match = net_results_check(&f->preload, w.unique_count, w.resend_count, "preload");
	if (!f->preload_match)
		goto out;
	status = 0;
out:
	net_batches_free(&batches);
	free(tenant);
	free(drawn);
	workload_free(&w);
	return status;
}

/* The live workload, built into *batches. 0 or 1. */
static int live_build(const bench_net_mixed_options *o, const net_server *server, figures *f,
		      net_batches *batches, int64_t *end_us)
{
	uint64_t window = o->window_events ? o->window_events : o->rate * LIVE_WINDOW_S;
	if (window > WORKLOAD_WINDOW_EVENTS_MAX)
		window = WORKLOAD_WINDOW_EVENTS_MAX;
	workload_params params = {
		.event_count = o->rate * o->duration_s,
		.tenant_count = o->tenant_count,
		.seed = o->seed,
		.window_events = (uint32_t)window,
		.end_us = bench_wall_clock_us(),
	};
	workload w;
	if (net_workload_generate(&w, &params, &f->live_generate_s))
		return 1;
	f->live_events = w.event_count;
	f->live_unique = w.unique_count;
	f->live_resends = w.resend_count;
	f->live_window_events = (uint32_t)window;
	int64_t base_us = bench_wall_clock_us();
	char prefix[NET_ID_PREFIX_SIZE_MAX];
	snprintf(prefix, sizeof(prefix), LIVE_ID_PREFIX_FORMAT, (uint64_t)base_us);
	net_cut cut = {
		.batch_events = o->batch_events,
		.frame_bytes_max = server->frame_bytes_max,
		.id_prefix = prefix,
		.time_base_us = base_us,
		.time_span_us = (int64_t)o->duration_s * TALLY_US_PER_SECOND,
	};
	*end_us = base_us + cut.time_span_us;
	int status = net_batches_prepare(&w, &cut, batches, &f->live_build_s);
	workload_free(&w);
	if (status)
		return 1;
	f->live_batch_count = batches->count;
	return 0;
}

/* --warm: every draw's five queries once, untimed, on session, so the
 * timed queries meet what a polling dashboard meets: each tenant asked
 * before. 0 or 1 after printing the failure. */
static int warm_pass(tally_client *session, const mixed_run *r, double *warm_s)
{
	const bench_net_mixed_options *o = r->options;
	fprintf(stderr, "tally-bench: warm-up: %" PRIu32 " draws x %d queries, untimed...\n", o->repeat,
		DASHBOARD_QUERY_COUNT);
	proto_query queries[DASHBOARD_QUERY_COUNT];
	for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++)
		proto_query_build(&queries[k], &r->queries[k]);
	int64_t t0 = bench_clock_ns();
	for (uint32_t i = 0; i < o->repeat; i++)
		for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++) {
			queries[k].message.tenant = (char *)r->draw_names[i];
			Tally__V1__QueryResult *result = NULL;
			int rc = tally_client_query(session, &queries[k].message, &result);
			if (rc) {
				char what[160], text[NET_ERROR_SIZE];
				snprintf(what, sizeof(what), "warm-up query %s for tenant %s",
					 DASHBOARD_QUERIES[k].name, r->draw_names[i]);
				net_failure_text(text, sizeof(text), what, session, rc);
				fprintf(stderr, "tally-bench: %s\n", text);
				return 1;
			}
			tally__v1__query_result__free_unpacked(result, NULL);
		}
	*warm_s = (double)(bench_clock_ns() - t0) / 1e9;
	return 0;
}

static uint64_t samples_capacity(const bench_net_mixed_options *o)
{
	uint64_t seconds = (uint64_t)o->duration_s + SAMPLES_SLACK_S;
	uint64_t per_kind = o->query_rate
				    ? (uint64_t)o->query_rate * seconds /
						      ((uint64_t)o->query_client_count * DASHBOARD_QUERY_COUNT) +
					      1
				    : (uint64_t)SAMPLES_UNPACED_PER_SECOND * seconds;
	return per_kind < SAMPLES_PER_KIND_MAX ? per_kind : SAMPLES_PER_KIND_MAX;
}

static void query_clients_free(query_client *clients, uint32_t count)
{
	for (uint32_t c = 0; clients && c < count; c++) {
		tally_client_close(clients[c].client);
		for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++) {
			free(clients[c].samples[k].latency_ns);
			free(clients[c].samples[k].rows);
		}
	}
	free(clients);
}

int bench_net_mixed_run(const bench_net_mixed_options *o)
{
	figures f;
	memset(&f, 0, sizeof(f));
	net_server server;
	tally_client *session = NULL;
	int status = net_server_probe(o->server, o->key, o->key_file, CLIENT_NAME, o->batch_events,
				      &server, &session);
	if (status)
		return status;
	mixed_run r = {.options = o};
	atomic_init(&r.stop, 0);
	atomic_init(&r.abort, 0);
	net_batches live = {0};
	query_client *clients = calloc(o->query_client_count, sizeof(*clients));
	r.draw_names = malloc(sizeof(*r.draw_names) * o->repeat);
	uint32_t started = 0;
	bool gate_made = false;
	status = 1;
	if (!clients || !r.draw_names) {
		fprintf(stderr, "tally-bench: out of memory\n");
		goto out;
	}
	if ((status = history_phase(o, &server, session, &r, &f)))
		goto out;
	status = 1;
	int64_t end_us;
	if (live_build(o, &server, &f, &live, &end_us))
		goto out;
	for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++)
		r.queries[k] = dashboard_query_build(&DASHBOARD_QUERIES[k], end_us);
	if (o->warm && warm_pass(session, &r, &f.warm_s))
		goto out;
	tally_client_close(session);
	session = NULL;
	r.capacity = samples_capacity(o);
	for (uint32_t c = 0; c < o->query_client_count; c++) {
		query_client *qc = &clients[c];
		qc->run = &r;
		qc->index = c;
		for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++) {
			qc->samples[k].latency_ns = malloc(sizeof(int64_t) * r.capacity);
			qc->samples[k].rows = malloc(sizeof(uint32_t) * r.capacity);
			if (!qc->samples[k].latency_ns || !qc->samples[k].rows) {
				fprintf(stderr, "tally-bench: out of memory for query samples\n");
				goto out;
			}
		}
		tally_session_info info;
		if (net_session_open(o->server, server.key, CLIENT_NAME, &qc->client, &info))
			goto out;
	}
	pthread_mutex_init(&r.gate_lock, NULL);
	pthread_cond_init(&r.gate_cond, NULL);
	gate_made = true;
	for (; started < o->query_client_count; started++)
		if (pthread_create(&clients[started].thread, NULL, query_client_main, &clients[started])) {
			fprintf(stderr, "tally-bench: cannot start query client %" PRIu32 "\n", started);
			atomic_store(&r.abort, 1);
			break;
		}
	fprintf(stderr, "tally-bench: live ingest of %" PRIu64 " events at %" PRIu64
		" events/s with %" PRIu32 " query clients...\n", live.event_count, o->rate,
		o->query_client_count);
	pthread_mutex_lock(&r.gate_lock);
	r.start_ns = bench_clock_ns();
	r.gate_open = 1;
	pthread_cond_broadcast(&r.gate_cond);
	pthread_mutex_unlock(&r.gate_lock);
	net_ingest_options ingest = {
		.server = o->server,
		.key = server.key,
		.client_name = CLIENT_NAME,
		.connection_count = o->connection_count,
		.inflight = o->inflight,
		.rate = o->rate,
		.abort = &r.abort,
	};
	int ingest_failed = started < o->query_client_count ? 1 : net_ingest_run(&ingest, &live, &f.live);
	atomic_store(&r.stop, 1);
	for (uint32_t c = 0; c < started; c++)
		pthread_join(clients[c].thread, NULL);
	for (uint32_t c = 0; c < started; c++)
		if (clients[c].error[0]) {
			fprintf(stderr, "tally-bench: query client %" PRIu32 ": %s\n", c, clients[c].error);
			ingest_failed = 1;
			break;
		}
	if (ingest_failed)
		goto out;
	net_server_memory_read(o->server_pid, &f.memory);
	f.live_match = net_results_check(&f.live, f.live_unique, f.live_resends, "live ingest");
	if (!f.live.rate_held)
		fprintf(stderr, "tally-bench: the live ingest fell short of %" PRIu64 " events/s: %.0f events/s\n",
			o->rate, f.live.paced_events_per_s);
	for (uint32_t c = 0; c < o->query_client_count; c++)
		f.queries_capped |= clients[c].capped;
	if (query_figures_merge(&r, clients, &f)) {
		fprintf(stderr, "tally-bench: out of memory for the query figures\n");
		goto out;
	}
	if (bench_report_end(o->json ? print_json(o, &server, &f) : (print_text(o, &server, &f), 0)))
		goto out;
	status = f.live_match ? 0 : 1;
out:
	if (gate_made) {
		pthread_cond_destroy(&r.gate_cond);
		pthread_mutex_destroy(&r.gate_lock);
	}
	tally_client_close(session);
	query_clients_free(clients, o->query_client_count);
	net_batches_free(&live);
	free(r.draw_names);
	return status;
}
