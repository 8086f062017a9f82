import Foundation
import Logging
import RecTrainer

/// Plain console lines: info and below to standard output (or all to standard error, for
/// commands whose standard output is data), warnings and errors to standard error; lines from
/// ranks other than 0 carry their rank. With `timestamps` (train's plain-lines progress: log
/// files, pipes, Slurm output), each line starts with its UTC time, e.g.
/// `2026-12-05T12:34:56.789Z step 10/40 ...`. Lines go through `Console`, so they never break a
/// live progress bar.
struct ConsoleLogHandler: LogHandler {
    let label: String
    let rank: Int
    var allToStandardError = false
    var timestamps = false
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    init(label: String, rank: Int) {
        self.label = label
        self.rank = rank
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let level = event.level, message = event.message
        let prefix = rank == 0 ? "" : "[rank \(rank)] "
        let tag = level >= .warning ? "\(level): " : ""
        let time = timestamps ? Self.timestamp(Date()) + " " : ""
        Console.shared.line("\(time)\(prefix)\(tag)\(message)", toStandardError: allToStandardError || level >= .warning)
    }
}

extension ConsoleLogHandler {
    /// ISO 8601 in UTC with milliseconds: `2026-12-05T12:34:56.789Z`.
    static func timestamp(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}

/// The logger of the command being run (set up by `bootstrapLogging`).
nonisolated(unsafe) var logger = Logger(label: "rec-dist")

/// Sets up swift-log for this process once: console lines at `--log-level`.
/// `allToStandardError` keeps standard output for data (`predict --out -`); `timestamps` starts
/// each line with its time.
func bootstrapLogging(_ options: LoggingOptions, rank: Int = 0, allToStandardError: Bool = false, timestamps: Bool = false) {
    let level = options.logLevel
    LoggingSystem.bootstrap { label in
        var handler = ConsoleLogHandler(label: label, rank: rank)
        handler.logLevel = level
        handler.allToStandardError = allToStandardError
        handler.timestamps = timestamps
        return handler
    }
    logger = Logger(label: "rec-dist")
}
