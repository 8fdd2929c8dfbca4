/*
 * rows.c — CSV and JSON-lines event files to tally_client_event (rows.h).
 *
 * Input is read one line at a time into a fixed buffer of
 * ROWS_LINE_BYTES_MAX bytes (a longer line is an error, so memory is
 * bounded whatever the file holds), which gives every row its line number:
 *   - CSV: each line is fed to libcsv, which calls back per field and per
 *     record (a quoted field may span lines; the record's line is the one
 *     where its first field ended, its total size is bounded like a
 *     line). Fields are copied into a record buffer, since libcsv reuses
 *     its own. The first record is the header.
 *   - JSON lines: each non-blank line is parsed by jansson (duplicate keys
 *     refused) and must be an object.
 * Both end in the same per-field parsing (field_set), so the two formats
 * accept exactly the same values.
 *
 * A UTF-8 byte order mark (EF BB BF) as the input's first three bytes is
 * dropped before anything else reads it (bom_skip): before format
 * detection, libcsv (whose strict mode refuses it before a quoted header)
 * and jansson. Bytes read to find out that there is none are given back
 * through reader.ahead, so a pipe works as well as a file. It holds no
 * newline, so line numbers are unchanged.
 */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <csv.h>
#include <jansson.h>

#include "rows.h"

#define US_PER_SECOND INT64_C(1000000)
#define SECONDS_PER_DAY INT64_C(86400)
#define VALUE_QUOTED_MAX 60 /* bytes of a bad value quoted in a message */
#define READ_AHEAD_MAX 4    /* a BOM's first bytes and the one that differs, or one peeked */

enum field {
	F_EVENT_ID = 0,
	F_TIME,
	F_TYPE,
	F_PROJECT,
	F_AGENT,
	F_MODEL,
	F_USER,
	F_STATUS,
	F_DURATION_MS,
	F_TOKENS_IN,
	F_TOKENS_OUT,
	F_COST_MICROS,
	F_TENANT,
	F_COUNT,
};

static const char *const field_names[F_COUNT] = {
	"event_id", "time", "type", "project", "agent", "model", "user", "status",
	"duration_ms", "tokens_in", "tokens_out", "cost_micros", "tenant",
};

#define FIELDS_KNOWN                                                                      \
	"event_id, time, type, project, agent, model, user, status, duration_ms, tokens_in, " \
	"tokens_out, cost_micros, tenant"

static const char *const status_names[] = {"ok", "error", "timeout", "cancelled"};

int rows_format_parse(const char *name)
{
	if (strcmp(name, "csv") == 0)
		return ROWS_FORMAT_CSV;
	if (strcmp(name, "jsonl") == 0 || strcmp(name, "ndjson") == 0)
		return ROWS_FORMAT_JSONL;
	return -1;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

int rows_format_from_name(const char *path)
{
	if (ends_with(path, ".csv"))
		return ROWS_FORMAT_CSV;
	if (ends_with(path, ".jsonl") || ends_with(path, ".ndjson"))
		return ROWS_FORMAT_JSONL;
	return ROWS_FORMAT_AUTO;
}

/* ---- field parsers ------------------------------------------------------ */

int rows_parse_uint(const char *text, size_t len, uint64_t max, uint64_t *out)
{
	if (len == 0)
		return -EINVAL;
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (text[i] < '0' || text[i] > '9')
			return -EINVAL;
		unsigned d = (unsigned)(text[i] - '0');
		if (d > max || v > (max - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int rows_parse_int64(const char *text, size_t len, int64_t *out)
{
	bool negative = len > 0 && text[0] == '-';
	uint64_t v;
	/* INT64_MIN's magnitude is INT64_MAX + 1. */
	if (rows_parse_uint(text + negative, len - negative, (uint64_t)INT64_MAX + negative, &v))
		return -EINVAL;
	*out = negative ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

int rows_parse_status(const char *text, size_t len, uint32_t *out)
{
	for (uint32_t s = 0; s < 4; s++)
		if (len == strlen(status_names[s]) && strncasecmp(text, status_names[s], len) == 0) {
			*out = s;
			return 0;
		}
	uint64_t v;
	if (rows_parse_uint(text, len, 3, &v))
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
	static const unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m == 2 && leap ? 29 : days[m - 1];
}

/* n digits at text[*at] as a number; false if they are not all digits. */
static bool digits(const char *text, size_t len, size_t *at, size_t n, unsigned *out)
{
	if (*at + n > len)
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		char c = text[*at + i];
		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (unsigned)(c - '0');
	}
	*at += n;
	*out = v;
	return true;
}

static bool expect_char(const char *text, size_t len, size_t *at, const char *chars)
{
	if (*at >= len || !strchr(chars, text[*at]) || text[*at] == '\0')
		return false;
	(*at)++;
	return true;
}

int rows_parse_time(const char *text, size_t len, int64_t *out)
{
	/* Integer microseconds: an optional '-' and digits only. */
	size_t k = text[0] == '-' ? 1 : 0;
	while (k < len && text[k] >= '0' && text[k] <= '9')
		k++;
	if (len > 0 && k == len)
		return rows_parse_int64(text, len, out);

	size_t at = 0;
	unsigned year, month, day, hour, minute, second;
	if (!digits(text, len, &at, 4, &year) || !expect_char(text, len, &at, "-") ||
	    !digits(text, len, &at, 2, &month) || !expect_char(text, len, &at, "-") ||
	    !digits(text, len, &at, 2, &day) || !expect_char(text, len, &at, "Tt ") ||
	    !digits(text, len, &at, 2, &hour) || !expect_char(text, len, &at, ":") ||
	    !digits(text, len, &at, 2, &minute) || !expect_char(text, len, &at, ":") ||
	    !digits(text, len, &at, 2, &second))
		return -EINVAL;
	if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) || hour > 23 ||
	    minute > 59 || second > 59)
		return -EINVAL;
	int64_t micros = 0;
	if (at < len && text[at] == '.') {
		at++;
		size_t n = 0;
		while (at < len && text[at] >= '0' && text[at] <= '9') {
			if (++n > 6)
				return -EINVAL; /* finer than the microseconds tally stores */
			micros = micros * 10 + (text[at++] - '0');
		}
		if (n == 0)
			return -EINVAL;
		for (; n < 6; n++)
			micros *= 10;
	}
	int64_t offset_seconds = 0;
	if (at < len && (text[at] == 'Z' || text[at] == 'z')) {
		at++;
	} else if (at < len && (text[at] == '+' || text[at] == '-')) {
		int sign = text[at++] == '-' ? -1 : 1;
		unsigned oh, om;
		if (!digits(text, len, &at, 2, &oh) || !expect_char(text, len, &at, ":") ||
		    !digits(text, len, &at, 2, &om) || oh > 23 || om > 59)
			return -EINVAL;
		offset_seconds = sign * (int64_t)(oh * 3600 + om * 60);
	} else {
		return -EINVAL; /* RFC 3339 requires the offset */
	}
	if (at != len)
		return -EINVAL;
	int64_t seconds = days_from_civil(year, month, day) * SECONDS_PER_DAY + hour * 3600 +
			  minute * 60 + second - offset_seconds;
	*out = seconds * US_PER_SECOND + micros;
	return 0;
}

/* ---- rows ----------------------------------------------------------------- */

typedef struct reader {
	const char *name;
	rows_fn fn;
	void *ctx;
	char *errmsg;
	int status;         /* sticky: ROWS_* or fn's code; stops everything */
	uint64_t line;      /* of the line being read */
	unsigned char ahead[READ_AHEAD_MAX]; /* bytes read before the stream's, last first */
	size_t ahead_count;
	rows_row row;
	bool seen[F_COUNT];
	/* CSV */
	bool have_header;
	int column_field[ROWS_COLUMNS_MAX]; /* field of each column */
	size_t column_count;
	char *record;       /* fields of the current record, NUL-terminated */
	size_t record_size;
	size_t field_at[ROWS_COLUMNS_MAX];
	size_t field_len[ROWS_COLUMNS_MAX];
	size_t field_count;
	uint64_t record_line;
} reader;

__attribute__((format(printf, 2, 3)))
static int fail(reader *r, const char *format, ...)
{
	int n = snprintf(r->errmsg, ROWS_ERRMSG_SIZE, "%s:%" PRIu64 ": ", r->name,
			 r->record_line ? r->record_line : r->line);
	va_list args;
	va_start(args, format);
	vsnprintf(r->errmsg + n, ROWS_ERRMSG_SIZE - (size_t)n, format, args);
	va_end(args);
	r->status = ROWS_MALFORMED;
	return ROWS_MALFORMED;
}

/* A bad value, quoted (cut at VALUE_QUOTED_MAX bytes) in the message. */
static int fail_value(reader *r, int field, const char *what, const char *text, size_t len)
{
	int shown = len > VALUE_QUOTED_MAX ? VALUE_QUOTED_MAX : (int)len;
	return fail(r, "field '%s': %s: '%.*s'%s", field_names[field], what, shown, text,
		    len > VALUE_QUOTED_MAX ? "..." : "");
}

static void row_clear(reader *r)
{
	memset(&r->row, 0, sizeof(r->row));
	memset(r->seen, 0, sizeof(r->seen));
}

/* Parses one field's text into the row. 0 or ROWS_MALFORMED. An empty
 * value is "not given", except for time. */
static int field_set(reader *r, int field, const char *text, size_t len)
{
	tally_client_event *e = &r->row.event;
	r->seen[field] = true;
	if (len > UINT32_MAX)
		return fail_value(r, field, "too long", text, len);
	tally_client_str s = {len ? text : NULL, (uint32_t)len};
	uint64_t v;
	switch (field) {
	case F_EVENT_ID: e->event_id = s; return 0;
	case F_TYPE: e->type = s; return 0;
	case F_PROJECT: e->project = s; return 0;
	case F_AGENT: e->agent = s; return 0;
	case F_MODEL: e->model = s; return 0;
	case F_USER: e->user = s; return 0;
	case F_TENANT:
		r->row.tenant = s.ptr;
		r->row.tenant_len = s.len;
		return 0;
	case F_TIME:
		if (len == 0)
			return fail(r, "field 'time' is empty");
		if (rows_parse_time(text, len, &e->time_us))
			return fail_value(r, field, "not an RFC 3339 time or integer microseconds", text, len);
		return 0;
	default:
		break;
	}
	if (len == 0)
		return 0;
	switch (field) {
	case F_STATUS:
		if (rows_parse_status(text, len, &e->status))
			return fail_value(r, field, "not ok, error, timeout, cancelled or 0..3", text, len);
		return 0;
	case F_DURATION_MS:
		if (rows_parse_uint(text, len, UINT32_MAX, &v))
			return fail_value(r, field, "not an integer from 0 to 4294967295", text, len);
		e->duration_ms = (uint32_t)v;
		return 0;
	case F_TOKENS_IN:
	case F_TOKENS_OUT:
		if (rows_parse_uint(text, len, UINT64_MAX, &v))
			return fail_value(r, field, "not an integer from 0 to 18446744073709551615", text, len);
		*(field == F_TOKENS_IN ? &e->tokens_in : &e->tokens_out) = v;
		return 0;
	default: /* F_COST_MICROS */
		if (rows_parse_int64(text, len, &e->cost_micros))
			return fail_value(r, field, "not a 64-bit signed integer", text, len);
		return 0;
	}
}

static int field_find(const char *name, size_t len)
{
	for (int f = 0; f < F_COUNT; f++)
		if (strlen(field_names[f]) == len && memcmp(field_names[f], name, len) == 0)
			return f;
	return -1;
}

/* The row is complete: required fields there, hand it over. */
static int row_emit(reader *r, bool tenant_empty_is_null)
{
	if (!r->seen[F_EVENT_ID])
		return fail(r, "no event_id");
	if (!r->seen[F_TIME])
		return fail(r, "no time");
	if (tenant_empty_is_null && r->row.tenant_len == 0)
		r->row.tenant = NULL;
	r->row.line = r->record_line;
	int rc = r->fn(r->ctx, &r->row);
	if (rc)
		r->status = rc;
	return rc;
}

/* ---- CSV ----------------------------------------------------------------------- */

/* libcsv hands a field over where it ends: a quoted first field holding
 * line breaks began that many lines earlier, and so did its record. */
static void csv_record_line_set(reader *r, const char *data, size_t len)
{
	if (r->field_count)
		return;
	uint64_t breaks = 0;
	for (const char *p = data, *end = p + len; len && (p = memchr(p, '\n', (size_t)(end - p))); p++)
		breaks++;
	r->record_line = r->line - breaks;
}

/* Where the record's next field goes in r->record: the bytes its fields
 * so far take, each with its NUL. */
static size_t csv_record_used(const reader *r)
{
	return r->field_count ? r->field_at[r->field_count - 1] + r->field_len[r->field_count - 1] + 1 : 0;
}

static void csv_on_field(void *data, size_t len, void *ctx)
{
	reader *r = ctx;
	if (r->status)
		return;
	csv_record_line_set(r, data, len);
	if (r->field_count == ROWS_COLUMNS_MAX) {
		fail(r, "more than %u columns", ROWS_COLUMNS_MAX);
		return;
	}
	size_t at = csv_record_used(r);
	if (len + 1 > ROWS_LINE_BYTES_MAX - at) {
		fail(r, "a record longer than %u bytes", ROWS_LINE_BYTES_MAX);
		return;
	}
	memcpy(r->record + at, data, len);
	r->record[at + len] = '\0';
	r->field_at[r->field_count] = at;
	r->field_len[r->field_count] = len;
	r->field_count++;
}

static void csv_header(reader *r)
{
	for (size_t c = 0; c < r->field_count; c++) {
		const char *name = r->record + r->field_at[c];
		size_t len = r->field_len[c];
		int f = field_find(name, len);
		if (f < 0) {
			fail(r, "unknown column '%.*s' in the header (known: " FIELDS_KNOWN ")",
			     len > VALUE_QUOTED_MAX ? VALUE_QUOTED_MAX : (int)len, name);
			return;
		}
		for (size_t k = 0; k < c; k++)
			if (r->column_field[k] == f) {
				fail(r, "column '%s' appears twice in the header", field_names[f]);
				return;
			}
		r->column_field[c] = f;
	}
	r->column_count = r->field_count;
	bool has_id = false, has_time = false;
	for (size_t c = 0; c < r->column_count; c++) {
		has_id |= r->column_field[c] == F_EVENT_ID;
		has_time |= r->column_field[c] == F_TIME;
	}
	if (!has_id || !has_time)
		fail(r, "the header needs the columns event_id and time (it names: %s%s)",
		     has_id ? "event_id" : "", has_time ? "time" : has_id ? "" : "neither");
	r->have_header = true;
}

static void csv_on_record(int terminator, void *ctx)
{
	(void)terminator;
	reader *r = ctx;
	if (r->status)
		return;
	if (!r->have_header) {
		csv_header(r);
	} else if (r->field_count != r->column_count) {
		fail(r, "%zu fields, the header has %zu columns", r->field_count, r->column_count);
	} else {
		row_clear(r);
		for (size_t c = 0; c < r->field_count && !r->status; c++)
			field_set(r, r->column_field[c], r->record + r->field_at[c], r->field_len[c]);
		if (!r->status)
			row_emit(r, true);
	}
	r->field_count = 0;
	r->record_line = 0;
}

/* The next byte: one given back (reader_unget) first, else the stream's. */
static int reader_get(reader *r, FILE *in)
{
	return r->ahead_count ? r->ahead[--r->ahead_count] : getc_unlocked(in);
}

/* Gives c back: the next reader_get returns it. */
static void reader_unget(reader *r, int c)
{
	assert(c != EOF && r->ahead_count < READ_AHEAD_MAX);
	r->ahead[r->ahead_count++] = (unsigned char)c;
}

/* Drops a UTF-8 byte order mark at the start of the input; any other
 * bytes read are given back. A read error is left for line_read to see. */
static void bom_skip(reader *r, FILE *in)
{
	static const unsigned char bom[3] = {0xef, 0xbb, 0xbf};
	size_t n = 0;
	int c = EOF;
	while (n < sizeof(bom) && (c = reader_get(r, in)) == bom[n])
		n++;
	if (n == sizeof(bom))
		return;
	if (c != EOF)
		reader_unget(r, c);
	while (n > 0)
		reader_unget(r, bom[--n]);
}

/*
 * Reads the next line (with its '\n') into buf; *len its length, 0 at the
 * end. ROWS_OK, ROWS_IO, or ROWS_MALFORMED for a line over the limit.
 */
static int line_read(reader *r, FILE *in, char *buf, size_t *len)
{
	/* getc rather than fgets: a line may hold NUL bytes, which fgets
	 * cannot report. */
	size_t n = 0;
	int c = EOF;
	while (n <= ROWS_LINE_BYTES_MAX && (c = reader_get(r, in)) != EOF) {
		buf[n++] = (char)c;
		if (c == '\n')
			break;
	}
	*len = n;
	if (c == EOF && ferror(in)) {
		snprintf(r->errmsg, ROWS_ERRMSG_SIZE, "%s: read error after line %" PRIu64 ": %s", r->name,
			 r->line, strerror(errno));
		return r->status = ROWS_IO;
	}
	if (n == 0)
		return ROWS_OK;
	r->line++;
	if (n > ROWS_LINE_BYTES_MAX)
		return fail(r, "line longer than %u bytes", ROWS_LINE_BYTES_MAX);
	return ROWS_OK;
}

static int csv_read(reader *r, FILE *in, char *line)
{
	struct csv_parser parser;
	if (csv_init(&parser, CSV_STRICT | CSV_STRICT_FINI))
		return ROWS_NO_MEMORY;
	r->record = malloc(ROWS_LINE_BYTES_MAX + 1);
	if (!r->record) {
		csv_free(&parser);
		return ROWS_NO_MEMORY;
	}
	size_t len;
	while (!r->status && !line_read(r, in, line, &len) && len) {
		if (csv_parse(&parser, line, len, csv_on_field, csv_on_record, r) != len && !r->status)
			fail(r, "malformed CSV: %s", csv_strerror(csv_error(&parser)));
		/* A quoted field may span lines, and libcsv holds it whole until
		 * it ends: the record's limit is checked on what it holds, so a
		 * stray quote never reads the rest of the input into memory. */
		if (!r->status && parser.entry_pos + 1 > ROWS_LINE_BYTES_MAX - csv_record_used(r)) {
			csv_record_line_set(r, (const char *)parser.entry_buf, parser.entry_pos);
			fail(r, "a record longer than %u bytes", ROWS_LINE_BYTES_MAX);
		}
	}
	if (!r->status && csv_fini(&parser, csv_on_field, csv_on_record, r) && !r->status)
		fail(r, "malformed CSV at the end of the file: %s", csv_strerror(csv_error(&parser)));
	if (!r->status && !r->have_header)
		fail(r, "no header row (an empty file?)");
	csv_free(&parser);
	free(r->record);
	r->record = NULL;
	return r->status;
}

/* ---- JSON lines ------------------------------------------------------------------ */

static int json_row(reader *r, const char *line, size_t len)
{
	json_error_t error;
	json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &error);
	if (!root)
		return fail(r, "not JSON: %s", error.text);
	if (!json_is_object(root)) {
		json_decref(root);
		return fail(r, "not a JSON object");
	}
	row_clear(r);
	const char *key;
	json_t *value;
	json_object_foreach(root, key, value) {
		int f = field_find(key, strlen(key));
		if (f < 0) {
			fail(r, "unknown key '%.*s' (known: " FIELDS_KNOWN ")", VALUE_QUOTED_MAX, key);
			break;
		}
		char number[24];
		if (json_is_null(value)) {
			continue;
		} else if (json_is_string(value)) {
			field_set(r, f, json_string_value(value), json_string_length(value));
		} else if (json_is_integer(value) && f != F_EVENT_ID && f != F_TYPE && f != F_PROJECT &&
			   f != F_AGENT && f != F_MODEL && f != F_USER && f != F_TENANT) {
			snprintf(number, sizeof(number), "%" JSON_INTEGER_FORMAT, json_integer_value(value));
			field_set(r, f, number, strlen(number));
		} else {
			fail(r, "field '%s': want %s", field_names[f],
			     f == F_TIME || (f >= F_STATUS && f != F_TENANT) ? "an integer or a string" : "a string");
		}
		if (r->status)
			break;
	}
	if (!r->status)
		row_emit(r, true);
	json_decref(root);
	return r->status;
}

static int jsonl_read(reader *r, FILE *in, char *line)
{
	size_t len;
	while (!r->status && !line_read(r, in, line, &len) && len) {
		size_t start = 0;
		while (start < len && isspace((unsigned char)line[start]))
			start++;
		if (start == len)
			continue; /* a blank line */
		r->record_line = r->line;
		json_row(r, line + start, len - start);
		r->record_line = 0;
	}
	return r->status;
}

int rows_read(FILE *in, const char *name, int format, rows_fn fn, void *ctx, char *errmsg)
{
	reader *r = calloc(1, sizeof(*r));
	char *line = malloc(ROWS_LINE_BYTES_MAX + 2);
	if (!r || !line) {
		free(r);
		free(line);
		snprintf(errmsg, ROWS_ERRMSG_SIZE, "%s: out of memory", name);
		return ROWS_NO_MEMORY;
	}
	r->name = name;
	r->fn = fn;
	r->ctx = ctx;
	r->errmsg = errmsg;
	bom_skip(r, in);
	if (format == ROWS_FORMAT_AUTO) {
		/* The first non-blank character decides; the newlines skipped still count. */
		int c;
		while ((c = reader_get(r, in)) != EOF && isspace(c))
			r->line += c == '\n';
		if (c != EOF)
			reader_unget(r, c);
		format = c == '{' ? ROWS_FORMAT_JSONL : ROWS_FORMAT_CSV;
	}
	int rc = format == ROWS_FORMAT_JSONL ? jsonl_read(r, in, line) : csv_read(r, in, line);
	if (rc == ROWS_NO_MEMORY)
		snprintf(errmsg, ROWS_ERRMSG_SIZE, "%s: out of memory", name);
	free(line);
	free(r);
	return rc;
}
