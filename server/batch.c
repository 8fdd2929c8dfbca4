/*
 * batch.c — columnar IngestBatch to tally_event (batch.h).
 */
#include <stdio.h>
#include <string.h>

#include "batch.h"
#include "fail.h"

/* Checks a string column against n and the dict; sets each event's field
 * (offset `field` into tally_event) from it. */
static int string_column(const Tally__V1__IngestBatch *b, const Tally__V1__StringColumn *c,
			 const char *name, size_t n, tally_event *events, size_t field, char *errmsg)
{
	for (size_t i = 0; i < n; i++)
		*(tally_str *)((char *)&events[i] + field) = (tally_str){NULL, 0};
	if (!c || (c->n_len == 0 && c->n_code == 0)) {
		if (c && c->bytes.len)
			return server_fail(errmsg, BATCH_BAD_REQUEST, "column %s: %zu bytes but no lengths", name,
				   c->bytes.len);
		return BATCH_OK;
	}
	if (c->n_len && c->n_code)
		return server_fail(errmsg, BATCH_BAD_REQUEST, "column %s: both lengths and codes given", name);
	if (c->n_code) {
		if (c->n_code != n)
			return server_fail(errmsg, BATCH_BAD_REQUEST, "column %s: %zu codes for %zu events", name,
				   c->n_code, n);
		if (c->bytes.len)
			return server_fail(errmsg, BATCH_BAD_REQUEST, "column %s: bytes given with codes", name);
		for (size_t i = 0; i < n; i++) {
			if (c->code[i] >= b->n_dict)
				return server_fail(errmsg, BATCH_BAD_REQUEST,
					   "column %s: event %zu has code %u, the dictionary holds %zu strings",
					   name, i, c->code[i], b->n_dict);
			const ProtobufCBinaryData *s = &b->dict[c->code[i]];
			if (s->len > UINT32_MAX)
				return server_fail(errmsg, BATCH_BAD_REQUEST, "dictionary string %u is too long",
					   c->code[i]);
			*(tally_str *)((char *)&events[i] + field) =
				(tally_str){(const char *)s->data, (uint32_t)s->len};
		}
		return BATCH_OK;
	}
	if (c->n_len != n)
		return server_fail(errmsg, BATCH_BAD_REQUEST, "column %s: %zu lengths for %zu events", name,
			   c->n_len, n);
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		if (c->len[i] > c->bytes.len - at)
			return server_fail(errmsg, BATCH_BAD_REQUEST,
				   "column %s: the lengths run past its %zu bytes at event %zu", name,
				   c->bytes.len, i);
		/* An empty value has no bytes (and the column may have none). */
		*(tally_str *)((char *)&events[i] + field) =
			(tally_str){c->len[i] ? (const char *)c->bytes.data + at : NULL, c->len[i]};
		at += c->len[i];
	}
	if (at != c->bytes.len)
		return server_fail(errmsg, BATCH_BAD_REQUEST, "column %s: the lengths add up to %zu of its %zu bytes",
			   name, at, c->bytes.len);
	return BATCH_OK;
}

/* A numeric column has n entries or none. */
static int numeric_length(size_t have, size_t n, const char *name, char *errmsg)
{
	if (have && have != n)
		return server_fail(errmsg, BATCH_BAD_REQUEST, "column %s: %zu values for %zu events", name, have, n);
	return BATCH_OK;
}

int batch_decode(const Tally__V1__IngestBatch *b, tally_event *events, size_t events_max,
		 size_t *count, char *errmsg)
{
	*count = 0;
	size_t n = b->n_time_us;
	if (n > events_max)
		return server_fail(errmsg, BATCH_TOO_LARGE, "%zu events in one batch; at most %zu", n, events_max);
	int rc;
	if ((rc = numeric_length(b->n_status, n, "status", errmsg)) ||
	    (rc = numeric_length(b->n_duration_ms, n, "duration_ms", errmsg)) ||
	    (rc = numeric_length(b->n_tokens_in, n, "tokens_in", errmsg)) ||
	    (rc = numeric_length(b->n_tokens_out, n, "tokens_out", errmsg)) ||
	    (rc = numeric_length(b->n_cost_micros, n, "cost_micros", errmsg)))
		return rc;
	const struct {
		const Tally__V1__StringColumn *column;
		const char *name;
		size_t field;
	} strings[] = {
		{b->event_id, "event_id", offsetof(tally_event, event_id)},
		{b->type, "type", offsetof(tally_event, type)},
		{b->project, "project", offsetof(tally_event, project)},
		{b->agent, "agent", offsetof(tally_event, agent)},
		{b->model, "model", offsetof(tally_event, model)},
		{b->user, "user", offsetof(tally_event, user)},
	};
	for (size_t k = 0; k < sizeof(strings) / sizeof(strings[0]); k++)
		if ((rc = string_column(b, strings[k].column, strings[k].name, n, events, strings[k].field,
					errmsg)))
			return rc;
	for (size_t i = 0; i < n; i++) {
		tally_event *e = &events[i];
		e->time_us = b->time_us[i];
		e->status = b->n_status ? b->status[i] : 0;
		e->duration_ms = b->n_duration_ms ? b->duration_ms[i] : 0;
		e->tokens_in = b->n_tokens_in ? b->tokens_in[i] : 0;
		e->tokens_out = b->n_tokens_out ? b->tokens_out[i] : 0;
		e->cost_micros = b->n_cost_micros ? b->cost_micros[i] : 0;
	}
	*count = n;
	return BATCH_OK;
}
