/*
 * fault_io.c — the fault-injecting tally_io described in fault_io.h.
 *
 * NOTES ON THE DESIGN
 *
 * 1. The table's ctx points at its fault_io; every wrapped call finds its
 *    knobs through io->ctx and forwards to the inner table
 *    (tally_io_default()) unless a knob fires.
 *
 * 2. One mutex guards knobs, counters and the fd -> path table. It is held
 *    only to decide what a call does and to account for it afterwards,
 *    never across the inner call, so a slow fsync in one thread does not
 *    stall another thread's writes.
 *
 * 3. The disk limit is a byte budget. A pwrite reserves the bytes it may
 *    write under the mutex before calling through and gives back what the
 *    inner pwrite did not write; so two threads racing for the last bytes
 *    never write more than the budget in total. A generation number keeps
 *    a give-back from leaking into a budget set later.
 *
 * 4. fd -> path: open records a copy of the path at paths[fd]; close forgets
 *    it *before* calling the inner close, because once the descriptor is
 *    closed another thread's open may reuse the number.
 *
 * 5. Failed calls do nothing: a failed fsync does not sync, a failed
 *    pwrite, ftruncate, rename or unlink changes nothing on disk, a failed open creates nothing
 *    (except an O_DIRECT open refused by direct_unsupported, which creates
 *    the file first, as Linux does).
 *
 * 6. Direct I/O: the kernel writes a file opened with O_DIRECT in whole
 *    blocks, so a write cut short by a knob is cut to whole
 *    FAULT_IO_DIRECT_BLOCK blocks (the short write knob always lets one
 *    block through; a disk budget under one block is -ENOSPC). direct[fd]
 *    remembers the open's O_DIRECT flag.
 */
#include "fault_io.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "Fail the nth matching call (and maybe every later one)". */
typedef struct fault_plan {
	uint64_t nth;  /* 1-based; 0: off */
	uint64_t seen; /* matching calls since the plan was set */
	int error;     /* positive errno */
	bool from;     /* also every call after the nth */
} fault_plan;

struct fault_io {
	tally_io table; /* handed out; table.ctx == this */
	const tally_io *inner;
	pthread_mutex_t mutex;

	char filter[FAULT_IO_SUBSTRING_SIZE_MAX]; /* "" : every path */
	fault_plan fsync_plan;
	fault_plan pwrite_plan;

	bool disk_limit_on;
	uint64_t disk_limit_remaining_bytes;
	uint64_t disk_limit_generation;

	uint64_t short_write_bytes_max; /* 0: off */
	uint32_t pread_delay_us;        /* matching preads sleep this long first; 0: off */
	uint32_t pwrite_delay_us;       /* matching pwrites likewise */
	int rename_error;
	int ftruncate_error;
	int unlink_error;
	int list_dir_error;
	int fsync_dir_error;
	char fsync_dir_fail_path[FAULT_IO_SUBSTRING_SIZE_MAX]; /* "": every directory */
	char open_fail_substring[FAULT_IO_SUBSTRING_SIZE_MAX];
	int open_error;
	bool open_fail_reads_only; /* open_error only for opens without write access */
	bool direct_unsupported;
	bool direct_writes_fail;

	bool clock_frozen;
	int64_t clock_now_us;
	int64_t clock_tick_us; /* a frozen clock moves on this much after each read */

	bool random_seeded;
	bool random_repeat; /* each random() call restarts at random_seed */
	uint64_t random_seed;
	uint64_t random_state;

	fault_io_counts counts;
	char *paths[FAULT_IO_FD_MAX];
	bool direct[FAULT_IO_FD_MAX];
};

static fault_io *fault_io_from(const tally_io *io)
{
	return io->ctx;
}

static void fault_io_lock(fault_io *f)
{
	int ret = pthread_mutex_lock(&f->mutex);
	if (ret != 0)
		abort(); /* a default mutex fails only if corrupted */
}

static void fault_io_unlock(fault_io *f)
{
	pthread_mutex_unlock(&f->mutex);
}

/* Copies a substring knob; NULL becomes "". Aborts on an over-long string
 * (a test bug, not an operating error). */
static void fault_io_substring_copy(char out[FAULT_IO_SUBSTRING_SIZE_MAX], const char *substring)
{
	if (substring == NULL) {
		out[0] = '\0';
		return;
	}
	size_t length = strlen(substring);
	if (length >= FAULT_IO_SUBSTRING_SIZE_MAX)
		abort();
	memcpy(out, substring, length + 1);
}

/* With the mutex held: does a path match the filter? */
static bool fault_io_path_matches(const fault_io *f, const char *path)
{
	if (f->filter[0] == '\0')
		return true;
	return path != NULL && strstr(path, f->filter) != NULL;
}

/* With the mutex held: does the file behind fd match the filter? */
static bool fault_io_fd_matches(const fault_io *f, int fd)
{
	if (f->filter[0] == '\0')
		return true;
	if (fd < 0 || fd >= FAULT_IO_FD_MAX)
		return false;
	return fault_io_path_matches(f, f->paths[fd]);
}

/* With the mutex held: counts one matching call; returns the errno to
 * inject (positive) or 0. */
static int fault_plan_step(fault_plan *plan)
{
	if (plan->nth == 0 || plan->error == 0)
		return 0;
	plan->seen++;
	if (plan->seen == plan->nth || (plan->from && plan->seen > plan->nth))
		return plan->error;
	return 0;
}

static void fault_plan_set(fault_io *f, fault_plan *plan, uint64_t nth, int error, bool from)
{
	fault_io_lock(f);
	*plan = (fault_plan){.nth = nth, .seen = 0, .error = error, .from = from};
	fault_io_unlock(f);
}

/* splitmix64 (Steele, Lea, Flood 2014): one step of the stream. */
static uint64_t splitmix64_next(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* ---- The wrapped operations ------------------------------------------- */

static int fault_open(const tally_io *io, const char *path, int flags, int mode)
{
	fault_io *f = fault_io_from(io);
	fault_io_lock(f);
	f->counts.open_count++;
	int error = 0;
	if (f->open_error != 0 && f->open_fail_substring[0] != '\0' &&
	    strstr(path, f->open_fail_substring) != NULL &&
	    (!f->open_fail_reads_only || (flags & O_ACCMODE) == O_RDONLY)) {
		error = f->open_error;
		f->counts.fault_count++;
	}
	bool refuse_direct = (flags & O_DIRECT) && f->direct_unsupported;
	if (refuse_direct)
		f->counts.fault_count++;
	fault_io_unlock(f);
	if (error != 0)
		return -error;
	if (refuse_direct) {
		int created = f->inner->open(f->inner, path, flags & ~O_DIRECT, mode);
		if (created >= 0)
			f->inner->close(f->inner, created);
		return created < 0 ? created : -EINVAL;
	}

	int fd = f->inner->open(f->inner, path, flags, mode);
	if (fd < 0 || fd >= FAULT_IO_FD_MAX)
		return fd;
	char *copy = strdup(path);
	if (copy == NULL) {
		f->inner->close(f->inner, fd);
		return -ENOMEM;
	}
	fault_io_lock(f);
	free(f->paths[fd]); /* a stale entry from an fd closed behind our back */
	f->paths[fd] = copy;
	f->direct[fd] = (flags & O_DIRECT) != 0;
	fault_io_unlock(f);
	return fd;
}

static int fault_close(const tally_io *io, int fd)
{
	fault_io *f = fault_io_from(io);
	if (fd >= 0 && fd < FAULT_IO_FD_MAX) {
		fault_io_lock(f);
		free(f->paths[fd]);
		f->paths[fd] = NULL;
		fault_io_unlock(f);
	}
	return f->inner->close(f->inner, fd);
}

static int64_t fault_pread(const tally_io *io, int fd, void *buf, size_t size, uint64_t offset)
{
	fault_io *f = fault_io_from(io);
	fault_io_lock(f);
	f->counts.pread_count++;
	uint32_t delay_us = fault_io_fd_matches(f, fd) ? f->pread_delay_us : 0;
	fault_io_unlock(f);
	if (delay_us)
		usleep(delay_us);
	return f->inner->pread(f->inner, fd, buf, size, offset);
}

static int64_t fault_pwrite(const tally_io *io, int fd, const void *buf, size_t size,
			    uint64_t offset)
{
	fault_io *f = fault_io_from(io);
	size_t allowed = size;
	bool reserved = false;
	uint64_t generation = 0;

	fault_io_lock(f);
	uint32_t delay_us = fault_io_fd_matches(f, fd) ? f->pwrite_delay_us : 0;
	fault_io_unlock(f);
	if (delay_us)
		usleep(delay_us);
	fault_io_lock(f);
	f->counts.pwrite_count++;
	bool direct = fd >= 0 && fd < FAULT_IO_FD_MAX && f->direct[fd];
	if (direct && f->direct_writes_fail) {
		f->counts.fault_count++;
		fault_io_unlock(f);
		return -EINVAL;
	}
	if (size > 0 && fault_io_fd_matches(f, fd)) {
		int error = fault_plan_step(&f->pwrite_plan);
		if (error == 0 && f->disk_limit_on && f->disk_limit_remaining_bytes == 0)
			error = ENOSPC;
		if (error != 0) {
			f->counts.fault_count++;
			fault_io_unlock(f);
			return -error;
		}
		if (f->short_write_bytes_max != 0 && allowed > f->short_write_bytes_max) {
			allowed = (size_t)f->short_write_bytes_max;
			if (direct)
				allowed = allowed < FAULT_IO_DIRECT_BLOCK
						  ? FAULT_IO_DIRECT_BLOCK
						  : allowed / FAULT_IO_DIRECT_BLOCK * FAULT_IO_DIRECT_BLOCK;
		}
		if (f->disk_limit_on) {
			if (allowed > f->disk_limit_remaining_bytes)
				allowed = (size_t)f->disk_limit_remaining_bytes;
			if (direct && allowed < size)
				allowed = allowed / FAULT_IO_DIRECT_BLOCK * FAULT_IO_DIRECT_BLOCK;
			if (allowed == 0) {
				f->counts.fault_count++;
				fault_io_unlock(f);
				return -ENOSPC;
			}
			f->disk_limit_remaining_bytes -= allowed;
			reserved = true;
			generation = f->disk_limit_generation;
		}
		if (allowed < size)
			f->counts.fault_count++;
	}
	fault_io_unlock(f);

	int64_t written = f->inner->pwrite(f->inner, fd, buf, allowed, offset);

	fault_io_lock(f);
	if (written > 0)
		f->counts.pwrite_bytes += (uint64_t)written;
	if (reserved && f->disk_limit_on && f->disk_limit_generation == generation) {
		uint64_t used = written > 0 ? (uint64_t)written : 0;
		f->disk_limit_remaining_bytes += allowed - used;
	}
	fault_io_unlock(f);
	return written;
}

/* fsync and fdatasync share the plan and the counter. */
static int fault_sync(const tally_io *io, int fd, bool data_only)
{
	fault_io *f = fault_io_from(io);
	fault_io_lock(f);
	f->counts.fsync_count++;
	int error = 0;
	if (fault_io_fd_matches(f, fd))
		error = fault_plan_step(&f->fsync_plan);
	if (error != 0)
		f->counts.fault_count++;
	fault_io_unlock(f);
	if (error != 0)
		return -error;
	return data_only ? f->inner->fdatasync(f->inner, fd) : f->inner->fsync(f->inner, fd);
}

static int fault_fsync(const tally_io *io, int fd)
{
	return fault_sync(io, fd, false);
}

static int fault_fdatasync(const tally_io *io, int fd)
{
	return fault_sync(io, fd, true);
}

static int fault_ftruncate(const tally_io *io, int fd, uint64_t size)
{
	fault_io *f = fault_io_from(io);
	fault_io_lock(f);
	int error = 0;
	if (f->ftruncate_error != 0 && fault_io_fd_matches(f, fd)) {
		error = f->ftruncate_error;
		f->counts.fault_count++;
	}
	fault_io_unlock(f);
	if (error != 0)
		return -error;
	return f->inner->ftruncate(f->inner, fd, size);
}

static int64_t fault_file_size(const tally_io *io, int fd)
{
	fault_io *f = fault_io_from(io);
	return f->inner->file_size(f->inner, fd);
}

static int fault_rename(const tally_io *io, const char *from, const char *to)
{
	fault_io *f = fault_io_from(io);
	fault_io_lock(f);
	f->counts.rename_count++;
	int error = 0;
	if (f->rename_error != 0 && (fault_io_path_matches(f, from) || fault_io_path_matches(f, to))) {
		error = f->rename_error;
		f->counts.fault_count++;
	}
	fault_io_unlock(f);
	if (error != 0)
		return -error;
	return f->inner->rename(f->inner, from, to);
}

static int fault_unlink(const tally_io *io, const char *path)
{
	fault_io *f = fault_io_from(io);
	fault_io_lock(f);
	int error = 0;
	if (f->unlink_error != 0 && fault_io_path_matches(f, path)) {
		error = f->unlink_error;
		f->counts.fault_count++;
	}
	fault_io_unlock(f);
	if (error != 0)
		return -error;
	return f->inner->unlink(f->inner, path);
}

static int fault_mkdir(const tally_io *io, const char *path, int mode)
{
	fault_io *f = fault_io_from(io);
	return f->inner->mkdir(f->inner, path, mode);
}

static int fault_list_dir(const tally_io *io, const char *path, tally_io_dir_fn fn, void *ctx)
{
	fault_io *f = fault_io_from(io);
	fault_io_lock(f);
	int error = 0;
	if (f->list_dir_error != 0 && fault_io_path_matches(f, path)) {
		error = f->list_dir_error;
		f->counts.fault_count++;
	}
	fault_io_unlock(f);
	if (error != 0)
		return -error;
	return f->inner->list_dir(f->inner, path, fn, ctx);
}

static int fault_fsync_dir(const tally_io *io, const char *path)
{
	fault_io *f = fault_io_from(io);
	fault_io_lock(f);
	f->counts.fsync_dir_count++;
	int error = f->fsync_dir_error;
	if (f->fsync_dir_fail_path[0] != '\0' && strcmp(path, f->fsync_dir_fail_path) != 0)
		error = 0;
	if (error != 0)
		f->counts.fault_count++;
	fault_io_unlock(f);
	if (error != 0)
		return -error;
	return f->inner->fsync_dir(f->inner, path);
}

static int fault_lock(const tally_io *io, int fd)
{
	fault_io *f = fault_io_from(io);
	return f->inner->lock(f->inner, fd);
}

static int64_t fault_now_us(const tally_io *io)
{
	fault_io *f = fault_io_from(io);
	fault_io_lock(f);
	bool frozen = f->clock_frozen;
	int64_t now_us = f->clock_now_us;
	if (frozen)
		f->clock_now_us += f->clock_tick_us;
	fault_io_unlock(f);
	return frozen ? now_us : f->inner->now_us(f->inner);
}

static void fault_random(const tally_io *io, void *buf, size_t size)
{
	fault_io *f = fault_io_from(io);
	fault_io_lock(f);
	if (!f->random_seeded) {
		fault_io_unlock(f);
		f->inner->random(f->inner, buf, size);
		return;
	}
	unsigned char *out = buf;
	if (f->random_repeat)
		f->random_state = f->random_seed;
	while (size > 0) {
		uint64_t value = splitmix64_next(&f->random_state);
		size_t step = size < 8 ? size : 8;
		for (size_t i = 0; i < step; i++)
			out[i] = (unsigned char)(value >> (8 * i));
		out += step;
		size -= step;
	}
	fault_io_unlock(f);
}

/* ---- Construction and knobs ------------------------------------------- */

/* See fault_io.h. Returns NULL if out of memory. */
fault_io *fault_io_create(void)
{
	fault_io *f = calloc(1, sizeof *f);
	if (f == NULL)
		return NULL;
	if (pthread_mutex_init(&f->mutex, NULL) != 0) {
		free(f);
		return NULL;
	}
	f->inner = tally_io_default();
	f->table = (tally_io){
		.open = fault_open,
		.close = fault_close,
		.pread = fault_pread,
		.pwrite = fault_pwrite,
		.fsync = fault_fsync,
		.fdatasync = fault_fdatasync,
		.ftruncate = fault_ftruncate,
		.file_size = fault_file_size,
		.rename = fault_rename,
		.unlink = fault_unlink,
		.mkdir = fault_mkdir,
		.list_dir = fault_list_dir,
		.fsync_dir = fault_fsync_dir,
		.lock = fault_lock,
		.now_us = fault_now_us,
		.random = fault_random,
		.ctx = f,
	};
	return f;
}

/* See fault_io.h. Frees the remembered paths, the mutex and f. */
void fault_io_destroy(fault_io *f)
{
	if (f == NULL)
		return;
	for (int fd = 0; fd < FAULT_IO_FD_MAX; fd++)
		free(f->paths[fd]);
	pthread_mutex_destroy(&f->mutex);
	free(f);
}

/* See fault_io.h. The pointer is owned by f. */
const tally_io *fault_io_table(fault_io *f)
{
	return &f->table;
}

/* See fault_io.h. The substring is copied. */
void fault_io_path_filter_set(fault_io *f, const char *substring)
{
	fault_io_lock(f);
	fault_io_substring_copy(f->filter, substring);
	fault_io_unlock(f);
}

/* See fault_io.h. Restarts the count of matching fsyncs at 0. */
void fault_io_fsync_fail_nth(fault_io *f, uint64_t nth, int error)
{
	fault_plan_set(f, &f->fsync_plan, nth, error, false);
}

/* See fault_io.h. Restarts the count of matching fsyncs at 0. */
void fault_io_fsync_fail_from(fault_io *f, uint64_t nth, int error)
{
	fault_plan_set(f, &f->fsync_plan, nth, error, true);
}

/* See fault_io.h. Restarts the count of matching pwrites at 0. */
void fault_io_pwrite_fail_nth(fault_io *f, uint64_t nth, int error)
{
	fault_plan_set(f, &f->pwrite_plan, nth, error, false);
}

/* See fault_io.h. Restarts the count of matching pwrites at 0. */
void fault_io_pwrite_fail_from(fault_io *f, uint64_t nth, int error)
{
	fault_plan_set(f, &f->pwrite_plan, nth, error, true);
}

/* See fault_io.h. Replaces any earlier budget. */
void fault_io_disk_limit_set(fault_io *f, uint64_t bytes)
{
	fault_io_lock(f);
	f->disk_limit_on = true;
	f->disk_limit_remaining_bytes = bytes;
	f->disk_limit_generation++;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_delay_set(fault_io *f, uint32_t pread_us, uint32_t pwrite_us)
{
	fault_io_lock(f);
	f->pread_delay_us = pread_us;
	f->pwrite_delay_us = pwrite_us;
	fault_io_unlock(f);
}

/* See fault_io.h. Writes are unlimited again. */
void fault_io_disk_limit_clear(fault_io *f)
{
	fault_io_lock(f);
	f->disk_limit_on = false;
	f->disk_limit_remaining_bytes = 0;
	f->disk_limit_generation++;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_short_write_set(fault_io *f, uint64_t bytes_max)
{
	fault_io_lock(f);
	f->short_write_bytes_max = bytes_max;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_rename_fail(fault_io *f, int error)
{
	fault_io_lock(f);
	f->rename_error = error;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_ftruncate_fail(fault_io *f, int error)
{
	fault_io_lock(f);
	f->ftruncate_error = error;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_unlink_fail(fault_io *f, int error)
{
	fault_io_lock(f);
	f->unlink_error = error;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_list_dir_fail(fault_io *f, int error)
{
	fault_io_lock(f);
	f->list_dir_error = error;
	fault_io_unlock(f);
}

/* See fault_io.h. The substring is copied. */
void fault_io_open_fail(fault_io *f, const char *substring, int error)
{
	fault_io_lock(f);
	fault_io_substring_copy(f->open_fail_substring, substring);
	f->open_error = substring != NULL ? error : 0;
	f->open_fail_reads_only = false;
	fault_io_unlock(f);
}

/* See fault_io.h. The substring is copied. */
void fault_io_open_fail_reads(fault_io *f, const char *substring, int error)
{
	fault_io_lock(f);
	fault_io_substring_copy(f->open_fail_substring, substring);
	f->open_error = substring != NULL ? error : 0;
	f->open_fail_reads_only = true;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_fsync_dir_fail(fault_io *f, int error)
{
	fault_io_lock(f);
	f->fsync_dir_error = error;
	f->fsync_dir_fail_path[0] = '\0';
	fault_io_unlock(f);
}

/* See fault_io.h. The path is copied. */
void fault_io_fsync_dir_fail_at(fault_io *f, const char *path, int error)
{
	fault_io_lock(f);
	fault_io_substring_copy(f->fsync_dir_fail_path, path);
	f->fsync_dir_error = error;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_clock_set_us(fault_io *f, int64_t now_us)
{
	fault_io_lock(f);
	f->clock_frozen = true;
	f->clock_now_us = now_us;
	fault_io_unlock(f);
}

/* See fault_io.h. delta_us may be negative (a clock stepped back). */
void fault_io_clock_advance_us(fault_io *f, int64_t delta_us)
{
	/* Read the real clock outside the mutex; it is only used if the clock
	 * was not frozen, and freezing concurrently is a test's own race. */
	int64_t real_us = f->inner->now_us(f->inner);
	fault_io_lock(f);
	if (!f->clock_frozen) {
		f->clock_frozen = true;
		f->clock_now_us = real_us;
	}
	f->clock_now_us += delta_us;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_clock_tick_us(fault_io *f, int64_t tick_us)
{
	fault_io_lock(f);
	f->clock_tick_us = tick_us;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_clock_real(fault_io *f)
{
	fault_io_lock(f);
	f->clock_frozen = false;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_random_seed(fault_io *f, uint64_t seed)
{
	fault_io_lock(f);
	f->random_seeded = true;
	f->random_repeat = false;
	f->random_seed = seed;
	f->random_state = seed;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_random_repeat(fault_io *f, uint64_t seed)
{
	fault_io_random_seed(f, seed);
	fault_io_lock(f);
	f->random_repeat = true;
	fault_io_unlock(f);
}

/* See fault_io.h. A consistent snapshot (taken under the mutex). */
void fault_io_counts_get(fault_io *f, fault_io_counts *counts)
{
	fault_io_lock(f);
	*counts = f->counts;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_counts_reset(fault_io *f)
{
	fault_io_lock(f);
	f->counts = (fault_io_counts){0};
	fault_io_unlock(f);
}

/* Every fault knob off (lock held). */
static void faults_off_locked(fault_io *f)
{
	f->filter[0] = '\0';
	f->fsync_plan = (fault_plan){0};
	f->pwrite_plan = (fault_plan){0};
	f->disk_limit_on = false;
	f->disk_limit_remaining_bytes = 0;
	f->disk_limit_generation++;
	f->short_write_bytes_max = 0;
	f->rename_error = 0;
	f->ftruncate_error = 0;
	f->unlink_error = 0;
	f->list_dir_error = 0;
	f->fsync_dir_error = 0;
	f->fsync_dir_fail_path[0] = '\0';
	f->open_fail_substring[0] = '\0';
	f->open_error = 0;
	f->open_fail_reads_only = false;
	f->direct_unsupported = false;
	f->direct_writes_fail = false;
}

/* See fault_io.h. */
void fault_io_faults_off(fault_io *f)
{
	fault_io_lock(f);
	faults_off_locked(f);
	fault_io_unlock(f);
}

/* See fault_io.h. Knobs off; counters and remembered paths kept. */
void fault_io_reset(fault_io *f)
{
	fault_io_lock(f);
	faults_off_locked(f);
	f->clock_frozen = false;
	f->clock_tick_us = 0;
	f->random_seeded = false;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_direct_unsupported(fault_io *f, bool on)
{
	fault_io_lock(f);
	f->direct_unsupported = on;
	fault_io_unlock(f);
}

/* See fault_io.h. */
void fault_io_direct_writes_fail(fault_io *f, bool on)
{
	fault_io_lock(f);
	f->direct_writes_fail = on;
	fault_io_unlock(f);
}
