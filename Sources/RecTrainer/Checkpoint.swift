import Foundation
import RecCheckpoint
import RecCore
import RecData

/// Checkpoints: everything needed to continue a run exactly where it stopped.
///
/// A checkpoint is a directory `step-NNNNNNNN` under the checkpoint root, holding
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
/// Writing is atomic: the files go into a hidden temporary directory, each is fsynced, the
/// directory is renamed into place and the root fsynced; then `latest` (and `best`) are replaced
/// by rename. A crash or a full disk leaves the previous checkpoint intact. Rank 0 writes.
public enum Checkpoint {
    public static let formatVersion = 1
    static let files = ["model.safetensors", "optimizer.safetensors", "trainer.json"]

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
    }

    /// The tensors a checkpoint holds, borrowed from the trainer's buffers.
    struct Buffers {
        var layout: ParameterLayout
        var parameters: FloatBuffer
        var embeddingTable: FloatBuffer
        var tables: EmbeddingTables?
        var optimizer: Optimizer
    }

    static func name(step: Int) -> String { String(format: "step-%08d", step) }

    // MARK: - Writing

    /// Writes `state`'s checkpoint under `root` and returns its path. On failure the temporary
    /// directory is removed and the previous checkpoint is untouched.
    static func write(root: String, state: State, buffers: Buffers) throws -> String {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: root, withIntermediateDirectories: true)
        } catch {
            throw TrainingError.checkpoint(path: root, message: "cannot create the directory (\(error.localizedDescription)); choose a writable --checkpoint-dir")
        }
        let name = name(step: state.step)
        let final = root + "/" + name
        let temporary = root + "/.\(name).tmp-\(getpid())"
        try? fm.removeItem(atPath: temporary)
        do {
            guard mkdir(temporary, 0o755) == 0 else {
                throw TrainingError.checkpoint(path: temporary, message: "cannot create: \(errnoString())")
            }
            var sums: [String] = []
            func record(_ sink: FileSink, _ file: String) throws {
                try sink.close()
                sums.append(String(format: "%08x %d %@", sink.crc.value, sink.bytes, file))
            }

            var model: [SafeTensors.Source] = buffers.layout.entries.map { e in
                SafeTensors.Source(name: e.name, shape: e.shape,
                                   values: UnsafeBufferPointer(start: buffers.parameters.pointer + e.offset, count: e.count))
            }
            if let t = buffers.tables {
                for f in 0..<t.fields {
                    model.append(SafeTensors.Source(name: "embedding.C\(f + 1)", shape: [t.rows(field: f), t.dim],
                        values: UnsafeBufferPointer(start: buffers.embeddingTable.pointer + t.firstRow(field: f) * t.dim, count: t.rows(field: f) * t.dim)))
                }
            }
            let sorted = JSONEncoder()
            sorted.outputFormatting = [.sortedKeys]   // byte-identical files for identical states
            let modelJSON = String(decoding: try sorted.encode(state.config.model), as: UTF8.self)
            var sink = try FileSink(path: temporary + "/model.safetensors")
            try SafeTensors.write(model, metadata: ["format": "rec-dist", "format_version": "\(formatVersion)",
                                                    "step": "\(state.step)", "model": modelJSON], to: sink)
            try record(sink, "model.safetensors")

            let optimizerState = buffers.optimizer.stateBuffers()
            sink = try FileSink(path: temporary + "/optimizer.safetensors")
            try optimizerState.withSources { sources in
                try SafeTensors.write(sources, metadata: ["step": "\(buffers.optimizer.step)",
                                                          "optimizer": buffers.optimizer.config.kind.rawValue], to: sink)
            }
            try record(sink, "optimizer.safetensors")

            sink = try FileSink(path: temporary + "/trainer.json")
            try sink.write(try jsonEncoder().encode(state))
            try record(sink, "trainer.json")

            sink = try FileSink(path: temporary + "/CHECKSUMS")
            try sink.write(Data((sums.joined(separator: "\n") + "\n").utf8))
            try sink.close()
            fsyncPath(temporary)

            if fm.fileExists(atPath: final) { try fm.removeItem(atPath: final) }
            guard rename(temporary, final) == 0 else {
                throw TrainingError.checkpoint(path: final, message: "rename failed: \(errnoString())")
            }
            fsyncPath(root)
        } catch {
            try? fm.removeItem(atPath: temporary)
            let previous = (try? latest(in: root)).flatMap { $0 }.map { "the previous checkpoint \(root)/\($0) is intact" }
                ?? "no previous checkpoint exists"
            if case let TrainingError.checkpoint(path, message) = error {
                throw TrainingError.checkpoint(path: path, message: "\(message); \(previous)")
            }
            if let error = error as? CheckpointError {
                throw TrainingError.checkpoint(path: error.path, message: "\(error.message); \(previous)")
            }
            throw TrainingError.checkpoint(path: final, message: "\(error.localizedDescription); \(previous)")
        }
        try writePointer(root: root, file: "latest", to: name)
        return final
    }

    /// Replaces `root/file` with a line naming `target`, atomically.
    static func writePointer(root: String, file: String, to target: String) throws {
        let temporary = root + "/.\(file).tmp-\(getpid())"
        try reported {
            let sink = try FileSink(path: temporary)
            try sink.write(Data((target + "\n").utf8))
            try sink.close()
        }
        guard rename(temporary, root + "/" + file) == 0 else {
            throw TrainingError.checkpoint(path: root + "/" + file, message: "rename failed: \(errnoString())")
        }
        fsyncPath(root)
    }

    /// Removes all but the newest `keep` checkpoints, never removing `protected` (the best).
    /// Returns the names removed.
    @discardableResult
    static func prune(root: String, keep: Int, protected: String?) -> [String] {
        let all = list(root: root)
        guard all.count > keep else { return [] }
        var removed: [String] = []
        for name in all.dropLast(keep) where name != protected {
            if (try? FileManager.default.removeItem(atPath: root + "/" + name)) != nil { removed.append(name) }
        }
        return removed
    }

    /// The checkpoint directories under `root`, oldest first.
    public static func list(root: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return names.filter { $0.hasPrefix("step-") && $0.count == 13 && Int($0.dropFirst(5)) != nil }.sorted()
    }

    /// The name `root/latest` points to, if any.
    static func latest(in root: String) throws -> String? {
        guard let text = try? String(contentsOfFile: root + "/latest", encoding: .utf8) else { return nil }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func jsonEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return encoder
    }

    /// Reads what `jsonEncoder()` writes (non-finite numbers as strings).
    static func jsonDecoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return decoder
    }

    /// Runs `body`, reporting a checkpoint file's error as `TrainingError.checkpoint` (with the
    /// same text), the error every rank and the CLI handle as a run's checkpoint failure.
    static func reported<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as CheckpointError {
            throw TrainingError.checkpoint(path: error.path, message: error.message)
        }
    }

    static func fsyncPath(_ path: String) {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }

    // MARK: - Reading

    /// Resolves what `--resume` names: a checkpoint directory, or a root holding `latest`.
    public static func resolve(_ path: String) throws -> String {
        if FileManager.default.fileExists(atPath: path + "/CHECKSUMS") { return path }
        if let name = try latest(in: path) { return path + "/" + name }
        throw TrainingError.checkpoint(path: path, message: "not a checkpoint (no CHECKSUMS) and no 'latest' inside; pass a step-NNNNNNNN directory or the --checkpoint-dir of a previous run")
    }

    /// Checks a checkpoint's files against CHECKSUMS and decodes its `trainer.json`. Refuses
    /// anything truncated, flipped or edited with an error saying what is wrong.
    public static func validate(_ dir: String) throws -> State {
        func fail(_ message: String) -> TrainingError {
            .checkpoint(path: dir, message: "\(message). The checkpoint is damaged; resume from an earlier one (they are listed in the directory) or start afresh")
        }
        guard let text = try? String(contentsOfFile: dir + "/CHECKSUMS", encoding: .utf8) else {
            throw fail("CHECKSUMS is missing or unreadable")
        }
        var expected: [String: (crc: UInt32, size: Int)] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count == 3, let crc = UInt32(parts[0], radix: 16), let size = Int(parts[1]),
                  files.contains(String(parts[2])) else { throw fail("CHECKSUMS has a malformed line '\(line.prefix(80))'") }
            expected[String(parts[2])] = (crc, size)
        }
        for file in files {
            guard let e = expected[file] else { throw fail("CHECKSUMS does not list \(file)") }
            let mapped: MappedFile
            do { mapped = try MappedFile(path: dir + "/" + file) } catch { throw fail("\(file) cannot be read (\(error))") }
            guard mapped.bytes.count == e.size else {
                throw fail("\(file) has \(mapped.bytes.count) bytes, CHECKSUMS says \(e.size) (truncated?)")
            }
            guard CRC32.checksum(mapped.bytes) == e.crc else { throw fail("\(file) does not match its CRC-32 (corrupted)") }
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/trainer.json"))
        guard let state = try? jsonDecoder().decode(State.self, from: data) else { throw fail("trainer.json cannot be decoded") }
        guard state.formatVersion == formatVersion else {
            throw TrainingError.checkpoint(path: dir, message: "format version \(state.formatVersion), this rec-dist reads version \(formatVersion); use the rec-dist that wrote it")
        }
        return state
    }

    /// Loads a validated checkpoint into the trainer's buffers. Every tensor must exist with
    /// exactly the shape this run's model has.
    static func load(_ dir: String, state: State, into buffers: Buffers) throws {
        func fail(_ message: String) -> TrainingError { .checkpoint(path: dir, message: message) }
        try readModelTensors(dir, layout: buffers.layout, parameters: buffers.parameters, tables: buffers.tables,
                             embeddingTable: buffers.embeddingTable, cause: "it was written for a different model configuration")

        let optimizerFile = try MappedFile(path: dir + "/optimizer.safetensors")
        let (stateEntries, _) = try reported { try SafeTensors.parseHeader(optimizerFile.bytes, path: dir + "/optimizer.safetensors") }
        var loaded: [(name: String, values: [Float])] = []
        for (name, entry) in stateEntries.sorted(by: { $0.key < $1.key }) {
            var values = [Float](repeating: 0, count: entry.range.count / 4)
            values.withUnsafeMutableBufferPointer { SafeTensors.copy(entry, from: optimizerFile.bytes, into: $0) }
            loaded.append((name, values))
        }
        do {
            try buffers.optimizer.loadState(step: state.optimizerStep, buffers: loaded)
        } catch {
            throw fail("optimizer state: \(error)")
        }
    }

    /// Copies `dir/model.safetensors` into the parameters (by `layout`) and the embedding tables,
    /// after checking that it holds exactly those tensors with those shapes; `cause` says what a
    /// mismatch means to the caller.
    package static func readModelTensors(_ dir: String, layout: ParameterLayout, parameters: FloatBuffer, tables: EmbeddingTables?,
                                 embeddingTable: FloatBuffer, cause: String) throws {
        func fail(_ message: String) -> TrainingError { .checkpoint(path: dir, message: message) }
        let modelFile = try MappedFile(path: dir + "/model.safetensors")
        let (entries, _) = try reported { try SafeTensors.parseHeader(modelFile.bytes, path: dir + "/model.safetensors") }
        var expected: [(name: String, shape: [Int], destination: UnsafeMutableBufferPointer<Float>)] = layout.entries.map {
            ($0.name, $0.shape, UnsafeMutableBufferPointer(start: parameters.pointer + $0.offset, count: $0.count))
        }
        if let t = tables {
            for f in 0..<t.fields {
                expected.append(("embedding.C\(f + 1)", [t.rows(field: f), t.dim],
                                 UnsafeMutableBufferPointer(start: embeddingTable.pointer + t.firstRow(field: f) * t.dim, count: t.rows(field: f) * t.dim)))
            }
        }
        guard Set(entries.keys) == Set(expected.map(\.name)) else {
            let extra = Set(entries.keys).subtracting(expected.map(\.name)).sorted().prefix(3)
            let missing = Set(expected.map(\.name)).subtracting(entries.keys).sorted().prefix(3)
            throw fail("its tensors do not match this model (missing \(Array(missing)), unexpected \(Array(extra))); \(cause)")
        }
        for (name, shape, _) in expected {
            let entry = entries[name]!
            guard entry.shape == shape else {
                throw fail("tensor \(name) has shape \(entry.shape), this model needs \(shape); \(cause)")
            }
        }
        for (name, _, destination) in expected { SafeTensors.copy(entries[name]!, from: modelFile.bytes, into: destination) }
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
        let file = dir + "/model.safetensors"
        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        let (tensors, metadata) = try reported { try SafeTensors.decode(data, path: file) }
        guard metadata["format"] == "rec-dist", let json = metadata["model"],
              let model = try? JSONDecoder().decode(ModelConfig.self, from: Data(json.utf8)) else {
            throw TrainingError.checkpoint(path: file, message: "no rec-dist model description in the metadata")
        }
        return (model, tensors)
    }
}

extension Array where Element == (name: String, values: [Float]) {
    /// Borrows every buffer as a safetensors source, 1-D.
    func withSources<R>(_ body: ([SafeTensors.Source]) throws -> R) rethrows -> R {
        func go(_ i: Int, _ acc: [SafeTensors.Source]) throws -> R {
            if i == count { return try body(acc) }
            return try self[i].values.withUnsafeBufferPointer { b in
                try go(i + 1, acc + [SafeTensors.Source(name: self[i].name, shape: [b.count], values: b)])
            }
        }
        return try go(0, [])
    }
}
