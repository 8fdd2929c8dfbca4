/*
 * wal_seed.c — makes a seed for fuzz_wal from a real WAL file: its records'
 * types and payloads, in the target's input form (per record a type byte,
 * a u32 little-endian payload size, the payload). Checksums and LSNs are
 * left behind: the target makes its own.
 *
 * usage: wal_seed FILE.wal OUT
 * Stops at the first record that does not fit the file (a torn tail).
 * Exit 0, or 1 with a message on stderr.
 */
#include <stdio.h>
#include <stdlib.h>

#include "endian.h"

#define WAL_HEADER_SIZE 40
#define RECORD_HEADER_SIZE 24

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: wal_seed FILE.wal OUT\n");
		return 1;
	}
	FILE *in = fopen(argv[1], "rb");
	uint8_t *data = NULL;
	long size = -1;
	if (in && fseek(in, 0, SEEK_END) == 0 && (size = ftell(in)) >= WAL_HEADER_SIZE &&
	    fseek(in, 0, SEEK_SET) == 0 && (data = malloc((size_t)size)) &&
	    fread(data, 1, (size_t)size, in) != (size_t)size)
		size = -1;
	if (in)
		fclose(in);
	if (!data || size < WAL_HEADER_SIZE) {
		fprintf(stderr, "wal_seed: cannot read %s as a WAL file\n", argv[1]);
		free(data);
		return 1;
	}
	FILE *out = fopen(argv[2], "wb");
	int bad = !out;
	size_t at = WAL_HEADER_SIZE, records = 0;
	while (!bad && at + RECORD_HEADER_SIZE <= (size_t)size) {
		uint32_t n = le_get_u32(data + at + 16);
		size_t padded = ((size_t)n + 7) & ~(size_t)7;
		if (le_get_u64(data + at + 8) == 0 || padded > (size_t)size - at - RECORD_HEADER_SIZE)
			break; /* zero padding or a torn tail */
		uint8_t head[5] = {data[at + 20]};
		le_put_u32(head + 1, n);
		bad = fwrite(head, 1, 5, out) != 5 ||
		      fwrite(data + at + RECORD_HEADER_SIZE, 1, n, out) != n;
		at += RECORD_HEADER_SIZE + padded;
		records++;
	}
	if (out && fclose(out))
		bad = 1;
	if (bad)
		fprintf(stderr, "wal_seed: cannot write %s\n", argv[2]);
	else
		fprintf(stderr, "wal_seed: %zu records\n", records);
	free(data);
	return bad;
}
