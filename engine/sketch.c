/*
 * sketch.c — duration histograms (DDSketch-style) and distinct-user sets
 * (exact, then HyperLogLog). The promises are in sketch.h; the parameters
 * and the tested guarantees in docs/sketches.md.
 *
 * NOTES ON THE DESIGN
 *
 * 1. Bucket boundaries are integers, computed once. The header defines
 *    dd_index(x) = 1 + ceil(log(x) / log(g)) for x >= 1, g = (1 + a) / (1 - a).
 *    Bucket i >= 1 holds the x with g^(i-2) < x <= g^(i-1); since durations
 *    are integers, bucket i holds exactly the integers in
 *    (dd_upper[i-1], dd_upper[i]] with dd_upper[i] = floor(g^(i-1)) (capped
 *    at UINT32_MAX), and dd_index(x) is the smallest i with x <= dd_upper[i].
 *    The table is the definition the code uses; evaluating log(x) per event
 *    would both cost more and risk a wrong ceil() when x sits just past a
 *    boundary. floor(g^k) is exact in double: for every k <= 1109 (the last
 *    boundary below 2^32), g^k is at least 1.28e-12 relative (k = 1080:
 *    2404769859.003...) away from the nearest integer other than g^0 = 1
 *    (checked with exact rationals), far above pow()'s error of under one
 *    ulp (1.1e-16). build_tables() asserts that margin as it goes.
 *
 * 2. dd_index is two table loads. The leading one bit of x gives e =
 *    floor(log2 x); the next 7 bits select one of 128 sub-ranges of
 *    [2^e, 2^(e+1)), each narrower (relative width <= 1/128) than a bucket
 *    (relative width g - 1 = 2.02%), so a sub-range meets at most two
 *    buckets. dd_start[e][s] is the bucket of the sub-range's smallest
 *    integer; one comparison with dd_upper decides between it and the next.
 *    build_tables() asserts the "at most two" property for every sub-range.
 *    The tables (4.7 KiB + 8 KiB) are built once under pthread_once.
 *
 * 3. dd_acc's range [lo, hi) is always the hull of the indices with a
 *    non-zero count ever added, widened to multiples of DD_ACC_ALIGN. So
 *    the state (lo, hi, total, counts) depends only on the multiset of
 *    added indices, never on the order of adds and merges, and growth
 *    happens at most DD_INDEX_MAX / DD_ACC_ALIGN times.
 *
 * 4. uset invariants.
 *      exact mode (registers == NULL): table is NULL with mask == 0 and
 *        count == 0, or table has mask + 1 >= USET_SLOTS_MIN slots (a power
 *        of two), count <= (mask + 1) / 2 (load at most 50%, linear
 *        probing), count <= USET_EXACT_MAX, and every non-zero slot holds a
 *        distinct stored value. The stored value of hash h is h, or 1 for
 *        h == 0 (0 marks an empty slot), so hashes 0 and 1 are one element
 *        — in dense mode too, where hash 0 is folded as 1, so both modes
 *        agree on which hashes are equal.
 *      dense mode (registers != NULL): table == NULL, mask == 0, count == 0,
 *        registers[j] = max hll_rank over the stored values v with
 *        hll_register(v) == j.
 *    A set turns dense exactly when its union of distinct stored values
 *    would exceed USET_EXACT_MAX (or when dense registers are merged in),
 *    so the mode, the element set and the registers do not depend on the
 *    order of adds and merges. The exact table's slot layout may.
 *
 * 5. Failure leaves the set unchanged: every operation allocates what it
 *    needs (a larger table, or the registers of a conversion) before it
 *    modifies anything, and after that nothing can fail.
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "sketch.h"

/* ---- duration quantiles ------------------------------------------------- */

#define DD_SUBRANGE_BITS 7
#define DD_SUBRANGES (1u << DD_SUBRANGE_BITS)
/* dd_acc ranges are multiples of this many indices (design note 3). */
#define DD_ACC_ALIGN 64u
/* The largest possible hi of a dd_acc: one past the largest uint16 index. */
#define DD_ACC_HI_MAX 65536u

_Static_assert(DD_INDEX_MAX <= 65535, "dd indices are uint16");
_Static_assert(DD_ACC_HI_MAX % DD_ACC_ALIGN == 0, "aligned range end");

/* dd_upper[i]: the largest duration in bucket i (design note 1). */
static uint32_t dd_upper[DD_INDEX_MAX];
/* dd_start[e * DD_SUBRANGES + s]: design note 2. */
static uint16_t dd_start[32 * DD_SUBRANGES];
static pthread_once_t dd_tables_once = PTHREAD_ONCE_INIT;

static double dd_gamma(void)
{
	return (1.0 + DD_RELATIVE_ACCURACY) / (1.0 - DD_RELATIVE_ACCURACY);
}

/* The smallest i with x <= dd_upper[i], by binary search (table build only). */
static uint32_t dd_index_search(uint32_t x)
{
	uint32_t lo = 0, hi = DD_INDEX_MAX - 1; /* dd_upper[hi] == UINT32_MAX */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (x <= dd_upper[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static void dd_build_tables(void)
{
	double gamma = dd_gamma();
	dd_upper[0] = 0;
	for (uint32_t i = 1; i < DD_INDEX_MAX; i++) {
		double power = pow(gamma, (double)(i - 1));
		if (power >= (double)UINT32_MAX) {
			dd_upper[i] = UINT32_MAX;
			continue;
		}
		double whole = floor(power);
		/* Design note 1: the floor must be unambiguous (g^0 = 1 exactly). */
		assert(i == 1 || (power - whole > power * 1e-14 && whole + 1.0 - power > power * 1e-14));
		dd_upper[i] = (uint32_t)whole;
	}
	/* The last bucket must reach UINT32_MAX: dd_index(UINT32_MAX) < DD_INDEX_MAX. */
	assert(dd_upper[DD_INDEX_MAX - 1] == UINT32_MAX);

	for (uint32_t e = 0; e < 32; e++) {
		for (uint32_t s = 0; s < DD_SUBRANGES; s++) {
			/* Smallest and largest integer of [2^e (1 + s/128), 2^e (1 + (s+1)/128)). */
			uint64_t first = (((uint64_t)(DD_SUBRANGES + s) << e) + DD_SUBRANGES - 1) >> DD_SUBRANGE_BITS;
			uint64_t end = (((uint64_t)(DD_SUBRANGES + s + 1) << e) + DD_SUBRANGES - 1) >> DD_SUBRANGE_BITS;
			uint32_t start = 0;
			if (first < end) { /* the sub-range holds an integer */
				assert(end - 1 <= UINT32_MAX);
				start = dd_index_search((uint32_t)first);
				assert(dd_index_search((uint32_t)(end - 1)) <= start + 1);
			}
			dd_start[e * DD_SUBRANGES + s] = (uint16_t)start;
		}
	}
}

uint16_t dd_index(uint32_t duration_ms)
{
	if (duration_ms == 0)
		return 0;
	pthread_once(&dd_tables_once, dd_build_tables);
	uint32_t e = 31u - (uint32_t)__builtin_clz(duration_ms);
	/* The DD_SUBRANGE_BITS bits after the leading one (zeros shifted in below 2^7). */
	uint32_t s = (uint32_t)(((uint64_t)duration_ms << DD_SUBRANGE_BITS) >> e) & (DD_SUBRANGES - 1);
	uint32_t index = dd_start[e * DD_SUBRANGES + s];
	index += duration_ms > dd_upper[index];
	return (uint16_t)index;
}

double dd_value(uint16_t index)
{
	if (index == 0)
		return 0.0;
	double gamma = dd_gamma();
	return 2.0 * pow(gamma, (double)(index - 1)) / (gamma + 1.0);
}

/*
 * Makes acc cover [lo, hi) (widened to DD_ACC_ALIGN multiples, and to the
 * current range). 0 or -ENOMEM with acc unchanged.
 */
static int dd_acc_cover(dd_acc *acc, uint32_t lo, uint32_t hi)
{
	assert(lo < hi && hi <= DD_ACC_HI_MAX);
	if (acc->counts) {
		if (acc->lo < lo)
			lo = acc->lo;
		if (acc->hi > hi)
			hi = acc->hi;
	}
	lo = lo / DD_ACC_ALIGN * DD_ACC_ALIGN;
	hi = (hi + DD_ACC_ALIGN - 1) / DD_ACC_ALIGN * DD_ACC_ALIGN;
	if (acc->counts && lo == acc->lo && hi == acc->hi)
		return 0;
	uint64_t *counts = calloc(hi - lo, sizeof(*counts));
	if (!counts)
		return -ENOMEM;
	if (acc->counts) {
		memcpy(counts + (acc->lo - lo), acc->counts, (size_t)(acc->hi - acc->lo) * sizeof(*counts));
		free(acc->counts);
	}
	acc->counts = counts;
	acc->lo = lo;
	acc->hi = hi;
	return 0;
}

size_t dd_acc_bytes(const dd_acc *acc)
{
	return acc->counts ? (size_t)(acc->hi - acc->lo) * sizeof(*acc->counts) : 0;
}

int dd_acc_add(dd_acc *acc, uint16_t index, uint64_t count)
{
	/* Indices come from dd_index; decoders reject larger ones as corrupt.
	 * (Without assertions, any uint16 index still works, safely.) */
	assert(index < DD_INDEX_MAX);
	if (count == 0)
		return 0;
	int rc = dd_acc_cover(acc, index, (uint32_t)index + 1);
	if (rc)
		return rc;
	acc->counts[index - acc->lo] += count;
	acc->total += count;
	return 0;
}

int dd_acc_merge(dd_acc *acc, const dd_acc *other)
{
	if (!other->counts)
		return 0;
	/* Cover only other's non-zero indices, so the range stays their hull. */
	uint32_t width = other->hi - other->lo, first = 0, last = width;
	while (first < width && other->counts[first] == 0)
		first++;
	if (first == width)
		return 0;
	while (other->counts[last - 1] == 0)
		last--;
	int rc = dd_acc_cover(acc, other->lo + first, other->lo + last);
	if (rc)
		return rc;
	/* acc == other is fine: cover changed nothing, and each count doubles. */
	uint64_t *target = acc->counts + (other->lo - acc->lo);
	for (uint32_t i = first; i < last; i++)
		target[i] += other->counts[i];
	acc->total += other->total;
	return 0;
}

double dd_acc_quantile(const dd_acc *acc, double q)
{
	if (acc->total == 0 || !acc->counts)
		return 0.0;
	if (!(q > 0.0)) /* also NaN */
		q = 0.0;
	if (q > 1.0)
		q = 1.0;
	double rank_real = floor(q * (double)(acc->total - 1));
	uint64_t rank = (uint64_t)rank_real;
	if (rank > acc->total - 1) /* (double)(total - 1) rounded up */
		rank = acc->total - 1;
	uint64_t below = 0;
	uint32_t width = acc->hi - acc->lo, last_nonzero = 0;
	for (uint32_t i = 0; i < width; i++) {
		if (acc->counts[i] == 0)
			continue;
		below += acc->counts[i];
		last_nonzero = i;
		if (below > rank)
			return dd_value((uint16_t)(acc->lo + i));
	}
	/* Only if total exceeds the sum of counts (a broken caller). */
	assert(!"dd_acc total exceeds its counts");
	return dd_value((uint16_t)(acc->lo + last_nonzero));
}

void dd_acc_free(dd_acc *acc)
{
	free(acc->counts);
	acc->counts = NULL;
	acc->lo = acc->hi = 0;
	acc->total = 0;
}

/* ---- distinct users ----------------------------------------------------- */

/* The seed of sketch_user_hash. Hashes are stored in rollup pages: never
 * change it (tests/test_sketch.c pins a hash value). */
#define SKETCH_USER_HASH_SEED 0x7a11e5d3c0ffee01ull

/* Register values run from 0 (untouched) to HLL_RANK_MAX. */
#define HLL_RANK_BITS (64 - HLL_P)
#define HLL_RANK_MAX (HLL_RANK_BITS + 1)

#define USET_SLOTS_MIN 16u
/* Load at most 1/2: USET_EXACT_MAX hashes fit in 2 * USET_EXACT_MAX slots. */
#define USET_SLOTS_MAX (2u * USET_EXACT_MAX)

_Static_assert((USET_EXACT_MAX & (USET_EXACT_MAX - 1)) == 0, "slots are powers of two");
_Static_assert(USET_SLOTS_MIN <= USET_SLOTS_MAX, "slot range");

uint64_t sketch_user_hash(const void *bytes, size_t size)
{
	return XXH3_64bits_withSeed(bytes, size, SKETCH_USER_HASH_SEED);
}

uint8_t hll_rank(uint64_t hash)
{
	uint64_t rest = hash << HLL_P; /* the low HLL_RANK_BITS bits, at the top */
	if (rest == 0)
		return HLL_RANK_MAX;
	return (uint8_t)(__builtin_clzll(rest) + 1);
}

/* Ertl's sigma(x) = x + sum_{k>=1} x^(2^k) 2^(k-1), for 0 <= x < 1. */
static double hll_sigma(double x)
{
	assert(x >= 0.0 && x < 1.0);
	double y = 1.0, z = x, z_previous;
	do {
		x *= x;
		z_previous = z;
		z += x * y;
		y += y;
	} while (z != z_previous);
	return z;
}

/* Ertl's tau(x) = (1 - x - sum_{k>=1} (1 - x^(2^-k))^2 2^-k) / 3, 0 <= x <= 1. */
static double hll_tau(double x)
{
	if (x == 0.0 || x == 1.0)
		return 0.0;
	double y = 1.0, z = 1.0 - x, z_previous;
	do {
		x = sqrt(x);
		z_previous = z;
		y *= 0.5;
		z -= (1.0 - x) * (1.0 - x) * y;
	} while (z != z_previous);
	return z / 3.0;
}

/*
 * Ertl 2017, "New cardinality estimation algorithms for HyperLogLog
 * sketches", the improved raw estimator. With m = 2^p registers, q = 64 - p
 * rank bits and C_k the number of registers holding k (0 <= k <= q + 1):
 *
 *                          alpha_inf m^2
 *   n^ = ---------------------------------------------------------------
 *        m sigma(C_0 / m) + sum_{k=1..q} C_k 2^-k + m tau(1 - C_{q+1} / m) 2^-q
 *
 * alpha_inf = 1 / (2 ln 2). sigma corrects for registers still at 0 (the
 * small-range regime, where it behaves like linear counting) and tau for
 * registers at the maximum (never reached in practice with q = 48), so no
 * empirical bias tables are needed. The sum is evaluated by Horner's rule
 * from k = q down. All registers 0 gives sigma(1) = infinity: n^ = 0.
 * Register values above q + 1 (only from a corrupt page) count as q + 1.
 */
#define HLL_LANES 8u /* divides HLL_REGISTERS */

double hll_estimate(const uint8_t *registers)
{
	const double m = (double)HLL_REGISTERS;
	/* Counted into HLL_LANES histograms, register j into lane j % HLL_LANES:
	 * with one, the increments of a common value (0 while the set is
	 * sparse) wait on each other, each on the store before it; lanes make
	 * the chains independent (about twice as fast on the sparse sets). */
	uint32_t lanes[HLL_LANES][HLL_RANK_MAX + 1];
	memset(lanes, 0, sizeof(lanes));
	for (uint32_t j = 0; j < HLL_REGISTERS; j += HLL_LANES)
		for (uint32_t l = 0; l < HLL_LANES; l++) {
			uint32_t rank = registers[j + l];
			lanes[l][rank > HLL_RANK_MAX ? HLL_RANK_MAX : rank]++;
		}
	uint32_t histogram[HLL_RANK_MAX + 1] = {0};
	for (uint32_t k = 0; k <= HLL_RANK_MAX; k++)
		for (uint32_t l = 0; l < HLL_LANES; l++)
			histogram[k] += lanes[l][k];
	if (histogram[0] == HLL_REGISTERS)
		return 0.0;
	double z = m * hll_tau(1.0 - (double)histogram[HLL_RANK_MAX] / m);
	for (uint32_t k = HLL_RANK_BITS; k >= 1; k--)
		z = 0.5 * (z + (double)histogram[k]);
	z += m * hll_sigma((double)histogram[0] / m);
	const double alpha_inf = 1.0 / (2.0 * log(2.0));
	return alpha_inf * m * m / z;
}

static inline uint64_t uset_stored(uint64_t hash)
{
	return hash ? hash : 1;
}

static inline void registers_add(uint8_t *registers, uint64_t stored)
{
	uint32_t j = hll_register(stored);
	uint8_t rank = hll_rank(stored);
	if (rank > registers[j])
		registers[j] = rank;
}

static inline uint32_t uset_home(uint64_t stored, uint32_t mask)
{
	return (uint32_t)((stored * 0x9e3779b97f4a7c15ull) >> 32) & mask;
}

/* The slot holding stored, or the empty slot where it would go. */
static uint32_t table_slot(const uint64_t *table, uint32_t mask, uint64_t stored)
{
	uint32_t slot = uset_home(stored, mask);
	/* Load <= 1/2 guarantees an empty slot, so the walk ends. */
	while (table[slot] != 0 && table[slot] != stored)
		slot = (slot + 1) & mask;
	return slot;
}

static int uset_contains(const uset *u, uint64_t stored)
{
	return u->table && u->table[table_slot(u->table, u->mask, stored)] == stored;
}

/* Makes room for count distinct hashes (count <= USET_EXACT_MAX); 0 or
 * -ENOMEM with u unchanged. */
static int uset_reserve(uset *u, uint32_t count)
{
	assert(!u->registers && count <= USET_EXACT_MAX);
	uint32_t slots = USET_SLOTS_MIN;
	while (count > slots / 2)
		slots *= 2;
	if (u->table && slots <= u->mask + 1)
		return 0;
	uint64_t *table = calloc(slots, sizeof(*table));
	if (!table)
		return -ENOMEM;
	uint32_t mask = slots - 1;
	if (u->table) {
		for (uint32_t i = 0; i <= u->mask; i++)
			if (u->table[i])
				table[table_slot(table, mask, u->table[i])] = u->table[i];
		free(u->table);
	}
	u->table = table;
	u->mask = mask;
	return 0;
}

/* u must have room (uset_reserve) and not hold stored. */
static void uset_insert(uset *u, uint64_t stored)
{
	uint32_t slot = table_slot(u->table, u->mask, stored);
	assert(u->table[slot] == 0);
	u->table[slot] = stored;
	u->count++;
	assert(u->count <= (u->mask + 1) / 2);
}

static void registers_add_table(uint8_t *registers, const uset *exact)
{
	if (!exact->table)
		return;
	for (uint32_t i = 0; i <= exact->mask; i++)
		if (exact->table[i])
			registers_add(registers, exact->table[i]);
}

/* Fresh registers holding u's exact contents, or NULL (out of memory). */
static uint8_t *uset_registers_new(const uset *u)
{
	uint8_t *registers = calloc(HLL_REGISTERS, 1);
	if (registers)
		registers_add_table(registers, u);
	return registers;
}

/* Switches u to dense mode with registers (already holding u's contents). */
static void uset_install(uset *u, uint8_t *registers)
{
	free(u->table);
	u->table = NULL;
	u->mask = 0;
	u->count = 0;
	u->registers = registers;
}

size_t uset_bytes(const uset *u)
{
	return (u->table ? ((size_t)u->mask + 1) * sizeof(*u->table) : 0) +
	       (u->registers ? HLL_REGISTERS : 0);
}

int uset_add(uset *u, uint64_t hash)
{
	uint64_t stored = uset_stored(hash);
	if (u->registers) {
		registers_add(u->registers, stored);
		return 0;
	}
	if (uset_contains(u, stored))
		return 0;
	if (u->count == USET_EXACT_MAX) {
		uint8_t *registers = uset_registers_new(u);
		if (!registers)
			return -ENOMEM;
		registers_add(registers, stored);
		uset_install(u, registers);
		return 0;
	}
	int rc = uset_reserve(u, u->count + 1);
	if (rc)
		return rc;
	uset_insert(u, stored);
	return 0;
}

int uset_add_registers(uset *u, const uint8_t *registers)
{
	if (!u->registers) {
		uint8_t *own = uset_registers_new(u);
		if (!own)
			return -ENOMEM;
		uset_install(u, own);
	}
	for (uint32_t j = 0; j < HLL_REGISTERS; j++)
		if (registers[j] > u->registers[j])
			u->registers[j] = registers[j];
	return 0;
}

int uset_merge(uset *u, const uset *other)
{
	if (u == other)
		return 0;
	if (other->registers)
		return uset_add_registers(u, other->registers);
	if (!other->table)
		return 0;
	if (u->registers) {
		registers_add_table(u->registers, other);
		return 0;
	}
	/* Both exact: count other's hashes u lacks, to size the result once. */
	uint32_t missing = 0;
	for (uint32_t i = 0; i <= other->mask; i++)
		if (other->table[i] && !uset_contains(u, other->table[i]))
			missing++;
	if (missing == 0)
		return 0;
	if (u->count + missing > USET_EXACT_MAX) {
		uint8_t *registers = uset_registers_new(u);
		if (!registers)
			return -ENOMEM;
		registers_add_table(registers, other);
		uset_install(u, registers);
		return 0;
	}
	int rc = uset_reserve(u, u->count + missing);
	if (rc)
		return rc;
	for (uint32_t i = 0; i <= other->mask; i++)
		if (other->table[i] && !uset_contains(u, other->table[i]))
			uset_insert(u, other->table[i]);
	return 0;
}

uint64_t uset_estimate(const uset *u)
{
	if (u->registers)
		return (uint64_t)llround(hll_estimate(u->registers));
	return u->count;
}

void uset_free(uset *u)
{
	free(u->table);
	free(u->registers);
	u->table = NULL;
	u->registers = NULL;
	u->mask = 0;
	u->count = 0;
}
