/*
 * test_query.c — the query API (tally_query_run, tally_list_events) held to
 * a brute-force oracle.
 *
 * Description: every test keeps its own list of the events the engine
 * reported ACCEPTED (duplicates and conflicts never enter it) and evaluates
 * each query by brute force over that list: filters, buckets, groups, sums,
 * exact quantiles at rank floor(q * (count - 1)), exact distinct users, the
 * documented order, limit and `truncated`. The engine's answer must match
 * exactly, except quantiles (within 1% relative, engine/sketch.h) and
 * distinct users above USET_EXACT_MAX (within 2%).
 *
 * Local buckets come from tz_bucket (engine/tz.h) for named zones and from
 * plain calendar arithmetic for UTC; the test tz_bucket_matches_libc checks
 * tz_bucket itself against glibc's localtime_r over the same weeks, so the
 * oracle does not rest on unchecked code under test.
 *
 * Every store runs on a fault_io with a frozen clock (the engine accepts
 * events in [now - 35 days, now + 5 minutes] by that clock) and no background
 * worker, so the state (memtable, flushed, compacted, replayed from the WAL)
 * is what the test made it.
 *
 * Readings of tally.h this file pins (where the header leaves room):
 *   - bucket_start_us/bucket_end_us are the whole calendar bucket's, not
 *     clipped to [from, to) (only NONE reports from/to);
 *   - the status dimension's group and filter value is its name ("ok"...),
 *     ordered bytewise like the others; ungrouped dimensions are empty;
 *   - with order_by_agg, ties go by bucket then group values ascending, also
 *     when the aggregate is descending; ordered by an estimate (quantile,
 *     distinct users past 8192) only consistency with the returned values
 *     is checked;
 *   - a listing's cursor is a (time, id) position: pages continue after it
 *     whatever was ingested, flushed or compacted in between, and the page
 *     that delivers the last event returns "" ("no more").
 *
 * Seeds: each test prints "test_query seed=N (test)"; SEED=N
 * build/tests/test_query replays it. A mismatch prints the seed, the case
 * number, the query and the first differing row.
 */
#include <criterion/criterion.h>
#include <ftw.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "support/civil.h"
#include "support/fault_io.h"
#include "support/test_dir.h"
#include "tally.h"
#include "memtable.h"
#include "tally_limits.h"
#include "tz.h"

#define SECOND_US TALLY_US_PER_SECOND
#define MINUTE_US (INT64_C(60) * SECOND_US)
#define HOUR_US (INT64_C(60) * MINUTE_US)
#define DAY_US TALLY_US_PER_DAY
/* 2026-11-09T12:34:56.789123Z: the 40 days before it hold the DST changes of
 * Lord Howe (Oct 4, +10:30 -> +11), Paris (Oct 25) and New York (Nov 1), and
 * the October/November month boundary in every zone. */
#define NOW_US (INT64_C(1794227696) * SECOND_US + 789123)
#define HORIZON_PAST_US (INT64_C(35) * DAY_US)
#define HORIZON_FUTURE_US (INT64_C(5) * MINUTE_US)
/* Events are sent at least this far inside the lateness horizon. */
#define MARGIN_US MINUTE_US
#define USER_EXACT_MAX 8192 /* distinct users are exact up to this many */
#define QUANTILE_RELATIVE_ERROR 0.01

/* ---- seeded randomness ------------------------------------------------------ */

static uint64_t rng_state;
static uint64_t test_seed;

static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Uniform enough in [0, n) for tests; 0 when n == 0. */
static uint64_t rng_below(uint64_t n)
{
	return n == 0 ? 0 : rng_next() % n;
}

static int64_t rng_range(int64_t lo, int64_t hi) /* [lo, hi] */
{
	return lo + (int64_t)rng_below((uint64_t)(hi - lo) + 1);
}

static double rng_unit(void) /* [0, 1) */
{
	return (double)(rng_next() >> 11) * 0x1.0p-53;
}

static bool rng_chance(double p)
{
	return rng_unit() < p;
}

static void seed_init(const char *test)
{
	const char *env = getenv("SEED");
	if (env != NULL && *env != '\0') {
		test_seed = strtoull(env, NULL, 0);
	} else {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		test_seed = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
		test_seed ^= (uint64_t)getpid() << 32;
	}
	fprintf(stderr, "test_query seed=%llu (%s)\n", (unsigned long long)test_seed, test);
	rng_state = test_seed;
}

static void *xcalloc(size_t count, size_t size)
{
	void *p = calloc(count != 0 ? count : 1, size != 0 ? size : 1);
	cr_assert_not_null(p, "calloc(%zu, %zu)", count, size);
	return p;
}

static void *xrealloc(void *p, size_t size)
{
	void *q = realloc(p, size != 0 ? size : 1);
	cr_assert_not_null(q, "realloc(%zu)", size);
	return q;
}

/* ---- strings ----------------------------------------------------------------- */

static tally_str str_of(const char *s)
{
	return (tally_str){s, (uint32_t)strlen(s)};
}

/* Bytewise order, a proper prefix first (memcmp semantics on unsigned bytes). */
static int str_cmp(tally_str a, tally_str b)
{
	uint32_t n = a.len < b.len ? a.len : b.len;
	int c = n != 0 ? memcmp(a.ptr, b.ptr, n) : 0;
	if (c != 0)
		return c < 0 ? -1 : 1;
	return (a.len > b.len) - (a.len < b.len);
}

static bool str_eq(tally_str a, tally_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* Prints a string for messages: printable bytes as is, others as \xNN. */
static void str_format(tally_str s, char *buf, size_t size)
{
	size_t at = 0;
	for (uint32_t i = 0; i < s.len && at + 5 < size; i++) {
		unsigned char c = (unsigned char)s.ptr[i];
		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
			buf[at++] = (char)c;
		else
			at += (size_t)snprintf(buf + at, size - at, "\\x%02x", c);
	}
	buf[at < size ? at : size - 1] = '\0';
}

/* ---- calendar arithmetic (UTC), independent of engine/tz ------------------------ */

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return q - ((a % b != 0) && ((a < 0) != (b < 0)));
}

static int64_t utc_us(int64_t y, int mo, int d, int h, int mi)
{
	return days_from_civil(y, mo, d) * DAY_US + h * HOUR_US + mi * MINUTE_US;
}

/* The start of the unit holding `wall_us` (a UTC or local wall time). */
static int64_t unit_floor(enum tz_unit unit, int64_t wall_us)
{
	switch (unit) {
	case TZ_MINUTE:
		return floor_div(wall_us, MINUTE_US) * MINUTE_US;
	case TZ_HOUR:
		return floor_div(wall_us, HOUR_US) * HOUR_US;
	case TZ_DAY:
		return floor_div(wall_us, DAY_US) * DAY_US;
	case TZ_MONTH: {
		int64_t y;
		int m;
		civil_from_days(floor_div(wall_us, DAY_US), &y, &m);
		return days_from_civil(y, m, 1) * DAY_US;
	}
	}
	cr_assert_fail("unit %d", (int)unit);
	return 0;
}

static int64_t unit_next(enum tz_unit unit, int64_t start_us)
{
	switch (unit) {
	case TZ_MINUTE:
		return start_us + MINUTE_US;
	case TZ_HOUR:
		return start_us + HOUR_US;
	case TZ_DAY:
		return start_us + DAY_US;
	case TZ_MONTH: {
		int64_t y;
		int m;
		civil_from_days(floor_div(start_us, DAY_US), &y, &m);
		return m == 12 ? days_from_civil(y + 1, 1, 1) * DAY_US : days_from_civil(y, m + 1, 1) * DAY_US;
	}
	}
	cr_assert_fail("unit %d", (int)unit);
	return 0;
}

static enum tz_unit bucket_unit(int bucket)
{
	switch (bucket) {
	case TALLY_BUCKET_MINUTE:
		return TZ_MINUTE;
	case TALLY_BUCKET_HOUR:
		return TZ_HOUR;
	case TALLY_BUCKET_DAY:
		return TZ_DAY;
	default:
		return TZ_MONTH;
	}
}

/* ---- zones -------------------------------------------------------------------- */

/* The zones queries use; NULL, "" and "UTC" are evaluated with plain UTC
 * arithmetic by the oracle. */
static const char *const ZONES[] = {NULL,
				    "",
				    "UTC",
				    "Europe/Paris",
				    "America/New_York",
				    "Asia/Kolkata",
				    "Asia/Kathmandu",
				    "Australia/Lord_Howe"};
#define ZONE_COUNT (sizeof(ZONES) / sizeof(ZONES[0]))
static tz *zone_cache[ZONE_COUNT];

/* The loaded zone for a query's time_zone, or NULL for UTC arithmetic. */
static const tz *zone_for(const char *name)
{
	if (name == NULL || name[0] == '\0' || strcmp(name, "UTC") == 0)
		return NULL;
	for (size_t i = 0; i < ZONE_COUNT; i++) {
		if (ZONES[i] == NULL || strcmp(ZONES[i], name) != 0)
			continue;
		if (zone_cache[i] == NULL) {
			char err[TALLY_ERRMSG_SIZE] = "";
			int rc = tz_load(name, &zone_cache[i], err);
			cr_assert_eq(rc, 0, "tz_load(%s): %s (%s)", name, tally_strerror(rc), err);
		}
		return zone_cache[i];
	}
	cr_assert_fail("zone %s is not in ZONES", name);
	return NULL;
}

static void zones_free(void)
{
	for (size_t i = 0; i < ZONE_COUNT; i++) {
		tz_free(zone_cache[i]);
		zone_cache[i] = NULL;
	}
}

/* ---- events ------------------------------------------------------------------- */

static const char *const PROJECTS[] = {"web", "web-v2", "api", "Zeta", "\xc3\xa9migr\xc3\xa9", "batch", "w"};
static const char *const AGENTS[] = {"", "planner", "coder", "coder-2", "Reviewer", "\xe2\x98\x83"};
static const char *const MODELS[] = {"gpt-4o",        "gpt-4o-mini", "gpt-4", "claude-3-5-sonnet",
				     "llama-3.1-70b", "\xc3\x9f-model"};
static const char *const TYPES[] = {"llm.call", "tool.call", "agent.run", "embed"};
static const char *const STATUS_NAMES[] = {"ok", "error", "timeout", "cancelled"};
/* Filter values no event ever has. */
static const char *const MISSING_VALUES[] = {"nope", "web-v3", "GPT-4O", "gpt-4o ", "llm", "u1x"};
#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

typedef struct ev {
	char id[TALLY_EVENT_ID_SIZE_MAX + 1];
	char user[24];
	uint8_t id_len;
	uint8_t user_len;
	const char *project, *agent, *model, *type; /* static strings */
	int64_t time_us;
	uint32_t status;
	uint32_t duration_ms;
	uint64_t tokens_in;
	uint64_t tokens_out;
	int64_t cost_micros;
} ev;

static tally_str ev_dim(const ev *e, int dim)
{
	switch (dim) {
	case TALLY_DIM_PROJECT:
		return str_of(e->project);
	case TALLY_DIM_AGENT:
		return str_of(e->agent);
	case TALLY_DIM_MODEL:
		return str_of(e->model);
	case TALLY_DIM_TYPE:
		return str_of(e->type);
	default:
		return str_of(STATUS_NAMES[e->status]);
	}
}

static tally_str ev_id(const ev *e)
{
	return (tally_str){e->id, e->id_len};
}

static tally_str ev_user(const ev *e)
{
	return (tally_str){e->user, e->user_len};
}

static tally_event ev_event(const ev *e)
{
	tally_event out;
	memset(&out, 0, sizeof(out));
	out.event_id = ev_id(e);
	out.time_us = e->time_us;
	out.type = str_of(e->type);
	out.project = str_of(e->project);
	out.agent = str_of(e->agent);
	out.model = str_of(e->model);
	out.user = ev_user(e);
	out.status = e->status;
	out.duration_ms = e->duration_ms;
	out.tokens_in = e->tokens_in;
	out.tokens_out = e->tokens_out;
	out.cost_micros = e->cost_micros;
	return out;
}

static bool ev_same(const ev *a, const ev *b)
{
	return str_eq(ev_id(a), ev_id(b)) && a->time_us == b->time_us && strcmp(a->project, b->project) == 0 &&
	       strcmp(a->agent, b->agent) == 0 && strcmp(a->model, b->model) == 0 &&
	       strcmp(a->type, b->type) == 0 && str_eq(ev_user(a), ev_user(b)) && a->status == b->status &&
	       a->duration_ms == b->duration_ms && a->tokens_in == b->tokens_in &&
	       a->tokens_out == b->tokens_out && a->cost_micros == b->cost_micros;
}

/* (time, event id bytewise): the listing order. */
static int ev_cmp_time_id(const void *pa, const void *pb)
{
	const ev *a = pa, *b = pb;
	if (a->time_us != b->time_us)
		return a->time_us < b->time_us ? -1 : 1;
	return str_cmp(ev_id(a), ev_id(b));
}

/* ---- tenants: generated events and the accepted list ------------------------------ */

typedef struct tenant {
	const char *name;
	/* The tenant's dictionaries: indices into the master lists. */
	int projects[COUNT_OF(PROJECTS)], project_count;
	int agents[COUNT_OF(AGENTS)], agent_count;
	int models[COUNT_OF(MODELS)], model_count;
	int types[COUNT_OF(TYPES)], type_count;
	double large_user_share;
	double huge_share; /* events whose tokens and cost are near their types' limits */
	ev *gen; /* the original of every generated event */
	size_t gen_count;
	bool *sent; /* generated event sent at least once */
	int32_t *acc_of; /* per generated event: index in acc of its accepted version, or -1 */
	ev *acc;         /* accepted events, in acceptance order */
	int32_t *acc_gen; /* per accepted event: its generated event */
	size_t acc_count, acc_cap;
	ev *sorted; /* acc sorted by (time, id); built by tenant_seal */
	size_t sorted_count;
} tenant;

static void pick_subset(int *out, int *count, size_t master)
{
	*count = 0;
	for (size_t i = 0; i < master; i++)
		if (rng_chance(0.65))
			out[(*count)++] = (int)i;
	if (*count == 0)
		out[(*count)++] = (int)rng_below(master);
}

static void tenant_init(tenant *t, const char *name, double large_user_share)
{
	memset(t, 0, sizeof(*t));
	t->name = name;
	t->large_user_share = large_user_share;
	pick_subset(t->projects, &t->project_count, COUNT_OF(PROJECTS));
	pick_subset(t->agents, &t->agent_count, COUNT_OF(AGENTS));
	pick_subset(t->models, &t->model_count, COUNT_OF(MODELS));
	pick_subset(t->types, &t->type_count, COUNT_OF(TYPES));
}

static void tenant_free(tenant *t)
{
	free(t->gen);
	free(t->sent);
	free(t->acc_of);
	free(t->acc);
	free(t->acc_gen);
	free(t->sorted);
	memset(t, 0, sizeof(*t));
}

static const char ID_CHARS[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_.:";

static void ev_set_id(ev *e, const char *prefix, size_t number)
{
	int n = snprintf(e->id, sizeof(e->id), "%s%06zu", prefix, number);
	size_t suffix = rng_chance(0.05) ? (size_t)(TALLY_EVENT_ID_SIZE_MAX - n) : rng_below(12);
	for (size_t i = 0; i < suffix; i++)
		e->id[n + (int)i] = ID_CHARS[rng_below(sizeof(ID_CHARS) - 1)];
	e->id[(size_t)n + suffix] = '\0';
	e->id_len = (uint8_t)((size_t)n + suffix);
}

static void ev_random_payload(const tenant *t, ev *e)
{
	e->project = PROJECTS[t->projects[rng_below((uint64_t)t->project_count)]];
	e->agent = AGENTS[t->agents[rng_below((uint64_t)t->agent_count)]];
	e->model = MODELS[t->models[rng_below((uint64_t)t->model_count)]];
	e->type = TYPES[t->types[rng_below((uint64_t)t->type_count)]];
	uint64_t s = rng_below(100);
	e->status = s < 75 ? TALLY_STATUS_OK : s < 87 ? TALLY_STATUS_ERROR : s < 95 ? TALLY_STATUS_TIMEOUT : TALLY_STATUS_CANCELLED;
	if (rng_chance(t->large_user_share))
		e->user_len = (uint8_t)snprintf(e->user, sizeof(e->user), "U%07u", (unsigned)rng_below(10000000));
	else if (rng_chance(0.1))
		e->user_len = 0, e->user[0] = '\0'; /* no user */
	else
		e->user_len = (uint8_t)snprintf(e->user, sizeof(e->user), "u%u", (unsigned)rng_below(10));
	/* Durations: skewed towards small values, with zeros and the maximum. */
	uint64_t d = rng_below(100);
	if (d < 5)
		e->duration_ms = 0;
	else if (d < 8)
		e->duration_ms = 1000000;
	else {
		double u = rng_unit();
		e->duration_ms = (uint32_t)pow(10.0, 6.0 * u * u);
	}
	e->tokens_in = rng_chance(0.05) ? 0 : rng_below(100000);
	if (rng_chance(0.01))
		e->tokens_in += UINT64_C(1000000000000);
	e->tokens_out = rng_below(5000);
	e->cost_micros = (int64_t)rng_below(2000000) - 200000;
	if (rng_chance(0.01))
		e->cost_micros = rng_chance(0.5) ? -INT64_C(5000000000) : INT64_C(900000000000);
	if (t->huge_share > 0 && rng_chance(t->huge_share)) { /* sums that wrap */
		e->tokens_in = UINT64_MAX - rng_below(1000);
		if (rng_chance(0.5))
			e->tokens_out = UINT64_MAX - rng_below(1000);
		e->cost_micros = rng_chance(0.5) ? INT64_MAX - (int64_t)rng_below(1000)
						 : INT64_MIN + (int64_t)rng_below(1000);
	}
}

/* Generates `count` events with times in [t_min, t_max], some clustered
 * around `bursts`, some sharing the time of an earlier event. */
static void tenant_generate(tenant *t, size_t count, int64_t t_min, int64_t t_max, const int64_t *bursts,
			    size_t burst_count)
{
	t->gen = xcalloc(count, sizeof(ev));
	t->sent = xcalloc(count, sizeof(bool));
	t->acc_of = xcalloc(count, sizeof(int32_t));
	t->gen_count = count;
	for (size_t i = 0; i < count; i++) {
		ev *e = &t->gen[i];
		t->acc_of[i] = -1;
		ev_set_id(e, "e", i);
		uint64_t r = rng_below(100);
		if (r < 15 && i > 0)
			e->time_us = t->gen[rng_below(i)].time_us; /* a tie */
		else if (r == 17 && burst_count > 0)
			e->time_us = bursts[rng_below(burst_count)]; /* exactly a DST change or month boundary */
		else if (r < 20)
			/* Exactly on a UTC minute, hour or day boundary, or a local one
			 * (Kolkata: half hours; Kathmandu: quarter hours). */
			e->time_us = unit_floor((enum tz_unit)rng_below(3), rng_range(t_min, t_max)) +
				     (r == 18 ? 30 * MINUTE_US : r == 19 ? 15 * MINUTE_US : 0);
		else if (r < 45 && burst_count > 0)
			e->time_us = bursts[rng_below(burst_count)] + rng_range(-2 * HOUR_US, 2 * HOUR_US);
		else
			e->time_us = rng_range(t_min, t_max);
		if (e->time_us < t_min)
			e->time_us = t_min;
		if (e->time_us > t_max)
			e->time_us = t_max;
		ev_random_payload(t, e);
	}
}

static void tenant_accept(tenant *t, const ev *e, int32_t gen_index)
{
	if (t->acc_count == t->acc_cap) {
		t->acc_cap = t->acc_cap ? 2 * t->acc_cap : 1024;
		t->acc = xrealloc(t->acc, t->acc_cap * sizeof(ev));
		t->acc_gen = xrealloc(t->acc_gen, t->acc_cap * sizeof(int32_t));
	}
	t->acc[t->acc_count] = *e;
	t->acc_gen[t->acc_count] = gen_index;
	t->acc_of[gen_index] = (int32_t)t->acc_count;
	t->acc_count++;
}

/* Builds the (time, id) sorted copy of the accepted events the oracle reads. */
static void tenant_seal(tenant *t)
{
	free(t->sorted);
	t->sorted = xcalloc(t->acc_count, sizeof(ev));
	if (t->acc_count != 0)
		memcpy(t->sorted, t->acc, t->acc_count * sizeof(ev));
	t->sorted_count = t->acc_count;
	qsort(t->sorted, t->sorted_count, sizeof(ev), ev_cmp_time_id);
}

/* ---- the store under test -------------------------------------------------------- */

typedef struct env {
	test_dir dir;
	fault_io *fio;
	tally_options options;
	tally_store *store;
} env;

static void env_store_open(env *v)
{
	char err[TALLY_ERRMSG_SIZE] = "";
	v->store = NULL;
	int rc = tally_store_open(v->dir.path, &v->options, &v->store, err);
	cr_assert_eq(rc, 0, "open %s: %s (%s)", v->dir.path, tally_strerror(rc), err);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* The data directory of the open env, removed by the suite's fini when a
 * failed assertion ended the test before env_close. */
static char live_dir[sizeof(((test_dir *)0)->path)];

static void live_dir_remove(void)
{
	if (live_dir[0] != '\0')
		nftw(live_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	live_dir[0] = '\0';
}

/* A fresh store with the clock frozen at now_us; retention 0 keeps the
 * default minute-page retention. */
static void env_open(env *v, const char *name, int64_t now_us, int64_t minute_retention_us)
{
	memset(v, 0, sizeof(*v));
	test_dir_make(&v->dir, name);
	memcpy(live_dir, v->dir.path, sizeof(live_dir));
	v->fio = fault_io_create();
	cr_assert_not_null(v->fio);
	fault_io_clock_set_us(v->fio, now_us);
	tally_options_default(&v->options);
	v->options.io = fault_io_table(v->fio);
	v->options.background = false;
	if (minute_retention_us > 0)
		v->options.minute_pages_retention_us = minute_retention_us;
	env_store_open(v);
}

/* Closes without flushing (memtables come back from the WAL) and reopens. */
static void env_reopen(env *v)
{
	int rc = tally_store_close(v->store);
	cr_assert_eq(rc, 0, "close: %s", tally_strerror(rc));
	env_store_open(v);
}

static void env_flush(env *v)
{
	int rc = tally_flush(v->store);
	cr_assert_eq(rc, 0, "flush: %s (%s)", tally_strerror(rc), tally_store_errmsg(v->store));
}

static void env_compact(env *v)
{
	int rc = tally_compact(v->store);
	cr_assert_eq(rc, 0, "compact: %s (%s)", tally_strerror(rc), tally_store_errmsg(v->store));
}

static void env_close(env *v)
{
	if (v->store != NULL)
		cr_expect_eq(tally_store_close(v->store), 0);
	v->store = NULL;
	cr_expect_eq(nftw(v->dir.path, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0, "remove %s", v->dir.path);
	live_dir[0] = '\0';
	fault_io_destroy(v->fio);
	v->fio = NULL;
}

/* ---- ingest with expected per-event results --------------------------------------- */

typedef struct item {
	ev e;
	int32_t gen_index; /* -1: invalid, must be REJECTED with `reason` */
	uint8_t reason;
} item;

typedef struct items {
	item *v;
	size_t count, cap;
} items;

static void items_push(items *list, const ev *e, int32_t gen_index, uint8_t reason)
{
	if (list->count == list->cap) {
		list->cap = list->cap ? 2 * list->cap : 256;
		list->v = xrealloc(list->v, list->cap * sizeof(item));
	}
	list->v[list->count++] = (item){*e, gen_index, reason};
}

static void items_shuffle(items *list)
{
	for (size_t i = list->count; i > 1; i--) {
		size_t j = rng_below(i);
		item tmp = list->v[i - 1];
		list->v[i - 1] = list->v[j];
		list->v[j] = tmp;
	}
}

/*
 * Ingests `list` in batches of at most 1500 and checks every per-event
 * result against the model: the first version of an id is ACCEPTED, the
 * same payload again is DUPLICATE, another payload is CONFLICT (the first
 * stands), invalid events are REJECTED. Accepted versions enter t->acc.
 */
static void ingest_items(env *v, tenant *t, const items *list)
{
	const size_t batch_max = 1500;
	tally_event *events = xcalloc(batch_max, sizeof(tally_event));
	tally_ingest_result *results = xcalloc(batch_max, sizeof(tally_ingest_result));
	for (size_t at = 0; at < list->count; at += batch_max) {
		size_t n = list->count - at < batch_max ? list->count - at : batch_max;
		for (size_t i = 0; i < n; i++)
			events[i] = ev_event(&list->v[at + i].e);
		int rc = tally_ingest(v->store, t->name, events, n, results);
		cr_assert_eq(rc, 0, "seed=%llu ingest %s: %s (%s)", (unsigned long long)test_seed, t->name,
			     tally_strerror(rc), tally_store_errmsg(v->store));
		for (size_t i = 0; i < n; i++) {
			const item *it = &list->v[at + i];
			int expected = TALLY_ACCEPTED;
			if (it->gen_index < 0)
				expected = TALLY_REJECTED;
			else if (t->acc_of[it->gen_index] >= 0)
				expected = ev_same(&t->acc[t->acc_of[it->gen_index]], &it->e) ? TALLY_DUPLICATE : TALLY_CONFLICT;
			cr_assert_eq(results[i].code, expected,
				     "seed=%llu tenant %s event %s (time %" PRId64 "): result %s, expected %s",
				     (unsigned long long)test_seed, t->name, it->e.id, it->e.time_us,
				     tally_result_name(results[i].code), tally_result_name(expected));
			if (expected == TALLY_REJECTED)
				cr_assert_eq(results[i].reason, it->reason, "event %s: reason %d, expected %d", it->e.id,
					     results[i].reason, it->reason);
			if (results[i].code == TALLY_ACCEPTED)
				tenant_accept(t, &it->e, it->gen_index);
		}
	}
	free(events);
	free(results);
}

/* Sends generated events [from, to) of t once each, in a shuffled order. */
static void ingest_range(env *v, tenant *t, size_t from, size_t to)
{
	items list = {0};
	for (size_t g = from; g < to; g++) {
		items_push(&list, &t->gen[g], (int32_t)g, 0);
		t->sent[g] = true;
	}
	items_shuffle(&list);
	ingest_items(v, t, &list);
	free(list.v);
}

/* ---- queries: building, describing ------------------------------------------------ */

static char NX_VALUES[TALLY_FILTER_VALUES_MAX][8]; /* "nx-000".."nx-255": never present */

static void nx_values_init(void)
{
	for (int i = 0; i < TALLY_FILTER_VALUES_MAX; i++)
		snprintf(NX_VALUES[i], sizeof(NX_VALUES[i]), "nx-%03d", i);
}

typedef struct qbuild {
	tally_query q;
	tally_filter filters[TALLY_FILTERS_MAX + 1];
	tally_str values[TALLY_FILTERS_MAX + 1][TALLY_FILTER_VALUES_MAX + 1];
} qbuild;

static const char *const BUCKET_NAMES[] = {"NONE", "MINUTE", "HOUR", "DAY", "MONTH"};
static const char *const AGG_NAMES[] = {"COUNT",        "TOKENS_IN",    "TOKENS_OUT", "TOKENS",
					"COST",         "DURATION_SUM", "DURATION_MIN", "DURATION_MAX",
					"ERRORS",       "QUANTILE",     "DISTINCT_USERS"};

static void query_describe(const char *tenant_name, const tally_query *q, char *buf, size_t size)
{
	size_t at = 0;
#define APPEND(...)                                                                 \
	do {                                                                        \
		if (at < size)                                                      \
			at += (size_t)snprintf(buf + at, size - at, __VA_ARGS__);   \
	} while (0)
	APPEND("tenant=%s from_us=%" PRId64 " to_us=%" PRId64 " (len %" PRId64 " us) bucket=%s tz=%s%s%s group_by=0x%x",
	       tenant_name, q->from_us, q->to_us, q->to_us - q->from_us,
	       q->bucket >= 0 && q->bucket <= 4 ? BUCKET_NAMES[q->bucket] : "?", q->time_zone ? "\"" : "",
	       q->time_zone ? q->time_zone : "NULL", q->time_zone ? "\"" : "", q->group_by);
	for (uint32_t f = 0; f < q->filter_count && f < TALLY_FILTERS_MAX; f++) {
		APPEND(" filter[%u]=dim %d IN (", f, q->filters[f].dim);
		for (uint32_t i = 0; i < q->filters[f].value_count && i < 8; i++) {
			char s[300];
			str_format(q->filters[f].values[i], s, sizeof(s));
			APPEND("%s\"%s\"", i ? "," : "", s);
		}
		if (q->filters[f].value_count > 8)
			APPEND(",... %u values", q->filters[f].value_count);
		APPEND(")");
	}
	APPEND(" quantiles=[");
	for (uint32_t k = 0; k < q->quantile_count && k < TALLY_QUANTILES_MAX; k++)
		APPEND("%s%.17g", k ? "," : "", q->quantiles[k]);
	APPEND("] distinct_users=%d", q->distinct_users);
	if (q->order_by_agg)
		APPEND(" order_by=%s%s order_quantile=%u", q->order_agg >= 0 && q->order_agg <= 10 ? AGG_NAMES[q->order_agg] : "?",
		       q->descending ? " DESC" : " ASC", q->order_quantile);
	APPEND(" limit=%u", q->limit);
#undef APPEND
}

static void row_format(const tally_row *r, const tally_query *q, char *buf, size_t size)
{
	size_t at = 0;
#define APPEND(...)                                                                 \
	do {                                                                        \
		if (at < size)                                                      \
			at += (size_t)snprintf(buf + at, size - at, __VA_ARGS__);   \
	} while (0)
	APPEND("[%" PRId64 ", %" PRId64 ") group=(", r->bucket_start_us, r->bucket_end_us);
	for (int d = 0; d < TALLY_DIM_COUNT; d++) {
		char s[300];
		str_format(r->group[d], s, sizeof(s));
		APPEND("%s\"%s\"", d ? "," : "", s);
	}
	APPEND(") count=%" PRIu64 " tokens_in=%" PRIu64 " tokens_out=%" PRIu64 " cost=%" PRId64
	       " dur_sum=%" PRIu64 " dur_min=%u dur_max=%u status=[%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 "]",
	       r->count, r->tokens_in, r->tokens_out, r->cost_micros, r->duration_ms_sum, r->duration_ms_min,
	       r->duration_ms_max, r->status_count[0], r->status_count[1], r->status_count[2], r->status_count[3]);
	if (q->quantile_count > 0) {
		APPEND(" q=[");
		for (uint32_t k = 0; k < q->quantile_count && k < TALLY_QUANTILES_MAX; k++)
			APPEND("%s%.17g", k ? "," : "", r->quantile_ms[k]);
		APPEND("]");
	}
	if (q->distinct_users)
		APPEND(" users=%" PRIu64, r->distinct_users);
#undef APPEND
}

/* ---- the oracle ------------------------------------------------------------------- */

typedef struct rowset {
	tally_row *rows;
	size_t count, cap;
} rowset;

static void rowset_push(rowset *s, const tally_row *r)
{
	if (s->count == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 64;
		s->rows = xrealloc(s->rows, s->cap * sizeof(tally_row));
	}
	s->rows[s->count++] = *r;
}

static bool ev_passes(const ev *e, const tally_filter *filters, uint32_t filter_count)
{
	for (uint32_t f = 0; f < filter_count; f++) {
		tally_str value = ev_dim(e, filters[f].dim);
		bool any = false;
		for (uint32_t i = 0; i < filters[f].value_count && !any; i++)
			any = str_eq(value, filters[f].values[i]);
		if (!any)
			return false;
	}
	return true;
}

/* The bucket of instant t: [from, to) for NONE, else the UTC or local calendar bucket. */
static void oracle_bucket(const tally_query *q, const tz *zone, int64_t t, int64_t *start, int64_t *end)
{
	if (q->bucket == TALLY_BUCKET_NONE) {
		*start = q->from_us;
		*end = q->to_us;
		return;
	}
	enum tz_unit unit = bucket_unit(q->bucket);
	if (zone == NULL) {
		*start = unit_floor(unit, t);
		*end = unit_next(unit, *start);
	} else {
		tz_bucket(zone, unit, t, start, end, NULL);
	}
}

/* Row key: bucket, then every group value bytewise in dimension order. */
static int row_key_cmp(const tally_row *a, const tally_row *b)
{
	if (a->bucket_start_us != b->bucket_start_us)
		return a->bucket_start_us < b->bucket_start_us ? -1 : 1;
	for (int d = 0; d < TALLY_DIM_COUNT; d++) {
		int c = str_cmp(a->group[d], b->group[d]);
		if (c != 0)
			return c;
	}
	return 0;
}

static int cmp_u64(uint64_t a, uint64_t b)
{
	return (a > b) - (a < b);
}

static int cmp_i128(__int128 a, __int128 b)
{
	return (a > b) - (a < b);
}

/* An exact sum as the engine reports it (tally_wraps): its field, modulo
 * 2^64, and how many times it passed the field's range. */
static void exact_split_u(__int128 exact, uint64_t *field, int64_t *wraps)
{
	*field = (uint64_t)exact;
	*wraps = (int64_t)((exact - (__int128)*field) >> 64);
}
static void exact_split_i(__int128 exact, int64_t *field, int64_t *wraps)
{
	*field = (int64_t)(uint64_t)exact;
	*wraps = (int64_t)((exact - (__int128)*field) >> 64);
}

/* A row's sum's exact value: field + wraps * 2^64. */
static __int128 exact_of(__int128 field, int64_t wraps)
{
	return field + (__int128)wraps * ((__int128)1 << 64);
}

/* The order_agg value of two rows compared, ascending. */
static int row_agg_cmp(const tally_row *a, const tally_row *b, const tally_query *q)
{
	switch (q->order_agg) {
	case TALLY_AGG_COUNT:
		return cmp_u64(a->count, b->count);
	case TALLY_AGG_TOKENS_IN:
		return cmp_i128(exact_of(a->tokens_in, a->wraps.tokens_in), exact_of(b->tokens_in, b->wraps.tokens_in));
	case TALLY_AGG_TOKENS_OUT:
		return cmp_i128(exact_of(a->tokens_out, a->wraps.tokens_out),
				exact_of(b->tokens_out, b->wraps.tokens_out));
	case TALLY_AGG_TOKENS:
		return cmp_i128(exact_of(a->tokens_in, a->wraps.tokens_in) + exact_of(a->tokens_out, a->wraps.tokens_out),
				exact_of(b->tokens_in, b->wraps.tokens_in) + exact_of(b->tokens_out, b->wraps.tokens_out));
	case TALLY_AGG_COST:
		return cmp_i128(exact_of(a->cost_micros, a->wraps.cost_micros),
				exact_of(b->cost_micros, b->wraps.cost_micros));
	case TALLY_AGG_DURATION_SUM:
		return cmp_i128(exact_of(a->duration_ms_sum, a->wraps.duration_ms_sum),
				exact_of(b->duration_ms_sum, b->wraps.duration_ms_sum));
	case TALLY_AGG_DURATION_MIN:
		return cmp_u64(a->duration_ms_min, b->duration_ms_min);
	case TALLY_AGG_DURATION_MAX:
		return cmp_u64(a->duration_ms_max, b->duration_ms_max);
	case TALLY_AGG_ERRORS:
		return cmp_u64(a->count - a->status_count[TALLY_STATUS_OK], b->count - b->status_count[TALLY_STATUS_OK]);
	case TALLY_AGG_QUANTILE: {
		double x = a->quantile_ms[q->order_quantile], y = b->quantile_ms[q->order_quantile];
		return (x > y) - (x < y);
	}
	case TALLY_AGG_DISTINCT_USERS:
		return cmp_u64(a->distinct_users, b->distinct_users);
	}
	cr_assert_fail("order_agg %d", q->order_agg);
	return 0;
}

/* The documented order: by the aggregate (descending if asked), ties by
 * bucket then group values ascending; without order_by_agg, by key. */
static int row_order_cmp(const void *pa, const void *pb, void *ctx)
{
	const tally_row *a = pa, *b = pb;
	const tally_query *q = ctx;
	if (q->order_by_agg) {
		int c = row_agg_cmp(a, b, q);
		if (q->descending)
			c = -c;
		if (c != 0)
			return c;
	}
	return row_key_cmp(a, b);
}

static int group_cmp_ctx(const void *pa, const void *pb, void *ctx)
{
	const ev *a = *(const ev *const *)pa, *b = *(const ev *const *)pb;
	uint32_t group_by = *(const uint32_t *)ctx;
	for (int d = 0; d < TALLY_DIM_COUNT; d++) {
		if (!(group_by & (1u << d)))
			continue;
		int c = str_cmp(ev_dim(a, d), ev_dim(b, d));
		if (c != 0)
			return c;
	}
	return 0;
}

static int cmp_i64(const void *pa, const void *pb)
{
	int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
	return (a > b) - (a < b);
}

static int cmp_u32(const void *pa, const void *pb)
{
	uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
	return (a > b) - (a < b);
}

static int cmp_str(const void *pa, const void *pb)
{
	return str_cmp(*(const tally_str *)pa, *(const tally_str *)pb);
}

typedef struct scratch {
	const ev **members;
	uint32_t *durations;
	tally_str *users;
} scratch;

/* Emits the rows of one bucket: members[0..n) grouped by the query's dims. */
static void oracle_emit_bucket(const tally_query *q, int64_t start, int64_t end, const ev **members, size_t n,
			       scratch *tmp, rowset *out)
{
	uint32_t group_by = q->group_by;
	qsort_r(members, n, sizeof(*members), group_cmp_ctx, &group_by);
	for (size_t i = 0; i < n;) {
		size_t j = i + 1;
		while (j < n && group_cmp_ctx(&members[i], &members[j], &group_by) == 0)
			j++;
		tally_row r;
		memset(&r, 0, sizeof(r));
		r.bucket_start_us = start;
		r.bucket_end_us = end;
		for (int d = 0; d < TALLY_DIM_COUNT; d++)
			r.group[d] = (group_by & (1u << d)) ? ev_dim(members[i], d) : (tally_str){"", 0};
		r.duration_ms_min = UINT32_MAX;
		size_t user_count = 0;
		__int128 tokens_in = 0, tokens_out = 0, cost = 0, duration = 0; /* exact */
		for (size_t k = i; k < j; k++) {
			const ev *e = members[k];
			r.count++;
			tokens_in += e->tokens_in;
			tokens_out += e->tokens_out;
			cost += e->cost_micros;
			duration += e->duration_ms;
			if (e->duration_ms < r.duration_ms_min)
				r.duration_ms_min = e->duration_ms;
			if (e->duration_ms > r.duration_ms_max)
				r.duration_ms_max = e->duration_ms;
			r.status_count[e->status]++;
			tmp->durations[k - i] = e->duration_ms;
			if (e->user_len > 0)
				tmp->users[user_count++] = ev_user(e);
		}
		exact_split_u(tokens_in, &r.tokens_in, &r.wraps.tokens_in);
		exact_split_u(tokens_out, &r.tokens_out, &r.wraps.tokens_out);
		exact_split_u(duration, &r.duration_ms_sum, &r.wraps.duration_ms_sum);
		exact_split_i(cost, &r.cost_micros, &r.wraps.cost_micros);
		qsort(tmp->durations, j - i, sizeof(uint32_t), cmp_u32);
		for (uint32_t k = 0; k < q->quantile_count; k++) {
			uint64_t rank = (uint64_t)floor(q->quantiles[k] * (double)(r.count - 1));
			r.quantile_ms[k] = (double)tmp->durations[rank];
		}
		qsort(tmp->users, user_count, sizeof(tally_str), cmp_str);
		for (size_t k = 0; k < user_count; k++)
			if (k == 0 || !str_eq(tmp->users[k], tmp->users[k - 1]))
				r.distinct_users++;
		rowset_push(out, &r);
		i = j;
	}
}

/* Every row of the query over t's accepted events (t NULL: no events), in
 * the default order (bucket, then group values). */
static void oracle_eval(const tenant *t, const tally_query *q, rowset *out)
{
	out->count = 0;
	if (t == NULL || t->sorted_count == 0)
		return;
	const tz *zone = q->bucket == TALLY_BUCKET_NONE ? NULL : zone_for(q->time_zone);
	scratch tmp = {
		.members = xcalloc(t->sorted_count, sizeof(ev *)),
		.durations = xcalloc(t->sorted_count, sizeof(uint32_t)),
		.users = xcalloc(t->sorted_count, sizeof(tally_str)),
	};
	/* First event with time >= from. */
	size_t lo = 0, hi = t->sorted_count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (t->sorted[mid].time_us < q->from_us)
			lo = mid + 1;
		else
			hi = mid;
	}
	size_t n = 0;
	int64_t start = 0, end = 0;
	for (size_t i = lo; i < t->sorted_count && t->sorted[i].time_us < q->to_us; i++) {
		const ev *e = &t->sorted[i];
		if (!ev_passes(e, q->filters, q->filter_count))
			continue;
		/* A bucket is a maximal run of instants with one label: events in
		 * time order stay in the current bucket until its end. */
		if (n == 0 || e->time_us >= end) {
			if (n != 0)
				oracle_emit_bucket(q, start, end, tmp.members, n, &tmp, out);
			n = 0;
			oracle_bucket(q, zone, e->time_us, &start, &end);
			cr_assert(start <= e->time_us && e->time_us < end, "oracle bucket [%" PRId64 ", %" PRId64 ") misses %" PRId64,
				  start, end, e->time_us);
		}
		tmp.members[n++] = e;
	}
	if (n != 0)
		oracle_emit_bucket(q, start, end, tmp.members, n, &tmp, out);
	free(tmp.members);
	free(tmp.durations);
	free(tmp.users);
}

/* ---- comparing the engine's answer --------------------------------------------------- */

/* Checks one row against the oracle's; writes the first difference to why. */
static bool row_matches(const tally_row *got, const tally_row *exp, const tally_query *q, char *why, size_t size)
{
#define DIFF(...)                                         \
	do {                                              \
		snprintf(why, size, __VA_ARGS__);         \
		return false;                             \
	} while (0)
	if (got->bucket_start_us != exp->bucket_start_us || got->bucket_end_us != exp->bucket_end_us)
		DIFF("bucket");
	for (int d = 0; d < TALLY_DIM_COUNT; d++)
		if (!str_eq(got->group[d], exp->group[d]))
			DIFF("group value of dim %d", d);
	if (got->count != exp->count)
		DIFF("count");
	if (got->tokens_in != exp->tokens_in)
		DIFF("tokens_in");
	if (got->tokens_out != exp->tokens_out)
		DIFF("tokens_out");
	if (got->cost_micros != exp->cost_micros)
		DIFF("cost_micros");
	if (got->duration_ms_sum != exp->duration_ms_sum)
		DIFF("duration_ms_sum");
	if (memcmp(&got->wraps, &exp->wraps, sizeof(got->wraps)))
		DIFF("wraps (in %" PRId64 ",%" PRId64 " cost %" PRId64 " duration %" PRId64 ")",
		     got->wraps.tokens_in, got->wraps.tokens_out, got->wraps.cost_micros, got->wraps.duration_ms_sum);
	if (got->duration_ms_min != exp->duration_ms_min)
		DIFF("duration_ms_min");
	if (got->duration_ms_max != exp->duration_ms_max)
		DIFF("duration_ms_max");
	for (int s = 0; s < TALLY_STATUS_COUNT; s++)
		if (got->status_count[s] != exp->status_count[s])
			DIFF("status_count[%d]", s);
	for (uint32_t k = 0; k < q->quantile_count; k++) {
		double x = exp->quantile_ms[k], y = got->quantile_ms[k];
		/* 1% relative, plus a hair for rounding in the representative value. */
		if (!(fabs(y - x) <= x * (QUANTILE_RELATIVE_ERROR * (1 + 1e-9)) + 1e-9))
			DIFF("quantile_ms[%u] (q=%.17g): %.17g not within 1%% of the exact %.17g", k, q->quantiles[k], y, x);
	}
	if (q->distinct_users) {
		uint64_t x = exp->distinct_users, y = got->distinct_users;
		if (x <= USER_EXACT_MAX) {
			if (x != y)
				DIFF("distinct_users %" PRIu64 " (exact %" PRIu64 ", must be exact up to %d)", y, x, USER_EXACT_MAX);
		} else if (fabs((double)y - (double)x) > 0.02 * (double)x) {
			DIFF("distinct_users %" PRIu64 " not within 2%% of %" PRIu64, y, x);
		}
	}
#undef DIFF
	return true;
}

static const tally_row *rowset_find_key(const rowset *s, const tally_row *key)
{
	size_t lo = 0, hi = s->count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = row_key_cmp(&s->rows[mid], key);
		if (c == 0)
			return &s->rows[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/*
 * Compares res with the oracle's rows exp (default order; reordered here
 * when the query orders by an aggregate). Returns true on a match; else
 * writes what differs into msg.
 */
static bool result_matches(const tally_result *res, rowset *exp, const tally_query *q, char *msg, size_t size)
{
	size_t limit = q->limit != 0 ? q->limit : TALLY_QUERY_ROWS_MAX;
	size_t want = exp->count < limit ? exp->count : limit;
	bool truncated = exp->count > limit;
	char why[512], a[2048], b[2048];
	if (res->row_count != want) {
		snprintf(msg, size, "row_count %zu, expected %zu (%zu rows matched, limit %zu)", res->row_count, want,
			 exp->count, limit);
		if (want > 0 && res->row_count > 0) {
			/* Show the first row that differs anyway. */
			if (q->order_by_agg)
				qsort_r(exp->rows, exp->count, sizeof(tally_row), row_order_cmp, (void *)q);
			size_t n = want < res->row_count ? want : res->row_count;
			for (size_t i = 0; i < n; i++) {
				if (!row_matches(&res->rows[i], &exp->rows[i], q, why, sizeof(why))) {
					row_format(&res->rows[i], q, a, sizeof(a));
					row_format(&exp->rows[i], q, b, sizeof(b));
					size_t at = strlen(msg);
					snprintf(msg + at, size - at, "; first differing row %zu (%s):\n  got      %s\n  expected %s",
						 i, why, a, b);
					break;
				}
			}
		}
		return false;
	}
	if (res->truncated != truncated) {
		snprintf(msg, size, "truncated %d, expected %d (%zu rows matched, limit %zu)", res->truncated, truncated,
			 exp->count, limit);
		return false;
	}
	bool estimated = false;
	if (q->order_by_agg && q->order_agg == TALLY_AGG_QUANTILE)
		estimated = true;
	if (q->order_by_agg && q->order_agg == TALLY_AGG_DISTINCT_USERS)
		for (size_t i = 0; i < exp->count; i++)
			if (exp->rows[i].distinct_users > USER_EXACT_MAX)
				estimated = true;
	if (!estimated) {
		if (q->order_by_agg && exp->count)
			qsort_r(exp->rows, exp->count, sizeof(tally_row), row_order_cmp, (void *)q);
		for (size_t i = 0; i < want; i++) {
			if (!row_matches(&res->rows[i], &exp->rows[i], q, why, sizeof(why))) {
				row_format(&res->rows[i], q, a, sizeof(a));
				row_format(&exp->rows[i], q, b, sizeof(b));
				snprintf(msg, size, "first differing row %zu of %zu (%s):\n  got      %s\n  expected %s", i, want,
					 why, a, b);
				return false;
			}
		}
		return true;
	}
	/* Ordered by an estimate: every row must be an oracle row (once), and
	 * the order must agree with the values returned. */
	bool *seen = xcalloc(exp->count, sizeof(bool));
	bool ok = true;
	for (size_t i = 0; i < want && ok; i++) {
		const tally_row *e = rowset_find_key(exp, &res->rows[i]);
		row_format(&res->rows[i], q, a, sizeof(a));
		if (e == NULL) {
			snprintf(msg, size, "row %zu has no oracle row with its bucket and group: %s", i, a);
			ok = false;
		} else if (seen[e - exp->rows]) {
			snprintf(msg, size, "row %zu repeats an earlier row: %s", i, a);
			ok = false;
		} else if (!row_matches(&res->rows[i], e, q, why, sizeof(why))) {
			row_format(e, q, b, sizeof(b));
			snprintf(msg, size, "row %zu (%s):\n  got      %s\n  expected %s", i, why, a, b);
			ok = false;
		} else if (i > 0 && row_order_cmp(&res->rows[i - 1], &res->rows[i], (void *)q) >= 0) {
			row_format(&res->rows[i - 1], q, b, sizeof(b));
			snprintf(msg, size, "rows %zu and %zu are out of order:\n  %s\n  %s", i - 1, i, b, a);
			ok = false;
		} else {
			seen[e - exp->rows] = true;
		}
	}
	free(seen);
	return ok;
}

/* What the checked queries covered (printed by the oracle tests, so a run
 * shows it did not compare empty answers). */
static struct coverage {
	uint64_t queries, nonempty, rows, truncated, estimated_order, hll_rows, local_zone, raw_rows, minute_cells;
	uint64_t wrapped_rows; /* rows with a sum past its 64-bit range */
} coverage;

/* Runs q for tenant_name and compares it with the oracle over t (NULL: no
 * events). Returns true on a match; prints the details of a mismatch. */
static bool check_query(tally_store *store, const char *tenant_name, const tenant *t, const tally_query *q,
			int case_number, rowset *exp)
{
	char err[TALLY_ERRMSG_SIZE] = "";
	tally_result *res = NULL;
	char desc[4096];
	int rc = tally_query_run(store, tenant_name, q, &res, err);
	if (rc != 0) {
		cr_assert_null(res, "an error with a result");
		query_describe(tenant_name, q, desc, sizeof(desc));
		fprintf(stderr, "MISMATCH seed=%llu case=%d: tally_query_run returned %s (%s)\n  query: %s\n",
			(unsigned long long)test_seed, case_number, tally_strerror(rc), err, desc);
		return false;
	}
	cr_assert_not_null(res);
	oracle_eval(t, q, exp);
	coverage.queries++;
	coverage.nonempty += exp->count > 0;
	coverage.rows += res->row_count;
	coverage.truncated += res->truncated;
	coverage.estimated_order += q->order_by_agg && (q->order_agg == TALLY_AGG_QUANTILE || q->order_agg == TALLY_AGG_DISTINCT_USERS);
	coverage.local_zone += q->bucket != TALLY_BUCKET_NONE && zone_for(q->time_zone) != NULL && exp->count > 0;
	coverage.raw_rows += res->raw_rows;
	coverage.minute_cells += res->cells_minute;
	for (size_t i = 0; i < exp->count; i++) {
		coverage.hll_rows += q->distinct_users && exp->rows[i].distinct_users > USER_EXACT_MAX;
		coverage.wrapped_rows += exp->rows[i].wraps.tokens_in != 0;
	}
	static char msg[16384];
	static int printed;
	bool ok = result_matches(res, exp, q, msg, sizeof(msg));
	if (!ok && printed++ < 8) {
		query_describe(tenant_name, q, desc, sizeof(desc));
		fprintf(stderr, "MISMATCH seed=%llu case=%d:\n  query: %s\n  %s\n", (unsigned long long)test_seed,
			case_number, desc, msg);
	}
	tally_result_free(res);
	return ok;
}

/* ---- random queries ------------------------------------------------------------------ */

/* A random value of dimension d for filters: any master value (present in
 * this tenant or not), sometimes one that no event has. */
static tally_str random_filter_value(int dim)
{
	if (dim == TALLY_DIM_STATUS)
		return str_of(STATUS_NAMES[rng_below(TALLY_STATUS_COUNT)]);
	if (rng_chance(0.08))
		return str_of(MISSING_VALUES[rng_below(COUNT_OF(MISSING_VALUES))]);
	switch (dim) {
	case TALLY_DIM_PROJECT:
		return str_of(PROJECTS[rng_below(COUNT_OF(PROJECTS))]);
	case TALLY_DIM_AGENT:
		return str_of(AGENTS[rng_below(COUNT_OF(AGENTS))]);
	case TALLY_DIM_MODEL:
		return str_of(MODELS[rng_below(COUNT_OF(MODELS))]);
	default:
		return str_of(TYPES[rng_below(COUNT_OF(TYPES))]);
	}
}

/* 0..3 filters on distinct dimensions, sometimes one with the maximum
 * number of values. */
static void random_filters(qbuild *b, tally_filter *filters, uint32_t *filter_count)
{
	*filter_count = 0;
	if (rng_chance(0.45))
		return;
	uint32_t want = rng_chance(0.6) ? 1 : 2 + (uint32_t)rng_below(2);
	bool used[TALLY_DIM_COUNT] = {false};
	for (uint32_t f = 0; f < want; f++) {
		int dim = (int)rng_below(TALLY_DIM_COUNT);
		if (used[dim])
			continue;
		used[dim] = true;
		uint32_t at = *filter_count;
		tally_filter *filter = &filters[at];
		filter->dim = dim;
		filter->values = b->values[at];
		uint32_t n = 1 + (uint32_t)rng_below(5);
		for (uint32_t i = 0; i < n; i++)
			b->values[at][i] = random_filter_value(dim);
		if (dim != TALLY_DIM_STATUS && rng_chance(0.05))
			for (; n < TALLY_FILTER_VALUES_MAX; n++) /* the most values a filter may have */
				b->values[at][n] = str_of(NX_VALUES[n]);
		filter->value_count = n;
		(*filter_count)++;
	}
}

static double random_rank(void)
{
	static const double ranks[] = {0.0, 1.0, 0.5, 0.9, 0.95, 0.99, 0.25, 0.999};
	return rng_chance(0.6) ? ranks[rng_below(COUNT_OF(ranks))] : rng_unit();
}

/* An instant in [lo, hi], aligned to a UTC minute, hour, day, a local
 * hour/day of `zone`, or not at all. */
static int64_t random_instant(int64_t lo, int64_t hi, const tz *zone)
{
	int64_t t = rng_range(lo, hi);
	switch (rng_below(6)) {
	case 0:
		return unit_floor(TZ_MINUTE, t);
	case 1:
		return unit_floor(TZ_HOUR, t);
	case 2:
		return unit_floor(TZ_DAY, t);
	case 3: {
		if (zone == NULL)
			return unit_floor(TZ_DAY, t);
		int64_t start, end;
		tz_bucket(zone, rng_chance(0.5) ? TZ_DAY : TZ_HOUR, t, &start, &end, NULL);
		return start;
	}
	default:
		return t; /* unaligned microseconds */
	}
}

/* Lengths from min_us to max_us, log-uniform. */
static int64_t random_length(int64_t min_us, int64_t max_us)
{
	double l = log((double)min_us) + rng_unit() * (log((double)max_us) - log((double)min_us));
	int64_t len = (int64_t)exp(l);
	return len < 1 ? 1 : len > max_us ? max_us : len;
}

/* The time of a random accepted event of t (or a random instant). */
static int64_t random_event_time(const tenant *t, int64_t data_lo, int64_t data_hi)
{
	if (t == NULL || t->sorted_count == 0)
		return rng_range(data_lo, data_hi);
	return t->sorted[rng_below(t->sorted_count)].time_us;
}

/* A random query; `t` (may be NULL) lends event times as range ends. */
static void random_query(qbuild *b, const tenant *t, int64_t data_lo, int64_t data_hi)
{
	memset(b, 0, sizeof(*b));
	tally_query *q = &b->q;
	q->bucket = (int)rng_below(5);
	q->time_zone = ZONES[rng_below(ZONE_COUNT)];
	const tz *zone = zone_for(q->time_zone);
	int64_t max_len = q->bucket == TALLY_BUCKET_MINUTE ? 2 * DAY_US : 46 * DAY_US;
	if (q->bucket != TALLY_BUCKET_MINUTE && q->bucket != TALLY_BUCKET_HOUR && rng_chance(0.03)) {
		/* The longest range a query may have, ending after the data. */
		q->to_us = data_hi + 1 + (int64_t)rng_below(DAY_US);
		q->from_us = q->to_us - TALLY_QUERY_RANGE_MAX_US + (int64_t)rng_below(2);
	} else if (q->bucket != TALLY_BUCKET_MINUTE && rng_chance(0.1)) {
		q->from_us = data_lo - 5 * DAY_US; /* the whole data set */
		q->to_us = data_hi + DAY_US;
	} else {
		q->from_us = random_instant(data_lo - 2 * DAY_US, data_hi + HOUR_US, zone);
		/* Some tiny ranges (down to 1us), mostly an hour or more. */
		int64_t len = rng_chance(0.15)   ? random_length(1, max_len)
			      : rng_chance(0.5) ? random_length(HOUR_US, max_len)
						: rng_range(max_len / 20, max_len);
		q->to_us = rng_chance(0.7) ? random_instant(q->from_us + len, q->from_us + len, zone) : q->from_us + len;
		if (q->to_us <= q->from_us)
			q->to_us = q->from_us + (rng_chance(0.5) ? 1 : MINUTE_US);
		if (q->to_us - q->from_us > max_len)
			q->to_us = q->from_us + max_len;
		if (rng_chance(0.12)) {
			/* Ends exactly at events: from includes one, to excludes one. */
			int64_t x = random_event_time(t, data_lo, data_hi), y = random_event_time(t, data_lo, data_hi);
			if (x > y) {
				int64_t tmp = x;
				x = y;
				y = tmp;
			}
			if (y - x > max_len)
				y = x + max_len;
			if (x == y)
				y = x + 1;
			q->from_us = x;
			q->to_us = y;
		}
	}
	q->group_by = rng_chance(0.3) ? 0 : (uint32_t)rng_below(32);
	random_filters(b, b->filters, &q->filter_count);
	q->filters = q->filter_count ? b->filters : NULL;
	if (rng_chance(0.5)) {
		q->quantile_count = 1 + (uint32_t)rng_below(TALLY_QUANTILES_MAX);
		for (uint32_t k = 0; k < q->quantile_count; k++)
			q->quantiles[k] = random_rank();
	}
	q->distinct_users = rng_chance(0.5);
	if (rng_chance(0.35)) {
		q->order_by_agg = true;
		q->order_agg = (int)rng_below(TALLY_AGG_DISTINCT_USERS + 1);
		if (q->order_agg == TALLY_AGG_QUANTILE && q->quantile_count == 0)
			q->order_agg = TALLY_AGG_COUNT;
		if (q->order_agg == TALLY_AGG_QUANTILE)
			q->order_quantile = (uint32_t)rng_below(q->quantile_count);
		if (q->order_agg == TALLY_AGG_DISTINCT_USERS)
			q->distinct_users = true;
		q->descending = rng_chance(0.5);
		q->limit = rng_chance(0.6) ? 1 + (uint32_t)rng_below(25) : 0;
	} else if (rng_chance(0.15)) {
		q->limit = 1 + (uint32_t)rng_below(60);
	}
}

/* ---- listings ---------------------------------------------------------------------- */

typedef struct list_ctx {
	const ev *const *expect;
	size_t expect_count;
	size_t pos;        /* events delivered so far, all pages */
	size_t page_count; /* events delivered in the current page */
	bool bad;
	char why[1024];
} list_ctx;

static int list_collect(void *ctx, const tally_event *e)
{
	list_ctx *c = ctx;
	c->page_count++;
	if (c->bad)
		return 0;
	char id[300];
	str_format(e->event_id, id, sizeof(id));
	if (c->pos >= c->expect_count) {
		snprintf(c->why, sizeof(c->why), "event %zu (id \"%s\", time %" PRId64 ") is beyond the %zu expected", c->pos,
			 id, e->time_us, c->expect_count);
		c->bad = true;
		return 0;
	}
	const ev *x = c->expect[c->pos];
	tally_event want = ev_event(x);
	const char *field = NULL;
	if (!str_eq(e->event_id, want.event_id))
		field = "event_id";
	else if (e->time_us != want.time_us)
		field = "time_us";
	else if (!str_eq(e->type, want.type))
		field = "type";
	else if (!str_eq(e->project, want.project))
		field = "project";
	else if (!str_eq(e->agent, want.agent))
		field = "agent";
	else if (!str_eq(e->model, want.model))
		field = "model";
	else if (!str_eq(e->user, want.user))
		field = "user";
	else if (e->status != want.status)
		field = "status";
	else if (e->duration_ms != want.duration_ms)
		field = "duration_ms";
	else if (e->tokens_in != want.tokens_in || e->tokens_out != want.tokens_out)
		field = "tokens";
	else if (e->cost_micros != want.cost_micros)
		field = "cost_micros";
	if (field != NULL) {
		snprintf(c->why, sizeof(c->why),
			 "event %zu differs in %s: got id \"%s\" time %" PRId64 ", expected id \"%s\" time %" PRId64, c->pos,
			 field, id, e->time_us, x->id, x->time_us);
		c->bad = true;
	}
	c->pos++;
	return 0;
}

/* The oracle's listing: t's events in [from, to) passing filters and user, in (time, id) order. */
static size_t list_expect(const tenant *t, const tally_list_request *req, const ev **out)
{
	size_t n = 0;
	for (size_t i = 0; t != NULL && i < t->sorted_count; i++) {
		const ev *e = &t->sorted[i];
		if (e->time_us < req->from_us || e->time_us >= req->to_us)
			continue;
		if (!ev_passes(e, req->filters, req->filter_count))
			continue;
		if (req->user.len > 0 && !str_eq(ev_user(e), req->user))
			continue;
		out[n++] = e;
	}
	return n;
}

/*
 * Pages through a listing with `limit` per call and checks the
 * concatenation against the oracle; the page that delivers the last event
 * must return the cursor "" (there is no more). Returns true on a match.
 */
static bool check_listing(tally_store *store, const char *tenant_name, const tenant *t, tally_list_request req,
			  int case_number)
{
	const ev **expect = xcalloc(t != NULL && t->sorted_count ? t->sorted_count : 1, sizeof(ev *));
	list_ctx ctx = {.expect = expect, .expect_count = list_expect(t, &req, expect)};
	char cursor[TALLY_CURSOR_SIZE] = "";
	char next[TALLY_CURSOR_SIZE];
	char err[TALLY_ERRMSG_SIZE];
	size_t calls = 0, calls_max = ctx.expect_count / req.limit + 10;
	bool ok = true;
	char problem[1200] = "";
	for (;;) {
		req.cursor = cursor;
		memset(next, '#', sizeof(next));
		next[sizeof(next) - 1] = '\0';
		err[0] = '\0';
		ctx.page_count = 0;
		size_t before = ctx.pos;
		int rc = tally_list_events(store, tenant_name, &req, list_collect, &ctx, next, err);
		calls++;
		if (rc != 0) {
			snprintf(problem, sizeof(problem), "call %zu returned %s (%s)", calls, tally_strerror(rc), err);
			ok = false;
			break;
		}
		if (ctx.bad) {
			snprintf(problem, sizeof(problem), "call %zu: %s", calls, ctx.why);
			ok = false;
			break;
		}
		if (ctx.page_count > req.limit) {
			snprintf(problem, sizeof(problem), "call %zu delivered %zu events, limit %u", calls, ctx.page_count,
				 req.limit);
			ok = false;
			break;
		}
		if (memchr(next, '\0', sizeof(next)) == NULL || strlen(next) >= TALLY_CURSOR_SIZE) {
			snprintf(problem, sizeof(problem), "call %zu left next_cursor unterminated", calls);
			ok = false;
			break;
		}
		if (next[0] == '\0')
			break;
		if (ctx.pos == ctx.expect_count && before != ctx.pos) {
			snprintf(problem, sizeof(problem),
				 "call %zu delivered the last event but next_cursor is \"%.40s\", not \"\" (there is no more)",
				 calls, next);
			ok = false;
			break;
		}
		if (calls > calls_max) {
			snprintf(problem, sizeof(problem), "%zu calls and still a cursor (%zu of %zu events delivered)", calls,
				 ctx.pos, ctx.expect_count);
			ok = false;
			break;
		}
		memcpy(cursor, next, sizeof(cursor));
	}
	if (ok && ctx.pos != ctx.expect_count) {
		snprintf(problem, sizeof(problem), "listing ended after %zu of %zu events", ctx.pos, ctx.expect_count);
		ok = false;
	}
	static int printed;
	if (!ok && printed++ < 8) {
		char user[300];
		str_format(req.user, user, sizeof(user));
		fprintf(stderr,
			"MISMATCH seed=%llu listing case=%d: tenant=%s from_us=%" PRId64 " to_us=%" PRId64
			" filters=%u user=\"%s\" limit=%u: %s\n",
			(unsigned long long)test_seed, case_number, tenant_name, req.from_us, req.to_us, req.filter_count, user,
			req.limit, problem);
		for (uint32_t f = 0; f < req.filter_count; f++) {
			char v[300];
			str_format(req.filters[f].values[0], v, sizeof(v));
			fprintf(stderr, "  filter dim %d, %u values, first \"%s\"\n", req.filters[f].dim,
				req.filters[f].value_count, v);
		}
	}
	free(expect);
	return ok;
}

/* A random listing request over t with a page size that keeps the number
 * of calls small. */
static bool random_listing(tally_store *store, const tenant *t, int case_number, int64_t data_lo, int64_t data_hi)
{
	static qbuild b; /* filter storage */
	memset(&b, 0, sizeof(b));
	tally_list_request req;
	memset(&req, 0, sizeof(req));
	if (rng_chance(0.3)) {
		req.from_us = data_lo - DAY_US;
		req.to_us = data_hi + DAY_US;
	} else {
		req.from_us = rng_chance(0.3) ? random_event_time(t, data_lo, data_hi) : random_instant(data_lo, data_hi, NULL);
		req.to_us = rng_chance(0.3) ? random_event_time(t, data_lo, data_hi) : req.from_us + random_length(1, 10 * DAY_US);
		if (req.to_us <= req.from_us)
			req.to_us = req.from_us + 1;
	}
	random_filters(&b, b.filters, &req.filter_count);
	req.filters = req.filter_count ? b.filters : NULL;
	if (rng_chance(0.3) && t->sorted_count > 0) {
		const ev *e = &t->sorted[rng_below(t->sorted_count)];
		req.user = ev_user(e); /* may be "" (no user filter) */
	} else if (rng_chance(0.1)) {
		req.user = str_of("U-nobody");
	}
	const ev **tmp = xcalloc(t->sorted_count ? t->sorted_count : 1, sizeof(ev *));
	size_t n = list_expect(t, &req, tmp);
	free(tmp);
	static const uint32_t small[] = {1, 7, 50, TALLY_LIST_EVENTS_MAX};
	static const uint32_t large[] = {97, 1000, TALLY_LIST_EVENTS_MAX};
	req.limit = n <= 300 ? small[rng_below(COUNT_OF(small))] : large[rng_below(COUNT_OF(large))];
	return check_listing(store, t->name, t, req, case_number);
}

/* ---- the oracle property test --------------------------------------------------------- */

#define ORACLE_TENANTS 4
#define ORACLE_PHASES 12

static size_t burst_centres(int64_t *out)
{
	size_t n = 0;
	out[n++] = utc_us(2026, 10, 3, 15, 30);  /* Lord Howe: +10:30 -> +11 */
	out[n++] = utc_us(2026, 10, 25, 1, 0);   /* Paris: CEST -> CET */
	out[n++] = utc_us(2026, 11, 1, 6, 0);    /* New York: EDT -> EST */
	out[n++] = utc_us(2026, 11, 1, 0, 0);    /* UTC month boundary */
	out[n++] = utc_us(2026, 10, 31, 18, 30); /* Kolkata month boundary */
	out[n++] = utc_us(2026, 10, 31, 18, 15); /* Kathmandu month boundary */
	out[n++] = utc_us(2026, 10, 31, 13, 0);  /* Lord Howe month boundary */
	out[n++] = utc_us(2026, 10, 31, 23, 0);  /* Paris month boundary */
	out[n++] = NOW_US - 30 * MINUTE_US;      /* recent: minute pages */
	out[n++] = NOW_US - 26 * HOUR_US;
	return n;
}

static bool admissible(int64_t time_us, int64_t clock_us)
{
	return time_us >= clock_us - HORIZON_PAST_US + MARGIN_US && time_us <= clock_us + HORIZON_FUTURE_US - MINUTE_US;
}

/* One phase of ingest for tenant t at clock c: pending events that must go
 * now (they would leave the horizon before the next phase) and a random
 * share of the others, re-sent accepted events (duplicates), conflicting
 * versions, in-batch duplicates and two invalid events, shuffled. */
static void oracle_phase_ingest(env *v, tenant *t, int64_t c, int64_t next_c, bool last, size_t phase)
{
	items list = {0};
	size_t fresh = 0;
	for (size_t g = 0; g < t->gen_count; g++) {
		if (t->sent[g] || t->gen[g].time_us > c + HORIZON_FUTURE_US - MINUTE_US)
			continue;
		cr_assert(admissible(t->gen[g].time_us, c), "plan: event %zu left the horizon unsent", g);
		bool must = last || t->gen[g].time_us < next_c - HORIZON_PAST_US + MARGIN_US;
		if (must || rng_chance(0.4)) {
			items_push(&list, &t->gen[g], (int32_t)g, 0);
			t->sent[g] = true;
			fresh++;
		}
	}
	/* In-batch duplicates and conflicting versions of fresh events. */
	for (size_t i = 0; i < fresh; i++) {
		item copy = list.v[i]; /* items_push may move list.v */
		if (rng_chance(0.01))
			items_push(&list, &copy.e, copy.gen_index, 0);
		if (rng_chance(0.005)) {
			copy.e.tokens_in += 1 + rng_below(9);
			items_push(&list, &copy.e, copy.gen_index, 0);
		}
	}
	/* Re-sends of accepted events: the same payload, or another one. */
	size_t resends = t->acc_count / 30 + 1;
	for (size_t k = 0; k < resends && t->acc_count > 0; k++) {
		size_t k_acc = rng_below(t->acc_count);
		ev variant = t->acc[k_acc];
		int32_t g = t->acc_gen[k_acc];
		if (!admissible(variant.time_us, c))
			continue;
		if (rng_chance(0.75)) {
			items_push(&list, &variant, g, 0);
		} else {
			const ev *a = &t->acc[k_acc];
			if (rng_chance(0.5))
				variant.cost_micros -= 1;
			else
				variant.model = strcmp(a->model, MODELS[0]) == 0 ? MODELS[1] : MODELS[0];
			items_push(&list, &variant, g, 0);
		}
	}
	/* Invalid events: outside the horizon, rejected, never counted. */
	ev bad = t->gen[0];
	ev_set_id(&bad, "x", phase);
	bad.time_us = c - HORIZON_PAST_US - HOUR_US;
	items_push(&list, &bad, -1, TALLY_REASON_TIME_TOO_OLD);
	ev_set_id(&bad, "y", phase);
	bad.time_us = c + HORIZON_FUTURE_US + HOUR_US;
	items_push(&list, &bad, -1, TALLY_REASON_TIME_IN_FUTURE);
	items_shuffle(&list);
	ingest_items(v, t, &list);
	free(list.v);
}

/* Store options an oracle run sets beyond env_open's. */
typedef struct oracle_limits {
	uint64_t compact_section_rows_max;
	uint32_t flush_threads;
	uint64_t flush_parallel_rows_min;
	uint64_t query_cache_bytes_max;
} oracle_limits;

static void oracle_test(const char *name, bool short_retention, const oracle_limits *limits)
{
	seed_init(name);
	nx_values_init();
	int64_t clocks[ORACLE_PHASES];
	for (int p = 0; p < ORACLE_PHASES - 1; p++)
		clocks[p] = NOW_US - 5 * DAY_US + p * (5 * DAY_US / (ORACLE_PHASES - 1));
	/* With a short minute retention the last phase comes 3 hours later, after
	 * a flush and a compaction at that clock: every minute page but the
	 * memtable's is past retention, and minute queries need raw events. */
	clocks[ORACLE_PHASES - 1] = NOW_US + (short_retention ? 3 * HOUR_US : 0);
	env v;
	env_open(&v, name, clocks[0], short_retention ? 2 * HOUR_US : 0);
	if (limits) {
		v.options.compact_section_rows_max = limits->compact_section_rows_max;
		v.options.flush_threads = limits->flush_threads;
		v.options.flush_parallel_rows_min = limits->flush_parallel_rows_min;
		v.options.query_cache_bytes_max = limits->query_cache_bytes_max;
		env_reopen(&v);
	}

	static const char *const names[ORACLE_TENANTS] = {"acme", "globex", "initech", "umbrella.corp-1"};
	static const size_t sizes[ORACLE_TENANTS] = {13000, 2500, 1200, 300};
	static const double large_users[ORACLE_TENANTS] = {0.9, 0.1, 0.0, 0.3};
	static const double huge[ORACLE_TENANTS] = {0.0, 0.0, 0.02, 0.3}; /* sums that wrap */
	tenant *tenants = xcalloc(ORACLE_TENANTS, sizeof(tenant));
	int64_t bursts[16];
	size_t burst_count = burst_centres(bursts);
	int64_t data_lo = NOW_US - 40 * DAY_US + HOUR_US, data_hi = NOW_US + 4 * MINUTE_US - 1;
	for (int i = 0; i < ORACLE_TENANTS; i++) {
		tenant_init(&tenants[i], names[i], large_users[i]);
		tenants[i].huge_share = huge[i];
		tenant_generate(&tenants[i], sizes[i], data_lo, data_hi, bursts, burst_count);
	}

	int flushes = 0, compactions = 0, reopens = 0;
	for (int p = 0; p < ORACLE_PHASES; p++) {
		bool last = p == ORACLE_PHASES - 1;
		fault_io_clock_set_us(v.fio, clocks[p]);
		if (last && short_retention) {
			env_flush(&v);
			env_compact(&v);
			flushes++, compactions++;
		}
		for (int i = 0; i < ORACLE_TENANTS; i++)
			oracle_phase_ingest(&v, &tenants[i], clocks[p], last ? clocks[p] : clocks[p + 1], last, (size_t)p);
		if (last)
			break; /* the last phase stays in the memtable */
		double r = rng_unit();
		bool flush = p == 2 || p == 4 || r < 0.25;
		bool compact = p == 4 || (r >= 0.15 && r < 0.25);
		bool reopen = p == 6 || (!short_retention && p == ORACLE_PHASES - 2) || (r >= 0.25 && r < 0.4);
		if (flush)
			env_flush(&v), flushes++;
		if (compact)
			env_compact(&v), compactions++;
		if (reopen) /* no flush: the memtables come back from the WAL */
			env_reopen(&v), reopens++;
	}
	size_t accepted = 0;
	for (int i = 0; i < ORACLE_TENANTS; i++) {
		tenant_seal(&tenants[i]);
		accepted += tenants[i].acc_count;
		for (size_t g = 0; g < tenants[i].gen_count; g++)
			cr_assert(tenants[i].sent[g], "plan: event %zu of %s never sent", g, names[i]);
	}
	tally_stats st;
	cr_assert_eq(tally_store_stats(v.store, &st), 0);
	fprintf(stderr,
		"test_query %s: %zu accepted events, %d flushes, %d compactions, %d reopens; %" PRIu64
		" segment rows, %" PRIu64 " memtable rows\n",
		name, accepted, flushes, compactions, reopens, st.segment_rows, st.events_memtable);
	cr_assert_eq(st.segment_rows + st.events_memtable, accepted, "the store holds every accepted event once");
	cr_assert_gt(st.events_memtable, 0);
	cr_assert_gt(st.segment_rows, 0);

	const int query_cases = 1200, listing_cases = 30;
	int failures = 0;
	rowset exp = {0};
	static qbuild b;
	for (int c = 0; c < query_cases; c++) {
		int which = rng_chance(0.04) ? ORACLE_TENANTS : (int)rng_below(ORACLE_TENANTS);
		random_query(&b, which < ORACLE_TENANTS ? &tenants[which] : NULL, data_lo, data_hi);
		if (c % 16 == 0) {
			/* Wide over acme: rows with more users than the exact set holds. */
			which = 0;
			b.q.from_us = data_lo - (int64_t)rng_below(DAY_US);
			b.q.to_us = data_hi + 1 + (int64_t)rng_below(DAY_US);
			b.q.bucket = TALLY_BUCKET_NONE;
			b.q.group_by = rng_chance(0.5) ? 0 : 1u << TALLY_DIM_STATUS;
			b.q.filter_count = 0;
			b.q.filters = NULL;
			b.q.distinct_users = true;
		}
		if (which == ORACLE_TENANTS) /* an unknown tenant: no rows */
			failures += !check_query(v.store, "nobody", NULL, &b.q, c, &exp);
		else
			failures += !check_query(v.store, tenants[which].name, &tenants[which], &b.q, c, &exp);
	}
	for (int c = 0; c < listing_cases; c++) {
		const tenant *t = &tenants[rng_below(ORACLE_TENANTS)];
		failures += !random_listing(v.store, t, c, data_lo, data_hi);
	}
	free(exp.rows);
	fprintf(stderr,
		"test_query %s: %" PRIu64 " queries (%" PRIu64 " with rows, %" PRIu64 " in local zones), %" PRIu64
		" rows compared, %" PRIu64 " truncated, %" PRIu64 " ordered by an estimate, %" PRIu64
		" rows above the exact-user limit, %" PRIu64 " with wrapped sums; engine read %" PRIu64
		" raw rows, %" PRIu64 " minute cells\n",
		name, coverage.queries, coverage.nonempty, coverage.local_zone, coverage.rows, coverage.truncated,
		coverage.estimated_order, coverage.hll_rows, coverage.wrapped_rows, coverage.raw_rows,
		coverage.minute_cells);
	cr_expect_gt(coverage.hll_rows, 0, "some rows must exercise the HLL estimate");
	cr_expect_gt(coverage.wrapped_rows, 0, "some rows must hold sums past their 64-bit range");
	cr_expect_gt(coverage.truncated, 0, "some answers must be truncated");
	cr_expect_eq(failures, 0, "seed=%llu: %d of %d cases differ from the oracle (details on stderr)",
		     (unsigned long long)test_seed, failures, query_cases + listing_cases);
	cr_assert_eq(tally_store_stats(v.store, &st), 0);
	fprintf(stderr,
		"test_query %s: %" PRIu64 " segment files, %" PRIu64 " tenant-day segments, %" PRIu64
		" bytes of live rollups, %" PRIu64 " bytes of query cache\n",
		name, st.segment_file_count, st.segment_count, st.rollup_live_bytes, st.query_cache_bytes);
	if (limits) { /* the limits took: files of spans and of parallel writes, a small cache */
		cr_expect_geq(st.segment_file_count, 4);
		cr_expect_leq(st.query_cache_bytes, limits->query_cache_bytes_max);
	}
	for (int i = 0; i < ORACLE_TENANTS; i++)
		tenant_free(&tenants[i]);
	free(tenants);
	env_close(&v);
	zones_free();
}

TestSuite(query, .fini = live_dir_remove);

/* Description: hundreds of random queries (every bucket, seven zone
 * spellings, groups, filters, quantiles, distinct users, top-N) over four
 * tenants whose events sit in flushed, compacted, WAL-replayed and live
 * memtable state, against the oracle; minute pages kept 48 hours. */
Test(query, oracle_default_retention)
{
	oracle_test("oracle_default_retention", false, NULL);
}

/* Description: the same with minute pages kept only 2 hours and the last
 * flush 3 hours after most events: minute buckets must be answered from
 * raw events, exactly. */
Test(query, oracle_short_minute_retention)
{
	oracle_test("oracle_short_minute_retention", true, NULL);
}

/* Description: the same queries with the store's limits set where the
 * defaults never take a test's few thousand events: compaction cuts a
 * tenant into time spans of about 700 rows, each in a file of its own
 * (acme's 13,000 events take several); a flush or compaction of 500 rows or
 * more writes three files at once; and the query cache holds 64 KiB, so
 * most queries decode their sections again. */
Test(query, oracle_small_sections_and_limits)
{
	static const oracle_limits limits = {
		.compact_section_rows_max = 700,
		.flush_threads = 3,
		.flush_parallel_rows_min = 500,
		.query_cache_bytes_max = 64 << 10,
	};
	oracle_test("oracle_small_sections_and_limits", false, &limits);
}

/* ---- tz_bucket, the oracle's basis, against glibc --------------------------------------- */

static int64_t libc_label(enum tz_unit unit, int64_t t_us, int32_t *offset_s)
{
	time_t seconds = (time_t)floor_div(t_us, SECOND_US);
	struct tm tm;
	cr_assert_not_null(localtime_r(&seconds, &tm));
	*offset_s = (int32_t)tm.tm_gmtoff;
	return unit_floor(unit, t_us + (int64_t)tm.tm_gmtoff * SECOND_US);
}

/*
 * Whether a bucket boundary lies between t - 1us and t (glibc's view of
 * tz.h's rule): the label changes there, or the clock is set back by
 * exactly one unit at the end of that unit (Paris 03:00 CEST -> 02:00 CET
 * starts a second 02:00 hour bucket).
 */
static bool libc_boundary(enum tz_unit unit, int64_t t)
{
	int32_t before, after;
	int64_t label_before = libc_label(unit, t - 1, &before);
	int64_t label_after = libc_label(unit, t, &after);
	if (label_before != label_after)
		return true;
	int64_t unit_us = unit == TZ_MINUTE ? MINUTE_US : unit == TZ_HOUR ? HOUR_US : 0;
	int64_t local_after = t + (int64_t)after * SECOND_US;
	return unit_us != 0 && (int64_t)(before - after) * SECOND_US == unit_us &&
	       floor_div(local_after, unit_us) * unit_us == local_after;
}

/* Description: for the zones the queries use, over the test's weeks and
 * around every offset change glibc sees, tz_offset equals glibc's offset,
 * tz_next_transition finds each change, and tz_bucket returns the run of
 * instants with t's local label between two boundaries (a label change, or
 * a fall-back of exactly one unit at the unit's end), with no boundary
 * inside, and label_us = floor_unit(local(t)). */
Test(query, tz_bucket_matches_libc)
{
	static const char *const zones[] = {"Europe/Paris", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu",
					    "Australia/Lord_Howe", "UTC"};
	int64_t lo = NOW_US - 45 * DAY_US, hi = NOW_US + 2 * DAY_US;
	for (size_t z = 0; z < COUNT_OF(zones); z++) {
		cr_assert_eq(setenv("TZ", zones[z], 1), 0);
		tzset();
		tz *zone = NULL;
		char err[TALLY_ERRMSG_SIZE] = "";
		int rc = tz_load(zones[z], &zone, err);
		cr_assert_eq(rc, 0, "tz_load(%s): %s (%s)", zones[z], tally_strerror(rc), err);
		/* Sample points: every 17 minutes and a few microseconds, plus the
		 * instants around each change of offset (found by bisection). */
		size_t cap = (size_t)((hi - lo) / (17 * MINUTE_US)) + 256, n = 0;
		int64_t *points = xcalloc(cap, sizeof(int64_t));
		int64_t changes[8];
		int change_count = 0;
		int32_t previous_offset, offset;
		libc_label(TZ_MINUTE, lo, &previous_offset);
		for (int64_t t = lo; t < hi; t += 17 * MINUTE_US + 3) {
			libc_label(TZ_MINUTE, t, &offset);
			if (offset != previous_offset && n + 8 < cap && change_count < 8) {
				int64_t a = floor_div(t - 17 * MINUTE_US - 3, SECOND_US), b = floor_div(t, SECOND_US);
				while (b - a > 1) { /* first second with the new offset */
					int64_t mid = a + (b - a) / 2;
					int32_t o;
					libc_label(TZ_MINUTE, mid * SECOND_US, &o);
					if (o == offset)
						b = mid;
					else
						a = mid;
				}
				int64_t change = b * SECOND_US;
				cr_expect_eq(tz_next_transition(zone, change - 1), change, "%s: next transition after %" PRId64,
					     zones[z], change - 1);
				int64_t around[] = {change - HOUR_US, change - 1, change, change + 1, change + 30 * MINUTE_US,
						    change + HOUR_US - 1, change + HOUR_US + 1};
				for (size_t k = 0; k < COUNT_OF(around); k++)
					points[n++] = around[k];
				changes[change_count++] = change;
			}
			previous_offset = offset;
			if (n < cap)
				points[n++] = t;
		}
		if (strcmp(zones[z], "Europe/Paris") == 0 || strcmp(zones[z], "America/New_York") == 0 ||
		    strcmp(zones[z], "Australia/Lord_Howe") == 0)
			cr_expect_eq(change_count, 1, "%s: one DST change in the window, glibc saw %d", zones[z], change_count);
		int failures = 0;
		for (size_t i = 0; i < n && failures < 5; i++) {
			int64_t t = points[i];
			int32_t o;
			libc_label(TZ_MINUTE, t, &o);
			if (tz_offset(zone, t) != o) {
				cr_expect_eq(tz_offset(zone, t), o, "%s: offset at %" PRId64, zones[z], t);
				failures++;
			}
			for (int u = TZ_MINUTE; u <= TZ_MONTH; u++) {
				enum tz_unit unit = (enum tz_unit)u;
				int64_t start = 0, end = 0, label_us = 0;
				tz_bucket(zone, unit, t, &start, &end, &label_us);
				int64_t label = libc_label(unit, t, &o);
				bool ok = start <= t && t < end && libc_label(unit, start, &o) == label &&
					  libc_label(unit, end - 1, &o) == label && libc_boundary(unit, start) &&
					  libc_boundary(unit, end) && label_us == label;
				for (int k = 0; k < change_count && ok; k++)
					if (changes[k] > start && changes[k] < end && libc_boundary(unit, changes[k]))
						ok = false;
				if (!ok) {
					cr_expect(ok,
						  "%s unit %d t=%" PRId64 ": tz_bucket [%" PRId64 ", %" PRId64 ") label %" PRId64
						  "; glibc: label %" PRId64 ", boundary at start %d, at end %d",
						  zones[z], u, t, start, end, label_us, label, libc_boundary(unit, start),
						  libc_boundary(unit, end));
					failures++;
				}
			}
		}
		free(points);
		tz_free(zone);
	}
}

/* ---- freshness ------------------------------------------------------------------------ */

static tally_result *run_ok(tally_store *store, const char *tenant_name, const tally_query *q)
{
	char err[TALLY_ERRMSG_SIZE] = "";
	tally_result *res = NULL;
	int rc = tally_query_run(store, tenant_name, q, &res, err);
	char desc[4096];
	query_describe(tenant_name, q, desc, sizeof(desc));
	cr_assert_eq(rc, 0, "query %s: %s (%s)", desc, tally_strerror(rc), err);
	cr_assert_not_null(res);
	return res;
}

/* The row of res whose bucket holds t (NULL if none). */
static const tally_row *row_at(const tally_result *res, int64_t t)
{
	for (size_t i = 0; i < res->row_count; i++)
		if (res->rows[i].bucket_start_us <= t && t < res->rows[i].bucket_end_us)
			return &res->rows[i];
	return NULL;
}

static void expect_fresh(env *v, tenant *t, const char *when)
{
	static const int buckets[] = {TALLY_BUCKET_NONE, TALLY_BUCKET_MINUTE, TALLY_BUCKET_HOUR, TALLY_BUCKET_DAY};
	tenant_seal(t);
	rowset exp = {0};
	for (size_t i = 0; i < COUNT_OF(buckets); i++) {
		tally_query q;
		memset(&q, 0, sizeof(q));
		q.from_us = unit_floor(TZ_MINUTE, NOW_US) - 2 * DAY_US;
		q.to_us = NOW_US + 5 * MINUTE_US;
		q.bucket = buckets[i];
		q.quantile_count = 1;
		q.quantiles[0] = 0.5;
		q.distinct_users = true;
		tally_result *res = run_ok(v->store, t->name, &q);
		oracle_eval(t, &q, &exp);
		char msg[8192];
		bool ok = result_matches(res, &exp, &q, msg, sizeof(msg));
		cr_expect(ok, "%s, bucket %s: %s", when, BUCKET_NAMES[buckets[i]], msg);
		/* The newest event is in the bucket holding it. */
		const ev *newest = &t->acc[t->acc_count - 1];
		const tally_row *row = row_at(res, newest->time_us);
		cr_assert_not_null(row, "%s, bucket %s: no row holds the event just ingested", when, BUCKET_NAMES[buckets[i]]);
		if (buckets[i] == TALLY_BUCKET_MINUTE) {
			cr_expect_eq(row->bucket_start_us, unit_floor(TZ_MINUTE, NOW_US), "%s", when);
			cr_expect_eq(row->bucket_end_us, unit_floor(TZ_MINUTE, NOW_US) + MINUTE_US, "%s", when);
		}
		tally_result_free(res);
	}
	/* A range holding only the newest event. */
	const ev *newest = &t->acc[t->acc_count - 1];
	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = newest->time_us;
	q.to_us = newest->time_us + 1;
	tally_result *res = run_ok(v->store, t->name, &q);
	cr_assert_eq(res->row_count, 1, "%s: one row for [t, t+1)", when);
	cr_expect_eq(res->rows[0].count, 1, "%s", when);
	cr_expect_eq(res->rows[0].tokens_in, newest->tokens_in, "%s", when);
	cr_expect_eq(res->rows[0].cost_micros, newest->cost_micros, "%s", when);
	tally_result_free(res);
	free(exp.rows);
}

/* Description: an acknowledged event is counted by the very next query, in
 * NONE, MINUTE, HOUR and DAY buckets (the current minute included), while
 * it is only in the memtable, after a flush, after another event lands in
 * the fresh memtable, and after a reopen. */
Test(query, fresh_events_are_counted_at_once)
{
	seed_init("fresh_events_are_counted_at_once");
	env v;
	env_open(&v, "query-fresh", NOW_US, 0);
	tenant t;
	tenant_init(&t, "fresh", 0.2);
	int64_t bursts[1] = {NOW_US - 10 * MINUTE_US};
	tenant_generate(&t, 203, NOW_US - 3 * DAY_US, NOW_US - MINUTE_US, bursts, 1);
	ingest_range(&v, &t, 0, 200);
	env_flush(&v);
	/* Three more, one at a time, each within NOW's minute. */
	t.gen[200].time_us = NOW_US - SECOND_US;
	t.gen[201].time_us = NOW_US;
	t.gen[202].time_us = unit_floor(TZ_MINUTE, NOW_US);
	ingest_range(&v, &t, 200, 201);
	expect_fresh(&v, &t, "in the memtable only");
	env_flush(&v);
	expect_fresh(&v, &t, "after a flush");
	ingest_range(&v, &t, 201, 202);
	expect_fresh(&v, &t, "in a fresh memtable after a flush");
	env_reopen(&v);
	expect_fresh(&v, &t, "after a reopen");
	ingest_range(&v, &t, 202, 203);
	expect_fresh(&v, &t, "at the minute's first microsecond");
	tenant_free(&t);
	env_close(&v);
	zones_free();
}

/* The answer to q equals the oracle's; returns the result for more checks. */
static tally_result *expect_oracle(env *v, tenant *t, const tally_query *q, const char *when)
{
	tenant_seal(t);
	rowset exp = {0};
	tally_result *res = run_ok(v->store, t->name, q);
	oracle_eval(t, q, &exp);
	char msg[8192];
	bool ok = result_matches(res, &exp, q, msg, sizeof(msg));
	char desc[4096];
	query_describe(t->name, q, desc, sizeof(desc));
	cr_expect(ok, "%s: %s: %s", when, desc, msg);
	free(exp.rows);
	return res;
}

/* Description: a dashboard range ("from a whole day or hour until the end of
 * this minute") is answered from rollup cells alone. A source (segment file
 * section or memtable) with no event at or after `to` answers the last day
 * from its day cells, not from the hours and minutes of its groups; one with
 * an event after `to` in that day still answers exactly to the minute. Each
 * step is checked against the oracle, and the minute cells read say which
 * way the engine went. */
Test(query, sources_ending_before_to_answer_the_last_day_from_coarse_cells)
{
	seed_init("sources_ending_before_to_answer_the_last_day_from_coarse_cells");
	env v;
	env_open(&v, "query-edges", NOW_US, 0);
	tenant t;
	tenant_init(&t, "edges", 0.2);
	/* `to` is 30 minutes into an hour, two hours back: whole minutes of
	 * that hour and whole hours of that day lie before it. */
	const int64_t to = unit_floor(TZ_HOUR, NOW_US) - 2 * HOUR_US + 30 * MINUTE_US;
	tenant_generate(&t, 2003, to - 3 * DAY_US, to - 1, NULL, 0);
	t.gen[2000].time_us = to;               /* later, one by one */
	t.gen[2001].time_us = to + MINUTE_US;
	t.gen[2002].time_us = to - 1;
	ingest_range(&v, &t, 0, 1000);
	env_flush(&v);
	ingest_range(&v, &t, 1000, 2000);       /* a file and a memtable, both before `to` */

	tally_query day, agents;
	memset(&day, 0, sizeof(day));
	day.from_us = unit_floor(TZ_DAY, to) - 2 * DAY_US;
	day.to_us = to;
	day.bucket = TALLY_BUCKET_DAY;
	day.distinct_users = true;
	memset(&agents, 0, sizeof(agents));
	agents.from_us = unit_floor(TZ_HOUR, to) - 2 * DAY_US;
	agents.to_us = to;
	agents.bucket = TALLY_BUCKET_NONE;
	agents.group_by = 1u << TALLY_DIM_AGENT;
	agents.quantile_count = 1;
	agents.quantiles[0] = 0.95;

	tally_result *res = expect_oracle(&v, &t, &day, "every source ends before to");
	cr_expect_eq(res->cells_minute, 0, "no source read minute cells");
	cr_expect_eq(res->raw_rows, 0);
	tally_result_free(res);
	res = expect_oracle(&v, &t, &agents, "every source ends before to");
	cr_expect_eq(res->cells_minute, 0);
	tally_result_free(res);

	/* An event at `to` itself: the memtable now holds one the range must
	 * leave out, so it answers to the minute. */
	ingest_range(&v, &t, 2000, 2001);
	res = expect_oracle(&v, &t, &day, "the memtable has an event at to");
	cr_expect_gt(res->cells_minute, 0, "the memtable read its minutes");
	tally_result_free(res);
	res = expect_oracle(&v, &t, &agents, "the memtable has an event at to");
	cr_expect_gt(res->cells_minute, 0);
	tally_result_free(res);

	/* The same from a segment file, with a later one beside it. */
	ingest_range(&v, &t, 2001, 2002);
	env_flush(&v);
	res = expect_oracle(&v, &t, &day, "a file has events after to");
	cr_expect_gt(res->cells_minute, 0);
	tally_result_free(res);

	/* A fresh memtable whose one event is just before `to`: it alone may
	 * take its day cells (exact either way). */
	ingest_range(&v, &t, 2002, 2003);
	res = expect_oracle(&v, &t, &day, "a fresh memtable before to");
	tally_result_free(res);
	res = expect_oracle(&v, &t, &agents, "a fresh memtable before to");
	tally_result_free(res);
	/* A range whose start is not a whole day: the memtable and the last
	 * file start after it, the first file does not. */
	agents.from_us = to - 6 * HOUR_US - 30 * MINUTE_US;
	res = expect_oracle(&v, &t, &agents, "from within a day");
	tally_result_free(res);

	tenant_free(&t);
	env_close(&v);
	zones_free();
}

/* Description: a query that groups by far fewer dimensions than a rollup
 * group has merges a segment file's day cells projected to those
 * dimensions (made once per chunk and cached): by agent it reads at most
 * one cell per (day, agent) of the file, exactly as the oracle says,
 * status counts and quantiles included. Counting distinct users needs the
 * cells' users, so that query reads every cell. */
Test(query, fewer_dimensions_merge_projected_cells)
{
	seed_init("fewer_dimensions_merge_projected_cells");
	env v;
	env_open(&v, "query-proj", NOW_US, 0);
	tenant t;
	tenant_init(&t, "proj", 0.2);
	const int64_t to = unit_floor(TZ_DAY, NOW_US);
	tenant_generate(&t, 3000, to - 4 * DAY_US, to - 1, NULL, 0);
	ingest_range(&v, &t, 0, 3000);
	env_flush(&v);

	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = to - 4 * DAY_US;
	q.to_us = to;
	q.bucket = TALLY_BUCKET_DAY;
	q.group_by = 1u << TALLY_DIM_AGENT;
	q.quantile_count = 2;
	q.quantiles[0] = 0.5;
	q.quantiles[1] = 0.99;
	tally_result *res = expect_oracle(&v, &t, &q, "by agent");
	uint64_t projected = res->cells_day + res->cells_hour;
	cr_expect_gt(projected, 0);
	cr_expect_leq(projected, res->row_count, "one cell per (day, agent) row: %" PRIu64 " cells, %zu rows",
		      projected, res->row_count);
	tally_result_free(res);
	/* Again: the cached projection gives the same answer. */
	res = expect_oracle(&v, &t, &q, "by agent, cached");
	cr_expect_eq(res->cells_day + res->cells_hour, projected);
	tally_result_free(res);

	q.group_by = (1u << TALLY_DIM_AGENT) | (1u << TALLY_DIM_STATUS);
	res = expect_oracle(&v, &t, &q, "by agent and status");
	cr_expect_leq(res->cells_day + res->cells_hour, res->row_count);
	tally_result_free(res);

	q.group_by = 1u << TALLY_DIM_AGENT;
	q.distinct_users = true;
	res = expect_oracle(&v, &t, &q, "by agent, distinct users");
	cr_expect_gt(res->cells_day + res->cells_hour, projected, "every cell: users are not projected");
	tally_result_free(res);

	tenant_free(&t);
	env_close(&v);
	zones_free();
}

/* ---- restart and crash ------------------------------------------------------------------- */

typedef struct snapshot {
	tally_row *rows;
	size_t count;
	bool truncated;
	char *bytes; /* group strings */
} snapshot;

static snapshot snapshot_take(const tally_result *res)
{
	snapshot s = {.count = res->row_count, .truncated = res->truncated};
	size_t total = 1;
	for (size_t i = 0; i < res->row_count; i++)
		for (int d = 0; d < TALLY_DIM_COUNT; d++)
			total += res->rows[i].group[d].len;
	s.rows = xcalloc(res->row_count, sizeof(tally_row));
	s.bytes = xcalloc(total, 1);
	size_t at = 0;
	for (size_t i = 0; i < res->row_count; i++) {
		s.rows[i] = res->rows[i];
		for (int d = 0; d < TALLY_DIM_COUNT; d++) {
			tally_str g = res->rows[i].group[d];
			if (g.len)
				memcpy(s.bytes + at, g.ptr, g.len);
			s.rows[i].group[d] = (tally_str){s.bytes + at, g.len};
			at += g.len;
		}
	}
	return s;
}

static void snapshot_free(snapshot *s)
{
	free(s->rows);
	free(s->bytes);
}

/* Bit-for-bit equality of two answers to q (quantile doubles by their bytes). */
static void snapshot_expect_equal(const snapshot *before, const snapshot *after, const tally_query *q, size_t query_index,
				  const char *when)
{
	cr_assert_eq(after->count, before->count, "query %zu %s: %zu rows, before %zu", query_index, when, after->count,
		     before->count);
	cr_expect_eq(after->truncated, before->truncated, "query %zu %s: truncated", query_index, when);
	for (size_t i = 0; i < before->count; i++) {
		const tally_row *a = &before->rows[i], *b = &after->rows[i];
		bool same = a->bucket_start_us == b->bucket_start_us && a->bucket_end_us == b->bucket_end_us &&
			    a->count == b->count && a->tokens_in == b->tokens_in && a->tokens_out == b->tokens_out &&
			    a->cost_micros == b->cost_micros && a->duration_ms_sum == b->duration_ms_sum &&
			    a->duration_ms_min == b->duration_ms_min && a->duration_ms_max == b->duration_ms_max &&
			    memcmp(a->status_count, b->status_count, sizeof(a->status_count)) == 0 &&
			    memcmp(a->quantile_ms, b->quantile_ms, q->quantile_count * sizeof(double)) == 0 &&
			    (!q->distinct_users || a->distinct_users == b->distinct_users);
		for (int d = 0; d < TALLY_DIM_COUNT; d++)
			same = same && str_eq(a->group[d], b->group[d]);
		if (!same) {
			char x[2048], y[2048];
			row_format(a, q, x, sizeof(x));
			row_format(b, q, y, sizeof(y));
			cr_assert_fail("seed=%llu query %zu %s: row %zu differs\n  before %s\n  after  %s",
				       (unsigned long long)test_seed, query_index, when, i, x, y);
		}
	}
}

#define RESTART_QUERIES_MAX 32

/* The fixed queries of the restart tests. */
static size_t restart_queries(tally_query *out)
{
	static const int buckets[] = {TALLY_BUCKET_NONE, TALLY_BUCKET_MINUTE, TALLY_BUCKET_HOUR, TALLY_BUCKET_DAY,
				      TALLY_BUCKET_MONTH};
	static const char *const zones[] = {NULL, "Europe/Paris", "Asia/Kathmandu"};
	size_t n = 0;
	for (size_t b = 0; b < COUNT_OF(buckets); b++) {
		for (size_t z = 0; z < COUNT_OF(zones); z++) {
			tally_query *q = &out[n++];
			memset(q, 0, sizeof(*q));
			q->bucket = buckets[b];
			q->time_zone = zones[z];
			q->from_us = NOW_US - 33 * DAY_US - 12345;
			q->to_us = NOW_US + HOUR_US;
			if (buckets[b] == TALLY_BUCKET_MINUTE)
				q->from_us = NOW_US - 26 * HOUR_US - 7;
			q->group_by = (1u << TALLY_DIM_COUNT) - 1;
			q->quantile_count = 5;
			q->quantiles[0] = 0, q->quantiles[1] = 0.5, q->quantiles[2] = 0.9;
			q->quantiles[3] = 0.99, q->quantiles[4] = 1;
			q->distinct_users = true;
		}
	}
	/* Ungrouped: more than USET_EXACT_MAX users (the HLL state). */
	tally_query *q = &out[n++];
	memset(q, 0, sizeof(*q));
	q->from_us = NOW_US - 34 * DAY_US;
	q->to_us = NOW_US + HOUR_US;
	q->quantile_count = 3;
	q->quantiles[0] = 0.01, q->quantiles[1] = 0.5, q->quantiles[2] = 0.999;
	q->distinct_users = true;
	/* Top-N by an estimate. */
	q = &out[n++];
	*q = out[n - 2];
	q->bucket = TALLY_BUCKET_DAY;
	q->group_by = 1u << TALLY_DIM_MODEL;
	q->order_by_agg = true;
	q->order_agg = TALLY_AGG_QUANTILE;
	q->order_quantile = 1;
	q->descending = true;
	q->limit = 10;
	q = &out[n++];
	*q = out[n - 2];
	q->order_agg = TALLY_AGG_DISTINCT_USERS;
	q->time_zone = "America/New_York";
	cr_assert_leq(n, RESTART_QUERIES_MAX);
	return n;
}

/* Ingests the restart data set (in `parts` steps with flushes/compaction
 * between them when mixed), snapshots every fixed query, checks it against
 * the oracle, closes without a flush, reopens and demands the same answers
 * bit for bit. */
static void restart_test(const char *name, bool mixed)
{
	seed_init(name);
	env v;
	env_open(&v, mixed ? "query-restart-mixed" : "query-restart", NOW_US, 0);
	tenant t[2];
	tenant_init(&t[0], "acme", 0.95);
	tenant_init(&t[1], "globex", 0.2);
	int64_t bursts[16];
	size_t burst_count = burst_centres(bursts);
	tenant_generate(&t[0], 10000, NOW_US - 34 * DAY_US, NOW_US, bursts, burst_count);
	tenant_generate(&t[1], 600, NOW_US - 34 * DAY_US, NOW_US, bursts, burst_count);
	if (mixed) {
		ingest_range(&v, &t[0], 0, 3000);
		ingest_range(&v, &t[1], 0, 200);
		env_flush(&v);
		ingest_range(&v, &t[0], 3000, 6000);
		env_flush(&v);
		env_compact(&v);
		ingest_range(&v, &t[0], 6000, 8000);
		ingest_range(&v, &t[1], 200, 400);
		env_flush(&v);
		ingest_range(&v, &t[0], 8000, 10000);
		ingest_range(&v, &t[1], 400, 600);
	} else {
		ingest_range(&v, &t[0], 0, 10000);
		ingest_range(&v, &t[1], 0, 600);
	}
	tally_stats st;
	cr_assert_eq(tally_store_stats(v.store, &st), 0);
	cr_assert_gt(st.events_memtable, 0);
	if (!mixed)
		cr_assert_eq(st.segment_rows, 0, "nothing flushed");
	for (int i = 0; i < 2; i++)
		tenant_seal(&t[i]);
	cr_assert_eq(t[0].acc_count, 10000);

	tally_query queries[RESTART_QUERIES_MAX];
	size_t query_count = restart_queries(queries);
	snapshot before[2][RESTART_QUERIES_MAX];
	rowset exp = {0};
	int failures = 0;
	for (int i = 0; i < 2; i++) {
		for (size_t k = 0; k < query_count; k++) {
			tally_result *res = run_ok(v.store, t[i].name, &queries[k]);
			before[i][k] = snapshot_take(res);
			tally_result_free(res);
			failures += !check_query(v.store, t[i].name, &t[i], &queries[k], (int)k, &exp);
		}
	}
	cr_expect_eq(failures, 0, "seed=%llu: %d answers differ from the oracle (details on stderr)",
		     (unsigned long long)test_seed, failures);
	/* The ungrouped query of acme has more users than the exact set holds. */
	cr_assert_eq(before[0][15].count, 1);
	cr_expect_gt(before[0][15].rows[0].distinct_users, USER_EXACT_MAX);

	env_reopen(&v); /* tally_store_close does not flush: the memtable replays from the WAL */
	cr_assert_eq(tally_store_stats(v.store, &st), 0);
	cr_expect_gt(st.events_memtable, 0, "the memtable came back from the WAL");
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 2; i++) {
			for (size_t k = 0; k < query_count; k++) {
				tally_result *res = run_ok(v.store, t[i].name, &queries[k]);
				snapshot after = snapshot_take(res);
				tally_result_free(res);
				snapshot_expect_equal(&before[i][k], &after, &queries[k], k,
						      round == 0 ? "after reopen" : "after a second reopen");
				snapshot_free(&after);
			}
		}
		env_reopen(&v);
	}
	for (int i = 0; i < 2; i++)
		for (size_t k = 0; k < query_count; k++)
			snapshot_free(&before[i][k]);
	free(exp.rows);
	for (int i = 0; i < 2; i++)
		tenant_free(&t[i]);
	env_close(&v);
	zones_free();
}

/* Description: every event only in the memtable; the store is closed
 * without a flush (as a crash leaves it: the WAL holds everything) and
 * reopened; every fixed query (every bucket, three zones, all dims, five
 * quantiles, distinct users exact and HLL, top-N) answers bit for bit as
 * before, twice. */
Test(query, restart_replays_memtable_bit_for_bit)
{
	restart_test("restart_replays_memtable_bit_for_bit", false);
}

/* Description: the same over flushed, compacted and memtable events. */
Test(query, restart_mixed_state_bit_for_bit)
{
	restart_test("restart_mixed_state_bit_for_bit", true);
}

/* ---- tenant isolation --------------------------------------------------------------------- */

/* Description: two tenants with the same dimension values and the same
 * event ids (some with identical payloads): every random query of each
 * matches the oracle of that tenant alone, listings of one never show the
 * other's events, an unknown tenant has no rows and no events, and a
 * malformed tenant name is TALLY_E_TENANT. */
Test(query, tenants_are_isolated)
{
	seed_init("tenants_are_isolated");
	nx_values_init();
	env v;
	env_open(&v, "query-isolation", NOW_US, 0);
	tenant t[2];
	tenant_init(&t[0], "alpha", 0.2);
	tenant_init(&t[1], "beta", 0.2);
	/* The same dictionaries for both. */
	memcpy((char *)&t[1] + offsetof(tenant, projects), (char *)&t[0] + offsetof(tenant, projects),
	       offsetof(tenant, large_user_share) - offsetof(tenant, projects));
	int64_t bursts[16];
	size_t burst_count = burst_centres(bursts);
	int64_t data_lo = NOW_US - 30 * DAY_US, data_hi = NOW_US;
	tenant_generate(&t[0], 1500, data_lo, data_hi, bursts, burst_count);
	tenant_generate(&t[1], 1500, data_lo, data_hi, bursts, burst_count);
	for (size_t g = 0; g < 1500; g++) {
		ev *b = &t[1].gen[g];
		const ev *a = &t[0].gen[g];
		memcpy(b->id, a->id, sizeof(b->id)); /* the same ids */
		b->id_len = a->id_len;
		if (g % 3 == 0)
			*b = *a; /* the same event, byte for byte */
		else if (g % 3 == 1)
			b->time_us = a->time_us; /* same time, other payload */
	}
	ingest_range(&v, &t[0], 0, 700);
	ingest_range(&v, &t[1], 0, 900);
	env_flush(&v);
	ingest_range(&v, &t[1], 900, 1200);
	ingest_range(&v, &t[0], 700, 1100);
	env_flush(&v);
	env_compact(&v);
	ingest_range(&v, &t[0], 1100, 1500);
	ingest_range(&v, &t[1], 1200, 1500);
	for (int i = 0; i < 2; i++) {
		tenant_seal(&t[i]);
		cr_assert_eq(t[i].acc_count, 1500);
	}
	int failures = 0;
	rowset exp = {0};
	static qbuild b;
	for (int c = 0; c < 300; c++) {
		int i = c % 3 == 2 ? 1 : 0;
		random_query(&b, &t[i], data_lo, data_hi);
		failures += !check_query(v.store, t[i].name, &t[i], &b.q, c, &exp);
		if (c % 10 == 0) /* unknown tenants: nothing */
			failures += !check_query(v.store, "gamma", NULL, &b.q, c, &exp);
	}
	/* Whole listings of each tenant, and random ones. */
	for (int i = 0; i < 2; i++) {
		tally_list_request req = {.from_us = 0, .to_us = INT64_MAX, .limit = 500};
		failures += !check_listing(v.store, t[i].name, &t[i], req, 1000 + i);
	}
	for (int c = 0; c < 10; c++)
		failures += !random_listing(v.store, &t[c % 2], c, data_lo, data_hi);
	tally_list_request all = {.from_us = 0, .to_us = INT64_MAX, .limit = 100};
	failures += !check_listing(v.store, "gamma", NULL, all, 2000);
	cr_expect_eq(failures, 0, "seed=%llu: %d cases differ from the oracle (details on stderr)",
		     (unsigned long long)test_seed, failures);

	/* Malformed tenant names. */
	char too_long[TALLY_TENANT_SIZE_MAX + 2];
	memset(too_long, 'a', sizeof(too_long) - 1);
	too_long[sizeof(too_long) - 1] = '\0';
	const char *const bad_names[] = {"bad tenant!", "", too_long, "alpha/../beta", "al\xc3\xa9"};
	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = data_lo;
	q.to_us = data_hi;
	for (size_t k = 0; k < COUNT_OF(bad_names); k++) {
		tally_result *res = NULL;
		char err[TALLY_ERRMSG_SIZE] = "";
		cr_expect_eq(tally_query_run(v.store, bad_names[k], &q, &res, err), TALLY_E_TENANT, "query, tenant \"%s\"",
			     bad_names[k]);
		cr_expect_null(res);
		char next[TALLY_CURSOR_SIZE] = "";
		list_ctx ctx = {0};
		err[0] = '\0';
		cr_expect_eq(tally_list_events(v.store, bad_names[k], &all, list_collect, &ctx, next, err), TALLY_E_TENANT,
			     "listing, tenant \"%s\"", bad_names[k]);
		cr_expect_eq(ctx.page_count, 0);
	}
	free(exp.rows);
	for (int i = 0; i < 2; i++)
		tenant_free(&t[i]);
	env_close(&v);
	zones_free();
}

/* ---- bad queries ----------------------------------------------------------------------------- */

static void expect_invalid(tally_store *store, const tally_query *q, const char *what)
{
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_query_run(store, "acme", q, &res, err);
	cr_expect_eq(rc, TALLY_E_INVALID, "%s: returned %d (%s), expected TALLY_E_INVALID", what, rc, tally_strerror(rc));
	cr_expect_neq(err[0], '\0', "%s: errmsg is empty", what);
	cr_expect_null(res, "%s: *out is not NULL", what);
	if (rc == 0)
		tally_result_free(res);
}

static void expect_valid(tally_store *store, const tally_query *q, const char *what)
{
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_query_run(store, "acme", q, &res, err);
	cr_expect_eq(rc, 0, "%s: returned %s (%s), expected 0", what, tally_strerror(rc), err);
	if (rc == 0)
		tally_result_free(res);
}

/* Description: every malformed query is TALLY_E_INVALID with a message and
 * no result, and the limits themselves are accepted; dimension, status and
 * aggregate names; every malformed listing request is TALLY_E_INVALID with
 * its exact message and delivers nothing. */
Test(query, bad_queries_are_invalid)
{
	env v;
	env_open(&v, "query-invalid", NOW_US, 0);
	tenant t;
	rng_state = 1;
	tenant_init(&t, "acme", 0.0);
	tenant_generate(&t, 50, NOW_US - 2 * DAY_US, NOW_US, NULL, 0);
	ingest_range(&v, &t, 0, 50);

	static tally_str many[TALLY_FILTER_VALUES_MAX + 1];
	nx_values_init();
	for (int i = 0; i < TALLY_FILTER_VALUES_MAX; i++)
		many[i] = str_of(NX_VALUES[i]);
	many[TALLY_FILTER_VALUES_MAX] = str_of("web");
	tally_str web = str_of("web");
	tally_filter filters[TALLY_FILTERS_MAX + 1];
	for (int i = 0; i <= TALLY_FILTERS_MAX; i++)
		filters[i] = (tally_filter){.dim = TALLY_DIM_PROJECT, .values = many, .value_count = TALLY_FILTER_VALUES_MAX + 1};

	tally_query base;
	memset(&base, 0, sizeof(base));
	base.from_us = NOW_US - DAY_US;
	base.to_us = NOW_US;
	base.bucket = TALLY_BUCKET_HOUR;
	base.group_by = 1u << TALLY_DIM_PROJECT;
	base.quantile_count = 1;
	base.quantiles[0] = 0.5;
	expect_valid(v.store, &base, "the base query");

	tally_query q;
#define MUTATE(what, ...)                              \
	do {                                           \
		q = base;                              \
		__VA_ARGS__;                           \
		expect_invalid(v.store, &q, what);     \
	} while (0)
#define MUTATE_VALID(what, ...)                        \
	do {                                           \
		q = base;                              \
		__VA_ARGS__;                           \
		expect_valid(v.store, &q, what);       \
	} while (0)
	MUTATE("from == to", q.to_us = q.from_us);
	MUTATE("from > to", q.to_us = q.from_us - 1);
	MUTATE("range one microsecond over the maximum", q.bucket = TALLY_BUCKET_NONE,
	       q.from_us = q.to_us - TALLY_QUERY_RANGE_MAX_US - 1);
	MUTATE_VALID("range exactly the maximum, day buckets", q.bucket = TALLY_BUCKET_DAY,
		     q.from_us = q.to_us - TALLY_QUERY_RANGE_MAX_US);
	MUTATE("minute buckets over a year", q.bucket = TALLY_BUCKET_MINUTE, q.from_us = q.to_us - 366 * DAY_US);
	MUTATE("100001 minute buckets", q.bucket = TALLY_BUCKET_MINUTE, q.to_us = unit_floor(TZ_MINUTE, NOW_US),
	       q.from_us = q.to_us - (TALLY_QUERY_BUCKETS_MAX + 1) * MINUTE_US);
	MUTATE_VALID("exactly 100000 minute buckets", q.bucket = TALLY_BUCKET_MINUTE,
		     q.to_us = unit_floor(TZ_MINUTE, NOW_US), q.from_us = q.to_us - TALLY_QUERY_BUCKETS_MAX * MINUTE_US);
	{ /* The message says by how much, to the microsecond. */
		q = base;
		q.bucket = TALLY_BUCKET_NONE;
		q.from_us = q.to_us - TALLY_QUERY_RANGE_MAX_US - 1;
		tally_result *res = NULL;
		char err[TALLY_ERRMSG_SIZE] = "", want[TALLY_ERRMSG_SIZE];
		cr_expect_eq(tally_query_run(v.store, "acme", &q, &res, err), TALLY_E_INVALID);
		snprintf(want, sizeof(want),
			 "time range of %" PRId64 " us is longer than the data horizon (3660 days, %" PRId64
			 " us)", TALLY_QUERY_RANGE_MAX_US + 1, TALLY_QUERY_RANGE_MAX_US);
		cr_expect_str_eq(err, want);
	}
	/* The ends of time are valid ranges with nothing in them (the planner
	 * rounds them without overflow: make asan's UBSan aborts on one). */
	static const int edge_buckets[] = {TALLY_BUCKET_NONE, TALLY_BUCKET_HOUR, TALLY_BUCKET_DAY};
	for (size_t k = 0; k < COUNT_OF(edge_buckets); k++) {
		for (int end = 0; end < 2; end++) {
			q = base;
			q.bucket = edge_buckets[k];
			q.from_us = end ? INT64_MAX - DAY_US : INT64_MIN;
			q.to_us = end ? INT64_MAX : INT64_MIN + DAY_US;
			tally_result *res = NULL;
			char err[TALLY_ERRMSG_SIZE] = "";
			int rc = tally_query_run(v.store, "acme", &q, &res, err);
			cr_expect_eq(rc, 0, "bucket %d, end %d: %s", q.bucket, end, err);
			if (rc == 0) {
				cr_expect_eq(res->row_count, 0, "bucket %d, end %d", q.bucket, end);
				tally_result_free(res);
			}
		}
	}
	MUTATE("bucket kind 5", q.bucket = TALLY_BUCKET_MONTH + 1);
	MUTATE("bucket kind -1", q.bucket = -1);
	MUTATE("group_by bit 5", q.group_by = 1u << TALLY_DIM_COUNT);
	MUTATE("group_by bit 31", q.group_by = (1u << 31) | 1u);
	MUTATE("filter on dim 5", filters[0] = (tally_filter){TALLY_DIM_COUNT, &web, 1}, q.filters = filters,
	       q.filter_count = 1);
	MUTATE("filter on dim -1", filters[0] = (tally_filter){-1, &web, 1}, q.filters = filters, q.filter_count = 1);
	MUTATE("filter with no values", filters[0] = (tally_filter){TALLY_DIM_PROJECT, &web, 0}, q.filters = filters,
	       q.filter_count = 1);
	MUTATE("filter with 257 values", filters[0] = (tally_filter){TALLY_DIM_PROJECT, many, TALLY_FILTER_VALUES_MAX + 1},
	       q.filters = filters, q.filter_count = 1);
	MUTATE_VALID("filter with 256 values",
		     filters[0] = (tally_filter){TALLY_DIM_PROJECT, many + 1, TALLY_FILTER_VALUES_MAX}, q.filters = filters,
		     q.filter_count = 1);
	for (int i = 0; i <= TALLY_FILTERS_MAX; i++)
		filters[i] = (tally_filter){TALLY_DIM_PROJECT, many + 1, TALLY_FILTER_VALUES_MAX};
	MUTATE("17 filters", q.filters = filters, q.filter_count = TALLY_FILTERS_MAX + 1);
	MUTATE_VALID("16 filters (the same one)", q.filters = filters, q.filter_count = TALLY_FILTERS_MAX);
	MUTATE("time zone Mars/Olympus", q.time_zone = "Mars/Olympus");
	MUTATE("time zone ../../etc/passwd", q.time_zone = "../../etc/passwd");
	MUTATE("time zone /etc/localtime", q.time_zone = "/etc/localtime");
	MUTATE("time zone of 70 bytes", q.time_zone = "Europe/Parisxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	MUTATE("quantile -0.01", q.quantiles[0] = -0.01);
	MUTATE("quantile 1.0000001", q.quantiles[0] = 1.0000001);
	MUTATE("quantile NaN", q.quantiles[0] = NAN);
	MUTATE("quantile +inf", q.quantile_count = 2, q.quantiles[1] = INFINITY);
	MUTATE_VALID("quantiles 0 and 1", q.quantile_count = 2, q.quantiles[0] = 0, q.quantiles[1] = 1);
	MUTATE("9 quantiles", q.quantile_count = TALLY_QUANTILES_MAX + 1);
	MUTATE("limit over the maximum", q.limit = TALLY_QUERY_ROWS_MAX + 1);
	MUTATE_VALID("limit the maximum", q.limit = TALLY_QUERY_ROWS_MAX);
	MUTATE("order by aggregate 11", q.order_by_agg = true, q.order_agg = TALLY_AGG_DISTINCT_USERS + 1);
	MUTATE("order by aggregate -1", q.order_by_agg = true, q.order_agg = -1);
	MUTATE("order by quantile 1 of 1", q.order_by_agg = true, q.order_agg = TALLY_AGG_QUANTILE, q.order_quantile = 1);
	MUTATE("order by quantile without quantiles", q.order_by_agg = true, q.order_agg = TALLY_AGG_QUANTILE,
	       q.quantile_count = 0, q.order_quantile = 0);
	MUTATE_VALID("order by quantile 0 of 1", q.order_by_agg = true, q.order_agg = TALLY_AGG_QUANTILE,
		     q.order_quantile = 0);
#undef MUTATE
#undef MUTATE_VALID

	static const char *const dims[] = {"project", "agent", "model", "type", "status"};
	for (int d = 0; d < TALLY_DIM_COUNT; d++) {
		cr_expect_eq(tally_dim_parse(dims[d]), d, "tally_dim_parse(\"%s\")", dims[d]);
		cr_expect_str_eq(tally_dim_name(d), dims[d]);
	}
	cr_expect_eq(tally_dim_parse("project"), TALLY_DIM_PROJECT);
	cr_expect_eq(tally_dim_parse("nope"), TALLY_E_INVALID);
	cr_expect_eq(tally_dim_parse(""), TALLY_E_INVALID);
	cr_expect_eq(tally_dim_parse("projects"), TALLY_E_INVALID);
	for (int s = 0; s < TALLY_STATUS_COUNT; s++)
		cr_expect_str_eq(tally_status_name(s), STATUS_NAMES[s]);
	for (int a = 0; a <= TALLY_AGG_DISTINCT_USERS; a++) {
		const char *name = tally_agg_name(a);
		cr_assert_not_null(name, "tally_agg_name(%d)", a);
		cr_expect_neq(name[0], '\0', "tally_agg_name(%d)", a);
		for (int b = 0; b < a; b++)
			cr_expect_str_neq(tally_agg_name(b), name, "aggregates %d and %d share a name", a, b);
	}

	/* Listings: each malformed request is TALLY_E_INVALID with its exact
	 * message, and nothing is delivered. */
	tally_filter no_values = {.dim = TALLY_DIM_PROJECT, .values = &web, .value_count = 0};
	tally_filter unknown_dim = {.dim = TALLY_DIM_COUNT, .values = &web, .value_count = 1};
	tally_filter too_many = {.dim = TALLY_DIM_PROJECT, .values = many, .value_count = TALLY_FILTER_VALUES_MAX + 1};
	/* A value of 3 bytes at NULL: checking a row against it read address 0
	 * (the listing did not check values as a query does). */
	const tally_str holed[2] = {{"web", 3}, {NULL, 3}};
	tally_filter no_bytes = {.dim = TALLY_DIM_MODEL, .values = holed, .value_count = 2};
	const struct {
		tally_list_request req;
		const char *says;
	} lists[] = {
		{{.from_us = NOW_US, .to_us = NOW_US, .limit = 10}, "empty time range: from must be before to"},
		{{.from_us = 0, .to_us = NOW_US, .limit = 0}, "limit must be 1 to 10000 events"},
		{{.from_us = 0, .to_us = NOW_US, .limit = TALLY_LIST_EVENTS_MAX + 1}, "limit must be 1 to 10000 events"},
		{{.from_us = 0, .to_us = NOW_US, .limit = 10, .user = {NULL, 3}}, "user has no bytes"},
		{{.from_us = 0, .to_us = NOW_US, .limit = 10, .filters = filters, .filter_count = TALLY_FILTERS_MAX + 1},
		 "too many filters: 17 (at most 16)"},
		{{.from_us = 0, .to_us = NOW_US, .limit = 10, .filter_count = 1}, "filters missing"},
		{{.from_us = 0, .to_us = NOW_US, .limit = 10, .filters = &unknown_dim, .filter_count = 1},
		 "filter 0: unknown dimension 5"},
		{{.from_us = 0, .to_us = NOW_US, .limit = 10, .filters = &no_values, .filter_count = 1},
		 "filter on project: 0 values (1 to 256 allowed)"},
		{{.from_us = 0, .to_us = NOW_US, .limit = 10, .filters = &too_many, .filter_count = 1},
		 "filter on project: 257 values (1 to 256 allowed)"},
		{{.from_us = 0, .to_us = NOW_US, .limit = 10, .filters = &no_bytes, .filter_count = 1},
		 "filter on model: value 1 has no bytes"},
		{{.from_us = 0, .to_us = NOW_US, .limit = 10, .cursor = "not-a-cursor"}, "malformed cursor"},
	};
	for (size_t k = 0; k < COUNT_OF(lists); k++) {
		char next[TALLY_CURSOR_SIZE] = "x", err[TALLY_ERRMSG_SIZE] = "";
		list_ctx ctx = {0};
		cr_expect_eq(tally_list_events(v.store, "acme", &lists[k].req, list_collect, &ctx, next, err),
			     TALLY_E_INVALID, "listing %zu", k);
		cr_expect_str_eq(err, lists[k].says, "listing %zu", k);
		cr_expect_eq(ctx.page_count, 0, "listing %zu", k);
	}
	tenant_free(&t);
	env_close(&v);
}

/* ---- listings ---------------------------------------------------------------------------------- */

/* Description: tally_list_events pages with limits 1, 7 and 10000 over a
 * tenant whose events share times (ids decide, bytewise, with ids that are
 * prefixes of others and upper/lower case), across segments and the
 * memtable, with filters, a user and sub-ranges; every concatenation equals
 * the oracle; a garbage cursor, limit 0 and a limit over the maximum are
 * TALLY_E_INVALID. */
Test(query, list_events_pages_in_time_then_id_order)
{
	seed_init("list_events_pages_in_time_then_id_order");
	nx_values_init();
	env v;
	env_open(&v, "query-list", NOW_US, 0);
	tenant t;
	tenant_init(&t, "lister", 0.0);
	int64_t times[12];
	for (int i = 0; i < 11; i++)
		times[i] = NOW_US - (int64_t)rng_below(5 * DAY_US);
	qsort(times, 11, sizeof(int64_t), cmp_i64);
	times[11] = times[10] + 1; /* neighbours one microsecond apart */
	tenant_generate(&t, 600, NOW_US - 6 * DAY_US, NOW_US, NULL, 0);
	static const char *const prefixes[] = {"a", "a0", "ab", "A", "B", "b", "a/", "~", "0", "Zz"};
	for (size_t g = 0; g < t.gen_count; g++) {
		ev *e = &t.gen[g];
		e->time_us = times[rng_below(12)]; /* 600 events on 12 instants */
		/* Ids: a prefix, ':' (in no prefix, so ids are unique), the number
		 * in hex ("a:1" is a prefix of "a:1f"). */
		int n = snprintf(e->id, sizeof(e->id), "%s:%zx", prefixes[rng_below(COUNT_OF(prefixes))], g);
		e->id_len = (uint8_t)n;
	}
	ingest_range(&v, &t, 0, 250);
	env_flush(&v);
	ingest_range(&v, &t, 250, 400);
	env_flush(&v);
	env_compact(&v);
	ingest_range(&v, &t, 400, 520);
	env_flush(&v);
	ingest_range(&v, &t, 520, 600);
	tenant_seal(&t);
	cr_assert_eq(t.acc_count, 600);

	int failures = 0, c = 0;
	static const uint32_t limits[] = {1, 7, TALLY_LIST_EVENTS_MAX};
	tally_str user = str_of("u3");
	tally_str projects[2] = {str_of(PROJECTS[t.projects[0]]), str_of("nope")};
	tally_str errors[2] = {str_of("error"), str_of("timeout")};
	tally_filter f_project = {TALLY_DIM_PROJECT, projects, 2};
	tally_filter f_two[2] = {{TALLY_DIM_STATUS, errors, 2}, {TALLY_DIM_AGENT, NULL, 0}};
	tally_str agent = str_of(AGENTS[t.agents[0]]);
	f_two[1].values = &agent;
	f_two[1].value_count = 1;
	for (size_t l = 0; l < COUNT_OF(limits); l++) {
		tally_list_request req = {.from_us = INT64_MIN, .to_us = INT64_MAX, .limit = limits[l]};
		failures += !check_listing(v.store, t.name, &t, req, c++);
		req.filters = &f_project, req.filter_count = 1;
		failures += !check_listing(v.store, t.name, &t, req, c++);
		req.filters = f_two, req.filter_count = 2;
		failures += !check_listing(v.store, t.name, &t, req, c++);
		req.filters = NULL, req.filter_count = 0, req.user = user;
		failures += !check_listing(v.store, t.name, &t, req, c++);
		/* A sub-range starting and ending inside tie groups. */
		req.user = (tally_str){NULL, 0};
		req.from_us = times[3];
		req.to_us = times[11];
		failures += !check_listing(v.store, t.name, &t, req, c++);
		req.from_us = times[10];
		req.to_us = times[11]; /* one instant */
		failures += !check_listing(v.store, t.name, &t, req, c++);
	}
	for (int k = 0; k < 12; k++)
		failures += !random_listing(v.store, &t, c++, NOW_US - 6 * DAY_US, NOW_US);
	cr_expect_eq(failures, 0, "seed=%llu: %d listings differ from the oracle (details on stderr)",
		     (unsigned long long)test_seed, failures);

	/* Errors. */
	tally_list_request req = {.from_us = 0, .to_us = INT64_MAX, .limit = 5};
	char next[TALLY_CURSOR_SIZE];
	char err[TALLY_ERRMSG_SIZE];
	list_ctx ctx = {0};
	const char *const garbage[] = {"garbage", "not-a-cursor", "\xff\xfe\xfd", "zzzzzzzzzzzzzzzzzzzzzzzzzzzz", "!"};
	for (size_t k = 0; k < COUNT_OF(garbage); k++) {
		req.cursor = garbage[k];
		err[0] = '\0';
		ctx.page_count = 0;
		int rc = tally_list_events(v.store, t.name, &req, list_collect, &ctx, next, err);
		cr_expect_eq(rc, TALLY_E_INVALID, "cursor \"%s\": %s", garbage[k], tally_strerror(rc));
		cr_expect_neq(err[0], '\0', "cursor \"%s\": errmsg is empty", garbage[k]);
		cr_expect_eq(ctx.page_count, 0, "cursor \"%s\": events delivered", garbage[k]);
	}
	req.cursor = NULL;
	static const uint32_t bad_limits[] = {0, TALLY_LIST_EVENTS_MAX + 1};
	for (size_t k = 0; k < COUNT_OF(bad_limits); k++) {
		req.limit = bad_limits[k];
		err[0] = '\0';
		ctx.page_count = 0;
		int rc = tally_list_events(v.store, t.name, &req, list_collect, &ctx, next, err);
		cr_expect_eq(rc, TALLY_E_INVALID, "limit %u: %s", bad_limits[k], tally_strerror(rc));
		cr_expect_neq(err[0], '\0', "limit %u: errmsg is empty", bad_limits[k]);
		cr_expect_eq(ctx.page_count, 0, "limit %u: events delivered", bad_limits[k]);
	}
	tenant_free(&t);
	env_close(&v);
}

/* ---- distinct users at the exact/estimate boundary ------------------------------------------- */

/* Description: one UTC day with exactly 8192 distinct users (each twice,
 * one copy flushed, one in the memtable, so the exact sets of two sources
 * merge to exactly 8192) and the next with 8193: the first counts exactly
 * 8192 in DAY and NONE buckets, the second and both days together are
 * within 2%; every bucket and group matches the oracle before and after a
 * reopen. */
Test(query, distinct_users_exact_up_to_8192)
{
	seed_init("distinct_users_exact_up_to_8192");
	env v;
	env_open(&v, "query-distinct", NOW_US, 0);
	tenant t;
	tenant_init(&t, "users", 0.0);
	const size_t day1 = 2 * USER_EXACT_MAX, day2 = USER_EXACT_MAX + 1;
	tenant_generate(&t, day1 + day2, NOW_US - 3 * DAY_US, NOW_US, NULL, 0);
	int64_t d1 = unit_floor(TZ_DAY, NOW_US) - 3 * DAY_US, d2 = d1 + DAY_US;
	for (size_t g = 0; g < t.gen_count; g++) {
		ev *e = &t.gen[g];
		bool first_day = g < day1;
		unsigned user = first_day ? (unsigned)(g % USER_EXACT_MAX) : (unsigned)(g - day1);
		e->user_len = (uint8_t)snprintf(e->user, sizeof(e->user), "U%05u", user);
		e->time_us = (first_day ? d1 : d2) + (int64_t)rng_below(DAY_US);
	}
	ingest_range(&v, &t, 0, USER_EXACT_MAX);            /* day 1, first copies */
	ingest_range(&v, &t, day1, day1 + day2 / 2);        /* day 2, first half */
	env_flush(&v);
	ingest_range(&v, &t, USER_EXACT_MAX, day1);         /* day 1, second copies */
	ingest_range(&v, &t, day1 + day2 / 2, day1 + day2); /* day 2, second half */
	tenant_seal(&t);

	rowset exp = {0};
	int failures = 0;
	for (int round = 0; round < 2; round++) {
		tally_query q;
		memset(&q, 0, sizeof(q));
		q.distinct_users = true;
		q.quantile_count = 1;
		q.quantiles[0] = 0.5;
		q.from_us = d1;
		q.to_us = d2 + DAY_US;
		q.bucket = TALLY_BUCKET_DAY;
		tally_result *res = run_ok(v.store, t.name, &q);
		cr_assert_eq(res->row_count, 2);
		cr_expect_eq(res->rows[0].distinct_users, USER_EXACT_MAX, "8192 users are counted exactly");
		cr_expect(fabs((double)res->rows[1].distinct_users - 8193.0) <= 0.02 * 8193.0, "day 2: %" PRIu64,
			  res->rows[1].distinct_users);
		tally_result_free(res);
		q.bucket = TALLY_BUCKET_NONE;
		q.to_us = d2;
		res = run_ok(v.store, t.name, &q);
		cr_assert_eq(res->row_count, 1);
		cr_expect_eq(res->rows[0].distinct_users, USER_EXACT_MAX, "8192 users are counted exactly (NONE)");
		tally_result_free(res);
		static const int buckets[] = {TALLY_BUCKET_NONE, TALLY_BUCKET_HOUR, TALLY_BUCKET_DAY, TALLY_BUCKET_MONTH};
		for (size_t b = 0; b < COUNT_OF(buckets); b++) {
			for (uint32_t group_by = 0; group_by < 32; group_by += 9) {
				q.bucket = buckets[b];
				q.group_by = group_by;
				q.time_zone = b % 2 ? "Asia/Kolkata" : NULL;
				q.to_us = d2 + DAY_US;
				failures += !check_query(v.store, t.name, &t, &q, (int)(b * 100 + group_by), &exp);
				q.to_us = d2;
				failures += !check_query(v.store, t.name, &t, &q, (int)(b * 100 + group_by + 50), &exp);
			}
		}
		env_reopen(&v);
	}
	cr_expect_eq(failures, 0, "seed=%llu: %d answers differ from the oracle (details on stderr)",
		     (unsigned long long)test_seed, failures);
	free(exp.rows);
	tenant_free(&t);
	env_close(&v);
	zones_free();
}

/* ---- listing cursors are positions ------------------------------------------------------------- */

/* Description: a cursor names a position in (time, id) order, not an
 * offset: between pages the test ingests events before and after the last
 * delivered one, flushes, compacts and reopens the store; each page must be
 * the next events after the previous page's last one in the store as it is
 * now (new events after the position included, those before it not), and
 * the listing ends with "" exactly when none are left. */
Test(query, list_cursor_survives_ingest_flush_compaction_and_reopen)
{
	seed_init("list_cursor_survives_ingest_flush_compaction_and_reopen");
	env v;
	env_open(&v, "query-cursor", NOW_US, 0);
	tenant t;
	tenant_init(&t, "cursor", 0.0);
	const size_t base = 150, extra = 200;
	tenant_generate(&t, base + extra, NOW_US - 2 * DAY_US, NOW_US, NULL, 0);
	int64_t times[15];
	for (int i = 0; i < 15; i++)
		times[i] = NOW_US - (int64_t)rng_below(2 * DAY_US);
	for (size_t g = 0; g < base; g++)
		t.gen[g].time_us = times[rng_below(15)];
	ingest_range(&v, &t, 0, base / 2);
	env_flush(&v);
	ingest_range(&v, &t, base / 2, base);
	tenant_seal(&t);

	const uint32_t limit = 7;
	tally_list_request req = {.from_us = 0, .to_us = INT64_MAX, .limit = limit};
	char cursor[TALLY_CURSOR_SIZE] = "";
	char next[TALLY_CURSOR_SIZE];
	char err[TALLY_ERRMSG_SIZE];
	const ev **after = xcalloc(base + extra, sizeof(ev *));
	ev last;
	bool have_last = false;
	size_t next_extra = base, pages = 0, delivered = 0;
	for (;;) {
		/* The store's events after the last delivered one, now. */
		size_t n = 0;
		for (size_t i = 0; i < t.sorted_count; i++)
			if (!have_last || ev_cmp_time_id(&t.sorted[i], &last) > 0)
				after[n++] = &t.sorted[i];
		list_ctx ctx = {.expect = after, .expect_count = n};
		req.cursor = cursor;
		err[0] = '\0';
		int rc = tally_list_events(v.store, t.name, &req, list_collect, &ctx, next, err);
		cr_assert_eq(rc, 0, "page %zu: %s (%s)", pages, tally_strerror(rc), err);
		cr_assert(!ctx.bad, "seed=%llu page %zu: %s", (unsigned long long)test_seed, pages, ctx.why);
		cr_assert_leq(ctx.page_count, limit);
		pages++;
		delivered += ctx.page_count;
		if (ctx.page_count > 0) {
			last = *after[ctx.page_count - 1];
			have_last = true;
		}
		if (next[0] == '\0') {
			cr_expect_eq(ctx.page_count, n, "seed=%llu: the listing ended with %zu events left",
				     (unsigned long long)test_seed, n - ctx.page_count);
			break;
		}
		cr_assert_lt(pages, 200, "too many pages");
		cr_expect_neq(ctx.page_count, n, "page %zu delivered the last event but the cursor is not \"\"", pages);
		memcpy(cursor, next, sizeof(cursor));
		/* Change the store under the cursor. */
		switch (pages % 4) {
		case 0:
			env_flush(&v);
			break;
		case 1:
			env_compact(&v);
			break;
		case 2:
			env_reopen(&v);
			break;
		default:
			break;
		}
		if (have_last && next_extra + 3 <= base + extra) {
			ev *before_it = &t.gen[next_extra], *tied = &t.gen[next_extra + 1], *later = &t.gen[next_extra + 2];
			before_it->time_us = last.time_us - 1;                 /* before the position: never listed */
			tied->time_us = last.time_us;                          /* same time, id just after */
			tied->id_len = (uint8_t)snprintf(tied->id, sizeof(tied->id), "%.40s~%zu", last.id, next_extra);
			later->time_us = times[rng_below(15)] + 1;             /* anywhere */
			ingest_range(&v, &t, next_extra, next_extra + 3);
			next_extra += 3;
			tenant_seal(&t);
		}
	}
	fprintf(stderr, "test_query list cursor: %zu pages, %zu events delivered, %zu events in the store\n", pages,
		delivered, t.sorted_count);
	cr_expect_gt(next_extra, base + 30, "events were ingested between pages");
	free(after);
	tenant_free(&t);
	env_close(&v);
}

/* ---- queries while the background worker flushes and compacts ---------------------------------- */

/* Description: with the background worker on, a 64 KiB memtable limit and
 * compaction from two files, the worker freezes, flushes and compacts while
 * the test ingests 4,000 events in batches of 20; after every batch a
 * query over everything (and every tenth batch a grouped local-hour query
 * and a listing) matches the oracle: an acknowledged event is counted once,
 * whether it sits in the live memtable, a frozen one being written, or a
 * segment file being compacted. */
Test(query, exact_while_background_flushes_and_compacts)
{
	seed_init("exact_while_background_flushes_and_compacts");
	env v;
	env_open(&v, "query-background", NOW_US, 0);
	v.options.background = true;
	v.options.memtable_bytes_max = 64 << 10;
	v.options.compact_files_min = 2;
	env_reopen(&v);
	tenant t;
	tenant_init(&t, "busy", 0.3);
	int64_t bursts[16];
	size_t burst_count = burst_centres(bursts);
	const size_t total = 4000, batch = 20;
	tenant_generate(&t, total, NOW_US - 30 * DAY_US, NOW_US, bursts, burst_count);
	rowset exp = {0};
	int failures = 0;
	for (size_t at = 0; at < total; at += batch) {
		ingest_range(&v, &t, at, at + batch);
		tenant_seal(&t);
		tally_query q;
		memset(&q, 0, sizeof(q));
		q.from_us = NOW_US - 31 * DAY_US;
		q.to_us = NOW_US + MINUTE_US;
		q.quantile_count = 2;
		q.quantiles[0] = 0.5;
		q.quantiles[1] = 0.99;
		q.distinct_users = true;
		failures += !check_query(v.store, t.name, &t, &q, (int)(at / batch), &exp);
		if ((at / batch) % 10 == 9) {
			q.bucket = TALLY_BUCKET_HOUR;
			q.time_zone = "Australia/Lord_Howe";
			q.group_by = (1u << TALLY_DIM_PROJECT) | (1u << TALLY_DIM_STATUS);
			failures += !check_query(v.store, t.name, &t, &q, (int)(at / batch) + 1000, &exp);
			tally_list_request req = {.from_us = 0, .to_us = INT64_MAX, .limit = 997};
			failures += !check_listing(v.store, t.name, &t, req, (int)(at / batch));
		}
	}
	tally_stats st;
	cr_assert_eq(tally_store_stats(v.store, &st), 0);
	fprintf(stderr, "test_query background: %" PRIu64 " flushes, %" PRIu64 " compactions during the run\n",
		st.flush_count, st.compaction_count);
	cr_expect_gt(st.flush_count, 1, "the worker flushed while events arrived");
	cr_expect_gt(st.compaction_count, 0, "the worker compacted while events arrived");
	cr_expect_eq(failures, 0, "seed=%llu: %d answers differ from the oracle (details on stderr)",
		     (unsigned long long)test_seed, failures);
	free(exp.rows);
	tenant_free(&t);
	env_close(&v);
	zones_free();
}

/* Description: a query whose answer would hold more than
 * TALLY_QUERY_CELLS_MAX (bucket, group) rows before its limit is refused
 * with TALLY_E_LIMIT and a message (no partial result), and one just under
 * the bound answers, truncated to its limit. 20 projects x 50,256 minutes:
 * 1,005,120 rows grouped by project, 954,864 with one project filtered out. */
Test(query, too_many_result_cells_is_a_limit_error)
{
	enum { CELL_PROJECTS = 20, CELL_MINUTES = 50256, CELL_BATCH = 65536 };
	env v;
	env_open(&v, "query-cells-max", NOW_US, 0);
	static char ids[CELL_BATCH][16];
	static tally_event events[CELL_BATCH];
	static tally_ingest_result results[CELL_BATCH];
	static char projects[CELL_PROJECTS][8];
	for (int p = 0; p < CELL_PROJECTS; p++)
		snprintf(projects[p], sizeof(projects[p]), "p%02d", p);
	int64_t start = NOW_US - (int64_t)CELL_MINUTES * MINUTE_US;
	size_t total = (size_t)CELL_PROJECTS * CELL_MINUTES;
	for (size_t first = 0; first < total; first += CELL_BATCH) {
		size_t n = total - first < CELL_BATCH ? total - first : CELL_BATCH;
		for (size_t k = 0; k < n; k++) {
			size_t i = first + k;
			snprintf(ids[k], sizeof(ids[k]), "c%zu", i);
			memset(&events[k], 0, sizeof(events[k]));
			events[k].event_id = str_of(ids[k]);
			events[k].time_us = start + (int64_t)(i / CELL_PROJECTS) * MINUTE_US;
			events[k].type = str_of("llm.call");
			events[k].project = str_of(projects[i % CELL_PROJECTS]);
			events[k].duration_ms = 10;
		}
		int rc = tally_ingest(v.store, "acme", events, n, results);
		cr_assert_eq(rc, 0, "ingest: %s", tally_strerror(rc));
		for (size_t k = 0; k < n; k++)
			cr_assert_eq(results[k].code, TALLY_ACCEPTED, "event %zu", first + k);
	}
	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = start;
	q.to_us = NOW_US + MINUTE_US;
	q.bucket = TALLY_BUCKET_MINUTE;
	q.group_by = 1u << TALLY_DIM_PROJECT;
	tally_result *res = (tally_result *)&v; /* must be reset to NULL */
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_query_run(v.store, "acme", &q, &res, err);
	cr_expect_eq(rc, TALLY_E_LIMIT, "got %s (%s)", tally_strerror(rc), err);
	cr_expect_null(res);
	cr_expect_neq(strstr(err, "1000000"), NULL, "message: %s", err);

	tally_str kept[CELL_PROJECTS - 1];
	for (int p = 0; p < CELL_PROJECTS - 1; p++)
		kept[p] = str_of(projects[p]);
	tally_filter f = {TALLY_DIM_PROJECT, kept, CELL_PROJECTS - 1};
	q.filters = &f;
	q.filter_count = 1;
	err[0] = 0;
	rc = tally_query_run(v.store, "acme", &q, &res, err);
	cr_assert_eq(rc, 0, "got %s (%s)", tally_strerror(rc), err);
	cr_expect_eq(res->row_count, TALLY_QUERY_ROWS_MAX);
	cr_expect(res->truncated);
	cr_expect_eq(res->rows[0].bucket_start_us, start - start % MINUTE_US);
	cr_expect_eq(res->rows[0].count, 1);
	tally_result_free(res);
	env_close(&v);
}

/* A fresh directory and default options on a fault-injecting io whose
 * clock reads NOW_US; the caller adjusts v->options, then env_store_open. */
static void env_prepare(env *v, const char *name)
{
	memset(v, 0, sizeof(*v));
	test_dir_make(&v->dir, name);
	memcpy(live_dir, v->dir.path, sizeof(live_dir));
	v->fio = fault_io_create();
	cr_assert_not_null(v->fio);
	fault_io_clock_set_us(v->fio, NOW_US);
	tally_options_default(&v->options);
	v->options.io = fault_io_table(v->fio);
}

/* Description: a query is refused with TALLY_E_LIMIT and its message once
 * what it builds passes options.query_bytes_max, not only its count of
 * rows: 200 projects of two events each, 0 ms and 4,000,000,000 ms long,
 * make 200 accumulators whose duration sketches span nearly every bucket
 * (about 8.9 KB each, 1.8 MB in all), past a budget of 1 MiB, whether the
 * events are read from the memtable or from the flushed segment. The same
 * query without quantiles answers within it. (Without the budget, 2M such
 * events made 1M accumulators and about 9 GB; found by review.) */
Test(query, a_query_past_its_memory_budget_is_a_limit_error)
{
	enum { WIDE_PROJECTS = 200 };
	env v;
	env_prepare(&v, "query-bytes-max");
	v.options.background = false;
	v.options.query_bytes_max = 1u << 20;
	env_store_open(&v);
	static char ids[2 * WIDE_PROJECTS][16], projects[WIDE_PROJECTS][8];
	static tally_event events[2 * WIDE_PROJECTS];
	static tally_ingest_result results[2 * WIDE_PROJECTS];
	for (int i = 0; i < 2 * WIDE_PROJECTS; i++) {
		snprintf(ids[i], sizeof(ids[i]), "b%d", i);
		snprintf(projects[i / 2], sizeof(projects[i / 2]), "p%03d", i / 2);
		events[i] = (tally_event){.event_id = str_of(ids[i]), .time_us = NOW_US - HOUR_US,
					  .type = str_of("llm.call"), .project = str_of(projects[i / 2]),
					  .duration_ms = i % 2 ? 4000000000u : 0};
	}
	cr_assert_eq(tally_ingest(v.store, "acme", events, 2 * WIDE_PROJECTS, results), 0);
	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = NOW_US - DAY_US;
	q.to_us = NOW_US;
	q.bucket = TALLY_BUCKET_NONE;
	q.group_by = 1u << TALLY_DIM_PROJECT;
	for (int flushed = 0; flushed < 2; flushed++) {
		q.quantile_count = 1;
		q.quantiles[0] = 0.5;
		tally_result *res = (tally_result *)&v; /* must be reset to NULL */
		char err[TALLY_ERRMSG_SIZE] = "";
		int rc = tally_query_run(v.store, "acme", &q, &res, err);
		cr_expect_eq(rc, TALLY_E_LIMIT, "flushed %d: got %s (%s)", flushed, tally_strerror(rc), err);
		cr_expect_null(res);
		cr_expect_str_eq(err, "the answer needs more than 1048576 bytes of memory "
				      "(query_bytes_max): use coarser buckets, fewer group-by dimensions, "
				      "filters, or fewer quantiles and no distinct users");
		q.quantile_count = 0;
		rc = tally_query_run(v.store, "acme", &q, &res, err);
		cr_assert_eq(rc, 0, "flushed %d: %s", flushed, err);
		cr_expect_eq(res->row_count, WIDE_PROJECTS);
		for (uint32_t r = 0; r < res->row_count; r++)
			cr_expect_eq(res->rows[r].count, 2, "row %u", r);
		tally_result_free(res);
		cr_assert_eq(tally_flush(v.store), 0);
	}
	env_close(&v);
}

/* Waits (up to 5 s) for the live rollup bytes to differ from `from`;
 * returns them. */
static uint64_t rollup_bytes_after(tally_store *store, uint64_t from)
{
	tally_stats st;
	uint64_t now = from;
	for (int wait = 0; wait < 100 && now == from; wait++) {
		usleep(50 * 1000);
		cr_assert_eq(tally_store_stats(store, &st), 0);
		now = st.rollup_live_bytes;
	}
	return now;
}

/* Description: a store that only ingests builds no memtable rollup at all.
 * A tenant's first query reads from the rows what its rollup lacks (and
 * builds nothing itself); from then on the rollup thread keeps that
 * tenant's rollup current behind ingest, so later queries read no rows; a
 * tenant nobody queried still gets no rollup. Answers are exact throughout. */
Test(query, rollup_thread_keeps_queried_tenants_close_behind)
{
	env v;
	env_prepare(&v, "query-catch-up");
	v.options.background = true;
	v.options.query_rows_behind_max = 1500;
	env_store_open(&v);

	enum { CATCH_UP_EVENTS = 2000 };
	static char ids[CATCH_UP_EVENTS][16];
	static tally_event events[CATCH_UP_EVENTS];
	static tally_ingest_result results[CATCH_UP_EVENTS];
	for (int i = 0; i < CATCH_UP_EVENTS; i++) {
		snprintf(ids[i], sizeof(ids[i]), "w%d", i);
		memset(&events[i], 0, sizeof(events[i]));
		events[i].event_id = str_of(ids[i]);
		events[i].time_us = NOW_US - (int64_t)i * SECOND_US;
		events[i].type = str_of("tool.call");
		events[i].user = str_of(ids[i]);
	}
	cr_assert_eq(tally_ingest(v.store, "quiet", events, CATCH_UP_EVENTS / 2, results), 0);
	cr_assert_eq(tally_ingest(v.store, "acme", events, CATCH_UP_EVENTS / 2, results), 0);
	/* Ingest alone: no rollup, however long we wait (four ticks here). */
	usleep(4 * ROLLUP_CATCH_UP_TICK_MS * 1000);
	tally_stats st;
	cr_assert_eq(tally_store_stats(v.store, &st), 0);
	cr_assert_eq(st.rollup_live_bytes, 0);

	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = NOW_US - DAY_US;
	q.to_us = NOW_US + MINUTE_US;
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_query_run(v.store, "acme", &q, &res, err), 0, "%s", err);
	cr_expect_eq(res->rows[0].count, CATCH_UP_EVENTS / 2);
	cr_expect_eq(res->raw_rows, CATCH_UP_EVENTS / 2, "no rollup yet: every row read");
	tally_result_free(res);
	/* The rollup thread builds acme's rollup, without another query. */
	uint64_t built = rollup_bytes_after(v.store, 0);
	cr_assert_gt(built, 0);
	for (uint64_t b = 0; b != built;)
		built = rollup_bytes_after(v.store, b = built);
	cr_assert_eq(tally_query_run(v.store, "acme", &q, &res, err), 0, "%s", err);
	cr_expect_eq(res->rows[0].count, CATCH_UP_EVENTS / 2);
	cr_expect_eq(res->raw_rows, 0, "every row of acme is in its rollup");
	tally_result_free(res);
	/* More rows of acme: the thread rolls them up without a query. */
	cr_assert_eq(tally_ingest(v.store, "acme", events + CATCH_UP_EVENTS / 2, CATCH_UP_EVENTS / 2,
				  results),
		     0);
	uint64_t grown = rollup_bytes_after(v.store, built);
	cr_expect_gt(grown, built, "the rollup thread added acme's new rows (%" PRIu64 " bytes before)",
		     built);
	for (uint64_t b = 0; b != grown;)
		grown = rollup_bytes_after(v.store, b = grown);
	cr_assert_eq(tally_query_run(v.store, "acme", &q, &res, err), 0, "%s", err);
	cr_expect_eq(res->rows[0].count, CATCH_UP_EVENTS);
	cr_expect_eq(res->raw_rows, 0);
	tally_result_free(res);
	/* quiet was never queried: no rollup; its first query reads its rows. */
	cr_assert_eq(tally_query_run(v.store, "quiet", &q, &res, err), 0, "%s", err);
	cr_expect_eq(res->rows[0].count, CATCH_UP_EVENTS / 2);
	cr_expect_eq(res->raw_rows, CATCH_UP_EVENTS / 2);
	tally_result_free(res);
	cr_expect_gt(rollup_bytes_after(v.store, grown), grown, "then quiet is watched too");
	/* A tenant more than query_rows_behind_max rows behind: its first
	 * query rolls them up instead of reading them. */
	enum { BULK = 1501 };
	static char bulk_ids[BULK][16];
	static tally_event bulk[BULK];
	static tally_ingest_result bulk_results[BULK];
	for (int i = 0; i < BULK; i++) {
		snprintf(bulk_ids[i], sizeof(bulk_ids[i]), "b%d", i);
		bulk[i] = events[i % CATCH_UP_EVENTS];
		bulk[i].event_id = str_of(bulk_ids[i]);
		bulk[i].time_us = NOW_US - (int64_t)(i % 80000) * SECOND_US;
	}
	cr_assert_eq(tally_ingest(v.store, "bulk", bulk, BULK, bulk_results), 0);
	q.from_us = NOW_US - 2 * DAY_US;
	cr_assert_eq(tally_query_run(v.store, "bulk", &q, &res, err), 0, "%s", err);
	cr_expect_eq(res->rows[0].count, BULK);
	cr_expect_eq(res->raw_rows, 0, "rolled up by the query, not read");
	tally_result_free(res);
	env_close(&v);
}

/* Description: a tenant whose memtable holds several catch-up slices
 * (MEMTABLE_ROLLUP_SLICE) of rows without rollup cells when first queried
 * (no background: only queries roll up) gets exact answers, ungrouped and
 * grouped, at that first query and after more rows. */
Test(query, a_large_first_backlog_is_answered_exactly)
{
	env v;
	env_prepare(&v, "query-backlog");
	v.options.background = false; /* only queries roll up */
	env_store_open(&v);

	enum { EVENTS = 24 * MEMTABLE_ROLLUP_SLICE + 17 };
	static char ids[EVENTS][16];
	static tally_event events[EVENTS];
	static tally_ingest_result results[EVENTS];
	uint64_t llm = 0, tokens = 0;
	for (int i = 0; i < EVENTS; i++) {
		snprintf(ids[i], sizeof(ids[i]), "k%d", i);
		memset(&events[i], 0, sizeof(events[i]));
		events[i].event_id = str_of(ids[i]);
		events[i].time_us = NOW_US - (int64_t)(i % 5000) * 17 * SECOND_US;
		events[i].type = str_of(i % 3 ? "tool.call" : "llm.call");
		events[i].tokens_in = (uint64_t)i;
		llm += i % 3 == 0;
		tokens += (uint64_t)i;
	}
	int first = EVENTS - 1000;
	cr_assert_eq(tally_ingest(v.store, "acme", events, (size_t)first, results), 0);
	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = NOW_US - 2 * DAY_US;
	q.to_us = NOW_US + MINUTE_US;
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	uint64_t first_tokens = (uint64_t)first * (uint64_t)(first - 1) / 2;
	cr_assert_eq(tally_query_run(v.store, "acme", &q, &res, err), 0, "%s", err);
	cr_assert_eq(res->row_count, 1);
	cr_expect_eq(res->rows[0].count, (uint64_t)first);
	cr_expect_eq(res->rows[0].tokens_in, first_tokens);
	tally_result_free(res);
	cr_assert_eq(tally_ingest(v.store, "acme", events + first, 1000, results), 0);
	q.group_by = 1u << TALLY_DIM_TYPE;
	cr_assert_eq(tally_query_run(v.store, "acme", &q, &res, err), 0, "%s", err);
	cr_assert_eq(res->row_count, 2);
	uint64_t count = 0, got_tokens = 0, got_llm = 0;
	for (uint32_t r = 0; r < res->row_count; r++) {
		count += res->rows[r].count;
		got_tokens += res->rows[r].tokens_in;
		if (res->rows[r].group[TALLY_DIM_TYPE].len == 8)
			got_llm = res->rows[r].count;
	}
	cr_expect_eq(count, EVENTS);
	cr_expect_eq(got_tokens, tokens);
	cr_expect_eq(got_llm, llm, "llm.call rows");
	tally_result_free(res);
	env_close(&v);
}

/* The query of the cache tests: two days to now, with a p95 and distinct
 * users (so the pages' histograms and user codes are decoded too). */
static tally_query cache_query(void)
{
	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = NOW_US - 2 * DAY_US;
	q.to_us = NOW_US + MINUTE_US;
	q.quantiles[0] = 0.95;
	q.quantile_count = 1;
	q.distinct_users = true;
	return q;
}

/* n events "c<i>" of the cache tests, each its own user, shifted by k. */
static void cache_events(tally_event *events, char (*ids)[16], int n, int k)
{
	for (int i = 0; i < n; i++) {
		snprintf(ids[i], sizeof(ids[i]), "c%d", i);
		memset(&events[i], 0, sizeof(events[i]));
		events[i].event_id = str_of(ids[i]);
		events[i].time_us = NOW_US - (int64_t)(i + k) * 97 * SECOND_US;
		events[i].type = str_of("llm.call");
		events[i].duration_ms = (uint32_t)((i + k) * 7 % 3000);
		events[i].user = str_of(ids[i]);
	}
}

/* Description: a flush decodes into the query cache the rollup pages it
 * wrote for tenants a query has read (a dashboard's next query finds them
 * decoded), and nothing for a store nobody queried; answers are the same. */
Test(query, flush_warms_the_query_cache_for_queried_tenants_only)
{
	for (int queried = 0; queried < 2; queried++) {
		env v;
		env_prepare(&v, queried ? "query-warm" : "query-warm-none");
		v.options.background = false;
		env_store_open(&v);
		enum { N = 500 };
		static char ids[N][16];
		static tally_event events[N];
		static tally_ingest_result results[N];
		cache_events(events, ids, N, 0);
		cr_assert_eq(tally_ingest(v.store, "acme", events, N, results), 0);
		tally_query q = cache_query();
		tally_result *res = NULL;
		char err[TALLY_ERRMSG_SIZE] = "";
		if (queried) {
			cr_assert_eq(tally_query_run(v.store, "acme", &q, &res, err), 0, "%s", err);
			cr_expect_eq(res->rows[0].count, N);
			tally_result_free(res);
		}
		tally_stats st;
		cr_assert_eq(tally_store_stats(v.store, &st), 0);
		cr_assert_eq(st.query_cache_bytes, 0, "nothing on disk was read yet");
		cr_assert_eq(tally_flush(v.store), 0);
		cr_assert_eq(tally_store_stats(v.store, &st), 0);
		if (queried)
			cr_expect_gt(st.query_cache_bytes, 0, "the flush decoded acme's new pages");
		else
			cr_expect_eq(st.query_cache_bytes, 0, "no tenant was queried: nothing decoded");
		uint64_t warmed = st.query_cache_bytes;
		cr_assert_eq(tally_query_run(v.store, "acme", &q, &res, err), 0, "%s", err);
		cr_expect_eq(res->rows[0].count, N);
		cr_expect_eq(res->rows[0].distinct_users, N);
		tally_result_free(res);
		cr_assert_eq(tally_store_stats(v.store, &st), 0);
		if (queried)
			cr_expect_eq(st.query_cache_bytes, warmed, "the query found everything decoded");
		else
			cr_expect_gt(st.query_cache_bytes, 0, "the query decoded the pages itself");
		env_close(&v);
	}
}

/* Description: a store whose query cache may hold about three tenants'
 * decoded pages (query_cache_bytes_max, measured from one tenant's) answers
 * 12 tenants' queries exactly, and after each the cache holds at most its
 * limit; the tenant queried last is still cached (a second query decodes
 * nothing), while the first, evicted, is decoded again. A flush then warms
 * nothing past the limit. */
Test(query, the_query_cache_stays_within_its_limit_least_recently_used_out_first)
{
	enum { TENANTS = 12, N = 300 };
	static char ids[N][16];
	static tally_event events[N];
	static tally_ingest_result results[N];
	tally_query q = cache_query();
	uint64_t one = 0; /* a tenant's decoded pages */
	for (int round = 0; round < 2; round++) {
		env v;
		env_prepare(&v, round ? "query-cache-small" : "query-cache-one");
		v.options.background = false;
		if (round)
			v.options.query_cache_bytes_max = one * 7 / 2;
		env_store_open(&v);
		char tenants[TENANTS][16];
		for (int t = 0; t < TENANTS; t++) {
			snprintf(tenants[t], sizeof(tenants[t]), "t%02d", t);
			cache_events(events, ids, N, t);
			cr_assert_eq(tally_ingest(v.store, tenants[t], events, N, results), 0);
		}
		cr_assert_eq(tally_flush(v.store), 0);
		tally_stats st;
		uint64_t after[TENANTS];
		for (int t = 0; t < (round ? TENANTS : 1); t++) {
			tally_result *res = NULL;
			char err[TALLY_ERRMSG_SIZE] = "";
			cr_assert_eq(tally_query_run(v.store, tenants[t], &q, &res, err), 0, "%s", err);
			cr_expect_eq(res->rows[0].count, N, "%s", tenants[t]);
			cr_expect_eq(res->rows[0].distinct_users, N, "%s", tenants[t]);
			tally_result_free(res);
			cr_assert_eq(tally_store_stats(v.store, &st), 0);
			after[t] = st.query_cache_bytes;
			if (round)
				cr_expect_leq(after[t], v.options.query_cache_bytes_max, "after %s", tenants[t]);
		}
		if (!round) {
			one = after[0];
			cr_assert_gt(one, 0);
			env_close(&v);
			continue;
		}
		cr_expect_lt(after[TENANTS - 1], (uint64_t)TENANTS * one, "some tenant was evicted");
		tally_result *res = NULL;
		char err[TALLY_ERRMSG_SIZE] = "";
		cr_assert_eq(tally_query_run(v.store, tenants[TENANTS - 1], &q, &res, err), 0, "%s", err);
		tally_result_free(res);
		cr_assert_eq(tally_store_stats(v.store, &st), 0);
		cr_expect_eq(st.query_cache_bytes, after[TENANTS - 1], "the last tenant queried is cached");
		cr_assert_eq(tally_query_run(v.store, tenants[0], &q, &res, err), 0, "%s", err);
		cr_expect_eq(res->rows[0].count, N);
		tally_result_free(res);
		cr_assert_eq(tally_store_stats(v.store, &st), 0);
		cr_expect_neq(st.query_cache_bytes, after[TENANTS - 1], "the first, evicted, decoded again");
		cr_expect_leq(st.query_cache_bytes, v.options.query_cache_bytes_max);
		for (int t = 0; t < TENANTS; t++) {
			snprintf(ids[0], sizeof(ids[0]), "late");
			events[0].event_id = str_of(ids[0]);
			cr_assert_eq(tally_ingest(v.store, tenants[t], events, 1, results), 0);
		}
		cr_assert_eq(tally_flush(v.store), 0);
		cr_assert_eq(tally_store_stats(v.store, &st), 0);
		cr_expect_leq(st.query_cache_bytes, v.options.query_cache_bytes_max, "after the warming flush");
		env_close(&v);
	}
}

/* The rows of an ungrouped by-hour query of t's accepted events over
 * three hours, each past USET_EXACT_MAX users: their distinct users are
 * exactly the estimate of one set of all the hour's user hashes (merging
 * registers takes the maximum, so however the hour's events were split
 * into cells, its registers are that set's). */
static void expect_hours_sketched(const tenant *t, const tally_result *res, const char *when)
{
	cr_assert_eq(res->row_count, 3, "%s", when);
	for (size_t r = 0; r < res->row_count; r++) {
		uset want = {0};
		for (size_t k = 0; k < t->acc_count; k++) {
			const ev *e = &t->acc[k];
			if (e->user_len && e->time_us / HOUR_US * HOUR_US == res->rows[r].bucket_start_us)
				cr_assert_eq(uset_add(&want, sketch_user_hash(e->user, e->user_len)), 0);
		}
		cr_expect(uset_dense(&want), "%s, hour %zu", when, r);
		cr_expect_eq(res->rows[r].distinct_users, uset_estimate(&want), "%s, hour %zu", when, r);
		cr_expect_gt(res->rows[r].distinct_users, USET_EXACT_MAX, "%s, hour %zu", when, r);
		uset_free(&want);
	}
}

/* Description: hour cells holding more than USET_EXACT_MAX distinct users
 * (their user sets dense: HyperLogLog registers) answer distinct users
 * within 2% of the exact count, and every other aggregate exactly, from a
 * memtable, from a segment file, from both at once, from two files and
 * from their compaction: 60,000 events of one group, nearly each its own
 * user, over three hours (about 10,000 users an hour in each half, each
 * half's hour cells dense on their own), queried ungrouped, by hour, by day
 * and by model; by hour, each hour's distinct users are exactly the
 * estimate of a set of the hour's users, also asked twice of the
 * compaction's cached blocks. */
Test(query, dense_user_sets_from_every_source)
{
	seed_init("dense_user_sets_from_every_source");
	env v;
	env_open(&v, "query-dense-users", NOW_US, 0);
	tenant t;
	tenant_init(&t, "acme", 1.0); /* every user one of ten million */
	enum { N = 60000 };
	int64_t hour = NOW_US / HOUR_US * HOUR_US;
	tenant_generate(&t, N, hour - 4 * HOUR_US, hour - HOUR_US - 1, NULL, 0);
	for (size_t i = 0; i < N; i++) { /* one group, so that its hour cells are dense */
		t.gen[i].project = PROJECTS[0];
		t.gen[i].agent = AGENTS[1];
		t.gen[i].model = MODELS[0];
		t.gen[i].type = TYPES[0];
		t.gen[i].status = TALLY_STATUS_OK;
	}
	tally_query qs[4];
	for (int i = 0; i < 4; i++) {
		memset(&qs[i], 0, sizeof(qs[i]));
		qs[i].from_us = NOW_US - DAY_US;
		qs[i].to_us = NOW_US;
		qs[i].distinct_users = true;
		qs[i].quantile_count = 1;
		qs[i].quantiles[0] = 0.5;
	}
	qs[1].bucket = TALLY_BUCKET_HOUR;
	qs[2].bucket = TALLY_BUCKET_DAY;
	qs[3].bucket = TALLY_BUCKET_HOUR;
	qs[3].group_by = 1u << TALLY_DIM_MODEL;
	static const char *const steps[] = {"memtable", "one file", "a file and a memtable",
					    "two files", "compacted"};
	for (int step = 0; step < 5; step++) {
		if (step == 0)
			ingest_range(&v, &t, 0, N / 2);
		else if (step == 1)
			env_flush(&v);
		else if (step == 2)
			ingest_range(&v, &t, N / 2, N);
		else if (step == 3)
			env_flush(&v);
		else
			env_compact(&v);
		for (int i = 0; i < 4; i++) {
			tally_result *res = expect_oracle(&v, &t, &qs[i], steps[step]);
			if (i == 1) /* every hour cell of every source is dense */
				expect_hours_sketched(&t, res, steps[step]);
			tally_result_free(res);
		}
	}
	/* Compacted, each hour is one dense cell of a cached block, which
	 * keeps its distinct users once asked: asked again, the same. */
	for (int again = 0; again < 2; again++) {
		tally_result *res = run_ok(v.store, t.name, &qs[1]);
		expect_hours_sketched(&t, res, again ? "cached, asked again" : "cached");
		tally_result_free(res);
	}
	tenant_free(&t);
	env_close(&v);
}

static void count_problem(void *ctx, const char *message)
{
	fprintf(stderr, "verify: %s\n", message);
	(*(int *)ctx)++;
}

/* The one minute row of the wrap test's events, checked against n events
 * of tokens_in 2^64 - 1, tokens_out 1 and cost INT64_MIN each. */
static void expect_wrapped_minute(env *v, int n, const char *when)
{
	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = NOW_US - DAY_US;
	q.to_us = NOW_US + MINUTE_US;
	q.bucket = TALLY_BUCKET_MINUTE;
	q.group_by = 1u << TALLY_DIM_TYPE;
	tally_result *res = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_query_run(v->store, "acme", &q, &res, err), 0, "%s: %s", when, err);
	cr_assert_eq(res->row_count, 1, "%s", when);
	const tally_row *r = &res->rows[0];
	uint64_t in_field;
	int64_t in_wraps, cost_field, cost_wraps;
	exact_split_u((__int128)n * UINT64_MAX, &in_field, &in_wraps);
	exact_split_i((__int128)n * INT64_MIN, &cost_field, &cost_wraps);
	cr_expect_eq(r->count, (uint64_t)n, "%s", when);
	cr_expect_eq(r->tokens_in, in_field, "%s", when);
	cr_expect_eq(r->wraps.tokens_in, in_wraps, "%s", when);
	cr_expect_eq(r->tokens_out, (uint64_t)n, "%s", when);
	cr_expect_eq(r->wraps.tokens_out, 0, "%s", when);
	cr_expect_eq(r->cost_micros, cost_field, "%s", when);
	cr_expect_eq(r->wraps.cost_micros, cost_wraps, "%s", when);
	cr_expect_eq(r->wraps.duration_ms_sum, 0, "%s", when);
	tally_result_free(res);
}

/* Description: sums past their 64-bit range are exact (tally_wraps) from
 * every source: events of one minute and group whose tokens_in and cost
 * sums wrap, queried from the memtable's live cells, from a flushed
 * segment's chunk (a version 2 block), from both at once, after a
 * compaction merged them into one cell, and after a reopen; the store
 * verifies clean. */
Test(query, sums_past_64_bits_are_exact_from_every_source)
{
	env v;
	env_open(&v, "query-wraps", NOW_US, 0);
	static char ids[4][8];
	tally_event events[4];
	tally_ingest_result results[4];
	for (int i = 0; i < 4; i++) {
		snprintf(ids[i], sizeof(ids[i]), "w%d", i);
		memset(&events[i], 0, sizeof(events[i]));
		events[i].event_id = str_of(ids[i]);
		events[i].time_us = NOW_US - 30 * SECOND_US + i;
		events[i].type = str_of("llm.call");
		events[i].tokens_in = UINT64_MAX;
		events[i].tokens_out = 1;
		events[i].cost_micros = INT64_MIN;
	}
	cr_assert_eq(tally_ingest(v.store, "acme", events, 2, results), 0);
	cr_assert_eq(results[1].code, TALLY_ACCEPTED);
	expect_wrapped_minute(&v, 2, "memtable");
	env_flush(&v);
	expect_wrapped_minute(&v, 2, "flushed");
	cr_assert_eq(tally_ingest(v.store, "acme", events + 2, 2, results), 0);
	expect_wrapped_minute(&v, 4, "segment and memtable");
	env_flush(&v);
	env_compact(&v);
	expect_wrapped_minute(&v, 4, "compacted");
	env_reopen(&v);
	expect_wrapped_minute(&v, 4, "reopened");
	cr_assert_eq(tally_store_close(v.store), 0);
	v.store = NULL;
	int problems = 0;
	cr_expect_eq(tally_verify(v.dir.path, count_problem, &problems), 0);
	cr_expect_eq(problems, 0);
	env_close(&v);
}

/* Description: keyset paging. Random queries in the default order, read
 * in pages of a random limit, each page after the last row of the one
 * before (the cursor), give exactly the rows of the whole answer, in
 * order, with `truncated` on every page but the last; a cursor between
 * rows starts at the next one; a cursor with an order by aggregate is
 * refused. */
Test(query, pages_after_a_cursor_add_up_to_the_whole_answer)
{
	seed_init("pages_after_a_cursor_add_up_to_the_whole_answer");
	nx_values_init();
	env v;
	env_open(&v, "query-pages", NOW_US, 0);
	tenant t;
	tenant_init(&t, "acme", 0.2);
	t.huge_share = 0.02;
	int64_t bursts[16];
	size_t burst_count = burst_centres(bursts);
	int64_t data_lo = NOW_US - 30 * DAY_US, data_hi = NOW_US;
	tenant_generate(&t, 3000, data_lo, data_hi, bursts, burst_count);
	ingest_range(&v, &t, 0, 2000);
	env_flush(&v);
	ingest_range(&v, &t, 2000, 3000);
	tenant_seal(&t);
	static qbuild b;
	char err[TALLY_ERRMSG_SIZE] = "";
	uint64_t pages = 0, paged_rows = 0;
	for (int c = 0; c < 200; c++) {
		random_query(&b, &t, data_lo, data_hi);
		tally_query q = b.q;
		q.order_by_agg = false;
		q.limit = 0;
		tally_result *whole = NULL;
		cr_assert_eq(tally_query_run(v.store, "acme", &q, &whole, err), 0, "%s", err);
		if (whole->truncated) { /* more than the maximum: not a paging case */
			tally_result_free(whole);
			continue;
		}
		q.limit = 1 + (uint32_t)rng_below(c % 2 ? 5 : 60);
		size_t at = 0;
		tally_result *prev = NULL; /* the cursor's strings point into it */
		for (;;) {
			tally_result *page = NULL;
			cr_assert_eq(tally_query_run(v.store, "acme", &q, &page, err), 0, "%s", err);
			tally_result_free(prev);
			prev = page;
			pages++;
			cr_assert_leq(page->row_count, q.limit);
			cr_assert_leq(at + page->row_count, whole->row_count, "case %d: too many rows", c);
			for (size_t i = 0; i < page->row_count; i++) {
				char why[256];
				cr_assert(row_matches(&page->rows[i], &whole->rows[at + i], &q, why, sizeof(why)),
					  "seed=%llu case %d row %zu: %s", (unsigned long long)test_seed, c,
					  at + i, why);
			}
			at += page->row_count;
			cr_assert_eq(page->truncated, at < whole->row_count, "case %d: truncated at %zu", c,
				     at);
			if (!page->truncated)
				break;
			const tally_row *last = &page->rows[page->row_count - 1];
			q.after = true;
			q.after_bucket_us = last->bucket_start_us;
			memcpy(q.after_group, last->group, sizeof(q.after_group));
		}
		tally_result_free(prev);
		cr_assert_eq(at, whole->row_count);
		paged_rows += at;
		tally_result_free(whole);
	}
	cr_expect_gt(pages, 200);
	fprintf(stderr, "test_query pages: %" PRIu64 " pages, %" PRIu64 " rows\n", pages, paged_rows);

	/* A cursor between two rows: just after project P (P and a NUL byte)
	 * starts at the row after P's. */
	tally_query q;
	memset(&q, 0, sizeof(q));
	q.from_us = data_lo;
	q.to_us = data_hi + 1;
	q.group_by = 1u << TALLY_DIM_PROJECT;
	tally_result *whole = NULL, *page = NULL;
	cr_assert_eq(tally_query_run(v.store, "acme", &q, &whole, err), 0, "%s", err);
	cr_assert_geq(whole->row_count, 2);
	char between[TALLY_DIMENSION_SIZE_MAX + 2];
	tally_str p0 = whole->rows[0].group[TALLY_DIM_PROJECT];
	memcpy(between, p0.ptr, p0.len);
	between[p0.len] = '\0';
	q.after = true;
	q.after_group[TALLY_DIM_PROJECT] = (tally_str){between, p0.len + 1};
	q.after_group[TALLY_DIM_AGENT] = str_of("ignored: not grouped");
	cr_assert_eq(tally_query_run(v.store, "acme", &q, &page, err), 0, "%s", err);
	cr_assert_eq(page->row_count, whole->row_count - 1);
	cr_expect_eq(page->rows[0].count, whole->rows[1].count);
	cr_expect_eq(page->truncated, false);
	tally_result_free(page);
	/* Only the default order pages. */
	q.order_by_agg = true;
	q.order_agg = TALLY_AGG_COUNT;
	page = NULL;
	cr_expect_eq(tally_query_run(v.store, "acme", &q, &page, err), TALLY_E_INVALID);
	cr_expect_null(page);
	cr_expect(strstr(err, "cursor") != NULL, "%s", err);
	tally_result_free(whole);
	tenant_free(&t);
	env_close(&v);
}
