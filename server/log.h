/*
 * log.h — tallyd's log: one line per record on stderr, with a UTC timestamp
 * and a level ("2026-11-28T12:00:00.123Z info listening on ..."), or one
 * JSON object per line (jansson) after log_set_json(true). Thread-safe.
 * Keys and secrets are never logged.
 *
 * Levels, most severe first: error (the server itself cannot do something:
 * a file, the store, the export), warn (a peer or a setting was refused, a
 * connection was closed on it), info (what happened: started, a tenant
 * created, a key issued). log_set_level drops every line less severe than
 * the level it names; the default, LOG_LEVEL_INFO, keeps them all.
 *
 * Buffered mode (log_set_buffered(true), which tallyd turns on): info lines
 * collect in a LOG_BUFFER_BYTES buffer and go out in one write when it is
 * full or at log_flush (the event loop calls it after every pass, so at
 * most TIMER_INTERVAL_MS late), and so do warn lines (a flood of refused
 * peers costs no write each); an error line goes out at once, after what
 * waits. The cost: a crash loses the info and warn lines of its last pass. At
 * the default (unbuffered) every line is one write.
 */
#ifndef TALLY_SERVER_LOG_H
#define TALLY_SERVER_LOG_H

#include <stdbool.h>

#define LOG_BUFFER_BYTES (64u << 10)

typedef enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN = 1,
	LOG_LEVEL_INFO = 2,
} log_level;

#define LOG_LEVEL_COUNT 3
/* "error", "warn", "info", by level: the names the lines and the
 * configuration use. */
extern const char *const log_level_names[LOG_LEVEL_COUNT];

void log_set_json(bool json);
/* Lines less severe than level are dropped from now on. */
void log_set_level(log_level level);
void log_set_buffered(bool buffered);
/* Writes out the buffered lines. */
void log_flush(void);
__attribute__((format(printf, 1, 2))) void log_info(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void log_warn(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void log_error(const char *fmt, ...);

#endif /* TALLY_SERVER_LOG_H */
