#include "AllocationCounter.h"
#include <errno.h>
#include <stddef.h>

static __thread int rd_counting;
static __thread unsigned long long rd_count;

void rd_allocation_counter_start(void) {
    rd_count = 0;
    rd_counting = 1;
}

unsigned long long rd_allocation_counter_stop(void) {
    rd_counting = 0;
    return rd_count;
}

#if defined(__linux__) && defined(__GLIBC__)
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

int rd_allocation_counter_available(void) { return 1; }

#define RD_COUNT() do { if (rd_counting) rd_count++; } while (0)

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
#endif
