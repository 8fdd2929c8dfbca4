/*
 * rollup.c — building, encoding and decoding rollup cells (rollup.h).
 *
 * NOTES
 *
 * 1. Live cells. A cell's histogram and user set live inline while they
 *    hold one entry (the usual case for minute cells and the long tail) and
 *    in a heap array otherwise, grown to the next power of two when the
 *    count reaches one (no capacity field). Both stay sorted (binary search,
 *    insertion by memmove): a cell holds at most DD_INDEX_MAX histogram
 *    entries and USET_EXACT_MAX user codes before it turns dense.
 *
 * 2. Indexes. Per resolution, an open-addressing table finds the cell of
 *    (bucket, group) and a second one finds the first cell of a bucket; the
 *    cells of one bucket are chained through `next`, so a query reads a
 *    range of buckets without looking at any other cell.
 *
 * 3. Encoding (chunk block versions 1 and 2; byte by byte in docs/formats.md):
 *    one group table per tenant section (the total first, then groups in
 *    order of first use), then four chunk lists (minute, hour, day, day
 *    totals), each cut into chunks of whole days (whole buckets for days)
 *    of at least ROLLUP_CHUNK_CELLS cells. A chunk is columnar: scalar
 *    columns through the segment column codecs (codec.h), histograms and
 *    users as varint streams, dense registers raw. A count-1 cell's
 *    histogram is its single duration and its min and max are its sum, so
 *    it stores neither. A chunk whose cells' sums all stayed in their
 *    64-bit range is version 1; one with a wrapped sum is version 2 and
 *    adds the wraps (note 7).
 *
 * 4. Day cells are stored only for days with more than
 *    ROLLUP_DAY_COMPOSE_MAX hour cells; a query composes the other days from
 *    their hour cells (a source without day cells for a day has hour cells
 *    for all of it). For the long tail a day cell would repeat its few hour
 *    cells; for heavy days it saves a query from merging hundreds.
 *
 * 5. Totals. Group 0 of a live rollup is the total of all groups; its day
 *    cells let a query without grouping or filters read one cell per day
 *    (kept only where a day has two groups or more, in their own chunk
 *    list). Hour totals were tried and dropped: +2.2 bytes per event on the
 *    reference workload, mostly their user sets.
 *
 * 6. The flush's build (rollup_from_rows) makes only what rollup_encode
 *    stores: hour cells for every row, minute cells inside retention, then,
 *    once the hour cells say which days are heavy (note 4), a second pass
 *    adds those days' rows to day cells and day totals. A cell is built
 *    from the same rows in the same order either way, so the encoding is
 *    the same bytes as adding every row at every resolution
 *    (tests/test_rollup.c). On the reference workload, where most days are
 *    light and most rows are older than minute retention, the flush of 1M
 *    events fell from 1,167 to 966 ms (docs/benchmarks.md, fifteenth
 *    measurement).
 *
 * 7. Wraps. A cell's sums are exact (rollup.h): the rare cell whose sum
 *    passed its 64-bit range gets an entry in the rollup's wraps array,
 *    so the common cell stays 120 bytes (dd_count and user_count are 16
 *    bits to make room for the entry's number). Only a chunk holding such
 *    a cell stores a wraps column, so data whose sums never wrap is
 *    encoded exactly as before wraps existed.
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grow.h"
#include "rollup.h"
#include "sort.h"
#include "tally_limits.h"

const int64_t ROLLUP_RES_US[RES_COUNT] = {ROLLUP_MINUTE_US, ROLLUP_HOUR_US, ROLLUP_DAY_US};
const char *const ROLLUP_RES_NAME[RES_COUNT] = {"minute", "hour", "day"};
const char *const ROLLUP_LIST_NAME[LIST_COUNT] = {"minute", "hour", "day", "day total"};

_Static_assert(sizeof(rollup_cell) == 120, "a cell stays 120 bytes with its wraps number (note 7)");
_Static_assert(DD_INDEX_MAX <= UINT16_MAX && USET_EXACT_MAX <= UINT16_MAX,
	       "rollup_cell counts histogram entries and user codes in 16 bits");

static inline int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}


static inline int is_pow2(uint32_t n)
{
	return n && !(n & (n - 1));
}

/* ---- groups --------------------------------------------------------------- */

static uint64_t group_hash(const rollup_group *g)
{
	uint64_t h = g->status;
	for (int d = 0; d < ROLLUP_GROUP_DIMS; d++)
		h = rollup_mix64(h ^ ((uint64_t)g->code[d] + ((uint64_t)d << 32)));
	return h;
}

static int group_equal(const rollup_group *a, const rollup_group *b)
{
	return a->status == b->status && !memcmp(a->code, b->code, sizeof(a->code));
}

static int group_slots_grow(rollup *r)
{
	uint32_t slots = r->group_mask ? (r->group_mask + 1) * 2 : 64;
	uint32_t *table = grow_slots_alloc(slots, sizeof(*table));
	if (!table)
		return -ENOMEM;
	for (uint32_t i = 0; i < r->group_count; i++) {
		uint32_t k = (uint32_t)group_hash(&r->groups[i]) & (slots - 1);
		while (table[k])
			k = (k + 1) & (slots - 1);
		table[k] = i + 1;
	}
	r->bytes += (size_t)(slots - (r->group_mask ? r->group_mask + 1 : 0)) * sizeof(*table);
	free(r->group_slots);
	r->group_slots = table;
	r->group_mask = slots - 1;
	return 0;
}

static int group_get(rollup *r, const rollup_group *g, uint32_t *out)
{
	if ((r->group_count + 1) * 4 > (r->group_mask + 1) * 3 || !r->group_mask) {
		int rc = group_slots_grow(r);
		if (rc)
			return rc;
	}
	uint32_t k = (uint32_t)group_hash(g) & r->group_mask;
	while (r->group_slots[k]) {
		if (group_equal(&r->groups[r->group_slots[k] - 1], g)) {
			*out = r->group_slots[k] - 1;
			return 0;
		}
		k = (k + 1) & r->group_mask;
	}
	if (r->group_count == r->group_capacity) {
		uint32_t capacity = r->group_capacity ? r->group_capacity * 2 : 16;
		rollup_group *groups = realloc(r->groups, sizeof(*groups) * capacity);
		if (!groups)
			return -ENOMEM;
		r->groups = groups;
		uint32_t (*last)[RES_COUNT] = realloc(r->group_last, sizeof(*last) * capacity);
		if (!last)
			return -ENOMEM;
		r->group_last = last;
		r->bytes += (sizeof(*groups) + sizeof(*last)) * (capacity - r->group_capacity);
		r->group_capacity = capacity;
	}
	memset(r->group_last[r->group_count], 0, sizeof(r->group_last[0]));
	r->groups[r->group_count] = *g;
	r->group_slots[k] = ++r->group_count;
	*out = r->group_count - 1;
	return 0;
}

/* ---- cells ---------------------------------------------------------------- */

static inline uint64_t cell_key_hash(int64_t bucket, uint32_t group)
{
	return rollup_mix64((uint64_t)bucket * UINT64_C(0x9e3779b97f4a7c15) ^ group);
}

/* Cell slots: (hash >> 32) << 32 | (cell + 1), 0 = empty: a probe compares
 * the stored hash half before it touches a cell. */
static inline uint64_t cell_slot(uint64_t hash, uint32_t cell)
{
	return (hash & UINT64_C(0xffffffff00000000)) | (uint64_t)(cell + 1);
}

/* Doubles the slots (64 at first), or makes at least min_slots (a power
 * of two) when that is more. */
static int cell_slots_grow_to(rollup *r, rollup_res_cells *rc, uint32_t min_slots)
{
	uint32_t slots = rc->slot_mask ? (rc->slot_mask + 1) * 2 : 64;
	if (slots < min_slots)
		slots = min_slots;
	uint64_t *table = grow_slots_alloc(slots, sizeof(*table));
	if (!table)
		return -ENOMEM;
	for (uint32_t i = 0; i < rc->count; i++) {
		const rollup_cell *c = &rc->cells[i];
		uint64_t h = cell_key_hash(c->bucket, c->group);
		uint32_t k = (uint32_t)h & (slots - 1);
		while (table[k])
			k = (k + 1) & (slots - 1);
		table[k] = cell_slot(h, i);
	}
	r->bytes += (size_t)(slots - (rc->slot_mask ? rc->slot_mask + 1 : 0)) * sizeof(*table);
	free(rc->slots);
	rc->slots = table;
	rc->slot_mask = slots - 1;
	return 0;
}

/* Room for n cells at rc (empty) without regrowth: the cells and the
 * slots (kept under 3/4 full, as cell_get does). */
static int cells_reserve(rollup *r, rollup_res_cells *rc, uint32_t n)
{
	if (rc->count || rc->capacity >= n)
		return 0;
	rollup_cell *cells = realloc(rc->cells, sizeof(*cells) * n);
	if (!cells)
		return -ENOMEM;
	r->bytes += sizeof(*cells) * (n - rc->capacity);
	rc->cells = cells;
	rc->capacity = n;
	uint32_t slots = 64;
	while ((uint64_t)(n + 1) * 4 > (uint64_t)slots * 3)
		slots *= 2;
	return rc->slot_mask + 1 >= slots ? 0 : cell_slots_grow_to(r, rc, slots);
}

static int head_slots_grow(rollup *r, rollup_res_cells *rc)
{
	uint32_t slots = rc->head_mask ? (rc->head_mask + 1) * 2 : 16;
	uint32_t *heads = grow_slots_alloc(slots, sizeof(*heads));
	int64_t *keys = malloc(sizeof(*keys) * slots);
	if (!heads || !keys) {
		free(heads);
		free(keys);
		return -ENOMEM;
	}
	for (uint32_t i = 0; rc->head_mask && i <= rc->head_mask; i++) {
		if (!rc->heads[i])
			continue;
		uint32_t k = (uint32_t)rollup_mix64((uint64_t)rc->head_keys[i]) & (slots - 1);
		while (heads[k])
			k = (k + 1) & (slots - 1);
		heads[k] = rc->heads[i];
		keys[k] = rc->head_keys[i];
	}
	r->bytes += (size_t)(slots - (rc->head_mask ? rc->head_mask + 1 : 0)) *
		    (sizeof(*heads) + sizeof(*keys));
	free(rc->heads);
	free(rc->head_keys);
	rc->heads = heads;
	rc->head_keys = keys;
	rc->head_mask = slots - 1;
	return 0;
}

/* The cell of (bucket, group), created empty if absent. */
static int cell_get(rollup *r, int res, int64_t bucket, uint32_t group, rollup_cell **out)
{
	rollup_res_cells *rc = &r->res[res];
	int err;
	if (!rc->slot_mask || (rc->count + 1) * 4 > (rc->slot_mask + 1) * 3)
		if ((err = cell_slots_grow_to(r, rc, 0)))
			return err;
	uint64_t h = cell_key_hash(bucket, group);
	uint64_t high = h & UINT64_C(0xffffffff00000000);
	uint32_t k = (uint32_t)h & rc->slot_mask;
	while (rc->slots[k]) {
		if ((rc->slots[k] & UINT64_C(0xffffffff00000000)) == high) {
			rollup_cell *c = &rc->cells[(uint32_t)rc->slots[k] - 1];
			if (c->bucket == bucket && c->group == group) {
				*out = c;
				return 0;
			}
		}
		k = (k + 1) & rc->slot_mask;
	}
	if (!r->no_bucket_index &&
	    (!rc->head_mask || (rc->head_count + 1) * 4 > (rc->head_mask + 1) * 3) &&
	    (err = head_slots_grow(r, rc)))
		return err;
	uint32_t had = rc->capacity;
	if (grow_for_one((void **)&rc->cells, &rc->capacity, rc->count, 16, sizeof(*rc->cells)))
		return -ENOMEM;
	r->bytes += sizeof(*rc->cells) * (rc->capacity - had);
	rollup_cell *c = &rc->cells[rc->count];
	memset(c, 0, sizeof(*c));
	c->bucket = bucket;
	c->group = group;
	if (!r->no_bucket_index) {
		uint32_t hh = (uint32_t)rollup_mix64((uint64_t)bucket) & rc->head_mask;
		while (rc->heads[hh] && rc->head_keys[hh] != bucket)
			hh = (hh + 1) & rc->head_mask;
		c->next = rc->heads[hh]; /* push front: 0 when the bucket is new */
		if (!rc->heads[hh]) {
			rc->head_keys[hh] = bucket;
			rc->head_count++;
		}
		rc->heads[hh] = rc->count + 1;
	}
	rc->slots[k] = cell_slot(h, rc->count);
	rc->count++;
	*out = c;
	return 0;
}

const rollup_cell *rollup_bucket_first(const rollup *r, int res, int64_t bucket)
{
	const rollup_res_cells *rc = &r->res[res];
	if (!rc->head_mask)
		return NULL;
	uint32_t h = (uint32_t)rollup_mix64((uint64_t)bucket) & rc->head_mask;
	while (rc->heads[h]) {
		if (rc->head_keys[h] == bucket)
			return &rc->cells[rc->heads[h] - 1];
		h = (h + 1) & rc->head_mask;
	}
	return NULL;
}

/* Branch-free lower bounds (the comparison's 0 or 1 scales the step, so no
 * branch waits on a probe whose direction mispredicts half the time):
 * the first position in a[0, n) whose key is not below key; n >= 1. */
static inline uint32_t dd_lower_bound(const uint64_t *a, uint32_t n, uint16_t key)
{
	const uint64_t *base = a;
	while (n > 1) {
		uint32_t half = n / 2;
		base += (uint32_t)(DD_ENTRY_INDEX(base[half - 1]) < key) * half;
		n -= half;
	}
	return (uint32_t)(base - a) + (DD_ENTRY_INDEX(*base) < key);
}

static inline uint32_t u32_lower_bound(const uint32_t *a, uint32_t n, uint32_t key)
{
	const uint32_t *base = a;
	while (n > 1) {
		uint32_t half = n / 2;
		base += (uint32_t)(base[half - 1] < key) * half;
		n -= half;
	}
	return (uint32_t)(base - a) + (*base < key);
}

/* Adds `count` at histogram index. */
static int cell_dd_add(rollup *r, rollup_cell *c, uint16_t index, uint64_t count)
{
	if (c->dd_count == 0) {
		c->dd.one = DD_ENTRY(index, count);
		c->dd_count = 1;
		return 0;
	}
	uint64_t *a = c->dd_count == 1 ? &c->dd.one : c->dd.many;
	uint32_t lo = dd_lower_bound(a, c->dd_count, index);
	if (lo < c->dd_count && DD_ENTRY_INDEX(a[lo]) == index) {
		a[lo] += count << 16;
		return 0;
	}
	if (c->dd_count == 1 || is_pow2(c->dd_count)) {
		uint32_t capacity = c->dd_count * 2;
		uint64_t *many = c->dd_count == 1 ? malloc(sizeof(*many) * capacity)
						  : realloc(c->dd.many, sizeof(*many) * capacity);
		if (!many)
			return -ENOMEM;
		if (c->dd_count == 1)
			many[0] = c->dd.one;
		r->bytes += sizeof(*many) * (capacity - (c->dd_count == 1 ? 0 : c->dd_count));
		c->dd.many = many;
		a = many;
	}
	memmove(a + lo + 1, a + lo, sizeof(*a) * (c->dd_count - lo));
	a[lo] = DD_ENTRY(index, count);
	c->dd_count++;
	return 0;
}

static void cell_users_free(rollup_cell *c)
{
	if (c->user_count > 1)
		free(c->users.many);
	c->user_count = 0;
}

/* Turns an exact cell dense: registers from the hashes of its codes. */
static int cell_make_dense(rollup *r, rollup_cell *c)
{
	uint8_t *reg = calloc(HLL_REGISTERS, 1);
	if (!reg)
		return -ENOMEM;
	const uint32_t *codes = cell_users(c);
	for (uint32_t i = 0; i < c->user_count; i++) {
		uint64_t h = codes[i] < r->user_hash_count ? r->user_hash[codes[i]] : 0;
		uint32_t k = hll_register(h);
		uint8_t rank = hll_rank(h);
		if (reg[k] < rank)
			reg[k] = rank;
	}
	cell_users_free(c);
	c->registers = reg;
	r->bytes += HLL_REGISTERS;
	return 0;
}

static int cell_user_add(rollup *r, rollup_cell *c, uint32_t code, uint64_t hash)
{
	if (c->registers) {
		uint32_t k = hll_register(hash);
		uint8_t rank = hll_rank(hash);
		if (c->registers[k] < rank)
			c->registers[k] = rank;
		return 0;
	}
	if (c->user_count == 0) {
		c->users.one = code;
		c->user_count = 1;
		return 0;
	}
	uint32_t *a = c->user_count == 1 ? &c->users.one : c->users.many;
	uint32_t lo = u32_lower_bound(a, c->user_count, code);
	if (lo < c->user_count && a[lo] == code)
		return 0;
	if (c->user_count >= USET_EXACT_MAX) {
		int rc = cell_make_dense(r, c);
		if (rc)
			return rc;
		return cell_user_add(r, c, code, hash);
	}
	if (c->user_count == 1 || is_pow2(c->user_count)) {
		uint32_t capacity = c->user_count * 2;
		uint32_t *many = c->user_count == 1 ? malloc(sizeof(*many) * capacity)
						    : realloc(c->users.many, sizeof(*many) * capacity);
		if (!many)
			return -ENOMEM;
		if (c->user_count == 1)
			many[0] = c->users.one;
		r->bytes += sizeof(*many) * (capacity - (c->user_count == 1 ? 0 : c->user_count));
		c->users.many = many;
		a = many;
	}
	memmove(a + lo + 1, a + lo, sizeof(*a) * (c->user_count - lo));
	a[lo] = code;
	c->user_count++;
	return 0;
}

static int remember_user_hash(rollup *r, uint32_t code, uint64_t hash)
{
	if (code >= r->user_hash_count) {
		uint32_t count = r->user_hash_count ? r->user_hash_count : 64;
		while (count <= code)
			count *= 2;
		uint64_t *h = realloc(r->user_hash, sizeof(*h) * count);
		if (!h)
			return -ENOMEM;
		memset(h + r->user_hash_count, 0, sizeof(*h) * (count - r->user_hash_count));
		r->bytes += sizeof(*h) * (count - r->user_hash_count);
		r->user_hash = h;
		r->user_hash_count = count;
	}
	r->user_hash[code] = hash;
	return 0;
}

/* Room for c's wraps entry in r->wraps. 0 or -ENOMEM. */
static int cell_wraps_reserve(rollup *r, const rollup_cell *c)
{
	if (c->wraps)
		return 0;
	return grow_for_one((void **)&r->wraps, &r->wrap_capacity, r->wrap_count, 4,
			    sizeof(*r->wraps)) ? -ENOMEM : 0;
}

/* Adds w to the wraps of c, giving c its entry (reserved) first. */
static void cell_wraps_add(rollup *r, rollup_cell *c, const rollup_wraps *w)
{
	if (!c->wraps) {
		r->wraps[r->wrap_count] = (rollup_wraps){0};
		r->bytes += sizeof(*r->wraps);
		c->wraps = ++r->wrap_count;
	}
	rollup_wraps *to = &r->wraps[c->wraps - 1];
	to->tokens_in += w->tokens_in;
	to->tokens_out += w->tokens_out;
	to->cost_micros += w->cost_micros;
	to->duration_ms_sum += w->duration_ms_sum;
}

/* Adds event e to the cell of (bucket at res, group). */
static int cell_add_event(rollup *r, int res, int64_t bucket, uint32_t group, const rollup_event *e,
			  uint16_t index)
{
	/* Events of a group mostly come in time order: the group's last cell
	 * is usually the one (no hash probe, a hot cache line). */
	int rc;
	uint32_t last = r->group_last[group][res];
	rollup_cell *c = last ? &r->res[res].cells[last - 1] : NULL;
	if (!c || c->bucket != bucket) {
		if ((rc = cell_get(r, res, bucket, group, &c)))
			return rc;
		r->group_last[group][res] = (uint32_t)(c - r->res[res].cells) + 1;
	}
	/* The sums into copies, stored once nothing can fail. */
	rollup_wraps w = {0};
	uint64_t tokens_in = c->tokens_in, tokens_out = c->tokens_out, duration_sum = c->duration_sum;
	int64_t cost = c->cost;
	sum_add_u64(&tokens_in, &w.tokens_in, e->tokens_in, 0);
	sum_add_u64(&tokens_out, &w.tokens_out, e->tokens_out, 0);
	sum_add_u64(&duration_sum, &w.duration_ms_sum, e->duration_ms, 0);
	sum_add_i64(&cost, &w.cost_micros, e->cost_micros, 0);
	int wrapped = rollup_wraps_any(&w);
	if (wrapped && (rc = cell_wraps_reserve(r, c)))
		return rc;
	if (c->count == 0 || e->duration_ms < c->duration_min)
		c->duration_min = e->duration_ms;
	if (e->duration_ms > c->duration_max)
		c->duration_max = e->duration_ms;
	if ((rc = cell_dd_add(r, c, index, 1)))
		return rc;
	if (e->user != ROLLUP_NO_USER && (rc = cell_user_add(r, c, e->user, e->user_hash)))
		return rc;
	if (wrapped)
		cell_wraps_add(r, c, &w);
	c->count++;
	c->tokens_in = tokens_in;
	c->tokens_out = tokens_out;
	c->duration_sum = duration_sum;
	c->cost = cost;
	if (group == ROLLUP_GROUP_ALL && e->status != TALLY_STATUS_OK)
		c->status_other[e->status - 1]++;
	return 0;
}

/* The group of e (group 0, the total, made first), its user's hash
 * remembered. */
static int event_group(rollup *r, const rollup_event *e, uint32_t *group)
{
	int rc;
	if (!r->group_count) { /* group 0 is the total of all groups */
		rollup_group all = {.code = {0}, .status = ROLLUP_STATUS_ALL};
		if ((rc = group_get(r, &all, group)))
			return rc;
	}
	rollup_group g;
	memcpy(g.code, e->code, sizeof(g.code));
	g.status = e->status;
	if ((rc = group_get(r, &g, group)))
		return rc;
	if (e->user != ROLLUP_NO_USER && (rc = remember_user_hash(r, e->user, e->user_hash)))
		return rc;
	return 0;
}

/* Adds e (of group) to its cell at res, and to the total's where that
 * resolution has totals. */
static int event_add_res(rollup *r, const rollup_event *e, uint32_t group, uint16_t index, int res)
{
	int64_t bucket = floor_div(e->time_us, ROLLUP_RES_US[res]);
	int rc = cell_add_event(r, res, bucket, group, e, index);
	if (!rc && res >= ROLLUP_ALL_RES_MIN)
		rc = cell_add_event(r, res, bucket, ROLLUP_GROUP_ALL, e, index);
	return rc;
}

int rollup_add(rollup *r, const rollup_event *e)
{
	uint32_t group;
	int rc = event_group(r, e, &group);
	uint16_t index = dd_index(e->duration_ms);
	for (int res = 0; res < RES_COUNT && !rc; res++)
		rc = event_add_res(r, e, group, index, res);
	return rc;
}

const rollup_cell *rollup_find(const rollup *r, int res, int64_t bucket, uint32_t group)
{
	const rollup_res_cells *rc = &r->res[res];
	if (!rc->slot_mask)
		return NULL;
	uint64_t h = cell_key_hash(bucket, group);
	uint64_t high = h & UINT64_C(0xffffffff00000000);
	for (uint32_t k = (uint32_t)h & rc->slot_mask; rc->slots[k]; k = (k + 1) & rc->slot_mask) {
		if ((rc->slots[k] & UINT64_C(0xffffffff00000000)) != high)
			continue;
		const rollup_cell *c = &rc->cells[(uint32_t)rc->slots[k] - 1];
		if (c->bucket == bucket && c->group == group)
			return c;
	}
	return NULL;
}

/* Row i of rw as a rollup event; the user's hash is the one r remembers
 * for its code, or computed. */
static void row_event(const rollup *r, const rows *rw, const strdict *users, uint32_t i,
		      rollup_event *e)
{
	static const int group_dims[ROLLUP_GROUP_DIMS] = {DIM_TYPE, DIM_PROJECT, DIM_AGENT, DIM_MODEL};
	e->time_us = rw->time_us[i];
	for (int d = 0; d < ROLLUP_GROUP_DIMS; d++)
		e->code[d] = rw->dim[group_dims[d]][i];
	e->status = rw->status[i];
	uint32_t u = rw->dim[DIM_USER][i];
	tally_str s = strdict_get(users, u);
	e->user = s.len ? u : ROLLUP_NO_USER;
	e->user_hash = 0;
	if (s.len) {
		if (u < r->user_hash_count && r->user_hash[u])
			e->user_hash = r->user_hash[u];
		else
			e->user_hash = sketch_user_hash(s.ptr, s.len);
	}
	e->duration_ms = rw->duration_ms[i];
	e->tokens_in = rw->tokens_in[i];
	e->tokens_out = rw->tokens_out[i];
	e->cost_micros = rw->cost_micros[i];
}

static int heavy_days(const rollup *r, int64_t **days, uint32_t *count);
static int is_heavy_day(const int64_t *days, uint32_t count, int64_t day);

int rollup_from_rows(rollup *r, const rows *rw, const strdict dict[DIM_COUNT],
		     int64_t minute_bucket_from)
{
	const strdict *users = &dict[DIM_USER];
	r->no_bucket_index = 1;
	uint32_t reserve = rw->count < ROLLUP_BUILD_RESERVE_MAX ? rw->count
							       : ROLLUP_BUILD_RESERVE_MAX;
	if (reserve && cells_reserve(r, &r->res[RES_HOUR], reserve))
		return -ENOMEM;
	uint32_t *groups = malloc(sizeof(*groups) * ((size_t)rw->count + 1)); /* per row */
	if (!groups)
		return -ENOMEM;
	/* Hour cells first, and minute cells from minute_bucket_from on: the
	 * hour cells say which days are heavy. */
	int rc = 0;
	for (uint32_t i = 0; i < rw->count && !rc; i++) {
		rollup_event e;
		row_event(r, rw, users, i, &e);
		uint32_t group;
		if ((rc = event_group(r, &e, &group)))
			break;
		groups[i] = group;
		uint16_t index = dd_index(e.duration_ms);
		if (floor_div(e.time_us, ROLLUP_MINUTE_US) >= minute_bucket_from)
			rc = event_add_res(r, &e, group, index, RES_MINUTE);
		if (!rc)
			rc = event_add_res(r, &e, group, index, RES_HOUR);
	}
	int64_t *days = NULL;
	uint32_t day_count = 0;
	if (!rc)
		rc = heavy_days(r, &days, &day_count);
	/* Then day cells (with their totals), only on heavy days, each row
	 * with the group the first pass found. */
	for (uint32_t i = 0; i < rw->count && !rc && day_count; i++) {
		int64_t day = floor_div(rw->time_us[i], ROLLUP_DAY_US);
		if (!is_heavy_day(days, day_count, day))
			continue;
		rollup_event e;
		row_event(r, rw, users, i, &e);
		rc = event_add_res(r, &e, groups[i], dd_index(e.duration_ms), RES_DAY);
	}
	free(days);
	free(groups);
	return rc;
}

static void cell_free(rollup_cell *c)
{
	if (c->dd_count > 1)
		free(c->dd.many);
	cell_users_free(c);
	free(c->registers);
}

void rollup_free(rollup *r)
{
	for (int res = 0; res < RES_COUNT; res++) {
		rollup_res_cells *rc = &r->res[res];
		for (uint32_t i = 0; i < rc->count; i++)
			cell_free(&rc->cells[i]);
		free(rc->cells);
		free(rc->slots);
		free(rc->heads);
		free(rc->head_keys);
	}
	free(r->groups);
	free(r->group_last);
	free(r->group_slots);
	free(r->user_hash);
	free(r->wraps);
	memset(r, 0, sizeof(*r));
}

/* ---- encoding --------------------------------------------------------------- */

enum {
	C_BUCKET,   /* u64: first bucket zigzag, then steps */
	C_GROUP,    /* codes */
	C_COUNT,    /* u64 */
	C_TIN,      /* u64 */
	C_TOUT,     /* u64 */
	C_COST,     /* i64 */
	C_DSUM,     /* u64 */
	C_DMIN,     /* u64, cells with count > 1 */
	C_DSPAN,    /* u64, cells with count > 1: max - min */
	C_HIST,     /* varints, cells with count > 1: entries, then (index step, count) */
	C_USERS,    /* varints: per cell user_count * 2 + dense, then code steps */
	C_DENSE,    /* HLL_REGISTERS bytes per dense cell */
	C_ALLSTATUS, /* varints, per total cell: error, timeout, cancelled counts */
	C_WRAPS,    /* version 2 only: varints, per cell a mask (WRAP_ bits), then its wraps */
	C_COLUMNS
};
#define C_COLUMNS_V1 C_WRAPS

/* The wraps column: bit k of a cell's mask says wraps k (in this order)
 * follows, a varint (zigzag for cost, which may wrap below its range). */
enum { WRAP_TOKENS_IN = 1, WRAP_TOKENS_OUT = 2, WRAP_COST = 4, WRAP_DURATION = 8, WRAP_ALL = 15 };

/* The wraps of w as (mask bit, encoded varint) pairs; the count filled. */
static int wraps_fields(const rollup_wraps *w, uint32_t bit[4], uint64_t value[4])
{
	const int64_t v[4] = {w->tokens_in, w->tokens_out, w->cost_micros, w->duration_ms_sum};
	int n = 0;
	for (int k = 0; k < 4; k++)
		if (v[k]) {
			bit[n] = 1u << k;
			value[n++] = k == 2 ? zigzag_encode(v[k]) : (uint64_t)v[k];
		}
	return n;
}

/* ---- sorting cells --------------------------------------------------------- */

/*
 * Sorts cells[0, n) by (bucket, rank of group), rank = renumber[group], or
 * the group itself when renumber is NULL; (bucket, rank) pairs are unique,
 * so the order is fully determined. 0 or -ENOMEM.
 */
static int cells_sort(const rollup_cell **cells, uint32_t n, const uint32_t *renumber)
{
	if (n < 2)
		return 0;
	int64_t low = cells[0]->bucket, high = low;
	for (uint32_t i = 1; i < n; i++) {
		low = cells[i]->bucket < low ? cells[i]->bucket : low;
		high = cells[i]->bucket > high ? cells[i]->bucket : high;
	}
	sort_pair *a = malloc(sizeof(*a) * 2 * (size_t)n);
	if (!a)
		return -ENOMEM;
	if ((uint64_t)(high - low) <= UINT32_MAX) {
		/* The usual case: one key, bucket offset over rank. */
		for (uint32_t i = 0; i < n; i++) {
			uint32_t rank = renumber ? renumber[cells[i]->group] : cells[i]->group;
			a[i] = (sort_pair){(uint64_t)(cells[i]->bucket - low) << 32 | rank,
					   (uintptr_t)cells[i]};
		}
		sort_pairs(a, a + n, n);
	} else {
		/* Buckets too far apart for half a key (decoders accept
		 * |bucket| < 2^40): by rank, then stably by bucket. */
		for (uint32_t i = 0; i < n; i++)
			a[i] = (sort_pair){renumber ? renumber[cells[i]->group] : cells[i]->group,
					   (uintptr_t)cells[i]};
		sort_pairs(a, a + n, n);
		for (uint32_t i = 0; i < n; i++) {
			const rollup_cell *c = (const rollup_cell *)(uintptr_t)a[i].value;
			a[i].key = (uint64_t)(c->bucket - low);
		}
		sort_pairs(a, a + n, n);
	}
	for (uint32_t i = 0; i < n; i++)
		cells[i] = (const rollup_cell *)(uintptr_t)a[i].value;
	free(a);
	return 0;
}

/*
 * The days whose day cells are stored: those with more than
 * ROLLUP_DAY_COMPOSE_MAX hour cells (sorted into *days, *count of them;
 * *days is set, to be freed, even on -ENOMEM). The other days are
 * composed from their hour cells at query time. Days less than
 * HEAVY_DAYS_COUNTED_MAX apart are counted in an array, others sorted.
 */
#define HEAVY_DAYS_COUNTED_MAX 4096
static int heavy_days(const rollup *r, int64_t **days, uint32_t *count)
{
	const rollup_res_cells *hours = &r->res[RES_HOUR];
	int64_t *d = malloc(sizeof(*d) * ((size_t)hours->count + 1));
	if (!d)
		return -ENOMEM;
	uint32_t m = 0;
	int64_t low = INT64_MAX, high = INT64_MIN;
	for (uint32_t i = 0; i < hours->count; i++)
		if (hours->cells[i].group != ROLLUP_GROUP_ALL) {
			d[m] = floor_div(hours->cells[i].bucket, 24);
			low = d[m] < low ? d[m] : low;
			high = d[m] > high ? d[m] : high;
			m++;
		}
	*days = d;
	*count = 0;
	if (m <= ROLLUP_DAY_COMPOSE_MAX)
		return 0; /* no day can have more hour cells than there are */
	uint32_t n = 0;
	if ((uint64_t)high - (uint64_t)low < HEAVY_DAYS_COUNTED_MAX) {
		/* Days a few years apart at most: counted, in day order. */
		uint32_t *per_day = calloc((size_t)(high - low) + 1, sizeof(*per_day));
		if (!per_day)
			return -ENOMEM; /* the caller frees *days */
		for (uint32_t i = 0; i < m; i++)
			per_day[d[i] - low]++;
		for (int64_t day = low; day <= high; day++)
			if (per_day[day - low] > ROLLUP_DAY_COMPOSE_MAX)
				d[n++] = day;
		free(per_day);
		*count = n;
		return 0;
	}
	sort_pair *k = malloc(sizeof(*k) * 2 * ((size_t)m + 1));
	if (!k)
		return -ENOMEM;
	for (uint32_t i = 0; i < m; i++)
		k[i] = (sort_pair){(uint64_t)(d[i] - low), 0};
	sort_pairs(k, k + m, m);
	for (uint32_t i = 0; i < m; i++)
		d[i] = low + (int64_t)k[i].key;
	free(k);
	for (uint32_t i = 0; i < m;) {
		uint32_t j = i;
		while (j < m && d[j] == d[i])
			j++;
		if (j - i > ROLLUP_DAY_COMPOSE_MAX)
			d[n++] = d[i];
		i = j;
	}
	*count = n;
	return 0;
}

static int is_heavy_day(const int64_t *days, uint32_t count, int64_t day)
{
	uint32_t lo = 0, hi = count;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (days[mid] < day)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < count && days[lo] == day;
}

/*
 * The cells of res a block stores, sorted by (bucket, group id): minute
 * cells from bucket_from on, day cells of heavy days only, and total cells
 * only in buckets with two groups or more (elsewhere the one group cell is
 * the total). *out is malloc-ed (NULL when none).
 */
static int select_cells(const rollup *r, int res, int64_t bucket_from, const int64_t *days,
			uint32_t day_count, const rollup_cell ***out, uint32_t *count)
{
	const rollup_res_cells *rc = &r->res[res];
	*out = NULL;
	*count = 0;
	const rollup_cell **order = malloc(sizeof(*order) * ((size_t)rc->count + 1));
	if (!order)
		return -ENOMEM;
	uint32_t n = 0;
	for (uint32_t i = 0; i < rc->count; i++)
		if (rc->cells[i].bucket >= bucket_from &&
		    (res != RES_DAY || is_heavy_day(days, day_count, rc->cells[i].bucket)))
			order[n++] = &rc->cells[i];
	if (cells_sort(order, n, NULL)) {
		free(order);
		return -ENOMEM;
	}
	uint32_t kept = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (order[i]->group == ROLLUP_GROUP_ALL &&
		    !(i + 2 < n && order[i + 2]->bucket == order[i]->bucket))
			continue;
		order[kept++] = order[i];
	}
	*out = order;
	*count = kept;
	return 0;
}

_Static_assert(C_COLUMNS == ROLLUP_CHUNK_COLUMNS && C_COLUMNS_V1 == ROLLUP_CHUNK_COLUMNS_V1,
	       "rollup_scratch holds a chunk's columns");

void rollup_scratch_free(rollup_scratch *s)
{
	for (int k = 0; k < ROLLUP_CHUNK_COLUMNS; k++)
		bytebuf_free(&s->column[k]);
	free(s->u);
	free(s->cost);
	free(s->codes);
	memset(s, 0, sizeof(*s));
}

/* Room for n entries in the scratch arrays, and its columns emptied. */
static int scratch_prepare(rollup_scratch *s, uint32_t n)
{
	for (int k = 0; k < ROLLUP_CHUNK_COLUMNS; k++)
		bytebuf_reset(&s->column[k]);
	if ((size_t)n + 1 <= s->capacity)
		return 0;
	size_t capacity = (size_t)n + 1 > 2 * s->capacity ? (size_t)n + 1 : 2 * s->capacity;
	uint64_t *u = realloc(s->u, sizeof(*u) * capacity);
	if (u)
		s->u = u;
	int64_t *cost = realloc(s->cost, sizeof(*cost) * capacity);
	if (cost)
		s->cost = cost;
	uint32_t *codes = realloc(s->codes, sizeof(*codes) * capacity);
	if (codes)
		s->codes = codes;
	if (!u || !cost || !codes)
		return -ENOMEM;
	s->capacity = capacity;
	return 0;
}

/* Encodes cells [0, n) (sorted by bucket, then renumbered group) as one
 * chunk block, appended to out. */
static int encode_chunk(const rollup_cell *const *order, uint32_t n, const uint32_t *renumber,
			const rollup_wraps *wraps, rollup_scratch *scratch, bytebuf *out)
{
	int err = scratch_prepare(scratch, n);
	if (err)
		return err;
	uint64_t *u = scratch->u;
	int64_t *cost = scratch->cost;
	uint32_t *codes = scratch->codes;
	bytebuf *col = scratch->column;
	/* Scalar columns through the segment column codecs. */
	for (uint32_t i = 0; i < n; i++)
		u[i] = i ? (uint64_t)(order[i]->bucket - order[i - 1]->bucket) : zigzag_encode(order[0]->bucket);
	err = codec_u64_encode(&col[C_BUCKET], u, n);
	for (uint32_t i = 0; i < n; i++)
		codes[i] = renumber[order[i]->group];
	if (!err)
		err = codec_codes_encode(&col[C_GROUP], codes, n);
#define U64_COLUMN(c, expr)                                 \
	do {                                                \
		for (uint32_t i = 0; i < n; i++)            \
			u[i] = (expr);                      \
		if (!err)                                   \
			err = codec_u64_encode(&col[c], u, n); \
	} while (0)
	U64_COLUMN(C_COUNT, order[i]->count);
	U64_COLUMN(C_TIN, order[i]->tokens_in);
	U64_COLUMN(C_TOUT, order[i]->tokens_out);
	U64_COLUMN(C_DSUM, order[i]->duration_sum);
#undef U64_COLUMN
	for (uint32_t i = 0; i < n; i++)
		cost[i] = order[i]->cost;
	if (!err)
		err = codec_i64_encode(&col[C_COST], cost, n);
	uint32_t m = 0;
	for (uint32_t i = 0; i < n; i++)
		if (order[i]->count > 1)
			u[m++] = order[i]->duration_min;
	if (!err)
		err = codec_u64_encode(&col[C_DMIN], u, m);
	m = 0;
	for (uint32_t i = 0; i < n; i++)
		if (order[i]->count > 1)
			u[m++] = order[i]->duration_max - order[i]->duration_min;
	if (!err)
		err = codec_u64_encode(&col[C_DSPAN], u, m);
	for (uint32_t i = 0; i < n && !err; i++)
		if (order[i]->group == ROLLUP_GROUP_ALL)
			for (int k = 0; k < 3 && !err; k++)
				err = varint_append(&col[C_ALLSTATUS], order[i]->status_other[k]);
	/* Histograms and users as varint streams. */
	for (uint32_t i = 0; i < n && !err; i++) {
		const rollup_cell *c = order[i];
		if (c->count > 1) {
			const uint64_t *dd = cell_dd(c);
			err = varint_append(&col[C_HIST], c->dd_count);
			uint16_t prev_index = 0;
			for (uint32_t k = 0; k < c->dd_count && !err; k++) {
				uint16_t index = DD_ENTRY_INDEX(dd[k]);
				if (!(err = varint_append(&col[C_HIST], (uint64_t)(index - prev_index))))
					err = varint_append(&col[C_HIST], DD_ENTRY_COUNT(dd[k]));
				prev_index = index;
			}
		}
		if (!err)
			err = varint_append(&col[C_USERS], (uint64_t)c->user_count * 2 + (c->registers != NULL));
		const uint32_t *users = cell_users(c);
		uint32_t prev_user = 0;
		for (uint32_t k = 0; k < c->user_count && !err; k++) {
			err = varint_append(&col[C_USERS], users[k] - prev_user);
			prev_user = users[k];
		}
		if (!err && c->registers)
			err = bytebuf_append(&col[C_DENSE], c->registers, HLL_REGISTERS);
	}
	/* Wraps, in a version 2 block only when a cell has one. */
	int any_wraps = 0;
	for (uint32_t i = 0; i < n; i++)
		any_wraps |= order[i]->wraps && rollup_wraps_any(&wraps[order[i]->wraps - 1]);
	for (uint32_t i = 0; i < n && any_wraps && !err; i++) {
		rollup_wraps none = {0};
		const rollup_wraps *w = order[i]->wraps ? &wraps[order[i]->wraps - 1] : &none;
		uint32_t bit[4];
		uint64_t value[4];
		int fields = wraps_fields(w, bit, value);
		uint64_t mask = 0;
		for (int k = 0; k < fields; k++)
			mask |= bit[k];
		err = varint_append(&col[C_WRAPS], mask);
		for (int k = 0; k < fields && !err; k++)
			err = varint_append(&col[C_WRAPS], value[k]);
	}
	uint8_t version = any_wraps ? ROLLUP_BLOCK_VERSION_WRAPS : ROLLUP_BLOCK_VERSION;
	int columns = any_wraps ? C_COLUMNS : C_COLUMNS_V1;
	if (!err && !(err = bytebuf_append(out, &version, 1)))
		err = varint_append(out, n);
	for (int k = 0; k < columns && !err; k++)
		if (!(err = varint_append(out, col[k].size)))
			err = bytebuf_append(out, col[k].data, col[k].size);
	return err;
}

static int chunk_add(rollup_encoded *e, int list, int64_t first_bucket, uint32_t cells, size_t offset)
{
	uint32_t total = e->chunk_count[0] + e->chunk_count[1] + e->chunk_count[2] + e->chunk_count[3];
	if (total == e->chunk_capacity) {
		uint32_t capacity = e->chunk_capacity ? e->chunk_capacity * 2 : 8;
		rollup_chunk_out *chunks = realloc(e->chunks, sizeof(*chunks) * capacity);
		if (!chunks)
			return -ENOMEM;
		e->chunks = chunks;
		e->chunk_capacity = capacity;
	}
	e->chunks[total] = (rollup_chunk_out){list, first_bucket, cells, offset, e->data.size - offset};
	e->chunk_count[list]++;
	e->cells[list] += cells;
	return 0;
}

/* Where a chunk may end: between UTC days (minute, hour), between buckets (day). */
static int64_t cut_unit(int res, int64_t bucket)
{
	return res == RES_MINUTE ? floor_div(bucket, 1440) : res == RES_HOUR ? floor_div(bucket, 24) : bucket;
}

int rollup_encode(const rollup *r, int64_t minute_bucket_from, rollup_scratch *scratch,
		  rollup_encoded *e)
{
	memset(e, 0, sizeof(*e));
	rollup_scratch own;
	memset(&own, 0, sizeof(own));
	if (!scratch)
		scratch = &own;
	int64_t *days = NULL;
	uint32_t day_count = 0;
	const rollup_cell **order[RES_COUNT] = {NULL, NULL, NULL};
	uint32_t n[RES_COUNT] = {0, 0, 0};
	uint32_t *renumber = malloc(sizeof(*renumber) * ((size_t)r->group_count + 1));
	int err = renumber ? heavy_days(r, &days, &day_count) : -ENOMEM;
	for (int res = 0; res < RES_COUNT && !err; res++)
		err = select_cells(r, res, res == RES_MINUTE ? minute_bucket_from : INT64_MIN, days,
				   day_count, &order[res], &n[res]);
	if (err || n[RES_MINUTE] + n[RES_HOUR] + n[RES_DAY] == 0)
		goto out;
	/* One group table for the section: the total first (number 0) when a
	 * total cell is kept, then groups in order of first use (days, hours,
	 * minutes). */
	for (uint32_t g = 0; g < r->group_count; g++)
		renumber[g] = UINT32_MAX;
	int any_total = 0;
	for (uint32_t i = 0; i < n[RES_DAY]; i++)
		any_total |= order[RES_DAY][i]->group == ROLLUP_GROUP_ALL;
	uint32_t used = 0;
	uint8_t version = ROLLUP_BLOCK_VERSION;
	err = bytebuf_append(&e->groups, &version, 1);
	bytebuf table = {0};
	for (int pass = -1, res = RES_DAY; res >= 0 && !err; pass < 0 ? (void)pass++ : (void)res--) {
		uint32_t count = pass < 0 ? (any_total ? 1 : 0) : n[res];
		for (uint32_t i = 0; i < count && !err; i++) {
			uint32_t g = pass < 0 ? ROLLUP_GROUP_ALL : order[res][i]->group;
			if (renumber[g] != UINT32_MAX)
				continue;
			renumber[g] = used++;
			for (int d = 0; d < ROLLUP_GROUP_DIMS && !err; d++)
				err = varint_append(&table, r->groups[g].code[d]);
			if (!err)
				err = varint_append(&table, r->groups[g].status);
		}
	}
	if (!err && !(err = varint_append(&e->groups, used)))
		err = bytebuf_append(&e->groups, table.data, table.size);
	bytebuf_free(&table);
	e->group_count = used;
	/* Chunks: runs of whole days (whole buckets for days) of at least
	 * ROLLUP_CHUNK_CELLS cells, so a query decodes only the days it reads;
	 * day totals in a list of their own. */
	const rollup_cell **totals = NULL;
	uint32_t total_count = 0, group_count = 0;
	if (!err && !(totals = malloc(sizeof(*totals) * ((size_t)n[RES_DAY] + 1))))
		err = -ENOMEM;
	for (uint32_t i = 0; i < n[RES_DAY] && !err; i++) {
		if (order[RES_DAY][i]->group == ROLLUP_GROUP_ALL)
			totals[total_count++] = order[RES_DAY][i];
		else
			order[RES_DAY][group_count++] = order[RES_DAY][i];
	}
	for (int list = 0; list < LIST_COUNT && !err; list++) {
		int res = list == LIST_DAY_TOTAL ? RES_DAY : list;
		const rollup_cell **cells = list == LIST_DAY_TOTAL ? totals : order[res];
		uint32_t count = list == LIST_DAY_TOTAL ? total_count
				 : list == LIST_DAY	   ? group_count
							   : n[res];
		if ((err = cells_sort(cells, count, renumber)))
			break;
		for (uint32_t i = 0; i < count && !err;) {
			uint32_t j = i + 1;
			while (j < count && (j - i < ROLLUP_CHUNK_CELLS ||
					     cut_unit(res, cells[j]->bucket) == cut_unit(res, cells[j - 1]->bucket)))
				j++;
			size_t offset = e->data.size;
			if (!(err = encode_chunk(cells + i, j - i, renumber, r->wraps, scratch, &e->data)))
				err = chunk_add(e, list, cells[i]->bucket, j - i, offset);
			i = j;
		}
	}
	free(totals);
out:
	for (int res = 0; res < RES_COUNT; res++)
		free(order[res]);
	free(renumber);
	free(days);
	rollup_scratch_free(&own);
	if (err)
		rollup_encoded_free(e);
	return err;
}

void rollup_encoded_free(rollup_encoded *e)
{
	bytebuf_free(&e->groups);
	bytebuf_free(&e->data);
	free(e->chunks);
	memset(e, 0, sizeof(*e));
}

/* ---- decoding --------------------------------------------------------------- */

typedef struct stream {
	const uint8_t *p;
	const uint8_t *end;
} stream;

static int sv(stream *s, uint64_t *v)
{
	return varint_get(&s->p, s->end, v);
}

#define CHECK(cond)                            \
	do {                                   \
		if (!(cond)) {                 \
			err = TALLY_E_CORRUPT; \
			goto fail;             \
		}                              \
	} while (0)

static size_t stream_size(const stream *s)
{
	return (size_t)(s->end - s->p);
}

int rollup_groups_decode(const uint8_t *raw, size_t size, const uint32_t dict_count[DIM_COUNT],
			 rollup_group **out, uint32_t *count)
{
	static const int group_dims[ROLLUP_GROUP_DIMS] = {DIM_TYPE, DIM_PROJECT, DIM_AGENT, DIM_MODEL};
	stream in = {raw, raw + size};
	uint64_t v, group_count;
	int err = 0;
	rollup_group *groups = NULL;
	*out = NULL;
	*count = 0;
	CHECK(size >= 1 && raw[0] == ROLLUP_BLOCK_VERSION);
	in.p++;
	CHECK(!sv(&in, &group_count) && group_count >= 1 && group_count <= size);
	groups = malloc(sizeof(*groups) * (group_count + 1));
	if (!groups)
		return -ENOMEM;
	for (uint64_t g = 0; g < group_count; g++) {
		uint64_t code[ROLLUP_GROUP_DIMS];
		for (int d = 0; d < ROLLUP_GROUP_DIMS; d++) {
			CHECK(!sv(&in, &code[d]));
			groups[g].code[d] = (uint32_t)code[d];
		}
		CHECK(!sv(&in, &v));
		/* The total group (all codes 0) may only be group 0. */
		int all = v == ROLLUP_STATUS_ALL && g == 0;
		CHECK(v < TALLY_STATUS_COUNT || all);
		for (int d = 0; d < ROLLUP_GROUP_DIMS; d++)
			CHECK(all ? code[d] == 0 : code[d] < dict_count[group_dims[d]]);
		groups[g].status = (uint8_t)v;
	}
	CHECK(in.p == in.end);
	*out = groups;
	*count = (uint32_t)group_count;
	return 0;
fail:
	free(groups);
	return err;
}

/* The wraps column of a version 2 block into b->wraps (count decoded):
 * every cell's mask, and for each bit a wraps that is not 0 and at most
 * what the cell's count allows (a sum of count values wraps fewer than
 * count times); at least one cell wrapped. 0, -ENOMEM or TALLY_E_CORRUPT. */
static int decode_wraps(stream in, rollup_block *b)
{
	size_t n = b->cell_count;
	if (!(b->wraps = calloc(n, sizeof(*b->wraps))))
		return -ENOMEM;
	int err = 0, any = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t mask, v;
		CHECK(!sv(&in, &mask) && mask <= WRAP_ALL);
		int64_t *field[4] = {&b->wraps[i].tokens_in, &b->wraps[i].tokens_out,
				     &b->wraps[i].cost_micros, &b->wraps[i].duration_ms_sum};
		for (int k = 0; k < 4; k++) {
			if (!(mask >> k & 1))
				continue;
			CHECK(!sv(&in, &v));
			int64_t w = k == 2 ? zigzag_decode(v) : (int64_t)v;
			uint64_t size = w < 0 ? 0 - (uint64_t)w : (uint64_t)w;
			CHECK(w != 0 && size < b->count[i] && (k == 2 || v <= INT64_MAX));
			*field[k] = w;
		}
		any |= mask != 0;
	}
	CHECK(in.p == in.end && any);
fail:
	return err;
}

/* The bytes of the scalar columns of n cells. */
static size_t block_bytes(size_t n)
{
	return n * (sizeof(int64_t) * 2 + sizeof(uint64_t) * 4 + sizeof(uint32_t) * 3);
}

/* One allocation for every scalar column of n cells, the column pointers
 * into it, and cell_count. 0 or -ENOMEM. */
static int block_columns(rollup_block *b, size_t n)
{
	b->block = malloc(n ? block_bytes(n) : 1);
	if (!b->block)
		return -ENOMEM;
	b->bucket = b->block;
	b->cost = b->bucket + n;
	b->count = (uint64_t *)(b->cost + n);
	b->tokens_in = b->count + n;
	b->tokens_out = b->tokens_in + n;
	b->duration_sum = b->tokens_out + n;
	b->group = (uint32_t *)(b->duration_sum + n);
	b->duration_min = b->group + n;
	b->duration_max = b->duration_min + n;
	b->cell_count = (uint32_t)n;
	return 0;
}

int rollup_block_decode(const uint8_t *raw, size_t size, const rollup_group *groups,
			uint32_t group_count, uint32_t user_limit, rollup_block *b)
{
	memset(b, 0, sizeof(*b));
	stream in = {raw, raw + size};
	uint64_t v, cell_count;
	uint64_t *u = NULL;
	int err = 0;
	b->groups = groups;
	b->group_count = group_count;
	CHECK(size >= 1 && (raw[0] == ROLLUP_BLOCK_VERSION || raw[0] == ROLLUP_BLOCK_VERSION_WRAPS));
	int columns = raw[0] == ROLLUP_BLOCK_VERSION ? C_COLUMNS_V1 : C_COLUMNS;
	in.p++;
	/* A cell costs at least a bit in every column: cell_count is bounded
	 * by the block size (times 8) before anything is allocated. */
	CHECK(!sv(&in, &cell_count) && cell_count >= 1 && cell_count <= (uint64_t)size * 8);
	stream s[C_COLUMNS];
	for (int k = 0; k < columns; k++) {
		CHECK(!sv(&in, &v) && v <= stream_size(&in));
		s[k] = (stream){in.p, in.p + v};
		in.p += v;
	}
	CHECK(in.p == in.end);
	size_t n = (size_t)cell_count;
	/* (The columns are decoded straight into the block: no per-cell
	 * structure to fill.) */
	u = malloc(sizeof(*u) * (n + 1));
	if (block_columns(b, n) || !u) {
		err = -ENOMEM;
		goto fail;
	}
	CHECK(!codec_u64_decode(s[C_BUCKET].p, stream_size(&s[C_BUCKET]), u, n));
	int64_t bucket = 0;
	for (size_t i = 0; i < n; i++) {
		if (i) {
			CHECK(u[i] <= 2 * (uint64_t)ROLLUP_BUCKET_MAX);
			bucket += (int64_t)u[i];
		} else {
			bucket = zigzag_decode(u[0]);
		}
		CHECK(bucket >= -ROLLUP_BUCKET_MAX && bucket <= ROLLUP_BUCKET_MAX);
		b->bucket[i] = bucket;
	}
	CHECK(!codec_codes_decode(s[C_GROUP].p, stream_size(&s[C_GROUP]), b->group, n));
	for (size_t i = 0; i < n; i++) {
		CHECK(b->group[i] < group_count);
		CHECK(i == 0 || b->bucket[i] > b->bucket[i - 1] || b->group[i] > b->group[i - 1]);
	}
	CHECK(!codec_u64_decode(s[C_COUNT].p, stream_size(&s[C_COUNT]), b->count, n));
	CHECK(!codec_u64_decode(s[C_TIN].p, stream_size(&s[C_TIN]), b->tokens_in, n));
	CHECK(!codec_u64_decode(s[C_TOUT].p, stream_size(&s[C_TOUT]), b->tokens_out, n));
	CHECK(!codec_u64_decode(s[C_DSUM].p, stream_size(&s[C_DSUM]), b->duration_sum, n));
	CHECK(!codec_i64_decode(s[C_COST].p, stream_size(&s[C_COST]), b->cost, n));
	size_t multi = 0;
	for (size_t i = 0; i < n; i++) {
		CHECK(b->count[i] >= 1);
		multi += b->count[i] > 1;
		if (b->count[i] == 1) { /* its min and max are its sum */
			CHECK(b->duration_sum[i] <= UINT32_MAX);
			b->duration_min[i] = b->duration_max[i] = (uint32_t)b->duration_sum[i];
		}
	}
	CHECK(!codec_u64_decode(s[C_DMIN].p, stream_size(&s[C_DMIN]), u, multi));
	for (size_t i = 0, m = 0; i < n; i++)
		if (b->count[i] > 1) {
			CHECK(u[m] <= UINT32_MAX);
			b->duration_min[i] = (uint32_t)u[m++];
		}
	CHECK(!codec_u64_decode(s[C_DSPAN].p, stream_size(&s[C_DSPAN]), u, multi));
	for (size_t i = 0, m = 0; i < n; i++)
		if (b->count[i] > 1) {
			CHECK(u[m] <= UINT32_MAX - b->duration_min[i]);
			b->duration_max[i] = b->duration_min[i] + (uint32_t)u[m++];
		}
	/* Status counts of the total cells (group 0 when it is the total). */
	int has_all = group_count && b->groups[0].status == ROLLUP_STATUS_ALL;
	size_t totals = 0;
	for (size_t i = 0; i < n && has_all; i++)
		totals += b->group[i] == 0;
	if (totals && !(b->status_other = malloc(sizeof(uint64_t) * 3 * n))) {
		err = -ENOMEM;
		goto fail;
	}
	stream st_all = s[C_ALLSTATUS];
	for (size_t i = 0; i < n && totals; i++) {
		if (b->group[i] != 0)
			continue;
		uint64_t other = 0;
		for (int k = 0; k < 3; k++) {
			uint64_t *x = &b->status_other[3 * i + (size_t)k];
			CHECK(!sv(&st_all, x) && *x <= b->count[i] - other);
			other += *x;
		}
	}
	CHECK(st_all.p == st_all.end);
	if (columns == C_COLUMNS && (err = decode_wraps(s[C_WRAPS], b)))
		goto fail;
	/* The histogram, user and register columns are decoded on demand
	 * (rollup_block_sketches): most queries need neither. */
	size_t keep = stream_size(&s[C_HIST]) + stream_size(&s[C_USERS]) + stream_size(&s[C_DENSE]);
	b->sketch_raw = malloc(keep + 1);
	if (!b->sketch_raw) {
		err = -ENOMEM;
		goto fail;
	}
	b->hist_size = stream_size(&s[C_HIST]);
	b->users_size = stream_size(&s[C_USERS]);
	b->dense_size = stream_size(&s[C_DENSE]);
	memcpy(b->sketch_raw, s[C_HIST].p, b->hist_size);
	memcpy(b->sketch_raw + b->hist_size, s[C_USERS].p, b->users_size);
	memcpy(b->sketch_raw + b->hist_size + b->users_size, s[C_DENSE].p, b->dense_size);
	b->user_limit = user_limit;
	b->bytes = block_bytes(n) + keep + (totals ? sizeof(uint64_t) * 3 * n : 0) +
		   (b->wraps ? sizeof(*b->wraps) * n : 0);
	free(u);
	return 0;
fail:
	free(u);
	rollup_block_free(b);
	return err;
}

int rollup_block_sketches(rollup_block *b)
{
	if (b->sketches)
		return 0;
	size_t n = b->cell_count;
	uint64_t v;
	int err = 0;
	/* One pass. The arenas are sized from the streams: a histogram entry
	 * takes at least two bytes of the hist stream (cells of count 1 take
	 * none, one entry each), a user code at least one byte of the users
	 * stream, and the dense stream is whole register sets. */
	size_t dd_room = b->hist_size / 2 + n, user_room = b->users_size;
	size_t dense_total = b->dense_size / HLL_REGISTERS;
	b->sketch_index = malloc(sizeof(uint32_t) * 4 * (n + 1));
	b->dd_arena = malloc(sizeof(uint64_t) * (dd_room + 1));
	b->user_arena = malloc(sizeof(uint32_t) * (user_room + 1));
	b->register_arena = dense_total ? malloc(dense_total * HLL_REGISTERS) : NULL;
	b->dense_users = dense_total ? calloc(dense_total, sizeof(*b->dense_users)) : NULL;
	if (!b->sketch_index || !b->dd_arena || !b->user_arena ||
	    (dense_total && (!b->register_arena || !b->dense_users))) {
		err = -ENOMEM;
		goto fail;
	}
	CHECK(b->dense_size == dense_total * HLL_REGISTERS);
	CHECK(dd_room <= UINT32_MAX && user_room <= UINT32_MAX);
	uint32_t *dd_count = b->sketch_index, *dd_at = dd_count + n, *user_count = dd_at + n,
		 *user_at = user_count + n;
	stream hist = {b->sketch_raw, b->sketch_raw + b->hist_size};
	stream users = {hist.end, hist.end + b->users_size};
	const uint8_t *dense = users.end;
	size_t dd_total = 0, user_total = 0, dense_seen = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t *dd = b->dd_arena + dd_total;
		uint64_t entries = 1;
		if (b->count[i] > 1) {
			uint64_t step, count, total = 0, index = 0;
			CHECK(!sv(&hist, &entries) && entries >= 1 && entries <= DD_INDEX_MAX &&
			      entries <= dd_room - dd_total);
			for (uint64_t k = 0; k < entries; k++) {
				CHECK(!sv(&hist, &step) && !sv(&hist, &count));
				CHECK((k == 0 || step > 0) && step < DD_INDEX_MAX && count >= 1 &&
				      count < (UINT64_C(1) << 48));
				index += step;
				CHECK(index < DD_INDEX_MAX);
				dd[k] = DD_ENTRY(index, count);
				total += count;
			}
			CHECK(total == b->count[i]);
		} else {
			CHECK(dd_total < dd_room);
			dd[0] = DD_ENTRY(dd_index((uint32_t)b->duration_sum[i]), 1);
		}
		dd_count[i] = (uint32_t)entries;
		dd_at[i] = (uint32_t)dd_total;
		dd_total += entries;
		uint64_t flag;
		CHECK(!sv(&users, &flag) && flag / 2 <= USET_EXACT_MAX && flag / 2 <= b->count[i]);
		CHECK(!(flag & 1) || flag / 2 == 0);
		if (flag & 1) {
			CHECK(dense_seen < dense_total);
			user_count[i] = ROLLUP_DENSE;
			user_at[i] = (uint32_t)dense_seen++;
			continue;
		}
		uint64_t codes = flag / 2, code = 0;
		CHECK(codes <= user_room - user_total);
		uint32_t *ucodes = b->user_arena + user_total;
		for (uint64_t k = 0; k < codes; k++) {
			CHECK(!sv(&users, &v) && (k == 0 || v > 0));
			code += v;
			CHECK(code < b->user_limit);
			ucodes[k] = (uint32_t)code;
		}
		user_count[i] = (uint32_t)codes;
		user_at[i] = (uint32_t)user_total;
		user_total += codes;
	}
	CHECK(hist.p == hist.end && users.p == users.end && dense_seen == dense_total);
	if (dense_total)
		memcpy(b->register_arena, dense, dense_total * HLL_REGISTERS);
	b->bytes += sizeof(uint32_t) * 4 * (n + 1) + sizeof(uint64_t) * dd_room +
		    sizeof(uint32_t) * user_room +
		    dense_total * (HLL_REGISTERS + sizeof(*b->dense_users));
	b->sketches = 1;
	return 0;
fail:
	free(b->sketch_index);
	free(b->dd_arena);
	free(b->user_arena);
	free(b->register_arena);
	free(b->dense_users);
	b->sketch_index = NULL;
	b->dd_arena = NULL;
	b->user_arena = NULL;
	b->register_arena = NULL;
	b->dense_users = NULL;
	return err;
}

uint64_t rollup_block_dense_users(const rollup_block *b, uint32_t set)
{
	assert(b->sketches && (size_t)set < b->dense_size / HLL_REGISTERS);
	_Atomic uint64_t *known = &b->dense_users[set];
	uint64_t users = atomic_load_explicit(known, memory_order_relaxed);
	if (users)
		return users - 1;
	users = (uint64_t)llround(hll_estimate(b->register_arena + (size_t)HLL_REGISTERS * set));
	atomic_store_explicit(known, users + 1, memory_order_relaxed);
	return users;
}

void rollup_block_free(rollup_block *b)
{
	free(b->sketch_raw);
	free(b->block);
	free(b->status_other);
	free(b->wraps);
	free(b->sketch_index);
	free(b->dd_arena);
	free(b->user_arena);
	free(b->register_arena);
	free(b->dense_users);
	memset(b, 0, sizeof(*b));
}

uint32_t rollup_block_lower_bound(const rollup_block *b, int64_t bucket)
{
	uint32_t lo = 0, hi = b->cell_count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (b->bucket[mid] < bucket)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* ---- projections ------------------------------------------------------------------- */

typedef struct proj_cell {
	int64_t bucket;
	int64_t cost;
	uint64_t count, tokens_in, tokens_out, duration_sum;
	uint64_t status_other[3];
	rollup_wraps wraps;
	uint32_t group, duration_min, duration_max;
} proj_cell;

/* The histograms of one bucket's projected cells, added up in dense
 * accumulators (reused from bucket to bucket), then written out in index
 * order: entries[dd_at[c], + dd_n[c]) are cell c's. */
typedef struct proj_hist {
	dd_acc *accs;     /* by cell - first cell of the bucket */
	uint32_t acc_capacity;
	uint64_t *entries;
	uint32_t count, capacity;
	uint32_t *dd_n, *dd_at; /* by cell */
} proj_hist;

static int proj_hist_flush(proj_hist *h, uint32_t first, uint32_t end)
{
	for (uint32_t c = first; c < end; c++) {
		dd_acc *d = &h->accs[c - first];
		h->dd_at[c] = h->count;
		h->dd_n[c] = 0;
		for (uint32_t i = d->lo; i < d->hi; i++) {
			uint64_t n = d->counts[i - d->lo];
			if (!n)
				continue;
			if (grow_for_one((void **)&h->entries, &h->capacity, h->count, 256, sizeof(*h->entries)))
				return -ENOMEM;
			h->entries[h->count++] = DD_ENTRY(i, n);
			h->dd_n[c]++;
			d->counts[i - d->lo] = 0;
		}
		d->total = 0;
	}
	return 0;
}

typedef struct proj_groups {
	rollup_group *groups;
	uint32_t count, capacity;
	uint32_t *slots;
	uint32_t mask;
} proj_groups;

static uint64_t proj_group_hash(const void *ctx, uint32_t i)
{
	return rollup_group_hash(&((const proj_groups *)ctx)->groups[i]);
}

/* The projected group of key (added when new), or -ENOMEM as < 0. */
static int64_t proj_group_of(proj_groups *pg, const rollup_group *key)
{
	if ((!pg->mask || (pg->count + 1) * 2 > pg->mask + 1) &&
	    index_rebuild(&pg->slots, &pg->mask, pg->mask ? (pg->mask + 1) * 2 : 16, pg->count, proj_group_hash, pg))
		return -ENOMEM;
	uint32_t k = (uint32_t)rollup_group_hash(key) & pg->mask;
	while (pg->slots[k]) {
		if (rollup_group_equal(&pg->groups[pg->slots[k] - 1], key))
			return pg->slots[k] - 1;
		k = (k + 1) & pg->mask;
	}
	if (grow_for_one((void **)&pg->groups, &pg->capacity, pg->count, 16, sizeof(*pg->groups)))
		return -ENOMEM;
	pg->groups[pg->count] = *key;
	pg->slots[k] = ++pg->count;
	return pg->count - 1;
}

int rollup_groups_project(const rollup_group *groups, uint32_t count, uint32_t code_mask, int keep_status,
			  uint32_t **map, rollup_group **out, uint32_t *out_count)
{
	*map = malloc(sizeof(**map) * (count ? count : 1));
	*out = NULL;
	*out_count = 0;
	if (!*map)
		return -ENOMEM;
	proj_groups pg = {0};
	for (uint32_t g = 0; g < count; g++) {
		if (groups[g].status == ROLLUP_STATUS_ALL) {
			(*map)[g] = ROLLUP_NO_GROUP;
			continue;
		}
		rollup_group key;
		memset(&key, 0, sizeof(key));
		for (int c = 0; c < ROLLUP_GROUP_DIMS; c++)
			if (code_mask & (1u << c))
				key.code[c] = groups[g].code[c];
		key.status = keep_status ? groups[g].status : 0;
		int64_t p = proj_group_of(&pg, &key);
		if (p < 0) {
			free(*map);
			*map = NULL;
			free(pg.groups);
			free(pg.slots);
			return (int)p;
		}
		(*map)[g] = (uint32_t)p;
	}
	free(pg.slots);
	*out = pg.groups;
	*out_count = pg.count;
	return 0;
}

int rollup_block_project(const rollup_block *src, const uint32_t *map, rollup_block *out)
{
	memset(out, 0, sizeof(*out));
	size_t n = src->cell_count;
	proj_cell *cells = malloc(sizeof(*cells) * (n ? n : 1));
	uint32_t *cell_of = NULL, *run_of = NULL; /* projected group -> its cell in the current bucket */
	uint32_t cell_of_cap = 0;
	proj_hist hist = {0};
	hist.dd_n = malloc(sizeof(uint32_t) * (n ? n : 1));
	hist.dd_at = malloc(sizeof(uint32_t) * (n ? n : 1));
	int rc = cells && hist.dd_n && hist.dd_at ? 0 : -ENOMEM;
	uint32_t m = 0, run = 0;
	int any_wraps = 0;
	for (size_t i = 0; i < n && !rc;) {
		size_t j = i;
		while (j < n && src->bucket[j] == src->bucket[i])
			j++;
		run++;
		uint32_t run_first = m;
		for (size_t k = i; k < j && !rc; k++) {
			uint32_t g = src->group[k];
			const rollup_group *sg = &src->groups[g];
			uint32_t p = map[g];
			if (p == ROLLUP_NO_GROUP)
				continue;
			if (p >= cell_of_cap) {
				uint32_t cap = cell_of_cap ? cell_of_cap * 2 : 64;
				while (cap <= p)
					cap *= 2;
				uint32_t *a = realloc(cell_of, sizeof(*a) * cap), *b = a ? realloc(run_of, sizeof(*b) * cap) : NULL;
				if (a)
					cell_of = a;
				if (!b) {
					rc = -ENOMEM;
					break;
				}
				run_of = b;
				memset(run_of + cell_of_cap, 0, sizeof(*b) * (cap - cell_of_cap));
				cell_of_cap = cap;
			}
			if (run_of[p] != run) {
				if (m - run_first == hist.acc_capacity) {
					uint32_t cap = hist.acc_capacity ? hist.acc_capacity * 2 : 16;
					dd_acc *a = realloc(hist.accs, sizeof(*a) * cap);
					if (!a) {
						rc = -ENOMEM;
						break;
					}
					memset(a + hist.acc_capacity, 0, sizeof(*a) * (cap - hist.acc_capacity));
					hist.accs = a;
					hist.acc_capacity = cap;
				}
				run_of[p] = run;
				cell_of[p] = m;
				cells[m] = (proj_cell){.bucket = src->bucket[k], .group = p,
						       .duration_min = src->duration_min[k],
						       .duration_max = src->duration_max[k]};
				m++;
			}
			proj_cell *c = &cells[cell_of[p]];
			c->count += src->count[k];
			const rollup_wraps none = {0}, *w = src->wraps ? &src->wraps[k] : &none;
			sum_add_u64(&c->tokens_in, &c->wraps.tokens_in, src->tokens_in[k], w->tokens_in);
			sum_add_u64(&c->tokens_out, &c->wraps.tokens_out, src->tokens_out[k],
				    w->tokens_out);
			sum_add_u64(&c->duration_sum, &c->wraps.duration_ms_sum, src->duration_sum[k],
				    w->duration_ms_sum);
			sum_add_i64(&c->cost, &c->wraps.cost_micros, src->cost[k], w->cost_micros);
			any_wraps |= rollup_wraps_any(&c->wraps);
			if (src->duration_min[k] < c->duration_min)
				c->duration_min = src->duration_min[k];
			if (src->duration_max[k] > c->duration_max)
				c->duration_max = src->duration_max[k];
			if (sg->status >= 1 && sg->status <= 3)
				c->status_other[sg->status - 1] += src->count[k];
			const uint32_t *ix = src->sketch_index;
			uint32_t entries = ix[k], at = ix[n + k];
			dd_acc *d = &hist.accs[cell_of[p] - run_first];
			for (uint32_t e = 0; e < entries && !rc; e++) {
				uint64_t entry = src->dd_arena[at + e];
				rc = dd_acc_add(d, DD_ENTRY_INDEX(entry), DD_ENTRY_COUNT(entry));
			}
		}
		if (!rc)
			rc = proj_hist_flush(&hist, run_first, m);
		i = j;
	}
	/* The columns, at their final size. */
	size_t bytes = block_bytes(m);
	if (!rc) {
		rc = block_columns(out, m);
		out->status_other = malloc(sizeof(uint64_t) * 3 * (m ? m : 1));
		out->sketch_index = calloc(4 * (size_t)(m ? m : 1), sizeof(uint32_t));
		out->dd_arena = malloc(sizeof(uint64_t) * (hist.count ? hist.count : 1));
		if (any_wraps)
			out->wraps = malloc(sizeof(*out->wraps) * (m ? m : 1));
		if (rc || !out->status_other || !out->sketch_index || !out->dd_arena ||
		    (any_wraps && !out->wraps))
			rc = -ENOMEM;
	}
	if (!rc) {
		for (uint32_t c = 0; c < m; c++) {
			const proj_cell *pc = &cells[c];
			out->bucket[c] = pc->bucket;
			out->cost[c] = pc->cost;
			out->count[c] = pc->count;
			out->tokens_in[c] = pc->tokens_in;
			out->tokens_out[c] = pc->tokens_out;
			out->duration_sum[c] = pc->duration_sum;
			out->group[c] = pc->group;
			out->duration_min[c] = pc->duration_min;
			out->duration_max[c] = pc->duration_max;
			memcpy(&out->status_other[3 * (size_t)c], pc->status_other, sizeof(pc->status_other));
			if (any_wraps)
				out->wraps[c] = pc->wraps;
		}
		uint32_t *ix = out->sketch_index;
		for (uint32_t c = 0; c < m; c++) {
			ix[c] = hist.dd_n[c];
			ix[m + c] = hist.dd_at[c];
		}
		uint32_t w = hist.count;
		if (w)
			memcpy(out->dd_arena, hist.entries, sizeof(uint64_t) * w);
		out->sketches = 1;
		out->mixed_status = 1;
		out->bytes = bytes + sizeof(uint64_t) * 3 * m + sizeof(uint32_t) * 4 * m + sizeof(uint64_t) * w +
			     (any_wraps ? sizeof(*out->wraps) * m : 0);
	} else {
		rollup_block_free(out);
	}
	free(cells);
	free(cell_of);
	free(run_of);
	for (uint32_t k = 0; k < hist.acc_capacity; k++)
		dd_acc_free(&hist.accs[k]);
	free(hist.accs);
	free(hist.entries);
	free(hist.dd_n);
	free(hist.dd_at);
	return rc;
}
