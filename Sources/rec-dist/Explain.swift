import ArgumentParser
import Foundation
import Logging
import RecCore
import RecData
import RecInference
import RecTrainer

extension PermutationImportance.Metric: ExpressibleByArgument {}

struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Permutation feature importance on the evaluation split: which fields the model relies on.",
        discussion: """
        For each field the model reads, its column is shuffled across the evaluation rows and the \
        rows scored again; the importance is the drop in AUC (or the rise in logloss) against the \
        unshuffled rows, repeated --repeats times with different seeded permutations (mean ± \
        sample standard deviation). Prints a ranked table and writes a self-contained HTML chart.

        --data is the prepared dataset the model was trained on (its --split, valid by default), \
        or a Criteo TSV: the training file (its held-out last --eval-fraction, as in training) or \
        a separate evaluation file (all its rows).

        Examples:
          rec-dist explain --checkpoint runs/ml/checkpoints --data data/ml100k --repeats 5 --out explain.html
          rec-dist explain --checkpoint runs/default/checkpoints --data data/synth-1m.tsv --max-rows 20000
        """)

    @OptionGroup var model: TrainedModelOptions
    @OptionGroup(title: "Evaluation rows") var evaluationRows: EvaluationRowsOptions
    @Option(parsing: .unconditional, help: "Shuffles per field (different seeds), for the spread.")
    var repeats: Int = 5
    @Option(parsing: .unconditional, help: "Seed of the permutations.")
    var seed: UInt64 = 1
    @Option(help: "The metric: auc (importance = baseline AUC - shuffled AUC) or logloss (shuffled - baseline).")
    var metric: PermutationImportance.Metric = .auc
    @Option(help: "Write the chart as a self-contained HTML page here.")
    var out: String = "explain.html"
    @Option(help: "Also write the results as JSON here.")
    var jsonOut: String?
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if repeats < 1 || repeats > 1000 { throw outOfRange("--repeats", repeats, "use 1 to 1000") }
    }

    func run() throws {
        model.startScoring(logging)
        try exitingOnError {
            let trained = try model.load(maxBatch: 1024)
            let (rows, fields, source) = try evaluationRows.load(for: trained)
            logger.info("explaining \(trained.config.kind.rawValue) on \(rows.count) rows of \(source): \(fields.count) fields x \(repeats) repeats")
            let start = Date()
            let (baseline, results) = try PermutationImportance.run(
                rows: rows, fields: fields, repeats: repeats, seed: seed, metric: metric,
                progress: { done, total in if done % 10 == 0 && done < total { logger.info("\(done)/\(total) fields") } },
                score: { trained.probabilities(for: $0, into: $1) })
            let ranked = PermutationImportance.ranked(results)
            logger.notice("""
                baseline \(metric.rawValue) \(String(format: "%.4f", baseline)) on \(rows.count) rows of \(source); \(repeats) shuffle(s) per field (\(String(format: "%.1f", Date().timeIntervalSince(start))) s)
                \(PermutationImportance.table(ranked, metric: metric, baseline: baseline))
                """)
            let html = try PermutationImportance.html(
                ranked, metric: metric, baseline: baseline, title: "What the \(trained.config.kind.rawValue) relies on",
                subtitle: "Permutation importance of \(trained.directory) on \(rows.count) rows of \(source): each field's column shuffled across the rows, \(repeats) time(s) with different seeds.",
                details: [("model", trained.config.kind.rawValue), ("rows", "\(rows.count)"),
                          ("baseline \(metric.rawValue)", String(format: "%.4f", baseline)), ("repeats", "\(repeats)"),
                          ("fields", "\(fields.count)"), ("most important", ranked.first?.field.name ?? "-")])
            try replaceFile(at: out, with: Array(html.utf8))
            logger.info("wrote \(out)")
            if let jsonOut {
                let objects: [[String: Any]] = ranked.map {
                    ["field": $0.field.name, "kind": $0.field.categorical ? "categorical" : "dense", "mean": $0.mean, "std": $0.std, "drops": $0.drops]
                }
                let data = try JSONSerialization.data(withJSONObject: ["metric": metric.rawValue, "baseline": baseline, "rows": rows.count,
                                                                       "repeats": repeats, "seed": seed, "fields": objects] as [String: Any],
                                                      options: [.prettyPrinted, .sortedKeys])
                try replaceFile(at: jsonOut, with: Array(data))
            }
        }
    }
}
