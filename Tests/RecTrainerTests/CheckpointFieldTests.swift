import Foundation
import RecCheckpoint
import RecCore
@testable import RecTrainer
import Testing

/// trainer.json fields edited out of range, and weights that are not finite, with checksums
/// recomputed: each is refused by name before anything is allocated or trained from it.
struct CheckpointFieldTests {
    /// Edits trainer.json of a copy of the original checkpoint as JSON, recomputing CHECKSUMS.
    static func edited(_ edit: @Sendable (inout [String: Any]) -> Void) throws -> String {
        let dir = try CheckpointCorruptionTests.copy()
        let url = URL(fileURLWithPath: dir + "/trainer.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        edit(&json)
        try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]).write(to: url)
        try CheckpointCorruptionTests.resum(dir)
        return dir
    }

    static func model(_ edit: @escaping @Sendable (inout [String: Any]) -> Void) -> @Sendable (inout [String: Any]) -> Void {
        { json in
            var config = json["config"] as! [String: Any]
            var model = config["model"] as! [String: Any]
            edit(&model)
            config["model"] = model
            json["config"] = config
        }
    }

    static let edits: [(String, String, @Sendable (inout [String: Any]) -> Void)] = [
        ("epochRowOffset -3", "epochRowOffset -3 is out of range", { $0["epochRowOffset"] = -3 }),
        ("epochRowOffset 1e15", "epochRowOffset 1000000000000000 is out of range", { $0["epochRowOffset"] = 1_000_000_000_000_000 }),
        ("step -5", "step -5 is out of range", { $0["step"] = -5 }),
        ("step 2^62", "step 4611686018427387904 is out of range", { $0["step"] = 1 << 62 }),
        ("worldSize 0", "worldSize 0 is out of range", { $0["worldSize"] = 0 }),
        ("bestCheckpoint path", "bestCheckpoint '../../x' is not a checkpoint name", { $0["bestCheckpoint"] = "../../x" }),
        ("bestMetric NaN", "bestMetric nan is not a finite number", { $0["bestMetric"] = "NaN" }),
        ("batchSize 0", "config.batchSize 0 is out of range", { json in
            var config = json["config"] as! [String: Any]; config["batchSize"] = 0; json["config"] = config }),
        ("memoryPerRank -1", "config.memoryPerRank -1 is out of range", { json in
            var config = json["config"] as! [String: Any]; config["memoryPerRank"] = -1; json["config"] = config }),
        ("bucketBytes 0", "config.bucketBytes 0 is out of range", { json in
            var config = json["config"] as! [String: Any]; config["bucketBytes"] = 0; json["config"] = config }),
        ("embeddingDim 100000", "config.model: embedding_dim 100000 is out of range", model { $0["embeddingDim"] = 100_000 }),
        ("bottom [100000000]", "config.model: bottom layer width 100000000 is out of range", model { $0["bottom"] = [100_000_000] }),
        ("bottom [65536, 65536]", "config.model.bottom [65536, 65536] implies a 65536 x 65536 weight", model { $0["bottom"] = [65536, 65536] }),
        ("hashBuckets 2^20", "config.model.hashBuckets 1048576: the embedding tables need more rows than model.safetensors holds", model { $0["hashBuckets"] = 1 << 20 }),
        ("categoricalFields 2^40", "config.model.categoricalFields 1099511627776 is out of range", model { $0["categoricalFields"] = 1 << 40 }),
    ]

    @Test(arguments: edits.indices)
    func outOfRangeFieldsAreRefused(_ index: Int) throws {
        let (name, expected, edit) = Self.edits[index]
        let dir = try Self.edited(edit)
        let error = try #require(CheckpointCorruptionTests.load(dir), "\(name) was accepted")
        #expect("\(error)".contains("trainer.json: \(expected)") && "\(error)".contains(dir), "\(name): \(error)")
    }

    /// A NaN in the weights (checksums valid) is refused naming the tensor.
    @Test(arguments: ["model.safetensors", "optimizer.safetensors"])
    func nonFiniteWeightsAreRefused(file: String) throws {
        let dir = try CheckpointCorruptionTests.copy()
        let url = URL(fileURLWithPath: dir + "/" + file)
        var data = try Data(contentsOf: url)
        let (entries, _) = try data.withUnsafeBytes { try SafeTensors.parseHeader($0, path: url.path) }
        let name = entries.keys.sorted().first { $0.hasPrefix("embedding") }!
        let nan = Float.nan.bitPattern.littleEndian
        let at = entries[name]!.range.lowerBound + 4 * 3
        withUnsafeBytes(of: nan) { data.replaceSubrange(at..<(at + 4), with: $0) }
        try data.write(to: url)
        try CheckpointCorruptionTests.resum(dir)
        let error = try #require(CheckpointCorruptionTests.load(dir), "a NaN in \(file) was accepted")
        #expect("\(error)".contains("tensor \(name) holds nan at index 3") && "\(error)".contains(file), "\(error)")
    }

    /// A resume refused for another model names the keys that differ, also those the short
    /// description does not show (the data's vocabulary sizes, its dense fields).
    @Test func modelMismatchNamesTheDifference() {
        var saved = ModelConfig(kind: .dlrm)
        saved.categoricalFields = 2
        saved.vocabularySizes = [10, 20]
        var current = saved
        current.vocabularySizes = [10, 21]
        current.denseInputs = 4
        #expect(Trainer.differences(saved, current) == "denseInputs: checkpoint 13, this run 4; vocabularySizes: checkpoint [10,20], this run [10,21]")
    }
}
