/*
 * tally_io.h — the one seam between the engine and the operating system.
 *
 * Every file operation, fsync, rename, directory listing, the clock and
 * randomness go through a tally_io table (SQLite's aSyscall[] idea), so tests
 * can replace any of them: fail the Nth fsync with EIO, make a disk full,
 * shorten a write, or freeze the clock.
 *
 * Contract for every function pointer:
 *   - Paths are NUL-terminated and absolute or relative to the process cwd.
 *   - Return values: >= 0 on success (a file descriptor, a byte count, or 0),
 *     -errno on failure. Never sets or relies on the global errno.
 *   - pwrite may write fewer bytes than asked (a short write); callers use
 *     tally_io_write_all(), which continues or reports the failure.
 *   - pread returns 0 only at end of file.
 *   - Implementations must be safe to call from several threads at once.
 *
 * tally_io_default() is backed by liburing (one ring per thread, created on
 * first use) for reads, writes and fsyncs, and by plain system calls for
 * the rest.
 */
#ifndef TALLY_IO_H
#define TALLY_IO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tally_io tally_io;

/* Called once per directory entry (not "." or ".."); return non-zero to stop. */
typedef int (*tally_io_dir_fn)(void *ctx, const char *name);

struct tally_io {
	int (*open)(const tally_io *io, const char *path, int flags, int mode);
	int (*close)(const tally_io *io, int fd);
	int64_t (*pread)(const tally_io *io, int fd, void *buf, size_t size, uint64_t offset);
	int64_t (*pwrite)(const tally_io *io, int fd, const void *buf, size_t size, uint64_t offset);
	int (*fsync)(const tally_io *io, int fd);     /* data and metadata */
	int (*fdatasync)(const tally_io *io, int fd); /* data (and size) */
	int (*ftruncate)(const tally_io *io, int fd, uint64_t size);
	int64_t (*file_size)(const tally_io *io, int fd);
	int (*rename)(const tally_io *io, const char *from, const char *to);
	int (*unlink)(const tally_io *io, const char *path);
	int (*mkdir)(const tally_io *io, const char *path, int mode); /* -EEXIST if present */
	int (*list_dir)(const tally_io *io, const char *path, tally_io_dir_fn fn, void *ctx);
	int (*fsync_dir)(const tally_io *io, const char *path);
	int (*lock)(const tally_io *io, int fd);       /* exclusive, non-blocking: -EWOULDBLOCK if held */
	int64_t (*now_us)(const tally_io *io);         /* wall clock, microseconds since the epoch, UTC */
	void (*random)(const tally_io *io, void *buf, size_t size);
	void *ctx; /* for implementations; the engine never touches it */
};

/* The production implementation. Static storage; never freed. */
const tally_io *tally_io_default(void);

/*
 * Writes all `size` bytes at `offset`, continuing after short writes.
 * Returns 0, or -errno of the first failure (bytes before it may be written).
 * A pwrite that returns 0 for a non-empty request is reported as -EIO.
 */
int tally_io_write_all(const tally_io *io, int fd, const void *buf, size_t size,
		       uint64_t offset);

/* Reads exactly `size` bytes at `offset`. Returns 0, -errno, or
 * TALLY_E_CORRUPT if the file ends first (a file shorter than its index says). */
int tally_io_read_all(const tally_io *io, int fd, void *buf, size_t size,
		      uint64_t offset);

/*
 * The one recipe for publishing a file durably: writes `size` bytes to
 * "dir/name.tmp", fsyncs it, renames it to "dir/name", fsyncs dir.
 * After a 0 return the new content survives a crash; after a failure either
 * the old "dir/name" or the new one is there (never a torn mix), and the
 * temp file has been removed when possible.
 */
int tally_io_durable_replace(const tally_io *io, const char *dir, const char *name,
			     const void *buf, size_t size);

/*
 * The same recipe for a file written incrementally: fsyncs the open fd of
 * "dir/tmp_name", renames it to "dir/name", fsyncs dir. The fd stays open and
 * owned by the caller. Returns 0 or -errno naming nothing; the caller reports.
 */
int tally_io_durable_publish(const tally_io *io, int fd, const char *dir,
			     const char *tmp_name, const char *name);

/* fsyncs the directory that holds `path` ("." for a name without a slash),
 * so that path's entry in it is durable. 0 or -errno (-ENAMETOOLONG for a
 * path over IO_PATH_SIZE_MAX bytes). */
int tally_io_fsync_parent(const tally_io *io, const char *path);

/* Makes directory `path` (mode as mkdir's) and, when it was made, makes its
 * entry durable (tally_io_fsync_parent): a directory made and not synced
 * into its parent can vanish at a power cut with everything written in it.
 * 0 also when it exists already; otherwise -errno of the failing step. */
int tally_io_make_dir(const tally_io *io, const char *path, int mode);

#ifdef __cplusplus
}
#endif
#endif /* TALLY_IO_H */
