/*
 * fail.c — server_fail (fail.h).
 */
#include <stdarg.h>
#include <stdio.h>

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
