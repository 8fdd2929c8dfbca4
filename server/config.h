/*
 * config.h — tallyd's configuration: defaults, an INI file (inih) and
 * command-line flags (getopt_long), in that order of precedence, lowest first.
 *
 * Every setting has one name in two spellings: the long flag (--frame-bytes-max)
 * and the INI key in section [tallyd] (frame_bytes_max). The only exception
 * is the data directory: --data on the command line, data_dir in the file.
 * Every number has a named range (CONFIG_*_MIN / _MAX below) checked when it
 * is read, so the server never starts with a limit it cannot honour;
 * docs/operations.md ("Configuration") is the operator's reference and
 * lists the exact error messages.
 *
 * Nothing here touches the network or the data directory: addresses are
 * checked for form (host:port, [v6]:port) only, and resolved by whoever
 * binds them.
 */
#ifndef TALLY_SERVER_CONFIG_H
#define TALLY_SERVER_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tally.h"

#define CONFIG_ADDR_SIZE 256
#define CONFIG_PG_SIZE 1024
#define CONFIG_DEFAULT_EXPORT_AT_MINUTE 30u
#define CONFIG_KIB 1024u
#define CONFIG_MIB (1024u * 1024u)
#define CONFIG_GIB (1024u * 1024u * 1024u)

/* Defaults (docs/protocol.md "Limits" announces the wire-visible ones). */
#define CONFIG_DEFAULT_DATA_DIR "./data"
#define CONFIG_DEFAULT_LISTEN "127.0.0.1:7411"
#define CONFIG_DEFAULT_METRICS "127.0.0.1:9411"
#define CONFIG_DEFAULT_FRAME_BYTES_MAX (16u * CONFIG_MIB)
/* A batch is applied in one hold of the store lock, which queries wait
 * for too: 65,536 events held it 36-42 ms (80-157 ms at worst), 8,192
 * events 4-5 ms (13-17 ms), at the same ingest rate (docs/benchmarks.md,
 * thirty-sixth measurement). Up to TALLY_BATCH_EVENTS_MAX if asked. */
#define CONFIG_DEFAULT_BATCH_EVENTS_MAX 8192u
#define CONFIG_DEFAULT_CONNECTIONS_MAX 1024u
#define CONFIG_DEFAULT_CONNECTIONS_PER_KEY_MAX 256u
#define CONFIG_DEFAULT_INFLIGHT_MAX 64u
#define CONFIG_DEFAULT_IDLE_TIMEOUT_MS 300000u
#define CONFIG_DEFAULT_FRAME_TIMEOUT_MS 10000u
/* A connection that has not completed Hello within this is closed: an
 * unauthenticated client holds a connection slot for at most this long,
 * whatever it sends (PostgreSQL's authentication_timeout; server.c). */
#define CONFIG_DEFAULT_HELLO_TIMEOUT_MS 10000u
#define CONFIG_DEFAULT_PENDING_BYTES_MAX (512u * CONFIG_MIB)
#define CONFIG_DEFAULT_GROUP_COMMIT_WINDOW_US 0u
#define CONFIG_DEFAULT_MEMTABLE_BYTES_MAX ((uint64_t)512 * CONFIG_MIB)
#define CONFIG_DEFAULT_QUERY_CACHE_BYTES_MAX ((uint64_t)256 * CONFIG_MIB)
#define CONFIG_DEFAULT_QUERY_BYTES_MAX ((uint64_t)2048 * CONFIG_MIB)
#define CONFIG_DEFAULT_MEMTABLE_AGE_MAX_S 3600u
#define CONFIG_DEFAULT_QUERY_THREADS 2u
#define CONFIG_DEFAULT_LATENCY_SLICE_US 100u
/* A compaction cuts a tenant of more rows than this by time into sections
 * of about this many rows (engine option compact_section_rows_max). */
#define CONFIG_DEFAULT_COMPACT_SECTION_ROWS_MAX TALLY_COMPACT_SECTION_ROWS_DEFAULT

/* Ranges, inclusive. A frame must hold at least a Hello and a small batch;
 * above 256 MiB one request could hold a large share of the server's RAM.
 * Connection tables are allocated up front at connections_max entries,
 * hence a ceiling. pending_bytes_max must also be at least frame_bytes_max
 * (config_check): otherwise a frame of the largest allowed size could never
 * be read. Timeouts are at least 1 ms (tests use short ones) and at most a
 * day. The group-commit window delays every ingest ack, so it is capped at
 * 100 ms. */
#define CONFIG_FRAME_BYTES_MIN CONFIG_KIB
#define CONFIG_FRAME_BYTES_MAX (256u * CONFIG_MIB)
#define CONFIG_BATCH_EVENTS_MIN 1u
#define CONFIG_BATCH_EVENTS_MAX TALLY_BATCH_EVENTS_MAX
#define CONFIG_CONNECTIONS_MIN 1u
#define CONFIG_CONNECTIONS_MAX 65536u
#define CONFIG_INFLIGHT_MIN 1u
#define CONFIG_INFLIGHT_MAX 4096u
#define CONFIG_TIMEOUT_MS_MIN 1u
#define CONFIG_TIMEOUT_MS_MAX 86400000u /* 24 hours */
#define CONFIG_PENDING_BYTES_MIN CONFIG_MIB
#define CONFIG_PENDING_BYTES_MAX (2u * CONFIG_GIB)
#define CONFIG_GROUP_COMMIT_WINDOW_US_MAX 100000u
#define CONFIG_MEMTABLE_BYTES_MIN ((uint64_t)CONFIG_MIB)
#define CONFIG_MEMTABLE_BYTES_MAX TALLY_MEMTABLE_BYTES_MAX_LIMIT /* 768 MiB */
#define CONFIG_QUERY_CACHE_BYTES_MIN ((uint64_t)CONFIG_MIB)
#define CONFIG_QUERY_CACHE_BYTES_MAX ((uint64_t)64 * CONFIG_GIB)
#define CONFIG_QUERY_BYTES_MIN ((uint64_t)CONFIG_MIB)
#define CONFIG_QUERY_BYTES_MAX ((uint64_t)64 * CONFIG_GIB)
#define CONFIG_MEMTABLE_AGE_MAX_S_MAX 604800u /* a week */
#define CONFIG_QUERY_THREADS_MIN 1u
#define CONFIG_QUERY_THREADS_MAX 64u
/* A cut falls between row groups (at most 65,536 rows each), so a smaller
 * limit cuts no finer; a section of 33,554,432 rows holds about 2 GiB of
 * 62-byte rows plus up to 2 GiB of 64-byte event ids in a compaction's
 * RAM, per thread (docs/architecture.md, "Large tenants"). */
#define CONFIG_COMPACT_SECTION_ROWS_MIN 65536u
#define CONFIG_COMPACT_SECTION_ROWS_MAX 33554432u
/* The kernel takes slices of 0.1 to 100 ms (it clamps others). */
#define CONFIG_LATENCY_SLICE_US_MAX 100000u

typedef struct server_config {
	char data_dir[PATH_MAX];          /* "./data" */
	char listen[CONFIG_ADDR_SIZE];    /* "127.0.0.1:7411"; "[::1]:7411" form accepted for IPv6; port 0: any free port */
	char metrics[CONFIG_ADDR_SIZE];   /* "127.0.0.1:9411"; "off" disables the metrics endpoint */
	uint32_t frame_bytes_max;         /* 16 MiB; 1 KiB .. 256 MiB */
	uint32_t batch_events_max;        /* 8192; 1 .. TALLY_BATCH_EVENTS_MAX (65536, engine/tally.h) */
	uint32_t connections_max;         /* 1024 total */
	uint32_t connections_per_key_max; /* 256: authenticated connections per API key */
	uint32_t inflight_max;            /* 64 requests in flight per connection */
	uint32_t idle_timeout_ms;         /* 300000: a connection with nothing in flight and no bytes for this long is closed */
	uint32_t frame_timeout_ms;        /* 10000: a frame that has started must complete within this (slowloris) */
	uint32_t hello_timeout_ms;        /* 10000: Hello must be done within this of the accept */
	uint32_t pending_bytes_max;       /* 512 MiB: request bytes accepted but not yet answered, server-wide; above it the server stops reading (backpressure) */
	uint32_t group_commit_window_us;  /* 0 */
	uint64_t memtable_bytes_max;      /* 512 MiB (engine option) */
	uint32_t memtable_age_max_s;      /* 3600: flush once the oldest unflushed event is this old (engine option memtable_age_max_us); 0 = no age limit */
	uint64_t query_cache_bytes_max;   /* 256 MiB: decoded rollup pages kept for queries (engine option) */
	uint64_t query_bytes_max;         /* 2 GiB: memory one query may build (engine option) */
	uint32_t compact_section_rows_max; /* 4,194,304: a compaction cuts a larger tenant by time
					    * (engine option) */
	uint32_t query_threads;           /* 2 */
	uint32_t latency_slice_us;        /* 100: scheduler slice of the loop and query threads (server/latency.c); 0 = kernel default */
	bool log_json;                    /* false: one human line per log record on stderr */
	uint32_t log_level;               /* LOG_LEVEL_INFO (server/log.h): lines less severe are dropped */
	char export_pg[CONFIG_PG_SIZE];   /* PostgreSQL URL of the nightly billing export; "" = no schedule */
	uint32_t export_at_minute;        /* when it runs: minutes after midnight UTC (--export-at HH:MM), default 00:30 */
	/* Not a setting: the store's and the server's files go through this
	 * (NULL, the default: tally_io_default). Tests hand in one that
	 * injects failures (tests/support/fault_io.h). */
	const tally_io *io;
} server_config;

/* config_parse_args results other than errors. */
enum config_result {
	CONFIG_OK = 0,
	CONFIG_EXIT_HELP = 1,    /* --help: print config_usage to stdout, exit 0 */
	CONFIG_EXIT_VERSION = 2, /* --version: print the version, exit 0 */
};

/* Fills *c with the defaults above. */
void config_default(server_config *c);

/*
 * Loads the INI file at path over *c: one section [tallyd] with keys named
 * like the long flags with '_' for '-' (data_dir for --data). Each key may
 * appear once. Comments start a line with ';' or '#', or follow a value
 * after " ;". Lines are at most as long as inih reads (about 200 bytes).
 *
 * Returns 0; -ENOENT (or another -errno) when the file cannot be opened or
 * read; -EINVAL for anything wrong inside it: an unknown section or key, a
 * key outside [tallyd], a key set twice, a bad number, a value out of range,
 * a malformed line, a line too long. errmsg (TALLY_ERRMSG_SIZE, may be NULL)
 * then names path:line and the key. On any error *c may hold the settings
 * read before it: load into a copy when that matters (config_parse_args
 * does). Cross-setting checks (config_check) are left to the caller, since
 * flags may still change the values.
 */
int config_load_file(server_config *c, const char *path, char *errmsg);

/*
 * Parses argv (argv[0] is the program's name) over *c, normally filled by
 * config_default: --config FILE is applied first wherever it appears, then
 * every other flag overrides it, then config_check runs on the result.
 * Flags are written in full (no abbreviations); values follow as the next
 * argument or after '=' (--listen=ADDR). --log-json alone means true;
 * --log-json=false turns off a log_json = true from the file. Sizes accept
 * a plain number of bytes or a KiB/MiB/GiB suffix ("16MiB").
 *
 * Returns CONFIG_OK (*c holds the result), CONFIG_EXIT_HELP, CONFIG_EXIT_VERSION
 * (*c unchanged), or a negative code with errmsg naming the flag or the
 * file:line (*c unchanged): -EINVAL for a usage error ("unknown option --foo",
 * "--connections-max: not a number: 'x'", "unexpected argument 'x'"), or
 * config_load_file's codes. Not thread-safe: getopt_long's state is global.
 * May be called again (it resets getopt with optind = 0).
 */
int config_parse_args(server_config *c, int argc, char **argv, char *errmsg);

/* Checks the relations between settings that each range alone cannot:
 * pending_bytes_max >= frame_bytes_max. 0 or -EINVAL with errmsg. */
int config_check(const server_config *c, char *errmsg);

/* Prints the usage text, every flag with its default and range. */
void config_usage(FILE *out);

/*
 * Splits "host:port" or "[v6]:port" into host (without the brackets) and
 * port, NUL-terminated. The host must not be empty, an IPv6 address must be
 * in brackets, the port is 1..5 decimal digits, 0..65535 (0: any free port).
 * Returns 0, or -EINVAL for any other form or when a part does not fit its
 * buffer (host and port are then unspecified).
 */
int config_split_addr(const char *addr, char *host, size_t host_size, char *port, size_t port_size);

#endif /* TALLY_SERVER_CONFIG_H */
