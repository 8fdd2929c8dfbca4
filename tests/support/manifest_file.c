/*
 * manifest_file.c — a store's MANIFEST as bytes (manifest_file.h).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "manifest_file.h"

uint32_t manifest_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t manifest_get_u64(const uint8_t *p)
{
	return (uint64_t)manifest_get_u32(p) | (uint64_t)manifest_get_u32(p + 4) << 32;
}

void manifest_put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void manifest_put_u64(uint8_t *p, uint64_t v)
{
	manifest_put_u32(p, (uint32_t)v);
	manifest_put_u32(p + 4, (uint32_t)(v >> 32));
}

void manifest_file_load(const char *dir, manifest_bytes *m)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/MANIFEST", dir);
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "open %s", path);
	cr_assert_eq(fseek(f, 0, SEEK_END), 0);
	long size = ftell(f);
	cr_assert_gt(size, MANIFEST_FIXED_SIZE + 8);
	rewind(f);
	m->size = (size_t)size;
	m->data = malloc(m->size);
	cr_assert_not_null(m->data);
	cr_assert_eq(fread(m->data, 1, m->size, f), m->size);
	fclose(f);
	uint32_t file_count = manifest_get_u32(m->data + 40);
	uint32_t tenant_count = manifest_get_u32(m->data + 44);
	size_t offset = MANIFEST_FIXED_SIZE + (size_t)file_count * 8;
	m->tenants_offset = offset;
	for (uint32_t t = 0; t < tenant_count; t++)
		offset += 1 + m->data[offset];
	m->changes_offset = offset;
	/* The change section: 16 bytes, then 12 per day. */
	if (manifest_get_u32(m->data + 8) >= 2 && offset + 4 <= m->size)
		offset += 16 + 12 * (size_t)manifest_get_u32(m->data + offset);
	m->wal_offset = offset;
}

void manifest_file_store(const char *dir, uint8_t *data, size_t size)
{
	manifest_put_u64(data + size - 8, XXH3_64bits(data, size - 8));
	char path[4200];
	snprintf(path, sizeof(path), "%s/MANIFEST", dir);
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f, "open %s", path);
	cr_assert_eq(fwrite(data, 1, size, f), size);
	cr_assert_eq(fclose(f), 0);
}
