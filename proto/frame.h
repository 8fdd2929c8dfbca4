/*
 * frame.h — the framing of the tally protocol: every message is a 4-byte
 * little-endian length followed by that many bytes (docs/protocol.md).
 *
 * A frame_reader accumulates bytes as they arrive (any split: one byte at a
 * time works) and yields whole frames. It refuses a length over its limit
 * as soon as the 4 length bytes are in, before any memory is committed for
 * the body, so a peer announcing 4 GiB costs nothing.
 */
#ifndef TALLY_FRAME_H
#define TALLY_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER_SIZE 4
#define FRAME_BYTES_MAX_DEFAULT (16u << 20) /* 16 MiB */

enum frame_status {
	FRAME_NEED_MORE = 0, /* no whole frame yet */
	FRAME_READY = 1,     /* frame_reader_frame() holds one */
	FRAME_TOO_LARGE = -1, /* the announced length exceeds the limit: close the connection */
	FRAME_NO_MEMORY = -2,
};

typedef struct frame_reader {
	uint32_t limit;      /* largest body accepted */
	uint8_t header[FRAME_HEADER_SIZE];
	uint32_t header_have;
	uint32_t length;     /* of the body being read, once the header is in */
	uint8_t *body;
	uint32_t body_have;
	uint32_t capacity;
	int failed;          /* FRAME_TOO_LARGE / FRAME_NO_MEMORY, returned from then on */
} frame_reader;

/* limit: the largest body accepted (0: FRAME_BYTES_MAX_DEFAULT). */
void frame_reader_init(frame_reader *r, uint32_t limit);
void frame_reader_free(frame_reader *r);

/*
 * Consumes bytes from [*data, *data + *size) up to the end of the current
 * frame, advancing *data and *size. Returns FRAME_READY when a whole frame
 * is in (read it with frame_reader_frame, then call frame_reader_next), or
 * FRAME_NEED_MORE when the input ran out; errors as in enum frame_status
 * (an error is final: every later call returns it, and the connection must
 * be closed, since the byte stream cannot be resynchronised).
 */
int frame_reader_feed(frame_reader *r, const uint8_t **data, size_t *size);

/* The body of the ready frame (valid until frame_reader_next). */
const uint8_t *frame_reader_frame(const frame_reader *r, uint32_t *size);

/* A body buffer of at most this capacity is kept for the next frames; a
 * larger one is freed once its frame is done, so a connection that sent
 * one large frame does not hold its size while it lives. */
#define FRAME_READER_KEEP_BYTES (1u << 20)

/* Forgets the ready frame (freeing a body buffer over
 * FRAME_READER_KEEP_BYTES); the reader waits for the next header. */
void frame_reader_next(frame_reader *r);

/* Writes the 4-byte header of a body of `size` bytes. */
void frame_header_put(uint8_t out[FRAME_HEADER_SIZE], uint32_t size);

#endif /* TALLY_FRAME_H */
