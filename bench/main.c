/*
 * main.c — tally-bench's command line.
 *
 *   tally-bench engine --data DIR [--events N] [--tenants T] [--seed S]
 *                      [--producers P] [--batch-window W] [--inflight Q] [--json]
 *   tally-bench --help
 *
 * Exit status: 0 success; 1 the engine reported an error or results that do
 * not match the workload; 2 a usage error (unknown flag, missing or bad
 * value, data directory not fresh). Every failure prints one message on
 * stderr. "--flag value" and "--flag=value" are both accepted.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_bench.h"
#include "workload.h"

static const char USAGE[] =
	"usage: tally-bench engine --data DIR [--events N] [--tenants T] [--seed S]\n"
	"                          [--producers P] [--batch-window W] [--inflight Q]\n"
	"                          [--group G] [--json]\n"
	"       tally-bench --help\n"
	"\n"
	"engine  generate the reference workload (T tenants, Zipf(1.1) activity, 30 days,\n"
	"        ~1%% late, ~0.5%% re-sends) and ingest it in-process into a fresh store\n"
	"        with durable group commit; then flush, compact, measure the data\n"
	"        directory and reopen it. Prints events/s, ack latency P50/P95/P99,\n"
	"        bytes per event on disk (total and per column), dedup index bytes per\n"
	"        event, flush/compaction time and recovery (reopen) time.\n"
	"\n"
	"  --data DIR          data directory; created if missing, must be empty (required)\n"
	"  --events N          delivered events, re-sends included (default 1000000, max %" PRIu64 ")\n"
	"  --tenants T         tenants (default 10000, max %" PRIu32 ")\n"
	"  --seed S            workload seed, any 64-bit unsigned integer (default 1)\n"
	"  --producers P       producer threads (default 2, max %u)\n"
	"  --batch-window W    events per delivery window, cut into one batch per tenant\n"
	"                      (default 10000, max %" PRIu32 ")\n"
	"  --inflight Q        batches a producer may have submitted but not yet\n"
	"                      acknowledged (default 1024, max %u)\n"
	"  --group G           batches submitted together with tally_ingest_submit_many,\n"
	"                      as a server does with the requests of one event-loop pass\n"
	"                      (default 256; 1 submits each batch alone; max %u)\n"
	"  --json              print one JSON object instead of the text report\n"
	"\n"
	"Exit status: 0 ok, 1 engine error or result mismatch, 2 usage error.\n"
	"See bench/README.md for the workload's exact definition.\n";

static void usage_print(FILE *out)
{
	fprintf(out, USAGE, WORKLOAD_EVENTS_MAX, WORKLOAD_TENANTS_MAX, BENCH_PRODUCERS_MAX,
		WORKLOAD_WINDOW_EVENTS_MAX, BENCH_INFLIGHT_MAX, BENCH_GROUP_MAX);
}

static int usage_error(const char *message, const char *detail)
{
	fprintf(stderr, "tally-bench: %s%s%s (try tally-bench --help)\n", message,
		detail ? ": " : "", detail ? detail : "");
	return 2;
}

/* Parses a decimal unsigned integer in [min, max]: digits only, no sign,
 * no spaces, no trailing text. 0 or -1. */
static int parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
	if (!text || text[0] < '0' || text[0] > '9')
		return -1;
	char *end = NULL;
	errno = 0;
	unsigned long long value = strtoull(text, &end, 10);
	if (errno || *end != 0 || value < min || value > max)
		return -1;
	*out = value;
	return 0;
}

typedef struct flag {
	const char *name;
	uint64_t min;
	uint64_t max;
	uint64_t *value;
} flag;

static int engine_main(int argc, char **argv)
{
	uint64_t events = 1000000, tenants = 10000, seed = 1, producers = 2, window = 10000,
		 inflight = 1024, group = 256;
	const flag flags[] = {
		{"--events", 1, WORKLOAD_EVENTS_MAX, &events},
		{"--tenants", 1, WORKLOAD_TENANTS_MAX, &tenants},
		{"--seed", 0, UINT64_MAX, &seed},
		{"--producers", 1, BENCH_PRODUCERS_MAX, &producers},
		{"--batch-window", 1, WORKLOAD_WINDOW_EVENTS_MAX, &window},
		{"--inflight", 1, BENCH_INFLIGHT_MAX, &inflight},
		{"--group", 1, BENCH_GROUP_MAX, &group},
	};
	const char *data = NULL;
	int json = 0;
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			usage_print(stdout);
			return 0;
		}
		if (strcmp(arg, "--json") == 0) {
			json = 1;
			continue;
		}
		/* "--name value" or "--name=value" */
		const char *equals = strchr(arg, '=');
		size_t name_size = equals ? (size_t)(equals - arg) : strlen(arg);
		const char *value = NULL;
		int known = 0;
		const flag *f = NULL;
		char name[64];
		if (name_size >= sizeof(name))
			return usage_error("unknown option", arg);
		memcpy(name, arg, name_size);
		name[name_size] = 0;
		if (strcmp(name, "--data") == 0)
			known = 1;
		for (size_t k = 0; k < sizeof(flags) / sizeof(flags[0]); k++)
			if (strcmp(name, flags[k].name) == 0)
				f = &flags[k];
		if (!known && !f)
			return usage_error(strncmp(arg, "-", 1) == 0 ? "unknown option"
								      : "unexpected argument",
					   arg);
		if (equals) {
			value = equals + 1;
		} else {
			if (i + 1 >= argc)
				return usage_error("missing value for", name);
			value = argv[++i];
		}
		if (known) {
			if (value[0] == 0)
				return usage_error("empty value for", name);
			data = value;
			continue;
		}
		if (parse_u64(value, f->min, f->max, f->value)) {
			char message[160];
			snprintf(message, sizeof(message), "bad value for %s (want an integer in %" PRIu64
				 "..%" PRIu64 ")", name, f->min, f->max);
			return usage_error(message, value);
		}
	}
	if (!data)
		return usage_error("missing --data DIR", NULL);
	bench_engine_options options = {
		.event_count = events,
		.tenant_count = (uint32_t)tenants,
		.seed = seed,
		.data_dir = data,
		.json = json,
		.producer_count = (uint32_t)producers,
		.window_events = (uint32_t)window,
		.inflight_batches = (uint32_t)inflight,
		.group_batches = (uint32_t)group,
	};
	return bench_engine_run(&options);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage_error("missing command", NULL);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage_print(stdout);
		return 0;
	}
	if (strcmp(argv[1], "engine") == 0)
		return engine_main(argc - 2, argv + 2);
	return usage_error(argv[1][0] == '-' ? "unknown option" : "unknown command", argv[1]);
}
