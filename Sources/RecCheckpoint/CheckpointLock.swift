import Foundation
import RecData

/// Ownership of a checkpoint directory for one run: an exclusive `flock` on `ROOT/.lock`, held
/// by the process that writes checkpoints (rank 0) until the lock is released or the process
/// ends (the kernel drops a dead process's lock, so a crash never leaves the directory locked).
/// A second writer is refused with the process and host that hold it.
///
/// The file itself stays behind; only the lock on it matters. It holds the owner's
/// "PID HOST" for the message a second writer sees.
public final class CheckpointLock {
    public static let fileName = ".lock"

    public let path: String
    private var fd: Int32

    /// Takes the lock of checkpoint directory `root` (creating the directory if needed).
    ///
    /// - Throws: `CheckpointError` when another process holds it (`isHeldElsewhere`), or when the
    ///   directory or lock file cannot be created.
    public init(root: String) throws(CheckpointError) {
        path = (root as NSString).appendingPathComponent(Self.fileName)
        do {
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        } catch {
            throw CheckpointError(path: root, message: "cannot create the directory (\(error.localizedDescription)); choose a writable --checkpoint-dir")
        }
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw CheckpointError(path: path, message: "cannot create the lock file: \(String(cString: strerror(errno)))); choose a writable --checkpoint-dir")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            var owner = [UInt8](repeating: 0, count: 256)
            let n = pread(fd, &owner, owner.count, 0)
            let text = n > 0 ? String(decoding: owner.prefix(n), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : ""
            Glibc.close(fd)
            fd = -1
            guard code == EWOULDBLOCK else {
                throw CheckpointError(path: path, message: "cannot lock: \(String(cString: strerror(code)))")
            }
            let parts = text.split(separator: " ", maxSplits: 1)
            let who = parts.count == 2 ? "process \(parts[0]) on \(parts[1])" : "another process"
            throw CheckpointError(path: root, message: "\(Self.heldElsewhere): \(who) is writing checkpoints here. Two runs on one --checkpoint-dir would prune each other's checkpoints; wait for that run to end, or give this one its own --checkpoint-dir")
        }
        let owner = Array("\(getpid()) \(ProcessInfo.processInfo.hostName)\n".utf8)
        _ = ftruncate(fd, 0)
        _ = owner.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    /// The start of the message of a refused lock.
    public static let heldElsewhere = "the checkpoint directory is in use"

    deinit { release() }

    /// Drops the lock (also done when the object goes away or the process ends).
    public func release() {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
    }
}
