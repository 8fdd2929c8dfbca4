/*
 * rows.c — growable columnar rows (see rows.h). Capacity doubles; every
 * column lives in one block that is reallocated as a whole, so
 * count <= capacity holds for all.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rows.h"

/* Small: most of 10,000 tenants hold a handful of rows between flushes. */
#define ROWS_CAPACITY_MIN 4

/*
 * All columns live in one allocation, widest first, so a tenant holding a
 * handful of rows touches a few adjacent cache lines per event instead of a
 * dozen scattered ones (the Zipf tail is most tenants).
 */
static size_t block_size(uint32_t c)
{
	return (size_t)c * (4 * sizeof(int64_t) + sizeof(uint32_t) * (1 + DIM_COUNT) + 2) +
	       sizeof(uint32_t) * ((size_t)c + 1);
}

static void block_carve(rows *r, uint8_t *block, uint32_t c)
{
	uint8_t *p = block;
	r->time_us = (int64_t *)p, p += sizeof(int64_t) * c;
	r->tokens_in = (uint64_t *)p, p += sizeof(uint64_t) * c;
	r->tokens_out = (uint64_t *)p, p += sizeof(uint64_t) * c;
	r->cost_micros = (int64_t *)p, p += sizeof(int64_t) * c;
	r->duration_ms = (uint32_t *)p, p += sizeof(uint32_t) * c;
	for (int d = 0; d < DIM_COUNT; d++)
		r->dim[d] = (uint32_t *)p, p += sizeof(uint32_t) * c;
	r->id_offset = (uint32_t *)p, p += sizeof(uint32_t) * ((size_t)c + 1);
	r->status = p, p += c;
	r->id_kind = p, p += c;
}

int rows_reserve(rows *r, uint32_t count)
{
	if (count <= r->capacity && r->block)
		return 0;
	uint64_t capacity = r->capacity ? r->capacity : ROWS_CAPACITY_MIN;
	while (capacity < count)
		capacity *= 2;
	if (capacity > UINT32_MAX - 1)
		return -ENOMEM;
	uint32_t c = (uint32_t)capacity;
	uint8_t *block = malloc(block_size(c));
	if (!block)
		return -ENOMEM;
	rows old = *r;
	block_carve(r, block, c);
	if (old.block) {
		uint32_t n = old.count;
		memcpy(r->time_us, old.time_us, sizeof(int64_t) * n);
		memcpy(r->tokens_in, old.tokens_in, sizeof(uint64_t) * n);
		memcpy(r->tokens_out, old.tokens_out, sizeof(uint64_t) * n);
		memcpy(r->cost_micros, old.cost_micros, sizeof(int64_t) * n);
		memcpy(r->duration_ms, old.duration_ms, sizeof(uint32_t) * n);
		for (int d = 0; d < DIM_COUNT; d++)
			memcpy(r->dim[d], old.dim[d], sizeof(uint32_t) * n);
		memcpy(r->id_offset, old.id_offset, sizeof(uint32_t) * ((size_t)n + 1));
		memcpy(r->status, old.status, n);
		memcpy(r->id_kind, old.id_kind, n);
		free(old.block);
	} else {
		r->id_offset[0] = 0;
	}
	r->block = block;
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
	free(r->block);
	bytebuf_free(&r->id_bytes);
	memset(r, 0, sizeof(*r));
}

size_t rows_bytes(const rows *r)
{
	return (r->block ? block_size(r->capacity) : 0) + r->id_bytes.capacity;
}
