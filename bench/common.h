/*
 * common.h — small helpers shared by tally-bench's subcommands: clocks,
 * percentiles, rounding for reports, JSON building, engine error messages
 * and the data directory.
 */
#ifndef TALLY_BENCH_COMMON_H
#define TALLY_BENCH_COMMON_H

#include <jansson.h>
#include <stdint.h>
#include <sys/resource.h>
#include <time.h>

#include "tally.h"

#define BENCH_PATH_SIZE_MAX 4096

/* CLOCK_MONOTONIC in nanoseconds: every duration the bench measures. */
static inline int64_t bench_clock_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CLOCK_REALTIME in microseconds since the epoch: anchors the workload. */
int64_t bench_wall_clock_us(void);

static inline double bench_ms_between(int64_t from_ns, int64_t to_ns)
{
	return (double)(to_ns - from_ns) / 1e6;
}

/* x rounded to `places` decimals, so JSON shows 25.13, not 25.129999... */
double bench_round(double x, int places);

/* User + system seconds of a getrusage result. */
static inline double bench_cpu_s(const struct rusage *u)
{
	return (double)(u->ru_utime.tv_sec + u->ru_stime.tv_sec) +
	       (double)(u->ru_utime.tv_usec + u->ru_stime.tv_usec) / 1e6;
}

/* bytes / events, 0 when there are no events. */
double bench_per_event(uint64_t bytes, uint64_t events);

/* qsort comparators, ascending. */
int bench_compare_i64(const void *a, const void *b);
int bench_compare_u64(const void *a, const void *b);

/* The nearest-rank p-quantile (0 < p <= 1) of n ascending nanosecond
 * values, in microseconds; 0 when n is 0. */
double bench_percentile_us(const int64_t *sorted_ns, uint64_t n, double p);

/* Sorts n nanosecond values ascending in place and writes their P50, P95,
 * P99 and max (nearest rank) in microseconds to out; zeros when n is 0. */
void bench_latency_summary_us(int64_t *ns, uint64_t n, double out[4]);

/* Adds key = value to object; jansson takes ownership of value (NULL, from
 * a failed json_* constructor, is reported). 0 or -1. */
int bench_json_put(json_t *object, const char *key, json_t *value);

/* A uint64 as JSON: a number when it fits in int64, else a decimal string,
 * so every bit survives any JSON reader. NULL on ENOMEM. */
json_t *bench_json_u64(uint64_t value);

/* Prints root as one line on stdout and releases it. bad is the OR of the
 * bench_json_put results that built it: when set, nothing is printed and
 * -ENOMEM returned. 0, -ENOMEM or -EIO. */
int bench_json_print(json_t *root, int bad);

/* Ends a report on stdout: write_rc is what writing it returned (0, or
 * -errno from bench_json_print); a failure is described on stderr, then
 * stdout is flushed. 0, or 1 (the exit status) when the report could not
 * be written. */
int bench_report_end(int write_rc);

/* Prints "tally-bench: CALL failed: <tally_strerror(rc)>: <message>" on
 * stderr, the message being tally_store_errmsg(store) when store is not
 * NULL, else errmsg (may be NULL or empty). Returns 1, the exit status. */
int bench_engine_failed(const char *call, int rc, const tally_store *store, const char *errmsg);

/* mkdir -p path. 0 or -errno (-ENOTDIR when path is not a directory). */
int bench_make_dirs(const char *path);

/* 1 if the directory path has no entries but "." and "..", 0 if it has
 * some, or -errno. */
int bench_dir_is_empty(const char *path);

/* This process's resident set from /proc/self/status, in bytes: VmRSS now
 * and VmHWM (the peak). 0, or -errno with both left 0. */
int bench_rss_read(uint64_t *rss_bytes, uint64_t *rss_peak_bytes);

/* The same for process pid (0: this process), from /proc/PID/status: how
 * tally-bench reads a server's memory. 0, or -errno (-ENOENT: no such
 * process, or a status without the fields) with both left 0. */
int bench_process_rss_read(long pid, uint64_t *rss_bytes, uint64_t *rss_peak_bytes);

#endif /* TALLY_BENCH_COMMON_H */
