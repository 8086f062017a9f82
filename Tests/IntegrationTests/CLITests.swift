import Foundation
import Testing

/// `rec-dist` as one process, with no launcher (single-node debug mode), and its bad-input handling.
struct CLITests {
    @Test func trainWithoutMPIWritesMetricsAndCheckpoint() throws {
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("single")
        let out = try RecDist.single(["train", "--data", data, "--model", "mlp", "--eval-every", "5",
                                      "--metrics-out", dir + "/m.jsonl", "--checkpoint-dir", dir + "/ck"])
        #expect(out.status == 0, "\(out.all)")
        let records = try RecDist.metrics(dir + "/m.jsonl")
        #expect(records.count == 3)   // 1800 rows / 128 -> 15 steps, evaluated after steps 5, 10 and 15
        for key in ["step", "epoch", "samples", "train_loss", "auc", "logloss", "accuracy", "samples_per_s", "world_size"] {
            #expect(records.last?[key] != nil, "missing \(key)")
        }
        #expect(records.last?["samples"] as? Int == 1800)
        let tensors = try RecDist.checkpointTensors(dir + "/ck")
        #expect(tensors["mlp.0.weight"]?.count == 10 * 128)
    }

    @Test func debugModeChecksGradientsAndTimesSteps() throws {
        let data = try RecDist.synthData(rows: 2000)
        let out = try RecDist.single(["train", "--data", data, "--model", "dlrm", "--hash-buckets", "300",
                                      "--steps", "3", "--debug"])
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("gradient check top.2.weight"))
        #expect(out.stdout.contains("gradient check embedding"))
        #expect(!out.stdout.contains("MISMATCH"))
        #expect(out.stdout.contains("step 2: loss"))
    }

    @Test(arguments: [
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "-1"], "--lr"),
        (["--model", "transformer"], "mlp"),
        (["--eval-fraction", "1.5"], "--eval-fraction"),
        (["--optimizer", "rmsprop"], "adagrad"),
    ])
    func badFlagsAreRejectedBeforeAnyWork(flags: [String], mention: String) throws {
        let out = try RecDist.single(["train", "--data", "/nonexistent.tsv"] + flags)
        #expect(out.status == 64, "\(out.all)")
        #expect(out.stderr.contains(mention), "\(out.stderr)")
    }

    /// A model configuration file that cannot be read or does not fit is a usage error (64),
    /// named with its key, on one rank and under mpirun.
    @Test func badModelConfigIsAUsageError() throws {
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("bad-model-config")
        try #"{"model": "dlrm", "embeding_dim": 8}"#.write(toFile: dir + "/typo.json", atomically: true, encoding: .utf8)
        try #"{"model": "ncf", "user_fields": ["C1"], "item_fields": ["C99"]}"#.write(toFile: dir + "/fields.json", atomically: true, encoding: .utf8)
        for (file, mention) in [("typo.json", "embeding_dim: unknown key"), ("fields.json", "C99"), ("missing.json", "cannot read")] {
            var out = try RecDist.single(["train", "--data", data, "--steps", "1", "--model-config", dir + "/" + file])
            #expect(out.status == 64 && out.stderr.contains(mention), "\(file): \(out.all)")
            if file == "typo.json" {
                out = try RecDist.ranks(2, ["train", "--data", data, "--steps", "1", "--model-config", dir + "/" + file])
                #expect(out.status == 64 && out.stderr.contains(mention), "2 ranks: \(out.all)")
            }
        }
    }

    @Test func missingFileIsNamed() throws {
        let out = try RecDist.single(["train", "--data", "/nonexistent/clicks.tsv"])
        #expect(out.status == 1)
        #expect(out.stderr.contains("/nonexistent/clicks.tsv"), "\(out.stderr)")
    }

    @Test func wrongFieldCountIsNamed() throws {
        let dir = try RecDist.scratch("fields")
        let path = dir + "/short.tsv"
        let row = (["1"] + Array(repeating: "3", count: 13) + Array(repeating: "ab", count: 26)).joined(separator: "\t")
        try ([row, row, "1\t2\t3", row].joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let out = try RecDist.single(["train", "--data", path, "--eval-fraction", "0"])
        #expect(out.status == 1)
        #expect(out.stderr.contains("short.tsv:3"), "\(out.stderr)")
        #expect(out.stderr.contains("40"), "\(out.stderr)")
    }
}
