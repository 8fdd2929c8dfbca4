/*
 * test_sort.c — Description: sort_pairs orders pairs by key and keeps equal
 * keys in their input order, for every length around the switch from
 * insertion sort to radix sort and for keys that vary in one byte, in some
 * bytes, or in all eight. The oracle is qsort by (key, input position).
 *
 * Randomness comes from support/rng.h; the test prints "test_sort seed=N"
 * so a failure replays with SEED=N build/tests/test_sort.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sort.h"
#include "support/rng.h"

static int by_key_then_position(const void *a, const void *b)
{
	const sort_pair *x = a, *y = b;
	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	return x->value < y->value ? -1 : x->value > y->value; /* value = input position */
}

/* A key of the given shape: 0 few distinct values (many ties), 1 the low
 * two bytes, 2 bytes 3 and 5 only (skipped bytes between passes), 3 any. */
static uint64_t key_of_shape(test_rng *rng, int shape)
{
	switch (shape) {
	case 0: return UINT64_C(0x1234) << 40 | test_rng_below(rng, 4);
	case 1: return UINT64_C(0xabcdef) << 32 | test_rng_below(rng, 1u << 16);
	case 2: return test_rng_below(rng, 256) << 24 | test_rng_below(rng, 256) << 40 | 7;
	default: return test_rng_next(rng);
	}
}

Test(sort, sorts_by_key_and_keeps_ties_in_input_order)
{
	test_rng rng;
	test_rng_seed(&rng, "test_sort", "sorts_by_key_and_keeps_ties_in_input_order");
	enum { N_MAX = 3000 };
	sort_pair *a = malloc(sizeof(*a) * N_MAX);
	sort_pair *tmp = malloc(sizeof(*tmp) * N_MAX);
	sort_pair *oracle = malloc(sizeof(*oracle) * N_MAX);
	cr_assert(a && tmp && oracle);
	for (int round = 0; round < 2000; round++) {
		/* Half the rounds near the insertion/radix boundary. */
		uint32_t n = round % 2 ? (uint32_t)test_rng_below(&rng, 2 * SORT_INSERTION_MAX + 2)
				       : (uint32_t)test_rng_below(&rng, N_MAX + 1);
		int shape = (int)test_rng_below(&rng, 4);
		for (uint32_t i = 0; i < n; i++)
			a[i] = (sort_pair){key_of_shape(&rng, shape), i};
		for (uint32_t i = 0; i < n; i++)
			tmp[i] = (sort_pair){test_rng_next(&rng), test_rng_next(&rng)}; /* scratch */
		if (n)
			memcpy(oracle, a, sizeof(*a) * n);
		qsort(oracle, n, sizeof(*oracle), by_key_then_position);
		sort_pairs(a, tmp, n);
		for (uint32_t i = 0; i < n; i++)
			cr_assert(a[i].key == oracle[i].key && a[i].value == oracle[i].value,
				  "round %d (n %u, shape %d): position %u holds (%llx, %llu), "
				  "expected (%llx, %llu)", round, n, shape, i,
				  (unsigned long long)a[i].key, (unsigned long long)a[i].value,
				  (unsigned long long)oracle[i].key,
				  (unsigned long long)oracle[i].value);
	}
	free(a);
	free(tmp);
	free(oracle);
}

Test(sort, exact_lengths_at_the_switch)
{
	/* Descending keys with ties at n = SORT_INSERTION_MAX - 1 .. + 2: the
	 * result is ascending, ties by input position. */
	for (uint32_t n = SORT_INSERTION_MAX - 1; n <= SORT_INSERTION_MAX + 2; n++) {
		sort_pair a[SORT_INSERTION_MAX + 2], tmp[SORT_INSERTION_MAX + 2];
		for (uint32_t i = 0; i < n; i++)
			a[i] = (sort_pair){(uint64_t)(n - i) / 2 << 16, i};
		sort_pairs(a, tmp, n);
		for (uint32_t i = 1; i < n; i++) {
			cr_assert_leq(a[i - 1].key, a[i].key, "n %u at %u", n, i);
			if (a[i - 1].key == a[i].key)
				cr_assert_lt(a[i - 1].value, a[i].value, "n %u at %u: tie order", n, i);
		}
	}
}
