/*
 * civil.h — proleptic Gregorian dates and day numbers, for test oracles.
 *
 * Tests and fuzz models compute local days and months on their own rather
 * than through engine/tz.c, which they check. Days count from 1970-01-01;
 * the method works in eras of 400 years (146,097 days each), after
 * H. Hinnant's description of it.
 */
#ifndef TALLY_TESTS_CIVIL_H
#define TALLY_TESTS_CIVIL_H

#include <stdint.h>

/* The day number of year y, month m (1..12), day d. */
static inline int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* The year and month of day number z. */
static inline void civil_from_days(int64_t z, int64_t *year, int *month)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*year = yoe + era * 400 + (m <= 2);
	*month = m;
}

#endif
