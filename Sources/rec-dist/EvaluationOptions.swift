import ArgumentParser
import RecTrainer

/// `train`'s evaluation: how often, the metric that selects the best checkpoint and stops early,
/// and the ranking cut-off.
struct EvaluationOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Evaluate every this many steps (0: only at the end).")
    var evalEvery: Int = 0
    @Option(help: "Metric that selects the best checkpoint and drives early stopping: \(SelectionMetric.allCases.map(\.rawValue).joined(separator: ", ")) (logloss, rmse, mae: lower is better; hr, ndcg, recall at --k, and mrr need a leave-last-out evaluation split).")
    var selectMetric: SelectionMetric = .auc
    @Option(parsing: .unconditional, help: "Stop when --select-metric has not improved for this many evaluations in a row (needs --eval-every; default: never stop early).")
    var earlyStopPatience: Int?
    @Option(parsing: .unconditional, help: "With --early-stop-patience: an improvement must exceed this.")
    var earlyStopMinDelta: Double = 0
    @Option(parsing: .unconditional, help: "Leave-last-out evaluation: the cut-off K of HR@K, NDCG@K and Recall@K (HR@10 and NDCG@10 are always reported).")
    var k: Int = 10

    func validate() throws {
        if evalEvery < 0 { throw outOfRange("--eval-every", evalEvery, "use 0 (only at the end) or a positive step count") }
        if let earlyStopPatience {
            if earlyStopPatience < 1 { throw outOfRange("--early-stop-patience", earlyStopPatience, "use 1 or more evaluations") }
            if evalEvery == 0 { throw ValidationError("--early-stop-patience needs --eval-every N: with only the final evaluation there is nothing to compare.") }
        }
        if !(earlyStopMinDelta >= 0 && earlyStopMinDelta.isFinite) { throw outOfRange("--early-stop-min-delta", earlyStopMinDelta, "use 0 or a small positive value") }
        if k < 1 { throw outOfRange("--k", k, "use a positive cut-off, e.g. 10") }
    }
}
