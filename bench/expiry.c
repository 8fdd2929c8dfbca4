/*
 * expiry.c — the engine benchmark's fingerprint-expiry phase (expiry.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "expiry.h"

static int64_t shifted_now_us(const tally_io *io)
{
	const bench_shift_io *b = (const bench_shift_io *)io;
	const tally_io *real = tally_io_default();
	return real->now_us(real) + atomic_load(&b->offset_us);
}

void bench_shift_io_init(bench_shift_io *b)
{
	b->io = *tally_io_default();
	b->io.now_us = shifted_now_us;
	atomic_store(&b->offset_us, 0);
}

static int64_t day_of_us(int64_t us)
{
	int64_t day = us / TALLY_US_PER_DAY;
	return us % TALLY_US_PER_DAY < 0 ? day - 1 : day;
}

/* The oldest day of w's events, and the distinct ids on later days (a
 * re-send shares its original's id text, so each counts once). */
static int workload_days(const workload *w, int64_t *oldest, uint64_t *after_oldest)
{
	*oldest = INT64_MAX;
	for (uint64_t i = 0; i < w->event_count; i++) {
		int64_t day = day_of_us(w->events[i].time_us);
		if (day < *oldest)
			*oldest = day;
	}
	uint8_t *seen = calloc(w->unique_count / 8 + 1, 1);
	if (!seen)
		return -ENOMEM;
	*after_oldest = 0;
	for (uint64_t i = 0; i < w->event_count; i++) {
		const tally_event *e = &w->events[i];
		uint64_t u = workload_unique_index(w, e);
		if (seen[u / 8] & (1u << (u % 8)))
			continue;
		seen[u / 8] |= (uint8_t)(1u << (u % 8));
		*after_oldest += day_of_us(e->time_us) > *oldest;
	}
	free(seen);
	return 0;
}

int bench_expiry_run(tally_store *store, bench_shift_io *io, const tally_options *options,
		     const workload *w, bench_expiry_figures *out)
{
	memset(out, 0, sizeof(*out));
	int rc = workload_days(w, &out->day_expired, &out->entries_expected);
	if (rc)
		return rc;
	tally_stats before;
	if ((rc = tally_store_stats(store, &before)))
		return rc;
	out->entries_before = before.dedup_entries;
	/* The store keeps fingerprints of day(now - lateness_past_us) - 1 and
	 * later: at midday of the day two after the oldest, plus the horizon,
	 * that is every day after the oldest. */
	int64_t target_us = (out->day_expired + 2) * TALLY_US_PER_DAY + TALLY_US_PER_DAY / 2 +
			    options->lateness_past_us;
	const tally_io *real = tally_io_default();
	atomic_store(&io->offset_us, target_us - real->now_us(real));
	tally_stats after;
	int64_t deadline_ns = bench_clock_ns() + (int64_t)BENCH_EXPIRY_WAIT_MS * 1000000;
	for (;;) {
		if ((rc = tally_store_stats(store, &after)))
			return rc;
		if (after.dedup_expiry_count > before.dedup_expiry_count)
			break;
		if (bench_clock_ns() > deadline_ns)
			return -ETIMEDOUT;
		nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
	}
	out->entries_after = after.dedup_entries;
	out->bytes_after = after.dedup_bytes;
	out->pass_ms = (double)after.dedup_expiry_us_last / 1e3;
	out->hold_max_ms = (double)after.dedup_expiry_hold_max_us / 1e3;
	out->match = out->entries_after == out->entries_expected;
	return 0;
}
