/*
 * log.h — tallyd's log: one line per record on stderr, with a UTC timestamp
 * and a level ("2026-11-28T12:00:00.123Z info listening on ..."), or one
 * JSON object per line (jansson) after log_set_json(true). Thread-safe
 * (stdio locks each call). Keys and secrets are never logged.
 */
#ifndef TALLY_SERVER_LOG_H
#define TALLY_SERVER_LOG_H

#include <stdbool.h>

void log_set_json(bool json);
__attribute__((format(printf, 1, 2))) void log_info(const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void log_error(const char *fmt, ...);

#endif /* TALLY_SERVER_LOG_H */
