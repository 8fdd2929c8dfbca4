/*
 * test_proto.c — the wire contract (proto/tally.proto through protobuf-c)
 * and the framing (proto/frame.h).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "frame.h"
#include "tally.pb-c.h"

static uint64_t test_seed(void)
{
	const char *env = getenv("SEED");
	uint64_t seed = env && env[0] ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)clock();
	fprintf(stderr, "test_proto seed=%llu\n", (unsigned long long)seed);
	return seed;
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Description: a columnar IngestBatch request packs and unpacks to the
 * same columns, and an IngestAck response likewise. */
Test(proto, ingest_batch_and_ack_round_trip)
{
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	Tally__V1__IngestBatch batch = TALLY__V1__INGEST_BATCH__INIT;
	Tally__V1__StringColumn ids = TALLY__V1__STRING_COLUMN__INIT;
	uint32_t id_len[3] = {3, 5, 1};
	ids.bytes.data = (uint8_t *)"abcdefghi";
	ids.bytes.len = 9;
	ids.len = id_len;
	ids.n_len = 3;
	int64_t times[3] = {1, -2, INT64_MAX};
	int64_t cost[3] = {INT64_MIN, 0, 42};
	batch.event_id = &ids;
	batch.time_us = times;
	batch.n_time_us = 3;
	batch.cost_micros = cost;
	batch.n_cost_micros = 3;
	batch.tenant = "acme";
	req.request_id = 77;
	req.body_case = TALLY__V1__REQUEST__BODY_INGEST;
	req.ingest = &batch;

	size_t size = tally__v1__request__get_packed_size(&req);
	uint8_t *buf = malloc(size);
	cr_assert_eq(tally__v1__request__pack(&req, buf), size);
	Tally__V1__Request *back = tally__v1__request__unpack(NULL, size, buf);
	cr_assert_not_null(back);
	cr_expect_eq(back->request_id, 77);
	cr_assert_eq(back->body_case, TALLY__V1__REQUEST__BODY_INGEST);
	cr_expect_str_eq(back->ingest->tenant, "acme");
	cr_assert_eq(back->ingest->n_time_us, 3);
	for (int i = 0; i < 3; i++) {
		cr_expect_eq(back->ingest->time_us[i], times[i]);
		cr_expect_eq(back->ingest->cost_micros[i], cost[i]);
		cr_expect_eq(back->ingest->event_id->len[i], id_len[i]);
	}
	cr_expect_eq(back->ingest->event_id->bytes.len, 9);
	cr_expect_eq(memcmp(back->ingest->event_id->bytes.data, "abcdefghi", 9), 0);
	tally__v1__request__free_unpacked(back, NULL);
	free(buf);

	Tally__V1__Response resp = TALLY__V1__RESPONSE__INIT;
	Tally__V1__IngestAck ack = TALLY__V1__INGEST_ACK__INIT;
	Tally__V1__IngestAck__Result results[3] = {TALLY__V1__INGEST_ACK__RESULT__ACCEPTED,
						   TALLY__V1__INGEST_ACK__RESULT__DUPLICATE,
						   TALLY__V1__INGEST_ACK__RESULT__REJECTED};
	uint32_t reasons[3] = {0, 0, 3};
	ack.result = results;
	ack.n_result = 3;
	ack.reason = reasons;
	ack.n_reason = 3;
	ack.accepted = 1;
	ack.duplicate = 1;
	ack.rejected = 1;
	resp.request_id = 77;
	resp.body_case = TALLY__V1__RESPONSE__BODY_INGEST;
	resp.ingest = &ack;
	size = tally__v1__response__get_packed_size(&resp);
	buf = malloc(size);
	cr_assert_eq(tally__v1__response__pack(&resp, buf), size);
	Tally__V1__Response *r2 = tally__v1__response__unpack(NULL, size, buf);
	cr_assert_not_null(r2);
	cr_assert_eq(r2->body_case, TALLY__V1__RESPONSE__BODY_INGEST);
	cr_assert_eq(r2->ingest->n_result, 3);
	cr_expect_eq(r2->ingest->result[2], TALLY__V1__INGEST_ACK__RESULT__REJECTED);
	cr_expect_eq(r2->ingest->reason[2], 3);
	cr_expect_eq(r2->ingest->accepted, 1);
	tally__v1__response__free_unpacked(r2, NULL);
	free(buf);
}

/* Description: random bytes never crash the decoder: each attempt either
 * fails (NULL) or yields a message that packs again. */
Test(proto, random_bytes_are_refused_or_decoded_never_crash)
{
	uint64_t s = test_seed();
	uint8_t buf[512];
	int decoded = 0;
	for (int round = 0; round < 20000; round++) {
		size_t size = splitmix(&s) % sizeof(buf);
		for (size_t i = 0; i < size; i++)
			buf[i] = (uint8_t)splitmix(&s);
		Tally__V1__Request *req = tally__v1__request__unpack(NULL, size, buf);
		if (!req)
			continue;
		decoded++;
		size_t again = tally__v1__request__get_packed_size(req);
		uint8_t *out = malloc(again + 1);
		cr_assert_eq(tally__v1__request__pack(req, out), again);
		free(out);
		tally__v1__request__free_unpacked(req, NULL);
	}
	fprintf(stderr, "test_proto: %d of 20000 random buffers decoded\n", decoded);
}

/* Packs req into a new buffer (*size bytes). */
static uint8_t *pack_request(const Tally__V1__Request *req, size_t *size)
{
	*size = tally__v1__request__get_packed_size(req);
	uint8_t *buf = malloc(*size + 1);
	cr_assert_not_null(buf);
	cr_assert_eq(tally__v1__request__pack(req, buf), *size);
	return buf;
}

/* Description: a request decoded into one arena (pb_arena_unpack, as
 * tallyd decodes) packs again to exactly its bytes, for batches from 0 to
 * 60,000 events (small values decode to eight times their encoded size,
 * so the big ones need several chunks), with a dictionary of strings; a
 * truncated or garbled message is NULL; pb_arena_free(NULL) is a no-op. */
Test(proto, arena_decoding_round_trips)
{
	uint64_t s = test_seed();
	static const size_t sizes[] = {0, 1, 7, 100, 1000, 60000};
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t n = sizes[k];
		int64_t *times = malloc(sizeof(int64_t) * (n + 1));
		uint32_t *status = malloc(sizeof(uint32_t) * (n + 1));
		uint64_t *tokens = malloc(sizeof(uint64_t) * (n + 1));
		uint32_t *codes = malloc(sizeof(uint32_t) * (n + 1));
		for (size_t i = 0; i < n; i++) {
			times[i] = (int64_t)(splitmix(&s) % 128) - 64;
			status[i] = (uint32_t)(splitmix(&s) % 4);
			tokens[i] = splitmix(&s) >> (splitmix(&s) % 64);
			codes[i] = (uint32_t)(splitmix(&s) % 3);
		}
		ProtobufCBinaryData dict[3] = {{3, (uint8_t *)"abc"}, {0, NULL}, {5, (uint8_t *)"hello"}};
		Tally__V1__StringColumn types = TALLY__V1__STRING_COLUMN__INIT;
		types.code = codes;
		types.n_code = n;
		Tally__V1__IngestBatch batch = TALLY__V1__INGEST_BATCH__INIT;
		batch.tenant = "acme";
		batch.dict = dict;
		batch.n_dict = 3;
		batch.type = &types;
		batch.time_us = times;
		batch.n_time_us = n;
		batch.status = status;
		batch.n_status = n;
		batch.tokens_in = tokens;
		batch.n_tokens_in = n;
		Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
		req.request_id = 9 + k;
		req.body_case = TALLY__V1__REQUEST__BODY_INGEST;
		req.ingest = &batch;
		size_t size, again_size;
		uint8_t *bytes = pack_request(&req, &size);
		int unpack_rc = -1;
		Tally__V1__Request *back = (Tally__V1__Request *)pb_arena_unpack(
			&tally__v1__request__descriptor, size, bytes, &unpack_rc);
		cr_assert_not_null(back, "%zu events", n);
		cr_expect_eq(unpack_rc, 0);
		cr_expect_eq(back->ingest->n_time_us, n);
		cr_expect_str_eq(back->ingest->tenant, "acme");
		uint8_t *again = pack_request(back, &again_size);
		cr_expect_eq(again_size, size, "%zu events", n);
		cr_expect_eq(memcmp(again, bytes, size), 0, "%zu events: the same bytes again", n);
		pb_arena_free(back);
		free(again);
		if (size > 4) {
			cr_expect_null(pb_arena_unpack(&tally__v1__request__descriptor, size - 1, bytes,
						       &unpack_rc),
				       "%zu events: truncated", n);
			cr_expect_eq(unpack_rc, -EBADMSG, "%zu events: truncated is not out of memory", n);
			bytes[size / 2] ^= 0xff;
			bytes[size - 1] = 0xff; /* a varint that never ends */
			Tally__V1__Request *bad = (Tally__V1__Request *)pb_arena_unpack(
				&tally__v1__request__descriptor, size, bytes, NULL);
			pb_arena_free(bad); /* NULL or a message: freed either way */
		}
		free(bytes);
		free(times);
		free(status);
		free(tokens);
		free(codes);
	}
	pb_arena_free(NULL);
}

/* req packed, with every '#' byte of it turned into a NUL, decoded into an
 * arena: whether its strings are whole, and the path named. */
static bool strings_whole_after_nul(const Tally__V1__Request *req, char *path, size_t path_size)
{
	size_t size;
	uint8_t *bytes = pack_request(req, &size);
	for (size_t i = 0; i < size; i++)
		if (bytes[i] == '#')
			bytes[i] = 0;
	int rc = -1;
	Tally__V1__Request *back =
		(Tally__V1__Request *)pb_arena_unpack(&tally__v1__request__descriptor, size, bytes, &rc);
	cr_assert_not_null(back, "unpack: %d", rc);
	bool whole = pb_arena_strings_whole(&back->base, path, path_size);
	pb_arena_free(back);
	free(bytes);
	return whole;
}

/* Description: pb_arena_strings_whole finds a string field whose bytes
 * hold a NUL (which C would see cut there) and names its path: a
 * CreateTenant's name "acme\0x" (create_tenant.name), a Hello's key with
 * a NUL inside (hello.api_key), a Query's time zone "UTC\0" and a name of
 * one NUL byte (query.time_zone, list_tenants.after); the same requests
 * without the NUL, an empty string sent, a field not sent, and a NUL in
 * bytes (a filter value, an IngestBatch's dictionary) are whole. A path
 * longer than its buffer keeps its innermost part. */
Test(proto, arena_names_a_string_cut_at_a_nul)
{
	char path[64];
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	req.request_id = 5;
	Tally__V1__CreateTenant create = TALLY__V1__CREATE_TENANT__INIT;
	create.name = "acme#x";
	req.body_case = TALLY__V1__REQUEST__BODY_CREATE_TENANT;
	req.create_tenant = &create;
	cr_expect_not(strings_whole_after_nul(&req, path, sizeof(path)));
	cr_expect_str_eq(path, "create_tenant.name");
	create.name = "acme-x";
	cr_expect(strings_whole_after_nul(&req, path, sizeof(path)));
	cr_expect_str_eq(path, "");
	char small[8];
	create.name = "acme#x";
	cr_expect_not(strings_whole_after_nul(&req, small, sizeof(small)));
	cr_expect_str_eq(small, "name");

	Tally__V1__Hello hello = TALLY__V1__HELLO__INIT;
	hello.api_key = "tk_0123#456789";
	hello.client = "test";
	req.body_case = TALLY__V1__REQUEST__BODY_HELLO;
	req.hello = &hello;
	cr_expect_not(strings_whole_after_nul(&req, path, sizeof(path)));
	cr_expect_str_eq(path, "hello.api_key");
	hello.api_key = "";
	hello.client = "";
	cr_expect(strings_whole_after_nul(&req, path, sizeof(path)), "empty strings: %s", path);

	Tally__V1__Query query = TALLY__V1__QUERY__INIT;
	query.tenant = "acme";
	query.time_zone = "UTC#";
	ProtobufCBinaryData values[1] = {{3, (uint8_t *)"a#b"}};
	Tally__V1__Filter filter = TALLY__V1__FILTER__INIT;
	filter.values = values;
	filter.n_values = 1;
	Tally__V1__Filter *filters[1] = {&filter};
	query.filters = filters;
	query.n_filters = 1;
	req.body_case = TALLY__V1__REQUEST__BODY_QUERY;
	req.query = &query;
	cr_expect_not(strings_whole_after_nul(&req, path, sizeof(path)));
	cr_expect_str_eq(path, "query.time_zone");
	query.time_zone = "UTC";
	cr_expect(strings_whole_after_nul(&req, path, sizeof(path)), "bytes with a NUL: %s", path);

	Tally__V1__ListTenants list = TALLY__V1__LIST_TENANTS__INIT;
	list.after = "#";
	req.body_case = TALLY__V1__REQUEST__BODY_LIST_TENANTS;
	req.list_tenants = &list;
	cr_expect_not(strings_whole_after_nul(&req, path, sizeof(path)));
	cr_expect_str_eq(path, "list_tenants.after");

	ProtobufCBinaryData dict[1] = {{3, (uint8_t *)"x#y"}};
	Tally__V1__IngestBatch batch = TALLY__V1__INGEST_BATCH__INIT;
	batch.tenant = "acme";
	batch.dict = dict;
	batch.n_dict = 1;
	req.body_case = TALLY__V1__REQUEST__BODY_INGEST;
	req.ingest = &batch;
	cr_expect(strings_whole_after_nul(&req, path, sizeof(path)), "bytes with a NUL: %s", path);
	batch.tenant = "ac#me";
	cr_expect_not(strings_whole_after_nul(&req, path, sizeof(path)));
	cr_expect_str_eq(path, "ingest.tenant");
}

/* Description: a request that would decode to more than its budget
 * (PB_ARENA_BUDGET_FACTOR times its size, plus PB_ARENA_BUDGET_BASE) is
 * refused with -E2BIG instead: a Query of 400,000 empty filters (2 bytes
 * each on the wire, a sub-message and 32 bytes of protobuf-c's scan data
 * each once decoded) and a Ping followed by 400,000 unknown fields; the
 * same Query with 1,000 filters decodes. (A batch of 60,000 events of tiny
 * values, 8 times its size, decodes: arena_decoding_round_trips.) */
Test(proto, arena_refuses_a_request_that_decodes_past_its_budget)
{
	enum { MANY = 400000 };
	Tally__V1__Filter empty = TALLY__V1__FILTER__INIT;
	Tally__V1__Filter **filters = malloc(MANY * sizeof(*filters));
	cr_assert_not_null(filters);
	for (size_t i = 0; i < MANY; i++)
		filters[i] = &empty;
	Tally__V1__Query q = TALLY__V1__QUERY__INIT;
	q.filters = filters;
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	req.request_id = 5;
	req.body_case = TALLY__V1__REQUEST__BODY_QUERY;
	req.query = &q;
	size_t counts[2] = {1000, MANY};
	for (int k = 0; k < 2; k++) {
		q.n_filters = counts[k];
		size_t size;
		uint8_t *bytes = pack_request(&req, &size);
		int rc = -1;
		Tally__V1__Request *back = (Tally__V1__Request *)pb_arena_unpack(
			&tally__v1__request__descriptor, size, bytes, &rc);
		if (k == 0) {
			cr_assert_not_null(back, "%zu filters (%zu bytes): %d", counts[k], size, rc);
			cr_expect_eq(back->query->n_filters, counts[k]);
		} else {
			cr_expect_null(back, "%zu filters (%zu bytes) decoded", counts[k], size);
			cr_expect_eq(rc, -E2BIG, "%zu filters: %d", counts[k], rc);
		}
		pb_arena_free(back);
		free(bytes);
	}
	free(filters);

	/* Request{request_id 6, ping {}}, then MANY times field 1000 (no
	 * such field: unknown, and kept), a varint 0: 3 bytes each. */
	size_t size = 4 + 3 * (size_t)MANY;
	uint8_t *bytes = malloc(size);
	cr_assert_not_null(bytes);
	bytes[0] = 1 << 3 | 0; /* request_id, varint */
	bytes[1] = 6;
	bytes[2] = TALLY__V1__REQUEST__BODY_PING << 3 | 2; /* ping, length-delimited */
	bytes[3] = 0;
	for (size_t i = 0; i < MANY; i++) {
		bytes[4 + 3 * i] = (uint8_t)(0x80 | ((1000u << 3) & 0x7f)); /* tag 8000 */
		bytes[4 + 3 * i + 1] = (uint8_t)((1000u << 3) >> 7);
		bytes[4 + 3 * i + 2] = 0;
	}
	int rc = -1;
	Tally__V1__Request *back = (Tally__V1__Request *)pb_arena_unpack(
		&tally__v1__request__descriptor, size, bytes, &rc);
	cr_expect_null(back, "a Ping with %d unknown fields decoded", MANY);
	cr_expect_eq(rc, -E2BIG);
	pb_arena_free(back);
	free(bytes);
}

/* Description: after a frame, the reader keeps a body buffer of at most
 * FRAME_READER_KEEP_BYTES for the next ones and frees a larger one: a
 * frame of 100 KiB leaves 100 KiB of capacity, one of 2 MiB none; the
 * frames read are exact either way. */
Test(proto, frame_reader_keeps_small_buffers_and_frees_large_ones)
{
	frame_reader r;
	frame_reader_init(&r, 4u << 20);
	uint32_t sizes[3] = {100u << 10, 2u << 20, 100u << 10};
	uint32_t kept[3] = {100u << 10, 0, 100u << 10};
	for (int k = 0; k < 3; k++) {
		size_t n = FRAME_HEADER_SIZE + sizes[k];
		uint8_t *wire = malloc(n);
		cr_assert_not_null(wire);
		frame_header_put(wire, sizes[k]);
		memset(wire + FRAME_HEADER_SIZE, 'a' + k, sizes[k]);
		const uint8_t *p = wire;
		size_t left = n;
		cr_assert_eq(frame_reader_feed(&r, &p, &left), FRAME_READY, "frame %d", k);
		uint32_t size;
		const uint8_t *body = frame_reader_frame(&r, &size);
		cr_expect_eq(size, sizes[k]);
		cr_expect(body[0] == 'a' + k && body[size - 1] == 'a' + k, "frame %d", k);
		frame_reader_next(&r);
		cr_expect_eq(r.capacity, kept[k], "frame %d of %u bytes: capacity %u", k, sizes[k],
			     r.capacity);
		free(wire);
	}
	frame_reader_free(&r);
}

static void put_frame(uint8_t *out, size_t *at, const char *body)
{
	uint32_t n = (uint32_t)strlen(body);
	frame_header_put(out + *at, n);
	memcpy(out + *at + FRAME_HEADER_SIZE, body, n);
	*at += FRAME_HEADER_SIZE + n;
}

/* Description: frames arrive whole whatever the split of the byte stream
 * (one byte at a time, or all at once), including an empty frame. */
Test(proto, frames_survive_any_split)
{
	static const char *bodies[4] = {"hello", "", "a longer frame body", "x"};
	uint8_t stream[128];
	size_t total = 0;
	for (int i = 0; i < 4; i++)
		put_frame(stream, &total, bodies[i]);
	for (size_t step = 1; step <= total; step++) {
		frame_reader r;
		frame_reader_init(&r, 64);
		int got = 0;
		for (size_t at = 0; at < total; at += step) {
			const uint8_t *p = stream + at;
			size_t n = total - at < step ? total - at : step;
			for (;;) {
				int st = frame_reader_feed(&r, &p, &n);
				cr_assert_geq(st, 0, "step %zu", step);
				if (st == FRAME_NEED_MORE)
					break;
				uint32_t size;
				const uint8_t *body = frame_reader_frame(&r, &size);
				cr_assert_lt(got, 4);
				cr_assert_eq(size, strlen(bodies[got]), "step %zu frame %d", step, got);
				cr_assert(size == 0 || memcmp(body, bodies[got], size) == 0);
				got++;
				frame_reader_next(&r);
			}
		}
		cr_expect_eq(got, 4, "step %zu", step);
		frame_reader_free(&r);
	}
}

/* Description: a length over the limit (up to 4 GiB - 1) is refused as
 * soon as its header is in, before any body memory, and the refusal is
 * final; a length exactly at the limit is accepted. */
Test(proto, oversize_lengths_are_refused_at_the_header)
{
	frame_reader r;
	frame_reader_init(&r, 1000);
	uint8_t header[FRAME_HEADER_SIZE];
	frame_header_put(header, UINT32_MAX);
	const uint8_t *p = header;
	size_t n = 3;
	cr_expect_eq(frame_reader_feed(&r, &p, &n), FRAME_NEED_MORE);
	n = 1;
	cr_expect_eq(frame_reader_feed(&r, &p, &n), FRAME_TOO_LARGE);
	cr_expect_null(r.body, "no memory committed for the body");
	uint8_t more[8] = {0};
	p = more;
	n = sizeof(more);
	cr_expect_eq(frame_reader_feed(&r, &p, &n), FRAME_TOO_LARGE, "final");
	frame_reader_free(&r);

	frame_reader_init(&r, 1000);
	frame_header_put(header, 1001);
	p = header;
	n = sizeof(header);
	cr_expect_eq(frame_reader_feed(&r, &p, &n), FRAME_TOO_LARGE);
	frame_reader_free(&r);

	frame_reader_init(&r, 1000);
	static uint8_t exact[FRAME_HEADER_SIZE + 1000];
	frame_header_put(exact, 1000);
	p = exact;
	n = sizeof(exact);
	cr_expect_eq(frame_reader_feed(&r, &p, &n), FRAME_READY);
	cr_expect_eq(n, 0);
	frame_reader_free(&r);

	frame_reader_init(&r, 0);
	cr_expect_eq(r.limit, FRAME_BYTES_MAX_DEFAULT);
	frame_reader_free(&r);
}
