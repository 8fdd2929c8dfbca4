/*
 * codec.h — byte buffers, varints and the column codecs of segment files.
 *
 * Every encoder appends to a bytebuf and returns 0 or -ENOMEM. Every decoder
 * reads exactly one encoded column from [src, src + size), writes exactly
 * `count` values, and returns 0, or TALLY_E_CORRUPT when the input is
 * malformed in any way (truncated, trailing bytes, impossible widths,
 * lengths that do not add up). Decoders never read or write out of bounds,
 * whatever the input: they are fed corrupt and adversarial bytes by tests.
 *
 * Encodings (the byte layouts are in docs/formats.md):
 *   time   : delta-of-delta, zigzag varints (first value, first delta, then
 *            the change of delta per row). Sorted input costs ~1-4 bytes/row.
 *   u64    : a mode byte, then CONSTANT (one varint), FOR (min varint, bit
 *            width byte, bit-packed value-min), or VARINT (one per row);
 *            the encoder picks the smallest.
 *   i64    : zigzag, then u64.
 *   codes  : u32 dictionary codes, bit-packed at the width of the largest,
 *            or one varint when every row holds the same non-zero code.
 *   ids    : event ids in packed form (see id_pack): kinds (codes), packed
 *            lengths (u64 column), then the packed bytes back to back.
 */
#ifndef TALLY_CODEC_H
#define TALLY_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* ---- bytebuf: a growable byte array (malloc-backed) --------------------- */
typedef struct bytebuf {
	uint8_t *data;
	size_t size;     /* bytes in use */
	size_t capacity; /* bytes allocated */
} bytebuf;

/* bytebuf_reserve's slow path: reallocates. */
int bytebuf_grow(bytebuf *b, size_t extra);

/* Ensures room for `extra` more bytes. 0 or -ENOMEM (buffer unchanged).
 * Inline: encoders call it for every value, and it rarely grows. */
static inline int bytebuf_reserve(bytebuf *b, size_t extra)
{
	return extra <= b->capacity - b->size ? 0 : bytebuf_grow(b, extra);
}
/* Appends size bytes. 0 or -ENOMEM. */
int bytebuf_append(bytebuf *b, const void *src, size_t size);
/* Sets size to 0, keeps the allocation. */
void bytebuf_reset(bytebuf *b);
/* Frees the allocation; the buffer is empty and reusable after. */
void bytebuf_free(bytebuf *b);

/* ---- varints (LEB128) and zigzag --------------------------------------- */
#define VARINT_SIZE_MAX 10

/* Writes v at dst (which has VARINT_SIZE_MAX bytes); returns bytes written.
 * Inline: encoders call it for every value. */
static inline __attribute__((always_inline)) size_t varint_put(uint8_t *dst, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		dst[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	dst[n++] = (uint8_t)v;
	return n;
}
/* Appends v. 0 or -ENOMEM. Inline: the flush appends several per cell
 * and per row, and a call cost three times the append. */
static inline int varint_append(bytebuf *b, uint64_t v)
{
	int rc = bytebuf_reserve(b, VARINT_SIZE_MAX);
	if (rc != 0)
		return rc;
	b->size += varint_put(b->data + b->size, v);
	return 0;
}
/* Reads one varint at *p (< end), advances *p. 0, or TALLY_E_CORRUPT if the
 * varint is truncated or longer than 10 bytes or overflows 64 bits. */
int varint_get(const uint8_t **p, const uint8_t *end, uint64_t *out);

static inline uint64_t zigzag_encode(int64_t v)
{
	return ((uint64_t)v << 1) ^ (0 - ((uint64_t)v >> 63)); /* no signed shift */
}
static inline int64_t zigzag_decode(uint64_t v)
{
	return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* ---- column codecs ------------------------------------------------------ */
int codec_time_encode(bytebuf *out, const int64_t *values, size_t count);
int codec_time_decode(const uint8_t *src, size_t size, int64_t *values, size_t count);

int codec_u64_encode(bytebuf *out, const uint64_t *values, size_t count);
int codec_u64_decode(const uint8_t *src, size_t size, uint64_t *values, size_t count);

int codec_i64_encode(bytebuf *out, const int64_t *values, size_t count);
int codec_i64_decode(const uint8_t *src, size_t size, int64_t *values, size_t count);

/* u32 values (durations) through the u64 codec; decode fails with
 * TALLY_E_CORRUPT on a value above UINT32_MAX. */
int codec_u32_encode(bytebuf *out, const uint32_t *values, size_t count);
int codec_u32_decode(const uint8_t *src, size_t size, uint32_t *values, size_t count);

/* u8 values (status) through the codes codec. */
int codec_u8_encode(bytebuf *out, const uint8_t *values, size_t count);
int codec_u8_decode(const uint8_t *src, size_t size, uint8_t *values, size_t count);

/* Dictionary codes: a width byte (0..32) then count values bit-packed
 * little-endian. Width 0 means every value is 0; the byte 0xff (CONSTANT)
 * then a varint v >= 1 means every value is v. */
int codec_codes_encode(bytebuf *out, const uint32_t *values, size_t count);
int codec_codes_decode(const uint8_t *src, size_t size, uint32_t *values, size_t count);

/* ---- columns encoded against other columns of their row group ----------- */
/*
 * The scalar columns of a row group are encoded knowing columns the reader
 * decodes first (codes before scalars): `classes` is each row's event type
 * code. A classed column is the plain u64 layout or CLASSED (each class's
 * values a u64 layout of their own), whichever is smaller; the cost column
 * may also be PRICED (per-model rates times the row's tokens, plus a
 * residual column). Decoders accept every plain layout too, and return 0,
 * TALLY_E_CORRUPT, or -ENOMEM (a per-thread scratch could not grow).
 */
#define CODEC_CLASSES_MAX 64       /* classes 0..63; a higher class keeps the column plain */
#define CODEC_PRICE_MODELS_MAX 256 /* model codes 0..255; a higher one: no PRICED */

int codec_u64_encode_classed(bytebuf *out, const uint64_t *values, size_t count,
			     const uint32_t *classes);
int codec_u64_decode_classed(const uint8_t *src, size_t size, uint64_t *values, size_t count,
			     const uint32_t *classes);
int codec_u32_encode_classed(bytebuf *out, const uint32_t *values, size_t count,
			     const uint32_t *classes);
int codec_u32_decode_classed(const uint8_t *src, size_t size, uint32_t *values, size_t count,
			     const uint32_t *classes);

/* Codes split by a class column decoded first (agents by project, models
 * by type): the plain codes layout, or CLASSED (per class, its distinct
 * codes and a narrow index per row) when that is smaller. */
int codec_codes_encode_classed(bytebuf *out, const uint32_t *values, size_t count,
			       const uint32_t *classes);
int codec_codes_decode_classed(const uint8_t *src, size_t size, uint32_t *values, size_t count,
			       const uint32_t *classes);

typedef struct codec_cost_context {
	const uint32_t *classes;    /* per row: the event type's code */
	const uint32_t *models;     /* per row: the model's code */
	const uint64_t *tokens_in;  /* per row */
	const uint64_t *tokens_out; /* per row */
} codec_cost_context;

/* cost_micros: the i64 layout, CLASSED, or PRICED, whichever is smallest.
 * 0 or -ENOMEM (out unchanged). */
int codec_cost_encode(bytebuf *out, const int64_t *values, size_t count,
		      const codec_cost_context *ctx);
int codec_cost_decode(const uint8_t *src, size_t size, int64_t *values, size_t count,
		      const codec_cost_context *ctx);

/* ---- event ids ---------------------------------------------------------- */
/*
 * An event id is stored in packed form: a kind and 0..64 bytes. Ids that are
 * hex text (even length, all lower or all upper case) or canonical UUID text
 * (8-4-4-4-12, all lower or all upper case) are stored as the bytes they spell;
 * anything else is stored as given (ID_KIND_RAW). id_unpack restores the exact
 * original text.
 */
enum id_kind {
	ID_KIND_RAW = 0,
	ID_KIND_HEX_LOWER = 1,
	ID_KIND_HEX_UPPER = 2,
	ID_KIND_UUID_LOWER = 3,
	ID_KIND_UUID_UPPER = 4,
	ID_KIND_COUNT = 5,
};
#define ID_PACKED_SIZE_MAX 64
#define ID_TEXT_SIZE_MAX 64

/* Packs text (1..64 bytes) into out (ID_PACKED_SIZE_MAX bytes); returns the
 * kind and sets *packed_size. */
int id_pack(const char *text, size_t text_size, uint8_t *out, size_t *packed_size);
/* Unpacks into text (ID_TEXT_SIZE_MAX bytes); returns the text size, or
 * TALLY_E_CORRUPT for an unknown kind or a size impossible for the kind. */
int id_unpack(int kind, const uint8_t *packed, size_t packed_size, char *text);

/* Column of packed ids: kinds[i], bytes[offsets[i] .. offsets[i+1]).
 * offsets has count + 1 entries, offsets[0] == 0. */
int codec_ids_encode(bytebuf *out, const uint8_t *kinds, const uint32_t *offsets,
		     const uint8_t *bytes, size_t count);
/* Decodes into kinds (count), offsets (count + 1) and bytes, which is reset
 * and filled. Validates every kind and that each (kind, size) pair unpacks. */
int codec_ids_decode(const uint8_t *src, size_t size, size_t count, uint8_t *kinds,
		     uint32_t *offsets, bytebuf *bytes);

/* ---- zstd blocks -------------------------------------------------------- */
enum block_codec {
	BLOCK_CODEC_RAW = 0,
	BLOCK_CODEC_ZSTD = 1,
};

/* Appends src compressed with zstd at `level` to out when that is smaller,
 * else src as is; *codec says which. 0 or -ENOMEM / TALLY_E_INVALID. */
int block_compress(bytebuf *out, const uint8_t *src, size_t size, int level,
		   uint8_t *codec);
/*
 * A block gate: whether a stream of like blocks (one column's blocks, or
 * one kind of rollup block, within one file) is worth handing to zstd.
 * Encoded columns are often already at their entropy (delta-of-delta
 * times, packed random id bytes): zstd then spends most of a flush's
 * compression time only to store the block raw anyway. Blocks are judged
 * by size class (bit length of the size), since small blocks of a stream
 * may not compress where large ones do. After BLOCK_GATE_MISSES tries in
 * a row of a class that ended raw, the class's blocks are stored raw
 * without a try, except every BLOCK_GATE_RETRY-th, which is tried again (a
 * win opens the class again). A hint only: it changes sizes, never
 * contents. On the reference workload it halves zstd's input for +0.01
 * bytes an event (docs/benchmarks.md).
 */
#define BLOCK_GATE_MISSES 16u
#define BLOCK_GATE_RETRY 64u
#define BLOCK_GATE_CLASSES 65 /* bit lengths 0 .. 64 */

typedef struct block_gate {
	struct {
		uint32_t misses;  /* tries in a row that ended raw */
		uint32_t skipped; /* blocks stored raw untried since the last try */
	} size_class[BLOCK_GATE_CLASSES];
} block_gate;

/* block_compress when the gate says to try (and the outcome is recorded
 * in it), else src appended raw. Results as for block_compress. */
int block_compress_gated(bytebuf *out, const uint8_t *src, size_t size, int level,
			 block_gate *gate, uint8_t *codec);

/* Decompresses a block whose decoded size is known to be raw_size into out
 * (reset first). TALLY_E_CORRUPT if zstd fails or the size differs;
 * -ENOMEM when memory runs out (the block may be sound). */
int block_decompress(bytebuf *out, const uint8_t *src, size_t size, uint8_t codec,
		     size_t raw_size);

#endif /* TALLY_CODEC_H */
