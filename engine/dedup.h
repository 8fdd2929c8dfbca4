/*
 * dedup.h — the per-tenant fingerprint index of event ids in the lateness
 * horizon.
 *
 * Each entry is 8 bytes: a 48-bit fingerprint of the id (never zero) and the
 * 16-bit UTC day (days since the epoch) of the stored event. A fingerprint
 * match is only a hint: the caller verifies it against the stored id in the
 * memtable or in that day's segments, so a false match never drops an event.
 * The day tells the caller where to look, and lets entries older than the
 * horizon expire.
 *
 * Layout: Robin Hood linear probing over `capacity` slots (any capacity, not
 * only powers of two: home = top 32 fingerprint bits * capacity >> 32). The table grows
 * by half when it passes DEDUP_LOAD_PERCENT_MAX, so the load stays between
 * 56% and 85%: 9.4 to 14.2 bytes of RAM per id.
 */
#ifndef TALLY_DEDUP_H
#define TALLY_DEDUP_H

#include <stddef.h>
#include <stdint.h>

typedef struct dedup_table {
	uint64_t *slots; /* 0 = empty; else fingerprint << 16 | day */
	uint32_t capacity;
	uint32_t count;
} dedup_table;

/* The 64-bit hash of an id in packed form (kind + bytes). */
uint64_t dedup_hash(int kind, const uint8_t *packed, size_t size);

/* Zero-initialised tables are empty and valid. */
void dedup_free(dedup_table *t);

/* Writes to days[] the day of every entry whose fingerprint matches hash
 * (at most days_max) and returns how many matched. */
size_t dedup_find(const dedup_table *t, uint64_t hash, uint16_t *days, size_t days_max);

/* The fingerprint of a hash: its top 48 bits, never zero. */
static inline uint64_t dedup_fingerprint(uint64_t hash)
{
	uint64_t fp = hash >> 16;
	return fp ? fp : 1;
}

/* The home slot of a fingerprint: its top 32 bits scaled to [0, capacity);
 * the product stays below 2^64 for any 32-bit capacity. */
static inline uint32_t dedup_home(uint64_t fp, uint32_t capacity)
{
	return (uint32_t)(((fp >> 16) * (uint64_t)capacity) >> 32);
}

/* Starts loading the cache line a lookup of hash will probe first.
 * always_inline is load-bearing: GCC 12 judges a plain static inline
 * function whose only effect is a prefetch to be const and deletes its
 * calls before inlining them (`make prefetch-check` guards this). */
static inline __attribute__((always_inline)) void dedup_prefetch(const dedup_table *t, uint64_t hash)
{
	if (t->capacity)
		__builtin_prefetch(&t->slots[dedup_home(dedup_fingerprint(hash), t->capacity)]);
}

/* Adds an entry (duplicates are the caller's business). 0 or -ENOMEM. */
int dedup_insert(dedup_table *t, uint64_t hash, uint16_t day);

/* Drops every entry with day < day_min; may shrink. 0 or -ENOMEM (the
 * table is unchanged on failure). */
int dedup_expire(dedup_table *t, uint16_t day_min);

/* The longest distance of any entry from its home slot (a health check:
 * Robin Hood keeps it near log(count) for uniform fingerprints). */
uint32_t dedup_probe_length_max(const dedup_table *t);

/* RAM held by the table's slots. */
static inline size_t dedup_bytes(const dedup_table *t)
{
	return (size_t)t->capacity * sizeof(uint64_t);
}

#endif /* TALLY_DEDUP_H */
