import ArgumentParser
import Foundation
import Logging
import RecData

struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the synthetic default dataset: a Criteo-format TSV with learnable signal.",
        discussion: """
        Rows are drawn from a hidden logistic model (Zipf categorical values with per-value effects, \
        dense effects and feature crosses). The true click probability of each row goes to a side \
        file (FILE.probs by default), so `train` can report the oracle AUC of its evaluation split.
        """)

    @Option(parsing: .unconditional, help: "Number of rows to write.")
    var rows: Int = 1_000_000
    @Option(help: "Output TSV path.")
    var out: String
    @Option(parsing: .unconditional, help: "Seed of the hidden model and the rows.")
    var seed: UInt64 = 2026
    @Option(help: "Where to write the true probabilities (default: <out>.probs).")
    var probabilitiesOut: String?
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard rows >= 1 else { throw ValidationError("--rows must be at least 1 (got \(rows)).") }
    }

    func run() throws {
        bootstrapLogging(logging)
        let start = Date()
        let side = probabilitiesOut ?? SynthGenerator.defaultProbabilitiesPath(for: out)
        do {
            try SynthGenerator(seed: seed).write(rows: rows, to: out, probabilitiesPath: side)
        } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
        let seconds = Date().timeIntervalSince(start)
        let bytes = (try? FileManager.default.attributesOfItem(atPath: out)[.size] as? Int) ?? 0
        logger.info("wrote \(rows) rows to \(out) (\(bytes / 1_000_000) MB, probabilities in \(side)) in \(String(format: "%.1f", seconds)) s")
    }
}
