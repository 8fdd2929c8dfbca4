/*
 * test_dir.h — a temporary directory for one test: made under /tmp with
 * mkdtemp, emptied (one level: files only) and removed at the end. Every
 * failure is a criterion assertion that names the path.
 */
#ifndef TALLY_TEST_DIR_H
#define TALLY_TEST_DIR_H

#include <stdbool.h>

typedef struct test_dir {
	char path[64];
} test_dir;

/* Makes /tmp/tally-test-<name>-XXXXXX (name at most 24 bytes). */
void test_dir_make(test_dir *dir, const char *name);

/* Unlinks every file in the directory, then the directory itself. */
void test_dir_remove(test_dir *dir);

/* Whether the file system holding directory `path` takes O_DIRECT opens
 * (a probe file is created there and removed). */
bool test_dir_direct_io_supported(const char *path);

#endif /* TALLY_TEST_DIR_H */
