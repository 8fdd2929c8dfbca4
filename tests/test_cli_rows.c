/*
 * test_cli_rows.c — tools/rows.c: CSV and JSON-lines event files become
 * tally_client_events with exact values; every malformed input stops with
 * one message naming file, line and field; format detection; the field
 * parsers at their edges.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../tools/rows.h" /* engine/rows.h shares the name */

/* Rows copied out of the callback (their strings live only during it). */
typedef struct kept {
	char id[80], type[80], project[80], agent[80], model[80], user[80], tenant[80];
	int has_tenant;
	tally_client_event e;
	uint64_t line;
} kept;

typedef struct collected {
	kept rows[16];
	int count;
	int stop_after; /* return 7 from the callback after this many rows (0: never) */
} collected;

static void copy_str(char *out, tally_client_str s)
{
	cr_assert_lt(s.len, 80);
	memcpy(out, s.ptr ? s.ptr : "", s.len);
	out[s.len] = '\0';
}

static int collect(void *ctx, const rows_row *row)
{
	collected *c = ctx;
	cr_assert_lt(c->count, 16);
	kept *k = &c->rows[c->count++];
	k->e = row->event;
	copy_str(k->id, row->event.event_id);
	copy_str(k->type, row->event.type);
	copy_str(k->project, row->event.project);
	copy_str(k->agent, row->event.agent);
	copy_str(k->model, row->event.model);
	copy_str(k->user, row->event.user);
	k->has_tenant = row->tenant != NULL;
	copy_str(k->tenant, (tally_client_str){row->tenant, row->tenant_len});
	k->line = row->line;
	return c->stop_after && c->count == c->stop_after ? 7 : 0;
}

/* Reads text as file "in.x" in the given format. */
static int read_text(const char *text, int format, collected *c, char *errmsg)
{
	memset(c->rows, 0, sizeof(c->rows));
	c->count = 0;
	FILE *f = fmemopen((void *)text, strlen(text), "r");
	cr_assert_not_null(f);
	errmsg[0] = '\0';
	int rc = rows_read(f, "in.x", format, collect, c, errmsg);
	fclose(f);
	return rc;
}

/* Description: a CSV with every column, in an unusual order, quoted
 * fields (a comma, a doubled quote, a newline inside), RFC 3339 times with
 * Z, an offset and fractions, statuses by name and number, empty optional
 * fields, and the largest values of each numeric type. */
Test(rows, csv_every_column)
{
	const char *text =
		"time,event_id,type,project,agent,model,user,status,duration_ms,tokens_in,tokens_out,cost_micros,tenant\n"
		"2026-09-21T14:13:20Z,e1,llm.call,alpha,planner,gpt-x,u1,ok,812,1200,340,5000,acme\n"
		"2026-09-21T16:13:20.5+02:00,\"e,2\",\"say \"\"hi\"\"\",,,,,Error,0,0,0,-7,\n"
		"1790000000000001,\"multi\nline\",t,p,a,m,u,3,4294967295,18446744073709551615,0,9223372036854775807,globex\n"
		"-1,e4,,,,,,,,,,-9223372036854775808,\n";
	collected c = {0};
	char err[ROWS_ERRMSG_SIZE];
	cr_assert_eq(read_text(text, ROWS_FORMAT_CSV, &c, err), ROWS_OK, "%s", err);
	cr_assert_eq(c.count, 4);
	kept *k = &c.rows[0];
	cr_expect_str_eq(k->id, "e1");
	cr_expect_eq(k->e.time_us, INT64_C(1790000000000000));
	cr_expect_str_eq(k->type, "llm.call");
	cr_expect_str_eq(k->project, "alpha");
	cr_expect_str_eq(k->agent, "planner");
	cr_expect_str_eq(k->model, "gpt-x");
	cr_expect_str_eq(k->user, "u1");
	cr_expect_eq(k->e.status, 0);
	cr_expect_eq(k->e.duration_ms, 812);
	cr_expect_eq(k->e.tokens_in, 1200);
	cr_expect_eq(k->e.tokens_out, 340);
	cr_expect_eq(k->e.cost_micros, 5000);
	cr_expect_str_eq(k->tenant, "acme");
	cr_expect_eq(k->line, 2);

	k = &c.rows[1];
	cr_expect_str_eq(k->id, "e,2");
	cr_expect_str_eq(k->type, "say \"hi\"");
	cr_expect_eq(k->e.time_us, INT64_C(1790000000500000), "16:13:20.5+02:00 is 14:13:20.5Z");
	cr_expect_eq(k->e.status, 1);
	cr_expect_eq(k->e.cost_micros, -7);
	cr_expect_eq(k->e.project.len, 0);
	cr_expect_not(k->has_tenant, "an empty tenant is no tenant");
	cr_expect_eq(k->line, 3);

	k = &c.rows[2];
	cr_expect_str_eq(k->id, "multi\nline");
	cr_expect_eq(k->e.time_us, INT64_C(1790000000000001));
	cr_expect_eq(k->e.status, 3);
	cr_expect_eq(k->e.duration_ms, UINT32_MAX);
	cr_expect_eq(k->e.tokens_in, UINT64_MAX);
	cr_expect_eq(k->e.cost_micros, INT64_MAX);
	cr_expect_str_eq(k->tenant, "globex");
	cr_expect_eq(k->line, 4);

	k = &c.rows[3];
	cr_expect_eq(k->e.time_us, -1);
	cr_expect_eq(k->e.cost_micros, INT64_MIN);
	cr_expect_eq(k->e.status, 0);
	cr_expect_eq(k->line, 6, "after the record that spans two lines");
}

/* Description: JSON lines with the same fields: integers or strings of
 * digits for numbers, null for "not given", blank lines skipped and
 * counted. */
Test(rows, jsonl_rows)
{
	const char *text =
		"{\"event_id\":\"e1\",\"time\":\"2026-09-21T14:13:20.123456Z\",\"model\":\"gpt-x\",\"status\":\"timeout\","
		"\"tokens_in\":18446744073709551615,\"duration_ms\":5}\n"
		"\n"
		"   \n"
		"{\"event_id\":\"e2\",\"time\":1790000000000000,\"tokens_in\":\"18446744073709551615\",\"status\":2,"
		"\"user\":null,\"cost_micros\":-3,\"tenant\":\"acme\"}\n";
	collected c = {0};
	char err[ROWS_ERRMSG_SIZE];
	/* 2^64-1 is not a JSON integer for jansson: the first line fails. */
	cr_expect_eq(read_text(text, ROWS_FORMAT_JSONL, &c, err), ROWS_MALFORMED);
	cr_expect(strncmp(err, "in.x:1: not JSON: ", 18) == 0, "%s", err);

	text = "{\"event_id\":\"e1\",\"time\":\"2026-09-21T14:13:20.123456Z\",\"model\":\"gpt-x\",\"status\":\"timeout\","
	       "\"tokens_in\":9223372036854775807,\"duration_ms\":5}\n"
	       "\n"
	       "   \n"
	       "{\"event_id\":\"e2\",\"time\":1790000000000000,\"tokens_in\":\"18446744073709551615\",\"status\":2,"
	       "\"user\":null,\"cost_micros\":-3,\"tenant\":\"acme\"}";
	cr_assert_eq(read_text(text, ROWS_FORMAT_JSONL, &c, err), ROWS_OK, "%s", err);
	cr_assert_eq(c.count, 2);
	cr_expect_eq(c.rows[0].e.time_us, INT64_C(1790000000123456));
	cr_expect_str_eq(c.rows[0].model, "gpt-x");
	cr_expect_eq(c.rows[0].e.status, 2);
	cr_expect_eq(c.rows[0].e.tokens_in, INT64_MAX);
	cr_expect_eq(c.rows[0].e.duration_ms, 5);
	cr_expect_eq(c.rows[0].line, 1);
	cr_expect_not(c.rows[0].has_tenant);
	cr_expect_eq(c.rows[1].e.tokens_in, UINT64_MAX);
	cr_expect_eq(c.rows[1].e.user.len, 0);
	cr_expect_eq(c.rows[1].e.cost_micros, -3);
	cr_expect_str_eq(c.rows[1].tenant, "acme");
	cr_expect_eq(c.rows[1].line, 4);
}

/* Description: every kind of malformed input gives one exact message with
 * file and line, and the rows before it were delivered. */
Test(rows, malformed_inputs_name_file_line_and_field)
{
	const struct {
		int format;
		const char *text;
		int rows_before;
		const char *error;
	} cases[] = {
		{ROWS_FORMAT_CSV, "event_id,time,colour\n", 0,
		 "in.x:1: unknown column 'colour' in the header (known: event_id, time, type, project, agent, "
		 "model, user, status, duration_ms, tokens_in, tokens_out, cost_micros, tenant)"},
		{ROWS_FORMAT_CSV, "event_id,time,time\n", 0, "in.x:1: column 'time' appears twice in the header"},
		{ROWS_FORMAT_CSV, "event_id,model\n", 0,
		 "in.x:1: the header needs the columns event_id and time (it names: event_id)"},
		{ROWS_FORMAT_CSV, "", 0, "in.x:0: no header row (an empty file?)"},
		{ROWS_FORMAT_CSV, "event_id,time\ne1,1\ne2\n", 1, "in.x:3: 1 fields, the header has 2 columns"},
		{ROWS_FORMAT_CSV, "event_id,time\ne1,1\ne2,2026-02-30T00:00:00Z\n", 1,
		 "in.x:3: field 'time': not an RFC 3339 time or integer microseconds: '2026-02-30T00:00:00Z'"},
		{ROWS_FORMAT_CSV, "event_id,time\ne1,\n", 0, "in.x:2: field 'time' is empty"},
		{ROWS_FORMAT_CSV, "event_id,time,status\ne1,1,fine\n", 0,
		 "in.x:2: field 'status': not ok, error, timeout, cancelled or 0..3: 'fine'"},
		{ROWS_FORMAT_CSV, "event_id,time,status\ne1,1,4\n", 0,
		 "in.x:2: field 'status': not ok, error, timeout, cancelled or 0..3: '4'"},
		{ROWS_FORMAT_CSV, "event_id,time,duration_ms\ne1,1,4294967296\n", 0,
		 "in.x:2: field 'duration_ms': not an integer from 0 to 4294967295: '4294967296'"},
		{ROWS_FORMAT_CSV, "event_id,time,tokens_in\ne1,1,-1\n", 0,
		 "in.x:2: field 'tokens_in': not an integer from 0 to 18446744073709551615: '-1'"},
		{ROWS_FORMAT_CSV, "event_id,time,tokens_out\ne1,1,18446744073709551616\n", 0,
		 "in.x:2: field 'tokens_out': not an integer from 0 to 18446744073709551615: '18446744073709551616'"},
		{ROWS_FORMAT_CSV, "event_id,time,cost_micros\ne1,1,9223372036854775808\n", 0,
		 "in.x:2: field 'cost_micros': not a 64-bit signed integer: '9223372036854775808'"},
		{ROWS_FORMAT_CSV, "event_id,time,tokens_in\ne1,1,1.5\n", 0,
		 "in.x:2: field 'tokens_in': not an integer from 0 to 18446744073709551615: '1.5'"},
		{ROWS_FORMAT_CSV, "event_id,time\ne1,1\n\"e2,2\n", 1,
		 "in.x:3: malformed CSV at the end of the file: error parsing data while strict checking enabled"},
		{ROWS_FORMAT_CSV, "event_id,time\ne\"1,1\n", 0,
		 "in.x:2: malformed CSV: error parsing data while strict checking enabled"},
		{ROWS_FORMAT_JSONL, "{\"event_id\":\"e1\",\"time\":1}\n{\"event_id\":\"e2\"}\n", 1, "in.x:2: no time"},
		{ROWS_FORMAT_JSONL, "{\"time\":1}\n", 0, "in.x:1: no event_id"},
		{ROWS_FORMAT_JSONL, "{\"event_id\":\"e1\",\"time\":1,\"colour\":\"red\"}\n", 0,
		 "in.x:1: unknown key 'colour' (known: event_id, time, type, project, agent, model, user, status, "
		 "duration_ms, tokens_in, tokens_out, cost_micros, tenant)"},
		{ROWS_FORMAT_JSONL, "{\"event_id\":7,\"time\":1}\n", 0, "in.x:1: field 'event_id': want a string"},
		{ROWS_FORMAT_JSONL, "{\"event_id\":\"e\",\"time\":1.5}\n", 0,
		 "in.x:1: field 'time': want an integer or a string"},
		{ROWS_FORMAT_JSONL, "{\"event_id\":\"e\",\"time\":1,\"duration_ms\":-2}\n", 0,
		 "in.x:1: field 'duration_ms': not an integer from 0 to 4294967295: '-2'"},
		{ROWS_FORMAT_JSONL, "[1,2]\n", 0, "in.x:1: not a JSON object"},
		{ROWS_FORMAT_JSONL, "{\"event_id\":\"a\",\"event_id\":\"b\",\"time\":1}\n", 0,
		 "in.x:1: not JSON: duplicate object key near '\"event_id\"'"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		collected c = {0};
		char err[ROWS_ERRMSG_SIZE];
		cr_expect_eq(read_text(cases[i].text, cases[i].format, &c, err), ROWS_MALFORMED, "case %zu", i);
		cr_expect_str_eq(err, cases[i].error, "case %zu", i);
		cr_expect_eq(c.count, cases[i].rows_before, "case %zu", i);
	}
}

/* Description: a line over ROWS_LINE_BYTES_MAX is refused with its line
 * number, not read into unbounded memory. */
Test(rows, overlong_line_is_refused)
{
	size_t n = ROWS_LINE_BYTES_MAX + 100;
	char *text = malloc(n + 64);
	strcpy(text, "event_id,time\ne1,1\n");
	size_t at = strlen(text);
	memset(text + at, 'x', n);
	strcpy(text + at + n, ",1\n");
	collected c = {0};
	char err[ROWS_ERRMSG_SIZE];
	cr_expect_eq(read_text(text, ROWS_FORMAT_CSV, &c, err), ROWS_MALFORMED);
	cr_expect_str_eq(err, "in.x:3: line longer than 1048576 bytes");
	cr_expect_eq(c.count, 1);
	free(text);
}

/* Description: a CSV record of more than ROWS_COLUMNS_MAX fields, and one
 * whose lines are each under ROWS_LINE_BYTES_MAX but which together pass it
 * (a quoted field holding line breaks), are refused with the line the
 * record starts on, the rows before them delivered; a good record whose
 * first field spans lines is named by its first line. */
Test(rows, csv_record_limits)
{
	char header[1024];
	size_t at = 0;
	for (unsigned i = 0; i <= ROWS_COLUMNS_MAX; i++)
		at += (size_t)snprintf(header + at, sizeof(header) - at, "%sc%u", i ? "," : "", i);
	snprintf(header + at, sizeof(header) - at, "\n");
	collected c = {0};
	char err[ROWS_ERRMSG_SIZE];
	cr_expect_eq(read_text(header, ROWS_FORMAT_CSV, &c, err), ROWS_MALFORMED);
	cr_expect_str_eq(err, "in.x:1: more than 64 columns");

	size_t half = ROWS_LINE_BYTES_MAX / 2 + 10; /* two such lines make one record */
	char *text = malloc(2 * half + 64);
	cr_assert_not_null(text);
	strcpy(text, "event_id,time\ne1,1\n\"");
	at = strlen(text);
	memset(text + at, 'x', half);
	text[at + half] = '\n';
	memset(text + at + half + 1, 'y', half);
	strcpy(text + at + 2 * half + 1, "\",2\n");
	memset(&c, 0, sizeof(c));
	cr_expect_eq(read_text(text, ROWS_FORMAT_CSV, &c, err), ROWS_MALFORMED);
	cr_expect_str_eq(err, "in.x:3: a record longer than 1048576 bytes");
	cr_expect_eq(c.count, 1);
	free(text);

	/* A record whose first field spans lines 2..4 is named by line 2. */
	memset(&c, 0, sizeof(c));
	cr_assert_eq(read_text("event_id,time\n\"a\nb\nc\",1\nd,2\n", ROWS_FORMAT_CSV, &c, err), ROWS_OK,
		     "%s", err);
	cr_assert_eq(c.count, 2);
	cr_expect_str_eq(c.rows[0].id, "a\nb\nc");
	cr_expect_eq(c.rows[0].line, 2);
	cr_expect_eq(c.rows[1].line, 5);
}

/* Description: a quoted field that never ends (a stray quote) is refused
 * as a record over ROWS_LINE_BYTES_MAX once libcsv holds that much of it,
 * named by the line the record starts on: the reading stops there, about
 * 1 MiB into an input of 8 MiB, instead of holding the rest of the input
 * in memory until its end. */
Test(rows, a_stray_quote_never_reads_the_whole_input)
{
	size_t total = 8u << 20, line = 1000;
	char *text = malloc(total + 1);
	cr_assert_not_null(text);
	strcpy(text, "event_id,time\ne1,1\ne2,\"");
	for (size_t at = strlen(text), n; at < total; at += n) { /* lines of `line` bytes */
		n = total - at < line ? total - at : line;
		memset(text + at, 'q', n);
		text[at + n - 1] = '\n';
	}
	text[total] = '\0';
	FILE *f = fmemopen(text, total, "r");
	cr_assert_not_null(f);
	collected c = {0};
	char err[ROWS_ERRMSG_SIZE];
	cr_expect_eq(rows_read(f, "in.x", ROWS_FORMAT_CSV, collect, &c, err), ROWS_MALFORMED);
	cr_expect_str_eq(err, "in.x:3: a record longer than 1048576 bytes");
	cr_expect_eq(c.count, 1);
	long read = ftell(f);
	cr_expect_lt(read, (long)(ROWS_LINE_BYTES_MAX + 2 * line + 4096), "read %ld bytes", read);
	fclose(f);
	free(text);
}

/* Description: with no format given, the first non-blank character
 * decides ('{': JSON lines, else CSV) and the skipped lines are counted;
 * a UTF-8 byte order mark before the header is ignored; names give the
 * format by extension. */
Test(rows, format_detection)
{
	collected c = {0};
	char err[ROWS_ERRMSG_SIZE];
	cr_assert_eq(read_text("\n\n  {\"event_id\":\"j\",\"time\":5}\n", ROWS_FORMAT_AUTO, &c, err), ROWS_OK, "%s", err);
	cr_assert_eq(c.count, 1);
	cr_expect_str_eq(c.rows[0].id, "j");
	cr_expect_eq(c.rows[0].line, 3);
	cr_assert_eq(read_text("\xef\xbb\xbf" "event_id,time\nc,6\n", ROWS_FORMAT_AUTO, &c, err), ROWS_OK, "%s", err);
	cr_assert_eq(c.count, 1);
	cr_expect_eq(c.rows[0].e.time_us, 6);
	cr_expect_eq(rows_format_from_name("x/events.CSV"), ROWS_FORMAT_CSV);
	cr_expect_eq(rows_format_from_name("a.jsonl"), ROWS_FORMAT_JSONL);
	cr_expect_eq(rows_format_from_name("a.ndjson"), ROWS_FORMAT_JSONL);
	cr_expect_eq(rows_format_from_name("-"), ROWS_FORMAT_AUTO);
	cr_expect_eq(rows_format_from_name("a.json"), ROWS_FORMAT_AUTO);
	cr_expect_eq(rows_format_parse("csv"), ROWS_FORMAT_CSV);
	cr_expect_eq(rows_format_parse("ndjson"), ROWS_FORMAT_JSONL);
	cr_expect_eq(rows_format_parse("xml"), -1);
}

/* Description: a non-zero return from the callback stops the reading
 * and is returned as is. */
Test(rows, callback_stops_the_reading)
{
	collected c = {0};
	c.stop_after = 2;
	char err[ROWS_ERRMSG_SIZE];
	memset(c.rows, 0, sizeof(c.rows));
	c.count = 0;
	const char *text = "event_id,time\na,1\nb,2\nc,3\n";
	FILE *f = fmemopen((void *)text, strlen(text), "r");
	cr_expect_eq(rows_read(f, "in.x", ROWS_FORMAT_CSV, collect, &c, err), 7);
	fclose(f);
	cr_expect_eq(c.count, 2);
}

/* Description: RFC 3339 times against known instants: Z and offsets,
 * fractions padded to microseconds, leap days, the epoch, dates before
 * 1970; and what is refused: no offset, 7 fractional digits, hour 24,
 * second 60, Feb 29 of a common year, trailing text. */
Test(rows, time_parsing)
{
	const struct {
		const char *text;
		int64_t us;
	} good[] = {
		{"1970-01-01T00:00:00Z", 0},
		{"1970-01-01T00:00:00.000001Z", 1},
		{"1969-12-31T23:59:59.999999Z", -1},
		{"2000-02-29T12:00:00+12:00", INT64_C(951782400000000)},
		{"2026-09-21t14:13:20.1z", INT64_C(1790000000100000)},
		{"2026-09-21 14:13:20-00:30", INT64_C(1790001800000000)},
		{"1900-01-01T00:00:00Z", INT64_C(-2208988800000000)},
		{"9223372036854775807", INT64_MAX},
		{"-42", -42},
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		int64_t us = 0;
		cr_expect_eq(rows_parse_time(good[i].text, strlen(good[i].text), &us), 0, "%s", good[i].text);
		cr_expect_eq(us, good[i].us, "%s: %lld", good[i].text, (long long)us);
	}
	const char *bad[] = {
		"2026-09-21T14:13:20", "2026-09-21T14:13:20.1234567Z", "2026-09-21T24:00:00Z",
		"2026-09-21T23:59:60Z", "2026-02-29T00:00:00Z", "2026-09-21T14:13:20Zjunk", "2026-9-21T14:13:20Z",
		"2026-09-21T14:13:20.Z", "2026-09-21T14:13:20+2:00", "9223372036854775808", "-", "now",
		"2026-09-21T14:13:20+24:00",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int64_t us;
		cr_expect_eq(rows_parse_time(bad[i], strlen(bad[i]), &us), -EINVAL, "%s", bad[i]);
	}
	uint32_t st;
	cr_expect_eq(rows_parse_status("CANCELLED", 9, &st), 0);
	cr_expect_eq(st, 3);
	cr_expect_eq(rows_parse_status("", 0, &st), -EINVAL);
	uint64_t v;
	cr_expect_eq(rows_parse_uint("", 0, 10, &v), -EINVAL);
	cr_expect_eq(rows_parse_uint("10", 2, 10, &v), 0);
	cr_expect_eq(rows_parse_uint("11", 2, 10, &v), -EINVAL);
	cr_expect_eq(rows_parse_uint("+1", 2, 10, &v), -EINVAL);
}

#define FIELDS_KNOWN_TEST                                                                  \
	"event_id, time, type, project, agent, model, user, status, duration_ms, tokens_in, " \
	"tokens_out, cost_micros, tenant"

/* Reads text through a pipe, as from stdin (a stream that cannot seek). */
static int read_piped(const char *text, int format, collected *c, char *errmsg)
{
	int fds[2];
	cr_assert_eq(pipe(fds), 0, "pipe: %s", strerror(errno));
	size_t len = strlen(text);
	cr_assert_lt(len, 4096, "the pipe holds the whole text");
	cr_assert_eq(write(fds[1], text, len), (ssize_t)len);
	close(fds[1]);
	FILE *f = fdopen(fds[0], "r");
	cr_assert_not_null(f);
	memset(c->rows, 0, sizeof(c->rows));
	c->count = 0;
	errmsg[0] = '\0';
	int rc = rows_read(f, "-", format, collect, c, errmsg);
	fclose(f);
	return rc;
}

/* Description: a UTF-8 byte order mark at the start of the input is
 * dropped before any parser sees it: before a quoted or an unquoted CSV
 * header and before a JSON-lines file, in the named format and detected,
 * from a file and from a pipe; line numbers are unchanged. A BOM that is
 * not at the very start, and bytes that only begin like one, stay data. */
Test(rows, byte_order_mark_is_dropped)
{
	static const char *texts[] = {
		"\xef\xbb\xbf" "\"event_id\",\"time\"\n\"a\",\"1\"\n\"b\",\"2\"\n",
		"\xef\xbb\xbf" "event_id,time\na,1\nb,2\n",
		"\xef\xbb\xbf" "{\"event_id\":\"a\",\"time\":1}\n{\"event_id\":\"b\",\"time\":2}\n",
		"\xef\xbb\xbf" "\n{\"event_id\":\"a\",\"time\":1}\n"
		"{\"event_id\":\"b\",\"time\":2}\n",
	};
	static const int formats[] = {ROWS_FORMAT_CSV, ROWS_FORMAT_CSV, ROWS_FORMAT_JSONL,
				      ROWS_FORMAT_JSONL};
	static const uint64_t first_lines[] = {2, 2, 1, 2};
	for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++)
		for (int how = 0; how < 4; how++) {
			collected c = {0};
			char err[ROWS_ERRMSG_SIZE];
			int format = how & 1 ? ROWS_FORMAT_AUTO : formats[t];
			int rc = how & 2 ? read_piped(texts[t], format, &c, err)
					 : read_text(texts[t], format, &c, err);
			cr_assert_eq(rc, ROWS_OK, "text %zu, way %d: %s", t, how, err);
			cr_assert_eq(c.count, 2, "text %zu, way %d", t, how);
			cr_expect_str_eq(c.rows[0].id, "a");
			cr_expect_eq(c.rows[0].e.time_us, 1);
			cr_expect_eq(c.rows[0].line, first_lines[t], "text %zu, way %d", t, how);
			cr_expect_str_eq(c.rows[1].id, "b");
			cr_expect_eq(c.rows[1].line, first_lines[t] + 1, "text %zu, way %d", t,
				     how);
		}
	collected c = {0};
	char err[ROWS_ERRMSG_SIZE];
	/* Only the first three bytes: a second BOM is part of the name. */
	cr_assert_eq(read_text("\xef\xbb\xbf\xef\xbb\xbf" "event_id,time\n", ROWS_FORMAT_CSV, &c,
			       err), ROWS_MALFORMED);
	cr_expect_str_eq(err, "in.x:1: unknown column '\xef\xbb\xbf" "event_id' in the header"
			      " (known: " FIELDS_KNOWN_TEST ")");
	/* Bytes that begin like a BOM and are not one reach the parser whole. */
	cr_assert_eq(read_piped("\xef\xbb" "x,event_id,time\n", ROWS_FORMAT_AUTO, &c, err),
		     ROWS_MALFORMED);
	cr_expect_str_eq(err, "-:1: unknown column '\xef\xbb" "x' in the header"
			      " (known: " FIELDS_KNOWN_TEST ")");
	cr_assert_eq(read_piped("\xef", ROWS_FORMAT_AUTO, &c, err), ROWS_MALFORMED);
	cr_expect_str_eq(err, "-:1: unknown column '\xef' in the header (known: " FIELDS_KNOWN_TEST
			      ")");
}
