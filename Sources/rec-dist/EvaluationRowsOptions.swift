import ArgumentParser
import Foundation
import Logging
import RecCore
import RecData
import RecInference
import RecTrainer

/// The rows `explain` scores: the evaluation split of a prepared dataset, or the held-out rows
/// (or all rows) of a Criteo TSV file.
struct EvaluationRowsOptions: ParsableArguments {
    @Option(help: "The evaluation data: the prepared dataset the model was trained on, or Criteo TSV.")
    var data: String
    @Option(help: "Prepared dataset: the split to explain on, valid or test (an empty or absent valid split falls back to test).")
    var split: String = "valid"
    @Option(parsing: .unconditional, help: "Use at most this many evaluation rows (the first ones).")
    var maxRows: Int = 50_000

    func validate() throws {
        if maxRows < 10 { throw outOfRange("--max-rows", maxRows, "use 10 or more") }
        if !["valid", "test"].contains(split) { throw ValidationError("--split \(split): use valid or test.") }
    }

    /// The evaluation rows, the fields the model reads, and a description of where they came from.
    func load(for trained: Checkpoint.TrainedModel) throws -> (FeatureRowsBuffer, [PermutationImportance.Field], String) {
        let config = trained.config
        let fields: [PermutationImportance.Field]
        let rows: FeatureRowsBuffer
        let source: String
        if PreparedDataset.isDirectory(data) {
            let dataset = try trained.openDataset(data)
            var name = split
            if name == "valid", (dataset.manifest.split("valid")?.rows ?? 0) == 0, (dataset.manifest.split("test")?.rows ?? 0) > 0 {
                logger.info("the valid split is empty or absent (rows prepared with --like): explaining on the test split")
                name = "test"
            }
            let reader = try dataset.open(split: name)
            try reader.verifyAll()
            let n = min(reader.header.rows, maxRows)
            rows = FeatureRowsBuffer(capacity: n, denseWidth: dataset.denseCount, categoricalWidth: dataset.categoricalCount)
            for r in 0..<n { reader.copyRow(r, to: rows, slot: r) }
            rows.count = n
            reader.releaseResidentPages()
            let schema = dataset.manifest.schema
            fields = PermutationImportance.fields(readBy: config, dense: schema.dense.map(\.name),
                                                  categorical: schema.categorical.map(\.name))
            source = "the \(name) split of \(data)"
        } else {
            if config.vocabularySizes != nil || config.denseTransform != .log1p {
                throw TrainingError.checkpoint(path: trained.directory, message: "it was trained on the prepared dataset '\(trained.training.dataPath)'; explain it on that dataset (--data \(trained.training.dataPath))")
            }
            let file = try MappedFile(path: data)
            let count = CriteoTSV.countRows(file)
            var range = 0..<count
            var what = "all of \(data)"
            if (data as NSString).standardizingPath == (trained.training.dataPath as NSString).standardizingPath && trained.training.evalPath == nil {
                range = DataSplit.trainEval(rowCount: count, evalFraction: trained.training.evalFraction).eval
                what = "the held-out rows of \(data)"
            }
            range = range.lowerBound..<(range.lowerBound + min(range.count, maxRows))
            let parsed = try CriteoTSV.parse(file, selecting: { range.contains($0) })
            rows = FeatureRowsBuffer(parsed)
            fields = PermutationImportance.fields(readBy: config, dense: (1...CriteoFormat.denseCount).map { "I\($0)" },
                                                  categorical: (1...CriteoFormat.categoricalCount).map { "C\($0)" })
            source = what
        }
        guard rows.count >= 2 else {
            throw ValidationError("\(source) has \(rows.count) row(s): explain needs evaluation rows with both labels.")
        }
        switch config.kind {
        case .mlp: logger.info("the mlp reads only its first \(config.mlpDenseFeatures) dense field(s): the others cannot matter and are left out")
        case .ncf, .twoTower: logger.info("the \(config.kind.rawValue) reads only its user and item fields: the others cannot matter and are left out")
        default: break
        }
        return (rows, fields, source)
    }
}
