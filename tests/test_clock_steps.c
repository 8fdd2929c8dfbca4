/*
 * test_clock_steps.c — tallyd against a wall clock that steps (an NTP
 * correction, a VM resumed): its timeouts and its nightly export's
 * schedule.
 *
 * This binary has its own clock_gettime, which the server code linked into
 * it calls: CLOCK_REALTIME is shifted by wall_shift_s, as a step shifts
 * it (for callers in this executable only: criterion's timing keeps the
 * true clock), and CLOCK_MONOTONIC is left alone, as a step leaves it. Every
 * timeout must run on the monotonic clock (a wall step fired them at once,
 * or never); the export's hour is a wall-clock hour, and a run made on a
 * clock that was ahead must not skip the next night.
 */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "server_internal.h"
#include "support/pg_harness.h"
#include "support/server_harness.h"

static atomic_llong wall_shift_s;

/* Whether code at addr is this executable's (tally's code is linked in
 * statically), not a shared library's: criterion's own timing (its
 * timeouts) keeps the true clock. */
static int called_from_this_binary(const void *addr)
{
	Dl_info self, caller;
	if (!dladdr((void *)called_from_this_binary, &self) || !dladdr(addr, &caller))
		return 0;
	return caller.dli_fbase == self.dli_fbase;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
	int rc = (int)syscall(SYS_clock_gettime, id, ts);
	if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE) &&
	    atomic_load(&wall_shift_s) && called_from_this_binary(__builtin_return_address(0)))
		ts->tv_sec += (time_t)atomic_load(&wall_shift_s);
	return rc;
}

static double monotonic_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Seconds from `since` until the server closes fd (EOF or a reset), or a
 * negative number when it is still open after limit_s. */
static double closed_after(int fd, double since, double limit_s)
{
	struct timeval tv = {0, 100000};
	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	while (monotonic_s() - since < limit_s) {
		char buf[256];
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return monotonic_s() - since;
	}
	return -1;
}

/* Description: a connection that never says Hello is closed after
 * hello_timeout_ms (2 s) whichever way the wall clock steps an hour while
 * it waits: not at the next tick after a step forward, and not an hour
 * late after a step back. Before 2026-12-02 the server's deadlines ran on
 * the wall clock: closed after 0.6 s, and not within 25 s. */
Test(clock_steps, the_hello_timeout_runs_on_the_monotonic_clock)
{
	const long long shifts[2] = {3600, -3600};
	for (int i = 0; i < 2; i++) {
		atomic_store(&wall_shift_s, 0);
		harness h;
		harness_init(&h, "clock-hello");
		h.config.hello_timeout_ms = 2000;
		harness_start(&h);
		int fd = harness_socket(&h);
		double since = monotonic_s();
		usleep(200000);
		atomic_store(&wall_shift_s, shifts[i]);
		double closed = closed_after(fd, since, 8);
		atomic_store(&wall_shift_s, 0);
		cr_expect_geq(closed, 1.9, "step %+lld s: closed after %.2f s", shifts[i], closed);
		cr_expect_leq(closed, 4.0, "step %+lld s: closed after %.2f s", shifts[i], closed);
		close(fd);
		harness_finish(&h);
	}
}

static pg_harness pg;

/* Runs of sc, waiting up to timeout_ms (on this test's monotonic clock,
 * in short waits) for at least `runs`. */
static uint64_t runs_within(export_schedule *sc, uint64_t runs, int timeout_ms)
{
	double until = monotonic_s() + timeout_ms / 1000.0;
	uint64_t n = export_schedule_wait_runs(sc, runs, 200);
	while (n < runs && monotonic_s() < until) {
		usleep(50000);
		n = export_schedule_wait_runs(sc, runs, 200);
	}
	return n;
}

/* Description: the nightly export's schedule under wall-clock steps.
 * (1) A failed run's retry comes after its backoff (5 s) on the monotonic
 * clock, also when the wall clock steps an hour back meanwhile (before
 * 2026-12-02: an hour later). (2) With --export-at twelve hours away, a
 * step forward past it runs the export (within the schedule's 5 s wake);
 * the step is then corrected, and when the true clock reaches that hour
 * (here: the same step again) the export runs again, rather than waiting
 * for the day after the hour the ahead clock had passed (before: a night
 * skipped). No run comes while nothing is due. */
Test(clock_steps, the_export_schedule_survives_wall_clock_steps)
{
	atomic_store(&wall_shift_s, 0);
	pg_harness_start(&pg, "clock-steps");
	pg_harness_billing_roles(&pg, "exporter");
	harness h;
	harness_init(&h, "clock-sched");
	pg_harness_conninfo(&pg, "exporter", "billing", h.config.export_pg,
			    sizeof(h.config.export_pg));
	int64_t wall = server_wall_us();
	uint32_t minute_now = (uint32_t)(wall % TALLY_US_PER_DAY / (60 * INT64_C(1000000)));
	h.config.export_at_minute = (minute_now + 720) % 1440;
	harness_start(&h);
	export_schedule *sc = h.server->schedule;
	cr_assert_not_null(sc);

	/* (1) The database is missing: the first run fails; the wall steps back. */
	cr_assert_geq(runs_within(sc, 1, 30000), 1, "no first run");
	atomic_store(&wall_shift_s, -3600);
	pg_harness_create_database(&pg, "billing", "exporter");
	cr_expect_geq(runs_within(sc, 2, 15000), 2, "the retry waited for the wall clock");
	atomic_store(&wall_shift_s, 0);

	/* (2) Twelve hours ahead, a minute past --export-at. */
	long long ahead = 12 * 3600 + 60;
	atomic_store(&wall_shift_s, ahead);
	cr_expect_geq(runs_within(sc, 3, 15000), 3, "no run at the ahead clock's hour");
	atomic_store(&wall_shift_s, 0);
	cr_expect_eq(runs_within(sc, 4, 7000), 3, "a run with nothing due");
	atomic_store(&wall_shift_s, ahead); /* the true clock reaches the hour */
	cr_expect_geq(runs_within(sc, 4, 15000), 4, "the night after the ahead run was skipped");
	atomic_store(&wall_shift_s, 0);
	harness_finish(&h);
	pg_harness_stop(&pg);
}
