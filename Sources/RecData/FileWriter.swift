#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A buffered writer of bytes to a new file, with hand-written number formatting.
///
/// The data goes to a temporary file next to the destination (`<path>.tmp-<pid>`), which
/// `commit()` renames over `path`; so a crashed or failed write never leaves a truncated file
/// that looks complete. Callers reserve room for a whole record with `reserve(_:)` and then use
/// the unchecked `append...` calls.
final class FileWriter {
    let path: String
    private let temporaryPath: String
    private var fd: Int32
    private let capacity: Int
    private let buffer: UnsafeMutablePointer<UInt8>
    private var used = 0

    /// Creates (truncating) the temporary file for `path`.
    init(path: String, bufferSize: Int = 1 << 20) throws(DataError) {
        self.path = path
        self.temporaryPath = "\(path).tmp-\(getpid())"
        fd = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 {
            let code = errno
            throw DataError(file: path, message: "cannot create '\(temporaryPath)': \(DataError.systemMessage(code))",
                            hint: code == ENOENT ? "does the output directory exist?" : "check the directory's permissions")
        }
        capacity = bufferSize
        buffer = .allocate(capacity: bufferSize)
    }

    deinit {
        if fd >= 0 {
            close(fd)
            unlink(temporaryPath)
        }
        buffer.deallocate()
    }

    /// Makes room for at least `count` more bytes in the buffer (flushing it if needed).
    @inline(__always)
    func reserve(_ count: Int) throws(DataError) {
        precondition(count <= capacity, "record of \(count) bytes exceeds the \(capacity)-byte buffer")
        if used + count > capacity { try flush() }
    }

    /// Writes the buffered bytes to the file.
    func flush() throws(DataError) {
        if let code = writeFully(fd, UnsafeRawBufferPointer(start: buffer, count: used)) {
            throw DataError.writeFailed(path, code: code, what: "cannot write '\(temporaryPath)'")
        }
        used = 0
    }

    /// Flushes, closes and renames the temporary file to `path`.
    func commit() throws(DataError) {
        try flush()
        let fileDescriptor = fd
        fd = -1
        if close(fileDescriptor) != 0 {
            let code = errno
            unlink(temporaryPath)
            throw DataError(file: path, message: "cannot write '\(temporaryPath)': \(DataError.systemMessage(code))")
        }
        if rename(temporaryPath, path) != 0 {
            let code = errno
            unlink(temporaryPath)
            throw DataError(file: path, message: "cannot rename '\(temporaryPath)' to '\(path)': \(DataError.systemMessage(code))")
        }
    }

    @inline(__always)
    func append(_ byte: UInt8) {
        buffer[used] = byte
        used += 1
    }

    /// Appends `value` in decimal. Needs at most 20 bytes.
    @inline(__always)
    func append(decimal value: Int64) {
        var magnitude = value.magnitude
        if value < 0 { append(UInt8(ascii: "-")) }
        var digits = 1
        var probe = magnitude
        while probe >= 10 {
            probe /= 10
            digits += 1
        }
        var position = used + digits
        used = position
        repeat {
            position -= 1
            buffer[position] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
            magnitude /= 10
        } while magnitude != 0
    }

    /// Appends `value` as exactly 8 lowercase hex digits.
    @inline(__always)
    func append(hex8 value: UInt32) {
        FileWriter.formatHex8(value, into: buffer + used)
        used += 8
    }

    /// Appends `value` (in 0...1) with 6 decimals, `0.123456`. Needs 8 bytes.
    @inline(__always)
    func append(probability value: Double) {
        let scaled = Int((value * 1_000_000).rounded())
        let clamped = min(max(scaled, 0), 1_000_000)
        append(clamped == 1_000_000 ? UInt8(ascii: "1") : UInt8(ascii: "0"))
        append(UInt8(ascii: "."))
        var rest = clamped % 1_000_000
        var position = used + 6
        used = position
        for _ in 0..<6 {
            position -= 1
            buffer[position] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest % 10)
            rest /= 10
        }
    }

    /// Writes `value` as 8 lowercase hex digits at `out`.
    @inline(__always)
    static func formatHex8(_ value: UInt32, into out: UnsafeMutablePointer<UInt8>) {
        for k in 0..<8 {
            let nibble = UInt8(truncatingIfNeeded: value >> UInt32(28 - 4 * k)) & 0xF
            out[k] = nibble < 10 ? UInt8(ascii: "0") &+ nibble : UInt8(ascii: "a") &+ (nibble &- 10)
        }
    }
}
