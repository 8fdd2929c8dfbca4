/*
 * test_dir.h — a temporary directory for one test: made under /tmp with
 * mkdtemp, emptied (one level: files only, or a whole tree) and removed at
 * the end; and a store test's directory with its fault-injecting I/O.
 * Every failure is a criterion assertion that names the path.
 */
#ifndef TALLY_TEST_DIR_H
#define TALLY_TEST_DIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fault_io.h"

typedef struct test_dir {
	char path[64];
} test_dir;

/* Makes /tmp/tally-test-<name>-XXXXXX (name at most 24 bytes). */
void test_dir_make(test_dir *dir, const char *name);

/* Unlinks every file in the directory, then the directory itself. */
void test_dir_remove(test_dir *dir);

/* Removes path and everything below it, directories included (a store's
 * segments/ and wal/), without following links. */
void test_dir_remove_tree(const char *path);

/* A store test's setup: makes /tmp/tally-test-<name>-XXXXXX into dir (of
 * dir_size bytes) and returns a fault-injecting I/O layer (fault_io.h)
 * with its clock at now_us, for the store to open through. */
fault_io *test_dir_store_setup(char *dir, size_t dir_size, const char *name, int64_t now_us);

/* Its teardown: removes dir and all below it, and destroys fio. */
void test_dir_store_teardown(const char *dir, fault_io *fio);

/* The segment files (names ending in .seg) in store_dir/segments: what a
 * compaction or the last unpin of a retired file left on disk. */
int test_dir_segment_files(const char *store_dir);

/* Whether the file system holding directory `path` takes O_DIRECT opens
 * (a probe file is created there and removed). */
bool test_dir_direct_io_supported(const char *path);

#endif /* TALLY_TEST_DIR_H */
