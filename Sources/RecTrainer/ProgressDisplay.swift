import Foundation
import Logging

/// How rank 0 shows training progress.
public enum ProgressMode: String, Sendable, CaseIterable {
    /// A live bar redrawn in place (a person watching a terminal).
    case bar
    /// Plain periodic lines (log files, pipes, Slurm's output files).
    case lines
    /// Neither (evaluation lines and the summary still print).
    case off

    /// The mode when none is asked for: the bar only when a person is watching.
    ///
    /// Standard output being a terminal says so for a plain process. Under mpirun it does not:
    /// Open MPI gives each rank a pseudo-terminal even when mpirun's own output goes to a file.
    /// So a rank of mpirun (OMPI_COMM_WORLD_SIZE set) draws the bar only when the launcher says
    /// its output is a terminal (`launch.sh` sets REC_DIST_TERMINAL=1 or 0), and prints lines
    /// otherwise, also under plain mpirun. TERM=dumb always gets lines.
    public static func automatic(environment: [String: String], standardOutputIsTerminal: Bool) -> ProgressMode {
        if environment["TERM"] == "dumb" { return .lines }
        if let told = environment["REC_DIST_TERMINAL"] { return told == "1" ? .bar : .lines }
        if environment["OMPI_COMM_WORLD_SIZE"] != nil { return .lines }
        return standardOutputIsTerminal ? .bar : .lines
    }
}

/// Rank 0's progress: the live bar (redrawn at most 10 times a second, samples/s over the last
/// window of about a second) or a plain line every `plan.logEvery` steps and after the last.
final class ProgressDisplay {
    let mode: ProgressMode
    /// The run's first and last step, its epochs and the steps between plain lines.
    let plan: RunPlan
    let showRate: Bool
    let logger: Logger
    private let runStart = Date()
    private var barSamples = 0, barRate: Double?, barWindowStart = Date(), lastDraw = Date.distantPast

    init(mode: ProgressMode, plan: RunPlan, showRate: Bool, logger: Logger) {
        self.mode = mode
        self.plan = plan
        self.showRate = showRate
        self.logger = logger
    }

    /// Whether the step ends a plain line's interval.
    func isLineDue(step: Int) -> Bool { step % plan.logEvery == 0 || step == plan.lastStep }

    private func report(_ state: RunState, samplesPerSecond: Double, loss: Double?) -> ProgressReport {
        let done = state.step - plan.firstStep, elapsed = Date().timeIntervalSince(runStart)
        return ProgressReport(step: state.step, totalSteps: plan.lastStep, epoch: min(state.completedEpochs, plan.totalEpochs),
                              totalEpochs: plan.totalEpochs, samplesPerSecond: samplesPerSecond, loss: loss,
                              eta: done > 0 ? elapsed / Double(done) * Double(plan.lastStep - state.step) : nil)
    }

    /// After each step: redraws the bar when due.
    func stepDone(_ state: RunState, samples: Int, loss: Double?) {
        guard mode == .bar else { return }
        barSamples += samples
        let now = Date(), window = now.timeIntervalSince(barWindowStart)
        if window >= 1 { barRate = Double(barSamples) / window; barSamples = 0; barWindowStart = now }
        if now.timeIntervalSince(lastDraw) >= 0.1 || state.step == plan.lastStep {
            lastDraw = now
            let rate = barRate ?? Double(barSamples) / max(window, 1e-9)
            Console.shared.showStatus(report(state, samplesPerSecond: rate, loss: loss).bar(width: Console.shared.columns))
        }
    }

    /// At the end of a line's interval: the plain line, with the interval's samples/s.
    func line(_ state: RunState, samplesPerSecond: Double, loss: Double?, learningRate: Float) {
        guard mode == .lines else { return }
        logger.info("\(report(state, samplesPerSecond: samplesPerSecond, loss: loss).line)\(showRate ? "  lr \(learningRate)" : "")")
    }

    /// Leaves the bar on screen as the last state.
    func end() { if mode == .bar { Console.shared.endStatus() } }
}
