/*
 * builder.h — the client side of a columnar IngestBatch (proto/tally.proto,
 * docs/protocol.md "IngestBatch: columnar"): events go in one at a time,
 * a message that protobuf-c can pack comes out.
 *
 * The builder keeps its own copy of everything it is given (the caller's
 * strings may be reused as soon as builder_add returns) in per-column
 * arrays that grow geometrically, so adding an event costs a few memcpys
 * and, now and then, a doubling; nothing is allocated per event.
 *
 * Encoding choices, made per column when the message is built:
 *   - type, project, agent, model, user: dictionary codes into the batch's
 *     `dict` when that is smaller than the values back to back (a handful
 *     of models repeated 10,000 times costs a byte per event instead of
 *     the string), else bytes + lengths. Distinct values are found with a
 *     small open-addressing table per column keyed by XXH3_64bits; a column
 *     with more than BUILDER_DICT_STRINGS_MAX distinct values stops being a
 *     dictionary candidate (it would not pay, and the table stays small).
 *   - event_id: always bytes + lengths (ids are unique by design).
 *   - A string column whose values are all empty, and a numeric column
 *     whose values are all 0, is sent empty, as the protocol allows.
 *   - time_us always has one entry per event: its length is the event count.
 *
 * This header depends on nothing of the engine: tally_client_event mirrors
 * the event model of /work/shared/DESIGN.md on its own.
 */
#ifndef TALLY_BUILDER_H
#define TALLY_BUILDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tally.pb-c.h"

/* A byte string that is not NUL-terminated; ptr may be NULL when len is 0. */
typedef struct tally_client_str {
	const char *ptr;
	uint32_t len;
} tally_client_str;

/* One usage event as a producer gives it (limits are the server's to check:
 * an event that breaks one is REJECTED with its reason in the ack). */
typedef struct tally_client_event {
	tally_client_str event_id; /* 1..64 bytes, the idempotency key */
	int64_t time_us;           /* microseconds since the Unix epoch, UTC */
	tally_client_str type;     /* <= 64 bytes */
	tally_client_str project;  /* <= 128 bytes each */
	tally_client_str agent;
	tally_client_str model;
	tally_client_str user;
	uint32_t status;           /* 0 ok, 1 error, 2 timeout, 3 cancelled */
	uint32_t duration_ms;
	uint64_t tokens_in;
	uint64_t tokens_out;
	int64_t cost_micros;       /* micro-units of USD */
} tally_client_event;

/* Events one builder holds at most: far above any server's batch limit
 * (65,536 by default), it only keeps counts and offsets inside 32 bits. */
#define BUILDER_EVENTS_MAX (1u << 22)
/* Distinct values per string column past which it is sent as bytes. Five
 * columns of at most this many values keep every code under 2^14, two
 * varint bytes, which builder_bytes relies on for its bound. */
#define BUILDER_DICT_STRINGS_MAX 3000
/* Bytes one string column may hold in total: a frame is at most 4 GiB. */
#define BUILDER_COLUMN_BYTES_MAX (UINT32_MAX / 2)
/* Longest tenant name kept (the protocol's is 64). */
#define BUILDER_TENANT_SIZE_MAX 64

/* The five dictionary-candidate columns, in message order. */
enum builder_column {
	BUILDER_TYPE = 0,
	BUILDER_PROJECT,
	BUILDER_AGENT,
	BUILDER_MODEL,
	BUILDER_USER,
	BUILDER_COLUMN_COUNT,
};

/* A string column: the values back to back, their lengths, and while it is
 * a dictionary candidate, a code per event into its own distinct values. */
typedef struct builder_strings {
	uint8_t *bytes;
	size_t bytes_size, bytes_capacity;
	uint32_t *len;            /* count entries */
	uint64_t len_varint_bytes; /* sum of the varint sizes of len[] */
	/* Dictionary: distinct values (offset into bytes of the first
	 * occurrence, length, hash) and one code per event. */
	bool dict_abandoned;
	uint32_t *code;           /* count entries, while not abandoned */
	struct builder_distinct {
		uint64_t hash;
		uint32_t offset;
		uint32_t len;
	} *distinct;
	uint32_t distinct_count, distinct_capacity;
	uint64_t distinct_cost;   /* bytes of these values as dict entries */
	uint32_t *slots;          /* distinct index + 1; 0 empty; power of two */
	uint32_t slot_count;
} builder_strings;

typedef struct builder {
	uint32_t count, capacity;
	char tenant[BUILDER_TENANT_SIZE_MAX + 1];
	bool create_tenant, backfill;
	builder_strings event_id; /* dictionary never used */
	builder_strings strings[BUILDER_COLUMN_COUNT];
	int64_t *time_us;
	uint32_t *status, *duration_ms;
	uint64_t *tokens_in, *tokens_out;
	int64_t *cost_micros;
	/* Varint bytes of each numeric column, and whether it holds a value
	 * other than 0: status, duration_ms, tokens_in, tokens_out, cost_micros. */
	uint64_t time_bytes;
	uint64_t numeric_bytes[5];
	bool numeric_nonzero[5];
	/* What builder_message hands out (points into the above). */
	ProtobufCBinaryData *message_dict;
	uint32_t message_dict_capacity;
	uint32_t *message_codes;  /* codes shifted by their column's dict base */
	size_t message_codes_capacity;
	Tally__V1__StringColumn message_columns[1 + BUILDER_COLUMN_COUNT];
} builder;

/* An empty builder, no tenant, create_tenant and backfill off. Allocates
 * nothing yet; builder_free releases what adds allocate. */
void builder_init(builder *b);

/* Releases the builder's memory; b may be initialised again. */
void builder_free(builder *b);

/* Forgets the events (keeping the memory, the tenant and the flags), for
 * the next batch. Messages built before are invalid from here on. */
void builder_reset(builder *b);

/*
 * Admin keys only (the server refuses them from a tenant key): the tenant
 * to ingest for (NULL or "" for none: the key's own tenant), and whether
 * to create it when unknown and accept times older than the lateness
 * horizon. Kept across builder_reset. set_tenant returns 0, or -EINVAL for
 * a name over BUILDER_TENANT_SIZE_MAX bytes (the server checks the rest).
 */
int builder_set_tenant(builder *b, const char *tenant);
void builder_set_create_tenant(builder *b, bool create_tenant);
void builder_set_backfill(builder *b, bool backfill);

/*
 * Appends a copy of e. 0; -ENOMEM (the builder is unchanged and may be
 * used or freed); -E2BIG past BUILDER_EVENTS_MAX events or
 * BUILDER_COLUMN_BYTES_MAX bytes in one column (cut the batch earlier:
 * the server's own limits are far lower).
 */
int builder_add(builder *b, const tally_client_event *e);

/* Events added since init or the last reset. */
uint32_t builder_count(const builder *b);

/*
 * An upper bound of the packed size of a Request holding the message
 * builder_message would build now (the IngestBatch, its envelope and a
 * 64-bit request id), so a producer can cut a batch before it passes the
 * server's frame limit (HelloOk.limits.frame_bytes_max). Within a few
 * dozen bytes of the real size for typical batches; never below it.
 * Constant time.
 */
size_t builder_bytes(const builder *b);

/*
 * builder_bytes as it would be after builder_add(b, e), b unchanged: the
 * test a producer makes before adding e to a batch that must stay within
 * a frame. One event can raise the bound by far more than its own bytes
 * (a new dictionary value can widen the codes of every event in later
 * columns), so the bound before the add plus e's size is not one.
 */
size_t builder_bytes_with(const builder *b, const tally_client_event *e);

/*
 * Fills *out (an IngestBatch, initialised here) with the batch: tenant and
 * flags, the dictionary and every column, choosing the smaller coding per
 * string column. *out points into the builder's memory: valid until the
 * next builder_add, builder_reset or builder_free; the caller must not
 * free any of it (pack it, or send it with tally_client_ingest_send).
 * 0 or -ENOMEM.
 */
int builder_message(builder *b, Tally__V1__IngestBatch *out);

#endif /* TALLY_BUILDER_H */
