/*
 * jsonfile.c — durable whole-file JSON (jsonfile.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "fail.h"
#include "jsonfile.h"

int jsonfile_load(const tally_io *io, const char *dir, const char *name, size_t bytes_max,
		  json_t **root, char *errmsg)
{
	*root = NULL;
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = io->open(io, path, O_RDONLY, 0);
	if (fd == -ENOENT)
		return 0;
	if (fd < 0)
		return server_fail(errmsg, fd, "open %s: %s", path, tally_strerror(fd));
	int64_t size = io->file_size(io, fd);
	int rc = size < 0 ? (int)size : (uint64_t)size > bytes_max ? TALLY_E_CORRUPT : 0;
	char *text = rc ? NULL : malloc((size_t)size + 1);
	if (!rc && !text)
		rc = -ENOMEM;
	if (!rc)
		rc = tally_io_read_all(io, fd, text, (size_t)size, 0);
	io->close(io, fd);
	if (rc) {
		free(text);
		if (rc == TALLY_E_CORRUPT)
			return server_fail(errmsg, rc, "%s: unreadable or larger than %zu bytes", path,
					   bytes_max);
		return server_fail(errmsg, rc, "read %s: %s", path, tally_strerror(rc));
	}
	json_error_t jerr;
	/* A member given twice would keep its last value ("revoked": true,
	 * "revoked": false): refused as damage. */
	*root = json_loadb(text, (size_t)size, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	if (!*root)
		return server_fail(errmsg, TALLY_E_CORRUPT, "%s: not JSON (line %d: %s)", path,
				   jerr.line, jerr.text);
	return 0;
}

int jsonfile_save(const tally_io *io, const char *dir, const char *name, const json_t *root,
		  char *errmsg)
{
	char *text = json_dumps(root, JSON_INDENT(1));
	if (!text)
		return server_fail(errmsg, -ENOMEM, "write %s/%s: out of memory", dir, name);
	int rc = tally_io_durable_replace(io, dir, name, text, strlen(text));
	free(text);
	if (rc)
		return server_fail(errmsg, rc, "write %s/%s: %s", dir, name, tally_strerror(rc));
	return 0;
}
