#ifndef REC_DIST_CINTRINSICS_SHIM_H
#define REC_DIST_CINTRINSICS_SHIM_H

// Compiler intrinsics Swift has no spelling for. Header only: nothing to link.

/// Asks the CPU to start loading the cache line at `address` for reading (no fault if invalid).
static inline void rd_prefetch(const void *address) { __builtin_prefetch(address, 0, 3); }
/// The same, for a line about to be written.
static inline void rd_prefetch_write(const void *address) { __builtin_prefetch(address, 1, 3); }

#endif
