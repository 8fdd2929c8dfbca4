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
	cr_assert_eq(r->code, CLI_EXIT_OK, "stdout: %s stderr: %s", r->out, r->err);
	snprintf(summary, sizeof(summary),
		 "%s: 3 rows read, 3 events acknowledged: 3 accepted, 0 duplicate, 0 conflict, "
		 "0 rejected\n", path);
	cr_expect_str_eq(r->out, summary);
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

/* Description: a tenant's key asking for another tenant's data is
 * refused (exit 2, nothing on stdout); so is every command when no server
 * listens at the address, with the address in the message. */
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

	harness_stop(&h);
	r = run(&cli_command_stats, NULL);
	cr_expect_eq(r->code, CLI_EXIT_FAILURE);
	cr_expect_str_empty(r->out);
	cr_expect_not_null(strstr(r->err, h.address), "%s", r->err);
}
