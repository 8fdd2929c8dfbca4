/*
 * memtable.h — one tenant's not-yet-flushed events, in ingest order.
 *
 * Rows are appended under the store lock after their batch was appended to
 * the WAL; the five dimensions share one interning dictionary (fewer cold
 * cache lines per event than five), split per dimension at flush; a memtable is frozen (no more appends) when a flush begins and
 * freed once its rows are in a published segment file. An id index (the
 * full 64-bit id hash per row plus an open-addressing table of row numbers)
 * answers "is this exact id here?" for dedup verification. Appends do not
 * probe the table one row at a time (a cache miss per event on a table of
 * millions of slots): rows [indexed, count) are a tail that a lookup scans,
 * and once it reaches MEMTABLE_INDEX_TAIL_MAX rows they go into the table
 * together, their slots prefetched ahead so the misses overlap. A large
 * table grows through a successor built a tail at a time (memtable.c,
 * note 1), not in one call.
 */
#ifndef TALLY_MEMTABLE_H
#define TALLY_MEMTABLE_H

#include <pthread.h>
#include <stdint.h>
#include <stddef.h>

#include "rollup.h"
#include "rows.h"
#include "strdict.h"
#include "tally.h"

/* Rows per block of a memtable's block time ranges (memtable_block_*). */
#define MEMTABLE_TIME_BLOCK_ROWS 4096u

/* A block of rows' earliest and latest time. */
typedef struct time_range {
	int64_t min_us;
	int64_t max_us;
} time_range;

/* The fields an append touches come first (up to rollup_lock), so that
 * prefetching a memtable's first MEMTABLE_HOT_BYTES loads all of them;
 * memtables are allocated on a cache line (memtable_new). */
typedef struct memtable {
	rows rows;
	strdict dict;          /* every dimension's strings, one code space */
	uint64_t *id_hash;     /* per row */
	uint32_t id_hash_capacity;
	uint8_t id_hash_mapped; /* id_hash is a mapping (grow_array) */
	uint32_t *index;       /* row + 1 of rows [0, indexed); 0 = empty */
	uint32_t index_mask;   /* slots - 1, power of two; 0 when none */
	uint32_t indexed;      /* rows in the index; the rest are the tail */
	int64_t time_min_us;
	int64_t time_max_us;
	size_t rollup_accounted; /* rollup bytes counted in memtable_bytes (store lock) */
	/* The live rollup: cells of rows [0, rolled), in dict's code space.
	 * rollup, rolled and rollup_failed are guarded by rollup_lock (taken
	 * after the store lock, never before it; the rollup thread only tries
	 * for it, never waits, while it holds the store lock): the rollup
	 * thread adds a slice of rows with only rollup_lock held, so ingest
	 * goes on; a query takes an active memtable's rollup_lock under the
	 * store lock, then holds only rollup_lock while it merges its cells
	 * (query.c, active_begin), and reads its rows after, a step per hold of
	 * the store lock; and it holds only rollup_lock while it reads a
	 * frozen one (its rows and dictionary never change once frozen, so the
	 * rollup can be brought up to date without the store lock). */
	pthread_mutex_t rollup_lock;
	rollup rollup;
	uint32_t rolled;       /* rows added to the rollup */
	int rollup_failed;     /* non-zero: the rollup is unusable (memory ran out) */
	uint64_t serial;       /* unique per memtable of the process (never reused) */
	/* Under the store lock: queries and events listings reading this
	 * memtable (frozen, or an active one's rollup) without the store lock;
	 * a flush that drops it while pinned sets `dropped` and leaves it to
	 * the last unpin to free (store_memtable_unpin). */
	uint32_t pins;
	int dropped;
	/* The id index's successor while it is built (memtable.c, note 1),
	 * else NULL; touched once per MEMTABLE_INDEX_TAIL_MAX rows. */
	uint32_t *index_next;
	uint32_t index_next_mask;
	uint32_t index_next_faulted; /* its pages faulted in so far */
	uint32_t index_moved;        /* rows [0, index_moved) are in index_next */
	uint8_t index_mapped;        /* index is a mapping of its own (else malloc memory) */
	/* The time ranges of blocks [0, blocks_known) of MEMTABLE_TIME_BLOCK_ROWS
	 * rows, noted by reads that passed each whole block (store.c,
	 * store_scan_memtable_range), so that later reads skip the blocks
	 * outside their range: rows are in ingest order, and their times
	 * mostly too. A full block's rows never change (but an undone ingest
	 * call's: memtable_truncate forgets the blocks it reaches). Noted only
	 * under the store lock and before the memtable is frozen (`frozen`, set
	 * under the store lock when a flush takes it), so that readers of a
	 * frozen memtable, without the lock, read them unchanged. About 16
	 * bytes per 4,096 rows, not counted in memtable_bytes. */
	time_range *blocks;
	uint32_t blocks_known, blocks_capacity;
	uint8_t frozen;
} memtable;

/* The bytes of a memtable that an append reads or writes. */
#define MEMTABLE_HOT_BYTES offsetof(memtable, rollup_lock)

/* Rows appended before they go into the id index together (a lookup
 * scans at most this many id hashes beyond the index). */
#define MEMTABLE_INDEX_TAIL_MAX 512u

/* Rows per slice of memtable_rollup_catch_up and of the rollup thread. */
#define MEMTABLE_ROLLUP_SLICE 256u

/* A packed id with its hash (dedup_hash). */
typedef struct packed_id {
	uint8_t kind;
	uint8_t size;
	uint64_t hash;
	const uint8_t *bytes;
} packed_id;

/*
 * The dimension strings of the event appended last, with their codes:
 * consecutive events of one batch sometimes repeat a dimension (type and
 * model in about a quarter of the reference workload's events, user in 3%:
 * docs/benchmarks.md, thirty-first measurement), and a string equal (byte
 * for byte) to the last one of its dimension takes its code without a
 * dictionary lookup, two cache misses saved.
 * The strings stay the caller's: keep one only while the events it was
 * filled from are alive (ingest keeps one per batch). Start it with
 * m = NULL.
 */
typedef struct dim_recent {
	const memtable *m;     /* the memtable the codes are of; NULL: none yet */
	uint64_t hash[DIM_COUNT];
	tally_str str[DIM_COUNT];
	uint32_t code[DIM_COUNT];
} dim_recent;

/* Appends one validated event whose id is given packed. dim_hash, when not
 * NULL, holds strdict_hash of its dimension strings in DIM order (see
 * event_dims), computed by the caller: ingest does it before it takes the
 * store lock. recent, when not NULL, is consulted before the dictionary and
 * updated. 0, -ENOMEM or TALLY_E_LIMIT; on failure the memtable is
 * unchanged (the dictionary may hold new strings, which is harmless). */
int memtable_append(memtable *m, const tally_event *event, const packed_id *id,
		    const uint64_t dim_hash[DIM_COUNT], dim_recent *recent);

/* s, with "" for a NULL pointer. */
static inline tally_str dim_str(tally_str s)
{
	if (!s.ptr)
		s.ptr = "";
	return s;
}

/* The event's dimension strings in DIM order ("" for a NULL pointer).
 * Inline: ingest calls it for every event, twice. */
static inline void event_dims(const tally_event *e, tally_str dims[DIM_COUNT])
{
	dims[DIM_TYPE] = dim_str(e->type);
	dims[DIM_PROJECT] = dim_str(e->project);
	dims[DIM_AGENT] = dim_str(e->agent);
	dims[DIM_MODEL] = dim_str(e->model);
	dims[DIM_USER] = dim_str(e->user);
}

/* Starts loading what appending an event with these dimension hashes will
 * touch first (the rows' tails, the dictionary's slots); a hint, no
 * effect on contents. */
void memtable_prefetch_append(const memtable *m, const uint64_t dim_hash[DIM_COUNT]);

/*
 * Hints for the dictionary lookups of an event with these dimension hashes,
 * in two steps a little apart: the slots first, then (once they are in)
 * the entries the slots point at. A dimension whose hash equals prev's
 * (the event before, or NULL) is skipped: its code comes from dim_recent.
 */
void memtable_prefetch_dim_slots(const memtable *m, const uint64_t dim_hash[DIM_COUNT],
				 const uint64_t *prev);
void memtable_prefetch_dim_entries(const memtable *m, const uint64_t dim_hash[DIM_COUNT],
				   const uint64_t *prev);

/* A zeroed memtable with its rollup lock made and a new serial. 0 or -errno. */
int memtable_init(memtable *m);

/* A memtable, allocated on a cache line and initialised (memtable_init);
 * NULL with *rc set when that fails. Free with memtable_free, then free(). */
memtable *memtable_new(int *rc);

/*
 * Ingest does not touch the rollup (it would cost every event, under the
 * store lock); the rollup is brought up to date behind the rows in two
 * steps. memtable_rollup_take, under the store lock (it reads the rows and
 * the dictionary that ingest appends to; not needed once frozen) and
 * rollup_lock (it reads rolled and the rollup's user hashes), copies rows
 * [rolled, rolled + n) as rollup events, n <= max_rows, and returns n.
 * memtable_rollup_apply, under the same hold of rollup_lock (so no other
 * writer adds the same rows), adds them and advances rolled. 0, or
 * -ENOMEM: then the rollup is marked failed for good (queries read this
 * memtable's rows instead; a flush builds its pages from the rows).
 */
uint32_t memtable_rollup_take(const memtable *m, rollup_event *out, uint32_t max_rows);
int memtable_rollup_apply(memtable *m, const rollup_event *events, uint32_t n);
/* Block b's time range into *out when it is known (see memtable.blocks):
 * 1, else 0. Under the store lock for an active memtable. */
static inline int memtable_block_range(const memtable *m, uint32_t b, time_range *out)
{
	if (b >= m->blocks_known)
		return 0;
	*out = m->blocks[b];
	return 1;
}
/* Under the store lock, for a memtable not frozen whose rows of block b
 * are all there (b * MEMTABLE_TIME_BLOCK_ROWS + MEMTABLE_TIME_BLOCK_ROWS <=
 * rows.count): notes the block's time range, when b is the first block not
 * known yet (else it is left unknown; as it is when memory runs out). */
void memtable_block_note(memtable *m, uint32_t b, time_range range);

/* Both steps, at most max_rows rows, under the store lock and rollup_lock
 * (only rollup_lock for a frozen memtable). */
int memtable_rollup_catch_up(memtable *m, uint32_t max_rows);

/*
 * Forgets rows [count, rows.count): the rows an ingest call appended before
 * it failed, under the store lock it still holds, so that nothing has seen
 * them (the rollup takes rows only under that lock: rolled <= count).
 * Allocates nothing. The id index is rebuilt in place when they had gone
 * into it (its successor is let go), and the time bounds are recomputed.
 * Strings interned for the rows stay in the dictionary, unused.
 */
void memtable_truncate(memtable *m, uint32_t count);

/* Every row of the exact id, in turn (a backfill may store one id on
 * several days): *cursor starts at 0; returns the next such row, or -1
 * when there is none left. */
int64_t memtable_find_next(const memtable *m, const packed_id *id, uint32_t *cursor);

/* Fills *event with row i; the id text goes to id_text (ID_TEXT_SIZE_MAX
 * bytes) and the strings point into the memtable. */
void memtable_event(const memtable *m, uint32_t i, tally_event *event, char *id_text);

/* Under the store lock: counts the rollup at rollup_bytes (its size, read
 * under rollup_lock) in memtable_bytes; returns the growth since it was
 * last counted, for the store's memtable totals. */
size_t memtable_rollup_account(memtable *m, size_t rollup_bytes);

/* RAM held, the rollup as last accounted (rollup_accounted). */
size_t memtable_bytes(const memtable *m);

/* Frees everything; waits for a rollup slice in progress to finish. */
void memtable_free(memtable *m);

/*
 * Fills *event from row i of r, with dimension d's strings from dict[d]
 * (segments have one dictionary per dimension; a memtable passes its one
 * dictionary five times) and the id text in id_text.
 */
void rows_event(const rows *r, const strdict *const dict[DIM_COUNT], uint32_t i,
		tally_event *event, char *id_text);

/* Points refs[d] at dict[d] (for rows_event on per-dimension dictionaries). */
void strdict_refs(const strdict dict[DIM_COUNT], const strdict *refs[DIM_COUNT]);

/*
 * The memtable's rows as a segment writer wants them: one dictionary per
 * dimension (dict, which must be empty, is filled) and dimension columns
 * recoded into them (view's dim columns point at new arrays, freed with
 * memtable_split_free; every other column is the memtable's own).
 */
int memtable_split(const memtable *m, rows *view, strdict dict[DIM_COUNT]);
void memtable_split_free(rows *view, strdict dict[DIM_COUNT]);

/* Exact payload equality of two events (all fields, id included). */
int tally_event_equal(const tally_event *a, const tally_event *b);

#endif /* TALLY_MEMTABLE_H */
