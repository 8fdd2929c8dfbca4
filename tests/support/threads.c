/*
 * threads.c — threads.h.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "threads.h"

#define TRIES 100
#define TRY_INTERVAL_US (10 * 1000)

pid_t test_thread_named(const char *name)
{
	for (int attempt = 0; attempt < TRIES; attempt++) {
		DIR *tasks = opendir("/proc/self/task");
		cr_assert_not_null(tasks);
		struct dirent *d;
		while ((d = readdir(tasks))) {
			if (d->d_name[0] == '.')
				continue;
			char path[300], comm[64] = "";
			snprintf(path, sizeof(path), "/proc/self/task/%s/comm", d->d_name);
			FILE *f = fopen(path, "r");
			if (!f)
				continue;
			if (fgets(comm, sizeof(comm), f))
				comm[strcspn(comm, "\n")] = 0;
			fclose(f);
			if (!strcmp(comm, name)) {
				pid_t tid = (pid_t)atoi(d->d_name);
				closedir(tasks);
				return tid;
			}
		}
		closedir(tasks);
		usleep(TRY_INTERVAL_US);
	}
	return -1;
}
