/*
 * manifest.c — reading and writing DIR/MANIFEST (see manifest.h).
 *
 * Layout (little-endian)
 *     0   magic "TLYMAN01"
 *     8   version u32, reserved u32 (0)
 *    16   generation u64
 *    24   wal_replay_lsn u64
 *    32   next_file_id u64
 *    40   file_count u32, tenant_count u32
 *    48   file ids, u64 each, ascending
 *         tenants, in id order: name size u8, name bytes
 *         version 2: the change section (changes.c): day count u32, floor
 *         day i32, floor LSN u64, then per day: day i32, change LSN u64
 *         version 3: wal_file_id_next u64 (>= 1)
 *   end-8 XXH3-64 of every byte before it
 *
 * Invariants: file ids strictly ascending and < next_file_id; tenant names
 * valid and distinct; tenant ids are their index; changed days strictly
 * ascending and above the floor day, every change LSN in [1,
 * wal_replay_lsn) (only events already in segment files are marked here).
 *
 * Versions: 3 is written; 2 (no next WAL file id) and 1 (no change section
 * either) are still read, with wal_file_id_next 0 and an empty change map.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "codec.h"
#include "endian.h"
#include "tally_limits.h"
#include "manifest.h"

#define MAGIC "TLYMAN01"
#define FIXED_SIZE MANIFEST_HEADER_SIZE


void manifest_free(manifest *m)
{
	free(m->file_ids);
	free(m->tenants);
	change_map_free(&m->changes);
	memset(m, 0, sizeof(*m));
}

int manifest_read(const tally_io *io, const char *dir, manifest *m, char *errmsg)
{
	memset(m, 0, sizeof(*m));
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", dir, MANIFEST_NAME);
	int fd = io->open(io, path, O_RDONLY, 0);
	if (fd == -ENOENT)
		return TALLY_E_NOTFOUND;
	if (fd < 0) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "open %s: %s", path, tally_strerror(fd));
		return fd;
	}
	int rc;
	uint8_t *data = NULL;
	int64_t size = io->file_size(io, fd);
	if (size < 0) {
		rc = (int)size;
		goto io_fail;
	}
	if (size < FIXED_SIZE + 8 || size > MANIFEST_BYTES_MAX) {
		rc = TALLY_E_CORRUPT;
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset 0: impossible size %" PRId64,
				 path, size);
		goto fail;
	}
	data = malloc((size_t)size);
	if (!data) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((rc = tally_io_read_all(io, fd, data, (size_t)size, 0)))
		goto io_fail;
	rc = TALLY_E_CORRUPT;
	size_t body = (size_t)size - 8;
	if (memcmp(data, MAGIC, 8) != 0 || XXH3_64bits(data, body) != le_get_u64(data + body)) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset %zu: bad magic or checksum", path,
				 memcmp(data, MAGIC, 8) ? (size_t)0 : body);
		goto fail;
	}
	uint32_t version = le_get_u32(data + 8);
	if (version < MANIFEST_VERSION_OLDEST || version > MANIFEST_VERSION) {
		rc = TALLY_E_VERSION;
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE,
				 "%s offset 8: version %u, this build reads %u to %u", path, version,
				 (unsigned)MANIFEST_VERSION_OLDEST, (unsigned)MANIFEST_VERSION);
		goto fail;
	}
	/* Written as 0 by every version: anything else is damage that the
	 * checksum was computed over (a writer's bug), or a field some later
	 * version gives a meaning, which would bump the version first. */
	if (le_get_u32(data + 12) != 0) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE,
				 "%s offset 12: reserved field is %u, expected 0", path,
				 le_get_u32(data + 12));
		goto fail;
	}
	m->version = version;
	m->generation = le_get_u64(data + 16);
	m->wal_replay_lsn = le_get_u64(data + 24);
	m->next_file_id = le_get_u64(data + 32);
	m->file_count = le_get_u32(data + 40);
	m->tenant_count = le_get_u32(data + 44);
	size_t offset = FIXED_SIZE;
	/* LSNs and file ids start at 1. A version 1 manifest (no change
	 * section to check it against) once read a replay LSN of 0 and wrote
	 * a version 2 one that no open could read (found by
	 * fuzz/fuzz_manifest.c). */
	if (m->wal_replay_lsn == 0 || m->next_file_id == 0) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE,
				 "%s offset %d: %s is 0; LSNs and file ids start at 1", path,
				 m->wal_replay_lsn == 0 ? 24 : 32,
				 m->wal_replay_lsn == 0 ? "the WAL replay LSN" : "the next file id");
		goto fail;
	}
	if (m->file_count > SEGMENT_FILE_COUNT_MAX || m->tenant_count > TENANT_COUNT_MAX ||
	    offset + (size_t)m->file_count * 8 > body) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset 40: impossible counts", path);
		goto fail;
	}
	m->file_ids = calloc(m->file_count + 1, sizeof(uint64_t));
	m->tenants = calloc(m->tenant_count + 1, sizeof(manifest_tenant));
	if (!m->file_ids || !m->tenants || change_map_init(&m->changes)) {
		rc = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < m->file_count; i++, offset += 8) {
		m->file_ids[i] = le_get_u64(data + offset);
		if ((i && m->file_ids[i] <= m->file_ids[i - 1]) || m->file_ids[i] >= m->next_file_id) {
			if (errmsg)
				snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset %zu: file id out of order",
					 path, offset);
			goto fail;
		}
	}
	for (uint32_t t = 0; t < m->tenant_count; t++) {
		/* A NUL would end the name early for every reader of it. */
		if (offset >= body || data[offset] == 0 || data[offset] > TALLY_TENANT_SIZE_MAX ||
		    offset + 1 + data[offset] > body || memchr(data + offset + 1, 0, data[offset])) {
			if (errmsg)
				snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset %zu: bad tenant entry %u",
					 path, offset, t);
			goto fail;
		}
		manifest_tenant *mt = &m->tenants[t];
		mt->tenant_id = t;
		mt->name_size = data[offset];
		memcpy(mt->name, data + offset + 1, mt->name_size);
		mt->name[mt->name_size] = 0;
		offset += 1 + mt->name_size;
	}
	if (version >= 2) {
		size_t used, bad_offset;
		const char *why;
		if (change_map_decode(&m->changes, data + offset, body - offset, m->wal_replay_lsn,
				      &used, &bad_offset, &why)) {
			if (errmsg)
				snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset %zu: %s", path,
					 offset + bad_offset, why);
			goto fail;
		}
		offset += used;
	}
	if (version >= 3) {
		if (body - offset < 8 || le_get_u64(data + offset) == 0) {
			if (errmsg)
				snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset %zu: %s", path, offset,
					 body - offset < 8 ? "the next WAL file id is missing"
							   : "the next WAL file id is 0; file ids "
							     "start at 1");
			goto fail;
		}
		m->wal_file_id_next = le_get_u64(data + offset);
		offset += 8;
	}
	if (offset != body) {
		if (errmsg)
			snprintf(errmsg, TALLY_ERRMSG_SIZE, "%s offset %zu: trailing bytes", path, offset);
		goto fail;
	}
	free(data);
	io->close(io, fd);
	return 0;
io_fail:
	if (errmsg)
		snprintf(errmsg, TALLY_ERRMSG_SIZE, "read %s: %s", path, tally_strerror(rc));
fail:
	free(data);
	io->close(io, fd);
	manifest_free(m);
	return rc;
}

/* The largest manifest a store writes fits what a read takes. */
_Static_assert(MANIFEST_HEADER_SIZE + (uint64_t)SEGMENT_FILE_COUNT_MAX * 8 +
			       (uint64_t)TENANT_COUNT_MAX * (1 + TALLY_TENANT_SIZE_MAX) +
			       CHANGE_SECTION_FIXED_SIZE + (uint64_t)CHANGE_DAYS_MAX * CHANGE_ENTRY_SIZE +
			       8 + 8 <=
		       MANIFEST_BYTES_MAX,
	       "the largest manifest is readable");

int manifest_encode(const manifest *m, uint8_t **out, size_t *out_size)
{
	assert(m->wal_file_id_next >= 1);
	size_t size = FIXED_SIZE + (size_t)m->file_count * 8 + change_map_encoded_size(&m->changes) +
		      8 + 8;
	for (uint32_t t = 0; t < m->tenant_count; t++)
		size += 1 + m->tenants[t].name_size;
	uint8_t *data = malloc(size);
	*out = data;
	*out_size = size;
	if (!data)
		return -ENOMEM;
	memcpy(data, MAGIC, 8);
	le_put_u32(data + 8, MANIFEST_VERSION);
	le_put_u32(data + 12, 0);
	le_put_u64(data + 16, m->generation + 1);
	le_put_u64(data + 24, m->wal_replay_lsn);
	le_put_u64(data + 32, m->next_file_id);
	le_put_u32(data + 40, m->file_count);
	le_put_u32(data + 44, m->tenant_count);
	size_t offset = FIXED_SIZE;
	for (uint32_t i = 0; i < m->file_count; i++, offset += 8)
		le_put_u64(data + offset, m->file_ids[i]);
	for (uint32_t t = 0; t < m->tenant_count; t++) {
		data[offset] = m->tenants[t].name_size;
		memcpy(data + offset + 1, m->tenants[t].name, m->tenants[t].name_size);
		offset += 1 + m->tenants[t].name_size;
	}
	change_map_encode(&m->changes, data + offset);
	offset += change_map_encoded_size(&m->changes);
	le_put_u64(data + offset, m->wal_file_id_next);
	offset += 8;
	assert(offset + 8 == size);
	le_put_u64(data + offset, XXH3_64bits(data, offset));
	return 0;
}

int manifest_write_encoded(const tally_io *io, const char *dir, const uint8_t *data, size_t size,
			   char *errmsg)
{
	int rc = tally_io_durable_replace(io, dir, MANIFEST_NAME, data, size);
	if (rc && errmsg)
		snprintf(errmsg, TALLY_ERRMSG_SIZE, "write %s/%s: %s", dir, MANIFEST_NAME,
			 tally_strerror(rc));
	return rc;
}

int manifest_write(const tally_io *io, const char *dir, manifest *m, char *errmsg)
{
	uint8_t *data;
	size_t size;
	int rc = manifest_encode(m, &data, &size);
	if (!rc)
		rc = manifest_write_encoded(io, dir, data, size, errmsg);
	free(data);
	if (!rc)
		m->generation++;
	return rc;
}
