/*
 * bytebuf.c — the growable byte array every encoder appends to.
 *
 * Promises
 *   1. data[0 .. size) are the bytes appended since the last reset; data is
 *      NULL only while capacity is 0.
 *   2. A failed call (-ENOMEM) leaves the buffer exactly as it was: no
 *      bytes appended, the old allocation still valid.
 *   3. Growth at least doubles the capacity, so appending n bytes one call
 *      at a time costs O(n) copies in total.
 *   4. size + extra is checked for overflow before anything is allocated: an
 *      impossible request is -ENOMEM, never a wrapped small allocation.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define BYTEBUF_CAPACITY_MIN 16

int bytebuf_grow(bytebuf *b, size_t extra)
{
	if (extra <= b->capacity - b->size)
		return 0;
	if (extra > SIZE_MAX - b->size)
		return -ENOMEM;
	size_t needed = b->size + extra;
	size_t capacity = b->capacity < BYTEBUF_CAPACITY_MIN ? BYTEBUF_CAPACITY_MIN : b->capacity;
	while (capacity < needed)
		capacity = capacity > SIZE_MAX / 2 ? needed : capacity * 2;
	uint8_t *data = realloc(b->data, capacity);
	if (data == NULL)
		return -ENOMEM;
	b->data = data;
	b->capacity = capacity;
	return 0;
}

int bytebuf_append(bytebuf *b, const void *src, size_t size)
{
	if (size == 0)
		return 0;
	int rc = bytebuf_reserve(b, size);
	if (rc != 0)
		return rc;
	memcpy(b->data + b->size, src, size);
	b->size += size;
	return 0;
}

void bytebuf_reset(bytebuf *b)
{
	b->size = 0;
}

void bytebuf_free(bytebuf *b)
{
	free(b->data);
	b->data = NULL;
	b->size = 0;
	b->capacity = 0;
}
