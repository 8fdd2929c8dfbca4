/*
 * test_rollup.c — Description: the flush's rollup build (rollup_from_rows,
 * which makes only the cells rollup_encode stores) against the obvious one
 * (rollup_add of every row, all cells at every resolution): both must
 * encode to the same bytes, on random rows shaped like tenants of every
 * size (a handful of rows, light days, heavy days, days inside and outside
 * minute retention), and every chunk decodes with its cells in order.
 *
 * Randomness comes from support/rng.h (splitmix64 seeded by $SEED, or by
 * the clock when it is unset); every test prints "test_rollup seed=N" so a
 * failure replays with SEED=N build/tests/test_rollup.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rollup.h"
#include "rows.h"
#include "sketch.h"
#include "strdict.h"
#include "support/rng.h"

static test_rng rng;

static uint64_t rng_below(uint64_t n)
{
	return test_rng_below(&rng, n);
}

static void seed_rng(const char *test)
{
	test_rng_seed(&rng, "test_rollup", test);
}

#define DAY_US ROLLUP_DAY_US

/* count random rows over `days` days from day 20000 on, with `groups`
 * distinct (type, project, agent, model) combinations and `users` users
 * (code 0 of the user dictionary is the empty string: no user). */
static void make_rows(rows *r, strdict dict[DIM_COUNT], uint32_t count, uint32_t days,
		      uint32_t groups, uint32_t users)
{
	memset(r, 0, sizeof(*r));
	memset(dict, 0, sizeof(strdict) * DIM_COUNT);
	cr_assert_eq(rows_reserve(r, count ? count : 1), 0);
	char text[32];
	for (int d = 0; d < DIM_COUNT; d++) {
		uint32_t code;
		cr_assert_eq(strdict_intern(&dict[d], "", 0, &code), 0);
		uint32_t n = d == DIM_USER ? users : groups;
		for (uint32_t k = 1; k <= n; k++) {
			int len = snprintf(text, sizeof(text), "d%d-%u", d, k);
			cr_assert_eq(strdict_intern(&dict[d], text, (uint32_t)len, &code), 0);
		}
	}
	for (uint32_t i = 0; i < count; i++) {
		/* Mostly in time order, as rows arrive; some late. */
		int64_t day = 20000 + (int64_t)rng_below(days);
		int64_t t = day * DAY_US + (int64_t)rng_below(DAY_US);
		if (rng_below(4) == 0) /* bunch some rows into a few hours */
			t = day * DAY_US + (int64_t)rng_below(3) * ROLLUP_HOUR_US +
			    (int64_t)rng_below(ROLLUP_HOUR_US);
		r->time_us[i] = t;
		uint32_t g = 1 + (uint32_t)rng_below(groups);
		r->dim[DIM_TYPE][i] = 1 + g % 3;
		r->dim[DIM_PROJECT][i] = g;
		r->dim[DIM_AGENT][i] = 1 + (g * 7) % groups;
		r->dim[DIM_MODEL][i] = rng_below(3) ? 0 : 1 + g % 2;
		r->dim[DIM_USER][i] = (uint32_t)rng_below(users + 1);
		r->status[i] = (uint8_t)(rng_below(8) ? TALLY_STATUS_OK : 1 + rng_below(3));
		r->duration_ms[i] = (uint32_t)(rng_below(5) ? rng_below(2000) : rng_below(200000));
		r->tokens_in[i] = rng_below(2) ? rng_below(5000) : 0;
		r->tokens_out[i] = rng_below(2) ? rng_below(3000) : 0;
		r->cost_micros[i] = (int64_t)rng_below(100000);
		if (rng_below(64) == 0) { /* sums past their range: wraps */
			r->tokens_in[i] = UINT64_MAX - rng_below(10);
			r->cost_micros[i] = rng_below(2) ? INT64_MAX : INT64_MIN;
		}
		r->id_kind[i] = 0;
		r->id_offset[i + 1] = 0;
	}
	r->count = count;
}

/* Every row through rollup_add: every cell at every resolution. */
static void build_all(rollup *out, const rows *r, const strdict dict[DIM_COUNT])
{
	memset(out, 0, sizeof(*out));
	for (uint32_t i = 0; i < r->count; i++) {
		tally_str u = strdict_get(&dict[DIM_USER], r->dim[DIM_USER][i]);
		rollup_event e = {
			.time_us = r->time_us[i],
			.code = {r->dim[DIM_TYPE][i], r->dim[DIM_PROJECT][i], r->dim[DIM_AGENT][i],
				 r->dim[DIM_MODEL][i]},
			.status = r->status[i],
			.user = u.len ? r->dim[DIM_USER][i] : ROLLUP_NO_USER,
			.user_hash = u.len ? sketch_user_hash(u.ptr, u.len) : 0,
			.duration_ms = r->duration_ms[i],
			.tokens_in = r->tokens_in[i],
			.tokens_out = r->tokens_out[i],
			.cost_micros = r->cost_micros[i],
		};
		cr_assert_eq(rollup_add(out, &e), 0);
	}
}

/* Every chunk of x decodes, its cells in strictly increasing (bucket,
 * group) order, the cell counts as listed. */
static void assert_chunks_decode(const rollup_encoded *x, const char *what)
{
	if (!x->group_count)
		return;
	const uint32_t dict_count[DIM_COUNT] = {UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX,
						UINT32_MAX};
	rollup_group *groups;
	uint32_t group_count;
	cr_assert_eq(rollup_groups_decode(x->groups.data, x->groups.size, dict_count, &groups,
					  &group_count), 0, "%s: group table", what);
	cr_assert_eq(group_count, x->group_count);
	uint32_t total = 0;
	for (int list = 0; list < LIST_COUNT; list++)
		total += x->chunk_count[list];
	for (uint32_t i = 0; i < total; i++) {
		rollup_block b;
		cr_assert_eq(rollup_block_decode(x->data.data + x->chunks[i].offset, x->chunks[i].size,
						 groups, group_count, UINT32_MAX, &b),
			     0, "%s: chunk %u decodes", what, i);
		cr_assert_eq(b.cell_count, x->chunks[i].cells);
		cr_assert_eq(b.bucket[0], x->chunks[i].first_bucket);
		for (uint32_t c = 1; c < b.cell_count; c++)
			cr_assert(b.bucket[c] > b.bucket[c - 1] ||
				  (b.bucket[c] == b.bucket[c - 1] && b.group[c] > b.group[c - 1]),
				  "%s: chunk %u cell %u out of order", what, i, c);
		rollup_block_free(&b);
	}
	free(groups);
}

/* b's encodings go through one scratch kept for the whole test (sections
 * of every size, one after the other, as in a flush); a's through none:
 * leftovers of a previous section would show as different bytes. */
static rollup_scratch reused;

static void assert_same_encoding(const rollup *a, const rollup *b, int64_t minute_from,
				 const char *what)
{
	rollup_encoded x, y;
	cr_assert_eq(rollup_encode(a, minute_from, NULL, &x), 0);
	cr_assert_eq(rollup_encode(b, minute_from, &reused, &y), 0);
	cr_assert_eq(x.group_count, y.group_count, "%s: group count", what);
	cr_assert_eq(x.groups.size, y.groups.size, "%s: group table size", what);
	cr_assert(x.groups.size == 0 || !memcmp(x.groups.data, y.groups.data, x.groups.size),
		  "%s: group table", what);
	for (int list = 0; list < LIST_COUNT; list++)
		cr_assert_eq(x.chunk_count[list], y.chunk_count[list], "%s: chunks of list %d",
			     what, list);
	cr_assert_eq(x.data.size, y.data.size, "%s: chunk bytes", what);
	cr_assert(x.data.size == 0 || !memcmp(x.data.data, y.data.data, x.data.size),
		  "%s: chunk data", what);
	uint32_t total = 0;
	for (int list = 0; list < LIST_COUNT; list++)
		total += x.chunk_count[list];
	for (uint32_t i = 0; i < total; i++) {
		cr_assert_eq(x.chunks[i].first_bucket, y.chunks[i].first_bucket, "%s: chunk %u", what, i);
		cr_assert_eq(x.chunks[i].cells, y.chunks[i].cells, "%s: chunk %u cells", what, i);
		cr_assert_eq(x.chunks[i].offset, y.chunks[i].offset, "%s: chunk %u offset", what, i);
		cr_assert_eq(x.chunks[i].size, y.chunks[i].size, "%s: chunk %u size", what, i);
	}
	assert_chunks_decode(&x, what);
	rollup_encoded_free(&x);
	rollup_encoded_free(&y);
}

Test(rollup, flush_build_encodes_like_every_cell_added)
{
	seed_rng("flush_build_encodes_like_every_cell_added");
	static const struct {
		uint32_t count, days, groups, users;
	} shapes[] = {
		{0, 1, 1, 1},        /* nothing */
		{1, 1, 1, 1},        /* one row */
		{5, 3, 2, 2},        /* the long tail: a handful of rows */
		{200, 30, 4, 20},    /* light days only */
		{3000, 2, 40, 300},  /* heavy days (more than 64 hour cells) */
		{6000, 10, 60, 50},  /* heavy and light days mixed */
	};
	for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
		for (int round = 0; round < 3; round++) {
			rows r;
			strdict dict[DIM_COUNT];
			make_rows(&r, dict, shapes[k].count, shapes[k].days, shapes[k].groups,
				  shapes[k].users);
			rollup all, flush;
			build_all(&all, &r, dict);
			/* Minute retention: everything, nothing, and a cut inside
			 * the rows' days. */
			int64_t cuts[3] = {INT64_MIN, INT64_MAX,
					   (20000 * DAY_US + (int64_t)rng_below(3 * DAY_US)) /
						   ROLLUP_MINUTE_US};
			for (int c = 0; c < 3; c++) {
				memset(&flush, 0, sizeof(flush));
				cr_assert_eq(rollup_from_rows(&flush, &r, dict, cuts[c]), 0);
				char what[96];
				snprintf(what, sizeof(what), "shape %zu round %d cut %d", k, round, c);
				assert_same_encoding(&all, &flush, cuts[c], what);
				rollup_free(&flush);
			}
			rollup_free(&all);
			rows_free(&r);
			for (int d = 0; d < DIM_COUNT; d++)
				strdict_free(&dict[d]);
		}
	}
	cr_assert_gt(reused.capacity, 0, "the scratch was used");
	rollup_scratch_free(&reused);
}

Test(rollup, flush_build_leaves_out_cells_that_are_not_stored)
{
	/* 60 rows on one day (so at most 60 hour cells: a light day), two days
	 * before the minute cut: hour cells only; no minute cells, no day
	 * cells, no day totals. */
	seed_rng("flush_build_leaves_out_cells_that_are_not_stored");
	rows r;
	strdict dict[DIM_COUNT];
	make_rows(&r, dict, 60, 1, 3, 5);
	rollup flush;
	memset(&flush, 0, sizeof(flush));
	cr_assert_eq(rollup_from_rows(&flush, &r, dict, 20002 * (DAY_US / ROLLUP_MINUTE_US)), 0);
	cr_assert_eq(flush.res[RES_MINUTE].count, 0);
	cr_assert_gt(flush.res[RES_HOUR].count, 0);
	cr_assert_leq(flush.res[RES_HOUR].count, ROLLUP_DAY_COMPOSE_MAX);
	cr_assert_eq(flush.res[RES_DAY].count, 0);
	/* A build for encoding only: hour cells reserved for the 60 rows up
	 * front, and no bucket index. */
	cr_assert_eq(flush.res[RES_HOUR].capacity, 60);
	cr_assert_eq(flush.res[RES_HOUR].slot_mask + 1, 128, "60 cells stay under 3/4 of 128 slots");
	cr_assert_eq(flush.res[RES_HOUR].head_mask, 0);
	cr_assert_null(rollup_bucket_first(&flush, RES_HOUR, flush.res[RES_HOUR].cells[0].bucket));
	rollup_free(&flush);
	rows_free(&r);
	for (int d = 0; d < DIM_COUNT; d++)
		strdict_free(&dict[d]);
}

Test(rollup, cells_thousands_of_years_apart_encode_in_order)
{
	/* Minute buckets 2^33 apart do not fit the sort's one-key form (a
	 * 32-bit bucket offset); decoders accept |bucket| < 2^40. */
	rollup r;
	memset(&r, 0, sizeof(r));
	const int64_t far = (INT64_C(1) << 33) * ROLLUP_MINUTE_US;
	const int64_t times[] = {far, 0, far + ROLLUP_MINUTE_US, -far, ROLLUP_MINUTE_US};
	for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++)
		for (uint32_t g = 1; g <= 3; g++) {
			rollup_event e = {
				.time_us = times[i],
				.code = {g, 4 - g, 0, 0},
				.status = TALLY_STATUS_OK,
				.user = ROLLUP_NO_USER,
				.duration_ms = 10 * g,
				.tokens_in = g,
			};
			cr_assert_eq(rollup_add(&r, &e), 0);
		}
	rollup_encoded x;
	cr_assert_eq(rollup_encode(&r, INT64_MIN, NULL, &x), 0);
	cr_assert_gt(x.chunk_count[LIST_MINUTE], 0);
	assert_chunks_decode(&x, "far apart");
	/* The minute list holds all 15 cells, first the one at -far. */
	uint32_t cells = 0;
	for (uint32_t i = 0; i < x.chunk_count[LIST_MINUTE]; i++)
		cells += x.chunks[i].cells;
	cr_assert_eq(cells, 15);
	cr_assert_eq(x.chunks[0].first_bucket, -(INT64_C(1) << 33));
	rollup_encoded_free(&x);
	rollup_free(&r);
}

Test(rollup, heavy_days_near_and_thousands_of_days_apart_are_found_alike)
{
	/* Two busy days (hundreds of hour cells each: heavy) and a light one,
	 * the second busy day 10 days after the first (found by counting per
	 * day) or 6,000 days after it (found by sorting): the flush build
	 * must store day cells for exactly the days the every-cell build
	 * encodes. */
	seed_rng("heavy_days_near_and_thousands_of_days_apart_are_found_alike");
	const int64_t gaps[2] = {10, 6000};
	for (int g = 0; g < 2; g++) {
		rows r;
		strdict dict[DIM_COUNT];
		make_rows(&r, dict, 4000, 1, 40, 20);
		for (uint32_t i = 0; i < r.count; i++) {
			if (i % 2)
				r.time_us[i] += gaps[g] * DAY_US;
			if (i % 97 == 0) /* a light day in between */
				r.time_us[i] = r.time_us[i] % DAY_US + (20000 + gaps[g] / 2) * DAY_US;
		}
		rollup all, flush;
		build_all(&all, &r, dict);
		memset(&flush, 0, sizeof(flush));
		cr_assert_eq(rollup_from_rows(&flush, &r, dict, INT64_MAX), 0);
		rollup_encoded x;
		cr_assert_eq(rollup_encode(&flush, INT64_MAX, NULL, &x), 0);
		cr_assert_gt(x.chunk_count[LIST_DAY], 0, "gap %" PRId64 ": heavy days stored", gaps[g]);
		uint32_t day_chunk = x.chunk_count[LIST_MINUTE] + x.chunk_count[LIST_HOUR];
		uint32_t day_cells = 0;
		for (uint32_t i = 0; i < x.chunk_count[LIST_DAY]; i++)
			day_cells += x.chunks[day_chunk + i].cells;
		cr_assert_gt(day_cells, 0);
		rollup_encoded_free(&x);
		char what[64];
		snprintf(what, sizeof(what), "gap %" PRId64 " days", gaps[g]);
		assert_same_encoding(&all, &flush, INT64_MAX, what);
		rollup_free(&flush);
		rollup_free(&all);
		rows_free(&r);
		for (int d = 0; d < DIM_COUNT; d++)
			strdict_free(&dict[d]);
	}
	rollup_scratch_free(&reused);
}

/* The decoded chunks of list `list` of x, through one group table (freed
 * by the caller); the number of chunks in *count. */
static rollup_block *decode_list(const rollup_encoded *x, int list, rollup_group **groups,
				 uint32_t *count, int *status)
{
	const uint32_t dict_count[DIM_COUNT] = {UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX,
						UINT32_MAX};
	uint32_t group_count;
	cr_assert_eq(rollup_groups_decode(x->groups.data, x->groups.size, dict_count, groups,
					  &group_count), 0);
	uint32_t first = 0;
	for (int l = 0; l < list; l++)
		first += x->chunk_count[l];
	*count = x->chunk_count[list];
	rollup_block *b = calloc(*count + 1, sizeof(*b));
	cr_assert_not_null(b);
	*status = 0;
	for (uint32_t i = 0; i < *count && !*status; i++) {
		const rollup_chunk_out *c = &x->chunks[first + i];
		*status = rollup_block_decode(x->data.data + c->offset, c->size, *groups, group_count,
					      UINT32_MAX, &b[i]);
	}
	return b;
}

/* The one chunk of x's hour list, decoded (free it and *groups). */
static rollup_block *decode_hour_chunk(const rollup_encoded *x, rollup_group **groups)
{
	uint32_t count;
	int status;
	rollup_block *b = decode_list(x, LIST_HOUR, groups, &count, &status);
	cr_assert_eq(status, 0);
	cr_assert_eq(count, 1);
	return b;
}

/* The first byte (the version) of every chunk of x is `version`. */
static void expect_chunk_versions(const rollup_encoded *x, uint8_t version, const char *what)
{
	uint32_t total = 0;
	for (int list = 0; list < LIST_COUNT; list++)
		total += x->chunk_count[list];
	cr_assert_gt(total, 0);
	for (uint32_t i = 0; i < total; i++)
		cr_expect_eq(x->data.data[x->chunks[i].offset], version, "%s: chunk %u", what, i);
}

/* Description: sums past their 64-bit range. Three events of one hour and
 * group with tokens_in 2^64 - 1 and cost INT64_MIN make a cell whose
 * sums wrap: its chunk is a version 2 block whose wraps decode exactly
 * (the duration's too, set by hand: it would need 2^32 events), a
 * projection merging it with the hour's other cells adds the wraps, and a
 * block claiming as many wraps as events is refused. Data whose sums stay
 * in range encodes as version 1 blocks, as before wraps existed. */
Test(rollup, wrapped_sums_round_trip_exactly_and_are_checked)
{
	const int64_t hour = 20000 * DAY_US + 5 * ROLLUP_HOUR_US;
	rollup r, plain;
	memset(&r, 0, sizeof(r));
	memset(&plain, 0, sizeof(plain));
	for (int i = 0; i < 5; i++) {
		int huge = i < 3;
		rollup_event e = {
			.time_us = hour + i * ROLLUP_MINUTE_US / 4,
			.code = {huge ? 1 : 2, 1, 1, 1},
			.status = TALLY_STATUS_OK,
			.user = ROLLUP_NO_USER,
			.duration_ms = 7,
			.tokens_in = huge ? UINT64_MAX : 10,
			.tokens_out = 1,
			.cost_micros = huge ? INT64_MIN : 5,
		};
		cr_assert_eq(rollup_add(&r, &e), 0);
		if (!huge)
			cr_assert_eq(rollup_add(&plain, &e), 0);
	}
	rollup_encoded x;
	cr_assert_eq(rollup_encode(&plain, INT64_MIN, NULL, &x), 0);
	expect_chunk_versions(&x, ROLLUP_BLOCK_VERSION, "sums in range");
	rollup_encoded_free(&x);

	const rollup_cell *cell = NULL;
	for (uint32_t i = 0; i < r.res[RES_HOUR].count; i++)
		if (r.res[RES_HOUR].cells[i].count == 3)
			cell = &r.res[RES_HOUR].cells[i];
	cr_assert_not_null(cell);
	const rollup_wraps *w = rollup_cell_wraps(&r, cell);
	cr_assert_not_null(w, "the cell has wraps");
	/* 3 (2^64 - 1) = 2 * 2^64 + (2^64 - 3); 3 INT64_MIN = -2^64 + INT64_MIN. */
	cr_expect_eq(cell->tokens_in, UINT64_MAX - 2);
	cr_expect_eq(w->tokens_in, 2);
	cr_expect_eq(cell->cost, INT64_MIN);
	cr_expect_eq(w->cost_micros, -1);
	cr_expect_eq(w->tokens_out, 0);
	r.wraps[cell->wraps - 1].duration_ms_sum = 2;

	cr_assert_eq(rollup_encode(&r, INT64_MIN, NULL, &x), 0);
	expect_chunk_versions(&x, ROLLUP_BLOCK_VERSION_WRAPS, "a wrapped cell in every list");
	rollup_group *groups;
	rollup_block *b = decode_hour_chunk(&x, &groups);
	cr_assert_eq(b[0].cell_count, 2);
	cr_assert_not_null(b[0].wraps);
	uint32_t at = b[0].count[0] == 3 ? 0 : 1;
	cr_assert_eq(b[0].count[at], 3);
	cr_expect_eq(b[0].tokens_in[at], UINT64_MAX - 2);
	cr_expect_eq(b[0].cost[at], INT64_MIN);
	cr_expect_eq(memcmp(&b[0].wraps[at], w, sizeof(*w)), 0, "the wraps decode as encoded");
	const rollup_wraps none = {0};
	cr_expect_eq(memcmp(&b[0].wraps[1 - at], &none, sizeof(none)), 0);

	/* Both groups of the hour projected to one cell: 5 events. */
	cr_assert_eq(rollup_block_sketches(&b[0]), 0);
	uint32_t *map;
	rollup_group *projected;
	uint32_t projected_count;
	cr_assert_eq(rollup_groups_project(b[0].groups, b[0].group_count, 0, 0, &map, &projected,
					   &projected_count), 0);
	rollup_block p;
	cr_assert_eq(rollup_block_project(&b[0], map, &p), 0);
	cr_assert_eq(p.cell_count, 1);
	cr_assert_eq(p.count[0], 5);
	cr_assert_not_null(p.wraps);
	/* 3 (2^64 - 1) + 20 = 3 * 2^64 + 17; 3 INT64_MIN + 10 = -2^64 + INT64_MIN + 10. */
	cr_expect_eq(p.tokens_in[0], 17);
	cr_expect_eq(p.wraps[0].tokens_in, 3);
	cr_expect_eq(p.cost[0], INT64_MIN + 10);
	cr_expect_eq(p.wraps[0].cost_micros, -1);
	cr_expect_eq(p.wraps[0].duration_ms_sum, 2);
	cr_expect_eq(p.duration_sum[0], 35);
	rollup_block_free(&p);
	free(map);
	free(projected);
	rollup_block_free(&b[0]);
	free(b);
	free(groups);
	rollup_encoded_free(&x);

	/* As many wraps as events: no sum of 3 values wraps 3 times. */
	r.wraps[cell->wraps - 1].tokens_in = 3;
	cr_assert_eq(rollup_encode(&r, INT64_MIN, NULL, &x), 0);
	uint32_t count;
	int status;
	b = decode_list(&x, LIST_HOUR, &groups, &count, &status);
	cr_expect_eq(status, TALLY_E_CORRUPT);
	free(b);
	free(groups);
	rollup_encoded_free(&x);
	rollup_free(&r);
	rollup_free(&plain);
}

/* Description: a decoded block's dense cells answer their distinct users
 * through rollup_block_dense_users: two hour cells of one group, of 9,000
 * and 20,000 distinct users (past USET_EXACT_MAX, so stored as registers),
 * each equal to the estimate of a set built from the same user hashes,
 * the same on a second call; the value is kept in the block once asked
 * (a kept value stands for the answer: the second call does not estimate
 * again), and a block freed after it frees what it kept. */
Test(rollup, dense_cells_keep_their_distinct_users_once_asked)
{
	seed_rng("dense_cells_keep_their_distinct_users_once_asked");
	const int64_t hour = 20000 * DAY_US + 5 * ROLLUP_HOUR_US;
	static const uint32_t users[2] = {9000, 20000};
	uset expected[2] = {{0}, {0}};
	rollup r;
	memset(&r, 0, sizeof(r));
	uint32_t code = 0;
	for (int h = 0; h < 2; h++)
		for (uint32_t k = 0; k < users[h]; k++, code++) {
			uint64_t hash = test_rng_next(&rng);
			rollup_event e = {
				.time_us = hour + h * ROLLUP_HOUR_US + (int64_t)k,
				.code = {1, 1, 1, 1},
				.status = TALLY_STATUS_OK,
				.user = code,
				.user_hash = hash,
				.duration_ms = 5,
				.tokens_in = 1,
			};
			cr_assert_eq(rollup_add(&r, &e), 0);
			cr_assert_eq(uset_add(&expected[h], hash), 0);
		}
	rollup_encoded x;
	cr_assert_eq(rollup_encode(&r, INT64_MIN, NULL, &x), 0);
	rollup_group *groups;
	rollup_block *b = decode_hour_chunk(&x, &groups);
	cr_assert_eq(rollup_block_sketches(&b[0]), 0);
	const uint32_t n = b[0].cell_count, *ix = b[0].sketch_index;
	uint32_t dense = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (ix[2 * n + i] != ROLLUP_DENSE)
			continue;
		int h = b[0].bucket[i] * ROLLUP_HOUR_US == hour ? 0 : 1;
		cr_assert(uset_dense(&expected[h]));
		uint64_t want = uset_estimate(&expected[h]);
		uint32_t set = ix[3 * n + i];
		cr_expect_eq(atomic_load(&b[0].dense_users[set]), 0, "nothing kept before asked");
		cr_expect_eq(rollup_block_dense_users(&b[0], set), want, "hour %d", h);
		cr_expect_eq(atomic_load(&b[0].dense_users[set]), want + 1, "kept");
		cr_expect_eq(rollup_block_dense_users(&b[0], set), want, "hour %d again", h);
		atomic_store(&b[0].dense_users[set], 43);
		cr_expect_eq(rollup_block_dense_users(&b[0], set), 42, "the kept value answers");
		dense++;
	}
	cr_expect_eq(dense, 2, "both hour cells are dense");
	cr_expect_neq(uset_estimate(&expected[0]), uset_estimate(&expected[1]));
	rollup_block_free(&b[0]);
	cr_expect_null(b[0].dense_users);
	free(b);
	free(groups);
	rollup_encoded_free(&x);
	rollup_free(&r);
	for (int h = 0; h < 2; h++)
		uset_free(&expected[h]);
}
