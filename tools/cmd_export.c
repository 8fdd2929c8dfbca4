/*
 * cmd_export.c — `tally export --pg URL [--day D | --from D --to D
 * [--missing] | --changed | --from D --to D --missing --changed]
 * [--tenant-page N]`: daily usage from the server (admin key)
 * into the PostgreSQL billing database, each day replaced in one
 * transaction (export.h), read over the protocol (export_client.c).
 *
 * Everything that can be checked without a server or a database is checked
 * first (options, dates, a day after today), so a mistyped command does
 * nothing. Then the server connection (an admin key), then PostgreSQL and
 * its migrations, then the days in ascending order, one line each.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "export.h"
#include "remote.h"

/* ---- the command ------------------------------------------------------------------- */

typedef struct export_args {
	const char *pg;
	const char *day, *from, *to;
	bool changed;
	bool missing;
	uint32_t tenant_page;
} export_args;

static int args_parse(const cli_command *command, int argc, char **argv, export_args *a)
{
	static const struct option options[] = {
		{"pg", required_argument, NULL, 'p'},
		{"day", required_argument, NULL, 'd'},
		{"from", required_argument, NULL, 'f'},
		{"to", required_argument, NULL, 't'},
		{"changed", no_argument, NULL, 'c'},
		{"missing", no_argument, NULL, 'm'},
		{"tenant-page", required_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	memset(a, 0, sizeof(*a));
	a->tenant_page = EXPORT_TENANT_PAGE_DEFAULT;
	int opt;
	opterr = 0;
	optind = 0;
	uint64_t seen = 0;
	while ((opt = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
		if (cli_option_once(command, options, opt, NULL, &seen))
			return CLI_EXIT_FAILURE;
		switch (opt) {
		case 'p': a->pg = optarg; break;
		case 'd': a->day = optarg; break;
		case 'f': a->from = optarg; break;
		case 't': a->to = optarg; break;
		case 'c': a->changed = true; break;
		case 'm': a->missing = true; break;
		case 'n': {
			char *end;
			unsigned long n = strtoul(optarg, &end, 10);
			if (optarg[0] < '0' || optarg[0] > '9' || *end || n < 1 || n > EXPORT_TENANT_PAGE_MAX)
				return cli_usage_error(command, "--tenant-page takes a number of tenants from 1 to %u, not '%s'",
						       EXPORT_TENANT_PAGE_MAX, optarg);
			a->tenant_page = (uint32_t)n;
			break;
		}
		case 'h': cli_command_help(command); return CLI_EXIT_OK;
		default: return cli_option_error(command, argc, argv, opt);
		}
	}
	if (optind < argc)
		return cli_usage_error(command, "unexpected argument '%s'", argv[optind]);
	if (!a->pg || !a->pg[0])
		return cli_usage_error(command, "--pg URL is required (the billing database)");
	/* --from/--to --missing --changed: the nightly job's two steps in one
	 * run, so a day that fails for its own data never keeps the changed
	 * days from being re-exported (docs/billing.md). */
	bool both = a->changed && a->missing && (a->from || a->to) && !a->day;
	int modes = (a->day != NULL) + (a->from || a->to) + a->changed;
	if (modes != 1 && !both)
		return cli_usage_error(command, "give exactly one of --day DAY, --from DAY --to DAY, --changed "
					"(or --from DAY --to DAY --missing --changed)");
	if ((a->from != NULL) != (a->to != NULL))
		return cli_usage_error(command, "--from and --to go together");
	if (a->missing && !a->from)
		return cli_usage_error(command, "--missing goes with --from DAY --to DAY");
	return -1;
}

static int day_arg(const cli_command *command, const char *option, const char *text, int32_t *day)
{
	if (export_day_parse(text, day))
		return cli_usage_error(command, "%s: '%s' is not a date YYYY-MM-DD (UTC, 1970 or later)", option, text);
	return 0;
}

/* The days to export from --day or --from/--to, ascending; none after today. */
static int days_of(const cli_command *command, const export_args *a, int32_t *first, int32_t *last)
{
	if (a->day) {
		if (day_arg(command, "--day", a->day, first))
			return CLI_EXIT_FAILURE;
		*last = *first;
	} else if (day_arg(command, "--from", a->from, first) || day_arg(command, "--to", a->to, last)) {
		return CLI_EXIT_FAILURE;
	}
	if (*first > *last)
		return cli_usage_error(command, "--from %s is after --to %s", a->from, a->to);
	if ((int64_t)*last - *first + 1 > EXPORT_DAYS_MAX)
		return cli_usage_error(command, "--from %s --to %s is more than %u days", a->from, a->to,
				       EXPORT_DAYS_MAX);
	int32_t today = export_day_of(cli_now_us());
	if (*last > today) {
		char last_text[EXPORT_DAY_SIZE], today_text[EXPORT_DAY_SIZE];
		export_day_format(last_text, *last);
		export_day_format(today_text, today);
		fprintf(stderr, "tally %s: %s is in the future (today is %s, UTC): a day is exported once it has begun;"
			" nothing was done\n", command->name, last_text, today_text);
		return CLI_EXIT_FAILURE;
	}
	return 0;
}

/* --changed: the days to re-export, told on stdout. 0 with *days (free) and
 * *count, or CLI_EXIT_FAILURE after a message. */
static int changed_days_find(const cli_command *command, exporter *x, int32_t **days, size_t *count)
{
	*days = NULL;
	*count = 0;
	export_changed changed;
	char errmsg[EXPORT_ERRMSG_SIZE];
	if (export_changed_find(x, &changed, errmsg)) {
		fprintf(stderr, "tally %s: --changed: %s\n", command->name, errmsg);
		return CLI_EXIT_FAILURE;
	}
	if (changed.exported_days == 0) {
		printf("no day has been exported yet: nothing to re-export\n");
		export_changed_free(&changed);
		return 0;
	}
	printf("changed after their last export: %zu of %zu exported days",
	       changed.count - changed.unsure, changed.exported_days);
	if (changed.since != UINT64_MAX) /* UINT64_MAX: no exported watermark was answered */
		printf(" (store changes since watermark %" PRIu64 ")", changed.since);
	printf("\n");
	bool one = changed.unsure == 1;
	if (changed.unsure)
		printf("%zu exported day%s re-exported to be sure: exported at %s older than the"
		       " store's change floor (ChangedDays refuses %s)\n", changed.unsure,
		       one ? "" : "s", one ? "a watermark" : "watermarks", one ? "it" : "them");
	if (changed.never_exported)
		printf("%zu changed day%s never exported before left alone (export with --from/--to --missing)\n",
		       changed.never_exported, changed.never_exported == 1 ? "" : "s");
	if (changed.count && !(*days = malloc(changed.count * sizeof(**days)))) {
		export_changed_free(&changed);
		fprintf(stderr, "tally %s: out of memory\n", command->name);
		return CLI_EXIT_FAILURE;
	}
	for (size_t i = 0; i < changed.count; i++)
		(*days)[i] = changed.days[i].day;
	*count = changed.count;
	export_changed_free(&changed);
	return 0;
}

/* --missing: the days of [first, last] with no export yet (no
 * billing.export_runs row), told on stdout. 0 with *days (free; NULL when
 * none) and *count, or CLI_EXIT_FAILURE after a message. */
static int missing_days_find(const cli_command *command, exporter *x, int32_t first, int32_t last,
			     int32_t **days, size_t *count)
{
	*days = NULL;
	*count = 0;
	int32_t *exported = NULL;
	size_t exported_count = 0;
	char errmsg[EXPORT_ERRMSG_SIZE];
	if (export_days_exported(x, first, last, &exported, &exported_count, errmsg)) {
		fprintf(stderr, "tally %s: --missing: %s\n", command->name, errmsg);
		return CLI_EXIT_FAILURE;
	}
	size_t range = (size_t)(last - first + 1);
	if (!(*days = malloc(range * sizeof(**days)))) {
		free(exported);
		fprintf(stderr, "tally %s: out of memory\n", command->name);
		return CLI_EXIT_FAILURE;
	}
	for (int32_t d = first; d <= last; d++)
		if (!export_day_listed(exported, exported_count, d))
			(*days)[(*count)++] = d;
	free(exported);
	printf("never exported: %zu of the %zu days; the rest left alone\n", *count, range);
	return 0;
}

/* Exports days[0, count) (NULL: first, first + 1, ...), told on stdout,
 * into *total. A day that fails for its own data is told and passed over
 * (counted in *failed: the others are exported, and the command fails at
 * the end); any other failure stops the run, as the next day would fail
 * the same way: CLI_EXIT_FAILURE. Otherwise 0. */
static int export_days(const cli_command *command, exporter *x, const int32_t *days,
		       int32_t first, size_t count, export_total *total, size_t *failed)
{
	char errmsg[EXPORT_ERRMSG_SIZE];
	for (size_t i = 0; i < count; i++) {
		export_day_result result;
		int32_t day = days ? days[i] : first + (int32_t)i;
		int rc = export_day(x, day, &result, errmsg);
		if (rc) {
			fprintf(stderr, "tally %s: %s\n", command->name, errmsg);
			if (!export_failure_is_the_days(rc))
				return CLI_EXIT_FAILURE;
			(*failed)++;
			continue;
		}
		export_day_print(stdout, &result);
		fflush(stdout);
		export_total_add(total, &result);
	}
	return 0;
}

static int export_run(const cli_command *command, int argc, char **argv)
{
	export_args a;
	int code = args_parse(command, argc, argv, &a);
	if (code >= 0)
		return code;
	int32_t first = 0, last = -1;
	if ((a.day || a.from) && days_of(command, &a, &first, &last))
		return CLI_EXIT_FAILURE;

	tally_client *c;
	if (cli_connect_admin(command, &c))
		return CLI_EXIT_FAILURE;
	export_source source;
	export_source_client(&source, c);
	export_options options = {.tenant_page = a.tenant_page};
	exporter *x;
	char errmsg[EXPORT_ERRMSG_SIZE];
	int from_version, to_version;
	if (export_open(a.pg, &source, &options, &x, errmsg)) {
		fprintf(stderr, "tally %s: %s\n", command->name, errmsg);
		tally_client_close(c);
		return CLI_EXIT_FAILURE;
	}
	if (export_migrate(x, &from_version, &to_version, errmsg)) {
		fprintf(stderr, "tally %s: %s\n", command->name, errmsg);
		goto fail;
	}
	if (to_version != from_version)
		printf("billing schema: migrated from version %d to %d\n", from_version, to_version);

	/* The range's days (all of them, or with --missing those never
	 * exported), then with --changed the changed ones: looked for after
	 * the range's, which are then exported at the latest watermark. */
	export_total total = {0};
	size_t failed = 0, tried = 0;
	int32_t *days = NULL;
	size_t count = 0;
	if (a.missing) {
		if (missing_days_find(command, x, first, last, &days, &count))
			goto fail;
	} else if (!a.changed) {
		count = (size_t)(last - first + 1);
	}
	int rc = export_days(command, x, days, first, count, &total, &failed);
	free(days);
	days = NULL;
	tried += count;
	count = 0;
	if (rc)
		goto fail;
	if (a.changed) {
		if (changed_days_find(command, x, &days, &count))
			goto fail;
		rc = export_days(command, x, days, 0, count, &total, &failed);
		free(days);
		tried += count;
		if (rc)
			goto fail;
	}
	if (tried)
		export_total_print(stdout, &total);
	export_close(x);
	tally_client_close(c);
	if (failed) {
		fprintf(stderr, "tally %s: %zu of %zu days failed for their own data (above); the others "
			"were exported\n", command->name, failed, tried);
		return CLI_EXIT_FAILURE;
	}
	return CLI_EXIT_OK;
fail:
	export_close(x);
	tally_client_close(c);
	return CLI_EXIT_FAILURE;
}

const cli_command cli_command_export = {
	.name = "export",
	.synopsis = "export --pg URL [--day DAY | --from DAY --to DAY [--missing] | --changed"
		    " | --from DAY --to DAY --missing --changed] [--tenant-page N]",
	.summary = "daily usage into the PostgreSQL billing database, each day exactly once (admin)",
	.help =
		"Reads each UTC day's usage of every tenant from the server (DailyUsage, an\n"
		"admin key) and replaces that day in the billing database in one transaction:\n"
		"billing.usage_daily's rows of the day, the day's new tenants in billing.tenants\n"
		"and one billing.export_runs row (rows, checksum, the store's watermark). A\n"
		"rerun, a crash or a kill leaves each day either as it was or as exported,\n"
		"never a mix or a double count. Missing schema migrations are applied first.\n"
		"\n"
		"options:\n"
		"  --pg URL           the billing database: postgresql://USER@HOST/DB or a libpq\n"
		"                     \"key=value\" string (its role: tally_exporter's rights; to\n"
		"                     migrate, the owner of the database)\n"
		"  --day DAY          one UTC day, YYYY-MM-DD, today or earlier\n"
		"  --from DAY --to DAY  every day of the range, both included, one transaction each\n"
		"  --missing          with --from/--to: only the days of the range never exported\n"
		"                     (no billing.export_runs row), so a nightly job that failed\n"
		"                     one night exports that day the next\n"
		"  --changed          re-export exactly the days whose events changed after their\n"
		"                     last export (late events, backfill), and to be sure those\n"
		"                     exported before the store's change floor (it cannot tell)\n"
		"  --from DAY --to DAY --missing --changed\n"
		"                     both, in one run: the range's days never exported, then\n"
		"                     the changed days (a nightly job: a day that fails for its\n"
		"                     own data never holds back the changed days)\n"
		"  --tenant-page N    tenants per DailyUsage request, 1..10000 (default 1000)\n"
		"  -h, --help         this text\n"
		"\n"
		"output: a line per day (day, tenants, rows, checksum, seconds), then a total.\n"
		"exit codes: 0 done; 2 usage error, a day in the future, the server unreachable\n"
		"or the key refused, PostgreSQL unreachable or refusing (SQLSTATE named), a\n"
		"schema version newer than this tally, a row PostgreSQL cannot take.\n",
	.run = export_run,
};
