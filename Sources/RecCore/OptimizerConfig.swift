// The optimizers' names and hyperparameters (Keras 3's defaults) and their JSON form in checkpoints;
// the update rules are in Optimizer and OptimizerKernels, the checkpointed state in OptimizerState.

/// The optimization algorithm.
public enum OptimizerKind: String, CaseIterable, Sendable, Codable {
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

// Encoded with the synthesized `encode(to:)`; decoded by hand, so that checkpoints written before
// the later fields existed still load.
extension OptimizerConfig: Codable {
    enum CodingKeys: String, CodingKey {
        case kind, learningRate, momentum, nesterov, beta1, beta2, epsilon, initialAccumulator
        case weightDecay, schedule, clipNorm, accumulate, scaleByWorldSize
    }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(kind: try OptimizerKind(rawValue: c.decode(String.self, forKey: .kind)) ?? .sgd,
                  learningRate: try c.decode(Float.self, forKey: .learningRate))
        momentum = try c.decode(Float.self, forKey: .momentum)
        nesterov = try c.decode(Bool.self, forKey: .nesterov)
        beta1 = try c.decode(Float.self, forKey: .beta1)
        beta2 = try c.decode(Float.self, forKey: .beta2)
        epsilon = try c.decode(Float.self, forKey: .epsilon)
        initialAccumulator = try c.decode(Float.self, forKey: .initialAccumulator)
        // Absent from checkpoints written before these existed: their defaults are what ran then.
        weightDecay = try c.decodeIfPresent(Float.self, forKey: .weightDecay) ?? 0
        schedule = try c.decodeIfPresent(LearningRateSchedule.self, forKey: .schedule) ?? LearningRateSchedule()
        clipNorm = try c.decodeIfPresent(Float.self, forKey: .clipNorm)
        accumulate = try c.decodeIfPresent(Int.self, forKey: .accumulate) ?? 1
        scaleByWorldSize = try c.decodeIfPresent(Bool.self, forKey: .scaleByWorldSize) ?? false
    }
}
