/*
 * test_faults.c — storage failures injected through the io seam
 * (support/fault_io.h): what the caller is told, what the store refuses
 * afterwards, and what a reopen with a healthy disk finds.
 *
 * Description: every test opens a fresh directory under /tmp with a frozen
 * clock (NOW_US) and no background worker, so each flush and compaction
 * happens exactly where the test calls it. Events come from
 * support/events.h (deterministic, exact payloads, times over the last three
 * days); an ev_ledger records each batch as acknowledged (tally_ingest
 * returned 0), unknown (the failed batch) or refused, and ev_ledger_verify
 * checks after every step that matters that each acknowledged event is
 * present exactly once with its payload, each unknown batch is all there or
 * not at all, and nothing else is stored. The failures and what they pin:
 *
 *   WAL fsync EIO          the batch fails with -EIO, later ingests get
 *                          TALLY_E_READONLY, sticky_error is -EIO, flush and
 *                          compaction return -EIO, close returns -EIO; reopen
 *                          keeps every acknowledged batch; the failed one is
 *                          whole (present: see the test).
 *   WAL fsync of a new file's header, pwrite EIO, failed create, failed
 *   directory fsync        the same shape, each with its own code.
 *   WAL ENOSPC             the disk fills mid-run: -ENOSPC, then read-only;
 *                          reopen truncates the torn record (batch absent).
 *   WAL failures under four concurrent writers: every failed batch is whole
 *                          or absent, every refused one absent.
 *   short writes           7 bytes per pwrite everywhere: transparent.
 *   segment ENOSPC / pwrite / fsync / create / rename / directory fsync
 *                          during a flush: the flush fails naming the file,
 *                          nothing is left in segments/, writes go on, the
 *                          next flush publishes the frozen memtables.
 *   segment ENOSPC during a compaction: the inputs stay, not sticky.
 *   MANIFEST fsync / rename / ENOSPC during a flush or a compaction: the call
 *                          fails, the store turns read-only; reopen finds
 *                          every acknowledged event once and no
 *                          unreferenced segment file.
 *   failures while opening (recovery fsync, first MANIFEST): the open fails
 *                          cleanly, a healthy open recovers everything.
 *   recovery's own writes  a torn tail it cannot cut (ftruncate EIO), the
 *                          fsync of the cut, a torn new file it cannot
 *                          unlink: the open fails naming the step and the
 *                          file; a healthy open recovers everything.
 *   removals that fail     WAL files a flush cannot unlink: the flush
 *                          succeeds, replay skips them, the next flush
 *                          removes them; compaction inputs it cannot
 *                          unlink: the next open removes them.
 *
 *
 * The last two sections ("engine bugs", "the background worker under
 * failures") pin engine bugs in their smallest form; each comment says
 * where the bug is, and the test fails until it is fixed.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "support/events.h"
#include "support/fault_io.h"
#include "support/power_io.h"
#include "support/test_dir.h"
#include "tally.h"

#define NOW_US (INT64_C(1790000000) * 1000000) /* 2026-09-21, the store's frozen clock */
#define BASE_US (NOW_US - 1000000)              /* newest event time */
#define BATCH_EVENTS 120
#define SHORT_WRITE_BYTES 7

static char dir[64];
static fault_io *fio;
static ev_ledger ledger;
static uint32_t round_no;

static void setup(void)
{
	fio = test_dir_store_setup(dir, sizeof(dir), "faults", NOW_US);
	ev_ledger_init(&ledger, 0xfa17, 2);
	round_no = ev_ledger_round_begin(&ledger, BASE_US);
}

static void teardown(void)
{
	test_dir_store_teardown(dir, fio);
	ev_ledger_free(&ledger);
}

TestSuite(faults, .init = setup, .fini = teardown);

/* ---- helpers --------------------------------------------------------------- */

static tally_store *store_open_at(const char *path, const tally_io *io)
{
	tally_options o;
	tally_options_default(&o);
	o.io = io;
	o.background = false;
	tally_store *s = NULL;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_store_open(path, &o, &s, errmsg);
	cr_assert_eq(rc, 0, "open %s: %s (%s)", path, tally_strerror(rc), errmsg);
	return s;
}

static tally_store *store_open_with(const tally_io *io)
{
	return store_open_at(dir, io);
}

static tally_store *store_open(void)
{
	return store_open_with(fault_io_table(fio));
}

/*
 * Ingests the ledger's next batch: `count` new events for tenant
 * (batch number % 2). On 0 every result must be ACCEPTED and the batch is
 * recorded acknowledged; otherwise it is recorded as state_if_failed
 * (EV_MAYBE when the engine may have written it, EV_ABSENT when it refused
 * it up front). Returns tally_ingest's code.
 */
static int batch_ingest(tally_store *s, uint32_t count, int state_if_failed)
{
	uint32_t batch = ledger.rounds[round_no].batch_count;
	uint32_t tenant = batch % ledger.tenant_count;
	ev_event *slots = calloc(count + 1, sizeof(*slots));
	tally_event *events = calloc(count + 1, sizeof(*events));
	tally_ingest_result *results = calloc(count + 1, sizeof(*results));
	cr_assert(slots && events && results);
	for (uint32_t i = 0; i < count; i++) {
		ev_make(&slots[i], ledger.seed, BASE_US, round_no, batch, i);
		events[i] = slots[i].event;
	}
	int rc = tally_ingest(s, ledger.tenants[tenant], events, count, results);
	if (rc == 0)
		for (uint32_t i = 0; i < count; i++)
			cr_assert_eq(results[i].code, TALLY_ACCEPTED, "batch %u event %u (%s): %s", batch,
				     i, slots[i].id, tally_result_name(results[i].code));
	ev_ledger_add(&ledger, round_no, batch, tenant, count, rc == 0 ? EV_ACKED : state_if_failed);
	free(slots);
	free(events);
	free(results);
	return rc;
}

/* Re-sends batch `batch` unchanged; returns tally_ingest's code and the
 * number of results equal to `code` in *matching. */
static int batch_resend(tally_store *s, uint32_t batch, int code, uint32_t *matching)
{
	ev_batch *b = ev_ledger_find(&ledger, round_no, batch);
	cr_assert_not_null(b);
	ev_event *slots = calloc(b->count + 1, sizeof(*slots));
	tally_event *events = calloc(b->count + 1, sizeof(*events));
	tally_ingest_result *results = calloc(b->count + 1, sizeof(*results));
	cr_assert(slots && events && results);
	for (uint32_t i = 0; i < b->count; i++) {
		ev_make(&slots[i], ledger.seed, BASE_US, round_no, batch, i);
		events[i] = slots[i].event;
	}
	int rc = tally_ingest(s, ledger.tenants[b->tenant], events, b->count, results);
	*matching = 0;
	for (uint32_t i = 0; rc == 0 && i < b->count; i++)
		*matching += results[i].code == code;
	free(slots);
	free(events);
	free(results);
	return rc;
}

/* Re-sends every batch known to be stored: each event must be a DUPLICATE
 * (the fingerprint index was rebuilt from segments and WAL after a
 * failure). */
static void expect_resend_duplicates(tally_store *s, const char *when)
{
	for (uint32_t batch = 0; batch < ledger.rounds[round_no].batch_count; batch++) {
		ev_batch *b = ev_ledger_find(&ledger, round_no, batch);
		if (b->state != EV_ACKED && b->state != EV_PRESENT)
			continue;
		uint32_t matching = 0;
		int rc = batch_resend(s, batch, TALLY_DUPLICATE, &matching);
		cr_assert_eq(rc, 0, "%s: re-send of batch %u: %s", when, batch, tally_strerror(rc));
		cr_expect_eq(matching, b->count, "%s: re-sent batch %u: %u of %u DUPLICATE", when, batch,
			     matching, b->count);
	}
}

/* Every acknowledged event once, exact; unknown batches whole or absent;
 * nothing else; and the stats count exactly the rows the scans saw. */
static void verify(tally_store *s, const char *when)
{
	ev_report *report = calloc(1, sizeof(*report));
	cr_assert_not_null(report);
	for (int by_day = 0; by_day < 2; by_day++) {
		memset(report, 0, sizeof(*report));
		ev_ledger_verify(&ledger, s, by_day, report);
		cr_assert_eq(report->problem_count, 0, "%s: %d problems (%" PRIu64 " events scanned):\n%s",
			     when, report->problem_count, report->events_scanned, report->text);
	}
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_assert_eq(report->events_scanned, ev_ledger_present_events(&ledger),
		     "%s: scanned %" PRIu64 ", present %" PRIu64, when, report->events_scanned,
		     ev_ledger_present_events(&ledger));
	cr_assert_eq(stats.segment_rows + stats.events_memtable, report->events_scanned,
		     "%s: stats say %" PRIu64 " segment rows + %" PRIu64 " memtable rows, scans saw %" PRIu64,
		     when, stats.segment_rows, stats.events_memtable, report->events_scanned);
	free(report);
}

static int ledger_state(uint32_t batch)
{
	ev_batch *b = ev_ledger_find(&ledger, round_no, batch);
	cr_assert_not_null(b);
	return b->state;
}

/* Names in DIR/sub ending with suffix ("" for every name), up to 32. */
typedef struct dir_listing {
	int count;
	char names[32][64];
} dir_listing;

static dir_listing dir_list(const char *sub, const char *suffix)
{
	dir_listing l;
	memset(&l, 0, sizeof(l));
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	DIR *d = opendir(path);
	cr_assert_not_null(d, "opendir %s: %s", path, strerror(errno));
	struct dirent *entry;
	while ((entry = readdir(d))) {
		size_t n = strlen(entry->d_name), m = strlen(suffix);
		if (entry->d_name[0] == '.' || n < m || strcmp(entry->d_name + n - m, suffix) != 0)
			continue;
		if (l.count < 32)
			snprintf(l.names[l.count], sizeof(l.names[0]), "%s", entry->d_name);
		l.count++;
	}
	closedir(d);
	return l;
}

static void expect_segments_dir_holds_only_live_files(tally_store *s, const char *when)
{
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	dir_listing all = dir_list("segments", "");
	dir_listing seg = dir_list("segments", ".seg");
	cr_expect_eq(all.count, seg.count, "%s: segments/ holds %d names, %d of them .seg (first: %s)",
		     when, all.count, seg.count, all.names[0]);
	cr_expect_eq((uint64_t)seg.count, stats.segment_file_count,
		     "%s: %d .seg files on disk, %" PRIu64 " live", when, seg.count,
		     stats.segment_file_count);
}

static bool contains(const char *haystack, const char *needle)
{
	return strstr(haystack, needle) != NULL;
}

static void ingest_acked(tally_store *s, int batches)
{
	for (int i = 0; i < batches; i++) {
		int rc = batch_ingest(s, BATCH_EVENTS, EV_MAYBE);
		cr_assert_eq(rc, 0, "ingest: %s: %s", tally_strerror(rc), tally_store_errmsg(s));
	}
}

/* One more acknowledged batch on s (opened over p), then the power fails
 * (the close changes nothing on disk); a store opened on the disk left
 * holds every acknowledged event once, and each re-sent is a DUPLICATE.
 * Destroys p. */
static void ingest_acked_then_power_cut(tally_store *s, power_io *p)
{
	ingest_acked(s, 1);
	power_io_fail_after(p, 1);
	tally_store_close(s);
	cr_assert_eq(power_io_cut(p), 0);
	power_io_destroy(p);
	s = store_open();
	verify(s, "open after the power cut");
	expect_resend_duplicates(s, "open after the power cut");
	cr_assert_eq(tally_store_close(s), 0);
}

/* After a WAL failure that made the store read-only: later writes are
 * refused with TALLY_E_READONLY, reads still work, flush and close report
 * the sticky error. Checks stats.sticky_error == sticky. */
static void expect_read_only(tally_store *s, int sticky)
{
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_expect_eq(stats.sticky_error, sticky, "sticky_error %d (%s), expected %d (%s)",
		     stats.sticky_error, tally_strerror(stats.sticky_error), sticky,
		     tally_strerror(sticky));
	int rc = batch_ingest(s, BATCH_EVENTS, EV_ABSENT);
	cr_expect_eq(rc, TALLY_E_READONLY, "ingest after the failure: %d (%s)", rc, tally_strerror(rc));
	tally_ingest_result result;
	rc = tally_ingest(s, ledger.tenants[0], NULL, 0, &result);
	cr_expect_eq(rc, TALLY_E_READONLY, "empty ingest after the failure: %d (%s)", rc,
		     tally_strerror(rc));
	uint32_t matching = 0;
	rc = batch_resend(s, 0, TALLY_DUPLICATE, &matching);
	cr_expect_eq(rc, TALLY_E_READONLY, "duplicate-only ingest after the failure: %d (%s)", rc,
		     tally_strerror(rc));
	rc = tally_flush(s);
	cr_expect_eq(rc, sticky, "flush after the failure: %d (%s)", rc, tally_strerror(rc));
	rc = tally_compact(s);
	cr_expect_eq(rc, sticky, "compaction after the failure: %d (%s)", rc, tally_strerror(rc));
}

/* ---- WAL failures ---------------------------------------------------------- */

/*
 * A failed WAL fsync. The batch that needed it fails with -EIO and is not
 * acknowledged; the store refuses writes with TALLY_E_READONLY; its errmsg
 * says the WAL fsync failed (and tally_store_errmsg_copy copies it, cut to
 * the buffer given); close reports -EIO.
 *
 * What survives: fault_io's failed fsync leaves the bytes the WAL wrote just
 * before it in the page cache, and recovery replays every valid record (it
 * fsyncs the newest file first). So the failed batch is observed wholly
 * present after the reopen — pinned below, because recovery decides and
 * must decide the same way every time; all-or-nothing is checked by the
 * ledger (EV_MAYBE), and re-sending it gives DUPLICATE for every event.
 */
Test(faults, wal_fsync_eio_fails_the_batch_and_the_store_turns_read_only)
{
	tally_store *s = store_open();
	ingest_acked(s, 5);
	fault_io_path_filter_set(fio, ".wal");
	fault_io_fsync_fail_nth(fio, 1, EIO);
	int rc = batch_ingest(s, BATCH_EVENTS, EV_MAYBE);
	cr_assert_eq(rc, -EIO, "ingest whose fsync failed: %d (%s)", rc, tally_strerror(rc));
	const char *errmsg = tally_store_errmsg(s);
	cr_expect(contains(errmsg, "fsync") && contains(errmsg, strerror(EIO)),
		  "errmsg names the failed fsync: %s", errmsg);
	/* The copy any thread may take: the same text, cut to the buffer. */
	char copy[TALLY_ERRMSG_SIZE], cut[8];
	tally_store_errmsg_copy(s, copy, sizeof(copy));
	cr_expect_str_eq(copy, errmsg);
	tally_store_errmsg_copy(s, cut, sizeof(cut));
	cr_expect_eq(strlen(cut), sizeof(cut) - 1);
	cr_expect_eq(strncmp(cut, errmsg, sizeof(cut) - 1), 0);
	expect_read_only(s, -EIO);
	fault_io_faults_off(fio);
	rc = tally_store_close(s);
	cr_expect_eq(rc, -EIO, "close of the failed store: %d (%s)", rc, tally_strerror(rc));

	s = store_open();
	verify(s, "reopen after the WAL fsync failure");
	cr_expect_eq(ledger_state(5), EV_PRESENT, "the batch whose fsync failed (state %d)",
		     ledger_state(5));
	cr_expect_eq(ledger_state(6), EV_ABSENT);
	uint32_t matching = 0;
	cr_assert_eq(batch_resend(s, 5, TALLY_DUPLICATE, &matching), 0);
	cr_expect_eq(matching, BATCH_EVENTS, "re-sent failed batch: %u of %u DUPLICATE", matching,
		     BATCH_EVENTS);
	ingest_acked(s, 2);
	cr_assert_eq(tally_flush(s), 0, "flush: %s", tally_store_errmsg(s));
	verify(s, "after new ingests and a flush");
	cr_assert_eq(tally_store_close(s), 0);
	s = store_open();
	verify(s, "second reopen");
	cr_assert_eq(tally_store_close(s), 0);
}

/*
 * Description: the PostgreSQL fsync lesson at recovery. A WAL fsync fails
 * under a power_io that models Linux (support/power_io.h): the failed
 * batch's pages stay readable, but they are lost at a power cut whatever
 * later fsyncs say. The store is opened again on the same "kernel", the
 * failed batch is re-sent and acknowledged (every event DUPLICATE: the
 * open replayed it), a new batch is acknowledged after it, and then the
 * power fails. Every acknowledged batch must be there once after the cut:
 * the open wrote the newest WAL file again before it trusted what it read.
 * (Before it did, the re-sent batch was acknowledged from pages that were
 * never on disk, and the store refused to start after the cut: "missing
 * WAL", the first file ending before the second began.)
 */
Test(faults, a_batch_re_sent_after_a_failed_wal_fsync_survives_a_power_cut)
{
	power_io *p = power_io_create(fault_io_table(fio));
	cr_assert_not_null(p);
	tally_store *s = store_open_with(power_io_table(p));
	ingest_acked(s, 5);
	fault_io_path_filter_set(fio, ".wal");
	fault_io_fsync_fail_nth(fio, 1, EIO);
	cr_assert_eq(batch_ingest(s, BATCH_EVENTS, EV_MAYBE), -EIO);
	fault_io_faults_off(fio);
	cr_expect_eq(tally_store_close(s), -EIO);

	s = store_open_with(power_io_table(p));
	uint32_t matching = 0;
	cr_assert_eq(batch_resend(s, 5, TALLY_DUPLICATE, &matching), 0);
	cr_assert_eq(matching, BATCH_EVENTS, "re-sent batch: %u of %u DUPLICATE", matching,
		     BATCH_EVENTS);
	ev_ledger_find(&ledger, round_no, 5)->state = EV_ACKED; /* acknowledged now */
	ingest_acked_then_power_cut(s, p);
}

/* Description: a store opened on a directory that does not exist yet makes
 * it, and makes its entry in its parent durable before it acknowledges
 * anything: after a power cut the directory is there with every
 * acknowledged event. (Before, nothing fsynced the parent, and the cut
 * took the directory and the events with it.) */
Test(faults, a_new_store_directory_survives_a_power_cut)
{
	char path[sizeof(dir) + 8];
	snprintf(path, sizeof(path), "%s/new", dir);
	power_io *p = power_io_create(fault_io_table(fio));
	cr_assert_not_null(p);
	tally_store *s = store_open_at(path, power_io_table(p));
	ingest_acked(s, 2);
	power_io_fail_after(p, 1);
	tally_store_close(s);
	cr_assert_eq(power_io_cut(p), 0);
	power_io_destroy(p);

	s = store_open_at(path, fault_io_table(fio));
	verify(s, "open after the power cut");
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: the same for a directory an operator made (not synced in
 * its parent) when the first open wrote the MANIFEST and then could not
 * fsync the parent (EIO, the open refused): the next open finds
 * the MANIFEST and still makes the directory's entry durable before it
 * acknowledges anything, so a power cut keeps the directory and every
 * event acknowledged in it. (Before, only the open that wrote a new
 * MANIFEST fsynced the parent: the cut took the directory and all 2
 * acknowledged batches; found by review.) */
Test(faults, a_store_directory_whose_first_open_failed_survives_a_power_cut)
{
	char path[sizeof(dir) + 8];
	snprintf(path, sizeof(path), "%s/new", dir);
	power_io *p = power_io_create(fault_io_table(fio));
	cr_assert_not_null(p);
	const tally_io *power = power_io_table(p);
	cr_assert_eq(power->mkdir(power, path, 0700), 0, "the operator's mkdir");
	fault_io_fsync_dir_fail_at(fio, dir, EIO);
	tally_options o;
	tally_options_default(&o);
	o.io = power;
	o.background = false;
	tally_store *s = NULL;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_store_open(path, &o, &s, errmsg), -EIO, "%s", errmsg);
	cr_expect(contains(errmsg, "fsync the directory holding"), "%s", errmsg);
	cr_assert_null(s);
	fault_io_fsync_dir_fail_at(fio, NULL, 0);

	s = store_open_at(path, power);
	ingest_acked(s, 2);
	power_io_fail_after(p, 1);
	tally_store_close(s);
	cr_assert_eq(power_io_cut(p), 0);
	power_io_destroy(p);

	s = store_open_at(path, fault_io_table(fio));
	verify(s, "open after the power cut");
	cr_assert_eq(tally_store_close(s), 0);
}

/*
 * Other ways the WAL can fail: the fsync of a new WAL file's header (the
 * first record after open, and after a flush rotated the WAL), a pwrite
 * that fails outright, and a new WAL file that cannot be created. Each
 * fails the batch that needed it, makes the store read-only and leaves a
 * directory from which every acknowledged event is recovered; the failed
 * batch is absent (its record never reached the file).
 */
typedef struct wal_fault {
	const char *name;
	int kind;          /* 0 fsync nth, 1 pwrite nth, 2 open, 3 directory fsync */
	uint64_t nth;
	bool flush_first;  /* flush before arming the fault: the next record starts a file */
	int error;         /* what tally_ingest returns */
} wal_fault;

static void wal_fault_run(const wal_fault *f)
{
	tally_store *s = store_open();
	ingest_acked(s, 3);
	if (f->flush_first)
		cr_assert_eq(tally_flush(s), 0, "flush: %s", tally_store_errmsg(s));
	fault_io_path_filter_set(fio, ".wal");
	if (f->kind == 0)
		fault_io_fsync_fail_nth(fio, f->nth, EIO);
	else if (f->kind == 1)
		fault_io_pwrite_fail_nth(fio, f->nth, EIO);
	else if (f->kind == 2)
		fault_io_open_fail(fio, ".wal", EACCES);
	else
		fault_io_fsync_dir_fail(fio, EIO);
	uint32_t failed = ledger.rounds[round_no].batch_count;
	int rc = batch_ingest(s, BATCH_EVENTS, EV_MAYBE);
	cr_assert_eq(rc, f->error, "%s: ingest returned %d (%s), expected %d (%s)", f->name, rc,
		     tally_strerror(rc), f->error, tally_strerror(f->error));
	expect_read_only(s, f->error);
	fault_io_faults_off(fio);
	rc = tally_store_close(s);
	cr_expect_eq(rc, f->error, "%s: close: %d (%s)", f->name, rc, tally_strerror(rc));
	s = store_open();
	verify(s, f->name);
	/* None of these failures let the batch's record reach the file. */
	cr_expect_eq(ledger_state(failed), EV_ABSENT, "%s: the failed batch (state %d)", f->name,
		     ledger_state(failed));
	ingest_acked(s, 1);
	cr_assert_eq(tally_store_close(s), 0);
	s = store_open();
	verify(s, f->name);
	cr_assert_eq(tally_store_close(s), 0);
}

Test(faults, wal_fsync_eio_on_the_header_of_the_first_file)
{
	/* Open creates no WAL file; the first record does: header, fdatasync
	 * (fsync 1 on .wal), directory fsync, record, fdatasync (fsync 2). */
	fault_io_path_filter_set(fio, ".wal");
	fault_io_fsync_fail_nth(fio, 1, EIO);
	tally_store *s = store_open();
	int rc = batch_ingest(s, BATCH_EVENTS, EV_MAYBE);
	cr_assert_eq(rc, -EIO, "first ingest: %d (%s)", rc, tally_strerror(rc));
	expect_read_only(s, -EIO);
	fault_io_faults_off(fio);
	cr_expect_eq(tally_store_close(s), -EIO);
	s = store_open();
	verify(s, "reopen after a failed WAL header fsync");
	cr_expect_eq(ledger_state(0), EV_ABSENT, "no record was written after the failed header");
	ingest_acked(s, 2);
	verify(s, "new ingests after the reopen");
	cr_assert_eq(tally_store_close(s), 0);
}

Test(faults, wal_fsync_eio_on_the_header_of_the_file_after_a_flush)
{
	wal_fault f = {"fsync of the new WAL file's header after a flush", 0, 1, true, -EIO};
	wal_fault_run(&f);
}

Test(faults, wal_pwrite_eio)
{
	wal_fault f = {"WAL pwrite EIO", 1, 1, false, -EIO};
	wal_fault_run(&f);
}

Test(faults, wal_directory_fsync_eio_for_the_next_file_after_a_flush)
{
	wal_fault f = {"directory fsync for the next WAL file after a flush", 3, 0, true, -EIO};
	wal_fault_run(&f);
}

Test(faults, wal_open_failure_of_the_next_file_after_a_flush)
{
	wal_fault f = {"open of the next WAL file after a flush", 2, 0, true, -EACCES};
	wal_fault_run(&f);
}

/*
 * The disk fills while the WAL is written: the batch whose record did not
 * fit fails with -ENOSPC (part of its record reached the file), the store
 * turns read-only, and the reopen truncates the torn record: that batch is
 * absent, every acknowledged one present once.
 */
Test(faults, wal_enospc_mid_run_then_recovery_truncates_the_torn_record)
{
	tally_store *s = store_open();
	ingest_acked(s, 2);
	/* Measure one batch's WAL write, then leave room for about 3.5 more. */
	fault_io_path_filter_set(fio, ".wal");
	fault_io_counts_reset(fio);
	ingest_acked(s, 1);
	fault_io_counts counts;
	fault_io_counts_get(fio, &counts);
	uint64_t batch_bytes = counts.pwrite_bytes;
	cr_assert_gt(batch_bytes, 1000, "one batch of %d events wrote %" PRIu64 " WAL bytes",
		     BATCH_EVENTS, batch_bytes);
	fault_io_disk_limit_set(fio, batch_bytes * 7 / 2);
	int rc = 0;
	uint32_t acked_after_limit = 0, failed = 0;
	for (int i = 0; i < 100 && rc == 0; i++) {
		failed = ledger.rounds[round_no].batch_count;
		rc = batch_ingest(s, BATCH_EVENTS, EV_MAYBE);
		acked_after_limit += rc == 0;
	}
	cr_assert_eq(rc, -ENOSPC, "the ingest that filled the disk: %d (%s)", rc, tally_strerror(rc));
	cr_expect_geq(acked_after_limit, 2, "the disk filled mid-run (%u batches fit)", acked_after_limit);
	const char *errmsg = tally_store_errmsg(s);
	cr_expect(contains(errmsg, strerror(ENOSPC)), "errmsg names the failure: %s", errmsg);
	expect_read_only(s, -ENOSPC);
	fault_io_faults_off(fio);
	cr_expect_eq(tally_store_close(s), -ENOSPC);

	s = store_open();
	verify(s, "reopen after ENOSPC on the WAL");
	cr_expect_eq(ledger_state(failed), EV_ABSENT, "the batch cut by ENOSPC was truncated away");
	ingest_acked(s, 2);
	cr_assert_eq(tally_flush(s), 0, "flush: %s", tally_store_errmsg(s));
	ingest_acked(s, 1);
	cr_assert_eq(tally_store_close(s), 0);
	s = store_open();
	verify(s, "second reopen after ENOSPC on the WAL");
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- short writes ------------------------------------------------------------ */

/* Every pwrite (WAL, segments, MANIFEST) writes at most 7 bytes: ingest,
 * flush, compaction and recovery behave exactly as with whole writes. */
Test(faults, short_writes_everywhere_are_transparent)
{
	fault_io_short_write_set(fio, SHORT_WRITE_BYTES);
	tally_store *s = store_open();
	ingest_acked(s, 4);
	cr_assert_eq(tally_flush(s), 0, "flush 1: %s", tally_store_errmsg(s));
	ingest_acked(s, 3);
	cr_assert_eq(tally_flush(s), 0, "flush 2: %s", tally_store_errmsg(s));
	ingest_acked(s, 2);
	cr_assert_eq(tally_flush(s), 0, "flush 3: %s", tally_store_errmsg(s));
	cr_assert_eq(tally_compact(s), 0, "compaction: %s", tally_store_errmsg(s));
	ingest_acked(s, 2); /* these stay in the WAL */
	verify(s, "short writes, before close");
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_expect_eq(stats.segment_file_count, 1);
	cr_expect_eq(stats.segment_rows, 9 * BATCH_EVENTS);
	cr_expect_eq(stats.events_memtable, 2 * BATCH_EVENTS);
	cr_assert_eq(tally_store_close(s), 0);

	s = store_open(); /* still 7 bytes per write */
	verify(s, "short writes, after reopen");
	ingest_acked(s, 1);
	cr_assert_eq(tally_flush(s), 0, "flush 4: %s", tally_store_errmsg(s));
	cr_assert_eq(tally_compact(s), 0, "compaction 2: %s", tally_store_errmsg(s));
	cr_assert_eq(tally_store_close(s), 0);
	fault_io_counts counts;
	fault_io_counts_get(fio, &counts);
	cr_expect_gt(counts.fault_count, 1000, "writes were really cut: %" PRIu64 " short writes",
		     counts.fault_count);

	fault_io_faults_off(fio);
	s = store_open();
	verify(s, "whole writes again, after reopen");
	expect_segments_dir_holds_only_live_files(s, "after short writes");
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- segment write failures during a flush ------------------------------------ */

/*
 * A flush whose segment file cannot be written fails with the error and a
 * message naming the file; the store is not read-only (a segment failure
 * only fails that flush; store.c essay, point 6); no .seg or .tmp file is
 * left in segments/; writes go on; once the disk is healthy the next
 * tally_flush publishes the frozen memtables and everything is there once,
 * before and after a reopen, and every re-sent batch is a DUPLICATE.
 */
typedef struct segment_fault {
	const char *name;
	int kind;         /* 0 disk limit, 1 fsync nth, 2 open, 3 fsync_dir, 4 rename, 5 pwrite */
	uint64_t bytes;   /* disk limit */
	int error;        /* what tally_flush returns */
	bool names_file;  /* the message names the segment file */
} segment_fault;

static void segment_fault_run(const segment_fault *f)
{
	tally_store *s = store_open();
	ingest_acked(s, 4);
	if (f->kind != 3)
		fault_io_path_filter_set(fio, ".seg");
	if (f->kind == 0)
		fault_io_disk_limit_set(fio, f->bytes);
	else if (f->kind == 1)
		fault_io_fsync_fail_nth(fio, 1, EIO);
	else if (f->kind == 2)
		fault_io_open_fail(fio, ".seg", EACCES);
	else if (f->kind == 3)
		fault_io_fsync_dir_fail(fio, EIO);
	else if (f->kind == 4)
		fault_io_rename_fail(fio, EIO);
	else
		fault_io_pwrite_fail_nth(fio, 1, EIO);
	int rc = tally_flush(s);
	cr_assert_eq(rc, f->error, "%s: flush returned %d (%s), expected %d", f->name, rc,
		     tally_strerror(rc), f->error);
	const char *errmsg = tally_store_errmsg(s);
	cr_expect(contains(errmsg, tally_strerror(f->error)), "%s: errmsg names the error: %s",
		  f->name, errmsg);
	if (f->names_file)
		cr_expect(contains(errmsg, "/segments/0000000000000001.seg"),
			  "%s: errmsg names the segment file: %s", f->name, errmsg);
	fault_io_faults_off(fio);

	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_expect_eq(stats.sticky_error, 0, "%s: a failed segment write is not sticky (%d)", f->name,
		     stats.sticky_error);
	cr_expect_eq(stats.flush_failing, f->error, "%s: the stats name the failing flush's error "
		     "(%d)", f->name, stats.flush_failing);
	cr_expect_eq(stats.segment_file_count, 0);
	dir_listing left = dir_list("segments", "");
	cr_expect_eq(left.count, 0, "%s: segments/ holds %s", f->name, left.names[0]);
	verify(s, "after the failed flush");
	expect_resend_duplicates(s, "after the failed flush (frozen memtables)");
	rc = batch_ingest(s, BATCH_EVENTS, EV_MAYBE);
	cr_assert_eq(rc, 0, "%s: ingest after the failed flush: %d (%s)", f->name, rc,
		     tally_strerror(rc));

	rc = tally_flush(s);
	cr_assert_eq(rc, 0, "%s: flush with a healthy disk: %s", f->name, tally_store_errmsg(s));
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_expect_geq(stats.segment_file_count, 1);
	cr_expect_eq(stats.flush_failing, 0, "%s: a flush succeeded", f->name);
	cr_expect_geq(stats.segment_rows, 4 * BATCH_EVENTS, "%s: the retried flush wrote the "
		      "frozen memtables", f->name);
	verify(s, "after the successful flush");
	expect_resend_duplicates(s, f->name);
	cr_assert_eq(tally_store_close(s), 0);

	s = store_open();
	verify(s, "reopen after the failed and the successful flush");
	expect_segments_dir_holds_only_live_files(s, f->name);
	ingest_acked(s, 1);
	cr_assert_eq(tally_flush(s), 0);
	cr_assert_eq(tally_compact(s), 0);
	verify(s, "flush and compaction after the reopen");
	cr_assert_eq(tally_store_close(s), 0);
}

Test(faults, segment_enospc_before_any_byte)
{
	segment_fault f = {"segment ENOSPC at byte 0", 0, 0, -ENOSPC, true};
	segment_fault_run(&f);
}

Test(faults, segment_enospc_in_the_middle_of_the_file)
{
	segment_fault f = {"segment ENOSPC after 3000 bytes", 0, 3000, -ENOSPC, true};
	segment_fault_run(&f);
}

Test(faults, segment_fsync_eio)
{
	segment_fault f = {"segment fsync EIO", 1, 0, -EIO, true};
	segment_fault_run(&f);
}

Test(faults, segment_create_fails)
{
	segment_fault f = {"segment temp file cannot be created", 2, 0, -EACCES, true};
	segment_fault_run(&f);
}

Test(faults, segment_rename_eio)
{
	segment_fault f = {"segment rename EIO", 4, 0, -EIO, true};
	segment_fault_run(&f);
}

Test(faults, segment_pwrite_eio)
{
	segment_fault f = {"segment pwrite EIO", 5, 0, -EIO, true};
	segment_fault_run(&f);
}

Test(faults, segment_directory_fsync_eio)
{
	/* The rename happened; the directory fsync after it failed. The file is
	 * not published: its new name is removed as well (before, it stayed
	 * until a reopen, one more file for each retry). */
	segment_fault f = {"segments/ directory fsync EIO", 3, 0, -EIO, false};
	segment_fault_run(&f);
}

/* ---- MANIFEST publish failures ------------------------------------------------- */

/*
 * The manifest is replaced by write temp -> fsync -> rename -> fsync dir.
 * When its fsync or its rename fails during a flush or a compaction, the
 * call returns the error, the errmsg names MANIFEST, and the store refuses
 * writes (it cannot know what reached the disk). A reopen with a healthy
 * disk reads the old manifest and replays the WAL: every acknowledged event
 * is present exactly once, and the segment file written for the failed
 * publish is removed.
 */
typedef struct manifest_fault {
	const char *name;
	int kind;        /* 0 fsync of MANIFEST.tmp, 1 rename, 2 no space for MANIFEST.tmp */
	bool compaction; /* the failing publish is a compaction's, not a flush's */
} manifest_fault;

static void manifest_fault_run(const manifest_fault *f)
{
	tally_store *s = store_open();
	ingest_acked(s, 3);
	cr_assert_eq(tally_flush(s), 0, "flush 1: %s", tally_store_errmsg(s));
	ingest_acked(s, 3);
	if (f->compaction)
		cr_assert_eq(tally_flush(s), 0, "flush 2: %s", tally_store_errmsg(s));
	ingest_acked(s, 2);
	fault_io_path_filter_set(fio, "MANIFEST");
	int error = f->kind == 2 ? -ENOSPC : -EIO;
	if (f->kind == 0)
		fault_io_fsync_fail_nth(fio, 1, EIO);
	else if (f->kind == 1)
		fault_io_rename_fail(fio, EIO);
	else
		fault_io_disk_limit_set(fio, 20);
	int rc = f->compaction ? tally_compact(s) : tally_flush(s);
	cr_assert_eq(rc, error, "%s: returned %d (%s)", f->name, rc, tally_strerror(rc));
	const char *errmsg = tally_store_errmsg(s);
	cr_expect(contains(errmsg, tally_strerror(error)), "%s: errmsg names the error: %s", f->name,
		  errmsg);
	dir_listing tmp = dir_list(".", ".tmp");
	cr_expect_eq(tmp.count, 0, "%s: left behind: %s", f->name, tmp.names[0]);
	if (!f->compaction) /* compaction: see compaction_manifest_failure_message_names_the_manifest */
		cr_expect(contains(errmsg, "MANIFEST"), "%s: errmsg names MANIFEST: %s", f->name, errmsg);
	fault_io_faults_off(fio);
	verify(s, "the failed store still reads");
	expect_read_only(s, error);
	cr_expect_eq(tally_store_close(s), error);

	s = store_open();
	verify(s, f->name);
	expect_segments_dir_holds_only_live_files(s, f->name);
	expect_resend_duplicates(s, f->name);
	ingest_acked(s, 1);
	cr_assert_eq(tally_flush(s), 0, "flush after the reopen: %s", tally_store_errmsg(s));
	cr_assert_eq(tally_compact(s), 0, "compaction after the reopen: %s", tally_store_errmsg(s));
	verify(s, "flush and compaction after the reopen");
	cr_assert_eq(tally_store_close(s), 0);
	s = store_open();
	verify(s, "second reopen");
	expect_segments_dir_holds_only_live_files(s, "second reopen");
	cr_assert_eq(tally_store_close(s), 0);
}

Test(faults, manifest_fsync_eio_during_a_flush)
{
	manifest_fault f = {"MANIFEST fsync EIO during a flush", 0, false};
	manifest_fault_run(&f);
}

Test(faults, manifest_rename_eio_during_a_flush)
{
	manifest_fault f = {"MANIFEST rename EIO during a flush", 1, false};
	manifest_fault_run(&f);
}

Test(faults, manifest_enospc_during_a_flush)
{
	manifest_fault f = {"MANIFEST ENOSPC during a flush", 2, false};
	manifest_fault_run(&f);
}

Test(faults, manifest_enospc_during_a_compaction)
{
	manifest_fault f = {"MANIFEST ENOSPC during a compaction", 2, true};
	manifest_fault_run(&f);
}

Test(faults, manifest_fsync_eio_during_a_compaction)
{
	manifest_fault f = {"MANIFEST fsync EIO during a compaction", 0, true};
	manifest_fault_run(&f);
}

Test(faults, manifest_rename_eio_during_a_compaction)
{
	manifest_fault f = {"MANIFEST rename EIO during a compaction", 1, true};
	manifest_fault_run(&f);
}

/* ---- compaction: a failed segment write is not sticky ----------------------- */

/* Compaction whose output cannot be written fails with -ENOSPC naming the
 * file; the inputs stay live and readable, writes go on, and a compaction
 * with a healthy disk merges everything into one file. */
Test(faults, compaction_enospc_keeps_the_inputs_and_is_not_sticky)
{
	tally_store *s = store_open();
	for (int i = 0; i < 3; i++) {
		ingest_acked(s, 2);
		cr_assert_eq(tally_flush(s), 0, "flush %d: %s", i, tally_store_errmsg(s));
	}
	fault_io_path_filter_set(fio, ".seg");
	fault_io_disk_limit_set(fio, 0);
	int rc = tally_compact(s);
	cr_assert_eq(rc, -ENOSPC, "compaction on a full disk: %d (%s)", rc, tally_strerror(rc));
	const char *errmsg = tally_store_errmsg(s);
	cr_expect(contains(errmsg, strerror(ENOSPC)) && contains(errmsg, ".seg"),
		  "errmsg names the segment file and the error: %s", errmsg);
	fault_io_faults_off(fio);
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_expect_eq(stats.sticky_error, 0);
	cr_expect_eq(stats.segment_file_count, 3);
	expect_segments_dir_holds_only_live_files(s, "after the failed compaction");
	verify(s, "after the failed compaction");
	ingest_acked(s, 1);
	cr_assert_eq(tally_compact(s), 0, "compaction with a healthy disk: %s", tally_store_errmsg(s));
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_expect_eq(stats.segment_file_count, 1);
	cr_expect_eq(stats.segment_rows, 6 * BATCH_EVENTS);
	verify(s, "after the compaction");
	cr_assert_eq(tally_store_close(s), 0);
	s = store_open();
	verify(s, "reopen after the compactions");
	expect_segments_dir_holds_only_live_files(s, "reopen after the compactions");
	expect_resend_duplicates(s, "reopen after the compactions");
	cr_assert_eq(tally_store_close(s), 0);
}

/* A failed flush is not retried before close: the frozen memtables are
 * still in the WAL (the manifest's replay LSN did not move), so a reopen
 * replays them with everything written after. */
Test(faults, failed_flush_then_close_recovers_everything_from_the_wal)
{
	tally_store *s = store_open();
	ingest_acked(s, 3);
	fault_io_path_filter_set(fio, ".seg");
	fault_io_disk_limit_set(fio, 0);
	cr_assert_eq(tally_flush(s), -ENOSPC);
	fault_io_faults_off(fio);
	ingest_acked(s, 1);
	cr_assert_eq(tally_store_close(s), 0, "a failed flush is not sticky");
	s = store_open();
	verify(s, "reopen after a failed flush");
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_expect_eq(stats.segment_file_count, 0);
	cr_expect_eq(stats.events_memtable, 4 * BATCH_EVENTS);
	expect_segments_dir_holds_only_live_files(s, "reopen after a failed flush");
	expect_resend_duplicates(s, "reopen after a failed flush");
	cr_assert_eq(tally_flush(s), 0, "flush: %s", tally_store_errmsg(s));
	verify(s, "flush after the reopen");
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- failures while opening --------------------------------------------------- */

/* Recovery fsyncs the newest WAL file before trusting it; if that fails the
 * open fails with a message naming the WAL file, changes nothing, and a
 * later open with a healthy disk recovers everything. */
/* Opens dir as store_open does, expecting the open to fail with `want`,
 * leaving its store NULL; errmsg (TALLY_ERRMSG_SIZE bytes) gets its message. */
static void store_open_refused(int want, char *errmsg)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	tally_store *s = (tally_store *)&o; /* must be set to NULL */
	int rc = tally_store_open(dir, &o, &s, errmsg);
	cr_assert_eq(rc, want, "open: %d (%s): %s", rc, tally_strerror(rc), errmsg);
	cr_expect_null(s);
}

/* After a failed open: an open without faults finds every acknowledged
 * event once, and a resend is all duplicates. */
static void expect_whole_after_a_failed_open(void)
{
	fault_io_faults_off(fio);
	tally_store *s = store_open();
	verify(s, "open after the failed open");
	expect_resend_duplicates(s, "open after the failed open");
	cr_assert_eq(tally_store_close(s), 0);
}

Test(faults, open_fails_cleanly_when_the_recovery_fsync_fails)
{
	tally_store *s = store_open();
	ingest_acked(s, 3);
	cr_assert_eq(tally_store_close(s), 0);
	fault_io_path_filter_set(fio, ".wal");
	fault_io_fsync_fail_nth(fio, 1, EIO);
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	store_open_refused(-EIO, errmsg);
	cr_expect(contains(errmsg, ".wal") && contains(errmsg, "fsync"),
		  "errmsg names the WAL file and the fsync: %s", errmsg);
	expect_whole_after_a_failed_open();
}

/* Description: recovery that cannot open a WAL file (EACCES) refuses the
 * open with that error, naming the file and the step, and changes
 * nothing: an open without the fault recovers every acknowledged event
 * once. */
Test(faults, open_fails_cleanly_when_a_wal_file_cannot_be_opened)
{
	tally_store *s = store_open();
	ingest_acked(s, 3);
	cr_assert_eq(tally_store_close(s), 0);
	fault_io_open_fail(fio, ".wal", EACCES);
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	store_open_refused(-EACCES, errmsg);
	cr_expect(contains(errmsg, "wal: open ") && contains(errmsg, ".wal: ") &&
			  contains(errmsg, tally_strerror(-EACCES)),
		  "errmsg names the step, the WAL file and the error: %s", errmsg);
	expect_whole_after_a_failed_open();
}

/* Creating a store on a full disk: the first MANIFEST cannot be written; the
 * open fails naming it, leaves no MANIFEST.tmp behind, and releases the
 * lock, so an open with space succeeds. */
Test(faults, first_open_on_a_full_disk_fails_and_a_later_open_works)
{
	fault_io_path_filter_set(fio, "MANIFEST");
	fault_io_disk_limit_set(fio, 0);
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	tally_store *s = NULL;
	int rc = tally_store_open(dir, &o, &s, errmsg);
	cr_assert_eq(rc, -ENOSPC, "open: %d (%s): %s", rc, tally_strerror(rc), errmsg);
	cr_expect_null(s);
	cr_expect(contains(errmsg, "MANIFEST") && contains(errmsg, strerror(ENOSPC)),
		  "errmsg names MANIFEST and the error: %s", errmsg);
	dir_listing tmp = dir_list(".", ".tmp");
	cr_expect_eq(tmp.count, 0, "left behind: %s", tmp.names[0]);
	fault_io_faults_off(fio);
	s = store_open();
	ingest_acked(s, 2);
	cr_assert_eq(tally_store_close(s), 0);
	s = store_open();
	verify(s, "reopen");
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- recovery's own writes, and removals that fail --------------------------- */

/* The path of the newest WAL file (names are 16 hex digits: the greatest
 * name is the newest file) and its id. */
static uint64_t wal_newest_path(char *path, size_t size)
{
	dir_listing l = dir_list("wal", ".wal");
	cr_assert(l.count > 0 && l.count <= 32, "%d WAL files", l.count);
	int newest = 0;
	for (int i = 1; i < l.count; i++)
		if (strcmp(l.names[i], l.names[newest]) > 0)
			newest = i;
	snprintf(path, size, "%s/wal/%s", dir, l.names[newest]);
	return strtoull(l.names[newest], NULL, 16);
}

static int64_t file_size_of(const char *path)
{
	struct stat st;
	cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
	return st.st_size;
}

static bool file_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

#define TORN_TAIL_BYTES 100

/* Appends TORN_TAIL_BYTES bytes of 0xa5 to the newest WAL file of the
 * closed store: a record that never finished (no valid record follows).
 * Returns the size before, where recovery cuts the file. */
static int64_t wal_torn_tail_append(char *path, size_t size)
{
	wal_newest_path(path, size);
	int64_t whole = file_size_of(path);
	FILE *f = fopen(path, "ab");
	cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
	unsigned char junk[TORN_TAIL_BYTES];
	memset(junk, 0xa5, sizeof(junk));
	cr_assert_eq(fwrite(junk, 1, sizeof(junk), f), sizeof(junk));
	cr_assert_eq(fclose(f), 0);
	return whole;
}

/* Opens, ingests three acknowledged batches, closes, and tears the tail of
 * the newest WAL file; returns its whole size and sets path. */
static int64_t store_with_a_torn_tail(char *path, size_t size)
{
	tally_store *s = store_open();
	ingest_acked(s, 3);
	cr_assert_eq(tally_store_close(s), 0);
	return wal_torn_tail_append(path, size);
}

static void expect_errmsg(const char *errmsg, const char *step, const char *path, int code)
{
	char want[400];
	snprintf(want, sizeof(want), "wal: %s %s: %s", step, path, tally_strerror(code));
	cr_expect(contains(errmsg, want), "errmsg is \"%s\", not \"%s\"", errmsg, want);
}

/* Description: recovery finds a torn tail in the newest WAL file and
 * cannot cut it (ftruncate EIO): the open fails with that error, naming
 * the step and the file, and the file keeps its bytes. An open without
 * the fault cuts it where the last whole record ends and finds every
 * acknowledged event once. */
Test(faults, open_fails_cleanly_when_a_torn_tail_cannot_be_cut)
{
	char path[256];
	int64_t whole = store_with_a_torn_tail(path, sizeof(path));
	fault_io_path_filter_set(fio, ".wal");
	fault_io_ftruncate_fail(fio, EIO);
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	store_open_refused(-EIO, errmsg);
	expect_errmsg(errmsg, "truncate the torn tail of", path, -EIO);
	cr_expect_eq(file_size_of(path), whole + TORN_TAIL_BYTES, "the failed cut changed the file");
	expect_whole_after_a_failed_open();
	cr_expect_eq(file_size_of(path), whole, "the healthy open cut the torn tail");
}

/* Description: the fsync that makes the cut of a torn tail durable fails
 * (EIO; the second fsync of the file, after the rewrite of the newest
 * file, wal.c): the open fails naming the step and the file; an open
 * without the fault finds every acknowledged event once. */
Test(faults, open_fails_cleanly_when_the_fsync_of_a_cut_tail_fails)
{
	char path[256];
	int64_t whole = store_with_a_torn_tail(path, sizeof(path));
	fault_io_path_filter_set(fio, ".wal");
	fault_io_fsync_fail_nth(fio, 2, EIO);
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	store_open_refused(-EIO, errmsg);
	expect_errmsg(errmsg, "fsync", path, -EIO);
	expect_whole_after_a_failed_open();
	cr_expect_eq(file_size_of(path), whole, "the cut stands");
}

/* Description: the newest WAL file is a torn creation (its header never
 * reached the disk: one block of zeros). Recovery removes it; when the
 * unlink fails (EIO), the open fails with that error naming the step and
 * the file, which stays. An open without the fault removes it and finds
 * every acknowledged event once. */
Test(faults, open_fails_cleanly_when_a_torn_new_wal_file_cannot_be_removed)
{
	tally_store *s = store_open();
	ingest_acked(s, 3);
	cr_assert_eq(tally_store_close(s), 0);
	char path[256];
	uint64_t newest = wal_newest_path(path, sizeof(path));
	snprintf(path, sizeof(path), "%s/wal/%016" PRIx64 ".wal", dir, newest + 1);
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f, "create %s: %s", path, strerror(errno));
	static const unsigned char zeros[4096];
	cr_assert_eq(fwrite(zeros, 1, sizeof(zeros), f), sizeof(zeros));
	cr_assert_eq(fclose(f), 0);

	fault_io_path_filter_set(fio, ".wal");
	fault_io_unlink_fail(fio, EIO);
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	store_open_refused(-EIO, errmsg);
	expect_errmsg(errmsg, "remove the torn file", path, -EIO);
	cr_expect(file_exists(path), "the failed unlink removed %s", path);
	expect_whole_after_a_failed_open();
	cr_expect_not(file_exists(path), "the healthy open removed %s", path);
}

/* Description: a flush whose WAL files cannot be removed afterwards
 * (unlink EIO) still succeeds: its segments and MANIFEST are durable;
 * the store's errmsg says the retirement failed, and writes go on. The
 * file left behind holds only records below the manifest's replay LSN,
 * which a reopen skips: every acknowledged event is found once (none
 * twice), a resend is all duplicates, and the next flush removes it. */
Test(faults, wal_files_a_flush_cannot_remove_are_skipped_by_replay_then_removed)
{
	tally_store *s = store_open();
	ingest_acked(s, 3);
	char covered[256];
	wal_newest_path(covered, sizeof(covered));
	fault_io_path_filter_set(fio, ".wal");
	fault_io_unlink_fail(fio, EIO);
	cr_assert_eq(tally_flush(s), 0, "flush: %s", tally_store_errmsg(s));
	const char *errmsg = tally_store_errmsg(s);
	cr_expect(contains(errmsg, "retire WAL files after a flush") &&
			  contains(errmsg, strerror(EIO)),
		  "errmsg names the step and the error: %s", errmsg);
	cr_expect(file_exists(covered), "the failed unlink removed %s", covered);
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_expect_eq(stats.sticky_error, 0);
	cr_expect_eq(stats.segment_rows, 3 * BATCH_EVENTS);
	cr_expect_eq(stats.events_memtable, 0);
	cr_expect_geq(stats.wal_file_count, 1);
	ingest_acked(s, 2);
	verify(s, "after the failed retirement");
	fault_io_faults_off(fio);
	cr_assert_eq(tally_store_close(s), 0);

	s = store_open();
	verify(s, "reopen with the WAL file the flush left");
	expect_resend_duplicates(s, "reopen with the WAL file the flush left");
	cr_assert_eq(tally_flush(s), 0, "flush: %s", tally_store_errmsg(s));
	cr_expect_not(file_exists(covered), "the next flush removed %s", covered);
	verify(s, "after the next flush");
	cr_assert_eq(tally_store_close(s), 0);
	s = store_open();
	verify(s, "reopen after the next flush");
	cr_assert_eq(tally_store_close(s), 0);
}

/* Description: a compaction whose inputs cannot be removed afterwards
 * (unlink EIO) still succeeds (its output and MANIFEST are durable); the
 * inputs stay behind, named by no manifest, and are not read: every event
 * is seen once. The next open removes them. */
Test(faults, compaction_inputs_that_cannot_be_removed_are_removed_at_open)
{
	tally_store *s = store_open();
	for (int i = 0; i < 3; i++) {
		ingest_acked(s, 2);
		cr_assert_eq(tally_flush(s), 0, "flush %d: %s", i, tally_store_errmsg(s));
	}
	fault_io_path_filter_set(fio, ".seg");
	fault_io_unlink_fail(fio, EIO);
	cr_assert_eq(tally_compact(s), 0, "compaction: %s", tally_store_errmsg(s));
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_expect_eq(stats.sticky_error, 0);
	cr_expect_eq(stats.segment_file_count, 1);
	cr_expect_eq(stats.segment_rows, 6 * BATCH_EVENTS);
	dir_listing seg = dir_list("segments", ".seg");
	cr_expect_eq(seg.count, 4, "the output and the three inputs: %d files", seg.count);
	verify(s, "after the compaction");
	fault_io_faults_off(fio);
	cr_assert_eq(tally_store_close(s), 0);
	s = store_open();
	expect_segments_dir_holds_only_live_files(s, "reopen after the compaction");
	verify(s, "reopen after the compaction");
	expect_resend_duplicates(s, "reopen after the compaction");
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- WAL failures under concurrent writers ------------------------------------ */

/*
 * Four threads ingest while the WAL fails (an fsync EIO after some group
 * commits, or the disk filling up): a group commit then carries several
 * batches, and a full disk can cut a write between or inside records. Every
 * thread ends with the WAL's error (its batch was in the failed group) or
 * TALLY_E_READONLY (refused up front: that batch must never appear). After a
 * reopen every acknowledged batch is there once and every failed batch is
 * whole or absent.
 */
#define WRITER_COUNT 4
#define WRITER_BATCHES_MAX 2000

typedef struct writer {
	tally_store *store;
	int rc;             /* the code that stopped it */
	uint32_t acked;
	uint32_t bad_results; /* results other than ACCEPTED in acknowledged batches */
} writer;

static pthread_mutex_t writer_mutex = PTHREAD_MUTEX_INITIALIZER;
static uint32_t writer_next_batch;

static void *writer_main(void *arg)
{
	writer *w = arg;
	ev_event *slots = calloc(BATCH_EVENTS, sizeof(*slots));
	tally_event *events = calloc(BATCH_EVENTS, sizeof(*events));
	tally_ingest_result *results = calloc(BATCH_EVENTS, sizeof(*results));
	w->rc = -ENOMEM;
	for (int i = 0; slots && events && results && i < WRITER_BATCHES_MAX; i++) {
		pthread_mutex_lock(&writer_mutex);
		uint32_t batch = writer_next_batch++;
		uint32_t tenant = batch % ledger.tenant_count;
		ev_ledger_put(&ledger, round_no, batch, tenant, BATCH_EVENTS, EV_MAYBE);
		pthread_mutex_unlock(&writer_mutex);
		for (uint32_t k = 0; k < BATCH_EVENTS; k++) {
			ev_make(&slots[k], ledger.seed, BASE_US, round_no, batch, k);
			events[k] = slots[k].event;
		}
		int rc = tally_ingest(w->store, ledger.tenants[tenant], events, BATCH_EVENTS, results);
		pthread_mutex_lock(&writer_mutex);
		if (rc == 0 || rc == TALLY_E_READONLY)
			ev_ledger_put(&ledger, round_no, batch, tenant, BATCH_EVENTS,
				      rc == 0 ? EV_ACKED : EV_ABSENT);
		pthread_mutex_unlock(&writer_mutex);
		w->rc = rc;
		if (rc)
			break;
		w->acked++;
		for (uint32_t k = 0; k < BATCH_EVENTS; k++)
			w->bad_results += results[k].code != TALLY_ACCEPTED;
	}
	free(slots);
	free(events);
	free(results);
	return NULL;
}

static void concurrent_wal_failure_run(bool enospc)
{
	tally_store *s = store_open();
	ingest_acked(s, 2);
	writer_next_batch = ledger.rounds[round_no].batch_count;
	fault_io_path_filter_set(fio, ".wal");
	if (enospc)
		fault_io_disk_limit_set(fio, 300u << 10);
	else
		fault_io_fsync_fail_nth(fio, 25, EIO);
	int error = enospc ? -ENOSPC : -EIO;
	writer writers[WRITER_COUNT];
	pthread_t threads[WRITER_COUNT];
	for (int t = 0; t < WRITER_COUNT; t++) {
		writers[t] = (writer){.store = s};
		cr_assert_eq(pthread_create(&threads[t], NULL, writer_main, &writers[t]), 0);
	}
	int failed_with_error = 0;
	for (int t = 0; t < WRITER_COUNT; t++) {
		cr_assert_eq(pthread_join(threads[t], NULL), 0);
		cr_expect(writers[t].rc == error || writers[t].rc == TALLY_E_READONLY,
			  "writer %d stopped with %d (%s) after %u batches", t, writers[t].rc,
			  tally_strerror(writers[t].rc), writers[t].acked);
		cr_expect_eq(writers[t].bad_results, 0);
		failed_with_error += writers[t].rc == error;
	}
	cr_expect_geq(failed_with_error, 1, "at least the batch in the failed group gets %s",
		      tally_strerror(error));
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_expect_eq(stats.sticky_error, error);
	fault_io_faults_off(fio);
	cr_expect_eq(tally_store_close(s), error);

	s = store_open();
	ev_report *report = calloc(1, sizeof(*report));
	cr_assert_not_null(report);
	ev_ledger_verify(&ledger, s, false, report);
	cr_assert_eq(report->problem_count, 0, "%d problems:\n%s", report->problem_count, report->text);
	cr_log_info("%s with %d writers: %u failed batches found present, %u absent",
		    enospc ? "ENOSPC" : "fsync EIO", WRITER_COUNT, report->maybe_present,
		    report->maybe_absent);
	free(report);
	verify(s, "reopen after the concurrent failure");
	expect_resend_duplicates(s, "reopen after the concurrent failure");
	cr_assert_eq(tally_store_close(s), 0);
}

Test(faults, wal_fsync_eio_with_concurrent_writers)
{
	concurrent_wal_failure_run(false);
}

Test(faults, wal_enospc_with_concurrent_writers)
{
	concurrent_wal_failure_run(true);
}

/* ---- engine bugs, each in its smallest form ------------------------------------ */

/*
 * tally.h: tally_flush "Writes every memtable to a new segment file".
 * After a failed flush, the frozen memtables stay for a retry (store.c,
 * point 6); a batch ingested meanwhile goes to a new active memtable. The
 * next tally_flush returns 0 having written only the frozen memtables: the
 * new batch is still in a memtable (and its WAL file is not retired).
 */
Test(faults, flush_after_a_failed_flush_writes_every_memtable)
{
	tally_store *s = store_open();
	ingest_acked(s, 1);
	fault_io_path_filter_set(fio, ".seg");
	fault_io_disk_limit_set(fio, 0);
	cr_assert_eq(tally_flush(s), -ENOSPC);
	fault_io_faults_off(fio);
	ingest_acked(s, 1);
	cr_assert_eq(tally_flush(s), 0, "flush: %s", tally_store_errmsg(s));
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_expect_eq(stats.events_memtable, 0,
		     "tally_flush returned 0 but %" PRIu64 " events are still in memtables",
		     stats.events_memtable);
	cr_expect_eq(stats.segment_rows, 2 * BATCH_EVENTS);
	verify(s, "after the flush");
	cr_assert_eq(tally_store_close(s), 0);
}

/*
 * STYLE.md 4: "Every message names the operation and the path." When the
 * MANIFEST publish of a compaction fails, write_manifest_locked leaves
 * "write DIR/MANIFEST: ..." in the store's errmsg, but the compaction's
 * failure path then overwrites it with "compaction: <strerror>" (its local
 * errmsg is empty), so the message names neither the file nor the step.
 * The same failure during a flush keeps the MANIFEST message.
 */
Test(faults, compaction_manifest_failure_message_names_the_manifest)
{
	tally_store *s = store_open();
	for (int i = 0; i < 2; i++) {
		ingest_acked(s, 1);
		cr_assert_eq(tally_flush(s), 0);
	}
	fault_io_path_filter_set(fio, "MANIFEST");
	fault_io_fsync_fail_nth(fio, 1, EIO);
	cr_assert_eq(tally_compact(s), -EIO);
	const char *errmsg = tally_store_errmsg(s);
	cr_expect(contains(errmsg, "/MANIFEST"), "errmsg names the manifest: \"%s\"", errmsg);
	fault_io_reset(fio);
	cr_expect_eq(tally_store_close(s), -EIO);
}

/*
 * Undefined behaviour, seen only under `make asan` (UBSan aborts the test):
 * when the first string a memtable dictionary interns is empty, its arena
 * has no buffer yet, so strdict_get returns {NULL, 0}; interning "" again
 * then calls memcmp(NULL, "", 0) (engine/strdict.c, strdict_intern), and
 * memcmp's arguments must not be NULL even for size 0. The crash test hit
 * it with events whose agent is empty; two such events are enough.
 */
Test(faults, an_empty_dimension_string_interned_twice)
{
	tally_store *s = store_open();
	ev_event slots[2];
	tally_event events[2];
	tally_ingest_result results[2];
	for (uint32_t i = 0; i < 2; i++) {
		ev_make(&slots[i], ledger.seed, BASE_US, round_no, 0, i);
		slots[i].event.agent = (tally_str){slots[i].agent, 0};
		events[i] = slots[i].event;
	}
	cr_assert_eq(tally_ingest(s, ledger.tenants[0], events, 2, results), 0);
	cr_expect_eq(results[0].code, TALLY_ACCEPTED);
	cr_expect_eq(results[1].code, TALLY_ACCEPTED);
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_expect_eq(stats.events_memtable, 2);
	cr_assert_eq(tally_store_close(s), 0);
}

/*
 * engine/wal.c, wal_writer_wait_window: the group commit window is measured
 * on io->now_us, the wall clock (tally_io.h), and the writer sleeps for the
 * whole remaining time in one pthread_cond_timedwait on CLOCK_MONOTONIC.
 * When the wall clock steps back (NTP, an operator) by D while a record
 * waits, "remaining" becomes D + window and the writer sleeps D: every
 * ingest stalls for D (an hour here), and setting the clock right again
 * does not wake it — only an append that must wait for buffer space, or
 * close, does. Expected: a commit completes about one window after the
 * clock has passed pending_since + window, whatever the clock did between.
 *
 * The test first shows the control case (the frozen clock moved forward
 * past the window: the ingest completes), then steps the clock back by an
 * hour while an ingest waits, moves it an hour forward again, and expects
 * the ingest to finish within 2 s. To end the test either way, a third,
 * larger ingest blocks for buffer space (wal_buffer_bytes_max is 1 KiB: a
 * one-event record fits, a 200-event one does not), which wakes the writer.
 */
#define WINDOW_US 1000
#define HOUR_US (INT64_C(3600) * 1000000)

typedef struct clock_ingest {
	tally_store *store;
	uint32_t batch;
	uint32_t count;
	int rc;
	int done; /* guarded by writer_mutex */
} clock_ingest;

static void *clock_ingest_main(void *arg)
{
	clock_ingest *ci = arg;
	ev_event *slots = calloc(ci->count, sizeof(*slots));
	tally_event *events = calloc(ci->count, sizeof(*events));
	tally_ingest_result *results = calloc(ci->count, sizeof(*results));
	int rc = -ENOMEM;
	if (slots && events && results) {
		for (uint32_t i = 0; i < ci->count; i++) {
			ev_make(&slots[i], ledger.seed, BASE_US, round_no, ci->batch, i);
			events[i] = slots[i].event;
		}
		rc = tally_ingest(ci->store, ledger.tenants[0], events, ci->count, results);
	}
	free(slots);
	free(events);
	free(results);
	pthread_mutex_lock(&writer_mutex);
	ci->rc = rc;
	ci->done = 1;
	pthread_mutex_unlock(&writer_mutex);
	return NULL;
}

/* Waits up to ms_max for ci to finish; returns whether it did. */
static bool clock_ingest_wait(clock_ingest *ci, int ms_max)
{
	for (int ms = 0; ms < ms_max; ms += 5) {
		pthread_mutex_lock(&writer_mutex);
		int done = ci->done;
		pthread_mutex_unlock(&writer_mutex);
		if (done)
			return true;
		struct timespec pause = {0, 5 * 1000000};
		nanosleep(&pause, NULL);
	}
	return false;
}

Test(faults, group_commit_window_survives_a_wall_clock_step_back)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	o.group_commit_window_us = WINDOW_US;
	o.wal_buffer_bytes_max = 1024;
	tally_store *s = NULL;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_store_open(dir, &o, &s, errmsg), 0, "%s", errmsg);
	for (uint32_t b = 0; b < 3; b++)
		ev_ledger_add(&ledger, round_no, b, 0, b < 2 ? 1 : 200, EV_MAYBE);

	/* Control: the clock moves forward past the window. */
	clock_ingest first = {.store = s, .batch = 0, .count = 1};
	pthread_t thread_first;
	cr_assert_eq(pthread_create(&thread_first, NULL, clock_ingest_main, &first), 0);
	struct timespec pause = {0, 20 * 1000000};
	nanosleep(&pause, NULL);
	fault_io_clock_set_us(fio, NOW_US + 2 * WINDOW_US);
	cr_expect(clock_ingest_wait(&first, 2000), "control: the ingest completes once the clock "
		  "passed the window");

	/* The clock steps back an hour while a record waits, then comes back. */
	clock_ingest second = {.store = s, .batch = 1, .count = 1};
	pthread_t thread_second;
	cr_assert_eq(pthread_create(&thread_second, NULL, clock_ingest_main, &second), 0);
	nanosleep(&pause, NULL);
	fault_io_clock_set_us(fio, NOW_US + 2 * WINDOW_US - HOUR_US);
	nanosleep(&pause, NULL);
	fault_io_clock_set_us(fio, NOW_US + HOUR_US);
	bool finished = clock_ingest_wait(&second, 2000);
	cr_expect(finished, "the ingest is still waiting 2 s after the clock came back (it waited "
		  "through a one-hour step back of the wall clock)");

	/* Unblock the writer: an append that must wait for buffer space. */
	clock_ingest third = {.store = s, .batch = 2, .count = 200};
	pthread_t thread_third;
	cr_assert_eq(pthread_create(&thread_third, NULL, clock_ingest_main, &third), 0);
	cr_assert_eq(pthread_join(thread_first, NULL), 0);
	cr_assert_eq(pthread_join(thread_second, NULL), 0);
	cr_assert_eq(pthread_join(thread_third, NULL), 0);
	cr_expect_eq(first.rc, 0);
	cr_expect_eq(second.rc, 0);
	cr_expect_eq(third.rc, 0);
	verify(s, "after the three ingests");
	cr_assert_eq(tally_store_close(s), 0);
}

/* ---- the background worker under failures ------------------------------------ */

/*
 * The tests above run without the background worker. These three run with
 * it (the default), and found three bugs in engine/store.c, worker_main and
 * the backpressure wait of tally_ingest_submit. A call that hangs is run in
 * a helper thread and given a few seconds; if it is still blocked the test
 * fails and ends without closing the store (closing would hang too).
 */
typedef enum probe_call {
	PROBE_STATS,
	PROBE_INGEST,
} probe_call;

typedef struct probe {
	tally_store *store;
	probe_call call;
	uint32_t batch_first; /* PROBE_INGEST: ingests batches from here until one fails */
	uint32_t batches_acked;
	int rc;
	int done; /* guarded by writer_mutex */
} probe;

static void *probe_main(void *arg)
{
	probe *p = arg;
	int rc = 0;
	if (p->call == PROBE_STATS) {
		tally_stats stats;
		rc = tally_store_stats(p->store, &stats);
	} else {
		ev_event *slots = calloc(BATCH_EVENTS, sizeof(*slots));
		tally_event *events = calloc(BATCH_EVENTS, sizeof(*events));
		tally_ingest_result *results = calloc(BATCH_EVENTS, sizeof(*results));
		rc = slots && events && results ? 0 : -ENOMEM;
		for (uint32_t batch = p->batch_first; rc == 0; batch++) {
			for (uint32_t i = 0; i < BATCH_EVENTS; i++) {
				ev_make(&slots[i], ledger.seed, BASE_US, round_no, batch, i);
				events[i] = slots[i].event;
			}
			pthread_mutex_lock(&writer_mutex);
			ev_ledger_put(&ledger, round_no, batch, 0, BATCH_EVENTS, EV_MAYBE);
			pthread_mutex_unlock(&writer_mutex);
			rc = tally_ingest(p->store, ledger.tenants[0], events, BATCH_EVENTS, results);
			pthread_mutex_lock(&writer_mutex);
			if (rc == 0 || rc == TALLY_E_READONLY || rc == TALLY_E_BUSY)
				ev_ledger_put(&ledger, round_no, batch, 0, BATCH_EVENTS,
					      rc == 0 ? EV_ACKED : EV_ABSENT);
			p->batches_acked += rc == 0;
			pthread_mutex_unlock(&writer_mutex);
		}
		free(slots);
		free(events);
		free(results);
	}
	pthread_mutex_lock(&writer_mutex);
	p->rc = rc;
	p->done = 1;
	pthread_mutex_unlock(&writer_mutex);
	return NULL;
}

static void probe_start(probe *p, pthread_t *thread)
{
	cr_assert_eq(pthread_create(thread, NULL, probe_main, p), 0);
}

/* Waits up to ms_max for p to finish. */
static bool probe_wait(probe *p, int ms_max)
{
	for (int ms = 0; ms < ms_max; ms += 10) {
		pthread_mutex_lock(&writer_mutex);
		int done = p->done;
		pthread_mutex_unlock(&writer_mutex);
		if (done)
			return true;
		struct timespec pause = {0, 10 * 1000000};
		nanosleep(&pause, NULL);
	}
	return false;
}

static void sleep_ms(int ms)
{
	struct timespec pause = {ms / 1000, (long)(ms % 1000) * 1000000};
	nanosleep(&pause, NULL);
}

static tally_store *store_open_background(uint64_t memtable_bytes_max)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = true;
	o.compact_files_min = 1000;
	if (memtable_bytes_max)
		o.memtable_bytes_max = memtable_bytes_max;
	tally_store *s = NULL;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	int rc = tally_store_open(dir, &o, &s, errmsg);
	cr_assert_eq(rc, 0, "open %s: %s (%s)", dir, tally_strerror(rc), errmsg);
	return s;
}

/*
 * store.c, worker_main: after a failed manifest publish the store is
 * read-only and the frozen memtables stay. The worker then skips its timed
 * wait (it waits only when !s->frozen) and hits `if (s->closing ||
 * s->sticky) continue;` with s->lock held: it spins forever without ever
 * releasing the lock. Every call that takes the lock — stats, scans,
 * ingests, flush, and tally_store_close — blocks for good. (The same
 * happens whenever the store turns read-only while active_bytes >=
 * memtable_bytes_max, e.g. after a WAL fsync failure under load.)
 * Expected: the worker sleeps while the store is read-only; stats returns
 * sticky_error -EIO, ingests TALLY_E_READONLY, close -EIO.
 */
Test(faults, background_worker_releases_the_lock_after_a_manifest_failure)
{
	tally_store *s = store_open_background(0);
	ingest_acked(s, 2);
	fault_io_path_filter_set(fio, "MANIFEST");
	fault_io_fsync_fail_nth(fio, 1, EIO);
	cr_assert_eq(tally_flush(s), -EIO);
	fault_io_faults_off(fio);
	sleep_ms(600); /* the worker wakes at least every 200 ms */
	probe p = {.store = s, .call = PROBE_STATS};
	pthread_t thread;
	probe_start(&p, &thread);
	if (!probe_wait(&p, 3000)) {
		cr_expect_fail("tally_store_stats is still blocked 3 s after a failed MANIFEST publish: the "
			"background worker spins holding the store lock");
		fio = NULL; /* still in use by the store, which cannot be closed (close would block
			     * too): both are left to the end of the test process */
		return;
	}
	cr_assert_eq(pthread_join(thread, NULL), 0);
	expect_read_only(s, -EIO);
	cr_expect_eq(tally_store_close(s), -EIO);
	s = store_open();
	verify(s, "reopen");
	cr_assert_eq(tally_store_close(s), 0);
}

/* Turns every fault off (the disk has space again), then waits up to 15 s
 * for the background worker's first published flush; returns the stats
 * last read. */
static tally_stats disk_freed_then_first_flush(tally_store *s)
{
	fault_io_faults_off(fio);
	tally_stats stats = {0};
	for (int ms = 0; ms < 15000 && stats.flush_count == 0; ms += 50) {
		sleep_ms(50);
		cr_assert_eq(tally_store_stats(s, &stats), 0);
	}
	return stats;
}

/*
 * store.c, worker_main: a failed flush sets backoff_ms (100 ms doubling to
 * 10 s), but the worker only waits when !s->frozen, and a failed flush
 * leaves frozen memtables: so it retries at once, in a tight loop, for as
 * long as the disk is full — thousands of attempts per second, each taking
 * a new file id and creating and unlinking a temp file. Expected: with the
 * backoff, about 4 attempts in the first second (0, 0.1, 0.3, 0.7 s).
 * Once the disk has space again the next retry publishes everything.
 */
Test(faults, background_flush_retries_back_off_while_the_disk_is_full)
{
	tally_store *s = store_open_background(4u << 10);
	fault_io_path_filter_set(fio, ".seg");
	fault_io_disk_limit_set(fio, 0);
	fault_io_counts_reset(fio);
	ingest_acked(s, 1); /* past memtable_bytes_max: wakes the worker */
	sleep_ms(1000);
	fault_io_counts counts;
	fault_io_counts_get(fio, &counts);
	cr_expect_leq(counts.fault_count, 20, "%" PRIu64 " failed flush attempts in one second",
		      counts.fault_count);
	tally_stats stats = disk_freed_then_first_flush(s);
	cr_expect_eq(stats.flush_count, 1, "the retry published the frozen memtable");
	cr_expect_eq(stats.sticky_error, 0);
	verify(s, "after the background flush");
	cr_assert_eq(tally_store_close(s), 0);
	s = store_open();
	verify(s, "reopen");
	expect_segments_dir_holds_only_live_files(s, "reopen");
	cr_assert_eq(tally_store_close(s), 0);
}

/*
 * While the disk is full, a background flush fails and the store stays
 * writable. An ingest that finds the memtables past memtable_bytes_max
 * must not wait for a flush that cannot succeed: it fails with
 * TALLY_E_BUSY, a message naming the flush's error, and nothing of it
 * stored. Once space is back, the worker's retry publishes the frozen
 * memtables and ingest is accepted again; every acknowledged event is
 * there exactly once, before and after a reopen.
 */
Test(faults, ingest_past_the_limit_fails_busy_while_flushes_fail)
{
	tally_store *s = store_open_background(4u << 10);
	fault_io_path_filter_set(fio, ".seg");
	fault_io_disk_limit_set(fio, 0);
	probe ingester = {.store = s, .call = PROBE_INGEST};
	pthread_t thread;
	probe_start(&ingester, &thread);
	if (!probe_wait(&ingester, 15000)) {
		cr_expect_fail("the ingest still waits for a flush 15 s into a full disk (%u batches "
			       "acknowledged)", ingester.batches_acked);
		fio = NULL; /* in use by the store, which cannot close while the writer waits */
		return;
	}
	cr_assert_eq(pthread_join(thread, NULL), 0);
	cr_assert_eq(ingester.rc, TALLY_E_BUSY, "the ingest returned %d (%s)", ingester.rc,
		     tally_strerror(ingester.rc));
	cr_expect_gt(ingester.batches_acked, 0, "calls under the limit were accepted first");
	const char *msg = tally_store_errmsg(s);
	cr_expect(contains(msg, "memtable_bytes_max") && contains(msg, strerror(ENOSPC)) &&
		  contains(msg, "nothing of this call was stored"), "message: %s", msg);
	tally_stats stats;
	cr_assert_eq(tally_store_stats(s, &stats), 0);
	cr_expect_eq(stats.sticky_error, 0, "a full disk under a flush leaves the store writable");
	cr_expect_eq(stats.flush_count, 0);

	stats = disk_freed_then_first_flush(s);
	cr_assert_geq(stats.flush_count, 1, "the worker's retry published once space was back");
	uint32_t next = ledger.rounds[round_no].batch_count;
	ev_batch *last = ev_ledger_find(&ledger, round_no, next - 1);
	cr_assert_not_null(last);
	cr_expect_eq(last->state, EV_ABSENT, "the refused call is recorded as not stored");
	ingest_acked(s, 3);
	verify(s, "after the disk was freed");
	cr_assert_eq(tally_store_close(s), 0);
	s = store_open();
	verify(s, "reopen");
	cr_assert_eq(tally_store_close(s), 0);
}

/*
 * store.c, tally_ingest_submit: an ingest past memtable_bytes_max waits on
 * s->flushed while a flush is running. When that flush fails its MANIFEST
 * publish, the store turns read-only and no flush will ever succeed again:
 * the waiting ingest must be woken and return TALLY_E_READONLY. The flush
 * is made slow (its first segment write sleeps 2 s) so that the writer is
 * waiting for it when the MANIFEST fault is armed.
 */
Test(faults, an_ingest_waiting_for_a_flush_returns_when_the_store_turns_read_only)
{
	tally_store *s = store_open_background(4u << 10);
	fault_io_path_filter_set(fio, ".seg");
	fault_io_delay_set(fio, 0, 2 * 1000 * 1000);
	probe ingester = {.store = s, .call = PROBE_INGEST};
	pthread_t thread;
	probe_start(&ingester, &thread);
	/* Wait until the writer stops making progress: it waits for the flush. */
	uint32_t acked = UINT32_MAX;
	for (int still = 0; still < 30;) {
		sleep_ms(10);
		pthread_mutex_lock(&writer_mutex);
		uint32_t now = ingester.batches_acked;
		int done = ingester.done;
		pthread_mutex_unlock(&writer_mutex);
		cr_assert(!done, "the writer stopped with %d (%s)", ingester.rc, tally_strerror(ingester.rc));
		still = now == acked ? still + 1 : 0;
		acked = now;
	}
	/* The flush sleeps in its first segment write: let the rest of it go
	 * at full speed and fail its MANIFEST. */
	fault_io_delay_set(fio, 0, 0);
	fault_io_counts_reset(fio);
	fault_io_path_filter_set(fio, "MANIFEST");
	fault_io_fsync_fail_nth(fio, 1, EIO);
	fault_io_counts counts = {0};
	for (int ms = 0; ms < 15000 && counts.fault_count == 0; ms += 10) {
		sleep_ms(10);
		fault_io_counts_get(fio, &counts);
	}
	cr_assert_eq(counts.fault_count, 1, "the flush reached its MANIFEST publish");
	if (!probe_wait(&ingester, 3000)) {
		cr_expect_fail("the ingest waiting for a flush is still blocked 3 s after the store turned "
			"read-only (%u batches were acknowledged before)", acked);
		fio = NULL; /* still in use by the store, which cannot be closed while the writer
			     * waits in it: both are left to the end of the test process */
		return;
	}
	cr_assert_eq(pthread_join(thread, NULL), 0);
	cr_expect_eq(ingester.rc, TALLY_E_READONLY, "the waiting ingest returned %d (%s)", ingester.rc,
		     tally_strerror(ingester.rc));
	cr_expect_eq(tally_store_close(s), -EIO);
	s = store_open();
	verify(s, "reopen");
	cr_assert_eq(tally_store_close(s), 0);
}

/*
 * Description: a compaction renames its MANIFEST into place but the fsync
 * of the directory holding it fails (as when the process dies between the
 * two): the rename may not be durable. The next open on the same "kernel"
 * reads the new MANIFEST; it must make it durable before it removes the
 * compaction's inputs as files no manifest names. An open whose directory
 * fsync fails refuses to start and says so. Then an acknowledged batch and
 * a power cut: every acknowledged event is there once. (Before 2026-12-02
 * the open removed the inputs durably while the MANIFEST naming them was
 * still the durable one; after the cut every open failed on a missing
 * segment file.)
 */
Test(faults, an_open_makes_the_manifest_it_read_durable_before_removing_files)
{
	power_io *p = power_io_create(fault_io_table(fio));
	cr_assert_not_null(p);
	tally_store *s = store_open_with(power_io_table(p));
	ingest_acked(s, 3);
	cr_assert_eq(tally_flush(s), 0, "%s", tally_store_errmsg(s));
	ingest_acked(s, 3);
	cr_assert_eq(tally_flush(s), 0, "%s", tally_store_errmsg(s));
	fault_io_fsync_dir_fail_at(fio, dir, EIO);
	cr_assert_eq(tally_compact(s), -EIO, "%s", tally_store_errmsg(s));
	cr_expect_eq(dir_list("segments", ".seg").count, 3, "two inputs and the output");

	/* Still failing: the open refuses to start. */
	tally_store_close(s);
	tally_options o;
	tally_options_default(&o);
	o.io = power_io_table(p);
	o.background = false;
	char errmsg[TALLY_ERRMSG_SIZE] = "";
	s = NULL;
	cr_assert_eq(tally_store_open(dir, &o, &s, errmsg), -EIO);
	cr_expect(contains(errmsg, "fsync") && contains(errmsg, "MANIFEST"), "%s", errmsg);
	cr_expect_eq(dir_list("segments", ".seg").count, 3, "a refused open removes nothing");
	fault_io_faults_off(fio);

	s = store_open_with(power_io_table(p));
	verify(s, "reopen after the failed compaction");
	expect_segments_dir_holds_only_live_files(s, "reopen after the failed compaction");
	ingest_acked_then_power_cut(s, p);
}

/*
 * Description: a flush writes its segment file and renames it into place,
 * but cannot open it again to read its footer (out of descriptors): the
 * flush fails, is not sticky, and removes the file it published, so five
 * failed attempts leave no copies of the memtables in segments/. The next
 * flush succeeds. (Before 2026-12-02 each attempt left its whole file
 * until a reopen: the disk filled with copies no manifest named.)
 */
Test(faults, a_flush_that_cannot_open_its_file_removes_it)
{
	tally_store *s = store_open();
	ingest_acked(s, 4);
	fault_io_open_fail_reads(fio, ".seg", EMFILE);
	for (int attempt = 0; attempt < 5; attempt++) {
		cr_assert_eq(tally_flush(s), -EMFILE, "attempt %d", attempt);
		cr_expect(contains(tally_store_errmsg(s), "Too many open files"), "%s",
			  tally_store_errmsg(s));
	}
	fault_io_faults_off(fio);
	cr_expect_eq(dir_list("segments", ".seg").count, 0);
	expect_segments_dir_holds_only_live_files(s, "after the failed flushes");
	verify(s, "after the failed flushes");
	cr_assert_eq(tally_flush(s), 0, "%s", tally_store_errmsg(s));
	expect_segments_dir_holds_only_live_files(s, "after a good flush");
	verify(s, "after a good flush");
	cr_assert_eq(tally_store_close(s), 0);
	s = store_open();
	verify(s, "reopen");
	cr_assert_eq(tally_store_close(s), 0);
}
