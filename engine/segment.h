/*
 * segment.h — immutable columnar segment files.
 *
 * A segment is the rows of one tenant for one UTC day, sorted by time. A
 * segment file holds the segments written by one flush or one compaction,
 * grouped by tenant: for each tenant a string dictionary block, then that
 * tenant's segments (day ascending). A tenant's rows, sorted by time, are
 * cut into row groups: a big day into row groups of its own (at most
 * ROWGROUP_ROWS_MAX rows), consecutive small days (at most
 * ROWGROUP_SMALL_ROWS_MAX rows together) into one; a row group's columns are encoded
 * (codec.h) and zstd-compressed, either as one block per column or, when the
 * whole row group encodes to less than ROWGROUP_PACKED_BYTES_MAX, as one
 * packed block (so a tenant with three events a day does not pay twelve
 * block headers). Every block has an XXH3 checksum seeded with the file id;
 * a compressed footer indexes tenants, segments, row groups and blocks; a
 * fixed trailer locates the footer. Byte layout: docs/formats.md.
 *
 * A block only ever holds rows of one tenant, and a reader only reads the
 * blocks of the tenant it was asked for.
 */
#ifndef TALLY_SEGMENT_H
#define TALLY_SEGMENT_H

#include <stdint.h>
#include <stddef.h>

#include "codec.h"
#include "rows.h"
#include "strdict.h"
#include "tally.h"

/* 2: rollup blocks per tenant section. 3: scalar columns encoded against
 * their rows' type (CLASSED), cost against model and tokens (PRICED),
 * agents against projects and models against types, constant codes, and
 * segment time bounds in the footer to the minute. 4: rollup chunk blocks
 * of version 2 (a wraps column: sums past 64 bits) may appear. The reader
 * branches on the version only for the bounds: every version 2 column
 * layout is a version 3 layout, and version 3 is version 4 without wraps.
 * 5: the header's flags may hold SEGMENT_FLAG_RUN_NEXT; the rest is version
 * 4's. */
#define SEGMENT_VERSION 5
#define SEGMENT_VERSION_OLDEST 2
/* Header flag (version 5): the file was written by the same flush or
 * compaction as the file whose id is one less (its run, store.c). Refused
 * in older versions, as is any other bit. */
#define SEGMENT_FLAG_RUN_NEXT 1u
#define SEGMENT_HEADER_SIZE 32
#define SEGMENT_TRAILER_SIZE 40
#define SEGMENT_PATH_SIZE_MAX 4096
#define SEG_ROLLUP_LISTS 4 /* rollup chunk lists: minute, hour, day, day totals */

typedef struct seg_block {
	uint64_t offset;
	uint64_t checksum;
	uint32_t stored_size;
	uint32_t raw_size;
	uint8_t codec; /* enum block_codec */
} seg_block;

typedef struct seg_rowgroup {
	int64_t time_base_us; /* stored times are relative to this: the minimum of
			       * the segment holding the row group's first row */
	uint64_t row_start;   /* first row, counted within the tenant section */
	uint32_t rows;
	uint32_t first_block; /* index into segment_file.blocks */
	uint8_t packed;       /* 1: one block; 0: TALLY_COL_COUNT blocks */
} seg_rowgroup;

/* A segment's rows are rows [row_start, row_start + rows) of its tenant
 * section: they begin at row first_row of row group first_rowgroup and
 * run through rowgroup_count row groups. Small days share row groups, so a
 * row group may also hold rows of other segments (other days). */
typedef struct seg_segment {
	int64_t time_min_us; /* bounds of the rows' times (segment_time_bounds) */
	int64_t time_max_us;
	uint64_t row_start;
	int32_t day;
	uint32_t rows;
	uint32_t first_rowgroup;
	uint32_t first_row;
	uint32_t rowgroup_count;
} seg_segment;

typedef struct seg_tenant {
	char name[TALLY_TENANT_SIZE_MAX + 1];
	uint32_t tenant_id;
	uint32_t first_segment;
	uint32_t segment_count;
	uint32_t first_rowgroup; /* the section's row groups, in row order */
	uint32_t rowgroup_count;
	seg_block dict;
	/* Rollup pages of the section's rows (rollup.h): a group table block
	 * (every section has one: rollup_group_count >= 1) and, per chunk list (minute,
	 * hour, day, day totals), chunks [first_chunk, first_chunk +
	 * chunk_count) of segment_file.chunks, by time. Minute cells are complete for buckets
	 * at or after minute_from_us and absent before it (retention). */
	seg_block rollup_groups;
	uint32_t rollup_group_count;
	uint32_t first_chunk[SEG_ROLLUP_LISTS];
	uint32_t chunk_count[SEG_ROLLUP_LISTS];
	uint32_t rollup_cells[SEG_ROLLUP_LISTS];
	int64_t minute_from_us;
} seg_tenant;

/* A rollup chunk: cells of buckets [first_bucket, the next chunk's first). */
typedef struct seg_chunk {
	int64_t first_bucket;
	uint32_t cells;
	seg_block block;
} seg_chunk;

typedef struct segment_file {
	char path[SEGMENT_PATH_SIZE_MAX];
	const tally_io *io;
	int fd;
	uint64_t file_id;
	uint32_t version; /* the header's format version */
	uint32_t flags;   /* the header's flags (SEGMENT_FLAG_RUN_NEXT) */
	uint64_t size; /* bytes on disk */
	uint64_t footer_offset; /* where the footer starts (the trailer says) */
	uint64_t rows;
	seg_tenant *tenants;
	seg_segment *segments;
	seg_rowgroup *rowgroups;
	seg_block *blocks;
	seg_chunk *chunks;
	uint32_t chunk_total;
	uint32_t tenant_count;
	uint32_t segment_count;
	uint32_t rowgroup_count;
	uint32_t block_count;
	/* The store's bookkeeping, under store->lock (zero from
	 * segment_file_open): a reader that reads the file without the lock (a
	 * backfill's history probe) pins it; compaction leaves a pinned input
	 * open, marked retired, and the last unpin closes and unlinks it. */
	uint32_t pins;
	int retired;
} segment_file;

/* Path of a segment file: DIR/<file_id as 16 hex digits>.seg */
void segment_file_name(char *name, size_t size, uint64_t file_id);

/* ---- writing ------------------------------------------------------------ */
typedef struct segment_writer segment_writer;

/* Starts DIR/<id>.seg.tmp, whose header holds `flags` (SEGMENT_FLAG_RUN_NEXT
 * or 0). 0 or -errno / -ENOMEM, with errmsg set. */
int segment_writer_open(const tally_io *io, const char *dir, uint64_t file_id, uint32_t flags,
			int zstd_level, segment_writer **out, char *errmsg);

/* A tenant section's rollup blocks, raw (the writer compresses them). */
typedef struct seg_chunk_in {
	int64_t first_bucket;
	uint32_t cells;         /* >= 1 */
	const uint8_t *raw;
	size_t size;
} seg_chunk_in;

typedef struct seg_rollup_in {
	const uint8_t *groups_raw;
	size_t groups_size;
	uint32_t group_count;     /* >= 1 */
	const seg_chunk_in *chunks; /* the chunks of each list, in list order */
	uint32_t chunk_count[SEG_ROLLUP_LISTS];
	int64_t minute_from_us;   /* a whole minute */
} seg_rollup_in;

/*
 * Adds one tenant's rows (any order; they are sorted by time here, stable)
 * with the dictionaries their dimension codes refer to, and the rollup
 * blocks of those rows (codes in the same dictionaries; at least one
 * group, or TALLY_E_INVALID). Tenants must be added at most once per file.
 * Rows may be empty (nothing is written).
 */
int segment_writer_add_tenant(segment_writer *w, uint32_t tenant_id, const char *name,
			      const rows *r, const strdict dict[DIM_COUNT],
			      const seg_rollup_in *rollup);

/* Writes footer and trailer, fsyncs, renames to DIR/<id>.seg, fsyncs DIR.
 * Frees the writer whatever happens (the temp file is removed on failure).
 * Sets *size to the file size. */
int segment_writer_finish(segment_writer *w, uint64_t *size, char *errmsg);

/* Abandons the file: closes and unlinks the temp file, frees the writer. */
void segment_writer_abort(segment_writer *w);

/* ---- reading ------------------------------------------------------------ */

/* Opens DIR/<id>.seg and loads its index (header, trailer and footer
 * verified). Returns 0, -errno, TALLY_E_CORRUPT or TALLY_E_VERSION with
 * errmsg naming the path and offset. */
int segment_file_open(const tally_io *io, const char *dir, uint64_t file_id,
		      segment_file **out, char *errmsg);
void segment_file_close(segment_file *f);

/* Loads tenant section t's dictionaries into dict[] (which must be empty). */
int segment_read_dict(const segment_file *f, uint32_t t, strdict dict[DIM_COUNT],
		      char *errmsg);

/* Column mask: bit (1 << enum tally_column). */
#define SEGMENT_COLUMNS_ALL ((1u << TALLY_COL_COUNT) - 1)

/* A segment's time bounds as the footer of a file of `version` holds them,
 * for rows from first_us to last_us: version 2 the exact times; since
 * version 3 the start of first_us's UTC minute and the last microsecond of
 * last_us's (8 bytes of footer per segment less; pruning by minute). */
#define SEGMENT_BOUND_US UINT64_C(60000000)
void segment_time_bounds(uint32_t version, int64_t first_us, int64_t last_us, int64_t *min_us,
			 int64_t *max_us);

/* The columns whose decoding mask needs: a scalar column and the model
 * are encoded against their rows' type, cost also against their model and
 * tokens, an agent against its project (codec.h), so those are decoded
 * first. mask plus those columns. */
uint32_t segment_columns_needed(uint32_t mask);

/*
 * Decodes row group g into r (reset first). The columns in
 * segment_columns_needed(mask) are decoded (the others are left with
 * unspecified values); the checksum of every block read is verified. 0,
 * -errno, -ENOMEM or TALLY_E_CORRUPT.
 */
int segment_read_rowgroup(const segment_file *f, uint32_t g, uint32_t mask, rows *r,
			  char *errmsg);

/*
 * Checks row `row` of r, read with every column from row group g of f's
 * tenant section t, for meaning: its dictionary codes inside dict (the
 * section's, segment_read_dict) and its status known. The reader checks
 * checksums and structure only, and a row's codes index strdicts, so each
 * reader of rows that looks strings up checks them first. 0, or
 * TALLY_E_CORRUPT with errmsg naming the file, the column's block, the
 * tenant, the row group and the row.
 */
int segment_row_check(const segment_file *f, uint32_t t, uint32_t g, const rows *r,
		      const strdict dict[DIM_COUNT], uint32_t row, char *errmsg);

/* segment_row_check of every row of r. */
int segment_rows_check(const segment_file *f, uint32_t t, uint32_t g, const rows *r,
		       const strdict dict[DIM_COUNT], char *errmsg);

/*
 * Reads a block's raw bytes (verified and decompressed) into out. Used by
 * the readers above and by inspect/verify.
 */
int segment_read_block(const segment_file *f, const seg_block *b, bytebuf *out,
		       char *errmsg);

/* Splits a packed row group's raw block into per-column byte ranges. */
int segment_split_packed(const uint8_t *raw, size_t size, const uint8_t *col[TALLY_COL_COUNT],
			 size_t col_size[TALLY_COL_COUNT]);

/* Index of the tenant section with this id, or -1. */
int64_t segment_file_find_tenant(const segment_file *f, uint32_t tenant_id);

#endif /* TALLY_SEGMENT_H */
