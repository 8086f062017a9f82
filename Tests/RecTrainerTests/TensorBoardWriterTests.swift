import Foundation
import RecCheckpoint
@testable import RecTrainer
import Testing

/// The TensorBoard event file, byte for byte against what TensorBoard's own Python code
/// (`tensorboard.compat.proto.event_pb2` and `pywrap_tensorflow.masked_crc32c`) produces.
struct TensorBoardWriterTests {
    static func hex(_ s: String) -> [UInt8] {
        stride(from: 0, to: s.count, by: 2).map {
            let i = s.index(s.startIndex, offsetBy: $0)
            return UInt8(s[i..<s.index(i, offsetBy: 2)], radix: 16)!
        }
    }

    /// Event(wall_time=1.5, file_version="brain.Event:2", source_metadata.writer="rec-dist").
    static let fileVersionEvent = hex("09000000000000f83f1a0d627261696e2e4576656e743a32520a0a087265632d64697374")
    /// Event(wall_time=2.0, step=7) with one summary value, tag "eval/auc", simple_value 0.75.
    static let summaryEvent = hex("09000000000000004010072a110a0f0a086576616c2f617563150000403f")
    /// The summary event as one TFRecord: length 30, its masked CRC-32C 0x3212DCD9, the event,
    /// the event's masked CRC-32C 0xA32E26E0 (all little-endian).
    static let summaryRecord = hex("1e00000000000000" + "d9dc1232") + summaryEvent + hex("e0262ea3")

    @Test func crcOfBothPolynomialsMatchesKnownVectors() {
        func crc(_ bytes: [UInt8], _ polynomial: CRC32.Polynomial) -> UInt32 {
            bytes.withUnsafeBytes { CRC32.checksum($0, polynomial) }
        }
        let digits = Array("123456789".utf8)
        #expect(crc(digits, .ieee) == 0xCBF4_3926)
        #expect(crc(digits, .castagnoli) == 0xE306_9283)
        // RFC 3720 (iSCSI) vectors, long enough for the 8-bytes-at-a-time path.
        #expect(crc([UInt8](repeating: 0, count: 32), .castagnoli) == 0x8A91_36AA)
        #expect(crc((0..<32).map(UInt8.init), .castagnoli) == 0x46DD_794E)
        #expect(crc([UInt8](repeating: 0xFF, count: 32), .castagnoli) == 0x62A8_AB43)
        // Fed in pieces, as a checkpoint is.
        var pieces = CRC32(.castagnoli)
        digits[..<5].withUnsafeBytes { pieces.update($0) }
        digits[5...].withUnsafeBytes { pieces.update($0) }
        #expect(pieces.value == 0xE306_9283)
        #expect(TensorBoardWriter.maskedCRC32C(digits) == 0xC78A_B0E5)
    }

    @Test func framesARecordAsTensorFlowDoes() {
        #expect(TensorBoardWriter.record(Self.summaryEvent) == Self.summaryRecord)
    }

    @Test func writesTheFileVersionThenSummaries() throws {
        let dir = NSTemporaryDirectory() + "tb-writer-\(UUID().uuidString.prefix(8))/nested"
        defer { try? FileManager.default.removeItem(atPath: (dir as NSString).deletingLastPathComponent) }
        let writer = try TensorBoardWriter(directory: dir, date: Date(timeIntervalSince1970: 1.5), hostname: "node7")
        #expect(writer.path == dir + "/events.out.tfevents.1.node7.\(getpid())")
        try writer.write(scalars: [("eval/auc", 0.75)], step: 7, wallTime: Date(timeIntervalSince1970: 2))
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: writer.path)))
        #expect(bytes == TensorBoardWriter.record(Self.fileVersionEvent) + Self.summaryRecord)
    }

    @Test func anUncreatableFileNamesThePathAndTheFlag() throws {
        let blocker = NSTemporaryDirectory() + "tb-blocker-\(UUID().uuidString.prefix(8))"
        try "a file".write(toFile: blocker, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: blocker) }
        let error = #expect(throws: TrainingError.self) { try TensorBoardWriter(directory: blocker + "/tb") }
        let text = error.map { "\($0)" } ?? ""
        #expect(text.contains(blocker + "/tb/events.out.tfevents.") && text.contains("--tensorboard"), "\(text)")
    }

    /// Every number of a metrics-out record becomes a scalar tagged `<section>/<its key>`, except
    /// the documented few: a field added to EvaluationRecord without a tag fails here.
    @Test func everyNumberOfTheMetricsRecordIsAScalar() throws {
        var record = EvaluationRecord(step: 30, epoch: 2, samples: 960, train_loss: 0.5, auc: 0.7, logloss: 0.6,
                                      accuracy: 0.8, mean_prediction: 0.3, mean_label: 0.25, eval_rows: 100,
                                      oracle_auc: 0.9, samples_per_s: 1000, elapsed_s: 3, world_size: 2, model: "mlp")
        var value = 1.0
        func next() -> Double { value += 1; return value }
        record.step_ms = next(); record.forward_ms = next(); record.backward_ms = next()
        record.communication_ms = next(); record.optimizer_ms = next(); record.data_wait_ms = next()
        record.hit_rate_at_10 = next(); record.ndcg_at_10 = next(); record.calibration = next()
        record.rmse = next(); record.mae = next(); record.ranking_protocol = "1 vs 99"; record.k = 20
        record.ranked_users = 50; record.hit_rate_at_k = next(); record.ndcg_at_k = next()
        record.recall_at_k = next(); record.mrr = next(); record.lr = next(); record.grad_norm = next()
        record.clipped_steps = 4

        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(record)) as! [String: Any]
        let numbers = json.compactMapValues { $0 as? NSNumber }.mapValues { $0.doubleValue }
        let excluded: Set = ["step", "world_size", "eval_rows", "k", "ranked_users"]
        var scalars: [String: Double] = [:]
        for (tag, v) in record.tensorBoardScalars {
            let key = String(tag.split(separator: "/").last!)
            #expect(scalars[key] == nil, "\(key) twice")
            scalars[key] = v
        }
        #expect(Set(scalars.keys) == Set(numbers.keys).subtracting(excluded))
        for (key, v) in scalars { #expect(numbers[key] == v, "\(key)") }
    }
}
