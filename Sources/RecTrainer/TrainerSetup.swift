import Foundation
import RecCore
import RecData
import RecDistributed

/// Where the run ends, fixed when it starts. A step is one optimizer update: `accumulate` global
/// batches (micro-batches), fewer for the last step of an epoch.
struct RunPlan {
    let accumulate: Int
    let stepsPerEpoch: Int
    /// The step the run starts at (after a resume, the checkpoint's).
    let firstStep: Int
    let lastStep: Int
    let totalEpochs: Int
    /// Steps between plain progress lines.
    let logEvery: Int
    /// The learning rate before the schedule: the linear scaling rule multiplies it by the ranks.
    let baseRate: Float

    init(config: TrainingConfig, source: any BatchSource, start: RunState, worldSize: Int) {
        // Without overflow for any --steps or --epochs: a run too long to count ends at Int.max steps.
        func ceilDiv(_ a: Int, _ b: Int) -> Int { a / b + (a % b == 0 ? 0 : 1) }
        accumulate = config.optimizer.accumulate
        stepsPerEpoch = ceilDiv(source.batchesPerEpoch, accumulate)
        firstStep = start.step
        let remainingInEpoch = ceilDiv(source.batchesLeft(from: start.offset), accumulate)
        let later = max(config.epochs - start.epoch - 1, 0).multipliedReportingOverflow(by: stepsPerEpoch)
        let planned = (start.step + remainingInEpoch).addingReportingOverflow(later.partialValue)
        lastStep = config.steps ?? (later.overflow || planned.overflow ? Int.max : planned.partialValue)
        totalEpochs = max(1, ceilDiv(lastStep, max(stepsPerEpoch, 1)))
        logEvery = config.logEvery > 0 ? config.logEvery : max(1, (lastStep - start.step) / 20)
        baseRate = config.optimizer.learningRate * (config.optimizer.scaleByWorldSize ? Float(worldSize) : 1)
    }
}

extension Trainer {
    /// Loads this rank's batch source (and, on rank 0, the evaluation rows). A failure on any rank
    /// stops all ranks together: the flags are agreed in one allreduce before any training collective.
    func loadData(resumeOffset: Int) throws -> TrainingData {
        var failure: (any Error)?
        var loaded: TrainingData?
        do {
            if config.usesPreparedData {
                let dataset = try PreparedDataset(directory: config.dataPath)
                let d = dataset.denseCount, c = dataset.categoricalCount
                guard config.model.denseInputs == d, config.model.categoricalFields == c,
                      config.model.kind == .mlp || config.model.vocabularySizes == dataset.manifest.vocabularySizes else {
                    throw TrainingError.notEnoughData("the model configuration does not match the prepared dataset '\(config.dataPath)' (\(d) dense, \(c) categorical fields); build the configuration with TrainingConfig.resolvingPreparedData()")
                }
                loaded = try dataset.trainingData(rank: rank, worldSize: worldSize, blockSize: config.batchSize, seed: config.seed,
                                                  options: config.preparedData ?? PreparedDataOptions())
                logger.debug("peak resident memory after loading: \(ResidentMemory.peakMegabytes()) MB")
            } else {
                loaded = try TSVBatchSource.load(path: config.dataPath, evalPath: config.evalPath, evalFraction: config.evalFraction,
                                                 rank: rank, worldSize: worldSize, blockSize: config.batchSize,
                                                 resumeOffset: resumeOffset)
            }
        } catch let error as NotEnoughDataError {
            failure = TrainingError.notEnoughData(error.description)
        } catch {
            failure = error
        }
        try agree(failure, stage: "data loading")
        for note in loaded!.notes { logger.info("\(note)") }
        for detail in loaded!.details { logger.debug("\(detail)") }
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

    /// A ranking selection metric needs evaluation rows in groups; rank 0 holds them, everyone learns.
    func checkSelectionMetric(_ data: TrainingData) throws {
        guard config.selectionMetric.isRanking else { return }
        var failure: (any Error)?
        if rank == 0 && data.evalGroupSize == nil {
            failure = TrainingError.notEnoughData("--select-metric \(config.selectionMetric.rawValue) needs a leave-last-out evaluation split (a dataset prepared from interactions, whose evaluation rows come in per-user groups); this run's evaluation rows have none. Use auc, logloss, accuracy, rmse or mae.")
        }
        try agree(failure, stage: "checking --select-metric")
    }

    /// Replicas start identical: rank 0 initializes (or has loaded the checkpoint), everyone
    /// receives its values, and the optimizer state when resuming. Sharded tables start where
    /// they live: each rank draws its own rows of the same initial values, or receives them (and
    /// their optimizer state) from the checkpoint rank 0 read.
    func startReplicas<Model: RecModel>(_ step: TrainingStep<Model>, resumed: Checkpoint.State?, buffers: Checkpoint.Buffers) throws {
        if rank == 0 && resumed == nil {
            step.model.initialize(parameters: step.parameters.pointer, embeddingTable: step.embeddingTable.pointer, seed: config.seed)
        }
        try communicator.broadcast(step.parameters.buffer, root: 0)
        if let sharding = step.sharding {
            guard let resumed else {
                sharding.initialize(seed: config.seed, zeroedColumns: config.model.zeroedEmbeddingColumns)
                return
            }
            try Checkpoint.receiveShards(from: rank == 0 ? resumedDirectory : nil, buffers: buffers)
            for slot in step.optimizer.stateSlots.dense { try communicator.broadcast(slot.buffer, root: 0) }
            try step.optimizer.restoreStep(resumed.optimizerStep)
            return
        }
        if step.model.embeddings != nil { try communicator.broadcast(step.embeddingTable.buffer, root: 0) }
        if let resumed {
            var state = step.optimizer.stateBuffers()
            for i in state.indices {
                try state[i].values.withUnsafeMutableBufferPointer { try communicator.broadcast($0, root: 0) }
            }
            try step.optimizer.loadState(step: resumed.optimizerStep, buffers: state)
        }
    }

    /// Rank 0's opening lines: the model, the data, the steps, the optimization.
    func logStart<Model: RecModel>(_ step: TrainingStep<Model>, data: TrainingData, plan: RunPlan) {
        let tables = step.sharding?.tables ?? step.model.embeddings, accumulate = plan.accumulate, g = data.source.globalBatchSize
        logger.info("training \(config.model.kind.rawValue) (\(step.model.layout.count) dense parameters\(tables.map { ", \($0.rowCount) x \($0.dim) embedding rows" } ?? "")) on \(worldSize) rank(s): \(data.source.rows) training rows, \(data.eval.count) evaluation rows, global batch \(g)\(accumulate > 1 ? " x \(accumulate) accumulated = \(g * accumulate) per step" : ""), \(plan.lastStep - plan.firstStep) steps (\(plan.stepsPerEpoch) per epoch); OpenBLAS \(GEMM.coreName) kernels")
        var optimization = "optimizer \(config.optimizer.kind.rawValue), lr \(plan.baseRate)"
        if config.optimizer.scaleByWorldSize { optimization += " (\(config.optimizer.learningRate) x \(worldSize) ranks)" }
        optimization += ", schedule \(config.optimizer.schedule.summary)"
        if config.optimizer.weightDecay > 0 {
            optimization += ", weight decay \(config.optimizer.weightDecay) (\(config.optimizer.decoupledWeightDecay ? "decoupled" : "L2"))"
        }
        if let c = config.optimizer.clipNorm { optimization += ", gradients clipped to global norm \(c)" }
        if let p = config.earlyStopPatience {
            optimization += ", early stopping after \(p) evaluation(s) without a better \(config.selectionMetric.label(k: config.rankingK ?? 10))"
        }
        logger.info("\(optimization)")
    }
}
