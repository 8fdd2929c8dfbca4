/*
 * test_cli_server.c — the `tally` commands that talk to tallyd, run as
 * commands against a tallyd in the test process (server_harness.h): their
 * exact output and exit codes for tenant and key administration, ingest
 * of a JSON-lines file (again: duplicates; an old event: rejected), query,
 * events and stats, a suspended tenant, and a server that is not there.
 *
 * The commands read the global options from cli_globals_current, which
 * main() fills from the command line; each test sets it directly.
 *
 * The tallyd logs to the same stderr as the commands. At log level error
 * (--log-level error) it writes nothing there unless it fails itself, so
 * stderr holds the command's lines and any server error shows in a test.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <jansson.h>

#include "../server/log.h"
#include "../tools/remote.h"
#include "support/cli_run.h"
#include "support/server_harness.h"

#define MINUTE_US (INT64_C(60) * 1000000)
#define DAY_US (INT64_C(86400) * 1000000)

static harness h;
static char scratch[128];

static void setup(void)
{
	log_set_level(LOG_LEVEL_ERROR);
	harness_init(&h, "cliserver");
	harness_start(&h);
	snprintf(scratch, sizeof(scratch), "%s/cli", h.dir.path);
	memset(&cli_globals_current, 0, sizeof(cli_globals_current));
	cli_globals_current.server = h.address;
	cli_globals_current.key = h.admin_key;
}

static void teardown(void)
{
	memset(&cli_globals_current, 0, sizeof(cli_globals_current));
	harness_finish(&h);
}

TestSuite(cli_server, .init = setup, .fini = teardown);

/* Runs `tally <words...>` (NULL-terminated) with the current globals. */
static cli_run_result *run(const cli_command *command, const char *word, ...)
{
	const char *argv[CLI_RUN_ARGS_MAX];
	int argc = 0;
	argv[argc++] = command->name;
	va_list ap;
	va_start(ap, word);
	for (const char *w = word; w; w = va_arg(ap, const char *)) {
		cr_assert_lt(argc, CLI_RUN_ARGS_MAX);
		argv[argc++] = w;
	}
	va_end(ap);
	return cli_run(scratch, command, argc, argv);
}

/* out as JSON (json_decref it). */
static json_t *json_of(const char *out)
{
	json_error_t error;
	json_t *j = json_loads(out, 0, &error);
	cr_assert_not_null(j, "not JSON (%s): %s", error.text, out);
	return j;
}

/* Asserts out is one line holding an API key; copies it into key (80). */
static void take_key(const cli_run_result *r, char *key)
{
	cr_assert_eq(r->code, CLI_EXIT_OK, "stderr: %s", r->err);
	size_t n = strlen(r->out);
	cr_assert(n > 10 && n < 80 && r->out[n - 1] == '\n', "not one key line: \"%s\"", r->out);
	cr_assert_eq(strcspn(r->out, " \t\n"), n - 1, "one word: \"%s\"", r->out);
	memcpy(key, r->out, n - 1);
	key[n - 1] = 0;
	cr_expect_str_empty(r->err);
}

static int64_t now_us(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* ---- administration ------------------------------------------------------- */

/* Description: `tenant create` prints the new tenant's key and nothing
 * else, a second create of the same name exits 2; `tenant list --json`
 * lists it; `key issue`, `key list --json` and `key revoke` with --tenant
 * act on its keys (revoke takes no --tenant); `tenant suspend` refuses its
 * keys until `resume`; `stats` is for admin keys only. */
Test(cli_server, tenants_and_keys)
{
	char acme_key[80], second_key[80];
	take_key(run(&cli_command_tenant, "create", "acme", NULL), acme_key);
	cli_run_result *r = run(&cli_command_tenant, "create", "acme", NULL);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_empty(r->out);
	cr_expect_eq(strncmp(r->err, "tally tenant: create: ", 22), 0, "%s", r->err);

	r = run(&cli_command_tenant, "list", "--json", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	json_t *list = json_of(r->out);
	cr_assert_eq(json_array_size(list), 1, "%s", r->out);
	json_t *t = json_array_get(list, 0);
	cr_expect_str_eq(json_string_value(json_object_get(t, "name")), "acme");
	cr_expect(json_is_false(json_object_get(t, "suspended")));
	cr_expect_eq(json_integer_value(json_object_get(t, "active_keys")), 1);
	json_decref(list);

	cli_globals_current.tenant = "acme";
	take_key(run(&cli_command_key, "issue", NULL), second_key);
	cr_expect_str_neq(second_key, acme_key);
	r = run(&cli_command_key, "issue", "--json", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	json_t *issued = json_of(r->out);
	char third_id[80];
	snprintf(third_id, sizeof(third_id), "%s",
		 json_string_value(json_object_get(issued, "key_id")));
	cr_expect_str_eq(json_string_value(json_object_get(issued, "tenant")), "acme");
	cr_expect_eq(strncmp(json_string_value(json_object_get(issued, "api_key")), "tk_", 3), 0);
	json_decref(issued);
	r = run(&cli_command_key, "list", "--json", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	list = json_of(r->out);
	cr_assert_eq(json_array_size(list), 3, "%s", r->out);
	int listed = 0;
	for (size_t i = 0; i < 3; i++) {
		json_t *k = json_array_get(list, i);
		cr_expect_str_eq(json_string_value(json_object_get(k, "tenant")), "acme");
		cr_expect(json_is_false(json_object_get(k, "revoked")));
		listed += strcmp(json_string_value(json_object_get(k, "key_id")), third_id) == 0;
	}
	cr_expect_eq(listed, 1, "the issued key's id is listed: %s", r->out);
	json_decref(list);
	r = run(&cli_command_key, "revoke", third_id, NULL);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE, "revoke takes no --tenant");
	cr_expect_eq(strncmp(r->err, "tally key: revoke names a key id; --tenant does not apply\n",
			     58), 0, "%s", r->err);
	cli_globals_current.tenant = NULL;
	r = run(&cli_command_key, "revoke", third_id, NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	cli_globals_current.tenant = "acme";
	r = run(&cli_command_key, "list", "--json", NULL);
	list = json_of(r->out);
	int revoked = 0;
	for (size_t i = 0; i < json_array_size(list); i++)
		revoked += json_is_true(json_object_get(json_array_get(list, i), "revoked"));
	cr_expect_eq(revoked, 1, "%s", r->out);
	json_decref(list);
	cli_globals_current.tenant = NULL;

	r = run(&cli_command_tenant, "suspend", "acme", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	cr_expect_str_eq(r->out, "tenant acme suspended\n");
	cli_globals_current.key = acme_key;
	r = run(&cli_command_query, "--bucket", "none", NULL);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE, "a suspended tenant's key is refused");
	cr_expect_str_empty(r->out);
	cr_expect_eq(strncmp(r->err, "tally query: ", 13), 0, "%s", r->err);
	cr_expect_not_null(strstr(r->err, "UNAUTHENTICATED"), "%s", r->err);
	cli_globals_current.key = h.admin_key;
	r = run(&cli_command_tenant, "resume", "acme", NULL);
	cr_expect_str_eq(r->out, "tenant acme resumed\n");
	cli_globals_current.key = acme_key;
	r = run(&cli_command_query, "--bucket", "none", NULL);
	cr_expect_eq(r->code, CLI_EXIT_OK, "resumed: %s", r->err);
	r = run(&cli_command_stats, NULL);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_eq(r->err, "tally stats: stats: refused by the server: stats is for admin keys "
				 "only (PERMISSION_DENIED)\n");
}

/* ---- data ------------------------------------------------------------------ */

/* Writes lines (each one JSON object) to scratch.jsonl; returns its path. */
static const char *write_jsonl(const char *const *lines, int count)
{
	static char path[160];
	snprintf(path, sizeof(path), "%s.jsonl", scratch);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	for (int i = 0; i < count; i++)
		fprintf(f, "%s\n", lines[i]);
	cr_assert_eq(fclose(f), 0);
	return path;
}

/* Asserts r is a usage error of command: exit 2, nothing on stdout,
 * "tally NAME: <message>" then the usage line on stderr. */
static void expect_usage_error(const cli_run_result *r, const cli_command *command,
			       const char *message)
{
	char want[600];
	snprintf(want, sizeof(want), "tally %s: %s\nusage: tally %s   (see 'tally help %s')\n",
		 command->name, message, command->synopsis, command->name);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE, "%s", message);
	cr_expect_str_empty(r->out);
	cr_expect_str_eq(r->err, want);
}

static void expect_ingest_usage_error(const cli_run_result *r, const char *message)
{
	expect_usage_error(r, &cli_command_ingest, message);
}

/* Asserts `tally ingest` read n rows of path and all n were accepted
 * (exit 0, the exact summary line, nothing else). */
static void expect_all_accepted(const cli_run_result *r, const char *path, int n)
{
	char want[300];
	snprintf(want, sizeof(want),
		 "%s: %d rows read, %d events acknowledged: %d accepted, 0 duplicate, 0 conflict, "
		 "0 rejected\n", path, n, n, n);
	cr_expect_eq(r->code, CLI_EXIT_OK, "stdout: %s stderr: %s", r->out, r->err);
	cr_expect_str_eq(r->out, want);
}

/* Description: `ingest FILE` sends a JSON-lines file and prints the exact
 * summary (exit 0); the same file again is all duplicates (exit 0); a
 * file with an event older than the lateness horizon exits 1 and names
 * its line. `query --format json` and `events --format json` give back
 * the stored events; `stats --json` is one object. */
Test(cli_server, ingest_query_events_and_stats)
{
	char key[80];
	harness_create_tenant(&h, "acme", key);
	cli_globals_current.key = key;
	int64_t now = now_us();
	char lines[3][200];
	const char *models[3] = {"gpt-4o", "gpt-4o", "claude"};
	for (int i = 0; i < 3; i++)
		snprintf(lines[i], sizeof(lines[i]),
			 "{\"event_id\": \"ev-%d\", \"time\": %" PRId64 ", \"type\": \"llm.call\", "
			 "\"model\": \"%s\", \"tokens_in\": %d}",
			 i, now - (3 - i) * 10 * MINUTE_US, models[i], 100 * (i + 1));
	const char *const rows[3] = {lines[0], lines[1], lines[2]};
	const char *path = write_jsonl(rows, 3);
	char summary[300];

	cli_run_result *r = run(&cli_command_ingest, path, NULL);
	expect_all_accepted(r, path, 3);
	r = run(&cli_command_ingest, path, NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	snprintf(summary, sizeof(summary),
		 "%s: 3 rows read, 3 events acknowledged: 0 accepted, 3 duplicate, 0 conflict, "
		 "0 rejected\n", path);
	cr_expect_str_eq(r->out, summary);

	char old[200];
	snprintf(old, sizeof(old), "{\"event_id\": \"ev-old\", \"time\": %" PRId64 "}",
		 now - 40 * DAY_US);
	const char *const late[2] = {lines[0], old};
	path = write_jsonl(late, 2);
	r = run(&cli_command_ingest, path, NULL);
	cr_expect_eq(r->code, CLI_EXIT_FINDINGS, "%s", r->out);
	snprintf(summary, sizeof(summary),
		 "%s: 2 rows read, 2 events acknowledged: 0 accepted, 1 duplicate, 0 conflict, "
		 "1 rejected", path);
	cr_expect_not_null(strstr(r->out, summary), "%s", r->out);
	snprintf(summary, sizeof(summary), "%s:2: rejected: ", path);
	cr_expect_not_null(strstr(r->out, summary), "%s", r->out);

	r = run(&cli_command_query, "--bucket", "none", "--group-by", "model", "--agg",
		"count,tokens_in", "--format", "json", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	json_t *q = json_of(r->out);
	cr_assert_eq(json_array_size(q), 2, "two models: %s", r->out);
	int64_t count = 0, tokens = 0;
	for (size_t i = 0; i < 2; i++) {
		json_t *row = json_array_get(q, i);
		const char *model = json_string_value(json_object_get(row, "model"));
		cr_assert_not_null(model, "%s", r->out);
		int64_t c = json_integer_value(json_object_get(row, "count"));
		int64_t t = json_integer_value(json_object_get(row, "tokens_in"));
		if (strcmp(model, "claude") == 0) {
			cr_expect_eq(c, 1);
			cr_expect_eq(t, 300);
		}
		count += c;
		tokens += t;
	}
	cr_expect_eq(count, 3);
	cr_expect_eq(tokens, 600);
	json_decref(q);

	r = run(&cli_command_events, "--format", "json", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	int seen = 0;
	for (char *line = strtok(r->out, "\n"); line; line = strtok(NULL, "\n")) {
		json_t *e = json_of(line);
		const char *id = json_string_value(json_object_get(e, "event_id"));
		cr_assert_not_null(id, "%s", line);
		cr_expect(strcmp(id, "ev-0") == 0 || strcmp(id, "ev-1") == 0 || strcmp(id, "ev-2") == 0,
			  "%s", id);
		seen++;
		json_decref(e);
	}
	cr_expect_eq(seen, 3);

	cli_globals_current.key = h.admin_key;
	r = run(&cli_command_stats, "--json", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	json_t *st = json_of(r->out);
	cr_expect(json_is_string(json_object_get(st, "server_version")), "%s", r->out);
	json_decref(st);
}

/* Description: `tally ingest`'s options and refusals. Usage errors (no
 * file, two files, a bad --format or --batch, an unknown option, a
 * missing value) exit 2 with the usage line, before any connection; a
 * file that cannot be opened exits 2 naming it; a tenant's key is
 * refused --create-tenants, --backfill and another tenant's --tenant.
 * With an admin key, --create-tenants makes the --tenant it names;
 * --backfill takes an event older than the lateness horizon (rejected
 * without it); --format csv reads a file whatever its name; --batch 1
 * sends one event per batch; --help prints the help and exits 0. */
Test(cli_server, ingest_options_and_refusals)
{
	cli_run_result *r = run(&cli_command_ingest, NULL);
	expect_ingest_usage_error(r, "missing the file to ingest ('-' for standard input)");
	r = run(&cli_command_ingest, "a.jsonl", "b.jsonl", NULL);
	expect_ingest_usage_error(r, "unexpected argument 'b.jsonl'");
	r = run(&cli_command_ingest, "--format", "xml", "a.jsonl", NULL);
	expect_ingest_usage_error(r, "--format 'xml': want csv or jsonl");
	r = run(&cli_command_ingest, "--batch", "0", "a.jsonl", NULL);
	expect_ingest_usage_error(r, "--batch '0': want a whole number from 1 to 65536");
	r = run(&cli_command_ingest, "--batch", "65537", "a.jsonl", NULL);
	expect_ingest_usage_error(r, "--batch '65537': want a whole number from 1 to 65536");
	r = run(&cli_command_ingest, "--bogus", "a.jsonl", NULL);
	expect_ingest_usage_error(r, "unknown option '--bogus'");
	r = run(&cli_command_ingest, "a.jsonl", "--batch", NULL);
	expect_ingest_usage_error(r, "option '--batch' needs an argument");
	r = run(&cli_command_ingest, "/nonexistent/events.jsonl", NULL);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_empty(r->out);
	cr_expect_str_eq(r->err, "tally ingest: cannot open /nonexistent/events.jsonl: No such file "
				 "or directory\n");
	r = run(&cli_command_ingest, "--help", NULL);
	cr_expect_eq(r->code, CLI_EXIT_OK);
	cr_expect_not_null(strstr(r->out, "  --backfill         admin: accept times older than the "
					  "lateness horizon\n"), "%s", r->out);

	int64_t now = now_us();
	char recent[200], old[200];
	snprintf(recent, sizeof(recent), "{\"event_id\": \"r-1\", \"time\": %" PRId64 "}",
		 now - 10 * MINUTE_US);
	snprintf(old, sizeof(old), "{\"event_id\": \"o-1\", \"time\": %" PRId64 "}", now - 40 * DAY_US);
	const char *const one_recent[1] = {recent};
	const char *path = write_jsonl(one_recent, 1);

	char key[80];
	harness_create_tenant(&h, "acme", key);
	cli_globals_current.key = key;
	r = run(&cli_command_ingest, "--create-tenants", path, NULL);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_empty(r->out);
	cr_expect_str_eq(r->err, "tally ingest: --create-tenants needs an admin key; this key belongs "
				 "to tenant acme\n");
	r = run(&cli_command_ingest, "--backfill", path, NULL);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_eq(r->err, "tally ingest: --backfill needs an admin key; this key belongs to "
				 "tenant acme\n");
	cli_globals_current.tenant = "globex";
	r = run(&cli_command_ingest, path, NULL);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_eq(r->err, "tally ingest: this key belongs to tenant acme; --tenant globex needs "
				 "an admin key\n");

	char summary[300];
	cli_globals_current.key = h.admin_key;
	cli_globals_current.tenant = "initech";
	r = run(&cli_command_ingest, "--create-tenants", path, NULL);
	expect_all_accepted(r, path, 1);
	cli_globals_current.tenant = NULL;
	r = run(&cli_command_tenant, "list", "--json", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	cr_expect_not_null(strstr(r->out, "\"initech\""), "created by ingest: %s", r->out);

	cli_globals_current.tenant = "acme";
	const char *const one_old[1] = {old};
	path = write_jsonl(one_old, 1);
	r = run(&cli_command_ingest, path, NULL);
	cr_expect_eq(r->code, CLI_EXIT_FINDINGS, "40 days old: rejected without --backfill");
	snprintf(summary, sizeof(summary), "%s:1: rejected: time too old (before the lateness horizon)",
		 path);
	cr_expect_not_null(strstr(r->out, summary), "%s", r->out);
	r = run(&cli_command_ingest, "--backfill", path, NULL);
	expect_all_accepted(r, path, 1);

	char csv_path[200];
	snprintf(csv_path, sizeof(csv_path), "%s.txt", scratch);
	FILE *f = fopen(csv_path, "w");
	cr_assert_not_null(f);
	fprintf(f, "event_id,time\nc-1,%" PRId64 "\nc-2,%" PRId64 "\nc-3,%" PRId64 "\n",
		now - 3 * MINUTE_US, now - 2 * MINUTE_US, now - MINUTE_US);
	cr_assert_eq(fclose(f), 0);
	r = run(&cli_command_ingest, "--format", "csv", "--batch", "1", csv_path, NULL);
	expect_all_accepted(r, csv_path, 3);
	remove(csv_path);
}

/* Description: `tally query` and `tally events` with their options, run
 * against five events of one tenant: a top-2 by cost (`--order`,
 * `--limit`, with the "more rows matched" line), `--filter`, `--tz` (a day
 * bucket with the zone's offset; an unknown zone is a usage error), a
 * reversed range; `events --user`, one page of `--limit 2` with its
 * `--cursor` line, the next page through `--cursor`, `--all` in pages of
 * 2, `--filter` with `--from`/`--to`; `--help` and bad values. */
Test(cli_server, query_and_events_options)
{
	char key[80];
	harness_create_tenant(&h, "acme", key);
	cli_globals_current.key = key;
	int64_t now = now_us();
	static const struct {
		const char *id, *model, *user, *status;
		int minutes_ago, cost;
	} evs[5] = {
		{"e1", "gpt", "u1", "ok", 50, 100},     {"e2", "gpt", "u2", "ok", 40, 200},
		{"e3", "claude", "u1", "error", 30, 300}, {"e4", "claude", "u1", "ok", 20, 400},
		{"e5", "llama", "u3", "ok", 10, 500},
	};
	char lines[5][200];
	const char *rows[5];
	for (int i = 0; i < 5; i++) {
		snprintf(lines[i], sizeof(lines[i]),
			 "{\"event_id\": \"%s\", \"time\": %" PRId64 ", \"model\": \"%s\", "
			 "\"user\": \"%s\", \"status\": \"%s\", \"cost_micros\": %d}",
			 evs[i].id, now - evs[i].minutes_ago * MINUTE_US, evs[i].model, evs[i].user,
			 evs[i].status, evs[i].cost);
		rows[i] = lines[i];
	}
	const char *path = write_jsonl(rows, 5);
	cli_run_result *r = run(&cli_command_ingest, path, NULL);
	expect_all_accepted(r, path, 5);

	r = run(&cli_command_query, "--from", "-2h", "--to", "now", "--bucket", "none", "--group-by",
		"model", "--agg", "count,cost_micros", "--order", "cost_micros:desc", "--limit", "2",
		"--format", "csv", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	cr_expect_eq(strncmp(r->out, "time,model,count,cost_micros\n", 29), 0, "%s", r->out);
	cr_expect_not_null(strstr(r->out, "Z,claude,2,700\n"), "%s", r->out);
	cr_expect_not_null(strstr(r->out, "Z,llama,1,500\n"), "%s", r->out);
	cr_expect_null(strstr(r->out, "gpt"), "the third by cost is past the limit: %s", r->out);
	cr_expect_lt(strstr(r->out, "claude"), strstr(r->out, "llama"), "by cost, descending");
	cr_expect_str_eq(r->err, "tally query: more rows matched than the 2 shown (raise --limit, "
				 "at most 100000)\n");

	r = run(&cli_command_query, "--bucket", "none", "--filter", "model=gpt", "--agg",
		"count,cost_micros,errors", "--format", "csv", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	cr_expect_not_null(strstr(r->out, "Z,2,300,0\n"), "%s", r->out);
	r = run(&cli_command_query, "--bucket", "none", "--filter", "model=claude", "--agg",
		"count,errors", "--format", "csv", NULL);
	cr_expect_not_null(strstr(r->out, "Z,2,1\n"), "%s", r->out);

	r = run(&cli_command_query, "--tz", "Europe/Paris", "--from", "-2h", "--bucket", "day",
		"--format", "csv", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	/* Two hours may span Paris midnight: one or two day rows, 5 events. */
	int counted = 0;
	for (char *line = strtok(r->out + strlen("time,count\n"), "\n"); line;
	     line = strtok(NULL, "\n")) {
		cr_expect(strstr(line, "T00:00:00+01:00,") || strstr(line, "T00:00:00+02:00,"),
			  "a Paris midnight: %s", line);
		counted += atoi(strchr(line, ',') + 1);
	}
	cr_expect_eq(counted, 5);
	r = run(&cli_command_query, "--tz", "Mars/Olympus", NULL);
	expect_usage_error(r, &cli_command_query,
			   "--tz 'Mars/Olympus': unknown time zone (an IANA name such as Europe/Paris)");
	r = run(&cli_command_query, "--from", "now", "--to", "-1h", NULL);
	expect_usage_error(r, &cli_command_query, "--from must be before --to");
	r = run(&cli_command_query, "--limit", "100001", NULL);
	expect_usage_error(r, &cli_command_query,
			   "--limit '100001': want a whole number from 1 to 100000");
	r = run(&cli_command_query, "--bogus", NULL);
	expect_usage_error(r, &cli_command_query, "unknown option '--bogus'");
	/* An option given twice is refused, except the repeatable ones. */
	r = run(&cli_command_query, "--limit", "5", "--limit", "100", NULL);
	expect_usage_error(r, &cli_command_query, "option '--limit' given twice");
	r = run(&cli_command_query, "--bucket", "none", "--filter", "model=gpt", "--filter", "status=ok",
		"--group-by", "model", "--group-by", "status", "--agg", "count", "--agg", "cost_micros",
		"--format", "csv", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	cr_expect_not_null(strstr(r->out, "Z,gpt,ok,2,300\n"), "%s", r->out);
	r = run(&cli_command_query, "--help", NULL);
	cr_expect_eq(r->code, CLI_EXIT_OK);
	cr_expect_eq(strncmp(r->out, "usage: tally query ", 19), 0, "%s", r->out);

	static const char header[] = "event_id,time,type,project,agent,model,user,status,duration_ms,"
				     "tokens_in,tokens_out,cost_micros\n";
	r = run(&cli_command_events, "--user", "u1", "--format", "csv", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	cr_expect_eq(strncmp(r->out, header, strlen(header)), 0, "%s", r->out);
	cr_expect_not_null(strstr(r->out, "\ne1,"), "%s", r->out);
	cr_expect_not_null(strstr(r->out, ",,,,claude,u1,error,0,0,0,300\n"), "e3: %s", r->out);
	cr_expect_not_null(strstr(r->out, "\ne4,"), "%s", r->out);
	cr_expect_null(strstr(r->out, ",u2,"), "%s", r->out);
	cr_expect_null(strstr(r->out, ",u3,"), "%s", r->out);

	r = run(&cli_command_events, "--limit", "2", "--format", "csv", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	cr_expect_not_null(strstr(r->out, "\ne1,"), "%s", r->out);
	cr_expect_not_null(strstr(r->out, "\ne2,"), "%s", r->out);
	cr_expect_null(strstr(r->out, "\ne3,"), "one page: %s", r->out);
	cr_assert_eq(strncmp(r->err, "next page: --cursor ", 20), 0, "%s", r->err);
	char cursor[100];
	snprintf(cursor, sizeof(cursor), "%.*s", (int)strcspn(r->err + 20, "\n"), r->err + 20);
	r = run(&cli_command_events, "--limit", "2", "--cursor", cursor, "--format", "csv", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	cr_expect_null(strstr(r->out, "\ne2,"), "%s", r->out);
	cr_expect_not_null(strstr(r->out, "\ne3,"), "the next page: %s", r->out);
	cr_expect_not_null(strstr(r->out, "\ne4,"), "%s", r->out);
	cr_expect_null(strstr(r->out, "\ne5,"), "%s", r->out);
	r = run(&cli_command_events, "--all", "--limit", "2", "--format", "csv", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	cr_expect_str_empty(r->err);
	const char *at = r->out;
	for (int i = 0; i < 5; i++) {
		char want[8];
		snprintf(want, sizeof(want), "\n%s,", evs[i].id);
		const char *p = strstr(at, want);
		cr_expect_not_null(p, "%s in order, once: %s", evs[i].id, r->out);
		at = p ? p + 1 : at;
	}
	cr_expect_eq(strstr(r->out, header), r->out, "one header for all pages: %s", r->out);
	cr_expect_null(strstr(r->out + 1, header), "one header for all pages: %s", r->out);

	r = run(&cli_command_events, "--filter", "model=claude", "--from", "-35m", "--to", "-25m",
		"--format", "csv", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	cr_expect_not_null(strstr(r->out, "\ne3,"), "%s", r->out);
	cr_expect_null(strstr(r->out, "\ne4,"), "outside the range: %s", r->out);
	cr_expect_null(strstr(r->out, "\ne1,"), "filtered out: %s", r->out);
	r = run(&cli_command_events, "--limit", "0", NULL);
	expect_usage_error(r, &cli_command_events, "--limit '0': want a whole number from 1 to 10000");
	r = run(&cli_command_events, "--user", "u1", "--user", "u2", NULL);
	expect_usage_error(r, &cli_command_events, "option '--user' given twice");
	r = run(&cli_command_events, "--help", NULL);
	cr_expect_eq(r->code, CLI_EXIT_OK);
	cr_expect_eq(strncmp(r->out, "usage: tally events ", 20), 0, "%s", r->out);
}

/* Description: `stats` as text (one figure a line, bytes also in units);
 * `tenant` and `key` without a subcommand or with an unknown one are
 * usage errors; their --help exits 0; `tenant create --json`, `tenant
 * suspend --json` and `key revoke --json` print one object; an unknown
 * tenant or key and a malformed name are refused by the server, the
 * command naming the request and the reason (exit 2). */
Test(cli_server, stats_text_and_subcommands)
{
	cli_run_result *r = run(&cli_command_stats, NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	cr_expect_eq(strncmp(r->out, "server_version   ", 17), 0, "%s", r->out);
	cr_expect_not_null(strstr(r->out, "\ntenants          0\n"), "%s", r->out);
	cr_expect_not_null(strstr(r->out, "\nwal_bytes        "), "%s", r->out);
	cr_expect_not_null(strstr(r->out, " B)\n"), "bytes with their unit: %s", r->out);

	r = run(&cli_command_tenant, NULL);
	expect_usage_error(r, &cli_command_tenant,
			   "missing the subcommand (create, list, suspend, resume)");
	r = run(&cli_command_tenant, "bogus", NULL);
	expect_usage_error(r, &cli_command_tenant,
			   "unknown subcommand 'bogus' (create, list, suspend, resume)");
	r = run(&cli_command_tenant, "--help", NULL);
	cr_expect_eq(r->code, CLI_EXIT_OK);
	cr_expect_eq(strncmp(r->out, "usage: tally tenant ", 20), 0, "%s", r->out);
	r = run(&cli_command_key, NULL);
	expect_usage_error(r, &cli_command_key, "missing the subcommand (issue, list, revoke)");
	r = run(&cli_command_key, "frob", NULL);
	expect_usage_error(r, &cli_command_key, "unknown subcommand 'frob' (issue, list, revoke)");
	r = run(&cli_command_key, "--help", NULL);
	cr_expect_eq(r->code, CLI_EXIT_OK);
	cr_expect_eq(strncmp(r->out, "usage: tally key ", 17), 0, "%s", r->out);

	r = run(&cli_command_tenant, "create", "globex", "--json", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	json_t *j = json_of(r->out);
	cr_expect_str_eq(json_string_value(json_object_get(j, "name")), "globex");
	cr_expect_eq(strncmp(json_string_value(json_object_get(j, "api_key")), "tk_", 3), 0);
	char key_id[80];
	snprintf(key_id, sizeof(key_id), "%s", json_string_value(json_object_get(j, "key_id")));
	json_decref(j);
	r = run(&cli_command_tenant, "suspend", "globex", "--json", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	j = json_of(r->out);
	cr_expect_str_eq(json_string_value(json_object_get(j, "name")), "globex");
	cr_expect(json_is_true(json_object_get(j, "suspended")));
	json_decref(j);
	r = run(&cli_command_key, "revoke", key_id, "--json", NULL);
	cr_assert_eq(r->code, CLI_EXIT_OK, "%s", r->err);
	j = json_of(r->out);
	cr_expect_str_eq(json_string_value(json_object_get(j, "revoked")), key_id);
	json_decref(j);

	/* What the server refuses, named by the command (exit 2). */
	static const struct {
		const cli_command *command;
		const char *args[4];
		const char *tenant; /* --tenant */
		const char *err;
	} refused[] = {
		{&cli_command_tenant, {"suspend", "nosuch"}, NULL,
		 "tally tenant: suspend: refused by the server: no tenant nosuch (BAD_REQUEST)\n"},
		{&cli_command_tenant, {"resume", "nosuch"}, NULL,
		 "tally tenant: resume: refused by the server: no tenant nosuch (BAD_REQUEST)\n"},
		{&cli_command_key, {"revoke", "nosuchkey"}, NULL,
		 "tally key: revoke: refused by the server: no key nosuchkey (BAD_REQUEST)\n"},
		{&cli_command_tenant, {"create", "bad name!"}, NULL,
		 "tally tenant: create: refused by the server: malformed tenant name 'bad name!': "
		 "1..64 bytes of [A-Za-z0-9._-] (BAD_REQUEST)\n"},
		{&cli_command_key, {"issue"}, "nosuch",
		 "tally key: issue: refused by the server: no tenant nosuch (BAD_REQUEST)\n"},
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		cli_globals_current.tenant = refused[i].tenant;
		const char *const *a = refused[i].args;
		r = run(refused[i].command, a[0], a[1], a[2], a[3], NULL);
		cr_expect_eq(r->code, CLI_EXIT_FAILURE, "case %zu", i);
		cr_expect_str_empty(r->out, "case %zu", i);
		cr_expect_str_eq(r->err, refused[i].err, "case %zu", i);
	}
	cli_globals_current.tenant = NULL;
}

/* Description: a tenant's key asking for another tenant's data is
 * refused (exit 2, nothing on stdout), and so is every command when no
 * server listens at the address, with the address in the message. An
 * admin key must name the tenant it acts for (--tenant), and then may. */
Test(cli_server, refused_and_unreachable_exit_2)
{
	char key[80], other[80];
	harness_create_tenant(&h, "acme", key);
	harness_create_tenant(&h, "globex", other);
	cli_globals_current.key = key;
	cli_globals_current.tenant = "globex";
	cli_run_result *r = run(&cli_command_query, "--bucket", "none", NULL);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_empty(r->out);
	cr_expect_eq(strncmp(r->err, "tally query: ", 13), 0, "%s", r->err);
	cli_globals_current.tenant = NULL;

	cli_globals_current.key = h.admin_key;
	r = run(&cli_command_query, "--bucket", "none", NULL);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_empty(r->out);
	cr_expect_str_eq(r->err, "tally query: an admin key acts for one tenant: give --tenant NAME\n");
	cli_globals_current.tenant = "globex";
	r = run(&cli_command_query, "--bucket", "none", NULL);
	cr_expect_eq(r->code, CLI_EXIT_OK, "an admin key with --tenant: %s", r->err);
	cli_globals_current.tenant = NULL;

	harness_stop(&h);
	r = run(&cli_command_stats, NULL);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_empty(r->out);
	cr_expect_not_null(strstr(r->err, h.address), "%s", r->err);
}
