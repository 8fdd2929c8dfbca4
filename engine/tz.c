/*
 * tz.c — IANA time zones: a reader for compiled TZif files (RFC 8536 /
 * RFC 9636, versions 1 to 4), the POSIX TZ rule of their footer, and the
 * local calendar buckets of tz.h.
 *
 * NOTES ON THE DESIGN
 *
 * 1. Source. A zone is read once from TZ_DIR/<name> (Debian's tzdata) with
 *    plain open/read: it is read-only system data, not engine state, so it
 *    does not go through tally_io. Files over TZ_FILE_SIZE_MAX are refused.
 *    Of a version 2+ file only the 64-bit data block and the footer are
 *    used; the version 1 block is checked for size and skipped. Files that
 *    count leap seconds (the right/ zones) are refused: their transition
 *    times are not Unix time, and the engine's clock is.
 *
 * 2. The model. A zone is a step function offset(t): an initial offset,
 *    then the file's transitions, and at and after the file's last
 *    transition the footer's TZ rule (RFC 8536 section 3.3: for all instants
 *    when the file has no transitions). At load time the transitions are
 *    converted to microseconds and only those that change the UTC offset are
 *    kept, so a "transition" here is always an instant where the offset
 *    changes (a change of abbreviation or of the DST flag alone is not one).
 *    The rule is never expanded into a table: the rule's changes around an
 *    instant are computed from a window of seven years of rule events, which
 *    is O(1) whatever the year.
 *
 * 3. The time domain. Instants are modelled inside (-2^62, 2^62) µs, about
 *    ±146,000 years around 1970. Outside it the zone is frozen: offset(t) is
 *    the offset at the nearest edge, and no transition lies outside. Every
 *    sum below (an instant plus an offset of at most 26 hours plus a month)
 *    therefore stays far from int64 overflow.
 *
 * 4. Buckets. The offset is constant on a "segment" [begin, end) between two
 *    transitions, so local(t) = t + offset is increasing inside a segment and
 *    the label floor_unit(local(t)) is non-decreasing. The bucket of t starts
 *    in t's segment at the instant where local time equals the label, unless
 *    that instant lies before the segment; then the run continues into the
 *    previous segment when the label just before the boundary is the same.
 *    The end is found the same way forwards. Consequences:
 *      - gaps (spring forward): a day of 23 hours; when local midnight does
 *        not exist (America/Santiago, America/Havana) the day starts at the
 *        first instant labelled with that day, e.g. 01:00 local;
 *      - overlaps (fall back): a change inside the unit keeps one bucket (a
 *        day of 25 hours; an hour of 90 minutes where Australia/Lord_Howe
 *        sets its clock back 30 minutes), but when the clock is set back by
 *        exactly one unit at the end of that unit (02:00-03:00 is lived twice
 *        in Paris), the repeated unit is a second bucket with the same label.
 *        Strictly, "maximal run with the same label" would merge the two
 *        Paris hours into one of two hours, because they are adjacent in UTC;
 *        tz.h promises two buckets, and this is the rule that keeps them;
 *      - non-whole-hour offsets need nothing special: labels are computed in
 *        local microseconds.
 *    Each bucket visits at most TZ_BUCKET_SEGMENTS_MAX segments (real zones
 *    have at most a few changes in a month); past that it is cut at a
 *    transition.
 *
 * 5. Cost. Finding the segment of an instant is a binary search over the
 *    transitions (O(log n)) or one rule window (O(1)); a bucket needs a few
 *    segments. No loop depends on the input's values except through these
 *    bounds.
 *
 * 6. Threads. A loaded zone is never written after tz_load returns and this
 *    file keeps no static mutable state (tz_utc is a constant object), so a
 *    zone may be used from any number of threads. Nothing here calls
 *    localtime, setenv or tzset.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errmsg.h"
#include "tally.h"
#include "tz.h"

/* ---- Limits and constants ------------------------------------------------------ */

#define TZ_FILE_SIZE_MAX (1024 * 1024)      /* a TZif file larger than this is refused */
#define TZ_OFFSET_ABS_MAX_S 93599           /* |UTC offset| (RFC: -89999..93599) */
#define TZ_POSIX_OFFSET_HOURS_MAX 24        /* POSIX: hh of a TZ offset is 0..24 */
#define TZ_RULE_TIME_HOURS_MAX 167          /* RFC 8536 v3: rule times -167..167 h */
#define TZ_BUCKET_SEGMENTS_MAX 64           /* segments one bucket may span */
#define TZ_RULE_WINDOW_YEARS 7              /* rule events computed around an instant */
#define TZ_RULE_MARGIN_DAYS 10              /* how far a year's events may stray outside it */
#define TZ_TIME_LIMIT_US (INT64_C(1) << 62) /* the modelled domain: (-limit, limit) */
#define TZ_TIME_LIMIT_S INT64_C(4611686018428) /* smallest s with s * 1e6 >= limit */
#define US_PER_S INT64_C(1000000)
#define S_PER_DAY INT64_C(86400)

_Static_assert(TZ_TIME_LIMIT_S * US_PER_S >= TZ_TIME_LIMIT_US &&
		       (TZ_TIME_LIMIT_S - 1) * US_PER_S < TZ_TIME_LIMIT_US,
	       "TZ_TIME_LIMIT_S is the first whole second at or past the domain's edge");
/*
 * A rule event lies within its year's local days (n-form day 365 may be Jan 1
 * of the next year) moved by a time of at most 167 h and an offset of at most
 * 26 h: less than TZ_RULE_MARGIN_DAYS days outside the year.
 */
_Static_assert((TZ_RULE_TIME_HOURS_MAX * 3600 + TZ_OFFSET_ABS_MAX_S) < (TZ_RULE_MARGIN_DAYS - 1) * 86400,
	       "the rule margin covers the largest rule time and offset");

/* ---- The zone -------------------------------------------------------------------- */

enum tz_rule_day_kind {
	TZ_RULE_JULIAN_1 = 0,   /* Jn: 1..365, February 29 never counted */
	TZ_RULE_JULIAN_0,       /* n: 0..365, February 29 counted */
	TZ_RULE_MONTH_WEEK_DAY, /* Mm.w.d: weekday d of week w (5 = last) of month m */
};

struct tz_rule_date {
	enum tz_rule_day_kind kind;
	int day;       /* Jn and n forms */
	int month;     /* 1..12 */
	int week;      /* 1..5 */
	int weekday;   /* 0 = Sunday .. 6 */
	int32_t time_s; /* local time of day of the change, -167 h .. 167 h */
};

/* The footer rule, offsets in seconds east of UTC (POSIX writes them west). */
struct tz_rule {
	int32_t std_offset_s;
	int32_t dst_offset_s;
	bool has_dst;
	struct tz_rule_date start; /* in local standard time; to dst_offset_s */
	struct tz_rule_date end;   /* in local daylight time; to std_offset_s */
};

struct tz {
	char name[TZ_NAME_SIZE_MAX + 1];
	int32_t offset_initial_s;     /* before the first transition */
	uint32_t transition_count;
	const int64_t *transition_us; /* ascending; each changes the offset */
	const int32_t *offset_after_s; /* offset from transition_us[i] on */
	bool has_rule;                /* the footer rule applies from rule_from_us */
	int64_t rule_from_us;         /* the file's last transition (INT64_MIN: none) */
	struct tz_rule rule;
};

/* One constant-offset stretch of the zone: [begin_us, end_us). */
struct tz_segment {
	int64_t begin_us; /* INT64_MIN when no transition precedes */
	int64_t end_us;   /* INT64_MAX when no transition follows */
	int32_t offset_s;
};

/* The one zone that needs no file. Never written; tz_free ignores it. */
static const struct tz tz_utc_zone = {
	.name = "UTC",
	.offset_initial_s = 0,
	.transition_count = 0,
	.transition_us = NULL,
	.offset_after_s = NULL,
	.has_rule = false,
	.rule_from_us = INT64_MIN,
};

/* ---- Calendar arithmetic (proleptic Gregorian, days since 1970-01-01) --------------- */

static int64_t floor_div(int64_t a, int64_t b)
{
	assert(b > 0);
	int64_t q = a / b;
	if (a % b < 0)
		q--;
	return q;
}

static bool year_is_leap(int64_t year)
{
	return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

static int month_days(int64_t year, int month)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	assert(month >= 1 && month <= 12);
	return days[month - 1] + (month == 2 && year_is_leap(year));
}

/*
 * Days from 1970-01-01 to year-month-day. The year is counted from March so
 * that the leap day is the last day of a counted year; 400 years are exactly
 * 146097 days, so an "era" of 400 years reduces any year to 0..399.
 */
static int64_t days_from_civil(int64_t year, int month, int day)
{
	assert(month >= 1 && month <= 12);
	int64_t march_year = year - (month <= 2);
	int64_t era = floor_div(march_year, 400);
	int64_t year_of_era = march_year - era * 400;     /* 0..399 */
	int64_t month_from_march = (month + 9) % 12;      /* March 0 .. February 11 */
	int64_t day_of_year = (153 * month_from_march + 2) / 5 + day - 1; /* 0..365 */
	int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
	return era * 146097 + day_of_era - 719468; /* 719468: 0000-03-01 to 1970-01-01 */
}

/* The inverse of days_from_civil. */
static void civil_from_days(int64_t days, int64_t *year, int *month, int *day)
{
	int64_t shifted = days + 719468;
	int64_t era = floor_div(shifted, 146097);
	int64_t day_of_era = shifted - era * 146097; /* 0..146096 */
	int64_t year_of_era =
		(day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
	int64_t day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
	int64_t month_from_march = (5 * day_of_year + 2) / 153;
	*day = (int)(day_of_year - (153 * month_from_march + 2) / 5 + 1);
	*month = (int)(month_from_march < 10 ? month_from_march + 3 : month_from_march - 9);
	*year = year_of_era + era * 400 + (*month <= 2);
}

/* 0 = Sunday; 1970-01-01 was a Thursday. */
static int weekday_from_days(int64_t days)
{
	int64_t w = (days + 4) % 7;
	return (int)(w < 0 ? w + 7 : w);
}

/* ---- Local units ------------------------------------------------------------------ */

static int64_t unit_floor(enum tz_unit unit, int64_t local_us)
{
	switch (unit) {
	case TZ_MINUTE: return floor_div(local_us, 60 * US_PER_S) * 60 * US_PER_S;
	case TZ_HOUR: return floor_div(local_us, 3600 * US_PER_S) * 3600 * US_PER_S;
	case TZ_DAY: return floor_div(local_us, S_PER_DAY * US_PER_S) * S_PER_DAY * US_PER_S;
	case TZ_MONTH: {
		int64_t year;
		int month, day;
		civil_from_days(floor_div(local_us, S_PER_DAY * US_PER_S), &year, &month, &day);
		return days_from_civil(year, month, 1) * S_PER_DAY * US_PER_S;
	}
	}
	assert(!"unknown tz_unit");
	return local_us;
}

/* The start of the unit after the one starting at label_us. */
static int64_t unit_next(enum tz_unit unit, int64_t label_us)
{
	switch (unit) {
	case TZ_MINUTE: return label_us + 60 * US_PER_S;
	case TZ_HOUR: return label_us + 3600 * US_PER_S;
	case TZ_DAY: return label_us + S_PER_DAY * US_PER_S;
	case TZ_MONTH: {
		int64_t year;
		int month, day;
		civil_from_days(floor_div(label_us, S_PER_DAY * US_PER_S), &year, &month, &day);
		return label_us + month_days(year, month) * S_PER_DAY * US_PER_S;
	}
	}
	assert(!"unknown tz_unit");
	return label_us;
}

/* ---- The footer rule --------------------------------------------------------------- */

/* The local day (days since 1970-01-01) on which `date` falls in `year`. */
static int64_t rule_date_days(const struct tz_rule_date *date, int64_t year)
{
	int64_t jan1 = days_from_civil(year, 1, 1);
	switch (date->kind) {
	case TZ_RULE_JULIAN_1:
		return jan1 + date->day - 1 + (year_is_leap(year) && date->day >= 60);
	case TZ_RULE_JULIAN_0:
		return jan1 + date->day;
	case TZ_RULE_MONTH_WEEK_DAY: {
		int64_t first = days_from_civil(year, date->month, 1);
		int64_t day = first + (date->weekday - weekday_from_days(first) + 7) % 7 +
			      7 * (date->week - 1);
		if (day >= first + month_days(year, date->month))
			day -= 7; /* week 5: the last such weekday of the month */
		return day;
	}
	}
	assert(!"unknown rule date kind");
	return jan1;
}

struct rule_event {
	int64_t at_s;     /* UTC seconds */
	int32_t offset_s; /* the offset from at_s on */
};

/*
 * The rule's events of TZ_RULE_WINDOW_YEARS years centred on the local year
 * of t, in time order (simultaneous events merged into the last, so that an
 * end of DST at the very instant the next DST starts leaves DST on). Only
 * instants strictly inside (trusted_lo_s, trusted_hi_s) are sure to see
 * every event of every year around them.
 */
struct rule_window {
	int count;
	struct rule_event events[2 * TZ_RULE_WINDOW_YEARS];
	int64_t trusted_lo_s;
	int64_t trusted_hi_s;
};

static void rule_window_fill(const struct tz_rule *rule, int64_t t_s, struct rule_window *w)
{
	int64_t year;
	int month, day;
	civil_from_days(floor_div(t_s + rule->std_offset_s, S_PER_DAY), &year, &month, &day);
	int64_t year_first = year - TZ_RULE_WINDOW_YEARS / 2;
	w->count = 0;
	for (int k = 0; k < TZ_RULE_WINDOW_YEARS; k++) {
		int64_t y = year_first + k;
		struct rule_event pair[2] = {
			{rule_date_days(&rule->start, y) * S_PER_DAY + rule->start.time_s -
				 rule->std_offset_s,
			 rule->dst_offset_s},
			{rule_date_days(&rule->end, y) * S_PER_DAY + rule->end.time_s -
				 rule->dst_offset_s,
			 rule->std_offset_s},
		};
		for (int e = 0; e < 2; e++) { /* stable insertion: ties keep year, start, end order */
			int at = w->count;
			while (at > 0 && w->events[at - 1].at_s > pair[e].at_s) {
				w->events[at] = w->events[at - 1];
				at--;
			}
			w->events[at] = pair[e];
			w->count++;
		}
	}
	int kept = 0;
	for (int i = 0; i < w->count; i++) {
		if (kept > 0 && w->events[kept - 1].at_s == w->events[i].at_s)
			w->events[kept - 1] = w->events[i];
		else
			w->events[kept++] = w->events[i];
	}
	w->count = kept;
	int64_t half = TZ_RULE_WINDOW_YEARS / 2;
	w->trusted_lo_s = days_from_civil(year - half + 1, 1, 1) * S_PER_DAY +
			  TZ_RULE_MARGIN_DAYS * S_PER_DAY;
	w->trusted_hi_s = days_from_civil(year + half, 1, 1) * S_PER_DAY -
			  TZ_RULE_MARGIN_DAYS * S_PER_DAY;
}

/* Seconds to microseconds for a rule change, outside the domain = none. */
static int64_t change_s_to_us(int64_t at_s, int64_t none)
{
	if (at_s <= -TZ_TIME_LIMIT_S || at_s >= TZ_TIME_LIMIT_S)
		return none;
	return at_s * US_PER_S;
}

/* The rule's segment around t (t inside the domain). */
static void rule_segment(const struct tz_rule *rule, int64_t t_us, struct tz_segment *seg)
{
	seg->begin_us = INT64_MIN;
	seg->end_us = INT64_MAX;
	seg->offset_s = rule->std_offset_s;
	if (!rule->has_dst)
		return;
	int64_t t_s = floor_div(t_us, US_PER_S); /* changes are whole seconds */
	struct rule_window w;
	rule_window_fill(rule, t_s, &w);
	int last = -1; /* the last event at or before t */
	while (last + 1 < w.count && w.events[last + 1].at_s <= t_s)
		last++;
	if (last >= 0)
		seg->offset_s = w.events[last].offset_s;
	for (int i = last; i >= 1 && w.events[i].at_s > w.trusted_lo_s; i--)
		if (w.events[i].offset_s != w.events[i - 1].offset_s) {
			seg->begin_us = change_s_to_us(w.events[i].at_s, INT64_MIN);
			break;
		}
	for (int i = last + 1; i < w.count && w.events[i].at_s < w.trusted_hi_s; i++)
		if (i >= 1 && w.events[i].offset_s != w.events[i - 1].offset_s) {
			seg->end_us = change_s_to_us(w.events[i].at_s, INT64_MAX);
			break;
		}
}

/* ---- The zone as a step function ----------------------------------------------------- */

/* Index of the last transition at or before t, or -1. */
static int64_t transition_index(const tz *z, int64_t t_us)
{
	uint32_t lo = 0, hi = z->transition_count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (z->transition_us[mid] <= t_us)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (int64_t)lo - 1;
}

static int32_t data_offset(const tz *z, int64_t t_us)
{
	int64_t i = transition_index(z, t_us);
	return i < 0 ? z->offset_initial_s : z->offset_after_s[i];
}

/* The segment holding t: O(log n) for the file's table, O(1) for the rule. */
static void zone_segment(const tz *z, int64_t t_us, struct tz_segment *seg)
{
	if (t_us <= -TZ_TIME_LIMIT_US)
		t_us = -TZ_TIME_LIMIT_US + 1;
	else if (t_us >= TZ_TIME_LIMIT_US)
		t_us = TZ_TIME_LIMIT_US - 1;
	if (z->has_rule && t_us >= z->rule_from_us) {
		rule_segment(&z->rule, t_us, seg);
		if (seg->begin_us > z->rule_from_us || z->rule_from_us == INT64_MIN)
			return;
		/* No rule change in (rule_from, t]: the segment may begin at the hand-over. */
		if (data_offset(z, z->rule_from_us - 1) != seg->offset_s) {
			seg->begin_us = z->rule_from_us;
		} else {
			int64_t i = transition_index(z, z->rule_from_us - 1);
			seg->begin_us = i < 0 ? INT64_MIN : z->transition_us[i];
		}
		return;
	}
	int64_t i = transition_index(z, t_us);
	seg->offset_s = i < 0 ? z->offset_initial_s : z->offset_after_s[i];
	seg->begin_us = i < 0 ? INT64_MIN : z->transition_us[i];
	if (i + 1 < (int64_t)z->transition_count) {
		seg->end_us = z->transition_us[i + 1];
	} else if (!z->has_rule || z->rule_from_us == INT64_MAX) {
		seg->end_us = INT64_MAX;
	} else { /* the rule takes over at rule_from_us > t */
		struct tz_segment after;
		rule_segment(&z->rule, z->rule_from_us, &after);
		seg->end_us = after.offset_s != seg->offset_s ? z->rule_from_us : after.end_us;
	}
}

/* ---- Public queries --------------------------------------------------------------- */

tz *tz_utc(void)
{
	return (tz *)&tz_utc_zone; /* constant; never written through */
}

void tz_free(tz *z)
{
	if (z != &tz_utc_zone)
		free(z);
}

const char *tz_name(const tz *z)
{
	assert(z);
	return z->name;
}

int32_t tz_offset(const tz *z, int64_t t_us)
{
	assert(z);
	struct tz_segment seg;
	zone_segment(z, t_us, &seg);
	return seg.offset_s;
}

int64_t tz_next_transition(const tz *z, int64_t t_us)
{
	assert(z);
	if (t_us >= TZ_TIME_LIMIT_US)
		return INT64_MAX;
	struct tz_segment seg;
	zone_segment(z, t_us, &seg);
	return seg.end_us;
}

/* True when at instant x the clock is set back from the end of the unit
 * [label, next) to its start: the whole unit is lived a second time. */
static bool unit_repeats_at(int64_t x, int32_t offset_before_s, int32_t offset_after_s,
			    int64_t label_us, int64_t next_us)
{
	return x + offset_before_s * US_PER_S == next_us && x + offset_after_s * US_PER_S == label_us;
}

static int64_t bucket_start(const tz *z, enum tz_unit unit, struct tz_segment seg, int64_t label_us,
			    int64_t next_us)
{
	for (int step = 0; step < TZ_BUCKET_SEGMENTS_MAX; step++) {
		int64_t first = label_us - seg.offset_s * US_PER_S; /* local time == label */
		if (first > seg.begin_us || seg.begin_us == INT64_MIN)
			return first;
		int64_t x = seg.begin_us;
		struct tz_segment before;
		zone_segment(z, x - 1, &before);
		if (unit_floor(unit, x - 1 + before.offset_s * US_PER_S) != label_us)
			return x;
		if (unit_repeats_at(x, before.offset_s, seg.offset_s, label_us, next_us))
			return x;
		seg = before;
	}
	return seg.begin_us; /* past the bound: cut at a transition */
}

static int64_t bucket_end(const tz *z, enum tz_unit unit, struct tz_segment seg, int64_t label_us,
			  int64_t next_us)
{
	for (int step = 0; step < TZ_BUCKET_SEGMENTS_MAX; step++) {
		int64_t reach = next_us - seg.offset_s * US_PER_S; /* local time == next label */
		if (reach < seg.end_us)
			return reach;
		int64_t x = seg.end_us;
		struct tz_segment after;
		zone_segment(z, x, &after);
		if (unit_floor(unit, x + after.offset_s * US_PER_S) != label_us)
			return x;
		if (unit_repeats_at(x, seg.offset_s, after.offset_s, label_us, next_us))
			return x;
		seg = after;
	}
	return seg.end_us;
}

void tz_bucket(const tz *z, enum tz_unit unit, int64_t t_us, int64_t *start_us, int64_t *end_us,
	       int64_t *label_us)
{
	assert(z && start_us && end_us);
	assert(unit == TZ_MINUTE || unit == TZ_HOUR || unit == TZ_DAY || unit == TZ_MONTH);
	int64_t start, end, label;
	if (t_us < -TZ_TIME_LIMIT_US) {
		start = INT64_MIN;
		end = -TZ_TIME_LIMIT_US;
		label = INT64_MIN;
	} else if (t_us >= TZ_TIME_LIMIT_US) {
		start = TZ_TIME_LIMIT_US;
		end = INT64_MAX;
		label = INT64_MAX;
	} else {
		struct tz_segment seg;
		zone_segment(z, t_us, &seg);
		label = unit_floor(unit, t_us + seg.offset_s * US_PER_S);
		int64_t next = unit_next(unit, label);
		start = bucket_start(z, unit, seg, label, next);
		end = bucket_end(z, unit, seg, label, next);
		if (start < -TZ_TIME_LIMIT_US)
			start = -TZ_TIME_LIMIT_US;
		if (end > TZ_TIME_LIMIT_US)
			end = TZ_TIME_LIMIT_US;
		assert(start <= t_us && t_us < end);
	}
	*start_us = start;
	*end_us = end;
	if (label_us)
		*label_us = label;
}

/* ---- The POSIX TZ string of the footer --------------------------------------------- */

static bool ascii_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool ascii_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

struct tz_string {
	const char *at;
	const char *end;
};

static bool tz_string_eat(struct tz_string *s, char c)
{
	if (s->at < s->end && *s->at == c) {
		s->at++;
		return true;
	}
	return false;
}

/* An abbreviation: three or more letters, or <...> of [A-Za-z0-9+-]. */
static bool tz_string_name(struct tz_string *s)
{
	size_t length = 0;
	if (tz_string_eat(s, '<')) {
		while (s->at < s->end && *s->at != '>') {
			char c = *s->at;
			if (!ascii_alpha(c) && !ascii_digit(c) && c != '+' && c != '-')
				return false;
			s->at++;
			length++;
		}
		return tz_string_eat(s, '>') && length >= 3;
	}
	while (s->at < s->end && ascii_alpha(*s->at)) {
		s->at++;
		length++;
	}
	return length >= 3;
}

/* Digits into *value, at most max_digits of them and a value <= max. */
static bool tz_string_number(struct tz_string *s, int max_digits, int max, int *value)
{
	int digits = 0, v = 0;
	while (s->at < s->end && ascii_digit(*s->at) && digits < max_digits) {
		v = v * 10 + (*s->at - '0');
		s->at++;
		digits++;
	}
	if (digits == 0 || v > max || (s->at < s->end && ascii_digit(*s->at)))
		return false;
	*value = v;
	return true;
}

/* [+|-]hh[:mm[:ss]] with hh <= hours_max, into signed seconds. */
static bool tz_string_hms(struct tz_string *s, int hours_max, int32_t *seconds)
{
	int sign = 1, hours, minutes = 0, secs = 0;
	if (tz_string_eat(s, '-'))
		sign = -1;
	else
		tz_string_eat(s, '+');
	if (!tz_string_number(s, 3, hours_max, &hours))
		return false;
	if (tz_string_eat(s, ':')) {
		if (!tz_string_number(s, 2, 59, &minutes))
			return false;
		if (tz_string_eat(s, ':') && !tz_string_number(s, 2, 59, &secs))
			return false;
	}
	*seconds = sign * (hours * 3600 + minutes * 60 + secs);
	return true;
}

/* Jn, n or Mm.w.d, then an optional /time (default 02:00:00). */
static bool tz_string_date(struct tz_string *s, struct tz_rule_date *date)
{
	memset(date, 0, sizeof(*date));
	if (tz_string_eat(s, 'J')) {
		date->kind = TZ_RULE_JULIAN_1;
		if (!tz_string_number(s, 3, 365, &date->day) || date->day < 1)
			return false;
	} else if (tz_string_eat(s, 'M')) {
		date->kind = TZ_RULE_MONTH_WEEK_DAY;
		if (!tz_string_number(s, 2, 12, &date->month) || date->month < 1 ||
		    !tz_string_eat(s, '.') || !tz_string_number(s, 1, 5, &date->week) ||
		    date->week < 1 || !tz_string_eat(s, '.') ||
		    !tz_string_number(s, 1, 6, &date->weekday))
			return false;
	} else {
		date->kind = TZ_RULE_JULIAN_0;
		if (!tz_string_number(s, 3, 365, &date->day))
			return false;
	}
	date->time_s = 2 * 3600;
	if (tz_string_eat(s, '/'))
		return tz_string_hms(s, TZ_RULE_TIME_HOURS_MAX, &date->time_s);
	return true;
}

/*
 * Parses "std offset [dst [offset] ,start[/time],end[/time]]" (POSIX, with
 * the RFC 8536 extensions). Returns false when the string is malformed. A
 * DST name without a rule is refused: POSIX leaves that rule to the
 * implementation, and zic always writes one.
 */
static bool tz_rule_parse(const char *text, size_t size, struct tz_rule *rule)
{
	struct tz_string s = {text, text + size};
	int32_t west_s;
	memset(rule, 0, sizeof(*rule));
	if (!tz_string_name(&s) || !tz_string_hms(&s, TZ_POSIX_OFFSET_HOURS_MAX, &west_s))
		return false;
	rule->std_offset_s = -west_s;
	if (s.at == s.end)
		return true;
	if (!tz_string_name(&s))
		return false;
	rule->has_dst = true;
	rule->dst_offset_s = rule->std_offset_s + 3600;
	if (s.at < s.end && *s.at != ',') {
		if (!tz_string_hms(&s, TZ_POSIX_OFFSET_HOURS_MAX, &west_s))
			return false;
		rule->dst_offset_s = -west_s;
	}
	if (!tz_string_eat(&s, ',') || !tz_string_date(&s, &rule->start) ||
	    !tz_string_eat(&s, ',') || !tz_string_date(&s, &rule->end) || s.at != s.end)
		return false;
	/* RFC 8536 3.3.1: "starts Jan 1 00:00, ends Dec 31 24:00 + (dst - std)" is DST all year. */
	bool starts_jan1 = (rule->start.kind == TZ_RULE_JULIAN_0 && rule->start.day == 0) ||
			   (rule->start.kind == TZ_RULE_JULIAN_1 && rule->start.day == 1);
	bool ends_dec31 = rule->end.kind == TZ_RULE_JULIAN_1 && rule->end.day == 365;
	if (starts_jan1 && rule->start.time_s == 0 && ends_dec31 &&
	    rule->end.time_s == 24 * 3600 + rule->dst_offset_s - rule->std_offset_s) {
		rule->has_dst = false;
		rule->std_offset_s = rule->dst_offset_s;
	}
	return true;
}

/* ---- The TZif file ------------------------------------------------------------------- */

#define TZIF_HEADER_SIZE 44


static uint32_t be32_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static int64_t be64_get(const uint8_t *p)
{
	return (int64_t)((uint64_t)be32_get(p) << 32 | be32_get(p + 4));
}

struct tzif_counts {
	uint32_t isut;
	uint32_t isstd;
	uint32_t leap;
	uint32_t time;
	uint32_t type;
	uint32_t chars;
};

/* The header at data[pos]; returns a problem, or NULL. */
static const char *tzif_header_read(const uint8_t *data, size_t size, size_t pos, uint8_t *version,
				    struct tzif_counts *counts)
{
	if (size - pos < TZIF_HEADER_SIZE)
		return "truncated header";
	const uint8_t *p = data + pos;
	if (memcmp(p, "TZif", 4) != 0)
		return "not a TZif file (bad magic)";
	*version = p[4];
	if (*version != 0 && *version < '2')
		return "unknown TZif version";
	counts->isut = be32_get(p + 20);
	counts->isstd = be32_get(p + 24);
	counts->leap = be32_get(p + 28);
	counts->time = be32_get(p + 32);
	counts->type = be32_get(p + 36);
	counts->chars = be32_get(p + 40);
	return NULL;
}

static uint64_t tzif_block_size(const struct tzif_counts *c, unsigned time_size)
{
	return (uint64_t)c->time * (time_size + 1) + (uint64_t)c->type * 6 + c->chars +
	       (uint64_t)c->leap * (time_size + 4) + c->isstd + c->isut;
}

/* The parts of a checked data block. */
struct tzif_block {
	const uint8_t *times;   /* time_size bytes each, big-endian */
	const uint8_t *indices; /* one byte each */
	const uint8_t *types;   /* 6 bytes each: utoff, isdst, desigidx */
	unsigned time_size;
	uint32_t time_count;
};

static int64_t tzif_block_time(const struct tzif_block *b, uint32_t i)
{
	const uint8_t *p = b->times + (size_t)i * b->time_size;
	return b->time_size == 8 ? be64_get(p) : (int64_t)(int32_t)be32_get(p);
}

static int32_t tzif_block_utoff(const struct tzif_block *b, uint32_t type)
{
	return (int32_t)be32_get(b->types + (size_t)type * 6);
}

/* Checks the block at data[pos] (RFC 8536 section 3.2); returns a problem, or NULL. */
static const char *tzif_block_check(const uint8_t *data, size_t size, size_t pos,
				    const struct tzif_counts *c, unsigned time_size,
				    struct tzif_block *b)
{
	if (c->type == 0)
		return "no local time types";
	if (c->chars == 0)
		return "no designation characters";
	if ((c->isstd != 0 && c->isstd != c->type) || (c->isut != 0 && c->isut != c->type))
		return "indicator counts differ from the type count";
	if (tzif_block_size(c, time_size) > size - pos)
		return "truncated data block";
	const uint8_t *p = data + pos;
	b->time_size = time_size;
	b->time_count = c->time;
	b->times = p;
	b->indices = b->times + (size_t)c->time * time_size;
	b->types = b->indices + c->time;
	for (uint32_t i = 1; i < c->time; i++)
		if (tzif_block_time(b, i - 1) >= tzif_block_time(b, i))
			return "transition times not in ascending order";
	for (uint32_t i = 0; i < c->time; i++)
		if (b->indices[i] >= c->type)
			return "transition type index out of range";
	for (uint32_t i = 0; i < c->type; i++) {
		const uint8_t *t = b->types + (size_t)i * 6;
		int32_t utoff = (int32_t)be32_get(t);
		if (utoff < -TZ_OFFSET_ABS_MAX_S || utoff > TZ_OFFSET_ABS_MAX_S)
			return "UTC offset out of range";
		if (t[4] > 1 || t[5] >= c->chars)
			return "bad local time type record";
	}
	const uint8_t *indicators = b->types + (size_t)c->type * 6 + c->chars +
				    (size_t)c->leap * (time_size + 4);
	for (uint32_t i = 0; i < c->isstd + c->isut; i++)
		if (indicators[i] > 1)
			return "bad standard/UT indicator";
	return NULL;
}

/*
 * Builds the zone from a checked block and the footer rule. The transition
 * that opens the rule's reign (the last one) and transitions that do not
 * change the offset are not kept; transitions outside the domain are folded
 * into the initial offset (before) or dropped (after).
 */
static tz *tz_build(const char *name, const struct tzif_block *b, const struct tz_rule *rule,
		    bool has_rule)
{
	uint32_t table_count = b->time_count;
	if (has_rule && table_count > 0)
		table_count--;
	size_t bytes = sizeof(struct tz) + (size_t)table_count * (sizeof(int64_t) + sizeof(int32_t));
	struct tz *z = malloc(bytes);
	if (!z)
		return NULL;
	memset(z, 0, sizeof(*z));
	snprintf(z->name, sizeof(z->name), "%s", name);
	int64_t *times = (int64_t *)(z + 1); /* sizeof(struct tz) is a multiple of 8 */
	int32_t *offsets = (int32_t *)(times + table_count);
	int32_t offset = tzif_block_utoff(b, 0); /* RFC 8536: type 0 before the first transition */
	uint32_t count = 0;
	z->offset_initial_s = offset;
	for (uint32_t i = 0; i < table_count; i++) {
		int64_t at_s = tzif_block_time(b, i);
		int32_t after = tzif_block_utoff(b, b->indices[i]);
		if (at_s >= TZ_TIME_LIMIT_S)
			break;
		if (at_s <= -TZ_TIME_LIMIT_S) {
			z->offset_initial_s = offset = after;
			continue;
		}
		if (after == offset)
			continue;
		times[count] = at_s * US_PER_S;
		offsets[count] = after;
		count++;
		offset = after;
	}
	z->transition_count = count;
	z->transition_us = times;
	z->offset_after_s = offsets;
	z->has_rule = has_rule;
	z->rule_from_us = INT64_MIN;
	if (has_rule) {
		z->rule = *rule;
		if (b->time_count > 0) {
			int64_t last_s = tzif_block_time(b, b->time_count - 1);
			z->rule_from_us = last_s <= -TZ_TIME_LIMIT_S ? INT64_MIN
					  : last_s >= TZ_TIME_LIMIT_S ? INT64_MAX
								       : last_s * US_PER_S;
		}
	}
	return z;
}

static int tz_corrupt(char *errmsg, const char *path, const char *problem)
{
	errmsg_set(errmsg, "time zone file %s: %s", path, problem);
	return TALLY_E_CORRUPT;
}

/* Parses a whole TZif file image into *out. */
static int tzif_parse(const uint8_t *data, size_t size, const char *path, const char *name,
		      tz **out, char *errmsg)
{
	uint8_t version;
	struct tzif_counts counts;
	const char *problem = tzif_header_read(data, size, 0, &version, &counts);
	if (problem)
		return tz_corrupt(errmsg, path, problem);
	size_t pos = TZIF_HEADER_SIZE;
	unsigned time_size = 4;
	if (version != 0) { /* skip the version 1 block: the 64-bit one follows */
		if (tzif_block_size(&counts, 4) > size - pos)
			return tz_corrupt(errmsg, path, "truncated version 1 data block");
		pos += (size_t)tzif_block_size(&counts, 4);
		uint8_t version2;
		problem = tzif_header_read(data, size, pos, &version2, &counts);
		if (problem)
			return tz_corrupt(errmsg, path, problem);
		if (version2 != version)
			return tz_corrupt(errmsg, path, "the two headers differ in version");
		pos += TZIF_HEADER_SIZE;
		time_size = 8;
	}
	if (counts.leap != 0) {
		errmsg_set(errmsg,
			   "time zone '%s' counts leap seconds (%s); use the zone without leap "
			   "seconds (not under right/)",
			   name, path);
		return TALLY_E_INVALID;
	}
	struct tzif_block block;
	problem = tzif_block_check(data, size, pos, &counts, time_size, &block);
	if (problem)
		return tz_corrupt(errmsg, path, problem);
	pos += (size_t)tzif_block_size(&counts, time_size);
	struct tz_rule rule;
	bool has_rule = false;
	if (version != 0) { /* footer: "\n" TZ string "\n" */
		if (pos >= size || data[pos] != '\n')
			return tz_corrupt(errmsg, path, "missing footer");
		const uint8_t *text = data + pos + 1;
		const uint8_t *newline = memchr(text, '\n', size - pos - 1);
		if (!newline)
			return tz_corrupt(errmsg, path, "unterminated footer");
		size_t text_size = (size_t)(newline - text);
		if (text_size > 0) {
			if (!tz_rule_parse((const char *)text, text_size, &rule))
				return tz_corrupt(errmsg, path, "malformed TZ string in footer");
			has_rule = true;
		}
	}
	tz *z = tz_build(name, &block, &rule, has_rule);
	if (!z) {
		errmsg_set(errmsg, "out of memory loading time zone %s", path);
		return -ENOMEM;
	}
	*out = z;
	return 0;
}

/*
 * Reads the whole file into a malloc'd buffer (*data, *size). A missing file
 * or a directory is an unknown zone (TALLY_E_INVALID).
 */
static int tz_file_read(const char *path, const char *name, uint8_t **data, size_t *size,
			char *errmsg)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		int err = errno;
		if (err == ENOENT || err == ENOTDIR || err == ELOOP || err == ENAMETOOLONG) {
			errmsg_set(errmsg, "unknown time zone '%s'", name);
			return TALLY_E_INVALID;
		}
		errmsg_set(errmsg, "open %s: %s", path, strerror(err));
		return -err;
	}
	const char *failed_op = "fstat";
	int rc = 0;
	uint8_t *buffer = NULL;
	size_t filled = 0;
	struct stat st;
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		errmsg_set(errmsg, "unknown time zone '%s'", name);
		return TALLY_E_INVALID;
	}
	if (st.st_size > TZ_FILE_SIZE_MAX) {
		close(fd);
		errmsg_set(errmsg, "time zone file %s: larger than %d bytes", path, TZ_FILE_SIZE_MAX);
		return TALLY_E_CORRUPT;
	}
	size_t capacity = (size_t)st.st_size;
	buffer = malloc(capacity > 0 ? capacity : 1);
	if (!buffer) {
		close(fd);
		errmsg_set(errmsg, "out of memory reading %s", path);
		return -ENOMEM;
	}
	failed_op = "read";
	while (filled < capacity) { /* ends: each pass reads >= 1 byte or stops */
		ssize_t n = read(fd, buffer + filled, capacity - filled);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto fail;
		}
		if (n == 0)
			break; /* shrank under us: parsed as what it now is */
		filled += (size_t)n;
	}
	close(fd);
	*data = buffer;
	*size = filled;
	return 0;
fail:
	errmsg_set(errmsg, "%s %s: %s", failed_op, path, strerror(-rc));
	close(fd);
	free(buffer);
	return rc;
}

/* The name for a message: printable ASCII only, cut at TZ_NAME_SIZE_MAX bytes. */
static void name_printable(const char *name, char *out, size_t out_size)
{
	size_t n = 0;
	for (; n < TZ_NAME_SIZE_MAX && n + 1 < out_size && name[n] != '\0'; n++)
		out[n] = (name[n] >= 0x20 && name[n] < 0x7f) ? name[n] : '?';
	out[n] = '\0';
}

/* 1..TZ_NAME_SIZE_MAX bytes of [A-Za-z0-9/_+-], no empty, "." or ".." component. */
static bool tz_name_valid(const char *name)
{
	size_t size = strnlen(name, TZ_NAME_SIZE_MAX + 1);
	if (size == 0 || size > TZ_NAME_SIZE_MAX)
		return false;
	size_t component = 0;
	for (size_t i = 0; i <= size; i++) {
		char c = name[i];
		if (c == '/' || c == '\0') {
			if (component == 0)
				return false; /* leading '/', "//" or trailing '/' */
			component = 0;
			continue;
		}
		if (!ascii_alpha(c) && !ascii_digit(c) && c != '_' && c != '+' && c != '-')
			return false; /* no '.', so no "." or ".." component either */
		component++;
	}
	return true;
}

int tz_load_path(const char *path, const char *name, tz **out, char *errmsg)
{
	assert(path && name && out);
	*out = NULL;
	size_t name_size = strnlen(name, TZ_NAME_SIZE_MAX + 1);
	if (name_size == 0 || name_size > TZ_NAME_SIZE_MAX) {
		char shown[TZ_NAME_SIZE_MAX + 1];
		name_printable(name, shown, sizeof(shown));
		errmsg_set(errmsg, "invalid time zone name '%s'", shown);
		return TALLY_E_INVALID;
	}
	uint8_t *data = NULL;
	size_t size = 0;
	int rc = tz_file_read(path, name, &data, &size, errmsg);
	if (rc)
		return rc;
	rc = tzif_parse(data, size, path, name, out, errmsg);
	free(data);
	return rc;
}

int tz_load(const char *name, tz **out, char *errmsg)
{
	assert(name && out);
	*out = NULL;
	if (!tz_name_valid(name)) {
		char shown[TZ_NAME_SIZE_MAX + 1];
		name_printable(name, shown, sizeof(shown));
		errmsg_set(errmsg, "invalid time zone name '%s'", shown);
		return TALLY_E_INVALID;
	}
	char path[sizeof(TZ_DIR) + 1 + TZ_NAME_SIZE_MAX + 1];
	snprintf(path, sizeof(path), "%s/%s", TZ_DIR, name);
	return tz_load_path(path, name, out, errmsg);
}
