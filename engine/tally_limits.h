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
#define MANIFEST_BYTES_MAX (64u << 20)
#define DEDUP_LOAD_PERCENT_MAX 85u           /* grow the fingerprint table past this load */
#define DEDUP_DAY_CANDIDATES_MAX 16u         /* fingerprint matches examined per id */
#define VERIFY_CACHE_ENTRIES 16              /* decoded row groups kept for dedup verification */
#define BACKGROUND_TICK_MS 200u              /* background worker wakes at least this often */
#define ROLLUP_CATCH_UP_SLICE 16384u         /* memtable rows the worker rolls up per store lock hold */
#define HISTORY_PROBE_ROUNDS_MAX 4u          /* backfill history probe rounds per call without the store lock; one more may run under it */

#endif /* TALLY_LIMITS_H */
