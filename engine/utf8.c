/*
 * utf8.c — the one check of text the store takes (tally.h,
 * tally_utf8_invalid_at): UTF-8 as PostgreSQL accepts it, so that every
 * string stored can be exported to the billing database.
 *
 * Runs on every string of every event before the store lock: eight bytes
 * at a time while they are ASCII without NUL (nearly every string), then
 * one sequence at a time.
 */
#include <stdint.h>
#include <string.h>

#include "tally.h"

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

size_t tally_utf8_invalid_at(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		if (n - i >= 8) {
			uint64_t x;
			memcpy(&x, s + i, 8);
			/* No byte >= 0x80, and no zero byte (the classic test:
			 * a byte's high bit survives x - 1 only where it was 0). */
			if (!((x | ((x - ONES) & ~x)) & HIGHS)) {
				i += 8;
				continue;
			}
		}
		uint8_t c = s[i];
		if (c >= 0x01 && c < 0x80) {
			i++;
			continue;
		}
		size_t len;
		uint8_t lo = 0x80, hi = 0xBF;
		if (c >= 0xC2 && c <= 0xDF) {
			len = 2;
		} else if (c >= 0xE0 && c <= 0xEF) {
			len = 3;
			if (c == 0xE0)
				lo = 0xA0; /* shorter forms */
			else if (c == 0xED)
				hi = 0x9F; /* surrogates */
		} else if (c >= 0xF0 && c <= 0xF4) {
			len = 4;
			if (c == 0xF0)
				lo = 0x90; /* shorter forms */
			else if (c == 0xF4)
				hi = 0x8F; /* past U+10FFFF */
		} else {
			return i; /* NUL, a continuation byte, C0, C1, F5..FF */
		}
		if (n - i < len)
			return i;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return i + 1;
		for (size_t k = 2; k < len; k++)
			if (s[i + k] < 0x80 || s[i + k] > 0xBF)
				return i + k;
		i += len;
	}
	return SIZE_MAX;
}
