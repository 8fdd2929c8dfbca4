/*
 * format.c — tables, CSV and JSON output (format.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <csv.h>
#include <jansson.h>

#include "format.h"

#define US_PER_SECOND INT64_C(1000000)
#define CELL_TEXT_SIZE 48 /* a number or time as text */
_Static_assert(CELL_TEXT_SIZE >= FORMAT_WIDE_SIZE, "a cell holds a 128-bit integer");
#define ZONEINFO_DIR "/usr/share/zoneinfo/"

static const char *const status_names[] = {"ok", "error", "timeout", "cancelled"};

const char *const format_event_columns[12] = {
	"event_id", "time", "type", "project", "agent", "model",
	"user", "status", "duration_ms", "tokens_in", "tokens_out", "cost_micros",
};

int format_parse(const char *name)
{
	if (strcmp(name, "table") == 0)
		return FORMAT_TABLE;
	if (strcmp(name, "csv") == 0)
		return FORMAT_CSV;
	if (strcmp(name, "json") == 0)
		return FORMAT_JSON;
	return -1;
}

int format_option(const char *text, int *format, char *errmsg)
{
	int f = format_parse(text);
	if (f < 0) {
		snprintf(errmsg, QUERYARGS_ERRMSG_SIZE, "--format '%s': want table, csv or json", text);
		return -EINVAL;
	}
	*format = f;
	return 0;
}

/* ---- the table ------------------------------------------------------------- */

int format_table_init(format_table *t, const char *const *names, size_t column_count)
{
	memset(t, 0, sizeof(*t));
	if (column_count > FORMAT_COLUMNS_MAX)
		return -EINVAL;
	for (size_t i = 0; i < column_count; i++)
		if (!(t->names[i] = strdup(names[i]))) {
			format_table_free(t);
			return -ENOMEM;
		}
	t->column_count = column_count;
	return 0;
}

void format_table_free(format_table *t)
{
	for (size_t i = 0; i < FORMAT_COLUMNS_MAX; i++)
		free(t->names[i]);
	free(t->cells);
	free(t->text);
	memset(t, 0, sizeof(*t));
}

void format_table_clear(format_table *t)
{
	t->cell_count = 0;
	t->text_size = 0;
}

size_t format_table_rows(const format_table *t)
{
	return t->column_count ? t->cell_count / t->column_count : 0;
}

static format_cell *cell_new(format_table *t, int kind)
{
	if (t->cell_count >= (size_t)FORMAT_ROWS_MAX * t->column_count)
		return NULL; /* checked at every cell: the capacity doubles past the limit */
	if (t->cell_count == t->cell_capacity) {
		size_t capacity = t->cell_capacity ? t->cell_capacity * 2 : 64;
		format_cell *cells = realloc(t->cells, capacity * sizeof(*cells));
		if (!cells)
			return NULL;
		t->cells = cells;
		t->cell_capacity = capacity;
	}
	format_cell *c = &t->cells[t->cell_count++];
	c->kind = kind;
	return c;
}

/* -E2BIG when the row limit is reached, else -ENOMEM. */
static int cell_fail(const format_table *t)
{
	return t->cell_count >= (size_t)FORMAT_ROWS_MAX * t->column_count ? -E2BIG : -ENOMEM;
}

int format_add_text(format_table *t, const void *text, size_t len)
{
	if (len > t->text_capacity - t->text_size) {
		size_t capacity = t->text_capacity ? t->text_capacity : 4096;
		while (capacity - t->text_size < len)
			capacity *= 2;
		char *grown = realloc(t->text, capacity);
		if (!grown)
			return -ENOMEM;
		t->text = grown;
		t->text_capacity = capacity;
	}
	format_cell *c = cell_new(t, CELL_TEXT);
	if (!c)
		return cell_fail(t);
	if (len)
		memcpy(t->text + t->text_size, text, len);
	c->v.text.offset = t->text_size;
	c->v.text.len = len;
	t->text_size += len;
	return 0;
}

int format_add_int(format_table *t, int64_t v)
{
	format_cell *c = cell_new(t, CELL_INT);
	if (!c)
		return cell_fail(t);
	c->v.i = v;
	return 0;
}

int format_add_uint(format_table *t, uint64_t v)
{
	format_cell *c = cell_new(t, CELL_UINT);
	if (!c)
		return cell_fail(t);
	c->v.u = v;
	return 0;
}

int format_add_real(format_table *t, double v)
{
	format_cell *c = cell_new(t, CELL_REAL);
	if (!c)
		return cell_fail(t);
	c->v.d = v;
	return 0;
}

int format_add_bool(format_table *t, bool v)
{
	format_cell *c = cell_new(t, CELL_BOOL);
	if (!c)
		return cell_fail(t);
	c->v.b = v;
	return 0;
}

/* ---- printing --------------------------------------------------------------- */

/* A real without trailing zeros: 120.5, 980, 0.125 (3 decimals at most). */
static void real_text(char *out, double v)
{
	if (!isfinite(v)) {
		snprintf(out, CELL_TEXT_SIZE, "%s", isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
		return;
	}
	snprintf(out, CELL_TEXT_SIZE, "%.3f", v);
	char *dot = strchr(out, '.');
	if (!dot)
		return;
	char *end = out + strlen(out);
	while (end > dot + 1 && end[-1] == '0')
		end--;
	if (end == dot + 1)
		end = dot;
	*end = '\0';
}

void format_wide_text(char *out, __int128 v)
{
	unsigned __int128 m = v < 0 ? -(unsigned __int128)v : (unsigned __int128)v;
	char digits[CELL_TEXT_SIZE], *p = digits + sizeof(digits);
	*--p = '\0';
	do {
		*--p = (char)('0' + (int)(m % 10));
		m /= 10;
	} while (m);
	if (v < 0)
		*--p = '-';
	memcpy(out, p, (size_t)(digits + sizeof(digits) - p));
}

/* A non-text cell as text (out: CELL_TEXT_SIZE bytes). */
static void cell_text(const format_cell *c, char *out)
{
	switch (c->kind) {
	case CELL_INT: snprintf(out, CELL_TEXT_SIZE, "%" PRId64, c->v.i); break;
	case CELL_UINT: snprintf(out, CELL_TEXT_SIZE, "%" PRIu64, c->v.u); break;
	case CELL_REAL: real_text(out, c->v.d); break;
	case CELL_BOOL: snprintf(out, CELL_TEXT_SIZE, "%s", c->v.b ? "true" : "false"); break;
	case CELL_WIDE: format_wide_text(out, c->v.w); break;
	default: out[0] = '\0';
	}
}

/* The bytes a cell shows, and how many. */
static const char *cell_bytes(const format_table *t, const format_cell *c, char *buf, size_t *len)
{
	if (c->kind == CELL_TEXT) {
		*len = c->v.text.len;
		return t->text + c->v.text.offset;
	}
	cell_text(c, buf);
	*len = strlen(buf);
	return buf;
}

static bool column_numeric(const format_table *t, size_t column)
{
	size_t rows = format_table_rows(t);
	for (size_t r = 0; r < rows; r++) {
		int kind = t->cells[r * t->column_count + column].kind;
		if (kind == CELL_TEXT || kind == CELL_BOOL)
			return false;
	}
	return rows > 0;
}

/* The columns len bytes of text take in a table: one per character (a
 * UTF-8 continuation byte adds none), so non-ASCII text lines up as ASCII
 * does (a wide character, CJK say, still shows two columns wide). */
static size_t text_columns(const char *p, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		n += ((unsigned char)p[i] & 0xc0) != 0x80;
	return n;
}

static void table_field(FILE *out, const char *p, size_t len, size_t width, bool right, bool last)
{
	size_t columns = text_columns(p, len);
	if (right)
		for (size_t i = columns; i < width; i++)
			fputc(' ', out);
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)p[i];
		fputc(ch < 0x20 || ch == 0x7f ? '?' : ch, out);
	}
	if (!right && !last)
		for (size_t i = columns; i < width; i++)
			fputc(' ', out);
	if (!last)
		fputs("  ", out);
}

static void print_table(const format_table *t, FILE *out, bool header)
{
	size_t rows = format_table_rows(t);
	size_t widths[FORMAT_COLUMNS_MAX];
	bool right[FORMAT_COLUMNS_MAX];
	char buf[CELL_TEXT_SIZE];
	for (size_t c = 0; c < t->column_count; c++) {
		widths[c] = strlen(t->names[c]);
		right[c] = column_numeric(t, c);
		for (size_t r = 0; r < rows; r++) {
			size_t len;
			const char *p = cell_bytes(t, &t->cells[r * t->column_count + c], buf, &len);
			size_t columns = text_columns(p, len);
			if (columns > widths[c])
				widths[c] = columns;
		}
	}
	if (header) {
		for (size_t c = 0; c < t->column_count; c++)
			table_field(out, t->names[c], strlen(t->names[c]), widths[c], right[c],
				    c + 1 == t->column_count);
		fputc('\n', out);
		for (size_t c = 0; c < t->column_count; c++) {
			for (size_t i = 0; i < widths[c]; i++)
				fputc('-', out);
			fputs(c + 1 == t->column_count ? "\n" : "  ", out);
		}
	}
	for (size_t r = 0; r < rows; r++) {
		for (size_t c = 0; c < t->column_count; c++) {
			size_t len;
			const char *p = cell_bytes(t, &t->cells[r * t->column_count + c], buf, &len);
			table_field(out, p, len, widths[c], right[c], c + 1 == t->column_count);
		}
		fputc('\n', out);
	}
}

/* A CSV field: as is when it needs no quoting, else through libcsv. */
static void csv_field(FILE *out, const char *p, size_t len, bool last)
{
	/* libcsv trims spaces and tabs around unquoted fields: keep them quoted. */
	bool quote = len && (p[0] == ' ' || p[0] == '\t' || p[len - 1] == ' ' || p[len - 1] == '\t');
	for (size_t i = 0; i < len && !quote; i++)
		quote = p[i] == ',' || p[i] == '"' || p[i] == '\n' || p[i] == '\r';
	if (quote)
		csv_fwrite(out, p, len);
	else
		fwrite(p, 1, len, out);
	fputc(last ? '\n' : ',', out);
}

static void print_csv(const format_table *t, FILE *out, bool header)
{
	char buf[CELL_TEXT_SIZE];
	if (header)
		for (size_t c = 0; c < t->column_count; c++)
			csv_field(out, t->names[c], strlen(t->names[c]), c + 1 == t->column_count);
	size_t rows = format_table_rows(t);
	for (size_t r = 0; r < rows; r++)
		for (size_t c = 0; c < t->column_count; c++) {
			size_t len;
			const char *p = cell_bytes(t, &t->cells[r * t->column_count + c], buf, &len);
			csv_field(out, p, len, c + 1 == t->column_count);
		}
}

/* See format.h. */
json_t *format_json_text(const char *p, size_t len)
{
	json_t *s = json_stringn(p, len);
	if (s)
		return s;
	char *copy = malloc(len ? len : 1);
	if (!copy)
		return NULL;
	for (size_t i = 0; i < len; i++)
		copy[i] = (unsigned char)p[i] >= 0x80 || p[i] == '\0' ? '?' : p[i];
	s = json_stringn(copy, len);
	free(copy);
	return s;
}

static json_t *json_cell(const format_table *t, const format_cell *c)
{
	char buf[CELL_TEXT_SIZE];
	switch (c->kind) {
	case CELL_TEXT: return format_json_text(t->text + c->v.text.offset, c->v.text.len);
	case CELL_INT: return json_integer(c->v.i);
	case CELL_UINT:
		if (c->v.u <= (uint64_t)INT64_MAX)
			return json_integer((json_int_t)c->v.u);
		snprintf(buf, sizeof(buf), "%" PRIu64, c->v.u);
		return json_string(buf);
	case CELL_REAL: return isfinite(c->v.d) ? json_real(c->v.d) : json_null();
	case CELL_WIDE:
		if (c->v.w >= INT64_MIN && c->v.w <= INT64_MAX)
			return json_integer((json_int_t)c->v.w);
		format_wide_text(buf, c->v.w);
		return json_string(buf);
	default: return json_boolean(c->v.b);
	}
}

static int print_json(const format_table *t, FILE *out, bool lines)
{
	size_t rows = format_table_rows(t);
	if (!lines)
		fputs(rows ? "[\n" : "[]\n", out);
	for (size_t r = 0; r < rows; r++) {
		json_t *object = json_object();
		if (!object)
			return -ENOMEM;
		for (size_t c = 0; c < t->column_count; c++)
			if (json_object_set_new(object, t->names[c], json_cell(t, &t->cells[r * t->column_count + c]))) {
				json_decref(object);
				return -ENOMEM;
			}
		if (!lines)
			fputs("  ", out);
		int failed = json_dumpf(object, out, JSON_COMPACT);
		json_decref(object);
		if (failed)
			return -EIO;
		fputs(lines || r + 1 == rows ? "\n" : ",\n", out);
	}
	if (!lines && rows)
		fputs("]\n", out);
	return 0;
}

int format_print(const format_table *t, FILE *out, int format, bool header)
{
	int rc = 0;
	switch (format) {
	case FORMAT_CSV: print_csv(t, out, header); break;
	case FORMAT_JSON: rc = print_json(t, out, false); break;
	case FORMAT_JSONL: rc = print_json(t, out, true); break;
	default: print_table(t, out, header);
	}
	if (!rc && ferror(out))
		rc = -EIO;
	return rc;
}

/* ---- times ------------------------------------------------------------------------ */

void format_time(char *out, int64_t time_us, bool fraction, bool local)
{
	int64_t seconds = time_us / US_PER_SECOND - (time_us % US_PER_SECOND < 0);
	int64_t micros = time_us - seconds * US_PER_SECOND;
	time_t t = (time_t)seconds;
	struct tm tm;
	if (!(local ? localtime_r(&t, &tm) : gmtime_r(&t, &tm))) {
		snprintf(out, FORMAT_TIME_SIZE, "%" PRId64, time_us);
		return;
	}
	int n = snprintf(out, FORMAT_TIME_SIZE, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
			 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	if (fraction)
		n += snprintf(out + n, FORMAT_TIME_SIZE - (size_t)n, ".%06" PRId64, micros);
	if (!local) {
		snprintf(out + n, FORMAT_TIME_SIZE - (size_t)n, "Z");
		return;
	}
	long offset = tm.tm_gmtoff;
	char sign = offset < 0 ? '-' : '+';
	offset = offset < 0 ? -offset : offset;
	/* Offsets with seconds (some zones before 1900) are cut to minutes. */
	snprintf(out + n, FORMAT_TIME_SIZE - (size_t)n, "%c%02ld:%02ld", sign, offset / 3600, offset % 3600 / 60);
}

int format_time_zone(const char *zone)
{
	/* A name, never a path out of the zone directory. */
	if (!zone[0] || zone[0] == '/' || strstr(zone, ".."))
		return -ENOENT;
	char path[256];
	snprintf(path, sizeof(path), "%s%s", ZONEINFO_DIR, zone);
	if (access(path, R_OK) != 0)
		return -ENOENT;
	if (setenv("TZ", zone, 1) != 0)
		return -errno;
	tzset();
	return 0;
}

/* ---- results ------------------------------------------------------------------------ */

/* A sum past its 64-bit range (its Wraps field not 0): its exact value,
 * field + wraps * 2^64, a number in tables and CSV, and in JSON a string
 * (as a uint64 past int64 is: JSON's integers stop at 64 bits). */
static int add_exact(format_table *t, __int128 field, int64_t wraps)
{
	format_cell *c = cell_new(t, CELL_WIDE);
	if (!c)
		return cell_fail(t);
	c->v.w = field + (__int128)wraps * ((__int128)1 << 64);
	return 0;
}

static int add_agg(format_table *t, const queryargs_agg *a, const Tally__V1__Row *row)
{
	static const Tally__V1__Wraps none = TALLY__V1__WRAPS__INIT;
	const Tally__V1__Wraps *w = row->wraps ? row->wraps : &none;
	switch (a->kind) {
	case QA_COUNT: return format_add_uint(t, row->count);
	case QA_TOKENS_IN:
		return w->tokens_in ? add_exact(t, row->tokens_in, w->tokens_in) : format_add_uint(t, row->tokens_in);
	case QA_TOKENS_OUT:
		return w->tokens_out ? add_exact(t, row->tokens_out, w->tokens_out)
				     : format_add_uint(t, row->tokens_out);
	case QA_COST_MICROS:
		return w->cost_micros ? add_exact(t, row->cost_micros, w->cost_micros)
				      : format_add_int(t, row->cost_micros);
	case QA_DURATION_MS:
		return w->duration_ms ? add_exact(t, row->duration_ms_sum, w->duration_ms)
				      : format_add_uint(t, row->duration_ms_sum);
	case QA_MIN_DURATION_MS: return format_add_uint(t, row->duration_ms_min);
	case QA_MAX_DURATION_MS: return format_add_uint(t, row->duration_ms_max);
	case QA_QUANTILE:
		/* The client checked one quantile per requested rank. */
		return format_add_real(t, a->quantile_index < row->n_quantile_ms ? row->quantile_ms[a->quantile_index] : NAN);
	case QA_DISTINCT_USERS: return format_add_uint(t, row->distinct_users);
	default: /* QA_ERRORS: every status but ok (no counts: all zero, as the protocol has it) */
		return format_add_uint(t, row->count - (row->n_status_count ? row->status_count[0] : 0));
	}
}

int format_query_result(format_table *t, const query_spec *spec, const Tally__V1__QueryResult *result)
{
	const char *names[FORMAT_COLUMNS_MAX];
	size_t n = 0;
	names[n++] = "time";
	for (size_t g = 0; g < spec->group_by_count; g++)
		names[n++] = queryargs_dimension_name(spec->group_by[g]);
	for (size_t a = 0; a < spec->agg_count; a++)
		names[n++] = spec->aggs[a].name;
	int rc = format_table_init(t, names, n);
	for (size_t r = 0; r < result->n_rows && !rc; r++) {
		const Tally__V1__Row *row = result->rows[r];
		char time_text[FORMAT_TIME_SIZE];
		format_time(time_text, row->bucket_start_us, row->bucket_start_us % US_PER_SECOND != 0,
			    spec->time_zone != NULL);
		rc = format_add_text(t, time_text, strlen(time_text));
		for (size_t g = 0; g < spec->group_by_count && !rc; g++)
			rc = g < row->n_group ? format_add_text(t, row->group[g].data, row->group[g].len)
					      : format_add_text(t, "", 0);
		for (size_t a = 0; a < spec->agg_count && !rc; a++)
			rc = add_agg(t, &spec->aggs[a], row);
	}
	return rc;
}

int format_event_page(format_table *t, const Tally__V1__EventPage *page, bool local)
{
	int rc = 0;
	for (size_t i = 0; i < page->n_events && !rc; i++) {
		const Tally__V1__Event *e = page->events[i];
		char time_text[FORMAT_TIME_SIZE];
		format_time(time_text, e->time_us, true, local);
		const ProtobufCBinaryData *strings[] = {&e->type, &e->project, &e->agent, &e->model, &e->user};
		rc = format_add_text(t, e->event_id.data, e->event_id.len);
		if (!rc)
			rc = format_add_text(t, time_text, strlen(time_text));
		for (size_t k = 0; k < 5 && !rc; k++)
			rc = format_add_text(t, strings[k]->data, strings[k]->len);
		if (!rc)
			rc = e->status < 4 ? format_add_text(t, status_names[e->status], strlen(status_names[e->status]))
					   : format_add_uint(t, e->status);
		if (!rc)
			rc = format_add_uint(t, e->duration_ms);
		if (!rc)
			rc = format_add_uint(t, e->tokens_in);
		if (!rc)
			rc = format_add_uint(t, e->tokens_out);
		if (!rc)
			rc = format_add_int(t, e->cost_micros);
	}
	return rc;
}
