/*
 * filter.c — a request's filters as one hash set per dimension (filter.h).
 */
#include "filter.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

static uint64_t value_hash(tally_str v)
{
	return XXH3_64bits(v.len ? v.ptr : "", v.len);
}

/* The slot of v in d: its entry's slot, or the empty slot where it goes. */
static uint32_t slot_of(const filter_dim *d, tally_str v, uint64_t h)
{
	uint32_t k = (uint32_t)h & d->mask;
	while (d->slots[k]) {
		const filter_value *e = &d->values[d->slots[k] - 1];
		if (e->hash == h && e->value.len == v.len &&
		    (!v.len || !memcmp(e->value.ptr, v.ptr, v.len)))
			break;
		k = (k + 1) & d->mask;
	}
	return k;
}

static int dim_init(filter_dim *d, const tally_filter *filters, uint32_t count, int dim)
{
	uint32_t total = 0;
	for (uint32_t i = 0; i < count; i++)
		if (filters[i].dim == dim) {
			total += filters[i].value_count;
			d->filters++;
		}
	uint32_t slots = 16;
	while (slots < 2 * total)
		slots *= 2;
	d->values = malloc(sizeof(*d->values) * total);
	d->slots = calloc(slots, sizeof(*d->slots));
	if (!d->values || !d->slots)
		return -ENOMEM;
	d->mask = slots - 1;
	for (uint32_t i = 0; i < count; i++) {
		const tally_filter *f = &filters[i];
		if (f->dim != dim)
			continue;
		for (uint32_t k = 0; k < f->value_count; k++) {
			tally_str v = f->values[k];
			uint64_t h = value_hash(v);
			uint32_t s = slot_of(d, v, h);
			if (!d->slots[s]) {
				d->values[d->count] = (filter_value){v, h, 0, 0};
				d->slots[s] = ++d->count;
			}
			filter_value *e = &d->values[d->slots[s] - 1];
			if (e->last != i + 1) { /* a value listed twice by one filter counts once */
				e->last = i + 1;
				e->listed_by++;
			}
		}
	}
	return 0;
}

int filter_set_init(filter_set *f, const tally_filter *filters, uint32_t count)
{
	memset(f, 0, sizeof(*f));
	for (uint32_t i = 0; i < count; i++)
		f->dims |= 1u << filters[i].dim;
	for (int d = 0; d < TALLY_DIM_COUNT; d++)
		if ((f->dims & (1u << d)) && dim_init(&f->dim[d], filters, count, d)) {
			filter_set_free(f);
			return -ENOMEM;
		}
	return 0;
}

int filter_set_pass(const filter_set *f, int dim, tally_str v)
{
	if (!(f->dims & (1u << dim)))
		return 1;
	const filter_dim *d = &f->dim[dim];
	uint32_t s = slot_of(d, v, value_hash(v));
	return d->slots[s] && d->values[d->slots[s] - 1].listed_by == d->filters;
}

void filter_set_free(filter_set *f)
{
	for (int d = 0; d < TALLY_DIM_COUNT; d++) {
		free(f->dim[d].values);
		free(f->dim[d].slots);
	}
	memset(f, 0, sizeof(*f));
}
