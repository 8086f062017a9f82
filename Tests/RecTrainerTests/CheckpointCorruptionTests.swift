import Foundation
import Logging
import RecCheckpoint
import RecCore
import RecData
import RecDistributed
@testable import RecTrainer
import Testing

/// A damaged checkpoint is refused with an error every time: truncations, flipped bytes, and
/// hand edits that keep the checksums consistent. Loading never crashes or reads out of bounds.
struct CheckpointCorruptionTests {
    /// A real checkpoint of a small dlrm with Adam state, written once.
    static let original: (dir: String, config: TrainingConfig) = {
        let root = NSTemporaryDirectory() + "rec-dist-corruption-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let data = root + "/synth.tsv"
        try! SynthGenerator(seed: 3).write(rows: 300, to: data, probabilitiesPath: nil)
        var model = ModelConfig(kind: .dlrm)
        model.hashBuckets = 20
        model.embeddingDim = 4
        model.bottom = [8]
        model.top = [8]
        var config = TrainingConfig(dataPath: data, model: model, optimizer: OptimizerConfig(kind: .adam))
        config.batchSize = 16
        config.steps = 3
        config.checkpointDir = root + "/ck"
        var logger = Logger(label: "test")
        logger.logLevel = .error
        _ = try! Trainer(config: config, communicator: LocalCommunicator(), logger: logger).run()
        return (root + "/ck/step-00000003", config)
    }()

    /// Copies the original checkpoint to a fresh directory.
    static func copy() throws -> String {
        let dir = NSTemporaryDirectory() + "rec-dist-corrupt-\(UUID().uuidString.prefix(8))"
        try FileManager.default.copyItem(atPath: original.dir, toPath: dir)
        return dir
    }

    /// Validates and loads `dir` the way a resume does; returns the error, or nil if it loaded.
    static func load(_ dir: String) -> (any Error)? {
        let config = original.config
        let model = makeModel(config.model, maxBatch: 16)
        let tables = model.embeddings!
        let buffers = Checkpoint.Buffers(
            layout: model.layout, parameters: FloatBuffer(count: model.layout.count),
            embeddingTable: FloatBuffer(count: tables.rowCount * tables.dim), tables: tables,
            optimizer: Optimizer(config: config.optimizer, parameterCount: model.layout.count,
                                 embeddingRows: tables.rowCount, embeddingDim: tables.dim))
        do {
            let state = try Checkpoint.validate(dir)
            try Checkpoint.load(dir, state: state, into: buffers)
            return nil
        } catch {
            return error
        }
    }

    /// Rewrites CHECKSUMS to match the files as they are now (a "careful" hand edit).
    static func resum(_ dir: String) throws {
        var lines: [String] = []
        for file in CheckpointDirectory.files {
            let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + file))
            let crc = data.withUnsafeBytes { CRC32.checksum($0) }
            lines.append(String(format: "%08x %d %@", crc, data.count, file))
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: dir + "/CHECKSUMS", atomically: true, encoding: .utf8)
    }

    static let files = ["model.safetensors", "optimizer.safetensors", "trainer.json", "CHECKSUMS"]

    /// --auto-resume skips a damaged newest checkpoint (with a warning) and resumes from the
    /// newest valid one.
    @Test func autoResumeSkipsADamagedCheckpoint() throws {
        let root = NSTemporaryDirectory() + "rec-dist-autoresume-\(UUID().uuidString.prefix(8))"
        var config = Self.original.config
        config.checkpointDir = root
        config.checkpointEvery = 1
        config.keep = 5
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        _ = try Trainer(config: config, communicator: LocalCommunicator(), logger: logger).run()
        #expect(Checkpoint.list(root: root) == ["step-00000001", "step-00000002", "step-00000003"])
        let damaged = URL(fileURLWithPath: root + "/step-00000003/model.safetensors")
        var bytes = try Data(contentsOf: damaged)
        bytes[bytes.count / 2] ^= 0x40
        try bytes.write(to: damaged)
        config.autoResume = true
        config.steps = 4
        let result = try Trainer(config: config, communicator: LocalCommunicator(), logger: logger).run()
        #expect(result.resumedFrom == 2)
        #expect(result.steps == 4)
    }

    @Test func theOriginalLoads() throws {
        #expect(Self.load(try Self.copy()) == nil)
    }

    @Test func truncationsAreRefused() throws {
        var rng = RNG(seed: 1)
        for file in Self.files {
            let size = try Data(contentsOf: URL(fileURLWithPath: Self.original.dir + "/" + file)).count
            // (Dropping only CHECKSUMS's final newline loses nothing, so it is not a corruption.)
            var offsets = Set([0, 1, 7, 8, 9, size / 2, size - 1].filter { $0 < size })
            if file == "CHECKSUMS" { offsets.remove(size - 1) }
            while offsets.count < 40 {
                let o = rng.nextInt(below: size)
                if !(file == "CHECKSUMS" && o == size - 1) { offsets.insert(o) }
            }
            for offset in offsets {
                let dir = try Self.copy()
                let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/" + file))
                try handle.truncate(atOffset: UInt64(offset))
                try handle.close()
                #expect(Self.load(dir) != nil, "\(file) truncated to \(offset) bytes was accepted")
                try? FileManager.default.removeItem(atPath: dir)
            }
        }
    }

    @Test func flippedBytesAreRefused() throws {
        var rng = RNG(seed: 2)
        for trial in 0..<300 {
            let file = Self.files[trial % Self.files.count]
            let dir = try Self.copy()
            let url = URL(fileURLWithPath: dir + "/" + file)
            var data = try Data(contentsOf: url)
            let offset = rng.nextInt(below: data.count)
            data[offset] ^= UInt8(1 + rng.nextInt(below: 255))
            try data.write(to: url)
            let error = Self.load(dir)
            // A flip inside CHECKSUMS may turn one hex digit into an equivalent spelling
            // (e.g. 'a' -> 'A'); anything else must be refused.
            if error == nil {
                let text = String(decoding: data, as: UTF8.self)
                let original = try String(contentsOfFile: Self.original.dir + "/CHECKSUMS", encoding: .utf8)
                #expect(file == "CHECKSUMS" && text.lowercased() == original,
                        "flip of byte \(offset) in \(file) was accepted")
            }
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    /// Edits of the safetensors header with consistent checksums.
    @Test(arguments: [
        "huge header length", "header length past the JSON", "shape that does not fit its bytes",
        "transposed shape", "offsets past the end", "F16 dtype", "a missing tensor", "an absurd shape",
    ])
    func editedHeadersAreRefused(edit: String) throws {
        let dir = try Self.copy()
        let url = URL(fileURLWithPath: dir + "/model.safetensors")
        let data = try Data(contentsOf: url)
        let length = Int(data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        var header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + length))) as! [String: Any]
        let body = data.subdata(in: (8 + length)..<data.count)
        var rawLength: UInt64?
        func entry(_ name: String) -> [String: Any] { header[name] as! [String: Any] }
        switch edit {
        case "huge header length": rawLength = 1 << 40
        case "header length past the JSON": rawLength = UInt64(length + 8)
        case "shape that does not fit its bytes":
            var e = entry("bottom.0.weight"); e["shape"] = [13, 9]; header["bottom.0.weight"] = e
        case "transposed shape":
            var e = entry("bottom.0.weight"); e["shape"] = [8, 13]; header["bottom.0.weight"] = e
        case "offsets past the end":
            var e = entry("top.1.bias"); let o = e["data_offsets"] as! [Int]
            e["data_offsets"] = [o[0] + 1 << 30, o[1] + 1 << 30]; header["top.1.bias"] = e
        case "F16 dtype":
            var e = entry("top.0.weight"); e["dtype"] = "F16"; header["top.0.weight"] = e
        case "a missing tensor": header["embedding.C7"] = nil
        case "an absurd shape":
            var e = entry("bottom.0.weight"); e["shape"] = [1 << 40, 1 << 40]; header["bottom.0.weight"] = e
        default: Issue.record("unknown edit \(edit)")
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (json.count + 8) % 8 != 0 { json.append(0x20) }
        var out = Data()
        var n = (rawLength ?? UInt64(json.count)).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(json)
        out.append(body)
        try out.write(to: url)
        try Self.resum(dir)
        let error = try #require(Self.load(dir), "edit '\(edit)' was accepted")
        #expect("\(error)".contains("model.safetensors") || "\(error)".contains(dir), "\(error)")
    }

    /// Edits of trainer.json or the optimizer state, with consistent checksums.
    @Test(arguments: ["future format version", "a different model", "renamed optimizer state"])
    func editedStateIsRefused(edit: String) throws {
        let dir = try Self.copy()
        switch edit {
        case "future format version", "a different model":
            let url = URL(fileURLWithPath: dir + "/trainer.json")
            var text = try String(contentsOf: url, encoding: .utf8)
            text = edit == "future format version"
                ? text.replacingOccurrences(of: "\"formatVersion\" : 1", with: "\"formatVersion\" : 7")
                : text.replacingOccurrences(of: "\"hashBuckets\" : 20", with: "\"hashBuckets\" : 21")
            try text.write(to: url, atomically: true, encoding: .utf8)
        default:
            let url = URL(fileURLWithPath: dir + "/optimizer.safetensors")
            var data = try Data(contentsOf: url)
            let range = data.range(of: Data("embedding.m".utf8))!
            data.replaceSubrange(range, with: Data("embedding.q".utf8))
            try data.write(to: url)
        }
        try Self.resum(dir)
        if edit == "a different model" {
            // The files are consistent, so the resume itself must notice the model mismatch.
            var config = Self.original.config
            config.resume = dir
            config.steps = 4
            config.checkpointDir = nil
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            do {
                _ = try Trainer(config: config, communicator: LocalCommunicator(), logger: logger).run()
                Issue.record("resuming a checkpoint of another model was accepted")
            } catch {
                #expect("\(error)".contains("different model"), "\(error)")
            }
        } else {
            #expect(Self.load(dir) != nil, "edit '\(edit)' was accepted")
        }
    }
}
