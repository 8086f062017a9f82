/// When to evaluate: every `every` steps (0: never on the way) and after the last step.
struct EvaluationPolicy: Sendable, Equatable {
    var every: Int

    func isDue(step: Int, isLast: Bool) -> Bool { (every > 0 && step % every == 0) || isLast }
}

/// When to write a checkpoint, and which one is the best.
struct CheckpointPolicy: Sendable, Equatable {
    /// Every this many steps (0: off), and every this many seconds (0: off).
    var everySteps: Int
    var everySeconds: Double
    /// The metric that picks the best checkpoint.
    var metric: SelectionMetric

    /// Whether the timer asks for a checkpoint, `elapsed` seconds after the last one.
    func timerExpired(elapsed: Double) -> Bool { everySeconds > 0 && elapsed >= everySeconds }

    /// Whether the step ends with a checkpoint: on the step grid, on request (rank 0's timer, a
    /// stop signal), at the end, at a new best evaluation (with early stopping, so `best` is it)
    /// and when the run stops early.
    func isDue(step: Int, requested: Bool, isLast: Bool, newBest: Bool, stopping: Bool) -> Bool {
        (everySteps > 0 && step % everySteps == 0) || requested || isLast || newBest || stopping
    }

    /// Records `name` as the best checkpoint in `state` when `record` (this step's evaluation,
    /// if any) has a finite selection metric better than the best so far.
    func noteCandidate(_ name: String, record: EvaluationRecord?, in state: inout RunState) {
        guard let record, let v = metric.value(of: record), v.isFinite,
              state.bestMetric.map({ metric.isBetter(v, than: $0) }) ?? true else { return }
        state.bestMetric = v
        state.bestCheckpoint = name
    }
}

/// Early stopping: stop when the selection metric has not improved (by more than `minDelta`) for
/// `patience` evaluations in a row.
struct EarlyStopPolicy: Sendable, Equatable {
    var metric: SelectionMetric
    var patience: Int
    var minDelta: Double

    /// What one evaluation decided.
    struct Verdict: Sendable, Equatable {
        /// Patience ran out.
        var stop: Bool
        /// The evaluation beats the best checkpoint's metric (no min-delta there): the caller
        /// checkpoints it, so that `best` points to it.
        var improved: Bool
        /// The evaluation had no finite value of the metric (it counts as one without improvement).
        var missing: Bool
    }

    /// Judges `value` (the evaluation's selection metric, nil or non-finite when missing) and
    /// updates the counters in `state`.
    func judge(_ value: Double?, state: inout RunState) -> Verdict {
        var improved = false, missing = false
        if let v = value, v.isFinite {
            improved = state.bestMetric.map { metric.isBetter(v, than: $0) } ?? true
            if state.earlyStopBest.map({ metric.isBetter(v, than: $0, minDelta: minDelta) }) ?? true {
                state.earlyStopBest = v
                state.evaluationsSinceBest = 0
            } else {
                state.evaluationsSinceBest += 1
            }
        } else {
            state.evaluationsSinceBest += 1
            missing = true
        }
        return Verdict(stop: state.evaluationsSinceBest >= patience, improved: improved, missing: missing)
    }
}
