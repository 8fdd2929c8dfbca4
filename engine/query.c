/*
 * query.c — aggregate queries over rollup pages, and raw event listings.
 *
 * NOTES ON THE PLANNER
 *
 * 1. Output buckets. The range [from, to) is cut into the query's buckets:
 *    UTC minutes/hours/days/months, or local ones in the query's time zone
 *    (tz.h: a bucket is a maximal run of instants with the same local
 *    label). Each bucket's part of the range is answered on its own.
 *
 * 2. Cover. A bucket's part [a, e) is covered greedily from the coarsest
 *    resolution down: the whole UTC days inside it from day cells, the
 *    whole hours left from hour cells, the whole minutes left from minute
 *    cells where every source still has them (minute cells older than the
 *    retention are dropped from segment files, see minute_from_us), and
 *    whatever is left (sub-minute edges, old minutes) from the raw events.
 *    Pieces never overlap and their union is [a, e), so each event is
 *    counted once: counts and sums are exact.
 *
 * 3. Sources. Every live segment file with a section of the tenant, and the
 *    tenant's frozen and active memtables (their live rollups). A cell of
 *    (bucket, group) may be partial in several sources: the merge adds
 *    them. First, a step per hold of store->lock, the query rolls up an
 *    active memtable far behind (store_query_catch_up) and copies its
 *    dictionary (active_copy_ahead). Then, in one hold, it pins the
 *    tenant's files and memtables, notes the active memtable's row count
 *    and how many its rollup holds, and takes its rollup_lock
 *    (active_begin); a flush or compaction publishes under the same lock,
 *    so the pinned sources are one consistent set that holds every
 *    acknowledged event exactly once. The active memtable's cells
 *    (active_finish), the frozen memtable and the files are then merged
 *    without store->lock (the files and the frozen memtable are
 *    immutable; the active rollup cannot grow while its rollup_lock is
 *    held; all are pinned: a flush or compaction that replaces one leaves
 *    it to the last unpin), and the active memtable's rows (those past its
 *    rollup, and the raw edges) a step per hold of it, with the rows it
 *    noted, which never change; so ingest does not wait for them. What the query keeps
 *    of a memtable after its rollup_lock is let go is its own: distinct
 *    users deferred into memtable cells are hashed first
 *    (acc_settle_users).
 *
 * 4. Groups. A source's groups are dictionary codes; the first time a
 *    query meets a group of a source it evaluates the filters on the
 *    group's strings and finds (or creates) the output group of the
 *    grouped dimensions' values: after that a cell costs one array lookup.
 *
 * 5. Cache. Decoded rollup blocks and section dictionaries (with the hash
 *    of every user string) are cached per (file, tenant), up to
 *    options.query_cache_bytes_max, least recently used out first (a
 *    query that leaves more evicts down to half of it). Files are
 *    immutable and their ids never reused, so entries are never stale;
 *    compaction drops the entries of the files it removed, and so does a
 *    query that decoded some of a file retired while it read it
 *    (store_files_unpin). A flush or compaction warms the entries of the
 *    file it wrote for the tenants queries have read (query_cache_warm).
 *    Locks: the table of entries, their bytes and their pins are under
 *    store->cache_lock, held only for a lookup, an addition, an eviction
 *    or a count, never across a merge. An entry belongs to one tenant; a
 *    query fills it in and reads it under that tenant's query_lock (two
 *    queries of one tenant take turns, other tenants' queries go on), and
 *    pins it (cache_pin) so that no eviction or forgetting frees it until
 *    the query has resolved its distinct users, whose deferred lists point
 *    into its blocks. A pinned entry of a retired file outlives the
 *    compaction's forgetting; the query forgets it when it lets the file
 *    go (store_files_unpin, after cache_unpin_all). Before 2026-12-03 one
 *    cache lock was held for every query's whole file merge, so one huge
 *    query held up every other tenant's dashboard queries, and a flush
 *    warming the cache.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "errmsg.h"
#include "filter.h"
#include "grow.h"
#include "rollup.h"
#include "sketch.h"
#include "store_internal.h"
#include "tz.h"

#define QUERY_TZ_CACHE_MAX 64              /* time zones kept loaded */
#define RAW_MERGE_GAP_US ROLLUP_HOUR_US    /* raw pieces closer than this share a scan */
#define QUERY_ATTEMPTS_MAX 8               /* attempts of a query in a narrowing window */

/* ---- names ------------------------------------------------------------------ */

static const char *const DIM_NAMES[TALLY_DIM_COUNT] = {"project", "agent", "model", "type",
							 "status"};
static const char *const STATUS_NAMES[TALLY_STATUS_COUNT] = {"ok", "error", "timeout",
							      "cancelled"};
static const char *const AGG_NAMES[TALLY_AGG_COUNT_] = {
	"count", "tokens_in", "tokens_out", "tokens", "cost", "duration_sum", "duration_min",
	"duration_max", "errors", "quantile", "distinct_users"};

const char *tally_dim_name(int dim)
{
	return dim >= 0 && dim < TALLY_DIM_COUNT ? DIM_NAMES[dim] : "unknown";
}

int tally_dim_parse(const char *name)
{
	for (int d = 0; name && d < TALLY_DIM_COUNT; d++)
		if (!strcmp(name, DIM_NAMES[d]))
			return d;
	return TALLY_E_INVALID;
}

const char *tally_status_name(int status)
{
	return status >= 0 && status < TALLY_STATUS_COUNT ? STATUS_NAMES[status] : "unknown";
}

const char *tally_agg_name(int agg)
{
	return agg >= 0 && agg < TALLY_AGG_COUNT_ ? AGG_NAMES[agg] : "unknown";
}

/* Rollup group code order (rollup.h) of each query dimension; status has none. */
static const int DIM_TO_CODE[TALLY_DIM_COUNT] = {1, 2, 3, 0, -1};
/* The segment/memtable dimension (enum dim) of each rollup code slot. */
static const int CODE_TO_SEGDIM[ROLLUP_GROUP_DIMS] = {DIM_TYPE, DIM_PROJECT, DIM_AGENT, DIM_MODEL};
static const int CODE_TO_DIM[ROLLUP_GROUP_DIMS] = {TALLY_DIM_TYPE, TALLY_DIM_PROJECT, TALLY_DIM_AGENT,
						   TALLY_DIM_MODEL};

static inline int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b != 0 && (a < 0)) ? q - 1 : q;
}
static inline int64_t ceil_div(int64_t a, int64_t b) /* b > 0; no negation: a may be INT64_MIN */
{
	int64_t q = a / b;
	return a % b > 0 ? q + 1 : q;
}

/* ---- the cache ----------------------------------------------------------------- */

typedef struct section_cache {
	uint64_t file_id;
	uint32_t tenant_id;
	/* Under cache_lock: queries using the entry (cache_pin), which no
	 * eviction or forgetting removes while it is pinned; its last use;
	 * its bytes. The rest is filled in and read only under its tenant's
	 * query_lock, or before the entry is added (query_cache_warm). */
	uint32_t pins;
	uint64_t last_use;
	size_t bytes;
	int dict_loaded;
	strdict dict[DIM_COUNT];
	uint32_t dict_count[DIM_COUNT];
	uint64_t *user_hash; /* by user code; NULL until a distinct-users query */
	rollup_group *groups;   /* the section's group table, NULL until read */
	uint32_t group_count;
	rollup_block *chunks;   /* the section's chunks (minute, hour, day), decoded on use */
	uint8_t *chunk_loaded;
	uint32_t chunk_count;
	/* Projections to fewer dimensions (section_key_table,
	 * section_projection), each allocated on its own. */
	struct key_table **key_tables;
	uint32_t key_table_count, key_table_capacity;
	struct projection **projections;
	uint32_t projection_count, projection_capacity;
} section_cache;

/* The section's group table projected to the code slots and status of
 * `key` (rollup_groups_project). */
typedef struct key_table {
	uint32_t key;   /* bit c: code slot c kept; PROJECTION_STATUS: status kept */
	uint32_t *map;  /* section group -> projected group */
	rollup_group *groups;
	uint32_t count;
	int worth;      /* count * PROJECTION_SHRINK_MIN <= the section's groups */
} key_table;

/* A day chunk of a section projected through a key table: what a query
 * grouping by fewer dimensions merges instead of the chunk's cells. */
typedef struct projection {
	uint32_t chunk;
	uint32_t key;
	rollup_block block;
} projection;
#define PROJECTION_STATUS (1u << ROLLUP_GROUP_DIMS)
#define PROJECTION_ALL (PROJECTION_STATUS * 2 - 1) /* every slot and the status: no projection */
/* A projection is made only where it merges at least this many groups into
 * one on average: below that, making it costs a first query more than it
 * saves the next ones (project x model on the dashboard benchmark). */
#define PROJECTION_SHRINK_MIN 4u


struct query_cache {
	section_cache **entries;
	uint32_t count;
	uint32_t capacity;
	uint32_t *slots; /* (file, tenant) -> entry + 1 */
	uint32_t slot_mask;
	uint64_t clock;
	size_t bytes;
};

static uint32_t section_hash(uint64_t file_id, uint32_t tenant_id)
{
	return (uint32_t)XXH3_64bits_withSeed(&file_id, sizeof(file_id), tenant_id);
}

static void section_free(section_cache *e)
{
	for (int d = 0; d < DIM_COUNT; d++)
		strdict_free(&e->dict[d]);
	free(e->user_hash);
	for (uint32_t k = 0; k < e->chunk_count; k++)
		if (e->chunk_loaded[k])
			rollup_block_free(&e->chunks[k]);
	free(e->chunks);
	free(e->chunk_loaded);
	free(e->groups);
	for (uint32_t k = 0; k < e->projection_count; k++) {
		rollup_block_free(&e->projections[k]->block);
		free(e->projections[k]);
	}
	free(e->projections);
	for (uint32_t k = 0; k < e->key_table_count; k++) {
		free(e->key_tables[k]->map);
		free(e->key_tables[k]->groups);
		free(e->key_tables[k]);
	}
	free(e->key_tables);
	free(e);
}

static uint64_t entry_hash(const void *ctx, uint32_t i)
{
	const struct query_cache *c = ctx;
	return section_hash(c->entries[i]->file_id, c->entries[i]->tenant_id);
}

static int cache_rehash(struct query_cache *c, uint32_t slots)
{
	return index_rebuild(&c->slots, &c->slot_mask, slots, c->count, entry_hash, c);
}

static int last_use_compare(const void *a, const void *b)
{
	const section_cache *x = *(section_cache *const *)a, *y = *(section_cache *const *)b;
	return x->last_use < y->last_use ? -1 : x->last_use > y->last_use;
}

static int file_listed(const uint64_t *ids, uint32_t count, uint64_t id)
{
	for (uint32_t i = 0; i < count; i++)
		if (ids[i] == id)
			return 1;
	return 0;
}

/* Points a free slot of the index at entry i. */
static void cache_slot_set(struct query_cache *c, uint32_t i)
{
	const section_cache *e = c->entries[i];
	uint32_t k = section_hash(e->file_id, e->tenant_id) & c->slot_mask;
	while (c->slots[k])
		k = (k + 1) & c->slot_mask;
	c->slots[k] = i + 1;
}

/* Removes entries until the cache holds at most `keep` bytes (oldest first),
 * or (drop_ids not NULL) the entries of the files drop_ids[0, drop_count).
 * A pinned entry stays: a query is reading it (a retired file's entry
 * goes when that query lets the file go: store_files_unpin). */
static void cache_shrink(struct query_cache *c, size_t keep, const uint64_t *drop_ids,
			 uint32_t drop_count)
{
	if (!drop_ids && c->bytes <= keep)
		return;
	if (!drop_ids)
		qsort(c->entries, c->count, sizeof(*c->entries), last_use_compare);
	uint32_t kept = 0;
	for (uint32_t i = 0; i < c->count; i++) {
		section_cache *e = c->entries[i];
		int drop = !drop_ids ? c->bytes > keep : file_listed(drop_ids, drop_count, e->file_id);
		if (drop && !e->pins) {
			c->bytes -= e->bytes;
			section_free(e);
		} else {
			c->entries[kept++] = e;
		}
	}
	c->count = kept;
	/* Fewer entries in as many slots: rebuilt in place, nothing to allocate. */
	if (c->slot_mask)
		memset(c->slots, 0, sizeof(*c->slots) * (c->slot_mask + 1));
	for (uint32_t i = 0; i < c->count; i++)
		cache_slot_set(c, i);
}

size_t query_cache_bytes(tally_store *s)
{
	return atomic_load_explicit(&s->query_cache_bytes, memory_order_relaxed);
}

static void cache_lock(tally_store *s)
{
	pthread_mutex_lock(&s->cache_lock);
}

/* Lets cache_lock go, the bytes mirrored for tally_store_stats first. */
static void cache_unlock(tally_store *s)
{
	atomic_store_explicit(&s->query_cache_bytes, s->query_cache ? s->query_cache->bytes : 0,
			      memory_order_relaxed);
	pthread_mutex_unlock(&s->cache_lock);
}

void query_cache_forget_files(tally_store *s, const uint64_t *file_ids, uint32_t count)
{
	cache_lock(s);
	if (s->query_cache && count)
		cache_shrink(s->query_cache, 0, file_ids, count);
	cache_unlock(s);
}

void query_cache_free(tally_store *s)
{
	struct query_cache *c = s->query_cache;
	if (!c)
		return;
	for (uint32_t i = 0; i < c->count; i++)
		section_free(c->entries[i]);
	free(c->entries);
	free(c->slots);
	free(c);
	s->query_cache = NULL;
	atomic_store_explicit(&s->query_cache_bytes, 0, memory_order_relaxed);
}

/* Under cache_lock: the cache, made on first use; NULL when out of memory. */
static struct query_cache *cache_of(tally_store *s)
{
	if (!s->query_cache)
		s->query_cache = calloc(1, sizeof(*s->query_cache));
	return s->query_cache;
}

/* The entry of (file, tenant), or NULL. */
static section_cache *cache_find(struct query_cache *c, uint64_t file_id, uint32_t tenant_id)
{
	if (!c->slot_mask)
		return NULL;
	for (uint32_t k = section_hash(file_id, tenant_id) & c->slot_mask; c->slots[k];
	     k = (k + 1) & c->slot_mask) {
		section_cache *e = c->entries[c->slots[k] - 1];
		if (e->file_id == file_id && e->tenant_id == tenant_id)
			return e;
	}
	return NULL;
}

/* Adds e (no entry of its file and tenant is there), its bytes counted. 0
 * or -ENOMEM (e not added). */
static int cache_add(struct query_cache *c, section_cache *e)
{
	if (grow_for_one((void **)&c->entries, &c->capacity, c->count, 64, sizeof(*c->entries)))
		return -ENOMEM;
	if (!c->slot_mask || (c->count + 1) * 2 > c->slot_mask + 1) {
		int rc = cache_rehash(c, c->slot_mask ? (c->slot_mask + 1) * 2 : 128);
		if (rc)
			return rc;
	}
	e->last_use = ++c->clock;
	c->bytes += e->bytes;
	c->entries[c->count] = e;
	cache_slot_set(c, c->count++);
	return 0;
}

static section_cache *section_new(uint64_t file_id, uint32_t tenant_id)
{
	section_cache *e = calloc(1, sizeof(*e));
	if (e) {
		e->file_id = file_id;
		e->tenant_id = tenant_id;
		e->bytes = sizeof(*e);
	}
	return e;
}

/* Under cache_lock: the entry of (file, tenant), added if new. */
static int cache_get(tally_store *s, uint64_t file_id, uint32_t tenant_id, section_cache **out)
{
	struct query_cache *c = cache_of(s);
	if (!c)
		return -ENOMEM;
	section_cache *e = cache_find(c, file_id, tenant_id);
	if (e) {
		e->last_use = ++c->clock;
		*out = e;
		return 0;
	}
	if (!(e = section_new(file_id, tenant_id)))
		return -ENOMEM;
	int rc = cache_add(c, e);
	if (rc) {
		free(e);
		return rc;
	}
	*out = e;
	return 0;
}

/* s NULL: an entry being filled outside the cache (query_cache_warm),
 * whose bytes the cache counts when it is added. Else takes cache_lock. */
static void cache_account(tally_store *s, section_cache *e, size_t bytes)
{
	if (!s) {
		e->bytes += bytes;
		return;
	}
	cache_lock(s);
	e->bytes += bytes;
	s->query_cache->bytes += bytes;
	cache_unlock(s);
}

static int section_dict(tally_store *s, const segment_file *f, uint32_t ti, section_cache *e,
			char *errmsg)
{
	if (e->dict_loaded)
		return 0;
	int rc = segment_read_dict(f, ti, e->dict, errmsg);
	if (rc)
		return rc;
	size_t bytes = 0;
	for (int d = 0; d < DIM_COUNT; d++) {
		e->dict_count[d] = e->dict[d].count;
		bytes += strdict_bytes(&e->dict[d]);
	}
	e->dict_loaded = 1;
	cache_account(s, e, bytes);
	return 0;
}

static int section_user_hash(tally_store *s, section_cache *e)
{
	if (e->user_hash)
		return 0;
	const strdict *u = &e->dict[DIM_USER];
	e->user_hash = malloc(sizeof(uint64_t) * ((size_t)u->count + 1));
	if (!e->user_hash)
		return -ENOMEM;
	for (uint32_t i = 0; i < u->count; i++) {
		tally_str str = strdict_get(u, i);
		e->user_hash[i] = sketch_user_hash(str.ptr, str.len);
	}
	cache_account(s, e, sizeof(uint64_t) * ((size_t)u->count + 1));
	return 0;
}

/* The section's group table (and room for its chunks), read once. */
static int section_groups(tally_store *s, const segment_file *f, uint32_t ti, section_cache *e,
			  char *errmsg)
{
	if (e->groups)
		return 0;
	const seg_tenant *sec = &f->tenants[ti];
	uint32_t chunks = 0;
	for (int list = 0; list < LIST_COUNT; list++)
		chunks += sec->chunk_count[list];
	bytebuf raw = {0};
	int rc = segment_read_block(f, &sec->rollup_groups, &raw, errmsg);
	if (!rc) {
		rc = rollup_groups_decode(raw.data, raw.size, e->dict_count, &e->groups, &e->group_count);
		if (rc == TALLY_E_CORRUPT)
			snprintf(errmsg, TALLY_ERRMSG_SIZE,
				 "%s offset %" PRIu64 ": rollup group table of tenant %s is malformed",
				 f->path, sec->rollup_groups.offset, sec->name);
	}
	bytebuf_free(&raw);
	if (!rc && (!(e->chunks = calloc((size_t)chunks + 1, sizeof(*e->chunks))) ||
		    !(e->chunk_loaded = calloc((size_t)chunks + 1, 1))))
		rc = -ENOMEM;
	if (rc) {
		free(e->groups);
		free(e->chunks);
		e->groups = NULL;
		e->chunks = NULL;
		return rc;
	}
	e->chunk_count = chunks;
	cache_account(s, e, sizeof(rollup_group) * e->group_count + (sizeof(rollup_block) + 1) * chunks);
	return 0;
}

/* Chunk k of the section (file chunk first_chunk[0] + k), decoded once;
 * its histograms and users too when `sketches`. */
static int section_chunk(tally_store *s, const segment_file *f, uint32_t ti, section_cache *e,
			 uint32_t k, int sketches, char *errmsg)
{
	const seg_tenant *sec = &f->tenants[ti];
	const seg_chunk *c = &f->chunks[sec->first_chunk[0] + k];
	rollup_block *b = &e->chunks[k];
	int rc = 0;
	if (!e->chunk_loaded[k]) {
		bytebuf raw = {0};
		rc = segment_read_block(f, &c->block, &raw, errmsg);
		if (!rc)
			rc = rollup_block_decode(raw.data, raw.size, e->groups, e->group_count,
						 e->dict_count[DIM_USER], b);
		bytebuf_free(&raw);
		if (!rc && (b->cell_count != c->cells || b->bucket[0] != c->first_bucket)) {
			rollup_block_free(b);
			rc = TALLY_E_CORRUPT;
		}
		if (!rc) {
			e->chunk_loaded[k] = 1;
			cache_account(s, e, b->bytes);
		}
	}
	if (!rc && sketches && !b->sketches) {
		size_t before = b->bytes;
		if (!(rc = rollup_block_sketches(b)))
			cache_account(s, e, b->bytes - before);
	}
	if (rc == TALLY_E_CORRUPT)
		snprintf(errmsg, TALLY_ERRMSG_SIZE,
			 "%s offset %" PRIu64 ": rollup chunk of tenant %s is malformed", f->path,
			 c->block.offset, sec->name);
	return rc;
}

/* The section's group table projected to key (made and cached on first
 * use; the group table is read). */
static int section_key_table(tally_store *s, section_cache *e, uint32_t key, const key_table **out)
{
	for (uint32_t i = 0; i < e->key_table_count; i++)
		if (e->key_tables[i]->key == key) {
			*out = e->key_tables[i];
			return 0;
		}
	if (grow_for_one((void **)&e->key_tables, &e->key_table_capacity, e->key_table_count, 4,
			 sizeof(*e->key_tables)))
		return -ENOMEM;
	key_table *kt = calloc(1, sizeof(*kt));
	if (!kt)
		return -ENOMEM;
	kt->key = key;
	int rc = rollup_groups_project(e->groups, e->group_count, key & (PROJECTION_STATUS - 1),
				       (key & PROJECTION_STATUS) != 0, &kt->map, &kt->groups, &kt->count);
	if (rc) {
		free(kt);
		return rc;
	}
	kt->worth = (uint64_t)kt->count * PROJECTION_SHRINK_MIN <= e->group_count;
	e->key_tables[e->key_table_count++] = kt;
	cache_account(s, e, sizeof(*kt) + sizeof(uint32_t) * e->group_count + sizeof(rollup_group) * kt->count);
	*out = kt;
	return 0;
}

/* Chunk k of the section projected through kt (made and cached on first
 * use; the chunk is decoded with its sketches first). */
static int section_projection(tally_store *s, const segment_file *f, uint32_t ti, section_cache *e, uint32_t k,
			      const key_table *kt, const rollup_block **out, char *errmsg)
{
	for (uint32_t i = 0; i < e->projection_count; i++) {
		const projection *p = e->projections[i];
		if (p->chunk == k && p->key == kt->key) {
			*out = &p->block;
			return 0;
		}
	}
	int rc = section_chunk(s, f, ti, e, k, 1, errmsg);
	if (rc)
		return rc;
	if (grow_for_one((void **)&e->projections, &e->projection_capacity, e->projection_count, 4,
			 sizeof(*e->projections)))
		return -ENOMEM;
	projection *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->chunk = k;
	p->key = kt->key;
	if ((rc = rollup_block_project(&e->chunks[k], kt->map, &p->block))) {
		free(p);
		return rc;
	}
	e->projections[e->projection_count++] = p;
	cache_account(s, e, sizeof(*p) + p->block.bytes);
	*out = &p->block;
	return 0;
}

/* At least what decoding section ti of f whole takes: every cell's scalar
 * columns (rollup_block) and the group table, known from the footer
 * without reading a byte. */
static uint64_t section_bytes_floor(const segment_file *f, uint32_t ti)
{
	const size_t cell = 6 * sizeof(int64_t) + 3 * sizeof(uint32_t);
	const seg_tenant *sec = &f->tenants[ti];
	uint64_t bytes = (uint64_t)sec->rollup_group_count * sizeof(rollup_group);
	for (int list = 0; list < LIST_COUNT; list++)
		bytes += (uint64_t)sec->rollup_cells[list] * cell;
	return bytes;
}

/* Contract in store_internal.h. */
void query_cache_warm(tally_store *s, const segment_file *f, const uint32_t *tenant_ids,
		      uint32_t count)
{
	char errmsg[TALLY_ERRMSG_SIZE];
	uint64_t warm_max = s->options.query_cache_bytes_max / 2; /* the rest is the queries' */
	for (uint32_t i = 0; i < count; i++) {
		int64_t ti = segment_file_find_tenant(f, tenant_ids[i]);
		if (ti < 0)
			continue;
		/* One the cache could not keep is not decoded at all (a huge
		 * tenant's took 15.6 s and 780 MiB to be dropped: queries.md). */
		if (query_cache_bytes(s) + section_bytes_floor(f, (uint32_t)ti) > warm_max)
			continue;
		section_cache *e = section_new(f->file_id, tenant_ids[i]);
		if (!e)
			return;
		/* Everything a dashboard reads: dictionary, user hashes, group
		 * table, every chunk with its histograms and users. */
		int rc = section_dict(NULL, f, (uint32_t)ti, e, errmsg);
		if (!rc)
			rc = section_user_hash(NULL, e);
		if (!rc)
			rc = section_groups(NULL, f, (uint32_t)ti, e, errmsg);
		for (uint32_t k = 0; !rc && k < e->chunk_count; k++)
			rc = section_chunk(NULL, f, (uint32_t)ti, e, k, 1, errmsg);
		cache_lock(s);
		pthread_mutex_lock(&s->lock);
		int gone = s->closing || f->retired;
		pthread_mutex_unlock(&s->lock);
		struct query_cache *c = cache_of(s);
		/* A compaction that retired f forgets its entries once it has let
		 * the store lock go, and so does each query that read f: adding
		 * one after that would keep a dead file's pages until the LRU
		 * evicts them. f->retired is set under the store lock before
		 * either forgets, and they take cache_lock to do it, which this
		 * holds. */
		if (!rc && c && !gone && !cache_find(c, e->file_id, e->tenant_id) &&
		    c->bytes + e->bytes <= warm_max && !cache_add(c, e))
			e = NULL; /* the cache owns it */
		int stop = !c || c->bytes >= warm_max || gone;
		cache_unlock(s);
		if (e)
			section_free(e); /* a section that failed to decode is left to queries */
		if (stop || rc == -ENOMEM)
			return;
	}
}

/*
 * Loaded time zones, shared by every store of the process (they are
 * immutable system data): up to QUERY_TZ_CACHE_MAX stay loaded until exit;
 * past that a query loads its own copy and frees it (*owned set).
 */
static struct {
	pthread_mutex_t lock;
	char name[QUERY_TZ_CACHE_MAX][TZ_NAME_SIZE_MAX + 1];
	tz *zone[QUERY_TZ_CACHE_MAX];
	uint32_t count;
} zones = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int zone_get(const char *name, tz **out, int *owned, char *errmsg)
{
	*owned = 0;
	if (!strcmp(name, "UTC")) {
		*out = tz_utc();
		return 0;
	}
	pthread_mutex_lock(&zones.lock);
	for (uint32_t i = 0; i < zones.count; i++)
		if (!strcmp(zones.name[i], name)) {
			*out = zones.zone[i];
			pthread_mutex_unlock(&zones.lock);
			return 0;
		}
	int rc = tz_load(name, out, errmsg);
	if (!rc && zones.count < QUERY_TZ_CACHE_MAX) {
		snprintf(zones.name[zones.count], sizeof(zones.name[0]), "%s", name);
		zones.zone[zones.count++] = *out;
	} else if (!rc) {
		*owned = 1;
	}
	pthread_mutex_unlock(&zones.lock);
	return rc;
}

/* ---- validation ---------------------------------------------------------------- */

static int invalid(char *errmsg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int invalid(char *errmsg, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	errmsg_vset(errmsg, fmt, ap);
	va_end(ap);
	return TALLY_E_INVALID;
}

int query_filters_check(const tally_filter *filters, uint32_t count, char *errmsg)
{
	if (count > TALLY_FILTERS_MAX)
		return invalid(errmsg, "too many filters: %u (at most %u)", count, TALLY_FILTERS_MAX);
	if (count && !filters)
		return invalid(errmsg, "filters missing");
	for (uint32_t i = 0; i < count; i++) {
		const tally_filter *f = &filters[i];
		if (f->dim < 0 || f->dim >= TALLY_DIM_COUNT)
			return invalid(errmsg, "filter %u: unknown dimension %d", i, f->dim);
		if (f->value_count == 0 || f->value_count > TALLY_FILTER_VALUES_MAX)
			return invalid(errmsg, "filter on %s: %u values (1 to %u allowed)",
				       DIM_NAMES[f->dim], f->value_count, TALLY_FILTER_VALUES_MAX);
		if (!f->values)
			return invalid(errmsg, "filter on %s: values missing", DIM_NAMES[f->dim]);
		for (uint32_t v = 0; v < f->value_count; v++)
			if (f->values[v].len && !f->values[v].ptr)
				return invalid(errmsg, "filter on %s: value %u has no bytes",
					       DIM_NAMES[f->dim], v);
	}
	return 0;
}

static int check_range(int64_t from, int64_t to, char *errmsg)
{
	if (from >= to)
		return invalid(errmsg, "empty time range: from (%" PRId64 ") must be before to (%" PRId64 ")",
			       from, to);
	if ((uint64_t)to - (uint64_t)from > (uint64_t)TALLY_QUERY_RANGE_MAX_US)
		return invalid(errmsg, "time range of %" PRIu64 " us is longer than the data horizon (%" PRId64
			       " days, %" PRId64 " us)", (uint64_t)to - (uint64_t)from,
			       TALLY_QUERY_RANGE_MAX_US / TALLY_US_PER_DAY, TALLY_QUERY_RANGE_MAX_US);
	return 0;
}

static int check_query(const tally_query *q, char *errmsg)
{
	int rc = check_range(q->from_us, q->to_us, errmsg);
	if (rc)
		return rc;
	if (q->bucket < TALLY_BUCKET_NONE || q->bucket > TALLY_BUCKET_MONTH)
		return invalid(errmsg, "unknown bucket %d", q->bucket);
	if (q->group_by & ~((1u << TALLY_DIM_COUNT) - 1))
		return invalid(errmsg, "group_by names an unknown dimension (bits 0x%x)", q->group_by);
	if ((rc = query_filters_check(q->filters, q->filter_count, errmsg)))
		return rc;
	if (q->quantile_count > TALLY_QUANTILES_MAX)
		return invalid(errmsg, "too many quantiles: %u (at most %u)", q->quantile_count,
			       TALLY_QUANTILES_MAX);
	for (uint32_t i = 0; i < q->quantile_count; i++)
		if (!(q->quantiles[i] >= 0.0 && q->quantiles[i] <= 1.0))
			return invalid(errmsg, "quantile %u is not a rank in [0, 1]", i);
	if (q->order_by_agg) {
		if (q->order_agg < 0 || q->order_agg >= TALLY_AGG_COUNT_)
			return invalid(errmsg, "unknown aggregate %d to order by", q->order_agg);
		if (q->order_agg == TALLY_AGG_QUANTILE && q->order_quantile >= q->quantile_count)
			return invalid(errmsg, "order by quantile %u, but the query asks for %u quantiles",
				       q->order_quantile, q->quantile_count);
	}
	if (q->limit > TALLY_QUERY_ROWS_MAX)
		return invalid(errmsg, "limit %u is over the maximum of %u rows", q->limit,
			       TALLY_QUERY_ROWS_MAX);
	if (q->after && q->order_by_agg)
		return invalid(errmsg, "a cursor (after) pages the default order only, not an order by "
				       "aggregate");
	for (int d = 0; d < TALLY_DIM_COUNT && q->after; d++)
		if ((q->group_by & (1u << d)) && q->after_group[d].len && !q->after_group[d].ptr)
			return invalid(errmsg, "the cursor's %s value has a length but no bytes",
				       tally_dim_name(d));
	if (q->time_zone && strlen(q->time_zone) > TALLY_TIME_ZONE_SIZE_MAX)
		return invalid(errmsg, "time zone name longer than %u bytes", TALLY_TIME_ZONE_SIZE_MAX);
	return 0;
}

/* ---- output groups and accumulators -------------------------------------------- */

typedef struct out_group {
	uint32_t key_offset; /* into the key arena: per grouped dim, u32 length + bytes */
	uint32_t key_size;
	uint64_t hash;
} out_group;

/* The users of one cell, kept by value (a decoded block hands out cell
 * views that do not outlive the merge step): the codes and registers point
 * into source memory that stays put while the query holds rollup_lock (a
 * memtable's rollup) or its pin and its tenant's query_lock (a cached
 * block). */
typedef struct user_list {
	int present;
	uint32_t one;              /* the code when count == 1 */
	const uint32_t *many;      /* the codes when count > 1 */
	uint32_t count;
	const uint8_t *registers;  /* dense cells */
	const uint64_t *hash;      /* hash by code of the cell's source */
	const rollup_block *block; /* a cached block's dense cell: its register set `set` */
	uint32_t set;
} user_list;

static user_list user_list_of(const rollup_cell *c, const uint64_t *hash)
{
	user_list l = {1, 0, NULL, c->user_count, c->registers, hash, NULL, 0};
	if (c->user_count == 1)
		l.one = c->users.one;
	else if (c->user_count > 1)
		l.many = c->users.many;
	return l;
}

typedef struct acc {
	uint32_t bucket;
	uint32_t group;
	uint64_t count, tokens_in, tokens_out, duration_sum;
	int64_t cost;
	tally_wraps wraps;
	uint32_t duration_min, duration_max;
	uint64_t status[TALLY_STATUS_COUNT];
	dd_acc dd;
	uset users;
	/* Distinct users: the first cell's users are only remembered (most
	 * buckets of a compacted store get one cell: its count is the answer,
	 * no hashing); a second contribution hashes both into `users`. */
	user_list deferred;        /* valid while deferred.present */
	uint32_t contributions;
	uint64_t distinct;         /* set by acc_resolve_users */
} acc;

/*
 * The window of a query in one bucket (TALLY_BUCKET_NONE), grouped, in the
 * default order: its page is the `limit` first groups after its cursor, so
 * a group at or before the cursor is never built, and, once an attempt
 * stopped at the query's cells or memory limit, neither is one past the
 * bound that attempt found (window_narrow): the limit-th smallest group it
 * had built. At least `limit` groups lie at or before the bound, so the
 * page is among them; a group past it only marks the answer truncated. So
 * a page of a tenant-day of any number of groups is answered (the
 * billing export's DailyUsage pages, docs/queries.md "Windows").
 */
typedef struct query_window {
	bool bounded;
	tally_str bound[TALLY_DIM_COUNT]; /* the grouped dimensions': into bound_key */
	bytebuf bound_key;                /* an out_group key */
	bool retry;                       /* the attempt asks for another */
} query_window;

typedef struct qstate {
	tally_store *s;
	const tally_query *q;
	char *errmsg;
	query_window *window; /* NULL: not a query in one bucket, grouped, in the default order */
	int beyond;           /* a group past window->bound was met */
	int want_dd;
	int want_users;
	int ungrouped;   /* no group by, no filter: total cells answer */
	uint32_t key_dims; /* 1 << tally_dim of the dims grouped by or filtered on */
	int key_strings;   /* key_dims has a dimension of strings (not only status): a
			    * memtable's cells are read with its dictionary */
	filter_set filters;
	/* output groups */
	out_group *groups;
	uint32_t group_count, group_capacity;
	uint32_t *group_slots;
	uint32_t group_mask;
	bytebuf keys;
	/* accumulators by (bucket, group) */
	acc *accs;
	uint64_t sketch_bytes; /* the accs' sketches: dd_acc_bytes + uset_bytes */
	uint32_t acc_count, acc_capacity;
	uint32_t *acc_slots;
	uint32_t acc_mask;
	/* per output group: its accumulator in the bucket last merged (group_acc) */
	uint32_t *recent_acc;
	uint32_t *recent_bucket; /* bucket + 1, 0 = none */
	uint32_t recent_capacity;
	/* scratch key */
	bytebuf key;
	tally_result *result;
	/* the cache entries this query pinned (cache_pin) */
	section_cache **pinned;
	uint32_t pinned_count, pinned_capacity;
} qstate;


static uint64_t out_group_hash(const void *ctx, uint32_t i)
{
	return ((const qstate *)ctx)->groups[i].hash;
}

static uint64_t acc_key(uint32_t bucket, uint32_t group)
{
	return rollup_mix64(((uint64_t)bucket << 32) | group);
}

static uint64_t acc_hash(const void *ctx, uint32_t i)
{
	const acc *a = &((const qstate *)ctx)->accs[i];
	return acc_key(a->bucket, a->group);
}

static int str_compare(tally_str a, tally_str b)
{
	uint32_t n = a.len < b.len ? a.len : b.len;
	int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
	if (c)
		return c;
	return a.len < b.len ? -1 : a.len > b.len;
}

/* Group values against ref's in the default order (natural_compare's,
 * within a bucket): the grouped dimensions only. */
static int group_compare(const tally_query *q, const tally_str value[TALLY_DIM_COUNT],
			 const tally_str ref[TALLY_DIM_COUNT])
{
	for (int d = 0; d < TALLY_DIM_COUNT; d++) {
		if (!(q->group_by & (1u << d)))
			continue;
		int c = str_compare(value[d], ref[d]);
		if (c)
			return c;
	}
	return 0;
}

/* An output group's key (per grouped dimension: u32 length, bytes) as
 * values; the others empty. */
static void key_values(const tally_query *q, const char *key, tally_str value[TALLY_DIM_COUNT])
{
	memset(value, 0, sizeof(tally_str) * TALLY_DIM_COUNT);
	for (int d = 0; d < TALLY_DIM_COUNT; d++) {
		if (!(q->group_by & (1u << d)))
			continue;
		uint32_t len;
		memcpy(&len, key, sizeof(len));
		value[d] = (tally_str){key + sizeof(len), len};
		key += sizeof(len) + len;
	}
}

/*
 * The output group of an event or cell with these dimension values (by
 * enum tally_dim), or -1 when a filter rejects it or it lies outside the
 * query's window. -ENOMEM as < -1.
 */
static int64_t out_group_of(qstate *st, const tally_str value[TALLY_DIM_COUNT])
{
	const tally_query *q = st->q;
	for (int d = 0; d < TALLY_DIM_COUNT; d++)
		if (!filter_set_pass(&st->filters, d, value[d]))
			return -1;
	if (st->window) {
		if (q->after && group_compare(q, value, q->after_group) <= 0)
			return -1; /* before the page */
		if (st->window->bounded && group_compare(q, value, st->window->bound) > 0) {
			st->beyond = 1; /* after it */
			return -1;
		}
	}
	bytebuf_reset(&st->key);
	for (int d = 0; d < TALLY_DIM_COUNT; d++) {
		if (!(q->group_by & (1u << d)))
			continue;
		uint32_t len = value[d].len;
		if (bytebuf_append(&st->key, &len, sizeof(len)) ||
		    bytebuf_append(&st->key, value[d].ptr, len))
			return -ENOMEM;
	}
	uint64_t h = XXH3_64bits(st->key.data, st->key.size);
	if ((!st->group_mask || (st->group_count + 1) * 2 > st->group_mask + 1) &&
	    index_rebuild(&st->group_slots, &st->group_mask, st->group_mask ? (st->group_mask + 1) * 2 : 64,
			  st->group_count, out_group_hash, st))
		return -ENOMEM;
	uint32_t k = (uint32_t)h & st->group_mask;
	while (st->group_slots[k]) {
		const out_group *g = &st->groups[st->group_slots[k] - 1];
		if (g->hash == h && g->key_size == st->key.size &&
		    (!st->key.size || !memcmp(st->keys.data + g->key_offset, st->key.data, st->key.size)))
			return st->group_slots[k] - 1;
		k = (k + 1) & st->group_mask;
	}
	if (grow_for_one((void **)&st->groups, &st->group_capacity, st->group_count, 64,
			 sizeof(*st->groups)))
		return -ENOMEM;
	out_group *g = &st->groups[st->group_count];
	g->key_offset = (uint32_t)st->keys.size;
	g->key_size = (uint32_t)st->key.size;
	g->hash = h;
	if (bytebuf_append(&st->keys, st->key.data, st->key.size))
		return -ENOMEM;
	st->group_slots[k] = ++st->group_count;
	return st->group_count - 1;
}

/* The bytes the query has built: its accumulators with their sketches,
 * their index, the output groups, their index and keys. */
static uint64_t query_bytes(const qstate *st)
{
	return st->sketch_bytes + (uint64_t)st->acc_capacity * sizeof(acc) +
	       (st->acc_slots ? ((uint64_t)st->acc_mask + 1) * sizeof(uint32_t) : 0) +
	       (uint64_t)st->group_capacity * sizeof(out_group) +
	       (st->group_slots ? ((uint64_t)st->group_mask + 1) * sizeof(uint32_t) : 0) +
	       st->keys.capacity + (uint64_t)st->recent_capacity * 2 * sizeof(uint32_t);
}

/* TALLY_E_LIMIT once the query has built more than options.query_bytes_max. */
static int query_bytes_check(qstate *st)
{
	uint64_t bytes = query_bytes(st);
	if (bytes <= st->s->options.query_bytes_max)
		return 0;
	if (st->errmsg)
		snprintf(st->errmsg, TALLY_ERRMSG_SIZE,
			 "the answer needs more than %" PRIu64 " bytes of memory (query_bytes_max): "
			 "use coarser buckets, fewer group-by dimensions, filters, or fewer "
			 "quantiles and no distinct users",
			 (uint64_t)st->s->options.query_bytes_max);
	return TALLY_E_LIMIT;
}

static uint64_t acc_sketch_bytes(const acc *a)
{
	return dd_acc_bytes(&a->dd) + uset_bytes(&a->users);
}

/* Counts a's sketches' growth since they held `before` bytes (they never
 * shrink), and checks the query's memory. */
static int acc_sketches_grew(qstate *st, const acc *a, uint64_t before)
{
	uint64_t now = acc_sketch_bytes(a);
	if (now == before)
		return 0;
	st->sketch_bytes += now - before;
	return query_bytes_check(st);
}

static int acc_get(qstate *st, uint32_t bucket, uint32_t group, acc **out)
{
	if ((!st->acc_mask || (st->acc_count + 1) * 2 > st->acc_mask + 1) &&
	    index_rebuild(&st->acc_slots, &st->acc_mask, st->acc_mask ? (st->acc_mask + 1) * 2 : 64,
			  st->acc_count, acc_hash, st))
		return -ENOMEM;
	uint32_t k = (uint32_t)acc_key(bucket, group) & st->acc_mask;
	while (st->acc_slots[k]) {
		acc *a = &st->accs[st->acc_slots[k] - 1];
		if (a->bucket == bucket && a->group == group) {
			*out = a;
			return 0;
		}
		k = (k + 1) & st->acc_mask;
	}
	if (st->acc_count == st->s->query_cells_max) {
		if (st->errmsg)
			snprintf(st->errmsg, TALLY_ERRMSG_SIZE,
				 "the answer holds more than %u (bucket, group) rows before its limit: "
				 "use coarser buckets, fewer group-by dimensions or filters",
				 (unsigned)st->s->query_cells_max);
		return TALLY_E_LIMIT;
	}
	int rc = query_bytes_check(st);
	if (rc)
		return rc;
	if (grow_for_one((void **)&st->accs, &st->acc_capacity, st->acc_count, 64, sizeof(*st->accs)))
		return -ENOMEM;
	acc *a = &st->accs[st->acc_count];
	memset(a, 0, sizeof(*a));
	a->bucket = bucket;
	a->group = group;
	st->acc_slots[k] = ++st->acc_count;
	*out = a;
	return 0;
}

/* Adds a cell's (or an event's) numbers; w: its sums' wraps, or NULL. */
static void acc_numbers(acc *a, uint64_t count, uint64_t tin, uint64_t tout, int64_t cost,
			uint64_t dsum, const tally_wraps *w, uint32_t dmin, uint32_t dmax, int status)
{
	static const tally_wraps none;
	if (!w)
		w = &none;
	if (!a->count || dmin < a->duration_min)
		a->duration_min = dmin;
	if (!a->count || dmax > a->duration_max)
		a->duration_max = dmax;
	a->count += count;
	sum_add_u64(&a->tokens_in, &a->wraps.tokens_in, tin, w->tokens_in);
	sum_add_u64(&a->tokens_out, &a->wraps.tokens_out, tout, w->tokens_out);
	sum_add_i64(&a->cost, &a->wraps.cost_micros, cost, w->cost_micros);
	sum_add_u64(&a->duration_sum, &a->wraps.duration_ms_sum, dsum, w->duration_ms_sum);
	if (status >= 0)
		a->status[status] += count;
}

/*
 * Merges a cell whose users are codes with hashes in user_hash. stamp
 * (one entry per user code of the source, or NULL) remembers the last
 * accumulator each code went into: a user seen in many cells of one
 * bucket is hashed into the set once per source, not once per cell.
 */
/* Hashes a cell's users into a. */
static int acc_hash_users(qstate *st, acc *a, const user_list *l, uint32_t *stamp)
{
	uint64_t before = acc_sketch_bytes(a);
	int rc = 0;
	if (l->registers) {
		rc = uset_add_registers(&a->users, l->registers);
	} else {
		const uint32_t *users = l->count == 1 ? &l->one : l->many;
		uint32_t mark = (uint32_t)(a - st->accs) + 1;
		for (uint32_t k = 0; k < l->count && !rc; k++) {
			if (stamp) {
				if (stamp[users[k]] == mark)
					continue;
				stamp[users[k]] = mark;
			}
			rc = uset_add(&a->users, l->hash[users[k]]);
		}
	}
	return rc ? rc : acc_sketches_grew(st, a, before);
}

/* Adds n histogram entries (DD_ENTRY form). */
static int acc_dd(qstate *st, acc *a, const uint64_t *dd, uint32_t n)
{
	dd_acc *d = &a->dd;
	int rc = 0;
	for (uint32_t k = 0; k < n && !rc; k++) {
		uint32_t index = DD_ENTRY_INDEX(dd[k]);
		uint64_t count = DD_ENTRY_COUNT(dd[k]);
		if (index >= d->lo && index < d->hi) { /* the usual case, inline */
			d->counts[index - d->lo] += count;
			d->total += count;
		} else {
			uint64_t before = acc_sketch_bytes(a);
			if (!(rc = dd_acc_add(d, (uint16_t)index, count)))
				rc = acc_sketches_grew(st, a, before);
		}
	}
	return rc;
}

/* Adds a cell's users: the first contribution is only remembered. */
static int acc_users(qstate *st, acc *a, const user_list *l, uint32_t *stamp)
{
	if (!l->count && !l->registers)
		return 0;
	if (a->contributions++ == 0) {
		a->deferred = *l;
		return 0;
	}
	int rc = 0;
	if (a->deferred.present) {
		rc = acc_hash_users(st, a, &a->deferred, NULL);
		a->deferred.present = 0;
	}
	return rc ? rc : acc_hash_users(st, a, l, stamp);
}

/* Adds the count by status of a total cell (other[k]: status k + 1). */
static void acc_total_status(acc *a, uint64_t count, const uint64_t other[3])
{
	uint64_t sum = 0;
	for (int k = 0; k < 3; k++) {
		a->status[k + 1] += other[k];
		sum += other[k];
	}
	a->status[TALLY_STATUS_OK] += count - sum;
}

static int acc_cell(qstate *st, acc *a, const rollup *r, const rollup_cell *c, int status,
		    uint32_t *stamp)
{
	acc_numbers(a, c->count, c->tokens_in, c->tokens_out, c->cost, c->duration_sum,
		    rollup_cell_wraps(r, c), c->duration_min, c->duration_max,
		    status == ROLLUP_STATUS_ALL ? -1 : status);
	if (status == ROLLUP_STATUS_ALL)
		acc_total_status(a, c->count, c->status_other);
	int rc = 0;
	if (st->want_dd)
		rc = acc_dd(st, a, cell_dd(c), c->dd_count);
	if (st->want_users && !rc) {
		user_list l = user_list_of(c, r->user_hash);
		rc = acc_users(st, a, &l, stamp);
	}
	return rc;
}

/* Before a memtable's rollup_lock is let go: the users deferred into its
 * cells are hashed into their accs' sets (the cells may move once the
 * rollup grows). The estimate is the one the deferred cell would give:
 * an exact set counts the cell's distinct codes, a dense one its registers. */
static int acc_settle_users(qstate *st)
{
	int rc = 0;
	for (uint32_t i = 0; i < st->acc_count && !rc; i++) {
		acc *a = &st->accs[i];
		if (a->deferred.present) {
			rc = acc_hash_users(st, a, &a->deferred, NULL);
			a->deferred.present = 0;
		}
	}
	return rc;
}

/* While the sources are still held: the distinct users of every acc. */
static void acc_resolve_users(qstate *st)
{
	for (uint32_t i = 0; i < st->acc_count; i++) {
		acc *a = &st->accs[i];
		const user_list *l = &a->deferred;
		if (l->present) {
			if (!l->registers)
				a->distinct = l->count;
			else if (l->block)
				a->distinct = rollup_block_dense_users(l->block, l->set);
			else
				a->distinct = (uint64_t)llround(hll_estimate(l->registers));
			a->deferred.present = 0;
		} else {
			a->distinct = uset_estimate(&a->users);
		}
	}
}

/* ---- sources ---------------------------------------------------------------------- */

/*
 * A source's group table as the query sees it. Its groups differ in all
 * five dimensions, a query's output groups only in those it groups by; and
 * only those and the filtered ones decide a group's fate. So the source's
 * groups are first projected to those dimensions' codes (proj: one entry
 * per distinct projection, in the source's own code space), and only a new
 * projection pays for the strings, their hash and the output group table
 * (out_group_of): a source with 300 groups of 8 agents, asked by agent,
 * looks up 8 keys, not 300.
 */
typedef struct proj_entry {
	rollup_group key; /* codes and status of the dims in st->key_dims, 0 for the others */
	int64_t out;      /* output group, -1 filtered out */
} proj_entry;

typedef struct source_groups {
	const rollup_group *groups;
	uint32_t count;
	uint32_t *map;                /* 0 not yet known, 1 filtered out, else output group + 2 */
	uint32_t *stamp;              /* distinct users: see acc_cell; NULL when not asked */
	const strdict *dict[ROLLUP_GROUP_DIMS]; /* strings of each code slot */
	proj_entry *proj;
	uint32_t proj_count, proj_capacity;
	uint32_t *proj_slots;
	uint32_t proj_mask;
} source_groups;

static uint64_t proj_hash(const void *ctx, uint32_t i)
{
	return rollup_group_hash(&((const source_groups *)ctx)->proj[i].key);
}

/* The output group of a group projected to key, or < -1 for out of
 * memory. */
static int64_t proj_out(qstate *st, source_groups *sg, const rollup_group *key)
{
	if ((!sg->proj_mask || (sg->proj_count + 1) * 2 > sg->proj_mask + 1) &&
	    index_rebuild(&sg->proj_slots, &sg->proj_mask, sg->proj_mask ? (sg->proj_mask + 1) * 2 : 16,
			  sg->proj_count, proj_hash, sg))
		return -ENOMEM;
	uint32_t k = (uint32_t)rollup_group_hash(key) & sg->proj_mask;
	while (sg->proj_slots[k]) {
		const proj_entry *e = &sg->proj[sg->proj_slots[k] - 1];
		if (rollup_group_equal(&e->key, key))
			return e->out;
		k = (k + 1) & sg->proj_mask;
	}
	tally_str value[TALLY_DIM_COUNT];
	memset(value, 0, sizeof(value));
	for (int d = 0; d < TALLY_DIM_COUNT; d++) {
		if (!(st->key_dims & (1u << d)))
			continue; /* neither grouped nor filtered: its value does not matter */
		if (d == TALLY_DIM_STATUS) {
			const char *name = STATUS_NAMES[key->status];
			value[d] = (tally_str){name, (uint32_t)strlen(name)};
		} else {
			int slot = DIM_TO_CODE[d];
			assert(key->code[slot] < sg->dict[slot]->count); /* the copy holds it */
			value[d] = strdict_get(sg->dict[slot], key->code[slot]);
		}
	}
	int64_t out = out_group_of(st, value);
	if (out < -1)
		return out;
	if (grow_for_one((void **)&sg->proj, &sg->proj_capacity, sg->proj_count, 16, sizeof(*sg->proj)))
		return -ENOMEM;
	sg->proj[sg->proj_count] = (proj_entry){*key, out};
	sg->proj_slots[k] = ++sg->proj_count;
	return out;
}

static int64_t source_group(qstate *st, source_groups *sg, uint32_t g)
{
	if (sg->map[g])
		return (int64_t)sg->map[g] - 2; /* -1: filtered out */
	const rollup_group *gr = &sg->groups[g];
	int64_t out;
	if (gr->status == ROLLUP_STATUS_ALL) { /* the total: only for ungrouped queries */
		tally_str value[TALLY_DIM_COUNT];
		memset(value, 0, sizeof(value));
		out = st->ungrouped ? out_group_of(st, value) : -1;
	} else {
		rollup_group key;
		memset(&key, 0, sizeof(key));
		for (int c = 0; c < ROLLUP_GROUP_DIMS; c++)
			if (st->key_dims & (1u << CODE_TO_DIM[c]))
				key.code[c] = gr->code[c];
		if (st->key_dims & (1u << TALLY_DIM_STATUS))
			key.status = gr->status;
		out = proj_out(st, sg, &key);
	}
	if (out < -1) /* out of memory: not remembered */
		return out;
	sg->map[g] = (uint32_t)(out + 2);
	return out;
}

static void source_groups_free(source_groups *sg)
{
	free(sg->map);
	free(sg->stamp);
	free(sg->proj);
	free(sg->proj_slots);
	memset(sg, 0, sizeof(*sg));
}

/* The accumulator of (output bucket, output group): each output group
 * remembers its accumulator in the bucket it was last used in (queries
 * merge bucket by bucket), so a cell rarely pays acc_get's hash. */
static int group_acc(qstate *st, uint32_t target, uint32_t bucket, acc **out)
{
	if (target < st->recent_capacity && st->recent_bucket[target] == bucket + 1) {
		*out = &st->accs[st->recent_acc[target]];
		return 0;
	}
	int rc = acc_get(st, bucket, target, out);
	if (rc)
		return rc;
	if (target >= st->recent_capacity) {
		uint32_t capacity = st->recent_capacity ? st->recent_capacity : 64;
		while (capacity <= target)
			capacity *= 2;
		uint32_t *b = realloc(st->recent_bucket, sizeof(*b) * capacity);
		if (b)
			st->recent_bucket = b;
		uint32_t *a = b ? realloc(st->recent_acc, sizeof(*a) * capacity) : NULL;
		if (!a)
			return 0; /* the cache is only an optimisation */
		st->recent_acc = a;
		memset(st->recent_bucket + st->recent_capacity, 0,
		       sizeof(*b) * (capacity - st->recent_capacity));
		st->recent_capacity = capacity;
	}
	st->recent_bucket[target] = bucket + 1;
	st->recent_acc[target] = (uint32_t)(*out - st->accs);
	return 0;
}

/* user_codes: how many user codes the source has (stamps), 0 for none. */
static int source_groups_init(source_groups *sg, const rollup_group *groups, uint32_t count,
			      const strdict *const dict[ROLLUP_GROUP_DIMS], uint32_t user_codes)
{
	memset(sg, 0, sizeof(*sg));
	sg->groups = groups;
	sg->count = count;
	sg->map = calloc((size_t)count + 1, sizeof(*sg->map)); /* zero pages: lazy */
	if (!sg->map)
		return -ENOMEM;
	if (user_codes && !(sg->stamp = calloc(user_codes, sizeof(*sg->stamp)))) {
		source_groups_free(sg);
		return -ENOMEM;
	}
	for (int k = 0; k < ROLLUP_GROUP_DIMS; k++)
		sg->dict[k] = dict[k];
	return 0;
}

/* One piece of the plan: cells of resolution res (or raw events when res
 * is -1) for [from, to), counted in output bucket `bucket`. */
typedef struct piece {
	int64_t from, to;
	uint32_t bucket;
	int res;
} piece;

typedef struct plan {
	piece *pieces;
	uint32_t count, capacity;
	int raw; /* holds raw pieces (res -1) */
} plan;

static int plan_add(plan *p, int res, int64_t from, int64_t to, uint32_t bucket)
{
	if (from >= to)
		return 0;
	if (grow_for_one((void **)&p->pieces, &p->capacity, p->count, 64, sizeof(*p->pieces)))
		return -ENOMEM;
	p->pieces[p->count++] = (piece){from, to, bucket, res};
	return 0;
}

/*
 * Covers [a, e) of output bucket b with the whole cells of resolution res
 * that fit, and the two edges left with finer ones (res - 1); below minutes,
 * and for minutes before minute_from, with raw events.
 */
static int plan_cover(plan *p, int res, int64_t a, int64_t e, uint32_t b, int64_t minute_from)
{
	if (a >= e)
		return 0;
	if (res < 0) {
		p->raw = 1;
		return plan_add(p, -1, a, e, b);
	}
	int64_t unit = ROLLUP_RES_US[res];
	int64_t first = ceil_div(a, unit), end = floor_div(e, unit);
	if (res == RES_MINUTE && first < ceil_div(minute_from, unit))
		first = ceil_div(minute_from, unit);
	if (first >= end)
		return plan_cover(p, res - 1, a, e, b, minute_from);
	int rc;
	if ((rc = plan_add(p, res, first * unit, end * unit, b)) ||
	    (rc = plan_cover(p, res - 1, a, first * unit, b, minute_from)))
		return rc;
	return plan_cover(p, res - 1, end * unit, e, b, minute_from);
}

/* ---- raw events --------------------------------------------------------------------- */

typedef struct raw_ctx {
	qstate *st;
	const piece *pieces; /* raw pieces of this scan, sorted by from */
	uint32_t count;
	/* Rows of one memtable only (its one code space, sg.dict): their
	 * projections (source_group's proj). A scan of segment rows passes
	 * each section's dictionary at one reused address, so it cannot be
	 * told by its pointer: there sg.dict[0] is NULL and each row pays
	 * out_group_of. */
	source_groups sg;
} raw_ctx;

/* The output group of row i. */
static int64_t raw_group(raw_ctx *rc, const rows *r, const strdict *const dict[DIM_COUNT], uint32_t i)
{
	source_groups *sg = &rc->sg;
	if (!sg->dict[0]) {
		tally_str value[TALLY_DIM_COUNT];
		value[TALLY_DIM_PROJECT] = strdict_get(dict[DIM_PROJECT], r->dim[DIM_PROJECT][i]);
		value[TALLY_DIM_AGENT] = strdict_get(dict[DIM_AGENT], r->dim[DIM_AGENT][i]);
		value[TALLY_DIM_MODEL] = strdict_get(dict[DIM_MODEL], r->dim[DIM_MODEL][i]);
		value[TALLY_DIM_TYPE] = strdict_get(dict[DIM_TYPE], r->dim[DIM_TYPE][i]);
		const char *status = STATUS_NAMES[r->status[i] < TALLY_STATUS_COUNT ? r->status[i] : 0];
		value[TALLY_DIM_STATUS] = (tally_str){status, (uint32_t)strlen(status)};
		return out_group_of(rc->st, value);
	}
	rollup_group key;
	memset(&key, 0, sizeof(key));
	for (int c = 0; c < ROLLUP_GROUP_DIMS; c++)
		if (rc->st->key_dims & (1u << CODE_TO_DIM[c]))
			key.code[c] = r->dim[CODE_TO_SEGDIM[c]][i];
	if (rc->st->key_dims & (1u << TALLY_DIM_STATUS))
		key.status = r->status[i] < TALLY_STATUS_COUNT ? r->status[i] : 0;
	return proj_out(rc->st, sg, &key);
}

static int raw_row(void *ctx, const rows *r, const strdict *const dict[DIM_COUNT], uint32_t i)
{
	raw_ctx *rc = ctx;
	qstate *st = rc->st;
	int64_t t = r->time_us[i];
	/* The piece holding t (pieces are disjoint and sorted). */
	uint32_t lo = 0, hi = rc->count;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (rc->pieces[mid].to <= t)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == rc->count || rc->pieces[lo].from > t)
		return 0;
	int64_t g = raw_group(rc, r, dict, i);
	if (g == -1)
		return 0;
	if (g < 0)
		return (int)g;
	acc *a;
	int err = acc_get(st, rc->pieces[lo].bucket, (uint32_t)g, &a);
	if (err)
		return err;
	uint32_t d = r->duration_ms[i];
	acc_numbers(a, 1, r->tokens_in[i], r->tokens_out[i], r->cost_micros[i], d, NULL, d, d,
		    r->status[i]);
	if (st->want_dd) {
		uint64_t before = acc_sketch_bytes(a);
		if ((err = dd_acc_add(&a->dd, dd_index(d), 1)) ||
		    (err = acc_sketches_grew(st, a, before)))
			return err;
	}
	if (st->want_users) {
		tally_str u = strdict_get(dict[DIM_USER], r->dim[DIM_USER][i]);
		if (u.len) {
			if (a->deferred.present) {
				if ((err = acc_hash_users(st, a, &a->deferred, NULL)))
					return err;
				a->deferred.present = 0;
			}
			a->contributions += 2; /* never deferred from now on */
			uint64_t before = acc_sketch_bytes(a);
			if ((err = uset_add(&a->users, sketch_user_hash(u.ptr, u.len))) ||
			    (err = acc_sketches_grew(st, a, before)))
				return err;
		}
	}
	return 0;
}

static int piece_from_compare(const void *x, const void *y)
{
	const piece *a = x, *b = y;
	return a->from < b->from ? -1 : a->from > b->from;
}

/* The raw pieces (res -1) of p, sorted by from, into *raw (empty on entry).
 * 0 or -ENOMEM. */
static int raw_pieces(const plan *p, plan *raw)
{
	int rc = 0;
	for (uint32_t i = 0; i < p->count && !rc; i++)
		if (p->pieces[i].res < 0)
			rc = plan_add(raw, -1, p->pieces[i].from, p->pieces[i].to, p->pieces[i].bucket);
	if (raw->count)
		qsort(raw->pieces, raw->count, sizeof(*raw->pieces), piece_from_compare);
	return rc;
}

/* Where run_raw reads: rows [0, row_count) of one pinned memtable (mt not
 * NULL; with locked, an active one, a step per hold of its store lock; else
 * a frozen one, without it), or tenant_id's sections of the pinned
 * files[0, file_count) (without the store lock). */
typedef struct raw_source {
	memtable *mt;
	uint32_t row_count;
	tally_store *locked;
	segment_file *const *files;
	uint32_t file_count;
	uint32_t tenant_id;
} raw_source;

/* Rows [row_from, row_to) of a pinned memtable through fn: with locked,
 * an active one's, a step per hold of locked's store lock; else a frozen
 * one's, which never change. */
static int memtable_rows(tally_store *locked, memtable *mt, uint32_t row_from, uint32_t row_to,
			 int64_t from, int64_t to, store_rows_fn fn, void *ctx, uint64_t *rows_read)
{
	return locked ? store_scan_pinned_rows(locked, mt, row_from, row_to, from, to, NULL, fn, ctx,
					       rows_read)
		      : store_scan_memtable_range(mt, row_from, row_to, from, to, NULL, fn, ctx,
						  rows_read);
}

/* The raw events of the raw pieces of p (raw_pieces) in one source, pieces
 * closer than RAW_MERGE_GAP_US sharing one scan. */
static int run_raw(qstate *st, const plan *p, const raw_source *src, uint64_t *rows_read)
{
	int rc = 0;
	for (uint32_t i = 0; i < p->count && !rc;) {
		uint32_t j = i + 1;
		while (j < p->count && p->pieces[j].from - p->pieces[j - 1].to < RAW_MERGE_GAP_US)
			j++;
		raw_ctx ctx = {st, p->pieces + i, j - i, {0}};
		int64_t from = p->pieces[i].from, to = p->pieces[j - 1].to;
		rc = src->mt ? memtable_rows(src->locked, src->mt, 0, src->row_count, from, to, raw_row,
					     &ctx, rows_read)
			     : store_scan_file_rows(st->s, src->files, src->file_count,
						    src->tenant_id, from, to, NULL, raw_row, &ctx,
						    rows_read, st->errmsg);
		source_groups_free(&ctx.sg);
		i = j;
	}
	return rc;
}

/* Rows [from_row, to_row) of a pinned memtable (with locked, an active
 * one: memtable_rows), each added to the bucket of the cell piece its time
 * falls in (rows in raw pieces are run_raw's). */
static int merge_memtable_rows(qstate *st, tally_store *locked, memtable *mt,
			       uint32_t from_row, uint32_t to_row, const plan *p,
			       uint64_t *rows_read)
{
	piece *cells = malloc(sizeof(*cells) * (p->count ? p->count : 1));
	if (!cells)
		return -ENOMEM;
	uint32_t n = 0;
	for (uint32_t k = 0; k < p->count; k++)
		if (p->pieces[k].res >= 0)
			cells[n++] = p->pieces[k];
	qsort(cells, n, sizeof(*cells), piece_from_compare);
	raw_ctx ctx = {st, cells, n, {0}};
	for (int c = 0; c < ROLLUP_GROUP_DIMS; c++)
		ctx.sg.dict[c] = &mt->dict;
	int rc = 0;
	if (n)
		rc = memtable_rows(locked, mt, from_row, to_row, INT64_MIN, INT64_MAX, raw_row, &ctx,
				   rows_read);
	else
		*rows_read += to_row - from_row;
	source_groups_free(&ctx.sg);
	free(cells);
	return rc;
}

/* ---- cells -------------------------------------------------------------------------- */

static int merge_block(qstate *st, const rollup_block *b, source_groups *sg, const piece *pc,
		       const uint64_t *user_hash, uint64_t *cells)
{
	int64_t lo = floor_div(pc->from, ROLLUP_RES_US[pc->res]);
	int64_t hi = floor_div(pc->to, ROLLUP_RES_US[pc->res]);
	int has_total = b->group_count && b->groups[0].status == ROLLUP_STATUS_ALL;
	int rc = 0;
	int sketches = st->want_dd || st->want_users;
	for (uint32_t i = rollup_block_lower_bound(b, lo); i < b->cell_count && b->bucket[i] < hi && !rc;
	     i++) {
		uint32_t group = b->group[i];
		int64_t g = source_group(st, sg, group);
		if (g == -1)
			continue;
		if (g < 0)
			return (int)g;
		acc *a;
		if ((rc = group_acc(st, (uint32_t)g, pc->bucket, &a)))
			break;
		/* A total cell, or a projection's: its count by status is in
		 * status_other. */
		int mixed = b->mixed_status || sg->groups[group].status == ROLLUP_STATUS_ALL;
		(*cells)++;
		/* Straight from the columns: no cell structure is built. */
		acc_numbers(a, b->count[i], b->tokens_in[i], b->tokens_out[i], b->cost[i],
			    b->duration_sum[i], b->wraps ? &b->wraps[i] : NULL, b->duration_min[i],
			    b->duration_max[i],
			    mixed ? -1 : sg->groups[group].status);
		if (mixed)
			acc_total_status(a, b->count[i], &b->status_other[3 * (size_t)i]);
		if (sketches) {
			const uint32_t *ix = b->sketch_index;
			uint32_t n = b->cell_count;
			if (st->want_dd)
				rc = acc_dd(st, a, b->dd_arena + ix[n + i], ix[i]);
			if (st->want_users && !rc) {
				user_list l = {1, 0, NULL, 0, NULL, user_hash, NULL, 0};
				if (ix[2 * n + i] == ROLLUP_DENSE) {
					l.registers = b->register_arena + (size_t)HLL_REGISTERS * ix[3 * n + i];
					l.block = b;
					l.set = ix[3 * n + i];
				} else {
					l.count = ix[2 * n + i];
					l.many = b->user_arena + ix[3 * n + i];
					if (l.count == 1)
						l.one = l.many[0];
				}
				rc = acc_users(st, a, &l, sg->stamp);
			}
		}
		/* A total cell (first of its bucket) answers an ungrouped query
		 * for the whole bucket. */
		if (has_total && group == 0 && st->ungrouped)
			while (i + 1 < b->cell_count && b->bucket[i + 1] == b->bucket[i])
				i++;
	}
	return rc;
}

static int merge_live(qstate *st, const rollup *r, source_groups *sg, const piece *pc,
		      uint64_t *cells)
{
	int64_t lo = floor_div(pc->from, ROLLUP_RES_US[pc->res]);
	int64_t hi = floor_div(pc->to, ROLLUP_RES_US[pc->res]);
	int rc = 0;
	for (int64_t bucket = lo; bucket < hi && !rc; bucket++) {
		const rollup_cell *c = NULL;
		if (st->ungrouped && pc->res >= ROLLUP_ALL_RES_MIN)
			c = rollup_find(r, pc->res, bucket, ROLLUP_GROUP_ALL);
		int total = c != NULL;
		if (!c)
			c = rollup_bucket_first(r, pc->res, bucket);
		for (; c && !rc; c = total ? NULL : rollup_next(r, pc->res, c)) {
			int64_t g = source_group(st, sg, c->group);
			if (g == -1)
				continue;
			if (g < 0)
				return (int)g;
			acc *a;
			if (!(rc = group_acc(st, (uint32_t)g, pc->bucket, &a)))
				rc = acc_cell(st, a, r, c, sg->groups[c->group].status, sg->stamp);
			(*cells)++;
		}
	}
	return rc;
}

/*
 * Under mt->rollup_lock (and the store lock for an active memtable): gets
 * the rollup ready to read and returns the first row it does not hold.
 * The rollup thread adds rows to the rollup behind ingest, so the rollup
 * has rows [0, rolled): those come from its cells, the rest from the rows
 * themselves (about 50 ns a row, a tenth of rolling it up). A rollup that
 * is due (store_rollup_due: far behind, or no rollup thread) is brought up
 * to date here first (the caller counts its growth); for an active
 * memtable that is only what was ingested since store_query_catch_up
 * rolled up the rest without the store lock. A failed rollup (memory ran
 * out) is not read: all its rows are (0).
 */
static uint32_t memtable_rollup_ready(const qstate *st, memtable *mt)
{
	if (store_rollup_due(st->s, mt))
		memtable_rollup_catch_up(mt, UINT32_MAX); /* failing marks the rollup failed */
	return mt->rollup_failed ? 0 : mt->rolled;
}

/* Under mt->rollup_lock: the cells of mt's rollup inside the plan's
 * pieces, their groups' strings from dict (mt's own, or a copy of its
 * codes for an active memtable read without the store lock). */
static int merge_memtable_cells(qstate *st, const memtable *mt, const strdict *dict,
				const plan *p, tally_result *stats)
{
	if (mt->rollup_failed)
		return 0;
	const rollup *ru = &mt->rollup;
	source_groups sg;
	const strdict *dicts[ROLLUP_GROUP_DIMS];
	for (int c = 0; c < ROLLUP_GROUP_DIMS; c++)
		dicts[c] = dict;
	int rc = source_groups_init(&sg, ru->groups, ru->group_count, dicts,
				    st->want_users ? ru->user_hash_count : 0);
	for (uint32_t k = 0; k < p->count && !rc; k++) {
		const piece *pc = &p->pieces[k];
		if (pc->res < 0)
			continue;
		uint64_t *cells = pc->res == RES_DAY    ? &stats->cells_day
				  : pc->res == RES_HOUR ? &stats->cells_hour
							: &stats->cells_minute;
		rc = merge_live(st, ru, &sg, pc, cells);
	}
	source_groups_free(&sg);
	return rc;
}

/*
 * Under mt->rollup_lock, without the store lock: a frozen memtable's part
 * of the cell pieces (its rows and dictionary never change). The users
 * deferred into its cells are hashed before it returns (acc_settle_users):
 * once rollup_lock is let go the rollup may grow.
 */
static int merge_memtable(qstate *st, memtable *mt, const plan *p, tally_result *stats)
{
	uint32_t from_row = memtable_rollup_ready(st, mt);
	int rc = merge_memtable_cells(st, mt, &mt->dict, p, stats);
	if (!rc && from_row < mt->rows.count)
		rc = merge_memtable_rows(st, NULL, mt, from_row, mt->rows.count, p, &stats->raw_rows);
	if (!rc && st->want_users)
		rc = acc_settle_users(st);
	return rc;
}

/* One segment file's section of the tenant, as a query source. */
typedef struct file_source {
	tally_store *s;
	const segment_file *f;
	uint32_t ti;
	const seg_tenant *sec;
	section_cache *e;
	source_groups sg; /* initialised on first use */
	tally_result *stats;
	source_groups psg; /* the key table's groups (file_key_table), on first use */
} file_source;

/* The cache entry of (file, tenant), added if new, pinned until
 * cache_unpin_all: no eviction or forgetting frees it meanwhile. */
static int cache_pin(qstate *st, uint64_t file_id, uint32_t tenant_id, section_cache **out)
{
	if (grow_for_one((void **)&st->pinned, &st->pinned_capacity, st->pinned_count, 16,
			 sizeof(*st->pinned)))
		return -ENOMEM;
	cache_lock(st->s);
	int rc = cache_get(st->s, file_id, tenant_id, out);
	if (!rc) {
		(*out)->pins++;
		st->pinned[st->pinned_count++] = *out;
	}
	cache_unlock(st->s);
	return rc;
}

/* Lets go of the entries the query pinned; then, if the cache holds more
 * than its limit, evicts down to half of it. */
static void cache_unpin_all(qstate *st)
{
	tally_store *s = st->s;
	cache_lock(s);
	for (uint32_t i = 0; i < st->pinned_count; i++) {
		assert(st->pinned[i]->pins > 0);
		st->pinned[i]->pins--;
	}
	st->pinned_count = 0;
	if (s->query_cache && s->query_cache->bytes > s->options.query_cache_bytes_max)
		cache_shrink(s->query_cache, s->options.query_cache_bytes_max / 2, NULL, 0);
	cache_unlock(s);
}

/* Readies the source: cache entry, dictionary, group table, group map. */
static int file_ready(qstate *st, file_source *fs, char *errmsg)
{
	int rc = 0;
	if (!fs->e && ((rc = cache_pin(st, fs->f->file_id, fs->sec->tenant_id, &fs->e)) ||
		       (rc = section_dict(fs->s, fs->f, fs->ti, fs->e, errmsg))))
		return rc;
	if (st->want_users && (rc = section_user_hash(fs->s, fs->e)))
		return rc;
	if ((rc = section_groups(fs->s, fs->f, fs->ti, fs->e, errmsg)))
		return rc;
	if (!fs->sg.map) {
		const strdict *dict[ROLLUP_GROUP_DIMS];
		for (int c = 0; c < ROLLUP_GROUP_DIMS; c++)
			dict[c] = &fs->e->dict[CODE_TO_SEGDIM[c]];
		rc = source_groups_init(&fs->sg, fs->e->groups, fs->e->group_count, dict,
					st->want_users ? fs->e->dict[DIM_USER].count : 0);
	}
	return rc;
}

/* Index (section-local) of the first chunk of a list that may hold bucket
 * or later ones: the last chunk starting at or before bucket, else the
 * first. */
static uint32_t chunk_at(const file_source *fs, int list, int64_t bucket)
{
	const seg_chunk *c = &fs->f->chunks[fs->sec->first_chunk[list]];
	uint32_t lo = 0, hi = fs->sec->chunk_count[list];
	while (lo < hi) { /* first chunk starting after bucket */
		uint32_t mid = (lo + hi) / 2;
		if (c[mid].first_bucket <= bucket)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (lo ? lo - 1 : 0) + fs->sec->first_chunk[list] - fs->sec->first_chunk[0];
}

/* The projection key (section_projection) a query merges hour and day
 * chunks through: the code slots and status it groups by or filters on;
 * PROJECTION_ALL (none) when it keeps them all, or counts distinct users
 * (a projection carries no users). */
static uint32_t query_projection_key(const qstate *st)
{
	if (st->want_users)
		return PROJECTION_ALL;
	uint32_t key = 0;
	for (int c = 0; c < ROLLUP_GROUP_DIMS; c++)
		if (st->key_dims & (1u << CODE_TO_DIM[c]))
			key |= 1u << c;
	if (st->key_dims & (1u << TALLY_DIM_STATUS))
		key |= PROJECTION_STATUS;
	return key;
}

/* The key table a query merges the source's day chunks through, or NULL
 * (none worth it: the chunks' own cells are merged). */
static int file_key_table(qstate *st, file_source *fs, const key_table **out)
{
	*out = NULL;
	uint32_t key = query_projection_key(st);
	if (key == PROJECTION_ALL)
		return 0;
	const key_table *kt;
	int rc = section_key_table(fs->s, fs->e, key, &kt);
	if (rc || !kt->worth)
		return rc;
	if (!fs->psg.map) {
		const strdict *dict[ROLLUP_GROUP_DIMS];
		for (int c = 0; c < ROLLUP_GROUP_DIMS; c++)
			dict[c] = fs->sg.dict[c];
		if ((rc = source_groups_init(&fs->psg, kt->groups, kt->count, dict, 0)))
			return rc;
	}
	*out = kt;
	return 0;
}

/* Merges the source's cells of a chunk list inside piece pc. */
static int merge_file_cells(qstate *st, file_source *fs, int list, const piece *pc, char *errmsg)
{
	if (!fs->sec->chunk_count[list])
		return 0;
	int res = list == LIST_DAY_TOTAL ? RES_DAY : list;
	int rc = file_ready(st, fs, errmsg);
	uint64_t *cells = res == RES_DAY    ? &fs->stats->cells_day
			  : res == RES_HOUR ? &fs->stats->cells_hour
					    : &fs->stats->cells_minute;
	piece one = *pc;
	one.res = res;
	int64_t lo = floor_div(pc->from, ROLLUP_RES_US[res]), hi = floor_div(pc->to, ROLLUP_RES_US[res]);
	uint32_t end = fs->sec->first_chunk[list] + fs->sec->chunk_count[list] - fs->sec->first_chunk[0];
	const key_table *kt = NULL;
	if (!rc && list == LIST_DAY)
		rc = file_key_table(st, fs, &kt);
	for (uint32_t k = chunk_at(fs, list, lo); k < end && !rc; k++) {
		if (fs->f->chunks[fs->sec->first_chunk[0] + k].first_bucket >= hi)
			break;
		const rollup_block *projected;
		if (kt) {
			if (!(rc = section_projection(fs->s, fs->f, fs->ti, fs->e, k, kt, &projected, errmsg)))
				rc = merge_block(st, projected, &fs->psg, &one, NULL, cells);
		} else if (!(rc = section_chunk(fs->s, fs->f, fs->ti, fs->e, k, st->want_dd || st->want_users,
					      errmsg)))
			rc = merge_block(st, &fs->e->chunks[k], &fs->sg, &one, fs->e->user_hash, cells);
	}
	return rc;
}

/* Does the source's list (day cells or day totals) hold day d? */
static int file_has_day(qstate *st, file_source *fs, int list, int64_t d, int *has, char *errmsg)
{
	*has = 0;
	if (!fs->sec->chunk_count[list])
		return 0;
	int rc = file_ready(st, fs, errmsg);
	uint32_t k = chunk_at(fs, list, d);
	if (!rc)
		rc = section_chunk(fs->s, fs->f, fs->ti, fs->e, k, st->want_dd || st->want_users, errmsg);
	if (!rc) {
		const rollup_block *b = &fs->e->chunks[k];
		uint32_t i = rollup_block_lower_bound(b, d);
		*has = i < b->cell_count && b->bucket[i] == d;
	}
	return rc;
}

/* ---- results ------------------------------------------------------------------------ */

typedef struct bucket_span {
	int64_t start, end;
} bucket_span;

typedef struct result_impl {
	tally_result pub;
	char *arena;
} result_impl;

void tally_result_free(tally_result *r)
{
	if (!r)
		return;
	result_impl *impl = (result_impl *)r;
	free(impl->pub.rows);
	free(impl->arena);
	free(impl);
}


static int natural_compare(const tally_row *x, const tally_row *y)
{
	if (x->bucket_start_us != y->bucket_start_us)
		return x->bucket_start_us < y->bucket_start_us ? -1 : 1;
	for (int d = 0; d < TALLY_DIM_COUNT; d++) {
		int c = str_compare(x->group[d], y->group[d]);
		if (c)
			return c;
	}
	return 0;
}

/* A sum's exact value (tally.h): field + wraps * 2^64. Wraps stay below
 * 2^63 in magnitude, so the 128-bit results (and a sum of two) fit. */
static inline __int128 exact_u(uint64_t field, int64_t wraps)
{
	return (__int128)field + (__int128)wraps * ((__int128)1 << 64);
}
static inline __int128 exact_i(int64_t field, int64_t wraps)
{
	return (__int128)field + (__int128)wraps * ((__int128)1 << 64);
}

static int agg_compare(const tally_row *x, const tally_row *y, const tally_query *q)
{
#define CMP(a, b) ((a) < (b) ? -1 : (a) > (b))
	/* Sums by their exact values (tally_wraps), as 128-bit integers. */
	switch (q->order_agg) {
	case TALLY_AGG_COUNT: return CMP(x->count, y->count);
	case TALLY_AGG_TOKENS_IN:
		return CMP(exact_u(x->tokens_in, x->wraps.tokens_in), exact_u(y->tokens_in, y->wraps.tokens_in));
	case TALLY_AGG_TOKENS_OUT:
		return CMP(exact_u(x->tokens_out, x->wraps.tokens_out),
			   exact_u(y->tokens_out, y->wraps.tokens_out));
	case TALLY_AGG_TOKENS:
		return CMP(exact_u(x->tokens_in, x->wraps.tokens_in) + exact_u(x->tokens_out, x->wraps.tokens_out),
			   exact_u(y->tokens_in, y->wraps.tokens_in) + exact_u(y->tokens_out, y->wraps.tokens_out));
	case TALLY_AGG_COST:
		return CMP(exact_i(x->cost_micros, x->wraps.cost_micros),
			   exact_i(y->cost_micros, y->wraps.cost_micros));
	case TALLY_AGG_DURATION_SUM:
		return CMP(exact_u(x->duration_ms_sum, x->wraps.duration_ms_sum),
			   exact_u(y->duration_ms_sum, y->wraps.duration_ms_sum));
	case TALLY_AGG_DURATION_MIN: return CMP(x->duration_ms_min, y->duration_ms_min);
	case TALLY_AGG_DURATION_MAX: return CMP(x->duration_ms_max, y->duration_ms_max);
	case TALLY_AGG_ERRORS: {
		uint64_t a = x->count - x->status_count[TALLY_STATUS_OK];
		uint64_t b = y->count - y->status_count[TALLY_STATUS_OK];
		return CMP(a, b);
	}
	case TALLY_AGG_QUANTILE:
		return CMP(x->quantile_ms[q->order_quantile], y->quantile_ms[q->order_quantile]);
	case TALLY_AGG_DISTINCT_USERS: return CMP(x->distinct_users, y->distinct_users);
	}
	return 0;
#undef CMP
}

static int row_compare(const void *a, const void *b, void *ctx)
{
	const tally_row *x = a, *y = b;
	const tally_query *q = ctx;
	if (q->order_by_agg) {
		int c = agg_compare(x, y, q);
		if (c)
			return q->descending ? -c : c;
	}
	return natural_compare(x, y);
}

/* Accumulator i's row, its group strings pointing into the query's key
 * arena. */
static void acc_row(const qstate *st, const bucket_span *spans, uint32_t i, tally_row *row)
{
	const tally_query *q = st->q;
	const acc *a = &st->accs[i];
	memset(row, 0, sizeof(*row));
	if (q->bucket == TALLY_BUCKET_NONE) {
		row->bucket_start_us = q->from_us;
		row->bucket_end_us = q->to_us;
	} else {
		row->bucket_start_us = spans[a->bucket].start;
		row->bucket_end_us = spans[a->bucket].end;
	}
	/* No key arena at all when nothing is grouped by. */
	if (st->keys.data)
		key_values(q, (const char *)st->keys.data + st->groups[a->group].key_offset, row->group);
	row->count = a->count;
	row->tokens_in = a->tokens_in;
	row->tokens_out = a->tokens_out;
	row->cost_micros = a->cost;
	row->duration_ms_sum = a->duration_sum;
	row->duration_ms_min = a->duration_min;
	row->duration_ms_max = a->duration_max;
	row->wraps = a->wraps;
	memcpy(row->status_count, a->status, sizeof(row->status_count));
	for (uint32_t k = 0; k < q->quantile_count; k++)
		row->quantile_ms[k] = dd_acc_quantile(&a->dd, q->quantiles[k]);
	row->distinct_users = st->want_users ? a->distinct : 0;
}

/* The page's rows so far: a max-heap by row_compare of at most `limit`. */
typedef struct page_heap {
	tally_row *rows;
	size_t count, limit;
	const tally_query *q;
} page_heap;

static void page_sift_down(page_heap *h, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < h->count && row_compare(&h->rows[l], &h->rows[m], (void *)h->q) > 0)
			m = l;
		if (r < h->count && row_compare(&h->rows[r], &h->rows[m], (void *)h->q) > 0)
			m = r;
		if (m == i)
			return;
		tally_row t = h->rows[i];
		h->rows[i] = h->rows[m];
		h->rows[m] = t;
		i = m;
	}
}

/* Offers row to the page: kept if it is among the `limit` first so far. */
static void page_offer(page_heap *h, const tally_row *row)
{
	if (h->count < h->limit) {
		size_t i = h->count++;
		h->rows[i] = *row;
		while (i && row_compare(&h->rows[(i - 1) / 2], &h->rows[i], (void *)h->q) < 0) {
			tally_row t = h->rows[i];
			h->rows[i] = h->rows[(i - 1) / 2];
			h->rows[(i - 1) / 2] = t;
			i = (i - 1) / 2;
		}
	} else if (h->limit && row_compare(row, &h->rows[0], (void *)h->q) < 0) {
		h->rows[0] = *row;
		page_sift_down(h, 0);
	}
}

/* The rows a page of q holds at most (0 asks for the most a query may). */
static uint32_t page_limit(const tally_query *q)
{
	return q->limit ? q->limit : TALLY_QUERY_ROWS_MAX;
}

/*
 * The answer: only the page the query asked for (after its cursor, the
 * `limit` first in its order) is kept, in a heap of that many rows while
 * every accumulator's row is offered to it, then sorted and copied into the
 * result with its own copy of its rows' group strings. A query of a million
 * groups and limit 10 holds 10 rows and their keys: before 2026-12-03 it
 * built and sorted a row per accumulator (280 bytes each), and before that
 * the result held every row and a copy of every key until it was freed
 * (713 MiB in the diagnosis of docs/queries.md).
 */
static int build_result(qstate *st, const bucket_span *spans, tally_result **out)
{
	const tally_query *q = st->q;
	uint32_t limit = page_limit(q);
	page_heap h = {NULL, 0, limit < st->acc_count ? limit : st->acc_count, q};
	h.rows = malloc(sizeof(*h.rows) * (h.limit + 1));
	if (!h.rows)
		return -ENOMEM;
	tally_row cursor;
	memset(&cursor, 0, sizeof(cursor));
	if (q->after) { /* the default order only (check_query) */
		cursor.bucket_start_us = q->bucket == TALLY_BUCKET_NONE ? q->from_us : q->after_bucket_us;
		for (int d = 0; d < TALLY_DIM_COUNT; d++)
			if (q->group_by & (1u << d))
				cursor.group[d] = q->after_group[d];
	}
	size_t after = 0; /* rows after the cursor: more than limit is truncated */
	for (uint32_t i = 0; i < st->acc_count; i++) {
		tally_row row;
		acc_row(st, spans, i, &row);
		if (q->after && natural_compare(&row, &cursor) <= 0)
			continue;
		after++;
		page_offer(&h, &row);
	}
	qsort_r(h.rows, h.count, sizeof(*h.rows), row_compare, (void *)q);
	size_t key_bytes = 0;
	for (size_t i = 0; i < h.count; i++)
		for (int d = 0; d < TALLY_DIM_COUNT; d++)
			key_bytes += h.rows[i].group[d].len;

	result_impl *impl = calloc(1, sizeof(*impl));
	tally_result *res = impl ? &impl->pub : NULL;
	if (res)
		impl->arena = malloc(key_bytes + 1);
	if (!res || !impl->arena) {
		tally_result_free(res);
		free(h.rows);
		return -ENOMEM;
	}
	res->rows = h.rows; /* the result's own: its strings are re-pointed below */
	res->cells_day = st->result->cells_day;
	res->cells_hour = st->result->cells_hour;
	res->cells_minute = st->result->cells_minute;
	res->raw_rows = st->result->raw_rows;
	res->row_count = h.count;
	res->truncated = after > limit || st->beyond;
	char *arena = impl->arena;
	for (size_t i = 0; i < h.count; i++) {
		tally_row *row = &res->rows[i];
		for (int d = 0; d < TALLY_DIM_COUNT; d++) {
			if (!row->group[d].len) {
				row->group[d].ptr = row->group[d].ptr ? arena : NULL;
				continue;
			}
			memcpy(arena, row->group[d].ptr, row->group[d].len);
			row->group[d].ptr = arena;
			arena += row->group[d].len;
		}
	}
	*out = res;
	return 0;
}

static void qstate_free(qstate *st)
{
	for (uint32_t i = 0; i < st->acc_count; i++) {
		dd_acc_free(&st->accs[i].dd);
		uset_free(&st->accs[i].users);
	}
	free(st->accs);
	free(st->acc_slots);
	free(st->recent_acc);
	free(st->recent_bucket);
	free(st->groups);
	free(st->group_slots);
	bytebuf_free(&st->keys);
	bytebuf_free(&st->key);
	filter_set_free(&st->filters);
	free(st->pinned);
}

/* ---- the window ---------------------------------------------------------------------- */

static int group_key_compare(const qstate *st, uint32_t a, uint32_t b)
{
	tally_str x[TALLY_DIM_COUNT], y[TALLY_DIM_COUNT];
	key_values(st->q, (const char *)st->keys.data + st->groups[a].key_offset, x);
	key_values(st->q, (const char *)st->keys.data + st->groups[b].key_offset, y);
	return group_compare(st->q, x, y);
}

/*
 * After an attempt in window w stopped at a limit with more than `limit`
 * accumulators (one per group: the window has one bucket): w's bound
 * becomes the limit-th smallest of their groups, found with a max-heap of
 * the `limit` smallest. It is below the last bound, which the attempt's
 * groups all lie at or before, so each attempt narrows the window.
 */
static int window_narrow(const qstate *st, query_window *w, uint32_t limit)
{
	assert(limit > 0 && st->acc_count > limit && st->keys.data);
	uint32_t *heap = malloc(sizeof(*heap) * limit), n = 0;
	if (!heap)
		return -ENOMEM;
	for (uint32_t i = 0; i < st->acc_count; i++) {
		uint32_t g = st->accs[i].group;
		size_t k;
		if (n < limit) { /* sift up */
			k = n++;
			while (k && group_key_compare(st, heap[(k - 1) / 2], g) < 0) {
				heap[k] = heap[(k - 1) / 2];
				k = (k - 1) / 2;
			}
			heap[k] = g;
			continue;
		}
		if (group_key_compare(st, g, heap[0]) >= 0)
			continue;
		for (k = 0;;) { /* g replaces the largest: sift down */
			size_t l = 2 * k + 1, m = l;
			if (l >= n)
				break;
			if (l + 1 < n && group_key_compare(st, heap[l + 1], heap[l]) > 0)
				m = l + 1;
			if (group_key_compare(st, heap[m], g) <= 0)
				break;
			heap[k] = heap[m];
			k = m;
		}
		heap[k] = g;
	}
	const out_group *g = &st->groups[heap[0]];
	free(heap);
	bytebuf_reset(&w->bound_key);
	if (bytebuf_append(&w->bound_key, st->keys.data + g->key_offset, g->key_size))
		return -ENOMEM;
	key_values(st->q, (const char *)w->bound_key.data, w->bound);
	w->bounded = true;
	w->retry = true;
	return 0;
}

/* ---- the query ------------------------------------------------------------------------ */

static const enum tz_unit BUCKET_UNIT[] = {
	[TALLY_BUCKET_MINUTE] = TZ_MINUTE,
	[TALLY_BUCKET_HOUR] = TZ_HOUR,
	[TALLY_BUCKET_DAY] = TZ_DAY,
	[TALLY_BUCKET_MONTH] = TZ_MONTH,
};

static int make_buckets(const tally_query *q, const tz *zone, bucket_span **out, uint32_t *count,
			char *errmsg)
{
	uint32_t capacity = 64, n = 0;
	bucket_span *spans = malloc(sizeof(*spans) * capacity);
	if (!spans)
		return -ENOMEM;
	if (q->bucket == TALLY_BUCKET_NONE) {
		spans[n++] = (bucket_span){q->from_us, q->to_us};
	} else {
		for (int64_t t = q->from_us; t < q->to_us;) {
			if (n == TALLY_QUERY_BUCKETS_MAX) {
				free(spans);
				return invalid(errmsg, "the range holds more than %u buckets",
					       TALLY_QUERY_BUCKETS_MAX);
			}
			if (n == capacity) {
				capacity *= 2;
				bucket_span *more = realloc(spans, sizeof(*spans) * capacity);
				if (!more) {
					free(spans);
					return -ENOMEM;
				}
				spans = more;
			}
			int64_t start, end;
			tz_bucket(zone, BUCKET_UNIT[q->bucket], t, &start, &end, NULL);
			spans[n++] = (bucket_span){start, end};
			t = end;
		}
	}
	*out = spans;
	*count = n;
	return 0;
}


/*
 * A source with no event at or after `to` holds nothing in [to, the end of
 * to's UTC day), so for it the last output bucket may run to that day's
 * end; one with no event before `from` holds nothing in [from's UTC day
 * start, from), so the first may start there. The edge is then covered by
 * the source's coarse cells (its day cells, or day total) instead of hours
 * and minutes: a dashboard's "last 30 days until now" reads today's total
 * of a memtable, not 24 hours and 60 minutes of its groups. The plan has
 * PLAN_VARIANTS variants: bit PLAN_OPEN_END extends the end, PLAN_OPEN_START
 * the start; variant 0 is the query's exact range.
 */
enum { PLAN_OPEN_END = 1, PLAN_OPEN_START = 2, PLAN_VARIANTS = 4 };

static int plan_make(const tally_query *q, const bucket_span *spans, uint32_t span_count,
		     int64_t minute_from, int variant, plan *p)
{
	int rc = 0;
	for (uint32_t b = 0; b < span_count && !rc; b++) {
		int64_t a = spans[b].start > q->from_us ? spans[b].start : q->from_us;
		int64_t e = spans[b].end < q->to_us ? spans[b].end : q->to_us;
		/* (Times this far from the epoch hold no events, and a day more
		 * would overflow.) */
		if ((variant & PLAN_OPEN_START) && b == 0 && a > INT64_MIN / 2)
			a = floor_div(a, ROLLUP_DAY_US) * ROLLUP_DAY_US;
		if ((variant & PLAN_OPEN_END) && b == span_count - 1 && e < INT64_MAX / 2)
			e = ceil_div(e, ROLLUP_DAY_US) * ROLLUP_DAY_US;
		rc = plan_cover(p, RES_DAY, a, e, b, minute_from);
	}
	return rc;
}

/*
 * The variant for a source whose events lie in [min_us, max_us] (max_us <
 * min_us: none). Raw pieces are scanned once for all sources (run_raw), by
 * the exact plan: a variant is only taken when neither it nor the exact
 * plan has any, so no event is read twice or missed.
 */
static int plan_variant(const plan pv[PLAN_VARIANTS], const tally_query *q, int64_t min_us, int64_t max_us)
{
	if (max_us < min_us || pv[0].raw)
		return 0;
	int v = (max_us < q->to_us ? PLAN_OPEN_END : 0) | (min_us >= q->from_us ? PLAN_OPEN_START : 0);
	return pv[v].raw ? 0 : v;
}

/* A pinned frozen memtable as a source, without the store lock: its cell
 * pieces, through the plan variant its time range takes, then its raw
 * pieces (*rollup_bytes: its rollup's size, for store_memtable_unpin to
 * count). */
static int merge_memtable_source(qstate *st, memtable *mt, const plan pv[PLAN_VARIANTS],
				 const plan *raw, size_t *rollup_bytes, tally_result *stats)
{
	pthread_mutex_lock(&mt->rollup_lock);
	int rc = merge_memtable(st, mt, &pv[plan_variant(pv, st->q, mt->time_min_us, mt->time_max_us)],
				stats);
	*rollup_bytes = mt->rollup.bytes;
	pthread_mutex_unlock(&mt->rollup_lock);
	raw_source src = {mt, mt->rows.count, NULL, NULL, 0, 0};
	return rc ? rc : run_raw(st, raw, &src, &stats->raw_rows);
}

/*
 * The active memtable, read in two parts. Its rows and dictionary grow
 * under the store lock; its rollup only under its rollup_lock. So under
 * the store lock (active_begin) the query takes rollup_lock, gets the
 * rollup ready (its growth counted), notes the rows it holds and the rows
 * there are, copies the dictionary's codes (only those added since
 * active_copy_ahead copied the rest) and pins the memtable; then, with
 * the store lock let go and rollup_lock still held (active_finish), it
 * merges the rollup's cells, whose groups' codes the copy all holds (the
 * rollup cannot grow meanwhile), and settles their users; then it lets
 * rollup_lock go and reads the noted rows past the rollup and the raw
 * edges, a step of rows per hold of the store lock (store_scan_pinned_rows).
 * The cells are what costs: a tenant of 159,320 distinct groups held the
 * store lock 0.4–1.0 s for them (queries.md); raw edges check every row.
 * Queries of one tenant take turns (tenant.query_lock), so none waits for
 * this rollup_lock while holding the store lock; the rollup thread only
 * tries it. A failed rollup (memory ran out) is not held: all its rows
 * are read instead.
 */
typedef struct active_read {
	memtable *mt; /* pinned; NULL: nothing left for active_finish */
	const plan *p, *raw;
	uint32_t from_row, row_count; /* rows past its rollup; its rows at the hold */
	int cells;                    /* its rollup_lock is held, its cells to merge */
	strdict dict;                 /* freed by active_read_free */
	uint64_t dict_serial;         /* the memtable dict is a copy of (0: none) */
} active_read;

static void active_read_free(active_read *ar)
{
	strdict_free(&ar->dict);
	ar->dict_serial = 0;
}

/*
 * Before the query's hold of the store lock: a copy of t's active
 * memtable's dictionary as far as it goes now, taken QUERY_DICT_COPY_STEP_BYTES
 * at a time, one store lock hold each, its memory allocated and touched
 * between them. A memtable's strings never change once added, so
 * active_begin then copies only the strings added since, and none if the
 * memtable is another by then. A copy of 10 MB of strings held the store
 * lock 2-7 ms, most of it page faults. Out of memory only stops it early:
 * active_begin makes the rest of the copy itself. Only a query that groups
 * by or filters on a dimension of strings (key_strings) reads the cells'
 * group strings; the others read none (users come from the rollup's user
 * hashes), and make no copy.
 */
static void active_copy_ahead(tally_store *s, const tenant *t, active_read *ar)
{
	uint32_t goal = 0;
	size_t goal_bytes = 0;
	for (;;) {
		pthread_mutex_lock(&s->lock);
		const memtable *mt = t->active;
		if (mt && mt->serial != ar->dict_serial) { /* the first, or flushed meanwhile */
			active_read_free(ar);
			ar->dict_serial = mt->serial;
			goal = mt->dict.count;
			goal_bytes = mt->dict.arena.size;
		}
		if (!mt || ar->dict.count >= goal) {
			pthread_mutex_unlock(&s->lock);
			return;
		}
		if (goal > ar->dict.offsets_capacity || goal_bytes > ar->dict.arena.capacity) {
			pthread_mutex_unlock(&s->lock);
			if (strdict_copy_reserve(&ar->dict, goal, goal_bytes))
				return;
			continue;
		}
		strdict_copy_more(&mt->dict, &ar->dict, QUERY_DICT_COPY_STEP_BYTES);
		pthread_mutex_unlock(&s->lock);
		store_step_give_way(s);
	}
}

static int active_begin(qstate *st, memtable *mt, const plan pv[PLAN_VARIANTS], const plan *raw,
			active_read *ar)
{
	ar->mt = NULL;
	ar->p = &pv[plan_variant(pv, st->q, mt->time_min_us, mt->time_max_us)];
	ar->raw = raw;
	pthread_mutex_lock(&mt->rollup_lock);
	ar->from_row = memtable_rollup_ready(st, mt);
	ar->row_count = mt->rows.count;
	ar->cells = !mt->rollup_failed;
	st->s->active_bytes += memtable_rollup_account(mt, mt->rollup.bytes);
	int rc = 0;
	int copy = ar->cells && st->key_strings; /* the cells' group strings are read */
	if (copy && ar->dict_serial != mt->serial) {
		active_read_free(ar);
		ar->dict_serial = mt->serial;
	}
	if (copy && ar->dict.count < mt->dict.count &&
	    !strdict_copy_more(&mt->dict, &ar->dict, SIZE_MAX)) {
		/* No room: what was added since active_copy_ahead passed its
		 * eighth to spare (or it ran out of memory). */
		rc = strdict_copy_reserve(&ar->dict, mt->dict.count, mt->dict.arena.size);
		if (!rc)
			strdict_copy_more(&mt->dict, &ar->dict, SIZE_MAX);
	}
	if (rc || !ar->cells)
		pthread_mutex_unlock(&mt->rollup_lock);
	if (rc)
		return rc;
	mt->pins++;
	ar->mt = mt;
	return 0;
}

static int active_finish(qstate *st, const tenant *t, active_read *ar, int rc,
			 tally_result *stats)
{
	memtable *mt = ar->mt;
	if (!mt)
		return rc;
	if (ar->cells) {
		if (!rc)
			rc = merge_memtable_cells(st, mt, &ar->dict, ar->p, stats);
		if (!rc && st->want_users)
			rc = acc_settle_users(st);
		pthread_mutex_unlock(&mt->rollup_lock);
	}
	/* The rows, a step per hold of the store lock. */
	if (!rc && ar->from_row < ar->row_count)
		rc = merge_memtable_rows(st, st->s, mt, ar->from_row, ar->row_count, ar->p,
					 &stats->raw_rows);
	raw_source src = {mt, ar->row_count, st->s, NULL, 0, 0};
	if (!rc)
		rc = run_raw(st, ar->raw, &src, &stats->raw_rows);
	store_memtable_unpin(st->s, t, mt, NULL);
	ar->mt = NULL;
	return rc;
}

/* Under the tenant's query_lock, without the store lock: the cell pieces of tenant_id's
 * sections of the pinned files[0, count), each section through the plan
 * variant its time range takes. */
static int merge_files(qstate *st, const plan pv[PLAN_VARIANTS], segment_file *const *files,
		       uint32_t count, uint32_t tenant_id, tally_result *stats)
{
	char *errmsg = st->errmsg;
	int rc = 0;
	for (uint32_t fi = 0; fi < count && !rc; fi++) {
		const segment_file *f = files[fi];
		int64_t ti = segment_file_find_tenant(f, tenant_id);
		if (ti < 0)
			continue;
		const seg_tenant *sec = &f->tenants[ti];
		file_source fs = {st->s, f, (uint32_t)ti, sec, NULL, {0}, stats, {0}};
		int64_t sec_min = INT64_MAX, sec_max = INT64_MIN; /* inclusive */
		for (uint32_t g = 0; g < sec->segment_count; g++) {
			const seg_segment *sg = &f->segments[sec->first_segment + g];
			sec_min = sg->time_min_us < sec_min ? sg->time_min_us : sec_min;
			sec_max = sg->time_max_us > sec_max ? sg->time_max_us : sec_max;
		}
		const plan *ps = &pv[plan_variant(pv, st->q, sec_min, sec_max)];
		for (uint32_t k = 0; k < ps->count && !rc; k++) {
			const piece *pc = &ps->pieces[k];
			if (pc->res < 0)
				continue;
			if (pc->res != RES_DAY) {
				rc = merge_file_cells(st, &fs, pc->res, pc, errmsg); /* list == res */
				continue;
			}
			/* Per day: its total (ungrouped queries), else its day
			 * cells, else its hour cells (days with few hour cells
			 * store no day cells: ROLLUP_DAY_COMPOSE_MAX). */
			int64_t d0 = floor_div(pc->from, ROLLUP_DAY_US);
			int64_t d1 = floor_div(pc->to, ROLLUP_DAY_US);
			for (int64_t d = d0; d < d1 && !rc; d++) {
				int has = 0, list = LIST_DAY_TOTAL;
				if (st->ungrouped && (rc = file_has_day(st, &fs, list, d, &has, errmsg)))
					break;
				if (!has && (rc = file_has_day(st, &fs, list = LIST_DAY, d, &has, errmsg)))
					break;
				piece one = {d * ROLLUP_DAY_US, (d + 1) * ROLLUP_DAY_US, pc->bucket, RES_DAY};
				rc = merge_file_cells(st, &fs, has ? list : LIST_HOUR, &one, errmsg);
			}
		}
		source_groups_free(&fs.sg);
		source_groups_free(&fs.psg);
	}
	return rc;
}

/* One attempt of a checked query, in window w (NULL: none). */
static int query_attempt(tally_store *s, const char *tenant_name, const tally_query *q,
			 query_window *w, tally_result **out, char *errmsg)
{
	int rc = 0;
	qstate st;
	memset(&st, 0, sizeof(st));
	st.s = s;
	st.q = q;
	st.errmsg = errmsg;
	st.window = w;
	st.want_dd = q->quantile_count > 0;
	st.ungrouped = q->group_by == 0 && q->filter_count == 0;
	st.key_dims = q->group_by;
	for (uint32_t i = 0; i < q->filter_count; i++)
		st.key_dims |= 1u << q->filters[i].dim;
	st.key_strings = (st.key_dims & ~(1u << TALLY_DIM_STATUS)) != 0;
	st.want_users = q->distinct_users ||
			(q->order_by_agg && q->order_agg == TALLY_AGG_DISTINCT_USERS);
	tally_result stats;
	memset(&stats, 0, sizeof(stats));
	st.result = &stats;
	bucket_span *spans = NULL;
	uint32_t span_count = 0;
	plan pv[PLAN_VARIANTS], raw;
	memset(pv, 0, sizeof(pv));
	memset(&raw, 0, sizeof(raw));
	if ((rc = filter_set_init(&st.filters, q->filters, q->filter_count)))
		goto done;

	/* Buckets first, without the store lock (a year of minutes takes a while). */
	tz *zone = NULL;
	int zone_owned = 0;
	const char *zone_name = q->time_zone && q->time_zone[0] ? q->time_zone : "UTC";
	if ((rc = zone_get(zone_name, &zone, &zone_owned, errmsg)))
		goto done;
	rc = make_buckets(q, zone, &spans, &span_count, errmsg);
	if (zone_owned)
		tz_free(zone);
	if (rc)
		goto done;
	/* Queries of one tenant take turns (tenant.query_lock, held to the
	 * end): the active memtable's rollup_lock and the tenant's cache
	 * entries are held across the store lock's release. Tenants are never
	 * freed while the store is open. */
	pthread_mutex_lock(&s->lock);
	tenant *t = store_tenant_find(s, tenant_name);
	pthread_mutex_unlock(&s->lock);
	active_read active = {0};
	if (t) {
		pthread_mutex_lock(&t->query_lock);
		store_query_catch_up(s, t);
		if (st.key_strings)
			active_copy_ahead(s, t, &active);
		if (s->query_ahead_test_hook)
			s->query_ahead_test_hook(s, s->query_ahead_test_ctx);
	}
	/* Under the store lock: the plan, the files and the frozen memtable
	 * pinned, the active memtable's rows read and its rollup held. */
	segment_file **files = NULL;
	memtable *frozen = NULL;
	uint32_t file_count = 0, tenant_id = 0;
	store_lock_counted(s);
	if (t) {
		tenant_id = t->id;
		/* Minute cells are complete in every source from minute_from on. */
		int64_t minute_from = INT64_MIN / 2;
		for (uint32_t fi = 0; fi < s->file_count; fi++) {
			int64_t ti = segment_file_find_tenant(s->files[fi], t->id);
			if (ti >= 0 && s->files[fi]->tenants[ti].minute_from_us > minute_from)
				minute_from = s->files[fi]->tenants[ti].minute_from_us;
		}
		for (int v = 0; v < PLAN_VARIANTS && !rc; v++)
			rc = plan_make(q, spans, span_count, minute_from, v, &pv[v]);
		if (!rc)
			rc = raw_pieces(&pv[0], &raw);
		if (!rc)
			rc = store_pin_tenant_files(s, t, &files, &file_count);
		if (!rc && t->frozen && t->frozen->rows.count) {
			frozen = t->frozen;
			frozen->pins++;
		}
		if (!rc && t->active && t->active->rows.count)
			rc = active_begin(&st, t->active, pv, &raw, &active);
	}
	pthread_mutex_unlock(&s->lock);
	if (s->query_test_hook)
		s->query_test_hook(s, s->query_test_ctx);
	/* Without it: the active memtable's cells, the frozen memtable, the
	 * files' raw rows, then the files' cells. */
	rc = active_finish(&st, t, &active, rc, &stats);
	active_read_free(&active);
	if (frozen) {
		size_t rollup_bytes = 0;
		if (!rc)
			rc = merge_memtable_source(&st, frozen, pv, &raw, &rollup_bytes, &stats);
		store_memtable_unpin(s, t, frozen, &rollup_bytes);
	}
	raw_source file_src = {NULL, 0, NULL, files, file_count, tenant_id};
	if (!rc && file_count)
		rc = run_raw(&st, &raw, &file_src, &stats.raw_rows);
	if (file_count) {
		/* The tenant's cache entries are filled in and read under its
		 * query_lock; other tenants' queries merge theirs meanwhile. */
		if (!rc)
			rc = merge_files(&st, pv, files, file_count, tenant_id, &stats);
		if (!rc && st.want_users)
			acc_resolve_users(&st); /* the cached blocks deferred users point into */
		cache_unpin_all(&st);
		store_files_unpin(s, files, file_count); /* after the entries' unpin: see cache_shrink */
	} else if (!rc && st.want_users) {
		acc_resolve_users(&st);
	}
	if (t)
		pthread_mutex_unlock(&t->query_lock);
	free(files);
	if (!rc)
		rc = build_result(&st, spans, out);
	if (rc == TALLY_E_LIMIT && w && st.acc_count > page_limit(q)) {
		int narrowed = window_narrow(&st, w, page_limit(q));
		if (narrowed)
			rc = narrowed;
	} else if (!rc && st.beyond && !(*out)->row_count) {
		/* Every group at or before the bound is gone (expired since the
		 * attempt that found it), some past it are not: no page here. */
		tally_result_free(*out);
		*out = NULL;
		w->bounded = false;
		w->retry = true;
		rc = TALLY_E_LIMIT;
		if (errmsg) /* seen only when it was the last attempt */
			snprintf(errmsg, TALLY_ERRMSG_SIZE,
				 "the query's window held none of its page's groups: the tenant's groups "
				 "changed while it narrowed (%u attempts)",
				 (unsigned)QUERY_ATTEMPTS_MAX);
	}
done:
	if (rc && errmsg && !errmsg[0])
		snprintf(errmsg, TALLY_ERRMSG_SIZE, "query failed: %s", tally_strerror(rc));
	for (int v = 0; v < PLAN_VARIANTS; v++)
		free(pv[v].pieces);
	free(raw.pieces);
	free(spans);
	qstate_free(&st);
	return rc;
}

int tally_query_run(tally_store *s, const char *tenant_name, const tally_query *q,
		    tally_result **out, char *errmsg)
{
	if (out)
		*out = NULL;
	if (errmsg)
		errmsg[0] = 0;
	if (!s || !q || !out)
		return invalid(errmsg, "missing argument");
	if (!tenant_name || !store_tenant_name_valid(tenant_name)) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "malformed tenant name");
		return TALLY_E_TENANT;
	}
	int rc = check_query(q, errmsg);
	if (rc)
		return rc;
	/* One bucket, grouped, in the default order: a window (query_window),
	 * narrowed by each attempt that stops at a limit. */
	query_window window;
	memset(&window, 0, sizeof(window));
	bool windowed = q->bucket == TALLY_BUCKET_NONE && q->group_by && !q->order_by_agg;
	query_window *w = windowed ? &window : NULL;
	for (int attempt = 1;; attempt++) {
		window.retry = false;
		rc = query_attempt(s, tenant_name, q, w, out, errmsg);
		if (!rc || !window.retry || attempt == QUERY_ATTEMPTS_MAX)
			break;
		if (errmsg)
			errmsg[0] = 0;
	}
	bytebuf_free(&window.bound_key);
	return rc;
}
