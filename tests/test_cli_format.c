/*
 * test_cli_format.c — tools/format.c: query results and event pages as
 * aligned tables, CSV and JSON, byte for byte; times in UTC and in a
 * zone; and events printed as CSV or JSON lines read back by the ingest
 * parser (tools/rows.c) to the same events.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tools/cli.h"
#include "../tools/format.h"
#include "../tools/rows.h" /* engine/rows.h shares the name */

/* Prints t into a string (freed by the caller). */
static char *printed(const format_table *t, int format, bool header)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);
	cr_assert_not_null(f);
	cr_assert_eq(format_print(t, f, format, header), 0);
	fclose(f);
	return text;
}

/* A result of two rows grouped by model and status, with a percentile. */
static Tally__V1__QueryResult *two_rows(void)
{
	static ProtobufCBinaryData g1[2] = {{5, (uint8_t *)"gpt-x"}, {2, (uint8_t *)"ok"}};
	static ProtobufCBinaryData g2[2] = {{9, (uint8_t *)"claude,\"y"}, {5, (uint8_t *)"error"}};
	static double q1[1] = {120.5}, q2[1] = {980.0};
	static uint64_t s1[4] = {10, 0, 0, 0}, s2[4] = {1, 2, 0, 1};
	static Tally__V1__Row r1 = TALLY__V1__ROW__INIT, r2 = TALLY__V1__ROW__INIT;
	static Tally__V1__Row *rows[2] = {&r1, &r2};
	static Tally__V1__QueryResult result = TALLY__V1__QUERY_RESULT__INIT;
	r1.bucket_start_us = INT64_C(1789948800000000); /* 2026-09-21T00:00:00Z */
	r1.n_group = 2;
	r1.group = g1;
	r1.count = 10;
	r1.cost_micros = -5;
	r1.tokens_in = UINT64_MAX;
	r1.n_quantile_ms = 1;
	r1.quantile_ms = q1;
	r1.n_status_count = 4;
	r1.status_count = s1;
	r2 = r1;
	r2.bucket_start_us = INT64_C(1790035200000000); /* 2026-09-22T00:00:00Z */
	r2.group = g2;
	r2.count = 4;
	r2.cost_micros = 1234567;
	r2.tokens_in = 7;
	r2.quantile_ms = q2;
	r2.status_count = s2;
	result.n_rows = 2;
	result.rows = rows;
	return &result;
}

static void two_rows_spec(query_spec *s)
{
	queryargs_init(s);
	char err[QUERYARGS_ERRMSG_SIZE];
	cr_assert_eq(queryargs_group_by(s, "model,status", err), 0);
	cr_assert_eq(queryargs_aggs(s, "count,tokens_in,cost_micros,p95_duration_ms,errors", err), 0);
	cr_assert_eq(queryargs_finish(s, INT64_C(1790000000000000), err), 0, "%s", err);
}

/* Description: a query result as a table: header, rule, numbers aligned
 * right, text left; as CSV with a quoted field; as JSON with exact
 * integers, a uint64 past 2^63 as a string, and errors = count - ok. */
Test(format, query_result_in_three_formats)
{
	query_spec spec;
	two_rows_spec(&spec);
	format_table t;
	cr_assert_eq(format_query_result(&t, &spec, two_rows()), 0);
	cr_expect_eq(format_table_rows(&t), 2);
	char *text = printed(&t, FORMAT_TABLE, true);
	cr_expect_str_eq(text,
			 "time                  model      status  count             tokens_in  cost_micros  p95_duration_ms  errors\n"
			 "--------------------  ---------  ------  -----  --------------------  -----------  ---------------  ------\n"
			 "2026-09-21T00:00:00Z  gpt-x      ok         10  18446744073709551615           -5            120.5       0\n"
			 "2026-09-22T00:00:00Z  claude,\"y  error       4                     7      1234567              980       3\n");
	free(text);
	text = printed(&t, FORMAT_CSV, true);
	cr_expect_str_eq(text,
			 "time,model,status,count,tokens_in,cost_micros,p95_duration_ms,errors\n"
			 "2026-09-21T00:00:00Z,gpt-x,ok,10,18446744073709551615,-5,120.5,0\n"
			 "2026-09-22T00:00:00Z,\"claude,\"\"y\",error,4,7,1234567,980,3\n");
	free(text);
	text = printed(&t, FORMAT_JSON, true);
	cr_expect_str_eq(text,
			 "[\n"
			 "  {\"time\":\"2026-09-21T00:00:00Z\",\"model\":\"gpt-x\",\"status\":\"ok\",\"count\":10,"
			 "\"tokens_in\":\"18446744073709551615\",\"cost_micros\":-5,\"p95_duration_ms\":120.5,\"errors\":0},\n"
			 "  {\"time\":\"2026-09-22T00:00:00Z\",\"model\":\"claude,\\\"y\",\"status\":\"error\",\"count\":4,"
			 "\"tokens_in\":7,\"cost_micros\":1234567,\"p95_duration_ms\":980.0,\"errors\":3}\n"
			 "]\n");
	free(text);
	format_table_free(&t);

	/* No rows: the header alone, an empty CSV, an empty array. */
	Tally__V1__QueryResult empty = TALLY__V1__QUERY_RESULT__INIT;
	cr_assert_eq(format_query_result(&t, &spec, &empty), 0);
	text = printed(&t, FORMAT_TABLE, true);
	cr_expect_str_eq(text,
			 "time  model  status  count  tokens_in  cost_micros  p95_duration_ms  errors\n"
			 "----  -----  ------  -----  ---------  -----------  ---------------  ------\n");
	free(text);
	text = printed(&t, FORMAT_JSON, true);
	cr_expect_str_eq(text, "[]\n");
	free(text);
	format_table_free(&t);
	queryargs_free(&spec);
}

/* Description: with a zone, bucket starts carry the zone's offset of
 * that instant (summer and winter); an unknown zone is refused. */
Test(format, times_in_a_zone)
{
	char out[FORMAT_TIME_SIZE];
	format_time(out, INT64_C(1790000000123456), true, false);
	cr_expect_str_eq(out, "2026-09-21T14:13:20.123456Z");
	format_time(out, -1, true, false);
	cr_expect_str_eq(out, "1969-12-31T23:59:59.999999Z");
	cr_assert_eq(format_time_zone("Europe/Paris"), 0);
	format_time(out, INT64_C(1790000000000000), false, true);
	cr_expect_str_eq(out, "2026-09-21T16:13:20+02:00");
	format_time(out, INT64_C(1798761600000000), false, true); /* 2027-01-01T00:00:00Z */
	cr_expect_str_eq(out, "2027-01-01T01:00:00+01:00");
	cr_assert_eq(format_time_zone("America/St_Johns"), 0);
	format_time(out, INT64_C(1798761600000000), false, true);
	cr_expect_str_eq(out, "2026-12-31T20:30:00-03:30");
	cr_expect_eq(format_time_zone("Mars/Olympus"), -ENOENT);
	cr_expect_eq(format_time_zone("../../etc/passwd"), -ENOENT);
	cr_expect_eq(format_time_zone(""), -ENOENT);

	/* A query with a zone prints local bucket starts. */
	query_spec spec;
	two_rows_spec(&spec);
	spec.time_zone = "America/St_Johns";
	format_table t;
	cr_assert_eq(format_query_result(&t, &spec, two_rows()), 0);
	char *text = printed(&t, FORMAT_CSV, false);
	cr_expect(strncmp(text, "2026-09-20T21:30:00-02:30,gpt-x,", 32) == 0, "%s", text);
	free(text);
	format_table_free(&t);
	queryargs_free(&spec);
}

/* An event page of three events with awkward strings. */
static Tally__V1__EventPage *page_of_three(void)
{
	static Tally__V1__Event e[3] = {TALLY__V1__EVENT__INIT, TALLY__V1__EVENT__INIT, TALLY__V1__EVENT__INIT};
	static Tally__V1__Event *list[3] = {&e[0], &e[1], &e[2]};
	static Tally__V1__EventPage page = TALLY__V1__EVENT_PAGE__INIT;
	e[0].event_id = (ProtobufCBinaryData){2, (uint8_t *)"e1"};
	e[0].time_us = INT64_C(1790000000123456);
	e[0].type = (ProtobufCBinaryData){8, (uint8_t *)"llm.call"};
	e[0].model = (ProtobufCBinaryData){5, (uint8_t *)"gpt-x"};
	e[0].status = 2;
	e[0].duration_ms = 812;
	e[0].tokens_in = UINT64_MAX;
	e[0].cost_micros = INT64_MIN;
	e[1].event_id = (ProtobufCBinaryData){7, (uint8_t *)"e,2\"\nx "};
	e[1].time_us = -1;
	e[1].project = (ProtobufCBinaryData){5, (uint8_t *)"caf\xc3\xa9"};
	e[1].user = (ProtobufCBinaryData){3, (uint8_t *)"u 1"};
	e[2].event_id = (ProtobufCBinaryData){2, (uint8_t *)"e3"};
	e[2].agent = (ProtobufCBinaryData){3, (uint8_t *)"a\tb"};
	e[2].status = 3;
	page.n_events = 3;
	page.events = list;
	return &page;
}

/* Description: an event page as a table (control bytes as '?'), CSV and
 * JSON lines, exactly. */
Test(format, event_page_outputs)
{
	format_table t;
	cr_assert_eq(format_table_init(&t, format_event_columns, 12), 0);
	cr_assert_eq(format_event_page(&t, page_of_three(), false), 0);
	char *text = printed(&t, FORMAT_CSV, true);
	cr_expect_str_eq(text,
			 "event_id,time,type,project,agent,model,user,status,duration_ms,tokens_in,tokens_out,cost_micros\n"
			 "e1,2026-09-21T14:13:20.123456Z,llm.call,,,gpt-x,,timeout,812,18446744073709551615,0,-9223372036854775808\n"
			 "\"e,2\"\"\nx \",1969-12-31T23:59:59.999999Z,,caf\xc3\xa9,,,u 1,ok,0,0,0,0\n"
			 "e3,1970-01-01T00:00:00.000000Z,,,a\tb,,,cancelled,0,0,0,0\n");
	free(text);
	text = printed(&t, FORMAT_JSONL, true);
	cr_expect_str_eq(text,
			 "{\"event_id\":\"e1\",\"time\":\"2026-09-21T14:13:20.123456Z\",\"type\":\"llm.call\",\"project\":\"\","
			 "\"agent\":\"\",\"model\":\"gpt-x\",\"user\":\"\",\"status\":\"timeout\",\"duration_ms\":812,"
			 "\"tokens_in\":\"18446744073709551615\",\"tokens_out\":0,\"cost_micros\":-9223372036854775808}\n"
			 "{\"event_id\":\"e,2\\\"\\nx \",\"time\":\"1969-12-31T23:59:59.999999Z\",\"type\":\"\",\"project\":\"caf\xc3\xa9\","
			 "\"agent\":\"\",\"model\":\"\",\"user\":\"u 1\",\"status\":\"ok\",\"duration_ms\":0,\"tokens_in\":0,"
			 "\"tokens_out\":0,\"cost_micros\":0}\n"
			 "{\"event_id\":\"e3\",\"time\":\"1970-01-01T00:00:00.000000Z\",\"type\":\"\",\"project\":\"\",\"agent\":"
			 "\"a\\tb\",\"model\":\"\",\"user\":\"\",\"status\":\"cancelled\",\"duration_ms\":0,\"tokens_in\":0,"
			 "\"tokens_out\":0,\"cost_micros\":0}\n");
	free(text);
	format_table_clear(&t);
	Tally__V1__EventPage one = *page_of_three();
	one.n_events = 1;
	cr_assert_eq(format_event_page(&t, &one, false), 0);
	text = printed(&t, FORMAT_TABLE, false);
	/* Without the header the widths still count the column names, so a
	 * later page lines up with the first. */
	cr_expect_str_eq(text, "e1        2026-09-21T14:13:20.123456Z  llm.call                  gpt-x        timeout          812  "
			       "18446744073709551615           0  -9223372036854775808\n");
	free(text);
	format_table_free(&t);
}

/* Rows read back by the ingest parser. */
typedef struct back {
	Tally__V1__Event events[3];
	char strings[3][6][16];
	int count;
} back;

static int keep_back(void *ctx, const rows_row *row)
{
	back *b = ctx;
	cr_assert_lt(b->count, 3);
	Tally__V1__Event *e = &b->events[b->count];
	const tally_client_str *s[6] = {&row->event.event_id, &row->event.type, &row->event.project,
					&row->event.agent, &row->event.model, &row->event.user};
	ProtobufCBinaryData *d[6] = {&e->event_id, &e->type, &e->project, &e->agent, &e->model, &e->user};
	for (int k = 0; k < 6; k++) {
		cr_assert_lt(s[k]->len, 16);
		memcpy(b->strings[b->count][k], s[k]->ptr ? s[k]->ptr : "", s[k]->len);
		*d[k] = (ProtobufCBinaryData){s[k]->len, (uint8_t *)b->strings[b->count][k]};
	}
	e->time_us = row->event.time_us;
	e->status = row->event.status;
	e->duration_ms = row->event.duration_ms;
	e->tokens_in = row->event.tokens_in;
	e->tokens_out = row->event.tokens_out;
	e->cost_micros = row->event.cost_micros;
	b->count++;
	return 0;
}

static void expect_same_bytes(ProtobufCBinaryData a, ProtobufCBinaryData b)
{
	cr_expect_eq(a.len, b.len);
	if (a.len == b.len && a.len)
		cr_expect_eq(memcmp(a.data, b.data, a.len), 0);
}

/* Description: what `tally events` prints as CSV or JSON lines, `tally
 * ingest` reads back to the same events, every field. */
Test(format, events_output_ingests_again)
{
	int formats[2] = {FORMAT_CSV, FORMAT_JSONL};
	for (int f = 0; f < 2; f++) {
		format_table t;
		cr_assert_eq(format_table_init(&t, format_event_columns, 12), 0);
		Tally__V1__EventPage *page = page_of_three();
		cr_assert_eq(format_event_page(&t, page, false), 0);
		char *text = printed(&t, formats[f], true);
		format_table_free(&t);
		FILE *in = fmemopen(text, strlen(text), "r");
		back b;
		memset(&b, 0, sizeof(b));
		char err[ROWS_ERRMSG_SIZE] = "";
		cr_assert_eq(rows_read(in, "out", ROWS_FORMAT_AUTO, keep_back, &b, err), ROWS_OK, "%s", err);
		fclose(in);
		free(text);
		cr_assert_eq(b.count, 3);
		for (int i = 0; i < 3; i++) {
			const Tally__V1__Event *want = page->events[i], *got = &b.events[i];
			expect_same_bytes(got->event_id, want->event_id);
			expect_same_bytes(got->type, want->type);
			expect_same_bytes(got->project, want->project);
			expect_same_bytes(got->agent, want->agent);
			expect_same_bytes(got->model, want->model);
			expect_same_bytes(got->user, want->user);
			cr_expect_eq(got->time_us, want->time_us, "format %d event %d", f, i);
			cr_expect_eq(got->status, want->status);
			cr_expect_eq(got->duration_ms, want->duration_ms);
			cr_expect_eq(got->tokens_in, want->tokens_in);
			cr_expect_eq(got->tokens_out, want->tokens_out);
			cr_expect_eq(got->cost_micros, want->cost_micros);
		}
	}
}

/* Description: bytes that are not UTF-8 cannot be a JSON string: their
 * non-ASCII bytes print as '?'; format names parse. */
Test(format, non_utf8_text_and_format_names)
{
	static const char *const names[] = {"name"};
	format_table t;
	cr_assert_eq(format_table_init(&t, names, 1), 0);
	cr_assert_eq(format_add_text(&t, "a\xff\xfe" "b", 4), 0);
	char *text = printed(&t, FORMAT_JSONL, true);
	cr_expect_str_eq(text, "{\"name\":\"a??b\"}\n");
	free(text);
	format_table_free(&t);
	cr_expect_eq(format_parse("table"), FORMAT_TABLE);
	cr_expect_eq(format_parse("csv"), FORMAT_CSV);
	cr_expect_eq(format_parse("json"), FORMAT_JSON);
	cr_expect_eq(format_parse("yaml"), -1);
	int f = FORMAT_TABLE;
	char err[QUERYARGS_ERRMSG_SIZE];
	cr_expect_eq(format_option("csv", &f, err), 0);
	cr_expect_eq(f, FORMAT_CSV);
	cr_expect_eq(format_option("yaml", &f, err), -EINVAL);
	cr_expect_str_eq(err, "--format 'yaml': want table, csv or json");
	cr_expect_eq(f, FORMAT_CSV, "unchanged");
}

/* Description: a table's columns are as wide as their longest text in
 * characters, not bytes: "héllo ✓" (10 bytes, 7 characters) and "abcdefg"
 * end in the same column (before 2026-12-02 the non-ASCII row was padded
 * to its bytes and pushed the next column 3 to the right). */
Test(format, table_widths_count_characters)
{
	static const char *const names[] = {"text", "n"};
	format_table t;
	cr_assert_eq(format_table_init(&t, names, 2), 0);
	cr_assert_eq(format_add_text(&t, "h\xc3\xa9llo \xe2\x9c\x93", 10), 0);
	cr_assert_eq(format_add_text(&t, "x", 1), 0);
	cr_assert_eq(format_add_text(&t, "abcdefg", 7), 0);
	cr_assert_eq(format_add_text(&t, "y", 1), 0);
	char *text = printed(&t, FORMAT_TABLE, true);
	cr_expect_str_eq(text, "text     n\n"
			       "-------  -\n"
			       "h\xc3\xa9llo \xe2\x9c\x93  x\n"
			       "abcdefg  y\n");
	free(text);
	format_table_free(&t);
}

/* Description: byte counts in binary units, one decimal (under 1 KiB in
 * bytes), up to EiB, never "1024.0" of a unit; times with microseconds in UTC, negative ones
 * floored into the second and day before 1970 that hold them; days as
 * dates either side of 1970. */
Test(format, bytes_times_and_days)
{
	static const struct {
		uint64_t bytes;
		const char *text;
	} bytes[] = {
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{UINT64_C(1048524), "1023.9 KiB"},
		{UINT64_C(1048575), "1.0 MiB"}, /* not "1024.0 KiB" */
		{UINT64_C(1048576), "1.0 MiB"},
		{UINT64_C(5) << 30, "5.0 GiB"},
		{UINT64_C(3) << 40, "3.0 TiB"},
		{UINT64_C(1) << 50, "1.0 PiB"},
		{UINT64_MAX, "16.0 EiB"},
	};
	char text[CLI_TIME_SIZE > CLI_BYTES_SIZE ? CLI_TIME_SIZE : CLI_BYTES_SIZE];
	for (size_t i = 0; i < sizeof(bytes) / sizeof(bytes[0]); i++) {
		cli_format_bytes(text, bytes[i].bytes);
		cr_expect_str_eq(text, bytes[i].text, "%" PRIu64 " bytes", bytes[i].bytes);
	}
	static const struct {
		int64_t us;
		const char *text;
	} times[] = {
		{0, "1970-01-01T00:00:00.000000Z"},
		{-1, "1969-12-31T23:59:59.999999Z"},
		{INT64_C(1789948800000001), "2026-09-21T00:00:00.000001Z"},
		{INT64_C(951782400) * 1000000 - 1, "2000-02-28T23:59:59.999999Z"},
	};
	for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
		cli_format_time(text, times[i].us);
		cr_expect_str_eq(text, times[i].text, "%" PRId64 " us", times[i].us);
	}
	cli_format_day(text, 0);
	cr_expect_str_eq(text, "1970-01-01");
	cli_format_day(text, -1);
	cr_expect_str_eq(text, "1969-12-31");
	cli_format_day(text, 20717);
	cr_expect_str_eq(text, "2026-09-21");
	cli_format_day(text, 11016);
	cr_expect_str_eq(text, "2000-02-29");
}

/* Description: booleans print as true and false (a key's revoked, a
 * tenant's suspended); reals without trailing zeros, and one that is not
 * finite (no producer makes one: the client checks every quantile) as
 * "nan", "inf" or "-inf" in a table and CSV and as null in JSON; a table
 * refuses the cell past FORMAT_ROWS_MAX rows with -E2BIG, keeping the rows
 * it holds. */
Test(format, booleans_reals_and_the_row_limit)
{
	static const char *const names[] = {"revoked", "p95_ms"};
	format_table t;
	cr_assert_eq(format_table_init(&t, names, 2), 0);
	const double reals[5] = {120.5, NAN, INFINITY, -INFINITY, 980.0};
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(format_add_bool(&t, i % 2 == 0), 0);
		cr_assert_eq(format_add_real(&t, reals[i]), 0);
	}
	char *text = printed(&t, FORMAT_TABLE, true);
	cr_expect_str_eq(text, "revoked  p95_ms\n"
			       "-------  ------\n"
			       "true      120.5\n"
			       "false       nan\n"
			       "true        inf\n"
			       "false      -inf\n"
			       "true        980\n");
	free(text);
	text = printed(&t, FORMAT_CSV, true);
	cr_expect_str_eq(text, "revoked,p95_ms\ntrue,120.5\nfalse,nan\ntrue,inf\nfalse,-inf\ntrue,980\n");
	free(text);
	text = printed(&t, FORMAT_JSON, true);
	cr_expect_str_eq(text, "[\n"
			       "  {\"revoked\":true,\"p95_ms\":120.5},\n"
			       "  {\"revoked\":false,\"p95_ms\":null},\n"
			       "  {\"revoked\":true,\"p95_ms\":null},\n"
			       "  {\"revoked\":false,\"p95_ms\":null},\n"
			       "  {\"revoked\":true,\"p95_ms\":980.0}\n"
			       "]\n");
	free(text);
	format_table_free(&t);

	static const char *const one[] = {"n"};
	cr_assert_eq(format_table_init(&t, one, 1), 0);
	for (uint64_t i = 0; i < FORMAT_ROWS_MAX; i++)
		cr_assert_eq(format_add_uint(&t, i), 0, "row %" PRIu64, i);
	cr_expect_eq(format_add_uint(&t, 1), -E2BIG);
	cr_expect_eq(format_add_text(&t, "x", 1), -E2BIG);
	cr_expect_eq(format_add_bool(&t, true), -E2BIG);
	cr_expect_eq(format_table_rows(&t), FORMAT_ROWS_MAX);
	format_table_free(&t);
}

/* Description: a row whose sums passed their 64-bit range (its Wraps)
 * prints their exact values: numbers aligned right in a table and plain
 * in CSV, and strings in JSON, whose integers stop at 64 bits; the row
 * without wraps prints its fields as they are. */
Test(format, sums_past_64_bits_print_exactly)
{
	static Tally__V1__Wraps wraps = TALLY__V1__WRAPS__INIT;
	wraps.tokens_in = 2;
	wraps.cost_micros = -1;
	static Tally__V1__Row r1 = TALLY__V1__ROW__INIT, r2 = TALLY__V1__ROW__INIT;
	static Tally__V1__Row *rows[2] = {&r1, &r2};
	Tally__V1__QueryResult result = TALLY__V1__QUERY_RESULT__INIT;
	r1.bucket_start_us = INT64_C(1789948800000000); /* 2026-09-21T00:00:00Z */
	r1.count = 3;
	r1.tokens_in = UINT64_MAX - 2;
	r1.cost_micros = INT64_MIN;
	r1.wraps = &wraps;
	r2 = r1;
	r2.bucket_start_us = INT64_C(1790035200000000);
	r2.tokens_in = 12;
	r2.cost_micros = -7;
	r2.wraps = NULL;
	result.n_rows = 2;
	result.rows = rows;
	query_spec spec;
	queryargs_init(&spec);
	char err[QUERYARGS_ERRMSG_SIZE];
	cr_assert_eq(queryargs_aggs(&spec, "count,tokens_in,cost_micros", err), 0);
	cr_assert_eq(queryargs_finish(&spec, INT64_C(1790000000000000), err), 0, "%s", err);
	format_table t;
	cr_assert_eq(format_query_result(&t, &spec, &result), 0);
	char *text = printed(&t, FORMAT_TABLE, true);
	cr_expect_str_eq(text,
			 "time                  count             tokens_in            cost_micros\n"
			 "--------------------  -----  --------------------  ---------------------\n"
			 "2026-09-21T00:00:00Z      3  55340232221128654845  -27670116110564327424\n"
			 "2026-09-22T00:00:00Z      3                    12                     -7\n");
	free(text);
	text = printed(&t, FORMAT_CSV, true);
	cr_expect_str_eq(text,
			 "time,count,tokens_in,cost_micros\n"
			 "2026-09-21T00:00:00Z,3,55340232221128654845,-27670116110564327424\n"
			 "2026-09-22T00:00:00Z,3,12,-7\n");
	free(text);
	text = printed(&t, FORMAT_JSON, true);
	cr_expect_str_eq(text,
			 "[\n"
			 "  {\"time\":\"2026-09-21T00:00:00Z\",\"count\":3,\"tokens_in\":\"55340232221128654845\","
			 "\"cost_micros\":\"-27670116110564327424\"},\n"
			 "  {\"time\":\"2026-09-22T00:00:00Z\",\"count\":3,\"tokens_in\":12,\"cost_micros\":-7}\n"
			 "]\n");
	free(text);
	format_table_free(&t);
	queryargs_free(&spec);
}
