/*
 * changes.c — the change map (see changes.h).
 *
 * A sorted array of (day, LSN) pairs, struct of arrays so that the binary
 * search over days touches one small array (4096 days: 16 KiB). Marking
 * costs one comparison when the day is the last one marked (the hint), a
 * binary search otherwise, and a memmove of at most CHANGE_DAYS_MAX entries
 * when a day is new (once per day and store, not per event).
 *
 * Section layout (little-endian; docs/formats.md, "Manifest"):
 *     0   day count u32 (<= CHANGE_DAYS_MAX)
 *     4   floor day i32 (INT32_MIN: no floor)
 *     8   floor LSN u64 (0: no floor)
 *    16   per day, ascending: day i32, change LSN u64
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "changes.h"
#include "endian.h"

_Static_assert(CHANGE_DAYS_MAX <= UINT32_MAX / CHANGE_ENTRY_SIZE, "the section size fits a u32");

int change_map_init(change_map *m)
{
	memset(m, 0, sizeof(*m));
	m->days = malloc(sizeof(*m->days) * CHANGE_DAYS_MAX);
	m->lsns = malloc(sizeof(*m->lsns) * CHANGE_DAYS_MAX);
	if (!m->days || !m->lsns) {
		change_map_free(m);
		return -ENOMEM;
	}
	m->floor_day = CHANGE_FLOOR_NONE;
	return 0;
}

void change_map_free(change_map *m)
{
	free(m->days);
	free(m->lsns);
	memset(m, 0, sizeof(*m));
}

void change_map_copy(change_map *dst, const change_map *src)
{
	assert(dst->days && dst->lsns && src->count <= CHANGE_DAYS_MAX);
	if (src->count) {
		memcpy(dst->days, src->days, sizeof(*dst->days) * src->count);
		memcpy(dst->lsns, src->lsns, sizeof(*dst->lsns) * src->count);
	}
	dst->count = src->count;
	dst->floor_day = src->floor_day;
	dst->floor_lsn = src->floor_lsn;
	dst->hint = 0;
}

void change_map_swap(change_map *a, change_map *b)
{
	change_map t = *a;
	*a = *b;
	*b = t;
}

/* The first index whose day is >= day (count if none). */
static uint32_t lower_bound(const change_map *m, int32_t day)
{
	uint32_t lo = 0, hi = m->count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (m->days[mid] < day)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void floor_raise(change_map *m, int32_t day, uint64_t lsn)
{
	if (m->floor_day == CHANGE_FLOOR_NONE || day > m->floor_day)
		m->floor_day = day;
	if (lsn > m->floor_lsn)
		m->floor_lsn = lsn;
}

void change_map_mark(change_map *m, int32_t day, uint64_t lsn)
{
	assert(lsn >= 1 && day != CHANGE_FLOOR_NONE);
	if (m->hint < m->count && m->days[m->hint] == day) {
		if (lsn > m->lsns[m->hint])
			m->lsns[m->hint] = lsn;
		return;
	}
	if (m->floor_day != CHANGE_FLOOR_NONE && day <= m->floor_day) {
		floor_raise(m, day, lsn); /* below the floor: the floor stands for it */
		return;
	}
	uint32_t i = lower_bound(m, day);
	if (i < m->count && m->days[i] == day) {
		if (lsn > m->lsns[i])
			m->lsns[i] = lsn;
		m->hint = i;
		return;
	}
	if (m->count == CHANGE_DAYS_MAX) {
		if (i == 0) {
			/* Older than every listed day: straight under the floor. */
			floor_raise(m, day, lsn);
			return;
		}
		/* Drop the smallest day; the new one goes just before i. */
		floor_raise(m, m->days[0], m->lsns[0]);
		i--;
		memmove(m->days, m->days + 1, sizeof(*m->days) * i);
		memmove(m->lsns, m->lsns + 1, sizeof(*m->lsns) * i);
	} else {
		memmove(m->days + i + 1, m->days + i, sizeof(*m->days) * (m->count - i));
		memmove(m->lsns + i + 1, m->lsns + i, sizeof(*m->lsns) * (m->count - i));
		m->count++;
	}
	m->days[i] = day;
	m->lsns[i] = lsn;
	m->hint = i;
}

uint64_t change_map_day_lsn(const change_map *m, int32_t day)
{
	if (m->floor_day != CHANGE_FLOOR_NONE && day <= m->floor_day)
		return m->floor_lsn;
	uint32_t i = lower_bound(m, day);
	return i < m->count && m->days[i] == day ? m->lsns[i] : 0;
}

int change_map_list(const change_map *m, uint64_t since_lsn, int32_t *days, uint64_t *lsns,
		    size_t cap, size_t *count)
{
	*count = 0;
	if (since_lsn < m->floor_lsn)
		return TALLY_E_NOTFOUND;
	size_t n = 0;
	for (uint32_t i = 0; i < m->count; i++) {
		if (m->lsns[i] <= since_lsn)
			continue;
		if (n < cap) {
			days[n] = m->days[i];
			lsns[n] = m->lsns[i];
		}
		n++;
	}
	*count = n;
	return n > cap ? TALLY_E_LIMIT : 0;
}

size_t change_map_encoded_size(const change_map *m)
{
	return CHANGE_SECTION_FIXED_SIZE + (size_t)m->count * CHANGE_ENTRY_SIZE;
}

void change_map_encode(const change_map *m, uint8_t *out)
{
	le_put_u32(out, m->count);
	/* A zeroed map (never initialised) has no floor either. */
	le_put_u32(out + 4, (uint32_t)(m->floor_lsn ? m->floor_day : CHANGE_FLOOR_NONE));
	le_put_u64(out + 8, m->floor_lsn);
	uint8_t *p = out + CHANGE_SECTION_FIXED_SIZE;
	for (uint32_t i = 0; i < m->count; i++, p += CHANGE_ENTRY_SIZE) {
		le_put_u32(p, (uint32_t)m->days[i]);
		le_put_u64(p + 4, m->lsns[i]);
	}
}

int change_map_decode(change_map *m, const uint8_t *p, size_t size, uint64_t lsn_end, size_t *used,
		      size_t *bad_offset, const char **why)
{
	m->count = 0;
	m->floor_day = CHANGE_FLOOR_NONE;
	m->floor_lsn = 0;
	m->hint = 0;
	*bad_offset = 0;
	if (size < CHANGE_SECTION_FIXED_SIZE) {
		*why = "change section truncated";
		return TALLY_E_CORRUPT;
	}
	uint32_t count = le_get_u32(p);
	int32_t floor_day = (int32_t)le_get_u32(p + 4);
	uint64_t floor_lsn = le_get_u64(p + 8);
	if (count > CHANGE_DAYS_MAX ||
	    (size - CHANGE_SECTION_FIXED_SIZE) / CHANGE_ENTRY_SIZE < count) {
		*why = "impossible changed day count";
		return TALLY_E_CORRUPT;
	}
	if ((floor_lsn == 0) != (floor_day == CHANGE_FLOOR_NONE) || floor_lsn >= lsn_end) {
		*bad_offset = 4;
		*why = "floor day and LSN disagree, or the floor LSN is not before the WAL replay LSN";
		return TALLY_E_CORRUPT;
	}
	const uint8_t *e = p + CHANGE_SECTION_FIXED_SIZE;
	for (uint32_t i = 0; i < count; i++, e += CHANGE_ENTRY_SIZE) {
		int32_t day = (int32_t)le_get_u32(e);
		uint64_t lsn = le_get_u64(e + 4);
		int64_t previous = i ? m->days[i - 1] : floor_day;
		if (day <= previous || lsn == 0 || lsn >= lsn_end) {
			*bad_offset = (size_t)(e - p);
			*why = "changed day out of order, at or below the floor, or an LSN that is 0 "
			       "or not before the WAL replay LSN";
			m->count = 0;
			return TALLY_E_CORRUPT;
		}
		m->days[i] = day;
		m->lsns[i] = lsn;
		m->count = i + 1;
	}
	m->floor_day = floor_day;
	m->floor_lsn = floor_lsn;
	*used = CHANGE_SECTION_FIXED_SIZE + (size_t)count * CHANGE_ENTRY_SIZE;
	return 0;
}
