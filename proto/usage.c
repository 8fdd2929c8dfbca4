/*
 * usage.c — checksums of daily usage rows (usage.h).
 */
#include <string.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "usage.h"

static void put32(XXH3_state_t *st, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	XXH3_64bits_update(st, b, sizeof(b));
}

static void put64(XXH3_state_t *st, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	XXH3_64bits_update(st, b, sizeof(b));
}

static void put_bytes(XXH3_state_t *st, const void *p, size_t n)
{
	put32(st, (uint32_t)n);
	if (n)
		XXH3_64bits_update(st, p, n);
}

uint64_t usage_row_checksum(const Tally__V1__UsageRow *r)
{
	XXH3_state_t st;
	XXH3_64bits_reset(&st);
	const char *tenant = r->tenant ? r->tenant : "";
	put_bytes(&st, tenant, strlen(tenant));
	put_bytes(&st, r->project.data, r->project.len);
	put_bytes(&st, r->agent.data, r->agent.len);
	put_bytes(&st, r->model.data, r->model.len);
	put_bytes(&st, r->type.data, r->type.len);
	put32(&st, r->status);
	put64(&st, r->count);
	put64(&st, r->tokens_in);
	put64(&st, r->tokens_out);
	put64(&st, (uint64_t)r->cost_micros);
	put64(&st, r->duration_ms);
	put64(&st, r->errors);
	if (r->wraps) { /* only then: a row in range hashes as before wraps existed */
		put64(&st, (uint64_t)r->wraps->tokens_in);
		put64(&st, (uint64_t)r->wraps->tokens_out);
		put64(&st, (uint64_t)r->wraps->cost_micros);
		put64(&st, (uint64_t)r->wraps->duration_ms);
	}
	return XXH3_64bits_digest(&st);
}

uint64_t usage_rows_checksum(Tally__V1__UsageRow *const *rows, size_t n)
{
	uint64_t sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += usage_row_checksum(rows[i]);
	return sum;
}
