/*
 * batchrec.c — encoding the WAL's batch payload (batchrec.h).
 *
 * NOTES
 *
 * 1. The dictionary. A string is found by the hash the caller computed for
 *    it (strdict_hash) in an open-addressing table of the payload's
 *    strings; equal hashes are confirmed by comparing the bytes, so two
 *    strings never share a code. The table's slots carry the generation
 *    of the payload that filled them: a new payload bumps the generation
 *    instead of clearing the table, so a call of many small batches clears
 *    nothing. The table grows (doubling, at half full) from the hashes kept
 *    per string, and is kept for the next payload.
 *
 * 2. One pass, one copy. Strings and events are encoded into two scratch
 *    buffers; the entry's header is then written in place and the two
 *    copied after it, as the size prefix needs the total first.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "batchrec.h"
#include "grow.h"
#include "strdict.h"

#define BATCHREC_SLOTS_MIN 64u

void batchrec_encoder_free(batchrec_encoder *enc)
{
	free(enc->slots);
	free(enc->strings);
	bytebuf_free(&enc->string_bytes);
	bytebuf_free(&enc->event_bytes);
	memset(enc, 0, sizeof(*enc));
}

static uint32_t slot_home(uint64_t hash, uint32_t mask)
{
	return (uint32_t)hash & mask;
}

/* Doubles the table (or makes the first one), placing the current
 * payload's strings again. 0 or -ENOMEM. */
static int slots_grow(batchrec_encoder *enc)
{
	uint32_t count = enc->slot_mask ? (enc->slot_mask + 1) * 2 : BATCHREC_SLOTS_MIN;
	uint64_t *slots = grow_slots_alloc(count, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	for (uint32_t code = 0; code < enc->string_count; code++) {
		uint32_t k = slot_home(enc->strings[code].hash, count - 1);
		while (slots[k])
			k = (k + 1) & (count - 1);
		slots[k] = (uint64_t)enc->generation << 32 | (code + 1);
	}
	free(enc->slots);
	enc->slots = slots;
	enc->slot_mask = count - 1;
	return 0;
}

/* Starts a payload: no strings, no events, and a table to find them in.
 * 0 or -ENOMEM. */
static int payload_begin(batchrec_encoder *enc)
{
	if (++enc->generation == 0) { /* wrapped: forget every stamp */
		if (enc->slots)
			memset(enc->slots, 0, sizeof(*enc->slots) * ((size_t)enc->slot_mask + 1));
		enc->generation = 1;
	}
	enc->string_count = 0;
	bytebuf_reset(&enc->string_bytes);
	bytebuf_reset(&enc->event_bytes);
	return enc->slots ? 0 : slots_grow(enc);
}

/* string_code's slow path: adds s (hash as given), which the payload's
 * dictionary lacks, its slot k being the empty one a lookup ended at.
 * 0 or -ENOMEM. */
static int string_add(batchrec_encoder *enc, tally_str s, uint64_t hash, uint32_t k,
		      uint32_t *code)
{
	if ((enc->string_count + 1) * 2 > enc->slot_mask + 1) {
		int rc = slots_grow(enc);
		if (rc)
			return rc;
		for (k = slot_home(hash, enc->slot_mask); enc->slots[k];
		     k = (k + 1) & enc->slot_mask)
			; /* a new table holds only this payload's strings, none equal to s */
	}
	int rc = grow_for_one((void **)&enc->strings, &enc->string_capacity, enc->string_count, 64,
			      sizeof(*enc->strings));
	if (!rc)
		rc = bytebuf_reserve(&enc->string_bytes, VARINT_SIZE_MAX + (size_t)s.len);
	if (rc)
		return rc;
	bytebuf *b = &enc->string_bytes;
	b->size += varint_put(b->data + b->size, s.len);
	memcpy(b->data + b->size, s.ptr, s.len);
	b->size += s.len;
	*code = enc->string_count++;
	enc->strings[*code] = (batchrec_string){s, hash};
	enc->slots[k] = (uint64_t)enc->generation << 32 | (*code + 1);
	return 0;
}

/* Sets *code to the payload's code of s (hash = strdict_hash(s)), adding it
 * to the dictionary if new. 0 or -ENOMEM. Inline: five calls per event,
 * nearly all of them finding the string at the first slot they read. */
static inline int string_code(batchrec_encoder *enc, tally_str s, uint64_t hash, uint32_t *code)
{
	uint32_t k = slot_home(hash, enc->slot_mask);
	for (; enc->slots[k] >> 32 == enc->generation; k = (k + 1) & enc->slot_mask) {
		uint32_t c = (uint32_t)enc->slots[k] - 1;
		const batchrec_string *t = &enc->strings[c];
		if (t->hash == hash && t->s.len == s.len &&
		    strdict_bytes_equal(t->s.ptr, s.ptr, s.len)) {
			*code = c;
			return 0;
		}
	}
	return string_add(enc, s, hash, k, code);
}

/* Encodes one event (its strings already coded) after previous_time. */
static int event_put(batchrec_encoder *enc, const tally_event *e, const packed_id *id,
		     const uint32_t codes[DIM_COUNT], int64_t previous_time)
{
	int rc = bytebuf_reserve(&enc->event_bytes, BATCHREC_EVENT_PUT_BYTES_MAX);
	if (rc)
		return rc;
	uint8_t *p = enc->event_bytes.data + enc->event_bytes.size;
	*p++ = (uint8_t)(id->kind | e->status << 4);
	*p++ = id->size;
	memcpy(p, id->bytes, id->size);
	p += id->size;
	p += varint_put(p, zigzag_encode((int64_t)((uint64_t)e->time_us - (uint64_t)previous_time)));
	for (int d = 0; d < DIM_COUNT; d++)
		p += varint_put(p, codes[d]);
	p += varint_put(p, e->tokens_in);
	p += varint_put(p, e->tokens_out);
	p += varint_put(p, zigzag_encode(e->cost_micros));
	p += varint_put(p, e->duration_ms);
	enc->event_bytes.size = (size_t)(p - enc->event_bytes.data);
	return 0;
}

int batchrec_append(batchrec_encoder *enc, bytebuf *out, const char *tenant,
		    const tally_event *events, const packed_id *ids,
		    const uint64_t (*dim_hash)[DIM_COUNT], const tally_ingest_result *results,
		    uint32_t count, uint8_t code, uint32_t *encoded)
{
	*encoded = 0;
	int rc = payload_begin(enc);
	if (rc)
		return rc;
	int64_t previous_time = 0;
	uint32_t n = 0;
	for (uint32_t i = 0; i < count; i++) {
		if (results[i].code != code)
			continue;
		tally_str dims[DIM_COUNT];
		event_dims(&events[i], dims);
		uint32_t codes[DIM_COUNT];
		for (int d = 0; d < DIM_COUNT; d++)
			if ((rc = string_code(enc, dims[d], dim_hash[i][d], &codes[d])))
				return rc;
		if ((rc = event_put(enc, &events[i], &ids[i], codes, previous_time)))
			return rc;
		previous_time = events[i].time_us;
		n++;
	}
	if (!n)
		return 0;
	uint8_t header[3 * VARINT_SIZE_MAX];
	size_t name_size = strlen(tenant);
	size_t h = varint_put(header, name_size);
	size_t after_name = varint_put(header + h, n);
	after_name += varint_put(header + h + after_name, enc->string_count);
	size_t size = h + name_size + after_name + enc->string_bytes.size + enc->event_bytes.size;
	if ((rc = bytebuf_reserve(out, VARINT_SIZE_MAX + size)))
		return rc;
	uint8_t *p = out->data + out->size;
	p += varint_put(p, size);
	memcpy(p, header, h);
	memcpy(p + h, tenant, name_size);
	p += h + name_size;
	memcpy(p, header + h, after_name);
	p += after_name;
	memcpy(p, enc->string_bytes.data, enc->string_bytes.size);
	p += enc->string_bytes.size;
	memcpy(p, enc->event_bytes.data, enc->event_bytes.size);
	p += enc->event_bytes.size;
	out->size = (size_t)(p - out->data);
	*encoded = n;
	return 0;
}
