/*
 * arena.c — protobuf-c messages decoded into one arena (arena.h).
 *
 * Layout: an arena is a list of chunks; the first chunk holds the arena
 * itself. Every allocation is preceded by a header naming its arena, so
 * pb_arena_free finds the arena from the message pointer alone (the
 * message is one of the arena's allocations, wherever protobuf-c made it),
 * and the size asked for, so pb_arena_strings_whole can tell a string
 * protobuf-c copied (its length and a NUL) from where C sees it end.
 * Allocations are aligned to ALIGN; free is a no-op until the end.
 * A budget bounds what one decoding may allocate (arena.h).
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
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
	size_t size; /* what protobuf-c asked for */
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
	h->size = size;
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

/* Whether string field value s is whole: protobuf-c copies a string of n
 * bytes into an allocation of n + 1 and ends it with a NUL, so a NUL inside
 * the bytes ends it early. A field the message did not carry points at
 * protobuf-c's own empty string, never allocated here. */
static bool string_whole(const char *s)
{
	if (!s || s == protobuf_c_empty_string)
		return true;
	const header *h = (const header *)((const unsigned char *)s - sizeof(header));
	return strlen(s) + 1 == h->size;
}

/* The field's values: count of them at *values (a repeated field's array,
 * or the field itself). 0 when a oneof member is not the one set. */
static size_t field_values(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
			   const void **values)
{
	const unsigned char *base = (const unsigned char *)m;
	if (f->label == PROTOBUF_C_LABEL_REPEATED) {
		size_t n;
		memcpy(&n, base + f->quantifier_offset, sizeof(n));
		memcpy(values, base + f->offset, sizeof(*values));
		return n;
	}
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
		uint32_t set;
		memcpy(&set, base + f->quantifier_offset, sizeof(set));
		if (set != f->id)
			return 0;
	}
	*values = base + f->offset;
	return 1;
}

/* "name." before path, when it fits (else the inner path stays alone). */
static void path_prepend(char *path, size_t size, const char *name)
{
	size_t used = strlen(path), n = strlen(name);
	if (n + 1 + used >= size)
		return;
	memmove(path + n + 1, path, used + 1);
	memcpy(path, name, n);
	path[n] = '.';
}

bool pb_arena_strings_whole(const ProtobufCMessage *m, char *path, size_t path_size)
{
	assert(path_size > 0);
	path[0] = '\0';
	const ProtobufCMessageDescriptor *d = m->descriptor;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		const void *values;
		size_t n = field_values(m, f, &values);
		for (size_t k = 0; k < n; k++) {
			const void *v;
			memcpy(&v, (const unsigned char *)values + k * sizeof(void *), sizeof(v));
			if (f->type == PROTOBUF_C_TYPE_STRING && !string_whole(v)) {
				snprintf(path, path_size, "%s", f->name);
				return false;
			}
			if (f->type == PROTOBUF_C_TYPE_MESSAGE && v &&
			    !pb_arena_strings_whole(v, path, path_size)) {
				path_prepend(path, path_size, f->name);
				return false;
			}
		}
	}
	return true;
}
