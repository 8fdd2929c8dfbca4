/*
 * calibrate.c — the machine's memory latency, hashing speed and page
 * fault cost (calibrate.h).
 *
 * This machine is shared, and its speed moved by up to 2x between sessions
 * for the same code (docs/benchmarks.md, twenty-second measurement); the
 * pairs a session runs compare builds, and these three figures compare the
 * machines under them:
 *
 *   DRAM latency: a walk over a single random cycle through
 *   CALIBRATE_WALK_BYTES of uint32 indices (Sattolo's algorithm, a fixed
 *   seed), each step's address the previous load's value, so no two loads
 *   overlap: ns per step. Ingest under the store lock is bound by such
 *   misses (docs/benchmarks.md).
 *   XXH3: XXH3_64bits over CALIBRATE_HASH_BYTES, CALIBRATE_HASH_ROUNDS
 *   times: GB/s, CPU speed with little memory traffic.
 *   Page fault: one byte written to each page of a fresh anonymous
 *   mapping of CALIBRATE_FAULT_BYTES: µs per page, the kernel's (and a
 *   hypervisor's) work to give a process a page. A memtable's memory is
 *   fresh after every flush; the cost was 10 µs on one host and well under
 *   1 on others (docs/benchmarks.md, forty-ninth measurement).
 *
 * Each figure is the best (least time) of CALIBRATE_REPEATS runs: noise
 * only ever adds time.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <xxhash.h>

#include "calibrate.h"
#include "common.h"
#include "rng.h"

#define CALIBRATE_WALK_BYTES (64u << 20)
#define CALIBRATE_WALK_STEPS (2u << 20)
#define CALIBRATE_HASH_BYTES (256u << 10) /* fits in L2 */
#define CALIBRATE_HASH_ROUNDS 2000u
#define CALIBRATE_FAULT_BYTES (32u << 20) /* 8,192 pages of 4 KiB */
#define CALIBRATE_PAGE_BYTES 4096u
#define CALIBRATE_REPEATS 3
#define CALIBRATE_SEED UINT64_C(0xca11b7a7e)

/* ns to write one byte to each page of a fresh mapping of
 * CALIBRATE_FAULT_BYTES; -ENOMEM when none can be made. */
static int64_t fault_pages_ns(void)
{
	char *p = mmap(NULL, CALIBRATE_FAULT_BYTES, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	int64_t t0 = bench_clock_ns();
	for (uint32_t at = 0; at < CALIBRATE_FAULT_BYTES; at += CALIBRATE_PAGE_BYTES)
		((volatile char *)p)[at] = 1;
	int64_t ns = bench_clock_ns() - t0;
	munmap(p, CALIBRATE_FAULT_BYTES);
	return ns;
}

int bench_calibrate(bench_machine *out)
{
	memset(out, 0, sizeof(*out));
	uint32_t n = CALIBRATE_WALK_BYTES / sizeof(uint32_t);
	uint32_t *next = malloc(CALIBRATE_WALK_BYTES);
	uint8_t *data = malloc(CALIBRATE_HASH_BYTES);
	if (!next || !data) {
		free(next);
		free(data);
		return -ENOMEM;
	}
	/* Sattolo: a uniformly random permutation that is one cycle. */
	rng r;
	rng_seed(&r, CALIBRATE_SEED, 0);
	for (uint32_t i = 0; i < n; i++)
		next[i] = i;
	for (uint32_t i = n - 1; i > 0; i--) {
		uint32_t j = rng_below(&r, i);
		uint32_t t = next[i];
		next[i] = next[j];
		next[j] = t;
	}
	for (uint32_t i = 0; i < CALIBRATE_HASH_BYTES; i++)
		data[i] = (uint8_t)rng_next(&r);

	double best_walk_ns = 0, best_hash_ns = 0, best_fault_ns = 0;
	volatile uint64_t sink = 0; /* keeps both loops from being optimised away */
	for (int repeat = 0; repeat < CALIBRATE_REPEATS; repeat++) {
		uint32_t at = 0;
		int64_t t0 = bench_clock_ns();
		for (uint32_t step = 0; step < CALIBRATE_WALK_STEPS; step++)
			at = next[at];
		double walk_ns = (double)(bench_clock_ns() - t0);
		sink += at;
		if (repeat == 0 || walk_ns < best_walk_ns)
			best_walk_ns = walk_ns;

		uint64_t h = 0;
		t0 = bench_clock_ns();
		for (uint32_t round = 0; round < CALIBRATE_HASH_ROUNDS; round++) {
			data[0] = (uint8_t)h; /* each round depends on the last */
			h = XXH3_64bits(data, CALIBRATE_HASH_BYTES);
		}
		double hash_ns = (double)(bench_clock_ns() - t0);
		sink += h;
		if (repeat == 0 || hash_ns < best_hash_ns)
			best_hash_ns = hash_ns;

		int64_t fault_ns = fault_pages_ns();
		if (fault_ns < 0) {
			free(next);
			free(data);
			return (int)fault_ns;
		}
		if (repeat == 0 || (double)fault_ns < best_fault_ns)
			best_fault_ns = (double)fault_ns;
	}
	(void)sink;
	out->dram_latency_ns = best_walk_ns / CALIBRATE_WALK_STEPS;
	out->xxh3_gb_per_s = best_hash_ns > 0 ? (double)CALIBRATE_HASH_BYTES * CALIBRATE_HASH_ROUNDS /
							best_hash_ns
					      : 0;
	out->page_fault_us = best_fault_ns / 1000.0 / (CALIBRATE_FAULT_BYTES / CALIBRATE_PAGE_BYTES);
	free(next);
	free(data);
	return 0;
}
