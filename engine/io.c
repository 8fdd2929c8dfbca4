/*
 * io.c — the production tally_io table, and the two recipes built on it
 * (tally_io_write_all / tally_io_read_all, and durable replace / publish).
 *
 * NOTES ON THE DESIGN OF THE DEFAULT BACKEND
 *
 * 1. Reads, writes, fsync and fdatasync go through io_uring (liburing). Each
 *    thread owns one small ring (queue depth IO_RING_DEPTH), created on the
 *    thread's first such call and kept in a __thread variable, so no lock is
 *    ever taken on the data path and rings are never shared between threads.
 *
 * 2. Exactly one request is in flight per ring: prepare one SQE, submit it
 *    and wait for its CQE (one io_uring_enter), check that the CQE's user_data is the tag we put in
 *    the SQE (operation code + per-thread sequence number), advance. Because
 *    the caller blocks until the CQE arrives, the caller's buffer is never
 *    touched by the kernel after we return.
 *
 * 3. Retries are bounded. An interrupted wait (-EINTR) is re-waited: the
 *    request is still in flight and we may not return while it is. A
 *    request that completes with -EINTR or -EAGAIN is resubmitted up to
 *    IO_RETRY_MAX times and then performed once more with the plain system
 *    call. A submission the kernel refuses for good tears the ring down and
 *    switches the thread to system calls (see 4).
 *
 * 4. Fallback. io_uring_queue_init fails where io_uring is unavailable:
 *    kernel.io_uring_disabled=1/2 (EPERM), container seccomp profiles that
 *    block io_uring_setup (Docker's default since 2023: EPERM or ENOSYS),
 *    kernels built without it (ENOSYS), or memory limits (ENOMEM). Nothing
 *    will change for that thread, so it falls back permanently to
 *    pread/pwrite/fsync/fdatasync; the reason (errno of the failed init) is
 *    kept in the thread state for debuggers. Setting the environment
 *    variable TALLY_IO_URING=off forces the fallback in every thread (used
 *    by tests to exercise it, and by operators as an escape hatch).
 *
 * 5. Lifetime. A thread's ring is released at thread exit by a pthread key
 *    destructor, so short-lived threads do not leak ring fds and mappings.
 *    In a child after fork() the forking thread's ring is dropped (a ring is
 *    shared memory with the parent; submitting from both would corrupt it)
 *    and recreated on first use.
 *
 * 6. Errors: every function returns -errno and restores the caller's errno,
 *    so the table never "sets the global errno" (tally_io.h). Transfers are
 *    capped at IO_TRANSFER_SIZE_MAX per call (the kernel's own MAX_RW_COUNT);
 *    larger requests become short transfers, which write_all/read_all loop
 *    over.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tally.h"
#include "tally_io.h"

#define IO_RING_DEPTH 8u
#define IO_RETRY_MAX 64
#define IO_TRANSFER_SIZE_MAX ((size_t)0x7ffff000) /* Linux MAX_RW_COUNT */
/* Linux PATH_MAX, named here: engine/limits.h shadows <limits.h> under -Iengine. */
#define IO_PATH_SIZE_MAX 4096

_Static_assert(IO_TRANSFER_SIZE_MAX <= INT32_MAX, "a CQE result must hold a transfer size");

/* ---- Per-thread ring ------------------------------------------------- */

enum io_ring_state {
	IO_RING_UNINIT = 0, /* this thread has not tried yet */
	IO_RING_READY,      /* ring initialised; ring below is valid */
	IO_RING_FALLBACK,   /* io_uring unusable here: plain system calls forever */
};

enum io_op {
	IO_OP_READ = 1,
	IO_OP_WRITE,
	IO_OP_FSYNC,
	IO_OP_FDATASYNC,
};

typedef struct io_thread_ring {
	enum io_ring_state state;
	int fallback_errno;    /* why we fell back (0: forced or not fallen back) */
	uint64_t sequence;     /* tags requests: user_data = sequence << 8 | op */
	struct io_uring ring;
} io_thread_ring;

static __thread io_thread_ring io_thread;

static pthread_once_t io_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t io_key;
/* Held while a ring is mapped or unmapped. A thread's new ring is often
 * mapped where an exited thread's ring was; liburing maps with raw system
 * calls that ThreadSanitizer does not see, so without an order between the
 * old ring's last use and the new ring's first it reports the new ring's
 * accesses as races with the old ones. This lock gives that order (it
 * costs one uncontended lock per thread start and exit). */
static pthread_mutex_t io_ring_map_lock = PTHREAD_MUTEX_INITIALIZER;
static int io_key_error; /* non-zero if pthread_key_create failed */
static int io_uring_forced_off;

/* Unmaps a ring under io_ring_map_lock. */
static void io_ring_unmap(struct io_uring *ring)
{
	pthread_mutex_lock(&io_ring_map_lock);
	io_uring_queue_exit(ring);
	pthread_mutex_unlock(&io_ring_map_lock);
}

/* Thread exit: release the ring. glibc runs key destructors before the
 * thread's static TLS block goes away, so `value` (&io_thread) is valid. */
static void io_thread_ring_destroy(void *value)
{
	io_thread_ring *thread_ring = value;
	if (thread_ring->state == IO_RING_READY)
		io_ring_unmap(&thread_ring->ring);
	thread_ring->state = IO_RING_FALLBACK; /* a late call after this must not recreate */
	thread_ring->fallback_errno = 0;
}

/* fork(): the child has a copy of the forking thread's TLS pointing at the
 * parent's ring. Close the child's handle (the parent's ring stays intact)
 * and start over on first use. Not under io_ring_map_lock: another parent
 * thread may have held it at the fork, and the child has only this one. */
static void io_atfork_child(void)
{
	if (io_thread.state == IO_RING_READY)
		io_uring_queue_exit(&io_thread.ring);
	io_thread.state = IO_RING_UNINIT;
}

static void io_key_init(void)
{
	const char *setting = getenv("TALLY_IO_URING");
	if (setting && (strcmp(setting, "off") == 0 || strcmp(setting, "0") == 0))
		io_uring_forced_off = 1;
	io_key_error = pthread_key_create(&io_key, io_thread_ring_destroy);
	if (io_key_error == 0)
		io_key_error = pthread_atfork(NULL, NULL, io_atfork_child);
}

/* Returns this thread's ring, creating it on first use, or NULL when the
 * thread uses plain system calls. */
static struct io_uring *io_ring_get(void)
{
	if (io_thread.state == IO_RING_READY)
		return &io_thread.ring;
	if (io_thread.state == IO_RING_FALLBACK)
		return NULL;

	pthread_once(&io_key_once, io_key_init);
	if (io_uring_forced_off || io_key_error != 0) {
		/* Without a key destructor the ring would leak at thread exit. */
		io_thread.state = IO_RING_FALLBACK;
		io_thread.fallback_errno = io_key_error;
		return NULL;
	}
	pthread_mutex_lock(&io_ring_map_lock);
	int ret = io_uring_queue_init(IO_RING_DEPTH, &io_thread.ring, 0);
	pthread_mutex_unlock(&io_ring_map_lock);
	if (ret < 0) {
		/* Permanent for this thread: see note 4 at the top of the file. */
		io_thread.state = IO_RING_FALLBACK;
		io_thread.fallback_errno = -ret;
		return NULL;
	}
	if (pthread_setspecific(io_key, &io_thread) != 0) {
		io_ring_unmap(&io_thread.ring);
		io_thread.state = IO_RING_FALLBACK;
		io_thread.fallback_errno = ENOMEM;
		return NULL;
	}
	io_thread.state = IO_RING_READY;
	io_thread.sequence = 0;
	return &io_thread.ring;
}

/* The ring failed in a way that is not about one request: drop it and use
 * system calls for the rest of this thread's life. Only called with no
 * request in flight. */
static void io_ring_abandon(int error)
{
	assert(io_thread.state == IO_RING_READY);
	io_ring_unmap(&io_thread.ring);
	io_thread.state = IO_RING_FALLBACK;
	io_thread.fallback_errno = error;
}

/* Plain system call versions: the fallback, and the last resort after
 * IO_RETRY_MAX -EINTR/-EAGAIN completions. Return >= 0 or -errno. */
static int64_t io_syscall_run(enum io_op op, int fd, void *buf, size_t size, uint64_t offset)
{
	for (;;) {
		ssize_t ret;
		switch (op) {
		case IO_OP_READ: ret = pread(fd, buf, size, (off_t)offset); break;
		case IO_OP_WRITE: ret = pwrite(fd, buf, size, (off_t)offset); break;
		case IO_OP_FSYNC: ret = fsync(fd); break;
		case IO_OP_FDATASYNC: ret = fdatasync(fd); break;
		default: abort();
		}
		if (ret >= 0)
			return ret;
		if (errno != EINTR)
			return -errno;
	}
}

/*
 * Runs one operation to completion: through this thread's ring when there is
 * one, else by system call. Returns the operation's result (>= 0) or -errno.
 * The caller has already validated size and offset.
 */
static int64_t io_run(enum io_op op, int fd, void *buf, size_t size, uint64_t offset)
{
	int saved_errno = errno;
	int64_t result = 0;

	for (int attempt = 0;; attempt++) {
		struct io_uring *ring = io_ring_get();
		if (ring == NULL || attempt == IO_RETRY_MAX) {
			result = io_syscall_run(op, fd, buf, size, offset);
			break;
		}

		struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
		assert(sqe != NULL); /* one request in flight: the SQ always has room */
		switch (op) {
		case IO_OP_READ: io_uring_prep_read(sqe, fd, buf, (unsigned)size, offset); break;
		case IO_OP_WRITE: io_uring_prep_write(sqe, fd, buf, (unsigned)size, offset); break;
		case IO_OP_FSYNC: io_uring_prep_fsync(sqe, fd, 0); break;
		case IO_OP_FDATASYNC: io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC); break;
		default: abort();
		}
		uint64_t tag = (++io_thread.sequence << 8) | (uint64_t)op;
		io_uring_sqe_set_data64(sqe, tag);

		/* One enter call submits and waits. If it fails (a signal, or the
		 * kernel short of memory), the SQ head tells whether the kernel
		 * consumed the SQE: if it did, the request is in flight and we
		 * must wait for it; if not, it has not started and may be retried. */
		int submit_tries = 0;
		for (;;) {
			int submitted = io_uring_submit_and_wait(ring, 1);
			if (io_uring_sq_ready(ring) == 0)
				break;
			if ((submitted == -EINTR || submitted == -EAGAIN || submitted == -EBUSY) &&
			    ++submit_tries < IO_RETRY_MAX)
				continue;
			/* Refused for good: the SQE is still queued and unconsumed, and
			 * tearing the ring down discards it. */
			io_ring_abandon(submitted < 0 ? -submitted : EIO);
			ring = NULL;
			break;
		}
		if (ring == NULL) {
			result = io_syscall_run(op, fd, buf, size, offset);
			break;
		}

		struct io_uring_cqe *cqe = NULL;
		int wait_ret;
		do {
			wait_ret = io_uring_wait_cqe(ring, &cqe);
		} while (wait_ret == -EINTR || wait_ret == -EAGAIN);
		if (wait_ret < 0) {
			/* The request is in flight and may still write into buf:
			 * returning would hand the caller memory the kernel owns.
			 * With one request and a queue depth of 8 the CQ cannot
			 * overflow, so this is a broken invariant. */
			fprintf(stderr, "tally io: io_uring_wait_cqe failed: %s\n", strerror(-wait_ret));
			abort();
		}
		assert(cqe->user_data == tag);
		int res = cqe->res;
		io_uring_cqe_seen(ring, cqe);

		if (res == -EINTR || res == -EAGAIN)
			continue; /* bounded by IO_RETRY_MAX, then a system call */
		result = res;
		break;
	}
	errno = saved_errno;
	return result;
}

/* ---- The default table's operations ---------------------------------- */

static int io_default_open(const tally_io *io, const char *path, int flags, int mode)
{
	(void)io;
	int saved_errno = errno;
	int fd;
	do {
		fd = open(path, flags | O_CLOEXEC, (mode_t)mode);
	} while (fd < 0 && errno == EINTR);
	int result = fd >= 0 ? fd : -errno;
	errno = saved_errno;
	return result;
}

static int io_default_close(const tally_io *io, int fd)
{
	(void)io;
	int saved_errno = errno;
	int result = close(fd) == 0 ? 0 : -errno;
	/* On Linux the descriptor is released even when close reports EINTR;
	 * retrying could close a descriptor another thread just opened. Data
	 * durability never rests on close (we fsync first), so it is success. */
	if (result == -EINTR)
		result = 0;
	errno = saved_errno;
	return result;
}

static int64_t io_default_pread(const tally_io *io, int fd, void *buf, size_t size, uint64_t offset)
{
	(void)io;
	if (offset > (uint64_t)INT64_MAX)
		return -EINVAL;
	if (size == 0)
		return 0;
	if (size > IO_TRANSFER_SIZE_MAX)
		size = IO_TRANSFER_SIZE_MAX;
	return io_run(IO_OP_READ, fd, buf, size, offset);
}

static int64_t io_default_pwrite(const tally_io *io, int fd, const void *buf, size_t size,
				 uint64_t offset)
{
	(void)io;
	if (offset > (uint64_t)INT64_MAX)
		return -EINVAL;
	if (size == 0)
		return 0;
	if (size > IO_TRANSFER_SIZE_MAX)
		size = IO_TRANSFER_SIZE_MAX;
	/* io_run never writes through buf for IO_OP_WRITE. */
	return io_run(IO_OP_WRITE, fd, (void *)buf, size, offset);
}

static int io_default_fsync(const tally_io *io, int fd)
{
	(void)io;
	return (int)io_run(IO_OP_FSYNC, fd, NULL, 0, 0);
}

static int io_default_fdatasync(const tally_io *io, int fd)
{
	(void)io;
	return (int)io_run(IO_OP_FDATASYNC, fd, NULL, 0, 0);
}

static int io_default_ftruncate(const tally_io *io, int fd, uint64_t size)
{
	(void)io;
	if (size > (uint64_t)INT64_MAX)
		return -EFBIG;
	int saved_errno = errno;
	int ret;
	do {
		ret = ftruncate(fd, (off_t)size);
	} while (ret < 0 && errno == EINTR);
	int result = ret == 0 ? 0 : -errno;
	errno = saved_errno;
	return result;
}

static int64_t io_default_file_size(const tally_io *io, int fd)
{
	(void)io;
	int saved_errno = errno;
	struct stat st;
	int64_t result = fstat(fd, &st) == 0 ? (int64_t)st.st_size : -errno;
	errno = saved_errno;
	return result;
}

static int io_default_rename(const tally_io *io, const char *from, const char *to)
{
	(void)io;
	int saved_errno = errno;
	int result = rename(from, to) == 0 ? 0 : -errno;
	errno = saved_errno;
	return result;
}

static int io_default_unlink(const tally_io *io, const char *path)
{
	(void)io;
	int saved_errno = errno;
	int result = unlink(path) == 0 ? 0 : -errno;
	errno = saved_errno;
	return result;
}

static int io_default_mkdir(const tally_io *io, const char *path, int mode)
{
	(void)io;
	int saved_errno = errno;
	int result = mkdir(path, (mode_t)mode) == 0 ? 0 : -errno;
	errno = saved_errno;
	return result;
}

/* Returns 0 after every entry, the callback's non-zero value if it stopped
 * the listing, or -errno if the directory could not be opened or read. */
static int io_default_list_dir(const tally_io *io, const char *path, tally_io_dir_fn fn, void *ctx)
{
	(void)io;
	int saved_errno = errno;
	int result = 0;
	DIR *dir = opendir(path);
	if (dir == NULL) {
		result = -errno;
		goto out;
	}
	for (;;) {
		errno = 0;
		struct dirent *entry = readdir(dir);
		if (entry == NULL) {
			if (errno != 0)
				result = -errno;
			break;
		}
		const char *name = entry->d_name;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		int stop = fn(ctx, name);
		if (stop != 0) {
			result = stop;
			break;
		}
	}
	closedir(dir);
out:
	errno = saved_errno;
	return result;
}

static int io_default_fsync_dir(const tally_io *io, const char *path)
{
	(void)io;
	int saved_errno = errno;
	int result = 0;
	int fd;
	do {
		fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	} while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		result = -errno;
		goto out;
	}
	int ret;
	do {
		ret = fsync(fd);
	} while (ret < 0 && errno == EINTR);
	if (ret < 0)
		result = -errno;
	close(fd);
out:
	errno = saved_errno;
	return result;
}

static int io_default_lock(const tally_io *io, int fd)
{
	(void)io;
	int saved_errno = errno;
	int ret;
	do {
		ret = flock(fd, LOCK_EX | LOCK_NB);
	} while (ret < 0 && errno == EINTR);
	int result = ret == 0 ? 0 : -errno; /* -EWOULDBLOCK when another description holds it */
	errno = saved_errno;
	return result;
}

static int64_t io_default_now_us(const tally_io *io)
{
	(void)io;
	struct timespec now;
	int ret = clock_gettime(CLOCK_REALTIME, &now);
	assert(ret == 0); /* CLOCK_REALTIME always exists; &now is valid */
	(void)ret;
	return (int64_t)now.tv_sec * TALLY_US_PER_SECOND + (int64_t)now.tv_nsec / 1000;
}

static void io_default_random(const tally_io *io, void *buf, size_t size)
{
	(void)io;
	int saved_errno = errno;
	unsigned char *out = buf;
	while (size > 0) {
		ssize_t got = getrandom(out, size, 0);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			/* ENOSYS (kernel < 3.17) or a seccomp denial: there is no
			 * source of randomness and the interface cannot fail. */
			fprintf(stderr, "tally io: getrandom failed: %s\n", strerror(errno));
			abort();
		}
		out += got;
		size -= (size_t)got;
	}
	errno = saved_errno;
}

static const tally_io io_default_table = {
	.open = io_default_open,
	.close = io_default_close,
	.pread = io_default_pread,
	.pwrite = io_default_pwrite,
	.fsync = io_default_fsync,
	.fdatasync = io_default_fdatasync,
	.ftruncate = io_default_ftruncate,
	.file_size = io_default_file_size,
	.rename = io_default_rename,
	.unlink = io_default_unlink,
	.mkdir = io_default_mkdir,
	.list_dir = io_default_list_dir,
	.fsync_dir = io_default_fsync_dir,
	.lock = io_default_lock,
	.now_us = io_default_now_us,
	.random = io_default_random,
	.ctx = NULL,
};

/*
 * The production table. Static storage, never freed; safe from any thread.
 * Each thread that reads, writes or syncs gets its own io_uring (released at
 * thread exit), or plain system calls where io_uring is unavailable.
 */
const tally_io *tally_io_default(void)
{
	return &io_default_table;
}

/* ---- Recipes over any table ------------------------------------------ */

/*
 * Writes all `size` bytes of buf at `offset` through io->pwrite, continuing
 * after short writes. Returns 0, or the -errno of the first failing pwrite
 * (the bytes before it may be on disk). A pwrite returning 0 for a non-empty
 * request is -EIO (no progress would loop forever). Does not sync.
 */
int tally_io_write_all(const tally_io *io, int fd, const void *buf, size_t size,
		       uint64_t offset)
{
	const unsigned char *bytes = buf;
	while (size > 0) {
		int64_t written = io->pwrite(io, fd, bytes, size, offset);
		if (written < 0)
			return (int)written;
		if (written == 0)
			return -EIO;
		assert((uint64_t)written <= size); /* an implementation that overreports is broken */
		bytes += written;
		size -= (size_t)written;
		offset += (uint64_t)written;
	}
	return 0;
}

/*
 * Reads exactly `size` bytes at `offset` into buf, continuing after short
 * reads. Returns 0, -errno of a failing pread, or TALLY_E_CORRUPT if the
 * file ends before `size` bytes (buf then holds what was read, the rest is
 * unspecified).
 */
int tally_io_read_all(const tally_io *io, int fd, void *buf, size_t size,
		      uint64_t offset)
{
	unsigned char *bytes = buf;
	while (size > 0) {
		int64_t got = io->pread(io, fd, bytes, size, offset);
		if (got < 0)
			return (int)got;
		if (got == 0)
			return TALLY_E_CORRUPT;
		assert((uint64_t)got <= size);
		bytes += got;
		size -= (size_t)got;
		offset += (uint64_t)got;
	}
	return 0;
}

/* Builds "dir/name" + suffix into out[IO_PATH_SIZE_MAX]; -ENAMETOOLONG if it does not fit. */
static int io_path_join(char out[IO_PATH_SIZE_MAX], const char *dir, const char *name, const char *suffix)
{
	int length = snprintf(out, IO_PATH_SIZE_MAX, "%s/%s%s", dir, name, suffix);
	if (length < 0 || length >= IO_PATH_SIZE_MAX)
		return -ENAMETOOLONG;
	return 0;
}

/*
 * Publishes `size` bytes of buf as "dir/name" by the one durable recipe:
 * write "dir/name.tmp" (created or truncated, mode 0644), fsync it, close it,
 * rename it over "dir/name", fsync dir. Returns 0 (the new content survives
 * a crash) or the -errno of the first failing step. On a failure before the
 * rename the temp file is unlinked (best effort) and "dir/name" is untouched;
 * if only the final directory fsync fails, "dir/name" holds the new content
 * but its durability is not guaranteed.
 */
int tally_io_durable_replace(const tally_io *io, const char *dir, const char *name,
			     const void *buf, size_t size)
{
	char tmp_path[IO_PATH_SIZE_MAX];
	char final_path[IO_PATH_SIZE_MAX];
	int ret = io_path_join(tmp_path, dir, name, ".tmp");
	if (ret == 0)
		ret = io_path_join(final_path, dir, name, "");
	if (ret < 0)
		return ret;

	int fd = io->open(io, tmp_path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0)
		return fd;
	ret = tally_io_write_all(io, fd, buf, size, 0);
	if (ret == 0)
		ret = io->fsync(io, fd);
	int close_ret = io->close(io, fd);
	if (ret == 0)
		ret = close_ret;
	if (ret == 0)
		ret = io->rename(io, tmp_path, final_path);
	if (ret < 0) {
		(void)io->unlink(io, tmp_path); /* best effort; the first error is the one to report */
		return ret;
	}
	return io->fsync_dir(io, dir);
}

/*
 * Publishes the incrementally written, still open fd of "dir/tmp_name" as
 * "dir/name": fsync fd, rename, fsync dir. The fd stays open and owned by
 * the caller, and nothing is unlinked on failure. Returns 0 or the -errno of
 * the first failing step (-ENAMETOOLONG if a path does not fit IO_PATH_SIZE_MAX bytes).
 */
int tally_io_durable_publish(const tally_io *io, int fd, const char *dir,
			     const char *tmp_name, const char *name)
{
	char tmp_path[IO_PATH_SIZE_MAX];
	char final_path[IO_PATH_SIZE_MAX];
	int ret = io_path_join(tmp_path, dir, tmp_name, "");
	if (ret == 0)
		ret = io_path_join(final_path, dir, name, "");
	if (ret == 0)
		ret = io->fsync(io, fd);
	if (ret == 0)
		ret = io->rename(io, tmp_path, final_path);
	if (ret == 0)
		ret = io->fsync_dir(io, dir);
	return ret;
}

int tally_io_fsync_parent(const tally_io *io, const char *path)
{
	char parent[IO_PATH_SIZE_MAX];
	int length = snprintf(parent, sizeof(parent), "%s", path);
	if (length < 0 || length >= IO_PATH_SIZE_MAX)
		return -ENAMETOOLONG;
	size_t n = (size_t)length;
	while (n > 1 && parent[n - 1] == '/')
		parent[--n] = '\0';
	char *slash = strrchr(parent, '/');
	if (!slash)
		snprintf(parent, sizeof(parent), ".");
	else if (slash == parent)
		parent[1] = '\0';
	else
		*slash = '\0';
	return io->fsync_dir(io, parent);
}

int tally_io_make_dir(const tally_io *io, const char *path, int mode)
{
	int rc = io->mkdir(io, path, mode);
	if (rc == -EEXIST)
		return 0;
	return rc ? rc : tally_io_fsync_parent(io, path);
}
