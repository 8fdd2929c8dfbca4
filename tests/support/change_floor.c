/*
 * change_floor.c — a store whose change map has a floor (change_floor.h).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "change_floor.h"
#include "tally_limits.h"

tally_store *change_floor_store_open(const char *data_dir)
{
	tally_options o;
	tally_options_default(&o);
	o.lateness_past_us = (int64_t)(CHANGE_FLOOR_PAST_DAYS + 1) * TALLY_US_PER_DAY;
	o.lateness_future_us = (int64_t)(CHANGE_DAYS_MAX + 1) * TALLY_US_PER_DAY;
	tally_store *st;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_store_open(data_dir, &o, &st, err), 0, "%s", err);
	return st;
}

void store_days(tally_store *st, const char *tenant, const char *tag, int32_t from, int32_t to)
{
	enum { BATCH = 512 };
	static tally_event e[BATCH];
	static tally_ingest_result r[BATCH];
	static char ids[BATCH][48];
	for (int32_t d = from; d <= to;) {
		size_t n = 0;
		for (; n < BATCH && d <= to; n++, d++) {
			snprintf(ids[n], sizeof(ids[n]), "%s-%d", tag, (int)d);
			memset(&e[n], 0, sizeof(e[n]));
			e[n].event_id = (tally_str){ids[n], (uint32_t)strlen(ids[n])};
			e[n].time_us = (int64_t)d * TALLY_US_PER_DAY + 12 * INT64_C(3600000000);
			e[n].type = (tally_str){"llm_call", 8};
			e[n].model = (tally_str){"gpt-5", 5};
			e[n].tokens_in = 10;
		}
		tally_batch b = {.tenant = tenant, .events = e, .count = n, .results = r};
		uint64_t lsn = 0;
		cr_assert_eq(tally_ingest_submit_many(st, &b, 1, &lsn), 0, "%s",
			     tally_store_errmsg(st));
		cr_assert_eq(b.status, 0, "%s", tally_strerror(b.status));
		for (size_t i = 0; i < n; i++)
			cr_assert_eq(r[i].code, TALLY_ACCEPTED, "event %zu: reason %u", i,
				     r[i].reason);
		cr_assert_eq(tally_commit_wait(st, lsn), 0);
	}
}

void change_floor_make(tally_store *st, int32_t today, uint32_t marked)
{
	cr_assert_lt(marked, CHANGE_DAYS_MAX);
	size_t count = 99;
	cr_assert_eq(tally_changed_days(st, 0, NULL, NULL, 0, &count), TALLY_E_LIMIT,
		     "no floor yet, and some day marked");
	store_days(st, "floor", "floor", today - CHANGE_FLOOR_PAST_DAYS,
		   today - CHANGE_FLOOR_PAST_DAYS);
	store_days(st, "floor", "floor", today + 1, today + (int32_t)(CHANGE_DAYS_MAX - marked));
	cr_assert_eq(tally_changed_days(st, 0, NULL, NULL, 0, &count), TALLY_E_NOTFOUND,
		     "the change map has a floor");
}
