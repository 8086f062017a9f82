import ArgumentParser
import Foundation
import Logging
import RecCore
import RecData
import RecTrainer

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score rows with a trained checkpoint: one click probability per input row.",
        discussion: """
        --input is either Criteo-format TSV, preprocessed exactly as in training (log1p of the \
        counts, the same categorical hashing), written as CSV row,label,probability; or a prepared \
        dataset directory (`rec-dist prepare`), whose rows `prepare` already encoded with the \
        recorded vocabularies and transforms: the rows of --split are scored, written as \
        split,row,label,probability. The checkpoint must have been trained on that dataset (its \
        schema is checked). Rows stream through in batches, so memory does not grow with the input.

        Examples:
          rec-dist predict --checkpoint runs/a/checkpoints --input data/ml100k --split test --out scores.csv
          rec-dist predict --checkpoint runs/b/checkpoints --input data/synth.tsv --limit 1000
        """)

    @Option(help: "A checkpoint: a step-NNNNNNNN directory, or a --checkpoint-dir (its latest).")
    var checkpoint: String
    @Option(help: "Rows to score: a Criteo-format TSV (the label column is carried through) or a prepared dataset directory.")
    var input: String
    @Option(help: "Prepared dataset: the split to score, train, valid, test or all.")
    var split: String = "test"
    @Option(help: "Output CSV path ('-' for standard output).")
    var out: String = "-"
    @Option(help: "Only score the first N rows (of each split).")
    var limit: Int?
    @Flag(help: "Prepared interaction data: also write each row's user and item ids (columns user_id,item_id).")
    var ids = false
    @Option(help: "Rows per forward pass.")
    var batchSize: Int = 1024
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit \(limit) is out of range: use 1 or more.") }
        if batchSize < 1 || batchSize > 65_536 { throw ValidationError("--batch-size \(batchSize) is out of range: use 1 to 65536.") }
        if !(["all"] + PreparedManifest.splitNames).contains(split) {
            throw ValidationError("--split \(split): use train, valid, test or all.")
        }
    }

    func run() throws {
        BLASKernels.reexecWithNativeKernelsIfNeeded()
        GEMM.setThreads(1)
        bootstrapLogging(logging, allToStandardError: true)
        let start = Date()
        var rows = 0
        do {
            let trained = try Checkpoint.TrainedModel(path: checkpoint, maxBatch: batchSize)
            let writer = try LineWriter(path: out)
            if PreparedDataset.isDirectory(input) {
                rows = try scorePrepared(trained, writer: writer)
            } else {
                rows = try scoreTSV(trained, writer: writer)
            }
            try writer.close()
        } catch let error as ValidationError {
            printError(error.message)
            throw ExitCode.failure
        } catch {
            printError("\(error)")
            throw ExitCode.failure
        }
        let seconds = Date().timeIntervalSince(start)
        logger.info("scored \(rows) rows in \(String(format: "%.2f", seconds)) s (\(Int(Double(rows) / max(seconds, 1e-9))) rows/s)\(out == "-" ? "" : " into \(out)")")
    }

    /// A prepared dataset: the rows of the chosen split(s), streamed in batches.
    func scorePrepared(_ trained: Checkpoint.TrainedModel, writer: LineWriter) throws -> Int {
        let dataset = try PreparedDataset(directory: input)
        try trained.checkCompatible(with: dataset)
        let names = split == "all" ? PreparedManifest.splitNames.filter { dataset.manifest.split($0) != nil } : [split]
        let schema = dataset.manifest.schema
        var idColumns: [Int] = []
        if ids {
            guard let u = schema.categorical.firstIndex(where: { $0.name == schema.userField }),
                  let it = schema.categorical.firstIndex(where: { $0.name == schema.itemField }) else {
                throw ValidationError("--ids: '\(input)' has no user and item fields.")
            }
            idColumns = [u, it]
        }
        try writer.write("split,row,label,probability\(ids ? ",user_id,item_id" : "")\n")
        var total = 0
        for name in names {
            let reader = try dataset.open(split: name)
            try reader.verifyAll()
            let n = min(reader.header.rows, limit ?? .max)
            let prefix = Array("\(name),".utf8)
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
        if trained.config.vocabularySizes != nil || trained.config.denseTransform != .log1p {
            throw TrainingError.checkpoint(path: trained.directory, message: "it was trained on the prepared dataset '\(trained.training.dataPath)', whose rows carry vocabulary ids and transformed values; '\(input)' is a raw file. Score that dataset's splits (--input \(trained.training.dataPath) --split test), or prepare the rows into it first")
        }
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
