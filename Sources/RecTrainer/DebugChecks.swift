import Foundation
import RecCore
import RecDistributed

/// The extra checks of `train --debug`.
extension Trainer {
    /// A step whose loss or gradient is not finite (no update was made, on any rank): skipped
    /// with --skip-nonfinite, else the run stops, naming the first bad value under --debug.
    func guardNonFinite<Model: RecModel>(_ step: TrainingStep<Model>, outcome: StepOutcome, number: Int,
                                         books: inout RunBooks) throws {
        if config.skipNonFinite {
            books.skippedSteps += 1
            if rank == 0 { logger.warning("step \(number): non-finite loss or gradient, step skipped on all ranks (--skip-nonfinite)") }
        } else if config.debug, let what = step.firstNonFinite(loss: outcome.loss) {
            throw TrainingError.nonFinite(step: number, what: what, lastCheckpoint: books.lastCheckpoint)
        } else if !config.debug {
            throw TrainingError.nonFinite(step: number, what: "the loss (\(outcome.loss)) or the gradients",
                                          lastCheckpoint: books.lastCheckpoint)
        }
    }

    /// Under --debug, after each step: rank 0 logs the step's loss and phases; every
    /// --debug-check-every steps the ranks compare replica checksums.
    func debugStep<Model: RecModel>(_ step: TrainingStep<Model>, state: RunState, loss: Double, since before: StepPhases) throws {
        let d = step.phases - before
        func ms(_ nanoseconds: UInt64) -> String { String(format: "%.3f", Double(nanoseconds) / 1e6) }
        if rank == 0 {
            logger.info("step \(state.step - 1): loss \(fmt(loss, 5)), forward \(ms(d.forward)) ms, backward \(ms(d.backward)) ms, communication \(ms(d.exposedCommunication)) ms, optimizer \(ms(d.optimizer)) ms")
        }
        if worldSize > 1 && state.step % config.debugCheckEvery == 0 {
            try checkReplicas(step: state.step, parameters: step.parameters, embeddingTable: step.embeddingTable)
        }
    }

    /// Compares a Double checksum of the parameters across ranks; any difference means the
    /// replicas no longer hold the same model.
    func checkReplicas(step: Int, parameters: FloatBuffer, embeddingTable: FloatBuffer) throws {
        var sum = 0.0, weighted = 0.0
        for (i, x) in parameters.buffer.enumerated() { sum += Double(x); weighted += Double(x) * Double(i % 97 + 1) }
        for x in embeddingTable.buffer { sum += Double(x) }
        let r = try communicator.allreduceMax([sum, -sum, weighted, -weighted])
        if r[0] != -r[1] || r[2] != -r[3] {
            throw TrainingError.replicasDiverged(step: step, minimum: -r[1], maximum: r[0])
        }
        if rank == 0 { logger.info("step \(step): replicas identical (checksum \(sum))") }
    }

    /// Central finite differences of the batch loss for the largest-gradient coordinate of every
    /// dense tensor and of the embedding rows, against the analytic gradient (one rank only).
    func checkGradients(model: any RecModel, batch: BatchView, parameters: FloatBuffer, embeddingTable: FloatBuffer,
                        gradients: FloatBuffer, sparse: SparseGradient, globalCount: Int) throws {
        guard batch.count > 0 else { return }
        func batchLoss() -> Double {
            let logits = model.forward(batch, parameters: parameters.pointer, embeddingTable: embeddingTable.pointer)
            var total = 0.0
            for i in 0..<batch.count { total += config.loss.value(logit: logits[i], label: batch.labels[i]) }
            return total / Double(globalCount)
        }
        func numeric(_ p: UnsafeMutablePointer<Float>) -> Double {
            let saved = p.pointee
            let h = max(Float(1e-3), abs(saved) * 1e-3)
            p.pointee = saved + h
            let up = batchLoss()
            p.pointee = saved - h
            let down = batchLoss()
            p.pointee = saved
            return (up - down) / Double((saved + h) - (saved - h))
        }
        var checks: [(name: String, analytic: Double, numeric: Double)] = []
        for entry in model.layout.entries {
            var best = entry.offset
            for i in entry.offset..<(entry.offset + entry.count) where abs(gradients.pointer[i]) > abs(gradients.pointer[best]) {
                best = i
            }
            checks.append(("\(entry.name)[\(best - entry.offset)]", Double(gradients.pointer[best]), numeric(parameters.pointer + best)))
        }
        if let tables = model.embeddings, sparse.count > 0 {
            var best = 0
            for i in 0..<(sparse.count * sparse.dim) where abs(sparse.values[i]) > abs(sparse.values[best]) { best = i }
            let row = Int(sparse.rows[best / sparse.dim]), k = best % sparse.dim
            var analytic = 0.0   // a row may appear several times in a batch
            for pair in 0..<sparse.count where Int(sparse.rows[pair]) == row { analytic += Double(sparse.values[pair * sparse.dim + k]) }
            let field = tables.field(ofRow: row)
            checks.append(("embedding field C\(field + 1) row \(row - tables.firstRow(field: field))[\(k)]", analytic,
                           numeric(embeddingTable.pointer + row * tables.dim + k)))
        }
        var failures: [String] = []
        for c in checks {
            let error = abs(c.analytic - c.numeric)
            let ok = error <= 1e-4 + 2e-2 * abs(c.numeric)
            logger.info("gradient check \(c.name): analytic \(String(format: "%.6e", c.analytic)), numeric \(String(format: "%.6e", c.numeric)) \(ok ? "ok" : "MISMATCH")")
            if !ok { failures.append("\(c.name): analytic \(c.analytic) vs numeric \(c.numeric)") }
        }
        if !failures.isEmpty { throw TrainingError.gradientCheckFailed(details: failures.joined(separator: "; ")) }
    }
}
