import RecCore

/// Everything a training run needs to know, gathered and validated by the CLI.
public struct TrainingConfig: Sendable, Codable, Equatable {
    /// Criteo-format TSV with the training rows (and the evaluation rows, unless `evalPath`).
    public var dataPath: String
    /// A separate evaluation file; when nil, the last `evalFraction` of `dataPath` is held out.
    public var evalPath: String?
    public var evalFraction: Double = 0.1
    public var model: ModelConfig
    public var optimizer: OptimizerConfig
    public var loss: Loss = .bce
    /// Examples per rank per step; the global batch is `batchSize × worldSize`.
    public var batchSize: Int = 128
    public var epochs: Int = 1
    /// When set, the run takes exactly this many steps (cycling through epochs) instead of `epochs`.
    public var steps: Int?
    public var seed: UInt64 = 42
    /// Evaluate every this many steps (0: only at the end).
    public var evalEvery: Int = 0
    /// Print a progress line every this many steps (0: automatic, about 20 lines a run).
    public var logEvery: Int = 0
    /// Examples per forward pass during evaluation.
    public var evalBatchSize: Int = 1024
    public var metricsPath: String?
    public var checkpointDir: String?
    /// Extra checks: non-finite detection, a finite-difference check, per-step timing and,
    /// with several ranks, replica checksums every `debugCheckEvery` steps.
    public var debug: Bool = false
    public var debugCheckEvery: Int = 10

    public init(dataPath: String, model: ModelConfig, optimizer: OptimizerConfig) {
        self.dataPath = dataPath
        self.model = model
        self.optimizer = optimizer
    }
}

extension OptimizerConfig: Codable {
    enum CodingKeys: String, CodingKey {
        case kind, learningRate, momentum, nesterov, beta1, beta2, epsilon, initialAccumulator
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
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind.rawValue, forKey: .kind)
        try c.encode(learningRate, forKey: .learningRate)
        try c.encode(momentum, forKey: .momentum)
        try c.encode(nesterov, forKey: .nesterov)
        try c.encode(beta1, forKey: .beta1)
        try c.encode(beta2, forKey: .beta2)
        try c.encode(epsilon, forKey: .epsilon)
        try c.encode(initialAccumulator, forKey: .initialAccumulator)
    }
}

/// Errors that end a training run, each with what to do about it.
public enum TrainingError: Error, CustomStringConvertible {
    /// Another rank could not load its shard; that rank printed the reason.
    case peerFailed(ranks: [Int], stage: String)
    /// The loss or a gradient became NaN or infinite.
    case nonFinite(step: Int, what: String)
    /// Under --debug, the ranks' parameters stopped being identical.
    case replicasDiverged(step: Int, minimum: Double, maximum: Double)
    /// Under --debug, the analytic gradient disagrees with finite differences.
    case gradientCheckFailed(details: String)
    /// The data cannot make a single step.
    case notEnoughData(String)
    /// A checkpoint could not be written or read.
    case checkpoint(path: String, message: String)

    public var description: String {
        switch self {
        case let .peerFailed(ranks, stage):
            return "rank(s) \(ranks.map(String.init).joined(separator: ", ")) failed during \(stage); "
                + "see their error above. All ranks stopped together."
        case let .nonFinite(step, what):
            return "non-finite value at step \(step) in \(what). Lower --lr, check the data for extreme "
                + "values, or try --optimizer adam."
        case let .replicasDiverged(step, lo, hi):
            return "replicas diverged at step \(step): parameter checksums range over [\(lo), \(hi)]. "
                + "The ranks are no longer training the same model; check that every rank runs the same binary."
        case let .gradientCheckFailed(details):
            return "finite-difference gradient check failed: \(details)"
        case let .notEnoughData(message):
            return message
        case let .checkpoint(path, message):
            return "checkpoint '\(path)': \(message)"
        }
    }
}
