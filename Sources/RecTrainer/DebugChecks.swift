import RecCore
import RecDistributed

/// The extra checks of `train --debug`.
extension Trainer {
    /// Stops at the first NaN or infinity in the loss or in any layer's gradient, naming it.
    func checkFinite(step: Int, loss: Double, gradients: FloatBuffer, layout: ParameterLayout,
                     sync: GradientSync, lastCheckpoint: String?) throws {
        guard loss.isFinite else { throw TrainingError.nonFinite(step: step, what: "the training loss (\(loss))", lastCheckpoint: lastCheckpoint) }
        let g = gradients.pointer
        for entry in layout.entries {
            for i in entry.offset..<(entry.offset + entry.count) where !g[i].isFinite {
                throw TrainingError.nonFinite(step: step, what: "the gradient of \(entry.name) (element \(i - entry.offset) is \(g[i]))", lastCheckpoint: lastCheckpoint)
            }
        }
        let v = sync.values.pointer
        for i in 0..<(sync.rowCount * sync.dim) where !v[i].isFinite {
            throw TrainingError.nonFinite(step: step, what: "the gradient of embedding row \(sync.rows[i / sync.dim])", lastCheckpoint: lastCheckpoint)
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
