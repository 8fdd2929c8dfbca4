/*
 * cmd_ingest.c — `tally ingest FILE|-`: load a CSV or JSON-lines event file
 * through a running tallyd. The work is in ingest.c (batches, pipelining,
 * retries, summary) and rows.c (the file formats); this file is options,
 * the file, the progress line and the exit code.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ingest.h"
#include "queryargs.h"
#include "remote.h"
#include "rows.h"

static int ingest_command_run(const cli_command *command, int argc, char **argv)
{
	static const struct option options[] = {
		{"format", required_argument, NULL, 'f'},
		{"create-tenants", no_argument, NULL, 'c'},
		{"backfill", no_argument, NULL, 'b'},
		{"batch", required_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	ingest_options o;
	memset(&o, 0, sizeof(o));
	o.format = -1;
	char errmsg[INGEST_ERRMSG_SIZE];
	int opt;
	opterr = 0;
	optind = 0;
	uint64_t seen = 0;
	while ((opt = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
		if (cli_option_once(command, options, opt, NULL, &seen))
			return CLI_EXIT_FAILURE;
		switch (opt) {
		case 'f':
			if ((o.format = rows_format_parse(optarg)) < 0)
				return cli_usage_error(command, "--format '%s': want csv or jsonl", optarg);
			break;
		case 'c': o.create_tenants = true; break;
		case 'b': o.backfill = true; break;
		case 'n':
			if (queryargs_limit("--batch", optarg, TALLY_CLIENT_INFLIGHT_MAX * 256u, &o.batch_events, errmsg))
				return cli_usage_error(command, "%s", errmsg);
			break;
		case 'h': cli_command_help(command); return CLI_EXIT_OK;
		default: return cli_option_error(command, argc, argv, opt);
		}
	}
	if (optind == argc)
		return cli_usage_error(command, "missing the file to ingest ('-' for standard input)");
	if (argc - optind > 1)
		return cli_usage_error(command, "unexpected argument '%s'", argv[optind + 1]);
	const char *path = argv[optind];
	bool from_stdin = strcmp(path, "-") == 0;
	const char *name = from_stdin ? "<stdin>" : path;
	if (o.format < 0)
		o.format = from_stdin ? ROWS_FORMAT_AUTO : rows_format_from_name(path);
	FILE *in = from_stdin ? stdin : fopen(path, "r");
	if (!in) {
		fprintf(stderr, "tally %s: cannot open %s: %s\n", command->name, path, strerror(errno));
		return CLI_EXIT_FAILURE;
	}
	tally_client *c;
	tally_session_info info;
	if (cli_connect(command, &c, &info)) {
		if (!from_stdin)
			fclose(in);
		return CLI_EXIT_FAILURE;
	}
	if (!info.admin && (o.create_tenants || o.backfill)) {
		fprintf(stderr, "tally %s: --%s needs an admin key; this key belongs to tenant %s\n", command->name,
			o.create_tenants ? "create-tenants" : "backfill", info.tenant);
		tally_client_close(c);
		if (!from_stdin)
			fclose(in);
		return CLI_EXIT_FAILURE;
	}
	o.tenant = cli_globals_current.tenant;
	if (o.tenant && !info.admin && strcmp(o.tenant, info.tenant) != 0) {
		fprintf(stderr, "tally %s: this key belongs to tenant %s; --tenant %s needs an admin key\n",
			command->name, info.tenant, o.tenant);
		tally_client_close(c);
		if (!from_stdin)
			fclose(in);
		return CLI_EXIT_FAILURE;
	}
	/* Progress only for a person watching: never into a pipe or a log. */
	o.progress = isatty(STDERR_FILENO) ? stderr : NULL;
	ingest_summary summary;
	int rc = ingest_run(c, &info, &o, in, name, &summary, errmsg);
	tally_client_close(c);
	if (!from_stdin)
		fclose(in);
	ingest_summary_print(&summary, name, stdout);
	if (rc == INGEST_FAILED) {
		fprintf(stderr, "tally %s: %s\n", command->name, errmsg);
		fprintf(stderr, "tally %s: stopped; only the events counted above were acknowledged\n", command->name);
		return CLI_EXIT_FAILURE;
	}
	return summary.rejected || summary.conflict ? CLI_EXIT_FINDINGS : CLI_EXIT_OK;
}

const cli_command cli_command_ingest = {
	.name = "ingest",
	.synopsis = "ingest FILE|- [--format csv|jsonl] [--create-tenants] [--backfill] [--batch N]",
	.summary = "load usage events from a CSV or JSON-lines file into a running tallyd",
	.help =
		"Reads events from FILE ('-': standard input) and sends them in columnar\n"
		"batches, several in flight at once. Each event is acknowledged after it is\n"
		"durable on the server.\n"
		"\n"
		"input: CSV with a header row, or JSON lines (one object per line), naming the\n"
		"fields event_id, time, type, project, agent, model, user, status, duration_ms,\n"
		"tokens_in, tokens_out, cost_micros, and optionally tenant (admin imports).\n"
		"event_id and time are required; unknown columns are an error. time: RFC 3339\n"
		"(2026-09-21T14:13:20.5Z, with an offset, to microseconds) or integer\n"
		"microseconds; status: ok, error, timeout, cancelled or 0..3; duration_ms,\n"
		"tokens_in, tokens_out: non-negative integers; cost_micros: a 64-bit integer.\n"
		"The format comes from --format, else the extension (.csv, .jsonl, .ndjson),\n"
		"else the first non-blank character ('{' is JSON lines). See docs/cli.md.\n"
		"\n"
		"options:\n"
		"  --format F         csv or jsonl\n"
		"  --create-tenants   admin: create the tenants the rows name if unknown\n"
		"  --backfill         admin: accept times older than the lateness horizon\n"
		"  --batch N          events per batch (default 10000; at most the server's limit)\n"
		"  -h, --help         this text\n"
		"An admin key needs a tenant per row: a tenant column, or --tenant NAME (a\n"
		"global option) for the rows without one.\n"
		"\n"
		"output: a summary on standard output (rows read; accepted, duplicate,\n"
		"conflict and rejected counts; the first 5 rejected or conflicting events with\n"
		"their line and reason); a progress line on standard error when it is a\n"
		"terminal. A malformed row stops the reading: the rows before it are sent and\n"
		"acknowledged, and the error names FILE:LINE and the field. Running the fixed\n"
		"file again is safe: events already stored come back as duplicates.\n"
		"\n"
		"exit codes: 0 every event acknowledged (duplicates included); 1 some events\n"
		"rejected or conflicting; 2 usage error, unreadable or malformed file, server\n"
		"unreachable, key or batch refused.\n",
	.run = ingest_command_run,
	.takes_tenant = true,
};
