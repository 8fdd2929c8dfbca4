/*
 * test_dir.c — temporary directories for tests (see test_dir.h).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tally_io.h"
#include "test_dir.h"

/* Makes /tmp/tally-test-<name>-XXXXXX into path (size bytes). */
static void make_dir(char *path, size_t size, const char *name)
{
	int n = snprintf(path, size, "/tmp/tally-test-%s-XXXXXX", name);
	cr_assert(n > 0 && (size_t)n < size, "directory name too long: %s", name);
	cr_assert_not_null(mkdtemp(path), "mkdtemp %s: %s", path, strerror(errno));
}

void test_dir_make(test_dir *dir, const char *name)
{
	make_dir(dir->path, sizeof(dir->path), name);
}

static int unlink_entry(void *ctx, const char *name)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/%s", (const char *)ctx, name);
	cr_assert_eq(unlink(path), 0, "unlink %s: %s", path, strerror(errno));
	return 0;
}

static int count_seg_file(void *ctx, const char *name)
{
	size_t n = strlen(name);
	*(int *)ctx += n > 4 && strcmp(name + n - 4, ".seg") == 0;
	return 0;
}

int test_dir_segment_files(const char *store_dir)
{
	char segments[4200];
	snprintf(segments, sizeof segments, "%s/segments", store_dir);
	int count = 0;
	const tally_io *io = tally_io_default();
	int rc = io->list_dir(io, segments, count_seg_file, &count);
	cr_assert_eq(rc, 0, "list %s: %s", segments, strerror(-rc));
	return count;
}

bool test_dir_direct_io_supported(const char *path)
{
	char probe[4200];
	snprintf(probe, sizeof probe, "%s/direct-probe", path);
	int fd = open(probe, O_WRONLY | O_CREAT | O_DIRECT, 0600);
	if (fd >= 0) {
		close(fd);
		unlink(probe);
	}
	return fd >= 0;
}

void test_dir_remove(test_dir *dir)
{
	const tally_io *io = tally_io_default();
	cr_assert_eq(io->list_dir(io, dir->path, unlink_entry, dir->path), 0);
	cr_assert_eq(rmdir(dir->path), 0, "rmdir %s: %s", dir->path, strerror(errno));
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	cr_assert_eq(remove(path), 0, "remove %s: %s", path, strerror(errno));
	return 0;
}

void test_dir_remove_tree(const char *path)
{
	cr_assert_eq(nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0, "remove %s: %s", path,
		     strerror(errno));
}

fault_io *test_dir_store_setup(char *dir, size_t dir_size, const char *name, int64_t now_us)
{
	make_dir(dir, dir_size, name);
	fault_io *fio = fault_io_create();
	cr_assert_not_null(fio);
	fault_io_clock_set_us(fio, now_us);
	return fio;
}

void test_dir_store_teardown(const char *dir, fault_io *fio)
{
	test_dir_remove_tree(dir);
	fault_io_destroy(fio);
}
