/*
 * cli_run.c — a `tally` command run with its output captured (cli_run.h).
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli_run.h"
#include "../../tools/remote.h"

/* Reads the file at path (at most CLI_RUN_OUTPUT_MAX - 1 bytes) into buf. */
static void read_back(const char *path, char *buf)
{
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "open %s", path);
	size_t n = fread(buf, 1, CLI_RUN_OUTPUT_MAX - 1, f);
	cr_assert(!ferror(f));
	cr_assert(feof(f), "%s holds more than %d bytes", path, CLI_RUN_OUTPUT_MAX - 1);
	buf[n] = 0;
	fclose(f);
}

/* Points descriptor fd (1 or 2) at a new file `path`; returns the old one. */
static int redirect(int fd, const char *path)
{
	int saved = dup(fd);
	cr_assert_geq(saved, 0);
	int file = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(file, 0, "open %s", path);
	cr_assert_eq(dup2(file, fd), fd);
	close(file);
	return saved;
}

cli_run_result *cli_run(const char *scratch, const cli_command *command, int argc,
			const char **argv)
{
	static cli_run_result r;
	char out_path[256], err_path[256];
	snprintf(out_path, sizeof(out_path), "%s.out", scratch);
	snprintf(err_path, sizeof(err_path), "%s.err", scratch);
	char *args[CLI_RUN_ARGS_MAX + 1];
	cr_assert_leq(argc, CLI_RUN_ARGS_MAX);
	for (int i = 0; i < argc; i++)
		args[i] = (char *)argv[i];
	args[argc] = NULL;
	fflush(stdout);
	fflush(stderr);
	int saved_out = redirect(1, out_path);
	int saved_err = redirect(2, err_path);
	r.code = cli_command_run(command, argc, args);
	fflush(stdout);
	fflush(stderr);
	cr_assert_eq(dup2(saved_out, 1), 1);
	cr_assert_eq(dup2(saved_err, 2), 2);
	close(saved_out);
	close(saved_err);
	read_back(out_path, r.out);
	read_back(err_path, r.err);
	unlink(out_path);
	unlink(err_path);
	return &r;
}

void cli_expect_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; (p = strstr(p, line)); p++) {
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return;
	}
	cr_assert_fail("no line \"%s\" in:\n%s", line, text);
}
