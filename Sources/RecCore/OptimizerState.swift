// The optimizer's state buffers: their names per kind, their allocation, and saving and
// restoring them (whole, or in place for sharded checkpoints).

/// A checkpointed optimizer state that does not fit the optimizer it is loaded into.
public enum OptimizerStateError: Error, Equatable, CustomStringConvertible {
    /// The step count is negative.
    case invalidStep(Int)
    /// A buffer this optimizer needs is absent (the checkpoint was written by another kind).
    case missingBuffer(name: String)
    /// A buffer this optimizer does not have, or one given twice.
    case unexpectedBuffer(name: String)
    /// A buffer has the wrong number of elements (the model shape differs from the checkpoint's).
    case sizeMismatch(name: String, expected: Int, actual: Int)

    public var description: String {
        switch self {
        case .invalidStep(let step):
            return "optimizer state has invalid step count \(step); the checkpoint is corrupt"
        case .missingBuffer(let name):
            return "optimizer state lacks buffer '\(name)'; was the checkpoint written with another --optimizer?"
        case .unexpectedBuffer(let name):
            return "optimizer state has unexpected or repeated buffer '\(name)'; was the checkpoint written with another --optimizer?"
        case .sizeMismatch(let name, let expected, let actual):
            return "optimizer buffer '\(name)' has \(actual) values, expected \(expected); was the checkpoint written for another model shape?"
        }
    }
}

extension Optimizer {
    /// The state for checkpointing, in a fixed order (dense buffers, then `embedding.` ones); see
    /// the type's documentation for the names. Save `step` alongside.
    public func stateBuffers() -> [(name: String, values: [Float])] {
        let names = Self.slotNames(for: config.kind)
        var result: [(name: String, values: [Float])] = []
        for (name, buffer) in zip(names, [denseA, denseB]) { result.append((name, Array(buffer))) }
        for (name, buffer) in zip(names, [embeddingA, embeddingB]) { result.append(("embedding." + name, Array(buffer))) }
        return result
    }

    /// Restores state saved by `stateBuffers()` and `step`. Buffers may come in any order but must
    /// be exactly the set this optimizer has, each with the right size; otherwise this throws and
    /// leaves the optimizer unchanged.
    public func loadState(step: Int, buffers: [(name: String, values: [Float])]) throws(OptimizerStateError) {
        guard step >= 0 else { throw .invalidStep(step) }
        let names = Self.slotNames(for: config.kind)
        var targets: [String: UnsafeMutableBufferPointer<Float>] = [:]
        for (name, buffer) in zip(names, [denseA, denseB]) { targets[name] = buffer }
        for (name, buffer) in zip(names, [embeddingA, embeddingB]) { targets["embedding." + name] = buffer }

        var seen = Set<String>()
        for buffer in buffers {
            guard let target = targets[buffer.name], seen.insert(buffer.name).inserted else {
                throw .unexpectedBuffer(name: buffer.name)
            }
            guard buffer.values.count == target.count else {
                throw .sizeMismatch(name: buffer.name, expected: target.count, actual: buffer.values.count)
            }
        }
        if let missing = targets.keys.sorted().first(where: { !seen.contains($0) }) {
            throw .missingBuffer(name: missing)
        }
        // An empty slot (the embedding state of a model without tables) has no base address to copy into.
        for buffer in buffers where !buffer.values.isEmpty {
            let target = targets[buffer.name]!
            _ = target.update(fromContentsOf: buffer.values)
        }
        self.step = step
    }

    /// The state buffers in place, by name (as `stateBuffers()` names them), for code that moves
    /// them without copying whole (sharded checkpoints): the dense ones, then the embedding ones,
    /// each with its floats per embedding row (`embeddingDim`, or 1 for row-wise Adagrad).
    public var stateSlots: (dense: [(name: String, buffer: UnsafeMutableBufferPointer<Float>)],
                            embedding: [(name: String, buffer: UnsafeMutableBufferPointer<Float>, perRow: Int)]) {
        let names = Self.slotNames(for: config.kind)
        let perRow = config.kind == .rowwiseAdagrad ? 1 : embeddingDim
        return (zip(names, [denseA, denseB]).map { ($0, $1) },
                zip(names, [embeddingA, embeddingB]).map { ("embedding." + $0, $1, perRow) })
    }

    /// Sets the step count (resuming with state put in place through `stateSlots`).
    public func restoreStep(_ step: Int) throws(OptimizerStateError) {
        guard step >= 0 else { throw .invalidStep(step) }
        self.step = step
    }

    // MARK: - Slots

    /// State slot names per kind, in slot order (a, b).
    static func slotNames(for kind: OptimizerKind) -> [String] {
        switch kind {
        case .sgd: return []
        case .momentum: return ["velocity"]
        case .adam, .adamw: return ["m", "v"]
        case .adagrad, .rowwiseAdagrad: return ["accumulator"]
        }
    }

    static func allocate(_ count: Int, value: Float) -> UnsafeMutableBufferPointer<Float> {
        guard count > 0 else { return UnsafeMutableBufferPointer(start: nil, count: 0) }
        let raw = LargeAllocation.allocate(bytes: count * 4)
        let start = raw.initializeMemory(as: Float.self, repeating: value, count: count)
        return UnsafeMutableBufferPointer(start: start, count: count)
    }
}
