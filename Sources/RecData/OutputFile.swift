#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes all of `bytes` to `fd`, continuing after partial writes and retrying writes a signal
/// interrupted (EINTR). Returns nil once everything is written, else the failure's `errno`.
public func writeFully(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32? {
    guard let base = bytes.baseAddress else { return nil }
    var done = 0
    while done < bytes.count {
        let n = write(fd, base + done, min(bytes.count - done, 1 << 30))
        if n < 0 {
            let code = errno
            if code == EINTR { continue }
            return code
        }
        done += n
    }
    return nil
}

extension DataError {
    /// A failed write to `path` (`code`: the errno), with a hint when the disk is full.
    public static func writeFailed(_ path: String, code: Int32, what: String = "cannot write") -> DataError {
        DataError(file: path, message: "\(what): \(systemMessage(code))",
                  hint: code == ENOSPC ? "the disk is full; free space or write elsewhere" : nil)
    }
}

/// Appends `bytes` to the log file open at `fd` (`path` names it in errors) as one record: if
/// the write fails (a full disk), the file is cut back to where it was, so it never ends in a
/// partial record, and the error says what the system said ("No space left on device").
public func appendRecord(_ fd: Int32, _ bytes: [UInt8], path: String) throws(DataError) {
    let end = lseek(fd, 0, SEEK_END)
    if let code = bytes.withUnsafeBytes({ writeFully(fd, $0) }) {
        if end >= 0 { _ = ftruncate(fd, end) }
        throw DataError.writeFailed(path, code: code, what: "cannot append")
    }
}

/// A new file written straight through its descriptor (no buffering), fsynced when closed: how
/// rec-dist writes the files of a prepared dataset's manifest and of checkpoints, inside an
/// `AtomicDirectory`. Errors name the file and what the system said (for example "No space left
/// on device").
public final class OutputFile {
    public let path: String
    /// The bytes written so far.
    public private(set) var bytes = 0
    private var fd: Int32

    /// Creates `path` (truncating a file already there).
    public init(path: String) throws(DataError) {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 {
            let code = errno
            throw DataError(file: path, message: "cannot create: \(DataError.systemMessage(code))",
                            hint: code == ENOENT ? "does the directory exist?" : "check that the directory is writable")
        }
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    public func write(_ raw: UnsafeRawBufferPointer) throws(DataError) {
        precondition(fd >= 0, "write after close")
        if let code = writeFully(fd, raw) { throw DataError.writeFailed(path, code: code) }
        bytes += raw.count
    }

    public func write(_ data: [UInt8]) throws(DataError) {
        precondition(fd >= 0, "write after close")
        if let code = data.withUnsafeBytes({ writeFully(fd, $0) }) { throw DataError.writeFailed(path, code: code) }
        bytes += data.count
    }

    /// fsyncs and closes; throws if either fails (a full disk may only show here).
    public func close() throws(DataError) {
        let descriptor = fd
        fd = -1
        let synced = fsync(descriptor) == 0 ? nil : errno
        let closed = Glibc.close(descriptor) == 0 ? nil : errno
        if let code = synced ?? closed { throw DataError.writeFailed(path, code: code, what: "cannot flush the file to disk") }
    }
}
