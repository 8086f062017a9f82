import CIntrinsics
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Optimizers with Keras 3's update rules, over one flat dense parameter buffer and one flat
// embedding table. Every update is one plain loop over unsafe pointers (vectorizable, no
// allocation); the optimizer state uses the same flat layout as the buffer it belongs to.

/// The optimization algorithm.
public enum OptimizerKind: String, CaseIterable, Sendable {
    /// Plain stochastic gradient descent: `p -= lr * g`.
    case sgd
    /// SGD with (optionally Nesterov) momentum: `v = mu * v - lr * g; p += v`.
    case momentum
    /// Adam (Kingma & Ba), with Keras's placement of epsilon outside the bias correction.
    case adam
    /// AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, `p -= lr * wd * p` before
    /// the Adam step (Keras's and PyTorch's order).
    case adamw
    /// Adagrad: `acc += g^2; p -= lr * g / sqrt(acc + eps)`.
    case adagrad
    /// Adagrad on the dense parameters, and row-wise Adagrad on embedding rows (DLRM, TorchRec's
    /// `ROWWISE_ADAGRAD`): one accumulator per row, `acc_r += mean_j(g_rj^2)`,
    /// `p_r -= lr * g_r / sqrt(acc_r + eps)`. `dim` times less state than element-wise Adagrad.
    case rowwiseAdagrad = "rowwise-adagrad"
}

/// Hyperparameters of an optimizer. Defaults are Keras 3's.
///
/// Only the fields the kind uses matter: `momentum` and `nesterov` for `.momentum`;
/// `beta1`, `beta2`, `epsilon` for `.adam` and `.adamw`; `initialAccumulator` and `epsilon` for
/// `.adagrad` and `.rowwiseAdagrad`. `weightDecay` applies to every kind (see `Optimizer`), the
/// schedule fields to every kind (see `LearningRateSchedule`); `clipNorm`, `accumulate` and
/// `scaleByWorldSize` are applied by the trainer around the update.
/// Values are not validated here; `Optimizer.init` checks them with preconditions, so a CLI
/// should validate user-supplied values first.
public struct OptimizerConfig: Sendable, Equatable {
    /// The algorithm.
    public var kind: OptimizerKind
    /// The step size `lr`.
    public var learningRate: Float
    /// The momentum coefficient `mu` (`.momentum`), in [0, 1).
    public var momentum: Float = 0.9
    /// Use Nesterov momentum: `p += mu * v - lr * g` after updating `v` (`.momentum`).
    public var nesterov: Bool = false
    /// Decay of Adam's first-moment estimate, in [0, 1).
    public var beta1: Float = 0.9
    /// Decay of Adam's second-moment estimate, in [0, 1).
    public var beta2: Float = 0.999
    /// The small constant that keeps Adam's and Adagrad's denominators away from zero.
    public var epsilon: Float = 1e-7
    /// The starting value of every Adagrad accumulator.
    public var initialAccumulator: Float = 0.1
    /// Weight decay `wd`: L2 regularization `g += wd * p` (coupled, in the gradient) for every
    /// kind but `.adamw`, whose decay is decoupled, `p -= lr * wd * p`. 0: off.
    public var weightDecay: Float = 0
    /// How the learning rate changes over the run (default: constant).
    public var schedule = LearningRateSchedule()
    /// Clip the global gradient norm (dense and embedding rows together) to this; nil: off.
    public var clipNorm: Float?
    /// Micro-batches per optimizer step (gradient accumulation); 1: off.
    public var accumulate: Int = 1
    /// Multiply the learning rate by the number of ranks (the linear scaling rule).
    public var scaleByWorldSize: Bool = false

    /// Creates a configuration with Keras's defaults; `learningRate == nil` takes the kind's
    /// default (`defaultLearningRate(for:)`).
    public init(kind: OptimizerKind, learningRate: Float? = nil) {
        self.kind = kind
        self.learningRate = learningRate ?? Self.defaultLearningRate(for: kind)
    }

    /// Keras 3's default learning rate: 0.01 for SGD (with or without momentum), 0.001 for Adam,
    /// AdamW and Adagrad (row-wise too).
    public static func defaultLearningRate(for kind: OptimizerKind) -> Float {
        switch kind {
        case .sgd, .momentum: return 0.01
        case .adam, .adamw, .adagrad, .rowwiseAdagrad: return 0.001
        }
    }

    /// Keras 3's default weight decay: 0.004 for AdamW, 0 (off) for the others.
    public static func defaultWeightDecay(for kind: OptimizerKind) -> Float {
        kind == .adamw ? 0.004 : 0
    }

    /// Whether the kind's weight decay is decoupled from the gradient (AdamW) rather than an L2
    /// term added to it.
    public var decoupledWeightDecay: Bool { kind == .adamw }
}

/// A checkpointed optimizer state that does not fit the optimizer it is loaded into.
public enum OptimizerStateError: Error, Equatable, CustomStringConvertible {
    /// The step count is negative.
    case invalidStep(Int)
    /// A buffer this optimizer needs is absent (the checkpoint was written by another kind).
    case missingBuffer(name: String)
    /// A buffer this optimizer does not have, or one given twice.
    case unexpectedBuffer(name: String)
    /// A buffer has the wrong number of elements (the model shape differs from the checkpoint's).
    case sizeMismatch(name: String, expected: Int, actual: Int)

    public var description: String {
        switch self {
        case .invalidStep(let step):
            return "optimizer state has invalid step count \(step); the checkpoint is corrupt"
        case .missingBuffer(let name):
            return "optimizer state lacks buffer '\(name)'; was the checkpoint written with another --optimizer?"
        case .unexpectedBuffer(let name):
            return "optimizer state has unexpected or repeated buffer '\(name)'; was the checkpoint written with another --optimizer?"
        case .sizeMismatch(let name, let expected, let actual):
            return "optimizer buffer '\(name)' has \(actual) values, expected \(expected); was the checkpoint written for another model shape?"
        }
    }
}

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
    public private(set) var step: Int = 0
    /// The learning rate of the next update (set it from a schedule before each step).
    public var learningRate: Float

    /// Elements in the dense parameter buffer.
    public let parameterCount: Int
    /// Rows in the embedding table.
    public let embeddingRows: Int
    /// Elements per embedding row.
    public let embeddingDim: Int

    // State slots: `a` is velocity / m / accumulator, `b` is v (Adam only). Empty when unused.
    private let denseA: UnsafeMutableBufferPointer<Float>
    private let denseB: UnsafeMutableBufferPointer<Float>
    private let embeddingA: UnsafeMutableBufferPointer<Float>
    private let embeddingB: UnsafeMutableBufferPointer<Float>

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
    public func updateRows(embeddings: UnsafeMutableBufferPointer<Float>, rows: UnsafeBufferPointer<Int32>,
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
                let next = Int(rows[i + ahead]) * dim
                if next >= 0 && next < limit * dim {
                    rd_prefetch_write(p + next)
                    if let a { rd_prefetch_write(a + (rowwise ? next / dim : next)) }
                    if let b { rd_prefetch_write(b + next) }
                }
            }
            let r = Int(rows[i])
            precondition(r >= 0 && r < limit, "Optimizer.updateRows: row \(r) out of range 0..<\(limit)")
            let offset = r * dim
            if rowwise {
                Self.rowwiseAdagrad(p + offset, g + i * dim, a! + r, dim, lr: s.lr, eps: s.eps, l2: s.l2)
            } else {
                apply(s, p + offset, g + i * dim, a.map { $0 + offset }, b.map { $0 + offset }, count: dim)
            }
        }
    }

    /// The state for checkpointing, in a fixed order (dense buffers, then `embedding.` ones); see
    /// the type's documentation for the names. Save `step` alongside.
    public func stateBuffers() -> [(name: String, values: [Float])] {
        let names = Self.slotNames(for: config.kind)
        var result: [(name: String, values: [Float])] = []
        for (name, buffer) in zip(names, [denseA, denseB]) { result.append((name, Array(buffer))) }
        for (name, buffer) in zip(names, [embeddingA, embeddingB]) { result.append(("embedding." + name, Array(buffer))) }
        return result
    }

    /// Restores state saved by `stateBuffers()` and `step`. Buffers may come in any order but must
    /// be exactly the set this optimizer has, each with the right size; otherwise this throws and
    /// leaves the optimizer unchanged.
    public func loadState(step: Int, buffers: [(name: String, values: [Float])]) throws(OptimizerStateError) {
        guard step >= 0 else { throw .invalidStep(step) }
        let names = Self.slotNames(for: config.kind)
        var targets: [String: UnsafeMutableBufferPointer<Float>] = [:]
        for (name, buffer) in zip(names, [denseA, denseB]) { targets[name] = buffer }
        for (name, buffer) in zip(names, [embeddingA, embeddingB]) { targets["embedding." + name] = buffer }

        var seen = Set<String>()
        for buffer in buffers {
            guard let target = targets[buffer.name], seen.insert(buffer.name).inserted else {
                throw .unexpectedBuffer(name: buffer.name)
            }
            guard buffer.values.count == target.count else {
                throw .sizeMismatch(name: buffer.name, expected: target.count, actual: buffer.values.count)
            }
        }
        if let missing = targets.keys.sorted().first(where: { !seen.contains($0) }) {
            throw .missingBuffer(name: missing)
        }
        // An empty slot (the embedding state of a model without tables) has no base address to copy into.
        for buffer in buffers where !buffer.values.isEmpty {
            let target = targets[buffer.name]!
            _ = target.update(fromContentsOf: buffer.values)
        }
        self.step = step
    }

    /// The state buffers in place, by name (as `stateBuffers()` names them), for code that moves
    /// them without copying whole (sharded checkpoints): the dense ones, then the embedding ones,
    /// each with its floats per embedding row (`embeddingDim`, or 1 for row-wise Adagrad).
    public var stateSlots: (dense: [(name: String, buffer: UnsafeMutableBufferPointer<Float>)],
                            embedding: [(name: String, buffer: UnsafeMutableBufferPointer<Float>, perRow: Int)]) {
        let names = Self.slotNames(for: config.kind)
        let perRow = config.kind == .rowwiseAdagrad ? 1 : embeddingDim
        return (zip(names, [denseA, denseB]).map { ($0, $1) },
                zip(names, [embeddingA, embeddingB]).map { ("embedding." + $0, $1, perRow) })
    }

    /// Sets the step count (resuming with state put in place through `stateSlots`).
    public func restoreStep(_ step: Int) throws(OptimizerStateError) {
        guard step >= 0 else { throw .invalidStep(step) }
        self.step = step
    }

    // MARK: - Kernels

    /// Per-step scalars, computed once per call (powers in Double).
    private struct Scalars {
        var lr: Float
        var mu: Float
        var b1: Float, oneMinusB1: Float
        var b2: Float, oneMinusB2: Float
        var alpha: Float
        var eps: Float
        /// Coupled L2 coefficient (`g += l2 * p`), and the decoupled decay `lr * wd` (AdamW).
        var l2: Float
        var decay: Float
    }

    private func scalars() -> Scalars {
        let c = config
        let lr = learningRate
        var alpha = lr
        if c.kind == .adam || c.kind == .adamw {
            let t = Double(step)
            let b1 = Double(c.beta1), b2 = Double(c.beta2)
            alpha = Float(Double(lr) * (1 - pow(b2, t)).squareRoot() / (1 - pow(b1, t)))
        }
        let decoupled = c.decoupledWeightDecay
        return Scalars(lr: lr, mu: c.momentum,
                       b1: c.beta1, oneMinusB1: Float(1 - Double(c.beta1)),
                       b2: c.beta2, oneMinusB2: Float(1 - Double(c.beta2)),
                       alpha: alpha, eps: c.epsilon,
                       l2: decoupled ? 0 : c.weightDecay,
                       decay: decoupled ? Float(Double(lr) * Double(c.weightDecay)) : 0)
    }

    /// Applies one step to `n` contiguous elements: `p` parameters, `g` gradients, `a`/`b` the
    /// matching state slots (nil when the kind has none).
    @inline(__always)
    private func apply(_ s: Scalars, _ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                       _ a: UnsafeMutablePointer<Float>?, _ b: UnsafeMutablePointer<Float>?, count n: Int) {
        // Without weight decay the original kernels run, bit for bit as before it existed.
        let decayed = s.l2 != 0
        switch config.kind {
        case .sgd:
            if decayed { Self.sgd(p, g, n, lr: s.lr, l2: s.l2) } else { Self.sgd(p, g, n, lr: s.lr) }
        case .momentum:
            if config.nesterov {
                if decayed { Self.nesterov(p, g, a!, n, lr: s.lr, mu: s.mu, l2: s.l2) } else { Self.nesterov(p, g, a!, n, lr: s.lr, mu: s.mu) }
            } else {
                if decayed { Self.momentum(p, g, a!, n, lr: s.lr, mu: s.mu, l2: s.l2) } else { Self.momentum(p, g, a!, n, lr: s.lr, mu: s.mu) }
            }
        case .adam, .adamw:
            if decayed || s.decay != 0 { Self.adam(p, g, a!, b!, n, s, l2: s.l2, decay: s.decay) } else { Self.adam(p, g, a!, b!, n, s) }
        case .adagrad, .rowwiseAdagrad:
            if decayed { Self.adagrad(p, g, a!, n, lr: s.lr, eps: s.eps, l2: s.l2) } else { Self.adagrad(p, g, a!, n, lr: s.lr, eps: s.eps) }
        }
    }

    // p: (n), g: (n)
    private static func sgd(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ n: Int, lr: Float) {
        for i in 0..<n {
            p[i] -= lr * g[i]
        }
    }

    // p, g, velocity: (n)
    private static func momentum(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                 _ velocity: UnsafeMutablePointer<Float>, _ n: Int, lr: Float, mu: Float) {
        for i in 0..<n {
            let v = mu * velocity[i] - lr * g[i]
            velocity[i] = v
            p[i] += v
        }
    }

    // p, g, velocity: (n)
    private static func nesterov(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                 _ velocity: UnsafeMutablePointer<Float>, _ n: Int, lr: Float, mu: Float) {
        for i in 0..<n {
            let step = lr * g[i]
            let v = mu * velocity[i] - step
            velocity[i] = v
            p[i] += mu * v - step
        }
    }

    // p, g, m, v: (n)
    private static func adam(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                             _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>,
                             _ n: Int, _ s: Scalars) {
        let b1 = s.b1, c1 = s.oneMinusB1, b2 = s.b2, c2 = s.oneMinusB2, alpha = s.alpha, eps = s.eps
        for i in 0..<n {
            let gi = g[i]
            let mi = b1 * m[i] + c1 * gi
            let vi = b2 * v[i] + c2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            p[i] -= alpha * mi / (vi.squareRoot() + eps)
        }
    }

    // p, g, accumulator: (n)
    private static func adagrad(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                _ accumulator: UnsafeMutablePointer<Float>, _ n: Int, lr: Float, eps: Float) {
        for i in 0..<n {
            let gi = g[i]
            let acc = accumulator[i] + gi * gi
            accumulator[i] = acc
            p[i] -= lr * gi / (acc + eps).squareRoot()
        }
    }

    // The same kernels with weight decay: `l2` adds `l2 * p` to the gradient, `decay` (AdamW)
    // shrinks `p` by `decay * p` before the step.

    // p: (n), g: (n)
    private static func sgd(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ n: Int, lr: Float, l2: Float) {
        for i in 0..<n {
            let gi = g[i] + l2 * p[i]
            p[i] -= lr * gi
        }
    }

    // p, g, velocity: (n)
    private static func momentum(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                 _ velocity: UnsafeMutablePointer<Float>, _ n: Int, lr: Float, mu: Float, l2: Float) {
        for i in 0..<n {
            let gi = g[i] + l2 * p[i]
            let v = mu * velocity[i] - lr * gi
            velocity[i] = v
            p[i] += v
        }
    }

    // p, g, velocity: (n)
    private static func nesterov(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                 _ velocity: UnsafeMutablePointer<Float>, _ n: Int, lr: Float, mu: Float, l2: Float) {
        for i in 0..<n {
            let step = lr * (g[i] + l2 * p[i])
            let v = mu * velocity[i] - step
            velocity[i] = v
            p[i] += mu * v - step
        }
    }

    // p, g, m, v: (n)
    private static func adam(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                             _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>,
                             _ n: Int, _ s: Scalars, l2: Float, decay: Float) {
        let b1 = s.b1, c1 = s.oneMinusB1, b2 = s.b2, c2 = s.oneMinusB2, alpha = s.alpha, eps = s.eps
        for i in 0..<n {
            let pi = p[i]
            let gi = g[i] + l2 * pi
            let mi = b1 * m[i] + c1 * gi
            let vi = b2 * v[i] + c2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            p[i] = (pi - decay * pi) - alpha * mi / (vi.squareRoot() + eps)
        }
    }

    // p, g, accumulator: (n)
    private static func adagrad(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                _ accumulator: UnsafeMutablePointer<Float>, _ n: Int, lr: Float, eps: Float, l2: Float) {
        for i in 0..<n {
            let gi = g[i] + l2 * p[i]
            let acc = accumulator[i] + gi * gi
            accumulator[i] = acc
            p[i] -= lr * gi / (acc + eps).squareRoot()
        }
    }

    /// Row-wise Adagrad on one row: `acc += mean_j(g_j^2)`, `p -= lr * g / sqrt(acc + eps)`.
    // p, g: (dim); accumulator: the row's one value
    @inline(__always)
    private static func rowwiseAdagrad(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                       _ accumulator: UnsafeMutablePointer<Float>, _ dim: Int,
                                       lr: Float, eps: Float, l2: Float) {
        var squares: Float = 0
        if l2 == 0 {
            for j in 0..<dim { squares += g[j] * g[j] }
        } else {
            for j in 0..<dim {
                let gj = g[j] + l2 * p[j]
                squares += gj * gj
            }
        }
        let acc = accumulator.pointee + squares / Float(dim)
        accumulator.pointee = acc
        let scale = lr / (acc + eps).squareRoot()
        if l2 == 0 {
            for j in 0..<dim { p[j] -= scale * g[j] }
        } else {
            for j in 0..<dim { p[j] -= scale * (g[j] + l2 * p[j]) }
        }
    }

    // MARK: - Helpers

    /// State slot names per kind, in slot order (a, b).
    private static func slotNames(for kind: OptimizerKind) -> [String] {
        switch kind {
        case .sgd: return []
        case .momentum: return ["velocity"]
        case .adam, .adamw: return ["m", "v"]
        case .adagrad, .rowwiseAdagrad: return ["accumulator"]
        }
    }

    private static func allocate(_ count: Int, value: Float) -> UnsafeMutableBufferPointer<Float> {
        guard count > 0 else { return UnsafeMutableBufferPointer(start: nil, count: 0) }
        let raw = LargeAllocation.allocate(bytes: count * 4)
        let start = raw.initializeMemory(as: Float.self, repeating: value, count: count)
        return UnsafeMutableBufferPointer(start: start, count: count)
    }

    private static func areDistinct(_ rows: UnsafeBufferPointer<Int32>) -> Bool {
        Set(rows).count == rows.count
    }
}
