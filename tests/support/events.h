/*
 * events.h — deterministic usage events and an exactly-once oracle for the
 * crash and fault tests.
 *
 * Events. Every event is a pure function of (seed, round, batch, index) and
 * the round's base time: ev_make() rebuilds it byte for byte, so a test never
 * has to remember what it sent, and a scanned event's id tells which
 * (round, batch, index) it claims to be (ev_id_parse). Ids come in the four
 * shapes the engine packs differently (raw text, lower-case hex, upper-case
 * hex, upper-case UUID), payloads cover empty strings, every status, and
 * extreme integers (UINT64_MAX tokens, negative and INT64_MIN cost,
 * UINT32_MAX duration). Times lie in [base - 3 days, base]: late events
 * spread over three days, so segments of several days are written.
 *
 * Ledger. An ev_ledger records, per batch, the tenant, how many of the
 * batch's own events it carries (indices 0 .. count-1; re-sent duplicates
 * and conflicting copies of other batches' events are not part of a batch)
 * and what the test knows about it:
 *   ACKED    tally_ingest returned 0: every event must be present once;
 *   MAYBE    submitted, outcome unknown (a kill or a failed ingest): all of
 *            its events present once, or none (never half);
 *   PRESENT  a MAYBE that a verification found present (now as ACKED);
 *   ABSENT   a MAYBE found absent, or a batch known to have failed: none
 *            of its events may ever appear;
 *   UNSENT   a batch number that was handed out but never submitted (a
 *            placeholder when batches are submitted out of order): none
 *            of its events may appear.
 * ev_ledger_verify() scans every tenant of the ledger (in one scan, or one
 * scan per UTC day, which exercises the scan's pruning by segment time
 * range), and checks: each
 * scanned event parses to a known batch of that tenant, is byte-for-byte the
 * event that was sent, appears at most once, and comes in time order; each
 * batch satisfies its state. MAYBE batches are resolved to PRESENT/ABSENT
 * and marked `resolved` (a test that re-sends them clears the mark).
 *
 * Rounds. A round is one run of a writer (one child process, or one store
 * lifetime) with its own base time. Batches of a round are numbered 0, 1,
 * 2, ...; ev_ledger_put may add them out of order (the gaps become UNSENT
 * placeholders), but only to the latest round.
 *
 * No criterion here: problems are counted and described in an ev_report,
 * and the test asserts on them (so a child process can use this too).
 */
#ifndef TALLY_TESTS_EVENTS_H
#define TALLY_TESTS_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tally.h"

#define EV_TENANT_COUNT_MAX 4
#define EV_LATE_SPREAD_US (3 * TALLY_US_PER_DAY)
#define EV_REPORT_SIZE 8192
#define EV_REPORT_LINES_MAX 40 /* problems described; later ones only counted */

/* One generated event: the tally_event points into the buffers beside it,
 * so an ev_event must not be copied by value once made (use ev_make again). */
typedef struct ev_event {
	tally_event event;
	char id[TALLY_EVENT_ID_SIZE_MAX + 1];
	char type[16];
	char project[24];
	char agent[24];
	char model[32];
	char user[24];
} ev_event;

/* splitmix64 step, and a mixer of up to four words (order matters). */
uint64_t ev_rng_next(uint64_t *state);
uint64_t ev_mix(uint64_t a, uint64_t b, uint64_t c, uint64_t d);

/* Builds event (round, batch, index) of the stream `seed` whose round has
 * base time base_us. */
void ev_make(ev_event *out, uint64_t seed, int64_t base_us, uint32_t round, uint32_t batch,
	     uint32_t index);

/* A payload-changed copy of `in` (same id, tokens_in + 1): a CONFLICT. */
void ev_make_conflict(ev_event *out, uint64_t seed, int64_t base_us, uint32_t round,
		      uint32_t batch, uint32_t index);

/* Parses an id made by ev_make into (round, batch, index). Returns false for
 * an id of no known shape. The caller still compares the whole event. */
bool ev_id_parse(const char *id, size_t size, uint32_t *round, uint32_t *batch,
		 uint32_t *index);

/* Exact comparison of every field (strings by length and bytes). */
bool ev_equal(const tally_event *a, const tally_event *b);

/* One line describing an event, for messages. */
void ev_describe(const tally_event *e, char *out, size_t size);

enum ev_state {
	EV_UNSENT = 0,
	EV_ACKED,
	EV_MAYBE,
	EV_PRESENT,
	EV_ABSENT,
};

typedef struct ev_batch {
	uint32_t round;
	uint32_t batch;
	uint32_t tenant;  /* index into the ledger's tenant names */
	uint32_t count;   /* the batch's own events: indices 0 .. count-1 */
	int state;        /* enum ev_state */
	bool resolved;    /* a verification turned this MAYBE into PRESENT or ABSENT */
	uint8_t *seen;    /* per index, during a verification */
} ev_batch;

typedef struct ev_round {
	int64_t base_us;
	size_t first;     /* index of its batch 0 in ev_ledger.batches */
	uint32_t batch_count;
} ev_round;

typedef struct ev_ledger {
	uint64_t seed;
	uint32_t tenant_count;
	char tenants[EV_TENANT_COUNT_MAX][TALLY_TENANT_SIZE_MAX + 1];
	ev_round *rounds;
	uint32_t round_count;
	uint32_t round_capacity;
	ev_batch *batches;
	size_t batch_count;
	size_t batch_capacity;
} ev_ledger;

typedef struct ev_report {
	int problem_count;
	size_t used;
	char text[EV_REPORT_SIZE];
	/* Filled by ev_ledger_verify: */
	uint64_t events_scanned;
	uint32_t maybe_present; /* MAYBE batches resolved PRESENT by this call */
	uint32_t maybe_absent;  /* ... and ABSENT */
} ev_report;

/* Starts an empty ledger with tenant_count (1..EV_TENANT_COUNT_MAX) fixed
 * tenant names. Aborts the process if out of memory (tests only). */
void ev_ledger_init(ev_ledger *l, uint64_t seed, uint32_t tenant_count);
void ev_ledger_free(ev_ledger *l);

/* Starts the next round; returns its number. */
uint32_t ev_ledger_round_begin(ev_ledger *l, int64_t base_us);

/* Adds batch number `batch` (== the round's batch_count) of round `round`
 * (the latest one). Returns the record, valid until the next add. */
ev_batch *ev_ledger_add(ev_ledger *l, uint32_t round, uint32_t batch, uint32_t tenant,
			uint32_t count, int state);

/* Sets what is known of (round, batch): overwrites an existing record, or
 * adds it to the latest round after UNSENT placeholders for any batch
 * numbers skipped. Returns the record, valid until the next add or put. */
ev_batch *ev_ledger_put(ev_ledger *l, uint32_t round, uint32_t batch, uint32_t tenant,
			uint32_t count, int state);

/* The record of (round, batch), or NULL if never added. */
ev_batch *ev_ledger_find(ev_ledger *l, uint32_t round, uint32_t batch);

/* Every event of every batch recorded as present (ACKED or PRESENT). */
uint64_t ev_ledger_present_events(const ev_ledger *l);

/* Scans every tenant of the ledger (by_day: one scan per UTC day) and checks
 * it (see above). Returns the number of problems (also in
 * report->problem_count, described in report->text). A failing tally_scan
 * is a problem too. */
int ev_ledger_verify(ev_ledger *l, tally_store *s, bool by_day, ev_report *report);

/* Appends one printf-style line to the report and counts a problem. */
void ev_report_problem(ev_report *r, const char *format, ...)
	__attribute__((format(printf, 2, 3)));

#endif /* TALLY_TESTS_EVENTS_H */
