/*
 * test_log.c — tallyd's log (server/log.h): line format, and the buffered
 * mode tallyd runs in (info and warn lines wait for log_flush, errors go at once,
 * order is kept, nothing is lost when the buffer fills).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* Each test runs in its own process: stderr goes to a temporary file,
 * read back through a path of its own. */
static char capture_path[64];

static void capture_start(void)
{
	snprintf(capture_path, sizeof(capture_path), "/tmp/tally-test-log-XXXXXX");
	int fd = mkstemp(capture_path);
	cr_assert_geq(fd, 0);
	fflush(stderr);
	cr_assert_geq(dup2(fd, STDERR_FILENO), 0);
	close(fd);
	unlink(capture_path); /* stays open as stderr; read through /proc */
	snprintf(capture_path, sizeof(capture_path), "/proc/self/fd/%d", STDERR_FILENO);
}

/* Everything written to stderr so far (malloc-ed, NUL-terminated). */
static char *captured(void)
{
	fflush(stderr);
	FILE *f = fopen(capture_path, "r");
	cr_assert_not_null(f);
	size_t cap = 1 << 16, len = 0;
	char *text = malloc(cap);
	cr_assert_not_null(text);
	size_t got;
	while ((got = fread(text + len, 1, cap - len - 1, f)) > 0) {
		len += got;
		if (cap - len - 1 == 0) {
			cap *= 2;
			text = realloc(text, cap);
			cr_assert_not_null(text);
		}
	}
	fclose(f);
	text[len] = 0;
	return text;
}

static size_t count_lines(const char *text)
{
	size_t n = 0;
	for (; *text; text++)
		n += *text == '\n';
	return n;
}

/* Description: unbuffered (the default), each line is written at once as
 * "<UTC time> <level> <message>". */
Test(log, unbuffered_lines_go_out_at_once)
{
	capture_start();
	log_info("hello %d", 42);
	char *text = captured();
	cr_expect_eq(count_lines(text), 1);
	cr_expect(strstr(text, "Z info hello 42\n") != NULL, "got: %s", text);
	cr_expect_eq(text[4], '-');
	cr_expect_eq(text[10], 'T');
	free(text);
}

/* Description: buffered, info lines wait for log_flush; an error line
 * goes out at once, after the info lines before it. */
Test(log, buffered_info_waits_errors_do_not)
{
	capture_start();
	log_set_buffered(true);
	log_info("first");
	log_info("second");
	char *text = captured();
	cr_expect_str_eq(text, "", "nothing before a flush");
	free(text);
	log_error("broken");
	text = captured();
	cr_expect_eq(count_lines(text), 3);
	char *a = strstr(text, "info first"), *b = strstr(text, "info second"),
	     *c = strstr(text, "error broken");
	cr_assert(a && b && c, "got: %s", text);
	cr_expect(a < b && b < c, "in order");
	free(text);
	log_info("third");
	log_flush();
	text = captured();
	cr_expect_eq(count_lines(text), 4);
	cr_expect(strstr(text, "info third\n") != NULL);
	free(text);
	log_info("fourth");
	log_set_buffered(false); /* turning it off writes what waits */
	text = captured();
	cr_expect(strstr(text, "info fourth\n") != NULL);
	free(text);
}

/* Description: more info lines than the buffer holds are written as it
 * fills, every one of them, in order. */
Test(log, a_full_buffer_is_written_in_order)
{
	capture_start();
	log_set_buffered(true);
	enum { LINES = 5000 }; /* ~60 bytes each: several buffers */
	for (int i = 0; i < LINES; i++)
		log_info("line %05d of a long run", i);
	char *text = captured();
	size_t before = count_lines(text);
	cr_expect_gt(before, 0, "a full buffer was written without a flush");
	cr_expect_lt(before, LINES, "the tail still waits");
	free(text);
	log_flush();
	text = captured();
	cr_expect_eq(count_lines(text), LINES);
	const char *at = text;
	for (int i = 0; i < LINES; i++) {
		char want[40];
		snprintf(want, sizeof(want), "line %05d of", i);
		const char *p = strstr(at, want);
		cr_assert_not_null(p, "line %d present and after line %d", i, i - 1);
		at = p;
	}
	free(text);
}

/* Description: JSON lines are buffered the same way and stay one object
 * per line. */
Test(log, json_lines_buffered)
{
	capture_start();
	log_set_json(true);
	log_set_buffered(true);
	log_info("quote \" here");
	log_flush();
	char *text = captured();
	cr_expect_eq(count_lines(text), 1);
	cr_expect(strstr(text, "\"level\":\"info\"") != NULL, "got: %s", text);
	cr_expect(strstr(text, "\"message\":\"quote \\\" here\"") != NULL, "got: %s", text);
	free(text);
}

/* Description: log_set_level drops the lines less severe than its level:
 * at warn, info lines go; at error, warn lines go too; back at info, all
 * three are written, each labelled with its level's name. */
Test(log, a_level_drops_the_less_severe_lines)
{
	capture_start();
	log_set_level(LOG_LEVEL_WARN);
	log_info("info at warn");
	log_warn("warn at warn");
	log_error("error at warn");
	log_set_level(LOG_LEVEL_ERROR);
	log_info("info at error");
	log_warn("warn at error");
	log_error("error at error");
	log_set_level(LOG_LEVEL_INFO);
	log_info("info at info");
	log_warn("warn at info");
	log_error("error at info");
	char *text = captured();
	cr_expect_eq(count_lines(text), 6, "got: %s", text);
	static const char *const kept[] = {"Z warn warn at warn\n",   "Z error error at warn\n",
					   "Z error error at error\n", "Z info info at info\n",
					   "Z warn warn at info\n",    "Z error error at info\n"};
	const char *at = text;
	for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
		const char *p = strstr(at, kept[i]);
		cr_expect_not_null(p, "'%s' kept, in order; got: %s", kept[i], text);
		at = p ? p : at;
	}
	cr_expect_null(strstr(text, "info at warn"));
	cr_expect_null(strstr(text, "info at error"));
	cr_expect_null(strstr(text, "warn at error"));
	cr_expect_str_eq(log_level_names[LOG_LEVEL_ERROR], "error");
	cr_expect_str_eq(log_level_names[LOG_LEVEL_WARN], "warn");
	cr_expect_str_eq(log_level_names[LOG_LEVEL_INFO], "info");
	free(text);
}

/* Description: buffered, a warn line waits for log_flush like an info
 * line (a flood of refused peers costs no write each); in JSON its level
 * is "warn". */
Test(log, buffered_warn_lines_wait)
{
	capture_start();
	log_set_json(true);
	log_set_buffered(true);
	log_warn("peer refused");
	char *text = captured();
	cr_expect_str_eq(text, "", "nothing before a flush");
	free(text);
	log_flush();
	text = captured();
	cr_expect_eq(count_lines(text), 1);
	cr_expect(strstr(text, "\"level\":\"warn\"") != NULL, "got: %s", text);
	cr_expect(strstr(text, "\"message\":\"peer refused\"") != NULL, "got: %s", text);
	free(text);
}
