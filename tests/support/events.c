/*
 * events.c — deterministic events and the exactly-once oracle (events.h).
 *
 * Everything is derived from splitmix64 mixes of (seed, round, batch,
 * index), so the generator needs no state and the verifier rebuilds what was
 * sent from the id it scanned. Memory is the ledger only: one record and one
 * byte per event of each batch (the `seen` counters).
 */
#include "events.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EV_SECOND_US INT64_C(1000000)

static const char *const ev_types[] = {"llm.call", "tool.call", "agent.run", "api.request"};
static const char *const ev_models[] = {
	"gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b-instruct", "mistral-large", "", "o1-mini",
};
static const char *const ev_tenant_names[EV_TENANT_COUNT_MAX] = {
	"acme", "globex.eu", "initech_2", "umbrella-corp",
};

static void *ev_alloc(size_t size)
{
	void *p = calloc(1, size ? size : 1);
	if (!p) {
		fprintf(stderr, "events: out of memory (%zu bytes)\n", size);
		abort();
	}
	return p;
}

uint64_t ev_rng_next(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

uint64_t ev_mix(uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
	uint64_t state = a;
	uint64_t h = ev_rng_next(&state);
	state ^= b * UINT64_C(0xff51afd7ed558ccd);
	h ^= ev_rng_next(&state);
	state ^= c * UINT64_C(0xc4ceb9fe1a85ec53);
	h ^= ev_rng_next(&state);
	state ^= d * UINT64_C(0x9e3779b97f4a7c15);
	return h ^ ev_rng_next(&state);
}

static tally_str ev_str(const char *text)
{
	return (tally_str){text, (uint32_t)strlen(text)};
}

/* The id of (round, batch, index), in one of four shapes chosen by index. */
static void ev_id_make(char *out, uint64_t seed, uint32_t round, uint32_t batch, uint32_t index)
{
	size_t size = TALLY_EVENT_ID_SIZE_MAX + 1;
	switch (index % 4) {
	case 0: /* raw text */
		snprintf(out, size, "r%" PRIu32 ".b%" PRIu32 ".e%" PRIu32, round, batch, index);
		break;
	case 1: /* lower-case hex, packed to bytes */
		snprintf(out, size, "c0ffee%08" PRIx32 "%08" PRIx32 "%08" PRIx32, round, batch, index);
		break;
	case 2: { /* upper-case canonical UUID */
		uint64_t noise = ev_mix(seed, round, batch, index) & UINT64_C(0xffffffff);
		snprintf(out, size, "%08" PRIX32 "-%04" PRIX32 "-%04" PRIX32 "-%04" PRIX32 "-%04" PRIX32
			 "%08" PRIX64,
			 round, batch >> 16, batch & 0xffff, index >> 16, index & 0xffff, noise);
		break;
	}
	default: /* upper-case hex */
		snprintf(out, size, "DEADBEEF%08" PRIX32 "%08" PRIX32 "%08" PRIX32, round, batch, index);
		break;
	}
}

static void ev_fill(ev_event *out, uint64_t seed, int64_t base_us, uint32_t round, uint32_t batch,
		    uint32_t index)
{
	memset(out, 0, sizeof(*out));
	ev_id_make(out->id, seed, round, batch, index);
	uint64_t h = ev_mix(seed, round, batch, index);
	uint64_t r1 = ev_mix(h, 1, 0, 0), r2 = ev_mix(h, 2, 0, 0), r3 = ev_mix(h, 3, 0, 0);
	tally_event *e = &out->event;
	e->event_id = ev_str(out->id);
	if (h % 4 == 0) /* a quarter arrive on time (the last minute) */
		e->time_us = base_us - (int64_t)(r1 % (uint64_t)(60 * EV_SECOND_US));
	else /* the rest late, spread over three days */
		e->time_us = base_us - (int64_t)(r1 % (uint64_t)EV_LATE_SPREAD_US);
	snprintf(out->type, sizeof(out->type), "%s", ev_types[(h >> 3) % 4]);
	snprintf(out->project, sizeof(out->project), "proj-%u", (unsigned)((h >> 5) % 13));
	if ((h >> 9) % 7 != 0)
		snprintf(out->agent, sizeof(out->agent), "agent-%u", (unsigned)((h >> 12) % 50));
	snprintf(out->model, sizeof(out->model), "%s", ev_models[(h >> 18) % 6]);
	if ((h >> 21) % 10 != 0)
		snprintf(out->user, sizeof(out->user), "user-%05u", (unsigned)((h >> 24) % 1000));
	e->type = ev_str(out->type);
	e->project = ev_str(out->project);
	e->agent = ev_str(out->agent);
	e->model = ev_str(out->model);
	e->user = ev_str(out->user);
	e->status = (uint32_t)((h >> 30) % TALLY_STATUS_COUNT);
	e->tokens_in = r2 % 97 == 0 ? UINT64_MAX - (r2 >> 8) % 3 : r2 % 200000;
	e->tokens_out = (r2 >> 20) % 50000;
	if (r3 % 211 == 0)
		e->cost_micros = INT64_MIN;
	else if (r3 % 53 == 0)
		e->cost_micros = -(int64_t)((r3 >> 10) % 1000000); /* a refund */
	else
		e->cost_micros = (int64_t)((r3 >> 10) % 5000000);
	e->duration_ms = r3 % 101 == 0 ? UINT32_MAX : (uint32_t)((r3 >> 40) % 120000);
}

void ev_make(ev_event *out, uint64_t seed, int64_t base_us, uint32_t round, uint32_t batch,
	     uint32_t index)
{
	ev_fill(out, seed, base_us, round, batch, index);
}

void ev_make_conflict(ev_event *out, uint64_t seed, int64_t base_us, uint32_t round,
		      uint32_t batch, uint32_t index)
{
	ev_fill(out, seed, base_us, round, batch, index);
	out->event.tokens_in += 1;
}

/* Parses `digits` hex digits of either case at text; false on a non-digit. */
static bool ev_hex(const char *text, int digits, uint64_t *out)
{
	uint64_t v = 0;
	for (int i = 0; i < digits; i++) {
		char c = text[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return false;
		v = v << 4 | d;
	}
	*out = v;
	return true;
}

bool ev_id_parse(const char *id, size_t size, uint32_t *round, uint32_t *batch,
		 uint32_t *index)
{
	char text[TALLY_EVENT_ID_SIZE_MAX + 1];
	uint64_t a, b, c, d, e;
	if (size == 0 || size > TALLY_EVENT_ID_SIZE_MAX)
		return false;
	memcpy(text, id, size);
	text[size] = 0;
	if (size == 30 && memcmp(text, "c0ffee", 6) == 0) {
		if (!ev_hex(text + 6, 8, &a) || !ev_hex(text + 14, 8, &b) || !ev_hex(text + 22, 8, &c))
			return false;
	} else if (size == 32 && memcmp(text, "DEADBEEF", 8) == 0) {
		if (!ev_hex(text + 8, 8, &a) || !ev_hex(text + 16, 8, &b) || !ev_hex(text + 24, 8, &c))
			return false;
	} else if (size == 36 && text[8] == '-' && text[13] == '-' && text[18] == '-' &&
		   text[23] == '-') {
		if (!ev_hex(text, 8, &a) || !ev_hex(text + 9, 4, &b) || !ev_hex(text + 14, 4, &c) ||
		    !ev_hex(text + 19, 4, &d) || !ev_hex(text + 24, 4, &e))
			return false;
		b = b << 16 | c;
		c = d << 16 | e;
	} else {
		unsigned r, bt, ix;
		int end = 0;
		if (sscanf(text, "r%u.b%u.e%u%n", &r, &bt, &ix, &end) != 3 || (size_t)end != size)
			return false;
		a = r;
		b = bt;
		c = ix;
	}
	*round = (uint32_t)a;
	*batch = (uint32_t)b;
	*index = (uint32_t)c;
	return true;
}

static bool ev_str_equal(tally_str a, tally_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

bool ev_equal(const tally_event *a, const tally_event *b)
{
	return ev_str_equal(a->event_id, b->event_id) && a->time_us == b->time_us &&
	       ev_str_equal(a->type, b->type) && ev_str_equal(a->project, b->project) &&
	       ev_str_equal(a->agent, b->agent) && ev_str_equal(a->model, b->model) &&
	       ev_str_equal(a->user, b->user) && a->status == b->status &&
	       a->duration_ms == b->duration_ms && a->tokens_in == b->tokens_in &&
	       a->tokens_out == b->tokens_out && a->cost_micros == b->cost_micros;
}

void ev_describe(const tally_event *e, char *out, size_t size)
{
	snprintf(out, size,
		 "{id=%.*s time=%" PRId64 " type=%.*s project=%.*s agent=%.*s model=%.*s user=%.*s "
		 "status=%" PRIu32 " tokens=%" PRIu64 "/%" PRIu64 " cost=%" PRId64 " ms=%" PRIu32 "}",
		 (int)e->event_id.len, e->event_id.ptr ? e->event_id.ptr : "", e->time_us,
		 (int)e->type.len, e->type.ptr ? e->type.ptr : "", (int)e->project.len,
		 e->project.ptr ? e->project.ptr : "", (int)e->agent.len,
		 e->agent.ptr ? e->agent.ptr : "", (int)e->model.len, e->model.ptr ? e->model.ptr : "",
		 (int)e->user.len, e->user.ptr ? e->user.ptr : "", e->status, e->tokens_in,
		 e->tokens_out, e->cost_micros, e->duration_ms);
}

/* ---- report --------------------------------------------------------------- */

void ev_report_problem(ev_report *r, const char *format, ...)
{
	r->problem_count++;
	if (r->problem_count > EV_REPORT_LINES_MAX || r->used + 2 >= sizeof(r->text))
		return;
	va_list args;
	va_start(args, format);
	int n = vsnprintf(r->text + r->used, sizeof(r->text) - r->used - 1, format, args);
	va_end(args);
	if (n < 0)
		return;
	r->used += (size_t)n < sizeof(r->text) - r->used - 1 ? (size_t)n
							      : sizeof(r->text) - r->used - 2;
	r->text[r->used++] = '\n';
	r->text[r->used] = 0;
}

/* ---- ledger --------------------------------------------------------------- */

void ev_ledger_init(ev_ledger *l, uint64_t seed, uint32_t tenant_count)
{
	memset(l, 0, sizeof(*l));
	l->seed = seed;
	if (tenant_count < 1)
		tenant_count = 1;
	if (tenant_count > EV_TENANT_COUNT_MAX)
		tenant_count = EV_TENANT_COUNT_MAX;
	l->tenant_count = tenant_count;
	for (uint32_t t = 0; t < tenant_count; t++)
		snprintf(l->tenants[t], sizeof(l->tenants[t]), "%s", ev_tenant_names[t]);
}

void ev_ledger_free(ev_ledger *l)
{
	for (size_t i = 0; i < l->batch_count; i++)
		free(l->batches[i].seen);
	free(l->batches);
	free(l->rounds);
	memset(l, 0, sizeof(*l));
}

uint32_t ev_ledger_round_begin(ev_ledger *l, int64_t base_us)
{
	if (l->round_count == l->round_capacity) {
		uint32_t capacity = l->round_capacity ? l->round_capacity * 2 : 16;
		ev_round *rounds = ev_alloc(sizeof(*rounds) * capacity);
		if (l->round_count)
			memcpy(rounds, l->rounds, sizeof(*rounds) * l->round_count);
		free(l->rounds);
		l->rounds = rounds;
		l->round_capacity = capacity;
	}
	l->rounds[l->round_count] = (ev_round){.base_us = base_us, .first = l->batch_count};
	return l->round_count++;
}

ev_batch *ev_ledger_add(ev_ledger *l, uint32_t round, uint32_t batch, uint32_t tenant,
			uint32_t count, int state)
{
	if (round + 1 != l->round_count || batch != l->rounds[round].batch_count) {
		fprintf(stderr, "events: batch (%u, %u) added out of order\n", round, batch);
		abort();
	}
	if (l->batch_count == l->batch_capacity) {
		size_t capacity = l->batch_capacity ? l->batch_capacity * 2 : 256;
		ev_batch *batches = ev_alloc(sizeof(*batches) * capacity);
		if (l->batch_count)
			memcpy(batches, l->batches, sizeof(*batches) * l->batch_count);
		free(l->batches);
		l->batches = batches;
		l->batch_capacity = capacity;
	}
	ev_batch *b = &l->batches[l->batch_count++];
	*b = (ev_batch){.round = round, .batch = batch, .tenant = tenant, .count = count,
			.state = state, .seen = ev_alloc(count)};
	l->rounds[round].batch_count++;
	return b;
}

ev_batch *ev_ledger_put(ev_ledger *l, uint32_t round, uint32_t batch, uint32_t tenant,
			uint32_t count, int state)
{
	ev_batch *b = ev_ledger_find(l, round, batch);
	if (!b) {
		while (round + 1 == l->round_count && l->rounds[round].batch_count < batch)
			ev_ledger_add(l, round, l->rounds[round].batch_count, 0, 0, EV_UNSENT);
		return ev_ledger_add(l, round, batch, tenant, count, state);
	}
	if (b->count != count) {
		free(b->seen);
		b->seen = ev_alloc(count);
	}
	b->tenant = tenant;
	b->count = count;
	b->state = state;
	return b;
}

ev_batch *ev_ledger_find(ev_ledger *l, uint32_t round, uint32_t batch)
{
	if (round >= l->round_count || batch >= l->rounds[round].batch_count)
		return NULL;
	return &l->batches[l->rounds[round].first + batch];
}

uint64_t ev_ledger_present_events(const ev_ledger *l)
{
	uint64_t total = 0;
	for (size_t i = 0; i < l->batch_count; i++)
		if (l->batches[i].state == EV_ACKED || l->batches[i].state == EV_PRESENT)
			total += l->batches[i].count;
	return total;
}

static const char *ev_state_name(int state)
{
	switch (state) {
	case EV_ACKED: return "acknowledged";
	case EV_MAYBE: return "maybe";
	case EV_PRESENT: return "present";
	case EV_ABSENT: return "absent";
	case EV_UNSENT: return "never submitted";
	default: return "?";
	}
}

typedef struct ev_verify_ctx {
	ev_ledger *ledger;
	uint32_t tenant;
	ev_report *report;
	int64_t time_last_us;
	ev_event expected;
} ev_verify_ctx;

static int ev_verify_event(void *ctx, const tally_event *e)
{
	ev_verify_ctx *v = ctx;
	ev_report *r = v->report;
	ev_ledger *l = v->ledger;
	const char *tenant = l->tenants[v->tenant];
	char text[512];
	r->events_scanned++;
	if (e->time_us < v->time_last_us)
		ev_report_problem(r, "tenant %s: scan out of time order: %" PRId64 " after %" PRId64,
				  tenant, e->time_us, v->time_last_us);
	v->time_last_us = e->time_us;
	uint32_t round, batch, index;
	if (!ev_id_parse(e->event_id.ptr, e->event_id.len, &round, &batch, &index)) {
		ev_describe(e, text, sizeof(text));
		ev_report_problem(r, "tenant %s: event never sent (unknown id): %s", tenant, text);
		return 0;
	}
	ev_batch *b = ev_ledger_find(l, round, batch);
	if (!b || b->state == EV_UNSENT) {
		ev_describe(e, text, sizeof(text));
		ev_report_problem(r, "tenant %s: event of batch (round %u, batch %u) that was never "
				  "submitted: %s", tenant, round, batch, text);
		return 0;
	}
	if (b->tenant != v->tenant || index >= b->count) {
		ev_describe(e, text, sizeof(text));
		ev_report_problem(r, "tenant %s: event never sent to this tenant (batch (%u, %u) "
				  "went to %s with %u events): %s", tenant, round, batch,
				  l->tenants[b->tenant], b->count, text);
		return 0;
	}
	ev_make(&v->expected, l->seed, l->rounds[round].base_us, round, batch, index);
	if (!ev_equal(&v->expected.event, e)) {
		char want[512];
		ev_describe(e, text, sizeof(text));
		ev_describe(&v->expected.event, want, sizeof(want));
		ev_report_problem(r, "tenant %s: payload differs from what was sent:\n  got  %s\n  sent %s",
				  tenant, text, want);
	}
	if (b->seen[index] < UINT8_MAX)
		b->seen[index]++;
	return 0;
}

int ev_ledger_verify(ev_ledger *l, tally_store *s, bool by_day, ev_report *r)
{
	int before = r->problem_count;
	ev_verify_ctx *v = ev_alloc(sizeof(*v));
	/* By day: every time ev_make can produce lies in [oldest base - spread,
	 * newest base]; the first and last windows are open-ended so that an
	 * event stored with any other time is still seen (and reported).
	 * Otherwise day_first == day_last: one scan of the whole range. */
	int64_t base_min = INT64_MAX, base_max = INT64_MIN;
	for (uint32_t i = 0; i < l->round_count; i++) {
		base_min = l->rounds[i].base_us < base_min ? l->rounds[i].base_us : base_min;
		base_max = l->rounds[i].base_us > base_max ? l->rounds[i].base_us : base_max;
	}
	int64_t day_first = 0, day_last = 0;
	if (l->round_count && by_day) {
		day_first = (base_min - EV_LATE_SPREAD_US) / TALLY_US_PER_DAY;
		day_last = base_max / TALLY_US_PER_DAY;
	}
	for (uint32_t t = 0; t < l->tenant_count; t++) {
		v->ledger = l;
		v->tenant = t;
		v->report = r;
		v->time_last_us = INT64_MIN;
		for (int64_t day = day_first; day <= day_last; day++) {
			int64_t from = day == day_first ? INT64_MIN : day * TALLY_US_PER_DAY;
			int64_t to = day == day_last ? INT64_MAX : (day + 1) * TALLY_US_PER_DAY;
			int rc = tally_scan(s, l->tenants[t], from, to, ev_verify_event, v);
			if (rc)
				ev_report_problem(r, "tally_scan(%s, day %" PRId64 ") returned %d (%s): %s",
						  l->tenants[t], day, rc, tally_strerror(rc),
						  tally_store_errmsg(s));
		}
	}
	free(v);
	for (size_t i = 0; i < l->batch_count; i++) {
		ev_batch *b = &l->batches[i];
		uint32_t present = 0, first_missing = UINT32_MAX, first_twice = UINT32_MAX;
		for (uint32_t k = 0; k < b->count; k++) {
			if (b->seen[k])
				present++;
			else if (first_missing == UINT32_MAX)
				first_missing = k;
			if (b->seen[k] > 1 && first_twice == UINT32_MAX)
				first_twice = k;
		}
		if (first_twice != UINT32_MAX)
			ev_report_problem(r, "batch (round %u, batch %u, tenant %s, %s): event %u appears "
					  "%u times", b->round, b->batch, l->tenants[b->tenant],
					  ev_state_name(b->state), first_twice, b->seen[first_twice]);
		switch (b->state) {
		case EV_ACKED:
		case EV_PRESENT:
			if (present != b->count)
				ev_report_problem(r, "batch (round %u, batch %u, tenant %s, %s): %u of %u "
						  "events missing (first: index %u)", b->round, b->batch,
						  l->tenants[b->tenant], ev_state_name(b->state),
						  b->count - present, b->count, first_missing);
			break;
		case EV_MAYBE:
			if (present == 0) {
				b->state = EV_ABSENT;
				b->resolved = true;
				r->maybe_absent++;
			} else if (present == b->count) {
				b->state = EV_PRESENT;
				b->resolved = true;
				r->maybe_present++;
			} else {
				ev_report_problem(r, "batch (round %u, batch %u, tenant %s, not acknowledged): "
						  "half-present, %u of %u events (first missing: index %u)",
						  b->round, b->batch, l->tenants[b->tenant], present,
						  b->count, first_missing);
			}
			break;
		case EV_ABSENT:
			if (present)
				ev_report_problem(r, "batch (round %u, batch %u, tenant %s) was absent before "
						  "and now has %u of %u events", b->round, b->batch,
						  l->tenants[b->tenant], present, b->count);
			break;
		default:
			break;
		}
		memset(b->seen, 0, b->count);
	}
	return r->problem_count - before;
}
