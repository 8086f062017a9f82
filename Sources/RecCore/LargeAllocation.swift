#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Memory for large Float buffers (embedding tables and their optimizer state): 64-byte aligned
/// always, and on Linux, from 4 MB up, mapped on 2 MB boundaries and marked for transparent huge
/// pages before it is first touched.
///
/// The embedding rows a step touches are scattered over hundreds of megabytes; with 4 KB pages
/// nearly every row access also misses the TLB and walks the page tables. With 2 MB pages the
/// gather, the row updates and the sparse gradient merge stop paying for that (the kernel's THP
/// mode here is `madvise`, so nothing gets huge pages unless asked).
public enum LargeAllocation {
    /// Buffers from this size up get their own 2 MB-aligned mapping.
    public static let hugePageThreshold = 4 << 20
    static let hugePage = 2 << 20

    /// `bytes` of uninitialized memory, 64-byte aligned.
    public static func allocate(bytes: Int) -> UnsafeMutableRawPointer {
        #if os(Linux)
        if bytes >= hugePageThreshold {
            let length = (bytes + hugePage - 1) / hugePage * hugePage
            let span = length + hugePage
            if let raw = mmap(nil, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
               raw != MAP_FAILED {
                let address = UInt(bitPattern: raw)
                let aligned = (address + UInt(hugePage) - 1) / UInt(hugePage) * UInt(hugePage)
                let head = Int(aligned - address), tail = span - head - length
                if head > 0 { munmap(raw, head) }
                let start = UnsafeMutableRawPointer(bitPattern: aligned)!
                if tail > 0 { munmap(start + length, tail) }
                _ = madvise(start, length, 14 /* MADV_HUGEPAGE */)
                return start
            }
        }
        #endif
        return UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
    }

    /// `bytes` of zeros, 64-byte aligned. A mapping of its own is zero already, so its pages cost
    /// memory only once written: a map over a huge table holds only the pages a run touches.
    public static func allocateZeroed(bytes: Int) -> UnsafeMutableRawPointer {
        let raw = allocate(bytes: bytes)
        #if os(Linux)
        if bytes >= hugePageThreshold { return raw }
        #endif
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: max(bytes, 1))
        return raw
    }

    /// Frees memory from `allocate(bytes:)` or `allocateZeroed(bytes:)`, given the same `bytes`.
    public static func deallocate(_ pointer: UnsafeMutableRawPointer, bytes: Int) {
        #if os(Linux)
        if bytes >= hugePageThreshold {
            munmap(pointer, (bytes + hugePage - 1) / hugePage * hugePage)
            return
        }
        #endif
        pointer.deallocate()
    }
}
