/*
 * segment_header.c — a segment file's header fields (segment_header.h).
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <unistd.h>

#include <xxhash.h>

#include "segment.h"
#include "segment_header.h"

void segment_header_set_u32(const char *path, int offset, uint32_t value)
{
	cr_assert(offset >= 0 && offset + 4 <= 24, "offset %d is not a checksummed field", offset);
	int fd = open(path, O_RDWR);
	cr_assert_geq(fd, 0, "open %s", path);
	uint8_t header[SEGMENT_HEADER_SIZE];
	cr_assert_eq(pread(fd, header, sizeof(header), 0), (ssize_t)sizeof(header));
	for (int i = 0; i < 4; i++)
		header[offset + i] = (uint8_t)(value >> (8 * i));
	uint64_t checksum = XXH3_64bits(header, 24);
	for (int i = 0; i < 8; i++)
		header[24 + i] = (uint8_t)(checksum >> (8 * i));
	cr_assert_eq(pwrite(fd, header, sizeof(header), 0), (ssize_t)sizeof(header));
	close(fd);
}
