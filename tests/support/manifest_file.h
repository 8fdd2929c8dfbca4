/*
 * manifest_file.h — a store's MANIFEST as bytes, for tests that read its
 * fields or write a changed copy back (docs/formats.md, "Manifest").
 * Every failure is a criterion assertion.
 */
#ifndef TALLY_TEST_MANIFEST_FILE_H
#define TALLY_TEST_MANIFEST_FILE_H

#include <stddef.h>
#include <stdint.h>

#define MANIFEST_FIXED_SIZE 48 /* magic, version, generation, replay LSN, next file id, counts */

typedef struct manifest_bytes {
	uint8_t *data;
	size_t size;
	size_t tenants_offset; /* the first tenant entry */
	size_t changes_offset; /* start of the change section (version 2) */
	size_t wal_offset;     /* the next WAL file id (version 3): after the change section */
} manifest_bytes;

/* Reads DIR/MANIFEST (free m->data). */
void manifest_file_load(const char *dir, manifest_bytes *m);

/* Writes size bytes of data as DIR/MANIFEST, with a fresh checksum over
 * all but the last 8 (which it overwrites). */
void manifest_file_store(const char *dir, uint8_t *data, size_t size);

/* Little-endian fields (the manifest's byte order). */
uint32_t manifest_get_u32(const uint8_t *p);
uint64_t manifest_get_u64(const uint8_t *p);
void manifest_put_u32(uint8_t *p, uint32_t v);
void manifest_put_u64(uint8_t *p, uint64_t v);

#endif /* TALLY_TEST_MANIFEST_FILE_H */
