/*
 * server_batches.c — batches for the server-level failure tests
 * (server_batches.h).
 */
#include <criterion/criterion.h>
#include <time.h>

#include "builder.h"
#include "server_batches.h"
#include "server_harness.h"

#define HOUR_US (INT64_C(3600) * 1000000)

int64_t batches_base_time(void)
{
	int64_t now = (int64_t)time(NULL) * 1000000;
	return now - now % HOUR_US - 2 * HOUR_US;
}

void batches_build(builder *b, Tally__V1__IngestBatch *m, const char *prefix, uint32_t count,
		   int64_t base_us)
{
	builder_init(b);
	for (uint32_t i = 0; i < count; i++) {
		tally_client_event e = harness_event(prefix, (int)i, base_us);
		cr_assert_eq(builder_add(b, &e), 0);
	}
	cr_assert_eq(builder_message(b, m), 0);
}

int batches_send(tally_client *c, const char *prefix, uint32_t count, int64_t base_us,
		 uint32_t *duplicates)
{
	builder b;
	Tally__V1__IngestBatch m;
	batches_build(&b, &m, prefix, count, base_us);
	tally_ingest_ack ack;
	int rc = tally_client_ingest(c, &m, &ack);
	builder_free(&b);
	if (rc)
		return rc;
	cr_assert(ack.accepted + ack.duplicate == count &&
			  (ack.accepted == count || ack.duplicate == count),
		  "batch %s: %u accepted, %u duplicate, %u conflict, %u rejected: stored in part",
		  prefix, ack.accepted, ack.duplicate, ack.conflict, ack.rejected);
	*duplicates = ack.duplicate;
	tally_ingest_ack_free(&ack);
	return 0;
}

int batches_count(tally_client *c, int64_t base_us, uint64_t *count)
{
	Tally__V1__Query q = TALLY__V1__QUERY__INIT;
	q.tenant = "";
	q.from_us = base_us;
	q.to_us = base_us + 4 * HOUR_US;
	q.bucket = TALLY__V1__BUCKET__NONE;
	Tally__V1__QueryResult *r;
	int rc = tally_client_query(c, &q, &r);
	if (rc)
		return rc;
	*count = r->n_rows ? r->rows[0]->count : 0;
	tally__v1__query_result__free_unpacked(r, NULL);
	return 0;
}
