/*
 * wal.h — the write-ahead log: append-only files of checksummed records,
 * group commit by a dedicated writer thread, recovery that truncates only a
 * torn tail.
 *
 * Files: DIR/<file_id as 16 hex digits>.wal, each starting with a header
 * that names its file id and first LSN and holds the random salt that keys
 * its record checksums (so no payload can carry a record that verifies).
 * Records carry a 64-bit LSN, strictly +1 from one record to the next across
 * files. The layout is in docs/formats.md.
 *
 * Promises
 *   1. wal_append copies the payload, assigns the next LSN and returns
 *      without waiting for the disk.
 *   2. wal_wait_durable(lsn) returns 0 only after every record with
 *      LSN <= lsn was written and fdatasync returned 0.
 *   3. After any write or fsync failure the WAL is failed for good
 *      (sticky): every waiter and every later append gets the error, until
 *      the WAL is closed and reopened (recovery decides what survived).
 *   4. Recovery (wal_open) replays every valid record with
 *      LSN >= replay_from_lsn in order; a torn tail of the last file is
 *      truncated; anything else (a bad record followed by a valid one, a
 *      record whose LSN is not the expected one, a gap between files, a bad
 *      record in a file that is not the last) is corruption and fails the
 *      open with a message naming the file and byte offset.
 */
#ifndef TALLY_WAL_H
#define TALLY_WAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "tally.h"
#include "tally_io.h"

typedef struct wal wal;

typedef struct wal_options {
	uint64_t file_bytes_max;         /* rotate once a file passes this size */
	uint64_t buffer_bytes_max;       /* appends block while this much is pending */
	uint32_t group_commit_window_us; /* writer waits this long for more records */
	/* New files get ids of at least this: the caller's record of
	 * wal_file_id_next (the store keeps it in its manifest), so that an
	 * id is never used twice even after retirement emptied the
	 * directory. 0 or 1: only the files found count. */
	uint64_t file_id_min;
} wal_options;

#define WAL_RECORD_PAYLOAD_MAX (64u << 20) /* 64 MiB: larger is TALLY_E_LIMIT */

/* Called by recovery for each record to replay, in LSN order. A non-zero
 * return stops recovery, and wal_open returns that value; fn may first
 * write why into the errmsg buffer given to wal_open (empty until then),
 * which wal_open's message then gives after the file, offset and LSN. */
typedef int (*wal_replay_fn)(void *ctx, uint64_t lsn, uint8_t type,
			     const uint8_t *payload, size_t size);

/*
 * Opens the WAL in directory `dir` (created if absent): validates every
 * file, replays records with LSN >= replay_from_lsn through fn, truncates a
 * torn tail, then starts the writer thread on a new file. The next LSN is
 * max(replay_from_lsn, last valid LSN + 1), and at least 1.
 * On error returns a negative code with errmsg (TALLY_ERRMSG_SIZE) naming the
 * file and offset, and *out is NULL. The io table must outlive the WAL.
 */
int wal_open(const tally_io *io, const char *dir, const wal_options *options,
	     uint64_t replay_from_lsn, wal_replay_fn fn, void *ctx, wal **out,
	     char *errmsg);

/* Appends one record; sets *lsn. Blocks while buffer_bytes_max are pending.
 * Returns 0, the sticky error, TALLY_E_LIMIT (payload too large) or
 * TALLY_E_CLOSED. */
int wal_append(wal *w, uint8_t type, const void *payload, size_t size, uint64_t *lsn);

/* One piece of a payload given in parts. */
typedef struct wal_part {
	const void *data;
	size_t size;
} wal_part;

/* wal_append of the payload that is parts[0, count) back to back (copied
 * once, into the record). */
int wal_appendv(wal *w, uint8_t type, const wal_part *parts, size_t count, uint64_t *lsn);

/* LSN of the last appended record (0 if none since the beginning of time). */
uint64_t wal_last_lsn(wal *w);
/* Highest LSN known durable. */
uint64_t wal_durable_lsn(wal *w);
/* Blocks until lsn is durable (0) or the WAL failed (the sticky error). */
int wal_wait_durable(wal *w, uint64_t lsn);
/* The sticky error, 0 if none. */
int wal_error(wal *w);

/*
 * Makes the next appended record start a new file. Sets *first_lsn to the
 * LSN that record will get: every record with LSN >= *first_lsn lives in
 * that file or later ones, so once they are no longer needed every older
 * file can go with wal_retire_before(*first_lsn).
 */
int wal_rotate(wal *w, uint64_t *first_lsn);

/* Unlinks every file all of whose records have LSN < lsn (the newest file
 * only once wal_rotate has closed it to new records and everything in it is
 * durable) and whose id is below file_id_below, then fsyncs the directory.
 * Returns 0 or -errno. */
int wal_retire_before(wal *w, uint64_t lsn, uint64_t file_id_below);

/* The id the next new file will get. Every file this WAL created, tried to
 * create or found on disk at open has a smaller id; kept by the caller
 * (durably, before it retires files below it) and given back as
 * wal_options.file_id_min, it keeps ids from ever being reused. */
uint64_t wal_file_id_next(wal *w);

typedef struct wal_stats {
	uint64_t file_count;
	uint64_t bytes;        /* on disk, all live files */
	uint64_t fsync_count;  /* every fdatasync and directory fsync */
	uint64_t last_lsn;
	uint64_t durable_lsn;
	bool direct_io;        /* the newest file is written with O_DIRECT */
	/* The commit fdatasyncs alone (one per write of a run of records,
	 * failed ones included), timed on io->now_us: count, total and
	 * per-bucket counts (bounds: tally_fsync_hist_bound_us). */
	uint64_t commit_fsync_count;
	uint64_t commit_fsync_us_total;
	uint64_t commit_fsync_hist[TALLY_FSYNC_HIST_BUCKETS];
} wal_stats;
void wal_get_stats(wal *w, wal_stats *stats);

/* Writes everything pending, stops the writer thread, closes files, frees.
 * Returns the sticky error or 0. */
int wal_close(wal *w);

/*
 * Offline check of every file in dir (for `tally verify`): reports each
 * problem through fn with file and offset; a torn tail counts as a problem
 * only when report_torn_tail is non-zero. replay_from_lsn is the manifest's
 * replay LSN when known (0: unknown): LSNs below it are not needed, so a gap
 * below it is not a problem, and a first file starting after it is. Returns
 * the number of problems or a negative code.
 */
typedef void (*wal_problem_fn)(void *ctx, const char *message);
int wal_verify(const tally_io *io, const char *dir, uint64_t replay_from_lsn,
	       int report_torn_tail, wal_problem_fn fn, void *ctx);

#endif /* TALLY_WAL_H */
