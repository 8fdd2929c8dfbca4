/*
 * log.c — tallyd's log (log.h).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "log.h"

static atomic_bool log_json;
static atomic_bool log_buffered;
static atomic_int log_level_kept = LOG_LEVEL_INFO;

const char *const log_level_names[LOG_LEVEL_COUNT] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_INFO] = "info",
};

/* Info and warn lines waiting for log_flush when buffered. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_buffer[LOG_BUFFER_BYTES];
static size_t log_buffer_len;

void log_set_json(bool json) { atomic_store(&log_json, json); }

void log_set_level(log_level level) { atomic_store(&log_level_kept, (int)level); }

void log_set_buffered(bool buffered)
{
	if (!buffered)
		log_flush();
	atomic_store(&log_buffered, buffered);
}

/* Lock held. */
static void buffer_write_out(void)
{
	if (log_buffer_len) {
		fwrite(log_buffer, 1, log_buffer_len, stderr);
		log_buffer_len = 0;
	}
}

/* Called after every loop pass: costs one uncontended lock when nothing
 * waits (stderr is unbuffered, so fwrite is the write). */
void log_flush(void)
{
	pthread_mutex_lock(&log_lock);
	buffer_write_out();
	pthread_mutex_unlock(&log_lock);
}

/* One whole line (with its newline): into the buffer, or out at once
 * (unbuffered, an error, or a line longer than the buffer), after what
 * the buffer holds so that the order stays. */
static void line_emit(const char *line, size_t len, bool urgent)
{
	pthread_mutex_lock(&log_lock);
	if (urgent || !atomic_load(&log_buffered) || len > sizeof(log_buffer)) {
		buffer_write_out();
		fwrite(line, 1, len, stderr);
	} else {
		if (len > sizeof(log_buffer) - log_buffer_len)
			buffer_write_out();
		memcpy(log_buffer + log_buffer_len, line, len);
		log_buffer_len += len;
	}
	pthread_mutex_unlock(&log_lock);
	if (urgent)
		fflush(stderr);
}

static void log_write(log_level level_of_line, const char *fmt, va_list ap)
{
	if ((int)level_of_line > atomic_load(&log_level_kept))
		return;
	const char *level = log_level_names[level_of_line];
	bool urgent = level_of_line == LOG_LEVEL_ERROR;
	char text[1024];
	vsnprintf(text, sizeof(text), fmt, ap);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[40];
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	if (atomic_load(&log_json)) {
		json_t *o = json_pack("{s:s, s:s, s:s}", "time", when, "level", level, "message", text);
		char *json = o ? json_dumps(o, JSON_COMPACT) : NULL;
		json_decref(o);
		if (!json)
			return;
		size_t len = strlen(json);
		char *line = realloc(json, len + 2);
		if (line) {
			line[len] = '\n';
			line_emit(line, len + 1, urgent);
		}
		free(line ? line : json);
		return;
	}
	char line[sizeof(text) + sizeof(when) + 16];
	int len = snprintf(line, sizeof(line), "%s %s %s\n", when, level, text);
	if (len > 0)
		line_emit(line, (size_t)len < sizeof(line) ? (size_t)len : sizeof(line) - 1, urgent);
}

void log_info(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_write(LOG_LEVEL_INFO, fmt, ap);
	va_end(ap);
}

void log_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_write(LOG_LEVEL_WARN, fmt, ap);
	va_end(ap);
}

void log_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_write(LOG_LEVEL_ERROR, fmt, ap);
	va_end(ap);
}
