/*
 * test_filter.c — filter_set (engine/filter.h) against the filters as
 * given: a value of a dimension passes when every filter on that dimension
 * lists it.
 *
 * Seeds: the seed is printed (support/rng.h); SEED=N replays it.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "filter.h"
#include "support/rng.h"

/* The meaning, checked the slow way: every filter on dim lists v. */
static int oracle_pass(const tally_filter *filters, uint32_t count, int dim, tally_str v)
{
	for (uint32_t i = 0; i < count; i++) {
		if (filters[i].dim != dim)
			continue;
		int listed = 0;
		for (uint32_t k = 0; k < filters[i].value_count && !listed; k++) {
			tally_str w = filters[i].values[k];
			listed = w.len == v.len && (!v.len || !memcmp(w.ptr, v.ptr, v.len));
		}
		if (!listed)
			return 0;
	}
	return 1;
}

/* A small alphabet, so that filters share values: the empty string, one
 * byte, prefixes of each other, the same bytes in another case, 128 bytes
 * differing only in the last one. */
#define WORDS 12
static char long_a[128], long_b[128];
static tally_str word(uint64_t i)
{
	static const char *const short_words[] = {"", "a", "ab", "abc", "Abc", "gpt-4o", "ok", "error"};
	if (i < 8)
		return (tally_str){short_words[i], (uint32_t)strlen(short_words[i])};
	if (i == 8)
		return (tally_str){long_a, sizeof(long_a)};
	if (i == 9)
		return (tally_str){long_b, sizeof(long_b)};
	if (i == 10)
		return (tally_str){long_a, sizeof(long_a) - 1};
	return (tally_str){"\0x", 2};
}

Test(filter, passes_exactly_what_every_filter_on_the_dimension_lists)
{
	memset(long_a, 'p', sizeof(long_a));
	memcpy(long_b, long_a, sizeof(long_b));
	long_b[sizeof(long_b) - 1] = 'q';
	test_rng rng;
	test_rng_seed(&rng, "test_filter", "passes_exactly_what_every_filter_on_the_dimension_lists");
	static tally_str values[TALLY_FILTERS_MAX][TALLY_FILTER_VALUES_MAX];
	tally_filter filters[TALLY_FILTERS_MAX];
	uint64_t passed = 0, refused = 0;
	for (int round = 0; round < 3000; round++) {
		/* Mostly few filters on few dimensions; sometimes every filter on
		 * one dimension, or 256 values with repeats. */
		uint32_t count = (uint32_t)test_rng_below(&rng, round % 10 ? 5 : TALLY_FILTERS_MAX + 1);
		int dims = 1 + (int)test_rng_below(&rng, TALLY_DIM_COUNT);
		for (uint32_t i = 0; i < count; i++) {
			uint32_t n = 1 + (uint32_t)test_rng_below(&rng, round % 7 ? 4 : TALLY_FILTER_VALUES_MAX);
			for (uint32_t k = 0; k < n; k++)
				values[i][k] = word(test_rng_below(&rng, WORDS));
			filters[i] = (tally_filter){(int)test_rng_below(&rng, (uint64_t)dims), values[i], n};
		}
		filter_set f;
		cr_assert_eq(filter_set_init(&f, filters, count), 0);
		for (int d = 0; d < TALLY_DIM_COUNT; d++)
			for (uint64_t w = 0; w < WORDS; w++) {
				int want = oracle_pass(filters, count, d, word(w));
				cr_assert_eq(filter_set_pass(&f, d, word(w)), want,
					     "round %d: %u filters, dimension %d, word %u: want %d", round,
					     count, d, (unsigned)w, want);
				*(want ? &passed : &refused) += 1;
			}
		filter_set_free(&f);
	}
	/* Both answers came up often, so neither was checked vacuously. */
	cr_expect_gt(passed, 10000);
	cr_expect_gt(refused, 10000);
}

/* Description: two filters on one dimension listing disjoint values pass
 * nothing on it; a value listed twice by one filter still needs the
 * other filter; other dimensions pass everything. */
Test(filter, filters_on_one_dimension_intersect)
{
	const tally_str ab[] = {{"a", 1}, {"b", 1}}, bb[] = {{"b", 1}, {"b", 1}}, c[] = {{"c", 1}};
	tally_filter two[] = {{TALLY_DIM_MODEL, ab, 2}, {TALLY_DIM_MODEL, bb, 2}};
	filter_set f;
	cr_assert_eq(filter_set_init(&f, two, 2), 0);
	cr_expect_eq(filter_set_pass(&f, TALLY_DIM_MODEL, (tally_str){"a", 1}), 0);
	cr_expect_eq(filter_set_pass(&f, TALLY_DIM_MODEL, (tally_str){"b", 1}), 1);
	cr_expect_eq(filter_set_pass(&f, TALLY_DIM_PROJECT, (tally_str){"a", 1}), 1);
	filter_set_free(&f);
	tally_filter disjoint[] = {{TALLY_DIM_AGENT, ab, 2}, {TALLY_DIM_AGENT, c, 1}};
	cr_assert_eq(filter_set_init(&f, disjoint, 2), 0);
	for (const char *v = "abc"; *v; v++)
		cr_expect_eq(filter_set_pass(&f, TALLY_DIM_AGENT, (tally_str){v, 1}), 0, "%c", *v);
	/* A value listed twice by the same filter is not listed by two. */
	tally_filter twice[] = {{TALLY_DIM_AGENT, bb, 2}, {TALLY_DIM_AGENT, c, 1}};
	filter_set_free(&f);
	cr_assert_eq(filter_set_init(&f, twice, 2), 0);
	cr_expect_eq(filter_set_pass(&f, TALLY_DIM_AGENT, (tally_str){"b", 1}), 0);
	filter_set_free(&f);
	cr_assert_eq(filter_set_init(&f, NULL, 0), 0);
	cr_expect_eq(filter_set_pass(&f, TALLY_DIM_STATUS, (tally_str){"", 0}), 1);
	filter_set_free(&f);
}
