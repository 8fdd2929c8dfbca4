/*
 * mem_io.h — a read-only tally_io that serves one file from memory, for
 * the fuzz targets: every path opens the same buffer (mem_file,
 * mem_file_size, set before each call into the engine). Only open, close,
 * pread and file_size exist; the engine's readers need no more.
 */
#ifndef TALLY_FUZZ_MEM_IO_H
#define TALLY_FUZZ_MEM_IO_H

#include <stdint.h>
#include <string.h>

#include "tally_io.h"

#define MEM_IO_FD 3

static const uint8_t *mem_file;
static size_t mem_file_size;

static int mem_open(const tally_io *io, const char *path, int flags, int mode)
{
	(void)io, (void)path, (void)flags, (void)mode;
	return MEM_IO_FD;
}

static int mem_close(const tally_io *io, int fd)
{
	(void)io, (void)fd;
	return 0;
}

static int64_t mem_pread(const tally_io *io, int fd, void *buf, size_t size, uint64_t offset)
{
	(void)io, (void)fd;
	if (offset >= mem_file_size)
		return 0;
	size_t n = mem_file_size - offset < size ? mem_file_size - offset : size;
	memcpy(buf, mem_file + offset, n);
	return (int64_t)n;
}

static int64_t mem_size(const tally_io *io, int fd)
{
	(void)io, (void)fd;
	return (int64_t)mem_file_size;
}

static const tally_io mem_io = {
	.open = mem_open,
	.close = mem_close,
	.pread = mem_pread,
	.file_size = mem_size,
};

#endif /* TALLY_FUZZ_MEM_IO_H */
