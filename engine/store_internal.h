/*
 * store_internal.h — the store's structures, shared by the modules that
 * implement parts of the public API over them (store.c, query.c). Nothing
 * outside engine/ includes this.
 */
#ifndef TALLY_STORE_INTERNAL_H
#define TALLY_STORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "changes.h"
#include "dedup.h"
#include "manifest.h"
#include "memtable.h"
#include "segment.h"
#include "tally.h"
#include "tally_limits.h"
#include "wal.h"

struct query_cache;

#define PATH_SIZE_MAX 4096
#define WAL_RECORD_BATCH 1   /* one tenant's batch */
#define WAL_RECORD_BATCHES 2 /* several batches submitted together */
#define DAY_MAX UINT16_MAX

/* The steps of store.step_test_hook. */
enum { STORE_STEP_CATCH_UP = 1, STORE_STEP_SCAN = 2 };

typedef struct verify_entry {
	uint64_t file_id;
	uint64_t last_use;
	uint32_t rowgroup;
	uint32_t mask;
	uint32_t *slots; /* row + 1 by id hash */
	int valid;
	rows rows;
	strdict dict[DIM_COUNT];
} verify_entry;

typedef struct tenant {
	uint32_t id;
	char name[TALLY_TENANT_SIZE_MAX + 1];
	memtable *active; /* NULL when empty */
	memtable *frozen; /* being flushed, NULL otherwise */
	int queried;      /* a query read it: in s->watched, the rollup thread keeps its memtable rollup current */
	dedup_table dedup;
	/* Held by a query from start to end: queries of one tenant take
	 * turns. Under it a query fills in and reads the tenant's query cache
	 * entries (query.c, note 5) and holds the active memtable's
	 * rollup_lock across the store lock's release (active_begin). Taken
	 * before cache_lock and the store lock, never while holding either. */
	pthread_mutex_t query_lock;
} tenant;

/* A slot of the tenant table: a probe reads a tenant only when the name
 * hashes match, and a prefetch of the slot loads the tenant's address. */
typedef struct tenant_slot {
	uint32_t hash;   /* name_hash of the tenant's name */
	tenant *tenant;  /* NULL: empty */
} tenant_slot;

struct tally_store {
	char dir[PATH_SIZE_MAX];
	char wal_dir[PATH_SIZE_MAX + 8];
	char segment_dir[PATH_SIZE_MAX + 16];
	const tally_io *io;
	tally_options options;
	int lock_fd;

	pthread_mutex_t lock;
	pthread_cond_t flushed; /* a flush froze, published or gave up (backpressure, a compaction's start) */
	/* Maintenance (store.c, notes 4, 5 and 7): flushes are serialised by
	 * flush_mutex, compactions by compact_mutex, and the two run beside
	 * each other, so the memtables are flushed while a compaction lasts.
	 * publish serialises what both do to publish: the manifest image built
	 * from the catalog, its write, and the catalog's swap. */
	pthread_mutex_t flush_mutex;
	pthread_mutex_t compact_mutex;
	pthread_mutex_t publish;
	/* tally_compact calls waiting for compact_mutex: a background
	 * compaction gives way to them (stops between two tenants and drops
	 * what it wrote), so a caller's compaction, split over the CPUs, is
	 * not held up behind a niced one-file compaction. */
	atomic_uint compact_callers;
	/* Ingest calls and queries' and listings' pinning holds waiting for
	 * the store lock (store_lock_counted): a read done a step per hold of
	 * the lock lets them have it between steps (store_step_give_way). A
	 * mutex does not queue its waiters, so a thread that lets it go and
	 * takes it again at once keeps it. */
	atomic_uint lock_waiting;
	/* Tests only (NULL otherwise): called by a compaction once it has
	 * taken its inputs and output ids and let the store lock go, with
	 * compact_test_ctx, so a test can run a flush at that very point. */
	void (*compact_test_hook)(tally_store *s, void *ctx);
	void *compact_test_ctx;
	/* Tests only (NULL otherwise): called between two steps of a
	 * fingerprint expiry pass, without the store lock. */
	void (*expiry_test_hook)(tally_store *s, void *ctx);
	void *expiry_test_ctx;
	/* Tests only (NULL otherwise): called by a flush once its files are
	 * written, before it publishes them, without the store lock. */
	void (*flush_test_hook)(tally_store *s, void *ctx);
	void *flush_test_ctx;
	/* Tests only (NULL otherwise): called by an aggregate query or an
	 * events listing page once it has pinned its sources and let the
	 * store lock go, before it reads the active memtable's cells (a query
	 * holds its rollup_lock here), the frozen memtable and the segment
	 * files. */
	void (*query_test_hook)(tally_store *s, void *ctx);
	void *query_test_ctx;
	/* Tests only (NULL otherwise): called, without the store lock, by a
	 * read done a step per hold of it after each step: a catch-up of a
	 * memtable's rollup (the rollup thread, or a query's
	 * store_query_catch_up; with the memtable's rollup_lock held) as
	 * STORE_STEP_CATCH_UP, and store_scan_pinned_rows (an events
	 * listing's read of its active memtable) as STORE_STEP_SCAN. */
	void (*step_test_hook)(tally_store *s, void *ctx, int step);
	void *step_test_ctx;
	/* Tests only (NULL otherwise): called by an aggregate query once it
	 * has copied its active memtable's dictionary ahead, before the hold
	 * of the store lock in which it pins its sources. */
	void (*query_ahead_test_hook)(tally_store *s, void *ctx);
	void *query_ahead_test_ctx;
	/* The (bucket, group) rows a query may build (acc_get in query.c):
	 * TALLY_QUERY_CELLS_MAX; tests lower it to reach the limit, and a
	 * query's bounded retry (query_window), with few events. */
	uint32_t query_cells_max;

	tenant **tenants; /* by id */
	uint32_t tenant_count;
	uint32_t tenant_capacity;
	tenant_slot *tenant_slots; /* open addressing over name hashes */
	uint32_t tenant_slot_mask;

	manifest manifest;
	segment_file **files; /* live, ascending file id */
	uint32_t file_count;

	wal *wal;
	uint64_t active_bytes;
	uint64_t frozen_bytes;
	/* When the active memtables got their first row since the last
	 * freeze (io clock), 0 when they have none: memtable_age_max_us
	 * counts from it. */
	int64_t active_since_us;
	uint64_t memtable_bytes_peak; /* tally_stats: see memtable_peak_note */
	uint64_t flush_boundary_lsn; /* valid while frozen memtables exist */
	int frozen;                   /* frozen memtables exist */
	/* A flush has taken file ids and not yet published them or given up
	 * (under lock). A compaction takes its inputs and ids only when none
	 * has, so file ids stay in the order of the data's age. */
	int flushing;
	/* The error of the last flush when it failed and left the store
	 * writable (a full disk), 0 once one publishes (under lock, in the hold
	 * that counts it in flush_count): ingest past
	 * memtable_bytes_max then fails with TALLY_E_BUSY instead of waiting
	 * for a flush that may not come. */
	int flush_failing;
	/* The change map (changes.h), under lock: every stored event's day,
	 * with the LSN of its WAL record. changes_frozen is its copy taken when
	 * the memtables were frozen (exactly the marks with LSN < the flush
	 * boundary); the flush publishes it as the manifest's. */
	change_map changes;
	change_map changes_frozen;
	int sticky;                   /* non-zero: writes refused */
	int closing;

	bytebuf multi_record; /* entries of a call's WAL record encoded under the lock: see record_parts */
	uint64_t ingest_calls;        /* tally_stats: under lock */
	uint64_t ingest_lock_hold_us;
	uint64_t ingest_lock_wait_us;
	uint64_t ingest_lock_hold_max_us;
	verify_entry verify_cache[VERIFY_CACHE_ENTRIES]; /* see verify_cache_get */
	uint64_t verify_clock;

	pthread_t worker; /* flushes (worker_main) */
	int worker_started;
	pthread_cond_t wake;
	pthread_t compactor; /* compactions (compactor_main) */
	int compactor_started;
	pthread_cond_t compact_wake;
	/* The rollup thread (store.c, "rollup catch-up"): every
	 * ROLLUP_CATCH_UP_TICK_MS it rolls up the new memtable rows of the
	 * tenants a query has read (watched, by id). */
	pthread_t rollup_thread;
	int rollup_started;
	pthread_cond_t rollup_wake;
	uint32_t *watched;
	uint32_t watched_count, watched_capacity;
	/* fingerprint_day_min of the last expiry pass (or of open): under
	 * lock. */
	uint16_t dedup_expired_day;
	/* The highest fingerprint_day_min any ingest call or expiry pass has
	 * acted on since open (fingerprints of older days may be gone, or
	 * were never added): horizon_start_us never gives an earlier one.
	 * Raised under lock, read without it. */
	_Atomic uint16_t horizon_floor_day;
	uint64_t dedup_expiry_count;       /* tally_stats: under lock */
	uint64_t dedup_expiry_us_last;
	uint64_t dedup_expiry_hold_max_us;
	int64_t replay_day_min; /* fingerprint_day_min at open: the rebuild and WAL replay */

	/* The query cache (query.c, note 5): its table of decoded rollup
	 * blocks, their bytes and pins under cache_lock, held only for a
	 * lookup, an addition, an eviction or a count (a query fills in and
	 * reads its tenant's entries under tenant.query_lock). cache_lock may
	 * be taken before lock, never while holding it. query_cache_bytes
	 * mirrors the cache's bytes for tally_store_stats, set whenever
	 * cache_lock is let go. */
	pthread_mutex_t cache_lock;
	struct query_cache *query_cache;
	atomic_size_t query_cache_bytes;

	uint64_t flush_count;
	uint64_t compaction_count;
	/* The last error message: written by whichever thread failed (ingest,
	 * the WAL's commit, the background worker, a scan) and read by any, so
	 * only through store.c's errmsg_set/errmsg_printf and
	 * tally_store_errmsg_copy, under errmsg_lock (taken alone, or innermost). tally_store_open
	 * writes it directly before any thread starts. */
	pthread_mutex_t errmsg_lock;
	char errmsg[TALLY_ERRMSG_SIZE];
};


/* Under s->lock: the tenant named `name`, or NULL. */
tenant *store_tenant_find(tally_store *s, const char *name);
/* Under s->lock: a query read t; from now on the rollup thread keeps its
 * memtable rollup current (no-op if it already does; out of memory leaves
 * t unwatched, to be tried again at its next query). */
void store_tenant_watch(tally_store *s, tenant *t);
/* Whether a query must bring memtable m's rollup up to date before it
 * reads it: it is more than options.query_rows_behind_max rows behind (a
 * tenant nobody queried while the store only ingested), or there is no
 * rollup thread (options.background off), and it has not failed. Under
 * m's rollup_lock (which guards rolled and rollup_failed) and, for an
 * active memtable, s->lock (which guards its rows). */
int store_rollup_due(const tally_store *s, const memtable *m);
/*
 * Under t->query_lock, before a query pins its sources: watches t (the
 * rollup thread keeps its rollup current from now on) and, when its
 * active memtable's rollup is due (store_rollup_due), rolls up the rows the
 * memtable holds now, a slice at a time, each slice's cells added with the
 * store lock let go. Then the query's own hold of the store lock has only
 * the rows ingested meanwhile to roll up or read (queries.md, "Live").
 * Takes the store lock.
 */
void store_query_catch_up(tally_store *s, tenant *t);
int store_tenant_name_valid(const char *name);

/*
 * Under s->lock: calls fn for every stored event of t with from <= time <
 * to (segments, then memtables; not in time order). Strings are valid
 * during the call only. Stops at fn's first non-zero return and returns it.
 * A segment that cannot be read (an I/O error, a corrupt block or row)
 * fails the call, its message in errmsg (may be NULL) and the store's.
 * In each tenant section the scan starts at the row group a binary search
 * on times finds (reading the time column only) and stops after the row
 * group that reaches to, or passes *stop_after: a caller that wants no row
 * later than *stop_after (it may lower it during the scan; NULL: no bound)
 * may still be called for such rows, but not for a whole row group of them.
 * rows_read counts the rows decoded (a row group's, a memtable's all).
 */
typedef int (*store_rows_fn)(void *ctx, const rows *r, const strdict *const dict[DIM_COUNT],
			     uint32_t row);
int store_scan_rows_locked(tally_store *s, tenant *t, int64_t from_us, int64_t to_us,
			   const int64_t *stop_after, store_rows_fn fn, void *ctx,
			   uint64_t *rows_read, char *errmsg);
/* store_scan_rows_locked's parts. The segment rows of tenant_id in
 * files[0, file_count), which the caller keeps live (the lock held, or
 * each pinned: store_pin_tenant_files), so without the lock; and the rows
 * of one memtable (NULL: none), under s->lock for an active one (a pinned
 * frozen one needs no lock): rows_read counts all its rows when its time
 * range meets [from, to). */
int store_scan_file_rows(tally_store *s, segment_file *const *files, uint32_t file_count,
			 uint32_t tenant_id, int64_t from_us, int64_t to_us,
			 const int64_t *stop_after, store_rows_fn fn, void *ctx,
			 uint64_t *rows_read, char *errmsg);
int store_scan_memtable_rows(memtable *mt, int64_t from_us, int64_t to_us, store_rows_fn fn,
			     void *ctx, uint64_t *rows_read);
/* Rows [row_from, row_to) of memtable mt, as store_scan_memtable_rows
 * (under s->lock for an active one), skipping the blocks whose time range
 * is known (memtable.blocks) to lie outside [from, to) or, when bound is
 * not NULL, after *bound (a listing page's latest time that can still
 * enter it, read before each block); rows_read counts the rows of the
 * blocks read. Notes the range of each whole block it reads of an active
 * memtable. */
int store_scan_memtable_range(memtable *mt, uint32_t row_from, uint32_t row_to, int64_t from_us,
			      int64_t to_us, const int64_t *bound, store_rows_fn fn, void *ctx,
			      uint64_t *rows_read);
/* Without s->lock: rows [row_from, row_to) of memtable mt, which the caller
 * has pinned (store_memtable_unpin) with row_to at most its rows then, as
 * store_scan_memtable_range, MEMTABLE_SCAN_STEP_ROWS rows per hold of
 * s->lock, giving way to ingest between holds (an active memtable's rows
 * and dictionary grow, and move, under it; the rows before row_to never
 * change). So an events listing page or a query's raw rows that check
 * every row of a large tenant's active memtable hold the lock for a step
 * at a time, and the rows they read are still those of their snapshot if
 * the memtable is frozen or flushed meanwhile. */
int store_scan_pinned_rows(tally_store *s, memtable *mt, uint32_t row_from, uint32_t row_to,
			   int64_t from_us, int64_t to_us, const int64_t *bound, store_rows_fn fn,
			   void *ctx, uint64_t *rows_read);
/* Takes s->lock, counted in s->lock_waiting while it has to wait: for an
 * ingest call, and the hold in which a query or a listing page pins its
 * sources. */
void store_lock_counted(tally_store *s);
/* Without s->lock, between two steps of a read done a step per hold of it:
 * while counted callers wait for the lock, yields the CPU so that one takes
 * it first (at most STEP_GIVE_WAY_YIELDS times, so the read goes on
 * under a steady stream of calls). */
void store_step_give_way(tally_store *s);

/*
 * Under s->lock: the live files with a section of tenant t, each pinned
 * (segment_file.pins), into *files (malloc'd; count in *count, 0 with
 * *files NULL when there are none). 0 or -ENOMEM (nothing pinned). The
 * caller reads them without the lock and lets them go with
 * store_files_unpin.
 */
int store_pin_tenant_files(tally_store *s, const tenant *t, segment_file ***files,
			   uint32_t *count);
/* Without s->lock (takes it): drops a pin of t's memtable m
 * (memtable.pins, taken under the lock by a query or an events listing
 * that reads it without the lock: a frozen one's rows, immutable once
 * frozen, or an active one's rollup, under its rollup_lock), counting its
 * rollup at *rollup_bytes (read under its rollup_lock; NULL: the reader
 * did not grow the rollup) if m is still t's frozen memtable; frees m if a
 * flush dropped it meanwhile and this was its last pin. */
void store_memtable_unpin(tally_store *s, const tenant *t, memtable *m, const size_t *rollup_bytes);
/* Without s->lock (takes it): drops the pins of files[0, count); closes and
 * unlinks those that a compaction retired meanwhile once their last pin is
 * gone, and drops the query cache's entries of every retired one. Reuses
 * files[] as scratch. */
void store_files_unpin(tally_store *s, segment_file **files, uint32_t count);

/* The fingerprint expiry pass (the background worker runs it each tick;
 * tests call it directly): once fingerprint_day_min has moved since the
 * last pass, removes the older fingerprints, in steps that each take the
 * store lock. Without the lock. */
void store_expire_dedup(tally_store *s);

/* query.c: checks a request's filters (count, known dimensions, 1 to
 * TALLY_FILTER_VALUES_MAX values, each with its bytes): 0, or
 * TALLY_E_INVALID with errmsg set. */
int query_filters_check(const tally_filter *filters, uint32_t count, char *errmsg);

/* query.c: frees the decoded-block cache. */
void query_cache_free(tally_store *s);
/* query.c: drops the entries of files[0, count) (ids of files no longer
 * live), but for those a query has pinned: each such query drops them
 * when it lets the file go (store_files_unpin). Takes cache_lock: never
 * called with s->lock held. */
void query_cache_forget_files(tally_store *s, const uint64_t *file_ids, uint32_t count);
/* The bytes the query cache held when cache_lock was last let go. */
size_t query_cache_bytes(tally_store *s);
/*
 * Decodes the rollup pages of the given tenants' sections of f (a file a
 * flush or compaction just published) and adds them to the query cache,
 * so a dashboard's next query does not decode them first. Called without
 * s->lock (it takes it per section to add the entry) and with f pinned or
 * s->compact_mutex held, so f stays live. Adds nothing once f is retired (a
 * compaction replaced it while it was pinned, and forgot its entries
 * then). Stops once the cache holds half of its limit, and skips, without
 * reading it, a section whose decoded size (at least its cells' scalar
 * columns and its group table) would pass that. Errors only leave
 * sections undecoded (queries decode them).
 */
void query_cache_warm(tally_store *s, const segment_file *f, const uint32_t *tenant_ids,
		      uint32_t count);

#endif /* TALLY_STORE_INTERNAL_H */
