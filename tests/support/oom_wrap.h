/*
 * oom_wrap.h — the allocation wrappers of the tests that fail allocations
 * (test_oom.c, test_server_oom.c).
 *
 * Such a test binary is linked with -Wl,--wrap for malloc, calloc,
 * realloc, aligned_alloc, mmap and mremap (Makefile, OOM_WRAP): every call
 * to them in the binary's own objects comes to the __wrap_ functions
 * below, which fail it (NULL or MAP_FAILED, errno ENOMEM) when the test's
 * oom_fails() says so, and otherwise pass it on. Include this once, in the
 * test's one source file, after defining
 *     static bool oom_fails(void);
 * (the functions are defined here, not declared: the linker needs them
 * once per binary). With oom_aligned_only set (on the test's thread),
 * only aligned_alloc consults oom_fails(): the engine calls it for a new
 * memtable alone, so a call fails at the same point however many other
 * allocations came before.
 */
#ifndef TALLY_TESTS_OOM_WRAP_H
#define TALLY_TESTS_OOM_WRAP_H

#include <stdarg.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/types.h>

void *__real_malloc(size_t size);
void *__real_calloc(size_t count, size_t size);
void *__real_realloc(void *p, size_t size);
void *__real_aligned_alloc(size_t alignment, size_t size);
void *__real_mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);
void *__real_mremap(void *old, size_t old_size, size_t new_size, int flags, ...);

void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t count, size_t size);
void *__wrap_realloc(void *p, size_t size);
void *__wrap_aligned_alloc(size_t alignment, size_t size);
void *__wrap_mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);
void *__wrap_mremap(void *old, size_t old_size, size_t new_size, int flags, ...);

static _Thread_local bool oom_aligned_only;

void *__wrap_malloc(size_t size)
{
	return !oom_aligned_only && oom_fails() ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t count, size_t size)
{
	return !oom_aligned_only && oom_fails() ? NULL : __real_calloc(count, size);
}

void *__wrap_realloc(void *p, size_t size)
{
	return !oom_aligned_only && oom_fails() ? NULL : __real_realloc(p, size);
}

void *__wrap_aligned_alloc(size_t alignment, size_t size)
{
	return oom_fails() ? NULL : __real_aligned_alloc(alignment, size);
}

void *__wrap_mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
	if (!oom_aligned_only && oom_fails())
		return MAP_FAILED;
	return __real_mmap(addr, length, prot, flags, fd, offset);
}

void *__wrap_mremap(void *old, size_t old_size, size_t new_size, int flags, ...)
{
	if (!oom_aligned_only && oom_fails())
		return MAP_FAILED;
	void *new_address = NULL;
	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		new_address = va_arg(ap, void *);
		va_end(ap);
	}
	return __real_mremap(old, old_size, new_size, flags, new_address);
}

#endif /* TALLY_TESTS_OOM_WRAP_H */
