/*
 * convert.c — protocol <-> engine queries (convert.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "fail.h"

/* Protocol dimension numbers are the engine's (checked at compile time). */
_Static_assert((int)TALLY__V1__DIMENSION__PROJECT == (int)TALLY_DIM_PROJECT &&
		       (int)TALLY__V1__DIMENSION__AGENT == (int)TALLY_DIM_AGENT &&
		       (int)TALLY__V1__DIMENSION__MODEL == (int)TALLY_DIM_MODEL &&
		       (int)TALLY__V1__DIMENSION__TYPE == (int)TALLY_DIM_TYPE &&
		       (int)TALLY__V1__DIMENSION__STATUS == (int)TALLY_DIM_STATUS,
	       "dimensions agree");
_Static_assert((int)TALLY__V1__BUCKET__NONE == (int)TALLY_BUCKET_NONE &&
		       (int)TALLY__V1__BUCKET__MINUTE == (int)TALLY_BUCKET_MINUTE &&
		       (int)TALLY__V1__BUCKET__HOUR == (int)TALLY_BUCKET_HOUR &&
		       (int)TALLY__V1__BUCKET__DAY == (int)TALLY_BUCKET_DAY &&
		       (int)TALLY__V1__BUCKET__MONTH == (int)TALLY_BUCKET_MONTH,
	       "buckets agree");
_Static_assert((int)TALLY__V1__AGGREGATE__COUNT == (int)TALLY_AGG_COUNT &&
		       (int)TALLY__V1__AGGREGATE__DISTINCT_USERS == (int)TALLY_AGG_DISTINCT_USERS &&
		       (int)TALLY__V1__AGGREGATE__QUANTILE == (int)TALLY_AGG_QUANTILE &&
		       (int)TALLY__V1__AGGREGATE__ERRORS == (int)TALLY_AGG_ERRORS,
	       "aggregates agree");

int convert_query(const Tally__V1__Query *m, tally_query *q, query_storage *st, char *errmsg)
{
	memset(q, 0, sizeof(*q));
	q->from_us = m->from_us;
	q->to_us = m->to_us;
	if ((int)m->bucket < TALLY_BUCKET_NONE || (int)m->bucket > TALLY_BUCKET_MONTH)
		return server_fail(errmsg, TALLY_E_INVALID, "unknown bucket %d", (int)m->bucket);
	q->bucket = (int)m->bucket;
	q->time_zone = m->time_zone && m->time_zone[0] ? m->time_zone : NULL;
	for (size_t i = 0; i < m->n_group_by; i++) {
		int d = (int)m->group_by[i];
		if (d < 0 || d >= TALLY_DIM_COUNT)
			return server_fail(errmsg, TALLY_E_INVALID, "group_by: unknown dimension %d", d);
		if (q->group_by & (1u << d))
			return server_fail(errmsg, TALLY_E_INVALID, "group_by: %s given twice", tally_dim_name(d));
		q->group_by |= 1u << d;
	}
	if (m->n_filters > TALLY_FILTERS_MAX)
		return server_fail(errmsg, TALLY_E_INVALID, "too many filters: %zu (at most %u)", m->n_filters, TALLY_FILTERS_MAX);
	for (size_t i = 0; i < m->n_filters; i++) {
		const Tally__V1__Filter *f = m->filters[i];
		int d = (int)f->dimension;
		if (d < 0 || d >= TALLY_DIM_COUNT)
			return server_fail(errmsg, TALLY_E_INVALID, "filter %zu: unknown dimension %d", i, d);
		if (f->n_values == 0 || f->n_values > TALLY_FILTER_VALUES_MAX)
			return server_fail(errmsg, TALLY_E_INVALID, "filter on %s: %zu values (1 to %u allowed)", tally_dim_name(d),
				       f->n_values, TALLY_FILTER_VALUES_MAX);
		for (size_t k = 0; k < f->n_values; k++) {
			if (f->values[k].len > UINT32_MAX)
				return server_fail(errmsg, TALLY_E_INVALID, "filter on %s: value %zu too long", tally_dim_name(d), k);
			st->values[i][k] = (tally_str){(const char *)f->values[k].data, (uint32_t)f->values[k].len};
		}
		st->filters[i] = (tally_filter){d, st->values[i], (uint32_t)f->n_values};
	}
	q->filters = m->n_filters ? st->filters : NULL;
	q->filter_count = (uint32_t)m->n_filters;
	if (m->n_quantiles > TALLY_QUANTILES_MAX)
		return server_fail(errmsg, TALLY_E_INVALID, "too many quantiles: %zu (at most %u)", m->n_quantiles,
			       TALLY_QUANTILES_MAX);
	for (size_t i = 0; i < m->n_quantiles; i++)
		q->quantiles[i] = m->quantiles[i];
	q->quantile_count = (uint32_t)m->n_quantiles;
	q->distinct_users = m->distinct_users;
	q->order_by_agg = m->order_by_aggregate;
	q->order_agg = (int)m->order_aggregate;
	q->order_quantile = m->order_quantile;
	q->descending = m->descending;
	q->limit = m->limit;
	return 0;
}

int convert_wraps(const tally_wraps *w, Tally__V1__Wraps **out)
{
	*out = NULL;
	if (!(w->tokens_in | w->tokens_out | w->cost_micros | w->duration_ms_sum))
		return 0;
	Tally__V1__Wraps *m = malloc(sizeof(*m));
	if (!m)
		return -ENOMEM;
	tally__v1__wraps__init(m);
	m->tokens_in = w->tokens_in;
	m->tokens_out = w->tokens_out;
	m->cost_micros = w->cost_micros;
	m->duration_ms = w->duration_ms_sum;
	*out = m;
	return 0;
}

void convert_query_result_free(Tally__V1__QueryResult *out)
{
	for (size_t i = 0; i < out->n_rows; i++) {
		Tally__V1__Row *row = out->rows[i];
		free(row->group);
		free(row->status_count);
		free(row->quantile_ms);
		free(row->wraps);
	}
	free(out->rows ? out->rows[0] : NULL); /* the rows, one allocation */
	free(out->rows);
	tally__v1__query_result__init(out);
}

int convert_query_result(const Tally__V1__Query *m, const tally_result *r,
			 Tally__V1__QueryResult *out)
{
	tally__v1__query_result__init(out);
	out->truncated = r->truncated;
	if (!r->row_count)
		return 0;
	Tally__V1__Row *rows = calloc(r->row_count, sizeof(*rows));
	out->rows = calloc(r->row_count, sizeof(*out->rows));
	if (!rows || !out->rows) {
		free(rows);
		free(out->rows);
		out->rows = NULL;
		return -ENOMEM;
	}
	for (size_t i = 0; i < r->row_count; i++)
		out->rows[i] = &rows[i];
	int rc = 0;
	for (size_t i = 0; i < r->row_count && !rc; i++) {
		const tally_row *src = &r->rows[i];
		Tally__V1__Row *row = &rows[i];
		tally__v1__row__init(row);
		out->n_rows = i + 1;
		row->bucket_start_us = src->bucket_start_us;
		row->bucket_end_us = src->bucket_end_us;
		row->count = src->count;
		row->tokens_in = src->tokens_in;
		row->tokens_out = src->tokens_out;
		row->cost_micros = src->cost_micros;
		row->duration_ms_sum = src->duration_ms_sum;
		row->duration_ms_min = src->duration_ms_min;
		row->duration_ms_max = src->duration_ms_max;
		row->distinct_users = src->distinct_users;
		row->group = calloc(m->n_group_by + 1, sizeof(*row->group));
		row->status_count = malloc(sizeof(uint64_t) * TALLY_STATUS_COUNT);
		row->quantile_ms = malloc(sizeof(double) * (m->n_quantiles + 1));
		if (!row->group || !row->status_count || !row->quantile_ms ||
		    convert_wraps(&src->wraps, &row->wraps)) {
			rc = -ENOMEM;
			break;
		}
		/* Group values in the request's group_by order. */
		for (size_t g = 0; g < m->n_group_by; g++) {
			tally_str v = src->group[m->group_by[g]];
			row->group[g] = (ProtobufCBinaryData){v.len, (uint8_t *)v.ptr};
		}
		row->n_group = m->n_group_by;
		memcpy(row->status_count, src->status_count, sizeof(uint64_t) * TALLY_STATUS_COUNT);
		row->n_status_count = TALLY_STATUS_COUNT;
		for (size_t k = 0; k < m->n_quantiles; k++)
			row->quantile_ms[k] = src->quantile_ms[k];
		row->n_quantile_ms = m->n_quantiles;
	}
	if (rc)
		convert_query_result_free(out);
	return rc;
}
