/*
 * cmd_query.c — `tally query`: an aggregate query (docs/queries.md) from
 * flags (queryargs.c), its result as a table, CSV or JSON (format.c).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "format.h"
#include "queryargs.h"
#include "remote.h"

static int query_run(const cli_command *command, int argc, char **argv)
{
	static const struct option options[] = {
		{"from", required_argument, NULL, 'F'},
		{"to", required_argument, NULL, 'T'},
		{"bucket", required_argument, NULL, 'b'},
		{"tz", required_argument, NULL, 'z'},
		{"group-by", required_argument, NULL, 'g'},
		{"filter", required_argument, NULL, 'f'},
		{"agg", required_argument, NULL, 'a'},
		{"order", required_argument, NULL, 'o'},
		{"limit", required_argument, NULL, 'l'},
		{"format", required_argument, NULL, 'm'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	query_spec spec;
	queryargs_init(&spec);
	int64_t now = cli_now_us();
	int format = FORMAT_TABLE;
	char errmsg[QUERYARGS_ERRMSG_SIZE];
	int rc = 0, opt;
	opterr = 0;
	optind = 0;
	uint64_t seen = 0;
	while (!rc && (opt = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
		if (cli_option_once(command, options, opt, "gfa", &seen)) {
			queryargs_free(&spec);
			return CLI_EXIT_FAILURE;
		}
		switch (opt) {
		case 'F': rc = queryargs_from(&spec, optarg, now, errmsg); break;
		case 'T': rc = queryargs_to(&spec, optarg, now, errmsg); break;
		case 'b': rc = queryargs_bucket(&spec, optarg, errmsg); break;
		case 'z':
			if (format_time_zone(optarg)) {
				snprintf(errmsg, sizeof(errmsg), "--tz '%s': unknown time zone (an IANA name such as Europe/Paris)",
					 optarg);
				rc = -1;
			}
			spec.time_zone = optarg;
			break;
		case 'g': rc = queryargs_group_by(&spec, optarg, errmsg); break;
		case 'f': rc = queryargs_filter(&spec, optarg, errmsg); break;
		case 'a': rc = queryargs_aggs(&spec, optarg, errmsg); break;
		case 'o': rc = queryargs_order(&spec, optarg, errmsg); break;
		case 'l': rc = queryargs_limit("--limit", optarg, QUERYARGS_ROWS_MAX, &spec.limit, errmsg); break;
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
	if (!rc)
		rc = queryargs_end(&spec, argc, argv, optind, now, errmsg);
	if (rc) {
		queryargs_free(&spec);
		return cli_usage_error(command, "%s", errmsg);
	}
	tally_client *c;
	const char *tenant;
	if (cli_connect_tenant(command, &c, &tenant)) {
		queryargs_free(&spec);
		return CLI_EXIT_FAILURE;
	}
	spec.query.tenant = (char *)tenant;
	Tally__V1__QueryResult *result;
	rc = tally_client_query(c, &spec.query, &result);
	int code = CLI_EXIT_OK;
	if (rc) {
		code = cli_call_error(command, c, rc, "query");
	} else {
		format_table t;
		rc = format_query_result(&t, &spec, result);
		if (!rc)
			rc = format_print(&t, stdout, format, true);
		if (rc) {
			fprintf(stderr, "tally %s: could not write the result\n", command->name);
			code = CLI_EXIT_FAILURE;
		} else if (result->truncated) {
			fprintf(stderr, "tally %s: more rows matched than the %u shown (raise --limit, at most %u)\n",
				command->name, (unsigned)result->n_rows, QUERYARGS_ROWS_MAX);
		}
		format_table_free(&t);
		tally__v1__query_result__free_unpacked(result, NULL);
	}
	tally_client_close(c);
	queryargs_free(&spec);
	return code;
}

const cli_command cli_command_query = {
	.name = "query",
	.synopsis = "query [--from T] [--to T] [--bucket B] [--group-by D,..] [--filter D=V,..] [--agg A,..] ...",
	.summary = "aggregate usage: counts, tokens, cost, latency percentiles, by time and dimension",
	.help =
		"full synopsis: query [--from T] [--to T] [--bucket minute|hour|day|month|none]\n"
		"  [--tz ZONE] [--group-by DIM[,DIM]] [--filter DIM=VALUE[,VALUE]]...\n"
		"  [--agg AGG[,AGG...]] [--order AGG[:asc|desc]] [--limit N]\n"
		"  [--format table|csv|json]\n"
		"\n"
		"options:\n"
		"  --from T, --to T  the range [from, to): RFC 3339, a date (midnight UTC),\n"
		"                    microseconds, now, or -N[d|h|m|s] back from now.\n"
		"                    Default: the 30 days up to now\n"
		"  --bucket B        minute, hour, day (default), month, or none (one row per\n"
		"                    group for the whole range)\n"
		"  --tz ZONE         buckets in this IANA time zone; times printed with its offset\n"
		"                    (default UTC, printed with Z)\n"
		"  --group-by DIMS   project, agent, model, type, status\n"
		"  --filter D=V,...  keep events whose dimension D is one of the values; repeat\n"
		"                    for more filters (they all apply); 'status' values are ok,\n"
		"                    error, timeout, cancelled\n"
		"  --agg AGGS        count (default), tokens_in, tokens_out, cost_micros,\n"
		"                    duration_ms (sum), min_duration_ms, max_duration_ms,\n"
		"                    pNN_duration_ms (p50, p95, p99.9...; within 1%),\n"
		"                    distinct_users, errors (events whose status is not ok)\n"
		"  --order AGG[:D]   rows by an aggregate, desc (default) or asc, instead of\n"
		"                    by time and group: with --limit, a top-N\n"
		"  --limit N         at most N rows (1..100000; default the server's maximum)\n"
		"  --format F        table (default), csv or json (an array of objects)\n"
		"  -h, --help        this text\n"
		"An admin key names the tenant with the global option --tenant NAME.\n"
		"\n"
		"output columns: time (the bucket start), the group-by dimensions, then the\n"
		"aggregates in the order given, named as given. Buckets with no events are\n"
		"left out. When more rows matched than the limit, standard error says so.\n"
		"\n"
		"exit codes: 0 done; 2 usage error, server unreachable, key or query refused.\n",
	.run = query_run,
	.takes_tenant = true,
};
