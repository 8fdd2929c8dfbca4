/*
 * cmd_stats.c — `tally stats [--json]`: the server's store figures (the
 * whole store for an admin key).
 */
#include <inttypes.h>
#include <stdio.h>

#include "cli.h"
#include "remote.h"

static int stats_run(const cli_command *command, int argc, char **argv)
{
	bool json;
	int code = cli_json_options(command, argc, argv, 0, &json);
	if (code >= 0)
		return code;
	tally_client *c;
	tally_session_info info;
	if (cli_connect(command, &c, &info))
		return CLI_EXIT_FAILURE;
	Tally__V1__Stats *s;
	int rc = tally_client_stats(c, &s);
	if (rc) {
		code = cli_call_error(command, c, rc, "stats");
		tally_client_close(c);
		return code;
	}
	const struct {
		const char *name;
		uint64_t value;
		bool bytes;
	} figures[] = {
		{"tenants", s->tenants, false},
		{"events_memtable", s->events_memtable, false},
		{"segment_files", s->segment_files, false},
		{"segment_rows", s->segment_rows, false},
		{"segment_bytes", s->segment_bytes, true},
		{"wal_bytes", s->wal_bytes, true},
		{"rollup_bytes", s->rollup_bytes, true},
		{"connections", s->connections, false},
		{"durable_lsn", s->durable_lsn, false},
	};
	size_t n = sizeof(figures) / sizeof(figures[0]);
	if (json) {
		json_t *root = json_object();
		for (size_t i = 0; root && i < n; i++)
			if (json_object_set_new(root, figures[i].name, json_integer((json_int_t)figures[i].value))) {
				json_decref(root);
				root = NULL;
			}
		if (root && json_object_set_new(root, "server_version", json_string(info.server_version))) {
			json_decref(root);
			root = NULL;
		}
		code = cli_json_print(command, root);
	} else {
		code = CLI_EXIT_OK;
		printf("%-16s %s\n", "server_version", info.server_version);
		for (size_t i = 0; i < n; i++) {
			char human[CLI_BYTES_SIZE];
			cli_format_bytes(human, figures[i].value);
			if (figures[i].bytes)
				printf("%-16s %" PRIu64 " (%s)\n", figures[i].name, figures[i].value, human);
			else
				printf("%-16s %" PRIu64 "\n", figures[i].name, figures[i].value);
		}
	}
	tally__v1__stats__free_unpacked(s, NULL);
	tally_client_close(c);
	return code;
}

const cli_command cli_command_stats = {
	.name = "stats",
	.synopsis = "stats [--json]",
	.summary = "the server's store figures: tenants, events, segments, WAL, rollups",
	.help =
		"Prints the figures of the store the server runs: tenants, events in the\n"
		"memtable, segment files, rows and bytes, WAL bytes, rollup bytes, open\n"
		"connections and the durable log position. An admin key sees the whole store.\n"
		"\n"
		"options:\n"
		"  --json       one object with exact integers and server_version\n"
		"  -h, --help   this text\n"
		"\n"
		"exit codes: 0 done; 2 usage error, server unreachable or key refused.\n",
	.run = stats_run,
};
