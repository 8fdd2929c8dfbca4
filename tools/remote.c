/*
 * remote.c — global options, key lookup and connections (remote.h).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder.h"
#include "remote.h"

cli_globals cli_globals_current;

static const struct {
	const char *name;
	size_t offset;
} global_options[] = {
	{"server", offsetof(cli_globals, server)},
	{"key", offsetof(cli_globals, key)},
	{"key-file", offsetof(cli_globals, key_file)},
	{"tenant", offsetof(cli_globals, tenant)},
};
#define GLOBAL_OPTION_COUNT (sizeof(global_options) / sizeof(global_options[0]))

int cli_globals_extract(cli_globals *g, int *argc, char **argv, char *errmsg)
{
	int out = 1, i = 1;
	while (i < *argc) {
		const char *arg = argv[i];
		if (strcmp(arg, "--") == 0)
			break;
		size_t k = 0, name_len = 0;
		const char *value = NULL;
		int used = 0;
		for (; k < GLOBAL_OPTION_COUNT; k++) {
			name_len = strlen(global_options[k].name);
			if (strncmp(arg, "--", 2) != 0 || strncmp(arg + 2, global_options[k].name, name_len) != 0)
				continue;
			if (arg[2 + name_len] == '=') {
				value = arg + 3 + name_len;
				used = 1;
				break;
			}
			if (arg[2 + name_len] == '\0') {
				if (i + 1 >= *argc) {
					snprintf(errmsg, CLI_KEY_SOURCE_SIZE, "option '--%s' needs a value",
						 global_options[k].name);
					return -EINVAL;
				}
				value = argv[i + 1];
				used = 2;
				break;
			}
		}
		if (!used) {
			argv[out++] = argv[i++];
			continue;
		}
		const char **slot = (const char **)((char *)g + global_options[k].offset);
		if (*slot) {
			snprintf(errmsg, CLI_KEY_SOURCE_SIZE, "option '--%s' given twice", global_options[k].name);
			return -EINVAL;
		}
		/* A tenant name is 1 to 64 bytes everywhere; checked here, once,
		 * so no command ever sends a shortened one. */
		if (slot == &g->tenant &&
		    (value[0] == '\0' || strlen(value) > BUILDER_TENANT_SIZE_MAX)) {
			snprintf(errmsg, CLI_KEY_SOURCE_SIZE,
				 "option '--tenant': not a tenant name (1 to %d bytes)",
				 BUILDER_TENANT_SIZE_MAX);
			return -EINVAL;
		}
		*slot = value;
		i += used;
	}
	while (i < *argc)
		argv[out++] = argv[i++];
	argv[out] = NULL;
	*argc = out;
	return 0;
}

/* The first line of path, without surrounding white space, into key. */
static int key_file_read(const char *path, char *key, char *errmsg)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(errmsg, CLI_KEY_SOURCE_SIZE, "cannot read key file %s: %s", path, strerror(errno));
		return -EINVAL;
	}
	char buf[CLI_KEY_SIZE_MAX + 2];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	int failed = ferror(f);
	fclose(f);
	if (failed) {
		snprintf(errmsg, CLI_KEY_SOURCE_SIZE, "cannot read key file %s: read error", path);
		return -EINVAL;
	}
	buf[n] = '\0';
	char *start = buf;
	while (*start == ' ' || *start == '\t' || *start == '\r' || *start == '\n')
		start++;
	size_t len = strcspn(start, "\r\n");
	while (len && (start[len - 1] == ' ' || start[len - 1] == '\t'))
		len--;
	if (len == 0) {
		snprintf(errmsg, CLI_KEY_SOURCE_SIZE, "key file %s is empty", path);
		return -EINVAL;
	}
	if (len > CLI_KEY_SIZE_MAX) {
		snprintf(errmsg, CLI_KEY_SOURCE_SIZE, "key file %s: the key is longer than %d bytes", path,
			 CLI_KEY_SIZE_MAX);
		return -EINVAL;
	}
	memcpy(key, start, len);
	key[len] = '\0';
	return 0;
}

static int key_text(const char *text, const char *what, char *key, char *errmsg)
{
	size_t len = strlen(text);
	if (len == 0 || len > CLI_KEY_SIZE_MAX) {
		snprintf(errmsg, CLI_KEY_SOURCE_SIZE, "%s %s", what,
			 len ? "is longer than 512 bytes" : "is empty");
		return -EINVAL;
	}
	memcpy(key, text, len + 1);
	return 0;
}

int cli_key_resolve(const cli_globals *g, const char *env_key, const char *admin_key_path, char *key,
		    char *source, char *errmsg)
{
	if (g->key) {
		snprintf(source, CLI_KEY_SOURCE_SIZE, "--key");
		return key_text(g->key, "--key", key, errmsg);
	}
	if (g->key_file) {
		snprintf(source, CLI_KEY_SOURCE_SIZE, "--key-file %s", g->key_file);
		return key_file_read(g->key_file, key, errmsg);
	}
	if (env_key) {
		snprintf(source, CLI_KEY_SOURCE_SIZE, "%s", CLI_KEY_ENV);
		return key_text(env_key, CLI_KEY_ENV, key, errmsg);
	}
	if (admin_key_path && access(admin_key_path, R_OK) == 0) {
		snprintf(source, CLI_KEY_SOURCE_SIZE, "%s", admin_key_path);
		return key_file_read(admin_key_path, key, errmsg);
	}
	snprintf(errmsg, CLI_KEY_SOURCE_SIZE,
		 "no API key: give --key KEY or --key-file FILE, or set %s (%s, tried last, is not readable)",
		 CLI_KEY_ENV, admin_key_path ? admin_key_path : CLI_ADMIN_KEY_PATH);
	return -EINVAL;
}

int cli_connect(const cli_command *command, tally_client **out, tally_session_info *info)
{
	*out = NULL;
	char key[CLI_KEY_SIZE_MAX + 1], source[CLI_KEY_SOURCE_SIZE], errmsg[CLI_KEY_SOURCE_SIZE];
	if (cli_key_resolve(&cli_globals_current, getenv(CLI_KEY_ENV), CLI_ADMIN_KEY_PATH, key, source,
			    errmsg)) {
		fprintf(stderr, "tally %s: %s\n", command->name, errmsg);
		return CLI_EXIT_FAILURE;
	}
	const char *server = cli_globals_current.server ? cli_globals_current.server : CLI_SERVER_DEFAULT;
	char why[TALLY_CLIENT_ERRMSG_SIZE] = "";
	int rc = tally_client_open_within(server, key, CLI_CLIENT_NAME, CLI_TIMEOUT_MS, out, info, why);
	if (rc == TALLY_CLIENT_REFUSED) {
		fprintf(stderr, "tally %s: %s; the key came from %s\n", command->name, why, source);
		return CLI_EXIT_FAILURE;
	}
	if (rc) {
		fprintf(stderr, "tally %s: cannot reach the server: %s\n", command->name,
			why[0] ? why : tally_client_strerror(rc));
		return CLI_EXIT_FAILURE;
	}
	return 0;
}

int cli_tenant_scope(const cli_command *command, const tally_session_info *info, const char **tenant)
{
	const char *named = cli_globals_current.tenant;
	*tenant = "";
	if (info->admin) {
		if (!named || !named[0]) {
			fprintf(stderr, "tally %s: an admin key acts for one tenant: give --tenant NAME\n",
				command->name);
			return CLI_EXIT_FAILURE;
		}
		*tenant = named;
		return 0;
	}
	/* A tenant key naming a tenant: the server decides (its own name is
	 * allowed, any other is PERMISSION_DENIED, and that answer is the
	 * proof of isolation the user sees). */
	*tenant = named ? named : "";
	return 0;
}

int cli_connect_tenant(const cli_command *command, tally_client **out, const char **tenant)
{
	tally_session_info info;
	if (cli_connect(command, out, &info))
		return CLI_EXIT_FAILURE;
	if (cli_tenant_scope(command, &info, tenant)) {
		tally_client_close(*out);
		*out = NULL;
		return CLI_EXIT_FAILURE;
	}
	return 0;
}

int cli_call_error(const cli_command *command, tally_client *c, int rc, const char *what)
{
	if (rc != TALLY_CLIENT_REFUSED) {
		fprintf(stderr, "tally %s: %s: %s\n", command->name, what, tally_client_strerror(rc));
		return CLI_EXIT_FAILURE;
	}
	const tally_client_error *e = tally_client_last_error(c);
	fprintf(stderr, "tally %s: %s: refused by the server: %s (%s)", command->name, what, e->message,
		tally_client_error_code_name(e->code));
	if (e->retry_after_ms)
		fprintf(stderr, "; retry after %u ms", e->retry_after_ms);
	fprintf(stderr, "\n");
	return CLI_EXIT_FAILURE;
}

int cli_json_options(const cli_command *command, int argc, char **argv, int positional, bool *json)
{
	static const struct option options[] = {
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	*json = false;
	int opt;
	opterr = 0;
	optind = 0;
	uint64_t seen = 0;
	while ((opt = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
		if (cli_option_once(command, options, opt, NULL, &seen))
			return CLI_EXIT_FAILURE;
		switch (opt) {
		case 'j': *json = true; break;
		case 'h': cli_command_help(command); return CLI_EXIT_OK;
		default: return cli_option_error(command, argc, argv, opt);
		}
	}
	if (argc - optind < positional)
		return cli_usage_error(command, "%s: missing %s", argv[0], positional == 1 ? "an argument" : "arguments");
	if (argc - optind > positional)
		return cli_usage_error(command, "%s: unexpected argument '%s'", argv[0], argv[optind + positional]);
	return -1;
}

int cli_command_run(const cli_command *command, int argc, char **argv)
{
	if (cli_globals_current.tenant && !command->takes_tenant) {
		fprintf(stderr, "tally %s: --tenant does not apply to %s (run 'tally help %s')\n",
			command->name, command->name, command->name);
		return CLI_EXIT_FAILURE;
	}
	return command->run(command, argc, argv);
}

int cli_connect_admin(const cli_command *command, tally_client **c)
{
	tally_session_info info;
	if (cli_connect(command, c, &info))
		return CLI_EXIT_FAILURE;
	if (!info.admin) {
		fprintf(stderr, "tally %s: this needs an admin key; the key given belongs to tenant %s\n", command->name,
			info.tenant);
		tally_client_close(*c);
		*c = NULL;
		return CLI_EXIT_FAILURE;
	}
	return 0;
}

int cli_json_print(const cli_command *command, json_t *value)
{
	int bad = !value || json_dumpf(value, stdout, JSON_INDENT(2)) != 0;
	json_decref(value);
	if (bad) {
		fprintf(stderr, "tally %s: could not write the JSON output\n", command->name);
		return CLI_EXIT_FAILURE;
	}
	printf("\n");
	return CLI_EXIT_OK;
}
