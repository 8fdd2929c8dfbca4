/*
 * threads.h — finding a thread of this process by the name it was given
 * (pthread_setname_np), for tests of per-thread settings.
 */
#ifndef TALLY_TEST_THREADS_H
#define TALLY_TEST_THREADS_H

#include <sys/types.h>

/* The id of this process's thread named `name`, or -1 when there is none
 * after about a second (a name is set from the creating thread, so it may
 * lag the thread's start). */
pid_t test_thread_named(const char *name);

#endif /* TALLY_TEST_THREADS_H */
