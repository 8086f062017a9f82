import Foundation
import Logging
import RecCore
import RecData
import RecDistributed

/// The data-parallel training loop.
///
/// Every rank builds the same model, reads only its block-cyclic shard (`BatchSource`), and runs
/// the same number of steps (`TrainingStep`: forward and backward on the local rows, the dense
/// gradients allreduced with the loss and the stop/checkpoint flags riding along in extra slots,
/// the embedding rows the step touched gathered, and the same optimizer update on every rank).
/// Rank 0 evaluates and writes checkpoints; the other ranks meanwhile wait in a matched collective.
public final class Trainer {
    public let config: TrainingConfig
    let communicator: any Communicator
    let logger: Logger
    var rank: Int { communicator.rank }
    var worldSize: Int { communicator.size }

    /// How rank 0 shows progress (`ProgressMode.automatic` decides for the command line).
    public var progress = ProgressMode.lines
    /// Rank 0, after resuming: the checkpoint read (sharded tables are sent from it afterwards).
    var resumedDirectory: String?
    /// Sharded checkpoints through rank 0 even when the ranks share the directory (tests and
    /// measurements compare the two ways; `REC_DIST_FUNNEL_CHECKPOINTS=1` sets it).
    var funnelCheckpoints = ProcessInfo.processInfo.environment["REC_DIST_FUNNEL_CHECKPOINTS"] == "1"
    /// Tests: the rank whose shard file cannot be written, as if its disk were full.
    var failingShardRank: Int?

    public init(config: TrainingConfig, communicator: any Communicator, logger: Logger) {
        self.config = config
        self.communicator = communicator
        self.logger = logger
    }

    /// Runs the whole training: resume or initialize, load, step, evaluate, checkpoint.
    public func run() throws -> TrainingResult {
        Denormals.flushToZero()   // this thread trains: no subnormal slow path in the optimizer state
        try communicator.requireSameConfiguration(config)
        let rows = batchRows()
        let (model, sharding) = try placeEmbeddings(maxBatch: max(rows.train, rows.eval))
        return try train(model, sharding: sharding, batchRows: rows.train)
    }

    /// The loop: set up, then for each step: batch, step, schedule, maybe evaluate / checkpoint / stop.
    /// `batchRows`: the most rows a rank's share of a global batch holds (`batchRows()`).
    func train<Model: RecModel>(_ model: Model, sharding: ShardedEmbeddings?, batchRows: Int) throws -> TrainingResult {
        let step = TrainingStep(model: model, communicator: communicator, optimizer: config.optimizer, loss: config.loss,
                                batchSize: batchRows, accumulate: config.optimizer.accumulate,
                                bucketBytes: config.bucketBytes ?? 1 << 20, seed: config.seed, sharding: sharding)
        let buffers = Checkpoint.Buffers(layout: model.layout, parameters: step.parameters, embeddingTable: step.embeddingTable,
                                         tables: sharding?.tables ?? model.embeddings, optimizer: step.optimizer, sharding: sharding)
        StopSignal.install()
        let ownership = try claimCheckpointDirectory()
        defer { ownership?.release() }
        let resumed = try resumeState(into: buffers)
        let data = try loadData(resumeOffset: resumed?.epochRowOffset ?? 0)
        let source = data.source
        defer { source.stop() }
        let identity = try identifyRun(resumed: resumed, data: data)
        try checkSelectionMetric(data)
        try startReplicas(step, resumed: resumed, buffers: buffers)
        var state = resumed.map(RunState.init) ?? RunState()
        let plan = RunPlan(config: config, source: source, start: state, worldSize: worldSize)
        if rank == 0 { logStart(step, data: data, plan: plan) }
        let metricsLog = try openMetricsLog(resuming: resumed != nil)
        defer { try? metricsLog?.close() }
        let tensorBoard = try openTensorBoard()
        let display = ProgressDisplay(mode: rank == 0 ? progress : .off, plan: plan,
                                      showRate: config.optimizer.schedule != LearningRateSchedule(), logger: logger)
        defer { display.end() }
        let evaluation = EvaluationPolicy(every: config.evalEvery)
        let checkpoints = CheckpointPolicy(everySteps: config.checkpointEvery, everySeconds: config.checkpointEverySeconds,
                                           metric: config.selectionMetric)
        var books = RunBooks()
        (books.lineage, books.data) = identity
        var throughput = Throughput()

        while state.step < plan.lastStep {
            // The batch: `micro` global batches whose gradients add up (gradient accumulation;
            // fewer at the end of an epoch), the loss scaled by 1 / (all their rows).
            let micro = min(plan.accumulate, source.batchesLeft(from: state.offset))
            var globalCount = 0
            for j in 0..<micro { globalCount += source.globalBatchCount(offset: state.offset + j * source.globalBatchSize) }
            let before = step.phases
            var offset = state.offset, lastView: BatchView?
            try step.computeGradients(step: state.step, micro: micro, globalCount: globalCount,
                                      stop: StopSignal.pending != 0,
                                      checkpoint: rank == 0 && checkpoints.timerExpired(elapsed: Date().timeIntervalSince(books.lastCheckpointTime))) { _ in
                let (view, count) = source.batch(epoch: state.epoch, offset: offset)
                precondition(count == source.globalBatchCount(offset: offset), "micro-batch row count disagrees with the source")
                offset += count
                lastView = view
                return view
            }
            if config.debug && state.step == 0 && worldSize == 1 && micro == 1 && sharding == nil, let lastView {
                try checkGradients(model: model, batch: lastView, parameters: step.parameters, embeddingTable: step.embeddingTable,
                                   gradients: step.gradients, sparse: step.sparse, globalCount: globalCount)
            }
            // The step, its schedule, and the non-finite guard (all ranks see the same sums, so they agree).
            let outcome = try step.finish(learningRate: config.optimizer.schedule.rate(base: plan.baseRate, step: state.step,
                                                                                      totalSteps: plan.lastStep))
            if outcome.isFinite {
                books.since.add(outcome, samples: globalCount, clipNorm: config.optimizer.clipNorm)
            } else {
                try guardNonFinite(step, outcome: outcome, number: state.step + 1, books: &books)
            }
            state.advance(by: globalCount, epochRows: source.rows)
            throughput.count(globalCount)
            if config.debug { try debugStep(step, state: state, loss: outcome.loss, since: before) }

            let isLast = state.step == plan.lastStep
            if rank == 0 {
                display.stepDone(state, samples: globalCount, loss: books.since.meanLoss)
                if display.isLineDue(step: state.step) {
                    let samplesPerSecond = throughput.lap()
                    display.line(state, samplesPerSecond: samplesPerSecond, loss: books.since.meanLoss,
                                 learningRate: step.optimizer.learningRate)
                    tensorBoard?.writeProgress(step: state.step, trainLoss: books.since.meanLoss,
                                               learningRate: Double(step.optimizer.learningRate), samplesPerSecond: samplesPerSecond)
                }
            }
            var newBest = false, stoppedEarly = false
            if evaluation.isDue(step: state.step, isLast: isLast) {
                try evaluate(step, data: data, state: state, books: &books, throughput: &throughput, log: metricsLog,
                             tensorBoard: tensorBoard)
                (stoppedEarly, newBest) = try judgeEarlyStop(state: &state, record: books.lastRecord)
            }
            if checkpoints.isDue(step: state.step, requested: outcome.checkpointRequested || outcome.stopRequested,
                                 isLast: isLast, newBest: newBest, stopping: stoppedEarly) {
                try writeCheckpoint(state: &state, policy: checkpoints, buffers: buffers, books: &books)
            }
            if outcome.stopRequested {
                books.stopSignal = StopSignal.pending == 0 ? SIGTERM : StopSignal.pending
                break
            }
            if stoppedEarly { books.stoppedEarlyAt = state.step }
            if isLast || stoppedEarly { break }
        }

        display.end()
        if rank == 0 && step.phases.steps > 0 { logger.info("\(step.phases.summary())") }
        if books.stopSignal != 0 {
            if config.checkpointDir == nil && rank == 0 { logger.warning("no --checkpoint-dir: nothing was saved") }
            throw TrainingError.interrupted(signal: books.stopSignal, step: state.step, checkpoint: books.lastCheckpoint)
        }
        return TrainingResult(steps: state.step, samples: state.samplesSeen, finalEvaluation: books.lastRecord,
                              checkpointPath: books.lastCheckpoint,
                              samplesPerSecond: rank == 0 ? throughput.samplesPerSecond : throughput.samplesPerSecondSinceStart,
                              skippedSteps: books.skippedSteps, resumedFrom: resumed?.step,
                              stoppedEarlyAt: books.stoppedEarlyAt,
                              bestCheckpoint: state.bestCheckpoint.map { (config.checkpointDir ?? "") + "/" + $0 })
    }
}
