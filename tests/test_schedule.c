/*
 * test_schedule.c — tallyd's nightly billing export (--export-pg,
 * server/schedule.c) against a real PostgreSQL: a first run that fails
 * (the database is missing) is retried with backoff until it succeeds;
 * the run loads every past day with events that was never exported (the
 * catch-up after downtime) and never today; after a restart, a day changed
 * by a late event is re-exported and nothing else. A day that fails for its
 * own data (rows PostgreSQL refuses, or a tenant-day too large for tallyd
 * to aggregate) does not hold the others back. A store whose change map has a
 * floor is exported, and a day exported below that floor and changed
 * since is re-exported. A stop does not wait for a run blocked inside
 * PostgreSQL.
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../tools/export.h" /* EXPORT_LOCK_CLASS_DAY */
#include "server_internal.h"
#include "support/change_floor.h"
#include "support/pg_harness.h"
#include "tally_limits.h" /* CHANGE_DAYS_MAX */
#include "support/server_harness.h"

#define DAY_US TALLY_US_PER_DAY

static pg_harness pg;

static int64_t today_start_us(void)
{
	int64_t now = (int64_t)time(NULL) * 1000000;
	return now - now % DAY_US;
}

/* n events for tenant on the day starting at day_us (at 10:00 + i s), of
 * model (NULL: the harness's). */
static void ingest_day_model(tally_client *admin, const char *tenant, int64_t day_us,
			     const char *tag, int n, const char *model)
{
	builder b;
	builder_init(&b);
	builder_set_tenant(&b, tenant);
	builder_set_create_tenant(&b, true);
	int64_t now = (int64_t)time(NULL) * 1000000;
	for (int i = 0; i < n; i++) {
		tally_client_event e = harness_event(tag, i, day_us + 10 * INT64_C(3600000000));
		if (e.time_us > now)
			e.time_us = day_us + i; /* today, before now */
		if (model)
			e.model = (tally_client_str){model, (uint32_t)strlen(model)};
		builder_add(&b, &e);
	}
	Tally__V1__IngestBatch m;
	builder_message(&b, &m);
	tally_ingest_ack a;
	cr_assert_eq(tally_client_ingest(admin, &m, &a), 0, "%s", tally_client_last_error(admin)->message);
	cr_assert_eq(a.accepted, (uint32_t)n);
	tally_ingest_ack_free(&a);
	builder_free(&b);
}

static void ingest_day(tally_client *admin, const char *tenant, int64_t day_us, const char *tag,
		       int n)
{
	ingest_day_model(admin, tenant, day_us, tag, n, NULL);
}

static int64_t query_int(PGconn *pgc, const char *sql)
{
	PGresult *r = PQexec(pgc, sql);
	cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(pgc));
	int64_t v = PQgetisnull(r, 0, 0) ? -1 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return v;
}

/* The roles the billing schema grants to, and the login "exporter". */
static void pg_roles(void)
{
	pg_harness_billing_roles(&pg, "exporter");
}

/* Description: see the file comment. */
Test(schedule, catches_up_retries_and_reexports_changed_days)
{
	pg_harness_start(&pg, "schedule");
	pg_roles();

	harness h;
	harness_init(&h, "sched");
	/* The database does not exist yet: the first run fails. */
	pg_harness_conninfo(&pg, "exporter", "billing", h.config.export_pg, sizeof(h.config.export_pg));
	harness_start(&h);
	tally_client *admin = harness_connect(&h, h.admin_key);
	int64_t today = today_start_us();
	ingest_day(admin, "acme", today - 3 * DAY_US, "a3", 5);
	ingest_day(admin, "acme", today - 2 * DAY_US, "a2", 7);
	ingest_day(admin, "globex", today - 2 * DAY_US, "g2", 4);
	ingest_day(admin, "globex", today, "g0", 3); /* today: never exported */

	export_schedule *sc = h.server->schedule;
	cr_assert_not_null(sc, "--export-pg starts the schedule");
	cr_assert_geq(export_schedule_wait_runs(sc, 1, 30000), 1, "no first run");
	pg_harness_create_database(&pg, "billing", "exporter");
	/* The retry comes after the 5 s backoff. */
	cr_assert_geq(export_schedule_wait_runs(sc, 2, 30000), 2, "no retry");

	PGconn *db = pg_harness_connect(&pg, PG_HARNESS_SUPERUSER, "billing");
	cr_expect_eq(query_int(db, "SELECT count(DISTINCT day) FROM billing.export_runs"), 2);
	cr_expect_eq(query_int(db, "SELECT sum(count) FROM billing.usage_daily"), 16, "5 + 7 + 4, not today's 3");
	char sql[256];
	snprintf(sql, sizeof(sql),
		 "SELECT sum(count) FROM billing.usage_daily WHERE tenant = 'acme' AND day = date '1970-01-01' + %d",
		 (int)((today - 2 * DAY_US) / DAY_US));
	cr_expect_eq(query_int(db, sql), 7);

	/* A late event on the day before yesterday; then a restart (a run at
	 * start): that day alone is exported again. */
	ingest_day(admin, "acme", today - 2 * DAY_US, "late", 2);
	tally_client_close(admin);
	harness_stop(&h);
	harness_start(&h);
	cr_assert_geq(export_schedule_wait_runs(h.server->schedule, 1, 30000), 1);
	cr_expect_eq(query_int(db, sql), 9);
	cr_expect_eq(query_int(db, "SELECT count(*) FROM billing.export_runs"), 3, "two days, one of them twice");
	cr_expect_eq(query_int(db, "SELECT sum(count) FROM billing.usage_daily"), 18);
	PQfinish(db);
	harness_finish(&h);
	pg_harness_stop(&pg);
}

/* The usage of tenant on the day starting at day_us in billing.usage_daily
 * (-1: no row). */
static int64_t day_count(PGconn *db, const char *tenant, int64_t day_us)
{
	char sql[256];
	snprintf(sql, sizeof(sql),
		 "SELECT sum(count) FROM billing.usage_daily WHERE tenant = '%s'"
		 " AND day = date '1970-01-01' + %d", tenant, (int)(day_us / DAY_US));
	return query_int(db, sql);
}

/* Description: a day whose rows PostgreSQL refuses (a model a WIN1252
 * database cannot hold: COPY fails with a data error, EXPORT_E_DATA) is
 * skipped, not a wall: the days after it in the catch-up are loaded, the
 * changed days are re-exported, the run counts as failed and is retried
 * with the backoff, and each retry tries that day again. */
Test(schedule, a_day_refused_for_its_data_does_not_hold_back_the_others)
{
	pg_harness_start(&pg, "schedule-day");
	pg_roles();
	harness h;
	harness_init(&h, "schedday");
	pg_harness_conninfo(&pg, "exporter", "billing", h.config.export_pg,
			    sizeof(h.config.export_pg));
	harness_start(&h);
	tally_client *admin = harness_connect(&h, h.admin_key);
	int64_t today = today_start_us();
	ingest_day(admin, "acme", today - 3 * DAY_US, "a3", 5);
	ingest_day_model(admin, "acme", today - 2 * DAY_US, "bad", 2, "\xe6\x97\xa5\xe6\x9c\xac");
	ingest_day(admin, "globex", today - 2 * DAY_US, "g2", 4);
	ingest_day(admin, "acme", today - 1 * DAY_US, "a1", 6);
	export_schedule *sc = h.server->schedule;
	cr_assert_geq(export_schedule_wait_runs(sc, 1, 30000), 1, "no first run (no database yet)");
	PGconn *su = pg_harness_connect(&pg, PG_HARNESS_SUPERUSER, "postgres");
	pg_harness_exec(&pg, su,
			"CREATE DATABASE billing OWNER exporter ENCODING 'WIN1252' LC_COLLATE 'C'"
			" LC_CTYPE 'C' TEMPLATE template0");
	PQfinish(su);
	cr_assert_geq(export_schedule_wait_runs(sc, 2, 30000), 2, "no retry");
	PGconn *db = pg_harness_connect(&pg, PG_HARNESS_SUPERUSER, "billing");
	cr_expect_eq(query_int(db, "SELECT count(*) FROM billing.export_runs"), 2,
		     "the days before and after the refused one");
	cr_expect_eq(day_count(db, "acme", today - 3 * DAY_US), 5);
	cr_expect_eq(day_count(db, "globex", today - 2 * DAY_US), -1, "the refused day: nothing");
	cr_expect_eq(day_count(db, "acme", today - 1 * DAY_US), 6, "after the refused day");

	/* A late event on the first day: the next run (a retry, since the
	 * last one failed) re-exports it past the refused day again. */
	ingest_day(admin, "acme", today - 3 * DAY_US, "late", 2);
	cr_assert_geq(export_schedule_wait_runs(sc, 3, 30000), 3, "the failed run is retried");
	cr_expect_eq(day_count(db, "acme", today - 3 * DAY_US), 7, "the changed day re-exported");
	cr_expect_eq(day_count(db, "globex", today - 2 * DAY_US), -1);
	cr_expect_eq(query_int(db, "SELECT count(*) FROM billing.export_runs"), 3,
		     "two days, one of them twice");
	PQfinish(db);
	tally_client_close(admin);
	harness_finish(&h);
	pg_harness_stop(&pg);
}

/* A billing database for harness h (not started), named name: its
 * cluster, the roles and the database, and h's --export-pg into it. */
static void billing_ready(harness *h, const char *pg_name, const char *name)
{
	pg_harness_start(&pg, pg_name);
	pg_roles();
	pg_harness_create_database(&pg, "billing", "exporter");
	harness_init(h, name);
	pg_harness_conninfo(&pg, "exporter", "billing", h->config.export_pg,
			    sizeof(h->config.export_pg));
}

/* n events of tenant straight into st, on the day starting at day_us
 * (10:00 + i µs), each of its own project: n groups. Ids "g<day>-<i>". */
static void store_groups(tally_store *st, const char *tenant, int64_t day_us, int n)
{
	enum { BATCH = 8192 };
	static tally_event events[BATCH];
	static tally_ingest_result results[BATCH];
	static char ids[BATCH][32], projects[BATCH][24];
	for (int first = 0; first < n; first += BATCH) {
		int count = n - first < BATCH ? n - first : BATCH;
		for (int i = 0; i < count; i++) {
			int k = first + i;
			int id_len = snprintf(ids[i], sizeof(ids[i]), "g%d-%d", (int)(day_us / DAY_US), k);
			int project_len = snprintf(projects[i], sizeof(projects[i]), "p%d", k);
			events[i] = (tally_event){
				.event_id = {ids[i], (uint32_t)id_len},
				.time_us = day_us + 10 * INT64_C(3600000000) + k,
				.type = {"llm_call", 8},
				.project = {projects[i], (uint32_t)project_len},
				.cost_micros = 1,
			};
		}
		cr_assert_eq(tally_ingest(st, tenant, events, (uint32_t)count, results), 0, "%s",
			     tally_store_errmsg(st));
		for (int i = 0; i < count; i++)
			cr_assert_eq(results[i].code, TALLY_ACCEPTED, "event %d: code %d, reason %d", first + i,
				     results[i].code, results[i].reason);
	}
}

/* Description: a tenant-day too large to aggregate, which DailyUsage
 * refuses as TOO_LARGE, fails that day alone (EXPORT_E_LIMIT, the day's
 * own data): the run goes on and loads the day after it. Too large here:
 * 20,000 groups past a query_bytes_max of 1 MiB, which no window of them
 * fits (a page holds up to about 25,600 rows; docs/queries.md, "Windows").
 * Before, the refusal counted as the source failing, every run stopped at
 * that day, and no later day of any tenant was ever exported. (The refused
 * day is not exported for its other tenants either: a day is exported
 * whole.) Until 2026-12-03 the day here had TALLY_QUERY_CELLS_MAX + 1
 * groups, which DailyUsage now answers in pages. */
Test(schedule, a_tenant_day_too_large_to_aggregate_does_not_hold_back_the_others,
     .timeout = 600)
{
	harness h;
	billing_ready(&h, "schedule-large", "schedlarge");
	int64_t today = today_start_us();
	tally_options o;
	tally_options_default(&o);
	o.background = false;
	tally_store *st = NULL;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(tally_store_open(h.config.data_dir, &o, &st, err), 0, "%s", err);
	store_groups(st, "big", today - 2 * DAY_US, 20000);
	store_groups(st, "small", today - 2 * DAY_US, 3);
	store_groups(st, "small", today - 1 * DAY_US, 4);
	cr_assert_eq(tally_store_close(st), 0);

	h.config.query_bytes_max = 1u << 20;
	harness_start(&h);
	export_schedule *sc = h.server->schedule;
	cr_assert_geq(export_schedule_wait_runs(sc, 1, 300000), 1, "no first run");
	PGconn *db = pg_harness_connect(&pg, PG_HARNESS_SUPERUSER, "billing");
	cr_expect_eq(query_int(db, "SELECT count(*) FROM billing.export_runs"), 1,
		     "the day after the refused one, only");
	cr_expect_eq(day_count(db, "small", today - 1 * DAY_US), 4, "the day after the refused one");
	cr_expect_eq(day_count(db, "small", today - 2 * DAY_US), -1, "the refused day: nothing");
	cr_expect_eq(day_count(db, "big", today - 2 * DAY_US), -1, "the refused day: nothing");
	PQfinish(db);
	harness_finish(&h);
	pg_harness_stop(&pg);
}

/* Description: a store whose change map has a floor (more than
 * CHANGE_DAYS_MAX days marked, so ChangedDays(0) is refused for good) is
 * exported normally: the catch-up loads the one past day with events
 * inside the window, and the run succeeds (no retry follows). */
Test(schedule, a_store_whose_change_map_has_a_floor_is_exported)
{
	harness h;
	billing_ready(&h, "schedule-floor", "schedfloor");
	/* Two days far in the past (below the window), yesterday's yesterday,
	 * and future days up to CHANGE_DAYS_MAX + 1 days in all: the oldest
	 * drops under the floor. */
	int32_t today = (int32_t)(today_start_us() / DAY_US);
	const int32_t future = CHANGE_DAYS_MAX + 1 - 3;
	tally_store *st = change_floor_store_open(h.config.data_dir);
	store_days(st, "acme", "d", today - 5000, today - 4999);
	store_days(st, "acme", "d", today - 2, today - 2);
	store_days(st, "acme", "d", today + 1, today + future);
	size_t count = 99;
	cr_assert_eq(tally_changed_days(st, 0, NULL, NULL, 0, &count), TALLY_E_NOTFOUND,
		     "the map has a floor");
	cr_assert_eq(tally_store_close(st), 0);

	harness_start(&h);
	export_schedule *sc = h.server->schedule;
	cr_assert_geq(export_schedule_wait_runs(sc, 1, 60000), 1, "no first run");
	PGconn *db = pg_harness_connect(&pg, PG_HARNESS_SUPERUSER, "billing");
	cr_expect_eq(query_int(db, "SELECT count(*) FROM billing.export_runs"), 1);
	cr_expect_eq(day_count(db, "acme", (int64_t)(today - 2) * DAY_US), 1);
	cr_expect_eq(export_schedule_wait_runs(sc, 2, 7000), 1,
		     "the run succeeded: no retry in 5 s");
	PQfinish(db);
	harness_finish(&h);
	pg_harness_stop(&pg);
}

/* Description: a day exported before the store's change map got a floor
 * above its watermark, and changed since, is re-exported by the next run:
 * the changed days are read from the store day by day, not with
 * ChangedDays(the smallest exported watermark), which the store refuses
 * once that watermark is below the floor. Before, every run failed there
 * and was retried for good, and the day was never re-exported. */
Test(schedule, a_day_exported_below_the_change_floor_is_reexported_when_changed)
{
	harness h;
	billing_ready(&h, "schedule-below", "schedbelow");
	int32_t today = (int32_t)(today_start_us() / DAY_US);
	int64_t day_us = (int64_t)(today - 2) * DAY_US;
	tally_store *st = change_floor_store_open(h.config.data_dir);
	store_days(st, "acme", "a", today - 2, today - 2);
	cr_assert_eq(tally_store_close(st), 0);

	/* The first run loads the day, with watermark W. */
	harness_start(&h);
	cr_assert_geq(export_schedule_wait_runs(h.server->schedule, 1, 60000), 1, "no first run");
	PGconn *db = pg_harness_connect(&pg, PG_HARNESS_SUPERUSER, "billing");
	cr_expect_eq(day_count(db, "acme", day_us), 1);
	int64_t watermark = query_int(db, "SELECT store_watermark FROM billing.export_runs");
	harness_stop(&h);

	/* A floor above W, and a late event on the day. */
	st = change_floor_store_open(h.config.data_dir);
	change_floor_make(st, today, 1);
	store_days(st, "globex", "late", today - 2, today - 2);
	size_t count = 99;
	cr_assert_eq(tally_changed_days(st, (uint64_t)watermark, NULL, NULL, 0, &count),
		     TALLY_E_NOTFOUND, "ChangedDays(W) is refused");
	cr_assert_eq(tally_store_close(st), 0);

	harness_start(&h);
	export_schedule *sc = h.server->schedule;
	cr_assert_geq(export_schedule_wait_runs(sc, 1, 60000), 1, "no run after the restart");
	cr_expect_eq(day_count(db, "globex", day_us), 1, "the changed day re-exported");
	cr_expect_eq(day_count(db, "acme", day_us), 1);
	cr_expect_eq(query_int(db, "SELECT count(*) FROM billing.export_runs"), 2);
	cr_expect_eq(export_schedule_wait_runs(sc, 2, 7000), 1,
		     "the run succeeded: no retry in 5 s");
	PQfinish(db);
	harness_finish(&h);
	pg_harness_stop(&pg);
}

/* Description: tallyd stops at once while its nightly run waits inside a
 * PostgreSQL statement: here for yesterday's day lock, which another
 * session (a `tally export` run, say) holds and does not let go until the
 * stop has returned; a stop that waited for PostgreSQL would never return
 * and the test would time out. The cancelled day is rolled back (no
 * export_runs row), and the run after the next start, the lock let go,
 * exports it. (Before, the stop waited until the lock was let go.) */
Test(schedule, a_stop_does_not_wait_for_a_run_blocked_in_postgresql, .timeout = 300)
{
	harness h;
	billing_ready(&h, "schedule-stop", "schedstop");
	harness_start(&h);
	cr_assert_geq(export_schedule_wait_runs(h.server->schedule, 1, 30000), 1, "no first run");
	tally_client *admin = harness_connect(&h, h.admin_key);
	int64_t yesterday = today_start_us() - DAY_US;
	ingest_day(admin, "acme", yesterday, "y", 6);
	tally_client_close(admin);
	harness_stop(&h);

	PGconn *holder = pg_harness_connect(&pg, PG_HARNESS_SUPERUSER, "billing");
	char sql[160];
	snprintf(sql, sizeof(sql), "SELECT pg_catalog.pg_advisory_lock(%d, %d)", EXPORT_LOCK_CLASS_DAY,
		 (int)(yesterday / DAY_US));
	PQclear(PQexec(holder, sql));
	harness_start(&h); /* its run catches yesterday up: it waits for the lock */
	PGconn *db = pg_harness_connect(&pg, PG_HARNESS_SUPERUSER, "billing");
	int64_t waiting = 0;
	for (int i = 0; i < 600 && waiting == 0; i++) {
		waiting = query_int(db, "SELECT count(*) FROM pg_catalog.pg_locks"
					" WHERE locktype = 'advisory' AND NOT granted");
		if (!waiting)
			usleep(50000);
	}
	cr_assert_eq(waiting, 1, "the run never waited for the day's lock");
	harness_stop(&h); /* returns with the lock still held */
	cr_expect_eq(query_int(db, "SELECT count(*) FROM billing.export_runs"), 0,
		     "the cancelled day was rolled back");
	snprintf(sql, sizeof(sql), "SELECT pg_catalog.pg_advisory_unlock(%d, %d)", EXPORT_LOCK_CLASS_DAY,
		 (int)(yesterday / DAY_US));
	PQclear(PQexec(holder, sql));
	PQfinish(holder);

	harness_start(&h);
	cr_assert_geq(export_schedule_wait_runs(h.server->schedule, 1, 30000), 1);
	cr_expect_eq(day_count(db, "acme", yesterday), 6);
	cr_expect_eq(query_int(db, "SELECT count(*) FROM billing.export_runs"), 1);
	PQfinish(db);
	harness_finish(&h);
	pg_harness_stop(&pg);
}
