/*
 * queryargs.h — the flags of `tally query` and `tally events` turned into
 * a Tally__V1__Query (and the filters of a ListEvents), checked here so a
 * mistake gets a message naming the flag before anything is sent.
 *
 * A query_spec owns everything the message points to. The command's
 * getopt loop calls one function per flag; queryargs_finish applies the
 * defaults (to = now, from = to - 30 days, bucket day, aggregate count)
 * and fills spec->query. Every function returns 0, or -EINVAL with errmsg
 * (QUERYARGS_ERRMSG_SIZE bytes) saying what is wrong with which flag.
 *
 * Aggregates (output columns, in the order given): count, tokens_in,
 * tokens_out, cost_micros, duration_ms (the sum), min_duration_ms,
 * max_duration_ms, pNN_duration_ms (any rank from 0 to 100, e.g. p95,
 * p99.9), distinct_users, errors (count minus the ok events).
 * Dimensions: project, agent, model, type, status.
 */
#ifndef TALLY_TOOLS_QUERYARGS_H
#define TALLY_TOOLS_QUERYARGS_H

#include <stdbool.h>
#include <stdint.h>

#include "tally.pb-c.h"

#define QUERYARGS_ERRMSG_SIZE 256
#define QUERYARGS_DIMENSIONS 5
#define QUERYARGS_FILTERS_MAX 16        /* the server's TALLY_FILTERS_MAX */
#define QUERYARGS_FILTER_VALUES_MAX 256 /* the server's TALLY_FILTER_VALUES_MAX */
#define QUERYARGS_QUANTILES_MAX 8       /* the server's TALLY_QUANTILES_MAX */
#define QUERYARGS_AGGS_MAX 16
#define QUERYARGS_ROWS_MAX 100000       /* the server's TALLY_QUERY_ROWS_MAX */
#define QUERYARGS_NAME_SIZE 32
#define QUERYARGS_RANGE_DEFAULT_US (INT64_C(30) * 86400 * 1000000)

enum queryargs_agg_kind {
	QA_COUNT = 0,
	QA_TOKENS_IN,
	QA_TOKENS_OUT,
	QA_COST_MICROS,
	QA_DURATION_MS,
	QA_MIN_DURATION_MS,
	QA_MAX_DURATION_MS,
	QA_QUANTILE,
	QA_DISTINCT_USERS,
	QA_ERRORS,
};

typedef struct queryargs_agg {
	int kind;                  /* enum queryargs_agg_kind */
	uint32_t quantile_index;   /* QA_QUANTILE: index into query.quantiles */
	char name[QUERYARGS_NAME_SIZE]; /* as the user wrote it: the column name */
} queryargs_agg;

typedef struct query_spec {
	Tally__V1__Query query;    /* complete after queryargs_finish */
	/* What query points to. */
	Tally__V1__Dimension group_by[QUERYARGS_DIMENSIONS];
	size_t group_by_count;
	Tally__V1__Filter filter_storage[QUERYARGS_FILTERS_MAX];
	Tally__V1__Filter *filters[QUERYARGS_FILTERS_MAX];
	size_t filter_count;
	char *filter_text[QUERYARGS_FILTERS_MAX];            /* owned copies the values point into */
	ProtobufCBinaryData *filter_values[QUERYARGS_FILTERS_MAX]; /* owned */
	double quantiles[QUERYARGS_QUANTILES_MAX];
	size_t quantile_count;
	queryargs_agg aggs[QUERYARGS_AGGS_MAX];
	size_t agg_count;
	bool have_from, have_to;
	int64_t from_us, to_us;
	int bucket;                /* Tally__V1__Bucket */
	bool order_set;
	char order_name[QUERYARGS_NAME_SIZE];
	bool order_ascending;
	uint32_t limit;            /* 0: the server's maximum */
	const char *time_zone;     /* NULL: UTC */
} query_spec;

void queryargs_init(query_spec *spec);
void queryargs_free(query_spec *spec);

/*
 * A time flag: RFC 3339 (2026-09-21T14:13:20Z, with an offset, up to
 * microseconds), a date (2026-09-21: midnight UTC), integer microseconds
 * since the epoch, "now", or an offset back from now: -30d, -12h, -15m,
 * -90s. flag names it in errmsg ("--from").
 */
int queryargs_time(const char *flag, const char *text, int64_t now_us, int64_t *out, char *errmsg);

int queryargs_from(query_spec *spec, const char *text, int64_t now_us, char *errmsg);
int queryargs_to(query_spec *spec, const char *text, int64_t now_us, char *errmsg);
/* minute, hour, day, month or none. */
int queryargs_bucket(query_spec *spec, const char *text, char *errmsg);
/* dim[,dim...]; may be given more than once, no dimension twice. */
int queryargs_group_by(query_spec *spec, const char *text, char *errmsg);
/* dim=value[,value...]: the dimension is one of the values (several
 * filters AND). Status values are ok, error, timeout, cancelled (or 0..3).
 * "dim=" matches the empty value. Values cannot hold a comma. */
int queryargs_filter(query_spec *spec, const char *text, char *errmsg);
/* agg[,agg...]; may be given more than once, no aggregate twice. */
int queryargs_aggs(query_spec *spec, const char *text, char *errmsg);
/* AGG[:asc|desc] (default desc): top-N with --limit. AGG is any aggregate
 * name; ordering by one not shown computes it anyway. */
int queryargs_order(query_spec *spec, const char *text, char *errmsg);
/* 1..max. */
int queryargs_limit(const char *flag, const char *text, uint32_t max, uint32_t *out, char *errmsg);

/* Defaults and the last checks (from before to); fills spec->query. */
int queryargs_finish(query_spec *spec, int64_t now_us, char *errmsg);

/* After a command's option loop: no argument may be left (argv[next] is
 * the first one getopt did not take), then queryargs_finish. */
int queryargs_end(query_spec *spec, int argc, char **argv, int next, int64_t now_us, char *errmsg);

/* "project", ... for a Tally__V1__Dimension. */
const char *queryargs_dimension_name(int dimension);

#endif /* TALLY_TOOLS_QUERYARGS_H */
