/*
 * latency.h — a short scheduler slice for the threads a dashboard waits on.
 */
#ifndef TALLY_SERVER_LATENCY_H
#define TALLY_SERVER_LATENCY_H

#include <stdint.h>
#include <sys/types.h>

/* Asks the kernel to give the calling thread a scheduler slice of
 * slice_us microseconds (0: leave the kernel's default). Returns 0, or a
 * negative errno when the kernel refused; the thread then runs with the
 * default slice, which is only slower to be scheduled, never wrong. */
int latency_slice_set(uint32_t slice_us);

/* The scheduler slice of thread tid (0: the caller) in microseconds, into
 * *slice_us: 0 on a kernel without slices for ordinary threads (before
 * 6.6). 0, or a negative errno. */
int latency_slice_get(pid_t tid, uint32_t *slice_us);

#endif
