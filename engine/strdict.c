/*
 * strdict.c — interning dictionary (see strdict.h).
 *
 * Invariants
 *   - The arena holds the strings in code order, each as an entry: u32
 *     code, u32 size (native byte order: the arena is never stored), then
 *     the bytes; offsets[c] is where string c's bytes start, and the arena
 *     stays below 4 GiB so every entry offset + 1 fits a slot's low half.
 *   - slots has slot_mask + 1 entries, at most half full, so linear probing
 *     ends quickly; an occupied slot's low half is its entry's offset + 1,
 *     so zero means empty.
 */
#include <assert.h>
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

int strdict_copy_reserve(strdict *dst, uint32_t count, size_t bytes)
{
	count += count / 8;
	bytes += bytes / 8;
	if (bytes > dst->arena.capacity) {
		uint8_t *data = realloc(dst->arena.data, bytes);
		if (!data)
			return -ENOMEM;
		memset(data + dst->arena.capacity, 0, bytes - dst->arena.capacity);
		dst->arena.data = data;
		dst->arena.capacity = bytes;
	}
	if (count > dst->offsets_capacity) {
		uint32_t *offsets = realloc(dst->offsets, sizeof(*offsets) * count);
		if (!offsets)
			return -ENOMEM;
		memset(offsets + dst->offsets_capacity, 0,
		       sizeof(*offsets) * (count - dst->offsets_capacity));
		dst->offsets = offsets;
		dst->offsets_capacity = count;
	}
	return 0;
}

/* Where code c's entry starts in d's arena (c <= count: the arena's end). */
static size_t entry_start(const strdict *d, uint32_t c)
{
	return c < d->count ? d->offsets[c] - STRDICT_ENTRY_HEADER : d->arena.size;
}

int strdict_copy_more(const strdict *src, strdict *dst, size_t max_bytes)
{
	uint32_t from = dst->count;
	size_t at = dst->arena.size;
	assert(from <= src->count && at == entry_start(src, from));
	if (from == src->count)
		return 1;
	/* The last code end in (from, src->count] whose strings fit both
	 * limits; offsets rise with the code, so a binary search finds it. */
	uint32_t lo = from, hi = src->count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo + 1) / 2;
		size_t bytes = entry_start(src, mid) - at;
		if (mid <= dst->offsets_capacity && at + bytes <= dst->arena.capacity &&
		    (bytes <= max_bytes || mid == from + 1))
			lo = mid;
		else
			hi = mid - 1;
	}
	if (lo == from) /* no room for the next code */
		return 0;
	size_t end = entry_start(src, lo);
	memcpy(dst->arena.data + at, src->arena.data + at, end - at);
	memcpy(dst->offsets + from, src->offsets + from, sizeof(*dst->offsets) * (lo - from));
	dst->arena.size = end;
	dst->count = lo;
	return lo == src->count;
}

void strdict_free(strdict *d)
{
	bytebuf_free(&d->arena);
	free(d->offsets);
	free(d->slots);
	memset(d, 0, sizeof(*d));
}

static uint64_t slot_value(uint64_t hash, uint32_t entry)
{
	return hash << 32 | ((uint64_t)entry + 1);
}

static int grow_slots(strdict *d)
{
	uint32_t slot_count = d->slot_mask ? (d->slot_mask + 1) * 2 : 8;
	uint64_t *slots = grow_slots_alloc(slot_count, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	uint32_t mask = slot_count - 1;
	for (uint32_t code = 0; code < d->count; code++) {
		tally_str s = strdict_get(d, code);
		uint64_t hash = strdict_hash(s.ptr, s.len);
		uint32_t i = strdict_slot_of(hash, mask);
		while (slots[i])
			i = (i + 1) & mask;
		slots[i] = slot_value(hash, d->offsets[code] - STRDICT_ENTRY_HEADER);
	}
	free(d->slots);
	d->slots = slots;
	d->slot_mask = mask;
	return 0;
}

void strdict_prefetch_slot(const strdict *d, uint64_t hash)
{
	if (d->slot_mask)
		__builtin_prefetch(&d->slots[strdict_slot_of(hash, d->slot_mask)]);
}

void strdict_prefetch_entry(const strdict *d, uint64_t hash)
{
	if (!d->slot_mask)
		return;
	uint64_t slot = d->slots[strdict_slot_of(hash, d->slot_mask)];
	if (!slot || slot >> 32 != (hash & UINT32_MAX))
		return;
	/* An entry is 8 header bytes and the string: for the strings of
	 * dimensions (mostly under 25 bytes) at most two lines. */
	const uint8_t *entry = d->arena.data + ((uint32_t)slot - 1);
	__builtin_prefetch(entry);
	__builtin_prefetch(entry + 31);
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
	if (d->count >= DICT_STRINGS_MAX)
		return TALLY_E_LIMIT;
	if ((uint64_t)d->arena.size + STRDICT_ENTRY_HEADER + size >= UINT32_MAX)
		return TALLY_E_LIMIT;
	if (d->count + 1 > d->offsets_capacity) {
		uint32_t capacity = d->offsets_capacity ? d->offsets_capacity * 2 : 4;
		uint32_t *offsets = realloc(d->offsets, capacity * sizeof(*offsets));
		if (!offsets)
			return -ENOMEM;
		d->offsets = offsets;
		d->offsets_capacity = capacity;
	}
	if ((uint64_t)(d->count + 1) * 2 > (uint64_t)d->slot_mask + 1 || !d->slot_mask) {
		int rc = grow_slots(d);
		if (rc)
			return rc;
	}
	if (bytebuf_reserve(&d->arena, STRDICT_ENTRY_HEADER + (size_t)size))
		return -ENOMEM;
	uint32_t c = d->count++;
	uint32_t entry = (uint32_t)d->arena.size;
	uint8_t *p = d->arena.data + entry;
	memcpy(p, &c, sizeof(c));
	memcpy(p + STRDICT_ENTRY_SIZE_AT, &size, sizeof(size));
	if (size)
		memcpy(p + STRDICT_ENTRY_HEADER, s, size);
	d->arena.size += STRDICT_ENTRY_HEADER + (size_t)size;
	d->offsets[c] = entry + STRDICT_ENTRY_HEADER;
	uint32_t i = strdict_slot_of(hash, d->slot_mask);
	while (d->slots[i])
		i = (i + 1) & d->slot_mask;
	d->slots[i] = slot_value(hash, entry);
	*code = c;
	return 0;
}

size_t strdict_bytes(const strdict *d)
{
	return d->arena.capacity + (size_t)d->offsets_capacity * sizeof(uint32_t) +
	       (d->slot_mask ? ((size_t)d->slot_mask + 1) * sizeof(*d->slots) : 0);
}
