import Foundation
import Logging
import RecCheckpoint
import RecCore
import RecData
import RecDistributed
@testable import RecTrainer
import Testing

/// One run owns a checkpoint directory; a checkpoint knows its lineage and its data, and a
/// resume on other data is refused (or, with --restart-data, starts the new data from its
/// first row); leftovers of interrupted writes are removed.
struct CheckpointOwnershipTests {
    static func scratch(_ name: String) throws -> String {
        let root = NSTemporaryDirectory() + "rec-dist-\(name)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        return root
    }

    static func config(data: String, checkpoints: String) -> TrainingConfig {
        var model = ModelConfig(kind: .dlrm)
        model.hashBuckets = 20
        model.embeddingDim = 4
        model.bottom = [8]
        model.top = [8]
        var config = TrainingConfig(dataPath: data, model: model, optimizer: OptimizerConfig(kind: .adam))
        config.batchSize = 16
        config.steps = 3
        config.checkpointDir = checkpoints
        config.checkpointEvery = 1
        config.keep = 5
        return config
    }

    static func run(_ config: TrainingConfig) throws -> TrainingResult {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return try Trainer(config: config, communicator: LocalCommunicator(), logger: logger).run()
    }

    /// The error `body` throws, as text; "" if it throws none.
    static func failure(_ body: () throws -> Void) -> String {
        do { try body() } catch { return "\(error)" }
        return ""
    }

    @Test func aSecondWriterIsRefused() throws {
        let root = try Self.scratch("lock")
        let data = root + "/synth.tsv"
        try SynthGenerator(seed: 3).write(rows: 300, to: data, probabilitiesPath: nil)
        let holder = try CheckpointLock(root: root + "/ck")   // another run, as far as the trainer can tell
        var refusal: (any Error)?
        do { _ = try Self.run(Self.config(data: data, checkpoints: root + "/ck")) } catch { refusal = error }
        guard case let .checkpointConflict(_, message)? = refusal as? TrainingError else {
            Issue.record("a second writer was not refused: \(String(describing: refusal))")
            return
        }
        #expect(message.contains("the checkpoint directory is in use: process \(getpid()) on "), "\(message)")
        #expect(Checkpoint.list(root: root + "/ck").isEmpty)
        // Once the other run ends, the directory is free.
        holder.release()
        let result = try Self.run(Self.config(data: data, checkpoints: root + "/ck"))
        #expect(result.steps == 3 && Checkpoint.list(root: root + "/ck").count == 3)
        // A fresh run in a directory that holds another run's checkpoints would replace them.
        let fresh = Self.failure { _ = try Self.run(Self.config(data: data, checkpoints: root + "/ck")) }
        #expect(fresh.contains("already holds 3 checkpoint(s) of an earlier run (newest step-00000003)") && fresh.contains("--auto-resume"), "\(fresh)")
        #expect(Checkpoint.list(root: root + "/ck").count == 3)
    }

    /// Pruning removes only the run's own lineage: another run's checkpoints and ones without a
    /// lineage (older rec-dist) stay.
    @Test func pruningKeepsOtherLineages() throws {
        let root = try Self.scratch("lineage")
        func make(_ step: Int, _ lineage: String?) throws {
            let dir = root + "/" + CheckpointDirectory.name(step: step)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let json = lineage.map { "{\"lineage\": \"\($0)\", \"step\": \(step)}" } ?? "{\"step\": \(step)}"
            try json.write(toFile: dir + "/trainer.json", atomically: true, encoding: .utf8)
        }
        try make(1, "ours"); try make(2, "theirs"); try make(3, nil); try make(4, "ours"); try make(5, "theirs"); try make(6, "ours")
        let removed = Checkpoint.prune(root: root, keep: 1, protected: "step-00000004", lineage: "ours")
        #expect(removed == ["step-00000001"])
        #expect(Checkpoint.list(root: root) == ["step-00000002", "step-00000003", "step-00000004", "step-00000005", "step-00000006"])
    }

    /// A checkpoint records its data; resuming it on other data is refused naming what differs,
    /// and --restart-data continues the model on the new data from its first row.
    @Test func resumeOnOtherDataIsRefused() throws {
        let root = try Self.scratch("data-identity")
        let data = root + "/a.tsv", other = root + "/b.tsv", shorter = root + "/c.tsv"
        try SynthGenerator(seed: 3).write(rows: 300, to: data, probabilitiesPath: nil)
        try SynthGenerator(seed: 4).write(rows: 300, to: other, probabilitiesPath: nil)
        try SynthGenerator(seed: 3).write(rows: 100, to: shorter, probabilitiesPath: nil)
        var config = Self.config(data: data, checkpoints: root + "/ck")
        _ = try Self.run(config)
        let saved = try Checkpoint.validate(root + "/ck/step-00000003")
        let identity = try #require(saved.data)
        let size = try FileManager.default.attributesOfItem(atPath: data)[.size] as! Int
        #expect(identity.path == data && identity.rows == 270 && identity.bytes == size)
        #expect(saved.lineage != nil)

        config.autoResume = true
        config.steps = 5
        config.dataPath = other
        let message = Self.failure { _ = try Self.run(config) }
        #expect(message.contains("it was trained on other data: path '\(data)', now '\(other)'") && message.contains("content fingerprint")
                && message.contains("--restart-data"), "\(message)")
        #expect(!message.contains("training rows"), "same row count: \(message)")
        config.dataPath = shorter
        let rows = Self.failure { _ = try Self.run(config) }
        #expect(rows.contains("270 training rows, now 90"), "\(rows)")
        #expect(Checkpoint.list(root: root + "/ck").last == "step-00000003", "nothing was written")

        // The same data, moved: the same identity.
        try FileManager.default.copyItem(atPath: data, toPath: root + "/moved.tsv")
        config.dataPath = root + "/moved.tsv"
        config.steps = 4
        #expect(try Self.run(config).resumedFrom == 3)

        config.dataPath = other
        config.steps = 6
        config.restartData = true
        let restarted = try Self.run(config)
        #expect(restarted.resumedFrom == 4 && restarted.steps == 6)
        let after = try Checkpoint.validate(root + "/ck/step-00000006")
        #expect(after.epoch == 0 && after.epochRowOffset == 2 * 16, "two steps into the new data: \(after.epoch) \(after.epochRowOffset)")
        #expect(after.data?.path == other && after.lineage == saved.lineage)
    }

    /// A same-size edit in the middle of the data (one label flipped, 3 MiB into a 6 MiB file) is
    /// caught by the fingerprint; a checkpoint whose identity was taken the older way (first and
    /// last MiB, no `scheme`) is compared the older way, so it still resumes on its own data.
    @Test func midFileEditIsRefusedAndOlderFingerprintsResume() throws {
        let root = try Self.scratch("data-identity-middle")
        let data = root + "/a.tsv"
        try SynthGenerator(seed: 5).write(rows: 60_000, to: data, probabilitiesPath: nil)
        var config = Self.config(data: data, checkpoints: root + "/ck")
        _ = try Self.run(config)
        let saved = try Checkpoint.validate(root + "/ck/step-00000003")
        #expect(saved.data?.scheme == DataIdentity.currentScheme)

        // Flip the label of the first line that starts past the middle.
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: data)))
        #expect(bytes.count > 4 << 20, "\(bytes.count) bytes: too small to test the middle")
        var at = bytes.count / 2
        while bytes[at - 1] != UInt8(ascii: "\n") { at += 1 }
        bytes[at] = bytes[at] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
        try Data(bytes).write(to: URL(fileURLWithPath: data))
        let older = try DataIdentity(path: data, prepared: false, rows: saved.data!.rows, scheme: 1)
        let before = try #require(saved.data)
        #expect(before.differences(from: try DataIdentity(path: data, prepared: false, rows: before.rows)).contains { $0.contains("content fingerprint") })

        config.autoResume = true
        config.steps = 5
        let message = Self.failure { _ = try Self.run(config) }
        #expect(message.contains("it was trained on other data") && message.contains("content fingerprint"), "\(message)")

        // The same checkpoint as an older rec-dist wrote it: its identity by the first and last
        // MiB, no scheme. The middle edit is invisible to that scheme, so it resumes.
        let json = root + "/ck/step-00000003/trainer.json"
        var object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
        var identity = try #require(object["data"] as? [String: Any])
        identity["fingerprint"] = older.fingerprint
        identity.removeValue(forKey: "scheme")
        object["data"] = identity
        try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]).write(to: URL(fileURLWithPath: json))
        try CheckpointCorruptionTests.resum(root + "/ck/step-00000003")
        #expect(try Self.run(config).resumedFrom == 3)
    }

    /// A checkpoint without a data identity (older rec-dist) whose data position lies beyond this
    /// data's rows is refused instead of running a negative number of steps.
    @Test func positionBeyondTheDataIsRefused() throws {
        let root = try Self.scratch("data-position")
        let data = root + "/a.tsv", shorter = root + "/c.tsv"
        try SynthGenerator(seed: 3).write(rows: 300, to: data, probabilitiesPath: nil)
        try SynthGenerator(seed: 3).write(rows: 40, to: shorter, probabilitiesPath: nil)
        var config = Self.config(data: data, checkpoints: root + "/ck")
        _ = try Self.run(config)
        // Remove the identity, with consistent checksums.
        let dir = root + "/ck/step-00000003"
        var state = try Checkpoint.validate(dir)
        state.data = nil
        try Checkpoint.jsonEncoder().encode(state).write(to: URL(fileURLWithPath: dir + "/trainer.json"))
        try CheckpointCorruptionTests.resum(dir)
        config.autoResume = true
        config.steps = 5
        config.dataPath = shorter
        let message = Self.failure { _ = try Self.run(config) }
        #expect(message.contains("its data position (48 rows into epoch 1) lies beyond this data's 36 training rows"), "\(message)")
    }

    /// Directories of interrupted writes by processes that are gone are removed when a run claims
    /// the directory; a live process's are left.
    @Test func staleTemporariesAreRemoved() throws {
        let root = try Self.scratch("stale")
        let data = root + "/a.tsv"
        try SynthGenerator(seed: 3).write(rows: 300, to: data, probabilitiesPath: nil)
        let ck = root + "/ck"
        // A pid that is not running: the largest pid the kernel hands out, plus one.
        let maxPid = (try? String(contentsOfFile: "/proc/sys/kernel/pid_max", encoding: .utf8))
            .flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 4_194_304
        let dead = ck + "/.step-00000002.tmp-\(maxPid + 1)", deadOld = ck + "/.step-00000001.old-\(maxPid + 1)"
        let live = ck + "/.step-00000009.tmp-1"
        for dir in [dead, deadOld, live] { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        try Data(count: 1000).write(to: URL(fileURLWithPath: dead + "/model.safetensors"))
        _ = try Self.run(Self.config(data: data, checkpoints: ck))
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: ck))
        #expect(!left.contains((dead as NSString).lastPathComponent) && !left.contains((deadOld as NSString).lastPathComponent), "\(left)")
        #expect(left.contains((live as NSString).lastPathComponent), "pid 1 runs: \(left)")
    }
}
