/*
 * cmd_events.c — `tally events`: the raw events of a range, page by page
 * (ListEvents), as a table, CSV or JSON lines with the columns of the
 * ingest formats, so a listing can be ingested again.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "queryargs.h"
#include "remote.h"

#define EVENTS_PAGE_DEFAULT 100      /* one page for people */
#define EVENTS_PAGE_ALL 10000        /* pages of --all: the server's maximum */

/* Whether listing cursor next ("<time>:<id in hex>", docs/queries.md)
 * lies after prev in (time, id) order, as each page's must: lower-case
 * hex of bytes compares as the bytes do. A cursor of another form is
 * only required to differ. */
static bool cursor_after(const char *next, const char *prev)
{
	char *next_end, *prev_end;
	errno = 0;
	long long tn = strtoll(next, &next_end, 10), tp = strtoll(prev, &prev_end, 10);
	if (errno || *next_end != ':' || *prev_end != ':')
		return strcmp(next, prev) != 0;
	if (tn != tp)
		return tn > tp;
	return strcmp(next_end + 1, prev_end + 1) > 0;
}

static int events_run(const cli_command *command, int argc, char **argv)
{
	static const struct option options[] = {
		{"from", required_argument, NULL, 'F'},
		{"to", required_argument, NULL, 'T'},
		{"filter", required_argument, NULL, 'f'},
		{"user", required_argument, NULL, 'u'},
		{"limit", required_argument, NULL, 'l'},
		{"all", no_argument, NULL, 'A'},
		{"cursor", required_argument, NULL, 'c'},
		{"format", required_argument, NULL, 'm'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	query_spec spec;
	queryargs_init(&spec);
	int64_t now = cli_now_us();
	int format = FORMAT_TABLE;
	bool all = false;
	const char *user = NULL, *cursor = "";
	uint32_t limit = 0;
	char errmsg[QUERYARGS_ERRMSG_SIZE];
	int rc = 0, opt;
	opterr = 0;
	optind = 0;
	uint64_t seen = 0;
	while (!rc && (opt = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
		if (cli_option_once(command, options, opt, "f", &seen)) {
			queryargs_free(&spec);
			return CLI_EXIT_FAILURE;
		}
		switch (opt) {
		case 'F': rc = queryargs_from(&spec, optarg, now, errmsg); break;
		case 'T': rc = queryargs_to(&spec, optarg, now, errmsg); break;
		case 'f': rc = queryargs_filter(&spec, optarg, errmsg); break;
		case 'u': user = optarg; break;
		case 'l': rc = queryargs_limit("--limit", optarg, EVENTS_PAGE_ALL, &limit, errmsg); break;
		case 'A': all = true; break;
		case 'c': cursor = optarg; break;
		case 'm': rc = format_option(optarg, &format, errmsg); break;
		case 'h':
			queryargs_free(&spec);
			cli_command_help(command);
			return CLI_EXIT_OK;
		default:
			queryargs_free(&spec);
			return cli_option_error(command, argc, argv, opt);
		}
	}
	if (!rc && user && !user[0]) {
		snprintf(errmsg, sizeof(errmsg), "--user needs a user: an empty one would select "
			 "every user's events");
		rc = -EINVAL;
	}
	if (!rc)
		rc = queryargs_end(&spec, argc, argv, optind, now, errmsg);
	if (rc) {
		queryargs_free(&spec);
		return cli_usage_error(command, "%s", errmsg);
	}
	if (format == FORMAT_JSON)
		format = FORMAT_JSONL; /* one event per line: streams, and ingests again */
	tally_client *c;
	const char *tenant;
	if (cli_connect_tenant(command, &c, &tenant)) {
		queryargs_free(&spec);
		return CLI_EXIT_FAILURE;
	}
	Tally__V1__ListEvents request = TALLY__V1__LIST_EVENTS__INIT;
	request.tenant = (char *)tenant;
	request.from_us = spec.from_us;
	request.to_us = spec.to_us;
	request.n_filters = spec.filter_count;
	request.filters = spec.filter_count ? spec.filters : NULL;
	if (user)
		request.user = (ProtobufCBinaryData){strlen(user), (uint8_t *)user};
	request.limit = limit ? limit : all ? EVENTS_PAGE_ALL : EVENTS_PAGE_DEFAULT;
	format_table t;
	int code = CLI_EXIT_OK;
	if (format_table_init(&t, format_event_columns, 12)) {
		fprintf(stderr, "tally %s: out of memory\n", command->name);
		code = CLI_EXIT_FAILURE;
	}
	/* The cursor of the page to ask next; owned by the last page. */
	Tally__V1__EventPage *page = NULL;
	request.cursor = (char *)cursor;
	for (bool first = true; code == CLI_EXIT_OK; first = false) {
		Tally__V1__EventPage *next;
		rc = tally_client_list_events(c, &request, &next);
		if (rc) {
			code = cli_call_error(command, c, rc, "list");
			break;
		}
		/* request.cursor points into the page before: kept until the
		 * check below. */
		Tally__V1__EventPage *before = page;
		page = next;
		format_table_clear(&t);
		bool stop = false;
		if ((rc = format_event_page(&t, page, false)) || (rc = format_print(&t, stdout, format, first))) {
			fprintf(stderr, "tally %s: could not write the events\n", command->name);
			code = CLI_EXIT_FAILURE;
			stop = true;
		} else if (!page->next_cursor[0]) {
			stop = true;
		} else if (!all) {
			fprintf(stderr, "next page: --cursor %s\n", page->next_cursor);
			stop = true;
		} else if (request.cursor && request.cursor[0] &&
			   !cursor_after(page->next_cursor, request.cursor)) {
			fprintf(stderr, "tally %s: the server's next page (cursor %s) does not come after "
				"the page it followed (cursor %s): stopping\n", command->name,
				page->next_cursor, request.cursor);
			code = CLI_EXIT_FAILURE;
			stop = true;
		}
		if (before)
			tally__v1__event_page__free_unpacked(before, NULL);
		if (stop)
			break;
		request.cursor = page->next_cursor;
	}
	if (page)
		tally__v1__event_page__free_unpacked(page, NULL);
	format_table_free(&t);
	tally_client_close(c);
	queryargs_free(&spec);
	return code;
}

const cli_command cli_command_events = {
	.name = "events",
	.synopsis = "events [--from T] [--to T] [--filter D=V,..] [--user U] [--limit N] [--all] [--cursor C] ...",
	.summary = "list raw events in (time, event id) order, a page at a time",
	.help =
		"full synopsis: events [--from T] [--to T] [--filter DIM=VALUE[,VALUE]]...\n"
		"  [--user U] [--limit N] [--all] [--cursor C] [--format table|csv|json]\n"
		"\n"
		"options:\n"
		"  --from T, --to T  the range [from, to), as for 'tally query' (default: the\n"
		"                    30 days up to now)\n"
		"  --filter D=V,...  as for 'tally query'\n"
		"  --user U          only the events of this end user\n"
		"  --limit N         events per page (default 100; 10000 with --all; at most 10000)\n"
		"  --all             every page, not only the first\n"
		"  --cursor C        start at the page a previous listing named\n"
		"  --format F        table (default), csv, or json (one object per line)\n"
		"  -h, --help        this text\n"
		"An admin key names the tenant with the global option --tenant NAME.\n"
		"\n"
		"output: the columns of the ingest formats (event_id, time with microseconds\n"
		"in UTC, type, project, agent, model, user, status, duration_ms, tokens_in,\n"
		"tokens_out, cost_micros), so CSV and JSON output can be ingested again.\n"
		"Without --all, when more events follow, standard error says\n"
		"'next page: --cursor C'.\n"
		"\n"
		"exit codes: 0 done; 2 usage error, server unreachable, key or request refused.\n",
	.run = events_run,
	.takes_tenant = true,
};
