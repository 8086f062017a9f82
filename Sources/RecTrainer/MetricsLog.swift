import Foundation
import RecData

extension Trainer {
    /// Opens (creates, or appends to when resuming) the metrics log of --metrics-out.
    func openMetricsLog(_ path: String, append: Bool) throws -> FileHandle {
        let url = URL(fileURLWithPath: path)
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        if !(append && FileManager.default.fileExists(atPath: path)) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw TrainingError.metricsLog(path: path, message: "cannot create the file; check that its directory exists or can be created and is writable (--metrics-out)")
            }
        }
        let handle = try FileHandle(forWritingTo: url)
        try handle.seekToEnd()
        return handle
    }

    /// Appends one evaluation as a JSON line, a metric without a value (NaN or an infinity:
    /// an evaluation without rows, a calibration without positives) as null. A failed write
    /// (a full disk) leaves no partial line.
    func appendMetrics(_ record: EvaluationRecord, to handle: FileHandle?) throws {
        guard let handle else { return }
        let path = config.metricsPath ?? ""
        let encoder = JSONEncoder()
        let marker = "rec-dist-non-finite"
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: marker, negativeInfinity: marker, nan: marker)
        var object = try JSONSerialization.jsonObject(with: encoder.encode(record)) as! [String: Any]
        for (key, value) in object where value as? String == marker { object[key] = NSNull() }
        let line = Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) + [0x0A]
        do { try appendRecord(handle.fileDescriptor, line, path: path) } catch {
            throw TrainingError.metricsLog(path: path, message: error.message + (error.hint.map { "; \($0)" } ?? ""))
        }
    }
}

extension Trainer {
    /// Rank 0 opens --metrics-out (appending when the run resumes); every rank learns whether it
    /// could, or the others would wait for it in the first step's collectives.
    func openMetricsLog(resuming: Bool) throws -> FileHandle? {
        guard let path = config.metricsPath else { return nil }
        return try onRankZero(stage: "opening the metrics log") { try openMetricsLog(path, append: resuming) }
    }

    /// Rank 0 creates the TensorBoard event file of --tensorboard; every rank learns whether it could.
    func openTensorBoard() throws -> TensorBoardWriter? {
        guard let directory = config.tensorBoardDir else { return nil }
        return try onRankZero(stage: "creating the TensorBoard event file") { try TensorBoardWriter(directory: directory) }
    }

    /// Runs `open` on rank 0 (nil elsewhere) and agrees on its failure across the ranks.
    private func onRankZero<T>(stage: String, _ open: () throws -> T) throws -> T? {
        var failure: (any Error)?
        var value: T?
        if rank == 0 {
            do { value = try open() } catch { failure = error }
        }
        try agree(failure, stage: stage)
        return value
    }
}
