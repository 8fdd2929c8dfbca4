/*
 * test_power_io.c — the power-cut simulation itself: what survives a cut is
 * exactly what was fsynced (file data) and what a directory fsync committed
 * (creates, renames, unlinks). The crash test relies on this model.
 *
 * Description: each test drives power_io by hand in a temporary directory,
 * cuts, and checks the directory with plain system calls.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/fault_io.h"
#include "support/power_io.h"
#include "support/test_dir.h"

static int64_t size_of(const char *dir, const char *name)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	struct stat st;
	return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

static int open_in(const tally_io *io, const char *dir, const char *name, int flags)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = io->open(io, path, flags, 0644);
	cr_assert_geq(fd, 0, "open %s: %d", path, fd);
	return fd;
}

Test(power_io, unsynced_appends_are_lost_synced_ones_kept)
{
	test_dir dir;
	test_dir_make(&dir, "power");
	power_io *p = power_io_create(tally_io_default());
	const tally_io *io = power_io_table(p);
	int fd = open_in(io, dir.path, "log", O_CREAT | O_RDWR);
	cr_assert_eq(io->fsync_dir(io, dir.path), 0); /* the name is durable */
	cr_assert_eq(tally_io_write_all(io, fd, "0123456789", 10, 0), 0);
	cr_assert_eq(io->fdatasync(io, fd), 0);
	cr_assert_eq(tally_io_write_all(io, fd, "abcdef", 6, 10), 0);
	cr_assert_eq(size_of(dir.path, "log"), 16);
	cr_assert_eq(power_io_cut(p), 0);
	cr_expect_eq(size_of(dir.path, "log"), 10, "the unsynced 6 bytes are gone");
	close(fd);
	power_io_destroy(p);
	test_dir_remove(&dir);
}

Test(power_io, a_create_without_directory_fsync_is_lost)
{
	test_dir dir;
	test_dir_make(&dir, "power");
	power_io *p = power_io_create(tally_io_default());
	const tally_io *io = power_io_table(p);
	int fd = open_in(io, dir.path, "new", O_CREAT | O_RDWR);
	cr_assert_eq(tally_io_write_all(io, fd, "data", 4, 0), 0);
	cr_assert_eq(io->fsync(io, fd), 0); /* data synced, name not */
	cr_assert_eq(power_io_cut(p), 0);
	cr_expect_eq(size_of(dir.path, "new"), -1);
	close(fd);
	power_io_destroy(p);
	test_dir_remove(&dir);
}

Test(power_io, rename_over_and_unlink_revert_until_the_directory_is_synced)
{
	test_dir dir;
	test_dir_make(&dir, "power");
	power_io *p = power_io_create(tally_io_default());
	const tally_io *io = power_io_table(p);
	/* A durable "old" file, and a durable "gone" file. */
	char path[256], tmp[256];
	int fd = open_in(io, dir.path, "current", O_CREAT | O_RDWR);
	cr_assert_eq(tally_io_write_all(io, fd, "old", 3, 0), 0);
	cr_assert_eq(io->fsync(io, fd), 0);
	io->close(io, fd);
	fd = open_in(io, dir.path, "gone", O_CREAT | O_RDWR);
	cr_assert_eq(tally_io_write_all(io, fd, "bytes", 5, 0), 0);
	cr_assert_eq(io->fsync(io, fd), 0);
	io->close(io, fd);
	cr_assert_eq(io->fsync_dir(io, dir.path), 0);
	/* Replace "current" by rename, and unlink "gone", without a directory
	 * fsync: a cut brings both back as they were. */
	fd = open_in(io, dir.path, "current.tmp", O_CREAT | O_RDWR);
	cr_assert_eq(tally_io_write_all(io, fd, "newer", 5, 0), 0);
	cr_assert_eq(io->fsync(io, fd), 0);
	io->close(io, fd);
	snprintf(tmp, sizeof(tmp), "%s/current.tmp", dir.path);
	snprintf(path, sizeof(path), "%s/current", dir.path);
	cr_assert_eq(io->rename(io, tmp, path), 0);
	snprintf(path, sizeof(path), "%s/gone", dir.path);
	cr_assert_eq(io->unlink(io, path), 0);
	cr_assert_eq(size_of(dir.path, "current"), 5);
	cr_assert_eq(size_of(dir.path, "gone"), -1);
	cr_assert_eq(power_io_cut(p), 0);
	cr_expect_eq(size_of(dir.path, "current"), 3, "the old content is back");
	cr_expect_eq(size_of(dir.path, "current.tmp"), -1, "the never-durable temp file is gone");
	cr_expect_eq(size_of(dir.path, "gone"), 5, "the unlinked file is back");
	power_io_destroy(p);
	test_dir_remove(&dir);
}

Test(power_io, a_directory_fsync_makes_the_changes_durable)
{
	test_dir dir;
	test_dir_make(&dir, "power");
	power_io *p = power_io_create(tally_io_default());
	const tally_io *io = power_io_table(p);
	int fd = open_in(io, dir.path, "a", O_CREAT | O_RDWR);
	cr_assert_eq(tally_io_write_all(io, fd, "aaaa", 4, 0), 0);
	cr_assert_eq(io->fsync(io, fd), 0);
	io->close(io, fd);
	char from[256], to[256];
	snprintf(from, sizeof(from), "%s/a", dir.path);
	snprintf(to, sizeof(to), "%s/b", dir.path);
	cr_assert_eq(io->rename(io, from, to), 0);
	cr_assert_eq(io->fsync_dir(io, dir.path), 0);
	cr_assert_eq(power_io_cut(p), 0);
	cr_expect_eq(size_of(dir.path, "a"), -1);
	cr_expect_eq(size_of(dir.path, "b"), 4);
	power_io_destroy(p);
	test_dir_remove(&dir);
}

/* A power_io over inner in a fresh directory, and in it the file "log",
 * created and its name made durable. */
static int durable_log_over(test_dir *dir, power_io **p, const tally_io *inner)
{
	test_dir_make(dir, "power");
	*p = power_io_create(inner);
	const tally_io *io = power_io_table(*p);
	int fd = open_in(io, dir->path, "log", O_CREAT | O_RDWR);
	cr_assert_eq(io->fsync_dir(io, dir->path), 0);
	return fd;
}

static int durable_log(test_dir *dir, power_io **p)
{
	return durable_log_over(dir, p, tally_io_default());
}

Test(power_io, after_the_power_fails_every_change_is_eio_and_the_cut_keeps_the_synced_bytes)
{
	test_dir dir;
	power_io *p;
	int fd = durable_log(&dir, &p);
	const tally_io *io = power_io_table(p);
	cr_assert_eq(tally_io_write_all(io, fd, "0123456789", 10, 0), 0);
	cr_assert_eq(io->fdatasync(io, fd), 0);
	/* The 2nd change from here is the first that fails: the write goes
	 * through, its fdatasync does not. */
	power_io_fail_after(p, 2);
	cr_assert_eq(io->pwrite(io, fd, "abcdef", 6, 10), 6);
	cr_expect_eq(power_io_failed(p), 0);
	cr_expect_eq(io->fdatasync(io, fd), -EIO);
	cr_expect_eq(power_io_failed(p), 1);
	cr_expect_eq(io->pwrite(io, fd, "ghij", 4, 16), -EIO);
	cr_expect_eq(size_of(dir.path, "log"), 16, "a failed write changes nothing");
	char path[256];
	snprintf(path, sizeof(path), "%s/other", dir.path);
	cr_expect_eq(io->open(io, path, O_CREAT | O_RDWR, 0644), -EIO);
	cr_expect_eq(size_of(dir.path, "other"), -1);
	cr_expect_eq(io->rename(io, path, path), -EIO);
	snprintf(path, sizeof(path), "%s/log", dir.path);
	cr_expect_eq(io->unlink(io, path), -EIO);
	cr_expect_eq(io->ftruncate(io, fd, 0), -EIO);
	cr_expect_eq(io->fsync(io, fd), -EIO);
	cr_expect_eq(io->fsync_dir(io, dir.path), -EIO);
	/* Reads still see what was written before the failure. */
	char buf[16];
	cr_expect_eq(io->pread(io, fd, buf, sizeof(buf), 0), 16);
	cr_expect_eq(memcmp(buf, "0123456789abcdef", 16), 0);
	cr_assert_eq(power_io_cut(p), 0);
	cr_expect_eq(size_of(dir.path, "log"), 10, "the unsynced write is gone");
	close(fd);
	power_io_destroy(p);
	test_dir_remove(&dir);
}

static void read_back(const char *dir, const char *name, char *buf, size_t size)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, buf, size, 0), (ssize_t)size);
	close(fd);
}

Test(power_io, an_unsynced_overwrite_of_durable_bytes_is_undone_a_synced_one_kept)
{
	test_dir dir;
	power_io *p;
	int fd = durable_log(&dir, &p);
	const tally_io *io = power_io_table(p);
	/* Like the WAL's last block: zero padding, records written over it. */
	cr_assert_eq(tally_io_write_all(io, fd, "AAAA....", 8, 0), 0);
	cr_assert_eq(io->fdatasync(io, fd), 0);
	cr_assert_eq(tally_io_write_all(io, fd, "AAAABB..", 8, 0), 0); /* synced below */
	cr_assert_eq(io->fdatasync(io, fd), 0);
	cr_assert_eq(tally_io_write_all(io, fd, "AAAABBC.", 8, 0), 0); /* lost */
	cr_assert_eq(tally_io_write_all(io, fd, "AAAABBCD", 8, 0), 0); /* lost */
	cr_assert_eq(tally_io_write_all(io, fd, "EE", 2, 8), 0);       /* lost: past the size */
	close(fd);
	cr_assert_eq(power_io_cut(p), 0);
	char buf[8];
	cr_expect_eq(size_of(dir.path, "log"), 8);
	read_back(dir.path, "log", buf, sizeof(buf));
	cr_expect_eq(memcmp(buf, "AAAABB..", 8), 0, "got %.8s", buf);
	power_io_destroy(p);
	test_dir_remove(&dir);
}

/* "log" over a fault_io: "0123456789" durable, then "XY" written over its
 * start and "abcdef" after it, and the fdatasync that follows failed. */
static int log_after_a_failed_sync(test_dir *dir, power_io **p, fault_io **f)
{
	*f = fault_io_create();
	cr_assert_not_null(*f);
	int fd = durable_log_over(dir, p, fault_io_table(*f));
	const tally_io *io = power_io_table(*p);
	cr_assert_eq(tally_io_write_all(io, fd, "0123456789", 10, 0), 0);
	cr_assert_eq(io->fdatasync(io, fd), 0);
	cr_assert_eq(tally_io_write_all(io, fd, "abcdef", 6, 10), 0);
	cr_assert_eq(tally_io_write_all(io, fd, "XY", 2, 0), 0);
	fault_io_fsync_fail_nth(*f, 1, EIO);
	cr_assert_eq(io->fdatasync(io, fd), -EIO);
	return fd;
}

Test(power_io, bytes_a_failed_sync_left_stay_lost_though_a_later_sync_succeeds)
{
	test_dir dir;
	power_io *p;
	fault_io *f;
	int fd = log_after_a_failed_sync(&dir, &p, &f);
	const tally_io *io = power_io_table(p);
	cr_assert_eq(tally_io_write_all(io, fd, "zz", 2, 16), 0);
	cr_assert_eq(io->fdatasync(io, fd), 0);
	char buf[18];
	cr_expect_eq(io->pread(io, fd, buf, sizeof(buf), 0), 18);
	cr_expect_eq(memcmp(buf, "XY23456789abcdefzz", 18), 0, "the pages are still read");
	close(fd);
	cr_assert_eq(power_io_cut(p), 0);
	cr_expect_eq(size_of(dir.path, "log"), 18);
	read_back(dir.path, "log", buf, sizeof(buf));
	cr_expect_eq(memcmp(buf, "0123456789\0\0\0\0\0\0zz", 18), 0,
		     "the disk has the old start, zeros where the growth was lost, and what was "
		     "written and synced after the failure");
	power_io_destroy(p);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

Test(power_io, bytes_a_failed_sync_left_are_durable_once_written_again_and_synced)
{
	test_dir dir;
	power_io *p;
	fault_io *f;
	int fd = log_after_a_failed_sync(&dir, &p, &f);
	const tally_io *io = power_io_table(p);
	cr_assert_eq(tally_io_write_all(io, fd, "XY", 2, 0), 0);
	cr_assert_eq(tally_io_write_all(io, fd, "bcd", 3, 11), 0); /* a part of the growth */
	cr_assert_eq(io->fdatasync(io, fd), 0);
	cr_assert_eq(tally_io_write_all(io, fd, "e", 1, 14), 0); /* written again, not synced */
	close(fd);
	cr_assert_eq(power_io_cut(p), 0);
	char buf[16];
	cr_expect_eq(size_of(dir.path, "log"), 16);
	read_back(dir.path, "log", buf, sizeof(buf));
	cr_expect_eq(memcmp(buf, "XY23456789\0bcd\0\0", 16), 0,
		     "only the bytes written again and synced are back");
	power_io_destroy(p);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

Test(power_io, a_directory_made_is_removed_with_its_files_until_its_parent_is_synced)
{
	test_dir dir;
	test_dir_make(&dir, "power");
	power_io *p = power_io_create(tally_io_default());
	const tally_io *io = power_io_table(p);
	char kept[256], lost[256];
	snprintf(kept, sizeof(kept), "%s/kept", dir.path);
	snprintf(lost, sizeof(lost), "%s/lost", dir.path);
	cr_assert_eq(io->mkdir(io, kept, 0700), 0);
	cr_assert_eq(io->fsync_dir(io, dir.path), 0);
	cr_assert_eq(io->mkdir(io, lost, 0700), 0);
	int fd = open_in(io, lost, "file", O_CREAT | O_RDWR);
	cr_assert_eq(tally_io_write_all(io, fd, "data", 4, 0), 0);
	cr_assert_eq(io->fsync(io, fd), 0);
	cr_assert_eq(io->fsync_dir(io, lost), 0); /* the file is durable in lost/ ... */
	close(fd);
	cr_assert_eq(power_io_cut(p), 0);          /* ... but lost/ is not in dir */
	struct stat st;
	cr_expect_eq(stat(kept, &st), 0);
	cr_expect_eq(stat(lost, &st), -1);
	cr_expect_eq(rmdir(kept), 0);
	power_io_destroy(p);
	test_dir_remove(&dir);
}
