/*
 * errors.c — names for every code the engine returns, and for the per-event
 * results and reasons. Static strings; never freed.
 */
#include <string.h>

#include <stdio.h>

#include "errmsg.h"
#include "tally.h"

const char *tally_strerror(int code)
{
	switch (code) {
	case TALLY_OK: return "success";
	case TALLY_E_INVALID: return "invalid argument";
	case TALLY_E_CORRUPT: return "data corruption detected";
	case TALLY_E_READONLY: return "store refuses writes after a failed write or fsync; reopen to recover";
	case TALLY_E_VERSION: return "unsupported file format version";
	case TALLY_E_LOCKED: return "data directory is in use by another process";
	case TALLY_E_TENANT: return "malformed tenant name";
	case TALLY_E_BUSY: return "engine busy; retry later";
	case TALLY_E_CLOSED: return "store is closing";
	case TALLY_E_LIMIT: return "limit exceeded";
	case TALLY_E_NOTFOUND: return "not found";
	default: break;
	}
	if (code < 0 && code > -4096)
		return strerror(-code); /* glibc: static for known codes */
	return "unknown error";
}

const char *tally_result_name(int code)
{
	switch (code) {
	case TALLY_ACCEPTED: return "ACCEPTED";
	case TALLY_DUPLICATE: return "DUPLICATE";
	case TALLY_CONFLICT: return "CONFLICT";
	case TALLY_REJECTED: return "REJECTED";
	default: return "UNKNOWN";
	}
}

const char *tally_reason_text(int reason)
{
	switch (reason) {
	case TALLY_REASON_NONE: return "none";
	case TALLY_REASON_MISSING_ID: return "missing event id";
	case TALLY_REASON_ID_TOO_LONG: return "event id longer than 64 bytes";
	case TALLY_REASON_TIME_TOO_OLD: return "time too old (before the lateness horizon)";
	case TALLY_REASON_TIME_IN_FUTURE: return "time in the future (beyond the tolerance)";
	case TALLY_REASON_TYPE_TOO_LONG: return "type longer than 64 bytes";
	case TALLY_REASON_PROJECT_TOO_LONG: return "project longer than 128 bytes";
	case TALLY_REASON_AGENT_TOO_LONG: return "agent longer than 128 bytes";
	case TALLY_REASON_MODEL_TOO_LONG: return "model longer than 128 bytes";
	case TALLY_REASON_USER_TOO_LONG: return "user longer than 128 bytes";
	case TALLY_REASON_UNKNOWN_STATUS: return "unknown status";
	case TALLY_REASON_NOT_UTF8: return "a string is not UTF-8 or holds a NUL byte";
	default: return "unknown reason";
	}
}

const char *tally_column_name(int column)
{
	static const char *const names[TALLY_COL_COUNT] = {
		"time", "event_id", "type", "project", "agent", "model",
		"user", "status", "tokens_in", "tokens_out", "cost_micros",
		"duration_ms",
	};
	if (column < 0 || column >= TALLY_COL_COUNT)
		return "unknown";
	return names[column];
}

void errmsg_vset(char *errmsg, const char *format, va_list args)
{
	if (errmsg)
		vsnprintf(errmsg, TALLY_ERRMSG_SIZE, format, args);
}

void errmsg_set(char *errmsg, const char *format, ...)
{
	va_list args;
	va_start(args, format);
	errmsg_vset(errmsg, format, args);
	va_end(args);
}
