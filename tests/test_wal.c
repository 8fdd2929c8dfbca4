/*
 * test_wal.c — pins the behaviour of the write-ahead log (engine/wal.c):
 * append and replay, durability and group commit, rotation and retirement,
 * recovery of torn tails at every byte, detection of corruption, stale and
 * misdirected records, and the sticky failure after injected write and fsync
 * errors (tests/support/fault_io.h).
 *
 * Each test works in its own mkdtemp directory under /tmp and removes it.
 * The tests read WAL files with plain POSIX calls and parse them with their
 * own code, written from docs/formats.md, so the on-disk format is pinned
 * independently of wal.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "support/fault_io.h"
#include "support/test_dir.h"
#include "tally.h"
#include "tally_io.h"
#include "wal.h"

/* Not <limits.h>: engine headers shadow it under -Iengine. */
#define TEST_PATH_SIZE 4096
#define FILE_HEADER_SIZE 40u
#define RECORD_HEADER_SIZE 24u

/* ---- Directories and files -------------------------------------------- */


static void wal_path(char *path, const char *dir, uint64_t file_id)
{
	snprintf(path, TEST_PATH_SIZE, "%s/%016" PRIx64 ".wal", dir, file_id);
}

#define DIRECT_BLOCK 4096u

static uint64_t block_round_up(uint64_t size)
{
	return (size + DIRECT_BLOCK - 1) / DIRECT_BLOCK * DIRECT_BLOCK;
}

static int file_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static uint64_t file_size(const char *path)
{
	struct stat st;
	cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
	return (uint64_t)st.st_size;
}

/* Reads a whole file into a malloc'ed buffer. */
static uint8_t *file_read(const char *path, uint64_t *size)
{
	*size = file_size(path);
	uint8_t *data = malloc(*size ? *size : 1);
	cr_assert_not_null(data);
	int fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	cr_assert_eq(pread(fd, data, *size, 0), (ssize_t)*size);
	close(fd);
	return data;
}

static void file_write(const char *path, const void *data, uint64_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	cr_assert_eq(pwrite(fd, data, size, 0), (ssize_t)size);
	close(fd);
}

static void file_write_at(const char *path, uint64_t offset, const void *data, uint64_t size)
{
	int fd = open(path, O_WRONLY);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	cr_assert_eq(pwrite(fd, data, size, (off_t)offset), (ssize_t)size);
	close(fd);
}

static void file_truncate(const char *path, uint64_t size)
{
	cr_assert_eq(truncate(path, (off_t)size), 0, "truncate %s: %s", path, strerror(errno));
}

static void file_copy(const char *from, const char *to)
{
	uint64_t size;
	uint8_t *data = file_read(from, &size);
	file_write(to, data, size);
	free(data);
}

static int count_entry(void *ctx, const char *name)
{
	(void)name;
	(*(int *)ctx)++;
	return 0;
}

static int dir_entry_count(const char *dir)
{
	int count = 0;
	const tally_io *io = tally_io_default();
	cr_assert_eq(io->list_dir(io, dir, count_entry, &count), 0);
	return count;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8); /* the tests run on little-endian machines */
	return v;
}

static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

/* ---- Parsing WAL files, independently of wal.c -------------------------- */

#define RECORDS_MAX 4096

typedef struct parsed_file {
	uint32_t version;
	uint64_t file_id;
	uint64_t first_lsn;
	uint64_t salt;                 /* 0 in version 1 */
	uint64_t seed;                 /* of the record checksums: file id XOR salt */
	uint64_t size;
	size_t record_count;
	uint64_t offsets[RECORDS_MAX]; /* of each record */
	uint64_t lsns[RECORDS_MAX];
	uint64_t sizes[RECORDS_MAX];   /* in the file, padding included */
} parsed_file;

static uint64_t record_size(uint64_t payload_size)
{
	return RECORD_HEADER_SIZE + ((payload_size + 7) & ~UINT64_C(7));
}

/* Version 2's header checksum: the low 32 bits of XXH3 over the 40 header
 * bytes, with the checksum's own 4 bytes (offset 12) taken as zero. */
static uint32_t header_v2_checksum(const uint8_t *header)
{
	uint8_t copy[FILE_HEADER_SIZE];
	memcpy(copy, header, sizeof copy);
	memset(copy + 12, 0, 4);
	return (uint32_t)XXH3_64bits(copy, sizeof copy);
}

/* Stores header_v2_checksum(header) in its place. */
static void header_v2_checksum_set(uint8_t *header)
{
	uint32_t sum = header_v2_checksum(header);
	memcpy(header + 12, &sum, 4);
}

/* Parses a well-formed file of version 1 or 2, checking every checksum as
 * docs/formats.md defines them. */
static void parse_file(const char *path, parsed_file *out)
{
	uint64_t size;
	uint8_t *data = file_read(path, &size);
	memset(out, 0, sizeof *out);
	out->size = size;
	cr_assert_geq(size, FILE_HEADER_SIZE, "%s is shorter than a header", path);
	cr_assert_eq(memcmp(data, "TLYWAL01", 8), 0);
	out->version = get_u32(data + 8);
	out->file_id = get_u64(data + 16);
	out->first_lsn = get_u64(data + 24);
	if (out->version == 1) {
		cr_assert_eq(get_u32(data + 12), 0u, "reserved");
		cr_assert_eq(get_u64(data + 32), XXH3_64bits(data, 32), "header checksum of %s",
			     path);
	} else {
		cr_assert_eq(out->version, 2u, "format version of %s", path);
		cr_assert_eq(get_u32(data + 12), header_v2_checksum(data), "header checksum of %s",
			     path);
		out->salt = get_u64(data + 32);
	}
	out->seed = out->file_id ^ out->salt;
	uint64_t offset = FILE_HEADER_SIZE;
	while (offset < size) {
		cr_assert_lt(out->record_count, RECORDS_MAX);
		cr_assert_leq(offset + RECORD_HEADER_SIZE, size);
		uint32_t payload_size = get_u32(data + offset + 16);
		uint64_t rsize = record_size(payload_size);
		cr_assert_leq(offset + rsize, size);
		cr_assert_eq(get_u64(data + offset),
			     XXH3_64bits_withSeed(data + offset + 8, 16 + payload_size, out->seed),
			     "record checksum at offset %" PRIu64, offset);
		cr_assert_eq(data[offset + 21] | data[offset + 22] | data[offset + 23], 0);
		for (uint64_t i = RECORD_HEADER_SIZE + payload_size; i < rsize; i++)
			cr_assert_eq(data[offset + i], 0, "padding");
		out->offsets[out->record_count] = offset;
		out->lsns[out->record_count] = get_u64(data + offset + 8);
		out->sizes[out->record_count] = rsize;
		out->record_count++;
		offset += rsize;
	}
	free(data);
}

/* ---- Payloads and replay ---------------------------------------------- */

/* The deterministic record for an LSN: size 0..300, any type. */
static size_t payload_size_for(uint64_t lsn)
{
	return (size_t)((lsn * 37) % 301);
}

static uint8_t type_for(uint64_t lsn)
{
	return (uint8_t)(lsn * 13 + 5);
}

static void payload_fill(uint64_t lsn, uint8_t *buf, size_t size)
{
	for (size_t i = 0; i < size; i++)
		buf[i] = (uint8_t)(lsn * 131 + i * 7 + 1);
}

typedef struct replayed {
	uint64_t lsn;
	uint8_t type;
	size_t size;
	uint8_t *payload;
} replayed;

typedef struct replay_log {
	replayed *items;
	size_t count;
	size_t capacity;
	int stop_at_lsn; /* non-zero: return 77 at this LSN */
} replay_log;

static int replay_collect(void *ctx, uint64_t lsn, uint8_t type, const uint8_t *payload,
			  size_t size)
{
	replay_log *log = ctx;
	if (log->stop_at_lsn && lsn == (uint64_t)log->stop_at_lsn)
		return 77;
	if (log->count == log->capacity) {
		log->capacity = log->capacity ? log->capacity * 2 : 64;
		log->items = realloc(log->items, log->capacity * sizeof *log->items);
		cr_assert_not_null(log->items);
	}
	replayed *r = &log->items[log->count++];
	r->lsn = lsn;
	r->type = type;
	r->size = size;
	r->payload = malloc(size ? size : 1);
	cr_assert_not_null(r->payload);
	if (size)
		memcpy(r->payload, payload, size);
	return 0;
}

static void replay_log_free(replay_log *log)
{
	for (size_t i = 0; i < log->count; i++)
		free(log->items[i].payload);
	free(log->items);
	memset(log, 0, sizeof *log);
}

/* Asserts the log holds exactly the deterministic records first..last. */
static void replay_log_expect(const replay_log *log, uint64_t first, uint64_t last)
{
	cr_assert_eq(log->count, last >= first ? last - first + 1 : 0,
		     "replayed %zu records, expected LSNs %" PRIu64 "..%" PRIu64, log->count, first,
		     last);
	uint8_t expected[512];
	for (size_t i = 0; i < log->count; i++) {
		const replayed *r = &log->items[i];
		uint64_t lsn = first + i;
		cr_assert_eq(r->lsn, lsn, "record %zu has LSN %" PRIu64 ", expected %" PRIu64, i,
			     r->lsn, lsn);
		cr_assert_eq(r->type, type_for(lsn), "type of LSN %" PRIu64, lsn);
		cr_assert_eq(r->size, payload_size_for(lsn), "size of LSN %" PRIu64, lsn);
		payload_fill(lsn, expected, r->size);
		cr_assert_eq(memcmp(r->payload, expected, r->size), 0, "payload of LSN %" PRIu64, lsn);
	}
}

/* ---- WAL helpers ---------------------------------------------------------- */

static wal *open_ok(const tally_io *io, const char *dir, const wal_options *options,
		    uint64_t replay_from, replay_log *log)
{
	wal *w = NULL;
	char errmsg[TALLY_ERRMSG_SIZE];
	int rc = wal_open(io ? io : tally_io_default(), dir, options, replay_from,
			  log ? replay_collect : NULL, log, &w, errmsg);
	cr_assert_eq(rc, 0, "wal_open(%s) = %d (%s): %s", dir, rc, tally_strerror(rc), errmsg);
	cr_assert_not_null(w);
	return w;
}

/* Opens expecting failure; returns the code, message in errmsg. */
static int open_fail(const char *dir, uint64_t replay_from, char *errmsg)
{
	wal *w = (wal *)1;
	replay_log log = {0};
	int rc = wal_open(tally_io_default(), dir, NULL, replay_from, replay_collect, &log, &w,
			  errmsg);
	cr_assert_neq(rc, 0, "wal_open(%s) succeeded, expected a failure", dir);
	cr_assert_null(w, "*out must be NULL on failure");
	replay_log_free(&log);
	return rc;
}

/* Appends the deterministic records for the next `count` LSNs. */
static uint64_t append_records(wal *w, uint64_t count)
{
	uint8_t payload[512];
	uint64_t lsn = 0;
	for (uint64_t i = 0; i < count; i++) {
		uint64_t expected = wal_last_lsn(w) + 1;
		size_t size = payload_size_for(expected);
		payload_fill(expected, payload, size);
		cr_assert_eq(wal_append(w, type_for(expected), payload, size, &lsn), 0);
		cr_assert_eq(lsn, expected);
	}
	return lsn;
}

/* Appends a record of exactly `size` payload bytes (content from the LSN). */
static uint64_t append_sized(wal *w, size_t size)
{
	static uint8_t payload[8192];
	cr_assert_leq(size, sizeof payload);
	uint64_t expected = wal_last_lsn(w) + 1;
	payload_fill(expected, payload, size);
	uint64_t lsn = 0;
	cr_assert_eq(wal_append(w, type_for(expected), payload, size, &lsn), 0);
	return lsn;
}

typedef struct problems {
	int count;
	char last[TALLY_ERRMSG_SIZE];
	char first[TALLY_ERRMSG_SIZE];
} problems;

static void problem_collect(void *ctx, const char *message)
{
	problems *p = ctx;
	if (p->count == 0)
		snprintf(p->first, sizeof p->first, "%s", message);
	snprintf(p->last, sizeof p->last, "%s", message);
	p->count++;
}

/* Reopens the WAL in dir with the real io and checks that it replays
 * exactly the deterministic records 1..last; closes it. */
static void expect_reopen_replays(const char *dir, uint64_t last)
{
	replay_log log = {0};
	wal *w = open_ok(NULL, dir, NULL, 0, &log);
	replay_log_expect(&log, 1, last);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
}

/* Writes `count` deterministic records into a fresh WAL in dir, closed. */
static void make_wal(const char *dir, uint64_t count)
{
	wal *w = open_ok(NULL, dir, NULL, 0, NULL);
	append_records(w, count);
	cr_assert_eq(wal_close(w), 0);
}

/* ---- Append and replay -------------------------------------------------- */

Test(wal_replay, reopen_replays_exact_records_in_order_and_lsns_continue,
     .description = "records survive close/reopen with their LSNs, types and payloads; "
		    "the next LSN continues after the last")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	wal *w = open_ok(NULL, dir.path, NULL, 0, NULL);
	cr_assert_eq(wal_last_lsn(w), 0);
	cr_assert_eq(append_records(w, 300), 300);
	cr_assert_eq(wal_close(w), 0);

	replay_log log = {0};
	w = open_ok(NULL, dir.path, NULL, 0, &log);
	replay_log_expect(&log, 1, 300);
	cr_assert_eq(wal_last_lsn(w), 300);
	cr_assert_eq(wal_durable_lsn(w), 300);
	cr_assert_eq(append_records(w, 5), 305);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);

	w = open_ok(NULL, dir.path, NULL, 1, &log);
	replay_log_expect(&log, 1, 305);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	test_dir_remove(&dir);
}

Test(wal_replay, replay_from_lsn_skips_earlier_records,
     .description = "records below replay_from_lsn are validated but not replayed")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_wal(dir.path, 100);
	replay_log log = {0};
	wal *w = open_ok(NULL, dir.path, NULL, 40, &log);
	replay_log_expect(&log, 40, 100);
	cr_assert_eq(wal_last_lsn(w), 100);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);

	w = open_ok(NULL, dir.path, NULL, 101, &log);
	cr_assert_eq(log.count, 0);
	cr_assert_eq(wal_close(w), 0);
	test_dir_remove(&dir);
}

Test(wal_replay, replay_from_past_the_end_moves_the_next_lsn,
     .description = "next LSN = max(replay_from_lsn, last + 1); the LSN gap is accepted later "
		    "only while it lies below replay_from_lsn")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_wal(dir.path, 10);
	wal *w = open_ok(NULL, dir.path, NULL, 50, NULL);
	cr_assert_eq(wal_last_lsn(w), 49);
	cr_assert_eq(append_records(w, 1), 50);
	cr_assert_eq(wal_close(w), 0);

	replay_log log = {0};
	w = open_ok(NULL, dir.path, NULL, 50, &log);
	replay_log_expect(&log, 50, 50);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);

	char errmsg[TALLY_ERRMSG_SIZE], path[TEST_PATH_SIZE];
	cr_assert_eq(open_fail(dir.path, 1, errmsg), TALLY_E_CORRUPT);
	wal_path(path, dir.path, 2);
	cr_assert_not_null(strstr(errmsg, path), "%s", errmsg);
	cr_assert_not_null(strstr(errmsg, "missing WAL"), "%s", errmsg);
	test_dir_remove(&dir);
}

Test(wal_replay, empty_directory_and_fresh_directory_open,
     .description = "a missing directory is created; an empty one is fine; no file is created "
		    "until a record is appended")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	char sub[TEST_PATH_SIZE];
	snprintf(sub, sizeof sub, "%s/wal", dir.path);
	wal *w = open_ok(NULL, sub, NULL, 0, NULL);
	cr_assert_eq(dir_entry_count(sub), 0);
	cr_assert_eq(wal_close(w), 0);
	w = open_ok(NULL, sub, NULL, 7, NULL);
	cr_assert_eq(wal_last_lsn(w), 6);
	cr_assert_eq(append_records(w, 1), 7);
	cr_assert_eq(wal_close(w), 0);
	char path[TEST_PATH_SIZE];
	wal_path(path, sub, 1);
	parsed_file pf;
	parse_file(path, &pf);
	cr_assert_eq(pf.first_lsn, 7);
	cr_assert_eq(pf.record_count, 1);
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(rmdir(sub), 0);
	test_dir_remove(&dir);
}

Test(wal_replay, replay_callback_error_stops_open,
     .description = "a non-zero return from the replay function is what wal_open returns")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_wal(dir.path, 10);
	replay_log log = {.stop_at_lsn = 4};
	wal *w = (wal *)1;
	char errmsg[TALLY_ERRMSG_SIZE];
	cr_assert_eq(wal_open(tally_io_default(), dir.path, NULL, 0, replay_collect, &log, &w,
			      errmsg), 77);
	cr_assert_null(w);
	cr_assert_eq(log.count, 3);
	/* Where it stopped; why, in the callback's words when it wrote none:
	 * the code's. */
	char path[TEST_PATH_SIZE], expect[TEST_PATH_SIZE + 128];
	wal_path(path, dir.path, 1);
	snprintf(expect, sizeof expect, "wal: %s offset %" PRIu64 ": replay stopped at LSN 4: %s",
		 path, FILE_HEADER_SIZE + record_size(payload_size_for(1)) +
			       record_size(payload_size_for(2)) + record_size(payload_size_for(3)),
		 tally_strerror(77));
	cr_assert_str_eq(errmsg, expect);
	replay_log_free(&log);
	test_dir_remove(&dir);
}

Test(wal_replay, other_names_in_the_directory_are_ignored,
     .description = "only <16 lowercase hex>.wal names are WAL files")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_wal(dir.path, 5);
	const char *names[] = {"notes.txt", "0000000000000009.wal.tmp", "000000000000000A.wal",
			       "00000000000000000b.wal", "000000000000000c.WAL"};
	char path[TEST_PATH_SIZE];
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		snprintf(path, sizeof path, "%s/%s", dir.path, names[i]);
		file_write(path, "junk", 4);
	}
	replay_log log = {0};
	wal *w = open_ok(NULL, dir.path, NULL, 0, &log);
	replay_log_expect(&log, 1, 5);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	test_dir_remove(&dir);
}

Test(wal_append, oversized_payload_is_limit_and_does_not_fail_the_wal,
     .description = "payload > WAL_RECORD_PAYLOAD_MAX is TALLY_E_LIMIT; the WAL goes on")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	wal *w = open_ok(NULL, dir.path, NULL, 0, NULL);
	uint8_t *big = malloc((size_t)WAL_RECORD_PAYLOAD_MAX + 1); /* never touched */
	cr_assert_not_null(big);
	uint64_t lsn = 12345;
	cr_assert_eq(wal_append(w, 1, big, (size_t)WAL_RECORD_PAYLOAD_MAX + 1, &lsn), TALLY_E_LIMIT);
	cr_assert_eq(lsn, 12345, "no LSN assigned");
	free(big);
	cr_assert_eq(wal_error(w), 0);
	cr_assert_eq(append_records(w, 2), 2);
	cr_assert_eq(wal_wait_durable(w, 2), 0);
	cr_assert_eq(wal_close(w), 0);
	test_dir_remove(&dir);
}

Test(wal_format, files_match_the_documented_layout,
     .description = "header fields, header and record checksums, 8-byte alignment and "
		    "zero padding are exactly as docs/formats.md says")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_wal(dir.path, 20);
	char path[TEST_PATH_SIZE];
	wal_path(path, dir.path, 1);
	parsed_file pf;
	parse_file(path, &pf); /* checks every checksum and padding byte */
	cr_assert_eq(pf.version, 2);
	cr_assert_eq(pf.file_id, 1);
	cr_assert_eq(pf.first_lsn, 1);
	cr_assert_eq(pf.record_count, 20);
	uint64_t offset = FILE_HEADER_SIZE;
	for (size_t i = 0; i < pf.record_count; i++) {
		cr_assert_eq(pf.lsns[i], i + 1);
		cr_assert_eq(pf.offsets[i], offset);
		cr_assert_eq(pf.offsets[i] % 8, 0);
		cr_assert_eq(pf.sizes[i], record_size(payload_size_for(i + 1)));
		offset += pf.sizes[i];
	}
	cr_assert_eq(pf.size, offset);
	test_dir_remove(&dir);
}

Test(wal_format, each_file_keys_its_record_checksums_with_a_salt_from_the_io_table,
     .description = "a version 2 file's salt (header offset 32) is the next 8 bytes of the io "
		    "table's random source, new for every file, and its records' checksums are "
		    "seeded with the file id XOR the salt, not with the file id alone")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	fault_io *f = fault_io_create(), *same = fault_io_create();
	fault_io_random_seed(f, 7);
	fault_io_random_seed(same, 7);
	wal *w = open_ok(fault_io_table(f), dir.path, NULL, 0, NULL);
	append_records(w, 3);
	uint64_t first = 0;
	cr_assert_eq(wal_rotate(w, &first), 0);
	append_records(w, 3);
	cr_assert_eq(wal_close(w), 0);
	uint64_t salts[2];
	fault_io_table(same)->random(fault_io_table(same), salts, sizeof salts);
	cr_assert_neq(salts[0], salts[1]);
	for (uint64_t id = 1; id <= 2; id++) {
		char path[TEST_PATH_SIZE];
		wal_path(path, dir.path, id);
		parsed_file pf;
		parse_file(path, &pf); /* every record checksum with file id XOR salt */
		cr_assert_eq(pf.version, 2);
		cr_assert_eq(pf.record_count, 3);
		cr_assert_eq(pf.salt, salts[id - 1], "file %" PRIu64 "'s salt", id);
		uint64_t size;
		uint8_t *data = file_read(path, &size);
		for (size_t i = 0; i < pf.record_count; i++) {
			const uint8_t *record = data + pf.offsets[i];
			uint64_t unkeyed = XXH3_64bits_withSeed(record + 8,
								16 + get_u32(record + 16), id);
			cr_assert_neq(get_u64(record), unkeyed,
				      "file %" PRIu64 " record %zu: unkeyed", id, i);
		}
		free(data);
	}
	fault_io_destroy(f);
	fault_io_destroy(same);
	test_dir_remove(&dir);
}

/* Writes a version 1 file (docs/formats.md) of the deterministic records
 * first_lsn .. first_lsn + count - 1, seeded with the file id alone. */
static void write_v1_file(const char *path, uint64_t file_id, uint64_t first_lsn, uint64_t count)
{
	static uint8_t data[16384];
	uint32_t version = 1;
	memset(data, 0, sizeof data);
	memcpy(data, "TLYWAL01", 8);
	memcpy(data + 8, &version, 4);
	memcpy(data + 16, &file_id, 8);
	memcpy(data + 24, &first_lsn, 8);
	uint64_t sum = XXH3_64bits(data, 32);
	memcpy(data + 32, &sum, 8);
	uint64_t size = FILE_HEADER_SIZE;
	for (uint64_t lsn = first_lsn; lsn < first_lsn + count; lsn++) {
		uint8_t *record = data + size;
		uint32_t payload_size = (uint32_t)payload_size_for(lsn);
		cr_assert_leq(size + record_size(payload_size), sizeof data);
		memcpy(record + 8, &lsn, 8);
		memcpy(record + 16, &payload_size, 4);
		record[20] = type_for(lsn);
		payload_fill(lsn, record + RECORD_HEADER_SIZE, payload_size);
		sum = XXH3_64bits_withSeed(record + 8, 16 + payload_size, file_id);
		memcpy(record, &sum, 8);
		size += record_size(payload_size);
	}
	file_write(path, data, size);
}

Test(wal_format, version_1_files_are_read_and_the_next_file_is_version_2,
     .description = "a directory written before salts (version 1: unkeyed record checksums) "
		    "replays, its torn tail is truncated and its damage reported as before, and "
		    "the WAL goes on in a version 2 file")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	char path[TEST_PATH_SIZE], errmsg[TALLY_ERRMSG_SIZE], expect[TEST_PATH_SIZE + 64];
	wal_path(path, dir.path, 1);
	write_v1_file(path, 1, 1, 8);
	parsed_file pf;
	parse_file(path, &pf);
	cr_assert_eq(pf.version, 1);
	cr_assert_eq(pf.record_count, 8);
	file_truncate(path, pf.size - 5);

	replay_log log = {0};
	wal *w = open_ok(NULL, dir.path, NULL, 0, &log);
	replay_log_expect(&log, 1, 7);
	cr_assert_eq(file_size(path), pf.offsets[7], "the torn record 8 was cut off");
	cr_assert_eq(append_records(w, 2), 9);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	char newer[TEST_PATH_SIZE];
	wal_path(newer, dir.path, 2);
	parsed_file pn;
	parse_file(newer, &pn);
	cr_assert_eq(pn.version, 2);
	cr_assert_eq(pn.first_lsn, 8);
	cr_assert_eq(pn.record_count, 2);
	expect_reopen_replays(dir.path, 9);

	uint8_t flipped[1];
	payload_fill(3, flipped, 1);
	flipped[0] ^= 0x10; /* in record 3's payload */
	file_write_at(path, pf.offsets[2] + RECORD_HEADER_SIZE, flipped, 1);
	cr_assert_eq(open_fail(dir.path, 0, errmsg), TALLY_E_CORRUPT);
	snprintf(expect, sizeof expect, "%s offset %" PRIu64 ": checksum mismatch", path,
		 pf.offsets[2]);
	cr_assert_not_null(strstr(errmsg, expect), "%s", errmsg);
	test_dir_remove(&dir);
}

/* ---- Durability and group commit ---------------------------------------- */

Test(wal_durable, wait_durable_semantics,
     .description = "durable_lsn follows appends; waiting on a durable LSN returns at once; "
		    "an LSN never appended is TALLY_E_INVALID")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	wal *w = open_ok(NULL, dir.path, NULL, 0, NULL);
	cr_assert_eq(wal_durable_lsn(w), 0);
	cr_assert_eq(wal_wait_durable(w, 0), 0);
	cr_assert_eq(wal_wait_durable(w, 1), TALLY_E_INVALID);
	uint64_t lsn = append_records(w, 3);
	cr_assert_eq(wal_wait_durable(w, lsn), 0);
	cr_assert_geq(wal_durable_lsn(w), 3);
	cr_assert_eq(wal_wait_durable(w, 2), 0);
	cr_assert_eq(wal_wait_durable(w, 4), TALLY_E_INVALID);
	wal_stats st;
	wal_get_stats(w, &st);
	cr_assert_eq(st.last_lsn, 3);
	cr_assert_eq(st.durable_lsn, 3);
	cr_assert_eq(st.file_count, 1);
	char path[TEST_PATH_SIZE];
	wal_path(path, dir.path, 1);
	/* Direct I/O writes whole blocks: the open file ends in padding. */
	cr_assert_eq(file_size(path), st.direct_io ? block_round_up(st.bytes) : st.bytes);
	cr_assert_eq(wal_close(w), 0);
	cr_assert_eq(file_size(path), st.bytes, "closing leaves the file its exact size");
	test_dir_remove(&dir);
}

#define THREAD_COUNT 4
#define THREAD_RECORDS 400

typedef struct appender {
	wal *w;
	uint32_t thread_index;
	uint64_t lsns[THREAD_RECORDS];
} appender;

static void *appender_main(void *arg)
{
	appender *a = arg;
	for (uint32_t seq = 0; seq < THREAD_RECORDS; seq++) {
		uint8_t payload[40];
		memset(payload, (int)a->thread_index, sizeof payload);
		memcpy(payload, &a->thread_index, 4);
		memcpy(payload + 4, &seq, 4);
		if (wal_append(a->w, (uint8_t)a->thread_index, payload, sizeof payload, &a->lsns[seq]))
			return (void *)1;
		if (wal_wait_durable(a->w, a->lsns[seq]))
			return (void *)2;
	}
	return NULL;
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

Test(wal_durable, concurrent_appenders_get_contiguous_lsns_and_group_commit,
     .description = "threads appending and waiting: LSNs distinct and contiguous, all durable "
		    "and replayed in per-thread order, and far fewer fsyncs than records")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	fault_io *f = fault_io_create();
	wal *w = open_ok(fault_io_table(f), dir.path, NULL, 0, NULL);
	static appender appenders[THREAD_COUNT];
	pthread_t threads[THREAD_COUNT];
	for (uint32_t t = 0; t < THREAD_COUNT; t++) {
		appenders[t].w = w;
		appenders[t].thread_index = t;
		cr_assert_eq(pthread_create(&threads[t], NULL, appender_main, &appenders[t]), 0);
	}
	for (uint32_t t = 0; t < THREAD_COUNT; t++) {
		void *result;
		pthread_join(threads[t], &result);
		cr_assert_null(result, "thread %u failed", t);
	}
	const uint64_t total = THREAD_COUNT * THREAD_RECORDS;
	static uint64_t all[THREAD_COUNT * THREAD_RECORDS];
	for (uint32_t t = 0; t < THREAD_COUNT; t++)
		memcpy(all + t * THREAD_RECORDS, appenders[t].lsns, sizeof appenders[t].lsns);
	qsort(all, total, sizeof all[0], compare_u64);
	for (uint64_t i = 0; i < total; i++)
		cr_assert_eq(all[i], i + 1, "LSNs are exactly 1..%" PRIu64, total);
	cr_assert_eq(wal_durable_lsn(w), total);

	wal_stats st;
	wal_get_stats(w, &st);
	fault_io_counts counts;
	fault_io_counts_get(f, &counts);
	cr_assert_eq(st.fsync_count, counts.fsync_count + counts.fsync_dir_count,
		     "the WAL counts every fsync it issues");
	cr_assert_lt(st.fsync_count, total, "group commit: %" PRIu64 " fsyncs for %" PRIu64
		     " records", st.fsync_count, total);
	cr_assert_eq(wal_close(w), 0);
	fault_io_destroy(f);

	replay_log log = {0};
	w = open_ok(NULL, dir.path, NULL, 0, &log);
	cr_assert_eq(log.count, total);
	uint32_t next_seq[THREAD_COUNT] = {0};
	for (size_t i = 0; i < log.count; i++) {
		const replayed *r = &log.items[i];
		uint32_t t, seq;
		cr_assert_eq(r->lsn, i + 1);
		cr_assert_eq(r->size, 40);
		memcpy(&t, r->payload, 4);
		memcpy(&seq, r->payload + 4, 4);
		cr_assert_lt(t, THREAD_COUNT);
		cr_assert_eq(r->type, t);
		cr_assert_eq(seq, next_seq[t], "thread %u's records replay in its order", t);
		cr_assert_eq(appenders[t].lsns[seq], r->lsn);
		next_seq[t]++;
	}
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	test_dir_remove(&dir);
}

Test(wal_durable, group_commit_window_gathers_records_into_one_fsync,
     .description = "with a window, the writer waits (on io->now_us) before writing: nothing is "
		    "durable while the clock stands still, then one write and one fdatasync")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	fault_io *f = fault_io_create();
	fault_io_clock_set_us(f, 1000000);
	wal_options options = {.group_commit_window_us = 50000};
	wal *w = open_ok(fault_io_table(f), dir.path, &options, 0, NULL);
	cr_assert_eq(append_records(w, 100), 100);
	struct timespec pause = {.tv_nsec = 100 * 1000 * 1000};
	nanosleep(&pause, NULL);
	cr_assert_eq(wal_durable_lsn(w), 0, "the window has not passed on the io clock");
	fault_io_counts counts;
	fault_io_counts_get(f, &counts);
	cr_assert_eq(counts.pwrite_count, 0);
	fault_io_clock_advance_us(f, 50000);
	cr_assert_eq(wal_wait_durable(w, 100), 0);
	fault_io_counts_get(f, &counts);
	/* Header write + fdatasync + directory fsync, then one write and one fdatasync. */
	cr_assert_eq(counts.pwrite_count, 2);
	cr_assert_eq(counts.fsync_count, 2);
	cr_assert_eq(counts.fsync_dir_count, 1);
	cr_assert_eq(wal_close(w), 0);
	fault_io_destroy(f);
	test_dir_remove(&dir);
}

typedef struct big_appender {
	wal *w;
	int failures;
} big_appender;

static void *big_appender_main(void *arg)
{
	big_appender *a = arg;
	static uint8_t payload[1000];
	for (int i = 0; i < 300; i++) {
		uint64_t lsn;
		if (wal_append(a->w, 9, payload, sizeof payload, &lsn))
			a->failures++;
	}
	return NULL;
}

Test(wal_durable, small_buffer_blocks_appenders_without_losing_records,
     .description = "buffer_bytes_max applies back-pressure; a record larger than the buffer "
		    "still goes through; close drains everything pending")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	wal_options options = {.buffer_bytes_max = 4096};
	wal *w = open_ok(NULL, dir.path, &options, 0, NULL);
	big_appender a[2] = {{.w = w}, {.w = w}};
	pthread_t threads[2];
	for (int t = 0; t < 2; t++)
		cr_assert_eq(pthread_create(&threads[t], NULL, big_appender_main, &a[t]), 0);
	for (int t = 0; t < 2; t++)
		pthread_join(threads[t], NULL);
	cr_assert_eq(a[0].failures + a[1].failures, 0);
	uint64_t lsn = append_sized(w, 6000); /* larger than the whole buffer */
	cr_assert_eq(lsn, 601);
	cr_assert_eq(wal_close(w), 0); /* no wait: close must drain */

	replay_log log = {0};
	w = open_ok(NULL, dir.path, NULL, 0, &log);
	cr_assert_eq(log.count, 601);
	cr_assert_eq(log.items[600].size, 6000);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	test_dir_remove(&dir);
}

/* ---- Rotation and retirement -------------------------------------------- */

Test(wal_rotate, files_rotate_at_file_bytes_max,
     .description = "a record that would take a non-empty file past file_bytes_max starts the "
		    "next file; records never span files; a new file after every reopen")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	wal_options options = {.file_bytes_max = 4096};
	wal *w = open_ok(NULL, dir.path, &options, 0, NULL);
	for (int i = 0; i < 10; i++)
		append_sized(w, 1000); /* 1024 bytes each: 3 fit after the 40-byte header */
	append_sized(w, 5000);         /* larger than a file: a file of its own */
	append_sized(w, 8);
	cr_assert_eq(wal_wait_durable(w, 12), 0);
	wal_stats st;
	wal_get_stats(w, &st);
	cr_assert_eq(st.file_count, 6);
	cr_assert_eq(wal_close(w), 0);

	const uint64_t first_lsns[6] = {1, 4, 7, 10, 11, 12};
	const uint64_t counts[6] = {3, 3, 3, 1, 1, 1};
	uint64_t bytes = 0;
	for (uint64_t id = 1; id <= 6; id++) {
		char path[TEST_PATH_SIZE];
		wal_path(path, dir.path, id);
		parsed_file pf;
		parse_file(path, &pf);
		cr_assert_eq(pf.file_id, id);
		cr_assert_eq(pf.first_lsn, first_lsns[id - 1], "file %" PRIu64, id);
		cr_assert_eq(pf.record_count, counts[id - 1], "file %" PRIu64, id);
		cr_assert_eq(pf.lsns[0], pf.first_lsn);
		if (id != 5)
			cr_assert_leq(pf.size, 4096);
		bytes += pf.size;
	}
	cr_assert_eq(bytes, st.bytes);

	w = open_ok(NULL, dir.path, &options, 0, NULL);
	append_sized(w, 8);
	cr_assert_eq(wal_close(w), 0);
	char path[TEST_PATH_SIZE];
	parsed_file pf;
	wal_path(path, dir.path, 7);
	parse_file(path, &pf);
	cr_assert_eq(pf.first_lsn, 13, "after reopen the writer starts a new file");
	wal_path(path, dir.path, 6);
	parse_file(path, &pf);
	cr_assert_eq(pf.record_count, 1, "an old file is never appended to");
	test_dir_remove(&dir);
}

Test(wal_rotate, rotate_returns_next_lsn_which_starts_a_new_file,
     .description = "wal_rotate returns last + 1; that record is the first of a new file, "
		    "earlier ones stay in the old file; rotating twice makes one file")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	wal *w = open_ok(NULL, dir.path, NULL, 0, NULL);
	uint64_t first = 0;
	cr_assert_eq(wal_rotate(w, &first), 0);
	cr_assert_eq(first, 1);
	append_records(w, 5);
	cr_assert_eq(wal_rotate(w, &first), 0);
	cr_assert_eq(first, 6);
	cr_assert_eq(wal_rotate(w, &first), 0);
	cr_assert_eq(first, 6);
	cr_assert_eq(append_records(w, 3), 8);
	cr_assert_eq(wal_rotate(w, &first), 0);
	cr_assert_eq(first, 9);
	cr_assert_eq(wal_close(w), 0);

	char path[TEST_PATH_SIZE];
	parsed_file pf;
	wal_path(path, dir.path, 1);
	parse_file(path, &pf);
	cr_assert_eq(pf.record_count, 5);
	cr_assert_eq(pf.lsns[4], 5);
	wal_path(path, dir.path, 2);
	parse_file(path, &pf);
	cr_assert_eq(pf.first_lsn, 6);
	cr_assert_eq(pf.record_count, 3);
	cr_assert_eq(pf.offsets[0], FILE_HEADER_SIZE);
	cr_assert_eq(pf.lsns[0], 6);
	wal_path(path, dir.path, 3);
	cr_assert(!file_exists(path), "a rotation with no record after it creates no file");
	test_dir_remove(&dir);
}

/* Ten records of 1,000 bytes in files of 4,096, all durable: files 1, 2,
 * 3 (3 records each) and 4 (LSN 10). */
static wal *open_rotated_wal(const char *dir)
{
	wal_options options = {.file_bytes_max = 4096};
	wal *w = open_ok(NULL, dir, &options, 0, NULL);
	for (int i = 0; i < 10; i++)
		append_sized(w, 1000);
	cr_assert_eq(wal_wait_durable(w, 10), 0);
	return w;
}

Test(wal_rotate, retire_removes_exactly_the_older_files,
     .description = "retire_before(lsn) unlinks files whose records are all < lsn, the newest "
		    "only once rotated away from; recovery from the remaining files works")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	wal *w = open_rotated_wal(dir.path);
	char path[TEST_PATH_SIZE];

	cr_assert_eq(wal_retire_before(w, 6, UINT64_MAX), 0); /* file 2 still holds 6 */
	for (uint64_t id = 1; id <= 4; id++) {
		wal_path(path, dir.path, id);
		cr_assert_eq(file_exists(path), id >= 2, "file %" PRIu64, id);
	}
	cr_assert_eq(wal_retire_before(w, 7, UINT64_MAX), 0);
	wal_stats st;
	wal_get_stats(w, &st);
	cr_assert_eq(st.file_count, 2);
	wal_path(path, dir.path, 2);
	cr_assert(!file_exists(path));

	/* Without a rotation the newest file is never retired, even when every
	 * record in it is below the LSN: the writer may still append to it. */
	wal_path(path, dir.path, 4);
	cr_assert_eq(wal_retire_before(w, UINT64_MAX, UINT64_MAX), 0);
	wal_get_stats(w, &st);
	cr_assert_eq(st.file_count, 1, "file 3 goes; file 4 is open for appends and stays");
	cr_assert(file_exists(path));

	/* After wal_rotate the newest file is finished: once everything in it
	 * is durable and below the LSN, it goes too and the directory is empty. */
	uint64_t first = 0;
	cr_assert_eq(wal_rotate(w, &first), 0);
	cr_assert_eq(first, 11);
	cr_assert_eq(wal_retire_before(w, first, UINT64_MAX), 0);
	wal_get_stats(w, &st);
	cr_assert_eq(st.file_count, 0);
	cr_assert(!file_exists(path), "the finished newest file is retired");
	append_sized(w, 100);
	cr_assert_eq(wal_wait_durable(w, 11), 0);
	cr_assert_eq(wal_retire_before(w, 11, UINT64_MAX), 0);
	wal_get_stats(w, &st);
	cr_assert_eq(st.file_count, 1, "file 5 holds LSN 11 and stays");
	wal_path(path, dir.path, 5);
	cr_assert(file_exists(path));
	cr_assert_eq(wal_close(w), 0);

	replay_log log = {0};
	w = open_ok(NULL, dir.path, NULL, 11, &log);
	cr_assert_eq(log.count, 1);
	cr_assert_eq(log.items[0].lsn, 11);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);

	char errmsg[TALLY_ERRMSG_SIZE];
	cr_assert_eq(open_fail(dir.path, 10, errmsg), TALLY_E_CORRUPT);
	wal_path(path, dir.path, 5);
	cr_assert_not_null(strstr(errmsg, path), "%s", errmsg);
	cr_assert_not_null(strstr(errmsg, "missing WAL before file 0000000000000005"), "%s", errmsg);
	test_dir_remove(&dir);
}

Test(wal_rotate, retire_removes_only_files_below_the_id_limit,
     .description = "retire_before(lsn, below) leaves every file whose id is not below the "
		    "limit, the finished newest one included; wal_file_id_next is the id after "
		    "the newest")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	wal *w = open_rotated_wal(dir.path);
	cr_assert_eq(wal_file_id_next(w), 5);
	uint64_t first = 0;
	cr_assert_eq(wal_rotate(w, &first), 0);
	cr_assert_eq(first, 11);

	char path[TEST_PATH_SIZE];
	wal_stats st;
	cr_assert_eq(wal_retire_before(w, first, 3), 0);
	wal_get_stats(w, &st);
	cr_assert_eq(st.file_count, 2, "files 1 and 2 go; 3 is not below the limit");
	for (uint64_t id = 1; id <= 4; id++) {
		wal_path(path, dir.path, id);
		cr_assert_eq(file_exists(path), id >= 3, "file %" PRIu64, id);
	}
	cr_assert_eq(wal_retire_before(w, first, 4), 0);
	wal_get_stats(w, &st);
	cr_assert_eq(st.file_count, 1, "the finished newest file 4 is not below the limit");
	wal_path(path, dir.path, 4);
	cr_assert(file_exists(path));
	cr_assert_eq(wal_retire_before(w, first, 5), 0);
	wal_get_stats(w, &st);
	cr_assert_eq(st.file_count, 0);
	cr_assert(!file_exists(path));
	cr_assert_eq(wal_file_id_next(w), 5, "retirement gives no id back");
	cr_assert_eq(wal_close(w), 0);
	test_dir_remove(&dir);
}

/* Three records in file 1, rotated and retired with the directory emptied;
 * the file's bytes are kept in *old (its records: LSNs 1..3). */
static void make_emptied_wal(const char *dir, uint8_t **old, uint64_t *old_size)
{
	wal *w = open_ok(NULL, dir, NULL, 0, NULL);
	for (int i = 0; i < 3; i++)
		append_sized(w, 200);
	cr_assert_eq(wal_wait_durable(w, 3), 0);
	uint64_t first = 0;
	cr_assert_eq(wal_rotate(w, &first), 0);
	cr_assert_eq(first, 4);
	char path[TEST_PATH_SIZE];
	wal_path(path, dir, 1);
	*old = file_read(path, old_size);
	cr_assert_eq(wal_retire_before(w, first, wal_file_id_next(w)), 0);
	cr_assert(!file_exists(path));
	cr_assert_eq(wal_file_id_next(w), 2);
	cr_assert_eq(wal_close(w), 0);
}

/* Opens dir with replay from LSN 4 and ids from file_id_min, appends LSNs
 * 4 and 5 (in file `expect_id`), closes; then old's records surface past
 * the end of that file, as a stale block of the earlier file would. */
static void append_after_emptied(const char *dir, uint64_t file_id_min, uint64_t expect_id,
				 const uint8_t *old, uint64_t old_size)
{
	wal_options options = {.file_id_min = file_id_min};
	wal *w = open_ok(NULL, dir, &options, 4, NULL);
	cr_assert_eq(append_sized(w, 200), 4);
	cr_assert_eq(append_sized(w, 200), 5);
	cr_assert_eq(wal_close(w), 0);
	char path[TEST_PATH_SIZE];
	wal_path(path, dir, expect_id);
	cr_assert(file_exists(path), "LSNs 4 and 5 are in file %" PRIu64, expect_id);
	uint64_t size = file_size(path);
	int fd = open(path, O_WRONLY | O_APPEND);
	cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
	cr_assert_eq(write(fd, old + FILE_HEADER_SIZE, old_size - FILE_HEADER_SIZE),
		     (ssize_t)(old_size - FILE_HEADER_SIZE));
	close(fd);
	cr_assert_gt(file_size(path), size);
}

Test(wal_rotate, an_emptied_directory_continues_the_ids_given_as_file_id_min,
     .description = "after retirement emptied the directory, file_id_min keeps the next file "
		    "from taking id 1 again, so a stale block of the old file 1 at the new "
		    "file's tail fails its checksum and is truncated as a torn tail; with the "
		    "id reused, the new file's salt alone still tells the block apart")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	uint8_t *old;
	uint64_t old_size;
	make_emptied_wal(dir.path, &old, &old_size);
	append_after_emptied(dir.path, 2, 2, old, old_size);
	char path[TEST_PATH_SIZE];
	wal_path(path, dir.path, 1);
	cr_assert(!file_exists(path), "id 1 is not used again");

	replay_log log = {0};
	wal_options options = {.file_id_min = 3};
	wal *w = open_ok(NULL, dir.path, &options, 4, &log);
	cr_assert_eq(log.count, 2, "LSNs 4 and 5 replay; the old records are a torn tail");
	cr_assert_eq(log.items[0].lsn, 4);
	cr_assert_eq(log.items[1].lsn, 5);
	cr_assert_eq(log.items[1].size, 200, "the last record is whole");
	cr_assert_eq(wal_file_id_next(w), 3);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	test_dir_remove(&dir);

	/* Without file_id_min (a caller that kept no mark), the id starts again
	 * at 1. Version 1 seeded checksums with the id alone, and the stale
	 * block passed as a record out of place; the salts differ, so it
	 * fails its checksum like any torn tail. */
	test_dir_make(&dir, "wal");
	free(old);
	make_emptied_wal(dir.path, &old, &old_size);
	append_after_emptied(dir.path, 0, 1, old, old_size);
	w = open_ok(NULL, dir.path, NULL, 4, &log);
	cr_assert_eq(log.count, 2, "LSNs 4 and 5 replay; the old records are a torn tail");
	cr_assert_eq(log.items[1].lsn, 5);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	free(old);
	test_dir_remove(&dir);
}

/* open_rotated_wal's files, closed. */
static void make_rotated_wal(const char *dir)
{
	cr_assert_eq(wal_close(open_rotated_wal(dir)), 0);
}

Test(wal_rotate, file_id_min_below_the_ids_found_changes_nothing,
     .description = "the next file's id is the larger of file_id_min and the id after every "
		    "file found")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_rotated_wal(dir.path); /* files 1..4 */
	wal_options options = {.file_id_min = 2};
	wal *w = open_ok(NULL, dir.path, &options, 1, NULL);
	cr_assert_eq(wal_file_id_next(w), 5);
	cr_assert_eq(wal_close(w), 0);
	options.file_id_min = 9;
	w = open_ok(NULL, dir.path, &options, 1, NULL);
	cr_assert_eq(wal_file_id_next(w), 9);
	cr_assert_eq(append_sized(w, 100), 11);
	cr_assert_eq(wal_wait_durable(w, 11), 0);
	cr_assert_eq(wal_file_id_next(w), 10);
	cr_assert_eq(wal_close(w), 0);
	char path[TEST_PATH_SIZE];
	wal_path(path, dir.path, 9);
	cr_assert(file_exists(path));
	replay_log log = {0};
	w = open_ok(NULL, dir.path, NULL, 1, &log);
	cr_assert_eq(log.count, 11, "files 1..4 and 9 chain: ids may skip, LSNs may not");
	cr_assert_eq(wal_file_id_next(w), 10);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	test_dir_remove(&dir);
}

Test(wal_rotate, a_missing_middle_file_is_corruption,
     .description = "a gap between files is named with the file that follows it")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_rotated_wal(dir.path);
	char path[TEST_PATH_SIZE];
	wal_path(path, dir.path, 2);
	cr_assert_eq(unlink(path), 0);
	char errmsg[TALLY_ERRMSG_SIZE];
	cr_assert_eq(open_fail(dir.path, 1, errmsg), TALLY_E_CORRUPT);
	wal_path(path, dir.path, 3);
	cr_assert_not_null(strstr(errmsg, path), "%s", errmsg);
	cr_assert_not_null(strstr(errmsg, "starts at LSN 7 but the previous file ends at LSN 3"),
			   "%s", errmsg);
	problems p = {0};
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 0, 1, problem_collect, &p), 1);
	/* With the manifest's replay LSN known, a gap below it is not needed
	 * (recovery accepts it), and a first file after it is missing WAL. */
	problems q = {0};
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 7, 1, problem_collect, &q), 0);
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 5, 1, problem_collect, &q), 1);
	wal_path(path, dir.path, 1);
	cr_assert_eq(unlink(path), 0);
	problems r = {0};
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 7, 1, problem_collect, &r), 0);
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 5, 1, problem_collect, &r), 1,
		     "replay from LSN 5 but the oldest file starts at LSN 7");
	test_dir_remove(&dir);
}

Test(wal_rotate, a_file_named_with_the_largest_id_is_corruption,
     .description = "a file ffffffffffffffff.wal, here a torn creation (one block of zeros), "
		    "refuses the open by name: no id can follow it (the next would wrap to 0) and "
		    "the writer never makes one; verify reports it and checks the rest")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_rotated_wal(dir.path);
	char path[TEST_PATH_SIZE];
	wal_path(path, dir.path, UINT64_MAX);
	static const uint8_t zeros[DIRECT_BLOCK];
	file_write(path, zeros, sizeof zeros);
	char errmsg[TALLY_ERRMSG_SIZE];
	cr_assert_eq(open_fail(dir.path, 1, errmsg), TALLY_E_CORRUPT);
	char want[TEST_PATH_SIZE + 64];
	snprintf(want, sizeof want, "%s: file id out of range", path);
	cr_assert_not_null(strstr(errmsg, want), "%s", errmsg);
	cr_assert(file_exists(path), "the refused open removed %s", path);
	problems p = {0};
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 0, 1, problem_collect, &p), 1);
	cr_assert_not_null(strstr(p.first, want), "%s", p.first);
	cr_assert_eq(unlink(path), 0);
	wal *w = open_ok(NULL, dir.path, NULL, 0, NULL);
	cr_assert_eq(wal_last_lsn(w), 10);
	append_sized(w, 100);
	cr_assert_eq(wal_wait_durable(w, 11), 0);
	cr_assert_eq(wal_close(w), 0);
	wal_path(path, dir.path, 4);
	cr_assert(file_exists(path), "the next file is 4");
	test_dir_remove(&dir);
}

Test(wal_rotate, a_file_copied_under_another_files_name_is_corruption,
     .description = "a misdirected WAL file (file 2's bytes named as file 3) is refused at "
		    "its header, naming both ids; verify reports it too")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_rotated_wal(dir.path);
	char path2[TEST_PATH_SIZE], path3[TEST_PATH_SIZE], errmsg[TALLY_ERRMSG_SIZE];
	wal_path(path2, dir.path, 2);
	wal_path(path3, dir.path, 3);
	file_copy(path2, path3);
	cr_assert_eq(open_fail(dir.path, 0, errmsg), TALLY_E_CORRUPT);
	char expect[TEST_PATH_SIZE + 128];
	snprintf(expect, sizeof expect, "%s offset 0: header names file id 0000000000000002", path3);
	cr_assert_not_null(strstr(errmsg, expect), "%s", errmsg);
	cr_assert_not_null(strstr(errmsg, "expected file id 0000000000000003"), "%s", errmsg);
	problems p = {0};
	cr_assert_geq(wal_verify(tally_io_default(), dir.path, 0, 1, problem_collect, &p), 1);
	test_dir_remove(&dir);
}

Test(wal_rotate, a_file_overlapping_the_previous_one_is_corruption,
     .description = "a file whose header's first LSN is inside the previous file's range is "
		    "refused at offset 24, naming both LSNs")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_rotated_wal(dir.path);
	char path[TEST_PATH_SIZE], errmsg[TALLY_ERRMSG_SIZE];
	wal_path(path, dir.path, 3);
	parsed_file pf;
	parse_file(path, &pf);
	cr_assert_eq(pf.first_lsn, 7);
	/* First LSN 6, with the header checksum made again. */
	uint8_t header[FILE_HEADER_SIZE];
	uint64_t size;
	uint8_t *data = file_read(path, &size);
	memcpy(header, data, sizeof header);
	free(data);
	uint64_t lsn = 6;
	memcpy(header + 24, &lsn, 8);
	header_v2_checksum_set(header);
	file_write_at(path, 0, header, sizeof header);
	cr_assert_eq(open_fail(dir.path, 0, errmsg), TALLY_E_CORRUPT);
	char expect[TEST_PATH_SIZE + 128];
	snprintf(expect, sizeof expect,
		 "%s offset 24: first LSN 6 overlaps the previous file, which ends at LSN 6", path);
	cr_assert_not_null(strstr(errmsg, expect), "%s", errmsg);
	problems p = {0};
	cr_assert_geq(wal_verify(tally_io_default(), dir.path, 0, 1, problem_collect, &p), 1);
	test_dir_remove(&dir);
}

/* ---- Torn tails ----------------------------------------------------------- */

/* In dir `to`, a copy of dir `from`'s file 1. */
static void copy_wal_file(const char *from, const char *to)
{
	char a[TEST_PATH_SIZE], b[TEST_PATH_SIZE];
	wal_path(a, from, 1);
	wal_path(b, to, 1);
	file_copy(a, b);
}

Test(wal_recovery, torn_tail_at_every_byte_of_the_last_record,
     .description = "for every truncation inside the last record, recovery replays all earlier "
		    "records, truncates the file to the last record's start and continues the LSNs")
{
	test_dir source;
	test_dir_make(&source, "wal");
	make_wal(source.path, 7); /* LSN 7 has 259 bytes of payload: a 288-byte record */
	char path[TEST_PATH_SIZE];
	wal_path(path, source.path, 1);
	parsed_file pf;
	parse_file(path, &pf);
	cr_assert_eq(pf.record_count, 7);
	uint64_t start = pf.offsets[6], end = pf.size;
	cr_assert_eq(end - start, record_size(payload_size_for(7)));

	for (uint64_t length = start; length < end; length++) {
		test_dir dir;
		test_dir_make(&dir, "wal");
		copy_wal_file(source.path, dir.path);
		wal_path(path, dir.path, 1);
		file_truncate(path, length);
		replay_log log = {0};
		wal *w = open_ok(NULL, dir.path, NULL, 0, &log);
		replay_log_expect(&log, 1, 6);
		cr_assert_eq(file_size(path), start, "truncated at %" PRIu64, length);
		cr_assert_eq(wal_last_lsn(w), 6);
		cr_assert_eq(wal_close(w), 0);
		replay_log_free(&log);
		test_dir_remove(&dir);
	}
	test_dir_remove(&source);
}

typedef enum garbage_kind {
	GARBAGE_ZEROS,
	GARBAGE_RANDOM,
	GARBAGE_ONES,
} garbage_kind;

/* Overwrites bytes [from, to) of path; returns true if any byte below
 * `changed_before` changed. */
static bool file_garble(const char *path, uint64_t from, uint64_t to, garbage_kind kind,
			uint64_t seed, uint64_t changed_before)
{
	uint8_t buf[8192];
	cr_assert_leq(to - from, sizeof buf);
	for (uint64_t i = 0; i < to - from; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		buf[i] = kind == GARBAGE_ZEROS ? 0 : kind == GARBAGE_ONES ? 0xff
									: (uint8_t)(seed >> 56);
	}
	uint64_t size;
	uint8_t *old = file_read(path, &size);
	bool changed = false;
	for (uint64_t i = from; i < to && i < size && i < changed_before; i++)
		changed |= old[i] != buf[i - from];
	free(old);
	file_write_at(path, from, buf, to - from);
	return changed;
}

Test(wal_recovery, torn_tail_with_garbage_instead_of_data,
     .description = "the last record partly overwritten with zeros, 0xff or random bytes from "
		    "any offset is a torn tail: truncated to its start")
{
	test_dir source;
	test_dir_make(&source, "wal");
	make_wal(source.path, 7);
	char path[TEST_PATH_SIZE];
	wal_path(path, source.path, 1);
	parsed_file pf;
	parse_file(path, &pf);
	uint64_t start = pf.offsets[6], end = pf.size;

	for (int kind = GARBAGE_ZEROS; kind <= GARBAGE_ONES; kind++) {
		for (uint64_t from = start; from < end; from += 5) {
			test_dir dir;
			test_dir_make(&dir, "wal");
			copy_wal_file(source.path, dir.path);
			wal_path(path, dir.path, 1);
			/* Garbage from `from` to the end, and a little beyond it. */
			bool changed = file_garble(path, from, end + 64, (garbage_kind)kind,
						   from * 3 + (uint64_t)kind, end);
			replay_log log = {0};
			wal *w = open_ok(NULL, dir.path, NULL, 0, &log);
			/* Zeros over zero padding leave the record whole. */
			replay_log_expect(&log, 1, changed ? 6 : 7);
			cr_assert_eq(file_size(path), changed ? start : end, "kind %d from %" PRIu64,
				     kind, from);
			cr_assert(changed || (kind == GARBAGE_ZEROS &&
					      from >= start + RECORD_HEADER_SIZE + payload_size_for(7)));
			cr_assert_eq(wal_close(w), 0);
			replay_log_free(&log);
			test_dir_remove(&dir);
		}
	}
	test_dir_remove(&source);
}

Test(wal_recovery, zero_extension_after_the_last_record_is_truncated,
     .description = "a file extended with zeros past its last complete record (size updated, "
		    "data not written) keeps every record and loses the zeros")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_wal(dir.path, 7);
	char path[TEST_PATH_SIZE];
	wal_path(path, dir.path, 1);
	uint64_t end = file_size(path);
	file_truncate(path, end + 4096);
	problems p = {0};
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 0, 0, problem_collect, &p), 0);
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 0, 1, problem_collect, &p), 1);
	cr_assert_not_null(strstr(p.last, "torn tail"), "%s", p.last);
	cr_assert_eq(file_size(path), end + 4096, "verify never truncates");
	replay_log log = {0};
	wal *w = open_ok(NULL, dir.path, NULL, 0, &log);
	replay_log_expect(&log, 1, 7);
	cr_assert_eq(file_size(path), end);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	test_dir_remove(&dir);
}

Test(wal_recovery, torn_header_of_the_newest_file_is_removed,
     .description = "a newest file shorter than its header, or with a bad header and nothing "
		    "but zeros after it, holds no records and is removed")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_wal(dir.path, 4);
	char path[TEST_PATH_SIZE];
	wal_path(path, dir.path, 2);
	file_write(path, "TLYWAL01\x01\0\0", 11);
	replay_log log = {0};
	wal *w = open_ok(NULL, dir.path, NULL, 0, &log);
	replay_log_expect(&log, 1, 4);
	cr_assert(!file_exists(path));
	cr_assert_eq(append_records(w, 1), 5);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	wal_path(path, dir.path, 3);
	parsed_file pf;
	parse_file(path, &pf);
	cr_assert_eq(pf.first_lsn, 5, "ids of removed files are not reused");

	uint8_t zeros[200] = {0};
	wal_path(path, dir.path, 4);
	file_write(path, zeros, sizeof zeros);
	w = open_ok(NULL, dir.path, NULL, 0, &log);
	replay_log_expect(&log, 1, 5);
	cr_assert(!file_exists(path));
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	test_dir_remove(&dir);
}

Test(wal_recovery, bad_header_with_data_after_it_is_corruption,
     .description = "a damaged header is corruption when the file holds data or is not the "
		    "newest")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_wal(dir.path, 4);
	char path[TEST_PATH_SIZE], errmsg[TALLY_ERRMSG_SIZE];
	wal_path(path, dir.path, 1);
	file_garble(path, 30, 31, GARBAGE_ONES, 0, 0); /* inside the checksummed first LSN */
	cr_assert_eq(open_fail(dir.path, 0, errmsg), TALLY_E_CORRUPT);
	cr_assert_not_null(strstr(errmsg, path), "%s", errmsg);
	cr_assert_not_null(strstr(errmsg, "offset 0: header checksum mismatch"), "%s", errmsg);
	test_dir_remove(&dir);
}

Test(wal_recovery, unknown_format_version_is_refused,
     .description = "a header with a version other than 1 or 2 is TALLY_E_VERSION")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_wal(dir.path, 2);
	char path[TEST_PATH_SIZE], errmsg[TALLY_ERRMSG_SIZE];
	wal_path(path, dir.path, 1);
	uint64_t size;
	uint8_t *data = file_read(path, &size);
	data[8] = 3;
	header_v2_checksum_set(data);
	file_write(path, data, size);
	free(data);
	cr_assert_eq(open_fail(dir.path, 0, errmsg), TALLY_E_VERSION);
	cr_assert_not_null(strstr(errmsg, path), "%s", errmsg);
	cr_assert_not_null(strstr(errmsg, "offset 8: format version 3, this build reads versions 1 "
					  "and 2"), "%s", errmsg);
	test_dir_remove(&dir);
}

/* ---- Corruption ------------------------------------------------------------ */

/* A new directory with a WAL of 10 records (LSNs 1..10) in file 1: its
 * path (TEST_PATH_SIZE) and its parsed layout. */
static void ten_record_wal(test_dir *dir, char *path, parsed_file *pf)
{
	test_dir_make(dir, "wal");
	make_wal(dir->path, 10);
	wal_path(path, dir->path, 1);
	parse_file(path, pf);
}

Test(wal_corruption, flipped_bit_in_a_middle_record_names_file_and_offset,
     .description = "a bad record followed by valid ones is corruption, reported with the file, "
		    "the bad record's exact offset and where valid records resume; verify agrees")
{
	test_dir dir;
	char path[TEST_PATH_SIZE], errmsg[TALLY_ERRMSG_SIZE], expect[256];
	parsed_file pf;
	ten_record_wal(&dir, path, &pf);
	uint64_t bad = pf.offsets[4]; /* LSN 5 */
	uint64_t size;
	uint8_t *data = file_read(path, &size);
	data[bad + RECORD_HEADER_SIZE + 3] ^= 0x10;
	file_write(path, data, size);

	cr_assert_eq(open_fail(dir.path, 0, errmsg), TALLY_E_CORRUPT);
	snprintf(expect, sizeof expect, "%s offset %" PRIu64 ": checksum mismatch", path, bad);
	cr_assert_not_null(strstr(errmsg, expect), "%s", errmsg);
	snprintf(expect, sizeof expect, "valid records follow at offset %" PRIu64 " (LSN 6)",
		 pf.offsets[5]);
	cr_assert_not_null(strstr(errmsg, expect), "%s", errmsg);
	cr_assert_eq(file_size(path), size, "corruption is never truncated away");

	problems p = {0};
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 0, 1, problem_collect, &p), 1);
	cr_assert_str_eq(p.first, errmsg);

	/* The same flip in the LSN field. */
	data[bad + RECORD_HEADER_SIZE + 3] ^= 0x10;
	data[bad + 8] ^= 0x01;
	file_write(path, data, size);
	cr_assert_eq(open_fail(dir.path, 0, errmsg), TALLY_E_CORRUPT);
	snprintf(expect, sizeof expect, "%s offset %" PRIu64 ": checksum mismatch", path, bad);
	cr_assert_not_null(strstr(errmsg, expect), "%s", errmsg);
	free(data);
	test_dir_remove(&dir);
}

Test(wal_corruption, reserved_bytes_or_padding_not_zero_is_corruption,
     .description = "a middle record whose reserved header bytes are not zero (its checksum made "
		    "again) or whose padding is not zero (padding is outside the checksum) is "
		    "corruption, named with its offset and the reason; valid records follow it")
{
	test_dir dir;
	char path[TEST_PATH_SIZE], errmsg[TALLY_ERRMSG_SIZE], expect[256];
	parsed_file pf;
	ten_record_wal(&dir, path, &pf);
	uint64_t bad = pf.offsets[4]; /* LSN 5 */
	size_t payload = payload_size_for(5);
	cr_assert_neq(payload % 8, 0, "LSN 5's record has padding");
	uint64_t size;
	uint8_t *good = file_read(path, &size), *data = malloc(size);
	cr_assert_not_null(data);
	static const struct {
		size_t at;          /* within the record */
		bool rechecksum;    /* the byte is under the checksum */
		const char *reason;
	} cases[] = {
		{21, true, "non-zero reserved bytes in the record header"},
		{23, true, "non-zero reserved bytes in the record header"},
		{RECORD_HEADER_SIZE, false, "non-zero padding after the payload"}, /* + payload below */
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		memcpy(data, good, size);
		uint8_t *rec = data + bad;
		size_t at = cases[k].at + (cases[k].rechecksum ? 0 : payload);
		rec[at] = 0x5a;
		if (cases[k].rechecksum) {
			uint64_t sum = XXH3_64bits_withSeed(rec + 8, 16 + payload, pf.seed);
			for (int i = 0; i < 8; i++)
				rec[i] = (uint8_t)(sum >> (8 * i));
		}
		file_write(path, data, size);
		cr_assert_eq(open_fail(dir.path, 0, errmsg), TALLY_E_CORRUPT, "case %zu", k);
		snprintf(expect, sizeof expect, "%s offset %" PRIu64 ": %s", path, bad, cases[k].reason);
		cr_expect_not_null(strstr(errmsg, expect), "case %zu: %s", k, errmsg);
		snprintf(expect, sizeof expect, "valid records follow at offset %" PRIu64 " (LSN 6)",
			 pf.offsets[5]);
		cr_expect_not_null(strstr(errmsg, expect), "case %zu: %s", k, errmsg);
	}
	file_write(path, good, size);
	wal *w = open_ok(NULL, dir.path, NULL, 0, NULL);
	cr_assert_eq(wal_close(w), 0);
	free(data);
	free(good);
	test_dir_remove(&dir);
}

Test(wal_corruption, bad_last_record_of_an_older_file_is_not_a_torn_tail,
     .description = "only the newest file may end torn")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	make_wal(dir.path, 5);
	wal *w = open_ok(NULL, dir.path, NULL, 0, NULL);
	append_records(w, 2); /* file 2: LSNs 6, 7 */
	cr_assert_eq(wal_close(w), 0);
	char path[TEST_PATH_SIZE], errmsg[TALLY_ERRMSG_SIZE], expect[256];
	wal_path(path, dir.path, 1);
	parsed_file pf;
	parse_file(path, &pf);
	file_truncate(path, pf.size - 3);
	cr_assert_eq(open_fail(dir.path, 0, errmsg), TALLY_E_CORRUPT);
	snprintf(expect, sizeof expect, "%s offset %" PRIu64 ":", path, pf.offsets[4]);
	cr_assert_not_null(strstr(errmsg, expect), "%s", errmsg);
	cr_assert_not_null(strstr(errmsg, "not the newest WAL file"), "%s", errmsg);
	test_dir_remove(&dir);
}

Test(wal_corruption, misdirected_record_reports_expected_and_found_lsn,
     .description = "an earlier record's bytes written over a later one's place: the checksum "
		    "holds, the LSN does not; open fails naming offset and both LSNs")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	wal *w = open_ok(NULL, dir.path, NULL, 0, NULL);
	for (int i = 0; i < 10; i++)
		append_sized(w, 100);
	cr_assert_eq(wal_close(w), 0);
	char path[TEST_PATH_SIZE], errmsg[TALLY_ERRMSG_SIZE], expect[256];
	wal_path(path, dir.path, 1);
	parsed_file pf;
	parse_file(path, &pf);
	uint64_t size;
	uint8_t *data = file_read(path, &size);
	memcpy(data + pf.offsets[6], data + pf.offsets[2], pf.sizes[2]); /* LSN 3 over LSN 7 */
	file_write(path, data, size);
	free(data);

	cr_assert_eq(open_fail(dir.path, 0, errmsg), TALLY_E_CORRUPT);
	snprintf(expect, sizeof expect, "%s offset %" PRIu64 ": record has LSN 3, expected LSN 7",
		 path, pf.offsets[6]);
	cr_assert_not_null(strstr(errmsg, expect), "%s", errmsg);
	problems p = {0};
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 0, 1, problem_collect, &p), 1);
	cr_assert_str_eq(p.first, errmsg);

	/* In the last position too: a valid checksum is never a torn tail. */
	test_dir_remove(&dir);
	test_dir_make(&dir, "wal");
	w = open_ok(NULL, dir.path, NULL, 0, NULL);
	for (int i = 0; i < 10; i++)
		append_sized(w, 100);
	cr_assert_eq(wal_close(w), 0);
	wal_path(path, dir.path, 1);
	data = file_read(path, &size);
	memcpy(data + pf.offsets[9], data + pf.offsets[8], pf.sizes[8]);
	file_write(path, data, size);
	free(data);
	cr_assert_eq(open_fail(dir.path, 0, errmsg), TALLY_E_CORRUPT);
	cr_assert_not_null(strstr(errmsg, "record has LSN 9, expected LSN 10"), "%s", errmsg);
	test_dir_remove(&dir);
}

Test(wal_corruption, record_copied_from_another_file_fails_its_checksum,
     .description = "the checksum is seeded with the file id: the same LSN, type and payload "
		    "from a file with another id does not verify")
{
	test_dir a, b;
	test_dir_make(&a, "wal");
	test_dir_make(&b, "wal");
	make_wal(a.path, 10);
	/* In b, a torn file 1 is removed, so the records 1.. go to file 2. */
	char path_a[TEST_PATH_SIZE], path_b[TEST_PATH_SIZE], errmsg[TALLY_ERRMSG_SIZE];
	char expect[256];
	wal_path(path_b, b.path, 1);
	file_write(path_b, "TLYW", 4);
	make_wal(b.path, 10);
	wal_path(path_a, a.path, 1);
	wal_path(path_b, b.path, 2);
	parsed_file pa, pb;
	parse_file(path_a, &pa);
	parse_file(path_b, &pb);
	cr_assert_eq(pb.file_id, 2);
	cr_assert_eq(pb.first_lsn, 1);

	uint64_t size_a, size_b;
	uint8_t *data_a = file_read(path_a, &size_a);
	uint8_t *data_b = file_read(path_b, &size_b);
	cr_assert_eq(size_a, size_b);
	uint64_t at = pa.offsets[4];
	cr_assert_eq(memcmp(data_a + at + 8, data_b + at + 8, pa.sizes[4] - 8), 0,
		     "the records differ only in their checksums");
	cr_assert_neq(memcmp(data_a + at, data_b + at, 8), 0);
	memcpy(data_a + at, data_b + at, pa.sizes[4]);
	file_write(path_a, data_a, size_a);
	free(data_a);
	free(data_b);

	cr_assert_eq(open_fail(a.path, 0, errmsg), TALLY_E_CORRUPT);
	snprintf(expect, sizeof expect, "%s offset %" PRIu64 ": checksum mismatch", path_a, at);
	cr_assert_not_null(strstr(errmsg, expect), "%s", errmsg);
	test_dir_remove(&a);
	test_dir_remove(&b);
}

/* ---- Records forged inside a payload -------------------------------------- */

/*
 * What a tenant can put inside a record's payload without reading the disk:
 * a whole record of its own, with an empty payload (24 bytes: the store
 * packs a 64-digit hex event id into 32 raw bytes, docs/codecs.md), laid out
 * as docs/formats.md says, for a guessed LSN and file id (small numbers),
 * checksummed with the only seed a tenant can know, the file id (the
 * version 1 record checksum). Writes it at `at`.
 */
static void forged_record_put(uint8_t *at, uint64_t file_id, uint64_t lsn)
{
	memset(at, 0, RECORD_HEADER_SIZE);
	memcpy(at + 8, &lsn, 8);
	at[20] = 1; /* the store's batch record type */
	uint64_t sum = XXH3_64bits_withSeed(at + 8, 16, file_id);
	memcpy(at, &sum, 8);
}

#define FORGED_PAYLOAD_SIZE (3 * DIRECT_BLOCK)

/* Where record 5's payload holds a forged record (multiples of 8, so the
 * forgeries sit at 8-aligned file offsets, where the reader looks): one in
 * each block the record covers, and one at its very end. */
static const size_t forged_offsets[] = {64, DIRECT_BLOCK + 200, 2 * DIRECT_BLOCK + 800,
					FORGED_PAYLOAD_SIZE - RECORD_HEADER_SIZE};

typedef void (*forged_damage_fn)(const char *path, uint64_t start, uint64_t end, uint64_t arg);

/* In a new directory (made in dir), a copy of file 1 of `source` damaged by
 * damage(path, start, end, arg); its path in path. */
static void forged_copy(test_dir *dir, char *path, const char *source, uint64_t start,
			uint64_t end, forged_damage_fn damage, uint64_t arg)
{
	test_dir_make(dir, "wal");
	copy_wal_file(source, dir->path);
	wal_path(path, dir->path, 1);
	damage(path, start, end, arg);
}

/* Checks that record 5 of file 1 of `source`, at [start, end), is a torn
 * tail once damaged as damage(..., arg) says: recovery replays 1..4
 * exactly, cuts the file at start and continues at LSN 5; verify, on
 * another copy, reports a torn tail there and nothing else. */
static void expect_forged_torn_tail(const char *source, uint64_t start, uint64_t end,
				    forged_damage_fn damage, uint64_t arg)
{
	test_dir dir;
	char path[TEST_PATH_SIZE], errmsg[TALLY_ERRMSG_SIZE];
	forged_copy(&dir, path, source, start, end, damage, arg);
	replay_log log = {0};
	wal *w = NULL;
	int rc = wal_open(tally_io_default(), dir.path, NULL, 0, replay_collect, &log, &w, errmsg);
	cr_assert_eq(rc, 0, "damage %" PRIu64 ": wal_open = %d: %s", arg, rc, errmsg);
	replay_log_expect(&log, 1, 4);
	cr_assert_eq(file_size(path), start, "damage %" PRIu64, arg);
	cr_assert_eq(wal_last_lsn(w), 4);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	test_dir_remove(&dir);

	forged_copy(&dir, path, source, start, end, damage, arg);
	problems p = {0};
	int found = wal_verify(tally_io_default(), dir.path, 0, 1, problem_collect, &p);
	cr_assert_eq(found, 1, "damage %" PRIu64 ": %d problems, first: %s", arg, found, p.first);
	char expect[TEST_PATH_SIZE + 64];
	snprintf(expect, sizeof expect, "%s offset %" PRIu64 ": torn tail", path, start);
	cr_assert_not_null(strstr(p.first, expect), "damage %" PRIu64 ": %s", arg, p.first);
	test_dir_remove(&dir);
}

/* A prefix of the record reached the disk: the file ends at `length`. */
static void damage_cut(const char *path, uint64_t start, uint64_t end, uint64_t length)
{
	(void)start;
	(void)end;
	file_truncate(path, length);
}

/* The record's part of block `block` never reached the disk (it reads as
 * zeros, what the file held there before); every other block did. */
static void damage_block_lost(const char *path, uint64_t start, uint64_t end, uint64_t block)
{
	uint64_t from = block * DIRECT_BLOCK, to = from + DIRECT_BLOCK;
	from = from > start ? from : start;
	to = to < end ? to : end;
	file_garble(path, from, to, GARBAGE_ZEROS, 0, 0);
}

Test(wal_recovery, records_forged_inside_a_torn_payload_are_a_torn_tail,
     .description = "a tenant's payload holding records forged with the file id as seed and a "
		    "guessed LSN: when the record holding them is torn (a prefix written, or any "
		    "one of its blocks lost), recovery truncates it as a torn tail and never "
		    "takes a forgery for a record, to replay or to refuse the open over")
{
	test_dir source;
	test_dir_make(&source, "wal");
	wal *w = open_ok(NULL, source.path, NULL, 0, NULL);
	append_records(w, 4);
	static uint8_t payload[FORGED_PAYLOAD_SIZE];
	payload_fill(5, payload, sizeof payload);
	for (size_t i = 0; i < sizeof forged_offsets / sizeof forged_offsets[0]; i++)
		forged_record_put(payload + forged_offsets[i], 1, 5 + i % 2); /* LSN 5 and 6 */
	uint64_t lsn = 0;
	cr_assert_eq(wal_append(w, 1, payload, sizeof payload, &lsn), 0);
	cr_assert_eq(lsn, 5);
	cr_assert_eq(wal_close(w), 0);
	char path[TEST_PATH_SIZE];
	wal_path(path, source.path, 1);
	parsed_file pf;
	parse_file(path, &pf);
	cr_assert_eq(pf.record_count, 5);
	uint64_t start = pf.offsets[4], end = pf.size;

	/* Whole, the forgeries are payload bytes like any other. */
	replay_log log = {0};
	test_dir whole;
	test_dir_make(&whole, "wal");
	copy_wal_file(source.path, whole.path);
	w = open_ok(NULL, whole.path, NULL, 0, &log);
	cr_assert_eq(log.count, 5);
	cr_assert_eq(log.items[4].lsn, 5);
	cr_assert_eq(log.items[4].size, sizeof payload);
	cr_assert_eq(memcmp(log.items[4].payload, payload, sizeof payload), 0);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	test_dir_remove(&whole);

	/* Torn after the first forgery, at 8-aligned and odd lengths. */
	uint64_t first_end = start + RECORD_HEADER_SIZE + forged_offsets[0] + RECORD_HEADER_SIZE;
	for (uint64_t length = first_end; length < end; length += 56)
		expect_forged_torn_tail(source.path, start, end, damage_cut, length);
	expect_forged_torn_tail(source.path, start, end, damage_cut, end - 1);
	/* Any one block lost, the others written (no order between them). */
	for (uint64_t block = start / DIRECT_BLOCK; block * DIRECT_BLOCK < end; block++)
		expect_forged_torn_tail(source.path, start, end, damage_block_lost, block);
	test_dir_remove(&source);
}

/* ---- Headers planted to slow the search down ------------------------------ */

#define PLANT_PAYLOAD_SIZE (64u * 1024u)
#define PLANT_HASH_FACTOR 16u /* wal.c's WAL_SEARCH_HASH_FACTOR, as docs/formats.md says */

/*
 * A WAL of records 1..4 and a fifth whose payload holds `count` record
 * headers 24 bytes apart, from its start: each with LSN 5 (in the search's
 * bound after record 4) and a size reaching the end of the file, and a
 * checksum nobody could have made (a tenant does not know the salt). The
 * fifth record is then bad (its checksum is over other bytes). Its offset
 * in *bad and the file's size in *end; the path in path.
 */
static void planted_wal(test_dir *dir, char *path, size_t count, uint64_t *bad, uint64_t *end)
{
	test_dir_make(dir, "wal");
	wal *w = open_ok(NULL, dir->path, NULL, 0, NULL);
	append_records(w, 4);
	static uint8_t payload[PLANT_PAYLOAD_SIZE];
	memset(payload, 0, sizeof payload);
	uint64_t lsn = 0;
	cr_assert_eq(wal_append(w, 1, payload, sizeof payload, &lsn), 0);
	cr_assert_eq(lsn, 5);
	cr_assert_eq(wal_close(w), 0);
	wal_path(path, dir->path, 1);
	parsed_file pf;
	parse_file(path, &pf);
	*bad = pf.offsets[4];
	*end = pf.size;
	cr_assert_leq(count * RECORD_HEADER_SIZE, sizeof payload);
	for (size_t k = 0; k < count; k++) {
		uint8_t *h = payload + k * RECORD_HEADER_SIZE;
		uint64_t y = *bad + RECORD_HEADER_SIZE + k * RECORD_HEADER_SIZE;
		uint64_t planted_lsn = 5, sum = 0x5eed5eed5eed5eedull + k;
		uint32_t size = (uint32_t)(*end - y - RECORD_HEADER_SIZE);
		memcpy(h, &sum, 8);
		memcpy(h + 8, &planted_lsn, 8);
		memcpy(h + 16, &size, 4);
		h[20] = 1;
	}
	file_write_at(path, *bad + RECORD_HEADER_SIZE, payload, sizeof payload);
}

Test(wal_recovery, planted_headers_stop_the_search_within_its_budget,
     .description = "a torn record whose payload holds thousands of headers in the search's "
		    "LSN bound, each claiming the rest of the file: the search checksums at most "
		    "16 times the bytes after the bad record, then recovery refuses to open and "
		    "verify reports it, naming where it stopped and how many it checked; a few "
		    "such headers are still a torn tail")
{
	test_dir dir;
	char path[TEST_PATH_SIZE], errmsg[TALLY_ERRMSG_SIZE], expect[TEST_PATH_SIZE + 256];
	uint64_t bad, end;
	size_t count = PLANT_PAYLOAD_SIZE / RECORD_HEADER_SIZE;
	planted_wal(&dir, path, count, &bad, &end);

	/* The oracle: candidate k at bad + 24 + 24k claims end - (bad + 24 + 24k)
	 * bytes; the search stops at the first that would pass the budget. */
	uint64_t budget = PLANT_HASH_FACTOR * (end - bad), hashed = 0, checked = 0, stop = 0;
	for (size_t k = 0; k < count; k++) {
		uint64_t y = bad + RECORD_HEADER_SIZE + k * RECORD_HEADER_SIZE;
		if (end - y > budget - hashed) {
			stop = y;
			break;
		}
		hashed += end - y;
		checked++;
	}
	cr_assert_gt(stop, 0, "the plant must exceed the budget");
	cr_assert_gt(checked, 0);

	cr_assert_eq(open_fail(dir.path, 0, errmsg), TALLY_E_CORRUPT);
	snprintf(expect, sizeof expect, "%s offset %" PRIu64 ": checksum mismatch", path, bad);
	cr_assert_not_null(strstr(errmsg, expect), "%s", errmsg);
	snprintf(expect, sizeof expect,
		 "expected LSN 5; the search for valid records after it stopped at offset %" PRIu64
		 " after checksumming %" PRIu64 " candidate records (16 times the %" PRIu64
		 " bytes after it), so a torn tail cannot be told from damage in the middle",
		 stop, checked, end - bad);
	cr_assert_not_null(strstr(errmsg, expect), "%s\nexpected: %s", errmsg, expect);
	cr_assert_eq(file_size(path), end, "a refused open cuts nothing");

	problems p = {0};
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 0, 1, problem_collect, &p), 1,
		     "%s", p.first);
	cr_assert_not_null(strstr(p.first, expect), "%s", p.first);
	test_dir_remove(&dir);

	/* Eight such headers fit the budget: the record is a torn tail. */
	planted_wal(&dir, path, 8, &bad, &end);
	replay_log log = {0};
	wal *w = NULL;
	int rc = wal_open(tally_io_default(), dir.path, NULL, 0, replay_collect, &log, &w, errmsg);
	cr_assert_eq(rc, 0, "wal_open = %d: %s", rc, errmsg);
	replay_log_expect(&log, 1, 4);
	cr_assert_eq(file_size(path), bad);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	test_dir_remove(&dir);
}

Test(wal_verify, clean_directory_has_no_problems_and_verify_is_read_only,
     .description = "verify counts problems; a torn tail counts only when asked; nothing is "
		    "modified")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	wal_options options = {.file_bytes_max = 4096};
	wal *w = open_ok(NULL, dir.path, &options, 0, NULL);
	for (int i = 0; i < 10; i++)
		append_sized(w, 1000);
	cr_assert_eq(wal_close(w), 0);
	problems p = {0};
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 0, 1, problem_collect, &p), 0);
	char path[TEST_PATH_SIZE];
	wal_path(path, dir.path, 4);
	uint64_t size = file_size(path);
	file_truncate(path, size - 100);
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 0, 0, problem_collect, &p), 0);
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 0, 1, problem_collect, &p), 1);
	char expect[256];
	snprintf(expect, sizeof expect, "%s offset %u: torn tail", path, FILE_HEADER_SIZE);
	cr_assert_not_null(strstr(p.last, expect), "%s", p.last);
	cr_assert_eq(file_size(path), size - 100);

	/* Two separate problems in two files are both reported. */
	wal_path(path, dir.path, 1);
	file_garble(path, FILE_HEADER_SIZE + 1030, FILE_HEADER_SIZE + 1031, GARBAGE_ONES, 0, 0);
	wal_path(path, dir.path, 3);
	file_garble(path, FILE_HEADER_SIZE + 30, FILE_HEADER_SIZE + 31, GARBAGE_ONES, 0, 0);
	p = (problems){0};
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 0, 0, problem_collect, &p), 2);
	cr_assert_lt(wal_verify(tally_io_default(), "/nonexistent/tally-wal", 0, 0, problem_collect, &p),
		     0);
	test_dir_remove(&dir);
}

/* ---- Injected failures ------------------------------------------------------ */

/* Checks that replay gave LSNs 1..count, the first `small` from
 * append_records and the rest of payload size `size`. */
static void expect_sized_log(const replay_log *log, size_t count, size_t small, size_t size)
{
	cr_assert_eq(log->count, count);
	replay_log prefix = *log;
	prefix.count = small;
	replay_log_expect(&prefix, 1, small);
	for (size_t i = small; i < count; i++) {
		cr_assert_eq(log->items[i].lsn, i + 1);
		cr_assert_eq(log->items[i].size, size);
	}
}

Test(wal_faults, failed_fsync_is_sticky_and_reopen_recovers_durable_records,
     .description = "fdatasync EIO: the waiter gets -EIO, every later call gets it, close "
		    "returns it; reopening with the real io recovers every durable record")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	fault_io *f = fault_io_create();
	fault_io_path_filter_set(f, ".wal");
	wal *w = open_ok(fault_io_table(f), dir.path, NULL, 0, NULL);
	uint64_t durable = append_records(w, 20);
	cr_assert_eq(wal_wait_durable(w, durable), 0);

	fault_io_fsync_fail_nth(f, 1, EIO);
	uint64_t lsn = append_records(w, 1);
	cr_assert_eq(wal_wait_durable(w, lsn), -EIO);
	cr_assert_eq(wal_error(w), -EIO);
	cr_assert_eq(wal_durable_lsn(w), durable);
	cr_assert_eq(wal_wait_durable(w, durable), 0, "what was durable stays durable");
	uint64_t ignored;
	cr_assert_eq(wal_append(w, 1, "x", 1, &ignored), -EIO);
	cr_assert_eq(wal_rotate(w, &ignored), -EIO);
	fault_io_reset(f); /* the fsync would work now: the WAL must not retry */
	cr_assert_eq(wal_append(w, 1, "x", 1, &ignored), -EIO);
	fault_io_counts before, after;
	fault_io_counts_get(f, &before);
	cr_assert_eq(wal_close(w), -EIO);
	fault_io_counts_get(f, &after);
	cr_assert_eq(after.fsync_count, before.fsync_count, "no fsync after the failure");
	fault_io_destroy(f);

	replay_log log = {0};
	w = open_ok(NULL, dir.path, NULL, 0, &log);
	cr_assert_geq(log.count, durable);
	replay_log_expect(&log, 1, log.count); /* a prefix, all intact */
	cr_assert_eq(append_records(w, 1), log.count + 1);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	char path[TEST_PATH_SIZE];
	wal_path(path, dir.path, 2);
	cr_assert(file_exists(path), "the reopened WAL writes a new file");
	test_dir_remove(&dir);
}

Test(wal_faults, short_writes_are_transparent,
     .description = "every pwrite writing at most 7 bytes (through the page cache) changes "
		    "nothing observable")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	fault_io *f = fault_io_create();
	fault_io_direct_unsupported(f, true);
	fault_io_short_write_set(f, 7);
	wal_options options = {.file_bytes_max = 8192};
	wal *w = open_ok(fault_io_table(f), dir.path, &options, 0, NULL);
	uint64_t lsn = append_records(w, 150);
	cr_assert_eq(wal_wait_durable(w, lsn), 0);
	cr_assert_eq(wal_close(w), 0);
	fault_io_counts counts;
	fault_io_counts_get(f, &counts);
	cr_assert_gt(counts.fault_count, 1000, "short writes really happened");
	fault_io_destroy(f);

	expect_reopen_replays(dir.path, 150);
	problems p = {0};
	cr_assert_eq(wal_verify(tally_io_default(), dir.path, 0, 1, problem_collect, &p), 0);
	test_dir_remove(&dir);
}

Test(wal_faults, disk_full_is_sticky_and_reopen_truncates_the_partial_record,
     .description = "ENOSPC mid-record (through the page cache): the waiter gets -ENOSPC, "
		    "later appends too; reopen replays exactly the acknowledged records and "
		    "truncates the partial one")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	fault_io *f = fault_io_create();
	fault_io_direct_unsupported(f, true);
	fault_io_path_filter_set(f, ".wal");
	wal *w = open_ok(fault_io_table(f), dir.path, NULL, 0, NULL);
	uint64_t acknowledged = append_records(w, 10);
	cr_assert_eq(wal_wait_durable(w, acknowledged), 0);

	fault_io_disk_limit_set(f, 1000);
	int rc = 0;
	for (int i = 0; i < 100 && rc == 0; i++) {
		uint64_t lsn = append_sized(w, 300); /* 328 bytes: the 4th crosses the limit */
		rc = wal_wait_durable(w, lsn);
		if (rc == 0)
			acknowledged = lsn;
	}
	cr_assert_eq(rc, -ENOSPC);
	cr_assert_eq(acknowledged, 13);
	cr_assert_eq(wal_error(w), -ENOSPC);
	uint64_t ignored;
	cr_assert_eq(wal_append(w, 1, "x", 1, &ignored), -ENOSPC);
	cr_assert_eq(wal_close(w), -ENOSPC);
	fault_io_destroy(f);

	char path[TEST_PATH_SIZE];
	wal_path(path, dir.path, 1);
	uint64_t torn_size = file_size(path);
	replay_log log = {0};
	w = open_ok(NULL, dir.path, NULL, 0, &log);
	expect_sized_log(&log, acknowledged, 10, 300);
	cr_assert_eq(wal_close(w), 0);
	parsed_file pf;
	parse_file(path, &pf); /* fails on any partial record */
	cr_assert_eq(pf.record_count, 13);
	cr_assert_eq(pf.size, torn_size - 16, "the 16 bytes of the partial record are gone");
	replay_log_free(&log);
	test_dir_remove(&dir);
}

Test(wal_faults, failed_file_creation_or_directory_fsync_fails_the_wal,
     .description = "a rotation whose create or directory fsync fails is sticky; the records "
		    "meant for the new file are never reported durable; the failed file's id is "
		    "not given again")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	fault_io *f = fault_io_create();
	wal *w = open_ok(fault_io_table(f), dir.path, NULL, 0, NULL);
	uint64_t lsn = append_records(w, 3);
	cr_assert_eq(wal_wait_durable(w, lsn), 0);
	uint64_t first;
	cr_assert_eq(wal_rotate(w, &first), 0);
	fault_io_open_fail(f, "0000000000000002.wal", EACCES);
	cr_assert_eq(wal_file_id_next(w), 2);
	lsn = append_records(w, 1);
	cr_assert_eq(wal_wait_durable(w, lsn), -EACCES);
	cr_assert_eq(wal_durable_lsn(w), 3);
	cr_assert_eq(wal_file_id_next(w), 3, "the failed creation used up id 2");
	cr_assert_eq(wal_close(w), -EACCES);

	fault_io_reset(f);
	w = open_ok(fault_io_table(f), dir.path, NULL, 0, NULL);
	fault_io_fsync_dir_fail(f, EIO);
	lsn = append_records(w, 1);
	cr_assert_eq(lsn, 4);
	cr_assert_eq(wal_wait_durable(w, lsn), -EIO);
	cr_assert_eq(wal_durable_lsn(w), 3);
	cr_assert_eq(wal_close(w), -EIO);
	fault_io_destroy(f);

	expect_reopen_replays(dir.path, 3);
	test_dir_remove(&dir);
}

/* ---- Direct I/O ------------------------------------------------------------ */

Test(wal_direct, writes_whole_blocks_and_a_crash_leaves_a_torn_tail,
     .description = "where the file system has direct I/O the WAL uses it: the open file is "
		    "padded to whole blocks, a copy taken now (a crash) replays every durable "
		    "record and loses its padding, and closing truncates to the exact size")
{
	test_dir dir, crashed;
	test_dir_make(&dir, "wal");
	test_dir_make(&crashed, "wal");
	bool supported = test_dir_direct_io_supported(dir.path);
	wal *w = open_ok(NULL, dir.path, NULL, 0, NULL);
	uint64_t lsn = append_records(w, 40);
	cr_assert_eq(wal_wait_durable(w, lsn), 0);
	wal_stats st;
	wal_get_stats(w, &st);
	cr_assert_eq(st.direct_io, supported, "direct I/O is used where the file system has it");
	char path[TEST_PATH_SIZE];
	wal_path(path, dir.path, 1);
	cr_assert_eq(file_size(path), supported ? block_round_up(st.bytes) : st.bytes);
	if (supported)
		cr_assert_neq(st.bytes % DIRECT_BLOCK, 0, "the records end inside a block");

	copy_wal_file(dir.path, crashed.path);
	replay_log log = {0};
	wal *copy = open_ok(NULL, crashed.path, NULL, 0, &log);
	replay_log_expect(&log, 1, 40);
	char copy_path[TEST_PATH_SIZE];
	wal_path(copy_path, crashed.path, 1);
	cr_assert_eq(file_size(copy_path), st.bytes, "recovery truncated the padding");
	cr_assert_eq(wal_close(copy), 0);
	replay_log_free(&log);

	cr_assert_eq(wal_close(w), 0);
	parsed_file pf;
	parse_file(path, &pf); /* fails on padding */
	cr_assert_eq(pf.record_count, 40);
	cr_assert_eq(pf.size, st.bytes);
	test_dir_remove(&crashed);
	test_dir_remove(&dir);
}

Test(wal_direct, an_older_file_has_its_exact_size_before_the_next_one_is_created,
     .description = "rotating truncates the padding off the file it leaves, so only the "
		    "newest file can end in padding")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	bool supported = test_dir_direct_io_supported(dir.path);
	wal *w = open_ok(NULL, dir.path, NULL, 0, NULL);
	uint64_t lsn = append_records(w, 5);
	cr_assert_eq(wal_wait_durable(w, lsn), 0);
	uint64_t first;
	cr_assert_eq(wal_rotate(w, &first), 0);
	cr_assert_eq(first, 6);
	lsn = append_records(w, 3);
	cr_assert_eq(wal_wait_durable(w, lsn), 0);

	char path[TEST_PATH_SIZE];
	parsed_file pf;
	wal_path(path, dir.path, 1);
	parse_file(path, &pf); /* while the WAL is open: fails on padding */
	cr_assert_eq(pf.record_count, 5);
	wal_path(path, dir.path, 2);
	uint64_t newest = file_size(path);
	cr_assert_eq(newest % DIRECT_BLOCK == 0, supported, "the newest file is padded: %" PRIu64,
		     newest);
	cr_assert_eq(wal_close(w), 0);
	parse_file(path, &pf);
	cr_assert_eq(pf.record_count, 3);
	test_dir_remove(&dir);
}

/* A WAL whose O_DIRECT files the file system refuses, as refuse() sets up
 * on f, writes through the page cache: exact sizes, no stray file, one try. */
static void expect_page_cache_fallback(void (*refuse)(fault_io *, bool))
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	fault_io *f = fault_io_create();
	refuse(f, true);
	wal *w = open_ok(fault_io_table(f), dir.path, NULL, 0, NULL);
	uint64_t lsn = append_records(w, 10);
	cr_assert_eq(wal_wait_durable(w, lsn), 0);
	wal_stats st;
	wal_get_stats(w, &st);
	cr_assert_not(st.direct_io);
	char path[TEST_PATH_SIZE];
	wal_path(path, dir.path, 1);
	cr_assert_eq(file_size(path), st.bytes);
	cr_assert_eq(dir_entry_count(dir.path), 1, "the refused file was removed");
	uint64_t first;
	cr_assert_eq(wal_rotate(w, &first), 0);
	lsn = append_records(w, 2);
	cr_assert_eq(wal_wait_durable(w, lsn), 0);
	fault_io_counts counts;
	fault_io_counts_get(f, &counts);
	cr_assert_eq(counts.fault_count, 1, "O_DIRECT is tried once, not for every file");
	cr_assert_eq(wal_close(w), 0);
	fault_io_destroy(f);

	expect_reopen_replays(dir.path, 12);
	test_dir_remove(&dir);
}

Test(wal_direct, without_direct_io_the_page_cache_is_used,
     .description = "a file system that refuses O_DIRECT (after creating the file) gets the "
		    "file removed and every file written through the page cache, exact in size")
{
	expect_page_cache_fallback(fault_io_direct_unsupported);
}

Test(wal_direct, a_direct_write_refused_as_invalid_falls_back_to_the_page_cache,
     .description = "a file system that opens with O_DIRECT but refuses the first direct "
		    "write with EINVAL (an alignment it does not take) falls back the same way")
{
	expect_page_cache_fallback(fault_io_direct_writes_fail);
}

Test(wal_direct, short_block_writes_are_transparent,
     .description = "direct writes cut to one block each are continued block by block; "
		    "every record replays")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	fault_io *f = fault_io_create();
	fault_io_short_write_set(f, DIRECT_BLOCK);
	wal *w = open_ok(fault_io_table(f), dir.path, NULL, 0, NULL);
	append_records(w, 3);
	uint64_t lsn = 0;
	for (int i = 0; i < 20; i++)
		lsn = append_sized(w, 8000);
	cr_assert_eq(wal_wait_durable(w, lsn), 0);
	cr_assert_eq(wal_close(w), 0);
	fault_io_counts counts;
	fault_io_counts_get(f, &counts);
	cr_assert_geq(counts.fault_count, 20 * 8000 / DIRECT_BLOCK - 1, "short writes happened: %" PRIu64,
		      counts.fault_count);
	fault_io_destroy(f);

	replay_log log = {0};
	w = open_ok(NULL, dir.path, NULL, 0, &log);
	expect_sized_log(&log, 23, 3, 8000);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	test_dir_remove(&dir);
}

Test(wal_direct, disk_full_loses_nothing_acknowledged,
     .description = "the disk fills during direct writes: -ENOSPC is sticky, and reopen "
		    "replays exactly the acknowledged records")
{
	test_dir dir;
	test_dir_make(&dir, "wal");
	fault_io *f = fault_io_create();
	fault_io_path_filter_set(f, ".wal");
	wal *w = open_ok(fault_io_table(f), dir.path, NULL, 0, NULL);
	uint64_t acknowledged = append_records(w, 10);
	cr_assert_eq(wal_wait_durable(w, acknowledged), 0);
	fault_io_disk_limit_set(f, 3 * DIRECT_BLOCK);
	int rc = 0;
	for (int i = 0; i < 200 && rc == 0; i++) {
		uint64_t lsn = append_sized(w, 1500);
		rc = wal_wait_durable(w, lsn);
		if (rc == 0)
			acknowledged = lsn;
	}
	cr_assert_eq(rc, -ENOSPC);
	cr_assert_gt(acknowledged, 10, "some writes fit");
	cr_assert_eq(wal_close(w), -ENOSPC);
	fault_io_destroy(f);

	replay_log log = {0};
	w = open_ok(NULL, dir.path, NULL, 0, &log);
	expect_sized_log(&log, acknowledged, 10, 1500);
	cr_assert_eq(wal_close(w), 0);
	replay_log_free(&log);
	char path[TEST_PATH_SIZE];
	parsed_file pf;
	wal_path(path, dir.path, 1);
	parse_file(path, &pf);
	cr_assert_eq(pf.record_count, acknowledged, "the torn record was truncated away");
	test_dir_remove(&dir);
}
