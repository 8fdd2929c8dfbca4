/*
 * test_sketch.c — the duration histogram and the distinct-user set.
 *
 * Description: dd_index is checked against boundaries computed here
 * independently in long double (g = 101/99 exactly): every duration in
 * 1..2,000,000, a random sample over the whole uint32 range, and the
 * integers on both sides of every bucket boundary must land in the bucket
 * whose range (g^(i-2), g^(i-1)] holds them, with dd_value within 1% and
 * indices non-decreasing. Quantiles are compared with a sorted array (the
 * brute-force oracle) for many random data sets; merges must give
 * byte-equal accumulators whatever the order. The user set must count
 * exactly up to USET_EXACT_MAX, turn dense on the next distinct hash, and
 * estimate within 2% from 10k to 5M users; every merge of exact and dense
 * sets must give the registers of the union built directly.
 *
 * Randomness: splitmix64 from $SEED (decimal or 0x-hex), else the clock;
 * every property test prints "test_sketch <test> seed=N", and
 * SEED=N build/tests/test_sketch replays it.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sketch.h"

/* ---- seeded randomness ------------------------------------------------------ */

static uint64_t seed_get(const char *test)
{
	const char *env = getenv("SEED");
	uint64_t seed;
	if (env && *env) {
		seed = strtoull(env, NULL, 0);
	} else {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		seed = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
		seed ^= (uint64_t)getpid() << 32;
	}
	fprintf(stderr, "test_sketch %s seed=%" PRIu64 "\n", test, seed);
	return seed;
}

static uint64_t splitmix(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, bound), bound > 0 (the tiny modulo bias does not matter). */
static uint64_t random_below(uint64_t *state, uint64_t bound)
{
	return splitmix(state) % bound;
}

/* A duration spread evenly over the log scale: 2^e + random low bits. */
static uint32_t random_duration_log(uint64_t *state)
{
	uint32_t e = (uint32_t)random_below(state, 32);
	uint32_t base = (uint32_t)1 << e;
	return base + (uint32_t)random_below(state, base);
}

/* ---- duration buckets ------------------------------------------------------ */

/* power[i] = g^(i - 2) for i in [0, DD_INDEX_MAX + 1]: bucket i >= 1 is
 * (power[i], power[i + 1]], with g = 101/99 exactly (not the double). */
static long double power[DD_INDEX_MAX + 2];

static void powers_fill(void)
{
	const long double g = 101.0L / 99.0L;
	for (int i = 0; i < DD_INDEX_MAX + 2; i++)
		power[i] = powl(g, (long double)(i - 2));
}

/*
 * Checks one duration: in range, in the bucket whose bounds hold it, equal
 * to 1 + ceil(log x / log g) evaluated in long double, with dd_value within
 * 1%. Returns the index. values[i] caches dd_value(i).
 */
static uint16_t check_duration(uint32_t x, const double *values)
{
	uint16_t i = dd_index(x);
	if (x == 0) {
		if (i != 0)
			cr_assert_fail("dd_index(0) = %u", i);
		return i;
	}
	if (i < 1 || i >= DD_INDEX_MAX)
		cr_assert_fail("dd_index(%" PRIu32 ") = %u out of [1, %d)", x, i, DD_INDEX_MAX);
	if (!(power[i] < (long double)x && (long double)x <= power[i + 1]))
		cr_assert_fail("dd_index(%" PRIu32 ") = %u but bucket %u is (%.6Lf, %.6Lf]", x, i, i, power[i],
			       power[i + 1]);
	long double formula = 1.0L + ceill(logl((long double)x) / logl(101.0L / 99.0L));
	if (formula != (long double)i)
		cr_assert_fail("dd_index(%" PRIu32 ") = %u, 1 + ceil(log x / log g) = %.0Lf", x, i, formula);
	double v = values[i];
	if (!(fabs(v - (double)x) <= 0.01 * (double)x))
		cr_assert_fail("dd_value(dd_index(%" PRIu32 ")) = %.17g: relative error %.17g > 0.01", x, v,
			       fabs(v - (double)x) / (double)x);
	return i;
}

static double *values_new(void)
{
	double *values = malloc(sizeof(*values) * DD_INDEX_MAX);
	cr_assert_not_null(values);
	for (int i = 0; i < DD_INDEX_MAX; i++)
		values[i] = dd_value((uint16_t)i);
	return values;
}

Test(dd, index_pins_specific_values)
{
	cr_assert_eq(dd_index(0), 0);
	cr_assert_eq(dd_index(1), 1);
	cr_assert_eq(dd_index(2), 36);
	cr_assert_eq(dd_index(3), 56);
	cr_assert_eq(dd_index(1000), 347);
	cr_assert_eq(dd_index(1000000), 692);
	cr_assert_eq(dd_index(2147483648u), 1076);
	cr_assert_eq(dd_index(UINT32_MAX), 1110);
	cr_assert_lt(dd_index(UINT32_MAX), DD_INDEX_MAX);
	/* The tightest boundary below 2^32: g^1080 = 2404769859.003..., so
	 * 2404769859 is the last duration of bucket 1081. */
	cr_assert_eq(dd_index(2404769859u), 1081);
	cr_assert_eq(dd_index(2404769860u), 1082);
}

Test(dd, value_pins_representatives)
{
	const double g = (1.0 + DD_RELATIVE_ACCURACY) / (1.0 - DD_RELATIVE_ACCURACY);
	cr_assert_eq(dd_value(0), 0.0);
	cr_assert_eq(dd_value(1), 2.0 / (g + 1.0));
	cr_assert_eq(dd_value(1), 0.9900000000000001); /* one ulp above the double 0.99 */
	cr_assert_eq(dd_value(2), 2.0 * g / (g + 1.0));
	for (uint16_t i = 1; i + 1 < DD_INDEX_MAX; i++) {
		double ratio = dd_value((uint16_t)(i + 1)) / dd_value(i);
		cr_assert(fabs(ratio - g) <= 1e-12, "dd_value(%u) / dd_value(%u) = %.17g", i + 1, i, ratio);
	}
}

Test(dd, every_duration_up_to_2m_is_in_its_bucket_within_1_percent)
{
	powers_fill();
	double *values = values_new();
	uint16_t previous = check_duration(0, values);
	for (uint32_t x = 1; x <= 2000000; x++) {
		uint16_t i = check_duration(x, values);
		if (i < previous)
			cr_assert_fail("dd_index(%" PRIu32 ") = %u < dd_index(%" PRIu32 ") = %u", x, i, x - 1, previous);
		previous = i;
	}
	free(values);
}

static int compare_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

Test(dd, random_durations_and_every_boundary_up_to_uint32_max)
{
	uint64_t state = seed_get("dd.random_durations_and_every_boundary_up_to_uint32_max");
	powers_fill();
	double *values = values_new();
	enum { RANDOM = 1000000, NEAR = 4 * DD_INDEX_MAX };
	uint32_t *xs = malloc(sizeof(*xs) * (RANDOM + NEAR + 2));
	cr_assert_not_null(xs);
	size_t n = 0;
	for (size_t k = 0; k < RANDOM; k++)
		xs[n++] = (k & 1) ? (uint32_t)splitmix(&state) : random_duration_log(&state);
	/* floor(g^k) - 1 .. floor(g^k) + 2: both sides of every boundary. */
	for (int i = 2; i < DD_INDEX_MAX + 2; i++) {
		long double whole = floorl(power[i]);
		for (int d = -1; d <= 2; d++)
			if (whole + d >= 0 && whole + d <= (long double)UINT32_MAX)
				xs[n++] = (uint32_t)(whole + d);
	}
	xs[n++] = UINT32_MAX;
	xs[n++] = UINT32_MAX - 1;
	qsort(xs, n, sizeof(*xs), compare_u32);
	uint16_t previous = 0;
	for (size_t k = 0; k < n; k++) {
		uint16_t i = check_duration(xs[k], values);
		if (i < previous)
			cr_assert_fail("dd_index(%" PRIu32 ") = %u < %u of a smaller duration", xs[k], i, previous);
		previous = i;
	}
	free(xs);
	free(values);
}

/* ---- dd_acc ----------------------------------------------------------------- */

static uint64_t rank_of(double q, uint64_t n)
{
	return (uint64_t)floor(q * (double)(n - 1));
}

static void acc_assert_equal(const dd_acc *a, const dd_acc *b, const char *what)
{
	cr_assert_eq(a->lo, b->lo, "%s: lo %u vs %u", what, a->lo, b->lo);
	cr_assert_eq(a->hi, b->hi, "%s: hi %u vs %u", what, a->hi, b->hi);
	cr_assert_eq(a->total, b->total, "%s: total", what);
	cr_assert_eq(memcmp(a->counts, b->counts, sizeof(uint64_t) * (a->hi - a->lo)), 0,
		     "%s: counts differ", what);
}

Test(dd_acc, empty_count_zero_and_clamping)
{
	dd_acc acc = {0};
	cr_assert_eq(dd_acc_quantile(&acc, 0.5), 0.0);
	cr_assert_eq(dd_acc_add(&acc, 500, 0), 0);
	cr_assert_null(acc.counts, "count 0 is a no-op");
	cr_assert_eq(acc.total, 0);
	cr_assert_eq(dd_acc_quantile(&acc, 1.0), 0.0);

	cr_assert_eq(dd_acc_add(&acc, 10, 3), 0);
	cr_assert_eq(dd_acc_add(&acc, 20, 1), 0);
	cr_assert_eq(acc.lo, 0);
	cr_assert_eq(acc.hi, 64);
	cr_assert_eq(acc.total, 4);
	cr_assert_eq(dd_acc_quantile(&acc, 0.0), dd_value(10));
	cr_assert_eq(dd_acc_quantile(&acc, 0.5), dd_value(10)); /* rank floor(1.5) = 1 */
	cr_assert_eq(dd_acc_quantile(&acc, 0.7), dd_value(10)); /* rank 2 */
	cr_assert_eq(dd_acc_quantile(&acc, 0.99), dd_value(10)); /* rank floor(2.97) = 2 */
	cr_assert_eq(dd_acc_quantile(&acc, 1.0), dd_value(20)); /* rank 3 */
	cr_assert_eq(dd_acc_quantile(&acc, -0.5), dd_value(10));
	cr_assert_eq(dd_acc_quantile(&acc, 7.0), dd_value(20));
	cr_assert_eq(dd_acc_quantile(&acc, NAN), dd_value(10));

	cr_assert_eq(dd_acc_add(&acc, 1100, 2), 0);
	cr_assert_eq(acc.lo, 0);
	cr_assert_eq(acc.hi, 1152, "ranges are widened to multiples of 64");
	cr_assert_eq(acc.counts[1100], 2);
	cr_assert_eq(acc.counts[10], 3);
	cr_assert_eq(dd_acc_quantile(&acc, 1.0), dd_value(1100));
	dd_acc_free(&acc);
	cr_assert_null(acc.counts);
	cr_assert_eq(acc.total, 0);

	/* A lone zero duration. */
	cr_assert_eq(dd_acc_add(&acc, dd_index(0), 1), 0);
	cr_assert_eq(dd_acc_quantile(&acc, 0.5), 0.0);
	dd_acc_free(&acc);

	/* Growing downwards keeps the counts. */
	cr_assert_eq(dd_acc_add(&acc, 900, 5), 0);
	cr_assert_eq(acc.lo, 896);
	cr_assert_eq(acc.hi, 960);
	cr_assert_eq(dd_acc_add(&acc, 3, 1), 0);
	cr_assert_eq(acc.lo, 0);
	cr_assert_eq(acc.hi, 960);
	cr_assert_eq(acc.counts[900], 5);
	cr_assert_eq(acc.counts[3], 1);
	dd_acc_free(&acc);
}

/* A data set of one of four shapes (log-uniform, small with zeros, heavy
 * duplicates, full uint32 range). */
static void data_fill(uint64_t *state, uint32_t *data, size_t n)
{
	int shape = (int)random_below(state, 4);
	uint32_t pool[8];
	for (int k = 0; k < 8; k++)
		pool[k] = random_duration_log(state);
	for (size_t k = 0; k < n; k++) {
		switch (shape) {
		case 0: data[k] = random_duration_log(state); break;
		case 1: data[k] = (uint32_t)random_below(state, 100); break;
		case 2: data[k] = pool[random_below(state, 8)]; break;
		default: data[k] = (uint32_t)splitmix(state); break;
		}
	}
}

Test(dd_acc, quantiles_match_a_sorted_array_within_1_percent)
{
	uint64_t state = seed_get("dd_acc.quantiles_match_a_sorted_array_within_1_percent");
	static const double qs[] = {0, 0.01, 0.5, 0.9, 0.95, 0.99, 1};
	enum { SETS = 300, N_MAX = 3000 };
	uint32_t *data = malloc(sizeof(*data) * N_MAX);
	cr_assert_not_null(data);
	for (int set = 0; set < SETS; set++) {
		size_t n = 1 + (size_t)random_below(&state, N_MAX);
		data_fill(&state, data, n);
		dd_acc whole = {0}, parts[3] = {{0}}, merged = {0};
		for (size_t k = 0; k < n; k++) {
			cr_assert_eq(dd_acc_add(&whole, dd_index(data[k]), 1), 0);
			cr_assert_eq(dd_acc_add(&parts[random_below(&state, 3)], dd_index(data[k]), 1), 0);
		}
		for (int p = 0; p < 3; p++)
			cr_assert_eq(dd_acc_merge(&merged, &parts[p]), 0);
		acc_assert_equal(&whole, &merged, "whole vs merged parts");
		qsort(data, n, sizeof(*data), compare_u32);
		for (size_t j = 0; j < sizeof(qs) / sizeof(qs[0]); j++) {
			double exact = data[rank_of(qs[j], n)];
			double got = dd_acc_quantile(&whole, qs[j]);
			cr_assert(fabs(got - exact) <= 0.01 * exact,
				  "set %d (n %zu) q %g: got %.17g, exact %.0f", set, n, qs[j], got, exact);
			cr_assert_eq(dd_acc_quantile(&merged, qs[j]), got);
		}
		dd_acc_free(&whole);
		dd_acc_free(&merged);
		for (int p = 0; p < 3; p++)
			dd_acc_free(&parts[p]);
	}
	free(data);
}

Test(dd_acc, merge_is_order_independent_byte_for_byte)
{
	uint64_t state = seed_get("dd_acc.merge_is_order_independent_byte_for_byte");
	for (int round = 0; round < 100; round++) {
		dd_acc a = {0}, b = {0}, a_then_b = {0}, b_then_a = {0}, direct = {0};
		/* a mostly small durations, b mostly large: different ranges. */
		size_t na = random_below(&state, 500), nb = random_below(&state, 500);
		for (size_t k = 0; k < na + nb; k++) {
			uint32_t x = k < na ? (uint32_t)random_below(&state, 5000) : (uint32_t)splitmix(&state);
			uint64_t count = 1 + random_below(&state, 3);
			cr_assert_eq(dd_acc_add(k < na ? &a : &b, dd_index(x), count), 0);
			cr_assert_eq(dd_acc_add(&direct, dd_index(x), count), 0);
		}
		cr_assert_eq(dd_acc_merge(&a_then_b, &a), 0);
		cr_assert_eq(dd_acc_merge(&a_then_b, &b), 0);
		cr_assert_eq(dd_acc_merge(&b_then_a, &b), 0);
		cr_assert_eq(dd_acc_merge(&b_then_a, &a), 0);
		if (na + nb == 0) {
			cr_assert_null(a_then_b.counts);
			cr_assert_null(b_then_a.counts);
			continue;
		}
		acc_assert_equal(&a_then_b, &b_then_a, "a+b vs b+a");
		acc_assert_equal(&a_then_b, &direct, "a+b vs direct adds");
		/* Into non-empty accumulators: b += a, then a += b (original b). */
		dd_acc b_copy = {0};
		cr_assert_eq(dd_acc_merge(&b_copy, &b), 0);
		cr_assert_eq(dd_acc_merge(&b, &a), 0);
		cr_assert_eq(dd_acc_merge(&a, &b_copy), 0);
		acc_assert_equal(&a, &a_then_b, "a += b");
		acc_assert_equal(&b, &a_then_b, "b += a");
		dd_acc_free(&b_copy);
		/* Self merge doubles: twice += twice equals (a + b) merged twice. */
		dd_acc twice = {0}, twice_direct = {0};
		cr_assert_eq(dd_acc_merge(&twice, &a_then_b), 0);
		cr_assert_eq(dd_acc_merge(&twice, &twice), 0);
		cr_assert_eq(dd_acc_merge(&twice_direct, &a_then_b), 0);
		cr_assert_eq(dd_acc_merge(&twice_direct, &b_then_a), 0);
		acc_assert_equal(&twice, &twice_direct, "self merge doubles");
		dd_acc_free(&twice_direct);
		dd_acc_free(&a);
		dd_acc_free(&b);
		dd_acc_free(&a_then_b);
		dd_acc_free(&b_then_a);
		dd_acc_free(&direct);
		dd_acc_free(&twice);
	}
}

/* ---- hashes and HyperLogLog --------------------------------------------------- */

Test(hll, user_hash_is_pinned)
{
	/* Rollup pages store these hashes: the seed must never change. */
	cr_assert_eq(sketch_user_hash("alice", 5), 0x5012f6ed9e6a3286ull);
	cr_assert_eq(sketch_user_hash("", 0), 0x411b98e6d2df8e14ull);
	cr_assert_neq(sketch_user_hash("alice", 5), sketch_user_hash("alicf", 5));
}

Test(hll, register_and_rank_pins)
{
	cr_assert_eq(hll_register(0xabcd123456789abcull), 0xabcd);
	cr_assert_eq(hll_register(0), 0);
	cr_assert_eq(hll_rank(0), 49);
	cr_assert_eq(hll_rank(0xffff000000000000ull), 49, "the register bits never count");
	cr_assert_eq(hll_rank(1), 48);
	cr_assert_eq(hll_rank(2), 47);
	cr_assert_eq(hll_rank(1ull << 46), 2);
	cr_assert_eq(hll_rank(1ull << 47), 1);
	cr_assert_eq(hll_rank(UINT64_MAX), 1);
	cr_assert_eq(hll_rank(0xffff000000000001ull), 48);
}

static uint8_t registers_a[HLL_REGISTERS], registers_b[HLL_REGISTERS];

Test(hll, estimate_pins_ertl_values)
{
	/* Reference values from a 50-digit evaluation of Ertl's formula with
	 * direct sums (not the iterations of the implementation). */
	memset(registers_a, 0, sizeof(registers_a));
	cr_assert_eq(hll_estimate(registers_a), 0.0);
	registers_a[0] = 1;
	double one = hll_estimate(registers_a);
	cr_assert(fabs(one - 1.0000012766960725) <= 1e-9, "one register at 1: %.17g", one);
	for (uint32_t j = 0; j < HLL_REGISTERS; j++)
		registers_a[j] = (uint8_t)(1 + j % 3);
	double mixed = hll_estimate(registers_a);
	cr_assert(fabs(mixed / 162081.31151052467 - 1) <= 1e-9, "ranks 1,2,3: %.17g", mixed);
	/* Registers at the maximum 49 exercise tau. */
	static const uint8_t ranks[4] = {0, 5, 20, 49};
	for (uint32_t j = 0; j < HLL_REGISTERS; j++)
		registers_a[j] = ranks[j % 4];
	double saturated = hll_estimate(registers_a);
	cr_assert(fabs(saturated / 144046.94723090623 - 1) <= 1e-9, "ranks 0,5,20,49: %.17g", saturated);
}

/* ---- uset ---------------------------------------------------------------------- */

/* The registers of a set of hashes, built directly (hash 0 counts as 1). */
static void registers_of(const uint64_t *hashes, size_t n, uint8_t *registers)
{
	memset(registers, 0, HLL_REGISTERS);
	for (size_t k = 0; k < n; k++) {
		uint64_t v = hashes[k] ? hashes[k] : 1;
		uint8_t rank = hll_rank(v);
		if (rank > registers[hll_register(v)])
			registers[hll_register(v)] = rank;
	}
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* The oracle: distinct values among hashes (0 and 1 being one); sorts a copy. */
static size_t distinct_count(const uint64_t *hashes, size_t n)
{
	if (n == 0)
		return 0;
	uint64_t *copy = malloc(sizeof(*copy) * n);
	cr_assert_not_null(copy);
	for (size_t k = 0; k < n; k++)
		copy[k] = hashes[k] ? hashes[k] : 1;
	qsort(copy, n, sizeof(*copy), compare_u64);
	size_t distinct = 1;
	for (size_t k = 1; k < n; k++)
		distinct += copy[k] != copy[k - 1];
	free(copy);
	return distinct;
}

/* n distinct random hashes (checked against the oracle). */
static uint64_t *hashes_new(uint64_t *state, size_t n)
{
	uint64_t *hashes = malloc(sizeof(*hashes) * (n ? n : 1));
	cr_assert_not_null(hashes);
	for (size_t k = 0; k < n; k++)
		hashes[k] = splitmix(state);
	cr_assert_eq(distinct_count(hashes, n), n, "64-bit collision: rerun with another seed");
	return hashes;
}

static void uset_add_all(uset *u, const uint64_t *hashes, size_t n)
{
	for (size_t k = 0; k < n; k++)
		cr_assert_eq(uset_add(u, hashes[k]), 0);
}

static void assert_within(double estimate, double exact, double tolerance, const char *what)
{
	double error = fabs(estimate - exact) / exact;
	fprintf(stderr, "  %s: exact %.0f estimate %.0f error %.3f%%\n", what, exact, estimate, 100 * error);
	cr_assert(error <= tolerance, "%s: estimate %.0f for %.0f (%.3f%% > %.1f%%)", what, estimate, exact,
		  100 * error, 100 * tolerance);
}

Test(uset, exact_counts_for_sizes_0_1_100_8192)
{
	uint64_t state = seed_get("uset.exact_counts_for_sizes_0_1_100_8192");
	static const size_t sizes[] = {0, 1, 100, 8192};
	for (size_t s = 0; s < 4; s++) {
		size_t n = sizes[s];
		uint64_t *hashes = hashes_new(&state, n);
		uset u = {0};
		cr_assert_eq(uset_estimate(&u), 0);
		/* Each hash twice, the second pass in reverse. */
		uset_add_all(&u, hashes, n);
		for (size_t k = n; k-- > 0;)
			cr_assert_eq(uset_add(&u, hashes[k]), 0);
		cr_assert_not(uset_dense(&u), "size %zu", n);
		cr_assert_eq(uset_estimate(&u), n);
		cr_assert_eq(u.count, n);
		uset_free(&u);
		cr_assert_null(u.table);
		cr_assert_eq(uset_estimate(&u), 0);
		free(hashes);
	}
}

Test(uset, exact_mode_counts_match_an_oracle)
{
	uint64_t state = seed_get("uset.exact_mode_counts_match_an_oracle");
	enum { ROUNDS = 40 };
	uint64_t *adds = malloc(sizeof(*adds) * 2 * USET_EXACT_MAX);
	cr_assert_not_null(adds);
	for (int round = 0; round < ROUNDS; round++) {
		/* distinct values <= USET_EXACT_MAX, each added 1 to 3 times */
		size_t distinct_max = 1 + random_below(&state, USET_EXACT_MAX);
		uint64_t *pool = hashes_new(&state, distinct_max);
		if (round % 4 == 0)
			pool[0] = 0; /* 0 and 1 are one element */
		if (round % 4 == 0 && distinct_max > 1)
			pool[1] = 1;
		size_t n = 0;
		for (size_t k = 0; k < 2 * USET_EXACT_MAX && k < 2 * distinct_max; k++)
			adds[n++] = pool[random_below(&state, distinct_max)];
		uset u = {0};
		uset_add_all(&u, adds, n);
		size_t want = distinct_count(adds, n);
		cr_assert_not(uset_dense(&u));
		cr_assert_eq(uset_estimate(&u), want, "round %d: %" PRIu64 " vs oracle %zu", round,
			     uset_estimate(&u), want);
		uset_free(&u);
		free(pool);
	}
	free(adds);

	uset u = {0};
	cr_assert_eq(uset_add(&u, 0), 0);
	cr_assert_eq(uset_add(&u, 1), 0);
	cr_assert_eq(uset_estimate(&u), 1, "hash 0 is stored as 1");
	cr_assert_eq(uset_add(&u, 2), 0);
	cr_assert_eq(uset_estimate(&u), 2);
	uset_free(&u);
}

Test(uset, turns_dense_on_the_8193rd_distinct_hash)
{
	uint64_t state = seed_get("uset.turns_dense_on_the_8193rd_distinct_hash");
	uint64_t *hashes = hashes_new(&state, USET_EXACT_MAX + 1);
	uset u = {0};
	uset_add_all(&u, hashes, USET_EXACT_MAX);
	cr_assert_not(uset_dense(&u));
	cr_assert_eq(uset_estimate(&u), USET_EXACT_MAX);
	cr_assert_eq(uset_add(&u, hashes[17]), 0); /* a repeat: still exact */
	cr_assert_not(uset_dense(&u));
	cr_assert_eq(uset_add(&u, hashes[USET_EXACT_MAX]), 0);
	cr_assert(uset_dense(&u));
	cr_assert_null(u.table, "the exact table is freed");
	cr_assert_eq(u.mask, 0);
	cr_assert_eq(u.count, 0);
	registers_of(hashes, USET_EXACT_MAX + 1, registers_a);
	cr_assert_eq(memcmp(u.registers, registers_a, HLL_REGISTERS), 0, "registers of all 8193 hashes");
	assert_within((double)uset_estimate(&u), USET_EXACT_MAX + 1, 0.02, "8193");
	uset_free(&u);
	cr_assert_null(u.registers);
	free(hashes);
}

Test(uset, dense_estimates_within_2_percent)
{
	uint64_t state = seed_get("uset.dense_estimates_within_2_percent");
	static const uint32_t sizes[] = {10000, 50000, 100000, 1000000, 5000000};
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		uset u = {0};
		for (uint32_t k = 0; k < sizes[s]; k++)
			cr_assert_eq(uset_add(&u, splitmix(&state)), 0);
		cr_assert(uset_dense(&u));
		char what[32];
		snprintf(what, sizeof(what), "%" PRIu32 " users", sizes[s]);
		assert_within((double)uset_estimate(&u), sizes[s], 0.02, what);
		uset_free(&u);
	}
}

/* Sets a and b of the given sizes sharing `common` hashes; union in all. */
typedef struct overlap {
	uint64_t *all; /* a = all[0, a_size), b = all[a_size - common, union) */
	size_t a_size, b_size, union_size;
} overlap;

static overlap overlap_new(uint64_t *state, size_t a_size, size_t b_size, size_t common)
{
	overlap o = {.a_size = a_size, .b_size = b_size, .union_size = a_size + b_size - common};
	o.all = hashes_new(state, o.union_size);
	return o;
}

static void overlap_fill(const overlap *o, uset *a, uset *b)
{
	uset_add_all(a, o->all, o->a_size);
	uset_add_all(b, o->all + (o->union_size - o->b_size), o->b_size);
}

Test(uset, exact_merges_stay_exact_up_to_8192_and_turn_dense_past_it)
{
	uint64_t state = seed_get("uset.exact_merges_stay_exact_up_to_8192_and_turn_dense_past_it");
	/* union 5000; union exactly 8192; union 10000 */
	static const size_t cases[][3] = {{3000, 3000, 1000}, {5000, 5000, 1808}, {6000, 6000, 2000}};
	for (size_t c = 0; c < 3; c++) {
		overlap o = overlap_new(&state, cases[c][0], cases[c][1], cases[c][2]);
		uset a = {0}, b = {0}, ab = {0}, ba = {0};
		overlap_fill(&o, &a, &b);
		cr_assert_eq(uset_merge(&ab, &a), 0);
		cr_assert_eq(uset_merge(&ab, &b), 0);
		cr_assert_eq(uset_merge(&ba, &b), 0);
		cr_assert_eq(uset_merge(&ba, &a), 0);
		cr_assert_eq(uset_merge(&a, &b), 0); /* into a non-empty exact set */
		uset *results[3] = {&ab, &ba, &a};
		for (int r = 0; r < 3; r++) {
			if (o.union_size <= USET_EXACT_MAX) {
				cr_assert_not(uset_dense(results[r]));
				cr_assert_eq(uset_estimate(results[r]), o.union_size, "case %zu result %d", c, r);
			} else {
				cr_assert(uset_dense(results[r]));
				registers_of(o.all, o.union_size, registers_a);
				cr_assert_eq(memcmp(results[r]->registers, registers_a, HLL_REGISTERS), 0);
				assert_within((double)uset_estimate(results[r]), (double)o.union_size, 0.02,
					      "exact + exact past 8192");
			}
		}
		uset_free(&a);
		uset_free(&b);
		uset_free(&ab);
		uset_free(&ba);
		free(o.all);
	}
}

Test(uset, exact_and_dense_merge_to_the_union_registers)
{
	uint64_t state = seed_get("uset.exact_and_dense_merge_to_the_union_registers");
	overlap o = overlap_new(&state, 5000, 50000, 2000);
	registers_of(o.all, o.union_size, registers_a);
	/* exact += dense */
	uset exact = {0}, dense = {0};
	overlap_fill(&o, &exact, &dense);
	cr_assert_not(uset_dense(&exact));
	cr_assert(uset_dense(&dense));
	cr_assert_eq(uset_merge(&exact, &dense), 0);
	cr_assert(uset_dense(&exact));
	cr_assert_null(exact.table);
	cr_assert_eq(memcmp(exact.registers, registers_a, HLL_REGISTERS), 0);
	assert_within((double)uset_estimate(&exact), (double)o.union_size, 0.02, "exact += dense");
	uset_free(&exact);
	uset_free(&dense);
	/* dense += exact */
	overlap_fill(&o, &exact, &dense);
	cr_assert_eq(uset_merge(&dense, &exact), 0);
	cr_assert_not(uset_dense(&exact), "the source is unchanged");
	cr_assert_eq(uset_estimate(&exact), 5000);
	cr_assert_eq(memcmp(dense.registers, registers_a, HLL_REGISTERS), 0);
	assert_within((double)uset_estimate(&dense), (double)o.union_size, 0.02, "dense += exact");
	/* exact += registers */
	uset_free(&exact);
	uset_add_all(&exact, o.all, 100);
	registers_of(o.all + o.union_size - o.b_size, o.b_size, registers_b);
	cr_assert_eq(uset_add_registers(&exact, registers_b), 0);
	cr_assert(uset_dense(&exact));
	uint64_t *both = malloc(sizeof(uint64_t) * (100 + o.b_size));
	cr_assert_not_null(both);
	memcpy(both, o.all, sizeof(uint64_t) * 100);
	memcpy(both + 100, o.all + o.union_size - o.b_size, sizeof(uint64_t) * o.b_size);
	registers_of(both, 100 + o.b_size, registers_b);
	cr_assert_eq(memcmp(exact.registers, registers_b, HLL_REGISTERS), 0);
	free(both);
	uset_free(&exact);
	uset_free(&dense);
	free(o.all);
}

Test(uset, dense_merges_equal_the_union_in_either_order)
{
	uint64_t state = seed_get("uset.dense_merges_equal_the_union_in_either_order");
	overlap o = overlap_new(&state, 60000, 60000, 20000);
	uset a = {0}, b = {0}, ab = {0}, ba = {0};
	overlap_fill(&o, &a, &b);
	cr_assert_eq(uset_merge(&ab, &a), 0);
	cr_assert_eq(uset_merge(&ab, &b), 0);
	cr_assert_eq(uset_merge(&ba, &b), 0);
	cr_assert_eq(uset_merge(&ba, &a), 0);
	cr_assert(uset_dense(&ab) && uset_dense(&ba));
	cr_assert_eq(memcmp(ab.registers, ba.registers, HLL_REGISTERS), 0);
	registers_of(o.all, o.union_size, registers_a);
	cr_assert_eq(memcmp(ab.registers, registers_a, HLL_REGISTERS), 0);
	assert_within((double)uset_estimate(&ab), (double)o.union_size, 0.02, "dense + dense");
	/* Merging with itself, an empty set, or the same set twice changes nothing. */
	uset empty = {0};
	cr_assert_eq(uset_merge(&ab, &ab), 0);
	cr_assert_eq(uset_merge(&ab, &empty), 0);
	cr_assert_eq(uset_merge(&ab, &b), 0);
	cr_assert_eq(memcmp(ab.registers, registers_a, HLL_REGISTERS), 0);
	cr_assert_eq(uset_merge(&empty, &empty), 0);
	cr_assert_not(uset_dense(&empty));
	cr_assert_eq(uset_estimate(&empty), 0);
	uset_free(&a);
	uset_free(&b);
	uset_free(&ab);
	uset_free(&ba);
	free(o.all);
}

Test(uset, hash_zero_is_hash_one_in_dense_mode_too)
{
	uset zero = {0}, one = {0};
	memset(registers_a, 0, HLL_REGISTERS);
	cr_assert_eq(uset_add_registers(&zero, registers_a), 0);
	cr_assert_eq(uset_add_registers(&one, registers_a), 0);
	cr_assert(uset_dense(&zero));
	cr_assert_eq(uset_estimate(&zero), 0);
	cr_assert_eq(uset_add(&zero, 0), 0);
	cr_assert_eq(uset_add(&one, 1), 0);
	cr_assert_eq(memcmp(zero.registers, one.registers, HLL_REGISTERS), 0);
	cr_assert_eq(zero.registers[0], 48);
	cr_assert_eq(uset_estimate(&zero), 1);
	uset_free(&zero);
	uset_free(&one);
}
