import Foundation
import RecData

/// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N,
/// N bytes of JSON mapping each tensor name to `dtype`, `shape` and `data_offsets` (relative to
/// the end of the header), then the raw little-endian data. PyTorch and NumPy users load
/// rec-dist's weights with the `safetensors` package. Only F32 tensors are written and read.
public enum SafeTensors {
    /// A named float32 tensor held in memory.
    public struct Tensor: Equatable {
        public var name: String
        public var shape: [Int]
        public var values: [Float]
        public init(name: String, shape: [Int], values: [Float]) {
            precondition(shape.reduce(1, *) == values.count, "tensor \(name): shape \(shape) does not hold \(values.count) values")
            self.name = name
            self.shape = shape
            self.values = values
        }
    }

    /// A tensor to write: borrowed from its owner's buffer, or produced while it is written (a
    /// sharded table arriving from its ranks a range of rows at a time), `count` values in all.
    public struct Source {
        public var name: String
        public var shape: [Int]
        public var count: Int
        let content: Content
        enum Content {
            case values(UnsafeBufferPointer<Float>)
            case produced((_ write: (UnsafeBufferPointer<Float>) throws -> Void) throws -> Void)
        }
        public init(name: String, shape: [Int], values: UnsafeBufferPointer<Float>) {
            precondition(shape.reduce(1, *) == values.count, "tensor \(name): shape \(shape) does not hold \(values.count) values")
            self.name = name
            self.shape = shape
            count = values.count
            content = .values(values)
        }
        /// `produce` hands the tensor's values, in order, to the `write` it is given.
        public init(name: String, shape: [Int], produce: @escaping (_ write: (UnsafeBufferPointer<Float>) throws -> Void) throws -> Void) {
            self.name = name
            self.shape = shape
            count = shape.reduce(1, *)
            content = .produced(produce)
        }
        /// The values of a borrowed tensor; nil for one produced while it is written.
        public var values: UnsafeBufferPointer<Float>? {
            if case .values(let values) = content { return values }
            return nil
        }
    }

    /// One header entry, checked against the file's size.
    public struct Entry: Equatable {
        public var shape: [Int]
        /// Byte range within the file (absolute).
        public var range: Range<Int>
    }

    /// The serialized header (length prefix, JSON, space padding to 8 bytes) for `tensors` in order.
    public static func header(for tensors: [Source], metadata: [String: String]) throws -> Data {
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        for t in tensors {
            let bytes = t.count * 4
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (json.count + 8) % 8 != 0 { json.append(0x20) }
        var out = Data(capacity: 8 + json.count)
        var length = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(json)
        return out
    }

    /// Writes a whole safetensors file through `sink` (header, then each tensor's bytes).
    public static func write(_ tensors: [Source], metadata: [String: String], to sink: FileSink) throws {
        #if _endian(big)
        #error("safetensors data is little-endian; add byte swapping for big-endian hosts")
        #endif
        try sink.write(try header(for: tensors, metadata: metadata))
        for t in tensors {
            switch t.content {
            case .values(let values): try sink.write(UnsafeRawBufferPointer(values))
            case .produced(let produce):
                var written = 0
                try produce { part in
                    written += part.count
                    precondition(written <= t.count, "tensor \(t.name): more than its \(t.count) values produced")
                    try sink.write(UnsafeRawBufferPointer(part))
                }
                precondition(written == t.count, "tensor \(t.name): \(written) of its \(t.count) values produced")
            }
        }
    }

    /// Serializes in memory (for small files and tests).
    public static func encode(_ tensors: [Tensor], metadata: [String: String]) throws -> Data {
        var out = Data()
        var sources: [Source] = []
        var keep: [UnsafeMutableBufferPointer<Float>] = []
        defer { keep.forEach { $0.deallocate() } }
        for t in tensors {
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: t.values.count)
            _ = b.initialize(from: t.values)
            keep.append(b)
            sources.append(Source(name: t.name, shape: t.shape, values: UnsafeBufferPointer(b)))
        }
        out.append(try header(for: sources, metadata: metadata))
        for b in keep { out.append(contentsOf: UnsafeRawBufferPointer(b)) }
        return out
    }

    /// Parses and checks the header of the safetensors bytes `file`: every entry must be F32
    /// with a shape whose size matches its offsets, and lie inside the file. Never reads out of bounds.
    public static func parseHeader(_ file: UnsafeRawBufferPointer, path: String) throws
        -> (entries: [String: Entry], metadata: [String: String]) {
        func fail(_ message: String) -> CheckpointError {
            CheckpointError(path: path, message: "\(message); the file is damaged or not a rec-dist safetensors file")
        }
        guard file.count >= 8 else { throw fail("only \(file.count) bytes") }
        var length: UInt64 = 0
        for i in 0..<8 { length |= UInt64(file[i]) << (8 * UInt64(i)) }
        guard length <= UInt64(file.count - 8), length <= 100_000_000 else {
            throw fail("header length \(length) does not fit the file size \(file.count)")
        }
        let headerBytes = Data(file[8..<(8 + Int(length))])
        guard let header = (try? JSONSerialization.jsonObject(with: headerBytes)) as? [String: Any] else {
            throw fail("the header is not a JSON object")
        }
        let dataStart = 8 + Int(length)
        let body = file.count - dataStart
        var metadata: [String: String] = [:]
        var entries: [String: Entry] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                guard let m = value as? [String: String] else { throw fail("__metadata__ is not a string map") }
                metadata = m
                continue
            }
            guard let info = value as? [String: Any], info["dtype"] as? String == "F32",
                  let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2
            else { throw fail("tensor '\(name)' has a malformed or non-F32 entry") }
            var count = 1
            for d in shape {
                let (p, o) = count.multipliedReportingOverflow(by: d)
                // Elements, each 4 bytes, must fit the file (checked below), so more than 2^60 is absurd.
                guard d >= 0, !o, p <= 1 << 60 else { throw fail("tensor '\(name)' declares an absurd shape \(shape)") }
                count = p
            }
            let (begin, end) = (offsets[0], offsets[1])
            guard begin >= 0, end >= begin, end <= body, end - begin == count * 4 else {
                throw fail("tensor '\(name)' declares shape \(shape) and offsets \(offsets) that do not fit the \(body) data bytes")
            }
            entries[name] = Entry(shape: shape, range: (dataStart + begin)..<(dataStart + end))
        }
        return (entries, metadata)
    }

    /// Copies tensor `entry` of `file` into `destination`, which must have exactly its size.
    public static func copy(_ entry: Entry, from file: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>) {
        precondition(entry.range.count == destination.count * 4 && entry.range.upperBound <= file.count)
        UnsafeMutableRawBufferPointer(destination).copyMemory(from: UnsafeRawBufferPointer(rebasing: file[entry.range]))
    }

    /// Parses a whole safetensors file into memory, tensors in file order.
    public static func decode(_ data: Data, path: String) throws -> (tensors: [Tensor], metadata: [String: String]) {
        try data.withUnsafeBytes { file in
            let (entries, metadata) = try parseHeader(file, path: path)
            let tensors = entries.sorted { $0.value.range.lowerBound < $1.value.range.lowerBound }.map { name, entry in
                var values = [Float](repeating: 0, count: entry.range.count / 4)
                values.withUnsafeMutableBufferPointer { copy(entry, from: file, into: $0) }
                return Tensor(name: name, shape: entry.shape, values: values)
            }
            return (tensors, metadata)
        }
    }
}

/// A checkpoint file: an `OutputFile` (fsynced on close) that keeps the CRC-32 and size of what
/// went through it, for CHECKSUMS.
public final class FileSink {
    private let file: OutputFile
    public private(set) var crc = CRC32()
    public var path: String { file.path }
    public var bytes: Int { file.bytes }

    public init(path: String) throws(CheckpointError) {
        do { file = try OutputFile(path: path) } catch { throw CheckpointError(error) }
    }

    public func write(_ data: Data) throws {
        try data.withUnsafeBytes { try write($0) }
    }

    public func write(_ raw: UnsafeRawBufferPointer) throws(CheckpointError) {
        crc.update(raw)
        do { try file.write(raw) } catch { throw CheckpointError(error) }
    }

    /// fsyncs and closes; throws if either fails (a full disk may only show here).
    public func close() throws(CheckpointError) {
        do { try file.close() } catch { throw CheckpointError(error) }
    }
}
