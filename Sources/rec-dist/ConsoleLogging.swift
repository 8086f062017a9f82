import Logging
import RecTrainer

/// Plain console lines: info and below to standard output (or all to standard error, for
/// commands whose standard output is data), warnings and errors to standard error; lines from
/// ranks other than 0 carry their rank. Lines go through `Console`, so they never break a live
/// progress bar.
struct ConsoleLogHandler: LogHandler {
    let label: String
    let rank: Int
    var allToStandardError = false
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
        Console.shared.line("\(prefix)\(tag)\(message)", toStandardError: allToStandardError || level >= .warning)
    }
}

/// The logger of the command being run (set up by `bootstrapLogging`).
nonisolated(unsafe) var logger = Logger(label: "rec-dist")

/// Sets up swift-log for this process once: console lines at `--log-level`.
/// `allToStandardError` keeps standard output for data (`predict --out -`).
func bootstrapLogging(_ options: LoggingOptions, rank: Int = 0, allToStandardError: Bool = false) {
    let level = options.logLevel
    LoggingSystem.bootstrap { label in
        var handler = ConsoleLogHandler(label: label, rank: rank)
        handler.logLevel = level
        handler.allToStandardError = allToStandardError
        return handler
    }
    logger = Logger(label: "rec-dist")
}
