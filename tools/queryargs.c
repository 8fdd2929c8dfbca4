/*
 * queryargs.c — query and listing flags to protocol messages (queryargs.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queryargs.h"
#include "rows.h"

#define US_PER_SECOND INT64_C(1000000)

static const char *const dimension_names[QUERYARGS_DIMENSIONS] = {
	[TALLY__V1__DIMENSION__PROJECT] = "project", [TALLY__V1__DIMENSION__AGENT] = "agent",
	[TALLY__V1__DIMENSION__MODEL] = "model",     [TALLY__V1__DIMENSION__TYPE] = "type",
	[TALLY__V1__DIMENSION__STATUS] = "status",
};

static const char *const status_names[] = {"ok", "error", "timeout", "cancelled"};

/* The aggregates with a fixed name (pNN_duration_ms is parsed apart). */
static const struct {
	const char *name;
	int kind;
	Tally__V1__Aggregate order; /* what --order by it sends */
} agg_names[] = {
	{"count", QA_COUNT, TALLY__V1__AGGREGATE__COUNT},
	{"tokens_in", QA_TOKENS_IN, TALLY__V1__AGGREGATE__TOKENS_IN},
	{"tokens_out", QA_TOKENS_OUT, TALLY__V1__AGGREGATE__TOKENS_OUT},
	{"cost_micros", QA_COST_MICROS, TALLY__V1__AGGREGATE__COST},
	{"duration_ms", QA_DURATION_MS, TALLY__V1__AGGREGATE__DURATION_SUM},
	{"min_duration_ms", QA_MIN_DURATION_MS, TALLY__V1__AGGREGATE__DURATION_MIN},
	{"max_duration_ms", QA_MAX_DURATION_MS, TALLY__V1__AGGREGATE__DURATION_MAX},
	{"distinct_users", QA_DISTINCT_USERS, TALLY__V1__AGGREGATE__DISTINCT_USERS},
	{"errors", QA_ERRORS, TALLY__V1__AGGREGATE__ERRORS},
};
#define AGG_NAME_COUNT (sizeof(agg_names) / sizeof(agg_names[0]))
#define AGGS_KNOWN                                                                               \
	"count, tokens_in, tokens_out, cost_micros, duration_ms, min_duration_ms, max_duration_ms, " \
	"pNN_duration_ms, distinct_users, errors"

__attribute__((format(printf, 2, 3)))
static int fail(char *errmsg, const char *format, ...)
{
	va_list args;
	va_start(args, format);
	vsnprintf(errmsg, QUERYARGS_ERRMSG_SIZE, format, args);
	va_end(args);
	return -EINVAL;
}

const char *queryargs_dimension_name(int dimension)
{
	return dimension >= 0 && dimension < QUERYARGS_DIMENSIONS ? dimension_names[dimension] : "?";
}

void queryargs_init(query_spec *spec)
{
	memset(spec, 0, sizeof(*spec));
	tally__v1__query__init(&spec->query);
	spec->bucket = TALLY__V1__BUCKET__DAY;
}

void queryargs_free(query_spec *spec)
{
	for (size_t i = 0; i < spec->filter_count; i++) {
		free(spec->filter_text[i]);
		free(spec->filter_values[i]);
	}
	memset(spec, 0, sizeof(*spec));
}

int queryargs_time(const char *flag, const char *text, int64_t now_us, int64_t *out, char *errmsg)
{
	size_t len = strlen(text);
	if (strcmp(text, "now") == 0) {
		*out = now_us;
		return 0;
	}
	if (len >= 3 && text[0] == '-' && strchr("dhms", text[len - 1])) {
		static const int64_t unit_seconds[] = {['d' - 'd'] = 86400, ['h' - 'd'] = 3600,
						       ['m' - 'd'] = 60, ['s' - 'd'] = 1};
		uint64_t n;
		int64_t unit = unit_seconds[text[len - 1] - 'd'];
		/* At most 100 years back: no overflow, and no range is longer. */
		if (rows_parse_uint(text + 1, len - 2, (uint64_t)(INT64_C(36600) * 86400 / unit), &n))
			return fail(errmsg, "%s '%s': a relative time is -N followed by d, h, m or s (at most 100 years)",
				    flag, text);
		*out = now_us - (int64_t)n * unit * US_PER_SECOND;
		return 0;
	}
	if (len == 10) {
		char midnight[32];
		snprintf(midnight, sizeof(midnight), "%sT00:00:00Z", text);
		if (rows_parse_time(midnight, strlen(midnight), out) == 0)
			return 0;
	}
	if (len && rows_parse_time(text, len, out) == 0)
		return 0;
	return fail(errmsg,
		    "%s '%s': want an RFC 3339 time (2026-09-21T14:00:00Z), a date (2026-09-21), "
		    "microseconds since the epoch, now, or -N[d|h|m|s]",
		    flag, text);
}

int queryargs_from(query_spec *spec, const char *text, int64_t now_us, char *errmsg)
{
	spec->have_from = true;
	return queryargs_time("--from", text, now_us, &spec->from_us, errmsg);
}

int queryargs_to(query_spec *spec, const char *text, int64_t now_us, char *errmsg)
{
	spec->have_to = true;
	return queryargs_time("--to", text, now_us, &spec->to_us, errmsg);
}

int queryargs_bucket(query_spec *spec, const char *text, char *errmsg)
{
	static const char *const names[] = {
		[TALLY__V1__BUCKET__NONE] = "none", [TALLY__V1__BUCKET__MINUTE] = "minute",
		[TALLY__V1__BUCKET__HOUR] = "hour", [TALLY__V1__BUCKET__DAY] = "day",
		[TALLY__V1__BUCKET__MONTH] = "month",
	};
	for (int b = 0; b < (int)(sizeof(names) / sizeof(names[0])); b++)
		if (strcmp(text, names[b]) == 0) {
			spec->bucket = b;
			return 0;
		}
	return fail(errmsg, "--bucket '%s': want minute, hour, day, month or none", text);
}

static int dimension_find(const char *name, size_t len)
{
	for (int d = 0; d < QUERYARGS_DIMENSIONS; d++)
		if (strlen(dimension_names[d]) == len && strncmp(dimension_names[d], name, len) == 0)
			return d;
	return -1;
}

int queryargs_group_by(query_spec *spec, const char *text, char *errmsg)
{
	const char *p = text;
	for (;;) {
		size_t len = strcspn(p, ",");
		int d = dimension_find(p, len);
		if (d < 0)
			return fail(errmsg, "--group-by: unknown dimension '%.*s' (known: project, agent, model, type, status)",
				    (int)len, p);
		for (size_t i = 0; i < spec->group_by_count; i++)
			if ((int)spec->group_by[i] == d)
				return fail(errmsg, "--group-by: %s given twice", dimension_names[d]);
		spec->group_by[spec->group_by_count++] = (Tally__V1__Dimension)d;
		if (!p[len])
			return 0;
		p += len + 1;
	}
}

int queryargs_filter(query_spec *spec, const char *text, char *errmsg)
{
	const char *eq = strchr(text, '=');
	if (!eq)
		return fail(errmsg, "--filter '%s': want DIMENSION=VALUE[,VALUE...]", text);
	int d = dimension_find(text, (size_t)(eq - text));
	if (d < 0)
		return fail(errmsg, "--filter '%s': unknown dimension '%.*s' (known: project, agent, model, type, status)",
			    text, (int)(eq - text), text);
	if (spec->filter_count == QUERYARGS_FILTERS_MAX)
		return fail(errmsg, "--filter: at most %u filters", QUERYARGS_FILTERS_MAX);
	size_t value_count = 1;
	for (const char *p = eq + 1; *p; p++)
		value_count += *p == ',';
	if (value_count > QUERYARGS_FILTER_VALUES_MAX)
		return fail(errmsg, "--filter '%.40s...': %zu values, at most %u", text, value_count,
			    QUERYARGS_FILTER_VALUES_MAX);
	char *copy = strdup(eq + 1);
	ProtobufCBinaryData *values = calloc(value_count, sizeof(*values));
	if (!copy || !values) {
		free(copy);
		free(values);
		return fail(errmsg, "--filter: out of memory");
	}
	char *p = copy;
	for (size_t i = 0; i < value_count; i++) {
		size_t len = strcspn(p, ",");
		p[len] = '\0';
		if (d == TALLY__V1__DIMENSION__STATUS) {
			/* Status values are names; numbers are accepted as in event files. */
			uint32_t status;
			if (rows_parse_status(p, len, &status)) {
				fail(errmsg, "--filter '%s': status '%s' is not ok, error, timeout, cancelled or 0..3", text, p);
				free(copy);
				free(values);
				return -EINVAL;
			}
			values[i] = (ProtobufCBinaryData){strlen(status_names[status]), (uint8_t *)status_names[status]};
		} else {
			values[i] = (ProtobufCBinaryData){len, (uint8_t *)p};
		}
		p += len + 1;
	}
	size_t k = spec->filter_count++;
	spec->filter_text[k] = copy;
	spec->filter_values[k] = values;
	Tally__V1__Filter *f = &spec->filter_storage[k];
	tally__v1__filter__init(f);
	f->dimension = (Tally__V1__Dimension)d;
	f->n_values = value_count;
	f->values = values;
	spec->filters[k] = f;
	return 0;
}

/*
 * Parses one aggregate name: its kind, and for pNN_duration_ms its rank in
 * [0, 1] into *rank. 0 or -EINVAL.
 */
static int agg_parse(const char *name, size_t len, int *kind, double *rank, Tally__V1__Aggregate *order)
{
	for (size_t i = 0; i < AGG_NAME_COUNT; i++)
		if (strlen(agg_names[i].name) == len && strncmp(agg_names[i].name, name, len) == 0) {
			*kind = agg_names[i].kind;
			*order = agg_names[i].order;
			return 0;
		}
	static const char suffix[] = "_duration_ms";
	size_t suffix_len = sizeof(suffix) - 1;
	if (len < 2 + suffix_len || name[0] != 'p' || strncmp(name + len - suffix_len, suffix, suffix_len) != 0)
		return -EINVAL;
	/* p95, p99.9, p50: digits, an optional fraction, from 0 to 100. */
	size_t n = len - suffix_len - 1, whole = 0;
	const char *digits = name + 1;
	while (whole < n && digits[whole] >= '0' && digits[whole] <= '9')
		whole++;
	if (whole == 0 || whole > 3 || (whole < n && (digits[whole] != '.' || whole + 1 == n)))
		return -EINVAL;
	for (size_t i = whole + 1; i < n; i++)
		if (digits[i] < '0' || digits[i] > '9' || i - whole > 6)
			return -EINVAL;
	/* The rank as a quotient of integers (99.9 is 999 / 1000), so it is the
	 * double nearest the decimal, as 0.999 written in a program is. */
	uint64_t scaled = 0, scale = 100;
	for (size_t i = 0; i < n; i++) {
		if (digits[i] == '.')
			continue;
		scaled = scaled * 10 + (uint64_t)(digits[i] - '0');
		scale *= i > whole ? 10 : 1;
	}
	if (scaled > scale)
		return -EINVAL; /* over 100 */
	*kind = QA_QUANTILE;
	*rank = (double)scaled / (double)scale;
	*order = TALLY__V1__AGGREGATE__QUANTILE;
	return 0;
}

/* The index of rank in spec->quantiles, added if new. */
static int quantile_index(query_spec *spec, double rank, uint32_t *index, char *errmsg)
{
	for (size_t i = 0; i < spec->quantile_count; i++)
		if (spec->quantiles[i] == rank) {
			*index = (uint32_t)i;
			return 0;
		}
	if (spec->quantile_count == QUERYARGS_QUANTILES_MAX)
		return fail(errmsg, "at most %u different percentiles per query", QUERYARGS_QUANTILES_MAX);
	spec->quantiles[spec->quantile_count] = rank;
	*index = (uint32_t)spec->quantile_count++;
	return 0;
}

int queryargs_aggs(query_spec *spec, const char *text, char *errmsg)
{
	const char *p = text;
	for (;;) {
		size_t len = strcspn(p, ",");
		int kind;
		double rank = 0;
		Tally__V1__Aggregate order;
		if (len >= QUERYARGS_NAME_SIZE || agg_parse(p, len, &kind, &rank, &order))
			return fail(errmsg, "--agg: unknown aggregate '%.*s' (known: " AGGS_KNOWN ")", (int)len, p);
		for (size_t i = 0; i < spec->agg_count; i++)
			if (strlen(spec->aggs[i].name) == len && strncmp(spec->aggs[i].name, p, len) == 0)
				return fail(errmsg, "--agg: %.*s given twice", (int)len, p);
		if (spec->agg_count == QUERYARGS_AGGS_MAX)
			return fail(errmsg, "--agg: at most %u aggregates", QUERYARGS_AGGS_MAX);
		queryargs_agg *a = &spec->aggs[spec->agg_count];
		a->kind = kind;
		if (kind == QA_QUANTILE && quantile_index(spec, rank, &a->quantile_index, errmsg))
			return -EINVAL;
		snprintf(a->name, sizeof(a->name), "%.*s", (int)len, p);
		spec->agg_count++;
		if (!p[len])
			return 0;
		p += len + 1;
	}
}

int queryargs_order(query_spec *spec, const char *text, char *errmsg)
{
	size_t len = strcspn(text, ":");
	const char *direction = text[len] ? text + len + 1 : "desc";
	if (strcmp(direction, "asc") != 0 && strcmp(direction, "desc") != 0)
		return fail(errmsg, "--order '%s': the direction is asc or desc", text);
	int kind;
	double rank;
	Tally__V1__Aggregate order;
	if (len >= QUERYARGS_NAME_SIZE || agg_parse(text, len, &kind, &rank, &order))
		return fail(errmsg, "--order '%s': unknown aggregate '%.*s' (known: " AGGS_KNOWN ")", text, (int)len,
			    text);
	spec->order_set = true;
	snprintf(spec->order_name, sizeof(spec->order_name), "%.*s", (int)len, text);
	spec->order_ascending = strcmp(direction, "asc") == 0;
	return 0;
}

int queryargs_limit(const char *flag, const char *text, uint32_t max, uint32_t *out, char *errmsg)
{
	uint64_t v;
	if (rows_parse_uint(text, strlen(text), max, &v) || v == 0)
		return fail(errmsg, "%s '%s': want a whole number from 1 to %u", flag, text, max);
	*out = (uint32_t)v;
	return 0;
}

int queryargs_finish(query_spec *spec, int64_t now_us, char *errmsg)
{
	if (!spec->have_to)
		spec->to_us = now_us;
	if (!spec->have_from) /* 30 days back, or the start of time (no signed overflow) */
		spec->from_us = spec->to_us >= INT64_MIN + QUERYARGS_RANGE_DEFAULT_US
					? spec->to_us - QUERYARGS_RANGE_DEFAULT_US
					: INT64_MIN;
	if (spec->from_us >= spec->to_us)
		return fail(errmsg, "--from must be before --to");
	if (spec->agg_count == 0 && queryargs_aggs(spec, "count", errmsg))
		return -EINVAL;
	Tally__V1__Query *q = &spec->query;
	tally__v1__query__init(q);
	q->from_us = spec->from_us;
	q->to_us = spec->to_us;
	q->bucket = (Tally__V1__Bucket)spec->bucket;
	q->time_zone = (char *)(spec->time_zone ? spec->time_zone : "");
	q->n_group_by = spec->group_by_count;
	q->group_by = spec->group_by_count ? spec->group_by : NULL;
	q->n_filters = spec->filter_count;
	q->filters = spec->filter_count ? spec->filters : NULL;
	for (size_t i = 0; i < spec->agg_count; i++)
		q->distinct_users |= spec->aggs[i].kind == QA_DISTINCT_USERS;
	if (spec->order_set) {
		int kind;
		double rank = 0;
		Tally__V1__Aggregate order;
		agg_parse(spec->order_name, strlen(spec->order_name), &kind, &rank, &order);
		q->order_by_aggregate = true;
		q->order_aggregate = order;
		q->descending = !spec->order_ascending;
		if (kind == QA_QUANTILE && quantile_index(spec, rank, &q->order_quantile, errmsg))
			return -EINVAL;
		q->distinct_users |= kind == QA_DISTINCT_USERS;
	}
	q->n_quantiles = spec->quantile_count;
	q->quantiles = spec->quantile_count ? spec->quantiles : NULL;
	q->limit = spec->limit;
	return 0;
}

int queryargs_end(query_spec *spec, int argc, char **argv, int next, int64_t now_us, char *errmsg)
{
	if (next < argc)
		return fail(errmsg, "unexpected argument '%s'", argv[next]);
	return queryargs_finish(spec, now_us, errmsg);
}
