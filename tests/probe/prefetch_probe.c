/*
 * prefetch_probe.c — compiled to assembly by `make prefetch-check`, never
 * linked or run.
 *
 * GCC 12 treats a static inline function whose only effect is
 * __builtin_prefetch as const and deletes every call to it before
 * inlining, so the prefetch is silently never emitted (this cost the
 * ingest path ~9%: docs/benchmarks.md, eighteenth measurement). Each
 * helper below must compile to a prefetch instruction; the check fails
 * when one does not.
 */
#include "dedup.h"

void probe_dedup_prefetch(const dedup_table *t, uint64_t hash);

void probe_dedup_prefetch(const dedup_table *t, uint64_t hash)
{
	dedup_prefetch(t, hash);
}
