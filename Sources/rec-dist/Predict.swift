import ArgumentParser
import Foundation
import RecData
import RecTrainer

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score rows with a trained checkpoint: one click probability per input row.",
        discussion: """
        The input is Criteo-format TSV, preprocessed exactly as in training (log1p of the counts, \
        the same categorical hashing). Writes CSV with a header: row,label,probability.
        """)

    @Option(help: "A checkpoint: a step-NNNNNNNN directory, or a --checkpoint-dir (its latest).")
    var checkpoint: String
    @Option(help: "Rows to score (Criteo-format TSV; the label column is carried through).")
    var input: String
    @Option(help: "Output CSV path ('-' for standard output).")
    var out: String = "-"
    @Option(help: "Only score the first N rows.")
    var limit: Int?

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit \(limit) is out of range: use 1 or more.") }
    }

    func run() throws {
        BLASKernels.reexecWithNativeKernelsIfNeeded()
        do {
            let trained = try Checkpoint.TrainedModel(path: checkpoint)
            let file = try MappedFile(path: input)
            let rows = try limit.map { n in try CriteoTSV.parse(file, selecting: { $0 < n }) } ?? CriteoTSV.parse(file)
            let probabilities = trained.predict(rows)
            var text = "row,label,probability\n"
            text.reserveCapacity(rows.count * 24)
            for i in 0..<rows.count {
                text += "\(i),\(Int(rows.labels[i])),\(String(format: "%.8g", probabilities[i]))\n"
            }
            if out == "-" {
                FileHandle.standardOutput.write(Data(text.utf8))
            } else {
                try text.write(toFile: out, atomically: true, encoding: .utf8)
            }
        } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
    }
}
