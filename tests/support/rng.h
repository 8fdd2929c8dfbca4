/*
 * rng.h — seeded randomness for property tests: splitmix64, seeded by $SEED
 * or, when it is unset, by the clock; the seed is printed as
 * "<program> seed=N (<test>)" so a failure replays with SEED=N.
 */
#ifndef TALLY_TEST_RNG_H
#define TALLY_TEST_RNG_H

#include <stdint.h>

typedef struct test_rng {
	uint64_t state;
} test_rng;

static inline uint64_t test_rng_next(test_rng *r)
{
	uint64_t z = (r->state += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Uniform enough in [0, n) for tests; 0 when n is 0. */
static inline uint64_t test_rng_below(test_rng *r, uint64_t n)
{
	return n ? test_rng_next(r) % n : 0;
}

/* Seeds r from $SEED or, when it is unset or empty (make exports it
 * empty: before 2026-12-03 every such test ran with seed 0 under make),
 * the clock, and prints the seed. */
void test_rng_seed(test_rng *r, const char *program, const char *test);

#endif /* TALLY_TEST_RNG_H */
