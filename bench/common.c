/*
 * common.c — helpers shared by tally-bench's subcommands (contracts in
 * common.h). Nothing here is on a timed path except bench_clock_ns, which
 * is inline in the header.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"

int64_t bench_wall_clock_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * TALLY_US_PER_SECOND + ts.tv_nsec / 1000;
}

double bench_round(double x, int places)
{
	double scale = pow(10.0, places);
	return round(x * scale) / scale;
}

double bench_per_event(uint64_t bytes, uint64_t events)
{
	return events ? (double)bytes / (double)events : 0.0;
}

int bench_compare_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

int bench_compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

double bench_percentile_us(const int64_t *sorted_ns, uint64_t n, double p)
{
	if (!n)
		return 0.0;
	uint64_t rank = (uint64_t)ceil(p * (double)n); /* nearest rank */
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)sorted_ns[rank - 1] / 1e3;
}

void bench_latency_summary_us(int64_t *ns, uint64_t n, double out[4])
{
	static const double RANKS[4] = {0.50, 0.95, 0.99, 1.00};
	qsort(ns, n, sizeof(*ns), bench_compare_i64);
	for (int k = 0; k < 4; k++)
		out[k] = bench_percentile_us(ns, n, RANKS[k]);
}

int bench_json_put(json_t *object, const char *key, json_t *value)
{
	return value ? json_object_set_new(object, key, value) : -1;
}

json_t *bench_json_u64(uint64_t value)
{
	if (value <= INT64_MAX)
		return json_integer((json_int_t)value);
	char text[24];
	snprintf(text, sizeof(text), "%" PRIu64, value);
	return json_string(text);
}

int bench_json_print(json_t *root, int bad)
{
	if (bad || !root) {
		json_decref(root);
		return -ENOMEM;
	}
	int rc = json_dumpf(root, stdout, JSON_REAL_PRECISION(12));
	json_decref(root);
	if (rc != 0)
		return -EIO;
	putchar('\n');
	return 0;
}

int bench_report_end(int write_rc)
{
	if (write_rc) {
		fprintf(stderr, "tally-bench: cannot write JSON: %s\n", strerror(-write_rc));
		return 1;
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, "tally-bench: cannot write the report: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}

int bench_engine_failed(const char *call, int rc, const tally_store *store, const char *errmsg)
{
	char copy[TALLY_ERRMSG_SIZE];
	if (store)
		tally_store_errmsg_copy(store, copy, sizeof(copy));
	const char *detail = store ? copy : errmsg;
	fprintf(stderr, "tally-bench: %s failed: %s%s%s\n", call, tally_strerror(rc),
		detail && *detail ? ": " : "", detail && *detail ? detail : "");
	return 1;
}

int bench_make_dirs(const char *path)
{
	char buffer[BENCH_PATH_SIZE_MAX];
	size_t size = strlen(path);
	if (size == 0 || size >= sizeof(buffer))
		return -ENAMETOOLONG;
	memcpy(buffer, path, size + 1);
	for (size_t i = 1; i <= size; i++) {
		if (buffer[i] != '/' && buffer[i] != 0)
			continue;
		char saved = buffer[i];
		buffer[i] = 0;
		if (mkdir(buffer, 0755) != 0 && errno != EEXIST)
			return -errno;
		buffer[i] = saved;
	}
	struct stat st;
	if (stat(path, &st) != 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int bench_dir_is_empty(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return -errno;
	int empty = 1;
	struct dirent *entry;
	while ((entry = readdir(d))) {
		if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) {
			empty = 0;
			break;
		}
	}
	closedir(d);
	return empty;
}

/* "Name:   12345 kB" → bytes. 0 or -1 when the line is not that field. */
static int status_field_bytes(const char *line, const char *name, uint64_t *bytes)
{
	size_t size = strlen(name);
	if (strncmp(line, name, size) != 0 || line[size] != ':')
		return -1;
	unsigned long long kib = 0;
	if (sscanf(line + size + 1, " %llu kB", &kib) != 1)
		return -1;
	*bytes = (uint64_t)kib * 1024;
	return 0;
}

int bench_rss_read(uint64_t *rss_bytes, uint64_t *rss_peak_bytes)
{
	return bench_process_rss_read(0, rss_bytes, rss_peak_bytes);
}

int bench_process_rss_read(long pid, uint64_t *rss_bytes, uint64_t *rss_peak_bytes)
{
	*rss_bytes = 0;
	*rss_peak_bytes = 0;
	char path[64];
	if (pid)
		snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	else
		snprintf(path, sizeof(path), "/proc/self/status");
	FILE *f = fopen(path, "r");
	if (!f)
		return -errno;
	char line[256];
	int found = 0;
	while (fgets(line, sizeof(line), f)) {
		if (status_field_bytes(line, "VmRSS", rss_bytes) == 0)
			found |= 1;
		else if (status_field_bytes(line, "VmHWM", rss_peak_bytes) == 0)
			found |= 2;
	}
	fclose(f);
	if (found != 3) {
		*rss_bytes = 0;
		*rss_peak_bytes = 0;
		return -ENOENT;
	}
	return 0;
}
