/*
 * marker.c — reading and writing DIR/bench-workload.json (see marker.h).
 *
 * The write follows the one recipe for durable files (STYLE.md, 9): write
 * DIR/bench-workload.json.tmp, fsync it, rename it over the marker, fsync
 * DIR. A crash leaves either no marker or a complete one, never half of
 * one, so a run never regenerates the wrong workload from a torn file.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "ingest.h"
#include "marker.h"

static int marker_path(const char *dir, const char *suffix, char *path, size_t size)
{
	int n = snprintf(path, size, "%s/%s%s", dir, WORKLOAD_MARKER_NAME, suffix);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Writes size bytes at fd, retrying short writes and EINTR. 0 or -errno. */
static int write_all(int fd, const char *data, size_t size)
{
	while (size) {
		ssize_t n = write(fd, data, size);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		data += n;
		size -= (size_t)n;
	}
	return 0;
}

int workload_marker_write(const char *dir, const workload_marker *marker, char *errmsg)
{
	char path[BENCH_PATH_SIZE_MAX], temporary[BENCH_PATH_SIZE_MAX];
	errmsg[0] = 0;
	if (marker_path(dir, "", path, sizeof(path)) || marker_path(dir, ".tmp", temporary, sizeof(temporary))) {
		snprintf(errmsg, WORKLOAD_MARKER_ERRMSG_SIZE, "%s: path too long", dir);
		return -ENAMETOOLONG;
	}
	const workload_params *p = &marker->params;
	json_t *root = json_object();
	int bad = !root;
	if (root) {
		bad |= bench_json_put(root, "events", json_integer((json_int_t)p->event_count));
		bad |= bench_json_put(root, "tenants", json_integer(p->tenant_count));
		bad |= bench_json_put(root, "seed", bench_json_u64(p->seed));
		bad |= bench_json_put(root, "end_us", json_integer(p->end_us));
		bad |= bench_json_put(root, "batch_window", json_integer(p->window_events));
		bad |= bench_json_put(root, "compacted", json_boolean(marker->compacted));
		bad |= bench_json_put(root, "written_by", json_string(marker->written_by));
	}
	char *text = bad ? NULL : json_dumps(root, JSON_INDENT(2));
	json_decref(root);
	if (!text) {
		snprintf(errmsg, WORKLOAD_MARKER_ERRMSG_SIZE, "%s: out of memory", path);
		return -ENOMEM;
	}

	const char *op = "open";
	const char *op_path = temporary;
	int rc = 0, fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	size_t size = strlen(text);
	text[size] = '\n'; /* replaces the NUL: the file ends with a newline */
	op = "write";
	if ((rc = write_all(fd, text, size + 1)))
		goto out;
	op = "fsync";
	if (fsync(fd) != 0) {
		rc = -errno;
		goto out;
	}
	op = "close";
	rc = close(fd) != 0 ? -errno : 0;
	fd = -1;
	if (rc)
		goto out;
	op = "rename";
	if (rename(temporary, path) != 0) {
		rc = -errno;
		goto out;
	}
	op = "fsync";
	op_path = dir;
	int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0) {
		rc = -errno;
		goto out;
	}
	if (fsync(dir_fd) != 0)
		rc = -errno;
	close(dir_fd);
out:
	if (fd >= 0)
		close(fd);
	free(text);
	if (rc)
		snprintf(errmsg, WORKLOAD_MARKER_ERRMSG_SIZE, "%s %s: %s", op, op_path, strerror(-rc));
	return rc;
}

/* An integer field in [min, max]. 0 or -EINVAL with errmsg set. */
static int field_integer(json_t *root, const char *path, const char *key, int64_t min, int64_t max,
			 int64_t *out, char *errmsg)
{
	json_t *value = json_object_get(root, key);
	if (!json_is_integer(value) || json_integer_value(value) < min ||
	    json_integer_value(value) > max) {
		snprintf(errmsg, WORKLOAD_MARKER_ERRMSG_SIZE,
			 "%s: \"%s\" is missing or not an integer in %" PRId64 "..%" PRId64, path, key,
			 min, max);
		return -EINVAL;
	}
	*out = json_integer_value(value);
	return 0;
}

int workload_marker_read(const char *dir, workload_marker *marker, char *errmsg)
{
	char path[BENCH_PATH_SIZE_MAX];
	errmsg[0] = 0;
	memset(marker, 0, sizeof(*marker));
	if (marker_path(dir, "", path, sizeof(path))) {
		snprintf(errmsg, WORKLOAD_MARKER_ERRMSG_SIZE, "%s: path too long", dir);
		return -ENAMETOOLONG;
	}
	if (access(path, F_OK) != 0) {
		int rc = -errno;
		if (rc != -ENOENT)
			snprintf(errmsg, WORKLOAD_MARKER_ERRMSG_SIZE, "access %s: %s", path, strerror(-rc));
		return rc;
	}
	json_error_t error;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &error);
	if (!root) {
		snprintf(errmsg, WORKLOAD_MARKER_ERRMSG_SIZE, "%s: line %d: %s", path, error.line,
			 error.text);
		return -EINVAL;
	}
	int rc = -EINVAL;
	if (!json_is_object(root)) {
		snprintf(errmsg, WORKLOAD_MARKER_ERRMSG_SIZE, "%s: not a JSON object", path);
		goto out;
	}
	int64_t events, tenants, end_us, window;
	if (field_integer(root, path, "events", 1, (int64_t)WORKLOAD_EVENTS_MAX, &events, errmsg) ||
	    field_integer(root, path, "tenants", 1, WORKLOAD_TENANTS_MAX, &tenants, errmsg) ||
	    field_integer(root, path, "end_us", WORKLOAD_HISTORY_DAYS * TALLY_US_PER_DAY, INT64_MAX,
			  &end_us, errmsg))
		goto out;
	/* Optional, for markers written by hand: the engine bench's default. */
	window = BENCH_WINDOW_DEFAULT;
	if (json_object_get(root, "batch_window") &&
	    field_integer(root, path, "batch_window", 1, WORKLOAD_WINDOW_EVENTS_MAX, &window, errmsg))
		goto out;
	json_t *seed = json_object_get(root, "seed");
	uint64_t seed_value = 0;
	if (json_is_integer(seed) && json_integer_value(seed) >= 0) {
		seed_value = (uint64_t)json_integer_value(seed);
	} else if (json_is_string(seed)) {
		const char *text = json_string_value(seed);
		char *end = NULL;
		errno = 0;
		unsigned long long parsed = strtoull(text, &end, 10);
		if (text[0] < '0' || text[0] > '9' || errno || *end) {
			snprintf(errmsg, WORKLOAD_MARKER_ERRMSG_SIZE,
				 "%s: \"seed\" is not a decimal uint64: %s", path, text);
			goto out;
		}
		seed_value = parsed;
	} else {
		snprintf(errmsg, WORKLOAD_MARKER_ERRMSG_SIZE,
			 "%s: \"seed\" is missing or not a non-negative integer", path);
		goto out;
	}
	json_t *compacted = json_object_get(root, "compacted");
	json_t *writer = json_object_get(root, "written_by");
	marker->params = (workload_params){
		.event_count = (uint64_t)events,
		.tenant_count = (uint32_t)tenants,
		.seed = seed_value,
		.window_events = (uint32_t)window,
		.end_us = end_us,
	};
	marker->compacted = json_is_true(compacted);
	snprintf(marker->written_by, sizeof(marker->written_by), "%s",
		 json_is_string(writer) ? json_string_value(writer) : "unknown");
	rc = 0;
out:
	json_decref(root);
	return rc;
}
