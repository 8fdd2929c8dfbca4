/*
 * fuzz_segment.c — libFuzzer target for everything the engine reads back
 * from a segment file whose checksums are good: the footer's structure,
 * the tenant dictionaries, every column codec of the row groups, the
 * rollup group tables and chunk blocks (with their histograms, users and
 * projections), and each section's rows as the store's readers take them:
 * checked against the section's dictionary (segment_rows_check), then
 * every row's strings looked up (rows_event).
 *
 * Checksums keep random damage out, so what reaches these decoders is
 * what a writer bug or a crafted file puts there. The target makes the
 * checksums good itself: the input is a raw footer and the bytes between
 * the header and the footer (format below); the target builds a segment
 * file around them (header, footer stored RAW, trailer, each checksum
 * computed), serves it from memory through a tally_io, opens it, and
 * gives every block the footer names its true checksum before reading it.
 * A finding is any sanitizer report or crash; a refusal (TALLY_E_CORRUPT)
 * is the expected answer to bad input.
 *
 * Input: u32 little-endian footer size F, F bytes of raw footer, then the
 * block area (file offsets 32 on). fuzz/segment_seed.c makes seeds of
 * this form from real segment files (fuzz/corpus-segment/).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "codec.h"
#include "endian.h"
#include "mem_io.h"
#include "memtable.h"
#include "rollup.h"
#include "rows.h"
#include "segment.h"
#include "strdict.h"

#define FUZZ_FILE_ID 1
#define FUZZ_DIR "fuzz"

/* The file being read: one per input (served through mem_io). */
static uint8_t *file;
static size_t file_size;

/* Gives block b the checksum of the bytes it names (parse_block kept
 * them inside the file). */
static void fix_checksum(seg_block *b)
{
	if (b->offset <= file_size && b->stored_size <= file_size - b->offset)
		b->checksum = XXH3_64bits_withSeed(file + b->offset, b->stored_size, FUZZ_FILE_ID);
}

/* Decodes a rollup chunk as a query does: scalars, sketches, a lower
 * bound, and a projection by the first code slot. */
static void read_chunk(const segment_file *f, const seg_chunk *c, const rollup_group *groups,
		       uint32_t group_count, uint32_t user_limit, const uint32_t *map)
{
	bytebuf raw = {0};
	char errmsg[TALLY_ERRMSG_SIZE];
	rollup_block b;
	if (!segment_read_block(f, &c->block, &raw, errmsg) &&
	    !rollup_block_decode(raw.data, raw.size, groups, group_count, user_limit, &b)) {
		(void)rollup_block_lower_bound(&b, c->first_bucket);
		if (!rollup_block_sketches(&b) && map) {
			rollup_block projected;
			if (!rollup_block_project(&b, map, &projected))
				rollup_block_free(&projected);
		}
		rollup_block_free(&b);
	}
	bytebuf_free(&raw);
}

/* Section t's rows as the store's readers take them: a row group whose
 * rows pass segment_rows_check is looked up row by row. */
static void read_rows(const segment_file *f, uint32_t t, const strdict dict[DIM_COUNT])
{
	const seg_tenant *sec = &f->tenants[t];
	char errmsg[TALLY_ERRMSG_SIZE];
	const strdict *refs[DIM_COUNT];
	strdict_refs(dict, refs);
	rows r;
	memset(&r, 0, sizeof(r));
	for (uint32_t g = sec->first_rowgroup; g < sec->first_rowgroup + sec->rowgroup_count; g++) {
		if (segment_read_rowgroup(f, g, SEGMENT_COLUMNS_ALL, &r, errmsg) ||
		    segment_rows_check(f, t, g, &r, dict, errmsg))
			continue;
		for (uint32_t i = 0; i < r.count; i++) {
			tally_event e;
			char id_text[ID_TEXT_SIZE_MAX];
			rows_event(&r, refs, i, &e, id_text);
		}
	}
	rows_free(&r);
}

/* Tenant section t's dictionaries, rows, rollup group table and chunks
 * (every block's checksum made good first). */
static void read_section(segment_file *f, uint32_t t)
{
	seg_tenant *sec = &f->tenants[t];
	char errmsg[TALLY_ERRMSG_SIZE];
	strdict dict[DIM_COUNT];
	memset(dict, 0, sizeof(dict));
	fix_checksum(&sec->dict);
	if (segment_read_dict(f, t, dict, errmsg))
		goto out;
	read_rows(f, t, dict);
	uint32_t dict_count[DIM_COUNT];
	for (int d = 0; d < DIM_COUNT; d++)
		dict_count[d] = dict[d].count;
	fix_checksum(&sec->rollup_groups); /* the reader refuses sections without one */
	bytebuf raw = {0};
	rollup_group *groups = NULL;
	uint32_t group_count = 0;
	if (!segment_read_block(f, &sec->rollup_groups, &raw, errmsg) &&
	    !rollup_groups_decode(raw.data, raw.size, dict_count, &groups, &group_count)) {
		uint32_t *map = NULL;
		rollup_group *projected = NULL;
		uint32_t projected_count;
		if (rollup_groups_project(groups, group_count, 1u, 1, &map, &projected, &projected_count))
			map = NULL;
		for (int list = 0; list < SEG_ROLLUP_LISTS; list++)
			for (uint32_t k = 0; k < sec->chunk_count[list]; k++) {
				seg_chunk *c = &f->chunks[sec->first_chunk[list] + k];
				fix_checksum(&c->block);
				read_chunk(f, c, groups, group_count, dict_count[DIM_USER], map);
			}
		free(map);
		free(projected);
	}
	free(groups);
	bytebuf_free(&raw);
out:
	for (int d = 0; d < DIM_COUNT; d++)
		strdict_free(&dict[d]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	size_t footer_size = le_get_u32(data);
	if (footer_size > size - 4 || footer_size > SEGMENT_FILE_FOOTER_BYTES_MAX)
		return 0;
	const uint8_t *footer = data + 4, *blocks = footer + footer_size;
	size_t blocks_size = size - 4 - footer_size;
	file_size = SEGMENT_HEADER_SIZE + blocks_size + footer_size + SEGMENT_TRAILER_SIZE;
	file = calloc(1, file_size);
	if (!file)
		return 0;
	uint8_t *p = file;
	memcpy(p, "TLYSEG01", 8);
	le_put_u32(p + 8, SEGMENT_VERSION);
	le_put_u64(p + 16, FUZZ_FILE_ID);
	le_put_u64(p + 24, XXH3_64bits(p, 24));
	p += SEGMENT_HEADER_SIZE;
	memcpy(p, blocks, blocks_size);
	p += blocks_size;
	uint64_t footer_offset = (uint64_t)(p - file);
	memcpy(p, footer, footer_size);
	p += footer_size;
	le_put_u64(p, footer_offset);
	le_put_u32(p + 8, (uint32_t)footer_size);
	le_put_u32(p + 12, (uint32_t)footer_size);
	p[16] = BLOCK_CODEC_RAW;
	le_put_u64(p + 24, XXH3_64bits_withSeed(footer, footer_size, FUZZ_FILE_ID));
	memcpy(p + 32, "TLYSEGE1", 8);

	mem_file = file;
	mem_file_size = file_size;
	segment_file *f = NULL;
	char errmsg[TALLY_ERRMSG_SIZE];
	if (!segment_file_open(&mem_io, FUZZ_DIR, FUZZ_FILE_ID, &f, errmsg)) {
		for (uint32_t b = 0; b < f->block_count; b++)
			fix_checksum(&f->blocks[b]);
		for (uint32_t t = 0; t < f->tenant_count; t++)
			read_section(f, t);
		rows r;
		memset(&r, 0, sizeof(r));
		for (uint32_t g = 0; g < f->rowgroup_count; g++)
			(void)segment_read_rowgroup(f, g, SEGMENT_COLUMNS_ALL, &r, errmsg);
		rows_free(&r);
		segment_file_close(f);
	}
	free(file);
	file = NULL;
	return 0;
}
