/*
 * tallyd_proc.c — tallyd run as a process by a test (tallyd_proc.h).
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "tallyd_proc.h"

#define ARGS_MAX 32

const char *tallyd_proc_path(void)
{
	static char path[PATH_MAX];
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	cr_assert_gt(n, 0);
	self[n] = 0;
	char *slash = strrchr(self, '/'); /* .../BUILD/tests/NAME */
	cr_assert_not_null(slash);
	*slash = 0;
	slash = strrchr(self, '/');
	cr_assert_not_null(slash);
	*slash = 0;
	snprintf(path, sizeof(path), "%s/tallyd", self);
	cr_assert_eq(access(path, X_OK), 0, "%s is not built", path);
	return path;
}

static uint16_t free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t len = sizeof(a);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* A temporary file, already unlinked: its descriptor. */
static int capture_file(void)
{
	char path[] = "/tmp/tally-test-tallyd-out-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	unlink(path);
	return fd;
}

static void capture_read(int fd, char *buf, size_t size)
{
	ssize_t n = pread(fd, buf, size - 1, 0);
	cr_assert_geq(n, 0);
	buf[n] = 0;
	close(fd);
}

/* In the child: tallyd with argv[1..] = first (NULL-terminated), then
 * rest (NULL-terminated, may be NULL). Never returns. */
static void exec_tallyd(const char *const *first, const char *const *rest)
{
	const char *argv[ARGS_MAX + 2] = {"tallyd"};
	int argc = 1;
	for (const char *const *a = first; a && *a && argc < ARGS_MAX; a++)
		argv[argc++] = *a;
	for (const char *const *a = rest; a && *a && argc < ARGS_MAX; a++)
		argv[argc++] = *a;
	argv[argc] = NULL;
	execv(tallyd_proc_path(), (char *const *)argv);
	_exit(127);
}

int tallyd_proc_run(const char *const *args, char *out, size_t out_size, char *err,
		    size_t err_size)
{
	int out_fd = capture_file(), err_fd = capture_file();
	(void)tallyd_proc_path(); /* asserts here, not in the child */
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		dup2(out_fd, 1);
		dup2(err_fd, 2);
		exec_tallyd(args, NULL);
	}
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	capture_read(out_fd, out, out_size);
	capture_read(err_fd, err, err_size);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

pid_t tallyd_proc_start(const char *dir, const char *const *extra, const char *err_path,
			char address[TALLYD_PROC_ADDRESS_SIZE], char admin_key[TALLYD_PROC_KEY_SIZE])
{
	snprintf(address, TALLYD_PROC_ADDRESS_SIZE, "127.0.0.1:%u", free_port());
	char listen[TALLYD_PROC_ADDRESS_SIZE + 16], data[PATH_MAX + 16];
	snprintf(listen, sizeof(listen), "--listen=%s", address);
	snprintf(data, sizeof(data), "--data=%s", dir);
	const char *const first[] = {data, listen, "--metrics=off", NULL};
	(void)tallyd_proc_path(); /* asserts here, not in the child */
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int fd = err_path ? open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600)
				  : open("/dev/null", O_WRONLY);
		if (fd < 0)
			_exit(126);
		dup2(fd, 2); /* its log is not the test's */
		exec_tallyd(first, extra);
	}
	char key_path[PATH_MAX + 16];
	snprintf(key_path, sizeof(key_path), "%s/admin.key", dir);
	bool key_given = admin_key[0] != 0;
	for (int i = 0; i < 200; i++) {
		usleep(50 * 1000);
		if (!key_given) {
			FILE *f = fopen(key_path, "r");
			if (!f)
				continue;
			char *got = fgets(admin_key, TALLYD_PROC_KEY_SIZE, f);
			fclose(f);
			if (!got)
				continue;
			admin_key[strcspn(admin_key, "\n")] = 0;
		}
		tally_client *c;
		if (tally_client_open(address, admin_key, "tallyd-proc", &c, NULL, NULL) == 0) {
			tally_client_close(c);
			return pid;
		}
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	cr_assert_fail("tallyd did not start on %s", address);
	return -1;
}
