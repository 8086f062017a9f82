import Foundation
import RecCore
import RecData
import RecDistributed

/// One evaluation's figures, as appended to the metrics log (one JSON object per line).
public struct EvaluationRecord: Codable, Sendable {
    public var step: Int
    public var epoch: Int
    public var samples: Int
    public var train_loss: Double?
    public var auc: Double?
    public var logloss: Double
    public var accuracy: Double
    public var mean_prediction: Double
    public var mean_label: Double
    public var eval_rows: Int
    public var oracle_auc: Double?
    public var samples_per_s: Double
    public var elapsed_s: Double
    public var world_size: Int
    public var model: String
    /// Mean step-time breakdown (milliseconds) over the steps since the previous evaluation.
    public var step_ms: Double?
    public var forward_ms: Double?
    public var backward_ms: Double?
    public var communication_ms: Double?
    public var optimizer_ms: Double?
    /// Mean time a step waited for its batch (prepared datasets are prefetched on a thread).
    public var data_wait_ms: Double?
    /// Leave-last-out ranking (a prepared dataset whose evaluation split comes in groups of one
    /// held-out positive and its sampled negatives): hit rate and NDCG at 10.
    public var hit_rate_at_10: Double?
    public var ndcg_at_10: Double?
    /// Calibration (mean prediction / mean label), and the errors of the predicted probability
    /// against the label (for ratings scaled to [0, 1]).
    public var calibration: Double?
    public var rmse: Double?
    public var mae: Double?
    /// Leave-last-out ranking at the run's `--k`: how candidates were ranked (e.g. "1 held-out
    /// positive vs 99 sampled negatives per user"), K, users, HR@K, NDCG@K, Recall@K and MRR.
    public var ranking_protocol: String?
    public var k: Int?
    public var ranked_users: Int?
    public var hit_rate_at_k: Double?
    public var ndcg_at_k: Double?
    public var recall_at_k: Double?
    public var mrr: Double?
    /// The learning rate of the last step, and with --clip-norm the last step's global gradient
    /// norm before clipping and the steps clipped since the previous evaluation.
    public var lr: Double?
    public var grad_norm: Double?
    public var clipped_steps: Int?
}

/// What a finished run reports.
public struct TrainingResult: Sendable {
    public var steps: Int
    public var samples: Int
    public var finalEvaluation: EvaluationRecord?
    public var checkpointPath: String?
    public var samplesPerSecond: Double
    /// Steps skipped because of a non-finite loss or gradient (with --skip-nonfinite).
    public var skippedSteps: Int
    /// The step the run resumed from, if it did.
    public var resumedFrom: Int?
    /// The step at which early stopping ended the run, if it did.
    public var stoppedEarlyAt: Int?
    /// The checkpoint with the best selection metric, if one was written.
    public var bestCheckpoint: String?
}

extension Trainer {
    // MARK: - Evaluation (rank 0)

    /// Rank 0: the evaluation record and line of `predictions` (the probabilities of `data.eval`).
    func evaluate(predictions: [Float], data: TrainingData,
                  step: Int, epoch: Int, samples: Int, trainLoss: Double?, samplesPerSecond: Double,
                  elapsed: Double) -> EvaluationRecord {
        var evaluation = BinaryEvaluation()
        predictions.withUnsafeBufferPointer { p in
            evaluation.append(probabilities: p, labels: UnsafeBufferPointer(start: data.eval.labels, count: data.eval.count))
        }
        let summary = evaluation.summary()
        let oracleAUC = data.oracle.flatMap { Metrics.auc(scores: $0, labels: data.eval.labelArray) }
        var record = EvaluationRecord(step: step, epoch: epoch, samples: samples, train_loss: trainLoss,
                                      auc: summary.auc, logloss: summary.logloss, accuracy: summary.accuracy,
                                      mean_prediction: summary.meanPrediction, mean_label: summary.meanLabel,
                                      eval_rows: summary.count, oracle_auc: oracleAUC,
                                      samples_per_s: samplesPerSecond, elapsed_s: elapsed,
                                      world_size: worldSize, model: config.model.kind.rawValue)
        record.calibration = summary.calibration
        record.rmse = summary.rmse
        record.mae = summary.mae
        var line = "eval  step \(step)  auc \(summary.auc.map { fmt($0, 4) } ?? "n/a")  logloss \(fmt(summary.logloss, 4))  accuracy \(fmt(summary.accuracy, 4))  calibration \(summary.calibration.map { fmt($0, 4) } ?? "n/a")  rmse \(fmt(summary.rmse, 4))  mae \(fmt(summary.mae, 4))  (\(summary.count) rows"
        if let oracleAUC { line += ", oracle auc \(fmt(oracleAUC, 4))" }
        if let g = data.evalGroupSize {
            let labels = UnsafeBufferPointer(start: data.eval.labels, count: data.eval.count)
            let k = config.rankingK ?? 10
            predictions.withUnsafeBufferPointer { p in
                if let at10 = RankingMetrics.evaluate(scores: p, labels: labels, groupSize: g, k: 10),
                   let atK = RankingMetrics.evaluate(scores: p, labels: labels, groupSize: g, k: k) {
                    let description = RankingMetrics.protocolDescription(labels: labels, groupSize: g)
                    record.hit_rate_at_10 = at10.hitRate
                    record.ndcg_at_10 = at10.ndcg
                    record.ranking_protocol = description
                    record.k = k
                    record.ranked_users = atK.groups
                    record.hit_rate_at_k = atK.hitRate
                    record.ndcg_at_k = atK.ndcg
                    record.recall_at_k = atK.recall
                    record.mrr = atK.mrr
                    line += ", \(atK.groups) users, \(description): HR@\(k) \(fmt(atK.hitRate, 4)), NDCG@\(k) \(fmt(atK.ndcg, 4)), Recall@\(k) \(fmt(atK.recall, 4)), MRR \(fmt(atK.mrr, 4))"
                    if k != 10 { line += ", HR@10 \(fmt(at10.hitRate, 4)), NDCG@10 \(fmt(at10.ndcg, 4))" }
                }
            }
        }
        logger.info("\(line))")
        return record
    }

    /// Probabilities for `rows`, in batches of the model's capacity.
    public static func predictions(model: any RecModel, rows: FeatureRowsBuffer, parameters: UnsafePointer<Float>,
                                   embeddingTable: UnsafePointer<Float>) -> [Float] {
        var out = [Float](repeating: 0, count: rows.count)
        let context = model.trainingContext
        model.trainingContext = nil   // evaluation and prediction: dropout off
        defer { model.trainingContext = context }
        var start = 0
        while start < rows.count {
            let n = min(model.maxBatch, rows.count - start)
            let logits = model.forward(rows.view(start..<(start + n)), parameters: parameters, embeddingTable: embeddingTable)
            for i in 0..<n { out[start + i] = Loss.sigmoid(logits[i]) }
            start += n
        }
        return out
    }

    /// The probabilities of the evaluation rows, on rank 0 (empty elsewhere). With sharded tables
    /// every rank takes part: rank 0's batches gather their rows from the owners, the other
    /// ranks serve them with empty batches, as many as rank 0 has.
    func scoreEvaluation<Model: RecModel>(_ step: TrainingStep<Model>, data: TrainingData) throws -> [Float] {
        guard let sharding = step.sharding else {
            return rank == 0 ? Trainer.predictions(model: step.model, rows: data.eval, parameters: step.parameters.pointer,
                                                   embeddingTable: step.embeddingTable.pointer) : []
        }
        let model = step.model
        let rows = rank == 0 ? data.eval.count : 0
        let total = Int(try communicator.allreduceMax([Double(rows)])[0])
        var out = [Float](repeating: 0, count: rows)
        let context = model.trainingContext
        model.trainingContext = nil   // dropout off
        defer { model.trainingContext = context }
        var start = 0
        while start < total {
            let n = min(model.maxBatch, total - start)
            var view = data.eval.view(rank == 0 ? start..<(start + n) : 0..<0)
            view.categoricalWidth = config.model.categoricalFields   // a rank without evaluation rows serves only
            let working = try sharding.gather(view, into: step.embeddingTable.pointer)
            if rank == 0 {
                let logits = model.forward(working, parameters: step.parameters.pointer, embeddingTable: step.embeddingTable.pointer)
                for i in 0..<n { out[start + i] = Loss.sigmoid(logits[i]) }
            }
            start += n
        }
        return out
    }

    /// Probabilities for Criteo rows (13 dense, 26 hashed categorical fields).
    public static func predictions(model: any RecModel, rows: CriteoRows, parameters: UnsafePointer<Float>,
                                   embeddingTable: UnsafePointer<Float>) -> [Float] {
        predictions(model: model, rows: FeatureRowsBuffer(rows), parameters: parameters, embeddingTable: embeddingTable)
    }

    // MARK: - In the loop

    /// Evaluates after a step: rank 0 scores the evaluation rows, logs the line and appends the
    /// record (with the learning rate, clipping and step-time figures) to the metrics log and the
    /// TensorBoard events; every rank learns whether they could be written.
    func evaluate<Model: RecModel>(_ step: TrainingStep<Model>, data: TrainingData, state: RunState, books: inout RunBooks,
                                   throughput: inout Throughput, log: FileHandle?, tensorBoard: TensorBoardWriter?) throws {
        var metricsFailure: (any Error)?
        throughput.pause()
        let predictions = try scoreEvaluation(step, data: data)
        if rank == 0 {
            var record = evaluate(predictions: predictions, data: data, step: state.step, epoch: state.completedEpochs, samples: state.samplesSeen,
                                  trainLoss: books.since.meanLoss, samplesPerSecond: throughput.samplesPerSecond,
                                  elapsed: throughput.elapsed)
            record.lr = Double(step.optimizer.learningRate)
            if config.optimizer.clipNorm != nil {
                record.grad_norm = books.since.gradientNorm
                record.clipped_steps = books.since.clippedSteps
            }
            step.phases.describe(into: &record, since: books.phasesAtEvaluation)
            books.phasesAtEvaluation = step.phases
            do { try appendMetrics(record, to: log) } catch { metricsFailure = error }
            do { try tensorBoard?.write(record) } catch { metricsFailure = error }
            books.lastRecord = record
        }
        throughput.resume()
        if config.metricsPath != nil || config.tensorBoardDir != nil {
            try agree(metricsFailure, stage: "writing the metrics log or TensorBoard events")
        }
        books.since.reset()
    }

    /// After an evaluation: rank 0 decides whether the selection metric stopped improving (by
    /// more than the min-delta), and every rank learns the decision in one collective, so all stop
    /// at the same step. Returns whether to stop, and whether this evaluation beats the best
    /// checkpoint's metric (then the caller checkpoints it, so that `best` points to it).
    func judgeEarlyStop(state: inout RunState, record: EvaluationRecord?) throws -> (stop: Bool, newBest: Bool) {
        guard let patience = config.earlyStopPatience else { return (false, false) }
        let policy = EarlyStopPolicy(metric: config.selectionMetric, patience: patience, minDelta: config.earlyStopMinDelta ?? 0)
        var verdict = EarlyStopPolicy.Verdict(stop: false, improved: false, missing: false)
        if rank == 0 {
            let label = policy.metric.label(k: config.rankingK ?? 10)
            let value = record.flatMap { $0.step == state.step ? policy.metric.value(of: $0) : nil }
            verdict = policy.judge(value, state: &state)
            if verdict.missing {
                logger.warning("step \(state.step): no finite \(label) in this evaluation; it counts as one without improvement")
            }
            if verdict.stop {
                logger.info("early stop at step \(state.step): \(label) has not improved for \(state.evaluationsSinceBest) evaluation(s) (best \(state.earlyStopBest.map { fmt($0, 4) } ?? "n/a"))")
            }
        }
        let agreed = try communicator.allreduceMax([verdict.stop ? 1 : 0, verdict.improved ? 1 : 0])
        return (agreed[0] != 0, agreed[1] != 0)
    }
}

/// `x` with `digits` decimals; "n/a" for NaN and infinities (an evaluation without rows).
func fmt(_ x: Double, _ digits: Int) -> String { x.isFinite ? String(format: "%.\(digits)f", x) : "n/a" }
