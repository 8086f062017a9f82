import Foundation

/// The safetensors file format (huggingface/safetensors): an 8-byte little-endian header length,
/// a JSON header mapping tensor names to dtype, shape and byte offsets, then the raw data.
/// PyTorch and NumPy users load rec-dist's weights with the `safetensors` package.
public enum SafeTensors {
    /// A named float32 tensor.
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

    /// Serializes `tensors` (in order) and `metadata` (string to string).
    public static func encode(_ tensors: [Tensor], metadata: [String: String]) throws -> Data {
        var header: [String: Any] = ["__metadata__": metadata]
        var offset = 0
        for t in tensors {
            let bytes = t.values.count * 4
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }   // pad with spaces to 8-byte alignment
        var out = Data(capacity: 8 + json.count + offset)
        var length = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(json)
        for t in tensors {
            t.values.withUnsafeBufferPointer { b in
                b.withMemoryRebound(to: UInt32.self) { words in
                    for w in words { var le = w.littleEndian; withUnsafeBytes(of: &le) { out.append(contentsOf: $0) } }
                }
            }
        }
        return out
    }

    /// Parses a safetensors file, refusing anything malformed (truncated, out-of-bounds offsets,
    /// overlapping or unexpected dtypes) with a message instead of reading out of bounds.
    public static func decode(_ data: Data, path: String) throws -> (tensors: [Tensor], metadata: [String: String]) {
        func fail(_ message: String) -> TrainingError {
            .checkpoint(path: path, message: "\(message); the file is damaged or not a rec-dist safetensors file")
        }
        guard data.count >= 8 else { throw fail("only \(data.count) bytes") }
        let length = data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard length <= UInt64(data.count - 8) else { throw fail("header length \(length) exceeds the file size \(data.count)") }
        let headerData = data.subdata(in: 8..<(8 + Int(length)))
        guard let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
            throw fail("the header is not a JSON object")
        }
        let body = data.count - 8 - Int(length)
        var metadata: [String: String] = [:]
        var tensors: [(Int, Tensor)] = []
        for (name, value) in header {
            if name == "__metadata__" {
                metadata = value as? [String: String] ?? [:]
                continue
            }
            guard let info = value as? [String: Any], info["dtype"] as? String == "F32",
                  let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2
            else { throw fail("tensor '\(name)' has a malformed or non-F32 entry") }
            let (begin, end) = (offsets[0], offsets[1])
            guard shape.allSatisfy({ $0 >= 0 && $0 < 1 << 40 }), begin >= 0, end >= begin, end <= body,
                  shape.reduce(1, { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }) * 4 == end - begin
            else { throw fail("tensor '\(name)' declares shape \(shape) and offsets \(offsets) that do not fit the \(body) data bytes") }
            let start = 8 + Int(length) + begin
            var values = [Float](repeating: 0, count: (end - begin) / 4)
            values.withUnsafeMutableBytes { dst in
                data.copyBytes(to: dst.bindMemory(to: UInt8.self), from: start..<(start + end - begin))
            }
            for i in values.indices { values[i] = Float(bitPattern: UInt32(littleEndian: values[i].bitPattern)) }
            tensors.append((begin, Tensor(name: name, shape: shape, values: values)))
        }
        return (tensors.sorted { $0.0 < $1.0 }.map(\.1), metadata)
    }
}
