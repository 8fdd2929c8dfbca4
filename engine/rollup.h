/*
 * rollup.h — rollup pages: per-tenant aggregates by time bucket and group.
 *
 * A cell aggregates the events of one bucket (a UTC minute, hour or day)
 * and one group, a combination of (type, project, agent, model, status)
 * given as dictionary codes of the source the cell belongs to: a memtable
 * (one code space for every dimension) or a segment file's tenant section
 * (one dictionary per dimension). A cell holds count, sums of tokens_in,
 * tokens_out, cost_micros and duration_ms, min/max duration, the duration
 * histogram (sketch.h: dd indexes with counts) and the users (dictionary
 * codes, exact, or HyperLogLog registers past USET_EXACT_MAX). The count by
 * status is the count of the cells of each status (status is in the group).
 *
 * A `rollup` holds the cells of one source at all three resolutions. The
 * memtable keeps one up to date at ingest (queries read it under the store
 * lock); flush and compaction build one from the rows they write, encode
 * it (one block per resolution, docs/formats.md) and the segment file
 * stores the blocks beside the tenant's segments. Queries decode blocks
 * into a rollup_block. Every aggregate merges exactly (sums, min, max,
 * histogram counts, register max, set union), so partial cells of the same
 * bucket and group in several sources add up to the cell of all events.
 */
#ifndef TALLY_ROLLUP_H
#define TALLY_ROLLUP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec.h"
#include "rows.h"
#include "sketch.h"
#include "strdict.h"
#include "tally.h"

enum rollup_res { RES_MINUTE = 0, RES_HOUR = 1, RES_DAY = 2, RES_COUNT = 3 };
/* Encoded cells come in four chunk lists: minute, hour and day cells of
 * groups, and the day total cells on their own (an ungrouped query reads a
 * day's total without decoding its groups). */
enum rollup_list { LIST_MINUTE = 0, LIST_HOUR = 1, LIST_DAY = 2, LIST_DAY_TOTAL = 3, LIST_COUNT = 4 };
#define ROLLUP_MINUTE_US (INT64_C(60) * 1000000)
#define ROLLUP_HOUR_US (INT64_C(3600) * 1000000)
#define ROLLUP_DAY_US (INT64_C(86400) * 1000000)
extern const int64_t ROLLUP_RES_US[RES_COUNT];
extern const char *const ROLLUP_RES_NAME[RES_COUNT];
extern const char *const ROLLUP_LIST_NAME[LIST_COUNT]; /* "day total" for LIST_DAY_TOTAL */

#define ROLLUP_GROUP_DIMS 4      /* type, project, agent, model (DIM_ order) */
/*
 * The total: group 0 of every rollup (codes 0, status ROLLUP_STATUS_ALL)
 * has, at day resolution, one cell per bucket aggregating all the bucket's
 * events (with their count by status in status_other), so a query without
 * grouping or filters reads one cell per stored day. Blocks keep it only in
 * buckets with two groups or more, as group 0 of their table. (Hour totals
 * were measured: +2.2 bytes per event on the reference workload, mostly
 * their user sets; not kept.)
 */
#define ROLLUP_GROUP_ALL 0u
#define ROLLUP_STATUS_ALL 0xffu
#define ROLLUP_ALL_RES_MIN RES_DAY
#define ROLLUP_NO_USER UINT32_MAX
#define ROLLUP_BLOCK_VERSION 1       /* a chunk block whose cells' sums never wrapped */
#define ROLLUP_BLOCK_VERSION_WRAPS 2 /* one with a 14th column: the wraps */
#define ROLLUP_DAY_COMPOSE_MAX 64 /* days with at most this many hour cells store no day cells */
#define ROLLUP_CHUNK_CELLS 4096   /* a chunk block closes at the first day boundary past this */
#define ROLLUP_BUCKET_MAX (INT64_C(1) << 40) /* |bucket| bound a decoder accepts */

/* A 64-bit finaliser (murmur3's): spreads keys of the rollup's and the
 * query's hash tables. */
static inline uint64_t rollup_mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	x *= UINT64_C(0xc4ceb9fe1a85ec53);
	x ^= x >> 33;
	return x;
}

/*
 * Sums are exact: a 64-bit field holds the sum modulo 2^64 and a wraps
 * count (tally_wraps) how many times it passed the field's range, so that
 * the exact sum is field + wraps * 2^64 (tally.h). Almost every cell has
 * no wraps; billing exports the exact sum, never a wrapped one
 * (docs/billing.md). The two additions below add v (with v_wraps, for a
 * sum of sums) to *sum and count the wrap this addition makes.
 */
static inline void sum_add_u64(uint64_t *sum, int64_t *wraps, uint64_t v, int64_t v_wraps)
{
	uint64_t r = *sum + v;
	*wraps += v_wraps + (r < v);
	*sum = r;
}
static inline void sum_add_i64(int64_t *sum, int64_t *wraps, int64_t v, int64_t v_wraps)
{
	int64_t r;
	if (__builtin_add_overflow(*sum, v, &r)) /* both had v's sign; r is off by 2^64 */
		*wraps += v < 0 ? -1 : 1;
	*wraps += v_wraps;
	*sum = r;
}
typedef tally_wraps rollup_wraps;
static inline int rollup_wraps_any(const rollup_wraps *w)
{
	return (w->tokens_in | w->tokens_out | w->cost_micros | w->duration_ms_sum) != 0;
}

typedef struct rollup_group {
	uint32_t code[ROLLUP_GROUP_DIMS]; /* DIM_TYPE .. DIM_MODEL */
	uint8_t status;
} rollup_group;

/* A group's hash and equality (for tables keyed by groups). */
static inline uint64_t rollup_group_hash(const rollup_group *g)
{
	uint64_t h = g->status;
	for (int c = 0; c < ROLLUP_GROUP_DIMS; c++)
		h = rollup_mix64(h ^ ((uint64_t)g->code[c] << 8));
	return h;
}
static inline int rollup_group_equal(const rollup_group *a, const rollup_group *b)
{
	return a->status == b->status && !memcmp(a->code, b->code, sizeof(a->code));
}

/* A histogram entry: count << 16 | dd index. */
#define DD_ENTRY(index, count) (((uint64_t)(count) << 16) | (uint64_t)(index))
#define DD_ENTRY_INDEX(e) ((uint16_t)((e) & 0xffff))
#define DD_ENTRY_COUNT(e) ((e) >> 16)

typedef struct rollup_cell {
	int64_t bucket;       /* time_us / resolution, floored */
	uint32_t group;
	uint32_t next;        /* live rollups: next cell of the same bucket + 1, 0 = end */
	uint64_t count;
	uint64_t tokens_in;
	uint64_t tokens_out;
	uint64_t duration_sum;
	int64_t cost;
	uint32_t duration_min;
	uint32_t duration_max;
	uint16_t dd_count;    /* histogram entries (distinct indexes, < DD_INDEX_COUNT), ascending */
	uint16_t user_count;  /* exact user codes (<= USET_EXACT_MAX), ascending; 0 when dense */
	uint32_t wraps;       /* 0, or the cell's entry in its rollup's wraps + 1 */
	union {
		uint64_t one;     /* dd_count == 1 */
		uint64_t *many;
	} dd;
	union {
		uint32_t one;     /* user_count == 1 */
		uint32_t *many;
	} users;
	uint8_t *registers;   /* dense users (HLL_REGISTERS bytes), else NULL */
	uint64_t status_other[3]; /* total cells: events of status error, timeout, cancelled */
} rollup_cell;

static inline const uint64_t *cell_dd(const rollup_cell *c)
{
	return c->dd_count == 1 ? &c->dd.one : c->dd.many;
}
static inline const uint32_t *cell_users(const rollup_cell *c)
{
	return c->user_count == 1 ? &c->users.one : c->users.many;
}

/* One event as a rollup sees it: dimension codes in the source's space. */
typedef struct rollup_event {
	int64_t time_us;
	uint32_t code[ROLLUP_GROUP_DIMS];
	uint8_t status;
	uint32_t user;        /* code, or ROLLUP_NO_USER for an empty user */
	uint64_t user_hash;   /* sketch_user_hash of the user string */
	uint32_t duration_ms;
	uint64_t tokens_in;
	uint64_t tokens_out;
	int64_t cost_micros;
} rollup_event;

typedef struct rollup_res_cells {
	rollup_cell *cells;
	uint32_t count;
	uint32_t capacity;
	uint64_t *slots;       /* (bucket, group) -> hash half, cell + 1 */
	uint32_t slot_mask;
	uint32_t *heads;       /* bucket -> first cell + 1 (chain through next) */
	int64_t *head_keys;
	uint32_t head_mask;
	uint32_t head_count;
} rollup_res_cells;

typedef struct rollup {
	rollup_group *groups;
	uint32_t group_count;
	uint32_t group_capacity;
	uint32_t (*group_last)[RES_COUNT]; /* per group and resolution: its last cell + 1 */
	uint32_t *group_slots; /* group -> index + 1 */
	uint32_t group_mask;
	rollup_res_cells res[RES_COUNT];
	uint64_t *user_hash;   /* by user code (0 = not seen) */
	uint32_t user_hash_count;
	rollup_wraps *wraps;   /* the wraps of the cells whose sums wrapped (rollup_cell.wraps) */
	uint32_t wrap_count;
	uint32_t wrap_capacity;
	size_t bytes;          /* RAM held, approximately (for memtable accounting) */
	int no_bucket_index;   /* rollup_from_rows: no heads (rollup_bucket_first finds nothing) */
} rollup;

/* The wraps of cell c of r, or NULL when none of its sums wrapped. */
static inline const rollup_wraps *rollup_cell_wraps(const rollup *r, const rollup_cell *c)
{
	return c->wraps ? &r->wraps[c->wraps - 1] : NULL;
}

/* Adds one event to all three resolutions. 0 or -ENOMEM; on -ENOMEM the
 * rollup may hold the event at some resolutions only (the caller then
 * treats the store as failed, as for any memtable allocation failure). */
int rollup_add(rollup *r, const rollup_event *e);

/* Builds r (empty) from rows whose dimension codes refer to dict, for
 * rollup_encode(r, minute_bucket_from, ...): only the cells that stores
 * (minute cells from minute_bucket_from on, day cells and day totals of
 * heavy days only), each exactly as rollup_add would make it. It is for
 * encoding only: it keeps no bucket index (rollup_bucket_first finds
 * nothing), and its hour cells are reserved for the rows up front, up to
 * ROLLUP_BUILD_RESERVE_MAX (most tenant sections are small: no regrowth). */
#define ROLLUP_BUILD_RESERVE_MAX 4096u
int rollup_from_rows(rollup *r, const rows *rows, const strdict dict[DIM_COUNT],
		     int64_t minute_bucket_from);

void rollup_free(rollup *r);

/* The cell of (bucket, group) at res, or NULL. */
const rollup_cell *rollup_find(const rollup *r, int res, int64_t bucket, uint32_t group);

/* The first cell of bucket at res, or NULL; follow with rollup_next. */
const rollup_cell *rollup_bucket_first(const rollup *r, int res, int64_t bucket);
static inline const rollup_cell *rollup_next(const rollup *r, int res, const rollup_cell *c)
{
	return c->next ? &r->res[res].cells[c->next - 1] : NULL;
}

/* One encoded chunk: cells of one resolution, whole days of them (whole
 * buckets for days), at data[offset, offset + size). */
typedef struct rollup_chunk_out {
	int list;
	int64_t first_bucket;
	uint32_t cells;
	size_t offset;
	size_t size;
} rollup_chunk_out;

/* A tenant section's rollup, encoded (raw: the segment writer compresses). */
typedef struct rollup_encoded {
	bytebuf groups;               /* the group table block */
	uint32_t group_count;         /* 0: nothing encoded */
	bytebuf data;                 /* every chunk block, back to back */
	rollup_chunk_out *chunks;     /* the chunks of each list in list order, each by time */
	uint32_t chunk_count[LIST_COUNT];
	uint32_t chunk_capacity;
	uint32_t cells[LIST_COUNT];
} rollup_encoded;

/* Buffers rollup_encode reuses from one tenant section to the next (a
 * flush or compaction encodes thousands); zero-initialise, free with
 * rollup_scratch_free. */
#define ROLLUP_CHUNK_COLUMNS 14   /* a version 2 block's */
#define ROLLUP_CHUNK_COLUMNS_V1 13 /* a version 1 block's: no wraps column */
typedef struct rollup_scratch {
	bytebuf column[ROLLUP_CHUNK_COLUMNS]; /* a chunk's columns */
	uint64_t *u;
	int64_t *cost;
	uint32_t *codes;
	size_t capacity;                      /* entries of u, cost and codes */
} rollup_scratch;

void rollup_scratch_free(rollup_scratch *s);

/*
 * Encodes r for a segment file's tenant section: one group table (groups
 * renumbered: the total first, then in order of first use) and, per
 * resolution, chunks of at least ROLLUP_CHUNK_CELLS cells cut between UTC
 * days (between buckets for day cells). Minute cells before
 * minute_bucket_from are left out (retention); day cells are encoded only
 * for days with more than ROLLUP_DAY_COMPOSE_MAX hour cells (queries compose
 * the others from hours); a total cell only where its bucket has two groups
 * or more. *out is emptied first; free it with rollup_encoded_free.
 * scratch: buffers to reuse (NULL: rollup_encode uses its own).
 */
int rollup_encode(const rollup *r, int64_t minute_bucket_from, rollup_scratch *scratch,
		  rollup_encoded *out);
void rollup_encoded_free(rollup_encoded *e);

/* Decodes a group table block; codes must be below dict_count[d] (the total
 * group, all codes 0, only at 0). *out is malloc-ed. 0, -ENOMEM or
 * TALLY_E_CORRUPT. */
int rollup_groups_decode(const uint8_t *raw, size_t size, const uint32_t dict_count[DIM_COUNT],
			 rollup_group **out, uint32_t *count);

/* A decoded chunk block, by column: cell i is (bucket[i], group[i], ...),
 * sorted by (bucket, group). After rollup_block_sketches, sketch_index holds
 * four arrays of cell_count entries: histogram entry count, its first entry
 * in dd_arena, user count (ROLLUP_DENSE for a dense cell), and its first
 * code in user_arena (for a dense cell: its register set in register_arena). */
#define ROLLUP_DENSE UINT32_MAX /* sketch_index user count of a dense cell */
typedef struct rollup_block {
	const rollup_group *groups; /* the section's group table (not owned) */
	uint32_t group_count;
	uint32_t cell_count;
	int64_t *bucket;
	int64_t *cost;
	uint64_t *count;
	uint64_t *tokens_in;
	uint64_t *tokens_out;
	uint64_t *duration_sum;
	uint32_t *group;
	uint32_t *duration_min;
	uint32_t *duration_max;
	uint64_t *status_other;  /* 3 per cell when the block holds total cells, else NULL */
	rollup_wraps *wraps;     /* 1 per cell when a sum of a cell wrapped, else NULL */
	void *block;             /* the one allocation behind the columns above */
	size_t bytes;
	int sketches;            /* histograms, users and registers decoded */
	uint32_t *sketch_index;  /* per cell: dd count, dd at, user count (or ROLLUP_DENSE), user/register at */
	uint64_t *dd_arena;
	uint32_t *user_arena;
	uint8_t *register_arena;
	_Atomic uint64_t *dense_users; /* per register set: its distinct users + 1 once asked, else 0 */
	uint8_t *sketch_raw;     /* their columns, kept until then */
	size_t hist_size, users_size, dense_size;
	uint32_t user_limit;     /* user codes must be below this */
	int mixed_status;        /* a projection (rollup_block_project): a cell's count by status is in status_other */
} rollup_block;


/*
 * Decodes a raw chunk block: the scalar aggregates of every cell (count-1
 * cells get their one-entry histogram too). Group numbers must be below
 * group_count; groups (not copied) must outlive the block. User codes,
 * checked when rollup_block_sketches decodes them, must be below
 * user_limit. 0, -ENOMEM or TALLY_E_CORRUPT.
 */
int rollup_block_decode(const uint8_t *raw, size_t size, const rollup_group *groups,
			uint32_t group_count, uint32_t user_limit, rollup_block *out);

/*
 * Decodes the histograms, user codes (below dict_count[DIM_USER] of the
 * decode, checked) and dense registers of a decoded block, once. 0,
 * -ENOMEM or TALLY_E_CORRUPT (the block keeps its scalars either way).
 */
int rollup_block_sketches(rollup_block *b);

/*
 * The distinct users of register set `set` of a block's register_arena
 * (llround of hll_estimate), computed the first time any query asks and
 * kept in the block: the estimate reads all HLL_REGISTERS registers, about
 * 50-130 us, and a 30-day query of a tenant past USET_EXACT_MAX users a
 * day asks for 30 of them. Safe from several threads at once (the value
 * is the same whoever stores it).
 */
uint64_t rollup_block_dense_users(const rollup_block *b, uint32_t set);
void rollup_block_free(rollup_block *b);

/* Index of the first cell with bucket >= bucket (cell_count if none). */
uint32_t rollup_block_lower_bound(const rollup_block *b, int64_t bucket);

/*
 * A group table projected to fewer dimensions: groups that agree on the
 * code slots in code_mask (bit c: code[c]) and, when keep_status, on the
 * status become one group of *out (codes outside the mask and, without
 * keep_status, the status are 0); (*map)[g] is group g's projected group,
 * ROLLUP_NO_GROUP for the total group (ROLLUP_STATUS_ALL). Free both. 0 or
 * -ENOMEM.
 */
#define ROLLUP_NO_GROUP UINT32_MAX
int rollup_groups_project(const rollup_group *groups, uint32_t count, uint32_t code_mask, int keep_status,
			  uint32_t **map, rollup_group **out, uint32_t *out_count);

/*
 * The projection of a block (scalars and sketches decoded) through a map of
 * rollup_groups_project: its cells of one bucket and one projected group
 * merged into one cell of that group. Counts, sums, minimum, maximum and
 * histograms merge exactly; the count by status of each cell goes to
 * status_other (out->mixed_status), as for total cells; total cells are
 * left out. Users are not carried: a projection answers only queries that
 * do not count distinct users. out has no group table of its own
 * (groups NULL). 0 or -ENOMEM (nothing to free then).
 */
int rollup_block_project(const rollup_block *src, const uint32_t *map, rollup_block *out);

#endif /* TALLY_ROLLUP_H */
