import ArgumentParser
import Foundation
import Logging
import RecData
import RecInference
import RecTrainer

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write a self-contained HTML report of a run from its metrics log.",
        discussion: "Opens in any browser without network: curves are inline SVG; the metrics are embedded as JSON too.")

    @Option(help: "The metrics log written by `train --metrics-out` (one JSON object per line).")
    var metrics: String
    @Option(help: "Output HTML path.")
    var out: String = "report.html"
    @Option(help: "A checkpoint (directory or --checkpoint-dir) whose configuration to include.")
    var checkpoint: String?
    @Option(help: "Page title.")
    var title: String = "rec-dist training run"
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        bootstrapLogging(logging)
        try exitingOnError {
            guard let text = try? String(contentsOfFile: metrics, encoding: .utf8) else {
                throw ValidationError("cannot read --metrics \(metrics); pass the file written by `train --metrics-out`.")
            }
            var records: [[String: Any]] = []
            for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
                guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
                    throw ValidationError("\(metrics):\(i + 1): not a JSON object; is this a metrics log from `train --metrics-out`?")
                }
                records.append(object)
            }
            guard !records.isEmpty else { throw ValidationError("\(metrics) has no evaluations yet.") }
            var configuration: String?
            if let checkpoint {
                let dir = try Checkpoint.resolve(checkpoint)
                configuration = try String(contentsOfFile: dir + "/trainer.json", encoding: .utf8)
            }
            let html = try Report.html(records: records, title: title, configuration: configuration)
            try replaceFile(at: out, with: Array(html.utf8))
            logger.info("wrote \(out) (\(records.count) evaluations)")
        }
    }
}
