import Foundation
import RecCheckpoint
import RecCore
import RecData
import RecTrainer

/// Scoring a trained model on a prepared dataset: the compatibility check every command that
/// reads a dataset with a checkpoint makes (`predict`, `recommend`, `explain`), and streaming
/// batches of a split through the model.
extension Checkpoint.TrainedModel {
    /// Checks that this model was trained on rows shaped like `dataset`'s: a prepared dataset
    /// (not raw TSV), the same schema (the manifest's hash, when the checkpoint recorded it), and
    /// the same dense and categorical widths and table sizes.
    ///
    /// - Throws: `TrainingError.checkpoint` naming the checkpoint, the dataset and what differs.
    public func checkCompatible(with dataset: PreparedDataset) throws {
        func fail(_ message: String) -> TrainingError {
            .checkpoint(path: directory, message: message)
        }
        let manifest = dataset.manifest
        let d = dataset.denseCount, c = dataset.categoricalCount
        if config.vocabularySizes == nil && config.denseTransform == .log1p {
            throw fail("it was trained on raw Criteo TSV ('\(training.dataPath)'), not on a prepared dataset, so it cannot read the rows of '\(dataset.directory)'; score TSV files with --input FILE, or use a checkpoint trained with --data \(dataset.directory)")
        }
        if let hash = training.datasetSchemaHash, hash != manifest.schemaHash {
            throw fail("it was trained on '\(training.dataPath)' (schema hash \(hash)), a dataset with another schema than '\(dataset.directory)' (schema hash \(manifest.schemaHash)): its fields, encodings, vocabularies or transforms differ. Use the dataset the model was trained on, or a checkpoint trained on this one")
        }
        let shapeMatches = config.denseInputs == d && config.categoricalFields == c
            && (config.kind == .mlp || config.vocabularySizes == manifest.vocabularySizes)
        guard shapeMatches else {
            throw fail("its \(config.kind.rawValue) reads \(config.denseInputs) dense and \(config.categoricalFields) categorical fields\(config.vocabularySizes.map { " (tables \($0.prefix(8).map(String.init).joined(separator: ",")))" } ?? ""), but '\(dataset.directory)' has \(d) dense and \(c) categorical fields (tables \(manifest.vocabularySizes.prefix(8).map(String.init).joined(separator: ","))); it was trained on '\(training.dataPath)'. Use that dataset, or a checkpoint trained on this one")
        }
    }

    /// Click probabilities of rows `rows` of `split`, in batches of the model's capacity: calls
    /// `body(first, batch, probabilities)` for each batch, where `batch` holds the rows
    /// `first ..< first + batch.count` and `probabilities` their scores. Memory stays bounded:
    /// one batch, and the split's pages are dropped every `releaseEvery` bytes read.
    public func score(_ split: PreparedSplitReader, rows: Range<Int>, releaseEvery: Int = 64 << 20,
                      _ body: (_ first: Int, _ batch: FeatureRowsBuffer, _ probabilities: UnsafeBufferPointer<Float>) throws -> Void) rethrows {
        let batch = FeatureRowsBuffer(capacity: model.maxBatch, denseWidth: split.header.denseCount,
                                      categoricalWidth: split.header.categoricalCount)
        let scores = UnsafeMutableBufferPointer<Float>.allocate(capacity: model.maxBatch)
        defer { scores.deallocate() }
        var start = rows.lowerBound, sinceRelease = 0
        while start < rows.upperBound {
            let n = min(model.maxBatch, rows.upperBound - start)
            for i in 0..<n { split.copyRow(start + i, to: batch, slot: i) }
            batch.count = n
            probabilities(for: batch, into: scores.baseAddress!)
            try body(start, batch, UnsafeBufferPointer(rebasing: scores[0..<n]))
            sinceRelease += n * split.header.rowBytes
            if sinceRelease >= releaseEvery {
                sinceRelease = 0
                split.releaseResidentPages()
            }
            start += n
        }
        split.releaseResidentPages()
    }

    /// Probabilities of the rows of `rows` (at most `model.maxBatch`... any count: batched).
    public func probabilities(for rows: FeatureRowsBuffer, into out: UnsafeMutablePointer<Float>) {
        logits(for: rows, into: out)
        for i in 0..<rows.count { out[i] = Loss.sigmoid(out[i]) }
    }

    /// Logits (scores before the sigmoid) of `rows`, written to `out`.
    public func logits(for rows: FeatureRowsBuffer, into out: UnsafeMutablePointer<Float>) {
        var start = 0
        while start < rows.count {
            let n = min(model.maxBatch, rows.count - start)
            let logits = model.forward(rows.view(start..<(start + n)), parameters: parameters.pointer,
                                       embeddingTable: embeddingTable.pointer)
            (out + start).update(from: logits, count: n)
            start += n
        }
    }
}

/// A buffered writer of text lines to a file or standard output: one `write` per 1 MB.
public final class LineWriter {
    private var fd: Int32
    private let path: String
    /// The file written until `close()` renames it to `path` (nil for standard output).
    private var temporary: String?
    private let ownsDescriptor: Bool
    private var buffer: [UInt8] = []
    private let scratch = UnsafeMutablePointer<CChar>.allocate(capacity: 64)

    /// Writes to `path`, or standard output for "-". A file is written as a hidden temporary
    /// beside `path` and renamed into place by `close()`: a failure (a full disk) leaves no
    /// partial file, and an older file at `path` untouched.
    public init(path: String) throws {
        self.path = path
        if path == "-" {
            fd = STDOUT_FILENO
            ownsDescriptor = false
            temporary = nil
        } else {
            let url = URL(fileURLWithPath: path)
            let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())").path
            self.temporary = temporary
            fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                throw DataError(file: path, message: "cannot create the output file: \(String(cString: strerror(errno)))",
                                hint: "check that its directory exists and is writable (--out)")
            }
            ownsDescriptor = true
        }
        buffer.reserveCapacity(1 << 20 + 256)
    }

    deinit {
        scratch.deallocate()
        if ownsDescriptor && fd >= 0 { Glibc.close(fd) }
        if let temporary { unlink(temporary) }
    }

    public func write(_ text: String) throws {
        buffer.append(contentsOf: text.utf8)
        if buffer.count >= 1 << 20 { try flush() }
    }

    /// Appends `value` as `%.8g`.
    public func write(_ value: Float) {
        let n = withVaList([Double(value)]) { vsnprintf(scratch, 64, "%.8g", $0) }
        scratch.withMemoryRebound(to: UInt8.self, capacity: 64) { buffer.append(contentsOf: UnsafeBufferPointer(start: $0, count: Int(n))) }
    }

    /// Appends `value` in decimal.
    public func write(_ value: Int) {
        if value == 0 { buffer.append(UInt8(ascii: "0")); return }
        var v = value
        if v < 0 { buffer.append(UInt8(ascii: "-")); v = -v }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        withUnsafeMutableBytes(of: &digits) { d in
            while v > 0 { d[n] = UInt8(ascii: "0") + UInt8(v % 10); v /= 10; n += 1 }
            for i in stride(from: n - 1, through: 0, by: -1) { buffer.append(d[i]) }
        }
    }

    /// Appends one byte (a separator or a newline); flushes at 1 MB.
    public func write(byte: UInt8) throws {
        buffer.append(byte)
        if byte == 0x0A && buffer.count >= 1 << 20 { try flush() }
    }

    public func flush() throws {
        if let code = buffer.withUnsafeBytes({ writeFully(fd, $0) }) { throw DataError.writeFailed(path, code: code) }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Flushes; a file is then fsynced, closed and renamed into place.
    public func close() throws {
        try flush()
        guard let temporary else { return }
        let descriptor = fd
        fd = -1
        let synced = fsync(descriptor) == 0 ? nil : errno
        let closed = Glibc.close(descriptor) == 0 ? nil : errno
        if let code = synced ?? closed { throw DataError.writeFailed(path, code: code, what: "cannot flush the file to disk") }
        guard rename(temporary, path) == 0 else {
            throw DataError(file: path, message: "cannot rename '\(temporary)' into place: \(String(cString: strerror(errno)))")
        }
        self.temporary = nil
    }
}
