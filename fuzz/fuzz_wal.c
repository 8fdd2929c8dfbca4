/*
 * fuzz_wal.c — libFuzzer target for crash recovery: a store opened on a
 * WAL whose records all have good checksums and consecutive LSNs, so what
 * reaches the replay is what a writer bug or a crafted file could put in
 * a record's payload.
 *
 * The input is a list of records, each a type byte, a u32 little-endian
 * payload size and the payload (a size past the input's end takes what is
 * left). The target writes them as DIR/wal/0000000000000001.wal (header,
 * LSNs from 1, checksums, padding: docs/formats.md, "WAL") beside an empty
 * MANIFEST, in a fresh directory under /dev/shm, and opens the store
 * without background threads. The replay either refuses the WAL
 * (TALLY_E_CORRUPT, naming the record) or takes it; then the target
 * flushes what it took, closes the store, and runs tally_verify on the
 * directory, then reopens it. A finding is a sanitizer report, a crash,
 * or a replay that was taken and then flushed into files that verify
 * finds damaged, that do not reopen, or that hold other than the events
 * the replay took (the target aborts): whatever a replay accepts, the
 * engine must write consistent files from it and lose none of it.
 *
 * Seeds (fuzz/corpus-wal/) are real WAL records, extracted by
 * fuzz/wal_seed.c from the WAL of a store that was ingested into and not
 * flushed.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "endian.h"
#include "manifest.h"
#include "tally.h"

#define FUZZ_WAL_FILE_ID 1
#define WAL_HEADER_SIZE 40
#define RECORD_HEADER_SIZE 24

static char dir[64];

static void remove_tree(const char *path)
{
	DIR *d = opendir(path);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			char sub[512];
			snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
			struct stat st;
			if (!lstat(sub, &st) && S_ISDIR(st.st_mode))
				remove_tree(sub);
			else
				unlink(sub);
		}
		closedir(d);
	}
	rmdir(path);
}

/* The WAL file of the input's records; 0, or -1 when it cannot be written. */
static int write_wal(const uint8_t *data, size_t size)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/wal", dir);
	if (mkdir(path, 0755))
		return -1;
	snprintf(path, sizeof(path), "%s/wal/%016x.wal", dir, FUZZ_WAL_FILE_ID);
	FILE *out = fopen(path, "wb");
	if (!out)
		return -1;
	uint8_t header[WAL_HEADER_SIZE] = {0};
	memcpy(header, "TLYWAL01", 8);
	le_put_u32(header + 8, 1);
	le_put_u64(header + 16, FUZZ_WAL_FILE_ID);
	le_put_u64(header + 24, 1); /* first LSN */
	le_put_u64(header + 32, XXH3_64bits(header, 32));
	int bad = fwrite(header, 1, sizeof(header), out) != sizeof(header);
	uint8_t *record = NULL;
	size_t at = 0;
	for (uint64_t lsn = 1; at + 5 <= size && !bad; lsn++) {
		uint8_t type = data[at];
		size_t n = le_get_u32(data + at + 1);
		at += 5;
		if (n > size - at)
			n = size - at;
		size_t padded = (n + 7) & ~(size_t)7;
		uint8_t *grown = realloc(record, RECORD_HEADER_SIZE + padded);
		if (!grown) {
			bad = 1;
			break;
		}
		record = grown;
		memset(record, 0, RECORD_HEADER_SIZE + padded);
		le_put_u64(record + 8, lsn);
		le_put_u32(record + 16, (uint32_t)n);
		record[20] = type;
		memcpy(record + RECORD_HEADER_SIZE, data + at, n);
		le_put_u64(record, XXH3_64bits_withSeed(record + 8, 16 + n, FUZZ_WAL_FILE_ID));
		bad = fwrite(record, 1, RECORD_HEADER_SIZE + padded, out) != RECORD_HEADER_SIZE + padded;
		at += n;
	}
	free(record);
	if (fclose(out))
		bad = 1;
	return bad ? -1 : 0;
}

static void problem(void *ctx, const char *message)
{
	(void)ctx;
	fprintf(stderr, "fuzz_wal: verify: %s\n", message);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	snprintf(dir, sizeof(dir), "/dev/shm/fuzz-wal-%d", (int)getpid());
	remove_tree(dir);
	if (mkdir(dir, 0755))
		return 0;
	manifest m;
	memset(&m, 0, sizeof(m));
	m.wal_replay_lsn = 1;
	m.next_file_id = 1;
	char errmsg[TALLY_ERRMSG_SIZE];
	if (manifest_write(tally_io_default(), dir, &m, errmsg) || write_wal(data, size)) {
		remove_tree(dir);
		return 0;
	}
	tally_options o;
	tally_options_default(&o);
	o.background = false;
	tally_store *s = NULL;
	if (!tally_store_open(dir, &o, &s, errmsg)) {
		tally_stats before;
		int rc = tally_store_stats(s, &before);
		int flushed = tally_flush(s);
		int closed = tally_store_close(s);
		if (!rc && !flushed && !closed) {
			int problems = tally_verify(dir, problem, NULL);
			if (problems > 0) {
				fprintf(stderr, "fuzz_wal: the replay was taken, and verify found %d problems in "
					"what the flush wrote\n", problems);
				abort();
			}
			/* Reopened, the store holds in segments exactly what the
			 * replay took, and nothing is left to replay. */
			tally_stats after;
			if (!tally_store_open(dir, &o, &s, errmsg)) {
				rc = tally_store_stats(s, &after);
				if (!rc && (after.segment_rows != before.events_memtable + before.segment_rows ||
					    after.events_memtable != 0)) {
					fprintf(stderr, "fuzz_wal: the replay took %llu events; after the flush and "
						"a reopen %llu are in segments and %llu in memtables\n",
						(unsigned long long)before.events_memtable,
						(unsigned long long)after.segment_rows,
						(unsigned long long)after.events_memtable);
					abort();
				}
				tally_store_close(s);
			} else {
				fprintf(stderr, "fuzz_wal: the flushed store does not reopen: %s\n", errmsg);
				abort();
			}
		}
	}
	remove_tree(dir);
	return 0;
}
