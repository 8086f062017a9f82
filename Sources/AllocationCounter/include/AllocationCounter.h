#ifndef REC_DIST_ALLOCATION_COUNTER_H
#define REC_DIST_ALLOCATION_COUNTER_H

// Test support: counts heap allocations made by the calling thread between start and stop.
//
// Linking this target into an executable replaces malloc, calloc, realloc, memalign,
// aligned_alloc and posix_memalign with versions that count and forward to glibc's own
// (__libc_malloc and friends; free stays glibc's, so every block still belongs to one
// allocator). Only test targets depend on it: never link it into rec-dist.
// (The same idea as swift-nio's allocation-counter tests, without a separate binary.)

/// 1 when the counting allocator is linked in and active on this platform (glibc), else 0.
int rd_allocation_counter_available(void);
/// Starts counting this thread's allocations from zero.
void rd_allocation_counter_start(void);
/// Stops counting and returns this thread's allocations since the start, except those made
/// directly by the library set with rd_allocation_counter_set_library.
unsigned long long rd_allocation_counter_stop(void);
/// Counts apart the allocations whose immediate caller lies in the executable code of the loaded
/// shared library whose path contains `name` (e.g. "libopenblas"). Returns 1 when such a library
/// is loaded, else 0 (and nothing is set apart). Call it before counting starts.
int rd_allocation_counter_set_library(const char *name);
/// The allocations the library set apart made on this thread between the last start and stop.
unsigned long long rd_allocation_counter_library_count(void);

#endif
