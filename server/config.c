/*
 * config.c — tallyd's configuration (config.h).
 *
 * One table, `options` below, describes every setting once: its flag, its
 * INI key, the field it fills, its kind and its range. The flag parser, the
 * INI handler and the usage text all read it, so a setting cannot be
 * accepted in one place and unknown in another, and its range is checked
 * the same way whichever way it arrives.
 *
 * Precedence: defaults < the --config file < flags. config_parse_args reads
 * every flag in one getopt_long pass into a scratch configuration, noting
 * which settings were given; then it loads the file over the caller's
 * configuration and copies the given settings over that. Errors are
 * therefore reported in argv order, before the file is even opened, and a
 * failed call leaves the caller's configuration as it was.
 *
 * inih's line numbers: inih hands the handler no line number in the build
 * Debian ships (INI_HANDLER_LINENO 0), so the file is fed through our own
 * reader (ini_parse_stream) that counts the lines it hands over. It reads
 * whole lines itself, so a line longer than inih's buffer is refused here
 * instead of being split by inih into a truncated value and a stray line.
 */
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "config.h"
#include "fail.h"
#include "log.h"

enum option_kind {
	KIND_PATH,          /* a non-empty string that fits the field */
	KIND_ADDR,          /* host:port or [v6]:port */
	KIND_ADDR_OR_OFF,   /* the same, or "off" */
	KIND_NUMBER,        /* decimal digits */
	KIND_SIZE,          /* decimal digits, optionally KiB / MiB / GiB */
	KIND_BOOL,          /* true / false (also yes / no, on / off, 1 / 0) */
	KIND_TIME_OF_DAY,   /* HH:MM, stored as minutes after midnight (uint32) */
	KIND_LOG_LEVEL,     /* a name of log_level_names, stored as its log_level (uint32) */
};

/* getopt_long values of the options that are not settings; settings use
 * OPTION_FIRST + their index in `options`. */
enum {
	OPTION_CONFIG = 256,
	OPTION_HELP,
	OPTION_VERSION,
	OPTION_FIRST,
};

typedef struct option_spec {
	const char *flag;       /* without the leading "--" */
	const char *key;        /* the INI key */
	enum option_kind kind;
	size_t offset, size;    /* the field in server_config */
	uint64_t min, max;      /* KIND_NUMBER, KIND_SIZE */
	const char *value_name; /* in the usage text */
	const char *help;
} option_spec;

#define FIELD(name) offsetof(server_config, name), sizeof(((server_config *)0)->name)

static const option_spec options[] = {
	{"data", "data_dir", KIND_PATH, FIELD(data_dir), 0, 0, "DIR",
	 "data directory, created on first start"},
	{"listen", "listen", KIND_ADDR, FIELD(listen), 0, 0, "ADDR",
	 "protocol address, host:port or [v6]:port"},
	{"metrics", "metrics", KIND_ADDR_OR_OFF, FIELD(metrics), 0, 0, "ADDR|off",
	 "Prometheus /metrics address, or off"},
	{"frame-bytes-max", "frame_bytes_max", KIND_SIZE, FIELD(frame_bytes_max), CONFIG_FRAME_BYTES_MIN,
	 CONFIG_FRAME_BYTES_MAX, "SIZE", "largest request frame"},
	{"batch-events-max", "batch_events_max", KIND_NUMBER, FIELD(batch_events_max),
	 CONFIG_BATCH_EVENTS_MIN, CONFIG_BATCH_EVENTS_MAX, "N", "most events in one ingest batch"},
	{"connections-max", "connections_max", KIND_NUMBER, FIELD(connections_max), CONFIG_CONNECTIONS_MIN,
	 CONFIG_CONNECTIONS_MAX, "N", "open connections, all keys together"},
	{"connections-per-key-max", "connections_per_key_max", KIND_NUMBER, FIELD(connections_per_key_max),
	 CONFIG_CONNECTIONS_MIN, CONFIG_CONNECTIONS_MAX, "N", "authenticated connections per API key"},
	{"inflight-max", "inflight_max", KIND_NUMBER, FIELD(inflight_max), CONFIG_INFLIGHT_MIN,
	 CONFIG_INFLIGHT_MAX, "N", "requests in flight per connection"},
	{"idle-timeout-ms", "idle_timeout_ms", KIND_NUMBER, FIELD(idle_timeout_ms), CONFIG_TIMEOUT_MS_MIN,
	 CONFIG_TIMEOUT_MS_MAX, "MS", "close a connection idle this long"},
	{"frame-timeout-ms", "frame_timeout_ms", KIND_NUMBER, FIELD(frame_timeout_ms), CONFIG_TIMEOUT_MS_MIN,
	 CONFIG_TIMEOUT_MS_MAX, "MS", "a started frame must arrive within this"},
	{"hello-timeout-ms", "hello_timeout_ms", KIND_NUMBER, FIELD(hello_timeout_ms),
	 CONFIG_TIMEOUT_MS_MIN, CONFIG_TIMEOUT_MS_MAX, "MS",
	 "a connection must complete Hello within this"},
	{"pending-bytes-max", "pending_bytes_max", KIND_SIZE, FIELD(pending_bytes_max),
	 CONFIG_PENDING_BYTES_MIN, CONFIG_PENDING_BYTES_MAX, "SIZE",
	 "unanswered request bytes, server-wide, before reading pauses"},
	{"group-commit-window-us", "group_commit_window_us", KIND_NUMBER, FIELD(group_commit_window_us), 0,
	 CONFIG_GROUP_COMMIT_WINDOW_US_MAX, "US", "extra wait to gather WAL writes into one fsync"},
	{"memtable-bytes-max", "memtable_bytes_max", KIND_SIZE, FIELD(memtable_bytes_max),
	 CONFIG_MEMTABLE_BYTES_MIN, CONFIG_MEMTABLE_BYTES_MAX, "SIZE", "memtable size that starts a flush"},
	{"memtable-age-max-s", "memtable_age_max_s", KIND_NUMBER, FIELD(memtable_age_max_s), 0,
	 CONFIG_MEMTABLE_AGE_MAX_S_MAX, "S", "flush once the oldest unflushed event is this old; 0: never by age"},
	{"query-cache-bytes-max", "query_cache_bytes_max", KIND_SIZE, FIELD(query_cache_bytes_max),
	 CONFIG_QUERY_CACHE_BYTES_MIN, CONFIG_QUERY_CACHE_BYTES_MAX, "SIZE",
	 "decoded rollup pages kept for queries, least recently used out first"},
	{"query-bytes-max", "query_bytes_max", KIND_SIZE, FIELD(query_bytes_max),
	 CONFIG_QUERY_BYTES_MIN, CONFIG_QUERY_BYTES_MAX, "SIZE",
	 "memory one query or billing export page may build before it is refused"},
	{"compact-section-rows-max", "compact_section_rows_max", KIND_NUMBER,
	 FIELD(compact_section_rows_max),
	 CONFIG_COMPACT_SECTION_ROWS_MIN, CONFIG_COMPACT_SECTION_ROWS_MAX, "N",
	 "a compaction cuts a tenant of more rows by time into sections of about this many"},
	{"query-threads", "query_threads", KIND_NUMBER, FIELD(query_threads), CONFIG_QUERY_THREADS_MIN,
	 CONFIG_QUERY_THREADS_MAX, "N", "threads answering queries and listings"},
	{"latency-slice-us", "latency_slice_us", KIND_NUMBER, FIELD(latency_slice_us), 0,
	 CONFIG_LATENCY_SLICE_US_MAX, "US",
	 "scheduler slice of the loop and query threads (Linux 6.12+; 0: the kernel's default)"},
	{"log-json", "log_json", KIND_BOOL, FIELD(log_json), 0, 0, NULL,
	 "log one JSON object per line (--log-json=false: human lines)"},
	{"log-level", "log_level", KIND_LOG_LEVEL, FIELD(log_level), 0, 0, "LEVEL",
	 "least severe lines logged: error, warn or info"},
	{"export-pg", "export_pg", KIND_PATH, FIELD(export_pg), 0, 0, "URL",
	 "PostgreSQL of the nightly billing export (docs/billing.md); none: no schedule"},
	{"export-at", "export_at", KIND_TIME_OF_DAY, FIELD(export_at_minute), 0, 0, "HH:MM",
	 "when the nightly export runs, UTC"},
};

#define OPTION_COUNT (sizeof(options) / sizeof(options[0]))

/* getopt_long's table: the settings, then --config, --help, --version, then
 * the terminator. */
#define LONG_OPTION_COUNT (OPTION_COUNT + 4)

void config_default(server_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->data_dir, sizeof(c->data_dir), "%s", CONFIG_DEFAULT_DATA_DIR);
	snprintf(c->listen, sizeof(c->listen), "%s", CONFIG_DEFAULT_LISTEN);
	snprintf(c->metrics, sizeof(c->metrics), "%s", CONFIG_DEFAULT_METRICS);
	c->frame_bytes_max = CONFIG_DEFAULT_FRAME_BYTES_MAX;
	c->batch_events_max = CONFIG_DEFAULT_BATCH_EVENTS_MAX;
	c->connections_max = CONFIG_DEFAULT_CONNECTIONS_MAX;
	c->connections_per_key_max = CONFIG_DEFAULT_CONNECTIONS_PER_KEY_MAX;
	c->inflight_max = CONFIG_DEFAULT_INFLIGHT_MAX;
	c->idle_timeout_ms = CONFIG_DEFAULT_IDLE_TIMEOUT_MS;
	c->frame_timeout_ms = CONFIG_DEFAULT_FRAME_TIMEOUT_MS;
	c->hello_timeout_ms = CONFIG_DEFAULT_HELLO_TIMEOUT_MS;
	c->pending_bytes_max = CONFIG_DEFAULT_PENDING_BYTES_MAX;
	c->group_commit_window_us = CONFIG_DEFAULT_GROUP_COMMIT_WINDOW_US;
	c->memtable_bytes_max = CONFIG_DEFAULT_MEMTABLE_BYTES_MAX;
	c->memtable_age_max_s = CONFIG_DEFAULT_MEMTABLE_AGE_MAX_S;
	c->query_cache_bytes_max = CONFIG_DEFAULT_QUERY_CACHE_BYTES_MAX;
	c->query_bytes_max = CONFIG_DEFAULT_QUERY_BYTES_MAX;
	c->compact_section_rows_max = CONFIG_DEFAULT_COMPACT_SECTION_ROWS_MAX;
	c->query_threads = CONFIG_DEFAULT_QUERY_THREADS;
	c->latency_slice_us = CONFIG_DEFAULT_LATENCY_SLICE_US;
	c->log_json = false;
	c->log_level = LOG_LEVEL_INFO;
	c->export_at_minute = CONFIG_DEFAULT_EXPORT_AT_MINUTE;
}

/* ---- Addresses ---------------------------------------------------------- */

/* The form of an address; *why says what is wrong with it. */
static int split_addr(const char *addr, char *host, size_t host_size, char *port, size_t port_size,
		      const char **why)
{
	const char *host_start, *host_end, *port_start;
	if (addr[0] == '[') {
		host_start = addr + 1;
		host_end = strchr(host_start, ']');
		if (!host_end) {
			*why = "'[' without ']'";
			return -EINVAL;
		}
		if (host_end[1] != ':') {
			*why = "no ':port' after the bracketed address";
			return -EINVAL;
		}
		port_start = host_end + 2;
	} else {
		host_start = addr;
		host_end = strrchr(addr, ':');
		if (!host_end) {
			*why = "no ':port'";
			return -EINVAL;
		}
		if (memchr(addr, ':', (size_t)(host_end - addr))) {
			*why = "an IPv6 address goes in brackets: [::1]:7411";
			return -EINVAL;
		}
		port_start = host_end + 1;
	}
	size_t host_len = (size_t)(host_end - host_start);
	if (host_len == 0) {
		*why = "empty host (0.0.0.0 or [::] listens on every address)";
		return -EINVAL;
	}
	for (const char *p = host_start; p < host_end; p++) {
		if (*p <= ' ' || *p == '[' || *p == ']' || *p == 0x7f) {
			*why = "the host holds a space, a control character or a bracket";
			return -EINVAL;
		}
	}
	size_t port_len = strlen(port_start);
	if (port_len == 0 || port_len > 5 || strspn(port_start, "0123456789") != port_len ||
	    strtoul(port_start, NULL, 10) > 65535) {
		*why = "the port is not a number 0..65535";
		return -EINVAL;
	}
	if (host_len >= host_size || port_len >= port_size) {
		*why = "too long";
		return -EINVAL;
	}
	memcpy(host, host_start, host_len);
	host[host_len] = '\0';
	memcpy(port, port_start, port_len + 1);
	return 0;
}

int config_split_addr(const char *addr, char *host, size_t host_size, char *port, size_t port_size)
{
	const char *why;
	return split_addr(addr, host, host_size, port, port_size, &why);
}

/* ---- Values ------------------------------------------------------------- */

/* "16 MiB" when n is a whole number of KiB/MiB/GiB, else "n". */
static void format_size(char *out, size_t out_size, uint64_t n)
{
	static const struct {
		uint64_t unit;
		const char *name;
	} units[] = {{CONFIG_GIB, "GiB"}, {CONFIG_MIB, "MiB"}, {CONFIG_KIB, "KiB"}};
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (n >= units[i].unit && n % units[i].unit == 0) {
			snprintf(out, out_size, "%" PRIu64 " %s", n / units[i].unit, units[i].name);
			return;
		}
	}
	snprintf(out, out_size, "%" PRIu64, n);
}

/* Decimal digits only, no sign, no spaces; *end is set past the digits.
 * 0, or -ERANGE past UINT64_MAX, or -EINVAL when there is no digit. */
static int parse_digits(const char *text, uint64_t *value, const char **end)
{
	uint64_t n = 0;
	const char *p = text;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned digit = (unsigned)(*p - '0');
		if (n > (UINT64_MAX - digit) / 10)
			return -ERANGE;
		n = n * 10 + digit;
	}
	*end = p;
	*value = n;
	return p == text ? -EINVAL : 0;
}

/* Sets o's field of c from text. where is the message's prefix ("--listen"
 * or "tallyd.ini:3: listen"). */
static int option_set(const option_spec *o, server_config *c, const char *text, const char *where,
		      char *errmsg)
{
	char *field = (char *)c + o->offset;
	switch (o->kind) {
	case KIND_PATH:
		if (!text[0])
			return server_fail(errmsg, -EINVAL, "%s: empty", where);
		if (strlen(text) >= o->size)
			return server_fail(errmsg, -EINVAL, "%s: longer than %zu bytes", where, o->size - 1);
		memcpy(field, text, strlen(text) + 1);
		return 0;
	case KIND_ADDR:
	case KIND_ADDR_OR_OFF: {
		char host[CONFIG_ADDR_SIZE], port[8];
		const char *why;
		if (strlen(text) >= o->size)
			return server_fail(errmsg, -EINVAL, "%s: longer than %zu bytes", where, o->size - 1);
		if (!(o->kind == KIND_ADDR_OR_OFF && strcmp(text, "off") == 0) &&
		    split_addr(text, host, sizeof(host), port, sizeof(port), &why))
			return server_fail(errmsg, -EINVAL, "%s: bad address '%s': %s", where, text, why);
		memcpy(field, text, strlen(text) + 1);
		return 0;
	}
	case KIND_TIME_OF_DAY: {
		/* Exactly two digits, a colon, two digits (sscanf's %u would take
		 * a sign or spaces). */
		const char *digits = "0123456789";
		if (strlen(text) != 5 || strspn(text, digits) != 2 || text[2] != ':' ||
		    strspn(text + 3, digits) != 2)
			return server_fail(errmsg, -EINVAL, "%s: not a time of day HH:MM (UTC): '%s'", where, text);
		unsigned h = (unsigned)(text[0] - '0') * 10 + (unsigned)(text[1] - '0');
		unsigned m = (unsigned)(text[3] - '0') * 10 + (unsigned)(text[4] - '0');
		if (h > 23 || m > 59)
			return server_fail(errmsg, -EINVAL, "%s: not a time of day HH:MM (UTC): '%s'", where, text);
		uint32_t v = h * 60 + m;
		memcpy(field, &v, sizeof(v));
		return 0;
	}
	case KIND_LOG_LEVEL:
		for (uint32_t level = 0; level < LOG_LEVEL_COUNT; level++) {
			if (strcmp(text, log_level_names[level]) == 0) {
				assert(o->size == sizeof(level));
				memcpy(field, &level, sizeof(level));
				return 0;
			}
		}
		return server_fail(errmsg, -EINVAL, "%s: not a log level (error, warn or info): '%s'", where,
				   text);
	case KIND_NUMBER:
	case KIND_SIZE: {
		uint64_t n = 0;
		const char *end = text;
		int rc = parse_digits(text, &n, &end);
		uint64_t unit = 1;
		if (o->kind == KIND_SIZE && rc == 0) {
			if (strcmp(end, "KiB") == 0)
				unit = CONFIG_KIB;
			else if (strcmp(end, "MiB") == 0)
				unit = CONFIG_MIB;
			else if (strcmp(end, "GiB") == 0)
				unit = CONFIG_GIB;
			else if (*end)
				rc = -EINVAL;
		} else if (rc == 0 && *end) {
			rc = -EINVAL;
		}
		if (rc == -EINVAL && o->kind == KIND_SIZE)
			return server_fail(errmsg, -EINVAL,
					   "%s: not a size: '%s' (bytes, or a number with KiB, MiB or GiB)", where, text);
		if (rc == -EINVAL)
			return server_fail(errmsg, -EINVAL, "%s: not a number: '%s'", where, text);
		if (rc == 0 && n > UINT64_MAX / unit)
			rc = -ERANGE;
		if (rc == 0)
			n *= unit;
		if (rc == -ERANGE || n < o->min || n > o->max) {
			char low[32], high[32];
			if (o->kind == KIND_SIZE) {
				format_size(low, sizeof(low), o->min);
				format_size(high, sizeof(high), o->max);
			} else {
				snprintf(low, sizeof(low), "%" PRIu64, o->min);
				snprintf(high, sizeof(high), "%" PRIu64, o->max);
			}
			return server_fail(errmsg, -EINVAL, "%s: '%s' is out of range %s..%s", where, text, low,
					   high);
		}
		/* n <= o->max, which fits the field (the ranges are named for it). */
		assert(o->size == sizeof(uint32_t) || o->size == sizeof(uint64_t));
		if (o->size == sizeof(uint32_t)) {
			assert(n <= UINT32_MAX);
			uint32_t v = (uint32_t)n;
			memcpy(field, &v, sizeof(v));
		} else {
			memcpy(field, &n, sizeof(n));
		}
		return 0;
	}
	case KIND_BOOL: {
		static const char *const truths[] = {"true", "yes", "on", "1"};
		static const char *const falsehoods[] = {"false", "no", "off", "0"};
		for (size_t i = 0; i < 4; i++) {
			if (strcmp(text, truths[i]) == 0 || strcmp(text, falsehoods[i]) == 0) {
				bool v = strcmp(text, truths[i]) == 0;
				memcpy(field, &v, sizeof(v));
				return 0;
			}
		}
		return server_fail(errmsg, -EINVAL, "%s: not true or false: '%s'", where, text);
	}
	}
	assert(!"every kind is handled above");
	return -EINVAL;
}

/* ---- The INI file -------------------------------------------------------- */

typedef struct ini_state {
	server_config *c;
	const char *path;
	FILE *file;
	char *line; /* getline's buffer */
	size_t line_capacity;
	int line_number;                /* of the line last handed to inih */
	int set_line[OPTION_COUNT];     /* where each key was set, 0: not yet */
	int rc;                         /* the first error, 0: none yet */
	int error_line;                 /* its line */
	char message[TALLY_ERRMSG_SIZE]; /* its message */
} ini_state;

/* Keeps the first error only: inih goes on after a refused line, and the
 * first error is the one to fix. */
static void ini_error(ini_state *st, int rc, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void ini_error(ini_state *st, int rc, int line, const char *fmt, ...)
{
	if (st->rc)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(st->message, sizeof(st->message), fmt, ap);
	va_end(ap);
	st->rc = rc;
	st->error_line = line;
}

/* inih's reader: one whole line per call, counted. size is inih's line
 * buffer; a longer line stops the parse with an error rather than being cut
 * in two by inih. */
static char *ini_read_line(char *out, int size, void *stream)
{
	ini_state *st = stream;
	if (st->rc)
		return NULL;
	errno = 0;
	ssize_t n = getline(&st->line, &st->line_capacity, st->file);
	if (n < 0) {
		if (ferror(st->file)) {
			int e = errno ? errno : EIO;
			ini_error(st, -e, st->line_number + 1, "%s: read error: %s", st->path, strerror(e));
		}
		return NULL;
	}
	st->line_number++;
	if (memchr(st->line, '\0', (size_t)n)) {
		ini_error(st, -EINVAL, st->line_number, "%s:%d: the line holds a NUL byte", st->path,
			  st->line_number);
		return NULL;
	}
	if (size <= 1 || n > size - 1) {
		ini_error(st, -EINVAL, st->line_number,
			  "%s:%d: line longer than %d bytes (give a longer value as a flag)", st->path,
			  st->line_number, size - 1);
		return NULL;
	}
	memcpy(out, st->line, (size_t)n + 1);
	return out;
}

static int ini_handle(void *user, const char *section, const char *name, const char *value)
{
	ini_state *st = user;
	int line = st->line_number;
	if (!section[0]) {
		ini_error(st, -EINVAL, line, "%s:%d: '%s' is outside the [tallyd] section", st->path, line, name);
		return 0;
	}
	if (strcmp(section, "tallyd") != 0) {
		ini_error(st, -EINVAL, line, "%s:%d: unknown section [%s] (tallyd reads only [tallyd])", st->path,
			  line, section);
		return 0;
	}
	for (size_t i = 0; i < OPTION_COUNT; i++) {
		if (strcmp(name, options[i].key) != 0)
			continue;
		if (st->set_line[i]) {
			ini_error(st, -EINVAL, line, "%s:%d: %s is set twice (first at line %d)", st->path, line,
				  name, st->set_line[i]);
			return 0;
		}
		st->set_line[i] = line;
		char where[TALLY_ERRMSG_SIZE], message[TALLY_ERRMSG_SIZE];
		snprintf(where, sizeof(where), "%s:%d: %s", st->path, line, name);
		int rc = option_set(&options[i], st->c, value, where, message);
		if (rc) {
			ini_error(st, rc, line, "%s", message);
			return 0;
		}
		return 1;
	}
	ini_error(st, -EINVAL, line, "%s:%d: unknown key '%s'", st->path, line, name);
	return 0;
}

int config_load_file(server_config *c, const char *path, char *errmsg)
{
	ini_state st = {.c = c, .path = path};
	st.file = fopen(path, "r");
	if (!st.file)
		return server_fail(errmsg, -errno, "%s: cannot open the configuration file: %s", path,
				   strerror(errno));
	int parsed = ini_parse_stream(ini_read_line, &st, ini_handle, &st);
	free(st.line);
	fclose(st.file);
	if (parsed < 0)
		return server_fail(errmsg, -ENOMEM, "%s: out of memory while reading it", path);
	/* inih reports the line of its first error, ours or its own (a line
	 * that is neither [section] nor key = value); the earlier one wins. */
	if (parsed > 0 && (!st.rc || parsed < st.error_line))
		return server_fail(errmsg, -EINVAL, "%s:%d: not a [section] or a 'key = value' line", path, parsed);
	if (st.rc)
		return server_fail(errmsg, st.rc, "%s", st.message);
	return 0;
}

/* ---- Flags ---------------------------------------------------------------- */

int config_check(const server_config *c, char *errmsg)
{
	if (c->pending_bytes_max < c->frame_bytes_max) {
		char pending[32], frame[32];
		format_size(pending, sizeof(pending), c->pending_bytes_max);
		format_size(frame, sizeof(frame), c->frame_bytes_max);
		return server_fail(errmsg, -EINVAL,
				   "pending_bytes_max (%s) is below frame_bytes_max (%s): a frame of the largest size "
				   "could never be read",
				   pending, frame);
	}
	return 0;
}

/* The long option named by the first len bytes of name, exactly. */
static const struct option *long_option_find(const struct option *table, const char *name, size_t len)
{
	for (const struct option *o = table; o->name; o++)
		if (strlen(o->name) == len && memcmp(o->name, name, len) == 0)
			return o;
	return NULL;
}

int config_parse_args(server_config *c, int argc, char **argv, char *errmsg)
{
	struct option long_options[LONG_OPTION_COUNT];
	for (size_t i = 0; i < OPTION_COUNT; i++)
		long_options[i] = (struct option){options[i].flag,
						  options[i].kind == KIND_BOOL ? optional_argument : required_argument,
						  NULL, OPTION_FIRST + (int)i};
	long_options[OPTION_COUNT] = (struct option){"config", required_argument, NULL, OPTION_CONFIG};
	long_options[OPTION_COUNT + 1] = (struct option){"help", no_argument, NULL, OPTION_HELP};
	long_options[OPTION_COUNT + 2] = (struct option){"version", no_argument, NULL, OPTION_VERSION};
	long_options[OPTION_COUNT + 3] = (struct option){NULL, 0, NULL, 0};

	/* The flags' values, applied over the file's at the end. */
	server_config flags = *c;
	bool given[OPTION_COUNT] = {false};
	const char *config_path = NULL;

	/* optind = 0 makes glibc's getopt start afresh (its hidden state
	 * included); '+' stops at the first argument that is not an option, so
	 * each call reads exactly argv[at] (and its value), and ':' reports a
	 * missing value apart from an unknown option. */
	optind = 0;
	opterr = 0;
	for (;;) {
		int at = optind > 0 ? optind : 1;
		int opt = getopt_long(argc, argv, "+:", long_options, NULL);
		if (opt == -1)
			break;
		const char *word = argv[at];
		if (strncmp(word, "--", 2) != 0)
			return server_fail(errmsg, -EINVAL, "unknown option %s", word);
		const char *name = word + 2;
		size_t name_len = strcspn(name, "=");
		/* getopt_long takes unambiguous abbreviations (--conn); tallyd
		 * does not, so that a new flag can never change what an old
		 * command line means. */
		const struct option *lo = long_option_find(long_options, name, name_len);
		if (!lo)
			return server_fail(errmsg, -EINVAL, "unknown option --%.*s", (int)name_len, name);
		if (opt == ':')
			return server_fail(errmsg, -EINVAL, "--%s: missing value", lo->name);
		if (opt == '?')
			return server_fail(errmsg, -EINVAL, "--%s: takes no value", lo->name);
		/* "--data --listen x" would make "--listen" the directory. */
		if (lo->has_arg == required_argument && !name[name_len] && strncmp(optarg, "--", 2) == 0)
			return server_fail(errmsg, -EINVAL, "--%s: missing value (before %s)", lo->name, optarg);
		if (opt == OPTION_HELP)
			return CONFIG_EXIT_HELP;
		if (opt == OPTION_VERSION)
			return CONFIG_EXIT_VERSION;
		if (opt == OPTION_CONFIG) {
			if (config_path)
				return server_fail(errmsg, -EINVAL, "--config: given twice");
			config_path = optarg;
			continue;
		}
		size_t i = (size_t)(opt - OPTION_FIRST);
		assert(i < OPTION_COUNT);
		char where[64];
		snprintf(where, sizeof(where), "--%s", lo->name);
		int rc = option_set(&options[i], &flags, optarg ? optarg : "true", where, errmsg);
		if (rc)
			return rc;
		given[i] = true;
	}
	if (optind < argc)
		return server_fail(errmsg, -EINVAL, "unexpected argument '%s' (tallyd takes only options)",
				   argv[optind]);

	server_config out = *c;
	if (config_path) {
		int rc = config_load_file(&out, config_path, errmsg);
		if (rc)
			return rc;
	}
	for (size_t i = 0; i < OPTION_COUNT; i++)
		if (given[i])
			memcpy((char *)&out + options[i].offset, (const char *)&flags + options[i].offset,
			       options[i].size);
	int rc = config_check(&out, errmsg);
	if (rc)
		return rc;
	*c = out;
	return CONFIG_OK;
}

/* ---- Usage ---------------------------------------------------------------- */

/* The default of o, as a person would write it. */
static void format_default(const option_spec *o, char *out, size_t out_size)
{
	server_config d;
	config_default(&d);
	const char *field = (const char *)&d + o->offset;
	uint64_t n = 0;
	switch (o->kind) {
	case KIND_PATH:
	case KIND_ADDR:
	case KIND_ADDR_OR_OFF:
		snprintf(out, out_size, "%s", field);
		return;
	case KIND_BOOL: {
		bool v;
		memcpy(&v, field, sizeof(v));
		snprintf(out, out_size, "%s", v ? "true" : "false");
		return;
	}
	case KIND_TIME_OF_DAY: {
		uint32_t v;
		memcpy(&v, field, sizeof(v));
		snprintf(out, out_size, "%02u:%02u", v / 60, v % 60);
		return;
	}
	case KIND_LOG_LEVEL: {
		uint32_t v;
		memcpy(&v, field, sizeof(v));
		assert(v < LOG_LEVEL_COUNT);
		snprintf(out, out_size, "%s", log_level_names[v]);
		return;
	}
	case KIND_NUMBER:
	case KIND_SIZE:
		if (o->size == sizeof(uint32_t)) {
			uint32_t v;
			memcpy(&v, field, sizeof(v));
			n = v;
		} else {
			memcpy(&n, field, sizeof(n));
		}
		if (o->kind == KIND_SIZE)
			format_size(out, out_size, n);
		else
			snprintf(out, out_size, "%" PRIu64, n);
		return;
	}
}

void config_usage(FILE *out)
{
	fprintf(out, "usage: tallyd [--config FILE] [OPTION...]\n\n"
		     "Serves the tally protocol. Settings come from the defaults, then the\n"
		     "--config file (section [tallyd], keys named like the options with '_'),\n"
		     "then the options given here. SIZE is bytes or a number with KiB, MiB, GiB.\n\n");
	fprintf(out, "  %-30s %s\n", "--config FILE", "read settings from an INI file");
	for (size_t i = 0; i < OPTION_COUNT; i++) {
		const option_spec *o = &options[i];
		char left[64], value[32], range[80] = "";
		if (o->kind == KIND_BOOL)
			snprintf(left, sizeof(left), "--%s[=BOOL]", o->flag);
		else
			snprintf(left, sizeof(left), "--%s %s", o->flag, o->value_name);
		format_default(o, value, sizeof(value));
		if (o->kind == KIND_NUMBER || o->kind == KIND_SIZE) {
			char low[32], high[32];
			if (o->kind == KIND_SIZE) {
				format_size(low, sizeof(low), o->min);
				format_size(high, sizeof(high), o->max);
			} else {
				snprintf(low, sizeof(low), "%" PRIu64, o->min);
				snprintf(high, sizeof(high), "%" PRIu64, o->max);
			}
			snprintf(range, sizeof(range), "; %s..%s", low, high);
		}
		if (value[0])
			fprintf(out, "  %-30s %s (default %s%s)\n", left, o->help, value, range);
		else
			fprintf(out, "  %-30s %s\n", left, o->help);
	}
	fprintf(out, "  %-30s %s\n  %-30s %s\n", "--help", "print this text", "--version",
		"print the version");
}
