/*
 * test_utf8.c — tally_utf8_invalid_at, the check every string of an event
 * passes (TALLY_REASON_NOT_UTF8): UTF-8 as PostgreSQL takes it, without
 * NUL.
 *
 * Description: exact cases at each edge of the encoding (lengths, the
 * shortest-form and surrogate bounds, U+10FFFF, truncation, NUL, ASCII runs
 * that the eight-byte path reads), then random strings against an oracle
 * that decodes code points by value (a different method from the
 * implementation's table of byte ranges), with the seed printed.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "support/rng.h"
#include "tally.h"

static size_t check(const char *s, size_t n)
{
	return tally_utf8_invalid_at((const uint8_t *)s, n);
}

#define OK SIZE_MAX

Test(utf8, edges_of_the_encoding)
{
	static const struct {
		const char *s;
		size_t n;
		size_t want;
	} cases[] = {
		{"", 0, OK},
		{"plain ascii, longer than eight bytes", 36, OK},
		{"\x7f", 1, OK},
		{"caf\xc3\xa9", 5, OK},                 /* U+00E9 */
		{"\xc2\x80", 2, OK},                    /* U+0080, the first two-byte */
		{"\xdf\xbf", 2, OK},                    /* U+07FF */
		{"\xe0\xa0\x80", 3, OK},                /* U+0800 */
		{"\xe6\x97\xa5\xe6\x9c\xac", 6, OK},    /* two CJK characters */
		{"\xed\x9f\xbf", 3, OK},                /* U+D7FF, before the surrogates */
		{"\xee\x80\x80", 3, OK},                /* U+E000, after them */
		{"\xef\xbf\xbf", 3, OK},                /* U+FFFF */
		{"\xf0\x90\x80\x80", 4, OK},            /* U+10000 */
		{"\xf0\x9f\x98\x80", 4, OK},            /* an emoji */
		{"\xf4\x8f\xbf\xbf", 4, OK},            /* U+10FFFF, the last */
		{"a\0b", 3, 1},                         /* NUL */
		{"abcdefgh\0", 9, 8},                   /* NUL after an eight-byte run */
		{"\x80", 1, 0},                         /* a continuation byte alone */
		{"\xc0\x80", 2, 0},                     /* overlong NUL */
		{"\xc1\xbf", 2, 0},                     /* overlong */
		{"\xe0\x9f\xbf", 3, 1},                 /* overlong three-byte */
		{"\xed\xa0\x80", 3, 1},                 /* U+D800, a surrogate */
		{"\xf0\x8f\xbf\xbf", 4, 1},             /* overlong four-byte */
		{"\xf4\x90\x80\x80", 4, 1},             /* U+110000 */
		{"\xf5\x80\x80\x80", 4, 0},             /* past any code point */
		{"\xff\xfe", 2, 0},
		{"abc\xc3", 4, 3},                      /* truncated two-byte */
		{"\xe6\x97", 2, 0},                     /* truncated three-byte */
		{"\xe6\x97\x41", 3, 2},                 /* a continuation missing */
		{"\xf0\x9f\x98\x41", 4, 3},
		{"abcdefghij\xc3\x28", 12, 11},         /* after an eight-byte run */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_expect_eq(check(cases[i].s, cases[i].n), cases[i].want,
			     "case %zu: %zu, want %zu", i, check(cases[i].s, cases[i].n),
			     cases[i].want);
}

/* The oracle: the length of the longest prefix of whole valid sequences,
 * decoding each code point by value; n when all of s is valid. */
static size_t valid_prefix(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t c = s[i];
		size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3
			   : (c >> 3) == 30 ? 4 : 0;
		if (!len || n - i < len)
			return i;
		uint32_t cp = len == 1 ? c : c & (0x7f >> len);
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] >> 6) != 2)
				return i;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		static const uint32_t shortest[5] = {0, 0, 0x80, 0x800, 0x10000};
		if (cp == 0 || cp < shortest[len] || (cp >= 0xd800 && cp <= 0xdfff) ||
		    cp > 0x10ffff)
			return i;
		i += len;
	}
	return n;
}

/* Appends code point cp as UTF-8 (any value up to 0x1fffff, surrogates and
 * all: the oracle decides). */
static size_t put_code_point(uint8_t *p, uint32_t cp)
{
	if (cp < 0x80) {
		p[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		p[0] = (uint8_t)(0xc0 | cp >> 6);
		p[1] = (uint8_t)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		p[0] = (uint8_t)(0xe0 | cp >> 12);
		p[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
		p[2] = (uint8_t)(0x80 | (cp & 0x3f));
		return 3;
	}
	p[0] = (uint8_t)(0xf0 | (cp >> 18 & 0x07));
	p[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
	p[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
	p[3] = (uint8_t)(0x80 | (cp & 0x3f));
	return 4;
}

Test(utf8, random_strings_against_a_decoding_oracle)
{
	test_rng r;
	test_rng_seed(&r, "test_utf8", "random_strings_against_a_decoding_oracle");
	enum { ROUNDS = 200000, SIZE_MAX_BYTES = 64 };
	uint64_t valid = 0;
	for (int round = 0; round < ROUNDS; round++) {
		uint8_t s[SIZE_MAX_BYTES + 4];
		size_t n = 0, want = test_rng_below(&r, SIZE_MAX_BYTES);
		while (n < want) {
			uint64_t kind = test_rng_below(&r, 100);
			if (kind < 70) /* ASCII, the eight-byte path's */
				s[n++] = (uint8_t)(0x20 + test_rng_below(&r, 0x5f));
			else if (kind < 95) /* a code point of any length, valid or not */
				n += put_code_point(s + n, (uint32_t)test_rng_below(&r, 0x110010));
			else if (kind < 98) /* any byte */
				s[n++] = (uint8_t)test_rng_next(&r);
			else
				s[n++] = 0;
		}
		size_t got = tally_utf8_invalid_at(s, n), prefix = valid_prefix(s, n);
		if (prefix == n) {
			cr_assert_eq(got, OK,
				     "round %d: a valid string of %zu bytes refused at %zu",
				     round, n, got);
			valid++;
			continue;
		}
		/* The byte named lies in the first bad sequence, and what comes
		 * before that sequence is valid. */
		cr_assert(got >= prefix && got < prefix + 4 && got < n,
			  "round %d: first bad sequence at %zu, named byte %zu of %zu", round,
			  prefix, got, n);
		cr_assert_eq(tally_utf8_invalid_at(s, prefix), OK, "round %d", round);
	}
	cr_expect_gt(valid, ROUNDS / 10, "only %llu valid strings drawn",
		     (unsigned long long)valid);
	cr_expect_lt(valid, ROUNDS * 9 / 10, "only %llu invalid strings drawn",
		     (unsigned long long)(ROUNDS - valid));
}
