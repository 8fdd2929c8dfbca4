/*
 * dashboard.c — the five reference dashboard queries and the tenant draws
 * (contracts in dashboard.h; bench/README.md, `tally-bench query`).
 */
#include <assert.h>
#include <string.h>

#include "dashboard.h"
#include "rng.h"

#define DRAW_STREAM 101           /* rng stream of the tenant draws; workload.c uses 1..5 */
#define HOUR_US (INT64_C(3600) * TALLY_US_PER_SECOND)

static const double QUANTILES[] = {0.5, 0.95, 0.99};
#define QUANTILE_COUNT (sizeof(QUANTILES) / sizeof(QUANTILES[0]))
_Static_assert(QUANTILE_COUNT <= TALLY_QUANTILES_MAX, "quantiles fit in a query");

/* ---- The five queries ---------------------------------------------------- */

const dashboard_query_spec DASHBOARD_QUERIES[DASHBOARD_QUERY_COUNT] = {
	[DASHBOARD_DAILY_30D] = {
		.name = "daily_30d",
		.description = "by UTC day, 30 days: count, tokens in + out, cost",
		.span_us = 30 * TALLY_US_PER_DAY,
		.bucket = TALLY_BUCKET_DAY,
		.checked = true,
	},
	[DASHBOARD_HOURLY_TYPE_24H] = {
		.name = "hourly_type_24h",
		.description = "by hour and type, 24 hours: count, cost",
		.span_us = 24 * HOUR_US,
		.bucket = TALLY_BUCKET_HOUR,
		.group_by = 1u << TALLY_DIM_TYPE,
	},
	[DASHBOARD_PROJECT_MODEL_30D] = {
		.name = "project_model_30d",
		.description = "by project and model, 30 days: count, tokens in, tokens out, cost",
		.span_us = 30 * TALLY_US_PER_DAY,
		.bucket = TALLY_BUCKET_NONE,
		.group_by = 1u << TALLY_DIM_PROJECT | 1u << TALLY_DIM_MODEL,
		.checked = true,
	},
	[DASHBOARD_P95_AGENT_7D] = {
		.name = "p95_agent_7d",
		.description = "by agent, 7 days: duration P50, P95, P99",
		.span_us = 7 * TALLY_US_PER_DAY,
		.bucket = TALLY_BUCKET_NONE,
		.group_by = 1u << TALLY_DIM_AGENT,
		.quantiles = true,
	},
	[DASHBOARD_DAU_30D] = {
		.name = "dau_30d",
		.description = "by UTC day, 30 days: distinct users",
		.span_us = 30 * TALLY_US_PER_DAY,
		.bucket = TALLY_BUCKET_DAY,
		.distinct_users = true,
	},
};

/*
 * Ranges are aligned the way a dashboard asks: `to` is the end of the
 * minute holding the workload's last instant (no event is later, so the
 * answer is that of "until now"), and `from` starts a whole bucket: N whole
 * UTC days (the last one partial) for day buckets, N hours for hour buckets,
 * and for totals the span back from the start of to's hour. Such ranges are
 * answered from rollup cells alone, with no raw events.
 */
static int64_t floor_to(int64_t t, int64_t unit)
{
	return (t / unit - (t % unit < 0)) * unit;
}

tally_query dashboard_query_build(const dashboard_query_spec *spec, int64_t end_us)
{
	tally_query q;
	memset(&q, 0, sizeof(q));
	const int64_t minute_us = 60 * TALLY_US_PER_SECOND;
	q.to_us = floor_to(end_us, minute_us) + minute_us;
	if (spec->bucket == TALLY_BUCKET_DAY)
		q.from_us = floor_to(q.to_us - 1, TALLY_US_PER_DAY) - spec->span_us + TALLY_US_PER_DAY;
	else if (spec->bucket == TALLY_BUCKET_HOUR)
		q.from_us = floor_to(q.to_us - 1, HOUR_US) - spec->span_us + HOUR_US;
	else
		q.from_us = floor_to(q.to_us - 1, HOUR_US) - spec->span_us;
	q.bucket = spec->bucket;
	q.time_zone = NULL; /* UTC */
	q.group_by = spec->group_by;
	if (spec->quantiles) {
		for (size_t i = 0; i < QUANTILE_COUNT; i++)
			q.quantiles[i] = QUANTILES[i];
		q.quantile_count = QUANTILE_COUNT;
	}
	q.distinct_users = spec->distinct_users;
	q.limit = 0; /* TALLY_QUERY_ROWS_MAX */
	return q;
}

/* ---- Tenant draws ----------------------------------------------------------- */

/* The batch holding delivered event `position` (batches tile w->events in
 * order of `first`). */
static const workload_batch *batch_of(const workload *w, uint64_t position)
{
	uint64_t lo = 0, hi = w->batch_count - 1; /* the answer is in [lo, hi] */
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo + 1) / 2;
		if (w->batches[mid].first <= position)
			lo = mid;
		else
			hi = mid - 1;
	}
	const workload_batch *b = &w->batches[lo];
	assert(b->first <= position && position < b->first + b->count);
	return b;
}

uint32_t dashboard_tenants_draw(const workload *w, uint32_t *tenant, uint32_t count,
				uint8_t *drawn)
{
	rng r;
	rng_seed(&r, w->params.seed, DRAW_STREAM);
	uint32_t distinct = 0;
	for (uint32_t i = 0; i < count; i++) {
		tenant[i] = batch_of(w, rng_below64(&r, w->event_count))->tenant;
		distinct += !drawn[tenant[i]];
		drawn[tenant[i]] = 1;
	}
	return distinct;
}

