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

#include "codec.h"
#include "tally.h"

typedef struct strdict {
	bytebuf arena;     /* string bytes back to back */
	uint32_t *offsets; /* count + 1 entries into arena */
	uint32_t count;
	uint32_t offsets_capacity;
	uint32_t *slots;   /* open addressing: code + 1, 0 = empty */
	uint32_t slot_mask; /* slot count - 1 (power of two), 0 when none */
} strdict;

/* An empty dictionary needs no allocation: zero-initialise it. */
void strdict_free(strdict *d);

/* Sets *code to the code of s, adding it if new. 0, -ENOMEM, or
 * TALLY_E_LIMIT past DICT_STRINGS_MAX strings. */
int strdict_intern(strdict *d, const char *s, uint32_t size, uint32_t *code);

/* The hash strdict_intern_hashed wants for s. */
uint64_t strdict_hash(const char *s, uint32_t size);

/* strdict_intern with hash == strdict_hash(s, size) computed by the caller
 * (ingest does it before it takes the store lock). */
int strdict_intern_hashed(strdict *d, const char *s, uint32_t size, uint64_t hash,
			  uint32_t *code);

/* The string of a code (< count). Valid until the next intern or free. */
static inline tally_str strdict_get(const strdict *d, uint32_t code)
{
	tally_str s;
	s.ptr = (const char *)d->arena.data + d->offsets[code];
	s.len = d->offsets[code + 1] - d->offsets[code];
	return s;
}

/* Bytes of RAM the dictionary holds. */
size_t strdict_bytes(const strdict *d);

#endif /* TALLY_STRDICT_H */
