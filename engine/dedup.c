/*
 * dedup.c — Robin Hood fingerprint table (see dedup.h for the promises).
 *
 * Invariants
 *   1. A slot is 0 (empty) or fp << 16 | day with fp in [1, 2^48).
 *   2. Robin Hood order: walking from an entry's home slot to the entry, no
 *      slot is empty, and an entry's probe distance never exceeds the
 *      distance its successor would have at the same slot; so a lookup stops
 *      at the first slot whose entry is closer to home than the probe.
 *   3. count < capacity, and count <= capacity * DEDUP_LOAD_PERCENT_MAX / 100
 *      after every insert, so probing always finds an empty slot. (count
 *      includes old's entries not yet moved: the new table holds fewer.)
 *   4. While a migration lasts, old is the table as it was when the growth
 *      began, but for the slots below `moved`, which are moved: invariants
 *      1 and 2 hold in it as they did then, so a lookup probes it as it
 *      would have, and reports only what it finds at slots >= moved. Moving
 *      goes in slot order, so an entry's slot alone says which table holds
 *      it. Nothing is written to old.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <xxhash.h>

#include "dedup.h"
#include "grow.h"
#include "tally_limits.h"

#define CAPACITY_MIN 8u

uint64_t dedup_hash(int kind, const uint8_t *packed, size_t size)
{
	return XXH3_64bits_withSeed(packed, size, (uint64_t)kind);
}

static inline uint32_t distance_of(uint32_t slot, uint32_t home, uint32_t capacity)
{
	return slot >= home ? slot - home : slot + capacity - home;
}

/* Slots for a table of `capacity`, all empty: a mapping of its own, whose
 * pages the kernel faults in as they are first written (prepare() does it
 * a page at a time). NULL when no mapping can be made. */
static uint64_t *slots_map(uint32_t capacity)
{
	return grow_map_new((size_t)capacity * sizeof(uint64_t));
}

/* Slots for a table of `capacity`, all empty: with `map`, a mapping
 * (slots_map); otherwise, or when no mapping can be made, malloc memory
 * faulted in now (grow_slots_alloc). *mapped says which, for
 * slots_release. NULL when memory ran out. */
static uint64_t *slots_alloc(uint32_t capacity, int map, uint8_t *mapped)
{
	uint64_t *slots = map ? slots_map(capacity) : NULL;
	*mapped = slots != NULL;
	return slots ? slots : grow_slots_alloc(capacity, sizeof(uint64_t));
}

static void slots_release(uint64_t *slots, uint32_t capacity, uint8_t mapped)
{
	if (mapped)
		munmap(slots, grow_map_bytes((size_t)capacity * sizeof(uint64_t)));
	else
		free(slots);
}

/* Pages of a table of `capacity` slots. */
static uint32_t pages_of(uint32_t capacity)
{
	return (uint32_t)(grow_map_bytes((size_t)capacity * sizeof(uint64_t)) / GROW_PAGE_BYTES);
}

/* Faults in the next table's pages [next_faulted, pages). */
static void next_fault(dedup_table *t, uint32_t pages)
{
	grow_map_fault(t->next, (size_t)t->next_capacity * sizeof(uint64_t), &t->next_faulted,
		       pages);
}

static void next_release(dedup_table *t)
{
	if (t->next)
		slots_release(t->next, t->next_capacity, t->next_mapped);
	t->next = NULL;
	t->next_capacity = 0;
	t->next_faulted = 0;
	t->next_mapped = 0;
}

void dedup_free(dedup_table *t)
{
	if (t->slots)
		slots_release(t->slots, t->capacity, t->mapped);
	if (t->old)
		slots_release(t->old, t->old_capacity, t->old_mapped);
	next_release(t);
	*t = (dedup_table){0};
}

/* Appends to days[found, days_max) the days of the entries of `slots`
 * (capacity slots, at `skip` and after) matching fp with day >= day_min,
 * and returns the new count. */
static size_t probe(const uint64_t *slots, uint32_t capacity, uint32_t skip, uint64_t fp,
		    uint16_t day_min, uint16_t *days, size_t found, size_t days_max)
{
	uint32_t slot = dedup_home(fp, capacity);
	for (uint32_t distance = 0; distance < capacity; distance++) {
		uint64_t entry = slots[slot];
		if (!entry)
			break;
		uint64_t entry_fp = entry >> 16;
		if (distance_of(slot, dedup_home(entry_fp, capacity), capacity) < distance)
			break;
		if (entry_fp == fp && (uint16_t)entry >= day_min && found < days_max &&
		    slot >= skip)
			days[found++] = (uint16_t)entry;
		slot = slot + 1 == capacity ? 0 : slot + 1;
	}
	return found;
}

size_t dedup_find(const dedup_table *t, uint64_t hash, uint16_t day_min, uint16_t *days,
		  size_t days_max)
{
	if (!t->count)
		return 0;
	uint64_t fp = dedup_fingerprint(hash);
	size_t found = probe(t->slots, t->capacity, 0, fp, day_min, days, 0, days_max);
	if (t->old)
		found = probe(t->old, t->old_capacity, t->moved, fp, day_min, days, found, days_max);
	return found;
}

/* Places an entry known to fit; no growth. */
static void place(uint64_t *slots, uint32_t capacity, uint64_t entry)
{
	uint32_t slot = dedup_home(entry >> 16, capacity);
	uint32_t distance = 0;
	for (;;) {
		uint64_t resident = slots[slot];
		if (!resident) {
			slots[slot] = entry;
			return;
		}
		uint32_t resident_distance =
			distance_of(slot, dedup_home(resident >> 16, capacity), capacity);
		if (resident_distance < distance) {
			slots[slot] = entry;
			entry = resident;
			distance = resident_distance;
		}
		slot = slot + 1 == capacity ? 0 : slot + 1;
		distance++;
	}
}

/*
 * Copies the entries of day >= day_min into a table of `capacity` slots.
 * The old table is in home order (invariant 2) from the slot after an
 * empty one, and the new home is monotone in the old, so the entries come
 * nearly sorted: one whose new home is at least every home placed so far
 * goes straight after the last one placed (or to its home, past it),
 * which is where Robin Hood order puts it, without probing the run it
 * joins. The rest take place(): an entry whose old home ties with the
 * previous one's but whose new home is smaller, one that would pass the
 * table's end, and the entries before the first empty slot (runs that
 * wrapped there), placed last.
 */
static uint32_t rebuild_copy(uint64_t *slots, uint32_t capacity, const dedup_table *t,
			     uint16_t day_min)
{
	uint32_t first_empty = 0;
	while (t->slots[first_empty])
		first_empty++; /* there is one: invariant 3 */
	uint32_t count = 0;
	uint32_t home_max = 0, end = 0; /* slots [.., end) hold the straight-placed run */
	for (uint32_t i = first_empty + 1; i < t->capacity; i++) {
		uint64_t entry = t->slots[i];
		if (!entry || (uint16_t)entry < day_min)
			continue;
		count++;
		uint32_t home = dedup_home(entry >> 16, capacity);
		uint32_t at = home > end ? home : end;
		if (home < home_max || at >= capacity) {
			place(slots, capacity, entry);
			while (end < capacity && slots[end])
				end++; /* place() may have pushed the run's end on */
			continue;
		}
		slots[at] = entry;
		home_max = home;
		end = at + 1;
	}
	for (uint32_t i = 0; i < first_empty; i++) {
		uint64_t entry = t->slots[i];
		if (entry && (uint16_t)entry >= day_min) {
			place(slots, capacity, entry);
			count++;
		}
	}
	return count;
}

/* The table, copied at once into one of `capacity` slots (no migration in
 * progress). */
static int rebuild(dedup_table *t, uint32_t capacity, uint16_t day_min)
{
	assert(!t->old);
	uint8_t mapped;
	uint64_t *slots = slots_alloc(capacity, 0, &mapped);
	if (!slots)
		return -ENOMEM;
	uint32_t count = t->slots ? rebuild_copy(slots, capacity, t, day_min) : 0;
	if (t->slots)
		slots_release(t->slots, t->capacity, t->mapped);
	next_release(t); /* made for the capacity before */
	t->slots = slots;
	t->capacity = capacity;
	t->count = count;
	t->mapped = mapped;
	return 0;
}

/* Moves old's next `slots` slots into the new table, dropping the entries
 * of day < day_min; frees old once every slot is moved. */
static void migrate(dedup_table *t, uint32_t slots, uint16_t day_min)
{
	uint32_t end = t->old_capacity - t->moved > slots ? t->moved + slots : t->old_capacity;
	for (uint32_t i = t->moved; i < end; i++) {
		uint64_t entry = t->old[i];
		if (!entry)
			continue;
		if ((uint16_t)entry < day_min)
			t->count--;
		else
			place(t->slots, t->capacity, entry);
	}
	t->moved = end;
	if (end == t->old_capacity) {
		slots_release(t->old, t->old_capacity, t->old_mapped);
		t->old = NULL;
		t->old_capacity = 0;
		t->old_mapped = 0;
		t->moved = 0;
	}
}

/* Grows the table to `capacity` slots: at once when it is small, else by
 * starting a migration (finishing the one before, if any: at the rates
 * above it is long over by then). */
static int grow(dedup_table *t, uint32_t capacity, uint16_t day_min)
{
	if (t->capacity < DEDUP_MIGRATE_SLOTS_MIN)
		return rebuild(t, capacity, day_min);
	if (t->old)
		migrate(t, UINT32_MAX, day_min);
	if (t->next && t->next_capacity != capacity)
		next_release(t);
	if (!t->next) { /* not prepared (the mapping failed then): made now */
		t->next = slots_alloc(capacity, 1, &t->next_mapped);
		if (!t->next)
			return -ENOMEM;
		t->next_capacity = capacity;
	}
	next_fault(t, UINT32_MAX);
	uint64_t *slots = t->next;
	uint8_t mapped = t->next_mapped;
	t->next = NULL;
	t->next_capacity = 0;
	t->next_faulted = 0;
	t->next_mapped = 0;
	t->old = t->slots;
	t->old_capacity = t->capacity;
	t->old_mapped = t->mapped;
	t->moved = 0;
	t->slots = slots;
	t->capacity = capacity;
	t->mapped = mapped;
	return 0;
}

/* Past DEDUP_PREPARE_PERCENT load, a migrating table's successor is made
 * (empty, a mapping) and faulted in, its pages in step with the load, so
 * that the growth finds it ready: from 80% to 85% load there are 0.05 *
 * capacity inserts, and it has 0.003 * capacity pages (one every 17
 * inserts). A mapping that cannot be made is tried again by the next
 * insert, and at last by the growth. */
static void prepare(dedup_table *t)
{
	if (t->capacity < DEDUP_MIGRATE_SLOTS_MIN || t->old)
		return;
	if (!t->next) {
		uint64_t capacity = (uint64_t)t->capacity * 3 / 2;
		if ((uint64_t)t->count * 100 < (uint64_t)t->capacity * DEDUP_PREPARE_PERCENT ||
		    capacity > UINT32_MAX)
			return;
		/* A mapping, or nothing: malloc memory would come faulted in
		 * at once, the stall this avoids. */
		if (!(t->next = slots_map((uint32_t)capacity)))
			return;
		t->next_capacity = (uint32_t)capacity;
		t->next_mapped = 1;
	}
	/* Pages in proportion to the way from DEDUP_PREPARE_PERCENT to
	 * DEDUP_LOAD_PERCENT_MAX, one ahead. */
	uint64_t load = (uint64_t)t->count * 100, from = (uint64_t)t->capacity * DEDUP_PREPARE_PERCENT;
	uint64_t way = (uint64_t)t->capacity * (DEDUP_LOAD_PERCENT_MAX - DEDUP_PREPARE_PERCENT);
	uint64_t pages = load > from ? pages_of(t->next_capacity) * (load - from) / way + 1 : 1;
	next_fault(t, pages < UINT32_MAX ? (uint32_t)pages : UINT32_MAX);
}

int dedup_insert(dedup_table *t, uint64_t hash, uint16_t day, uint16_t day_min)
{
	if (t->old)
		migrate(t, DEDUP_MIGRATE_STEP_SLOTS, day_min);
	else
		prepare(t);
	if ((uint64_t)(t->count + 1) * 100 > (uint64_t)t->capacity * DEDUP_LOAD_PERCENT_MAX) {
		uint64_t capacity = t->capacity < CAPACITY_MIN ? CAPACITY_MIN
							     : (uint64_t)t->capacity * 3 / 2;
		if (capacity > UINT32_MAX)
			return -ENOMEM;
		int rc = grow(t, (uint32_t)capacity, day_min);
		if (rc)
			return rc;
	}
	place(t->slots, t->capacity, dedup_fingerprint(hash) << 16 | day);
	t->count++;
	assert(t->count < t->capacity);
	return 0;
}

/*
 * Backward-shift deletion: empties `slot` and moves each entry of the run
 * after it that is not at its home one slot back, until an empty slot or
 * an entry at its home ends the run. Robin Hood order (invariant 2) holds
 * after it, and no entry passes its home.
 */
static void remove_at(uint64_t *slots, uint32_t capacity, uint32_t slot)
{
	for (;;) {
		uint32_t next = slot + 1 == capacity ? 0 : slot + 1;
		uint64_t entry = slots[next];
		if (!entry || dedup_home(entry >> 16, capacity) == next) {
			slots[slot] = 0;
			return;
		}
		slots[slot] = entry;
		slot = next;
	}
}

/*
 * A removal at slot i moves entries from slot j to j - 1 >= i (past the
 * table's end, from slot 0 to the last): never behind the sweep, so
 * re-reading slot i until it holds a live entry or none misses nothing.
 */
int dedup_expire_slice(dedup_table *t, uint16_t day_min, uint32_t *cursor, uint32_t slots)
{
	if (t->old) { /* the migration first: it drops old's expired entries itself */
		migrate(t, slots, day_min);
		return 0;
	}
	uint32_t end = *cursor < t->capacity && slots < t->capacity - *cursor ? *cursor + slots
									       : t->capacity;
	for (uint32_t i = *cursor; i < end; i++)
		while (t->slots[i] && (uint16_t)t->slots[i] < day_min) {
			remove_at(t->slots, t->capacity, i);
			t->count--;
		}
	if (*cursor < end)
		*cursor = end;
	return *cursor >= t->capacity;
}

int dedup_shrink(dedup_table *t, uint16_t day_min)
{
	if (!t->count) {
		dedup_free(t);
		return 0;
	}
	/* A successor prepared for a growth the sweep put off: let it go. */
	if ((uint64_t)t->count * 100 < (uint64_t)t->capacity * DEDUP_PREPARE_PERCENT)
		next_release(t);
	if (t->old || t->capacity <= CAPACITY_MIN ||
	    (uint64_t)t->count * 100 >= (uint64_t)t->capacity * DEDUP_LOAD_PERCENT_MIN)
		return 0;
	/* ~70% load, so the next inserts do not grow it at once. */
	uint64_t capacity = (uint64_t)t->count * 10 / 7 + 1;
	return rebuild(t, capacity < CAPACITY_MIN ? CAPACITY_MIN : (uint32_t)capacity, day_min);
}

int dedup_expire(dedup_table *t, uint16_t day_min)
{
	uint32_t cursor = 0;
	while (!dedup_expire_slice(t, day_min, &cursor, DEDUP_EXPIRY_STEP_SLOTS))
		;
	return dedup_shrink(t, day_min);
}

uint32_t dedup_probe_length_max(const dedup_table *t)
{
	uint32_t longest = 0;
	for (uint32_t slot = 0; slot < t->capacity; slot++) {
		uint64_t entry = t->slots[slot];
		if (!entry)
			continue;
		uint32_t d = distance_of(slot, dedup_home(entry >> 16, t->capacity), t->capacity);
		if (d > longest)
			longest = d;
	}
	return longest;
}
