/*
 * store.c — the tally store: ingest, dedup, memtables, flush, compaction,
 * recovery and scans, tying the WAL, segment files and manifest together.
 *
 * NOTES ON THE DESIGN OF THE STORE
 *
 * 1. Directory: DIR/LOCK (flock held while open), DIR/MANIFEST, DIR/wal/
 *    (WAL files), DIR/segments/ (segment files). Anything in segments/ that
 *    the manifest does not name is debris of an interrupted flush or
 *    compaction and is removed at open.
 *
 * 2. Ingest (tally_ingest_submit). Outside the lock: validate each event,
 *    pack its id, and encode the batch's WAL payload as if every valid
 *    event will be accepted (batchrec.h). Under store->lock: for each valid
 *    event, look its id up in the tenant's fingerprint table; verify every
 *    fingerprint match against the stored id (memtables, then that day's
 *    segments); append accepted events to the tenant's active memtable and
 *    the fingerprint table; append the WAL record, with the payload
 *    prepared before the lock, or encoded again from the accepted events
 *    when a duplicate or conflict was left out (record_parts). The commit
 *    LSN of the batch is the WAL's last LSN at that moment, so a batch
 *    whose events are DUPLICATEs of a still-pending batch is not
 *    acknowledged before that batch is durable. tally_ingest then waits for
 *    the commit LSN to be durable outside the lock (group commit).
 *    A backfill batch's events older than the horizon take another path:
 *    they are checked by (tenant, id, UTC day) against pinned segment
 *    files read outside the lock, then against the memtables under it
 *    ("backfill" section below; docs/architecture.md, "Backfill").
 *
 * 3. A call is one WAL record (type 1 for one batch, type 2 for the batches
 *    of one tally_ingest_submit_many) and is applied to the memtables under
 *    one lock hold: a call is never half-visible, half-flushed or
 *    half-replayed. The lock hold is what bounds ingest (tally_stats counts
 *    it), and most of it is cache misses on the tenants' structures: while
 *    one batch is applied, those of the next four are prefetched
 *    (prefetch_ahead) and the tenant names, id hashes and dimension-string
 *    hashes were all computed before the lock.
 *
 * 4. Flush (tally_flush, or the background worker past memtable_bytes_max):
 *    under the lock, every active memtable becomes frozen and the WAL is
 *    rotated; the first LSN of the new WAL file is the flush boundary. Once
 *    the WAL is durable up to the boundary, the frozen memtables are written
 *    to new segment files (no lock held: frozen memtables are immutable;
 *    one file, or one per thread when many rows: file_part), then under
 *    the lock the manifest is replaced with one naming the new files and
 *    wal_replay_lsn = boundary and the WAL's next file id, and the frozen
 *    memtables are dropped (one that a query pinned is freed by its last
 *    unpin: store_memtable_unpin). WAL files before the boundary and below
 *    that id are removed after that (wal.c, invariant 7). A crash at any point
 *    leaves either the old manifest (WAL still has every event) or the new
 *    one (segments have them, replay starts after them): never both.
 *
 * 5. Compaction merges segment files tenant by tenant, so the segments of
 *    one tenant and day in its inputs become a single segment: every live
 *    file for tally_compact, a size-tiered choice of runs for the
 *    background compactor (compaction_inputs). A tenant of more than
 *    compact_section_rows_max rows in the inputs is cut by time into
 *    spans, a section each, the later ones in files of their own
 *    (compaction_cut), so one tenant's rows in RAM stay bounded. The
 *    outputs (one file, or for tally_compact split as a flush's are, plus
 *    a file per cut; the files after the first flagged RUN_NEXT) take the
 *    newest file ids;
 *    they are published the same way; inputs are unlinked after the
 *    manifest no longer names them. A flush runs beside a compaction, so
 *    the memtables keep their limit while it lasts: flushes are serialised
 *    by store->flush_mutex, compactions by store->compact_mutex, and their
 *    publishes (manifest image, write, catalog swap) by store->publish.
 *    File ids stay in the order of the data's age: a compaction takes its
 *    inputs and ids only while no flush holds ids it has not published
 *    (store->flushing), and its outputs go into the catalog in id order,
 *    before the files of flushes that took ids after it.
 *
 * 6. Failure. A failed WAL write or fsync, or a failed manifest write,
 *    makes the store refuse writes (sticky) until it is closed and reopened;
 *    recovery then replays what the WAL holds. A failed segment write only
 *    fails that flush: the frozen memtables stay, and it is retried. An
 *    ingest call that fails before its WAL record is appended (memory ran
 *    out) takes its rows out of the memtables again (ingest_undo) and
 *    leaves the store writable.
 *
 * 7. Threads. Callers may ingest, scan, flush and compact from any
 *    threads. The WAL has its own writer thread; with options.background
 *    the store has a worker for flushes, a compactor, and the rollup
 *    thread. Lock order: flush_mutex or compact_mutex -> publish -> lock ->
 *    (WAL internal mutex); tenant.query_lock (held by a query of the
 *    tenant from start to end) -> cache_lock (the query cache's table,
 *    query.c) -> lock -> memtable.rollup_lock, and nobody waits for the
 *    first two while holding lock. A query keeps an active memtable's
 *    rollup_lock across the release of lock and lets it go before taking
 *    lock again; the rollup thread only tries for a rollup_lock. No I/O
 *    but dedup verification reads, a backfill's last probe round, the
 *    segment reads of tally_scan, and the manifest write at open happens
 *    under store->lock. A segment file read without the lock is pinned
 *    (segment_file.pins, under the lock; an aggregate query and an events
 *    listing pin their tenant's files): compaction leaves a pinned input
 *    to its last unpin to close and unlink.
 *
 * 8. Changed days (changes.h; docs/architecture.md, "Changed days for the
 *    export"). Every accepted event marks its UTC day in s->changes with
 *    the LSN of the call's WAL record, in the lock hold that appends it
 *    (every append is under store->lock, so that LSN is wal_last_lsn + 1,
 *    asserted after the append); WAL replay marks the same days with the
 *    same LSNs. Freezing the memtables copies the map (changes_frozen:
 *    exactly the marks with LSN < the flush boundary) and the flush
 *    publishes that copy in the manifest together with wal_replay_lsn =
 *    boundary, so manifest + replay rebuild the map exactly at any crash.
 *    Compaction rewrites the manifest with its map unchanged.
 */
#include <assert.h>
#include <errno.h>
#include <sys/resource.h>
#include <unistd.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "batchrec.h"
#include "rollup.h"
#include "store_internal.h"
#include "strdict.h"

/* ---- small helpers ------------------------------------------------------ */

static int64_t day_of(int64_t time_us)
{
	int64_t day = time_us / TALLY_US_PER_DAY;
	if (time_us % TALLY_US_PER_DAY < 0)
		day--;
	return day;
}

/* The UTC day of an event for the change map: any int64 time's day fits
 * an int32. */
_Static_assert(INT64_MAX / TALLY_US_PER_DAY < INT32_MAX, "days of int64 times fit int32");
static int32_t change_day(int64_t time_us)
{
	return (int32_t)day_of(time_us);
}

/* The day the fingerprint table records for an event of UTC day `day`. */
static uint16_t fingerprint_day(int64_t day)
{
	return (uint16_t)(day < 0 ? 0 : day > DAY_MAX ? DAY_MAX : day);
}

/*
 * The start of the lateness horizon at time `now`: now - lateness_past_us,
 * but never before the day after the highest fingerprint_day_min a call
 * or a fingerprint expiry has acted on (horizon_floor_day). A wall clock
 * set ahead by days and then back would otherwise take retries of events
 * whose fingerprints are gone (an expiry or a table growth dropped them)
 * or were never added (a backfill stored them as old) for new events;
 * this way they are too old (or, in a backfill batch, old events, checked
 * against the stored history by day). With a clock that only moves
 * forward the limit never binds. Without the lock (the floor is atomic).
 */
static int64_t horizon_start_us(const tally_store *s, int64_t now)
{
	int64_t start = now - s->options.lateness_past_us;
	int64_t kept = ((int64_t)s->horizon_floor_day + 1) * TALLY_US_PER_DAY;
	return start > kept ? start : kept;
}

/*
 * Under s->lock, before a call or an expiry pass acts on day_min (its
 * fingerprint_day_min, read before the lock): raises the floor to it.
 * 0, or TALLY_E_BUSY when the floor is already past day_min + 1: another
 * call read a clock more than a day later and acted on it meanwhile, and
 * this call's view of which events are recent is older than the
 * fingerprints' by more than the grace day covers. Nothing has been
 * applied yet; a retry reads the horizon again. (Across midnight two
 * calls' day_min differ by one: the grace day covers that.)
 */
static int horizon_floor_raise(tally_store *s, int64_t day_min)
{
	int64_t floor = s->horizon_floor_day;
	if (floor > day_min + 1)
		return TALLY_E_BUSY;
	if (day_min > floor)
		s->horizon_floor_day = fingerprint_day(day_min);
	return 0;
}

/*
 * The oldest day the fingerprint table covers at time `now`: the day of
 * the horizon, minus one day of grace. Every stored event of this day or
 * later has its fingerprint, however it arrived (ingest, backfill, WAL
 * replay, the rebuild at open); older fingerprints are never added,
 * lookups ignore them, and store_expire_dedup removes them as days pass.
 */
static int64_t fingerprint_day_min_of(int64_t horizon_us)
{
	return day_of(horizon_us) - 1;
}

static int64_t fingerprint_day_min(const tally_store *s, int64_t now)
{
	return fingerprint_day_min_of(horizon_start_us(s, now));
}

/* At open only, before any thread starts: written directly. */
static void set_errmsg(tally_store *s, const char *fmt, const char *a, int code)
{
	snprintf(s->errmsg, sizeof(s->errmsg), fmt, a, tally_strerror(code));
}

/* Records msg (or the formatted message) as the store's last error, from
 * any thread (errmsg_lock). */
static void errmsg_set(tally_store *s, const char *msg)
{
	pthread_mutex_lock(&s->errmsg_lock);
	snprintf(s->errmsg, sizeof(s->errmsg), "%s", msg);
	pthread_mutex_unlock(&s->errmsg_lock);
}

static void errmsg_printf(tally_store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void errmsg_printf(tally_store *s, const char *fmt, ...)
{
	char msg[TALLY_ERRMSG_SIZE];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	errmsg_set(s, msg);
}

/* A segment read's result: its message, when it failed with one, becomes
 * the store's (the read wrote it into the caller's own buffer). */
static int errmsg_keep(tally_store *s, int rc, const char *err)
{
	if (rc && err[0])
		errmsg_set(s, err);
	return rc;
}

/* Records why a flush or compaction failed: the step's own message when it
 * wrote one, else the code's name. */
static void record_failure(tally_store *s, const char *what, const char *errmsg, int rc)
{
	errmsg_printf(s, "%s: %s", what, errmsg && errmsg[0] ? errmsg : tally_strerror(rc));
}

/* Makes the store refuse writes; wakes everyone waiting for a flush so
 * they see it. Caller holds the lock. */
static void set_sticky(tally_store *s, int rc)
{
	if (!s->sticky)
		s->sticky = rc;
	pthread_cond_broadcast(&s->flushed);
	pthread_cond_broadcast(&s->wake);
}

static int tenant_name_valid(const char *name)
{
	size_t n = 0;
	for (; name[n]; n++) {
		char c = name[n];
		if (n >= TALLY_TENANT_SIZE_MAX)
			return 0;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return n > 0;
}

/* The tenant table's hash of a name (at most TALLY_TENANT_SIZE_MAX bytes):
 * XXH3's low half. */
static uint32_t name_hash(const char *name)
{
	return (uint32_t)XXH3_64bits(name, strlen(name));
}

/* The tenant called name, whose name_hash is hash, or NULL. With a NULL
 * name, the first tenant whose name hash is hash: perhaps not the one a
 * name would find, which is all a prefetch needs. */
static tenant *tenant_find_hashed(const tally_store *s, const char *name, uint32_t hash)
{
	if (!s->tenant_slot_mask)
		return NULL;
	for (uint32_t i = hash & s->tenant_slot_mask; s->tenant_slots[i].tenant;
	     i = (i + 1) & s->tenant_slot_mask) {
		const tenant_slot *slot = &s->tenant_slots[i];
		if (slot->hash == hash && (!name || strcmp(slot->tenant->name, name) == 0))
			return slot->tenant;
	}
	return NULL;
}

static tenant *tenant_find(tally_store *s, const char *name)
{
	return tenant_find_hashed(s, name, name_hash(name));
}

tenant *store_tenant_find(tally_store *s, const char *name)
{
	return tenant_find(s, name);
}

int store_tenant_name_valid(const char *name)
{
	return tenant_name_valid(name);
}

static int tenant_slots_grow(tally_store *s)
{
	uint32_t count = s->tenant_slot_mask ? (s->tenant_slot_mask + 1) * 2 : 64;
	tenant_slot *slots = calloc(count, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	for (uint32_t i = 0; s->tenant_slots && i <= s->tenant_slot_mask; i++) {
		tenant_slot slot = s->tenant_slots[i];
		if (!slot.tenant)
			continue;
		uint32_t j = slot.hash & (count - 1);
		while (slots[j].tenant)
			j = (j + 1) & (count - 1);
		slots[j] = slot;
	}
	free(s->tenant_slots);
	s->tenant_slots = slots;
	s->tenant_slot_mask = count - 1;
	return 0;
}

/* Adds a tenant with the next id; hash is name_hash(name). Caller holds
 * the lock (or is opening). */
static int tenant_add(tally_store *s, const char *name, uint32_t hash, tenant **out)
{
	if (s->tenant_count >= TENANT_COUNT_MAX)
		return TALLY_E_LIMIT;
	if (s->tenant_count == s->tenant_capacity) {
		uint32_t capacity = s->tenant_capacity ? s->tenant_capacity * 2 : 64;
		tenant **tenants = realloc(s->tenants, capacity * sizeof(*tenants));
		if (!tenants)
			return -ENOMEM;
		s->tenants = tenants;
		s->tenant_capacity = capacity;
	}
	if ((uint64_t)(s->tenant_count + 1) * 2 > (uint64_t)s->tenant_slot_mask + 1 ||
	    !s->tenant_slot_mask) {
		int rc = tenant_slots_grow(s);
		if (rc)
			return rc;
	}
	tenant *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	pthread_mutex_init(&t->query_lock, NULL); /* cannot fail without attributes on Linux */
	t->id = s->tenant_count;
	snprintf(t->name, sizeof(t->name), "%s", name);
	s->tenants[s->tenant_count++] = t;
	uint32_t i = hash & s->tenant_slot_mask;
	while (s->tenant_slots[i].tenant)
		i = (i + 1) & s->tenant_slot_mask;
	s->tenant_slots[i] = (tenant_slot){hash, t};
	*out = t;
	return 0;
}

/* hash is name_hash(name). */
static int tenant_get_or_add(tally_store *s, const char *name, uint32_t hash, tenant **out)
{
	*out = tenant_find_hashed(s, name, hash);
	return *out ? 0 : tenant_add(s, name, hash, out);
}

void tally_options_default(tally_options *o)
{
	memset(o, 0, sizeof(*o));
	o->lateness_past_us = 35 * TALLY_US_PER_DAY;
	o->lateness_future_us = 5 * 60 * TALLY_US_PER_SECOND;
	o->memtable_bytes_max = 512u << 20; /* docs/benchmarks.md, twenty-fifth measurement */
	o->memtable_age_max_us = MEMTABLE_AGE_MAX_US;
	o->wal_file_bytes_max = 64u << 20;
	o->wal_buffer_bytes_max = 32u << 20;
	o->group_commit_window_us = 0;
	o->zstd_level = 3;
	o->compact_files_min = 8;
	o->background = true;
	o->minute_pages_retention_us = 48 * 3600 * TALLY_US_PER_SECOND;
	o->query_rows_behind_max = QUERY_ROLLUP_BEHIND_MAX;
	o->query_cache_bytes_max = QUERY_CACHE_BYTES_MAX_DEFAULT;
	o->query_bytes_max = QUERY_BYTES_MAX_DEFAULT;
}

/* ---- validation --------------------------------------------------------- */

/* The reject reason of an event, or TALLY_REASON_NONE; horizon_us is
 * now_us - lateness_past_us (the clock's horizon, not horizon_start_us's:
 * events under a floor are checked by day instead). A backfill batch
 * reaches back TALLY_BACKFILL_AGE_MAX_US instead of the horizon. */
/* s is UTF-8 without NUL (a NULL pointer: no string). Inline, for every
 * string of every event: ASCII without NUL (nearly every string) is seen
 * eight bytes at a time, the last few bytes padded with 0x01, and only
 * other strings go through the full check. */
static inline bool str_utf8(tally_str s)
{
	const uint64_t ones = UINT64_C(0x0101010101010101), highs = UINT64_C(0x8080808080808080);
	const uint8_t *p = (const uint8_t *)s.ptr;
	uint64_t bad = 0;
	size_t i = 0;
	for (; i + 8 <= s.len; i += 8) {
		uint64_t x;
		memcpy(&x, p + i, 8);
		bad |= x | ((x - ones) & ~x); /* a high bit: a byte >= 0x80, or a zero byte */
	}
	if (i < s.len) {
		uint64_t x = ones;
		memcpy(&x, p + i, s.len - i);
		bad |= x | ((x - ones) & ~x);
	}
	return !(bad & highs) || tally_utf8_invalid_at(p, s.len) == SIZE_MAX;
}

static int validate(const tally_event *e, int64_t now_us, int64_t horizon_us,
		    const tally_options *o, bool backfill)
{
	if (e->event_id.len == 0)
		return TALLY_REASON_MISSING_ID;
	if (e->event_id.len > TALLY_EVENT_ID_SIZE_MAX)
		return TALLY_REASON_ID_TOO_LONG;
	if (e->time_us < horizon_us &&
	    (!backfill || e->time_us < now_us - TALLY_BACKFILL_AGE_MAX_US))
		return TALLY_REASON_TIME_TOO_OLD;
	if (e->time_us > now_us + o->lateness_future_us)
		return TALLY_REASON_TIME_IN_FUTURE;
	if (e->type.len > TALLY_TYPE_SIZE_MAX)
		return TALLY_REASON_TYPE_TOO_LONG;
	if (e->project.len > TALLY_DIMENSION_SIZE_MAX)
		return TALLY_REASON_PROJECT_TOO_LONG;
	if (e->agent.len > TALLY_DIMENSION_SIZE_MAX)
		return TALLY_REASON_AGENT_TOO_LONG;
	if (e->model.len > TALLY_DIMENSION_SIZE_MAX)
		return TALLY_REASON_MODEL_TOO_LONG;
	if (e->user.len > TALLY_DIMENSION_SIZE_MAX)
		return TALLY_REASON_USER_TOO_LONG;
	if (e->status >= TALLY_STATUS_COUNT)
		return TALLY_REASON_UNKNOWN_STATUS;
	if (!str_utf8(e->event_id) || !str_utf8(e->type) || !str_utf8(e->project) ||
	    !str_utf8(e->agent) || !str_utf8(e->model) || !str_utf8(e->user))
		return TALLY_REASON_NOT_UTF8;
	return TALLY_REASON_NONE;
}

/* ---- WAL batch records -------------------------------------------------- */
/*
 * A call's batches become one WAL record: type 1 (batchrec.h, the payload
 * of one batch) when a single batch accepted events, else type 2, a list of
 * type 1 payloads each after a varint of its size. Each batch's entry is
 * encoded before the lock, from every event that passed validation; under
 * the lock it is used as it is when all of those were accepted, and encoded
 * again from the accepted ones otherwise (see tally_ingest_submit_many).
 */

/* ---- applying events ---------------------------------------------------- */

/* Appends one accepted event to the tenant's memtable, and to its
 * fingerprint table if the event's day is at least day_min
 * (fingerprint_day_min). The caller accounts memtable growth in
 * active_bytes. */
static int apply_event(tenant *t, const tally_event *e, const packed_id *id,
		       const uint64_t dim_hash[DIM_COUNT], dim_recent *recent, int64_t day_min,
		       int fingerprinted)
{
	int rc;
	if (!t->active && !(t->active = memtable_new(&rc)))
		return rc;
	rc = memtable_append(t->active, e, id, dim_hash, recent);
	if (rc)
		return rc;
	int64_t day = day_of(e->time_us);
	if (day < day_min || fingerprinted)
		return 0; /* history (checked by day instead), or its fingerprint is there */
	return dedup_insert(&t->dedup, id->hash, fingerprint_day(day), fingerprint_day(day_min));
}

static size_t active_bytes_of(const tenant *t)
{
	return t->active ? memtable_bytes(t->active) : 0;
}

/* Under s->lock, after the memtables grew: tally_stats.memtable_bytes_peak. */
static void memtable_peak_note(tally_store *s)
{
	uint64_t bytes = s->active_bytes + s->frozen_bytes;
	if (bytes > s->memtable_bytes_peak)
		s->memtable_bytes_peak = bytes;
}

/*
 * Verification cache: the last VERIFY_CACHE_ENTRIES row groups read to
 * verify a fingerprint match, fully decoded with their dictionary and an
 * index by id hash, so a retried batch of N events costs N hash probes
 * rather than N row group decodes. Keyed by file id (never reused), so an
 * entry of a file that compaction removed can never match again and simply
 * ages out.
 */
static void verify_entry_clear(verify_entry *v)
{
	rows_free(&v->rows);
	for (int d = 0; d < DIM_COUNT; d++)
		strdict_free(&v->dict[d]);
	free(v->slots);
	memset(v, 0, sizeof(*v));
}

static int verify_entry_load(verify_entry *v, segment_file *f, uint32_t ti, uint32_t g,
			     char *errmsg)
{
	verify_entry_clear(v);
	int rc = segment_read_rowgroup(f, g, SEGMENT_COLUMNS_ALL, &v->rows, errmsg);
	if (!rc)
		rc = segment_read_dict(f, ti, v->dict, errmsg);
	if (!rc)
		rc = segment_rows_check(f, ti, g, &v->rows, v->dict, errmsg);
	uint32_t slot_count = 16;
	while (!rc && slot_count < v->rows.count * 2)
		slot_count *= 2;
	if (!rc && !(v->slots = calloc(slot_count, sizeof(*v->slots))))
		rc = -ENOMEM;
	if (rc) {
		verify_entry_clear(v);
		return rc;
	}
	v->mask = slot_count - 1;
	for (uint32_t row = 0; row < v->rows.count; row++) {
		size_t size;
		const uint8_t *bytes = rows_id(&v->rows, row, &size);
		uint32_t i = (uint32_t)dedup_hash(v->rows.id_kind[row], bytes, size) & v->mask;
		while (v->slots[i])
			i = (i + 1) & v->mask;
		v->slots[i] = row + 1;
	}
	v->file_id = f->file_id;
	v->rowgroup = g;
	v->valid = 1;
	return 0;
}

/* The row with exactly this id whose fingerprint day is `day` (a row
 * group may hold several days, and since backfill one id on several of
 * them), or -1. */
static int64_t verify_entry_find(const verify_entry *v, const packed_id *id, uint16_t day)
{
	for (uint32_t i = (uint32_t)id->hash & v->mask; v->slots[i]; i = (i + 1) & v->mask) {
		uint32_t row = v->slots[i] - 1;
		size_t size;
		const uint8_t *bytes = rows_id(&v->rows, row, &size);
		if (v->rows.id_kind[row] == id->kind && size == id->size &&
		    memcmp(bytes, id->bytes, size) == 0 &&
		    fingerprint_day(day_of(v->rows.time_us[row])) == day)
			return row;
	}
	return -1;
}

static int verify_cache_get(tally_store *s, segment_file *f, uint32_t ti, uint32_t g,
			    verify_entry **out, char *errmsg)
{
	verify_entry *victim = &s->verify_cache[0];
	for (int i = 0; i < VERIFY_CACHE_ENTRIES; i++) {
		verify_entry *v = &s->verify_cache[i];
		if (v->valid && v->file_id == f->file_id && v->rowgroup == g) {
			v->last_use = ++s->verify_clock;
			*out = v;
			return 0;
		}
		if (!v->valid || v->last_use < victim->last_use)
			victim = v;
	}
	int rc = verify_entry_load(victim, f, ti, g, errmsg);
	if (rc)
		return rc;
	victim->last_use = ++s->verify_clock;
	*out = victim;
	return 0;
}

/* Looks for the stored event with exactly this id in day `day`'s segments.
 * Returns 1 and fills *stored (strings valid until the next call), 0 when
 * absent, or a negative code (a file that cannot be read: errmsg says
 * why). */
static int find_in_segments(tally_store *s, const tenant *t, uint16_t day, const packed_id *id,
			    tally_event *stored, char *id_text, char *errmsg)
{
	for (uint32_t fi = 0; fi < s->file_count; fi++) {
		segment_file *f = s->files[fi];
		int64_t ti = segment_file_find_tenant(f, t->id);
		if (ti < 0)
			continue;
		const seg_tenant *st = &f->tenants[ti];
		for (uint32_t si = st->first_segment; si < st->first_segment + st->segment_count; si++) {
			const seg_segment *seg = &f->segments[si];
			if (seg->day != day)
				continue;
			for (uint32_t g = seg->first_rowgroup; g < seg->first_rowgroup + seg->rowgroup_count;
			     g++) {
				verify_entry *v;
				int rc = verify_cache_get(s, f, (uint32_t)ti, g, &v, errmsg);
				if (rc)
					return rc;
				int64_t row = verify_entry_find(v, id, day);
				if (row >= 0) {
					const strdict *refs[DIM_COUNT];
					strdict_refs(v->dict, refs);
					rows_event(&v->rows, refs, (uint32_t)row, stored, id_text);
					return 1;
				}
			}
		}
	}
	return 0;
}

/* The stored event of t's memtables with exactly this id on `day`: a UTC
 * day, or with `fingerprint` a fingerprint day (fingerprint_day of the
 * row's day, as the table keeps it). 1 (*stored and id_text set) or 0. */
static int stored_in_memtables(const tenant *t, const packed_id *id, int64_t day, bool fingerprint,
			       tally_event *stored, char *id_text)
{
	const memtable *tables[2] = {t->active, t->frozen};
	for (int m = 0; m < 2; m++) {
		if (!tables[m])
			continue;
		uint32_t cursor = 0;
		int64_t row;
		while ((row = memtable_find_next(tables[m], id, &cursor)) >= 0) {
			int64_t row_day = day_of(tables[m]->rows.time_us[row]);
			if ((fingerprint ? fingerprint_day(row_day) : row_day) != day)
				continue;
			memtable_event(tables[m], (uint32_t)row, stored, id_text);
			return 1;
		}
	}
	return 0;
}

/* The stored event of t with exactly this id on fingerprint day `day`:
 * in the memtables, else in the segment files. 1 (*stored and id_text
 * set), 0 when there is none, or a negative error (errmsg says why). */
static int stored_on_day(tally_store *s, const tenant *t, const packed_id *id, uint16_t day,
			 tally_event *stored, char *id_text, char *errmsg)
{
	if (stored_in_memtables(t, id, day, true, stored, id_text))
		return 1;
	return find_in_segments(s, t, day, id, stored, id_text, errmsg);
}

/* Whether days[0, n) (a dedup_find answer) holds day. */
static int days_hold(const uint16_t *days, size_t n, uint16_t day)
{
	for (size_t i = 0; i < n; i++)
		if (days[i] == day)
			return 1;
	return 0;
}

/*
 * Decides ACCEPTED / DUPLICATE / CONFLICT for a valid event; day_min is
 * fingerprint_day_min at validation: fingerprints of older days are dead,
 * whether or not the expiry has removed them yet.
 * Only rows on a day the table names count: a memtable may also hold the
 * id on a day older than the table covers, put there by a backfill, and
 * that is another event ("Backfill" in docs/architecture.md). The table
 * may name several days for one id (a backfill may store an old event on
 * day(H) - 1 beside a recent one of the same id), and an equal event can
 * only be on the event's own day: that day is looked at first, so an
 * exact resend is a DUPLICATE whichever other days hold the id.
 */
static int dedup_check(tally_store *s, tenant *t, const tally_event *e, const packed_id *id,
		       int64_t day_min, uint8_t *code, int *fingerprinted, char *errmsg)
{
	uint16_t days[DEDUP_DAY_CANDIDATES_MAX];
	size_t n = dedup_find(&t->dedup, id->hash, fingerprint_day(day_min), days,
			      DEDUP_DAY_CANDIDATES_MAX);
	*code = TALLY_ACCEPTED;
	*fingerprinted = 0;
	if (!n)
		return 0;
	tally_event stored;
	char id_text[ID_TEXT_SIZE_MAX];
	uint16_t own = fingerprint_day(day_of(e->time_us));
	int own_listed = days_hold(days, n, own);
	/* An entry of the event's own day with no such event stored: a
	 * fingerprint collision, or one an undone call left (ingest_undo).
	 * Accepted, the event needs no second entry: a call retried after
	 * failures leaves one per id and day, not one per attempt. */
	*fingerprinted = own_listed;
	/* A full list may have been cut short (dedup_find stops at days_max)
	 * before the own day's entry: the own day is looked at all the same,
	 * and the event's entry is added, not assumed. */
	if (own_listed || n == DEDUP_DAY_CANDIDATES_MAX) {
		int found = stored_on_day(s, t, id, own, &stored, id_text, errmsg);
		if (found < 0)
			return found;
		if (found) {
			*code = tally_event_equal(&stored, e) ? TALLY_DUPLICATE : TALLY_CONFLICT;
			return 0;
		}
	}
	for (size_t i = 0; i < n; i++) {
		int seen = days[i] == own;
		for (size_t j = 0; j < i; j++)
			seen |= days[j] == days[i];
		if (seen)
			continue;
		int found = stored_on_day(s, t, id, days[i], &stored, id_text, errmsg);
		if (found < 0)
			return found;
		if (found) {
			*code = TALLY_CONFLICT; /* another day: another time */
			return 0;
		}
	}
	return 0;
}

/* Whether t's fingerprint table lists the id on the event's own day
 * already (a call that failed after its apply and was undone leaves its
 * entries): apply_event then adds none, so a call retried after failures
 * leaves one entry per id and day, not one per attempt, as dedup_check
 * does for recent events. */
static int fingerprint_listed(const tenant *t, const tally_event *e, const packed_id *id,
			      int64_t day_min)
{
	int64_t day = day_of(e->time_us);
	if (day < day_min)
		return 0; /* history: it gets no entry */
	uint16_t days[DEDUP_DAY_CANDIDATES_MAX];
	size_t n = dedup_find(&t->dedup, id->hash, fingerprint_day(day), days,
			      DEDUP_DAY_CANDIDATES_MAX);
	return days_hold(days, n, fingerprint_day(day));
}

/* ---- backfill: old events against stored history ------------------------ */
/*
 * An event older than the horizon (only a backfill batch brings one) has
 * no fingerprint to consult: it is checked against the stored events of
 * its tenant and UTC day ("Backfill" in docs/architecture.md). Segment
 * files are probed first, without the store lock (history_probe_round:
 * the files read are pinned, so compaction cannot close them meanwhile);
 * then, under the lock, the memtables (history_check), which also hold
 * the call's earlier events. A flush that publishes a file between the
 * two moved memtable rows into a file the probe did not read: the caller
 * sees a newer file id than the probe's and probes again.
 */
typedef struct history_entry {
	int64_t day; /* UTC day of the event */
	size_t k;    /* its index among the call's events (batch after batch) */
} history_entry;

_Static_assert(TALLY_ACCEPTED == 0, "in_segments starts zeroed: nothing found");

typedef struct history {
	uint8_t *old;            /* per event of the call: 1 = older than the horizon (backfill) */
	uint8_t *in_segments;    /* per event: TALLY_ACCEPTED while no stored event of its id and
				  * day was found in segments, else DUPLICATE or CONFLICT to it */
	history_entry *entries;  /* the old events, batch after batch, by day within a batch */
	size_t count;
	size_t *batch_first;     /* batch b's entries: [batch_first[b], batch_first[b + 1]) */
	size_t *batch_k;         /* the call index of batch b's first event */
	uint64_t probed_through; /* every segment file with an id <= this was probed */
	/* Probe scratch: one row group, its rows by id hash, a section's dictionary. */
	rows rows;
	uint32_t *slots;         /* row + 1; 0 = empty */
	uint32_t slot_capacity;
	uint32_t slot_mask;
	strdict dict[DIM_COUNT];
} history;

static int history_init(history *h, size_t batch_count, size_t events_total)
{
	memset(h, 0, sizeof(*h));
	h->old = calloc(events_total + 1, 1);
	h->in_segments = calloc(events_total + 1, 1);
	h->entries = malloc(sizeof(*h->entries) * (events_total + 1));
	h->batch_first = calloc(batch_count + 1, sizeof(*h->batch_first));
	h->batch_k = calloc(batch_count + 1, sizeof(*h->batch_k));
	if (!h->old || !h->in_segments || !h->entries || !h->batch_first || !h->batch_k)
		return -ENOMEM;
	return 0;
}

static void history_free(history *h)
{
	free(h->old);
	free(h->in_segments);
	free(h->entries);
	free(h->batch_first);
	free(h->batch_k);
	rows_free(&h->rows);
	free(h->slots);
	for (int d = 0; d < DIM_COUNT; d++)
		strdict_free(&h->dict[d]);
	memset(h, 0, sizeof(*h));
}

static int history_entry_compare(const void *a, const void *b)
{
	const history_entry *x = a, *y = b;
	if (x->day != y->day)
		return x->day < y->day ? -1 : 1;
	return x->k < y->k ? -1 : x->k > y->k;
}

/* Indexes h->rows (a decoded row group) by id hash. */
static int history_index_rows(history *h)
{
	uint32_t slot_count = 16;
	while (slot_count < h->rows.count * 2)
		slot_count *= 2; /* a row group has at most ROWGROUP_ROWS_MAX rows */
	if (slot_count > h->slot_capacity) {
		uint32_t *slots = realloc(h->slots, sizeof(*slots) * slot_count);
		if (!slots)
			return -ENOMEM;
		h->slots = slots;
		h->slot_capacity = slot_count;
	}
	memset(h->slots, 0, sizeof(*h->slots) * slot_count);
	h->slot_mask = slot_count - 1;
	for (uint32_t row = 0; row < h->rows.count; row++) {
		size_t size;
		const uint8_t *bytes = rows_id(&h->rows, row, &size);
		uint32_t i = (uint32_t)dedup_hash(h->rows.id_kind[row], bytes, size) & h->slot_mask;
		while (h->slots[i])
			i = (i + 1) & h->slot_mask;
		h->slots[i] = row + 1;
	}
	return 0;
}

/* The row of h->rows with exactly this id on UTC day `day`, or -1. */
static int64_t history_find_row(const history *h, const packed_id *id, int64_t day)
{
	for (uint32_t i = (uint32_t)id->hash & h->slot_mask; h->slots[i];
	     i = (i + 1) & h->slot_mask) {
		uint32_t row = h->slots[i] - 1;
		size_t size;
		const uint8_t *bytes = rows_id(&h->rows, row, &size);
		if (h->rows.id_kind[row] == id->kind && size == id->size &&
		    memcmp(bytes, id->bytes, size) == 0 && day_of(h->rows.time_us[row]) == day)
			return row;
	}
	return -1;
}

/* First entry of entries[0, n) (sorted by day) whose day is >= day. */
static size_t history_lower_bound(const history_entry *entries, size_t n, int64_t day)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (entries[mid].day < day)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * Settles, against tenant section tenant_id of file f, the unsettled old
 * events of batch b (call index batch_index): for each segment of a day
 * some of them fall on, reads its row groups (ids and times; every column
 * and the dictionary only when an id matches) and records DUPLICATE or
 * CONFLICT for each event whose id is stored on its day. Touches nothing
 * shared but the (immutable) file: safe without the store lock while f
 * is pinned. 0 or the read's error, with errmsg set.
 */
static int history_probe_file(history *h, const segment_file *f, uint32_t tenant_id,
			      const tally_batch *b, size_t batch_index, const packed_id *ids,
			      char *errmsg)
{
	int64_t ti = segment_file_find_tenant(f, tenant_id);
	if (ti < 0)
		return 0;
	const seg_tenant *sec = &f->tenants[ti];
	const history_entry *entries = h->entries + h->batch_first[batch_index];
	size_t n = h->batch_first[batch_index + 1] - h->batch_first[batch_index];
	size_t k0 = h->batch_k[batch_index];
	int64_t loaded = -1; /* row group in h->rows */
	int full = 0, dict_loaded = 0, rc = 0;
	for (uint32_t si = sec->first_segment; si < sec->first_segment + sec->segment_count && !rc;
	     si++) {
		const seg_segment *seg = &f->segments[si];
		size_t lo = history_lower_bound(entries, n, seg->day), hi = lo;
		int unsettled = 0;
		for (; hi < n && entries[hi].day == seg->day; hi++)
			unsettled |= h->in_segments[entries[hi].k] == TALLY_ACCEPTED;
		if (!unsettled)
			continue;
		for (uint32_t g = seg->first_rowgroup;
		     g < seg->first_rowgroup + seg->rowgroup_count && !rc; g++) {
			if ((int64_t)g != loaded) {
				loaded = -1;
				if ((rc = segment_read_rowgroup(f, g, 1u << TALLY_COL_TIME |
								       1u << TALLY_COL_EVENT_ID,
								&h->rows, errmsg)) ||
				    (rc = history_index_rows(h)))
					break;
				loaded = g;
				full = 0;
			}
			for (size_t x = lo; x < hi && !rc; x++) {
				size_t k = entries[x].k;
				if (h->in_segments[k] != TALLY_ACCEPTED)
					continue;
				int64_t row = history_find_row(h, &ids[k], seg->day);
				if (row < 0)
					continue;
				/* Decoding every column again keeps the row order, so the
				 * index stays valid. */
				if (!full &&
				    !(rc = segment_read_rowgroup(f, g, SEGMENT_COLUMNS_ALL, &h->rows, errmsg)))
					full = 1;
				if (!rc && !dict_loaded &&
				    !(rc = segment_read_dict(f, (uint32_t)ti, h->dict, errmsg)))
					dict_loaded = 1;
				if (rc || (rc = segment_row_check(f, (uint32_t)ti, g, &h->rows, h->dict,
								  (uint32_t)row, errmsg)))
					break;
				tally_event stored;
				char id_text[ID_TEXT_SIZE_MAX];
				const strdict *refs[DIM_COUNT];
				strdict_refs(h->dict, refs);
				rows_event(&h->rows, refs, (uint32_t)row, &stored, id_text);
				h->in_segments[k] = tally_event_equal(&stored, &b->events[k - k0])
							    ? TALLY_DUPLICATE
							    : TALLY_CONFLICT;
			}
		}
	}
	for (int d = 0; d < DIM_COUNT; d++)
		strdict_free(&h->dict[d]);
	memset(h->dict, 0, sizeof(h->dict));
	return rc;
}

/* Contract in store_internal.h. */
void store_memtable_unpin(tally_store *s, const tenant *t, memtable *m, const size_t *rollup_bytes)
{
	pthread_mutex_lock(&s->lock);
	assert(m->pins > 0);
	if (t->frozen == m && rollup_bytes) /* still there: frozen_bytes still counts it */
		s->frozen_bytes += memtable_rollup_account(m, *rollup_bytes);
	int last = --m->pins == 0 && m->dropped;
	pthread_mutex_unlock(&s->lock);
	if (last) {
		memtable_free(m);
		free(m);
	}
}

/* Contract in store_internal.h. */
int store_pin_tenant_files(tally_store *s, const tenant *t, segment_file ***files,
			   uint32_t *count)
{
	*files = NULL;
	*count = 0;
	uint32_t n = 0;
	for (uint32_t i = 0; i < s->file_count; i++)
		n += segment_file_find_tenant(s->files[i], t->id) >= 0;
	if (!n)
		return 0;
	segment_file **pinned = malloc(sizeof(*pinned) * n);
	if (!pinned)
		return -ENOMEM;
	n = 0;
	for (uint32_t i = 0; i < s->file_count; i++)
		if (segment_file_find_tenant(s->files[i], t->id) >= 0) {
			s->files[i]->pins++;
			pinned[n++] = s->files[i];
		}
	*files = pinned;
	*count = n;
	return 0;
}

/* Contract in store_internal.h. */
void store_files_unpin(tally_store *s, segment_file **files, uint32_t count)
{
	/* The ids of the retired ones, copied under the lock: a retired file
	 * that another pin still holds may be closed by that pin's owner as
	 * soon as the lock is let go. Allocated only when there are any (a
	 * compaction ran during the read), not for every query. */
	uint64_t *gone = NULL;
	uint32_t retired = 0, gone_count = 0;
	pthread_mutex_lock(&s->lock);
	for (uint32_t i = 0; i < count; i++)
		gone_count += files[i]->retired != 0;
	if (gone_count)
		gone = malloc(sizeof(*gone) * gone_count);
	gone_count = 0;
	for (uint32_t i = 0; i < count; i++) {
		assert(files[i]->pins > 0);
		if (files[i]->retired && gone)
			gone[gone_count++] = files[i]->file_id;
		if (--files[i]->pins == 0 && files[i]->retired)
			files[retired++] = files[i];
	}
	pthread_mutex_unlock(&s->lock);
	/* A query that read a file after the compaction that retired it
	 * forgot its cache entries may have decoded some again. Out of memory
	 * (gone NULL): they stay until the cache's LRU drops them. */
	if (gone_count)
		query_cache_forget_files(s, gone, gone_count);
	free(gone);
	for (uint32_t i = 0; i < retired; i++) {
		char path[SEGMENT_PATH_SIZE_MAX];
		snprintf(path, sizeof(path), "%s", files[i]->path);
		segment_file_close(files[i]);
		s->io->unlink(s->io, path); /* a failure leaves debris that open removes */
	}
	if (retired)
		s->io->fsync_dir(s->io, s->segment_dir);
}

/* The id of the newest live segment file, 0 if none. Lock held. */
static uint64_t newest_file_id(const tally_store *s)
{
	return s->file_count ? s->files[s->file_count - 1]->file_id : 0;
}

/*
 * One probe round: every live segment file newer than h->probed_through,
 * for the unsettled old events of every backfill batch. locked == 0: the
 * caller does not hold s->lock; the files are pinned under it, read
 * without it, then unpinned. locked != 0: the caller holds the lock all
 * along, so the catalog holds still and nothing is pinned. A tenant that
 * does not exist yet has no files. 0 or the read's error, with errmsg set.
 */
static int history_probe_round(tally_store *s, const tally_batch *batches, size_t batch_count,
			       const packed_id *ids, history *h, int locked, char *errmsg)
{
	if (!locked)
		pthread_mutex_lock(&s->lock);
	segment_file **files = malloc(sizeof(*files) * (s->file_count + 1));
	uint32_t *tenant_ids = malloc(sizeof(*tenant_ids) * (batch_count + 1));
	if (!files || !tenant_ids) {
		if (!locked)
			pthread_mutex_unlock(&s->lock);
		free(files);
		free(tenant_ids);
		return -ENOMEM;
	}
	uint32_t file_count = 0;
	for (uint32_t i = 0; i < s->file_count; i++) {
		if (s->files[i]->file_id <= h->probed_through)
			continue;
		files[file_count++] = s->files[i];
		if (!locked)
			s->files[i]->pins++;
	}
	h->probed_through = newest_file_id(s) > h->probed_through ? newest_file_id(s)
								  : h->probed_through;
	for (size_t b = 0; b < batch_count; b++) {
		tenant *t = NULL;
		if (h->batch_first[b] < h->batch_first[b + 1])
			t = tenant_find(s, batches[b].tenant);
		tenant_ids[b] = t ? t->id : UINT32_MAX;
	}
	if (!locked)
		pthread_mutex_unlock(&s->lock);

	int rc = 0;
	for (uint32_t fi = 0; fi < file_count && !rc; fi++)
		for (size_t b = 0; b < batch_count && !rc; b++)
			if (tenant_ids[b] != UINT32_MAX)
				rc = history_probe_file(h, files[fi], tenant_ids[b], &batches[b], b, ids,
							errmsg);
	if (!locked)
		store_files_unpin(s, files, file_count);
	free(files);
	free(tenant_ids);
	return rc;
}

/*
 * Decides ACCEPTED / DUPLICATE / CONFLICT for an old event of a backfill
 * batch (lock held): in_segments is what the probe found in segment files;
 * the memtables hold every other stored event, the call's earlier ones
 * included.
 */
static uint8_t history_check(const tenant *t, const tally_event *e, const packed_id *id,
			     uint8_t in_segments)
{
	if (in_segments != TALLY_ACCEPTED)
		return in_segments;
	tally_event stored;
	char id_text[ID_TEXT_SIZE_MAX];
	if (!stored_in_memtables(t, id, day_of(e->time_us), false, &stored, id_text))
		return TALLY_ACCEPTED;
	return tally_event_equal(&stored, e) ? TALLY_DUPLICATE : TALLY_CONFLICT;
}

/* ---- ingest ------------------------------------------------------------- */

static void make_packed(const tally_event *e, uint8_t *buffer, packed_id *id)
{
	size_t size;
	id->kind = (uint8_t)id_pack(e->event_id.ptr, e->event_id.len, buffer, &size);
	id->size = (uint8_t)size;
	id->bytes = buffer;
	id->hash = dedup_hash(id->kind, buffer, size);
}

/* to_us - from_us, or 0 if the io clock (a wall clock) stepped back. */
static uint64_t elapsed_us(int64_t from_us, int64_t to_us)
{
	return to_us > from_us ? (uint64_t)to_us - (uint64_t)from_us : 0;
}

/* Checks one batch's arguments; 0 or the batch's error. */
static int batch_check(const tally_batch *b)
{
	if (!b->tenant || !tenant_name_valid(b->tenant))
		return TALLY_E_TENANT;
	if (b->count > TALLY_BATCH_EVENTS_MAX)
		return TALLY_E_LIMIT;
	if (b->count && (!b->events || !b->results))
		return TALLY_E_INVALID;
	return 0;
}

/* The dimension hashes of event i of b, or NULL past its end or when it was
 * rejected (its hashes were never computed). */
static const uint64_t *hashes_of(const tally_batch *b, const uint64_t (*dim_hash)[DIM_COUNT],
				 size_t i)
{
	return i < b->count && b->results[i].code != TALLY_REJECTED ? dim_hash[i] : NULL;
}

/* Where a batch of an ingest call began: its tenant, and the row count of
 * the tenant's active memtable before the batch. */
typedef struct ingest_undo_point {
	tenant *t;
	uint32_t rows;
} ingest_undo_point;

/*
 * Under s->lock, when a call failed before its WAL record was appended:
 * takes the rows of its batches [0, count) out of the memtables again,
 * newest batch first, so that the store holds what it held before the
 * call and stays writable. What else the apply changed is harmless and
 * stays: strings interned without rows, fingerprints of ids not stored
 * (a fingerprint hit is always verified against the stored id), tenants
 * and memtables without rows. (The change map is marked only once the
 * record is appended: a mark of the LSN the record would have had, with
 * no record, would reach the manifest at the next flush, whose boundary
 * is that LSN, and the store would refuse to open.)
 */
static void ingest_undo(tally_store *s, const ingest_undo_point *undo, size_t count)
{
	for (size_t b = count; b-- > 0;) {
		memtable *m = undo[b].t ? undo[b].t->active : NULL;
		if (!m)
			continue;
		size_t before = memtable_bytes(m);
		memtable_truncate(m, undo[b].rows);
		s->active_bytes -= before - memtable_bytes(m);
	}
}

/*
 * Dedups and applies one checked batch (lock held); *accepted is set to the
 * number of its events accepted.
 * old and in_segments (NULL unless the batch is a backfill with old
 * events) are the batch's slices of the call's history; day_min is
 * fingerprint_day_min at validation time. Each accepted event's day goes
 * to days[*day_count] (a day equal to the last one listed is not listed
 * again): the caller marks them in the change map with the LSN of the
 * call's WAL record once it is appended, in this same lock hold.
 * tenant_hash is name_hash(b->tenant).
 * *undo is set to the tenant and its memtable's row count before the
 * batch (t NULL while the tenant is not found or added). A non-zero return
 * leaves rows in memory that the WAL does not hold: the caller takes them
 * out again with ingest_undo.
 */
static int ingest_locked(tally_store *s, tally_batch *b, uint32_t tenant_hash,
			 const packed_id *ids, const uint64_t (*dim_hash)[DIM_COUNT],
			 const uint8_t *old, const uint8_t *in_segments, int64_t day_min,
			 int32_t *days, size_t *day_count, uint32_t *accepted,
			 ingest_undo_point *undo, char *errmsg)
{
	*accepted = 0;
	undo->t = NULL;
	tenant *t;
	int rc = tenant_get_or_add(s, b->tenant, tenant_hash, &t);
	if (rc)
		return rc;
	undo->t = t;
	undo->rows = t->active ? t->active->rows.count : 0;
	size_t bytes_before = active_bytes_of(t);
	/* The fingerprint table is the one random access per event into a
	 * large structure: start loading slots a few events ahead. */
	enum { PREFETCH_AHEAD = 8 };
	for (size_t i = 0; i < b->count && i < PREFETCH_AHEAD; i++)
		if (b->results[i].code != TALLY_REJECTED)
			dedup_prefetch(&t->dedup, ids[i].hash);
	/* The dictionary lookups: slots two events ahead, entries one (the
	 * first event's slots were loaded by prefetch_ahead). */
	const uint64_t *h;
	const memtable *m = t->active;
	if (m && (h = hashes_of(b, dim_hash, 0)))
		memtable_prefetch_dim_entries(m, h, NULL);
	if (m && (h = hashes_of(b, dim_hash, 1)))
		memtable_prefetch_dim_slots(m, h, hashes_of(b, dim_hash, 0));
	dim_recent recent = {.m = NULL};
	uint32_t n = 0;
	for (size_t i = 0; i < b->count && !rc; i++) {
		if (i + PREFETCH_AHEAD < b->count && b->results[i + PREFETCH_AHEAD].code != TALLY_REJECTED)
			dedup_prefetch(&t->dedup, ids[i + PREFETCH_AHEAD].hash);
		if (m && (h = hashes_of(b, dim_hash, i + 2)))
			memtable_prefetch_dim_slots(m, h, hashes_of(b, dim_hash, i + 1));
		if (m && (h = hashes_of(b, dim_hash, i + 1)))
			memtable_prefetch_dim_entries(m, h, hashes_of(b, dim_hash, i));
		if (b->results[i].code == TALLY_REJECTED)
			continue;
		int fingerprinted = 0;
		if (old && old[i]) {
			b->results[i].code = history_check(t, &b->events[i], &ids[i], in_segments[i]);
			fingerprinted = fingerprint_listed(t, &b->events[i], &ids[i], day_min);
		} else if ((rc = dedup_check(s, t, &b->events[i], &ids[i], day_min,
					   &b->results[i].code, &fingerprinted, errmsg)))
			break;
		if (b->results[i].code != TALLY_ACCEPTED)
			continue;
		if (!(rc = apply_event(t, &b->events[i], &ids[i], dim_hash[i], &recent, day_min,
				       fingerprinted))) {
			int32_t day = change_day(b->events[i].time_us);
			if (!*day_count || days[*day_count - 1] != day)
				days[(*day_count)++] = day;
			n++;
		}
	}
	s->active_bytes += active_bytes_of(t) - bytes_before;
	*accepted = n;
	return rc;
}

/*
 * The entries of the call's WAL record (a type 2 list without its count)
 * as parts[0, *count): the entries prepared before the lock (pre, entry b
 * at [entry[b], entry[b + 1])) of the batches that accepted every event
 * prepared[b] counts, consecutive ones in one part, and the entries of the
 * batches that accepted fewer, encoded again into s->multi_record from
 * their accepted events. parts has room for 2 * batch_count + 1. Lock
 * held. 0 or -ENOMEM.
 */
static int record_parts(tally_store *s, batchrec_encoder *enc, const tally_batch *batches,
			size_t batch_count, const packed_id *ids,
			const uint64_t (*dim_hash)[DIM_COUNT], const size_t *first_event,
			const bytebuf *pre, const size_t *entry, const uint32_t *prepared,
			const uint32_t *accepted, size_t *again, wal_part *parts, size_t *count)
{
	/* Encode first, then take addresses: multi_record may move as it grows. */
	bytebuf *out = &s->multi_record;
	bytebuf_reset(out);
	for (size_t b = 0; b < batch_count; b++) {
		again[b] = out->size;
		uint32_t encoded;
		int rc;
		if (!batches[b].status && accepted[b] && accepted[b] != prepared[b] &&
		    (rc = batchrec_append(enc, out, batches[b].tenant, batches[b].events,
					  ids + first_event[b], dim_hash + first_event[b],
					  batches[b].results, (uint32_t)batches[b].count,
					  TALLY_ACCEPTED, &encoded)))
			return rc;
	}
	again[batch_count] = out->size;
	size_t n = 0;
	const uint8_t *run_end = NULL; /* end of parts[n - 1] when it is a run of pre */
	for (size_t b = 0; b < batch_count; b++) {
		if (batches[b].status || !accepted[b])
			continue;
		if (accepted[b] != prepared[b]) {
			parts[n++] = (wal_part){out->data + again[b], again[b + 1] - again[b]};
			run_end = NULL;
		} else if (run_end == pre->data + entry[b]) {
			parts[n - 1].size += entry[b + 1] - entry[b];
			run_end = pre->data + entry[b + 1];
		} else {
			parts[n++] = (wal_part){pre->data + entry[b], entry[b + 1] - entry[b]};
			run_end = pre->data + entry[b + 1];
		}
	}
	*count = n;
	return 0;
}

/*
 * Before batch b of a call is applied, starts loading what the batches
 * after it will touch, one dependent step per batch so that no load waits:
 * the tenant table slot of batch b + 4, the tenant of b + 3 (found by its
 * name hash alone: a wrong guess costs a useless prefetch), the memtable
 * and first fingerprint slots of b + 2, the row tails and dictionary
 * slots of b + 1. Lock held; only hints, nothing changes.
 */
static void prefetch_ahead(const tally_store *s, const tally_batch *batches, size_t batch_count,
			   size_t b, const uint32_t *tenant_hash, const size_t *first_event,
			   const packed_id *ids, const uint64_t (*dim_hash)[DIM_COUNT],
			   const tenant **guess, const memtable **table)
{
	if (b + 4 < batch_count && !batches[b + 4].status && s->tenant_slot_mask)
		__builtin_prefetch(&s->tenant_slots[tenant_hash[b + 4] & s->tenant_slot_mask]);
	if (b + 3 < batch_count && !batches[b + 3].status) {
		const tenant *t = tenant_find_hashed(s, NULL, tenant_hash[b + 3]);
		guess[b + 3] = t;
		if (t) {
			__builtin_prefetch(t);
			__builtin_prefetch((const char *)t + 64);
			__builtin_prefetch((const char *)t + 128);
		}
	}
	if (b + 2 < batch_count && guess[b + 2]) {
		const tenant *t = guess[b + 2];
		const memtable *m = t->active;
		table[b + 2] = m;
		if (m)
			for (size_t line = 0; line < MEMTABLE_HOT_BYTES; line += 64)
				__builtin_prefetch((const char *)m + line);
		/* A rejected event's id and hashes were never computed. */
		size_t n = batches[b + 2].count < 4 ? batches[b + 2].count : 4;
		for (size_t i = 0; i < n; i++)
			if (batches[b + 2].results[i].code != TALLY_REJECTED)
				dedup_prefetch(&t->dedup, ids[first_event[b + 2] + i].hash);
	}
	if (b + 1 < batch_count && table[b + 1] && batches[b + 1].count &&
	    batches[b + 1].results[0].code != TALLY_REJECTED)
		memtable_prefetch_append(table[b + 1], dim_hash[first_event[b + 1]]);
}

int tally_ingest_submit_many(tally_store *s, tally_batch *batches, size_t batch_count,
			     uint64_t *commit_lsn)
{
	if (batch_count && !batches)
		return TALLY_E_INVALID;
	size_t events_total = 0;
	int backfill = 0; /* old events may come: a backfill's, or under a floor */
	for (size_t b = 0; b < batch_count; b++) {
		batches[b].status = batch_check(&batches[b]);
		if (!batches[b].status) {
			events_total += batches[b].count;
			backfill |= batches[b].backfill && batches[b].count;
		}
	}
	const char *history_of = backfill ? "backfill" : "ingest"; /* the messages' word */
	/* The horizon, read once for the call. A floor above the clock's own
	 * horizon (the clock was set back after a call or an expiry pass acted
	 * on a later one) leaves the events between the two with fingerprints
	 * that may be gone: they are checked against the stored history by
	 * day, as a backfill's old events are, rather than refused as too old
	 * (docs/architecture.md, "The horizon never moves back"). */
	int64_t now = s->io->now_us(s->io);
	int64_t horizon_us = horizon_start_us(s, now);
	int64_t clock_horizon_us = now - s->options.lateness_past_us;
	int64_t day_min = fingerprint_day_min_of(horizon_us); /* one read of the horizon for both */
	backfill |= horizon_us > clock_horizon_us && events_total;
	int rc = 0;
	int split = 0; /* the call goes in parts (options.ingest_part_bytes_max) */
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	history h;
	memset(&h, 0, sizeof(h));
	uint8_t *packed = malloc(events_total * ID_PACKED_SIZE_MAX + 1);
	packed_id *ids = malloc(sizeof(*ids) * events_total + 1);
	uint64_t (*dim_hash)[DIM_COUNT] = malloc(sizeof(*dim_hash) * events_total + 1);
	int32_t *days = malloc(sizeof(*days) * events_total + 1);
	uint32_t *tenant_hash = malloc(sizeof(*tenant_hash) * batch_count + 1);
	size_t *first_event = malloc(sizeof(*first_event) * batch_count + 1);
	const tenant **guess = calloc(batch_count + 1, sizeof(*guess));
	const memtable **table = calloc(batch_count + 1, sizeof(*table));
	size_t *entry = malloc(sizeof(*entry) * (batch_count + 1));
	uint32_t *prepared = calloc(batch_count + 1, sizeof(*prepared));
	uint32_t *accepted = calloc(batch_count + 1, sizeof(*accepted));
	size_t *again = malloc(sizeof(*again) * (batch_count + 1));
	ingest_undo_point *undo = malloc(sizeof(*undo) * (batch_count + 1));
	wal_part *parts = malloc(sizeof(*parts) * (2 * batch_count + 2));
	batchrec_encoder enc = {0};
	bytebuf pre = {0}; /* the entries of the WAL record, as if all are accepted */
	if (!packed || !ids || !dim_hash || !days || !tenant_hash || !first_event || !guess ||
	    !table || !entry || !prepared || !accepted || !again || !undo || !parts ||
	    bytebuf_reserve(&pre, events_total * BATCHREC_EVENT_BYTES_TYPICAL) ||
	    (backfill && (rc = history_init(&h, batch_count, events_total)))) {
		rc = -ENOMEM;
		goto out;
	}
	/* Outside the lock: validation, id packing and hashing, the hashes of
	 * the dimension strings, the WAL record's entries; old events (a
	 * backfill's, or under a floor) listed by day, and probed in the
	 * segment files. */
	size_t k = 0;
	for (size_t b = 0; b < batch_count; b++) {
		tally_batch *batch = &batches[b];
		if (backfill) {
			h.batch_first[b] = h.batch_first[b + 1] = h.count;
			h.batch_k[b] = k;
		}
		first_event[b] = k;
		entry[b] = entry[b + 1] = pre.size;
		if (batch->status)
			continue;
		tenant_hash[b] = name_hash(batch->tenant);
		for (size_t i = 0; i < batch->count; i++, k++) {
			const tally_event *e = &batch->events[i];
			int reason = validate(e, now, clock_horizon_us, &s->options, batch->backfill);
			batch->results[i].code = reason ? TALLY_REJECTED : TALLY_ACCEPTED;
			batch->results[i].reason = (uint8_t)reason;
			if (reason)
				continue;
			make_packed(e, packed + k * ID_PACKED_SIZE_MAX, &ids[k]);
			tally_str dims[DIM_COUNT];
			event_dims(e, dims);
			for (int d = 0; d < DIM_COUNT; d++)
				dim_hash[k][d] = strdict_hash(dims[d].ptr, dims[d].len);
			if (e->time_us < horizon_us) { /* valid: a backfill's, or under a floor */
				h.old[k] = 1;
				h.entries[h.count++] = (history_entry){day_of(e->time_us), k};
			}
		}
		if (backfill) {
			h.batch_first[b + 1] = h.count;
			qsort(h.entries + h.batch_first[b], h.count - h.batch_first[b],
			      sizeof(*h.entries), history_entry_compare);
		}
		if ((rc = batchrec_append(&enc, &pre, batch->tenant, batch->events,
					  ids + first_event[b], dim_hash + first_event[b],
					  batch->results, (uint32_t)batch->count, TALLY_ACCEPTED,
					  &prepared[b])))
			goto out; /* nothing applied */
		entry[b + 1] = pre.size;
	}
	/* A call whose WAL record would pass ingest_part_bytes_max (a server's
	 * event loop pass of several large requests, say) is stored in parts
	 * of consecutive batches, each with its own lock hold and record, so
	 * that no call holds the lock for long, and no record passes
	 * WAL_RECORD_PAYLOAD_MAX. A batch is never split: one batch always
	 * fits a record (BATCHREC_BATCH_BYTES_MAX; about 44 MB with every
	 * string as long as allowed, test_store). */
	if (pre.size > s->options.ingest_part_bytes_max && batch_count > 1) {
		split = 1;
		goto out;
	}
	_Static_assert(BATCHREC_BATCH_BYTES_MAX <= WAL_RECORD_PAYLOAD_MAX - VARINT_SIZE_MAX,
		       "one batch always fits a WAL record");
	assert(pre.size <= WAL_RECORD_PAYLOAD_MAX - VARINT_SIZE_MAX); /* part max is clamped */
	int probe_rc = h.count ? history_probe_round(s, batches, batch_count, ids, &h, 0, errmsg) : 0;

	int64_t wait_from_us = s->io->now_us(s->io), held_from_us = 0;
	bool held = false; /* held_from_us is set */
	store_lock_counted(s);
	if ((rc = probe_rc))
		goto history_failed;
	/* Backpressure: past the limit, wait for the worker to freeze the
	 * active memtables or, while frozen ones are still being flushed, for
	 * that flush. The worker flushes beside a compaction too, so the
	 * memtables never hold more than twice memtable_bytes_max plus one
	 * call's growth on each side. */
	while (!s->sticky && !s->closing && s->options.background &&
	       s->active_bytes > s->options.memtable_bytes_max) {
		/* While flushes fail (a full disk), waiting could last until
		 * an operator frees space: refuse the call instead, with
		 * nothing of it stored, and let the caller retry. */
		if (s->flush_failing) {
			rc = TALLY_E_BUSY;
			errmsg_printf(s,
				      "ingest refused: the memtables hold %" PRIu64 " bytes, past "
				      "memtable_bytes_max (%" PRIu64 "), and the last flush failed (%s); "
				      "nothing of this call was stored: retry once a flush succeeds",
				      s->active_bytes, (uint64_t)s->options.memtable_bytes_max,
				      tally_strerror(s->flush_failing));
			goto unlock;
		}
		pthread_cond_wait(&s->flushed, &s->lock);
	}
	/* A file published since the probe (a flush moved memtable rows into
	 * it, or a compaction rewrote files) is probed too: without the lock
	 * a few times, then under it, when the catalog cannot move. */
	for (uint32_t round = 1; h.count && !rc && newest_file_id(s) > h.probed_through; round++) {
		if (round < HISTORY_PROBE_ROUNDS_MAX) {
			pthread_mutex_unlock(&s->lock);
			rc = history_probe_round(s, batches, batch_count, ids, &h, 0, errmsg);
			pthread_mutex_lock(&s->lock);
		} else {
			rc = history_probe_round(s, batches, batch_count, ids, &h, 1, errmsg);
		}
	}
	if (rc)
		goto history_failed;
	if (s->sticky || s->closing) {
		rc = s->sticky ? TALLY_E_READONLY : TALLY_E_CLOSED;
		goto unlock;
	}
	if ((rc = horizon_floor_raise(s, day_min))) {
		errmsg_printf(s, "ingest refused: the clock moved ahead by more than a day while the "
			      "call was prepared; nothing of it was stored: retry");
		goto unlock;
	}
	held_from_us = s->io->now_us(s->io);
	held = true;
	s->ingest_lock_wait_us += elapsed_us(wait_from_us, held_from_us);
	/* One WAL record for the whole call: type 1 when a single batch
	 * accepted events, else type 2, a list of type 1 payloads. The days
	 * of the events accepted are marked in the change map with its LSN
	 * once it is appended (in this lock hold, as every WAL append is). */
	size_t sub_count = 0, day_count = 0;
	const char *failed_tenant = "";
	size_t undo_count = 0;
	errmsg[0] = 0; /* the history probes succeeded: a message from here is the apply's */
	for (size_t b = 0; b < batch_count; b++) {
		prefetch_ahead(s, batches, batch_count, b, tenant_hash, first_event, ids, dim_hash,
			       guess, table);
		tally_batch *batch = &batches[b];
		undo[b].t = NULL;
		undo_count = b + 1;
		if (batch->status)
			continue;
		size_t at = first_event[b];
		int old = h.count && h.batch_first[b] < h.batch_first[b + 1];
		if ((rc = ingest_locked(s, batch, tenant_hash[b], ids + at, dim_hash + at,
					old ? h.old + at : NULL, old ? h.in_segments + at : NULL,
					day_min, days, &day_count, &accepted[b], &undo[b], errmsg))) {
			failed_tenant = batch->tenant;
			goto nothing_stored;
		}
		sub_count += accepted[b] != 0;
	}
	/* The record: the count of a type 2 list in parts[0], then its
	 * entries; or a type 1 payload, the one entry without its size. */
	size_t part_count = 0;
	if (sub_count &&
	    (rc = record_parts(s, &enc, batches, batch_count, ids, dim_hash, first_event, &pre,
			       entry, prepared, accepted, again, parts + 1, &part_count)))
		goto nothing_stored;
	uint64_t lsn;
	if (sub_count == 1) {
		assert(part_count == 1);
		const uint8_t *p = parts[1].data, *end = p + parts[1].size;
		uint64_t size;
		varint_get(&p, end, &size);
		if ((rc = wal_append(s->wal, WAL_RECORD_BATCH, p, (size_t)size, &lsn)))
			goto wal_failed;
	} else if (sub_count > 1) {
		uint8_t list_count[VARINT_SIZE_MAX];
		parts[0] = (wal_part){list_count, varint_put(list_count, sub_count)};
		if ((rc = wal_appendv(s->wal, WAL_RECORD_BATCHES, parts, part_count + 1, &lsn)))
			goto wal_failed;
	}
	for (size_t d = 0; sub_count && d < day_count; d++)
		change_map_mark(&s->changes, days[d], lsn);
	*commit_lsn = wal_last_lsn(s->wal);
	if (sub_count && !s->active_since_us)
		s->active_since_us = held_from_us;
	goto unlock;
history_failed:
	/* Nothing was applied: the store stays writable. */
	errmsg_printf(s, "%s: reading the stored history failed: %s", history_of,
		      errmsg[0] ? errmsg : tally_strerror(rc));
	goto unlock;
wal_failed:
	/* The WAL failed for good (a write or fsync error): sticky. Its other
	 * refusals (memory, a record too large, closing) assign nothing. */
	if (wal_error(s->wal))
		goto fail_sticky;
nothing_stored:
	/* Nothing of the call reached the WAL: its rows leave the memtables
	 * again, and the store stays writable. */
	ingest_undo(s, undo, undo_count);
	errmsg_printf(s, "ingest%s%s failed: %s; nothing of the call was stored",
		      failed_tenant[0] ? " for tenant " : "", failed_tenant,
		      errmsg[0] ? errmsg : tally_strerror(rc));
	goto unlock;
fail_sticky:
	/* Memory may now hold events the WAL does not: refuse writes until a
	 * reopen rebuilds memory from the WAL. */
	errmsg_printf(s, "ingest: WAL append failed: %s; writes refused until reopen",
		      tally_strerror(rc));
	set_sticky(s, rc);
unlock:
	memtable_peak_note(s);
	if (!rc && s->options.background && s->active_bytes > s->options.memtable_bytes_max)
		pthread_cond_signal(&s->wake);
	if (held) {
		uint64_t hold_us = elapsed_us(held_from_us, s->io->now_us(s->io));
		s->ingest_lock_hold_us += hold_us;
		if (hold_us > s->ingest_lock_hold_max_us)
			s->ingest_lock_hold_max_us = hold_us;
	}
	s->ingest_calls++;
	pthread_mutex_unlock(&s->lock);
out:
	free(packed);
	free(ids);
	free(dim_hash);
	free(days);
	free(tenant_hash);
	free(first_event);
	free(guess);
	free((void *)table);
	free(prepared);
	free(accepted);
	free(again);
	free(undo);
	free(parts);
	bytebuf_free(&pre);
	batchrec_encoder_free(&enc);
	history_free(&h);
	/* The parts: as many consecutive batches as fit ingest_part_bytes_max
	 * by their entries (at least one). Each part encodes its entries
	 * again, so a part can come out a little larger; it then splits in
	 * turn. Each part is stored or not on its own: a part that fails
	 * gives its error as the status of each of its batches, and the call
	 * fails only when no part was stored. */
	if (split)
		*commit_lsn = 0;
	int first_failure = 0;
	bool part_stored = false;
	for (size_t from = 0; split && from < batch_count;) {
		size_t to = from + 1;
		while (to < batch_count &&
		       entry[to + 1] - entry[from] <= s->options.ingest_part_bytes_max)
			to++;
		uint64_t part_lsn = 0;
		int part_rc = tally_ingest_submit_many(s, batches + from, to - from, &part_lsn);
		if (part_rc) {
			for (size_t b = from; b < to; b++)
				if (!batches[b].status)
					batches[b].status = part_rc;
			if (!first_failure)
				first_failure = part_rc;
		} else {
			part_stored = true;
			if (part_lsn > *commit_lsn)
				*commit_lsn = part_lsn;
		}
		from = to;
	}
	if (split)
		rc = part_stored ? 0 : first_failure;
	free(entry);
	return rc;
}

int tally_ingest_submit(tally_store *s, const char *tenant_name, const tally_event *events,
			size_t count, tally_ingest_result *results, uint64_t *commit_lsn)
{
	tally_batch batch = {
		.tenant = tenant_name, .events = events, .count = count, .results = results,
	};
	int rc = batch_check(&batch);
	if (rc)
		return rc;
	rc = tally_ingest_submit_many(s, &batch, 1, commit_lsn);
	return rc ? rc : batch.status;
}

int tally_commit_wait(tally_store *s, uint64_t commit_lsn)
{
	int rc = wal_wait_durable(s->wal, commit_lsn);
	if (rc) {
		pthread_mutex_lock(&s->lock);
		if (!s->sticky) {
			set_sticky(s, rc);
			errmsg_printf(s, "WAL write or fsync in %s failed: %s; writes refused until reopen",
				      s->wal_dir, tally_strerror(rc));
		}
		pthread_mutex_unlock(&s->lock);
		return rc;
	}
	return 0;
}

int tally_ingest_backfill(tally_store *s, const char *tenant_name, const tally_event *events,
			  size_t count, tally_ingest_result *results)
{
	tally_batch batch = {
		.tenant = tenant_name, .events = events, .count = count, .results = results,
		.backfill = true,
	};
	int rc = batch_check(&batch);
	if (rc)
		return rc;
	uint64_t lsn = 0;
	if ((rc = tally_ingest_submit_many(s, &batch, 1, &lsn)) || (rc = batch.status))
		return rc;
	return tally_commit_wait(s, lsn);
}

uint64_t tally_durable_lsn(tally_store *s)
{
	return wal_durable_lsn(s->wal);
}

/* ---- changed days (the billing export; docs/architecture.md) ------------ */

int tally_changed_days(tally_store *s, uint64_t since_lsn, int32_t *days, uint64_t *lsns,
		       size_t cap, size_t *count)
{
	if (!count)
		return TALLY_E_INVALID;
	*count = 0;
	if (cap && (!days || !lsns))
		return TALLY_E_INVALID;
	pthread_mutex_lock(&s->lock);
	int rc = change_map_list(&s->changes, since_lsn, days, lsns, cap, count);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int tally_day_change_lsn(tally_store *s, int32_t day, uint64_t *lsn)
{
	if (!lsn)
		return TALLY_E_INVALID;
	pthread_mutex_lock(&s->lock);
	*lsn = change_map_day_lsn(&s->changes, day);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/*
 * The durable LSN. Every record up to it was appended, and so its events
 * applied and its days marked, in an earlier lock hold than any read that
 * starts after this returns; every record appended later gets a higher
 * LSN, also after a restart (recovery continues after the last durable
 * record, never below it).
 */
uint64_t tally_change_watermark(tally_store *s)
{
	return wal_durable_lsn(s->wal);
}

int tally_change_barrier(tally_store *s)
{
	pthread_mutex_lock(&s->lock);
	int rc = s->sticky;
	/* Events are applied in the lock hold that appends their record, so
	 * every event a read could have seen before this call has LSN <= last. */
	uint64_t last = wal_last_lsn(s->wal);
	pthread_mutex_unlock(&s->lock);
	if (rc)
		return rc;
	return tally_commit_wait(s, last);
}

int tally_ingest(tally_store *s, const char *tenant_name, const tally_event *events, size_t count,
		 tally_ingest_result *results)
{
	uint64_t lsn = 0;
	int rc = tally_ingest_submit(s, tenant_name, events, count, results, &lsn);
	if (rc)
		return rc;
	return tally_commit_wait(s, lsn);
}

/* ---- WAL replay --------------------------------------------------------- */

static int replay_batch(tally_store *s, uint64_t lsn, const uint8_t *payload, size_t size)
{
	const uint8_t *p = payload, *end = payload + size;
	uint64_t name_size, count, string_count;
	char name[TALLY_TENANT_SIZE_MAX + 1];
	if (varint_get(&p, end, &name_size) || name_size == 0 || name_size > TALLY_TENANT_SIZE_MAX ||
	    (uint64_t)(end - p) < name_size)
		goto corrupt;
	memcpy(name, p, name_size);
	name[name_size] = 0;
	p += name_size;
	if (!tenant_name_valid(name) || varint_get(&p, end, &count) ||
	    count > TALLY_BATCH_EVENTS_MAX || varint_get(&p, end, &string_count) ||
	    string_count > (uint64_t)(end - p))
		goto corrupt;
	tenant *t;
	int rc = tenant_get_or_add(s, name, name_hash(name), &t);
	if (rc)
		return rc;
	size_t bytes_before = active_bytes_of(t);
	tally_str *strings = malloc(sizeof(*strings) * (string_count + 1));
	if (!strings)
		return -ENOMEM;
	for (uint64_t i = 0; i < string_count; i++) {
		uint64_t n;
		if (varint_get(&p, end, &n) || n > (uint64_t)(end - p) || n > TALLY_DIMENSION_SIZE_MAX) {
			free(strings);
			goto corrupt;
		}
		strings[i].ptr = (const char *)p;
		strings[i].len = (uint32_t)n;
		p += n;
	}
	int64_t previous_time = 0;
	for (; count; count--) {
		tally_event e;
		packed_id id;
		uint64_t v[DIM_COUNT], delta, tokens_in, tokens_out, cost, duration;
		if (end - p < 2)
			break;
		uint8_t head = *p++;
		id.kind = head & 15;
		id.size = *p++;
		if (id.kind >= ID_KIND_COUNT || (head >> 4) >= TALLY_STATUS_COUNT || !id.size ||
		    id.size > ID_PACKED_SIZE_MAX || (size_t)(end - p) < id.size)
			break;
		id.bytes = p;
		p += id.size;
		if (varint_get(&p, end, &delta))
			break;
		int bad = 0;
		for (int d = 0; d < DIM_COUNT; d++)
			bad |= varint_get(&p, end, &v[d]) || v[d] >= string_count;
		if (bad || varint_get(&p, end, &tokens_in) || varint_get(&p, end, &tokens_out) ||
		    varint_get(&p, end, &cost) || varint_get(&p, end, &duration) ||
		    duration > UINT32_MAX)
			break;
		char id_text[ID_TEXT_SIZE_MAX];
		int text_size = id_unpack(id.kind, id.bytes, id.size, id_text);
		if (text_size <= 0)
			break;
		id.hash = dedup_hash(id.kind, id.bytes, id.size);
		e.event_id.ptr = id_text;
		e.event_id.len = (uint32_t)text_size;
		e.time_us = (int64_t)((uint64_t)previous_time + (uint64_t)zigzag_decode(delta));
		previous_time = e.time_us;
		e.type = strings[v[DIM_TYPE]];
		e.project = strings[v[DIM_PROJECT]];
		e.agent = strings[v[DIM_AGENT]];
		e.model = strings[v[DIM_MODEL]];
		e.user = strings[v[DIM_USER]];
		e.status = head >> 4;
		e.tokens_in = tokens_in;
		e.tokens_out = tokens_out;
		e.cost_micros = zigzag_decode(cost);
		e.duration_ms = (uint32_t)duration;
		/* No horizon check and no dedup: the WAL holds only events that
		 * were accepted (a backfill's old ones too), and all of them
		 * stay. */
		if ((rc = apply_event(t, &e, &id, NULL, NULL, s->replay_day_min, 0))) {
			free(strings);
			return rc;
		}
		change_map_mark(&s->changes, change_day(e.time_us), lsn); /* the mark ingest made */
	}
	free(strings);
	s->active_bytes += active_bytes_of(t) - bytes_before;
	if (count || p != end)
		goto corrupt;
	return 0;
corrupt:
	errmsg_printf(s,
		      "WAL record LSN %" PRIu64 " has a valid checksum but a malformed batch payload", lsn);
	return TALLY_E_CORRUPT;
}

static int replay_record(void *ctx, uint64_t lsn, uint8_t type, const uint8_t *payload,
			 size_t size)
{
	tally_store *s = ctx;
	if (type == WAL_RECORD_BATCH)
		return replay_batch(s, lsn, payload, size);
	const uint8_t *p = payload, *end = payload + size;
	uint64_t count;
	if (type != WAL_RECORD_BATCHES || varint_get(&p, end, &count) || count < 2)
		goto corrupt;
	for (uint64_t i = 0; i < count; i++) {
		uint64_t sub_size;
		if (varint_get(&p, end, &sub_size) || sub_size > (uint64_t)(end - p))
			goto corrupt;
		int rc = replay_batch(s, lsn, p, (size_t)sub_size);
		if (rc)
			return rc;
		p += sub_size;
	}
	if (p == end)
		return 0;
corrupt:
	errmsg_printf(s,
		      "WAL record LSN %" PRIu64 " has a valid checksum but an unknown type %u or a malformed list of batches",
		      lsn, type);
	return TALLY_E_CORRUPT;
}

/* ---- publishing: flush and compaction ----------------------------------- */

/* Whether file_count live files are more than a MANIFEST may name: never a
 * manifest the next open would refuse, so a flush or compaction fails
 * instead (not sticky; nothing is written), with errmsg saying so, and the
 * compactor is woken to bring the count down. Caller holds the lock. */
static bool files_past_manifest_locked(tally_store *s, uint32_t file_count, char *errmsg)
{
	if (file_count <= SEGMENT_FILE_COUNT_MAX)
		return false;
	pthread_cond_signal(&s->compact_wake);
	snprintf(errmsg, TALLY_ERRMSG_SIZE,
		 "%u live segment files would pass the manifest's %u: waiting for compaction",
		 file_count, SEGMENT_FILE_COUNT_MAX);
	return true;
}

/*
 * The manifest image for the catalog as it will be once published (lock
 * held): file_ids[0, file_count) and every tenant, with replay_lsn and
 * changes (NULL: the manifest's own). Only encoded here; the caller
 * writes it with no lock held (manifest_write_encoded, under
 * `publish`, so no other manifest write overlaps) and publishes the
 * catalog and bumps the generation under the lock afterwards. Writing it
 * under the lock stalled every ingest and query for the fsyncs of a
 * rename (30-48 ms a flush: docs/benchmarks.md, ninth measurement).
 * TALLY_E_LIMIT (errmsg says why) for more files than a manifest may name.
 */
static int manifest_image_locked(tally_store *s, segment_file *const *files, uint32_t file_count,
				 uint64_t replay_lsn, const change_map *changes,
				 uint64_t wal_file_id_next, uint8_t **data, size_t *size, char *errmsg)
{
	manifest *m = &s->manifest;
	*data = NULL;
	if (files_past_manifest_locked(s, file_count, errmsg))
		return TALLY_E_LIMIT;
	uint64_t *ids = realloc(m->file_ids, sizeof(uint64_t) * (file_count + 1));
	manifest_tenant *tenants = realloc(m->tenants, sizeof(manifest_tenant) * (s->tenant_count + 1));
	if (ids)
		m->file_ids = ids;
	if (tenants)
		m->tenants = tenants;
	if (!ids || !tenants)
		return -ENOMEM;
	for (uint32_t i = 0; i < file_count; i++)
		ids[i] = files[i]->file_id;
	m->file_count = file_count;
	for (uint32_t i = 0; i < s->tenant_count; i++) {
		tenants[i].tenant_id = i;
		tenants[i].name_size = (uint8_t)strlen(s->tenants[i]->name);
		memcpy(tenants[i].name, s->tenants[i]->name, tenants[i].name_size + 1);
	}
	m->tenant_count = s->tenant_count;
	manifest image = *m; /* shallow: only read by the encoder */
	image.wal_replay_lsn = replay_lsn;
	image.wal_file_id_next = wal_file_id_next;
	if (changes)
		image.changes = *changes;
	return manifest_encode(&image, data, size);
}

/*
 * Adds a tenant's rows to a segment file being written, with the rollup
 * pages built from those same rows (with no lock held: flush and
 * compaction own their rows): minute cells from now - the minute retention
 * on, hour and day cells all.
 */
_Static_assert(LIST_COUNT == SEG_ROLLUP_LISTS, "rollup chunk lists and segment lists agree");

static int add_tenant_section(tally_store *s, segment_writer *w, uint32_t tenant_id,
			      const char *name, const rows *r, const strdict dict[DIM_COUNT],
			      rollup_scratch *scratch)
{
	rollup built;
	memset(&built, 0, sizeof(built));
	rollup_encoded enc;
	memset(&enc, 0, sizeof(enc));
	seg_chunk_in *chunks = NULL;
	int64_t minute_from = s->io->now_us(s->io) - s->options.minute_pages_retention_us;
	minute_from = minute_from / ROLLUP_MINUTE_US - (minute_from % ROLLUP_MINUTE_US < 0);
	int rc = rollup_from_rows(&built, r, dict, minute_from);
	if (!rc)
		rc = rollup_encode(&built, minute_from, scratch, &enc);
	rollup_free(&built);
	uint32_t total = 0;
	for (int list = 0; list < LIST_COUNT; list++)
		total += enc.chunk_count[list];
	if (!rc && !(chunks = malloc(sizeof(*chunks) * ((size_t)total + 1))))
		rc = -ENOMEM;
	if (!rc) {
		for (uint32_t i = 0; i < total; i++)
			chunks[i] = (seg_chunk_in){enc.chunks[i].first_bucket, enc.chunks[i].cells,
						   enc.data.data + enc.chunks[i].offset, enc.chunks[i].size};
		seg_rollup_in in = {
			.groups_raw = enc.groups.data,
			.groups_size = enc.groups.size,
			.group_count = enc.group_count,
			.chunks = chunks,
			.chunk_count = {enc.chunk_count[0], enc.chunk_count[1], enc.chunk_count[2],
					enc.chunk_count[3]},
			.minute_from_us = minute_from * ROLLUP_MINUTE_US,
		};
		rc = segment_writer_add_tenant(w, tenant_id, name, r, dict, &in);
	}
	free(chunks);
	rollup_encoded_free(&enc);
	return rc;
}

/* Under s->lock: a copy of the ids of the tenants a query has read, for
 * query_cache_warm (NULL and 0 when there are none or memory ran out:
 * warming is only an optimisation). Not while closing. */
static uint32_t *watched_copy(tally_store *s, uint32_t *count)
{
	*count = 0;
	if (!s->watched_count || s->closing)
		return NULL;
	uint32_t *ids = malloc(sizeof(*ids) * s->watched_count);
	if (ids) {
		memcpy(ids, s->watched, sizeof(*ids) * s->watched_count);
		*count = s->watched_count;
	}
	return ids;
}

/* A tenant's rows gathered from several segment files, with per-dimension
 * dictionaries: the input of a compaction's segment writer. */
typedef struct gathered {
	rows rows;
	strdict dict[DIM_COUNT];
} gathered;

/* The part of one tenant a compaction writes into one output file: its rows
 * with times in [from, to) (INT64_MIN and INT64_MAX: all of them). A tenant
 * cut into several spans has `firsts`: the first time of each of its row
 * groups in each input, input after input in id order (compaction_cut);
 * NULL when it is not cut. */
typedef struct tenant_span {
	int64_t from, to;
	const int64_t *firsts;
} tenant_span;

/* The first row of scratch at or after time t (its rows are sorted). */
static uint32_t rows_first_at(const rows *r, int64_t t)
{
	uint32_t lo = 0, hi = r->count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (r->time_us[mid] < t)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * Appends to m the rows of tenant section ti of f whose times lie in
 * [span->from, span->to), and to m's dictionaries the strings they use.
 * firsts: the section's row groups' first times (span->firsts at this
 * input), or NULL: a row group is read unless the first times show all its
 * rows outside the span (a section's rows are sorted by time, so row group
 * g holds times from firsts[g] to firsts[g + 1]).
 */
static int gather_tenant(segment_file *f, uint32_t ti, const tenant_span *span,
			 const int64_t *firsts, gathered *m, rows *scratch, char *errmsg)
{
	strdict dict[DIM_COUNT];
	memset(dict, 0, sizeof(dict));
	int rc = segment_read_dict(f, ti, dict, errmsg);
	uint32_t *remap[DIM_COUNT] = {0}; /* UINT32_MAX: not used yet, not interned */
	for (int d = 0; d < DIM_COUNT && !rc; d++) {
		remap[d] = malloc(sizeof(uint32_t) * (dict[d].count + 1));
		if (!remap[d])
			rc = -ENOMEM;
		else
			memset(remap[d], 0xff, sizeof(uint32_t) * (dict[d].count + 1));
	}
	const seg_tenant *st = &f->tenants[ti];
	rows *r = &m->rows;
	for (uint32_t k = 0; k < st->rowgroup_count && !rc; k++) {
		if (firsts && firsts[k] >= span->to)
			break;
		if (firsts && k + 1 < st->rowgroup_count && firsts[k + 1] < span->from)
			continue;
		uint32_t g = st->first_rowgroup + k;
		if ((rc = segment_read_rowgroup(f, g, SEGMENT_COLUMNS_ALL, scratch, errmsg)) ||
		    (rc = segment_rows_check(f, ti, g, scratch, dict, errmsg)))
			break;
		uint32_t a = rows_first_at(scratch, span->from);
		uint32_t b = span->to == INT64_MAX ? scratch->count : rows_first_at(scratch, span->to);
		if (a >= b)
			continue;
		uint32_t n = b - a;
		size_t id_size = scratch->id_offset[b] - scratch->id_offset[a];
		if (n >= UINT32_MAX - r->count || id_size > ROWS_ID_BYTES_MAX - r->id_bytes.size) {
			rc = TALLY_E_LIMIT;
			snprintf(errmsg, TALLY_ERRMSG_SIZE,
				 "tenant %s: its rows in this compaction pass %u rows or %zu bytes of "
				 "event ids", st->name, UINT32_MAX - 1, ROWS_ID_BYTES_MAX);
			break;
		}
		if ((rc = rows_reserve(r, r->count + n)) || (rc = rows_reserve_id_bytes(r, id_size)))
			break;
		/* Column by column: the strings the rows use first, then the
		 * codes through the remap, the fixed-size columns and the ids
		 * as ranges. */
		for (int d = 0; d < DIM_COUNT && !rc; d++)
			for (uint32_t i = a; i < b && !rc; i++) {
				uint32_t code = scratch->dim[d][i];
				if (remap[d][code] == UINT32_MAX) {
					tally_str str = strdict_get(&dict[d], code);
					rc = strdict_intern(&m->dict[d], str.ptr, str.len,
							    &remap[d][code]);
				}
			}
		if (rc)
			break;
		uint32_t row = r->count;
		for (int d = 0; d < DIM_COUNT; d++)
			for (uint32_t i = a; i < b; i++)
				r->dim[d][row + i - a] = remap[d][scratch->dim[d][i]];
		memcpy(r->time_us + row, scratch->time_us + a, sizeof(*r->time_us) * n);
		memcpy(r->status + row, scratch->status + a, sizeof(*r->status) * n);
		memcpy(r->duration_ms + row, scratch->duration_ms + a, sizeof(*r->duration_ms) * n);
		memcpy(r->tokens_in + row, scratch->tokens_in + a, sizeof(*r->tokens_in) * n);
		memcpy(r->tokens_out + row, scratch->tokens_out + a, sizeof(*r->tokens_out) * n);
		memcpy(r->cost_micros + row, scratch->cost_micros + a, sizeof(*r->cost_micros) * n);
		memcpy(r->id_kind + row, scratch->id_kind + a, sizeof(*r->id_kind) * n);
		uint32_t id_from = scratch->id_offset[a];
		memcpy(r->id_bytes.data + r->id_bytes.size, scratch->id_bytes.data + id_from, id_size);
		for (uint32_t i = a; i < b; i++)
			r->id_offset[row + i - a + 1] =
				(uint32_t)(r->id_bytes.size + (scratch->id_offset[i + 1] - id_from));
		r->id_bytes.size += id_size;
		r->count += n;
	}
	for (int d = 0; d < DIM_COUNT; d++) {
		free(remap[d]);
		strdict_free(&dict[d]);
	}
	return rc;
}

/*
 * One output file of a flush or a compaction: the rows of tenants[0, count)
 * written to segment file file_id, then opened (f). A flush's part reads
 * each tenant's frozen memtable (immutable); a compaction's part gathers
 * each tenant's span (spans[i]) from the input files. Runs on a thread of
 * its own or on the calling one, and touches nothing shared but those, the
 * tenants' names and ids (fixed) and the io table.
 */
typedef struct file_part {
	tally_store *s;
	tenant **tenants;
	uint32_t count;
	const tenant_span *spans; /* a compaction's: tenants[i]'s rows in spans[i] */
	segment_file **inputs; /* a compaction's input files, in id order; NULL for a flush */
	uint32_t input_count;
	uint64_t file_id;
	uint32_t flags;        /* the header's: SEGMENT_FLAG_RUN_NEXT but for a run's first file */
	segment_file *f;
	int rc;
	char errmsg[TALLY_ERRMSG_SIZE];
	const atomic_uint *give_way; /* a background compaction's: stop once non-zero */
} file_part;

/* Adds tenant t's rows, from p's frozen memtable or its span of the input
 * files, to w. */
static int part_add_tenant(file_part *p, segment_writer *w, tenant *t, const tenant_span *span,
			   rows *scratch, rollup_scratch *buffers)
{
	int rc = 0;
	if (!p->inputs) {
		rows view;
		strdict dict[DIM_COUNT];
		memset(dict, 0, sizeof(dict));
		if (!(rc = memtable_split(t->frozen, &view, dict))) {
			rc = add_tenant_section(p->s, w, t->id, t->name, &view, dict, buffers);
			memtable_split_free(&view, dict);
		}
		return rc;
	}
	gathered m;
	memset(&m, 0, sizeof(m));
	const int64_t *firsts = span->firsts;
	for (uint32_t fi = 0; fi < p->input_count && !rc; fi++) {
		int64_t ti = segment_file_find_tenant(p->inputs[fi], t->id);
		if (ti < 0)
			continue;
		rc = gather_tenant(p->inputs[fi], (uint32_t)ti, span, firsts, &m, scratch, p->errmsg);
		if (firsts)
			firsts += p->inputs[fi]->tenants[ti].rowgroup_count;
	}
	if (!rc && m.rows.count)
		rc = add_tenant_section(p->s, w, t->id, t->name, &m.rows, m.dict, buffers);
	rows_free(&m.rows);
	for (int d = 0; d < DIM_COUNT; d++)
		strdict_free(&m.dict[d]);
	return rc;
}

static void file_part_write(file_part *p)
{
	tally_store *s = p->s;
	segment_writer *w;
	int rc = segment_writer_open(s->io, s->segment_dir, p->file_id, p->flags,
				     s->options.zstd_level, &w, p->errmsg);
	if (rc) {
		p->rc = rc;
		return;
	}
	rollup_scratch rollup_buffers; /* reused from tenant to tenant */
	memset(&rollup_buffers, 0, sizeof(rollup_buffers));
	rows scratch = {0}; /* a compaction's decoded row group */
	for (uint32_t i = 0; i < p->count && !rc; i++) {
		if (p->give_way && atomic_load(p->give_way)) {
			rc = -ECANCELED;
			snprintf(p->errmsg, sizeof(p->errmsg), "gave way to tally_compact");
			break;
		}
		rc = part_add_tenant(p, w, p->tenants[i], p->spans ? &p->spans[i] : NULL, &scratch,
				     &rollup_buffers);
	}
	rollup_scratch_free(&rollup_buffers);
	rows_free(&scratch);
	if (rc) {
		if (!p->errmsg[0]) /* a gather's message names the input and the place */
			snprintf(p->errmsg, sizeof(p->errmsg), "write segment file %016" PRIx64 ": %s",
				 p->file_id, tally_strerror(rc));
		segment_writer_abort(w);
		p->rc = rc;
		return;
	}
	uint64_t size;
	if ((rc = segment_writer_finish(w, &size, p->errmsg))) {
		p->rc = rc;
		return;
	}
	p->rc = segment_file_open(s->io, s->segment_dir, p->file_id, &p->f, p->errmsg);
	if (p->rc) {
		/* Renamed into place but not opened: no manifest will name it,
		 * and nothing else removes it before a reopen (each retry would
		 * leave another copy of the memtables). A failure here leaves it
		 * to the next open's orphan removal. */
		char name[64], path[PATH_SIZE_MAX + 80];
		segment_file_name(name, sizeof(name), p->file_id);
		snprintf(path, sizeof(path), "%s/%s", s->segment_dir, name);
		if (s->io->unlink(s->io, path) == 0)
			s->io->fsync_dir(s->io, s->segment_dir);
	}
}

/* The files of one flush or compaction being written: each thread takes
 * the next part not yet taken, until none is left or one has failed. */
typedef struct parts_queue {
	file_part *parts;
	uint32_t count;
	atomic_uint next;
	atomic_bool failed;
} parts_queue;

static void parts_queue_run(parts_queue *q)
{
	for (;;) {
		uint32_t j = atomic_fetch_add(&q->next, 1);
		if (j >= q->count || atomic_load(&q->failed))
			return;
		file_part_write(&q->parts[j]);
		if (q->parts[j].rc)
			atomic_store(&q->failed, true);
	}
}

static void *parts_queue_main(void *arg)
{
	parts_queue_run(arg);
	return NULL;
}

/* Failed parts: the files they wrote, which no manifest names, closed and
 * removed (a failure to remove leaves debris that open removes). */
static void file_parts_discard(tally_store *s, file_part *parts, uint32_t count)
{
	int any = 0;
	for (uint32_t j = 0; j < count; j++) {
		if (!parts[j].f)
			continue;
		char path[SEGMENT_PATH_SIZE_MAX];
		snprintf(path, sizeof(path), "%s", parts[j].f->path);
		segment_file_close(parts[j].f);
		parts[j].f = NULL;
		s->io->unlink(s->io, path);
		any = 1;
	}
	if (any)
		s->io->fsync_dir(s->io, s->segment_dir);
}

/* How many files a flush or compaction of row_count rows of `tenants`
 * tenants writes at once: one below the flush_parallel_rows_min option (0:
 * FLUSH_PARALLEL_ROWS_MIN), else the flush_threads option (0: one per
 * online CPU), at most FLUSH_FILES_MAX and the tenant count. */
static uint32_t file_part_count(const tally_store *s, uint64_t row_count, uint32_t tenants)
{
	uint64_t rows_min = s->options.flush_parallel_rows_min ? s->options.flush_parallel_rows_min
							       : FLUSH_PARALLEL_ROWS_MIN;
	if (row_count < rows_min || tenants < 2)
		return 1;
	uint32_t n = s->options.flush_threads;
	if (!n) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		n = cpus > 1 ? (uint32_t)cpus : 1;
	}
	if (n > FLUSH_FILES_MAX)
		n = FLUSH_FILES_MAX;
	return n < tenants ? n : tenants;
}

/* Cuts list[0, count) into part_count <= count runs of consecutive tenants
 * with about equal rows (row_counts[i] of list[i], total in all), at least one
 * tenant each. */
static void file_parts_cut(file_part *parts, uint32_t part_count, tenant **list,
			   const uint64_t *row_counts, uint32_t count, uint64_t total)
{
	uint64_t rows_done = 0;
	for (uint32_t j = 0, i = 0; j < part_count; j++) {
		parts[j].tenants = list + i;
		parts[j].count = 0;
		uint64_t target = total * (j + 1) / part_count;
		uint32_t keep = part_count - 1 - j; /* a tenant at least for each later part */
		while (i + keep < count && (!parts[j].count || !keep || rows_done < target)) {
			rows_done += row_counts[i++];
			parts[j].count++;
		}
	}
}

/* Writes parts[0, count) on `threads` threads at most: this one and others
 * named `name`-<j> (fewer when a thread cannot start), each taking the
 * next part in turn. 0, or the first failing part's error with its message
 * in errmsg (the parts after a failure are not written); the files of every
 * part that succeeded are then still open in parts[j].f. */
static int file_parts_write(file_part *parts, uint32_t count, uint32_t threads, const char *name,
			    char *errmsg)
{
	parts_queue q = {.parts = parts, .count = count};
	atomic_init(&q.next, 0);
	atomic_init(&q.failed, false);
	pthread_t thread[FLUSH_FILES_MAX];
	uint32_t started = 0;
	if (threads > FLUSH_FILES_MAX)
		threads = FLUSH_FILES_MAX;
	for (uint32_t j = 1; j < threads && j < count; j++) {
		if (pthread_create(&thread[started], NULL, parts_queue_main, &q) != 0)
			break;
		char thread_name[16];
		snprintf(thread_name, sizeof(thread_name), "%s-%u", name, j);
		pthread_setname_np(thread[started++], thread_name); /* a debugging aid */
	}
	parts_queue_run(&q);
	for (uint32_t j = 0; j < started; j++)
		pthread_join(thread[j], NULL);
	for (uint32_t j = 0; j < count; j++)
		if (parts[j].rc) {
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s", parts[j].errmsg);
			return parts[j].rc;
		}
	return 0;
}

/* A flush that took file ids will not publish them: a compaction may
 * take ids again. */
static void flush_give_up(tally_store *s)
{
	pthread_mutex_lock(&s->lock);
	s->flushing = 0;
	pthread_cond_broadcast(&s->flushed);
	pthread_mutex_unlock(&s->lock);
}

/* Flushes the frozen memtables, freezing the active ones first unless a
 * failed flush left frozen ones behind (then *retried is set: the active
 * memtables still hold rows). The caller holds flush_mutex. */
static int flush_locked_maintenance(tally_store *s, int *retried)
{
	int rc;
	pthread_mutex_lock(&s->lock);
	*retried = s->frozen;
	if (s->sticky) {
		rc = s->sticky;
		pthread_mutex_unlock(&s->lock);
		return rc;
	}
	if (!s->frozen) {
		int any = 0;
		size_t kept = 0; /* bytes of the active memtables left empty by undone calls */
		for (uint32_t i = 0; i < s->tenant_count; i++) {
			tenant *t = s->tenants[i];
			if (t->active && t->active->rows.count) {
				t->frozen = t->active;
				t->frozen->frozen = 1; /* its block ranges are read without the lock now */
				t->active = NULL;
				any = 1;
			} else {
				kept += active_bytes_of(t);
			}
		}
		/* Rows or none, the active memtables start a new age (an undone
		 * call may have left them empty since active_since_us was set). */
		s->active_since_us = 0;
		if (!any) {
			pthread_mutex_unlock(&s->lock);
			return 0;
		}
		if ((rc = wal_rotate(s->wal, &s->flush_boundary_lsn))) {
			set_sticky(s, rc);
			pthread_mutex_unlock(&s->lock);
			return rc;
		}
		/* Every record appended so far has LSN < the boundary and its
		 * marks made (same lock hold as its append): this copy is the
		 * change map of exactly the events being frozen and those
		 * already in segments, what the manifest may claim once it
		 * says wal_replay_lsn = boundary. */
		change_map_copy(&s->changes_frozen, &s->changes);
		s->frozen = 1;
		s->frozen_bytes = s->active_bytes > kept ? s->active_bytes - kept : 0;
		s->active_bytes = kept;
		pthread_cond_broadcast(&s->flushed); /* backpressure waiters: room again */
	}
	uint64_t boundary = s->flush_boundary_lsn;
	/* Tenant structs never move, but the array of them may be reallocated
	 * by an ingest: take the frozen ones while the lock is held. */
	uint32_t frozen_count = 0;
	uint64_t frozen_rows = 0;
	tenant **frozen = malloc(sizeof(*frozen) * (s->tenant_count + 1));
	uint64_t *row_counts = malloc(sizeof(*row_counts) * (s->tenant_count + 1));
	for (uint32_t i = 0; frozen && row_counts && i < s->tenant_count; i++)
		if (s->tenants[i]->frozen) {
			row_counts[frozen_count] = s->tenants[i]->frozen->rows.count;
			frozen[frozen_count++] = s->tenants[i];
			frozen_rows += s->tenants[i]->frozen->rows.count;
		}
	uint32_t part_count = file_part_count(s, frozen_rows, frozen_count);
	if (s->file_count + part_count > SEGMENT_FILE_COUNT_MAX) {
		/* The publish would be refused (manifest_image_locked): write
		 * nothing; the memtables stay frozen for the next try. */
		char errmsg[TALLY_ERRMSG_SIZE];
		files_past_manifest_locked(s, s->file_count + part_count, errmsg);
		pthread_mutex_unlock(&s->lock);
		free(frozen);
		free(row_counts);
		record_failure(s, "flush", errmsg, TALLY_E_LIMIT);
		return TALLY_E_LIMIT;
	}
	uint64_t first_file_id = s->manifest.next_file_id;
	s->manifest.next_file_id += part_count;
	s->flushing = 1; /* until published or given up: no compaction takes ids meanwhile */
	pthread_mutex_unlock(&s->lock);
	if (!frozen || !row_counts) {
		flush_give_up(s);
		free(frozen);
		free(row_counts);
		return -ENOMEM;
	}

	char errmsg[TALLY_ERRMSG_SIZE] = "";
	if (boundary > 1 && (rc = tally_commit_wait(s, boundary - 1))) {
		flush_give_up(s);
		free(frozen);
		free(row_counts);
		return rc;
	}
	/* The parts: consecutive runs of frozen[] with about equal rows, each
	 * written to a file of its own, part 0 by this thread and the others
	 * by a thread each. */
	file_part parts[FLUSH_FILES_MAX];
	memset(parts, 0, sizeof(parts));
	for (uint32_t j = 0; j < part_count; j++)
		parts[j] = (file_part){.s = s, .file_id = first_file_id + j,
				       .flags = j ? SEGMENT_FLAG_RUN_NEXT : 0};
	file_parts_cut(parts, part_count, frozen, row_counts, frozen_count, frozen_rows);
	free(row_counts);
	if ((rc = file_parts_write(parts, part_count, part_count, "tally-flush", errmsg))) {
		file_parts_discard(s, parts, part_count);
		goto fail;
	}
	if (s->flush_test_hook)
		s->flush_test_hook(s, s->flush_test_ctx);

	/* Publish: the manifest image under the lock (the catalog plus the
	 * new files, WAL replay from the boundary, the frozen change map),
	 * written without it, then the catalog swapped under it, all under
	 * `publish` (a compaction's publish changes the catalog too). Until
	 * then readers see the old files plus the frozen memtables, which hold
	 * the same events: never both, never neither. */
	pthread_mutex_lock(&s->publish);
	pthread_mutex_lock(&s->lock);
	if (s->sticky) {
		/* The store turned read-only while the files were written (the
		 * WAL, or a compaction's manifest, failed): whether the last
		 * manifest reached the disk is unknown, and no other is written
		 * over it before a reopen reads the disk again. The frozen
		 * memtables stay, and the store's message the failure's. */
		rc = s->sticky;
		pthread_mutex_unlock(&s->lock);
		pthread_mutex_unlock(&s->publish);
		file_parts_discard(s, parts, part_count);
		flush_give_up(s);
		free(frozen);
		return rc;
	}
	segment_file **files = realloc(s->files, sizeof(*files) * (s->file_count + part_count));
	if (files)
		s->files = files; /* room for the new files; the catalog itself is unchanged */
	uint8_t *image = NULL;
	size_t image_size = 0;
	/* Every WAL file id used so far is below it: the retirement below
	 * removes only such files, so the next open, even of an emptied WAL
	 * directory, never gives an id again (wal.c, invariant 7). */
	uint64_t wal_mark = wal_file_id_next(s->wal);
	/* The frozen memtables, once out of the catalog, are freed without
	 * the lock: room for them now, before anything is written. */
	memtable **dropped = malloc(sizeof(*dropped) * (frozen_count + 1));
	if (!files || !dropped) {
		rc = -ENOMEM;
	} else {
		for (uint32_t j = 0; j < part_count; j++)
			s->files[s->file_count + j] = parts[j].f;
		rc = manifest_image_locked(s, s->files, s->file_count + part_count, boundary,
					   &s->changes_frozen, wal_mark, &image, &image_size, errmsg);
	}
	pthread_mutex_unlock(&s->lock);
	if (rc) {
		pthread_mutex_unlock(&s->publish);
		free(image);
		free(dropped);
		file_parts_discard(s, parts, part_count);
		goto fail;
	}
	rc = manifest_write_encoded(s->io, s->dir, image, image_size, errmsg);
	free(image);
	pthread_mutex_lock(&s->lock);
	if (rc) {
		/* Whether the rename reached the disk is unknown: stop writes
		 * (a reopen reads whichever manifest is there; both are whole). */
		for (uint32_t j = 0; j < part_count; j++)
			segment_file_close(parts[j].f);
		set_sticky(s, rc);
		s->flushing = 0;
		pthread_cond_broadcast(&s->flushed);
		pthread_mutex_unlock(&s->lock);
		pthread_mutex_unlock(&s->publish);
		free(dropped);
		free(frozen);
		record_failure(s, "flush", errmsg, rc);
		return rc;
	}
	s->manifest.generation++;
	/* Pinned until warmed: a compaction may take them as inputs at once. */
	segment_file *published[FLUSH_FILES_MAX];
	for (uint32_t j = 0; j < part_count; j++) {
		published[j] = parts[j].f;
		parts[j].f->pins++;
		s->files[s->file_count++] = parts[j].f;
	}
	s->manifest.wal_replay_lsn = boundary;
	s->manifest.wal_file_id_next = wal_mark;
	change_map_swap(&s->manifest.changes, &s->changes_frozen);
	/* The frozen memtables leave the catalog (frozen[] lists their
	 * tenants) and are freed below, without the lock; one that a query
	 * reads without the lock is freed by its last unpin. */
	for (uint32_t i = 0; i < frozen_count; i++) {
		dropped[i] = frozen[i]->frozen;
		frozen[i]->frozen = NULL;
		if (dropped[i] && dropped[i]->pins) {
			dropped[i]->dropped = 1;
			dropped[i] = NULL;
		}
	}
	s->frozen = 0;
	s->frozen_bytes = 0;
	s->flushing = 0;
	s->flush_count++;
	/* Segments can be written again: ingest past the limit waits for
	 * flushes from now on, not only once tally_flush returns (it may go on
	 * to flush the rest of the memtables first). */
	s->flush_failing = 0;
	pthread_cond_broadcast(&s->flushed);
	if (s->file_count >= s->options.compact_files_min)
		pthread_cond_signal(&s->compact_wake);
	uint32_t warm_count = 0;
	uint32_t *warm = watched_copy(s, &warm_count);
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_unlock(&s->publish);
	for (uint32_t i = 0; i < frozen_count; i++) {
		if (dropped[i]) {
			memtable_free(dropped[i]);
			free(dropped[i]);
		}
	}
	free(dropped);
	free(frozen);
	for (uint32_t j = 0; j < part_count; j++)
		query_cache_warm(s, published[j], warm, warm_count);
	free(warm);
	store_files_unpin(s, published, part_count);
	if ((rc = wal_retire_before(s->wal, boundary, wal_mark))) /* leftovers: replay skips them */
		record_failure(s, "retire WAL files after a flush", NULL, rc);
	return 0;
fail:
	flush_give_up(s);
	free(frozen);
	record_failure(s, "flush", errmsg, rc);
	return rc;
}

int tally_flush(tally_store *s)
{
	pthread_mutex_lock(&s->flush_mutex);
	int retried;
	int rc = flush_locked_maintenance(s, &retried);
	if (!rc && retried) /* the retry wrote the old frozen set; now the rest */
		rc = flush_locked_maintenance(s, &retried);
	pthread_mutex_lock(&s->lock);
	s->flush_failing = rc && !s->sticky ? rc : 0;
	pthread_cond_broadcast(&s->flushed); /* backpressure waiters: fail now, or wait again */
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_unlock(&s->flush_mutex);
	return rc;
}

/* Whether file b was written right after file a by the same flush or
 * compaction: the next file id, and since version 5 the header's
 * SEGMENT_FLAG_RUN_NEXT; before, tenants all after a's (the parts of one
 * are cut from one tenant list in id order; a later file that happens to
 * line up joins the run, which changes only what is merged when). */
static int same_run(const segment_file *a, const segment_file *b)
{
	if (b->file_id != a->file_id + 1)
		return 0;
	if (b->version >= 5)
		return (b->flags & SEGMENT_FLAG_RUN_NEXT) != 0;
	return a->tenant_count && b->tenant_count &&
	       b->tenants[0].tenant_id > a->tenants[a->tenant_count - 1].tenant_id;
}

/* Files [first, first + count) of the catalog, written together. */
typedef struct file_run {
	uint32_t first;
	uint32_t count;
	uint64_t size;
} file_run;

static int run_size_compare(const void *a, const void *b)
{
	const file_run *x = a, *y = b;
	if (x->size != y->size)
		return x->size < y->size ? -1 : 1;
	return x->first < y->first ? -1 : x->first > y->first;
}

/*
 * Chooses the inputs of a compaction into inputs[] (caller holds the lock)
 * and returns how many. `all`: every live file. Otherwise size-tiered over
 * runs, the files one flush or compaction wrote together (see
 * file_part_count: their tenants are disjoint, so merging one run alone
 * would only rewrite it): the smallest runs, taking the next bigger one
 * while it is no more than twice the size of those taken so far, so a big,
 * already compacted run is only rewritten once enough new data has
 * gathered beside it (write amplification stays logarithmic); 0 when
 * fewer than two runs qualify.
 */
static uint32_t compaction_inputs(tally_store *s, int all, segment_file **inputs)
{
	if (all) {
		memcpy(inputs, s->files, sizeof(*inputs) * s->file_count);
		return s->file_count;
	}
	file_run *runs = malloc(sizeof(*runs) * (s->file_count + 1));
	if (!runs)
		return 0; /* compaction is an optimisation: try again at the next tick */
	uint32_t run_count = 0;
	for (uint32_t i = 0; i < s->file_count; i++) {
		if (!i || !same_run(s->files[i - 1], s->files[i]))
			runs[run_count++] = (file_run){i, 0, 0};
		runs[run_count - 1].count++;
		runs[run_count - 1].size += s->files[i]->size;
	}
	qsort(runs, run_count, sizeof(*runs), run_size_compare);
	uint32_t taken_runs = run_count ? 1 : 0;
	for (uint64_t taken = run_count ? runs[0].size : 0;
	     taken_runs < run_count && runs[taken_runs].size <= 2 * taken; taken_runs++)
		taken += runs[taken_runs].size;
	uint32_t count = 0;
	if (taken_runs >= 2)
		for (uint32_t r = 0; r < taken_runs; r++)
			for (uint32_t i = 0; i < runs[r].count; i++)
				inputs[count++] = s->files[runs[r].first + i];
	free(runs);
	return count;
}

/* Where a compaction cuts one tenant: the first time of each of its row
 * groups in the inputs (tenant_span.firsts) and the cut times, ascending:
 * span k holds the rows from cuts[k - 1] to before cuts[k]. */
typedef struct tenant_cut {
	int64_t *firsts;
	int64_t *cuts;
	uint32_t count;
} tenant_cut;

typedef struct first_rows {
	int64_t first;
	uint32_t rows;
} first_rows;

static int first_rows_compare(const void *a, const void *b)
{
	const first_rows *x = a, *y = b;
	return (x->first > y->first) - (x->first < y->first);
}

/*
 * Cuts tenant tid, with row_count rows in inputs[0, input_count), by time into
 * spans of at least rows_max rows each but the last, counting a row group's
 * rows where it starts: the row groups' first times (read from their time
 * columns) in order, a cut before the first that finds rows_max rows taken
 * since the last cut, unless it starts at that same time (rows of one time
 * are never cut apart). So there are at most row_count / rows_max cuts, and a
 * span's rows are under rows_max plus a row group, plus the row group each
 * input may have begun before the span. Nothing is cut (c->count 0, no
 * firsts) when row_count <= rows_max.
 */
static int compaction_cut(segment_file **inputs, uint32_t input_count, uint32_t tid,
			  uint64_t row_count, uint64_t rows_max, tenant_cut *c, rows *scratch, char *errmsg)
{
	memset(c, 0, sizeof(*c));
	if (row_count <= rows_max)
		return 0;
	size_t groups = 0;
	for (uint32_t fi = 0; fi < input_count; fi++) {
		int64_t ti = segment_file_find_tenant(inputs[fi], tid);
		if (ti >= 0)
			groups += inputs[fi]->tenants[ti].rowgroup_count;
	}
	first_rows *order = malloc(sizeof(*order) * (groups + 1));
	c->firsts = malloc(sizeof(*c->firsts) * (groups + 1));
	c->cuts = malloc(sizeof(*c->cuts) * (row_count / rows_max + 1));
	if (!order || !c->firsts || !c->cuts) {
		free(order);
		return -ENOMEM;
	}
	int rc = 0;
	size_t n = 0;
	for (uint32_t fi = 0; fi < input_count && !rc; fi++) {
		int64_t ti = segment_file_find_tenant(inputs[fi], tid);
		if (ti < 0)
			continue;
		const seg_tenant *st = &inputs[fi]->tenants[ti];
		for (uint32_t g = st->first_rowgroup; g < st->first_rowgroup + st->rowgroup_count;
		     g++) {
			if ((rc = segment_read_rowgroup(inputs[fi], g, 1u << TALLY_COL_TIME, scratch,
							errmsg)))
				break;
			c->firsts[n] = scratch->time_us[0];
			order[n++] = (first_rows){scratch->time_us[0], inputs[fi]->rowgroups[g].rows};
		}
	}
	if (!rc) {
		qsort(order, n, sizeof(*order), first_rows_compare);
		uint64_t taken = 0;
		int64_t from = n ? order[0].first : 0;
		for (size_t i = 0; i < n; i++) {
			if (taken >= rows_max && order[i].first > from) {
				assert(c->count < row_count / rows_max);
				c->cuts[c->count++] = from = order[i].first;
				taken = 0;
			}
			taken += order[i].rows;
		}
	}
	free(order);
	return rc;
}

/* The caller holds compact_mutex. */
static int compact_locked_maintenance(tally_store *s, int all)
{
	int rc = 0;
	pthread_mutex_lock(&s->lock);
	/* A flush that took file ids before this compaction takes its own
	 * holds data newer than every input: it publishes first, so the ids
	 * stay in age order (the outputs go before any flush's taken later). */
	while (s->flushing && !s->sticky)
		pthread_cond_wait(&s->flushed, &s->lock);
	if (s->sticky || s->file_count < 2) {
		rc = s->sticky;
		pthread_mutex_unlock(&s->lock);
		return rc;
	}
	/* The inputs, then room for their ids (input_ids: the cache entries
	 * to forget once they are replaced). */
	_Static_assert(sizeof(segment_file *) % _Alignof(uint64_t) == 0, "ids follow the pointers");
	segment_file **inputs = malloc((sizeof(*inputs) + sizeof(uint64_t)) * s->file_count);
	if (!inputs) {
		pthread_mutex_unlock(&s->lock);
		return -ENOMEM;
	}
	uint32_t input_count = compaction_inputs(s, all, inputs);
	if (input_count < 2) {
		pthread_mutex_unlock(&s->lock);
		free(inputs);
		return 0;
	}
	/* Merge in file id order, so rows of one time keep their age order. */
	for (uint32_t i = 1; i < input_count; i++)
		for (uint32_t j = i; j > 0 && inputs[j - 1]->file_id > inputs[j]->file_id; j--) {
			segment_file *tmp = inputs[j];
			inputs[j] = inputs[j - 1];
			inputs[j - 1] = tmp;
		}
	uint64_t *input_ids = (uint64_t *)(inputs + s->file_count);
	for (uint32_t i = 0; i < input_count; i++)
		input_ids[i] = inputs[i]->file_id;
	uint32_t tenant_count = s->tenant_count;
	uint64_t rows_max = s->options.compact_section_rows_max ? s->options.compact_section_rows_max
								: COMPACT_SECTION_ROWS_MAX;
	uint64_t input_rows_bound = 0;
	for (uint32_t i = 0; i < input_count; i++)
		input_rows_bound += inputs[i]->rows;
	/* The output ids are taken in this same hold, while no flush holds
	 * ids (the wait above): a flush that froze after the lock was let go
	 * would otherwise take lower ids than the outputs for newer data. The
	 * file count is known only once the inputs' rows are counted and the
	 * large tenants cut, so the most files there can be are reserved (the
	 * parts, and a file per cut: at most rows / rows_max); an unused id is
	 * never used. */
	uint64_t ids_reserved = (all ? file_part_count(s, UINT64_MAX, tenant_count) : 1) +
				input_rows_bound / rows_max;
	uint64_t first_file_id = s->manifest.next_file_id;
	s->manifest.next_file_id += ids_reserved;
	/* The tenant array may be reallocated by an ingest: keep the pointers
	 * (tenant structs never move) taken under the lock. */
	tenant **tenants = malloc(sizeof(*tenants) * (tenant_count + 1));
	if (tenants)
		memcpy(tenants, s->tenants, sizeof(*tenants) * tenant_count);
	pthread_mutex_unlock(&s->lock);
	if (s->compact_test_hook)
		s->compact_test_hook(s, s->compact_test_ctx);
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	uint64_t *row_counts = malloc(sizeof(*row_counts) * (tenant_count + 1));
	tenant_cut *cuts = calloc(tenant_count + 1, sizeof(*cuts));
	file_part *parts = NULL;
	tenant **items = NULL;
	tenant_span *spans = NULL;
	uint32_t out_count = 0;
	if (!tenants || !row_counts || !cuts) {
		rc = -ENOMEM;
		goto fail;
	}
	/* The tenants with rows in the inputs (tenants[] keeps them, in id
	 * order) and their rows, read from the inputs' footers: the parts
	 * are cut from them as a flush's are from its frozen memtables. A
	 * tenant of more than rows_max rows is cut by time too, a file for
	 * each span after its first (docs/architecture.md, "Large tenants"). */
	uint32_t listed = 0, cut_total = 0;
	uint64_t input_rows = 0;
	rows scratch = {0};
	for (uint32_t tid = 0; tid < tenant_count && !rc; tid++) {
		uint64_t n = 0;
		for (uint32_t fi = 0; fi < input_count; fi++) {
			int64_t ti = segment_file_find_tenant(inputs[fi], tid);
			if (ti < 0)
				continue;
			const seg_tenant *st = &inputs[fi]->tenants[ti];
			for (uint32_t g = 0; g < st->rowgroup_count; g++)
				n += inputs[fi]->rowgroups[st->first_rowgroup + g].rows;
		}
		if (!n)
			continue;
		rc = compaction_cut(inputs, input_count, tid, n, rows_max, &cuts[listed], &scratch,
				    errmsg);
		cut_total += cuts[listed].count;
		row_counts[listed] = n;
		tenants[listed++] = tenants[tid];
		input_rows += n;
	}
	rows_free(&scratch);
	if (rc)
		goto fail;
	/* tally_compact, which its caller waits for, splits as a flush does;
	 * the background worker's compactions, niced beside ingest where the
	 * CPU is what bounds it, write on one thread (a second thread there
	 * cost sustained ingest about 3%: docs/benchmarks.md, twenty-fourth
	 * measurement). */
	uint32_t part_count = all ? file_part_count(s, input_rows, listed) : 1;
	out_count = part_count + cut_total;
	assert(out_count <= ids_reserved);
	parts = calloc(out_count, sizeof(*parts));
	items = malloc(sizeof(*items) * (listed + cut_total + 1));
	spans = malloc(sizeof(*spans) * (listed + cut_total + 1));
	if (!parts || !items || !spans) {
		rc = -ENOMEM;
		goto fail;
	}
	/* The parts' tenants as a flush's, then each part's tenants laid out
	 * in files: a cut tenant's first span ends its part's current file,
	 * and each later span begins a file of its own, so the files hold
	 * tenants in order and a tenant's spans in time order. */
	file_parts_cut(parts, part_count, tenants, row_counts, listed, input_rows);
	uint32_t group_first[FLUSH_FILES_MAX], group_count[FLUSH_FILES_MAX];
	for (uint32_t j = 0; j < part_count; j++) {
		group_first[j] = (uint32_t)(parts[j].tenants - tenants);
		group_count[j] = parts[j].count;
		parts[j].count = 0;
	}
	uint32_t file = 0, item = 0;
	for (uint32_t j = 0; j < part_count; j++, file++) {
		parts[file].tenants = items + item;
		for (uint32_t i = group_first[j]; i < group_first[j] + group_count[j]; i++) {
			const tenant_cut *c = &cuts[i];
			for (uint32_t k = 0; k <= c->count; k++) {
				if (k) {
					file++;
					parts[file].tenants = items + item;
				}
				items[item] = tenants[i];
				spans[item++] = (tenant_span){k ? c->cuts[k - 1] : INT64_MIN,
							      k < c->count ? c->cuts[k] : INT64_MAX,
							      c->firsts};
				parts[file].count++;
			}
		}
	}
	assert(file == out_count && item == listed + cut_total);
	for (uint32_t j = 0; j < out_count; j++) {
		parts[j].s = s;
		parts[j].spans = spans + (parts[j].tenants - items);
		parts[j].inputs = inputs;
		parts[j].input_count = input_count;
		parts[j].file_id = first_file_id + j;
		parts[j].flags = j ? SEGMENT_FLAG_RUN_NEXT : 0;
		parts[j].give_way = all ? NULL : &s->compact_callers;
	}
	free(row_counts);
	row_counts = NULL;
	if ((rc = file_parts_write(parts, out_count, part_count, "tally-compact", errmsg))) {
		file_parts_discard(s, parts, out_count);
		if (rc == -ECANCELED) { /* gave way: the caller's compaction merges it all */
			rc = 0;
			goto out;
		}
		goto fail;
	}

	pthread_mutex_lock(&s->publish);
	pthread_mutex_lock(&s->lock);
	if (s->sticky) {
		/* The store turned read-only while the outputs were written (a
		 * WAL or a flush's manifest failed): whether the last manifest
		 * reached the disk is unknown, and no other is written over it
		 * before a reopen reads the disk again. The store's message
		 * stays the failure's, as when a compaction starts read-only. */
		rc = s->sticky;
		pthread_mutex_unlock(&s->lock);
		pthread_mutex_unlock(&s->publish);
		file_parts_discard(s, parts, out_count);
		goto out;
	}
	/* Only compaction removes files, and it holds compact_mutex: every
	 * input is still live. The catalog (and the manifest) stay in
	 * ascending id order: the outputs go after every file older than
	 * them, and before the files of flushes that took ids after them and
	 * published while this compaction ran. */
	segment_file **old = s->files;
	segment_file **files = malloc(sizeof(*files) * (s->file_count - input_count + out_count));
	if (!files) {
		pthread_mutex_unlock(&s->lock);
		pthread_mutex_unlock(&s->publish);
		rc = -ENOMEM;
		file_parts_discard(s, parts, out_count);
		goto fail;
	}
	uint32_t kept = 0, placed = 0;
	for (uint32_t i = 0; i < s->file_count; i++) {
		int is_input = 0;
		for (uint32_t j = 0; j < input_count; j++)
			is_input |= old[i] == inputs[j];
		if (is_input)
			continue;
		for (; placed < out_count && parts[placed].file_id < old[i]->file_id; placed++)
			files[kept + placed] = parts[placed].f;
		files[kept + placed] = old[i];
		kept++;
	}
	for (; placed < out_count; placed++)
		files[kept + placed] = parts[placed].f;
	/* The manifest naming the new set is written without the lock (as a
	 * flush's: manifest_image_locked); readers keep the inputs until the
	 * swap below. */
	uint8_t *image = NULL;
	size_t image_size = 0;
	rc = manifest_image_locked(s, files, kept + out_count, s->manifest.wal_replay_lsn, NULL,
				   s->manifest.wal_file_id_next, &image, &image_size, errmsg);
	pthread_mutex_unlock(&s->lock);
	int written = !rc;
	if (written)
		rc = manifest_write_encoded(s->io, s->dir, image, image_size, errmsg);
	free(image);
	pthread_mutex_lock(&s->lock);
	if (rc) {
		/* Whether the rename reached the disk is unknown: stop writes
		 * (both manifests are whole; the inputs and the outputs all
		 * exist). Not written: no manifest names the outputs. */
		if (written)
			set_sticky(s, rc);
		free(files);
		pthread_mutex_unlock(&s->lock);
		pthread_mutex_unlock(&s->publish);
		if (written) {
			for (uint32_t j = 0; j < out_count; j++)
				segment_file_close(parts[j].f);
		} else {
			file_parts_discard(s, parts, out_count);
		}
		goto fail;
	}
	s->manifest.generation++;
	s->files = files;
	s->file_count = kept + out_count;
	free(old);
	for (uint32_t i = 0; i < input_count; i++) {
		if (inputs[i]->pins) {
			/* A backfill's probe is reading it without the lock: its
			 * last unpin closes and unlinks it (store_files_unpin). */
			inputs[i]->retired = 1;
			inputs[i] = NULL;
		}
	}
	s->compaction_count++;
	uint32_t warm_count = 0;
	uint32_t *warm = watched_copy(s, &warm_count);
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_unlock(&s->publish);
	/* Without the lock (cache_lock is taken before it). A query that
	 * still reads a pinned input keeps its entries pinned, and forgets
	 * them when it lets the input go (store_files_unpin). */
	query_cache_forget_files(s, input_ids, input_count);
	for (uint32_t j = 0; j < out_count; j++)
		query_cache_warm(s, parts[j].f, warm, warm_count);
	free(warm);
	for (uint32_t i = 0; i < input_count; i++) {
		if (!inputs[i])
			continue;
		char path[SEGMENT_PATH_SIZE_MAX];
		snprintf(path, sizeof(path), "%s", inputs[i]->path);
		segment_file_close(inputs[i]);
		s->io->unlink(s->io, path);
	}
	s->io->fsync_dir(s->io, s->segment_dir);
	goto out;
fail:
	record_failure(s, "compaction", errmsg, rc);
out:
	free(inputs);
	free(tenants);
	free(row_counts);
	for (uint32_t i = 0; cuts && i <= tenant_count; i++) {
		free(cuts[i].firsts);
		free(cuts[i].cuts);
	}
	free(cuts);
	free(parts);
	free(items);
	free(spans);
	return rc;
}

int tally_compact(tally_store *s)
{
	atomic_fetch_add(&s->compact_callers, 1);
	pthread_mutex_lock(&s->compact_mutex);
	atomic_fetch_sub(&s->compact_callers, 1);
	int rc = compact_locked_maintenance(s, 1);
	pthread_mutex_unlock(&s->compact_mutex);
	return rc;
}

/* The background compaction: size-tiered (see compaction_inputs). */
static int compact_tiered(tally_store *s)
{
	pthread_mutex_lock(&s->compact_mutex);
	int rc = compact_locked_maintenance(s, 0);
	pthread_mutex_unlock(&s->compact_mutex);
	return rc;
}

/* ---- background worker -------------------------------------------------- */

/*
 * One step of an expiry pass (lock held): sweeps tenants' tables from
 * tenant *next, slot *cursor, until DEDUP_EXPIRY_STEP_SLOTS slots (each
 * tenant moved past counts DEDUP_EXPIRY_TENANT_SLOTS) are done; a table
 * swept to its end is shrunk if it became sparse. Returns 1 once every
 * tenant is done.
 */
static int expire_dedup_step(tally_store *s, uint16_t day_min, uint32_t *next, uint32_t *cursor)
{
	uint32_t budget = DEDUP_EXPIRY_STEP_SLOTS;
	while (*next < s->tenant_count && budget) {
		dedup_table *t = &s->tenants[*next]->dedup;
		uint32_t left = *cursor < t->capacity ? t->capacity - *cursor : 0;
		uint32_t slots = left < budget ? left : budget;
		budget -= slots;
		if (!dedup_expire_slice(t, day_min, cursor, slots))
			continue;
		dedup_shrink(t, day_min); /* ENOMEM: it stays as large as it was */
		(*next)++;
		*cursor = 0;
		budget -= budget < DEDUP_EXPIRY_TENANT_SLOTS ? budget : DEDUP_EXPIRY_TENANT_SLOTS;
	}
	return *next >= s->tenant_count;
}

/*
 * Once the horizon has passed a day: removes the fingerprints of the days
 * it left from every tenant's table. Lookups already ignore them
 * (dedup_check), so this only frees memory, and it goes in steps that
 * each hold the store lock for a bounded sweep (tally_stats reports the
 * longest), not for every table at once: ingest and queries run between
 * them. A table's sweep may span steps; an insert between two steps
 * leaves it valid (dedup_expire_slice).
 */
void store_expire_dedup(tally_store *s)
{
	int64_t day_min = fingerprint_day_min(s, s->io->now_us(s->io));
	if (day_min <= 0 || day_min > DAY_MAX)
		return;
	int64_t start_us = s->io->now_us(s->io);
	uint32_t next = 0, cursor = 0;
	pthread_mutex_lock(&s->lock);
	if ((uint16_t)day_min == s->dedup_expired_day || horizon_floor_raise(s, day_min)) {
		pthread_mutex_unlock(&s->lock);
		return; /* done, or the clock moved meanwhile: the next tick tries again */
	}
	for (;;) {
		int64_t held_us = s->io->now_us(s->io);
		int done = expire_dedup_step(s, (uint16_t)day_min, &next, &cursor);
		uint64_t hold_us = elapsed_us(held_us, s->io->now_us(s->io));
		if (hold_us > s->dedup_expiry_hold_max_us)
			s->dedup_expiry_hold_max_us = hold_us;
		if (done || s->closing)
			break;
		pthread_mutex_unlock(&s->lock);
		if (s->expiry_test_hook)
			s->expiry_test_hook(s, s->expiry_test_ctx);
		pthread_mutex_lock(&s->lock);
	}
	if (!s->closing) {
		s->dedup_expired_day = (uint16_t)day_min;
		s->dedup_expiry_us_last = elapsed_us(start_us, s->io->now_us(s->io));
		s->dedup_expiry_count++;
	}
	pthread_mutex_unlock(&s->lock);
}

static void deadline_after_ms(struct timespec *deadline, uint64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, deadline);
	deadline->tv_sec += (time_t)(ms / 1000);
	deadline->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (deadline->tv_nsec >= 1000000000L) {
		deadline->tv_sec++;
		deadline->tv_nsec -= 1000000000L;
	}
}

/* ---- rollup catch-up ---------------------------------------------------- */
/*
 * Ingest leaves a memtable's rollup behind its rows (maintaining it per
 * event under the store lock halved ingest: docs/benchmarks.md). Once a
 * tenant was queried (a dashboard polls it), this thread keeps its
 * memtables' rollups current every ROLLUP_CATCH_UP_TICK_MS, in slices of
 * MEMTABLE_ROLLUP_SLICE rows: each slice's rows are copied under the store
 * lock (microseconds) and added to the cells under the memtable's rollup
 * lock alone, so neither ingest nor the queries of other tenants wait for
 * it. A query reads the rollup and, from the rows, what the rollup does
 * not have yet (query.c). Tenants nobody queried cost nothing; keeping
 * every tenant current was measured and costs more than it saves
 * (docs/benchmarks.md, twelfth measurement). A thread of its own, so that
 * a flush or compaction (seconds, on the background worker) does not hold
 * it up.
 */
void store_tenant_watch(tally_store *s, tenant *t)
{
	if (t->queried)
		return;
	if (s->watched_count == s->watched_capacity) {
		uint32_t capacity = s->watched_capacity ? s->watched_capacity * 2 : 64;
		uint32_t *watched = realloc(s->watched, sizeof(*watched) * capacity);
		if (!watched)
			return;
		s->watched = watched;
		s->watched_capacity = capacity;
	}
	s->watched[s->watched_count++] = t->id;
	t->queried = 1;
	pthread_cond_signal(&s->rollup_wake); /* its backlog: now, not at the next tick */
}

/* Under s->lock: the memtable of t with this serial, or NULL (flushed). */
static memtable *memtable_of(tenant *t, uint64_t serial, size_t **bytes, tally_store *s)
{
	if (t->active && t->active->serial == serial) {
		*bytes = &s->active_bytes;
		return t->active;
	}
	if (t->frozen && t->frozen->serial == serial) {
		*bytes = &s->frozen_bytes;
		return t->frozen;
	}
	return NULL;
}

/*
 * Under s->lock (let go and taken again per slice): adds the rows of m, t's
 * active or frozen memtable, to its rollup MEMTABLE_ROLLUP_SLICE at a time
 * until the rollup holds `goal` rows (UINT32_MAX: all), or m is flushed.
 * A slice's rows are copied under the store lock (ingest appends to them)
 * and added to the cells with it let go, under the memtable's rollup lock
 * alone, so ingest and other tenants' reads go on meanwhile; the rollup's
 * growth is counted in the store's memtable bytes once the slice is in, if
 * m is still there. `wait` 0 (the rollup thread) leaves a memtable whose
 * rollup_lock is held to the next tick: a query holds it without the
 * store lock for as long as its merge of the memtable's cells takes, and
 * waiting here would hold the store lock as long. A query (wait 1) holds
 * its tenant's query_lock, so only the rollup thread can hold it, for one
 * slice; it rolls up only a memtable whose rollup is due
 * (store_rollup_due, read under rollup_lock, which guards rolled).
 */
static void catch_up_memtable(tally_store *s, tenant *t, memtable *m, uint32_t goal, int wait,
			      rollup_event *slice)
{
	uint64_t serial = m->serial;
	size_t *bytes;
	for (int first = 1; !s->closing && !s->sticky; first = 0) {
		if (wait)
			pthread_mutex_lock(&m->rollup_lock);
		else if (pthread_mutex_trylock(&m->rollup_lock))
			return;
		if (m->rollup_failed || m->rolled == m->rows.count || m->rolled >= goal ||
		    (wait && first && !store_rollup_due(s, m))) {
			pthread_mutex_unlock(&m->rollup_lock);
			return;
		}
		uint32_t n = memtable_rollup_take(m, slice, MEMTABLE_ROLLUP_SLICE);
		pthread_mutex_unlock(&s->lock);
		if (s->step_test_hook)
			s->step_test_hook(s, s->step_test_ctx, STORE_STEP_CATCH_UP);
		memtable_rollup_apply(m, slice, n); /* a failure marks the rollup failed */
		size_t rollup_bytes = m->rollup.bytes;
		pthread_mutex_unlock(&m->rollup_lock);
		pthread_mutex_lock(&s->lock);
		if (!(m = memtable_of(t, serial, &bytes, s)))
			return;
		*bytes += memtable_rollup_account(m, rollup_bytes);
		memtable_peak_note(s);
	}
}

/* Under s->lock: t's frozen and active memtables' rollups, brought up to
 * date (the rollup thread). */
static void catch_up_tenant(tally_store *s, tenant *t, rollup_event *slice)
{
	if (t->frozen)
		catch_up_memtable(s, t, t->frozen, UINT32_MAX, 0, slice);
	if (t->active)
		catch_up_memtable(s, t, t->active, UINT32_MAX, 0, slice);
}

/* Contract in store_internal.h. */
int store_rollup_due(const tally_store *s, const memtable *m)
{
	return !m->rollup_failed && (m->rows.count - m->rolled > s->options.query_rows_behind_max ||
				     !s->options.background);
}

/* Contract in store_internal.h. */
void store_query_catch_up(tally_store *s, tenant *t)
{
	rollup_event slice[MEMTABLE_ROLLUP_SLICE];
	pthread_mutex_lock(&s->lock);
	store_tenant_watch(s, t);
	if (t->active)
		catch_up_memtable(s, t, t->active, t->active->rows.count, 1, slice);
	pthread_mutex_unlock(&s->lock);
}

/* One tick: every watched tenant's memtables, caught up. Takes the lock;
 * lets others have it between slices. */
static void catch_up_rollups(tally_store *s, rollup_event *slice)
{
	pthread_mutex_lock(&s->lock);
	for (uint32_t i = 0; i < s->watched_count && !s->closing && !s->sticky; i++)
		catch_up_tenant(s, s->tenants[s->watched[i]], slice); /* tenant structs never move */
	pthread_mutex_unlock(&s->lock);
}

static void *rollup_main(void *arg)
{
	tally_store *s = arg;
	rollup_event *slice = malloc(sizeof(*slice) * MEMTABLE_ROLLUP_SLICE);
	pthread_mutex_lock(&s->lock);
	while (!s->closing) {
		struct timespec deadline;
		deadline_after_ms(&deadline, ROLLUP_CATCH_UP_TICK_MS);
		pthread_cond_timedwait(&s->rollup_wake, &s->lock, &deadline);
		if (s->closing || s->sticky || !s->watched_count || !slice)
			continue;
		pthread_mutex_unlock(&s->lock);
		catch_up_rollups(s, slice);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	free(slice);
	return NULL;
}

/*
 * The background threads: the worker flushes past memtable_bytes_max (or
 * to finish a failed flush) and expires fingerprints; the compactor
 * compacts past compact_files_min. Two threads, so that the memtables are
 * flushed, and stay within their limit, while a compaction lasts
 * (seconds). After a failure each backs off (100 ms doubling to 10 s) and
 * nothing but closing cuts the backoff short; once the store is sticky it
 * only waits to close.
 */

/* Flushes and compactions take seconds of CPU; BACKGROUND_NICE steps lower
 * in priority they use what the latency-bound threads (queries, acks)
 * leave. Raising one's own nice needs no privilege; a failure only leaves
 * the priority as it was. */
static void background_nice(void)
{
	int nice = getpriority(PRIO_PROCESS, 0) + BACKGROUND_NICE;
	(void)setpriority(PRIO_PROCESS, (id_t)gettid(), nice > 19 ? 19 : nice);
}

/* Under s->lock: waits on `wake` for the backoff, or while sticky, or (when
 * no work is due) for a tick. */
static void background_wait(tally_store *s, pthread_cond_t *wake, uint32_t backoff_ms, int due)
{
	struct timespec deadline;
	if (backoff_ms || s->sticky) {
		deadline_after_ms(&deadline, backoff_ms ? backoff_ms : BACKGROUND_TICK_MS);
		while (!s->closing && pthread_cond_timedwait(wake, &s->lock, &deadline) != ETIMEDOUT)
			;
	} else if (!due) {
		deadline_after_ms(&deadline, BACKGROUND_TICK_MS);
		pthread_cond_timedwait(wake, &s->lock, &deadline);
	}
}

static uint32_t backoff_next(uint32_t backoff_ms, int rc)
{
	backoff_ms = rc ? (backoff_ms ? backoff_ms * 2 : 100) : 0;
	return backoff_ms > 10000 ? 10000 : backoff_ms;
}

/* Under s->lock: the active memtables are older than memtable_age_max_us.
 * A clock that went back before active_since_us restarts the age from
 * now, so a step back of the wall clock delays the flush rather than
 * making it due at once or never. */
static int flush_aged(tally_store *s)
{
	if (!s->options.memtable_age_max_us || !s->active_since_us)
		return 0;
	int64_t now = s->io->now_us(s->io);
	if (now < s->active_since_us)
		s->active_since_us = now;
	return now - s->active_since_us >= s->options.memtable_age_max_us;
}

/* Under s->lock. Frozen memtables are due only when no flush is writing
 * them (a failed flush left them, to be tried again): while another
 * thread's flush writes them, the worker would wait for it and then flush
 * whatever came in meanwhile, a needless small file. */
static int flush_due(tally_store *s)
{
	return s->active_bytes >= s->options.memtable_bytes_max || (s->frozen && !s->flushing) ||
	       flush_aged(s);
}

static void *worker_main(void *arg)
{
	tally_store *s = arg;
	uint32_t backoff_ms = 0;
	background_nice();
	pthread_mutex_lock(&s->lock);
	while (!s->closing) {
		background_wait(s, &s->wake, backoff_ms, flush_due(s));
		if (s->closing || s->sticky)
			continue;
		int due = flush_due(s);
		pthread_mutex_unlock(&s->lock);
		int rc = due ? tally_flush(s) : 0;
		store_expire_dedup(s);
		backoff_ms = backoff_next(backoff_ms, rc);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Waits a tick (or a flush's signal) before every try: a try that finds
 * no two runs to merge leaves file_count as it was. */
static void *compactor_main(void *arg)
{
	tally_store *s = arg;
	uint32_t backoff_ms = 0;
	background_nice();
	pthread_mutex_lock(&s->lock);
	while (!s->closing) {
		background_wait(s, &s->compact_wake, backoff_ms, 0);
		if (s->closing || s->sticky || s->file_count < s->options.compact_files_min)
			continue;
		pthread_mutex_unlock(&s->lock);
		backoff_ms = backoff_next(backoff_ms, compact_tiered(s));
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ---- open and close ----------------------------------------------------- */

/* Sets closing and joins the background threads that started; each
 * finishes the flush or compaction it is running first. */
static void background_stop(tally_store *s)
{
	pthread_mutex_lock(&s->lock);
	s->closing = 1;
	pthread_cond_broadcast(&s->wake);
	pthread_cond_broadcast(&s->compact_wake);
	pthread_cond_broadcast(&s->flushed);
	pthread_cond_broadcast(&s->rollup_wake);
	pthread_mutex_unlock(&s->lock);
	if (s->worker_started)
		pthread_join(s->worker, NULL);
	if (s->compactor_started)
		pthread_join(s->compactor, NULL);
	if (s->rollup_started)
		pthread_join(s->rollup_thread, NULL);
	s->worker_started = s->compactor_started = s->rollup_started = 0;
}

typedef struct orphan_ctx {
	tally_store *s;
	char names[64][80];
	int count;
	int more;
} orphan_ctx;

static int collect_orphan(void *ctx, const char *name)
{
	orphan_ctx *o = ctx;
	uint64_t id;
	char tail[16];
	int live = 0;
	if (sscanf(name, "%16" SCNx64 "%15s", &id, tail) == 2 && strcmp(tail, ".seg") == 0)
		for (uint32_t i = 0; i < o->s->manifest.file_count; i++)
			live |= o->s->manifest.file_ids[i] == id;
	if (live)
		return 0;
	if (o->count == 64) {
		o->more = 1;
		return 1;
	}
	snprintf(o->names[o->count++], sizeof(o->names[0]), "%s", name);
	return 0;
}

static int remove_orphans(tally_store *s)
{
	orphan_ctx *o = malloc(sizeof(*o));
	if (!o)
		return -ENOMEM;
	int rc;
	do {
		memset(o, 0, sizeof(*o));
		o->s = s;
		/* collect_orphan stops the listing (returns 1) when its batch of 64
		 * names is full: that is not an error. */
		rc = s->io->list_dir(s->io, s->segment_dir, collect_orphan, o);
		if (rc == 1 && o->more)
			rc = 0;
		if (rc)
			break;
		for (int i = 0; i < o->count; i++) {
			char path[PATH_SIZE_MAX + 200];
			snprintf(path, sizeof(path), "%s/%s", s->segment_dir, o->names[i]);
			if ((rc = s->io->unlink(s->io, path)))
				break;
		}
	} while (!rc && o->more);
	free(o);
	if (!rc)
		rc = s->io->fsync_dir(s->io, s->segment_dir);
	return rc;
}

static int rebuild_dedup(tally_store *s)
{
	int64_t day_min = s->replay_day_min;
	rows r = {0};
	int rc = 0;
	for (uint32_t fi = 0; fi < s->file_count && !rc; fi++) {
		segment_file *f = s->files[fi];
		for (uint32_t ti = 0; ti < f->tenant_count && !rc; ti++) {
			const seg_tenant *st = &f->tenants[ti];
			tenant *t = s->tenants[st->tenant_id];
			int64_t last_rowgroup = -1; /* shared row groups are read once */
			for (uint32_t si = st->first_segment;
			     si < st->first_segment + st->segment_count && !rc; si++) {
				const seg_segment *seg = &f->segments[si];
				if (seg->day < day_min)
					continue;
				for (uint32_t g = seg->first_rowgroup;
				     g < seg->first_rowgroup + seg->rowgroup_count && !rc; g++) {
					if ((int64_t)g <= last_rowgroup)
						continue;
					last_rowgroup = g;
					rc = segment_read_rowgroup(f, g, 1u << TALLY_COL_EVENT_ID |
									 1u << TALLY_COL_TIME,
								   &r, s->errmsg);
					for (uint32_t i = 0; i < r.count && !rc; i++) {
						int64_t day = day_of(r.time_us[i]);
						if (day < day_min)
							continue; /* an older day sharing the row group */
						size_t size;
						const uint8_t *bytes = rows_id(&r, i, &size);
						rc = dedup_insert(&t->dedup,
								  dedup_hash(r.id_kind[i], bytes, size),
								  fingerprint_day(day),
								  fingerprint_day(day_min));
					}
				}
			}
		}
	}
	rows_free(&r);
	return rc;
}

static void store_free(tally_store *s)
{
	for (uint32_t i = 0; i < s->file_count; i++)
		segment_file_close(s->files[i]);
	free(s->files);
	for (uint32_t i = 0; i < s->tenant_count; i++) {
		tenant *t = s->tenants[i];
		if (t->active) {
			memtable_free(t->active);
			free(t->active);
		}
		if (t->frozen) {
			memtable_free(t->frozen);
			free(t->frozen);
		}
		dedup_free(&t->dedup);
		pthread_mutex_destroy(&t->query_lock);
		free(t);
	}
	free(s->tenants);
	free(s->tenant_slots);
	manifest_free(&s->manifest);
	change_map_free(&s->changes);
	change_map_free(&s->changes_frozen);
	bytebuf_free(&s->multi_record);
	for (int i = 0; i < VERIFY_CACHE_ENTRIES; i++)
		verify_entry_clear(&s->verify_cache[i]);
	query_cache_free(s);
	if (s->lock_fd >= 0)
		s->io->close(s->io, s->lock_fd);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->flush_mutex);
	pthread_mutex_destroy(&s->compact_mutex);
	pthread_mutex_destroy(&s->publish);
	pthread_mutex_destroy(&s->cache_lock);
	pthread_mutex_destroy(&s->errmsg_lock);
	pthread_cond_destroy(&s->flushed);
	pthread_cond_destroy(&s->wake);
	pthread_cond_destroy(&s->rollup_wake);
	pthread_cond_destroy(&s->compact_wake);
	free(s->watched);
	free(s);
}

typedef struct suffix_probe {
	const char *suffix;
	int found;
} suffix_probe;

static int probe_suffix(void *ctx, const char *name)
{
	suffix_probe *p = ctx;
	size_t n = strlen(name), m = strlen(p->suffix);
	p->found = n > m && strcmp(name + n - m, p->suffix) == 0;
	return p->found;
}

/* 1 if directory `path` holds a file whose name ends with suffix, 0 if
 * not, -errno if it cannot be listed (then nothing is known: a listing
 * error must not pass for an empty directory). */
static int dir_has_files(const tally_io *io, const char *path, const char *suffix)
{
	suffix_probe p = {suffix, 0};
	int rc = io->list_dir(io, path, probe_suffix, &p);
	return rc < 0 ? rc : p.found;
}

/*
 * With no MANIFEST: 0 if neither segments/ nor wal/ holds a data file (a
 * new store), else an error with s->errmsg set. A store writes its
 * manifest before any WAL or segment file, so data without a manifest is
 * damage, not a new store: starting empty would delete the segments as
 * debris. So would taking a directory that cannot be listed for empty.
 */
static int refuse_data_without_manifest(tally_store *s)
{
	const char *dirs[2] = {s->segment_dir, s->wal_dir};
	const char *suffixes[2] = {".seg", ".wal"};
	for (int i = 0; i < 2; i++) {
		int found = dir_has_files(s->io, dirs[i], suffixes[i]);
		if (found < 0) {
			snprintf(s->errmsg, sizeof(s->errmsg),
				 "%s/MANIFEST is missing and %s cannot be listed (%s); refusing to "
				 "start empty", s->dir, dirs[i], tally_strerror(found));
			return found;
		}
		if (found) {
			snprintf(s->errmsg, sizeof(s->errmsg),
				 "%s/MANIFEST is missing but %s or %s holds data files; refusing to "
				 "start empty", s->dir, s->segment_dir, s->wal_dir);
			return TALLY_E_CORRUPT;
		}
	}
	return 0;
}


/* Starts fn(s) on *thread, named `name` (a debugging aid: a failure to
 * set it is harmless), and sets *started. On failure stops the threads
 * already started and sets the errmsg naming `what`. 0 or -errno. */
static int background_start(tally_store *s, pthread_t *thread, void *(*fn)(void *),
			    const char *name, const char *what, int *started)
{
	int rc = -pthread_create(thread, NULL, fn, s);
	if (rc) {
		errmsg_printf(s, "start %s for %s: %s", what, s->dir, tally_strerror(rc));
		background_stop(s);
		return rc;
	}
	*started = 1;
	pthread_setname_np(*thread, name);
	return 0;
}

int tally_store_open(const char *dir, const tally_options *options, tally_store **out,
		     char *errmsg)
{
	*out = NULL;
	if (!dir || strlen(dir) >= PATH_SIZE_MAX) {
		if (errmsg && dir)
			snprintf(errmsg, TALLY_ERRMSG_SIZE,
				 "open: the directory's path is %zu bytes, longer than %d",
				 strlen(dir), PATH_SIZE_MAX - 1);
		else if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "open: no directory given");
		return TALLY_E_INVALID;
	}
	tally_store *s = calloc(1, sizeof(*s));
	if (!s) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "open %s: %s", dir, tally_strerror(-ENOMEM));
		return -ENOMEM;
	}
	if (options)
		s->options = *options;
	else
		tally_options_default(&s->options);
	s->io = s->options.io ? s->options.io : tally_io_default();
	s->query_cells_max = TALLY_QUERY_CELLS_MAX;
	if (s->options.minute_pages_retention_us <= 0)
		s->options.minute_pages_retention_us = 48 * 3600 * TALLY_US_PER_SECOND;
	if (s->options.memtable_age_max_us < 0) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE,
				 "open %s: memtable_age_max_us is negative (%" PRId64 "); 0 means no age limit",
				 dir, s->options.memtable_age_max_us);
		free(s);
		return TALLY_E_INVALID;
	}
	if (s->options.memtable_bytes_max > TALLY_MEMTABLE_BYTES_MAX_LIMIT) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE,
				 "open %s: memtable_bytes_max %" PRIu64 " is over %" PRIu64
				 " (TALLY_MEMTABLE_BYTES_MAX_LIMIT: a memtable must fit a segment's blocks)",
				 dir, s->options.memtable_bytes_max, TALLY_MEMTABLE_BYTES_MAX_LIMIT);
		free(s);
		return TALLY_E_INVALID;
	}
	if (s->options.query_rows_behind_max == 0)
		s->options.query_rows_behind_max = QUERY_ROLLUP_BEHIND_MAX;
	if (s->options.query_cache_bytes_max == 0)
		s->options.query_cache_bytes_max = QUERY_CACHE_BYTES_MAX_DEFAULT;
	if (s->options.query_bytes_max == 0)
		s->options.query_bytes_max = QUERY_BYTES_MAX_DEFAULT;
	if (s->options.ingest_part_bytes_max == 0)
		s->options.ingest_part_bytes_max = INGEST_PART_BYTES_MAX;
	if (s->options.ingest_part_bytes_max > WAL_RECORD_PAYLOAD_MAX - VARINT_SIZE_MAX)
		s->options.ingest_part_bytes_max = WAL_RECORD_PAYLOAD_MAX - VARINT_SIZE_MAX;
	s->lock_fd = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->flush_mutex, NULL);
	pthread_mutex_init(&s->compact_mutex, NULL);
	pthread_mutex_init(&s->publish, NULL);
	pthread_mutex_init(&s->cache_lock, NULL);
	pthread_mutex_init(&s->errmsg_lock, NULL);
	pthread_cond_init(&s->flushed, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&s->wake, &attr);
	pthread_cond_init(&s->rollup_wake, &attr);
	pthread_cond_init(&s->compact_wake, &attr);
	pthread_condattr_destroy(&attr);
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	snprintf(s->wal_dir, sizeof(s->wal_dir), "%s/wal", dir);
	snprintf(s->segment_dir, sizeof(s->segment_dir), "%s/segments", dir);
	const tally_io *io = s->io;
	char path[PATH_SIZE_MAX + 16];
	int rc;
	if ((rc = tally_io_make_dir(io, s->dir, 0755)) ||
	    (rc = tally_io_make_dir(io, s->wal_dir, 0755)) ||
	    (rc = tally_io_make_dir(io, s->segment_dir, 0755))) {
		set_errmsg(s, "create data directory %s: %s", dir, rc);
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/LOCK", dir);
	if ((s->lock_fd = io->open(io, path, O_RDWR | O_CREAT, 0644)) < 0) {
		rc = s->lock_fd;
		set_errmsg(s, "open %s: %s", path, rc);
		goto fail;
	}
	if ((rc = io->lock(io, s->lock_fd))) {
		if (rc == -EWOULDBLOCK || rc == -EAGAIN)
			rc = TALLY_E_LOCKED;
		set_errmsg(s, "lock %s: %s", path, rc);
		goto fail;
	}
	rc = manifest_read(io, s->dir, &s->manifest, s->errmsg);
	if (rc == TALLY_E_NOTFOUND) {
		int refused = refuse_data_without_manifest(s);
		if (refused) {
			rc = refused;
			goto fail;
		}
	}
	if (rc == TALLY_E_NOTFOUND) {
		s->manifest.wal_replay_lsn = 1;
		s->manifest.next_file_id = 1;
		s->manifest.wal_file_id_next = 1;
		if (!(rc = change_map_init(&s->manifest.changes)))
			rc = manifest_write(io, s->dir, &s->manifest, s->errmsg);
	}
	if (rc)
		goto fail;
	/* The MANIFEST just read may be a rename an earlier process made and
	 * never made durable (killed before its directory fsync, or that
	 * fsync failed): nothing is done on its word (orphans removed, WAL
	 * replayed from its mark, retired below it) before it is durable. */
	if ((rc = io->fsync_dir(io, s->dir))) {
		set_errmsg(s, "fsync %s (the directory holding MANIFEST): %s", dir, rc);
		goto fail;
	}
	/* The store directory's entry in its parent is made durable before
	 * anything is acknowledged in it, at every open: a directory made
	 * before the open (by an operator, say), or an earlier open that
	 * wrote the MANIFEST and then failed (or was killed) before this
	 * fsync, would otherwise be lost to a power cut with every event
	 * acknowledged in it since. Before 2026-12-04 only the open that
	 * wrote a new MANIFEST made it. */
	if ((rc = tally_io_fsync_parent(io, s->dir))) {
		set_errmsg(s, "fsync the directory holding %s: %s", dir, rc);
		goto fail;
	}
	/* The change map: the manifest's marks (events in segment files), then
	 * the WAL replay marks the rest with their records' LSNs. */
	if ((rc = change_map_init(&s->changes)) || (rc = change_map_init(&s->changes_frozen)))
		goto fail;
	change_map_copy(&s->changes, &s->manifest.changes);
	/* Tenant names must be valid and distinct (manifest_read does not
	 * know what a valid name is); the messages are tally_verify's. */
	uint64_t offset = MANIFEST_HEADER_SIZE + (uint64_t)s->manifest.file_count * 8;
	for (uint32_t i = 0; i < s->manifest.tenant_count; i++) {
		const manifest_tenant *mt = &s->manifest.tenants[i];
		const tenant *repeated = tenant_find(s, mt->name);
		if (!tenant_name_valid(mt->name) || repeated) {
			rc = TALLY_E_CORRUPT;
			if (repeated)
				errmsg_printf(s, "%s/MANIFEST offset %" PRIu64 ": tenant name '%s' repeats "
					      "tenant %u", dir, offset, mt->name, repeated->id);
			else
				errmsg_printf(s, "%s/MANIFEST offset %" PRIu64 ": tenant %u has an invalid "
					      "name", dir, offset, i);
			goto fail;
		}
		tenant *t;
		if ((rc = tenant_add(s, mt->name, name_hash(mt->name), &t)))
			goto fail;
		offset += 1 + (uint64_t)mt->name_size;
	}
	s->files = calloc(s->manifest.file_count + 1, sizeof(*s->files));
	if (!s->files) {
		rc = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < s->manifest.file_count; i++) {
		segment_file *f;
		if ((rc = segment_file_open(io, s->segment_dir, s->manifest.file_ids[i], &f, s->errmsg)))
			goto fail;
		s->files[s->file_count++] = f;
		for (uint32_t ti = 0; ti < f->tenant_count; ti++) {
			const seg_tenant *st = &f->tenants[ti];
			if (st->tenant_id >= s->tenant_count ||
			    strcmp(s->tenants[st->tenant_id]->name, st->name) != 0) {
				rc = TALLY_E_CORRUPT;
				errmsg_printf(s, "%s offset %" PRIu64 ": footer names tenant %s with id %u, "
					      "which the manifest does not", f->path,
					      f->footer_offset, st->name, st->tenant_id);
				goto fail;
			}
		}
	}
	if ((rc = remove_orphans(s))) {
		set_errmsg(s, "remove unreferenced files in %s: %s", s->segment_dir, rc);
		goto fail;
	}
	/* One horizon for the fingerprints of segments and of WAL replay. */
	s->replay_day_min = fingerprint_day_min(s, io->now_us(io));
	s->dedup_expired_day = fingerprint_day(s->replay_day_min); /* nothing older is added */
	s->horizon_floor_day = s->dedup_expired_day;
	if ((rc = rebuild_dedup(s)))
		goto fail;
	wal_options wo = {
		.file_bytes_max = s->options.wal_file_bytes_max,
		.buffer_bytes_max = s->options.wal_buffer_bytes_max,
		.group_commit_window_us = s->options.group_commit_window_us,
		.file_id_min = s->manifest.wal_file_id_next,
	};
	if ((rc = wal_open(io, s->wal_dir, &wo, s->manifest.wal_replay_lsn, replay_record, s, &s->wal,
			   s->errmsg)))
		goto fail;
	/* Known from now on, also after a version 1 or 2 manifest (0): the
	 * next manifest written, even a compaction's, carries it. */
	s->manifest.wal_file_id_next = wal_file_id_next(s->wal);
	memtable_peak_note(s); /* what the replay put back */
	/* Replayed rows' age counts from this open: when they first arrived
	 * is not recorded. Only rows put bytes in the active memtables. */
	if (s->active_bytes)
		s->active_since_us = io->now_us(io);
	if (s->options.background &&
	    ((rc = background_start(s, &s->worker, worker_main, "tally-flush",
				    "background worker", &s->worker_started)) ||
	     (rc = background_start(s, &s->compactor, compactor_main, "tally-compact",
				    "compaction thread", &s->compactor_started)) ||
	     (rc = background_start(s, &s->rollup_thread, rollup_main, "tally-rollup",
				    "rollup thread", &s->rollup_started))))
		goto fail;
	*out = s;
	return 0;
fail:
	if (errmsg)
		snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s", s->errmsg[0] ? s->errmsg : tally_strerror(rc));
	if (s->wal)
		wal_close(s->wal);
	store_free(s);
	return rc;
}

int tally_store_close(tally_store *s)
{
	if (!s)
		return 0;
	background_stop(s);
	/* A caller's flush or compaction finishes first. */
	pthread_mutex_lock(&s->flush_mutex);
	pthread_mutex_unlock(&s->flush_mutex);
	pthread_mutex_lock(&s->compact_mutex);
	pthread_mutex_unlock(&s->compact_mutex);
	int rc = wal_close(s->wal);
	if (!rc)
		rc = s->sticky;
	store_free(s);
	return rc;
}

const char *tally_store_errmsg(const tally_store *s)
{
	return s->errmsg;
}

void tally_store_errmsg_copy(const tally_store *s, char *out, size_t size)
{
	pthread_mutex_t *lock = (pthread_mutex_t *)&s->errmsg_lock; /* const: the message, not the lock */
	pthread_mutex_lock(lock);
	snprintf(out, size, "%s", s->errmsg);
	pthread_mutex_unlock(lock);
}

/*
 * Calls fn once per row group of tenant t, in every live segment file, that
 * holds rows of a segment overlapping [from_us, to_us): file by file, row
 * groups ascending, each once (small days share row groups). `first` is 1
 * for the first row group of a file's tenant section. Stops at fn's first
 * non-zero return and returns it.
 */
typedef int (*rowgroup_fn)(void *ctx, segment_file *f, uint32_t ti, uint32_t g, int first);
static int each_rowgroup(tally_store *s, const tenant *t, int64_t from_us, int64_t to_us,
			 rowgroup_fn fn, void *ctx)
{
	int rc = 0;
	for (uint32_t fi = 0; fi < s->file_count && !rc; fi++) {
		segment_file *f = s->files[fi];
		int64_t ti = segment_file_find_tenant(f, t->id);
		if (ti < 0)
			continue;
		const seg_tenant *sec = &f->tenants[ti];
		int64_t last = -1;
		for (uint32_t si = sec->first_segment;
		     si < sec->first_segment + sec->segment_count && !rc; si++) {
			const seg_segment *seg = &f->segments[si];
			if (seg->time_max_us < from_us || seg->time_min_us >= to_us)
				continue;
			for (uint32_t g = seg->first_rowgroup;
			     g < seg->first_rowgroup + seg->rowgroup_count && !rc; g++)
				if ((int64_t)g > last) {
					rc = fn(ctx, f, (uint32_t)ti, g, last < 0);
					last = g;
				}
		}
	}
	return rc;
}

/* ---- scans -------------------------------------------------------------- */

/* Sources live in an array that grows, so they refer to each other by
 * index, never by pointer. */
typedef struct scan_source {
	rows rows;                     /* a decoded row group (owned) */
	strdict dict_owned[DIM_COUNT]; /* a tenant section's dictionary (owned) */
	const rows *memtable_rows;     /* or a memtable's rows (not owned) */
	const strdict *memtable_dict;  /* a memtable's one dictionary (not owned) */
	uint32_t dict_source;          /* source owning the dictionary of a row group */
} scan_source;

typedef struct scan_ref {
	int64_t time_us;
	uint32_t source;
	uint32_t row;
} scan_ref;

static int scan_ref_compare(const void *a, const void *b)
{
	const scan_ref *x = a, *y = b;
	if (x->time_us != y->time_us)
		return x->time_us < y->time_us ? -1 : 1;
	if (x->source != y->source)
		return x->source < y->source ? -1 : 1;
	return x->row < y->row ? -1 : x->row > y->row;
}

typedef struct scan_state {
	scan_source *sources;
	uint32_t source_count;
	uint32_t source_capacity;
	scan_ref *refs;
	size_t ref_count;
	size_t ref_capacity;
} scan_state;

static scan_source *scan_add_source(scan_state *st)
{
	if (st->source_count == st->source_capacity) {
		uint32_t capacity = st->source_capacity ? st->source_capacity * 2 : 16;
		scan_source *sources = realloc(st->sources, sizeof(*sources) * capacity);
		if (!sources)
			return NULL;
		st->sources = sources;
		st->source_capacity = capacity;
	}
	scan_source *src = &st->sources[st->source_count++];
	memset(src, 0, sizeof(*src));
	return src;
}

static int scan_add_refs(scan_state *st, uint32_t source, const rows *r, int64_t from, int64_t to)
{
	for (uint32_t i = 0; i < r->count; i++) {
		if (r->time_us[i] < from || r->time_us[i] >= to)
			continue;
		if (st->ref_count == st->ref_capacity) {
			size_t capacity = st->ref_capacity ? st->ref_capacity * 2 : 1024;
			scan_ref *refs = realloc(st->refs, sizeof(*refs) * capacity);
			if (!refs)
				return -ENOMEM;
			st->refs = refs;
			st->ref_capacity = capacity;
		}
		st->refs[st->ref_count++] = (scan_ref){r->time_us[i], source, i};
	}
	return 0;
}

static void scan_free(scan_state *st)
{
	for (uint32_t i = 0; i < st->source_count; i++) {
		rows_free(&st->sources[i].rows);
		for (int d = 0; d < DIM_COUNT; d++)
			strdict_free(&st->sources[i].dict_owned[d]);
	}
	free(st->sources);
	free(st->refs);
}

/* tally_scan's row groups: each decoded into a source of its own, the
 * section's dictionary into the first. */
typedef struct scan_collect {
	tally_store *s;
	scan_state *st;
	int64_t from_us, to_us;
	int64_t dict_source;
} scan_collect;

static int scan_collect_rowgroup(void *ctx, segment_file *f, uint32_t ti, uint32_t g, int first)
{
	scan_collect *c = ctx;
	scan_source *src = scan_add_source(c->st);
	if (!src)
		return -ENOMEM;
	int rc = 0;
	char err[TALLY_ERRMSG_SIZE] = "";
	if (first) {
		rc = segment_read_dict(f, ti, src->dict_owned, err);
		c->dict_source = c->st->source_count - 1;
	}
	src->dict_source = (uint32_t)c->dict_source;
	if (!rc)
		rc = segment_read_rowgroup(f, g, SEGMENT_COLUMNS_ALL, &src->rows, err);
	if (!rc)
		rc = segment_rows_check(f, ti, g, &src->rows,
					c->st->sources[c->dict_source].dict_owned, err);
	rc = errmsg_keep(c->s, rc, err);
	if (!rc)
		rc = scan_add_refs(c->st, c->st->source_count - 1, &src->rows, c->from_us, c->to_us);
	return rc;
}

int tally_scan(tally_store *s, const char *tenant_name, int64_t from_us, int64_t to_us,
	       tally_scan_fn fn, void *ctx)
{
	if (!tenant_name || !tenant_name_valid(tenant_name))
		return TALLY_E_TENANT;
	if (from_us >= to_us)
		return TALLY_E_INVALID;
	scan_state st = {0};
	int rc = 0;
	pthread_mutex_lock(&s->lock);
	tenant *t = tenant_find(s, tenant_name);
	if (!t)
		goto out;
	scan_collect collect = {s, &st, from_us, to_us, -1};
	rc = each_rowgroup(s, t, from_us, to_us, scan_collect_rowgroup, &collect);
	memtable *tables[2] = {t->frozen, t->active};
	for (int m = 0; m < 2 && !rc; m++) {
		if (!tables[m])
			continue;
		scan_source *src = scan_add_source(&st);
		if (!src) {
			rc = -ENOMEM;
			break;
		}
		src->memtable_rows = &tables[m]->rows;
		src->memtable_dict = &tables[m]->dict;
		rc = scan_add_refs(&st, st.source_count - 1, src->memtable_rows, from_us, to_us);
	}
	if (rc)
		goto out;
	if (st.ref_count)
		qsort(st.refs, st.ref_count, sizeof(*st.refs), scan_ref_compare);
	for (size_t i = 0; i < st.ref_count; i++) {
		const scan_source *src = &st.sources[st.refs[i].source];
		const rows *r = src->memtable_rows ? src->memtable_rows : &src->rows;
		const strdict *dict[DIM_COUNT];
		for (int d = 0; d < DIM_COUNT; d++)
			dict[d] = src->memtable_dict ? src->memtable_dict
						     : &st.sources[src->dict_source].dict_owned[d];
		tally_event e;
		char id_text[ID_TEXT_SIZE_MAX];
		rows_event(r, dict, st.refs[i].row, &e, id_text);
		if ((rc = fn(ctx, &e)))
			break;
	}
out:
	pthread_mutex_unlock(&s->lock);
	scan_free(&st);
	return rc;
}

/* store_scan_rows_locked's row groups: decoded into one rows buffer, with
 * the dictionary of the section they belong to. */
typedef struct rows_visit {
	tally_store *s;
	segment_file *const *files; /* the files to read (the catalog, or a pinned copy) */
	uint32_t file_count;
	int64_t from_us, to_us;
	const int64_t *stop_after; /* the caller's bound, may be NULL */
	store_rows_fn fn;
	void *ctx;
	uint64_t *rows_read;
	char *errmsg; /* the caller's, may be NULL */
	rows r;
	rows probe; /* a row group's times only (rows_visit_first) */
	strdict dict[DIM_COUNT];
	int dict_section; /* the section whose dictionary is in dict; -1: none */
	const segment_file *dict_file;
} rows_visit;

static void rows_visit_dict_free(rows_visit *v)
{
	for (int d = 0; d < DIM_COUNT; d++)
		strdict_free(&v->dict[d]);
	memset(v->dict, 0, sizeof(v->dict));
	v->dict_section = -1;
}

static int rows_visit_fail(rows_visit *v, int rc, const char *err)
{
	if (rc && err[0] && v->errmsg)
		snprintf(v->errmsg, TALLY_ERRMSG_SIZE, "%s", err);
	return errmsg_keep(v->s, rc, err);
}

/* The last time of row group g (its times are sorted: segment.c, invariant 3,
 * and a section's segments are in day order). */
static int rows_visit_last_time(rows_visit *v, segment_file *f, uint32_t g, int64_t *last)
{
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = segment_read_rowgroup(f, g, 1u << TALLY_COL_TIME, &v->probe, err);
	if (rc)
		return rows_visit_fail(v, rc, err);
	*last = v->probe.count ? v->probe.time_us[v->probe.count - 1] : INT64_MIN;
	return 0;
}

/* The first of row groups [g, end) that may hold a time at or after from:
 * a binary search on the groups' last times, reading only the time column. */
static int rows_visit_first(rows_visit *v, segment_file *f, uint32_t g, uint32_t end,
			    uint32_t *first)
{
	uint32_t lo = g, hi = end - 1; /* the answer is in [lo, hi] */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		int64_t last = INT64_MIN;
		int rc = rows_visit_last_time(v, f, mid, &last);
		if (rc)
			return rc;
		if (last < v->from_us)
			lo = mid + 1;
		else
			hi = mid;
	}
	*first = lo;
	return 0;
}

/* Decodes row group g of section ti of file f, calls fn for its rows in
 * [from, to), and sets *past when its last time says no later row group of
 * the section can hold a row the caller wants. */
static int rows_visit_rowgroup(rows_visit *v, segment_file *f, uint32_t ti, uint32_t g, int *past)
{
	int rc = 0;
	char err[TALLY_ERRMSG_SIZE] = "";
	if (v->dict_section != (int)ti || v->dict_file != f) {
		rows_visit_dict_free(v);
		if ((rc = segment_read_dict(f, ti, v->dict, err)))
			return rows_visit_fail(v, rc, err);
		v->dict_section = (int)ti;
		v->dict_file = f;
	}
	rc = segment_read_rowgroup(f, g, SEGMENT_COLUMNS_ALL, &v->r, err);
	if (!rc)
		rc = segment_rows_check(f, ti, g, &v->r, v->dict, err);
	if (rc)
		return rows_visit_fail(v, rc, err);
	*v->rows_read += v->r.count;
	const strdict *refs[DIM_COUNT];
	strdict_refs(v->dict, refs);
	for (uint32_t i = 0; i < v->r.count && !rc; i++)
		if (v->r.time_us[i] >= v->from_us && v->r.time_us[i] < v->to_us)
			rc = v->fn(v->ctx, &v->r, refs, i);
	if (v->r.count) {
		int64_t last = v->r.time_us[v->r.count - 1];
		*past = last >= v->to_us || (v->stop_after && last > *v->stop_after);
	}
	return rc;
}

/* The row groups of t's sections that may hold rows in [from, to): in each
 * section, the first found by a binary search on times, then each in turn
 * until one reaches to (or the caller's bound). */
static int rows_visit_sections(rows_visit *v, uint32_t tenant_id)
{
	int rc = 0;
	for (uint32_t fi = 0; fi < v->file_count && !rc; fi++) {
		segment_file *f = v->files[fi];
		int64_t ti = segment_file_find_tenant(f, tenant_id);
		if (ti < 0)
			continue;
		const seg_tenant *sec = &f->tenants[ti];
		int64_t next = -1; /* row groups before it were visited or passed over */
		int past = 0;
		for (uint32_t si = sec->first_segment;
		     si < sec->first_segment + sec->segment_count && !rc && !past; si++) {
			const seg_segment *seg = &f->segments[si];
			if (seg->time_max_us < v->from_us || seg->time_min_us >= v->to_us)
				continue;
			uint32_t g = seg->first_rowgroup, end = g + seg->rowgroup_count;
			if ((int64_t)g < next)
				g = (uint32_t)next;
			if (g >= end)
				continue;
			if (seg->time_min_us < v->from_us && end - g > 1 &&
			    (rc = rows_visit_first(v, f, g, end, &g)))
				break;
			for (; g < end && !rc && !past; g++)
				rc = rows_visit_rowgroup(v, f, (uint32_t)ti, g, &past);
			next = g;
		}
	}
	return rc;
}

int store_scan_file_rows(tally_store *s, segment_file *const *files, uint32_t file_count,
			 uint32_t tenant_id, int64_t from_us, int64_t to_us,
			 const int64_t *stop_after, store_rows_fn fn, void *ctx,
			 uint64_t *rows_read, char *errmsg)
{
	rows_visit v;
	memset(&v, 0, sizeof(v));
	v.s = s;
	v.files = files;
	v.file_count = file_count;
	v.from_us = from_us;
	v.to_us = to_us;
	v.stop_after = stop_after;
	v.fn = fn;
	v.ctx = ctx;
	v.rows_read = rows_read;
	v.errmsg = errmsg;
	v.dict_section = -1;
	int rc = rows_visit_sections(&v, tenant_id);
	rows_visit_dict_free(&v);
	rows_free(&v.r);
	rows_free(&v.probe);
	return rc;
}

/* Contract in store_internal.h. */
int store_scan_memtable_range(memtable *mt, uint32_t row_from, uint32_t row_to, int64_t from_us,
			      int64_t to_us, const int64_t *bound, store_rows_fn fn, void *ctx,
			      uint64_t *rows_read)
{
	if (!mt || row_from >= row_to || mt->time_max_us < from_us || mt->time_min_us >= to_us)
		return 0;
	const strdict *refs[DIM_COUNT];
	for (int d = 0; d < DIM_COUNT; d++)
		refs[d] = &mt->dict;
	int rc = 0;
	for (uint32_t i = row_from; i < row_to && !rc;) {
		uint32_t b = i / MEMTABLE_TIME_BLOCK_ROWS, first = b * MEMTABLE_TIME_BLOCK_ROWS;
		uint32_t end = row_to - first > MEMTABLE_TIME_BLOCK_ROWS ? first + MEMTABLE_TIME_BLOCK_ROWS
									 : row_to;
		time_range known;
		if (memtable_block_range(mt, b, &known) &&
		    (known.max_us < from_us || known.min_us >= to_us || (bound && known.min_us > *bound))) {
			i = end; /* no row of the block is wanted */
			continue;
		}
		*rows_read += end - i;
		time_range seen = {INT64_MAX, INT64_MIN};
		int whole = i == first && end - first == MEMTABLE_TIME_BLOCK_ROWS;
		for (; i < end && !rc; i++) {
			int64_t t = mt->rows.time_us[i];
			seen.min_us = t < seen.min_us ? t : seen.min_us;
			seen.max_us = t > seen.max_us ? t : seen.max_us;
			if (t >= from_us && t < to_us)
				rc = fn(ctx, &mt->rows, refs, i);
		}
		if (whole && !rc && !mt->frozen)
			memtable_block_note(mt, b, seen);
	}
	return rc;
}

int store_scan_memtable_rows(memtable *mt, int64_t from_us, int64_t to_us, store_rows_fn fn,
			     void *ctx, uint64_t *rows_read)
{
	return mt ? store_scan_memtable_range(mt, 0, mt->rows.count, from_us, to_us, NULL, fn, ctx,
					      rows_read)
		  : 0;
}

/* Contract in store_internal.h. */
void store_lock_counted(tally_store *s)
{
	if (pthread_mutex_trylock(&s->lock) == 0)
		return;
	atomic_fetch_add_explicit(&s->lock_waiting, 1, memory_order_relaxed);
	pthread_mutex_lock(&s->lock);
	atomic_fetch_sub_explicit(&s->lock_waiting, 1, memory_order_relaxed);
}

/* Contract in store_internal.h. */
void store_step_give_way(tally_store *s)
{
	for (uint32_t i = 0; i < STEP_GIVE_WAY_YIELDS &&
			     atomic_load_explicit(&s->lock_waiting, memory_order_relaxed);
	     i++)
		sched_yield();
}

/* Contract in store_internal.h. */
int store_scan_pinned_rows(tally_store *s, memtable *mt, uint32_t row_from, uint32_t row_to,
			   int64_t from_us, int64_t to_us, const int64_t *bound, store_rows_fn fn,
			   void *ctx, uint64_t *rows_read)
{
	int rc = 0;
	for (uint32_t row = row_from; row < row_to && !rc; row += MEMTABLE_SCAN_STEP_ROWS) {
		uint32_t end = row_to - row > MEMTABLE_SCAN_STEP_ROWS ? row + MEMTABLE_SCAN_STEP_ROWS
								      : row_to;
		pthread_mutex_lock(&s->lock);
		rc = store_scan_memtable_range(mt, row, end, from_us, to_us, bound, fn, ctx, rows_read);
		pthread_mutex_unlock(&s->lock);
		if (end < row_to)
			store_step_give_way(s);
		if (s->step_test_hook)
			s->step_test_hook(s, s->step_test_ctx, STORE_STEP_SCAN);
	}
	return rc;
}

int store_scan_rows_locked(tally_store *s, tenant *t, int64_t from_us, int64_t to_us,
			   const int64_t *stop_after, store_rows_fn fn, void *ctx,
			   uint64_t *rows_read, char *errmsg)
{
	int rc = store_scan_file_rows(s, s->files, s->file_count, t->id, from_us, to_us, stop_after,
				      fn, ctx, rows_read, errmsg);
	if (!rc)
		rc = store_scan_memtable_rows(t->frozen, from_us, to_us, fn, ctx, rows_read);
	return rc ? rc : store_scan_memtable_rows(t->active, from_us, to_us, fn, ctx, rows_read);
}

/* ---- stats -------------------------------------------------------------- */

int tally_tenants(tally_store *s, tally_tenant_fn fn, void *ctx)
{
	pthread_mutex_lock(&s->lock);
	for (uint32_t i = 0; i < s->tenant_count; i++)
		fn(ctx, s->tenants[i]->name);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int tally_store_stats(tally_store *s, tally_stats *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&s->lock);
	out->tenant_count = s->tenant_count;
	for (uint32_t i = 0; i < s->tenant_count; i++) {
		const tenant *t = s->tenants[i];
		if (t->active)
			out->events_memtable += t->active->rows.count;
		if (t->frozen)
			out->events_memtable += t->frozen->rows.count;
		out->dedup_entries += t->dedup.count;
		out->dedup_bytes += dedup_bytes(&t->dedup);
		if (t->active)
			out->rollup_live_bytes += t->active->rollup_accounted;
		if (t->frozen)
			out->rollup_live_bytes += t->frozen->rollup_accounted;
	}
	out->memtable_bytes = s->active_bytes + s->frozen_bytes;
	out->memtable_bytes_peak = s->memtable_bytes_peak;
	out->query_cache_bytes = query_cache_bytes(s); /* no cache_lock: a mirror */
	out->segment_file_count = s->file_count;
	for (uint32_t i = 0; i < s->file_count; i++) {
		out->segment_count += s->files[i]->segment_count;
		out->segment_rows += s->files[i]->rows;
		out->segment_bytes += s->files[i]->size;
		const segment_file *f = s->files[i];
		for (uint32_t ti = 0; ti < f->tenant_count; ti++) {
			const seg_tenant *st = &f->tenants[ti];
			out->rollup_bytes += st->rollup_groups.stored_size;
			for (int list = 0; list < LIST_COUNT; list++)
				out->rollup_cells += st->rollup_cells[list];
		}
		for (uint32_t c = 0; c < f->chunk_total; c++)
			out->rollup_bytes += f->chunks[c].block.stored_size;
	}
	out->flush_count = s->flush_count;
	out->compaction_count = s->compaction_count;
	out->ingest_calls = s->ingest_calls;
	out->ingest_lock_hold_us = s->ingest_lock_hold_us;
	out->ingest_lock_wait_us = s->ingest_lock_wait_us;
	out->ingest_lock_hold_max_us = s->ingest_lock_hold_max_us;
	out->dedup_expiry_count = s->dedup_expiry_count;
	out->dedup_expiry_us_last = s->dedup_expiry_us_last;
	out->dedup_expiry_hold_max_us = s->dedup_expiry_hold_max_us;
	out->sticky_error = s->sticky;
	out->flush_failing = s->flush_failing;
	pthread_mutex_unlock(&s->lock);
	wal_stats ws;
	wal_get_stats(s->wal, &ws);
	out->wal_file_count = ws.file_count;
	out->wal_bytes = ws.bytes;
	out->wal_direct_io = ws.direct_io;
	out->durable_lsn = ws.durable_lsn;
	out->wal_fsync_count = ws.commit_fsync_count;
	out->wal_fsync_us_total = ws.commit_fsync_us_total;
	_Static_assert(sizeof(out->wal_fsync_hist) == sizeof(ws.commit_fsync_hist),
		       "the store reports the WAL's histogram as is");
	memcpy(out->wal_fsync_hist, ws.commit_fsync_hist, sizeof(out->wal_fsync_hist));
	return 0;
}
