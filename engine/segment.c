/*
 * segment.c — writing and reading segment files (see segment.h; the byte
 * layout is in docs/formats.md, "Segment files").
 *
 * File layout
 *     header  (32 bytes)  magic "TLYSEG01", version u32, flags u32, file id
 *                         u64, XXH3-64 of the first 24 bytes
 *     blocks              tenant sections back to back: a dictionary block,
 *                         then the row group blocks of each segment
 *     footer              the index, serialised with varints, usually zstd
 *     trailer (40 bytes)  footer offset u64, stored size u32, raw size u32,
 *                         codec u8 + 7 zero bytes, footer checksum u64,
 *                         magic "TLYSEGE1"
 *
 * Invariants
 *   1. A file is written once, to a temp name, fsynced, then renamed; it is
 *      never modified after the rename.
 *   2. Blocks lie between the header and the footer, in index order, never
 *      overlapping. Every checksum is XXH3-64 seeded with the file id, so a
 *      block copied from another file fails its check.
 *   3. Within a segment, rows are sorted by time (stable with respect to the
 *      order they were given in); segments of a tenant are in day order.
 *   4. The reader trusts nothing: every size, count and offset in the footer
 *      is checked against the file before use.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "endian.h"
#include "tally_limits.h"
#include "segment.h"
#include "sort.h"
#include "wal.h"

#define ROLLUP_MINUTE_US_SEG (INT64_C(60) * 1000000) /* minute_from is stored in minutes */

#define HEADER_MAGIC "TLYSEG01"
/* The farthest day from the epoch, either way, whose every microsecond is
 * an int64: a footer's days past it are refused (found by
 * fuzz/fuzz_segment.c: day 233,435,816 overflowed the segment's bounds). */
#define SEGMENT_DAY_MAX (INT64_MAX / TALLY_US_PER_DAY - 1)
#define TRAILER_MAGIC "TLYSEGE1"
#define WRITE_CHUNK_BYTES (1u << 20)
/* A block's raw size: a tenant section's dictionary is one block, and a
 * memtable (at most TALLY_MEMTABLE_BYTES_MAX_LIMIT plus one call) always
 * fits. 256 MiB before 2026-12-02: a tenant key's long distinct strings
 * could make a memtable whose dictionary no flush could write. */
#define BLOCK_RAW_BYTES_MAX (1u << 30)
_Static_assert(TALLY_MEMTABLE_BYTES_MAX_LIMIT + 2 * WAL_RECORD_PAYLOAD_MAX <= BLOCK_RAW_BYTES_MAX,
	       "a memtable's dictionary fits one block");


void segment_file_name(char *name, size_t size, uint64_t file_id)
{
	snprintf(name, size, "%016" PRIx64 ".seg", file_id);
}

/* ======================================================================== */
/* Writer                                                                    */
/* ======================================================================== */

/* The streams of like blocks whose worth compressing is judged apart
 * (codec.h block_gate): each column's, packed row groups, dictionaries,
 * rollup group tables and each rollup chunk list. */
enum {
	STREAM_PACKED = TALLY_COL_COUNT,
	STREAM_DICT,
	STREAM_ROLLUP_GROUPS,
	STREAM_ROLLUP_LIST,
	STREAM_COUNT = STREAM_ROLLUP_LIST + SEG_ROLLUP_LISTS
};

struct segment_writer {
	const tally_io *io;
	char dir[SEGMENT_PATH_SIZE_MAX];
	char name[64];
	char tmp_name[80];
	int fd;
	int zstd_level;
	uint64_t file_id;
	uint64_t offset;       /* file offset of out.data[0] */
	uint64_t block_end;    /* end of the last block written (for offset deltas) */
	bytebuf out;           /* bytes not yet written to the file */
	bytebuf footer;        /* raw footer being built */
	bytebuf column[TALLY_COL_COUNT];
	bytebuf packed;
	bytebuf scratch;
	/* Per row group gather buffers (ROWGROUP_ROWS_MAX entries each). */
	int64_t *g_time;
	uint64_t *g_u64a;
	uint64_t *g_u64b;
	int64_t *g_i64;
	uint32_t *g_u32;
	uint8_t *g_u8;
	uint8_t *g_kind;
	uint32_t *g_offset;
	bytebuf g_id;
	uint32_t *g_code;
	uint32_t *g_type;      /* the classes of the scalar columns and models */
	uint32_t *g_project;   /* the classes of the agents */
	uint32_t *g_model;     /* the cost column's price models */
	uint32_t *order;       /* sort permutation of a tenant's rows */
	uint32_t order_capacity;
	block_gate gate[STREAM_COUNT];
};

static int writer_flush_out(segment_writer *w)
{
	if (!w->out.size)
		return 0;
	int rc = tally_io_write_all(w->io, w->fd, w->out.data, w->out.size, w->offset);
	if (rc)
		return rc;
	w->offset += w->out.size;
	bytebuf_reset(&w->out);
	return 0;
}

static uint64_t writer_position(const segment_writer *w)
{
	return w->offset + w->out.size;
}

/* Appends one block of the stream (compressing raw when its gate says so)
 * to the file and its index entry to the footer. */
static int writer_block(segment_writer *w, int stream, const uint8_t *raw, size_t raw_size)
{
	if (raw_size > BLOCK_RAW_BYTES_MAX)
		return TALLY_E_LIMIT;
	uint64_t start = writer_position(w);
	size_t before = w->out.size;
	uint8_t codec;
	int rc = block_compress_gated(&w->out, raw, raw_size, w->zstd_level, &w->gate[stream],
				      &codec);
	if (rc)
		return rc;
	size_t stored = w->out.size - before;
	uint64_t checksum = XXH3_64bits_withSeed(w->out.data + before, stored, w->file_id);
	uint8_t fixed[9];
	fixed[0] = codec;
	le_put_u64(fixed + 1, checksum);
	if ((rc = varint_append(&w->footer, start - w->block_end)) ||
	    (rc = varint_append(&w->footer, stored)) ||
	    (rc = varint_append(&w->footer, raw_size)) ||
	    (rc = bytebuf_append(&w->footer, fixed, sizeof(fixed))))
		return rc;
	w->block_end = start + stored;
	if (w->out.size >= WRITE_CHUNK_BYTES)
		return writer_flush_out(w);
	return 0;
}

int segment_writer_open(const tally_io *io, const char *dir, uint64_t file_id, uint32_t flags,
			int zstd_level, segment_writer **out, char *errmsg)
{
	*out = NULL;
	assert((flags & ~SEGMENT_FLAG_RUN_NEXT) == 0);
	segment_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->io = io;
	w->fd = -1;
	w->file_id = file_id;
	w->zstd_level = zstd_level;
	snprintf(w->dir, sizeof(w->dir), "%s", dir);
	segment_file_name(w->name, sizeof(w->name), file_id);
	snprintf(w->tmp_name, sizeof(w->tmp_name), "%s.tmp", w->name);
	size_t n = ROWGROUP_ROWS_MAX;
	w->g_time = malloc(n * sizeof(int64_t));
	w->g_u64a = malloc(n * sizeof(uint64_t));
	w->g_u64b = malloc(n * sizeof(uint64_t));
	w->g_i64 = malloc(n * sizeof(int64_t));
	w->g_u32 = malloc(n * sizeof(uint32_t));
	w->g_u8 = malloc(n);
	w->g_kind = malloc(n);
	w->g_offset = malloc((n + 1) * sizeof(uint32_t));
	w->g_code = malloc(n * sizeof(uint32_t));
	w->g_type = malloc(n * sizeof(uint32_t));
	w->g_project = malloc(n * sizeof(uint32_t));
	w->g_model = malloc(n * sizeof(uint32_t));
	if (!w->g_time || !w->g_u64a || !w->g_u64b || !w->g_i64 || !w->g_u32 || !w->g_u8 ||
	    !w->g_kind || !w->g_offset || !w->g_code || !w->g_type || !w->g_model ||
	    !w->g_project) {
		segment_writer_abort(w);
		return -ENOMEM;
	}
	char path[SEGMENT_PATH_SIZE_MAX + 96];
	snprintf(path, sizeof(path), "%s/%s", dir, w->tmp_name);
	int fd = io->open(io, path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	if (fd < 0) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "create %s: %s", path,
				 tally_strerror(fd));
		segment_writer_abort(w);
		return fd;
	}
	w->fd = fd;
	uint8_t header[SEGMENT_HEADER_SIZE];
	memcpy(header, HEADER_MAGIC, 8);
	le_put_u32(header + 8, SEGMENT_VERSION);
	le_put_u32(header + 12, flags);
	le_put_u64(header + 16, file_id);
	le_put_u64(header + 24, XXH3_64bits(header, 24));
	int rc = bytebuf_append(&w->out, header, sizeof(header));
	if (rc) {
		segment_writer_abort(w);
		return rc;
	}
	w->block_end = SEGMENT_HEADER_SIZE;
	*out = w;
	return 0;
}

static int dict_serialise(bytebuf *b, const strdict dict[DIM_COUNT])
{
	int rc;
	for (int d = 0; d < DIM_COUNT; d++) {
		if ((rc = varint_append(b, dict[d].count)))
			return rc;
		for (uint32_t c = 0; c < dict[d].count; c++) {
			tally_str s = strdict_get(&dict[d], c);
			if ((rc = varint_append(b, s.len)) || (rc = bytebuf_append(b, s.ptr, s.len)))
				return rc;
		}
	}
	return 0;
}

/* Fills w->order with the rows of r sorted by time, stable. */
static int sort_rows(segment_writer *w, const rows *r)
{
	if (r->count > w->order_capacity) {
		uint32_t *order = realloc(w->order, sizeof(*order) * r->count);
		if (!order)
			return -ENOMEM;
		w->order = order;
		w->order_capacity = r->count;
	}
	int sorted = 1;
	for (uint32_t i = 1; i < r->count && sorted; i++)
		sorted = r->time_us[i - 1] <= r->time_us[i];
	if (sorted) {
		for (uint32_t i = 0; i < r->count; i++)
			w->order[i] = i;
		return 0;
	}
	int64_t low = r->time_us[0];
	for (uint32_t i = 1; i < r->count; i++)
		low = r->time_us[i] < low ? r->time_us[i] : low;
	sort_pair *keys = malloc(sizeof(*keys) * 2 * (size_t)r->count);
	if (!keys)
		return -ENOMEM;
	for (uint32_t i = 0; i < r->count; i++)
		keys[i] = (sort_pair){(uint64_t)r->time_us[i] - (uint64_t)low, i};
	sort_pairs(keys, keys + r->count, r->count);
	for (uint32_t i = 0; i < r->count; i++)
		w->order[i] = (uint32_t)keys[i].value;
	free(keys);
	return 0;
}

static int64_t day_of(int64_t time_us)
{
	int64_t day = time_us / TALLY_US_PER_DAY;
	if (time_us % TALLY_US_PER_DAY < 0)
		day--;
	return day;
}

/* Encodes rows order[first .. first+count) of r as one row group. Times are
 * stored relative to time_base_us, the segment's minimum time (which the
 * footer holds), so the first value costs a byte, not eight. */
static int writer_rowgroup(segment_writer *w, const rows *r, const uint32_t *order,
			   uint32_t count, int64_t time_base_us)
{
	int rc;
	for (int c = 0; c < TALLY_COL_COUNT; c++)
		bytebuf_reset(&w->column[c]);
	for (uint32_t i = 0; i < count; i++)
		w->g_time[i] = (int64_t)((uint64_t)r->time_us[order[i]] - (uint64_t)time_base_us);
	if ((rc = codec_time_encode(&w->column[TALLY_COL_TIME], w->g_time, count)))
		return rc;

	bytebuf_reset(&w->g_id);
	w->g_offset[0] = 0;
	for (uint32_t i = 0; i < count; i++) {
		size_t size;
		const uint8_t *bytes = rows_id(r, order[i], &size);
		if ((rc = bytebuf_append(&w->g_id, bytes, size)))
			return rc;
		w->g_kind[i] = r->id_kind[order[i]];
		w->g_offset[i + 1] = (uint32_t)w->g_id.size;
	}
	if ((rc = codec_ids_encode(&w->column[TALLY_COL_EVENT_ID], w->g_kind, w->g_offset,
				   w->g_id.data, count)))
		return rc;

	/* Agents are encoded against their rows' project, models against their
	 * type (both decoded first); the other dimensions alone. */
	for (int d = 0; d < DIM_COUNT; d++) {
		uint32_t *codes = d == DIM_TYPE ? w->g_type : d == DIM_PROJECT ? w->g_project :
				  d == DIM_MODEL ? w->g_model : w->g_code;
		const uint32_t *classes = d == DIM_AGENT ? w->g_project :
					  d == DIM_MODEL ? w->g_type : NULL;
		for (uint32_t i = 0; i < count; i++)
			codes[i] = r->dim[d][order[i]];
		if ((rc = codec_codes_encode_classed(&w->column[TALLY_COL_TYPE + d], codes, count,
						     classes)))
			return rc;
	}
	for (uint32_t i = 0; i < count; i++)
		w->g_u8[i] = r->status[order[i]];
	if ((rc = codec_u8_encode(&w->column[TALLY_COL_STATUS], w->g_u8, count)))
		return rc;
	for (uint32_t i = 0; i < count; i++) {
		w->g_u64a[i] = r->tokens_in[order[i]];
		w->g_u64b[i] = r->tokens_out[order[i]];
		w->g_i64[i] = r->cost_micros[order[i]];
		w->g_u32[i] = r->duration_ms[order[i]];
	}
	/* The scalars are encoded against the type (and, for cost, the model
	 * and tokens) of their rows, which a reader decodes first. */
	const codec_cost_context priced = { .classes = w->g_type, .models = w->g_model,
					    .tokens_in = w->g_u64a, .tokens_out = w->g_u64b };
	if ((rc = codec_u64_encode_classed(&w->column[TALLY_COL_TOKENS_IN], w->g_u64a, count,
					   w->g_type)) ||
	    (rc = codec_u64_encode_classed(&w->column[TALLY_COL_TOKENS_OUT], w->g_u64b, count,
					   w->g_type)) ||
	    (rc = codec_cost_encode(&w->column[TALLY_COL_COST_MICROS], w->g_i64, count, &priced)) ||
	    (rc = codec_u32_encode_classed(&w->column[TALLY_COL_DURATION_MS], w->g_u32, count,
					   w->g_type)))
		return rc;

	size_t total = 0;
	for (int c = 0; c < TALLY_COL_COUNT; c++)
		total += w->column[c].size;
	uint8_t packed = total < ROWGROUP_PACKED_BYTES_MAX;
	if ((rc = varint_append(&w->footer, count)) ||
	    (rc = bytebuf_append(&w->footer, &packed, 1)))
		return rc;
	if (packed) {
		bytebuf_reset(&w->packed);
		for (int c = 0; c < TALLY_COL_COUNT; c++)
			if ((rc = varint_append(&w->packed, w->column[c].size)))
				return rc;
		for (int c = 0; c < TALLY_COL_COUNT; c++)
			if ((rc = bytebuf_append(&w->packed, w->column[c].data, w->column[c].size)))
				return rc;
		return writer_block(w, STREAM_PACKED, w->packed.data, w->packed.size);
	}
	for (int c = 0; c < TALLY_COL_COUNT; c++)
		if ((rc = writer_block(w, c, w->column[c].data, w->column[c].size)))
			return rc;
	return 0;
}

int segment_writer_add_tenant(segment_writer *w, uint32_t tenant_id, const char *name,
			      const rows *r, const strdict dict[DIM_COUNT],
			      const seg_rollup_in *rollup)
{
	if (!r->count)
		return 0;
	/* Check before writing (read back is checked again by the reader): a
	 * code past its dictionary, an unknown status or rows without rollup
	 * pages (which every reader refuses) is a caller bug. */
	if (!rollup || !rollup->group_count)
		return TALLY_E_INVALID;
	for (uint32_t i = 0; i < r->count; i++) {
		if (r->status[i] >= TALLY_STATUS_COUNT)
			return TALLY_E_INVALID;
		for (int d = 0; d < DIM_COUNT; d++)
			if (r->dim[d][i] >= dict[d].count)
				return TALLY_E_INVALID;
	}
	int rc = sort_rows(w, r);
	if (rc)
		return rc;
	/* Days (segments) as runs of the sorted order. */
	uint32_t segment_count = 0;
	for (uint32_t i = 0; i < r->count; i++)
		if (!i || day_of(r->time_us[w->order[i]]) != day_of(r->time_us[w->order[i - 1]]))
			segment_count++;
	uint32_t *day_start = malloc(sizeof(*day_start) * ((size_t)segment_count + 1));
	if (!day_start)
		return -ENOMEM;
	for (uint32_t i = 0, k = 0; i < r->count; i++)
		if (!i || day_of(r->time_us[w->order[i]]) != day_of(r->time_us[w->order[i - 1]]))
			day_start[k++] = i;
	day_start[segment_count] = r->count;

	size_t name_size = strlen(name);
	if ((rc = varint_append(&w->footer, tenant_id)) ||
	    (rc = varint_append(&w->footer, name_size)) ||
	    (rc = bytebuf_append(&w->footer, name, name_size)))
		goto out;
	bytebuf_reset(&w->scratch);
	if ((rc = dict_serialise(&w->scratch, dict)) ||
	    (rc = writer_block(w, STREAM_DICT, w->scratch.data, w->scratch.size)) ||
	    (rc = varint_append(&w->footer, segment_count)))
		goto out;
	int64_t previous_day = 0;
	for (uint32_t k = 0; k < segment_count; k++) {
		uint32_t start = day_start[k], end = day_start[k + 1];
		int64_t day = day_of(r->time_us[w->order[start]]);
		int64_t time_min, time_max;
		segment_time_bounds(SEGMENT_VERSION, r->time_us[w->order[start]],
				    r->time_us[w->order[end - 1]], &time_min, &time_max);
		uint64_t day_field = k ? (uint64_t)(day - previous_day) : zigzag_encode(day);
		previous_day = day;
		if ((rc = varint_append(&w->footer, day_field)) ||
		    (rc = varint_append(&w->footer, end - start)) ||
		    (rc = varint_append(&w->footer,
					(uint64_t)(time_min - day * TALLY_US_PER_DAY) /
						SEGMENT_BOUND_US)) ||
		    (rc = varint_append(&w->footer,
					((uint64_t)time_max - (uint64_t)time_min) / SEGMENT_BOUND_US)))
			goto out;
	}

	/*
	 * Row groups: a day of more than ROWGROUP_SMALL_ROWS_MAX rows gets row
	 * groups of its own (ROWGROUP_ROWS_MAX rows each); consecutive smaller
	 * days share one row group up to ROWGROUP_SMALL_ROWS_MAX rows, so the
	 * long tail pays one block, one checksum and one set of column headers
	 * for many days. Times are stored relative to the minimum of the day
	 * the row group starts in.
	 */
	uint32_t rowgroup_count = 0;
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1 && (rc = varint_append(&w->footer, rowgroup_count)))
			goto out;
		for (uint32_t k = 0; k < segment_count && !rc;) {
			uint32_t start = day_start[k];
			int64_t base, unused;
			segment_time_bounds(SEGMENT_VERSION, r->time_us[w->order[start]],
					    r->time_us[w->order[start]], &base, &unused);
			uint32_t rows_k = day_start[k + 1] - start;
			if (rows_k > ROWGROUP_SMALL_ROWS_MAX) {
				for (uint32_t g = start; g < day_start[k + 1] && !rc; g += ROWGROUP_ROWS_MAX) {
					uint32_t left = day_start[k + 1] - g;
					uint32_t count = left < ROWGROUP_ROWS_MAX ? left : ROWGROUP_ROWS_MAX;
					if (pass == 0)
						rowgroup_count++;
					else
						rc = writer_rowgroup(w, r, w->order + g, count, base);
				}
				k++;
				continue;
			}
			uint32_t j = k + 1;
			while (j < segment_count && day_start[j + 1] - day_start[j] <= ROWGROUP_SMALL_ROWS_MAX &&
			       day_start[j + 1] - start <= ROWGROUP_SMALL_ROWS_MAX)
				j++;
			if (pass == 0)
				rowgroup_count++;
			else
				rc = writer_rowgroup(w, r, w->order + start, day_start[j] - start, base);
			k = j;
		}
	}
	/* Rollup: the first minute with complete minute cells, the group table
	 * (count, block), then per resolution the chunks (count; per chunk the
	 * first bucket, the cells and the block). */
	if (rc || (rc = varint_append(&w->footer,
				      zigzag_encode(rollup->minute_from_us / ROLLUP_MINUTE_US_SEG))) ||
	    (rc = varint_append(&w->footer, rollup->group_count)))
		goto out;
	if ((rc = writer_block(w, STREAM_ROLLUP_GROUPS, rollup->groups_raw, rollup->groups_size)))
		goto out;
	for (int list = 0, at = 0; list < SEG_ROLLUP_LISTS && !rc; list++) {
		uint32_t count = rollup->chunk_count[list];
		if ((rc = varint_append(&w->footer, count)))
			break;
		for (uint32_t k = 0; k < count && !rc; k++, at++) {
			const seg_chunk_in *c = &rollup->chunks[at];
			uint64_t bucket_field = k ? (uint64_t)(c->first_bucket - c[-1].first_bucket)
						  : zigzag_encode(c->first_bucket);
			if (!(rc = varint_append(&w->footer, bucket_field)) &&
			    !(rc = varint_append(&w->footer, c->cells)))
				rc = writer_block(w, STREAM_ROLLUP_LIST + list, c->raw, c->size);
		}
	}
out:
	free(day_start);
	return rc;
}

static void writer_free(segment_writer *w)
{
	if (w->fd >= 0)
		w->io->close(w->io, w->fd);
	bytebuf_free(&w->out);
	bytebuf_free(&w->footer);
	for (int c = 0; c < TALLY_COL_COUNT; c++)
		bytebuf_free(&w->column[c]);
	bytebuf_free(&w->packed);
	bytebuf_free(&w->scratch);
	bytebuf_free(&w->g_id);
	free(w->g_time);
	free(w->g_u64a);
	free(w->g_u64b);
	free(w->g_i64);
	free(w->g_u32);
	free(w->g_u8);
	free(w->g_kind);
	free(w->g_offset);
	free(w->g_code);
	free(w->g_type);
	free(w->g_project);
	free(w->g_model);
	free(w->order);
	free(w);
}

void segment_writer_abort(segment_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0) {
		char path[SEGMENT_PATH_SIZE_MAX + 96];
		snprintf(path, sizeof(path), "%s/%s", w->dir, w->tmp_name);
		w->io->unlink(w->io, path);
	}
	writer_free(w);
}

int segment_writer_finish(segment_writer *w, uint64_t *size, char *errmsg)
{
	const char *op = "write";
	uint64_t footer_offset = writer_position(w);
	uint8_t codec;
	size_t before = w->out.size;
	int rc = block_compress(&w->out, w->footer.data, w->footer.size, w->zstd_level, &codec);
	if (!rc && w->footer.size > SEGMENT_FILE_FOOTER_BYTES_MAX)
		rc = TALLY_E_LIMIT;
	if (rc)
		goto fail;
	size_t stored = w->out.size - before;
	uint8_t trailer[SEGMENT_TRAILER_SIZE] = {0};
	le_put_u64(trailer, footer_offset);
	le_put_u32(trailer + 8, (uint32_t)stored);
	le_put_u32(trailer + 12, (uint32_t)w->footer.size);
	trailer[16] = codec;
	le_put_u64(trailer + 24, XXH3_64bits_withSeed(w->out.data + before, stored, w->file_id));
	memcpy(trailer + 32, TRAILER_MAGIC, 8);
	if ((rc = bytebuf_append(&w->out, trailer, sizeof(trailer))))
		goto fail;
	if ((rc = writer_flush_out(w)))
		goto fail;
	op = "fsync/rename";
	if ((rc = tally_io_durable_publish(w->io, w->fd, w->dir, w->tmp_name, w->name))) {
		/* The rename may have happened (the directory fsync after it
		 * failed): the file is not published, so its final name goes
		 * too, or each retry of a flush or compaction would leave a
		 * file behind until the next open's orphan removal. An id is
		 * never reused, so that name is this writer's alone. */
		char path[SEGMENT_PATH_SIZE_MAX + 96];
		snprintf(path, sizeof(path), "%s/%s", w->dir, w->name);
		w->io->unlink(w->io, path);
		goto fail;
	}
	*size = w->offset;
	writer_free(w);
	return 0;
fail:
	if (errmsg)
		snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s segment file %s/%s: %s", op, w->dir,
			 w->tmp_name, tally_strerror(rc));
	segment_writer_abort(w);
	return rc;
}

/* ======================================================================== */
/* Reader                                                                    */
/* ======================================================================== */

#define CORRUPT(f, offset, ...)                                                            \
	do {                                                                               \
		if (errmsg) {                                                              \
			int n_ = snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset %" PRIu64 ": ", \
					  (f)->path, (uint64_t)(offset));                  \
			if (n_ > 0 && n_ < TALLY_ERRMSG_SIZE)                              \
				snprintf(errmsg + n_, TALLY_ERRMSG_SIZE - n_, __VA_ARGS__);      \
		}                                                                          \
		return TALLY_E_CORRUPT;                                                    \
	} while (0)

typedef struct footer_parser {
	const uint8_t *p;
	const uint8_t *end;
} footer_parser;

static int fp_varint(footer_parser *fp, uint64_t *v)
{
	return varint_get(&fp->p, fp->end, v);
}

static int grow_array(void **array, uint32_t *capacity, uint32_t count, size_t element)
{
	if (count < *capacity)
		return 0;
	uint32_t c = *capacity ? *capacity * 2 : 16;
	void *a = realloc(*array, (size_t)c * element);
	if (!a)
		return -ENOMEM;
	*array = a;
	*capacity = c;
	return 0;
}

static int parse_block(segment_file *f, footer_parser *fp, uint64_t *block_end,
		       uint64_t footer_offset, seg_block *b, char *errmsg)
{
	uint64_t delta, stored, raw;
	if (fp_varint(fp, &delta) || fp_varint(fp, &stored) || fp_varint(fp, &raw) ||
	    fp->end - fp->p < 9)
		CORRUPT(f, footer_offset, "footer truncated in a block entry");
	b->codec = fp->p[0];
	b->checksum = le_get_u64(fp->p + 1);
	fp->p += 9;
	if (delta > footer_offset || stored > footer_offset || raw > BLOCK_RAW_BYTES_MAX ||
	    *block_end + delta + stored > footer_offset || b->codec > BLOCK_CODEC_ZSTD ||
	    (b->codec == BLOCK_CODEC_RAW && stored != raw))
		CORRUPT(f, footer_offset, "footer names an impossible block (offset %" PRIu64
			", size %" PRIu64 ")", *block_end + delta, stored);
	b->offset = *block_end + delta;
	b->stored_size = (uint32_t)stored;
	b->raw_size = (uint32_t)raw;
	*block_end = b->offset + stored;
	return 0;
}

static int parse_footer(segment_file *f, const uint8_t *data, size_t size,
			uint64_t footer_offset, char *errmsg)
{
	footer_parser fp = {data, data + size}; /* data is never NULL: block_decompress */
	uint32_t tenant_cap = 0, segment_cap = 0, rowgroup_cap = 0, block_cap = 0, chunk_cap = 0;
	uint64_t block_end = SEGMENT_HEADER_SIZE;
	int rc;
	while (fp.p < fp.end) {
		if ((rc = grow_array((void **)&f->tenants, &tenant_cap, f->tenant_count,
				     sizeof(seg_tenant))))
			return rc;
		seg_tenant *t = &f->tenants[f->tenant_count];
		memset(t, 0, sizeof(*t));
		uint64_t tenant_id, name_size, segment_count;
		if (fp_varint(&fp, &tenant_id) || fp_varint(&fp, &name_size) ||
		    tenant_id >= TENANT_COUNT_MAX || name_size == 0 ||
		    name_size > TALLY_TENANT_SIZE_MAX || (uint64_t)(fp.end - fp.p) < name_size)
			CORRUPT(f, footer_offset, "footer: bad tenant entry %u", f->tenant_count);
		t->tenant_id = (uint32_t)tenant_id;
		memcpy(t->name, fp.p, name_size);
		t->name[name_size] = 0;
		fp.p += name_size;
		if ((rc = parse_block(f, &fp, &block_end, footer_offset, &t->dict, errmsg)))
			return rc;
		if (fp_varint(&fp, &segment_count) || segment_count == 0 ||
		    segment_count > (uint64_t)(fp.end - fp.p))
			CORRUPT(f, footer_offset, "footer: bad segment count for tenant %s", t->name);
		t->first_segment = f->segment_count;
		t->segment_count = (uint32_t)segment_count;
		int64_t previous_day = 0;
		uint64_t tenant_rows = 0;
		for (uint64_t s = 0; s < segment_count; s++) {
			if ((rc = grow_array((void **)&f->segments, &segment_cap, f->segment_count,
					     sizeof(seg_segment))))
				return rc;
			seg_segment *seg = &f->segments[f->segment_count];
			uint64_t day, rows_count, time_min, span;
			if (fp_varint(&fp, &day) || fp_varint(&fp, &rows_count) ||
			    fp_varint(&fp, &time_min) || fp_varint(&fp, &span))
				CORRUPT(f, footer_offset, "footer truncated in tenant %s", t->name);
			/* The first day is absolute, the others are steps from the last. */
			if (s && (day == 0 || day > (uint64_t)INT32_MAX))
				CORRUPT(f, footer_offset, "footer: days out of order in tenant %s", t->name);
			int64_t d = s ? previous_day + (int64_t)day : zigzag_decode(day);
			/* Version 2: microseconds; since 3: whole minutes, the max
			 * bound at the end of its minute. */
			uint64_t unit = f->version >= 3 ? SEGMENT_BOUND_US : 1;
			uint64_t day_units = (uint64_t)TALLY_US_PER_DAY / unit;
			if (d < -SEGMENT_DAY_MAX || d > SEGMENT_DAY_MAX || time_min >= day_units ||
			    span >= day_units - time_min || rows_count == 0 ||
			    rows_count > UINT32_MAX)
				CORRUPT(f, footer_offset, "footer: impossible segment %" PRIu64
					" of tenant %s", s, t->name);
			seg->time_min_us = d * TALLY_US_PER_DAY + (int64_t)(time_min * unit);
			seg->time_max_us = seg->time_min_us + (int64_t)((span + 1) * unit) - 1;
			previous_day = d;
			seg->day = (int32_t)d;
			seg->rows = (uint32_t)rows_count;
			seg->row_start = tenant_rows;
			tenant_rows += rows_count;
			f->rows += rows_count;
			f->segment_count++;
		}
		uint64_t rowgroup_count;
		if (fp_varint(&fp, &rowgroup_count) || rowgroup_count == 0 ||
		    rowgroup_count > tenant_rows)
			CORRUPT(f, footer_offset, "footer: bad row group count for tenant %s", t->name);
		t->first_rowgroup = f->rowgroup_count;
		t->rowgroup_count = (uint32_t)rowgroup_count;
		uint64_t rows_seen = 0;
		for (uint64_t g = 0; g < rowgroup_count; g++) {
			if ((rc = grow_array((void **)&f->rowgroups, &rowgroup_cap, f->rowgroup_count,
					     sizeof(seg_rowgroup))))
				return rc;
			seg_rowgroup *rg = &f->rowgroups[f->rowgroup_count++];
			uint64_t rg_rows;
			if (fp_varint(&fp, &rg_rows) || fp.p >= fp.end || rg_rows == 0 ||
			    rg_rows > ROWGROUP_ROWS_MAX || rg_rows > tenant_rows - rows_seen || *fp.p > 1)
				CORRUPT(f, footer_offset, "footer: bad row group in tenant %s", t->name);
			rg->rows = (uint32_t)rg_rows;
			rg->row_start = rows_seen;
			rows_seen += rg_rows;
			rg->packed = *fp.p++;
			rg->first_block = f->block_count;
			int blocks = rg->packed ? 1 : TALLY_COL_COUNT;
			for (int b = 0; b < blocks; b++) {
				if ((rc = grow_array((void **)&f->blocks, &block_cap, f->block_count,
						     sizeof(seg_block))))
					return rc;
				if ((rc = parse_block(f, &fp, &block_end, footer_offset,
						      &f->blocks[f->block_count], errmsg)))
					return rc;
				f->block_count++;
			}
		}
		if (rows_seen != tenant_rows)
			CORRUPT(f, footer_offset, "footer: row groups of tenant %s hold %" PRIu64
				" rows, its segments %" PRIu64, t->name, rows_seen, tenant_rows);
		uint64_t minute_from, group_count;
		if (fp_varint(&fp, &minute_from) ||
		    zigzag_decode(minute_from) > INT64_MAX / ROLLUP_MINUTE_US_SEG ||
		    zigzag_decode(minute_from) < INT64_MIN / ROLLUP_MINUTE_US_SEG ||
		    fp_varint(&fp, &group_count) || group_count > UINT32_MAX)
			CORRUPT(f, footer_offset, "footer: bad rollup entry of tenant %s", t->name);
		/* Every section has rows, so its rows have at least one group: a
		 * section without rollup pages would make its rows invisible to
		 * queries, which read only the pages. */
		if (!group_count)
			CORRUPT(f, footer_offset, "footer: tenant %s has %" PRIu64 " rows and no rollup "
				"pages", t->name, tenant_rows);
		t->minute_from_us = zigzag_decode(minute_from) * ROLLUP_MINUTE_US_SEG;
		t->rollup_group_count = (uint32_t)group_count;
		if ((rc = parse_block(f, &fp, &block_end, footer_offset, &t->rollup_groups, errmsg)))
			return rc;
		for (int res = 0; res < SEG_ROLLUP_LISTS; res++) {
			uint64_t chunks;
			if (fp_varint(&fp, &chunks) || chunks > (uint64_t)(fp.end - fp.p))
				CORRUPT(f, footer_offset, "footer: bad rollup chunk count of tenant %s", t->name);
			t->first_chunk[res] = f->chunk_total;
			t->chunk_count[res] = (uint32_t)chunks;
			int64_t bucket = 0;
			for (uint64_t k = 0; k < chunks; k++) {
				if ((rc = grow_array((void **)&f->chunks, &chunk_cap, f->chunk_total,
						     sizeof(seg_chunk))))
					return rc;
				seg_chunk *c = &f->chunks[f->chunk_total];
				uint64_t field, cells;
				if (fp_varint(&fp, &field) || fp_varint(&fp, &cells) || cells == 0 ||
				    cells > UINT32_MAX || (k && (field == 0 || field > (UINT64_C(1) << 41))) ||
				    t->rollup_cells[res] + cells > UINT32_MAX)
					CORRUPT(f, footer_offset, "footer: bad rollup chunk of tenant %s", t->name);
				bucket = k ? bucket + (int64_t)field : zigzag_decode(field);
				if (bucket < -(INT64_C(1) << 40) || bucket > (INT64_C(1) << 40))
					CORRUPT(f, footer_offset, "footer: bad rollup chunk of tenant %s", t->name);
				c->first_bucket = bucket;
				c->cells = (uint32_t)cells;
				t->rollup_cells[res] += (uint32_t)cells;
				if ((rc = parse_block(f, &fp, &block_end, footer_offset, &c->block, errmsg)))
					return rc;
				f->chunk_total++;
			}
		}
		/* Map segments onto row groups (both partition the tenant's rows in
		 * time order), and give each row group the time base the writer
		 * used: the minimum of the segment its first row belongs to. */
		uint32_t g = t->first_rowgroup, g_end = t->first_rowgroup + t->rowgroup_count;
		for (uint32_t si = t->first_segment; si < t->first_segment + t->segment_count; si++) {
			seg_segment *seg = &f->segments[si];
			while (f->rowgroups[g].row_start + f->rowgroups[g].rows <= seg->row_start)
				g++;
			seg->first_rowgroup = g;
			seg->first_row = (uint32_t)(seg->row_start - f->rowgroups[g].row_start);
			uint32_t k = g;
			while (k < g_end && f->rowgroups[k].row_start < seg->row_start + seg->rows) {
				if (f->rowgroups[k].row_start >= seg->row_start)
					f->rowgroups[k].time_base_us = seg->time_min_us;
				k++;
			}
			seg->rowgroup_count = k - g;
		}
		f->tenant_count++;
	}
	for (uint32_t i = 1; i < f->tenant_count; i++)
		if (f->tenants[i].tenant_id <= f->tenants[i - 1].tenant_id)
			CORRUPT(f, footer_offset, "footer: tenants out of order");
	return 0;
}

int segment_file_open(const tally_io *io, const char *dir, uint64_t file_id,
		      segment_file **out, char *errmsg)
{
	*out = NULL;
	segment_file *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->io = io;
	f->file_id = file_id;
	char name[64];
	segment_file_name(name, sizeof(name), file_id);
	snprintf(f->path, sizeof(f->path), "%s/%s", dir, name);
	bytebuf stored = {0}, raw = {0};
	int rc;
	f->fd = io->open(io, f->path, O_RDONLY, 0);
	if (f->fd < 0) {
		rc = f->fd;
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "open %s: %s", f->path, tally_strerror(rc));
		goto fail;
	}
	int64_t size = io->file_size(io, f->fd);
	if (size < 0) {
		rc = (int)size;
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "stat %s: %s", f->path, tally_strerror(rc));
		goto fail;
	}
	f->size = (uint64_t)size;
	uint8_t header[SEGMENT_HEADER_SIZE], trailer[SEGMENT_TRAILER_SIZE];
	rc = TALLY_E_CORRUPT;
	if (f->size < SEGMENT_HEADER_SIZE + SEGMENT_TRAILER_SIZE) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset 0: file too short (%" PRIu64
				 " bytes)", f->path, f->size);
		goto fail;
	}
	if ((rc = tally_io_read_all(io, f->fd, header, sizeof(header), 0)) ||
	    (rc = tally_io_read_all(io, f->fd, trailer, sizeof(trailer),
				    f->size - SEGMENT_TRAILER_SIZE))) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "read %s: %s", f->path, tally_strerror(rc));
		goto fail;
	}
	rc = TALLY_E_CORRUPT;
	if (memcmp(header, HEADER_MAGIC, 8) != 0 || le_get_u64(header + 24) != XXH3_64bits(header, 24)) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset 0: bad header (magic or checksum)",
				 f->path);
		goto fail;
	}
	f->version = le_get_u32(header + 8);
	if (f->version < SEGMENT_VERSION_OLDEST || f->version > SEGMENT_VERSION) {
		rc = TALLY_E_VERSION;
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset 8: format version %u, this "
				 "build reads %u to %u", f->path, f->version,
				 (unsigned)SEGMENT_VERSION_OLDEST, (unsigned)SEGMENT_VERSION);
		goto fail;
	}
	if (le_get_u64(header + 16) != file_id) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset 16: header names file id %" PRIu64
				 ", expected %" PRIu64, f->path, le_get_u64(header + 16), file_id);
		goto fail;
	}
	/* The header's flags: only those of the file's version (none before
	 * 5); below, the trailer's bytes 17..23 (once its magic says it is a
	 * trailer): zeros in every version. The trailer's are covered by no
	 * checksum, so this is the only check they get. */
	f->flags = le_get_u32(header + 12);
	uint32_t flags_known = f->version >= 5 ? SEGMENT_FLAG_RUN_NEXT : 0;
	if (f->flags & ~flags_known) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE,
				 "%s offset 12: header flags are %u, version %u knows only %u", f->path,
				 f->flags, f->version, flags_known);
		goto fail;
	}
	uint64_t trailer_offset = f->size - SEGMENT_TRAILER_SIZE;
	uint64_t footer_offset = le_get_u64(trailer);
	f->footer_offset = footer_offset;
	uint32_t footer_stored = le_get_u32(trailer + 8);
	uint32_t footer_raw = le_get_u32(trailer + 12);
	uint8_t footer_codec = trailer[16];
	/* The footer's range is checked by subtraction: an offset near 2^64
	 * would make the sum wrap onto the trailer. */
	if (memcmp(trailer + 32, TRAILER_MAGIC, 8) != 0 || footer_offset < SEGMENT_HEADER_SIZE ||
	    footer_offset > trailer_offset || footer_stored != trailer_offset - footer_offset ||
	    footer_codec > BLOCK_CODEC_ZSTD ||
	    footer_raw > SEGMENT_FILE_FOOTER_BYTES_MAX) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset %" PRIu64 ": bad trailer",
				 f->path, trailer_offset);
		goto fail;
	}
	for (int i = 17; i < 24; i++)
		if (trailer[i]) {
			if (errmsg)
				snprintf(errmsg, TALLY_ERRMSG_SIZE,
					 "%s offset %" PRIu64 ": trailer byte is %u, expected 0",
					 f->path, trailer_offset + (uint64_t)i, trailer[i]);
			goto fail;
		}
	if ((rc = bytebuf_reserve(&stored, footer_stored)))
		goto fail;
	if ((rc = tally_io_read_all(io, f->fd, stored.data, footer_stored, footer_offset))) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "read %s: %s", f->path, tally_strerror(rc));
		goto fail;
	}
	stored.size = footer_stored;
	if (XXH3_64bits_withSeed(stored.data, stored.size, file_id) != le_get_u64(trailer + 24)) {
		rc = TALLY_E_CORRUPT;
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset %" PRIu64 ": footer checksum mismatch",
				 f->path, footer_offset);
		goto fail;
	}
	if ((rc = block_decompress(&raw, stored.data, stored.size, footer_codec, footer_raw))) {
		if (errmsg && rc == TALLY_E_CORRUPT)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset %" PRIu64 ": footer does not decompress",
				 f->path, footer_offset);
		else if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset %" PRIu64 ": decompressing the footer: %s",
				 f->path, footer_offset, tally_strerror(rc));
		goto fail;
	}
	if ((rc = parse_footer(f, raw.data, raw.size, footer_offset, errmsg)))
		goto fail;
	bytebuf_free(&stored);
	bytebuf_free(&raw);
	*out = f;
	return 0;
fail:
	bytebuf_free(&stored);
	bytebuf_free(&raw);
	segment_file_close(f);
	return rc;
}

void segment_file_close(segment_file *f)
{
	if (!f)
		return;
	if (f->fd >= 0)
		f->io->close(f->io, f->fd);
	free(f->tenants);
	free(f->segments);
	free(f->rowgroups);
	free(f->blocks);
	free(f->chunks);
	free(f);
}

int64_t segment_file_find_tenant(const segment_file *f, uint32_t tenant_id)
{
	uint32_t lo = 0, hi = f->tenant_count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (f->tenants[mid].tenant_id < tenant_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < f->tenant_count && f->tenants[lo].tenant_id == tenant_id)
		return lo;
	return -1;
}

static int read_block_into(const segment_file *f, const seg_block *b, bytebuf *stored,
			   bytebuf *out, char *errmsg)
{
	int rc;
	bytebuf_reset(stored);
	if ((rc = bytebuf_reserve(stored, b->stored_size)))
		return rc;
	if ((rc = tally_io_read_all(f->io, f->fd, stored->data, b->stored_size, b->offset))) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "read %s offset %" PRIu64 ": %s", f->path,
				 b->offset, tally_strerror(rc));
		return rc;
	}
	stored->size = b->stored_size;
	if (XXH3_64bits_withSeed(stored->data, stored->size, f->file_id) != b->checksum)
		CORRUPT(f, b->offset, "block checksum mismatch (%u bytes)", b->stored_size);
	rc = block_decompress(out, stored->data, stored->size, b->codec, b->raw_size);
	if (rc == TALLY_E_CORRUPT)
		CORRUPT(f, b->offset, "block does not decompress to %u bytes", b->raw_size);
	if (rc && errmsg) /* out of memory: not the file's fault */
		snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset %" PRIu64 ": decompressing a block: %s",
			 f->path, b->offset, tally_strerror(rc));
	return rc;
}

int segment_read_block(const segment_file *f, const seg_block *b, bytebuf *out, char *errmsg)
{
	bytebuf stored = {0};
	int rc = read_block_into(f, b, &stored, out, errmsg);
	bytebuf_free(&stored);
	return rc;
}

int segment_read_dict(const segment_file *f, uint32_t t, strdict dict[DIM_COUNT], char *errmsg)
{
	bytebuf raw = {0};
	const seg_tenant *tenant = &f->tenants[t];
	int rc = segment_read_block(f, &tenant->dict, &raw, errmsg);
	if (rc) {
		bytebuf_free(&raw);
		return rc;
	}
	const uint8_t *p = raw.data, *end = raw.data + raw.size;
	for (int d = 0; d < DIM_COUNT && !rc; d++) {
		uint64_t count, size;
		if (varint_get(&p, end, &count) || count > DICT_STRINGS_MAX) {
			rc = TALLY_E_CORRUPT;
			break;
		}
		for (uint64_t c = 0; c < count; c++) {
			uint32_t code;
			if (varint_get(&p, end, &size) || size > (uint64_t)(end - p)) {
				rc = TALLY_E_CORRUPT;
				break;
			}
			if ((rc = strdict_intern(&dict[d], (const char *)p, (uint32_t)size, &code)))
				break;
			if (code != c) { /* a repeated string */
				rc = TALLY_E_CORRUPT;
				break;
			}
			p += size;
		}
	}
	if (!rc && p != end)
		rc = TALLY_E_CORRUPT;
	bytebuf_free(&raw);
	if (rc == TALLY_E_CORRUPT && errmsg)
		snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset %" PRIu64
			 ": dictionary of tenant %s is malformed", f->path, tenant->dict.offset,
			 tenant->name);
	return rc;
}

int segment_split_packed(const uint8_t *raw, size_t size, const uint8_t *col[TALLY_COL_COUNT],
			 size_t col_size[TALLY_COL_COUNT])
{
	const uint8_t *p = raw, *end = raw + size;
	for (int c = 0; c < TALLY_COL_COUNT; c++) {
		uint64_t s;
		if (varint_get(&p, end, &s) || s > size)
			return TALLY_E_CORRUPT;
		col_size[c] = (size_t)s;
	}
	for (int c = 0; c < TALLY_COL_COUNT; c++) {
		if (col_size[c] > (size_t)(end - p))
			return TALLY_E_CORRUPT;
		col[c] = p;
		p += col_size[c];
	}
	return p == end ? 0 : TALLY_E_CORRUPT;
}

static int decode_column(int c, const uint8_t *src, size_t size, rows *r, uint32_t count)
{
	switch (c) {
	case TALLY_COL_TIME: return codec_time_decode(src, size, r->time_us, count);
	case TALLY_COL_EVENT_ID:
		return codec_ids_decode(src, size, count, r->id_kind, r->id_offset, &r->id_bytes);
	case TALLY_COL_TYPE:
	case TALLY_COL_PROJECT:
	case TALLY_COL_USER:
		return codec_codes_decode(src, size, r->dim[c - TALLY_COL_TYPE], count);
	case TALLY_COL_AGENT:
		return codec_codes_decode_classed(src, size, r->dim[DIM_AGENT], count,
						  r->dim[DIM_PROJECT]);
	case TALLY_COL_MODEL:
		return codec_codes_decode_classed(src, size, r->dim[DIM_MODEL], count,
						  r->dim[DIM_TYPE]);
	case TALLY_COL_STATUS: return codec_u8_decode(src, size, r->status, count);
	case TALLY_COL_TOKENS_IN:
		return codec_u64_decode_classed(src, size, r->tokens_in, count, r->dim[DIM_TYPE]);
	case TALLY_COL_TOKENS_OUT:
		return codec_u64_decode_classed(src, size, r->tokens_out, count, r->dim[DIM_TYPE]);
	case TALLY_COL_COST_MICROS: {
		const codec_cost_context priced = { .classes = r->dim[DIM_TYPE],
						    .models = r->dim[DIM_MODEL],
						    .tokens_in = r->tokens_in,
						    .tokens_out = r->tokens_out };
		return codec_cost_decode(src, size, r->cost_micros, count, &priced);
	}
	case TALLY_COL_DURATION_MS:
		return codec_u32_decode_classed(src, size, r->duration_ms, count, r->dim[DIM_TYPE]);
	default: return TALLY_E_CORRUPT;
	}
}

/* Contract in segment.h. */
void segment_time_bounds(uint32_t version, int64_t first_us, int64_t last_us, int64_t *min_us,
			 int64_t *max_us)
{
	if (version < 3) {
		*min_us = first_us;
		*max_us = last_us;
		return;
	}
	int64_t unit = (int64_t)SEGMENT_BOUND_US;
	int64_t first_mod = first_us % unit, last_mod = last_us % unit;
	*min_us = first_us - (first_mod < 0 ? first_mod + unit : first_mod);
	*max_us = last_us - (last_mod < 0 ? last_mod + unit : last_mod) + unit - 1;
}

/* Contract in segment.h. */
uint32_t segment_columns_needed(uint32_t mask)
{
	const uint32_t scalars = 1u << TALLY_COL_TOKENS_IN | 1u << TALLY_COL_TOKENS_OUT |
				 1u << TALLY_COL_COST_MICROS | 1u << TALLY_COL_DURATION_MS;
	if (mask & (1u << TALLY_COL_COST_MICROS))
		mask |= 1u << TALLY_COL_MODEL | 1u << TALLY_COL_TOKENS_IN |
			1u << TALLY_COL_TOKENS_OUT;
	if (mask & (scalars | 1u << TALLY_COL_MODEL))
		mask |= 1u << TALLY_COL_TYPE;
	if (mask & (1u << TALLY_COL_AGENT))
		mask |= 1u << TALLY_COL_PROJECT;
	return mask;
}

static int read_rowgroup(const segment_file *f, uint32_t g, uint32_t mask, rows *r,
			 bytebuf *stored, bytebuf *raw, char *errmsg)
{
	const seg_rowgroup *rg = &f->rowgroups[g];
	mask = segment_columns_needed(mask);
	rows_reset(r);
	int rc = rows_reserve(r, rg->rows);
	if (rc)
		return rc;
	if (rg->packed) {
		const seg_block *b = &f->blocks[rg->first_block];
		if ((rc = read_block_into(f, b, stored, raw, errmsg)))
			return rc;
		const uint8_t *col[TALLY_COL_COUNT];
		size_t col_size[TALLY_COL_COUNT];
		if (segment_split_packed(raw->data, raw->size, col, col_size))
			CORRUPT(f, b->offset, "packed row group has a bad column directory");
		for (int c = 0; c < TALLY_COL_COUNT; c++) {
			if (!(mask & (1u << c)))
				continue;
			if ((rc = decode_column(c, col[c], col_size[c], r, rg->rows)) == -ENOMEM)
				return rc;
			if (rc)
				CORRUPT(f, b->offset, "packed row group: column %s does not decode",
					tally_column_name(c));
		}
	} else {
		for (int c = 0; c < TALLY_COL_COUNT; c++) {
			if (!(mask & (1u << c)))
				continue;
			const seg_block *b = &f->blocks[rg->first_block + c];
			if ((rc = read_block_into(f, b, stored, raw, errmsg)))
				return rc;
			if ((rc = decode_column(c, raw->data, raw->size, r, rg->rows)) == -ENOMEM)
				return rc;
			if (rc)
				CORRUPT(f, b->offset, "column %s does not decode", tally_column_name(c));
		}
	}
	if (mask & (1u << TALLY_COL_TIME))
		for (uint32_t i = 0; i < rg->rows; i++)
			r->time_us[i] = (int64_t)((uint64_t)r->time_us[i] + (uint64_t)rg->time_base_us);
	r->count = rg->rows;
	return 0;
}

/* Contract in segment.h. */
int segment_row_check(const segment_file *f, uint32_t t, uint32_t g, const rows *r,
		      const strdict dict[DIM_COUNT], uint32_t row, char *errmsg)
{
	const seg_rowgroup *rg = &f->rowgroups[g];
	for (int d = 0; d < DIM_COUNT; d++) {
		if (r->dim[d][row] < dict[d].count)
			continue;
		int c = TALLY_COL_TYPE + d;
		CORRUPT(f, f->blocks[rg->first_block + (rg->packed ? 0 : c)].offset,
			"tenant %s row group %u, row %u: %s code %u is past its dictionary of %u "
			"strings", f->tenants[t].name, g, row, tally_column_name(c), r->dim[d][row],
			dict[d].count);
	}
	if (r->status[row] >= TALLY_STATUS_COUNT)
		CORRUPT(f,
			f->blocks[rg->first_block + (rg->packed ? 0 : TALLY_COL_STATUS)].offset,
			"tenant %s row group %u, row %u: unknown status %u", f->tenants[t].name, g,
			row, r->status[row]);
	return 0;
}

/* Contract in segment.h. */
int segment_rows_check(const segment_file *f, uint32_t t, uint32_t g, const rows *r,
		       const strdict dict[DIM_COUNT], char *errmsg)
{
	int rc = 0;
	for (uint32_t i = 0; i < r->count && !rc; i++)
		rc = segment_row_check(f, t, g, r, dict, i, errmsg);
	return rc;
}

int segment_read_rowgroup(const segment_file *f, uint32_t g, uint32_t mask, rows *r,
			  char *errmsg)
{
	bytebuf stored = {0}, raw = {0};
	int rc = read_rowgroup(f, g, mask, r, &stored, &raw, errmsg);
	bytebuf_free(&stored);
	bytebuf_free(&raw);
	return rc;
}
