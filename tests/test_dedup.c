/*
 * test_dedup.c — the fingerprint table against a brute-force oracle.
 *
 * Description: random 64-bit hashes (seeded; SEED=… replays) are inserted
 * with random days; every lookup must return exactly the days of the
 * entries whose 48-bit fingerprint matches, the table must stay within its
 * RAM budget (≤ 16 bytes per id), probe lengths must stay short at every
 * size (a table past 65,536 slots once overflowed its home computation and
 * degraded to probe runs of tens of thousands), every rebuild must keep
 * every entry findable (runs that wrap, tied homes), and expiry must drop
 * exactly the old days.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "dedup.h"
#include "tally_limits.h"

static uint64_t seed_get(void)
{
	const char *env = getenv("SEED");
	uint64_t seed = env && env[0] ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
	fprintf(stderr, "test_dedup seed=%" PRIu64 "\n", seed);
	return seed;
}

static uint64_t splitmix(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t fingerprint(uint64_t hash)
{
	uint64_t fp = hash >> 16;
	return fp ? fp : 1;
}

/* Brute force: the days of every inserted entry with this fingerprint. */
static size_t oracle_find(const uint64_t *hashes, const uint16_t *days, size_t n, uint64_t hash,
			  uint16_t day_min, uint16_t *out, size_t out_max)
{
	size_t found = 0;
	for (size_t i = 0; i < n; i++)
		if (days[i] >= day_min && fingerprint(hashes[i]) == fingerprint(hash) && found < out_max)
			out[found++] = days[i];
	return found;
}

static int cmp_u16(const void *a, const void *b)
{
	return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

/* Every entry's lookup finds as many matches as the oracle counts with day >= day_min. */
static void expect_all_found(const dedup_table *t, const uint64_t *hashes, const uint16_t *days,
			     size_t n, uint16_t day_min, const char *when)
{
	uint16_t got[32], want[32];
	for (size_t i = 0; i < n; i++) {
		size_t g = dedup_find(t, hashes[i], 0, got, 32);
		size_t w = oracle_find(hashes, days, n, hashes[i], day_min, want, 32);
		cr_assert_eq(g, w, "%s, capacity %u: lookup %zu found %zu, oracle %zu", when,
			     t->capacity, i, g, w);
	}
}

/* A hash for entry i that makes Robin Hood order hard to keep: a third
 * have homes in the last 1/64 of the table (runs that pass its end and
 * wrap to its start), a quarter share the top 32 bits of an earlier hash
 * (the same home at every capacity), the rest are uniform. */
static uint64_t hostile_hash(uint64_t *state, const uint64_t *earlier, size_t i)
{
	uint64_t r = splitmix(state);
	switch (splitmix(state) % 12) {
	case 0: case 1: case 2: case 3:
		return r | 0xfc00000000000000ull;
	case 4: case 5: case 6:
		return i ? (earlier[r % i] & 0xffffffff00000000ull) | (r & 0xffffffffull) : r;
	default:
		return r;
	}
}

/* The home slot of an entry, as dedup.c computes it. */
static uint32_t home_of(const dedup_table *t, uint64_t entry)
{
	return dedup_home(entry >> 16, t->capacity);
}

static uint32_t distance_at(const dedup_table *t, uint32_t slot)
{
	uint32_t home = home_of(t, t->slots[slot]);
	return slot >= home ? slot - home : slot + t->capacity - home;
}

/* The table's invariants, checked slot by slot: count is the number of
 * full slots, and every entry away from its home follows a full slot
 * whose entry is at most one slot further from its own home (Robin Hood
 * order: no gap and no richer entry between an entry and its home). */
static void expect_robin_hood(const dedup_table *t, const char *when)
{
	uint32_t full = 0;
	for (uint32_t i = 0; i < t->capacity; i++) {
		if (!t->slots[i])
			continue;
		full++;
		uint32_t d = distance_at(t, i);
		if (!d)
			continue;
		uint32_t before = i ? i - 1 : t->capacity - 1;
		cr_assert(t->slots[before], "%s: slot %u is %u from home after an empty slot", when, i, d);
		cr_assert_geq(distance_at(t, before) + 1, d,
			      "%s: slot %u is %u from home, slot %u only %u", when, i, d, before,
			      distance_at(t, before));
	}
	cr_assert_eq(full, t->count, "%s: %u full slots, count %u", when, full, t->count);
}

/* Every entry's lookup at day_min (what the store asks) finds as many
 * matches as the oracle counts with day >= day_min, each of day >= day_min. */
static void expect_visible(const dedup_table *t, const uint64_t *hashes, const uint16_t *days,
			   size_t n, uint16_t day_min, const char *when)
{
	uint16_t got[32], want[32];
	for (size_t i = 0; i < n; i++) {
		size_t g = dedup_find(t, hashes[i], day_min, got, 32);
		size_t w = oracle_find(hashes, days, n, hashes[i], day_min, want, 32);
		cr_assert_eq(g, w, "%s, day_min %u: lookup %zu found %zu, oracle %zu", when, day_min, i,
			     g, w);
		for (size_t k = 0; k < g; k++)
			cr_assert_geq(got[k], day_min);
	}
}

Test(dedup, lookups_match_a_brute_force_oracle)
{
	uint64_t state = seed_get();
	enum { N = 20000 };
	uint64_t *hashes = malloc(sizeof(*hashes) * N);
	uint16_t *days = malloc(sizeof(*days) * N);
	dedup_table t = {0};
	for (size_t i = 0; i < N; i++) {
		/* Every 50th entry shares the fingerprint of an earlier one (a
		 * false match the store must resolve by verification). */
		hashes[i] = (i % 50 == 49) ? (hashes[i / 2] & ~0xffffull) | (splitmix(&state) & 0xffff)
					   : splitmix(&state);
		days[i] = (uint16_t)(20000 + splitmix(&state) % 40);
		cr_assert_eq(dedup_insert(&t, hashes[i], days[i], 0), 0);
	}
	cr_assert_eq(t.count, N);
	uint16_t got[32], want[32];
	for (size_t i = 0; i < N + 5000; i++) {
		uint64_t hash = i < N ? hashes[i] : splitmix(&state);
		size_t g = dedup_find(&t, hash, 0, got, 32);
		size_t w = oracle_find(hashes, days, N, hash, 0, want, 32);
		cr_assert_eq(g, w, "lookup %zu: %zu matches, oracle %zu", i, g, w);
		qsort(got, g, sizeof(got[0]), cmp_u16);
		qsort(want, w, sizeof(want[0]), cmp_u16);
		for (size_t k = 0; k < g; k++)
			cr_assert_eq(got[k], want[k], "lookup %zu: day %u, oracle %u", i, got[k], want[k]);
	}
	/* Expire days below 20020: exactly the newer entries remain. */
	cr_assert_eq(dedup_expire(&t, 20020), 0);
	size_t kept = 0;
	for (size_t i = 0; i < N; i++)
		kept += days[i] >= 20020;
	cr_expect_eq(t.count, kept);
	expect_all_found(&t, hashes, days, N, 20020, "after expiry");
	dedup_free(&t);
	free(hashes);
	free(days);
}

/*
 * Every rebuild (each growth, each expiry) must leave every entry
 * findable, also where Robin Hood order is hardest to keep: a third of
 * the hashes have homes in the last 1/64 of the table (runs that pass its
 * end and wrap to its start), and a quarter share the top 32 bits of an
 * earlier hash (the same home at every capacity, in any order).
 */
Test(dedup, rebuilds_keep_every_entry_findable_when_runs_wrap_and_homes_tie)
{
	uint64_t state = seed_get();
	enum { N = 6000 };
	uint64_t *hashes = malloc(sizeof(*hashes) * N);
	uint16_t *days = malloc(sizeof(*days) * N);
	dedup_table t = {0};
	uint32_t capacity = 0;
	for (size_t i = 0; i < N; i++) {
		hashes[i] = hostile_hash(&state, hashes, i);
		days[i] = (uint16_t)(30000 + splitmix(&state) % 20);
		cr_assert_eq(dedup_insert(&t, hashes[i], days[i], 0), 0);
		if (t.capacity != capacity) { /* it just grew */
			capacity = t.capacity;
			expect_all_found(&t, hashes, days, i + 1, 0, "after growth");
		}
	}
	expect_all_found(&t, hashes, days, N, 0, "full");
	for (uint16_t day_min = 30005; day_min <= 30015; day_min += 5) {
		cr_assert_eq(dedup_expire(&t, day_min), 0);
		expect_all_found(&t, hashes, days, N, day_min, "after expiry");
	}
	dedup_free(&t);
	free(hashes);
	free(days);
}

/*
 * The RAM budget, checked every 1,000 inserts up to 2 million ids: at most
 * 16 bytes per id, but while a large table's successor is prepared or its
 * migration lasts, when both tables are held (as a growth in one call held
 * both before): at most the 23.5 bytes per id both take just before a
 * growth (8 * (1 + 1.5) / 0.85).
 */
Test(dedup, large_tables_keep_short_probes_and_the_ram_budget)
{
	uint64_t state = seed_get();
	dedup_table t = {0};
	uint32_t checkpoints[] = {1000, 70000, 300000, 1000000, 2000000};
	size_t next = 0;
	uint32_t steady = 0, both = 0;
	for (uint32_t i = 1; i <= 2000000; i++) {
		cr_assert_eq(dedup_insert(&t, splitmix(&state), 20500, 0), 0);
		if (i % 1000 == 0) {
			double per_id = (double)dedup_bytes(&t) / t.count;
			if (t.next || t.old) {
				both++;
				cr_assert_leq(per_id, 8.0 * 2.5 / 0.85, "%u ids, two tables: %.2f bytes per id",
					      i, per_id);
			} else {
				steady++;
				cr_assert_leq(per_id, 16.0, "%u ids: %.2f bytes per id", i, per_id);
			}
		}
		if (i == checkpoints[next]) {
			uint32_t probe = dedup_probe_length_max(&t);
			fprintf(stderr, "dedup: %u ids, capacity %u, %.2f bytes/id, longest probe %u\n", i,
				t.capacity, (double)dedup_bytes(&t) / t.count, probe);
			cr_expect_lt(probe, 256, "%u ids: a probe run of %u slots", i, probe);
			next++;
		}
	}
	fprintf(stderr, "dedup: %u checks with one table, %u with two\n", steady, both);
	cr_expect_gt(both, 0);
	cr_expect_gt(steady, both);
	dedup_free(&t);
}

Test(dedup, empty_table_finds_nothing_and_expiry_to_empty_frees)
{
	dedup_table t = {0};
	uint16_t days[4];
	cr_expect_eq(dedup_find(&t, 12345, 0, days, 4), 0);
	cr_expect_eq(dedup_expire(&t, 100), 0);
	cr_assert_eq(dedup_insert(&t, 12345ull << 16, 7, 0), 0);
	cr_expect_eq(dedup_find(&t, 12345ull << 16, 0, days, 4), 1);
	cr_expect_eq(days[0], 7);
	cr_assert_eq(dedup_expire(&t, 8), 0);
	cr_expect_eq(t.count, 0);
	cr_expect_eq(t.capacity, 0);
	cr_expect_eq(dedup_find(&t, 12345ull << 16, 0, days, 4), 0);
	/* A hash whose top 48 bits are zero still gets a non-zero entry. */
	cr_assert_eq(dedup_insert(&t, 0x1234, 9, 0), 0);
	cr_expect_eq(dedup_find(&t, 0x5678, 0, days, 4), 1, "fingerprint 0 is stored as 1");
	dedup_free(&t);
}

Test(dedup, lookups_ignore_days_before_day_min)
{
	uint64_t state = seed_get();
	enum { N = 5000 };
	uint64_t *hashes = malloc(sizeof(*hashes) * N);
	uint16_t *days = malloc(sizeof(*days) * N);
	dedup_table t = {0};
	for (size_t i = 0; i < N; i++) {
		/* Every 10th entry repeats an earlier fingerprint on another day. */
		hashes[i] = i % 10 == 9 ? hashes[i / 2] : splitmix(&state);
		days[i] = (uint16_t)(40000 + splitmix(&state) % 10);
		cr_assert_eq(dedup_insert(&t, hashes[i], days[i], 0), 0);
	}
	for (uint16_t day_min = 40000; day_min <= 40010; day_min += 5)
		expect_visible(&t, hashes, days, N, day_min, "lookups");
	cr_expect_eq(t.count, N, "lookups remove nothing");
	dedup_free(&t);
	free(hashes);
	free(days);
}

/* Sweeps with slices of random sizes (1 slot to the whole table) remove
 * exactly the old entries, in place, and keep Robin Hood order. */
Test(dedup, sweeps_in_slices_remove_exactly_the_old_days)
{
	uint64_t state = seed_get();
	enum { N = 8000, ROUNDS = 6 };
	uint64_t *hashes = malloc(sizeof(*hashes) * N);
	uint16_t *days = malloc(sizeof(*days) * N);
	for (int round = 0; round < ROUNDS; round++) {
		dedup_table t = {0};
		size_t n = 1 + splitmix(&state) % N;
		for (size_t i = 0; i < n; i++) {
			hashes[i] = hostile_hash(&state, hashes, i);
			days[i] = (uint16_t)(30000 + splitmix(&state) % 20);
			cr_assert_eq(dedup_insert(&t, hashes[i], days[i], 0), 0);
		}
		uint16_t day_min = (uint16_t)(30000 + splitmix(&state) % 21);
		uint32_t capacity = t.capacity, cursor = 0, slices = 0;
		uint32_t slice_max = 1 + (uint32_t)(splitmix(&state) % capacity);
		while (!dedup_expire_slice(&t, day_min, &cursor,
					   1 + (uint32_t)(splitmix(&state) % slice_max)))
			slices++;
		cr_assert_eq(t.capacity, capacity, "a sweep does not resize");
		size_t kept = 0;
		for (size_t i = 0; i < n; i++)
			kept += days[i] >= day_min;
		cr_expect_eq(t.count, kept, "round %d: %zu entries, day_min %u, %u slices", round, n,
			     day_min, slices + 1);
		for (uint32_t i = 0; i < t.capacity; i++)
			cr_assert(!t.slots[i] || (uint16_t)t.slots[i] >= day_min,
				  "round %d: slot %u still holds day %u", round, i,
				  (uint16_t)t.slots[i]);
		expect_robin_hood(&t, "after the sweep");
		expect_all_found(&t, hashes, days, n, day_min, "after the sweep");
		dedup_free(&t);
	}
	free(hashes);
	free(days);
}

/* Inserts between the slices of a sweep (what ingest does between the
 * store's expiry steps), enough to grow the table mid-sweep: every live
 * entry stays findable, no old one is visible to a lookup at day_min, and
 * a growth leaves none at all. */
Test(dedup, inserts_between_slices_keep_every_live_entry_findable)
{
	uint64_t state = seed_get();
	enum { OLD = 6000, NEW = 8000 };
	uint64_t *hashes = malloc(sizeof(*hashes) * (OLD + NEW));
	uint16_t *days = malloc(sizeof(*days) * (OLD + NEW));
	dedup_table t = {0};
	for (size_t i = 0; i < OLD; i++) {
		hashes[i] = hostile_hash(&state, hashes, i);
		days[i] = (uint16_t)(30000 + splitmix(&state) % 10);
		cr_assert_eq(dedup_insert(&t, hashes[i], days[i], 0), 0);
	}
	const uint16_t day_min = 30005;
	size_t n = OLD;
	uint32_t cursor = 0, capacity = t.capacity;
	int grew = 0;
	while (!dedup_expire_slice(&t, day_min, &cursor, 1 + (uint32_t)(splitmix(&state) % 128))) {
		for (size_t k = splitmix(&state) % 120; k && n < OLD + NEW; k--, n++) {
			hashes[n] = hostile_hash(&state, hashes, n);
			days[n] = (uint16_t)(day_min + splitmix(&state) % 5);
			cr_assert_eq(dedup_insert(&t, hashes[n], days[n], day_min), 0);
		}
		grew |= t.capacity != capacity;
		expect_robin_hood(&t, "between slices");
	}
	cr_assert(grew, "the inserts grew the table mid-sweep (%zu inserted)", n - OLD);
	expect_visible(&t, hashes, days, n, day_min, "after the sweep");
	/* What may be left dead: old entries an insert moved behind the cursor
	 * after the last growth. */
	size_t live = 0;
	for (size_t i = 0; i < n; i++)
		live += days[i] >= day_min;
	cr_expect_geq(t.count, live);
	cr_expect_eq(dedup_expire(&t, day_min), 0);
	cr_expect_eq(t.count, live, "a second sweep leaves only live entries");
	dedup_free(&t);
	free(hashes);
	free(days);
}

/* Every entry of t's (new) table is of day `day`. */
static void expect_only_day(const dedup_table *t, uint16_t day)
{
	for (uint32_t i = 0; i < t->capacity; i++)
		cr_assert(!t->slots[i] || (uint16_t)t->slots[i] == day, "slot %u holds day %u", i,
			  (uint16_t)t->slots[i]);
}

Test(dedup, a_growth_drops_the_entries_before_day_min)
{
	uint64_t state = seed_get();
	dedup_table t = {0};
	while (t.capacity < 1000 || (t.count + 1) * 100 <= (uint64_t)t.capacity * 85)
		cr_assert_eq(dedup_insert(&t, splitmix(&state), (uint16_t)(t.count % 2 ? 7 : 9), 0), 0);
	uint32_t count = t.count, capacity = t.capacity;
	uint32_t day9 = (count + 1) / 2; /* even insert numbers */
	/* This insert passes the load limit: the growth keeps only day 9. */
	cr_assert_eq(dedup_insert(&t, splitmix(&state), 9, 8), 0);
	cr_expect_gt(t.capacity, capacity);
	cr_expect_eq(t.count, day9 + 1, "%u entries were %u, half of them of day 7", t.count, count);
	expect_only_day(&t, 9);
	expect_robin_hood(&t, "after the growth");
	dedup_free(&t);
}

Test(dedup, a_sweep_shrinks_only_a_sparse_table)
{
	uint64_t state = seed_get();
	dedup_table t = {0};
	for (uint32_t i = 0; i < 10000; i++)
		cr_assert_eq(dedup_insert(&t, splitmix(&state), (uint16_t)(i % 10), 0), 0);
	uint32_t capacity = t.capacity;
	cr_assert_geq(t.count * 100, capacity * 56, "a grown table is at least 56%% full");
	/* Day 0 goes: 9,000 left, still above DEDUP_LOAD_PERCENT_MIN. */
	cr_assert_eq(dedup_expire(&t, 1), 0);
	cr_expect_eq(t.count, 9000);
	cr_expect_eq(t.capacity, capacity, "%u slots for 9000 is not sparse", capacity);
	/* Days 1 to 4 go: 5,000 left, below half: rebuilt at ~70%. */
	cr_assert_eq(dedup_expire(&t, 5), 0);
	cr_expect_eq(t.count, 5000);
	cr_expect_eq(t.capacity, 5000 * 10 / 7 + 1);
	expect_robin_hood(&t, "after the shrink");
	/* Everything goes: the table is freed. */
	cr_assert_eq(dedup_expire(&t, 10), 0);
	cr_expect_eq(t.count, 0);
	cr_expect_eq(t.capacity, 0);
	cr_expect_null(t.slots);
	dedup_free(&t);
}

/* ---- migrating growth (tables of DEDUP_MIGRATE_SLOTS_MIN slots and more) */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The oracle of a large table: every entry as fingerprint << 16 | day,
 * sorted; a lookup counts the entries of its fingerprint with day >=
 * day_min by binary search. */
static size_t sorted_count(const uint64_t *sorted, size_t n, uint64_t hash, uint16_t day_min)
{
	uint64_t low = fingerprint(hash) << 16 | day_min, high = fingerprint(hash) << 16 | 0xffff;
	size_t a = 0, b = n;
	while (a < b) {
		size_t mid = a + (b - a) / 2;
		if (sorted[mid] < low)
			a = mid + 1;
		else
			b = mid;
	}
	size_t count = 0;
	while (a + count < n && sorted[a + count] <= high)
		count++;
	return count;
}

/* Every one of the n entries is found as often as the oracle says, and as
 * many random hashes as entries find what the oracle says (nothing,
 * nearly always). */
static void expect_large_found(const dedup_table *t, const uint64_t *hashes, const uint16_t *days,
			       size_t n, uint64_t *state, const char *when)
{
	uint64_t *sorted = malloc(sizeof(*sorted) * (n + 1));
	cr_assert_not_null(sorted);
	for (size_t i = 0; i < n; i++)
		sorted[i] = fingerprint(hashes[i]) << 16 | days[i];
	qsort(sorted, n, sizeof(*sorted), cmp_u64);
	uint16_t got[DEDUP_DAY_CANDIDATES_MAX];
	for (size_t i = 0; i < 2 * n; i++) {
		uint64_t hash = i < n ? hashes[i] : splitmix(state);
		size_t g = dedup_find(t, hash, 0, got, DEDUP_DAY_CANDIDATES_MAX);
		size_t w = sorted_count(sorted, n, hash, 0);
		cr_assert_eq(g, w < DEDUP_DAY_CANDIDATES_MAX ? w : DEDUP_DAY_CANDIDATES_MAX,
			     "%s (capacity %u, old %u, moved %u): lookup %zu found %zu, oracle %zu",
			     when, t->capacity, t->old_capacity, t->moved, i, g, w);
	}
	free(sorted);
}

/* hostile_hash's kinds in proportions a table of 400,000 ids can probe in
 * reasonable time: 1% with homes in the last 1/4096 of the table (runs
 * that wrap), a quarter with the home of an earlier hash, the rest
 * uniform. */
static uint64_t large_hash(uint64_t *state, const uint64_t *earlier, size_t i)
{
	uint64_t r = splitmix(state);
	uint64_t kind = splitmix(state) % 100;
	if (kind == 0)
		return r | 0xfff0000000000000ull;
	if (kind < 26 && i)
		return (earlier[r % i] & 0xffffffff00000000ull) | (r & 0xffffffffull);
	return r;
}

/*
 * Inserts through several migrations, with hashes that make Robin Hood
 * order hard to keep (runs that wrap, tied homes) and every 50th a repeat
 * of an earlier fingerprint. Lookups are checked against the oracle right
 * after each growth begins, at a third and two thirds of each migration,
 * and right after it ends.
 */
Test(dedup, migrating_growths_keep_every_entry_findable_at_every_stage)
{
	uint64_t state = seed_get();
	enum { N = 400000 };
	uint64_t *hashes = malloc(sizeof(*hashes) * N);
	uint16_t *days = malloc(sizeof(*days) * N);
	cr_assert(hashes && days);
	dedup_table t = {0};
	int migrations = 0, checks = 0;
	uint32_t mark_third = 0, mark_two_thirds = 0;
	for (size_t i = 0; i < N; i++) {
		hashes[i] = i % 50 == 49 ? hashes[i / 2] : large_hash(&state, hashes, i);
		days[i] = (uint16_t)(20000 + splitmix(&state) % 30);
		int was_migrating = t.old != NULL;
		uint32_t capacity = t.capacity;
		cr_assert_eq(dedup_insert(&t, hashes[i], days[i], 0), 0);
		cr_assert_eq(t.count, i + 1);
		const char *when = NULL;
		if (t.capacity != capacity && t.old) {
			migrations++;
			mark_third = t.old_capacity / 3;
			mark_two_thirds = t.old_capacity / 3 * 2;
			when = "a growth began";
		} else if (t.old && t.moved >= mark_third && mark_third) {
			mark_third = 0;
			when = "a third moved";
		} else if (t.old && t.moved >= mark_two_thirds && mark_two_thirds) {
			mark_two_thirds = 0;
			when = "two thirds moved";
		} else if (was_migrating && !t.old) {
			when = "the migration ended";
			expect_robin_hood(&t, when);
		}
		if (when) {
			expect_large_found(&t, hashes, days, i + 1, &state, when);
			checks++;
		}
	}
	cr_expect_geq(migrations, 2, "%d migrations", migrations);
	fprintf(stderr, "dedup: %d migrations, %d checks, capacity %u\n", migrations, checks,
		t.capacity);
	dedup_free(&t);
	free(hashes);
	free(days);
}

/* Fills t with random hashes of alternating days 7 and 9 until the next
 * insert starts a migration. */
static void fill_to_a_migration(dedup_table *t, uint64_t *state)
{
	while (t->capacity < DEDUP_MIGRATE_SLOTS_MIN ||
	       (t->count + 1) * 100 <= (uint64_t)t->capacity * DEDUP_LOAD_PERCENT_MAX)
		cr_assert_eq(dedup_insert(t, splitmix(state), (uint16_t)(t->count % 2 ? 7 : 9), 0), 0);
	cr_assert_null(t->old);
}

Test(dedup, a_large_growth_moves_one_step_per_insert)
{
	uint64_t state = seed_get();
	dedup_table t = {0};
	/* Under DEDUP_MIGRATE_SLOTS_MIN slots, every growth happens at once. */
	while (t.capacity < DEDUP_MIGRATE_SLOTS_MIN) {
		cr_assert_eq(dedup_insert(&t, splitmix(&state), 9, 0), 0);
		cr_assert_null(t.old, "a table of %u slots migrates", t.capacity);
	}
	fill_to_a_migration(&t, &state);
	uint32_t capacity = t.capacity, count = t.count;
	cr_assert_eq(dedup_insert(&t, splitmix(&state), 9, 0), 0);
	cr_assert_not_null(t.old, "the growth past %u slots migrates", capacity);
	cr_expect_eq(t.old_capacity, capacity);
	cr_expect_eq(t.capacity, capacity * 3 / 2);
	cr_expect_eq(t.moved, 0, "the insert that grows the table moves nothing yet");
	cr_expect_eq(t.count, count + 1);
	cr_expect_eq(dedup_bytes(&t), ((size_t)capacity + capacity * 3 / 2) * 8,
		     "both tables are counted while the migration lasts");
	uint32_t inserts = 0;
	while (t.old) {
		uint32_t moved = t.moved;
		cr_assert_eq(dedup_insert(&t, splitmix(&state), 9, 0), 0);
		inserts++;
		if (t.old)
			cr_assert_eq(t.moved, moved + DEDUP_MIGRATE_STEP_SLOTS);
	}
	cr_expect_eq(inserts, (capacity + DEDUP_MIGRATE_STEP_SLOTS - 1) / DEDUP_MIGRATE_STEP_SLOTS);
	cr_expect_eq(t.count, count + 1 + inserts);
	cr_expect_eq(dedup_bytes(&t), (size_t)t.capacity * 8);
	expect_robin_hood(&t, "after the migration");
	dedup_free(&t);
}

Test(dedup, a_migration_drops_the_entries_before_day_min)
{
	uint64_t state = seed_get();
	dedup_table t = {0};
	fill_to_a_migration(&t, &state);
	uint32_t count = t.count;
	uint32_t day9 = (count + 1) / 2; /* even insert numbers */
	uint32_t inserts = 0;
	do {
		cr_assert_eq(dedup_insert(&t, splitmix(&state), 9, 8), 0);
		inserts++;
	} while (t.old);
	cr_expect_eq(t.count, day9 + inserts, "%u entries were %u, half of them of day 7", t.count,
		     count);
	expect_only_day(&t, 9);
	expect_robin_hood(&t, "after the migration");
	dedup_free(&t);
}

/* A tenant that stops inserting mid-migration: the expiry sweep finishes
 * the migration (dropping old days), then sweeps; a shrink waits for it. */
Test(dedup, an_expiry_sweep_finishes_a_migration_first)
{
	uint64_t state = seed_get();
	dedup_table t = {0};
	fill_to_a_migration(&t, &state);
	uint32_t count = t.count;
	cr_assert_eq(dedup_insert(&t, splitmix(&state), 9, 0), 0);
	cr_assert_not_null(t.old);
	uint32_t capacity = t.capacity;
	cr_assert_eq(dedup_shrink(&t, 0), 0);
	cr_expect_eq(t.capacity, capacity, "no shrink while a migration lasts");
	cr_expect_not_null(t.old);
	uint32_t cursor = 0, slices = 0;
	while (!dedup_expire_slice(&t, 8, &cursor, 1000))
		slices++;
	cr_expect_null(t.old);
	cr_expect_eq(t.count, (count + 1) / 2 + 1);
	cr_expect_geq(slices, t.capacity / 3 * 2 / 1000, "the migration took slices of 1000 slots");
	expect_only_day(&t, 9);
	expect_robin_hood(&t, "after the sweep");
	dedup_free(&t);
}

/* Minor page faults this thread has taken so far. */
static long minor_faults(void)
{
	struct rusage u;
	cr_assert_eq(getrusage(RUSAGE_THREAD, &u), 0);
	return u.ru_minflt;
}

/* Past DEDUP_PREPARE_PERCENT load, a large table's successor is made and
 * faulted in step with the load; the growth takes that very table, fully
 * faulted in. A sweep that takes the load back under
 * DEDUP_PREPARE_PERCENT, or a shrink, lets a prepared successor go. */
Test(dedup, a_large_table_prepares_its_successor_in_step_with_its_load)
{
	uint64_t state = seed_get();
	dedup_table t = {0};
	while (t.capacity < DEDUP_MIGRATE_SLOTS_MIN)
		cr_assert_eq(dedup_insert(&t, splitmix(&state), 9, 0), 0);
	cr_assert_null(t.next, "nothing prepared after a growth");
	uint32_t capacity = t.capacity;
	while ((uint64_t)(t.count + 1) * 100 < (uint64_t)capacity * DEDUP_PREPARE_PERCENT) {
		cr_assert_eq(dedup_insert(&t, splitmix(&state), 9, 0), 0);
		cr_assert_null(t.next, "prepared at %u of %u slots", t.count, capacity);
	}
	cr_assert_eq(dedup_insert(&t, splitmix(&state), 9, 0), 0);
	cr_assert_eq(dedup_insert(&t, splitmix(&state), 9, 0), 0);
	cr_assert_not_null(t.next);
	cr_expect_eq(t.next_capacity, capacity * 3 / 2);
	uint32_t pages = (uint32_t)(((size_t)t.next_capacity * 8 + 4095) / 4096);
	cr_expect_leq(t.next_faulted, 2, "%u pages faulted in at once", t.next_faulted);
	const uint64_t *prepared = t.next;
	uint32_t faulted = t.next_faulted;
	long insert_faults = 0;
	while (t.capacity == capacity) {
		cr_assert_geq(t.next_faulted, faulted, "faulted pages never go back");
		cr_assert_leq(t.next_faulted - faulted, 1, "at most a page per insert");
		faulted = t.next_faulted;
		/* in step: the share of pages follows the share of the way */
		uint64_t way = (uint64_t)t.count * 100 - (uint64_t)capacity * DEDUP_PREPARE_PERCENT;
		uint64_t want = (uint64_t)pages * way /
				((uint64_t)capacity * (DEDUP_LOAD_PERCENT_MAX - DEDUP_PREPARE_PERCENT));
		cr_assert_leq(faulted, want + 1);
		cr_assert_geq(faulted + 1, want);
		cr_expect_eq(dedup_bytes(&t), (size_t)capacity * 8 + (size_t)faulted * 4096);
		long before = minor_faults();
		cr_assert_eq(dedup_insert(&t, splitmix(&state), 9, 0), 0);
		insert_faults = minor_faults() - before;
	}
	cr_expect_eq(t.slots, prepared, "the growth took the prepared table");
	/* ... with its pages: a table mapped afresh (even at the same
	 * address) would be faulted in by the growing insert, all at once. */
	cr_expect_leq(insert_faults, 8, "the growing insert took %ld page faults (%u pages)",
		      insert_faults, pages);
	cr_expect_not_null(t.old);
	cr_expect_null(t.next);
	cr_expect_geq(faulted + 2, pages, "%u of %u pages faulted in before the growth", faulted,
		      pages);
	dedup_free(&t);

	/* A sweep that takes the load back under DEDUP_PREPARE_PERCENT, but
	 * not under DEDUP_LOAD_PERCENT_MIN, lets a prepared successor go and
	 * keeps the table's size. */
	dedup_table v = {0};
	uint32_t k = 0;
	while (!v.next)
		cr_assert_eq(dedup_insert(&v, splitmix(&state), (uint16_t)(k++ % 8 ? 9 : 7), 0), 0);
	uint32_t v_capacity = v.capacity;
	cr_assert_eq(dedup_expire(&v, 8), 0);
	cr_expect_eq(v.capacity, v_capacity, "70%% full is not sparse");
	cr_expect_null(v.next);
	cr_expect_eq(dedup_bytes(&v), (size_t)v.capacity * 8);
	dedup_free(&v);

	/* A shrink lets a prepared successor go. */
	dedup_table u = {0};
	uint32_t i = 0;
	while (!u.next)
		cr_assert_eq(dedup_insert(&u, splitmix(&state), (uint16_t)(i++ % 4 ? 7 : 9), 0), 0);
	cr_assert_eq(dedup_expire(&u, 8), 0);
	cr_expect_null(u.next);
	cr_expect_eq(u.next_faulted, 0);
	cr_expect_eq(dedup_bytes(&u), (size_t)u.capacity * 8);
	dedup_free(&u);
}
