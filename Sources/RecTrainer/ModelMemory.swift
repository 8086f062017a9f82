import Foundation
import RecCore

/// What a model costs one rank in memory, worked out from its configuration before anything
/// large is allocated: the one estimate that `train`, `bench` and the inference commands check
/// against the memory they may use.
///
/// The activation buffers are the model's own: it is built for 1 and for 2 rows (a few
/// kilobytes; the embedding tables live outside the model), and since each of its buffers is a
/// fixed size plus a size per row, their bytes for `maxBatch` rows follow without allocating
/// them. The rest is what `TrainingStep` allocates around the model: the dense parameters, their
/// gradients and optimizer state, the loss gradient, and with embedding tables the step's
/// embedding pairs (the model's sparse gradient, the accumulated pairs, the exchange's buffers)
/// and the working rows of sharded tables. The tables' rows and their optimizer state are
/// `EmbeddingPlanner`'s part (`rowStateFloats`): they depend on where the plan puts them.
public struct ModelMemory: Sendable {
    /// Floats of dense parameters.
    public let denseParameters: Int
    /// Rows the batch buffers are sized for.
    public let maxBatch: Int
    /// Bytes of the model's activation and scratch buffers for `maxBatch` rows.
    public let activationBytes: Int
    /// The embedding tables, when the model has any.
    public let tables: EmbeddingTables?
    /// Categorical fields of a row: each makes an embedding pair per row in the step's buffers.
    let categoricalFields: Int

    public init(model: ModelConfig, maxBatch: Int) {
        let one = makeModel(model, maxBatch: 1), two = makeModel(model, maxBatch: 2)
        let perRow = two.activationBytes - one.activationBytes
        denseParameters = one.layout.count
        self.maxBatch = maxBatch
        activationBytes = Self.sum(one.activationBytes - perRow, Self.product(perRow, maxBatch))
        tables = model.modelTables
        categoricalFields = model.categoricalFields
    }

    /// Optimizer state slots per dense parameter, and floats of state per embedding row.
    public static func stateFloats(_ kind: OptimizerKind, dim: Int) -> (dense: Int, row: Int) {
        switch kind {
        case .sgd: return (0, 0)
        case .momentum, .adagrad: return (1, dim)
        case .rowwiseAdagrad: return (1, 1)
        case .adam, .adamw: return (2, 2 * dim)
        }
    }

    /// One rank's training bytes outside the embedding rows, by part.
    public func training(optimizer: OptimizerConfig, worldSize: Int) -> Breakdown {
        let slots = Self.stateFloats(optimizer.kind, dim: tables?.dim ?? 1).dense
        var parts = Breakdown(maxBatch: maxBatch)
        parts.add("dense parameters", Self.product(denseParameters, 4))
        parts.add("their gradients", Self.product(denseParameters + StepSlot.count, 4))
        parts.add("their optimizer state", Self.product(denseParameters, 4 * slots))
        parts.add("activations", Self.sum(activationBytes, Self.product(maxBatch, 4)), perRow: true)
        parts.add("step bookkeeping", 4096)
        if let tables {
            // The pairs of one micro-batch and of a whole step; the exchange's buffers hold at
            // most every rank's pairs or every row (the dense exchange: one record per row). A
            // pair: a 64-bit row and dim floats.
            let stride = tables.dim + 2
            let pairs = Self.product(maxBatch, categoricalFields), stepPairs = Self.product(pairs, optimizer.accumulate)
            let exchanged = min(Self.product(stepPairs, worldSize), tables.rowCount)
            var exchange = Self.product(exchanged, stride * 4)
            if worldSize > 1 {
                exchange = Self.sum(exchange, Self.product(Self.sum(exchanged, stepPairs), stride * 4))
            }
            parts.add("embedding gradient pairs", Self.product(Self.sum(pairs, optimizer.accumulate > 1 ? stepPairs : 0), stride * 4),
                      perRow: true)
            parts.add("their exchange", exchange, perRow: true)
            parts.add("working rows", Self.product(pairs, tables.dim * 4), perRow: true)
        }
        return parts
    }

    /// Checks one rank's training bytes against `memory` and plans the tables: the part outside
    /// the tables (`training`, plus `extraBytes` such as a benchmark's pool of rows) and the
    /// tables' rows with their optimizer state as `mode` places them (`EmbeddingPlanner`).
    /// Refuses with `TrainingError.modelConfig`: the bytes needed by part, the memory (named by
    /// `memoryDescription`, as `memoryDescription(memory:given:)` says it), and what to lower
    /// (`batchFlag` names the batch).
    /// Returns the plan and its planner (nil for a model without tables).
    public func plan(optimizer: OptimizerConfig, worldSize: Int, memory: Int, memoryDescription: String,
                     mode: EmbeddingSharding, extraBytes: (name: String, bytes: Int)? = nil,
                     batchFlag: String) throws -> (plan: EmbeddingPlan, planner: EmbeddingPlanner)? {
        var fixed = training(optimizer: optimizer, worldSize: worldSize)
        if let extraBytes { fixed.add(extraBytes.name, extraBytes.bytes, perRow: true) }
        let hint = fixed.batchBytes * 2 >= fixed.total
            ? "lower \(batchFlag) (buffers for \(maxBatch) rows per rank)"
            : "make the model smaller: the layer widths (--hidden, --bottom, --top or the model config's hidden, bottom, top)"
        guard let tables else {
            if fixed.total > memory {
                throw TrainingError.modelConfig("the model needs \(ByteCount.format(fixed.total)) per rank (\(fixed)), more than \(memoryDescription); \(hint)")
            }
            return nil
        }
        var planner = EmbeddingPlanner(worldSize: worldSize, fixedBytes: fixed.total,
                                       stateFloatsPerRow: Self.stateFloats(optimizer.kind, dim: tables.dim).row, memoryPerRank: memory)
        planner.memoryDescription = memoryDescription
        do {
            return (try planner.plan(tables, mode: mode), planner)
        } catch {
            throw TrainingError.modelConfig("\(error.description); outside the tables: \(fixed)\(fixed.total > memory ? "; \(hint)" : "")")
        }
    }

    /// The bytes of scoring batches of `maxBatch` rows: the parameters, every table row, the activations.
    public var inference: Breakdown {
        var parts = Breakdown(maxBatch: maxBatch)
        parts.add("dense parameters", Self.product(denseParameters, 4))
        if let tables { parts.add("embedding tables", Self.product(tables.rowCount, tables.dim * 4)) }
        parts.add("activations", activationBytes, perRow: true)
        return parts
    }

    /// Bytes by part, summed without overflowing (a total beyond `Int.max` stays at `Int.max`).
    public struct Breakdown: Sendable, CustomStringConvertible {
        public let maxBatch: Int
        public private(set) var parts: [(name: String, bytes: Int, perRow: Bool)] = []

        init(maxBatch: Int) { self.maxBatch = maxBatch }

        mutating func add(_ name: String, _ bytes: Int, perRow: Bool = false) { parts.append((name, bytes, perRow)) }

        public var total: Int { parts.reduce(0) { ModelMemory.sum($0, $1.bytes) } }
        /// The bytes that grow with the batch.
        public var batchBytes: Int { parts.filter(\.perRow).reduce(0) { ModelMemory.sum($0, $1.bytes) } }

        /// "dense parameters 1.0 MiB, ..., activations 3.2 GiB (for 100000 rows)".
        public var description: String {
            parts.filter { $0.bytes > 0 }.map { "\($0.name) \(ByteCount.format($0.bytes))" }.joined(separator: ", ")
                + " (batch buffers for \(maxBatch) rows)"
        }
    }

    /// The memory this process may use: the host's available memory (MemAvailable; the physical
    /// memory when unknown) divided by the ranks on the host (Open MPI's and Slurm's local rank
    /// counts; 1 when unknown), and how that was found, for messages.
    public static func availableToThisRank() -> (bytes: Int, source: String) {
        let environment = ProcessInfo.processInfo.environment
        let local = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"]
            .lazy.compactMap { environment[$0].flatMap { Int($0) } }.first ?? 1
        let available = ResidentMemory.availableBytes() ?? Int(ProcessInfo.processInfo.physicalMemory)
        let source = local > 1 ? "the host's available memory over its \(local) ranks" : "the host's available memory"
        return (available / max(local, 1), source)
    }

    /// How messages name the memory a rank may use: `--memory-per-rank` when `given`, else the
    /// host's share and how to change it.
    public static func memoryDescription(memory: Int, given: Bool) -> String {
        given ? "--memory-per-rank \(ByteCount.format(memory))"
            : "the \(ByteCount.format(memory)) available to a rank (\(availableToThisRank().source); set --memory-per-rank to say otherwise)"
    }

    static func product(_ a: Int, _ b: Int) -> Int {
        let (value, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? .max : value
    }

    static func sum(_ a: Int, _ b: Int) -> Int {
        let (value, overflow) = a.addingReportingOverflow(b)
        return overflow ? .max : value
    }
}
