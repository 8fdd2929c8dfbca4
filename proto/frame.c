/*
 * frame.c — incremental framing (frame.h).
 */
#include <stdlib.h>
#include <string.h>

#include "frame.h"

void frame_reader_init(frame_reader *r, uint32_t limit)
{
	memset(r, 0, sizeof(*r));
	r->limit = limit ? limit : FRAME_BYTES_MAX_DEFAULT;
}

void frame_reader_free(frame_reader *r)
{
	free(r->body);
	memset(r, 0, sizeof(*r));
}

void frame_header_put(uint8_t out[FRAME_HEADER_SIZE], uint32_t size)
{
	out[0] = (uint8_t)size;
	out[1] = (uint8_t)(size >> 8);
	out[2] = (uint8_t)(size >> 16);
	out[3] = (uint8_t)(size >> 24);
}

int frame_reader_feed(frame_reader *r, const uint8_t **data, size_t *size)
{
	if (r->failed) /* sticky: the stream cannot be resynchronised */
		return r->failed;
	while (r->header_have < FRAME_HEADER_SIZE) {
		if (!*size)
			return FRAME_NEED_MORE;
		r->header[r->header_have++] = **data;
		(*data)++;
		(*size)--;
		if (r->header_have == FRAME_HEADER_SIZE) {
			r->length = (uint32_t)r->header[0] | (uint32_t)r->header[1] << 8 |
				    (uint32_t)r->header[2] << 16 | (uint32_t)r->header[3] << 24;
			if (r->length > r->limit)
				return r->failed = FRAME_TOO_LARGE;
			if (r->length > r->capacity) {
				/* Grow to what this frame needs, no more. */
				uint8_t *body = realloc(r->body, r->length);
				if (!body)
					return r->failed = FRAME_NO_MEMORY;
				r->body = body;
				r->capacity = r->length;
			}
			r->body_have = 0;
		}
	}
	uint32_t want = r->length - r->body_have;
	size_t take = *size < want ? *size : want;
	if (take) {
		memcpy(r->body + r->body_have, *data, take);
		r->body_have += (uint32_t)take;
		*data += take;
		*size -= take;
	}
	return r->body_have == r->length ? FRAME_READY : FRAME_NEED_MORE;
}

const uint8_t *frame_reader_frame(const frame_reader *r, uint32_t *size)
{
	*size = r->length;
	return r->body;
}

void frame_reader_next(frame_reader *r)
{
	r->header_have = 0;
	r->length = 0;
	r->body_have = 0;
	if (r->capacity > FRAME_READER_KEEP_BYTES) { /* one large frame is not kept for good */
		free(r->body);
		r->body = NULL;
		r->capacity = 0;
	}
}
