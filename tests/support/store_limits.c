/*
 * store_limits.c — store_limits.h.
 */
#include "store_internal.h"
#include "store_limits.h"

void store_limits_query_cells_max(tally_store *s, uint32_t max)
{
	s->query_cells_max = max;
}
