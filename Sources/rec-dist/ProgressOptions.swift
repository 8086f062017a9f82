import ArgumentParser
import Foundation
import RecTrainer

/// `--progress`: a display, or `auto` to decide from the environment.
enum ProgressChoice: String, ExpressibleByArgument, CaseIterable {
    case auto, bar, lines, off
}

/// What `train` shows and records while it runs: progress on rank 0, the metrics log, TensorBoard.
struct ProgressOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Print progress every this many steps (0: about 20 lines per run).")
    var logEvery: Int = 0
    @Option(help: "Append one JSON object per evaluation to this file.")
    var metricsOut: String?
    @Option(name: .customLong("tensorboard"),
            help: "Write the training curves as a TensorBoard event file into this directory (view with `tensorboard --logdir DIR`).")
    var tensorBoard: String?
    @Option(help: "Progress on rank 0: bar (redrawn in place), lines (plain periodic lines; every log line starts with its UTC time), off, or auto: the bar when a person watches a terminal (launch.sh tells its ranks; under plain mpirun, lines), else lines.")
    var progress: ProgressChoice = .auto

    func validate() throws {
        if logEvery < 0 { throw outOfRange("--log-every", logEvery, "use 0 (automatic) or a positive step count") }
    }

    /// The progress display: as asked, or decided from the environment (never the bar with `debug`,
    /// whose per-step lines would break it).
    func mode(debug: Bool) -> ProgressMode {
        switch progress {
        case .bar: return .bar
        case .lines: return .lines
        case .off: return .off
        case .auto:
            if debug { return .lines }
            return ProgressMode.automatic(environment: ProcessInfo.processInfo.environment,
                                          standardOutputIsTerminal: isatty(STDOUT_FILENO) == 1)
        }
    }
}
