/// Where each named dense tensor lives in one flat `Float` buffer.
///
/// Parameters, gradients and optimizer state share one layout, so an allreduce is one call,
/// the optimizer is one loop and a checkpoint is one write (llm.c's `ParameterTensors`).
public struct ParameterLayout: Sendable, Equatable {
    /// One named tensor: `count` floats from `offset`, row-major `shape`.
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        public var offset: Int
        public var count: Int { shape.reduce(1, *) }
    }

    public private(set) var entries: [Entry] = []
    /// Total number of floats.
    public private(set) var count: Int = 0

    public init() {}

    /// Appends a tensor and returns its offset.
    public mutating func add(_ name: String, shape: [Int]) -> Int {
        precondition(!entries.contains { $0.name == name }, "duplicate parameter \(name)")
        precondition(shape.allSatisfy { $0 > 0 }, "empty shape \(shape) for \(name)")
        let offset = count
        entries.append(Entry(name: name, shape: shape, offset: offset))
        count += entries.last!.count
        return offset
    }

    /// The entry named `name`, if any.
    public func entry(named name: String) -> Entry? {
        entries.first { $0.name == name }
    }

    /// The entry holding flat index `index`.
    public func entry(containing index: Int) -> Entry? {
        entries.first { index >= $0.offset && index < $0.offset + $0.count }
    }
}

/// One owned, aligned, zero-initialized Float buffer that never moves (no copy-on-write, no
/// reallocation), so kernels can hold its base address for the life of a run.
public final class FloatBuffer: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    public init(count: Int) {
        self.count = count
        let raw = LargeAllocation.allocate(bytes: max(count, 1) * 4)
        pointer = raw.initializeMemory(as: Float.self, repeating: 0, count: max(count, 1))
    }

    deinit { LargeAllocation.deallocate(UnsafeMutableRawPointer(pointer), bytes: max(count, 1) * 4) }

    @inline(__always)
    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }

    /// Sets every element to zero.
    public func zero() { pointer.update(repeating: 0, count: count) }

    /// A copy of the contents as an array (for checkpoints and tests).
    public func toArray() -> [Float] { Array(buffer) }

    /// Overwrites the contents with `values`, which must have `count` elements.
    public func assign(_ values: [Float]) {
        precondition(values.count == count, "assigning \(values.count) values to a buffer of \(count)")
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: count) }
    }
}
