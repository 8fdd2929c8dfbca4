/*
 * cli_run.h — a `tally` command run in the test process, as main()
 * dispatches it (its `run` function), with its stdout and stderr captured
 * into files and read back. Every failure is a criterion assertion.
 */
#ifndef TALLY_TEST_CLI_RUN_H
#define TALLY_TEST_CLI_RUN_H

#include "../../tools/cli.h"

#define CLI_RUN_OUTPUT_MAX 65536
#define CLI_RUN_ARGS_MAX 24

typedef struct cli_run_result {
	int code;                       /* the enum cli_exit returned */
	char out[CLI_RUN_OUTPUT_MAX];   /* stdout */
	char err[CLI_RUN_OUTPUT_MAX];   /* stderr */
} cli_run_result;

/* Runs `tally argv[0] argv[1..argc)` (argv[0] is the command's name);
 * scratch is a path prefix for the two capture files (removed after).
 * The result is static: valid until the next call. */
cli_run_result *cli_run(const char *scratch, const cli_command *command, int argc,
			const char **argv);

/* Asserts that text holds `line` as a whole line (newline-terminated). */
void cli_expect_line(const char *text, const char *line);

#endif /* TALLY_TEST_CLI_RUN_H */
