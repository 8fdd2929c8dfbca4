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
#include <sys/mman.h>

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
	cr_assert_eq(memtable_append(m, &e, &id, n % 2 ? dim_hash : NULL, NULL), 0);
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

/* The event of row i in rows_keep_every_value_across_growth: every field
 * a function of i; id number i + 7. */
static void growth_event(uint32_t i, char text[33], tally_event *e)
{
	static const char *const types[] = {"llm.call", "tool.call", "agent.run"};
	id_text((uint64_t)i + 7, text);
	memset(e, 0, sizeof(*e));
	e->event_id = (tally_str){text, 32};
	e->time_us = INT64_C(1790000000000000) + (int64_t)i * 1000;
	e->type = (tally_str){types[i % 3], (uint32_t)strlen(types[i % 3])};
	e->project = (tally_str){"p", 1};
	e->user = (tally_str){types[i % 2], (uint32_t)strlen(types[i % 2])};
	e->status = (uint8_t)(i % TALLY_STATUS_COUNT);
	e->duration_ms = i * 7;
	e->tokens_in = (uint64_t)i * 3;
	e->tokens_out = UINT64_MAX - i;
	e->cost_micros = -(int64_t)i;
}

/* Description: a memtable's rows keep every value of every row while they
 * grow: in one block up to ROWS_MAPPED_MIN rows, moved once into a mapping
 * per column there, then grown by mremap (no copy) at each doubling; the
 * id bytes and the id hashes become mappings at the same point. Rows not
 * marked map_large (a segment's decoded row group) stay in one block. */
Test(memtable, rows_keep_every_value_across_growth)
{
	enum { COUNT = 4 * ROWS_MAPPED_MIN + 123 };
	memtable m;
	cr_assert_eq(memtable_init(&m), 0);
	uint32_t capacity = 0;
	for (uint32_t i = 0; i < COUNT; i++) {
		char text[33];
		tally_event e;
		growth_event(i, text, &e);
		uint8_t buffer[ID_PACKED_SIZE_MAX];
		packed_id id;
		packed_of(text, buffer, &id);
		cr_assert_eq(memtable_append(&m, &e, &id, NULL, NULL), 0);
		if (m.rows.capacity != capacity) {
			capacity = m.rows.capacity;
			cr_assert_eq(m.rows.mapped, capacity >= ROWS_MAPPED_MIN, "capacity %u", capacity);
			cr_assert_eq(m.rows.block == NULL, capacity >= ROWS_MAPPED_MIN);
			cr_assert_eq(m.id_hash_mapped, m.id_hash_capacity >= ROWS_MAPPED_MIN,
				     "id hashes %u", m.id_hash_capacity);
			cr_assert_geq(memtable_bytes(&m), (size_t)capacity * 62, "capacity %u", capacity);
		}
	}
	cr_assert(m.rows.mapped);
	cr_assert(m.rows.id_bytes_mapped, "the id bytes follow the columns into a mapping");
	cr_assert(m.id_hash_mapped);
	for (uint32_t i = 0; i < COUNT; i++) {
		char text[33], got_text[ID_TEXT_SIZE_MAX];
		tally_event want, got;
		growth_event(i, text, &want);
		memtable_event(&m, i, &got, got_text);
		cr_assert(tally_event_equal(&got, &want), "row %u differs after growth", i);
	}
	memtable_free(&m);

	rows plain = {0};
	cr_assert_eq(rows_reserve(&plain, 4 * ROWS_MAPPED_MIN), 0);
	cr_expect(!plain.mapped && plain.block, "a row group's rows stay in one block");
	rows_free(&plain);
}

/* Lines of /proc/self/maps: the mappings this process holds. */
static long mapping_count(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	cr_assert_not_null(f);
	long lines = 0;
	for (int c; (c = fgetc(f)) != EOF;)
		lines += c == '\n';
	fclose(f);
	return lines;
}

/* AddressSanitizer's allocator needs mappings of its own, so the test
 * below runs in the plain build (make check) only. */
#ifdef __SANITIZE_ADDRESS__
#define MAP_COUNT_TEST_DISABLED true
#else
#define MAP_COUNT_TEST_DISABLED false
#endif

/* Description: when the process may not map more (vm.max_map_count
 * reached), a memtable passing ROWS_MAPPED_MIN rows keeps its rows in one
 * block, grown by copying, instead of failing the append (which would make
 * the store read-only). The test fills the map count with one-page
 * mappings, leaving a few for malloc. */
Test(memtable, rows_stay_in_a_block_when_no_mapping_is_left, .disabled = MAP_COUNT_TEST_DISABLED)
{
	FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
	cr_assert_not_null(f);
	long max = 0;
	cr_assert_eq(fscanf(f, "%ld", &max), 1);
	fclose(f);
	memtable m;
	cr_assert_eq(memtable_init(&m), 0);
	char text[33];
	tally_event e;
	uint8_t buffer[ID_PACKED_SIZE_MAX];
	packed_id id;
	for (uint32_t i = 0; i < ROWS_MAPPED_MIN; i++) {
		growth_event(i, text, &e);
		packed_of(text, buffer, &id);
		cr_assert_eq(memtable_append(&m, &e, &id, NULL, NULL), 0);
	}
	cr_assert_eq(m.rows.capacity, ROWS_MAPPED_MIN, "the next row doubles the rows");
	/* One page each, protections alternating so that neighbours do not
	 * merge into one mapping. */
	long fill = max - mapping_count() - 4;
	cr_assert_gt(fill, 0);
	void **pages = malloc(sizeof(*pages) * (size_t)fill);
	cr_assert_not_null(pages);
	long made = 0;
	for (; made < fill; made++) {
		pages[made] = mmap(NULL, 4096, made % 2 ? PROT_READ : PROT_NONE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (pages[made] == MAP_FAILED)
			break;
	}
	for (uint32_t i = ROWS_MAPPED_MIN; i < ROWS_MAPPED_MIN + 100; i++) {
		growth_event(i, text, &e);
		packed_of(text, buffer, &id);
		cr_assert_eq(memtable_append(&m, &e, &id, NULL, NULL), 0, "row %u", i);
	}
	cr_expect(!m.rows.mapped && m.rows.block, "no mapping was left: the rows grew as a block");
	cr_expect_eq(m.rows.capacity, 2 * ROWS_MAPPED_MIN);
	for (long k = 0; k < made; k++)
		munmap(pages[k], 4096);
	free(pages);
	for (uint32_t i = 0; i < ROWS_MAPPED_MIN + 100; i++) {
		char got_text[ID_TEXT_SIZE_MAX];
		tally_event want, got;
		growth_event(i, text, &want);
		memtable_event(&m, i, &got, got_text);
		cr_assert(tally_event_equal(&got, &want), "row %u", i);
	}
	memtable_free(&m);
}

/* ---- dim_recent: codes of the last event's strings ---------------------- */

/* Dimension strings for the tests below: some equal, some differing only
 * in their last byte, and the empty string. */
static const char *const RECENT_STRINGS[] = {
	"", "gpt-4o", "gpt-4p", "gpt-4o-mini", "claude-3-5-sonnet", "support-bot",
	"proj-00a1", "proj-00a2", "u",
};
#define RECENT_STRING_COUNT (sizeof(RECENT_STRINGS) / sizeof(RECENT_STRINGS[0]))

/* Event i with the given dimension strings (indexes into RECENT_STRINGS). */
static void recent_event(uint32_t i, const uint32_t pick[DIM_COUNT], char text[33], tally_event *e)
{
	id_text((uint64_t)i + 1000, text);
	memset(e, 0, sizeof(*e));
	e->event_id = (tally_str){text, 32};
	e->time_us = INT64_C(1790000000000000) + (int64_t)i;
	tally_str *dims[DIM_COUNT] = {&e->type, &e->project, &e->agent, &e->model, &e->user};
	for (int d = 0; d < DIM_COUNT; d++)
		*dims[d] = (tally_str){RECENT_STRINGS[pick[d]], (uint32_t)strlen(RECENT_STRINGS[pick[d]])};
}

/* Appends e to m with recent, the dimension hashes given as ingest gives
 * them, or all equal to `forced` when it is not 0. */
static int append_recent(memtable *m, const tally_event *e, dim_recent *recent, uint64_t forced)
{
	uint8_t buffer[ID_PACKED_SIZE_MAX];
	packed_id id;
	packed_of(e->event_id.ptr, buffer, &id);
	uint64_t dim_hash[DIM_COUNT];
	tally_str dims[DIM_COUNT];
	event_dims(e, dims);
	for (int d = 0; d < DIM_COUNT; d++)
		dim_hash[d] = forced ? forced : strdict_hash(dims[d].ptr, dims[d].len);
	return memtable_append(m, e, &id, dim_hash, recent);
}

/* Row i of m equals want, strings included. */
static void expect_row(const memtable *m, uint32_t i, const tally_event *want)
{
	char got_text[ID_TEXT_SIZE_MAX];
	tally_event got;
	memtable_event(m, i, &got, got_text);
	cr_assert(tally_event_equal(&got, want), "row %u: %.*s/%.*s/%.*s/%.*s/%.*s", i,
		  (int)got.type.len, got.type.ptr, (int)got.project.len, got.project.ptr,
		  (int)got.agent.len, got.agent.ptr, (int)got.model.len, got.model.ptr,
		  (int)got.user.len, got.user.ptr);
}

/* Description: appends through a dim_recent (kept over runs of events, as
 * ingest keeps one per batch) give every row the very codes appends
 * without one give, against a memtable filled without it: same
 * dictionary, same codes, same strings read back. The strings come from
 * a small set, so runs repeat them, with and without changes between
 * events. */
Test(memtable, recent_dimensions_give_the_codes_a_lookup_gives)
{
	seed_rng("recent_dimensions_give_the_codes_a_lookup_gives");
	enum { COUNT = 5000 };
	memtable with, without;
	cr_assert_eq(memtable_init(&with), 0);
	cr_assert_eq(memtable_init(&without), 0);
	static char texts[COUNT][33];
	static tally_event events[COUNT];
	dim_recent recent = {.m = NULL};
	uint32_t pick[DIM_COUNT] = {0};
	uint32_t hits_possible = 0;
	for (uint32_t i = 0; i < COUNT; i++) {
		if (rng_next() % 16 == 0)
			recent = (dim_recent){.m = NULL}; /* a new batch */
		for (int d = 0; d < DIM_COUNT; d++)
			if (rng_next() % 4 == 0)
				pick[d] = (uint32_t)(rng_next() % RECENT_STRING_COUNT);
		hits_possible += recent.m != NULL;
		recent_event(i, pick, texts[i], &events[i]);
		cr_assert_eq(append_recent(&with, &events[i], &recent, 0), 0);
		cr_assert_eq(append_recent(&without, &events[i], NULL, 0), 0);
		cr_assert_eq(recent.m, &with);
	}
	cr_assert_gt(hits_possible, COUNT / 2);
	cr_assert_eq(with.dict.count, without.dict.count);
	for (uint32_t i = 0; i < COUNT; i++) {
		for (int d = 0; d < DIM_COUNT; d++)
			cr_assert_eq(with.rows.dim[d][i], without.rows.dim[d][i], "row %u dimension %d",
				     i, d);
		expect_row(&with, i, &events[i]);
	}
	memtable_free(&with);
	memtable_free(&without);
}

/* Description: a dim_recent reuses a code only for the same bytes: two
 * strings of one length whose hashes are equal (forced here) get their
 * own codes, and each row reads back its own string. */
Test(memtable, recent_compares_the_bytes_not_only_the_hash)
{
	memtable m;
	cr_assert_eq(memtable_init(&m), 0);
	dim_recent recent = {.m = NULL};
	char texts[3][33];
	tally_event e[3];
	const uint32_t a[DIM_COUNT] = {1, 1, 1, 1, 1}, b[DIM_COUNT] = {2, 2, 2, 2, 2}; /* gpt-4o, gpt-4p */
	recent_event(0, a, texts[0], &e[0]);
	recent_event(1, b, texts[1], &e[1]);
	recent_event(2, a, texts[2], &e[2]);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(append_recent(&m, &e[i], &recent, UINT64_C(0x1234567812345678)), 0);
	cr_assert_eq(m.dict.count, 2);
	for (uint32_t i = 0; i < 3; i++)
		expect_row(&m, i, &e[i]);
	cr_assert_neq(m.rows.dim[DIM_MODEL][0], m.rows.dim[DIM_MODEL][1]);
	cr_assert_eq(m.rows.dim[DIM_MODEL][0], m.rows.dim[DIM_MODEL][2]);
	memtable_free(&m);
}

/* Description: a dim_recent filled by one memtable gives no codes to
 * another, whose dictionary numbers the same strings differently: the
 * other memtable looks its strings up, and the dim_recent then holds its
 * codes. */
Test(memtable, recent_codes_stay_with_their_memtable)
{
	memtable first, second;
	cr_assert_eq(memtable_init(&first), 0);
	cr_assert_eq(memtable_init(&second), 0);
	char texts[3][33];
	tally_event e[3];
	const uint32_t a[DIM_COUNT] = {3, 4, 5, 6, 7}, b[DIM_COUNT] = {8, 8, 8, 8, 8};
	recent_event(0, b, texts[0], &e[0]);
	recent_event(1, a, texts[1], &e[1]);
	recent_event(2, a, texts[2], &e[2]);
	cr_assert_eq(append_recent(&second, &e[0], NULL, 0), 0); /* "u" takes code 0 in second */
	dim_recent recent = {.m = NULL};
	cr_assert_eq(append_recent(&first, &e[1], &recent, 0), 0);
	cr_assert_eq(append_recent(&second, &e[2], &recent, 0), 0);
	cr_assert_eq(recent.m, &second);
	expect_row(&first, 0, &e[1]);
	expect_row(&second, 0, &e[0]);
	expect_row(&second, 1, &e[2]);
	cr_assert_eq(second.dict.count, 6);
	memtable_free(&first);
	memtable_free(&second);
}

/* Every id of rows [0, count) (id number 1000000 + row) is found at its
 * row, once; ids never appended are not. */
static void expect_every_id_found(const memtable *m, uint32_t count, const char *when)
{
	int64_t rows_found[4];
	for (uint32_t i = 0; i < count; i++) {
		uint32_t got = find_all(m, 1000000 + i, rows_found, 4);
		cr_assert_eq(got, 1, "%s: row %u found %u times", when, i, got);
		cr_assert_eq(rows_found[0], i, "%s: row %u found at %" PRId64, when, i, rows_found[0]);
	}
	for (int i = 0; i < 100; i++)
		cr_assert_eq(find_all(m, 50000000 + rng_next() % 1000000, rows_found, 4), 0);
}

/*
 * A large id index grows through a successor (memtable.c, note 1): made at
 * a quarter of the index's slots, faulted in up to three eighths, filled
 * INDEX_MOVE_ROWS rows a tail from there, and put in the index's place
 * before half. Every id is findable at every stage, and the memtable's RAM
 * counts the successor's pages as they are faulted in.
 */
Test(memtable, a_large_id_index_grows_through_a_successor)
{
	seed_rng("a_large_id_index_grows_through_a_successor");
	enum { N = 600000 };
	memtable m;
	cr_assert_eq(memtable_init(&m), 0);
	uint32_t swaps = 0, stage = 0, checks = 0;
	for (uint32_t i = 0; i < N; i++) {
		const uint32_t *next = m.index_next;
		uint32_t mask = m.index_mask, moved = m.index_moved;
		append_id(&m, 1000000 + i, (int64_t)i);
		uint32_t count = m.rows.count;
		if (m.index_mask != mask && (uint64_t)mask + 1 >= 65536) {
			/* A growth of a large index: the successor, ready. */
			swaps++;
			cr_assert_not_null(next, "%u rows: a large index grew without a successor", count);
			cr_assert_eq(m.index, next, "%u rows: the successor took the index's place", count);
			cr_assert_eq(m.index_mask, 2 * mask + 1);
			cr_assert_leq((uint64_t)count * 2, (uint64_t)mask + 1 + 2 * MEMTABLE_INDEX_TAIL_MAX,
				      "%u rows: swapped at %u slots, past half", count, mask + 1);
			cr_assert_null(m.index_next);
			expect_every_id_found(&m, count, "after a swap");
			checks++;
			stage = 0;
			continue;
		}
		if (!m.index_next)
			continue;
		uint64_t slots = (uint64_t)m.index_mask + 1;
		cr_assert_eq(m.index_next_mask, 2 * m.index_mask + 1);
		cr_assert_geq((uint64_t)count * 4, slots, "made before a quarter");
		cr_assert_leq(m.index_moved, m.indexed);
		if (next == m.index_next)
			cr_assert_leq(m.index_moved - moved, 4096, "%u rows: moved %u in one append",
				      count, m.index_moved - moved);
		cr_assert_eq(memtable_bytes(&m),
			     rows_bytes(&m.rows) + strdict_bytes(&m.dict) + slots * 4 +
				     (size_t)m.index_next_faulted * 4096 +
				     (size_t)m.id_hash_capacity * 8 + m.rollup_accounted,
			     "the successor's faulted pages count, and nothing else of it");
		/* The stages: made, moving, half moved. */
		int now = m.index_moved == 0 ? 1 : m.index_moved * 2 < m.indexed ? 2 : 3;
		if ((uint32_t)now > stage) {
			stage = (uint32_t)now;
			if (now == 1) /* faulted in over 16 tails or more, not at once */
				cr_assert_leq(m.index_next_faulted, slots * 8 / 4096 / 16 + 1,
					      "%u of %" PRIu64 " pages faulted in at once",
					      m.index_next_faulted, slots * 8 / 4096);
			expect_every_id_found(&m, count, now == 1 ? "successor made"
						  : now == 2 ? "moving" : "half moved");
			checks++;
		}
	}
	fprintf(stderr, "test_memtable: %u swaps, %u checks, %u slots\n", swaps, checks,
		m.index_mask + 1);
	cr_expect_geq(swaps, 3);
	memtable_free(&m);
}

static int64_t truncation_time(uint32_t i)
{
	return i % 2 ? -(int64_t)i : (int64_t)i; /* each row widens the bounds */
}

static void append_rows(memtable *m, uint32_t from, uint32_t to)
{
	for (uint32_t i = from; i < to; i++)
		append_id(m, 1000000 + i, truncation_time(i));
}

/* After memtable_truncate(m, count): rows [0, count) found once each, at
 * their rows; rows [count, gone) not at all; the id bytes, the time bounds
 * and the index's invariants as if only count rows had been appended. */
static void expect_truncated(const memtable *m, uint32_t count, uint32_t gone, const char *when)
{
	cr_assert_eq(m->rows.count, count, "%s", when);
	cr_assert_eq(m->rows.id_bytes.size, m->rows.id_offset[count], "%s: id bytes", when);
	cr_assert_leq(m->indexed, count, "%s: no index entry past the rows", when);
	cr_assert_lt(count - m->indexed, MEMTABLE_INDEX_TAIL_MAX, "%s: tail", when);
	cr_assert_leq(m->index_moved, m->indexed, "%s: successor", when);
	expect_every_id_found(m, count, when);
	int64_t rows_found[4];
	for (uint32_t i = count; i < gone; i++)
		cr_assert_eq(find_all(m, 1000000 + i, rows_found, 4), 0, "%s: row %u still found", when,
			     i);
	int64_t lo = INT64_MAX, hi = INT64_MIN;
	for (uint32_t i = 0; i < count; i++) {
		lo = truncation_time(i) < lo ? truncation_time(i) : lo;
		hi = truncation_time(i) > hi ? truncation_time(i) : hi;
	}
	if (count) {
		cr_assert_eq(m->time_min_us, lo, "%s: time_min", when);
		cr_assert_eq(m->time_max_us, hi, "%s: time_max", when);
	}
	cr_assert_eq(memtable_bytes(m),
		     rows_bytes(&m->rows) + strdict_bytes(&m->dict) +
			     (m->index_mask ? ((size_t)m->index_mask + 1) * 4 : 0) +
			     (size_t)m->index_next_faulted * 4096 + (size_t)m->id_hash_capacity * 8 +
			     m->rollup_accounted,
		     "%s: memtable_bytes", when);
}

/*
 * memtable_truncate, as a failed ingest call uses it: the rows it forgets
 * may be only in the tail, or already in the id index, or in the index and
 * its successor. Each time the memtable then looks as if they had never
 * been appended, and takes the same rows again.
 */
Test(memtable, truncation_forgets_rows_in_the_tail_the_index_and_the_successor)
{
	seed_rng("truncation_forgets_rows_in_the_tail_the_index_and_the_successor");
	memtable m;
	cr_assert_eq(memtable_init(&m), 0);

	/* In the tail only. */
	append_rows(&m, 0, 300);
	cr_assert_eq(m.indexed, 0);
	memtable_truncate(&m, 200);
	expect_truncated(&m, 200, 300, "the tail");
	append_rows(&m, 200, 300);
	expect_truncated(&m, 300, 300, "the tail, appended again");

	/* In the index: rows [1000, 2000) went in with two tails. */
	append_rows(&m, 300, 2000);
	cr_assert_geq(m.indexed, 1536);
	memtable_truncate(&m, 1000);
	cr_assert_eq(m.indexed, 1000, "the index holds exactly the rows kept");
	expect_truncated(&m, 1000, 2000, "the index");
	append_rows(&m, 1000, 2000);
	expect_truncated(&m, 2000, 2000, "the index, appended again");

	/* In the index and its successor, while rows move into it. */
	uint32_t count = 2000;
	while (!(m.index_next && m.index_moved > 8192))
		append_rows(&m, count, count + 1), count++;
	uint32_t slots = m.index_mask + 1;
	memtable_truncate(&m, m.index_moved - 4096);
	cr_assert_null(m.index_next, "a successor holding forgotten rows is let go");
	cr_assert_eq(m.index_mask + 1, slots, "the index keeps its size");
	expect_truncated(&m, m.rows.count, count, "the successor");
	uint32_t kept = m.rows.count;
	/* Appending again builds a new successor and swaps it in. */
	while (m.index_mask + 1 == slots)
		append_rows(&m, kept, kept + 1), kept++;
	expect_truncated(&m, kept, kept, "after the next growth");

	/* To nothing. */
	memtable_truncate(&m, 0);
	expect_truncated(&m, 0, kept, "emptied");
	append_rows(&m, 0, 10);
	expect_truncated(&m, 10, 10, "emptied, then appended");
	memtable_free(&m);
}/* Description: a row set's id bytes stop at ROWS_ID_BYTES_MAX (its
 * offsets are 32-bit): a reserve that would pass it fails with
 * TALLY_E_LIMIT and changes nothing, and one that reaches it exactly is
 * allowed. (Before, the offsets wrapped past 4 GiB: rows read an earlier
 * event's id.) No memory is touched: the sizes are set by hand. */
Test(memtable, id_bytes_stop_where_their_offsets_would_wrap)
{
	rows r;
	memset(&r, 0, sizeof(r));
	r.id_bytes.size = ROWS_ID_BYTES_MAX - 10;
	r.id_bytes.capacity = ROWS_ID_BYTES_MAX - 10;
	cr_expect_eq(rows_reserve_id_bytes(&r, 11), TALLY_E_LIMIT);
	cr_expect_eq(rows_reserve_id_bytes(&r, SIZE_MAX / 2), TALLY_E_LIMIT);
	cr_expect_eq(r.id_bytes.size, ROWS_ID_BYTES_MAX - 10);
	cr_expect_eq(r.id_bytes.capacity, ROWS_ID_BYTES_MAX - 10);
	cr_expect_null(r.id_bytes.data);
	r.id_bytes.capacity = ROWS_ID_BYTES_MAX;
	cr_expect_eq(rows_reserve_id_bytes(&r, 10), 0, "exactly to the limit: room already");
}



/*
 * Block time ranges (memtable.blocks): a block's range is noted only when
 * it is the first one not known, and memtable_truncate forgets the ranges
 * of the blocks its cut reaches, so a block filled again by other rows
 * never skips them by the old range.
 */
Test(memtable, truncation_forgets_the_block_ranges_it_reaches)
{
	seed_rng("truncation_forgets_the_block_ranges_it_reaches");
	memtable m;
	cr_assert_eq(memtable_init(&m), 0);
	append_rows(&m, 0, 3 * MEMTABLE_TIME_BLOCK_ROWS + 10);
	memtable_block_note(&m, 1, (time_range){5, 6});
	cr_assert_eq(m.blocks_known, 0, "block 1 before block 0: not noted");
	for (uint32_t b = 0; b < 3; b++)
		memtable_block_note(&m, b, (time_range){10 * b, 10 * b + 1});
	cr_assert_eq(m.blocks_known, 3);
	time_range got;
	cr_assert_eq(memtable_block_range(&m, 2, &got), 1);
	cr_expect(got.min_us == 20 && got.max_us == 21);
	cr_expect_eq(memtable_block_range(&m, 3, &got), 0, "block 3 is not whole");
	memtable_truncate(&m, 3 * MEMTABLE_TIME_BLOCK_ROWS); /* blocks 0-2 keep all their rows */
	cr_expect_eq(m.blocks_known, 3);
	memtable_truncate(&m, 2 * MEMTABLE_TIME_BLOCK_ROWS - 1); /* into block 1 */
	cr_expect_eq(m.blocks_known, 1, "blocks 1 and 2 lost rows: their ranges go");
	cr_expect_eq(memtable_block_range(&m, 1, &got), 0);
	memtable_free(&m);
}
