/*
 * test_strdict.c — Description: the interning dictionary hands out one code
 * per distinct byte string. Strings that differ in one byte (at every
 * position, lengths 0 to 70, around the word compares of its equality
 * test) get distinct codes; the same bytes at another address get the same
 * code; every code reads back its exact bytes; random strings from a small
 * alphabet agree with a brute-force list of the distinct strings; strings
 * given one hash are told apart by their sizes and bytes; a copy taken in
 * steps while the source grows (strdict_copy_reserve, strdict_copy_more)
 * reads every code it took exactly, and still does once the source is
 * freed.
 *
 * Randomness comes from support/rng.h (splitmix64 seeded by $SEED, or by
 * the clock when it is unset); the random test prints "test_strdict seed=N"
 * so a failure replays with SEED=N build/tests/test_strdict.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "strdict.h"
#include "support/rng.h"

enum { LENGTH_MAX = 70 };

static void expect_bytes(const strdict *d, uint32_t code, const char *s, uint32_t size)
{
	tally_str got = strdict_get(d, code);
	cr_assert_eq(got.len, size, "code %u: length %u, expected %u", code, got.len, size);
	cr_assert(size == 0 || memcmp(got.ptr, s, size) == 0, "code %u: bytes differ", code);
}

Test(strdict, one_byte_differences_get_their_own_codes_at_every_length)
{
	for (uint32_t size = 0; size <= LENGTH_MAX; size++) {
		strdict d = {0};
		char base[LENGTH_MAX];
		for (uint32_t i = 0; i < size; i++)
			base[i] = (char)('a' + i % 26);
		uint32_t base_code;
		cr_assert_eq(strdict_intern(&d, base, size, &base_code), 0);
		/* The same bytes, copied elsewhere (a different address and
		 * alignment): the same code. */
		char copy[LENGTH_MAX + 3];
		memcpy(copy + 3, base, size);
		uint32_t again;
		cr_assert_eq(strdict_intern(&d, copy + 3, size, &again), 0);
		cr_assert_eq(again, base_code, "size %u: a copy got a new code", size);
		uint32_t expected_count = 1;
		for (uint32_t i = 0; i < size; i++) {
			char variant[LENGTH_MAX];
			memcpy(variant, base, size);
			variant[i] = (char)(variant[i] ^ 0x01);
			uint32_t code;
			cr_assert_eq(strdict_intern(&d, variant, size, &code), 0);
			cr_assert_neq(code, base_code, "size %u: byte %u changed, same code", size, i);
			cr_assert_eq(code, expected_count, "size %u, byte %u: code %u", size, i, code);
			expected_count++;
			expect_bytes(&d, code, variant, size);
		}
		/* A string one byte shorter or longer is another string. */
		if (size > 0) {
			uint32_t code;
			cr_assert_eq(strdict_intern(&d, base, size - 1, &code), 0);
			cr_assert_neq(code, base_code, "size %u: prefix got the same code", size);
		}
		cr_assert_eq(strdict_intern(&d, base, size, &again), 0);
		cr_assert_eq(again, base_code);
		expect_bytes(&d, base_code, base, size);
		strdict_free(&d);
	}
}

Test(strdict, random_strings_match_a_brute_force_list)
{
	test_rng rng;
	test_rng_seed(&rng, "test_strdict", "random_strings_match_a_brute_force_list");
	enum { ROUNDS = 20000, DISTINCT_MAX = ROUNDS };
	char (*seen)[LENGTH_MAX] = malloc(sizeof(*seen) * DISTINCT_MAX);
	uint32_t *seen_size = malloc(sizeof(*seen_size) * DISTINCT_MAX);
	cr_assert(seen && seen_size);
	uint32_t seen_count = 0;
	strdict d = {0};
	for (int round = 0; round < ROUNDS; round++) {
		char s[LENGTH_MAX];
		/* Two letters and short lengths, so repeats and near misses
		 * (strings sharing a prefix or suffix) are common. */
		uint32_t size = (uint32_t)(test_rng_next(&rng) % 20);
		for (uint32_t i = 0; i < size; i++)
			s[i] = (char)('x' + test_rng_next(&rng) % 2);
		uint32_t expected = seen_count;
		for (uint32_t k = 0; k < seen_count; k++)
			if (seen_size[k] == size && memcmp(seen[k], s, size) == 0) {
				expected = k;
				break;
			}
		if (expected == seen_count) {
			memcpy(seen[seen_count], s, size);
			seen_size[seen_count++] = size;
		}
		uint32_t code;
		cr_assert_eq(strdict_intern(&d, s, size, &code), 0);
		cr_assert_eq(code, expected, "round %d: code %u, expected %u", round, code, expected);
	}
	cr_assert_eq(d.count, seen_count);
	for (uint32_t k = 0; k < seen_count; k++)
		expect_bytes(&d, k, seen[k], seen_size[k]);
	strdict_free(&d);
	free(seen);
	free(seen_size);
}

Test(strdict, strings_with_equal_hashes_keep_their_own_codes)
{
	/* A hash only finds candidates: four strings given one hash (the whole
	 * 64 bits equal, so the slot and the hash half kept in it agree) must
	 * be told apart by size and bytes. Four strings fit the first table
	 * (8 slots, at most half full), which is never rebuilt from the real
	 * hashes here. */
	static const char *const s[4] = {"abcd", "abce", "abc", ""};
	const uint64_t hash = UINT64_C(0x0123456789abcdef);
	strdict d = {0};
	for (uint32_t round = 0; round < 2; round++)
		for (uint32_t i = 0; i < 4; i++) {
			uint32_t code = 99;
			cr_assert_eq(strdict_intern_hashed(&d, s[i], (uint32_t)strlen(s[i]), hash, &code),
				     0);
			cr_assert_eq(code, i, "round %u, \"%s\": code %u", round, s[i], code);
		}
	cr_assert_eq(d.count, 4);
	cr_assert_eq(d.slot_mask, 7, "one table throughout");
	for (uint32_t i = 0; i < 4; i++)
		expect_bytes(&d, i, s[i], (uint32_t)strlen(s[i]));
	strdict_free(&d);
}

/* The copy's codes [from, to) read src's strings. */
static void expect_copied(const strdict *src, const strdict *dst, uint32_t from, uint32_t to)
{
	for (uint32_t c = from; c < to; c++) {
		tally_str want = strdict_get(src, c);
		expect_bytes(dst, c, want.ptr, want.len);
	}
}

/* Whether dst has room for src's next code beyond its own. */
static int room_for_next(const strdict *src, const strdict *dst)
{
	if (dst->count >= src->count || dst->count >= dst->offsets_capacity)
		return 0;
	tally_str next = strdict_get(src, dst->count);
	return (size_t)(next.ptr - (const char *)src->arena.data) + next.len <= dst->arena.capacity;
}

Test(strdict, a_copy_taken_in_steps_while_the_source_grows_reads_every_code)
{
	test_rng rng;
	test_rng_seed(&rng, "test_strdict",
		      "a_copy_taken_in_steps_while_the_source_grows_reads_every_code");
	enum { ROUNDS = 20000, COPY_BYTES_MAX = 600 };
	strdict src = {0}, dst = {0};
	cr_assert_eq(strdict_copy_more(&src, &dst, 0), 1, "an empty source is copied whole");
	cr_assert_eq(dst.count, 0);
	uint32_t steps = 0, full = 0;
	for (int round = 0; round < ROUNDS; round++) {
		uint64_t r = test_rng_next(&rng);
		if (r % 4) { /* the source grows: new strings and repeats */
			char str[LENGTH_MAX];
			uint32_t size = (uint32_t)(test_rng_next(&rng) % LENGTH_MAX);
			for (uint32_t i = 0; i < size; i++)
				str[i] = (char)('a' + test_rng_next(&rng) % 3);
			uint32_t code;
			cr_assert_eq(strdict_intern(&src, str, size, &code), 0);
			continue;
		}
		if (r / 4 % 3 == 0) { /* room for some or all of src */
			uint32_t count = src.count ? (uint32_t)(test_rng_next(&rng) % src.count) : 0;
			size_t bytes = (size_t)(test_rng_next(&rng) % (src.arena.size + 1));
			cr_assert_eq(strdict_copy_reserve(&dst, count, bytes), 0);
			cr_assert_geq(dst.offsets_capacity, count + count / 8);
			cr_assert_geq(dst.arena.capacity, bytes + bytes / 8);
		}
		uint32_t from = dst.count;
		size_t at = dst.arena.size;
		int room = room_for_next(&src, &dst);
		size_t max_bytes = (size_t)(test_rng_next(&rng) % COPY_BYTES_MAX);
		int all = strdict_copy_more(&src, &dst, max_bytes);
		steps++;
		full += all;
		cr_assert_eq(all, dst.count == src.count, "round %d: its answer", round);
		cr_assert_geq(dst.count, from);
		if (room)
			cr_assert_gt(dst.count, from, "round %d: room for a code, none copied", round);
		else
			cr_assert(dst.count == from, "round %d: copied without room", round);
		if (dst.count > from + 1)
			cr_assert_leq(dst.arena.size - at, max_bytes, "round %d: past max_bytes", round);
		if (room_for_next(&src, &dst)) { /* it stopped at max_bytes: the next passes it */
			tally_str next = strdict_get(&src, dst.count);
			size_t end = (size_t)(next.ptr - (const char *)src.arena.data) + next.len;
			cr_assert_gt(end - at, max_bytes, "round %d: stopped short", round);
		}
		cr_assert_leq(dst.count, dst.offsets_capacity);
		cr_assert_leq(dst.arena.size, dst.arena.capacity);
		expect_copied(&src, &dst, from, dst.count);
	}
	cr_assert_gt(full, 0, "some steps caught up (%u steps)", steps);
	cr_assert_gt(src.count, 1000);
	/* The rest, then the source freed: the copy reads on its own. */
	cr_assert_eq(strdict_copy_reserve(&dst, src.count, src.arena.size), 0);
	cr_assert_eq(strdict_copy_more(&src, &dst, SIZE_MAX), 1);
	uint32_t count = src.count;
	char(*want)[LENGTH_MAX] = malloc(sizeof(*want) * count);
	uint32_t *want_size = malloc(sizeof(*want_size) * count);
	cr_assert(want && want_size);
	for (uint32_t c = 0; c < count; c++) {
		tally_str str = strdict_get(&src, c);
		memcpy(want[c], str.ptr, str.len);
		want_size[c] = str.len;
	}
	strdict_free(&src);
	cr_assert_eq(dst.count, count);
	for (uint32_t c = 0; c < count; c++)
		expect_bytes(&dst, c, want[c], want_size[c]);
	strdict_free(&dst);
	free(want);
	free(want_size);
}
