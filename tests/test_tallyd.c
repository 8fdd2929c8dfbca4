/*
 * test_tallyd.c — the tallyd binary as an operator runs it: --version,
 * --help, a bad flag, a data directory it cannot use and a port another
 * socket holds (exit codes and messages), and its log on stderr at each --log-level from start to a
 * clean stop by SIGTERM, in human and JSON lines.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <jansson.h>

#include "client.h"
#include "server_internal.h" /* SERVER_VERSION, PROTOCOL_VERSION */
#include "support/tallyd_proc.h"
#include "support/test_dir.h"

#define OUTPUT_SIZE 16384

static char out[OUTPUT_SIZE], err[OUTPUT_SIZE];

/* Description: --version prints the version and the protocol and exits
 * 0; --help prints the usage (every setting, --log-level among them) and
 * exits 0; neither writes to stderr. */
Test(tallyd, version_and_help)
{
	const char *const version[] = {"--version", NULL};
	cr_expect_eq(tallyd_proc_run(version, out, sizeof(out), err, sizeof(err)), 0);
	char want[64];
	snprintf(want, sizeof(want), "tallyd %s (protocol %d)\n", SERVER_VERSION, PROTOCOL_VERSION);
	cr_expect_str_eq(out, want);
	cr_expect_str_empty(err);
	const char *const help[] = {"--help", NULL};
	cr_expect_eq(tallyd_proc_run(help, out, sizeof(out), err, sizeof(err)), 0);
	cr_expect_eq(strncmp(out, "usage: tallyd [--config FILE] [OPTION...]\n", 42), 0, "%s", out);
	cr_expect_not_null(strstr(out, "  --log-level LEVEL              least severe lines logged: "
				       "error, warn or info (default info)\n"), "%s", out);
	cr_expect_str_empty(err);
}

/* Description: a bad setting exits 2 before anything starts, with the
 * message and the pointer to --help on stderr; a data directory that
 * cannot be made exits 2 with an error line that says why. */
Test(tallyd, a_bad_setting_or_directory_exits_2)
{
	const char *const bogus[] = {"--bogus", NULL};
	cr_expect_eq(tallyd_proc_run(bogus, out, sizeof(out), err, sizeof(err)), 2);
	cr_expect_str_empty(out);
	cr_expect_str_eq(err, "tallyd: unknown option --bogus (tallyd --help lists the options)\n");
	const char *const level[] = {"--log-level", "debug", NULL};
	cr_expect_eq(tallyd_proc_run(level, out, sizeof(out), err, sizeof(err)), 2);
	cr_expect_str_eq(err, "tallyd: --log-level: not a log level (error, warn or info): 'debug' "
			      "(tallyd --help lists the options)\n");
	const char *const nowhere[] = {"--data=/proc/no-such-dir/data", "--listen=127.0.0.1:0",
				       "--metrics=off", NULL};
	cr_expect_eq(tallyd_proc_run(nowhere, out, sizeof(out), err, sizeof(err)), 2);
	cr_expect_str_empty(out);
	cr_expect_not_null(strstr(err, "Z error cannot start: "), "%s", err);
	cr_expect_not_null(strstr(err, "/proc/no-such-dir/data"), "names the directory: %s", err);
}

/* Stops the tallyd pid with SIGTERM, asserts a clean exit, and reads the
 * stderr it wrote to log_path into err. */
static void stop_and_read_log(pid_t pid, const char *log_path)
{
	cr_assert_eq(kill(pid, SIGTERM), 0);
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);
	FILE *f = fopen(log_path, "r");
	cr_assert_not_null(f);
	size_t n = fread(err, 1, sizeof(err) - 1, f);
	err[n] = 0;
	fclose(f);
}

/* Starts tallyd on a new directory with --latency-slice-us=0 and up to
 * three extra arguments, stops it with SIGTERM and returns its stderr (in
 * err) after asserting a clean exit. (A kernel that refuses the default
 * scheduler slice, a seccomp profile say, would log a warning that is
 * not what these tests are about.) */
static void start_and_stop(const char *const *extra)
{
	const char *args[5] = {"--latency-slice-us=0"};
	for (int i = 0; extra && extra[i]; i++) {
		cr_assert_lt(i, 3);
		args[i + 1] = extra[i];
	}
	test_dir dir;
	test_dir_make(&dir, "tallyd");
	char data[96], log_path[96], address[TALLYD_PROC_ADDRESS_SIZE], key[TALLYD_PROC_KEY_SIZE] = "";
	snprintf(data, sizeof(data), "%s/data", dir.path);
	snprintf(log_path, sizeof(log_path), "%s/stderr", dir.path);
	pid_t pid = tallyd_proc_start(data, args, log_path, address, key);
	stop_and_read_log(pid, log_path);
	test_dir_remove_tree(dir.path);
}

/* Description: a listen address whose port another socket holds exits 2
 * with an error line naming the address and the reason; the data
 * directory it opened first is left closed, so a tallyd on a free port
 * then starts on it. */
Test(tallyd, a_port_in_use_exits_2)
{
	int holder = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(holder, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	cr_assert_eq(bind(holder, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(holder, 1), 0);
	cr_assert_eq(getsockname(holder, (struct sockaddr *)&a, &len), 0);
	test_dir dir;
	test_dir_make(&dir, "tallyd-port");
	char data[96], data_arg[120], listen_arg[64], says[96];
	snprintf(data, sizeof(data), "%s/data", dir.path);
	snprintf(data_arg, sizeof(data_arg), "--data=%s", data);
	snprintf(listen_arg, sizeof(listen_arg), "--listen=127.0.0.1:%u", ntohs(a.sin_port));
	const char *const taken[] = {data_arg, listen_arg, "--metrics=off", "--latency-slice-us=0", NULL};
	cr_expect_eq(tallyd_proc_run(taken, out, sizeof(out), err, sizeof(err)), 2);
	snprintf(says, sizeof(says), "listen on 127.0.0.1:%u: Address already in use", ntohs(a.sin_port));
	cr_expect_not_null(strstr(err, says), "%s", err);
	cr_expect_not_null(strstr(err, " error cannot start: "), "%s", err);
	close(holder);

	const char *const args[] = {"--latency-slice-us=0", NULL};
	char log_path[96], address[TALLYD_PROC_ADDRESS_SIZE], key[TALLYD_PROC_KEY_SIZE] = "";
	snprintf(log_path, sizeof(log_path), "%s/stderr", dir.path);
	pid_t pid = tallyd_proc_start(data, args, log_path, address, key);
	stop_and_read_log(pid, log_path);
	test_dir_remove_tree(dir.path);
}

/* Description: at the default level a start and a clean stop log their
 * info lines (started, listening, the first start's admin key, stopping,
 * stopped cleanly); at --log-level warn and at error the same run writes
 * nothing to stderr. */
Test(tallyd, log_levels_from_start_to_stop)
{
	start_and_stop(NULL);
	static const char *const lines[] = {"Z info tallyd ", "Z info listening on 127.0.0.1:",
					    "Z info first start: issued admin key ",
					    "Z info stopping: ", "Z info stopped cleanly\n"};
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		cr_expect_not_null(strstr(err, lines[i]), "'%s' in:\n%s", lines[i], err);
	const char *const warn[] = {"--log-level=warn", NULL};
	start_and_stop(warn);
	cr_expect_str_empty(err);
	const char *const error[] = {"--log-level", "error", NULL};
	start_and_stop(error);
	cr_expect_str_empty(err);
}

/* Description: with --log-json every line is one JSON object with time,
 * level and message; the level is "info" for the start and the stop. */
Test(tallyd, json_log_lines)
{
	const char *const json[] = {"--log-json", NULL};
	start_and_stop(json);
	int lines = 0, stopped = 0;
	for (char *line = strtok(err, "\n"); line; line = strtok(NULL, "\n")) {
		json_error_t e;
		json_t *o = json_loads(line, 0, &e);
		cr_assert_not_null(o, "not JSON (%s): %s", e.text, line);
		cr_expect_str_eq(json_string_value(json_object_get(o, "level")), "info", "%s", line);
		cr_expect(json_is_string(json_object_get(o, "time")), "%s", line);
		const char *message = json_string_value(json_object_get(o, "message"));
		cr_assert_not_null(message, "%s", line);
		stopped += strcmp(message, "stopped cleanly") == 0;
		lines++;
		json_decref(o);
	}
	cr_expect_geq(lines, 5);
	cr_expect_eq(stopped, 1);
}

/* Whether tallyd at address accepts key. */
static bool key_accepted(const char *address, const char *key)
{
	tally_client *c;
	if (tally_client_open(address, key, "test-tallyd", &c, NULL, NULL) != 0)
		return false;
	tally_client_close(c);
	return true;
}

/* Description: admin.key lost. When the only key is the admin key (a
 * first start that died before writing the file, or the file deleted
 * then), the next start revokes that key with a warning and issues a new
 * one into admin.key; the old key is refused. When other keys exist, the
 * start issues none, warns that admin.key is absent and how many admin
 * keys exist, writes no admin.key, and the existing admin key still
 * works. */
Test(tallyd, a_lost_admin_key_file)
{
	test_dir dir;
	test_dir_make(&dir, "tallyd");
	char data[96], log_path[96], key_path[128], address[TALLYD_PROC_ADDRESS_SIZE];
	char first[TALLYD_PROC_KEY_SIZE] = "", second[TALLYD_PROC_KEY_SIZE] = "";
	snprintf(data, sizeof(data), "%s/data", dir.path);
	snprintf(log_path, sizeof(log_path), "%s/stderr", dir.path);
	snprintf(key_path, sizeof(key_path), "%s/admin.key", data);

	pid_t pid = tallyd_proc_start(data, NULL, log_path, address, first);
	stop_and_read_log(pid, log_path);
	cr_assert_eq(unlink(key_path), 0);
	pid = tallyd_proc_start(data, NULL, log_path, address, second);
	cr_expect_str_neq(second, first, "a new admin key");
	cr_expect(!key_accepted(address, first), "the old admin key is revoked");
	cr_expect(key_accepted(address, second));
	tally_client *c;
	char cerr[TALLY_CLIENT_ERRMSG_SIZE];
	cr_assert_eq(tally_client_open(address, second, "test-tallyd", &c, NULL, cerr), 0, "%s", cerr);
	Tally__V1__TenantCreated *created = NULL;
	cr_assert_eq(tally_client_create_tenant(c, "acme", &created), 0);
	tally__v1__tenant_created__free_unpacked(created, NULL);
	tally_client_close(c);
	stop_and_read_log(pid, log_path);
	char said[256];
	snprintf(said, sizeof(said), ": %s is absent (an interrupted first start, or the file was "
		 "removed)\n", key_path);
	cr_expect_not_null(strstr(err, "Z warn revoked admin key "), "%s", err);
	cr_expect_not_null(strstr(err, said), "%s", err);
	cr_expect_not_null(strstr(err, "Z warn no live admin key: issued admin key "), "%s", err);

	cr_assert_eq(unlink(key_path), 0);
	char kept[TALLYD_PROC_KEY_SIZE];
	snprintf(kept, sizeof(kept), "%s", second);
	pid = tallyd_proc_start(data, NULL, log_path, address, kept);
	cr_expect(key_accepted(address, second), "the admin key still works");
	cr_expect_neq(access(key_path, F_OK), 0, "no admin.key is written");
	stop_and_read_log(pid, log_path);
	char want[256];
	snprintf(want, sizeof(want), "Z warn %s is absent; 1 admin key(s) exist: use one of them, none "
		 "is issued\n", key_path);
	cr_expect_not_null(strstr(err, want), "%s", err);
	cr_expect_null(strstr(err, "first start"), "%s", err);
	test_dir_remove_tree(dir.path);
}

/* Description: a tallyd whose file descriptors run out (started with a
 * limit of 64, then sent 80 plain connections) logs the failed accept,
 * and once those connections close it accepts again: a new client is
 * served within a timer tick or two. Before 2026-12-02 the failed accept
 * ended io_uring's multishot accept for good, and every later client
 * waited forever while the server looked healthy (about 1,010 plain
 * connections, no key needed, did it at the default limit of 1,024). */
Test(tallyd, accepts_again_after_running_out_of_descriptors, .timeout = 60)
{
	test_dir dir;
	test_dir_make(&dir, "tallyd-emfile");
	char data[96], log_path[96], address[TALLYD_PROC_ADDRESS_SIZE], key[TALLYD_PROC_KEY_SIZE] = "";
	snprintf(data, sizeof(data), "%s/data", dir.path);
	snprintf(log_path, sizeof(log_path), "%s/stderr", dir.path);
	struct rlimit old, low;
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = (struct rlimit){64, old.rlim_max};
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0); /* the child's, from its fork */
	const char *const args[] = {"--latency-slice-us=0", NULL};
	pid_t pid = tallyd_proc_start(data, args, log_path, address, key);
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);

	enum { PLAIN = 80 };
	int plain[PLAIN];
	const char *colon = strrchr(address, ':');
	cr_assert_not_null(colon);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	for (int i = 0; i < PLAIN; i++) {
		plain[i] = socket(AF_INET, SOCK_STREAM, 0);
		cr_assert_geq(plain[i], 0);
		cr_assert_eq(connect(plain[i], (struct sockaddr *)&a, sizeof(a)), 0, "connection %d", i);
	}
	struct timespec pause = {0, 500 * 1000000L};
	nanosleep(&pause, NULL);
	for (int i = 0; i < PLAIN; i++)
		close(plain[i]);

	tally_client *c = NULL;
	char why[TALLY_CLIENT_ERRMSG_SIZE] = "";
	int rc = tally_client_open_within(address, key, NULL, 10000, &c, NULL, why);
	cr_expect_eq(rc, 0, "a new client after the descriptors came back: %s", why);
	if (!rc) {
		cr_expect_eq(tally_client_ping(c, "alive", 5), 0);
		tally_client_close(c);
	}
	stop_and_read_log(pid, log_path);
	cr_expect_not_null(strstr(err, " error accept: Too many open files (accepting again every tick)"),
			   "%s", err);
	test_dir_remove_tree(dir.path);
}
