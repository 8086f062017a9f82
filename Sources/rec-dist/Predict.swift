import ArgumentParser
import Foundation
import Logging
import RecCore
import RecData
import RecInference
import RecTrainer

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score rows with a trained checkpoint: one click probability per input row.",
        discussion: """
        --input is one of:
        - a prepared dataset directory (`rec-dist prepare`) the checkpoint was trained on (its schema \
          is checked): the rows of --split are scored, written as split,row,label,probability;
        - raw rows (a file of any format `prepare` reads) for a checkpoint trained on a prepared \
          dataset: they are encoded exactly as that dataset was (`prepare --like`: its format, label \
          rule, vocabularies, hashing, dense transforms and statistics, side files), into a temporary \
          directory, and scored in input order, written as row,label,probability (row counts data \
          lines from 0, headers excluded; a bad line is an error naming it);
        - Criteo-format TSV for a checkpoint trained on TSV (log1p of the counts, the same hashing), \
          written as row,label,probability.
        Rows stream through in batches, so memory does not grow with the input.

        Examples:
          rec-dist predict --checkpoint runs/a/checkpoints --input data/ml100k --split test --out scores.csv
          rec-dist predict --checkpoint runs/a/checkpoints --input ml-100k/u1.test --out new-scores.csv
          rec-dist predict --checkpoint runs/b/checkpoints --input data/synth.tsv --limit 1000
        """)

    @OptionGroup var model: TrainedModelOptions
    @Option(help: "Rows to score: a prepared dataset directory, or a raw file (the label column is carried through).")
    var input: String
    @OptionGroup(title: "Raw rows") var raw: RawRowsOptions
    @Option(help: "Prepared dataset: the split to score, train, valid, test or all.")
    var split: String = "test"
    @Option(help: "Output CSV path ('-' for standard output).")
    var out: String = "-"
    @Option(parsing: .unconditional, help: "Only score the first N rows (of each split).")
    var limit: Int?
    @Flag(help: "Prepared interaction data: also write each row's user and item ids (columns user_id,item_id).")
    var ids = false
    @Option(parsing: .unconditional, help: "Rows per forward pass.")
    var batchSize: Int = 1024
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if let limit, limit < 1 { throw outOfRange("--limit", limit, "use 1 or more") }
        if batchSize < 1 || batchSize > 65_536 { throw outOfRange("--batch-size", batchSize, "use 1 to 65536") }
        if PreparedDataset.isDirectory(input), let flag = raw.given {
            throw ValidationError("--\(flag) applies to raw rows; '\(input)' is a prepared dataset, whose rows are already encoded. Drop it.")
        }
        if !(["all"] + PreparedManifest.splitNames).contains(split) {
            throw ValidationError("--split \(split): use train, valid, test or all.")
        }
    }

    func run() throws {
        model.startScoring(logging, allToStandardError: true)
        let start = Date()
        var rows = 0
        try exitingOnError {
            let trained = try model.load(maxBatch: batchSize)
            let writer = try LineWriter(path: out)
            if PreparedDataset.isDirectory(input) {
                rows = try scorePrepared(trained, writer: writer, directory: input, raw: false)
            } else if trained.config.vocabularySizes != nil || trained.config.denseTransform != .log1p {
                rows = try scoreRaw(trained, writer: writer)
            } else {
                rows = try scoreTSV(trained, writer: writer)
            }
            try writer.close()
        }
        let seconds = Date().timeIntervalSince(start)
        logger.info("scored \(rows) rows in \(String(format: "%.2f", seconds)) s (\(Int(Double(rows) / max(seconds, 1e-9))) rows/s)\(out == "-" ? "" : " into \(out)")")
    }

    /// Raw rows for a model trained on a prepared dataset: encoded like that dataset into a
    /// temporary directory (removed afterwards), then scored in input order.
    func scoreRaw(_ trained: Checkpoint.TrainedModel, writer: LineWriter) throws -> Int {
        let reference = raw.like ?? trained.training.dataPath
        guard PreparedDataset.isDirectory(reference) else {
            throw ValidationError("'\(input)' holds raw rows; the checkpoint was trained on the prepared dataset '\(reference)', whose encoding they need, and it is not there. Pass its new place with --like DIR.")
        }
        let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("rec-dist-predict-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: temporary) }
        let start = Date()
        let prepared: Preparer.Result
        do {
            prepared = try Preparer.apply(like: reference, inputs: [input], output: temporary, format: raw.format, force: true) { line in
                logger.debug("\(line)")
            }
        } catch {
            let kind = (try? PreparedDataset(directory: reference))?.manifest.options.format.rawValue ?? "its"
            throw ValidationError("cannot encode '\(input)' like '\(reference)', the dataset the checkpoint was trained on (\(kind) rows): \(error)")
        }
        logger.info("encoded \(prepared.manifest.statistics.rows) rows of '\(input)' like '\(reference)' in \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
        return try scorePrepared(trained, writer: writer, directory: temporary, raw: true)
    }

    /// A prepared dataset: the rows of the chosen split(s), streamed in batches. `raw`: the one
    /// split of rows encoded from a raw file, written without the split column.
    func scorePrepared(_ trained: Checkpoint.TrainedModel, writer: LineWriter, directory: String, raw: Bool) throws -> Int {
        let dataset = try trained.openDataset(directory)
        let names = raw ? ["test"] : split == "all" ? PreparedManifest.splitNames.filter { dataset.manifest.split($0) != nil } : [split]
        let schema = dataset.manifest.schema
        var idColumns: [Int] = []
        if ids {
            guard let u = schema.categorical.firstIndex(where: { $0.name == schema.userField }),
                  let it = schema.categorical.firstIndex(where: { $0.name == schema.itemField }) else {
                throw ValidationError("--ids: '\(input)' has no user and item fields.")
            }
            idColumns = [u, it]
        }
        try writer.write("\(raw ? "" : "split,")row,label,probability\(ids ? ",user_id,item_id" : "")\n")
        var total = 0
        for name in names {
            let reader = try dataset.open(split: name)
            try reader.verifyAll()
            let n = min(reader.header.rows, limit ?? .max)
            let prefix = raw ? [] : Array("\(name),".utf8)
            try trained.score(reader, rows: 0..<n) { first, batch, probabilities in
                for i in 0..<batch.count {
                    for b in prefix { try writer.write(byte: b) }
                    writer.write(first + i)
                    try writer.write(byte: UInt8(ascii: ","))
                    writer.write(Int(batch.labels[i]))
                    try writer.write(byte: UInt8(ascii: ","))
                    writer.write(probabilities[i])
                    for f in idColumns {
                        try writer.write(byte: UInt8(ascii: ","))
                        writer.write(Int(batch.categorical[i * batch.categoricalWidth + f]))
                    }
                    try writer.write(byte: 0x0A)
                }
            }
            total += n
        }
        return total
    }

    /// Criteo TSV, parsed in windows of rows so memory stays bounded.
    func scoreTSV(_ trained: Checkpoint.TrainedModel, writer: LineWriter) throws -> Int {
        let file = try MappedFile(path: input)
        let total = min(CriteoTSV.countRows(file), limit ?? .max)
        try writer.write("row,label,probability\n")
        let window = 65_536
        let probabilities = UnsafeMutablePointer<Float>.allocate(capacity: window)
        defer { probabilities.deallocate() }
        var start = 0
        repeat {
            let range = start..<min(start + window, total)
            let rows = try CriteoTSV.parse(file, selecting: { range.contains($0) })
            let buffer = FeatureRowsBuffer(rows)
            trained.probabilities(for: buffer, into: probabilities)
            for i in 0..<buffer.count {
                writer.write(start + i)
                try writer.write(byte: UInt8(ascii: ","))
                writer.write(Int(buffer.labels[i]))
                try writer.write(byte: UInt8(ascii: ","))
                writer.write(probabilities[i])
                try writer.write(byte: 0x0A)
            }
            start = range.upperBound
        } while start < total
        return total
    }
}
