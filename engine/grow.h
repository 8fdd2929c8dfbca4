/*
 * grow.h — the growth steps every in-memory table of the engine takes:
 * doubling an array, allocating the slots of an open-addressing table, and
 * rebuilding an open-addressing index of positions.
 */
#ifndef TALLY_GROW_H
#define TALLY_GROW_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/*
 * Makes room for one more item when count == *capacity: the capacity
 * doubles (from `first`). 0, or -ENOMEM with *array and *capacity unchanged.
 */
static inline int grow_for_one(void **array, uint32_t *capacity, uint32_t count, uint32_t first,
			       size_t element)
{
	if (count < *capacity)
		return 0;
	uint32_t next = *capacity ? *capacity * 2 : first;
	void *grown = realloc(*array, element * next);
	if (!grown)
		return -ENOMEM;
	*array = grown;
	*capacity = next;
	return 0;
}

/* The stride of grow_slots_alloc's writes: the smallest page size. */
#define GROW_PAGE_BYTES 4096u

/*
 * calloc(count, size) for the slots of an open-addressing table, with one
 * write per page. A large calloc is fresh mmap memory; a table is probed
 * (read) before it is written, so each page is first mapped to the
 * kernel's shared zero page and faults again on its first write, and that
 * second fault flushes the TLB of every CPU running another thread of the
 * process (an interprocessor interrupt). Writing every page first maps it
 * writable at once. malloc + memset would not do: GCC folds it into
 * calloc. docs/benchmarks.md, eighteenth measurement.
 */
static inline void *grow_slots_alloc(size_t count, size_t size)
{
	char *p = calloc(count, size);
	if (p)
		for (size_t at = 0; at < count * size; at += GROW_PAGE_BYTES)
			((volatile char *)p)[at] = 0;
	return p;
}

/*
 * Rebuilds an open-addressing index (linear probing) of `slot_count` slots
 * (a power of two) over items 0..n-1: slot = position + 1, 0 = empty, home
 * slot hash(ctx, i) & (slot_count - 1). Replaces *slots and *mask. 0, or
 * -ENOMEM with the old index kept.
 */
static inline int index_rebuild(uint32_t **slots, uint32_t *mask, uint32_t slot_count, uint32_t n,
				uint64_t (*hash)(const void *ctx, uint32_t i), const void *ctx)
{
	uint32_t *table = grow_slots_alloc(slot_count, sizeof(*table));
	if (!table)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t k = (uint32_t)hash(ctx, i) & (slot_count - 1);
		while (table[k])
			k = (k + 1) & (slot_count - 1);
		table[k] = i + 1;
	}
	free(*slots);
	*slots = table;
	*mask = slot_count - 1;
	return 0;
}

#endif /* TALLY_GROW_H */
