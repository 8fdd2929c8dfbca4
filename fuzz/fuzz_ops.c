/*
 * fuzz_ops.c — libFuzzer target for the store as a whole, against a model:
 * the input is a program of operations on one store (ingest, backfill,
 * several tenants' batches in one call, flush, compaction, close and
 * reopen, the clock moving on, a batch whose WAL fsync fails, the power
 * failing or the disk filling in the middle of an ingest, flush,
 * compaction, close or open), run on a fresh data directory, and after
 * every operation the store must agree exactly with a brute-force model
 * of what it was told.
 *
 * The model is the engine's promise, written out per tenant: an event is
 * REJECTED for the first rule it breaks (validate's order); otherwise it is
 * compared with the tenant's stored events of the same id (the exact text)
 * that dedup covers: for an event inside the horizon H = now - 35 days,
 * those on day(H) - 1 or later (the fingerprint table's days); for an old
 * event of a backfill batch, those on its own UTC day
 * (docs/architecture.md, "Backfill"). A DUPLICATE when one of them is equal
 * in every field, a CONFLICT when there are others, ACCEPTED when there
 * are none; accepted events are stored once, for their tenant only.
 * After each operation the target checks, for every tenant:
 *   - each ingest result (code and reason) against the model's;
 *   - tally_scan: exactly the tenant's stored events, every field, no
 *     other tenant's;
 *   - one aggregate query (its bucket, time zone, grouping, filters,
 *     range, edges and top-N order chosen by the input) against a
 *     brute-force aggregation of the stored events, bucketed by the
 *     oracle of zone_model.h: the rows in the answer's order, the first
 *     `limit` of them, each with its bucket's bounds, count, every sum
 *     (its field modulo 2^64, and exact with its wraps: the order is by
 *     exact sums), duration min and max, count by status,
 *     distinct users (exact at these sizes) and four quantiles of
 *     duration within the sketch's 1%;
 *   - when the query is in one bucket, grouped, in the default order, up
 *     to four pages of it after one of the model's rows with a limit of
 *     1 or 2, the store's cells limit lowered to 2 to 4 so the query's
 *     window narrows (check_pages): each page the model's next rows;
 *   - the next page of a raw event listing with the query's range and
 *     filters (check_listing), which may continue one begun several
 *     operations before;
 *   - tally_scan over the query's range: exactly the events there, in
 *     time order;
 *   - the change map (check_changes): every day that stored an event
 *     after a check is listed as changed since that check's watermark;
 *   - tally_store_stats: memtable rows and segment rows add up to the
 *     stored events.
 * At the end the store is closed and tally_verify must find nothing.
 * A finding is a mismatch (the target prints both sides and aborts), a
 * sanitizer report or a crash.
 *
 * A fault during an operation (op_fault_during) is a power failure (every
 * file change fails from the operation's nth on, then the directory is
 * cut back to what was durable: tests/support/power_io.h) or a full disk
 * (writes ENOSPC after K more bytes); the store is then reopened, and the
 * same checks find every acknowledged event once, and a call that was
 * not acknowledged whole or absent.
 *
 * The clock is a fault_io clock that only moves forward (by minutes, or
 * by days, CLOCK_ADVANCE_MAX_US in all), so stored events leave the
 * horizon as a program runs and their ids become free again; an input
 * replays exactly. The store runs without background threads: what happens
 * between operations is only what the program says (a clock step also
 * runs the worker's expiry of fingerprints the horizon left).
 *
 * Input: a sequence of operations, each an opcode byte and the bytes it
 * reads (an exhausted input reads zeros); seeds are in fuzz/corpus-ops/.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_dir.h"
#include "support/fault_io.h"
#include "support/power_io.h"
#include "store_internal.h" /* store_expire_dedup: the worker's expiry */
#include "tally.h"
#include "zone_model.h"

#define TENANTS 4
#define BATCH_EVENTS_MAX 8
#define CALL_BATCHES_MAX 4
#define POWER_CHANGES_MAX 16 /* the power fails at one of an operation's first changes */
#define DISK_FULL_STEP_BYTES 64 /* the disk fills after 0, 64, ... 16,320 more bytes */
#define SENT_KEPT 256                 /* events kept for resending */
#define PAST_MAX_US (INT64_C(8) * TALLY_US_PER_DAY)
#define HORIZON_US (INT64_C(35) * TALLY_US_PER_DAY) /* the default lateness_past_us */
#define OLD_DAYS_MAX 120                             /* backfilled history before the horizon */
#define CLOCK_ADVANCE_MAX_US (INT64_C(70) * TALLY_US_PER_DAY)
/* 2026-11-06T21:20Z: the horizon holds Lord Howe's, Paris's and St John's
 * changes of clock (zones_init), backfills reach Chatham's and Santiago's. */
#define START_US (INT64_C(1794000000) * 1000000)

static const char *const tenant_names[TENANTS] = {"acme", "beta-co", "c.3", "delta_4"};

/* ---- events that own their bytes ---------------------------------------- */

typedef struct text {
	uint32_t len;
	char bytes[TALLY_DIMENSION_SIZE_MAX + 2];
} text;

typedef struct fevent {
	text id, type, project, agent, model, user;
	int64_t time_us;
	uint32_t status, duration_ms;
	uint64_t tokens_in, tokens_out;
	int64_t cost_micros;
} fevent;

static tally_str str_of(const text *t)
{
	return (tally_str){t->bytes, t->len};
}

static tally_event view(const fevent *f)
{
	return (tally_event){
		.event_id = str_of(&f->id), .time_us = f->time_us, .type = str_of(&f->type),
		.project = str_of(&f->project), .agent = str_of(&f->agent), .model = str_of(&f->model),
		.user = str_of(&f->user), .status = f->status, .duration_ms = f->duration_ms,
		.tokens_in = f->tokens_in, .tokens_out = f->tokens_out, .cost_micros = f->cost_micros};
}

static void text_set(text *t, const char *bytes, size_t len)
{
	t->len = (uint32_t)len;
	memcpy(t->bytes, bytes, len);
}

static int text_equal(const text *a, tally_str b)
{
	return a->len == b.len && (b.len == 0 || memcmp(a->bytes, b.ptr, b.len) == 0);
}

static int fevent_equal(const fevent *f, const tally_event *e)
{
	return text_equal(&f->id, e->event_id) && f->time_us == e->time_us &&
	       text_equal(&f->type, e->type) && text_equal(&f->project, e->project) &&
	       text_equal(&f->agent, e->agent) && text_equal(&f->model, e->model) &&
	       text_equal(&f->user, e->user) && f->status == e->status &&
	       f->duration_ms == e->duration_ms && f->tokens_in == e->tokens_in &&
	       f->tokens_out == e->tokens_out && f->cost_micros == e->cost_micros;
}

static void fevent_print(const char *label, const fevent *f)
{
	fprintf(stderr, "  %s: id [%.*s] time %lld type [%.*s] project [%.*s] agent [%.*s] "
		"model [%.*s] user [%.*s] status %u duration %u tokens %llu/%llu cost %lld\n",
		label, (int)f->id.len, f->id.bytes, (long long)f->time_us, (int)f->type.len,
		f->type.bytes, (int)f->project.len, f->project.bytes, (int)f->agent.len,
		f->agent.bytes, (int)f->model.len, f->model.bytes, (int)f->user.len, f->user.bytes,
		f->status, f->duration_ms, (unsigned long long)f->tokens_in,
		(unsigned long long)f->tokens_out, (long long)f->cost_micros);
}

/* ---- the input ----------------------------------------------------------- */

typedef struct reader {
	const uint8_t *p, *end;
} reader;

static uint8_t next(reader *r)
{
	return r->p < r->end ? *r->p++ : 0;
}

static uint64_t next_u64(reader *r, int bytes)
{
	uint64_t v = 0;
	for (int i = 0; i < bytes; i++)
		v = v << 8 | next(r);
	return v;
}

static uint64_t splitmix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* The event ids: 32 of four shapes (32 hex digits, a UUID, the same hex
 * digits in capitals, which is another id, and free text), the longest
 * allowed, one byte too long, and empty. */
static void gen_id(reader *r, text *id)
{
	uint8_t b = next(r);
	if (b == 255) {
		id->len = 0;
		return;
	}
	uint32_t k = b % 34;
	if (k >= 32) {
		id->len = k == 32 ? TALLY_EVENT_ID_SIZE_MAX : TALLY_EVENT_ID_SIZE_MAX + 1;
		for (uint32_t i = 0; i < id->len; i++)
			id->bytes[i] = (char)('a' + (i * 7 + k) % 26);
		return;
	}
	uint64_t v = splitmix(k & ~2u), w = splitmix(v);
	char hex[33];
	snprintf(hex, sizeof(hex), "%016llx%016llx", (unsigned long long)v, (unsigned long long)w);
	switch (k % 4) {
	case 0:
		text_set(id, hex, 32);
		break;
	case 1:
		id->len = (uint32_t)snprintf(id->bytes, sizeof(id->bytes), "%.8s-%.4s-%.4s-%.4s-%.12s",
					     hex, hex + 8, hex + 12, hex + 16, hex + 20);
		break;
	case 2:
		for (int i = 0; i < 32; i++)
			id->bytes[i] = (char)(hex[i] >= 'a' ? hex[i] - 'a' + 'A' : hex[i]);
		id->len = 32;
		break;
	default:
		id->len = (uint32_t)snprintf(id->bytes, sizeof(id->bytes), "run-%u/%llx", k,
					     (unsigned long long)(v & 0xffff));
		break;
	}
}

/* A dimension string: one of three values or empty, the longest allowed,
 * or one byte too long. */
static void gen_dim(reader *r, text *t, const char *const values[3], uint32_t max)
{
	uint8_t b = next(r);
	if (b < 250) {
		const char *v = b % 4 < 3 ? values[b % 4] : "";
		text_set(t, v, strlen(v));
		return;
	}
	t->len = b < 253 ? max : max + 1;
	for (uint32_t i = 0; i < t->len; i++)
		t->bytes[i] = (char)('A' + (i + b) % 26);
}

static const char *const types[3] = {"llm_call", "tool_call", "agent_run"};
static const char *const projects[3] = {"web", "batch-jobs", "ops"};
static const char *const agents[3] = {"planner", "coder", "reviewer"};
static const char *const models[3] = {"gpt-x", "claude-y", "local-z"};
static const char *const user_values[3] = {"u1", "u2@example.com", "u3"};

/* ---- time zones ---------------------------------------------------------- */

/* The zones a query may bucket in (NULL: UTC). Between them, the window
 * holds days of 23 and 25 hours, a repeated hour (Paris, St John's), a
 * 30-minute change (Lord Howe), changes at local midnight (Santiago),
 * offsets of :30 and :45 (Kolkata, Kathmandu, St John's, Chatham). */
#define ZONES 8
static const char *const zone_names[ZONES] = {NULL,
					      "Europe/Paris",
					      "Asia/Kolkata",
					      "Asia/Kathmandu",
					      "Australia/Lord_Howe",
					      "America/Santiago",
					      "America/St_Johns",
					      "Pacific/Chatham"};
#define ZONE_WINDOW_FROM_US (START_US - INT64_C(200) * TALLY_US_PER_DAY)
#define ZONE_WINDOW_TO_US (START_US + INT64_C(200) * TALLY_US_PER_DAY)
static zone_model zones[ZONES];
/* Every zone's transitions in the window: event times and query edges are
 * drawn near them. */
static int64_t transitions[ZONES * ZONE_TRANSITIONS_MAX];
static size_t transition_count;

static void zones_init(void)
{
	for (int z = 0; z < ZONES; z++) {
		zone_model_init(&zones[z], zone_names[z], ZONE_WINDOW_FROM_US, ZONE_WINDOW_TO_US);
		for (size_t i = 0; i < zones[z].count; i++)
			transitions[transition_count++] = zones[z].at[i];
	}
	unsetenv("TZ");
	tzset();
}

/* A time near one of the n transitions at[]: on it or a microsecond
 * either side, or up to three hours either side in whole minutes. */
static int64_t near(const int64_t *at, size_t n, uint64_t pick)
{
	int64_t t = at[pick % n];
	uint64_t k = pick / n;
	if (k % 4 == 0)
		return t + (int64_t)(k / 4 % 3) - 1;
	return t + ((int64_t)(k / 4 % 361) - 180) * ZONE_MINUTE_US;
}

/* A time near a transition: half the time one inside [lo, hi] when there
 * is one (where ingest accepts events), else any zone's. */
static int64_t near_transition(uint64_t pick, int64_t lo, int64_t hi)
{
	int64_t inside[ZONES * ZONE_TRANSITIONS_MAX];
	size_t n = 0;
	for (size_t i = 0; i < transition_count; i++)
		if (transitions[i] >= lo && transitions[i] <= hi)
			inside[n++] = transitions[i];
	return pick % 2 && n ? near(inside, n, pick / 2) : near(transitions, transition_count, pick / 2);
}

static void gen_event(reader *r, int64_t now, fevent *f)
{
	memset(f, 0, sizeof(*f));
	gen_id(r, &f->id);
	uint8_t when = next(r);
	uint64_t ago = next_u64(r, 3);
	if (when == 255)
		f->time_us = now + 4 * 60 * TALLY_US_PER_SECOND; /* ahead, inside 5 minutes */
	else if (when == 254)
		f->time_us = now + 6 * 60 * TALLY_US_PER_SECOND; /* too far ahead */
	else if (when == 253)
		f->time_us = now - 36 * TALLY_US_PER_DAY; /* old: a backfill's only */
	else if (when == 250) /* too old even for a backfill */
		f->time_us = now - TALLY_BACKFILL_AGE_MAX_US - TALLY_US_PER_DAY;
	else if (when >= 236) /* 236..252 (not 250): old, on a fingerprint day, day(H) - 1 or day(H) */
		f->time_us = now - HORIZON_US - 1 - (int64_t)(ago % 86400) * TALLY_US_PER_SECOND;
	else if (when >= 222) /* 222..235: older history, before the fingerprint days */
		f->time_us = zone_floor(now - HORIZON_US, TALLY_US_PER_DAY) -
			     (int64_t)(2 + ago % OLD_DAYS_MAX) * TALLY_US_PER_DAY +
			     (int64_t)(ago % 86400) * TALLY_US_PER_SECOND;
	else if (when < 32)
		f->time_us = now - (int64_t)(ago % 3600) * TALLY_US_PER_SECOND; /* the last hour */
	else if (when < 48) /* on an hour's, and so a minute's, first microsecond */
		f->time_us = zone_floor(now - (int64_t)(ago * ZONE_HOUR_US % PAST_MAX_US), ZONE_HOUR_US);
	else if (when < 56) /* on a day's */
		f->time_us = zone_floor(now - (int64_t)(ago % 8) * TALLY_US_PER_DAY, TALLY_US_PER_DAY);
	else if (when >= 200 && transition_count) /* 200..221: near a zone's transition */
		f->time_us = near_transition(ago, now - HORIZON_US, now);
	else if (when < 64) /* a microsecond before a minute */
		f->time_us = zone_floor(now - (int64_t)(ago * 997 * TALLY_US_PER_SECOND % PAST_MAX_US),
				      60 * TALLY_US_PER_SECOND) - 1;
	else
		f->time_us = now - (int64_t)(ago * 997 * TALLY_US_PER_SECOND % PAST_MAX_US);
	gen_dim(r, &f->type, types, TALLY_TYPE_SIZE_MAX);
	gen_dim(r, &f->project, projects, TALLY_DIMENSION_SIZE_MAX);
	gen_dim(r, &f->agent, agents, TALLY_DIMENSION_SIZE_MAX);
	gen_dim(r, &f->model, models, TALLY_DIMENSION_SIZE_MAX);
	gen_dim(r, &f->user, user_values, TALLY_DIMENSION_SIZE_MAX);
	uint8_t status = next(r);
	f->status = status < 250 ? status % TALLY_STATUS_COUNT : TALLY_STATUS_COUNT + status % 3;
	f->duration_ms = (uint32_t)next_u64(r, 2) * (next(r) % 8 == 0 ? 65537u : 1u);
	uint8_t wide = next(r);
	f->tokens_in = wide == 255 ? UINT64_MAX - next(r) : next_u64(r, 3);
	f->tokens_out = next_u64(r, 2);
	f->cost_micros = wide == 254 ? INT64_MIN + next(r) : (int64_t)(int16_t)next_u64(r, 2) * 1000;
}

/* ---- the model ----------------------------------------------------------- */

typedef struct tenant_model {
	fevent *events;
	size_t count, capacity;
} tenant_model;

/* The days around the start the change model follows (stored times span 240). */
#define CHANGE_DAYS 1024
#define CHANGE_DAY0 (START_US / TALLY_US_PER_DAY - 512)

typedef struct model {
	tenant_model tenant[TENANTS];
	fevent sent[SENT_KEPT]; /* the latest events sent, for resends */
	size_t sent_count;
	int64_t now, start;
	/* For check_changes: the change watermark read at each check so far,
	 * and for each UTC day from CHANGE_DAY0 the number of checks done when
	 * it last stored an event (-1: never). */
	uint64_t *watermarks;
	size_t checks;
	int32_t last_change[CHANGE_DAYS];
} model;

static int64_t day_of_us(int64_t t)
{
	return zone_floor(t, TALLY_US_PER_DAY) / TALLY_US_PER_DAY;
}

/* f's result against the tenant's stored events of its id that dedup
 * covers: those on days [day_min, day_max]. */
static int model_dedup(const tenant_model *t, const fevent *f, int64_t day_min, int64_t day_max)
{
	int found = 0;
	tally_event e = view(f);
	for (size_t i = 0; i < t->count; i++) {
		const fevent *g = &t->events[i];
		int64_t day = day_of_us(g->time_us);
		if (g->id.len != f->id.len || memcmp(g->id.bytes, f->id.bytes, f->id.len) ||
		    day < day_min || day > day_max)
			continue;
		if (fevent_equal(g, &e))
			return TALLY_DUPLICATE;
		found = 1;
	}
	return found ? TALLY_CONFLICT : TALLY_ACCEPTED;
}

/* validate's rules, in its order. */
static int expected_reason(const fevent *f, int64_t now, int backfill)
{
	if (f->id.len == 0)
		return TALLY_REASON_MISSING_ID;
	if (f->id.len > TALLY_EVENT_ID_SIZE_MAX)
		return TALLY_REASON_ID_TOO_LONG;
	if (f->time_us < now - HORIZON_US &&
	    (!backfill || f->time_us < now - TALLY_BACKFILL_AGE_MAX_US))
		return TALLY_REASON_TIME_TOO_OLD;
	if (f->time_us > now + 5 * 60 * TALLY_US_PER_SECOND)
		return TALLY_REASON_TIME_IN_FUTURE;
	if (f->type.len > TALLY_TYPE_SIZE_MAX)
		return TALLY_REASON_TYPE_TOO_LONG;
	if (f->project.len > TALLY_DIMENSION_SIZE_MAX)
		return TALLY_REASON_PROJECT_TOO_LONG;
	if (f->agent.len > TALLY_DIMENSION_SIZE_MAX)
		return TALLY_REASON_AGENT_TOO_LONG;
	if (f->model.len > TALLY_DIMENSION_SIZE_MAX)
		return TALLY_REASON_MODEL_TOO_LONG;
	if (f->user.len > TALLY_DIMENSION_SIZE_MAX)
		return TALLY_REASON_USER_TOO_LONG;
	if (f->status >= TALLY_STATUS_COUNT)
		return TALLY_REASON_UNKNOWN_STATUS;
	const text *strings[] = {&f->id, &f->type, &f->project, &f->agent, &f->model, &f->user};
	for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
		if (tally_utf8_invalid_at((const uint8_t *)strings[i]->bytes, strings[i]->len) !=
		    SIZE_MAX)
			return TALLY_REASON_NOT_UTF8;
	return TALLY_REASON_NONE;
}

/* The model's result for f sent to tenant t (in a backfill batch or
 * not), the model updated. */
static tally_ingest_result model_ingest(model *m, int t, const fevent *f, int backfill)
{
	tally_ingest_result res = {.code = TALLY_ACCEPTED, .reason = TALLY_REASON_NONE};
	int reason = expected_reason(f, m->now, backfill);
	if (reason) {
		res.code = TALLY_REJECTED;
		res.reason = (uint8_t)reason;
		return res;
	}
	tenant_model *tm = &m->tenant[t];
	int64_t horizon = m->now - HORIZON_US;
	if (f->time_us < horizon) /* old: its own day */
		res.code = (uint8_t)model_dedup(tm, f, day_of_us(f->time_us), day_of_us(f->time_us));
	else /* the fingerprint table's days */
		res.code = (uint8_t)model_dedup(tm, f, day_of_us(horizon) - 1, INT64_MAX);
	if (res.code != TALLY_ACCEPTED)
		return res;
	if (tm->count == tm->capacity) {
		size_t capacity = tm->capacity ? tm->capacity * 2 : 64;
		fevent *grown = realloc(tm->events, capacity * sizeof(*grown));
		if (!grown)
			abort();
		tm->events = grown;
		tm->capacity = capacity;
	}
	tm->events[tm->count++] = *f;
	int64_t day = day_of_us(f->time_us) - CHANGE_DAY0;
	if (day < 0 || day >= CHANGE_DAYS)
		abort(); /* the model's window is too small */
	m->last_change[day] = (int32_t)m->checks;
	return res;
}

static void model_free(model *m)
{
	for (int t = 0; t < TENANTS; t++)
		free(m->tenant[t].events);
	free(m->watermarks);
}

/* ---- the checks ---------------------------------------------------------- */

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_ops: %s\n", what);
	abort();
}

static void check_result(const fevent *f, tally_ingest_result got, tally_ingest_result want)
{
	if (got.code == want.code && (want.code != TALLY_REJECTED || got.reason == want.reason))
		return;
	fprintf(stderr, "fuzz_ops: ingest result %s (reason %u), the model says %s (reason %u)\n",
		tally_result_name(got.code), got.reason, tally_result_name(want.code), want.reason);
	fevent_print("event", f);
	abort();
}

typedef struct scanned {
	const tenant_model *want;
	uint8_t *seen;
	const char *tenant;
	int64_t last_us; /* the time of the event before: a scan is in time order */
} scanned;

static int scan_event(void *ctx, const tally_event *e)
{
	scanned *s = ctx;
	if (e->time_us < s->last_us) {
		fprintf(stderr, "fuzz_ops: tenant %s: the scan gave time %lld after %lld\n", s->tenant,
			(long long)e->time_us, (long long)s->last_us);
		abort();
	}
	s->last_us = e->time_us;
	for (size_t i = 0; i < s->want->count; i++) {
		if (!s->seen[i] && fevent_equal(&s->want->events[i], e)) {
			s->seen[i] = 1;
			return 0;
		}
	}
	fprintf(stderr, "fuzz_ops: tenant %s: the scan returned an event the model does not hold "
		"(or holds once, or outside the range): id [%.*s] time %lld\n", s->tenant,
		(int)e->event_id.len, e->event_id.ptr, (long long)e->time_us);
	abort();
}

/* For scan_holds: marks the one wanted event when seen; others pass. */
static int scan_one(void *ctx, const tally_event *e)
{
	scanned *s = ctx;
	if (fevent_equal(&s->want->events[0], e))
		s->seen[0] = 1;
	return 0;
}

/* tally_scan of tenant t over [from, to): exactly its events there. */
static void check_scan_range(tally_store *s, const model *m, int t, int64_t from, int64_t to)
{
	const tenant_model *tm = &m->tenant[t];
	scanned sc = {tm, calloc(tm->count + 1, 1), tenant_names[t], INT64_MIN};
	if (!sc.seen)
		abort();
	/* Events outside the range count as seen: the scan must not give them. */
	for (size_t i = 0; i < tm->count; i++)
		sc.seen[i] = tm->events[i].time_us < from || tm->events[i].time_us >= to;
	int rc = tally_scan(s, tenant_names[t], from, to, scan_event, &sc);
	if (rc) {
		fprintf(stderr, "fuzz_ops: tally_scan of %s: %s\n", tenant_names[t], tally_strerror(rc));
		abort();
	}
	for (size_t i = 0; i < tm->count; i++) {
		if (!sc.seen[i]) {
			fprintf(stderr, "fuzz_ops: tenant %s: an acknowledged event in [%lld, %lld) is "
				"missing from the scan\n", tenant_names[t], (long long)from, (long long)to);
			fevent_print("missing", &tm->events[i]);
			abort();
		}
	}
	free(sc.seen);
}

/* tally_scan of every tenant: exactly its events. */
static void check_scan(tally_store *s, const model *m)
{
	for (int t = 0; t < TENANTS; t++)
		check_scan_range(s, m, t, INT64_MIN, INT64_MAX);
}

/* A row of the brute-force aggregation. */
typedef struct agg_row {
	int64_t bucket_start, bucket_end;
	const fevent *key; /* an event of the group: its grouped dimensions */
	uint64_t count, tokens_in, tokens_out, cost, duration_sum; /* modulo 2^64 */
	__int128 exact_tokens_in, exact_tokens_out, exact_cost, exact_duration_sum; /* not */
	uint32_t duration_min, duration_max;
	uint64_t status_count[TALLY_STATUS_COUNT];
	uint32_t *durations; /* count of them, for the median */
	const text **users;  /* distinct non-empty users */
	size_t user_count;
} agg_row;

static tally_str dim_value(const fevent *f, int dim)
{
	switch (dim) {
	case TALLY_DIM_PROJECT:
		return str_of(&f->project);
	case TALLY_DIM_AGENT:
		return str_of(&f->agent);
	case TALLY_DIM_MODEL:
		return str_of(&f->model);
	case TALLY_DIM_TYPE:
		return str_of(&f->type);
	default: {
		const char *name = tally_status_name((int)f->status);
		return (tally_str){name, (uint32_t)strlen(name)};
	}
	}
}

static int str_same(tally_str a, tally_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static int same_group(const fevent *a, const fevent *b, uint32_t group_by)
{
	for (int d = 0; d < TALLY_DIM_COUNT; d++)
		if ((group_by >> d & 1) && !str_same(dim_value(a, d), dim_value(b, d)))
			return 0;
	return 1;
}

static int compare_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

static void agg_add(agg_row *w, const fevent *f)
{
	if (!w->count || f->duration_ms < w->duration_min)
		w->duration_min = f->duration_ms;
	if (f->duration_ms > w->duration_max)
		w->duration_max = f->duration_ms;
	w->durations[w->count] = f->duration_ms;
	w->count++;
	w->tokens_in += f->tokens_in;
	w->tokens_out += f->tokens_out;
	w->cost += (uint64_t)f->cost_micros;
	w->duration_sum += f->duration_ms;
	w->exact_tokens_in += f->tokens_in;
	w->exact_tokens_out += f->tokens_out;
	w->exact_cost += f->cost_micros;
	w->exact_duration_sum += f->duration_ms;
	w->status_count[f->status]++;
	if (!f->user.len)
		return;
	for (size_t u = 0; u < w->user_count; u++)
		if (w->users[u]->len == f->user.len && !memcmp(w->users[u]->bytes, f->user.bytes, f->user.len))
			return;
	w->users[w->user_count++] = &f->user;
}

static void row_mismatch(const char *tenant, const tally_query *q, const tally_row *got,
			 const agg_row *want, const char *what)
{
	fprintf(stderr, "fuzz_ops: tenant %s: query [%lld, %lld) bucket %d zone %s group_by %#x "
		"filters %u order %d/%d%s limit %u: %s\n", tenant, (long long)q->from_us,
		(long long)q->to_us, q->bucket, q->time_zone ? q->time_zone : "UTC", q->group_by,
		q->filter_count, q->order_by_agg, q->order_agg, q->descending ? " desc" : "", q->limit,
		what);
	if (got)
		fprintf(stderr, "  row   bucket [%lld, %lld) count %llu tokens %llu/%llu cost %lld "
			"duration %llu [%u, %u] users %llu median %f\n", (long long)got->bucket_start_us,
			(long long)got->bucket_end_us, (unsigned long long)got->count,
			(unsigned long long)got->tokens_in, (unsigned long long)got->tokens_out,
			(long long)got->cost_micros, (unsigned long long)got->duration_ms_sum,
			got->duration_ms_min, got->duration_ms_max,
			(unsigned long long)got->distinct_users, got->quantile_ms[0]);
	if (want)
		fprintf(stderr, "  model bucket [%lld, %lld) count %llu tokens %llu/%llu cost %lld "
			"duration %llu [%u, %u] users %zu\n", (long long)want->bucket_start,
			(long long)want->bucket_end, (unsigned long long)want->count,
			(unsigned long long)want->tokens_in, (unsigned long long)want->tokens_out,
			(long long)want->cost, (unsigned long long)want->duration_sum,
			want->duration_min, want->duration_max, want->user_count);
	abort();
}

/* The filter values a query may ask for: each pool's values, empty, and
 * one no event has. */
static tally_str filter_value(int dim, uint8_t b)
{
	static const char *const *const pools[TALLY_DIM_COUNT] = {projects, agents, models, types};
	if (b % 5 == 3)
		return (tally_str){"", 0};
	if (b % 5 == 4)
		return (tally_str){"none-such", 9};
	const char *v = dim == TALLY_DIM_STATUS ? tally_status_name((int)(b % 5 % TALLY_STATUS_COUNT))
						: pools[dim][b % 5];
	return (tally_str){v, (uint32_t)strlen(v)};
}

static int passes(const fevent *f, const tally_query *q)
{
	for (uint32_t k = 0; k < q->filter_count; k++) {
		int in = 0;
		for (uint32_t v = 0; v < q->filters[k].value_count; v++)
			in |= str_same(dim_value(f, q->filters[k].dim), q->filters[k].values[v]);
		if (!in)
			return 0;
	}
	return 1;
}

/* The aggregates a query may order by (all but a quantile, whose value is
 * the sketch's, not the model's exact one). */
static const int order_aggs[] = {TALLY_AGG_COUNT,        TALLY_AGG_TOKENS_IN,    TALLY_AGG_COST,
				 TALLY_AGG_DURATION_MAX, TALLY_AGG_ERRORS,       TALLY_AGG_DISTINCT_USERS,
				 TALLY_AGG_TOKENS_OUT,   TALLY_AGG_TOKENS,       TALLY_AGG_DURATION_SUM,
				 TALLY_AGG_DURATION_MIN};

/* A sum's exact value from an answer (tally.h): its field, read as a
 * uint64 (or an int64 when is_signed), plus wraps times 2^64. */
static __int128 exact_sum(int64_t field, int is_signed, int64_t wraps)
{
	__int128 v = is_signed ? (__int128)field : (__int128)(uint64_t)field;
	return v + (__int128)wraps * ((__int128)1 << 64);
}

/* A row's value of aggregate agg, as the engine compares it: sums by their
 * exact values, past 64 bits (tally_wraps). */
static __int128 agg_value(const agg_row *a, int agg)
{
	switch (agg) {
	case TALLY_AGG_COUNT:
		return a->count;
	case TALLY_AGG_TOKENS_IN:
		return a->exact_tokens_in;
	case TALLY_AGG_TOKENS_OUT:
		return a->exact_tokens_out;
	case TALLY_AGG_TOKENS:
		return a->exact_tokens_in + a->exact_tokens_out;
	case TALLY_AGG_COST:
		return a->exact_cost;
	case TALLY_AGG_DURATION_SUM:
		return a->exact_duration_sum;
	case TALLY_AGG_DURATION_MIN:
		return a->duration_min;
	case TALLY_AGG_DURATION_MAX:
		return a->duration_max;
	case TALLY_AGG_ERRORS:
		return a->count - a->status_count[TALLY_STATUS_OK];
	default:
		return a->user_count;
	}
}

/* -1, 0, 1 as a's ordering aggregate is below, equal to or above b's. */
static int agg_order(const agg_row *a, const agg_row *b, int agg)
{
	__int128 x = agg_value(a, agg), y = agg_value(b, agg);
	return (x > y) - (x < y);
}

/* A row's value of dimension d: its group's, or empty when the query does
 * not group by d. */
static tally_str row_value(const agg_row *a, const tally_query *q, int d)
{
	return (q->group_by >> d & 1) ? dim_value(a->key, d) : (tally_str){"", 0};
}

/* Bytewise, a prefix first. */
static int str_order(tally_str a, tally_str b)
{
	uint32_t n = a.len < b.len ? a.len : b.len;
	int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
	if (c)
		return c < 0 ? -1 : 1;
	return (a.len > b.len) - (a.len < b.len);
}

/* The answer's order (docs/queries.md): by the ordering aggregate when
 * there is one (descending if asked), then by bucket, then by the group's
 * values in dimension order. Distinct rows never tie. */
static int row_order(const void *x, const void *y, void *ctx)
{
	const agg_row *a = x, *b = y;
	const tally_query *q = ctx;
	if (q->order_by_agg) {
		int c = agg_order(a, b, q->order_agg);
		if (c)
			return q->descending ? -c : c;
	}
	if (a->bucket_start != b->bucket_start)
		return a->bucket_start < b->bucket_start ? -1 : 1;
	for (int d = 0; d < TALLY_DIM_COUNT; d++) {
		int c = str_order(row_value(a, q, d), row_value(b, q, d));
		if (c)
			return c;
	}
	return 0;
}

/* The query's range, chosen by the input inside [span_from, span_to) or
 * on stored events' times or near transitions: whole units of `align`
 * (when not 0), any microseconds, a stored event's time or a microsecond
 * past it (or the first edge up to a minute before one, so that an event
 * on a minute's or an hour's first microsecond falls between a raw edge
 * and pages), or times near transitions. At most max_len long. */
static void pick_range(reader *r, const tenant_model *tm, const zone_model *zone, int64_t span_from,
		       int64_t span_to, int64_t align, int64_t max_len, tally_query *q)
{
	uint8_t how = next(r);
	if (how < 64 && align) {
		uint64_t slots = (uint64_t)((span_to - span_from) / align);
		q->from_us = span_from + (int64_t)(next_u64(r, 2) % slots) * align;
		q->to_us = q->from_us + (1 + (int64_t)(next_u64(r, 2) % slots)) * align;
		if (q->to_us > span_to)
			q->to_us = span_to;
	} else if (how >= 128 && how < 192 && tm->count) {
		int64_t before = (how & 4) ? (int64_t)(next(r) % 60) * TALLY_US_PER_SECOND : 0;
		int64_t a = tm->events[next(r) % tm->count].time_us + (how & 1) - before;
		int64_t b = tm->events[next(r) % tm->count].time_us + (how >> 1 & 1);
		q->from_us = a < b ? a : b;
		q->to_us = a < b ? b : a + 1;
	} else if (how >= 192 && transition_count) {
		/* Near the query zone's own transitions, or any zone's. */
		const int64_t *at = zone->count && (how & 2) ? zone->at : transitions;
		size_t n = zone->count && (how & 2) ? zone->count : transition_count;
		int64_t a = near(at, n, next_u64(r, 3));
		int64_t b = (how & 1) ? near(at, n, next_u64(r, 3)) : a + (int64_t)next_u64(r, 3) * 997;
		q->from_us = a < b ? a : b;
		q->to_us = a < b ? b : a + 1;
	} else {
		q->from_us = span_from + (int64_t)(next_u64(r, 4) * 1000003 % (uint64_t)(span_to - span_from));
		q->to_us = q->from_us + 1 + (int64_t)(next_u64(r, 4) * 999983 %
						      (uint64_t)(span_to - q->from_us));
	}
	if (q->to_us - q->from_us > max_len)
		q->to_us = q->from_us + max_len;
}

/* ---- listings ------------------------------------------------------------ */

/* A listing in progress: its request and where its last page ended. It
 * lives across operations, so its next page is read after whatever the
 * program did since (docs/queries.md: a page continues exactly after the
 * cursor whatever was ingested, flushed or compacted in between). */
typedef struct listing {
	bool open;
	int64_t from_us, to_us;
	uint32_t filter_count;
	tally_filter filters[2];
	tally_str values[2][3]; /* static strings (filter_value) */
	tally_str user;
	uint32_t limit;
	char cursor[TALLY_CURSOR_SIZE];
	bool after; /* a page was read: only events after (time, id) follow */
	int64_t time_us;
	text id;
} listing;

static listing listings[TENANTS];

typedef struct page {
	fevent events[8];
	size_t count;
	bool overflow; /* more events than the limit came */
} page;

static void text_of(text *t, tally_str s)
{
	text_set(t, s.ptr, s.len);
}

static int page_event(void *ctx, const tally_event *e)
{
	page *p = ctx;
	if (p->count == sizeof(p->events) / sizeof(p->events[0])) {
		p->overflow = true;
		return 0;
	}
	fevent *f = &p->events[p->count++];
	memset(f, 0, sizeof(*f));
	text_of(&f->id, e->event_id);
	text_of(&f->type, e->type);
	text_of(&f->project, e->project);
	text_of(&f->agent, e->agent);
	text_of(&f->model, e->model);
	text_of(&f->user, e->user);
	f->time_us = e->time_us;
	f->status = e->status;
	f->duration_ms = e->duration_ms;
	f->tokens_in = e->tokens_in;
	f->tokens_out = e->tokens_out;
	f->cost_micros = e->cost_micros;
	return 0;
}

/* (time, id bytewise): the listing's order. */
static int list_order(const fevent *a, int64_t time_us, const text *id)
{
	if (a->time_us != time_us)
		return a->time_us < time_us ? -1 : 1;
	return str_order(str_of(&a->id), str_of(id));
}

static int list_compare(const void *x, const void *y)
{
	const fevent *a = *(const fevent *const *)x, *b = *(const fevent *const *)y;
	return list_order(a, b->time_us, &b->id);
}

static bool listed(const fevent *f, const listing *l)
{
	if (f->time_us < l->from_us || f->time_us >= l->to_us)
		return false;
	if (l->after && list_order(f, l->time_us, &l->id) <= 0)
		return false;
	if (l->user.len && !str_same(str_of(&f->user), l->user))
		return false;
	tally_query q = {.filters = l->filters, .filter_count = l->filter_count};
	return passes(f, &q);
}

/*
 * The next page of tenant t's listing, against the model: the events
 * that match, after the last page's last event, in (time, id) order, the
 * first `limit` of them, every field; a cursor exactly when more match.
 * A listing with no page open starts one with the query's range and
 * filters, a user filter (u1) when the query groups by model, and a limit
 * of 1 to 4 by its grouping.
 */
static void check_listing(tally_store *s, const model *m, int t, const tally_query *q)
{
	listing *l = &listings[t];
	if (!l->open) {
		*l = (listing){.open = true, .from_us = q->from_us, .to_us = q->to_us,
			       .filter_count = q->filter_count, .limit = 1 + q->group_by % 4};
		for (uint32_t k = 0; k < q->filter_count; k++) {
			l->filters[k] = q->filters[k];
			for (uint32_t v = 0; v < q->filters[k].value_count; v++)
				l->values[k][v] = q->filters[k].values[v];
			l->filters[k].values = l->values[k];
		}
		if (q->group_by >> TALLY_DIM_MODEL & 1)
			l->user = (tally_str){user_values[0], (uint32_t)strlen(user_values[0])};
	}
	const tenant_model *tm = &m->tenant[t];
	const fevent **want = malloc((tm->count + 1) * sizeof(*want));
	if (!want)
		abort();
	size_t n = 0;
	for (size_t i = 0; i < tm->count; i++)
		if (listed(&tm->events[i], l))
			want[n++] = &tm->events[i];
	qsort(want, n, sizeof(*want), list_compare);

	tally_list_request req = {.from_us = l->from_us, .to_us = l->to_us, .filters = l->filters,
				  .filter_count = l->filter_count, .user = l->user,
				  .cursor = l->cursor, .limit = l->limit};
	page got = {.count = 0};
	char next_cursor[TALLY_CURSOR_SIZE] = "";
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_list_events(s, tenant_names[t], &req, page_event, &got, next_cursor, errmsg);
	if (rc) {
		fprintf(stderr, "fuzz_ops: listing of %s refused: %s: %s\n", tenant_names[t],
			tally_strerror(rc), errmsg);
		abort();
	}
	size_t want_count = n < l->limit ? n : l->limit;
	bool want_more = n > l->limit;
	bool bad = got.overflow || got.count != want_count || (next_cursor[0] != 0) != want_more;
	for (size_t i = 0; i < got.count && !bad; i++) {
		tally_event e = view(&got.events[i]);
		bad = !fevent_equal(want[i], &e);
	}
	if (bad) {
		fprintf(stderr, "fuzz_ops: tenant %s: listing [%lld, %lld) filters %u user [%.*s] limit %u "
			"cursor [%s]: %zu events%s and cursor [%s], the model has %zu (more: %d)\n",
			tenant_names[t], (long long)l->from_us, (long long)l->to_us, l->filter_count,
			(int)l->user.len, l->user.ptr ? l->user.ptr : "", l->limit, l->cursor, got.count,
			got.overflow ? " (over the limit)" : "", next_cursor, want_count, want_more);
		for (size_t i = 0; i < got.count; i++)
			fevent_print("listed", &got.events[i]);
		for (size_t i = 0; i < want_count; i++)
			fevent_print("model ", want[i]);
		abort();
	}
	if (want_more) {
		memcpy(l->cursor, next_cursor, sizeof(l->cursor));
		l->after = true;
		l->time_us = want[want_count - 1]->time_us;
		l->id = want[want_count - 1]->id;
	} else {
		l->open = false;
	}
	free(want);
}

/*
 * Query q again in pages (docs/queries.md, "Windows"), when it is in one
 * bucket, grouped, in the default order: up to four pages, the first
 * after one of the model's rows (or none), with a limit of 1 or 2 and the
 * store's cells limit lowered to limit + 1 or 2 (a query's groups here are
 * a few), so that a window narrows whenever more groups follow the cursor. Each page must be the
 * model's next rows (group values, count, tokens, cost: check_query checks
 * every aggregate) and truncated exactly when more follow. A window that
 * has not narrowed enough after its attempts is TALLY_E_LIMIT (each keeps
 * about limit / cells limit of the groups it met); it ends the pages. Nothing is read from the input: the pages follow from `seed`.
 */
static void check_pages(tally_store *s, const char *tenant, tally_query q, const agg_row *rows,
			size_t row_count, uint8_t seed)
{
	if (q.order_by_agg || q.bucket != TALLY_BUCKET_NONE || !q.group_by || row_count < 2)
		return;
	q.limit = 1 + seed % 2;
	size_t at = seed / 2 % row_count;
	s->query_cells_max = q.limit + 1 + seed / 128;
	for (int page = 0; page < 4 && at < row_count; page++) {
		q.after = at > 0;
		for (int d = 0; d < TALLY_DIM_COUNT; d++)
			q.after_group[d] = at ? row_value(&rows[at - 1], &q, d) : (tally_str){NULL, 0};
		tally_result *res = NULL;
		char errmsg[TALLY_ERRMSG_SIZE] = "";
		int rc = tally_query_run(s, tenant, &q, &res, errmsg);
		if (rc == TALLY_E_LIMIT && strstr(errmsg, "rows before its limit"))
			break;
		if (rc) {
			fprintf(stderr, "fuzz_ops: page after row %zu of %zu of %s refused: %s: %s\n", at,
				row_count, tenant, tally_strerror(rc), errmsg);
			abort();
		}
		size_t want = row_count - at < q.limit ? row_count - at : q.limit;
		if (res->row_count != want || res->truncated != (at + want < row_count)) {
			fprintf(stderr, "fuzz_ops: page after row %zu: %zu rows (truncated %d), the model "
				"has %zu of %zu (cells limit %u)\n", at, res->row_count, res->truncated, want,
				row_count, s->query_cells_max);
			row_mismatch(tenant, &q, NULL, NULL, "page row count");
		}
		for (size_t i = 0; i < want; i++) {
			const tally_row *g = &res->rows[i];
			const agg_row *a = &rows[at + i];
			for (int d = 0; d < TALLY_DIM_COUNT; d++)
				if (!str_same(row_value(a, &q, d), g->group[d]))
					row_mismatch(tenant, &q, g, a, "page: group differs from the model's");
			if (g->count != a->count || g->tokens_in != a->tokens_in ||
			    (uint64_t)g->cost_micros != a->cost)
				row_mismatch(tenant, &q, g, a, "page: aggregates differ from the model's");
		}
		tally_result_free(res);
		at += want;
	}
	s->query_cells_max = TALLY_QUERY_CELLS_MAX;
}

/* One query of tenant t, chosen by the input, against the model. */
static void check_query(tally_store *s, const model *m, int t, reader *r)
{
	static const int buckets[8] = {TALLY_BUCKET_NONE, TALLY_BUCKET_NONE, TALLY_BUCKET_HOUR,
				       TALLY_BUCKET_DAY, TALLY_BUCKET_MINUTE, TALLY_BUCKET_MONTH,
				       TALLY_BUCKET_HOUR, TALLY_BUCKET_DAY};
	uint8_t shape = next(r);
	const zone_model *zone = &zones[shape / 8 % ZONES];
	tally_query q = {.bucket = buckets[shape % 8], .time_zone = zone->name,
			 .group_by = next(r) % (1u << TALLY_DIM_COUNT),
			 .quantiles = {0.5, 0, 0.9, 1}, .quantile_count = 4, .distinct_users = true};
	int64_t span_from = zone_floor(m->start - HORIZON_US - (OLD_DAYS_MAX + 3) * TALLY_US_PER_DAY,
				     TALLY_US_PER_DAY);
	int64_t span_to = zone_floor(m->now, TALLY_US_PER_DAY) + 2 * TALLY_US_PER_DAY;
	const tenant_model *tm = &m->tenant[t];
	/* Up to two filters of up to three values each; a top-N order. */
	tally_filter filters[2];
	tally_str values[2][3];
	uint8_t extra = next(r);
	q.filter_count = extra % 3;
	for (uint32_t k = 0; k < q.filter_count; k++) {
		uint8_t b = next(r);
		int dim = k ? (filters[0].dim + 1 + b % (TALLY_DIM_COUNT - 1)) % TALLY_DIM_COUNT
			    : b % TALLY_DIM_COUNT; /* two filters: two dimensions */
		filters[k] = (tally_filter){.dim = dim, .values = values[k],
					    .value_count = 1 + b / TALLY_DIM_COUNT % 3};
		for (uint32_t v = 0; v < filters[k].value_count; v++)
			values[k][v] = filter_value(filters[k].dim, next(r));
	}
	q.filters = filters;
	if (extra >= 128) {
		q.order_by_agg = true;
		q.order_agg = order_aggs[extra / 3 % (sizeof(order_aggs) / sizeof(order_aggs[0]))];
		q.descending = extra & 8;
		q.limit = 1 + next(r) % 6;
	}
	/* Minute buckets over at most 3 days, hours over at most 30 (4,320 and
	 * 720 buckets: the planner's time grows with them, and a fuzzer wants
	 * many programs a second). */
	int64_t unit = zone_unit_us(q.bucket);
	int64_t max_len = q.bucket == TALLY_BUCKET_MINUTE ? 3 * TALLY_US_PER_DAY
			  : q.bucket == TALLY_BUCKET_HOUR ? 30 * TALLY_US_PER_DAY
							  : TALLY_QUERY_RANGE_MAX_US;
	int64_t align = q.bucket == TALLY_BUCKET_NONE ? 0 : unit ? unit : TALLY_US_PER_DAY;
	pick_range(r, tm, zone, span_from, span_to, align, max_len, &q);

	agg_row *rows = calloc(tm->count + 1, sizeof(*rows));
	uint32_t *durations = malloc((tm->count + 1) * sizeof(*durations));
	const text **users = malloc((tm->count + 1) * sizeof(*users));
	if (!rows || !durations || !users)
		abort();
	size_t row_count = 0;
	/* Rows carve their durations and users out of the two arrays in order
	 * of the events' first appearance: give each row room for all events
	 * of its group by counting first. */
	size_t *fill = calloc(tm->count + 1, sizeof(*fill));
	size_t *row_of = calloc(tm->count + 1, sizeof(*row_of));
	if (!fill || !row_of)
		abort();
	for (size_t i = 0; i < tm->count; i++) {
		const fevent *f = &tm->events[i];
		row_of[i] = SIZE_MAX;
		if (f->time_us < q.from_us || f->time_us >= q.to_us || !passes(f, &q))
			continue;
		int64_t start = q.bucket == TALLY_BUCKET_NONE ? q.from_us
							       : zone_bucket_start(zone, q.bucket, f->time_us);
		size_t w = 0;
		while (w < row_count &&
		       !(rows[w].bucket_start == start && same_group(rows[w].key, f, q.group_by)))
			w++;
		if (w == row_count)
			rows[row_count++] = (agg_row){
				.bucket_start = start, .key = f,
				.bucket_end = q.bucket == TALLY_BUCKET_NONE
						      ? q.to_us
						      : zone_bucket_end(zone, q.bucket, f->time_us)};
		row_of[i] = w;
		fill[w]++;
	}
	size_t at = 0;
	for (size_t w = 0; w < row_count; w++) {
		rows[w].durations = durations + at;
		rows[w].users = users + at;
		at += fill[w];
	}
	for (size_t i = 0; i < tm->count; i++)
		if (row_of[i] != SIZE_MAX)
			agg_add(&rows[row_of[i]], &tm->events[i]);
	free(fill);
	free(row_of);
	qsort_r(rows, row_count, sizeof(*rows), row_order, &q);

	tally_result *res = NULL;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_query_run(s, tenant_names[t], &q, &res, errmsg);
	if (rc) {
		fprintf(stderr, "fuzz_ops: query of %s refused: %s: %s\n", tenant_names[t], tally_strerror(rc),
			errmsg);
		abort();
	}
	/* The answer is the model's rows in the model's order, the first
	 * `limit` of them. */
	size_t want_rows = q.limit && row_count > q.limit ? q.limit : row_count;
	if (res->row_count != want_rows || res->truncated != (want_rows < row_count)) {
		fprintf(stderr, "fuzz_ops: %zu rows (truncated %d), the model has %zu (limit %u)\n",
			res->row_count, res->truncated, row_count, q.limit);
		row_mismatch(tenant_names[t], &q, NULL, NULL, "row count");
	}
	for (size_t i = 0; i < res->row_count; i++) {
		const tally_row *g = &res->rows[i];
		agg_row *a = &rows[i];
		if (g->bucket_start_us != a->bucket_start || g->bucket_end_us != a->bucket_end)
			row_mismatch(tenant_names[t], &q, g, a, "bucket differs from the model's");
		for (int d = 0; d < TALLY_DIM_COUNT; d++)
			if (!str_same(row_value(a, &q, d), g->group[d]))
				row_mismatch(tenant_names[t], &q, g, a, "group differs from the model's");
		if (g->count != a->count || g->tokens_in != a->tokens_in ||
		    g->tokens_out != a->tokens_out || (uint64_t)g->cost_micros != a->cost ||
		    g->duration_ms_sum != a->duration_sum || g->duration_ms_min != a->duration_min ||
		    g->duration_ms_max != a->duration_max || g->distinct_users != a->user_count)
			row_mismatch(tenant_names[t], &q, g, a, "aggregates differ from the model's");
		if (exact_sum((int64_t)g->tokens_in, 0, g->wraps.tokens_in) != a->exact_tokens_in ||
		    exact_sum((int64_t)g->tokens_out, 0, g->wraps.tokens_out) != a->exact_tokens_out ||
		    exact_sum(g->cost_micros, 1, g->wraps.cost_micros) != a->exact_cost ||
		    exact_sum((int64_t)g->duration_ms_sum, 0, g->wraps.duration_ms_sum) !=
			    a->exact_duration_sum)
			row_mismatch(tenant_names[t], &q, g, a, "sums past 64 bits differ from the model's");
		for (int k = 0; k < TALLY_STATUS_COUNT; k++)
			if (g->status_count[k] != a->status_count[k])
				row_mismatch(tenant_names[t], &q, g, a, "count by status differs");
		qsort(a->durations, a->count, sizeof(*a->durations), compare_u32);
		for (uint32_t k = 0; k < q.quantile_count; k++) {
			/* Within 1% of the value at rank floor(q * (count - 1)). */
			double exact = a->durations[(size_t)(q.quantiles[k] * (double)(a->count - 1))];
			double got = g->quantile_ms[k];
			if (got < exact * 0.99 - 1e-9 || got > exact * 1.01 + 1e-9) {
				fprintf(stderr, "fuzz_ops: quantile %.2f: %f, exact %f\n", q.quantiles[k], got,
					exact);
				row_mismatch(tenant_names[t], &q, g, a, "quantile outside 1%");
			}
		}
	}
	tally_result_free(res);
	check_pages(s, tenant_names[t], q, rows, row_count, shape ^ extra);
	free(rows);
	free(durations);
	free(users);
	check_listing(s, m, t, &q);
	check_scan_range(s, m, t, q.from_us, q.to_us);
}

/* The days changed since `since`, as tally_changed_days lists them. */
typedef struct change_list {
	int rc; /* 0: complete; TALLY_E_NOTFOUND or TALLY_E_LIMIT: ask per day */
	size_t count;
	int32_t days[512];
	uint64_t lsns[512];
} change_list;

static void change_list_read(tally_store *s, uint64_t since, change_list *l)
{
	l->rc = tally_changed_days(s, since, l->days, l->lsns, 512, &l->count);
	if (l->rc && l->rc != TALLY_E_NOTFOUND && l->rc != TALLY_E_LIMIT) {
		fprintf(stderr, "fuzz_ops: tally_changed_days: %s\n", tally_strerror(l->rc));
		abort();
	}
}

/* The change LSN the list gives `day` (0 when it is not listed), or
 * tally_day_change_lsn's when the list is not complete. */
static uint64_t listed_change(tally_store *s, const change_list *l, int32_t day)
{
	uint64_t lsn = 0;
	if (l->rc) {
		if (tally_day_change_lsn(s, day, &lsn))
			abort();
		return lsn;
	}
	for (size_t i = 0; i < l->count; i++)
		if (l->days[i] == day)
			lsn = l->lsns[i];
	return lsn;
}

/*
 * The change map that tells the nightly export which days to send again
 * (tally.h): the watermark never moves back, reopens included; and for
 * the watermark of the last check, of one halfway back and of none (0),
 * every UTC day that stored an event after it was read is listed as
 * changed since it, flushes, compactions and reopens between. (More
 * days may be listed: a day sent again unchanged costs the export time,
 * not money.)
 */
static void check_changes(tally_store *s, model *m)
{
	uint64_t watermark = tally_change_watermark(s);
	uint64_t before = m->checks ? m->watermarks[m->checks - 1] : 0;
	if (watermark < before) {
		fprintf(stderr, "fuzz_ops: the change watermark moved back: %llu after %llu\n",
			(unsigned long long)watermark, (unsigned long long)before);
		abort();
	}
	size_t since[3] = {m->checks, m->checks / 2, 0};
	change_list *list = malloc(sizeof(*list));
	if (!list)
		abort();
	for (int k = 0; k < 3; k++) {
		/* Events stored while `checks` was p came after watermark p - 1. */
		size_t p = since[k];
		uint64_t lsn_min = p ? m->watermarks[p - 1] : 0;
		change_list_read(s, lsn_min, list);
		for (int32_t d = 0; d < CHANGE_DAYS; d++) {
			if (m->last_change[d] < 0 || (size_t)m->last_change[d] < p)
				continue;
			uint64_t lsn = listed_change(s, list, (int32_t)(CHANGE_DAY0 + d));
			if (lsn <= lsn_min) {
				fprintf(stderr, "fuzz_ops: day %lld stored events after watermark %llu (check "
					"%zu of %zu), but its change LSN is %llu\n",
					(long long)(CHANGE_DAY0 + d), (unsigned long long)lsn_min, p,
					m->checks, (unsigned long long)lsn);
				abort();
			}
		}
	}
	free(list);
	uint64_t *grown = realloc(m->watermarks, (m->checks + 1) * sizeof(*grown));
	if (!grown)
		abort();
	m->watermarks = grown;
	m->watermarks[m->checks++] = watermark;
}

/* tally_store_stats: every stored event is a memtable row or a segment
 * row, once. */
static void check_stats(tally_store *s, const model *m)
{
	tally_stats st;
	if (tally_store_stats(s, &st))
		abort();
	uint64_t stored = 0;
	for (int t = 0; t < TENANTS; t++)
		stored += m->tenant[t].count;
	if (st.events_memtable + st.segment_rows != stored) {
		fprintf(stderr, "fuzz_ops: stats: %llu memtable rows + %llu segment rows, the model "
			"stores %llu events\n", (unsigned long long)st.events_memtable,
			(unsigned long long)st.segment_rows, (unsigned long long)stored);
		abort();
	}
}

static void check_all(tally_store *s, const model *m, reader *r)
{
	check_scan(s, m);
	for (int t = 0; t < TENANTS; t++)
		check_query(s, m, t, r);
}

/* ---- the operations ------------------------------------------------------ */

/* The next event to send: a resend of one sent before, or a new one. */
static void pick_event(reader *r, model *m, fevent *f)
{
	uint8_t b = next(r);
	if (b % 4 == 0 && m->sent_count) {
		size_t kept = m->sent_count < SENT_KEPT ? m->sent_count : SENT_KEPT;
		*f = m->sent[next(r) % kept];
	} else {
		gen_event(r, m->now, f);
	}
	m->sent[m->sent_count++ % SENT_KEPT] = *f;
}

typedef struct call_batch {
	int tenant;
	bool backfill;
	size_t count;
	fevent events[BATCH_EVENTS_MAX];
	tally_event views[BATCH_EVENTS_MAX];
	tally_ingest_result results[BATCH_EVENTS_MAX];
} call_batch;

static void fill_batch(reader *r, model *m, call_batch *b)
{
	uint8_t who = next(r);
	b->tenant = who % TENANTS;
	b->backfill = who >= 192;
	b->count = 1 + next(r) % BATCH_EVENTS_MAX;
	for (size_t i = 0; i < b->count; i++) {
		pick_event(r, m, &b->events[i]);
		b->views[i] = view(&b->events[i]);
	}
}

/* The model's results for a stored batch, checked against the store's. */
static void expect_batch(model *m, const call_batch *b)
{
	for (size_t i = 0; i < b->count; i++)
		check_result(&b->events[i], b->results[i],
			     model_ingest(m, b->tenant, &b->events[i], b->backfill));
}

/* One batch in one call: tally_ingest, or tally_ingest_backfill. */
static int ingest_batch(tally_store *s, call_batch *b)
{
	return (b->backfill ? tally_ingest_backfill : tally_ingest)(s, tenant_names[b->tenant], b->views,
								     b->count, b->results);
}

static void op_ingest(tally_store *s, reader *r, model *m)
{
	call_batch *b = malloc(sizeof(*b));
	if (!b)
		abort();
	fill_batch(r, m, b);
	int rc = ingest_batch(s, b);
	if (rc) {
		fprintf(stderr, "fuzz_ops: tally_ingest: %s: %s\n", tally_strerror(rc), tally_store_errmsg(s));
		abort();
	}
	expect_batch(m, b);
	free(b);
}

/* Fills the n batches of one call, and the engine's view of them. */
static void fill_call(reader *r, model *m, call_batch *b, tally_batch *batches, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		fill_batch(r, m, &b[k]);
		batches[k] = (tally_batch){.tenant = tenant_names[b[k].tenant], .events = b[k].views,
					   .count = b[k].count, .results = b[k].results,
					   .backfill = b[k].backfill};
	}
}

/* One tally_ingest_submit_many call, waited for: 0 once every batch is
 * acknowledged, else the call's error or the first batch's. */
static int submit_call(tally_store *s, tally_batch *batches, size_t n)
{
	uint64_t lsn = 0;
	int rc = tally_ingest_submit_many(s, batches, n, &lsn);
	if (!rc)
		rc = tally_commit_wait(s, lsn);
	for (size_t k = 0; !rc && k < n; k++)
		rc = batches[k].status;
	return rc;
}

static void op_ingest_many(tally_store *s, reader *r, model *m)
{
	size_t n = 2 + next(r) % (CALL_BATCHES_MAX - 1);
	call_batch *b = malloc(n * sizeof(*b));
	tally_batch batches[CALL_BATCHES_MAX];
	if (!b)
		abort();
	fill_call(r, m, b, batches, n);
	int rc = submit_call(s, batches, n);
	if (rc) {
		fprintf(stderr, "fuzz_ops: a call of %zu batches: %s: %s\n", n, tally_strerror(rc),
			tally_store_errmsg(s));
		abort();
	}
	for (size_t k = 0; k < n; k++)
		expect_batch(m, &b[k]);
	free(b);
}

static char dir[64];
static fault_io *fio;  /* the clock, and the fsync failure of op_ingest_fsync_fails */
static power_io *pio;  /* the store's io, over fio: the power failures of op_fault_during */

/* Opens the store on pio: 0, or an error with errmsg set. */
static int store_try_open(tally_store **s, char *errmsg)
{
	tally_options o;
	tally_options_default(&o);
	o.background = false;
	o.io = power_io_table(pio);
	/* A compaction cuts a tenant of more rows by time into spans, files
	 * of their own (store.c, compaction_cut): the oracle checks them. */
	o.compact_section_rows_max = 16;
	*s = NULL;
	return tally_store_open(dir, &o, s, errmsg);
}

static tally_store *store_open(void)
{
	tally_store *s;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	int rc = store_try_open(&s, errmsg);
	if (rc) {
		fprintf(stderr, "fuzz_ops: open: %s: %s\n", tally_strerror(rc), errmsg);
		abort();
	}
	return s;
}

static void store_close(tally_store *s)
{
	int rc = tally_store_close(s);
	if (rc) {
		fprintf(stderr, "fuzz_ops: close: %s\n", tally_strerror(rc));
		abort();
	}
}

/* Whether tenant t's scan holds an event equal to f. */
static int scan_holds(tally_store *s, int t, const fevent *f)
{
	tenant_model one = {.events = (fevent *)f, .count = 1, .capacity = 1};
	uint8_t seen = 0;
	scanned sc = {&one, &seen, tenant_names[t], INT64_MIN};
	int rc = tally_scan(s, tenant_names[t], f->time_us, f->time_us + 1, scan_one, &sc);
	if (rc) {
		fprintf(stderr, "fuzz_ops: tally_scan of %s: %s\n", tenant_names[t], tally_strerror(rc));
		abort();
	}
	return seen;
}

/* ---- calls that fail ------------------------------------------------------ */

/* A copy of m whose tenants' events can take one more call's; the rest is
 * shared with m (read it only). Free it with model_fork_free. */
static model *model_fork(const model *m)
{
	model *after = malloc(sizeof(*after));
	if (!after)
		abort();
	*after = *m;
	for (int t = 0; t < TENANTS; t++) {
		tenant_model *tm = &after->tenant[t];
		tm->capacity = tm->count + CALL_BATCHES_MAX * BATCH_EVENTS_MAX;
		tm->events = malloc(tm->capacity * sizeof(fevent));
		if (!tm->events)
			abort();
		if (tm->count)
			memcpy(tm->events, m->tenant[t].events, tm->count * sizeof(fevent));
	}
	return after;
}

/* m takes the fork's stored events and changed days: the call stored. */
static void model_adopt(model *m, model *after)
{
	for (int t = 0; t < TENANTS; t++) {
		free(m->tenant[t].events);
		m->tenant[t] = after->tenant[t];
		after->tenant[t].events = NULL;
	}
	memcpy(m->last_change, after->last_change, sizeof(m->last_change));
}

static void model_fork_free(model *after)
{
	for (int t = 0; t < TENANTS; t++)
		free(after->tenant[t].events);
	free(after);
}

/* The events the fork stores beyond m's. */
static size_t fork_stores(const model *m, const model *after)
{
	size_t n = 0;
	for (int t = 0; t < TENANTS; t++)
		n += after->tenant[t].count - m->tenant[t].count;
	return n;
}

/* How many of them the reopened store holds. */
static size_t fork_held(tally_store *s, const model *m, const model *after)
{
	size_t held = 0;
	for (int t = 0; t < TENANTS; t++)
		for (size_t i = m->tenant[t].count; i < after->tenant[t].count; i++)
			held += scan_holds(s, t, &after->tenant[t].events[i]);
	return held;
}

/* After a failed call and a reopen: the events it would have stored are
 * there all (the model takes them) or none. */
static void failed_call_whole_or_absent(tally_store *s, model *m, model *after, const char *what)
{
	size_t stores = fork_stores(m, after), held = fork_held(s, m, after);
	if (held != 0 && held != stores) {
		fprintf(stderr, "fuzz_ops: after %s and a reopen, %zu of the call's %zu events are "
			"stored: a call must be whole or absent\n", what, held, stores);
		abort();
	}
	if (held)
		model_adopt(m, after);
}

/*
 * One batch whose WAL fsync fails (EIO). A batch the model says stores
 * nothing appends no record, so it needs no fsync and succeeds as any
 * other. Otherwise the call must fail, nothing of it acknowledged, and
 * further writes are refused; the store is closed (reporting the error)
 * and reopened, and then holds the events the model would have accepted
 * either all (the record reached the file before the fsync failed, and
 * the replay took it) or none. The model takes them in the first case.
 */
static tally_store *op_ingest_fsync_fails(tally_store *s, reader *r, model *m)
{
	call_batch *b = malloc(sizeof(*b));
	if (!b)
		abort();
	fill_batch(r, m, b);
	/* What the batch would store: the model, forked, told it. */
	model *after = model_fork(m);
	tally_ingest_result want[BATCH_EVENTS_MAX];
	for (size_t i = 0; i < b->count; i++)
		want[i] = model_ingest(after, b->tenant, &b->events[i], b->backfill);
	size_t stores = fork_stores(m, after);
	fault_io_path_filter_set(fio, ".wal");
	fault_io_fsync_fail_nth(fio, 1, EIO);
	int rc = ingest_batch(s, b);
	fault_io_fsync_fail_nth(fio, 0, 0);
	fault_io_path_filter_set(fio, NULL);
	if (!stores) {
		if (rc) {
			fprintf(stderr, "fuzz_ops: a batch that stores nothing failed: %s\n", tally_strerror(rc));
			abort();
		}
		for (size_t i = 0; i < b->count; i++)
			check_result(&b->events[i], b->results[i], want[i]);
	} else {
		if (!rc) {
			fprintf(stderr, "fuzz_ops: a batch whose WAL fsync failed was acknowledged\n");
			abort();
		}
		int refused = tally_ingest(s, tenant_names[b->tenant], b->views, 1, b->results);
		if (refused != TALLY_E_READONLY) {
			fprintf(stderr, "fuzz_ops: after a failed fsync, a write got %s, not %s\n",
				tally_strerror(refused), tally_strerror(TALLY_E_READONLY));
			abort();
		}
		if (tally_store_close(s) == 0) {
			fprintf(stderr, "fuzz_ops: closing after a failed fsync reported no error\n");
			abort();
		}
		s = store_open();
		failed_call_whole_or_absent(s, m, after, "a failed fsync");
	}
	model_fork_free(after);
	free(b);
	return s;
}

/* The two faults of op_fault_during. */
typedef struct fault {
	bool disk_full; /* else a power failure */
	uint64_t arg;   /* power: the change it fails at; disk: the bytes that fit */
	uint64_t faults_before;
} fault;

static uint64_t fault_count(void)
{
	fault_io_counts c;
	fault_io_counts_get(fio, &c);
	return c.fault_count;
}

static void fault_arm(fault *f)
{
	if (f->disk_full) {
		f->faults_before = fault_count();
		fault_io_disk_limit_set(fio, f->arg);
	} else {
		power_io_fail_after(pio, f->arg);
	}
}

static void fault_disarm(const fault *f)
{
	if (f->disk_full)
		fault_io_disk_limit_clear(fio);
	else
		power_io_fail_after(pio, 0);
}

static int fault_happened(const fault *f)
{
	return f->disk_full ? fault_count() > f->faults_before : power_io_failed(pio);
}

/*
 * A fault during one operation: an ingest of one batch or of several (one
 * call), a flush, a compaction, a close, or an open after a clean close
 * (its recovery: the replay of the WAL's unflushed records and the files
 * it writes). The fault is one of:
 *   - the power fails: from the operation's nth file change on (a create,
 *     write, sync, truncate, rename, unlink or directory sync; n from the
 *     input), every change fails with EIO and reaches no disk
 *     (power_io_fail_after); the store is closed, whatever it reports,
 *     and the directory cut back to what was durable (power_io_cut);
 *   - the disk fills: after K more bytes (from the input), writes are
 *     ENOSPC, the one that crosses the limit cut short (fault_io); the
 *     store is closed on the full disk, whatever it reports, and the disk
 *     then has room again. Nothing written is lost.
 * Then the store is reopened. Every acknowledged event must be there once
 * (the checks after every operation), and the events a call that was not
 * acknowledged would have stored all or none: the model takes them in the
 * first case. An operation that ends before the fault must succeed as an
 * ordinary one.
 */
static tally_store *op_fault_during(tally_store *s, reader *r, model *m)
{
	uint8_t arg = next(r), pick = next(r) % 12;
	fault f = {.disk_full = pick >= 6,
		   .arg = pick >= 6 ? (uint64_t)arg * DISK_FULL_STEP_BYTES
				    : 1 + arg % POWER_CHANGES_MAX};
	uint8_t what = pick % 6;
	size_t n = what == 0 ? 1 : what == 1 ? 2 + next(r) % (CALL_BATCHES_MAX - 1) : 0;
	call_batch *b = malloc(CALL_BATCHES_MAX * sizeof(*b));
	tally_batch batches[CALL_BATCHES_MAX];
	tally_ingest_result want[CALL_BATCHES_MAX][BATCH_EVENTS_MAX];
	if (!b)
		abort();
	fill_call(r, m, b, batches, n);
	model *after = model_fork(m);
	for (size_t k = 0; k < n; k++)
		for (size_t i = 0; i < b[k].count; i++)
			want[k][i] = model_ingest(after, b[k].tenant, &b[k].events[i], b[k].backfill);
	if (what == 5)
		store_close(s); /* before the fault: the open is the operation */
	fault_arm(&f);
	int rc = 0;
	const char *op = "";
	switch (what) {
	case 0:
		op = "an ingest";
		rc = ingest_batch(s, b);
		break;
	case 1:
		op = "a call of several batches";
		rc = submit_call(s, batches, n);
		break;
	case 2:
		op = "a flush";
		rc = tally_flush(s);
		break;
	case 3:
		op = "a compaction";
		rc = tally_compact(s);
		break;
	case 4:
		op = "a close";
		rc = tally_store_close(s);
		s = NULL;
		break;
	default: {
		op = "an open";
		char errmsg[TALLY_ERRMSG_SIZE] = "";
		rc = store_try_open(&s, errmsg);
		break;
	}
	}
	int happened = fault_happened(&f);
	const char *what_fault = f.disk_full ? "a full disk" : "a power failure";
	if (rc && !happened) {
		fprintf(stderr, "fuzz_ops: %s failed before %s: %s\n", op, what_fault,
			tally_strerror(rc));
		abort();
	}
	if (!rc && n) { /* acknowledged, before or without the fault */
		for (size_t k = 0; k < n; k++)
			for (size_t i = 0; i < b[k].count; i++)
				check_result(&b[k].events[i], b[k].results[i], want[k][i]);
		model_adopt(m, after);
	}
	if (happened && s) {
		tally_store_close(s); /* it may report the fault */
		s = NULL;
	}
	fault_disarm(&f);
	if (happened && !f.disk_full) {
		int cut = power_io_cut(pio);
		if (cut) {
			fprintf(stderr, "fuzz_ops: the power cut itself failed: %s\n", strerror(-cut));
			abort();
		}
		power_io_destroy(pio);
		if (!(pio = power_io_create(fault_io_table(fio))))
			abort();
	}
	if (!s)
		s = store_open();
	if (rc && n)
		failed_call_whole_or_absent(s, m, after, what_fault);
	model_fork_free(after);
	free(b);
	return s;
}

static void problem(void *ctx, const char *message)
{
	(void)ctx;
	fprintf(stderr, "fuzz_ops: verify: %s\n", message);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!transition_count)
		zones_init(); /* before the first store: no thread runs yet */
	memset(listings, 0, sizeof(listings));
	snprintf(dir, sizeof(dir), "/dev/shm/fuzz-ops-%d", (int)getpid());
	fuzz_remove_tree(dir);
	if (mkdir(dir, 0755))
		return 0;
	if (!fio && !(fio = fault_io_create()))
		abort();
	if (!(pio = power_io_create(fault_io_table(fio))))
		abort();
	model *m = calloc(1, sizeof(*m));
	if (!m)
		abort();
	m->now = m->start = START_US;
	for (int d = 0; d < CHANGE_DAYS; d++)
		m->last_change[d] = -1;
	fault_io_clock_set_us(fio, m->now);
	tally_store *s = store_open();
	reader r = {data, data + size};
	while (r.p < r.end) {
		int rc = 0;
		switch (next(&r) % 16) {
		case 2:
			s = op_fault_during(s, &r, m);
			break;
		case 6:
		case 7:
			op_ingest_many(s, &r, m);
			break;
		case 8:
			rc = tally_flush(s);
			break;
		case 9:
			rc = tally_compact(s);
			break;
		case 10:
			store_close(s);
			s = store_open();
			break;
		case 12:
			s = op_ingest_fsync_fails(s, &r, m);
			break;
		case 11: {
			uint8_t b = next(&r);
			int64_t step = b < 224 ? (int64_t)(1 + b) * 10 * 60 * TALLY_US_PER_SECOND
					       : (int64_t)(b - 223) * TALLY_US_PER_DAY / 4;
			if (m->now + step - m->start > CLOCK_ADVANCE_MAX_US)
				step = m->start + CLOCK_ADVANCE_MAX_US - m->now;
			m->now += step;
			fault_io_clock_advance_us(fio, step);
			/* What the background worker does as days pass: drop
			 * the fingerprints of days the horizon left (only
			 * memory: lookups ignore them already). */
			store_expire_dedup(s);
			break;
		}
		default:
			op_ingest(s, &r, m);
			break;
		}
		if (rc) {
			fprintf(stderr, "fuzz_ops: flush or compaction: %s: %s\n", tally_strerror(rc),
				tally_store_errmsg(s));
			abort();
		}
		check_changes(s, m);
		check_stats(s, m);
		check_all(s, m, &r);
	}
	store_close(s);
	int problems = tally_verify(dir, problem, NULL);
	if (problems != 0) {
		fprintf(stderr, "fuzz_ops: verify found %d problems\n", problems);
		abort();
	}
	model_free(m);
	free(m);
	power_io_destroy(pio);
	pio = NULL;
	fuzz_remove_tree(dir);
	return 0;
}
