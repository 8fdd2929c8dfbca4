/*
 * test_crash.c — kill a writing process at random moments; recovery must keep
 * every acknowledged event exactly once and never half a batch.
 *
 * Description: each round forks a child that opens the store (public API
 * only; memtable_bytes_max 256 KiB — 64 KiB in some directories — and
 * compact_files_min 3, background worker on, so flushes and compactions run
 * all the time; in half the directories every flush, and a tally_compact
 * the child calls every CRASH_COMPACT_EVERY batches, is split into two or
 * three files written by as many threads) and ingests batches from 1 to 3 threads: 1..400 new events
 * for one of 2-4 tenants, plus up to ~100 extras (re-sent duplicates of
 * events acknowledged earlier, in this round or an earlier round on the same
 * directory; conflicting copies of acknowledged events; a second copy of
 * one of the batch's own events). Every event is a pure function of
 * (seed, round, batch, index) (support/events.h), with times spread over
 * the last three days. A third of the directories are written through
 * fault_io with every pwrite cut to 512 bytes, so that kills land inside
 * WAL records, segment files and manifests. Before each tally_ingest the
 * child writes "submitting N" to a pipe; after it returned 0 and every
 * per-event result was the expected one, "acknowledged N". Like a client
 * that reconnects, the child first re-sends every batch whose outcome the
 * last recovery had to decide (all DUPLICATE if it was found present, all
 * ACCEPTED if absent).
 * Single-threaded children sometimes close and reopen the store mid-round.
 *
 * The parent sends SIGKILL at a random moment (within 3 ms of the fork,
 * i.e. during the child's recovery, or 0..300 ms after the child opened the
 * store), reaps the child, drains the pipe (everything written before the
 * kill counts), reopens the store itself (tally_store_open must succeed:
 * recovery truncates torn tails) and scans every tenant (in one scan, or one
 * per day):
 *   - every event of every acknowledged batch is present exactly once, with
 *     the exact payload that was sent (conflicting copies never replace it);
 *   - each batch submitted but not acknowledged (one per child thread) is
 *     wholly present or wholly absent, and stays so in every later round;
 *   - no event appears that was never sent, none twice, none under another
 *     tenant; scans come in time order; the stats count exactly those rows;
 *   - no WAL file id comes back over the directory's rounds: a file seen
 *     before keeps its first LSN, and a new file's id is above every id
 *     seen before, also after flushes retired every WAL file.
 * The parent sometimes flushes and compacts before closing. Directories are
 * reused for 1-6 rounds (recovery after recovery, data accumulating), then
 * replaced by a fresh one.
 *
 * Rounds: CRASH_ROUNDS (default 50). Seed: SEED (decimal or 0x-hex),
 * otherwise random; it is printed first. The seed fixes every batch's
 * content, every kill delay and the directory schedule; where the kill
 * lands in the child's work still depends on timing, so a replay re-runs
 * the same schedule rather than the identical interleaving. A failing round
 * prints the seed, the round and its directory, which is kept on disk.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support/events.h"
#include "support/fault_io.h"
#include "support/power_io.h"
#include "tally.h"

#define CRASH_ROUNDS_DEFAULT 50
#define CRASH_KILL_DELAY_US_MAX 300000
#define CRASH_KILL_DELAY_DURING_OPEN_US_MAX 3000
#define CRASH_OPEN_WAIT_US_MAX (30 * INT64_C(1000000)) /* a child that never opens has hung */
#define CRASH_BATCH_NEW_MAX 400
#define CRASH_BATCH_EXTRA_MAX 100
#define CRASH_BATCH_SLOTS (CRASH_BATCH_NEW_MAX + CRASH_BATCH_EXTRA_MAX)
#define CRASH_THREADS_MAX 3
#define CRASH_DIR_ROUNDS_MAX 6
#define CRASH_MEMTABLE_BYTES_MAX (256u << 10)
#define CRASH_MEMTABLE_BYTES_MAX_SMALL (64u << 10)
#define CRASH_COMPACT_FILES_MIN 3
#define CRASH_COMPACT_EVERY 40 /* batches between a split-flush child's tally_compact calls */
#define CRASH_SECTION_ROWS_MAX 500 /* compactions cut each tenant of more rows by time */
#define CRASH_WAL_FILE_BYTES_MAX_SMALL (128u << 10)
#define CRASH_SHORT_WRITE_BYTES 512
#define CRASH_MESSAGE_TEXT_SIZE 112
#define CRASH_POWER_ROUNDS_DEFAULT 30
#define CRASH_POWER_OPS_MAX 3000 /* the cut lands within this many mutating calls */
#define CRASH_POWER_WAIT_US_MAX (60 * INT64_C(1000000)) /* a child that never loses power hung */

/* One pipe message; 128 bytes, so each write is atomic (< PIPE_BUF). */
enum crash_message_kind {
	CRASH_OPENED = 1,   /* the store is open */
	CRASH_SUBMIT,       /* about to call tally_ingest for (round, batch) */
	CRASH_ACK,          /* tally_ingest returned 0, results as expected */
	CRASH_RETRY_SUBMIT, /* about to re-send batch (round, batch) of an earlier round */
	CRASH_RETRY_ACK,    /* the re-sent batch was acknowledged, results as expected */
	CRASH_ERROR,        /* the child failed: code and text say why; it exits */
};

typedef struct crash_message {
	uint32_t kind;
	uint32_t round;
	uint32_t batch;
	int32_t code;
	char text[CRASH_MESSAGE_TEXT_SIZE];
} crash_message;

_Static_assert(sizeof(crash_message) == 128, "one small atomic pipe write");

/* What a batch number stands for: the same on both sides of the fork. */
typedef struct crash_plan {
	uint32_t tenant;
	uint32_t new_count;       /* the batch's own events, ev index 0 .. new_count-1 */
	uint32_t duplicate_count; /* re-sent events of earlier acknowledged batches */
	uint32_t conflict_count;  /* same id as an acknowledged event, other payload */
	uint32_t self_duplicate;  /* 1: a second copy of one of its own events */
} crash_plan;

static void crash_plan_get(const ev_ledger *l, uint32_t round, uint32_t batch, crash_plan *p)
{
	uint64_t h = ev_mix(l->seed, round, batch, 0xba7c);
	p->tenant = (uint32_t)(h % l->tenant_count);
	p->new_count = 1 + (uint32_t)((h >> 8) % CRASH_BATCH_NEW_MAX);
	p->duplicate_count = (h >> 20) % 4 == 0 ? 1 + (uint32_t)((h >> 24) % 90) : 0;
	p->conflict_count = (h >> 32) % 16 == 0 ? 1 + (uint32_t)((h >> 36) % 4) : 0;
	p->self_duplicate = (h >> 44) % 8 == 0;
}

_Static_assert(CRASH_BATCH_NEW_MAX + 90 + 4 + 1 <= CRASH_BATCH_SLOTS, "a batch fits its slots");

static int64_t clock_us(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Per-directory store options, chosen by the parent. */
typedef struct crash_setup {
	uint64_t memtable_bytes_max;
	uint64_t wal_file_bytes_max; /* 0: the default */
	uint32_t group_commit_window_us;
	uint64_t short_write_bytes; /* child writes through fault_io, cut to this size; 0: plain */
	uint64_t power_cut_after;   /* child writes through power_io and loses power at the nth
				     * mutating call (0: killed by the parent instead) */
	uint32_t flush_threads;     /* non-zero: every flush of two tenants or more is split
				     * into this many files written at once */
} crash_setup;

/* ---- the child ------------------------------------------------------------ */

typedef struct crash_child {
	int fd; /* write end of the pipe */
	const char *dir;
	ev_ledger *ledger; /* the parent's, copied by fork: earlier rounds' outcomes */
	uint32_t round;
	crash_setup setup;
	uint32_t thread_count;
	uint32_t reopen_every; /* single thread: close and reopen after this many batches */
	pthread_mutex_t mutex; /* ledger, next_batch, rng */
	uint32_t next_batch;
	uint64_t rng;
	tally_store *store;
	fault_io *fio; /* when setup.short_write_bytes */
	power_io *pio; /* when setup.power_cut_after */
} crash_child;

static void child_send(const crash_child *c, uint32_t kind, uint32_t round, uint32_t batch,
		       int32_t code, const char *text)
{
	crash_message m;
	memset(&m, 0, sizeof(m));
	m.kind = kind;
	m.round = round;
	m.batch = batch;
	m.code = code;
	if (text)
		snprintf(m.text, sizeof(m.text), "%s", text);
	ssize_t n;
	do
		n = write(c->fd, &m, sizeof(m));
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(m))
		_exit(90);
}

static void child_fail(const crash_child *c, uint32_t batch, int32_t code, const char *text)
{
	child_send(c, CRASH_ERROR, c->round, batch, code, text);
	_exit(3);
}

static tally_store *child_open(crash_child *c)
{
	tally_options o;
	tally_options_default(&o);
	if (c->setup.short_write_bytes) {
		if (!c->fio) {
			c->fio = fault_io_create();
			if (!c->fio)
				child_fail(c, 0, -ENOMEM, "fault_io_create");
			fault_io_short_write_set(c->fio, c->setup.short_write_bytes);
		}
		o.io = fault_io_table(c->fio);
	}
	if (c->setup.power_cut_after) {
		if (!c->pio) {
			/* Armed before the open, so some cuts land in recovery. */
			c->pio = power_io_create(o.io ? o.io : tally_io_default());
			if (!c->pio)
				child_fail(c, 0, -ENOMEM, "power_io_create");
			power_io_cut_after(c->pio, c->setup.power_cut_after);
		}
		o.io = power_io_table(c->pio);
	}
	o.memtable_bytes_max = c->setup.memtable_bytes_max;
	if (c->setup.flush_threads) {
		o.flush_threads = c->setup.flush_threads;
		o.flush_parallel_rows_min = 1;
	}
	o.compact_files_min = CRASH_COMPACT_FILES_MIN;
	o.compact_section_rows_max = CRASH_SECTION_ROWS_MAX;
	o.background = true;
	o.group_commit_window_us = c->setup.group_commit_window_us;
	if (c->setup.wal_file_bytes_max)
		o.wal_file_bytes_max = c->setup.wal_file_bytes_max;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	tally_store *s = NULL;
	int rc = tally_store_open(c->dir, &o, &s, errmsg);
	if (rc)
		child_fail(c, 0, rc, errmsg);
	return s;
}

/* Buffers of one ingesting thread. */
typedef struct child_batch {
	ev_event slots[CRASH_BATCH_SLOTS];
	tally_event events[CRASH_BATCH_SLOTS];
	uint8_t expected[CRASH_BATCH_SLOTS];
	tally_ingest_result results[CRASH_BATCH_SLOTS];
	uint32_t count;
} child_batch;

/* Ingests the prepared batch; any failure or unexpected result ends the
 * child with an error message. */
static void child_ingest(const crash_child *c, tally_store *s, const char *tenant,
			 child_batch *cb, uint32_t batch)
{
	for (uint32_t i = 0; i < cb->count; i++)
		cb->events[i] = cb->slots[i].event;
	int rc = tally_ingest(s, tenant, cb->events, cb->count, cb->results);
	if (rc) {
		char text[CRASH_MESSAGE_TEXT_SIZE];
		snprintf(text, sizeof(text), "tally_ingest: %s", tally_store_errmsg(s));
		child_fail(c, batch, rc, text);
	}
	for (uint32_t i = 0; i < cb->count; i++) {
		if (cb->results[i].code != cb->expected[i]) {
			char text[CRASH_MESSAGE_TEXT_SIZE];
			snprintf(text, sizeof(text), "event %u (id %s): result %s, expected %s", i,
				 cb->slots[i].id, tally_result_name(cb->results[i].code),
				 tally_result_name(cb->expected[i]));
			child_fail(c, batch, -1, text);
		}
	}
}

/* A copy of an acknowledged (or found present) batch of `tenant` with
 * events; false if none was found. Mutex held. */
static bool child_pick_source(crash_child *c, uint32_t tenant, ev_batch *out)
{
	const ev_ledger *l = c->ledger;
	if (!l->batch_count)
		return false;
	for (int attempt = 0; attempt < 16; attempt++) {
		const ev_batch *b = &l->batches[ev_rng_next(&c->rng) % l->batch_count];
		if (b->tenant == tenant && b->count && (b->state == EV_ACKED || b->state == EV_PRESENT)) {
			*out = *b;
			return true;
		}
	}
	return false;
}

/* Fills cb with batch `batch` of this round (mutex held). */
static void child_prepare(crash_child *c, uint32_t batch, const crash_plan *p, child_batch *cb)
{
	ev_ledger *l = c->ledger;
	int64_t base_us = l->rounds[c->round].base_us;
	uint32_t n = 0;
	for (uint32_t i = 0; i < p->new_count; i++, n++) {
		ev_make(&cb->slots[n], l->seed, base_us, c->round, batch, i);
		cb->expected[n] = TALLY_ACCEPTED;
	}
	for (uint32_t k = 0; k < p->duplicate_count + p->conflict_count; k++) {
		ev_batch src;
		if (!child_pick_source(c, p->tenant, &src))
			break;
		uint32_t index = (uint32_t)(ev_rng_next(&c->rng) % src.count);
		int64_t src_base_us = l->rounds[src.round].base_us;
		if (k < p->duplicate_count) {
			ev_make(&cb->slots[n], l->seed, src_base_us, src.round, src.batch, index);
			cb->expected[n++] = TALLY_DUPLICATE;
		} else {
			ev_make_conflict(&cb->slots[n], l->seed, src_base_us, src.round, src.batch, index);
			cb->expected[n++] = TALLY_CONFLICT;
		}
	}
	if (p->self_duplicate) {
		uint32_t index = (uint32_t)(ev_rng_next(&c->rng) % p->new_count);
		ev_make(&cb->slots[n], l->seed, base_us, c->round, batch, index);
		cb->expected[n++] = TALLY_DUPLICATE;
	}
	cb->count = n;
}

static void *child_worker(void *arg)
{
	crash_child *c = arg;
	child_batch *cb = calloc(1, sizeof(*cb));
	if (!cb)
		child_fail(c, 0, -ENOMEM, "child: out of memory");
	for (;;) {
		crash_plan p;
		pthread_mutex_lock(&c->mutex);
		uint32_t batch = c->next_batch++;
		crash_plan_get(c->ledger, c->round, batch, &p);
		child_prepare(c, batch, &p, cb);
		pthread_mutex_unlock(&c->mutex);

		child_send(c, CRASH_SUBMIT, c->round, batch, 0, NULL);
		child_ingest(c, c->store, c->ledger->tenants[p.tenant], cb, batch);
		pthread_mutex_lock(&c->mutex);
		ev_ledger_put(c->ledger, c->round, batch, p.tenant, p.new_count, EV_ACKED);
		pthread_mutex_unlock(&c->mutex);
		child_send(c, CRASH_ACK, c->round, batch, 0, NULL);

		if (c->setup.flush_threads && (batch + 1) % CRASH_COMPACT_EVERY == 0) {
			/* tally_compact splits its output as the flush does (the
			 * worker's compactions write one file): kills land between
			 * its parts' writes and the manifest write too. */
			int rc = tally_compact(c->store);
			if (rc) {
				char text[CRASH_MESSAGE_TEXT_SIZE];
				snprintf(text, sizeof(text), "tally_compact: %s", tally_store_errmsg(c->store));
				child_fail(c, batch, rc, text);
			}
		}
		if (c->reopen_every && (batch + 1) % c->reopen_every == 0) {
			/* Single-threaded only: nobody else uses the store. */
			int rc = tally_store_close(c->store);
			if (rc)
				child_fail(c, batch, rc, "clean close in the middle of the round");
			c->store = child_open(c);
		}
	}
	return NULL;
}

/* Re-sends, whole, every batch whose outcome the last recovery decided:
 * a present one must come back all DUPLICATE, an absent one all ACCEPTED. */
static void child_retry(crash_child *c, child_batch *cb)
{
	ev_ledger *l = c->ledger;
	for (size_t i = 0; i < l->batch_count; i++) {
		ev_batch *b = &l->batches[i];
		if (!b->resolved || !b->count)
			continue;
		int64_t base_us = l->rounds[b->round].base_us;
		for (uint32_t k = 0; k < b->count; k++) {
			ev_make(&cb->slots[k], l->seed, base_us, b->round, b->batch, k);
			cb->expected[k] = b->state == EV_PRESENT ? TALLY_DUPLICATE : TALLY_ACCEPTED;
		}
		cb->count = b->count;
		child_send(c, CRASH_RETRY_SUBMIT, b->round, b->batch, 0, NULL);
		child_ingest(c, c->store, l->tenants[b->tenant], cb, b->batch);
		child_send(c, CRASH_RETRY_ACK, b->round, b->batch, 0, NULL);
		b->state = EV_ACKED;
		b->resolved = false;
	}
}

static void child_main(crash_child *c)
{
	c->store = child_open(c);
	child_send(c, CRASH_OPENED, c->round, 0, 0, NULL);
	child_batch *cb = calloc(1, sizeof(*cb));
	if (!cb)
		child_fail(c, 0, -ENOMEM, "child: out of memory");
	child_retry(c, cb);
	free(cb);
	pthread_mutex_init(&c->mutex, NULL);
	c->rng = ev_mix(c->ledger->seed, c->round, 0xc41d, 0);
	pthread_t threads[CRASH_THREADS_MAX];
	for (uint32_t t = 1; t < c->thread_count; t++)
		if (pthread_create(&threads[t], NULL, child_worker, c))
			child_fail(c, 0, -EAGAIN, "pthread_create");
	child_worker(c); /* never returns: the parent kills us */
}

/* ---- the parent ----------------------------------------------------------- */

typedef struct crash_round {
	uint32_t round;
	int64_t kill_delay_us;
	bool kill_after_open;
	bool opened;
	int64_t opened_at_us;
	uint32_t acked;
	uint32_t retried;
	bool child_failed;
	char child_error[256];
	char problem[256]; /* a protocol problem seen by the parent */
} crash_round;

/* Applies one message to the ledger. */
static void parent_handle(ev_ledger *l, crash_round *cr, const crash_message *m)
{
	ev_batch *b = ev_ledger_find(l, m->round, m->batch);
	switch (m->kind) {
	case CRASH_OPENED:
		cr->opened = true;
		cr->opened_at_us = clock_us(CLOCK_MONOTONIC);
		break;
	case CRASH_SUBMIT: {
		crash_plan p;
		if (m->round != cr->round || (b && b->state != EV_UNSENT)) {
			snprintf(cr->problem, sizeof(cr->problem), "second submit of batch (%u, %u)",
				 m->round, m->batch);
			break;
		}
		crash_plan_get(l, m->round, m->batch, &p);
		ev_ledger_put(l, m->round, m->batch, p.tenant, p.new_count, EV_MAYBE);
		break;
	}
	case CRASH_ACK:
		if (m->round != cr->round || !b || b->state != EV_MAYBE) {
			snprintf(cr->problem, sizeof(cr->problem), "ack of batch (%u, %u) never submitted",
				 m->round, m->batch);
			break;
		}
		b->state = EV_ACKED;
		cr->acked++;
		break;
	case CRASH_RETRY_SUBMIT:
		if (!b || !b->resolved) {
			snprintf(cr->problem, sizeof(cr->problem), "retry of batch (%u, %u) not resolved",
				 m->round, m->batch);
			break;
		}
		if (b->state == EV_ABSENT)
			b->state = EV_MAYBE; /* it may land this time */
		break;
	case CRASH_RETRY_ACK:
		if (!b || !b->resolved || (b->state != EV_MAYBE && b->state != EV_PRESENT)) {
			snprintf(cr->problem, sizeof(cr->problem), "retry ack of batch (%u, %u) unexpected",
				 m->round, m->batch);
			break;
		}
		b->state = EV_ACKED;
		b->resolved = false;
		cr->retried++;
		break;
	case CRASH_ERROR:
		cr->child_failed = true;
		snprintf(cr->child_error, sizeof(cr->child_error), "batch %u: code %d (%s): %.*s",
			 m->batch, m->code, tally_strerror(m->code), (int)sizeof(m->text), m->text);
		break;
	default:
		snprintf(cr->problem, sizeof(cr->problem), "unknown message kind %u", m->kind);
		break;
	}
}

/* Reads whole messages; returns 0 at end of file, 1 if more may come. */
static int parent_read(int fd, ev_ledger *l, crash_round *cr, uint8_t *buffer, size_t *used)
{
	ssize_t n = read(fd, buffer + *used, 4096 - *used);
	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 1 : 0;
	if (n == 0)
		return 0;
	*used += (size_t)n;
	size_t done = 0;
	while (*used - done >= sizeof(crash_message)) {
		crash_message m;
		memcpy(&m, buffer + done, sizeof(m));
		parent_handle(l, cr, &m);
		done += sizeof(m);
	}
	memmove(buffer, buffer + done, *used - done);
	*used -= done;
	return 1;
}

/* Names in dir/sub: how many, and how many end with suffix; the first
 * name that does not, in *odd. */
static void dir_count(const char *dir, const char *sub, const char *suffix, uint64_t *count,
		      uint64_t *matching, char odd[64])
{
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	*count = *matching = 0;
	odd[0] = 0;
	DIR *d = opendir(path);
	cr_assert_not_null(d, "opendir %s: %s", path, strerror(errno));
	struct dirent *entry;
	while ((entry = readdir(d))) {
		if (entry->d_name[0] == '.')
			continue;
		size_t n = strlen(entry->d_name), m = strlen(suffix);
		(*count)++;
		if (n >= m && strcmp(entry->d_name + n - m, suffix) == 0)
			(*matching)++;
		else if (!odd[0])
			snprintf(odd, 64, "%s", entry->d_name);
	}
	closedir(d);
}

/* The WAL files a directory's recoveries have shown, by id with their
 * first LSN (header offset 24): over the directory's life an id never
 * comes back for another file, and every new file's id is above all seen
 * before (wal.c, invariant 7), even after flushes retired every file. */
typedef struct wal_ids {
	uint64_t *id;
	uint64_t *first_lsn;
	size_t count, capacity;
	uint64_t max;   /* the largest id seen before this round's look */
	uint64_t files; /* files looked at, over every round */
} wal_ids;

static void wal_ids_free(wal_ids *w)
{
	free(w->id);
	free(w->first_lsn);
	memset(w, 0, sizeof(*w));
}

static uint64_t le64_at(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Looks at dir/wal after a recovery: each file's id and first LSN against
 * every earlier look. */
static void wal_ids_check(wal_ids *w, const char *dir, const char *where)
{
	char path[160];
	snprintf(path, sizeof(path), "%s/wal", dir);
	DIR *d = opendir(path);
	cr_assert_not_null(d, "opendir %s: %s", path, strerror(errno));
	uint64_t max_before = w->max;
	struct dirent *entry;
	while ((entry = readdir(d))) {
		char *end;
		uint64_t id = strtoull(entry->d_name, &end, 16);
		if (end != entry->d_name + 16 || strcmp(end, ".wal") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/wal/%s", dir, entry->d_name);
		int fd = open(path, O_RDONLY);
		cr_assert_geq(fd, 0, "%s: open %s: %s", where, path, strerror(errno));
		uint8_t header[40];
		cr_assert_eq(pread(fd, header, sizeof(header), 0), (ssize_t)sizeof(header),
			     "%s: %s has no whole header after recovery", where, path);
		close(fd);
		cr_assert_eq(le64_at(header + 16), id, "%s: %s", where, path);
		uint64_t first_lsn = le64_at(header + 24);
		w->files++;
		size_t i = 0;
		while (i < w->count && w->id[i] != id)
			i++;
		if (i < w->count) {
			cr_assert_eq(w->first_lsn[i], first_lsn,
				     "%s: WAL file id %" PRIu64 " used again: first LSN %" PRIu64
				     " before, %" PRIu64 " now",
				     where, id, w->first_lsn[i], first_lsn);
			continue;
		}
		cr_assert_gt(id, max_before,
			     "%s: new WAL file %" PRIu64 " is not above the ids seen before (up to %" PRIu64
			     ")", where, id, max_before);
		if (w->count == w->capacity) {
			w->capacity = w->capacity ? 2 * w->capacity : 64;
			w->id = realloc(w->id, w->capacity * sizeof(*w->id));
			w->first_lsn = realloc(w->first_lsn, w->capacity * sizeof(*w->first_lsn));
			cr_assert(w->id && w->first_lsn);
		}
		w->id[w->count] = id;
		w->first_lsn[w->count++] = first_lsn;
		if (id > w->max)
			w->max = id;
	}
	closedir(d);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void dir_remove(const char *dir)
{
	cr_assert_eq(nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0, "remove %s: %s", dir,
		     strerror(errno));
}

static uint64_t seed_get(void)
{
	const char *text = getenv("SEED");
	if (text && *text)
		return strtoull(text, NULL, 0);
	return ev_mix((uint64_t)clock_us(CLOCK_REALTIME), (uint64_t)getpid(), 0, 0);
}

static int rounds_get(void)
{
	const char *text = getenv("CRASH_ROUNDS");
	if (text && *text) {
		long rounds = strtol(text, NULL, 10);
		if (rounds > 0)
			return (int)rounds;
	}
	return CRASH_ROUNDS_DEFAULT;
}

/* CRASH_POWER_ROUNDS, else as many as CRASH_ROUNDS when that is set, else
 * CRASH_POWER_ROUNDS_DEFAULT. */
static int power_rounds_get(void)
{
	const char *text = getenv("CRASH_POWER_ROUNDS");
	if (text && *text) {
		long rounds = strtol(text, NULL, 10);
		if (rounds > 0)
			return (int)rounds;
	}
	text = getenv("CRASH_ROUNDS");
	if (text && *text)
		return rounds_get();
	return CRASH_POWER_ROUNDS_DEFAULT;
}

typedef struct crash_totals {
	uint64_t acked_batches;
	uint64_t retried_batches;
	uint64_t maybe_present;
	uint64_t maybe_absent;
	uint64_t events_scanned_max;
	uint64_t child_never_opened;
	uint64_t fresh_dirs;
	uint64_t segment_files; /* live after each recovery, summed */
	uint64_t wal_files;
} crash_totals;

/*
 * The rounds of both tests. kill: the parent SIGKILLs the child at a random
 * moment (the page cache survives: every write the child made is kept).
 * power: the child writes through power_io and loses power at a random
 * mutating call (writes and directory changes that were never fsynced are
 * lost), then exits.
 */
static void crash_rounds(bool power, int rounds, const char *name)
{
	uint64_t seed = seed_get();
	fprintf(stderr, "%s: SEED=0x%016" PRIx64 " rounds=%d\n", name, seed, rounds);
	int64_t started_us = clock_us(CLOCK_MONOTONIC);
	uint64_t rng = seed;
	crash_totals totals = {0};
	ev_ledger ledger;
	memset(&ledger, 0, sizeof(ledger));
	char dir[64] = "";
	int dir_rounds_left = 0;
	crash_setup setup = {0};
	wal_ids wal_seen = {0};
	uint64_t wal_files_looked = 0;

	for (int global_round = 0; global_round < rounds; global_round++) {
		if (dir_rounds_left == 0) {
			if (dir[0]) {
				dir_remove(dir);
				ev_ledger_free(&ledger);
			}
			wal_files_looked += wal_seen.files;
			wal_ids_free(&wal_seen);
			snprintf(dir, sizeof(dir), "/tmp/tally-crash-XXXXXX");
			cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
			ev_ledger_init(&ledger, ev_rng_next(&rng), 2 + (uint32_t)(ev_rng_next(&rng) % 3));
			dir_rounds_left = 1 + (int)(ev_rng_next(&rng) % CRASH_DIR_ROUNDS_MAX);
			uint64_t d = ev_rng_next(&rng);
			setup.memtable_bytes_max = d % 4 == 0 ? CRASH_MEMTABLE_BYTES_MAX_SMALL
							      : CRASH_MEMTABLE_BYTES_MAX;
			setup.wal_file_bytes_max = (d >> 8) % 3 == 0 ? CRASH_WAL_FILE_BYTES_MAX_SMALL : 0;
			setup.group_commit_window_us = (d >> 16) % 4 == 0 ? 500 : 0;
			/* A third of the directories are written 512 bytes per pwrite, so
			 * kills land inside records, segment files and manifests. */
			setup.short_write_bytes = (d >> 24) % 3 == 0 ? CRASH_SHORT_WRITE_BYTES : 0;
			/* Half split every flush, and the tally_compact their child
			 * calls every CRASH_COMPACT_EVERY batches, into files
			 * written by two or three threads, so kills land between
			 * their writes and the one manifest write that publishes
			 * them all. */
			setup.flush_threads = (d >> 32) % 2 == 0 ? 2 + (uint32_t)((d >> 33) % 2) : 0;
			totals.fresh_dirs++;
		}
		if (power) {
			/* Anywhere in the first few thousand writes, fsyncs and
			 * directory changes: during recovery, ingest, flushes and
			 * compactions. */
			setup.power_cut_after = 1 + ev_rng_next(&rng) % CRASH_POWER_OPS_MAX;
		}
		dir_rounds_left--;

		crash_round cr;
		memset(&cr, 0, sizeof(cr));
		uint64_t r = ev_rng_next(&rng);
		/* A quarter of the kills land within 3 ms of the fork: during the
		 * child's open and recovery. The rest land 0..300 ms after the open
		 * finished (an eighth of them at once). */
		cr.kill_after_open = r % 4 != 0;
		if (!cr.kill_after_open)
			cr.kill_delay_us = (int64_t)((r >> 16) % CRASH_KILL_DELAY_DURING_OPEN_US_MAX);
		else if ((r >> 8) % 8 == 0)
			cr.kill_delay_us = 0;
		else
			cr.kill_delay_us = (int64_t)((r >> 16) % CRASH_KILL_DELAY_US_MAX);
		bool maintain = (r >> 40) % 4 == 0;
		bool verify_by_day = (r >> 44) % 2 == 0;
		uint32_t thread_count = 1 + (uint32_t)((r >> 48) % CRASH_THREADS_MAX);
		uint32_t reopen_every = thread_count == 1 && (r >> 52) % 3 == 0 ? 5 + (uint32_t)((r >> 56) % 20) : 0;
		cr.round = ev_ledger_round_begin(&ledger, clock_us(CLOCK_REALTIME));

		int pipe_fds[2];
		cr_assert_eq(pipe(pipe_fds), 0, "pipe: %s", strerror(errno));
		fflush(NULL);
		int64_t forked_us = clock_us(CLOCK_MONOTONIC);
		pid_t pid = fork();
		cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
		if (pid == 0) {
			close(pipe_fds[0]);
			crash_child child = {.fd = pipe_fds[1], .dir = dir, .ledger = &ledger,
					     .round = cr.round, .setup = setup,
					     .thread_count = thread_count, .reopen_every = reopen_every};
			child_main(&child);
			_exit(0);
		}
		close(pipe_fds[1]);

		uint8_t buffer[4096];
		size_t used = 0;
		int more = 1;
		bool killed = false;
		while (more) {
			int64_t now = clock_us(CLOCK_MONOTONIC);
			int64_t deadline;
			if (!cr.kill_after_open)
				deadline = forked_us + cr.kill_delay_us;
			else if (cr.opened)
				deadline = cr.opened_at_us + cr.kill_delay_us;
			else
				deadline = forked_us + CRASH_OPEN_WAIT_US_MAX;
			if (power)
				deadline = forked_us + CRASH_POWER_WAIT_US_MAX;
			if (now >= deadline) {
				kill(pid, SIGKILL);
				killed = true;
				break;
			}
			struct pollfd pfd = {.fd = pipe_fds[0], .events = POLLIN};
			int timeout_ms = (int)((deadline - now + 999) / 1000);
			if (poll(&pfd, 1, timeout_ms) > 0)
				more = parent_read(pipe_fds[0], &ledger, &cr, buffer, &used);
		}
		int status = 0;
		cr_assert_eq(waitpid(pid, &status, 0), pid, "waitpid: %s", strerror(errno));
		while (parent_read(pipe_fds[0], &ledger, &cr, buffer, &used))
			; /* everything written before the kill counts */
		close(pipe_fds[0]);

		char where[200];
		snprintf(where, sizeof(where),
			 "SEED=0x%016" PRIx64 " round %d (round %u of %s, %u threads, kill %s + %" PRId64 " us)",
			 seed, global_round, cr.round, dir, thread_count,
			 cr.kill_after_open ? "open" : "fork", cr.kill_delay_us);
		cr_assert(!cr.child_failed, "%s: the child failed: %s", where, cr.child_error);
		if (power) {
			cr_assert(!killed && WIFEXITED(status) &&
				  WEXITSTATUS(status) == POWER_IO_EXIT_CODE,
				  "%s: the child did not lose power after %" PRIu64 " calls (status %d)",
				  where, setup.power_cut_after, status);
		} else {
			cr_assert(!WIFEXITED(status), "%s: the child exited with code %d before the kill "
				  "(a sanitizer report above?)", where, WEXITSTATUS(status));
			cr_assert(killed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
				  "%s: the child died of signal %d (%s) before the kill", where,
				  WIFSIGNALED(status) ? WTERMSIG(status) : 0,
				  WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "?");
		}
		cr_assert(!cr.problem[0], "%s: %s", where, cr.problem);
		if (cr.kill_after_open && !power)
			cr_assert(cr.opened, "%s: the child did not open the store within %" PRId64 " s",
				  where, CRASH_OPEN_WAIT_US_MAX / 1000000);
		if (!cr.opened)
			totals.child_never_opened++;
		totals.acked_batches += cr.acked;
		totals.retried_batches += cr.retried;

		/* Recovery in the parent. */
		tally_options o;
		tally_options_default(&o);
		o.background = false;
		tally_store *s = NULL;
		char errmsg[TALLY_ERRMSG_SIZE] = "";
		int rc = tally_store_open(dir, &o, &s, errmsg);
		cr_assert_eq(rc, 0, "%s: reopen after the kill: %s: %s", where, tally_strerror(rc), errmsg);
		ev_report *report = calloc(1, sizeof(*report));
		cr_assert_not_null(report);
		ev_ledger_verify(&ledger, s, verify_by_day, report);
		cr_assert_eq(report->problem_count, 0,
			     "%s: %d problems after recovery (%" PRIu64 " events scanned, %" PRIu64
			     " expected present) — data directory kept:\n%s",
			     where, report->problem_count, report->events_scanned,
			     ev_ledger_present_events(&ledger), report->text);
		tally_stats stats;
		cr_assert_eq(tally_store_stats(s, &stats), 0);
		cr_assert_eq(stats.sticky_error, 0, "%s", where);
		cr_assert_eq(stats.segment_rows + stats.events_memtable, report->events_scanned,
			     "%s: stats count %" PRIu64 " + %" PRIu64 " rows, the scan saw %" PRIu64, where,
			     stats.segment_rows, stats.events_memtable, report->events_scanned);
		/* Recovery removed every file of an interrupted flush or compaction
		 * and every torn WAL file creation. */
		uint64_t names, matching;
		char odd[64];
		dir_count(dir, "segments", ".seg", &names, &matching, odd);
		cr_assert(names == matching && matching == stats.segment_file_count,
			  "%s: segments/ holds %" PRIu64 " names, %" PRIu64 " .seg, %" PRIu64 " live (odd: %s)",
			  where, names, matching, stats.segment_file_count, odd);
		dir_count(dir, "wal", ".wal", &names, &matching, odd);
		cr_assert(names == matching && matching == stats.wal_file_count,
			  "%s: wal/ holds %" PRIu64 " names, %" PRIu64 " .wal, %" PRIu64 " known to the WAL (odd: %s)",
			  where, names, matching, stats.wal_file_count, odd);
		wal_ids_check(&wal_seen, dir, where);
		totals.segment_files += stats.segment_file_count;
		totals.wal_files += stats.wal_file_count;
		totals.maybe_present += report->maybe_present;
		totals.maybe_absent += report->maybe_absent;
		if (report->events_scanned > totals.events_scanned_max)
			totals.events_scanned_max = report->events_scanned;
		free(report);
		if (maintain) {
			rc = tally_flush(s);
			cr_assert_eq(rc, 0, "%s: flush after recovery: %s: %s", where, tally_strerror(rc),
				     tally_store_errmsg(s));
			rc = tally_compact(s);
			cr_assert_eq(rc, 0, "%s: compaction after recovery: %s: %s", where,
				     tally_strerror(rc), tally_store_errmsg(s));
		}
		rc = tally_store_close(s);
		cr_assert_eq(rc, 0, "%s: close after recovery: %s", where, tally_strerror(rc));
	}
	if (dir[0])
		dir_remove(dir);
	ev_ledger_free(&ledger);
	wal_files_looked += wal_seen.files;
	wal_ids_free(&wal_seen);
	fprintf(stderr, "%s: WAL file ids checked in %" PRIu64 " looks at a file: none used twice\n",
		name, wal_files_looked);
	fprintf(stderr,
		"%s: %d rounds in %.1f s over %" PRIu64 " directories: %" PRIu64
		" acknowledged batches, %" PRIu64 " retried; unacknowledged batches found present %" PRIu64
		" / absent %" PRIu64 "; largest store %" PRIu64 " events; %" PRIu64
		" kills before the open finished; after recovery %.1f segment files and %.1f WAL files "
		"on average\n",
		name, rounds, (double)(clock_us(CLOCK_MONOTONIC) - started_us) / 1e6, totals.fresh_dirs,
		totals.acked_batches, totals.retried_batches, totals.maybe_present, totals.maybe_absent,
		totals.events_scanned_max, totals.child_never_opened,
		(double)totals.segment_files / rounds, (double)totals.wal_files / rounds);
}

Test(crash, sigkill_at_random_moments_keeps_every_acknowledged_event_once)
{
	crash_rounds(false, rounds_get(), "test_crash sigkill");
}

Test(crash, power_cut_at_random_moments_keeps_every_acknowledged_event_once)
{
	/* Unsynced writes and directory changes are lost (see power_io.h). */
	crash_rounds(true, power_rounds_get(), "test_crash power cut");
}
