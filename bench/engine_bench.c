/*
 * engine_bench.c — `tally-bench engine`: ingest the reference workload into a
 * fresh store in-process, with durable group commit, and measure it.
 *
 * NOTES ON THE MEASUREMENT
 *
 * 1. Nothing but the engine is timed. The workload, already cut into the
 *    batches the producers submit, is generated before the clock starts
 *    (workload.c); producers only call the engine and read the clock.
 *
 * 2. Producers emulate a server that acknowledges after group commit
 *    (ingest.c, shared with `tally-bench query`). Each producer thread
 *    claims the next window of the delivery order, submits its per-tenant
 *    batches G at a time with tally_ingest_submit_many, and acknowledges a
 *    batch once tally_durable_lsn() has reached its commit LSN. A batch's
 *    ack latency is the time from just before its submit to the moment its
 *    producer saw it durable.
 *
 * 3. Throughput = delivered events (re-sends included: each is acknowledged,
 *    as DUPLICATE) / (last acknowledgement - first submit).
 *
 * 4. Correctness is checked, not assumed: ACCEPTED must equal the unique
 *    events, DUPLICATE the re-sends, nothing CONFLICT or REJECTED, and the
 *    reopened store must hold exactly the unique events. A mismatch is an
 *    error (exit 1) but the figures are still printed, flagged.
 *
 * 5. Bytes per event on disk = every regular file under the data directory
 *    (after flush, compaction and close) / unique events stored. Per-column
 *    figures come from tally_inspect's stored (compressed) column bytes.
 *
 * 6. A run that matched writes DIR/bench-workload.json (marker.c) after
 *    every measurement, so `tally-bench query --data DIR` can regenerate the
 *    identical workload and query the store without ingesting it again.
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "calibrate.h"
#include "common.h"
#include "engine_bench.h"
#include "expiry.h"
#include "ingest.h"
#include "marker.h"
#include "tally.h"
#include "workload.h"

#define NFTW_FDS_MAX 16

/* nftw has no context argument, so the walk's totals live here; disk_usage
 * is only ever called from the main thread. */
static struct {
	size_t root_size;
	uint64_t total;
	uint64_t wal;
	uint64_t segments;
	uint64_t file_count;
} walk;

static int walk_file(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)ftw;
	if (flag != FTW_F || !S_ISREG(st->st_mode))
		return 0;
	const char *relative = path + walk.root_size;
	while (*relative == '/')
		relative++;
	uint64_t size = (uint64_t)st->st_size;
	walk.total += size;
	walk.file_count++;
	if (strncmp(relative, "wal/", 4) == 0)
		walk.wal += size;
	else if (strncmp(relative, "segments/", 9) == 0)
		walk.segments += size;
	return 0;
}

/* Sums the sizes of all regular files under path (every subdirectory). */
static int disk_usage(const char *path)
{
	memset(&walk, 0, sizeof(walk));
	walk.root_size = strlen(path);
	if (nftw(path, walk_file, NFTW_FDS_MAX, FTW_PHYS) != 0)
		return errno ? -errno : -EIO;
	return 0;
}

/* ---- Results ----------------------------------------------------------------- */

typedef struct figures {
	bench_machine machine;
	/* workload */
	double generate_s;
	bench_ingest_figures ingest;
	/* maintenance */
	double flush_ms;
	double compact_ms;
	double close_ms;
	double reopen_ms;
	/* memory */
	tally_stats stats;        /* after flush and compaction */
	tally_stats reopen_stats; /* right after reopen */
	double dedup_bytes_per_event;
	double reopen_dedup_bytes_per_event;
	bench_expiry_figures expiry;
	bool reopen_match;
	/* disk */
	tally_inspect_report inspect;
	uint64_t disk_bytes;
	uint64_t disk_wal_bytes;
	uint64_t disk_segment_bytes;
	uint64_t disk_file_count;
	double bytes_per_event;
} figures;

/* Column bytes that are not in any column: headers, footers, dictionaries. */
static uint64_t segment_overhead_bytes(const tally_inspect_report *report)
{
	uint64_t columns = 0;
	for (int c = 0; c < TALLY_COL_COUNT; c++)
		columns += report->column_stored_bytes[c];
	return report->file_bytes > columns ? report->file_bytes - columns : 0;
}

/* Bytes of the rollup pages (issue 3's budget, not the events'): group
 * tables and the minute, hour and day chunks. Their footer entries stay in
 * the event data's framing, so the event figure errs high. */
static uint64_t rollup_page_bytes(const tally_inspect_report *report)
{
	uint64_t bytes = report->rollup_group_bytes;
	for (int list = 0; list < 3; list++)
		bytes += report->rollup_bytes[list];
	return bytes;
}

/* The rate at which events reached segment files: the ingest (with the
 * flushes that ran during it) and the final flush, which writes what the
 * ingest left in memtables. */
static double events_with_flush_per_s(uint64_t events, const figures *f)
{
	double seconds = f->ingest.ingest_s + f->flush_ms / 1000.0;
	return seconds > 0 ? (double)events / seconds : 0;
}

/* The store's memtable_bytes_max in this run. */
static uint64_t memtable_limit(const bench_engine_options *o)
{
	tally_options defaults;
	tally_options_default(&defaults);
	return o->memtable_bytes_max ? o->memtable_bytes_max : defaults.memtable_bytes_max;
}

static void print_text(const bench_engine_options *o, const workload *w, const figures *f)
{
	uint64_t stored = w->unique_count;
	printf("tally-bench engine: %" PRIu64 " events (%" PRIu64 " unique + %" PRIu64
	       " re-sends, %" PRIu64 " delivered late), %" PRIu32 " tenants (%" PRIu32
	       " active), seed %" PRIu64 "\n",
	       w->event_count, w->unique_count, w->resend_count, w->late_count, o->tenant_count,
	       w->active_tenant_count, o->seed);
	printf("  machine: DRAM latency %.1f ns (a dependent random walk), XXH3 %.2f GB/s, "
	       "page fault %.2f us (not timed)\n",
	       f->machine.dram_latency_ns, f->machine.xxh3_gb_per_s, f->machine.page_fault_us);
	printf("  workload generated in %.2f s (not timed); %" PRIu64 " batches in %" PRIu64
	       " windows of %" PRIu32 " events, %.1f events/batch\n",
	       f->generate_s, w->batch_count, w->window_count, o->window_events,
	       bench_per_event(w->event_count, w->batch_count));
	printf("\ningest: %" PRIu32 " producers, up to %" PRIu32
	       " batches in flight each, %" PRIu32 " batches per submit, durable group commit\n",
	       o->producer_count, o->inflight_batches, o->group_batches);
	printf("  throughput          %.0f events/s (%" PRIu64 " events acknowledged in %.3f s)\n",
	       f->ingest.events_per_s, w->event_count, f->ingest.ingest_s);
	printf("  CPU                 %.3f s, every thread of the process (%.3f us per event)\n",
	       f->ingest.cpu_s, f->ingest.cpu_s * 1e6 / (double)(w->event_count ? w->event_count : 1));
	printf("  page faults         %" PRIu64 " (%.4f per event); this host's first write to a "
	       "page costs %.2f us\n",
	       f->ingest.page_faults,
	       (double)f->ingest.page_faults / (double)(w->event_count ? w->event_count : 1),
	       f->machine.page_fault_us);
	printf("  store lock          held %.3f s, waited %.3f s, over %" PRIu64
	       " ingest calls (tally_stats); the longest one call held it %.3f ms\n",
	       (double)f->stats.ingest_lock_hold_us / 1e6, (double)f->stats.ingest_lock_wait_us / 1e6,
	       f->stats.ingest_calls, (double)f->stats.ingest_lock_hold_max_us / 1e3);
	printf("  ack latency         P50 %.0f us, P95 %.0f us, P99 %.0f us, max %.0f us (per batch, submit -> durable)\n",
	       f->ingest.ack_us[0], f->ingest.ack_us[1], f->ingest.ack_us[2], f->ingest.ack_us[3]);
	printf("  commit waits        %.3f s, summed over producers blocked on a full FIFO\n",
	       f->ingest.commit_wait_s);
	printf("  results             %" PRIu64 " accepted, %" PRIu64 " duplicate, %" PRIu64
	       " conflict, %" PRIu64 " rejected: %s\n",
	       f->ingest.result_count[TALLY_ACCEPTED], f->ingest.result_count[TALLY_DUPLICATE],
	       f->ingest.result_count[TALLY_CONFLICT], f->ingest.result_count[TALLY_REJECTED],
	       f->ingest.results_match ? "as expected" : "MISMATCH");
	printf("\nmaintenance\n");
	printf("  flush               %.1f ms\n", f->flush_ms);
	printf("  with the flush      %.0f events/s (ingest and this flush: every event in a segment file)\n",
	       events_with_flush_per_s(w->event_count, f));
	printf("  compaction          %.1f ms\n", f->compact_ms);
	printf("  close               %.1f ms\n", f->close_ms);
	printf("  flushes %" PRIu64 ", compactions %" PRIu64 " during the run\n",
	       f->stats.flush_count, f->stats.compaction_count);
	printf("  memtables, peak     %.1f MiB (memtable_bytes_max %.1f MiB)\n",
	       f->stats.memtable_bytes_peak / 1048576.0, memtable_limit(o) / 1048576.0);
	printf("  WAL commit fsyncs   %" PRIu64 " (%.1f events each, %.1f ms in all)\n",
	       f->stats.wal_fsync_count, bench_per_event(w->event_count, f->stats.wal_fsync_count),
	       f->stats.wal_fsync_us_total / 1e3);
	printf("\non disk (after flush, compaction and close), per stored event (%" PRIu64 ")\n",
	       stored);
	printf("  total               %.2f bytes/event (%" PRIu64 " bytes in %" PRIu64 " files)\n",
	       f->bytes_per_event, f->disk_bytes, f->disk_file_count);
	printf("    segment files     %.2f bytes/event (%" PRIu64 " files, %" PRIu64
	       " tenant-day segments)\n",
	       bench_per_event(f->disk_segment_bytes, stored), f->inspect.segment_file_count,
	       f->inspect.segment_count);
	printf("    WAL               %.2f bytes/event (%" PRIu64 " bytes)\n",
	       bench_per_event(f->disk_wal_bytes, stored), f->disk_wal_bytes);
	printf("    other             %.2f bytes/event (manifest, lock)\n",
	       bench_per_event(f->disk_bytes - f->disk_segment_bytes - f->disk_wal_bytes, stored));
	printf("    event data        %.2f bytes/event (the segment files without rollup pages: "
	       "columns, dictionaries, framing)\n",
	       bench_per_event(f->disk_segment_bytes - rollup_page_bytes(&f->inspect), stored));
	printf("    rollup pages      %.2f bytes/event\n",
	       bench_per_event(rollup_page_bytes(&f->inspect), stored));
	printf("  by column (stored, compressed; raw encoded in brackets)\n");
	for (int c = 0; c < TALLY_COL_COUNT; c++)
		printf("    %-16s  %6.2f  [%6.2f]\n", tally_column_name(c),
		       bench_per_event(f->inspect.column_stored_bytes[c], f->inspect.rows),
		       bench_per_event(f->inspect.column_raw_bytes[c], f->inspect.rows));
	printf("    %-16s  %6.2f  (headers, footers, dictionaries; dictionaries %.2f)\n",
	       "(overhead)", bench_per_event(segment_overhead_bytes(&f->inspect), f->inspect.rows),
	       bench_per_event(f->inspect.dictionary_bytes, f->inspect.rows));
	printf("\ndedup index           %.2f bytes of RAM per event (%" PRIu64 " bytes, %" PRIu64
	       " ids); %.2f after reopen\n",
	       f->dedup_bytes_per_event, f->stats.dedup_bytes, f->stats.dedup_entries,
	       f->reopen_dedup_bytes_per_event);
	printf("dedup expiry          day %" PRId64 " out of the horizon: %" PRIu64 " -> %" PRIu64
	       " ids (%s); pass %.1f ms, store lock held at most %.3f ms at once; "
	       "%.2f bytes of RAM per id after\n",
	       f->expiry.day_expired, f->expiry.entries_before, f->expiry.entries_after,
	       f->expiry.match ? "as expected" : "MISMATCH", f->expiry.pass_ms,
	       f->expiry.hold_max_ms, bench_per_event(f->expiry.bytes_after, f->expiry.entries_after));
	printf("recovery (reopen)     %.1f ms (%" PRIu64 " events in segments, %" PRIu64
	       " replayed into memtables): %s\n",
	       f->reopen_ms, f->reopen_stats.segment_rows, f->reopen_stats.events_memtable,
	       f->reopen_match ? "as expected" : "MISMATCH");
}

static int print_json(const bench_engine_options *o, const workload *w, const figures *f)
{
	uint64_t stored = w->unique_count;
	json_t *root = json_object();
	json_t *columns = json_object();
	json_t *columns_raw = json_object();
	if (!root || !columns || !columns_raw) {
		json_decref(root);
		json_decref(columns);
		json_decref(columns_raw);
		return -ENOMEM;
	}
	int bad = 0;
	for (int c = 0; c < TALLY_COL_COUNT; c++) {
		bad |= bench_json_put(columns, tally_column_name(c),
				json_real(bench_round(bench_per_event(f->inspect.column_stored_bytes[c],
							     f->inspect.rows), 3)));
		bad |= bench_json_put(columns_raw, tally_column_name(c),
				json_real(bench_round(bench_per_event(f->inspect.column_raw_bytes[c],
							     f->inspect.rows), 3)));
	}
	bad |= bench_json_put(root, "benchmark", json_string("engine"));
	bad |= bench_json_put(root, "events", json_integer((json_int_t)w->event_count));
	bad |= bench_json_put(root, "unique_events", json_integer((json_int_t)w->unique_count));
	bad |= bench_json_put(root, "resends", json_integer((json_int_t)w->resend_count));
	bad |= bench_json_put(root, "late_events", json_integer((json_int_t)w->late_count));
	bad |= bench_json_put(root, "tenants", json_integer(o->tenant_count));
	bad |= bench_json_put(root, "active_tenants", json_integer(w->active_tenant_count));
	/* The seed is a full uint64: a string keeps every bit in any JSON reader. */
	bad |= bench_json_put(root, "seed", bench_json_u64(o->seed));
	bad |= bench_json_put(root, "producers", json_integer(o->producer_count));
	bad |= bench_json_put(root, "memtable_bytes_max", json_integer((json_int_t)memtable_limit(o)));
	bad |= bench_json_put(root, "batch_window", json_integer(o->window_events));
	bad |= bench_json_put(root, "inflight_batches", json_integer(o->inflight_batches));
	bad |= bench_json_put(root, "group_batches", json_integer(o->group_batches));
	bad |= bench_json_put(root, "batches", json_integer((json_int_t)w->batch_count));
	bad |= bench_json_put(root, "machine_dram_latency_ns",
			      json_real(bench_round(f->machine.dram_latency_ns, 1)));
	bad |= bench_json_put(root, "machine_xxh3_gb_per_s",
			      json_real(bench_round(f->machine.xxh3_gb_per_s, 2)));
	bad |= bench_json_put(root, "machine_page_fault_us",
			      json_real(bench_round(f->machine.page_fault_us, 2)));
	bad |= bench_json_put(root, "generate_s", json_real(bench_round(f->generate_s, 3)));
	bad |= bench_json_put(root, "ingest_s", json_real(bench_round(f->ingest.ingest_s, 6)));
	bad |= bench_json_put(root, "events_per_s", json_integer((json_int_t)llround(f->ingest.events_per_s)));
	bad |= bench_json_put(root, "ingest_cpu_s", json_real(bench_round(f->ingest.cpu_s, 3)));
	bad |= bench_json_put(root, "ingest_cpu_us_per_event",
			      json_real(bench_round(f->ingest.cpu_s * 1e6 / (double)(w->event_count ? w->event_count : 1), 3)));
	bad |= bench_json_put(root, "ingest_page_faults",
			      json_integer((json_int_t)f->ingest.page_faults));
	bad |= bench_json_put(root, "ingest_calls", json_integer((json_int_t)f->stats.ingest_calls));
	bad |= bench_json_put(root, "lock_hold_s",
			      json_real(bench_round((double)f->stats.ingest_lock_hold_us / 1e6, 3)));
	bad |= bench_json_put(root, "lock_wait_s",
			      json_real(bench_round((double)f->stats.ingest_lock_wait_us / 1e6, 3)));
	bad |= bench_json_put(root, "lock_hold_max_ms",
			      json_real(bench_round((double)f->stats.ingest_lock_hold_max_us / 1e3, 3)));
	bad |= bench_json_put(root, "ack_p50_us", json_real(bench_round(f->ingest.ack_us[0], 1)));
	bad |= bench_json_put(root, "ack_p95_us", json_real(bench_round(f->ingest.ack_us[1], 1)));
	bad |= bench_json_put(root, "ack_p99_us", json_real(bench_round(f->ingest.ack_us[2], 1)));
	bad |= bench_json_put(root, "ack_max_us", json_real(bench_round(f->ingest.ack_us[3], 1)));
	bad |= bench_json_put(root, "commit_wait_s", json_real(bench_round(f->ingest.commit_wait_s, 3)));
	bad |= bench_json_put(root, "accepted", json_integer((json_int_t)f->ingest.result_count[TALLY_ACCEPTED]));
	bad |= bench_json_put(root, "duplicates", json_integer((json_int_t)f->ingest.result_count[TALLY_DUPLICATE]));
	bad |= bench_json_put(root, "conflicts", json_integer((json_int_t)f->ingest.result_count[TALLY_CONFLICT]));
	bad |= bench_json_put(root, "rejected", json_integer((json_int_t)f->ingest.result_count[TALLY_REJECTED]));
	bad |= bench_json_put(root, "results_match", json_boolean(f->ingest.results_match));
	bad |= bench_json_put(root, "flush_ms", json_real(bench_round(f->flush_ms, 3)));
	bad |= bench_json_put(root, "events_per_s_with_flush",
			      json_integer((json_int_t)llround(events_with_flush_per_s(w->event_count, f))));
	bad |= bench_json_put(root, "compact_ms", json_real(bench_round(f->compact_ms, 3)));
	bad |= bench_json_put(root, "close_ms", json_real(bench_round(f->close_ms, 3)));
	bad |= bench_json_put(root, "reopen_ms", json_real(bench_round(f->reopen_ms, 3)));
	bad |= bench_json_put(root, "reopen_match", json_boolean(f->reopen_match));
	bad |= bench_json_put(root, "bytes_per_event", json_real(bench_round(f->bytes_per_event, 3)));
	bad |= bench_json_put(root, "disk_bytes", json_integer((json_int_t)f->disk_bytes));
	bad |= bench_json_put(root, "segment_bytes_per_event",
			json_real(bench_round(bench_per_event(f->disk_segment_bytes, stored), 3)));
	bad |= bench_json_put(root, "event_data_bytes_per_event",
			json_real(bench_round(bench_per_event(f->disk_segment_bytes -
							      rollup_page_bytes(&f->inspect),
							      stored), 3)));
	bad |= bench_json_put(root, "rollup_bytes_per_event",
			json_real(bench_round(bench_per_event(rollup_page_bytes(&f->inspect),
							      stored), 3)));
	bad |= bench_json_put(root, "wal_bytes", json_integer((json_int_t)f->disk_wal_bytes));
	bad |= bench_json_put(root, "segment_files", json_integer((json_int_t)f->inspect.segment_file_count));
	bad |= bench_json_put(root, "segments", json_integer((json_int_t)f->inspect.segment_count));
	bad |= bench_json_put(root, "column_bytes_per_event", columns);
	bad |= bench_json_put(root, "column_raw_bytes_per_event", columns_raw);
	bad |= bench_json_put(root, "segment_overhead_bytes_per_event",
			json_real(bench_round(bench_per_event(segment_overhead_bytes(&f->inspect),
						     f->inspect.rows), 3)));
	bad |= bench_json_put(root, "dictionary_bytes_per_event",
			json_real(bench_round(bench_per_event(f->inspect.dictionary_bytes, f->inspect.rows), 3)));
	bad |= bench_json_put(root, "dedup_bytes_per_event", json_real(bench_round(f->dedup_bytes_per_event, 3)));
	bad |= bench_json_put(root, "dedup_bytes", json_integer((json_int_t)f->stats.dedup_bytes));
	bad |= bench_json_put(root, "dedup_entries", json_integer((json_int_t)f->stats.dedup_entries));
	bad |= bench_json_put(root, "expiry_ms", json_real(bench_round(f->expiry.pass_ms, 3)));
	bad |= bench_json_put(root, "expiry_lock_hold_max_ms",
			json_real(bench_round(f->expiry.hold_max_ms, 3)));
	bad |= bench_json_put(root, "expiry_entries_expired",
			json_integer((json_int_t)(f->expiry.entries_before - f->expiry.entries_after)));
	bad |= bench_json_put(root, "expiry_match", json_boolean(f->expiry.match));
	bad |= bench_json_put(root, "expiry_dedup_bytes_per_event",
			json_real(bench_round(bench_per_event(f->expiry.bytes_after,
							      f->expiry.entries_after), 3)));
	bad |= bench_json_put(root, "reopen_dedup_bytes_per_event",
			json_real(bench_round(f->reopen_dedup_bytes_per_event, 3)));
	bad |= bench_json_put(root, "flush_count", json_integer((json_int_t)f->stats.flush_count));
	bad |= bench_json_put(root, "compaction_count", json_integer((json_int_t)f->stats.compaction_count));
	bad |= bench_json_put(root, "memtable_bytes_peak", json_integer((json_int_t)f->stats.memtable_bytes_peak));
	bad |= bench_json_put(root, "wal_fsyncs", json_integer((json_int_t)f->stats.wal_fsync_count));
	bad |= bench_json_put(root, "wal_fsync_ms", json_real(bench_round(f->stats.wal_fsync_us_total / 1e3, 3)));
	bad |= bench_json_put(root, "events_per_fsync",
			json_real(bench_round(bench_per_event(w->event_count, f->stats.wal_fsync_count), 3)));
	return bench_json_print(root, bad);
}

/* ---- The run ------------------------------------------------------------------- */

int bench_engine_run(const bench_engine_options *o)
{
	const char *dir = o->data_dir;
	int rc = bench_make_dirs(dir);
	if (rc) {
		fprintf(stderr, "tally-bench: cannot create data directory %s: %s\n", dir,
			strerror(-rc));
		return 2;
	}
	if ((rc = bench_dir_is_empty(dir)) != 1) {
		if (rc < 0)
			fprintf(stderr, "tally-bench: cannot read data directory %s: %s\n", dir,
				strerror(-rc));
		else
			fprintf(stderr,
				"tally-bench: data directory %s is not empty; the benchmark needs a "
				"fresh store (remove it or name a new directory)\n",
				dir);
		return 2;
	}

	figures f;
	memset(&f, 0, sizeof(f));
	workload w;
	workload_params params = {
		.event_count = o->event_count,
		.tenant_count = o->tenant_count,
		.seed = o->seed,
		.window_events = o->window_events,
		.end_us = bench_wall_clock_us(),
	};
	fprintf(stderr, "tally-bench: measuring the machine...\n");
	if ((rc = bench_calibrate(&f.machine))) {
		fprintf(stderr, "tally-bench: cannot measure the machine: %s\n", strerror(-rc));
		return 1;
	}
	fprintf(stderr, "tally-bench: generating %" PRIu64 " events for %" PRIu32 " tenants (seed %" PRIu64 ")...\n",
		o->event_count, o->tenant_count, o->seed);
	int64_t t0 = bench_clock_ns();
	if ((rc = workload_generate(&w, &params))) {
		fprintf(stderr, "tally-bench: cannot generate the workload: %s\n", strerror(-rc));
		return 1;
	}
	f.generate_s = bench_ms_between(t0, bench_clock_ns()) / 1e3;

	int status = 1;
	tally_store *store = NULL;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	tally_options store_options;
	tally_options_default(&store_options);
	bench_shift_io shift_io;
	bench_shift_io_init(&shift_io);
	store_options.io = &shift_io.io;
	if (o->memtable_bytes_max)
		store_options.memtable_bytes_max = o->memtable_bytes_max;
	if ((rc = tally_store_open(dir, &store_options, &store, errmsg))) {
		bench_engine_failed("tally_store_open", rc, NULL, errmsg);
		goto out;
	}
	fprintf(stderr, "tally-bench: ingesting with %" PRIu32 " producers...\n", o->producer_count);
	bench_ingest_options ingest_options = {
		.producer_count = o->producer_count,
		.inflight_batches = o->inflight_batches,
		.group_batches = o->group_batches,
	};
	if (bench_ingest_run(&ingest_options, &w, store, &f.ingest))
		goto out;

	fprintf(stderr, "tally-bench: flushing...\n");
	t0 = bench_clock_ns();
	if ((rc = tally_flush(store))) {
		bench_engine_failed("tally_flush", rc, store, NULL);
		goto out;
	}
	f.flush_ms = bench_ms_between(t0, bench_clock_ns());
	fprintf(stderr, "tally-bench: compacting...\n");
	t0 = bench_clock_ns();
	if ((rc = tally_compact(store))) {
		bench_engine_failed("tally_compact", rc, store, NULL);
		goto out;
	}
	f.compact_ms = bench_ms_between(t0, bench_clock_ns());
	if ((rc = tally_store_stats(store, &f.stats))) {
		bench_engine_failed("tally_store_stats", rc, store, NULL);
		goto out;
	}
	f.dedup_bytes_per_event = bench_per_event(f.stats.dedup_bytes, f.stats.dedup_entries);
	fprintf(stderr, "tally-bench: expiring the oldest day's fingerprints...\n");
	if ((rc = bench_expiry_run(store, &shift_io, &store_options, &w, &f.expiry))) {
		bench_engine_failed("the expiry phase", rc, store, NULL);
		goto out;
	}
	if (!f.expiry.match)
		fprintf(stderr,
			"tally-bench: the expiry of day %" PRId64 " left %" PRIu64
			" fingerprints, expected %" PRIu64 "\n",
			f.expiry.day_expired, f.expiry.entries_after, f.expiry.entries_expected);
	atomic_store(&shift_io.offset_us, 0);
	t0 = bench_clock_ns();
	rc = tally_store_close(store);
	store = NULL;
	if (rc) {
		fprintf(stderr, "tally-bench: tally_store_close failed: %s\n", tally_strerror(rc));
		goto out;
	}
	f.close_ms = bench_ms_between(t0, bench_clock_ns());

	if ((rc = tally_inspect(dir, &f.inspect, NULL, NULL, errmsg))) {
		bench_engine_failed("tally_inspect", rc, NULL, errmsg);
		goto out;
	}
	if ((rc = disk_usage(dir))) {
		fprintf(stderr, "tally-bench: cannot measure %s: %s\n", dir, strerror(-rc));
		goto out;
	}
	f.disk_bytes = walk.total;
	f.disk_wal_bytes = walk.wal;
	f.disk_segment_bytes = walk.segments;
	f.disk_file_count = walk.file_count;
	f.bytes_per_event = bench_per_event(f.disk_bytes, w.unique_count);

	fprintf(stderr, "tally-bench: reopening...\n");
	t0 = bench_clock_ns();
	if ((rc = tally_store_open(dir, NULL, &store, errmsg))) {
		bench_engine_failed("tally_store_open (reopen)", rc, NULL, errmsg);
		goto out;
	}
	f.reopen_ms = bench_ms_between(t0, bench_clock_ns());
	if ((rc = tally_store_stats(store, &f.reopen_stats))) {
		bench_engine_failed("tally_store_stats", rc, store, NULL);
		goto out;
	}
	f.reopen_dedup_bytes_per_event =
		bench_per_event(f.reopen_stats.dedup_bytes, f.reopen_stats.dedup_entries);
	f.reopen_match = f.reopen_stats.segment_rows + f.reopen_stats.events_memtable ==
				 w.unique_count &&
			 f.reopen_stats.dedup_entries == w.unique_count;
	if (!f.reopen_match)
		fprintf(stderr,
			"tally-bench: reopened store does not match the workload: expected %" PRIu64
			" events and dedup entries, found %" PRIu64 " in segments + %" PRIu64
			" in memtables, %" PRIu64 " dedup entries\n",
			w.unique_count, f.reopen_stats.segment_rows, f.reopen_stats.events_memtable,
			f.reopen_stats.dedup_entries);
	rc = tally_store_close(store);
	store = NULL;
	if (rc) {
		fprintf(stderr, "tally-bench: tally_store_close (after reopen) failed: %s\n",
			tally_strerror(rc));
		goto out;
	}

	if (bench_report_end(o->json ? print_json(o, &w, &f) : (print_text(o, &w, &f), 0)))
		goto out;
	status = f.ingest.results_match && f.reopen_match && f.expiry.match ? 0 : 1;
	if (status == 0) {
		/* Last, so no measurement above sees the file. */
		workload_marker marker = {.params = params, .compacted = true};
		snprintf(marker.written_by, sizeof(marker.written_by), "tally-bench engine");
		char marker_errmsg[WORKLOAD_MARKER_ERRMSG_SIZE];
		if ((rc = workload_marker_write(dir, &marker, marker_errmsg))) {
			fprintf(stderr, "tally-bench: cannot write the workload marker: %s\n",
				marker_errmsg);
			status = 1;
		}
	}
out:
	if (store)
		tally_store_close(store);
	workload_free(&w);
	return status;
}
