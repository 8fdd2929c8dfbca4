/*
 * inspect.c — offline inspection and verification of a data directory
 * (tally_inspect and tally_verify, declared in tally.h; `tally inspect` and
 * `tally verify` are their command-line faces).
 *
 * NOTES ON THE DESIGN OF INSPECT AND VERIFY
 *
 * 1. Offline only. Both read a directory that no process holds. Before
 *    reading anything they open DIR/LOCK read-only (never creating it: a
 *    directory that is not a store is left untouched) and take the same
 *    exclusive, non-blocking flock as tally_store_open. If a live process
 *    holds it they return TALLY_E_LOCKED at once. Otherwise they keep the
 *    lock until they return, so a store cannot open mid-check and change
 *    what is being read (remove debris, truncate a torn WAL tail, publish a
 *    new manifest); a tallyd started meanwhile gets TALLY_E_LOCKED and says
 *    so. The lock is released (the descriptor closed) on every return path.
 *    A directory without LOCK has never been opened by a store; no process
 *    can hold it, so the check goes on.
 *
 * 2. The engine's own readers do the reading: manifest_read,
 *    segment_file_open (header, trailer, footer checksum and every footer
 *    bound), segment_read_dict and segment_read_rowgroup (block checksum,
 *    zstd, full column decode), wal_verify. This file adds only what the
 *    readers cannot know on their own: the cross-file view (every file the
 *    manifest names exists and its tenants are the manifest's; every file in
 *    segments/ is named by the manifest) and the meaning of decoded rows
 *    (times sorted and inside the segment's footer range, dictionary codes
 *    below the dictionary's size, statuses known).
 *
 * 3. Verify reports every problem, not the first. Each problem message names
 *    the file path and the byte offset of the damaged structure (a block, the
 *    footer, a manifest entry; offset 0 for a whole file). A block that fails
 *    does not hide its neighbours: when a row group does not read, each of
 *    its columns is read alone, so every bad block is named once, and the
 *    good columns are still decoded and checked. Work is bounded: after
 *    VERIFY_FILE_PROBLEMS_MAX problems in one file, one more message says the
 *    rest of that file was skipped, and the check moves to the next file.
 *    Every call of problem_fn counts as one problem, so the count returned
 *    equals the number of messages delivered.
 *
 * 4. What is not a problem. A torn tail in the newest WAL file is the
 *    expected result of a crash during a write; recovery truncates it by
 *    design, so wal_verify is asked not to report it. Nothing else is
 *    forgiven: debris in segments/ (a .tmp of an interrupted flush, a stray
 *    file) is reported as an unreferenced file even though the store deletes
 *    it at open, because an operator should know before the store does.
 *
 * 5. When the check cannot run (the directory is missing or locked, is not a
 *    tally data directory, or memory runs out) tally_verify returns a
 *    negative code, and the last message given to problem_fn just before
 *    says why; that message is not counted as a problem. tally_inspect has an
 *    errmsg for the same purpose.
 *
 * 6. Inspect attributes bytes to columns. A row group stored as one block per
 *    column attributes each block to its column. A packed row group (one
 *    block for all columns) is decompressed and split with
 *    segment_split_packed; each column gets its encoded size as raw bytes and
 *    a share of the block's stored bytes proportional to that size (shares
 *    are cumulative-rounded, so they add up to the block exactly; the few
 *    bytes of the packed column directory are absorbed the same way). So the
 *    stored bytes of all columns add up to the row-group blocks on disk; the
 *    rest of file_bytes is dictionaries (dictionary_bytes), headers,
 *    footers and trailers.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "manifest.h"
#include "rows.h"
#include "segment.h"
#include "rollup.h"
#include "strdict.h"
#include "errmsg.h"
#include "tally.h"
#include "tally_limits.h"
#include "wal.h"

#define INSPECT_DIR_SIZE_MAX 3800u          /* leaves room for "/segments/<name>" */
#define INSPECT_PATH_SIZE_MAX 4096u
#define INSPECT_DIR_ENTRIES_MAX (1u << 20)  /* names read from one directory */
#define INSPECT_NAME_SIZE_MAX 256u
#define VERIFY_FILE_PROBLEMS_MAX 100
#define FILE_ID_HEX_DIGITS 16u

_Static_assert(INSPECT_DIR_SIZE_MAX + 16 + INSPECT_NAME_SIZE_MAX <= INSPECT_PATH_SIZE_MAX,
	       "a path built from an accepted directory and a name fits");

/* ======================================================================== */
/* Shared: directory checks, the lock, directory listings                    */
/* ======================================================================== */


/* 0 if path is a directory that can be opened; -errno otherwise. */
static int directory_probe(const tally_io *io, const char *path)
{
	int fd = io->open(io, path, O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return fd;
	io->close(io, fd);
	return 0;
}

/*
 * Takes DIR/LOCK as tally_store_open does, without creating it. On 0, *fd
 * holds the locked descriptor (or -1 when there is no LOCK file) and must be
 * given to dir_lock_release. Otherwise returns TALLY_E_LOCKED or -errno with
 * errmsg set, and nothing is held.
 */
static int dir_lock_acquire(const tally_io *io, const char *dir, int *fd, char *errmsg)
{
	char path[INSPECT_PATH_SIZE_MAX];
	snprintf(path, sizeof(path), "%s/LOCK", dir);
	*fd = -1;
	int lock_fd = io->open(io, path, O_RDONLY, 0);
	if (lock_fd == -ENOENT)
		return 0; /* never opened by a store: nobody can hold it */
	if (lock_fd < 0) {
		errmsg_set(errmsg, "open %s: %s", path, tally_strerror(lock_fd));
		return lock_fd;
	}
	int rc = io->lock(io, lock_fd);
	if (rc) {
		io->close(io, lock_fd);
		if (rc == -EWOULDBLOCK || rc == -EAGAIN) {
			errmsg_set(errmsg, "%s is held by a running process (tallyd?): stop it first, "
				   "or work on a copy of the directory", path);
			return TALLY_E_LOCKED;
		}
		errmsg_set(errmsg, "lock %s: %s", path, tally_strerror(rc));
		return rc;
	}
	*fd = lock_fd;
	return 0;
}

static void dir_lock_release(const tally_io *io, int fd)
{
	if (fd >= 0)
		io->close(io, fd); /* closing the only descriptor releases the flock */
}

/* The names in one directory, sorted bytewise. */
typedef struct name_list {
	char **names;
	size_t count;
	size_t capacity;
	int error; /* -ENOMEM or TALLY_E_LIMIT from the callback */
} name_list;

static int name_list_add(void *ctx, const char *name)
{
	name_list *list = ctx;
	if (list->count == INSPECT_DIR_ENTRIES_MAX) {
		list->error = TALLY_E_LIMIT;
		return 1;
	}
	if (list->count == list->capacity) {
		size_t capacity = list->capacity ? list->capacity * 2 : 64;
		char **names = realloc(list->names, capacity * sizeof(*names));
		if (!names) {
			list->error = -ENOMEM;
			return 1;
		}
		list->names = names;
		list->capacity = capacity;
	}
	size_t size = strnlen(name, INSPECT_NAME_SIZE_MAX - 1);
	char *copy = malloc(size + 1);
	if (!copy) {
		list->error = -ENOMEM;
		return 1;
	}
	memcpy(copy, name, size);
	copy[size] = 0;
	list->names[list->count++] = copy;
	return 0;
}

static void name_list_free(name_list *list)
{
	for (size_t i = 0; i < list->count; i++)
		free(list->names[i]);
	free(list->names);
	memset(list, 0, sizeof(*list));
}

static int name_compare(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists path into *list (sorted). 0, -errno (e.g. -ENOENT), -ENOMEM or
 * TALLY_E_LIMIT; the list is empty on failure. */
static int name_list_read(const tally_io *io, const char *path, name_list *list)
{
	memset(list, 0, sizeof(*list));
	int rc = io->list_dir(io, path, name_list_add, list);
	if (list->error)
		rc = list->error;
	if (rc) {
		name_list_free(list);
		return rc;
	}
	if (list->count)
		qsort(list->names, list->count, sizeof(*list->names), name_compare);
	return 0;
}

/* Parses "<16 lowercase hex digits><suffix>", the only spelling the engine
 * writes. 1 with *file_id set, or 0. */
static int file_name_parse(const char *name, const char *suffix, uint64_t *file_id)
{
	uint64_t id = 0;
	for (unsigned i = 0; i < FILE_ID_HEX_DIGITS; i++) {
		char c = name[i];
		if (c >= '0' && c <= '9')
			id = id << 4 | (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			id = id << 4 | (uint64_t)(c - 'a' + 10);
		else
			return 0;
	}
	if (strcmp(name + FILE_ID_HEX_DIGITS, suffix) != 0)
		return 0;
	*file_id = id;
	return 1;
}

static int manifest_names_file(const manifest *m, uint64_t file_id)
{
	size_t lo = 0, hi = m->file_count; /* file_ids ascending (manifest_read checks) */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->file_ids[mid] < file_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < m->file_count && m->file_ids[lo] == file_id;
}

static int argument_check(const char *dir, char *errmsg)
{
	if (!dir || !dir[0] || strlen(dir) > INSPECT_DIR_SIZE_MAX) {
		errmsg_set(errmsg, "invalid data directory argument (empty or longer than %u bytes)",
			   INSPECT_DIR_SIZE_MAX);
		return TALLY_E_INVALID;
	}
	return 0;
}

static int dir_check(const tally_io *io, const char *dir, char *errmsg)
{
	int rc = directory_probe(io, dir);
	if (rc == -ENOENT)
		errmsg_set(errmsg, "%s: no such directory", dir);
	else if (rc == -ENOTDIR)
		errmsg_set(errmsg, "%s: not a directory", dir);
	else if (rc)
		errmsg_set(errmsg, "open %s: %s", dir, tally_strerror(rc));
	return rc;
}

/* ======================================================================== */
/* tally_inspect                                                             */
/* ======================================================================== */

/* Adds a packed block's stored bytes to the columns in proportion to their
 * encoded sizes (cumulative rounding: the shares sum to `stored` exactly). */
static void attribute_packed(tally_inspect_report *report, uint64_t stored,
			     const size_t col_size[TALLY_COL_COUNT])
{
	uint64_t total = 0;
	for (int c = 0; c < TALLY_COL_COUNT; c++)
		total += col_size[c];
	if (total == 0) { /* impossible for rows > 0; keep the sum exact anyway */
		report->column_stored_bytes[TALLY_COL_TIME] += stored;
		return;
	}
	uint64_t cumulative = 0, previous_share = 0;
	for (int c = 0; c < TALLY_COL_COUNT; c++) {
		cumulative += col_size[c];
		/* stored < 2^32 and cumulative <= BLOCK raw limit < 2^29: no overflow */
		uint64_t share = stored * cumulative / total;
		report->column_stored_bytes[c] += share - previous_share;
		report->column_raw_bytes[c] += col_size[c];
		previous_share = share;
	}
}

/* Segment seg's share of a row group total: the total split by rows so
 * that the shares of all the segments in the row group add up to it
 * exactly (a telescoping split: no rounding is lost). */
static uint64_t rows_share(const seg_segment *seg, const seg_rowgroup *rg, uint64_t total)
{
	uint64_t start = seg->row_start > rg->row_start ? seg->row_start : rg->row_start;
	uint64_t seg_end = seg->row_start + seg->rows, rg_end = rg->row_start + rg->rows;
	uint64_t end = seg_end < rg_end ? seg_end : rg_end;
	if (end <= start)
		return 0;
	start -= rg->row_start;
	end -= rg->row_start;
	return total * end / rg->rows - total * start / rg->rows;
}

/* The time of row `row` (counted within its tenant section) of row group g,
 * decoding g's time column into r unless *decoded is already g. */
static int rowgroup_time(const segment_file *f, uint32_t g, uint64_t row, rows *r,
			 int64_t *decoded, int64_t *time_us, char *errmsg)
{
	if (*decoded != (int64_t)g) {
		*decoded = -1;
		int rc = segment_read_rowgroup(f, g, 1u << TALLY_COL_TIME, r, errmsg);
		if (rc)
			return rc;
		*decoded = g;
	}
	*time_us = r->time_us[row - f->rowgroups[g].row_start];
	return 0;
}

/* A segment's first and last event times, read from its time column: the
 * footer holds only bounds (to the minute since version 3). */
static int segment_times(const segment_file *f, const seg_segment *seg, rows *r,
			 int64_t *decoded, tally_segment_info *info, char *errmsg)
{
	uint32_t last_g = seg->first_rowgroup + seg->rowgroup_count - 1;
	int rc = rowgroup_time(f, seg->first_rowgroup, seg->row_start, r, decoded,
			       &info->time_min_us, errmsg);
	if (!rc)
		rc = rowgroup_time(f, last_g, seg->row_start + seg->rows - 1, r, decoded,
				   &info->time_max_us, errmsg);
	return rc;
}

/*
 * Adds one file to the report. Column bytes are counted once per row group;
 * a segment's stored and raw bytes are its share (by rows) of the row
 * groups it lies in, since small days share row groups.
 */
static int inspect_file(const segment_file *f, tally_inspect_report *report, tally_file_fn file_fn,
			tally_segment_fn segment_fn, void *ctx, bytebuf *raw, char *errmsg)
{
	report->segment_file_count++;
	report->file_bytes += f->size;
	if (file_fn) {
		tally_file_info info = {
			.file_id = f->file_id,
			.version = f->version,
			.run_next = (f->flags & SEGMENT_FLAG_RUN_NEXT) != 0,
			.bytes = f->size,
			.tenant_count = f->tenant_count,
		};
		for (uint32_t t = 0; t < f->tenant_count; t++) {
			const seg_tenant *tenant = &f->tenants[t];
			info.segment_count += tenant->segment_count;
			for (uint32_t s = 0; s < tenant->segment_count; s++)
				info.rows += f->segments[tenant->first_segment + s].rows;
		}
		file_fn(ctx, &info);
	}
	uint64_t *rg_stored = calloc((size_t)f->rowgroup_count + 1, sizeof(uint64_t));
	uint64_t *rg_raw = calloc((size_t)f->rowgroup_count + 1, sizeof(uint64_t));
	int rc = rg_stored && rg_raw ? 0 : -ENOMEM;
	for (uint32_t g = 0; g < f->rowgroup_count && !rc; g++) {
		const seg_rowgroup *rg = &f->rowgroups[g];
		if (!rg->packed) {
			for (int c = 0; c < TALLY_COL_COUNT; c++) {
				const seg_block *b = &f->blocks[rg->first_block + c];
				report->column_stored_bytes[c] += b->stored_size;
				report->column_raw_bytes[c] += b->raw_size;
				rg_stored[g] += b->stored_size;
				rg_raw[g] += b->raw_size;
			}
			continue;
		}
		const seg_block *b = &f->blocks[rg->first_block];
		if ((rc = segment_read_block(f, b, raw, errmsg)))
			break;
		const uint8_t *col[TALLY_COL_COUNT];
		size_t col_size[TALLY_COL_COUNT];
		if (segment_split_packed(raw->data, raw->size, col, col_size)) {
			errmsg_set(errmsg, "%s offset %" PRIu64 ": packed row group has a "
				   "bad column directory", f->path, b->offset);
			rc = TALLY_E_CORRUPT;
			break;
		}
		attribute_packed(report, b->stored_size, col_size);
		rg_stored[g] = b->stored_size;
		rg_raw[g] = b->raw_size;
	}
	rows times = {0};
	int64_t decoded = -1; /* the row group whose times are in `times` */
	for (uint32_t t = 0; t < f->tenant_count && !rc; t++) {
		const seg_tenant *tenant = &f->tenants[t];
		report->dictionary_bytes += tenant->dict.stored_size;
		report->rollup_group_bytes += tenant->rollup_groups.stored_size;
		for (int list = 0; list < LIST_COUNT; list++) {
			int res = list == LIST_DAY_TOTAL ? RES_DAY : list;
			report->rollup_cells[res] += tenant->rollup_cells[list];
			for (uint32_t k = 0; k < tenant->chunk_count[list]; k++)
				report->rollup_bytes[res] +=
					f->chunks[tenant->first_chunk[list] + k].block.stored_size;
		}
		for (uint32_t s = tenant->first_segment;
		     s < tenant->first_segment + tenant->segment_count && !rc; s++) {
			const seg_segment *seg = &f->segments[s];
			tally_segment_info info = {
				.tenant = tenant->name,
				.file_id = f->file_id,
				.day = seg->day,
				.rows = seg->rows,
			};
			if (segment_fn && (rc = segment_times(f, seg, &times, &decoded, &info, errmsg)))
				break;
			for (uint32_t g = seg->first_rowgroup;
			     g < seg->first_rowgroup + seg->rowgroup_count; g++) {
				const seg_rowgroup *rg = &f->rowgroups[g];
				info.stored_bytes += rows_share(seg, rg, rg_stored[g]);
				info.raw_bytes += rows_share(seg, rg, rg_raw[g]);
			}
			report->segment_count++;
			report->rows += seg->rows;
			if (segment_fn)
				segment_fn(ctx, &info);
		}
	}
	rows_free(&times);
	free(rg_stored);
	free(rg_raw);
	return rc;
}

/* Counts "<id>.wal" files in DIR/wal and their bytes; a missing wal/ is no
 * WAL at all. */
static int inspect_wal(const tally_io *io, const char *dir, tally_inspect_report *report,
		       char *errmsg)
{
	char wal_dir[INSPECT_PATH_SIZE_MAX];
	snprintf(wal_dir, sizeof(wal_dir), "%s/wal", dir);
	name_list names;
	int rc = name_list_read(io, wal_dir, &names);
	if (rc == -ENOENT)
		return 0;
	if (rc) {
		errmsg_set(errmsg, "list %s: %s", wal_dir, tally_strerror(rc));
		return rc;
	}
	for (size_t i = 0; i < names.count && !rc; i++) {
		uint64_t file_id;
		if (!file_name_parse(names.names[i], ".wal", &file_id))
			continue;
		char path[INSPECT_PATH_SIZE_MAX + INSPECT_NAME_SIZE_MAX];
		snprintf(path, sizeof(path), "%s/%s", wal_dir, names.names[i]);
		int fd = io->open(io, path, O_RDONLY, 0);
		if (fd < 0) {
			rc = fd;
			errmsg_set(errmsg, "open %s: %s", path, tally_strerror(rc));
			break;
		}
		int64_t size = io->file_size(io, fd);
		io->close(io, fd);
		if (size < 0) {
			rc = (int)size;
			errmsg_set(errmsg, "stat %s: %s", path, tally_strerror(rc));
			break;
		}
		report->wal_file_count++;
		report->wal_bytes += (uint64_t)size;
	}
	name_list_free(&names);
	return rc;
}

/*
 * tally_inspect and tally_inspect_files (contracts in tally.h). Refuses a directory held by a live
 * process (TALLY_E_LOCKED) and one without a MANIFEST (TALLY_E_NOTFOUND:
 * not a tally data directory). Reads the manifest, every footer, and the
 * packed row-group blocks (to split them by column); a damaged file makes it
 * fail with TALLY_E_CORRUPT and an errmsg naming the file and offset (tally
 * verify lists all damage). *report is zeroed first and is complete only
 * when 0 is returned. segment_fn's info, including the tenant string, is
 * valid only during the call; file_fn is called as inspect_file starts
 * each file. errmsg may be NULL.
 */
int tally_inspect(const char *dir, tally_inspect_report *report, tally_segment_fn segment_fn,
		  void *ctx, char *errmsg)
{
	return tally_inspect_files(dir, report, NULL, segment_fn, ctx, errmsg);
}

int tally_inspect_files(const char *dir, tally_inspect_report *report, tally_file_fn file_fn,
			tally_segment_fn segment_fn, void *ctx, char *errmsg)
{
	if (errmsg)
		errmsg[0] = 0;
	if (!report) {
		errmsg_set(errmsg, "tally_inspect: report is NULL");
		return TALLY_E_INVALID;
	}
	memset(report, 0, sizeof(*report));
	int rc = argument_check(dir, errmsg);
	if (rc)
		return rc;
	const tally_io *io = tally_io_default();
	if ((rc = dir_check(io, dir, errmsg)))
		return rc;
	int lock_fd;
	if ((rc = dir_lock_acquire(io, dir, &lock_fd, errmsg)))
		return rc;

	manifest m;
	rc = manifest_read(io, dir, &m, errmsg);
	if (rc == TALLY_E_NOTFOUND)
		errmsg_set(errmsg, "%s: not a tally data directory (no MANIFEST)", dir);
	if (rc) {
		dir_lock_release(io, lock_fd);
		return rc;
	}
	report->manifest_generation = m.generation;
	report->manifest_version = m.version;
	report->wal_replay_lsn = m.wal_replay_lsn;
	report->wal_file_id_next = m.wal_file_id_next;

	char segment_dir[INSPECT_PATH_SIZE_MAX];
	snprintf(segment_dir, sizeof(segment_dir), "%s/segments", dir);
	bytebuf raw = {0};
	for (uint32_t i = 0; i < m.file_count && !rc; i++) {
		segment_file *f;
		if ((rc = segment_file_open(io, segment_dir, m.file_ids[i], &f, errmsg)))
			break;
		rc = inspect_file(f, report, file_fn, segment_fn, ctx, &raw, errmsg);
		segment_file_close(f);
	}
	if (!rc)
		rc = inspect_wal(io, dir, report, errmsg);
	bytebuf_free(&raw);
	manifest_free(&m);
	dir_lock_release(io, lock_fd);
	return rc;
}

/* ======================================================================== */
/* tally_verify                                                              */
/* ======================================================================== */

typedef struct verifier {
	const tally_io *io;
	const char *dir;
	char segment_dir[INSPECT_PATH_SIZE_MAX];
	char wal_dir[INSPECT_PATH_SIZE_MAX];
	tally_problem_fn problem_fn;
	void *ctx;
	int problem_count;
	int file_problem_count; /* in the file being checked */
	int file_stopped;       /* the file passed VERIFY_FILE_PROBLEMS_MAX */
	const char *file_path;
	manifest m;
	int have_manifest;
	rows r;
	bytebuf raw;
	char errmsg[TALLY_ERRMSG_SIZE];
} verifier;

static void verify_deliver(verifier *v, const char *message)
{
	v->problem_count++;
	if (v->problem_fn)
		v->problem_fn(v->ctx, message);
}

/* Starts a new file's problem budget. */
static void verify_file_begin(verifier *v, const char *path)
{
	v->file_problem_count = 0;
	v->file_stopped = 0;
	v->file_path = path;
}

/* Reports one problem against the current file, within its budget. */
__attribute__((format(printf, 2, 3)))
static void verify_problem(verifier *v, const char *format, ...)
{
	if (v->file_stopped)
		return;
	char message[TALLY_ERRMSG_SIZE];
	if (v->file_problem_count == VERIFY_FILE_PROBLEMS_MAX) {
		snprintf(message, sizeof(message), "%s: more than %d problems; the rest of this "
			 "file was not checked", v->file_path, VERIFY_FILE_PROBLEMS_MAX);
		v->file_stopped = 1;
		verify_deliver(v, message);
		return;
	}
	va_list args;
	va_start(args, format);
	vsnprintf(message, sizeof(message), format, args);
	va_end(args);
	v->file_problem_count++;
	verify_deliver(v, message);
}

/* The message of a failed engine read: the reader's own (it names path and
 * offset) or, when it left none, one built from path, offset and code; then
 * what the damaged bytes hold, when known (context, may be NULL; left out
 * when the message already says it). */
static void verify_read_problem(verifier *v, const char *path, uint64_t offset, int rc,
				const char *context)
{
	if (context && v->errmsg[0] && strstr(v->errmsg, context))
		context = NULL;
	const char *open = context ? " (" : "", *close = context ? ")" : "";
	if (!context)
		context = "";
	if (v->errmsg[0])
		verify_problem(v, "%s%s%s%s", v->errmsg, open, context, close);
	else
		verify_problem(v, "%s offset %" PRIu64 ": %s%s%s%s", path, offset,
			       tally_strerror(rc), open, context, close);
}

/* Days since 1970-01-01 as "YYYY-MM-DD" (proleptic Gregorian, the civil
 * calendar algorithm of H. Hinnant: arithmetic only, no time zone). */
static void day_format(char *out, size_t size, int64_t day)
{
	int64_t z = day + 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int64_t d = doy - (153 * mp + 2) / 5 + 1;
	int64_t m = mp < 10 ? mp + 3 : mp - 9;
	int64_t y = yoe + era * 400 + (m <= 2);
	snprintf(out, size, "%04" PRId64 "-%02" PRId64 "-%02" PRId64, y, m, d);
}

/* "tenant acme, day 2026-09-21, row group 0[, column time]" */
static void rowgroup_context(char *out, size_t size, const seg_tenant *tenant,
			     const seg_segment *seg, uint32_t g, int column)
{
	char day[32];
	day_format(day, sizeof(day), seg->day);
	int n = snprintf(out, size, "tenant %s, day %s, row group %u", tenant->name, day,
			 g - seg->first_rowgroup);
	if (column >= 0 && n > 0 && (size_t)n < size)
		snprintf(out + n, size - (size_t)n, ", column %s", tally_column_name(column));
}

/* Says why the check could not run (not counted; see note 5) and returns rc. */
static int verify_cannot_run(verifier *v, int rc, const char *reason)
{
	if (v->problem_fn) {
		char message[TALLY_ERRMSG_SIZE];
		snprintf(message, sizeof(message), "%s", reason && reason[0] ? reason
								: tally_strerror(rc));
		v->problem_fn(v->ctx, message);
	}
	return rc;
}

static int tenant_name_valid(const char *name, size_t size)
{
	if (size == 0 || size > TALLY_TENANT_SIZE_MAX)
		return 0;
	for (size_t i = 0; i < size; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

typedef struct tenant_ref {
	const char *name;
	uint32_t tenant_id;
	uint64_t offset;
} tenant_ref;

static int tenant_ref_compare(const void *a, const void *b)
{
	const tenant_ref *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : (x->tenant_id > y->tenant_id) - (x->tenant_id < y->tenant_id);
}

/* What manifest_read does not check itself: tenant names are valid and
 * distinct (tally_store_open refuses the store otherwise). */
static int verify_manifest_tenants(verifier *v, const char *path)
{
	const manifest *m = &v->m;
	if (!m->tenant_count)
		return 0;
	tenant_ref *refs = malloc(sizeof(*refs) * m->tenant_count);
	if (!refs)
		return -ENOMEM;
	uint64_t offset = MANIFEST_HEADER_SIZE + (uint64_t)m->file_count * 8;
	for (uint32_t t = 0; t < m->tenant_count; t++) {
		const manifest_tenant *mt = &m->tenants[t];
		refs[t] = (tenant_ref){mt->name, t, offset};
		if (!tenant_name_valid(mt->name, mt->name_size))
			verify_problem(v, "%s offset %" PRIu64 ": tenant %u has an invalid name",
				       path, offset, t);
		offset += 1 + (uint64_t)mt->name_size;
	}
	qsort(refs, m->tenant_count, sizeof(*refs), tenant_ref_compare);
	for (uint32_t t = 1; t < m->tenant_count; t++)
		if (strcmp(refs[t].name, refs[t - 1].name) == 0)
			verify_problem(v, "%s offset %" PRIu64 ": tenant name '%s' repeats tenant %u",
				       path, refs[t].offset, refs[t].name, refs[t - 1].tenant_id);
	free(refs);
	return 0;
}

/* Checks the decoded columns of row group g (those in mask) for meaning:
 * codes inside the dictionaries, statuses known. Times are checked by
 * verify_times, which follows the segments across row groups. */
static void verify_rows(verifier *v, const segment_file *f, const seg_tenant *tenant,
			const seg_segment *seg, uint32_t g, uint32_t mask,
			const strdict dict[DIM_COUNT], int have_dict)
{
	const seg_rowgroup *rg = &f->rowgroups[g];
	const rows *r = &v->r;
	char where[160];
	rowgroup_context(where, sizeof(where), tenant, seg, g, -1);
#define COLUMN_OFFSET(c) (f->blocks[rg->first_block + (rg->packed ? 0 : (c))].offset)
	for (int d = 0; d < DIM_COUNT && have_dict; d++) {
		int c = TALLY_COL_TYPE + d;
		if (!(mask & (1u << c)))
			continue;
		uint32_t bad = 0, first_bad = 0;
		for (uint32_t i = 0; i < r->count; i++)
			if (r->dim[d][i] >= dict[d].count && !bad++)
				first_bad = i;
		if (bad)
			verify_problem(v, "%s offset %" PRIu64 ": %s codes >= the dictionary size %u "
				       "in %u rows (first: row %u, code %u) (%s)", f->path, COLUMN_OFFSET(c),
				       tally_column_name(c), dict[d].count, bad, first_bad,
				       r->dim[d][first_bad], where);
	}
	if (mask & (1u << TALLY_COL_STATUS)) {
		uint32_t bad = 0, first_bad = 0;
		for (uint32_t i = 0; i < r->count; i++)
			if (r->status[i] >= TALLY_STATUS_COUNT && !bad++)
				first_bad = i;
		if (bad)
			verify_problem(v, "%s offset %" PRIu64 ": unknown status in %u rows (first: row "
				       "%u, status %u) (%s)", f->path, COLUMN_OFFSET(TALLY_COL_STATUS), bad,
				       first_bad, r->status[first_bad], where);
	}
#undef COLUMN_OFFSET
}

/* Follows the segments of a tenant section across its row groups. */
typedef struct time_cursor {
	uint32_t seg;          /* segment of the next row */
	uint32_t seg_end;
	int64_t previous_time; /* for the sort check across row groups */
	int64_t first_time;    /* of the current segment, INT64_MIN: not seen */
	int64_t last_time;
	int bounds_known;      /* every row of the current segment decoded */
} time_cursor;

/* Closes the cursor's current segment: its footer bounds must be the ones
 * its first and last rows give (segment_time_bounds: exact in version 2
 * files, to the minute since version 3). */
static void verify_segment_bounds(verifier *v, const segment_file *f, const seg_tenant *tenant,
				  const char *path, uint64_t footer_offset, time_cursor *tc)
{
	const seg_segment *seg = &f->segments[tc->seg];
	int64_t min_us = 0, max_us = 0;
	if (tc->bounds_known)
		segment_time_bounds(f->version, tc->first_time, tc->last_time, &min_us, &max_us);
	if (tc->bounds_known && (min_us != seg->time_min_us || max_us != seg->time_max_us)) {
		char day[32];
		day_format(day, sizeof(day), seg->day);
		verify_problem(v, "%s offset %" PRIu64 ": footer gives tenant %s day %s "
			       "the time range [%" PRId64 ", %" PRId64 "], its rows span [%"
			       PRId64 ", %" PRId64 "]", path, footer_offset, tenant->name,
			       day, seg->time_min_us, seg->time_max_us, tc->first_time,
			       tc->last_time);
	}
	tc->seg++;
	tc->first_time = tc->last_time = INT64_MIN;
	tc->bounds_known = 1;
}

/*
 * Checks the times of row group g (decoded in v->r when have_time): each
 * inside its segment's range, all sorted, each segment's first and last
 * equal to its footer bounds. Without the times, the segments this row
 * group touches are only skipped past.
 */
static void verify_times(verifier *v, const segment_file *f, const seg_tenant *tenant,
			 uint32_t g, int have_time, const char *path, uint64_t footer_offset,
			 time_cursor *tc)
{
	const seg_rowgroup *rg = &f->rowgroups[g];
	const rows *r = &v->r;
	uint64_t time_offset = f->blocks[rg->first_block + (rg->packed ? 0 : TALLY_COL_TIME)].offset;
	uint32_t outside = 0, unsorted = 0, first_outside = 0, first_unsorted = 0;
	for (uint32_t i = 0; i < rg->rows && tc->seg < tc->seg_end; i++) {
		const seg_segment *seg = &f->segments[tc->seg];
		uint64_t row = rg->row_start + i;
		if (!have_time) {
			tc->bounds_known = 0;
			tc->previous_time = INT64_MIN;
		} else {
			int64_t t = r->time_us[i];
			if ((t < seg->time_min_us || t > seg->time_max_us) && !outside++)
				first_outside = i;
			if (tc->previous_time != INT64_MIN && t < tc->previous_time && !unsorted++)
				first_unsorted = i;
			tc->previous_time = t;
			if (row == seg->row_start)
				tc->first_time = t;
			tc->last_time = t;
		}
		if (row + 1 == seg->row_start + seg->rows)
			verify_segment_bounds(v, f, tenant, path, footer_offset, tc);
	}
	char where[160];
	if (outside) {
		snprintf(where, sizeof(where), "tenant %s, row group %u", tenant->name,
			 g - tenant->first_rowgroup);
		verify_problem(v, "%s offset %" PRIu64 ": %u of %u times lie outside their "
			       "segment's range (first: row %u, time %" PRId64 ") (%s)", f->path,
			       time_offset, outside, rg->rows, first_outside,
			       r->time_us[first_outside], where);
	}
	if (unsorted) {
		snprintf(where, sizeof(where), "tenant %s, row group %u", tenant->name,
			 g - tenant->first_rowgroup);
		verify_problem(v, "%s offset %" PRIu64 ": times are not sorted (%u rows earlier "
			       "than their predecessor; first: row %u) (%s)", f->path, time_offset,
			       unsorted, first_unsorted, where);
	}
}

/*
 * Reads and decodes row group g. When the whole read fails, finds every bad
 * block (and every column that does not decode) by reading the columns one
 * at a time, then decodes the good columns together. Sets *mask to the
 * columns decoded into v->r (0: none). Returns 0 or -ENOMEM.
 */
static int verify_rowgroup_read(verifier *v, const segment_file *f, const seg_tenant *tenant,
				const seg_segment *seg, uint32_t g, uint32_t *mask)
{
	char where[160];
	const seg_rowgroup *rg = &f->rowgroups[g];
	const seg_block *first = &f->blocks[rg->first_block];
	*mask = 0;
	v->errmsg[0] = 0;
	int rc = segment_read_rowgroup(f, g, SEGMENT_COLUMNS_ALL, &v->r, v->errmsg);
	if (rc == -ENOMEM)
		return rc;
	if (!rc) {
		*mask = SEGMENT_COLUMNS_ALL;
		return 0;
	}
	char whole[TALLY_ERRMSG_SIZE];
	memcpy(whole, v->errmsg, sizeof(whole));
	int whole_rc = rc;
	if (rg->packed) {
		/* One block: a bad checksum or a bad directory spoils every column,
		 * so report it once rather than per column. */
		v->errmsg[0] = 0;
		if ((rc = segment_read_block(f, first, &v->raw, v->errmsg))) {
			if (rc == -ENOMEM)
				return rc;
			rowgroup_context(where, sizeof(where), tenant, seg, g, -1);
			verify_read_problem(v, f->path, first->offset, rc, where);
			return 0;
		}
		const uint8_t *col[TALLY_COL_COUNT];
		size_t col_size[TALLY_COL_COUNT];
		if (segment_split_packed(v->raw.data, v->raw.size, col, col_size)) {
			rowgroup_context(where, sizeof(where), tenant, seg, g, -1);
			verify_problem(v, "%s offset %" PRIu64 ": packed row group has a bad column "
				       "directory (%s)", f->path, first->offset, where);
			return 0;
		}
	}
	uint32_t bad = 0;
	for (int c = 0; c < TALLY_COL_COUNT && !v->file_stopped; c++) {
		/* A scalar column is decoded against columns before it: when one
		 * of those is bad, it cannot be read either, and the problem is
		 * reported once, at the column it depends on. */
		if (segment_columns_needed(1u << c) & bad) {
			bad |= 1u << c;
			continue;
		}
		v->errmsg[0] = 0;
		rc = segment_read_rowgroup(f, g, 1u << c, &v->r, v->errmsg);
		if (rc == -ENOMEM)
			return rc;
		if (rc) {
			bad |= 1u << c;
			rowgroup_context(where, sizeof(where), tenant, seg, g, c);
			verify_read_problem(v, f->path,
					    f->blocks[rg->first_block + (rg->packed ? 0 : c)].offset, rc,
					    where);
		}
	}
	if (!bad) { /* failed together, not alone: report what the whole read said */
		memcpy(v->errmsg, whole, sizeof(whole));
		rowgroup_context(where, sizeof(where), tenant, seg, g, -1);
		verify_read_problem(v, f->path, first->offset, whole_rc, where);
		return 0;
	}
	uint32_t good = SEGMENT_COLUMNS_ALL & ~bad;
	if (!good || v->file_stopped)
		return 0;
	rc = segment_read_rowgroup(f, g, good, &v->r, v->errmsg);
	if (rc == -ENOMEM)
		return rc;
	if (!rc)
		*mask = good;
	return 0;
}

/* A rollup cell as the verifier compares them. */
typedef struct vcell {
	int64_t bucket;
	uint64_t count;
	int total;
} vcell;

static int vcell_compare(const void *a, const void *b)
{
	const vcell *x = a, *y = b;
	if (x->bucket != y->bucket)
		return x->bucket < y->bucket ? -1 : 1;
	return y->total - x->total;
}

/*
 * Decodes every chunk of resolution res of a section (histograms and users
 * included, so their structure is checked) into cells[] (bucket order), or
 * reports each problem. Returns 0 or -ENOMEM.
 */
static int verify_rollup_res(verifier *v, const segment_file *f, const seg_tenant *tenant, int list,
			     const rollup_group *groups, uint32_t group_count, uint32_t user_limit,
			     const char *path, vcell **cells, uint32_t *count, int *complete)
{
	bytebuf raw = {0};
	int rc = 0;
	uint32_t room = *count + tenant->rollup_cells[list];
	vcell *grown = realloc(*cells, sizeof(**cells) * ((size_t)room + 1));
	if (!grown)
		return -ENOMEM;
	*cells = grown;
	int has_total = group_count && groups[0].status == ROLLUP_STATUS_ALL;
	for (uint32_t k = 0; k < tenant->chunk_count[list] && !rc; k++) {
		const seg_chunk *c = &f->chunks[tenant->first_chunk[list] + k];
		v->errmsg[0] = 0;
		int read_rc = segment_read_block(f, &c->block, &raw, v->errmsg);
		if (read_rc == -ENOMEM) {
			rc = read_rc;
			break; /* raw, which may hold an earlier chunk, is freed below */
		}
		char where[160];
		snprintf(where, sizeof(where), "%s rollup chunk %u of tenant %s", ROLLUP_LIST_NAME[list],
			 k, tenant->name);
		if (read_rc) {
			verify_read_problem(v, path, c->block.offset, read_rc, where);
			*complete = 0;
			continue;
		}
		rollup_block b;
		int dec = rollup_block_decode(raw.data, raw.size, groups, group_count, user_limit, &b);
		if (!dec && (dec = rollup_block_sketches(&b)))
			rollup_block_free(&b);
		if (dec == -ENOMEM) {
			rc = dec;
			break;
		}
		if (dec) {
			verify_problem(v, "%s offset %" PRIu64 ": %s is malformed", path, c->block.offset, where);
			*complete = 0;
			continue;
		}
		int64_t next = k + 1 < tenant->chunk_count[list] ? c[1].first_bucket : INT64_MAX;
		if (b.cell_count != c->cells || b.bucket[0] != c->first_bucket ||
		    b.bucket[b.cell_count - 1] >= next)
			verify_problem(v, "%s offset %" PRIu64 ": %s holds %u cells of buckets %" PRId64
				       "..%" PRId64 ", the footer says %u from %" PRId64 " (next chunk %" PRId64 ")",
				       path, c->block.offset, where, b.cell_count, b.bucket[0],
				       b.bucket[b.cell_count - 1], c->cells, c->first_bucket, next);
		if ((list == LIST_DAY_TOTAL) != (b.group[0] == 0 && has_total) ||
		    (list == LIST_DAY_TOTAL) != (b.group[b.cell_count - 1] == 0 && has_total))
			verify_problem(v, "%s offset %" PRIu64 ": %s mixes total and group cells", path,
				       c->block.offset, where);
		for (uint32_t i = 0; i < b.cell_count && *count < room; i++)
			(*cells)[(*count)++] = (vcell){b.bucket[i], b.count[i], has_total && b.group[i] == 0};
		rollup_block_free(&b);
	}
	bytebuf_free(&raw);
	return rc;
}

/*
 * Checks a tenant section's rollup: group table and chunk checksums and
 * structure (codes inside the dictionaries), the cell counts the footer
 * states, that the hour cells count every row of the section (minute cells
 * may count fewer: retention), that each total cell counts what its
 * bucket's group cells count, and that every day with day cells counts
 * exactly what its hour cells count (days without are composed from hours).
 */
static int verify_rollup(verifier *v, const segment_file *f, const seg_tenant *tenant,
			 const strdict dict[DIM_COUNT], const char *path)
{
	uint32_t dict_count[DIM_COUNT];
	for (int d = 0; d < DIM_COUNT; d++)
		dict_count[d] = dict[d].count;
	uint64_t row_count = 0;
	for (uint32_t si = tenant->first_segment; si < tenant->first_segment + tenant->segment_count; si++)
		row_count += f->segments[si].rows;
	bytebuf raw = {0};
	v->errmsg[0] = 0;
	rollup_group *groups = NULL;
	uint32_t group_count = 0;
	int rc = segment_read_block(f, &tenant->rollup_groups, &raw, v->errmsg);
	if (rc == -ENOMEM) {
		bytebuf_free(&raw);
		return rc;
	}
	if (rc) {
		verify_read_problem(v, path, tenant->rollup_groups.offset, rc, "rollup group table");
		bytebuf_free(&raw);
		return 0;
	}
	rc = rollup_groups_decode(raw.data, raw.size, dict_count, &groups, &group_count);
	bytebuf_free(&raw);
	if (rc == -ENOMEM)
		return rc;
	if (rc || group_count != tenant->rollup_group_count) {
		verify_problem(v, "%s offset %" PRIu64 ": rollup group table of tenant %s is malformed",
			       path, tenant->rollup_groups.offset, tenant->name);
		free(groups);
		return 0;
	}
	vcell *cells[RES_COUNT] = {NULL, NULL, NULL};
	uint32_t count[RES_COUNT] = {0, 0, 0};
	int complete[RES_COUNT] = {1, 1, 1};
	rc = 0;
	for (int list = 0; list < LIST_COUNT && !rc; list++) {
		int res = list == LIST_DAY_TOTAL ? RES_DAY : list;
		rc = verify_rollup_res(v, f, tenant, list, groups, group_count, dict_count[DIM_USER], path,
				       &cells[res], &count[res], &complete[res]);
	}
	if (!rc && count[RES_DAY]) /* day groups and day totals, merged by bucket */
		qsort(cells[RES_DAY], count[RES_DAY], sizeof(vcell), vcell_compare);
	for (int res = 0; res < RES_COUNT && !rc; res++) {
		if (!complete[res])
			continue;
		uint64_t counted = 0;
		for (uint32_t i = 0; i < count[res];) {
			int64_t bucket = cells[res][i].bucket;
			uint64_t total = 0, by_group = 0;
			int with_total = 0;
			for (; i < count[res] && cells[res][i].bucket == bucket; i++) {
				if (cells[res][i].total) {
					with_total = 1;
					total = cells[res][i].count;
				} else {
					by_group += cells[res][i].count;
				}
			}
			counted += by_group;
			if (with_total && total != by_group) {
				char name[64];
				if (res == RES_DAY)
					day_format(name, sizeof(name), bucket);
				else
					snprintf(name, sizeof(name), "%s bucket %" PRId64,
						 ROLLUP_RES_NAME[res], bucket);
				verify_problem(v, "%s: %s%s of tenant %s: total cell counts %" PRIu64
					       " events, its groups %" PRIu64, path,
					       res == RES_DAY ? "day " : "", name, tenant->name, total,
					       by_group);
			}
		}
		if (res == RES_HOUR ? counted != row_count : counted > row_count)
			verify_problem(v, "%s: %s rollup cells of tenant %s count %" PRIu64
				       " events, the section holds %" PRIu64, path, ROLLUP_RES_NAME[res],
				       tenant->name, counted, row_count);
	}
	if (!rc && complete[RES_DAY] && complete[RES_HOUR]) {
		const vcell *days = cells[RES_DAY], *hours = cells[RES_HOUR];
		uint32_t h = 0;
		for (uint32_t i = 0; i < count[RES_DAY];) {
			int64_t day = days[i].bucket;
			uint64_t by_day = 0, by_hour = 0;
			for (; i < count[RES_DAY] && days[i].bucket == day; i++)
				if (!days[i].total)
					by_day += days[i].count;
			while (h < count[RES_HOUR] && hours[h].bucket < day * 24)
				h++;
			for (uint32_t k = h; k < count[RES_HOUR] && hours[k].bucket < (day + 1) * 24; k++)
				if (!hours[k].total)
					by_hour += hours[k].count;
			if (by_day != by_hour) {
				char date[32];
				day_format(date, sizeof(date), day);
				verify_problem(v, "%s: day %s of tenant %s: day cells count %" PRIu64
					       " events, hour cells %" PRIu64, path, date, tenant->name,
					       by_day, by_hour);
			}
		}
	}
	for (int res = 0; res < RES_COUNT; res++)
		free(cells[res]);
	free(groups);
	return rc;
}

/* Checks one segment file: the open (header, trailer, footer), its tenants
 * against the manifest (when there is one), then every dictionary and row
 * group block. Returns 0 (problems are reported) or -ENOMEM. */
static int verify_segment_file(verifier *v, uint64_t file_id, int named_by_manifest)
{
	char name[64], path[INSPECT_PATH_SIZE_MAX + 64];
	segment_file_name(name, sizeof(name), file_id);
	snprintf(path, sizeof(path), "%s/%s", v->segment_dir, name);
	verify_file_begin(v, path);
	segment_file *f = NULL;
	v->errmsg[0] = 0;
	int rc = segment_file_open(v->io, v->segment_dir, file_id, &f, v->errmsg);
	if (rc == -ENOMEM)
		return rc;
	if (rc == -ENOENT) {
		verify_problem(v, "%s offset 0: missing (the manifest names it)", path);
		return 0;
	}
	if (rc == TALLY_E_CORRUPT || rc == TALLY_E_VERSION) {
		verify_read_problem(v, path, 0, rc, NULL);
		return 0;
	}
	if (rc) {
		verify_problem(v, "%s offset 0: cannot be read: %s", path,
			       v->errmsg[0] ? v->errmsg : tally_strerror(rc));
		return 0;
	}
	uint64_t footer_offset = f->footer_offset;
	if (named_by_manifest && v->have_manifest) {
		for (uint32_t t = 0; t < f->tenant_count; t++) {
			const seg_tenant *st = &f->tenants[t];
			if (st->tenant_id >= v->m.tenant_count ||
			    strcmp(v->m.tenants[st->tenant_id].name, st->name) != 0)
				verify_problem(v, "%s offset %" PRIu64 ": footer names tenant %s with id %u, "
					       "which the manifest does not", path, footer_offset,
					       st->name, st->tenant_id);
		}
	}
	strdict dict[DIM_COUNT];
	for (uint32_t t = 0; t < f->tenant_count && !rc && !v->file_stopped; t++) {
		const seg_tenant *tenant = &f->tenants[t];
		memset(dict, 0, sizeof(dict));
		v->errmsg[0] = 0;
		int dict_rc = segment_read_dict(f, t, dict, v->errmsg);
		if (dict_rc == -ENOMEM) {
			rc = dict_rc;
		} else if (dict_rc) {
			char where[96];
			snprintf(where, sizeof(where), "dictionary of tenant %s", tenant->name);
			verify_read_problem(v, path, tenant->dict.offset, dict_rc, where);
		}
		/* Row groups in row order; a cursor follows the segment (day) each
		 * row belongs to, since small days share row groups. */
		time_cursor tc = {.seg = tenant->first_segment,
				  .seg_end = tenant->first_segment + tenant->segment_count,
				  .previous_time = INT64_MIN, .first_time = INT64_MIN,
				  .last_time = INT64_MIN, .bounds_known = 1};
		for (uint32_t g = tenant->first_rowgroup;
		     g < tenant->first_rowgroup + tenant->rowgroup_count && !rc && !v->file_stopped;
		     g++) {
			const seg_rowgroup *rg = &f->rowgroups[g];
			uint32_t si = tc.seg;
			while (si + 1 < tc.seg_end &&
			       f->segments[si].row_start + f->segments[si].rows <= rg->row_start)
				si++;
			const seg_segment *seg = &f->segments[si];
			uint32_t mask;
			if ((rc = verify_rowgroup_read(v, f, tenant, seg, g, &mask)))
				break;
			if (mask)
				verify_rows(v, f, tenant, seg, g, mask, dict, dict_rc == 0);
			verify_times(v, f, tenant, g, (mask & (1u << TALLY_COL_TIME)) != 0, path,
				     footer_offset, &tc);
		}
		if (!rc && !v->file_stopped && dict_rc == 0)
			rc = verify_rollup(v, f, tenant, dict, path);
		for (int d = 0; d < DIM_COUNT; d++)
			strdict_free(&dict[d]);
	}
	segment_file_close(f);
	return rc;
}

/* Checks every name in DIR/segments: files the manifest does not name are
 * problems; without a manifest every segment file found is checked. */
static int verify_segment_dir(verifier *v)
{
	name_list names;
	int rc = name_list_read(v->io, v->segment_dir, &names);
	if (rc == -ENOMEM)
		return rc;
	verify_file_begin(v, v->segment_dir);
	if (rc == -ENOENT) {
		verify_problem(v, "%s: directory missing", v->segment_dir);
		return 0;
	}
	if (rc) {
		verify_problem(v, "%s: cannot be listed: %s", v->segment_dir, tally_strerror(rc));
		return 0;
	}
	/* Debris has its own budget: the first VERIFY_FILE_PROBLEMS_MAX names,
	 * then one line with the count of the rest. */
	size_t unreferenced = 0;
	for (size_t i = 0; i < names.count && !rc; i++) {
		uint64_t file_id;
		int is_segment = file_name_parse(names.names[i], ".seg", &file_id);
		if (v->have_manifest && is_segment && manifest_names_file(&v->m, file_id))
			continue; /* checked already */
		if (!v->have_manifest && is_segment) {
			rc = verify_segment_file(v, file_id, 0);
			continue;
		}
		if (unreferenced++ < VERIFY_FILE_PROBLEMS_MAX) {
			verify_file_begin(v, v->segment_dir);
			verify_problem(v, "%s/%s offset 0: unreferenced file (not named by the "
				       "manifest; the store deletes it at open)", v->segment_dir,
				       names.names[i]);
		}
	}
	if (!rc && unreferenced > VERIFY_FILE_PROBLEMS_MAX) {
		verify_file_begin(v, v->segment_dir);
		verify_problem(v, "%s: %zu more unreferenced files not listed", v->segment_dir,
			       unreferenced - VERIFY_FILE_PROBLEMS_MAX);
	}
	name_list_free(&names);
	return rc;
}

static void verify_wal_problem(void *ctx, const char *message)
{
	verify_deliver(ctx, message);
}

static int verify_wal(verifier *v)
{
	verify_file_begin(v, v->wal_dir);
	int rc = directory_probe(v->io, v->wal_dir);
	if (rc == -ENOENT) {
		verify_problem(v, "%s: directory missing", v->wal_dir);
		return 0;
	}
	rc = wal_verify(v->io, v->wal_dir, v->have_manifest ? v->m.wal_replay_lsn : 0,
			0 /* a torn tail is not a problem */, verify_wal_problem, v);
	if (rc == -ENOMEM)
		return rc;
	if (rc < 0)
		verify_problem(v, "%s: WAL check stopped: %s", v->wal_dir, tally_strerror(rc));
	return 0;
}

/* 1 if dir has anything in it at all, 0 if empty or missing, or a
 * negative code if it cannot be listed (nothing is known then). */
static int directory_has_entries(const tally_io *io, const char *path)
{
	name_list names;
	int rc = name_list_read(io, path, &names);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	int any = names.count > 0;
	name_list_free(&names);
	return any;
}

/*
 * tally_verify (contract in tally.h). Checks, in this order: the manifest;
 * every segment file it names, block by block; the rest of segments/
 * (unreferenced files); the WAL (wal_verify, a torn tail forgiven). Returns
 * the number of problems (each one call of problem_fn, its message naming a
 * path and offset), or a negative code when the check could not run:
 * TALLY_E_INVALID (bad argument), -ENOENT/-ENOTDIR (no such directory),
 * TALLY_E_LOCKED (held by a live process), TALLY_E_NOTFOUND (not a tally
 * data directory), -ENOMEM; in that case problem_fn was called once more,
 * last, with the reason (not a problem; not counted). problem_fn may be
 * NULL. Holds DIR/LOCK for the duration (see note 1).
 */
int tally_verify(const char *dir, tally_problem_fn problem_fn, void *ctx)
{
	verifier *v = calloc(1, sizeof(*v));
	if (!v) {
		if (problem_fn)
			problem_fn(ctx, "tally verify: out of memory");
		return -ENOMEM;
	}
	v->problem_fn = problem_fn;
	v->ctx = ctx;
	v->dir = dir;
	v->io = tally_io_default();
	int rc = argument_check(dir, v->errmsg);
	if (!rc)
		rc = dir_check(v->io, dir, v->errmsg);
	int lock_fd = -1;
	if (!rc)
		rc = dir_lock_acquire(v->io, dir, &lock_fd, v->errmsg);
	if (rc) {
		rc = verify_cannot_run(v, rc, v->errmsg);
		free(v);
		return rc;
	}
	snprintf(v->segment_dir, sizeof(v->segment_dir), "%s/segments", dir);
	snprintf(v->wal_dir, sizeof(v->wal_dir), "%s/wal", dir);
	char manifest_path[INSPECT_PATH_SIZE_MAX];
	snprintf(manifest_path, sizeof(manifest_path), "%s/%s", dir, MANIFEST_NAME);

	/* 1. The manifest. */
	verify_file_begin(v, manifest_path);
	v->errmsg[0] = 0;
	rc = manifest_read(v->io, dir, &v->m, v->errmsg);
	if (rc == TALLY_E_NOTFOUND) {
		const char *listed = v->segment_dir;
		int any = directory_has_entries(v->io, listed);
		if (any == 0)
			any = directory_has_entries(v->io, listed = v->wal_dir);
		if (any == -ENOMEM) {
			rc = verify_cannot_run(v, any, "tally verify: out of memory");
			goto out;
		}
		if (any < 0) {
			verify_problem(v, "%s offset 0: missing, and %s cannot be listed: %s",
				       manifest_path, listed, tally_strerror(any));
		} else if (any == 0) {
			char reason[TALLY_ERRMSG_SIZE];
			snprintf(reason, sizeof(reason), "%s: not a tally data directory (no MANIFEST, "
				 "no segment or WAL files)", dir);
			rc = verify_cannot_run(v, TALLY_E_NOTFOUND, reason);
			goto out;
		} else {
			verify_problem(v, "%s offset 0: missing, but segments/ or wal/ hold files (a "
				       "store opened now would refuse to start)", manifest_path);
		}
		rc = 0;
	} else if (rc == -ENOMEM) {
		rc = verify_cannot_run(v, rc, "tally verify: out of memory");
		goto out;
	} else if (rc) {
		verify_read_problem(v, manifest_path, 0, rc, NULL);
		rc = 0;
	} else {
		v->have_manifest = 1;
		rc = verify_manifest_tenants(v, manifest_path);
	}

	/* 2. The segment files the manifest names, then the rest of segments/. */
	for (uint32_t i = 0; v->have_manifest && i < v->m.file_count && !rc; i++)
		rc = verify_segment_file(v, v->m.file_ids[i], 1);
	if (!rc)
		rc = verify_segment_dir(v);

	/* 3. The WAL. */
	if (!rc)
		rc = verify_wal(v);

	if (rc)
		rc = verify_cannot_run(v, rc, "tally verify: out of memory");
	else
		rc = v->problem_count;
out:
	dir_lock_release(v->io, lock_fd);
	manifest_free(&v->m);
	rows_free(&v->r);
	bytebuf_free(&v->raw);
	free(v);
	return rc;
}
