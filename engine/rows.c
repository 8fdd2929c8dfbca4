/*
 * rows.c — growable columnar rows (see rows.h). Capacity doubles; every
 * column is reallocated together so count <= capacity holds for all.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rows.h"

/* Small: most of 10,000 tenants hold a handful of rows between flushes. */
#define ROWS_CAPACITY_MIN 4

static int grow(void **p, size_t element_size, uint32_t capacity)
{
	void *q = realloc(*p, element_size * capacity);
	if (!q)
		return -ENOMEM;
	*p = q;
	return 0;
}

int rows_reserve(rows *r, uint32_t count)
{
	if (count <= r->capacity && r->id_offset)
		return 0;
	uint64_t capacity = r->capacity ? r->capacity : ROWS_CAPACITY_MIN;
	while (capacity < count)
		capacity *= 2;
	if (capacity > UINT32_MAX - 1)
		return -ENOMEM;
	uint32_t c = (uint32_t)capacity;
	/* Each grow either succeeds or leaves its column as it was; a partly
	 * grown set is still consistent because capacity is only raised last. */
	if (grow((void **)&r->time_us, sizeof(*r->time_us), c) ||
	    grow((void **)&r->status, sizeof(*r->status), c) ||
	    grow((void **)&r->duration_ms, sizeof(*r->duration_ms), c) ||
	    grow((void **)&r->tokens_in, sizeof(*r->tokens_in), c) ||
	    grow((void **)&r->tokens_out, sizeof(*r->tokens_out), c) ||
	    grow((void **)&r->cost_micros, sizeof(*r->cost_micros), c) ||
	    grow((void **)&r->id_kind, sizeof(*r->id_kind), c))
		return -ENOMEM;
	for (int d = 0; d < DIM_COUNT; d++)
		if (grow((void **)&r->dim[d], sizeof(*r->dim[d]), c))
			return -ENOMEM;
	int first = r->id_offset == NULL;
	if (grow((void **)&r->id_offset, sizeof(*r->id_offset), c + 1))
		return -ENOMEM;
	if (first)
		r->id_offset[0] = 0;
	r->capacity = c;
	return 0;
}

void rows_reset(rows *r)
{
	r->count = 0;
	if (r->id_offset)
		r->id_offset[0] = 0;
	bytebuf_reset(&r->id_bytes);
}

void rows_free(rows *r)
{
	free(r->time_us);
	free(r->status);
	free(r->duration_ms);
	free(r->tokens_in);
	free(r->tokens_out);
	free(r->cost_micros);
	free(r->id_kind);
	free(r->id_offset);
	for (int d = 0; d < DIM_COUNT; d++)
		free(r->dim[d]);
	bytebuf_free(&r->id_bytes);
	memset(r, 0, sizeof(*r));
}

size_t rows_bytes(const rows *r)
{
	size_t per_row = sizeof(int64_t) * 2 + sizeof(uint64_t) * 2 + sizeof(uint32_t) * 2 +
			 sizeof(uint8_t) * 2 + sizeof(uint32_t) * DIM_COUNT;
	return (size_t)r->capacity * per_row + r->id_bytes.capacity;
}
