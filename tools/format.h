/*
 * format.h — results as tables for people, CSV or JSON for programs.
 *
 * A format_table is a list of named columns and typed cells (text,
 * integers, reals, booleans), filled row by row, then printed in one of
 * the formats:
 *   table  aligned columns (numbers to the right), a rule under the
 *          header; control bytes in text shown as '?'
 *   csv    a header row, then one row per line; fields that need it are
 *          quoted by libcsv (csv_fwrite)
 *   json   one array of objects (jansson), exact integers
 *   jsonl  one object per line (events: the form `tally ingest` reads)
 * In JSON a uint64 above 2^63 - 1 is written as a string of digits (a
 * JSON integer in jansson is int64), and text that is not UTF-8 has its
 * non-ASCII bytes replaced by '?'.
 *
 * The table copies what it is given (names and text), so the messages the
 * values came from may be freed before printing.
 */
#ifndef TALLY_TOOLS_FORMAT_H
#define TALLY_TOOLS_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "queryargs.h"
#include "tally.pb-c.h"

enum format_kind {
	FORMAT_TABLE = 0,
	FORMAT_CSV,
	FORMAT_JSON,
	FORMAT_JSONL,
};

/* A 128-bit integer in decimal: a sign, 39 digits and the NUL. */
#define FORMAT_WIDE_SIZE 41
/* Writes v in decimal into out (FORMAT_WIDE_SIZE bytes). */
void format_wide_text(char *out, __int128 v);

#define FORMAT_COLUMNS_MAX 32
#define FORMAT_TIME_SIZE 48
/* Rows one table holds at most: a query answers up to 100,000, a listing
 * page 10,000. */
#define FORMAT_ROWS_MAX 200000

/* A jansson string of len bytes at p: as they are when they are UTF-8,
 * else with every byte past ASCII (and NUL) written '?'. NULL only when
 * out of memory. For text such as paths that may not be UTF-8. */
struct json_t;
struct json_t *format_json_text(const char *p, size_t len);

/* "table", "csv", "json" to an enum format_kind; -1 for anything else. */
int format_parse(const char *name);

/* A --format value into *format: 0, or -EINVAL with errmsg
 * (QUERYARGS_ERRMSG_SIZE bytes) naming the choices. */
int format_option(const char *text, int *format, char *errmsg);

enum format_cell_kind { CELL_TEXT = 0, CELL_INT, CELL_UINT, CELL_REAL, CELL_BOOL, CELL_WIDE };

typedef struct format_cell {
	int kind;
	union {
		int64_t i;
		uint64_t u;
		double d;
		bool b;
		__int128 w; /* an exact sum past 64 bits (a row's Wraps) */
		struct {
			size_t offset, len; /* into the table's text */
		} text;
	} v;
} format_cell;

typedef struct format_table {
	char *names[FORMAT_COLUMNS_MAX];
	size_t column_count;
	format_cell *cells;   /* row-major */
	size_t cell_count, cell_capacity;
	char *text;
	size_t text_size, text_capacity;
} format_table;

/* A table with these column names (copied). 0 or -ENOMEM / -EINVAL (more
 * than FORMAT_COLUMNS_MAX). */
int format_table_init(format_table *t, const char *const *names, size_t column_count);
void format_table_free(format_table *t);
/* Drops the rows, keeps the columns (for the next page). */
void format_table_clear(format_table *t);
size_t format_table_rows(const format_table *t);

/* Appends one cell to the current row (rows fill left to right, then the
 * next begins). 0, -ENOMEM, or -E2BIG past FORMAT_ROWS_MAX rows. */
int format_add_text(format_table *t, const void *text, size_t len);
int format_add_int(format_table *t, int64_t v);
int format_add_uint(format_table *t, uint64_t v);
int format_add_real(format_table *t, double v);
int format_add_bool(format_table *t, bool v);

/* Prints t in format to out; with header false, the table and CSV header
 * lines are left out (a later page of the same listing). 0, -EIO (the
 * stream failed) or -ENOMEM. */
int format_print(const format_table *t, FILE *out, int format, bool header);

/*
 * RFC 3339: "2026-09-21T14:13:20Z", with ".123456" when fraction is set;
 * with local set, in the zone of the TZ environment variable with its
 * offset ("2026-09-21T16:13:20+02:00"). out: FORMAT_TIME_SIZE bytes.
 */
void format_time(char *out, int64_t time_us, bool fraction, bool local);

/* Makes local times use zone (IANA name): sets TZ and calls tzset. 0, or
 * -ENOENT when the zone is not in /usr/share/zoneinfo (glibc would
 * silently use UTC). */
int format_time_zone(const char *zone);

/* The rows of a query result with the columns of spec: time (the bucket
 * start; local when spec->time_zone is set), one per group_by dimension,
 * one per aggregate. t is initialised here. 0 or as format_add_*. */
int format_query_result(format_table *t, const query_spec *spec, const Tally__V1__QueryResult *result);

/* Column names of a raw event listing: those of the ingest file formats. */
extern const char *const format_event_columns[12];

/* Appends the events of a page to t (initialised with
 * format_event_columns); times in UTC, or local when local is set. */
int format_event_page(format_table *t, const Tally__V1__EventPage *page, bool local);

#endif /* TALLY_TOOLS_FORMAT_H */
