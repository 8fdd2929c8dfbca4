/*
 * segment_seed.c — makes a seed for fuzz_segment from a real segment file:
 * the file's footer, decompressed, and its block area, in the target's
 * input form (u32 little-endian footer size, the raw footer, the bytes
 * from offset 32 to the footer).
 *
 * usage: segment_seed FILE.seg OUT
 * The file's header and checksums are not checked here: tally verify does
 * that. Exit 0, or 1 with a message on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "endian.h"
#include "segment.h"
#include "tally_limits.h"

static uint8_t *read_file(const char *path, size_t *size)
{
	FILE *in = fopen(path, "rb");
	if (!in)
		return NULL;
	uint8_t *data = NULL;
	long n;
	if (fseek(in, 0, SEEK_END) == 0 && (n = ftell(in)) >= 0 && fseek(in, 0, SEEK_SET) == 0 &&
	    (data = malloc((size_t)n + 1)) && fread(data, 1, (size_t)n, in) == (size_t)n) {
		*size = (size_t)n;
	} else {
		free(data);
		data = NULL;
	}
	fclose(in);
	return data;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: segment_seed FILE.seg OUT\n");
		return 1;
	}
	size_t size = 0;
	uint8_t *data = read_file(argv[1], &size);
	if (!data) {
		fprintf(stderr, "segment_seed: cannot read %s\n", argv[1]);
		return 1;
	}
	const uint8_t *trailer = data + size - SEGMENT_TRAILER_SIZE;
	uint64_t footer_offset = size >= SEGMENT_HEADER_SIZE + SEGMENT_TRAILER_SIZE ? le_get_u64(trailer) : 0;
	uint32_t stored = footer_offset ? le_get_u32(trailer + 8) : 0;
	uint32_t raw_size = footer_offset ? le_get_u32(trailer + 12) : 0;
	if (footer_offset < SEGMENT_HEADER_SIZE || footer_offset + stored != size - SEGMENT_TRAILER_SIZE ||
	    raw_size > SEGMENT_FILE_FOOTER_BYTES_MAX) {
		fprintf(stderr, "segment_seed: %s: not a segment file (bad trailer)\n", argv[1]);
		free(data);
		return 1;
	}
	bytebuf raw = {0};
	if (block_decompress(&raw, data + footer_offset, stored, trailer[16], raw_size)) {
		fprintf(stderr, "segment_seed: %s: the footer does not decompress\n", argv[1]);
		free(data);
		return 1;
	}
	uint8_t head[4];
	le_put_u32(head, (uint32_t)raw.size);
	FILE *out = fopen(argv[2], "wb");
	int bad = !out || fwrite(head, 1, 4, out) != 4 || fwrite(raw.data, 1, raw.size, out) != raw.size ||
		  fwrite(data + SEGMENT_HEADER_SIZE, 1, footer_offset - SEGMENT_HEADER_SIZE, out) !=
			  footer_offset - SEGMENT_HEADER_SIZE;
	if (out && fclose(out))
		bad = 1;
	if (bad)
		fprintf(stderr, "segment_seed: cannot write %s\n", argv[2]);
	bytebuf_free(&raw);
	free(data);
	return bad;
}
