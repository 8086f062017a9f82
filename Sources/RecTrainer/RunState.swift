/// Where a run is: the state a checkpoint carries from one process to the next.
public struct RunState: Sendable, Equatable {
    /// Optimizer steps completed.
    public var step = 0
    /// The epoch in progress (0-based) and the training rows of it already consumed (the data
    /// position of the next step).
    public var epoch = 0
    public var offset = 0
    /// Training rows consumed by the run, over all ranks.
    public var samplesSeen = 0
    /// The best value of the selection metric so far, and the checkpoint that has it.
    public var bestMetric: Double?
    public var bestCheckpoint: String?
    /// Early stopping: the best value of the selection metric over all evaluations (by more than
    /// the min-delta), and the evaluations since it.
    public var earlyStopBest: Double?
    public var evaluationsSinceBest = 0

    public init() {}

    /// The state a checkpoint saved.
    init(_ saved: Checkpoint.State) {
        step = saved.step
        epoch = saved.epoch
        offset = saved.epochRowOffset
        samplesSeen = saved.samplesSeen
        bestMetric = saved.bestMetric
        bestCheckpoint = saved.bestCheckpoint
        earlyStopBest = saved.earlyStopBest
        evaluationsSinceBest = saved.evaluationsSinceBest ?? 0
    }

    /// After a step of `globalCount` rows of an epoch of `epochRows` rows.
    public mutating func advance(by globalCount: Int, epochRows: Int) {
        step += 1
        offset += globalCount
        if offset >= epochRows { epoch += 1; offset = 0 }
        samplesSeen += globalCount
    }

    /// The epoch as people count it: 1-based, and a finished epoch is not yet the next one.
    public var completedEpochs: Int { epoch + (offset == 0 ? 0 : 1) }
}
