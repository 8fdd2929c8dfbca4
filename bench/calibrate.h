/*
 * calibrate.h — three fixed measurements of the machine itself, reported with
 * `tally-bench engine`'s figures so that runs from different sessions or
 * machines can be told apart (bench/README.md, "Machine").
 */
#ifndef TALLY_BENCH_CALIBRATE_H
#define TALLY_BENCH_CALIBRATE_H

typedef struct bench_machine {
	double dram_latency_ns; /* one dependent load that misses every cache */
	double xxh3_gb_per_s;   /* XXH3_64bits over a buffer in cache-friendly order */
	double page_fault_us;   /* the first write to a page of a fresh anonymous mapping */
} bench_machine;

/* Measures all three (about a second). 0, or -ENOMEM. */
int bench_calibrate(bench_machine *out);

#endif /* TALLY_BENCH_CALIBRATE_H */
