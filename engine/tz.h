/*
 * tz.h — IANA time zones for calendar buckets (day, month, and local
 * minute/hour) in queries.
 *
 * A zone is read from the system's compiled tz database (TZif files, RFC
 * 8536, versions 1 to 4, under TZ_DIR, from the tzdata package): its
 * transition times and UTC offsets, and the POSIX TZ rule of the footer for
 * instants after the last transition. Times are int64 microseconds UTC;
 * offsets are seconds east of UTC.
 *
 * Local calendar buckets are defined by their labels: instant t belongs to
 * the bucket whose label is floor_unit(local(t)), local(t) = t + offset(t).
 * A bucket is a maximal run of instants with the same label, so a DST change
 * inside a day keeps one day bucket (23 or 25 hours long), and a repeated
 * local hour (fall back) gives two hour buckets with the same label.
 *
 * (Precisely: a fall-back that sets the clock back by exactly one unit at the
 * end of that unit, as Paris does with 02:00-03:00, starts a second bucket
 * even though the label does not change; a smaller set-back inside a unit
 * lengthens the bucket, like the 25-hour day. See docs/timezones.md.)
 */
#ifndef TALLY_TZ_H
#define TALLY_TZ_H

#include <stdint.h>

#define TZ_DIR "/usr/share/zoneinfo"
#define TZ_NAME_SIZE_MAX 64

typedef struct tz tz;

/*
 * Loads zone `name` ("UTC", "Europe/Paris", "Asia/Kolkata", ...). The name
 * must be 1..TZ_NAME_SIZE_MAX bytes of [A-Za-z0-9/_+-], not start with '/'
 * and contain no ".." component. Returns 0, TALLY_E_INVALID for a bad or
 * unknown name, TALLY_E_CORRUPT for a file that is not valid TZif, or
 * -ENOMEM; errmsg (TALLY_ERRMSG_SIZE) says which. (-errno when the file
 * exists but cannot be read.) On success *out is owned by the caller (free
 * with tz_free) and is immutable: any number of threads may use it at once.
 */
int tz_load(const char *name, tz **out, char *errmsg);

/* For tests and tools: loads the TZif file at `path` as a zone called `name`
 * (1..TZ_NAME_SIZE_MAX bytes, not otherwise checked). Returns as tz_load; a
 * missing file is TALLY_E_INVALID "unknown time zone". */
int tz_load_path(const char *path, const char *name, tz **out, char *errmsg);

/* The fixed UTC zone (never fails; no file read). Free with tz_free too. */
tz *tz_utc(void);

void tz_free(tz *z);

const char *tz_name(const tz *z);

/* UTC offset in seconds at instant t. */
int32_t tz_offset(const tz *z, int64_t t_us);

/* The first transition strictly after t, or INT64_MAX if none. A transition
 * is an instant where the UTC offset changes (a change of abbreviation or of
 * the DST flag alone is not one). */
int64_t tz_next_transition(const tz *z, int64_t t_us);

enum tz_unit { TZ_MINUTE = 0, TZ_HOUR = 1, TZ_DAY = 2, TZ_MONTH = 3 };

/*
 * The local bucket holding instant t: *start_us is the first instant with
 * t's label (may be earlier than any transition), *end_us the first instant
 * after t with a different label. Both are exact instants in UTC micro-
 * seconds. The label itself (local time of the bucket's start, as
 * microseconds since the epoch in local wall time) goes to *label_us when
 * label_us is not NULL. (The label is floor_unit of that local time: the
 * local midnight of the day even when a gap makes the day start at 01:00.)
 * Instants are modelled within ±2^62 µs (±146,000 years); buckets are cut
 * there, and the two ranges beyond are one bucket each.
 */
void tz_bucket(const tz *z, enum tz_unit unit, int64_t t_us, int64_t *start_us,
	       int64_t *end_us, int64_t *label_us);

#endif /* TALLY_TZ_H */
