/*
 * dashboard.h — the five reference dashboard queries and the tenants they
 * are asked for (bench/README.md, `tally-bench query`, steps 3 and 4).
 * Shared by `tally-bench query` (in process, tally_query_run) and
 * `tally-bench mixed` (over the protocol), so both ask the same questions.
 */
#ifndef TALLY_BENCH_DASHBOARD_H
#define TALLY_BENCH_DASHBOARD_H

#include <stdbool.h>
#include <stdint.h>

#include "tally.h"
#include "workload.h"

enum dashboard_query_kind {
	DASHBOARD_DAILY_30D = 0,
	DASHBOARD_HOURLY_TYPE_24H,
	DASHBOARD_PROJECT_MODEL_30D,
	DASHBOARD_P95_AGENT_7D,
	DASHBOARD_DAU_30D,
	DASHBOARD_QUERY_COUNT,
};

typedef struct dashboard_query_spec {
	const char *name;
	const char *description;
	int64_t span_us;        /* the range is [end - span, end), aligned (dashboard_query_build) */
	int bucket;             /* enum tally_bucket */
	uint32_t group_by;      /* bits of enum tally_dim */
	bool quantiles;         /* duration P50, P95, P99 */
	bool distinct_users;
	bool checked;           /* `tally-bench query` compares it with a brute force */
} dashboard_query_spec;

/* Indexed by enum dashboard_query_kind. */
extern const dashboard_query_spec DASHBOARD_QUERIES[DASHBOARD_QUERY_COUNT];

/*
 * The query of `spec` for a history ending at end_us, aligned the way a
 * dashboard asks: `to` is the end of the minute holding end_us; `from`
 * starts a whole bucket (N whole UTC days for day buckets, the last one
 * partial; N hours for hour buckets; for totals the span back from the
 * start of to's hour). All in UTC, no filters, no row limit.
 */
tally_query dashboard_query_build(const dashboard_query_spec *spec, int64_t end_us);

/*
 * tenant[i] for i < count: the tenant (index into w->tenant_names) of a
 * uniformly random delivered event of w, from a PRNG stream of w's seed of
 * its own — tenants come in proportion to their activity, so the big
 * tenants, which make the slow queries, are drawn most; every drawn tenant
 * has data. drawn (w->params.tenant_count bytes, zeroed by the caller) is
 * set for each tenant drawn. Returns the number of distinct tenants drawn.
 * Deterministic: the same workload gives the same draws.
 */
uint32_t dashboard_tenants_draw(const workload *w, uint32_t *tenant, uint32_t count,
				uint8_t *drawn);

#endif /* TALLY_BENCH_DASHBOARD_H */
