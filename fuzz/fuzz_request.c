/*
 * fuzz_request.c — libFuzzer target for what a server does with the bytes
 * of a connection before any of it reaches the engine: framing
 * (proto/frame.c), decoding a Request (protobuf-c), checking that no
 * string in it was cut at a NUL (pb_arena_strings_whole), and validating
 * an IngestBatch (server/batch.c) or a Query (server/convert.c).
 *
 * Built with clang -fsanitize=fuzzer,address,undefined (make fuzz; a short
 * bounded run is part of make check). A finding is any sanitizer report or
 * crash. The input is a byte stream, as a connection delivers it: several
 * frames back to back, fed in pieces of varying size.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "arena.h"
#include "batch.h"
#include "convert.h"
#include "frame.h"
#include "tally.pb-c.h"

#define FUZZ_FRAME_LIMIT (1u << 20)

static tally_event events[TALLY_BATCH_EVENTS_MAX];
static query_storage storage;

static void validate(const Tally__V1__Request *req)
{
	char errmsg[TALLY_ERRMSG_SIZE];
	if (req->body_case == TALLY__V1__REQUEST__BODY_INGEST) {
		size_t count;
		if (batch_decode(req->ingest, events, TALLY_BATCH_EVENTS_MAX, &count, errmsg) == BATCH_OK) {
			/* Touch every string the events point at. */
			volatile uint8_t sink = 0;
			for (size_t i = 0; i < count; i++) {
				const tally_str *s[6] = {&events[i].event_id, &events[i].type, &events[i].project,
							 &events[i].agent, &events[i].model, &events[i].user};
				for (int k = 0; k < 6; k++)
					for (uint32_t j = 0; j < s[k]->len; j++)
						sink ^= (uint8_t)s[k]->ptr[j];
			}
			(void)sink;
		}
	} else if (req->body_case == TALLY__V1__REQUEST__BODY_QUERY) {
		tally_query q;
		convert_query(req->query, &q, &storage, errmsg);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	frame_reader r;
	frame_reader_init(&r, FUZZ_FRAME_LIMIT);
	size_t at = 0;
	unsigned piece = size ? data[0] % 7 + 1 : 1; /* feed in pieces, like a socket */
	while (at < size) {
		const uint8_t *p = data + at;
		size_t n = size - at < piece ? size - at : piece;
		size_t before = n;
		int st = frame_reader_feed(&r, &p, &n);
		at += before - n;
		if (st < 0)
			break;
		if (st == FRAME_READY) {
			uint32_t len;
			const uint8_t *body = frame_reader_frame(&r, &len);
			/* Decoded as tallyd decodes it: into one arena. */
			Tally__V1__Request *req = (Tally__V1__Request *)pb_arena_unpack(
				&tally__v1__request__descriptor, len, body, NULL);
			if (req) {
				/* As tallyd: a request with a string cut at a NUL is
				 * refused before it is read (the walk must hold on
				 * any message protobuf-c decodes). */
				char field[96];
				if (pb_arena_strings_whole(&req->base, field, sizeof(field)))
					validate(req);
				pb_arena_free(req);
			}
			frame_reader_next(&r);
		}
	}
	frame_reader_free(&r);
	return 0;
}
