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
#include <string.h>
#include <sys/mman.h>

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

/* The smallest page size: the stride of grow_slots_alloc's writes, and the
 * unit of a mapping. */
#define GROW_PAGE_BYTES 4096u

/* A mapping's size for `bytes`: whole pages. */
static inline size_t grow_map_bytes(size_t bytes)
{
	return (bytes + GROW_PAGE_BYTES - 1) / GROW_PAGE_BYTES * GROW_PAGE_BYTES;
}

/* A mapping of its own of `bytes` (whole pages), all zero, whose pages the
 * kernel faults in as they are first written; NULL when none can be made
 * (vm.max_map_count, or memory). Free with munmap(p, grow_map_bytes(bytes)). */
static inline void *grow_map_new(size_t bytes)
{
	void *p = mmap(NULL, grow_map_bytes(bytes), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* Faults in pages [*faulted, pages) of grow_map_new(bytes) memory ahead of
 * its use, a write of 0 to each (its content stays zero), and advances
 * *faulted; pages past the mapping's end are left out. */
static inline void grow_map_fault(void *p, size_t bytes, uint32_t *faulted, uint32_t pages)
{
	size_t all = grow_map_bytes(bytes) / GROW_PAGE_BYTES;
	if (pages > all)
		pages = (uint32_t)all;
	for (; *faulted < pages; (*faulted)++)
		((volatile char *)p)[(size_t)*faulted * GROW_PAGE_BYTES] = 0;
}

/*
 * Grows an array of `old_bytes` to `new_bytes`, keeping its first `used`
 * bytes. With `map`, it becomes (or stays) a mapping of its own, grown by
 * mremap: the kernel moves the pages and nothing is copied (a large
 * memtable's arrays grew under the store lock by copying:
 * docs/benchmarks.md, twenty-ninth and thirty-first measurements). When no
 * mapping can be made (vm.max_map_count) or without `map`, it is malloc
 * memory grown by realloc. *mapped says which *array is (0 for NULL), for
 * grow_array_free. 0, or -ENOMEM with the array unchanged.
 */
static inline int grow_array(void **array, size_t old_bytes, size_t new_bytes, size_t used,
			     int map, uint8_t *mapped)
{
	if (map) {
		void *p = *mapped ? mremap(*array, grow_map_bytes(old_bytes),
					   grow_map_bytes(new_bytes), MREMAP_MAYMOVE)
				  : grow_map_new(new_bytes);
		if (p && p != MAP_FAILED) {
			if (!*mapped) {
				if (used)
					memcpy(p, *array, used);
				free(*array);
			}
			*array = p;
			*mapped = 1;
			return 0;
		}
	}
	if (*mapped) {
		void *p = malloc(new_bytes);
		if (!p)
			return -ENOMEM;
		memcpy(p, *array, used);
		munmap(*array, grow_map_bytes(old_bytes));
		*array = p;
		*mapped = 0;
		return 0;
	}
	void *p = realloc(*array, new_bytes);
	if (!p)
		return -ENOMEM;
	*array = p;
	return 0;
}

/* Frees an array grown by grow_array (bytes: its size). */
static inline void grow_array_free(void *array, size_t bytes, uint8_t mapped)
{
	if (mapped)
		munmap(array, grow_map_bytes(bytes));
	else
		free(array);
}


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
