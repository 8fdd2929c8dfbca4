/*
 * strdict.h — an interning string dictionary: each distinct byte string gets
 * a dense code 0, 1, 2, ... in order of first appearance.
 *
 * Used for the dimension columns (type, project, agent, model, user) of a
 * tenant's memtable, and for the per-tenant dictionaries of segment files.
 * Strings are copied into one arena; lookups hash with XXH3.
 */
#ifndef TALLY_STRDICT_H
#define TALLY_STRDICT_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include "codec.h"
#include "tally.h"

typedef struct strdict {
	bytebuf arena;     /* per string: u32 code, u32 size, then its bytes */
	uint32_t *offsets; /* per code: arena offset of the string's bytes */
	uint32_t count;
	uint32_t offsets_capacity;
	/* Open addressing, at most half full: (low half of the string's hash)
	 * << 32 | (arena offset of its entry + 1); 0 = empty. A probe compares
	 * the hash half, then reads the entry (code, size and bytes side by
	 * side): one cache miss for the slot and one for the string. */
	uint64_t *slots;
	uint32_t slot_mask; /* slot count - 1 (power of two), 0 when none */
} strdict;

/* An entry's header in the arena: its code (u32), then its size (u32,
 * at STRDICT_ENTRY_SIZE_AT), then its bytes. */
#define STRDICT_ENTRY_HEADER 8u
#define STRDICT_ENTRY_SIZE_AT 4u

/* An empty dictionary needs no allocation: zero-initialise it. */
void strdict_free(strdict *d);

/* Sets *code to the code of s, adding it if new. 0, -ENOMEM, or
 * TALLY_E_LIMIT past DICT_STRINGS_MAX strings. */
int strdict_intern(strdict *d, const char *s, uint32_t size, uint32_t *code);

/* The hash strdict_intern_hashed wants for s. */
uint64_t strdict_hash(const char *s, uint32_t size);

/*
 * A copy of src's strings and codes, for strdict_get only (no lookup
 * table: not for strdict_intern): src may then grow, or be freed, while
 * the copy is read. Free it with strdict_free. A string never changes
 * once added and the arena holds them in code order, so the copy is taken
 * in steps, each under whatever lock guards src's growth, with the lock
 * let go between them (an active memtable's dictionary, queries.md):
 * strdict_copy_reserve makes room outside the lock, its memory touched
 * there too (first touches are page faults); strdict_copy_more appends
 * the codes src has gained since dst's last step, as far as dst has room
 * and up to about max_bytes of strings. Start from a zeroed dst.
 */
/* Room in dst for at least count codes and bytes bytes of arena, with an
 * eighth more for growth meanwhile, its new memory touched. 0 or -ENOMEM
 * (dst unchanged). */
int strdict_copy_reserve(strdict *dst, uint32_t count, size_t bytes);
/* Appends src's codes from dst->count on: at least one if dst has room for
 * it, then more while their strings stay within max_bytes. Returns 1 once
 * dst holds every code of src, else 0 (out of room, or max_bytes). */
int strdict_copy_more(const strdict *src, strdict *dst, size_t max_bytes);

/* The string of a code (< count). Valid until the next intern or free. */
static inline tally_str strdict_get(const strdict *d, uint32_t code)
{
	const uint8_t *p = d->arena.data + d->offsets[code];
	uint32_t size;
	memcpy(&size, p - STRDICT_ENTRY_HEADER + STRDICT_ENTRY_SIZE_AT, sizeof(size));
	tally_str s = {(const char *)p, size};
	return s;
}

/* Starts loading the slot a lookup of hash probes first; a hint only. */
void strdict_prefetch_slot(const strdict *d, uint64_t hash);

/* Reads that slot (which strdict_prefetch_slot should have loaded by now)
 * and, when its hash half matches, starts loading the entry it points at:
 * the lookup's second, dependent miss. A hint only: a slot taken by
 * another string costs a useless prefetch. */
void strdict_prefetch_entry(const strdict *d, uint64_t hash);

/* strdict_intern_hashed's slow path: adds s, which is not in d. */
int strdict_add(strdict *d, const char *s, uint32_t size, uint64_t hash, uint32_t *code);

static inline uint32_t strdict_slot_of(uint64_t hash, uint32_t mask)
{
	return (uint32_t)(hash >> 32) & mask;
}

/* a[0, n) == b[0, n), in at most a few word compares for short strings:
 * the common case is a hit, whose bytes are all compared anyway. */
static inline int strdict_bytes_equal(const char *a, const char *b, size_t n)
{
	if (n >= 8) {
		uint64_t x, y;
		for (size_t i = 0; i + 8 < n; i += 8) {
			memcpy(&x, a + i, 8);
			memcpy(&y, b + i, 8);
			if (x != y)
				return 0;
		}
		memcpy(&x, a + n - 8, 8); /* the last 8 bytes, overlapping */
		memcpy(&y, b + n - 8, 8);
		return x == y;
	}
	if (n >= 4) {
		uint32_t x, y, x2, y2;
		memcpy(&x, a, 4);
		memcpy(&y, b, 4);
		memcpy(&x2, a + n - 4, 4);
		memcpy(&y2, b + n - 4, 4);
		return x == y && x2 == y2;
	}
	for (size_t i = 0; i < n; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

/* strdict_intern with hash == strdict_hash(s, size) computed by the caller
 * (ingest does it before it takes the store lock). Inline: a lookup that
 * finds the string (nearly every one) is a few instructions and no call. */
static inline int strdict_intern_hashed(strdict *d, const char *s, uint32_t size,
					uint64_t hash, uint32_t *code)
{
	if (d->slot_mask) {
		const uint64_t half = hash << 32;
		for (uint32_t i = strdict_slot_of(hash, d->slot_mask); d->slots[i];
		     i = (i + 1) & d->slot_mask) {
			uint64_t slot = d->slots[i];
			if ((slot & UINT64_C(0xffffffff00000000)) != half)
				continue;
			const uint8_t *entry = d->arena.data + ((uint32_t)slot - 1);
			uint32_t entry_size;
			memcpy(&entry_size, entry + STRDICT_ENTRY_SIZE_AT, sizeof(entry_size));
			if (entry_size == size &&
			    strdict_bytes_equal((const char *)entry + STRDICT_ENTRY_HEADER, s, size)) {
				memcpy(code, entry, sizeof(*code));
				return 0;
			}
		}
	}
	return strdict_add(d, s, size, hash, code);
}

/* Bytes of RAM the dictionary holds. */
size_t strdict_bytes(const strdict *d);

#endif /* TALLY_STRDICT_H */
