/*
 * main.c — tally-bench's command line.
 *
 *   tally-bench engine --data DIR [--events N] [--tenants T] [--seed S]
 *                      [--producers P] [--batch-window W] [--inflight Q]
 *                      [--group G] [--json]
 *   tally-bench query --data DIR [--events N] [--tenants T] [--seed S]
 *                     [--repeat R] [--no-compact] [--json]
 *   tally-bench ingest --server HOST:PORT (--key KEY | --key-file FILE) ...
 *   tally-bench mixed --server HOST:PORT (--key KEY | --key-file FILE) ...
 *   tally-bench --help
 *
 * Exit status: 0 success; 1 the engine or the server reported an error, or
 * results that do not match the workload; 2 a usage error (unknown flag,
 * missing or bad value, data directory not usable, bad key). Every failure prints one message on
 * stderr. "--flag value" and "--flag=value" are both accepted.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "engine_bench.h"
#include "ingest.h"
#include "net.h"
#include "net_ingest.h"
#include "net_mixed.h"
#include "query_bench.h"
#include "workload.h"

static const char USAGE[] =
	"usage: tally-bench engine --data DIR [--events N] [--tenants T] [--seed S]\n"
	"                          [--producers P] [--batch-window W] [--inflight Q]\n"
	"                          [--group G] [--json]\n"
	"       tally-bench query --data DIR [--events N] [--tenants T] [--seed S]\n"
	"                         [--repeat R] [--no-compact] [--json]\n"
	"       tally-bench ingest --server HOST:PORT (--key KEY | --key-file FILE) [--events N]\n"
	"                          [--tenants T] [--seed S] [--connections C] [--batch B]\n"
	"                          [--window W] [--inflight Q] [--rate R] [--create-tenants]\n"
	"                          [--server-pid PID] [--json]\n"
	"       tally-bench mixed --server HOST:PORT (--key KEY | --key-file FILE) [--preload N]\n"
	"                         [--no-preload] [--tenants T] [--seed S] [--rate R] [--duration SECONDS]\n"
	"                         [--connections C] [--batch B] [--window W] [--inflight Q]\n"
	"                         [--query-clients Q] [--query-rate QPS] [--repeat R] [--warm]\n"
	"                         [--server-pid PID] [--json]\n"
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
	"                      acknowledged (default 4096, max %u)\n"
	"  --group G           batches submitted together with tally_ingest_submit_many,\n"
	"                      as a server does with the requests of one event-loop pass\n"
	"                      (default 256; 1 submits each batch alone; max %u)\n"
	"  --memtable-mib M    the store's memtable_bytes_max, in MiB (default: the\n"
	"                      engine's, 512; max %u)\n"
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
	"\n";

/* The protocol benchmarks: they talk to a running tallyd (proto/client.h). */
static const char USAGE_PROTOCOL[] =
	"ingest  send the reference workload to a running tallyd over the protocol: its\n"
	"        events grouped per tenant (in windows of W events) into batches of at most\n"
	"        B events, built and encoded before the clock starts, sent from C connections\n"
	"        (one thread each) with up to Q batches in flight each, naming their tenant\n"
	"        (created on first use: an admin key). Prints events/s acknowledged (acks\n"
	"        come after fsync), the ACCEPTED/DUPLICATE/CONFLICT/REJECTED totals (checked\n"
	"        against the workload: a server that already held it is a mismatch), ack\n"
	"        latency P50/P95/P99/max per batch, and the server's RSS with --server-pid.\n"
	"\n"
	"  --server HOST:PORT  the tallyd to talk to (required)\n"
	"  --key KEY           an admin API key (visible to other users in ps; prefer:)\n"
	"  --key-file FILE     a file whose first line is the key (tallyd writes DATA/admin.key)\n"
	"  --events N, --tenants T, --seed S   the workload, as for engine\n"
	"  --connections C     connections, one thread each (default %u, max %u)\n"
	"  --batch B           events per batch at most (default %u, max %u)\n"
	"  --window W          events per delivery window, grouped per tenant (default: the\n"
	"                      whole workload, up to %" PRIu32 ")\n"
	"  --inflight Q        batches in flight per connection (default %u, lowered to the\n"
	"                      server's limit; max %u)\n"
	"  --rate R            paced: send at R events/s over all connections (default: as\n"
	"                      fast as acks come; max %" PRIu64 ")\n"
	"  --create-tenants    create the tenants (CreateTenant, one at a time) before the\n"
	"                      clock starts, so the timed part is the ingest path alone\n"
	"                      (default: the server creates each on first use, timed)\n"
	"  --server-pid PID    read the server's VmRSS/VmHWM from /proc/PID/status\n"
	"  --json              print one JSON object instead of the text report\n"
	"\n"
	"mixed   the five dashboard queries of `query`, asked over the protocol by Q client\n"
	"        threads while ingest runs paced at R events/s for a duration. Prints per\n"
	"        query P50/P95/P99/max round trip at the client, the ingest rate achieved\n"
	"        (and whether it held), its ack latency and results (checked).\n"
	"\n"
	"  --server, --key, --key-file, --seed, --tenants, --server-pid, --json   as for ingest\n"
	"  --preload N         the history: the reference workload of N events (30 days),\n"
	"                      ingested first (default %" PRIu64 "); the queries' tenants are\n"
	"                      drawn from it by activity\n"
	"  --no-preload        the server holds that history already (tally-bench ingest\n"
	"                      --events N --tenants T --seed S): ingest nothing first\n"
	"  --rate R            live events/s, paced (default %" PRIu64 ")\n"
	"  --duration SECONDS  of the live ingest: R x SECONDS events (default %u, max %u)\n"
	"  --connections C     live ingest connections (default %u)\n"
	"  --batch B           live events per batch at most (default %u)\n"
	"  --window W          live delivery window, grouped per tenant (default: one\n"
	"                      second of traffic, R events)\n"
	"  --inflight Q        batches in flight per ingest connection (default %u)\n"
	"  --query-clients Q   query threads, one connection each (default %u, max %u)\n"
	"  --query-rate QPS    queries/s over all query clients, 0 for back to back\n"
	"                      (default %u)\n"
	"  --repeat R          tenant draws the query clients cycle through (default %u)\n"
	"  --warm              ask every draw's five queries once, untimed, before the live\n"
	"                      ingest (a polling dashboard's steady state); default: cold\n"
	"\n"
	"Exit status: 0 ok; 1 engine or server error, a refused key or request, or a result\n"
	"mismatch; 2 usage error. See bench/README.md for the workload's exact definition.\n";

static void usage_print(FILE *out)
{
	fprintf(out, USAGE, WORKLOAD_EVENTS_MAX, WORKLOAD_TENANTS_MAX, BENCH_PRODUCERS_MAX,
		WORKLOAD_WINDOW_EVENTS_MAX, BENCH_INFLIGHT_MAX, BENCH_GROUP_MAX,
		BENCH_MEMTABLE_MIB_MAX, BENCH_QUERY_REPEAT_DEFAULT, BENCH_QUERY_REPEAT_MAX);
	fprintf(out, USAGE_PROTOCOL, BENCH_NET_CONNECTIONS_DEFAULT, NET_CONNECTIONS_MAX,
		NET_BATCH_EVENTS_DEFAULT, TALLY_BATCH_EVENTS_MAX, WORKLOAD_WINDOW_EVENTS_MAX,
		NET_INFLIGHT_DEFAULT, TALLY_CLIENT_INFLIGHT_MAX, NET_RATE_MAX,
		BENCH_MIXED_PRELOAD_DEFAULT, BENCH_MIXED_RATE_DEFAULT, BENCH_MIXED_DURATION_S_DEFAULT,
		BENCH_MIXED_DURATION_S_MAX, BENCH_MIXED_CONNECTIONS_DEFAULT, BENCH_MIXED_BATCH_DEFAULT,
		NET_INFLIGHT_DEFAULT, BENCH_MIXED_QUERY_CLIENTS_DEFAULT, BENCH_MIXED_QUERY_CLIENTS_MAX,
		BENCH_MIXED_QUERY_RATE_DEFAULT, BENCH_MIXED_REPEAT_DEFAULT);
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

/* A flag with a text value: --name TEXT (not empty). */
typedef struct text_flag {
	const char *name;
	const char **value;       /* left as it was when the flag is absent */
} text_flag;

/* One subcommand's flags. */
typedef struct flag_set {
	flag *numbers;
	size_t number_count;
	const text_flag *texts;
	size_t text_count;
	const switch_flag *switches;
	size_t switch_count;
} flag_set;

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))
#define FLAGS_HELP (-1) /* flags_parse printed the usage: exit 0 */

/*
 * Parses one subcommand's arguments against its flags. Returns 0,
 * FLAGS_HELP after printing the usage, or 2 after printing a usage error.
 * Required flags are the subcommand's to check.
 */
static int flags_parse(int argc, char **argv, const flag_set *set)
{
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			usage_print(stdout);
			return FLAGS_HELP;
		}
		const switch_flag *sw = NULL;
		for (size_t k = 0; k < set->switch_count; k++)
			if (strcmp(arg, set->switches[k].name) == 0)
				sw = &set->switches[k];
		if (sw) {
			*sw->value = true;
			continue;
		}
		/* "--name value" or "--name=value" */
		const char *equals = strchr(arg, '=');
		size_t name_size = equals ? (size_t)(equals - arg) : strlen(arg);
		const char *value = NULL;
		const text_flag *t = NULL;
		flag *f = NULL;
		char name[64];
		if (name_size >= sizeof(name))
			return usage_error("unknown option", arg);
		memcpy(name, arg, name_size);
		name[name_size] = 0;
		for (size_t k = 0; k < set->text_count; k++)
			if (strcmp(name, set->texts[k].name) == 0)
				t = &set->texts[k];
		for (size_t k = 0; k < set->number_count; k++)
			if (strcmp(name, set->numbers[k].name) == 0)
				f = &set->numbers[k];
		if (!t && !f)
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
		if (t) {
			if (value[0] == 0)
				return usage_error("empty value for", name);
			*t->value = value;
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
	return 0;
}

static int engine_main(int argc, char **argv)
{
	uint64_t events = BENCH_EVENTS_DEFAULT, tenants = BENCH_TENANTS_DEFAULT,
		 seed = BENCH_SEED_DEFAULT, producers = BENCH_PRODUCERS_DEFAULT,
		 window = BENCH_WINDOW_DEFAULT, inflight = BENCH_INFLIGHT_DEFAULT,
		 group = BENCH_GROUP_DEFAULT, memtable_mib = 0;
	flag flags[] = {
		{"--events", 1, WORKLOAD_EVENTS_MAX, &events, false},
		{"--tenants", 1, WORKLOAD_TENANTS_MAX, &tenants, false},
		{"--seed", 0, UINT64_MAX, &seed, false},
		{"--producers", 1, BENCH_PRODUCERS_MAX, &producers, false},
		{"--batch-window", 1, WORKLOAD_WINDOW_EVENTS_MAX, &window, false},
		{"--inflight", 1, BENCH_INFLIGHT_MAX, &inflight, false},
		{"--group", 1, BENCH_GROUP_MAX, &group, false},
		{"--memtable-mib", 1, BENCH_MEMTABLE_MIB_MAX, &memtable_mib, false},
	};
	bool json = false;
	const switch_flag switches[] = {{"--json", &json}};
	const char *data = NULL;
	const text_flag texts[] = {{"--data", &data}};
	const flag_set set = {flags, COUNT_OF(flags), texts, COUNT_OF(texts), switches, COUNT_OF(switches)};
	int rc = flags_parse(argc, argv, &set);
	if (rc)
		return rc == FLAGS_HELP ? 0 : rc;
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
		.memtable_bytes_max = memtable_mib << 20,
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
	const text_flag texts[] = {{"--data", &data}};
	const flag_set set = {flags, COUNT_OF(flags), texts, COUNT_OF(texts), switches, COUNT_OF(switches)};
	int rc = flags_parse(argc, argv, &set);
	if (rc)
		return rc == FLAGS_HELP ? 0 : rc;
	if (!data)
		return usage_error("missing --data DIR", NULL);
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

/* --server HOST:PORT given and well formed; 0 or 2 after a usage error. */
static int server_check(const char *server)
{
	if (!server)
		return usage_error("missing --server HOST:PORT", NULL);
	char host[TALLY_CLIENT_HOST_SIZE], port[TALLY_CLIENT_PORT_SIZE],
		errmsg[TALLY_CLIENT_ERRMSG_SIZE] = "";
	if (tally_client_parse_server(server, host, port, errmsg))
		return usage_error("bad --server", errmsg[0] ? errmsg : server);
	return 0;
}

#define PID_MAX UINT64_C(4194304) /* Linux's largest pid_max */

/* The flags of a protocol benchmark: its own numbers and switches, plus
 * --server (required, checked), --key and --key-file. 0, FLAGS_HELP or 2. */
static int protocol_flags_parse(int argc, char **argv, flag *flags, size_t flag_count,
				const switch_flag *switches, size_t switch_count, const char **server,
				const char **key, const char **key_file)
{
	const text_flag texts[] = {{"--server", server}, {"--key", key}, {"--key-file", key_file}};
	const flag_set set = {flags, flag_count, texts, COUNT_OF(texts), switches, switch_count};
	int rc = flags_parse(argc, argv, &set);
	return rc ? rc : server_check(*server);
}

static int ingest_main(int argc, char **argv)
{
	uint64_t events = BENCH_EVENTS_DEFAULT, tenants = BENCH_TENANTS_DEFAULT,
		 seed = BENCH_SEED_DEFAULT, connections = BENCH_NET_CONNECTIONS_DEFAULT,
		 batch = NET_BATCH_EVENTS_DEFAULT, window = 0, inflight = NET_INFLIGHT_DEFAULT,
		 rate = 0, pid = 0;
	flag flags[] = {
		{"--events", 1, WORKLOAD_EVENTS_MAX, &events, false},
		{"--tenants", 1, WORKLOAD_TENANTS_MAX, &tenants, false},
		{"--seed", 0, UINT64_MAX, &seed, false},
		{"--connections", 1, NET_CONNECTIONS_MAX, &connections, false},
		{"--batch", 1, TALLY_BATCH_EVENTS_MAX, &batch, false},
		{"--window", 1, WORKLOAD_WINDOW_EVENTS_MAX, &window, false},
		{"--inflight", 1, TALLY_CLIENT_INFLIGHT_MAX, &inflight, false},
		{"--rate", 1, NET_RATE_MAX, &rate, false},
		{"--server-pid", 1, PID_MAX, &pid, false},
	};
	bool json = false, create_tenants = false;
	const switch_flag switches[] = {{"--json", &json}, {"--create-tenants", &create_tenants}};
	const char *server = NULL, *key = NULL, *key_file = NULL;
	int rc = protocol_flags_parse(argc, argv, flags, COUNT_OF(flags), switches, COUNT_OF(switches),
				      &server, &key, &key_file);
	if (rc)
		return rc == FLAGS_HELP ? 0 : rc;
	bench_net_ingest_options options = {
		.server = server,
		.key = key,
		.key_file = key_file,
		.event_count = events,
		.tenant_count = (uint32_t)tenants,
		.seed = seed,
		.connection_count = (uint32_t)connections,
		.batch_events = (uint32_t)batch,
		.window_events = (uint32_t)window,
		.inflight = (uint32_t)inflight,
		.rate = rate,
		.create_tenants = create_tenants,
		.server_pid = (long)pid,
		.json = json,
	};
	return bench_net_ingest_run(&options);
}

static int mixed_main(int argc, char **argv)
{
	uint64_t preload = BENCH_MIXED_PRELOAD_DEFAULT, tenants = BENCH_TENANTS_DEFAULT,
		 seed = BENCH_SEED_DEFAULT, rate = BENCH_MIXED_RATE_DEFAULT,
		 duration = BENCH_MIXED_DURATION_S_DEFAULT, connections = BENCH_MIXED_CONNECTIONS_DEFAULT,
		 batch = BENCH_MIXED_BATCH_DEFAULT, window = 0, inflight = NET_INFLIGHT_DEFAULT,
		 query_clients = BENCH_MIXED_QUERY_CLIENTS_DEFAULT,
		 query_rate = BENCH_MIXED_QUERY_RATE_DEFAULT, repeat = BENCH_MIXED_REPEAT_DEFAULT, pid = 0;
	flag flags[] = {
		{"--preload", 1, WORKLOAD_EVENTS_MAX, &preload, false},
		{"--tenants", 1, WORKLOAD_TENANTS_MAX, &tenants, false},
		{"--seed", 0, UINT64_MAX, &seed, false},
		{"--rate", 1, NET_RATE_MAX, &rate, false},
		{"--duration", 1, BENCH_MIXED_DURATION_S_MAX, &duration, false},
		{"--connections", 1, NET_CONNECTIONS_MAX, &connections, false},
		{"--batch", 1, TALLY_BATCH_EVENTS_MAX, &batch, false},
		{"--window", 1, WORKLOAD_WINDOW_EVENTS_MAX, &window, false},
		{"--inflight", 1, TALLY_CLIENT_INFLIGHT_MAX, &inflight, false},
		{"--query-clients", 1, BENCH_MIXED_QUERY_CLIENTS_MAX, &query_clients, false},
		{"--query-rate", 0, BENCH_MIXED_QUERY_RATE_MAX, &query_rate, false},
		{"--repeat", 1, BENCH_MIXED_REPEAT_MAX, &repeat, false},
		{"--server-pid", 1, PID_MAX, &pid, false},
	};
	bool json = false, no_preload = false, warm = false;
	const switch_flag switches[] = {{"--json", &json}, {"--no-preload", &no_preload}, {"--warm", &warm}};
	const char *server = NULL, *key = NULL, *key_file = NULL;
	int rc = protocol_flags_parse(argc, argv, flags, COUNT_OF(flags), switches, COUNT_OF(switches),
				      &server, &key, &key_file);
	if (rc)
		return rc == FLAGS_HELP ? 0 : rc;
	if (rate * duration > WORKLOAD_EVENTS_MAX) {
		char message[160];
		snprintf(message, sizeof(message), "--rate x --duration is %" PRIu64
			 " live events, over the workload's %" PRIu64, rate * duration, WORKLOAD_EVENTS_MAX);
		return usage_error(message, NULL);
	}
	bench_net_mixed_options options = {
		.server = server,
		.key = key,
		.key_file = key_file,
		.preload_events = preload,
		.no_preload = no_preload,
		.tenant_count = (uint32_t)tenants,
		.seed = seed,
		.rate = rate,
		.duration_s = (uint32_t)duration,
		.connection_count = (uint32_t)connections,
		.batch_events = (uint32_t)batch,
		.window_events = (uint32_t)window,
		.inflight = (uint32_t)inflight,
		.query_client_count = (uint32_t)query_clients,
		.query_rate = (uint32_t)query_rate,
		.repeat = (uint32_t)repeat,
		.warm = warm,
		.server_pid = (long)pid,
		.json = json,
	};
	return bench_net_mixed_run(&options);
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
	if (strcmp(argv[1], "ingest") == 0)
		return ingest_main(argc - 2, argv + 2);
	if (strcmp(argv[1], "mixed") == 0)
		return mixed_main(argc - 2, argv + 2);
	return usage_error(argv[1][0] == '-' ? "unknown option" : "unknown command", argv[1]);
}
