#define _GNU_SOURCE
#include "AllocationCounter.h"
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

static __thread int rd_counting;
static __thread unsigned long long rd_count;
static __thread unsigned long long rd_library_count;
/// The executable code of the library whose allocations are counted apart: [low, high).
static uintptr_t rd_library_low, rd_library_high;

void rd_allocation_counter_start(void) {
    rd_count = 0;
    rd_library_count = 0;
    rd_counting = 1;
}

unsigned long long rd_allocation_counter_library_count(void) {
    return rd_library_count;
}

unsigned long long rd_allocation_counter_stop(void) {
    rd_counting = 0;
    return rd_count;
}

#if defined(__linux__) && defined(__GLIBC__)
#include <link.h>
#include <string.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

int rd_allocation_counter_available(void) { return 1; }

static int rd_find_library(struct dl_phdr_info *info, size_t size, void *name) {
    (void)size;
    if (info->dlpi_name == NULL || strstr(info->dlpi_name, (const char *)name) == NULL) return 0;
    uintptr_t low = UINTPTR_MAX, high = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *segment = &info->dlpi_phdr[i];
        if (segment->p_type != PT_LOAD || !(segment->p_flags & PF_X)) continue;
        uintptr_t start = info->dlpi_addr + segment->p_vaddr;
        if (start < low) low = start;
        if (start + segment->p_memsz > high) high = start + segment->p_memsz;
    }
    if (high == 0) return 0;
    rd_library_low = low;
    rd_library_high = high;
    return 1;
}

int rd_allocation_counter_set_library(const char *name) {
    rd_library_low = rd_library_high = 0;
    return dl_iterate_phdr(rd_find_library, (void *)name);
}

// The caller is malloc's (or calloc's ...) return address: these are the functions themselves.
#define RD_COUNT() do { \
    if (rd_counting) { \
        uintptr_t caller = (uintptr_t)__builtin_return_address(0); \
        if (caller >= rd_library_low && caller < rd_library_high) rd_library_count++; else rd_count++; \
    } \
} while (0)

void *malloc(size_t size) {
    RD_COUNT();
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size) {
    RD_COUNT();
    return __libc_calloc(count, size);
}

void *realloc(void *pointer, size_t size) {
    RD_COUNT();
    return __libc_realloc(pointer, size);
}

void *memalign(size_t alignment, size_t size) {
    RD_COUNT();
    return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
    RD_COUNT();
    return __libc_memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size) {
    RD_COUNT();
    if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment % sizeof(void *) != 0) return EINVAL;
    void *pointer = __libc_memalign(alignment, size);
    if (pointer == NULL) return ENOMEM;
    *out = pointer;
    return 0;
}
#else
int rd_allocation_counter_available(void) { return 0; }
int rd_allocation_counter_set_library(const char *name) { (void)name; return 0; }
#endif
