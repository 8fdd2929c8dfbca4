/*
 * jsonfile.h — the server's small durable JSON files (keys.json,
 * tenants.json): read whole and parsed with jansson, written whole through
 * tally_io_durable_replace (temp file, fsync, rename, fsync directory), so a
 * crash leaves the old content or the new, never a mix.
 */
#ifndef TALLY_SERVER_JSONFILE_H
#define TALLY_SERVER_JSONFILE_H

#include <stddef.h>

#include <jansson.h>

#include "tally.h"

/*
 * Reads DIR/NAME (at most bytes_max bytes) and parses it. 0 with *root set
 * (NULL when the file does not exist), -errno, -ENOMEM, or TALLY_E_CORRUPT
 * (too large, unreadable, not JSON) with errmsg (TALLY_ERRMSG_SIZE) naming
 * the file.
 */
int jsonfile_load(const tally_io *io, const char *dir, const char *name, size_t bytes_max,
		  json_t **root, char *errmsg);

/* Writes root to DIR/NAME durably. 0, -ENOMEM or -errno with errmsg. */
int jsonfile_save(const tally_io *io, const char *dir, const char *name, const json_t *root,
		  char *errmsg);

#endif /* TALLY_SERVER_JSONFILE_H */
