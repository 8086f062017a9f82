import Foundation
import Testing

/// Seeded mutations of a small checkpoint, through the real binary: truncation at random
/// offsets, bit flips, and trainer.json fields set to values out of range with CHECKSUMS
/// recomputed. Whatever the mutation, `predict` and `train --auto-resume` end with a documented
/// exit code (never a signal), a failure names the file or field, nothing partial is left, and
/// the previous checkpoint is untouched. The seed is printed in every failure.
@Suite(.serialized)
struct CheckpointFuzzTests {
    static let seed: UInt64 = 0x5EED_2026
    static let files = ["model.safetensors", "optimizer.safetensors", "trainer.json"]
    /// Exit codes the README documents for these commands.
    static let documented: Set<Int32> = [0, 1, 64, 74]

    /// One mutation of checkpoint `dir`, described for the failure message; `names` what a
    /// refusal may name.
    static func mutate(_ dir: String, rng: inout SeededRNG) throws -> (what: String, names: [String]) {
        switch rng.below(3) {
        case 0:
            let file = files[rng.below(files.count)], path = dir + "/" + file
            var data = try Data(contentsOf: URL(fileURLWithPath: path))
            let offset = rng.below(data.count)
            data = data.prefix(offset)
            try data.write(to: URL(fileURLWithPath: path))
            return ("\(file) truncated to \(offset) bytes", [file, "CHECKSUMS"])
        case 1:
            let file = files[rng.below(files.count)], path = dir + "/" + file
            var data = try Data(contentsOf: URL(fileURLWithPath: path))
            let offset = rng.below(data.count), bit = rng.below(8)
            data[offset] ^= UInt8(1 << bit)
            try data.write(to: URL(fileURLWithPath: path))
            return ("\(file) bit \(bit) of byte \(offset) flipped", [file, "CHECKSUMS"])
        default:
            let fields = [["step"], ["epoch"], ["epochRowOffset"], ["optimizerStep"], ["samplesSeen"], ["worldSize"],
                          ["config", "batchSize"], ["config", "evalBatchSize"], ["config", "model", "embeddingDim"],
                          ["config", "model", "hashBuckets"], ["config", "model", "mlpDenseFeatures"], ["config", "model", "hidden"]]
            let values: [Any] = [-5, -1, 0, 1 << 62, 1e15, 65_537, 100_000_000, 1e300, [100_000_000], [65_536, 65_536, 65_536], "x"]
            let field = fields[rng.below(fields.count)], value = values[rng.below(values.count)]
            let path = dir + "/trainer.json"
            var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
            func set(_ object: inout [String: Any], _ keys: ArraySlice<String>) {
                if keys.count == 1 { object[keys.first!] = value; return }
                var inner = object[keys.first!] as? [String: Any] ?? [:]
                set(&inner, keys.dropFirst())
                object[keys.first!] = inner
            }
            set(&json, field[...])
            try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
            try RecDist.rewriteChecksums(dir)
            return ("trainer.json \(field.joined(separator: ".")) = \(value) (checksums recomputed)", ["trainer.json", field.last!])
        }
    }

    @Test func mutatedCheckpointsEndCleanly() throws {
        let data = try RecDist.synthData(rows: 2000)
        let base = try RecDist.scratch("fuzz-base")
        let trained = try RecDist.single(["train", "--data", data, "--steps", "2", "--checkpoint-every", "1", "--checkpoint-dir", base])
        try #require(trained.status == 0, "\(trained.all)")
        var rng = SeededRNG(state: Self.seed)
        for i in 0..<24 {
            let root = try RecDist.scratch("fuzz-\(i)")
            try FileManager.default.removeItem(atPath: root)
            try FileManager.default.copyItem(atPath: base, toPath: root)
            let (what, names) = try Self.mutate(root + "/step-00000002", rng: &rng)
            let context = "seed \(String(Self.seed, radix: 16)), mutation \(i): \(what)"
            let previous = try Self.files.map { try Data(contentsOf: URL(fileURLWithPath: root + "/step-00000001/" + $0)) }

            let out = root + "/scores.csv"
            let predict = try RecDist.single(["predict", "--checkpoint", root + "/step-00000002", "--input", data, "--out", out])
            #expect(Self.documented.contains(predict.status), "\(context): predict exit \(predict.status): \(predict.all)")
            if predict.status != 0 {
                #expect(names.contains { predict.stderr.contains($0) }, "\(context): predict should name one of \(names): \(predict.stderr)")
                #expect(!FileManager.default.fileExists(atPath: out), "\(context): predict left \(out)")
            }
            let resume = try RecDist.single(["train", "--data", data, "--steps", "3", "--checkpoint-dir", root, "--auto-resume"])
            #expect(Self.documented.contains(resume.status), "\(context): train --auto-resume exit \(resume.status): \(resume.all)")
            if resume.status != 0 {
                #expect(names.contains { resume.stderr.contains($0) } || resume.stderr.contains("step-00000002"),
                        "\(context): train should name one of \(names): \(resume.stderr)")
            }
            let after = try Self.files.map { try Data(contentsOf: URL(fileURLWithPath: root + "/step-00000001/" + $0)) }
            #expect(after == previous, "\(context): the previous checkpoint changed")
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.contains(".tmp") }
            #expect(leftovers.isEmpty, "\(context): partial files left: \(leftovers)")
            try? FileManager.default.removeItem(atPath: root)
        }
    }
}
