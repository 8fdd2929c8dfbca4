/*
 * test_grow.c — grow.h's slot allocation.
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
