/*
 * tally.h — the public interface of libtally, the tally storage engine.
 *
 * The engine stores usage events for many tenants. Every call that touches
 * events names the tenant explicitly; the tenant is never read from an event.
 * An event batch is acknowledged (tally_ingest returns 0) only after the WAL
 * record that holds it is durable (its fsync returned 0).
 *
 * Conventions
 *   - Every function that can fail returns an int: 0 on success, a negative
 *     code otherwise. System call failures are -errno; the engine's own codes
 *     are the TALLY_E_* values below. tally_strerror() names any of them.
 *   - Strings in events are (pointer, length) byte ranges, not NUL-terminated.
 *     The engine copies what it keeps; the caller's memory is never retained.
 *   - Tenant names are NUL-terminated, 1..TALLY_TENANT_SIZE_MAX bytes of
 *     [A-Za-z0-9._-].
 *   - Time is int64 microseconds since the Unix epoch, UTC. Money is int64
 *     micro-units of USD.
 *
 * Threading: a tally_store may be used from several threads at once; calls
 * are serialised internally where they must be (see engine/README.md).
 */
#ifndef TALLY_H
#define TALLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tally_io.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Limits (named once, checked before memory is committed) ---------- */
#define TALLY_EVENT_ID_SIZE_MAX 64
#define TALLY_TYPE_SIZE_MAX 64
#define TALLY_DIMENSION_SIZE_MAX 128 /* project, agent, model, user */
#define TALLY_TENANT_SIZE_MAX 64
#define TALLY_BATCH_EVENTS_MAX 65536
/* How old a backfilled event may be: the data horizon queries cover (10
 * years, TALLY_QUERY_RANGE_MAX_US below). */
#define TALLY_BACKFILL_AGE_MAX_US TALLY_QUERY_RANGE_MAX_US
#define TALLY_ERRMSG_SIZE 512

#define TALLY_FSYNC_HIST_BUCKETS 14 /* buckets of tally_stats.wal_fsync_hist */

#define TALLY_US_PER_SECOND INT64_C(1000000)
#define TALLY_US_PER_DAY (INT64_C(86400) * TALLY_US_PER_SECOND)

/* ---- Error codes -------------------------------------------------------- */
enum tally_error {
	TALLY_OK = 0,
	TALLY_E_INVALID = -10001,  /* bad argument: the caller's mistake */
	TALLY_E_CORRUPT = -10002,  /* on-disk data failed a check */
	TALLY_E_READONLY = -10003, /* a WAL write/fsync failed: writes refused until reopen */
	TALLY_E_VERSION = -10004,  /* a file has a format version this build does not read */
	TALLY_E_LOCKED = -10005,   /* the data directory is held by another process */
	TALLY_E_TENANT = -10006,   /* tenant name is malformed */
	TALLY_E_BUSY = -10007,     /* the engine cannot keep up; retry later */
	TALLY_E_CLOSED = -10008,   /* the store is shutting down */
	TALLY_E_LIMIT = -10009,    /* a named limit would be exceeded */
	TALLY_E_NOTFOUND = -10010, /* no such tenant / file; changes older than the change map's floor */
};

/* A static description of any code returned by this library ("-errno" too). */
const char *tally_strerror(int code);

/* ---- The event model ---------------------------------------------------- */
typedef struct tally_str {
	const char *ptr; /* may be NULL when len == 0 */
	uint32_t len;
} tally_str;

enum tally_status {
	TALLY_STATUS_OK = 0,
	TALLY_STATUS_ERROR = 1,
	TALLY_STATUS_TIMEOUT = 2,
	TALLY_STATUS_CANCELLED = 3,
	TALLY_STATUS_COUNT = 4,
};

typedef struct tally_event {
	tally_str event_id; /* 1..64 bytes, the idempotency key within a tenant */
	int64_t time_us;    /* within the lateness horizon (a backfill batch: see tally_batch) */
	tally_str type;     /* <= TALLY_TYPE_SIZE_MAX bytes */
	tally_str project;  /* <= TALLY_DIMENSION_SIZE_MAX bytes each */
	tally_str agent;
	tally_str model;
	tally_str user;
	uint32_t status; /* enum tally_status */
	uint32_t duration_ms;
	uint64_t tokens_in;
	uint64_t tokens_out;
	int64_t cost_micros;
} tally_event;

enum tally_result_code {
	TALLY_ACCEPTED = 0,  /* stored; counted once */
	TALLY_DUPLICATE = 1, /* same id and same payload already stored: not counted again */
	TALLY_CONFLICT = 2,  /* same id, different payload: rejected, the stored event stands */
	TALLY_REJECTED = 3,  /* invalid; see the reason */
};

enum tally_reject_reason {
	TALLY_REASON_NONE = 0,
	TALLY_REASON_MISSING_ID,
	TALLY_REASON_ID_TOO_LONG,
	TALLY_REASON_TIME_TOO_OLD,      /* before now - lateness horizon (backfill: now - TALLY_BACKFILL_AGE_MAX_US) */
	TALLY_REASON_TIME_IN_FUTURE,    /* after now + future tolerance */
	TALLY_REASON_TYPE_TOO_LONG,
	TALLY_REASON_PROJECT_TOO_LONG,
	TALLY_REASON_AGENT_TOO_LONG,
	TALLY_REASON_MODEL_TOO_LONG,
	TALLY_REASON_USER_TOO_LONG,
	TALLY_REASON_UNKNOWN_STATUS,
	TALLY_REASON_NOT_UTF8,          /* a string (id, type, a dimension): not UTF-8, or a NUL */
	TALLY_REASON_COUNT,
};

typedef struct tally_ingest_result {
	uint8_t code;   /* enum tally_result_code */
	uint8_t reason; /* enum tally_reject_reason, NONE unless REJECTED */
} tally_ingest_result;

/* "ACCEPTED", "DUPLICATE", "CONFLICT", "REJECTED"; "UNKNOWN" for any other. */
const char *tally_result_name(int code);
/* "none", "missing event id", "time too old (before the lateness horizon)",
 * ...; "unknown reason" for any other. The texts `tally ingest` prints. */
const char *tally_reason_text(int reason);

/* The index of the first byte that makes s[0, n) other than UTF-8 as
 * PostgreSQL takes it (shortest forms, no surrogates, at most U+10FFFF)
 * and without NUL, or SIZE_MAX when it is such text. Every string of an
 * event must be (TALLY_REASON_NOT_UTF8): each may reach the billing
 * database. */
size_t tally_utf8_invalid_at(const uint8_t *s, size_t n);

/* The largest memtable_bytes_max: a tenant's memtable (at most that plus
 * one call) must fit a segment's dictionary block (1 GiB) and its event
 * ids the 32-bit offsets of a row set. */
#define TALLY_MEMTABLE_BYTES_MAX_LIMIT ((uint64_t)768 << 20)

/* The default compact_section_rows_max (tallyd shows it in its help). */
#define TALLY_COMPACT_SECTION_ROWS_DEFAULT (1u << 22)

/* ---- Options ------------------------------------------------------------ */
typedef struct tally_options {
	const tally_io *io;              /* NULL: the liburing-backed default */
	int64_t lateness_past_us;        /* default 35 days */
	int64_t lateness_future_us;      /* default 5 minutes */
	uint64_t memtable_bytes_max;     /* flush threshold, default 512 MiB, at most
					  * TALLY_MEMTABLE_BYTES_MAX_LIMIT (RAM: up to twice that,
					  * plus one call's growth on each side, while a flush runs,
					  * also beside a compaction) */
	int64_t memtable_age_max_us;     /* the background worker also flushes once the oldest
					  * unflushed event was acknowledged this long ago (wall
					  * clock), so a slow store does not keep hours of events
					  * in RAM and in the WAL a crash replays; default 1 hour;
					  * 0: no age limit; negative: TALLY_E_INVALID at open */
	uint64_t wal_file_bytes_max;     /* WAL file rotation size, default 64 MiB */
	uint64_t wal_buffer_bytes_max;   /* pending, not yet written WAL bytes; default 32 MiB */
	uint32_t group_commit_window_us; /* extra wait to gather a group; default 0 */
	int zstd_level;                  /* default 3 */
	uint32_t compact_files_min;      /* compact when this many small segment files are live; default 8 */
	uint32_t flush_threads;          /* a flush or compaction of at least
					  * flush_parallel_rows_min rows splits its tenants into
					  * this many segment files, written at once on a thread
					  * each (at most 4, and the tenant count); 0, the
					  * default: the online CPUs */
	uint64_t flush_parallel_rows_min; /* a smaller flush or compaction writes one file; 0,
					   * the default: FLUSH_PARALLEL_ROWS_MIN (200,000) */
	uint64_t compact_section_rows_max; /* a compaction cuts a tenant with more rows in its
					    * inputs by time into sections of about this many
					    * rows, in files of their own, so its RAM stays
					    * bounded however large the tenant; 0, the default:
					    * TALLY_COMPACT_SECTION_ROWS_DEFAULT (4,194,304; docs/
					    * architecture.md, "Large tenants") */
	bool background;                 /* run the background threads (flush, compaction, rollups);
					  * default true */
	int64_t minute_pages_retention_us; /* minute rollup pages kept this long; default 48 hours
					    * (hour and day pages are kept as long as the raw events) */
	uint32_t query_rows_behind_max;  /* a query reads up to this many unflushed rows that the
					  * live rollup does not have yet, more it rolls up first;
					  * default 262,144 (docs/queries.md, "Live") */
	uint32_t ingest_part_bytes_max;  /* an ingest call whose WAL record would pass this is
					  * stored in parts of consecutive batches, each its own
					  * lock hold and record (tally_ingest_submit_many); 0,
					  * the default: INGEST_PART_BYTES_MAX (1 MiB); at most the
					  * WAL's record limit (64 MiB) */
	uint64_t query_cache_bytes_max;  /* decoded rollup pages and section dictionaries kept
					  * for queries, least recently used out first (a query
					  * that leaves more evicts down to half; a flush warms
					  * at most half); 0, the default: 256 MiB */
	uint64_t query_bytes_max;        /* memory one query may build (its accumulators with their
					  * duration and user sketches, output groups and their
					  * keys) before it is TALLY_E_LIMIT; 0, the default: 2 GiB */
} tally_options;

/* Fills *options with the defaults above. */
void tally_options_default(tally_options *options);

/* ---- The store ---------------------------------------------------------- */
typedef struct tally_store tally_store;

/*
 * Opens (creating if absent) the data directory `dir` and recovers it:
 * manifest, segment files, then WAL replay. On failure returns a negative
 * code, leaves *out NULL and writes a message naming the file and offset
 * into errmsg (TALLY_ERRMSG_SIZE bytes; may be NULL). A NULL dir, or one
 * of 4,096 bytes or more, is TALLY_E_INVALID.
 * options may be NULL for the defaults. The store owns nothing of options
 * except the io pointer, which must outlive the store.
 */
int tally_store_open(const char *dir, const tally_options *options,
		     tally_store **out, char *errmsg);

/*
 * Finishes pending WAL writes, stops the background threads, and frees the
 * store. Does not flush memtables (the WAL holds them). Returns the sticky
 * error if the store had failed, 0 otherwise; the store is freed either way.
 */
int tally_store_close(tally_store *store);

/*
 * The last error message recorded by the store (names operation and path).
 * tally_store_errmsg returns the store's own buffer: read it only while no
 * other thread uses the store (after a failed open or a single-threaded
 * call). Any thread may use tally_store_errmsg_copy: another thread's
 * failure may be recording a message meanwhile.
 */
const char *tally_store_errmsg(const tally_store *store);
void tally_store_errmsg_copy(const tally_store *store, char *out, size_t size);

/*
 * Ingests `count` events for `tenant` and waits until they are durable.
 * results must hold `count` entries; each gets its own outcome, and a bad
 * event never affects the others. Returns 0 when every result is final and
 * acknowledged (durable), or a negative code, in which case nothing in this
 * batch is acknowledged (TALLY_E_READONLY after a failed write or fsync).
 * count may be 0; count > TALLY_BATCH_EVENTS_MAX is TALLY_E_LIMIT. Past
 * memtable_bytes_max the call waits for the background flush; while the
 * last flush failed and left the store writable (a full disk), it returns
 * TALLY_E_BUSY at once instead, with nothing stored, until a flush
 * succeeds (retry later; tally_store_errmsg names the flush's error).
 */
int tally_ingest(tally_store *store, const char *tenant,
		 const tally_event *events, size_t count,
		 tally_ingest_result *results);

/*
 * The two halves of tally_ingest, for callers that must not block on fsync
 * (the server's event loop). tally_ingest_submit fills results and
 * *commit_lsn; the results may be reported to the client only after
 * tally_commit_wait(store, *commit_lsn) returned 0 or tally_durable_lsn()
 * reached *commit_lsn.
 */
int tally_ingest_submit(tally_store *store, const char *tenant,
			const tally_event *events, size_t count,
			tally_ingest_result *results, uint64_t *commit_lsn);
int tally_commit_wait(tally_store *store, uint64_t commit_lsn);

/*
 * Several tenants' batches in one call: one lock hold and one WAL record
 * for all of them (a server submits every IngestBatch request of one event
 * loop pass this way). A call whose record would pass 1 MiB is stored in
 * parts of consecutive batches (a batch is never split), each with its own
 * lock hold and record, each stored or not on its own. A failed call, or
 * part, stores nothing in memory either: the store stays writable unless
 * the WAL itself failed.
 * Each batch gets its own status: 0, or TALLY_E_TENANT / TALLY_E_LIMIT /
 * TALLY_E_INVALID for that batch alone (its results are then untouched),
 * or, in a call stored in parts, the error of a part that failed for each
 * batch of that part (nothing of it stored; its results are not final).
 * The call returns 0 when the results of every batch with status 0 are
 * final; they are acknowledged once *commit_lsn is durable, exactly as for
 * tally_ingest_submit. A negative return means nothing in the call is
 * acknowledged (besides the errors of tally_ingest_submit: -errno or
 * TALLY_E_CORRUPT when the stored history a backfill batch is checked
 * against could not be read; the store stays writable then).
 *
 * Backfill (an administrator's import of old history): in a batch with
 * backfill set, an event older than the lateness horizon is accepted if it
 * is at most TALLY_BACKFILL_AGE_MAX_US old (older: REJECTED,
 * TALLY_REASON_TIME_TOO_OLD); events inside the horizon are treated as in
 * any batch. Such an old event is a DUPLICATE (same payload) or CONFLICT
 * (different payload) only of a stored event of the same tenant, id and
 * UTC day (earlier events of the same call included): the same id on
 * another day of old history is another event. So re-running an import
 * never counts anything twice. Checking old events reads that tenant's
 * segments of their days (outside the store lock): a backfill batch costs
 * far more than a normal one; docs/architecture.md, "Backfill".
 */
typedef struct tally_batch {
	const char *tenant;
	const tally_event *events;
	size_t count;
	tally_ingest_result *results; /* count entries, filled */
	bool backfill;                /* accept history older than the horizon (see above) */
	int status;                   /* out */
} tally_batch;
int tally_ingest_submit_many(tally_store *store, tally_batch *batches, size_t batch_count,
			     uint64_t *commit_lsn);

/*
 * tally_ingest for one backfill batch (see tally_batch): validates,
 * deduplicates and waits until the batch is durable. Same results and
 * return codes as tally_ingest, plus the history read errors above.
 */
int tally_ingest_backfill(tally_store *store, const char *tenant,
			  const tally_event *events, size_t count,
			  tally_ingest_result *results);

uint64_t tally_durable_lsn(tally_store *store);

/* ---- Changed days (the billing export; docs/architecture.md) ------------ */
/*
 * The store keeps, per UTC day (days since 1970-01-01; all tenants
 * together), its change LSN: the highest LSN of a WAL record that stored
 * (ACCEPTED) an event of that day, late and backfilled events included.
 * DUPLICATE, CONFLICT and REJECTED events mark nothing; flush and
 * compaction change nothing. The map survives restarts exactly: the
 * manifest keeps the marks of events in segment files, WAL replay makes
 * the others again with the same LSNs. It holds at most CHANGE_DAYS_MAX
 * (engine/tally_limits.h, 4,096) days; past that the smallest day is
 * dropped under a floor (see tally_day_change_lsn), which only happens to
 * days that left the backfill horizon more than a year before.
 *
 * The export protocol: W = tally_change_watermark(); read the day's
 * aggregates; tally_change_barrier() (0: nothing the read saw can be lost
 * in a crash); record (day, W). Later, re-export exactly the days that
 * tally_changed_days(W) lists, or whose tally_day_change_lsn is > W.
 */

/*
 * The days whose change LSN is > since_lsn, ascending, with their change
 * LSNs: days[i] and lsns[i] for i < *count. At most cap are written (days
 * and lsns may be NULL when cap is 0). Returns 0; TALLY_E_LIMIT when more
 * than cap days qualify (*count says how many; the first cap are written);
 * TALLY_E_NOTFOUND when a day dropped under the floor changed after
 * since_lsn, so no list can be complete (*count is 0; ask
 * tally_day_change_lsn per day instead); TALLY_E_INVALID for a NULL count,
 * or NULL arrays with cap > 0.
 */
int tally_changed_days(tally_store *store, uint64_t since_lsn, int32_t *days, uint64_t *lsns,
		       size_t cap, size_t *count);

/*
 * The change LSN of one UTC day into *lsn: 0 if no event of the day was
 * ever stored (since the store began keeping the map: a store upgraded
 * from manifest version 1 starts empty), and for a day at or below the
 * floor, the highest LSN ever dropped under it (an upper bound). 0, or
 * TALLY_E_INVALID for a NULL lsn.
 */
int tally_day_change_lsn(tally_store *store, int32_t day, uint64_t *lsn);

/*
 * The durable LSN: every event acknowledged so far has change LSN <= it,
 * and every event stored from now on a higher one (it never moves back,
 * across restarts either). Read it BEFORE reading a day's aggregates:
 * every event with LSN <= the watermark is visible to that read, and an
 * event the read may miss (appended but not yet durable when the
 * watermark was read, or appended later) has a higher LSN, so
 * tally_changed_days(watermark) lists its day. Never blocks.
 */
uint64_t tally_change_watermark(tally_store *store);

/*
 * Waits until every event a read made before this call could have seen is
 * durable (reads see accepted events a moment before they are
 * acknowledged). Call it after reading aggregates and before recording
 * the export: an event that was read but then lost in a crash (never
 * acknowledged) would otherwise stay counted in the export with no change
 * to report. 0, or the store's sticky error (a failed WAL write or fsync,
 * or a failed ingest: then what was read may not survive; do not record
 * the export).
 */
int tally_change_barrier(tally_store *store);

/*
 * Calls fn for every stored event of tenant with from_us <= time < to_us, in
 * time order (ties in ingest order within a source). The event's strings are
 * valid only during the call. fn returns 0 to continue, non-zero to stop
 * (tally_scan then returns that value). An unknown tenant yields nothing.
 * It holds the store's lock from start to end, fn's calls included (fn
 * must not call the store; every other call waits): meant for tests and
 * offline tools. A server lists events with tally_list_events, which reads
 * segment files without the lock.
 */
typedef int (*tally_scan_fn)(void *ctx, const tally_event *event);
int tally_scan(tally_store *store, const char *tenant, int64_t from_us,
	       int64_t to_us, tally_scan_fn fn, void *ctx);

/* Writes every memtable to a new segment file and retires the WAL files it
 * covered. Synchronous. */
int tally_flush(tally_store *store);

/* Merges the live segment files (same tenant and day segments become one),
 * into several files written at once when they hold many rows (see
 * flush_threads). Synchronous. */
int tally_compact(tally_store *store);

typedef struct tally_stats {
	uint64_t tenant_count;
	uint64_t events_memtable;      /* rows not yet in segments */
	uint64_t memtable_bytes;
	uint64_t memtable_bytes_peak;  /* the most memtable_bytes held since open, at the end of an
					* ingest call or a rollup slice (WAL replay at open included) */
	uint64_t segment_file_count;
	uint64_t segment_count;        /* (tenant, day) segments across files */
	uint64_t segment_rows;
	uint64_t segment_bytes;
	uint64_t wal_file_count;
	uint64_t wal_bytes;
	bool wal_direct_io;            /* the WAL writes its newest file with O_DIRECT; false before
					* its first file, or where the file system refuses direct
					* I/O (then it writes through the page cache) */
	uint64_t dedup_entries;        /* ids in the lateness horizon */
	uint64_t dedup_bytes;          /* RAM held by the fingerprint index */
	uint64_t durable_lsn;
	uint64_t flush_count;
	uint64_t compaction_count;
	uint64_t rollup_bytes;         /* rollup pages in live segment files, on disk */
	uint64_t rollup_cells;         /* cells in those pages (minute, hour, day) */
	uint64_t rollup_live_bytes;    /* RAM of the pages of not-yet-flushed events */
	uint64_t query_cache_bytes;    /* RAM of decoded rollup pages and dictionaries kept for queries */
	int sticky_error;              /* 0, or why writes are refused */
	int flush_failing;             /* 0, or the error of the last flush, which failed and left
					* the store writable (a full disk): past memtable_bytes_max
					* ingest is TALLY_E_BUSY until a flush succeeds */
	/* WAL commit fsyncs since open: the fdatasync after each group commit
	 * write (successful or not), timed on the io clock (tally_io.now_us).
	 * A new WAL file's header and directory syncs (once per
	 * wal_file_bytes_max) are not included. */
	uint64_t wal_fsync_count;
	uint64_t wal_fsync_us_total;
	/* Per bucket, not cumulative: bucket i counts the fsyncs that took more
	 * than tally_fsync_hist_bound_us(i - 1) and at most
	 * tally_fsync_hist_bound_us(i) microseconds (bucket 0: at most its
	 * bound). The buckets sum to wal_fsync_count. */
	uint64_t wal_fsync_hist[TALLY_FSYNC_HIST_BUCKETS];
	/* Ingest calls since open (every tally_ingest_submit_many, and the
	 * calls built on it), and on the io clock: how long they applied
	 * their events holding the store lock, and how long they waited to
	 * get there (for the lock, or for a flush to catch up). The lock is
	 * what bounds ingest throughput (docs/benchmarks.md). The longest
	 * one call held it is what a query or another ingest may have waited
	 * for behind it (a table of a large tenant growing, for one). */
	uint64_t ingest_calls;
	uint64_t ingest_lock_hold_us;
	uint64_t ingest_lock_wait_us;
	uint64_t ingest_lock_hold_max_us;
	/* Fingerprint expiry (once per UTC day, on the background worker;
	 * docs/architecture.md, "Deduplication"), on the io clock: expiry
	 * passes finished since open, how long the last one took from start
	 * to end, and the longest any one step of any pass held the store
	 * lock (what an ingest or a query may have waited for). */
	uint64_t dedup_expiry_count;
	uint64_t dedup_expiry_us_last;
	uint64_t dedup_expiry_hold_max_us;
} tally_stats;

int tally_store_stats(tally_store *store, tally_stats *stats);

/*
 * Calls fn once for every tenant the store knows (every tenant that ever
 * had an event accepted, including those only in the WAL), in no
 * particular order. fn runs with the store's lock held: it must not call
 * the store. 0.
 */
typedef void (*tally_tenant_fn)(void *ctx, const char *tenant);
int tally_tenants(tally_store *store, tally_tenant_fn fn, void *ctx);

/*
 * The upper bound, in microseconds, of bucket i of tally_stats.wal_fsync_hist:
 * 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
 * 1000000, and INT64_MAX for the last bucket (+Inf). TALLY_E_INVALID for i
 * outside [0, TALLY_FSYNC_HIST_BUCKETS).
 */
int64_t tally_fsync_hist_bound_us(int i);

/* ---- Queries (rollup pages; docs/queries.md) ---------------------------- */

#define TALLY_QUERY_ROWS_MAX 100000     /* largest limit a query may ask for */
#define TALLY_QUERY_CELLS_MAX 1000000   /* (bucket, group) rows a query may build before order and limit */
#define TALLY_QUERY_BUCKETS_MAX 100000  /* time buckets one query may span */
#define TALLY_QUERY_RANGE_MAX_US (INT64_C(3660) * TALLY_US_PER_DAY) /* the data horizon: 10 years */
#define TALLY_QUANTILES_MAX 8
#define TALLY_FILTER_VALUES_MAX 256
#define TALLY_FILTERS_MAX 16
#define TALLY_TIME_ZONE_SIZE_MAX 64
#define TALLY_LIST_EVENTS_MAX 10000     /* largest page of a raw event listing */
#define TALLY_CURSOR_SIZE 192           /* an opaque listing cursor, text, NUL included */

/* The group-by and filter dimensions. */
enum tally_dim {
	TALLY_DIM_PROJECT = 0,
	TALLY_DIM_AGENT,
	TALLY_DIM_MODEL,
	TALLY_DIM_TYPE,
	TALLY_DIM_STATUS,
	TALLY_DIM_COUNT,
};
/* "project", "agent", "model", "type", "status"; parse returns the enum or
 * TALLY_E_INVALID for an unknown name. */
const char *tally_dim_name(int dim);
int tally_dim_parse(const char *name);
/* "ok", "error", "timeout", "cancelled" (the status dimension's values). */
const char *tally_status_name(int status);

enum tally_bucket {
	TALLY_BUCKET_NONE = 0, /* one bucket for the whole range */
	TALLY_BUCKET_MINUTE,
	TALLY_BUCKET_HOUR,
	TALLY_BUCKET_DAY,
	TALLY_BUCKET_MONTH,
};

/* Aggregates a result can be ordered by. */
enum tally_agg {
	TALLY_AGG_COUNT = 0,
	TALLY_AGG_TOKENS_IN,
	TALLY_AGG_TOKENS_OUT,
	TALLY_AGG_TOKENS,        /* tokens_in + tokens_out */
	TALLY_AGG_COST,
	TALLY_AGG_DURATION_SUM,
	TALLY_AGG_DURATION_MIN,
	TALLY_AGG_DURATION_MAX,
	TALLY_AGG_ERRORS,        /* count of status != ok */
	TALLY_AGG_QUANTILE,      /* the quantile order_quantile of the request */
	TALLY_AGG_DISTINCT_USERS,
	TALLY_AGG_COUNT_,
};
const char *tally_agg_name(int agg);

/* dimension IN (values...): a row matches when its value equals one of them. */
typedef struct tally_filter {
	int dim; /* enum tally_dim */
	const tally_str *values;
	uint32_t value_count; /* 1..TALLY_FILTER_VALUES_MAX */
} tally_filter;

typedef struct tally_query {
	int64_t from_us;           /* [from, to), from < to */
	int64_t to_us;
	int bucket;                /* enum tally_bucket */
	const char *time_zone;     /* IANA name for local buckets; NULL or "" = UTC */
	uint32_t group_by;         /* bit (1 << enum tally_dim) per dimension */
	const tally_filter *filters;
	uint32_t filter_count;     /* filters on different dims AND; at most TALLY_FILTERS_MAX */
	double quantiles[TALLY_QUANTILES_MAX]; /* ranks in [0, 1], duration quantiles */
	uint32_t quantile_count;
	bool distinct_users;
	/* Order: by default rows come by bucket, then by group values
	 * (bytewise); with order_by_agg set, by that aggregate (ties by bucket
	 * and group), descending if asked: top-N with limit. */
	bool order_by_agg;
	int order_agg;             /* enum tally_agg */
	uint32_t order_quantile;   /* index into quantiles for TALLY_AGG_QUANTILE */
	bool descending;
	uint32_t limit;            /* 1..TALLY_QUERY_ROWS_MAX; 0 = TALLY_QUERY_ROWS_MAX */
	/* Keyset paging, in the default order only: with `after` set, the
	 * answer starts after the row whose bucket_start_us is after_bucket_us
	 * (from_us without buckets) and whose group values are after_group
	 * (the grouped dimensions'; the others are ignored), whether or not
	 * such a row exists; `truncated` says rows follow the last one. Pass
	 * the last row of a page to get the next page. */
	bool after;
	int64_t after_bucket_us;
	tally_str after_group[TALLY_DIM_COUNT];
} tally_query;

/*
 * Sums are kept modulo 2^64 in their fields, and exactly: a sum's wraps
 * count how many times its exact value passed its field's range (tokens
 * and duration: 0..2^64-1, so wraps >= 0; cost: the int64 range, so wraps
 * is negative when the exact sum is below INT64_MIN). The exact sum is
 * field + wraps * 2^64, the field read as its own type. Every wraps is 0
 * unless some sum left its range: events may carry any uint64 tokens and
 * any int64 cost. Exact for fewer than 2^63 events in a row.
 */
typedef struct tally_wraps {
	int64_t tokens_in;
	int64_t tokens_out;
	int64_t cost_micros;
	int64_t duration_ms_sum;
} tally_wraps;

/* One result row: one bucket and one combination of the grouped dimensions. */
typedef struct tally_row {
	int64_t bucket_start_us;   /* the bucket's first instant (UTC); from_us for NONE */
	int64_t bucket_end_us;     /* the instant after it; to_us for NONE */
	tally_str group[TALLY_DIM_COUNT]; /* the value of each grouped dimension, else empty */
	uint64_t count;
	uint64_t tokens_in;
	uint64_t tokens_out;
	int64_t cost_micros;
	uint64_t duration_ms_sum;
	uint32_t duration_ms_min;  /* 0 when count == 0 */
	uint32_t duration_ms_max;
	uint64_t status_count[TALLY_STATUS_COUNT];
	double quantile_ms[TALLY_QUANTILES_MAX]; /* within 1% of the exact value at rank floor(q * (count - 1)) */
	uint64_t distinct_users;   /* exact up to 8192, then HyperLogLog: 0.41% standard
				    * error, within 2% (docs/sketches.md) */
	tally_wraps wraps;         /* all 0 unless a sum left its 64-bit range */
} tally_row;

typedef struct tally_result {
	tally_row *rows;
	size_t row_count;
	bool truncated;            /* more rows matched than the limit */
	/* How the answer was assembled (for tests, the benchmark and EXPLAIN-like output). */
	uint64_t cells_day, cells_hour, cells_minute; /* rollup cells merged */
	uint64_t raw_rows;         /* raw events read for edges finer than the pages */
} tally_result;

/*
 * Runs an aggregate query over the tenant's events (stored and not yet
 * flushed: every acknowledged event is counted). Counts and sums are exact
 * (a sum past its 64-bit range: its field and wraps, tally_wraps).
 * Buckets with no events are omitted. An unknown tenant gives an empty
 * result. Errors (TALLY_E_INVALID with errmsg explaining: from >= to, range
 * longer than TALLY_QUERY_RANGE_MAX_US, too many buckets, unknown dimension
 * or aggregate, unknown time zone, limit over the maximum, too many
 * filters or values; TALLY_E_TENANT for a bad tenant name; TALLY_E_LIMIT
 * when the answer would hold more than TALLY_QUERY_CELLS_MAX (bucket, group)
 * rows, or build more than options.query_bytes_max, before its order and
 * limit are applied) never return a partial result. A query with bucket
 * TALLY_BUCKET_NONE, grouped, in the default order is the exception to
 * the rows limit: its page is answered in a window of the groups after
 * its cursor, narrowed until they fit (docs/queries.md, "Windows").
 * *out is freed with tally_result_free.
 */
int tally_query_run(tally_store *store, const char *tenant, const tally_query *query,
		    tally_result **out, char *errmsg);
void tally_result_free(tally_result *result);

/*
 * Raw event listing, in (time, event id) order: the events of tenant with
 * from <= time < to that pass every filter (and whose user equals `user`
 * when user.len > 0), after `cursor` (NUL-terminated text from a previous
 * page's next_cursor; NULL or "" for the first page), at most limit
 * (1..TALLY_LIST_EVENTS_MAX) per call. fn gets each event (strings valid
 * during the call). next_cursor (TALLY_CURSOR_SIZE bytes) receives the
 * cursor of the following page, or "" when there is no more.
 */
typedef struct tally_list_request {
	int64_t from_us;
	int64_t to_us;
	const tally_filter *filters;
	uint32_t filter_count;
	tally_str user;
	const char *cursor;
	uint32_t limit;
} tally_list_request;
int tally_list_events(tally_store *store, const char *tenant, const tally_list_request *request,
		      tally_scan_fn fn, void *ctx, char *next_cursor, char *errmsg);

/* ---- Offline inspection (a directory no process holds) ------------------ */

/* Bytes per column, in the order of the segment format (docs/formats.md). */
enum tally_column {
	TALLY_COL_TIME = 0,
	TALLY_COL_EVENT_ID,
	TALLY_COL_TYPE,
	TALLY_COL_PROJECT,
	TALLY_COL_AGENT,
	TALLY_COL_MODEL,
	TALLY_COL_USER,
	TALLY_COL_STATUS,
	TALLY_COL_TOKENS_IN,
	TALLY_COL_TOKENS_OUT,
	TALLY_COL_COST_MICROS,
	TALLY_COL_DURATION_MS,
	TALLY_COL_COUNT,
};
const char *tally_column_name(int column);

typedef struct tally_segment_info {
	const char *tenant;
	uint64_t file_id;
	int32_t day;          /* days since 1970-01-01, UTC */
	uint64_t rows;
	int64_t time_min_us;   /* the segment's first event time (exact) */
	int64_t time_max_us;   /* its last */
	uint64_t stored_bytes; /* on disk, compressed */
	uint64_t raw_bytes;    /* encoded, before zstd */
} tally_segment_info;

typedef struct tally_inspect_report {
	uint64_t segment_file_count;
	uint64_t segment_count;
	uint64_t rows;
	uint64_t file_bytes;                    /* segment files, headers and footers included */
	uint64_t column_stored_bytes[TALLY_COL_COUNT];
	uint64_t column_raw_bytes[TALLY_COL_COUNT];
	uint64_t dictionary_bytes;              /* per-tenant string dictionaries */
	uint64_t rollup_bytes[3];               /* rollup page chunks on disk: minute, hour, day */
	uint64_t rollup_group_bytes;            /* rollup group tables (one per tenant section) */
	uint64_t rollup_cells[3];
	uint64_t wal_file_count;
	uint64_t wal_bytes;
	uint64_t manifest_generation;
	uint32_t manifest_version;
	uint64_t wal_replay_lsn;   /* the manifest's: WAL records from this LSN on are replayed */
	uint64_t wal_file_id_next; /* the manifest's next WAL file id; 0: not recorded (version < 3) */
} tally_inspect_report;

/* One segment file, as tally_inspect_files reports it. */
typedef struct tally_file_info {
	uint64_t file_id;      /* its name is this id as 16 hex digits, then ".seg" */
	uint32_t version;      /* the segment format version of its header (docs/formats.md) */
	bool run_next;         /* its header's RUN_NEXT flag: a later file of the run one flush
				* or compaction wrote (a large tenant's later time spans, or
				* the parallel files of a flush), compacted together with
				* the files before it; false before version 5, which has
				* no flag */
	uint64_t bytes;        /* the whole file on disk */
	uint32_t tenant_count; /* tenant sections */
	uint64_t segment_count; /* (tenant, day) segments */
	uint64_t rows;
} tally_file_info;

/*
 * Reads the manifest and every segment footer of `dir` (without taking the
 * store lock's writer role) and reports totals; calls segment_fn, if not
 * NULL, once per segment. Returns 0 or a negative code with errmsg set.
 */
typedef void (*tally_segment_fn)(void *ctx, const tally_segment_info *info);
int tally_inspect(const char *dir, tally_inspect_report *report,
		  tally_segment_fn segment_fn, void *ctx, char *errmsg);

/*
 * tally_inspect, and calls file_fn, if not NULL, once per live segment
 * file, in the manifest's order (ascending ids), before segment_fn is
 * called for that file's segments.
 */
typedef void (*tally_file_fn)(void *ctx, const tally_file_info *info);
int tally_inspect_files(const char *dir, tally_inspect_report *report, tally_file_fn file_fn,
			tally_segment_fn segment_fn, void *ctx, char *errmsg);

/*
 * Checks every checksum in `dir`: manifest, segment file headers, footers and
 * blocks, WAL records. problem_fn is called once per problem with a message
 * that names the file and byte offset. Returns the number of problems (0 when
 * clean) or a negative code if the check itself could not run.
 */
typedef void (*tally_problem_fn)(void *ctx, const char *message);
int tally_verify(const char *dir, tally_problem_fn problem_fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif /* TALLY_H */
