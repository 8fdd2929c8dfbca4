/*
 * convert.h — the server's translations between protocol messages and the
 * engine's query API (proto/tally.proto <-> engine/tally.h), for Query,
 * QueryResult, ListEvents and Event. Checks that are the protocol's (enum
 * values in range, counts over the engine's array sizes) happen here; the
 * engine checks the rest and explains it in its errmsg.
 */
#ifndef TALLY_SERVER_CONVERT_H
#define TALLY_SERVER_CONVERT_H

#include <stddef.h>

#include "tally.h"
#include "tally.pb-c.h"

/* Storage a converted query points into (filters and their values). */
typedef struct query_storage {
	tally_filter filters[TALLY_FILTERS_MAX];
	tally_str values[TALLY_FILTERS_MAX][TALLY_FILTER_VALUES_MAX];
} query_storage;

/*
 * Fills *out from m (strings point into m, filters into *st). 0, or
 * TALLY_E_INVALID with errmsg (TALLY_ERRMSG_SIZE) naming the field: an
 * unknown dimension, bucket or aggregate, a dimension grouped twice, too
 * many filters, values or quantiles.
 */
int convert_query(const Tally__V1__Query *m, tally_query *out, query_storage *st, char *errmsg);

/*
 * The protocol form of an engine result for query q: rows with their group
 * values in q's group-by order (the order of m->group_by). The message owns
 * malloc-ed arrays: free with convert_query_result_free. 0 or -ENOMEM.
 */
int convert_query_result(const Tally__V1__Query *m, const tally_result *r,
			 Tally__V1__QueryResult *out);
void convert_query_result_free(Tally__V1__QueryResult *out);

/* The protocol form of a row's wraps: *out NULL when every wraps is 0 (the
 * field is then absent), else malloc-ed (free it). 0 or -ENOMEM. */
int convert_wraps(const tally_wraps *w, Tally__V1__Wraps **out);

#endif /* TALLY_SERVER_CONVERT_H */
