/*
 * test_builder.c — proto/builder.c: events in, a columnar IngestBatch out
 * that packs, unpacks and decodes back to the same events, column by
 * column (dictionary-coded, bytes + lengths, and empty columns), checked
 * twice: by this file's own decoder and by the server's (server/batch.c).
 * Also pins the coding chosen per column, the size bound of
 * builder_bytes, reset, the tenant settings and the abandoned dictionary.
 *
 * Random tests print their seed; SEED=N replays one.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batch.h"
#include "builder.h"

/* ---- decoding, independent of the builder ---------------------------- */

/* The value of event i of a string column (NULL column: empty). */
static tally_client_str column_value(const Tally__V1__IngestBatch *m, const Tally__V1__StringColumn *c,
				     size_t i)
{
	if (!c || (c->n_len == 0 && c->n_code == 0))
		return (tally_client_str){NULL, 0};
	if (c->n_code) {
		cr_assert_lt(c->code[i], m->n_dict, "code in the dictionary");
		const ProtobufCBinaryData *d = &m->dict[c->code[i]];
		return (tally_client_str){(const char *)d->data, (uint32_t)d->len};
	}
	size_t at = 0;
	for (size_t k = 0; k < i; k++)
		at += c->len[k];
	return (tally_client_str){(const char *)c->bytes.data + at, c->len[i]};
}

static void expect_str(tally_client_str got, tally_client_str want, const char *what, size_t i)
{
	cr_assert_eq(got.len, want.len, "%s of event %zu: length %u, want %u", what, i, got.len, want.len);
	if (want.len)
		cr_assert_eq(memcmp(got.ptr, want.ptr, want.len), 0, "%s of event %zu", what, i);
}

/* Column shapes the protocol allows: n entries or none. */
static void expect_shape(const Tally__V1__IngestBatch *m, const Tally__V1__StringColumn *c, size_t n,
			 const char *what)
{
	if (!c)
		return;
	cr_assert(!(c->n_len && c->n_code), "%s: lengths and codes both given", what);
	cr_assert(c->n_len == 0 || c->n_len == n, "%s: %zu lengths for %zu events", what, c->n_len, n);
	cr_assert(c->n_code == 0 || c->n_code == n, "%s: %zu codes for %zu events", what, c->n_code, n);
	if (c->n_code)
		cr_assert_eq(c->bytes.len, 0, "%s: bytes with codes", what);
	if (c->n_len) {
		size_t sum = 0;
		for (size_t i = 0; i < n; i++)
			sum += c->len[i];
		cr_assert_eq(sum, c->bytes.len, "%s: lengths add up to the bytes", what);
	}
	(void)m;
}

/*
 * Packs the builder's message in a Request, checks the size bound, unpacks
 * it and compares every column of every event with want[]; then decodes it
 * again with the server's batch_decode. Returns the unpacked request (the
 * caller inspects codings, then frees it).
 */
static Tally__V1__Request *round_trip(builder *b, const tally_client_event *want, size_t n)
{
	Tally__V1__IngestBatch batch;
	cr_assert_eq(builder_message(b, &batch), 0);
	Tally__V1__Request req = TALLY__V1__REQUEST__INIT;
	req.request_id = UINT64_MAX; /* the largest id the bound must cover */
	req.body_case = TALLY__V1__REQUEST__BODY_INGEST;
	req.ingest = &batch;
	size_t size = tally__v1__request__get_packed_size(&req);
	cr_assert_geq(builder_bytes(b), size, "builder_bytes %zu below the packed size %zu", builder_bytes(b),
		      size);
	uint8_t *buf = malloc(size ? size : 1);
	cr_assert_eq(tally__v1__request__pack(&req, buf), size);
	Tally__V1__Request *got = tally__v1__request__unpack(NULL, size, buf);
	free(buf);
	cr_assert_not_null(got);
	cr_assert_eq(got->body_case, TALLY__V1__REQUEST__BODY_INGEST);
	const Tally__V1__IngestBatch *m = got->ingest;
	cr_assert_eq(m->n_time_us, n);
	const Tally__V1__StringColumn *columns[] = {m->event_id, m->type, m->project, m->agent, m->model, m->user};
	const char *names[] = {"event_id", "type", "project", "agent", "model", "user"};
	for (int k = 0; k < 6; k++)
		expect_shape(m, columns[k], n, names[k]);
	cr_assert(m->n_status == 0 || m->n_status == n);
	cr_assert(m->n_duration_ms == 0 || m->n_duration_ms == n);
	cr_assert(m->n_tokens_in == 0 || m->n_tokens_in == n);
	cr_assert(m->n_tokens_out == 0 || m->n_tokens_out == n);
	cr_assert(m->n_cost_micros == 0 || m->n_cost_micros == n);
	for (size_t i = 0; i < n; i++) {
		const tally_client_event *w = &want[i];
		const tally_client_str wants[] = {w->event_id, w->type, w->project, w->agent, w->model, w->user};
		for (int k = 0; k < 6; k++)
			expect_str(column_value(m, columns[k], i), wants[k], names[k], i);
		cr_assert_eq(m->time_us[i], w->time_us, "time of event %zu", i);
		cr_assert_eq(m->n_status ? m->status[i] : 0, w->status, "status of event %zu", i);
		cr_assert_eq(m->n_duration_ms ? m->duration_ms[i] : 0, w->duration_ms, "duration of %zu", i);
		cr_assert_eq(m->n_tokens_in ? m->tokens_in[i] : 0, w->tokens_in, "tokens_in of %zu", i);
		cr_assert_eq(m->n_tokens_out ? m->tokens_out[i] : 0, w->tokens_out, "tokens_out of %zu", i);
		cr_assert_eq(m->n_cost_micros ? m->cost_micros[i] : 0, w->cost_micros, "cost of %zu", i);
	}

	/* The server's decoder agrees, column checks included. */
	tally_event *events = calloc(n ? n : 1, sizeof(*events));
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	size_t count = 0;
	cr_assert_eq(batch_decode(m, events, n, &count, errmsg), BATCH_OK, "%s", errmsg);
	cr_assert_eq(count, n);
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(events[i].event_id.len, want[i].event_id.len);
		cr_assert_eq(events[i].user.len, want[i].user.len);
		cr_assert_eq(events[i].model.len, want[i].model.len);
		if (want[i].model.len)
			cr_assert_eq(memcmp(events[i].model.ptr, want[i].model.ptr, want[i].model.len), 0);
		cr_assert_eq(events[i].cost_micros, want[i].cost_micros);
	}
	free(events);
	return got;
}

static tally_client_str cstr(const char *s)
{
	return (tally_client_str){s, (uint32_t)strlen(s)};
}

/* ---- random events ---------------------------------------------------- */

static uint64_t rng_state;
static uint64_t rng_next(void)
{
	/* splitmix64 */
	uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static uint64_t seed_get(void)
{
	const char *env = getenv("SEED");
	uint64_t seed = env && env[0] ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
	fprintf(stderr, "test_builder: SEED=%" PRIu64 "\n", seed);
	return seed;
}

/* Random bytes (any value, NUL included) of length 0..len_max into a pool. */
static tally_client_str random_str(char **pool, uint32_t len_max)
{
	uint32_t len = (uint32_t)(rng_next() % (len_max + 1));
	char *p = *pool;
	for (uint32_t i = 0; i < len; i++)
		p[i] = (char)rng_next();
	*pool += len;
	return (tally_client_str){len ? p : NULL, len};
}

/* Picks one of `choices` low-cardinality values, or a fresh random one. */
static tally_client_str random_dim(char **pool, const char *const *choices, size_t choice_count,
				   uint32_t fresh_percent)
{
	if (rng_next() % 100 < fresh_percent)
		return random_str(pool, 40);
	return cstr(choices[rng_next() % choice_count]);
}

static uint64_t random_number(void)
{
	switch (rng_next() % 4) {
	case 0: return 0;
	case 1: return rng_next() % 1000;
	case 2: return rng_next();
	default: return UINT64_MAX - rng_next() % 3;
	}
}

static void random_events(tally_client_event *events, size_t n, char *pool)
{
	static const char *const types[] = {"llm.call", "tool.call", "agent.run", ""};
	static const char *const projects[] = {"alpha", "beta", "gamma"};
	static const char *const models[] = {"gpt-x", "claude-y", "local-z", "m"};
	for (size_t i = 0; i < n; i++) {
		tally_client_event *e = &events[i];
		memset(e, 0, sizeof(*e));
		e->event_id = random_str(&pool, 64);
		e->time_us = (int64_t)rng_next();
		e->type = random_dim(&pool, types, 4, 2);
		e->project = random_dim(&pool, projects, 3, 10);
		e->agent = random_str(&pool, 3); /* many short values */
		e->model = random_dim(&pool, models, 4, 0);
		e->user = random_str(&pool, 20);
		e->status = (uint32_t)random_number();
		e->duration_ms = (uint32_t)random_number();
		e->tokens_in = random_number();
		e->tokens_out = random_number();
		e->cost_micros = (int64_t)random_number();
	}
}

/* ---- tests -------------------------------------------------------------- */

/* Description: one event with every field set comes back field for field;
 * the repeated-nothing dimension columns are bytes (a 1-event dictionary
 * costs more), tenant and flags are carried. */
Test(builder, one_event_round_trip)
{
	builder b;
	builder_init(&b);
	cr_assert_eq(builder_set_tenant(&b, "acme"), 0);
	builder_set_create_tenant(&b, true);
	builder_set_backfill(&b, true);
	tally_client_event e = {
		.event_id = cstr("evt-1"), .time_us = 1790000000123456, .type = cstr("llm.call"),
		.project = cstr("alpha"), .agent = cstr("planner"), .model = cstr("gpt-x"),
		.user = cstr("u-42"), .status = 2, .duration_ms = 812, .tokens_in = 1200,
		.tokens_out = 340, .cost_micros = -5,
	};
	cr_assert_eq(builder_add(&b, &e), 0);
	cr_assert_eq(builder_count(&b), 1);
	Tally__V1__Request *got = round_trip(&b, &e, 1);
	const Tally__V1__IngestBatch *m = got->ingest;
	cr_expect_str_eq(m->tenant, "acme");
	cr_expect(m->create_tenant);
	cr_expect(m->backfill);
	cr_expect_eq(m->n_dict, 0);
	cr_expect_eq(m->model->n_len, 1);
	cr_expect_eq(m->model->n_code, 0);
	cr_expect_eq(m->cost_micros[0], -5);
	tally__v1__request__free_unpacked(got, NULL);
	builder_free(&b);
}

/* Description: 1,000 events with 3 types and 2 models: those columns are
 * dictionary codes (the dictionary holds exactly the distinct values, in
 * column order, codes shifted per column), event ids and unique users are
 * bytes + lengths; the columnar message is far smaller than the strings. */
Test(builder, low_cardinality_columns_are_dictionary_coded)
{
	builder b;
	builder_init(&b);
	static const char *const types[] = {"llm.call", "tool.call", "agent.run"};
	static const char *const models[] = {"gpt-x", "claude-y"};
	enum { N = 1000 };
	tally_client_event *events = calloc(N, sizeof(*events));
	char (*ids)[16] = calloc(N, 16);
	for (int i = 0; i < N; i++) {
		snprintf(ids[i], 16, "e%07d", i);
		events[i].event_id = cstr(ids[i]);
		events[i].time_us = 1790000000000000 + i;
		events[i].type = cstr(types[i % 3]);
		events[i].model = cstr(models[i % 2]);
		events[i].user = cstr(ids[i]); /* unique: the dictionary would not pay */
		events[i].tokens_in = (uint64_t)i;
		cr_assert_eq(builder_add(&b, &events[i]), 0);
	}
	Tally__V1__Request *got = round_trip(&b, events, N);
	const Tally__V1__IngestBatch *m = got->ingest;
	cr_expect_eq(m->type->n_code, N);
	cr_expect_eq(m->model->n_code, N);
	cr_expect_eq(m->user->n_len, N, "unique users as bytes");
	cr_expect_eq(m->event_id->n_len, N);
	cr_expect_null(m->project, "all-empty column sent empty");
	cr_expect_null(m->agent);
	cr_assert_eq(m->n_dict, 5);
	const char *dict[] = {"llm.call", "tool.call", "agent.run", "gpt-x", "claude-y"};
	for (int d = 0; d < 5; d++) {
		cr_expect_eq(m->dict[d].len, strlen(dict[d]));
		cr_expect_eq(memcmp(m->dict[d].data, dict[d], strlen(dict[d])), 0, "dict[%d]", d);
	}
	cr_expect_eq(m->model->code[0], 3, "model codes come after the 3 types");
	cr_expect_eq(m->model->code[1], 4);
	cr_expect_eq(m->n_status, 0, "all-zero numeric column sent empty");
	cr_expect_eq(m->n_cost_micros, 0);
	cr_expect_eq(m->n_tokens_in, N);
	size_t size = tally__v1__request__get_packed_size(got);
	cr_expect_lt(size, (size_t)N * 32, "packed %zu bytes", size);
	cr_expect_leq(builder_bytes(&b), size + 128, "bound %zu, packed %zu", builder_bytes(&b), size);
	tally__v1__request__free_unpacked(got, NULL);
	/* Building twice gives the same message (codes are shifted in a copy). */
	got = round_trip(&b, events, N);
	cr_expect_eq(got->ingest->model->code[0], 3);
	tally__v1__request__free_unpacked(got, NULL);
	builder_free(&b);
	free(ids);
	free(events);
}

/* Description: events whose strings are all empty and numbers all zero
 * give a message of time_us alone: every other column empty, no dict. */
Test(builder, all_empty_columns_are_sent_empty)
{
	builder b;
	builder_init(&b);
	tally_client_event events[3];
	memset(events, 0, sizeof(events));
	for (int i = 0; i < 3; i++) {
		events[i].time_us = i - 1; /* negative, zero and positive times */
		cr_assert_eq(builder_add(&b, &events[i]), 0);
	}
	Tally__V1__Request *got = round_trip(&b, events, 3);
	const Tally__V1__IngestBatch *m = got->ingest;
	cr_expect_null(m->event_id);
	cr_expect_null(m->type);
	cr_expect_null(m->user);
	cr_expect_eq(m->n_dict, 0);
	cr_expect_eq(m->n_status + m->n_duration_ms + m->n_tokens_in + m->n_tokens_out + m->n_cost_micros, 0);
	cr_expect_eq(m->time_us[0], -1);
	tally__v1__request__free_unpacked(got, NULL);

	/* An empty builder is a batch of no events. */
	builder_reset(&b);
	cr_assert_eq(builder_count(&b), 0);
	got = round_trip(&b, NULL, 0);
	cr_expect_eq(got->ingest->n_time_us, 0);
	tally__v1__request__free_unpacked(got, NULL);
	builder_free(&b);
}

/* Description: 65,536 events (the default batch limit) of random data
 * round trip; 64 KiB strings too. */
Test(builder, full_batch_and_long_strings)
{
	rng_state = seed_get();
	enum { N = 65536 };
	tally_client_event *events = calloc(N, sizeof(*events));
	char *pool = malloc((size_t)N * 200);
	random_events(events, N, pool);
	builder b;
	builder_init(&b);
	for (int i = 0; i < N; i++)
		cr_assert_eq(builder_add(&b, &events[i]), 0);
	cr_assert_eq(builder_count(&b), N);
	Tally__V1__Request *got = round_trip(&b, events, N);
	cr_expect_eq(got->ingest->model->n_code, N, "4 models: dictionary");
	cr_expect_eq(got->ingest->agent->n_len, N, "3-byte random agents: bytes");
	tally__v1__request__free_unpacked(got, NULL);

	builder_reset(&b);
	enum { LONG = 65536 };
	char *long_a = malloc(LONG), *long_b = malloc(LONG);
	memset(long_a, 'a', LONG);
	memset(long_b, 'b', LONG);
	tally_client_event two[2] = {
		{.event_id = {long_a, LONG}, .type = {long_b, LONG}, .user = {long_a, 100}},
		{.event_id = {long_b, LONG}, .type = {long_b, LONG}, .user = {long_b, LONG}},
	};
	for (int i = 0; i < 2; i++)
		cr_assert_eq(builder_add(&b, &two[i]), 0);
	got = round_trip(&b, two, 2);
	cr_expect_eq(got->ingest->type->n_code, 2, "a repeated long value is worth a dictionary");
	tally__v1__request__free_unpacked(got, NULL);
	builder_free(&b);
	free(long_a);
	free(long_b);
	free(pool);
	free(events);
}

/* Description: random batches of random sizes, built in one builder reset
 * between them, round trip and stay under their builder_bytes bound;
 * before each add, builder_bytes_with foresees that bound exactly. */
Test(builder, random_batches_round_trip)
{
	rng_state = seed_get();
	enum { N_MAX = 3000, ROUNDS = 40 };
	tally_client_event *events = calloc(N_MAX, sizeof(*events));
	char *pool = malloc((size_t)N_MAX * 200);
	builder b;
	builder_init(&b);
	for (int round = 0; round < ROUNDS; round++) {
		size_t n = rng_next() % (N_MAX + 1);
		random_events(events, n, pool);
		builder_reset(&b);
		for (size_t i = 0; i < n; i++) {
			size_t with = builder_bytes_with(&b, &events[i]);
			cr_assert_eq(builder_add(&b, &events[i]), 0);
			cr_assert_eq(builder_bytes(&b), with, "round %d event %zu", round, i);
		}
		Tally__V1__Request *got = round_trip(&b, events, n);
		tally__v1__request__free_unpacked(got, NULL);
	}
	builder_free(&b);
	free(pool);
	free(events);
}

/* Description: the bound holds where a column's dictionary only just
 * beats its bytes: 120 distinct one-byte types (a dictionary a few bytes
 * cheaper than the bytes) ahead of four columns of 20 distinct 100-byte
 * values, whose codes the types' entries push past 127 (two bytes each).
 * Batches of 300 to 420 such events round trip under builder_bytes.
 * Before, the bound took the types for bytes, so the codes after them for
 * one byte: 358 events packed to 17,741 bytes against a bound of 16,495,
 * and `tally ingest` sent batches over the frame limit. */
Test(builder, the_bound_holds_where_a_dictionary_only_just_beats_bytes)
{
	enum { N_MAX = 420 };
	static char ids[N_MAX][16], values[20][100], types[120];
	static tally_client_event events[N_MAX];
	for (int v = 0; v < 20; v++) {
		memset(values[v], 'a' + v, sizeof(values[v]));
		values[v][0] = (char)('A' + v);
	}
	for (int t = 0; t < 120; t++) /* bytes 1..121 but '\n' */
		types[t] = (char)(t + 1 + (t + 1 >= '\n'));
	builder b;
	builder_init(&b);
	for (int n = 300; n <= N_MAX; n += 2) {
		builder_reset(&b);
		for (int i = 0; i < n; i++) {
			tally_client_event *e = &events[i];
			memset(e, 0, sizeof(*e));
			snprintf(ids[i], sizeof(ids[i]), "%08d", i);
			e->event_id = (tally_client_str){ids[i], 8};
			e->time_us = INT64_C(1700000000000000) + i;
			e->type = (tally_client_str){&types[i % 120], 1};
			e->project = (tally_client_str){values[i % 20], 100};
			e->agent = (tally_client_str){values[(i + 3) % 20], 100};
			e->model = (tally_client_str){values[(i + 7) % 20], 100};
			e->user = (tally_client_str){values[(i + 11) % 20], 100};
			cr_assert_eq(builder_add(&b, e), 0);
		}
		Tally__V1__Request *got = round_trip(&b, events, (size_t)n);
		tally__v1__request__free_unpacked(got, NULL);
	}
	builder_free(&b);
}

/* Description: a column with more than BUILDER_DICT_STRINGS_MAX distinct
 * values stops being a dictionary candidate and is sent as bytes, while
 * values repeated after that still decode right; builder_bytes_with
 * foresees the bound across the switch. */
Test(builder, too_many_distinct_values_abandon_the_dictionary)
{
	builder b;
	builder_init(&b);
	enum { N = BUILDER_DICT_STRINGS_MAX * 3 };
	tally_client_event *events = calloc(N, sizeof(*events));
	char (*names)[16] = calloc(N, 16);
	for (int i = 0; i < N; i++) {
		/* Each value once for the first MAX + 1 events, then repeats. */
		int v = i <= BUILDER_DICT_STRINGS_MAX ? i : i % 7;
		snprintf(names[i], 16, "project-%05d", v);
		events[i].time_us = i;
		events[i].project = cstr(names[i]);
		events[i].model = cstr("same-model-every-time");
		size_t with = builder_bytes_with(&b, &events[i]);
		cr_assert_eq(builder_add(&b, &events[i]), 0);
		cr_assert_eq(builder_bytes(&b), with, "event %d", i);
	}
	cr_expect(b.strings[BUILDER_PROJECT].dict_abandoned);
	Tally__V1__Request *got = round_trip(&b, events, N);
	cr_expect_eq(got->ingest->project->n_len, N);
	cr_expect_eq(got->ingest->model->n_code, N);
	cr_expect_eq(got->ingest->n_dict, 1);
	tally__v1__request__free_unpacked(got, NULL);
	/* After a reset the column is a candidate again. */
	builder_reset(&b);
	for (int i = 0; i < 100; i++)
		cr_assert_eq(builder_add(&b, &events[BUILDER_DICT_STRINGS_MAX + 1 + i]), 0);
	got = round_trip(&b, events + BUILDER_DICT_STRINGS_MAX + 1, 100);
	cr_expect_eq(got->ingest->project->n_code, 100);
	cr_expect_eq(got->ingest->n_dict, 8, "7 projects and 1 model");
	tally__v1__request__free_unpacked(got, NULL);
	builder_free(&b);
	free(names);
	free(events);
}

/* Description: a tenant name over 64 bytes is -EINVAL and leaves the old
 * one; NULL clears it; the tenant survives a reset. */
Test(builder, tenant_settings)
{
	builder b;
	builder_init(&b);
	char name[BUILDER_TENANT_SIZE_MAX + 2];
	memset(name, 't', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	cr_assert_eq(builder_set_tenant(&b, "acme"), 0);
	cr_expect_eq(builder_set_tenant(&b, name), -EINVAL);
	builder_reset(&b);
	Tally__V1__IngestBatch m;
	cr_assert_eq(builder_message(&b, &m), 0);
	cr_expect_str_eq(m.tenant, "acme");
	cr_expect_not(m.create_tenant);
	name[BUILDER_TENANT_SIZE_MAX] = '\0';
	cr_expect_eq(builder_set_tenant(&b, name), 0, "exactly 64 bytes");
	cr_assert_eq(builder_set_tenant(&b, NULL), 0);
	cr_assert_eq(builder_message(&b, &m), 0);
	cr_expect_str_eq(m.tenant, "");
	builder_free(&b);
}

/* Events whose type column turns into a worthwhile dictionary at about the
 * 240th event (120 distinct 2-byte types, cycling), ahead of four columns
 * of 20 distinct 100-byte values: from then on those columns' codes come
 * after the types' 120 entries, past 127, two bytes each. ids[] and
 * types[] hold the strings (N_SHIFT events). */
enum { N_SHIFT = 400 };
static void shifting_events(tally_client_event *events, char ids[][16], char types[][4],
			    char values[][100])
{
	for (int v = 0; v < 20; v++) {
		memset(values[v], 'a' + v, 100);
		values[v][0] = (char)('A' + v);
	}
	for (int t = 0; t < 120; t++)
		snprintf(types[t], 4, "%02x", t);
	for (int i = 0; i < N_SHIFT; i++) {
		tally_client_event *e = &events[i];
		memset(e, 0, sizeof(*e));
		snprintf(ids[i], 16, "%08d", i);
		e->event_id = (tally_client_str){ids[i], 8};
		e->time_us = INT64_C(1700000000000000) + i;
		e->type = (tally_client_str){types[i % 120], 2};
		e->project = (tally_client_str){values[i % 20], 100};
		e->agent = (tally_client_str){values[(i + 3) % 20], 100};
		e->model = (tally_client_str){values[(i + 7) % 20], 100};
		e->user = (tally_client_str){values[(i + 11) % 20], 100};
	}
}

/* Description: where one event shifts every later column's codes to two
 * bytes, builder_bytes_with foresees the bound after it exactly, and the
 * bound rises by more than the event's strings plus 128 bytes (what
 * `tally ingest` allowed an event before 2026-12-02, when it sent batches
 * over the server's frame limit); the packed batch stays under it. */
Test(builder, bytes_with_foresees_an_event_that_widens_every_code)
{
	builder b;
	builder_init(&b);
	static char ids[N_SHIFT][16], types[120][4], values[20][100];
	static tally_client_event shift[N_SHIFT];
	shifting_events(shift, ids, types, values);
	builder_reset(&b);
	size_t jump_max = 0, allowance = 0;
	for (int i = 0; i < N_SHIFT; i++) {
		size_t before = builder_bytes(&b), with = builder_bytes_with(&b, &shift[i]);
		cr_assert_eq(builder_add(&b, &shift[i]), 0);
		cr_assert_eq(builder_bytes(&b), with, "event %d", i);
		if (with - before > jump_max) {
			jump_max = with - before;
			allowance = 2 + 8 + 4 * 100 + 128;
		}
	}
	cr_expect_gt(jump_max, allowance, "one event raised the bound by %zu bytes", jump_max);
	Tally__V1__Request *got = round_trip(&b, shift, N_SHIFT);
	tally__v1__request__free_unpacked(got, NULL);
	builder_free(&b);
}
