/*
 * export.c — the billing export into PostgreSQL (export.h): migrations,
 * one day replaced in one transaction, the days --changed re-exports.
 *
 * NOTES ON THE DESIGN
 *
 * 1. Fetch, then write. A day's pages are all fetched and checked before
 *    the transaction begins, so a slow or failing source never holds
 *    PostgreSQL locks, and a day PostgreSQL would refuse (a string that is
 *    not UTF-8) is refused before anything is written. The fetched pages
 *    wait in a spool file (an unlinked temporary file in $TMPDIR, else
 *    /tmp: about the day's rows times 100 bytes), each as it came, packed,
 *    and are read back one at a time for COPY: so the exporter holds one
 *    page in memory, not the day. Before 2026-12-03 it held every page, and
 *    refused a day of more than 4,000,000 rows for every tenant.
 *
 * 2. One transaction per day, with the day's advisory lock taken first.
 *    DELETE then insert inside it: readers see the old day until COMMIT
 *    and the new one after; a session that dies before COMMIT (kill -9, a
 *    lost connection) is rolled back by the server, and its locks go with
 *    it. The export_runs row is in the same transaction, so its rows and
 *    checksum always describe the usage rows that are there.
 *
 * 2a. COPY cannot target billing.usage_daily: PostgreSQL refuses COPY FROM
 *    into a table with row security ("COPY FROM not supported with
 *    row-level security", 0A000) for any role the policies apply to. So
 *    the rows are COPYed into a temporary staging table (ON COMMIT DROP:
 *    it lives and dies with the day's transaction) and moved by one
 *    INSERT ... SELECT, which goes through the exporter's policy. The
 *    session needs TEMPORARY on the database (PUBLIC has it by default).
 *
 * 3. `started` and `finished` are PostgreSQL's clock_timestamp(): one clock
 *    for both, and `finished` is read after the day lock is held, so the
 *    latest `finished` of a day is the export whose rows are in the table
 *    (what --changed relies on), even with two exporters racing.
 *
 * 4. COPY text format: a field is its bytes with backslash, tab, newline
 *    and carriage return escaped (\\ \t \n \r); nothing else is special
 *    once every backslash is escaped. client_encoding is forced to UTF8,
 *    so PostgreSQL checks (and, for a database in another encoding,
 *    converts) exactly the bytes the store holds.
 *
 * 5. Every PGresult is looked at: a statement expected to return nothing
 *    must be PGRES_COMMAND_OK, a query PGRES_TUPLES_OK, a COPY
 *    PGRES_COPY_IN; anything else is an error naming the step, with the
 *    SQLSTATE and message, or libpq's message when the connection is gone.
 *
 * 6. --changed never stops at the store's change floor (export.h,
 *    export_changed_find). The one thing relied on is that an answer of
 *    ChangedDays(s) lists every day whose change is after s. So a day
 *    exported at watermark w >= s is settled by it exactly; a day exported
 *    at w < s only when listed; the rest are re-exported, since re-export
 *    is always safe and a missed day is not. Why a smaller s was refused
 *    (the floor, or anything else) never matters for what is missed, only
 *    for how much is re-exported.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "billing_sql.h"
#include "export.h"
#include "format.h"
#include "tally.h"
#include "usage.h"

#define US_PER_DAY INT64_C(86400000000)
#define COPY_BUFFER_SIZE (64u * 1024u)
/* Bytes of a tenant name in an `after_tenant` cursor (the protocol's 64). */
#define TENANT_SIZE_MAX 64
/* What billing.usage_daily's and billing.tenants' CHECKs allow
 * (tools/billing/001_schema.sql): row_check refuses the rest by name. */
#define USAGE_DIMENSION_BYTES_MAX 128 /* project, agent, model */
#define USAGE_TYPE_BYTES_MAX 64
#define TENANT_NAME_BYTES "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
#define TIMESTAMP_TEXT_SIZE 64
/* COPY goes here first: PostgreSQL refuses COPY FROM into a table with row
 * security (usage_daily), so the rows are copied into a temporary table of
 * the session (dropped at the end of the transaction) and moved with one
 * INSERT ... SELECT, which the exporter's policy admits. */
#define EXPORT_STAGING_TABLE "pg_temp.tally_export_staging"
#define USAGE_COLUMNS                                                                                          \
	"tenant, day, project, agent, model, type, status, count, tokens_in, tokens_out, cost_micros,"         \
	" duration_ms, errors"

struct exporter {
	PGconn *conn;
	export_source source;
	export_options options;
	/* COPY data on its way to PostgreSQL. */
	char copy_buffer[COPY_BUFFER_SIZE];
	size_t copy_used;
};

static const char *const status_names[4] = {"ok", "error", "timeout", "cancelled"};

const char *export_strerror(int rc)
{
	switch (rc) {
	case 0: return "success";
	case EXPORT_E_CONNECT: return "PostgreSQL unreachable or connection lost";
	case EXPORT_E_SQL: return "PostgreSQL refused a statement";
	case EXPORT_E_SCHEMA: return "billing schema version unknown to this binary";
	case EXPORT_E_SOURCE: return "the usage source failed";
	case EXPORT_E_DATA: return "a usage row PostgreSQL cannot take";
	case EXPORT_E_DAY: return "day out of range";
	case EXPORT_E_LIMIT: return "over an export limit";
	case EXPORT_E_CANCELLED: return "the export was cancelled";
	default: return rc < 0 ? strerror(-rc) : "unknown error";
	}
}

/* ---- days ------------------------------------------------------------------------ */

/* Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

int export_day_parse(const char *text, int32_t *day)
{
	if (!text || strlen(text) != 10 || text[4] != '-' || text[7] != '-')
		return -EINVAL;
	for (int i = 0; i < 10; i++)
		if (i != 4 && i != 7 && (text[i] < '0' || text[i] > '9'))
			return -EINVAL;
	int y = atoi(text), m = atoi(text + 5), d = atoi(text + 8);
	static const int month_days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (y < 1970 || m < 1 || m > 12 || d < 1 || d > month_days[m - 1] + (m == 2 && leap))
		return -EINVAL;
	*day = (int32_t)days_from_civil(y, m, d);
	return 0;
}

void export_day_format(char *out, int32_t day)
{
	int64_t y;
	int m, d;
	civil_from_days(day, &y, &m, &d);
	snprintf(out, EXPORT_DAY_SIZE, "%04" PRId64 "-%02d-%02d", y, m, d);
}

int32_t export_day_of(int64_t time_us)
{
	int64_t q = time_us / US_PER_DAY;
	if (time_us % US_PER_DAY < 0)
		q--;
	return (int32_t)q;
}

static int64_t wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t monotonic_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- libpq results -------------------------------------------------------------- */

/* libpq's message on one line: newlines and tabs folded to spaces, the
 * trailing ones dropped. */
static void one_line(char *out, size_t size, const char *text)
{
	size_t n = 0;
	bool space = false;
	for (const char *p = text ? text : ""; *p && n + 1 < size; p++) {
		if (*p == '\n' || *p == '\t' || *p == '\r') {
			space = n > 0;
			continue;
		}
		if (space && n + 2 < size)
			out[n++] = ' ';
		space = false;
		out[n++] = *p;
	}
	out[n] = '\0';
}

/* SQLSTATE classes of a session that ended: 08 (connection exception) and
 * 57P (an operator or crash shut the server down, or it cannot take
 * connections now). The statement was not refused; the session is gone. */
static bool sqlstate_session_gone(const char *state)
{
	return strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0;
}

/*
 * A failed statement: "WHAT: MESSAGE (SQLSTATE 42501)", say, into errmsg, or
 * "WHAT: lost the connection to PostgreSQL: ..." when the session is gone
 * (the server's message and SQLSTATE when it sent one before closing,
 * libpq's otherwise). Clears res. Returns EXPORT_E_SQL or EXPORT_E_CONNECT.
 */
static int sql_fail(exporter *x, PGresult *res, const char *what, char *errmsg)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	char text[EXPORT_ERRMSG_SIZE];
	int rc;
	if (state && primary && sqlstate_session_gone(state)) {
		one_line(text, sizeof(text), primary);
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "%s: lost the connection to PostgreSQL: %s (SQLSTATE %s)",
			 what, text, state);
		rc = EXPORT_E_CONNECT;
	} else if (state && primary) {
		one_line(text, sizeof(text), primary);
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "%s: %s (SQLSTATE %s)", what, text, state);
		rc = EXPORT_E_SQL;
	} else if (res && PQresultStatus(res) != PGRES_FATAL_ERROR && PQresultStatus(res) != PGRES_NONFATAL_ERROR) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "%s: unexpected answer from PostgreSQL (%s)", what,
			 PQresStatus(PQresultStatus(res)));
		rc = EXPORT_E_SQL;
	} else {
		one_line(text, sizeof(text), PQerrorMessage(x->conn));
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "%s: lost the connection to PostgreSQL: %s", what,
			 text[0] ? text : "no message");
		rc = EXPORT_E_CONNECT;
	}
	PQclear(res);
	return rc;
}

/* ---- cancelling ------------------------------------------------------------------------ */

struct export_cancel {
	pthread_mutex_t lock; /* guards pg */
	PGcancel *pg;         /* the open exporter's connection, or NULL */
	atomic_bool fired;
};

export_cancel *export_cancel_new(void)
{
	export_cancel *c = calloc(1, sizeof(*c));
	if (c && pthread_mutex_init(&c->lock, NULL)) {
		free(c);
		return NULL;
	}
	return c;
}

void export_cancel_fire(export_cancel *c)
{
	if (!c)
		return;
	atomic_store(&c->fired, true);
	pthread_mutex_lock(&c->lock);
	if (c->pg) {
		char err[256];
		PQcancel(c->pg, err, sizeof(err)); /* a failure leaves only the check below */
	}
	pthread_mutex_unlock(&c->lock);
}

void export_cancel_free(export_cancel *c)
{
	if (!c)
		return;
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* Whether x was cancelled: then EXPORT_E_CANCELLED with errmsg naming
 * what was not done. */
static int cancelled(const exporter *x, const char *what, char *errmsg)
{
	if (!x->options.cancel || !atomic_load(&x->options.cancel->fired))
		return 0;
	snprintf(errmsg, EXPORT_ERRMSG_SIZE, "%s: the export was cancelled (the server is stopping)",
		 what);
	return EXPORT_E_CANCELLED;
}

/* res must have status want: then 0 with *out = res (or res cleared when
 * out is NULL); else the error from sql_fail, or EXPORT_E_CANCELLED when
 * the exporter was cancelled meanwhile (the statement's failure is the
 * cancel's doing). */
static int result_expect(exporter *x, PGresult *res, ExecStatusType want, PGresult **out, const char *what,
			 char *errmsg)
{
	if ((!res || PQresultStatus(res) != want) && cancelled(x, what, errmsg)) {
		PQclear(res);
		return EXPORT_E_CANCELLED;
	}
	if (!res || PQresultStatus(res) != want)
		return sql_fail(x, res, what, errmsg);
	if (out)
		*out = res;
	else
		PQclear(res);
	return 0;
}

/* Runs sql (no parameters; several statements allowed) expecting want. */
static int exec_expect(exporter *x, const char *sql, ExecStatusType want, PGresult **out, const char *what,
		       char *errmsg)
{
	int rc = cancelled(x, what, errmsg);
	return rc ? rc : result_expect(x, PQexec(x->conn, sql), want, out, what, errmsg);
}

/* Runs one statement with text parameters expecting want. */
static int exec_params(exporter *x, const char *sql, int count, const char *const *values, ExecStatusType want,
		       PGresult **out, const char *what, char *errmsg)
{
	int rc = cancelled(x, what, errmsg);
	return rc ? rc
		  : result_expect(x, PQexecParams(x->conn, sql, count, NULL, values, NULL, NULL, 0), want, out,
				  what, errmsg);
}

/*
 * ROLLBACK after a failure: 0, or -1 when it failed too, which means the
 * connection is gone and the server has rolled the transaction back
 * itself. Callers keep the first error's message either way.
 */
static int rollback(exporter *x)
{
	PGresult *res = PQexec(x->conn, "ROLLBACK");
	int rc = res && PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -1;
	PQclear(res);
	return rc;
}

/* The number of rows a command touched (PQcmdTuples). */
static uint64_t command_rows(PGresult *res)
{
	return strtoull(PQcmdTuples(res), NULL, 10);
}

/* ---- opening ------------------------------------------------------------------------ */

int export_open(const char *conninfo, const export_source *source, const export_options *options,
		exporter **out, char *errmsg)
{
	*out = NULL;
	exporter *x = calloc(1, sizeof(*x));
	if (!x) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "out of memory");
		return -ENOMEM;
	}
	x->source = *source;
	if (options)
		x->options = *options;
	if (!x->options.tenant_page)
		x->options.tenant_page = EXPORT_TENANT_PAGE_DEFAULT;
	assert(x->options.tenant_page <= EXPORT_TENANT_PAGE_MAX);
	/* Defaults before the string (it may override them), the encoding
	 * after it (it may not: the COPY data is UTF-8). */
	const char *const keywords[] = {"connect_timeout", "application_name", "dbname", "client_encoding", NULL};
	const char *const values[] = {"10", "tally-export", conninfo, "UTF8", NULL};
	x->conn = PQconnectdbParams(keywords, values, 1);
	if (!x->conn || PQstatus(x->conn) != CONNECTION_OK) {
		char text[EXPORT_ERRMSG_SIZE];
		one_line(text, sizeof(text), x->conn ? PQerrorMessage(x->conn) : "out of memory");
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "cannot connect to PostgreSQL: %s", text);
		export_close(x);
		return EXPORT_E_CONNECT;
	}
	export_cancel *c = x->options.cancel;
	if (c) {
		/* Registered before the check: a fire after it cancels through
		 * pg, one before it is seen here. */
		PGcancel *pg = PQgetCancel(x->conn);
		if (!pg) {
			snprintf(errmsg, EXPORT_ERRMSG_SIZE, "out of memory");
			export_close(x);
			return -ENOMEM;
		}
		pthread_mutex_lock(&c->lock);
		c->pg = pg;
		pthread_mutex_unlock(&c->lock);
		int rc = cancelled(x, "connecting to PostgreSQL", errmsg);
		if (rc) {
			export_close(x);
			return rc;
		}
	}
	*out = x;
	return 0;
}

void export_close(exporter *x)
{
	if (!x)
		return;
	export_cancel *c = x->options.cancel;
	if (c) {
		pthread_mutex_lock(&c->lock);
		PQfreeCancel(c->pg); /* NULL is fine */
		c->pg = NULL;
		pthread_mutex_unlock(&c->lock);
	}
	PQfinish(x->conn);
	free(x);
}

/* ---- migrations ------------------------------------------------------------------------ */

int export_schema_version_known(void)
{
	return billing_migration_count ? billing_migrations[billing_migration_count - 1].version : 0;
}

/*
 * The schema's version: max(version) of billing.schema_version (0 when the
 * table does not exist), refused (EXPORT_E_SCHEMA) when it is above what
 * this binary carries, or when versions below it are missing (count is
 * not max: someone edited the table). tools/billing/README.md, step 2-3.
 */
static int schema_version_read(exporter *x, int *version, char *errmsg)
{
	PGresult *res = NULL;
	int rc = exec_expect(x,
			     "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c"
			     " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
			     " WHERE n.nspname = 'billing' AND c.relname = 'schema_version')",
			     PGRES_TUPLES_OK, &res, "reading the billing schema version", errmsg);
	if (rc)
		return rc;
	bool exists = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	*version = 0;
	if (!exists)
		return 0;
	if ((rc = exec_expect(x, "SELECT coalesce(max(version), 0), count(*) FROM billing.schema_version",
			      PGRES_TUPLES_OK, &res, "reading billing.schema_version", errmsg)))
		return rc;
	if (PQntuples(res) != 1) {
		PQclear(res);
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "reading billing.schema_version: no row");
		return EXPORT_E_SQL;
	}
	int highest = atoi(PQgetvalue(res, 0, 0));
	long count = atol(PQgetvalue(res, 0, 1));
	PQclear(res);
	int known = export_schema_version_known();
	if (highest > known) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE,
			 "billing schema version %d is newer than the newest migration this tally carries (%s, version"
			 " %d): a newer tally migrated this database; export with that one",
			 highest, billing_migration_count ? billing_migrations[billing_migration_count - 1].name : "none",
			 known);
		return EXPORT_E_SCHEMA;
	}
	if (count != highest) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE,
			 "billing.schema_version holds %ld versions up to %d: versions are missing (the table was"
			 " edited); repair it before exporting",
			 count, highest);
		return EXPORT_E_SCHEMA;
	}
	*version = highest;
	return 0;
}

/* One migration in its own transaction (tools/billing/README.md, step 1). */
static int migration_apply(exporter *x, const billing_migration *m, char *errmsg)
{
	char what[160];
	snprintf(what, sizeof(what), "migration %s", m->name);
	int rc = exec_expect(x, "BEGIN", PGRES_COMMAND_OK, NULL, what, errmsg);
	if (rc)
		return rc;
	char lock[96];
	snprintf(lock, sizeof(lock), "SELECT pg_catalog.pg_advisory_xact_lock(%d, %d)", EXPORT_LOCK_CLASS_MIGRATION,
		 EXPORT_LOCK_OBJECT_MIGRATION);
	int version;
	if ((rc = exec_expect(x, lock, PGRES_TUPLES_OK, NULL, what, errmsg)) ||
	    (rc = schema_version_read(x, &version, errmsg)))
		goto fail;
	if (m->version <= version) { /* applied already, by us or another runner */
		(void)rollback(x); /* nothing was done in it */
		return 0;
	}
	/* Several statements: PQexec returns the last result, or the first
	 * error (the rest is not run). */
	if ((rc = cancelled(x, what, errmsg)))
		goto fail;
	PGresult *res = PQexec(x->conn, m->sql);
	if (!res || (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)) {
		if ((rc = cancelled(x, what, errmsg)))
			PQclear(res);
		else
			rc = sql_fail(x, res, what, errmsg);
		goto fail;
	}
	PQclear(res);
	if ((rc = schema_version_read(x, &version, errmsg)))
		goto fail;
	if (version != m->version) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "%s left the schema at version %d, not %d", m->name, version,
			 m->version);
		rc = EXPORT_E_SQL;
		goto fail;
	}
	return exec_expect(x, "COMMIT", PGRES_COMMAND_OK, NULL, what, errmsg);
fail:
	(void)rollback(x); /* the first error is the one to report */
	return rc;
}

/*
 * The session may write the billing tables through their policies: a
 * superuser, a BYPASSRLS role, or one with the privileges of
 * tally_exporter. Before the migrations that role may not exist yet (002
 * creates it): with missing_ok that passes, to be checked again after.
 */
static int exporter_role_check(exporter *x, bool missing_ok, char *errmsg)
{
	PGresult *res = NULL;
	int rc = exec_expect(x,
			     "SELECT current_user,"
			     " EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tally_exporter'),"
			     " r.rolsuper OR r.rolbypassrls OR"
			     " CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tally_exporter')"
			     " THEN pg_catalog.pg_has_role(current_user, 'tally_exporter', 'USAGE') ELSE false END"
			     " FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
			     PGRES_TUPLES_OK, &res, "checking the exporter's role", errmsg);
	if (rc)
		return rc;
	if (PQntuples(res) != 1) {
		PQclear(res);
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "checking the exporter's role: the current role is not in pg_roles");
		return EXPORT_E_SQL;
	}
	bool exists = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	bool allowed = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
	if (!allowed && !(missing_ok && !exists)) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE,
			 "the PostgreSQL role %s may not export: it does not have the rights of tally_exporter"
			 " (GRANT tally_exporter TO %s)",
			 PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 0));
		PQclear(res);
		return EXPORT_E_SQL;
	}
	PQclear(res);
	return 0;
}

int export_migrate(exporter *x, int *from, int *to, char *errmsg)
{
	/* A role that may not export is told so before anything is read or
	 * migrated on its behalf. */
	int rc = exporter_role_check(x, true, errmsg);
	if (rc || (rc = schema_version_read(x, from, errmsg)))
		return rc;
	*to = *from;
	if (*from < export_schema_version_known()) {
		char sql[96];
		snprintf(sql, sizeof(sql), "SELECT pg_catalog.pg_advisory_lock(%d, %d)", EXPORT_LOCK_CLASS_MIGRATION,
			 EXPORT_LOCK_OBJECT_MIGRATION);
		if ((rc = exec_expect(x, sql, PGRES_TUPLES_OK, NULL, "taking the migration lock", errmsg)))
			return rc;
		for (unsigned i = 0; i < billing_migration_count && !rc; i++) {
			assert(billing_migrations[i].version == (int)i + 1);
			rc = migration_apply(x, &billing_migrations[i], errmsg);
		}
		snprintf(sql, sizeof(sql), "SELECT pg_catalog.pg_advisory_unlock(%d, %d)", EXPORT_LOCK_CLASS_MIGRATION,
			 EXPORT_LOCK_OBJECT_MIGRATION);
		char unlock_errmsg[EXPORT_ERRMSG_SIZE];
		int unlock_rc = exec_expect(x, sql, PGRES_TUPLES_OK, NULL, "releasing the migration lock",
					    rc ? unlock_errmsg : errmsg);
		if (rc || unlock_rc)
			return rc ? rc : unlock_rc;
		if ((rc = schema_version_read(x, to, errmsg)))
			return rc;
	}
	return exporter_role_check(x, false, errmsg);
}

/* ---- checking a day's rows ------------------------------------------------------------- */

/* A row PostgreSQL will take: text columns UTF-8 without NUL and within
 * the lengths usage_daily's CHECKs allow, a tenant name billing.tenants
 * takes, a known status, a count of at least one, every bigint in range.
 * Checked here, before any statement, so that the message names the row;
 * the server's own limits make none of these happen from a real store. */
static int row_check(const Tally__V1__UsageRow *r, const char *day_text, char *errmsg)
{
	const struct {
		const char *name;
		const uint8_t *data;
		size_t len, max;
	} texts[] = {
		{"tenant", (const uint8_t *)r->tenant, strlen(r->tenant), SIZE_MAX}, /* below */
		{"project", r->project.data, r->project.len, USAGE_DIMENSION_BYTES_MAX},
		{"agent", r->agent.data, r->agent.len, USAGE_DIMENSION_BYTES_MAX},
		{"model", r->model.data, r->model.len, USAGE_DIMENSION_BYTES_MAX},
		{"type", r->type.data, r->type.len, USAGE_TYPE_BYTES_MAX},
	};
	for (size_t k = 0; k < sizeof(texts) / sizeof(texts[0]); k++) {
		size_t bad = tally_utf8_invalid_at(texts[k].data, texts[k].len);
		if (bad != SIZE_MAX) {
			snprintf(errmsg, EXPORT_ERRMSG_SIZE,
				 "day %s, tenant %s: %s is not valid UTF-8 (byte %zu of %zu is 0x%02x);"
				 " PostgreSQL text cannot hold it",
				 day_text, r->tenant, texts[k].name, bad + 1, texts[k].len, texts[k].data[bad]);
			return EXPORT_E_DATA;
		}
		if (texts[k].len > texts[k].max) {
			snprintf(errmsg, EXPORT_ERRMSG_SIZE,
				 "day %s, tenant %s: %s is %zu bytes, over the %zu billing.usage_daily takes",
				 day_text, r->tenant, texts[k].name, texts[k].len, texts[k].max);
			return EXPORT_E_DATA;
		}
	}
	size_t tenant_len = strlen(r->tenant);
	if (tenant_len == 0 || tenant_len > TENANT_SIZE_MAX ||
	    strspn(r->tenant, TENANT_NAME_BYTES) != tenant_len) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE,
			 "day %s: tenant '%.80s' is not a name billing.tenants takes (1..64 bytes of "
			 "[A-Za-z0-9._-])", day_text, r->tenant);
		return EXPORT_E_DATA;
	}
	if (r->count == 0) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE,
			 "day %s, tenant %s: a usage row of count 0 (usage_daily counts at least one event)",
			 day_text, r->tenant);
		return EXPORT_E_DATA;
	}
	if (r->status >= 4) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s, tenant %s: unknown status %" PRIu32, day_text, r->tenant,
			 r->status);
		return EXPORT_E_DATA;
	}
	/* count and errors are bigint; the sums are numeric(39, 0) (migration
	 * 5) and go exactly, with their wraps (copy_row). */
	const struct {
		const char *name;
		uint64_t value;
	} numbers[] = {{"count", r->count}, {"errors", r->errors}};
	for (size_t k = 0; k < sizeof(numbers) / sizeof(numbers[0]); k++)
		if (numbers[k].value > INT64_MAX) {
			snprintf(errmsg, EXPORT_ERRMSG_SIZE,
				 "day %s, tenant %s: %s %" PRIu64 " is past PostgreSQL's bigint", day_text, r->tenant,
				 numbers[k].name, numbers[k].value);
			return EXPORT_E_DATA;
		}
	return 0;
}

/* A day's pages, fetched and checked: in the spool file (each a u32
 * length, then the page packed), the last one also in memory (its strings
 * are the next request's cursor). */
typedef struct day_fetch {
	FILE *spool;
	Tally__V1__DailyUsagePage *last;
	size_t page_count;
	uint64_t rows, tenants, checksum, watermark;
	char *names; /* the day's tenants in order, each NUL-terminated */
	size_t names_size, names_capacity;
	size_t last_name; /* the offset of the last of them (when names_size) */
} day_fetch;

static void day_fetch_free(day_fetch *f)
{
	if (f->spool)
		fclose(f->spool);
	if (f->last)
		tally__v1__daily_usage_page__free_unpacked(f->last, NULL);
	free(f->names);
	memset(f, 0, sizeof(*f));
}

/* An I/O failure of the spool file: errmsg and -errno (-EIO when errno
 * says nothing). */
static int spool_fail(const char *day_text, const char *what, char *errmsg)
{
	int e = errno ? errno : EIO;
	snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: %s the export's spool file: %s", day_text, what,
		 strerror(e));
	return -e;
}

/* The spool file: made in $TMPDIR (else /tmp) and unlinked at once, so it
 * goes when it is closed, or when the process ends. */
static int spool_open(day_fetch *f, const char *day_text, char *errmsg)
{
	const char *dir = getenv("TMPDIR");
	if (!dir || !dir[0])
		dir = "/tmp";
	char path[PATH_MAX];
	if ((size_t)snprintf(path, sizeof(path), "%s/tally-export-XXXXXX", dir) >= sizeof(path)) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: TMPDIR is too long for a spool file's path",
			 day_text);
		return -ENAMETOOLONG;
	}
	int fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: creating the export's spool file in %s: %s",
			 day_text, dir, strerror(e));
		return -e;
	}
	unlink(path);
	errno = 0;
	if (!(f->spool = fdopen(fd, "w+"))) {
		close(fd);
		return spool_fail(day_text, "opening", errmsg);
	}
	return 0;
}

/* Appends page to the spool file. */
static int spool_put(day_fetch *f, const Tally__V1__DailyUsagePage *page, const char *day_text,
		     char *errmsg)
{
	size_t size = tally__v1__daily_usage_page__get_packed_size(page);
	if (size > UINT32_MAX) { /* a page came in one frame: not past 256 MiB */
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: a DailyUsage page of %zu bytes", day_text, size);
		return EXPORT_E_SOURCE;
	}
	uint8_t *packed = malloc(size ? size : 1);
	if (!packed) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: out of memory", day_text);
		return -ENOMEM;
	}
	tally__v1__daily_usage_page__pack(page, packed);
	uint32_t length = (uint32_t)size;
	errno = 0;
	int rc = 0;
	if (fwrite(&length, sizeof(length), 1, f->spool) != 1 ||
	    (size && fwrite(packed, size, 1, f->spool) != 1))
		rc = spool_fail(day_text, "writing", errmsg);
	free(packed);
	return rc;
}

/* Rewinds the spool file for spool_next, with everything written out. */
static int spool_rewind(day_fetch *f, const char *day_text, char *errmsg)
{
	errno = 0;
	if (fflush(f->spool) || fseeko(f->spool, 0, SEEK_SET))
		return spool_fail(day_text, "writing", errmsg);
	return 0;
}

/* The spool file's next page into *out (free_unpacked it), or NULL at its
 * end. */
static int spool_next(day_fetch *f, Tally__V1__DailyUsagePage **out, const char *day_text, char *errmsg)
{
	*out = NULL;
	uint32_t length;
	errno = 0;
	size_t got = fread(&length, 1, sizeof(length), f->spool);
	if (got == 0 && feof(f->spool))
		return 0;
	if (got != sizeof(length))
		return spool_fail(day_text, "reading", errmsg);
	uint8_t *packed = malloc(length ? length : 1);
	if (!packed) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: out of memory", day_text);
		return -ENOMEM;
	}
	int rc = 0;
	if (length && fread(packed, length, 1, f->spool) != 1)
		rc = spool_fail(day_text, "reading", errmsg);
	else if (!(*out = tally__v1__daily_usage_page__unpack(NULL, length, packed))) {
		/* What this process wrote there itself: only memory fails. */
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: out of memory", day_text);
		rc = -ENOMEM;
	}
	free(packed);
	return rc;
}

/* Notes tenant as the day's next one. */
static int names_add(day_fetch *f, const char *tenant, const char *day_text, char *errmsg)
{
	size_t n = strlen(tenant) + 1;
	if (f->names_size + n > f->names_capacity) {
		size_t capacity = f->names_capacity ? 2 * f->names_capacity : 4096;
		while (capacity < f->names_size + n)
			capacity *= 2;
		char *names = realloc(f->names, capacity);
		if (!names) {
			snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: out of memory", day_text);
			return -ENOMEM;
		}
		f->names = names;
		f->names_capacity = capacity;
	}
	memcpy(f->names + f->names_size, tenant, n);
	f->names_size += n;
	return 0;
}

static int bytes_cmp(ProtobufCBinaryData a, ProtobufCBinaryData b)
{
	size_t n = a.len < b.len ? a.len : b.len;
	int c = n ? memcmp(a.data, b.data, n) : 0;
	return c ? c : (a.len > b.len) - (a.len < b.len);
}

/* Two rows of one tenant in DailyUsage's order: project, agent, model,
 * type (bytewise), then status by name. Statuses are known (row_check). */
static int key_cmp(const Tally__V1__UsageKey *a, const Tally__V1__UsageKey *b)
{
	const ProtobufCBinaryData *x[4] = {&a->project, &a->agent, &a->model, &a->type};
	const ProtobufCBinaryData *y[4] = {&b->project, &b->agent, &b->model, &b->type};
	for (int k = 0; k < 4; k++) {
		int c = bytes_cmp(*x[k], *y[k]);
		if (c)
			return c;
	}
	return strcmp(tally_status_name((int)a->status), tally_status_name((int)b->status));
}

/* A place in a day's rows: a row of a tenant, or with row NULL the end of
 * the tenant's rows (tenant "": before every tenant). */
typedef struct place {
	const char *tenant;
	const Tally__V1__UsageKey *row;
} place;

static int place_cmp(place a, place b)
{
	int c = strcmp(a.tenant, b.tenant);
	if (c || (!a.row && !b.row))
		return c;
	if (!a.row || !b.row)
		return a.row ? -1 : 1;
	return key_cmp(a.row, b.row);
}

static Tally__V1__UsageKey row_key(const Tally__V1__UsageRow *r)
{
	Tally__V1__UsageKey k = TALLY__V1__USAGE_KEY__INIT;
	k.project = r->project;
	k.agent = r->agent;
	k.model = r->model;
	k.type = r->type;
	k.status = r->status;
	return k;
}

/*
 * Checks page, the one after place `from` (the request's after_tenant and
 * after_row), and takes it into f. Its rows must come strictly after
 * `from`, in order, and at or before the place it names next, which must
 * lie after `from` (so pages move forward, and no row of the day can come
 * twice).
 */
static int day_fetch_take(day_fetch *f, Tally__V1__DailyUsagePage *page, int32_t day, const char *day_text,
			  place from, char *errmsg)
{
	if (page->day != day) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: DailyUsage answered for another day (%" PRId32 ")", day_text,
			 page->day);
		return EXPORT_E_SOURCE;
	}
	if (usage_rows_checksum(page->rows, page->n_rows) != page->checksum) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE,
			 "day %s: a DailyUsage page's rows do not add up to its checksum (after tenant '%s')",
			 day_text, from.tenant);
		return EXPORT_E_SOURCE;
	}
	if (page->n_rows > EXPORT_DAY_ROWS_MAX - f->rows) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: more than %" PRIu64 " usage rows",
			 day_text, EXPORT_DAY_ROWS_MAX);
		return EXPORT_E_LIMIT;
	}
	place next = {page->next_after_tenant ? page->next_after_tenant : "", page->next_after_row};
	if (strlen(next.tenant) > TENANT_SIZE_MAX || (!next.tenant[0] && next.row) ||
	    (next.row && next.row->status >= 4) || (next.tenant[0] && place_cmp(next, from) <= 0)) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: DailyUsage's next page does not move forward (after '%s')",
			 day_text, from.tenant);
		return EXPORT_E_SOURCE;
	}
	place previous = from;
	Tally__V1__UsageKey key;
	for (size_t i = 0; i < page->n_rows; i++) {
		const Tally__V1__UsageRow *r = page->rows[i];
		int rc = row_check(r, day_text, errmsg);
		if (rc)
			return rc;
		Tally__V1__UsageKey here = row_key(r);
		place at = {r->tenant, &here};
		if (place_cmp(at, previous) <= 0 || (next.tenant[0] && place_cmp(at, next) > 0)) {
			snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: DailyUsage's rows are out of order at tenant '%s'",
				 day_text, r->tenant);
			return EXPORT_E_SOURCE;
		}
		/* The day's last tenant so far, by offset: names_add may move the names. */
		if (!f->names_size || strcmp(r->tenant, f->names + f->last_name) != 0) {
			f->tenants++;
			f->last_name = f->names_size;
			if ((rc = names_add(f, r->tenant, day_text, errmsg)))
				return rc;
		}
		key = here;
		previous = (place){r->tenant, &key};
	}
	int rc = f->spool ? 0 : spool_open(f, day_text, errmsg);
	if (rc || (rc = spool_put(f, page, day_text, errmsg)))
		return rc;
	/* from may point into the last page: no longer used */
	if (f->last)
		tally__v1__daily_usage_page__free_unpacked(f->last, NULL);
	f->last = page;
	f->page_count++;
	f->rows += page->n_rows;
	f->checksum += page->checksum;
	if (page->watermark < f->watermark)
		f->watermark = page->watermark;
	return 0;
}

static void hook(exporter *x, enum export_step step, uint64_t n)
{
	if (x->options.hook)
		x->options.hook(x->options.hook_arg, step, n);
}

/* Every page of day, checked (f->watermark starts at UINT64_MAX). */
static int day_fetch_all(exporter *x, int32_t day, const char *day_text, day_fetch *f, char *errmsg)
{
	f->watermark = UINT64_MAX;
	place after = {"", NULL}; /* strings in the last page taken (kept in f) */
	for (;;) {
		if (f->page_count == EXPORT_DAY_PAGES_MAX) {
			snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: more than %u DailyUsage pages", day_text,
				 EXPORT_DAY_PAGES_MAX);
			return EXPORT_E_LIMIT;
		}
		Tally__V1__DailyUsagePage *page = NULL;
		char why[EXPORT_ERRMSG_SIZE] = "";
		int rc = x->source.daily_usage(x->source.ctx, day, after.tenant, after.row, x->options.tenant_page,
					       &page, why);
		if (rc) {
			snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: %s", day_text, why[0] ? why : "the source failed");
			return rc == EXPORT_E_LIMIT ? EXPORT_E_LIMIT : EXPORT_E_SOURCE;
		}
		if ((rc = day_fetch_take(f, page, day, day_text, after, errmsg))) {
			tally__v1__daily_usage_page__free_unpacked(page, NULL);
			return rc;
		}
		hook(x, EXPORT_STEP_PAGE, f->page_count);
		after = (place){page->next_after_tenant ? page->next_after_tenant : "", page->next_after_row};
		if (!after.tenant[0])
			break;
	}
	if (f->watermark == UINT64_MAX || f->watermark > INT64_MAX) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: the store's watermark %" PRIu64 " is past PostgreSQL's bigint",
			 day_text, f->watermark);
		return EXPORT_E_SOURCE;
	}
	return 0;
}

/* ---- writing a day ---------------------------------------------------------------------- */

/* The day's tenants as a text[] literal: {"a","b"} (names escaped). */
static char *tenant_array(const day_fetch *f)
{
	size_t size = 3 + 2 * f->names_size + 3 * f->tenants;
	char *out = malloc(size);
	if (!out)
		return NULL;
	size_t n = 0;
	out[n++] = '{';
	for (size_t at = 0; at < f->names_size; at += strlen(f->names + at) + 1) {
		if (at)
			out[n++] = ',';
		out[n++] = '"';
		for (const char *t = f->names + at; *t; t++) {
			if (*t == '"' || *t == '\\')
				out[n++] = '\\';
			out[n++] = *t;
		}
		out[n++] = '"';
	}
	out[n++] = '}';
	out[n] = '\0';
	assert(n < size);
	return out;
}

static int copy_flush(exporter *x, char *errmsg)
{
	if (!x->copy_used)
		return 0;
	if (PQputCopyData(x->conn, x->copy_buffer, (int)x->copy_used) != 1) {
		char text[EXPORT_ERRMSG_SIZE];
		one_line(text, sizeof(text), PQerrorMessage(x->conn));
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "COPY: lost the connection to PostgreSQL: %s", text);
		return EXPORT_E_CONNECT;
	}
	x->copy_used = 0;
	return 0;
}

static int copy_put(exporter *x, const void *data, size_t size, char *errmsg)
{
	const char *p = data;
	while (size) {
		if (x->copy_used == COPY_BUFFER_SIZE) {
			int rc = copy_flush(x, errmsg);
			if (rc)
				return rc;
		}
		size_t n = COPY_BUFFER_SIZE - x->copy_used;
		if (n > size)
			n = size;
		memcpy(x->copy_buffer + x->copy_used, p, n);
		x->copy_used += n;
		p += n;
		size -= n;
	}
	return 0;
}

/* A text field: runs of plain bytes as they are, the four special ones
 * escaped, then the separator. */
static int copy_text(exporter *x, const uint8_t *s, size_t n, char separator, char *errmsg)
{
	if (n == 0) /* s may be NULL (protobuf-c's empty bytes) */
		return copy_put(x, &separator, 1, errmsg);
	size_t start = 0;
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		const char *escape = NULL;
		switch (s[i]) {
		case '\\': escape = "\\\\"; break;
		case '\t': escape = "\\t"; break;
		case '\n': escape = "\\n"; break;
		case '\r': escape = "\\r"; break;
		default: continue;
		}
		if (!(rc = copy_put(x, s + start, i - start, errmsg)))
			rc = copy_put(x, escape, 2, errmsg);
		start = i + 1;
	}
	if (!rc)
		rc = copy_put(x, s + start, n - start, errmsg);
	return rc ? rc : copy_put(x, &separator, 1, errmsg);
}

/* A sum exactly, in decimal (out: FORMAT_WIDE_SIZE bytes): its field (as
 * its own type: a cost is signed) plus its wraps times 2^64. */
static void sum_text(char *out, __int128 field, int64_t wraps)
{
	format_wide_text(out, field + (__int128)wraps * ((__int128)1 << 64));
}

/* One usage_daily row in COPY text format. */
static int copy_row(exporter *x, const Tally__V1__UsageRow *r, const char *day_text, char *errmsg)
{
	int rc;
	if ((rc = copy_text(x, (const uint8_t *)r->tenant, strlen(r->tenant), '\t', errmsg)) ||
	    (rc = copy_text(x, (const uint8_t *)day_text, strlen(day_text), '\t', errmsg)) ||
	    (rc = copy_text(x, r->project.data, r->project.len, '\t', errmsg)) ||
	    (rc = copy_text(x, r->agent.data, r->agent.len, '\t', errmsg)) ||
	    (rc = copy_text(x, r->model.data, r->model.len, '\t', errmsg)) ||
	    (rc = copy_text(x, r->type.data, r->type.len, '\t', errmsg)))
		return rc;
	const Tally__V1__Wraps *w = r->wraps;
	char sums[4][FORMAT_WIDE_SIZE];
	sum_text(sums[0], r->tokens_in, w ? w->tokens_in : 0);
	sum_text(sums[1], r->tokens_out, w ? w->tokens_out : 0);
	sum_text(sums[2], r->cost_micros, w ? w->cost_micros : 0);
	sum_text(sums[3], r->duration_ms, w ? w->duration_ms : 0);
	char numbers[256];
	int n = snprintf(numbers, sizeof(numbers), "%s\t%" PRIu64 "\t%s\t%s\t%s\t%s\t%" PRIu64 "\n",
			 status_names[r->status], r->count, sums[0], sums[1], sums[2], sums[3], r->errors);
	assert(n > 0 && (size_t)n < sizeof(numbers));
	return copy_put(x, numbers, (size_t)n, errmsg);
}

/* The tenant of COPY's line `line` (1-based) into tenant (TENANT_SIZE_MAX
 * + 1 bytes), for an error message; false when there is no such line or
 * the spool file cannot tell. */
static bool fetch_tenant_at(day_fetch *f, uint64_t line, char *tenant, const char *day_text)
{
	char ignored[EXPORT_ERRMSG_SIZE];
	if (line == 0 || spool_rewind(f, day_text, ignored))
		return false;
	uint64_t index = line - 1;
	for (;;) {
		Tally__V1__DailyUsagePage *page;
		if (spool_next(f, &page, day_text, ignored) || !page)
			return false;
		bool here = index < page->n_rows;
		if (here)
			snprintf(tenant, TENANT_SIZE_MAX + 1, "%s", page->rows[index]->tenant);
		else
			index -= page->n_rows;
		tally__v1__daily_usage_page__free_unpacked(page, NULL);
		if (here)
			return true;
	}
}

/* A refused COPY: a data error names the tenant of the row (from the
 * "COPY usage_daily, line N" context). */
static int copy_fail(exporter *x, PGresult *res, day_fetch *f, const char *day_text, char *errmsg)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *context = res ? PQresultErrorField(res, PG_DIAG_CONTEXT) : NULL;
	/* Only a data error is the row's doing: a session ended by an
	 * operator also names the line COPY had reached. */
	bool data = state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0);
	const char *at = data && context ? strstr(context, ", line ") : NULL;
	char tenant[TENANT_SIZE_MAX + 1];
	char what[160];
	if (at && fetch_tenant_at(f, strtoull(at + 7, NULL, 10), tenant, day_text))
		snprintf(what, sizeof(what), "day %s, tenant %s: COPY", day_text, tenant);
	else
		snprintf(what, sizeof(what), "day %s: COPY", day_text);
	int rc = sql_fail(x, res, what, errmsg);
	return rc == EXPORT_E_SQL && data ? EXPORT_E_DATA : rc;
}

/* COPY of every fetched row into the session's staging table, then into
 * billing.usage_daily; 0 once PostgreSQL took them all. */
static int copy_rows(exporter *x, day_fetch *f, const char *day_text, char *errmsg)
{
	char what[96];
	snprintf(what, sizeof(what), "day %s: creating the staging table", day_text);
	int rc = exec_expect(x,
			     "CREATE TEMPORARY TABLE " EXPORT_STAGING_TABLE " (tenant text, day date, project text,"
			     " agent text, model text, type text, status text, count bigint, tokens_in numeric(39, 0),"
			     " tokens_out numeric(39, 0), cost_micros numeric(39, 0), duration_ms numeric(39, 0),"
			     " errors bigint) ON COMMIT DROP",
			     PGRES_COMMAND_OK, NULL, what, errmsg);
	if (rc)
		return rc;
	snprintf(what, sizeof(what), "day %s: COPY", day_text);
	if ((rc = exec_expect(x, "COPY " EXPORT_STAGING_TABLE " FROM STDIN", PGRES_COPY_IN, NULL, what, errmsg)))
		return rc;
	x->copy_used = 0;
	uint64_t sent = 0;
	rc = f->spool ? spool_rewind(f, day_text, errmsg) : 0;
	while (!rc && f->spool) {
		Tally__V1__DailyUsagePage *page;
		if ((rc = spool_next(f, &page, day_text, errmsg)) || !page)
			break;
		for (size_t i = 0; i < page->n_rows && !rc; i++) {
			rc = copy_row(x, page->rows[i], day_text, errmsg);
			if (!rc)
				hook(x, EXPORT_STEP_COPY_ROW, ++sent);
		}
		tally__v1__daily_usage_page__free_unpacked(page, NULL);
	}
	if (!rc && sent != f->rows) { /* the spool file gave back fewer rows */
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: the export's spool file gave back %" PRIu64
			 " of %" PRIu64 " rows", day_text, sent, f->rows);
		rc = -EIO;
	}
	if (!rc)
		rc = copy_flush(x, errmsg);
	if (rc) {
		/* Make the server end the COPY (and so fail the transaction)
		 * before the ROLLBACK; the connection may be gone anyway. */
		if (PQputCopyEnd(x->conn, "the exporter stopped") == 1) {
			PGresult *res;
			while ((res = PQgetResult(x->conn)))
				PQclear(res);
		}
		return rc;
	}
	if (PQputCopyEnd(x->conn, NULL) != 1) {
		char text[EXPORT_ERRMSG_SIZE];
		one_line(text, sizeof(text), PQerrorMessage(x->conn));
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "%s: lost the connection to PostgreSQL: %s", what, text);
		return EXPORT_E_CONNECT;
	}
	PGresult *res = PQgetResult(x->conn);
	if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
		rc = copy_fail(x, res, f, day_text, errmsg);
	} else if (command_rows(res) != f->rows) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "%s: PostgreSQL took %s rows of %" PRIu64, what, PQcmdTuples(res),
			 f->rows);
		PQclear(res);
		rc = EXPORT_E_SQL;
	} else
		PQclear(res);
	/* The end of the command's results. */
	while ((res = PQgetResult(x->conn)))
		PQclear(res);
	if (rc)
		return rc;
	snprintf(what, sizeof(what), "day %s: inserting into billing.usage_daily", day_text);
	res = NULL;
	if ((rc = exec_expect(x,
			      "INSERT INTO billing.usage_daily (" USAGE_COLUMNS ") SELECT " USAGE_COLUMNS
			      " FROM " EXPORT_STAGING_TABLE,
			      PGRES_COMMAND_OK, &res, what, errmsg)))
		return rc;
	if (command_rows(res) != f->rows) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "%s: PostgreSQL inserted %s rows of %" PRIu64, what, PQcmdTuples(res),
			 f->rows);
		rc = EXPORT_E_SQL;
	}
	PQclear(res);
	return rc;
}

int export_day(exporter *x, int32_t day, export_day_result *result, char *errmsg)
{
	memset(result, 0, sizeof(*result));
	result->day = day;
	char day_text[EXPORT_DAY_SIZE];
	export_day_format(day_text, day);
	int32_t today = export_day_of(x->options.now_us ? x->options.now_us : wall_us());
	if (day > today || day < 0) {
		char today_text[EXPORT_DAY_SIZE];
		export_day_format(today_text, today);
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s is %s: nothing to export", day_text,
			 day < 0 ? "before 1970-01-01" : "after today (UTC)");
		return EXPORT_E_DAY;
	}
	int64_t start_us = monotonic_us();
	char what[160];
	snprintf(what, sizeof(what), "day %s: reading PostgreSQL's clock", day_text);
	PGresult *res = NULL;
	/* As text that reads back the same whatever the session's DateStyle
	 * and TimeZone: an abbreviation such as IST or CST would be read back
	 * as another zone's. */
	int rc = exec_expect(x,
			     "SELECT pg_catalog.to_char(pg_catalog.clock_timestamp() AT TIME ZONE 'UTC',"
			     " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
			     PGRES_TUPLES_OK, &res, what, errmsg);
	if (rc)
		return rc;
	char started[TIMESTAMP_TEXT_SIZE];
	snprintf(started, sizeof(started), "%s", PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "");
	PQclear(res);

	day_fetch f = {0};
	if ((rc = day_fetch_all(x, day, day_text, &f, errmsg))) {
		day_fetch_free(&f);
		return rc;
	}
	char *tenants = tenant_array(&f);
	if (!tenants) {
		day_fetch_free(&f);
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: out of memory", day_text);
		return -ENOMEM;
	}
	char day_number[16], rows_text[24], checksum_text[24], watermark_text[24];
	snprintf(day_number, sizeof(day_number), "%" PRId32, day);
	snprintf(rows_text, sizeof(rows_text), "%" PRIu64, f.rows);
	snprintf(checksum_text, sizeof(checksum_text), "%016" PRIx64, f.checksum);
	snprintf(watermark_text, sizeof(watermark_text), "%" PRIu64, f.watermark);

	snprintf(what, sizeof(what), "day %s: BEGIN", day_text);
	if ((rc = exec_expect(x, "BEGIN", PGRES_COMMAND_OK, NULL, what, errmsg)))
		goto done;
	const char *lock_params[2] = {day_number, NULL};
	snprintf(what, sizeof(what), "day %s: taking the day's lock", day_text);
	char lock_sql[96];
	snprintf(lock_sql, sizeof(lock_sql), "SELECT pg_catalog.pg_advisory_xact_lock(%d, $1::int)",
		 EXPORT_LOCK_CLASS_DAY);
	if ((rc = exec_params(x, lock_sql, 1, lock_params, PGRES_TUPLES_OK, NULL, what, errmsg)))
		goto fail;
	hook(x, EXPORT_STEP_BEGUN, 0);

	const char *tenant_params[1] = {tenants};
	snprintf(what, sizeof(what), "day %s: registering tenants in billing.tenants", day_text);
	if ((rc = exec_params(x,
			      "INSERT INTO billing.tenants (tenant) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
			      1, tenant_params, PGRES_COMMAND_OK, &res, what, errmsg)))
		goto fail;
	result->tenants_new = command_rows(res);
	PQclear(res);
	hook(x, EXPORT_STEP_TENANTS, result->tenants_new);

	const char *day_params[1] = {day_text};
	snprintf(what, sizeof(what), "day %s: deleting the day from billing.usage_daily", day_text);
	if ((rc = exec_params(x, "DELETE FROM billing.usage_daily WHERE day = $1::date", 1, day_params,
			      PGRES_COMMAND_OK, &res, what, errmsg)))
		goto fail;
	result->rows_replaced = command_rows(res);
	PQclear(res);
	hook(x, EXPORT_STEP_DELETED, result->rows_replaced);

	if ((rc = copy_rows(x, &f, day_text, errmsg))) {
		snprintf(what, sizeof(what), "day %s: copying its rows", day_text);
		if (cancelled(x, what, errmsg)) /* the COPY failed for the cancel */
			rc = EXPORT_E_CANCELLED;
		goto fail;
	}
	hook(x, EXPORT_STEP_COPIED, f.rows);

	const char *run_params[5] = {day_text, started, rows_text, checksum_text, watermark_text};
	snprintf(what, sizeof(what), "day %s: recording the run in billing.export_runs", day_text);
	if ((rc = exec_params(x,
			      "INSERT INTO billing.export_runs (day, started, finished, rows, checksum, store_watermark)"
			      " VALUES ($1::date, $2::timestamptz, pg_catalog.clock_timestamp(), $3::bigint, $4,"
			      " $5::bigint)",
			      5, run_params, PGRES_COMMAND_OK, NULL, what, errmsg)))
		goto fail;
	hook(x, EXPORT_STEP_RECORDED, 0);

	snprintf(what, sizeof(what), "day %s: COMMIT", day_text);
	if ((rc = cancelled(x, what, errmsg)))
		goto fail; /* not sent: rolled back */
	if ((rc = result_expect(x, PQexec(x->conn, "COMMIT"), PGRES_COMMAND_OK, NULL, what, errmsg)))
		goto done; /* a failed COMMIT has ended the transaction */
	hook(x, EXPORT_STEP_COMMITTED, 0);
	result->tenants = f.tenants;
	result->rows = f.rows;
	result->checksum = f.checksum;
	result->watermark = f.watermark;
	result->pages = (uint32_t)f.page_count;
	result->elapsed_us = monotonic_us() - start_us;
	goto done;
fail:
	(void)rollback(x); /* the first error is the one to report */
done:
	free(tenants);
	day_fetch_free(&f);
	return rc;
}

/* ---- --changed ---------------------------------------------------------------------------- */

void export_changed_free(export_changed *changed)
{
	free(changed->days);
	memset(changed, 0, sizeof(*changed));
}

static int watermark_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Each exported day's latest watermark, ascending by day, into *days
 * (malloc'd; NULL when none) and *count. */
static int exported_days_read(exporter *x, export_changed_day **days, size_t *count, char *errmsg)
{
	*days = NULL;
	*count = 0;
	int32_t today = export_day_of(x->options.now_us ? x->options.now_us : wall_us());
	char oldest[EXPORT_DAY_SIZE];
	export_day_format(oldest, today - EXPORT_CHANGED_DAYS_BACK);
	const char *params[1] = {oldest};
	PGresult *res = NULL;
	int rc = exec_params(x,
			     "SELECT DISTINCT ON (day) (day - date '1970-01-01'), store_watermark"
			     " FROM billing.export_runs WHERE day >= $1::date"
			     " ORDER BY day, finished DESC, started DESC",
			     1, params, PGRES_TUPLES_OK, &res, "reading billing.export_runs", errmsg);
	if (rc)
		return rc;
	size_t n = (size_t)PQntuples(res);
	if (n > EXPORT_DAYS_MAX) {
		PQclear(res);
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "billing.export_runs holds more than %u days",
			 EXPORT_DAYS_MAX);
		return EXPORT_E_LIMIT;
	}
	if (n && !(*days = calloc(n, sizeof(**days)))) {
		PQclear(res);
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		(*days)[i].day = (int32_t)strtol(PQgetvalue(res, (int)i, 0), NULL, 10);
		(*days)[i].watermark = strtoull(PQgetvalue(res, (int)i, 1), NULL, 10);
	}
	*count = n;
	PQclear(res);
	return 0;
}

/* Takes exported day e into out->days (room for every exported day). */
static void changed_add(export_changed *out, const export_changed_day *e, uint64_t change)
{
	out->days[out->count] = *e;
	out->days[out->count].change = change;
	out->count++;
}

/* --changed with options.day_change: each day's change asked of it. */
static int changed_by_day(exporter *x, const export_changed_day *exported, size_t n,
			  export_changed *out, char *errmsg)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t change = 0;
		char why[EXPORT_ERRMSG_SIZE] = "";
		const export_options *o = &x->options;
		if (o->day_change(o->day_change_arg, exported[i].day, &change, why)) {
			char day_text[EXPORT_DAY_SIZE];
			export_day_format(day_text, exported[i].day);
			snprintf(errmsg, EXPORT_ERRMSG_SIZE, "day %s: its change: %s", day_text,
				 why[0] ? why : "the source failed");
			return EXPORT_E_SOURCE;
		}
		if (change > exported[i].watermark)
			changed_add(out, &exported[i], change);
	}
	return 0;
}

/* ChangedDays(since) of the source: 0 with *result checked (as many
 * changes as days, days ascending), 1 when the call failed (why says
 * why), or EXPORT_E_SOURCE for an inconsistent answer (errmsg). */
static int changed_ask(exporter *x, uint64_t since, Tally__V1__ChangedDaysResult **result,
		       char *why, char *errmsg)
{
	*result = NULL;
	why[0] = '\0';
	Tally__V1__ChangedDaysResult *r = NULL;
	if (x->source.changed_days(x->source.ctx, since, &r, why)) {
		if (!why[0])
			snprintf(why, EXPORT_ERRMSG_SIZE, "ChangedDays: the source failed");
		return 1;
	}
	if (r->n_days != r->n_change) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "ChangedDays: %zu days but %zu changes",
			 r->n_days, r->n_change);
		tally__v1__changed_days_result__free_unpacked(r, NULL);
		return EXPORT_E_SOURCE;
	}
	for (size_t i = 1; i < r->n_days; i++)
		if (r->days[i] <= r->days[i - 1]) {
			snprintf(errmsg, EXPORT_ERRMSG_SIZE,
				 "ChangedDays: days not ascending (%" PRId32 " after %" PRId32 ")",
				 r->days[i], r->days[i - 1]);
			tally__v1__changed_days_result__free_unpacked(r, NULL);
			return EXPORT_E_SOURCE;
		}
	*result = r;
	return 0;
}

/*
 * The smallest of the exported watermarks (and UINT64_MAX) that
 * ChangedDays answers, ChangedDays(the smallest) having failed with `why`
 * (see export_changed_find): 0 with *result and *since, or
 * EXPORT_E_SOURCE with why, or an error. A store answers every since at
 * or above its floor and none below, so the answers are monotone and a
 * binary search finds the boundary; if the answers are not (a call failed
 * for another reason), the one kept is still a complete list for its own
 * since, which is all the caller relies on.
 */
static int changed_search(exporter *x, const export_changed_day *exported, size_t n,
			  Tally__V1__ChangedDaysResult **result, uint64_t *since, const char *why,
			  char *errmsg)
{
	uint64_t *marks = malloc((n + 1) * sizeof(*marks));
	if (!marks) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		marks[i] = exported[i].watermark;
	marks[n] = UINT64_MAX;
	qsort(marks, n + 1, sizeof(*marks), watermark_cmp);
	size_t k = 0; /* distinct, ascending: marks[0] failed */
	for (size_t i = 0; i <= n; i++)
		if (i == 0 || marks[i] != marks[k - 1])
			marks[k++] = marks[i];
	char ignored[EXPORT_ERRMSG_SIZE];
	size_t lo = 1, hi = k; /* hi: the smallest index answered so far (k: none) */
	int rc = 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		Tally__V1__ChangedDaysResult *r;
		rc = changed_ask(x, marks[mid], &r, ignored, errmsg);
		if (rc < 0)
			break;
		if (rc == 1) { /* below the floor: the boundary is above mid */
			lo = mid + 1;
			rc = 0;
			continue;
		}
		if (*result)
			tally__v1__changed_days_result__free_unpacked(*result, NULL);
		*result = r;
		hi = mid;
	}
	if (!rc && hi == k) {
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "%s", why);
		rc = EXPORT_E_SOURCE;
	}
	if (rc && *result) {
		tally__v1__changed_days_result__free_unpacked(*result, NULL);
		*result = NULL;
	}
	if (!rc)
		*since = marks[hi];
	free(marks);
	return rc;
}

/* --changed over ChangedDays (see export_changed_find). */
static int changed_by_list(exporter *x, const export_changed_day *exported, size_t n,
			   export_changed *out, char *errmsg)
{
	Tally__V1__ChangedDaysResult *list = NULL;
	char why[EXPORT_ERRMSG_SIZE];
	int rc = changed_ask(x, out->since, &list, why, errmsg);
	if (rc == 1)
		rc = changed_search(x, exported, n, &list, &out->since, why, errmsg);
	if (rc)
		return rc;
	out->store_watermark = list->watermark;
	/* Both ascend by day: one merge. */
	size_t j = 0, listed = 0;
	for (size_t i = 0; i < n; i++) {
		const export_changed_day *e = &exported[i];
		while (j < list->n_days && list->days[j] < e->day)
			j++;
		bool found = j < list->n_days && list->days[j] == e->day;
		listed += found;
		if (found && list->change[j] > e->watermark) {
			changed_add(out, e, list->change[j]);
		} else if (e->watermark < out->since) { /* its change may be up to since */
			changed_add(out, e, 0);
			out->unsure++;
		}
	}
	out->never_exported = list->n_days - listed;
	tally__v1__changed_days_result__free_unpacked(list, NULL);
	return 0;
}

int export_changed_find(exporter *x, export_changed *out, char *errmsg)
{
	memset(out, 0, sizeof(*out));
	export_changed_day *exported;
	size_t n;
	int rc = exported_days_read(x, &exported, &n, errmsg);
	if (rc || n == 0)
		return rc;
	out->exported_days = n;
	out->since = UINT64_MAX;
	for (size_t i = 0; i < n; i++)
		if (exported[i].watermark < out->since)
			out->since = exported[i].watermark;
	if (!(out->days = calloc(n, sizeof(*out->days)))) {
		free(exported);
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "out of memory");
		return -ENOMEM;
	}
	if (x->options.day_change)
		rc = changed_by_day(x, exported, n, out, errmsg);
	else
		rc = changed_by_list(x, exported, n, out, errmsg);
	free(exported);
	if (rc)
		export_changed_free(out);
	return rc;
}

static int day_cmp(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
	return (x > y) - (x < y);
}

bool export_failure_is_the_days(int rc)
{
	return rc == EXPORT_E_DATA || rc == EXPORT_E_LIMIT;
}

bool export_day_listed(const int32_t *days, size_t count, int32_t day)
{
	return count && bsearch(&day, days, count, sizeof(*days), day_cmp);
}

int export_days_exported(exporter *x, int32_t since, int32_t until, int32_t **days, size_t *count,
			 char *errmsg)
{
	*days = NULL;
	*count = 0;
	char since_text[EXPORT_DAY_SIZE], until_text[EXPORT_DAY_SIZE];
	export_day_format(since_text, since);
	export_day_format(until_text, until);
	const char *params[2] = {since_text, until_text};
	PGresult *res = NULL;
	int rc = exec_params(x,
			     "SELECT DISTINCT (day - date '1970-01-01') AS d FROM billing.export_runs"
			     " WHERE day >= $1::date AND day <= $2::date ORDER BY d",
			     2, params, PGRES_TUPLES_OK, &res, "reading billing.export_runs", errmsg);
	if (rc)
		return rc;
	size_t n = (size_t)PQntuples(res);
	if (n > EXPORT_DAYS_MAX) {
		PQclear(res);
		snprintf(errmsg, EXPORT_ERRMSG_SIZE, "billing.export_runs holds more than %u days", EXPORT_DAYS_MAX);
		return EXPORT_E_LIMIT;
	}
	if (n) {
		*days = malloc(n * sizeof(**days));
		if (!*days) {
			PQclear(res);
			snprintf(errmsg, EXPORT_ERRMSG_SIZE, "out of memory");
			return -ENOMEM;
		}
		for (size_t i = 0; i < n; i++)
			(*days)[i] = (int32_t)strtol(PQgetvalue(res, (int)i, 0), NULL, 10);
	}
	*count = n;
	PQclear(res);
	return 0;
}

/* ---- output ------------------------------------------------------------------------------- */

void export_day_print(FILE *out, const export_day_result *r)
{
	char day_text[EXPORT_DAY_SIZE];
	export_day_format(day_text, r->day);
	fprintf(out, "%s  tenants %" PRIu64 "  rows %" PRIu64 "  checksum %016" PRIx64 "  %.2f s\n", day_text,
		r->tenants, r->rows, r->checksum, (double)r->elapsed_us / 1e6);
}

void export_total_add(export_total *total, const export_day_result *r)
{
	total->days++;
	total->tenants += r->tenants;
	total->rows += r->rows;
	total->elapsed_us += r->elapsed_us;
}

void export_total_print(FILE *out, const export_total *total)
{
	fprintf(out, "total: %" PRIu64 " day%s, %" PRIu64 " tenant-days, %" PRIu64 " rows, %.2f s\n", total->days,
		total->days == 1 ? "" : "s", total->tenants, total->rows, (double)total->elapsed_us / 1e6);
}
