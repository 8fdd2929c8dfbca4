/*
 * test_config.c — server/config.c: tallyd's defaults, flags, INI file,
 * precedence, every error message word for word, sizes and addresses.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "server.h"
#include "support/test_dir.h"

#define ARGS_MAX 64

/* Runs config_parse_args over c with a NULL-terminated list of arguments
 * after the program name. */
static int parse(server_config *c, char *errmsg, const char *const *args)
{
	char *argv[ARGS_MAX + 2];
	int argc = 0;
	argv[argc++] = "tallyd";
	for (; args[argc - 1]; argc++) {
		cr_assert_lt(argc, ARGS_MAX);
		argv[argc] = (char *)args[argc - 1];
	}
	argv[argc] = NULL;
	errmsg[0] = '\0';
	return config_parse_args(c, argc, argv, errmsg);
}

#define PARSE(c, err, ...) parse((c), (err), (const char *const[]){__VA_ARGS__, NULL})

/* Writes text to dir/name; the path goes to path (PATH_MAX). */
static void write_file(const test_dir *dir, const char *name, const char *text, char *path)
{
	snprintf(path, PATH_MAX, "%s/%s", dir->path, name);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "%s", path);
	cr_assert_eq(fwrite(text, 1, strlen(text), f), strlen(text));
	cr_assert_eq(fclose(f), 0);
}

static void expect_defaults(const server_config *c)
{
	cr_expect_str_eq(c->data_dir, "./data");
	cr_expect_str_eq(c->listen, "127.0.0.1:7411");
	cr_expect_str_eq(c->metrics, "127.0.0.1:9411");
	cr_expect_eq(c->frame_bytes_max, 16u << 20);
	cr_expect_eq(c->batch_events_max, 8192u);
	cr_expect_eq(c->connections_max, 1024u);
	cr_expect_eq(c->connections_per_key_max, 256u);
	cr_expect_eq(c->inflight_max, 64u);
	cr_expect_eq(c->idle_timeout_ms, 300000u);
	cr_expect_eq(c->frame_timeout_ms, 10000u);
	cr_expect_eq(c->hello_timeout_ms, 10000u);
	cr_expect_eq(c->pending_bytes_max, 512u << 20);
	cr_expect_eq(c->group_commit_window_us, 0u);
	cr_expect_eq(c->memtable_bytes_max, (uint64_t)512 << 20);
	cr_expect_eq(c->memtable_age_max_s, 3600u);
	cr_expect_eq(c->query_cache_bytes_max, (uint64_t)256 << 20);
	cr_expect_eq(c->query_bytes_max, (uint64_t)2 << 30);
	cr_expect_eq(c->compact_section_rows_max, 4194304u);
	cr_expect_eq(c->query_threads, 2u);
	cr_expect_eq(c->latency_slice_us, 100u);
	cr_expect_eq(c->log_json, false);
	cr_expect_eq(c->log_level, (uint32_t)LOG_LEVEL_INFO);
}

/* Description: the defaults are the documented ones, and no flags keep them. */
Test(config, defaults)
{
	server_config c;
	memset(&c, 0xab, sizeof(c));
	config_default(&c);
	expect_defaults(&c);
	char err[TALLY_ERRMSG_SIZE];
	cr_assert_eq(PARSE(&c, err, NULL), CONFIG_OK, "%s", err);
	expect_defaults(&c);
	cr_expect_eq(config_check(&c, err), 0, "%s", err);
}

/* Description: every flag sets its field, in both the "--flag value" and
 * the "--flag=value" forms. */
Test(config, every_flag)
{
	server_config c;
	config_default(&c);
	char err[TALLY_ERRMSG_SIZE];
	int rc = PARSE(&c, err, "--data", "/var/lib/tally", "--listen", "[::1]:7500", "--metrics", "off",
		       "--frame-bytes-max", "1MiB", "--batch-events-max", "1000", "--connections-max", "5000",
		       "--connections-per-key-max", "17", "--inflight-max", "8", "--idle-timeout-ms", "60000",
		       "--frame-timeout-ms", "2500", "--pending-bytes-max", "64MiB", "--group-commit-window-us",
		       "500", "--memtable-bytes-max", "768MiB", "--memtable-age-max-s", "60", "--query-cache-bytes-max", "1GiB", "--query-bytes-max", "512MiB", "--compact-section-rows-max", "1000000", "--query-threads", "6", "--latency-slice-us", "250", "--log-json",
		       "--log-level", "warn", "--hello-timeout-ms", "750");
	cr_assert_eq(rc, CONFIG_OK, "%s", err);
	cr_expect_str_eq(c.data_dir, "/var/lib/tally");
	cr_expect_str_eq(c.listen, "[::1]:7500");
	cr_expect_str_eq(c.metrics, "off");
	cr_expect_eq(c.frame_bytes_max, 1u << 20);
	cr_expect_eq(c.batch_events_max, 1000u);
	cr_expect_eq(c.connections_max, 5000u);
	cr_expect_eq(c.connections_per_key_max, 17u);
	cr_expect_eq(c.inflight_max, 8u);
	cr_expect_eq(c.idle_timeout_ms, 60000u);
	cr_expect_eq(c.frame_timeout_ms, 2500u);
	cr_expect_eq(c.hello_timeout_ms, 750u);
	cr_expect_eq(c.pending_bytes_max, 64u << 20);
	cr_expect_eq(c.group_commit_window_us, 500u);
	cr_expect_eq(c.memtable_bytes_max, (uint64_t)768 << 20);
	cr_expect_eq(c.memtable_age_max_s, 60u);
	cr_expect_eq(c.query_cache_bytes_max, (uint64_t)1 << 30);
	cr_expect_eq(c.query_bytes_max, (uint64_t)512 << 20);
	cr_expect_eq(c.compact_section_rows_max, 1000000u);
	cr_expect_eq(c.query_threads, 6u);
	cr_expect_eq(c.latency_slice_us, 250u);
	cr_expect_eq(c.log_json, true);
	cr_expect_eq(c.log_level, (uint32_t)LOG_LEVEL_WARN);

	config_default(&c);
	rc = PARSE(&c, err, "--data=/srv/t", "--listen=0.0.0.0:0", "--metrics=[::]:9500",
		   "--frame-bytes-max=4096", "--batch-events-max=1", "--connections-max=1",
		   "--connections-per-key-max=65536", "--inflight-max=4096", "--idle-timeout-ms=1",
		   "--frame-timeout-ms=86400000", "--pending-bytes-max=2GiB", "--group-commit-window-us=100000",
		   "--memtable-bytes-max=1048576", "--memtable-age-max-s=604800", "--query-cache-bytes-max=1MiB", "--query-bytes-max=64GiB", "--compact-section-rows-max=65536", "--query-threads=64", "--latency-slice-us=0", "--log-json=false",
		   "--log-level=error", "--hello-timeout-ms=1");
	cr_assert_eq(rc, CONFIG_OK, "%s", err);
	cr_expect_str_eq(c.data_dir, "/srv/t");
	cr_expect_str_eq(c.listen, "0.0.0.0:0");
	cr_expect_str_eq(c.metrics, "[::]:9500");
	cr_expect_eq(c.frame_bytes_max, 4096u);
	cr_expect_eq(c.batch_events_max, 1u);
	cr_expect_eq(c.connections_max, 1u);
	cr_expect_eq(c.connections_per_key_max, 65536u);
	cr_expect_eq(c.inflight_max, 4096u);
	cr_expect_eq(c.idle_timeout_ms, 1u);
	cr_expect_eq(c.frame_timeout_ms, 86400000u);
	cr_expect_eq(c.hello_timeout_ms, 1u);
	cr_expect_eq(c.pending_bytes_max, 2u << 30);
	cr_expect_eq(c.group_commit_window_us, 100000u);
	cr_expect_eq(c.memtable_bytes_max, (uint64_t)1 << 20);
	cr_expect_eq(c.memtable_age_max_s, 604800u);
	cr_expect_eq(c.query_cache_bytes_max, (uint64_t)1 << 20);
	cr_expect_eq(c.query_bytes_max, (uint64_t)64 << 30);
	cr_expect_eq(c.compact_section_rows_max, 65536u);
	cr_expect_eq(c.query_threads, 64u);
	cr_expect_eq(c.latency_slice_us, 0u);
	cr_expect_eq(c.log_json, false);
	cr_expect_eq(c.log_level, (uint32_t)LOG_LEVEL_ERROR);
}

/* Description: a flag given twice takes its last value; --log-json takes
 * true/false, yes/no, on/off, 1/0. */
Test(config, last_flag_wins_and_booleans)
{
	server_config c;
	config_default(&c);
	char err[TALLY_ERRMSG_SIZE];
	cr_assert_eq(PARSE(&c, err, "--inflight-max", "3", "--inflight-max", "9"), CONFIG_OK, "%s", err);
	cr_expect_eq(c.inflight_max, 9u);
	static const char *const values[] = {"true", "yes", "on", "1", "false", "no", "off", "0"};
	for (int i = 0; i < 8; i++) {
		char arg[32];
		snprintf(arg, sizeof(arg), "--log-json=%s", values[i]);
		c.log_json = i >= 4; /* the opposite of what the flag says */
		cr_assert_eq(PARSE(&c, err, arg), CONFIG_OK, "%s: %s", arg, err);
		cr_expect_eq(c.log_json, i < 4, "%s", arg);
	}
}

/* Description: --help and --version are reported wherever they appear
 * after valid flags, and leave the configuration untouched. */
Test(config, help_and_version)
{
	server_config c;
	config_default(&c);
	char err[TALLY_ERRMSG_SIZE];
	cr_expect_eq(PARSE(&c, err, "--help"), CONFIG_EXIT_HELP);
	cr_expect_eq(PARSE(&c, err, "--version"), CONFIG_EXIT_VERSION);
	cr_expect_eq(PARSE(&c, err, "--inflight-max", "3", "--help", "--bogus"), CONFIG_EXIT_HELP);
	cr_expect_eq(c.inflight_max, 64u, "a flag before --help is not applied");
	cr_expect_eq(PARSE(&c, err, "--bogus", "--help"), -EINVAL, "an error before --help is reported");
	cr_expect_str_eq(err, "unknown option --bogus");
}

/* The complete INI file of docs/operations.md's example, every key set. */
static const char full_ini[] = "; tallyd configuration\n"
			       "# comments start with ; or #\n"
			       "[tallyd]\n"
			       "data_dir = /var/lib/tally\n"
			       "listen = 0.0.0.0:7411\n"
			       "metrics = [::1]:9411 ; only local\n"
			       "frame_bytes_max = 8MiB\n"
			       "batch_events_max = 32768\n"
			       "connections_max = 4096\n"
			       "connections_per_key_max = 512\n"
			       "inflight_max = 128\n"
			       "idle_timeout_ms = 120000\n"
			       "frame_timeout_ms = 5000\n"
			       "hello_timeout_ms = 3000\n"
			       "pending_bytes_max = 1GiB\n"
			       "group_commit_window_us = 200\n"
			       "memtable_bytes_max = 640MiB\n"
			       "memtable_age_max_s = 0\n"
			       "compact_section_rows_max = 33554432\n"
			       "query_threads = 4\n"
			       "latency_slice_us = 1000\n"
			       "log_json = true\n"
			       "log_level = warn\n";

/* Description: an INI file sets every key, with comments, an inline
 * comment and blank lines ignored; what it does not name keeps its value. */
Test(config, ini_file_sets_every_key)
{
	test_dir dir;
	test_dir_make(&dir, "config");
	char path[PATH_MAX], err[TALLY_ERRMSG_SIZE] = "";
	write_file(&dir, "tallyd.ini", full_ini, path);
	server_config c;
	config_default(&c);
	cr_assert_eq(config_load_file(&c, path, err), 0, "%s", err);
	cr_expect_str_eq(c.data_dir, "/var/lib/tally");
	cr_expect_str_eq(c.listen, "0.0.0.0:7411");
	cr_expect_str_eq(c.metrics, "[::1]:9411");
	cr_expect_eq(c.frame_bytes_max, 8u << 20);
	cr_expect_eq(c.batch_events_max, 32768u);
	cr_expect_eq(c.connections_max, 4096u);
	cr_expect_eq(c.connections_per_key_max, 512u);
	cr_expect_eq(c.inflight_max, 128u);
	cr_expect_eq(c.idle_timeout_ms, 120000u);
	cr_expect_eq(c.frame_timeout_ms, 5000u);
	cr_expect_eq(c.hello_timeout_ms, 3000u);
	cr_expect_eq(c.pending_bytes_max, 1u << 30);
	cr_expect_eq(c.group_commit_window_us, 200u);
	cr_expect_eq(c.memtable_bytes_max, (uint64_t)640 << 20);
	cr_expect_eq(c.memtable_age_max_s, 0u);
	cr_expect_eq(c.compact_section_rows_max, 33554432u);
	cr_expect_eq(c.query_threads, 4u);
	cr_expect_eq(c.latency_slice_us, 1000u);
	cr_expect_eq(c.log_json, true);
	cr_expect_eq(c.log_level, (uint32_t)LOG_LEVEL_WARN);

	write_file(&dir, "part.ini", "\n[tallyd]\n\nlisten = 10.0.0.1:1\n", path);
	config_default(&c);
	cr_assert_eq(config_load_file(&c, path, err), 0, "%s", err);
	cr_expect_str_eq(c.listen, "10.0.0.1:1");
	cr_expect_str_eq(c.data_dir, "./data");
	cr_expect_eq(c.connections_max, 1024u);

	write_file(&dir, "empty.ini", "", path);
	config_default(&c);
	cr_assert_eq(config_load_file(&c, path, err), 0, "%s", err);
	expect_defaults(&c);
	test_dir_remove(&dir);
}

/* Description: --config is applied first wherever it stands; flags before
 * and after it override the file, the file overrides the defaults, and
 * --log-json=false overrides log_json = true. */
Test(config, flags_override_the_file_in_any_order)
{
	test_dir dir;
	test_dir_make(&dir, "config");
	char path[PATH_MAX], err[TALLY_ERRMSG_SIZE] = "";
	write_file(&dir, "tallyd.ini", full_ini, path);

	server_config c;
	config_default(&c);
	cr_assert_eq(PARSE(&c, err, "--connections-max", "7", "--log-level", "info", "--config", path,
			   "--listen", "127.0.0.2:1", "--log-json=false"),
		     CONFIG_OK, "%s", err);
	cr_expect_eq(c.connections_max, 7u, "flag before --config");
	cr_expect_str_eq(c.listen, "127.0.0.2:1", "flag after --config");
	cr_expect_eq(c.log_json, false);
	cr_expect_eq(c.log_level, (uint32_t)LOG_LEVEL_INFO, "flag over the file's warn");
	cr_expect_str_eq(c.data_dir, "/var/lib/tally", "from the file");
	cr_expect_eq(c.inflight_max, 128u, "from the file");

	config_default(&c);
	char config_arg[PATH_MAX + 16];
	snprintf(config_arg, sizeof(config_arg), "--config=%s", path);
	cr_assert_eq(PARSE(&c, err, "--query-threads", "9", "--data", "/d", config_arg), CONFIG_OK, "%s", err);
	cr_expect_eq(c.query_threads, 9u);
	cr_expect_str_eq(c.data_dir, "/d");
	cr_expect_eq(c.memtable_bytes_max, (uint64_t)640 << 20, "from the file");
	cr_expect_eq(c.log_json, true, "from the file");
	cr_expect_eq(c.log_level, (uint32_t)LOG_LEVEL_WARN, "from the file");
	test_dir_remove(&dir);
}

struct args_case {
	const char *args[6];
	const char *message;
};

/* Description: every usage error is -EINVAL with its exact message, and
 * leaves the configuration untouched. */
Test(config, flag_errors)
{
	static const struct args_case cases[] = {
		{{"--foo"}, "unknown option --foo"},
		{{"--foo=1"}, "unknown option --foo"},
		{{"-x"}, "unknown option -x"},
		{{"--conn", "5"}, "unknown option --conn"},
		{{"--connections", "5"}, "unknown option --connections"},
		{{"--listen"}, "--listen: missing value"},
		{{"--config"}, "--config: missing value"},
		{{"--data", "--listen", "1.2.3.4:5"}, "--data: missing value (before --listen)"},
		{{"--connections-max", "x"}, "--connections-max: not a number: 'x'"},
		{{"--connections-max", ""}, "--connections-max: not a number: ''"},
		{{"--connections-max", "-1"}, "--connections-max: not a number: '-1'"},
		{{"--connections-max", "+5"}, "--connections-max: not a number: '+5'"},
		{{"--connections-max", " 5"}, "--connections-max: not a number: ' 5'"},
		{{"--connections-max", "5 "}, "--connections-max: not a number: '5 '"},
		{{"--connections-max", "0x10"}, "--connections-max: not a number: '0x10'"},
		{{"--connections-max", "1KiB"}, "--connections-max: not a number: '1KiB'"},
		{{"--connections-max", "0"}, "--connections-max: '0' is out of range 1..65536"},
		{{"--connections-max", "65537"}, "--connections-max: '65537' is out of range 1..65536"},
		{{"--connections-max", "99999999999999999999"},
		 "--connections-max: '99999999999999999999' is out of range 1..65536"},
		{{"--connections-per-key-max", "0"}, "--connections-per-key-max: '0' is out of range 1..65536"},
		{{"--batch-events-max", "65537"}, "--batch-events-max: '65537' is out of range 1..65536"},
		{{"--inflight-max", "4097"}, "--inflight-max: '4097' is out of range 1..4096"},
		{{"--idle-timeout-ms", "0"}, "--idle-timeout-ms: '0' is out of range 1..86400000"},
		{{"--frame-timeout-ms", "86400001"}, "--frame-timeout-ms: '86400001' is out of range 1..86400000"},
		{{"--hello-timeout-ms", "0"},
		 "--hello-timeout-ms: '0' is out of range 1..86400000"},
		{{"--hello-timeout-ms", "86400001"},
		 "--hello-timeout-ms: '86400001' is out of range 1..86400000"},
		{{"--group-commit-window-us", "100001"},
		 "--group-commit-window-us: '100001' is out of range 0..100000"},
		{{"--memtable-age-max-s", "604801"}, "--memtable-age-max-s: '604801' is out of range 0..604800"},
		{{"--query-threads", "0"}, "--query-threads: '0' is out of range 1..64"},
		{{"--compact-section-rows-max", "65535"},
		 "--compact-section-rows-max: '65535' is out of range 65536..33554432"},
		{{"--compact-section-rows-max", "33554433"},
		 "--compact-section-rows-max: '33554433' is out of range 65536..33554432"},
		{{"--latency-slice-us", "100001"}, "--latency-slice-us: '100001' is out of range 0..100000"},
		{{"--frame-bytes-max", "1023"}, "--frame-bytes-max: '1023' is out of range 1 KiB..256 MiB"},
		{{"--frame-bytes-max", "257MiB"}, "--frame-bytes-max: '257MiB' is out of range 1 KiB..256 MiB"},
		{{"--frame-bytes-max", "16MB"},
		 "--frame-bytes-max: not a size: '16MB' (bytes, or a number with KiB, MiB or GiB)"},
		{{"--frame-bytes-max", "16 MiB"},
		 "--frame-bytes-max: not a size: '16 MiB' (bytes, or a number with KiB, MiB or GiB)"},
		{{"--frame-bytes-max", "16mib"},
		 "--frame-bytes-max: not a size: '16mib' (bytes, or a number with KiB, MiB or GiB)"},
		{{"--frame-bytes-max", "MiB"},
		 "--frame-bytes-max: not a size: 'MiB' (bytes, or a number with KiB, MiB or GiB)"},
		{{"--pending-bytes-max", "4GiB"}, "--pending-bytes-max: '4GiB' is out of range 1 MiB..2 GiB"},
		{{"--memtable-bytes-max", "18446744073709551615GiB"},
		 "--memtable-bytes-max: '18446744073709551615GiB' is out of range 1 MiB..768 MiB"},
		{{"--memtable-bytes-max", "769MiB"}, "--memtable-bytes-max: '769MiB' is out of range 1 MiB..768 MiB"},
		{{"--query-cache-bytes-max", "1023KiB"},
		 "--query-cache-bytes-max: '1023KiB' is out of range 1 MiB..64 GiB"},
		{{"--query-bytes-max", "65GiB"}, "--query-bytes-max: '65GiB' is out of range 1 MiB..64 GiB"},
		{{"--log-json=maybe"}, "--log-json: not true or false: 'maybe'"},
		{{"--log-json", "true"}, "unexpected argument 'true' (tallyd takes only options)"},
		{{"--log-level", "debug"}, "--log-level: not a log level (error, warn or info): 'debug'"},
		{{"--log-level", "WARN"}, "--log-level: not a log level (error, warn or info): 'WARN'"},
		{{"--log-level="}, "--log-level: not a log level (error, warn or info): ''"},
		{{"--log-level"}, "--log-level: missing value"},
		{{"--help=1"}, "--help: takes no value"},
		{{"serve"}, "unexpected argument 'serve' (tallyd takes only options)"},
		{{"--inflight-max", "3", "extra"}, "unexpected argument 'extra' (tallyd takes only options)"},
		{{"--", "--inflight-max"}, "unexpected argument '--inflight-max' (tallyd takes only options)"},
		{{"-"}, "unexpected argument '-' (tallyd takes only options)"},
		{{"--config", "a", "--config", "b"}, "--config: given twice"},
		{{"--data", ""}, "--data: empty"},
		{{"--listen", "7411"}, "--listen: bad address '7411': no ':port'"},
		{{"--listen", "::1:7411"},
		 "--listen: bad address '::1:7411': an IPv6 address goes in brackets: [::1]:7411"},
		{{"--listen", ":7411"},
		 "--listen: bad address ':7411': empty host (0.0.0.0 or [::] listens on every address)"},
		{{"--listen", "h:70000"}, "--listen: bad address 'h:70000': the port is not a number 0..65535"},
		{{"--metrics", "on"}, "--metrics: bad address 'on': no ':port'"},
		{{"--metrics", "[::1"}, "--metrics: bad address '[::1': '[' without ']'"},
		{{"--pending-bytes-max", "1MiB", "--frame-bytes-max", "2MiB"},
		 "pending_bytes_max (1 MiB) is below frame_bytes_max (2 MiB): a frame of the largest size could never "
		 "be read"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		server_config c, before;
		config_default(&c);
		before = c;
		char err[TALLY_ERRMSG_SIZE];
		int rc = parse(&c, err, cases[i].args);
		cr_expect_eq(rc, -EINVAL, "case %zu (%s): rc %d", i, cases[i].message, rc);
		cr_expect_str_eq(err, cases[i].message, "case %zu", i);
		cr_expect_eq(memcmp(&c, &before, sizeof(c)), 0, "case %zu changed the configuration", i);
	}
}

/* Description: a path longer than PATH_MAX - 1 is refused, one of exactly
 * that length is taken. */
Test(config, data_dir_length)
{
	static char longest[PATH_MAX], too_long[PATH_MAX + 1];
	memset(longest, 'd', PATH_MAX - 1);
	memset(too_long, 'd', PATH_MAX);
	server_config c;
	config_default(&c);
	char err[TALLY_ERRMSG_SIZE], expected[64];
	cr_assert_eq(PARSE(&c, err, "--data", longest), CONFIG_OK, "%s", err);
	cr_expect_eq(strlen(c.data_dir), PATH_MAX - 1);
	cr_expect_eq(PARSE(&c, err, "--data", too_long), -EINVAL);
	snprintf(expected, sizeof(expected), "--data: longer than %d bytes", PATH_MAX - 1);
	cr_expect_str_eq(err, expected);
}

struct ini_case {
	const char *text;
	const char *message; /* after "PATH:" */
};

/* Description: every error inside an INI file is -EINVAL naming path:line
 * and the key, the first error of the file wins, and flags cannot hide a
 * bad file. */
Test(config, ini_errors)
{
	static const struct ini_case cases[] = {
		{"[tallyd]\nlisten = 1.2.3.4:5\nbogus = 1\n", "3: unknown key 'bogus'"},
		{"[tallyd]\n[server]\nlisten = 1.2.3.4:5\n",
		 "3: unknown section [server] (tallyd reads only [tallyd])"},
		{"listen = 1.2.3.4:5\n", "1: 'listen' is outside the [tallyd] section"},
		{"[tallyd]\nconnections_max = x\n", "2: connections_max: not a number: 'x'"},
		{"[tallyd]\nconnections_max = 0\n", "2: connections_max: '0' is out of range 1..65536"},
		{"[tallyd]\nframe_bytes_max = 1 GiB\n",
		 "2: frame_bytes_max: not a size: '1 GiB' (bytes, or a number with KiB, MiB or GiB)"},
		{"[tallyd]\nlog_json = sometimes\n", "2: log_json: not true or false: 'sometimes'"},
		{"[tallyd]\nlog_level = warning\n",
		 "2: log_level: not a log level (error, warn or info): 'warning'"},
		{"[tallyd]\nlisten = nowhere\n", "2: listen: bad address 'nowhere': no ':port'"},
		{"[tallyd]\ndata_dir =\n", "2: data_dir: empty"},
		{"[tallyd]\ninflight_max = 3\n\ninflight_max = 4\n", "4: inflight_max is set twice (first at line 2)"},
		{"[tallyd]\nlisten = 1.2.3.4:5\n  6.7.8.9:10\n", "3: listen is set twice (first at line 2)"},
		{"[tallyd]\nlisten\n", "2: not a [section] or a 'key = value' line"},
		{"[tallyd\nlisten = 1.2.3.4:5\n", "1: not a [section] or a 'key = value' line"},
		{"[tallyd]\nbogus = 1\nlisten\n", "2: unknown key 'bogus'"},
		{"[tallyd]\nlisten\nbogus = 1\n", "2: not a [section] or a 'key = value' line"},
		{"[tallyd]\n--listen = 1.2.3.4:5\n", "2: unknown key '--listen'"},
		{"[tallyd]\nconfig = other.ini\n", "2: unknown key 'config'"},
	};
	test_dir dir;
	test_dir_make(&dir, "config");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char path[PATH_MAX], err[TALLY_ERRMSG_SIZE] = "", expected[TALLY_ERRMSG_SIZE];
		write_file(&dir, "bad.ini", cases[i].text, path);
		snprintf(expected, sizeof(expected), "%s:%s", path, cases[i].message);
		server_config c;
		config_default(&c);
		cr_expect_eq(config_load_file(&c, path, err), -EINVAL, "case %zu", i);
		cr_expect_str_eq(err, expected, "case %zu", i);

		/* Through --config: the same message, the configuration untouched. */
		config_default(&c);
		server_config before = c;
		err[0] = '\0';
		cr_expect_eq(PARSE(&c, err, "--listen", "1.1.1.1:1", "--config", path), -EINVAL, "case %zu", i);
		cr_expect_str_eq(err, expected, "case %zu via --config", i);
		cr_expect_eq(memcmp(&c, &before, sizeof(c)), 0, "case %zu", i);
	}
	test_dir_remove(&dir);
}

/* Description: a line longer than inih's line buffer is refused with its
 * number instead of being cut into a truncated value; a line of 180 bytes
 * is read whole. */
Test(config, ini_long_line)
{
	test_dir dir;
	test_dir_make(&dir, "config");
	char path[PATH_MAX], err[TALLY_ERRMSG_SIZE] = "", text[1024], expected[TALLY_ERRMSG_SIZE];
	char value[800];
	memset(value, 'd', 169);
	value[0] = '/';
	value[169] = '\0';
	snprintf(text, sizeof(text), "[tallyd]\ndata_dir = %s\n", value); /* 180 bytes with the newline */
	write_file(&dir, "ok.ini", text, path);
	server_config c;
	config_default(&c);
	cr_assert_eq(config_load_file(&c, path, err), 0, "%s", err);
	cr_expect_str_eq(c.data_dir, value);

	memset(value, 'd', 700);
	value[700] = '\0';
	snprintf(text, sizeof(text), "[tallyd]\n\ndata_dir = %s\nlisten = x\n", value);
	write_file(&dir, "long.ini", text, path);
	config_default(&c);
	cr_expect_eq(config_load_file(&c, path, err), -EINVAL);
	snprintf(expected, sizeof(expected), "%s:3: line longer than ", path);
	cr_expect_eq(strncmp(err, expected, strlen(expected)), 0, "%s", err);
	cr_expect_neq(strstr(err, "bytes (give a longer value as a flag)"), NULL, "%s", err);
	cr_expect_str_eq(c.data_dir, "./data", "no truncated value was set");
	test_dir_remove(&dir);
}

/* Description: a missing file is -ENOENT with the path and the reason; a
 * directory is a read error (-EISDIR), also through --config. */
Test(config, ini_missing_file_and_read_error)
{
	test_dir dir;
	test_dir_make(&dir, "config");
	char path[PATH_MAX], err[TALLY_ERRMSG_SIZE] = "", expected[TALLY_ERRMSG_SIZE];
	snprintf(path, sizeof(path), "%s/absent.ini", dir.path);
	server_config c;
	config_default(&c);
	cr_expect_eq(config_load_file(&c, path, err), -ENOENT);
	snprintf(expected, sizeof(expected), "%s: cannot open the configuration file: No such file or directory",
		 path);
	cr_expect_str_eq(err, expected);
	cr_expect_eq(PARSE(&c, err, "--config", path), -ENOENT);
	cr_expect_str_eq(err, expected);

	cr_expect_eq(config_load_file(&c, dir.path, err), -EISDIR);
	snprintf(expected, sizeof(expected), "%s: read error: Is a directory", dir.path);
	cr_expect_str_eq(err, expected);
	expect_defaults(&c);
	test_dir_remove(&dir);
}

/* Description: sizes take plain bytes and KiB/MiB/GiB, and the bounds are
 * inclusive. */
Test(config, size_suffixes)
{
	static const struct {
		const char *flag, *value;
		uint64_t bytes;
	} cases[] = {
		{"--frame-bytes-max", "1024", 1024},
		{"--frame-bytes-max", "1KiB", 1024},
		{"--frame-bytes-max", "3KiB", 3072},
		{"--frame-bytes-max", "16MiB", 16u << 20},
		{"--frame-bytes-max", "256MiB", 256u << 20},
		{"--frame-bytes-max", "268435456", 268435456},
		{"--pending-bytes-max", "1MiB", 1u << 20},
		{"--pending-bytes-max", "2GiB", 2u << 30},
		{"--pending-bytes-max", "2048MiB", 2u << 30},
		{"--pending-bytes-max", "1536MiB", 1536u << 20},
		{"--memtable-bytes-max", "768MiB", (uint64_t)768 << 20},
		{"--memtable-bytes-max", "1048576", 1u << 20},
		{"--memtable-bytes-max", "00010MiB", 10u << 20},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		server_config c;
		config_default(&c);
		char err[TALLY_ERRMSG_SIZE];
		/* The smallest frame keeps pending_bytes_max >= frame_bytes_max. */
		const char *frame = strcmp(cases[i].flag, "--frame-bytes-max") == 0 ? cases[i].value : "1KiB";
		int rc;
		if (strcmp(cases[i].flag, "--frame-bytes-max") == 0)
			rc = PARSE(&c, err, "--frame-bytes-max", frame);
		else
			rc = PARSE(&c, err, "--frame-bytes-max", frame, cases[i].flag, cases[i].value);
		cr_assert_eq(rc, CONFIG_OK, "%s %s: %s", cases[i].flag, cases[i].value, err);
		uint64_t got = strcmp(cases[i].flag, "--frame-bytes-max") == 0	  ? c.frame_bytes_max
			       : strcmp(cases[i].flag, "--pending-bytes-max") == 0 ? c.pending_bytes_max
										   : c.memtable_bytes_max;
		cr_expect_eq(got, cases[i].bytes, "%s %s: %lu", cases[i].flag, cases[i].value, (unsigned long)got);
	}
}

/* Description: pending_bytes_max equal to frame_bytes_max is allowed; the
 * check also runs on a file's values. */
Test(config, pending_at_least_one_frame)
{
	server_config c;
	config_default(&c);
	char err[TALLY_ERRMSG_SIZE];
	cr_expect_eq(PARSE(&c, err, "--frame-bytes-max", "8MiB", "--pending-bytes-max", "8MiB"), CONFIG_OK, "%s",
		     err);
	cr_expect_eq(c.pending_bytes_max, 8u << 20);

	test_dir dir;
	test_dir_make(&dir, "config");
	char path[PATH_MAX];
	write_file(&dir, "t.ini", "[tallyd]\nframe_bytes_max = 256MiB\npending_bytes_max = 128MiB\n", path);
	config_default(&c);
	cr_expect_eq(config_load_file(&c, path, err), 0, "%s: the file alone is not checked", err);
	cr_expect_eq(config_check(&c, err), -EINVAL);
	cr_expect_str_eq(err, "pending_bytes_max (128 MiB) is below frame_bytes_max (256 MiB): a frame of the "
			      "largest size could never be read");
	config_default(&c);
	cr_expect_eq(PARSE(&c, err, "--config", path), -EINVAL);
	cr_expect_eq(PARSE(&c, err, "--config", path, "--pending-bytes-max", "256MiB"), CONFIG_OK, "%s", err);
	test_dir_remove(&dir);
}

/* Description: host:port and [v6]:port split into host and port; every bad
 * form and a part too long for its buffer are -EINVAL. */
Test(config, split_addr)
{
	static const struct {
		const char *addr, *host, *port;
	} good[] = {
		{"127.0.0.1:7411", "127.0.0.1", "7411"},
		{"[::1]:7411", "::1", "7411"},
		{"[::]:0", "::", "0"},
		{"localhost:65535", "localhost", "65535"},
		{"[fe80::1%eth0]:80", "fe80::1%eth0", "80"},
		{"0.0.0.0:00080", "0.0.0.0", "00080"},
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char host[CONFIG_ADDR_SIZE] = "?", port[8] = "?";
		cr_expect_eq(config_split_addr(good[i].addr, host, sizeof(host), port, sizeof(port)), 0, "%s",
			     good[i].addr);
		cr_expect_str_eq(host, good[i].host, "%s", good[i].addr);
		cr_expect_str_eq(port, good[i].port, "%s", good[i].addr);
	}
	static const char *const bad[] = {
		"", ":", ":7411", "host", "host:", "::1:7411", "::1", "[::1]", "[::1]7411", "[::1]:", "[]:7411",
		"[::1:7411", "h:65536", "h:-1", "h:+1", "h:123456", "h:7a", "h:7 ", "h :7", "a]b:7", "[a[b]:7",
		"[::1]:7:8",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char host[CONFIG_ADDR_SIZE], port[8];
		cr_expect_eq(config_split_addr(bad[i], host, sizeof(host), port, sizeof(port)), -EINVAL, "'%s'",
			     bad[i]);
	}
	char host[10], port[5];
	cr_expect_eq(config_split_addr("123456789:1", host, sizeof(host), port, sizeof(port)), 0);
	cr_expect_eq(config_split_addr("1234567890:1", host, sizeof(host), port, sizeof(port)), -EINVAL);
	cr_expect_eq(config_split_addr("h:1234", host, sizeof(host), port, sizeof(port)), 0);
	cr_expect_eq(config_split_addr("h:12345", host, sizeof(host), port, sizeof(port)), -EINVAL);
}

/* Description: the usage text names every flag with its default and range. */
Test(config, usage_lists_every_flag)
{
	char *text = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&text, &size);
	cr_assert_not_null(out);
	config_usage(out);
	cr_assert_eq(fclose(out), 0);
	static const char *const expected[] = {
		"--config FILE",
		"--data DIR ",
		"(default ./data)",
		"--listen ADDR ",
		"(default 127.0.0.1:7411)",
		"--metrics ADDR|off ",
		"(default 127.0.0.1:9411)",
		"--frame-bytes-max SIZE ",
		"(default 16 MiB; 1 KiB..256 MiB)",
		"--batch-events-max N ",
		"(default 8192; 1..65536)",
		"--connections-max N ",
		"(default 1024; 1..65536)",
		"--connections-per-key-max N ",
		"(default 256; 1..65536)",
		"--inflight-max N ",
		"(default 64; 1..4096)",
		"--idle-timeout-ms MS ",
		"(default 300000; 1..86400000)",
		"--frame-timeout-ms MS ",
		"(default 10000; 1..86400000)",
		"--hello-timeout-ms MS ",
		"a connection must complete Hello within this (default 10000; 1..86400000)",
		"--pending-bytes-max SIZE ",
		"(default 512 MiB; 1 MiB..2 GiB)",
		"--group-commit-window-us US ",
		"(default 0; 0..100000)",
		"--memtable-bytes-max SIZE ",
		"(default 512 MiB; 1 MiB..768 MiB)",
		"--query-cache-bytes-max SIZE ",
		"least recently used out first (default 256 MiB; 1 MiB..64 GiB)",
		"--query-bytes-max SIZE ",
		"may build before it is refused (default 2 GiB; 1 MiB..64 GiB)",
		"--query-threads N ",
		"(default 2; 1..64)",
		"--log-json[=BOOL]",
		"(default false)",
		"--log-level LEVEL ",
		"least severe lines logged: error, warn or info (default info)",
		"--help",
		"--version",
	};
	for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
		cr_expect_neq(strstr(text, expected[i]), NULL, "usage lacks '%s':\n%s", expected[i], text);
	free(text);
}

/* Description: the nightly export's settings: --export-pg keeps its URL,
 * --export-at is HH:MM stored as minutes after midnight (default 00:30),
 * from flags and from the INI file; a time that is not HH:MM (two digits
 * each: no sign, no space) is refused naming the flag. */
Test(config, export_schedule)
{
	server_config c;
	char err[TALLY_ERRMSG_SIZE] = "";
	config_default(&c);
	const char *ok[] = {"--export-pg", "postgresql://exporter@db/billing", "--export-at", "23:59", NULL};
	cr_assert_eq(parse(&c, err, ok), CONFIG_OK, "%s", err);
	cr_expect_str_eq(c.export_pg, "postgresql://exporter@db/billing");
	cr_expect_eq(c.export_at_minute, 23 * 60 + 59);
	config_default(&c);
	const char *none[] = {NULL};
	cr_assert_eq(parse(&c, err, none), CONFIG_OK, "%s", err);
	cr_expect_str_eq(c.export_pg, "");
	cr_expect_eq(c.export_at_minute, 30);
	const char *bad[] = {"24:00", "7:30", "07:60", "0730", "07:30:00", "ab:cd",
			     "", "+1:30", "-0:30", "01:+5", "01:-0", " 1:30"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *args[] = {"--export-at", bad[i], NULL};
		cr_expect_lt(parse(&c, err, args), 0, "%s accepted", bad[i]);
		char want[128];
		snprintf(want, sizeof(want), "--export-at: not a time of day HH:MM (UTC): '%s'", bad[i]);
		if (bad[i][0])
			cr_expect_str_eq(err, want);
	}
}

/* Description: the settings tallyd hands to the engine arrive in its
 * options (server_store_options): each set away from its default, the
 * rest of the options the engine's defaults. */
Test(config, engine_settings_become_the_store_options)
{
	server_config c;
	config_default(&c);
	char err[TALLY_ERRMSG_SIZE];
	int rc = PARSE(&c, err, "--group-commit-window-us", "700", "--memtable-bytes-max", "3MiB",
		       "--memtable-age-max-s", "90", "--query-cache-bytes-max", "5MiB",
		       "--query-bytes-max", "7MiB", "--compact-section-rows-max", "100000");
	cr_assert_eq(rc, CONFIG_OK, "%s", err);
	tally_options o, defaults;
	server_store_options(&c, &o);
	tally_options_default(&defaults);
	cr_expect_eq(o.group_commit_window_us, 700u);
	cr_expect_eq(o.memtable_bytes_max, (uint64_t)3 << 20);
	cr_expect_eq(o.memtable_age_max_us, INT64_C(90000000));
	cr_expect_eq(o.query_cache_bytes_max, (uint64_t)5 << 20);
	cr_expect_eq(o.query_bytes_max, (uint64_t)7 << 20);
	cr_expect_eq(o.compact_section_rows_max, 100000u);
	/* Everything else as tally_options_default leaves it. */
	o.group_commit_window_us = defaults.group_commit_window_us;
	o.memtable_bytes_max = defaults.memtable_bytes_max;
	o.memtable_age_max_us = defaults.memtable_age_max_us;
	o.query_cache_bytes_max = defaults.query_cache_bytes_max;
	o.query_bytes_max = defaults.query_bytes_max;
	o.compact_section_rows_max = defaults.compact_section_rows_max;
	cr_expect_eq(memcmp(&o, &defaults, sizeof(o)), 0);
}
