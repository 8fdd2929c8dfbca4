/*
 * limits.h — the engine's internal limits, named once. Public limits (event
 * field sizes, batch size) live in tally.h.
 */
#ifndef TALLY_LIMITS_H
#define TALLY_LIMITS_H

#include "tally.h"

/* Dimensions stored as dictionary codes, in segment column order. */
enum dim {
	DIM_TYPE = 0,
	DIM_PROJECT,
	DIM_AGENT,
	DIM_MODEL,
	DIM_USER,
	DIM_COUNT,
};

#define TENANT_COUNT_MAX (1u << 20)          /* tenants per store */
#define DICT_STRINGS_MAX (1u << 24)          /* distinct strings per dimension per tenant section */
#define ROWGROUP_ROWS_MAX 65536u             /* rows per row group in a segment */
#define ROWGROUP_SMALL_ROWS_MAX 4096u        /* days up to this many rows share row groups */
#define ROWGROUP_PACKED_BYTES_MAX 4096u      /* encoded row groups below this are one block */
#define SEGMENT_FILE_FOOTER_BYTES_MAX (1u << 30)
#define SEGMENT_FILE_COUNT_MAX 4096u         /* live segment files in a manifest */
#define MANIFEST_BYTES_MAX (128u << 20)  /* holds the largest manifest (manifest.c asserts it) */
#define DEDUP_LOAD_PERCENT_MAX 85u           /* grow the fingerprint table past this load */
#define DEDUP_DAY_CANDIDATES_MAX 16u         /* fingerprint matches examined per id */
#define DEDUP_LOAD_PERCENT_MIN 50u           /* shrink the fingerprint table below this load after an expiry (16 bytes per id) */
#define DEDUP_MIGRATE_SLOTS_MIN 65536u       /* a fingerprint table this large migrates as it grows (512 KiB; smaller ones are rebuilt at once) */
#define DEDUP_MIGRATE_STEP_SLOTS 64u         /* old slots each insert moves while a fingerprint table migrates */
#define DEDUP_PREPARE_PERCENT 80u            /* past this load a migrating table's successor is made and faulted in, in step with the load */
#define DEDUP_EXPIRY_STEP_SLOTS 16384u       /* fingerprint slots an expiry step sweeps per hold of the store lock */
#define DEDUP_EXPIRY_TENANT_SLOTS 64u        /* what moving on to the next tenant counts in that budget */
#define VERIFY_CACHE_ENTRIES 16              /* decoded row groups kept for dedup verification */
#define FLUSH_FILES_MAX 4u                   /* segment files one flush or compaction writes at once, a thread each */
#define FLUSH_PARALLEL_ROWS_MIN 200000u      /* a flush or compaction of fewer rows writes one file */
#define COMPACT_SECTION_ROWS_MAX TALLY_COMPACT_SECTION_ROWS_DEFAULT /* default compact_section_rows_max: a tenant section a compaction writes */
#define MEMTABLE_AGE_MAX_US (INT64_C(3600) * 1000000) /* default memtable_age_max_us: an hour */
#define BACKGROUND_TICK_MS 200u              /* the flush worker and the compactor wake at least this often */
#define BACKGROUND_NICE 10                   /* the flush worker's and the compactor's nice, above the process's */
/* An ingest call whose WAL record would pass this many bytes is stored in
 * parts of at most this size (a single batch excepted), each with its own
 * lock hold and record: a call of 4,096 batches of 100 events held the
 * store lock for 1.05 s (docs/benchmarks.md, thirty-fifth measurement). */
#define INGEST_PART_BYTES_MAX (1u << 20)
#define ROLLUP_CATCH_UP_TICK_MS 20u          /* the rollup thread catches up queried tenants this often */
#define QUERY_ROLLUP_BEHIND_MAX 262144u      /* a query reads up to this many rows past a memtable's rollup (~50 ns each); more, it rolls them up (~0.5 us each) */
/* A query copies its tenant's active memtable's dictionary this many bytes
 * of strings per hold of the store lock before it pins its sources (about
 * 50 us each); its pinning hold copies only what was added since. */
#define QUERY_DICT_COPY_STEP_BYTES (256u << 10)
/* An events listing page reads a pinned active memtable this many rows per
 * hold of the store lock (a row checked by time alone costs a few ns; one
 * put together and filtered about 100 ns: at most about 1 ms a hold). */
#define MEMTABLE_SCAN_STEP_ROWS 8192u
/* Between two steps of such a read, it yields the CPU at most this many
 * times while ingest calls wait for the store lock (store_step_give_way). */
#define STEP_GIVE_WAY_YIELDS 64u
/* options.query_cache_bytes_max: decoded rollup pages and dictionaries */
#define QUERY_CACHE_BYTES_MAX_DEFAULT (UINT64_C(256) << 20)
/* options.query_bytes_max: what one query may build. A billing export's
 * tenant-day of 1,000,000 groups with long strings takes about 1.3 GB;
 * 2M events can make 1M accumulators whose duration sketches span every
 * bucket (9 KB each): about 9 GB without a bound. */
#define QUERY_BYTES_MAX_DEFAULT (UINT64_C(2) << 30)
#define HISTORY_PROBE_ROUNDS_MAX 4u          /* backfill history probe rounds per call without the store lock; one more may run under it */
/* UTC days the change map lists (changes.h): a 10-year history
 * (TALLY_BACKFILL_AGE_MAX_US) plus today and tomorrow is 3,662 days; the
 * rest is slack, so only days that left the backfill horizon more than a
 * year earlier are ever dropped under the map's floor. 48 KiB per map. */
#define CHANGE_DAYS_MAX 4096u
_Static_assert(CHANGE_DAYS_MAX >= TALLY_BACKFILL_AGE_MAX_US / TALLY_US_PER_DAY + 2,
	       "the change map holds every day a backfill can reach");

#endif /* TALLY_LIMITS_H */
