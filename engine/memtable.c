/*
 * memtable.c — a tenant's in-memory rows (see memtable.h).
 *
 * Invariants
 *   - Every row's dimension codes are < dict.count.
 *   - index has index_mask + 1 slots, at most half full, and every row
 *     below indexed appears in exactly one slot; no row at or above it
 *     does, and count - indexed < MEMTABLE_INDEX_TAIL_MAX after an append.
 *   - id_hash has id_hash_capacity >= count entries.
 *   - time_min_us/time_max_us bound every row's time (meaningless when
 *     rows.count == 0).
 *   - index_next, when not NULL, has twice the index's slots and holds
 *     exactly rows [0, index_moved), index_moved <= indexed.
 *
 * NOTES
 *
 * 1. The id index of a large memtable grows without a stall. Rebuilding
 *    a table of a million slots in one call held the store lock for 6-11
 *    ms (docs/benchmarks.md, thirty-third measurement), most of it page
 *    faults of the new table. From INDEX_MIGRATE_SLOTS_MIN slots on, the
 *    successor (twice the slots, a mapping) is made when the rows reach a
 *    quarter of the slots; its pages are faulted in step with the rows up
 *    to three eighths; from there each tail that goes into the index also
 *    moves the next INDEX_MOVE_ROWS rows into the successor, which takes
 *    the index's place once it holds every indexed row, before the rows
 *    reach half the slots. Lookups read only the index, which stays
 *    complete throughout. A growth the successor is not ready for (a
 *    mapping could not be made, say) finishes it, or rebuilds, at once.
 */
#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "grow.h"
#include "memtable.h"

/* Rows ahead whose index slots are prefetched while rows go into the index. */
#define INDEX_AHEAD 16u

/* An id index this large grows through a successor (note 1): 256 KiB. */
#define INDEX_MIGRATE_SLOTS_MIN 65536u

/* Rows each tail moves into the successor: from three eighths to half of
 * the slots, S / 8 rows come in S / 4096 tails, which move S rows, twice
 * what there is to move. */
#define INDEX_MOVE_ROWS 4096u

static uint32_t index_slot(uint64_t hash, uint32_t mask)
{
	return (uint32_t)hash & mask;
}

/* Puts rows [from, to) into `index` (mask + 1 slots). Every row lands in
 * a random slot of a table that is larger than the caches: the slots of
 * the rows INDEX_AHEAD on are prefetched, so that the misses overlap. */
static void index_put(const memtable *m, uint32_t *index, uint32_t mask, uint32_t from,
		      uint32_t to)
{
	for (uint32_t row = from; row < to && row < from + INDEX_AHEAD; row++)
		__builtin_prefetch(&index[index_slot(m->id_hash[row], mask)], 1);
	for (uint32_t row = from; row < to; row++) {
		if (row + INDEX_AHEAD < to)
			__builtin_prefetch(&index[index_slot(m->id_hash[row + INDEX_AHEAD], mask)], 1);
		uint32_t s = index_slot(m->id_hash[row], mask);
		while (index[s])
			s = (s + 1) & mask;
		index[s] = row + 1;
	}
}

static void index_release(uint32_t *index, uint32_t mask, uint8_t mapped)
{
	grow_array_free(index, ((size_t)mask + 1) * sizeof(uint32_t), mapped);
}

static void index_next_release(memtable *m)
{
	if (m->index_next)
		index_release(m->index_next, m->index_next_mask, 1);
	m->index_next = NULL;
	m->index_next_mask = 0;
	m->index_next_faulted = 0;
	m->index_moved = 0;
}

/* Faults in the successor's pages [index_next_faulted, pages). */
static void index_next_fault(memtable *m, uint32_t pages)
{
	grow_map_fault(m->index_next, ((size_t)m->index_next_mask + 1) * sizeof(uint32_t),
		       &m->index_next_faulted, pages);
}

/* The successor takes the index's place; it must hold rows [0, indexed). */
static void index_next_swap(memtable *m)
{
	assert(m->index_moved == m->indexed);
	index_release(m->index, m->index_mask, m->index_mapped);
	m->index = m->index_next;
	m->index_mask = m->index_next_mask;
	m->index_mapped = 1;
	m->index_next = NULL;
	m->index_next_mask = 0;
	m->index_next_faulted = 0;
	m->index_moved = 0;
}

/* A table of at least 2 * rows_wanted slots holding rows [0, indexed):
 * the successor, finished now, when it is the size wanted (note 1), else
 * one built at once. */
static int index_grow(memtable *m, uint32_t rows_wanted)
{
	uint64_t slots_needed = (uint64_t)rows_wanted * 2;
	if (m->index_mask && slots_needed <= (uint64_t)m->index_mask + 1)
		return 0;
	if (m->index_next && slots_needed <= (uint64_t)m->index_next_mask + 1) {
		index_next_fault(m, UINT32_MAX);
		index_put(m, m->index_next, m->index_next_mask, m->index_moved, m->indexed);
		m->index_moved = m->indexed;
		index_next_swap(m);
		return 0;
	}
	uint64_t slot_count = m->index_mask ? ((uint64_t)m->index_mask + 1) : 8;
	while (slot_count < slots_needed)
		slot_count *= 2;
	if (slot_count > (1ull << 31))
		return -ENOMEM;
	uint32_t *index = grow_slots_alloc(slot_count, sizeof(*index));
	if (!index)
		return -ENOMEM;
	uint32_t mask = (uint32_t)slot_count - 1;
	index_put(m, index, mask, 0, m->indexed);
	index_next_release(m);
	if (m->index)
		index_release(m->index, m->index_mask, m->index_mapped);
	m->index = index;
	m->index_mask = mask;
	m->index_mapped = 0;
	return 0;
}

/* After a tail went into the index: the successor's next step (note 1). */
static void index_step(memtable *m)
{
	uint64_t slots = (uint64_t)m->index_mask + 1;
	if (!m->index_mask || slots < INDEX_MIGRATE_SLOTS_MIN || slots > (1ull << 30))
		return;
	uint64_t count = m->rows.count;
	if (!m->index_next) {
		if (count < slots / 4)
			return;
		if (!(m->index_next = grow_map_new(2 * slots * sizeof(uint32_t))))
			return; /* the growth will rebuild at once */
		m->index_next_mask = (uint32_t)(2 * slots - 1);
		m->index_next_faulted = 0;
		m->index_moved = 0;
	}
	uint32_t pages = (uint32_t)(grow_map_bytes(2 * slots * sizeof(uint32_t)) / GROW_PAGE_BYTES);
	if (count < slots * 3 / 8) {
		/* Faulted in step with the rows from a quarter to three
		 * eighths of the slots, one page ahead. */
		index_next_fault(m, (uint32_t)((uint64_t)pages * (count - slots / 4) / (slots / 8)) + 1);
		return;
	}
	index_next_fault(m, UINT32_MAX);
	uint32_t to = m->indexed - m->index_moved > INDEX_MOVE_ROWS ? m->index_moved + INDEX_MOVE_ROWS
								    : m->indexed;
	index_put(m, m->index_next, m->index_next_mask, m->index_moved, to);
	m->index_moved = to;
	if (m->index_moved == m->indexed)
		index_next_swap(m);
}

/* Puts the tail, rows [indexed, count), into the index. The slots of rows
 * a few ahead are prefetched, so their cache misses overlap instead of
 * costing one after another. 0 or -ENOMEM (nothing changed). */
static int index_tail(memtable *m)
{
	uint32_t count = m->rows.count;
	int rc = index_grow(m, count);
	if (rc)
		return rc;
	index_put(m, m->index, m->index_mask, m->indexed, count);
	m->indexed = count;
	index_step(m);
	return 0;
}

static int id_hash_reserve(memtable *m, uint32_t rows_wanted)
{
	if (rows_wanted <= m->id_hash_capacity)
		return 0;
	uint64_t capacity = m->id_hash_capacity ? m->id_hash_capacity : 8;
	while (capacity < rows_wanted)
		capacity *= 2;
	if (capacity > UINT32_MAX)
		return -ENOMEM;
	/* Mapped from the rows' ROWS_MAPPED_MIN on, as their columns are: a
	 * doubling is then an mremap, not a copy under the store lock. */
	void *hashes = m->id_hash;
	int rc = grow_array(&hashes, sizeof(uint64_t) * m->id_hash_capacity,
			    sizeof(uint64_t) * capacity, sizeof(uint64_t) * m->rows.count,
			    m->rows.map_large && capacity >= ROWS_MAPPED_MIN, &m->id_hash_mapped);
	if (rc)
		return rc;
	m->id_hash = hashes;
	m->id_hash_capacity = (uint32_t)capacity;
	return 0;
}

/* The code of dimension d's string str (hash: its strdict_hash): recent's
 * when it holds the same string for m, else the dictionary's, which recent
 * (when not NULL) then holds. */
static int dim_code(memtable *m, dim_recent *recent, int d, tally_str str, uint64_t hash,
		    uint32_t *code)
{
	if (recent && recent->m == m && recent->hash[d] == hash && recent->str[d].len == str.len &&
	    memcmp(recent->str[d].ptr, str.ptr, str.len) == 0) {
		*code = recent->code[d];
		return 0;
	}
	int rc = strdict_intern_hashed(&m->dict, str.ptr, str.len, hash, code);
	if (!rc && recent) {
		recent->hash[d] = hash;
		recent->str[d] = str;
		recent->code[d] = *code;
	}
	return rc;
}

int memtable_append(memtable *m, const tally_event *e, const packed_id *id,
		    const uint64_t dim_hash[DIM_COUNT], dim_recent *recent)
{
	rows *r = &m->rows;
	uint32_t row = r->count;
	if (row == UINT32_MAX - 1)
		return TALLY_E_LIMIT;
	/* Call the reserve functions only when something must grow: this runs
	 * for every event. */
	int rc = 0;
	if (row + 1 > r->capacity)
		rc = rows_reserve(r, row + 1);
	if (!rc && row + 1 > m->id_hash_capacity)
		rc = id_hash_reserve(m, row + 1);
	if (!rc && row + 1 - m->indexed >= MEMTABLE_INDEX_TAIL_MAX)
		rc = index_grow(m, row + 1); /* room now: index_tail below cannot fail */
	if (!rc)
		rc = rows_reserve_id_bytes(r, id->size);
	if (rc)
		return rc;
	tally_str dims[DIM_COUNT];
	event_dims(e, dims);
	uint32_t codes[DIM_COUNT];
	/* recent's codes are of recent->m only: for another memtable, every
	 * dimension is looked up, and refills it before it names m. */
	if (recent && recent->m != m)
		recent->m = NULL;
	for (int d = 0; d < DIM_COUNT; d++) {
		uint64_t hash = dim_hash ? dim_hash[d] : strdict_hash(dims[d].ptr, dims[d].len);
		if ((rc = dim_code(m, recent, d, dims[d], hash, &codes[d])))
			return rc; /* interned strings without rows are harmless */
	}
	if (recent)
		recent->m = m;
	for (int d = 0; d < DIM_COUNT; d++)
		r->dim[d][row] = codes[d];
	r->time_us[row] = e->time_us;
	r->status[row] = (uint8_t)e->status;
	r->duration_ms[row] = e->duration_ms;
	r->tokens_in[row] = e->tokens_in;
	r->tokens_out[row] = e->tokens_out;
	r->cost_micros[row] = e->cost_micros;
	r->id_kind[row] = id->kind;
	memcpy(r->id_bytes.data + r->id_bytes.size, id->bytes, id->size);
	r->id_bytes.size += id->size;
	r->id_offset[row + 1] = (uint32_t)r->id_bytes.size;
	m->id_hash[row] = id->hash;
	if (!row || e->time_us < m->time_min_us)
		m->time_min_us = e->time_us;
	if (!row || e->time_us > m->time_max_us)
		m->time_max_us = e->time_us;
	r->count = row + 1;
	if (r->count - m->indexed >= MEMTABLE_INDEX_TAIL_MAX) {
		rc = index_tail(m);
		assert(rc == 0); /* the table was grown above */
		(void)rc;
	}
	return 0;
}

void memtable_truncate(memtable *m, uint32_t count)
{
	rows *r = &m->rows;
	if (count >= r->count)
		return;
	r->count = count;
	r->id_bytes.size = r->id_offset[count];
	if (m->indexed > count) {
		index_next_release(m);
		memset(m->index, 0, ((size_t)m->index_mask + 1) * sizeof(uint32_t));
		index_put(m, m->index, m->index_mask, 0, count);
		m->indexed = count;
	}
	for (uint32_t row = 0; row < count; row++) {
		int64_t t = r->time_us[row];
		if (!row || t < m->time_min_us)
			m->time_min_us = t;
		if (!row || t > m->time_max_us)
			m->time_max_us = t;
	}
	if (m->blocks_known > count / MEMTABLE_TIME_BLOCK_ROWS)
		m->blocks_known = count / MEMTABLE_TIME_BLOCK_ROWS; /* their rows go */
}

void memtable_block_note(memtable *m, uint32_t b, time_range range)
{
	assert(!m->frozen && (uint64_t)(b + 1) * MEMTABLE_TIME_BLOCK_ROWS <= m->rows.count);
	if (b != m->blocks_known)
		return;
	if (grow_for_one((void **)&m->blocks, &m->blocks_capacity, b, 16, sizeof(*m->blocks)))
		return;
	m->blocks[b] = range;
	m->blocks_known = b + 1;
}

void memtable_prefetch_append(const memtable *m, const uint64_t dim_hash[DIM_COUNT])
{
	const rows *r = &m->rows;
	uint32_t row = r->count;
	if (row < r->capacity) {
		__builtin_prefetch(&r->time_us[row], 1);
		__builtin_prefetch(&r->tokens_in[row], 1);
		__builtin_prefetch(&r->tokens_out[row], 1);
		__builtin_prefetch(&r->cost_micros[row], 1);
		__builtin_prefetch(&r->duration_ms[row], 1);
		for (int d = 0; d < DIM_COUNT; d++)
			__builtin_prefetch(&r->dim[d][row], 1);
		__builtin_prefetch(&r->id_offset[row + 1], 1);
		__builtin_prefetch(&r->status[row], 1);
		__builtin_prefetch(&r->id_kind[row], 1);
	}
	if (r->id_bytes.data)
		__builtin_prefetch(r->id_bytes.data + r->id_bytes.size, 1);
	if (m->id_hash && row < m->id_hash_capacity)
		__builtin_prefetch(&m->id_hash[row], 1);
	if (dim_hash)
		memtable_prefetch_dim_slots(m, dim_hash, NULL);
	if (m->dict.arena.data)
		__builtin_prefetch(m->dict.arena.data);
}

void memtable_prefetch_dim_slots(const memtable *m, const uint64_t dim_hash[DIM_COUNT],
				 const uint64_t *prev)
{
	for (int d = 0; d < DIM_COUNT; d++)
		if (!prev || prev[d] != dim_hash[d])
			strdict_prefetch_slot(&m->dict, dim_hash[d]);
}

void memtable_prefetch_dim_entries(const memtable *m, const uint64_t dim_hash[DIM_COUNT],
				   const uint64_t *prev)
{
	for (int d = 0; d < DIM_COUNT; d++)
		if (!prev || prev[d] != dim_hash[d])
			strdict_prefetch_entry(&m->dict, dim_hash[d]);
}

/* Row `row` holds exactly id. */
static int row_has_id(const memtable *m, uint32_t row, const packed_id *id)
{
	if (m->id_hash[row] != id->hash || m->rows.id_kind[row] != id->kind)
		return 0;
	size_t size;
	const uint8_t *bytes = rows_id(&m->rows, row, &size);
	return size == id->size && memcmp(bytes, id->bytes, size) == 0;
}

int64_t memtable_find_next(const memtable *m, const packed_id *id, uint32_t *cursor)
{
	/* *cursor below the slot count counts the slots already examined from
	 * the id's home slot (the index is at most half full, so an empty slot
	 * ends every chain); from the slot count on, it is that plus the tail
	 * rows already examined. */
	uint32_t slots = m->index_mask ? m->index_mask + 1 : 0;
	uint32_t home = index_slot(id->hash, m->index_mask);
	uint32_t n = *cursor;
	for (; n < slots; n++) {
		uint32_t s = (home + n) & m->index_mask;
		if (!m->index[s]) {
			n = slots;
			break;
		}
		uint32_t row = m->index[s] - 1;
		if (row_has_id(m, row, id)) {
			*cursor = n + 1;
			return row;
		}
	}
	for (uint32_t row = m->indexed + (n - slots); row < m->rows.count; row++, n++) {
		if (row_has_id(m, row, id)) {
			*cursor = n + 1;
			return row;
		}
	}
	*cursor = n;
	return -1;
}

void rows_event(const rows *r, const strdict *const dict[DIM_COUNT], uint32_t i, tally_event *e,
		char *id_text)
{
	size_t size;
	const uint8_t *bytes = rows_id(r, i, &size);
	int text_size = id_unpack(r->id_kind[i], bytes, size, id_text);
	e->event_id.ptr = id_text;
	e->event_id.len = text_size > 0 ? (uint32_t)text_size : 0;
	e->time_us = r->time_us[i];
	e->type = strdict_get(dict[DIM_TYPE], r->dim[DIM_TYPE][i]);
	e->project = strdict_get(dict[DIM_PROJECT], r->dim[DIM_PROJECT][i]);
	e->agent = strdict_get(dict[DIM_AGENT], r->dim[DIM_AGENT][i]);
	e->model = strdict_get(dict[DIM_MODEL], r->dim[DIM_MODEL][i]);
	e->user = strdict_get(dict[DIM_USER], r->dim[DIM_USER][i]);
	e->status = r->status[i];
	e->duration_ms = r->duration_ms[i];
	e->tokens_in = r->tokens_in[i];
	e->tokens_out = r->tokens_out[i];
	e->cost_micros = r->cost_micros[i];
}

void memtable_event(const memtable *m, uint32_t i, tally_event *e, char *id_text)
{
	const strdict *refs[DIM_COUNT];
	for (int d = 0; d < DIM_COUNT; d++)
		refs[d] = &m->dict;
	rows_event(&m->rows, refs, i, e, id_text);
}

static int str_equal(tally_str a, tally_str b)
{
	return a.len == b.len && (!a.len || memcmp(a.ptr, b.ptr, a.len) == 0);
}

int tally_event_equal(const tally_event *a, const tally_event *b)
{
	return str_equal(a->event_id, b->event_id) && a->time_us == b->time_us &&
	       str_equal(a->type, b->type) && str_equal(a->project, b->project) &&
	       str_equal(a->agent, b->agent) && str_equal(a->model, b->model) &&
	       str_equal(a->user, b->user) && a->status == b->status &&
	       a->duration_ms == b->duration_ms && a->tokens_in == b->tokens_in &&
	       a->tokens_out == b->tokens_out && a->cost_micros == b->cost_micros;
}

static _Atomic uint64_t memtable_serials;

int memtable_init(memtable *m)
{
	memset(m, 0, sizeof(*m));
	m->rows.map_large = 1;
	int rc = pthread_mutex_init(&m->rollup_lock, NULL);
	if (rc)
		return -rc;
	m->serial = atomic_fetch_add(&memtable_serials, 1) + 1;
	return 0;
}

uint32_t memtable_rollup_take(const memtable *m, rollup_event *out, uint32_t max_rows)
{
	const rows *r = &m->rows;
	const rollup *ru = &m->rollup;
	uint32_t n = r->count - m->rolled < max_rows ? r->count - m->rolled : max_rows;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t i = m->rolled + k;
		uint32_t user = r->dim[DIM_USER][i];
		tally_str u = strdict_get(&m->dict, user);
		out[k] = (rollup_event){
			.time_us = r->time_us[i],
			.code = {r->dim[DIM_TYPE][i], r->dim[DIM_PROJECT][i], r->dim[DIM_AGENT][i],
				 r->dim[DIM_MODEL][i]},
			.status = r->status[i],
			.user = u.len ? user : ROLLUP_NO_USER,
			.duration_ms = r->duration_ms[i],
			.tokens_in = r->tokens_in[i],
			.tokens_out = r->tokens_out[i],
			.cost_micros = r->cost_micros[i],
		};
		if (u.len)
			out[k].user_hash = user < ru->user_hash_count && ru->user_hash[user]
						   ? ru->user_hash[user]
						   : sketch_user_hash(u.ptr, u.len);
	}
	return n;
}

int memtable_rollup_apply(memtable *m, const rollup_event *events, uint32_t n)
{
	if (m->rollup_failed)
		return m->rollup_failed;
	for (uint32_t k = 0; k < n; k++) {
		int rc = rollup_add(&m->rollup, &events[k]);
		if (rc) {
			m->rollup_failed = rc; /* the row may be in part of the cells */
			return rc;
		}
	}
	m->rolled += n;
	return 0;
}

int memtable_rollup_catch_up(memtable *m, uint32_t max_rows)
{
	rollup_event slice[MEMTABLE_ROLLUP_SLICE];
	int rc = m->rollup_failed;
	while (!rc && m->rolled < m->rows.count && max_rows) {
		uint32_t n = memtable_rollup_take(m, slice, max_rows < MEMTABLE_ROLLUP_SLICE
								   ? max_rows : MEMTABLE_ROLLUP_SLICE);
		rc = memtable_rollup_apply(m, slice, n);
		max_rows -= n;
	}
	return rc;
}

size_t memtable_rollup_account(memtable *m, size_t rollup_bytes)
{
	size_t grown = rollup_bytes - m->rollup_accounted;
	m->rollup_accounted = rollup_bytes;
	return grown;
}

size_t memtable_bytes(const memtable *m)
{
	size_t bytes = rows_bytes(&m->rows);
	bytes += strdict_bytes(&m->dict);
	if (m->index_mask)
		bytes += ((size_t)m->index_mask + 1) * sizeof(uint32_t);
	bytes += (size_t)m->index_next_faulted * GROW_PAGE_BYTES;
	bytes += (size_t)m->id_hash_capacity * sizeof(uint64_t);
	return bytes + m->rollup_accounted;
}

memtable *memtable_new(int *rc)
{
	/* aligned_alloc wants a multiple of the alignment. */
	memtable *m = aligned_alloc(64, (sizeof(memtable) + 63) / 64 * 64);
	if (!m) {
		*rc = -ENOMEM;
		return NULL;
	}
	if ((*rc = memtable_init(m))) {
		free(m);
		return NULL;
	}
	return m;
}

void memtable_free(memtable *m)
{
	/* A rollup slice being added without the store lock finishes first. */
	pthread_mutex_lock(&m->rollup_lock);
	pthread_mutex_unlock(&m->rollup_lock);
	pthread_mutex_destroy(&m->rollup_lock);
	rows_free(&m->rows);
	strdict_free(&m->dict);
	if (m->id_hash)
		grow_array_free(m->id_hash, sizeof(uint64_t) * m->id_hash_capacity, m->id_hash_mapped);
	if (m->index)
		index_release(m->index, m->index_mask, m->index_mapped);
	index_next_release(m);
	rollup_free(&m->rollup);
	free(m->blocks);
	memset(m, 0, sizeof(*m));
}

void strdict_refs(const strdict dict[DIM_COUNT], const strdict *refs[DIM_COUNT])
{
	for (int d = 0; d < DIM_COUNT; d++)
		refs[d] = &dict[d];
}

void memtable_split_free(rows *view, strdict dict[DIM_COUNT])
{
	for (int d = 0; d < DIM_COUNT; d++) {
		free(view->dim[d]);
		view->dim[d] = NULL;
		strdict_free(&dict[d]);
	}
}

int memtable_split(const memtable *m, rows *view, strdict dict[DIM_COUNT])
{
	*view = m->rows;
	for (int d = 0; d < DIM_COUNT; d++)
		view->dim[d] = NULL;
	uint32_t *remap = malloc(sizeof(*remap) * ((size_t)m->dict.count + 1));
	int rc = remap ? 0 : -ENOMEM;
	for (int d = 0; d < DIM_COUNT && !rc; d++) {
		view->dim[d] = malloc(sizeof(uint32_t) * ((size_t)m->rows.count + 1));
		if (!view->dim[d]) {
			rc = -ENOMEM;
			break;
		}
		memset(remap, 0xff, sizeof(*remap) * m->dict.count);
		for (uint32_t row = 0; row < m->rows.count && !rc; row++) {
			uint32_t code = m->rows.dim[d][row];
			if (remap[code] == UINT32_MAX) {
				tally_str str = strdict_get(&m->dict, code);
				rc = strdict_intern(&dict[d], str.ptr, str.len, &remap[code]);
			}
			view->dim[d][row] = remap[code];
		}
	}
	free(remap);
	if (rc)
		memtable_split_free(view, dict);
	return rc;
}
