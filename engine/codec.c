/*
 * codec.c — varints and the column codecs of segment files.
 *
 * What it promises
 *   1. Every encoder appends exactly one column to `out`, or returns -ENOMEM
 *      with `out` unchanged (its size restored). Encoders reserve once (or
 *      once per chunk of rows) and never call malloc per value.
 *   2. Every decoder reads exactly [src, src + size) and writes exactly
 *      `count` values, or returns TALLY_E_CORRUPT. It never reads or writes
 *      out of bounds, whatever the bytes: lengths are compared before they
 *      are used, size arithmetic is checked for overflow, and a column must
 *      consume its input exactly (no trailing bytes).
 *   3. Encoding is canonical: for given values the bytes are always the
 *      same, and decoders reject forms the encoder cannot produce where that
 *      is cheap to see (non-minimal varints, non-zero padding bits, a u8
 *      column wider than 8 bits, an id packed in a form id_pack would not
 *      choose). So a corrupt column is caught here rather than upstream.
 *
 * Layouts (byte by byte in docs/codecs.md)
 *   varint : LEB128, 7 bits per byte, low group first, high bit = more.
 *   bits   : value i of width w occupies bits [i*w, (i+1)*w) of the packed
 *            area, bit k being bit (k % 8) of byte k / 8 (little-endian).
 *            Padding bits of the last byte are zero.
 *   time   : count zigzag varints: v0, v1 - v0, then (vi - vi-1) -
 *            (vi-1 - vi-2); differences wrap modulo 2^64.
 *   u64    : mode byte 0 CONSTANT (varint) | 1 FOR (varint min, width byte
 *            0..64, bits of v - min) | 2 VARINT (count varints). The
 *            smallest wins; ties go to CONSTANT, then FOR. Count 0 is the
 *            single byte 0x02 (VARINT with no values).
 *            3 SPARSE, 4 PATCHED; and, only where the caller passes the
 *            rows' context (codec.h), 5 CLASSED (a u64 layout per class)
 *            and 6 PRICED (cost: per-model rates, then the residual).
 *   codes  : width byte 0..32, then bits, or 0xff CONSTANT then a varint
 *            v >= 1. u8 uses the same layout, width 0..8.
 *   ids    : three sections, each prefixed by its byte length as a varint:
 *            kinds (u8 layout), packed sizes (u64 layout), packed bytes.
 *   block  : a single zstd frame with its content size, or the raw bytes.
 *
 * Speed (segment flush encodes millions of values a second): bit packing
 * moves whole 64-bit words; varints of up to 8 bytes are read and written
 * with one 8-byte load or store and shifts instead of a loop per byte, where
 * 8 bytes are in bounds; sizes for the u64 mode choice come from one pass.
 *
 * The integer codecs share one implementation parameterised by a "lane" (how
 * a value is loaded from and stored to the caller's array: u64, zigzag i64,
 * u32, u8, or differences of u32 offsets). The lane is a constant at every
 * call site and the generic functions are always inlined, so each public
 * codec compiles into its own specialised loop.
 */
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>
#include <zstd_errors.h>

#include "codec.h"
#include "tally.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Encoders refuse columns so large that size arithmetic (up to 10 bytes per
 * value, plus headers) could wrap. No real column comes close. */
#define CODEC_COUNT_MAX (SIZE_MAX / 16)
/* Rows the time encoder writes per buffer reservation. */
#define TIME_CHUNK_ROWS 1024

/* Time column modes (the first byte). */
#define TIME_MODE_DOD 0   /* zigzag varints of the delta of delta */
#define TIME_MODE_DELTA 1 /* first value, then the deltas as a u64 column */

enum u64_mode {
	U64_MODE_CONSTANT = 0,
	U64_MODE_FOR = 1,
	U64_MODE_VARINT = 2,
	U64_MODE_SPARSE = 3,
	U64_MODE_PATCHED = 4,
};
/* Mode bytes of the layouts encoded against other columns (codec.h). */
#define U64_MODE_CLASSED 5 /* only where the reader has the rows' classes */
#define U64_MODE_PRICED 6  /* only in the cost column */

/* PATCHED considers low widths this many bits below the FOR width. */
#define PATCHED_WIDTH_STEPS_MAX 8

#define CODES_WIDTH_MAX 32
#define CODES_CONSTANT 0xff /* codes layout: one varint value (>= 1) for every row */
#define U8_WIDTH_MAX 8
#define UUID_TEXT_SIZE 36
#define UUID_PACKED_SIZE 16
#define HEX_PACKED_SIZE_MAX (ID_TEXT_SIZE_MAX / 2)

_Static_assert(sizeof(unsigned long long) == 8, "bit_width uses __builtin_clzll on uint64_t");
_Static_assert(ID_PACKED_SIZE_MAX <= UINT8_MAX, "packed id sizes fit the sizes column easily");
_Static_assert(ID_KIND_COUNT <= 8, "kinds fit the u8 codes layout in 3 bits");

/* ---- little helpers ------------------------------------------------------ */

static inline void store_le64(uint8_t *dst, uint64_t v)
{
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	memcpy(dst, &v, sizeof v);
}

static inline uint64_t load_le64(const uint8_t *src)
{
	uint64_t v;
	memcpy(&v, src, sizeof v);
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

static inline unsigned bit_width(uint64_t v)
{
	return v == 0 ? 0 : 64 - (unsigned)__builtin_clzll(v);
}

/* Bytes of the varint of a value `bits` (1..64) wide: ceil(bits / 7). */
static inline size_t varint_size_bits(unsigned bits)
{
	return ((size_t)bits * 9 + 64) / 64;
}

/* Bytes varint_put writes for v: ceil(bits / 7), at least 1. */
static inline size_t varint_size(uint64_t v)
{
	return varint_size_bits(bit_width(v | 1));
}

/* Two's complement reinterpretation without implementation-defined casts. */
static inline int64_t int64_from_bits(uint64_t v)
{
	int64_t r;
	memcpy(&r, &v, sizeof r);
	return r;
}

static inline uint64_t zigzag_encode_bits(uint64_t v)
{
	return (v << 1) ^ (0 - (v >> 63));
}

static inline uint64_t zigzag_decode_bits(uint64_t v)
{
	return (v >> 1) ^ (0 - (v & 1));
}

/* Bytes of count values of width bits, rounded up. False on overflow. */
static inline bool packed_size_get(size_t count, unsigned width, size_t *size)
{
	if (width != 0 && count > (SIZE_MAX - 7) / width)
		return false;
	*size = (count * width + 7) / 8;
	return true;
}

static inline uint64_t width_mask(unsigned width)
{
	return width >= 64 ? UINT64_MAX : ((uint64_t)1 << width) - 1;
}

/* ---- varints --------------------------------------------------------------- */

/* varint_put for v < 2^56 (up to 8 bytes) without a branch per byte: the
 * 7-bit groups are spread one per byte, then the continuation bits set.
 * Stores 8 bytes at dst, so dst needs 8 writable bytes; returns the size. */
ALWAYS_INLINE size_t varint_write_word(uint8_t *dst, uint64_t v)
{
	size_t size = varint_size(v);
	uint64_t x = v;
	x = (x & UINT64_C(0x000000000fffffff)) | ((x & UINT64_C(0x00fffffff0000000)) << 4);
	x = (x & UINT64_C(0x00003fff00003fff)) | ((x & UINT64_C(0x0fffc0000fffc000)) << 2);
	x = (x & UINT64_C(0x007f007f007f007f)) | ((x & UINT64_C(0x3f803f803f803f80)) << 1);
	x |= UINT64_C(0x8080808080808080) & ((UINT64_C(1) << (8 * (size - 1))) - 1);
	store_le64(dst, x);
	return size;
}

static int varint_read_slow(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
	const uint8_t *q = *p;
	uint64_t v = 0;
	for (unsigned shift = 0; shift < 7 * VARINT_SIZE_MAX; shift += 7) {
		if (q == end)
			return TALLY_E_CORRUPT;
		uint8_t byte = *q++;
		v |= (uint64_t)(byte & 0x7f) << shift;
		if (byte < 0x80) {
			if (shift == 63 && byte > 1)
				return TALLY_E_CORRUPT; /* overflows 64 bits */
			if (byte == 0 && shift != 0)
				return TALLY_E_CORRUPT; /* non-minimal */
			*p = q;
			*out = v;
			return 0;
		}
	}
	return TALLY_E_CORRUPT; /* an 11th byte would follow */
}

/* Varints of up to 8 bytes from one 8-byte load, without a branch per
 * byte: the first byte without its high bit ends the varint, then the 7-bit
 * groups are squeezed together. Needs 8 readable bytes. */
ALWAYS_INLINE int varint_read_word(const uint8_t **p, uint64_t *out)
{
	uint64_t word = load_le64(*p);
	uint64_t stops = ~word & UINT64_C(0x8080808080808080);
	if (stops == 0)
		return 1; /* 9 or 10 bytes: the caller takes the slow path */
	unsigned size = (unsigned)__builtin_ctzll(stops) / 8 + 1;
	uint64_t x = size == 8 ? word : word & ((UINT64_C(1) << (8 * size)) - 1);
	if (size > 1 && (x >> (8 * (size - 1))) == 0)
		return TALLY_E_CORRUPT; /* non-minimal */
	x &= UINT64_C(0x7f7f7f7f7f7f7f7f);
	x = (x & UINT64_C(0x007f007f007f007f)) | ((x & UINT64_C(0x7f007f007f007f00)) >> 1);
	x = (x & UINT64_C(0x00003fff00003fff)) | ((x & UINT64_C(0x3fff00003fff0000)) >> 2);
	x = (x & UINT64_C(0x000000000fffffff)) | ((x & UINT64_C(0x0fffffff00000000)) >> 4);
	*out = x;
	*p += size;
	return 0;
}

ALWAYS_INLINE int varint_read(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
	const uint8_t *q = *p;
	if (q < end && *q < 0x80) {
		*out = *q;
		*p = q + 1;
		return 0;
	}
	if (end - q >= 8) {
		int rc = varint_read_word(p, out);
		if (rc <= 0)
			return rc;
	}
	return varint_read_slow(p, end, out);
}

/* Reads one varint from [*p, end) and advances *p past it. 0, or
 * TALLY_E_CORRUPT (and *p unchanged) when the varint is truncated, longer
 * than 10 bytes, overflows 64 bits, or is not minimal (ends in a 0x00 byte
 * after the first). */
int varint_get(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
	return varint_read(p, end, out);
}

/* ---- bit packing ------------------------------------------------------------ */

/* Accumulates values in a 64-bit word and stores whole words. */
typedef struct bit_writer {
	uint8_t *dst;
	uint64_t acc;   /* pending bits, low first */
	unsigned count; /* pending bits in acc, 0..63 */
} bit_writer;

/* v < 2^width, 1 <= width <= 64. */
ALWAYS_INLINE void bit_writer_put(bit_writer *w, uint64_t v, unsigned width)
{
	w->acc |= v << w->count;
	unsigned total = w->count + width;
	if (total < 64) {
		w->count = total;
		return;
	}
	store_le64(w->dst, w->acc);
	w->dst += 8;
	w->count = total - 64;
	/* The bits of v that did not fit; 64 - old count is 1..63 here. */
	w->acc = w->count != 0 ? v >> (width - w->count) : 0;
}

ALWAYS_INLINE uint8_t *bit_writer_finish(bit_writer *w)
{
	for (unsigned i = 0; i < w->count; i += 8)
		*w->dst++ = (uint8_t)(w->acc >> i);
	return w->dst;
}

/* Reads values back from a packed area whose size the caller has checked to
 * be exactly what the values need; loads beyond it yield zero bits. */
typedef struct bit_reader {
	const uint8_t *src;
	size_t size;
	size_t position; /* next byte to load */
	uint64_t acc;    /* loaded, unread bits, low first */
	unsigned count;  /* valid bits in acc, 0..63 */
} bit_reader;

ALWAYS_INLINE uint64_t bit_reader_load(bit_reader *r)
{
	size_t left = r->size - r->position;
	if (left >= 8) {
		uint64_t word = load_le64(r->src + r->position);
		r->position += 8;
		return word;
	}
	uint64_t word = 0;
	for (size_t i = 0; i < left; i++)
		word |= (uint64_t)r->src[r->position + i] << (8 * i);
	r->position = r->size;
	return word;
}

/* 1 <= width <= 64, mask == width_mask(width). */
ALWAYS_INLINE uint64_t bit_reader_get(bit_reader *r, unsigned width, uint64_t mask)
{
	if (r->count >= width) {
		uint64_t v = r->acc & mask;
		r->acc >>= width; /* width <= count <= 63 */
		r->count -= width;
		return v;
	}
	uint64_t word = bit_reader_load(r);
	uint64_t v = (r->acc | word << r->count) & mask;
	unsigned used = width - r->count; /* 1..64 bits taken from word */
	r->acc = used < 64 ? word >> used : 0;
	r->count = 64 - used;
	return v;
}

/* True when every bit after the last value is zero. */
ALWAYS_INLINE bool bit_reader_padding_is_zero(const bit_reader *r)
{
	assert(r->position == r->size);
	return r->acc == 0;
}

/* ---- lanes: how values come from and go to the caller's array ---------------- */

enum lane {
	LANE_U64,      /* uint64_t */
	LANE_I64,      /* int64_t, zigzag */
	LANE_U32,      /* uint32_t; decode rejects values > UINT32_MAX */
	LANE_U8,       /* uint8_t; decode rejects values > UINT8_MAX */
	LANE_U32_DIFF, /* encode only: offsets[i + 1] - offsets[i] of uint32_t */
};

ALWAYS_INLINE uint64_t lane_load(const void *values, size_t index, enum lane lane)
{
	switch (lane) {
	case LANE_U64: return ((const uint64_t *)values)[index];
	case LANE_I64: return zigzag_encode(((const int64_t *)values)[index]);
	case LANE_U32: return ((const uint32_t *)values)[index];
	case LANE_U8: return ((const uint8_t *)values)[index];
	case LANE_U32_DIFF: {
		const uint32_t *offsets = values;
		return (uint32_t)(offsets[index + 1] - offsets[index]);
	}
	}
	assert(!"unknown lane");
	return 0;
}

/* Stores v; returns false when v does not fit the lane's type. */
ALWAYS_INLINE bool lane_store(void *values, size_t index, uint64_t v, enum lane lane)
{
	switch (lane) {
	case LANE_U64: ((uint64_t *)values)[index] = v; return true;
	case LANE_I64: ((int64_t *)values)[index] = zigzag_decode(v); return true;
	case LANE_U32: ((uint32_t *)values)[index] = (uint32_t)v; return v <= UINT32_MAX;
	case LANE_U8: ((uint8_t *)values)[index] = (uint8_t)v; return v <= UINT8_MAX;
	case LANE_U32_DIFF: break;
	}
	assert(!"lane cannot be decoded into");
	return false;
}

/* Packs (value - base) for every value at width (1..64) into dst; returns the
 * end of what was written. */
ALWAYS_INLINE uint8_t *bits_write(uint8_t *dst, const void *values, size_t count,
				  enum lane lane, uint64_t base, unsigned width)
{
	bit_writer w = { .dst = dst };
	for (size_t i = 0; i < count; i++)
		bit_writer_put(&w, lane_load(values, i, lane) - base, width);
	return bit_writer_finish(&w);
}

/* Unpacks count values of width bits (0..64) from exactly `size` bytes and
 * stores base + value. False if a value overflows, does not fit the lane or
 * the padding bits are not zero. The caller checked size. */
ALWAYS_INLINE bool bits_read(const uint8_t *src, size_t size, void *values, size_t count,
			     enum lane lane, uint64_t base, unsigned width)
{
	bool ok = true;
	if (width == 0) {
		for (size_t i = 0; i < count; i++)
			ok &= lane_store(values, i, base, lane);
		return ok;
	}
	bit_reader r = { .src = src, .size = size };
	uint64_t mask = width_mask(width);
	for (size_t i = 0; i < count; i++) {
		uint64_t v = base + bit_reader_get(&r, width, mask);
		ok &= v >= base; /* base + delta wrapped: no such value was encoded */
		ok &= lane_store(values, i, v, lane);
	}
	return ok && bit_reader_padding_is_zero(&r);
}

/* ---- u64 column (also i64, u32, and the id sizes) --------------------------- */

typedef struct u64_plan {
	enum u64_mode mode;
	uint64_t base;  /* CONSTANT: the value; FOR: the minimum; SPARSE: the minimum non-zero */
	unsigned width; /* FOR, SPARSE: bits of value - base */
	size_t nonzero; /* SPARSE: rows that are not zero */
	size_t patches; /* PATCHED: rows whose value - base needs more than width bits */
	size_t size;    /* encoded bytes */
} u64_plan;

/*
 * Exact sizes of the PATCHED layout at the low widths w in [lo, lo + steps)
 * (all below the FOR width) that can beat `beat` bytes; size[k] and
 * patches[k] are for w = lo + k, and size[k] is SIZE_MAX for a width that
 * cannot (it is at least `beat`).
 *
 * A row is patched at w when its value - base needs more than w bits: with
 * t = bit width - lo (t <= steps, since no offset is wider than the FOR
 * width lo + steps), at every k < t, its high part taking varint bytes of
 * t - k bits. One pass counts rows by t, which gives every level's patch
 * count and high part bytes. Each patch also has a varint gap from the
 * previous patched row: one byte below 128, so with count <= 128 the
 * sizes are exact already; otherwise a second pass adds the bytes of the
 * longer gaps, only when some level's lower bound (one byte a gap) beats
 * `beat` (usually not: the tail of the data rarely pays for patches).
 */
ALWAYS_INLINE void u64_patched_sizes(const void *values, size_t count, enum lane lane,
				     uint64_t base, unsigned lo, unsigned steps, size_t beat,
				     size_t size[PATCHED_WIDTH_STEPS_MAX],
				     size_t patches[PATCHED_WIDTH_STEPS_MAX])
{
	size_t rows_at[PATCHED_WIDTH_STEPS_MAX + 1] = { 0 }; /* by t */
	for (size_t i = 0; i < count; i++) {
		uint64_t offset = lane_load(values, i, lane) - base;
		if (offset >> lo)
			rows_at[bit_width(offset) - lo]++;
	}
	bool candidates = false;
	for (unsigned k = 0; k < steps; k++) {
		size_t high = 0;
		patches[k] = 0;
		for (unsigned t = k + 1; t <= steps; t++) {
			patches[k] += rows_at[t];
			high += rows_at[t] * varint_size_bits(t - k);
		}
		size_t packed = 0;
		bool fits = packed_size_get(count, lo + k, &packed);
		assert(fits);
		(void)fits;
		size[k] = 1 + varint_size(base) + 1 + varint_size(patches[k]) + packed + high +
			  patches[k];
		if (size[k] >= beat)
			size[k] = SIZE_MAX;
		candidates |= size[k] != SIZE_MAX;
	}
	if (count <= 128 || !candidates)
		return;
	size_t previous[PATCHED_WIDTH_STEPS_MAX] = { 0 };
	for (size_t i = 0; i < count; i++) {
		uint64_t offset = lane_load(values, i, lane) - base;
		if (!(offset >> lo))
			continue;
		unsigned top = bit_width(offset) - lo;
		for (unsigned k = 0; k < top; k++) {
			size_t gap = i - previous[k];
			if (gap >= 128 && size[k] != SIZE_MAX)
				size[k] += varint_size(gap) - 1;
			previous[k] = i + 1;
		}
	}
	for (unsigned k = 0; k < steps; k++)
		if (size[k] != SIZE_MAX && size[k] >= beat)
			size[k] = SIZE_MAX;
}

/* One pass over the values: min, max and the VARINT size give all three
 * encoded sizes. */
ALWAYS_INLINE void u64_plan_make(u64_plan *plan, const void *values, size_t count,
				 enum lane lane)
{
	if (count == 0) {
		*plan = (u64_plan){ .mode = U64_MODE_VARINT, .size = 1 };
		return;
	}
	uint64_t min = UINT64_MAX, max = 0, min_nonzero = UINT64_MAX;
	size_t varint_bytes = 0, nonzero = 0;
	for (size_t i = 0; i < count; i++) {
		uint64_t v = lane_load(values, i, lane);
		min = v < min ? v : min;
		max = v > max ? v : max;
		varint_bytes += varint_size(v);
		nonzero += v != 0;
		min_nonzero = v != 0 && v < min_nonzero ? v : min_nonzero;
	}
	if (min == max) {
		*plan = (u64_plan){ .mode = U64_MODE_CONSTANT, .base = min,
				    .size = 1 + varint_size(min) };
		return;
	}
	unsigned width = bit_width(max - min);
	size_t packed = 0;
	bool fits = packed_size_get(count, width, &packed);
	assert(fits); /* count <= CODEC_COUNT_MAX */
	(void)fits;
	size_t for_size = 1 + varint_size(min) + 1 + packed;
	size_t varint_total = 1 + varint_bytes;
	if (for_size <= varint_total)
		*plan = (u64_plan){ .mode = U64_MODE_FOR, .base = min, .width = width,
				    .size = for_size };
	else
		*plan = (u64_plan){ .mode = U64_MODE_VARINT, .size = varint_total };
	/* PATCHED: frame of reference at a lower width, the few values that
	 * need more bits patched with their high part (the tail of time gaps
	 * and durations sets the FOR width for every row). */
	unsigned steps = width < PATCHED_WIDTH_STEPS_MAX ? width : PATCHED_WIDTH_STEPS_MAX;
	if (count >= 16) {
		size_t patched[PATCHED_WIDTH_STEPS_MAX], patches[PATCHED_WIDTH_STEPS_MAX];
		unsigned lo = width - steps;
		u64_patched_sizes(values, count, lane, min, lo, steps, plan->size, patched,
				  patches);
		/* Highest low width first: on equal sizes the fewer patches win. */
		for (unsigned step = 1; step <= steps; step++) {
			unsigned k = steps - step;
			if (patched[k] < plan->size)
				*plan = (u64_plan){ .mode = U64_MODE_PATCHED, .base = min,
						    .width = lo + k, .patches = patches[k],
						    .size = patched[k] };
		}
	}
	if (nonzero == 0 || nonzero == count)
		return;
	/* Zeros and other values mixed (tokens of events that are not LLM
	 * calls): a presence bitmap plus the non-zero values bit-packed. */
	unsigned sparse_width = bit_width(max - min_nonzero);
	size_t sparse_packed = 0;
	fits = packed_size_get(nonzero, sparse_width, &sparse_packed);
	assert(fits);
	size_t sparse_size = 1 + varint_size(nonzero) + (count + 7) / 8 +
			     varint_size(min_nonzero) + 1 + sparse_packed;
	if (sparse_size < plan->size)
		*plan = (u64_plan){ .mode = U64_MODE_SPARSE, .base = min_nonzero,
				    .width = sparse_width, .nonzero = nonzero,
				    .size = sparse_size };
}

/* Writes exactly plan->size bytes at dst. */
ALWAYS_INLINE void u64_write(uint8_t *dst, const u64_plan *plan, const void *values,
			     size_t count, enum lane lane)
{
	uint8_t *start = dst;
	*dst++ = (uint8_t)plan->mode;
	switch (plan->mode) {
	case U64_MODE_CONSTANT:
		dst += varint_put(dst, plan->base);
		break;
	case U64_MODE_FOR:
		dst += varint_put(dst, plan->base);
		*dst++ = (uint8_t)plan->width;
		dst = bits_write(dst, values, count, lane, plan->base, plan->width);
		break;
	case U64_MODE_PATCHED: {
		dst += varint_put(dst, plan->base);
		*dst++ = (uint8_t)plan->width;
		dst += varint_put(dst, plan->patches);
		uint64_t low_mask = width_mask(plan->width);
		if (plan->width) {
			bit_writer w = { .dst = dst };
			for (size_t i = 0; i < count; i++)
				bit_writer_put(&w, (lane_load(values, i, lane) - plan->base) & low_mask,
					       plan->width);
			dst = bit_writer_finish(&w);
		}
		size_t previous = 0;
		for (size_t i = 0; i < count; i++) {
			uint64_t high = (lane_load(values, i, lane) - plan->base) >> plan->width;
			if (!high)
				continue;
			dst += varint_put(dst, i - previous);
			dst += varint_put(dst, high);
			previous = i + 1;
		}
		break;
	}
	case U64_MODE_SPARSE: {
		dst += varint_put(dst, plan->nonzero);
		bit_writer bitmap = { .dst = dst };
		for (size_t i = 0; i < count; i++)
			bit_writer_put(&bitmap, lane_load(values, i, lane) != 0, 1);
		dst = bit_writer_finish(&bitmap);
		dst += varint_put(dst, plan->base);
		*dst++ = (uint8_t)plan->width;
		if (plan->width) {
			bit_writer w = { .dst = dst };
			for (size_t i = 0; i < count; i++) {
				uint64_t v = lane_load(values, i, lane);
				if (v)
					bit_writer_put(&w, v - plan->base, plan->width);
			}
			dst = bit_writer_finish(&w);
		}
		break;
	}
	case U64_MODE_VARINT: {
		uint8_t *end = start + plan->size;
		for (size_t i = 0; i < count; i++) {
			uint64_t v = lane_load(values, i, lane);
			if (end - dst >= 8 && v < (UINT64_C(1) << 56))
				dst += varint_write_word(dst, v);
			else
				dst += varint_put(dst, v);
		}
		break;
	}
	}
	assert((size_t)(dst - start) == plan->size);
	(void)start;
}

ALWAYS_INLINE int u64_encode_lane(bytebuf *out, const void *values, size_t count,
				  enum lane lane)
{
	if (count > CODEC_COUNT_MAX)
		return -ENOMEM;
	u64_plan plan;
	u64_plan_make(&plan, values, count, lane);
	int rc = bytebuf_reserve(out, plan.size);
	if (rc != 0)
		return rc;
	u64_write(out->data + out->size, &plan, values, count, lane);
	out->size += plan.size;
	return 0;
}

ALWAYS_INLINE int u64_decode_lane(const uint8_t *src, size_t size, void *values,
				  size_t count, enum lane lane)
{
	if (size == 0)
		return TALLY_E_CORRUPT;
	const uint8_t *p = src + 1;
	const uint8_t *end = src + size;
	uint64_t base;
	bool ok = true;
	switch (src[0]) {
	case U64_MODE_CONSTANT:
		if (varint_read(&p, end, &base) != 0 || p != end)
			return TALLY_E_CORRUPT;
		for (size_t i = 0; i < count; i++)
			ok &= lane_store(values, i, base, lane);
		break;
	case U64_MODE_FOR: {
		if (varint_read(&p, end, &base) != 0 || p == end)
			return TALLY_E_CORRUPT;
		unsigned width = *p++;
		size_t packed;
		if (width > 64 || !packed_size_get(count, width, &packed) ||
		    packed != (size_t)(end - p))
			return TALLY_E_CORRUPT;
		ok = bits_read(p, packed, values, count, lane, base, width);
		break;
	}
	case U64_MODE_PATCHED: {
		uint64_t patches;
		if (varint_read(&p, end, &base) != 0 || p == end)
			return TALLY_E_CORRUPT;
		unsigned width = *p++;
		size_t packed;
		if (width > 63 || varint_read(&p, end, &patches) != 0 || patches > count ||
		    !packed_size_get(count, width, &packed) || packed > (size_t)(end - p))
			return TALLY_E_CORRUPT;
		/* One pass: low parts from the packed area, the high part of the
		 * next patched row from the patch list that follows it. */
		bit_reader r = { .src = p, .size = packed };
		const uint8_t *patch = p + packed;
		uint64_t mask = width_mask(width);
		uint64_t left = patches, next = UINT64_MAX, high = 0;
		size_t index = 0; /* first row the next gap counts from */
		if (left) {
			uint64_t gap;
			if (varint_read(&patch, end, &gap) != 0 || varint_read(&patch, end, &high) != 0)
				return TALLY_E_CORRUPT;
			next = gap;
		}
		for (size_t i = 0; i < count; i++) {
			uint64_t low = width ? bit_reader_get(&r, width, mask) : 0;
			uint64_t offset = low;
			if (i == next) {
				if (high == 0 || high > (UINT64_MAX >> width))
					return TALLY_E_CORRUPT;
				offset |= high << width;
				index = i + 1;
				next = UINT64_MAX;
				if (--left) {
					uint64_t gap;
					if (varint_read(&patch, end, &gap) != 0 ||
					    varint_read(&patch, end, &high) != 0 || gap >= count - index)
						return TALLY_E_CORRUPT;
					next = index + gap;
				}
			}
			uint64_t v = base + offset;
			ok &= v >= base; /* no wrap: such a value was never encoded */
			ok &= lane_store(values, i, v, lane);
		}
		if (left || next != UINT64_MAX || patch != end)
			return TALLY_E_CORRUPT;
		if (width)
			ok &= bit_reader_padding_is_zero(&r);
		break;
	}
	case U64_MODE_SPARSE: {
		uint64_t nonzero;
		size_t bitmap_size = count / 8 + (count % 8 != 0);
		if (varint_read(&p, end, &nonzero) != 0 || nonzero == 0 || nonzero >= count ||
		    bitmap_size > (size_t)(end - p))
			return TALLY_E_CORRUPT;
		const uint8_t *bitmap = p;
		p += bitmap_size;
		size_t ones = 0;
		for (size_t i = 0; i < bitmap_size; i++)
			ones += (size_t)__builtin_popcount(bitmap[i]);
		if (ones != nonzero || (count % 8 && bitmap[bitmap_size - 1] >> (count % 8)))
			return TALLY_E_CORRUPT; /* count mismatch, or padding bits set */
		if (varint_read(&p, end, &base) != 0 || base == 0 || p == end)
			return TALLY_E_CORRUPT;
		unsigned width = *p++;
		size_t packed;
		if (width > 64 || !packed_size_get((size_t)nonzero, width, &packed) ||
		    packed != (size_t)(end - p))
			return TALLY_E_CORRUPT;
		bit_reader r = { .src = p, .size = packed };
		uint64_t mask = width_mask(width);
		for (size_t i = 0; i < count; i++) {
			uint64_t v = 0;
			if (bitmap[i / 8] >> (i % 8) & 1) {
				v = base + (width ? bit_reader_get(&r, width, mask) : 0);
				ok &= v >= base; /* no wrap: such a value was never encoded */
			}
			ok &= lane_store(values, i, v, lane);
		}
		if (width)
			ok &= bit_reader_padding_is_zero(&r);
		break;
	}
	case U64_MODE_VARINT:
		if (count > (size_t)(end - p))
			return TALLY_E_CORRUPT; /* each value takes at least a byte */
		for (size_t i = 0; i < count; i++) {
			uint64_t v;
			if (varint_read(&p, end, &v) != 0)
				return TALLY_E_CORRUPT;
			ok &= lane_store(values, i, v, lane);
		}
		if (p != end)
			return TALLY_E_CORRUPT;
		break;
	default:
		return TALLY_E_CORRUPT;
	}
	return ok ? 0 : TALLY_E_CORRUPT;
}

/* Contract in codec.h: appends the u64 column; 0 or -ENOMEM (out unchanged). */
int codec_u64_encode(bytebuf *out, const uint64_t *values, size_t count)
{
	return u64_encode_lane(out, values, count, LANE_U64);
}

/* Contract in codec.h: 0, or TALLY_E_CORRUPT (values partly written). */
int codec_u64_decode(const uint8_t *src, size_t size, uint64_t *values, size_t count)
{
	return u64_decode_lane(src, size, values, count, LANE_U64);
}

/* Zigzag (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...) then the u64 layout. */
int codec_i64_encode(bytebuf *out, const int64_t *values, size_t count)
{
	return u64_encode_lane(out, values, count, LANE_I64);
}

/* Any well-formed u64 column decodes to some int64 column. */
int codec_i64_decode(const uint8_t *src, size_t size, int64_t *values, size_t count)
{
	return u64_decode_lane(src, size, values, count, LANE_I64);
}

/* The u64 layout; 0 or -ENOMEM (out unchanged). */
int codec_u32_encode(bytebuf *out, const uint32_t *values, size_t count)
{
	return u64_encode_lane(out, values, count, LANE_U32);
}

/* The u64 layout; TALLY_E_CORRUPT also when a value exceeds UINT32_MAX. */
int codec_u32_decode(const uint8_t *src, size_t size, uint32_t *values, size_t count)
{
	return u64_decode_lane(src, size, values, count, LANE_U32);
}

/* ---- time column --------------------------------------------------------------- */

/* Appends count zigzag varints (see the top of the file): 1 byte per row for
 * a steady rhythm, 0 bytes for count 0. 0 or -ENOMEM (out unchanged). */
/* The delta-of-delta body (mode TIME_MODE_DOD) of count rows. */
static int time_dod_encode(bytebuf *out, const int64_t *values, size_t count)
{
	size_t start = out->size;
	uint64_t previous = 0, previous_delta = 0;
	size_t i = 0;
	while (i < count) {
		size_t chunk = count - i < TIME_CHUNK_ROWS ? count - i : TIME_CHUNK_ROWS;
		if (bytebuf_reserve(out, chunk * VARINT_SIZE_MAX) != 0) {
			out->size = start;
			return -ENOMEM;
		}
		uint8_t *dst = out->data + out->size;
		for (size_t chunk_end = i + chunk; i < chunk_end; i++) {
			uint64_t v = (uint64_t)values[i];
			uint64_t delta = v - previous;
			uint64_t zigzag = zigzag_encode_bits(delta - previous_delta);
			/* At least VARINT_SIZE_MAX reserved bytes remain here. */
			dst += zigzag < (UINT64_C(1) << 56) ? varint_write_word(dst, zigzag)
							   : varint_put(dst, zigzag);
			previous = v;
			previous_delta = i != 0 ? delta : 0; /* row 1 stores its plain delta */
		}
		out->size = (size_t)(dst - out->data);
	}
	return 0;
}

/* The delta body (mode TIME_MODE_DELTA): zigzag varint of the first value,
 * then the count - 1 deltas (wrapping) as one u64 column. */
static int time_delta_encode(bytebuf *out, const int64_t *values, size_t count)
{
	uint64_t *deltas = malloc(sizeof(*deltas) * (count - 1));
	if (!deltas)
		return -ENOMEM;
	for (size_t i = 1; i < count; i++)
		deltas[i - 1] = (uint64_t)values[i] - (uint64_t)values[i - 1];
	size_t start = out->size;
	int rc = varint_append(out, zigzag_encode_bits((uint64_t)values[0]));
	if (!rc)
		rc = codec_u64_encode(out, deltas, count - 1);
	if (rc)
		out->size = start;
	free(deltas);
	return rc;
}

int codec_time_encode(bytebuf *out, const int64_t *values, size_t count)
{
	if (count > CODEC_COUNT_MAX)
		return -ENOMEM;
	size_t start = out->size;
	uint8_t mode = TIME_MODE_DOD;
	int rc = bytebuf_append(out, &mode, 1);
	if (!rc)
		rc = time_dod_encode(out, values, count);
	if (rc || count < 2) {
		if (rc)
			out->size = start;
		return rc;
	}
	/* Random arrivals make delta-of-delta noisier than the deltas
	 * themselves; bit-packed deltas then win. Keep the smaller. */
	bytebuf alternative = {0};
	mode = TIME_MODE_DELTA;
	rc = bytebuf_append(&alternative, &mode, 1);
	if (!rc)
		rc = time_delta_encode(&alternative, values, count);
	if (!rc && alternative.size < out->size - start) {
		out->size = start;
		rc = bytebuf_append(out, alternative.data, alternative.size);
	}
	if (rc)
		out->size = start;
	bytebuf_free(&alternative);
	return rc;
}

/* Decodes exactly count rows from exactly size bytes; 0 or TALLY_E_CORRUPT. */
int codec_time_decode(const uint8_t *src, size_t size, int64_t *values, size_t count)
{
	if (size == 0)
		return TALLY_E_CORRUPT; /* the mode byte is always there */
	const uint8_t *p = src + 1;
	const uint8_t *end = src + size;
	if (src[0] == TIME_MODE_DELTA) {
		uint64_t first;
		if (count < 2 || varint_read(&p, end, &first) != 0)
			return TALLY_E_CORRUPT;
		uint64_t *deltas = (uint64_t *)values + 1; /* decoded in place */
		if (codec_u64_decode(p, (size_t)(end - p), deltas, count - 1) != 0)
			return TALLY_E_CORRUPT;
		uint64_t v = zigzag_decode_bits(first);
		values[0] = int64_from_bits(v);
		for (size_t i = 1; i < count; i++) {
			v += deltas[i - 1];
			values[i] = int64_from_bits(v);
		}
		return 0;
	}
	if (src[0] != TIME_MODE_DOD || count > size - 1)
		return TALLY_E_CORRUPT; /* each row takes at least a byte */
	uint64_t previous = 0, previous_delta = 0;
	for (size_t i = 0; i < count; i++) {
		uint64_t zigzag;
		if (varint_read(&p, end, &zigzag) != 0)
			return TALLY_E_CORRUPT;
		uint64_t delta = previous_delta + zigzag_decode_bits(zigzag);
		uint64_t v = previous + delta;
		values[i] = int64_from_bits(v);
		previous = v;
		previous_delta = i != 0 ? delta : 0;
	}
	return p == end ? 0 : TALLY_E_CORRUPT;
}

/* ---- codes and u8 columns --------------------------------------------------------- */

/* A codes column's layout: bit-packed at the width of the largest value, or
 * CODES_CONSTANT when every row holds the same non-zero value and that is
 * smaller (all zeros are width 0, a single byte). */
typedef struct codes_plan {
	unsigned width;  /* or CODES_CONSTANT */
	uint64_t value;  /* CODES_CONSTANT: the value of every row */
	size_t size;     /* encoded bytes */
} codes_plan;

ALWAYS_INLINE void codes_plan_make(codes_plan *plan, const void *values, size_t count,
				   enum lane lane)
{
	uint64_t any = 0, first = count ? lane_load(values, 0, lane) : 0;
	bool same = true;
	for (size_t i = 0; i < count; i++) {
		uint64_t v = lane_load(values, i, lane);
		any |= v;
		same &= v == first;
	}
	unsigned width = bit_width(any);
	size_t packed = 0;
	bool fits = packed_size_get(count, width, &packed);
	assert(fits); /* count <= CODEC_COUNT_MAX */
	(void)fits;
	*plan = (codes_plan){ .width = width, .size = 1 + packed };
	if (same && first != 0 && 1 + varint_size(first) < plan->size)
		*plan = (codes_plan){ .width = CODES_CONSTANT, .value = first,
				      .size = 1 + varint_size(first) };
}

ALWAYS_INLINE uint8_t *codes_write(uint8_t *dst, const codes_plan *plan, const void *values,
				   size_t count, enum lane lane)
{
	*dst++ = (uint8_t)plan->width;
	if (plan->width == CODES_CONSTANT)
		return dst + varint_put(dst, plan->value);
	if (plan->width == 0)
		return dst;
	return bits_write(dst, values, count, lane, 0, plan->width);
}

ALWAYS_INLINE int codes_encode_lane(bytebuf *out, const void *values, size_t count,
				    enum lane lane)
{
	if (count > CODEC_COUNT_MAX)
		return -ENOMEM;
	codes_plan plan;
	codes_plan_make(&plan, values, count, lane);
	int rc = bytebuf_reserve(out, plan.size);
	if (rc != 0)
		return rc;
	uint8_t *end = codes_write(out->data + out->size, &plan, values, count, lane);
	assert((size_t)(end - (out->data + out->size)) == plan.size);
	(void)end;
	out->size += plan.size;
	return 0;
}

ALWAYS_INLINE int codes_decode_lane(const uint8_t *src, size_t size, void *values,
				    size_t count, enum lane lane, unsigned width_max)
{
	if (size == 0)
		return TALLY_E_CORRUPT;
	unsigned width = src[0];
	if (width == CODES_CONSTANT) {
		const uint8_t *p = src + 1, *end = src + size;
		uint64_t value;
		if (varint_read(&p, end, &value) != 0 || p != end || value == 0 || count == 0 ||
		    bit_width(value) > width_max)
			return TALLY_E_CORRUPT;
		bool ok = true;
		for (size_t i = 0; i < count; i++)
			ok &= lane_store(values, i, value, lane);
		return ok ? 0 : TALLY_E_CORRUPT;
	}
	size_t packed;
	if (width > width_max || !packed_size_get(count, width, &packed) || packed != size - 1)
		return TALLY_E_CORRUPT;
	return bits_read(src + 1, packed, values, count, lane, 0, width) ? 0 : TALLY_E_CORRUPT;
}

/* Contract in codec.h: width = bits of the largest value; 0 or -ENOMEM. */
int codec_codes_encode(bytebuf *out, const uint32_t *values, size_t count)
{
	return codes_encode_lane(out, values, count, LANE_U32);
}

/* TALLY_E_CORRUPT for a width above 32, a size that is not 1 + the packed
 * bytes, or non-zero padding bits. */
int codec_codes_decode(const uint8_t *src, size_t size, uint32_t *values, size_t count)
{
	return codes_decode_lane(src, size, values, count, LANE_U32, CODES_WIDTH_MAX);
}

/* The codes layout over u8 values (width 0..8); 0 or -ENOMEM. */
int codec_u8_encode(bytebuf *out, const uint8_t *values, size_t count)
{
	return codes_encode_lane(out, values, count, LANE_U8);
}

/* As codec_codes_decode, but a width above 8 is TALLY_E_CORRUPT. */
int codec_u8_decode(const uint8_t *src, size_t size, uint8_t *values, size_t count)
{
	return codes_decode_lane(src, size, values, count, LANE_U8, U8_WIDTH_MAX);
}

/* ---- event ids ------------------------------------------------------------------------ */

enum {
	HEX_CLASS_VALID = 0x10,
	HEX_CLASS_LOWER = 0x20, /* a-f */
	HEX_CLASS_UPPER = 0x40, /* A-F */
};

#define HEX_DIGIT(c, v) [c] = HEX_CLASS_VALID | (v)
#define HEX_LETTER(lower, upper, v)                     \
	[lower] = HEX_CLASS_VALID | HEX_CLASS_LOWER | (v), \
	[upper] = HEX_CLASS_VALID | HEX_CLASS_UPPER | (v)

/* Low 4 bits: the nibble. 0 for characters that are not hex digits. */
static const uint8_t hex_class[256] = {
	HEX_DIGIT('0', 0), HEX_DIGIT('1', 1), HEX_DIGIT('2', 2), HEX_DIGIT('3', 3),
	HEX_DIGIT('4', 4), HEX_DIGIT('5', 5), HEX_DIGIT('6', 6), HEX_DIGIT('7', 7),
	HEX_DIGIT('8', 8), HEX_DIGIT('9', 9),
	HEX_LETTER('a', 'A', 10), HEX_LETTER('b', 'B', 11), HEX_LETTER('c', 'C', 12),
	HEX_LETTER('d', 'D', 13), HEX_LETTER('e', 'E', 14), HEX_LETTER('f', 'F', 15),
};

static const char hex_lower_digits[16] = "0123456789abcdef";
static const char hex_upper_digits[16] = "0123456789ABCDEF";

/* UUID text groups: where each starts in the text and its length. */
static const uint8_t uuid_group_start[5] = { 0, 9, 14, 19, 24 };
static const uint8_t uuid_group_size[5] = { 8, 4, 4, 4, 12 };

/*
 * hex_pack for 8 characters at once, as bytes of one little-endian word
 * (SWAR): out gets 4 bytes. Returns the OR of their classes, or 0 when one
 * is not a hex digit. Each test adds a constant to every byte and reads the
 * byte's top bit; with every byte below 0x80 (checked first) no sum
 * carries into the next byte.
 */
static unsigned hex_pack_word(const uint8_t *text, uint8_t *out)
{
	const uint64_t ones = UINT64_C(0x0101010101010101), tops = ones * 0x80;
	uint64_t x = load_le64(text);
	if (x & tops)
		return 0;
	uint64_t digit = (x + ones * (0x80 - '0')) & ~(x + ones * (0x80 - '9' - 1)) & tops;
	uint64_t folded = x | ones * 0x20; /* 'A'-'F' to 'a'-'f' */
	uint64_t letter =
		(folded + ones * (0x80 - 'a')) & ~(folded + ones * (0x80 - 'f' - 1)) & tops;
	if ((digit | letter) != tops)
		return 0;
	uint64_t lower = letter & (x << 2); /* a letter's bit 5, at its top: lower case */
	uint64_t upper = letter & ~(x << 2);
	uint64_t nibble = (x & ones * 0x0f) + (letter >> 7) * 9;
	/* Byte 2i holds the high nibble of out[i], byte 2i + 1 the low one. */
	uint64_t packed = ((nibble << 4) | (nibble >> 8)) & UINT64_C(0x00ff00ff00ff00ff);
	packed = (packed | (packed >> 8)) & UINT64_C(0x0000ffff0000ffff);
	packed = (packed | (packed >> 16)) & UINT64_C(0x00000000ffffffff);
	uint8_t bytes[8];
	store_le64(bytes, packed);
	memcpy(out, bytes, 4);
	return HEX_CLASS_VALID | (lower ? HEX_CLASS_LOWER : 0) | (upper ? HEX_CLASS_UPPER : 0);
}

#ifdef __SSE2__
/*
 * hex_pack for 16 characters at once with SSE2 (every x86-64 has it): out
 * gets 8 bytes. Returns the OR of their classes, or 0 when one is not a hex
 * digit. Signed byte compares: a byte of 0x80 or more is negative, below
 * every range, so never a digit.
 */
static unsigned hex_pack_16(const uint8_t *text, uint8_t *out)
{
	__m128i x = _mm_loadu_si128((const __m128i *)(const void *)text);
	__m128i digit = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('0' - 1)),
				      _mm_cmplt_epi8(x, _mm_set1_epi8('9' + 1)));
	__m128i lower = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('a' - 1)),
				      _mm_cmplt_epi8(x, _mm_set1_epi8('f' + 1)));
	__m128i upper = _mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('A' - 1)),
				      _mm_cmplt_epi8(x, _mm_set1_epi8('F' + 1)));
	__m128i letter = _mm_or_si128(lower, upper);
	if (_mm_movemask_epi8(_mm_or_si128(digit, letter)) != 0xffff)
		return 0;
	/* The nibble: the low 4 bits, plus 9 for a letter ('a' & 15 == 1). */
	__m128i nibble = _mm_add_epi8(_mm_and_si128(x, _mm_set1_epi8(0x0f)),
				      _mm_and_si128(letter, _mm_set1_epi8(9)));
	/* Each 16-bit lane holds the high nibble (first character) in its low
	 * byte and the low nibble in its high byte: make it one byte value. */
	__m128i pairs = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(nibble, _mm_set1_epi16(0xff)), 4),
				     _mm_srli_epi16(nibble, 8));
	_mm_storel_epi64((__m128i *)(void *)out, _mm_packus_epi16(pairs, pairs));
	return HEX_CLASS_VALID | (_mm_movemask_epi8(lower) ? HEX_CLASS_LOWER : 0) |
	       (_mm_movemask_epi8(upper) ? HEX_CLASS_UPPER : 0);
}
#endif

/* Packs size (even) hex characters into size / 2 bytes at out. Returns the
 * OR of their classes, or 0 when one is not a hex digit. */
static unsigned hex_pack(const uint8_t *text, size_t size, uint8_t *out)
{
	unsigned classes = HEX_CLASS_VALID;
	size_t i = 0;
#ifdef __SSE2__
	for (; i + 16 <= size; i += 16) {
		unsigned chunk = hex_pack_16(text + i, out + i / 2);
		if (chunk == 0)
			return 0;
		classes |= chunk;
	}
#endif
	for (; i + 8 <= size; i += 8) {
		unsigned word = hex_pack_word(text + i, out + i / 2);
		if (word == 0)
			return 0;
		classes |= word;
	}
	for (; i < size; i += 2) {
		unsigned high = hex_class[text[i]], low = hex_class[text[i + 1]];
		if ((high & low & HEX_CLASS_VALID) == 0)
			return 0;
		classes |= high | low;
		out[i / 2] = (uint8_t)((high & 0xf) << 4 | (low & 0xf));
	}
	return classes;
}

/* The lower or upper kind for the letters seen; -1 for mixed case. Text
 * without letters is lower case: unpacking digits gives digits either way. */
static int hex_kind(unsigned classes, int lower_kind, int upper_kind)
{
	if ((classes & HEX_CLASS_UPPER) == 0)
		return lower_kind;
	if ((classes & HEX_CLASS_LOWER) == 0)
		return upper_kind;
	return -1;
}

static bool bytes_have_letter_nibble(const uint8_t *bytes, size_t size)
{
	unsigned letters = 0;
	for (size_t i = 0; i < size; i++)
		letters |= (bytes[i] >> 4) > 9 || (bytes[i] & 0xf) > 9;
	return letters != 0;
}

/*
 * Packs text (1..64 bytes) into out (ID_PACKED_SIZE_MAX bytes) and returns
 * its kind; *packed_size is set. Hex text of even length and canonical UUID
 * text, each in one letter case, pack to the bytes they spell; text whose
 * only hex characters are digits counts as lower case. Anything else is RAW,
 * copied as is. TALLY_E_INVALID for a text_size outside 1..64.
 * The packed form is a function of the text and id_unpack inverts it, so
 * two ids are equal exactly when their (kind, packed bytes) are.
 */
int id_pack(const char *text, size_t text_size, uint8_t *out, size_t *packed_size)
{
	if (text_size == 0 || text_size > ID_TEXT_SIZE_MAX)
		return TALLY_E_INVALID;
	const uint8_t *t = (const uint8_t *)text;
	int kind = -1;
	if (text_size == UUID_TEXT_SIZE && t[8] == '-' && t[13] == '-' && t[18] == '-' &&
	    t[23] == '-') {
		unsigned classes = 0;
		uint8_t *dst = out;
		for (int g = 0; g < 5; g++) {
			unsigned group = hex_pack(t + uuid_group_start[g], uuid_group_size[g], dst);
			if (group == 0)
				goto raw;
			classes |= group;
			dst += uuid_group_size[g] / 2;
		}
		kind = hex_kind(classes, ID_KIND_UUID_LOWER, ID_KIND_UUID_UPPER);
		*packed_size = UUID_PACKED_SIZE;
	} else if (text_size % 2 == 0) {
		unsigned classes = hex_pack(t, text_size, out);
		if (classes == 0)
			goto raw;
		kind = hex_kind(classes, ID_KIND_HEX_LOWER, ID_KIND_HEX_UPPER);
		*packed_size = text_size / 2;
	}
	if (kind >= 0)
		return kind;
raw:
	memcpy(out, text, text_size);
	*packed_size = text_size;
	return ID_KIND_RAW;
}

/* 0 when (kind, packed) is what id_pack returns for some text, else
 * TALLY_E_CORRUPT. */
static int id_packed_check(int kind, const uint8_t *packed, size_t packed_size)
{
	switch (kind) {
	case ID_KIND_RAW: {
		if (packed_size == 0 || packed_size > ID_TEXT_SIZE_MAX)
			return TALLY_E_CORRUPT;
		uint8_t scratch[ID_PACKED_SIZE_MAX];
		size_t scratch_size;
		return id_pack((const char *)packed, packed_size, scratch, &scratch_size) ==
				       ID_KIND_RAW ? 0 : TALLY_E_CORRUPT;
	}
	case ID_KIND_HEX_LOWER:
	case ID_KIND_HEX_UPPER:
		if (packed_size == 0 || packed_size > HEX_PACKED_SIZE_MAX)
			return TALLY_E_CORRUPT;
		break;
	case ID_KIND_UUID_LOWER:
	case ID_KIND_UUID_UPPER:
		if (packed_size != UUID_PACKED_SIZE)
			return TALLY_E_CORRUPT;
		break;
	default:
		return TALLY_E_CORRUPT;
	}
	/* Upper case needs a letter: digit-only text is packed as lower case. */
	if ((kind == ID_KIND_HEX_UPPER || kind == ID_KIND_UUID_UPPER) &&
	    !bytes_have_letter_nibble(packed, packed_size))
		return TALLY_E_CORRUPT;
	return 0;
}

/*
 * Writes the text of a packed id into text (ID_TEXT_SIZE_MAX bytes, not
 * NUL-terminated) and returns its size (1..64). TALLY_E_CORRUPT for an
 * unknown kind, a size impossible for the kind (RAW 1..64, HEX 1..32, UUID
 * 16) or a packed form id_pack never produces (RAW bytes that are hex or
 * UUID text; an upper-case kind whose text would have no letter).
 */
int id_unpack(int kind, const uint8_t *packed, size_t packed_size, char *text)
{
	int rc = id_packed_check(kind, packed, packed_size);
	if (rc != 0)
		return rc;
	if (kind == ID_KIND_RAW) {
		memcpy(text, packed, packed_size);
		return (int)packed_size;
	}
	bool upper = kind == ID_KIND_HEX_UPPER || kind == ID_KIND_UUID_UPPER;
	const char *digits = upper ? hex_upper_digits : hex_lower_digits;
	bool uuid = kind == ID_KIND_UUID_LOWER || kind == ID_KIND_UUID_UPPER;
	size_t n = 0;
	for (size_t i = 0; i < packed_size; i++) {
		if (uuid && (i == 4 || i == 6 || i == 8 || i == 10))
			text[n++] = '-';
		text[n++] = digits[packed[i] >> 4];
		text[n++] = digits[packed[i] & 0xf];
	}
	assert(n <= ID_TEXT_SIZE_MAX);
	return (int)n;
}

/*
 * Appends the column: varint kinds size, kinds (u8 layout), varint sizes
 * size, packed sizes (u64 layout), varint bytes size, the packed bytes.
 * The ids must come from id_pack (asserted, as decode rejects anything
 * else); offsets has count + 1 entries from 0. 0 or -ENOMEM (out unchanged).
 */
int codec_ids_encode(bytebuf *out, const uint8_t *kinds, const uint32_t *offsets,
		     const uint8_t *bytes, size_t count)
{
	if (count > CODEC_COUNT_MAX)
		return -ENOMEM;
	assert(offsets[0] == 0);
	for (size_t i = 0; i < count; i++) {
		assert(offsets[i + 1] >= offsets[i]);
		assert(id_packed_check(kinds[i], bytes + offsets[i],
				       offsets[i + 1] - offsets[i]) == 0);
	}
	codes_plan kinds_plan;
	codes_plan_make(&kinds_plan, kinds, count, LANE_U8);
	size_t kinds_size = kinds_plan.size;
	u64_plan sizes_plan;
	u64_plan_make(&sizes_plan, offsets, count, LANE_U32_DIFF);
	size_t bytes_size = offsets[count];
	size_t total = varint_size(kinds_size) + kinds_size + varint_size(sizes_plan.size) +
		       sizes_plan.size + varint_size(bytes_size) + bytes_size;
	int rc = bytebuf_reserve(out, total);
	if (rc != 0)
		return rc;
	uint8_t *dst = out->data + out->size;
	dst += varint_put(dst, kinds_size);
	dst = codes_write(dst, &kinds_plan, kinds, count, LANE_U8);
	dst += varint_put(dst, sizes_plan.size);
	u64_write(dst, &sizes_plan, offsets, count, LANE_U32_DIFF);
	dst += sizes_plan.size;
	dst += varint_put(dst, bytes_size);
	if (bytes_size != 0)
		memcpy(dst, bytes, bytes_size);
	dst += bytes_size;
	assert((size_t)(dst - (out->data + out->size)) == total);
	out->size += total;
	return 0;
}

/* Reads one section's length prefix and checks it fits in [*p, end). */
static int section_get(const uint8_t **p, const uint8_t *end, size_t *size)
{
	uint64_t v;
	if (varint_read(p, end, &v) != 0 || v > (uint64_t)(end - *p))
		return TALLY_E_CORRUPT;
	*size = (size_t)v;
	return 0;
}

/*
 * Decodes a column written by codec_ids_encode into kinds (count entries),
 * offsets (count + 1) and bytes (reset, then filled). 0; TALLY_E_CORRUPT for
 * any malformed section, sizes that do not add up to the bytes section, or
 * an id that id_unpack would reject; -ENOMEM if bytes cannot grow. On error
 * the arrays hold partial results; bytes is untouched after TALLY_E_CORRUPT
 * (everything is checked first) and empty after -ENOMEM.
 */
int codec_ids_decode(const uint8_t *src, size_t size, size_t count, uint8_t *kinds,
		     uint32_t *offsets, bytebuf *bytes)
{
	if (size == 0 || count > size)
		return TALLY_E_CORRUPT; /* every id has at least one byte */
	const uint8_t *p = src;
	const uint8_t *end = src + size;
	size_t section;
	if (section_get(&p, end, &section) != 0 ||
	    codes_decode_lane(p, section, kinds, count, LANE_U8, U8_WIDTH_MAX) != 0)
		return TALLY_E_CORRUPT;
	p += section;
	if (section_get(&p, end, &section) != 0 ||
	    u64_decode_lane(p, section, offsets + 1, count, LANE_U32) != 0)
		return TALLY_E_CORRUPT;
	p += section;
	size_t bytes_size;
	if (section_get(&p, end, &bytes_size) != 0 || bytes_size != (size_t)(end - p) ||
	    bytes_size > UINT32_MAX)
		return TALLY_E_CORRUPT;
	offsets[0] = 0;
	size_t total = 0;
	for (size_t i = 0; i < count; i++) {
		size_t id_size = offsets[i + 1];
		if (id_size > bytes_size - total || id_packed_check(kinds[i], p + total, id_size) != 0)
			return TALLY_E_CORRUPT;
		total += id_size;
		offsets[i + 1] = (uint32_t)total;
	}
	if (total != bytes_size)
		return TALLY_E_CORRUPT;
	bytebuf_reset(bytes);
	return bytebuf_append(bytes, p, bytes_size);
}

/* ---- zstd blocks ------------------------------------------------------------------------ */

/* One compression and one decompression context per thread, made on first
 * use and freed by the thread-exit destructor of zstd_key. */
typedef struct zstd_contexts {
	ZSTD_CCtx *compress;
	ZSTD_DCtx *decompress;
	uint64_t *scratch;       /* classed columns: values gathered by class */
	size_t scratch_capacity; /* entries */
} zstd_contexts;

static pthread_once_t zstd_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t zstd_key;
static int zstd_key_rc;
static _Thread_local zstd_contexts *zstd_thread;

static void zstd_contexts_free(void *arg)
{
	zstd_contexts *contexts = arg;
	ZSTD_freeCCtx(contexts->compress);
	ZSTD_freeDCtx(contexts->decompress);
	free(contexts->scratch);
	free(contexts);
}

static void zstd_key_create(void)
{
	zstd_key_rc = pthread_key_create(&zstd_key, zstd_contexts_free);
}

/* This thread's contexts, or NULL when out of memory. */
static zstd_contexts *zstd_contexts_get(void)
{
	if (zstd_thread != NULL)
		return zstd_thread;
	pthread_once(&zstd_key_once, zstd_key_create);
	if (zstd_key_rc != 0)
		return NULL;
	zstd_contexts *contexts = calloc(1, sizeof *contexts);
	if (contexts == NULL)
		return NULL;
	if (pthread_setspecific(zstd_key, contexts) != 0) {
		free(contexts);
		return NULL;
	}
	zstd_thread = contexts;
	return contexts;
}

/*
 * Appends src compressed with zstd at `level` when that is strictly smaller
 * (*codec = BLOCK_CODEC_ZSTD), else src as is (*codec = BLOCK_CODEC_RAW).
 * Empty input is RAW. 0; -ENOMEM (out unchanged); TALLY_E_INVALID for a
 * level zstd does not accept or any other zstd failure.
 */
int block_compress(bytebuf *out, const uint8_t *src, size_t size, int level,
		   uint8_t *codec)
{
	if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
		return TALLY_E_INVALID;
	int rc = bytebuf_reserve(out, size); /* room for either outcome */
	if (rc != 0)
		return rc;
	if (size > 1) {
		zstd_contexts *contexts = zstd_contexts_get();
		if (contexts == NULL)
			return -ENOMEM;
		if (contexts->compress == NULL)
			contexts->compress = ZSTD_createCCtx();
		if (contexts->compress == NULL)
			return -ENOMEM;
		/* One byte less than size: zstd gives up when it cannot win. */
		size_t r = ZSTD_compressCCtx(contexts->compress, out->data + out->size,
					     size - 1, src, size, level);
		if (!ZSTD_isError(r)) {
			out->size += r;
			*codec = BLOCK_CODEC_ZSTD;
			return 0;
		}
		ZSTD_ErrorCode error = ZSTD_getErrorCode(r);
		if (error == ZSTD_error_memory_allocation)
			return -ENOMEM;
		if (error != ZSTD_error_dstSize_tooSmall)
			return TALLY_E_INVALID;
	}
	if (size != 0)
		memcpy(out->data + out->size, src, size);
	out->size += size;
	*codec = BLOCK_CODEC_RAW;
	return 0;
}

int block_compress_gated(bytebuf *out, const uint8_t *src, size_t size, int level,
			 block_gate *gate, uint8_t *codec)
{
	unsigned bits = bit_width(size);
	uint32_t *misses = &gate->size_class[bits].misses;
	uint32_t *skipped = &gate->size_class[bits].skipped;
	if (*misses >= BLOCK_GATE_MISSES && *skipped + 1 < BLOCK_GATE_RETRY) {
		if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
			return TALLY_E_INVALID; /* as block_compress would say */
		int rc = bytebuf_append(out, src, size);
		if (rc)
			return rc;
		++*skipped;
		*codec = BLOCK_CODEC_RAW;
		return 0;
	}
	int rc = block_compress(out, src, size, level, codec);
	if (rc)
		return rc;
	*skipped = 0;
	if (*codec == BLOCK_CODEC_ZSTD)
		*misses = 0;
	else if (*misses < BLOCK_GATE_MISSES)
		++*misses;
	return 0;
}

/*
 * Resets out and fills it with the raw_size bytes of the block. RAW: size
 * must equal raw_size. ZSTD: src must be exactly one zstd frame whose header
 * states raw_size as its content size, and it must decompress to exactly
 * that. 0, TALLY_E_CORRUPT for an unknown codec or any mismatch, -ENOMEM.
 */
int block_decompress(bytebuf *out, const uint8_t *src, size_t size, uint8_t codec,
		     size_t raw_size)
{
	bytebuf_reset(out);
	/* Even an empty block gets a buffer: decoders compute data + size,
	 * which is undefined on a NULL pointer (found by fuzz/fuzz_segment.c:
	 * an empty footer, an empty rollup chunk). */
	int rc = bytebuf_reserve(out, 1);
	if (rc != 0)
		return rc;
	if (codec == BLOCK_CODEC_RAW) {
		if (size != raw_size)
			return TALLY_E_CORRUPT;
		return bytebuf_append(out, src, size);
	}
	if (codec != BLOCK_CODEC_ZSTD || size < 4 || raw_size >= ZSTD_CONTENTSIZE_ERROR)
		return TALLY_E_CORRUPT;
	uint32_t magic = (uint32_t)src[0] | (uint32_t)src[1] << 8 | (uint32_t)src[2] << 16 |
			 (uint32_t)src[3] << 24;
	if (magic != ZSTD_MAGICNUMBER || ZSTD_findFrameCompressedSize(src, size) != size ||
	    ZSTD_getFrameContentSize(src, size) != (unsigned long long)raw_size)
		return TALLY_E_CORRUPT;
	if ((rc = bytebuf_reserve(out, raw_size)) != 0)
		return rc;
	zstd_contexts *contexts = zstd_contexts_get();
	if (contexts == NULL)
		return -ENOMEM;
	if (contexts->decompress == NULL)
		contexts->decompress = ZSTD_createDCtx();
	if (contexts->decompress == NULL)
		return -ENOMEM;
	size_t r = ZSTD_decompressDCtx(contexts->decompress, out->data, raw_size, src, size);
	if (ZSTD_isError(r))
		return ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? -ENOMEM
									   : TALLY_E_CORRUPT;
	if (r != raw_size)
		return TALLY_E_CORRUPT;
	out->size = raw_size;
	return 0;
}

/* ---- columns encoded against other columns of their row group ---------------- */

/* This thread's scratch of at least count u64 values (count >= 1), or NULL
 * when out of memory. Kept between calls; freed with the thread's contexts. */
static uint64_t *thread_scratch(size_t count)
{
	zstd_contexts *contexts = zstd_contexts_get();
	if (contexts == NULL)
		return NULL;
	if (contexts->scratch_capacity < count) {
		size_t capacity = count < 1024 ? 1024 : count;
		if (capacity > SIZE_MAX / sizeof(uint64_t))
			return NULL;
		uint64_t *grown = realloc(contexts->scratch, capacity * sizeof(uint64_t));
		if (grown == NULL)
			return NULL;
		contexts->scratch = grown;
		contexts->scratch_capacity = capacity;
	}
	return contexts->scratch;
}

/*
 * CLASSED: the rows split by a class column the reader already has (the
 * event type's code), each class's values in row order as a u64 layout of
 * its own, so each class gets its own base, width and patches (durations of
 * tool calls and of agent runs differ by two orders of magnitude) and a
 * class whose values are all zero costs two bytes instead of a bitmap bit
 * per row. Values are gathered into the scratch class by class.
 */
typedef struct classed_plan {
	uint32_t class_count;
	size_t first[CODEC_CLASSES_MAX + 1]; /* class k: scratch[first[k] .. first[k + 1]) */
	u64_plan plan[CODEC_CLASSES_MAX];
	size_t size;
} classed_plan;

/*
 * Orders rows class by class: first[k] (k = 0..limit) becomes the position
 * of class k's first row, so class k's rows take [first[k], first[k + 1]),
 * and next[k] = first[k] (where its next row goes). Returns the class count
 * (highest class + 1), or 0 when a row's class is at or above limit
 * (limit <= CODEC_CLASSES_MAX).
 */
static uint32_t classes_partition(const uint32_t *classes, size_t count, uint32_t limit,
				  size_t first[CODEC_CLASSES_MAX + 1], size_t next[CODEC_CLASSES_MAX])
{
	memset(first, 0, sizeof(size_t) * (limit + 1));
	uint32_t top = 0;
	for (size_t i = 0; i < count; i++) {
		if (classes[i] >= limit)
			return 0;
		first[classes[i] + 1]++;
		top = classes[i] > top ? classes[i] : top;
	}
	for (uint32_t k = 0; k < limit; k++) {
		first[k + 1] += first[k];
		next[k] = first[k];
	}
	return top + 1;
}

/* False when a class is CODEC_CLASSES_MAX or above (the column stays plain). */
ALWAYS_INLINE bool classed_plan_make(classed_plan *cp, const void *values, size_t count,
				     enum lane lane, const uint32_t *classes, uint64_t *scratch)
{
	size_t next[CODEC_CLASSES_MAX];
	cp->class_count = classes_partition(classes, count, CODEC_CLASSES_MAX, cp->first, next);
	if (!cp->class_count)
		return false;
	for (size_t i = 0; i < count; i++)
		scratch[next[classes[i]]++] = lane_load(values, i, lane);
	cp->size = 1 + varint_size(cp->class_count);
	for (uint32_t k = 0; k < cp->class_count; k++) {
		size_t n = cp->first[k + 1] - cp->first[k];
		if (n == 0)
			continue;
		u64_plan_make(&cp->plan[k], scratch + cp->first[k], n, LANE_U64);
		cp->size += varint_size(cp->plan[k].size) + cp->plan[k].size;
	}
	return true;
}

static void classed_write(uint8_t *dst, const classed_plan *cp, const uint64_t *scratch)
{
	uint8_t *start = dst;
	*dst++ = U64_MODE_CLASSED;
	dst += varint_put(dst, cp->class_count);
	for (uint32_t k = 0; k < cp->class_count; k++) {
		size_t n = cp->first[k + 1] - cp->first[k];
		if (n == 0)
			continue;
		dst += varint_put(dst, cp->plan[k].size);
		u64_write(dst, &cp->plan[k], scratch + cp->first[k], n, LANE_U64);
		dst += cp->plan[k].size;
	}
	assert((size_t)(dst - start) == cp->size);
	(void)start;
}

/* The plain u64 layout or CLASSED, whichever is smaller (ties: plain).
 * classes NULL: plain. 0 or -ENOMEM (out unchanged). */
ALWAYS_INLINE int u64_encode_classed_lane(bytebuf *out, const void *values, size_t count,
					  enum lane lane, const uint32_t *classes)
{
	if (count > CODEC_COUNT_MAX)
		return -ENOMEM;
	u64_plan plain;
	u64_plan_make(&plain, values, count, lane);
	if (classes != NULL && count >= 2 && plain.size > 3) {
		uint64_t *scratch = thread_scratch(count);
		if (scratch == NULL)
			return -ENOMEM;
		classed_plan cp;
		if (classed_plan_make(&cp, values, count, lane, classes, scratch) &&
		    cp.size < plain.size) {
			int rc = bytebuf_reserve(out, cp.size);
			if (rc != 0)
				return rc;
			classed_write(out->data + out->size, &cp, scratch);
			out->size += cp.size;
			return 0;
		}
	}
	int rc = bytebuf_reserve(out, plain.size);
	if (rc != 0)
		return rc;
	u64_write(out->data + out->size, &plain, values, count, lane);
	out->size += plain.size;
	return 0;
}

/* A plain u64 layout, or CLASSED when classes is not NULL. 0,
 * TALLY_E_CORRUPT, or -ENOMEM (the scratch could not grow). */
ALWAYS_INLINE int u64_decode_classed_lane(const uint8_t *src, size_t size, void *values,
					  size_t count, enum lane lane, const uint32_t *classes)
{
	if (size == 0 || src[0] != U64_MODE_CLASSED)
		return u64_decode_lane(src, size, values, count, lane);
	const uint8_t *p = src + 1, *end = src + size;
	uint64_t class_count;
	if (classes == NULL || count == 0 || varint_read(&p, end, &class_count) != 0 ||
	    class_count == 0 || class_count > CODEC_CLASSES_MAX)
		return TALLY_E_CORRUPT;
	size_t next[CODEC_CLASSES_MAX], first[CODEC_CLASSES_MAX + 1];
	if (!classes_partition(classes, count, (uint32_t)class_count, first, next))
		return TALLY_E_CORRUPT;
	uint64_t *scratch = thread_scratch(count);
	if (scratch == NULL)
		return -ENOMEM;
	for (uint32_t k = 0; k < class_count; k++) {
		size_t n = first[k + 1] - first[k];
		if (n == 0)
			continue;
		size_t section;
		if (section_get(&p, end, &section) != 0 ||
		    u64_decode_lane(p, section, scratch + first[k], n, LANE_U64) != 0)
			return TALLY_E_CORRUPT;
		p += section;
	}
	if (p != end)
		return TALLY_E_CORRUPT;
	bool ok = true;
	for (size_t i = 0; i < count; i++)
		ok &= lane_store(values, i, scratch[next[classes[i]]++], lane);
	return ok ? 0 : TALLY_E_CORRUPT;
}

int codec_u64_encode_classed(bytebuf *out, const uint64_t *values, size_t count,
			     const uint32_t *classes)
{
	return u64_encode_classed_lane(out, values, count, LANE_U64, classes);
}

int codec_u64_decode_classed(const uint8_t *src, size_t size, uint64_t *values, size_t count,
			     const uint32_t *classes)
{
	return u64_decode_classed_lane(src, size, values, count, LANE_U64, classes);
}

int codec_u32_encode_classed(bytebuf *out, const uint32_t *values, size_t count,
			     const uint32_t *classes)
{
	return u64_encode_classed_lane(out, values, count, LANE_U32, classes);
}

int codec_u32_decode_classed(const uint8_t *src, size_t size, uint32_t *values, size_t count,
			     const uint32_t *classes)
{
	return u64_decode_classed_lane(src, size, values, count, LANE_U32, classes);
}

/*
 * PRICED: cost predicted from the row's tokens at per-model rates, and only
 * the difference stored. A metering producer prices an LLM call as tokens
 * times its model's list price, so with the right rates the residual is zero
 * on those rows and the column shrinks to the rates plus what the tokens do
 * not explain (flat fees, credits, rounding of another convention).
 *
 * The prediction is integer arithmetic and exact on every machine:
 * (tokens_in * rate_in + tokens_out * rate_out + PRICE_UNIT / 2) / PRICE_UNIT,
 * rates in micro-units per million tokens; a row whose product overflows
 * 64 bits is impossible for the decoder (corrupt), so the encoder gives its
 * model zero rates. How the encoder finds rates does not matter to
 * correctness: a least-squares fit in doubles over the model's rows proposes
 * rates, rounded to each power of ten from 1 to 10^5 (list prices are round
 * numbers), and the pair that leaves the fewest non-zero residuals on a
 * sample of the model's rows wins. Money never passes through a double: the
 * doubles only choose rates, and the stored column is exact integers.
 */
#define PRICE_UNIT UINT64_C(1000000)
#define PRICE_SAMPLE_ROWS 128      /* rows of a model that judge its candidate rates */
#define PRICE_GRANULARITIES 6      /* rates rounded to 10^0 .. 10^5 */
#define PRICE_RATE_FIT_MAX 1e15    /* a fitted rate above this is not a price: 0 */

/* The predicted cost, or false when the arithmetic would overflow. */
static inline bool price_predict(uint64_t tokens_in, uint64_t tokens_out, uint64_t rate_in,
				 uint64_t rate_out, int64_t *predicted)
{
	uint64_t a, b, sum;
	if (__builtin_mul_overflow(tokens_in, rate_in, &a) ||
	    __builtin_mul_overflow(tokens_out, rate_out, &b) ||
	    __builtin_add_overflow(a, b, &sum) ||
	    __builtin_add_overflow(sum, PRICE_UNIT / 2, &sum))
		return false;
	*predicted = (int64_t)(sum / PRICE_UNIT); /* < 2^64 / 10^6 < INT64_MAX */
	return true;
}

typedef struct price_fit {
	double in_in, in_out, out_out, in_cost, out_cost; /* least-squares sums */
	uint32_t samples;
} price_fit;

/* x rounded to a multiple of granularity, or 0 when x is not a plausible rate. */
static uint64_t rate_round(double x, uint64_t granularity)
{
	if (!(x >= 0.0) || x > PRICE_RATE_FIT_MAX)
		return 0;
	return (uint64_t)(x / (double)granularity + 0.5) * granularity;
}

/* Fewest non-zero residuals over the sample rows, then the smallest sum of
 * their magnitudes; coarser rates first, so ties keep the rounder price. */
static void price_choose(const price_fit *f, const uint32_t *sample, const int64_t *cost,
			 const codec_cost_context *ctx, uint64_t rate[2])
{
	double a = 0.0, b = 0.0;
	double det = f->in_in * f->out_out - f->in_out * f->in_out;
	if (f->in_in > 0.0 && f->out_out > 0.0 && det > 1e-9 * f->in_in * f->out_out) {
		a = (f->in_cost * f->out_out - f->out_cost * f->in_out) / det;
		b = (f->out_cost * f->in_in - f->in_cost * f->in_out) / det;
	} else if (f->in_in > 0.0) {
		a = f->in_cost / f->in_in;
	} else if (f->out_out > 0.0) {
		b = f->out_cost / f->out_out;
	}
	rate[0] = rate[1] = 0;
	uint64_t best_misses = UINT64_MAX, best_error = UINT64_MAX;
	static const uint64_t granularity[PRICE_GRANULARITIES] = {
		1, 10, 100, 1000, 10000, 100000,
	};
	/* A candidate is dropped as soon as it misses more rows than the best
	 * so far (it cannot win), and the search ends at a candidate that
	 * misses none (nothing later can beat it: ties keep the earlier). */
	bool exact = false; /* the best so far misses no row */
	for (int ga = PRICE_GRANULARITIES - 1; ga >= 0 && !exact; ga--) {
		for (int gb = PRICE_GRANULARITIES - 1; gb >= 0 && !exact; gb--) {
			uint64_t in = rate_round(a, granularity[ga]);
			uint64_t out = rate_round(b, granularity[gb]);
			uint64_t misses = 0, error = 0;
			for (uint32_t j = 0; j < f->samples && misses <= best_misses; j++) {
				uint32_t i = sample[j];
				int64_t predicted, residual;
				if (!price_predict(ctx->tokens_in[i], ctx->tokens_out[i], in, out,
						   &predicted) ||
				    __builtin_sub_overflow(cost[i], predicted, &residual)) {
					misses = UINT64_MAX;
					break;
				}
				uint64_t magnitude = residual < 0 ? 0 - (uint64_t)residual
								   : (uint64_t)residual;
				misses += magnitude != 0;
				error = error + magnitude < error ? UINT64_MAX : error + magnitude;
			}
			if (misses < best_misses || (misses == best_misses && error < best_error)) {
				best_misses = misses;
				best_error = error;
				rate[0] = in;
				rate[1] = out;
				exact = misses == 0 && error == 0;
			}
		}
	}
}

/* Rates per model (rate[2 * m], rate[2 * m + 1]) for models [0, model_count)
 * and the residual of every row. -ENOMEM, or 0 with *useful false when no
 * model got a non-zero rate (PRICED cannot win). */
static int price_rows(const int64_t *cost, size_t count, const codec_cost_context *ctx,
		      uint32_t model_count, uint64_t *rate, int64_t *residual, bool *useful)
{
	price_fit *fit = calloc(model_count, sizeof(*fit));
	uint32_t *sample = malloc(sizeof(*sample) * model_count * PRICE_SAMPLE_ROWS);
	if (fit == NULL || sample == NULL) {
		free(fit);
		free(sample);
		return -ENOMEM;
	}
	for (size_t i = 0; i < count; i++) {
		uint64_t in = ctx->tokens_in[i], out = ctx->tokens_out[i];
		if ((in | out) == 0)
			continue;
		price_fit *f = &fit[ctx->models[i]];
		double x = (double)in, y = (double)out, c = (double)cost[i] * (double)PRICE_UNIT;
		f->in_in += x * x;
		f->in_out += x * y;
		f->out_out += y * y;
		f->in_cost += x * c;
		f->out_cost += y * c;
		if (f->samples < PRICE_SAMPLE_ROWS)
			sample[(size_t)ctx->models[i] * PRICE_SAMPLE_ROWS + f->samples++] = (uint32_t)i;
	}
	*useful = false;
	for (uint32_t m = 0; m < model_count; m++) {
		price_choose(&fit[m], sample + (size_t)m * PRICE_SAMPLE_ROWS, cost, ctx, rate + 2 * m);
		*useful |= (rate[2 * m] | rate[2 * m + 1]) != 0;
	}
	free(fit);
	free(sample);
	/* Rates chosen on a sample may overflow on another row of the model:
	 * that model falls back to zero rates (its residual is its cost). */
	for (size_t i = 0; i < count; i++) {
		uint32_t m = ctx->models[i];
		int64_t predicted;
		if (!price_predict(ctx->tokens_in[i], ctx->tokens_out[i], rate[2 * m],
				   rate[2 * m + 1], &predicted) ||
		    __builtin_sub_overflow(cost[i], predicted, &residual[i])) {
			rate[2 * m] = rate[2 * m + 1] = 0;
			i = SIZE_MAX; /* i++ wraps to 0: start over, earlier rows of m change too */
		}
	}
	return 0;
}

int codec_cost_encode(bytebuf *out, const int64_t *values, size_t count,
		      const codec_cost_context *ctx)
{
	size_t before = out->size;
	int rc = u64_encode_classed_lane(out, values, count, LANE_I64, ctx->classes);
	if (rc != 0 || count < 2)
		return rc;
	uint32_t model_count = 0;
	for (size_t i = 0; i < count; i++) {
		if (ctx->models[i] >= CODEC_PRICE_MODELS_MAX)
			return 0;
		model_count = ctx->models[i] >= model_count ? ctx->models[i] + 1 : model_count;
	}
	uint64_t *rate = malloc(sizeof(*rate) * 2 * model_count);
	int64_t *residual = malloc(sizeof(*residual) * count);
	bytebuf priced = { 0 };
	bool useful = false;
	rc = rate == NULL || residual == NULL ? -ENOMEM
		: price_rows(values, count, ctx, model_count, rate, residual, &useful);
	if (rc == 0 && useful) {
		uint8_t head[1 + VARINT_SIZE_MAX];
		head[0] = U64_MODE_PRICED;
		size_t head_size = 1 + varint_put(head + 1, model_count);
		rc = bytebuf_append(&priced, head, head_size);
		for (uint32_t k = 0; rc == 0 && k < 2 * model_count; k++)
			rc = varint_append(&priced, rate[k]);
		if (rc == 0)
			rc = u64_encode_classed_lane(&priced, residual, count, LANE_I64, ctx->classes);
		if (rc == 0 && priced.size < out->size - before) {
			out->size = before; /* the room is there: priced is smaller */
			memcpy(out->data + before, priced.data, priced.size);
			out->size += priced.size;
		}
	}
	free(rate);
	free(residual);
	bytebuf_free(&priced);
	if (rc != 0)
		out->size = before;
	return rc;
}

int codec_cost_decode(const uint8_t *src, size_t size, int64_t *values, size_t count,
		      const codec_cost_context *ctx)
{
	if (size == 0 || src[0] != U64_MODE_PRICED)
		return u64_decode_classed_lane(src, size, values, count, LANE_I64, ctx->classes);
	const uint8_t *p = src + 1, *end = src + size;
	uint64_t model_count;
	if (varint_read(&p, end, &model_count) != 0 || model_count == 0 ||
	    model_count > CODEC_PRICE_MODELS_MAX)
		return TALLY_E_CORRUPT;
	uint64_t rate[2 * CODEC_PRICE_MODELS_MAX];
	for (uint64_t k = 0; k < 2 * model_count; k++)
		if (varint_read(&p, end, &rate[k]) != 0)
			return TALLY_E_CORRUPT;
	int rc = u64_decode_classed_lane(p, (size_t)(end - p), values, count, LANE_I64,
					 ctx->classes);
	if (rc != 0)
		return rc;
	for (size_t i = 0; i < count; i++) {
		uint32_t m = ctx->models[i];
		int64_t predicted;
		if (m >= model_count ||
		    !price_predict(ctx->tokens_in[i], ctx->tokens_out[i], rate[2 * m],
				   rate[2 * m + 1], &predicted) ||
		    __builtin_add_overflow(values[i], predicted, &values[i]))
			return TALLY_E_CORRUPT;
	}
	return 0;
}

/*
 * Codes CLASSED: a codes column split by a class column the reader decodes
 * first (an agent's codes by the row's project, a model's by the row's
 * type). Each class lists the distinct codes it uses, ascending, and its
 * rows store an index into that list at the width the list needs: a
 * project's three agents cost two bits a row where the tenant's twenty
 * agents cost five, and a tool call's empty model costs nothing.
 */
#define CODES_CLASSED 0xfe
#define CODES_CLASSED_CODE_LIMIT 4096 /* a code at or above it keeps the column plain */

static int compare_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/*
 * Writes the CLASSED form into tmp (reset first). 0; 1 when it does not
 * apply (a class at or above CODEC_CLASSES_MAX, a code at or above the
 * limit); -ENOMEM.
 */
static int codes_classed_build(bytebuf *tmp, const uint32_t *values, size_t count,
			       const uint32_t *classes)
{
	size_t first[CODEC_CLASSES_MAX + 1], next[CODEC_CLASSES_MAX];
	uint32_t max = 0;
	for (size_t i = 0; i < count; i++)
		max = values[i] > max ? values[i] : max;
	if (max >= CODES_CLASSED_CODE_LIMIT)
		return 1;
	uint32_t class_count = classes_partition(classes, count, CODEC_CLASSES_MAX, first, next);
	if (!class_count)
		return 1;
	/* Tables over the codes present, not the limit: most columns of a
	 * tenant use a few codes, and zeroing 16 KiB per column was 2% of a
	 * flush. */
	size_t codes = (size_t)max + 1;
	uint64_t *scratch = thread_scratch(count);
	uint32_t *seen = calloc(codes, sizeof(*seen)); /* class + 1 */
	uint32_t *index = malloc(sizeof(*index) * codes);
	uint32_t *distinct = malloc(sizeof(*distinct) * codes);
	int rc = scratch && seen && index && distinct ? 0 : -ENOMEM;
	if (rc == 0) {
		for (size_t i = 0; i < count; i++)
			scratch[next[classes[i]]++] = values[i];
		bytebuf_reset(tmp);
		uint8_t head[1 + VARINT_SIZE_MAX];
		head[0] = CODES_CLASSED;
		rc = bytebuf_append(tmp, head, 1 + varint_put(head + 1, class_count));
	}
	for (uint32_t k = 0; rc == 0 && k < class_count; k++) {
		size_t rows = first[k + 1] - first[k];
		if (rows == 0)
			continue;
		const uint64_t *v = scratch + first[k];
		uint32_t n = 0;
		for (size_t j = 0; j < rows; j++) {
			if (seen[v[j]] != k + 1) {
				seen[v[j]] = k + 1;
				distinct[n++] = (uint32_t)v[j];
			}
		}
		qsort(distinct, n, sizeof(*distinct), compare_u32);
		rc = varint_append(tmp, n);
		for (uint32_t j = 0; rc == 0 && j < n; j++) {
			index[distinct[j]] = j;
			rc = varint_append(tmp, j ? distinct[j] - distinct[j - 1] : distinct[0]);
		}
		unsigned width = bit_width(n - 1);
		size_t packed = 0;
		bool fits = packed_size_get(rows, width, &packed);
		assert(fits);
		(void)fits;
		if (rc != 0 || width == 0 || (rc = bytebuf_reserve(tmp, packed + 8)) != 0)
			continue;
		bit_writer w = { .dst = tmp->data + tmp->size };
		for (size_t j = 0; j < rows; j++)
			bit_writer_put(&w, index[v[j]], width);
		tmp->size = (size_t)(bit_writer_finish(&w) - tmp->data);
	}
	free(seen);
	free(index);
	free(distinct);
	return rc;
}

int codec_codes_encode_classed(bytebuf *out, const uint32_t *values, size_t count,
			       const uint32_t *classes)
{
	if (count > CODEC_COUNT_MAX)
		return -ENOMEM;
	codes_plan plain;
	codes_plan_make(&plain, values, count, LANE_U32);
	if (classes != NULL && count >= 2 && plain.size > 3) {
		bytebuf tmp = { 0 };
		int rc = codes_classed_build(&tmp, values, count, classes);
		if (rc == 0 && tmp.size < plain.size)
			rc = bytebuf_append(out, tmp.data, tmp.size);
		else if (rc == 0)
			rc = 1;
		bytebuf_free(&tmp);
		if (rc <= 0)
			return rc;
	}
	return codes_encode_lane(out, values, count, LANE_U32);
}

int codec_codes_decode_classed(const uint8_t *src, size_t size, uint32_t *values, size_t count,
			       const uint32_t *classes)
{
	if (size == 0 || src[0] != CODES_CLASSED)
		return codes_decode_lane(src, size, values, count, LANE_U32, CODES_WIDTH_MAX);
	const uint8_t *p = src + 1, *end = src + size;
	uint64_t class_count;
	if (classes == NULL || count == 0 || varint_read(&p, end, &class_count) != 0 ||
	    class_count == 0 || class_count > CODEC_CLASSES_MAX)
		return TALLY_E_CORRUPT;
	size_t first[CODEC_CLASSES_MAX + 1], next[CODEC_CLASSES_MAX], rows[CODEC_CLASSES_MAX];
	if (!classes_partition(classes, count, (uint32_t)class_count, first, next))
		return TALLY_E_CORRUPT;
	for (uint32_t k = 0; k < class_count; k++)
		rows[k] = first[k + 1] - first[k];
	uint64_t *dict = thread_scratch(count); /* every class's codes, back to back */
	if (dict == NULL)
		return -ENOMEM;
	size_t dict_first[CODEC_CLASSES_MAX], used = 0;
	uint64_t dict_count[CODEC_CLASSES_MAX] = { 0 };
	unsigned width[CODEC_CLASSES_MAX] = { 0 };
	bit_reader reader[CODEC_CLASSES_MAX];
	for (uint32_t k = 0; k < class_count; k++) {
		if (rows[k] == 0)
			continue;
		uint64_t n, code = 0;
		if (varint_read(&p, end, &n) != 0 || n == 0 || n > rows[k])
			return TALLY_E_CORRUPT;
		dict_first[k] = used;
		dict_count[k] = n;
		for (uint64_t j = 0; j < n; j++) {
			uint64_t step;
			if (varint_read(&p, end, &step) != 0 || (j != 0 && step == 0) ||
			    step > UINT32_MAX - code)
				return TALLY_E_CORRUPT;
			code += step;
			dict[used++] = code;
		}
		width[k] = bit_width(n - 1);
		size_t packed;
		if (!packed_size_get(rows[k], width[k], &packed) || packed > (size_t)(end - p))
			return TALLY_E_CORRUPT;
		reader[k] = (bit_reader){ .src = p, .size = packed };
		p += packed;
	}
	if (p != end)
		return TALLY_E_CORRUPT;
	for (size_t i = 0; i < count; i++) {
		uint32_t k = classes[i];
		uint64_t j = width[k] ? bit_reader_get(&reader[k], width[k], width_mask(width[k])) : 0;
		if (j >= dict_count[k])
			return TALLY_E_CORRUPT;
		values[i] = (uint32_t)dict[dict_first[k] + j];
	}
	for (uint32_t k = 0; k < class_count; k++)
		if (width[k] && !bit_reader_padding_is_zero(&reader[k]))
			return TALLY_E_CORRUPT;
	return 0;
}
