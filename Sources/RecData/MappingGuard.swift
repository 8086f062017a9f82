#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// What happens when a memory-mapped input shrinks underneath rec-dist (another process
/// truncates or rewrites a TSV file while `train` loads it, or a prepared split during training):
/// reading a page past the new end raises SIGBUS, which would end the process with a crash
/// report. `MappedFile` registers each mapping here; a SIGBUS inside one prints one line naming
/// the file and what to do, and exits with status 74 (EX_IOERR). A SIGBUS anywhere else goes on
/// to the handler that was installed before (the Swift runtime's crash report).
///
/// Before exiting it removes the files registered with `removeOnExit` (an `AtomicDirectory`'s
/// temporary directory and the files written into it), so a prepare stopped this way leaves
/// nothing behind.
///
/// The handler only reads fixed tables of addresses, pre-formatted messages and paths, and calls
/// `write`, `unlink`, `rmdir` and `_exit`, which are async-signal-safe.
enum MappingGuard {
    /// The exit status after a mapped file shrank.
    static let exitCode: Int32 = 74
    static let capacity = 512
    /// Per slot: base address (0: free), byte count, message address, message length.
    nonisolated(unsafe) static let table: UnsafeMutablePointer<Int> = {
        let table = UnsafeMutablePointer<Int>.allocate(capacity: capacity * 4)
        table.initialize(repeating: 0, count: capacity * 4)
        return table
    }()
    static let cleanupCapacity = 256
    /// Per slot: the address of a NUL-terminated path to remove on exit, or 0.
    nonisolated(unsafe) static let cleanup: UnsafeMutablePointer<Int> = {
        let table = UnsafeMutablePointer<Int>.allocate(capacity: cleanupCapacity)
        table.initialize(repeating: 0, count: cleanupCapacity)
        return table
    }()
    nonisolated(unsafe) static var previous = sigaction()
    static let lock = NSLock()
    nonisolated(unsafe) static var installed = false

    /// Guards `count` bytes mapped at `base` from `path`; returns the slot to pass to
    /// `unregister`, or nil when every slot is taken (the mapping is then unguarded).
    static func register(base: UnsafeRawPointer, count: Int, path: String) -> Int? {
        let message = "error: \(path): the file shrank while rec-dist was reading it (another process truncated or rewrote it); rec-dist stops with status \(exitCode). Let the writer finish, or give rec-dist a copy of the file.\n"
        return lock.withLock { () -> Int? in
            if !installed {
                install()
                installed = true
            }
            for slot in 0..<capacity where table[slot * 4] == 0 {
                let bytes = Array(message.utf8)
                let text = UnsafeMutablePointer<UInt8>.allocate(capacity: bytes.count)
                text.initialize(from: bytes, count: bytes.count)
                table[slot * 4 + 1] = count
                table[slot * 4 + 2] = Int(bitPattern: text)
                table[slot * 4 + 3] = bytes.count
                table[slot * 4] = Int(bitPattern: base)   // last: the slot is live
                return slot
            }
            return nil
        }
    }

    /// Stops guarding the mapping of `slot` (before it is unmapped).
    static func unregister(_ slot: Int) {
        lock.withLock {
            table[slot * 4] = 0
            UnsafeMutablePointer<UInt8>(bitPattern: table[slot * 4 + 2])?.deallocate()
            table[slot * 4 + 2] = 0
        }
    }

    /// Removes `path` (a file, or an empty directory once its registered files are gone) if the
    /// process exits for a shrunk mapping; returns the slot to pass to `keep`, or nil when every
    /// slot is taken.
    static func removeOnExit(_ path: String) -> Int? {
        lock.withLock { () -> Int? in
            for slot in 0..<cleanupCapacity where cleanup[slot] == 0 {
                let bytes = Array(path.utf8) + [0]
                let text = UnsafeMutablePointer<UInt8>.allocate(capacity: bytes.count)
                text.initialize(from: bytes, count: bytes.count)
                cleanup[slot] = Int(bitPattern: text)
                return slot
            }
            return nil
        }
    }

    /// Stops removing the path of `slot` on exit.
    static func keep(_ slot: Int) {
        lock.withLock {
            let text = cleanup[slot]
            cleanup[slot] = 0
            UnsafeMutablePointer<UInt8>(bitPattern: text)?.deallocate()
        }
    }

    private static func install() {
        var action = sigaction()
        action.__sigaction_handler.sa_sigaction = { signal, info, context in
            let address = Int(bitPattern: info?.pointee._sifields._sigfault.si_addr)
            for slot in 0..<MappingGuard.capacity {
                let base = MappingGuard.table[slot * 4]
                if base != 0 && address >= base && address < base + MappingGuard.table[slot * 4 + 1] {
                    _ = write(2, UnsafeRawPointer(bitPattern: MappingGuard.table[slot * 4 + 2]), MappingGuard.table[slot * 4 + 3])
                    // Files first, then the directories they were in (each call fails harmlessly
                    // on the other kind).
                    for i in 0..<MappingGuard.cleanupCapacity {
                        if let path = UnsafePointer<CChar>(bitPattern: MappingGuard.cleanup[i]) { _ = unlink(path) }
                    }
                    for i in 0..<MappingGuard.cleanupCapacity {
                        if let path = UnsafePointer<CChar>(bitPattern: MappingGuard.cleanup[i]) { _ = rmdir(path) }
                    }
                    _exit(MappingGuard.exitCode)
                }
            }
            // Not a guarded mapping: put the previous handler back; returning re-runs the
            // faulting access, which reaches it.
            sigaction(SIGBUS, &MappingGuard.previous, nil)
        }
        action.sa_flags = SA_SIGINFO
        sigemptyset(&action.sa_mask)
        sigaction(SIGBUS, &action, &previous)
    }
}
