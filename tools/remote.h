/*
 * remote.h — what the commands that talk to a running tallyd share: the
 * global options (--server, --key, --key-file, --tenant), the API key
 * lookup, opening an authenticated connection, the tenant a request acts
 * for, and reporting a failed call in one shape.
 *
 * Global options may stand before the command or anywhere after it (up to
 * a "--"): main() takes them out of argv before the command parses its
 * own, so every command accepts them the same way.
 *
 * The key is looked up in this order, the first one given wins:
 *   1. --key KEY
 *   2. --key-file FILE (its first line)
 *   3. the TALLY_KEY environment variable
 *   4. ./data/admin.key, if it is readable: the admin key tallyd writes at
 *      its first start in its default data directory, so an operator on
 *      the server's machine needs no option at all.
 */
#ifndef TALLY_TOOLS_REMOTE_H
#define TALLY_TOOLS_REMOTE_H

#include <stdbool.h>

#include <jansson.h>

#include "cli.h"
#include "client.h"

#define CLI_SERVER_DEFAULT "127.0.0.1:7411"
#define CLI_KEY_ENV "TALLY_KEY"
#define CLI_ADMIN_KEY_PATH "./data/admin.key"
#define CLI_KEY_SIZE_MAX 512      /* longest API key read from a file */
#define CLI_KEY_SOURCE_SIZE 300   /* "--key-file /path", ... */
#define CLI_CLIENT_NAME "tally-cli/1"
/* Every call waits this long for its answer at most (an ingest ack comes
 * after an fsync; a slow disk under load may take seconds, not minutes). */
#define CLI_TIMEOUT_MS 120000u

typedef struct cli_globals {
	const char *server;   /* NULL: CLI_SERVER_DEFAULT */
	const char *key;
	const char *key_file;
	const char *tenant;   /* an admin key acting for this tenant */
} cli_globals;

/* What main() found on the command line (for the commands to read). */
extern cli_globals cli_globals_current;

/* Runs command with the global options in cli_globals_current: a usage
 * error (CLI_EXIT_FAILURE) for a --tenant the command does not take, else
 * command->run's exit. */
int cli_command_run(const cli_command *command, int argc, char **argv);

/*
 * Moves the global options out of argv[1..*argc) (up to a "--", which
 * stays) into g, keeping the other arguments in order, and lowers *argc.
 * Forms: "--server VALUE" and "--server=VALUE". 0, or -EINVAL with errmsg
 * (CLI_KEY_SOURCE_SIZE bytes) for an option without its value or given
 * twice.
 */
int cli_globals_extract(cli_globals *g, int *argc, char **argv, char *errmsg);

/*
 * The API key by the order above: env_key is the value of TALLY_KEY (NULL
 * if unset), admin_key_path the last resort (CLI_ADMIN_KEY_PATH). key gets
 * CLI_KEY_SIZE_MAX + 1 bytes, source (CLI_KEY_SOURCE_SIZE) where it came
 * from ("--key", "--key-file F", "TALLY_KEY", "F"). 0, or -EINVAL with
 * errmsg (CLI_KEY_SOURCE_SIZE) when no key is given, a given one is
 * empty, or its file cannot be read.
 */
int cli_key_resolve(const cli_globals *g, const char *env_key, const char *admin_key_path, char *key,
		    char *source, char *errmsg);

/*
 * Opens an authenticated connection for command with the current globals.
 * 0 with *out (close with tally_client_close) and *info filled; or
 * CLI_EXIT_FAILURE after printing "tally CMD: ..." (no key, bad address,
 * server unreachable, key refused: naming where the key came from).
 */
int cli_connect(const cli_command *command, tally_client **out, tally_session_info *info);

/*
 * The tenant a tenant-scoped request names: the --tenant value, or "" when
 * a tenant key is given none (the server takes the key's own). A tenant
 * key naming another tenant is sent as asked: the server refuses it
 * (PERMISSION_DENIED). Prints why and returns CLI_EXIT_FAILURE when an
 * admin key has no --tenant; else 0 with *tenant set.
 */
int cli_tenant_scope(const cli_command *command, const tally_session_info *info, const char **tenant);

/* cli_connect then cli_tenant_scope: 0 with *out and *tenant, or
 * CLI_EXIT_FAILURE after a message (*out is then NULL). */
int cli_connect_tenant(const cli_command *command, tally_client **out, const char **tenant);

/*
 * Reports a failed client call: "tally CMD: WHAT: refused by the server:
 * MESSAGE (CODE)" (with the retry delay when the server gave one), or
 * "tally CMD: WHAT: <transport error>". Returns CLI_EXIT_FAILURE.
 */
int cli_call_error(const cli_command *command, tally_client *c, int rc, const char *what);

/*
 * For the administration commands: parses [--json] [-h] and exactly
 * `positional` arguments in argv (argv[0] is the subcommand); they are
 * then at argv[optind..]. Returns -1 to go on, or the exit code to return
 * (help printed, or a usage error reported).
 */
int cli_json_options(const cli_command *command, int argc, char **argv, int positional, bool *json);

/* cli_connect, then refuses a tenant key with a message. 0 or
 * CLI_EXIT_FAILURE (*c is then NULL). */
int cli_connect_admin(const cli_command *command, tally_client **c);

/* Prints value (jansson; the reference is taken) indented, and a newline.
 * CLI_EXIT_OK, or CLI_EXIT_FAILURE after a message. */
int cli_json_print(const cli_command *command, json_t *value);

#endif /* TALLY_TOOLS_REMOTE_H */
