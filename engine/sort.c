/*
 * sort.c — sort_pairs (sort.h): insertion sort for short arrays, LSD radix
 * sort by bytes for long ones.
 */
#include "sort.h"

#include <string.h>

static void insertion_sort(sort_pair *a, uint32_t n)
{
	for (uint32_t i = 1; i < n; i++) {
		sort_pair p = a[i];
		uint32_t j = i;
		while (j > 0 && a[j - 1].key > p.key) { /* strict: equal keys stay in order */
			a[j] = a[j - 1];
			j--;
		}
		a[j] = p;
	}
}

void sort_pairs(sort_pair *a, sort_pair *tmp, uint32_t n)
{
	if (n < 2)
		return;
	if (n <= SORT_INSERTION_MAX) {
		insertion_sort(a, n);
		return;
	}
	uint64_t varies = 0;
	for (uint32_t i = 1; i < n; i++)
		varies |= a[i].key ^ a[0].key;
	sort_pair *from = a, *to = tmp;
	for (unsigned shift = 0; shift < 64; shift += 8) {
		if (!((varies >> shift) & 0xff))
			continue; /* every key has the same byte here */
		uint32_t count[257] = { 0 };
		for (uint32_t i = 0; i < n; i++)
			count[((from[i].key >> shift) & 0xff) + 1]++;
		for (int b = 0; b < 256; b++)
			count[b + 1] += count[b];
		for (uint32_t i = 0; i < n; i++)
			to[count[(from[i].key >> shift) & 0xff]++] = from[i];
		sort_pair *swap = from;
		from = to;
		to = swap;
	}
	if (from != a)
		memcpy(a, from, sizeof(*a) * n);
}
