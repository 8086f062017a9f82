import RecCore
import RecDistributed

/// What a step reports, the same on every rank (it is read from the allreduced values).
public struct StepOutcome: Sendable, Equatable {
    /// Mean loss over the step's global rows.
    public var loss: Double
    /// Some rank asked to stop (a signal arrived) before the step.
    public var stopRequested: Bool
    /// Rank 0 asked for a checkpoint (its timer ran out) before the step.
    public var checkpointRequested: Bool
    /// Whether the loss and every gradient were finite. If not, the step made no update.
    public var isFinite: Bool
    /// With clipping (and an update): the global gradient norm before clipping.
    public var gradientNorm: Double?
}

/// Extra slots after the dense gradients of a `TrainingStep`, summed by the same allreduce: the
/// loss sum, the stop request (any rank's signal) and the checkpoint request (rank 0's timer).
public enum StepSlot {
    public static let loss = 0, stop = 1, checkpoint = 2, count = 3
}

/// One data-parallel training step over buffers allocated once: the step `train` runs, and the
/// one `bench` and the allocation guards measure.
///
/// 1. forward and loss on this rank's rows of each micro-batch (gradient accumulation: `micro`
///    global batches add up into one update; the loss gradient is scaled by 1/globalCount over
///    all of them), with the dropout context of (seed, step, the example's place in the step's
///    global rows); the loss sum and the control flags ride in extra slots after the dense
///    gradients, so one allreduce carries them;
/// 2. backward; during the last micro-batch, as each bucket of dense gradients and the embedding
///    pairs (of all micro-batches) become final, the model's backward events start their
///    collectives (`GradientSync`), which progress between layers;
/// 3. `synchronize`: wait for the collectives and merge the embedding rows;
/// 4. the non-finite guard: a NaN or infinity in the loss or any gradient skips the update (on
///    every rank alike, since all see the same sums);
/// 5. clipping to the global norm, then the same optimizer update on every rank (dense, then the
///    touched embedding rows).
///
/// With `sharding` (some tables model-parallel, `ShardedEmbeddings`), the model was built with
/// working tables and `embeddingTable` is the working table: each micro-batch's rows are gathered
/// into it before the forward pass, the pairs of the sharded tables go to their owners after the
/// backward pass, and the optimizer updates `storage` (this rank's rows); the owners' gradients
/// join the finite check and the clipping norm through one more allreduce.
///
/// Generic over the model: callers open their `any RecModel` into it. The step itself takes no
/// locks and uses no Foundation; it allocates nothing (a sharded step only while its exchange
/// buffers grow to the largest step seen).
public final class TrainingStep<Model: RecModel> {
    public let model: Model
    public let loss: Loss
    public let batchSize: Int
    public let parameters: FloatBuffer
    /// (layout.count + StepSlot.count): the dense gradients, then the extra slots.
    public let gradients: FloatBuffer
    /// The model's embedding table: the whole tables, or with `sharding` the working rows.
    public let embeddingTable: FloatBuffer
    /// The sharded tables' storage and exchanges, when some table is not replicated.
    public let sharding: ShardedEmbeddings?
    /// The rows the optimizer updates: `embeddingTable`, or with sharding this rank's storage.
    public var storage: FloatBuffer { sharding?.storage ?? embeddingTable }
    public let dLogits: FloatBuffer
    /// One micro-batch's embedding pairs (the model overwrites them per pass).
    public let sparse: SparseGradient
    /// With accumulation and embeddings: the pairs of all micro-batches of the step.
    let accumulated: SparseGradient?
    public let sync: GradientSync
    public let optimizer: Optimizer
    public var phases = StepPhases()
    /// Clip the global gradient norm (dense and embedding rows) to this before the update.
    public var clipNorm: Float?
    /// Seeds the dropout masks.
    public var seed: UInt64
    private let parameterCount: Int
    private let hasEmbeddings: Bool
    private var globalCount = 0
    private var stepStart: UInt64 = 0
    /// With sharding, over all ranks: the owners' gradient sum of squares and non-finite count.
    private var ownedSquares = 0.0, ownedNonFinite = 0.0
    private let summary = UnsafeMutableBufferPointer<Double>.allocate(capacity: 2)

    /// - Parameters:
    ///   - batchSize: the most rows per rank per micro-batch.
    ///   - accumulate: the most micro-batches per step.
    ///   - bucketBytes: the dense gradient bucket size (see `GradientSync`).
    ///   - localSums: sum embedding pairs per rank before the exchange (see `GradientSync`).
    ///   - seed: seeds the dropout masks.
    ///   - sharding: the sharded tables (the model then has working tables of `batchSize` rows).
    public init(model: Model, communicator: any Communicator, optimizer: OptimizerConfig, loss: Loss,
                batchSize: Int, accumulate: Int = 1, bucketBytes: Int = 1 << 20, localSums: Bool = true,
                seed: UInt64 = 0, sharding: ShardedEmbeddings? = nil) {
        self.model = model
        self.loss = loss
        self.batchSize = batchSize
        self.seed = seed
        let layout = model.layout
        let tables = model.embeddings
        let dim = tables?.dim ?? 1
        let pairs = tables == nil ? 0 : batchSize * model.config.categoricalFields
        parameterCount = layout.count
        hasEmbeddings = tables != nil
        parameters = FloatBuffer(count: layout.count)
        gradients = FloatBuffer(count: layout.count + StepSlot.count)
        embeddingTable = FloatBuffer(count: (tables?.rowCount ?? 0) * dim)
        dLogits = FloatBuffer(count: batchSize)
        sparse = SparseGradient(capacity: pairs, dim: dim)
        accumulated = accumulate > 1 && tables != nil && sharding == nil ? SparseGradient(capacity: accumulate * pairs, dim: dim) : nil
        precondition(sharding == nil || (sharding!.capacity >= batchSize && sharding!.dim == dim
                                         && sharding!.replicated.capacity >= accumulate * batchSize * (tables?.fields ?? 0)),
                     "the sharded tables were built for other batches")
        self.sharding = sharding
        // With sharding, the usual exchange carries the replicated tables' rows only.
        sync = GradientSync(communicator: communicator, denseCount: layout.count + StepSlot.count,
                            boundaries: layout.entries.map(\.offset), bucketBytes: bucketBytes,
                            embeddingRows: sharding?.plan.replicatedRows ?? tables?.rowCount ?? 0, dim: dim,
                            maxLocalPairs: accumulate * pairs, localSums: localSums)
        self.optimizer = Optimizer(config: optimizer, parameterCount: layout.count,
                                   embeddingRows: sharding.map { $0.storage.count / dim } ?? tables?.rowCount ?? 0,
                                   embeddingDim: dim)
        clipNorm = optimizer.clipNorm
    }

    deinit { summary.deallocate() }

    /// Bytes of the buffers this step owns, by kind (for the memory accounting).
    public var bufferBytes: (parameters: Int, gradients: Int, optimizerState: Int, activations: Int) {
        let dim = model.embeddings?.dim ?? 1
        let embedding = hasEmbeddings ? storage.count : 0
        let working = sharding == nil ? 0 : embeddingTable.count * 4
        let exchange = sharding.map { $0.bufferBytes - $0.storage.count * 4 } ?? 0
        let slots: Int
        switch optimizer.config.kind {
        case .sgd: slots = 0
        case .momentum, .adagrad, .rowwiseAdagrad: slots = 1
        case .adam, .adamw: slots = 2
        }
        let rowwise = optimizer.config.kind == .rowwiseAdagrad
        return (parameters: (parameterCount + embedding) * 4,
                gradients: gradients.count * 4 + (sparse.capacity + (accumulated?.capacity ?? 0)) * (dim * 4 + 8)
                    + sync.bufferBytes + exchange,
                optimizerState: slots * (parameterCount + (rowwise ? embedding / dim : embedding)) * 4,
                activations: model.activationBytes + dLogits.count * 4 + working)
    }

    // MARK: - The whole step

    /// The whole step: `micro` micro-batches (`batch(j)` gives this rank's rows of the j-th; the
    /// time it takes is the data wait), then synchronize, guard and update. `step` is the 0-based
    /// optimizer step (the dropout masks' seed), `globalCount` the rows of all micro-batches over
    /// all ranks. `learningRate`, when given, is set before the update.
    @inline(__always)
    public func run(step: Int, micro: Int = 1, globalCount: Int, stop: Bool = false, checkpoint: Bool = false,
                    learningRate: Float? = nil, batch: (Int) throws -> BatchView) throws -> StepOutcome {
        try computeGradients(step: step, micro: micro, globalCount: globalCount, stop: stop, checkpoint: checkpoint,
                             batch: batch)
        return try finish(learningRate: learningRate)
    }

    /// One batch as a whole step (no accumulation, no control flags); returns the global batch's
    /// loss sum.
    @inline(__always)
    @discardableResult
    public func run(_ batch: BatchView, globalCount: Int) throws -> Double {
        _ = try run(step: phases.steps, globalCount: globalCount) { _ in batch }
        return Double(gradients.pointer[parameterCount + StepSlot.loss])
    }

    // MARK: - Its parts

    /// Forward, loss and backward on one batch, as a step of its own (step number: the steps run
    /// so far); starts the gradient communication as the backward pass finishes its pieces.
    @inline(__always)
    public func computeGradients(_ batch: BatchView, globalCount: Int) throws {
        try computeGradients(step: phases.steps, globalCount: globalCount) { _ in batch }
    }

    /// Sets the control slots, then forward, loss and backward on each micro-batch; the last one's
    /// backward pass starts the gradient communication.
    @inline(__always)
    public func computeGradients(step: Int, micro: Int = 1, globalCount: Int, stop: Bool = false,
                                 checkpoint: Bool = false, batch: (Int) throws -> BatchView) throws {
        precondition(micro >= 1 && (micro == 1 || accumulated != nil || sharding != nil || !hasEmbeddings), "more micro-batches than the step was built for")
        stepStart = MonotonicClock.nanoseconds()
        self.globalCount = globalCount
        let g = gradients.pointer
        g.update(repeating: 0, count: gradients.count)
        sparse.count = 0
        accumulated?.count = 0
        sharding?.beginStep()
        // The extra slots are set first: their bucket may start its allreduce during the last
        // backward pass.
        g[parameterCount + StepSlot.stop] = stop ? 1 : 0
        g[parameterCount + StepSlot.checkpoint] = checkpoint ? 1 : 0
        let sync = self.sync, sparse = self.sparse, accumulated = self.accumulated, sharding = self.sharding
        for j in 0..<micro {
            let f0 = MonotonicClock.nanoseconds()
            var view = try batch(j)
            precondition(view.count <= batchSize)
            var t0 = MonotonicClock.nanoseconds()
            phases.dataWait += t0 - f0
            if let sharding {
                view = try sharding.gather(view, into: embeddingTable.pointer)
                let t = MonotonicClock.nanoseconds()
                phases.embeddingExchange += t - t0
                phases.exposedCommunication += t - t0
                t0 = t
            }
            let isFinal = j == micro - 1
            if isFinal { sync.beginStep(gradients: g) }
            sparse.count = 0
            let timingBefore = sync.timing
            // Dropout masks follow (seed, optimizer step, example's place in the step's global
            // rows: micro-batch j holds the j-th block of worldSize x batchSize). A rank with no
            // rows in the last, partial global batch runs the model on 0 rows: it still reports
            // the same backward events, so it starts the same collectives in order.
            let world = sync.communicator
            model.trainingContext = TrainingContext(seed: seed, step: step,
                                                    firstExample: (j * world.size + world.rank) * batchSize)
            let logits = model.forward(view, parameters: parameters.pointer, embeddingTable: embeddingTable.pointer)
            g[parameterCount + StepSlot.loss] += Float(loss.forwardBackward(
                logits: logits, labels: view.labels, count: view.count,
                scale: 1 / Float(globalCount), dLogits: dLogits.pointer))
            let t1 = MonotonicClock.nanoseconds()
            phases.forward += t1 - t0
            // The dense gradients add up in `gradients`; only the last micro-batch's backward
            // pass starts the collectives.
            if let sharding {
                try model.backward(view, dLogits: dLogits.pointer, parameters: parameters.pointer, gradients: g,
                                   sparse: sparse) { event in
                    switch event {
                    case .denseFinal(let offset): if isFinal { try sync.denseFinal(from: offset) }
                    case .sparseFinal:
                        sharding.route(sparse)
                        if isFinal { try sync.sparseFinal(sharding.replicated) }
                    }
                }
            } else if let accumulated {
                try model.backward(view, dLogits: dLogits.pointer, parameters: parameters.pointer, gradients: g,
                                   sparse: sparse) { event in
                    switch event {
                    case .denseFinal(let offset): if isFinal { try sync.denseFinal(from: offset) }
                    case .sparseFinal:
                        accumulated.append(sparse)
                        if isFinal { try sync.sparseFinal(accumulated) }
                    }
                }
            } else {
                try model.backward(view, dLogits: dLogits.pointer, parameters: parameters.pointer, gradients: g,
                                   sparse: sparse) { event in
                    switch event {
                    case .denseFinal(let offset): if isFinal { try sync.denseFinal(from: offset) }
                    case .sparseFinal: if isFinal { try sync.sparseFinal(sparse) }
                    }
                }
            }
            let inSync = sync.timing.exposed - timingBefore.exposed   // communication started from backward
            phases.backward += MonotonicClock.nanoseconds() - t1 - inSync
            phases.exposedCommunication += inSync
            account(since: timingBefore)
        }
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

    /// Waits for the step's communication; returns the global loss sum. With sharding, first sends
    /// the sharded tables' gradients to their owners, while the dense buckets' allreduce started
    /// in the backward pass is still in flight (the MPI library advances it inside the exchange),
    /// and sums, over all ranks, the owners' squares and non-finite values (for the finite check
    /// and the clipping norm).
    @inline(__always)
    @discardableResult
    public func synchronize() throws -> Double {
        if let sharding {
            let t0 = MonotonicClock.nanoseconds()
            try sharding.exchangeGradients()
            var squares = 0.0, nonFinite = 0.0
            let v = sharding.ownedValues
            for i in 0..<(sharding.ownedCount * sharding.dim) {
                if v[i].isFinite { squares += Double(v[i] * v[i]) } else { nonFinite += 1 }
            }
            summary[0] = squares
            summary[1] = nonFinite
            try sync.communicator.allreduceSum(summary)
            (ownedSquares, ownedNonFinite) = (summary[0], summary[1])
            let t = MonotonicClock.nanoseconds() - t0
            phases.embeddingExchange += t
            phases.exposedCommunication += t
        }
        let before = sync.timing
        try sync.finish()
        phases.exposedCommunication += sync.timing.exposed - before.exposed
        phases.hiddenCommunication += sync.timing.hidden - before.hidden
        account(since: before)
        return Double(gradients.pointer[parameterCount + StepSlot.loss])
    }

    /// Synchronizes, then updates unless the step is not finite; ends the step's timing.
    @inline(__always)
    public func finish(learningRate: Float? = nil) throws -> StepOutcome {
        let lossSum = try synchronize()
        let extra = gradients.pointer + parameterCount
        var outcome = StepOutcome(loss: lossSum / Double(globalCount), stopRequested: extra[StepSlot.stop] > 0,
                                  checkpointRequested: extra[StepSlot.checkpoint] > 0, isFinite: true, gradientNorm: nil)
        outcome.isFinite = isFinite(loss: outcome.loss)
        if outcome.isFinite {
            if let learningRate { optimizer.learningRate = learningRate }
            outcome.gradientNorm = update()
        }
        phases.total += MonotonicClock.nanoseconds() - stepStart
        phases.steps += 1
        return outcome
    }

    /// Whether the loss and every (synchronized) gradient are finite. NaN and infinity propagate
    /// through a sum, so one vectorized pass decides.
    @inline(__always)
    public func isFinite(loss: Double) -> Bool {
        guard loss.isFinite else { return false }
        var s: Float = 0
        let g = gradients.pointer
        for i in 0..<parameterCount { s += g[i] * 0 }
        let v = sync.values.pointer
        for i in 0..<(sync.rowCount * sync.dim) { s += v[i] * 0 }
        return !s.isNaN && ownedNonFinite == 0
    }

    /// The first non-finite value of the step, named: the loss, a dense tensor's element, or an
    /// embedding row's gradient; nil when all are finite.
    public func firstNonFinite(loss: Double) -> String? {
        guard loss.isFinite else { return "the training loss (\(loss))" }
        let g = gradients.pointer
        for entry in model.layout.entries {
            for i in entry.offset..<(entry.offset + entry.count) where !g[i].isFinite {
                return "the gradient of \(entry.name) (element \(i - entry.offset) is \(g[i]))"
            }
        }
        let v = sync.values.pointer
        for i in 0..<(sync.rowCount * sync.dim) where !v[i].isFinite {
            return "the gradient of embedding row \(sync.rows[i / sync.dim])"
        }
        if ownedNonFinite > 0 { return "the gradient of a sharded embedding row (\(Int(ownedNonFinite)) values on their owners)" }
        return nil
    }

    /// Clipping (with `clipNorm`; it sees the global gradients, identical on every rank), then
    /// the optimizer update, identical on every rank. Returns the norm before clipping.
    @inline(__always)
    @discardableResult
    public func update() -> Double? {
        let t0 = MonotonicClock.nanoseconds()
        var norm: Double?
        let owned = UnsafeMutableBufferPointer(start: sharding?.ownedValues, count: (sharding?.ownedCount ?? 0) * (sharding?.dim ?? 0))
        if let clipNorm {
            norm = GradientClipping.clip(UnsafeMutableBufferPointer(start: gradients.pointer, count: parameterCount),
                                         UnsafeMutableBufferPointer(start: sync.values.pointer, count: hasEmbeddings ? sync.rowCount * sync.dim : 0),
                                         maxNorm: clipNorm, sharded: owned, shardedSquares: ownedSquares)
        }
        optimizer.update(parameters: parameters.buffer,
                         gradients: UnsafeBufferPointer(start: gradients.pointer, count: parameterCount))
        if hasEmbeddings {
            optimizer.updateRows(embeddings: storage.buffer,
                                 rows: UnsafeBufferPointer(start: sync.rows, count: sync.rowCount),
                                 gradients: UnsafeBufferPointer(start: sync.values.pointer, count: sync.rowCount * sync.dim))
        }
        if let sharding {
            optimizer.updateRows(embeddings: storage.buffer,
                                 rows: UnsafeBufferPointer(start: sharding.ownedRows, count: sharding.ownedCount),
                                 gradients: UnsafeBufferPointer(owned))
        }
        phases.optimizer += MonotonicClock.nanoseconds() - t0
        return norm
    }
}
