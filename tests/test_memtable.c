/*
 * test_memtable.c — Description: the memtable's id index, whose rows go
 * into the hash table MEMTABLE_INDEX_TAIL_MAX at a time and are scanned
 * until then: every appended id is found (in the table or in the tail),
 * absent ids are not, an id stored on several rows is found once per row,
 * against a brute-force oracle over the appended rows.
 *
 * Randomness comes from support/rng.h (splitmix64 seeded by $SEED, or by
 * the clock when it is unset); every test prints "test_memtable seed=N" so a
 * failure replays with SEED=N build/tests/test_memtable.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dedup.h"
#include "memtable.h"
#include "support/rng.h"

static test_rng rng;

static uint64_t rng_next(void)
{
	return test_rng_next(&rng);
}

static void seed_rng(const char *test)
{
	test_rng_seed(&rng, "test_memtable", test);
}

/* Id number n as 32 hex characters (packed to 16 bytes). */
static void id_text(uint64_t n, char text[33])
{
	snprintf(text, 33, "%016" PRIx64 "%016" PRIx64, n * UINT64_C(0x9e3779b97f4a7c15), n);
}

static void packed_of(const char *text, uint8_t buffer[ID_PACKED_SIZE_MAX], packed_id *id)
{
	size_t size;
	id->kind = (uint8_t)id_pack(text, strlen(text), buffer, &size);
	id->size = (uint8_t)size;
	id->bytes = buffer;
	id->hash = dedup_hash(id->kind, buffer, size);
}

/* Appends a row with id number n. */
static void append_id(memtable *m, uint64_t n, int64_t time_us)
{
	char text[33];
	id_text(n, text);
	uint8_t buffer[ID_PACKED_SIZE_MAX];
	packed_id id;
	packed_of(text, buffer, &id);
	tally_event e = {
		.event_id = {text, 32},
		.time_us = time_us,
		.type = {"llm_call", 8},
		.project = {"p", 1},
		.status = TALLY_STATUS_OK,
	};
	/* Odd ids come with their dimension hashes computed by the caller, as
	 * ingest does; even ones let the memtable hash. */
	uint64_t dim_hash[DIM_COUNT];
	tally_str dims[DIM_COUNT];
	event_dims(&e, dims);
	for (int d = 0; d < DIM_COUNT; d++)
		dim_hash[d] = strdict_hash(dims[d].ptr, dims[d].len);
	cr_assert_eq(memtable_append(m, &e, &id, n % 2 ? dim_hash : NULL), 0);
}

/* The rows memtable_find_next returns for id number n, in order. */
static uint32_t find_all(const memtable *m, uint64_t n, int64_t *found_rows, uint32_t max)
{
	char text[33];
	id_text(n, text);
	uint8_t buffer[ID_PACKED_SIZE_MAX];
	packed_id id;
	packed_of(text, buffer, &id);
	uint32_t cursor = 0, found = 0;
	int64_t row;
	while ((row = memtable_find_next(m, &id, &cursor)) >= 0) {
		cr_assert_lt(found, max, "id %" PRIu64 " found more often than stored", n);
		found_rows[found++] = row;
	}
	/* Exhausted stays exhausted. */
	cr_assert_eq(memtable_find_next(m, &id, &cursor), -1);
	return found;
}

static int compare_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

Test(memtable, ids_are_found_in_the_table_and_in_the_tail)
{
	seed_rng("ids_are_found_in_the_table_and_in_the_tail");
	/* Sizes around the tail bound: all tail, exactly one flush of the tail
	 * into the table, table plus a tail, many rounds. */
	const uint32_t sizes[] = {1, MEMTABLE_INDEX_TAIL_MAX - 1, MEMTABLE_INDEX_TAIL_MAX,
				  MEMTABLE_INDEX_TAIL_MAX + 1, 3 * MEMTABLE_INDEX_TAIL_MAX + 17, 20000};
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		uint32_t count = sizes[k];
		memtable m;
		cr_assert_eq(memtable_init(&m), 0);
		/* Id numbers: mostly distinct, some repeated (a backfill stores
		 * one id on several days); oracle[i] is row i's id number. */
		uint64_t *oracle = malloc(sizeof(*oracle) * count);
		cr_assert_not_null(oracle);
		for (uint32_t i = 0; i < count; i++) {
			oracle[i] = i && rng_next() % 16 == 0 ? oracle[rng_next() % i] : 1000000 + i;
			append_id(&m, oracle[i], (int64_t)i);
		}
		cr_assert_eq(m.rows.count, count);
		/* Both ways of hashing interned the same strings once: "", the
		 * type, the project. */
		cr_assert_eq(m.dict.count, count ? 3 : 0);
		cr_assert_lt(count - m.indexed, MEMTABLE_INDEX_TAIL_MAX, "size %u: tail bounded", count);
		cr_assert_eq(m.indexed % MEMTABLE_INDEX_TAIL_MAX, 0);
		int64_t got_rows[64], expect[64];
		for (uint32_t i = 0; i < count; i++) {
			uint32_t want = 0;
			for (uint32_t j = 0; j < count && want < 64; j++)
				if (oracle[j] == oracle[i])
					expect[want++] = j;
			uint32_t got = find_all(&m, oracle[i], got_rows, 64);
			qsort(got_rows, got, sizeof(got_rows[0]), compare_i64);
			cr_assert_eq(got, want, "size %u row %u: found %u rows, stored %u", count, i,
				     got, want);
			for (uint32_t j = 0; j < got; j++)
				cr_assert_eq(got_rows[j], expect[j], "size %u row %u", count, i);
		}
		/* Ids never appended. */
		for (int i = 0; i < 200; i++)
			cr_assert_eq(find_all(&m, 5000000 + rng_next() % 1000000, got_rows, 64), 0);
		free(oracle);
		memtable_free(&m);
	}
}

Test(memtable, ram_counts_the_index_and_the_id_hashes)
{
	memtable m;
	cr_assert_eq(memtable_init(&m), 0);
	for (uint32_t i = 0; i < MEMTABLE_INDEX_TAIL_MAX - 1; i++)
		append_id(&m, i, 0);
	cr_assert_eq(m.index_mask, 0, "no table while every row is in the tail");
	size_t before = memtable_bytes(&m);
	append_id(&m, MEMTABLE_INDEX_TAIL_MAX, 0);
	cr_assert_eq(m.indexed, MEMTABLE_INDEX_TAIL_MAX);
	cr_assert_eq(m.index_mask + 1, 2 * MEMTABLE_INDEX_TAIL_MAX);
	cr_assert_geq(memtable_bytes(&m) - before, (size_t)(m.index_mask + 1) * sizeof(uint32_t));
	memtable_free(&m);
}
