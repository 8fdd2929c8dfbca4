/*
 * wal.c — the write-ahead log.
 *
 * NOTES ON THE DESIGN OF THE WAL
 *
 * What it promises (wal.h has the per-function contracts):
 *   - An appended record gets the next LSN (last + 1, starting at 1) and is
 *     copied; wal_append never waits for the disk, only for buffer space.
 *   - durable_lsn only moves forward, and only after the bytes of every
 *     record up to it were written and fdatasync returned 0 on their file
 *     (and, for a file's first records, after the file's header and its
 *     directory entry were made durable).
 *   - The first write, fsync or create failure is sticky: the error is kept,
 *     every waiter is woken with it and every later append, rotate and wait
 *     gets it. Nothing is retried: after a failed fsync the kernel may have
 *     dropped the dirty pages and a second fsync could "succeed" over lost
 *     data (the PostgreSQL fsync lesson). Reopening recovers from what is
 *     really on disk, and always into a new file.
 *   - Recovery replays every valid record in LSN order, truncates only a torn
 *     tail of the newest file, and fails with TALLY_E_CORRUPT and a message
 *     naming the file and byte offset for anything else.
 *
 * On-disk layout (docs/formats.md, "## WAL", is the byte-by-byte reference;
 * all integers little-endian, every offset below is from the file start):
 *
 *   DIR/<file id, 16 lowercase hex digits>.wal
 *
 *   file header, 40 bytes (version 2, written since the salt; version 1 is
 *   still read, see "Keyed record checksums"):
 *     [0, 8)   magic "TLYWAL01"
 *     [8, 12)  format version, u32 = 2
 *     [12, 16) header checksum u32: the low half of XXH3_64bits over the 40
 *              header bytes with these 4 taken as zero
 *     [16, 24) file id u64 (equals the id in the file name)
 *     [24, 32) first LSN u64: the LSN the file's first record has / would have
 *     [32, 40) salt u64: 8 bytes of io->random, new for every file
 *   (version 1: [8, 12) = 1, [12, 16) reserved u32 = 0, no salt, and [32, 40)
 *   the header checksum XXH3_64bits(bytes [0, 32)).)
 *   then records back to back from offset 40, each 8-byte aligned:
 *     [0, 8)   checksum u64 = XXH3_64bits_withSeed(record bytes [8, 24 + size),
 *              seed = file id XOR salt; version 1: seed = file id)
 *     [8, 16)  LSN u64
 *     [16, 20) payload size u32 (<= WAL_RECORD_PAYLOAD_MAX)
 *     [20]     type u8 (the caller's)
 *     [21, 24) zero
 *     [24, 24 + size) payload
 *     then zero bytes up to the next multiple of 8.
 *   The checksum covers the LSN, so a stale record (an old write surfacing)
 *   or a misdirected one (written at the wrong offset) is detected by its LSN;
 *   it is seeded with the file id and the file's salt, so a record copied from
 *   another file fails, and nobody who has not read the file can make bytes
 *   that pass for one of its records.
 *
 * Keyed record checksums. Payloads hold bytes that tenants chose (the store
 * packs a 64-digit hex event id into 32 raw bytes), enough to hold a whole
 * record header. Seeded with the file id alone (version 1), a record forged
 * inside a payload for a guessed LSN verifies; if the record holding it is
 * then torn, recovery's search after a bad record (below) finds the forgery
 * inside the torn tail and refuses to open: one tenant could stop the store
 * at its next crash. (Never replayed: recovery only replays the chain of
 * valid records from the header and never resumes at a record the search
 * found.) The salt keys the checksum with 64 random bits that no tenant
 * sees (they are only in the file, which the server sends nobody), so a
 * record that verifies was written by this WAL, and the search stays as
 * strict as it was for real damage in the middle. Per file, one io->random call; per record,
 * the same one XXH3 call as before, only the seed differs: the append path
 * is unchanged. Version 1 files are read as before (salt 0); their
 * protection starts with the next file, which every open starts.
 *
 * Invariants
 *   1. LSNs are contiguous: within a file each record's LSN is the previous
 *      one + 1 and the first is the header's first LSN; file i + 1 starts at
 *      the LSN after file i's last record (an empty file: at its own first
 *      LSN). So file i holds exactly [first_lsn(i), first_lsn(i + 1)).
 *   2. A record never spans files. Where a record goes is decided by
 *      wal_append under the mutex, at the moment its LSN is assigned (a flag
 *      kept in the record's checksum slot while it waits in memory; see
 *      "Placement" below), so wal_rotate's "LSN >= first_lsn goes to the new
 *      file" holds by construction.
 *   3. Files are append-only and never reused. A file is created with
 *      O_CREAT|O_EXCL, its header written and fdatasync'ed and the directory
 *      fsync'ed before any record is written to it. Because the header is
 *      durable before any record, a damaged header in a file longer than the
 *      header is corruption, never a torn write.
 *   4. File i + 1 is created only after file i's last write was fdatasync'ed,
 *      so only the newest file can end in a torn write.
 *   5. After wal_open the writer starts a new file (next id) with its first
 *      record; it never appends to a file written by an earlier process,
 *      which might hold pages whose fsync failed.
 *   6. The newest file is retired only once it is finished (every record
 *      in it below the retirement LSN and durable, nothing pending, the
 *      next record bound to a new file): until then it records how far
 *      LSNs went; after, the caller's replay LSN does (wal_retire_before).
 *   7. File ids grow. A new file gets the id after every id found at open
 *      (removed files included) and every id tried since (next_file_id
 *      moves at each creation attempt), and at least
 *      wal_options.file_id_min. Retirement removes only files below the
 *      caller's file_id_below. A caller that makes file_id_below durable
 *      before retiring and gives it back as file_id_min (the store does,
 *      in its manifest) never sees an id used twice in the directory's
 *      life, even after retirement emptied it. A stale block of an
 *      earlier file can then never pass as a record of a later one: the
 *      checksum's seed differs (the id, and in version 2 the salt too),
 *      so recovery sees a torn tail, not a record out of place.
 *
 * Placement. wal_append tracks the size of the file that will receive the
 * next record ("logical_file_bytes"). A record goes to a new file when
 * wal_rotate asked for it, when it is the first since wal_open, or when it
 * would push a file that already holds a record past file_bytes_max (a single
 * record larger than that gets a file of its own). In the pending buffer the
 * record's checksum slot holds 1 for "starts a new file", 0 otherwise; the
 * writer reads the flag, then overwrites the slot with the real checksum
 * (it knows the file id only then). So appenders do one memcpy and no
 * hashing; the writer hashes (XXH3 runs at many GB/s, far above the disk).
 *
 * Group commit. Appenders copy records into `pending` under the mutex. The
 * writer thread swaps `pending` with its own empty `writing` buffer (double
 * buffering), drops the mutex, then for each run of records that share a
 * file: seals their checksums, writes the run with one tally_io_write_all at
 * the file's end, fdatasyncs, and publishes durable_lsn = the run's last LSN.
 * Everything appended while one fsync runs goes out in the next single write
 * and fsync. With group_commit_window_us > 0 the writer first waits until the
 * oldest pending record is that old (measured on io->now_us, so tests can
 * drive it), or until appenders block for space, or close.
 *
 * Direct I/O. Files are opened with O_DIRECT where the file system takes
 * it (EINVAL from the open or the header's write removes the file and
 * turns direct I/O off for this WAL), so the WAL's bytes skip the page
 * cache: no copy into it, no write-back work, and no cache pages pushed
 * out by a log that is read only by recovery. Direct writes are whole WAL_DIRECT_BLOCK blocks at
 * block offsets from aligned memory: the writer copies each run into
 * `stage` after the bytes of the partial block it continues (kept at the
 * stage's start), zero-pads to the block's end and writes from that
 * block's start. So the open newest file ends in up to a block of zeros,
 * a torn tail to recovery; wal_writer_file_finish truncates it to file_end
 * (and fdatasyncs) before the next file is created and at a clean close,
 * so no other file ever ends in padding (docs/formats.md, "Direct I/O").
 *
 * Back-pressure: an append blocks while the pending buffer is non-empty and
 * the record would take it past buffer_bytes_max (a record larger than the
 * limit is accepted into an empty buffer). Memory is thus bounded by about
 * 2 x (buffer_bytes_max + the largest record): pending plus writing, and
 * the direct I/O stage's WAL_DIRECT_STAGE_BYTES.
 *
 * Threads and locks — who holds what:
 *   mutex       guards pending, last_lsn, durable_lsn, error, closing,
 *               rotate_requested, logical_file_bytes, pending_since_us,
 *               space_waiters, files (the live file list), new_files_pending,
 *               next_file_id,
 *               fsync_count and the commit fsync timings (commit_fsync_*).
 *               Held only for memory work: never across a write, fsync,
 *               open or unlink (the writer's io->now_us call is the exception).
 *
 * Fsync timing. The writer reads io->now_us just before and just after each
 * commit fdatasync (outside the mutex) and adds the difference to a count,
 * a total and a histogram in the same mutex hold that publishes
 * durable_lsn, so timing costs two clock reads and no extra lock. The clock
 * is the io table's wall clock (tests drive it); a step backwards counts
 * as 0 us.
 *   writer_cond the writer sleeps on it for work or during the window;
 *               signalled by the append that makes pending non-empty, by an
 *               append about to block for space, and by close.
 *   durable_cond wal_wait_durable sleeps on it; broadcast whenever
 *               durable_lsn moves and when the WAL fails.
 *   space_cond  appenders blocked on buffer space; broadcast on every swap,
 *               on failure and on close.
 *   retire_mutex serialises wal_retire_before calls (taken before mutex,
 *               never by the writer), so the prefix of `files` that a retire
 *               is unlinking cannot change under it.
 *   The writer thread alone touches `writing`, fd, file_id and file_end,
 *   and alone advances next_file_id. wal_close must not run concurrently
 *   with any other call.
 *
 * Recovery (wal_open) and verification (wal_verify) share one scanner:
 *   - Files are the names "<16 lowercase hex>.wal", in file id order; other
 *     names are ignored.
 *   - Header: shorter than 40 bytes, bad magic or bad checksum is a damaged
 *     header. It is a torn create (the file is removed) only in the newest
 *     file and only if no byte after the header is non-zero (so it can hold
 *     no record: a record has a non-zero LSN); otherwise corruption. A
 *     version other than 1 and 2 is TALLY_E_VERSION (magic and version keep
 *     their offsets in every version, so they are checked before the
 *     checksum, whose place depends on the version).
 *   - The header's file id must equal the name's. Its first LSN must equal
 *     the expected LSN (the previous file's end); if it is lower the files
 *     overlap (corruption); if higher, LSNs are missing, which is corruption
 *     unless every missing LSN is below replay_from_lsn (they are not needed).
 *     The oldest file may start anywhere <= replay_from_lsn; starting after
 *     it is "missing WAL before file X".
 *   - A record with a good checksum but an unexpected LSN is a stale or
 *     misdirected write: corruption naming expected and found LSNs.
 *   - A bad record (partial header, size past the end of the file, checksum
 *     mismatch, non-zero reserved bytes or padding) at offset X is corruption
 *     in any file but the newest. In the newest file it is a torn tail unless
 *     a record that could continue the log follows: at any 8-aligned offset
 *     Y > X, a record with a good checksum whose LSN L satisfies
 *     last_good < L <= last_good + 1 + (Y - X) / 24 (every record takes at
 *     least 24 bytes, so a genuine later record cannot have a larger LSN;
 *     the bound also keeps the search linear on a tail of random garbage).
 *     If one exists: corruption in the middle ("valid records follow at
 *     offset Y"). If not: the file is truncated to X and fsync'ed. Each
 *     candidate is checksummed over its claimed size, so headers planted in
 *     a payload to pass the LSN bound could make the search quadratic: it
 *     checksums at most WAL_SEARCH_HASH_FACTOR times the bytes after X, and
 *     past that it stops and reports corruption (a torn tail cannot be told
 *     from damage in the middle; loud, never a silent cut). With
 *     keyed checksums (version 2) a record found there was written by this
 *     WAL, never forged inside a payload of the torn write.
 *   - The newest file is written again, in place, and fsync'ed before it is
 *     read: its bytes may be pages that a failed fsync of an earlier process
 *     left in the page cache. Linux marks such pages clean, so an fsync alone
 *     would write nothing and "succeed" over lost data (the lesson above);
 *     written again, they are dirty, and the fsync makes exactly the bytes
 *     the scan then reads durable, or fails the open. (An O_DIRECT write
 *     whose fdatasync failed may sit in the device's volatile cache: the
 *     same rewrite covers it.) The cost is one write of the newest file
 *     (about wal_file_bytes_max at most) per open.
 *   Known trade-off: a multi-page write torn so that a later page reached the
 *   disk and an earlier one did not looks exactly like corruption in the
 *   middle, and stops startup; the message says where, and `tally verify`
 *   lists the damage. We prefer a loud stop to silently dropping records
 *   that might have been acknowledged.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "tally.h"
#include "wal.h"

/* ---- Layout constants --------------------------------------------------- */

#define WAL_MAGIC "TLYWAL01"
#define WAL_MAGIC_SIZE 8u
#define WAL_FORMAT_VERSION 2u         /* written: record checksums keyed with the file's salt */
#define WAL_FORMAT_VERSION_UNKEYED 1u /* still read: seeded with the file id alone */
#define WAL_FILE_HEADER_SIZE 40u
#define WAL_FILE_HEADER_V1_CHECKED_SIZE 32u /* version 1: bytes under the header checksum */
#define WAL_FILE_HEADER_V2_CHECKSUM_OFFSET 12u /* version 2: u32 over the header, itself as 0 */
#define WAL_FILE_HEADER_V2_SALT_OFFSET 32u
#define WAL_RECORD_HEADER_SIZE 24u
#define WAL_RECORD_CHECKSUM_SIZE 8u
#define WAL_RECORD_ALIGN 8u
#define WAL_FILE_NAME_HEX_DIGITS 16u
#define WAL_FILE_SUFFIX ".wal"
#define WAL_FILE_NAME_SIZE (WAL_FILE_NAME_HEX_DIGITS + 4u) /* without the NUL */
#define WAL_PATH_SIZE_MAX 4096u
#define WAL_READ_WINDOW_BYTES (1u << 20)   /* recovery reads this much at a time */
#define WAL_REWRITE_CHUNK_BYTES (1u << 20) /* recovery writes the newest file again in these */
#define WAL_BUFFER_BYTES_INITIAL (1u << 20) /* first allocation of each buffer */
#define WAL_DIRECT_BLOCK 4096u               /* direct I/O: offset, size and memory alignment */
#define WAL_DIRECT_STAGE_BYTES (1u << 20)    /* direct I/O: a run is written in pieces this big */
/* The search after a bad record checksums at most this many times the bytes
 * after it (wal_scan_find_valid_after); past that it gives up. */
#define WAL_SEARCH_HASH_FACTOR 16u
#define WAL_SEARCH_GAVE_UP 2 /* wal_scan_find_valid_after: the budget ran out */

#define WAL_FILE_BYTES_MAX_DEFAULT (64ull << 20)
#define WAL_BUFFER_BYTES_MAX_DEFAULT (32ull << 20)

/* Upper bounds of the commit fsync histogram's buckets, in microseconds
 * (tally_fsync_hist_bound_us); the last bucket is +Inf. */
static const int64_t fsync_hist_bounds_us[TALLY_FSYNC_HIST_BUCKETS] = {
	50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000,
	INT64_MAX,
};

/* Placement flags, held in a pending record's checksum slot. */
#define WAL_PLACE_SAME_FILE 0u
#define WAL_PLACE_NEW_FILE 1u

_Static_assert(sizeof(WAL_MAGIC) - 1 == WAL_MAGIC_SIZE, "magic is 8 bytes");
_Static_assert(WAL_FILE_HEADER_SIZE % WAL_RECORD_ALIGN == 0, "records start aligned");
_Static_assert(WAL_RECORD_HEADER_SIZE % WAL_RECORD_ALIGN == 0, "payloads start aligned");
_Static_assert(WAL_FILE_HEADER_V1_CHECKED_SIZE + 8 == WAL_FILE_HEADER_SIZE,
	       "version 1: the header checksum is the header's last field");
_Static_assert(WAL_FILE_HEADER_V2_SALT_OFFSET + 8 == WAL_FILE_HEADER_SIZE,
	       "version 2: the salt is the header's last field, where version 1 had its checksum");
_Static_assert(WAL_RECORD_PAYLOAD_MAX <= UINT32_MAX - WAL_RECORD_HEADER_SIZE - WAL_RECORD_ALIGN,
	       "a record's size fits the u32 size field with room for its header");
_Static_assert(WAL_PATH_SIZE_MAX > WAL_FILE_NAME_SIZE + 2, "room for a file name");

/* ---- Little-endian helpers ---------------------------------------------- */

static void put_u32le(uint8_t *p, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64le(uint8_t *p, uint64_t v)
{
	for (unsigned i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32le(const uint8_t *p)
{
	uint32_t v = 0;
	for (unsigned i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static uint64_t get_u64le(const uint8_t *p)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Bytes a record with `payload_size` bytes of payload takes in a file. */
static uint64_t wal_record_size(uint64_t payload_size)
{
	return WAL_RECORD_HEADER_SIZE +
	       ((payload_size + WAL_RECORD_ALIGN - 1) & ~(uint64_t)(WAL_RECORD_ALIGN - 1));
}

/* The seed of a file's record checksums: its id, keyed with its salt (a
 * version 1 file has none: salt 0). See "Keyed record checksums". */
static uint64_t wal_record_seed(uint64_t file_id, uint64_t salt)
{
	return file_id ^ salt;
}

static uint64_t wal_record_checksum(const uint8_t *record, uint32_t payload_size, uint64_t seed)
{
	return XXH3_64bits_withSeed(record + WAL_RECORD_CHECKSUM_SIZE,
				    WAL_RECORD_HEADER_SIZE - WAL_RECORD_CHECKSUM_SIZE + payload_size,
				    seed);
}

/* Version 2's header checksum: the low half of XXH3 over all 40 header
 * bytes, with the checksum's own 4 bytes taken as zero. */
static uint32_t wal_file_header_v2_checksum(const uint8_t header[WAL_FILE_HEADER_SIZE])
{
	uint8_t copy[WAL_FILE_HEADER_SIZE];
	memcpy(copy, header, sizeof copy);
	put_u32le(copy + WAL_FILE_HEADER_V2_CHECKSUM_OFFSET, 0);
	return (uint32_t)XXH3_64bits(copy, sizeof copy);
}

/* A version 2 header. */
static void wal_file_header_encode(uint8_t header[WAL_FILE_HEADER_SIZE], uint64_t file_id,
				   uint64_t first_lsn, uint64_t salt)
{
	memcpy(header, WAL_MAGIC, WAL_MAGIC_SIZE);
	put_u32le(header + 8, WAL_FORMAT_VERSION);
	put_u64le(header + 16, file_id);
	put_u64le(header + 24, first_lsn);
	put_u64le(header + WAL_FILE_HEADER_V2_SALT_OFFSET, salt);
	put_u32le(header + WAL_FILE_HEADER_V2_CHECKSUM_OFFSET, wal_file_header_v2_checksum(header));
}

/*
 * Checks the checksum of a header of a known version (1 or 2) and reads
 * its version-specific fields: *reserved (version 1's u32 at 12, which
 * must be 0; 0 in version 2) and *salt (0 in version 1). False if the
 * checksum does not match.
 */
static bool wal_file_header_check(const uint8_t header[WAL_FILE_HEADER_SIZE], uint32_t version,
				  uint32_t *reserved, uint64_t *salt)
{
	if (version == WAL_FORMAT_VERSION_UNKEYED) {
		*reserved = get_u32le(header + 12);
		*salt = 0;
		return get_u64le(header + WAL_FILE_HEADER_V1_CHECKED_SIZE) ==
		       XXH3_64bits(header, WAL_FILE_HEADER_V1_CHECKED_SIZE);
	}
	assert(version == WAL_FORMAT_VERSION);
	*reserved = 0;
	*salt = get_u64le(header + WAL_FILE_HEADER_V2_SALT_OFFSET);
	return get_u32le(header + WAL_FILE_HEADER_V2_CHECKSUM_OFFSET) ==
	       wal_file_header_v2_checksum(header);
}

/* Writes "dir/<id>.wal" into path (WAL_PATH_SIZE_MAX bytes). */
static void wal_file_path(char *path, const char *dir, uint64_t file_id)
{
	int n = snprintf(path, WAL_PATH_SIZE_MAX, "%s/%016" PRIx64 WAL_FILE_SUFFIX, dir, file_id);
	assert(n > 0 && (size_t)n < WAL_PATH_SIZE_MAX); /* dir length checked at open */
	(void)n;
}

/* Parses "<16 lowercase hex>.wal"; returns false for any other name. */
static bool wal_file_name_parse(const char *name, uint64_t *file_id)
{
	if (strlen(name) != WAL_FILE_NAME_SIZE ||
	    strcmp(name + WAL_FILE_NAME_HEX_DIGITS, WAL_FILE_SUFFIX) != 0)
		return false;
	uint64_t id = 0;
	for (unsigned i = 0; i < WAL_FILE_NAME_HEX_DIGITS; i++) {
		char c = name[i];
		unsigned digit;
		if (c >= '0' && c <= '9')
			digit = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			digit = (unsigned)(c - 'a' + 10);
		else
			return false;
		id = (id << 4) | digit;
	}
	*file_id = id;
	return true;
}

/* Writes a message into errmsg (TALLY_ERRMSG_SIZE bytes), truncating. */
__attribute__((format(printf, 2, 3)))
static void wal_errmsg_set(char *errmsg, const char *format, ...)
{
	va_list args;
	va_start(args, format);
	vsnprintf(errmsg, TALLY_ERRMSG_SIZE, format, args);
	va_end(args);
}

/* ---- Small containers ---------------------------------------------------- */

typedef struct wal_buffer {
	uint8_t *data;
	uint64_t size;     /* bytes of whole records */
	uint64_t capacity;
} wal_buffer;

/* Ensures room for `extra` more bytes. 0 or -ENOMEM (buffer unchanged). */
static int wal_buffer_reserve(wal_buffer *b, uint64_t extra)
{
	if (b->size + extra <= b->capacity)
		return 0;
	uint64_t capacity = b->capacity ? b->capacity : WAL_BUFFER_BYTES_INITIAL;
	while (capacity < b->size + extra)
		capacity *= 2;
	uint8_t *data = realloc(b->data, capacity);
	if (!data)
		return -ENOMEM;
	b->data = data;
	b->capacity = capacity;
	return 0;
}

typedef struct wal_file {
	uint64_t file_id;
	uint64_t first_lsn;
	uint64_t size; /* bytes on disk that we know of */
} wal_file;

typedef struct wal_file_list {
	wal_file *items;
	size_t count;
	size_t capacity;
} wal_file_list;

static int wal_file_list_reserve(wal_file_list *list, size_t extra)
{
	if (list->count + extra <= list->capacity)
		return 0;
	size_t capacity = list->capacity ? list->capacity * 2 : 16;
	while (capacity < list->count + extra)
		capacity *= 2;
	wal_file *items = realloc(list->items, capacity * sizeof *items);
	if (!items)
		return -ENOMEM;
	list->items = items;
	list->capacity = capacity;
	return 0;
}

/* ---- The WAL object ------------------------------------------------------ */

struct wal {
	const tally_io *io;
	char dir[WAL_PATH_SIZE_MAX];
	uint64_t file_bytes_max;
	uint64_t buffer_bytes_max;
	uint32_t group_commit_window_us;

	pthread_mutex_t mutex;
	pthread_cond_t writer_cond; /* CLOCK_MONOTONIC, for the window's timed wait */
	pthread_cond_t durable_cond;
	pthread_cond_t space_cond;
	pthread_mutex_t retire_mutex;
	pthread_t writer_thread;

	/* Guarded by mutex. */
	wal_buffer pending;
	int64_t pending_since_us; /* io->now_us when pending became non-empty */
	uint64_t last_lsn;
	uint64_t durable_lsn;
	int error;                /* sticky: 0 or the first write/fsync/create failure */
	bool closing;
	bool rotate_requested;    /* the next record starts a new file */
	size_t new_files_pending; /* records appended to start a new file, not started yet:
				   * files has room for that many more (the writer's
				   * wal_writer_file_start never allocates) */
	uint64_t logical_file_bytes;
	uint32_t space_waiters;
	wal_file_list files;      /* live files, oldest first */
	uint64_t next_file_id;    /* taken (and advanced) by a file's creation attempt */
	uint64_t fsync_count;
	uint64_t commit_fsync_count;
	uint64_t commit_fsync_us_total;
	uint64_t commit_fsync_hist[TALLY_FSYNC_HIST_BUCKETS];

	bool direct_io;           /* a copy of `direct` for wal_get_stats */

	/* Writer thread only. */
	wal_buffer writing;
	int fd;                   /* current file, -1 before the first record */
	uint64_t file_id;
	uint64_t record_seed;     /* of the current file: wal_record_seed(file_id, its salt) */
	uint64_t file_end;
	bool direct;              /* files are opened with O_DIRECT ("Direct I/O") */
	uint8_t *stage;           /* direct: WAL_DIRECT_STAGE_BYTES, aligned; begins with
				   * the bytes of file_end's partial block */
	char path[WAL_PATH_SIZE_MAX];
};

/* Marks the WAL failed (first error wins) and wakes everyone. mutex held. */
static void wal_fail_locked(wal *w, int error)
{
	assert(error < 0);
	if (w->error == 0)
		w->error = error;
	pthread_cond_broadcast(&w->durable_cond);
	pthread_cond_broadcast(&w->space_cond);
	pthread_cond_broadcast(&w->writer_cond);
}

/* ---- The writer thread --------------------------------------------------- */

/*
 * Writes w->stage[0, size) at offset of fd, both multiples of
 * WAL_DIRECT_BLOCK. Direct I/O writes whole blocks, so a short write is
 * continued after the last whole block it wrote and every request stays
 * aligned; one that wrote no whole block is -EIO. 0 or -errno.
 */
static int wal_direct_write(wal *w, int fd, uint64_t size, uint64_t offset)
{
	const tally_io *io = w->io;
	assert(size % WAL_DIRECT_BLOCK == 0 && offset % WAL_DIRECT_BLOCK == 0);
	for (uint64_t done = 0; done < size;) {
		int64_t n = io->pwrite(io, fd, w->stage + done, size - done, offset + done);
		if (n < 0)
			return (int)n;
		if ((uint64_t)n < WAL_DIRECT_BLOCK)
			return -EIO;
		done += (uint64_t)n / WAL_DIRECT_BLOCK * WAL_DIRECT_BLOCK;
	}
	return 0;
}

/*
 * Creates w->path and writes header, its first WAL_FILE_HEADER_SIZE bytes,
 * with O_DIRECT while w->direct: as a whole block, zero-padded, that the
 * stage keeps as the partial block the first record's write begins with.
 * EINVAL means the file system cannot do direct I/O (from the open, which
 * Linux fails after creating the file, or from the first write, for an
 * alignment it does not take): the file is removed, and it and every later
 * file are written through the page cache. *fd is the file's descriptor
 * (-1 if none is open); on a failed write it is still open, for the caller
 * to close. Writer thread only. 0 or -errno.
 */
static int wal_writer_create(wal *w, const uint8_t *header, int *fd)
{
	const tally_io *io = w->io;
	const int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC;
	int rc;
	if (w->direct) {
		*fd = io->open(io, w->path, flags | O_DIRECT, 0600);
		if (*fd >= 0) {
			memset(w->stage, 0, WAL_DIRECT_BLOCK);
			memcpy(w->stage, header, WAL_FILE_HEADER_SIZE);
			rc = wal_direct_write(w, *fd, WAL_DIRECT_BLOCK, 0);
			if (rc != -EINVAL)
				return rc;
			io->close(io, *fd);
		} else if (*fd != -EINVAL) {
			rc = *fd;
			*fd = -1;
			return rc;
		}
		*fd = -1;
		rc = io->unlink(io, w->path);
		if (rc && rc != -ENOENT)
			return rc;
		w->direct = false;
	}
	*fd = io->open(io, w->path, flags, 0600);
	if (*fd < 0) {
		rc = *fd;
		*fd = -1;
		return rc;
	}
	return tally_io_write_all(io, *fd, header, WAL_FILE_HEADER_SIZE, 0);
}

/*
 * Appends data[0, size), whole records, at file_end of the current file and
 * advances file_end. Direct I/O copies them into the stage after the
 * partial block they continue, WAL_DIRECT_STAGE_BYTES at a time, and
 * writes whole blocks, the last one zero-padded: the padding is a torn
 * tail to recovery until the next write covers it or the file is finished.
 * Writer thread only. 0 or -errno.
 */
static int wal_writer_write_run(wal *w, const uint8_t *data, uint64_t size)
{
	if (!w->direct) {
		int rc = tally_io_write_all(w->io, w->fd, data, size, w->file_end);
		if (rc == 0)
			w->file_end += size;
		return rc;
	}
	uint64_t tail = w->file_end % WAL_DIRECT_BLOCK; /* stage[0, tail) */
	while (size > 0) {
		uint64_t n = size < WAL_DIRECT_STAGE_BYTES - tail ? size : WAL_DIRECT_STAGE_BYTES - tail;
		memcpy(w->stage + tail, data, n);
		uint64_t filled = tail + n;
		uint64_t padded = (filled + WAL_DIRECT_BLOCK - 1) / WAL_DIRECT_BLOCK * WAL_DIRECT_BLOCK;
		memset(w->stage + filled, 0, padded - filled);
		int rc = wal_direct_write(w, w->fd, padded, w->file_end - tail);
		if (rc)
			return rc;
		w->file_end += n;
		data += n;
		size -= n;
		tail = filled % WAL_DIRECT_BLOCK;
		memmove(w->stage, w->stage + filled - tail, tail);
	}
	return 0;
}

/*
 * Gives the current file, if direct I/O padded it, its exact size: truncate
 * to file_end and fdatasync. Called before the next file is created (so
 * only the newest file can ever end in padding, which recovery truncates as
 * a torn tail) and when the WAL closes cleanly. Adds its syncs to *fsyncs.
 * Writer thread only. 0 or -errno.
 */
static int wal_writer_file_finish(wal *w, uint64_t *fsyncs)
{
	if (w->fd < 0 || !w->direct || w->file_end % WAL_DIRECT_BLOCK == 0)
		return 0;
	int rc = w->io->ftruncate(w->io, w->fd, w->file_end);
	if (rc == 0) {
		(*fsyncs)++;
		rc = w->io->fdatasync(w->io, w->fd);
	}
	return rc;
}

/*
 * Creates the file that will start at first_lsn and makes its header and
 * directory entry durable, then makes it current. Writer thread only.
 * Returns 0 or -errno (the caller makes it sticky).
 */
static int wal_writer_file_start(wal *w, uint64_t first_lsn)
{
	const tally_io *io = w->io;
	uint8_t header[WAL_FILE_HEADER_SIZE];

	/* The id is used up by the attempt: a failed creation may leave
	 * bytes of it on disk, so wal_file_id_next never gives it again. */
	pthread_mutex_lock(&w->mutex);
	assert(w->new_files_pending > 0 && w->files.count < w->files.capacity);
	uint64_t file_id = w->next_file_id++;
	pthread_mutex_unlock(&w->mutex);

	uint64_t fsyncs = 0;
	int rc = wal_writer_file_finish(w, &fsyncs); /* invariant 4 holds for its exact size too */
	if (rc) {
		pthread_mutex_lock(&w->mutex);
		w->fsync_count += fsyncs;
		pthread_mutex_unlock(&w->mutex);
		return rc;
	}
	/* A salt no tenant can know keys the file's record checksums. */
	uint64_t salt;
	io->random(io, &salt, sizeof salt);
	wal_file_path(w->path, w->dir, file_id);
	wal_file_header_encode(header, file_id, first_lsn, salt);
	int fd;
	rc = wal_writer_create(w, header, &fd);
	if (fd < 0)
		return rc;
	if (rc == 0) {
		fsyncs++;
		rc = io->fdatasync(io, fd);
	}
	if (rc == 0) {
		fsyncs++;
		rc = io->fsync_dir(io, w->dir);
	}
	if (rc) {
		/* Left on disk: recovery removes a header-only newest file. */
		io->close(io, fd);
		pthread_mutex_lock(&w->mutex);
		w->fsync_count += fsyncs;
		pthread_mutex_unlock(&w->mutex);
		return rc;
	}
	if (w->fd >= 0)
		io->close(io, w->fd); /* its last write was fdatasync'ed already */
	w->fd = fd;
	w->file_id = file_id;
	w->record_seed = wal_record_seed(file_id, salt);
	w->file_end = WAL_FILE_HEADER_SIZE;

	pthread_mutex_lock(&w->mutex);
	w->fsync_count += fsyncs;
	w->direct_io = w->direct;
	w->files.items[w->files.count++] = (wal_file){
		.file_id = file_id, .first_lsn = first_lsn, .size = WAL_FILE_HEADER_SIZE};
	w->new_files_pending--;
	pthread_mutex_unlock(&w->mutex);
	return 0;
}

/*
 * Writes the records in w->writing: one write + fdatasync per run of records
 * that share a file, publishing durable_lsn after each. Returns 0 or -errno.
 */
static int wal_writer_write_batch(wal *w)
{
	const tally_io *io = w->io;
	uint8_t *data = w->writing.data;
	uint64_t size = w->writing.size;
	uint64_t offset = 0;

	while (offset < size) {
		uint64_t run_start = offset;
		uint64_t run_last_lsn = 0;
		if (get_u64le(data + offset) == WAL_PLACE_NEW_FILE) {
			int rc = wal_writer_file_start(w, get_u64le(data + offset + 8));
			if (rc)
				return rc;
		}
		assert(w->fd >= 0); /* the first record after open always starts a file */
		do {
			uint8_t *record = data + offset;
			uint32_t payload_size = get_u32le(record + 16);
			put_u64le(record, wal_record_checksum(record, payload_size, w->record_seed));
			run_last_lsn = get_u64le(record + 8);
			offset += wal_record_size(payload_size);
			assert(offset <= size);
		} while (offset < size && get_u64le(data + offset) != WAL_PLACE_NEW_FILE);

		int rc = wal_writer_write_run(w, data + run_start, offset - run_start);
		if (rc)
			return rc;
		int64_t sync_start_us = io->now_us(io);
		rc = io->fdatasync(io, w->fd);
		int64_t sync_us = io->now_us(io) - sync_start_us;
		if (sync_us < 0)
			sync_us = 0; /* the wall clock stepped back */
		int bucket = 0;
		while (sync_us > fsync_hist_bounds_us[bucket])
			bucket++; /* ends at the last bound, INT64_MAX */

		pthread_mutex_lock(&w->mutex);
		w->fsync_count++;
		w->commit_fsync_count++;
		w->commit_fsync_us_total += (uint64_t)sync_us;
		w->commit_fsync_hist[bucket]++;
		if (rc == 0) {
			assert(w->files.count > 0 &&
			       w->files.items[w->files.count - 1].file_id == w->file_id);
			w->files.items[w->files.count - 1].size = w->file_end;
			assert(run_last_lsn > w->durable_lsn);
			w->durable_lsn = run_last_lsn;
			pthread_cond_broadcast(&w->durable_cond);
		}
		pthread_mutex_unlock(&w->mutex);
		if (rc)
			return rc;
	}
	return 0;
}

/* Waits out the group commit window. mutex held. */
static void wal_writer_wait_window(wal *w)
{
	if (w->group_commit_window_us == 0)
		return;
	for (;;) {
		if (w->closing || w->error || w->space_waiters > 0 ||
		    w->pending.size >= w->buffer_bytes_max)
			return;
		int64_t remaining_us = w->pending_since_us + (int64_t)w->group_commit_window_us -
				       w->io->now_us(w->io);
		if (remaining_us <= 0 || remaining_us > (int64_t)w->group_commit_window_us)
			return; /* elapsed, or the wall clock stepped back: write now */
		/* Only the sleep itself uses the OS clock: pthread needs a deadline. */
		struct timespec deadline;
		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_sec += remaining_us / 1000000;
		deadline.tv_nsec += (long)(remaining_us % 1000000) * 1000;
		if (deadline.tv_nsec >= 1000000000L) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&w->writer_cond, &w->mutex, &deadline);
	}
}

static void *wal_writer_main(void *arg)
{
	wal *w = arg;
	pthread_mutex_lock(&w->mutex);
	while (w->error == 0) {
		if (w->pending.size == 0) {
			if (w->closing)
				break;
			pthread_cond_wait(&w->writer_cond, &w->mutex);
			continue;
		}
		wal_writer_wait_window(w);
		if (w->error)
			break;
		wal_buffer swap = w->pending;
		w->pending = w->writing;
		w->writing = swap;
		assert(w->pending.size == 0);
		pthread_cond_broadcast(&w->space_cond);
		pthread_mutex_unlock(&w->mutex);

		int rc = wal_writer_write_batch(w);
		w->writing.size = 0;

		pthread_mutex_lock(&w->mutex);
		if (rc)
			wal_fail_locked(w, rc);
	}
	if (w->error == 0 && w->closing) {
		/* Closing with everything durable: leave the file its exact size. */
		pthread_mutex_unlock(&w->mutex);
		uint64_t fsyncs = 0;
		int rc = wal_writer_file_finish(w, &fsyncs);
		pthread_mutex_lock(&w->mutex);
		w->fsync_count += fsyncs;
		if (rc)
			wal_fail_locked(w, rc);
	}
	pthread_mutex_unlock(&w->mutex);
	return NULL;
}

/* ---- Appending ----------------------------------------------------------- */

int wal_append(wal *w, uint8_t type, const void *payload, size_t size, uint64_t *lsn)
{
	wal_part part = {payload, size};
	return wal_appendv(w, type, &part, 1, lsn);
}

int wal_appendv(wal *w, uint8_t type, const wal_part *parts, size_t count, uint64_t *lsn)
{
	assert(w && lsn && (parts || count == 0));
	size_t size = 0;
	for (size_t i = 0; i < count; i++) {
		assert(parts[i].data || parts[i].size == 0);
		if (parts[i].size > WAL_RECORD_PAYLOAD_MAX - size)
			return TALLY_E_LIMIT;
		size += parts[i].size;
	}
	uint64_t record_size = wal_record_size(size);
	int rc = 0;

	pthread_mutex_lock(&w->mutex);
	for (;;) {
		if (w->error) {
			rc = w->error;
			goto out;
		}
		if (w->closing) {
			rc = TALLY_E_CLOSED;
			goto out;
		}
		if (w->pending.size == 0 || w->pending.size + record_size <= w->buffer_bytes_max)
			break;
		w->space_waiters++;
		pthread_cond_signal(&w->writer_cond); /* cut a group commit window short */
		pthread_cond_wait(&w->space_cond, &w->mutex);
		w->space_waiters--;
	}
	rc = wal_buffer_reserve(&w->pending, record_size);
	if (rc)
		goto out; /* not sticky: nothing was assigned */

	uint64_t record_lsn = w->last_lsn + 1;
	uint64_t place = WAL_PLACE_SAME_FILE;
	if (w->rotate_requested ||
	    (w->logical_file_bytes > WAL_FILE_HEADER_SIZE &&
	     w->logical_file_bytes + record_size > w->file_bytes_max)) {
		/* The file list's entry for the new file, here where a failure
		 * assigns nothing: on the writer it would fail the WAL for good. */
		rc = wal_file_list_reserve(&w->files, w->new_files_pending + 1);
		if (rc)
			goto out; /* not sticky: nothing was assigned */
		w->new_files_pending++;
		place = WAL_PLACE_NEW_FILE;
		w->rotate_requested = false;
		w->logical_file_bytes = WAL_FILE_HEADER_SIZE;
	}
	w->logical_file_bytes += record_size;

	uint8_t *record = w->pending.data + w->pending.size;
	put_u64le(record, place);
	put_u64le(record + 8, record_lsn);
	put_u32le(record + 16, (uint32_t)size);
	record[20] = type;
	record[21] = record[22] = record[23] = 0;
	uint8_t *to = record + WAL_RECORD_HEADER_SIZE;
	for (size_t i = 0; i < count; i++)
		if (parts[i].size) {
			memcpy(to, parts[i].data, parts[i].size);
			to += parts[i].size;
		}
	memset(to, 0, record_size - WAL_RECORD_HEADER_SIZE - size);

	if (w->pending.size == 0) {
		if (w->group_commit_window_us)
			w->pending_since_us = w->io->now_us(w->io);
		pthread_cond_signal(&w->writer_cond);
	}
	w->pending.size += record_size;
	w->last_lsn = record_lsn;
	*lsn = record_lsn;
out:
	pthread_mutex_unlock(&w->mutex);
	return rc;
}

uint64_t wal_last_lsn(wal *w)
{
	pthread_mutex_lock(&w->mutex);
	uint64_t lsn = w->last_lsn;
	pthread_mutex_unlock(&w->mutex);
	return lsn;
}

uint64_t wal_durable_lsn(wal *w)
{
	pthread_mutex_lock(&w->mutex);
	uint64_t lsn = w->durable_lsn;
	pthread_mutex_unlock(&w->mutex);
	return lsn;
}

/*
 * Returns 0 once lsn is durable, the sticky error if the WAL failed first,
 * or TALLY_E_INVALID for an LSN that was never appended (it would never
 * become durable). An LSN already durable returns 0 even after a failure.
 */
int wal_wait_durable(wal *w, uint64_t lsn)
{
	int rc;
	pthread_mutex_lock(&w->mutex);
	if (lsn > w->last_lsn) {
		rc = w->error ? w->error : TALLY_E_INVALID;
	} else {
		while (w->durable_lsn < lsn && w->error == 0)
			pthread_cond_wait(&w->durable_cond, &w->mutex);
		rc = w->durable_lsn >= lsn ? 0 : w->error;
	}
	pthread_mutex_unlock(&w->mutex);
	return rc;
}

int wal_error(wal *w)
{
	pthread_mutex_lock(&w->mutex);
	int error = w->error;
	pthread_mutex_unlock(&w->mutex);
	return error;
}

/*
 * Cheap: sets a flag that the next wal_append honours when it assigns the
 * LSN returned here. Returns 0, the sticky error or TALLY_E_CLOSED.
 */
int wal_rotate(wal *w, uint64_t *first_lsn)
{
	int rc = 0;
	pthread_mutex_lock(&w->mutex);
	if (w->error) {
		rc = w->error;
	} else if (w->closing) {
		rc = TALLY_E_CLOSED;
	} else {
		w->rotate_requested = true;
		*first_lsn = w->last_lsn + 1;
	}
	pthread_mutex_unlock(&w->mutex);
	return rc;
}

/*
 * Unlinks, oldest first, the files i with first_lsn(i + 1) <= lsn, and the
 * newest file too once it is finished (see below). Stops at the first unlink failure so the files left are still
 * a contiguous suffix. Allowed after a failure (retiring is not writing).
 */
int wal_retire_before(wal *w, uint64_t lsn, uint64_t file_id_below)
{
	const tally_io *io = w->io;
	char path[WAL_PATH_SIZE_MAX];
	uint64_t *file_ids = NULL;
	size_t retire_count = 0;
	int rc = 0;

	pthread_mutex_lock(&w->retire_mutex);
	pthread_mutex_lock(&w->mutex);
	/* Files are in id order, so those below file_id_below are a prefix. */
	size_t below = 0;
	while (below < w->files.count && w->files.items[below].file_id < file_id_below)
		below++;
	while (retire_count < below && retire_count + 1 < w->files.count &&
	       w->files.items[retire_count + 1].first_lsn <= lsn)
		retire_count++;
	/* The newest file goes too when it is finished: every record in it is
	 * below lsn and durable, nothing is pending, and the next record is
	 * already bound to start a new file (wal_rotate). The writer only
	 * touches the newest entry while it writes a run, which it cannot be
	 * doing now. Then the directory is empty: recovery continues the LSNs
	 * from the manifest's replay LSN and the ids from file_id_below, which
	 * the caller keeps (invariant 7). */
	if (retire_count + 1 == w->files.count && below == w->files.count &&
	    w->rotate_requested && w->last_lsn < lsn && w->durable_lsn == w->last_lsn &&
	    w->pending.size == 0)
		retire_count++;
	if (retire_count > 0) {
		file_ids = malloc(retire_count * sizeof *file_ids);
		if (!file_ids)
			rc = -ENOMEM;
		for (size_t i = 0; file_ids && i < retire_count; i++)
			file_ids[i] = w->files.items[i].file_id;
	}
	pthread_mutex_unlock(&w->mutex);

	size_t removed = 0;
	for (; rc == 0 && removed < retire_count; removed++) {
		wal_file_path(path, w->dir, file_ids[removed]);
		rc = io->unlink(io, path);
		if (rc == -ENOENT)
			rc = 0; /* someone removed it already: the goal holds */
		if (rc)
			break;
	}
	int dir_rc = 0;
	if (removed > 0)
		dir_rc = io->fsync_dir(io, w->dir);

	pthread_mutex_lock(&w->mutex);
	if (removed > 0) {
		w->fsync_count++;
		memmove(w->files.items, w->files.items + removed,
			(w->files.count - removed) * sizeof *w->files.items);
		w->files.count -= removed;
	}
	pthread_mutex_unlock(&w->mutex);
	pthread_mutex_unlock(&w->retire_mutex);
	free(file_ids);
	return rc ? rc : dir_rc;
}

uint64_t wal_file_id_next(wal *w)
{
	pthread_mutex_lock(&w->mutex);
	uint64_t id = w->next_file_id;
	pthread_mutex_unlock(&w->mutex);
	return id;
}

void wal_get_stats(wal *w, wal_stats *stats)
{
	memset(stats, 0, sizeof *stats);
	pthread_mutex_lock(&w->mutex);
	stats->file_count = w->files.count;
	for (size_t i = 0; i < w->files.count; i++)
		stats->bytes += w->files.items[i].size;
	stats->fsync_count = w->fsync_count;
	stats->last_lsn = w->last_lsn;
	stats->durable_lsn = w->durable_lsn;
	stats->direct_io = w->direct_io;
	stats->commit_fsync_count = w->commit_fsync_count;
	stats->commit_fsync_us_total = w->commit_fsync_us_total;
	memcpy(stats->commit_fsync_hist, w->commit_fsync_hist, sizeof stats->commit_fsync_hist);
	pthread_mutex_unlock(&w->mutex);
}

int64_t tally_fsync_hist_bound_us(int i)
{
	if (i < 0 || i >= TALLY_FSYNC_HIST_BUCKETS)
		return TALLY_E_INVALID;
	return fsync_hist_bounds_us[i];
}

static void wal_free(wal *w)
{
	if (w->fd >= 0)
		w->io->close(w->io, w->fd);
	pthread_mutex_destroy(&w->mutex);
	pthread_mutex_destroy(&w->retire_mutex);
	pthread_cond_destroy(&w->writer_cond);
	pthread_cond_destroy(&w->durable_cond);
	pthread_cond_destroy(&w->space_cond);
	free(w->pending.data);
	free(w->writing.data);
	free(w->stage);
	free(w->files.items);
	free(w);
}

int wal_close(wal *w)
{
	if (!w)
		return 0;
	pthread_mutex_lock(&w->mutex);
	w->closing = true;
	pthread_cond_broadcast(&w->writer_cond);
	pthread_cond_broadcast(&w->space_cond);
	pthread_mutex_unlock(&w->mutex);
	pthread_join(w->writer_thread, NULL);
	int rc = w->error;
	wal_free(w);
	return rc;
}

/* ---- The scanner: recovery and verification ------------------------------ */

/* A read window over one file, so recovery needs O(window + record) memory. */
typedef struct wal_reader {
	const tally_io *io;
	int fd;
	uint64_t file_size;
	uint8_t *data;
	size_t capacity;
	uint64_t start;  /* file offset of data[0] */
	uint64_t length; /* valid bytes in data */
} wal_reader;

/* Points *out at file bytes [offset, offset + size), which must lie inside the
 * file. Valid until the next call. 0, -errno or TALLY_E_CORRUPT. */
static int wal_reader_get(wal_reader *r, uint64_t offset, uint64_t size, const uint8_t **out)
{
	assert(offset + size <= r->file_size);
	if (offset >= r->start && offset + size <= r->start + r->length) {
		*out = r->data + (offset - r->start);
		return 0;
	}
	uint64_t want = size > WAL_READ_WINDOW_BYTES ? size : WAL_READ_WINDOW_BYTES;
	if (want > r->file_size - offset)
		want = r->file_size - offset;
	if (want > r->capacity) {
		uint8_t *data = realloc(r->data, want);
		if (!data)
			return -ENOMEM;
		r->data = data;
		r->capacity = want;
	}
	r->length = 0;
	int rc = tally_io_read_all(r->io, r->fd, r->data, want, offset);
	if (rc)
		return rc;
	r->start = offset;
	r->length = want;
	*out = r->data;
	return 0;
}

typedef struct wal_scan {
	const tally_io *io;
	const char *dir;
	bool verify;           /* read-only: report every problem and go on */
	bool report_torn_tail; /* verify: a torn tail counts as a problem */
	wal_problem_fn problem_fn;
	void *problem_ctx;
	int problem_count;
	char *errmsg;          /* recovery: the first problem, TALLY_ERRMSG_SIZE */

	uint64_t replay_from;  /* recovery: >= 1; verify: the manifest's, or 0 if unknown */
	wal_replay_fn replay_fn;
	void *replay_ctx;

	bool have_expected;    /* a file was seen: expected_lsn is meaningful */
	uint64_t expected_lsn; /* the LSN the next record must have */
	wal_file_list files;   /* recovery: the files kept, oldest first */
	uint64_t file_id_max;  /* of every file name seen, kept or not */
	uint64_t fsync_count;

	wal_reader reader;
	char path[WAL_PATH_SIZE_MAX];
	char reason[160];      /* why the current record is bad */
} wal_scan;

/*
 * Reports one problem. Verify: counts it, calls problem_fn, returns 0 (the
 * scan goes on). Recovery: copies it into errmsg and returns `code`, which
 * the caller returns at once.
 */
__attribute__((format(printf, 3, 4)))
static int wal_scan_problem(wal_scan *s, int code, const char *format, ...)
{
	char message[TALLY_ERRMSG_SIZE];
	va_list args;
	va_start(args, format);
	vsnprintf(message, sizeof message, format, args);
	va_end(args);
	if (s->verify) {
		s->problem_count++;
		if (s->problem_fn)
			s->problem_fn(s->problem_ctx, message);
		return 0;
	}
	wal_errmsg_set(s->errmsg, "%s", message);
	return code;
}

/* An operating failure (not a finding about the data): fatal in both modes. */
static int wal_scan_fail(wal_scan *s, int code, const char *operation)
{
	wal_errmsg_set(s->errmsg, "wal: %s %s: %s", operation, s->path,
		 tally_strerror(code));
	return code;
}

typedef struct wal_record_view {
	uint64_t lsn;
	uint32_t payload_size;
	uint8_t type;
	uint64_t size; /* bytes in the file, padding included */
	const uint8_t *payload;
} wal_record_view;

/*
 * Checks the record at offset. Returns 1 if it is valid (view filled), 0 if
 * it is bad (s->reason says why), or a negative code if reading failed.
 * The LSN is not judged here.
 */
static int wal_scan_record(wal_scan *s, uint64_t offset, uint64_t seed, wal_record_view *view)
{
	wal_reader *r = &s->reader;
	const uint8_t *p;
	uint64_t left = r->file_size - offset;
	if (left < WAL_RECORD_HEADER_SIZE) {
		snprintf(s->reason, sizeof s->reason,
			 "partial record header (%" PRIu64 " bytes before the end of the file)", left);
		return 0;
	}
	int rc = wal_reader_get(r, offset, WAL_RECORD_HEADER_SIZE, &p);
	if (rc)
		return rc;
	view->lsn = get_u64le(p + 8);
	view->payload_size = get_u32le(p + 16);
	view->type = p[20];
	if (view->payload_size > WAL_RECORD_PAYLOAD_MAX) {
		snprintf(s->reason, sizeof s->reason,
			 "record payload size %" PRIu32 " exceeds the limit of %u bytes",
			 view->payload_size, WAL_RECORD_PAYLOAD_MAX);
		return 0;
	}
	view->size = wal_record_size(view->payload_size);
	if (view->size > left) {
		snprintf(s->reason, sizeof s->reason,
			 "record of %" PRIu64 " bytes runs past the end of the file (%" PRIu64
			 " bytes left)", view->size, left);
		return 0;
	}
	rc = wal_reader_get(r, offset, view->size, &p);
	if (rc)
		return rc;
	uint64_t stored = get_u64le(p);
	uint64_t computed = wal_record_checksum(p, view->payload_size, seed);
	if (stored != computed) {
		snprintf(s->reason, sizeof s->reason,
			 "checksum mismatch (stored %016" PRIx64 ", computed %016" PRIx64 ")",
			 stored, computed);
		return 0;
	}
	if (p[21] || p[22] || p[23]) {
		snprintf(s->reason, sizeof s->reason, "non-zero reserved bytes in the record header");
		return 0;
	}
	for (uint64_t i = WAL_RECORD_HEADER_SIZE + view->payload_size; i < view->size; i++) {
		if (p[i]) {
			snprintf(s->reason, sizeof s->reason, "non-zero padding after the payload");
			return 0;
		}
	}
	view->payload = p + WAL_RECORD_HEADER_SIZE;
	return 1;
}

/*
 * After a bad record at bad_offset, looks for a record that could continue
 * the log (see the essay): 1 with *found_offset and *found_lsn set, 0 if none,
 * WAL_SEARCH_GAVE_UP with *found_offset set to the candidate it stopped at
 * and *found_lsn to the candidates checksummed before it, or a negative
 * code. Each candidate is checksummed over its claimed size, so a tail of
 * headers planted to pass the LSN bound would cost the square of its length;
 * the search hashes at most WAL_SEARCH_HASH_FACTOR times the bytes after
 * bad_offset, which no tail that is not such a plant comes near (a header
 * passes by chance only with an 8-byte LSN inside a window of at most a few
 * million values out of 2^64).
 */
static int wal_scan_find_valid_after(wal_scan *s, uint64_t bad_offset, uint64_t last_good_lsn,
				     uint64_t seed, uint64_t *found_offset, uint64_t *found_lsn)
{
	wal_reader *r = &s->reader;
	uint64_t budget = WAL_SEARCH_HASH_FACTOR * (r->file_size - bad_offset), hashed = 0;
	uint64_t candidates = 0;
	for (uint64_t y = bad_offset + WAL_RECORD_ALIGN; y + WAL_RECORD_HEADER_SIZE <= r->file_size;
	     y += WAL_RECORD_ALIGN) {
		const uint8_t *p;
		int rc = wal_reader_get(r, y, WAL_RECORD_HEADER_SIZE, &p);
		if (rc)
			return rc;
		uint64_t lsn = get_u64le(p + 8);
		uint64_t lsn_bound = last_good_lsn + 1 + (y - bad_offset) / WAL_RECORD_HEADER_SIZE;
		if (lsn <= last_good_lsn || lsn > lsn_bound)
			continue;
		uint32_t payload_size = get_u32le(p + 16);
		uint64_t size = wal_record_size(payload_size);
		if (payload_size > WAL_RECORD_PAYLOAD_MAX || size > r->file_size - y)
			continue;
		if (size > budget - hashed) {
			*found_offset = y;
			*found_lsn = candidates;
			return WAL_SEARCH_GAVE_UP;
		}
		hashed += size;
		candidates++;
		rc = wal_reader_get(r, y, size, &p);
		if (rc)
			return rc;
		if (get_u64le(p) == wal_record_checksum(p, payload_size, seed)) {
			*found_offset = y;
			*found_lsn = lsn;
			return 1;
		}
	}
	return 0;
}

/* True if every byte of the file from offset on is zero. */
static int wal_scan_rest_is_zero(wal_scan *s, uint64_t offset)
{
	wal_reader *r = &s->reader;
	while (offset < r->file_size) {
		uint64_t size = r->file_size - offset;
		if (size > WAL_READ_WINDOW_BYTES)
			size = WAL_READ_WINDOW_BYTES;
		const uint8_t *p;
		int rc = wal_reader_get(r, offset, size, &p);
		if (rc)
			return rc;
		for (uint64_t i = 0; i < size; i++)
			if (p[i])
				return 0;
		offset += size;
	}
	return 1;
}

/*
 * A damaged header (`what`). A torn create in the newest file if nothing
 * after the header is non-zero: recovery removes the file, verify reports it
 * only with report_torn_tail. Otherwise corruption. Sets *removed.
 */
static int wal_scan_bad_header(wal_scan *s, bool is_last, const char *what, bool *removed)
{
	int rc = 0;
	if (is_last) {
		rc = wal_scan_rest_is_zero(s, WAL_FILE_HEADER_SIZE);
		if (rc < 0)
			return wal_scan_fail(s, rc, "read");
	}
	if (!is_last || rc == 0) {
		s->have_expected = false; /* verify: the chain cannot be followed through it */
		return wal_scan_problem(s, TALLY_E_CORRUPT,
					"wal: %s offset 0: %s, and the file %s", s->path, what,
					is_last ? "holds data after the header"
						: "is not the newest WAL file");
	}
	if (s->verify) {
		if (s->report_torn_tail)
			return wal_scan_problem(s, TALLY_E_CORRUPT,
						"wal: %s offset 0: %s (torn file creation; the file "
						"holds no records)", s->path, what);
		return 0;
	}
	*removed = true;
	return 0;
}

/* Scans one file: header, chain and every record. */
/* Writes bytes [0, size) of fd again, as they read (see the essay). 0 or
 * -errno. */
static int wal_rewrite(const tally_io *io, int fd, uint64_t size)
{
	uint8_t *chunk = malloc(WAL_REWRITE_CHUNK_BYTES);
	if (!chunk)
		return -ENOMEM;
	int rc = 0;
	for (uint64_t at = 0; at < size && !rc; at += WAL_REWRITE_CHUNK_BYTES) {
		size_t n = size - at < WAL_REWRITE_CHUNK_BYTES ? (size_t)(size - at)
							       : WAL_REWRITE_CHUNK_BYTES;
		rc = tally_io_read_all(io, fd, chunk, n, at);
		if (!rc)
			rc = tally_io_write_all(io, fd, chunk, n, at);
	}
	free(chunk);
	return rc;
}

static int wal_scan_file(wal_scan *s, uint64_t file_id, bool is_last)
{
	const tally_io *io = s->io;
	wal_reader *r = &s->reader;
	bool writable = !s->verify && is_last;
	bool removed = false;
	int rc = 0;

	wal_file_path(s->path, s->dir, file_id);
	int fd = io->open(io, s->path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0);
	if (fd < 0)
		return wal_scan_fail(s, fd, "open");
	int64_t file_size = io->file_size(io, fd);
	if (file_size < 0) {
		rc = wal_scan_fail(s, (int)file_size, "stat");
		goto out;
	}
	if (writable) {
		/* See the essay: records read may be pages a failed fsync left behind. */
		rc = wal_rewrite(io, fd, (uint64_t)file_size);
		s->fsync_count++;
		if (rc || (rc = io->fsync(io, fd))) {
			rc = wal_scan_fail(s, rc, "write again and fsync");
			goto out;
		}
	}
	r->fd = fd;
	r->file_size = (uint64_t)file_size;
	r->start = 0;
	r->length = 0;

	/* The header. */
	const uint8_t *header = NULL;
	if (r->file_size < WAL_FILE_HEADER_SIZE) {
		char what[96];
		snprintf(what, sizeof what, "file of %" PRIu64 " bytes is shorter than its %u-byte header",
			 r->file_size, WAL_FILE_HEADER_SIZE);
		rc = wal_scan_bad_header(s, is_last, what, &removed);
		goto out;
	}
	rc = wal_reader_get(r, 0, WAL_FILE_HEADER_SIZE, &header);
	if (rc) {
		rc = wal_scan_fail(s, rc, "read");
		goto out;
	}
	if (memcmp(header, WAL_MAGIC, WAL_MAGIC_SIZE) != 0) {
		rc = wal_scan_bad_header(s, is_last, "bad magic (not a WAL file header)", &removed);
		goto out;
	}
	uint32_t version = get_u32le(header + 8);
	if (version != WAL_FORMAT_VERSION && version != WAL_FORMAT_VERSION_UNKEYED) {
		rc = wal_scan_problem(s, TALLY_E_VERSION,
				      "wal: %s offset 8: format version %" PRIu32
				      ", this build reads versions %u and %u", s->path, version,
				      WAL_FORMAT_VERSION_UNKEYED, WAL_FORMAT_VERSION);
		s->have_expected = false; /* the chain cannot be followed through it */
		goto out;
	}
	uint32_t reserved;
	uint64_t salt;
	if (!wal_file_header_check(header, version, &reserved, &salt)) {
		rc = wal_scan_bad_header(s, is_last, "header checksum mismatch", &removed);
		goto out;
	}
	uint64_t header_file_id = get_u64le(header + 16);
	uint64_t first_lsn = get_u64le(header + 24);
	if (reserved != 0 || header_file_id != file_id || first_lsn == 0) {
		rc = wal_scan_problem(s, TALLY_E_CORRUPT,
				      "wal: %s offset 0: header names file id %016" PRIx64
				      " and first LSN %" PRIu64 " (reserved %" PRIu32
				      "); expected file id %016" PRIx64 ", a first LSN >= 1 and 0",
				      s->path, header_file_id, first_lsn, reserved, file_id);
		s->have_expected = false;
		goto out;
	}
	uint64_t seed = wal_record_seed(file_id, salt);

	/* The chain between files. */
	if (s->have_expected && first_lsn < s->expected_lsn) {
		rc = wal_scan_problem(s, TALLY_E_CORRUPT,
				      "wal: %s offset 24: first LSN %" PRIu64
				      " overlaps the previous file, which ends at LSN %" PRIu64,
				      s->path, first_lsn, s->expected_lsn - 1);
		if (rc)
			goto out;
	} else if (s->have_expected && first_lsn > s->expected_lsn &&
		   first_lsn > s->replay_from) {
		rc = wal_scan_problem(s, TALLY_E_CORRUPT,
				      "wal: %s offset 24: missing WAL: the file starts at LSN %" PRIu64
				      " but the previous file ends at LSN %" PRIu64,
				      s->path, first_lsn, s->expected_lsn - 1);
		if (rc)
			goto out;
	} else if (!s->have_expected && (!s->verify || s->replay_from > 0) &&
		   first_lsn > s->replay_from) {
		rc = wal_scan_problem(s, TALLY_E_CORRUPT,
				      "wal: %s offset 24: missing WAL before file %016" PRIx64
				      ": it starts at LSN %" PRIu64 " but replay starts at LSN %" PRIu64,
				      s->path, file_id, first_lsn, s->replay_from);
		if (rc)
			goto out; /* recovery stops; verify reports once and follows the chain */
	}
	s->have_expected = true;
	s->expected_lsn = first_lsn;

	/* The records. */
	uint64_t offset = WAL_FILE_HEADER_SIZE;
	while (offset < r->file_size) {
		wal_record_view view = {0};
		int valid = wal_scan_record(s, offset, seed, &view);
		if (valid < 0) {
			rc = wal_scan_fail(s, valid, "read");
			goto out;
		}
		if (valid) {
			if (view.lsn != s->expected_lsn) {
				rc = wal_scan_problem(s, TALLY_E_CORRUPT,
						      "wal: %s offset %" PRIu64
						      ": record has LSN %" PRIu64 ", expected LSN %" PRIu64
						      " (a stale or misdirected write)",
						      s->path, offset, view.lsn, s->expected_lsn);
				if (rc)
					goto out;
			} else if (s->replay_fn && view.lsn >= s->replay_from) {
				rc = s->replay_fn(s->replay_ctx, view.lsn, view.type, view.payload,
						  view.payload_size);
				if (rc) {
					/* Why, in the caller's words (wal.h), after
					 * where. */
					char why[TALLY_ERRMSG_SIZE];
					snprintf(why, sizeof why, "%s",
						 s->errmsg[0] ? s->errmsg : tally_strerror(rc));
					wal_errmsg_set(s->errmsg,
						 "wal: %s offset %" PRIu64
						 ": replay stopped at LSN %" PRIu64 ": %s",
						 s->path, offset, view.lsn, why);
					goto out;
				}
			}
			s->expected_lsn++; /* a misdirected record still takes its slot */
			offset += view.size;
			continue;
		}

		/* A bad record at offset. */
		uint64_t found_offset = 0, found_lsn = 0;
		int found = wal_scan_find_valid_after(s, offset, s->expected_lsn - 1, seed,
						      &found_offset, &found_lsn);
		if (found < 0) {
			rc = wal_scan_fail(s, found, "read");
			goto out;
		}
		if (found || !is_last) {
			char follow[256] = ""; /* the longer text below, with four 20-digit numbers */
			if (found == WAL_SEARCH_GAVE_UP)
				snprintf(follow, sizeof follow,
					 "; the search for valid records after it stopped at offset %"
					 PRIu64 " after checksumming %" PRIu64 " candidate records (%u "
					 "times the %" PRIu64 " bytes after it), so a torn tail cannot be "
					 "told from damage in the middle", found_offset, found_lsn,
					 WAL_SEARCH_HASH_FACTOR, r->file_size - offset);
			else if (found)
				snprintf(follow, sizeof follow,
					 "; valid records follow at offset %" PRIu64 " (LSN %" PRIu64 ")",
					 found_offset, found_lsn);
			rc = wal_scan_problem(s, TALLY_E_CORRUPT,
					      "wal: %s offset %" PRIu64 ": %s; expected LSN %" PRIu64 "%s%s",
					      s->path, offset, s->reason, s->expected_lsn, follow,
					      is_last ? "" : " (not the newest WAL file, so not a torn tail)");
			if (rc)
				goto out;
			if (found != 1) {
				s->have_expected = false; /* verify: where the file ends is unknown */
				goto out;
			}
			/* Verify: resynchronise on the valid record. */
			offset = found_offset;
			s->expected_lsn = found_lsn;
			continue;
		}
		/* A torn tail of the newest file. */
		if (s->verify) {
			if (s->report_torn_tail)
				wal_scan_problem(s, TALLY_E_CORRUPT,
						 "wal: %s offset %" PRIu64 ": torn tail of %" PRIu64
						 " bytes (%s)", s->path, offset, r->file_size - offset,
						 s->reason);
			goto out;
		}
		rc = io->ftruncate(io, fd, offset);
		if (rc) {
			rc = wal_scan_fail(s, rc, "truncate the torn tail of");
			goto out;
		}
		r->file_size = offset;
		break;
	}

	if (writable && r->file_size < (uint64_t)file_size) {
		s->fsync_count++; /* the torn tail's cut */
		rc = io->fsync(io, fd);
		if (rc) {
			rc = wal_scan_fail(s, rc, "fsync");
			goto out;
		}
	}
	if (!s->verify) {
		rc = wal_file_list_reserve(&s->files, 1);
		if (rc) {
			rc = wal_scan_fail(s, rc, "remember");
			goto out;
		}
		s->files.items[s->files.count++] = (wal_file){
			.file_id = file_id, .first_lsn = first_lsn, .size = r->file_size};
	}

out:
	io->close(io, fd);
	if (rc == 0 && removed) {
		assert(!s->verify && is_last);
		rc = io->unlink(io, s->path);
		if (rc == 0) {
			s->fsync_count++;
			rc = io->fsync_dir(io, s->dir);
		}
		if (rc)
			rc = wal_scan_fail(s, rc, "remove the torn file");
	}
	return rc;
}

typedef struct wal_id_list {
	uint64_t *ids;
	size_t count;
	size_t capacity;
	int error;
} wal_id_list;

static int wal_list_entry(void *ctx, const char *name)
{
	wal_id_list *list = ctx;
	uint64_t file_id;
	if (!wal_file_name_parse(name, &file_id))
		return 0;
	if (list->count == list->capacity) {
		size_t capacity = list->capacity ? list->capacity * 2 : 64;
		uint64_t *ids = realloc(list->ids, capacity * sizeof *ids);
		if (!ids) {
			list->error = -ENOMEM;
			return 1;
		}
		list->ids = ids;
		list->capacity = capacity;
	}
	list->ids[list->count++] = file_id;
	return 0;
}

static int wal_id_compare(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Scans every WAL file of s->dir in id order. */
static int wal_scan_dir(wal_scan *s)
{
	wal_id_list list = {0};
	int rc = s->io->list_dir(s->io, s->dir, wal_list_entry, &list);
	if (list.error) /* wal_list_entry stopped the listing (1) to report it */
		rc = list.error;
	if (rc) {
		wal_errmsg_set(s->errmsg, "wal: list directory %s: %s", s->dir,
			 tally_strerror(rc));
		free(list.ids);
		return rc;
	}
	if (list.count > 1)
		qsort(list.ids, list.count, sizeof *list.ids, wal_id_compare);
	/* The writer never names a file UINT64_MAX: the next id would wrap to
	 * 0 and sort before the files it follows. Such a file is not ours;
	 * verify reports it and checks the rest. */
	if (list.count && list.ids[list.count - 1] == UINT64_MAX) {
		list.count--;
		rc = wal_scan_problem(s, TALLY_E_CORRUPT,
				      "wal: %s/%016" PRIx64 "%s: file id out of range (no file "
				      "id can follow it)", s->dir, UINT64_MAX, WAL_FILE_SUFFIX);
	}
	for (size_t i = 0; i < list.count && rc == 0; i++) {
		if (list.ids[i] > s->file_id_max)
			s->file_id_max = list.ids[i];
		rc = wal_scan_file(s, list.ids[i], i + 1 == list.count);
	}
	free(list.ids);
	free(s->reader.data);
	s->reader.data = NULL;
	return rc;
}

/* ---- Open and verify ----------------------------------------------------- */


int wal_open(const tally_io *io, const char *dir, const wal_options *options,
	     uint64_t replay_from_lsn, wal_replay_fn fn, void *ctx, wal **out,
	     char *errmsg)
{
	char errmsg_local[TALLY_ERRMSG_SIZE];
	if (!errmsg)
		errmsg = errmsg_local;
	errmsg[0] = '\0';
	assert(out);
	*out = NULL;
	if (!io || !dir || strlen(dir) + WAL_FILE_NAME_SIZE + 2 > WAL_PATH_SIZE_MAX) {
		wal_errmsg_set(errmsg, "wal: invalid arguments to open (directory %s)",
			 dir ? dir : "(null)");
		return TALLY_E_INVALID;
	}

	int rc = tally_io_make_dir(io, dir, 0700);
	if (rc) {
		wal_errmsg_set(errmsg, "wal: create directory %s: %s", dir,
			 tally_strerror(rc));
		return rc;
	}

	wal_scan scan = {
		.io = io,
		.dir = dir,
		.errmsg = errmsg,
		.replay_from = replay_from_lsn > 0 ? replay_from_lsn : 1,
		.replay_fn = fn,
		.replay_ctx = ctx,
		.reader = {.io = io, .fd = -1},
	};
	rc = wal_scan_dir(&scan);
	if (rc) {
		free(scan.files.items);
		return rc;
	}

	wal *w = calloc(1, sizeof *w);
	if (!w) {
		free(scan.files.items);
		wal_errmsg_set(errmsg, "wal: open %s: out of memory", dir);
		return -ENOMEM;
	}
	w->io = io;
	snprintf(w->dir, sizeof w->dir, "%s", dir);
	w->file_bytes_max = options && options->file_bytes_max ? options->file_bytes_max
							       : WAL_FILE_BYTES_MAX_DEFAULT;
	w->buffer_bytes_max = options && options->buffer_bytes_max ? options->buffer_bytes_max
								   : WAL_BUFFER_BYTES_MAX_DEFAULT;
	w->group_commit_window_us = options ? options->group_commit_window_us : 0;
	w->files = scan.files;
	w->fsync_count = scan.fsync_count;
	uint64_t last_valid_lsn = scan.have_expected ? scan.expected_lsn - 1 : 0;
	w->last_lsn = scan.replay_from - 1 > last_valid_lsn ? scan.replay_from - 1 : last_valid_lsn;
	w->durable_lsn = w->last_lsn;
	w->rotate_requested = true; /* invariant 5: the first record starts a new file */
	w->fd = -1;
	w->next_file_id = scan.file_id_max + 1;
	if (options && options->file_id_min > w->next_file_id)
		w->next_file_id = options->file_id_min;
	w->direct = true;
	w->stage = aligned_alloc(WAL_DIRECT_BLOCK, WAL_DIRECT_STAGE_BYTES);

	pthread_condattr_t condattr;
	pthread_condattr_init(&condattr);
	pthread_condattr_setclock(&condattr, CLOCK_MONOTONIC);
	pthread_mutex_init(&w->mutex, NULL);
	pthread_mutex_init(&w->retire_mutex, NULL);
	pthread_cond_init(&w->writer_cond, &condattr);
	pthread_cond_init(&w->durable_cond, NULL);
	pthread_cond_init(&w->space_cond, NULL);
	pthread_condattr_destroy(&condattr);

	rc = w->stage ? wal_buffer_reserve(&w->pending, WAL_BUFFER_BYTES_INITIAL) : -ENOMEM;
	if (rc == 0)
		rc = wal_buffer_reserve(&w->writing, WAL_BUFFER_BYTES_INITIAL);
	if (rc == 0)
		rc = -pthread_create(&w->writer_thread, NULL, wal_writer_main, w);
	if (rc) {
		wal_errmsg_set(errmsg, "wal: start the writer for %s: %s", dir,
			 tally_strerror(rc));
		wal_free(w);
		return rc;
	}
	pthread_setname_np(w->writer_thread, "tally-wal"); /* a debugging aid: failure is harmless */
	*out = w;
	return 0;
}

int wal_verify(const tally_io *io, const char *dir, uint64_t replay_from_lsn,
	       int report_torn_tail, wal_problem_fn fn, void *ctx)
{
	char errmsg[TALLY_ERRMSG_SIZE];
	if (!io || !dir || strlen(dir) + WAL_FILE_NAME_SIZE + 2 > WAL_PATH_SIZE_MAX)
		return TALLY_E_INVALID;
	wal_scan scan = {
		.io = io,
		.dir = dir,
		.verify = true,
		.replay_from = replay_from_lsn,
		.report_torn_tail = report_torn_tail != 0,
		.problem_fn = fn,
		.problem_ctx = ctx,
		.errmsg = errmsg,
		.reader = {.io = io, .fd = -1},
	};
	int rc = wal_scan_dir(&scan);
	assert(scan.files.count == 0);
	free(scan.files.items);
	return rc ? rc : scan.problem_count;
}
