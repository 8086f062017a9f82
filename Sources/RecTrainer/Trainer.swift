import Foundation
import Logging
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
}

/// What a finished run reports.
public struct TrainingResult: Sendable {
    public var steps: Int
    public var samples: Int
    public var finalEvaluation: EvaluationRecord?
    public var checkpointPath: String?
    public var samplesPerSecond: Double
}

/// The data-parallel training loop.
///
/// Every rank builds the same model, loads only its block-cyclic shard, and runs the same
/// number of steps. Each step: forward and backward on the local rows, an allreduce of the dense
/// gradients (with the loss riding along in one extra slot), a gather of the embedding rows the
/// step touched, and the same optimizer update on every rank. Rank 0 evaluates and writes the
/// checkpoint; the other ranks meanwhile wait in the next matched collective.
public final class Trainer {
    public let config: TrainingConfig
    let communicator: any Communicator
    let logger: Logger
    var rank: Int { communicator.rank }
    var worldSize: Int { communicator.size }

    public init(config: TrainingConfig, communicator: any Communicator, logger: Logger) {
        self.config = config
        self.communicator = communicator
        self.logger = logger
    }

    // MARK: - Data

    struct LoadedData {
        var train: CriteoRows
        var shard: BlockCyclicShard
        var eval: CriteoRows          // rank 0 only; empty elsewhere
        var oracle: [Double]?         // true probabilities of the eval rows, when a side file exists
        var totalTrainRows: Int
    }

    /// Loads this rank's shard (and, on rank 0, the evaluation rows). A failure on any rank stops
    /// all ranks together: the flags are agreed in one allreduce before any training collective.
    func loadData() throws -> LoadedData {
        var failure: (any Error)?
        var loaded: LoadedData?
        do {
            loaded = try loadLocal()
        } catch {
            failure = error
        }
        var flags = [Double](repeating: 0, count: worldSize)
        flags[rank] = failure == nil ? 0 : 1
        flags = try communicator.allreduceMax(flags)
        if let failure { throw failure }
        let failed = flags.indices.filter { flags[$0] != 0 }
        if !failed.isEmpty { throw TrainingError.peerFailed(ranks: failed, stage: "data loading") }
        return loaded!
    }

    private func loadLocal() throws -> LoadedData {
        let file = try MappedFile(path: config.dataPath)
        let rowCount = CriteoTSV.countRows(file)
        let split = config.evalPath == nil
            ? DataSplit.trainEval(rowCount: rowCount, evalFraction: config.evalFraction)
            : (train: 0..<rowCount, eval: 0..<0)
        guard !split.train.isEmpty else {
            throw TrainingError.notEnoughData("'\(config.dataPath)' has \(rowCount) rows: nothing left to train on. "
                + "Use a larger file or a smaller --eval-fraction.")
        }
        let shard = BlockCyclicShard(rank: rank, worldSize: worldSize, blockSize: config.batchSize, rows: split.train)
        let start = Date()
        let train = try CriteoTSV.parse(file, selecting: shard.contains)
        precondition(train.count == shard.localCount)
        var eval = CriteoRows()
        var oracle: [Double]?
        if rank == 0 {
            if let evalPath = config.evalPath {
                eval = try CriteoTSV.parse(try MappedFile(path: evalPath))
            } else if !split.eval.isEmpty {
                let range = split.eval
                eval = try CriteoTSV.parse(file, selecting: { range.contains($0) })
                let sidePath = SynthGenerator.defaultProbabilitiesPath(for: config.dataPath)
                if FileManager.default.fileExists(atPath: sidePath) {
                    let all = try SynthGenerator.readProbabilities(path: sidePath)
                    if all.count == rowCount { oracle = Array(all[range]) }
                }
            }
        }
        logger.debug("loaded \(train.count) training rows (of \(split.train.count)) and \(eval.count) evaluation rows in \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
        return LoadedData(train: train, shard: shard, eval: eval, oracle: oracle, totalTrainRows: split.train.count)
    }

    // MARK: - Training

    /// Runs the whole training: load, initialize, step, evaluate, checkpoint.
    public func run() throws -> TrainingResult {
        let data = try loadData()
        let stepsPerEpoch = data.shard.stepsPerEpoch
        let totalSteps = config.steps ?? config.epochs * stepsPerEpoch
        let model = makeModel(config.model, maxBatch: max(config.batchSize, config.evalBatchSize))
        let layout = model.layout
        let tables = model.embeddings
        let dim = tables?.dim ?? 1
        let parameters = FloatBuffer(count: layout.count)
        let gradients = FloatBuffer(count: layout.count + 1)   // + 1: the step's loss sum rides along
        let embeddingTable = FloatBuffer(count: (tables?.rowCount ?? 0) * dim)
        let dLogits = FloatBuffer(count: config.batchSize)
        let sparse = SparseGradient(capacity: config.batchSize * config.model.categoricalFields, dim: dim)
        let sync = GradientSync(communicator: communicator, embeddingRows: tables?.rowCount ?? 0, dim: dim,
                                maxLocalPairs: tables == nil ? 0 : config.batchSize * config.model.categoricalFields)
        let optimizer = Optimizer(config: config.optimizer, parameterCount: layout.count,
                                  embeddingRows: tables?.rowCount ?? 0, embeddingDim: dim)

        // Replicas start identical: rank 0 initializes, everyone receives its values.
        if rank == 0 {
            model.initialize(parameters: parameters.pointer, embeddingTable: embeddingTable.pointer, seed: config.seed)
        }
        try communicator.broadcast(parameters.buffer, root: 0)
        if tables != nil { try communicator.broadcast(embeddingTable.buffer, root: 0) }

        if rank == 0 {
            logger.info("training \(config.model.kind.rawValue) (\(layout.count) dense parameters\(tables.map { ", \($0.rowCount) x \($0.dim) embedding rows" } ?? "")) on \(worldSize) rank(s): \(data.totalTrainRows) training rows, \(data.eval.count) evaluation rows, global batch \(config.batchSize * worldSize), \(totalSteps) steps (\(stepsPerEpoch) per epoch)")
        }

        let train = data.train
        let logEvery = config.logEvery > 0 ? config.logEvery : max(1, totalSteps / 20)
        var metricsLog: FileHandle?
        if rank == 0, let path = config.metricsPath { metricsLog = try openMetricsLog(path) }
        defer { try? metricsLog?.close() }

        var samplesSeen = 0
        var lossSinceEval = 0.0, samplesSinceEval = 0
        var lastRecord: EvaluationRecord?
        let runStart = Date()
        var trainSeconds = 0.0
        var intervalStart = Date(), intervalSamples = 0
        var timing = StepTiming()

        try train.labels.withUnsafeBufferPointer { labels in
            try train.dense.withUnsafeBufferPointer { dense in
                try train.categorical.withUnsafeBufferPointer { categorical in
                    for step in 0..<totalSteps {
                        let stepStart = DispatchTime.now().uptimeNanoseconds
                        let epochStep = step % stepsPerEpoch
                        let local = data.shard.localRange(step: epochStep)
                        let globalCount = data.shard.globalBatchCount(step: epochStep)
                        let batch = BatchView(count: local.count,
                                              labels: labels.baseAddress! + local.lowerBound,
                                              dense: dense.baseAddress! + local.lowerBound * CriteoFormat.denseCount,
                                              denseWidth: CriteoFormat.denseCount,
                                              categorical: categorical.baseAddress! + local.lowerBound * CriteoFormat.categoricalCount,
                                              categoricalWidth: CriteoFormat.categoricalCount)

                        // Forward, loss, backward on this rank's rows.
                        gradients.zero()
                        sparse.count = 0
                        var t0 = DispatchTime.now().uptimeNanoseconds
                        if batch.count > 0 {
                            let logits = model.forward(batch, parameters: parameters.pointer, embeddingTable: embeddingTable.pointer)
                            let lossSum = config.loss.forwardBackward(logits: logits, labels: batch.labels, count: batch.count,
                                                                      scale: 1 / Float(globalCount), dLogits: dLogits.pointer)
                            gradients.pointer[layout.count] = Float(lossSum)
                            timing.forward += DispatchTime.now().uptimeNanoseconds - t0
                            t0 = DispatchTime.now().uptimeNanoseconds
                            model.backward(batch, dLogits: dLogits.pointer, parameters: parameters.pointer,
                                           gradients: gradients.pointer, sparse: sparse)
                            timing.backward += DispatchTime.now().uptimeNanoseconds - t0
                        }
                        if config.debug && step == 0 && worldSize == 1 {
                            try checkGradients(model: model, batch: batch, parameters: parameters,
                                               embeddingTable: embeddingTable, gradients: gradients, sparse: sparse,
                                               globalCount: globalCount)
                        }

                        // Make the gradients global.
                        t0 = DispatchTime.now().uptimeNanoseconds
                        try sync.allreduce(gradients.buffer)
                        if tables != nil { try sync.exchange(sparse) }
                        timing.communication += DispatchTime.now().uptimeNanoseconds - t0
                        let stepLoss = Double(gradients.pointer[layout.count]) / Double(globalCount)
                        if config.debug {
                            try checkFinite(step: step, loss: stepLoss, gradients: gradients, layout: layout, sync: sync)
                        }

                        // The same update on every rank.
                        t0 = DispatchTime.now().uptimeNanoseconds
                        optimizer.update(parameters: parameters.buffer,
                                         gradients: UnsafeBufferPointer(start: gradients.pointer, count: layout.count))
                        if tables != nil {
                            optimizer.updateRows(embeddings: embeddingTable.buffer,
                                                 rows: UnsafeBufferPointer(start: sync.rows, count: sync.rowCount),
                                                 gradients: UnsafeBufferPointer(start: sync.values.pointer, count: sync.rowCount * dim))
                        }
                        let stepEnd = DispatchTime.now().uptimeNanoseconds
                        timing.optimizer += stepEnd - t0
                        timing.total += stepEnd - stepStart
                        timing.steps += 1

                        samplesSeen += globalCount
                        intervalSamples += globalCount
                        lossSinceEval += stepLoss * Double(globalCount)
                        samplesSinceEval += globalCount
                        guard stepLoss.isFinite else {
                            throw TrainingError.nonFinite(step: step, what: "the training loss (\(stepLoss))")
                        }

                        if config.debug {
                            if rank == 0 {
                                logger.info("step \(step): loss \(fmt(stepLoss, 5)), forward \(ms(timing.lastForward)) ms, backward \(ms(timing.lastBackward)) ms, communication \(ms(timing.lastCommunication)) ms, optimizer \(ms(timing.lastOptimizer)) ms")
                            }
                            timing.markStep()
                            if worldSize > 1 && (step + 1) % config.debugCheckEvery == 0 {
                                try checkReplicas(step: step, parameters: parameters, embeddingTable: embeddingTable)
                            }
                        }

                        let isLast = step == totalSteps - 1
                        if rank == 0 && ((step + 1) % logEvery == 0 || isLast) {
                            let seconds = Date().timeIntervalSince(intervalStart)
                            logger.info("step \(step + 1)/\(totalSteps)  epoch \(step / stepsPerEpoch + 1)  loss \(fmt(lossSinceEval / Double(max(samplesSinceEval, 1)), 4))  \(Int(Double(intervalSamples) / max(seconds, 1e-9))) samples/s")
                            trainSeconds += seconds
                            intervalStart = Date()
                            intervalSamples = 0
                        }
                        if (config.evalEvery > 0 && (step + 1) % config.evalEvery == 0) || isLast {
                            if rank == 0 {
                                trainSeconds += Date().timeIntervalSince(intervalStart)
                                let record = evaluate(model: model, data: data, parameters: parameters, embeddingTable: embeddingTable,
                                                      step: step + 1, epoch: step / stepsPerEpoch + 1, samples: samplesSeen,
                                                      trainLoss: lossSinceEval / Double(max(samplesSinceEval, 1)),
                                                      samplesPerSecond: Double(samplesSeen) / max(trainSeconds, 1e-9),
                                                      elapsed: Date().timeIntervalSince(runStart))
                                try appendMetrics(record, to: metricsLog)
                                lastRecord = record
                                intervalStart = Date()
                                intervalSamples = 0
                            }
                            lossSinceEval = 0
                            samplesSinceEval = 0
                        }
                    }
                }
            }
        }

        // Rank 0 writes the checkpoint; the others wait for its verdict in a matched collective.
        var checkpointPath: String?
        var checkpointError: (any Error)?
        if rank == 0, let dir = config.checkpointDir {
            do {
                checkpointPath = try Checkpoint.write(
                    directory: dir, step: totalSteps, worldSize: worldSize, config: config, layout: layout,
                    parameters: parameters, embeddingTable: tables == nil ? nil : embeddingTable,
                    embeddingTables: tables, optimizer: optimizer, evaluation: lastRecord)
                logger.info("checkpoint written to \(checkpointPath!)")
            } catch {
                checkpointError = error
            }
        }
        let verdict = try communicator.allreduceMax([checkpointError == nil ? 0 : 1])
        if let checkpointError { throw checkpointError }
        if verdict[0] != 0 { throw TrainingError.peerFailed(ranks: [0], stage: "checkpoint writing") }
        if rank == 0 && timing.steps > 0 { logger.info("\(timing.summary())") }

        let total = Date().timeIntervalSince(runStart)
        return TrainingResult(steps: totalSteps, samples: samplesSeen, finalEvaluation: lastRecord,
                              checkpointPath: checkpointPath,
                              samplesPerSecond: Double(samplesSeen) / max(rank == 0 ? trainSeconds : total, 1e-9))
    }

    // MARK: - Evaluation (rank 0)

    func evaluate(model: any RecModel, data: LoadedData, parameters: FloatBuffer, embeddingTable: FloatBuffer,
                  step: Int, epoch: Int, samples: Int, trainLoss: Double, samplesPerSecond: Double,
                  elapsed: Double) -> EvaluationRecord {
        let predictions = predict(model: model, rows: data.eval, parameters: parameters, embeddingTable: embeddingTable)
        var evaluation = BinaryEvaluation()
        predictions.withUnsafeBufferPointer { p in
            data.eval.labels.withUnsafeBufferPointer { l in evaluation.append(probabilities: p, labels: l) }
        }
        let summary = evaluation.summary()
        let oracleAUC = data.oracle.flatMap { Metrics.auc(scores: $0, labels: data.eval.labels) }
        let record = EvaluationRecord(step: step, epoch: epoch, samples: samples, train_loss: trainLoss,
                                      auc: summary.auc, logloss: summary.logloss, accuracy: summary.accuracy,
                                      mean_prediction: summary.meanPrediction, mean_label: summary.meanLabel,
                                      eval_rows: summary.count, oracle_auc: oracleAUC,
                                      samples_per_s: samplesPerSecond, elapsed_s: elapsed,
                                      world_size: worldSize, model: config.model.kind.rawValue)
        var line = "eval  step \(step)  auc \(summary.auc.map { fmt($0, 4) } ?? "n/a")  logloss \(fmt(summary.logloss, 4))  accuracy \(fmt(summary.accuracy, 4))  (\(summary.count) rows"
        if let oracleAUC { line += ", oracle auc \(fmt(oracleAUC, 4))" }
        logger.info("\(line))")
        return record
    }

    /// Probabilities for `rows`, in batches of the model's capacity.
    public static func predictions(model: any RecModel, rows: CriteoRows, parameters: UnsafePointer<Float>,
                                   embeddingTable: UnsafePointer<Float>) -> [Float] {
        var out = [Float](repeating: 0, count: rows.count)
        rows.labels.withUnsafeBufferPointer { labels in
            rows.dense.withUnsafeBufferPointer { dense in
                rows.categorical.withUnsafeBufferPointer { categorical in
                    var start = 0
                    while start < rows.count {
                        let n = min(model.maxBatch, rows.count - start)
                        let batch = BatchView(count: n, labels: labels.baseAddress! + start,
                                              dense: dense.baseAddress! + start * CriteoFormat.denseCount,
                                              denseWidth: CriteoFormat.denseCount,
                                              categorical: categorical.baseAddress! + start * CriteoFormat.categoricalCount,
                                              categoricalWidth: CriteoFormat.categoricalCount)
                        let logits = model.forward(batch, parameters: parameters, embeddingTable: embeddingTable)
                        for i in 0..<n { out[start + i] = Loss.sigmoid(logits[i]) }
                        start += n
                    }
                }
            }
        }
        return out
    }

    func predict(model: any RecModel, rows: CriteoRows, parameters: FloatBuffer, embeddingTable: FloatBuffer) -> [Float] {
        Trainer.predictions(model: model, rows: rows, parameters: parameters.pointer, embeddingTable: embeddingTable.pointer)
    }

    // MARK: - Metrics log

    func openMetricsLog(_ path: String) throws -> FileHandle {
        let url = URL(fileURLWithPath: path)
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: path, contents: nil) else {
            throw TrainingError.checkpoint(path: path, message: "cannot create the metrics file; check that the directory is writable (--metrics-out)")
        }
        return try FileHandle(forWritingTo: url)
    }

    func appendMetrics(_ record: EvaluationRecord, to handle: FileHandle?) throws {
        guard let handle else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        var data = try encoder.encode(record)
        data.append(0x0A)
        try handle.write(contentsOf: data)
    }
}

// MARK: - Formatting and timing

func fmt(_ x: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", x) }
func ms(_ nanoseconds: UInt64) -> String { String(format: "%.3f", Double(nanoseconds) / 1e6) }

/// Cumulative step-time breakdown.
struct StepTiming {
    var forward: UInt64 = 0, backward: UInt64 = 0, communication: UInt64 = 0, optimizer: UInt64 = 0, total: UInt64 = 0
    var steps = 0
    private var mark = (forward: UInt64(0), backward: UInt64(0), communication: UInt64(0), optimizer: UInt64(0))
    var lastForward: UInt64 { forward - mark.forward }
    var lastBackward: UInt64 { backward - mark.backward }
    var lastCommunication: UInt64 { communication - mark.communication }
    var lastOptimizer: UInt64 { optimizer - mark.optimizer }
    mutating func markStep() { mark = (forward, backward, communication, optimizer) }

    func summary() -> String {
        let n = Double(max(steps, 1)) * 1e6
        let other = total - min(total, forward + backward + communication + optimizer)
        return "step time (mean over \(steps) steps): " +
            String(format: "total %.3f ms = forward %.3f + backward %.3f + communication %.3f + optimizer %.3f + other %.3f",
                   Double(total) / n, Double(forward) / n, Double(backward) / n, Double(communication) / n,
                   Double(optimizer) / n, Double(other) / n)
    }
}
