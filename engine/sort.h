/*
 * sort.h — a stable sort of (u64 key, u64 value) pairs by key, for the
 * flush's sorts (a tenant's rows by time, rollup cells by bucket and
 * group, days).
 *
 * Flushes sort thousands of small arrays (one per tenant section, most of
 * a few dozen entries) and a few large ones. A radix pass costs a 257-entry
 * count table however small the array, so short arrays get an insertion
 * sort and long ones a least-significant-byte-first radix sort that skips
 * the bytes every key shares (keys relative to their minimum vary in two
 * to five bytes). Both are stable: equal keys keep their input order.
 */
#ifndef TALLY_SORT_H
#define TALLY_SORT_H

#include <stdint.h>

typedef struct sort_pair {
	uint64_t key;
	uint64_t value;
} sort_pair;

/* Arrays up to this long are insertion sorted (measured: docs/benchmarks.md). */
#define SORT_INSERTION_MAX 48u

/* Sorts a[0, n) by key, stably; tmp has room for n pairs (its contents
 * are scratch). The result is in a. */
void sort_pairs(sort_pair *a, sort_pair *tmp, uint32_t n);

#endif /* TALLY_SORT_H */
