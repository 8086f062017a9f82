import Foundation
import RecData
import RecCheckpoint
import RecProtos
import SwiftProtobuf

/// Writes a training run's curves as a TensorBoard event file (`train --tensorboard DIR`), so
/// `tensorboard --logdir DIR` shows them while the job runs and compares runs side by side.
///
/// The file is named as TensorBoard looks for it, `events.out.tfevents.<unix time>.<hostname>.<pid>`,
/// and holds TFRecord-framed `tensorboard.Event` protos: first the `brain.Event:2` file version,
/// then one event per write with `Summary.Value.simple_value` scalars. Each event goes straight to
/// the file (no buffering), so a reader sees every evaluation as soon as it is written.
public final class TensorBoardWriter {
    /// The event file.
    public let path: String
    private let handle: FileHandle
    /// The first failure of a progress write, reported by the next evaluation's write.
    private var pendingFailure: (any Error)?

    /// Creates `directory` if needed and a new event file in it, and writes the file-version event.
    public init(directory: String, date: Date = Date(),
                hostname: String = ProcessInfo.processInfo.hostName) throws {
        let name = "events.out.tfevents.\(Int(date.timeIntervalSince1970)).\(hostname).\(getpid())"
        path = URL(fileURLWithPath: directory).appendingPathComponent(name).path
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let handle = FileHandle(forWritingAtPath: path) else {
            throw TrainingError.tensorBoard(path: path, message: "cannot create the file; check that the directory exists or can be created and is writable (--tensorboard)")
        }
        self.handle = handle
        var event = Tensorboard_Event()
        event.wallTime = date.timeIntervalSince1970
        event.fileVersion = "brain.Event:2"
        event.sourceMetadata.writer = "rec-dist"
        try append(event)
    }

    deinit { try? handle.close() }

    /// Writes `scalars` as one summary event at `step`.
    public func write(scalars: [(tag: String, value: Double)], step: Int, wallTime: Date = Date()) throws {
        var event = Tensorboard_Event()
        event.wallTime = wallTime.timeIntervalSince1970
        event.step = Int64(step)
        event.summary.value = scalars.map { tag, value in
            var v = Tensorboard_Summary.Value()
            v.tag = tag
            v.simpleValue = Float(value)
            return v
        }
        try append(event)
    }

    /// Writes an evaluation's figures (the values `--metrics-out` writes, see
    /// `EvaluationRecord.tensorBoardScalars`) at its step. Throws an earlier progress write's
    /// failure first, so a full disk stops the run at the next evaluation with a clear message.
    public func write(_ record: EvaluationRecord, wallTime: Date = Date()) throws {
        if let failure = pendingFailure { throw failure }
        try write(scalars: record.tensorBoardScalars, step: record.step, wallTime: wallTime)
    }

    /// Writes a progress report's figures at `step`: `progress/train_loss` (the mean since the last
    /// evaluation), `progress/lr` and `progress/samples_per_s`. A failure is kept for the next
    /// evaluation's write to report, as progress reports happen on rank 0 alone.
    public func writeProgress(step: Int, trainLoss: Double?, learningRate: Double, samplesPerSecond: Double) {
        guard pendingFailure == nil else { return }
        var scalars: [(tag: String, value: Double)] = []
        if let trainLoss { scalars.append(("progress/train_loss", trainLoss)) }
        scalars += [("progress/lr", learningRate), ("progress/samples_per_s", samplesPerSecond)]
        do { try write(scalars: scalars, step: step) } catch { pendingFailure = error }
    }

    private func append(_ event: Tensorboard_Event) throws {
        do {
            let payload: [UInt8] = try event.serializedBytes()
            try appendRecord(handle.fileDescriptor, TensorBoardWriter.record(payload), path: path)
        } catch let error as DataError {
            throw TrainingError.tensorBoard(path: path, message: error.message + (error.hint.map { "; \($0)" } ?? ""))
        } catch {
            throw TrainingError.tensorBoard(path: path, message: "cannot encode an event: \(error)")
        }
    }

    // MARK: - TFRecord framing

    /// One TFRecord: the payload's length (UInt64, little-endian), the masked CRC-32C of those 8
    /// bytes, the payload, and the masked CRC-32C of the payload.
    public static func record(_ payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(payload.count + 16)
        let length = withUnsafeBytes(of: UInt64(payload.count).littleEndian) { Array($0) }
        out += length
        append(maskedCRC32C(length), to: &out)
        out += payload
        append(maskedCRC32C(payload), to: &out)
        return out
    }

    /// TFRecord's masked CRC-32C: the checksum rotated right by 15 bits plus 0xA282EAD8, so that a
    /// CRC over data that itself holds CRCs stays well distributed.
    public static func maskedCRC32C(_ bytes: [UInt8]) -> UInt32 {
        let crc = bytes.withUnsafeBytes { CRC32.checksum($0, .castagnoli) }
        return ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }

    private static func append(_ value: UInt32, to out: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { out += $0 }
    }
}

extension EvaluationRecord {
    /// The record's figures as TensorBoard scalars: every number `--metrics-out` writes, tagged
    /// `<section>/<its metrics-out key>`: `eval/` for the evaluation metrics, `train/` for the
    /// training loss, learning rate, gradient norm, progress and throughput, `time/` for the
    /// step-time breakdown (mean milliseconds). Left out: `step` (the event's step), the run's
    /// constants `world_size`, `eval_rows`, `k` and `ranked_users`, the texts `model` and
    /// `ranking_protocol`, and fields the record does not have (nil).
    public var tensorBoardScalars: [(tag: String, value: Double)] {
        let all: [(String, Double?)] = [
            ("eval/auc", auc), ("eval/logloss", logloss), ("eval/accuracy", accuracy),
            ("eval/mean_prediction", mean_prediction), ("eval/mean_label", mean_label),
            ("eval/calibration", calibration), ("eval/rmse", rmse), ("eval/mae", mae),
            ("eval/oracle_auc", oracle_auc),
            ("eval/hit_rate_at_10", hit_rate_at_10), ("eval/ndcg_at_10", ndcg_at_10),
            ("eval/hit_rate_at_k", hit_rate_at_k), ("eval/ndcg_at_k", ndcg_at_k),
            ("eval/recall_at_k", recall_at_k), ("eval/mrr", mrr),
            ("train/train_loss", train_loss), ("train/lr", lr), ("train/grad_norm", grad_norm),
            ("train/clipped_steps", clipped_steps.map(Double.init)),
            ("train/epoch", Double(epoch)), ("train/samples", Double(samples)),
            ("train/samples_per_s", samples_per_s), ("train/elapsed_s", elapsed_s),
            ("time/step_ms", step_ms), ("time/forward_ms", forward_ms), ("time/backward_ms", backward_ms),
            ("time/communication_ms", communication_ms), ("time/optimizer_ms", optimizer_ms),
            ("time/data_wait_ms", data_wait_ms),
        ]
        return all.compactMap { tag, value in value.map { (tag, $0) } }
    }
}
