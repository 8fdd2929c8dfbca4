/*
 * usage.h — the checksum of daily usage rows (DailyUsagePage, the billing
 * export): a 64-bit XXH3 of each row's canonical bytes, summed mod 2^64
 * over a day's rows, so it does not depend on paging or on protobuf's
 * encoding, and the exporter, the server and any later check compute the
 * same value from the same rows.
 *
 * Canonical bytes of a row: for tenant, project, agent, model, type in that
 * order, a 4-byte little-endian length then the bytes; then status as 4
 * bytes; then count, tokens_in, tokens_out, cost_micros, duration_ms,
 * errors as 8 bytes each, little-endian (cost_micros as its two's
 * complement); then, only for a row carrying a Wraps message, its
 * tokens_in, tokens_out, cost_micros and duration_ms wraps as 8 bytes each
 * (two's complement).
 */
#ifndef TALLY_USAGE_H
#define TALLY_USAGE_H

#include <stddef.h>
#include <stdint.h>

#include "tally.pb-c.h"

uint64_t usage_row_checksum(const Tally__V1__UsageRow *row);

/* The sum of usage_row_checksum over rows[0..n). */
uint64_t usage_rows_checksum(Tally__V1__UsageRow *const *rows, size_t n);

#endif /* TALLY_USAGE_H */
