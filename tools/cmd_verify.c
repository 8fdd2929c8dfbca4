/*
 * cmd_verify.c — `tally verify [--json] DIR`: check every checksum and every
 * decoded block of a data directory offline, through tally_verify
 * (engine/tally.h).
 *
 * Output: each problem on its own line as the engine words it (the file
 * path and the byte offset come first), then one summary line. Exit code 0
 * when clean, 1 when problems were found, 2 for usage errors or when the
 * check could not run (the directory is locked by a running tallyd, is not
 * a tally data directory, does not exist).
 *
 * tally_verify has one channel, problem_fn: when it cannot run, the last
 * message it delivers is the reason, not a problem. So this command holds
 * each message back until the next one arrives (or the call returns), and
 * only then knows whether to print it as a problem or as the reason.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "format.h"
#include "tally.h"

typedef struct verify_output {
	int json;
	json_t *problems; /* --json: the messages */
	int json_failed;
	char held[TALLY_ERRMSG_SIZE];
	int have_held;
	long printed;
} verify_output;

static void emit(verify_output *out, const char *message)
{
	out->printed++;
	if (!out->json) {
		printf("%s\n", message);
		return;
	}
	if (!out->problems || json_array_append_new(out->problems, format_json_text(message, strlen(message))))
		out->json_failed = 1;
}

static void on_problem(void *ctx, const char *message)
{
	verify_output *out = ctx;
	if (out->have_held)
		emit(out, out->held);
	snprintf(out->held, sizeof(out->held), "%s", message);
	out->have_held = 1;
}

static int verify_run(const cli_command *command, int argc, char **argv)
{
	static const struct option options[] = {
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	verify_output out;
	memset(&out, 0, sizeof(out));
	int opt;
	opterr = 0;
	optind = 0; /* glibc: a full reset */
	uint64_t seen = 0;
	while ((opt = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
		if (cli_option_once(command, options, opt, NULL, &seen))
			return CLI_EXIT_FAILURE;
		switch (opt) {
		case 'j': out.json = 1; break;
		case 'h': cli_command_help(command); return CLI_EXIT_OK;
		default: return cli_option_error(command, argc, argv, opt);
		}
	}
	if (optind == argc)
		return cli_usage_error(command, "missing the data directory");
	if (argc - optind > 1)
		return cli_usage_error(command, "unexpected argument '%s'", argv[optind + 1]);
	const char *dir = argv[optind];

	if (out.json)
		out.problems = json_array();
	int rc = tally_verify(dir, on_problem, &out);
	if (rc < 0) {
		/* Problems found before the stop were real; the last message is why. */
		const char *reason = out.have_held ? out.held : tally_strerror(rc);
		if (out.printed)
			fprintf(stderr, "tally verify: %ld problem%s found before the check stopped\n",
				out.printed, out.printed == 1 ? "" : "s");
		fprintf(stderr, "tally verify: cannot check %s: %s\n", dir, reason);
		json_decref(out.problems);
		return CLI_EXIT_FAILURE;
	}
	if (out.have_held)
		emit(&out, out.held);
	if (out.json) {
		json_t *root = json_object();
		int bad = !root || out.json_failed;
		if (!bad) {
			bad |= json_object_set_new(root, "dir", format_json_text(dir, strlen(dir))) != 0;
			bad |= json_object_set_new(root, "clean", json_boolean(rc == 0)) != 0;
			bad |= json_object_set_new(root, "problem_count", json_integer(rc)) != 0;
			bad |= json_object_set(root, "problems", out.problems) != 0;
		}
		if (!bad && json_dumpf(root, stdout, JSON_INDENT(2)) == 0)
			printf("\n");
		else
			bad = 1;
		json_decref(root);
		json_decref(out.problems);
		if (bad) {
			fprintf(stderr, "tally verify: could not build the JSON output\n");
			return CLI_EXIT_FAILURE;
		}
	} else if (rc == 0) {
		printf("tally verify: %s: no problems found\n", dir);
	} else {
		printf("tally verify: %s: %d problem%s found\n", dir, rc, rc == 1 ? "" : "s");
	}
	return rc == 0 ? CLI_EXIT_OK : CLI_EXIT_FINDINGS;
}

const cli_command cli_command_verify = {
	.name = "verify",
	.synopsis = "verify [--json] DIR",
	.summary = "check every checksum and block of a data directory, offline",
	.help =
		"Checks DIR, which must not be held by a running tallyd: the manifest; every\n"
		"segment file it names (header, footer, trailer, and every dictionary and\n"
		"row-group block: checksum, decompression, full decode, times sorted and\n"
		"inside the segment's range, dictionary codes in range); files in segments/\n"
		"that the manifest does not name; and every WAL record. A torn tail at the\n"
		"end of the newest WAL file is not a problem: recovery truncates it.\n"
		"\n"
		"Prints each problem on its own line, naming the file and byte offset, then a\n"
		"summary. At most about 100 problems are listed per file.\n"
		"\n"
		"options:\n"
		"  --json       {\"dir\", \"clean\", \"problem_count\", \"problems\": [...]}\n"
		"  -h, --help   this text\n"
		"\n"
		"exit codes: 0 no problems; 1 problems found; 2 usage error, or the check\n"
		"could not run (DIR locked by a running process, missing, or not a tally\n"
		"data directory).\n",
	.run = verify_run,
};
