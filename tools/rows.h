/*
 * rows.h — event files for `tally ingest`: CSV (libcsv) or JSON lines
 * (jansson) in, one tally_client_event per row out, every field checked.
 *
 * Both formats name the same fields: event_id, time, type, project, agent,
 * model, user, status, duration_ms, tokens_in, tokens_out, cost_micros,
 * and optionally tenant (admin imports). A CSV file starts with a header
 * row naming its columns in any order; a JSON line is one object with
 * those keys. event_id and time are required (a column or key must be
 * there); any other field may be left out (empty string, status ok, 0).
 * An unknown column or key is an error naming it.
 *
 * Values: time is RFC 3339 (2026-09-21T14:13:20.123456Z, with Z or an
 * offset, up to 6 fractional digits) or integer microseconds since the
 * epoch; status is ok, error, timeout, cancelled or 0..3; duration_ms,
 * tokens_in, tokens_out are non-negative integers within uint32, uint64,
 * uint64; cost_micros is an integer within int64 (negative for credits).
 * In JSON, numbers may be given as integers or as strings of digits (a
 * uint64 past 2^63 cannot be a JSON integer in jansson); null is "not
 * given". String limits (id 64 bytes, ...) are the server's to check: it
 * rejects such an event with its reason.
 *
 * The first malformed row stops the reading: rows_read returns
 * ROWS_MALFORMED and errmsg reads "FILE:LINE: field 'time': ...".
 */
#ifndef TALLY_TOOLS_ROWS_H
#define TALLY_TOOLS_ROWS_H

#include <stdint.h>
#include <stdio.h>

#include "builder.h"

enum rows_format {
	ROWS_FORMAT_AUTO = 0, /* from the first non-blank character: '{' is JSON lines */
	ROWS_FORMAT_CSV,
	ROWS_FORMAT_JSONL,
};

/* Longest input line (a CSV record may span lines: the same bound holds
 * for the whole record). */
#define ROWS_LINE_BYTES_MAX (1u << 20)
/* Columns a CSV record may have. */
#define ROWS_COLUMNS_MAX 64
#define ROWS_ERRMSG_SIZE 512

enum rows_status {
	ROWS_OK = 0,
	ROWS_MALFORMED = 1, /* a bad row or header: errmsg says where */
	ROWS_IO = 2,        /* reading failed: errmsg says why */
	ROWS_NO_MEMORY = 3,
};

typedef struct rows_row {
	tally_client_event event;
	const char *tenant;  /* the tenant column or key; NULL when not given or empty */
	uint32_t tenant_len;
	uint64_t line;       /* 1-based line of the file where the row starts */
} rows_row;

/* Called once per row; the row's strings are valid during the call only.
 * A non-zero return stops the reading and is returned by rows_read. */
typedef int (*rows_fn)(void *ctx, const rows_row *row);

/* "csv", "jsonl" or "ndjson" as a --format value; -1 for anything else. */
int rows_format_parse(const char *name);

/* The format a file name's extension says (.csv, .jsonl, .ndjson), else
 * ROWS_FORMAT_AUTO. */
int rows_format_from_name(const char *path);

/*
 * Reads every row of `in` (name is used in messages: "FILE:LINE: ...") and
 * calls fn for each, in file order. format ROWS_FORMAT_AUTO looks at the
 * first non-blank character. Returns ROWS_OK at the end of the input, an
 * enum rows_status with errmsg (ROWS_ERRMSG_SIZE bytes) filled, or the
 * non-zero value fn returned (errmsg untouched).
 */
int rows_read(FILE *in, const char *name, int format, rows_fn fn, void *ctx, char *errmsg);

/* Field parsers (exposed for tests; 0 or -EINVAL; text need not be
 * NUL-terminated). */
int rows_parse_time(const char *text, size_t len, int64_t *out);
int rows_parse_status(const char *text, size_t len, uint32_t *out);
int rows_parse_uint(const char *text, size_t len, uint64_t max, uint64_t *out);
int rows_parse_int64(const char *text, size_t len, int64_t *out);

#endif /* TALLY_TOOLS_ROWS_H */
