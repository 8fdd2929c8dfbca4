/*
 * filter.h — a request's filters made ready for checking row after row.
 *
 * A query or listing carries up to TALLY_FILTERS_MAX filters of up to
 * TALLY_FILTER_VALUES_MAX values each; filters on the same dimension AND
 * (a value passes when every one of them lists it), filters on different
 * dimensions AND too. Checked as given, one row costs up to 4,096
 * comparisons of strings up to 128 bytes. filter_set_init folds them once
 * per request into one hash set per dimension, of the values each filter
 * on it lists with the number of those filters; a row then costs one hash
 * and about one comparison per filtered dimension.
 */
#ifndef TALLY_FILTER_H
#define TALLY_FILTER_H

#include <stdint.h>

#include "tally.h"

typedef struct filter_value {
	tally_str value; /* the request's bytes, not copied */
	uint64_t hash;
	uint32_t listed_by; /* filters on its dimension that list it */
	uint32_t last;      /* the last filter that counted it, + 1 */
} filter_value;

typedef struct filter_dim {
	filter_value *values; /* distinct values of the dimension's filters */
	uint32_t count;
	uint32_t *slots; /* open addressing: index into values + 1, 0 empty */
	uint32_t mask;   /* slots - 1 */
	uint32_t filters; /* filters on the dimension: a value passes if listed by all */
} filter_dim;

typedef struct filter_set {
	uint32_t dims; /* 1 << enum tally_dim of each filtered dimension */
	filter_dim dim[TALLY_DIM_COUNT];
} filter_set;

/* Builds f from filters[0, count), already checked (known dimensions,
 * 1..TALLY_FILTER_VALUES_MAX values with bytes): 0, or -ENOMEM with f
 * empty. The values' bytes must outlive f. */
int filter_set_init(filter_set *f, const tally_filter *filters, uint32_t count);

/* Does value v of dimension dim (enum tally_dim) pass every filter on dim? */
int filter_set_pass(const filter_set *f, int dim, tally_str v);

void filter_set_free(filter_set *f);

#endif
