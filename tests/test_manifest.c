/*
 * test_manifest.c — a MANIFEST whose checksum is right but whose contents
 * are not (a future version, impossible counts, file ids out of order, a
 * bad tenant entry, bytes left over, a file too short): the store refuses
 * to open on it, and tally_verify reports it, each naming the file and the
 * offset of the first bad field (docs/formats.md, "Manifest").
 *
 * The checksum catches damage; these checks catch what a checksum cannot:
 * a manifest that a newer build, or a bug, wrote whole and consistent.
 * Each case edits the manifest of a real store (two segment files, two
 * tenants, a change section) and writes it back with a fresh checksum.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/fault_io.h"
#include "support/manifest_file.h"
#include "support/test_dir.h"
#include "tally.h"

#define NOW_US (INT64_C(1790000000) * 1000000)

static test_dir td;
static fault_io *fio;

static void setup(void)
{
	fio = test_dir_store_setup(td.path, sizeof(td.path), "manifest", NOW_US);
}

static void teardown(void)
{
	test_dir_store_teardown(td.path, fio);
}

TestSuite(manifest, .init = setup, .fini = teardown);

static int store_open(tally_store **s, char *err)
{
	tally_options o;
	tally_options_default(&o);
	o.io = fault_io_table(fio);
	o.background = false;
	*s = NULL;
	return tally_store_open(td.path, &o, s, err);
}

/* Two tenants, two flushes: a manifest of two files, two tenants and a
 * change section. */
static void build_store(void)
{
	tally_store *s;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(store_open(&s, err), 0, "%s", err);
	const char *tenants[2] = {"acme", "beta"};
	char id[32];
	for (int round = 0; round < 2; round++) {
		for (int t = 0; t < 2; t++) {
			snprintf(id, sizeof(id), "ev-%d-%d", round, t);
			tally_event e = {
				.event_id = {id, (uint32_t)strlen(id)},
				.time_us = NOW_US - 3600 * INT64_C(1000000),
				.type = {"llm_call", 8},
				.tokens_in = 10,
			};
			tally_ingest_result r;
			cr_assert_eq(tally_ingest(s, tenants[t], &e, 1, &r), 0);
			cr_assert_eq(r.code, TALLY_ACCEPTED);
		}
		cr_assert_eq(tally_flush(s), 0);
	}
	cr_assert_eq(tally_store_close(s), 0);
}

static void problem_keep(void *ctx, const char *message)
{
	char *first = ctx;
	if (!first[0])
		snprintf(first, TALLY_ERRMSG_SIZE, "%s", message);
}

/* The store refuses to open with `code` and a message holding `where`
 * (the file the problem is in) and `says`; tally_verify reports a problem
 * saying the same. */
static void expect_refused_in(int code, const char *where, const char *says)
{
	tally_store *s;
	char err[TALLY_ERRMSG_SIZE] = "";
	int rc = store_open(&s, err);
	cr_assert_eq(rc, code, "open: %s (%s)", tally_strerror(rc), err);
	cr_assert_null(s);
	cr_assert(strstr(err, where) && strstr(err, says), "open: \"%s\" does not say \"%s\"", err,
		  says);
	char first[TALLY_ERRMSG_SIZE] = "";
	int problems = tally_verify(td.path, problem_keep, first);
	cr_assert_gt(problems, 0, "verify found nothing");
	cr_assert(strstr(first, where) && strstr(first, says), "verify: \"%s\" does not say \"%s\"",
		  first, says);
}

/* A problem of the manifest itself. */
static void expect_refused(int code, const char *says)
{
	expect_refused_in(code, "MANIFEST", says);
}

static manifest_bytes loaded(void)
{
	build_store();
	manifest_bytes m;
	manifest_file_load(td.path, &m);
	cr_assert_eq(manifest_get_u32(m.data + 40), 2, "two files");
	cr_assert_eq(manifest_get_u32(m.data + 44), 2, "two tenants");
	return m;
}

/* Description: the untouched manifest, written back with its checksum
 * made again, opens (the edits below are all that is wrong). */
Test(manifest, rewritten_unchanged_it_opens)
{
	manifest_bytes m = loaded();
	manifest_file_store(td.path, m.data, m.size);
	free(m.data);
	tally_store *s;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(store_open(&s, err), 0, "%s", err);
	cr_assert_eq(tally_store_close(s), 0);
	cr_assert_eq(tally_verify(td.path, problem_keep, err), 0, "%s", err);
}

/* Description: a version this build does not read, newer or older, is
 * TALLY_E_VERSION at offset 8, naming the versions it reads. */
Test(manifest, a_version_this_build_does_not_read)
{
	manifest_bytes m = loaded();
	manifest_put_u32(m.data + 8, 4);
	manifest_file_store(td.path, m.data, m.size);
	expect_refused(TALLY_E_VERSION, "offset 8: version 4, this build reads 1 to 3");
	manifest_put_u32(m.data + 8, 0);
	manifest_file_store(td.path, m.data, m.size);
	expect_refused(TALLY_E_VERSION, "offset 8: version 0");
	free(m.data);
}

/* Description: the reserved field at offset 12, written as 0 by every
 * version, is corruption when it is not (under a good checksum). */
Test(manifest, a_reserved_field_that_is_not_zero)
{
	manifest_bytes m = loaded();
	manifest_put_u32(m.data + 12, 7);
	manifest_file_store(td.path, m.data, m.size);
	expect_refused(TALLY_E_CORRUPT, "offset 12: reserved field is 7, expected 0");
	free(m.data);
}

/* Description: more files than the manifest has bytes for, or than a
 * store may hold, are impossible counts at offset 40. */
Test(manifest, impossible_counts)
{
	manifest_bytes m = loaded();
	manifest_put_u32(m.data + 40, 1u << 30);
	manifest_file_store(td.path, m.data, m.size);
	expect_refused(TALLY_E_CORRUPT, "offset 40: impossible counts");
	free(m.data);
}

/* Description: file ids must rise and stay below the next file id: two
 * swapped, or one at the next id, are refused at the offset of the id. */
Test(manifest, file_ids_out_of_order)
{
	manifest_bytes m = loaded();
	uint64_t first = manifest_get_u64(m.data + MANIFEST_FIXED_SIZE);
	uint64_t second = manifest_get_u64(m.data + MANIFEST_FIXED_SIZE + 8);
	manifest_put_u64(m.data + MANIFEST_FIXED_SIZE, second);
	manifest_put_u64(m.data + MANIFEST_FIXED_SIZE + 8, first);
	manifest_file_store(td.path, m.data, m.size);
	expect_refused(TALLY_E_CORRUPT, "offset 56: file id out of order");

	manifest_put_u64(m.data + MANIFEST_FIXED_SIZE, first);
	manifest_put_u64(m.data + MANIFEST_FIXED_SIZE + 8, manifest_get_u64(m.data + 32));
	manifest_file_store(td.path, m.data, m.size);
	expect_refused(TALLY_E_CORRUPT, "offset 56: file id out of order");
	free(m.data);
}

/* Description: a WAL replay LSN or a next file id of 0 (both start at 1)
 * is refused at its offset, in versions 3, 2 and 1; version 1 has no
 * change section to catch the LSN: a version 1 manifest with a replay LSN
 * of 0 once read, and the version 2 manifest the store then wrote did not
 * (found by fuzz/fuzz_manifest.c). */
Test(manifest, a_replay_lsn_or_next_file_id_of_zero)
{
	manifest_bytes m = loaded();
	uint64_t lsn = manifest_get_u64(m.data + 24), next = manifest_get_u64(m.data + 32);
	/* Versions 2 and 1: the same fields without the next WAL file id, and
	 * without the change section as well. */
	size_t sizes[4] = {0, m.changes_offset + 8, m.wal_offset + 8, m.size};
	for (int version = 3; version >= 1; version--) {
		size_t size = sizes[version];
		manifest_put_u32(m.data + 8, (uint32_t)version);
		manifest_put_u64(m.data + 24, 0);
		manifest_file_store(td.path, m.data, size);
		expect_refused(TALLY_E_CORRUPT, "offset 24: the WAL replay LSN is 0; LSNs and file ids start at 1");
		manifest_put_u64(m.data + 24, lsn);
		manifest_put_u64(m.data + 32, 0);
		manifest_file_store(td.path, m.data, size);
		expect_refused(TALLY_E_CORRUPT, "offset 32: the next file id is 0");
		manifest_put_u64(m.data + 32, next);
	}
	manifest_file_store(td.path, m.data, sizes[1]);
	tally_store *s;
	char err[TALLY_ERRMSG_SIZE] = "";
	cr_assert_eq(store_open(&s, err), 0, "the version 1 manifest put back opens: %s", err);
	cr_assert_eq(tally_store_close(s), 0);
	free(m.data);
}

/* Description: version 3's next WAL file id (after the change section) is
 * refused at its offset when it is 0 or missing. */
Test(manifest, a_next_wal_file_id_of_zero_or_missing)
{
	manifest_bytes m = loaded();
	cr_assert_eq(m.size, m.wal_offset + 16, "the field is the last before the checksum");
	cr_assert_eq(manifest_get_u64(m.data + m.wal_offset), 3,
		     "each flush retired the WAL's one file: files 1 and 2 are gone");
	char says[80];
	manifest_put_u64(m.data + m.wal_offset, 0);
	manifest_file_store(td.path, m.data, m.size);
	snprintf(says, sizeof(says), "offset %zu: the next WAL file id is 0; file ids start at 1",
		 m.wal_offset);
	expect_refused(TALLY_E_CORRUPT, says);
	manifest_file_store(td.path, m.data, m.wal_offset + 8);
	snprintf(says, sizeof(says), "offset %zu: the next WAL file id is missing", m.wal_offset);
	expect_refused(TALLY_E_CORRUPT, says);
	free(m.data);
}

/* Description: a tenant entry with an empty name is refused at its
 * offset, naming the entry. */
Test(manifest, a_bad_tenant_entry)
{
	manifest_bytes m = loaded();
	char says[64];
	snprintf(says, sizeof(says), "offset %zu: bad tenant entry 0", m.tenants_offset);
	m.data[m.tenants_offset] = 0;
	manifest_file_store(td.path, m.data, m.size);
	expect_refused(TALLY_E_CORRUPT, says);
	free(m.data);
}

/* Description: bytes after the last section are refused at their
 * offset. */
Test(manifest, trailing_bytes)
{
	manifest_bytes m = loaded();
	size_t size = m.size + 4;
	uint8_t *longer = calloc(1, size);
	cr_assert_not_null(longer);
	memcpy(longer, m.data, m.size - 8);
	manifest_file_store(td.path, longer, size);
	char says[64];
	snprintf(says, sizeof(says), "offset %zu: trailing bytes", m.size - 8);
	expect_refused(TALLY_E_CORRUPT, says);
	free(longer);
	free(m.data);
}

/* Description: a manifest shorter than its fixed fields and checksum is
 * an impossible size at offset 0. */
Test(manifest, too_short)
{
	manifest_bytes m = loaded();
	manifest_file_store(td.path, m.data, MANIFEST_FIXED_SIZE);
	expect_refused(TALLY_E_CORRUPT, "offset 0: impossible size 48");
	free(m.data);
}

/* Description: a tenant name that repeats an earlier entry's, or that is
 * not a valid name, is refused at the entry's offset, by open and verify
 * in the same words. */
Test(manifest, a_repeated_or_invalid_tenant_name)
{
	manifest_bytes m = loaded();
	size_t second = m.tenants_offset + 1 + m.data[m.tenants_offset];
	cr_assert_eq(m.data[second], 4);
	cr_assert_eq(memcmp(m.data + second + 1, "beta", 4), 0);
	memcpy(m.data + second + 1, "acme", 4);
	manifest_file_store(td.path, m.data, m.size);
	char says[96];
	snprintf(says, sizeof(says), "offset %zu: tenant name 'acme' repeats tenant 0", second);
	expect_refused(TALLY_E_CORRUPT, says);
	memcpy(m.data + second + 1, "be/a", 4);
	manifest_file_store(td.path, m.data, m.size);
	snprintf(says, sizeof(says), "offset %zu: tenant 1 has an invalid name", second);
	expect_refused(TALLY_E_CORRUPT, says);
	free(m.data);
}

/* Description: tenant ids that do not match the segment files' (the
 * manifest's two names swapped, so every file would show each tenant the
 * other's events) are refused: the file's footer names the tenant and id
 * the manifest does not. */
Test(manifest, tenant_ids_that_do_not_match_the_segment_files)
{
	manifest_bytes m = loaded();
	size_t first = m.tenants_offset, second = first + 1 + m.data[first];
	cr_assert_eq(memcmp(m.data + first + 1, "acme", 4), 0);
	cr_assert_eq(memcmp(m.data + second + 1, "beta", 4), 0);
	memcpy(m.data + first + 1, "beta", 4);
	memcpy(m.data + second + 1, "acme", 4);
	manifest_file_store(td.path, m.data, m.size);
	expect_refused_in(TALLY_E_CORRUPT, ".seg offset ",
			  ": footer names tenant acme with id 0, which the manifest does not");
	free(m.data);
}
