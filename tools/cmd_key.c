/*
 * cmd_key.c — `tally key issue|list|revoke`: API keys over the protocol
 * (admin keys only). The tenant comes from the global --tenant option;
 * without it, issue makes a new admin key and list shows every key.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "format.h"
#include "remote.h"

static int key_issue(const cli_command *command, tally_client *c, const char *tenant, bool json)
{
	Tally__V1__KeyIssued *issued;
	int rc = tally_client_issue_key(c, tenant, &issued);
	if (rc)
		return cli_call_error(command, c, rc, "issue");
	int code = CLI_EXIT_OK;
	if (json)
		code = cli_json_print(command, json_pack("{s:s, s:s, s:s}", "key_id", issued->key_id, "api_key",
							 issued->api_key, "tenant", issued->tenant));
	else
		printf("%s\n", issued->api_key);
	tally__v1__key_issued__free_unpacked(issued, NULL);
	return code;
}

static int key_list(const cli_command *command, tally_client *c, const char *tenant, bool json)
{
	Tally__V1__KeyList *list;
	int rc = tally_client_list_keys(c, tenant, &list);
	if (rc)
		return cli_call_error(command, c, rc, "list");
	static const char *const names[] = {"key_id", "tenant", "created", "created_us", "revoked"};
	format_table t;
	rc = format_table_init(&t, names, 5);
	for (size_t i = 0; i < list->n_keys && !rc; i++) {
		const Tally__V1__KeyInfo *k = list->keys[i];
		char created[FORMAT_TIME_SIZE];
		format_time(created, k->created_us, false, false);
		if (!(rc = format_add_text(&t, k->key_id, strlen(k->key_id))) &&
		    !(rc = format_add_text(&t, k->tenant, strlen(k->tenant))) &&
		    !(rc = format_add_text(&t, created, strlen(created))) && !(rc = format_add_int(&t, k->created_us)))
			rc = format_add_bool(&t, k->revoked);
	}
	if (!rc)
		rc = format_print(&t, stdout, json ? FORMAT_JSON : FORMAT_TABLE, true);
	format_table_free(&t);
	tally__v1__key_list__free_unpacked(list, NULL);
	if (rc) {
		fprintf(stderr, "tally %s: list: could not write the output\n", command->name);
		return CLI_EXIT_FAILURE;
	}
	return CLI_EXIT_OK;
}

static int key_run(const cli_command *command, int argc, char **argv)
{
	if (argc < 2)
		return cli_usage_error(command, "missing the subcommand (issue, list, revoke)");
	const char *sub = argv[1];
	if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
		cli_command_help(command);
		return CLI_EXIT_OK;
	}
	int positional;
	if (strcmp(sub, "issue") == 0 || strcmp(sub, "list") == 0)
		positional = 0;
	else if (strcmp(sub, "revoke") == 0)
		positional = 1;
	else
		return cli_usage_error(command, "unknown subcommand '%s' (issue, list, revoke)", sub);
	bool json;
	int code = cli_json_options(command, argc - 1, argv + 1, positional, &json);
	if (code >= 0)
		return code;
	const char *key_id = positional ? argv[1 + optind] : NULL;
	const char *tenant = cli_globals_current.tenant ? cli_globals_current.tenant : "";
	if (key_id && tenant[0])
		return cli_usage_error(command, "revoke names a key id; --tenant does not apply");
	tally_client *c;
	if (cli_connect_admin(command, &c))
		return CLI_EXIT_FAILURE;
	if (strcmp(sub, "issue") == 0) {
		code = key_issue(command, c, tenant, json);
	} else if (strcmp(sub, "list") == 0) {
		code = key_list(command, c, tenant, json);
	} else {
		int rc = tally_client_revoke_key(c, key_id, NULL);
		code = rc ? cli_call_error(command, c, rc, "revoke") : CLI_EXIT_OK;
		if (!rc && json)
			code = cli_json_print(command, json_pack("{s:s}", "revoked", key_id));
		else if (!rc)
			printf("key %s revoked\n", key_id);
	}
	tally_client_close(c);
	return code;
}

const cli_command cli_command_key = {
	.name = "key",
	.synopsis = "key issue|list|revoke [KEY_ID] [--tenant NAME] [--json]",
	.summary = "issue, list and revoke API keys (admin key)",
	.help =
		"subcommands:\n"
		"  issue          a new key for --tenant NAME, or without it a new admin key;\n"
		"                 prints the key and nothing else (it is shown once)\n"
		"  list           the keys of --tenant NAME, or every key: key_id, tenant\n"
		"                 (empty for admin keys), created, revoked\n"
		"  revoke KEY_ID  revoke a key; it is refused from its next request on,\n"
		"                 even on connections opened before\n"
		"\n"
		"options:\n"
		"  --tenant NAME  the tenant whose keys to issue or list (a global option)\n"
		"  --json         issue: {\"key_id\", \"api_key\", \"tenant\"}; list: an array of\n"
		"                 {\"key_id\", \"tenant\", \"created\", \"created_us\", \"revoked\"};\n"
		"                 revoke: {\"revoked\"}\n"
		"  -h, --help     this text\n"
		"\n"
		"exit codes: 0 done; 2 usage error, server unreachable, key refused, or the\n"
		"server refused the request (e.g. no such key).\n",
	.run = key_run,
	.takes_tenant = true,
};
