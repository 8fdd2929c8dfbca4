/*
 * stress_fail.h — how the ThreadSanitizer stress programs (tests/tsan/)
 * report a failed check: one line on stderr, and a count the program's
 * exit status comes from. Safe from any thread.
 */
#ifndef TALLY_TSAN_STRESS_FAIL_H
#define TALLY_TSAN_STRESS_FAIL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

__attribute__((format(printf, 3, 4)))
static inline void stress_fail(atomic_int *failures, const char *program, const char *format, ...)
{
	va_list args;
	va_start(args, format);
	flockfile(stderr);
	fprintf(stderr, "%s: ", program);
	vfprintf(stderr, format, args);
	fprintf(stderr, "\n");
	funlockfile(stderr);
	va_end(args);
	atomic_fetch_add(failures, 1);
}

#endif /* TALLY_TSAN_STRESS_FAIL_H */
