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

/// Training rows held by one rank, at stable addresses for the life of the run.
final class RowStore {
    let count: Int
    let labels: FloatBuffer
    let dense: FloatBuffer
    let categorical: UnsafeMutablePointer<UInt32>

    init(_ rows: CriteoRows) {
        count = rows.count
        labels = FloatBuffer(count: rows.count)
        labels.assign(rows.labels)
        dense = FloatBuffer(count: rows.dense.count)
        dense.assign(rows.dense)
        categorical = .allocate(capacity: max(rows.categorical.count, 1))
        rows.categorical.withUnsafeBufferPointer { if let base = $0.baseAddress { categorical.initialize(from: base, count: $0.count) } }
    }

    deinit { categorical.deallocate() }

    /// Local rows `range` as a batch.
    func batch(_ range: Range<Int>) -> BatchView {
        BatchView(count: range.count, labels: labels.pointer + range.lowerBound,
                  dense: dense.pointer + range.lowerBound * CriteoFormat.denseCount, denseWidth: CriteoFormat.denseCount,
                  categorical: categorical + range.lowerBound * CriteoFormat.categoricalCount,
                  categoricalWidth: CriteoFormat.categoricalCount)
    }
}

/// The data-parallel training loop.
///
/// Every rank builds the same model, loads only its block-cyclic shard, and runs the same
/// number of steps. Each step: forward and backward on the local rows, an allreduce of the dense
/// gradients (with the loss and the stop/checkpoint flags riding along in extra slots), a gather
/// of the embedding rows the step touched, and the same optimizer update on every rank. Rank 0
/// evaluates and writes checkpoints; the other ranks meanwhile wait in a matched collective.
public final class Trainer {
    public let config: TrainingConfig
    let communicator: any Communicator
    let logger: Logger
    var rank: Int { communicator.rank }
    var worldSize: Int { communicator.size }

    /// Extra slots after the dense gradients, summed by the same allreduce.
    enum Slot {
        static let loss = 0, stop = 1, checkpoint = 2, count = 3
    }

    /// Rank 0 draws a live progress bar (a terminal) instead of periodic progress lines.
    public var liveProgress = false

    public init(config: TrainingConfig, communicator: any Communicator, logger: Logger) {
        self.config = config
        self.communicator = communicator
        self.logger = logger
    }

    // MARK: - Data

    struct LoadedData {
        /// The rank's rows of the full training split, and its shard.
        var train: RowStore
        var shard: BlockCyclicShard
        /// When resuming mid-epoch at a position the current global batch does not divide: the
        /// shard of the rest of that epoch, and its rows.
        var resumeShard: BlockCyclicShard?
        var resumeRows: RowStore?
        /// A prepared dataset's batches (then `train` holds no rows and the shards count positions).
        var prepared: PreparedBatchLoader?
        var eval: FeatureRowsBuffer   // rank 0 only; empty elsewhere
        var evalGroupSize: Int?       // ranking groups of the evaluation rows (leave-last-out)
        var oracle: [Double]?         // true probabilities of the eval rows, when a side file exists
        var totalTrainRows: Int
    }

    /// Loads this rank's shard (and, on rank 0, the evaluation rows). A failure on any rank stops
    /// all ranks together: the flags are agreed in one allreduce before any training collective.
    func loadData(resumeOffset: Int) throws -> LoadedData {
        var failure: (any Error)?
        var loaded: LoadedData?
        do {
            loaded = try loadLocal(resumeOffset: resumeOffset)
        } catch {
            failure = error
        }
        try agree(failure, stage: "data loading")
        return loaded!
    }

    /// Every rank learns whether any rank failed; the failing ranks rethrow their own error, the
    /// others a `peerFailed` naming them. One allreduce, so nobody is left in a collective.
    func agree(_ failure: (any Error)?, stage: String) throws {
        var flags = [Double](repeating: 0, count: worldSize)
        flags[rank] = failure == nil ? 0 : 1
        flags = try communicator.allreduceMax(flags)
        if let failure { throw failure }
        let failed = flags.indices.filter { flags[$0] != 0 }
        if !failed.isEmpty { throw TrainingError.peerFailed(ranks: failed, stage: stage) }
    }

    private func loadLocal(resumeOffset: Int) throws -> LoadedData {
        if config.usesPreparedData { return try loadPrepared(resumeOffset: resumeOffset) }
        let file = try MappedFile(path: config.dataPath)
        let rowCount = CriteoTSV.countRows(file)
        let split = config.evalPath == nil
            ? DataSplit.trainEval(rowCount: rowCount, evalFraction: config.evalFraction)
            : (train: 0..<rowCount, eval: 0..<0)
        guard !split.train.isEmpty else {
            throw TrainingError.notEnoughData("'\(config.dataPath)' has \(rowCount) rows: nothing left to train on. "
                + "Use a larger file or a smaller --eval-fraction.")
        }
        let start = Date()
        let shard = BlockCyclicShard(rank: rank, worldSize: worldSize, blockSize: config.batchSize, rows: split.train)
        let train = try CriteoTSV.parse(file, selecting: shard.contains)
        precondition(train.count == shard.localCount)
        var resumeShard: BlockCyclicShard?
        var resumeRows: RowStore?
        if resumeOffset > 0 && resumeOffset % shard.globalBatchSize != 0 && resumeOffset < split.train.count {
            let rest = (split.train.lowerBound + resumeOffset)..<split.train.upperBound
            let s = BlockCyclicShard(rank: rank, worldSize: worldSize, blockSize: config.batchSize, rows: rest)
            resumeShard = s
            resumeRows = RowStore(try CriteoTSV.parse(file, selecting: s.contains))
        }
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
        logger.debug("loaded \(train.count) training rows (of \(split.train.count)) and \(eval.count) evaluation rows in \(fmt(Date().timeIntervalSince(start), 2)) s")
        return LoadedData(train: RowStore(train), shard: shard, resumeShard: resumeShard, resumeRows: resumeRows,
                          prepared: nil, eval: FeatureRowsBuffer(eval), evalGroupSize: nil, oracle: oracle,
                          totalTrainRows: split.train.count)
    }

    // MARK: - Resume

    /// Decides where the run starts. Rank 0 finds, validates and loads the checkpoint into
    /// `buffers`; every rank learns the outcome (the checkpoint's state, or nil to start fresh).
    func resumeState(into buffers: Checkpoint.Buffers) throws -> Checkpoint.State? {
        guard config.resume != nil || config.autoResume else { return nil }
        var failure: (any Error)?
        var payload = Data()
        if rank == 0 {
            do {
                if let state = try findAndLoad(into: buffers) { payload = try Checkpoint.jsonEncoder().encode(state) }
            } catch {
                failure = error
            }
        }
        try agree(failure, stage: "resuming from a checkpoint")
        // Share the state: its length, then its JSON.
        var length = [Double(payload.count)]
        try length.withUnsafeMutableBytes { try communicator.broadcast($0, root: 0) }
        guard length[0] > 0 else { return nil }
        var bytes = [UInt8](payload)
        if rank != 0 { bytes = [UInt8](repeating: 0, count: Int(length[0])) }
        try bytes.withUnsafeMutableBytes { try communicator.broadcast($0, root: 0) }
        // Non-finite metrics (a NaN logloss without evaluation rows, an infinite calibration
        // when every evaluation label is 0) travel as strings, as in trainer.json.
        return try Checkpoint.jsonDecoder().decode(Checkpoint.State.self, from: Data(bytes))
    }

    private func findAndLoad(into buffers: Checkpoint.Buffers) throws -> Checkpoint.State? {
        var found: (dir: String, state: Checkpoint.State)?
        if let resume = config.resume {
            let path: String
            if resume == "latest" {
                guard let root = config.checkpointDir else {
                    throw TrainingError.checkpoint(path: "latest", message: "--resume latest needs --checkpoint-dir")
                }
                path = root
            } else {
                path = resume
            }
            let dir = try Checkpoint.resolve(path)
            found = (dir, try Checkpoint.validate(dir))
        } else if let root = config.checkpointDir {
            found = Checkpoint.newestValid(root: root) { logger.warning("\($0)") }
            if found == nil { logger.info("no valid checkpoint in \(root): starting from scratch") }
        }
        guard let (dir, state) = found else { return nil }
        let saved = state.config
        guard saved.model == config.model else {
            throw TrainingError.checkpoint(path: dir, message: "it was written for a different model (\(describe(saved.model))) than this run asks for (\(describe(config.model))); pass the same model flags or use a new --checkpoint-dir")
        }
        guard saved.optimizer.kind == config.optimizer.kind else {
            throw TrainingError.checkpoint(path: dir, message: "it holds \(saved.optimizer.kind.rawValue) optimizer state, this run asks for --optimizer \(config.optimizer.kind.rawValue)")
        }
        try Checkpoint.load(dir, state: state, into: buffers)
        let savedGlobal = saved.batchSize * state.worldSize, global = config.batchSize * worldSize
        logger.info("resuming from \(dir): step \(state.step), epoch \(state.epoch + 1), \(state.epochRowOffset) rows into it")
        if saved.optimizer.accumulate != config.optimizer.accumulate || saved.optimizer.schedule != config.optimizer.schedule
            || saved.optimizer.scaleByWorldSize != config.optimizer.scaleByWorldSize {
            logger.warning("the checkpoint was trained with --accumulate \(saved.optimizer.accumulate) and schedule \(saved.optimizer.schedule.summary)\(saved.optimizer.scaleByWorldSize ? " scaled by world size" : ""), this run uses --accumulate \(config.optimizer.accumulate) and \(config.optimizer.schedule.summary)\(config.optimizer.scaleByWorldSize ? " scaled by world size" : ""): training continues, but will not match an uninterrupted run")
        }
        if savedGlobal != global {
            logger.warning("the checkpoint was trained with a global batch of \(savedGlobal) (\(state.worldSize) x \(saved.batchSize)), this run uses \(global) (\(worldSize) x \(config.batchSize)): training continues from the same data position, but will not match an uninterrupted run")
        }
        return state
    }

    private func describe(_ m: ModelConfig) -> String {
        switch m.kind {
        case .mlp: return "mlp \(m.hidden)"
        case .dlrm: return "dlrm buckets \(m.hashBuckets) dim \(m.embeddingDim) bottom \(m.bottom) top \(m.top)"
        case .logreg: return "logreg buckets \(m.hashBuckets)"
        case .wideDeep: return "wide-deep buckets \(m.hashBuckets) dim \(m.embeddingDim) hidden \(m.hidden)"
        case .ncf: return "ncf factors \(m.factors) dim \(m.embeddingDim) hidden \(m.hidden)"
        case .twoTower: return "two-tower dim \(m.embeddingDim) hidden \(m.hidden) factors \(m.factors)"
        }
    }

    // MARK: - Training

    /// Runs the whole training: resume or initialize, load, step, evaluate, checkpoint.
    public func run() throws -> TrainingResult {
        Denormals.flushToZero()   // this thread trains: no subnormal slow path in the optimizer state
        let model = makeModel(config.model, maxBatch: max(config.batchSize, config.evalBatchSize))
        let layout = model.layout
        let tables = model.embeddings
        let dim = tables?.dim ?? 1
        let parameters = FloatBuffer(count: layout.count)
        let gradients = FloatBuffer(count: layout.count + Slot.count)
        let embeddingTable = FloatBuffer(count: (tables?.rowCount ?? 0) * dim)
        let dLogits = FloatBuffer(count: config.batchSize)
        let sparse = SparseGradient(capacity: config.batchSize * config.model.categoricalFields, dim: dim)
        // Gradient accumulation: the embedding pairs of all micro-batches of a step.
        let accumulate = config.optimizer.accumulate
        let accumulated = accumulate > 1 && tables != nil
            ? SparseGradient(capacity: accumulate * config.batchSize * config.model.categoricalFields, dim: dim) : nil
        // Dense gradients (and the extra slots) in ~1 MB buckets, each allreduced as soon as the
        // backward pass has finished it; embedding rows exchanged from the backward events too.
        let sync = GradientSync(communicator: communicator, denseCount: layout.count + Slot.count,
                                boundaries: layout.entries.map(\.offset), bucketBytes: config.bucketBytes ?? 1 << 20,
                                embeddingRows: tables?.rowCount ?? 0, dim: dim,
                                maxLocalPairs: tables == nil ? 0 : accumulate * config.batchSize * config.model.categoricalFields)
        let optimizer = Optimizer(config: config.optimizer, parameterCount: layout.count,
                                  embeddingRows: tables?.rowCount ?? 0, embeddingDim: dim)
        let buffers = Checkpoint.Buffers(layout: layout, parameters: parameters, embeddingTable: embeddingTable,
                                         tables: tables, optimizer: optimizer)
        StopSignal.install()

        let resumed = try resumeState(into: buffers)
        let data = try loadData(resumeOffset: resumed?.epochRowOffset ?? 0)
        defer { data.prepared?.stop() }
        if config.selectionMetric.isRanking {
            // Rank 0 holds the evaluation rows; everyone learns whether they come in groups.
            var failure: (any Error)?
            if rank == 0 && data.evalGroupSize == nil {
                failure = TrainingError.notEnoughData("--select-metric \(config.selectionMetric.rawValue) needs a leave-last-out evaluation split (a dataset prepared from interactions, whose evaluation rows come in per-user groups); this run's evaluation rows have none. Use auc, logloss, accuracy, rmse or mae.")
            }
            try agree(failure, stage: "checking --select-metric")
        }

        // Replicas start identical: rank 0 initializes (or has loaded the checkpoint), everyone
        // receives its values.
        if rank == 0 && resumed == nil {
            model.initialize(parameters: parameters.pointer, embeddingTable: embeddingTable.pointer, seed: config.seed)
        }
        try communicator.broadcast(parameters.buffer, root: 0)
        if tables != nil { try communicator.broadcast(embeddingTable.buffer, root: 0) }
        if let resumed {
            var state = optimizer.stateBuffers()
            for i in state.indices {
                try state[i].values.withUnsafeMutableBufferPointer { try communicator.broadcast($0, root: 0) }
            }
            try optimizer.loadState(step: resumed.optimizerStep, buffers: state)
        }

        // Where the run starts and ends. A step is one optimizer update: `accumulate` global
        // batches (micro-batches), fewer for the last step of an epoch.
        let shard = data.shard
        func ceilDiv(_ a: Int, _ b: Int) -> Int { (a + b - 1) / b }
        let stepsPerEpoch = ceilDiv(shard.stepsPerEpoch, accumulate)
        var step = resumed?.step ?? 0
        var epoch = resumed?.epoch ?? 0
        var offset = resumed?.epochRowOffset ?? 0
        var samplesSeen = resumed?.samplesSeen ?? 0
        var bestMetric = resumed?.bestMetric
        var bestCheckpoint = resumed?.bestCheckpoint
        // The learning rate before the schedule: the linear scaling rule multiplies it by the ranks.
        let baseRate = config.optimizer.learningRate * (config.optimizer.scaleByWorldSize ? Float(worldSize) : 1)
        let rankingK = config.rankingK ?? 10
        let showRate = config.optimizer.schedule != LearningRateSchedule()   // the rate changes: show it
        // Early stopping (decided on rank 0, agreed by all): the best value so far and the
        // evaluations since it, carried through checkpoints.
        var earlyStopBest = resumed?.earlyStopBest
        var evaluationsSinceBest = resumed?.evaluationsSinceBest ?? 0
        var stoppedEarly = false
        var lastGradientNorm = 0.0, clippedSinceEval = 0
        let remainingInEpoch = ceilDiv(data.resumeShard?.stepsPerEpoch
            ?? (shard.stepsPerEpoch - offset / shard.globalBatchSize), accumulate)
        let lastStep = config.steps ?? (step + remainingInEpoch + max(config.epochs - epoch - 1, 0) * stepsPerEpoch)
        if rank == 0 {
            logger.info("training \(config.model.kind.rawValue) (\(layout.count) dense parameters\(tables.map { ", \($0.rowCount) x \($0.dim) embedding rows" } ?? "")) on \(worldSize) rank(s): \(data.totalTrainRows) training rows, \(data.eval.count) evaluation rows, global batch \(shard.globalBatchSize)\(accumulate > 1 ? " x \(accumulate) accumulated = \(shard.globalBatchSize * accumulate) per step" : ""), \(lastStep - step) steps (\(stepsPerEpoch) per epoch); OpenBLAS \(GEMM.coreName) kernels")
            var optimization = "optimizer \(config.optimizer.kind.rawValue), lr \(baseRate)"
            if config.optimizer.scaleByWorldSize { optimization += " (\(config.optimizer.learningRate) x \(worldSize) ranks)" }
            optimization += ", schedule \(config.optimizer.schedule.summary)"
            if config.optimizer.weightDecay > 0 {
                optimization += ", weight decay \(config.optimizer.weightDecay) (\(config.optimizer.decoupledWeightDecay ? "decoupled" : "L2"))"
            }
            if let c = config.optimizer.clipNorm { optimization += ", gradients clipped to global norm \(c)" }
            if let p = config.earlyStopPatience {
                optimization += ", early stopping after \(p) evaluation(s) without a better \(config.selectionMetric.label(k: rankingK))"
            }
            logger.info("\(optimization)")
        }

        let logEvery = config.logEvery > 0 ? config.logEvery : max(1, (lastStep - step) / 20)
        let firstStepOfRun = step
        let totalEpochs = max(1, (lastStep + stepsPerEpoch - 1) / max(stepsPerEpoch, 1))
        var barSamples = 0, barRate: Double?, barWindowStart = Date(), lastBarDraw = Date.distantPast
        defer { if liveProgress && rank == 0 { Console.shared.endStatus() } }
        var metricsLog: FileHandle?
        if let path = config.metricsPath {
            // Only rank 0 writes the log, but every rank must learn that it could not, or the
            // others would wait for it in the first step's collectives.
            var failure: (any Error)?
            if rank == 0 {
                do { metricsLog = try openMetricsLog(path, append: resumed != nil) } catch { failure = error }
            }
            try agree(failure, stage: "opening the metrics log")
        }
        defer { try? metricsLog?.close() }
        var tensorBoard: TensorBoardWriter?
        if let directory = config.tensorBoardDir {
            var failure: (any Error)?
            if rank == 0 { do { tensorBoard = try TensorBoardWriter(directory: directory) } catch { failure = error } }
            try agree(failure, stage: "creating the TensorBoard event file")
        }

        var lossSinceEval = 0.0, samplesSinceEval = 0
        var lastRecord: EvaluationRecord?
        var lastCheckpoint: String?
        var checkpointedStep = -1
        var skipped = 0
        let runStart = Date()
        var lastCheckpointTime = Date()
        var trainSeconds = 0.0
        var intervalStart = Date(), intervalSamples = 0
        var timing = StepTiming()
        var timingAtEval = StepTiming()
        var stopSignal: Int32 = 0
        let extra = gradients.pointer + layout.count

        /// Rank 0 writes a checkpoint of the current state; all ranks agree on the outcome.
        func checkpoint() throws {
            guard let root = config.checkpointDir, checkpointedStep != step else { return }
            var failure: (any Error)?
            if rank == 0 {
                do {
                    let name = Checkpoint.name(step: step)
                    var record: EvaluationRecord?
                    if let r = lastRecord, r.step == step { record = r }
                    if let r = record, let v = config.selectionMetric.value(of: r), v.isFinite,
                       bestMetric.map({ config.selectionMetric.isBetter(v, than: $0) }) ?? true {
                        bestMetric = v
                        bestCheckpoint = name
                    }
                    let state = Checkpoint.State(
                        formatVersion: Checkpoint.formatVersion, step: step, epoch: epoch, epochRowOffset: offset,
                        samplesSeen: samplesSeen, worldSize: worldSize, optimizerStep: optimizer.step,
                        evaluation: record, bestMetric: bestMetric, bestCheckpoint: bestCheckpoint, config: config,
                        earlyStopBest: earlyStopBest, evaluationsSinceBest: evaluationsSinceBest)
                    let path = try Checkpoint.write(root: root, state: state, buffers: buffers)
                    if bestCheckpoint == name { try Checkpoint.writePointer(root: root, file: "best", to: name) }
                    let removed = Checkpoint.prune(root: root, keep: config.keep, protected: bestCheckpoint)
                    lastCheckpoint = path
                    logger.info("checkpoint written to \(path)\(removed.isEmpty ? "" : " (removed \(removed.joined(separator: ", ")))")")
                } catch {
                    failure = error
                }
            }
            checkpointedStep = step
            lastCheckpointTime = Date()
            let verdict = try communicator.allreduceMax([failure == nil ? 0 : 1])
            if verdict[0] != 0 {
                if config.continueOnCheckpointFailure {
                    if let failure { logger.warning("\(failure); training continues (--continue-on-checkpoint-failure)") }
                    return
                }
                if let failure { throw failure }
                throw TrainingError.peerFailed(ranks: [0], stage: "checkpoint writing")
            }
        }

        func evaluateNow() throws {
            var metricsFailure: (any Error)?
            if rank == 0 {
                trainSeconds += Date().timeIntervalSince(intervalStart)
                let record = evaluate(model: model, data: data, parameters: parameters, embeddingTable: embeddingTable,
                                      step: step, epoch: epoch + (offset == 0 ? 0 : 1), samples: samplesSeen,
                                      trainLoss: samplesSinceEval > 0 ? lossSinceEval / Double(samplesSinceEval) : nil,
                                      samplesPerSecond: Double(intervalSamplesTotal) / max(trainSeconds, 1e-9),
                                      elapsed: Date().timeIntervalSince(runStart))
                var withTiming = record
                withTiming.lr = Double(optimizer.learningRate)
                if config.optimizer.clipNorm != nil {
                    withTiming.grad_norm = lastGradientNorm
                    withTiming.clipped_steps = clippedSinceEval
                }
                timing.describe(into: &withTiming, since: timingAtEval)
                timingAtEval = timing
                do { try appendMetrics(withTiming, to: metricsLog) } catch {
                    metricsFailure = TrainingError.metricsLog(path: config.metricsPath ?? "", message: "cannot append: \(error)")
                }
                do { try tensorBoard?.write(withTiming) } catch { metricsFailure = error }
                lastRecord = withTiming
                intervalStart = Date()
                intervalSamples = 0
            }
            if config.metricsPath != nil || config.tensorBoardDir != nil {
                try agree(metricsFailure, stage: "writing the metrics log or TensorBoard events")
            }
            lossSinceEval = 0
            samplesSinceEval = 0
            clippedSinceEval = 0
        }

        /// After an evaluation: rank 0 decides whether the selection metric stopped improving
        /// (by more than the min-delta), and every rank learns the decision in one collective, so
        /// all stop at the same step. Returns whether this evaluation beats the best checkpoint's
        /// metric (no min-delta there), so that the caller checkpoints it and `best` points to it.
        func judgeEarlyStop() throws -> Bool {
            guard let patience = config.earlyStopPatience else { return false }
            var stop = false, improved = false
            if rank == 0 {
                let metric = config.selectionMetric
                if let record = lastRecord, record.step == step, let v = metric.value(of: record), v.isFinite {
                    improved = bestMetric.map { metric.isBetter(v, than: $0) } ?? true
                    if earlyStopBest.map({ metric.isBetter(v, than: $0, minDelta: config.earlyStopMinDelta ?? 0) }) ?? true {
                        earlyStopBest = v
                        evaluationsSinceBest = 0
                    } else {
                        evaluationsSinceBest += 1
                    }
                } else {
                    evaluationsSinceBest += 1
                    logger.warning("step \(step): no finite \(metric.label(k: rankingK)) in this evaluation; it counts as one without improvement")
                }
                stop = evaluationsSinceBest >= patience
                if stop {
                    logger.info("early stop at step \(step): \(metric.label(k: rankingK)) has not improved for \(evaluationsSinceBest) evaluation(s) (best \(earlyStopBest.map { fmt($0, 4) } ?? "n/a"))")
                }
            }
            let verdict = try communicator.allreduceMax([stop ? 1 : 0, improved ? 1 : 0])
            stoppedEarly = verdict[0] != 0
            return verdict[1] != 0
        }
        var intervalSamplesTotal = 0

        epochs: while step < lastStep {
            // This epoch's rows: the full shard, or the rest of a resumed epoch.
            let (epochShard, rows, firstStep): (BlockCyclicShard, RowStore, Int) =
                offset == 0 ? (shard, data.train, 0)
                : offset % shard.globalBatchSize == 0 ? (shard, data.train, offset / shard.globalBatchSize)
                : (data.resumeShard!, data.resumeRows!, 0)
            var epochStep = firstStep
            while epochStep < epochShard.stepsPerEpoch {
                // One optimizer step: `micro` micro-batches (global batches) whose gradients add up
                // (gradient accumulation; fewer at the end of an epoch), the loss gradient scaled by
                // 1 / (all their rows), so the step is that of one batch of all their rows.
                let micro = min(accumulate, epochShard.stepsPerEpoch - epochStep)
                var globalCount = 0
                for j in 0..<micro { globalCount += epochShard.globalBatchCount(step: epochStep + j) }
                let stepStart = DispatchTime.now().uptimeNanoseconds
                var microOffset = offset

                // The extra slots are set first: their bucket may start its allreduce during the
                // last backward pass.
                gradients.zero()
                sparse.count = 0
                accumulated?.count = 0
                extra[Slot.stop] = StopSignal.pending != 0 ? 1 : 0
                extra[Slot.checkpoint] = rank == 0 && config.checkpointEverySeconds > 0
                    && Date().timeIntervalSince(lastCheckpointTime) >= config.checkpointEverySeconds ? 1 : 0
                var lastBatch: BatchView?
                for j in 0..<micro {
                    let fetchStart = DispatchTime.now().uptimeNanoseconds
                    let (batch, microCount) = data.prepared?.batch(epoch: epoch, offset: microOffset)
                        ?? (rows.batch(epochShard.localRange(step: epochStep + j)), epochShard.globalBatchCount(step: epochStep + j))
                    precondition(microCount == epochShard.globalBatchCount(step: epochStep + j), "micro-batch row count disagrees with the shard")
                    microOffset += microCount
                    timing.dataWait += DispatchTime.now().uptimeNanoseconds - fetchStart
                    let isFinal = j == micro - 1
                    if isFinal { sync.beginStep(gradients: gradients.pointer) }
                    sparse.count = 0

                    // Forward, loss, backward on this rank's rows; the dense gradients add up in
                    // `gradients`. A rank with no rows in the last, partial batch runs the model on
                    // 0 rows, so it starts the same collectives. Only the last micro-batch's
                    // backward pass starts them.
                    let exposedBefore = sync.timing.exposed
                    var t0 = DispatchTime.now().uptimeNanoseconds
                    // Dropout masks follow (seed, optimizer step, example's place in the step's
                    // global rows: micro-batch j holds the j-th block of worldSize x batchSize).
                    model.trainingContext = TrainingContext(seed: config.seed, step: step,
                                                            firstExample: (j * worldSize + rank) * config.batchSize)
                    let logits = model.forward(batch, parameters: parameters.pointer, embeddingTable: embeddingTable.pointer)
                    extra[Slot.loss] += Float(config.loss.forwardBackward(
                        logits: logits, labels: batch.labels, count: batch.count,
                        scale: 1 / Float(globalCount), dLogits: dLogits.pointer))
                    timing.forward += DispatchTime.now().uptimeNanoseconds - t0
                    t0 = DispatchTime.now().uptimeNanoseconds
                    if let accumulated {
                        // The model overwrites `sparse` per pass: collect its pairs in `accumulated`.
                        try model.backward(batch, dLogits: dLogits.pointer, parameters: parameters.pointer,
                                           gradients: gradients.pointer, sparse: sparse) { event in
                            switch event {
                            case .denseFinal(let offset): if isFinal { try sync.denseFinal(from: offset) }
                            case .sparseFinal:
                                accumulated.append(sparse)
                                if isFinal { try sync.sparseFinal(accumulated) }
                            }
                        }
                    } else {
                        try model.backward(batch, dLogits: dLogits.pointer, parameters: parameters.pointer,
                                           gradients: gradients.pointer, sparse: sparse) { event in
                            switch event {
                            case .denseFinal(let offset): if isFinal { try sync.denseFinal(from: offset) }
                            case .sparseFinal: if isFinal { try sync.sparseFinal(sparse) }
                            }
                        }
                    }
                    let inSync = sync.timing.exposed - exposedBefore   // communication started from backward
                    timing.backward += DispatchTime.now().uptimeNanoseconds - t0 - inSync
                    timing.communication += inSync
                    lastBatch = batch
                }
                if config.debug && step == 0 && worldSize == 1 && micro == 1, let batch = lastBatch {
                    try checkGradients(model: model, batch: batch, parameters: parameters,
                                       embeddingTable: embeddingTable, gradients: gradients, sparse: sparse,
                                       globalCount: globalCount)
                }

                // Make the gradients global: wait for what the backward pass started.
                var t0 = DispatchTime.now().uptimeNanoseconds
                try sync.finish()
                timing.communication += DispatchTime.now().uptimeNanoseconds - t0
                let stepLoss = Double(extra[Slot.loss]) / Double(globalCount)
                let stopRequested = extra[Slot.stop] > 0, checkpointRequested = extra[Slot.checkpoint] > 0

                // The same update on every rank, unless the step is not finite (all ranks see the
                // same allreduced values, so they agree).
                if !isFinite(loss: stepLoss, gradients: gradients, count: layout.count, sync: sync) {
                    if config.skipNonFinite {
                        skipped += 1
                        if rank == 0 { logger.warning("step \(step + 1): non-finite loss or gradient, step skipped on all ranks (--skip-nonfinite)") }
                    } else if config.debug {
                        try checkFinite(step: step + 1, loss: stepLoss, gradients: gradients, layout: layout, sync: sync,
                                        lastCheckpoint: lastCheckpoint)
                    } else {
                        throw TrainingError.nonFinite(step: step + 1, what: "the loss (\(stepLoss)) or the gradients",
                                                      lastCheckpoint: lastCheckpoint)
                    }
                } else {
                    t0 = DispatchTime.now().uptimeNanoseconds
                    // Clipping sees the global (allreduced) gradients, identical on every rank.
                    if let clipNorm = config.optimizer.clipNorm {
                        lastGradientNorm = GradientClipping.clip(
                            UnsafeMutableBufferPointer(start: gradients.pointer, count: layout.count),
                            UnsafeMutableBufferPointer(start: sync.values.pointer, count: sync.rowCount * dim),
                            maxNorm: clipNorm)
                        if lastGradientNorm > Double(clipNorm) { clippedSinceEval += 1 }
                    }
                    optimizer.learningRate = config.optimizer.schedule.rate(base: baseRate, step: step, totalSteps: lastStep)
                    optimizer.update(parameters: parameters.buffer,
                                     gradients: UnsafeBufferPointer(start: gradients.pointer, count: layout.count))
                    if tables != nil {
                        optimizer.updateRows(embeddings: embeddingTable.buffer,
                                             rows: UnsafeBufferPointer(start: sync.rows, count: sync.rowCount),
                                             gradients: UnsafeBufferPointer(start: sync.values.pointer, count: sync.rowCount * dim))
                    }
                    timing.optimizer += DispatchTime.now().uptimeNanoseconds - t0
                    lossSinceEval += stepLoss * Double(globalCount)
                    samplesSinceEval += globalCount
                }
                epochStep += micro
                let stepEnd = DispatchTime.now().uptimeNanoseconds
                timing.total += stepEnd - stepStart
                timing.steps += 1

                step += 1
                offset += globalCount
                if offset >= data.totalTrainRows { epoch += 1; offset = 0 }
                samplesSeen += globalCount
                intervalSamples += globalCount
                intervalSamplesTotal += globalCount

                if config.debug {
                    if rank == 0 {
                        logger.info("step \(step - 1): loss \(fmt(stepLoss, 5)), forward \(ms(timing.lastForward)) ms, backward \(ms(timing.lastBackward)) ms, communication \(ms(timing.lastCommunication)) ms, optimizer \(ms(timing.lastOptimizer)) ms")
                    }
                    timing.markStep()
                    if worldSize > 1 && step % config.debugCheckEvery == 0 {
                        try checkReplicas(step: step, parameters: parameters, embeddingTable: embeddingTable)
                    }
                }

                let isLast = step == lastStep
                if rank == 0 {
                    func report(samplesPerSecond: Double) -> ProgressReport {
                        let done = step - firstStepOfRun, elapsed = Date().timeIntervalSince(runStart)
                        return ProgressReport(step: step, totalSteps: lastStep, epoch: min(epoch + (offset == 0 ? 0 : 1), totalEpochs),
                                              totalEpochs: totalEpochs, samplesPerSecond: samplesPerSecond,
                                              loss: samplesSinceEval > 0 ? lossSinceEval / Double(samplesSinceEval) : nil,
                                              eta: done > 0 ? elapsed / Double(done) * Double(lastStep - step) : nil)
                    }
                    if liveProgress {
                        // The bar: redrawn at most 10 times a second, samples/s over the last window of about a second.
                        barSamples += globalCount
                        let now = Date(), window = now.timeIntervalSince(barWindowStart)
                        if window >= 1 { barRate = Double(barSamples) / window; barSamples = 0; barWindowStart = now }
                        if now.timeIntervalSince(lastBarDraw) >= 0.1 || isLast {
                            lastBarDraw = now
                            let rate = barRate ?? Double(barSamples) / max(window, 1e-9)
                            Console.shared.showStatus(report(samplesPerSecond: rate).bar(width: Console.shared.columns))
                        }
                    }
                    if step % logEvery == 0 || isLast {
                        let seconds = Date().timeIntervalSince(intervalStart)
                        let progress = report(samplesPerSecond: Double(intervalSamples) / max(seconds, 1e-9))
                        if !liveProgress { logger.info("\(progress.line)\(showRate ? "  lr \(optimizer.learningRate)" : "")") }
                        tensorBoard?.writeProgress(step: step, trainLoss: progress.loss, learningRate: Double(optimizer.learningRate),
                                                   samplesPerSecond: progress.samplesPerSecond)
                        trainSeconds += seconds
                        intervalStart = Date()
                        intervalSamples = 0
                    }
                }
                var newBest = false
                if (config.evalEvery > 0 && step % config.evalEvery == 0) || isLast {
                    try evaluateNow()
                    newBest = try judgeEarlyStop()
                }
                // With early stopping, every new best evaluation is checkpointed, so `best` is it.
                if (config.checkpointEvery > 0 && step % config.checkpointEvery == 0) || checkpointRequested || stopRequested
                    || isLast || newBest || stoppedEarly {
                    try checkpoint()
                }
                if stopRequested {
                    stopSignal = StopSignal.pending == 0 ? SIGTERM : StopSignal.pending
                    break epochs
                }
                if isLast || stoppedEarly { break epochs }
            }
        }

        if liveProgress && rank == 0 { Console.shared.endStatus() }
        if rank == 0 && timing.steps > 0 { logger.info("\(timing.summary())") }
        if stopSignal != 0 {
            if config.checkpointDir == nil && rank == 0 { logger.warning("no --checkpoint-dir: nothing was saved") }
            throw TrainingError.interrupted(signal: stopSignal, step: step, checkpoint: lastCheckpoint)
        }
        return TrainingResult(steps: step, samples: samplesSeen, finalEvaluation: lastRecord,
                              checkpointPath: lastCheckpoint,
                              samplesPerSecond: Double(intervalSamplesTotal) / max(rank == 0 ? trainSeconds : Date().timeIntervalSince(runStart), 1e-9),
                              skippedSteps: skipped, resumedFrom: resumed?.step,
                              stoppedEarlyAt: stoppedEarly ? step : nil, bestCheckpoint: bestCheckpoint.map { (config.checkpointDir ?? "") + "/" + $0 })
    }

    /// Whether the step's loss and every gradient are finite. NaN and infinity propagate through
    /// a sum, so one vectorized pass decides.
    func isFinite(loss: Double, gradients: FloatBuffer, count: Int, sync: GradientSync) -> Bool {
        guard loss.isFinite else { return false }
        var s: Float = 0
        let g = gradients.pointer
        for i in 0..<count { s += g[i] * 0 }
        let v = sync.values.pointer
        for i in 0..<(sync.rowCount * sync.dim) { s += v[i] * 0 }
        return !s.isNaN
    }

    // MARK: - Evaluation (rank 0)

    func evaluate(model: any RecModel, data: LoadedData, parameters: FloatBuffer, embeddingTable: FloatBuffer,
                  step: Int, epoch: Int, samples: Int, trainLoss: Double?, samplesPerSecond: Double,
                  elapsed: Double) -> EvaluationRecord {
        let predictions = Trainer.predictions(model: model, rows: data.eval, parameters: parameters.pointer,
                                              embeddingTable: embeddingTable.pointer)
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

    /// Probabilities for Criteo rows (13 dense, 26 hashed categorical fields).
    public static func predictions(model: any RecModel, rows: CriteoRows, parameters: UnsafePointer<Float>,
                                   embeddingTable: UnsafePointer<Float>) -> [Float] {
        predictions(model: model, rows: FeatureRowsBuffer(rows), parameters: parameters, embeddingTable: embeddingTable)
    }

    // MARK: - Metrics log

    func openMetricsLog(_ path: String, append: Bool) throws -> FileHandle {
        let url = URL(fileURLWithPath: path)
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        if !(append && FileManager.default.fileExists(atPath: path)) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw TrainingError.metricsLog(path: path, message: "cannot create the file; check that its directory exists or can be created and is writable (--metrics-out)")
            }
        }
        let handle = try FileHandle(forWritingTo: url)
        try handle.seekToEnd()
        return handle
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

/// The process's peak resident set size so far, in MB: VmHWM from /proc/self/status on Linux
/// (getrusage's ru_maxrss would include the parent's size when the process was spawned, as exec
/// keeps the high-water mark of the image it replaces).
func peakResidentMegabytes() -> Int {
    #if os(Linux)
    if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
       let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
       let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "") {
        return kilobytes / 1024
    }
    return 0
    #else
    var usage = rusage()
    getrusage(RUSAGE_SELF, &usage)
    return Int(usage.ru_maxrss) / (1024 * 1024)   // bytes on macOS
    #endif
}

/// Cumulative step-time breakdown.
struct StepTiming {
    var forward: UInt64 = 0, backward: UInt64 = 0, communication: UInt64 = 0, optimizer: UInt64 = 0, total: UInt64 = 0
    /// Time the step waited for its batch (prefetching keeps it near zero when the disk is warm).
    var dataWait: UInt64 = 0
    var steps = 0
    private var mark = (forward: UInt64(0), backward: UInt64(0), communication: UInt64(0), optimizer: UInt64(0))
    var lastForward: UInt64 { forward - mark.forward }
    var lastBackward: UInt64 { backward - mark.backward }
    var lastCommunication: UInt64 { communication - mark.communication }
    var lastOptimizer: UInt64 { optimizer - mark.optimizer }
    mutating func markStep() { mark = (forward, backward, communication, optimizer) }

    /// Fills the record's step-time fields with the means since `earlier`.
    func describe(into record: inout EvaluationRecord, since earlier: StepTiming) {
        let n = Double(steps - earlier.steps)
        guard n > 0 else { return }
        func mean(_ a: UInt64, _ b: UInt64) -> Double { Double(a - b) / n / 1e6 }
        record.step_ms = mean(total, earlier.total)
        record.forward_ms = mean(forward, earlier.forward)
        record.backward_ms = mean(backward, earlier.backward)
        record.communication_ms = mean(communication, earlier.communication)
        record.optimizer_ms = mean(optimizer, earlier.optimizer)
        record.data_wait_ms = mean(dataWait, earlier.dataWait)
    }

    func summary() -> String {
        let n = Double(max(steps, 1)) * 1e6
        let other = total - min(total, dataWait + forward + backward + communication + optimizer)
        return "step time (mean over \(steps) steps): " +
            String(format: "total %.3f ms = data wait %.3f + forward %.3f + backward %.3f + communication %.3f + optimizer %.3f + other %.3f; peak resident memory %d MB",
                   Double(total) / n, Double(dataWait) / n, Double(forward) / n, Double(backward) / n,
                   Double(communication) / n, Double(optimizer) / n, Double(other) / n, peakResidentMegabytes())
    }
}
