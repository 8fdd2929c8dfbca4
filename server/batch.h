/*
 * batch.h — turning a decoded IngestBatch (columnar, proto/tally.proto)
 * into the engine's events, checking every column before anything is
 * ingested (docs/protocol.md, "IngestBatch: columnar").
 *
 * The number of events n is the length of the time_us column. Every other
 * column has n entries or none (none: every value empty or 0). A string
 * column gives its values either as bytes + n lengths (which must add up to
 * the bytes exactly) or as n codes into the batch's dict, never both. The
 * events' strings point into the decoded message: they are valid while it
 * lives.
 */
#ifndef TALLY_SERVER_BATCH_H
#define TALLY_SERVER_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "tally.h"
#include "tally.pb-c.h"

enum batch_status {
	BATCH_OK = 0,
	BATCH_BAD_REQUEST = 1, /* answer Error{BAD_REQUEST, errmsg} */
	BATCH_TOO_LARGE = 2,   /* answer Error{TOO_LARGE, errmsg} */
};

/*
 * Fills events[0..*count) from b. events has room for events_max entries
 * (the server's batch limit, at most TALLY_BATCH_EVENTS_MAX). errmsg
 * (TALLY_ERRMSG_SIZE) names the column at fault.
 */
int batch_decode(const Tally__V1__IngestBatch *b, tally_event *events, size_t events_max,
		 size_t *count, char *errmsg);

#endif /* TALLY_SERVER_BATCH_H */
