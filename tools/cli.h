/*
 * cli.h — what every `tally` subcommand shares: the command table entry,
 * the exit codes, usage errors, and the formatting of times and sizes.
 *
 * The CLI is one binary (build/tally) with one table of commands (tally.c).
 * A command lives in its own tools/cmd_*.c, exports one `const cli_command`,
 * and is listed once in the table; main() does the dispatch, `tally help`
 * and the errors for unknown commands. A command parses its own options
 * (getopt_long, see cli_option_error) and returns an exit code; it never
 * calls exit().
 *
 * Exit codes are the contract scripts rely on:
 *   0  the command did its job (verify: the directory is clean)
 *   1  the command ran and the answer is "no" (verify: problems were found)
 *   2  usage error, or the command could not do its job (directory locked,
 *      not a tally directory, I/O error, server unreachable, ...)
 */
#ifndef TALLY_CLI_H
#define TALLY_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cli_exit {
	CLI_EXIT_OK = 0,
	CLI_EXIT_FINDINGS = 1,
	CLI_EXIT_FAILURE = 2, /* usage errors and failures to run share it */
};

typedef struct cli_command cli_command;
struct cli_command {
	const char *name;     /* "inspect" */
	const char *synopsis; /* "inspect [--json] [--files] [--segments] DIR" */
	const char *summary;  /* one line for `tally help` */
	const char *help;     /* the rest of `tally help NAME`: options, output, exit codes */
	/* argv[0] is the command name; options follow. Returns an enum cli_exit. */
	int (*run)(const cli_command *command, int argc, char **argv);
	/* The global --tenant means something to it; for the others it is a
	 * usage error, never silently ignored. */
	bool takes_tenant;
};

/* The commands (one per tools/cmd_*.c). */
extern const cli_command cli_command_events;
extern const cli_command cli_command_export;
extern const cli_command cli_command_ingest;
extern const cli_command cli_command_inspect;
extern const cli_command cli_command_key;
extern const cli_command cli_command_query;
extern const cli_command cli_command_stats;
extern const cli_command cli_command_tenant;
extern const cli_command cli_command_verify;

/* Prints `tally help NAME` text for command to stdout. */
void cli_command_help(const cli_command *command);

/*
 * Prints "tally NAME: <message>" and the command's usage line to stderr and
 * returns CLI_EXIT_FAILURE, for the command to return.
 */
__attribute__((format(printf, 2, 3)))
int cli_usage_error(const cli_command *command, const char *format, ...);

/*
 * For a getopt_long loop run with opterr = 0: reports the option getopt
 * just refused ('?' for an unknown option, ':' for a missing argument) as a
 * usage error. Returns CLI_EXIT_FAILURE.
 */
int cli_option_error(const cli_command *command, int argc, char **argv, int result);

/* For each option getopt_long returns (opt): a usage error (CLI_EXIT_FAILURE)
 * when it was given before, unless its val is in `repeatable` (option
 * characters; NULL: none). *seen is the caller's, zero before the loop;
 * options must hold at most 64 entries. 0 when the option may be taken. */
int cli_option_once(const cli_command *command, const struct option *options, int opt,
		    const char *repeatable, uint64_t *seen);

/* Formats microseconds since the epoch as RFC 3339 UTC,
 * "2026-09-21T14:13:20.000000Z". out must hold CLI_TIME_SIZE bytes. */
#define CLI_TIME_SIZE 40
void cli_format_time(char *out, int64_t time_us);

/* Formats days since 1970-01-01 as "2026-09-21". out: CLI_TIME_SIZE bytes. */
void cli_format_day(char *out, int32_t day);

/* Formats a byte count for people: "512 B", "1.5 KiB", "12.3 MiB", ...
 * out must hold CLI_BYTES_SIZE bytes. */
#define CLI_BYTES_SIZE 24
void cli_format_bytes(char *out, uint64_t bytes);

/* The wall clock in microseconds since the epoch (ranges default to it). */
int64_t cli_now_us(void);

#endif /* TALLY_CLI_H */
