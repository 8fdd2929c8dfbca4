/*
 * workload.c — generates the reference workload (see bench/README.md for the
 * precise definition; the constants below are that definition).
 *
 * NOTES ON THE GENERATOR
 *
 * 1. Order of generation. Tenant profiles (names, projects, agents, models,
 *    users) first, then the times of all unique events (sorted), then each
 *    unique event's fields in time order, then the delivery order (late
 *    events moved back, re-sends inserted after their original), then the
 *    windows and per-tenant batches. Each step draws from its own PRNG
 *    stream (rng.h), so the output is a pure function of the parameters.
 *
 * 2. Money is integer. cost_micros = (tokens_in * in_price + tokens_out *
 *    out_price + 500) / 1000, prices in integer micro-USD per 1k tokens. The
 *    token counts come from lognormal draws (double) rounded to integers
 *    first; no money value ever passes through a double.
 *
 * 3. Skewed choices (tenant, project, agent, model, user) are Zipf draws: a
 *    prefix table of k^-s sums, a uniform draw scaled to the prefix of the
 *    first n ranks, and a binary search. One prefix table per exponent
 *    serves every n, because P(rank <= k | n ranks) = prefix[k] / prefix[n].
 *
 * 4. Memory: everything is allocated here and owned by the workload; the
 *    scratch arrays of the generation steps are freed before returning. Peak
 *    is about 300 bytes per event (WORKLOAD_EVENTS_MAX bounds it).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "workload.h"

/* ---- The workload's definition ------------------------------------------ */

#define TENANT_ZIPF_EXPONENT 1.1
#define DIMENSION_ZIPF_EXPONENT 1.0  /* projects, agents, models, users within a tenant */
#define RESEND_PER_MILLE 5           /* re-sends = events * 5 / 1000 */
#define LATE_PER_MILLE 10            /* each unique event is late with p = 1% */
#define LATE_SPAN_DAYS 2             /* late by up to 2 days' worth of events */
#define RETRY_SOON_PERCENT 80        /* re-sends within 5 minutes' worth of events ... */
#define RETRY_SOON_MINUTES 5         /* ... the rest within 2 days' worth */
#define PROJECTS_MAX 20
#define AGENTS_PER_PROJECT_MAX 10
#define MODELS_PER_TENANT_MAX 5
#define USERS_PER_TENANT_MAX 1000000u
#define USERS_PER_SQRT_EVENT 2.0     /* users = 2 * sqrt(expected events) */
#define TOOL_FEE_MICROS 1000         /* a paid tool call costs $0.001 ... */
#define TOOL_FEE_PERCENT 40          /* ... and 40% of tool calls are paid */
#define WEEKEND_FACTOR 0.6
#define DURATION_MS_MAX 3600000u

#define MINUTE_US (INT64_C(60) * TALLY_US_PER_SECOND)
#define HOUR_US (INT64_C(60) * MINUTE_US)

/* Relative activity by UTC hour (peak 1.0): Europe's and the Americas'
 * working days overlap in the early afternoon UTC. */
static const double HOUR_ACTIVITY[24] = {
	0.35, 0.30, 0.27, 0.25, 0.25, 0.28, 0.35, 0.48, 0.65, 0.80, 0.90, 0.95,
	0.97, 1.00, 1.00, 0.98, 0.95, 0.90, 0.80, 0.68, 0.58, 0.50, 0.44, 0.39,
};

enum event_type { TYPE_LLM_CALL, TYPE_TOOL_CALL, TYPE_AGENT_RUN, TYPE_API_REQUEST, TYPE_COUNT };

typedef struct type_profile {
	const char *name;
	double duration_median_ms;
	double duration_sigma;
	uint32_t timeout_ms;         /* duration of a TIMEOUT event */
} type_profile;

static const type_profile TYPES[TYPE_COUNT] = {
	[TYPE_LLM_CALL] = {"llm.call", 1200.0, 0.7, 60000},
	[TYPE_TOOL_CALL] = {"tool.call", 150.0, 1.0, 30000},
	[TYPE_AGENT_RUN] = {"agent.run", 8000.0, 0.9, 600000},
	[TYPE_API_REQUEST] = {"api.request", 50.0, 0.8, 10000},
};

/* Type shares in per mille, in enum event_type order. */
static const uint32_t TYPE_PER_MILLE[TYPE_COUNT] = {450, 350, 120, 80};

/* Status shares in per mille, in enum tally_status order. */
static const uint32_t STATUS_PER_MILLE[TALLY_STATUS_COUNT] = {950, 30, 15, 5};

typedef struct model_profile {
	const char *name;
	uint32_t popularity;         /* relative weight when tenants pick models */
	uint32_t in_micros_per_1k;   /* price of 1k input tokens, micro-USD */
	uint32_t out_micros_per_1k;  /* price of 1k output tokens, micro-USD */
} model_profile;

static const model_profile MODELS[] = {
	{"gpt-4o-mini", 30, 150, 600},
	{"gpt-4o", 22, 2500, 10000},
	{"claude-3-5-sonnet", 18, 3000, 15000},
	{"claude-3-haiku", 10, 250, 1250},
	{"gemini-1.5-flash", 8, 75, 300},
	{"gemini-1.5-pro", 6, 1250, 5000},
	{"llama-3.1-70b", 5, 880, 880},
	{"llama-3.1-8b", 4, 180, 180},
	{"mistral-large", 3, 2000, 6000},
	{"o1-mini", 3, 3000, 12000},
	{"claude-3-opus", 2, 15000, 75000},
	{"command-r-plus", 2, 2500, 10000},
};
#define MODEL_COUNT (sizeof(MODELS) / sizeof(MODELS[0]))

static const char *const PROJECT_WORDS[] = {
	"web-app", "mobile-app", "support", "checkout", "data-pipeline", "search",
	"onboarding", "billing", "internal-tools", "analytics", "docs-assistant",
	"sales-copilot", "fraud-review", "content-studio", "hr-helpdesk", "devops",
	"marketing", "crm-sync", "qa-automation", "legal-review",
};
#define PROJECT_WORD_COUNT (sizeof(PROJECT_WORDS) / sizeof(PROJECT_WORDS[0]))

static const char *const AGENT_WORDS[] = {
	"support-bot", "triage-agent", "code-reviewer", "sql-analyst",
	"research-assistant", "invoice-parser", "email-drafter", "summarizer",
	"planner", "router", "web-researcher", "ticket-classifier", "doc-qa",
	"translator", "scheduler", "lead-scorer", "report-writer", "data-cleaner",
	"test-generator", "onboarding-guide", "refund-handler", "kb-curator",
	"meeting-notes", "compliance-checker",
};
#define AGENT_WORD_COUNT (sizeof(AGENT_WORDS) / sizeof(AGENT_WORDS[0]))

_Static_assert(PROJECT_WORD_COUNT >= PROJECTS_MAX, "enough project words");
_Static_assert(AGENT_WORD_COUNT >= AGENTS_PER_PROJECT_MAX, "enough agent words");
_Static_assert(MODEL_COUNT >= MODELS_PER_TENANT_MAX, "enough models");

enum stream {
	STREAM_TENANTS = 1, /* tenant name permutation and profiles */
	STREAM_TIMES,
	STREAM_EVENTS,
	STREAM_LATE,
	STREAM_RESENDS,
};

/* ---- Owned string memory ------------------------------------------------ */

#define ARENA_BLOCK_BYTES (1u << 20)

struct workload_arena_block {
	workload_arena_block *next;
	size_t used;
	size_t size;
	char data[];
};

/* size bytes that live as long as the workload, or NULL. */
static char *arena_alloc(workload *w, size_t size)
{
	workload_arena_block *b = w->arena;
	if (!b || b->size - b->used < size) {
		size_t block_size = size > ARENA_BLOCK_BYTES ? size : ARENA_BLOCK_BYTES;
		b = malloc(sizeof(*b) + block_size);
		if (!b)
			return NULL;
		b->next = w->arena;
		b->used = 0;
		b->size = block_size;
		w->arena = b;
	}
	char *p = b->data + b->used;
	b->used += size;
	return p;
}

static tally_str str_const(const char *s)
{
	return (tally_str){s, (uint32_t)strlen(s)};
}

/* ---- Zipf draws ----------------------------------------------------------- */

/* prefix[k] = sum of (j + 1)^-s for j = 0..k. NULL on ENOMEM. */
static double *zipf_prefix(uint64_t n, double s)
{
	double *prefix = malloc(sizeof(*prefix) * (n ? n : 1));
	if (!prefix)
		return NULL;
	double sum = 0.0;
	for (uint64_t k = 0; k < n; k++) {
		sum += pow((double)(k + 1), -s);
		prefix[k] = sum;
	}
	return prefix;
}

/* A rank in [0, n) with P(k) proportional to (k + 1)^-s, n >= 1. */
static uint32_t zipf_draw(rng *r, const double *prefix, uint32_t n)
{
	double u = rng_unit(r) * prefix[n - 1];
	uint32_t lo = 0, hi = n - 1; /* the answer is in [lo, hi] */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (prefix[mid] > u)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* ---- Tenant profiles -------------------------------------------------------- */

typedef struct tenant_profile {
	uint32_t project_first;   /* into project_names / project_agent_* */
	uint32_t project_count;
	uint32_t user_first;      /* into user_names */
	uint32_t user_count;
	uint32_t model_count;
	uint8_t models[MODELS_PER_TENANT_MAX]; /* into MODELS, primary first */
} tenant_profile;

typedef struct profiles {
	tenant_profile *tenant;   /* by tenant index */
	tally_str *project_names;
	uint32_t *project_agent_first; /* into agent_names */
	uint32_t *project_agent_count;
	uint32_t project_total;
	tally_str *agent_names;
	uint32_t agent_total;
	tally_str *user_names;
	uint32_t user_total;
	uint32_t user_count_max;
} profiles;

static void profiles_free(profiles *p)
{
	free(p->tenant);
	free(p->project_names);
	free(p->project_agent_first);
	free(p->project_agent_count);
	free(p->agent_names);
	free(p->user_names);
	memset(p, 0, sizeof(*p));
}

static uint32_t clamp_u32(double x, uint32_t lo, uint32_t hi)
{
	if (!(x >= lo))
		return lo;
	if (x >= hi)
		return hi;
	return (uint32_t)x;
}

/* Users of a tenant expected to send `expected` events. */
static uint32_t user_count_for(double expected)
{
	return clamp_u32(llround(USERS_PER_SQRT_EVENT * sqrt(expected)), 1, USERS_PER_TENANT_MAX);
}

/* Partial Fisher-Yates: the first k entries of order[0..n) become a uniform
 * sample without replacement. */
static void sample_indexes(rng *r, uint32_t *order, uint32_t n, uint32_t k)
{
	for (uint32_t i = 0; i < n; i++)
		order[i] = i;
	for (uint32_t i = 0; i < k && i + 1 < n; i++) {
		uint32_t j = i + rng_below(r, n - i);
		uint32_t t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
}

/*
 * Builds every tenant's profile. rank_tenant[k] is the tenant of activity
 * rank k; tenant_prefix the Zipf prefix over ranks; unique events are
 * spread over tenants in expectation by that law.
 */
static int profiles_build(workload *w, profiles *p, rng *r, const uint32_t *rank_tenant,
			  const double *tenant_prefix, uint64_t unique_count)
{
	uint32_t tenant_count = w->params.tenant_count;
	double total_weight = tenant_prefix[tenant_count - 1];
	p->tenant = calloc(tenant_count, sizeof(*p->tenant));
	if (!p->tenant)
		return -ENOMEM;

	/* Sizes first, so every pool is allocated once. */
	uint32_t *agent_cap = malloc(sizeof(*agent_cap) * tenant_count);
	if (!agent_cap)
		return -ENOMEM;
	uint64_t projects = 0, users = 0;
	for (uint32_t rank = 0; rank < tenant_count; rank++) {
		tenant_profile *t = &p->tenant[rank_tenant[rank]];
		double expected = (double)unique_count * pow((double)(rank + 1), -TENANT_ZIPF_EXPONENT) /
				  total_weight;
		t->project_count = clamp_u32(1.0 + floor(log2(1.0 + expected / 100.0)) + rng_below(r, 3),
					     1, PROJECTS_MAX);
		agent_cap[rank] = clamp_u32(2.0 + floor(log2(1.0 + expected / (t->project_count * 200.0))),
					    1, AGENTS_PER_PROJECT_MAX);
		t->user_count = user_count_for(expected);
		uint32_t draw = rng_below(r, 100);
		t->model_count = draw < 35 ? 1 : draw < 65 ? 2 : draw < 85 ? 3 : draw < 95 ? 4 : 5;
		if (expected > 100000.0 && t->model_count < MODELS_PER_TENANT_MAX)
			t->model_count++;
		t->project_first = (uint32_t)projects;
		t->user_first = (uint32_t)users;
		projects += t->project_count;
		users += t->user_count;
		if (t->user_count > p->user_count_max)
			p->user_count_max = t->user_count;
	}
	if (users > UINT32_MAX || projects * AGENTS_PER_PROJECT_MAX > UINT32_MAX) {
		free(agent_cap);
		return -ENOMEM;
	}
	p->project_total = (uint32_t)projects;
	p->user_total = (uint32_t)users;
	p->project_names = malloc(sizeof(*p->project_names) * projects);
	p->project_agent_first = malloc(sizeof(*p->project_agent_first) * projects);
	p->project_agent_count = malloc(sizeof(*p->project_agent_count) * projects);
	p->agent_names = malloc(sizeof(*p->agent_names) * projects * AGENTS_PER_PROJECT_MAX);
	p->user_names = malloc(sizeof(*p->user_names) * (users ? users : 1));
	if (!p->project_names || !p->project_agent_first || !p->project_agent_count ||
	    !p->agent_names || !p->user_names) {
		free(agent_cap);
		return -ENOMEM;
	}

	uint32_t project_order[PROJECT_WORD_COUNT], agent_order[AGENT_WORD_COUNT];
	uint32_t agents = 0;
	for (uint32_t rank = 0; rank < tenant_count; rank++) {
		tenant_profile *t = &p->tenant[rank_tenant[rank]];
		/* Projects: half named from the word list, half "proj-" + 4 hex. */
		sample_indexes(r, project_order, PROJECT_WORD_COUNT, t->project_count);
		uint32_t words_used = 0;
		for (uint32_t j = 0; j < t->project_count; j++) {
			tally_str *name = &p->project_names[t->project_first + j];
			if (rng_below(r, 2)) {
				*name = str_const(PROJECT_WORDS[project_order[words_used++]]);
			} else {
				char *text = arena_alloc(w, 9), buffer[10];
				if (!text) {
					free(agent_cap);
					return -ENOMEM;
				}
				int unique;
				do { /* distinct within the tenant */
					snprintf(buffer, sizeof(buffer), "proj-%04x", rng_below(r, 65536));
					unique = 1;
					for (uint32_t k = 0; k < j; k++) {
						tally_str *other = &p->project_names[t->project_first + k];
						unique &= !(other->len == 9 && memcmp(other->ptr, buffer, 9) == 0);
					}
				} while (!unique);
				memcpy(text, buffer, 9);
				*name = (tally_str){text, 9};
			}
			/* Agents of the project: a sample of the agent names. */
			uint32_t agent_count = 1 + rng_below(r, agent_cap[rank]);
			sample_indexes(r, agent_order, AGENT_WORD_COUNT, agent_count);
			p->project_agent_first[t->project_first + j] = agents;
			p->project_agent_count[t->project_first + j] = agent_count;
			for (uint32_t k = 0; k < agent_count; k++)
				p->agent_names[agents++] = str_const(AGENT_WORDS[agent_order[k]]);
		}
		/* Models: weighted by popularity, without replacement. */
		uint32_t taken = 0; /* bit mask over MODELS */
		for (uint32_t j = 0; j < t->model_count; j++) {
			uint32_t weight_total = 0;
			for (uint32_t m = 0; m < MODEL_COUNT; m++)
				weight_total += (taken >> m & 1) ? 0 : MODELS[m].popularity;
			uint32_t x = rng_below(r, weight_total), m = 0;
			for (;; m++) {
				if (taken >> m & 1)
					continue;
				if (x < MODELS[m].popularity)
					break;
				x -= MODELS[m].popularity;
			}
			taken |= 1u << m;
			t->models[j] = (uint8_t)m;
		}
		/* Users: "u_" + 8 hex. */
		for (uint32_t j = 0; j < t->user_count; j++) {
			char *text = arena_alloc(w, 10);
			if (!text) {
				free(agent_cap);
				return -ENOMEM;
			}
			char buffer[11];
			snprintf(buffer, sizeof(buffer), "u_%08x", (unsigned)(rng_next(r) >> 32));
			memcpy(text, buffer, 10);
			p->user_names[t->user_first + j] = (tally_str){text, 10};
		}
	}
	p->agent_total = agents;
	free(agent_cap);
	return 0;
}

/* ---- Times ---------------------------------------------------------------- */

static int compare_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Relative activity at time t (peak 1.0): hour of day, weekends lighter. */
static double activity(int64_t t)
{
	int64_t day = t / TALLY_US_PER_DAY;
	int hour = (int)((t % TALLY_US_PER_DAY) / HOUR_US);
	int weekday = (int)((day + 4) % 7); /* 1970-01-01 was a Thursday; 0 = Sunday */
	double factor = (weekday == 0 || weekday == 6) ? WEEKEND_FACTOR : 1.0;
	return HOUR_ACTIVITY[hour] * factor;
}

/* count times in [end - 30 days, end), microseconds, by rejection against
 * activity(), sorted ascending. */
static int64_t *times_generate(rng *r, uint64_t count, int64_t end_us)
{
	int64_t *times = malloc(sizeof(*times) * count);
	if (!times)
		return NULL;
	int64_t span = WORKLOAD_HISTORY_DAYS * TALLY_US_PER_DAY;
	int64_t start = end_us - span;
	for (uint64_t i = 0; i < count;) {
		int64_t t = start + (int64_t)rng_below64(r, (uint64_t)span);
		if (rng_unit(r) < activity(t))
			times[i++] = t;
	}
	qsort(times, count, sizeof(*times), compare_i64);
	return times;
}

/* ---- Events --------------------------------------------------------------- */

static uint32_t draw_per_mille(rng *r, const uint32_t *per_mille, uint32_t n)
{
	uint32_t x = rng_below(r, 1000);
	for (uint32_t i = 0; i + 1 < n; i++) {
		if (x < per_mille[i])
			return i;
		x -= per_mille[i];
	}
	return n - 1;
}

static uint64_t lognormal_u64(rng *r, double median, double sigma, uint64_t lo, uint64_t hi)
{
	double x = rng_lognormal(r, median, sigma);
	if (!(x >= (double)lo))
		return lo;
	if (x > (double)hi)
		return hi;
	return (uint64_t)llround(x);
}

static void hex_encode(char *out, uint64_t a, uint64_t b)
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 0; i < 16; i++) {
		out[i] = digits[(a >> (60 - 4 * i)) & 15];
		out[16 + i] = digits[(b >> (60 - 4 * i)) & 15];
	}
}

/* Fills one unique event (and its tenant) at time t. */
static void event_generate(rng *r, const profiles *p, const uint32_t *rank_tenant,
			   const double *tenant_prefix, uint32_t tenant_count,
			   const double *dimension_prefix, char *id_text, int64_t t,
			   tally_event *e, uint32_t *tenant_out)
{
	uint32_t tenant = rank_tenant[zipf_draw(r, tenant_prefix, tenant_count)];
	const tenant_profile *tp = &p->tenant[tenant];
	*tenant_out = tenant;

	uint64_t id_high = rng_next(r), id_low = rng_next(r);
	hex_encode(id_text, id_high, id_low);
	e->event_id = (tally_str){id_text, 32};
	e->time_us = t;

	uint32_t type = draw_per_mille(r, TYPE_PER_MILLE, TYPE_COUNT);
	e->type = str_const(TYPES[type].name);
	e->status = draw_per_mille(r, STATUS_PER_MILLE, TALLY_STATUS_COUNT);

	uint32_t project = tp->project_first + zipf_draw(r, dimension_prefix, tp->project_count);
	e->project = p->project_names[project];
	uint32_t agent = zipf_draw(r, dimension_prefix, p->project_agent_count[project]);
	e->agent = p->agent_names[p->project_agent_first[project] + agent];
	const model_profile *model = &MODELS[tp->models[zipf_draw(r, dimension_prefix, tp->model_count)]];
	e->model = (type == TYPE_LLM_CALL || type == TYPE_AGENT_RUN) ? str_const(model->name)
								      : (tally_str){NULL, 0};
	e->user = p->user_names[tp->user_first + zipf_draw(r, dimension_prefix, tp->user_count)];

	e->tokens_in = 0;
	e->tokens_out = 0;
	e->cost_micros = 0;
	if (type == TYPE_LLM_CALL) {
		e->tokens_in = lognormal_u64(r, 800.0, 1.0, 1, 128000);
		e->tokens_out = lognormal_u64(r, 200.0, 0.9, 1, 16384);
		if (e->status == TALLY_STATUS_ERROR)
			e->tokens_out = 0; /* failed before generating */
		e->cost_micros = (int64_t)((e->tokens_in * model->in_micros_per_1k +
					    e->tokens_out * model->out_micros_per_1k + 500) / 1000);
	} else if (type == TYPE_TOOL_CALL) {
		e->cost_micros = rng_below(r, 100) < TOOL_FEE_PERCENT ? TOOL_FEE_MICROS : 0;
	}
	const type_profile *tt = &TYPES[type];
	uint64_t duration = lognormal_u64(r, tt->duration_median_ms, tt->duration_sigma, 1,
					  DURATION_MS_MAX);
	e->duration_ms = e->status == TALLY_STATUS_TIMEOUT ? tt->timeout_ms : (uint32_t)duration;
}

/* ---- Delivery order, windows and batches ---------------------------------- */

/*
 * delivery[j] = the unique event delivered j-th (event_count entries).
 * Unique event i (time order) has delivery key 2 * i, or 2 * (i + delay) if
 * late; the unique events are ranked by key into positions. A re-send of
 * event o gets key 2 * (position(o) + delay) + 1, so it is delivered after
 * its original. Ties break by entry number.
 */
static uint32_t *delivery_build(workload *w, uint64_t unique_count, uint64_t resend_count)
{
	uint64_t total = unique_count + resend_count;
	uint64_t *keys = malloc(sizeof(*keys) * total);
	uint32_t *position = malloc(sizeof(*position) * unique_count);
	uint32_t *delivery = malloc(sizeof(*delivery) * total);
	uint32_t *original = malloc(sizeof(*original) * (resend_count ? resend_count : 1));
	if (!keys || !position || !delivery || !original) {
		free(keys);
		free(position);
		free(delivery);
		free(original);
		return NULL;
	}
	uint64_t per_day = unique_count / WORKLOAD_HISTORY_DAYS;
	uint64_t late_span = per_day * LATE_SPAN_DAYS;
	uint64_t soon_span = unique_count * RETRY_SOON_MINUTES / (WORKLOAD_HISTORY_DAYS * 24 * 60);
	if (late_span < 1)
		late_span = 1;
	if (soon_span < 1)
		soon_span = 1;

	rng r;
	rng_seed(&r, w->params.seed, STREAM_LATE);
	w->late_count = 0;
	for (uint64_t i = 0; i < unique_count; i++) {
		uint64_t key = i;
		if (rng_below(&r, 1000) < LATE_PER_MILLE) {
			key += 1 + rng_below64(&r, late_span);
			w->late_count++;
		}
		keys[i] = key << 32 | i;
	}
	qsort(keys, unique_count, sizeof(*keys), compare_u64);
	for (uint64_t j = 0; j < unique_count; j++)
		position[keys[j] & UINT32_MAX] = (uint32_t)j;

	rng_seed(&r, w->params.seed, STREAM_RESENDS);
	for (uint64_t i = 0; i < unique_count; i++)
		keys[i] = (uint64_t)position[i] * 2 << 32 | i;
	for (uint64_t k = 0; k < resend_count; k++) {
		uint32_t o = (uint32_t)rng_below64(&r, unique_count);
		uint64_t delay = rng_below(&r, 100) < RETRY_SOON_PERCENT
					 ? 1 + rng_below64(&r, soon_span)
					 : soon_span + rng_below64(&r, late_span);
		original[k] = o;
		keys[unique_count + k] = ((position[o] + delay) * 2 + 1) << 32 | (unique_count + k);
	}
	qsort(keys, total, sizeof(*keys), compare_u64);
	for (uint64_t j = 0; j < total; j++) {
		uint64_t entry = keys[j] & UINT32_MAX;
		delivery[j] = entry < unique_count ? (uint32_t)entry
						   : original[entry - unique_count];
	}
	free(keys);
	free(position);
	free(original);
	return delivery;
}

/* Cuts delivery into windows and per-tenant batches; fills w->events. */
static int batches_build(workload *w, const uint32_t *delivery, const tally_event *unique,
			 const uint32_t *tenant_of)
{
	uint64_t total = w->event_count;
	uint32_t window = w->params.window_events;
	w->window_count = (total + window - 1) / window;
	w->events = malloc(sizeof(*w->events) * total);
	w->batches = malloc(sizeof(*w->batches) * total);
	w->window_batch = malloc(sizeof(*w->window_batch) * (w->window_count + 1));
	uint32_t *group_count = calloc(w->params.tenant_count, sizeof(*group_count));
	uint64_t *group_next = malloc(sizeof(*group_next) * w->params.tenant_count);
	uint32_t *touched = malloc(sizeof(*touched) * window);
	uint8_t *active = calloc(w->params.tenant_count, 1);
	int rc = -ENOMEM;
	if (!w->events || !w->batches || !w->window_batch || !group_count || !group_next ||
	    !touched || !active)
		goto out;

	w->batch_count = 0;
	for (uint64_t win = 0; win < w->window_count; win++) {
		uint64_t begin = win * window;
		uint64_t end = begin + window < total ? begin + window : total;
		uint32_t touched_count = 0;
		for (uint64_t j = begin; j < end; j++) {
			uint32_t t = tenant_of[delivery[j]];
			if (group_count[t]++ == 0)
				touched[touched_count++] = t;
		}
		/* Tenants in order of first appearance; each group's events stay
		 * in delivery order. */
		w->window_batch[win] = w->batch_count;
		uint64_t offset = begin;
		for (uint32_t k = 0; k < touched_count; k++) {
			uint32_t t = touched[k];
			group_next[t] = offset;
			for (uint32_t done = 0; done < group_count[t];) {
				uint32_t n = group_count[t] - done;
				if (n > TALLY_BATCH_EVENTS_MAX)
					n = TALLY_BATCH_EVENTS_MAX;
				w->batches[w->batch_count++] =
					(workload_batch){.first = offset + done, .count = n, .tenant = t};
				done += n;
			}
			offset += group_count[t];
			active[t] = 1;
		}
		for (uint64_t j = begin; j < end; j++) {
			uint32_t u = delivery[j];
			w->events[group_next[tenant_of[u]]++] = unique[u];
		}
		for (uint32_t k = 0; k < touched_count; k++)
			group_count[touched[k]] = 0;
	}
	w->window_batch[w->window_count] = w->batch_count;
	workload_batch *shrunk = realloc(w->batches, sizeof(*w->batches) * (w->batch_count + 1));
	if (shrunk)
		w->batches = shrunk;
	w->active_tenant_count = 0;
	for (uint32_t t = 0; t < w->params.tenant_count; t++)
		w->active_tenant_count += active[t];
	rc = 0;
out:
	free(group_count);
	free(group_next);
	free(touched);
	free(active);
	return rc;
}

/* ---- Entry points ----------------------------------------------------------- */

int workload_generate(workload *w, const workload_params *params)
{
	memset(w, 0, sizeof(*w));
	w->params = *params;
	uint64_t total = params->event_count;
	uint32_t tenant_count = params->tenant_count;
	if (total < 1 || total > WORKLOAD_EVENTS_MAX || tenant_count < 1 ||
	    tenant_count > WORKLOAD_TENANTS_MAX || params->window_events < 1 ||
	    params->window_events > WORKLOAD_WINDOW_EVENTS_MAX)
		return -EINVAL;
	w->event_count = total;
	w->resend_count = total * RESEND_PER_MILLE / 1000;
	w->unique_count = total - w->resend_count;

	int rc = -ENOMEM;
	profiles p = {0};
	uint32_t *rank_tenant = malloc(sizeof(*rank_tenant) * tenant_count);
	double *tenant_prefix = zipf_prefix(tenant_count, TENANT_ZIPF_EXPONENT);
	double *dimension_prefix = NULL;
	int64_t *times = NULL;
	tally_event *unique = NULL;
	uint32_t *tenant_of = NULL, *delivery = NULL;
	w->tenant_names = malloc(sizeof(*w->tenant_names) * tenant_count);
	w->id_text = malloc(w->unique_count * 32 + 1);
	if (!rank_tenant || !tenant_prefix || !w->tenant_names || !w->id_text)
		goto out;

	/* Tenant names t00000.. are dealt to activity ranks at random, so a
	 * name says nothing about a tenant's size. */
	rng r;
	rng_seed(&r, params->seed, STREAM_TENANTS);
	int digits = 5;
	for (uint32_t n = tenant_count - 1; n >= 100000; n /= 10)
		digits++;
	for (uint32_t t = 0; t < tenant_count; t++) {
		snprintf(w->tenant_names[t], WORKLOAD_TENANT_NAME_SIZE, "t%0*u", digits, t);
		rank_tenant[t] = t;
	}
	for (uint32_t k = tenant_count - 1; k > 0; k--) {
		uint32_t j = rng_below(&r, (uint64_t)k + 1);
		uint32_t x = rank_tenant[k];
		rank_tenant[k] = rank_tenant[j];
		rank_tenant[j] = x;
	}
	if ((rc = profiles_build(w, &p, &r, rank_tenant, tenant_prefix, w->unique_count)))
		goto out;
	rc = -ENOMEM;
	uint32_t dimension_max = p.user_count_max > PROJECTS_MAX ? p.user_count_max : PROJECTS_MAX;
	if (!(dimension_prefix = zipf_prefix(dimension_max, DIMENSION_ZIPF_EXPONENT)))
		goto out;

	rng_seed(&r, params->seed, STREAM_TIMES);
	if (!(times = times_generate(&r, w->unique_count, params->end_us)))
		goto out;

	unique = malloc(sizeof(*unique) * w->unique_count);
	tenant_of = malloc(sizeof(*tenant_of) * w->unique_count);
	if (!unique || !tenant_of)
		goto out;
	rng_seed(&r, params->seed, STREAM_EVENTS);
	for (uint64_t i = 0; i < w->unique_count; i++)
		event_generate(&r, &p, rank_tenant, tenant_prefix, tenant_count, dimension_prefix,
			       w->id_text + 32 * i, times[i], &unique[i], &tenant_of[i]);
	free(times);
	times = NULL;

	if (!(delivery = delivery_build(w, w->unique_count, w->resend_count)))
		goto out;
	rc = batches_build(w, delivery, unique, tenant_of);
out:
	profiles_free(&p);
	free(rank_tenant);
	free(tenant_prefix);
	free(dimension_prefix);
	free(times);
	free(unique);
	free(tenant_of);
	free(delivery);
	if (rc)
		workload_free(w);
	return rc;
}

void workload_free(workload *w)
{
	free(w->tenant_names);
	free(w->events);
	free(w->batches);
	free(w->window_batch);
	free(w->id_text);
	while (w->arena) {
		workload_arena_block *next = w->arena->next;
		free(w->arena);
		w->arena = next;
	}
	memset(w, 0, sizeof(*w));
}
