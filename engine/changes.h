/*
 * changes.h — the change map: which UTC days changed, and when (in LSNs).
 *
 * For every UTC day (days since 1970-01-01; all tenants together) the map
 * keeps the change LSN: the highest LSN of a WAL record that stored an
 * event of that day. The billing export asks which days changed after the
 * watermark it recorded when it last exported them (tally_changed_days).
 *
 * Bound. The map holds at most CHANGE_DAYS_MAX days, allocated when it is
 * initialised. Past that it drops its smallest day into the floor:
 * floor_day becomes that day and floor_lsn the highest LSN ever dropped.
 * From then on a day <= floor_day is answered by the floor alone (its
 * change LSN is at most floor_lsn), and a list of the days changed after a
 * watermark below floor_lsn cannot be complete (change_map_list says so).
 * No mark is ever lost: it is either in the list or under the floor.
 *
 * Invariants: days strictly ascending; every lsn >= 1; every listed day >
 * floor_day; floor_lsn == 0 exactly when floor_day == CHANGE_FLOOR_NONE.
 * The state after a sequence of marks does not depend on their order (the
 * list keeps the CHANGE_DAYS_MAX highest days ever marked, each with its
 * highest LSN; the floor has the rest), so a WAL replay rebuilds exactly
 * the map the store had.
 *
 * Persistence is the manifest's (manifest.h, docs/formats.md "Manifest"):
 * change_map_encode / change_map_decode write and check its change section.
 * Not thread-safe: the store guards its maps with store->lock.
 */
#ifndef TALLY_CHANGES_H
#define TALLY_CHANGES_H

#include <stddef.h>
#include <stdint.h>

#include "tally_limits.h"

#define CHANGE_FLOOR_NONE INT32_MIN
#define CHANGE_SECTION_FIXED_SIZE 16 /* count, floor day, floor LSN */
#define CHANGE_ENTRY_SIZE 12         /* day i32, LSN u64 */

typedef struct change_map {
	int32_t *days;      /* count entries, ascending; CHANGE_DAYS_MAX allocated */
	uint64_t *lsns;     /* lsns[i]: the change LSN of days[i] */
	uint32_t count;
	int32_t floor_day;  /* CHANGE_FLOOR_NONE, or the highest day dropped */
	uint64_t floor_lsn; /* 0, or the highest LSN of a dropped mark */
	uint32_t hint;      /* index of the last day marked: a batch is mostly one day */
} change_map;

/* An empty map with room for CHANGE_DAYS_MAX days. 0, or -ENOMEM with *m
 * empty and nothing to free. */
int change_map_init(change_map *m);

/* Frees the arrays; *m is zeroed. A zeroed map may be freed again. */
void change_map_free(change_map *m);

/* dst (initialised) becomes a copy of src. */
void change_map_copy(change_map *dst, const change_map *src);

/* Exchanges the contents of a and b (no copy: publishing a map is a swap). */
void change_map_swap(change_map *a, change_map *b);

/* Records that a WAL record with this LSN (>= 1) stored an event of day:
 * the day's change LSN becomes max(its LSN, lsn). Never fails: at the
 * bound it drops the smallest day into the floor (see above). */
void change_map_mark(change_map *m, int32_t day, uint64_t lsn);

/* The change LSN of day: its own, floor_lsn for a day <= floor_day (an
 * upper bound: it may have changed as late as that), 0 if never marked. */
uint64_t change_map_day_lsn(const change_map *m, int32_t day);

/*
 * The days whose change LSN is > since_lsn, ascending, with their LSNs, into
 * days[0..cap) and lsns[0..cap) (either may be NULL when cap is 0).
 * *count receives how many there are. Returns 0; TALLY_E_LIMIT when there
 * are more than cap (the arrays then hold the first cap); TALLY_E_NOTFOUND
 * when since_lsn < floor_lsn: a dropped day changed after since_lsn, so no
 * list can be complete (*count is then 0 and nothing is written; ask per
 * day with change_map_day_lsn instead).
 */
int change_map_list(const change_map *m, uint64_t since_lsn, int32_t *days, uint64_t *lsns,
		    size_t cap, size_t *count);

/* Bytes of the encoded change section: CHANGE_SECTION_FIXED_SIZE +
 * CHANGE_ENTRY_SIZE per day. */
size_t change_map_encoded_size(const change_map *m);

/* Writes the change section (docs/formats.md, "Manifest", version 2) to
 * out, which has change_map_encoded_size(m) bytes. */
void change_map_encode(const change_map *m, uint8_t *out);

/*
 * Reads a change section from [p, p + size) into *m (initialised; its old
 * content is replaced) and sets *used to its size. lsn_end bounds every LSN
 * (exclusive): the manifest passes its WAL replay LSN, since only marks of
 * events already in segment files are persisted. Returns 0, or
 * TALLY_E_CORRUPT with *bad_offset (from p) at the first bad field and
 * `why` (a static string) saying what is wrong; *m is then empty.
 */
int change_map_decode(change_map *m, const uint8_t *p, size_t size, uint64_t lsn_end, size_t *used,
		      size_t *bad_offset, const char **why);

#endif /* TALLY_CHANGES_H */
