/*
 * test_errors.c — the engine's names (engine/errors.c, engine/tally.h):
 * tally_strerror for every TALLY_E_* code, errno values and unknown codes;
 * tally_result_name for the four results; tally_reason_text for every
 * reject reason, each length text naming the limit tally.h defines.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tally.h"

/* Description: every TALLY_E_* code has its own message, none of them
 * "unknown error"; a negative errno gets strerror's text; anything else
 * (a positive number, a code past the errno range) is "unknown error". */
Test(errors, strerror_names_every_code)
{
	static const struct {
		int code;
		const char *text;
	} codes[] = {
		{TALLY_OK, "success"},
		{TALLY_E_INVALID, "invalid argument"},
		{TALLY_E_CORRUPT, "data corruption detected"},
		{TALLY_E_READONLY, "store refuses writes after a failed write or fsync; reopen to recover"},
		{TALLY_E_VERSION, "unsupported file format version"},
		{TALLY_E_LOCKED, "data directory is in use by another process"},
		{TALLY_E_TENANT, "malformed tenant name"},
		{TALLY_E_BUSY, "engine busy; retry later"},
		{TALLY_E_CLOSED, "store is closing"},
		{TALLY_E_LIMIT, "limit exceeded"},
		{TALLY_E_NOTFOUND, "not found"},
	};
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		cr_expect_str_eq(tally_strerror(codes[i].code), codes[i].text, "code %d", codes[i].code);
	cr_expect_str_eq(tally_strerror(-ENOSPC), strerror(ENOSPC));
	cr_expect_str_eq(tally_strerror(-EIO), strerror(EIO));
	cr_expect_str_eq(tally_strerror(1), "unknown error");
	cr_expect_str_eq(tally_strerror(-4096), "unknown error");
	cr_expect_str_eq(tally_strerror(TALLY_E_NOTFOUND - 1), "unknown error");
}

/* Description: the four results by name, "UNKNOWN" for any other value. */
Test(errors, result_names)
{
	cr_expect_str_eq(tally_result_name(TALLY_ACCEPTED), "ACCEPTED");
	cr_expect_str_eq(tally_result_name(TALLY_DUPLICATE), "DUPLICATE");
	cr_expect_str_eq(tally_result_name(TALLY_CONFLICT), "CONFLICT");
	cr_expect_str_eq(tally_result_name(TALLY_REJECTED), "REJECTED");
	cr_expect_str_eq(tally_result_name(TALLY_REJECTED + 1), "UNKNOWN");
	cr_expect_str_eq(tally_result_name(-1), "UNKNOWN");
}

/* Description: every reject reason has its own text, none "unknown
 * reason"; the length reasons name the byte limits of tally.h; a value
 * outside the enum is "unknown reason". */
Test(errors, reason_texts)
{
	for (int r = 0; r < TALLY_REASON_COUNT; r++) {
		const char *text = tally_reason_text(r);
		cr_expect_str_neq(text, "unknown reason", "reason %d", r);
		cr_expect_gt(strlen(text), 0, "reason %d", r);
		for (int other = 0; other < r; other++)
			cr_expect_str_neq(text, tally_reason_text(other), "reasons %d and %d", r, other);
	}
	static const struct {
		int reason;
		const char *field;
		int limit;
	} lengths[] = {
		{TALLY_REASON_ID_TOO_LONG, "event id", TALLY_EVENT_ID_SIZE_MAX},
		{TALLY_REASON_TYPE_TOO_LONG, "type", TALLY_TYPE_SIZE_MAX},
		{TALLY_REASON_PROJECT_TOO_LONG, "project", TALLY_DIMENSION_SIZE_MAX},
		{TALLY_REASON_AGENT_TOO_LONG, "agent", TALLY_DIMENSION_SIZE_MAX},
		{TALLY_REASON_MODEL_TOO_LONG, "model", TALLY_DIMENSION_SIZE_MAX},
		{TALLY_REASON_USER_TOO_LONG, "user", TALLY_DIMENSION_SIZE_MAX},
	};
	for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		char want[64];
		snprintf(want, sizeof(want), "%s longer than %d bytes", lengths[i].field, lengths[i].limit);
		cr_expect_str_eq(tally_reason_text(lengths[i].reason), want);
	}
	cr_expect_str_eq(tally_reason_text(TALLY_REASON_NONE), "none");
	cr_expect_str_eq(tally_reason_text(TALLY_REASON_MISSING_ID), "missing event id");
	cr_expect_str_eq(tally_reason_text(TALLY_REASON_TIME_TOO_OLD),
			 "time too old (before the lateness horizon)");
	cr_expect_str_eq(tally_reason_text(TALLY_REASON_TIME_IN_FUTURE),
			 "time in the future (beyond the tolerance)");
	cr_expect_str_eq(tally_reason_text(TALLY_REASON_UNKNOWN_STATUS), "unknown status");
	cr_expect_str_eq(tally_reason_text(TALLY_REASON_COUNT), "unknown reason");
	cr_expect_str_eq(tally_reason_text(-1), "unknown reason");
}
