/*
 * test_dir.c — temporary directories for tests (see test_dir.h).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tally_io.h"
#include "test_dir.h"

void test_dir_make(test_dir *dir, const char *name)
{
	int n = snprintf(dir->path, sizeof(dir->path), "/tmp/tally-test-%s-XXXXXX", name);
	cr_assert(n > 0 && (size_t)n < sizeof(dir->path), "directory name too long: %s", name);
	cr_assert_not_null(mkdtemp(dir->path), "mkdtemp %s: %s", dir->path, strerror(errno));
}

static int unlink_entry(void *ctx, const char *name)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/%s", (const char *)ctx, name);
	cr_assert_eq(unlink(path), 0, "unlink %s: %s", path, strerror(errno));
	return 0;
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
