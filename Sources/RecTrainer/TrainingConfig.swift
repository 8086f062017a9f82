import Foundation
import RecCore
import RecData

/// Everything a training run needs to know, gathered and validated by the CLI.
public struct TrainingConfig: Sendable, Codable, Equatable {
    /// Criteo-format TSV with the training rows (and the evaluation rows, unless `evalPath`), or a
    /// prepared dataset directory (`rec-dist prepare`).
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
    /// Write TensorBoard event files into this directory (rank 0).
    public var tensorBoardDir: String?
    public var checkpointDir: String?
    /// Extra checks: non-finite detection, a finite-difference check, per-step timing and,
    /// with several ranks, replica checksums every `debugCheckEvery` steps.
    public var debug: Bool = false
    public var debugCheckEvery: Int = 10
    /// Write a checkpoint every this many steps (0: off) and/or every this many seconds (0: off),
    /// besides the one at the end.
    public var checkpointEvery: Int = 0
    public var checkpointEverySeconds: Double = 0
    /// How many recent checkpoints to keep (the best one is kept besides).
    public var keep: Int = 3
    /// The evaluation metric that picks the best checkpoint, and that early stopping watches.
    public var selectionMetric: SelectionMetric = .auc
    /// Stop after this many evaluations in a row without improving `selectionMetric` by more than
    /// `earlyStopMinDelta` (nil: never stop early).
    public var earlyStopPatience: Int?
    public var earlyStopMinDelta: Double?
    /// The cut-off K of the ranking metrics (HR@K, NDCG@K, Recall@K) of a leave-last-out
    /// evaluation; nil: 10. HR@10 and NDCG@10 are reported whatever K is.
    public var rankingK: Int?
    /// Resume from this checkpoint ("latest": the newest in `checkpointDir`).
    public var resume: String?
    /// Resume from the newest valid checkpoint in `checkpointDir` if there is one.
    public var autoResume: Bool = false
    /// Resuming on data other than the checkpoint's: keep the model, optimizer and step, and
    /// start the new data from its first row (epoch 1); nil or false: such a resume is refused.
    public var restartData: Bool?
    /// Skip (on every rank) a step whose loss or gradient is NaN or infinite instead of stopping.
    public var skipNonFinite: Bool = false
    /// Keep training when a checkpoint cannot be written (default: stop, the previous checkpoint intact).
    public var continueOnCheckpointFailure: Bool = false
    /// How a prepared dataset is read (shuffling, evaluation split, memory); nil: the defaults.
    public var preparedData: PreparedDataOptions?
    /// The schema hash of the prepared dataset the model was shaped by (its manifest's
    /// `schema_hash`), so `predict`, `recommend` and `explain` can refuse another dataset's rows.
    /// nil for TSV data (and checkpoints written before it was recorded).
    public var datasetSchemaHash: String?
    /// The dense gradient bucket size in bytes (see `GradientSync`); nil: 1 MiB. It changes
    /// when each bucket's allreduce starts, not the sums.
    public var bucketBytes: Int?
    /// Where the embedding tables live over the ranks (`--embedding-sharding`); nil: replicated.
    public var embeddingSharding: EmbeddingSharding?
    /// The memory each rank may use, in bytes (`--memory-per-rank`); nil: the memory available
    /// on the host when the run starts, divided by the ranks on it.
    public var memoryPerRank: Int?

    public init(dataPath: String, model: ModelConfig, optimizer: OptimizerConfig) {
        self.dataPath = dataPath
        self.model = model
        self.optimizer = optimizer
    }
}

/// Which evaluation metric selects the best checkpoint and drives early stopping. `hr`, `ndcg`
/// and `recall` are at `--k`; they and `mrr` need a leave-last-out evaluation split.
public enum SelectionMetric: String, CaseIterable, Sendable, Codable {
    case auc, logloss, accuracy, rmse, mae, hr, ndcg, recall, mrr

    /// Larger is better (auc, accuracy and the ranking metrics) or smaller is (logloss, rmse, mae).
    public var higherIsBetter: Bool {
        switch self {
        case .logloss, .rmse, .mae: return false
        case .auc, .accuracy, .hr, .ndcg, .recall, .mrr: return true
        }
    }

    /// Whether the metric needs a leave-last-out (grouped) evaluation.
    public var isRanking: Bool { [.hr, .ndcg, .recall, .mrr].contains(self) }

    /// Whether `a` is better than `b` by more than `minDelta`.
    public func isBetter(_ a: Double, than b: Double, minDelta: Double = 0) -> Bool {
        higherIsBetter ? a > b + minDelta : a < b - minDelta
    }

    public func value(of record: EvaluationRecord) -> Double? {
        switch self {
        case .auc: return record.auc
        case .logloss: return record.logloss
        case .accuracy: return record.accuracy
        case .rmse: return record.rmse
        case .mae: return record.mae
        case .hr: return record.hit_rate_at_k
        case .ndcg: return record.ndcg_at_k
        case .recall: return record.recall_at_k
        case .mrr: return record.mrr
        }
    }

    /// The name in logs: "auc", "HR@10".
    public func label(k: Int) -> String {
        switch self {
        case .hr: return "HR@\(k)"
        case .ndcg: return "NDCG@\(k)"
        case .recall: return "Recall@\(k)"
        case .mrr: return "MRR"
        default: return rawValue
        }
    }
}

/// Errors that end a training run, each with what to do about it.
public enum TrainingError: Error, CustomStringConvertible {
    /// Another rank could not load its shard; that rank printed the reason.
    case peerFailed(ranks: [Int], stage: String)
    /// The loss or a gradient became NaN or infinite.
    case nonFinite(step: Int, what: String, lastCheckpoint: String?)
    /// Under --debug, the ranks' parameters stopped being identical.
    case replicasDiverged(step: Int, minimum: Double, maximum: Double)
    /// Under --debug, the analytic gradient disagrees with finite differences.
    case gradientCheckFailed(details: String)
    /// The run was stopped by a signal (after writing a checkpoint when it could).
    case interrupted(signal: Int32, step: Int, checkpoint: String?)
    /// The data cannot make a single step.
    case notEnoughData(String)
    /// The model configuration (--model-config, or the flags) is unreadable or does not fit the
    /// data: a usage error, like a bad flag.
    case modelConfig(String)
    /// A checkpoint could not be written or read.
    case checkpoint(path: String, message: String)
    /// The checkpoint directory or checkpoint is not this run's to use as asked: another run
    /// holds the directory, or the checkpoint was trained on other data. A usage error.
    case checkpointConflict(path: String, message: String)
    /// The metrics log (--metrics-out) could not be created or written.
    case metricsLog(path: String, message: String)
    /// The TensorBoard event file (--tensorboard) could not be created or written.
    case tensorBoard(path: String, message: String)

    public var description: String {
        switch self {
        case let .peerFailed(ranks, stage):
            return "rank(s) \(ranks.map(String.init).joined(separator: ", ")) failed during \(stage); "
                + "see their error above. All ranks stopped together."
        case let .nonFinite(step, what, lastCheckpoint):
            return "non-finite value at step \(step) in \(what). "
                + (lastCheckpoint.map { "The last good checkpoint is \($0). " } ?? "No checkpoint was written before it. ")
                + "Lower --lr, check the data for extreme values, or pass --skip-nonfinite to skip such steps."
        case let .replicasDiverged(step, lo, hi):
            return "replicas diverged at step \(step): parameter checksums range over [\(lo), \(hi)]. "
                + "The ranks are no longer training the same model; check that every rank runs the same binary."
        case let .gradientCheckFailed(details):
            return "finite-difference gradient check failed: \(details)"
        case let .interrupted(signal, step, checkpoint):
            let name = StopSignal.name(signal)
            if let checkpoint {
                return "stopped by \(name) after step \(step); checkpoint written to \(checkpoint). Continue with --auto-resume (or --resume \(checkpoint))."
            }
            return "stopped by \(name) after step \(step); nothing was saved (no --checkpoint-dir)."
        case let .notEnoughData(message), let .modelConfig(message):
            return message
        case let .checkpoint(path, message), let .checkpointConflict(path, message):
            return "checkpoint '\(path)': \(message)"
        case let .metricsLog(path, message):
            return "metrics log '\(path)': \(message)"
        case let .tensorBoard(path, message):
            return "TensorBoard event file '\(path)': \(message)"
        }
    }
}
