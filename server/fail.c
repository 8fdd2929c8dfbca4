/*
 * fail.c — server_fail and server_text_utf8 (fail.h).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fail.h"
#include "tally.h"

int server_fail(char *errmsg, int status, const char *fmt, ...)
{
	if (errmsg) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(errmsg, TALLY_ERRMSG_SIZE, fmt, ap);
		va_end(ap);
	}
	return status;
}

/* The length of the sequence that a lead byte c starts, 0 when c starts none. */
static size_t utf8_sequence_length(uint8_t c)
{
	return c < 0x80 ? 1 : c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
}

char *server_text_utf8(char *s)
{
	uint8_t *b = (uint8_t *)s;
	size_t n = strlen(s);
	if (tally_utf8_invalid_at(b, n) == SIZE_MAX)
		return s;
	for (size_t i = 0; i < n;) {
		size_t len = utf8_sequence_length(b[i]);
		if (len && len <= n - i && tally_utf8_invalid_at(b + i, len) == SIZE_MAX) {
			i += len;
		} else {
			b[i] = '?'; /* a byte no valid sequence starts at */
			i++;
		}
	}
	return s;
}
