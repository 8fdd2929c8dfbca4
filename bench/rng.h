/*
 * rng.h — the benchmark's deterministic pseudo-random numbers.
 *
 * xoshiro256** (Blackman and Vigna), seeded through splitmix64, so one
 * 64-bit seed fixes every draw. Each aspect of the workload (times, event
 * fields, tenant profiles, late delivery, re-sends) has its own stream,
 * derived from the seed and a stream number, so changing how one aspect is
 * drawn does not shift the others.
 *
 * Integer draws use integer arithmetic only. The continuous draws (uniform
 * doubles, normal and lognormal variates) use double; they are exactly
 * reproducible on one platform and libm, which is what a benchmark needs.
 * Nothing stored as money is ever computed from a double.
 */
#ifndef TALLY_BENCH_RNG_H
#define TALLY_BENCH_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct rng {
	uint64_t s[4];
} rng;

/* splitmix64: advances *state and returns the next output. */
static inline uint64_t rng_splitmix64(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Seeds stream number `stream` of `seed`. Never yields the all-zero state
 * (splitmix64 outputs four zeros in a row for no input). */
static inline void rng_seed(rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t state = seed ^ (stream * UINT64_C(0xd1342543de82ef95));
	for (int i = 0; i < 4; i++)
		r->s[i] = rng_splitmix64(&state);
}

static inline uint64_t rng_rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

/* xoshiro256**: the next 64 random bits. */
static inline uint64_t rng_next(rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rng_rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rng_rotl(s[3], 45);
	return result;
}

/* Uniform in [0, n) for 1 <= n <= 2^32 (multiply-shift on the top 32 bits;
 * the bias is below 2^-32 * n, far under anything the workload can show). */
static inline uint32_t rng_below(rng *r, uint64_t n)
{
	return (uint32_t)(((rng_next(r) >> 32) * n) >> 32);
}

/* Uniform in [0, n) for any n >= 1 (modulo; bias below n / 2^64). */
static inline uint64_t rng_below64(rng *r, uint64_t n)
{
	return rng_next(r) % n;
}

/* Uniform double in [0, 1), 53 random bits. */
static inline double rng_unit(rng *r)
{
	return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* Standard normal variate (Marsaglia's polar method; the second variate of
 * each pair is dropped to keep the generator stateless). */
static inline double rng_normal(rng *r)
{
	for (;;) {
		double u = 2.0 * rng_unit(r) - 1.0;
		double v = 2.0 * rng_unit(r) - 1.0;
		double s = u * u + v * v;
		if (s > 0.0 && s < 1.0)
			return u * sqrt(-2.0 * log(s) / s);
	}
}

/* Lognormal variate with the given median and sigma of the underlying
 * normal: median * exp(sigma * Z). */
static inline double rng_lognormal(rng *r, double median, double sigma)
{
	return median * exp(sigma * rng_normal(r));
}

#endif /* TALLY_BENCH_RNG_H */
