/*
 * cli.c — helpers shared by the `tally` subcommands (see cli.h): usage
 * errors in one format, and the formatting of times, days and sizes, so
 * every command prints them the same way.
 *
 * Times are printed as RFC 3339 in UTC with microseconds, the unit tally
 * stores; days as ISO dates. Sizes for people use binary units (KiB, MiB)
 * with one decimal; machine output (--json) always carries exact integers.
 */
#include <assert.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define US_PER_SECOND INT64_C(1000000)
#define SECONDS_PER_DAY INT64_C(86400)

void cli_command_help(const cli_command *command)
{
	printf("usage: tally %s\n\n%s\n", command->synopsis, command->summary);
	if (command->help && command->help[0])
		printf("\n%s", command->help);
}

int cli_usage_error(const cli_command *command, const char *format, ...)
{
	va_list args;
	va_start(args, format);
	fprintf(stderr, "tally %s: ", command->name);
	vfprintf(stderr, format, args);
	fprintf(stderr, "\nusage: tally %s   (see 'tally help %s')\n", command->synopsis,
		command->name);
	va_end(args);
	return CLI_EXIT_FAILURE;
}

int cli_option_error(const cli_command *command, int argc, char **argv, int result)
{
	/* getopt has advanced optind past the refused element. */
	const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
	if (result == ':')
		return cli_usage_error(command, "option '%s' needs an argument", arg);
	if (optopt && arg[0] == '-' && arg[1] != '-')
		return cli_usage_error(command, "unknown option '-%c'", optopt);
	return cli_usage_error(command, "unknown option '%s'", arg);
}

int cli_option_once(const cli_command *command, const struct option *options, int opt,
		    const char *repeatable, uint64_t *seen)
{
	for (unsigned k = 0; options[k].name; k++) {
		if (options[k].val != opt)
			continue;
		assert(k < 64);
		if ((*seen >> k) & 1 && !(repeatable && strchr(repeatable, opt)))
			return cli_usage_error(command, "option '--%s' given twice", options[k].name);
		*seen |= UINT64_C(1) << k;
		return 0;
	}
	return 0; /* not an option of the list: getopt_long's error, told by the caller */
}

/* Floor division: the day (or second) that contains a negative time. */
static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;
	return (a % b < 0) ? q - 1 : q;
}

void cli_format_time(char *out, int64_t time_us)
{
	int64_t seconds = floor_div(time_us, US_PER_SECOND);
	int64_t micros = time_us - seconds * US_PER_SECOND;
	time_t t = (time_t)seconds;
	struct tm tm;
	if (!gmtime_r(&t, &tm)) {
		snprintf(out, CLI_TIME_SIZE, "%" PRId64 "us", time_us);
		return;
	}
	snprintf(out, CLI_TIME_SIZE, "%04d-%02d-%02dT%02d:%02d:%02d.%06" PRId64 "Z",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 micros);
}

void cli_format_day(char *out, int32_t day)
{
	time_t t = (time_t)((int64_t)day * SECONDS_PER_DAY);
	struct tm tm;
	if (!gmtime_r(&t, &tm)) {
		snprintf(out, CLI_TIME_SIZE, "day %" PRId32, day);
		return;
	}
	snprintf(out, CLI_TIME_SIZE, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday);
}

int64_t cli_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * US_PER_SECOND + ts.tv_nsec / 1000;
}

void cli_format_bytes(char *out, uint64_t bytes)
{
	static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	if (bytes < 1024) {
		snprintf(out, CLI_BYTES_SIZE, "%" PRIu64 " B", bytes);
		return;
	}
	double value = (double)bytes / 1024.0;
	size_t unit = 0;
	/* 1023.95 and up would print as "1024.0": the next unit's "1.0". */
	while (value >= 1023.95 && unit + 1 < sizeof(units) / sizeof(units[0])) {
		value /= 1024.0;
		unit++;
	}
	snprintf(out, CLI_BYTES_SIZE, "%.1f %s", value, units[unit]);
}
