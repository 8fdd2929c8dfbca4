/*
 * pg_harness.c — a private PostgreSQL 15 per test (see pg_harness.h for
 * what start does, why as `nobody` under root, and how leftovers are
 * reaped).
 *
 * Programs (initdb, pg_ctl) run in a forked child: it drops to the
 * harness's user, closes every inherited descriptor above stderr (the
 * postmaster that pg_ctl leaves running must not hold the test's sockets
 * or pipes), sends its output to a log file in the directory, and execs.
 * Nothing here calls a shell.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_harness.h"

#define DIR_PREFIX "tally-pg-"
/* Where harness directories go, in order of preference: a tmpfs makes
 * initdb three times faster than the disk here, and nothing in a test
 * cluster needs to survive a reboot. */
static const char *const BASE_DIRS[] = {"/dev/shm", "/tmp"};
#define BASE_DIR_COUNT (sizeof(BASE_DIRS) / sizeof(BASE_DIRS[0]))
/* A cluster takes about 40 MiB before a test writes anything. */
#define BASE_DIR_FREE_MIN ((uint64_t)1 << 30)
#define LOG_TAIL_SIZE 3072
#define SQL_ECHO_MAX 400 /* bytes of a failed statement quoted in a message */

/* ---- logs and failures ---------------------------------------------------- */

/* The last lines of DIR/name, at most out_size - 1 bytes, starting at a
 * line boundary when the file is longer. */
static void file_tail(const char *dir, const char *name, char *out, size_t out_size)
{
	out[0] = 0;
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	if (fseek(f, 0, SEEK_END) == 0) {
		long size = ftell(f);
		long from = size > (long)out_size - 1 ? size - ((long)out_size - 1) : 0;
		if (fseek(f, from, SEEK_SET) == 0) {
			size_t n = fread(out, 1, out_size - 1, f);
			out[n] = 0;
			char *newline = from > 0 ? strchr(out, '\n') : NULL;
			if (newline)
				memmove(out, newline + 1, strlen(newline + 1) + 1);
		}
	}
	fclose(f);
}

void pg_harness_log_tail(const pg_harness *pg, char *out, size_t out_size)
{
	file_tail(pg->dir, "postgres.log", out, out_size);
}

/* Fails the test with the message, then the tail of log_name (in the
 * harness directory). */
/* Never returns: criterion's failure leaves the test (abort() says so to
 * the compiler and to analyzers, which otherwise follow paths past it). */
__attribute__((format(printf, 3, 4), noreturn)) static void
harness_fail(const pg_harness *pg, const char *log_name, const char *format, ...)
{
	char message[1536];
	va_list args;
	va_start(args, format);
	vsnprintf(message, sizeof(message), format, args);
	va_end(args);
	char tail[LOG_TAIL_SIZE];
	file_tail(pg->dir, log_name, tail, sizeof(tail));
	cr_assert_fail("pg_harness: %s\n--- %s/%s (last lines) ---\n%s", message, pg->dir, log_name, tail);
	abort();
}

/* The start of sql, for messages. */
static const char *sql_echo(const char *sql, char *buffer, size_t size)
{
	snprintf(buffer, size, "%.*s%s", SQL_ECHO_MAX, sql, strlen(sql) > SQL_ECHO_MAX ? "..." : "");
	return buffer;
}

/* ---- running programs and removing trees ---------------------------------- */

/* Runs argv[0] as pg->uid/gid in pg->dir with output appended to
 * DIR/log_name; returns its exit status (128 + signal if killed). */
static int run_program(const pg_harness *pg, const char *const argv[], const char *log_name)
{
	char log_path[128];
	snprintf(log_path, sizeof(log_path), "%s/%s", pg->dir, log_name);
	pid_t pid = fork();
	cr_assert(pid >= 0, "pg_harness: fork for %s: %s", argv[0], strerror(errno));
	if (pid == 0) {
		if (geteuid() == 0 && pg->uid != 0) {
			if (setgroups(0, NULL) != 0 || setgid(pg->gid) != 0 || setuid(pg->uid) != 0) {
				fprintf(stderr, "pg_harness: dropping to uid %d: %s\n", (int)pg->uid,
					strerror(errno));
				_exit(126);
			}
		}
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
		int null_fd = open("/dev/null", O_RDONLY);
		if (fd < 0 || null_fd < 0 || chdir(pg->dir) != 0) {
			fprintf(stderr, "pg_harness: %s: %s\n", log_path, strerror(errno));
			_exit(126);
		}
		dup2(null_fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		close_range(3, ~0U, 0);
		setenv("TZ", "UTC", 1);
		setenv("LC_ALL", "C", 1);
		unsetenv("PGDATA");
		unsetenv("PGHOST");
		unsetenv("PGPORT");
		unsetenv("PGUSER");
		unsetenv("PGDATABASE");
		execv(argv[0], (char *const *)argv);
		fprintf(stderr, "pg_harness: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		cr_assert_eq(errno, EINTR, "pg_harness: waitpid %s: %s", argv[0], strerror(errno));
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int remove_failures;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) != 0 && errno != ENOENT)
		remove_failures++;
	return 0;
}

/* Removes dir and everything under it, never following a symbolic link
 * or leaving the file system. Returns the number of entries not removed. */
static int remove_tree(const char *dir)
{
	remove_failures = 0;
	if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0 && errno != ENOENT)
		remove_failures++;
	return remove_failures;
}

static bool path_exists(const char *dir, const char *name)
{
	char path[160];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return access(path, F_OK) == 0;
}

/* ---- reaping servers of dead test processes ------------------------------- */

/* The pid in DIR/owner when that file is ours (created by this effective
 * user, as the harness does), else 0. */
static pid_t owner_of(const char *dir)
{
	char path[320];
	snprintf(path, sizeof(path), "%s/owner", dir);
	int fd = open(path, O_RDONLY | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	struct stat st;
	char text[32] = "";
	ssize_t n = -1;
	if (fstat(fd, &st) == 0 && st.st_uid == geteuid() && S_ISREG(st.st_mode))
		n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = 0;
	long pid = strtol(text, NULL, 10);
	return pid > 0 && pid < INT32_MAX ? (pid_t)pid : 0;
}

/* Stops and removes the harness directories under base whose test
 * process is gone. */
static void reap_abandoned_in(const char *base)
{
	DIR *listing = opendir(base);
	if (!listing)
		return;
	struct dirent *entry;
	while ((entry = readdir(listing)) != NULL) {
		if (strncmp(entry->d_name, DIR_PREFIX, strlen(DIR_PREFIX)) != 0 ||
		    strlen(base) + 1 + strlen(entry->d_name) >= sizeof(((pg_harness *)0)->dir) - 8)
			continue;
		pg_harness old = {0};
		snprintf(old.dir, sizeof(old.dir), "%s/%s", base, entry->d_name);
		struct stat st;
		if (lstat(old.dir, &st) != 0 || !S_ISDIR(st.st_mode))
			continue;
		pid_t owner = owner_of(old.dir);
		if (owner == 0 || kill(owner, 0) == 0 || errno != ESRCH)
			continue; /* not ours, or its test is still running */
		char data[96];
		snprintf(data, sizeof(data), "%s/data", old.dir);
		if (path_exists(data, "postmaster.pid") && stat(data, &st) == 0 && st.st_uid != 0) {
			old.uid = st.st_uid;
			old.gid = st.st_gid;
			const char *argv[] = {PG_HARNESS_BIN_DIR "/pg_ctl", "-D", data, "-m", "immediate",
					      "-w", "-t", "30", "stop", NULL};
			run_program(&old, argv, "pg_ctl.log"); /* best effort: it may be dead */
		}
		remove_tree(old.dir);
	}
	closedir(listing);
}

static void reap_abandoned(void)
{
	for (size_t i = 0; i < BASE_DIR_COUNT; i++)
		reap_abandoned_in(BASE_DIRS[i]);
}

/* The first base directory we may write to with BASE_DIR_FREE_MIN bytes
 * free (a container's /dev/shm is often 64 MiB: too small). */
static const char *base_dir(void)
{
	for (size_t i = 0; i < BASE_DIR_COUNT; i++) {
		struct stat st;
		struct statvfs fs;
		if (stat(BASE_DIRS[i], &st) == 0 && S_ISDIR(st.st_mode) && access(BASE_DIRS[i], W_OK | X_OK) == 0 &&
		    statvfs(BASE_DIRS[i], &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize >= BASE_DIR_FREE_MIN)
			return BASE_DIRS[i];
	}
	return "/tmp";
}

/* ---- start and stop ------------------------------------------------------- */

/* The user the server runs as: the caller, or nobody (else postgres) for
 * root, which PostgreSQL refuses. */
static void choose_user(pg_harness *pg)
{
	pg->uid = geteuid();
	pg->gid = getegid();
	if (pg->uid != 0)
		return;
	const char *candidates[] = {"nobody", "postgres"};
	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
		struct passwd *pw = getpwnam(candidates[i]);
		if (pw && pw->pw_uid != 0) {
			pg->uid = pw->pw_uid;
			pg->gid = pw->pw_gid;
			return;
		}
	}
	cr_assert_fail("pg_harness: running as root, and neither user nobody nor postgres exists "
		       "to run PostgreSQL (it refuses root)");
}

static void append_config(const pg_harness *pg)
{
	char path[96];
	snprintf(path, sizeof(path), "%s/data/postgresql.conf", pg->dir);
	FILE *f = fopen(path, "a");
	if (!f)
		harness_fail(pg, "initdb.log", "open %s: %s", path, strerror(errno));
	fprintf(f,
		"\n# tests/support/pg_harness.c\n"
		"listen_addresses = ''\n"
		"unix_socket_directories = '%s'\n"
		"port = %d\n"
		"fsync = off\n"
		"synchronous_commit = off\n"
		"full_page_writes = off\n"
		"autovacuum = off\n"
		"shared_buffers = 32MB\n"
		"max_connections = 40\n"
		"TimeZone = 'UTC'\n"
		"log_timezone = 'UTC'\n"
		"log_line_prefix = '%%m [%%p] %%q%%u@%%d '\n",
		pg->dir, pg->port);
	if (fclose(f) != 0)
		harness_fail(pg, "initdb.log", "write %s: %s", path, strerror(errno));
}

/* A new cluster in data, by initdb. */
static void cluster_create(const pg_harness *pg, const char *data)
{
	const char *initdb[] = {PG_HARNESS_BIN_DIR "/initdb", "-D", data, "--no-sync", "--auth=trust",
				"-U", PG_HARNESS_SUPERUSER, "--locale=C", "--encoding=UTF8",
				"--no-instructions", NULL};
	int rc = run_program(pg, initdb, "initdb.log");
	if (rc != 0)
		harness_fail(pg, "initdb.log", "initdb -D %s exited %d", data, rc);
}

void pg_harness_start(pg_harness *pg, const char *name)
{
	memset(pg, 0, sizeof(*pg));
	cr_assert(strlen(name) <= 24 && strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(name),
		  "pg_harness: bad name '%s' (at most 24 bytes of [a-z0-9-])", name);
	reap_abandoned();
	choose_user(pg);

	snprintf(pg->dir, sizeof(pg->dir), "%s/" DIR_PREFIX "%s-XXXXXX", base_dir(), name);
	cr_assert_not_null(mkdtemp(pg->dir), "pg_harness: mkdtemp %s: %s", pg->dir, strerror(errno));
	char owner_path[96];
	snprintf(owner_path, sizeof(owner_path), "%s/owner", pg->dir);
	FILE *owner = fopen(owner_path, "w");
	cr_assert_not_null(owner, "pg_harness: %s: %s", owner_path, strerror(errno));
	fprintf(owner, "%d\n", (int)getpid());
	cr_assert_eq(fclose(owner), 0, "pg_harness: %s: %s", owner_path, strerror(errno));
	if (geteuid() != pg->uid)
		cr_assert_eq(chown(pg->dir, pg->uid, pg->gid), 0, "pg_harness: chown %s: %s", pg->dir,
			     strerror(errno));

	uint32_t random;
	cr_assert_eq(getrandom(&random, sizeof(random), 0), (ssize_t)sizeof(random));
	pg->port = 20000 + (int)(random % 40000);

	char data[96];
	snprintf(data, sizeof(data), "%s/data", pg->dir);
	cluster_create(pg, data);
	append_config(pg);

	char log_path[96];
	snprintf(log_path, sizeof(log_path), "%s/postgres.log", pg->dir);
	const char *start[] = {PG_HARNESS_BIN_DIR "/pg_ctl", "-D", data, "-l", log_path, "-w", "-t", "60",
			       "start", NULL};
	int rc = run_program(pg, start, "pg_ctl.log");
	if (rc != 0) {
		char pg_ctl_tail[1024];
		file_tail(pg->dir, "pg_ctl.log", pg_ctl_tail, sizeof(pg_ctl_tail));
		harness_fail(pg, "postgres.log", "pg_ctl start -D %s exited %d: %s", data, rc, pg_ctl_tail);
	}
	pg->running = true;

	PGconn *conn = pg_harness_connect(pg, PG_HARNESS_SUPERUSER, "postgres");
	int64_t version = pg_harness_query_int64(pg, conn, "SELECT current_setting('server_version_num')::int");
	PQfinish(conn);
	cr_assert_eq(version / 10000, 15, "pg_harness: server version %" PRId64 ", expected 15", version);
}

void pg_harness_stop(pg_harness *pg)
{
	if (!pg->dir[0])
		return;
	int rc = 0;
	char tail[LOG_TAIL_SIZE] = "";
	char data[96];
	snprintf(data, sizeof(data), "%s/data", pg->dir);
	if (pg->running || path_exists(data, "postmaster.pid")) {
		const char *stop[] = {PG_HARNESS_BIN_DIR "/pg_ctl", "-D", data, "-m", "fast", "-w", "-t",
				      "60", "stop", NULL};
		rc = run_program(pg, stop, "pg_ctl.log");
		pg_harness_log_tail(pg, tail, sizeof(tail));
	}
	char dir[sizeof(pg->dir)];
	memcpy(dir, pg->dir, sizeof(dir));
	int failures = remove_tree(dir);
	pg->dir[0] = 0;
	pg->running = false;
	cr_assert_eq(rc, 0, "pg_harness: pg_ctl stop -D %s exited %d\n--- postgres.log (last lines) ---\n%s",
		     data, rc, tail);
	cr_assert_eq(failures, 0, "pg_harness: %d entries of %s could not be removed", failures, dir);
}

/* ---- connections and SQL -------------------------------------------------- */

void pg_harness_conninfo(const pg_harness *pg, const char *user, const char *dbname, char *out,
			 size_t out_size)
{
	int n = snprintf(out, out_size, "host=%s port=%d user=%s dbname=%s", pg->dir, pg->port, user,
			 dbname);
	cr_assert(n > 0 && (size_t)n < out_size, "pg_harness: conninfo for %s/%s too long", user, dbname);
}

PGconn *pg_harness_connect(const pg_harness *pg, const char *user, const char *dbname)
{
	char conninfo[PG_HARNESS_CONNINFO_SIZE];
	pg_harness_conninfo(pg, user, dbname, conninfo, sizeof(conninfo));
	PGconn *conn = PQconnectdb(conninfo);
	cr_assert_not_null(conn, "pg_harness: PQconnectdb(%s): out of memory", conninfo);
	if (PQstatus(conn) != CONNECTION_OK) {
		char message[512];
		snprintf(message, sizeof(message), "%s", PQerrorMessage(conn));
		PQfinish(conn);
		harness_fail(pg, "postgres.log", "connect %s: %s", conninfo, message);
	}
	return conn;
}

/* Fails with the statement, libpq's message and the log tail unless res
 * has status want (or, when want is PGRES_COMMAND_OK, PGRES_TUPLES_OK). */
static void check_result(const pg_harness *pg, PGconn *conn, PGresult *res, ExecStatusType want,
			 const char *sql)
{
	ExecStatusType got = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (got == want || (want == PGRES_COMMAND_OK && got == PGRES_TUPLES_OK))
		return;
	char echo[SQL_ECHO_MAX + 4];
	char message[768];
	snprintf(message, sizeof(message), "%s", res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
	const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	char state[8];
	snprintf(state, sizeof(state), "%s", sqlstate ? sqlstate : "-----");
	PQclear(res);
	harness_fail(pg, "postgres.log", "%s (want %s): SQLSTATE %s %s\nin: %s", PQresStatus(got),
		     PQresStatus(want), state, message, sql_echo(sql, echo, sizeof(echo)));
}

void pg_harness_exec(const pg_harness *pg, PGconn *conn, const char *sql)
{
	PGresult *res = PQexec(conn, sql);
	check_result(pg, conn, res, PGRES_COMMAND_OK, sql);
	PQclear(res);
}

int64_t pg_harness_exec_rows(const pg_harness *pg, PGconn *conn, const char *sql)
{
	PGresult *res = PQexec(conn, sql);
	check_result(pg, conn, res, PGRES_COMMAND_OK, sql);
	char *end;
	const char *text = PQcmdTuples(res);
	long long rows = strtoll(text, &end, 10);
	bool counted = text[0] != 0 && *end == 0;
	PQclear(res);
	char echo[SQL_ECHO_MAX + 4];
	cr_assert(counted, "pg_harness: no row count for %s", sql_echo(sql, echo, sizeof(echo)));
	return (int64_t)rows;
}

PGresult *pg_harness_query(const pg_harness *pg, PGconn *conn, const char *sql)
{
	PGresult *res = PQexec(conn, sql);
	check_result(pg, conn, res, PGRES_TUPLES_OK, sql);
	return res;
}

int64_t pg_harness_query_int64(const pg_harness *pg, PGconn *conn, const char *sql)
{
	PGresult *res = pg_harness_query(pg, conn, sql);
	char echo[SQL_ECHO_MAX + 4];
	int rows = PQntuples(res), columns = PQnfields(res);
	bool null = rows == 1 && columns == 1 && PQgetisnull(res, 0, 0);
	if (rows != 1 || columns != 1 || null) {
		PQclear(res);
		harness_fail(pg, "postgres.log", "expected one non-NULL value, got %d rows x %d columns%s: %s",
			     rows, columns, null ? " (NULL)" : "", sql_echo(sql, echo, sizeof(echo)));
	}
	char *end;
	errno = 0;
	long long value = strtoll(PQgetvalue(res, 0, 0), &end, 10);
	bool bad = errno != 0 || *end != 0 || end == PQgetvalue(res, 0, 0);
	char text[64];
	snprintf(text, sizeof(text), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	if (bad)
		harness_fail(pg, "postgres.log", "'%s' is not an int64: %s", text, sql_echo(sql, echo, sizeof(echo)));
	return (int64_t)value;
}

void pg_harness_query_text(const pg_harness *pg, PGconn *conn, const char *sql, char *out, size_t out_size)
{
	PGresult *res = pg_harness_query(pg, conn, sql);
	size_t used = 0;
	bool fits = out_size > 0;
	out[0] = 0;
	for (int row = 0; row < PQntuples(res) && fits; row++) {
		for (int column = 0; column < PQnfields(res) && fits; column++) {
			const char *value = PQgetisnull(res, row, column) ? "\\N" : PQgetvalue(res, row, column);
			int n = snprintf(out + used, out_size - used, "%s%s", column ? "|" : "", value);
			fits = n >= 0 && (size_t)n < out_size - used;
			used += fits ? (size_t)n : 0;
		}
		if (fits && used + 1 < out_size) {
			out[used++] = '\n';
			out[used] = 0;
		} else {
			fits = false;
		}
	}
	PQclear(res);
	char echo[SQL_ECHO_MAX + 4];
	cr_assert(fits, "pg_harness: the result of %s does not fit in %zu bytes", sql_echo(sql, echo, sizeof(echo)),
		  out_size);
}

int pg_harness_try_exec(PGconn *conn, const char *sql, char sqlstate[6], char *message, size_t message_size)
{
	PGresult *res = PQexec(conn, sql);
	ExecStatusType status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	int rc = 0;
	memcpy(sqlstate, "00000", 6);
	if (message && message_size)
		message[0] = 0;
	if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
		rc = -1;
		const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
		snprintf(sqlstate, 6, "%s", state && strlen(state) == 5 ? state : "08006");
		if (message && message_size)
			snprintf(message, message_size, "%s", primary ? primary : PQerrorMessage(conn));
	}
	PQclear(res);
	return rc;
}

void pg_harness_copy_in(const pg_harness *pg, PGconn *conn, const char *copy_sql, const char *data,
			size_t data_size)
{
	PGresult *res = PQexec(conn, copy_sql);
	check_result(pg, conn, res, PGRES_COPY_IN, copy_sql);
	PQclear(res);
	if (PQputCopyData(conn, data, (int)data_size) != 1 || PQputCopyEnd(conn, NULL) != 1)
		harness_fail(pg, "postgres.log", "sending COPY data: %s", PQerrorMessage(conn));
	res = PQgetResult(conn);
	check_result(pg, conn, res, PGRES_COMMAND_OK, copy_sql);
	PQclear(res);
	while ((res = PQgetResult(conn)) != NULL)
		PQclear(res);
}

/* Reads path into a new NUL-ended buffer the caller frees. */
static char *read_text_file(const char *path)
{
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "pg_harness: open %s: %s", path, strerror(errno));
	char *text = malloc(PG_HARNESS_SQL_FILE_SIZE_MAX + 1);
	cr_assert_not_null(text);
	size_t n = fread(text, 1, PG_HARNESS_SQL_FILE_SIZE_MAX + 1, f);
	bool failed = ferror(f);
	fclose(f);
	cr_assert(!failed, "pg_harness: read %s failed", path);
	cr_assert(n <= PG_HARNESS_SQL_FILE_SIZE_MAX, "pg_harness: %s is over %d bytes", path,
		  PG_HARNESS_SQL_FILE_SIZE_MAX);
	text[n] = 0;
	return text;
}

void pg_harness_run_file(const pg_harness *pg, PGconn *conn, const char *path)
{
	char *sql = read_text_file(path);
	PGresult *res = PQexec(conn, sql);
	if (!res || (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)) {
		char message[768];
		snprintf(message, sizeof(message), "%s", res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
		PQclear(res);
		free(sql);
		harness_fail(pg, "postgres.log", "running %s: %s", path, message);
	}
	PQclear(res);
	free(sql);
}

/* ---- the migration runner (tools/billing/README.md) ----------------------- */

typedef struct migration {
	int number;
	char name[128];
} migration;

static int migration_compare(const void *a, const void *b)
{
	return ((const migration *)a)->number - ((const migration *)b)->number;
}

/* NNN_name.sql with name of [a-z0-9_]; returns NNN or 0. */
static int migration_number(const char *name)
{
	size_t length = strlen(name);
	if (length < 9 || length >= sizeof(((migration *)0)->name) || strcmp(name + length - 4, ".sql") != 0)
		return 0;
	if (strspn(name, "0123456789") != 3 || name[3] != '_')
		return 0;
	for (size_t i = 4; i < length - 4; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyz0123456789_", name[i]))
			return 0;
	return (name[0] - '0') * 100 + (name[1] - '0') * 10 + (name[2] - '0');
}

/* Lists dir's migrations in order; asserts they are numbered 1..N. */
static size_t migration_list(const char *dir, migration list[PG_HARNESS_MIGRATIONS_MAX])
{
	DIR *d = opendir(dir);
	cr_assert_not_null(d, "pg_harness: open migrations %s: %s (tests run from the repository root)", dir,
			   strerror(errno));
	size_t count = 0;
	struct dirent *entry;
	while ((entry = readdir(d)) != NULL) {
		int number = migration_number(entry->d_name);
		if (number == 0)
			continue;
		cr_assert_lt(count, PG_HARNESS_MIGRATIONS_MAX, "pg_harness: over %d migrations in %s",
			     PG_HARNESS_MIGRATIONS_MAX, dir);
		list[count].number = number;
		snprintf(list[count].name, sizeof(list[count].name), "%s", entry->d_name);
		count++;
	}
	closedir(d);
	qsort(list, count, sizeof(list[0]), migration_compare);
	for (size_t i = 0; i < count; i++)
		cr_assert_eq(list[i].number, (int)i + 1, "pg_harness: migrations in %s: %s where %03zu_*.sql was expected",
			     dir, list[i].name, i + 1);
	return count;
}

/* billing.schema_version's highest version and row count (0, 0 when the
 * table does not exist), read in the caller's transaction. */
static void schema_version_read(const pg_harness *pg, PGconn *conn, int64_t *max, int64_t *rows)
{
	*max = 0;
	*rows = 0;
	if (pg_harness_query_int64(pg, conn, "SELECT (to_regclass('billing.schema_version') IS NOT NULL)::int") == 0)
		return;
	*max = pg_harness_query_int64(pg, conn, "SELECT coalesce(max(version), 0) FROM billing.schema_version");
	*rows = pg_harness_query_int64(pg, conn, "SELECT count(*) FROM billing.schema_version");
}

int pg_harness_migrate(const pg_harness *pg, PGconn *conn, const char *dir, char *err, size_t err_size)
{
	migration list[PG_HARNESS_MIGRATIONS_MAX];
	size_t count = migration_list(dir, list);
	char lock[96];
	snprintf(lock, sizeof(lock), "SELECT pg_advisory_xact_lock(%d, %d)", PG_HARNESS_MIGRATION_LOCK_CLASS,
		 PG_HARNESS_MIGRATION_LOCK_OBJECT);
	int applied = 0;
	err[0] = 0;
	for (size_t i = 0; i < count; i++) {
		pg_harness_exec(pg, conn, "BEGIN");
		pg_harness_exec(pg, conn, lock);
		int64_t max, rows;
		schema_version_read(pg, conn, &max, &rows);
		if (max > (int64_t)count || rows != max) {
			pg_harness_exec(pg, conn, "ROLLBACK");
			if (max > (int64_t)count)
				snprintf(err, err_size, "billing schema version %" PRId64
					 " is newer than the newest migration in %s (%zu)", max, dir, count);
			else
				snprintf(err, err_size, "billing.schema_version holds %" PRId64
					 " rows up to version %" PRId64 ": versions are missing", rows, max);
			return -1;
		}
		if (list[i].number <= max) {
			pg_harness_exec(pg, conn, "ROLLBACK");
			continue;
		}
		char path[256];
		snprintf(path, sizeof(path), "%s/%s", dir, list[i].name);
		char *sql = read_text_file(path);
		char sqlstate[6], message[512];
		int rc = pg_harness_try_exec(conn, sql, sqlstate, message, sizeof(message));
		free(sql);
		if (rc != 0) {
			pg_harness_exec(pg, conn, "ROLLBACK");
			snprintf(err, err_size, "%s: %s (SQLSTATE %s)", list[i].name, message, sqlstate);
			return -1;
		}
		schema_version_read(pg, conn, &max, &rows);
		if (max != list[i].number || rows != max) {
			pg_harness_exec(pg, conn, "ROLLBACK");
			snprintf(err, err_size, "%s did not record version %d in billing.schema_version", list[i].name,
				 list[i].number);
			return -1;
		}
		pg_harness_exec(pg, conn, "COMMIT");
		applied++;
	}
	return applied;
}

/* ---- databases and roles -------------------------------------------------- */

/* A quoted identifier for name, in out. */
static void quote_identifier(PGconn *conn, const char *name, char *out, size_t out_size)
{
	char *quoted = PQescapeIdentifier(conn, name, strlen(name));
	cr_assert_not_null(quoted, "pg_harness: quoting %s: %s", name, PQerrorMessage(conn));
	int n = snprintf(out, out_size, "%s", quoted);
	PQfreemem(quoted);
	cr_assert(n > 0 && (size_t)n < out_size, "pg_harness: identifier %s too long", name);
}

void pg_harness_create_database(const pg_harness *pg, const char *dbname, const char *owner)
{
	PGconn *conn = pg_harness_connect(pg, PG_HARNESS_SUPERUSER, "postgres");
	char db[160], role[160], sql[400];
	quote_identifier(conn, dbname, db, sizeof(db));
	quote_identifier(conn, owner ? owner : PG_HARNESS_SUPERUSER, role, sizeof(role));
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s OWNER %s", db, role);
	pg_harness_exec(pg, conn, sql);
	PQfinish(conn);
}

void pg_harness_billing_roles(const pg_harness *pg, const char *login)
{
	PGconn *su = pg_harness_connect(pg, PG_HARNESS_SUPERUSER, "postgres");
	pg_harness_exec(pg, su,
			"CREATE ROLE tally_exporter NOLOGIN; CREATE ROLE tally_reporting NOLOGIN;"
			" CREATE ROLE tally_billing_admin NOLOGIN");
	PQfinish(su);
	pg_harness_create_login(pg, login, "tally_exporter");
}

void pg_harness_create_login(const pg_harness *pg, const char *role, const char *granted_role)
{
	PGconn *conn = pg_harness_connect(pg, PG_HARNESS_SUPERUSER, "postgres");
	char login[160], granted[160], sql[400];
	quote_identifier(conn, role, login, sizeof(login));
	snprintf(sql, sizeof(sql), "CREATE ROLE %s LOGIN", login);
	pg_harness_exec(pg, conn, sql);
	if (granted_role) {
		quote_identifier(conn, granted_role, granted, sizeof(granted));
		snprintf(sql, sizeof(sql), "GRANT %s TO %s", granted, login);
		pg_harness_exec(pg, conn, sql);
	}
	PQfinish(conn);
}
