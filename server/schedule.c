/*
 * schedule.c — tallyd's nightly billing export (--export-pg URL,
 * --export-at HH:MM UTC; docs/billing.md).
 *
 * A thread of its own runs the same exporter as `tally export`
 * (tools/export.h) against the server's own protocol port, with an admin
 * key that exists only in this process's memory (keys_issue_ephemeral). So
 * it is one more client: its DailyUsage requests run on the query workers,
 * never on the ingest path, and everything the exporter promises (one
 * transaction per day, exactly once, migrations) holds unchanged.
 *
 * A run, at start and then every day at --export-at:
 *   1. catch up: every UTC day of the last EXPORT_CHANGED_DAYS_BACK days
 *      before today that has events in the store and no export_runs row
 *      yet is exported, so days missed while tallyd or PostgreSQL was down
 *      are loaded. "Has events" is the store's change map read in this
 *      process, day by day (tally_day_change_lsn != 0), not ChangedDays(0):
 *      once the map has a floor (more than CHANGE_DAYS_MAX days marked,
 *      engine/changes.h) ChangedDays(0) is refused for good, while the
 *      per-day answer is always there. A day at or below the floor answers
 *      the floor's LSN, so it counts as having events and is exported
 *      once (with the rows it has, maybe none). Older days are outside what
 *      the store can still change and what export_runs is read for:
 *      `tally export --from` loads them.
 *   2. re-export the days changed after their last export (late events,
 *      backfill), as `tally export --changed` does, but with each exported
 *      day's change read from the change map here too (export_options.
 *      day_change), never with ChangedDays(the smallest exported
 *      watermark): the store refuses that once its floor is above the
 *      watermark (a day exported long before, or before a backfill that
 *      pushed days under the floor), and every run would fail there for
 *      good. A day at or below the floor answers the floor's LSN, an upper
 *      bound: it is re-exported when that is above its watermark (to be
 *      sure), and not again until the floor rises past its new watermark.
 *
 * WHICH FAILURES STOP A RUN. A day's export that fails for the day's own
 * data (export_failure_is_the_days: EXPORT_E_DATA, a row PostgreSQL cannot
 * take, also when PostgreSQL refuses it in COPY with a data error;
 * EXPORT_E_LIMIT, a day over the export's limits) is logged with the day
 * and its error and
 * the run goes on with the next day, in both steps. Any other failure
 * (PostgreSQL unreachable or the connection lost, a statement refused, a
 * schema too new, the source down, out of memory) stops the run at once:
 * the days after it would fail the same way. A run in which any day failed
 * is a failed run.
 *
 * A failed run is logged and retried with a backoff from 5 s doubling to 5
 * minutes, until it succeeds; then the next run is at the next --export-at.
 * A retry exports only what is still missing or changed, so a day that
 * keeps failing costs one day's export per retry and holds no other day.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../tools/export.h"
#include "fail.h"
#include "log.h"
#include "schedule.h"
#include "server_internal.h"

#define SCHEDULE_BACKOFF_FIRST_US (INT64_C(5) * 1000000)
#define SCHEDULE_BACKOFF_MAX_US (INT64_C(300) * 1000000)
#define MINUTE_US (INT64_C(60) * 1000000)
/* The longest the thread sleeps before it reads the wall clock again: a
 * clock stepped back or forward moves the next run within this much. */
#define SCHEDULE_WAKE_MAX_US (INT64_C(5) * 1000000)
/* The longest wait for one answer of this server (a page of 1,000 tenants). */
#define SCHEDULE_CALL_TIMEOUT_MS 120000u

struct export_schedule {
	char pg[CONFIG_PG_SIZE];
	char address[64];
	char key[KEY_TEXT_SIZE];
	tally_store *store; /* the server's: its change map, read for the catch-up */
	uint32_t at_minute;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	export_cancel *cancel; /* fired by export_schedule_stop: a run in a statement ends */
	bool stop;    /* under lock */
	bool go;      /* under lock: the event loop runs (export_schedule_go) */
	uint64_t runs; /* under lock: completed runs, for tests */
};

/* The next instant at minute `at` of a UTC day, strictly after now. */
static int64_t next_run_us(int64_t now, uint32_t at)
{
	int64_t day = now / TALLY_US_PER_DAY * TALLY_US_PER_DAY;
	int64_t t = day + (int64_t)at * MINUTE_US;
	return t > now ? t : t + TALLY_US_PER_DAY;
}

/* export_options.day_change: a day's change LSN from the store's own
 * change map (arg: the store). */
static int store_day_change(void *arg, int32_t day, uint64_t *change, char *errmsg)
{
	int rc = tally_day_change_lsn(arg, day, change);
	if (rc)
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "reading the change map: %s",
			 tally_strerror(rc));
	return rc;
}

/* What a run has done so far. */
typedef struct run_tally {
	size_t loaded, reloaded, failed;
	int failed_rc;                     /* the first failed day's code */
	char failed_why[EXPORT_ERRMSG_SIZE]; /* and its message */
} run_tally;

/*
 * Exports day (again: a changed day re-exported) and logs it. 0 when it
 * was loaded, and also when it failed for its own data (logged, counted
 * in t); any other failure is returned with xerr.
 */
static int run_day(exporter *x, int32_t day, bool again, run_tally *t, char *xerr)
{
	char text[EXPORT_DAY_SIZE];
	export_day_format(text, day);
	export_day_result r;
	int rc = export_day(x, day, &r, xerr);
	if (rc == 0) {
		if (again) {
			log_info("export: %s re-exported (changed after its last export): %" PRIu64
				 " rows", text, r.rows);
			t->reloaded++;
		} else {
			log_info("export: %s loaded: %" PRIu64 " tenants, %" PRIu64
				 " rows, checksum %016" PRIx64, text, r.tenants, r.rows,
				 r.checksum);
			t->loaded++;
		}
		return 0;
	}
	if (!export_failure_is_the_days(rc))
		return rc;
	log_error("export: %s failed (%s), the run goes on: %s", text, export_strerror(rc), xerr);
	if (t->failed++ == 0) {
		t->failed_rc = rc;
		snprintf(t->failed_why, sizeof(t->failed_why), "%s", xerr);
	}
	return 0;
}

/* One run (see the file comment). 0, or a negative code with errmsg. */
static int run_once(export_schedule *sc, char *errmsg)
{
	tally_client *c;
	char cerr[TALLY_CLIENT_ERRMSG_SIZE];
	int rc = tally_client_open(sc->address, sc->key, "tallyd-export", &c, NULL, cerr);
	if (rc)
		return server_fail(errmsg, rc, "connecting to this server at %s: %s", sc->address, cerr);
	if ((rc = tally_client_set_timeout(c, SCHEDULE_CALL_TIMEOUT_MS))) {
		tally_client_close(c);
		return server_fail(errmsg, rc, "setting a timeout: %s", strerror(-rc));
	}
	export_source source;
	export_source_client(&source, c);
	export_options options = {.day_change = store_day_change, .day_change_arg = sc->store,
				  .cancel = sc->cancel};
	exporter *x = NULL;
	char xerr[EXPORT_ERRMSG_SIZE];
	int from, to;
	int32_t *exported = NULL;
	size_t exported_count = 0;
	run_tally t = {0};
	export_changed changed = {0};
	int32_t today = export_day_of(server_wall_us());
	if ((rc = export_open(sc->pg, &source, &options, &x, xerr)) || (rc = export_migrate(x, &from, &to, xerr)))
		goto out;
	if (to != from)
		log_info("export: billing schema migrated from version %d to %d", from, to);
	/* 1. Days with events and no export yet. */
	if ((rc = export_days_exported(x, today - EXPORT_CHANGED_DAYS_BACK, today - 1, &exported,
					 &exported_count, xerr)))
		goto out;
	for (int32_t d = today - EXPORT_CHANGED_DAYS_BACK; d < today && !rc; d++) {
		uint64_t lsn;
		if ((rc = store_day_change(sc->store, d, &lsn, xerr)))
			break;
		if (lsn == 0 || export_day_listed(exported, exported_count, d))
			continue;
		rc = run_day(x, d, false, &t, xerr);
	}
	/* 2. Days changed after their last export. */
	if (!rc)
		rc = export_changed_find(x, &changed, xerr);
	for (size_t i = 0; i < changed.count && !rc; i++)
		rc = run_day(x, changed.days[i].day, true, &t, xerr);
	if (!rc && t.failed) {
		rc = t.failed_rc;
		snprintf(xerr, sizeof(xerr),
			 "%zu day(s) failed (%zu loaded, %zu re-exported); the first: %s", t.failed,
			 t.loaded, t.reloaded, t.failed_why);
	}
out:
	if (rc)
		server_fail(errmsg, rc, "%s", xerr);
	else
		log_info("export: run done: %zu day(s) loaded, %zu re-exported", t.loaded,
			 t.reloaded);
	export_changed_free(&changed);
	free(exported);
	export_close(x);
	tally_client_close(c);
	return rc;
}

/* Waits on sc->cond (a CLOCK_MONOTONIC one) until monotonic time
 * `until_us` at most. Caller holds sc->lock. */
static void schedule_wait(export_schedule *sc, int64_t until_us)
{
	struct timespec ts = {.tv_sec = until_us / 1000000,
			      .tv_nsec = (long)(until_us % 1000000) * 1000};
	pthread_cond_timedwait(&sc->cond, &sc->lock, &ts);
}

/*
 * Whether the next run is due. The nightly run is due at the wall clock's
 * next --export-at after the last run (next_wall), never later than the
 * next one after the wall clock's now: a clock stepped back (or a run made
 * on a clock that was ahead) would otherwise skip nights. A retry after a
 * failure is due a backoff after it, on the monotonic clock (retry_mono,
 * 0: none), which a step does not move.
 */
static bool schedule_due(uint32_t at, int64_t *next_wall, int64_t retry_mono)
{
	if (retry_mono)
		return server_now_us() >= retry_mono;
	int64_t wall = server_wall_us();
	int64_t soonest = next_run_us(wall, at);
	if (*next_wall > soonest)
		*next_wall = soonest;
	return wall >= *next_wall;
}

static void *schedule_main(void *arg)
{
	export_schedule *sc = arg;
	int64_t next_wall = 0; /* the first run catches up at once */
	int64_t retry_mono = 0;
	int64_t backoff = SCHEDULE_BACKOFF_FIRST_US;
	pthread_mutex_lock(&sc->lock);
	/* The first run connects to this server: not before its loop runs. */
	while (!sc->stop && !sc->go)
		pthread_cond_wait(&sc->cond, &sc->lock);
	for (;;) {
		/* In slices: the wall clock is read again after each. */
		while (!sc->stop && !schedule_due(sc->at_minute, &next_wall, retry_mono)) {
			int64_t now = server_now_us(), until = now + SCHEDULE_WAKE_MAX_US;
			if (retry_mono && retry_mono < until)
				until = retry_mono;
			else if (!retry_mono && next_wall - server_wall_us() < SCHEDULE_WAKE_MAX_US)
				until = now + (next_wall - server_wall_us());
			schedule_wait(sc, until);
		}
		if (sc->stop)
			break;
		pthread_mutex_unlock(&sc->lock);
		char errmsg[TALLY_ERRMSG_SIZE];
		int rc = run_once(sc, errmsg);
		if (rc == EXPORT_E_CANCELLED) {
			log_info("export: run stopped: %s", errmsg);
		} else if (rc) {
			log_error("export: run failed: %s; retrying in %" PRId64 " s", errmsg, backoff / 1000000);
			retry_mono = server_now_us() + backoff;
			backoff = backoff * 2 > SCHEDULE_BACKOFF_MAX_US ? SCHEDULE_BACKOFF_MAX_US : backoff * 2;
		} else {
			backoff = SCHEDULE_BACKOFF_FIRST_US;
			retry_mono = 0;
			next_wall = next_run_us(server_wall_us(), sc->at_minute);
		}
		pthread_mutex_lock(&sc->lock);
		sc->runs++;
		pthread_cond_broadcast(&sc->cond);
	}
	pthread_mutex_unlock(&sc->lock);
	return NULL;
}

int export_schedule_start(server *s, export_schedule **out, char *errmsg)
{
	*out = NULL;
	export_schedule *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return server_fail(errmsg, -ENOMEM, "out of memory");
	snprintf(sc->pg, sizeof(sc->pg), "%s", s->config.export_pg);
	/* The listening address, with the port the kernel chose if it was 0. */
	char host[CONFIG_ADDR_SIZE], port[32];
	if (config_split_addr(s->config.listen, host, sizeof(host), port, sizeof(port))) {
		free(sc);
		return server_fail(errmsg, -EINVAL, "listen address '%s' is not HOST:PORT", s->config.listen);
	}
	bool v6 = strchr(host, ':') != NULL;
	snprintf(sc->address, sizeof(sc->address), v6 ? "[%s]:%u" : "%s:%u", host, s->port);
	sc->at_minute = s->config.export_at_minute;
	sc->store = s->store;
	char key_id[KEY_ID_SIZE];
	if (!(sc->cancel = export_cancel_new())) {
		free(sc);
		return server_fail(errmsg, -ENOMEM, "out of memory");
	}
	int rc = keys_issue_ephemeral(s->keys, sc->key, key_id, errmsg);
	if (rc) {
		export_cancel_free(sc->cancel);
		free(sc);
		return rc;
	}
	pthread_mutex_init(&sc->lock, NULL);
	/* Timed waits on the monotonic clock (server_now_us). */
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&sc->cond, &attr);
	pthread_condattr_destroy(&attr);
	if ((rc = -pthread_create(&sc->thread, NULL, schedule_main, sc))) {
		pthread_mutex_destroy(&sc->lock);
		pthread_cond_destroy(&sc->cond);
		export_cancel_free(sc->cancel);
		free(sc);
		return server_fail(errmsg, rc, "starting the export thread: %s", strerror(-rc));
	}
	pthread_setname_np(sc->thread, "tally-export"); /* names show in top -H; failure is harmless */
	log_info("export: nightly at %02u:%02u UTC into the configured PostgreSQL (first run now); key %s",
		 sc->at_minute / 60, sc->at_minute % 60, key_id);
	*out = sc;
	return 0;
}

void export_schedule_go(export_schedule *sc)
{
	if (!sc)
		return;
	pthread_mutex_lock(&sc->lock);
	sc->go = true;
	pthread_cond_broadcast(&sc->cond);
	pthread_mutex_unlock(&sc->lock);
}

uint64_t export_schedule_wait_runs(export_schedule *sc, uint64_t runs, int timeout_ms)
{
	int64_t deadline = server_now_us() + (int64_t)timeout_ms * 1000;
	pthread_mutex_lock(&sc->lock);
	while (sc->runs < runs && server_now_us() < deadline)
		schedule_wait(sc, deadline);
	uint64_t n = sc->runs;
	pthread_mutex_unlock(&sc->lock);
	return n;
}

void export_schedule_stop(export_schedule *sc)
{
	if (!sc)
		return;
	pthread_mutex_lock(&sc->lock);
	sc->stop = true;
	pthread_cond_broadcast(&sc->cond);
	pthread_mutex_unlock(&sc->lock);
	/* A run inside a PostgreSQL statement (waiting on a day's lock that a
	 * `tally export` holds, a slow COPY, a partition) would hold the stop
	 * until PostgreSQL answered: cancelled, it ends at once, its day
	 * rolled back (before 2026-12-04 the stop waited it out). */
	export_cancel_fire(sc->cancel);
	pthread_join(sc->thread, NULL);
	export_cancel_free(sc->cancel);
	pthread_mutex_destroy(&sc->lock);
	pthread_cond_destroy(&sc->cond);
	explicit_bzero(sc->key, sizeof(sc->key));
	free(sc);
}
