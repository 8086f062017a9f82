import Foundation

/// What the loop keeps besides the run state, for its reports and for the identity its
/// checkpoints carry (lineage, data).
struct RunBooks {
    /// The latest evaluation (rank 0), and the step-time phases at it.
    var lastRecord: EvaluationRecord?
    var phasesAtEvaluation = StepPhases()
    /// The latest checkpoint written, the step it was written at, and when (for --checkpoint-every-seconds).
    var lastCheckpoint: String?
    var checkpointedStep = -1
    var lastCheckpointTime = Date()
    /// Whether the ranks share the checkpoint directory (decided at the first checkpoint of a
    /// run with sharded tables).
    var sharedCheckpointDirectory: Bool?
    /// Steps skipped as non-finite (--skip-nonfinite).
    var skippedSteps = 0
    /// The signal that stopped the run, or 0; the step early stopping ended it at.
    var stopSignal: Int32 = 0
    var stoppedEarlyAt: Int?
    /// The figures since the latest evaluation.
    var since = SinceEvaluation()
    /// What this run's checkpoints record of it: its lineage and (rank 0) its data.
    var lineage = ""
    var data: DataIdentity?
}

/// Training figures since the latest evaluation.
struct SinceEvaluation {
    var lossSum = 0.0
    var samples = 0
    /// With clipping: the last step's norm before clipping, and the steps clipped.
    var gradientNorm = 0.0
    var clippedSteps = 0

    /// The mean training loss, or nil before the first step.
    var meanLoss: Double? { samples > 0 ? lossSum / Double(samples) : nil }

    mutating func add(_ outcome: StepOutcome, samples n: Int, clipNorm: Float?) {
        lossSum += outcome.loss * Double(n)
        samples += n
        if let norm = outcome.gradientNorm, let clipNorm {
            gradientNorm = norm
            if norm > Double(clipNorm) { clippedSteps += 1 }
        }
    }

    /// After an evaluation: the counts start over (the gradient norm stays the last one seen).
    mutating func reset() {
        lossSum = 0
        samples = 0
        clippedSteps = 0
    }
}

/// Training time and samples without evaluation: the samples/s of the progress lines, of the
/// evaluation records and of the summary.
struct Throughput {
    /// Training time in closed intervals, and every sample of the run.
    private(set) var seconds = 0.0
    private(set) var samples = 0
    private let start = Date()
    private var intervalStart = Date()
    private var intervalSamples = 0

    mutating func count(_ n: Int) {
        samples += n
        intervalSamples += n
    }

    /// Closes the interval (its time counts as training), returns its samples/s, starts the next.
    mutating func lap() -> Double {
        let interval = Date().timeIntervalSince(intervalStart)
        seconds += interval
        let rate = Double(intervalSamples) / max(interval, 1e-9)
        resume()
        return rate
    }

    /// Before an evaluation: the interval so far counts as training.
    mutating func pause() { seconds += Date().timeIntervalSince(intervalStart) }

    /// After it: a new interval starts.
    mutating func resume() {
        intervalStart = Date()
        intervalSamples = 0
    }

    var samplesPerSecond: Double { Double(samples) / max(seconds, 1e-9) }
    /// Seconds since the run started.
    var elapsed: Double { Date().timeIntervalSince(start) }
    /// Over the whole time since the run started, evaluations included.
    var samplesPerSecondSinceStart: Double { Double(samples) / max(Date().timeIntervalSince(start), 1e-9) }
}
