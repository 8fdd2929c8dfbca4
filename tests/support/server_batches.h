/*
 * server_batches.h — whole batches of harness events sent to an
 * in-process tallyd, and the tenant's events counted back: what the
 * server-level failure tests (test_server_oom.c, test_server_faults.c)
 * check acknowledged events against.
 */
#ifndef TALLY_TEST_SERVER_BATCHES_H
#define TALLY_TEST_SERVER_BATCHES_H

#include <stdint.h>

#include "builder.h"
#include "client.h"

/* Events of a batch's time range start here: two hours ago, on a whole
 * hour, so every event of a test is inside the lateness horizon. */
int64_t batches_base_time(void);

/* The batch of harness events "<prefix>-0" .. "<prefix>-(count-1)"
 * (harness_event, times from base_us) into *m, which lives in b (free it
 * with builder_free after use of *m). */
void batches_build(builder *b, Tally__V1__IngestBatch *m, const char *prefix, uint32_t count,
		   int64_t base_us);

/*
 * Sends the batch of harness events "<prefix>-0" .. "<prefix>-(count-1)"
 * (harness_event, times from base_us) and waits for its answer. 0 with
 * every result ACCEPTED (*duplicates = 0) or every one DUPLICATE
 * (*duplicates = count); a mix fails the test, as the batch was stored in
 * part. Otherwise the client's code (TALLY_CLIENT_REFUSED: its Error is in
 * tally_client_last_error).
 */
int batches_send(tally_client *c, const char *prefix, uint32_t count, int64_t base_us,
		 uint32_t *duplicates);

/* The connection's tenant's events in [base_us, base_us + 4 hours),
 * counted by a query: 0 and *count, or the client's code. */
int batches_count(tally_client *c, int64_t base_us, uint64_t *count);

#endif /* TALLY_TEST_SERVER_BATCHES_H */
