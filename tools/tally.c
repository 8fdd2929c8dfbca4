/*
 * tally.c — the `tally` command: main(), the command table, `tally help`.
 *
 * `tally COMMAND [options] [arguments]`. Every command is one entry in
 * `commands` below, implemented in its own tools/cmd_*.c (see cli.h for the
 * interface and the exit codes). To add a command: write tools/cmd_NAME.c
 * exporting `const cli_command cli_command_NAME`, declare it in cli.h, and
 * add it to the table; help, dispatch and errors come for free.
 *
 * Today the table holds the offline commands, inspect and verify, which read
 * a data directory through engine/tally.h only. Commands that talk to a
 * running server (ingest, query, admin, export, ...) will use the proto/
 * client; see tools/README.md for the rules.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const cli_command *const commands[] = {
	&cli_command_inspect,
	&cli_command_verify,
};
#define COMMAND_COUNT (sizeof(commands) / sizeof(commands[0]))

static const cli_command *command_find(const char *name)
{
	for (size_t i = 0; i < COMMAND_COUNT; i++)
		if (strcmp(commands[i]->name, name) == 0)
			return commands[i];
	return NULL;
}

static void help_print(void)
{
	printf("usage: tally COMMAND [options] [arguments]\n\n"
	       "tally is the command-line tool of the tally usage-metering store.\n\n"
	       "commands:\n");
	for (size_t i = 0; i < COMMAND_COUNT; i++)
		printf("  %-44s %s\n", commands[i]->synopsis, commands[i]->summary);
	printf("  %-44s %s\n", "help [COMMAND]", "this text, or the details of one command");
	printf("\nexit codes: 0 success; 1 the command ran and found problems; 2 usage error,\n"
	       "or the command could not run.\n");
}

static int usage_error(const char *message, const char *word)
{
	fprintf(stderr, "tally: %s '%s' (run 'tally help' for the list of commands)\n", message,
		word);
	return CLI_EXIT_FAILURE;
}

static int run(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "tally: no command given (run 'tally help' for the list of commands)\n");
		return CLI_EXIT_FAILURE;
	}
	const char *name = argv[1];
	if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
		if (argc == 2) {
			help_print();
			return CLI_EXIT_OK;
		}
		const cli_command *command = command_find(argv[2]);
		if (!command)
			return usage_error("no help for unknown command", argv[2]);
		if (argc > 3)
			return usage_error("help takes one command name; unexpected", argv[3]);
		cli_command_help(command);
		return CLI_EXIT_OK;
	}
	if (name[0] == '-')
		return usage_error("unknown option", name);
	const cli_command *command = command_find(name);
	if (!command)
		return usage_error("unknown command", name);
	return command->run(command, argc - 1, argv + 1);
}

int main(int argc, char **argv)
{
	int code = run(argc, argv);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "tally: error writing to standard output\n");
		return CLI_EXIT_FAILURE;
	}
	return code;
}
