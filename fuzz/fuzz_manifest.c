/*
 * fuzz_manifest.c — libFuzzer target for DIR/MANIFEST with a good
 * checksum: its counts, file ids, tenant entries and change map
 * (manifest_read), and the writer's encoding of what was read.
 *
 * The input is a manifest without its trailing checksum; the target
 * appends the checksum and serves the file from memory (mem_io.h). A
 * manifest that reads must encode back to bytes that read as the same
 * manifest: encode(read(encode(m))) equals encode(m) byte for byte, with
 * the generation the writer adds taken back (the target aborts
 * otherwise). A finding is that, a sanitizer report or a crash.
 *
 * Seeds (fuzz/corpus-manifest/) are real manifests, their last 8 bytes
 * (the checksum) cut off.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "endian.h"
#include "manifest.h"
#include "mem_io.h"

/* Reads `size` bytes plus their checksum as a manifest: manifest_read's
 * code. */
static int read_image(const uint8_t *data, size_t size, manifest *m)
{
	uint8_t *image = malloc(size + 8);
	if (!image)
		return -1;
	memcpy(image, data, size);
	le_put_u64(image + size, XXH3_64bits(data, size));
	mem_file = image;
	mem_file_size = size + 8;
	char errmsg[TALLY_ERRMSG_SIZE];
	int rc = manifest_read(&mem_io, "fuzz", m, errmsg);
	free(image);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	manifest m;
	if (read_image(data, size, &m))
		return 0;
	if (!m.wal_file_id_next) /* versions 1 and 2: the store sets it from its WAL */
		m.wal_file_id_next = 1;
	uint8_t *once = NULL, *twice = NULL;
	size_t once_size, twice_size;
	if (manifest_encode(&m, &once, &once_size)) {
		manifest_free(&m);
		free(once);
		return 0;
	}
	manifest again;
	/* The image without its checksum, which read_image adds. */
	if (read_image(once, once_size - 8, &again)) {
		fprintf(stderr, "fuzz_manifest: the encoding of a manifest that read does not read\n");
		abort();
	}
	again.generation--;
	if (manifest_encode(&again, &twice, &twice_size) ||
	    twice_size != once_size || memcmp(once, twice, once_size)) {
		fprintf(stderr, "fuzz_manifest: a manifest read back encodes to other bytes\n");
		abort();
	}
	free(once);
	free(twice);
	manifest_free(&m);
	manifest_free(&again);
	return 0;
}
