import Foundation
import RecCheckpoint
import RecData

/// What a checkpoint records of the data it was trained on, so that a resume can tell that data
/// from other data before its first step: the `--data` path, its size, a fingerprint that is
/// cheap to compute, and the training rows of an epoch (after the evaluation split).
///
/// The fingerprint is the CRC-32 of the first and last MiB of the file (raw TSV), or of a
/// prepared dataset's `manifest.json` followed by the first and last MiB of its training split.
/// It reads at most a few MiB however large the data, so it catches another file, a file
/// rewritten or appended to, and another preparation, not an edit in the middle of a file of
/// the same size (the row count may still catch that).
public struct DataIdentity: Codable, Sendable, Equatable {
    public var path: String
    /// Bytes of the raw file, or of the prepared dataset's training split.
    public var bytes: Int
    /// 8 hex digits.
    public var fingerprint: String
    /// Training rows of an epoch, over all ranks.
    public var rows: Int

    /// Reads the identity of `path` (a raw file, or a prepared dataset directory when `prepared`)
    /// holding `rows` training rows.
    public init(path: String, prepared: Bool, rows: Int) throws(DataError) {
        self.path = path
        self.rows = rows
        var crc = CRC32()
        if prepared {
            let manifest = try MappedFile.contents(of: (path as NSString).appendingPathComponent(PreparedDataset.manifestName))
            manifest.withUnsafeBytes { crc.update($0) }
            bytes = try Self.edges(of: (path as NSString).appendingPathComponent("train.rdp"), into: &crc)
        } else {
            bytes = try Self.edges(of: path, into: &crc)
        }
        fingerprint = String(format: "%08x", crc.value)
    }

    /// Adds the first and last MiB of `path` (all of it when smaller) to `crc`; returns its size.
    static func edges(of path: String, into crc: inout CRC32) throws(DataError) -> Int {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw DataError(file: path, message: "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw DataError(file: path, message: "not a regular file")
        }
        let size = Int(info.st_size), block = 1 << 20
        var buffer = [UInt8](repeating: 0, count: block)
        for start in size <= 2 * block ? [0] : [0, size - block] {
            let want = min(size <= 2 * block ? size : block, buffer.count)
            var done = 0
            while done < want {
                let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, want - done, off_t(start + done)) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw DataError(file: path, message: "cannot read: \(n < 0 ? String(cString: strerror(errno)) : "the file shrank while being read")") }
                done += n
            }
            buffer.withUnsafeBytes { crc.update(UnsafeRawBufferPointer(rebasing: $0[..<want])) }
        }
        return size
    }

    /// What differs between the data a checkpoint was trained on (`self`) and this run's, in
    /// words; empty when it is the same data. A moved or renamed file with the same contents is
    /// the same data.
    public func differences(from current: DataIdentity) -> [String] {
        var out: [String] = []
        if bytes != current.bytes { out.append("size \(bytes) bytes, now \(current.bytes)") }
        if fingerprint != current.fingerprint { out.append("content fingerprint \(fingerprint), now \(current.fingerprint)") }
        if rows != current.rows { out.append("\(rows) training rows, now \(current.rows)") }
        if !out.isEmpty && path != current.path { out.insert("path '\(path)', now '\(current.path)'", at: 0) }
        return out
    }
}
