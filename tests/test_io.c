/*
 * test_io.c — pins the behaviour of the io seam (engine/io.c): the default
 * liburing-backed table, the write_all/read_all loops and the durable
 * recipes, using the fault-injecting table of tests/support/fault_io.h to
 * produce short writes, a full disk, failed fsyncs and failed renames.
 *
 * Every test works in its own directory made by mkdtemp under /tmp and
 * removes it at the end. Criterion runs each test in its own process, so a
 * test that sets TALLY_IO_URING=off gets a fresh default backend.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tally.h"
#include "tally_io.h"

/* Not <limits.h>: engine/limits.h shadows it under -Iengine. */
#define PATH_MAX 4096

/* ---- Helpers ---------------------------------------------------------- */

typedef struct test_dir {
	char path[64];
} test_dir;

static void test_dir_make(test_dir *dir)
{
	strcpy(dir->path, "/tmp/tally-test-io-XXXXXX");
	cr_assert_not_null(mkdtemp(dir->path), "mkdtemp: %s", strerror(errno));
}

static int test_dir_unlink_entry(void *ctx, const char *name)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s", (const char *)ctx, name);
	cr_assert_eq(unlink(path), 0, "unlink %s: %s", path, strerror(errno));
	return 0;
}

static void test_dir_remove(test_dir *dir)
{
	const tally_io *io = tally_io_default();
	cr_assert_eq(io->list_dir(io, dir->path, test_dir_unlink_entry, dir->path), 0);
	cr_assert_eq(rmdir(dir->path), 0, "rmdir %s: %s", dir->path, strerror(errno));
}

static void test_path(char out[PATH_MAX], const test_dir *dir, const char *name)
{
	int length = snprintf(out, PATH_MAX, "%s/%s", dir->path, name);
	cr_assert(length > 0 && length < PATH_MAX);
}

/* Reads a whole file with plain stdio (not the code under test). Returns the
 * byte count; *out is malloc'd. -1 if the file does not exist. */
static long test_file_read(const char *path, unsigned char **out)
{
	FILE *file = fopen(path, "rb");
	if (file == NULL)
		return -1;
	cr_assert_eq(fseek(file, 0, SEEK_END), 0);
	long size = ftell(file);
	cr_assert_eq(fseek(file, 0, SEEK_SET), 0);
	*out = malloc(size > 0 ? (size_t)size : 1);
	cr_assert_not_null(*out);
	cr_assert_eq(fread(*out, 1, (size_t)size, file), (size_t)size);
	fclose(file);
	return size;
}

static void test_pattern_fill(unsigned char *buf, size_t size, unsigned seed)
{
	for (size_t i = 0; i < size; i++)
		buf[i] = (unsigned char)((i * 131u + seed * 7u + (i >> 8)) & 0xff);
}

static int test_file_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* ---- Default backend: reads and writes -------------------------------- */

Test(io_default, write_all_then_read_all_round_trips_exact_bytes,
     .description = "Default table: 100000 bytes written at offset 7 read back identical; size is 100007")
{
	test_dir dir;
	test_dir_make(&dir);
	const tally_io *io = tally_io_default();
	char path[PATH_MAX];
	test_path(path, &dir, "data.bin");

	enum { SIZE = 100000 };
	static unsigned char written[SIZE], read_back[SIZE];
	test_pattern_fill(written, SIZE, 1);

	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0, "open: %s", tally_strerror(fd));
	cr_assert_eq(tally_io_write_all(io, fd, written, SIZE, 7), 0);
	cr_assert_eq(io->fdatasync(io, fd), 0);
	cr_assert_eq(io->fsync(io, fd), 0);
	cr_assert_eq(io->file_size(io, fd), SIZE + 7);
	cr_assert_eq(tally_io_read_all(io, fd, read_back, SIZE, 7), 0);
	cr_assert_arr_eq(read_back, written, SIZE);
	cr_assert_eq(io->close(io, fd), 0);
	test_dir_remove(&dir);
}

Test(io_default, read_all_past_end_of_file_is_corrupt,
     .description = "read_all of 10 bytes from a 6-byte file at offset 0 and 4 gives TALLY_E_CORRUPT; exact 6 bytes gives 0")
{
	test_dir dir;
	test_dir_make(&dir);
	const tally_io *io = tally_io_default();
	char path[PATH_MAX];
	test_path(path, &dir, "short.bin");

	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(tally_io_write_all(io, fd, "abcdef", 6, 0), 0);
	unsigned char buf[10];
	cr_assert_eq(tally_io_read_all(io, fd, buf, 10, 0), TALLY_E_CORRUPT);
	cr_assert_eq(tally_io_read_all(io, fd, buf, 10, 4), TALLY_E_CORRUPT);
	cr_assert_eq(tally_io_read_all(io, fd, buf, 6, 0), 0);
	cr_assert_arr_eq(buf, "abcdef", 6);
	cr_assert_eq(io->pread(io, fd, buf, 10, 6), 0, "pread at EOF returns 0");
	cr_assert_eq(io->close(io, fd), 0);
	test_dir_remove(&dir);
}

Test(io_default, errors_are_negative_errno_and_errno_is_preserved,
     .description = "open of a missing file is -ENOENT, pread on a closed fd is -EBADF, errno unchanged")
{
	const tally_io *io = tally_io_default();
	errno = 12345;
	cr_assert_eq(io->open(io, "/nonexistent-tally/x", O_RDONLY, 0), -ENOENT);
	unsigned char buf[4];
	cr_assert_eq(io->pread(io, 1000, buf, 4, 0), -EBADF);
	cr_assert_eq(io->pwrite(io, 1000, buf, 4, 0), -EBADF);
	cr_assert_eq(io->fsync(io, 1000), -EBADF);
	cr_assert_eq(io->fdatasync(io, 1000), -EBADF);
	cr_assert_eq(io->file_size(io, 1000), -EBADF);
	cr_assert_eq(io->mkdir(io, "/tmp", 0755), -EEXIST);
	cr_assert_eq(errno, 12345);
}

Test(io_default, ftruncate_sets_size,
     .description = "ftruncate to 3 then 4096 gives file_size 3 then 4096, the tail reading as zeros")
{
	test_dir dir;
	test_dir_make(&dir);
	const tally_io *io = tally_io_default();
	char path[PATH_MAX];
	test_path(path, &dir, "t.bin");
	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(tally_io_write_all(io, fd, "hello", 5, 0), 0);
	cr_assert_eq(io->ftruncate(io, fd, 3), 0);
	cr_assert_eq(io->file_size(io, fd), 3);
	cr_assert_eq(io->ftruncate(io, fd, 4096), 0);
	cr_assert_eq(io->file_size(io, fd), 4096);
	unsigned char buf[8];
	cr_assert_eq(tally_io_read_all(io, fd, buf, 8, 0), 0);
	cr_assert_arr_eq(buf, "hel\0\0\0\0\0", 8);
	cr_assert_eq(io->close(io, fd), 0);
	test_dir_remove(&dir);
}

Test(io_default, open_sets_close_on_exec,
     .description = "Descriptors from io->open carry FD_CLOEXEC even when the caller did not ask")
{
	test_dir dir;
	test_dir_make(&dir);
	const tally_io *io = tally_io_default();
	char path[PATH_MAX];
	test_path(path, &dir, "c.bin");
	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	cr_assert_eq(io->close(io, fd), 0);
	test_dir_remove(&dir);
}

/* ---- Durable recipes --------------------------------------------------- */

Test(io_default, durable_replace_writes_exact_content_and_leaves_no_tmp,
     .description = "durable_replace over an existing file: new bytes exactly, no name.tmp, mode 0644")
{
	test_dir dir;
	test_dir_make(&dir);
	const tally_io *io = tally_io_default();
	char path[PATH_MAX], tmp_path[PATH_MAX];
	test_path(path, &dir, "MANIFEST");
	test_path(tmp_path, &dir, "MANIFEST.tmp");

	cr_assert_eq(tally_io_durable_replace(io, dir.path, "MANIFEST", "old content", 11), 0);
	cr_assert_eq(tally_io_durable_replace(io, dir.path, "MANIFEST", "new", 3), 0);
	unsigned char *content = NULL;
	cr_assert_eq(test_file_read(path, &content), 3);
	cr_assert_arr_eq(content, "new", 3);
	free(content);
	cr_assert(!test_file_exists(tmp_path), "MANIFEST.tmp must not remain");
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 0777 & ~0022u, 0644 & ~0022u);
	test_dir_remove(&dir);
}

Test(io_default, durable_replace_into_missing_dir_fails_cleanly,
     .description = "durable_replace into a missing directory returns -ENOENT")
{
	const tally_io *io = tally_io_default();
	cr_assert_eq(tally_io_durable_replace(io, "/tmp/tally-no-such-dir-xyz", "f", "x", 1), -ENOENT);
}

Test(io_default, durable_publish_renames_open_file,
     .description = "durable_publish: tmp name gone, final name holds the bytes, fd still usable")
{
	test_dir dir;
	test_dir_make(&dir);
	const tally_io *io = tally_io_default();
	char tmp_path[PATH_MAX], path[PATH_MAX];
	test_path(tmp_path, &dir, "0001.seg.tmp");
	test_path(path, &dir, "0001.seg");
	int fd = io->open(io, tmp_path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(tally_io_write_all(io, fd, "segment!", 8, 0), 0);
	cr_assert_eq(tally_io_durable_publish(io, fd, dir.path, "0001.seg.tmp", "0001.seg"), 0);
	cr_assert(!test_file_exists(tmp_path));
	unsigned char buf[8];
	cr_assert_eq(tally_io_read_all(io, fd, buf, 8, 0), 0, "fd stays open and owned by the caller");
	cr_assert_arr_eq(buf, "segment!", 8);
	cr_assert_eq(io->close(io, fd), 0);
	unsigned char *content = NULL;
	cr_assert_eq(test_file_read(path, &content), 8);
	cr_assert_arr_eq(content, "segment!", 8);
	free(content);
	test_dir_remove(&dir);
}

/* ---- Lock, directories, clock, randomness ------------------------------ */

Test(io_default, lock_is_exclusive_per_open_file_description,
     .description = "Second open of the same file cannot lock while the first holds it (-EWOULDBLOCK); can after close")
{
	test_dir dir;
	test_dir_make(&dir);
	const tally_io *io = tally_io_default();
	char path[PATH_MAX];
	test_path(path, &dir, "LOCK");
	int first = io->open(io, path, O_CREAT | O_RDWR, 0644);
	int second = io->open(io, path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(first, 0);
	cr_assert_geq(second, 0);
	cr_assert_eq(io->lock(io, first), 0);
	cr_assert_eq(io->lock(io, second), -EWOULDBLOCK);
	cr_assert_eq(io->close(io, first), 0);
	cr_assert_eq(io->lock(io, second), 0);
	cr_assert_eq(io->close(io, second), 0);
	test_dir_remove(&dir);
}

typedef struct name_list {
	char names[16][32];
	int count;
	int stop_after; /* 0: never */
} name_list;

static int name_list_add(void *ctx, const char *name)
{
	name_list *list = ctx;
	cr_assert_lt(list->count, 16);
	cr_assert_lt(strlen(name), sizeof list->names[0]);
	strcpy(list->names[list->count++], name);
	return list->stop_after != 0 && list->count == list->stop_after ? 77 : 0;
}

static int name_compare(const void *a, const void *b)
{
	return strcmp(a, b);
}

Test(io_default, list_dir_lists_exactly_the_created_names,
     .description = "list_dir yields exactly {a.wal, b.seg, sub}, never . or ..; a callback's non-zero stops and is returned")
{
	test_dir dir;
	test_dir_make(&dir);
	const tally_io *io = tally_io_default();
	char path[PATH_MAX];
	test_path(path, &dir, "a.wal");
	cr_assert_eq(tally_io_durable_replace(io, dir.path, "a.wal", "1", 1), 0);
	cr_assert_eq(tally_io_durable_replace(io, dir.path, "b.seg", "2", 1), 0);
	test_path(path, &dir, "sub");
	cr_assert_eq(io->mkdir(io, path, 0755), 0);
	cr_assert_eq(io->mkdir(io, path, 0755), -EEXIST);

	name_list list = {0};
	cr_assert_eq(io->list_dir(io, dir.path, name_list_add, &list), 0);
	cr_assert_eq(list.count, 3);
	qsort(list.names, (size_t)list.count, sizeof list.names[0], name_compare);
	cr_assert_str_eq(list.names[0], "a.wal");
	cr_assert_str_eq(list.names[1], "b.seg");
	cr_assert_str_eq(list.names[2], "sub");

	name_list stopped = {.stop_after = 1};
	cr_assert_eq(io->list_dir(io, dir.path, name_list_add, &stopped), 77);
	cr_assert_eq(stopped.count, 1);

	cr_assert_eq(io->list_dir(io, "/tmp/tally-no-such-dir-xyz", name_list_add, &list), -ENOENT);
	cr_assert_eq(io->fsync_dir(io, dir.path), 0);
	cr_assert_eq(rmdir(path), 0);
	test_dir_remove(&dir);
}

Test(io_default, now_us_is_wall_clock_in_microseconds,
     .description = "now_us is within 2 s of time(NULL)*1e6 and does not go backwards across two calls")
{
	const tally_io *io = tally_io_default();
	int64_t first = io->now_us(io);
	int64_t wall_us = (int64_t)time(NULL) * TALLY_US_PER_SECOND;
	int64_t second = io->now_us(io);
	cr_assert(first > wall_us - 2 * TALLY_US_PER_SECOND && first < wall_us + 2 * TALLY_US_PER_SECOND);
	cr_assert_geq(second, first);
}

Test(io_default, random_fills_the_whole_buffer,
     .description = "random fills 4096 bytes: two draws differ and no 64-byte run stays all-zero")
{
	const tally_io *io = tally_io_default();
	static unsigned char first[4096], second[4096];
	io->random(io, first, sizeof first);
	io->random(io, second, sizeof second);
	cr_assert(memcmp(first, second, sizeof first) != 0);
	static const unsigned char zeros[64];
	for (size_t i = 0; i < sizeof first; i += 64)
		cr_assert(memcmp(first + i, zeros, 64) != 0, "bytes %zu.. left unfilled", i);
}

/* ---- Threads ----------------------------------------------------------- */

enum { THREAD_COUNT = 4, THREAD_ROUNDS = 1000, THREAD_RECORD_SIZE = 512 };

typedef struct thread_job {
	const char *dir;
	int index;
	int failures;
	char error[128];
} thread_job;

static void *thread_job_run(void *arg)
{
	thread_job *job = arg;
	const tally_io *io = tally_io_default();
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/thread-%d.bin", job->dir, job->index);
	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	if (fd < 0) {
		snprintf(job->error, sizeof job->error, "open: %s", tally_strerror(fd));
		job->failures++;
		return NULL;
	}
	unsigned char written[THREAD_RECORD_SIZE], read_back[THREAD_RECORD_SIZE];
	for (int round = 0; round < THREAD_ROUNDS; round++) {
		test_pattern_fill(written, sizeof written, (unsigned)(job->index * THREAD_ROUNDS + round));
		uint64_t offset = (uint64_t)round * THREAD_RECORD_SIZE;
		int ret = tally_io_write_all(io, fd, written, sizeof written, offset);
		if (ret == 0 && round % 100 == 0)
			ret = io->fdatasync(io, fd);
		if (ret == 0)
			ret = tally_io_read_all(io, fd, read_back, sizeof read_back, offset);
		if (ret != 0 || memcmp(written, read_back, sizeof written) != 0) {
			snprintf(job->error, sizeof job->error, "round %d: %s", round, tally_strerror(ret));
			job->failures++;
			break;
		}
	}
	if (io->file_size(io, fd) != (int64_t)THREAD_ROUNDS * THREAD_RECORD_SIZE)
		job->failures++;
	io->close(io, fd);
	return NULL;
}

static void threads_run(void)
{
	test_dir dir;
	test_dir_make(&dir);
	pthread_t threads[THREAD_COUNT];
	thread_job jobs[THREAD_COUNT];
	for (int i = 0; i < THREAD_COUNT; i++) {
		jobs[i] = (thread_job){.dir = dir.path, .index = i};
		cr_assert_eq(pthread_create(&threads[i], NULL, thread_job_run, &jobs[i]), 0);
	}
	for (int i = 0; i < THREAD_COUNT; i++)
		cr_assert_eq(pthread_join(threads[i], NULL), 0);
	for (int i = 0; i < THREAD_COUNT; i++)
		cr_assert_eq(jobs[i].failures, 0, "thread %d: %s", i, jobs[i].error);
	test_dir_remove(&dir);
}

Test(io_default, four_threads_write_and_read_their_own_files,
     .description = "4 threads x 1000 rounds of write_all/read_all (+fdatasync) on their own rings: every byte round-trips")
{
	threads_run();
}

Test(io_default, four_threads_without_io_uring,
     .description = "TALLY_IO_URING=off: the system-call fallback passes the same 4-thread round trip")
{
	cr_assert_eq(setenv("TALLY_IO_URING", "off", 1), 0);
	threads_run();
}
