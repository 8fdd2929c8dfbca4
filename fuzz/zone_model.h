/*
 * zone_model.h — an oracle for local time buckets, for fuzz_ops.
 *
 * The engine's buckets (docs/timezones.md) come from engine/tz.c, which
 * reads TZif files itself. This oracle reaches the same answers another
 * way: glibc's localtime_r (its own reader of the same tz database) tells
 * the UTC offset at sample instants of a fixed window, and a bisection
 * finds each instant the offset changes, to the second. Buckets are then
 * derived from that list of transitions by the rules of timezones.md:
 *
 *   - instant t has the label floor_unit(t + offset(t)), the local minute,
 *     hour, day or calendar month it falls in;
 *   - a bucket is a maximal run of instants with the same label, except
 *     that a transition where the clock goes back by exactly one unit at
 *     the end of that unit starts a new bucket with the same label.
 *
 * zone_model_init calls setenv("TZ") and tzset, so it must run before the
 * process starts any thread that could read the environment; after it the
 * oracle is pure arithmetic on its tables. Within [ZONE_WINDOW_FROM_US,
 * ZONE_WINDOW_TO_US) every offset is exact; outside it a zone is taken as
 * frozen at its edge offsets, so callers keep their instants and buckets
 * inside the window.
 */
#ifndef TALLY_FUZZ_ZONE_MODEL_H
#define TALLY_FUZZ_ZONE_MODEL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "support/civil.h"
#include "tally.h"

#define ZONE_TRANSITIONS_MAX 16 /* per zone, in the window */
#define ZONE_SECOND_US INT64_C(1000000)
#define ZONE_MINUTE_US (60 * ZONE_SECOND_US)
#define ZONE_HOUR_US (60 * ZONE_MINUTE_US)
#define ZONE_DAY_US (24 * ZONE_HOUR_US)
#define ZONE_SAMPLE_US (15 * ZONE_MINUTE_US) /* no two transitions are this close */

typedef struct zone_model {
	const char *name;                  /* NULL: UTC */
	int64_t offset0;                   /* offset before the first transition, µs */
	size_t count;                      /* transitions */
	int64_t at[ZONE_TRANSITIONS_MAX];  /* the instants, ascending, µs */
	int64_t offset[ZONE_TRANSITIONS_MAX]; /* the offset from at[i] on */
} zone_model;

static int64_t zone_floor(int64_t t, int64_t unit)
{
	int64_t q = t / unit - (t % unit < 0);
	return q * unit;
}

/* glibc's UTC offset at second s, in seconds (TZ set by the caller). */
static long zone_glibc_offset(int64_t s)
{
	time_t tt = (time_t)s;
	struct tm tm;
	if (!localtime_r(&tt, &tm)) {
		fprintf(stderr, "zone_model: localtime_r failed at %lld\n", (long long)s);
		abort();
	}
	return tm.tm_gmtoff;
}

/* Fills z with the transitions of zone `name` (NULL: UTC) inside [from_us,
 * to_us). Aborts when glibc does not know the zone or the window holds
 * more than ZONE_TRANSITIONS_MAX of them. */
static void zone_model_init(zone_model *z, const char *name, int64_t from_us, int64_t to_us)
{
	*z = (zone_model){.name = name};
	if (!name)
		return;
	char tz[80];
	snprintf(tz, sizeof(tz), ":%s", name);
	if (setenv("TZ", tz, 1))
		abort();
	tzset();
	int64_t lo = from_us / ZONE_SECOND_US;
	long before = zone_glibc_offset(lo);
	z->offset0 = before * ZONE_SECOND_US;
	for (int64_t s = lo; s < to_us / ZONE_SECOND_US;) {
		int64_t step = s + ZONE_SAMPLE_US / ZONE_SECOND_US;
		long after = zone_glibc_offset(step);
		if (after != before) {
			/* The offset changes in (s, step]: bisect to its first second. */
			int64_t a = s, b = step;
			while (b - a > 1) {
				int64_t mid = a + (b - a) / 2;
				if (zone_glibc_offset(mid) == before)
					a = mid;
				else
					b = mid;
			}
			if (z->count == ZONE_TRANSITIONS_MAX) {
				fprintf(stderr, "zone_model: %s has over %d transitions in the window\n", name,
					ZONE_TRANSITIONS_MAX);
				abort();
			}
			z->at[z->count] = b * ZONE_SECOND_US;
			z->offset[z->count++] = after * ZONE_SECOND_US;
			before = after;
		}
		s = step;
	}
	if (z->count == 0 && z->offset0 == 0) {
		/* glibc falls back to UTC for a zone it cannot read: say so
		 * rather than compare the engine with UTC. (No zone fuzz_ops
		 * uses is UTC all year.) */
		fprintf(stderr, "zone_model: glibc does not know %s\n", name);
		abort();
	}
}

/* The segment of t: the index of the first transition after t. */
static size_t zone_segment(const zone_model *z, int64_t t)
{
	size_t i = 0;
	while (i < z->count && z->at[i] <= t)
		i++;
	return i;
}

static int64_t zone_segment_offset(const zone_model *z, size_t i)
{
	return i ? z->offset[i - 1] : z->offset0;
}

/* The unit's length in µs; 0 for a month. */
static int64_t zone_unit_us(int bucket)
{
	switch (bucket) {
	case TALLY_BUCKET_MINUTE:
		return ZONE_MINUTE_US;
	case TALLY_BUCKET_HOUR:
		return ZONE_HOUR_US;
	case TALLY_BUCKET_DAY:
		return ZONE_DAY_US;
	default:
		return 0;
	}
}

/* The start of the local unit that local time `local` falls in. */
static int64_t zone_label(int64_t local, int bucket)
{
	int64_t unit = zone_unit_us(bucket);
	if (unit)
		return zone_floor(local, unit);
	int64_t y;
	int m;
	civil_from_days(zone_floor(local, ZONE_DAY_US) / ZONE_DAY_US, &y, &m);
	return days_from_civil(y, m, 1) * ZONE_DAY_US;
}

/* The start of the local unit after the one labelled `label`. */
static int64_t zone_label_next(int64_t label, int bucket)
{
	int64_t unit = zone_unit_us(bucket);
	if (unit)
		return label + unit;
	int64_t y;
	int m;
	civil_from_days(label / ZONE_DAY_US, &y, &m);
	return days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1) * ZONE_DAY_US;
}

/* Whether transition i starts a bucket whatever the labels: the clock
 * goes back by exactly one unit, at the end of that unit. */
static int zone_forced(const zone_model *z, size_t i, int bucket)
{
	int64_t unit = zone_unit_us(bucket);
	int64_t before = zone_segment_offset(z, i), after = z->offset[i];
	return unit && before - after == unit && zone_floor(z->at[i] + before, unit) == z->at[i] + before;
}

/* Whether transition i is a bucket boundary. */
static int zone_boundary(const zone_model *z, size_t i, int bucket)
{
	int64_t t = z->at[i];
	return zone_label(t - 1 + zone_segment_offset(z, i), bucket) !=
		       zone_label(t + z->offset[i], bucket) ||
	       zone_forced(z, i, bucket);
}

/* The first instant of the bucket that holds t. */
static int64_t zone_bucket_start(const zone_model *z, int bucket, int64_t t)
{
	for (;;) {
		size_t i = zone_segment(z, t);
		int64_t offset = zone_segment_offset(z, i);
		int64_t start = zone_label(t + offset, bucket) - offset;
		if (i == 0 || start > z->at[i - 1])
			return start;
		/* The label's start lies before this segment: the run reaches
		 * back to the transition, and on past it unless that is a
		 * boundary. */
		if (zone_boundary(z, i - 1, bucket))
			return z->at[i - 1];
		t = z->at[i - 1] - 1;
	}
}

/* The instant after the bucket that holds t. */
static int64_t zone_bucket_end(const zone_model *z, int bucket, int64_t t)
{
	for (;;) {
		size_t i = zone_segment(z, t);
		int64_t offset = zone_segment_offset(z, i);
		int64_t end = zone_label_next(zone_label(t + offset, bucket), bucket) - offset;
		if (i == z->count || end < z->at[i])
			return end;
		if (zone_boundary(z, i, bucket))
			return z->at[i];
		t = z->at[i];
	}
}

#endif
