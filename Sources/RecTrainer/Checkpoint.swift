import Foundation
import RecCheckpoint
import RecCore
import RecData
import RecDistributed

/// Checkpoints of a training run: everything needed to continue it exactly where it stopped.
///
/// The files and their atomic writing are `CheckpointDirectory`'s (RecCheckpoint). A checkpoint
/// `step-NNNNNNNN` holds
/// - `model.safetensors`: the dense tensors by layout name, and each field's embedding table as
///   `embedding.C<k>` with shape (rows, dim); metadata carries the model configuration;
/// - `optimizer.safetensors`: the optimizer's state buffers (momentum, Adam moments, Adagrad
///   accumulators, dense and embedding);
/// - `trainer.json`: format version, step, epoch and data position (training rows consumed in
///   the current epoch, counted globally, so a run can resume on a different number of ranks),
///   optimizer step, the best evaluation so far, and the full training configuration;
/// - `CHECKSUMS`: size and CRC-32 of each of the three files, checked before anything is loaded.
///
/// The randomness of a run is a pure function of (seed, step), so the seed in the configuration
/// is the whole random state. The learning-rate schedule is a pure function of the step, so the
/// step is its state; gradient accumulation completes within a step, and checkpoints are only
/// written between steps, so it has no state to save.
///
/// Rank 0 writes. Errors are `TrainingError.checkpoint`, which every rank and the CLI handle as
/// a run's checkpoint failure.
public enum Checkpoint {
    public static let formatVersion = 1

    /// The contents of `trainer.json`.
    public struct State: Codable, Sendable {
        public var formatVersion: Int
        /// Optimizer steps completed.
        public var step: Int
        /// The epoch in progress (0-based) and the training rows of it already consumed.
        public var epoch: Int
        public var epochRowOffset: Int
        public var samplesSeen: Int
        public var worldSize: Int
        public var optimizerStep: Int
        public var evaluation: EvaluationRecord?
        /// The best value of the selection metric so far, and the checkpoint that has it.
        public var bestMetric: Double?
        public var bestCheckpoint: String?
        public var config: TrainingConfig
        /// Early stopping: the best value of the selection metric over all evaluations, and the
        /// evaluations since it (absent in checkpoints written without early stopping).
        public var earlyStopBest: Double?
        public var evaluationsSinceBest: Int?
        /// The run this checkpoint belongs to: set when a run starts from scratch, kept by every
        /// resume; pruning removes only checkpoints of the run's own lineage (absent in older
        /// checkpoints, which are never pruned).
        public var lineage: String?
        /// The data it was trained on (absent in older checkpoints).
        public var data: DataIdentity?
    }

    /// The tensors a checkpoint holds, borrowed from the trainer's buffers.
    struct Buffers {
        var layout: ParameterLayout
        var parameters: FloatBuffer
        /// The whole tables (replicated runs; with sharding, the step's working rows, not saved).
        var embeddingTable: FloatBuffer
        var tables: EmbeddingTables?
        var optimizer: Optimizer
        /// The sharded tables, when the run shards some.
        var sharding: ShardedEmbeddings? = nil
    }

    static func name(step: Int) -> String { CheckpointDirectory.name(step: step) }

    // MARK: - Writing

    /// Writes `state`'s checkpoint under `root` and returns its path. On failure the temporary
    /// directory is removed and the previous checkpoint is untouched. With sharded tables this is
    /// rank 0's part of a collective (`writeSharded`).
    static func write(root: String, state: State, buffers: Buffers) throws -> String {
        if buffers.sharding != nil { return try writeSharded(root: root, state: state, buffers: buffers) }
        let tables = wholeTableSources(buffers.tables, in: buffers.embeddingTable.pointer)
        let embeddingState = buffers.optimizer.stateSlots.embedding.map {
            SafeTensors.Source(name: $0.name, shape: [$0.buffer.count], values: UnsafeBufferPointer($0.buffer))
        }
        return try write(root: root, state: state, buffers: buffers, tables: tables, embeddingState: embeddingState)
    }

    /// Writes the checkpoint with the given table tensors and embedding optimizer state.
    static func write(root: String, state: State, buffers: Buffers, tables: [SafeTensors.Source],
                      embeddingState: [SafeTensors.Source]) throws -> String {
        do {
            let writer = try CheckpointWriter(root: root, name: name(step: state.step))
            try writeFiles(writer, state: state, buffers: buffers, tables: tables, embeddingState: embeddingState)
            return try writer.commit()
        } catch {
            throw failure(error, root: root, step: state.step)
        }
    }

    /// Writes model.safetensors (the dense tensors and `tables`), optimizer.safetensors (the
    /// dense state and `embeddingState`) and trainer.json through `writer`. `modelRows` and
    /// `optimizerRows` are the files' `rows` metadata when their tables are pieces
    /// (`CheckpointTables`).
    static func writeFiles(_ writer: CheckpointWriter, state: State, buffers: Buffers, tables: [SafeTensors.Source],
                           embeddingState: [SafeTensors.Source], modelRows: [String: String] = [:], optimizerRows: [String: String] = [:]) throws {
        let model = denseSources(buffers.layout, in: buffers.parameters.pointer) + tables
        let sorted = JSONEncoder()
        sorted.outputFormatting = [.sortedKeys]   // byte-identical files for identical states
        let modelJSON = String(decoding: try sorted.encode(state.config.model), as: UTF8.self)
        try writer.write("model.safetensors") {
            try SafeTensors.write(model, metadata: modelRows.merging(["format": "rec-dist", "format_version": "\(formatVersion)",
                                                                      "step": "\(state.step)", "model": modelJSON]) { $1 }, to: $0)
        }
        let dense = buffers.optimizer.stateSlots.dense.map {
            SafeTensors.Source(name: $0.name, shape: [$0.buffer.count], values: UnsafeBufferPointer($0.buffer))
        }
        try writer.write("optimizer.safetensors") {
            try SafeTensors.write(dense + embeddingState, metadata: optimizerRows.merging(["step": "\(buffers.optimizer.step)",
                                                                                          "optimizer": buffers.optimizer.config.kind.rawValue]) { $1 },
                                  to: $0)
        }
        try writer.write("trainer.json") { try $0.write(try CheckpointDirectory.jsonEncoder().encode(state)) }
    }

    /// model.safetensors' dense tensors: the layout's, from `parameters`.
    public static func denseSources(_ layout: ParameterLayout, in parameters: UnsafePointer<Float>) -> [SafeTensors.Source] {
        layout.entries.map { e in
            SafeTensors.Source(name: e.name, shape: e.shape, values: UnsafeBufferPointer(start: parameters + e.offset, count: e.count))
        }
    }

    /// model.safetensors' tables when they are whole: `embedding.C<k>` for each of `tables`, from
    /// `embeddingTable` (none without tables).
    public static func wholeTableSources(_ tables: EmbeddingTables?, in embeddingTable: UnsafePointer<Float>) -> [SafeTensors.Source] {
        guard let t = tables else { return [] }
        return (0..<t.fields).map { f in
            SafeTensors.Source(name: "embedding.C\(f + 1)", shape: [t.rows(field: f), t.dim],
                               values: UnsafeBufferPointer(start: embeddingTable + t.firstRow(field: f) * t.dim, count: t.rows(field: f) * t.dim))
        }
    }

    /// A failed write of checkpoint `step` under `root` as `TrainingError.checkpoint`, saying
    /// whether a previous checkpoint is there to resume from.
    static func failure(_ error: any Error, root: String, step: Int) -> TrainingError {
        let previous = CheckpointDirectory.latest(in: root).map { "the previous checkpoint \(root)/\($0) is intact" }
            ?? "no previous checkpoint exists"
        let (path, message) = (error as? CheckpointError).map { ($0.path, $0.message) }
            ?? (error as? TrainingError).flatMap { if case .checkpoint(let path, let message) = $0 { (path, message) } else { nil } }
            ?? (root + "/" + name(step: step), "\(error.localizedDescription)")
        return TrainingError.checkpoint(path: path, message: "\(message); \(previous)")
    }

    /// Replaces `root/file` with a line naming `target`, atomically.
    static func writePointer(root: String, file: String, to target: String) throws {
        try reported { try CheckpointDirectory.writePointer(root: root, file: file, to: target) }
    }

    /// The checkpoint directories under `root`, oldest first.
    public static func list(root: String) -> [String] { CheckpointDirectory.list(root: root) }

    static func jsonEncoder() -> JSONEncoder { CheckpointDirectory.jsonEncoder() }

    static func jsonDecoder() -> JSONDecoder { CheckpointDirectory.jsonDecoder() }

    /// Runs `body`, reporting a checkpoint file's error as `TrainingError.checkpoint` (with the
    /// same text).
    static func reported<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as CheckpointError {
            throw TrainingError.checkpoint(path: error.path, message: error.message)
        }
    }

    // MARK: - Reading

    /// Resolves what `--resume` names: a checkpoint directory, or a root holding `latest`.
    public static func resolve(_ path: String) throws -> String {
        try reported { try CheckpointDirectory.resolve(path) }
    }

    /// Checks a checkpoint's files against CHECKSUMS and decodes its `trainer.json`. Refuses
    /// anything truncated, flipped or edited with an error saying what is wrong.
    public static func validate(_ dir: String) throws -> State {
        try reported { try CheckpointDirectory.verify(dir) }
        let data: Data
        do { data = Data(try MappedFile.contents(of: dir + "/trainer.json")) } catch {
            throw TrainingError.checkpoint(path: error.file, message: error.message)
        }
        guard let state = try? jsonDecoder().decode(State.self, from: data) else {
            let error = CheckpointDirectory.damaged(dir, "trainer.json cannot be decoded")
            throw TrainingError.checkpoint(path: error.path, message: error.message)
        }
        guard state.formatVersion == formatVersion else {
            throw TrainingError.checkpoint(path: dir, message: "format version \(state.formatVersion), this rec-dist reads version \(formatVersion); use the rec-dist that wrote it")
        }
        // The weights are in model.safetensors, and the sharded tables' rows in the shard files.
        var info = stat(), weightBytes = 0
        for file in try ["model.safetensors"] + reported({ try CheckpointDirectory.shardFiles(dir) }) where stat(dir + "/" + file, &info) == 0 {
            weightBytes += Int(info.st_size)
        }
        try state.check(dir, modelBytes: weightBytes)
        return state
    }

    /// Loads a validated checkpoint into the trainer's buffers. Every tensor must exist with
    /// exactly the shape this run's model has.
    static func load(_ dir: String, state: State, into buffers: Buffers) throws {
        if buffers.sharding != nil { return try loadDense(dir, state: state, into: buffers) }
        try reported {
            try CheckpointDirectory.readModelTensors(dir, layout: buffers.layout, parameters: buffers.parameters, tables: buffers.tables,
                                                     embeddingTable: buffers.embeddingTable, cause: "it was written for a different model configuration")
        }
        let optimizerFile = try MappedFile(path: dir + "/optimizer.safetensors")
        let (stateEntries, metadata) = try reported { try SafeTensors.parseHeader(optimizerFile.bytes, path: dir + "/optimizer.safetensors") }
        let pieces = CheckpointTables.pieceNames(metadata)
        var loaded: [(name: String, values: [Float])] = []
        for (name, entry) in stateEntries.sorted(by: { $0.key < $1.key }) where !pieces.contains(name) {
            var values = [Float](repeating: 0, count: entry.range.count / 4)
            try values.withUnsafeMutableBufferPointer { buffer in
                SafeTensors.copy(entry, from: optimizerFile.bytes, into: buffer)
                try reported { try CheckpointDirectory.requireFinite(UnsafeBufferPointer(buffer), tensor: name, file: dir + "/optimizer.safetensors") }
            }
            loaded.append((name, values))
        }
        if let tables = buffers.tables, try reported({ try !CheckpointDirectory.shardFiles(dir).isEmpty }) {
            // Written by a sharded run in per-rank files: each embedding slot assembled over all rows.
            let stored = try storedTables(dir, buffers: buffers)
            for slot in buffers.optimizer.stateSlots.embedding {
                try reported { try stored.requireFinite(slot.name, width: slot.perRow) }
                var values = [Float](repeating: 0, count: tables.rowCount * slot.perRow)
                values.withUnsafeMutableBufferPointer { buffer in
                    for t in 0..<tables.fields {
                        stored.read(slot.name, table: t, rows: 0..<tables.rows(field: t), width: slot.perRow,
                                    into: buffer.baseAddress! + tables.firstRow(field: t) * slot.perRow)
                    }
                }
                loaded.append((slot.name, values))
            }
        }
        do {
            try buffers.optimizer.loadState(step: state.optimizerStep, buffers: loaded)
        } catch {
            throw TrainingError.checkpoint(path: dir, message: "optimizer state: \(error)")
        }
    }

    /// The newest checkpoint under `root` that validates, skipping damaged ones with a warning.
    static func newestValid(root: String, warn: (String) -> Void) -> (dir: String, state: State)? {
        for name in list(root: root).reversed() {
            let dir = root + "/" + name
            do {
                return (dir, try validate(dir))
            } catch {
                warn("skipping checkpoint \(dir): \(error)")
            }
        }
        return nil
    }

    /// Reads the dense tensors and embedding tables of a checkpoint (or of the `latest` one
    /// under a root), after validating it.
    public static func readModel(at path: String) throws -> (model: ModelConfig, tensors: [SafeTensors.Tensor]) {
        let dir = try resolve(path)
        _ = try validate(dir)
        return try reported { try CheckpointDirectory.readModel(dir) }
    }
}
