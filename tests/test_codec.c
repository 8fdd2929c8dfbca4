/*
 * test_codec.c — Description: pins the byte layouts of every column codec
 * (docs/codecs.md), round-trips each one on random and adversarial columns,
 * and feeds the decoders truncated, padded and randomly corrupted input.
 *
 * Randomness comes from splitmix64 seeded by $SEED, or by the clock when it
 * is unset; every test prints "test_codec seed=N" so a failure replays with
 * SEED=N build/tests/test_codec. Decoders always read from heap copies of
 * exactly the encoded size and write to arrays of exactly `count` values, so
 * ASan sees any access out of bounds.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "codec.h"
#include "tally.h"

/* ---- seeded randomness ------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Uniform enough in [0, n) for tests; n > 0. */
static uint64_t rng_below(uint64_t n)
{
	return rng_next() % n;
}

/* A random value of at most `bits` bits (0..64). */
static uint64_t rng_bits(unsigned bits)
{
	if (bits == 0)
		return 0;
	return bits >= 64 ? rng_next() : rng_next() & ((UINT64_C(1) << bits) - 1);
}

static void rng_init(void)
{
	const char *env = getenv("SEED");
	uint64_t seed;
	if (env != NULL && *env != '\0') {
		seed = strtoull(env, NULL, 0);
	} else {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		seed = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
		seed ^= (uint64_t)getpid() << 32;
	}
	fprintf(stderr, "test_codec seed=%llu (%s)\n", (unsigned long long)seed,
		criterion_current_test != NULL ? criterion_current_test->name : "?");
	rng_state = seed;
}

TestSuite(codec, .init = rng_init);

/* ---- helpers ------------------------------------------------------------------ */

static void *xmalloc(size_t size)
{
	void *p = malloc(size != 0 ? size : 1);
	cr_assert_not_null(p, "malloc(%zu)", size);
	return p;
}

static uint8_t *copy_exact(const uint8_t *src, size_t size)
{
	uint8_t *p = xmalloc(size);
	if (size != 0)
		memcpy(p, src, size);
	return p;
}

static void assert_bytes(const bytebuf *b, const uint8_t *expected, size_t size, const char *what)
{
	cr_assert_eq(b->size, size, "%s: encoded %zu bytes, expected %zu", what, b->size, size);
	for (size_t i = 0; i < size; i++)
		cr_assert_eq(b->data[i], expected[i], "%s: byte %zu is 0x%02x, expected 0x%02x",
			     what, i, b->data[i], expected[i]);
}

/* Decoders behind one signature: decode `count` values from [src, src+size)
 * into a fresh array of exactly count values; returns the decoder's code. */
typedef int (*decode_fn)(const uint8_t *src, size_t size, size_t count);

static int decode_time_any(const uint8_t *src, size_t size, size_t count)
{
	int64_t *values = xmalloc(count * sizeof *values);
	int rc = codec_time_decode(src, size, values, count);
	free(values);
	return rc;
}

static int decode_u64_any(const uint8_t *src, size_t size, size_t count)
{
	uint64_t *values = xmalloc(count * sizeof *values);
	int rc = codec_u64_decode(src, size, values, count);
	free(values);
	return rc;
}

static int decode_i64_any(const uint8_t *src, size_t size, size_t count)
{
	int64_t *values = xmalloc(count * sizeof *values);
	int rc = codec_i64_decode(src, size, values, count);
	free(values);
	return rc;
}

static int decode_u32_any(const uint8_t *src, size_t size, size_t count)
{
	uint32_t *values = xmalloc(count * sizeof *values);
	int rc = codec_u32_decode(src, size, values, count);
	free(values);
	return rc;
}

static int decode_u8_any(const uint8_t *src, size_t size, size_t count)
{
	uint8_t *values = xmalloc(count);
	int rc = codec_u8_decode(src, size, values, count);
	free(values);
	return rc;
}

static int decode_codes_any(const uint8_t *src, size_t size, size_t count)
{
	uint32_t *values = xmalloc(count * sizeof *values);
	int rc = codec_codes_decode(src, size, values, count);
	free(values);
	return rc;
}

static int decode_ids_any(const uint8_t *src, size_t size, size_t count)
{
	uint8_t *kinds = xmalloc(count);
	uint32_t *offsets = xmalloc((count + 1) * sizeof *offsets);
	bytebuf bytes = { 0 };
	int rc = codec_ids_decode(src, size, count, kinds, offsets, &bytes);
	if (rc == 0) {
		cr_assert_eq(offsets[0], 0);
		cr_assert_eq(offsets[count], bytes.size);
	}
	bytebuf_free(&bytes);
	free(offsets);
	free(kinds);
	return rc;
}

static int decode_block_zstd_any(const uint8_t *src, size_t size, size_t count)
{
	bytebuf out = { 0 };
	int rc = block_decompress(&out, src, size, BLOCK_CODEC_ZSTD, count);
	if (rc == 0)
		cr_assert_eq(out.size, count);
	bytebuf_free(&out);
	return rc;
}

/* Context columns for the decoders encoded against other columns, made
 * from the row count alone so any count works: classes 0..2, models 0..1,
 * small token counts. */
typedef struct rows_context {
	uint32_t *classes;
	uint32_t *models;
	uint64_t *tokens_in;
	uint64_t *tokens_out;
	codec_cost_context cost;
} rows_context;

static void rows_context_make(rows_context *c, size_t count)
{
	c->classes = xmalloc(count * sizeof *c->classes);
	c->models = xmalloc(count * sizeof *c->models);
	c->tokens_in = xmalloc(count * sizeof *c->tokens_in);
	c->tokens_out = xmalloc(count * sizeof *c->tokens_out);
	for (size_t i = 0; i < count; i++) {
		c->classes[i] = (uint32_t)(i % 3);
		c->models[i] = (uint32_t)(i % 2);
		c->tokens_in[i] = i * 7;
		c->tokens_out[i] = i * 3;
	}
	c->cost = (codec_cost_context){ c->classes, c->models, c->tokens_in, c->tokens_out };
}

static void rows_context_free(rows_context *c)
{
	free(c->classes);
	free(c->models);
	free(c->tokens_in);
	free(c->tokens_out);
}

static int decode_u64_classed_any(const uint8_t *src, size_t size, size_t count)
{
	rows_context c;
	rows_context_make(&c, count);
	uint64_t *values = xmalloc(count * sizeof *values);
	int rc = codec_u64_decode_classed(src, size, values, count, c.classes);
	free(values);
	rows_context_free(&c);
	return rc;
}

static int decode_codes_classed_any(const uint8_t *src, size_t size, size_t count)
{
	rows_context c;
	rows_context_make(&c, count);
	uint32_t *values = xmalloc(count * sizeof *values);
	int rc = codec_codes_decode_classed(src, size, values, count, c.classes);
	free(values);
	rows_context_free(&c);
	return rc;
}

static int decode_cost_any(const uint8_t *src, size_t size, size_t count)
{
	rows_context c;
	rows_context_make(&c, count);
	int64_t *values = xmalloc(count * sizeof *values);
	int rc = codec_cost_decode(src, size, values, count, &c.cost);
	free(values);
	rows_context_free(&c);
	return rc;
}

/* Runs fn on an exact-size heap copy of [src, src + size). */
static int decode_exact(decode_fn fn, const uint8_t *src, size_t size, size_t count)
{
	uint8_t *copy = copy_exact(src, size);
	int rc = fn(copy, size, count);
	free(copy);
	return rc;
}

/* The encoding decodes; every proper prefix and every one-byte extension of
 * it is TALLY_E_CORRUPT. */
static void check_truncation_and_trailing(const char *what, decode_fn fn, const bytebuf *encoded,
					  size_t count)
{
	cr_assert_eq(decode_exact(fn, encoded->data, encoded->size, count), 0,
		     "%s: the intact encoding must decode", what);
	for (size_t cut = 0; cut < encoded->size; cut++)
		cr_assert_eq(decode_exact(fn, encoded->data, cut, count), TALLY_E_CORRUPT,
			     "%s: prefix of %zu of %zu bytes accepted", what, cut, encoded->size);
	static const uint8_t extra[] = { 0x00, 0x01, 0x80, 0xff };
	uint8_t *longer = xmalloc(encoded->size + 1);
	if (encoded->size != 0)
		memcpy(longer, encoded->data, encoded->size);
	for (size_t i = 0; i < sizeof extra; i++) {
		longer[encoded->size] = extra[i];
		cr_assert_eq(decode_exact(fn, longer, encoded->size + 1, count), TALLY_E_CORRUPT,
			     "%s: trailing byte 0x%02x accepted", what, extra[i]);
	}
	free(longer);
}

/* Random byte damage, cuts and wrong counts: the decoder returns 0 or
 * TALLY_E_CORRUPT and (under ASan) touches nothing out of bounds. */
static void check_corruption_survived(const char *what, decode_fn fn, const bytebuf *encoded,
				      size_t count, int rounds)
{
	uint8_t *copy = xmalloc(encoded->size);
	for (int round = 0; round < rounds; round++) {
		memcpy(copy, encoded->data, encoded->size);
		size_t size = encoded->size;
		size_t damage = 1 + rng_below(4);
		for (size_t d = 0; d < damage && size != 0; d++) {
			size_t at = rng_below(size);
			if (rng_below(2))
				copy[at] ^= (uint8_t)(1u << rng_below(8));
			else
				copy[at] = (uint8_t)rng_next();
		}
		if (rng_below(4) == 0 && size != 0)
			size = rng_below(size);
		size_t n = count;
		if (rng_below(4) == 0)
			n = count + rng_below(5) - (count >= 2 ? 2 : count);
		int rc = decode_exact(fn, copy, size, n);
		cr_assert(rc == 0 || rc == TALLY_E_CORRUPT, "%s: round %d returned %d", what, round, rc);
	}
	free(copy);
}

/* ---- int64 / uint64 column generators -------------------------------------------- */

enum { SHAPE_COUNT = 11 };

/* Fills values with one of SHAPE_COUNT shapes that stress different paths. */
static void values_fill(uint64_t *values, size_t count, unsigned shape)
{
	static const uint64_t extremes[] = {
		0, 1, 2, UINT64_MAX, UINT64_MAX - 1, (uint64_t)INT64_MAX, (uint64_t)INT64_MIN,
		(uint64_t)INT64_MIN + 1, UINT64_C(1) << 56, (UINT64_C(1) << 56) - 1,
	};
	uint64_t base = rng_next();
	unsigned width = (unsigned)rng_below(65);
	uint64_t t = UINT64_C(1700000000000000) + rng_below(UINT64_C(1) << 40);
	uint64_t rare = 2 + rng_below(600); /* shape 10: one outlier in about this many rows */
	for (size_t i = 0; i < count; i++) {
		switch (shape) {
		case 0: values[i] = rng_next(); break;                          /* anything */
		case 1: values[i] = base; break;                                /* all equal */
		case 2: values[i] = rng_bits(width); break;                     /* random width */
		case 3: values[i] = base + rng_bits(width); break;              /* FOR-friendly, may wrap */
		case 4: values[i] = i % 2 ? UINT64_MAX : 0; break;              /* alternating extremes */
		case 5: values[i] = i % 2 ? (uint64_t)INT64_MAX : (uint64_t)INT64_MIN; break;
		case 6: values[i] = extremes[rng_below(sizeof extremes / sizeof extremes[0])]; break;
		case 7: values[i] = base + i; break;                            /* monotonic, may wrap */
		case 8:                                                         /* timestamps with jitter */
			t += rng_below(2000000);
			values[i] = t - rng_below(1000);
			break;
		case 9: values[i] = base - i * (uint64_t)width; break;          /* decreasing steps */
		default:                                                        /* rare outliers */
			values[i] = (base >> 40) + rng_bits(width / 4) +
				    (rng_below(rare) ? 0 : rng_bits(width / 4 + 1 + rng_below(12)));
			break;
		}
	}
}

static size_t random_count(void)
{
	switch (rng_below(4)) {
	case 0: return rng_below(3);       /* 0, 1, 2 */
	case 1: return rng_below(17);
	case 2: return rng_below(300);
	default: return rng_below(5000);
	}
}

/* ---- bytebuf ---------------------------------------------------------------------- */

Test(codec, bytebuf_appends_resets_and_frees)
{
	bytebuf b = { 0 };
	cr_assert_eq(bytebuf_append(&b, NULL, 0), 0, "empty append is a no-op");
	cr_assert_eq(b.size, 0);
	uint8_t chunk[100];
	for (size_t i = 0; i < sizeof chunk; i++)
		chunk[i] = (uint8_t)i;
	for (int i = 0; i < 50; i++)
		cr_assert_eq(bytebuf_append(&b, chunk, sizeof chunk), 0);
	cr_assert_eq(b.size, 5000);
	cr_assert_geq(b.capacity, 5000);
	for (size_t i = 0; i < b.size; i++)
		cr_assert_eq(b.data[i], (uint8_t)(i % 100), "byte %zu", i);
	size_t capacity = b.capacity;
	bytebuf_reset(&b);
	cr_assert_eq(b.size, 0);
	cr_assert_eq(b.capacity, capacity, "reset keeps the allocation");
	bytebuf_free(&b);
	cr_assert_null(b.data);
	cr_assert_eq(b.size, 0);
	cr_assert_eq(b.capacity, 0);
	cr_assert_eq(bytebuf_append(&b, chunk, 3), 0, "reusable after free");
	cr_assert_eq(b.size, 3);
	bytebuf_free(&b);
}

Test(codec, bytebuf_reserve_overflow_is_enomem_and_leaves_buffer)
{
	bytebuf b = { 0 };
	cr_assert_eq(bytebuf_append(&b, "abc", 3), 0);
	uint8_t *data = b.data;
	size_t capacity = b.capacity;
	cr_assert_eq(bytebuf_reserve(&b, SIZE_MAX), -ENOMEM);
	cr_assert_eq(bytebuf_reserve(&b, SIZE_MAX - 2), -ENOMEM, "size + extra wraps to 0");
	cr_assert_eq(bytebuf_append(&b, "x", SIZE_MAX - 1), -ENOMEM);
	cr_assert_eq(b.data, data);
	cr_assert_eq(b.size, 3);
	cr_assert_eq(b.capacity, capacity);
	cr_assert_eq(memcmp(b.data, "abc", 3), 0);
	bytebuf_free(&b);
}

/* ---- varints and zigzag ------------------------------------------------------------- */

Test(codec, varint_layout_is_leb128)
{
	struct {
		uint64_t value;
		uint8_t bytes[VARINT_SIZE_MAX];
		size_t size;
	} cases[] = {
		{ 0, { 0x00 }, 1 },
		{ 1, { 0x01 }, 1 },
		{ 127, { 0x7f }, 1 },
		{ 128, { 0x80, 0x01 }, 2 },
		{ 300, { 0xac, 0x02 }, 2 },
		{ 16383, { 0xff, 0x7f }, 2 },
		{ 16384, { 0x80, 0x80, 0x01 }, 3 },
		{ UINT64_MAX, { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 }, 10 },
	};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		uint8_t dst[VARINT_SIZE_MAX];
		size_t n = varint_put(dst, cases[c].value);
		cr_assert_eq(n, cases[c].size, "size of %llu", (unsigned long long)cases[c].value);
		cr_assert_eq(memcmp(dst, cases[c].bytes, n), 0, "bytes of %llu",
			     (unsigned long long)cases[c].value);
		bytebuf b = { 0 };
		cr_assert_eq(varint_append(&b, cases[c].value), 0);
		assert_bytes(&b, cases[c].bytes, cases[c].size, "varint_append");
		bytebuf_free(&b);
	}
}

Test(codec, varint_round_trips_every_bit_length)
{
	bytebuf b = { 0 };
	uint64_t values[65 * 4];
	size_t count = 0;
	for (unsigned bits = 0; bits <= 64; bits++) {
		uint64_t top = bits == 0 ? 0 : UINT64_C(1) << (bits - 1);
		values[count++] = top;
		values[count++] = bits == 64 ? UINT64_MAX : (top << 1) - (bits != 0);
		values[count++] = top | rng_bits(bits ? bits - 1 : 0);
		values[count++] = rng_bits(bits);
	}
	for (size_t i = 0; i < count; i++)
		cr_assert_eq(varint_append(&b, values[i]), 0);
	const uint8_t *p = b.data, *end = b.data + b.size;
	for (size_t i = 0; i < count; i++) {
		const uint8_t *before = p;
		uint64_t v;
		cr_assert_eq(varint_get(&p, end, &v), 0, "value %zu", i);
		cr_assert_eq(v, values[i], "value %zu", i);
		uint8_t dst[VARINT_SIZE_MAX];
		cr_assert_eq((size_t)(p - before), varint_put(dst, values[i]), "advance of value %zu", i);
	}
	cr_assert_eq(p, end);
	bytebuf_free(&b);
}

Test(codec, varint_get_rejects_truncated_long_overflowing_and_non_minimal)
{
	struct {
		const char *why;
		uint8_t bytes[12];
		size_t size;
	} bad[] = {
		{ "empty", { 0 }, 0 },
		{ "truncated", { 0x80 }, 1 },
		{ "truncated after 9", { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff }, 9 },
		{ "11 bytes", { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x00 }, 11 },
		{ "bit 64 set", { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02 }, 10 },
		{ "10th byte 0x7f", { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f }, 10 },
		{ "non-minimal zero", { 0x80, 0x00 }, 2 },
		{ "non-minimal one", { 0x81, 0x80, 0x00 }, 3 },
	};
	for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
		uint8_t *copy = copy_exact(bad[c].bytes, bad[c].size);
		const uint8_t *p = copy;
		uint64_t v = 12345;
		cr_assert_eq(varint_get(&p, copy + bad[c].size, &v), TALLY_E_CORRUPT, "%s", bad[c].why);
		cr_assert_eq(p, copy, "%s: *p unchanged on error", bad[c].why);
		free(copy);
	}
	/* The same rules with 8+ bytes readable (the one-load fast path). */
	const uint8_t roomy[][12] = {
		{ 0x80, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
		{ 0xff, 0xff, 0xff, 0x80, 0x00, 0, 0, 0, 0, 0, 0, 0 },
		{ 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0, 0, 0, 0 },
		{ 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0 },
		{ 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0 },
	};
	for (size_t c = 0; c < sizeof roomy / sizeof roomy[0]; c++) {
		const uint8_t *q = roomy[c];
		uint64_t v;
		cr_assert_eq(varint_get(&q, roomy[c] + 12, &v), TALLY_E_CORRUPT, "roomy case %zu", c);
		cr_assert_eq(q, roomy[c]);
	}
	const uint8_t max[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x42 };
	const uint8_t *p = max;
	uint64_t v;
	cr_assert_eq(varint_get(&p, max + sizeof max, &v), 0);
	cr_assert_eq(v, UINT64_MAX);
	cr_assert_eq(p, max + 10, "stops after the last byte, leaves the rest");
}

Test(codec, zigzag_maps_small_magnitudes_to_small_codes)
{
	cr_assert_eq(zigzag_encode(0), 0);
	cr_assert_eq(zigzag_encode(-1), 1);
	cr_assert_eq(zigzag_encode(1), 2);
	cr_assert_eq(zigzag_encode(-2), 3);
	cr_assert_eq(zigzag_encode(INT64_MAX), UINT64_MAX - 1);
	cr_assert_eq(zigzag_encode(INT64_MIN), UINT64_MAX);
	for (int i = 0; i < 10000; i++) {
		int64_t v = (int64_t)rng_next();
		cr_assert_eq(zigzag_decode(zigzag_encode(v)), v);
	}
	cr_assert_eq(zigzag_decode(UINT64_MAX), INT64_MIN);
}

/* ---- time ----------------------------------------------------------------------------- */

static void time_round_trip(const int64_t *values, size_t count, const char *what)
{
	bytebuf b = { 0 };
	cr_assert_eq(bytebuf_append(&b, "PFX", 3), 0);
	cr_assert_eq(codec_time_encode(&b, values, count), 0);
	cr_assert_eq(memcmp(b.data, "PFX", 3), 0, "%s: encoder appends", what);
	uint8_t *copy = copy_exact(b.data + 3, b.size - 3);
	int64_t *decoded = xmalloc(count * sizeof *decoded);
	cr_assert_eq(codec_time_decode(copy, b.size - 3, decoded, count), 0, "%s: count %zu", what,
		     count);
	for (size_t i = 0; i < count; i++)
		cr_assert_eq(decoded[i], values[i], "%s: row %zu of %zu", what, i, count);
	free(decoded);
	free(copy);
	bytebuf_free(&b);
}

Test(codec, time_layout_is_first_value_first_delta_then_delta_changes)
{
	const int64_t values[] = { 1000, 2000, 3000, 4000, 4999 };
	bytebuf b = { 0 };
	cr_assert_eq(codec_time_encode(&b, values, 5), 0);
	/* Mode 00 (delta of delta): zigzag(1000) = 2000 = 0x7d0 -> d0 0f; delta
	 * 1000 again; two zero changes; then -1 -> zigzag 1. The delta mode
	 * (01 d0 0f, then FOR 01 e7 07 01 07) ties at 8 bytes, and a tie keeps
	 * mode 00. */
	const uint8_t expected[] = { 0x00, 0xd0, 0x0f, 0xd0, 0x0f, 0x00, 0x00, 0x01 };
	assert_bytes(&b, expected, sizeof expected, "time");
	bytebuf_free(&b);
}

Test(codec, time_empty_column_is_the_mode_byte)
{
	bytebuf b = { 0 };
	cr_assert_eq(codec_time_encode(&b, NULL, 0), 0);
	cr_assert_eq(b.size, 1);
	cr_assert_eq(b.data[0], 0x00);
	const uint8_t zeros[2] = { 0, 0 };
	cr_assert_eq(codec_time_decode(zeros, 1, NULL, 0), 0);
	cr_assert_eq(codec_time_decode(zeros, 0, NULL, 0), TALLY_E_CORRUPT, "no mode byte");
	cr_assert_eq(decode_exact(decode_time_any, zeros, 2, 0), TALLY_E_CORRUPT, "trailing byte");
	cr_assert_eq(decode_exact(decode_time_any, zeros, 1, 1), TALLY_E_CORRUPT, "missing row");
	const uint8_t bad_mode[2] = { 0x02, 0x00 };
	cr_assert_eq(decode_exact(decode_time_any, bad_mode, 2, 1), TALLY_E_CORRUPT, "unknown mode");
	const uint8_t delta_one_row[3] = { 0x01, 0x02, 0x02 };
	cr_assert_eq(decode_exact(decode_time_any, delta_one_row, 3, 1), TALLY_E_CORRUPT,
		     "the delta mode needs two rows");
	bytebuf_free(&b);
}

Test(codec, time_random_arrivals_take_the_delta_mode_and_are_smaller)
{
	/* Exponential gaps of ~3.5 s at microsecond resolution: the shape of a
	 * busy tenant's day. Bit-packed deltas beat delta-of-delta varints. */
	enum { ROWS = 20000 };
	int64_t *values = xmalloc(ROWS * sizeof *values);
	uint64_t state = 42;
	int64_t t = INT64_C(1790000000000000);
	for (size_t i = 0; i < ROWS; i++) {
		state = state * 6364136223846793005ull + 1442695040888963407ull;
		double u = ((double)(state >> 11) + 0.5) / 9007199254740992.0;
		t += (int64_t)(-log(u) * 3.5e6);
		values[i] = t;
	}
	bytebuf b = { 0 };
	cr_assert_eq(codec_time_encode(&b, values, ROWS), 0);
	cr_expect_eq(b.data[0], 0x01, "delta mode");
	cr_expect_lt(b.size, (size_t)ROWS * 7 / 2, "%zu bytes: under 3.5 bytes per row", b.size);
	bytebuf_free(&b);
	time_round_trip(values, ROWS, "random arrivals");
	free(values);
}

Test(codec, time_steady_rhythm_costs_a_constant)
{
	enum { ROWS = 1000 };
	int64_t values[ROWS];
	for (size_t i = 0; i < ROWS; i++)
		values[i] = INT64_C(1700000000000000) + (int64_t)i * TALLY_US_PER_SECOND;
	bytebuf b = { 0 };
	cr_assert_eq(codec_time_encode(&b, values, ROWS), 0);
	uint8_t first[VARINT_SIZE_MAX], delta[VARINT_SIZE_MAX];
	/* The delta mode: mode byte, first value, then a CONSTANT u64 column
	 * (mode 00, varint 1e6) for the 999 equal deltas. */
	size_t expected = 1 + varint_put(first, zigzag_encode(values[0])) + 1 +
			  varint_put(delta, TALLY_US_PER_SECOND);
	cr_assert_eq(b.size, expected);
	cr_assert_eq(b.data[0], 0x01);
	bytebuf_free(&b);
	time_round_trip(values, ROWS, "steady");
}

Test(codec, time_round_trips_extremes)
{
	const int64_t one_min[] = { INT64_MIN };
	const int64_t one_max[] = { INT64_MAX };
	const int64_t alternating[] = { INT64_MIN, INT64_MAX, INT64_MIN, INT64_MAX, 0, INT64_MIN,
					-1, INT64_MAX, 1, INT64_MIN };
	const int64_t descending[] = { INT64_MAX, 0, INT64_MIN };
	time_round_trip(one_min, 1, "INT64_MIN");
	time_round_trip(one_max, 1, "INT64_MAX");
	time_round_trip(alternating, sizeof alternating / sizeof alternating[0], "alternating");
	time_round_trip(descending, 3, "descending");
	bytebuf b = { 0 };
	cr_assert_eq(codec_time_encode(&b, one_min, 1), 0);
	cr_assert_eq(b.size, 11, "mode byte + zigzag(INT64_MIN) = UINT64_MAX in 10 bytes");
	bytebuf_free(&b);
}

Test(codec, time_round_trips_random_columns)
{
	for (int round = 0; round < 400; round++) {
		size_t count = random_count();
		uint64_t *values = xmalloc(count * sizeof *values);
		values_fill(values, count, (unsigned)(round % SHAPE_COUNT));
		time_round_trip((const int64_t *)values, count, "random");
		free(values);
	}
}

Test(codec, time_decode_rejects_truncation_trailing_and_survives_corruption)
{
	for (unsigned shape = 0; shape < SHAPE_COUNT; shape++) {
		size_t count = 1 + rng_below(40);
		uint64_t values[40];
		values_fill(values, count, shape);
		bytebuf b = { 0 };
		cr_assert_eq(codec_time_encode(&b, (const int64_t *)values, count), 0);
		check_truncation_and_trailing("time", decode_time_any, &b, count);
		check_corruption_survived("time", decode_time_any, &b, count, 300);
		bytebuf_free(&b);
	}
}

/* ---- u64 / i64 / u32 ---------------------------------------------------------------- */

/* The u64 encoder's choice, recomputed the slow obvious way. */
static void u64_oracle(const uint64_t *values, size_t count, uint8_t *mode, size_t *size)
{
	if (count == 0) {
		*mode = 2;
		*size = 1;
		return;
	}
	uint8_t scratch[VARINT_SIZE_MAX];
	uint64_t min = values[0], max = values[0];
	size_t varint_total = 1;
	for (size_t i = 0; i < count; i++) {
		min = values[i] < min ? values[i] : min;
		max = values[i] > max ? values[i] : max;
		varint_total += varint_put(scratch, values[i]);
	}
	size_t min_size = varint_put(scratch, min);
	if (min == max) {
		*mode = 0;
		*size = 1 + min_size;
		return;
	}
	unsigned width = 0;
	while (width < 64 && ((max - min) >> width) != 0)
		width++;
	size_t for_size = 1 + min_size + 1 + (count * width + 7) / 8;
	*mode = for_size <= varint_total ? 1 : 2;
	*size = for_size <= varint_total ? for_size : varint_total;
	/* PATCHED (mode 4): the low w bits of every value - min packed, then for
	 * each value needing more, the gap since the previous patched row and
	 * its high part; w from 1 to 8 bits below the FOR width, 16+ rows. */
	for (unsigned step = 1; step <= 8 && step <= width && count >= 16; step++) {
		unsigned w = width - step;
		size_t patches = 0, bytes = 0, previous = 0;
		for (size_t i = 0; i < count; i++) {
			uint64_t high = (values[i] - min) >> w;
			if (!high)
				continue;
			bytes += varint_put(scratch, i - previous) + varint_put(scratch, high);
			previous = i + 1;
			patches++;
		}
		size_t patched = 1 + min_size + 1 + varint_put(scratch, patches) +
				 (count * w + 7) / 8 + bytes;
		if (patched < *size) {
			*mode = 4;
			*size = patched;
		}
	}
	/* SPARSE (mode 3) when some rows are zero and some are not, and it is
	 * strictly smaller: k, a bitmap, the minimum non-zero, width, packed. */
	size_t nonzero = 0;
	uint64_t min_nonzero = UINT64_MAX;
	for (size_t i = 0; i < count; i++)
		if (values[i]) {
			nonzero++;
			min_nonzero = values[i] < min_nonzero ? values[i] : min_nonzero;
		}
	if (nonzero == 0 || nonzero == count)
		return;
	unsigned sparse_width = 0;
	while (sparse_width < 64 && ((max - min_nonzero) >> sparse_width) != 0)
		sparse_width++;
	size_t sparse = 1 + varint_put(scratch, nonzero) + (count + 7) / 8 +
			varint_put(scratch, min_nonzero) + 1 + (nonzero * sparse_width + 7) / 8;
	if (sparse < *size) {
		*mode = 3;
		*size = sparse;
	}
}

static void u64_round_trip(const uint64_t *values, size_t count, const char *what)
{
	bytebuf b = { 0 };
	cr_assert_eq(bytebuf_append(&b, "P", 1), 0);
	cr_assert_eq(codec_u64_encode(&b, values, count), 0);
	cr_assert_eq(b.data[0], 'P', "%s: encoder appends", what);
	uint8_t mode;
	size_t size;
	u64_oracle(values, count, &mode, &size);
	cr_assert_eq(b.size - 1, size, "%s: size %zu, smallest is %zu", what, b.size - 1, size);
	cr_assert_eq(b.data[1], mode, "%s: mode %u, expected %u", what, b.data[1], mode);
	uint8_t *copy = copy_exact(b.data + 1, b.size - 1);
	uint64_t *decoded = xmalloc(count * sizeof *decoded);
	cr_assert_eq(codec_u64_decode(copy, b.size - 1, decoded, count), 0, "%s", what);
	for (size_t i = 0; i < count; i++)
		cr_assert_eq(decoded[i], values[i], "%s: row %zu", what, i);
	free(decoded);
	free(copy);
	bytebuf_free(&b);
}

Test(codec, u64_constant_column_is_mode_and_one_varint)
{
	uint64_t values[1000];
	for (size_t i = 0; i < 1000; i++)
		values[i] = 5;
	bytebuf b = { 0 };
	cr_assert_eq(codec_u64_encode(&b, values, 1000), 0);
	const uint8_t expected[] = { 0x00, 0x05 };
	assert_bytes(&b, expected, sizeof expected, "constant 5");
	bytebuf_reset(&b);
	uint64_t max = UINT64_MAX;
	cr_assert_eq(codec_u64_encode(&b, &max, 1), 0);
	const uint8_t expected_max[] = { 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
	assert_bytes(&b, expected_max, sizeof expected_max, "constant UINT64_MAX");
	bytebuf_free(&b);
	u64_round_trip(values, 1000, "constant");
}

Test(codec, u64_empty_column_is_one_varint_mode_byte)
{
	bytebuf b = { 0 };
	cr_assert_eq(codec_u64_encode(&b, NULL, 0), 0);
	const uint8_t expected[] = { 0x02 };
	assert_bytes(&b, expected, 1, "count 0");
	cr_assert_eq(decode_exact(decode_u64_any, b.data, 1, 0), 0);
	cr_assert_eq(decode_exact(decode_u64_any, b.data, 0, 0), TALLY_E_CORRUPT, "no mode byte");
	cr_assert_eq(decode_exact(decode_u64_any, b.data, 1, 1), TALLY_E_CORRUPT, "a missing row");
	bytebuf_free(&b);
}

Test(codec, u64_for_layout_packs_offsets_from_min_little_endian)
{
	uint64_t values[16];
	for (size_t i = 0; i < 16; i++)
		values[i] = 1000 + i;
	bytebuf b = { 0 };
	cr_assert_eq(codec_u64_encode(&b, values, 16), 0);
	/* FOR, min 1000 (e8 07), width 4, then nibbles 0..15, low nibble first. */
	const uint8_t expected[] = { 0x01, 0xe8, 0x07, 0x04, 0x10, 0x32, 0x54, 0x76,
				     0x98, 0xba, 0xdc, 0xfe };
	assert_bytes(&b, expected, sizeof expected, "FOR");
	bytebuf_free(&b);
}

Test(codec, u64_varint_layout_wins_with_one_outlier)
{
	const uint64_t values[] = { 1, 2, 3, UINT64_MAX };
	bytebuf b = { 0 };
	cr_assert_eq(codec_u64_encode(&b, values, 4), 0);
	/* FOR would need width 64: 1 + 1 + 1 + 32 = 35 bytes; VARINT is 14. */
	const uint8_t expected[] = { 0x02, 0x01, 0x02, 0x03, 0xff, 0xff, 0xff, 0xff,
				     0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
	assert_bytes(&b, expected, sizeof expected, "VARINT");
	bytebuf_free(&b);
}

Test(codec, u64_for_width_64_round_trips)
{
	uint64_t values[8] = { UINT64_C(1) << 56 };
	for (size_t i = 1; i < 8; i++)
		values[i] = (UINT64_C(1) << 63) | rng_next();
	values[7] = UINT64_MAX;
	bytebuf b = { 0 };
	cr_assert_eq(codec_u64_encode(&b, values, 8), 0);
	cr_assert_eq(b.data[0], 1, "FOR");
	cr_assert_eq(b.data[10], 64, "width byte after the 9-byte min varint");
	cr_assert_eq(b.size, 1 + 9 + 1 + 64, "FOR 75 bytes; VARINT would be 1 + 9 + 7 * 10");
	bytebuf_free(&b);
	u64_round_trip(values, 8, "width 64");
}

Test(codec, u64_picks_the_smallest_mode_on_random_columns)
{
	for (int round = 0; round < 600; round++) {
		size_t count = random_count();
		uint64_t *values = xmalloc(count * sizeof *values);
		values_fill(values, count, (unsigned)(round % SHAPE_COUNT));
		u64_round_trip(values, count, "random");
		free(values);
	}
}

Test(codec, u64_decode_rejects_impossible_values)
{
	struct {
		const char *why;
		uint8_t bytes[16];
		size_t size;
		size_t count;
	} bad[] = {
		{ "unknown mode", { 0x03, 0x00 }, 2, 1 },
		{ "FOR width 65", { 0x01, 0x00, 65 }, 3, 0 },
		{ "FOR min + delta wraps", { 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					     0x01, 0x01, 0x02 }, 13, 2 },
		{ "FOR packed bytes short", { 0x01, 0x00, 0x08, 0x01 }, 4, 2 },
		{ "FOR padding bits set", { 0x01, 0x00, 0x01, 0x05 }, 4, 2 },
		{ "FOR width missing", { 0x01, 0x00 }, 2, 1 },
		{ "CONSTANT non-minimal varint", { 0x00, 0x80, 0x00 }, 3, 1 },
		{ "VARINT count larger than bytes", { 0x02, 0x01 }, 2, 2 },
		{ "VARINT overlong", { 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
				       0x01 }, 12, 1 },
	};
	for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++)
		cr_assert_eq(decode_exact(decode_u64_any, bad[c].bytes, bad[c].size, bad[c].count),
			     TALLY_E_CORRUPT, "%s", bad[c].why);
	/* Width 0 FOR is never written but is well formed. */
	const uint8_t for_zero[] = { 0x01, 0x07, 0x00 };
	uint64_t out[3];
	cr_assert_eq(codec_u64_decode(for_zero, 3, out, 3), 0);
	cr_assert_eq(out[2], 7);
}

Test(codec, u64_decode_rejects_truncation_trailing_and_survives_corruption)
{
	for (unsigned shape = 0; shape < SHAPE_COUNT; shape++) {
		size_t count = 1 + rng_below(40);
		uint64_t values[40];
		values_fill(values, count, shape);
		bytebuf b = { 0 };
		cr_assert_eq(codec_u64_encode(&b, values, count), 0);
		check_truncation_and_trailing("u64", decode_u64_any, &b, count);
		check_corruption_survived("u64", decode_u64_any, &b, count, 300);
		bytebuf_free(&b);
	}
}

Test(codec, i64_zigzags_then_uses_u64_layout)
{
	const int64_t minus_one[] = { -1, -1, -1 };
	bytebuf b = { 0 };
	cr_assert_eq(codec_i64_encode(&b, minus_one, 3), 0);
	const uint8_t expected_constant[] = { 0x00, 0x01 };
	assert_bytes(&b, expected_constant, 2, "constant -1");
	bytebuf_reset(&b);
	const int64_t extremes[] = { INT64_MIN, INT64_MAX };
	cr_assert_eq(codec_i64_encode(&b, extremes, 2), 0);
	/* zigzag: UINT64_MAX, UINT64_MAX - 1 -> FOR min UINT64_MAX - 1, width 1, bits 01. */
	const uint8_t expected_for[] = { 0x01, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					 0x01, 0x01, 0x01 };
	assert_bytes(&b, expected_for, sizeof expected_for, "INT64_MIN, INT64_MAX");
	bytebuf_free(&b);
}

Test(codec, i64_round_trips_random_and_extreme_columns)
{
	for (int round = 0; round < 300; round++) {
		size_t count = random_count();
		uint64_t *bits = xmalloc(count * sizeof *bits);
		values_fill(bits, count, (unsigned)(round % SHAPE_COUNT));
		int64_t *values = xmalloc(count * sizeof *values);
		memcpy(values, bits, count * sizeof *values);
		bytebuf b = { 0 };
		cr_assert_eq(codec_i64_encode(&b, values, count), 0);
		int64_t *decoded = xmalloc(count * sizeof *decoded);
		uint8_t *copy = copy_exact(b.data, b.size);
		cr_assert_eq(codec_i64_decode(copy, b.size, decoded, count), 0);
		for (size_t i = 0; i < count; i++)
			cr_assert_eq(decoded[i], values[i], "row %zu", i);
		if (round < 20) {
			check_truncation_and_trailing("i64", decode_i64_any, &b, count);
			check_corruption_survived("i64", decode_i64_any, &b, count, 100);
		}
		free(copy);
		free(decoded);
		free(values);
		free(bits);
		bytebuf_free(&b);
	}
}

Test(codec, u32_round_trips_and_rejects_values_above_uint32_max)
{
	for (int round = 0; round < 300; round++) {
		size_t count = random_count();
		uint32_t *values = xmalloc(count * sizeof *values);
		unsigned width = (unsigned)rng_below(33);
		for (size_t i = 0; i < count; i++)
			values[i] = round % 3 == 0 ? (i % 2 ? UINT32_MAX : 0) : (uint32_t)rng_bits(width);
		bytebuf b = { 0 };
		cr_assert_eq(codec_u32_encode(&b, values, count), 0);
		uint32_t *decoded = xmalloc(count * sizeof *decoded);
		uint8_t *copy = copy_exact(b.data, b.size);
		cr_assert_eq(codec_u32_decode(copy, b.size, decoded, count), 0);
		for (size_t i = 0; i < count; i++)
			cr_assert_eq(decoded[i], values[i], "row %zu", i);
		if (round < 10 && count > 0) {
			check_truncation_and_trailing("u32", decode_u32_any, &b, count);
			check_corruption_survived("u32", decode_u32_any, &b, count, 100);
		}
		free(copy);
		free(decoded);
		free(values);
		bytebuf_free(&b);
	}
	/* The same value as a u64 column in each mode: 2^32 does not fit. */
	const uint64_t big_constant[] = { UINT64_C(1) << 32, UINT64_C(1) << 32 };
	const uint64_t big_for[] = { UINT32_MAX, UINT64_C(1) << 32, UINT32_MAX, UINT32_MAX };
	const uint64_t big_varint[] = { 0, UINT64_C(1) << 40 };
	const uint64_t *columns[] = { big_constant, big_for, big_varint };
	const size_t counts[] = { 2, 4, 2 };
	for (size_t c = 0; c < 3; c++) {
		bytebuf b = { 0 };
		cr_assert_eq(codec_u64_encode(&b, columns[c], counts[c]), 0);
		cr_assert_eq(b.data[0], c, "mode %zu", c);
		cr_assert_eq(decode_exact(decode_u32_any, b.data, b.size, counts[c]), TALLY_E_CORRUPT,
			     "mode %zu", c);
		cr_assert_eq(decode_exact(decode_u64_any, b.data, b.size, counts[c]), 0);
		bytebuf_free(&b);
	}
}

/* ---- codes and u8 ---------------------------------------------------------------------- */

/* The bit layout, one bit at a time: the oracle for the packers. */
static void bits_oracle(const uint64_t *values, size_t count, unsigned width, uint8_t *dst)
{
	memset(dst, 0, (count * width + 7) / 8);
	for (size_t i = 0; i < count; i++)
		for (unsigned bit = 0; bit < width; bit++)
			if ((values[i] >> bit) & 1) {
				size_t at = i * width + bit;
				dst[at / 8] |= (uint8_t)(1u << (at % 8));
			}
}

Test(codec, codes_layout_is_width_then_little_endian_bits)
{
	const uint32_t values[] = { 1, 2, 3 };
	bytebuf b = { 0 };
	cr_assert_eq(codec_codes_encode(&b, values, 3), 0);
	const uint8_t expected[] = { 0x02, 0x39 }; /* 01 | 10 << 2 | 11 << 4 */
	assert_bytes(&b, expected, sizeof expected, "codes 1,2,3");
	bytebuf_reset(&b);
	const uint32_t zeros[5] = { 0 };
	cr_assert_eq(codec_codes_encode(&b, zeros, 5), 0);
	const uint8_t expected_zero[] = { 0x00 };
	assert_bytes(&b, expected_zero, 1, "all zero");
	bytebuf_reset(&b);
	cr_assert_eq(codec_codes_encode(&b, NULL, 0), 0);
	assert_bytes(&b, expected_zero, 1, "count 0");
	cr_assert_eq(decode_exact(decode_codes_any, b.data, 1, 0), 0);
	bytebuf_reset(&b);
	const uint32_t max[] = { UINT32_MAX, 0 };
	cr_assert_eq(codec_codes_encode(&b, max, 2), 0);
	const uint8_t expected_max[] = { 32, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0 };
	assert_bytes(&b, expected_max, sizeof expected_max, "width 32");
	bytebuf_free(&b);
}

Test(codec, codes_match_the_bit_oracle_at_every_width)
{
	for (int round = 0; round < 400; round++) {
		unsigned width = (unsigned)(round % 33);
		size_t count = random_count();
		uint32_t *values = xmalloc(count * sizeof *values);
		uint64_t *wide = xmalloc(count * sizeof *wide);
		for (size_t i = 0; i < count; i++) {
			values[i] = (uint32_t)rng_bits(width);
			if (width != 0 && i == count / 2)
				values[i] |= UINT32_C(1) << (width - 1); /* the width is reached */
			wide[i] = values[i];
		}
		/* Rows all equal and non-zero may be CONSTANT (tested on its own):
		 * make row 0 differ, keeping the width (row count / 2 has it). */
		bool same = count >= 2;
		for (size_t i = 1; i < count; i++)
			same &= values[i] == values[0];
		if (same && values[0] != 0)
			wide[0] = values[0] ^= 1;
		unsigned expected_width = count == 0 ? 0 : width;
		size_t packed = (count * expected_width + 7) / 8;
		bytebuf b = { 0 };
		cr_assert_eq(codec_codes_encode(&b, values, count), 0);
		cr_assert_eq(b.size, 1 + packed, "width %u count %zu", width, count);
		cr_assert_eq(b.data[0], expected_width);
		uint8_t *oracle = xmalloc(packed);
		bits_oracle(wide, count, expected_width, oracle);
		cr_assert_eq(memcmp(b.data + 1, oracle, packed), 0, "width %u count %zu", width, count);
		uint32_t *decoded = xmalloc(count * sizeof *decoded);
		uint8_t *copy = copy_exact(b.data, b.size);
		cr_assert_eq(codec_codes_decode(copy, b.size, decoded, count), 0);
		for (size_t i = 0; i < count; i++)
			cr_assert_eq(decoded[i], values[i], "width %u row %zu", width, i);
		if (round < 33 && count > 0) {
			check_truncation_and_trailing("codes", decode_codes_any, &b, count);
			check_corruption_survived("codes", decode_codes_any, &b, count, 100);
		}
		free(copy);
		free(decoded);
		free(oracle);
		free(wide);
		free(values);
		bytebuf_free(&b);
	}
}

Test(codec, u64_for_packing_matches_the_bit_oracle_at_every_width)
{
	for (unsigned width = 1; width <= 64; width++) {
		/* min 0 and max 2^width - 1: a FOR column of exactly this width. */
		size_t count = 2 + rng_below(200);
		uint64_t *values = xmalloc(count * sizeof *values);
		for (size_t i = 0; i < count; i++)
			values[i] = rng_bits(width);
		values[0] = 0;
		values[count - 1] = width == 64 ? UINT64_MAX : (UINT64_C(1) << width) - 1;
		/* The FOR bytes, built by the one-bit-at-a-time oracle. */
		size_t packed = (count * width + 7) / 8;
		bytebuf expected = { 0 };
		const uint8_t header[] = { 0x01, 0x00, (uint8_t)width };
		cr_assert_eq(bytebuf_append(&expected, header, sizeof header), 0);
		cr_assert_eq(bytebuf_reserve(&expected, packed), 0);
		bits_oracle(values, count, width, expected.data + expected.size);
		expected.size += packed;
		uint64_t *decoded = xmalloc(count * sizeof *decoded);
		uint8_t *copy = copy_exact(expected.data, expected.size);
		cr_assert_eq(codec_u64_decode(copy, expected.size, decoded, count), 0, "width %u", width);
		for (size_t i = 0; i < count; i++)
			cr_assert_eq(decoded[i], values[i], "width %u row %zu", width, i);
		/* When the encoder picks FOR, it writes exactly these bytes. */
		bytebuf encoded = { 0 };
		cr_assert_eq(codec_u64_encode(&encoded, values, count), 0);
		if (encoded.data[0] == 1) {
			cr_assert_eq(encoded.size, expected.size, "width %u", width);
			cr_assert_eq(memcmp(encoded.data, expected.data, expected.size), 0, "width %u", width);
		}
		bytebuf_free(&encoded);
		free(copy);
		free(decoded);
		free(values);
		bytebuf_free(&expected);
	}
}

Test(codec, codes_decode_rejects_bad_width_size_and_padding)
{
	struct {
		const char *why;
		uint8_t bytes[8];
		size_t size;
		size_t count;
	} bad[] = {
		{ "empty", { 0 }, 0, 0 },
		{ "width 33", { 33, 0, 0, 0, 0, 0 }, 6, 1 },
		{ "width 255", { 255 }, 1, 0 },
		{ "padding bit set", { 0x02, 0x79 }, 2, 3 },
		{ "one byte short", { 0x02 }, 1, 3 },
		{ "one byte long", { 0x02, 0x39, 0x00 }, 3, 3 },
		{ "width 0 with bytes", { 0x00, 0x00 }, 2, 3 },
	};
	for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++)
		cr_assert_eq(decode_exact(decode_codes_any, bad[c].bytes, bad[c].size, bad[c].count),
			     TALLY_E_CORRUPT, "%s", bad[c].why);
}

Test(codec, u8_statuses_pack_at_two_bits_and_reject_width_above_8)
{
	const uint8_t statuses[] = { 0, 1, 2, 3, 0, 1, 2, 3, 3 };
	bytebuf b = { 0 };
	cr_assert_eq(codec_u8_encode(&b, statuses, 9), 0);
	const uint8_t expected[] = { 0x02, 0xe4, 0xe4, 0x03 };
	assert_bytes(&b, expected, sizeof expected, "statuses");
	uint8_t decoded[9];
	cr_assert_eq(codec_u8_decode(b.data, b.size, decoded, 9), 0);
	cr_assert_eq(memcmp(decoded, statuses, 9), 0);
	check_truncation_and_trailing("u8", decode_u8_any, &b, 9);
	bytebuf_free(&b);
	/* A codes column of width 9 is valid codes but not a u8 column. */
	const uint8_t wide[] = { 9, 0xff, 0x00 };
	cr_assert_eq(decode_exact(decode_u8_any, wide, 3, 1), TALLY_E_CORRUPT);
	cr_assert_eq(decode_exact(decode_codes_any, wide, 3, 1), 0);
	for (int round = 0; round < 200; round++) {
		size_t count = random_count();
		uint8_t *values = xmalloc(count);
		unsigned width = (unsigned)rng_below(9);
		for (size_t i = 0; i < count; i++)
			values[i] = (uint8_t)rng_bits(width);
		bytebuf r = { 0 };
		cr_assert_eq(codec_u8_encode(&r, values, count), 0);
		cr_assert(r.data[0] <= 8 || (r.data[0] == 0xff && r.size == 2), "layout byte %02x",
			  r.data[0]); /* a width, or CONSTANT and one varint below 256 */
		uint8_t *out = xmalloc(count);
		uint8_t *copy = copy_exact(r.data, r.size);
		cr_assert_eq(codec_u8_decode(copy, r.size, out, count), 0);
		cr_assert(count == 0 || memcmp(out, values, count) == 0);
		if (round < 10 && count > 0)
			check_corruption_survived("u8", decode_u8_any, &r, count, 100);
		free(copy);
		free(out);
		free(values);
		bytebuf_free(&r);
	}
}

/* ---- ids ------------------------------------------------------------------------------- */

static bool oracle_is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The kind rule of docs/codecs.md, written plainly. */
static int id_kind_oracle(const char *text, size_t size)
{
	bool all_hex = true, uuid = size == 36, lower = false, upper = false;
	for (size_t i = 0; i < size; i++) {
		bool hyphen_slot = i == 8 || i == 13 || i == 18 || i == 23;
		all_hex &= oracle_is_hex(text[i]);
		if (size == 36)
			uuid &= hyphen_slot ? text[i] == '-' : oracle_is_hex(text[i]);
		lower |= text[i] >= 'a' && text[i] <= 'f';
		upper |= text[i] >= 'A' && text[i] <= 'F';
	}
	if (lower && upper)
		return ID_KIND_RAW;
	if (uuid)
		return upper ? ID_KIND_UUID_UPPER : ID_KIND_UUID_LOWER;
	if (all_hex && size % 2 == 0)
		return upper ? ID_KIND_HEX_UPPER : ID_KIND_HEX_LOWER;
	return ID_KIND_RAW;
}

static void id_round_trip(const char *text, size_t size, int kind, size_t packed_size)
{
	uint8_t packed[ID_PACKED_SIZE_MAX];
	size_t got_size = 999;
	int got_kind = id_pack(text, size, packed, &got_size);
	cr_assert_eq(got_kind, kind, "id \"%.*s\": kind %d, expected %d", (int)size, text, got_kind,
		     kind);
	cr_assert_eq(got_size, packed_size, "id \"%.*s\": packed size", (int)size, text);
	char unpacked[ID_TEXT_SIZE_MAX];
	uint8_t *copy = copy_exact(packed, got_size);
	int n = id_unpack(got_kind, copy, got_size, unpacked);
	cr_assert_eq(n, (int)size, "id \"%.*s\": unpacked size %d", (int)size, text, n);
	cr_assert_eq(memcmp(unpacked, text, size), 0, "id \"%.*s\" unpacked as \"%.*s\"", (int)size,
		     text, n, unpacked);
	free(copy);
}

Test(codec, id_pack_kinds_round_trip_exactly)
{
	struct {
		const char *text;
		int kind;
		size_t packed_size;
	} cases[] = {
		{ "0123", ID_KIND_HEX_LOWER, 2 },
		{ "00", ID_KIND_HEX_LOWER, 1 },
		{ "DEADBEEF", ID_KIND_HEX_UPPER, 4 },
		{ "deadbeef", ID_KIND_HEX_LOWER, 4 },
		{ "DeadBeef", ID_KIND_RAW, 8 },
		{ "abc", ID_KIND_RAW, 3 },
		{ "7", ID_KIND_RAW, 1 },
		{ "g0", ID_KIND_RAW, 2 },
		{ "evt_000123", ID_KIND_RAW, 10 },
		{ "550e8400-e29b-41d4-a716-446655440000", ID_KIND_UUID_LOWER, 16 },
		{ "550E8400-E29B-41D4-A716-446655440000", ID_KIND_UUID_UPPER, 16 },
		{ "550e8400-E29B-41d4-a716-446655440000", ID_KIND_RAW, 36 },
		{ "12345678-1234-1234-1234-123456789012", ID_KIND_UUID_LOWER, 16 },
		{ "550e8400-e29b-41d4-a716-44665544000g", ID_KIND_RAW, 36 },
		{ "550e8400-e29b-41d4-a716_446655440000", ID_KIND_RAW, 36 },
		{ "550e8400e29b-41d4-a716-4466554400000", ID_KIND_RAW, 36 },
		{ "550e8400e29b41d4a716446655440000", ID_KIND_HEX_LOWER, 16 },
		{ "550e8400e29b41d4a716446655440000abcd", ID_KIND_HEX_LOWER, 18 },
		{ "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		  ID_KIND_HEX_LOWER, 32 },
		{ "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
		  ID_KIND_HEX_UPPER, 32 },
		{ "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeX",
		  ID_KIND_RAW, 64 },
	};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		size_t size = strlen(cases[c].text);
		cr_assert_eq(id_kind_oracle(cases[c].text, size), cases[c].kind, "oracle on %s",
			     cases[c].text);
		id_round_trip(cases[c].text, size, cases[c].kind, cases[c].packed_size);
	}
	const char binary[] = { 0, 1, (char)0xff, 0, '-', 'a' };
	id_round_trip(binary, sizeof binary, ID_KIND_RAW, sizeof binary);
	const char nul[] = { 0 };
	id_round_trip(nul, 1, ID_KIND_RAW, 1);
	uint8_t packed[ID_PACKED_SIZE_MAX];
	size_t packed_size;
	cr_assert_eq(id_pack("0123", 4, packed, &packed_size), ID_KIND_HEX_LOWER);
	cr_assert_eq(packed[0], 0x01);
	cr_assert_eq(packed[1], 0x23);
	cr_assert_eq(id_pack("x", 0, packed, &packed_size), TALLY_E_INVALID, "empty id");
	char long_text[ID_TEXT_SIZE_MAX + 1];
	memset(long_text, 'a', sizeof long_text);
	cr_assert_eq(id_pack(long_text, sizeof long_text, packed, &packed_size), TALLY_E_INVALID);
}

Test(codec, id_pack_round_trips_random_ids_of_every_style)
{
	static const char lower[] = "0123456789abcdef", upper[] = "0123456789ABCDEF";
	for (int round = 0; round < 5000; round++) {
		char text[ID_TEXT_SIZE_MAX];
		size_t size;
		unsigned style = (unsigned)rng_below(7);
		if (style <= 2) { /* uuid: lower, upper, digits (+ occasional mixed) */
			size = 36;
			for (size_t i = 0; i < size; i++) {
				unsigned nibble = (unsigned)rng_below(style == 2 ? 10 : 16);
				text[i] = style == 1 ? upper[nibble] : lower[nibble];
				if (rng_below(40) == 0)
					text[i] = upper[nibble];
			}
			text[8] = text[13] = text[18] = text[23] = '-';
		} else if (style <= 4) { /* hex of any length, sometimes odd or mixed */
			size = 1 + rng_below(ID_TEXT_SIZE_MAX);
			for (size_t i = 0; i < size; i++) {
				unsigned nibble = (unsigned)rng_below(style == 4 ? 10 : 16);
				text[i] = rng_below(30) == 0 ? upper[nibble] : lower[nibble];
			}
		} else if (style == 5) { /* printable */
			size = 1 + rng_below(ID_TEXT_SIZE_MAX);
			for (size_t i = 0; i < size; i++)
				text[i] = (char)(' ' + rng_below(95));
		} else { /* binary */
			size = 1 + rng_below(ID_TEXT_SIZE_MAX);
			for (size_t i = 0; i < size; i++)
				text[i] = (char)rng_next();
		}
		int kind = id_kind_oracle(text, size);
		size_t packed_size = kind == ID_KIND_RAW ? size
				   : kind >= ID_KIND_UUID_LOWER ? 16 : size / 2;
		id_round_trip(text, size, kind, packed_size);
	}
}

/* The hex and UUID packers test eight characters at once: every byte value
 * at every position of otherwise valid ids, against the oracle. */
Test(codec, id_pack_classifies_every_byte_at_every_position)
{
	static const char *bases[] = {
		"0123456789abcdef0123456789abcdef", /* lower hex */
		"0123456789ABCDEF0123456789ABCDEF", /* upper hex */
		"01234567890123456789012345678901", /* digits only */
		"550e8400-e29b-41d4-a716-446655440000",
		"550E8400-E29B-41D4-A716-446655440000",
		"12345678-1234-1234-1234-123456789012",
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"abcdef", /* shorter than one word */
	};
	for (size_t b = 0; b < sizeof bases / sizeof bases[0]; b++) {
		size_t size = strlen(bases[b]);
		for (size_t i = 0; i < size; i++) {
			for (unsigned c = 0; c < 256; c++) {
				char text[ID_TEXT_SIZE_MAX];
				memcpy(text, bases[b], size);
				text[i] = (char)c;
				int kind = id_kind_oracle(text, size);
				size_t packed_size = kind == ID_KIND_RAW ? size
						   : kind >= ID_KIND_UUID_LOWER ? 16 : size / 2;
				id_round_trip(text, size, kind, packed_size);
			}
		}
	}
}

Test(codec, id_unpack_rejects_impossible_sizes_kinds_and_non_canonical_forms)
{
	uint8_t packed[ID_PACKED_SIZE_MAX + 1];
	memset(packed, 0xab, sizeof packed);
	char text[ID_TEXT_SIZE_MAX];
	struct {
		const char *why;
		int kind;
		size_t size;
	} bad[] = {
		{ "kind -1", -1, 4 },
		{ "kind 5", ID_KIND_COUNT, 4 },
		{ "RAW size 0", ID_KIND_RAW, 0 },
		{ "RAW size 65", ID_KIND_RAW, 65 },
		{ "HEX_LOWER size 0", ID_KIND_HEX_LOWER, 0 },
		{ "HEX_LOWER size 33", ID_KIND_HEX_LOWER, 33 },
		{ "HEX_UPPER size 33", ID_KIND_HEX_UPPER, 33 },
		{ "UUID_LOWER size 15", ID_KIND_UUID_LOWER, 15 },
		{ "UUID_UPPER size 17", ID_KIND_UUID_UPPER, 17 },
		{ "UUID_LOWER size 0", ID_KIND_UUID_LOWER, 0 },
	};
	for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++)
		cr_assert_eq(id_unpack(bad[c].kind, packed, bad[c].size, text), TALLY_E_CORRUPT, "%s",
			     bad[c].why);
	cr_assert_eq(id_unpack(ID_KIND_HEX_LOWER, packed, 32, text), 64);
	cr_assert_eq(id_unpack(ID_KIND_RAW, packed, 64, text), 64);
	/* Forms id_pack never writes. */
	cr_assert_eq(id_unpack(ID_KIND_RAW, (const uint8_t *)"abcd", 4, text), TALLY_E_CORRUPT,
		     "hex text stored RAW");
	cr_assert_eq(id_unpack(ID_KIND_RAW, (const uint8_t *)"550e8400-e29b-41d4-a716-446655440000",
			       36, text), TALLY_E_CORRUPT, "UUID text stored RAW");
	const uint8_t digits[] = { 0x01, 0x23 };
	cr_assert_eq(id_unpack(ID_KIND_HEX_UPPER, digits, 2, text), TALLY_E_CORRUPT,
		     "digit-only text is HEX_LOWER");
	cr_assert_eq(id_unpack(ID_KIND_HEX_LOWER, digits, 2, text), 4);
	cr_assert_eq(memcmp(text, "0123", 4), 0);
	const uint8_t uuid_digits[16] = { 0x12, 0x34 };
	cr_assert_eq(id_unpack(ID_KIND_UUID_UPPER, uuid_digits, 16, text), TALLY_E_CORRUPT);
	cr_assert_eq(id_unpack(ID_KIND_UUID_LOWER, uuid_digits, 16, text), 36);
	cr_assert_eq(memcmp(text, "12340000-0000-0000-0000-000000000000", 36), 0);
	const uint8_t one_letter[] = { 0x0a };
	cr_assert_eq(id_unpack(ID_KIND_HEX_UPPER, one_letter, 1, text), 2);
	cr_assert_eq(memcmp(text, "0A", 2), 0);
}

/* A column of packed ids built from texts with id_pack. */
typedef struct id_column {
	size_t count;
	uint8_t *kinds;
	uint32_t *offsets;
	bytebuf bytes;
} id_column;

static void id_column_add(id_column *c, const char *text, size_t size)
{
	uint8_t packed[ID_PACKED_SIZE_MAX];
	size_t packed_size;
	int kind = id_pack(text, size, packed, &packed_size);
	cr_assert_geq(kind, 0);
	c->kinds[c->count] = (uint8_t)kind;
	cr_assert_eq(bytebuf_append(&c->bytes, packed, packed_size), 0);
	c->offsets[++c->count] = (uint32_t)c->bytes.size;
}

static void id_column_init(id_column *c, size_t capacity)
{
	c->count = 0;
	c->kinds = xmalloc(capacity);
	c->offsets = xmalloc((capacity + 1) * sizeof *c->offsets);
	c->offsets[0] = 0;
	c->bytes = (bytebuf){ 0 };
}

static void id_column_free(id_column *c)
{
	free(c->kinds);
	free(c->offsets);
	bytebuf_free(&c->bytes);
}

static void id_column_round_trip(const id_column *c, bytebuf *encoded)
{
	cr_assert_eq(codec_ids_encode(encoded, c->kinds, c->offsets, c->bytes.data, c->count), 0);
	uint8_t *kinds = xmalloc(c->count);
	uint32_t *offsets = xmalloc((c->count + 1) * sizeof *offsets);
	bytebuf bytes = { 0 };
	cr_assert_eq(bytebuf_append(&bytes, "stale", 5), 0);
	uint8_t *copy = copy_exact(encoded->data, encoded->size);
	cr_assert_eq(codec_ids_decode(copy, encoded->size, c->count, kinds, offsets, &bytes), 0);
	cr_assert(c->count == 0 || memcmp(kinds, c->kinds, c->count) == 0);
	cr_assert_eq(memcmp(offsets, c->offsets, (c->count + 1) * sizeof *offsets), 0);
	cr_assert_eq(bytes.size, c->bytes.size, "bytes are reset, then filled");
	cr_assert(bytes.size == 0 || memcmp(bytes.data, c->bytes.data, bytes.size) == 0);
	free(copy);
	bytebuf_free(&bytes);
	free(offsets);
	free(kinds);
}

Test(codec, ids_column_layout_is_three_length_prefixed_sections)
{
	id_column c;
	id_column_init(&c, 2);
	id_column_add(&c, "deadbeef", 8);
	id_column_add(&c, "abc", 3);
	bytebuf b = { 0 };
	id_column_round_trip(&c, &b);
	const uint8_t expected[] = {
		0x02, 0x01, 0x01,                         /* kinds: width 1, bits 1,0 */
		0x03, 0x02, 0x04, 0x03,                   /* sizes: VARINT 4, 3 */
		0x07, 0xde, 0xad, 0xbe, 0xef, 'a', 'b', 'c', /* bytes */
	};
	assert_bytes(&b, expected, sizeof expected, "ids");
	check_truncation_and_trailing("ids", decode_ids_any, &b, 2);
	bytebuf_free(&b);
	id_column_free(&c);

	id_column_init(&c, 0);
	bytebuf empty = { 0 };
	id_column_round_trip(&c, &empty);
	const uint8_t expected_empty[] = { 0x01, 0x00, 0x01, 0x02, 0x00 };
	assert_bytes(&empty, expected_empty, sizeof expected_empty, "ids count 0");
	bytebuf_free(&empty);
	id_column_free(&c);
}

Test(codec, ids_column_round_trips_random_mixes)
{
	for (int round = 0; round < 200; round++) {
		size_t count = random_count() % 1000;
		id_column c;
		id_column_init(&c, count);
		unsigned mix = (unsigned)rng_below(4); /* 0: all UUIDs, 1: all hex, else any */
		for (size_t i = 0; i < count; i++) {
			char text[ID_TEXT_SIZE_MAX];
			size_t size;
			unsigned style = mix < 2 ? mix : (unsigned)rng_below(3);
			if (style == 0) {
				size = 36;
				for (size_t k = 0; k < size; k++)
					text[k] = "0123456789abcdef"[rng_below(16)];
				text[8] = text[13] = text[18] = text[23] = '-';
			} else if (style == 1) {
				size = 2 * (1 + rng_below(32));
				for (size_t k = 0; k < size; k++)
					text[k] = "0123456789ABCDEF"[rng_below(16)];
			} else {
				size = 1 + rng_below(ID_TEXT_SIZE_MAX);
				for (size_t k = 0; k < size; k++)
					text[k] = (char)rng_next();
			}
			id_column_add(&c, text, size);
		}
		bytebuf b = { 0 };
		id_column_round_trip(&c, &b);
		if (round < 20 && count > 0 && count < 50) {
			check_truncation_and_trailing("ids", decode_ids_any, &b, count);
			check_corruption_survived("ids", decode_ids_any, &b, count, 200);
		}
		bytebuf_free(&b);
		id_column_free(&c);
	}
}

Test(codec, ids_decode_rejects_bad_kinds_and_sizes_that_do_not_add_up)
{
	struct {
		const char *why;
		uint8_t bytes[16];
		size_t size;
		size_t count;
	} bad[] = {
		{ "kind 5", { 0x02, 0x03, 0x05, 0x02, 0x00, 0x01, 0x01, 'x' }, 8, 1 },
		{ "kinds width 9", { 0x03, 0x09, 0x00, 0x00, 0x02, 0x00, 0x01, 0x01, 'x' }, 9, 1 },
		{ "size 0", { 0x01, 0x00, 0x02, 0x00, 0x00, 0x01, 'x' }, 7, 1 },
		{ "sizes sum short", { 0x01, 0x00, 0x02, 0x00, 0x01, 0x02, 'x', 'y' }, 8, 1 },
		{ "sizes sum long", { 0x01, 0x00, 0x02, 0x00, 0x03, 0x02, 'x', 'y' }, 8, 1 },
		{ "UUID size 15", { 0x02, 0x03, 0x03, 0x02, 0x00, 0x0f, 0x01, 'x' }, 8, 1 },
		{ "RAW hex text", { 0x01, 0x00, 0x02, 0x00, 0x02, 0x02, 'a', 'b' }, 8, 1 },
		{ "section longer than input", { 0x09, 0x00 }, 2, 1 },
		{ "bytes section size wrong", { 0x01, 0x00, 0x02, 0x00, 0x01, 0x02, 'x' }, 7, 1 },
		{ "count larger than input", { 0x01, 0x00 }, 2, 3 },
		{ "empty", { 0 }, 0, 0 },
	};
	for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++)
		cr_assert_eq(decode_exact(decode_ids_any, bad[c].bytes, bad[c].size, bad[c].count),
			     TALLY_E_CORRUPT, "%s", bad[c].why);
	const uint8_t good[] = { 0x01, 0x00, 0x02, 0x00, 0x01, 0x01, 'x' };
	cr_assert_eq(decode_exact(decode_ids_any, good, sizeof good, 1), 0, "the control case");
}

/* ---- blocks ------------------------------------------------------------------------------ */

Test(codec, block_compresses_repetitive_data_and_round_trips)
{
	enum { SIZE = 65536 };
	uint8_t *src = xmalloc(SIZE);
	for (size_t i = 0; i < SIZE; i++)
		src[i] = (uint8_t)("usage-event-"[i % 12] + (i / 4096));
	bytebuf out = { 0 };
	cr_assert_eq(bytebuf_append(&out, "HDR", 3), 0);
	uint8_t codec = 99;
	cr_assert_eq(block_compress(&out, src, SIZE, 3, &codec), 0);
	cr_assert_eq(codec, BLOCK_CODEC_ZSTD);
	cr_assert_lt(out.size - 3, SIZE / 10, "compressed to %zu", out.size - 3);
	cr_assert_eq(memcmp(out.data, "HDR", 3), 0, "appends");
	bytebuf raw = { 0 };
	cr_assert_eq(bytebuf_append(&raw, "stale", 5), 0);
	uint8_t *copy = copy_exact(out.data + 3, out.size - 3);
	cr_assert_eq(block_decompress(&raw, copy, out.size - 3, codec, SIZE), 0);
	cr_assert_eq(raw.size, SIZE);
	cr_assert_eq(memcmp(raw.data, src, SIZE), 0);
	cr_assert_eq(block_decompress(&raw, copy, out.size - 3, codec, SIZE - 1), TALLY_E_CORRUPT);
	cr_assert_eq(block_decompress(&raw, copy, out.size - 3, codec, SIZE + 1), TALLY_E_CORRUPT);
	cr_assert_eq(block_decompress(&raw, copy, out.size - 3, 2, SIZE), TALLY_E_CORRUPT,
		     "unknown codec");
	cr_assert_eq(block_decompress(&raw, copy, out.size - 3, BLOCK_CODEC_RAW, SIZE),
		     TALLY_E_CORRUPT, "a zstd block read as RAW has the wrong size");
	/* zstd itself accepts a skippable frame after the data; a block is one
	 * frame and nothing else. */
	const uint8_t skippable[] = { 0x50, 0x2a, 0x4d, 0x18, 0x00, 0x00, 0x00, 0x00 };
	cr_assert_eq(bytebuf_append(&out, skippable, sizeof skippable), 0);
	uint8_t *padded = copy_exact(out.data + 3, out.size - 3);
	cr_assert_eq(block_decompress(&raw, padded, out.size - 3, codec, SIZE), TALLY_E_CORRUPT,
		     "skippable frame after the block");
	free(padded);
	free(copy);
	bytebuf_free(&raw);
	bytebuf_free(&out);
	free(src);
}

/* An empty block, stored RAW or as a zstd frame, decompresses into a
 * buffer that is never NULL: decoders compute data + size, undefined on
 * NULL even for size 0 (fuzz/fuzz_segment.c found an empty footer and an
 * empty rollup chunk reaching them that way). */
Test(codec, an_empty_block_decompresses_into_a_buffer_not_null)
{
	bytebuf raw = { 0 };
	cr_assert_eq(block_decompress(&raw, (const uint8_t *)"", 0, BLOCK_CODEC_RAW, 0), 0);
	cr_expect_eq(raw.size, 0);
	cr_expect_not_null(raw.data, "an empty RAW block");
	bytebuf_free(&raw);
	/* A zstd frame of no content, made by zstd itself. */
	size_t bound = ZSTD_compressBound(0);
	uint8_t *z = xmalloc(bound);
	size_t zsize = ZSTD_compress(z, bound, "", 0, 3);
	cr_assert(!ZSTD_isError(zsize));
	cr_assert_eq(block_decompress(&raw, z, zsize, BLOCK_CODEC_ZSTD, 0), 0);
	cr_expect_eq(raw.size, 0);
	cr_expect_not_null(raw.data, "an empty zstd frame");
	bytebuf_free(&raw);
	free(z);
}

Test(codec, block_keeps_incompressible_and_tiny_data_raw)
{
	uint8_t src[4096];
	for (size_t i = 0; i < sizeof src; i++)
		src[i] = (uint8_t)rng_next();
	const size_t sizes[] = { 0, 1, 2, 16, sizeof src };
	for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
		bytebuf out = { 0 };
		uint8_t codec = 99;
		cr_assert_eq(block_compress(&out, src, sizes[s], 3, &codec), 0);
		cr_assert_eq(codec, BLOCK_CODEC_RAW, "size %zu", sizes[s]);
		cr_assert_eq(out.size, sizes[s]);
		cr_assert(sizes[s] == 0 || memcmp(out.data, src, sizes[s]) == 0);
		bytebuf raw = { 0 };
		cr_assert_eq(block_decompress(&raw, out.data, out.size, codec, sizes[s]), 0);
		cr_assert_eq(raw.size, sizes[s]);
		if (sizes[s] != 0)
			cr_assert_eq(block_decompress(&raw, out.data, out.size, codec, sizes[s] - 1),
				     TALLY_E_CORRUPT);
		bytebuf_free(&raw);
		bytebuf_free(&out);
	}
	bytebuf out = { 0 };
	uint8_t codec;
	cr_assert_eq(block_compress(&out, src, 100, 1000, &codec), TALLY_E_INVALID, "level 1000");
	cr_assert_eq(out.size, 0);
	bytebuf_free(&out);
}

/* One block through the gate: its codec, with out holding exactly src
 * when raw. */
static uint8_t gated(block_gate *gate, const uint8_t *src, size_t size)
{
	bytebuf out = { 0 };
	uint8_t codec = 99;
	cr_assert_eq(block_compress_gated(&out, src, size, 3, gate, &codec), 0);
	if (codec == BLOCK_CODEC_RAW) {
		cr_assert_eq(out.size, size);
		cr_assert(size == 0 || memcmp(out.data, src, size) == 0);
	} else {
		cr_assert_eq(codec, BLOCK_CODEC_ZSTD);
		cr_assert_lt(out.size, size);
	}
	bytebuf_free(&out);
	return codec;
}

Test(codec, block_gate_stops_trying_a_size_class_that_never_compresses_and_retries_it)
{
	enum { SIZE = 1000 }; /* size class 10 (bit length) */
	uint8_t noise[SIZE], text[SIZE], small_text[SIZE / 2];
	for (size_t i = 0; i < SIZE; i++) {
		noise[i] = (uint8_t)rng_next();
		text[i] = (uint8_t)"tokens_in tokens_out "[i % 21];
	}
	memcpy(small_text, text, sizeof small_text);
	block_gate *gate = calloc(1, sizeof(*gate));
	cr_assert_not_null(gate);
	/* BLOCK_GATE_MISSES tries that end raw close class 10. */
	for (uint32_t i = 0; i < BLOCK_GATE_MISSES; i++) {
		cr_assert_eq(gated(gate, noise, SIZE), BLOCK_CODEC_RAW);
		cr_assert_eq(gate->size_class[10].misses, i + 1);
		cr_assert_eq(gate->size_class[10].skipped, 0);
	}
	/* Closed: even text is stored raw, untried, for BLOCK_GATE_RETRY - 1
	 * blocks; another class (9) is still tried. */
	for (uint32_t i = 0; i + 1 < BLOCK_GATE_RETRY; i++) {
		cr_assert_eq(gated(gate, text, SIZE), BLOCK_CODEC_RAW, "block %u", i);
		cr_assert_eq(gate->size_class[10].skipped, i + 1);
		cr_assert_eq(gated(gate, small_text, sizeof small_text), BLOCK_CODEC_ZSTD);
	}
	cr_assert_eq(gate->size_class[10].misses, BLOCK_GATE_MISSES);
	/* The BLOCK_GATE_RETRY-th is tried: noise stays closed for another
	 * round... */
	cr_assert_eq(gated(gate, noise, SIZE), BLOCK_CODEC_RAW);
	cr_assert_eq(gate->size_class[10].skipped, 0);
	cr_assert_eq(gated(gate, text, SIZE), BLOCK_CODEC_RAW, "closed again");
	for (uint32_t i = 1; i + 1 < BLOCK_GATE_RETRY; i++)
		cr_assert_eq(gated(gate, noise, SIZE), BLOCK_CODEC_RAW);
	/* ...and a win reopens it. */
	cr_assert_eq(gated(gate, text, SIZE), BLOCK_CODEC_ZSTD, "retried");
	cr_assert_eq(gate->size_class[10].misses, 0);
	cr_assert_eq(gated(gate, text, SIZE), BLOCK_CODEC_ZSTD, "open");
	cr_assert_eq(gated(gate, noise, SIZE), BLOCK_CODEC_RAW);
	cr_assert_eq(gate->size_class[10].misses, 1, "a win reset the count");
	/* Tiny blocks (never compressed) close class 0 and 1 like any other;
	 * an invalid level is refused even when the class is closed. */
	for (uint32_t i = 0; i < BLOCK_GATE_MISSES + 2; i++)
		cr_assert_eq(gated(gate, text, 1), BLOCK_CODEC_RAW);
	cr_assert_eq(gate->size_class[1].skipped, 2);
	bytebuf out = { 0 };
	uint8_t codec;
	cr_assert_eq(block_compress_gated(&out, text, 1, 1000, gate, &codec), TALLY_E_INVALID);
	cr_assert_eq(out.size, 0);
	free(gate);
}

Test(codec, block_decompress_rejects_truncation_trailing_and_survives_corruption)
{
	enum { SIZE = 3000 };
	uint8_t src[SIZE];
	for (size_t i = 0; i < SIZE; i++)
		src[i] = (uint8_t)(i % 7 == 0 ? rng_next() : i % 13);
	bytebuf out = { 0 };
	uint8_t codec;
	cr_assert_eq(block_compress(&out, src, SIZE, 1, &codec), 0);
	cr_assert_eq(codec, BLOCK_CODEC_ZSTD);
	check_truncation_and_trailing("zstd block", decode_block_zstd_any, &out, SIZE);
	check_corruption_survived("zstd block", decode_block_zstd_any, &out, SIZE, 500);
	bytebuf_free(&out);
}

/* ---- garbage in -------------------------------------------------------------------------- */

Test(codec, every_decoder_survives_random_garbage)
{
	const decode_fn decoders[] = { decode_time_any, decode_u64_any, decode_i64_any,
				       decode_u32_any, decode_u8_any, decode_codes_any,
				       decode_ids_any, decode_block_zstd_any,
				       decode_u64_classed_any, decode_cost_any,
				       decode_codes_classed_any };
	uint8_t garbage[96];
	for (int round = 0; round < 20000; round++) {
		size_t size = rng_below(sizeof garbage + 1);
		for (size_t i = 0; i < size; i++)
			garbage[i] = (uint8_t)rng_next();
		/* Bias toward plausible headers: small mode/width/length bytes. */
		if (size != 0 && rng_below(2))
			garbage[0] = rng_below(8) ? (uint8_t)rng_below(7) : (uint8_t)(0xfe + rng_below(2));
		if (size > 2 && rng_below(2))
			garbage[2] = (uint8_t)rng_below(66);
		size_t count = rng_below(130);
		decode_fn fn = decoders[round % (sizeof decoders / sizeof decoders[0])];
		int rc = decode_exact(fn, garbage, size, count);
		cr_assert(rc == 0 || rc == TALLY_E_CORRUPT, "round %d: %d", round, rc);
	}
}

Test(codec, u64_sparse_layout_is_bitmap_then_packed_nonzero_values)
{
	/* 0, 0, 1000, 0, 1003, 0, 0, 0, 0, 0: k = 2, bitmap 0b00010100 = 14 then
	 * 00 (10 rows: two bytes, padding zero), min 1000 = e8 07, width 2,
	 * values 0 and 3 -> 0b1100 = 0c. FOR would need 1 + 1 + 1 + 3 bytes for
	 * 10 rows at width 10 (16 bytes), VARINT 1 + 8 + 2 + 2 = 13. */
	const uint64_t values[10] = { 0, 0, 1000, 0, 1003, 0, 0, 0, 0, 0 };
	bytebuf b = { 0 };
	cr_assert_eq(codec_u64_encode(&b, values, 10), 0);
	const uint8_t expected[] = { 0x03, 0x02, 0x14, 0x00, 0xe8, 0x07, 0x02, 0x0c };
	assert_bytes(&b, expected, sizeof expected, "sparse");
	uint64_t decoded[10];
	cr_assert_eq(codec_u64_decode(b.data, b.size, decoded, 10), 0);
	for (int i = 0; i < 10; i++)
		cr_assert_eq(decoded[i], values[i]);
	/* Rejected: k not matching the bitmap, padding bits, base 0, a packed
	 * area of the wrong size, k = 0 or k = count. */
	uint8_t bad[sizeof expected];
	memcpy(bad, expected, sizeof bad);
	bad[1] = 0x03;
	cr_expect_eq(codec_u64_decode(bad, sizeof bad, decoded, 10), TALLY_E_CORRUPT, "k");
	memcpy(bad, expected, sizeof bad);
	bad[3] = 0x04;
	cr_expect_eq(codec_u64_decode(bad, sizeof bad, decoded, 10), TALLY_E_CORRUPT, "padding");
	const uint8_t base_zero[] = { 0x03, 0x02, 0x14, 0x00, 0x00, 0x02, 0x0c };
	cr_expect_eq(codec_u64_decode(base_zero, sizeof base_zero, decoded, 10), TALLY_E_CORRUPT,
		     "base 0 would make a present value zero");
	cr_expect_eq(codec_u64_decode(expected, sizeof expected - 1, decoded, 10), TALLY_E_CORRUPT,
		     "truncated");
	const uint8_t all_present[] = { 0x03, 0x0a, 0xff, 0x03, 0x01, 0x00 };
	cr_expect_eq(codec_u64_decode(all_present, sizeof all_present, decoded, 10),
		     TALLY_E_CORRUPT, "k = count is not sparse");
	bytebuf_free(&b);
}

Test(codec, u64_patched_layout_packs_low_bits_and_patches_the_outliers)
{
	/* 20 values of 0..3 and one 1000 at row 5: FOR needs 10 bits per row
	 * (1 + 1 + 1 + 27 = 30 bytes); PATCHED packs 2 bits per row (6 bytes)
	 * and patches row 5 with its high part 1000 >> 2 = 250 (gap 5, then
	 * varint 250 = fa 01). */
	uint64_t values[21];
	for (int i = 0; i < 21; i++)
		values[i] = (uint64_t)(i % 4);
	values[5] = 1000;
	bytebuf b = { 0 };
	cr_assert_eq(codec_u64_encode(&b, values, 21), 0);
	cr_assert_eq(b.data[0], 0x04, "mode %u", b.data[0]);
	cr_assert_eq(b.data[1], 0x00, "base 0");
	cr_assert_eq(b.data[2], 0x02, "low width 2");
	cr_assert_eq(b.data[3], 0x01, "one patch");
	const uint8_t tail[] = { 0x05, 0xfa, 0x01 };
	cr_assert_eq(b.size, 4 + 6 + sizeof tail);
	cr_assert_eq(memcmp(b.data + b.size - sizeof tail, tail, sizeof tail), 0);
	uint64_t decoded[21];
	cr_assert_eq(codec_u64_decode(b.data, b.size, decoded, 21), 0);
	for (int i = 0; i < 21; i++)
		cr_assert_eq(decoded[i], values[i], "row %d", i);
	/* Rejected: a patch past the last row, a zero high part, a missing
	 * patch, trailing bytes. */
	uint8_t *bad = xmalloc(b.size + 1);
	memcpy(bad, b.data, b.size);
	bad[b.size - 3] = 21;
	cr_expect_eq(codec_u64_decode(bad, b.size, decoded, 21), TALLY_E_CORRUPT, "gap past the end");
	memcpy(bad, b.data, b.size);
	bad[b.size - 2] = 0x00;
	cr_expect_eq(codec_u64_decode(bad, b.size - 1, decoded, 21), TALLY_E_CORRUPT, "high part 0");
	memcpy(bad, b.data, b.size);
	bad[3] = 0x02;
	cr_expect_eq(codec_u64_decode(bad, b.size, decoded, 21), TALLY_E_CORRUPT, "a patch missing");
	memcpy(bad, b.data, b.size);
	bad[b.size] = 0x00;
	cr_expect_eq(codec_u64_decode(bad, b.size + 1, decoded, 21), TALLY_E_CORRUPT, "trailing");
	free(bad);
	/* The same through the u32 and i64 lanes. */
	uint32_t v32[21], d32[21];
	for (int i = 0; i < 21; i++)
		v32[i] = (uint32_t)values[i];
	bytebuf_reset(&b);
	cr_assert_eq(codec_u32_encode(&b, v32, 21), 0);
	cr_assert_eq(b.data[0], 0x04);
	cr_assert_eq(codec_u32_decode(b.data, b.size, d32, 21), 0);
	cr_assert_eq(memcmp(v32, d32, sizeof v32), 0);
	bytebuf_free(&b);
}

/* ---- codes CONSTANT ------------------------------------------------------------------ */

Test(codec, codes_of_one_repeated_nonzero_value_are_one_varint)
{
	uint32_t values[9];
	for (int i = 0; i < 9; i++)
		values[i] = 7;
	bytebuf b = { 0 };
	cr_assert_eq(codec_codes_encode(&b, values, 9), 0);
	const uint8_t expected[] = { 0xff, 0x07 }; /* width 3 would take 1 + 4 bytes */
	assert_bytes(&b, expected, sizeof expected, "constant 7");
	uint32_t decoded[9];
	cr_assert_eq(codec_codes_decode(b.data, b.size, decoded, 9), 0);
	for (int i = 0; i < 9; i++)
		cr_assert_eq(decoded[i], 7);
	check_truncation_and_trailing("codes constant", decode_codes_any, &b, 9);
	/* One row: width 2 (2 bytes) is not beaten by CONSTANT (2 bytes). */
	bytebuf_reset(&b);
	const uint32_t one[] = { 3 };
	cr_assert_eq(codec_codes_encode(&b, one, 1), 0);
	const uint8_t expected_one[] = { 0x02, 0x03 };
	assert_bytes(&b, expected_one, sizeof expected_one, "one row");
	bytebuf_free(&b);
	/* Rejected: value 0 (that is width 0), a non-minimal varint, no rows, a
	 * u8 column whose constant does not fit 8 bits. */
	const uint8_t zero[] = { 0xff, 0x00 };
	cr_assert_eq(decode_exact(decode_codes_any, zero, sizeof zero, 3), TALLY_E_CORRUPT);
	const uint8_t long_form[] = { 0xff, 0x87, 0x00 };
	cr_assert_eq(decode_exact(decode_codes_any, long_form, sizeof long_form, 3), TALLY_E_CORRUPT);
	cr_assert_eq(decode_exact(decode_codes_any, expected, sizeof expected, 0), TALLY_E_CORRUPT);
	const uint8_t wide[] = { 0xff, 0x80, 0x02 };
	cr_assert_eq(decode_exact(decode_codes_any, wide, sizeof wide, 2), 0, "256 is a code");
	cr_assert_eq(decode_exact(decode_u8_any, wide, sizeof wide, 2), TALLY_E_CORRUPT,
		     "256 is not a u8");
}

Test(codec, ids_of_one_kind_store_the_kind_once)
{
	id_column c;
	id_column_init(&c, 20);
	for (int i = 0; i < 20; i++)
		id_column_add(&c, "0123456789abcdef0123456789abcdef", 32);
	bytebuf b = { 0 };
	id_column_round_trip(&c, &b);
	const uint8_t kinds[] = { 0x02, 0xff, ID_KIND_HEX_LOWER };
	cr_assert(b.size > sizeof kinds);
	cr_assert_eq(memcmp(b.data, kinds, sizeof kinds), 0, "kinds section %02x %02x %02x",
		     b.data[0], b.data[1], b.data[2]);
	bytebuf_free(&b);
	id_column_free(&c);
}

/* ---- CLASSED --------------------------------------------------------------------------- */

Test(codec, classed_layout_is_class_count_then_one_sized_u64_layout_per_class)
{
	/* 256 rows, classes alternating 0 and 1; class 0 all zero, class 1
	 * 1000 + (j % 16). SPARSE would need a 32-byte bitmap (102 bytes in
	 * all); CLASSED: mode 5, 2 classes, class 0 CONSTANT 0 (2 bytes), class
	 * 1 FOR base 1000 width 4 (1 + 2 + 1 + 64 = 68 bytes). */
	uint64_t values[256];
	uint32_t classes[256];
	for (int i = 0; i < 256; i++) {
		classes[i] = (uint32_t)(i % 2);
		values[i] = i % 2 ? 1000 + (uint64_t)((i / 2) % 16) : 0;
	}
	bytebuf b = { 0 };
	cr_assert_eq(codec_u64_encode_classed(&b, values, 256, classes), 0);
	const uint8_t head[] = { 0x05, 0x02, 0x02, 0x00, 0x00, 0x44, 0x01, 0xe8, 0x07, 0x04 };
	cr_assert_eq(b.size, sizeof head + 64, "size %zu", b.size);
	cr_assert_eq(memcmp(b.data, head, sizeof head), 0);
	for (int k = 0; k < 64; k++) {
		uint8_t pair = (uint8_t)((2 * k) % 16 | ((2 * k + 1) % 16) << 4);
		cr_assert_eq(b.data[sizeof head + k], pair, "packed byte %d", k);
	}
	uint64_t decoded[256];
	cr_assert_eq(codec_u64_decode_classed(b.data, b.size, decoded, 256, classes), 0);
	cr_assert_eq(memcmp(decoded, values, sizeof values), 0);
	/* The plain decoder and a decoder without classes refuse it. */
	cr_assert_eq(codec_u64_decode(b.data, b.size, decoded, 256), TALLY_E_CORRUPT);
	cr_assert_eq(codec_u64_decode_classed(b.data, b.size, decoded, 256, NULL), TALLY_E_CORRUPT);
	/* A row whose class is not below the class count is corrupt. */
	classes[17] = 2;
	cr_assert_eq(codec_u64_decode_classed(b.data, b.size, decoded, 256, classes),
		     TALLY_E_CORRUPT);
	classes[17] = 1;
	/* Rows moved between classes no longer add up. */
	classes[0] = 1;
	cr_assert_eq(codec_u64_decode_classed(b.data, b.size, decoded, 256, classes),
		     TALLY_E_CORRUPT);
	classes[0] = 0;
	/* A sub-layout may not itself be CLASSED or PRICED. */
	uint8_t nested[] = { 0x05, 0x01, 0x03, 0x05, 0x01, 0x00 };
	uint32_t zeros[4] = { 0 };
	cr_assert_eq(codec_u64_decode_classed(nested, sizeof nested, decoded, 4, zeros),
		     TALLY_E_CORRUPT);
	check_corruption_survived("classed", decode_u64_classed_any, &b, 256, 2000);
	bytebuf_free(&b);
}

Test(codec, classed_falls_back_to_plain_when_it_does_not_win)
{
	uint64_t values[40];
	uint32_t classes[40];
	for (int i = 0; i < 40; i++) {
		values[i] = (uint64_t)i;
		classes[i] = 0;
	}
	bytebuf plain = { 0 }, b = { 0 };
	cr_assert_eq(codec_u64_encode(&plain, values, 40), 0);
	cr_assert_eq(codec_u64_encode_classed(&b, values, 40, classes), 0);
	cr_assert_eq(b.size, plain.size);
	cr_assert_eq(memcmp(b.data, plain.data, b.size), 0, "one class: the plain layout");
	/* A class at or above CODEC_CLASSES_MAX keeps the column plain. */
	for (int i = 0; i < 40; i++)
		classes[i] = i % 2 ? CODEC_CLASSES_MAX : 0;
	bytebuf_reset(&b);
	cr_assert_eq(codec_u64_encode_classed(&b, values, 40, classes), 0);
	cr_assert_eq(b.size, plain.size);
	cr_assert_eq(memcmp(b.data, plain.data, b.size), 0, "class 64: plain");
	/* Classes NULL: plain, and the plain layout decodes with classes. */
	bytebuf_reset(&b);
	cr_assert_eq(codec_u64_encode_classed(&b, values, 40, NULL), 0);
	cr_assert_eq(memcmp(b.data, plain.data, b.size), 0);
	uint64_t decoded[40];
	cr_assert_eq(codec_u64_decode_classed(b.data, b.size, decoded, 40, classes), 0);
	cr_assert_eq(memcmp(decoded, values, sizeof values), 0);
	bytebuf_free(&plain);
	bytebuf_free(&b);
}

/* Property: random classes (sometimes one, sometimes many), each class's
 * values of its own shape; u64 and u32 round-trip exactly and are never
 * larger than the plain layout. */
Test(codec, classed_round_trips_random_columns_and_never_loses_to_plain)
{
	for (int round = 0; round < 300; round++) {
		size_t count = random_count();
		uint32_t class_count = 1 + (uint32_t)rng_below(rng_below(4) ? 6 : CODEC_CLASSES_MAX + 2);
		uint32_t *classes = xmalloc(count * sizeof *classes);
		uint64_t *values = xmalloc(count * sizeof *values);
		uint64_t *shaped = xmalloc(count * sizeof *shaped);
		uint32_t *v32 = xmalloc(count * sizeof *v32);
		for (size_t i = 0; i < count; i++)
			classes[i] = (uint32_t)rng_below(class_count);
		for (uint32_t k = 0; k < class_count; k++) {
			values_fill(shaped, count, (unsigned)rng_below(SHAPE_COUNT));
			for (size_t i = 0; i < count; i++)
				if (classes[i] == k)
					values[i] = shaped[i];
		}
		for (size_t i = 0; i < count; i++)
			v32[i] = (uint32_t)values[i];
		bytebuf b = { 0 }, plain = { 0 };
		cr_assert_eq(codec_u64_encode_classed(&b, values, count, classes), 0);
		cr_assert_eq(codec_u64_encode(&plain, values, count), 0);
		cr_assert(b.size <= plain.size, "round %d: classed %zu > plain %zu", round, b.size,
			  plain.size);
		uint64_t *decoded = xmalloc(count * sizeof *decoded);
		cr_assert_eq(codec_u64_decode_classed(b.data, b.size, decoded, count, classes), 0,
			     "round %d", round);
		cr_assert(count == 0 || memcmp(decoded, values, count * sizeof *values) == 0,
			  "round %d", round);
		bytebuf_reset(&b);
		cr_assert_eq(codec_u32_encode_classed(&b, v32, count, classes), 0);
		uint32_t *d32 = xmalloc(count * sizeof *d32);
		cr_assert_eq(codec_u32_decode_classed(b.data, b.size, d32, count, classes), 0,
			     "round %d", round);
		cr_assert(count == 0 || memcmp(d32, v32, count * sizeof *v32) == 0, "round %d", round);
		free(d32);
		free(decoded);
		bytebuf_free(&b);
		bytebuf_free(&plain);
		free(classes);
		free(values);
		free(shaped);
		free(v32);
	}
}

/* ---- PRICED ---------------------------------------------------------------------------- */

/* (tokens_in * in_per_1k + tokens_out * out_per_1k + 500) / 1000: how a
 * producer prices an LLM call from a list price per 1k tokens. */
static int64_t list_price(uint64_t tokens_in, uint64_t tokens_out, uint64_t in_per_1k,
			  uint64_t out_per_1k)
{
	return (int64_t)((tokens_in * in_per_1k + tokens_out * out_per_1k + 500) / 1000);
}

Test(codec, priced_cost_stores_the_list_rates_and_a_zero_residual)
{
	enum { N = 200 };
	static const uint64_t rates[2][2] = { { 150, 600 }, { 2500, 10000 } }; /* per 1k */
	uint32_t classes[N], models[N];
	uint64_t tin[N], tout[N];
	int64_t cost[N];
	for (int i = 0; i < N; i++) {
		classes[i] = 0;
		models[i] = (uint32_t)(i % 2);
		tin[i] = 1 + rng_below(20000);
		tout[i] = rng_below(4000);
		cost[i] = list_price(tin[i], tout[i], rates[i % 2][0], rates[i % 2][1]);
	}
	codec_cost_context ctx = { classes, models, tin, tout };
	bytebuf b = { 0 };
	cr_assert_eq(codec_cost_encode(&b, cost, N, &ctx), 0);
	/* mode 6, 2 models, rates per million tokens 150000 600000 2500000
	 * 10000000 as varints, then the residual: CONSTANT 0. */
	const uint8_t expected[] = { 0x06, 0x02, 0xf0, 0x93, 0x09, 0xc0, 0xcf, 0x24,
				     0xa0, 0xcb, 0x98, 0x01, 0x80, 0xad, 0xe2, 0x04, 0x00, 0x00 };
	assert_bytes(&b, expected, sizeof expected, "priced");
	int64_t decoded[N];
	cr_assert_eq(codec_cost_decode(b.data, b.size, decoded, N, &ctx), 0);
	cr_assert_eq(memcmp(decoded, cost, sizeof cost), 0);
	/* The same column is not a plain i64 column. */
	cr_assert_eq(codec_i64_decode(b.data, b.size, decoded, N), TALLY_E_CORRUPT);
	/* A model code outside the rates is corrupt. */
	models[5] = 2;
	cr_assert_eq(codec_cost_decode(b.data, b.size, decoded, N, &ctx), TALLY_E_CORRUPT);
	models[5] = 1;
	check_truncation_and_trailing("priced", decode_cost_any, &b, N);
	check_corruption_survived("priced", decode_cost_any, &b, N, 2000);
	bytebuf_free(&b);
}

Test(codec, priced_decoder_rejects_overflowing_predictions)
{
	uint32_t classes[2] = { 0, 0 }, models[2] = { 0, 0 };
	uint64_t tin[2] = { 2, 2 }, tout[2] = { 0, 0 };
	codec_cost_context ctx = { classes, models, tin, tout };
	int64_t decoded[2];
	/* rate_in 2^63: 2 x 2^63 overflows 64 bits. */
	const uint8_t product[] = { 0x06, 0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
				    0x80, 0x80, 0x01, 0x00, 0x00, 0x00 };
	cr_assert_eq(codec_cost_decode(product, sizeof product, decoded, 2, &ctx),
		     TALLY_E_CORRUPT);
	/* rate_in 10^6 predicts 2; a residual of INT64_MAX overflows. */
	const uint8_t sum[] = { 0x06, 0x01, 0xc0, 0x84, 0x3d, 0x00, 0x00, 0xfe, 0xff, 0xff,
				0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
	cr_assert_eq(codec_cost_decode(sum, sizeof sum, decoded, 2, &ctx), TALLY_E_CORRUPT);
	/* The same with residual 5: 2 + 5. */
	const uint8_t fine[] = { 0x06, 0x01, 0xc0, 0x84, 0x3d, 0x00, 0x00, 0x0a };
	cr_assert_eq(codec_cost_decode(fine, sizeof fine, decoded, 2, &ctx), 0);
	cr_assert_eq(decoded[0], 7);
	cr_assert_eq(decoded[1], 7);
	const uint8_t no_models[] = { 0x06, 0x00, 0x00, 0x0a };
	cr_assert_eq(codec_cost_decode(no_models, sizeof no_models, decoded, 2, &ctx),
		     TALLY_E_CORRUPT);
}

/* Property: list-priced LLM calls mixed with flat fees, credits, rows priced
 * by another rounding, rows with no tokens, huge token counts that overflow
 * any rate, and tenants whose cost has nothing to do with tokens. Exact
 * round trip, never larger than CLASSED or plain. */
Test(codec, priced_round_trips_mixed_columns_and_never_loses)
{
	for (int round = 0; round < 300; round++) {
		size_t count = random_count();
		uint32_t model_count = 1 + (uint32_t)rng_below(rng_below(8) ? 5 : 300);
		uint32_t *classes = xmalloc(count * sizeof *classes);
		uint32_t *models = xmalloc(count * sizeof *models);
		uint64_t *tin = xmalloc(count * sizeof *tin), *tout = xmalloc(count * sizeof *tout);
		int64_t *cost = xmalloc(count * sizeof *cost);
		uint64_t in_rate = rng_below(20000), out_rate = rng_below(80000);
		unsigned style = (unsigned)rng_below(3);
		for (size_t i = 0; i < count; i++) {
			classes[i] = (uint32_t)rng_below(4);
			models[i] = (uint32_t)rng_below(model_count);
			tin[i] = classes[i] == 0 ? 1 + rng_below(100000) : 0;
			tout[i] = classes[i] == 0 ? rng_below(16000) : 0;
			uint64_t mi = in_rate + models[i] * 100, mo = out_rate + models[i] * 300;
			cost[i] = list_price(tin[i], tout[i], mi, mo);
			switch (rng_below(12)) {
			case 0: cost[i] = classes[i] == 1 ? 1000 : cost[i]; break;     /* flat fee */
			case 1: cost[i] = -(int64_t)rng_below(5000); break;            /* credit */
			case 2: cost[i] = (int64_t)((tin[i] * mi + tout[i] * mo) / 1000); break;
			case 3:
				if (style == 0) { /* overflows any non-zero rate */
					tin[i] = UINT64_MAX - rng_below(10);
					cost[i] = (int64_t)rng_next();
				}
				break;
			default: break;
			}
			if (style == 1)
				cost[i] = (int64_t)rng_next(); /* nothing to do with tokens */
		}
		codec_cost_context ctx = { classes, models, tin, tout };
		bytebuf b = { 0 };
		cr_assert_eq(codec_cost_encode(&b, cost, count, &ctx), 0);
		bytebuf plain = { 0 };
		cr_assert_eq(codec_i64_encode(&plain, cost, count), 0);
		cr_assert(b.size <= plain.size, "round %d: %zu > plain %zu", round, b.size, plain.size);
		int64_t *decoded = xmalloc(count * sizeof *decoded);
		cr_assert_eq(codec_cost_decode(b.data, b.size, decoded, count, &ctx), 0,
			     "round %d (mode %u)", round, b.data[0]);
		for (size_t i = 0; i < count; i++)
			cr_assert_eq(decoded[i], cost[i], "round %d row %zu", round, i);
		free(decoded);
		bytebuf_free(&b);
		bytebuf_free(&plain);
		free(classes);
		free(models);
		free(tin);
		free(tout);
		free(cost);
	}
}

/* ---- codes CLASSED ---------------------------------------------------------------------- */

Test(codec, classed_codes_list_each_class_codes_then_narrow_indexes)
{
	/* 64 rows of classes 0, 1, 2, 0, 1, 2 ... (as decode_codes_classed_any
	 * makes them): class 0 (22 rows) uses codes 3 and 7, alternating, class
	 * 1 only 5, class 2 only 9. Plain: width 4, 1 + 32 bytes. CLASSED: fe,
	 * 3 classes; class 0: 2 codes, 3 then step 4, 22 one-bit indexes
	 * 0,1,0,1... (aa aa 2a); class 1: 1 code, 5; class 2: 1 code, 9. */
	uint32_t values[64], classes[64];
	for (int i = 0; i < 64; i++) {
		classes[i] = (uint32_t)(i % 3);
		values[i] = i % 3 == 1 ? 5 : i % 3 == 2 ? 9 : (i / 3) % 2 ? 7 : 3;
	}
	bytebuf b = { 0 };
	cr_assert_eq(codec_codes_encode_classed(&b, values, 64, classes), 0);
	const uint8_t expected[] = { 0xfe, 0x03, 0x02, 0x03, 0x04, 0xaa, 0xaa, 0x2a,
				     0x01, 0x05, 0x01, 0x09 };
	assert_bytes(&b, expected, sizeof expected, "classed codes");
	uint32_t decoded[64];
	cr_assert_eq(codec_codes_decode_classed(b.data, b.size, decoded, 64, classes), 0);
	cr_assert_eq(memcmp(decoded, values, sizeof values), 0);
	cr_assert_eq(codec_codes_decode(b.data, b.size, decoded, 64), TALLY_E_CORRUPT, "plain");
	cr_assert_eq(codec_codes_decode_classed(b.data, b.size, decoded, 64, NULL), TALLY_E_CORRUPT);
	check_truncation_and_trailing("classed codes", decode_codes_classed_any, &b, 64);
	struct {
		const char *why;
		size_t at;
		uint8_t byte;
	} bad[] = {
		{ "no codes in a class", 2, 0x00 },
		{ "more codes than rows", 8, 0x16 },
		{ "a step of 0", 4, 0x00 },
		{ "padding bit set", 7, 0xea },
	};
	for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
		uint8_t copy[sizeof expected];
		memcpy(copy, expected, sizeof copy);
		copy[bad[c].at] = bad[c].byte;
		cr_assert_eq(codec_codes_decode_classed(copy, sizeof copy, decoded, 64, classes),
			     TALLY_E_CORRUPT, "%s", bad[c].why);
	}
	/* An index past the class's codes: 3 codes at width 2, a row says 3. */
	const uint8_t past[] = { 0xfe, 0x01, 0x03, 0x00, 0x01, 0x01, 0x1b };
	uint32_t zeros[3] = { 0 };
	cr_assert_eq(codec_codes_decode_classed(past, sizeof past, decoded, 3, zeros),
		     TALLY_E_CORRUPT);
	const uint8_t within[] = { 0xfe, 0x01, 0x03, 0x00, 0x01, 0x01, 0x12 };
	cr_assert_eq(codec_codes_decode_classed(within, sizeof within, decoded, 3, zeros), 0);
	cr_assert(decoded[0] == 2 && decoded[1] == 0 && decoded[2] == 1, "%u %u %u", decoded[0],
		  decoded[1], decoded[2]);
	/* A class not below the class count. */
	classes[3] = 3;
	cr_assert_eq(codec_codes_decode_classed(b.data, b.size, decoded, 64, classes),
		     TALLY_E_CORRUPT);
	bytebuf_free(&b);
}

/* Property: random classes and codes (few per class, many, or some past the
 * CLASSED code limit), exact round trip, never larger than plain. */
Test(codec, classed_codes_round_trip_random_columns_and_never_lose_to_plain)
{
	for (int round = 0; round < 400; round++) {
		size_t count = random_count();
		uint32_t class_count = 1 + (uint32_t)rng_below(rng_below(4) ? 8 : CODEC_CLASSES_MAX + 2);
		uint32_t spread = (uint32_t)(1 + rng_below(rng_below(8) ? 40 : 6000));
		uint32_t *classes = xmalloc(count * sizeof *classes);
		uint32_t *values = xmalloc(count * sizeof *values);
		for (size_t i = 0; i < count; i++) {
			classes[i] = (uint32_t)rng_below(class_count);
			/* each class draws from a window of its own */
			values[i] = classes[i] * 3 + (uint32_t)rng_below(spread);
			if (rng_below(500) == 0)
				values[i] = (uint32_t)rng_next();
		}
		bytebuf b = { 0 }, plain = { 0 };
		cr_assert_eq(codec_codes_encode_classed(&b, values, count, classes), 0);
		cr_assert_eq(codec_codes_encode(&plain, values, count), 0);
		cr_assert(b.size <= plain.size, "round %d: %zu > plain %zu", round, b.size, plain.size);
		uint32_t *decoded = xmalloc(count * sizeof *decoded);
		cr_assert_eq(codec_codes_decode_classed(b.data, b.size, decoded, count, classes), 0,
			     "round %d (first byte %02x)", round, b.size ? b.data[0] : 0);
		cr_assert(count == 0 || memcmp(decoded, values, count * sizeof *values) == 0,
			  "round %d", round);
		free(decoded);
		bytebuf_free(&b);
		bytebuf_free(&plain);
		free(classes);
		free(values);
	}
}
