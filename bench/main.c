/*
 * main.c — tally-bench's command line.
 *
 *   tally-bench engine --data DIR [--events N] [--tenants T] [--seed S]
 *                      [--producers P] [--batch-window W] [--inflight Q]
 *                      [--group G] [--json]
 *   tally-bench query --data DIR [--events N] [--tenants T] [--seed S]
 *                     [--repeat R] [--no-compact] [--json]
 *   tally-bench --help
 *
 * Exit status: 0 success; 1 the engine reported an error or results that do
 * not match the workload; 2 a usage error (unknown flag, missing or bad
 * value, data directory not usable). Every failure prints one message on
 * stderr. "--flag value" and "--flag=value" are both accepted.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_bench.h"
#include "ingest.h"
#include "query_bench.h"
#include "workload.h"

static const char USAGE[] =
	"usage: tally-bench engine --data DIR [--events N] [--tenants T] [--seed S]\n"
	"                          [--producers P] [--batch-window W] [--inflight Q]\n"
	"                          [--group G] [--json]\n"
	"       tally-bench query --data DIR [--events N] [--tenants T] [--seed S]\n"
	"                         [--repeat R] [--no-compact] [--json]\n"
	"       tally-bench --help\n"
	"\n"
	"engine  generate the reference workload (T tenants, Zipf(1.1) activity, 30 days,\n"
	"        ~1%% late, ~0.5%% re-sends) and ingest it in-process into a fresh store\n"
	"        with durable group commit; then flush, compact, measure the data\n"
	"        directory and reopen it. Prints events/s, ack latency P50/P95/P99,\n"
	"        bytes per event on disk (total and per column), dedup index bytes per\n"
	"        event, flush/compaction time and recovery (reopen) time. Leaves\n"
	"        DIR/bench-workload.json, so `query` can use the store.\n"
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
	"query   time five dashboard queries (tally_query_run, in-process) R times each\n"
	"        for tenants drawn by activity, on the reference workload: daily_30d,\n"
	"        hourly_type_24h, project_model_30d, p95_agent_7d, dau_30d. Prints\n"
	"        P50/P95/P99 per query, rollup cells and raw rows merged, rollup bytes\n"
	"        per event by resolution and RSS; checks 20 answers of daily_30d and\n"
	"        project_model_30d against the workload.\n"
	"\n"
	"  --data DIR          missing or empty: the workload is generated, ingested,\n"
	"                      flushed and compacted there first; or a store left by\n"
	"                      `engine` or `query` (its bench-workload.json names the\n"
	"                      workload, which is regenerated, not ingested) (required)\n"
	"  --events N, --tenants T, --seed S\n"
	"                      as for engine, when DIR is fresh; with a store they must\n"
	"                      match its bench-workload.json (or be left out)\n"
	"  --repeat R          draws per query (default %u, max %u)\n"
	"  --no-compact        when ingesting: flush but do not compact\n"
	"  --json              print one JSON object instead of the text report\n"
	"\n"
	"Exit status: 0 ok, 1 engine error or result mismatch, 2 usage error.\n"
	"See bench/README.md for the workload's exact definition.\n";

static void usage_print(FILE *out)
{
	fprintf(out, USAGE, WORKLOAD_EVENTS_MAX, WORKLOAD_TENANTS_MAX, BENCH_PRODUCERS_MAX,
		WORKLOAD_WINDOW_EVENTS_MAX, BENCH_INFLIGHT_MAX, BENCH_GROUP_MAX,
		BENCH_QUERY_REPEAT_DEFAULT, BENCH_QUERY_REPEAT_MAX);
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

/* A numeric flag: --name N or --name=N, N in [min, max]. */
typedef struct flag {
	const char *name;
	uint64_t min;
	uint64_t max;
	uint64_t *value;
	bool given;       /* set by flags_parse when the flag is on the command line */
} flag;

/* A flag without a value: --name. */
typedef struct switch_flag {
	const char *name;
	bool *value;
} switch_flag;

#define FLAGS_HELP (-1) /* flags_parse printed the usage: exit 0 */

/*
 * Parses one subcommand's arguments: the numeric flags, the switches and
 * --data DIR (into *data; NULL if absent). Returns 0, FLAGS_HELP after
 * printing the usage, or 2 after printing a usage error.
 */
static int flags_parse(int argc, char **argv, flag *flags, size_t flag_count,
		       const switch_flag *switches, size_t switch_count, const char **data)
{
	*data = NULL;
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			usage_print(stdout);
			return FLAGS_HELP;
		}
		const switch_flag *sw = NULL;
		for (size_t k = 0; k < switch_count; k++)
			if (strcmp(arg, switches[k].name) == 0)
				sw = &switches[k];
		if (sw) {
			*sw->value = true;
			continue;
		}
		/* "--name value" or "--name=value" */
		const char *equals = strchr(arg, '=');
		size_t name_size = equals ? (size_t)(equals - arg) : strlen(arg);
		const char *value = NULL;
		int is_data = 0;
		flag *f = NULL;
		char name[64];
		if (name_size >= sizeof(name))
			return usage_error("unknown option", arg);
		memcpy(name, arg, name_size);
		name[name_size] = 0;
		if (strcmp(name, "--data") == 0)
			is_data = 1;
		for (size_t k = 0; k < flag_count; k++)
			if (strcmp(name, flags[k].name) == 0)
				f = &flags[k];
		if (!is_data && !f)
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
		if (is_data) {
			if (value[0] == 0)
				return usage_error("empty value for", name);
			*data = value;
			continue;
		}
		if (parse_u64(value, f->min, f->max, f->value)) {
			char message[160];
			snprintf(message, sizeof(message), "bad value for %s (want an integer in %" PRIu64
				 "..%" PRIu64 ")", name, f->min, f->max);
			return usage_error(message, value);
		}
		f->given = true;
	}
	if (!*data)
		return usage_error("missing --data DIR", NULL);
	return 0;
}

static int engine_main(int argc, char **argv)
{
	uint64_t events = BENCH_EVENTS_DEFAULT, tenants = BENCH_TENANTS_DEFAULT,
		 seed = BENCH_SEED_DEFAULT, producers = BENCH_PRODUCERS_DEFAULT,
		 window = BENCH_WINDOW_DEFAULT, inflight = BENCH_INFLIGHT_DEFAULT,
		 group = BENCH_GROUP_DEFAULT;
	flag flags[] = {
		{"--events", 1, WORKLOAD_EVENTS_MAX, &events, false},
		{"--tenants", 1, WORKLOAD_TENANTS_MAX, &tenants, false},
		{"--seed", 0, UINT64_MAX, &seed, false},
		{"--producers", 1, BENCH_PRODUCERS_MAX, &producers, false},
		{"--batch-window", 1, WORKLOAD_WINDOW_EVENTS_MAX, &window, false},
		{"--inflight", 1, BENCH_INFLIGHT_MAX, &inflight, false},
		{"--group", 1, BENCH_GROUP_MAX, &group, false},
	};
	bool json = false;
	const switch_flag switches[] = {{"--json", &json}};
	const char *data = NULL;
	int rc = flags_parse(argc, argv, flags, sizeof(flags) / sizeof(flags[0]), switches,
			     sizeof(switches) / sizeof(switches[0]), &data);
	if (rc)
		return rc == FLAGS_HELP ? 0 : rc;
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

static int query_main(int argc, char **argv)
{
	uint64_t events = BENCH_EVENTS_DEFAULT, tenants = BENCH_TENANTS_DEFAULT,
		 seed = BENCH_SEED_DEFAULT, repeat = BENCH_QUERY_REPEAT_DEFAULT;
	flag flags[] = {
		{"--events", 1, WORKLOAD_EVENTS_MAX, &events, false},
		{"--tenants", 1, WORKLOAD_TENANTS_MAX, &tenants, false},
		{"--seed", 0, UINT64_MAX, &seed, false},
		{"--repeat", 1, BENCH_QUERY_REPEAT_MAX, &repeat, false},
	};
	bool json = false, no_compact = false, warm = false;
	const switch_flag switches[] = {{"--json", &json}, {"--no-compact", &no_compact},
					{"--warm", &warm}};
	const char *data = NULL;
	int rc = flags_parse(argc, argv, flags, sizeof(flags) / sizeof(flags[0]), switches,
			     sizeof(switches) / sizeof(switches[0]), &data);
	if (rc)
		return rc == FLAGS_HELP ? 0 : rc;
	bench_query_options options = {
		.data_dir = data,
		.event_count = events,
		.tenant_count = (uint32_t)tenants,
		.seed = seed,
		.event_count_given = flags[0].given,
		.tenant_count_given = flags[1].given,
		.seed_given = flags[2].given,
		.repeat = (uint32_t)repeat,
		.no_compact = no_compact,
		.warm = warm,
		.json = json,
	};
	return bench_query_run(&options);
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
	if (strcmp(argv[1], "query") == 0)
		return query_main(argc - 2, argv + 2);
	return usage_error(argv[1][0] == '-' ? "unknown option" : "unknown command", argv[1]);
}
