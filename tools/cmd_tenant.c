/*
 * cmd_tenant.c — `tally tenant create|list|suspend|resume`: tenant
 * administration over the protocol (admin keys only).
 *
 * `tenant create NAME` prints nothing but the new tenant's first API key,
 * so a script can capture it (`KEY=$(tally tenant create acme)`); the key
 * is shown once and never again. --json prints {name, key_id, api_key}.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "format.h"
#include "remote.h"

static int tenant_create(const cli_command *command, tally_client *c, const char *name, bool json)
{
	Tally__V1__TenantCreated *created;
	int rc = tally_client_create_tenant(c, name, &created);
	if (rc)
		return cli_call_error(command, c, rc, "create");
	int code = CLI_EXIT_OK;
	if (json)
		code = cli_json_print(command, json_pack("{s:s, s:s, s:s}", "name", created->name, "key_id",
							 created->key_id, "api_key", created->api_key));
	else
		printf("%s\n", created->api_key);
	tally__v1__tenant_created__free_unpacked(created, NULL);
	return code;
}

static int tenant_list(const cli_command *command, tally_client *c, bool json)
{
	Tally__V1__TenantList *list;
	int rc = tally_client_list_tenants(c, &list);
	if (rc)
		return cli_call_error(command, c, rc, "list");
	static const char *const names[] = {"name", "suspended", "active_keys"};
	format_table t;
	rc = format_table_init(&t, names, 3);
	for (size_t i = 0; i < list->n_tenants && !rc; i++) {
		const Tally__V1__TenantInfo *ti = list->tenants[i];
		if (!(rc = format_add_text(&t, ti->name, strlen(ti->name))) && !(rc = format_add_bool(&t, ti->suspended)))
			rc = format_add_uint(&t, ti->active_keys);
	}
	if (!rc)
		rc = format_print(&t, stdout, json ? FORMAT_JSON : FORMAT_TABLE, true);
	format_table_free(&t);
	tally__v1__tenant_list__free_unpacked(list, NULL);
	if (rc) {
		fprintf(stderr, "tally %s: list: could not write the output\n", command->name);
		return CLI_EXIT_FAILURE;
	}
	return CLI_EXIT_OK;
}

static int tenant_run(const cli_command *command, int argc, char **argv)
{
	if (argc < 2)
		return cli_usage_error(command, "missing the subcommand (create, list, suspend, resume)");
	const char *sub = argv[1];
	if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
		cli_command_help(command);
		return CLI_EXIT_OK;
	}
	int positional;
	if (strcmp(sub, "list") == 0)
		positional = 0;
	else if (strcmp(sub, "create") == 0 || strcmp(sub, "suspend") == 0 || strcmp(sub, "resume") == 0)
		positional = 1;
	else
		return cli_usage_error(command, "unknown subcommand '%s' (create, list, suspend, resume)", sub);
	bool json;
	int code = cli_json_options(command, argc - 1, argv + 1, positional, &json);
	if (code >= 0)
		return code;
	const char *name = positional ? argv[1 + optind] : NULL;
	tally_client *c;
	if (cli_connect_admin(command, &c))
		return CLI_EXIT_FAILURE;
	if (strcmp(sub, "create") == 0) {
		code = tenant_create(command, c, name, json);
	} else if (strcmp(sub, "list") == 0) {
		code = tenant_list(command, c, json);
	} else {
		bool suspend = strcmp(sub, "suspend") == 0;
		int rc = tally_client_set_tenant_state(c, name, suspend, NULL);
		code = rc ? cli_call_error(command, c, rc, sub) : CLI_EXIT_OK;
		if (!rc && json)
			code = cli_json_print(command, json_pack("{s:s, s:b}", "name", name, "suspended", suspend));
		else if (!rc)
			printf("tenant %s %s\n", name, suspend ? "suspended" : "resumed");
	}
	tally_client_close(c);
	return code;
}

const cli_command cli_command_tenant = {
	.name = "tenant",
	.synopsis = "tenant create|list|suspend|resume [NAME] [--json]",
	.summary = "create, list, suspend and resume tenants (admin key)",
	.help =
		"subcommands:\n"
		"  create NAME    create a tenant; prints its first API key and nothing else\n"
		"                 (the key is shown once). NAME: 1..64 bytes of [A-Za-z0-9._-]\n"
		"  list           every tenant: name, suspended, active_keys\n"
		"  suspend NAME   refuse the tenant's keys (UNAUTHENTICATED) until resumed\n"
		"  resume NAME    accept them again\n"
		"\n"
		"options:\n"
		"  --json         create: {\"name\", \"key_id\", \"api_key\"}; list: an array of\n"
		"                 {\"name\", \"suspended\", \"active_keys\"}; suspend/resume:\n"
		"                 {\"name\", \"suspended\"}\n"
		"  -h, --help     this text\n"
		"and the global options --server, --key, --key-file (see 'tally help').\n"
		"\n"
		"exit codes: 0 done; 2 usage error, server unreachable, key refused, or the\n"
		"server refused the request (e.g. the tenant exists: CONFLICT).\n",
	.run = tenant_run,
};
