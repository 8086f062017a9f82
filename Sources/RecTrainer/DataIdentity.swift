import Foundation
import RecCheckpoint
import RecData

/// What a checkpoint records of the data it was trained on, so that a resume can tell that data
/// from other data before its first step: the `--data` path, its size, a fingerprint that is
/// cheap to compute, and the training rows of an epoch (after the evaluation split).
///
/// The fingerprint is a CRC-32 of the file (raw TSV), or of a prepared dataset's `manifest.json`
/// followed by its training split. `scheme` says what was read:
/// - 2 (what this version writes): the whole file up to 256 MiB; above that, the first and last
///   MiB and 256 blocks of 64 KiB spread evenly between them (18 MiB read however large the data).
///   So an edit anywhere in a file of up to 256 MiB is caught, and in a larger one an edit that
///   touches a sampled block; another file, a rewrite, an append and another preparation always.
/// - 1 (checkpoints written before the scheme was recorded, `scheme` absent): the first and last
///   MiB only. A resume compares by the checkpoint's own scheme.
public struct DataIdentity: Codable, Sendable, Equatable {
    public var path: String
    /// Bytes of the raw file, or of the prepared dataset's training split.
    public var bytes: Int
    /// 8 hex digits.
    public var fingerprint: String
    /// Training rows of an epoch, over all ranks.
    public var rows: Int
    /// How the fingerprint was taken (see above); nil in checkpoints that predate it, meaning 1.
    public var scheme: Int?

    /// The scheme new identities use.
    public static let currentScheme = 2

    /// Reads the identity of `path` (a raw file, or a prepared dataset directory when `prepared`)
    /// holding `rows` training rows, fingerprinted by `scheme` (1 or 2).
    public init(path: String, prepared: Bool, rows: Int, scheme: Int = DataIdentity.currentScheme) throws(DataError) {
        precondition(scheme == 1 || scheme == 2, "fingerprint scheme \(scheme)")
        self.path = path
        self.rows = rows
        self.scheme = scheme
        var crc = CRC32()
        let file: String
        if prepared {
            let manifest = try MappedFile.contents(of: (path as NSString).appendingPathComponent(PreparedDataset.manifestName))
            manifest.withUnsafeBytes { crc.update($0) }
            file = (path as NSString).appendingPathComponent("train.rdp")
        } else {
            file = path
        }
        bytes = try Self.fingerprint(of: file, into: &crc, scheme: scheme)
        fingerprint = String(format: "%08x", crc.value)
    }

    /// Adds the blocks of `path` that `scheme` reads to `crc`; returns the file's size.
    static func fingerprint(of path: String, into crc: inout CRC32, scheme: Int) throws(DataError) -> Int {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw DataError(file: path, message: "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw DataError(file: path, message: "not a regular file")
        }
        let size = Int(info.st_size), mib = 1 << 20
        // The (offset, length) blocks to read, in file order.
        var blocks: [(start: Int, length: Int)]
        if scheme == 1 {
            blocks = size <= 2 * mib ? [(0, min(size, mib))] : [(0, mib), (size - mib, mib)]   // as it was written
        } else if size <= 256 * mib {
            blocks = stride(from: 0, to: size, by: mib).map { ($0, min(mib, size - $0)) }
        } else {
            let sample = 64 << 10, samples = 256, span = size - 2 * mib - sample
            blocks = [(0, mib)]
            for i in 0..<samples { blocks.append((start: mib + span * i / (samples - 1), length: sample)) }
            blocks.append((start: size - mib, length: mib))
        }
        var buffer = [UInt8](repeating: 0, count: mib)
        for (start, want) in blocks {
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
