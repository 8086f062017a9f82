import Foundation
import Testing

/// Hostile input that only some ranks see, under real mpirun: a bad row or row group in one
/// rank's share of the data, ranks started with other flags, usage errors printed by every rank,
/// shard checkpoint files tampered with (checksums recomputed) and read back by `--auto-resume`
/// on 2 and 3 ranks and by predict, explain and export, and model configurations or bench cases
/// that do not fit a prepared dataset. Every case ends with a documented exit code (never a
/// signal, never a hang), says what is wrong and where, and leaves nothing partial behind.
/// Serialized: MPI jobs share 2 cores.
@Suite(.serialized)
struct MultiRankFuzzTests {
    /// Exit codes the README documents.
    static let documented: Set<Int32> = [0, 1, 64, 74, 75, 76]

    /// `mpirun ... -np N rec-dist ARGS` (or an MPMD line when `ranks` has several entries: each
    /// rank's own arguments), with a bound on its time.
    static func mpirun(_ ranks: [[String]], timeout: Double = 90) throws -> RecDist.Output {
        var line = (getuid() == 0 ? ["--allow-run-as-root"] : []) + ["--oversubscribe"]
        for (i, args) in ranks.enumerated() { line += (i > 0 ? [":"] : []) + ["-np", "1", RecDist.binary] + args }
        return try RecDist.run("/usr/bin/env", ["mpirun"] + line, timeout: timeout)
    }

    static func mpirun(_ n: Int, _ args: [String], timeout: Double = 90) throws -> RecDist.Output {
        try mpirun(Array(repeating: args, count: n), timeout: timeout)
    }

    /// The outcome every case shares: ended in time, with a documented exit code.
    static func ended(_ out: RecDist.Output, _ what: String) {
        #expect(!out.timedOut, "\(what): still running after \(Int(out.seconds)) s: \(out.all.suffix(600))")
        #expect(documented.contains(out.status), "\(what): exit \(out.status): \(out.all.suffix(600))")
    }

    static func occurrences(of needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }

    // MARK: - Data that only one rank reads

    /// Block-cyclic sharding with --batch-size 32 on 2 ranks gives rows 32-63 to rank 1: a bad
    /// label on line 40 is found by rank 1 alone, and every rank stops together (exit 1) with the
    /// file, line and field named; no checkpoint is written. On 3 ranks, rank 2's line 70.
    @Test func badRowInOneRanksShare() throws {
        let dir = try RecDist.scratch("mr-bad-row")
        let lines = try String(contentsOfFile: try RecDist.synthData(rows: 3000), encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        for (ranks, line, rank) in [(2, 40, 1), (3, 70, 2)] {
            var edited = lines
            edited[line - 1] = "x" + edited[line - 1].dropFirst()
            let data = "\(dir)/bad-\(ranks).tsv"
            try edited.joined(separator: "\n").write(toFile: data, atomically: true, encoding: .utf8)
            let out = try Self.mpirun(ranks, ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "300", "--batch-size", "32",
                                              "--steps", "3", "--checkpoint-dir", dir + "/ck-\(ranks)"])
            Self.ended(out, "\(ranks) ranks")
            #expect(out.status == 1, "\(out.all)")
            #expect(out.stderr.contains("bad-\(ranks).tsv:\(line): field label") && out.stderr.contains("rank(s) \(rank) failed during data loading"),
                    "\(out.all)")
            let written = (try? FileManager.default.contentsOfDirectory(atPath: dir + "/ck-\(ranks)")) ?? []
            #expect(!written.contains { $0.hasPrefix("step-") || $0.hasPrefix(".step-") }, "\(written)")
        }
    }

    /// A prepared dataset of two row groups, the second (which rank 1 verifies) with a flipped
    /// byte: rank 1 names the split and the group, every rank stops (exit 1).
    @Test func preparedRowGroupBadOnlyOnRankOne() throws {
        let dir = try RecDist.scratch("mr-bad-group")
        var out = try RecDist.single(["synth", "--rows", "140000", "--out", dir + "/big.tsv", "--seed", "3"])
        try #require(out.status == 0, "\(out.all)")
        out = try RecDist.single(["prepare", "--format", "criteo", "--input", dir + "/big.tsv", "--out", dir + "/prepared",
                                  "--hash-buckets", "300", "--split", "contiguous", "--valid-fraction", "0.01", "--test-fraction", "0.01"])
        try #require(out.status == 0, "\(out.all)")
        let split = dir + "/prepared/train.rdp"
        let handle = try #require(FileHandle(forUpdatingAtPath: split))
        // Group 1 starts at 4096 + 65536 rows of 4 * (1 + 13 + 26) bytes.
        let offset = UInt64(4096 + 65536 * 160 + 70000)
        try handle.seek(toOffset: offset)
        let byte = try #require(try handle.read(upToCount: 1)?.first)
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: Data([byte ^ 0x10]))
        try handle.close()
        let run = try Self.mpirun(2, ["train", "--data", dir + "/prepared", "--model", "mlp", "--batch-size", "32", "--steps", "2"])
        Self.ended(run, "train")
        #expect(run.status == 1, "\(run.all)")
        #expect(run.stderr.contains("train.rdp: row group 1") && run.stderr.contains("corrupted") && run.stderr.contains("rank(s) 1 failed"),
                "\(run.all)")
    }

    // MARK: - Flags

    /// Ranks started with other flags (mpirun's MPMD form): refused before any collective with
    /// the ranks and the field that differs, exit 64. Before, other --hash-buckets trapped in the
    /// gradient exchange (exit 132), and bench ran rank 1 with another case silently. A rank
    /// alone rejecting a flag ends the job with its message.
    @Test func ranksStartedWithOtherFlags() throws {
        let data = try RecDist.synthData(rows: 3000)
        let train = ["train", "--data", data, "--model", "dlrm", "--steps", "3", "--batch-size", "32"]
        var out = try Self.mpirun([train + ["--hash-buckets", "300"], train + ["--hash-buckets", "600"], train + ["--hash-buckets", "300"]])
        Self.ended(out, "other --hash-buckets")
        #expect(out.status == 64 && out.stderr.contains("rank(s) 1 were started with other flags than rank 0 (rank 1: model.hashBuckets 600 (rank 0: 300))"),
                "\(out.all)")
        out = try Self.mpirun([train + ["--embedding-sharding", "row"], train + ["--embedding-sharding", "table"]])
        Self.ended(out, "other --embedding-sharding")
        #expect(out.status == 64 && out.stderr.contains("embeddingSharding \"table\" (rank 0: \"row\")"), "\(out.all)")
        let bench = ["bench", "--windows", "1", "--window-seconds", "0.05", "--warmup-steps", "0", "--warmup-seconds", "0",
                     "--sgemm-seconds", "0.01", "--hash-buckets", "300"]
        out = try Self.mpirun([bench + ["--case", "dlrm:16:row"], bench + ["--case", "dlrm:32:row"]])
        Self.ended(out, "bench with other cases")
        #expect(out.status == 64 && out.stderr.contains("were started with other flags than rank 0") && out.stderr.contains("\"batchSize\":32"),
                "\(out.all)")
        out = try Self.mpirun([train + ["--hash-buckets", "300"], train + ["--hash-buckets", "300", "--batch-size", "0"]])
        Self.ended(out, "--batch-size 0 on rank 1 alone")
        #expect(out.status == 64 && out.stderr.contains("--batch-size 0 is out of range"), "\(out.all)")
    }

    /// A usage error under mpirun reads once (rank 0's), not interleaved from every rank; values
    /// of --memory-per-rank that are not byte counts are refused as out of range (64), with the
    /// units, like values too small or too large.
    @Test func usageErrorsReadOnceUnderMPI() throws {
        let data = try RecDist.synthData(rows: 3000)
        for value in ["abc", "-5", "1P", "1e30", "0"] {
            let out = try Self.mpirun(3, ["train", "--data", data, "--model", "dlrm", "--steps", "2", "--embedding-sharding", "auto",
                                          "--memory-per-rank", value])
            Self.ended(out, "--memory-per-rank \(value)")
            #expect(out.status == 64, "--memory-per-rank \(value): \(out.all)")
            let line = "Error: --memory-per-rank \(value) is out of range: use 1M to 1024T, a number with K, M, G or T"
            #expect(Self.occurrences(of: line, in: out.stderr) == 1 && Self.occurrences(of: "Error:", in: out.stderr) == 1,
                    "--memory-per-rank \(value): \(out.stderr)")
        }
    }

    // MARK: - Shard checkpoint files

    /// Rewrites the JSON header of safetensors file `path` through `edit`, keeping the data.
    static func editHeader(_ path: String, _ edit: (inout [String: Any]) -> Void) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let length = Int(data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        var header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + length))) as! [String: Any]
        edit(&header)
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        json.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8))
        var out = Data((0..<8).map { UInt8((UInt64(json.count) >> (8 * UInt64($0))) & 0xFF) })
        out.append(json)
        out.append(data.subdata(in: (8 + length)..<data.count))
        try out.write(to: URL(fileURLWithPath: path))
    }

    /// The metadata `rows` of a shard file's header, as a map, edited by `edit`.
    static func editRows(_ header: inout [String: Any], _ edit: (inout [String: [Int]]) -> Void) {
        var metadata = header["__metadata__"] as! [String: String]
        var rows = try! JSONSerialization.jsonObject(with: Data(metadata["rows"]!.utf8)) as! [String: [Int]]
        edit(&rows)
        metadata["rows"] = String(decoding: try! JSONSerialization.data(withJSONObject: rows, options: [.sortedKeys]), as: UTF8.self)
        header["__metadata__"] = metadata
    }

    /// The bytes of every file of checkpoint directory `dir`, by name.
    static func snapshot(_ dir: String) throws -> [String: Data] {
        var files: [String: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: dir) {
            files[name] = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name))
        }
        return files
    }

    /// Row-sharded checkpoints of 2 ranks (steps 5 and 10), tampered with in step 10's shard file
    /// of rank 1, each with CHECKSUMS recomputed unless said: refused naming that file by
    /// `--auto-resume` (on 3 and 2 ranks), predict, explain and export, or, for a damage the
    /// checksums catch, skipped by `--auto-resume` for step 5. Step 5 stays byte for byte; no
    /// output is left by a refused command. Before, a shard file from another run was assembled
    /// silently, a shard without its rows metadata was blamed on rank 0's file, and a reshaped
    /// tensor of the same size was accepted.
    @Test func tamperedShardFiles() throws {
        let dir = try RecDist.scratch("mr-shards"), data = try RecDist.synthData(rows: 3000)
        let common = ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "300", "--optimizer", "adam", "--batch-size", "32",
                      "--checkpoint-every", "5"]
        for (name, seed) in [("ck", "1"), ("other", "2")] {
            let out = try Self.mpirun(2, common + ["--steps", "10", "--embedding-sharding", "row", "--checkpoint-dir", "\(dir)/\(name)", "--seed", seed])
            try #require(out.status == 0, "\(out.all)")
        }
        let shard = "shard-00001-of-00002.safetensors"
        // (what, what a refusal says, CHECKSUMS recomputed, whether verifying the checksums catches
        // it so that --auto-resume skips the checkpoint, the edit of step 10's directory)
        let mutations: [(name: String, expected: String, recomputed: Bool, skipped: Bool, edit: (String) throws -> Void)] = [
            ("a shard file of another run", "\(shard) belongs to another checkpoint", true, false, { step in
                try FileManager.default.removeItem(atPath: step + "/" + shard)
                try FileManager.default.copyItem(atPath: "\(dir)/other/step-00000010/\(shard)", toPath: step + "/" + shard)
            }),
            ("the step-5 shard file in step 10", "\(shard) belongs to another checkpoint", true, false, { step in
                try FileManager.default.removeItem(atPath: step + "/" + shard)
                try FileManager.default.copyItem(atPath: "\(dir)/ck/step-00000005/\(shard)", toPath: step + "/" + shard)
            }),
            ("rows metadata without embedding.C1", "\(shard)': its metadata 'rows' does not say which rows tensor embedding.C1 holds", true, false, { step in
                try Self.editHeader(step + "/" + shard) { h in Self.editRows(&h) { $0["embedding.C1"] = nil } }
            }),
            ("rank 1 claims rank 0's rows", "two pieces of tensor embedding.C1 hold the same rows", true, false, { step in
                try Self.editHeader(step + "/" + shard) { h in Self.editRows(&h) { rows in for k in rows.keys { rows[k]![0] = 0 } } }
            }),
            ("a tensor reshaped to the same size", "\(shard)': its piece of tensor embedding.C1 (rows from 1 every 2, 150 of them, shape [75, 32])", true, false, { step in
                try Self.editHeader(step + "/" + shard) { h in
                    var entry = h["embedding.C1"] as! [String: Any]
                    entry["shape"] = [75, 32]
                    h["embedding.C1"] = entry
                }
            }),
            ("metadata format edited", "\(shard)': its metadata 'format' is 'rec-dhst-shard'", true, false, { step in
                try Self.editHeader(step + "/" + shard) { h in
                    var metadata = h["__metadata__"] as! [String: String]
                    metadata["format"] = "rec-dhst-shard"
                    h["__metadata__"] = metadata
                }
            }),
            ("an infinity in rank 1's rows", "\(shard)': tensor embedding.C", true, false, { step in
                try Self.editHeader(step + "/" + shard) { _ in }   // normalizes the header; the data follows
                let handle = try #require(FileHandle(forUpdatingAtPath: step + "/" + shard))
                let length = try #require(try handle.read(upToCount: 8)).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
                try handle.seek(toOffset: 8 + length)
                try handle.write(contentsOf: withUnsafeBytes(of: Float.infinity) { Data($0) })
                try handle.close()
            }),
            ("the shard file truncated", "\(shard) has", false, true, { step in
                let size = try FileManager.default.attributesOfItem(atPath: step + "/" + shard)[.size] as! Int
                try #require(truncate(step + "/" + shard, off_t(size / 2)) == 0)
            }),
            ("the shard file and its CHECKSUMS line gone", "CHECKSUMS lists 1 shard files, not one for each of 2 ranks", true, true, { step in
                try FileManager.default.removeItem(atPath: step + "/" + shard)
            }),
        ]
        for (index, mutation) in mutations.enumerated() {
            let root = "\(dir)/case-\(index)", step = root + "/step-00000010"
            try FileManager.default.copyItem(atPath: dir + "/ck", toPath: root)
            try mutation.edit(step)
            if mutation.recomputed { try RecDist.rewriteChecksums(step) }
            let before = try Self.snapshot(root + "/step-00000005")
            defer { #expect((try? Self.snapshot(root + "/step-00000005")) == before, "\(mutation.name): step-00000005 changed") }
            // One process: predict for every mutation; explain and export for the first.
            var commands = [["predict", "--checkpoint", root, "--input", data, "--limit", "20", "--out", root + "-scores.csv"]]
            if index == 0 {
                commands += [["explain", "--checkpoint", root, "--data", data, "--max-rows", "100", "--repeats", "1", "--out", root + "-explain.html"],
                             ["export", "--checkpoint", root, "--out", root + "-export"]]
            }
            for command in commands {
                let out = try RecDist.single(command, timeout: 60)
                Self.ended(out, "\(mutation.name): \(command[0])")
                #expect(out.status == 1 && out.stderr.contains(mutation.expected), "\(mutation.name): \(command[0]): \(out.all)")
                #expect(!FileManager.default.fileExists(atPath: command.last!), "\(mutation.name): \(command[0]) left \(command.last!)")
            }
            // --auto-resume on 3 ranks (table-sharded) for the foreign shard files, on 2 for a
            // few others (the rest reach CheckpointTables as predict does).
            guard [0, 1, 2, 7, 8].contains(index) else { continue }
            let ranks = index < 2 ? 3 : 2
            let resumed = try Self.mpirun(ranks, common + ["--steps", "12", "--embedding-sharding", index < 2 ? "table" : "row",
                                                           "--checkpoint-dir", root, "--auto-resume"])
            Self.ended(resumed, "\(mutation.name): --auto-resume on \(ranks) ranks")
            if !mutation.skipped {
                #expect(resumed.status == 1 && resumed.stderr.contains(mutation.expected), "\(mutation.name): resume: \(resumed.all)")
                let left = try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.hasPrefix("step-") || $0.hasPrefix(".step-") }
                #expect(left.sorted() == ["step-00000005", "step-00000010"], "\(mutation.name): \(left)")
            } else {
                // Verifying catches it: --auto-resume skips the checkpoint and continues from step 5.
                #expect(resumed.status == 0 && resumed.all.contains("skipping checkpoint \(step)") && resumed.all.contains("resuming from \(root)/step-00000005"),
                        "\(mutation.name): resume: \(resumed.all)")
            }
        }
    }

    // MARK: - Configurations that do not fit the prepared data

    /// On a prepared dataset, which sizes the tables and dense inputs itself, a config file's
    /// hash_buckets other than its vocabularies, an mlp's dense_features above its dense fields,
    /// the same as flags, and ncf on a dataset without user and item roles, are refused (64)
    /// naming the config file, the key and the dataset; they were overridden silently (exit 0).
    /// A config whose hash_buckets equals the vocabularies trains. `bench --data` on a dataset
    /// without dense fields refuses --case mlp (it trapped, exit 132).
    @Test func configurationsThatDoNotFitPreparedData() throws {
        let dir = try RecDist.scratch("mr-config"), tsv = try RecDist.synthData(rows: 3000), prepared = dir + "/prepared"
        var out = try RecDist.single(["prepare", "--format", "criteo", "--input", tsv, "--out", prepared, "--hash-buckets", "300"])
        try #require(out.status == 0, "\(out.all)")
        let config = dir + "/model.json"
        let cases: [(json: String, flags: [String], status: Int32, expected: [String])] = [
            (#"{"model": "dlrm", "hash_buckets": 5}"#, [], 64, ["model config \(config): hash_buckets: 5 does not fit the prepared dataset '\(prepared)'",
                                                              "remove hash_buckets from \(config)"]),
            (#"{"model": "dlrm", "hash_buckets": 300}"#, [], 0, ["done: 2 steps"]),
            (#"{"model": "dlrm"}"#, ["--hash-buckets", "5"], 64, ["--hash-buckets 5 does not fit the prepared dataset '\(prepared)'"]),
            (#"{"model": "mlp", "dense_features": 20}"#, [], 64, ["model config \(config): dense_features: 20 is more than the 13 dense field(s) of the prepared dataset '\(prepared)'"]),
            (#"{"model": "mlp"}"#, ["--dense-features", "13"], 0, ["done: 2 steps"]),
            (#"{"model": "ncf"}"#, [], 64, ["the model configuration of --model-config \(config) does not fit the prepared dataset '\(prepared)'", "user_fields"]),
            (#"{"model": "ncf", "user_fields": ["user"], "item_fields": ["C2"]}"#, [], 64, ["model config \(config): user_fields: '\(prepared)' has no categorical field 'user'"]),
        ]
        for c in cases {
            try c.json.write(toFile: config, atomically: true, encoding: .utf8)
            let run = try RecDist.single(["train", "--data", prepared, "--model-config", config, "--steps", "2", "--batch-size", "16"] + c.flags)
            Self.ended(run, c.json)
            #expect(run.status == c.status && c.expected.allSatisfy { run.all.contains($0) }, "\(c.json) \(c.flags): \(run.all)")
        }
        // Interactions without dense fields.
        let interactions = try RecDist.preparedInteractions(in: dir, users: 20, perUser: 6, items: 30)
        let bench = ["bench", "--data", interactions, "--windows", "1", "--window-seconds", "0.05", "--warmup-steps", "0",
                     "--warmup-seconds", "0", "--sgemm-seconds", "0.01"]
        out = try RecDist.single(bench + ["--case", "mlp:8"])
        Self.ended(out, "bench mlp")
        #expect(out.status == 64 && out.stderr.contains("--case mlp:8 does not fit --data '\(dir)/interactions': it has no dense fields"), "\(out.all)")
        out = try RecDist.single(bench + ["--case", "ncf:8"])
        #expect(out.status == 0, "bench ncf on the same data: \(out.all)")
    }
}
