/*
 * rows.c — growable columnar rows (see rows.h). Capacity doubles; every
 * column lives in one block that is reallocated as a whole, so
 * count <= capacity holds for all. Rows marked map_large (memtables) move
 * their columns into mappings of their own at ROWS_MAPPED_MIN rows, and
 * from then on grow each by mremap, without copying; their id bytes follow
 * the columns (mapped while they are).
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "grow.h"
#include "rows.h"
#include "tally.h"

/* Small: most of 10,000 tenants hold a handful of rows between flushes. */
#define ROWS_CAPACITY_MIN 4
#define ROWS_ID_BYTES_MIN 64

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

/* A column: where its pointer is, its element size, and its elements
 * beyond the capacity (id_offset has capacity + 1). */
typedef struct column_ref {
	void **ptr;
	size_t size;
	size_t extra;
} column_ref;

enum { COLUMN_COUNT = 8 + DIM_COUNT };

static void columns_of(rows *r, column_ref out[COLUMN_COUNT])
{
	int n = 0;
	out[n++] = (column_ref){(void **)&r->time_us, sizeof(int64_t), 0};
	out[n++] = (column_ref){(void **)&r->tokens_in, sizeof(uint64_t), 0};
	out[n++] = (column_ref){(void **)&r->tokens_out, sizeof(uint64_t), 0};
	out[n++] = (column_ref){(void **)&r->cost_micros, sizeof(int64_t), 0};
	out[n++] = (column_ref){(void **)&r->duration_ms, sizeof(uint32_t), 0};
	for (int d = 0; d < DIM_COUNT; d++)
		out[n++] = (column_ref){(void **)&r->dim[d], sizeof(uint32_t), 0};
	out[n++] = (column_ref){(void **)&r->id_offset, sizeof(uint32_t), 1};
	out[n++] = (column_ref){(void **)&r->status, 1, 0};
	out[n++] = (column_ref){(void **)&r->id_kind, 1, 0};
	assert(n == COLUMN_COUNT);
}

/* Bytes of column c's mapping at capacity `capacity`: whole pages. */
static size_t mapped_bytes(const column_ref *c, uint32_t capacity)
{
	return grow_map_bytes(c->size * ((size_t)capacity + c->extra));
}

static void unmap_columns(column_ref *cols, int n, uint32_t capacity)
{
	for (int i = 0; i < n; i++)
		munmap(*cols[i].ptr, mapped_bytes(&cols[i], capacity));
}

/*
 * Grows mapped columns from capacity `from` to `to` with mremap: the
 * kernel moves their pages, nothing is copied, and the new pages are
 * faulted in as rows are written. 0, or -ENOMEM with every column as it
 * was (those already grown are shrunk back).
 */
static int grow_mapped(rows *r, uint32_t from, uint32_t to)
{
	column_ref cols[COLUMN_COUNT];
	columns_of(r, cols);
	for (int i = 0; i < COLUMN_COUNT; i++) {
		void *p = mremap(*cols[i].ptr, mapped_bytes(&cols[i], from),
				 mapped_bytes(&cols[i], to), MREMAP_MAYMOVE);
		if (p == MAP_FAILED) {
			for (int k = 0; k < i; k++) {
				p = mremap(*cols[k].ptr, mapped_bytes(&cols[k], to),
					   mapped_bytes(&cols[k], from), 0);
				if (p != MAP_FAILED)
					*cols[k].ptr = p; /* a shrink stays in place */
			}
			return -ENOMEM;
		}
		*cols[i].ptr = p;
	}
	return 0;
}

/* Moves the block's columns into mappings of capacity `to` (one copy,
 * once, at ROWS_MAPPED_MIN rows). 0 or -ENOMEM (rows unchanged). */
static int map_columns(rows *r, uint32_t to)
{
	column_ref cols[COLUMN_COUNT];
	columns_of(r, cols);
	void *maps[COLUMN_COUNT];
	for (int i = 0; i < COLUMN_COUNT; i++) {
		maps[i] = grow_map_new(mapped_bytes(&cols[i], to));
		if (!maps[i]) {
			for (int k = 0; k < i; k++)
				munmap(maps[k], mapped_bytes(&cols[k], to));
			return -ENOMEM;
		}
	}
	for (int i = 0; i < COLUMN_COUNT; i++) {
		if (r->block)
			memcpy(maps[i], *cols[i].ptr, cols[i].size * ((size_t)r->count + cols[i].extra));
		*cols[i].ptr = maps[i];
	}
	if (!r->block)
		r->id_offset[0] = 0;
	free(r->block);
	r->block = NULL;
	r->mapped = 1;
	return 0;
}

/* Moves the columns (from a block or from mappings) into one new block of
 * capacity c. 0 or -ENOMEM (rows unchanged). */
static int grow_block(rows *r, uint32_t c)
{
	uint8_t *block = malloc(block_size(c));
	if (!block)
		return -ENOMEM;
	rows old = *r;
	block_carve(r, block, c);
	if (old.block || old.mapped) {
		column_ref from[COLUMN_COUNT], to[COLUMN_COUNT];
		columns_of(&old, from);
		columns_of(r, to);
		for (int i = 0; i < COLUMN_COUNT; i++)
			memcpy(*to[i].ptr, *from[i].ptr, from[i].size * ((size_t)old.count + from[i].extra));
		if (old.mapped)
			unmap_columns(from, COLUMN_COUNT, old.capacity);
		free(old.block);
	} else {
		r->id_offset[0] = 0;
	}
	r->block = block;
	r->mapped = 0;
	return 0;
}

int rows_reserve(rows *r, uint32_t count)
{
	if (count <= r->capacity && (r->block || r->mapped))
		return 0;
	uint64_t capacity = r->capacity ? r->capacity : ROWS_CAPACITY_MIN;
	while (capacity < count)
		capacity *= 2;
	if (capacity > UINT32_MAX - 1)
		return -ENOMEM;
	uint32_t c = (uint32_t)capacity;
	/* A mapping can fail where malloc would not (vm.max_map_count: a
	 * store of huge memtables with many large tenants); the rows then
	 * grow as one block, by copying. */
	int rc = -ENOMEM;
	if (r->mapped)
		rc = grow_mapped(r, r->capacity, c);
	else if (r->map_large && c >= ROWS_MAPPED_MIN)
		rc = map_columns(r, c);
	if (rc)
		rc = grow_block(r, c);
	if (rc)
		return rc;
	r->capacity = c;
	return 0;
}

int rows_grow_id_bytes(rows *r, size_t extra)
{
	bytebuf *b = &r->id_bytes;
	if (extra <= b->capacity - b->size)
		return 0;
	if (extra > ROWS_ID_BYTES_MAX - b->size)
		return TALLY_E_LIMIT;
	size_t needed = b->size + extra;
	size_t capacity = b->capacity < ROWS_ID_BYTES_MIN ? ROWS_ID_BYTES_MIN : b->capacity;
	while (capacity < needed)
		capacity *= 2;
	if (capacity > ROWS_ID_BYTES_MAX)
		capacity = ROWS_ID_BYTES_MAX;
	void *data = b->data;
	int rc = grow_array(&data, b->capacity, capacity, b->size, r->mapped, &r->id_bytes_mapped);
	if (rc)
		return rc;
	b->data = data;
	b->capacity = capacity;
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
	if (r->mapped) {
		column_ref cols[COLUMN_COUNT];
		columns_of(r, cols);
		unmap_columns(cols, COLUMN_COUNT, r->capacity);
	}
	free(r->block);
	if (r->id_bytes_mapped)
		grow_array_free(r->id_bytes.data, r->id_bytes.capacity, 1);
	else
		bytebuf_free(&r->id_bytes);
	uint8_t map_large = r->map_large;
	memset(r, 0, sizeof(*r));
	r->map_large = map_large;
}

size_t rows_bytes(const rows *r)
{
	size_t bytes = r->block ? block_size(r->capacity) : 0;
	if (r->mapped) {
		column_ref cols[COLUMN_COUNT];
		columns_of((rows *)r, cols);
		for (int i = 0; i < COLUMN_COUNT; i++)
			bytes += mapped_bytes(&cols[i], r->capacity);
	}
	return bytes + r->id_bytes.capacity;
}
