/// Where a step's time went, in nanoseconds, accumulated over `steps` steps.
public struct StepPhases: Sendable, Equatable, Codable {
    /// Waiting for the step's batches (the time `TrainingStep` spends in its batch closure).
    public var dataWait: UInt64 = 0
    /// Forward pass and loss.
    public var forward: UInt64 = 0
    /// Backward pass, without the communication calls made from it.
    public var backward: UInt64 = 0
    /// Communication the step waited for or spent CPU on: starting collectives, packing and
    /// merging embedding rows, and waiting for completion.
    public var exposedCommunication: UInt64 = 0
    /// Time collectives were in flight while the step computed (from their start until a
    /// progress call saw them done, or until the final wait began).
    public var hiddenCommunication: UInt64 = 0
    /// Of `exposedCommunication`, the time blocked in waits.
    public var communicationWait: UInt64 = 0
    /// Of `communicationWait`, waiting for the other ranks' embedding row counts.
    public var communicationCountsWait: UInt64 = 0
    /// Of `exposedCommunication`: summing the rank's own embedding pairs per row (or scattering
    /// them into the dense exchange buffer).
    public var communicationCoalesce: UInt64 = 0
    /// Of `exposedCommunication`: inside the calls that start collectives.
    public var communicationStart: UInt64 = 0
    /// Of `exposedCommunication`: inside the progress calls (MPI_Test) between layers.
    public var communicationTest: UInt64 = 0
    /// Of `exposedCommunication`: merging the received embedding rows.
    public var communicationMerge: UInt64 = 0
    /// Of `exposedCommunication`: the sharded tables' all-to-all exchanges (fetching the batch's
    /// rows, sending their gradients to the owners).
    public var embeddingExchange: UInt64 = 0
    /// Optimizer update (dense and embedding rows).
    public var optimizer: UInt64 = 0
    /// Whole steps, from the batch request to the end of the update.
    public var total: UInt64 = 0
    public var steps: Int = 0

    public init() {}

    public static func - (a: StepPhases, b: StepPhases) -> StepPhases {
        var d = StepPhases()
        d.dataWait = a.dataWait - b.dataWait
        d.forward = a.forward - b.forward
        d.backward = a.backward - b.backward
        d.exposedCommunication = a.exposedCommunication - b.exposedCommunication
        d.hiddenCommunication = a.hiddenCommunication - b.hiddenCommunication
        d.communicationWait = a.communicationWait - b.communicationWait
        d.communicationCountsWait = a.communicationCountsWait - b.communicationCountsWait
        d.communicationCoalesce = a.communicationCoalesce - b.communicationCoalesce
        d.communicationStart = a.communicationStart - b.communicationStart
        d.communicationTest = a.communicationTest - b.communicationTest
        d.communicationMerge = a.communicationMerge - b.communicationMerge
        d.embeddingExchange = a.embeddingExchange - b.embeddingExchange
        d.optimizer = a.optimizer - b.optimizer
        d.total = a.total - b.total
        d.steps = a.steps - b.steps
        return d
    }
}

extension StepPhases {
    /// Fills the record's step-time fields with the means per step since `earlier`.
    func describe(into record: inout EvaluationRecord, since earlier: StepPhases) {
        let d = self - earlier
        guard d.steps > 0 else { return }
        func mean(_ a: UInt64) -> Double { Double(a) / Double(d.steps) / 1e6 }
        record.step_ms = mean(d.total)
        record.forward_ms = mean(d.forward)
        record.backward_ms = mean(d.backward)
        record.communication_ms = mean(d.exposedCommunication)
        record.optimizer_ms = mean(d.optimizer)
        record.data_wait_ms = mean(d.dataWait)
    }

    /// The run's mean step time, by phase, and the peak resident memory (the line `train` ends with).
    func summary() -> String {
        let n = Double(max(steps, 1)) * 1e6
        let other = total - min(total, dataWait + forward + backward + exposedCommunication + optimizer)
        return "step time (mean over \(steps) steps): " +
            String(format: "total %.3f ms = data wait %.3f + forward %.3f + backward %.3f + communication %.3f + optimizer %.3f + other %.3f; peak resident memory %ld MB",
                   Double(total) / n, Double(dataWait) / n, Double(forward) / n, Double(backward) / n,
                   Double(exposedCommunication) / n, Double(optimizer) / n, Double(other) / n, ResidentMemory.peakMegabytes())
    }
}
