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
 * 2. Producers emulate a server that acknowledges after group commit. Each
 *    producer thread claims the next window of the delivery order (an atomic
 *    counter, so windows go out roughly in order), submits each of its
 *    per-tenant batches with tally_ingest_submit, and keeps a bounded FIFO
 *    of (commit LSN, submit time, batch) not yet acknowledged. After each
 *    submit it acknowledges every queued batch whose LSN tally_durable_lsn()
 *    has reached; when the FIFO is full it blocks in tally_commit_wait on the
 *    oldest. A batch's ack latency is the time from just before its submit
 *    to the moment its producer saw it durable.
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
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "engine_bench.h"
#include "tally.h"
#include "workload.h"

#define PATH_SIZE_MAX 4096
#define NFTW_FDS_MAX 16

static int64_t clock_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t wall_clock_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * TALLY_US_PER_SECOND + ts.tv_nsec / 1000;
}

static double ms_between(int64_t from_ns, int64_t to_ns)
{
	return (double)(to_ns - from_ns) / 1e6;
}

/* x rounded to `places` decimals, so JSON shows 25.13, not 25.129999... */
static double round_to(double x, int places)
{
	double scale = pow(10.0, places);
	return round(x * scale) / scale;
}

/* ---- The data directory --------------------------------------------------- */

/* mkdir -p. 0 or -errno. */
static int make_dirs(const char *path)
{
	char buffer[PATH_SIZE_MAX];
	size_t size = strlen(path);
	if (size == 0 || size >= sizeof(buffer))
		return -ENAMETOOLONG;
	memcpy(buffer, path, size + 1);
	for (size_t i = 1; i <= size; i++) {
		if (buffer[i] != '/' && buffer[i] != 0)
			continue;
		char saved = buffer[i];
		buffer[i] = 0;
		if (mkdir(buffer, 0755) != 0 && errno != EEXIST)
			return -errno;
		buffer[i] = saved;
	}
	struct stat st;
	if (stat(path, &st) != 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* 1 if dir has no entries but "." and "..", 0 if it has some, or -errno. */
static int dir_is_empty(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return -errno;
	int empty = 1;
	struct dirent *entry;
	while ((entry = readdir(d))) {
		if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) {
			empty = 0;
			break;
		}
	}
	closedir(d);
	return empty;
}

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

/* ---- Producers -------------------------------------------------------------- */

typedef struct pending {
	uint64_t lsn;
	uint64_t batch;
	int64_t submit_ns;
} pending;

typedef struct run run;

typedef struct producer {
	pthread_t thread;
	run *run;
	pending *queue;           /* FIFO ring of inflight_batches entries */
	tally_batch *group;       /* group_batches entries: one submit_many call */
	uint32_t head;
	uint32_t count;
	int64_t first_submit_ns;  /* 0 until the first submit */
	int64_t last_ack_ns;
	uint64_t events_acked;
	int rc;                   /* the first failure, 0 if none */
	const char *failed_call;
} producer;

struct run {
	const bench_engine_options *options;
	const workload *w;
	tally_store *store;
	tally_ingest_result *results; /* one per event, same layout as w->events */
	int64_t *latency_ns;          /* one per batch */
	atomic_uint_fast64_t next_window;
	atomic_int failed;
	/* The start gate: producers wait until every one of them exists (or
	 * starting one failed, and failed is set), so timing starts together. */
	pthread_mutex_t gate_lock;
	pthread_cond_t gate_cond;
	int gate_open;
};

/* Acknowledges queued batches that are durable, oldest first. With
 * wait_oldest, first blocks until the oldest is durable. 0 or the engine's
 * code. */
static int producer_ack(producer *p, int wait_oldest)
{
	run *r = p->run;
	uint32_t capacity = r->options->inflight_batches;
	uint64_t durable = tally_durable_lsn(r->store);
	while (p->count) {
		pending *q = &p->queue[p->head];
		if (q->lsn > durable) {
			if (!wait_oldest)
				return 0;
			int rc = tally_commit_wait(r->store, q->lsn);
			if (rc) {
				p->failed_call = "tally_commit_wait";
				return rc;
			}
			wait_oldest = 0;
			durable = tally_durable_lsn(r->store);
			if (durable < q->lsn)
				durable = q->lsn;
		}
		int64_t now = clock_ns();
		r->latency_ns[q->batch] = now - q->submit_ns;
		p->events_acked += r->w->batches[q->batch].count;
		p->last_ack_ns = now;
		p->head = p->head + 1 == capacity ? 0 : p->head + 1;
		p->count--;
	}
	return 0;
}

/* Submits batches [first, first + count) with one tally_ingest_submit_many
 * call (tally_ingest_submit when count is 1); count <= inflight capacity. */
static int producer_submit(producer *p, uint64_t first, uint32_t count)
{
	run *r = p->run;
	uint32_t capacity = r->options->inflight_batches;
	int rc;
	while (p->count + count > capacity)
		if ((rc = producer_ack(p, 1)))
			return rc;
	for (uint32_t i = 0; i < count; i++) {
		const workload_batch *batch = &r->w->batches[first + i];
		p->group[i] = (tally_batch){
			.tenant = r->w->tenant_names[batch->tenant],
			.events = r->w->events + batch->first,
			.count = batch->count,
			.results = r->results + batch->first,
		};
	}
	uint64_t lsn = 0;
	int64_t now = clock_ns();
	if (!p->first_submit_ns)
		p->first_submit_ns = now;
	if (count == 1) {
		rc = tally_ingest_submit(r->store, p->group[0].tenant, p->group[0].events,
					 p->group[0].count, p->group[0].results, &lsn);
		p->failed_call = "tally_ingest_submit";
	} else {
		rc = tally_ingest_submit_many(r->store, p->group, count, &lsn);
		p->failed_call = "tally_ingest_submit_many";
		for (uint32_t i = 0; !rc && i < count; i++)
			rc = p->group[i].status;
	}
	if (rc)
		return rc;
	p->failed_call = NULL;
	for (uint32_t i = 0; i < count; i++) {
		uint32_t tail = p->head + p->count;
		if (tail >= capacity)
			tail -= capacity;
		p->queue[tail] = (pending){.lsn = lsn, .batch = first + i, .submit_ns = now};
		p->count++;
	}
	return producer_ack(p, 0);
}

static void *producer_main(void *arg)
{
	producer *p = arg;
	run *r = p->run;
	const workload *w = r->w;
	int rc = 0;
	pthread_mutex_lock(&r->gate_lock);
	while (!r->gate_open)
		pthread_cond_wait(&r->gate_cond, &r->gate_lock);
	pthread_mutex_unlock(&r->gate_lock);
	while (!atomic_load(&r->failed)) {
		uint64_t win = atomic_fetch_add(&r->next_window, 1);
		if (win >= w->window_count)
			break;
		uint32_t group = r->options->group_batches;
		if (group > r->options->inflight_batches)
			group = r->options->inflight_batches;
		for (uint64_t b = w->window_batch[win]; b < w->window_batch[win + 1]; b += group) {
			uint64_t left = w->window_batch[win + 1] - b;
			if ((rc = producer_submit(p, b, left < group ? (uint32_t)left : group)))
				goto fail;
		}
	}
	while (p->count)
		if ((rc = producer_ack(p, 1)))
			goto fail;
	return NULL;
fail:
	p->rc = rc;
	atomic_store(&r->failed, 1);
	return NULL;
}

/* ---- Results ----------------------------------------------------------------- */

typedef struct figures {
	/* workload */
	double generate_s;
	/* ingest */
	double ingest_s;
	double events_per_s;
	double ack_us[4]; /* P50, P95, P99, max */
	uint64_t result_count[4]; /* by enum tally_result_code */
	int first_reject_reason;
	bool results_match;
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
	bool reopen_match;
	/* disk */
	tally_inspect_report inspect;
	uint64_t disk_bytes;
	uint64_t disk_wal_bytes;
	uint64_t disk_segment_bytes;
	uint64_t disk_file_count;
	double bytes_per_event;
} figures;

static double percentile_us(const int64_t *sorted, uint64_t n, double p)
{
	if (!n)
		return 0.0;
	uint64_t rank = (uint64_t)ceil(p * (double)n); /* nearest rank */
	if (rank < 1)
		rank = 1;
	return (double)sorted[rank - 1] / 1e3;
}

static int compare_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static double per_event(uint64_t bytes, uint64_t events)
{
	return events ? (double)bytes / (double)events : 0.0;
}

/* Column bytes that are not in any column: headers, footers, dictionaries. */
static uint64_t segment_overhead_bytes(const tally_inspect_report *report)
{
	uint64_t columns = 0;
	for (int c = 0; c < TALLY_COL_COUNT; c++)
		columns += report->column_stored_bytes[c];
	return report->file_bytes > columns ? report->file_bytes - columns : 0;
}

static void print_text(const bench_engine_options *o, const workload *w, const figures *f)
{
	uint64_t stored = w->unique_count;
	printf("tally-bench engine: %" PRIu64 " events (%" PRIu64 " unique + %" PRIu64
	       " re-sends, %" PRIu64 " delivered late), %" PRIu32 " tenants (%" PRIu32
	       " active), seed %" PRIu64 "\n",
	       w->event_count, w->unique_count, w->resend_count, w->late_count, o->tenant_count,
	       w->active_tenant_count, o->seed);
	printf("  workload generated in %.2f s (not timed); %" PRIu64 " batches in %" PRIu64
	       " windows of %" PRIu32 " events, %.1f events/batch\n",
	       f->generate_s, w->batch_count, w->window_count, o->window_events,
	       per_event(w->event_count, w->batch_count));
	printf("\ningest: %" PRIu32 " producers, up to %" PRIu32
	       " batches in flight each, %" PRIu32 " batches per submit, durable group commit\n",
	       o->producer_count, o->inflight_batches, o->group_batches);
	printf("  throughput          %.0f events/s (%" PRIu64 " events acknowledged in %.3f s)\n",
	       f->events_per_s, w->event_count, f->ingest_s);
	printf("  ack latency         P50 %.0f us, P95 %.0f us, P99 %.0f us, max %.0f us (per batch, submit -> durable)\n",
	       f->ack_us[0], f->ack_us[1], f->ack_us[2], f->ack_us[3]);
	printf("  results             %" PRIu64 " accepted, %" PRIu64 " duplicate, %" PRIu64
	       " conflict, %" PRIu64 " rejected: %s\n",
	       f->result_count[TALLY_ACCEPTED], f->result_count[TALLY_DUPLICATE],
	       f->result_count[TALLY_CONFLICT], f->result_count[TALLY_REJECTED],
	       f->results_match ? "as expected" : "MISMATCH");
	printf("\nmaintenance\n");
	printf("  flush               %.1f ms\n", f->flush_ms);
	printf("  compaction          %.1f ms\n", f->compact_ms);
	printf("  close               %.1f ms\n", f->close_ms);
	printf("  flushes %" PRIu64 ", compactions %" PRIu64 " during the run\n",
	       f->stats.flush_count, f->stats.compaction_count);
	printf("\non disk (after flush, compaction and close), per stored event (%" PRIu64 ")\n",
	       stored);
	printf("  total               %.2f bytes/event (%" PRIu64 " bytes in %" PRIu64 " files)\n",
	       f->bytes_per_event, f->disk_bytes, f->disk_file_count);
	printf("    segment files     %.2f bytes/event (%" PRIu64 " files, %" PRIu64
	       " tenant-day segments)\n",
	       per_event(f->disk_segment_bytes, stored), f->inspect.segment_file_count,
	       f->inspect.segment_count);
	printf("    WAL               %.2f bytes/event (%" PRIu64 " bytes)\n",
	       per_event(f->disk_wal_bytes, stored), f->disk_wal_bytes);
	printf("    other             %.2f bytes/event (manifest, lock)\n",
	       per_event(f->disk_bytes - f->disk_segment_bytes - f->disk_wal_bytes, stored));
	printf("  by column (stored, compressed; raw encoded in brackets)\n");
	for (int c = 0; c < TALLY_COL_COUNT; c++)
		printf("    %-16s  %6.2f  [%6.2f]\n", tally_column_name(c),
		       per_event(f->inspect.column_stored_bytes[c], f->inspect.rows),
		       per_event(f->inspect.column_raw_bytes[c], f->inspect.rows));
	printf("    %-16s  %6.2f  (headers, footers, dictionaries; dictionaries %.2f)\n",
	       "(overhead)", per_event(segment_overhead_bytes(&f->inspect), f->inspect.rows),
	       per_event(f->inspect.dictionary_bytes, f->inspect.rows));
	printf("\ndedup index           %.2f bytes of RAM per event (%" PRIu64 " bytes, %" PRIu64
	       " ids); %.2f after reopen\n",
	       f->dedup_bytes_per_event, f->stats.dedup_bytes, f->stats.dedup_entries,
	       f->reopen_dedup_bytes_per_event);
	printf("recovery (reopen)     %.1f ms (%" PRIu64 " events in segments, %" PRIu64
	       " replayed into memtables): %s\n",
	       f->reopen_ms, f->reopen_stats.segment_rows, f->reopen_stats.events_memtable,
	       f->reopen_match ? "as expected" : "MISMATCH");
}

/* Adds key = value to object; jansson takes ownership of value. */
static int json_put(json_t *object, const char *key, json_t *value)
{
	return value ? json_object_set_new(object, key, value) : -1;
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
		bad |= json_put(columns, tally_column_name(c),
				json_real(round_to(per_event(f->inspect.column_stored_bytes[c],
							     f->inspect.rows), 3)));
		bad |= json_put(columns_raw, tally_column_name(c),
				json_real(round_to(per_event(f->inspect.column_raw_bytes[c],
							     f->inspect.rows), 3)));
	}
	bad |= json_put(root, "benchmark", json_string("engine"));
	bad |= json_put(root, "events", json_integer((json_int_t)w->event_count));
	bad |= json_put(root, "unique_events", json_integer((json_int_t)w->unique_count));
	bad |= json_put(root, "resends", json_integer((json_int_t)w->resend_count));
	bad |= json_put(root, "late_events", json_integer((json_int_t)w->late_count));
	bad |= json_put(root, "tenants", json_integer(o->tenant_count));
	bad |= json_put(root, "active_tenants", json_integer(w->active_tenant_count));
	/* The seed is a full uint64: a string keeps every bit in any JSON reader. */
	char seed[24];
	snprintf(seed, sizeof(seed), "%" PRIu64, o->seed);
	bad |= json_put(root, "seed", o->seed <= INT64_MAX ? json_integer((json_int_t)o->seed)
							   : json_string(seed));
	bad |= json_put(root, "producers", json_integer(o->producer_count));
	bad |= json_put(root, "batch_window", json_integer(o->window_events));
	bad |= json_put(root, "inflight_batches", json_integer(o->inflight_batches));
	bad |= json_put(root, "group_batches", json_integer(o->group_batches));
	bad |= json_put(root, "batches", json_integer((json_int_t)w->batch_count));
	bad |= json_put(root, "generate_s", json_real(round_to(f->generate_s, 3)));
	bad |= json_put(root, "ingest_s", json_real(round_to(f->ingest_s, 6)));
	bad |= json_put(root, "events_per_s", json_integer((json_int_t)llround(f->events_per_s)));
	bad |= json_put(root, "ack_p50_us", json_real(round_to(f->ack_us[0], 1)));
	bad |= json_put(root, "ack_p95_us", json_real(round_to(f->ack_us[1], 1)));
	bad |= json_put(root, "ack_p99_us", json_real(round_to(f->ack_us[2], 1)));
	bad |= json_put(root, "ack_max_us", json_real(round_to(f->ack_us[3], 1)));
	bad |= json_put(root, "accepted", json_integer((json_int_t)f->result_count[TALLY_ACCEPTED]));
	bad |= json_put(root, "duplicates", json_integer((json_int_t)f->result_count[TALLY_DUPLICATE]));
	bad |= json_put(root, "conflicts", json_integer((json_int_t)f->result_count[TALLY_CONFLICT]));
	bad |= json_put(root, "rejected", json_integer((json_int_t)f->result_count[TALLY_REJECTED]));
	bad |= json_put(root, "results_match", json_boolean(f->results_match));
	bad |= json_put(root, "flush_ms", json_real(round_to(f->flush_ms, 3)));
	bad |= json_put(root, "compact_ms", json_real(round_to(f->compact_ms, 3)));
	bad |= json_put(root, "close_ms", json_real(round_to(f->close_ms, 3)));
	bad |= json_put(root, "reopen_ms", json_real(round_to(f->reopen_ms, 3)));
	bad |= json_put(root, "reopen_match", json_boolean(f->reopen_match));
	bad |= json_put(root, "bytes_per_event", json_real(round_to(f->bytes_per_event, 3)));
	bad |= json_put(root, "disk_bytes", json_integer((json_int_t)f->disk_bytes));
	bad |= json_put(root, "segment_bytes_per_event",
			json_real(round_to(per_event(f->disk_segment_bytes, stored), 3)));
	bad |= json_put(root, "wal_bytes", json_integer((json_int_t)f->disk_wal_bytes));
	bad |= json_put(root, "segment_files", json_integer((json_int_t)f->inspect.segment_file_count));
	bad |= json_put(root, "segments", json_integer((json_int_t)f->inspect.segment_count));
	bad |= json_put(root, "column_bytes_per_event", columns);
	bad |= json_put(root, "column_raw_bytes_per_event", columns_raw);
	bad |= json_put(root, "segment_overhead_bytes_per_event",
			json_real(round_to(per_event(segment_overhead_bytes(&f->inspect),
						     f->inspect.rows), 3)));
	bad |= json_put(root, "dictionary_bytes_per_event",
			json_real(round_to(per_event(f->inspect.dictionary_bytes, f->inspect.rows), 3)));
	bad |= json_put(root, "dedup_bytes_per_event", json_real(round_to(f->dedup_bytes_per_event, 3)));
	bad |= json_put(root, "dedup_bytes", json_integer((json_int_t)f->stats.dedup_bytes));
	bad |= json_put(root, "dedup_entries", json_integer((json_int_t)f->stats.dedup_entries));
	bad |= json_put(root, "reopen_dedup_bytes_per_event",
			json_real(round_to(f->reopen_dedup_bytes_per_event, 3)));
	bad |= json_put(root, "flush_count", json_integer((json_int_t)f->stats.flush_count));
	bad |= json_put(root, "compaction_count", json_integer((json_int_t)f->stats.compaction_count));
	if (bad) {
		json_decref(root);
		return -ENOMEM;
	}
	int rc = json_dumpf(root, stdout, JSON_REAL_PRECISION(12));
	json_decref(root);
	if (rc != 0)
		return -EIO;
	putchar('\n');
	return 0;
}

/* ---- The run ------------------------------------------------------------------- */

static int engine_failed(const char *call, int rc, const tally_store *store, const char *errmsg)
{
	const char *detail = store ? tally_store_errmsg(store) : errmsg;
	fprintf(stderr, "tally-bench: %s failed: %s%s%s\n", call, tally_strerror(rc),
		detail && *detail ? ": " : "", detail && *detail ? detail : "");
	return 1;
}

/* Runs the producers over the whole workload; fills the ingest figures. */
static int ingest(const bench_engine_options *o, const workload *w, tally_store *store,
		  figures *f)
{
	int status = 1;
	run r = {.options = o, .w = w, .store = store};
	producer *producers = calloc(o->producer_count, sizeof(*producers));
	r.results = malloc(sizeof(*r.results) * w->event_count);
	r.latency_ns = malloc(sizeof(*r.latency_ns) * (w->batch_count ? w->batch_count : 1));
	if (!producers || !r.results || !r.latency_ns) {
		fprintf(stderr, "tally-bench: out of memory for %" PRIu64 " results\n", w->event_count);
		goto out;
	}
	atomic_init(&r.next_window, 0);
	atomic_init(&r.failed, 0);
	pthread_mutex_init(&r.gate_lock, NULL);
	pthread_cond_init(&r.gate_cond, NULL);
	r.gate_open = 0;
	uint32_t started = 0;
	for (; started < o->producer_count; started++) {
		producer *p = &producers[started];
		p->run = &r;
		p->queue = malloc(sizeof(*p->queue) * o->inflight_batches);
		p->group = malloc(sizeof(*p->group) * (o->group_batches ? o->group_batches : 1));
		if (!p->queue || !p->group || pthread_create(&p->thread, NULL, producer_main, p) != 0) {
			fprintf(stderr, "tally-bench: cannot start producer %" PRIu32 "\n", started);
			atomic_store(&r.failed, 1); /* the started ones exit at once */
			break;
		}
	}
	pthread_mutex_lock(&r.gate_lock);
	r.gate_open = 1;
	pthread_cond_broadcast(&r.gate_cond);
	pthread_mutex_unlock(&r.gate_lock);
	for (uint32_t i = 0; i < started; i++)
		pthread_join(producers[i].thread, NULL);
	pthread_cond_destroy(&r.gate_cond);
	pthread_mutex_destroy(&r.gate_lock);
	if (started < o->producer_count)
		goto out;

	int64_t first_ns = INT64_MAX, last_ns = 0;
	uint64_t acked = 0;
	for (uint32_t i = 0; i < o->producer_count; i++) {
		producer *p = &producers[i];
		if (p->rc) {
			engine_failed(p->failed_call, p->rc, store, NULL);
			goto out;
		}
		if (p->first_submit_ns && p->first_submit_ns < first_ns)
			first_ns = p->first_submit_ns;
		if (p->last_ack_ns > last_ns)
			last_ns = p->last_ack_ns;
		acked += p->events_acked;
	}
	f->ingest_s = (double)(last_ns - first_ns) / 1e9;
	f->events_per_s = f->ingest_s > 0 ? (double)acked / f->ingest_s : 0.0;

	qsort(r.latency_ns, w->batch_count, sizeof(*r.latency_ns), compare_i64);
	f->ack_us[0] = percentile_us(r.latency_ns, w->batch_count, 0.50);
	f->ack_us[1] = percentile_us(r.latency_ns, w->batch_count, 0.95);
	f->ack_us[2] = percentile_us(r.latency_ns, w->batch_count, 0.99);
	f->ack_us[3] = percentile_us(r.latency_ns, w->batch_count, 1.00);

	f->first_reject_reason = TALLY_REASON_NONE;
	for (uint64_t i = 0; i < w->event_count; i++) {
		uint8_t code = r.results[i].code;
		f->result_count[code < 4 ? code : TALLY_REJECTED]++;
		if (code == TALLY_REJECTED && f->first_reject_reason == TALLY_REASON_NONE)
			f->first_reject_reason = r.results[i].reason;
	}
	f->results_match = acked == w->event_count &&
			   f->result_count[TALLY_ACCEPTED] == w->unique_count &&
			   f->result_count[TALLY_DUPLICATE] == w->resend_count &&
			   f->result_count[TALLY_CONFLICT] == 0 && f->result_count[TALLY_REJECTED] == 0;
	if (!f->results_match) {
		fprintf(stderr,
			"tally-bench: engine results do not match the workload: expected %" PRIu64
			" ACCEPTED and %" PRIu64 " DUPLICATE, got %" PRIu64 " ACCEPTED, %" PRIu64
			" DUPLICATE, %" PRIu64 " CONFLICT, %" PRIu64 " REJECTED (%" PRIu64
			" of %" PRIu64 " acknowledged)\n",
			w->unique_count, w->resend_count, f->result_count[TALLY_ACCEPTED],
			f->result_count[TALLY_DUPLICATE], f->result_count[TALLY_CONFLICT],
			f->result_count[TALLY_REJECTED], acked, w->event_count);
		if (f->first_reject_reason != TALLY_REASON_NONE)
			fprintf(stderr, "tally-bench: first rejection: %s\n",
				tally_reason_text(f->first_reject_reason));
	}
	status = 0;
out:
	if (producers)
		for (uint32_t i = 0; i < o->producer_count; i++)
		{
			free(producers[i].queue);
			free(producers[i].group);
		}
	free(producers);
	free(r.results);
	free(r.latency_ns);
	return status;
}

int bench_engine_run(const bench_engine_options *o)
{
	const char *dir = o->data_dir;
	int rc = make_dirs(dir);
	if (rc) {
		fprintf(stderr, "tally-bench: cannot create data directory %s: %s\n", dir,
			strerror(-rc));
		return 2;
	}
	if ((rc = dir_is_empty(dir)) != 1) {
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
		.end_us = wall_clock_us(),
	};
	fprintf(stderr, "tally-bench: generating %" PRIu64 " events for %" PRIu32 " tenants (seed %" PRIu64 ")...\n",
		o->event_count, o->tenant_count, o->seed);
	int64_t t0 = clock_ns();
	if ((rc = workload_generate(&w, &params))) {
		fprintf(stderr, "tally-bench: cannot generate the workload: %s\n", strerror(-rc));
		return 1;
	}
	f.generate_s = ms_between(t0, clock_ns()) / 1e3;

	int status = 1;
	tally_store *store = NULL;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	if ((rc = tally_store_open(dir, NULL, &store, errmsg))) {
		engine_failed("tally_store_open", rc, NULL, errmsg);
		goto out;
	}
	fprintf(stderr, "tally-bench: ingesting with %" PRIu32 " producers...\n", o->producer_count);
	if (ingest(o, &w, store, &f))
		goto out;

	t0 = clock_ns();
	if ((rc = tally_flush(store))) {
		engine_failed("tally_flush", rc, store, NULL);
		goto out;
	}
	f.flush_ms = ms_between(t0, clock_ns());
	t0 = clock_ns();
	if ((rc = tally_compact(store))) {
		engine_failed("tally_compact", rc, store, NULL);
		goto out;
	}
	f.compact_ms = ms_between(t0, clock_ns());
	if ((rc = tally_store_stats(store, &f.stats))) {
		engine_failed("tally_store_stats", rc, store, NULL);
		goto out;
	}
	f.dedup_bytes_per_event = per_event(f.stats.dedup_bytes, f.stats.dedup_entries);
	t0 = clock_ns();
	rc = tally_store_close(store);
	store = NULL;
	if (rc) {
		fprintf(stderr, "tally-bench: tally_store_close failed: %s\n", tally_strerror(rc));
		goto out;
	}
	f.close_ms = ms_between(t0, clock_ns());

	if ((rc = tally_inspect(dir, &f.inspect, NULL, NULL, errmsg))) {
		engine_failed("tally_inspect", rc, NULL, errmsg);
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
	f.bytes_per_event = per_event(f.disk_bytes, w.unique_count);

	fprintf(stderr, "tally-bench: reopening...\n");
	t0 = clock_ns();
	if ((rc = tally_store_open(dir, NULL, &store, errmsg))) {
		engine_failed("tally_store_open (reopen)", rc, NULL, errmsg);
		goto out;
	}
	f.reopen_ms = ms_between(t0, clock_ns());
	if ((rc = tally_store_stats(store, &f.reopen_stats))) {
		engine_failed("tally_store_stats", rc, store, NULL);
		goto out;
	}
	f.reopen_dedup_bytes_per_event =
		per_event(f.reopen_stats.dedup_bytes, f.reopen_stats.dedup_entries);
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

	if (o->json) {
		if ((rc = print_json(o, &w, &f))) {
			fprintf(stderr, "tally-bench: cannot write JSON: %s\n", strerror(-rc));
			goto out;
		}
	} else {
		print_text(o, &w, &f);
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, "tally-bench: cannot write the report: %s\n", strerror(errno));
		goto out;
	}
	status = f.results_match && f.reopen_match ? 0 : 1;
out:
	if (store)
		tally_store_close(store);
	workload_free(&w);
	return status;
}
