/*
 * builder.c — the columnar IngestBatch builder (builder.h).
 *
 * NOTES ON THE DESIGN
 *
 * 1. Every event column is an array indexed by event; all of them (and the
 *    per-column length and code arrays) share one capacity that doubles
 *    when full. String bytes live in one buffer per column that doubles on
 *    its own. builder_add first makes room for everything the event needs
 *    (any allocation may fail), and only then writes: a failed add leaves
 *    the builder as it was.
 *
 * 2. A dictionary column records both codings as it goes: the bytes and
 *    lengths, and a code per event into the column's distinct values
 *    (found through an open-addressing table keyed by XXH3_64bits, the
 *    values themselves compared on a hash match). Keeping both costs four
 *    bytes per event and column, and lets builder_message pick the smaller
 *    coding per column with exact sizes, with no second pass over events.
 *    A distinct value is stored once, as the offset of its first
 *    occurrence in the column's bytes, so the table holds no strings.
 *
 * 3. Codes are local to their column while adding. In the message the
 *    dictionary is the concatenation of the distinct values of the columns
 *    that chose dictionary coding, so a column's codes are shifted by the
 *    number of entries before it (written to message_codes; the local
 *    codes are left alone, so a message can be built twice).
 *
 * 4. builder_bytes keeps a running upper bound instead of packing: the
 *    varint bytes of every numeric column, and per string column the cost
 *    of both codings, where a code is bounded by the varint size of the
 *    number of dictionary entries that can precede and include its column's
 *    (BUILDER_DICT_STRINGS_MAX keeps a code at two bytes at most). Each
 *    length-delimited field adds its tag and at most five length bytes
 *    (FIELD_OVERHEAD_MAX).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "builder.h"

#define BUILDER_CAPACITY_MIN 256u
#define BUILDER_BYTES_MIN 4096u
#define BUILDER_SLOTS_MIN 64u
/* One field's tag (fields 1..15 take one byte, 16..2047 two: cost_micros
 * is 16) and a length of up to 5. */
#define FIELD_OVERHEAD_MAX 7u
/* The Request around the batch: request_id (tag + a 10-byte varint) and
 * the body's tag and length. */
#define ENVELOPE_BYTES_MAX (1u + 10u + FIELD_OVERHEAD_MAX)

_Static_assert(BUILDER_COLUMN_COUNT * BUILDER_DICT_STRINGS_MAX < (1u << 14),
	       "every dictionary code fits in a 2-byte varint");

enum numeric_column { NUM_STATUS = 0, NUM_DURATION, NUM_TOKENS_IN, NUM_TOKENS_OUT, NUM_COST, NUM_COUNT };

static uint32_t varint_size(uint64_t v)
{
	uint32_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static void strings_free(builder_strings *s)
{
	free(s->bytes);
	free(s->len);
	free(s->code);
	free(s->distinct);
	free(s->slots);
	memset(s, 0, sizeof(*s));
}

static void strings_reset(builder_strings *s)
{
	s->bytes_size = 0;
	s->len_varint_bytes = 0;
	s->dict_abandoned = false;
	s->distinct_count = 0;
	s->distinct_cost = 0;
	if (s->slots)
		memset(s->slots, 0, sizeof(*s->slots) * s->slot_count);
}

void builder_init(builder *b)
{
	memset(b, 0, sizeof(*b));
}

void builder_free(builder *b)
{
	strings_free(&b->event_id);
	for (int k = 0; k < BUILDER_COLUMN_COUNT; k++)
		strings_free(&b->strings[k]);
	free(b->time_us);
	free(b->status);
	free(b->duration_ms);
	free(b->tokens_in);
	free(b->tokens_out);
	free(b->cost_micros);
	free(b->message_dict);
	free(b->message_codes);
	memset(b, 0, sizeof(*b));
}

void builder_reset(builder *b)
{
	b->count = 0;
	b->time_bytes = 0;
	memset(b->numeric_bytes, 0, sizeof(b->numeric_bytes));
	memset(b->numeric_nonzero, 0, sizeof(b->numeric_nonzero));
	strings_reset(&b->event_id);
	for (int k = 0; k < BUILDER_COLUMN_COUNT; k++)
		strings_reset(&b->strings[k]);
}

int builder_set_tenant(builder *b, const char *tenant)
{
	size_t n = tenant ? strlen(tenant) : 0;
	if (n > BUILDER_TENANT_SIZE_MAX)
		return -EINVAL;
	memcpy(b->tenant, tenant ? tenant : "", n);
	b->tenant[n] = '\0';
	return 0;
}

void builder_set_create_tenant(builder *b, bool create_tenant)
{
	b->create_tenant = create_tenant;
}

void builder_set_backfill(builder *b, bool backfill)
{
	b->backfill = backfill;
}

uint32_t builder_count(const builder *b)
{
	return b->count;
}

/* Grows array to capacity entries; on failure it is left as it was
 * (realloc keeps the old block) and `failed` is set. */
#define ARRAY_GROW(array, capacity, failed)                                        \
	do {                                                                       \
		void *grown_ = realloc((array), (size_t)(capacity) * sizeof(*(array))); \
		if (grown_)                                                        \
			(array) = grown_;                                          \
		else                                                               \
			(failed) = 1;                                              \
	} while (0)

/* Room for one more event in every per-event array. */
static int events_reserve(builder *b)
{
	if (b->count < b->capacity)
		return 0;
	if (b->count >= BUILDER_EVENTS_MAX)
		return -E2BIG;
	uint32_t capacity = b->capacity ? b->capacity * 2 : BUILDER_CAPACITY_MIN;
	if (capacity > BUILDER_EVENTS_MAX)
		capacity = BUILDER_EVENTS_MAX;
	int failed = 0;
	ARRAY_GROW(b->time_us, capacity, failed);
	ARRAY_GROW(b->status, capacity, failed);
	ARRAY_GROW(b->duration_ms, capacity, failed);
	ARRAY_GROW(b->tokens_in, capacity, failed);
	ARRAY_GROW(b->tokens_out, capacity, failed);
	ARRAY_GROW(b->cost_micros, capacity, failed);
	ARRAY_GROW(b->event_id.len, capacity, failed);
	for (int k = 0; k < BUILDER_COLUMN_COUNT; k++) {
		ARRAY_GROW(b->strings[k].len, capacity, failed);
		ARRAY_GROW(b->strings[k].code, capacity, failed);
	}
	if (failed)
		return -ENOMEM; /* the arrays that did grow are merely roomier */
	b->capacity = capacity;
	return 0;
}

/* Room for len more bytes in the column. */
static int bytes_reserve(builder_strings *s, uint32_t len)
{
	if (len > BUILDER_COLUMN_BYTES_MAX - s->bytes_size)
		return -E2BIG;
	size_t need = s->bytes_size + len;
	if (need <= s->bytes_capacity)
		return 0;
	size_t capacity = s->bytes_capacity ? s->bytes_capacity : BUILDER_BYTES_MIN;
	while (capacity < need)
		capacity *= 2;
	int failed = 0;
	ARRAY_GROW(s->bytes, capacity, failed);
	if (failed)
		return -ENOMEM;
	s->bytes_capacity = capacity;
	return 0;
}

static uint64_t value_hash(tally_client_str v)
{
	return XXH3_64bits(v.len ? v.ptr : "", v.len);
}

/* The slot holding v, or the empty slot where it would go. */
static uint32_t *slot_find(const builder_strings *s, tally_client_str v, uint64_t hash)
{
	uint32_t mask = s->slot_count - 1;
	for (uint32_t i = (uint32_t)hash & mask;; i = (i + 1) & mask) {
		uint32_t *slot = &s->slots[i];
		if (!*slot)
			return slot;
		const struct builder_distinct *d = &s->distinct[*slot - 1];
		if (d->hash == hash && d->len == v.len &&
		    (v.len == 0 || memcmp(s->bytes + d->offset, v.ptr, v.len) == 0))
			return slot;
	}
}

/* Keeps the table at most half full, and room for one more distinct value. */
static int distinct_reserve(builder_strings *s)
{
	if (s->distinct_count == s->distinct_capacity) {
		uint32_t capacity = s->distinct_capacity ? s->distinct_capacity * 2 : BUILDER_SLOTS_MIN / 2;
		if (capacity > BUILDER_DICT_STRINGS_MAX)
			capacity = BUILDER_DICT_STRINGS_MAX;
		int failed = 0;
		ARRAY_GROW(s->distinct, capacity, failed);
		if (failed)
			return -ENOMEM;
		s->distinct_capacity = capacity;
	}
	if ((s->distinct_count + 1) * 2 <= s->slot_count)
		return 0;
	uint32_t slot_count = s->slot_count ? s->slot_count * 2 : BUILDER_SLOTS_MIN;
	uint32_t *slots = calloc(slot_count, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	for (uint32_t i = 0; i < s->distinct_count; i++) {
		uint32_t j = (uint32_t)s->distinct[i].hash & (slot_count - 1);
		while (slots[j])
			j = (j + 1) & (slot_count - 1);
		slots[j] = i + 1;
	}
	free(s->slots);
	s->slots = slots;
	s->slot_count = slot_count;
	return 0;
}

/*
 * Finds v among the column's distinct values, making room for it when it
 * is new. *slot is where it is (or goes), *hash its hash. Nothing visible
 * changes; -ENOMEM when room could not be made.
 */
static int dict_prepare(builder_strings *s, tally_client_str v, uint64_t *hash, uint32_t **slot)
{
	*slot = NULL;
	if (s->dict_abandoned)
		return 0;
	*hash = value_hash(v);
	if (s->slot_count) {
		*slot = slot_find(s, v, *hash);
		if (**slot)
			return 0;
	}
	if (s->distinct_count == BUILDER_DICT_STRINGS_MAX) {
		*slot = NULL; /* a new value past the limit: the add abandons the dictionary */
		return 0;
	}
	int rc = distinct_reserve(s);
	if (rc)
		return rc;
	*slot = slot_find(s, v, *hash); /* the table may have been rebuilt */
	return 0;
}

/* Appends v (room made before) as event `index`, with its code. */
static void strings_append(builder_strings *s, uint32_t index, tally_client_str v, uint64_t hash,
			   uint32_t *slot)
{
	uint32_t offset = (uint32_t)s->bytes_size;
	if (v.len)
		memcpy(s->bytes + offset, v.ptr, v.len);
	s->bytes_size += v.len;
	s->len[index] = v.len;
	s->len_varint_bytes += varint_size(v.len);
	if (s->dict_abandoned)
		return;
	if (!slot) {
		/* More distinct values than a dictionary is worth. */
		s->dict_abandoned = true;
		return;
	}
	if (!*slot) {
		s->distinct[s->distinct_count] = (struct builder_distinct){hash, offset, v.len};
		*slot = ++s->distinct_count;
		s->distinct_cost += 1 + varint_size(v.len) + v.len;
	}
	s->code[index] = *slot - 1;
}

static const tally_client_str *event_strings(const tally_client_event *e, int k)
{
	switch (k) {
	case BUILDER_TYPE: return &e->type;
	case BUILDER_PROJECT: return &e->project;
	case BUILDER_AGENT: return &e->agent;
	case BUILDER_MODEL: return &e->model;
	default: return &e->user;
	}
}

int builder_add(builder *b, const tally_client_event *e)
{
	int rc = events_reserve(b);
	if (rc)
		return rc;
	if ((rc = bytes_reserve(&b->event_id, e->event_id.len)))
		return rc;
	uint64_t hashes[BUILDER_COLUMN_COUNT];
	uint32_t *slots[BUILDER_COLUMN_COUNT];
	for (int k = 0; k < BUILDER_COLUMN_COUNT; k++) {
		const tally_client_str *v = event_strings(e, k);
		if ((rc = bytes_reserve(&b->strings[k], v->len)) ||
		    (rc = dict_prepare(&b->strings[k], *v, &hashes[k], &slots[k])))
			return rc;
	}
	/* Everything has room: write. */
	uint32_t i = b->count;
	/* Ids are unique: never a dictionary (no slot abandons it at once). */
	strings_append(&b->event_id, i, e->event_id, 0, NULL);
	for (int k = 0; k < BUILDER_COLUMN_COUNT; k++)
		strings_append(&b->strings[k], i, *event_strings(e, k), hashes[k], slots[k]);
	b->time_us[i] = e->time_us;
	b->status[i] = e->status;
	b->duration_ms[i] = e->duration_ms;
	b->tokens_in[i] = e->tokens_in;
	b->tokens_out[i] = e->tokens_out;
	b->cost_micros[i] = e->cost_micros;
	b->time_bytes += varint_size((uint64_t)e->time_us);
	b->numeric_bytes[NUM_STATUS] += varint_size(e->status);
	b->numeric_bytes[NUM_DURATION] += varint_size(e->duration_ms);
	b->numeric_bytes[NUM_TOKENS_IN] += varint_size(e->tokens_in);
	b->numeric_bytes[NUM_TOKENS_OUT] += varint_size(e->tokens_out);
	b->numeric_bytes[NUM_COST] += varint_size((uint64_t)e->cost_micros);
	b->numeric_nonzero[NUM_STATUS] |= e->status != 0;
	b->numeric_nonzero[NUM_DURATION] |= e->duration_ms != 0;
	b->numeric_nonzero[NUM_TOKENS_IN] |= e->tokens_in != 0;
	b->numeric_nonzero[NUM_TOKENS_OUT] |= e->tokens_out != 0;
	b->numeric_nonzero[NUM_COST] |= e->cost_micros != 0;
	b->count = i + 1;
	return 0;
}

/* What builder_bytes reads of a string column: its sizes, as they are or
 * as they would be with one more value (column_size_add). */
typedef struct column_size {
	uint64_t bytes_size;
	uint64_t len_varint_bytes;
	uint64_t distinct_cost;
	uint32_t distinct_count;
	bool abandoned;
} column_size;

static column_size column_size_of(const builder_strings *s)
{
	return (column_size){s->bytes_size, s->len_varint_bytes, s->distinct_cost, s->distinct_count,
			     s->dict_abandoned};
}

/* c as strings_append would leave it after appending v to s (dict_prepare's
 * decisions, made without changing s). */
static void column_size_add(column_size *c, const builder_strings *s, tally_client_str v)
{
	c->bytes_size += v.len;
	c->len_varint_bytes += varint_size(v.len);
	if (c->abandoned)
		return;
	if (s->slot_count && *slot_find(s, v, value_hash(v)))
		return; /* a value the column has */
	if (c->distinct_count == BUILDER_DICT_STRINGS_MAX) {
		c->abandoned = true;
		return;
	}
	c->distinct_count++;
	c->distinct_cost += 1 + varint_size(v.len) + v.len;
}

/* Packed size of a StringColumn given as bytes + lengths (0: all empty). */
static uint64_t raw_cost(const column_size *c)
{
	if (c->bytes_size == 0)
		return 0;
	return 1 + varint_size(c->bytes_size) + c->bytes_size + 1 +
	       varint_size(c->len_varint_bytes) + c->len_varint_bytes;
}

static bool dict_candidate(const builder_strings *s)
{
	return !s->dict_abandoned && s->bytes_size > 0;
}

/* The numeric columns' varint bytes and whether each holds a value but 0. */
typedef struct numeric_size {
	uint64_t time_bytes;
	uint64_t bytes[NUM_COUNT];
	bool nonzero[NUM_COUNT];
} numeric_size;

/*
 * The bound of note 4, of `count` events whose columns have these sizes.
 * builder_message may code a column as a dictionary only if that beats
 * bytes even with one-byte codes (dict_floor), so the columns before k
 * that can shift k's codes are those; k's codes are then below the sum of
 * their distinct values and its own.
 */
static size_t bound(const builder *b, uint32_t count, const column_size *id,
		    const column_size columns[BUILDER_COLUMN_COUNT], const numeric_size *num)
{
	uint64_t total = ENVELOPE_BYTES_MAX;
	total += 2 + strlen(b->tenant) + 2 + 2; /* tenant, create_tenant, backfill */
	total += num->time_bytes + FIELD_OVERHEAD_MAX;
	for (int k = 0; k < NUM_COUNT; k++)
		if (num->nonzero[k])
			total += num->bytes[k] + FIELD_OVERHEAD_MAX;
	total += raw_cost(id) + FIELD_OVERHEAD_MAX;
	uint32_t base_max = 0;
	for (int k = 0; k < BUILDER_COLUMN_COUNT; k++) {
		const column_size *c = &columns[k];
		uint64_t cost = raw_cost(c);
		if (!c->abandoned && c->bytes_size > 0) {
			/* The least a dictionary can cost (one-byte codes, as
			 * builder_message counts it): below the bytes, the
			 * message may choose it. */
			uint64_t dict_floor = 1 + varint_size(count) + (uint64_t)count + c->distinct_cost;
			uint32_t code_size = varint_size(base_max + c->distinct_count - 1);
			uint64_t dict = (uint64_t)count * code_size + FIELD_OVERHEAD_MAX + c->distinct_cost;
			if (dict < cost)
				cost = dict;
			if (dict_floor < raw_cost(c))
				base_max += c->distinct_count;
		}
		total += cost + FIELD_OVERHEAD_MAX;
	}
	return (size_t)total;
}

static numeric_size numeric_size_of(const builder *b)
{
	numeric_size n;
	n.time_bytes = b->time_bytes;
	memcpy(n.bytes, b->numeric_bytes, sizeof(n.bytes));
	memcpy(n.nonzero, b->numeric_nonzero, sizeof(n.nonzero));
	return n;
}

size_t builder_bytes(const builder *b)
{
	column_size id = column_size_of(&b->event_id), columns[BUILDER_COLUMN_COUNT];
	for (int k = 0; k < BUILDER_COLUMN_COUNT; k++)
		columns[k] = column_size_of(&b->strings[k]);
	numeric_size num = numeric_size_of(b);
	return bound(b, b->count, &id, columns, &num);
}

size_t builder_bytes_with(const builder *b, const tally_client_event *e)
{
	column_size id = column_size_of(&b->event_id), columns[BUILDER_COLUMN_COUNT];
	id.bytes_size += e->event_id.len;
	id.len_varint_bytes += varint_size(e->event_id.len);
	for (int k = 0; k < BUILDER_COLUMN_COUNT; k++) {
		columns[k] = column_size_of(&b->strings[k]);
		column_size_add(&columns[k], &b->strings[k], *event_strings(e, k));
	}
	numeric_size num = numeric_size_of(b);
	num.time_bytes += varint_size((uint64_t)e->time_us);
	const uint64_t values[NUM_COUNT] = {e->status, e->duration_ms, e->tokens_in, e->tokens_out,
					    (uint64_t)e->cost_micros};
	for (int k = 0; k < NUM_COUNT; k++) {
		num.bytes[k] += varint_size(values[k]);
		num.nonzero[k] |= values[k] != 0;
	}
	return bound(b, b->count + 1, &id, columns, &num);
}

/* The message's StringColumn for s as bytes + lengths; NULL when all empty. */
static Tally__V1__StringColumn *column_raw(const builder *b, const builder_strings *s,
					  Tally__V1__StringColumn *column)
{
	tally__v1__string_column__init(column);
	if (s->bytes_size == 0)
		return NULL;
	column->bytes = (ProtobufCBinaryData){s->bytes_size, s->bytes};
	column->n_len = b->count;
	column->len = s->len;
	return column;
}

/* Makes room for the message's dictionary and shifted codes. */
static int message_reserve(builder *b)
{
	uint32_t distinct_total = 0, dict_columns = 0;
	for (int k = 0; k < BUILDER_COLUMN_COUNT; k++)
		if (dict_candidate(&b->strings[k])) {
			distinct_total += b->strings[k].distinct_count;
			dict_columns++;
		}
	int failed = 0;
	if (distinct_total > b->message_dict_capacity) {
		ARRAY_GROW(b->message_dict, distinct_total, failed);
		if (failed)
			return -ENOMEM;
		b->message_dict_capacity = distinct_total;
	}
	size_t codes = (size_t)dict_columns * b->count;
	if (codes > b->message_codes_capacity) {
		ARRAY_GROW(b->message_codes, codes, failed);
		if (failed)
			return -ENOMEM;
		b->message_codes_capacity = codes;
	}
	return 0;
}

int builder_message(builder *b, Tally__V1__IngestBatch *out)
{
	tally__v1__ingest_batch__init(out);
	int rc = message_reserve(b);
	if (rc)
		return rc;
	out->tenant = b->tenant;
	out->create_tenant = b->create_tenant;
	out->backfill = b->backfill;
	out->n_time_us = b->count;
	out->time_us = b->time_us;
	/* An all-zero numeric column is sent empty. */
	out->n_status = b->numeric_nonzero[NUM_STATUS] ? b->count : 0;
	out->status = b->status;
	out->n_duration_ms = b->numeric_nonzero[NUM_DURATION] ? b->count : 0;
	out->duration_ms = b->duration_ms;
	out->n_tokens_in = b->numeric_nonzero[NUM_TOKENS_IN] ? b->count : 0;
	out->tokens_in = b->tokens_in;
	out->n_tokens_out = b->numeric_nonzero[NUM_TOKENS_OUT] ? b->count : 0;
	out->tokens_out = b->tokens_out;
	out->n_cost_micros = b->numeric_nonzero[NUM_COST] ? b->count : 0;
	out->cost_micros = b->cost_micros;
	out->event_id = column_raw(b, &b->event_id, &b->message_columns[0]);

	Tally__V1__StringColumn **targets[BUILDER_COLUMN_COUNT] = {
		&out->type, &out->project, &out->agent, &out->model, &out->user,
	};
	uint32_t base = 0;
	uint32_t *codes = b->message_codes;
	for (int k = 0; k < BUILDER_COLUMN_COUNT; k++) {
		builder_strings *s = &b->strings[k];
		Tally__V1__StringColumn *column = &b->message_columns[1 + k];
		*targets[k] = column_raw(b, s, column);
		if (!dict_candidate(s))
			continue;
		/* Exact sizes of both codings, codes shifted by this column's base. */
		uint64_t code_bytes = 0;
		for (uint32_t i = 0; i < b->count; i++) {
			codes[i] = s->code[i] + base;
			code_bytes += varint_size(codes[i]);
		}
		uint64_t dict_cost = 1 + varint_size(code_bytes) + code_bytes + s->distinct_cost;
		column_size size = column_size_of(s);
		if (dict_cost >= raw_cost(&size))
			continue;
		tally__v1__string_column__init(column);
		column->n_code = b->count;
		column->code = codes;
		*targets[k] = column;
		for (uint32_t d = 0; d < s->distinct_count; d++)
			b->message_dict[base + d] =
				(ProtobufCBinaryData){s->distinct[d].len, s->bytes + s->distinct[d].offset};
		base += s->distinct_count;
		codes += b->count;
	}
	out->n_dict = base;
	out->dict = base ? b->message_dict : NULL;
	return 0;
}
