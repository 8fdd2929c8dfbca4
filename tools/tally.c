/*
 * tally.c — the `tally` command: main(), the command table, `tally help`.
 *
 * `tally COMMAND [options] [arguments]`. Every command is one entry in
 * `commands` below, implemented in its own tools/cmd_*.c (see cli.h for the
 * interface and the exit codes). To add a command: write tools/cmd_NAME.c
 * exporting `const cli_command cli_command_NAME`, declare it in cli.h, and
 * add it to the table; help, dispatch and errors come for free.
 *
 * The offline commands (inspect, verify) read a data directory through
 * engine/tally.h only; the others talk to a running tallyd through the
 * proto/ client (tools/README.md). The global options of the latter
 * (--server, --key, --key-file, --tenant; remote.h) are taken out of argv
 * here, wherever they stand, before the command parses its own.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "remote.h"

static const cli_command *const commands[] = {
	&cli_command_ingest,
	&cli_command_query,
	&cli_command_events,
	&cli_command_stats,
	&cli_command_tenant,
	&cli_command_key,
	&cli_command_export,
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
		printf("  %-16s %s\n", commands[i]->name, commands[i]->summary);
	printf("  %-16s %s\n", "help [COMMAND]", "this text, or the details of one command");
	printf("\nglobal options (before or after the command) of the commands that talk to\n"
	       "a server:\n"
	       "  --server HOST:PORT   the tallyd to talk to (default %s; [IPV6]:PORT)\n"
	       "  --key KEY            the API key; else --key-file FILE (its first line), else\n"
	       "                       the %s environment variable, else %s if\n"
	       "                       it is readable (the admin key tallyd writes at first start)\n"
	       "  --key-file FILE\n"
	       "  --tenant NAME        the tenant an admin key acts for\n",
	       CLI_SERVER_DEFAULT, CLI_KEY_ENV, CLI_ADMIN_KEY_PATH);
	printf("\nexit codes: 0 success; 1 the command ran and found problems (verify: damage;\n"
	       "ingest: rejected events); 2 usage error, or the command could not run.\n");
}

static int usage_error(const char *message, const char *word)
{
	fprintf(stderr, "tally: %s '%s' (run 'tally help' for the list of commands)\n", message,
		word);
	return CLI_EXIT_FAILURE;
}

static int run(int argc, char **argv)
{
	char errmsg[CLI_KEY_SOURCE_SIZE];
	if (cli_globals_extract(&cli_globals_current, &argc, argv, errmsg)) {
		fprintf(stderr, "tally: %s (run 'tally help')\n", errmsg);
		return CLI_EXIT_FAILURE;
	}
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
	return cli_command_run(command, argc - 1, argv + 1);
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
