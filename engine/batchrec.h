/*
 * batchrec.h — encoding the WAL's batch payload (record type 1, byte by byte
 * in docs/formats.md): one tenant's accepted events with their own
 * dictionary of dimension strings.
 *
 * Ingest encodes each batch before it takes the store lock, from the
 * event's own strings and the hashes it computed for them, so the lock
 * holder only copies bytes (or nothing); under the lock it encodes again
 * only a batch of which not every event was accepted (a duplicate or a
 * conflict). The decoder is the store's replay (store.c).
 *
 * The dictionary holds each distinct string of the payload once, in order
 * of first use (type, project, agent, model, user of the first event,
 * then the next event's); a string used by two dimensions is stored once.
 */
#ifndef TALLY_BATCHREC_H
#define TALLY_BATCHREC_H

#include <stdint.h>

#include "codec.h"
#include "memtable.h"
#include "tally.h"

/* Bytes a typical event takes in a payload (a 16-byte packed id, small
 * varints): what ingest reserves up front for a call's entries. */
#define BATCHREC_EVENT_BYTES_TYPICAL 40u

/* The most bytes one event's own encoding takes (kind and status, id size,
 * the packed id, then ten varints: time, five string codes, four values). */
#define BATCHREC_EVENT_PUT_BYTES_MAX (2 + ID_PACKED_SIZE_MAX + 10 * VARINT_SIZE_MAX)

/* The most bytes one event adds to a payload: its own encoding and its five
 * strings, each new to the payload (a varint size and the bytes). */
#define BATCHREC_EVENT_BYTES_MAX                                                    \
	(BATCHREC_EVENT_PUT_BYTES_MAX + DIM_COUNT * VARINT_SIZE_MAX + TALLY_TYPE_SIZE_MAX + \
	 (DIM_COUNT - 1) * TALLY_DIMENSION_SIZE_MAX)

/* The most bytes batchrec_append adds for one batch: the entry's size, the
 * tenant name and its size, the event and string counts, and
 * TALLY_BATCH_EVENTS_MAX events at their largest (about 52 MB). */
#define BATCHREC_BATCH_BYTES_MAX                                      \
	((uint64_t)4 * VARINT_SIZE_MAX + TALLY_TENANT_SIZE_MAX + \
	 (uint64_t)TALLY_BATCH_EVENTS_MAX * BATCHREC_EVENT_BYTES_MAX)

/* A string of the payload's dictionary: the caller's bytes, and the hash
 * the caller gave for them. */
typedef struct batchrec_string {
	tally_str s;
	uint64_t hash;
} batchrec_string;

/* Scratch reused from one payload to the next: zero-initialise it, free it
 * with batchrec_encoder_free. */
typedef struct batchrec_encoder {
	uint64_t *slots;        /* open addressing: generation << 32 | code + 1 */
	uint32_t slot_mask;     /* slots - 1, power of two; 0 when none */
	uint32_t generation;    /* of the payload being encoded (slots of others are empty) */
	batchrec_string *strings; /* the payload's strings by code */
	uint32_t string_count;
	uint32_t string_capacity;
	bytebuf string_bytes;   /* each string: varint size, bytes */
	bytebuf event_bytes;
} batchrec_encoder;

void batchrec_encoder_free(batchrec_encoder *enc);

/*
 * Appends to out, as one entry of a type 2 list (varint size, then the type
 * 1 payload), the events i of events[0, count) with results[i].code == code,
 * in order, for tenant `tenant` (a valid name). ids[i] is event i's packed
 * id, dim_hash[i] the strdict_hash of its dimension strings (event_dims
 * order); neither is read for events left out. *encoded is set to the
 * number of events the payload holds; with none, nothing is appended.
 * 0 or -ENOMEM (out may have grown, but its size is unchanged).
 */
int batchrec_append(batchrec_encoder *enc, bytebuf *out, const char *tenant,
		    const tally_event *events, const packed_id *ids,
		    const uint64_t (*dim_hash)[DIM_COUNT], const tally_ingest_result *results,
		    uint32_t count, uint8_t code, uint32_t *encoded);

#endif /* TALLY_BATCHREC_H */
