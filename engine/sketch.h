/*
 * sketch.h — the two mergeable sketches of rollup pages.
 *
 * Duration quantiles: a DDSketch-style logarithmic histogram. A duration x
 * (milliseconds, uint32) maps to bucket index dd_index(x): 0 for x == 0,
 * otherwise 1 + ceil(log(x) / log(DD_GAMMA)), with DD_GAMMA = (1 + a) / (1 - a)
 * and a = DD_RELATIVE_ACCURACY = 0.01. Every x in bucket i > 0 lies in
 * (DD_GAMMA^(i-2), DD_GAMMA^(i-1)], and dd_value(i) = 2 * DD_GAMMA^(i-1) /
 * (DD_GAMMA + 1) is within relative error a of every such x, so a quantile
 * read from merged counts is within 1% of the exact value at the same rank.
 * Sketches merge by adding counts per index (exact, order independent).
 *
 * Distinct users: a set of 64-bit hashes of the user strings (sketch_user_hash),
 * exact while it holds at most USET_EXACT_MAX hashes, then a HyperLogLog of
 * 2^HLL_P registers (standard error 1.04 / sqrt(2^HLL_P) = 0.41%), read with
 * Ertl's improved estimator (no empirical bias tables). Merging two sets
 * gives the same state whatever the order.
 */
#ifndef TALLY_SKETCH_H
#define TALLY_SKETCH_H

#include <stddef.h>
#include <stdint.h>

/* ---- duration quantiles ------------------------------------------------- */
#define DD_RELATIVE_ACCURACY 0.01
#define DD_INDEX_MAX 1200 /* dd_index(UINT32_MAX) < DD_INDEX_MAX */

/* Bucket index of a duration (deterministic; the same binary always maps
 * the same x to the same index). */
uint16_t dd_index(uint32_t duration_ms);

/* The representative value of bucket index (0 for index 0). */
double dd_value(uint16_t index);

/*
 * A query-side accumulator: counts per index over [lo, hi), grown as needed.
 * Zero-initialise ({0}) before use; dd_acc_free releases it.
 */
typedef struct dd_acc {
	uint64_t *counts; /* counts[i - lo] */
	uint32_t lo, hi;
	uint64_t total;
} dd_acc;

/* Bytes acc holds on the heap (its counts). */
size_t dd_acc_bytes(const dd_acc *acc);

/* 0 or -ENOMEM (acc unchanged). count may be 0 (no-op). */
int dd_acc_add(dd_acc *acc, uint16_t index, uint64_t count);
int dd_acc_merge(dd_acc *acc, const dd_acc *other);

/*
 * The value at rank floor(q * (total - 1)) (0-based, ascending), q in
 * [0, 1]: dd_value of the bucket that holds that rank. Returns 0 when empty.
 */
double dd_acc_quantile(const dd_acc *acc, double q);
void dd_acc_free(dd_acc *acc);

/* ---- distinct users ----------------------------------------------------- */
#define HLL_P 16
#define HLL_REGISTERS (1u << HLL_P)
#define USET_EXACT_MAX 8192u

/* The 64-bit hash of a user string (XXH3, fixed seed). */
uint64_t sketch_user_hash(const void *bytes, size_t size);

/* The HyperLogLog register a hash updates and the value it offers
 * (1 + leading zeros of the remaining 64 - HLL_P bits, at most 64 - HLL_P + 1). */
static inline uint32_t hll_register(uint64_t hash)
{
	return (uint32_t)(hash >> (64 - HLL_P));
}
uint8_t hll_rank(uint64_t hash);

/* Ertl's improved estimate from 2^HLL_P registers. */
double hll_estimate(const uint8_t *registers);

/*
 * A set of user hashes: exact (an open-addressing table of hashes) while
 * count <= USET_EXACT_MAX, then dense registers. Zero-initialise ({0}).
 */
typedef struct uset {
	uint64_t *table;     /* exact mode: slots (0 = empty; hash 0 is stored as 1) */
	uint32_t mask;       /* slots - 1, or 0 when no table */
	uint32_t count;      /* exact mode: distinct hashes held */
	uint8_t *registers;  /* dense mode: HLL_REGISTERS bytes, else NULL */
} uset;

/* Bytes u holds on the heap (its table or registers). */
size_t uset_bytes(const uset *u);

/* 0 or -ENOMEM (set unchanged). */
int uset_add(uset *u, uint64_t hash);
/* Merges dense registers (HLL_REGISTERS bytes) into u (u becomes dense). */
int uset_add_registers(uset *u, const uint8_t *registers);
int uset_merge(uset *u, const uset *other);
/* Exact count in exact mode, rounded HLL estimate in dense mode. */
uint64_t uset_estimate(const uset *u);
/* 1 when u holds dense registers. */
static inline int uset_dense(const uset *u)
{
	return u->registers != NULL;
}
void uset_free(uset *u);

#endif /* TALLY_SKETCH_H */
