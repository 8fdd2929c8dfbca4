/*
 * export.h — the billing export: one UTC day of every tenant's usage, read
 * from a source, loaded into the PostgreSQL billing schema (docs/billing.md,
 * tools/billing/) exactly once.
 *
 * WHERE THE USAGE COMES FROM
 *
 *   The exporter does not know: it asks an export_source, two functions
 *   returning the protocol's messages (DailyUsagePage, ChangedDaysResult).
 *   `tally export` and tallyd's nightly schedule (server/schedule.c, which
 *   connects to its own server) give it one over a tally_client
 *   (export_source_client, in export_client.c). libpq is used here and
 *   nowhere else in tools/.
 *
 * WHAT ONE DAY'S EXPORT PROMISES (export_day)
 *
 *   1. Every page of DailyUsage(day) is fetched first, outside any
 *      transaction: the exporter keeps the smallest page watermark (an event
 *      a page missed has a later change, so ChangedDays finds its day) and
 *      the sum of the page checksums, after checking each page's rows
 *      against its checksum (proto/usage.h) and every string and number
 *      against what PostgreSQL will take (UTF-8 text without NUL, bigint).
 *   2. Then one transaction: pg_advisory_xact_lock(EXPORT_LOCK_CLASS_DAY,
 *      day) so two exporters of a day run one after the other; the day's
 *      unseen tenants into billing.tenants (ON CONFLICT DO NOTHING: the
 *      schema's default plan); DELETE the day from billing.usage_daily;
 *      COPY the rows into a temporary staging table and INSERT them from
 *      there (COPY into a table with row security is refused by
 *      PostgreSQL); one billing.export_runs row (day, started, finished =
 *      clock_timestamp(), rows, checksum as 16 lower-case hex digits,
 *      store_watermark); COMMIT.
 *   A crash, a kill or a lost connection at any point leaves the day as it
 *   was before or as the new export made it, never a mix and never twice:
 *   PostgreSQL rolls back a transaction whose session ends before COMMIT.
 *
 * THE SCHEMA (export_open)
 *
 *   The database is brought to the newest schema this binary carries
 *   (billing_migrations[], tools/billing_sql.h), by the runner protocol of
 *   tools/billing/README.md: a session-level advisory lock (EXPORT_LOCK_
 *   CLASS_MIGRATION, EXPORT_LOCK_OBJECT_MIGRATION) held while migrating;
 *   each migration in version order in its own transaction, which takes
 *   the same key as a transaction lock (so runners that take only that one
 *   wait too), reads the version (max of billing.schema_version; no table:
 *   0), skips a migration at or below it, runs the file (which records its
 *   own number) and checks that the version is now the file's. A database
 *   whose version is newer than the highest the binary knows, or whose
 *   schema_version has gaps (count is not max), is refused, untouched.
 *
 * Errors: every function returns 0 or a negative code (EXPORT_E_* below, or
 * -ENOMEM) and writes one line into errmsg (EXPORT_ERRMSG_SIZE bytes)
 * naming the cause: libpq's message for a connection, the SQLSTATE and the
 * server's message for a statement, the tenant and day of a row PostgreSQL
 * cannot take, the source's message. Nothing here prints or exits.
 *
 * Threads: an exporter is used by one thread at a time.
 */
#ifndef TALLY_TOOLS_EXPORT_H
#define TALLY_TOOLS_EXPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "client.h"
#include "tally.pb-c.h"

#define EXPORT_ERRMSG_SIZE 768
/* Tenants per DailyUsage page: the default and the protocol's maximum. */
#define EXPORT_TENANT_PAGE_DEFAULT 1000u
#define EXPORT_TENANT_PAGE_MAX 10000u
/* Usage rows of one day: past it the day is refused. They wait in a spool
 * file between the fetch and the COPY (export.c, note 1), about 100 bytes
 * each: a billion rows are about 100 GB of it. (Before 2026-12-03 they
 * waited in memory, and the bound was 4,000,000.) */
#define EXPORT_DAY_ROWS_MAX UINT64_C(1000000000)
/* DailyUsage pages of one day (each must move forward in tenant order). */
#define EXPORT_DAY_PAGES_MAX (1u << 20)
/* Days one call handles (a --from/--to range, the days --changed reads
 * from export_runs): ten years of store history and a margin. */
#define EXPORT_DAYS_MAX 3700u
/* How far back --changed looks in export_runs: the oldest day the store
 * can still change (backfill reaches 10 years back). */
#define EXPORT_CHANGED_DAYS_BACK 3660
/* Advisory locks (the two-key form). The migration key is the one of
 * tools/billing/README.md; a day's export locks (DAY, day). */
#define EXPORT_LOCK_CLASS_MIGRATION 7411
#define EXPORT_LOCK_OBJECT_MIGRATION 1
#define EXPORT_LOCK_CLASS_DAY 7412
/* "2026-09-21" and its NUL, with room for any int32 day. */
#define EXPORT_DAY_SIZE 24

enum export_error {
	EXPORT_E_CONNECT = -30001,  /* PostgreSQL unreachable or refused the login: libpq's message */
	EXPORT_E_SQL = -30002,      /* a statement failed: SQLSTATE and message (permissions, a missing role, ...) */
	EXPORT_E_SCHEMA = -30003,   /* the database's schema version is newer than this binary knows */
	EXPORT_E_SOURCE = -30004,   /* the source failed or sent something inconsistent */
	EXPORT_E_DATA = -30005,     /* a row PostgreSQL cannot take (not UTF-8, NUL, too long, a bad tenant name, count 0, past bigint, bad status) */
	EXPORT_E_DAY = -30006,      /* a day after today (UTC), or before 1970-01-01 */
	EXPORT_E_LIMIT = -30007,    /* over EXPORT_DAY_ROWS_MAX, EXPORT_DAY_PAGES_MAX or EXPORT_DAYS_MAX, or a tenant-day the source refuses as too large */
	EXPORT_E_CANCELLED = -30008, /* export_cancel_fire was called: nothing more is sent; the open transaction is rolled back */
};

/* A static name of any code above, or strerror for -errno. */
const char *export_strerror(int rc);

/* ---- the source -------------------------------------------------------------- */

/*
 * Where usage comes from. Both calls return 0 with *out set (owned by the
 * caller, freed with the message type's free_unpacked(out, NULL)), or a
 * negative code (the source's own) with errmsg (EXPORT_ERRMSG_SIZE bytes)
 * one line saying why. daily_usage: the tenants after after_tenant ("" for
 * the first page), at most limit of them (1..EXPORT_TENANT_PAGE_MAX), of
 * UTC day `day` (days since 1970-01-01), after_tenant's rows after
 * after_row first when after_row is not NULL (the previous page's
 * next_after_row: it stopped inside that tenant), the rows checked against the
 * page's checksum or not (the exporter checks again); EXPORT_E_LIMIT when
 * the source refuses the day as over its own limits (the server's
 * TOO_LARGE: a tenant-day of more groups than a query may build), which
 * fails that day alone, like the exporter's own limits; any other code
 * is EXPORT_E_SOURCE to the caller. changed_days: the days whose events
 * changed after watermark since.
 */
typedef struct export_source {
	void *ctx;
	int (*daily_usage)(void *ctx, int32_t day, const char *after_tenant,
			   const Tally__V1__UsageKey *after_row, uint32_t limit,
			   Tally__V1__DailyUsagePage **page_out, char *errmsg);
	int (*changed_days)(void *ctx, uint64_t since, Tally__V1__ChangedDaysResult **result_out,
			    char *errmsg);
} export_source;

/*
 * The source over an open admin connection (export_client.c):
 * tally_client_daily_usage and tally_client_changed_days,
 * their failures worded as "DailyUsage: refused by the server: MESSAGE
 * (CODE)" or "DailyUsage: <transport error>". c stays the caller's and must
 * outlive the source.
 */
void export_source_client(export_source *source, tally_client *c);

/* ---- the exporter -------------------------------------------------------------- */

/* Points of an export at which a test hook is called (export_options). */
enum export_step {
	EXPORT_STEP_PAGE = 1,  /* a page was fetched; n: pages so far */
	EXPORT_STEP_BEGUN,     /* the transaction is open and holds the day's lock */
	EXPORT_STEP_TENANTS,   /* unseen tenants inserted; n: how many were new */
	EXPORT_STEP_DELETED,   /* the old day deleted; n: rows deleted */
	EXPORT_STEP_COPY_ROW,  /* a row was handed to COPY; n: rows so far */
	EXPORT_STEP_COPIED,    /* the rows are in billing.usage_daily (uncommitted); n: rows */
	EXPORT_STEP_RECORDED,  /* the export_runs row is inserted */
	EXPORT_STEP_COMMITTED, /* COMMIT returned */
};

typedef struct export_options {
	uint32_t tenant_page;  /* tenants per DailyUsage page; 0: EXPORT_TENANT_PAGE_DEFAULT */
	int64_t now_us;        /* "today" for the future-day check; 0: the wall clock */
	/* Tests: called at each step of export_day (NULL: none). */
	void (*hook)(void *arg, enum export_step step, uint64_t n);
	void *hook_arg;
	/* Where one day's change can be read directly, or NULL: tallyd's
	 * schedule reads its own store (tally_day_change_lsn). 0 with *change
	 * the day's latest change, comparable with watermarks (0: never; for a
	 * day at or below the store's change floor, an upper bound), or a
	 * negative code with errmsg. export_changed_find then asks it for each
	 * exported day instead of ChangedDays. */
	int (*day_change)(void *arg, int32_t day, uint64_t *change, char *errmsg);
	void *day_change_arg;
	/* Stops the exporter from another thread (export_cancel_fire), or
	 * NULL: tallyd's stop ends its nightly run this way. */
	struct export_cancel *cancel;
} export_options;

/*
 * A way to stop an exporter that another thread is running: tallyd's
 * stop, which must not wait for a statement that is waiting itself (on a
 * day's advisory lock another exporter holds, a migration's lock, a slow
 * COPY, a network partition). export_cancel_fire sends PostgreSQL a
 * cancel request for the statement in flight (PQcancel), and every later
 * statement fails before it is sent: the exporter's call returns
 * EXPORT_E_CANCELLED, and its day's transaction is rolled back, as for
 * any failed day. Fired once, it stays fired: an export_open with it
 * fails at once. export_cancel_new returns NULL when out of memory.
 */
typedef struct export_cancel export_cancel;
export_cancel *export_cancel_new(void);
void export_cancel_fire(export_cancel *c);
void export_cancel_free(export_cancel *c);

typedef struct exporter exporter;

/*
 * Connects to PostgreSQL (conninfo: a URL or "key=value ..." string,
 * PQconnectdb) with client_encoding UTF8, and keeps source and *options
 * (copied; source must outlive the exporter). 0 with *out (export_close
 * it), or EXPORT_E_CONNECT with libpq's message, or -ENOMEM. Nothing is
 * read or written yet.
 */
int export_open(const char *conninfo, const export_source *source, const export_options *options,
		exporter **out, char *errmsg);

/* Closes the connection (a transaction left open is rolled back by the
 * server) and frees x (NULL is fine). */
void export_close(exporter *x);

/*
 * Checks that the session may export (a superuser, a BYPASSRLS role or one
 * with the privileges of tally_exporter; EXPORT_E_SQL saying which GRANT is
 * missing otherwise, checked before migrating when the role exists, after
 * when a migration creates it), and brings the billing schema up to the
 * newest migration this binary carries (see the top of this file). 0 with
 * *from the version found and *to the version now (equal when nothing was
 * applied); EXPORT_E_SCHEMA for a database newer than the binary (nothing
 * done); EXPORT_E_SQL when a statement fails (that migration rolled back,
 * the ones before it stay).
 */
int export_migrate(exporter *x, int *from, int *to, char *errmsg);

/* The highest schema version this binary carries. */
int export_schema_version_known(void);

typedef struct export_day_result {
	int32_t day;
	uint64_t tenants;      /* tenants with usage that day */
	uint64_t tenants_new;  /* of them, not in billing.tenants before */
	uint64_t rows;         /* usage_daily rows written */
	uint64_t rows_replaced;/* rows the day had before (deleted) */
	uint64_t checksum;     /* the sum of the page checksums (proto/usage.h) */
	uint64_t watermark;    /* the smallest page watermark */
	uint32_t pages;
	int64_t elapsed_us;    /* from the first request to COMMIT */
} export_day_result;

/*
 * Exports UTC day `day` (see the top of this file). 0 with *result filled
 * once COMMIT succeeded; otherwise nothing of this call is in PostgreSQL
 * (the transaction is rolled back) and errmsg names the cause:
 * EXPORT_E_DAY (a day after today, nothing done), EXPORT_E_SOURCE,
 * EXPORT_E_DATA (which tenant, day and field), EXPORT_E_LIMIT, EXPORT_E_SQL,
 * EXPORT_E_CONNECT (the connection was lost), -ENOMEM. Call export_migrate
 * first.
 */
int export_day(exporter *x, int32_t day, export_day_result *result, char *errmsg);

/* A day --changed re-exports: its latest export's watermark and the
 * store's latest change of it. */
typedef struct export_changed_day {
	int32_t day;
	uint64_t watermark;    /* store_watermark of its latest export_runs row (by finished) */
	uint64_t change;       /* greater than watermark; 0: not known (export_changed.unsure) */
} export_changed_day;

typedef struct export_changed {
	uint64_t since;        /* the watermark ChangedDays answered for (below) */
	size_t exported_days;  /* days with an export_runs row looked at */
	export_changed_day *days; /* to re-export, ascending; malloc'd */
	size_t count;
	size_t unsure;         /* of days[], those exported below since and not listed (change 0) */
	size_t never_exported; /* days ChangedDays listed with no export_runs row (left alone) */
	uint64_t store_watermark; /* ChangedDaysResult.watermark (0 with day_change) */
} export_changed;

/*
 * What --changed re-exports. Reads each exported day's latest
 * store_watermark (the export_runs row with the latest `finished` per day,
 * days back to EXPORT_CHANGED_DAYS_BACK before today); then:
 *
 *   - with options.day_change, asks it for each of those days and keeps
 *     the days whose change is greater than their own watermark (since is
 *     then the smallest watermark; no request);
 *   - otherwise asks the source ChangedDays(since = the smallest
 *     watermark), which lists every day whose change is after since, and
 *     keeps the days whose change is greater than their own watermark.
 *     The store refuses a since below its change map's floor (engine/
 *     changes.h: no list could be complete). Then, rather than fail for
 *     good, it asks ChangedDays of the larger exported watermarks, and of
 *     UINT64_MAX last, in a binary search for the smallest one the source
 *     answers (at most 13 requests; since becomes it, UINT64_MAX when only
 *     that one is answered): that answer settles every day
 *     exported at or after it, exactly, and a day exported before it is
 *     re-exported when listed (its change is after since) and to be sure
 *     otherwise (`unsure`: the store cannot tell whether it changed).
 *     When the source answers none of them, the first call's error is
 *     returned. Whatever made a call fail, no changed day is missed: a
 *     refusal only ever adds days re-exported to be sure.
 *
 * 0 with *out filled (free with export_changed_free; count 0 and no
 * request when no day was ever exported), or an error as export_day
 * (EXPORT_E_SOURCE for a failed or inconsistent source: days and changes
 * of different counts, days not ascending). Call export_migrate first.
 */
int export_changed_find(exporter *x, export_changed *out, char *errmsg);

void export_changed_free(export_changed *changed);

/*
 * The days of [since, until] with an export_runs row, ascending (for the
 * nightly schedule's catch-up and --missing: days with data that were
 * never exported). 0 with *days (malloc'd, free it; NULL when none) and
 * *count, or an error as export_day.
 */
int export_days_exported(exporter *x, int32_t since, int32_t until, int32_t **days, size_t *count,
			 char *errmsg);

/* Whether export_day's failure rc is that day's own (a row PostgreSQL
 * cannot take, EXPORT_E_DATA; a day over a limit, EXPORT_E_LIMIT): the
 * next day may well succeed, so a run of several days goes on past it.
 * Any other failure would fail the next day the same way. */
bool export_failure_is_the_days(int rc);

/* True if day is among days[0, count), ascending (export_days_exported's). */
bool export_day_listed(const int32_t *days, size_t count, int32_t day);

/* ---- days ----------------------------------------------------------------------- */

/* Parses "YYYY-MM-DD" (a real date, years 1970..9999) into days since
 * 1970-01-01. 0 or -EINVAL. */
int export_day_parse(const char *text, int32_t *day);

/* Formats days since 1970-01-01 as "YYYY-MM-DD" into out (EXPORT_DAY_SIZE). */
void export_day_format(char *out, int32_t day);

/* The UTC day of a time in microseconds since the epoch (floor). */
int32_t export_day_of(int64_t time_us);

/* ---- output --------------------------------------------------------------------- */

/* One line for people: "2026-09-21  tenants 3  rows 42  checksum
 * 0123456789abcdef  0.12 s". */
void export_day_print(FILE *out, const export_day_result *result);

/* The sums of the days exported, and their line ("total: 3 days, ..."). */
typedef struct export_total {
	uint64_t days, tenants, rows;
	int64_t elapsed_us;
} export_total;

void export_total_add(export_total *total, const export_day_result *result);
void export_total_print(FILE *out, const export_total *total);

#endif /* TALLY_TOOLS_EXPORT_H */
