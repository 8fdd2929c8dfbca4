/*
 * manifest.h — the list of live files, and the tenant registry.
 *
 * DIR/MANIFEST names every live segment file, the LSN from which the WAL
 * must be replayed (everything before it is in those segment files), the
 * next file id to allocate, the tenants (name <-> dense id), since
 * version 2 the change map of the events in those segment files (the days
 * they changed and the LSNs; changes.h) and since version 3 the id the next
 * WAL file gets at least (wal.c, invariant 7). It is the
 * only mutable file of the store and changes only through
 * tally_io_durable_replace (write temp, fsync, rename, fsync directory), so a
 * crash leaves the old or the new manifest, never a mix. Layout:
 * docs/formats.md, "Manifest".
 */
#ifndef TALLY_MANIFEST_H
#define TALLY_MANIFEST_H

#include <stdint.h>

#include "changes.h"
#include "tally.h"

#define MANIFEST_NAME "MANIFEST"
#define MANIFEST_VERSION 3          /* written; 2 added the change section, 3 the next
				     * WAL file id */
#define MANIFEST_VERSION_OLDEST 1   /* read: version 1 has no change section */
/* The fixed fields before the file ids; the tenant entries follow the
 * file ids (docs/formats.md, "Manifest"). */
#define MANIFEST_HEADER_SIZE 48u

typedef struct manifest_tenant {
	uint32_t tenant_id;
	uint8_t name_size;
	char name[TALLY_TENANT_SIZE_MAX + 1];
} manifest_tenant;

typedef struct manifest {
	uint32_t version;        /* as read (manifest_write writes MANIFEST_VERSION) */
	uint64_t generation;     /* +1 on every write */
	uint64_t wal_replay_lsn; /* replay WAL records with LSN >= this */
	uint64_t next_file_id;   /* segment file ids; never reused (the WAL numbers its own files) */
	uint32_t file_count;
	uint32_t tenant_count;
	uint64_t *file_ids;      /* live segment files, ascending */
	manifest_tenant *tenants;/* by tenant_id: tenants[i].tenant_id == i */
	/* Every mark with LSN < wal_replay_lsn: the days of the events in the
	 * live segment files (those still in the WAL are marked again by its
	 * replay). Empty when read from version 1. */
	change_map changes;
	/* Every WAL file id this store has used is below it (wal_file_id_next
	 * when the image was built); >= 1 when written. 0 when read from
	 * version 1 or 2: unknown. */
	uint64_t wal_file_id_next;
} manifest;

/* Reads DIR/MANIFEST into *m. Returns 0, TALLY_E_NOTFOUND when there is no
 * manifest (a new store; *m is then zeroed, its change map not allocated),
 * TALLY_E_CORRUPT / TALLY_E_VERSION / -errno with errmsg naming the path
 * and offset. On success the caller frees *m (its change map is allocated,
 * CHANGE_DAYS_MAX days). */
int manifest_read(const tally_io *io, const char *dir, manifest *m, char *errmsg);

/* Writes *m durably as DIR/MANIFEST (version MANIFEST_VERSION) with
 * generation + 1 (updated in *m only on success). m->changes may be
 * zeroed (never allocated): it is written empty. 0 or -errno / -ENOMEM,
 * with errmsg set. */
int manifest_write(const tally_io *io, const char *dir, manifest *m, char *errmsg);
/* manifest_write in two steps, so that a caller can build the image under
 * its lock and write it without: the bytes of *m with generation + 1
 * (*data malloc-ed, also on failure: free it), then those bytes written
 * durably. The caller bumps m->generation once the write returned 0. */
int manifest_encode(const manifest *m, uint8_t **data, size_t *size);
int manifest_write_encoded(const tally_io *io, const char *dir, const uint8_t *data, size_t size,
			   char *errmsg);

void manifest_free(manifest *m);

#endif /* TALLY_MANIFEST_H */
