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
 *
 * Growth: a table under DEDUP_MIGRATE_SLOTS_MIN slots is rebuilt at once. A
 * larger one migrates: the grown table starts empty (a mapping, its pages
 * faulted as they are first written), the previous one is kept as `old`,
 * and each insert moves DEDUP_MIGRATE_STEP_SLOTS of old's slots, in slot
 * order, into the new one. Old's slots below `moved` are in the new table;
 * lookups read both, skipping those. The grown table is made before it is
 * needed, past DEDUP_PREPARE_PERCENT load, and faulted in a page at a
 * time as the load rises (one every 17 inserts): inserts land on random
 * slots, and a table faulted in by them would take one or two page faults
 * per insert, thousands in one call. So no insert pays for the whole copy
 * (growing to 3.4 and 5.1 million slots held the store lock for 32.5 and
 * 36.8 ms: docs/benchmarks.md, thirty-first and thirty-third measurements).
 *
 * RAM: from the preparation to the migration's end both tables are held,
 * and dedup_bytes counts both (the next table by its pages faulted in).
 * A growth held both before too, within one call: the peak is unchanged,
 * 23.5 bytes per id just before a growth, but it now lasts for a window
 * of inserts (from 80% load, then capacity / 64 inserts more).
 *
 * Expiry: every call names day_min, the oldest day the caller's horizon
 * covers. Entries of older days are dead: lookups skip them, and a growth
 * drops them. dedup_expire_slice removes them in place, a slice of slots
 * at a time (backward-shift deletion), so the store can sweep a large
 * table without holding its lock for the whole of it; the table stays
 * valid between slices, for lookups and inserts alike.
 */
#ifndef TALLY_DEDUP_H
#define TALLY_DEDUP_H

#include <stddef.h>
#include <stdint.h>

typedef struct dedup_table {
	uint64_t *slots; /* 0 = empty; else fingerprint << 16 | day */
	uint32_t capacity;
	uint32_t count;  /* entries, in slots and in old's slots [moved, old_capacity) */
	/* A migration in progress, else NULL: the table before the growth. */
	uint64_t *old;
	uint32_t old_capacity;
	uint32_t moved;      /* old's slots [0, moved) are in slots */
	/* The table the next growth will use, else NULL: made empty past
	 * DEDUP_PREPARE_PERCENT load and faulted in a page per insert. */
	uint64_t *next;
	uint32_t next_capacity;
	uint32_t next_faulted; /* its pages faulted in so far */
	uint8_t mapped;      /* slots is a mapping of its own (else malloc memory) */
	uint8_t old_mapped;
	uint8_t next_mapped;
} dedup_table;

/* The 64-bit hash of an id in packed form (kind + bytes). */
uint64_t dedup_hash(int kind, const uint8_t *packed, size_t size);

/* Zero-initialised tables are empty and valid. */
void dedup_free(dedup_table *t);

/* Writes to days[] the day of every entry of day >= day_min whose
 * fingerprint matches hash (at most days_max) and returns how many
 * matched. */
size_t dedup_find(const dedup_table *t, uint64_t hash, uint16_t day_min, uint16_t *days,
		  size_t days_max);

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

/* Starts loading the cache lines a lookup of hash will probe first (in
 * both tables while a migration lasts).
 * always_inline is load-bearing: GCC 12 judges a plain static inline
 * function whose only effect is a prefetch to be const and deletes its
 * calls before inlining them (`make prefetch-check` guards this). */
static inline __attribute__((always_inline)) void dedup_prefetch(const dedup_table *t, uint64_t hash)
{
	if (t->capacity)
		__builtin_prefetch(&t->slots[dedup_home(dedup_fingerprint(hash), t->capacity)]);
	if (t->old)
		__builtin_prefetch(&t->old[dedup_home(dedup_fingerprint(hash), t->old_capacity)]);
}

/* Adds an entry (duplicates are the caller's business); a growth this
 * needs, and the migration step it takes, keep only the entries of day >=
 * day_min. 0 or -ENOMEM (the table is unchanged, but for the entries of
 * day < day_min a migration step may have dropped). */
int dedup_insert(dedup_table *t, uint64_t hash, uint16_t day, uint16_t day_min);

/*
 * Removes the entries of day < day_min found in slots [*cursor, *cursor +
 * slots) and sets *cursor past them; returns 1 once *cursor reached the
 * end of the table (the sweep is over), else 0. A sweep starts with
 * *cursor = 0. Run with nothing in between, the slices of one sweep leave
 * no entry older than day_min. Inserts in between may move an old entry
 * behind the cursor (a run that wraps past the table's end); it stays,
 * dead, until the next sweep. A growth in between leaves no old entry.
 */
int dedup_expire_slice(dedup_table *t, uint16_t day_min, uint32_t *cursor, uint32_t slots);
/* (While a migration lasts, a slice moves `slots` of old's slots instead,
 * dropping the entries of day < day_min, and the sweep of the grown table
 * starts once the migration is over: a tenant that stopped inserting
 * mid-migration gets its old table freed by the next expiry pass.) */

/* After a sweep: frees an empty table, and rebuilds one whose load fell
 * below DEDUP_LOAD_PERCENT_MIN at about 70% load, keeping the entries of
 * day >= day_min; nothing while a migration lasts. A successor prepared
 * for a growth is let go once the load is below DEDUP_PREPARE_PERCENT
 * again. 0 or -ENOMEM (the table is unchanged). */
int dedup_shrink(dedup_table *t, uint16_t day_min);

/* A whole sweep, then dedup_shrink. 0 or -ENOMEM (every old entry is
 * gone; the table was not shrunk). */
int dedup_expire(dedup_table *t, uint16_t day_min);

/* The longest distance of any entry of the (new) table from its home slot
 * (a health check: Robin Hood keeps it near log(count) for uniform
 * fingerprints). */
uint32_t dedup_probe_length_max(const dedup_table *t);

/* RAM held by the table's slots: both tables while a migration lasts, and
 * the pages of the next one faulted in so far. */
static inline size_t dedup_bytes(const dedup_table *t)
{
	return ((size_t)t->capacity + t->old_capacity) * sizeof(uint64_t) +
	       (size_t)t->next_faulted * 4096u; /* GROW_PAGE_BYTES */
}

#endif /* TALLY_DEDUP_H */
