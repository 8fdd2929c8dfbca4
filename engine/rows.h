/*
 * rows.h — a columnar set of event rows, the shape shared by memtables,
 * decoded segment row groups and scans.
 *
 * Dimension columns hold codes into a dictionary kept beside the rows (a
 * memtable's strdicts, or a segment file's tenant dictionary). Event ids are
 * kept packed (codec.h id_pack): kind plus bytes.
 */
#ifndef TALLY_ROWS_H
#define TALLY_ROWS_H

#include <stdint.h>
#include <stddef.h>

#include "codec.h"
#include "tally_limits.h"

typedef struct rows {
	uint32_t count;
	uint32_t capacity;
	int64_t *time_us;
	uint8_t *status;
	uint32_t *duration_ms;
	uint64_t *tokens_in;
	uint64_t *tokens_out;
	int64_t *cost_micros;
	uint32_t *dim[DIM_COUNT];
	uint8_t *id_kind;
	uint32_t *id_offset; /* count + 1 entries; id_offset[0] == 0 */
	bytebuf id_bytes;
	void *block;         /* the one allocation every column above points into; NULL when
			      * none, or when the columns are mapped */
	/* Set by the owner before the first reserve (memtables): past
	 * ROWS_MAPPED_MIN rows each column becomes a mapping of its own,
	 * grown in place or moved by mremap, so a doubling copies nothing
	 * (a large tenant's memtable doubled under the store lock by copying
	 * every column: docs/benchmarks.md, twenty-ninth measurement). */
	uint8_t map_large;
	uint8_t mapped;      /* the columns are mappings (see map_large) */
	uint8_t id_bytes_mapped; /* id_bytes.data is a mapping: grown with the columns'
				  * mapping rule (rows_reserve_id_bytes) */
} rows;

/* Rows from which a map_large set's columns are mappings: 1 MiB of
 * columns (about 62 bytes a row). */
#define ROWS_MAPPED_MIN 16384u
/* The most id bytes one row set holds: id_offset is 32-bit. Past it a
 * reserve fails with TALLY_E_LIMIT (before, the offsets wrapped and rows
 * read an earlier event's id: a compacted file stored wrong ids, and a
 * resent event was accepted a second time). */
#define ROWS_ID_BYTES_MAX ((size_t)UINT32_MAX)

/* Ensures room for `count` rows in total. 0 or -ENOMEM (rows unchanged). */
int rows_reserve(rows *r, uint32_t count);
/* rows_reserve_id_bytes's slow path: grows the id bytes. */
int rows_grow_id_bytes(rows *r, size_t extra);

/* Ensures room for `extra` more id bytes. While the columns are mappings,
 * the id bytes are one too, grown by mremap. 0, -ENOMEM, or
 * TALLY_E_LIMIT past ROWS_ID_BYTES_MAX (rows unchanged). The capacity
 * never passes ROWS_ID_BYTES_MAX, so the fast path needs no check. */
static inline int rows_reserve_id_bytes(rows *r, size_t extra)
{
	return extra <= r->id_bytes.capacity - r->id_bytes.size ? 0 : rows_grow_id_bytes(r, extra);
}
/* Forgets all rows, keeps allocations. */
void rows_reset(rows *r);
void rows_free(rows *r);
/* RAM held (allocated capacity). */
size_t rows_bytes(const rows *r);

static inline const uint8_t *rows_id(const rows *r, uint32_t i, size_t *size)
{
	*size = r->id_offset[i + 1] - r->id_offset[i];
	return r->id_bytes.data + r->id_offset[i];
}

#endif /* TALLY_ROWS_H */
