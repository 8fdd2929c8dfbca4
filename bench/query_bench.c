/*
 * query_bench.c — `tally-bench query`: the latency of five dashboard queries
 * (tally_query_run, in process) on the reference workload.
 *
 * NOTES ON THE MEASUREMENT
 *
 * 1. The data. DIR either is fresh (missing or empty) — then the workload is
 *    generated, ingested by the engine bench's producers (ingest.c), flushed,
 *    compacted unless --no-compact, and DIR/bench-workload.json written — or
 *    holds a store with that marker, written by `tally-bench engine` or an
 *    earlier `tally-bench query`; then the marker's parameters regenerate the
 *    identical workload (the generator is deterministic) and nothing is
 *    ingested. Either way the store is closed and reopened before querying,
 *    so both paths query the same state: a store opened from disk. Its event
 *    count must equal the workload's unique events, or the marker lies.
 *
 * 2. The draws. A query's tenant is the tenant of a uniformly random
 *    delivered event (seeded from the workload seed, its own stream), so a
 *    tenant is drawn in proportion to its activity: the big tenants, which
 *    make the slow queries, are drawn most. The same R tenants (--repeat)
 *    are used for each of the five queries.
 *
 * 3. The clock. Each tally_query_run call alone is timed (CLOCK_MONOTONIC,
 *    wall time); building the request and tally_result_free are not. The
 *    queries run one kind at a time, R calls each, one thread; nothing is
 *    warmed up first. "Last N days" is [end - N days, end) where end is the
 *    workload's end (its wall clock at generation), so a later run on the
 *    same DIR asks the same questions of the same data.
 *
 * 4. Correctness is checked, not assumed: after the timed passes, the first
 *    BENCH_QUERY_CHECKED_DRAWS draws of daily_30d and project_model_30d are
 *    run again and every row's count, tokens and cost compared with a
 *    brute-force sum over the workload's events of that tenant and range,
 *    each unique event counted once (workload_unique_index tells a re-send
 *    from its original). A wrong answer prints the difference and makes the
 *    exit status 1; the report is still printed, marked.
 *
 * 5. Memory. The workload stays in RAM for the draws and the checks (about
 *    300 bytes per event), so RSS is reported at three points: after the
 *    workload is generated, after the store is opened, and after the
 *    queries, plus the peak (VmHWM, which includes the ingest when this run
 *    ingested).
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "dashboard.h"
#include "ingest.h"
#include "marker.h"
#include "query_bench.h"
#include "tally.h"
#include "workload.h"

#define DIFFERENCES_PRINTED_MAX 10 /* per wrong answer; the rest are counted */
#define WRONG_DRAWS_PRINTED_MAX 5  /* wrong answers described per query; the rest are counted */
#define EXPECT_DAYS_MAX 32        /* UTC days a 30-day range touches: 31, plus slack */
#define EXPECT_GROUPS_MAX 256     /* (project, model): 20 projects x (5 models + none) */

/* ---- Figures --------------------------------------------------------------- */

enum draw_metric { METRIC_ROWS, METRIC_CELLS_DAY, METRIC_CELLS_HOUR, METRIC_CELLS_MINUTE,
		   METRIC_RAW_ROWS, METRIC_COUNT };
static const char *const METRIC_NAMES[METRIC_COUNT] = {
	"rows", "cells_day", "cells_hour", "cells_minute", "raw_rows",
};

typedef struct query_figures {
	int64_t *latency_ns;            /* per draw, sorted after the pass */
	uint64_t *metric[METRIC_COUNT]; /* per draw, sorted after the pass */
	double latency_us[4];           /* P50, P95, P99, max */
	double latency_mean_us;
	uint64_t median[METRIC_COUNT];
	uint64_t truncated_count;       /* results that hit the row limit */
	uint32_t checked_draws;
	uint32_t wrong_draws;
} query_figures;

typedef struct figures {
	/* data */
	bool ingested;                  /* this run ingested the workload */
	bool compacted;
	char written_by[WORKLOAD_MARKER_WRITER_SIZE];
	double generate_s;
	bench_ingest_figures ingest;    /* when ingested */
	double flush_ms;
	double compact_ms;
	/* store */
	tally_inspect_report inspect;   /* after close, before the queries */
	tally_stats stats;              /* after reopen */
	double rollup_bytes_per_event;
	/* queries */
	uint32_t repeat;
	bool warm;
	uint32_t distinct_tenants;
	query_figures query[DASHBOARD_QUERY_COUNT];
	bool answers_match;
	/* memory, bytes */
	uint64_t rss_workload;          /* VmRSS after generating the workload */
	uint64_t rss_open;              /* VmRSS after opening the store for the queries */
	uint64_t rss_end;               /* VmRSS after the queries */
	uint64_t rss_peak;              /* VmHWM after the queries */
} figures;

static void figures_free(figures *f)
{
	for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++) {
		free(f->query[k].latency_ns);
		for (int m = 0; m < METRIC_COUNT; m++)
			free(f->query[k].metric[m]);
	}
}

static int figures_alloc(figures *f, uint32_t repeat)
{
	for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++) {
		f->query[k].latency_ns = malloc(sizeof(int64_t) * repeat);
		if (!f->query[k].latency_ns)
			return -ENOMEM;
		for (int m = 0; m < METRIC_COUNT; m++)
			if (!(f->query[k].metric[m] = malloc(sizeof(uint64_t) * repeat)))
				return -ENOMEM;
	}
	return 0;
}

/* The nearest-rank median of n ascending values (the lower one for even n). */
static uint64_t median_u64(const uint64_t *sorted, uint32_t n)
{
	return n ? sorted[(n + 1) / 2 - 1] : 0;
}

/* ---- The brute force ---------------------------------------------------------- */

typedef struct sums {
	uint64_t count;
	uint64_t tokens_in;
	uint64_t tokens_out;
	int64_t cost_micros;
} sums;

typedef struct group_sums {
	tally_str project;
	tally_str model;
	sums sums;
	bool matched;
} group_sums;

typedef struct expectation {
	uint8_t *seen;            /* bit per unique event: counted already */
	uint64_t seen_bytes;
	sums day[EXPECT_DAYS_MAX]; /* by UTC day, from the range's first day */
	group_sums group[EXPECT_GROUPS_MAX];
	uint32_t group_count;
} expectation;

static bool str_equal(tally_str a, tally_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void sums_add(sums *s, const tally_event *e)
{
	s->count++;
	s->tokens_in += e->tokens_in;
	s->tokens_out += e->tokens_out;
	s->cost_micros += e->cost_micros;
}

/* The sums, by UTC day and by (project, model), of tenant's unique events
 * with from <= time < to. */
static void expectation_build(expectation *x, const workload *w, uint32_t tenant, int64_t from_us,
			      int64_t to_us)
{
	memset(x->seen, 0, x->seen_bytes);
	memset(x->day, 0, sizeof(x->day));
	x->group_count = 0;
	int64_t first_day = from_us / TALLY_US_PER_DAY;
	for (uint64_t b = 0; b < w->batch_count; b++) {
		const workload_batch *batch = &w->batches[b];
		if (batch->tenant != tenant)
			continue;
		for (uint32_t i = 0; i < batch->count; i++) {
			const tally_event *e = &w->events[batch->first + i];
			uint64_t u = workload_unique_index(w, e);
			if (x->seen[u / 8] >> (u % 8) & 1)
				continue; /* a re-send */
			x->seen[u / 8] |= (uint8_t)(1u << (u % 8));
			if (e->time_us < from_us || e->time_us >= to_us)
				continue;
			int64_t day = e->time_us / TALLY_US_PER_DAY - first_day;
			assert(day >= 0 && day < EXPECT_DAYS_MAX);
			sums_add(&x->day[day], e);
			uint32_t g = 0;
			while (g < x->group_count && !(str_equal(x->group[g].project, e->project) &&
						       str_equal(x->group[g].model, e->model)))
				g++;
			if (g == x->group_count) {
				assert(g < EXPECT_GROUPS_MAX);
				x->group[g] = (group_sums){.project = e->project, .model = e->model};
				x->group_count++;
			}
			sums_add(&x->group[g].sums, e);
		}
	}
}

static bool sums_equal(const sums *s, const tally_row *row)
{
	return s->count == row->count && s->tokens_in == row->tokens_in &&
	       s->tokens_out == row->tokens_out && s->cost_micros == row->cost_micros;
}

static void time_text(int64_t us, char *text, size_t size)
{
	time_t seconds = (time_t)(us / TALLY_US_PER_SECOND);
	struct tm tm;
	gmtime_r(&seconds, &tm);
	strftime(text, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* One wrong answer's report on stderr: a header once, then at most
 * DIFFERENCES_PRINTED_MAX lines. */
typedef struct difference_log {
	const char *query;
	const char *tenant;
	const tally_query *q;
	bool quiet;      /* count only: enough wrong answers of this query were described */
	uint32_t count;
} difference_log;

static void difference(difference_log *log, const char *format, ...)
	__attribute__((format(printf, 2, 3)));

static void difference(difference_log *log, const char *format, ...)
{
	if (log->quiet) {
		log->count++;
		return;
	}
	if (log->count == 0) {
		char from[32], to[32];
		time_text(log->q->from_us, from, sizeof(from));
		time_text(log->q->to_us, to, sizeof(to));
		fprintf(stderr,
			"tally-bench: WRONG ANSWER: %s for tenant %s over [%s, %s) (from_us %" PRId64
			", to_us %" PRId64 "):\n",
			log->query, log->tenant, from, to, log->q->from_us, log->q->to_us);
	}
	if (log->count++ < DIFFERENCES_PRINTED_MAX) {
		va_list args;
		va_start(args, format);
		fputs("  ", stderr);
		vfprintf(stderr, format, args);
		fputc('\n', stderr);
		va_end(args);
	}
}

#define SUMS_FORMAT "count %" PRIu64 ", tokens_in %" PRIu64 ", tokens_out %" PRIu64 ", cost_micros %" PRId64
#define SUMS_ARGS(s) (s).count, (s).tokens_in, (s).tokens_out, (s).cost_micros

static void check_daily(const expectation *x, const tally_result *result, difference_log *log)
{
	const tally_query *q = log->q;
	int64_t first_day = q->from_us / TALLY_US_PER_DAY;
	bool row_seen[EXPECT_DAYS_MAX] = {false};
	for (size_t r = 0; r < result->row_count; r++) {
		const tally_row *row = &result->rows[r];
		sums got = {row->count, row->tokens_in, row->tokens_out, row->cost_micros};
		int64_t day = row->bucket_start_us / TALLY_US_PER_DAY - first_day;
		char start[32];
		time_text(row->bucket_start_us, start, sizeof(start));
		if (row->bucket_start_us < first_day * TALLY_US_PER_DAY || day >= EXPECT_DAYS_MAX ||
		    row->bucket_end_us <= row->bucket_start_us ||
		    row->bucket_end_us - row->bucket_start_us > TALLY_US_PER_DAY) {
			difference(log, "row %zu: bucket [%" PRId64 ", %" PRId64 ") is not a UTC day of the range (" SUMS_FORMAT ")",
				   r, row->bucket_start_us, row->bucket_end_us, SUMS_ARGS(got));
			continue;
		}
		if (row_seen[day]) {
			difference(log, "row %zu: a second row for the day of %s", r, start);
			continue;
		}
		row_seen[day] = true;
		if (!sums_equal(&x->day[day], row))
			difference(log, "day of %s: expected " SUMS_FORMAT "; got " SUMS_FORMAT, start,
				   SUMS_ARGS(x->day[day]), SUMS_ARGS(got));
	}
	for (int day = 0; day < EXPECT_DAYS_MAX; day++) {
		if (row_seen[day] || x->day[day].count == 0)
			continue;
		char start[32];
		time_text((first_day + day) * TALLY_US_PER_DAY, start, sizeof(start));
		difference(log, "day of %s: expected " SUMS_FORMAT "; no row", start,
			   SUMS_ARGS(x->day[day]));
	}
}

static void check_project_model(expectation *x, const tally_result *result, difference_log *log)
{
	const tally_query *q = log->q;
	for (size_t r = 0; r < result->row_count; r++) {
		const tally_row *row = &result->rows[r];
		sums got = {row->count, row->tokens_in, row->tokens_out, row->cost_micros};
		tally_str project = row->group[TALLY_DIM_PROJECT], model = row->group[TALLY_DIM_MODEL];
		if (row->bucket_start_us != q->from_us || row->bucket_end_us != q->to_us)
			difference(log, "row %zu (%.*s, %.*s): bucket [%" PRId64 ", %" PRId64
				   ") is not the range", r, (int)project.len, project.ptr,
				   (int)model.len, model.ptr, row->bucket_start_us, row->bucket_end_us);
		uint32_t g = 0;
		while (g < x->group_count && !(str_equal(x->group[g].project, project) &&
					       str_equal(x->group[g].model, model)))
			g++;
		if (g == x->group_count) {
			difference(log, "project \"%.*s\", model \"%.*s\": not in the workload; got " SUMS_FORMAT,
				   (int)project.len, project.ptr, (int)model.len, model.ptr, SUMS_ARGS(got));
			continue;
		}
		if (x->group[g].matched) {
			difference(log, "project \"%.*s\", model \"%.*s\": a second row",
				   (int)project.len, project.ptr, (int)model.len, model.ptr);
			continue;
		}
		x->group[g].matched = true;
		if (!sums_equal(&x->group[g].sums, row))
			difference(log, "project \"%.*s\", model \"%.*s\": expected " SUMS_FORMAT "; got " SUMS_FORMAT,
				   (int)project.len, project.ptr, (int)model.len, model.ptr,
				   SUMS_ARGS(x->group[g].sums), SUMS_ARGS(got));
	}
	for (uint32_t g = 0; g < x->group_count; g++)
		if (!x->group[g].matched)
			difference(log, "project \"%.*s\", model \"%.*s\": expected " SUMS_FORMAT "; no row",
				   (int)x->group[g].project.len, x->group[g].project.ptr,
				   (int)x->group[g].model.len, x->group[g].model.ptr,
				   SUMS_ARGS(x->group[g].sums));
}

/* ---- The queries --------------------------------------------------------------- */

static int query_failed(const char *query, const char *tenant, int rc, const char *errmsg)
{
	char call[128];
	snprintf(call, sizeof(call), "tally_query_run (%s, tenant %s)", query, tenant);
	return bench_engine_failed(call, rc, NULL, errmsg);
}

/* Times `repeat` calls of one query kind, one per drawn tenant. 0, or 1
 * after printing the engine's error. */
static int query_pass(tally_store *store, const workload *w, int kind, const uint32_t *tenant,
		      uint32_t repeat, query_figures *qf)
{
	const dashboard_query_spec *spec = &DASHBOARD_QUERIES[kind];
	tally_query q = dashboard_query_build(spec, w->params.end_us);
	char errmsg[TALLY_ERRMSG_SIZE];
	double total_us = 0;
	for (uint32_t i = 0; i < repeat; i++) {
		const char *name = w->tenant_names[tenant[i]];
		tally_result *result = NULL;
		errmsg[0] = 0;
		int64_t t0 = bench_clock_ns();
		int rc = tally_query_run(store, name, &q, &result, errmsg);
		int64_t t1 = bench_clock_ns();
		if (rc)
			return query_failed(spec->name, name, rc, errmsg);
		qf->latency_ns[i] = t1 - t0;
		total_us += (double)(t1 - t0) / 1e3;
		qf->metric[METRIC_ROWS][i] = result->row_count;
		qf->metric[METRIC_CELLS_DAY][i] = result->cells_day;
		qf->metric[METRIC_CELLS_HOUR][i] = result->cells_hour;
		qf->metric[METRIC_CELLS_MINUTE][i] = result->cells_minute;
		qf->metric[METRIC_RAW_ROWS][i] = result->raw_rows;
		qf->truncated_count += result->truncated;
		tally_result_free(result);
	}
	bench_latency_summary_us(qf->latency_ns, repeat, qf->latency_us);
	qf->latency_mean_us = total_us / repeat;
	for (int m = 0; m < METRIC_COUNT; m++) {
		qsort(qf->metric[m], repeat, sizeof(uint64_t), bench_compare_u64);
		qf->median[m] = median_u64(qf->metric[m], repeat);
	}
	return 0;
}

/* Runs the first draws of a checked query again and compares each answer
 * with the brute force. 0 (wrong answers counted in qf), or 1 after
 * printing the engine's error. */
static int query_check(tally_store *store, const workload *w, int kind, const uint32_t *tenant,
		       uint32_t draws, expectation *x, query_figures *qf)
{
	const dashboard_query_spec *spec = &DASHBOARD_QUERIES[kind];
	tally_query q = dashboard_query_build(spec, w->params.end_us);
	char errmsg[TALLY_ERRMSG_SIZE];
	for (uint32_t i = 0; i < draws; i++) {
		const char *name = w->tenant_names[tenant[i]];
		tally_result *result = NULL;
		errmsg[0] = 0;
		int rc = tally_query_run(store, name, &q, &result, errmsg);
		if (rc)
			return query_failed(spec->name, name, rc, errmsg);
		expectation_build(x, w, tenant[i], q.from_us, q.to_us);
		difference_log log = {.query = spec->name, .tenant = name, .q = &q,
				      .quiet = qf->wrong_draws >= WRONG_DRAWS_PRINTED_MAX};
		if (result->truncated)
			difference(&log, "result truncated at %zu rows", result->row_count);
		if (kind == DASHBOARD_DAILY_30D)
			check_daily(x, result, &log);
		else
			check_project_model(x, result, &log);
		if (!log.quiet && log.count > DIFFERENCES_PRINTED_MAX)
			fprintf(stderr, "  ... and %" PRIu32 " more differences\n",
				log.count - DIFFERENCES_PRINTED_MAX);
		qf->checked_draws++;
		qf->wrong_draws += log.count > 0;
		tally_result_free(result);
	}
	if (qf->wrong_draws > WRONG_DRAWS_PRINTED_MAX)
		fprintf(stderr, "tally-bench: %s: %" PRIu32 " more wrong answers not described\n",
			spec->name, qf->wrong_draws - WRONG_DRAWS_PRINTED_MAX);
	return 0;
}

/* ---- Reports --------------------------------------------------------------------- */

static const char *const RESOLUTION_NAMES[3] = {"minute", "hour", "day"};

static double mib(uint64_t bytes)
{
	return (double)bytes / (1024.0 * 1024.0);
}

static void print_text(const bench_query_options *o, const workload *w, const figures *f)
{
	char end[32];
	time_text(w->params.end_us, end, sizeof(end));
	printf("tally-bench query: %" PRIu64 " events (%" PRIu64 " unique + %" PRIu64
	       " re-sends), %" PRIu32 " tenants (%" PRIu32 " active), seed %" PRIu64
	       ", history ends %s (end_us %" PRId64 ")\n",
	       w->event_count, w->unique_count, w->resend_count, w->params.tenant_count,
	       w->active_tenant_count, w->params.seed, end, w->params.end_us);
	if (f->ingested)
		printf("  data: ingested by this run into %s in %.2f s (%.0f events/s), flushed (%.1f ms), %s\n",
		       o->data_dir, f->ingest.ingest_s, f->ingest.events_per_s, f->flush_ms,
		       f->compacted ? "compacted" : "NOT compacted (--no-compact)");
	else
		printf("  data: existing store in %s (ingested by %s), %s\n", o->data_dir,
		       f->written_by, f->compacted ? "compacted" : "NOT compacted");
	printf("  workload generated in %.2f s (not timed)\n", f->generate_s);

	uint64_t stored = w->unique_count;
	printf("\nrollup pages (live segment files): %.2f bytes/event (%" PRIu64 " bytes, %" PRIu64
	       " cells); pages of unflushed events in RAM: %" PRIu64 " bytes\n",
	       f->rollup_bytes_per_event, f->stats.rollup_bytes, f->stats.rollup_cells,
	       f->stats.rollup_live_bytes);
	for (int r = 0; r < 3; r++)
		printf("  %-6s  %6.2f bytes/event  %12" PRIu64 " bytes  %10" PRIu64 " cells  %6.1f bytes/cell\n",
		       RESOLUTION_NAMES[r], bench_per_event(f->inspect.rollup_bytes[r], stored),
		       f->inspect.rollup_bytes[r], f->inspect.rollup_cells[r],
		       bench_per_event(f->inspect.rollup_bytes[r], f->inspect.rollup_cells[r]));
	printf("  groups    %5.2f bytes/event  %12" PRIu64 " bytes (one group table per tenant section)\n",
	       bench_per_event(f->inspect.rollup_group_bytes, stored), f->inspect.rollup_group_bytes);
	printf("  (by resolution: tally_inspect after close; segment files %.2f bytes/event in all)\n",
	       bench_per_event(f->inspect.file_bytes, stored));

	printf("\nqueries: %" PRIu32 " draws each, tenant of a uniformly random event (%" PRIu32
	       " distinct tenants); wall time of each tally_query_run call, us; %s\n",
	       f->repeat, f->distinct_tenants,
	       f->warm ? "warm (after an untimed pass of the same draws)"
		       : "cold start (the store was just opened: first queries decode pages)");
	printf("  %-18s %9s %9s %9s %9s %9s | medians: %6s %9s %9s %9s %9s\n", "query", "P50", "P95",
	       "P99", "max", "mean", "rows", "day", "hour", "minute", "raw rows");
	for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++) {
		const query_figures *qf = &f->query[k];
		printf("  %-18s %9.1f %9.1f %9.1f %9.1f %9.1f |          %6" PRIu64 " %9" PRIu64
		       " %9" PRIu64 " %9" PRIu64 " %9" PRIu64 "\n",
		       DASHBOARD_QUERIES[k].name, qf->latency_us[0], qf->latency_us[1], qf->latency_us[2],
		       qf->latency_us[3], qf->latency_mean_us, qf->median[METRIC_ROWS],
		       qf->median[METRIC_CELLS_DAY], qf->median[METRIC_CELLS_HOUR],
		       qf->median[METRIC_CELLS_MINUTE], qf->median[METRIC_RAW_ROWS]);
	}
	printf("  (day/hour/minute: rollup cells merged; raw rows: events read for edges finer than the pages)\n");
	for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++)
		if (f->query[k].truncated_count)
			printf("  %s: %" PRIu64 " results TRUNCATED at the row limit\n", DASHBOARD_QUERIES[k].name,
			       f->query[k].truncated_count);
	for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++)
		if (DASHBOARD_QUERIES[k].checked)
			printf("  answers of %s: %" PRIu32 " draws checked against the workload: %s%" PRIu32
			       " wrong%s\n", DASHBOARD_QUERIES[k].name, f->query[k].checked_draws,
			       f->query[k].wrong_draws ? "MISMATCH, " : "", f->query[k].wrong_draws,
			       f->query[k].wrong_draws ? " (details on stderr)" : "");

	printf("\nmemory (RSS): %.1f MiB after generating the workload, %.1f MiB with the store open, "
	       "%.1f MiB after the queries; peak %.1f MiB%s\n",
	       mib(f->rss_workload), mib(f->rss_open), mib(f->rss_end), mib(f->rss_peak),
	       f->ingested ? " (includes the ingest)" : "");
}

static json_t *json_real_rounded(double x, int places)
{
	return json_real(bench_round(x, places));
}

static int print_json(const bench_query_options *o, const workload *w, const figures *f)
{
	(void)o;
	uint64_t stored = w->unique_count;
	/* rollup and queries are ours until the end; root takes its own
	 * reference where each goes, so keys come out in reading order. */
	json_t *root = json_object(), *rollup = json_object(), *queries = json_object();
	int bad = !root || !rollup || !queries;
	bad |= bench_json_put(root, "benchmark", json_string("query"));
	bad |= bench_json_put(root, "events", json_integer((json_int_t)w->event_count));
	bad |= bench_json_put(root, "unique_events", json_integer((json_int_t)w->unique_count));
	bad |= bench_json_put(root, "resends", json_integer((json_int_t)w->resend_count));
	bad |= bench_json_put(root, "tenants", json_integer(w->params.tenant_count));
	bad |= bench_json_put(root, "active_tenants", json_integer(w->active_tenant_count));
	bad |= bench_json_put(root, "seed", bench_json_u64(w->params.seed));
	bad |= bench_json_put(root, "end_us", json_integer(w->params.end_us));
	bad |= bench_json_put(root, "batch_window", json_integer(w->params.window_events));
	bad |= bench_json_put(root, "ingested", json_boolean(f->ingested));
	bad |= bench_json_put(root, "compacted", json_boolean(f->compacted));
	bad |= bench_json_put(root, "data_written_by", json_string(f->written_by));
	bad |= bench_json_put(root, "generate_s", json_real_rounded(f->generate_s, 3));
	if (f->ingested) {
		bad |= bench_json_put(root, "ingest_s", json_real_rounded(f->ingest.ingest_s, 6));
		bad |= bench_json_put(root, "events_per_s",
				      json_integer((json_int_t)(f->ingest.events_per_s + 0.5)));
		bad |= bench_json_put(root, "flush_ms", json_real_rounded(f->flush_ms, 3));
		bad |= bench_json_put(root, "compact_ms", json_real_rounded(f->compact_ms, 3));
	}
	bad |= bench_json_put(root, "rollup_bytes", json_integer((json_int_t)f->stats.rollup_bytes));
	bad |= bench_json_put(root, "rollup_cells", json_integer((json_int_t)f->stats.rollup_cells));
	bad |= bench_json_put(root, "rollup_live_bytes",
			      json_integer((json_int_t)f->stats.rollup_live_bytes));
	bad |= bench_json_put(root, "rollup_bytes_per_event",
			      json_real_rounded(f->rollup_bytes_per_event, 3));
	for (int r = 0; r < 3 && !bad; r++) {
		json_t *level = json_object();
		if (!level) {
			bad = 1;
			break;
		}
		bad |= bench_json_put(level, "bytes", json_integer((json_int_t)f->inspect.rollup_bytes[r]));
		bad |= bench_json_put(level, "cells", json_integer((json_int_t)f->inspect.rollup_cells[r]));
		bad |= bench_json_put(level, "bytes_per_event",
				      json_real_rounded(bench_per_event(f->inspect.rollup_bytes[r], stored), 3));
		bad |= bench_json_put(rollup, RESOLUTION_NAMES[r], level);
	}
	bad |= bench_json_put(root, "rollup_by_resolution", rollup ? json_incref(rollup) : NULL);
	bad |= bench_json_put(root, "segment_file_bytes_per_event",
			      json_real_rounded(bench_per_event(f->inspect.file_bytes, stored), 3));
	bad |= bench_json_put(root, "repeat", json_integer(f->repeat));
	bad |= bench_json_put(root, "warm", json_boolean(f->warm));
	bad |= bench_json_put(root, "rollup_group_table_bytes", json_integer((json_int_t)f->inspect.rollup_group_bytes));
	bad |= bench_json_put(root, "distinct_tenants", json_integer(f->distinct_tenants));
	for (int k = 0; k < DASHBOARD_QUERY_COUNT && !bad; k++) {
		const query_figures *qf = &f->query[k];
		json_t *q = json_object();
		if (!q) {
			bad = 1;
			break;
		}
		bad |= bench_json_put(q, "p50_us", json_real_rounded(qf->latency_us[0], 1));
		bad |= bench_json_put(q, "p95_us", json_real_rounded(qf->latency_us[1], 1));
		bad |= bench_json_put(q, "p99_us", json_real_rounded(qf->latency_us[2], 1));
		bad |= bench_json_put(q, "max_us", json_real_rounded(qf->latency_us[3], 1));
		bad |= bench_json_put(q, "mean_us", json_real_rounded(qf->latency_mean_us, 1));
		for (int m = 0; m < METRIC_COUNT; m++) {
			char key[32];
			snprintf(key, sizeof(key), "%s_median", METRIC_NAMES[m]);
			bad |= bench_json_put(q, key, json_integer((json_int_t)qf->median[m]));
		}
		bad |= bench_json_put(q, "truncated", json_integer((json_int_t)qf->truncated_count));
		if (DASHBOARD_QUERIES[k].checked) {
			bad |= bench_json_put(q, "checked_draws", json_integer(qf->checked_draws));
			bad |= bench_json_put(q, "wrong_draws", json_integer(qf->wrong_draws));
		}
		bad |= bench_json_put(queries, DASHBOARD_QUERIES[k].name, q);
	}
	bad |= bench_json_put(root, "queries", queries ? json_incref(queries) : NULL);
	bad |= bench_json_put(root, "answers_match", json_boolean(f->answers_match));
	bad |= bench_json_put(root, "rss_workload_bytes", json_integer((json_int_t)f->rss_workload));
	bad |= bench_json_put(root, "rss_open_bytes", json_integer((json_int_t)f->rss_open));
	bad |= bench_json_put(root, "rss_bytes", json_integer((json_int_t)f->rss_end));
	bad |= bench_json_put(root, "rss_peak_bytes", json_integer((json_int_t)f->rss_peak));
	json_decref(rollup);
	json_decref(queries);
	return bench_json_print(root, bad);
}

/* ---- The data directory ------------------------------------------------------------ */

/*
 * Decides what DIR holds. Returns 0 with *fresh = true when DIR is missing
 * or empty (it is created); 0 with *fresh = false and *marker filled when
 * DIR holds a store and its marker; else the exit status (2: neither; 1: an
 * engine error) after printing why.
 */
static int data_dir_examine(const bench_query_options *o, bool *fresh, workload_marker *marker)
{
	const char *dir = o->data_dir;
	*fresh = false;
	int rc = bench_make_dirs(dir);
	if (rc) {
		fprintf(stderr, "tally-bench: cannot create data directory %s: %s\n", dir, strerror(-rc));
		return 2;
	}
	if ((rc = bench_dir_is_empty(dir)) < 0) {
		fprintf(stderr, "tally-bench: cannot read data directory %s: %s\n", dir, strerror(-rc));
		return 2;
	}
	if (rc == 1) {
		*fresh = true;
		return 0;
	}
	char errmsg[TALLY_ERRMSG_SIZE];
	tally_inspect_report report;
	rc = tally_inspect(dir, &report, NULL, NULL, errmsg);
	if (rc == TALLY_E_NOTFOUND) {
		fprintf(stderr,
			"tally-bench: data directory %s is not empty and holds no tally store; name a "
			"missing or empty directory (the workload is then ingested into it) or a store "
			"written by tally-bench\n",
			dir);
		return 2;
	}
	if (rc == TALLY_E_LOCKED) {
		fprintf(stderr, "tally-bench: data directory %s is in use by another process\n", dir);
		return 2;
	}
	if (rc)
		return bench_engine_failed("tally_inspect", rc, NULL, errmsg);
	char marker_errmsg[WORKLOAD_MARKER_ERRMSG_SIZE];
	rc = workload_marker_read(dir, marker, marker_errmsg);
	if (rc == -ENOENT) {
		fprintf(stderr,
			"tally-bench: data directory %s holds a tally store but no %s, so the workload it "
			"holds is unknown; query a store written by `tally-bench engine --data DIR` or "
			"`tally-bench query --data DIR`, or name a missing or empty directory\n",
			dir, WORKLOAD_MARKER_NAME);
		return 2;
	}
	if (rc) {
		fprintf(stderr, "tally-bench: bad workload marker: %s\n", marker_errmsg);
		return 2;
	}
	const workload_params *p = &marker->params;
	if ((o->event_count_given && o->event_count != p->event_count) ||
	    (o->tenant_count_given && o->tenant_count != p->tenant_count) ||
	    (o->seed_given && o->seed != p->seed)) {
		fprintf(stderr,
			"tally-bench: data directory %s holds the workload --events %" PRIu64
			" --tenants %" PRIu32 " --seed %" PRIu64
			" (%s), not the one the flags ask for; drop the flags or name another directory\n",
			dir, p->event_count, p->tenant_count, p->seed, WORKLOAD_MARKER_NAME);
		return 2;
	}
	if (o->no_compact)
		fprintf(stderr, "tally-bench: --no-compact ignored: %s holds a store already (%s)\n", dir,
			marker->compacted ? "compacted" : "not compacted");
	return 0;
}

/* Ingests w into the fresh DIR, flushes, compacts unless asked not to,
 * closes and writes the marker. 0 or the exit status. */
static int data_ingest(const bench_query_options *o, const workload *w, figures *f)
{
	const char *dir = o->data_dir;
	tally_store *store = NULL;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_store_open(dir, NULL, &store, errmsg);
	if (rc)
		return bench_engine_failed("tally_store_open", rc, NULL, errmsg);
	fprintf(stderr, "tally-bench: ingesting %" PRIu64 " events into %s...\n", w->event_count, dir);
	bench_ingest_options ingest_options = {
		.producer_count = BENCH_PRODUCERS_DEFAULT,
		.inflight_batches = BENCH_INFLIGHT_DEFAULT,
		.group_batches = BENCH_GROUP_DEFAULT,
	};
	int status = 1;
	if (bench_ingest_run(&ingest_options, w, store, &f->ingest))
		goto out;
	if (!f->ingest.results_match)
		goto out; /* described on stderr; no marker for data that is not the workload */
	int64_t t0 = bench_clock_ns();
	if ((rc = tally_flush(store))) {
		status = bench_engine_failed("tally_flush", rc, store, NULL);
		goto out;
	}
	f->flush_ms = bench_ms_between(t0, bench_clock_ns());
	if (!o->no_compact) {
		t0 = bench_clock_ns();
		if ((rc = tally_compact(store))) {
			status = bench_engine_failed("tally_compact", rc, store, NULL);
			goto out;
		}
		f->compact_ms = bench_ms_between(t0, bench_clock_ns());
	}
	rc = tally_store_close(store);
	store = NULL;
	if (rc) {
		fprintf(stderr, "tally-bench: tally_store_close failed: %s\n", tally_strerror(rc));
		goto out;
	}
	workload_marker marker = {.params = w->params, .compacted = !o->no_compact};
	snprintf(marker.written_by, sizeof(marker.written_by), "tally-bench query");
	char marker_errmsg[WORKLOAD_MARKER_ERRMSG_SIZE];
	if ((rc = workload_marker_write(dir, &marker, marker_errmsg))) {
		fprintf(stderr, "tally-bench: cannot write the workload marker: %s\n", marker_errmsg);
		goto out;
	}
	f->ingested = true;
	f->compacted = marker.compacted;
	snprintf(f->written_by, sizeof(f->written_by), "%s", marker.written_by);
	status = 0;
out:
	if (store)
		tally_store_close(store);
	return status;
}

/* ---- The run ------------------------------------------------------------------------ */

/* The figures at one point; a missing /proc leaves them 0 (reported so). */
static void rss_sample(uint64_t *rss, uint64_t *peak)
{
	uint64_t unused;
	if (bench_rss_read(rss, peak ? peak : &unused))
		fprintf(stderr, "tally-bench: cannot read /proc/self/status; RSS reported as 0\n");
}

int bench_query_run(const bench_query_options *o)
{
	figures f;
	memset(&f, 0, sizeof(f));
	f.repeat = o->repeat;
	f.warm = o->warm;
	workload_marker marker;
	bool fresh;
	int status = data_dir_examine(o, &fresh, &marker);
	if (status)
		return status;
	workload_params params;
	if (fresh) {
		params = (workload_params){
			.event_count = o->event_count,
			.tenant_count = o->tenant_count,
			.seed = o->seed,
			.window_events = BENCH_WINDOW_DEFAULT,
			.end_us = bench_wall_clock_us(),
		};
	} else {
		params = marker.params;
		f.compacted = marker.compacted;
		snprintf(f.written_by, sizeof(f.written_by), "%s", marker.written_by);
	}

	fprintf(stderr, "tally-bench: generating %" PRIu64 " events for %" PRIu32 " tenants (seed %" PRIu64 ")...\n",
		params.event_count, params.tenant_count, params.seed);
	workload w;
	int64_t t0 = bench_clock_ns();
	int rc = workload_generate(&w, &params);
	if (rc) {
		fprintf(stderr, "tally-bench: cannot generate the workload: %s\n", strerror(-rc));
		return 1;
	}
	f.generate_s = bench_ms_between(t0, bench_clock_ns()) / 1e3;
	rss_sample(&f.rss_workload, NULL);

	status = 1;
	tally_store *store = NULL;
	uint32_t *tenant = malloc(sizeof(*tenant) * o->repeat);
	uint8_t *drawn = calloc(w.params.tenant_count, 1);
	expectation *x = calloc(1, sizeof(*x));
	if (x) {
		x->seen_bytes = (w.unique_count + 7) / 8;
		x->seen = malloc(x->seen_bytes);
	}
	if (!tenant || !drawn || !x || !x->seen || figures_alloc(&f, o->repeat)) {
		fprintf(stderr, "tally-bench: out of memory\n");
		goto out;
	}
	if (fresh && (status = data_ingest(o, &w, &f)))
		goto out;
	status = 1;

	char errmsg[TALLY_ERRMSG_SIZE] = "";
	if ((rc = tally_inspect(o->data_dir, &f.inspect, NULL, NULL, errmsg))) {
		bench_engine_failed("tally_inspect", rc, NULL, errmsg);
		goto out;
	}
	fprintf(stderr, "tally-bench: opening %s...\n", o->data_dir);
	if ((rc = tally_store_open(o->data_dir, NULL, &store, errmsg))) {
		bench_engine_failed("tally_store_open", rc, NULL, errmsg);
		goto out;
	}
	rss_sample(&f.rss_open, NULL);
	if ((rc = tally_store_stats(store, &f.stats))) {
		bench_engine_failed("tally_store_stats", rc, store, NULL);
		goto out;
	}
	if (f.stats.segment_rows + f.stats.events_memtable != w.unique_count) {
		fprintf(stderr,
			"tally-bench: the store in %s holds %" PRIu64 " events (%" PRIu64
			" in segments, %" PRIu64 " in memtables) but its workload (%s) has %" PRIu64
			" unique events; it is not that workload's store\n",
			o->data_dir, f.stats.segment_rows + f.stats.events_memtable,
			f.stats.segment_rows, f.stats.events_memtable, WORKLOAD_MARKER_NAME,
			w.unique_count);
		goto out;
	}
	f.rollup_bytes_per_event = bench_per_event(f.stats.rollup_bytes, w.unique_count);

	f.distinct_tenants = dashboard_tenants_draw(&w, tenant, o->repeat, drawn);
	for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++) {
		fprintf(stderr, "tally-bench: %s x %" PRIu32 "%s...\n", DASHBOARD_QUERIES[k].name, o->repeat,
			o->warm ? " (after an untimed warm-up pass)" : "");
		/* --warm: the same draws once untimed, so the timed pass finds
		 * every chunk it needs decoded in the query cache. */
		if (o->warm && query_pass(store, &w, k, tenant, o->repeat, &f.query[k]))
			goto out;
		if (query_pass(store, &w, k, tenant, o->repeat, &f.query[k]))
			goto out;
	}
	uint32_t checked = o->repeat < BENCH_QUERY_CHECKED_DRAWS ? o->repeat : BENCH_QUERY_CHECKED_DRAWS;
	f.answers_match = true;
	for (int k = 0; k < DASHBOARD_QUERY_COUNT; k++) {
		if (!DASHBOARD_QUERIES[k].checked)
			continue;
		if (query_check(store, &w, k, tenant, checked, x, &f.query[k]))
			goto out;
		f.answers_match &= f.query[k].wrong_draws == 0;
	}
	rss_sample(&f.rss_end, &f.rss_peak);
	rc = tally_store_close(store);
	store = NULL;
	if (rc) {
		fprintf(stderr, "tally-bench: tally_store_close failed: %s\n", tally_strerror(rc));
		goto out;
	}

	if (bench_report_end(o->json ? print_json(o, &w, &f) : (print_text(o, &w, &f), 0)))
		goto out;
	status = f.answers_match ? 0 : 1;
out:
	if (store)
		tally_store_close(store);
	if (x)
		free(x->seen);
	free(x);
	free(drawn);
	free(tenant);
	figures_free(&f);
	workload_free(&w);
	return status;
}
