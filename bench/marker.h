/*
 * marker.h — DIR/bench-workload.json: which reference workload a data
 * directory holds, so a later run can regenerate the identical events (the
 * generator is deterministic) instead of ingesting them again.
 *
 * The file is one JSON object written by `tally-bench engine` (after a run
 * whose results matched) and by `tally-bench query` (after it ingested):
 *
 *   {"events": 200000, "tenants": 1000, "seed": 1, "end_us": 1795856866000000,
 *    "batch_window": 10000, "compacted": true, "written_by": "tally-bench engine"}
 *
 * events, tenants, seed and end_us are the workload_params that fix the
 * events; batch_window fixes how they were cut into batches (the events are
 * the same for any window); seed is a decimal string when it exceeds
 * INT64_MAX. The engine ignores the file (it lives next to MANIFEST).
 */
#ifndef TALLY_BENCH_MARKER_H
#define TALLY_BENCH_MARKER_H

#include <stdbool.h>

#include "workload.h"

#define WORKLOAD_MARKER_NAME "bench-workload.json"
#define WORKLOAD_MARKER_WRITER_SIZE 32
#define WORKLOAD_MARKER_ERRMSG_SIZE 512

typedef struct workload_marker {
	workload_params params;  /* event_count, tenant_count, seed, window_events, end_us */
	bool compacted;          /* tally_compact ran after the ingest */
	char written_by[WORKLOAD_MARKER_WRITER_SIZE]; /* "tally-bench engine" / "tally-bench query" */
} workload_marker;

/*
 * Writes DIR/bench-workload.json durably: a temporary file, fsync, rename,
 * fsync of DIR. Returns 0, or -errno with errmsg
 * (WORKLOAD_MARKER_ERRMSG_SIZE bytes) naming the operation and path.
 */
int workload_marker_write(const char *dir, const workload_marker *marker, char *errmsg);

/*
 * Reads DIR/bench-workload.json into *marker. Returns 0; -ENOENT when the
 * file does not exist; -EINVAL when it is not a valid marker (a field is
 * missing, has the wrong type or is out of the generator's range); another
 * -errno when it cannot be read. Every failure but -ENOENT writes errmsg
 * (WORKLOAD_MARKER_ERRMSG_SIZE bytes), naming the path and the problem.
 */
int workload_marker_read(const char *dir, workload_marker *marker, char *errmsg);

#endif /* TALLY_BENCH_MARKER_H */
