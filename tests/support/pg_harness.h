/*
 * pg_harness.h — a private PostgreSQL 15 server for one test, and libpq
 * helpers that turn every failure into a criterion assertion.
 *
 * WHAT pg_harness_start DOES
 *
 *   1. Reaps servers that earlier test processes left behind (a timeout,
 *      a kill, a crash): every directory BASE/tally-pg-* whose `owner`
 *      file (written by this same effective user) names a process that no
 *      longer exists is stopped (pg_ctl -m immediate) and removed.
 *      Directories of live processes (tests running in parallel) are
 *      never touched. BASE is /dev/shm, and /tmp.
 *   2. Makes BASE/tally-pg-<name>-XXXXXX (mkdtemp; BASE is /dev/shm when
 *      it is writable with 1 GiB free — initdb on tmpfs takes a third of
 *      the time it takes on this machine's disk — else /tmp) and writes
 *      its own pid to `owner`. The directory holds data/ (the cluster),
 *      the Unix socket, postgres.log (the server's log), initdb.log and
 *      pg_ctl.log.
 *   3. Runs initdb (/usr/lib/postgresql/15/bin) with --no-sync, trust
 *      authentication, the C locale, UTF8 and the bootstrap superuser
 *      PG_HARNESS_SUPERUSER.
 *   4. Appends to data/postgresql.conf: no TCP at all (listen_addresses =
 *      ''), the socket in the directory, a random port in 20000..59999
 *      (it only names the socket file, so it cannot collide with anything
 *      outside the directory), fsync, synchronous_commit and
 *      full_page_writes off (a test cluster need not survive a power cut),
 *      autovacuum off, TimeZone UTC.
 *   5. pg_ctl -w start, then a connection that checks the server is 15.
 *
 * Root. PostgreSQL refuses to run as root, and CI runs as root: then the
 * directory is given to the user `nobody` (or, failing that, `postgres`)
 * and initdb and pg_ctl run in a forked child that drops its groups, gid
 * and uid to that user before exec. As any other user they run as the
 * caller. The test process itself stays who it is and talks to the server
 * over the socket (root can reach a socket in a directory it does not own).
 *
 * Cost on the development machine: about 0.5 s to start (initdb is most
 * of it) and 0.1 s to stop; a cluster per test is affordable.
 *
 * pg_harness_stop stops the server (pg_ctl -m fast) and removes the whole
 * directory. Call it from the suite's .fini: criterion runs .fini after a
 * failed assertion, so only a killed or timed-out test leaves a server,
 * and the next pg_harness_start reaps it.
 *
 * Authentication is trust over the socket: any role name connects without
 * a password, so a test connects as the login roles it created.
 *
 * Every helper asserts (cr_assert) on failure with the operation, the SQL
 * or path, libpq's message and the last lines of postgres.log. A test that
 * expects an error uses pg_harness_try_exec, which reports the SQLSTATE.
 *
 * The migration runner, pg_harness_migrate, follows the protocol that
 * tools/billing/README.md asks of the exporter, so tests can build the
 * billing schema the way a deployment does.
 */
#ifndef TALLY_TEST_PG_HARNESS_H
#define TALLY_TEST_PG_HARNESS_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PG_HARNESS_BIN_DIR "/usr/lib/postgresql/15/bin"
/* The bootstrap superuser of every harness cluster. */
#define PG_HARNESS_SUPERUSER "postgres"
/* Bytes of conninfo strings, SQL file sizes, migration files per directory. */
#define PG_HARNESS_CONNINFO_SIZE 256
#define PG_HARNESS_SQL_FILE_SIZE_MAX (1 << 20)
#define PG_HARNESS_MIGRATIONS_MAX 64
/* The advisory lock a migration transaction takes first (two-key form):
 * classid 7411 (tally's port), objid 1. Same as the exporter. */
#define PG_HARNESS_MIGRATION_LOCK_CLASS 7411
#define PG_HARNESS_MIGRATION_LOCK_OBJECT 1

typedef struct pg_harness {
	char dir[64];    /* "" before start and after stop */
	int port;
	uid_t uid;       /* who runs initdb, pg_ctl and the server */
	gid_t gid;
	bool running;
} pg_harness;

/* Reaps abandoned servers, then makes, starts and checks (a connection,
 * server version 15) a new cluster in BASE/tally-pg-<name>-XXXXXX (name:
 * at most 24 bytes of [a-z0-9-]). pg is all the state: a plain variable
 * of the test, filled here. */
void pg_harness_start(pg_harness *pg, const char *name);

/* Stops the server (fast) and removes the directory; asserts the stop
 * succeeded (with the log tail, read before the removal). A harness that
 * was never started, or is already stopped, is left alone. */
void pg_harness_stop(pg_harness *pg);

/* Writes "host=DIR port=P user=USER dbname=DBNAME" into out (at least
 * PG_HARNESS_CONNINFO_SIZE bytes): a libpq conninfo, which is also what
 * `tally export --pg` accepts. user and dbname: plain names, no spaces. */
void pg_harness_conninfo(const pg_harness *pg, const char *user, const char *dbname, char *out,
			 size_t out_size);

/* A connection as user to dbname; asserts it is CONNECTION_OK. The caller
 * owns it and closes it with PQfinish. */
PGconn *pg_harness_connect(const pg_harness *pg, const char *user, const char *dbname);

/* CREATE DATABASE dbname, owned by owner (NULL: the superuser). */
void pg_harness_create_database(const pg_harness *pg, const char *dbname, const char *owner);

/* CREATE ROLE role LOGIN (cluster-wide), then, when granted_role is not
 * NULL, GRANT granted_role TO role. Run as the superuser. */
void pg_harness_create_login(const pg_harness *pg, const char *role, const char *granted_role);

/* The group roles the billing schema grants to (tally_exporter,
 * tally_reporting, tally_billing_admin: a DBA creates them), then the
 * login `login` granted tally_exporter (pg_harness_create_login). */
void pg_harness_billing_roles(const pg_harness *pg, const char *login);

/* Runs sql (one or several statements, simple query protocol) and asserts
 * that it succeeded; results are discarded. */
void pg_harness_exec(const pg_harness *pg, PGconn *conn, const char *sql);

/* Runs one command (INSERT, UPDATE, DELETE, ...) and returns how many
 * rows it affected (PQcmdTuples); asserts it succeeded. */
int64_t pg_harness_exec_rows(const pg_harness *pg, PGconn *conn, const char *sql);

/* Runs one query and asserts PGRES_TUPLES_OK; the caller PQclears it. */
PGresult *pg_harness_query(const pg_harness *pg, PGconn *conn, const char *sql);

/* Runs a query that must return exactly one row of one non-NULL integer
 * column, and returns it. */
int64_t pg_harness_query_int64(const pg_harness *pg, PGconn *conn, const char *sql);

/* Runs a query and writes its whole result into out: one line per row,
 * fields separated by '|', NULL as \N, each line ended by '\n'. Asserts
 * that it fits. For pinning exact results. */
void pg_harness_query_text(const pg_harness *pg, PGconn *conn, const char *sql, char *out,
			   size_t out_size);

/* Runs sql without asserting. Returns 0 when it succeeded (sqlstate is
 * then "00000"), -1 when it failed: sqlstate (6 bytes) gets the
 * SQLSTATE and message (when not NULL) the server's primary message. */
int pg_harness_try_exec(PGconn *conn, const char *sql, char sqlstate[6], char *message,
			size_t message_size);

/* COPY ... FROM STDIN (copy_sql) with data (text format rows), asserting
 * every step. */
void pg_harness_copy_in(const pg_harness *pg, PGconn *conn, const char *copy_sql, const char *data,
			size_t data_size);

/* Reads the file at path (at most PG_HARNESS_SQL_FILE_SIZE_MAX bytes) and
 * runs it as one pg_harness_exec: in the caller's transaction if one is
 * open, else in PostgreSQL's implicit one. */
void pg_harness_run_file(const pg_harness *pg, PGconn *conn, const char *path);

/* Applies the missing migrations of dir (NNN_name.sql, numbered 1..N
 * without gaps) the way tools/billing/README.md specifies: for each file
 * in order, one transaction that takes the migration advisory lock, reads
 * billing.schema_version (none: version 0), refuses a database whose
 * highest version is above N, skips the file if its number is already
 * recorded, else runs it and checks that it recorded its number.
 * Returns how many files it applied (0: the database was up to date), or
 * -1 with a message in err for a refusal or a failed file (that file's
 * transaction rolled back; the ones before it stay). Files that cannot be
 * listed or read are assertions, not errors. */
int pg_harness_migrate(const pg_harness *pg, PGconn *conn, const char *dir, char *err,
		       size_t err_size);

/* The last lines of postgres.log (at most out_size - 1 bytes, NUL-ended;
 * "" when there is none). */
void pg_harness_log_tail(const pg_harness *pg, char *out, size_t out_size);

#endif /* TALLY_TEST_PG_HARNESS_H */
