/*
 * latency.c — latency.h.
 *
 * Linux's EEVDF scheduler (6.6 and later; custom slices for ordinary
 * threads since 6.12) gives each runnable thread a virtual deadline of its
 * eligible time plus its slice. A thread that wakes with a short slice has
 * an early deadline and so preempts a thread in the middle of a long
 * slice, instead of waiting up to the default slice (about 1.4 ms on
 * this 2-core machine) for it to end. Its share of the CPU is unchanged:
 * that is its weight (nice), not its slice. A query thread or the loop
 * run for tens to hundreds of microseconds between sleeps, so a short
 * slice costs them nothing and saves a dashboard's answer the wait behind
 * the flush or the ingest producers on a busy core.
 *
 * The slice is sched_attr.sched_runtime of SCHED_OTHER (glibc 2.36 has no
 * wrapper for sched_setattr: the raw system call). Kernels before 6.12
 * ignore it for SCHED_OTHER; no privilege is needed either way.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "latency.h"

/* The kernel's struct sched_attr (include/uapi/linux/sched/types.h),
 * version 1 (56 bytes). */
struct sched_attr_v1 {
	uint32_t size;
	uint32_t sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime;
	uint64_t sched_deadline;
	uint64_t sched_period;
	uint32_t sched_util_min;
	uint32_t sched_util_max;
};

static int attr_get(pid_t tid, struct sched_attr_v1 *a)
{
	memset(a, 0, sizeof(*a));
	return syscall(SYS_sched_getattr, tid, a, sizeof(*a), 0) != 0 ? -errno : 0;
}

int latency_slice_get(pid_t tid, uint32_t *slice_us)
{
	struct sched_attr_v1 a;
	int rc = attr_get(tid, &a);
	*slice_us = rc ? 0 : (uint32_t)(a.sched_runtime / 1000u);
	return rc;
}

int latency_slice_set(uint32_t slice_us)
{
	if (!slice_us)
		return 0;
	struct sched_attr_v1 a;
	/* Keep the thread's policy and nice as they are. */
	int rc = attr_get(0, &a);
	if (rc)
		return rc;
	a.size = sizeof(a);
	a.sched_flags = 0;
	a.sched_runtime = (uint64_t)slice_us * 1000u;
	if (syscall(SYS_sched_setattr, 0, &a, 0) != 0)
		return -errno;
	return 0;
}
