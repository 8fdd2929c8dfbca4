/*
 * strdict.c — interning dictionary (see strdict.h).
 *
 * Invariants
 *   - offsets[0] == 0 and offsets[i] <= offsets[i + 1] == arena.size for
 *     i + 1 == count; the arena never shrinks.
 *   - slots has slot_mask + 1 entries, at most half full, so linear probing
 *     ends quickly; an entry is code + 1 so zero means empty.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* XXH3 compiled in here: for dimension strings (a few to a few dozen
 * bytes) the call into the shared library costs as much as the hash. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "grow.h"
#include "tally_limits.h"
#include "strdict.h"

void strdict_free(strdict *d)
{
	bytebuf_free(&d->arena);
	free(d->offsets);
	free(d->slots);
	memset(d, 0, sizeof(*d));
}

static int grow_slots(strdict *d)
{
	uint32_t slot_count = d->slot_mask ? (d->slot_mask + 1) * 2 : 8;
	uint32_t *slots = grow_slots_alloc(slot_count, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	uint32_t mask = slot_count - 1;
	for (uint32_t code = 0; code < d->count; code++) {
		tally_str s = strdict_get(d, code);
		uint32_t i = strdict_slot_of(strdict_hash(s.ptr, s.len), mask);
		while (slots[i])
			i = (i + 1) & mask;
		slots[i] = code + 1;
	}
	free(d->slots);
	d->slots = slots;
	d->slot_mask = mask;
	return 0;
}

uint64_t strdict_hash(const char *s, uint32_t size)
{
	return XXH3_64bits(s, size);
}

int strdict_intern(strdict *d, const char *s, uint32_t size, uint32_t *code)
{
	return strdict_intern_hashed(d, s, size, strdict_hash(s, size), code);
}

int strdict_add(strdict *d, const char *s, uint32_t size, uint64_t hash, uint32_t *code)
{
	/* The arena is never NULL once a string exists, so strdict_get never
	 * hands out a NULL pointer, even for "". */
	if (!d->arena.data && bytebuf_reserve(&d->arena, 16))
		return -ENOMEM;
	if (d->count >= DICT_STRINGS_MAX)
		return TALLY_E_LIMIT;
	if (d->count + 2 > d->offsets_capacity) {
		uint32_t capacity = d->offsets_capacity ? d->offsets_capacity * 2 : 4;
		uint32_t *offsets = realloc(d->offsets, capacity * sizeof(*offsets));
		if (!offsets)
			return -ENOMEM;
		if (!d->offsets_capacity)
			offsets[0] = 0;
		d->offsets = offsets;
		d->offsets_capacity = capacity;
	}
	if ((uint64_t)(d->count + 1) * 2 > (uint64_t)d->slot_mask + 1 || !d->slot_mask) {
		int rc = grow_slots(d);
		if (rc)
			return rc;
	}
	if (bytebuf_append(&d->arena, s, size))
		return -ENOMEM;
	uint32_t c = d->count++;
	d->offsets[c + 1] = (uint32_t)d->arena.size;
	uint32_t i = strdict_slot_of(hash, d->slot_mask);
	while (d->slots[i])
		i = (i + 1) & d->slot_mask;
	d->slots[i] = c + 1;
	*code = c;
	return 0;
}

size_t strdict_bytes(const strdict *d)
{
	return d->arena.capacity + (size_t)d->offsets_capacity * sizeof(uint32_t) +
	       (d->slot_mask ? ((size_t)d->slot_mask + 1) * sizeof(uint32_t) : 0);
}
