/*
 * test_grow.c — grow.h's slot allocation and array growth.
 *
 * grow_slots_alloc must return zeroed memory whose every page is already
 * mapped (present in /proc/self/pagemap), so that the probes of a new
 * open-addressing table never map the kernel's zero page and fault again
 * on the first write. A plain calloc of the same size is the control: its
 * pages are not mapped until touched.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "grow.h"

enum { TABLE_BYTES = 64 << 20 }; /* far past malloc's mmap threshold */

/* How many pages of [p, p + bytes) /proc/self/pagemap shows present. */
static size_t pages_present(const void *p, size_t bytes)
{
	long page = sysconf(_SC_PAGESIZE);
	cr_assert_gt(page, 0);
	int fd = open("/proc/self/pagemap", O_RDONLY);
	cr_assert_geq(fd, 0, "open /proc/self/pagemap");
	uintptr_t first = (uintptr_t)p / (uintptr_t)page;
	uintptr_t last = ((uintptr_t)p + bytes - 1) / (uintptr_t)page;
	size_t present = 0;
	for (uintptr_t v = first; v <= last; v++) {
		uint64_t entry;
		cr_assert_eq(pread(fd, &entry, sizeof(entry), (off_t)(v * sizeof(entry))),
			     (ssize_t)sizeof(entry));
		present += (size_t)(entry >> 63);
	}
	close(fd);
	return present;
}

Test(grow, slots_alloc_maps_every_page_and_zeroes)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t pages = TABLE_BYTES / (size_t)page;

	uint64_t *control = calloc(TABLE_BYTES / sizeof(uint64_t), sizeof(uint64_t));
	cr_assert_not_null(control);
	/* Only the page malloc wrote its chunk header into is mapped. */
	size_t control_present = pages_present(control, TABLE_BYTES);
	cr_expect_leq(control_present, 1, "an untouched calloc maps %zu of %zu pages: the test's premise",
		      control_present, pages);
	free(control);

	uint64_t *slots = grow_slots_alloc(TABLE_BYTES / sizeof(uint64_t), sizeof(uint64_t));
	cr_assert_not_null(slots);
	cr_expect_eq(pages_present(slots, TABLE_BYTES), pages, "every page mapped");
	for (size_t i = 0; i < TABLE_BYTES / sizeof(uint64_t); i++)
		cr_assert_eq(slots[i], 0, "slot %zu", i);
	free(slots);
}

/* Fills bytes [from, to) of p with a pattern of their offsets. */
static void pattern_fill(uint8_t *p, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		p[i] = (uint8_t)(i * 131 + (i >> 8));
}

static void pattern_check(const uint8_t *p, size_t bytes, const char *step)
{
	for (size_t i = 0; i < bytes; i++)
		cr_assert_eq(p[i], (uint8_t)(i * 131 + (i >> 8)), "%s: byte %zu", step, i);
}

/* Description: grow_array keeps the bytes in use through every change of
 * kind: malloc memory grown by realloc, moved into a mapping, the mapping
 * grown by mremap (several pages, then many), and back into malloc
 * memory; *mapped says which it is after each step, and grow_array_free
 * frees either kind (a wrong kind crashes or leaks under ASan). */
Test(grow, array_keeps_its_bytes_between_malloc_and_mappings)
{
	void *p = NULL;
	uint8_t mapped = 0;
	size_t bytes = 0;
	const struct {
		size_t to;
		int map;
		uint8_t mapped;
		const char *step;
	} steps[] = {
		{1000, 0, 0, "malloc"},
		{5000, 0, 0, "realloc"},
		{40000, 1, 1, "into a mapping"},
		{40001, 1, 1, "mremap by one byte"},
		{3 << 20, 1, 1, "mremap to 3 MiB"},
		{6 << 20, 0, 0, "back into malloc memory"},
		{7 << 20, 1, 1, "into a mapping again"},
	};
	for (size_t k = 0; k < sizeof(steps) / sizeof(steps[0]); k++) {
		cr_assert_eq(grow_array(&p, bytes, steps[k].to, bytes, steps[k].map, &mapped), 0,
			     "%s", steps[k].step);
		cr_assert_eq(mapped, steps[k].mapped, "%s", steps[k].step);
		pattern_check(p, bytes, steps[k].step);
		pattern_fill(p, bytes, steps[k].to);
		bytes = steps[k].to;
	}
	pattern_check(p, bytes, "the end");
	grow_array_free(p, bytes, mapped);
}
