/*
 * fault_io.h — a fault-injecting tally_io for tests.
 *
 * A fault_io wraps tally_io_default() and passes every call through, except
 * where a knob says otherwise. Hand fault_io_table(f) to the engine (as
 * tally_options.io) and turn knobs from the test, before or during the run:
 *
 *   fsync        fail the Nth fsync/fdatasync (1-based, counted from the
 *                moment the knob is set) with -error, or the Nth and every
 *                later one; a failed fsync does not reach the disk.
 *   pwrite       the same "Nth / from the Nth on" failure for pwrite.
 *   disk limit   after K more bytes written by pwrite, every pwrite is
 *                -ENOSPC; a write that crosses the limit writes only the part
 *                that fits (a short write) and the next call gets -ENOSPC.
 *   short write  every pwrite writes at most M bytes.
 *   direct I/O   opens with O_DIRECT fail with -EINVAL after creating the
 *                file, like a file system without direct I/O under Linux;
 *                or every write to a file opened with O_DIRECT fails with
 *                -EINVAL, like one that wants a larger alignment.
 * On a file opened with O_DIRECT, a write cut short is cut to whole
 * FAULT_IO_DIRECT_BLOCK blocks, as the kernel's direct I/O writes: the
 * short write knob lets at least one block through, and a disk budget of
 * less than a block makes the write -ENOSPC.
 *   rename       every rename fails with -error (nothing is renamed).
 *   ftruncate    every ftruncate fails with -error (nothing is cut).
 *   unlink       every unlink fails with -error (nothing is removed).
 *   list_dir     every directory listing fails with -error (no entry seen).
 *   open         opens of paths containing a substring fail with -error.
 *   fsync_dir    every directory fsync fails with -error.
 *   clock        now_us returns a set value, moved only by
 *                fault_io_clock_advance_us.
 *   random       after fault_io_random_seed, random() is a splitmix64 stream.
 *
 * Path filter: with fault_io_path_filter_set(f, ".wal"), the fsync, pwrite,
 * disk limit, short write, rename, ftruncate, unlink and list_dir knobs
 * apply only to paths that contain ".wal" (for fd-based calls, the path
 * given to open for that fd; an fd not opened through this table never
 * matches a filter). Only matching calls count towards "the Nth" and the
 * disk limit. The open knob has its own substring and ignores the filter.
 *
 * Counters (fault_io_counts_get) count every call made through the table,
 * matching the filter or not, failed or not, except pwrite_bytes, which
 * counts bytes actually written.
 *
 * Threads: every knob and counter is guarded by one mutex, held only while
 * deciding (never across the wrapped call), so the table may be used from
 * any number of threads while the test turns knobs. Positive errno values
 * (EIO, ENOSPC) are passed to knobs; the table returns them negated.
 *
 * Limits: fds >= FAULT_IO_FD_MAX are passed through but have no known path.
 */
#ifndef TALLY_FAULT_IO_H
#define TALLY_FAULT_IO_H

#include <stdbool.h>
#include <stdint.h>

#include "tally_io.h"

#define FAULT_IO_FD_MAX 4096
#define FAULT_IO_SUBSTRING_SIZE_MAX 256

typedef struct fault_io fault_io;

typedef struct fault_io_counts {
	uint64_t open_count;
	uint64_t fsync_count;     /* fsync + fdatasync calls */
	uint64_t fsync_dir_count;
	uint64_t pread_count;
	uint64_t pwrite_count;
	uint64_t pwrite_bytes;    /* bytes the wrapped pwrite reported written */
	uint64_t rename_count;
	uint64_t fault_count;     /* calls that got an injected failure or short write */
} fault_io_counts;

/* Creates a fault_io with every knob off (a pure pass-through). Returns
 * NULL if out of memory. Free with fault_io_destroy. */
fault_io *fault_io_create(void);

/* Frees f. The table must no longer be in use; fds opened through it stay
 * open (their paths are forgotten). NULL is ignored. */
void fault_io_destroy(fault_io *f);

/* The table to hand to the engine; valid until fault_io_destroy(f). */
const tally_io *fault_io_table(fault_io *f);

/* Faults apply only to paths containing `substring` (copied; at most
 * FAULT_IO_SUBSTRING_SIZE_MAX - 1 bytes). NULL: every path (the default). */
void fault_io_path_filter_set(fault_io *f, const char *substring);

/* The nth (1-based) matching fsync/fdatasync from now fails with -error;
 * with fault_io_fsync_fail_from, so does every later one. nth = 0 or
 * error = 0 turns the knob off. */
void fault_io_fsync_fail_nth(fault_io *f, uint64_t nth, int error);
void fault_io_fsync_fail_from(fault_io *f, uint64_t nth, int error);

/* The same for pwrite. A failed pwrite writes nothing. */
void fault_io_pwrite_fail_nth(fault_io *f, uint64_t nth, int error);
void fault_io_pwrite_fail_from(fault_io *f, uint64_t nth, int error);

/* After `bytes` more bytes are written by matching pwrites, they return
 * -ENOSPC; a write crossing the limit is cut to what fits. */
void fault_io_disk_limit_set(fault_io *f, uint64_t bytes);
void fault_io_disk_limit_clear(fault_io *f);

/* Every matching pread sleeps pread_us microseconds before it reads, and
 * every matching pwrite pwrite_us before it writes (a slow disk, to make a
 * compaction or a flush last); 0 turns each off. */
void fault_io_delay_set(fault_io *f, uint32_t pread_us, uint32_t pwrite_us);

/* Every matching pwrite writes at most bytes_max bytes (0: off). */
void fault_io_short_write_set(fault_io *f, uint64_t bytes_max);

/* While on, every open with O_DIRECT creates the file (O_CREAT) and fails
 * with -EINVAL. Ignores the path filter. */
void fault_io_direct_unsupported(fault_io *f, bool on);

/* While on, every pwrite to a file opened with O_DIRECT fails with -EINVAL
 * and writes nothing. Ignores the path filter. */
void fault_io_direct_writes_fail(fault_io *f, bool on);

#define FAULT_IO_DIRECT_BLOCK 4096u

/* Every matching rename (from or to contains the filter) fails with -error
 * (0: off). */
void fault_io_rename_fail(fault_io *f, int error);

/* Every matching ftruncate (the filter applies to the path its fd was
 * opened with) fails with -error and cuts nothing (0: off). */
void fault_io_ftruncate_fail(fault_io *f, int error);

/* Every matching unlink fails with -error and removes nothing (0: off). */
void fault_io_unlink_fail(fault_io *f, int error);

/* Every listing of a matching directory fails with -error before it
 * calls back once (0: off). */
void fault_io_list_dir_fail(fault_io *f, int error);

/* Every open of a path containing `substring` fails with -error (NULL or
 * error 0: off). Independent of the path filter. */
void fault_io_open_fail(fault_io *f, const char *substring, int error);

/* As fault_io_open_fail, but only opens for reading (O_RDONLY) fail. */
void fault_io_open_fail_reads(fault_io *f, const char *substring, int error);

/* Every fsync_dir fails with -error (0: off). Ignores the path filter. */
void fault_io_fsync_dir_fail(fault_io *f, int error);

/* Only an fsync_dir of exactly `path` fails, with -error (0: off; the
 * path is at most FAULT_IO_SUBSTRING_SIZE_MAX - 1 bytes). Ignores the path
 * filter; fault_io_fsync_dir_fail turns it back to every directory. */
void fault_io_fsync_dir_fail_at(fault_io *f, const char *path, int error);

/* Freezes the clock at now_us. fault_io_clock_advance_us moves it forward
 * (freezing it at the real time first if it was not frozen);
 * fault_io_clock_real returns to the wall clock. */
void fault_io_clock_set_us(fault_io *f, int64_t now_us);
void fault_io_clock_advance_us(fault_io *f, int64_t delta_us);
void fault_io_clock_real(fault_io *f);
/* A frozen clock moves on tick_us after each read (0, the default: it
 * stands still), so the durations a store measures on it count reads. */
void fault_io_clock_tick_us(fault_io *f, int64_t tick_us);

/* From now on random() fills buffers from a splitmix64 stream seeded with
 * `seed` (8 bytes per step, little-endian): the same seed and the same call
 * sequence give the same bytes. */
void fault_io_random_seed(fault_io *f, uint64_t seed);
/* The same, but every random() call starts the stream again at `seed`, so
 * every call gives the same bytes: a source that is not random. */
void fault_io_random_repeat(fault_io *f, uint64_t seed);

/* Copies the counters into *counts; fault_io_counts_reset zeroes them. */
void fault_io_counts_get(fault_io *f, fault_io_counts *counts);
void fault_io_counts_reset(fault_io *f);

/* Turns every knob off (clock real, random real, no filter); keeps counters. */
void fault_io_reset(fault_io *f);
/* The same, but the clock and random stay as they are: a store running on
 * a frozen clock never sees the wall clock in between. */
void fault_io_faults_off(fault_io *f);

#endif /* TALLY_FAULT_IO_H */
