/*
 * arena.h — a protobuf-c message decoded into one arena.
 *
 * protobuf-c's unpack allocates every repeated field and every string of a
 * message separately: a columnar IngestBatch of n events costs about 6n + 20
 * malloc calls, and as many frees. pb_arena_unpack decodes into chunks of
 * one arena instead (the first one sized from the encoded size, so a
 * typical request costs one or two malloc calls) and pb_arena_free releases
 * the whole message at once. Nothing else changes: the message is an
 * ordinary protobuf-c message, read the usual way.
 *
 * Rules: a message from pb_arena_unpack is freed with pb_arena_free only
 * (never protobuf_c_message_free_unpacked), whole (not a sub-message), and
 * nothing in it is reallocated or freed separately. Thread-safe in the
 * usual sense: one message, one thread at a time; different messages are
 * independent.
 */
#ifndef TALLY_PROTO_ARENA_H
#define TALLY_PROTO_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* Every chunk but the first is at least this big. */
#define PB_ARENA_CHUNK_MIN (4u << 10)

/* What one decoding of len bytes may allocate, headers included: len *
 * PB_ARENA_BUDGET_FACTOR + PB_ARENA_BUDGET_BASE. Real requests decode to
 * 1-3 times their size (a batch of events whose every dimension is a new
 * short string, about 7); a crafted one can ask for 50 times (millions of
 * empty sub-messages or unknown fields, 32 bytes of protobuf-c's scan data
 * each, kept here until the end), so without a budget a 16 MiB frame
 * could take 900 MB. */
#define PB_ARENA_BUDGET_FACTOR 16u
#define PB_ARENA_BUDGET_BASE (1u << 20)

/* The decoded message, or NULL with *rc (may be NULL) saying why:
 * -ENOMEM when memory ran out (protobuf-c does not tell that from bad
 * input; the arena, which makes every allocation, does), -E2BIG when the
 * message would take more than its budget (above), -EBADMSG when data is
 * not a valid `desc` message. *rc is 0 with a message. */
ProtobufCMessage *pb_arena_unpack(const ProtobufCMessageDescriptor *desc, size_t len,
				  const uint8_t *data, int *rc);
/* Frees a message from pb_arena_unpack, and everything in it. NULL is fine. */
void pb_arena_free(void *message);

/*
 * Whether every string field of message m (from pb_arena_unpack, or a
 * message inside one), in it and in the messages it holds, is whole: a
 * string whose bytes hold a NUL reaches C cut at it ("acme\0x" as "acme"),
 * so the request must be refused instead. false with the first cut field's
 * path in path ("create_tenant.name"), path_size bytes; "" when whole.
 */
bool pb_arena_strings_whole(const ProtobufCMessage *m, char *path, size_t path_size);

#endif /* TALLY_PROTO_ARENA_H */
