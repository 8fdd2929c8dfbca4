/*
 * endian.h — little-endian loads and stores for on-disk integers. Every
 * fixed-width field of tally's files is little-endian (docs/formats.md);
 * these byte-at-a-time forms are correct on any host and compile to plain
 * loads and stores on x86-64.
 */
#ifndef TALLY_ENDIAN_H
#define TALLY_ENDIAN_H

#include <stdint.h>

static inline void le_put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline void le_put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t le_get_u32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static inline uint64_t le_get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

#endif /* TALLY_ENDIAN_H */
