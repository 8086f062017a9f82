import Foundation
import RecCheckpoint
import RecCore

extension Checkpoint.State {
    /// The largest step, epoch, row position or sample count a checkpoint may hold: far beyond
    /// any run, far below where arithmetic on it could overflow.
    static let countLimit = 1 << 48

    /// Checks every field of `trainer.json` by the rules its flag has, and that the model it
    /// describes fits in `modelBytes` (the size of `model.safetensors` and any shard files, which hold all its
    /// weights), before anything is allocated from it. The checksums only prove the files were
    /// not damaged since they were written; a hand edit with recomputed checksums must not trap,
    /// spin or allocate without bound.
    func check(_ dir: String, modelBytes: Int) throws {
        func refuse(_ field: String, _ problem: String) -> TrainingError {
            let error = CheckpointDirectory.damaged(dir, "trainer.json: \(field) \(problem)")
            return TrainingError.checkpoint(path: error.path, message: error.message)
        }
        func count(_ field: String, _ value: Int, from low: Int = 0, to high: Int = Checkpoint.State.countLimit) throws {
            guard value >= low && value <= high else { throw refuse(field, "\(value) is out of range (\(low) to \(high))") }
        }
        func finite(_ field: String, _ value: Double?) throws {
            if let value, !value.isFinite { throw refuse(field, "\(value) is not a finite number") }
        }
        try count("step", step)
        try count("epoch", epoch)
        try count("epochRowOffset", epochRowOffset)
        try count("samplesSeen", samplesSeen)
        try count("worldSize", worldSize, from: 1, to: 1 << 20)
        try count("optimizerStep", optimizerStep)
        try count("evaluationsSinceBest", evaluationsSinceBest ?? 0)
        try finite("bestMetric", bestMetric)
        try finite("earlyStopBest", earlyStopBest)
        if let scheme = data?.scheme, scheme != 1 && scheme != 2 {
            throw refuse("data.scheme", "\(scheme) is not a fingerprint scheme this version knows (1 or 2)")
        }
        if let best = bestCheckpoint, !(best.hasPrefix("step-") && best.count == 13 && Int(best.dropFirst(5)) != nil) {
            throw refuse("bestCheckpoint", "'\(best.prefix(40))' is not a checkpoint name (step-NNNNNNNN)")
        }
        let c = config
        try count("config.batchSize", c.batchSize, from: 1, to: 1 << 30)
        try count("config.evalBatchSize", c.evalBatchSize, from: 1, to: 1 << 30)
        try count("config.epochs", c.epochs, from: 1)
        if let steps = c.steps { try count("config.steps", steps, from: 1) }
        try count("config.keep", c.keep, from: 1)
        try count("config.optimizer.accumulate", c.optimizer.accumulate, from: 1, to: 4096)
        if let bytes = c.bucketBytes { try count("config.bucketBytes", bytes, from: 1 << 10, to: 1 << 30) }   // --bucket-kib 1 to 1048576
        if let bytes = c.memoryPerRank { try count("config.memoryPerRank", bytes, from: 1 << 20, to: 1 << 50) }   // --memory-per-rank 1M to 1024T
        if !(c.evalFraction >= 0 && c.evalFraction < 1) { throw refuse("config.evalFraction", "\(c.evalFraction) is outside [0, 1)") }
        if !(c.optimizer.learningRate > 0 && c.optimizer.learningRate.isFinite) {
            throw refuse("config.optimizer.learningRate", "\(c.optimizer.learningRate) is not a positive finite rate")
        }
        // The model: the configuration rules, then the weights it implies against the file's size.
        let m = c.model
        try count("config.model.denseInputs", m.denseInputs, to: 1 << 16)
        try count("config.model.categoricalFields", m.categoricalFields, to: 1 << 16)
        do { try m.validate() } catch { throw refuse("config.model: \(error.key)", error.message) }
        let floats = modelBytes / 4
        let stacks: [(String, [Int])] = m.kind == .dlrm ? [("bottom", m.bottom), ("top", m.top)] : m.kind == .logreg ? [] : [("hidden", m.hidden)]
        for (name, widths) in stacks {
            for (a, b) in zip(widths, widths.dropFirst()) where a * b > floats {
                throw refuse("config.model.\(name)", "\(widths) implies a \(a) x \(b) weight, more than model.safetensors holds (\(modelBytes) bytes)")
            }
        }
        if m.kind != .mlp {
            let rows = m.vocabularySizes ?? [Int](repeating: m.hashBuckets, count: m.categoricalFields)
            let total = rows.reduce(0) { $0 > floats ? $0 : $0 + min($1, floats + 1) }
            let field = m.vocabularySizes == nil ? "config.model.hashBuckets \(m.hashBuckets):" : "config.model.vocabularySizes:"
            if total > floats {
                throw refuse(field, "the embedding tables need more rows than model.safetensors holds (\(modelBytes) bytes)")
            }
            if let tables = m.modelTables, tables.rowCount * tables.dim > floats {
                throw refuse(field, "the embedding tables (\(tables.rowCount) x \(tables.dim)) need more than model.safetensors holds (\(modelBytes) bytes)")
            }
        }
    }
}
