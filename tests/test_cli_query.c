/*
 * test_cli_query.c — tools/queryargs.c: the flags of `tally query` and
 * `tally events` become the exact Tally__V1__Query fields, defaults
 * included, and every bad flag gives its exact message.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../tools/queryargs.h"

#define NOW INT64_C(1790000000000000) /* 2026-09-21T14:13:20Z */
#define DAY_US INT64_C(86400000000)

/* Description: with no flag, the query covers the 30 days up to now, by
 * day, in UTC, counting, with no group, filter, order or limit. */
Test(queryargs, defaults)
{
	query_spec s;
	queryargs_init(&s);
	char err[QUERYARGS_ERRMSG_SIZE] = "";
	cr_assert_eq(queryargs_finish(&s, NOW, err), 0, "%s", err);
	const Tally__V1__Query *q = &s.query;
	cr_expect_eq(q->to_us, NOW);
	cr_expect_eq(q->from_us, NOW - 30 * DAY_US);
	cr_expect_eq(q->bucket, TALLY__V1__BUCKET__DAY);
	cr_expect_str_eq(q->time_zone, "");
	cr_expect_eq(q->n_group_by, 0);
	cr_expect_eq(q->n_filters, 0);
	cr_expect_eq(q->n_quantiles, 0);
	cr_expect_not(q->distinct_users);
	cr_expect_not(q->order_by_aggregate);
	cr_expect_eq(q->limit, 0);
	cr_assert_eq(s.agg_count, 1);
	cr_expect_str_eq(s.aggs[0].name, "count");
	cr_expect_eq(s.aggs[0].kind, QA_COUNT);
	queryargs_free(&s);
}

/* Description: every flag lands in its field: times in each accepted
 * form, bucket, zone, groups in order, filters with their values (status
 * numbers become names), aggregates with percentiles deduplicated into
 * quantile ranks, distinct users asked for, an order by a percentile not
 * shown (added as a hidden rank), ascending, and a limit. */
Test(queryargs, every_flag)
{
	query_spec s;
	queryargs_init(&s);
	char err[QUERYARGS_ERRMSG_SIZE] = "";
	cr_assert_eq(queryargs_from(&s, "2026-09-01", NOW, err), 0, "%s", err);
	cr_assert_eq(queryargs_to(&s, "2026-09-21T16:13:20+02:00", NOW, err), 0, "%s", err);
	cr_assert_eq(queryargs_bucket(&s, "hour", err), 0);
	s.time_zone = "Europe/Paris";
	cr_assert_eq(queryargs_group_by(&s, "model,status", err), 0, "%s", err);
	cr_assert_eq(queryargs_group_by(&s, "project", err), 0, "%s", err);
	cr_assert_eq(queryargs_filter(&s, "status=1,timeout", err), 0, "%s", err);
	cr_assert_eq(queryargs_filter(&s, "project=alpha,,beta", err), 0, "%s", err);
	cr_assert_eq(queryargs_aggs(&s, "count,p95_duration_ms,distinct_users", err), 0, "%s", err);
	cr_assert_eq(queryargs_aggs(&s, "p99.9_duration_ms,errors,cost_micros", err), 0, "%s", err);
	cr_assert_eq(queryargs_order(&s, "p50_duration_ms:asc", err), 0, "%s", err);
	cr_assert_eq(queryargs_limit("--limit", "25", QUERYARGS_ROWS_MAX, &s.limit, err), 0, "%s", err);
	cr_assert_eq(queryargs_finish(&s, NOW, err), 0, "%s", err);
	const Tally__V1__Query *q = &s.query;
	cr_expect_eq(q->from_us, INT64_C(1788220800000000));
	cr_expect_eq(q->to_us, NOW);
	cr_expect_eq(q->bucket, TALLY__V1__BUCKET__HOUR);
	cr_expect_str_eq(q->time_zone, "Europe/Paris");
	cr_assert_eq(q->n_group_by, 3);
	cr_expect_eq(q->group_by[0], TALLY__V1__DIMENSION__MODEL);
	cr_expect_eq(q->group_by[1], TALLY__V1__DIMENSION__STATUS);
	cr_expect_eq(q->group_by[2], TALLY__V1__DIMENSION__PROJECT);
	cr_assert_eq(q->n_filters, 2);
	cr_expect_eq(q->filters[0]->dimension, TALLY__V1__DIMENSION__STATUS);
	cr_assert_eq(q->filters[0]->n_values, 2);
	cr_expect_eq(q->filters[0]->values[0].len, 5);
	cr_expect_eq(memcmp(q->filters[0]->values[0].data, "error", 5), 0);
	cr_expect_eq(memcmp(q->filters[0]->values[1].data, "timeout", 7), 0);
	cr_assert_eq(q->filters[1]->n_values, 3);
	cr_expect_eq(q->filters[1]->values[1].len, 0, "an empty value between commas");
	cr_expect_eq(memcmp(q->filters[1]->values[2].data, "beta", 4), 0);
	cr_assert_eq(q->n_quantiles, 3);
	cr_expect_eq(q->quantiles[0], 0.95);
	cr_expect_eq(q->quantiles[1], 0.999);
	cr_expect_eq(q->quantiles[2], 0.5, "the order's rank, not shown");
	cr_expect(q->distinct_users);
	cr_expect(q->order_by_aggregate);
	cr_expect_eq(q->order_aggregate, TALLY__V1__AGGREGATE__QUANTILE);
	cr_expect_eq(q->order_quantile, 2);
	cr_expect_not(q->descending);
	cr_expect_eq(q->limit, 25);
	cr_assert_eq(s.agg_count, 6);
	cr_expect_str_eq(s.aggs[3].name, "p99.9_duration_ms");
	cr_expect_eq(s.aggs[3].quantile_index, 1);
	cr_expect_eq(s.aggs[4].kind, QA_ERRORS);
	queryargs_free(&s);

	/* The order direction defaults to desc; ordering by a shown percentile
	 * reuses its rank; by distinct_users asks for it. */
	queryargs_init(&s);
	cr_assert_eq(queryargs_aggs(&s, "p95_duration_ms", err), 0);
	cr_assert_eq(queryargs_order(&s, "p95_duration_ms", err), 0);
	cr_assert_eq(queryargs_finish(&s, NOW, err), 0, "%s", err);
	cr_expect(s.query.descending);
	cr_expect_eq(s.query.n_quantiles, 1);
	cr_expect_eq(s.query.order_quantile, 0);
	queryargs_free(&s);
	queryargs_init(&s);
	cr_assert_eq(queryargs_order(&s, "distinct_users:desc", err), 0);
	cr_assert_eq(queryargs_finish(&s, NOW, err), 0, "%s", err);
	cr_expect(s.query.distinct_users);
	cr_expect_eq(s.query.order_aggregate, TALLY__V1__AGGREGATE__DISTINCT_USERS);
	queryargs_free(&s);
}

/* Description: time flags: now, -Nd/h/m/s back from now, dates at
 * midnight UTC, RFC 3339, microseconds. */
Test(queryargs, time_forms)
{
	const struct {
		const char *text;
		int64_t us;
	} cases[] = {
		{"now", NOW},
		{"-7d", NOW - 7 * DAY_US},
		{"-12h", NOW - INT64_C(12) * 3600 * 1000000},
		{"-15m", NOW - INT64_C(15) * 60 * 1000000},
		{"-90s", NOW - INT64_C(90) * 1000000},
		{"2026-09-21", INT64_C(1789948800000000)},
		{"2026-09-21T14:13:20.5Z", NOW + 500000},
		{"1790000000000000", NOW},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int64_t us = 0;
		char err[QUERYARGS_ERRMSG_SIZE] = "";
		cr_expect_eq(queryargs_time("--from", cases[i].text, NOW, &us, err), 0, "%s: %s", cases[i].text, err);
		cr_expect_eq(us, cases[i].us, "%s", cases[i].text);
	}
}

typedef int (*flag_fn)(query_spec *s, const char *text, char *err);
static int from_fn(query_spec *s, const char *text, char *err) { return queryargs_from(s, text, NOW, err); }
static int limit_fn(query_spec *s, const char *text, char *err)
{
	return queryargs_limit("--limit", text, QUERYARGS_ROWS_MAX, &s->limit, err);
}

/* Description: each bad flag is -EINVAL with a message naming the flag,
 * the value and what is accepted. */
Test(queryargs, bad_flags_have_exact_messages)
{
	const struct {
		flag_fn fn;
		const char *first; /* given once before, NULL for none */
		const char *text;
		const char *error;
	} cases[] = {
		{queryargs_bucket, NULL, "week", "--bucket 'week': want minute, hour, day, month or none"},
		{queryargs_group_by, NULL, "model,colour",
		 "--group-by: unknown dimension 'colour' (known: project, agent, model, type, status)"},
		{queryargs_group_by, "model", "type,model", "--group-by: model given twice"},
		{queryargs_filter, NULL, "model", "--filter 'model': want DIMENSION=VALUE[,VALUE...]"},
		{queryargs_filter, NULL, "colour=red",
		 "--filter 'colour=red': unknown dimension 'colour' (known: project, agent, model, type, status)"},
		{queryargs_filter, NULL, "status=ok,fine",
		 "--filter 'status=ok,fine': status 'fine' is not ok, error, timeout, cancelled or 0..3"},
		{queryargs_aggs, NULL, "count,sum",
		 "--agg: unknown aggregate 'sum' (known: count, tokens_in, tokens_out, cost_micros, duration_ms, "
		 "min_duration_ms, max_duration_ms, pNN_duration_ms, distinct_users, errors)"},
		{queryargs_aggs, NULL, "p101_duration_ms",
		 "--agg: unknown aggregate 'p101_duration_ms' (known: count, tokens_in, tokens_out, cost_micros, "
		 "duration_ms, min_duration_ms, max_duration_ms, pNN_duration_ms, distinct_users, errors)"},
		{queryargs_aggs, NULL, "p9._duration_ms",
		 "--agg: unknown aggregate 'p9._duration_ms' (known: count, tokens_in, tokens_out, cost_micros, "
		 "duration_ms, min_duration_ms, max_duration_ms, pNN_duration_ms, distinct_users, errors)"},
		{queryargs_aggs, "count", "errors,count", "--agg: count given twice"},
		{queryargs_aggs, "p1_duration_ms,p2_duration_ms,p3_duration_ms,p4_duration_ms",
		 "p5_duration_ms,p6_duration_ms,p7_duration_ms,p8_duration_ms,p9_duration_ms",
		 "at most 8 different percentiles per query"},
		{queryargs_order, NULL, "count:up", "--order 'count:up': the direction is asc or desc"},
		{queryargs_order, NULL, "cost", "--order 'cost': unknown aggregate 'cost' (known: count, tokens_in, "
						"tokens_out, cost_micros, duration_ms, min_duration_ms, max_duration_ms, "
						"pNN_duration_ms, distinct_users, errors)"},
		{from_fn, NULL, "yesterday",
		 "--from 'yesterday': want an RFC 3339 time (2026-09-21T14:00:00Z), a date (2026-09-21), "
		 "microseconds since the epoch, now, or -N[d|h|m|s]"},
		{from_fn, NULL, "-5w",
		 "--from '-5w': want an RFC 3339 time (2026-09-21T14:00:00Z), a date (2026-09-21), microseconds "
		 "since the epoch, now, or -N[d|h|m|s]"},
		{from_fn, NULL, "-99999999d",
		 "--from '-99999999d': a relative time is -N followed by d, h, m or s (at most 100 years)"},
		{limit_fn, NULL, "0", "--limit '0': want a whole number from 1 to 100000"},
		{limit_fn, NULL, "100001", "--limit '100001': want a whole number from 1 to 100000"},
		{limit_fn, NULL, "ten", "--limit 'ten': want a whole number from 1 to 100000"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		query_spec s;
		queryargs_init(&s);
		char err[QUERYARGS_ERRMSG_SIZE] = "";
		if (cases[i].first)
			cr_assert_eq(cases[i].fn(&s, cases[i].first, err), 0, "case %zu: %s", i, err);
		cr_expect_eq(cases[i].fn(&s, cases[i].text, err), -EINVAL, "case %zu", i);
		cr_expect_str_eq(err, cases[i].error, "case %zu", i);
		queryargs_free(&s);
	}
}

/* Description: from must be before to (also when the default --from
 * would fall before the start of time); an argument left after the
 * options is refused; more than 16 filters or 256 values are refused
 * before anything is sent. */
Test(queryargs, range_and_bounds)
{
	query_spec s;
	queryargs_init(&s);
	char err[QUERYARGS_ERRMSG_SIZE] = "";
	char *argv[] = {"query", "--limit", "3", "stray", NULL};
	cr_expect_eq(queryargs_end(&s, 4, argv, 3, NOW, err), -EINVAL);
	cr_expect_str_eq(err, "unexpected argument 'stray'");
	cr_expect_eq(queryargs_end(&s, 4, argv, 4, NOW, err), 0, "%s", err);
	cr_expect_eq(s.query.to_us, NOW);
	queryargs_free(&s);

	queryargs_init(&s);
	cr_assert_eq(queryargs_from(&s, "now", NOW, err), 0);
	cr_expect_eq(queryargs_finish(&s, NOW, err), -EINVAL);
	cr_expect_str_eq(err, "--from must be before --to");
	queryargs_free(&s);

	/* --to at the start of time: the default --from (30 days before it)
	 * stops there, and the range is empty (before 2026-12-02 the
	 * subtraction overflowed and the check was compiled away). */
	queryargs_init(&s);
	cr_assert_eq(queryargs_to(&s, "-9223372036854775808", NOW, err), 0, "%s", err);
	cr_expect_eq(queryargs_finish(&s, NOW, err), -EINVAL);
	cr_expect_str_eq(err, "--from must be before --to");
	queryargs_free(&s);
	queryargs_init(&s);
	cr_assert_eq(queryargs_to(&s, "-9223372036854775000", NOW, err), 0, "%s", err);
	cr_expect_eq(queryargs_finish(&s, NOW, err), 0, "%s", err);
	cr_expect_eq(s.query.from_us, INT64_MIN);
	queryargs_free(&s);

	queryargs_init(&s);
	for (int i = 0; i < QUERYARGS_FILTERS_MAX; i++)
		cr_assert_eq(queryargs_filter(&s, "model=m", err), 0);
	cr_expect_eq(queryargs_filter(&s, "model=m", err), -EINVAL);
	cr_expect_str_eq(err, "--filter: at most 16 filters");
	queryargs_free(&s);

	queryargs_init(&s);
	char values[1024] = "user=";
	char text[1100];
	for (int i = 0; i < QUERYARGS_FILTER_VALUES_MAX; i++)
		strcat(values, i ? ",v" : "v");
	snprintf(text, sizeof(text), "project%s", values + 4);
	cr_expect_eq(queryargs_filter(&s, text, err), 0, "%s", err);
	strcat(text, ",v");
	cr_expect_eq(queryargs_filter(&s, text, err), -EINVAL);
	cr_expect_str_eq(err, "--filter 'project=v,v,v,v,v,v,v,v,v,v,v,v,v,v,v,v,...': 257 values, at most 256");
	queryargs_free(&s);
}
