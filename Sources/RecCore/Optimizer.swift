import CIntrinsics

// Optimizers with Keras 3's update rules, over one flat dense parameter buffer and one flat
// embedding table. The optimizer state uses the same flat layout as the buffer it belongs to.

/// Optimizer state for one flat parameter buffer plus one flat embedding buffer (rows x dim).
///
/// The dense buffer is updated in full every step by `update(parameters:gradients:)`. The
/// embedding table is updated sparsely by `updateRows(embeddings:rows:gradients:)`, which touches
/// only the listed rows *and only their optimizer state* ("lazy" updates, as in TensorFlow's
/// LazyAdam and PyTorch's SparseAdam):
///
/// - `.sgd` and `.adagrad`: identical to a dense update with zero gradient in the unlisted rows,
///   because a zero gradient changes neither the parameter nor the accumulator.
/// - `.momentum`: an unlisted row's velocity is neither decayed nor applied, whereas a dense
///   update would keep moving the row by its decaying velocity.
/// - `.adam` / `.adamw` ("lazy Adam"): an unlisted row's `m` and `v` stay frozen (neither decayed
///   nor applied) until a step lists the row again, which then decays them once, not once per
///   missed step; a listed row uses the global step `t` for bias correction, so a rarely seen
///   row gets a slightly larger first step than dense Adam would give it.
/// - `.rowwiseAdagrad`: one accumulator per row; like Adagrad, an unlisted row is exactly where a
///   zero gradient would leave it.
///
/// **Weight decay** (`config.weightDecay`) is lazy on embedding rows too: a row is decayed only
/// in the steps that list it (once per such step), as TensorFlow's embedding L2 and DLRM do;
/// decaying the whole table every step would cost a pass over all of it and pull rows the data
/// never reaches towards zero. On dense parameters (all of them, biases included) it acts every
/// step. `.adamw` decays decoupled, `p -= lr * wd * p` with the step's (scheduled) learning rate,
/// before its Adam step; the other kinds add `wd * p` to the gradient (L2 regularization of
/// `wd / 2 * |p|^2`), so momentum, Adam's moments and Adagrad's accumulators see it.
///
/// State buffers (all allocated once, in `init`, only those the kind needs), with the names used
/// by `stateBuffers()` / `loadState(step:buffers:)`:
///
/// | kind               | dense                | embedding                              |
/// |--------------------|----------------------|----------------------------------------|
/// | `.sgd`             | none                 | none                                   |
/// | `.momentum`        | `velocity`           | `embedding.velocity` (rows x dim)      |
/// | `.adam`, `.adamw`  | `m`, `v`             | `embedding.m`, `embedding.v` (rows x dim) |
/// | `.adagrad`         | `accumulator`        | `embedding.accumulator` (rows x dim)   |
/// | `.rowwiseAdagrad`  | `accumulator`        | `embedding.accumulator` (rows)         |
///
/// Velocities and moments start at 0, Adagrad accumulators at `config.initialAccumulator`.
/// The learning rate used by the next update is `learningRate`, which a schedule may change
/// between steps; it starts at `config.learningRate`.
/// Not thread-safe: one optimizer belongs to one replica (rank).
public final class Optimizer {
    /// The hyperparameters.
    public let config: OptimizerConfig
    /// The number of completed steps, i.e. calls to `update(parameters:gradients:)` (Adam's `t`).
    public internal(set) var step: Int = 0
    /// The learning rate of the next update (set it from a schedule before each step).
    public var learningRate: Float

    /// Elements in the dense parameter buffer.
    public let parameterCount: Int
    /// Rows in the embedding table.
    public let embeddingRows: Int
    /// Elements per embedding row.
    public let embeddingDim: Int

    // State slots: `a` is velocity / m / accumulator, `b` is v (Adam only). Empty when unused.
    // Internal, not private: OptimizerState saves and restores them.
    let denseA: UnsafeMutableBufferPointer<Float>
    let denseB: UnsafeMutableBufferPointer<Float>
    let embeddingA: UnsafeMutableBufferPointer<Float>
    let embeddingB: UnsafeMutableBufferPointer<Float>

    /// Creates the optimizer and allocates (and initializes) its state for `parameterCount`
    /// dense parameters and an `embeddingRows x embeddingDim` embedding table.
    public init(config: OptimizerConfig, parameterCount: Int, embeddingRows: Int, embeddingDim: Int) {
        precondition(parameterCount >= 0 && embeddingRows >= 0 && embeddingDim >= 0,
                     "Optimizer: sizes must be non-negative")
        precondition(config.learningRate.isFinite && config.learningRate >= 0,
                     "Optimizer: learningRate must be finite and >= 0")
        precondition(config.momentum >= 0 && config.momentum < 1, "Optimizer: momentum must be in [0, 1)")
        precondition(config.beta1 >= 0 && config.beta1 < 1, "Optimizer: beta1 must be in [0, 1)")
        precondition(config.beta2 >= 0 && config.beta2 < 1, "Optimizer: beta2 must be in [0, 1)")
        precondition(config.epsilon.isFinite && config.epsilon >= 0, "Optimizer: epsilon must be finite and >= 0")
        precondition(config.initialAccumulator.isFinite && config.initialAccumulator >= 0,
                     "Optimizer: initialAccumulator must be finite and >= 0")
        precondition(config.weightDecay.isFinite && config.weightDecay >= 0, "Optimizer: weightDecay must be finite and >= 0")
        let (product, overflow) = embeddingRows.multipliedReportingOverflow(by: embeddingDim)
        precondition(!overflow, "Optimizer: embedding table too large")

        self.config = config
        self.learningRate = config.learningRate
        self.parameterCount = parameterCount
        self.embeddingRows = embeddingRows
        self.embeddingDim = embeddingDim

        let slots = Self.slotNames(for: config.kind).count
        let isAdagrad = config.kind == .adagrad || config.kind == .rowwiseAdagrad
        let initialA: Float = isAdagrad ? config.initialAccumulator : 0
        denseA = Self.allocate(slots >= 1 ? parameterCount : 0, value: initialA)
        denseB = Self.allocate(slots >= 2 ? parameterCount : 0, value: 0)
        embeddingA = Self.allocate(slots >= 1 ? (config.kind == .rowwiseAdagrad ? embeddingRows : product) : 0, value: initialA)
        embeddingB = Self.allocate(slots >= 2 ? product : 0, value: 0)
    }

    deinit {
        for buffer in [denseA, denseB, embeddingA, embeddingB] where buffer.baseAddress != nil {
            LargeAllocation.deallocate(UnsafeMutableRawPointer(buffer.baseAddress!), bytes: buffer.count * 4)
        }
    }

    /// Dense update of every parameter: `p -= f(g)` elementwise. Increments `step` first, so
    /// Adam's bias correction uses `t = step` after the increment (1 on the first call).
    ///
    /// - Parameters:
    ///   - parameters: `(parameterCount)`, updated in place.
    ///   - gradients: `(parameterCount)`, already averaged over replicas.
    public func update(parameters: UnsafeMutableBufferPointer<Float>, gradients: UnsafeBufferPointer<Float>) {
        precondition(parameters.count == parameterCount && gradients.count == parameterCount,
                     "Optimizer.update: expected \(parameterCount) parameters and gradients, got \(parameters.count) and \(gradients.count)")
        step += 1
        guard parameterCount > 0 else { return }
        let s = scalars()
        apply(s, parameters.baseAddress!, gradients.baseAddress!,
              denseA.baseAddress, denseB.baseAddress, count: parameterCount)
    }

    /// Sparse ("lazy") update of embedding rows only. Uses the current `step` as Adam's `t`, so
    /// call it after `update(parameters:gradients:)` in the same step. Rows not listed keep their
    /// values and their optimizer state bit for bit (see the type's documentation for what this
    /// means for each kind).
    ///
    /// - Parameters:
    ///   - embeddings: `(embeddingRows * embeddingDim)`; row `r` occupies `[r*dim, (r+1)*dim)`.
    ///   - rows: `(k)` distinct row indices in `0..<embeddingRows`, in any order.
    ///   - gradients: `(k, embeddingDim)`; row `i` is the gradient of row `rows[i]`.
    public func updateRows(embeddings: UnsafeMutableBufferPointer<Float>, rows: UnsafeBufferPointer<Int>,
                           gradients: UnsafeBufferPointer<Float>) {
        let dim = embeddingDim
        precondition(embeddings.count == embeddingRows * dim,
                     "Optimizer.updateRows: expected \(embeddingRows * dim) embedding values, got \(embeddings.count)")
        precondition(gradients.count == rows.count * dim,
                     "Optimizer.updateRows: expected \(rows.count) x \(dim) gradients, got \(gradients.count)")
        precondition(step > 0, "Optimizer.updateRows: call update(parameters:gradients:) first in each step")
        assert(Self.areDistinct(rows), "Optimizer.updateRows: row indices must be distinct")
        guard rows.count > 0, dim > 0 else { return }
        let s = scalars()
        let p = embeddings.baseAddress!, g = gradients.baseAddress!
        let a = embeddingA.baseAddress, b = embeddingB.baseAddress
        let limit = embeddingRows
        let rowwise = config.kind == .rowwiseAdagrad
        // Rows are scattered over tables far larger than the caches: request each row's parameter
        // and state lines `ahead` rows before updating it.
        let ahead = 8, n = rows.count
        for i in 0..<n {
            if i + ahead < n {
                let next = rows[i + ahead] * dim
                if next >= 0 && next < limit * dim {
                    rd_prefetch_write(p + next)
                    if let a { rd_prefetch_write(a + (rowwise ? next / dim : next)) }
                    if let b { rd_prefetch_write(b + next) }
                }
            }
            let r = rows[i]
            precondition(r >= 0 && r < limit, "Optimizer.updateRows: row \(r) out of range 0..<\(limit)")
            let offset = r * dim
            if rowwise {
                Self.rowwiseAdagrad(p + offset, g + i * dim, a! + r, dim, lr: s.lr, eps: s.eps, l2: s.l2)
            } else {
                apply(s, p + offset, g + i * dim, a.map { $0 + offset }, b.map { $0 + offset }, count: dim)
            }
        }
    }

    private static func areDistinct(_ rows: UnsafeBufferPointer<Int>) -> Bool {
        Set(rows).count == rows.count
    }
}
