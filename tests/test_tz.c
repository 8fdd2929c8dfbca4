/*
 * test_tz.c — Description: pins engine/tz.c: TZif loading (system zones and
 * hand-built files of versions 1 to 4), the footer's POSIX TZ rule (Mm.w.d,
 * Jn and n days, <...> names, negative and 167-hour rule times, DST all
 * year), name validation and error codes, corrupt files, and local buckets
 * across DST gaps and overlaps, midnight switches and non-whole-hour
 * offsets, with exact UTC instants.
 *
 * The property test compares tz_offset with glibc's localtime_r (an
 * independent TZif reader, used here in the test process only) and with a
 * brute-force walk over the transitions, and checks the bucket invariants
 * of tz.h for random instants in 1970..2100 in a dozen zones. Randomness is
 * splitmix64 seeded by $SEED, or by the clock when it is unset; the seed is
 * printed as "test_tz seed=N" so a failure replays with SEED=N.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tally.h"
#include "support/test_dir.h"
#include "tz.h"

#define US INT64_C(1000000)
#define HOUR_US (INT64_C(3600) * US)
#define MINUTE_US (INT64_C(60) * US)
#define DAY_US (INT64_C(86400) * US)

/* ---- seeded randomness ------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t rng_below(uint64_t n)
{
	return rng_next() % n;
}

static void rng_init(void)
{
	const char *env = getenv("SEED");
	uint64_t seed;
	if (env != NULL && *env != '\0') {
		seed = strtoull(env, NULL, 0);
	} else {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		seed = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
		seed ^= (uint64_t)getpid() << 32;
	}
	fprintf(stderr, "test_tz seed=%llu (%s)\n", (unsigned long long)seed,
		criterion_current_test != NULL ? criterion_current_test->name : "?");
	rng_state = seed;
}

TestSuite(tz, .init = rng_init);

/* ---- helpers ------------------------------------------------------------------------ */

/* UTC (or local wall time, as a label) in microseconds, via glibc's timegm. */
static int64_t civil_us(int year, int month, int day, int hour, int minute, int second)
{
	struct tm tm = {.tm_year = year - 1900, .tm_mon = month - 1, .tm_mday = day,
			.tm_hour = hour, .tm_min = minute, .tm_sec = second};
	return (int64_t)timegm(&tm) * US;
}

static tz *load(const char *name)
{
	tz *z = NULL;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	int rc = tz_load(name, &z, errmsg);
	cr_assert_eq(rc, 0, "tz_load(%s) = %d: %s", name, rc, errmsg);
	cr_assert_not_null(z);
	cr_assert_str_eq(tz_name(z), name);
	return z;
}

/* Asserts the bucket of t exactly. */
static void bucket_expect(const tz *z, enum tz_unit unit, int64_t t, int64_t start, int64_t end,
			  int64_t label)
{
	int64_t got_start = -1, got_end = -1, got_label = -1;
	tz_bucket(z, unit, t, &got_start, &got_end, &got_label);
	cr_assert_eq(got_start, start, "%s unit %d t=%lld: start %lld, expected %lld (diff %lld s)",
		     tz_name(z), unit, (long long)t, (long long)got_start, (long long)start,
		     (long long)((got_start - start) / US));
	cr_assert_eq(got_end, end, "%s unit %d t=%lld: end %lld, expected %lld (diff %lld s)",
		     tz_name(z), unit, (long long)t, (long long)got_end, (long long)end,
		     (long long)((got_end - end) / US));
	cr_assert_eq(got_label, label, "%s unit %d t=%lld: label %lld, expected %lld", tz_name(z),
		     unit, (long long)t, (long long)got_label, (long long)label);
	/* NULL label is allowed and changes nothing */
	tz_bucket(z, unit, t, &got_start, &got_end, NULL);
	cr_assert(got_start == start && got_end == end);
}

/* The bucket of every instant in [start, end) sampled at the ends and the middle. */
static void bucket_expect_all(const tz *z, enum tz_unit unit, int64_t start, int64_t end,
			      int64_t label)
{
	bucket_expect(z, unit, start, start, end, label);
	bucket_expect(z, unit, start + (end - start) / 2, start, end, label);
	bucket_expect(z, unit, end - 1, start, end, label);
}

/* ---- UTC ----------------------------------------------------------------------------- */

static void utc_behaviour(const tz *z)
{
	int64_t t = civil_us(2026, 3, 29, 12, 34, 56) + 789;
	for (int64_t probe = civil_us(1900, 1, 1, 0, 0, 0); probe < civil_us(2200, 1, 1, 0, 0, 0);
	     probe += 97 * DAY_US + 12345)
		cr_assert_eq(tz_offset(z, probe), 0);
	cr_assert_eq(tz_offset(z, INT64_MIN), 0);
	cr_assert_eq(tz_offset(z, INT64_MAX), 0);
	cr_assert_eq(tz_next_transition(z, t), INT64_MAX);
	cr_assert_eq(tz_next_transition(z, INT64_MIN), INT64_MAX);
	bucket_expect(z, TZ_MINUTE, t, civil_us(2026, 3, 29, 12, 34, 0),
		      civil_us(2026, 3, 29, 12, 35, 0), civil_us(2026, 3, 29, 12, 34, 0));
	bucket_expect(z, TZ_HOUR, t, civil_us(2026, 3, 29, 12, 0, 0), civil_us(2026, 3, 29, 13, 0, 0),
		      civil_us(2026, 3, 29, 12, 0, 0));
	bucket_expect(z, TZ_DAY, t, civil_us(2026, 3, 29, 0, 0, 0), civil_us(2026, 3, 30, 0, 0, 0),
		      civil_us(2026, 3, 29, 0, 0, 0));
	bucket_expect(z, TZ_MONTH, t, civil_us(2026, 3, 1, 0, 0, 0), civil_us(2026, 4, 1, 0, 0, 0),
		      civil_us(2026, 3, 1, 0, 0, 0));
	/* February of a leap year, of a century non-leap year, and before 1970 */
	bucket_expect(z, TZ_MONTH, civil_us(2024, 2, 29, 23, 0, 0), civil_us(2024, 2, 1, 0, 0, 0),
		      civil_us(2024, 3, 1, 0, 0, 0), civil_us(2024, 2, 1, 0, 0, 0));
	bucket_expect(z, TZ_MONTH, civil_us(2100, 2, 10, 0, 0, 0), civil_us(2100, 2, 1, 0, 0, 0),
		      civil_us(2100, 3, 1, 0, 0, 0), civil_us(2100, 2, 1, 0, 0, 0));
	bucket_expect(z, TZ_DAY, civil_us(1969, 12, 31, 23, 59, 59) + 999999,
		      civil_us(1969, 12, 31, 0, 0, 0), 0, civil_us(1969, 12, 31, 0, 0, 0));
	bucket_expect(z, TZ_MINUTE, -1, -MINUTE_US, 0, -MINUTE_US);
}

Test(tz, utc_fixed_zone_needs_no_file_and_has_no_transitions)
{
	tz *z = tz_utc();
	cr_assert_not_null(z);
	cr_assert_str_eq(tz_name(z), "UTC");
	utc_behaviour(z);
	tz_free(z); /* harmless on the constant zone */
	tz_free(tz_utc());
	cr_assert_eq(tz_offset(tz_utc(), 0), 0);
}

Test(tz, utc_from_the_tzdata_file_behaves_like_tz_utc)
{
	const char *names[] = {"UTC", "Etc/UTC", "Etc/GMT", "Zulu"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		tz *z = load(names[i]);
		utc_behaviour(z);
		tz_free(z);
	}
}

/* ---- Europe/Paris ------------------------------------------------------------------------ */

Test(tz, paris_offsets_change_at_the_2026_transitions)
{
	tz *z = load("Europe/Paris");
	int64_t spring = civil_us(2026, 3, 29, 1, 0, 0);
	int64_t autumn = civil_us(2026, 10, 25, 1, 0, 0);
	cr_assert_eq(tz_offset(z, spring - 1), 3600);
	cr_assert_eq(tz_offset(z, spring), 7200);
	cr_assert_eq(tz_offset(z, autumn - 1), 7200);
	cr_assert_eq(tz_offset(z, autumn), 3600);
	cr_assert_eq(tz_offset(z, civil_us(2026, 7, 14, 12, 0, 0)), 7200);
	cr_assert_eq(tz_offset(z, civil_us(2026, 1, 1, 0, 0, 0)), 3600);
	cr_assert_eq(tz_next_transition(z, civil_us(2026, 1, 1, 0, 0, 0)), spring);
	cr_assert_eq(tz_next_transition(z, spring - 1), spring);
	cr_assert_eq(tz_next_transition(z, spring), autumn);
	cr_assert_eq(tz_next_transition(z, autumn),
		     civil_us(2027, 3, 28, 1, 0, 0)); /* last Sunday of March 2027 */
	tz_free(z);
}

Test(tz, paris_day_buckets_are_23_and_25_hours_on_transition_days)
{
	tz *z = load("Europe/Paris");
	int64_t start = civil_us(2026, 3, 28, 23, 0, 0);
	int64_t end = civil_us(2026, 3, 29, 22, 0, 0);
	cr_assert_eq(end - start, 23 * HOUR_US);
	bucket_expect_all(z, TZ_DAY, start, end, civil_us(2026, 3, 29, 0, 0, 0));
	start = civil_us(2026, 10, 24, 22, 0, 0);
	end = civil_us(2026, 10, 25, 23, 0, 0);
	cr_assert_eq(end - start, 25 * HOUR_US);
	bucket_expect_all(z, TZ_DAY, start, end, civil_us(2026, 10, 25, 0, 0, 0));
	/* the ordinary days either side */
	bucket_expect_all(z, TZ_DAY, civil_us(2026, 3, 27, 23, 0, 0), civil_us(2026, 3, 28, 23, 0, 0),
			  civil_us(2026, 3, 28, 0, 0, 0));
	bucket_expect_all(z, TZ_DAY, civil_us(2026, 10, 25, 23, 0, 0), civil_us(2026, 10, 26, 23, 0, 0),
			  civil_us(2026, 10, 26, 0, 0, 0));
	/* months across the changes: March has 743 hours, October 745 */
	bucket_expect_all(z, TZ_MONTH, civil_us(2026, 2, 28, 23, 0, 0), civil_us(2026, 3, 31, 22, 0, 0),
			  civil_us(2026, 3, 1, 0, 0, 0));
	bucket_expect_all(z, TZ_MONTH, civil_us(2026, 9, 30, 22, 0, 0), civil_us(2026, 10, 31, 23, 0, 0),
			  civil_us(2026, 10, 1, 0, 0, 0));
	tz_free(z);
}

Test(tz, paris_fall_back_hour_gives_two_buckets_with_the_same_label)
{
	tz *z = load("Europe/Paris");
	int64_t two_local = civil_us(2026, 10, 25, 2, 0, 0);
	/* 02:00-03:00 CEST = 00:00Z-01:00Z, then 02:00-03:00 CET = 01:00Z-02:00Z */
	bucket_expect_all(z, TZ_HOUR, civil_us(2026, 10, 25, 0, 0, 0), civil_us(2026, 10, 25, 1, 0, 0),
			  two_local);
	bucket_expect_all(z, TZ_HOUR, civil_us(2026, 10, 25, 1, 0, 0), civil_us(2026, 10, 25, 2, 0, 0),
			  two_local);
	bucket_expect_all(z, TZ_HOUR, civil_us(2026, 10, 24, 23, 0, 0), civil_us(2026, 10, 25, 0, 0, 0),
			  civil_us(2026, 10, 25, 1, 0, 0));
	bucket_expect_all(z, TZ_HOUR, civil_us(2026, 10, 25, 2, 0, 0), civil_us(2026, 10, 25, 3, 0, 0),
			  civil_us(2026, 10, 25, 3, 0, 0));
	/* the repeated minutes are separate minute buckets too */
	bucket_expect_all(z, TZ_MINUTE, civil_us(2026, 10, 25, 0, 59, 0), civil_us(2026, 10, 25, 1, 0, 0),
			  civil_us(2026, 10, 25, 2, 59, 0));
	bucket_expect_all(z, TZ_MINUTE, civil_us(2026, 10, 25, 1, 0, 0), civil_us(2026, 10, 25, 1, 1, 0),
			  civil_us(2026, 10, 25, 2, 0, 0));
	/* spring forward: 01:00 CET is followed by 03:00 CEST; there is no 02:00 bucket */
	bucket_expect_all(z, TZ_HOUR, civil_us(2026, 3, 29, 0, 0, 0), civil_us(2026, 3, 29, 1, 0, 0),
			  civil_us(2026, 3, 29, 1, 0, 0));
	bucket_expect_all(z, TZ_HOUR, civil_us(2026, 3, 29, 1, 0, 0), civil_us(2026, 3, 29, 2, 0, 0),
			  civil_us(2026, 3, 29, 3, 0, 0));
	tz_free(z);
}

/* ---- America/New_York ------------------------------------------------------------------ */

Test(tz, new_york_month_buckets_span_the_dst_changes)
{
	tz *z = load("America/New_York");
	bucket_expect_all(z, TZ_MONTH, civil_us(2026, 3, 1, 5, 0, 0), civil_us(2026, 4, 1, 4, 0, 0),
			  civil_us(2026, 3, 1, 0, 0, 0));
	bucket_expect_all(z, TZ_MONTH, civil_us(2026, 11, 1, 4, 0, 0), civil_us(2026, 12, 1, 5, 0, 0),
			  civil_us(2026, 11, 1, 0, 0, 0));
	cr_assert_eq(tz_next_transition(z, civil_us(2026, 1, 1, 0, 0, 0)), civil_us(2026, 3, 8, 7, 0, 0));
	cr_assert_eq(tz_next_transition(z, civil_us(2026, 3, 8, 7, 0, 0)), civil_us(2026, 11, 1, 6, 0, 0));
	/* Nov 1: 01:00-02:00 is lived twice */
	bucket_expect_all(z, TZ_HOUR, civil_us(2026, 11, 1, 5, 0, 0), civil_us(2026, 11, 1, 6, 0, 0),
			  civil_us(2026, 11, 1, 1, 0, 0));
	bucket_expect_all(z, TZ_HOUR, civil_us(2026, 11, 1, 6, 0, 0), civil_us(2026, 11, 1, 7, 0, 0),
			  civil_us(2026, 11, 1, 1, 0, 0));
	bucket_expect_all(z, TZ_DAY, civil_us(2026, 11, 1, 4, 0, 0), civil_us(2026, 11, 2, 5, 0, 0),
			  civil_us(2026, 11, 1, 0, 0, 0));
	tz_free(z);
}

/* ---- Non-whole-hour offsets ------------------------------------------------------------------ */

Test(tz, kolkata_days_start_at_1830_utc_and_hours_at_half_past)
{
	tz *z = load("Asia/Kolkata");
	int64_t t = civil_us(2026, 5, 10, 12, 0, 0);
	cr_assert_eq(tz_offset(z, t), 19800);
	cr_assert_eq(tz_next_transition(z, t), INT64_MAX);
	cr_assert_eq(tz_next_transition(z, civil_us(1970, 1, 1, 0, 0, 0)), INT64_MAX);
	bucket_expect(z, TZ_DAY, t, civil_us(2026, 5, 9, 18, 30, 0), civil_us(2026, 5, 10, 18, 30, 0),
		      civil_us(2026, 5, 10, 0, 0, 0));
	bucket_expect(z, TZ_HOUR, t, civil_us(2026, 5, 10, 11, 30, 0), civil_us(2026, 5, 10, 12, 30, 0),
		      civil_us(2026, 5, 10, 17, 0, 0));
	bucket_expect(z, TZ_MONTH, t, civil_us(2026, 4, 30, 18, 30, 0), civil_us(2026, 5, 31, 18, 30, 0),
		      civil_us(2026, 5, 1, 0, 0, 0));
	tz_free(z);
}

Test(tz, kathmandu_quarter_hour_offset_and_its_1986_change)
{
	tz *z = load("Asia/Kathmandu");
	int64_t change = civil_us(1985, 12, 31, 18, 30, 0);
	cr_assert_eq(tz_offset(z, change - 1), 19800);
	cr_assert_eq(tz_offset(z, change), 20700);
	cr_assert_eq(tz_next_transition(z, civil_us(1985, 1, 1, 0, 0, 0)), change);
	cr_assert_eq(tz_next_transition(z, change), INT64_MAX);
	/* local 1986-01-01 00:00 to 00:14 never happened: the day starts at 00:15 */
	bucket_expect_all(z, TZ_DAY, change, civil_us(1986, 1, 1, 18, 15, 0),
			  civil_us(1986, 1, 1, 0, 0, 0));
	bucket_expect_all(z, TZ_DAY, civil_us(1985, 12, 30, 18, 30, 0), change,
			  civil_us(1985, 12, 31, 0, 0, 0));
	bucket_expect_all(z, TZ_HOUR, change, civil_us(1985, 12, 31, 19, 15, 0),
			  civil_us(1986, 1, 1, 0, 0, 0));
	int64_t t = civil_us(2026, 5, 10, 12, 0, 0);
	cr_assert_eq(tz_offset(z, t), 20700);
	bucket_expect(z, TZ_DAY, t, civil_us(2026, 5, 9, 18, 15, 0), civil_us(2026, 5, 10, 18, 15, 0),
		      civil_us(2026, 5, 10, 0, 0, 0));
	bucket_expect(z, TZ_HOUR, t, civil_us(2026, 5, 10, 11, 15, 0), civil_us(2026, 5, 10, 12, 15, 0),
		      civil_us(2026, 5, 10, 17, 0, 0));
	bucket_expect(z, TZ_MINUTE, t, t, t + MINUTE_US, civil_us(2026, 5, 10, 17, 45, 0));
	tz_free(z);
}

Test(tz, lord_howe_half_hour_dst)
{
	tz *z = load("Australia/Lord_Howe");
	int64_t back = civil_us(2026, 4, 4, 15, 0, 0); /* 02:00 +11 -> 01:30 +1030 */
	int64_t forward = civil_us(2026, 10, 3, 15, 30, 0); /* 02:00 +1030 -> 02:30 +11 */
	cr_assert_eq(tz_offset(z, back - 1), 39600);
	cr_assert_eq(tz_offset(z, back), 37800);
	cr_assert_eq(tz_offset(z, forward - 1), 37800);
	cr_assert_eq(tz_offset(z, forward), 39600);
	cr_assert_eq(tz_next_transition(z, civil_us(2026, 1, 1, 0, 0, 0)), back);
	cr_assert_eq(tz_next_transition(z, back), forward);
	/* Sunday April 5 is 24.5 h long, Sunday October 4 23.5 h */
	bucket_expect_all(z, TZ_DAY, civil_us(2026, 4, 4, 13, 0, 0), civil_us(2026, 4, 5, 13, 30, 0),
			  civil_us(2026, 4, 5, 0, 0, 0));
	bucket_expect_all(z, TZ_DAY, civil_us(2026, 10, 3, 13, 30, 0), civil_us(2026, 10, 4, 13, 0, 0),
			  civil_us(2026, 10, 4, 0, 0, 0));
	/* the clock goes back 30 minutes inside 01:00-02:00: one 90-minute hour */
	bucket_expect_all(z, TZ_HOUR, civil_us(2026, 4, 4, 14, 0, 0), civil_us(2026, 4, 4, 15, 30, 0),
			  civil_us(2026, 4, 5, 1, 0, 0));
	/* and forward over 02:00-02:30: a 30-minute hour */
	bucket_expect_all(z, TZ_HOUR, forward, civil_us(2026, 10, 3, 16, 0, 0),
			  civil_us(2026, 10, 4, 2, 0, 0));
	/* the repeated half hour as minutes: 01:59 +11 then 01:30 +1030 */
	bucket_expect_all(z, TZ_MINUTE, back - MINUTE_US, back, civil_us(2026, 4, 5, 1, 59, 0));
	bucket_expect_all(z, TZ_MINUTE, back, back + MINUTE_US, civil_us(2026, 4, 5, 1, 30, 0));
	tz_free(z);
}

/* ---- Changes at midnight ---------------------------------------------------------------- */

Test(tz, santiago_day_starts_at_0100_when_midnight_is_skipped)
{
	tz *z = load("America/Santiago");
	/* Sat Sep 5 24:00 -04 becomes Sun Sep 6 01:00 -03 */
	bucket_expect_all(z, TZ_DAY, civil_us(2026, 9, 5, 4, 0, 0), civil_us(2026, 9, 6, 4, 0, 0),
			  civil_us(2026, 9, 5, 0, 0, 0));
	bucket_expect_all(z, TZ_DAY, civil_us(2026, 9, 6, 4, 0, 0), civil_us(2026, 9, 7, 3, 0, 0),
			  civil_us(2026, 9, 6, 0, 0, 0));
	bucket_expect_all(z, TZ_HOUR, civil_us(2026, 9, 6, 4, 0, 0), civil_us(2026, 9, 6, 5, 0, 0),
			  civil_us(2026, 9, 6, 1, 0, 0));
	/* Sat Apr 4 24:00 -03 becomes Sat Apr 4 23:00 -04: a 25-hour Saturday, two 23:00 hours */
	bucket_expect_all(z, TZ_DAY, civil_us(2026, 4, 4, 3, 0, 0), civil_us(2026, 4, 5, 4, 0, 0),
			  civil_us(2026, 4, 4, 0, 0, 0));
	bucket_expect_all(z, TZ_HOUR, civil_us(2026, 4, 5, 2, 0, 0), civil_us(2026, 4, 5, 3, 0, 0),
			  civil_us(2026, 4, 4, 23, 0, 0));
	bucket_expect_all(z, TZ_HOUR, civil_us(2026, 4, 5, 3, 0, 0), civil_us(2026, 4, 5, 4, 0, 0),
			  civil_us(2026, 4, 4, 23, 0, 0));
	/* September 2026 starts Sep 1 00:00 -04 and ends Oct 1 00:00 -03 */
	bucket_expect_all(z, TZ_MONTH, civil_us(2026, 9, 1, 4, 0, 0), civil_us(2026, 10, 1, 3, 0, 0),
			  civil_us(2026, 9, 1, 0, 0, 0));
	tz_free(z);
}

Test(tz, havana_switches_at_midnight_both_ways)
{
	tz *z = load("America/Havana");
	/* Sun Mar 8 00:00 CST becomes 01:00 CDT: Sunday starts at 05:00Z and lasts 23 h */
	bucket_expect_all(z, TZ_DAY, civil_us(2026, 3, 8, 5, 0, 0), civil_us(2026, 3, 9, 4, 0, 0),
			  civil_us(2026, 3, 8, 0, 0, 0));
	bucket_expect_all(z, TZ_DAY, civil_us(2026, 3, 7, 5, 0, 0), civil_us(2026, 3, 8, 5, 0, 0),
			  civil_us(2026, 3, 7, 0, 0, 0));
	/* Sun Nov 1 01:00 CDT becomes 00:00 CST: one 25-hour day, two 00:00 hours */
	bucket_expect_all(z, TZ_DAY, civil_us(2026, 11, 1, 4, 0, 0), civil_us(2026, 11, 2, 5, 0, 0),
			  civil_us(2026, 11, 1, 0, 0, 0));
	bucket_expect_all(z, TZ_HOUR, civil_us(2026, 11, 1, 4, 0, 0), civil_us(2026, 11, 1, 5, 0, 0),
			  civil_us(2026, 11, 1, 0, 0, 0));
	bucket_expect_all(z, TZ_HOUR, civil_us(2026, 11, 1, 5, 0, 0), civil_us(2026, 11, 1, 6, 0, 0),
			  civil_us(2026, 11, 1, 0, 0, 0));
	tz_free(z);
}

/* ---- The footer rule ------------------------------------------------------------------------ */

Test(tz, instants_after_2037_come_from_the_footer_rule)
{
	tz *z = load("Europe/Paris");
	cr_assert_eq(tz_offset(z, civil_us(2100, 7, 1, 12, 0, 0)), 7200);
	cr_assert_eq(tz_offset(z, civil_us(2100, 1, 15, 12, 0, 0)), 3600);
	cr_assert_eq(tz_next_transition(z, civil_us(2100, 1, 1, 0, 0, 0)), civil_us(2100, 3, 28, 1, 0, 0));
	cr_assert_eq(tz_next_transition(z, civil_us(2100, 3, 28, 1, 0, 0)),
		     civil_us(2100, 10, 31, 1, 0, 0));
	bucket_expect_all(z, TZ_DAY, civil_us(2100, 10, 30, 22, 0, 0), civil_us(2100, 10, 31, 23, 0, 0),
			  civil_us(2100, 10, 31, 0, 0, 0));
	/* the hand-over from the file's table (to 2037) to the rule is seamless */
	cr_assert_eq(tz_next_transition(z, civil_us(2037, 6, 1, 0, 0, 0)), civil_us(2037, 10, 25, 1, 0, 0));
	cr_assert_eq(tz_next_transition(z, civil_us(2037, 10, 25, 1, 0, 0)), civil_us(2038, 3, 28, 1, 0, 0));
	tz_free(z);

	/* Nuuk's rule has a negative time: M3.5.0/-1 is Saturday 23:00 local */
	z = load("America/Nuuk");
	int64_t spring = civil_us(2100, 3, 28, 1, 0, 0);
	int64_t autumn = civil_us(2100, 10, 31, 1, 0, 0);
	cr_assert_eq(tz_offset(z, spring - 1), -7200);
	cr_assert_eq(tz_offset(z, spring), -3600);
	cr_assert_eq(tz_offset(z, autumn - 1), -3600);
	cr_assert_eq(tz_offset(z, autumn), -7200);
	cr_assert_eq(tz_next_transition(z, spring), autumn);
	tz_free(z);

	/* Santiago's /24 in 2150: first Saturday of September is Sep 5 */
	z = load("America/Santiago");
	cr_assert_eq(tz_next_transition(z, civil_us(2150, 7, 1, 0, 0, 0)), civil_us(2150, 9, 6, 4, 0, 0));
	tz_free(z);

	/* southern hemisphere across a year boundary: Lord Howe in 2199-2200 */
	z = load("Australia/Lord_Howe");
	cr_assert_eq(tz_offset(z, civil_us(2199, 12, 31, 23, 0, 0)), 39600);
	cr_assert_eq(tz_next_transition(z, civil_us(2199, 12, 31, 23, 0, 0)),
		     civil_us(2200, 4, 6, 2, 0, 0) - 11 * HOUR_US);
	tz_free(z);
}

/* ---- Names and errors ------------------------------------------------------------------------- */

Test(tz, invalid_and_unknown_names_are_refused_with_exact_codes)
{
	char too_long[TZ_NAME_SIZE_MAX + 2];
	memset(too_long, 'a', sizeof(too_long) - 1);
	too_long[sizeof(too_long) - 1] = '\0';
	static const struct {
		const char *name;
		const char *message;
	} cases[] = {
		{"", "invalid time zone name ''"},
		{"../etc/passwd", "invalid time zone name '../etc/passwd'"},
		{"/etc/passwd", "invalid time zone name '/etc/passwd'"},
		{"Europe/../x", "invalid time zone name 'Europe/../x'"},
		{"Europe//Paris", "invalid time zone name 'Europe//Paris'"},
		{"Europe/", "invalid time zone name 'Europe/'"},
		{"Europe/Paris ", "invalid time zone name 'Europe/Paris '"},
		{"Europe/Paris\n", "invalid time zone name 'Europe/Paris?'"},
		{"./UTC", "invalid time zone name './UTC'"},
		{"zone.tab", "invalid time zone name 'zone.tab'"},
		{"Nope/Nowhere", "unknown time zone 'Nope/Nowhere'"},
		{"Europe", "unknown time zone 'Europe'"},
		{"UTC/Paris", "unknown time zone 'UTC/Paris'"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		tz *z = (tz *)&z; /* not NULL: the call must clear it */
		char errmsg[TALLY_ERRMSG_SIZE] = "";
		int rc = tz_load(cases[i].name, &z, errmsg);
		cr_assert_eq(rc, TALLY_E_INVALID, "tz_load('%s') = %d", cases[i].name, rc);
		cr_assert_null(z, "no zone on failure");
		cr_assert_str_eq(errmsg, cases[i].message);
		cr_assert_eq(tz_load(cases[i].name, &z, NULL), TALLY_E_INVALID, "errmsg may be NULL");
	}
	tz *z;
	char errmsg[TALLY_ERRMSG_SIZE];
	cr_assert_eq(tz_load(too_long, &z, errmsg), TALLY_E_INVALID);
	cr_assert(strncmp(errmsg, "invalid time zone name 'aaaa", 28) == 0, "%s", errmsg);
	too_long[TZ_NAME_SIZE_MAX] = '\0'; /* 64 bytes: a valid name, no such file */
	cr_assert_eq(tz_load(too_long, &z, errmsg), TALLY_E_INVALID);
	cr_assert(strncmp(errmsg, "unknown time zone 'aaaa", 23) == 0, "%s", errmsg);
	/* zones that count leap seconds are refused, whether or not right/ is installed */
	cr_assert_eq(tz_load("right/UTC", &z, errmsg), TALLY_E_INVALID);
	/* names with + - _ and digits */
	const char *valid[] = {"Etc/GMT+5", "Etc/GMT-14", "America/Port-au-Prince", "America/Port_of_Spain"};
	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++)
		tz_free(load(valid[i]));
	z = load("Etc/GMT+5");
	cr_assert_eq(tz_offset(z, 0), -18000, "POSIX sign: GMT+5 is five hours west");
	tz_free(z);
}

/* ---- Hand-built TZif files ---------------------------------------------------------------- */

static void put32(uint8_t **p, uint32_t v)
{
	for (int i = 3; i >= 0; i--)
		*(*p)++ = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t **p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p, (uint32_t)v);
}

static void put_header(uint8_t **p, char version, uint32_t time_count, uint32_t type_count,
		       uint32_t char_count)
{
	memcpy(*p, "TZif", 4);
	(*p)[4] = (uint8_t)version;
	memset(*p + 5, 0, 15);
	*p += 20;
	put32(p, 0); /* isutcnt */
	put32(p, 0); /* isstdcnt */
	put32(p, 0); /* leapcnt */
	put32(p, time_count);
	put32(p, type_count);
	put32(p, char_count);
}

/* A TZif file: version 0 (v1 only, 32-bit times) or '2'..'4' (an empty v1
 * block, the 64-bit block and the footer "\n<footer>\n"). Returns its size. */
static size_t tzif_make(uint8_t *out, char version, uint32_t time_count, const int64_t *times,
			const uint8_t *indices, uint32_t type_count, const int32_t *utoffs,
			const char *footer)
{
	uint8_t *p = out;
	unsigned time_size = 4;
	if (version != 0) {
		put_header(&p, version, 0, 1, 4);
		put32(&p, 0);
		*p++ = 0;
		*p++ = 0;
		memcpy(p, "LMT", 4);
		p += 4;
		time_size = 8;
	}
	put_header(&p, version, time_count, type_count, 4);
	for (uint32_t i = 0; i < time_count; i++) {
		if (time_size == 8)
			put64(&p, (uint64_t)times[i]);
		else
			put32(&p, (uint32_t)(int32_t)times[i]);
	}
	for (uint32_t i = 0; i < time_count; i++)
		*p++ = indices[i];
	for (uint32_t i = 0; i < type_count; i++) {
		put32(&p, (uint32_t)utoffs[i]);
		*p++ = 0;
		*p++ = 0;
	}
	memcpy(p, "ABC", 4);
	p += 4;
	if (version != 0) {
		*p++ = '\n';
		memcpy(p, footer, strlen(footer));
		p += strlen(footer);
		*p++ = '\n';
	}
	return (size_t)(p - out);
}

/* Offset of the 64-bit block's transition times in a tzif_make file. */
#define TZIF_V2_TIMES 98

static void file_write(const char *path, const void *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	cr_assert_eq(write(fd, data, size), (ssize_t)size);
	cr_assert_eq(close(fd), 0);
}

/* Writes the file and loads it; returns the code, *out the zone on success. */
static int load_bytes(test_dir *dir, const void *data, size_t size, tz **out, char *errmsg)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/zone", dir->path);
	file_write(path, data, size);
	return tz_load_path(path, "Test/Zone", out, errmsg);
}

static tz *load_bytes_ok(test_dir *dir, const void *data, size_t size)
{
	tz *z = NULL;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	int rc = load_bytes(dir, data, size, &z, errmsg);
	cr_assert_eq(rc, 0, "load = %d: %s", rc, errmsg);
	cr_assert_str_eq(tz_name(z), "Test/Zone");
	return z;
}

static void load_bytes_corrupt(test_dir *dir, const void *data, size_t size, const char *what)
{
	tz *z = (tz *)&z; /* not NULL: the call must clear it */
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	int rc = load_bytes(dir, data, size, &z, errmsg);
	cr_assert_eq(rc, TALLY_E_CORRUPT, "%s: load = %d (%s)", what, rc, errmsg);
	cr_assert_null(z);
	cr_assert(strstr(errmsg, dir->path) != NULL, "%s: errmsg names the path: %s", what, errmsg);
}

Test(tz, version_1_file_uses_32_bit_times_and_keeps_the_last_type)
{
	test_dir dir;
	test_dir_make(&dir, "tz-v1");
	uint8_t file[512];
	int64_t times[] = {-1000000000, 0, 1000000000, 1500000000};
	uint8_t indices[] = {1, 2, 2, 1}; /* the third changes nothing */
	int32_t utoffs[] = {555, 3600, 7200};
	size_t size = tzif_make(file, 0, 4, times, indices, 3, utoffs, NULL);
	tz *z = load_bytes_ok(&dir, file, size);
	cr_assert_eq(tz_offset(z, INT64_MIN), 555, "type 0 before the first transition");
	cr_assert_eq(tz_offset(z, -1000000000 * US - 1), 555);
	cr_assert_eq(tz_offset(z, -1000000000 * US), 3600);
	cr_assert_eq(tz_offset(z, 0), 7200);
	cr_assert_eq(tz_offset(z, 1200000000 * US), 7200);
	cr_assert_eq(tz_offset(z, 1500000000 * US), 3600);
	cr_assert_eq(tz_offset(z, INT64_MAX), 3600, "no footer: the last type stays");
	cr_assert_eq(tz_next_transition(z, INT64_MIN), -1000000000 * US);
	cr_assert_eq(tz_next_transition(z, 0), 1500000000 * US, "1000000000 changes nothing");
	cr_assert_eq(tz_next_transition(z, 1500000000 * US), INT64_MAX);
	tz_free(z);
	test_dir_remove(&dir);
}

Test(tz, footer_julian_and_zero_based_days_with_negative_and_167_hour_times)
{
	test_dir dir;
	test_dir_make(&dir, "tz-rule");
	uint8_t file[512];
	int32_t utoffs[] = {0};
	/* no transitions: the rule holds for all time (RFC 8536 section 3.3) */
	size_t size = tzif_make(file, '3', 0, NULL, NULL, 1, utoffs, "<-03>3<-02>,J60/-1,300/167");
	tz *z = load_bytes_ok(&dir, file, size);
	for (int year = 1950; year <= 2150; year++) {
		/* J60 is March 1 in every year; -1:00 local standard (-03) is 02:00Z */
		int64_t start = civil_us(year, 3, 1, 2, 0, 0);
		/* day 300 counting from 0 (Feb 29 counted), 167:00 local daylight (-02) */
		int64_t end = civil_us(year, 1, 1, 0, 0, 0) + 300 * DAY_US + 167 * HOUR_US + 2 * HOUR_US;
		cr_assert_eq(tz_offset(z, start - 1), -10800, "year %d", year);
		cr_assert_eq(tz_offset(z, start), -7200, "year %d", year);
		cr_assert_eq(tz_offset(z, end - 1), -7200, "year %d", year);
		cr_assert_eq(tz_offset(z, end), -10800, "year %d", year);
		cr_assert_eq(tz_next_transition(z, start - 1), start, "year %d", year);
		cr_assert_eq(tz_next_transition(z, start), end, "year %d", year);
	}
	tz_free(z);

	/* J60 skips Feb 29 (March 1); 59 counts it (Feb 29 in leap years) */
	size = tzif_make(file, '2', 0, NULL, NULL, 1, utoffs, "AAA0BBB,59/0,J300/0");
	z = load_bytes_ok(&dir, file, size);
	cr_assert_eq(tz_next_transition(z, civil_us(2024, 1, 1, 0, 0, 0)), civil_us(2024, 2, 29, 0, 0, 0));
	cr_assert_eq(tz_next_transition(z, civil_us(2025, 1, 1, 0, 0, 0)), civil_us(2025, 3, 1, 0, 0, 0));
	/* J300 is October 27 in every year, at 00:00 daylight (+01) */
	cr_assert_eq(tz_next_transition(z, civil_us(2024, 3, 1, 0, 0, 0)), civil_us(2024, 10, 26, 23, 0, 0));
	cr_assert_eq(tz_next_transition(z, civil_us(2025, 3, 2, 0, 0, 0)), civil_us(2025, 10, 26, 23, 0, 0));
	tz_free(z);
	test_dir_remove(&dir);
}

Test(tz, footer_dst_all_year_and_fixed_offset_forms)
{
	test_dir dir;
	test_dir_make(&dir, "tz-allyear");
	uint8_t file[512];
	int64_t times[] = {0};
	uint8_t indices[] = {1};
	int32_t utoffs[] = {-18000, -14400};
	/* RFC 8536 3.3.1: daylight time all year */
	size_t size = tzif_make(file, '3', 1, times, indices, 2, utoffs, "EST5EDT,0/0,J365/25");
	tz *z = load_bytes_ok(&dir, file, size);
	cr_assert_eq(tz_offset(z, -1), -18000);
	cr_assert_eq(tz_offset(z, 0), -14400);
	for (int year = 1971; year < 2200; year += 7) {
		cr_assert_eq(tz_offset(z, civil_us(year, 1, 1, 5, 0, 0)), -14400);
		cr_assert_eq(tz_offset(z, civil_us(year, 7, 1, 5, 0, 0)), -14400);
	}
	cr_assert_eq(tz_next_transition(z, -1), 0);
	cr_assert_eq(tz_next_transition(z, 0), INT64_MAX);
	tz_free(z);

	/* a quoted name and a fixed offset; version 4 is read like 2 and 3 */
	int32_t kolkata[] = {19800};
	size = tzif_make(file, '4', 0, NULL, NULL, 1, kolkata, "<+0530>-5:30");
	z = load_bytes_ok(&dir, file, size);
	cr_assert_eq(tz_offset(z, civil_us(2300, 1, 1, 0, 0, 0)), 19800);
	cr_assert_eq(tz_next_transition(z, INT64_MIN), INT64_MAX);
	tz_free(z);

	/* an empty footer: the last type stays */
	size = tzif_make(file, '2', 1, times, indices, 2, utoffs, "");
	z = load_bytes_ok(&dir, file, size);
	cr_assert_eq(tz_offset(z, INT64_MAX), -14400);
	tz_free(z);

	/* the footer wins after the last transition, even over the table's type */
	size = tzif_make(file, '2', 1, times, indices, 2, utoffs, "XXX-1");
	z = load_bytes_ok(&dir, file, size);
	cr_assert_eq(tz_offset(z, -1), -18000);
	cr_assert_eq(tz_offset(z, 0), 3600);
	cr_assert_eq(tz_next_transition(z, -5), 0);
	tz_free(z);

	/* zic's old "big bang" transition at -2^59 s folds into the initial offset */
	int64_t bang[] = {-(INT64_C(1) << 59), 0};
	uint8_t bang_indices[] = {1, 0};
	size = tzif_make(file, '2', 2, bang, bang_indices, 2, utoffs, "EST5");
	z = load_bytes_ok(&dir, file, size);
	cr_assert_eq(tz_offset(z, INT64_MIN), -14400);
	cr_assert_eq(tz_offset(z, -1), -14400);
	cr_assert_eq(tz_offset(z, 0), -18000);
	cr_assert_eq(tz_next_transition(z, INT64_MIN), 0);
	int64_t start, end;
	tz_bucket(z, TZ_DAY, INT64_MIN, &start, &end, NULL);
	cr_assert(start <= INT64_MIN && end > INT64_MIN);
	tz_bucket(z, TZ_MONTH, INT64_MAX, &start, &end, NULL);
	cr_assert(start <= INT64_MAX && end == INT64_MAX);
	tz_free(z);
	test_dir_remove(&dir);
}

Test(tz, malformed_tzif_files_are_corrupt_with_the_path_in_errmsg)
{
	test_dir dir;
	test_dir_make(&dir, "tz-corrupt");
	uint8_t good[512], bad[512];
	int64_t times[] = {100, 200};
	uint8_t indices[] = {1, 0};
	int32_t utoffs[] = {0, 3600};
	size_t size = tzif_make(good, '2', 2, times, indices, 2, utoffs, "CET-1CEST,M3.5.0,M10.5.0/3");
	tz_free(load_bytes_ok(&dir, good, size));

	memcpy(bad, good, size);
	bad[0] = 'X';
	load_bytes_corrupt(&dir, bad, size, "bad magic");
	memcpy(bad, good, size);
	bad[4] = '1';
	load_bytes_corrupt(&dir, bad, size, "version '1'");
	memcpy(bad, good, size);
	bad[TZIF_V2_TIMES + 7] = 250; /* first time 250 > second 200 */
	load_bytes_corrupt(&dir, bad, size, "times not ascending");
	memcpy(bad, good, size);
	bad[TZIF_V2_TIMES + 16] = 2; /* type index 2 of 2 types */
	load_bytes_corrupt(&dir, bad, size, "type index out of range");
	memcpy(bad, good, size);
	bad[TZIF_V2_TIMES + 18] = 0x80; /* utoff of type 0 = INT32_MIN */
	load_bytes_corrupt(&dir, bad, size, "offset out of range");
	memcpy(bad, good, size);
	bad[TZIF_V2_TIMES + 22] = 2; /* isdst of type 0 */
	load_bytes_corrupt(&dir, bad, size, "isdst not 0 or 1");
	memcpy(bad, good, size);
	bad[54 + 27] = 2; /* isstdcnt 2 in the second header: the footer's bytes become indicators */
	load_bytes_corrupt(&dir, bad, size, "indicators not 0 or 1");
	memcpy(bad, good, size);
	bad[54 + 27] = 1; /* isstdcnt 1 != typecnt 2 */
	load_bytes_corrupt(&dir, bad, size, "isstdcnt differs from typecnt");
	memcpy(bad, good, size);
	bad[54 + 39] = 0; /* typecnt 0 */
	load_bytes_corrupt(&dir, bad, size, "no types");
	memcpy(bad, good, size);
	bad[54 + 4] = '3'; /* the two headers disagree */
	load_bytes_corrupt(&dir, bad, size, "header versions differ");
	memcpy(bad, good, size);
	bad[54 + 35] = 0xff; /* huge timecnt */
	load_bytes_corrupt(&dir, bad, size, "counts beyond the file");
	memcpy(bad, good, size);
	bad[size - 1] = 'x';
	load_bytes_corrupt(&dir, bad, size, "footer without its final newline");
	memcpy(bad, good, size);
	bad[size - 28] = ' ';
	load_bytes_corrupt(&dir, bad, size, "footer without its first newline");

	/* every truncation of a real zone file */
	char path[128];
	snprintf(path, sizeof(path), "%s/paris", dir.path);
	FILE *f = fopen(TZ_DIR "/Europe/Paris", "rb");
	cr_assert_not_null(f);
	static uint8_t paris[64 * 1024];
	size_t paris_size = fread(paris, 1, sizeof(paris), f);
	fclose(f);
	cr_assert(paris_size > 100 && paris_size < sizeof(paris));
	for (size_t cut = 0; cut < paris_size; cut++) {
		char what[64];
		snprintf(what, sizeof(what), "Europe/Paris cut at %zu of %zu", cut, paris_size);
		load_bytes_corrupt(&dir, paris, cut, what);
	}
	tz_free(load_bytes_ok(&dir, paris, paris_size));

	/* files over 1 MiB are refused before reading */
	char big[128];
	snprintf(big, sizeof(big), "%s/big", dir.path);
	int fd = open(big, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, paris, paris_size), (ssize_t)paris_size);
	cr_assert_eq(ftruncate(fd, 1024 * 1024 + 1), 0);
	close(fd);
	tz *z = NULL;
	char errmsg[TALLY_ERRMSG_SIZE];
	cr_assert_eq(tz_load_path(big, "Big", &z, errmsg), TALLY_E_CORRUPT);
	cr_assert(strstr(errmsg, big) != NULL, "%s", errmsg);
	cr_assert_eq(unlink(big), 0);
	/* a missing file through tz_load_path */
	snprintf(big, sizeof(big), "%s/missing", dir.path);
	cr_assert_eq(tz_load_path(big, "Missing/Zone", &z, errmsg), TALLY_E_INVALID);
	cr_assert_str_eq(errmsg, "unknown time zone 'Missing/Zone'");
	test_dir_remove(&dir);
}

Test(tz, malformed_footer_rules_are_corrupt)
{
	test_dir dir;
	test_dir_make(&dir, "tz-footer");
	static const char *footers[] = {
		"CET-1CEST,M3.5.0",            /* no end */
		"CET-1CEST",                   /* DST without a rule */
		"CE-1",                        /* name shorter than 3 */
		"<CE>-1",                      /* quoted name shorter than 3 */
		"<C_T>-1",                     /* bad character in a quoted name */
		"<CET-1",                      /* unterminated quote */
		"CET-25",                      /* offset hours over 24 */
		"CET",                         /* no offset */
		"CET-1:60",                    /* minutes over 59 */
		"CET-1CEST,M13.5.0,M10.5.0",   /* month 13 */
		"CET-1CEST,M3.6.0,M10.5.0",    /* week 6 */
		"CET-1CEST,M3.5.7,M10.5.0",    /* weekday 7 */
		"CET-1CEST,M3.5.0/168,M10.5.0", /* rule hour over 167 */
		"CET-1CEST,J0,M10.5.0",        /* J0 */
		"CET-1CEST,366,M10.5.0",       /* day 366 */
		"CET-1CEST,M3.5.0,M10.5.0/3x", /* trailing garbage */
		"CET-1CEST,M3.5.0,M10.5.0,",   /* trailing comma */
	};
	uint8_t file[512];
	int32_t utoffs[] = {3600};
	for (size_t i = 0; i < sizeof(footers) / sizeof(footers[0]); i++) {
		size_t size = tzif_make(file, '2', 0, NULL, NULL, 1, utoffs, footers[i]);
		load_bytes_corrupt(&dir, file, size, footers[i]);
	}
	static const char *good[] = {
		"CET-1CEST,M3.5.0,M10.5.0/3", "<+0530>-5:30", "EST5EDT,M3.2.0,M11.1.0",
		"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", "IST-1GMT0,M10.5.0,M3.5.0/1",
		"<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", "AAA+3:30:15BBB2,J1/-167,J365/167",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		size_t size = tzif_make(file, '3', 0, NULL, NULL, 1, utoffs, good[i]);
		tz_free(load_bytes_ok(&dir, file, size));
	}
	test_dir_remove(&dir);
}

Test(tz, leap_second_files_are_refused_as_invalid)
{
	test_dir dir;
	test_dir_make(&dir, "tz-leap");
	uint8_t file[512];
	int32_t utoffs[] = {0};
	size_t size = tzif_make(file, '2', 0, NULL, NULL, 1, utoffs, "UTC0");
	/* leapcnt 1 in the second header, and the 12-byte record before the footer */
	file[54 + 31] = 1;
	memmove(file + size - 6 + 12, file + size - 6, 6);
	memset(file + size - 6, 0, 12);
	tz *z = NULL;
	char errmsg[TALLY_ERRMSG_SIZE];
	cr_assert_eq(load_bytes(&dir, file, size + 12, &z, errmsg), TALLY_E_INVALID);
	cr_assert(strstr(errmsg, "leap seconds") != NULL, "%s", errmsg);
	test_dir_remove(&dir);
}

/* ---- Whole years: buckets tile time -------------------------------------------------------- */

/* Walks the buckets of one local year; returns how many there were. */
static int buckets_tile(const tz *z, enum tz_unit unit, int64_t from, int64_t to)
{
	int count = 0;
	int64_t t = from, start, end, label, previous_label = INT64_MIN;
	tz_bucket(z, unit, t, &start, &end, &label);
	t = start;
	while (t < to) {
		tz_bucket(z, unit, t, &start, &end, &label);
		cr_assert_eq(start, t, "%s: buckets tile (t=%lld)", tz_name(z), (long long)t);
		cr_assert(end > start);
		cr_assert(label >= previous_label || unit == TZ_HOUR || unit == TZ_MINUTE,
			  "day and month labels never go back");
		previous_label = label;
		t = end;
		count++;
		cr_assert(count < 10000);
	}
	return count;
}

Test(tz, a_year_of_buckets_tiles_time_with_the_expected_counts)
{
	static const struct {
		const char *zone;
		int hours; /* hour buckets in local 2026 */
	} cases[] = {
		{"Europe/Paris", 8760},       /* one 02:00 missing, one doubled */
		{"America/New_York", 8760},
		{"America/Santiago", 8760},
		{"Australia/Lord_Howe", 8760}, /* one 90-minute and one 30-minute hour */
		{"Asia/Kolkata", 8760},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		tz *z = load(cases[i].zone);
		int64_t from, to, end;
		tz_bucket(z, TZ_DAY, civil_us(2026, 1, 1, 12, 0, 0), &from, &end, NULL);
		tz_bucket(z, TZ_DAY, civil_us(2027, 1, 1, 12, 0, 0), &to, &end, NULL);
		cr_assert_eq(buckets_tile(z, TZ_MONTH, from, to), 12, "%s", cases[i].zone);
		cr_assert_eq(buckets_tile(z, TZ_DAY, from, to), 365, "%s", cases[i].zone);
		cr_assert_eq(buckets_tile(z, TZ_HOUR, from, to), cases[i].hours, "%s", cases[i].zone);
		cr_assert_eq(to - from, 8760 * HOUR_US, "%s: the local year lasts 365 days", cases[i].zone);
		tz_free(z);
	}
	/* Samoa skipped Friday 2011-12-30 entirely: no bucket has that label */
	tz *z = load("Pacific/Apia");
	int64_t start, end, label;
	tz_bucket(z, TZ_DAY, civil_us(2011, 12, 30, 9, 59, 59), &start, &end, &label);
	cr_assert_eq(label, civil_us(2011, 12, 29, 0, 0, 0));
	cr_assert_eq(end, civil_us(2011, 12, 30, 10, 0, 0));
	tz_bucket(z, TZ_DAY, end, &start, &end, &label);
	cr_assert_eq(label, civil_us(2011, 12, 31, 0, 0, 0));
	cr_assert_eq(end - start, 24 * HOUR_US);
	tz_free(z);
}

/* ---- Property test ------------------------------------------------------------------------ */

static const char *const PROPERTY_ZONES[] = {
	"UTC",		     "Europe/Paris",	   "America/New_York", "Asia/Kolkata",
	"Asia/Kathmandu",    "Australia/Lord_Howe", "America/Santiago", "America/Havana",
	"Europe/Dublin",     "Africa/Casablanca",  "Pacific/Chatham",  "America/St_Johns",
	"Antarctica/Troll",  "Pacific/Apia",
};

/* The label of instant x in the test's own arithmetic (glibc's gmtime). */
static int64_t label_of(const tz *z, enum tz_unit unit, int64_t x)
{
	int64_t local = x + (int64_t)tz_offset(z, x) * US;
	int64_t seconds = local / US - (local % US < 0);
	time_t tt = (time_t)seconds;
	struct tm tm;
	cr_assert_not_null(gmtime_r(&tt, &tm));
	switch (unit) {
	case TZ_MINUTE: tm.tm_sec = 0; break;
	case TZ_HOUR: tm.tm_sec = tm.tm_min = 0; break;
	case TZ_DAY: tm.tm_sec = tm.tm_min = tm.tm_hour = 0; break;
	case TZ_MONTH: tm.tm_sec = tm.tm_min = tm.tm_hour = 0; tm.tm_mday = 1; break;
	}
	return (int64_t)timegm(&tm) * US;
}

static int64_t unit_after(enum tz_unit unit, int64_t label)
{
	switch (unit) {
	case TZ_MINUTE: return label + MINUTE_US;
	case TZ_HOUR: return label + HOUR_US;
	case TZ_DAY: return label + DAY_US;
	case TZ_MONTH: {
		time_t tt = (time_t)(label / US);
		struct tm tm;
		gmtime_r(&tt, &tm);
		tm.tm_mon++;
		return (int64_t)timegm(&tm) * US;
	}
	}
	return label;
}

/* At x the clock goes back from the end of the unit to its start (tz.h). */
static bool unit_repeats_at(const tz *z, enum tz_unit unit, int64_t x, int64_t label)
{
	int64_t before = x - 1 + (int64_t)tz_offset(z, x - 1) * US;
	int64_t after = x + (int64_t)tz_offset(z, x) * US;
	return after == label && before + 1 == unit_after(unit, label);
}

struct transition_list {
	int count;
	int64_t at[4096];
	int32_t offset_after[4096];
	int32_t offset_before_first;
};

/* Brute force: every transition in [from, to) by walking tz_next_transition. */
static void transitions_walk(const tz *z, int64_t from, int64_t to, struct transition_list *list)
{
	list->count = 0;
	list->offset_before_first = tz_offset(z, from);
	int64_t t = from;
	for (;;) {
		int64_t next = tz_next_transition(z, t);
		cr_assert(next > t, "%s: transitions progress", tz_name(z));
		if (next >= to)
			break;
		cr_assert(list->count < 4096);
		cr_assert_neq(tz_offset(z, next - 1), tz_offset(z, next),
			      "%s: the offset changes at transition %lld", tz_name(z), (long long)next);
		list->at[list->count] = next;
		list->offset_after[list->count] = tz_offset(z, next);
		list->count++;
		t = next;
	}
}

static int32_t transitions_offset(const struct transition_list *list, int64_t t)
{
	int32_t offset = list->offset_before_first;
	for (int i = 0; i < list->count && list->at[i] <= t; i++)
		offset = list->offset_after[i];
	return offset;
}

static long glibc_offset(int64_t t_us)
{
	time_t tt = (time_t)(t_us / US - (t_us % US < 0));
	struct tm tm;
	cr_assert_not_null(localtime_r(&tt, &tm));
	return tm.tm_gmtoff;
}

static void bucket_check(const tz *z, enum tz_unit unit, int64_t t)
{
	int64_t start, end, label;
	tz_bucket(z, unit, t, &start, &end, &label);
	const char *name = tz_name(z);
	cr_assert(start <= t && t < end, "%s unit %d t=%lld: [%lld, %lld)", name, unit, (long long)t,
		  (long long)start, (long long)end);
	cr_assert_eq(label, label_of(z, unit, t), "%s unit %d t=%lld: label", name, unit, (long long)t);
	cr_assert_eq(label_of(z, unit, start), label, "%s unit %d t=%lld: label at start", name, unit,
		     (long long)t);
	cr_assert_eq(label_of(z, unit, end - 1), label, "%s unit %d t=%lld: label at end-1", name, unit,
		     (long long)t);
	cr_assert(label_of(z, unit, start - 1) != label || unit_repeats_at(z, unit, start, label),
		  "%s unit %d t=%lld: the run does not extend before start", name, unit, (long long)t);
	cr_assert(label_of(z, unit, end) != label || unit_repeats_at(z, unit, end, label),
		  "%s unit %d t=%lld: the run does not extend past end", name, unit, (long long)t);
	/* inside, the label never changes and no unit repeats */
	int64_t x = start;
	for (int steps = 0;; steps++) {
		cr_assert(steps < 100);
		x = tz_next_transition(z, x);
		if (x >= end)
			break;
		cr_assert_eq(label_of(z, unit, x - 1), label, "%s: label before inner transition", name);
		cr_assert_eq(label_of(z, unit, x), label, "%s: label after inner transition", name);
		cr_assert(!unit_repeats_at(z, unit, x, label), "%s: no repeat inside", name);
	}
	/* neighbours tile */
	int64_t next_start, next_end, prev_start, prev_end;
	tz_bucket(z, unit, end, &next_start, &next_end, NULL);
	cr_assert_eq(next_start, end, "%s unit %d t=%lld: next bucket starts at end", name, unit,
		     (long long)t);
	tz_bucket(z, unit, start - 1, &prev_start, &prev_end, NULL);
	cr_assert_eq(prev_end, start, "%s unit %d t=%lld: previous bucket ends at start", name, unit,
		     (long long)t);
	/* the length is one unit plus the offset changes inside */
	int64_t nominal = unit_after(unit, label) - label;
	int64_t span = end - start;
	cr_assert(span > 0 && span <= nominal + 26 * HOUR_US, "%s: length %lld", name, (long long)span);
}

Test(tz, property_buckets_and_offsets_against_oracles)
{
	int64_t from = civil_us(1970, 1, 1, 0, 0, 0);
	int64_t to = civil_us(2100, 1, 1, 0, 0, 0);
	static struct transition_list list;
	for (size_t i = 0; i < sizeof(PROPERTY_ZONES) / sizeof(PROPERTY_ZONES[0]); i++) {
		tz *z = load(PROPERTY_ZONES[i]);
		char env[96];
		snprintf(env, sizeof(env), ":%s", PROPERTY_ZONES[i]);
		cr_assert_eq(setenv("TZ", env, 1), 0); /* the oracle only; tz.c never reads TZ */
		tzset();
		transitions_walk(z, from - DAY_US * 400, to + DAY_US * 400, &list);
		for (int k = 0; k < list.count; k++) {
			cr_assert_eq(glibc_offset(list.at[k] - 1), tz_offset(z, list.at[k] - 1));
			cr_assert_eq(glibc_offset(list.at[k]), tz_offset(z, list.at[k]),
				     "%s: transition %lld", PROPERTY_ZONES[i], (long long)list.at[k]);
		}
		for (int n = 0; n < 1500; n++) {
			int64_t t;
			if (n % 3 == 0 && list.count > 0) /* near a transition */
				t = list.at[rng_below((uint64_t)list.count)] +
				    (int64_t)rng_below(6 * HOUR_US) - 3 * HOUR_US;
			else
				t = from + (int64_t)rng_below((uint64_t)(to - from));
			int32_t offset = tz_offset(z, t);
			cr_assert_eq(offset, transitions_offset(&list, t), "%s t=%lld: brute-force walk",
				     PROPERTY_ZONES[i], (long long)t);
			cr_assert_eq(offset, glibc_offset(t), "%s t=%lld: glibc", PROPERTY_ZONES[i],
				     (long long)t);
			for (int unit = TZ_MINUTE; unit <= TZ_MONTH; unit++)
				bucket_check(z, (enum tz_unit)unit, t);
		}
		tz_free(z);
	}
}

/* ---- Threads ------------------------------------------------------------------------------- */

#define THREAD_COUNT 4
#define THREAD_PROBES 2000

struct thread_job {
	const tz *zone;
	const int64_t *probes;
	int64_t results[THREAD_PROBES][3];
};

static void *thread_run(void *arg)
{
	struct thread_job *job = arg;
	for (int i = 0; i < THREAD_PROBES; i++) {
		tz_bucket(job->zone, (enum tz_unit)(i % 4), job->probes[i], &job->results[i][0],
			  &job->results[i][1], NULL);
		job->results[i][2] = tz_offset(job->zone, job->probes[i]);
	}
	return NULL;
}

Test(tz, one_zone_is_shared_by_threads)
{
	tz *z = load("Australia/Lord_Howe");
	static int64_t probes[THREAD_PROBES];
	static struct thread_job jobs[THREAD_COUNT + 1];
	int64_t from = civil_us(2000, 1, 1, 0, 0, 0);
	for (int i = 0; i < THREAD_PROBES; i++)
		probes[i] = from + (int64_t)rng_below((uint64_t)(100 * 366) * DAY_US);
	for (int j = 0; j <= THREAD_COUNT; j++) {
		jobs[j].zone = z;
		jobs[j].probes = probes;
	}
	thread_run(&jobs[THREAD_COUNT]); /* the reference, alone */
	pthread_t threads[THREAD_COUNT];
	for (int j = 0; j < THREAD_COUNT; j++)
		cr_assert_eq(pthread_create(&threads[j], NULL, thread_run, &jobs[j]), 0);
	for (int j = 0; j < THREAD_COUNT; j++) {
		cr_assert_eq(pthread_join(threads[j], NULL), 0);
		cr_assert_eq(memcmp(jobs[j].results, jobs[THREAD_COUNT].results,
				    sizeof(jobs[j].results)),
			     0, "thread %d agrees", j);
	}
	tz_free(z);
}
