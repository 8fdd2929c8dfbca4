/*
 * change_floor.h — a store whose change map has a floor, for the billing
 * export's tests (test_export, test_schedule): events written straight
 * into a store the test opens (no server on its directory) with lateness
 * horizons wide enough for days far in the past and in the future, so
 * that more than CHANGE_DAYS_MAX days are marked. Every failure is a
 * criterion assertion.
 */
#ifndef TALLY_TEST_CHANGE_FLOOR_H
#define TALLY_TEST_CHANGE_FLOOR_H

#include <stdint.h>

#include "tally.h"

/* How far back change_floor_make's dropped day is: far below every window. */
#define CHANGE_FLOOR_PAST_DAYS 5000

/* The store in data_dir, opened with lateness horizons that take every day
 * from CHANGE_FLOOR_PAST_DAYS + 1 days before now to CHANGE_DAYS_MAX + 1
 * days after. Close it with tally_store_close. */
tally_store *change_floor_store_open(const char *data_dir);

/* One event of tenant on each UTC day in [from, to], ids "<tag>-<day>"
 * (so a tag not used before on those days), at 12:00, all ACCEPTED. */
void store_days(tally_store *st, const char *tenant, const char *tag, int32_t from, int32_t to);

/*
 * Gives st's change map a floor above every mark made so far: st holds
 * events of `marked` distinct days, none before today - 4,999 or after
 * today; one event of tenant "floor" on today - CHANGE_FLOOR_PAST_DAYS,
 * then one on each day from today + 1 on, until CHANGE_DAYS_MAX + 1 days
 * are marked: the far past day drops under the floor, whose LSN is then
 * above every watermark read before this call. Asserts that
 * ChangedDays(0) is refused.
 */
void change_floor_make(tally_store *st, int32_t today, uint32_t marked);

#endif /* TALLY_TEST_CHANGE_FLOOR_H */
