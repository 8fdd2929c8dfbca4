/*
 * segment_header.h — a segment file's 32-byte header as bytes, for tests
 * that set one of its fields (docs/formats.md, "Segment file": magic,
 * version at offset 8, flags at 12, the XXH3 of the first 24 bytes at 24).
 * Every failure is a criterion assertion.
 */
#ifndef TALLY_TEST_SEGMENT_HEADER_H
#define TALLY_TEST_SEGMENT_HEADER_H

#include <stdint.h>

#define SEGMENT_HEADER_VERSION_OFFSET 8
#define SEGMENT_HEADER_FLAGS_OFFSET 12

/* Sets the little-endian u32 at offset (< 24) of path's header and writes
 * the header's checksum again, so the file still opens. */
void segment_header_set_u32(const char *path, int offset, uint32_t value);

#endif /* TALLY_TEST_SEGMENT_HEADER_H */
