/*
 * test_batchrec.c — the WAL batch payload encoder (engine/batchrec.h).
 *
 * One payload pinned byte by byte; then random payloads decoded by a
 * decoder written here from docs/formats.md and compared with the events
 * they were made from (prints its seed); then the dictionary's edges:
 * strings whose hashes collide, a payload with nothing to hold, the
 * generation counter's wrap, and the largest event against the bound on a
 * batch's size.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "batchrec.h"
#include "strdict.h"
#include "support/rng.h"

static tally_str str_of(const char *s)
{
	return (tally_str){s, s ? (uint32_t)strlen(s) : 0};
}

/* The packed id and dimension hashes of events[0, n), as ingest makes them. */
static void prepare(const tally_event *events, size_t n, uint8_t (*packed)[ID_PACKED_SIZE_MAX],
		    packed_id *ids, uint64_t (*dim_hash)[DIM_COUNT])
{
	for (size_t i = 0; i < n; i++) {
		size_t size;
		ids[i].kind = (uint8_t)id_pack(events[i].event_id.ptr, events[i].event_id.len,
					       packed[i], &size);
		ids[i].size = (uint8_t)size;
		ids[i].bytes = packed[i];
		ids[i].hash = 0; /* not part of the payload */
		tally_str dims[DIM_COUNT];
		event_dims(&events[i], dims);
		for (int d = 0; d < DIM_COUNT; d++)
			dim_hash[i][d] = strdict_hash(dims[d].ptr, dims[d].len);
	}
}

Test(batchrec, one_payload_byte_by_byte)
{
	/* Event 1 is left out (a duplicate); "x" is event 0's project and
	 * agent and event 2's agent: one dictionary entry. */
	tally_event events[3] = {
		{.event_id = str_of("k1"), .time_us = 1000, .type = str_of("t"),
		 .project = str_of("x"), .agent = str_of("x"), .model = {NULL, 0},
		 .user = str_of("u"), .status = 1, .tokens_in = 300, .tokens_out = 2,
		 .cost_micros = -1, .duration_ms = 5},
		{.event_id = str_of("k2"), .time_us = 2000, .type = str_of("t"),
		 .project = str_of("p"), .agent = str_of("q"), .user = str_of("v")},
		{.event_id = str_of("k3"), .time_us = 900, .type = str_of("t"),
		 .project = str_of("y"), .agent = str_of("x"), .model = str_of("m"),
		 .user = str_of("u"), .status = 0, .tokens_in = 1, .tokens_out = 0,
		 .cost_micros = 7, .duration_ms = 200},
	};
	tally_ingest_result results[3] = {{TALLY_ACCEPTED, 0}, {TALLY_DUPLICATE, 0},
					  {TALLY_ACCEPTED, 0}};
	uint8_t packed[3][ID_PACKED_SIZE_MAX];
	packed_id ids[3];
	uint64_t dim_hash[3][DIM_COUNT];
	prepare(events, 3, packed, ids, dim_hash);
	cr_assert_eq(ids[0].size, 2, "\"k1\" (not hex) is packed as its 2 bytes of text");

	batchrec_encoder enc = {0};
	bytebuf out = {0};
	uint32_t encoded = 99;
	cr_assert_eq(batchrec_append(&enc, &out, "ab", events, ids, dim_hash, results, 3,
				     TALLY_ACCEPTED, &encoded), 0);
	cr_expect_eq(encoded, 2);
	const uint8_t kind = ids[0].kind;
	const uint8_t want[] = {
		48,                       /* entry size */
		2, 'a', 'b',              /* tenant */
		2,                        /* events */
		6,                        /* strings: t x "" u y m */
		1, 't', 1, 'x', 0, 1, 'u', 1, 'y', 1, 'm',
		/* event 0 */
		(uint8_t)(kind | 1 << 4), 2, 'k', '1',
		0xd0, 0x0f,               /* zigzag(1000) = 2000 */
		0, 1, 1, 2, 3,            /* codes */
		0xac, 0x02, 2,            /* 300, 2 */
		1,                        /* zigzag(-1) */
		5,
		/* event 2 */
		kind, 2, 'k', '3',
		199, 1,                   /* zigzag(900 - 1000) = 199 */
		0, 4, 1, 5, 3,
		1, 0, 14, 0xc8, 0x01,     /* 1, 0, zigzag(7), 200 */
	};
	cr_assert_eq(out.size, sizeof(want), "entry of %zu bytes, expected %zu", out.size,
		     sizeof(want));
	for (size_t i = 0; i < sizeof(want); i++)
		cr_expect_eq(out.data[i], want[i], "byte %zu: %u, expected %u", i, out.data[i],
			     want[i]);
	cr_expect_eq(want[0], sizeof(want) - 1, "the size prefix counts the payload");
	bytebuf_free(&out);
	batchrec_encoder_free(&enc);
}

/* ---- a decoder, from docs/formats.md ---------------------------------- */

typedef struct decoded_event {
	uint8_t kind, status, id_size;
	uint8_t id[ID_PACKED_SIZE_MAX];
	int64_t time_us;
	tally_str dims[DIM_COUNT];
	uint64_t tokens_in, tokens_out, duration_ms;
	int64_t cost_micros;
} decoded_event;

enum { DECODED_EVENTS_MAX = 4096 };

typedef struct decoded {
	char tenant[TALLY_TENANT_SIZE_MAX + 1];
	uint64_t count, string_count;
	tally_str strings[DIM_COUNT * DECODED_EVENTS_MAX];
	decoded_event events[DECODED_EVENTS_MAX];
	size_t entry_size; /* size prefix + payload */
} decoded;

static uint64_t get(const uint8_t **p, const uint8_t *end)
{
	uint64_t v;
	cr_assert_eq(varint_get(p, end, &v), 0, "a varint");
	return v;
}

static void decode(const uint8_t *entry, size_t available, decoded *d)
{
	const uint8_t *p = entry, *end = entry + available;
	uint64_t size = get(&p, end);
	cr_assert_leq(size, (uint64_t)(end - p));
	end = p + size;
	d->entry_size = (size_t)(end - entry);
	uint64_t name_size = get(&p, end);
	cr_assert(name_size >= 1 && name_size <= TALLY_TENANT_SIZE_MAX);
	memcpy(d->tenant, p, name_size);
	d->tenant[name_size] = 0;
	p += name_size;
	d->count = get(&p, end);
	d->string_count = get(&p, end);
	cr_assert_leq(d->count, DECODED_EVENTS_MAX);
	cr_assert_leq(d->string_count, DIM_COUNT * DECODED_EVENTS_MAX);
	for (uint64_t i = 0; i < d->string_count; i++) {
		uint64_t n = get(&p, end);
		cr_assert_leq(n, (uint64_t)(end - p));
		d->strings[i] = (tally_str){(const char *)p, (uint32_t)n};
		p += n;
	}
	int64_t previous = 0;
	for (uint64_t i = 0; i < d->count; i++) {
		decoded_event *e = &d->events[i];
		cr_assert_geq(end - p, 2);
		e->kind = *p & 15;
		e->status = *p++ >> 4;
		e->id_size = *p++;
		cr_assert_leq(e->id_size, (size_t)(end - p));
		memcpy(e->id, p, e->id_size);
		p += e->id_size;
		e->time_us = previous + zigzag_decode(get(&p, end));
		previous = e->time_us;
		for (int k = 0; k < DIM_COUNT; k++) {
			uint64_t code = get(&p, end);
			cr_assert_lt(code, d->string_count, "a code past the dictionary");
			e->dims[k] = d->strings[code];
		}
		e->tokens_in = get(&p, end);
		e->tokens_out = get(&p, end);
		e->cost_micros = zigzag_decode(get(&p, end));
		e->duration_ms = get(&p, end);
	}
	cr_assert_eq(p, end, "the payload ends with its last event");
}

static int str_eq(tally_str a, tally_str b)
{
	return a.len == b.len && (!a.len || !memcmp(a.ptr, b.ptr, a.len));
}

/* d holds exactly the events of events[0, n) whose result is `code`, and
 * its dictionary holds each distinct string once, in order of first use. */
static void expect_payload(const decoded *d, const char *tenant, const tally_event *events,
			   const packed_id *ids, const tally_ingest_result *results, size_t n,
			   uint8_t code, const char *what)
{
	cr_assert_str_eq(d->tenant, tenant, "%s", what);
	uint64_t j = 0, next_string = 0;
	for (size_t i = 0; i < n; i++) {
		if (results[i].code != code)
			continue;
		cr_assert_lt(j, d->count, "%s: event %zu missing", what, i);
		const decoded_event *e = &d->events[j++];
		const tally_event *x = &events[i];
		cr_assert_eq(e->kind, ids[i].kind, "%s event %zu", what, i);
		cr_assert_eq(e->id_size, ids[i].size, "%s event %zu", what, i);
		cr_assert_eq(memcmp(e->id, ids[i].bytes, e->id_size), 0, "%s event %zu", what, i);
		cr_assert_eq(e->status, x->status, "%s event %zu", what, i);
		cr_assert_eq(e->time_us, x->time_us, "%s event %zu", what, i);
		cr_assert_eq(e->tokens_in, x->tokens_in, "%s event %zu", what, i);
		cr_assert_eq(e->tokens_out, x->tokens_out, "%s event %zu", what, i);
		cr_assert_eq(e->cost_micros, x->cost_micros, "%s event %zu", what, i);
		cr_assert_eq(e->duration_ms, x->duration_ms, "%s event %zu", what, i);
		tally_str dims[DIM_COUNT];
		event_dims(x, dims);
		for (int k = 0; k < DIM_COUNT; k++) {
			cr_assert(str_eq(e->dims[k], dims[k]), "%s event %zu dimension %d", what, i,
				  k);
			/* First use: it is the next dictionary entry, or an earlier one. */
			if (next_string < d->string_count &&
			    str_eq(d->strings[next_string], dims[k]))
				next_string++;
		}
	}
	cr_assert_eq(j, d->count, "%s: %" PRIu64 " events, expected %" PRIu64, what, d->count, j);
	cr_expect_eq(next_string, d->string_count, "%s: the dictionary is in order of first use",
		     what);
	for (uint64_t a = 0; a < d->string_count; a++)
		for (uint64_t b = a + 1; b < d->string_count; b++)
			cr_assert(!str_eq(d->strings[a], d->strings[b]),
				  "%s: strings %" PRIu64 " and %" PRIu64 " are equal", what, a, b);
}

/* Description: random batches of up to 64 events over small string pools
 * (so strings repeat within and across dimensions; the pool of users is
 * large enough to grow the encoder's table mid-payload), random result
 * codes, one encoder reused for every payload, several entries appended to
 * one buffer: each entry decodes to exactly the chosen events, in order,
 * with a dictionary of distinct strings in order of first use. Prints its
 * seed. */
Test(batchrec, random_payloads_decode_to_their_events)
{
	enum { ROUNDS = 300, EVENTS_MAX = 64, ENTRIES_MAX = 4 };
	static const char *const pool[] = {"a", "b", "llm.call", "gpt-4o", "",
					   "a-rather-longer-string-of-34-bytes"};
	test_rng rng;
	test_rng_seed(&rng, "test_batchrec", "random_payloads_decode_to_their_events");
	static char users[EVENTS_MAX][16], id_text[EVENTS_MAX][40];
	static tally_event events[ENTRIES_MAX][EVENTS_MAX];
	static tally_ingest_result results[ENTRIES_MAX][EVENTS_MAX];
	static uint8_t packed[ENTRIES_MAX][EVENTS_MAX][ID_PACKED_SIZE_MAX];
	static packed_id ids[ENTRIES_MAX][EVENTS_MAX];
	static uint64_t dim_hash[ENTRIES_MAX][EVENTS_MAX][DIM_COUNT];
	static decoded d;
	size_t pool_size = sizeof(pool) / sizeof(pool[0]);
	for (int u = 0; u < EVENTS_MAX; u++)
		snprintf(users[u], sizeof(users[u]), "user-%d", u);
	batchrec_encoder enc = {0};
	bytebuf out = {0};
	for (int round = 0; round < ROUNDS; round++) {
		bytebuf_reset(&out);
		size_t entries = 1 + test_rng_below(&rng, ENTRIES_MAX);
		size_t count[ENTRIES_MAX];
		uint32_t encoded[ENTRIES_MAX];
		size_t at[ENTRIES_MAX];
		uint8_t code = test_rng_below(&rng, 2) ? TALLY_ACCEPTED : TALLY_DUPLICATE;
		for (size_t b = 0; b < entries; b++) {
			count[b] = test_rng_below(&rng, EVENTS_MAX + 1);
			int64_t t = (int64_t)test_rng_next(&rng) >> 2;
			for (size_t i = 0; i < count[b]; i++) {
				tally_event *e = &events[b][i];
				/* Ids of every kind: hex, UUID-like, and plain text. */
				uint64_t v = test_rng_next(&rng);
				switch (test_rng_below(&rng, 3)) {
				case 0:
					snprintf(id_text[i], sizeof(id_text[i]), "%016" PRIx64 "%016" PRIx64,
						 v, v * 31);
					break;
				case 1:
					snprintf(id_text[i], sizeof(id_text[i]),
						 "%08" PRIx64 "-%04x-%04x-%04x-%012" PRIx64,
						 v >> 32, (unsigned)(v & 0xffff), (unsigned)(v >> 16 & 0xffff),
						 (unsigned)(v >> 8 & 0xffff), v & 0xffffffffffffu);
					break;
				default:
					snprintf(id_text[i], sizeof(id_text[i]), "id:%" PRIu64, v % 1000);
				}
				t += (int64_t)test_rng_below(&rng, 2000000) - 1000000;
				*e = (tally_event){
					.event_id = str_of(id_text[i]),
					.time_us = t,
					.type = str_of(pool[test_rng_below(&rng, 3)]),
					.project = str_of(pool[test_rng_below(&rng, pool_size)]),
					.agent = str_of(pool[test_rng_below(&rng, pool_size)]),
					.model = test_rng_below(&rng, 3) ? str_of(pool[test_rng_below(&rng, pool_size)])
									 : (tally_str){NULL, 0},
					.user = str_of(users[test_rng_below(&rng, EVENTS_MAX)]),
					.status = (uint32_t)test_rng_below(&rng, TALLY_STATUS_COUNT),
					.tokens_in = test_rng_next(&rng) >> test_rng_below(&rng, 64),
					.tokens_out = test_rng_below(&rng, 100000),
					.cost_micros = (int64_t)test_rng_next(&rng) >> test_rng_below(&rng, 64),
					.duration_ms = (uint32_t)test_rng_next(&rng),
				};
				results[b][i].code = test_rng_below(&rng, 4) ? code : TALLY_CONFLICT;
			}
			/* Ids are packed while id_text still holds this entry's. */
			prepare(events[b], count[b], packed[b], ids[b], dim_hash[b]);
			for (size_t i = 0; i < count[b]; i++)
				events[b][i].event_id = (tally_str){NULL, 0}; /* not read by the encoder */
			at[b] = out.size;
			cr_assert_eq(batchrec_append(&enc, &out, "tenant-1", events[b], ids[b],
						     (const uint64_t(*)[DIM_COUNT])dim_hash[b],
						     results[b], (uint32_t)count[b], code, &encoded[b]),
				     0);
		}
		size_t p = 0;
		for (size_t b = 0; b < entries; b++) {
			char what[64];
			snprintf(what, sizeof(what), "round %d entry %zu", round, b);
			size_t want = 0;
			for (size_t i = 0; i < count[b]; i++)
				want += results[b][i].code == code;
			cr_assert_eq(encoded[b], want, "%s", what);
			cr_assert_eq(at[b], p, "%s starts where the one before ends", what);
			if (!want)
				continue; /* nothing appended */
			decode(out.data + p, out.size - p, &d);
			expect_payload(&d, "tenant-1", events[b], ids[b], results[b], count[b], code,
				       what);
			p += d.entry_size;
		}
		cr_assert_eq(p, out.size, "round %d: the entries fill the buffer", round);
	}
	bytebuf_free(&out);
	batchrec_encoder_free(&enc);
}

Test(batchrec, a_large_payload_grows_the_dictionary_table)
{
	/* Thousands of distinct strings: the table doubles many times in one
	 * payload, and every string placed before a growth must still be found
	 * after it: each agent and user comes again in the next event (the one
	 * added as a table grows is looked up again before the table grows
	 * next, which would place it anew), and each user once more N / 2
	 * events later. */
	enum { N = 3000 };
	static char ids[N][16], users[N][16], agents[N][16];
	static tally_event events[N];
	static tally_ingest_result results[N];
	static uint8_t packed[N][ID_PACKED_SIZE_MAX];
	static packed_id pid[N];
	static uint64_t dim_hash[N][DIM_COUNT];
	static const char *const projects[3] = {"p0", "p1", "p2"};
	for (int i = 0; i < N; i++) {
		snprintf(ids[i], sizeof(ids[i]), "id-%d", i);
		snprintf(users[i], sizeof(users[i]), "user-%d", i / 2 % (N / 4));
		snprintf(agents[i], sizeof(agents[i]), "agent-%d", i / 2 % 700);
		events[i] = (tally_event){.event_id = str_of(ids[i]), .time_us = i,
					  .type = str_of("llm.call"), .project = str_of(projects[i % 3]),
					  .agent = str_of(agents[i]), .user = str_of(users[i])};
		results[i].code = TALLY_ACCEPTED;
	}
	prepare(events, N, packed, pid, dim_hash);
	batchrec_encoder enc = {0};
	bytebuf out = {0};
	uint32_t encoded;
	cr_assert_eq(batchrec_append(&enc, &out, "big", events, pid, dim_hash, results, N,
				     TALLY_ACCEPTED, &encoded), 0);
	cr_assert_eq(encoded, N);
	static decoded d;
	decode(out.data, out.size, &d);
	cr_expect_eq(d.string_count, 1 + 3 + 700 + 1 + N / 4, "type, projects, agents, \"\", users");
	cr_expect_geq((uint64_t)enc.slot_mask + 1, 2 * d.string_count, "the table stays half empty");
	expect_payload(&d, "big", events, pid, results, N, TALLY_ACCEPTED, "large payload");
	bytebuf_free(&out);
	batchrec_encoder_free(&enc);
}

Test(batchrec, strings_whose_hashes_collide_keep_their_own_codes)
{
	/* The caller's hashes are trusted only to find candidates: give two
	 * different strings the same hash, and two equal strings too. */
	tally_event events[2] = {
		{.event_id = str_of("e1"), .type = str_of("one"), .project = str_of("two"),
		 .agent = str_of("one"), .model = str_of("owt"), .user = str_of("two")},
		{.event_id = str_of("e2"), .type = str_of("two"), .project = str_of("one"),
		 .agent = str_of("owt"), .model = str_of("one"), .user = str_of("one")},
	};
	tally_ingest_result results[2] = {{TALLY_ACCEPTED, 0}, {TALLY_ACCEPTED, 0}};
	uint8_t packed[2][ID_PACKED_SIZE_MAX];
	packed_id ids[2];
	uint64_t dim_hash[2][DIM_COUNT];
	prepare(events, 2, packed, ids, dim_hash);
	for (int i = 0; i < 2; i++)
		for (int k = 0; k < DIM_COUNT; k++)
			dim_hash[i][k] = 42;
	batchrec_encoder enc = {0};
	bytebuf out = {0};
	uint32_t encoded;
	cr_assert_eq(batchrec_append(&enc, &out, "t", events, ids, dim_hash, results, 2,
				     TALLY_ACCEPTED, &encoded), 0);
	static decoded d;
	decode(out.data, out.size, &d);
	cr_expect_eq(d.string_count, 3, "one, two, owt");
	expect_payload(&d, "t", events, ids, results, 2, TALLY_ACCEPTED, "colliding hashes");
	bytebuf_free(&out);
	batchrec_encoder_free(&enc);
}

Test(batchrec, a_payload_with_no_event_appends_nothing)
{
	tally_event events[1] = {{.event_id = str_of("e1"), .type = str_of("t")}};
	tally_ingest_result results[1] = {{TALLY_REJECTED, TALLY_REASON_MISSING_ID}};
	uint8_t packed[1][ID_PACKED_SIZE_MAX];
	packed_id ids[1];
	uint64_t dim_hash[1][DIM_COUNT];
	prepare(events, 1, packed, ids, dim_hash);
	batchrec_encoder enc = {0};
	bytebuf out = {0};
	cr_assert_eq(bytebuf_append(&out, "xyz", 3), 0);
	uint32_t encoded = 99;
	cr_assert_eq(batchrec_append(&enc, &out, "t", events, ids, dim_hash, results, 1,
				     TALLY_ACCEPTED, &encoded), 0);
	cr_expect_eq(encoded, 0);
	cr_expect_eq(out.size, 3, "nothing appended");
	cr_assert_eq(batchrec_append(&enc, &out, "t", events, ids, dim_hash, results, 0,
				     TALLY_ACCEPTED, &encoded), 0);
	cr_expect_eq(encoded, 0);
	cr_expect_eq(out.size, 3, "nothing appended for no events");
	bytebuf_free(&out);
	batchrec_encoder_free(&enc);
}

/* Description: an event at its largest (a 64-byte id that packs to itself,
 * every string as long as allowed, every value at its widest varint) under
 * a 64-byte tenant name is encoded in exactly 770 bytes: the entry's size
 * (2), the name and its size (65), the counts (2), five strings (585) and
 * the event (116). That is within the share of one event in
 * BATCHREC_BATCH_BYTES_MAX (the entry's overhead and
 * BATCHREC_EVENT_BYTES_MAX), the bound ingest relies on for one batch to
 * fit a WAL record. */
Test(batchrec, the_largest_event_is_within_the_bound)
{
	char tenant[TALLY_TENANT_SIZE_MAX + 1], id[TALLY_EVENT_ID_SIZE_MAX + 1];
	char type[TALLY_TYPE_SIZE_MAX + 1], dims[4][TALLY_DIMENSION_SIZE_MAX + 1];
	memset(tenant, 't', TALLY_TENANT_SIZE_MAX);
	tenant[TALLY_TENANT_SIZE_MAX] = 0;
	memset(id, 'z', TALLY_EVENT_ID_SIZE_MAX); /* not hex: stored as its text */
	id[TALLY_EVENT_ID_SIZE_MAX] = 0;
	memset(type, 'y', TALLY_TYPE_SIZE_MAX);
	type[TALLY_TYPE_SIZE_MAX] = 0;
	for (int d = 0; d < 4; d++) {
		memset(dims[d], 'a' + d, TALLY_DIMENSION_SIZE_MAX);
		dims[d][TALLY_DIMENSION_SIZE_MAX] = 0;
	}
	tally_event events[1] = {{.event_id = str_of(id), .time_us = INT64_MIN, .type = str_of(type),
				  .project = str_of(dims[0]), .agent = str_of(dims[1]),
				  .model = str_of(dims[2]), .user = str_of(dims[3]),
				  .status = TALLY_STATUS_COUNT - 1, .tokens_in = UINT64_MAX,
				  .tokens_out = UINT64_MAX, .cost_micros = INT64_MIN,
				  .duration_ms = UINT32_MAX}};
	tally_ingest_result results[1] = {{TALLY_ACCEPTED, 0}};
	uint8_t packed[1][ID_PACKED_SIZE_MAX];
	packed_id ids[1];
	uint64_t dim_hash[1][DIM_COUNT];
	prepare(events, 1, packed, ids, dim_hash);
	cr_assert_eq(ids[0].size, TALLY_EVENT_ID_SIZE_MAX);
	batchrec_encoder enc = {0};
	bytebuf out = {0};
	uint32_t encoded = 0;
	cr_assert_eq(batchrec_append(&enc, &out, tenant, events, ids, dim_hash, results, 1,
				     TALLY_ACCEPTED, &encoded), 0);
	cr_expect_eq(encoded, 1);
	cr_expect_eq(out.size, 770);
	cr_expect_leq(out.size, 4 * VARINT_SIZE_MAX + TALLY_TENANT_SIZE_MAX + BATCHREC_EVENT_BYTES_MAX);
	bytebuf_free(&out);
	batchrec_encoder_free(&enc);
}

Test(batchrec, the_generation_wrap_forgets_every_earlier_string)
{
	/* A payload stamped with the last generation, then one after the wrap:
	 * the second must not find the first's strings (its dictionary would
	 * lack them). */
	tally_event first[1] = {{.event_id = str_of("e1"), .type = str_of("t"),
				 .project = str_of("p"), .user = str_of("u")}};
	tally_event second[1] = {{.event_id = str_of("e2"), .type = str_of("t"),
				  .project = str_of("q"), .user = str_of("u")}};
	tally_ingest_result results[1] = {{TALLY_ACCEPTED, 0}};
	uint8_t packed[2][ID_PACKED_SIZE_MAX];
	packed_id ids[2];
	uint64_t dim_hash[2][DIM_COUNT];
	prepare(first, 1, packed, ids, dim_hash);
	prepare(second, 1, packed + 1, ids + 1, dim_hash + 1);
	batchrec_encoder enc = {0};
	enc.generation = UINT32_MAX - 1; /* the first payload gets UINT32_MAX */
	bytebuf out = {0};
	uint32_t encoded;
	cr_assert_eq(batchrec_append(&enc, &out, "t", first, ids, dim_hash, results, 1,
				     TALLY_ACCEPTED, &encoded), 0);
	cr_assert_eq(enc.generation, UINT32_MAX);
	size_t second_at = out.size;
	cr_assert_eq(batchrec_append(&enc, &out, "t", second, ids + 1, dim_hash + 1, results, 1,
				     TALLY_ACCEPTED, &encoded), 0);
	cr_expect_eq(enc.generation, 1, "the wrap skips generation 0 (empty slots)");
	static decoded d;
	decode(out.data + second_at, out.size - second_at, &d);
	cr_expect_eq(d.string_count, 4, "t, q, \"\", u");
	expect_payload(&d, "t", second, ids + 1, results, 1, TALLY_ACCEPTED, "after the wrap");
	bytebuf_free(&out);
	batchrec_encoder_free(&enc);
}
