/*
 * test_batch.c — server/batch.c: a columnar IngestBatch becomes the
 * engine's events, and every malformed column is refused with a message
 * before anything is ingested.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"

static int str_is(tally_str s, const char *want)
{
	return s.len == strlen(want) && (!s.len || memcmp(s.ptr, want, s.len) == 0);
}

/* Description: byte+length columns, code columns into the dictionary,
 * empty columns (all empty or 0), and numeric columns map to the events in
 * batch order; an empty batch is 0 events. */
Test(batch, columns_become_events)
{
	Tally__V1__IngestBatch b = TALLY__V1__INGEST_BATCH__INIT;
	int64_t times[3] = {100, 200, 300};
	b.time_us = times;
	b.n_time_us = 3;
	Tally__V1__StringColumn ids = TALLY__V1__STRING_COLUMN__INIT;
	uint32_t id_len[3] = {2, 3, 1};
	ids.bytes = (ProtobufCBinaryData){6, (uint8_t *)"e1e22x"};
	ids.len = id_len;
	ids.n_len = 3;
	b.event_id = &ids;
	ProtobufCBinaryData dict[2] = {{8, (uint8_t *)"llm.call"}, {9, (uint8_t *)"tool.call"}};
	b.dict = dict;
	b.n_dict = 2;
	Tally__V1__StringColumn types = TALLY__V1__STRING_COLUMN__INIT;
	uint32_t type_code[3] = {1, 0, 1};
	types.code = type_code;
	types.n_code = 3;
	b.type = &types;
	uint32_t status[3] = {0, 1, 2};
	b.status = status;
	b.n_status = 3;
	int64_t cost[3] = {-5, 0, INT64_MAX};
	b.cost_micros = cost;
	b.n_cost_micros = 3;

	tally_event events[8];
	size_t n = 99;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(batch_decode(&b, events, 8, &n, err), BATCH_OK, "%s", err);
	cr_assert_eq(n, 3);
	cr_expect(str_is(events[0].event_id, "e1"));
	cr_expect(str_is(events[1].event_id, "e22"));
	cr_expect(str_is(events[2].event_id, "x"));
	cr_expect(str_is(events[0].type, "tool.call"));
	cr_expect(str_is(events[1].type, "llm.call"));
	cr_expect(str_is(events[2].type, "tool.call"));
	for (int i = 0; i < 3; i++) {
		cr_expect_eq(events[i].time_us, times[i]);
		cr_expect_eq(events[i].status, status[i]);
		cr_expect_eq(events[i].cost_micros, cost[i]);
		cr_expect_eq(events[i].tokens_in, 0, "absent column: 0");
		cr_expect_eq(events[i].project.len, 0, "absent column: empty");
	}
	n = 99;
	Tally__V1__IngestBatch empty = TALLY__V1__INGEST_BATCH__INIT;
	cr_expect_eq(batch_decode(&empty, events, 8, &n, err), BATCH_OK);
	cr_expect_eq(n, 0);
}

typedef void (*breaker)(Tally__V1__IngestBatch *b);

static int64_t g_times[2] = {1, 2};
static uint32_t g_len[2] = {1, 1};
static uint32_t g_codes[2] = {0, 0};
static uint32_t g_one[1] = {0};
static uint32_t g_past[2] = {0, 1};
static ProtobufCBinaryData g_dict[1] = {{1, (uint8_t *)"a"}};

static void base(Tally__V1__IngestBatch *b, Tally__V1__StringColumn *ids)
{
	tally__v1__ingest_batch__init(b);
	tally__v1__string_column__init(ids);
	b->time_us = g_times;
	b->n_time_us = 2;
	ids->bytes = (ProtobufCBinaryData){2, (uint8_t *)"ab"};
	ids->len = g_len;
	ids->n_len = 2;
	b->event_id = ids;
}

/* Description: every way a column can disagree with the batch is
 * BAD_REQUEST naming the column, and a batch over the limit is TOO_LARGE. */
Test(batch, malformed_columns_are_refused_with_the_column_named)
{
	tally_event events[4];
	size_t n;
	char err[TALLY_ERRMSG_SIZE];
	Tally__V1__IngestBatch b;
	Tally__V1__StringColumn ids, col;

	struct {
		const char *what;
		const char *expect; /* in the message */
	} cases[] = {
		{"fewer lengths than events", "event_id"},
		{"lengths past the bytes", "event_id"},
		{"lengths short of the bytes", "event_id"},
		{"bytes without lengths", "project"},
		{"both lengths and codes", "agent"},
		{"a code past the dictionary", "model"},
		{"too few codes", "user"},
		{"a numeric column of the wrong length", "duration_ms"},
		{"bytes with codes", "type"},
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		base(&b, &ids);
		tally__v1__string_column__init(&col);
		switch (k) {
		case 0: ids.n_len = 1; break;
		case 1: ids.bytes.len = 1; break;
		case 2: ids.bytes = (ProtobufCBinaryData){3, (uint8_t *)"abc"}; break;
		case 3: col.bytes = (ProtobufCBinaryData){1, (uint8_t *)"p"}; b.project = &col; break;
		case 4: col.len = g_len; col.n_len = 2; col.code = g_codes; col.n_code = 2; col.bytes = (ProtobufCBinaryData){2, (uint8_t *)"xy"}; b.agent = &col; break;
		case 5: b.dict = g_dict; b.n_dict = 1; col.code = g_past; col.n_code = 2; b.model = &col; break;
		case 6: b.dict = g_dict; b.n_dict = 1; col.code = g_one; col.n_code = 1; b.user = &col; break;
		case 7: b.duration_ms = g_one; b.n_duration_ms = 1; break;
		case 8: b.dict = g_dict; b.n_dict = 1; col.code = g_codes; col.n_code = 2; col.bytes = (ProtobufCBinaryData){1, (uint8_t *)"t"}; b.type = &col; break;
		}
		err[0] = 0;
		cr_expect_eq(batch_decode(&b, events, 4, &n, err), BATCH_BAD_REQUEST, "%s", cases[k].what);
		cr_expect_neq(strstr(err, cases[k].expect), NULL, "%s: message '%s'", cases[k].what, err);
		cr_expect_eq(n, 0, "%s: nothing decoded", cases[k].what);
	}
	base(&b, &ids);
	cr_expect_eq(batch_decode(&b, events, 1, &n, err), BATCH_TOO_LARGE);
	cr_expect_neq(strstr(err, "at most 1"), NULL, "message '%s'", err);
	cr_expect_eq(batch_decode(&b, events, 2, &n, err), BATCH_OK, "%s", err);
}

/* Description: random batches after a pack/unpack round trip through
 * protobuf-c either decode or are refused; they never read out of bounds
 * (run under ASan by make asan). Prints its seed. */
Test(batch, random_columns_decode_or_are_refused)
{
	const char *env = getenv("SEED");
	uint64_t s = env && env[0] ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
	fprintf(stderr, "test_batch seed=%llu\n", (unsigned long long)s);
	static tally_event events[64];
	/* A column may claim more entries than this round fills (n_len,
	 * n_code up to 69): zeros, so that the seed alone decides the run. */
	uint32_t lens[70] = {0}, codes[70] = {0}, nums[70] = {0};
	int64_t times[70] = {0};
	uint8_t bytes[200];
	int ok = 0;
	for (int round = 0; round < 5000; round++) {
		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		uint64_t r = s;
		Tally__V1__IngestBatch b = TALLY__V1__INGEST_BATCH__INIT;
		Tally__V1__StringColumn c = TALLY__V1__STRING_COLUMN__INIT;
		size_t n = (r >> 8) % 70;
		b.time_us = times;
		b.n_time_us = n;
		for (size_t i = 0; i < n; i++) {
			times[i] = (int64_t)(r >> (i % 40));
			lens[i] = (uint32_t)((r >> (i % 50)) % 4);
			codes[i] = (uint32_t)((r >> (i % 30)) % 3);
			nums[i] = (uint32_t)(r >> (i % 20));
		}
		for (size_t i = 0; i < sizeof(bytes); i++)
			bytes[i] = (uint8_t)(r >> (i % 56));
		c.bytes = (ProtobufCBinaryData){(r >> 3) % 200, bytes};
		if (r & 1) {
			c.len = lens;
			c.n_len = (r & 2) ? n : (r >> 20) % 70;
		} else {
			c.code = codes;
			c.n_code = (r & 2) ? n : (r >> 20) % 70;
			c.bytes.len = (r & 4) ? 0 : c.bytes.len;
		}
		ProtobufCBinaryData dict[2] = {{1, (uint8_t *)"d"}, {2, (uint8_t *)"dd"}};
		b.dict = dict;
		b.n_dict = (r >> 30) % 3;
		b.event_id = &c;
		b.status = nums;
		b.n_status = (r & 8) ? n : 0;
		size_t size = tally__v1__ingest_batch__get_packed_size(&b);
		uint8_t *buf = malloc(size + 1);
		tally__v1__ingest_batch__pack(&b, buf);
		Tally__V1__IngestBatch *back = tally__v1__ingest_batch__unpack(NULL, size, buf);
		cr_assert_not_null(back);
		size_t count;
		char err[TALLY_ERRMSG_SIZE];
		int rc = batch_decode(back, events, 64, &count, err);
		cr_assert(rc == BATCH_OK || rc == BATCH_BAD_REQUEST || rc == BATCH_TOO_LARGE);
		if (rc == BATCH_OK) {
			ok++;
			size_t total = 0;
			for (size_t i = 0; i < count; i++)
				total += events[i].event_id.len;
			cr_assert(total <= back->event_id->bytes.len || back->event_id->n_code,
				  "round %d: ids stay inside the column", round);
		}
		tally__v1__ingest_batch__free_unpacked(back, NULL);
		free(buf);
	}
	fprintf(stderr, "test_batch: %d of 5000 random batches decoded\n", ok);
}

/* Description: a string column of empty values (lengths all 0, no bytes)
 * decodes to empty strings (found by the fuzz target: no pointer
 * arithmetic on the absent bytes). */
Test(batch, zero_lengths_without_bytes_are_empty_values)
{
	Tally__V1__IngestBatch b = TALLY__V1__INGEST_BATCH__INIT;
	int64_t times[2] = {1, 2};
	b.time_us = times;
	b.n_time_us = 2;
	Tally__V1__StringColumn ids = TALLY__V1__STRING_COLUMN__INIT;
	uint32_t zero[2] = {0, 0};
	ids.len = zero;
	ids.n_len = 2;
	b.event_id = &ids;
	tally_event events[2];
	size_t n;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(batch_decode(&b, events, 2, &n, err), BATCH_OK, "%s", err);
	cr_expect_eq(n, 2);
	cr_expect(events[0].event_id.len == 0 && events[0].event_id.ptr == NULL);
	cr_expect(events[1].event_id.len == 0 && events[1].event_id.ptr == NULL);
}
