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
#include <sys/wait.h>
#include <unistd.h>

#include "support/test_dir.h"
#include "tally.h"
#include "tally_io.h"
#include "support/fault_io.h"

/* Not <limits.h>: engine/limits.h shadows it under -Iengine. */
#define PATH_MAX 4096

/* ---- Helpers ---------------------------------------------------------- */


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

static int test_count_entry(void *ctx, const char *name)
{
	(void)name;
	(*(int *)ctx)++;
	return 0;
}

/* Open descriptors of this process (a ring holds one; the count includes
 * the one list_dir holds while listing, the same every time). */
static int test_fd_count(void)
{
	int count = 0;
	const tally_io *io = tally_io_default();
	cr_assert_eq(io->list_dir(io, "/proc/self/fd", test_count_entry, &count), 0);
	return count;
}

static void *thread_fsync_once(void *arg)
{
	const tally_io *io = tally_io_default();
	if (io->fsync(io, *(int *)arg) != 0)
		abort();
	return NULL;
}

/* ---- Default backend: reads and writes -------------------------------- */

Test(io_default, write_all_then_read_all_round_trips_exact_bytes,
     .description = "Default table: 100000 bytes written at offset 7 read back identical; size is 100007")
{
	test_dir dir;
	test_dir_make(&dir, "io");
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
	test_dir_make(&dir, "io");
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
	unsigned char buf[4] = {0};
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
	test_dir_make(&dir, "io");
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
	test_dir_make(&dir, "io");
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
	test_dir_make(&dir, "io");
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
	test_dir_make(&dir, "io");
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
	test_dir_make(&dir, "io");
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
	test_dir_make(&dir, "io");
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
		if (ret == 0 && round % 100 == 50)
			ret = io->fsync(io, fd);
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
	test_dir_make(&dir, "io");
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
     .description = "4 threads x 1000 rounds of write_all/read_all (+fdatasync, fsync) on their own rings: every byte round-trips")
{
	threads_run();
}

Test(io_default, four_threads_without_io_uring,
     .description = "TALLY_IO_URING=off: the system-call fallback passes the same 4-thread round trip")
{
	cr_assert_eq(setenv("TALLY_IO_URING", "off", 1), 0);
	threads_run();
}

Test(io_default, thread_exit_releases_the_ring,
     .description = "16 threads that each fsync once and exit leave the process's open fd count unchanged (rings freed)")
{
	test_dir dir;
	test_dir_make(&dir, "io");
	const tally_io *io = tally_io_default();
	char path[PATH_MAX];
	test_path(path, &dir, "f");
	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(io->fsync(io, fd), 0); /* this thread's ring exists before counting */
	int before = test_fd_count();
	for (int i = 0; i < 16; i++) {
		pthread_t thread;
		cr_assert_eq(pthread_create(&thread, NULL, thread_fsync_once, &fd), 0);
		cr_assert_eq(pthread_join(thread, NULL), 0);
	}
	cr_assert_eq(test_fd_count(), before);
	cr_assert_eq(io->close(io, fd), 0);
	test_dir_remove(&dir);
}

Test(io_default, fork_child_uses_its_own_ring,
     .description = "After the parent used its ring, a forked child writes and reads through the default table, and so does the parent afterwards")
{
	test_dir dir;
	test_dir_make(&dir, "io");
	const tally_io *io = tally_io_default();
	char path[PATH_MAX];
	test_path(path, &dir, "fork.bin");
	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(tally_io_write_all(io, fd, "parent", 6, 0), 0);

	pid_t child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		unsigned char buf[6];
		int ok = tally_io_write_all(io, fd, "child!", 6, 6) == 0 &&
			 io->fdatasync(io, fd) == 0 &&
			 tally_io_read_all(io, fd, buf, 6, 0) == 0 && memcmp(buf, "parent", 6) == 0;
		_exit(ok ? 0 : 1);
	}
	int status = 0;
	cr_assert_eq(waitpid(child, &status, 0), child);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed");
	unsigned char buf[12];
	cr_assert_eq(tally_io_read_all(io, fd, buf, 12, 0), 0);
	cr_assert_arr_eq(buf, "parentchild!", 12);
	cr_assert_eq(io->close(io, fd), 0);
	test_dir_remove(&dir);
}

/* ---- write_all / read_all against injected faults ----------------------- */

/* A table whose pwrite makes no progress, to pin write_all's -EIO rule. */
static int64_t pwrite_returns_zero(const tally_io *io, int fd, const void *buf, size_t size,
				   uint64_t offset)
{
	(void)io, (void)fd, (void)buf, (void)size, (void)offset;
	return 0;
}

Test(io_write_all, zero_byte_pwrite_is_eio,
     .description = "write_all reports -EIO when pwrite returns 0 for a non-empty request, and writes nothing for size 0")
{
	tally_io stuck = *tally_io_default();
	stuck.pwrite = pwrite_returns_zero;
	cr_assert_eq(tally_io_write_all(&stuck, 1000, "x", 1, 0), -EIO);
	cr_assert_eq(tally_io_write_all(&stuck, 1000, "x", 0, 0), 0);
}

Test(io_write_all, short_writes_produce_the_exact_bytes,
     .description = "With every pwrite capped at 7 bytes, write_all of 1000 bytes takes 143 pwrites and the file is those 1000 bytes")
{
	test_dir dir;
	test_dir_make(&dir, "io");
	fault_io *f = fault_io_create();
	cr_assert_not_null(f);
	const tally_io *io = fault_io_table(f);
	char path[PATH_MAX];
	test_path(path, &dir, "short.bin");
	unsigned char written[1000];
	test_pattern_fill(written, sizeof written, 3);

	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	fault_io_short_write_set(f, 7);
	cr_assert_eq(tally_io_write_all(io, fd, written, sizeof written, 0), 0);
	cr_assert_eq(io->close(io, fd), 0);

	fault_io_counts counts;
	fault_io_counts_get(f, &counts);
	cr_assert_eq(counts.pwrite_count, 143);
	cr_assert_eq(counts.pwrite_bytes, 1000);
	unsigned char *content = NULL;
	cr_assert_eq(test_file_read(path, &content), 1000);
	cr_assert_arr_eq(content, written, 1000);
	free(content);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

Test(io_write_all, disk_limit_gives_enospc_and_exactly_k_bytes,
     .description = "Disk limit 100: write_all of 250 bytes is -ENOSPC after one short write; the file holds exactly the first 100 bytes")
{
	test_dir dir;
	test_dir_make(&dir, "io");
	fault_io *f = fault_io_create();
	const tally_io *io = fault_io_table(f);
	char path[PATH_MAX];
	test_path(path, &dir, "full.bin");
	unsigned char written[250];
	test_pattern_fill(written, sizeof written, 4);

	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	fault_io_disk_limit_set(f, 100);
	cr_assert_eq(tally_io_write_all(io, fd, written, sizeof written, 0), -ENOSPC);
	cr_assert_eq(io->file_size(io, fd), 100);
	cr_assert_eq(io->pwrite(io, fd, "z", 1, 100), -ENOSPC, "every later pwrite is -ENOSPC");
	cr_assert_eq(io->close(io, fd), 0);

	fault_io_counts counts;
	fault_io_counts_get(f, &counts);
	cr_assert_eq(counts.pwrite_count, 3);
	cr_assert_eq(counts.pwrite_bytes, 100);
	unsigned char *content = NULL;
	cr_assert_eq(test_file_read(path, &content), 100);
	cr_assert_arr_eq(content, written, 100);
	free(content);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

Test(io_write_all, disk_limit_with_short_writes_fills_exactly,
     .description = "Short writes of 30 and a 100-byte limit: 30+30+30+10 bytes land, then -ENOSPC; the file is exactly 100 bytes")
{
	test_dir dir;
	test_dir_make(&dir, "io");
	fault_io *f = fault_io_create();
	const tally_io *io = fault_io_table(f);
	char path[PATH_MAX];
	test_path(path, &dir, "full.bin");
	unsigned char written[250];
	test_pattern_fill(written, sizeof written, 5);

	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	fault_io_short_write_set(f, 30);
	fault_io_disk_limit_set(f, 100);
	cr_assert_eq(tally_io_write_all(io, fd, written, sizeof written, 0), -ENOSPC);
	fault_io_counts counts;
	fault_io_counts_get(f, &counts);
	cr_assert_eq(counts.pwrite_count, 5);
	cr_assert_eq(counts.pwrite_bytes, 100);
	cr_assert_eq(io->file_size(io, fd), 100);

	fault_io_disk_limit_clear(f);
	cr_assert_eq(tally_io_write_all(io, fd, written + 100, 150, 100), 0, "space freed: writes go through");
	unsigned char read_back[250];
	cr_assert_eq(tally_io_read_all(io, fd, read_back, 250, 0), 0);
	cr_assert_arr_eq(read_back, written, 250);
	cr_assert_eq(io->close(io, fd), 0);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

Test(io_write_all, pwrite_failure_on_the_nth_call,
     .description = "pwrite fail nth=3 with short writes of 10: write_all of 100 bytes returns -EIO with exactly 20 bytes written")
{
	test_dir dir;
	test_dir_make(&dir, "io");
	fault_io *f = fault_io_create();
	const tally_io *io = fault_io_table(f);
	char path[PATH_MAX];
	test_path(path, &dir, "eio.bin");
	unsigned char written[100];
	test_pattern_fill(written, sizeof written, 6);
	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	fault_io_short_write_set(f, 10);
	fault_io_pwrite_fail_nth(f, 3, EIO);
	cr_assert_eq(tally_io_write_all(io, fd, written, sizeof written, 0), -EIO);
	cr_assert_eq(io->file_size(io, fd), 20);
	cr_assert_eq(tally_io_write_all(io, fd, written, sizeof written, 0), 0, "only the 3rd pwrite fails");
	cr_assert_eq(io->close(io, fd), 0);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

/* ---- fsync faults ------------------------------------------------------- */

Test(io_fsync, eio_on_exactly_the_nth_fsync,
     .description = "fsync fail nth=3: calls 1,2 return 0, call 3 -EIO, calls 4,5 return 0; fsync and fdatasync share the count")
{
	test_dir dir;
	test_dir_make(&dir, "io");
	fault_io *f = fault_io_create();
	const tally_io *io = fault_io_table(f);
	char path[PATH_MAX];
	test_path(path, &dir, "sync.bin");
	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(io->fsync(io, fd), 0, "a call before the knob is set does not count");
	fault_io_fsync_fail_nth(f, 3, EIO);
	cr_assert_eq(io->fsync(io, fd), 0);
	cr_assert_eq(io->fdatasync(io, fd), 0);
	cr_assert_eq(io->fdatasync(io, fd), -EIO);
	cr_assert_eq(io->fsync(io, fd), 0);
	cr_assert_eq(io->fsync(io, fd), 0);
	fault_io_counts counts;
	fault_io_counts_get(f, &counts);
	cr_assert_eq(counts.fsync_count, 6);
	cr_assert_eq(counts.fault_count, 1);
	cr_assert_eq(io->close(io, fd), 0);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

Test(io_fsync, every_fsync_from_the_nth_fails,
     .description = "fsync fail from nth=2 with ENOSPC: call 1 returns 0, calls 2..5 return -ENOSPC")
{
	test_dir dir;
	test_dir_make(&dir, "io");
	fault_io *f = fault_io_create();
	const tally_io *io = fault_io_table(f);
	char path[PATH_MAX];
	test_path(path, &dir, "sync.bin");
	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	fault_io_fsync_fail_from(f, 2, ENOSPC);
	cr_assert_eq(io->fsync(io, fd), 0);
	for (int i = 2; i <= 5; i++)
		cr_assert_eq(io->fdatasync(io, fd), -ENOSPC, "call %d", i);
	fault_io_fsync_fail_nth(f, 0, 0);
	cr_assert_eq(io->fsync(io, fd), 0, "knob off");
	cr_assert_eq(io->close(io, fd), 0);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

Test(io_fsync, path_filter_limits_faults_to_matching_files,
     .description = "Filter \".wal\": fsync and short-write faults hit 1.wal only; 1.seg fsyncs and writes whole")
{
	test_dir dir;
	test_dir_make(&dir, "io");
	fault_io *f = fault_io_create();
	const tally_io *io = fault_io_table(f);
	char wal_path[PATH_MAX], seg_path[PATH_MAX];
	test_path(wal_path, &dir, "1.wal");
	test_path(seg_path, &dir, "1.seg");
	int wal_fd = io->open(io, wal_path, O_CREAT | O_RDWR, 0644);
	int seg_fd = io->open(io, seg_path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(wal_fd, 0);
	cr_assert_geq(seg_fd, 0);
	fault_io_path_filter_set(f, ".wal");
	fault_io_fsync_fail_from(f, 1, EIO);
	fault_io_short_write_set(f, 2);

	cr_assert_eq(io->fsync(io, seg_fd), 0);
	cr_assert_eq(io->fsync(io, wal_fd), -EIO);
	cr_assert_eq(io->pwrite(io, seg_fd, "abcdef", 6, 0), 6);
	cr_assert_eq(io->pwrite(io, wal_fd, "abcdef", 6, 0), 2);

	fault_io_path_filter_set(f, NULL);
	cr_assert_eq(io->fsync(io, seg_fd), -EIO, "no filter: every file matches");
	cr_assert_eq(io->close(io, wal_fd), 0);
	cr_assert_eq(io->close(io, seg_fd), 0);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

/* ---- Durable replace under faults -------------------------------------- */

/* Runs durable_replace of "NEW CONTENT" over "old content" with the fault
 * already set on f, expects `expected`, and checks old content intact and
 * no MANIFEST.tmp. */
static void durable_replace_fails_cleanly(fault_io *f, const test_dir *dir, int expected)
{
	const tally_io *io = fault_io_table(f);
	char path[PATH_MAX], tmp_path[PATH_MAX];
	test_path(path, dir, "MANIFEST");
	test_path(tmp_path, dir, "MANIFEST.tmp");
	cr_assert_eq(tally_io_durable_replace(io, dir->path, "MANIFEST", "NEW CONTENT", 11), expected);
	unsigned char *content = NULL;
	cr_assert_eq(test_file_read(path, &content), 11);
	cr_assert_arr_eq(content, "old content", 11, "old content must survive");
	free(content);
	cr_assert(!test_file_exists(tmp_path), "MANIFEST.tmp must be removed");
}

static fault_io *durable_replace_setup(test_dir *dir)
{
	test_dir_make(dir, "io");
	fault_io *f = fault_io_create();
	cr_assert_not_null(f);
	cr_assert_eq(tally_io_durable_replace(fault_io_table(f), dir->path, "MANIFEST", "old content", 11), 0);
	return f;
}

Test(io_durable_replace, rename_failure_keeps_old_content_and_removes_tmp,
     .description = "rename fails with EXDEV: durable_replace returns -EXDEV, MANIFEST keeps the old bytes, no MANIFEST.tmp")
{
	test_dir dir;
	fault_io *f = durable_replace_setup(&dir);
	fault_io_rename_fail(f, EXDEV);
	durable_replace_fails_cleanly(f, &dir, -EXDEV);
	fault_io_counts counts;
	fault_io_counts_get(f, &counts);
	cr_assert_eq(counts.rename_count, 2);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

Test(io_durable_replace, fsync_failure_keeps_old_content_and_removes_tmp,
     .description = "The temp file's fsync fails with EIO: -EIO, old bytes intact, no MANIFEST.tmp, nothing renamed")
{
	test_dir dir;
	fault_io *f = durable_replace_setup(&dir);
	fault_io_counts_reset(f);
	fault_io_fsync_fail_nth(f, 1, EIO);
	durable_replace_fails_cleanly(f, &dir, -EIO);
	fault_io_counts counts;
	fault_io_counts_get(f, &counts);
	cr_assert_eq(counts.rename_count, 0);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

Test(io_durable_replace, disk_full_keeps_old_content_and_removes_tmp,
     .description = "Disk limit 5 bytes: -ENOSPC, old bytes intact, no MANIFEST.tmp")
{
	test_dir dir;
	fault_io *f = durable_replace_setup(&dir);
	fault_io_disk_limit_set(f, 5);
	durable_replace_fails_cleanly(f, &dir, -ENOSPC);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

Test(io_durable_replace, open_failure_keeps_old_content,
     .description = "Opening MANIFEST.tmp fails with EACCES: -EACCES, old bytes intact")
{
	test_dir dir;
	fault_io *f = durable_replace_setup(&dir);
	fault_io_open_fail(f, "MANIFEST.tmp", EACCES);
	durable_replace_fails_cleanly(f, &dir, -EACCES);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

Test(io_durable_replace, short_writes_still_publish_exact_content,
     .description = "With pwrites capped at 3 bytes durable_replace publishes the exact 11 bytes, one fsync + one dir fsync")
{
	test_dir dir;
	fault_io *f = durable_replace_setup(&dir);
	fault_io_counts_reset(f);
	fault_io_short_write_set(f, 3);
	cr_assert_eq(tally_io_durable_replace(fault_io_table(f), dir.path, "MANIFEST", "NEW CONTENT", 11), 0);
	char path[PATH_MAX];
	test_path(path, &dir, "MANIFEST");
	unsigned char *content = NULL;
	cr_assert_eq(test_file_read(path, &content), 11);
	cr_assert_arr_eq(content, "NEW CONTENT", 11);
	free(content);
	fault_io_counts counts;
	fault_io_counts_get(f, &counts);
	cr_assert_eq(counts.pwrite_count, 4);
	cr_assert_eq(counts.fsync_count, 1);
	cr_assert_eq(counts.fsync_dir_count, 1);
	cr_assert_eq(counts.rename_count, 1);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

Test(io_durable_replace, directory_fsync_failure_is_reported_after_rename,
     .description = "fsync_dir fails with EIO: durable_replace returns -EIO; the rename happened, so MANIFEST holds the new bytes and no .tmp remains")
{
	test_dir dir;
	fault_io *f = durable_replace_setup(&dir);
	fault_io_fsync_dir_fail(f, EIO);
	cr_assert_eq(tally_io_durable_replace(fault_io_table(f), dir.path, "MANIFEST", "NEW CONTENT", 11), -EIO);
	char path[PATH_MAX], tmp_path[PATH_MAX];
	test_path(path, &dir, "MANIFEST");
	test_path(tmp_path, &dir, "MANIFEST.tmp");
	unsigned char *content = NULL;
	cr_assert_eq(test_file_read(path, &content), 11);
	cr_assert_arr_eq(content, "NEW CONTENT", 11);
	free(content);
	cr_assert(!test_file_exists(tmp_path));
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

Test(io_durable_publish, rename_failure_leaves_tmp_and_fd_to_the_caller,
     .description = "durable_publish with rename failing EIO: -EIO, the tmp file stays (caller owns it), final name absent")
{
	test_dir dir;
	test_dir_make(&dir, "io");
	fault_io *f = fault_io_create();
	const tally_io *io = fault_io_table(f);
	char tmp_path[PATH_MAX], path[PATH_MAX];
	test_path(tmp_path, &dir, "7.seg.tmp");
	test_path(path, &dir, "7.seg");
	int fd = io->open(io, tmp_path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(tally_io_write_all(io, fd, "abc", 3, 0), 0);
	fault_io_rename_fail(f, EIO);
	cr_assert_eq(tally_io_durable_publish(io, fd, dir.path, "7.seg.tmp", "7.seg"), -EIO);
	cr_assert(test_file_exists(tmp_path));
	cr_assert(!test_file_exists(path));
	fault_io_rename_fail(f, 0);
	cr_assert_eq(tally_io_durable_publish(io, fd, dir.path, "7.seg.tmp", "7.seg"), 0);
	cr_assert(test_file_exists(path));
	cr_assert_eq(io->close(io, fd), 0);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

/* ---- Other knobs -------------------------------------------------------- */

Test(fault_io, open_fails_only_for_matching_paths,
     .description = "open_fail(\".seg\", EACCES): opening x.seg is -EACCES and creates nothing; x.wal opens")
{
	test_dir dir;
	test_dir_make(&dir, "io");
	fault_io *f = fault_io_create();
	const tally_io *io = fault_io_table(f);
	char seg_path[PATH_MAX], wal_path[PATH_MAX];
	test_path(seg_path, &dir, "x.seg");
	test_path(wal_path, &dir, "x.wal");
	fault_io_open_fail(f, ".seg", EACCES);
	cr_assert_eq(io->open(io, seg_path, O_CREAT | O_RDWR, 0644), -EACCES);
	cr_assert(!test_file_exists(seg_path));
	int fd = io->open(io, wal_path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(io->close(io, fd), 0);
	fault_io_open_fail(f, NULL, 0);
	fd = io->open(io, seg_path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(io->close(io, fd), 0);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

Test(fault_io, clock_is_controllable,
     .description = "clock_set 1000 -> now 1000; advance 500 -> 1500; advance -200 -> 1300; real -> within 2 s of time(NULL)")
{
	fault_io *f = fault_io_create();
	const tally_io *io = fault_io_table(f);
	fault_io_clock_set_us(f, 1000);
	cr_assert_eq(io->now_us(io), 1000);
	cr_assert_eq(io->now_us(io), 1000, "frozen");
	fault_io_clock_advance_us(f, 500);
	cr_assert_eq(io->now_us(io), 1500);
	fault_io_clock_advance_us(f, -200);
	cr_assert_eq(io->now_us(io), 1300);
	fault_io_clock_real(f);
	int64_t wall_us = (int64_t)time(NULL) * TALLY_US_PER_SECOND;
	int64_t now_us = io->now_us(io);
	cr_assert(now_us > wall_us - 2 * TALLY_US_PER_SECOND && now_us < wall_us + 2 * TALLY_US_PER_SECOND);
	fault_io_destroy(f);
}

Test(fault_io, seeded_random_is_splitmix64,
     .description = "Seed 0: the first 8 bytes are splitmix64's first output 0xe220a8397b1dcdaf little-endian; two instances with seed 42 agree")
{
	fault_io *f = fault_io_create();
	const tally_io *io = fault_io_table(f);
	fault_io_random_seed(f, 0);
	unsigned char bytes[8];
	io->random(io, bytes, sizeof bytes);
	static const unsigned char expected[8] = {0xaf, 0xcd, 0x1d, 0x7b, 0x39, 0xa8, 0x20, 0xe2};
	cr_assert_arr_eq(bytes, expected, 8);

	fault_io *g = fault_io_create();
	fault_io_random_seed(f, 42);
	fault_io_random_seed(g, 42);
	unsigned char a[37], b[37];
	io->random(io, a, sizeof a);
	fault_io_table(g)->random(fault_io_table(g), b, sizeof b);
	cr_assert_arr_eq(a, b, sizeof a);
	fault_io_destroy(g);
	fault_io_destroy(f);
}

Test(fault_io, reset_turns_every_knob_off,
     .description = "After fault_io_reset a table with every knob set behaves as a pass-through")
{
	test_dir dir;
	test_dir_make(&dir, "io");
	fault_io *f = fault_io_create();
	const tally_io *io = fault_io_table(f);
	char path[PATH_MAX];
	test_path(path, &dir, "r.bin");
	fault_io_fsync_fail_from(f, 1, EIO);
	fault_io_pwrite_fail_from(f, 1, EIO);
	fault_io_disk_limit_set(f, 0);
	fault_io_short_write_set(f, 1);
	fault_io_rename_fail(f, EIO);
	fault_io_open_fail(f, "r.bin", EIO);
	fault_io_fsync_dir_fail(f, EIO);
	fault_io_clock_set_us(f, 5);
	fault_io_reset(f);
	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(io->pwrite(io, fd, "hello", 5, 0), 5);
	cr_assert_eq(io->fsync(io, fd), 0);
	cr_assert_eq(io->close(io, fd), 0);
	cr_assert_eq(io->fsync_dir(io, dir.path), 0);
	cr_assert_neq(io->now_us(io), 5);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

/* Four threads race for a shared disk budget: the total written must be the
 * budget exactly, never more. */
typedef struct budget_job {
	const tally_io *io;
	const char *dir;
	int index;
	int64_t file_size;
	int last_error;
} budget_job;

static void *budget_job_run(void *arg)
{
	budget_job *job = arg;
	const tally_io *io = job->io;
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/budget-%d.bin", job->dir, job->index);
	int fd = io->open(io, path, O_CREAT | O_RDWR, 0644);
	if (fd < 0) {
		job->last_error = fd;
		return NULL;
	}
	unsigned char chunk[100];
	memset(chunk, 'a' + job->index, sizeof chunk);
	uint64_t offset = 0;
	for (int i = 0; i < 1000; i++) {
		int64_t written = io->pwrite(io, fd, chunk, sizeof chunk, offset);
		if (written < 0) {
			job->last_error = (int)written;
			break;
		}
		offset += (uint64_t)written;
	}
	job->file_size = io->file_size(io, fd);
	io->close(io, fd);
	return NULL;
}

Test(fault_io, disk_limit_is_exact_across_threads,
     .description = "4 threads writing 100-byte chunks against a 10001-byte limit: files total exactly 10001 bytes, every thread ends on -ENOSPC")
{
	test_dir dir;
	test_dir_make(&dir, "io");
	fault_io *f = fault_io_create();
	fault_io_disk_limit_set(f, 10001);
	pthread_t threads[4];
	budget_job jobs[4];
	for (int i = 0; i < 4; i++) {
		jobs[i] = (budget_job){.io = fault_io_table(f), .dir = dir.path, .index = i};
		cr_assert_eq(pthread_create(&threads[i], NULL, budget_job_run, &jobs[i]), 0);
	}
	int64_t total = 0;
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(pthread_join(threads[i], NULL), 0);
		cr_assert_eq(jobs[i].last_error, -ENOSPC, "thread %d", i);
		total += jobs[i].file_size;
	}
	cr_assert_eq(total, 10001);
	fault_io_counts counts;
	fault_io_counts_get(f, &counts);
	cr_assert_eq(counts.pwrite_bytes, 10001);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}
