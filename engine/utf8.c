/*
 * utf8.c — the one check of text the store takes (tally.h,
 * tally_utf8_invalid_at): UTF-8 as PostgreSQL accepts it, so that every
 * string stored can be exported to the billing database.
 *
 * One sequence at a time: the store's ingest reads ASCII eight bytes at a
 * time inline first (store.c, str_utf8) and calls this only for the rare
 * string that is not plain ASCII without NUL.
 */
#include <stdint.h>

#include "tally.h"

size_t tally_utf8_invalid_at(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
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
