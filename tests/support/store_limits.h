/*
 * store_limits.h — a store's internal limits lowered, for tests that
 * reach them with few events and cannot include store_internal.h (whose
 * names clash with the server's).
 */
#ifndef TALLY_TEST_STORE_LIMITS_H
#define TALLY_TEST_STORE_LIMITS_H

#include <stdint.h>

#include "tally.h"

/* The (bucket, group) rows a query may build (TALLY_QUERY_CELLS_MAX by
 * default: store.query_cells_max). */
void store_limits_query_cells_max(tally_store *s, uint32_t max);

#endif /* TALLY_TEST_STORE_LIMITS_H */
