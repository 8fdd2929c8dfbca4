/*
 * ingest.h — what `tally ingest` does with a connection and a file: rows
 * read and checked (rows.h), packed into columnar batches per tenant
 * (builder.h), several batches in flight at once (pipelining), every ack
 * matched to the file lines of its events, and a summary.
 *
 * Behaviour at a malformed row (the choice documented in docs/cli.md):
 * reading stops there; the rows before it are sent, every batch in flight
 * is waited for, and the summary tells what was acknowledged; the caller
 * then reports the error and exits 2. Resending the fixed file is safe:
 * events already stored come back DUPLICATE.
 *
 * A batch refused with RESOURCE_EXHAUSTED or UNAVAILABLE (backpressure) is
 * sent again after the server's retry_after_ms, up to INGEST_RETRIES_MAX
 * times; any other refusal stops the ingest like a malformed row.
 */
#ifndef TALLY_TOOLS_INGEST_H
#define TALLY_TOOLS_INGEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "client.h"

#define INGEST_BATCH_DEFAULT 10000     /* events per batch unless --batch */
#define INGEST_INFLIGHT_MAX 8          /* batches in flight (fewer if the server says so) */
#define INGEST_TENANTS_OPEN_MAX 256    /* tenants with a batch being filled at once */
#define INGEST_PROBLEMS_SHOWN 5        /* rejected or conflicting events listed */
#define INGEST_RETRIES_MAX 8
#define INGEST_RETRY_DELAY_MIN_MS 50
#define INGEST_RETRY_DELAY_MAX_MS 10000
#define INGEST_ERRMSG_SIZE 640

typedef struct ingest_options {
	int format;              /* enum rows_format */
	uint32_t batch_events;   /* 0: INGEST_BATCH_DEFAULT; capped by the server's limit */
	bool create_tenants;     /* admin: create unknown tenants */
	bool backfill;           /* admin: accept times older than the lateness horizon */
	const char *tenant;      /* the tenant of rows without one (--tenant) */
	FILE *progress;          /* a terminal to draw progress on, or NULL */
} ingest_options;

typedef struct ingest_problem {
	uint64_t line;
	uint32_t result;         /* Tally__V1__IngestAck__Result: CONFLICT or REJECTED */
	uint32_t reason;         /* for REJECTED */
} ingest_problem;

typedef struct ingest_summary {
	uint64_t rows_read;
	uint64_t events_sent;    /* in batches sent (retries not counted twice) */
	uint64_t accepted, duplicate, conflict, rejected;
	uint64_t batches_acked, retries;
	uint64_t unanswered;     /* events in flight when the connection failed */
	ingest_problem problems[INGEST_PROBLEMS_SHOWN]; /* the lowest line numbers */
	size_t problem_count;
} ingest_summary;

enum ingest_status {
	INGEST_DONE = 0,     /* every row read and acknowledged */
	INGEST_FAILED = 1,   /* stopped: errmsg says why; the summary holds what was acknowledged */
};

/*
 * Ingests every row of `in` (name for messages) over c, an open session
 * (info from tally_client_open). Returns INGEST_DONE or INGEST_FAILED
 * with errmsg (INGEST_ERRMSG_SIZE bytes) one line: the malformed row
 * (FILE:LINE: ...), the server's refusal, or the connection's failure.
 * *summary is filled either way.
 */
int ingest_run(tally_client *c, const tally_session_info *info, const ingest_options *options, FILE *in,
	       const char *name, ingest_summary *summary, char *errmsg);

/* The text of an engine/tally.h enum tally_reject_reason number. */
const char *ingest_reason_text(uint32_t reason);

/* The summary for people: counts, then the first problems with their lines. */
void ingest_summary_print(const ingest_summary *summary, const char *name, FILE *out);

#endif /* TALLY_TOOLS_INGEST_H */
