import Foundation
import RecData

/// One checkpoint being written: its files go into a hidden temporary directory (an
/// `AtomicDirectory` beside the final one), each fsynced with its size and CRC-32 recorded;
/// `commit()` writes CHECKSUMS listing every file, renames the directory into place and points
/// `latest` at it. Abandoned (or dropped) before the commit, the temporary directory and whatever
/// is in it are removed, and the previous checkpoints are untouched.
///
/// Files other processes wrote into `temporary` (the per-rank shards of a sharded run, when the
/// ranks share the directory) are listed with `add` from the size and CRC-32 their writer
/// reported, each checked to be there with that size.
public final class CheckpointWriter {
    public let root: String
    public let name: String
    private let directory: AtomicDirectory
    private var sums: [String] = []

    /// Creates `root` if needed and the temporary directory of checkpoint `name` under it.
    public init(root: String, name: String) throws(CheckpointError) {
        do {
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        } catch {
            throw CheckpointError(path: root, message: "cannot create the directory (\(error.localizedDescription)); choose a writable --checkpoint-dir")
        }
        self.root = root
        self.name = name
        do { directory = try AtomicDirectory(path: root + "/" + name, tag: "tmp") } catch { throw CheckpointError(error) }
    }

    /// The temporary directory the files are written into until the commit.
    public var temporary: String { directory.temporary }

    /// Writes `file` in the temporary directory through `body`, fsyncs it and lists it.
    public func write(_ file: String, _ body: (FileSink) throws -> Void) throws {
        let (crc, size) = try Self.writeFile(directory.file(file), body)
        sums.append(Self.line(file, crc: crc, size: size))
    }

    /// Lists `file`, written into `temporary` by another process, with the CRC-32 and size it
    /// reported, once this process finds it there with that size (both see the same directory).
    public func add(_ file: String, crc: UInt32, size: Int) throws(CheckpointError) {
        let path = directory.file(file)
        var info = stat()
        let exists = stat(path, &info) == 0
        guard exists, Int(info.st_size) == size else {
            let found = exists ? "\(info.st_size) bytes" : "no file"
            throw CheckpointError(path: path, message: "its writer reported \(size) bytes written, the committing process finds \(found) (do all ranks see the same --checkpoint-dir?); nothing was committed")
        }
        sums.append(Self.line(file, crc: crc, size: size))
    }

    /// `file`'s line in CHECKSUMS: the CRC-32 in 8 hex digits, the size in bytes (`%ld`: a
    /// Swift Int through `%d` is cut to 32 bits), the name.
    static func line(_ file: String, crc: UInt32, size: Int) -> String { String(format: "%08x %ld %@", crc, size, file) }

    /// Writes CHECKSUMS, renames the directory into place, points `latest` at it and returns its path.
    public func commit() throws -> String {
        let checksums = try FileSink(path: directory.file("CHECKSUMS"))
        try checksums.write(Data((sums.joined(separator: "\n") + "\n").utf8))
        try checksums.close()
        do { try directory.commit() } catch { throw CheckpointError(error) }
        try CheckpointDirectory.writePointer(root: root, file: "latest", to: name)
        return directory.path
    }

    /// Removes the temporary directory and everything in it (nothing, once committed).
    public func abandon() { directory.abandon() }

    /// Writes the file at `path` through `body`, fsyncs and closes it; returns its CRC-32 and size.
    public static func writeFile(_ path: String, _ body: (FileSink) throws -> Void) throws -> (crc: UInt32, size: Int) {
        let sink = try FileSink(path: path)
        try body(sink)
        try sink.close()
        return (sink.crc.value, sink.bytes)
    }
}
