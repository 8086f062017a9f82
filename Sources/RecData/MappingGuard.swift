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
/// The handler only reads a fixed table of addresses and pre-formatted messages and calls
/// `write` and `_exit`, which are async-signal-safe.
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

    private static func install() {
        var action = sigaction()
        action.__sigaction_handler.sa_sigaction = { signal, info, context in
            let address = Int(bitPattern: info?.pointee._sifields._sigfault.si_addr)
            for slot in 0..<MappingGuard.capacity {
                let base = MappingGuard.table[slot * 4]
                if base != 0 && address >= base && address < base + MappingGuard.table[slot * 4 + 1] {
                    _ = write(2, UnsafeRawPointer(bitPattern: MappingGuard.table[slot * 4 + 2]), MappingGuard.table[slot * 4 + 3])
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
