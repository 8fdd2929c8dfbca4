/*
 * arena.c — protobuf-c messages decoded into one arena (arena.h).
 *
 * Layout: an arena is a list of chunks; the first chunk holds the arena
 * itself. Every allocation is preceded by a header naming its arena, so
 * pb_arena_free finds the arena from the message pointer alone (the
 * message is one of the arena's allocations, wherever protobuf-c made it).
 * Allocations are aligned to ALIGN; free is a no-op until the end.
 * A budget bounds what one decoding may allocate (arena.h).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"

#define ALIGN 16u

typedef struct chunk {
	struct chunk *next;
	size_t size, used; /* bytes of data */
	_Alignas(ALIGN) unsigned char data[];
} chunk;

typedef struct arena {
	ProtobufCAllocator allocator;
	chunk *head;  /* the chunk allocations come from */
	chunk *first; /* right after the arena, in the same block */
	size_t budget; /* bytes (headers included) allocations may still take */
	bool out_of_memory; /* an allocation failed: the decoding's NULL is ours */
	bool over_budget;   /* the decoded message would pass its budget */
} arena;

/* The arena and its first chunk are one block: arena, then the chunk. */
#define ARENA_BLOCK_HEAD ((sizeof(arena) + ALIGN - 1) & ~(size_t)(ALIGN - 1))

typedef struct header {
	arena *owner;
	_Alignas(ALIGN) unsigned char pad[]; /* rounds the header up to ALIGN */
} header;

_Static_assert(sizeof(header) == ALIGN, "a header is one alignment unit");
_Static_assert(sizeof(chunk) % ALIGN == 0, "chunk data stays aligned");

static size_t round_up(size_t n)
{
	return (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
}

static void *arena_alloc(void *data, size_t size)
{
	arena *a = data;
	size_t need = sizeof(header) + round_up(size ? size : 1);
	if (need < size) {
		a->out_of_memory = true; /* overflow: more than memory can hold */
		return NULL;
	}
	if (need > a->budget) {
		a->over_budget = true;
		return NULL;
	}
	chunk *c = a->head;
	if (c->size - c->used < need) {
		size_t chunk_size = c->size * 2;
		if (chunk_size < PB_ARENA_CHUNK_MIN)
			chunk_size = PB_ARENA_CHUNK_MIN;
		if (chunk_size > a->budget) /* no chunk bigger than what may be used */
			chunk_size = a->budget;
		if (chunk_size < need)
			chunk_size = need;
		chunk *grown = malloc(sizeof(chunk) + chunk_size);
		if (!grown) {
			a->out_of_memory = true;
			return NULL;
		}
		grown->next = c;
		grown->size = chunk_size;
		grown->used = 0;
		a->head = c = grown;
	}
	header *h = (header *)(c->data + c->used);
	c->used += need;
	a->budget -= need;
	h->owner = a;
	return (unsigned char *)h + sizeof(header);
}

static void arena_release(void *data, void *pointer)
{
	(void)data; /* the whole arena goes at once (pb_arena_free) */
	(void)pointer;
}

static void arena_destroy(arena *a)
{
	chunk *c = a->head;
	while (c != a->first) {
		chunk *next = c->next;
		free(c);
		c = next;
	}
	free(a);
}

ProtobufCMessage *pb_arena_unpack(const ProtobufCMessageDescriptor *desc, size_t len,
				  const uint8_t *data, int *rc)
{
	int ignored;
	if (!rc)
		rc = &ignored;
	*rc = -ENOMEM;
	/* Decoded messages take about twice their encoded size (pointers and
	 * counts for each field, a header per allocation); more chunks follow
	 * when that is not enough. */
	size_t first = round_up(len * 2 + 512);
	if (first < len)
		return NULL;
	size_t budget = len * PB_ARENA_BUDGET_FACTOR + PB_ARENA_BUDGET_BASE;
	if (len > (SIZE_MAX - PB_ARENA_BUDGET_BASE) / PB_ARENA_BUDGET_FACTOR)
		budget = SIZE_MAX;
	arena *a = malloc(ARENA_BLOCK_HEAD + sizeof(chunk) + first);
	if (!a)
		return NULL;
	a->allocator = (ProtobufCAllocator){arena_alloc, arena_release, a};
	a->out_of_memory = false;
	a->over_budget = false;
	a->budget = budget;
	a->first = (chunk *)((unsigned char *)a + ARENA_BLOCK_HEAD);
	a->first->next = NULL;
	a->first->size = first;
	a->first->used = 0;
	a->head = a->first;
	ProtobufCMessage *m = protobuf_c_message_unpack(desc, &a->allocator, len, data);
	if (!m) {
		*rc = a->out_of_memory ? -ENOMEM : a->over_budget ? -E2BIG : -EBADMSG;
		arena_destroy(a);
		return NULL;
	}
	*rc = 0;
	return m;
}

void pb_arena_free(void *message)
{
	if (!message)
		return;
	const header *h = (const header *)((const unsigned char *)message - sizeof(header));
	arena_destroy(h->owner);
}
