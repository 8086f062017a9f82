import RecCore
import RecDistributed

/// Where a step's time went, in nanoseconds, accumulated over `steps` steps.
public struct StepPhases: Sendable, Equatable, Codable {
    /// Waiting for the next batch (measured by the caller that fetches batches).
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
        d.optimizer = a.optimizer - b.optimizer
        d.total = a.total - b.total
        d.steps = a.steps - b.steps
        return d
    }
}

/// One data-parallel training step over buffers allocated once, shared by the trainer and the
/// benchmark:
///
/// 1. forward and loss on this rank's rows (the loss gradient scaled by 1/globalCount, the loss
///    sum written into the gradient buffer's last slot so it rides along with the allreduce);
/// 2. backward; as each bucket of dense gradients and the embedding pairs become final, the
///    model's backward events start their collectives (`GradientSync`), which progress between
///    layers;
/// 3. `synchronize`: wait for the collectives and merge the embedding rows;
/// 4. the same optimizer update on every rank (dense, then the touched embedding rows).
///
/// Generic over the model so the step's calls into it are direct. The step itself allocates
/// nothing, takes no locks and uses no Foundation.
public final class TrainingStep<Model: RecModel> {
    public let model: Model
    public let loss: Loss
    public let batchSize: Int
    public let parameters: FloatBuffer
    /// (layout.count + 1): the dense gradients, then the loss sum.
    public let gradients: FloatBuffer
    public let embeddingTable: FloatBuffer
    public let dLogits: FloatBuffer
    public let sparse: SparseGradient
    public let sync: GradientSync
    public let optimizer: Optimizer
    public var phases = StepPhases()
    /// Clip the global gradient norm (dense and embedding rows) to this before the update.
    public var clipNorm: Float?
    private let parameterCount: Int
    private let hasEmbeddings: Bool

    /// - Parameters:
    ///   - batchSize: the most rows per rank per step.
    ///   - bucketBytes: the dense gradient bucket size (see `GradientSync`).
    ///   - localSums: sum embedding pairs per rank before the exchange (see `GradientSync`).
    public init(model: Model, communicator: any Communicator, optimizer: OptimizerConfig, loss: Loss,
                batchSize: Int, bucketBytes: Int = 1 << 20, localSums: Bool = true) {
        self.model = model
        self.loss = loss
        self.batchSize = batchSize
        let layout = model.layout
        let tables = model.embeddings
        let dim = tables?.dim ?? 1
        let fields = model.config.categoricalFields
        parameterCount = layout.count
        hasEmbeddings = tables != nil
        parameters = FloatBuffer(count: layout.count)
        gradients = FloatBuffer(count: layout.count + 1)
        embeddingTable = FloatBuffer(count: (tables?.rowCount ?? 0) * dim)
        dLogits = FloatBuffer(count: batchSize)
        sparse = SparseGradient(capacity: tables == nil ? 0 : batchSize * fields, dim: dim)
        sync = GradientSync(communicator: communicator, denseCount: layout.count + 1,
                            boundaries: layout.entries.map(\.offset), bucketBytes: bucketBytes,
                            embeddingRows: tables?.rowCount ?? 0, dim: dim,
                            maxLocalPairs: tables == nil ? 0 : batchSize * fields, localSums: localSums)
        self.optimizer = Optimizer(config: optimizer, parameterCount: layout.count,
                                   embeddingRows: tables?.rowCount ?? 0, embeddingDim: dim)
    }

    /// Bytes of the buffers this step owns, by kind (for the memory accounting).
    public var bufferBytes: (parameters: Int, gradients: Int, optimizerState: Int, activations: Int) {
        let dim = model.embeddings?.dim ?? 1
        let embedding = (model.embeddings?.rowCount ?? 0) * dim
        let slots: Int
        switch optimizer.config.kind {
        case .sgd: slots = 0
        case .momentum, .adagrad, .rowwiseAdagrad: slots = 1
        case .adam, .adamw: slots = 2
        }
        let rowwise = optimizer.config.kind == .rowwiseAdagrad
        return (parameters: (parameterCount + embedding) * 4,
                gradients: gradients.count * 4 + sparse.capacity * (dim + 1) * 4 + sync.bufferBytes,
                optimizerState: slots * (parameterCount + (rowwise ? embedding / dim : embedding)) * 4,
                activations: model.activationBytes + dLogits.count * 4)
    }

    /// Forward, loss and backward on `batch`; starts the gradient communication as the backward
    /// pass finishes its pieces. `globalCount` is the number of rows in the global batch.
    @inline(__always)
    public func computeGradients(_ batch: BatchView, globalCount: Int) throws {
        precondition(batch.count <= batchSize)
        let g = gradients.pointer
        g.update(repeating: 0, count: gradients.count)
        sparse.count = 0
        sync.beginStep(gradients: g)
        let t0 = MonotonicClock.nanoseconds()
        let timingBefore = sync.timing
        let exposedBefore = timingBefore.exposed
        // A rank with no rows in the last, partial global batch runs the model on 0 rows: it
        // still reports the same backward events, so it starts the same collectives in order.
        let logits = model.forward(batch, parameters: parameters.pointer, embeddingTable: embeddingTable.pointer)
        let lossSum = loss.forwardBackward(logits: logits, labels: batch.labels, count: batch.count,
                                           scale: 1 / Float(globalCount), dLogits: dLogits.pointer)
        g[parameterCount] = Float(lossSum)
        let t1 = MonotonicClock.nanoseconds()
        phases.forward += t1 - t0
        let sync = self.sync, sparse = self.sparse
        try model.backward(batch, dLogits: dLogits.pointer, parameters: parameters.pointer, gradients: g,
                           sparse: sparse) { event in
            switch event {
            case .denseFinal(let offset): try sync.denseFinal(from: offset)
            case .sparseFinal: try sync.sparseFinal(sparse)
            }
        }
        let inSync = sync.timing.exposed - exposedBefore
        phases.backward += MonotonicClock.nanoseconds() - t1 - inSync
        phases.exposedCommunication += inSync
        account(since: timingBefore)
    }

    /// Adds the parts of the exposed communication since `before` to `phases`.
    @inline(__always)
    func account(since before: GradientSync.Timing) {
        let now = sync.timing
        phases.communicationWait += now.waiting - before.waiting
        phases.communicationCountsWait += now.countsWaiting - before.countsWaiting
        phases.communicationCoalesce += now.coalescing - before.coalescing
        phases.communicationStart += now.starting - before.starting
        phases.communicationTest += now.testing - before.testing
        phases.communicationMerge += now.merging - before.merging
    }

    /// Waits for the step's communication; returns the global batch's loss sum.
    @inline(__always)
    public func synchronize() throws -> Double {
        let before = sync.timing
        try sync.finish()
        phases.exposedCommunication += sync.timing.exposed - before.exposed
        phases.hiddenCommunication += sync.timing.hidden - before.hidden
        account(since: before)
        return Double(gradients.pointer[parameterCount])
    }

    /// The optimizer update, identical on every rank.
    @inline(__always)
    public func update() {
        let t0 = MonotonicClock.nanoseconds()
        if let clipNorm {
            GradientClipping.clip(UnsafeMutableBufferPointer(start: gradients.pointer, count: parameterCount),
                                  UnsafeMutableBufferPointer(start: sync.values.pointer, count: hasEmbeddings ? sync.rowCount * sync.dim : 0),
                                  maxNorm: clipNorm)
        }
        optimizer.update(parameters: parameters.buffer,
                         gradients: UnsafeBufferPointer(start: gradients.pointer, count: parameterCount))
        if hasEmbeddings {
            optimizer.updateRows(embeddings: embeddingTable.buffer,
                                 rows: UnsafeBufferPointer(start: sync.rows, count: sync.rowCount),
                                 gradients: UnsafeBufferPointer(start: sync.values.pointer, count: sync.rowCount * sync.dim))
        }
        phases.optimizer += MonotonicClock.nanoseconds() - t0
    }

    /// The whole step; returns the global batch's loss sum.
    @inline(__always)
    public func run(_ batch: BatchView, globalCount: Int) throws -> Double {
        let t0 = MonotonicClock.nanoseconds()
        try computeGradients(batch, globalCount: globalCount)
        let lossSum = try synchronize()
        update()
        phases.total += MonotonicClock.nanoseconds() - t0
        phases.steps += 1
        return lossSum
    }
}
