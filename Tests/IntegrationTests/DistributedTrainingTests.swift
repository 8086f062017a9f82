import Foundation
import Testing

/// End to end under real `mpirun` ranks, through launch.sh. Serialized: MPI jobs share 2 cores.
@Suite(.serialized)
struct DistributedTrainingTests {
    /// The same global batch (N x per-rank batch = 12) and the same data give the same parameters
    /// on 1, 2 and 3 ranks. 25 steps over 250 training rows cross the epoch boundary, so the last,
    /// partial global batch (10 rows, unevenly split) is covered too.
    ///
    /// N ranks compute the same sums in other orders (sgemm blocks of 12, 6 or 4 rows, partial
    /// sums per rank), so the parameters legitimately differ by rounding; the test must tell that
    /// from a bug. Rounding alone stays tiny unless a ReLU pre-activation is so close to 0 that
    /// rounding flips its sign: the mask then changes a whole gradient term, and Adam turns even a
    /// small gradient of an otherwise idle unit into an lr-sized step (with the full dlrm, 250
    /// rows and 25 steps, a pre-activation of 1.9e-8 did that: 0.0093 apart after 25 steps, in 2
    /// of 11 seeds). Those configurations make about 480 K ReLU evaluations a run, 1-4 of them
    /// under 1e-6. So dlrm runs here with smaller MLPs (bottom 64-16, top 64: 48 K evaluations).
    /// Measured for each configuration below (a probe of min |pre-activation| over every step,
    /// example and unit; 1, 2, 3 ranks x OpenBLAS Prescott, Sandybridge, Haswell and SkylakeX
    /// kernels): the smallest |pre-activation| is 7.4e-6 (dlrm adagrad) to 6.4e-5 (mlp momentum),
    /// 100x or more the spread of that same value over the 12 roundings (at most 1.8e-7), and
    /// the parameters of all 12 runs agree within 6e-7. The tolerance, 1e-5, is 18x that; bugs
    /// move them far more: averaging over the rank's rows instead of the global batch, 2.6e-4
    /// (mlp with Adam, which hardly sees a gradient's scale) to 0.08; dropping the last rank's
    /// embedding rows, 0.013 to 0.027 (the old tolerance, 1e-4, let the first pass by a factor
    /// of 2.6 only). `--bucket-kib 16` cuts the
    /// small dlrm's gradients into 2 buckets, so overlapped allreduces are covered as with the
    /// full size.
    @Test(arguments: [
        ("mlp", ["--optimizer", "adam"]),
        ("dlrm", ["--optimizer", "adam", "--hash-buckets", "500", "--bottom", "64,16", "--top", "64", "--bucket-kib", "16"]),
        ("dlrm", ["--optimizer", "adagrad", "--lr", "0.05", "--hash-buckets", "500", "--bottom", "64,16", "--top", "64",
                  "--bucket-kib", "16"]),
        ("mlp", ["--optimizer", "momentum", "--nesterov", "--loss", "mse"]),
        ("logreg", ["--optimizer", "adagrad", "--lr", "0.05", "--hash-buckets", "500"]),
        ("wide-deep", ["--optimizer", "adam", "--hash-buckets", "500", "--hidden", "16", "--dropout", "0.2"]),
        ("ncf", ["--optimizer", "adam", "--hash-buckets", "500", "--model-config", "FIELDS"]),
        ("two-tower", ["--optimizer", "adam", "--hash-buckets", "500", "--model-config", "FIELDS"]),
    ])
    func sameParametersForOneTwoThreeRanks(model: String, extra: [String]) throws {
        let data = try RecDist.synthData(rows: 250)
        var extra = extra
        if let i = extra.firstIndex(of: "FIELDS") {   // TSV data: name the user and item fields
            let file = try RecDist.scratch("fields-\(model)") + "/model.json"
            let json = model == "ncf" ? #"{"user_fields": ["C1"], "item_fields": ["C2"], "hidden": [16, 8], "dropout": 0.2}"#
                : #"{"user_fields": ["C1", "C3"], "item_fields": ["C2"], "hidden": [16]}"#
            try json.write(toFile: file, atomically: true, encoding: .utf8)
            extra[i] = file
        }
        var checkpoints: [Int: [String: [Float]]] = [:]
        for n in [1, 2, 3] {
            let dir = try RecDist.scratch("equivalence-\(model)-\(n)")
            let args = ["train", "--data", data, "--eval-fraction", "0", "--model", model,
                        "--batch-size", "\(12 / n)", "--steps", "25", "--seed", "3",
                        "--checkpoint-dir", dir] + extra
            let out = try RecDist.ranks(n, args, timeout: 240)
            #expect(out.status == 0, "N=\(n): \(out.all)")
            #expect(out.stdout.contains("on \(n) rank(s)"))
            checkpoints[n] = try RecDist.checkpointTensors(dir)
        }
        let one = try #require(checkpoints[1])
        #expect(!one.isEmpty)
        for n in [2, 3] {
            let other = try #require(checkpoints[n])
            let diff = RecDist.maxDifference(one, other)
            #expect(diff < 1e-5, "N=\(n) differs from N=1 by \(diff) (\(model) \(extra))")
        }
        // The last 20 steps moved the parameters far more than the tolerance, so agreement means something.
        let early = try RecDist.scratch("early-\(model)")
        let out = try RecDist.ranks(1, ["train", "--data", data, "--eval-fraction", "0", "--model", model,
                                        "--batch-size", "12", "--steps", "5", "--seed", "3",
                                        "--checkpoint-dir", early] + extra)
        #expect(out.status == 0, "\(out.all)")
        #expect(RecDist.maxDifference(one, try RecDist.checkpointTensors(early)) > 1e-2)
    }

    /// Under mpirun, --debug compares replica checksums; identical replicas pass.
    @Test func debugChecksReplicasUnderMPI() throws {
        let data = try RecDist.synthData(rows: 2000)
        let out = try RecDist.ranks(2, ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "500",
                                        "--steps", "10", "--debug", "--debug-check-every", "5"], timeout: 240)
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("replicas identical"))
        #expect(out.stdout.contains("communication"))
    }

    /// A bad row in rank 1's shard stops both ranks quickly, with the file, line and field named.
    @Test func badRowOnOneRankStopsEveryRank() throws {
        let dir = try RecDist.scratch("bad-row")
        let good = try String(contentsOfFile: try RecDist.synthData(rows: 250), encoding: .utf8)
        var lines = good.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        // Batch 4 per rank: row 5 (line 6) is in rank 1's first block.
        var fields = lines[5].split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        fields[3] = "12x"
        lines[5] = fields.joined(separator: "\t")
        let path = dir + "/bad.tsv"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let out = try RecDist.ranks(2, ["train", "--data", path, "--batch-size", "4"], timeout: 60)
        #expect(!out.timedOut)
        #expect(out.status != 0)
        #expect(out.stderr.contains("bad.tsv:6"), "\(out.stderr)")
        #expect(out.stderr.contains("I3"), "\(out.stderr)")
        #expect(out.seconds < 30)
    }

    /// A metrics log rank 0 cannot create stops every rank at once, before the first step,
    /// with the path and the flag named (not a rank left waiting in a collective).
    @Test func unwritableMetricsLogStopsEveryRank() throws {
        let dir = try RecDist.scratch("bad-metrics")
        let blocker = dir + "/a-file"
        try "not a directory".write(toFile: blocker, atomically: true, encoding: .utf8)
        let out = try RecDist.ranks(2, ["train", "--data", try RecDist.synthData(rows: 250), "--batch-size", "4",
                                        "--metrics-out", blocker + "/metrics.jsonl"], timeout: 60)
        #expect(!out.timedOut)
        #expect(out.status != 0)
        #expect(out.stderr.contains(blocker + "/metrics.jsonl") && out.stderr.contains("--metrics-out"), "\(out.stderr)")
        // Agreed, not aborted: rank 0 alone failing would leave rank 1 in the first step until
        // the bounded MPI_Finalize gives up ("shutdown timeout") and aborts the job.
        #expect(!out.all.contains("shutdown timeout") && !out.all.contains("MPI_ABORT"), "\(out.all)")
        #expect(!out.all.contains("step 1/"), "training started: \(out.all)")
        #expect(out.seconds < 30)
    }

    /// On the synthetic data the mlp learns (AUC > 0.6) and dlrm closes at least half of its gap
    /// to the oracle, on 2 ranks.
    @Test func modelsLearnTheSyntheticData() throws {
        let data = try RecDist.synthData(rows: 200_000)
        var auc: [String: Double] = [:]
        var oracle = 0.0
        for (model, extra) in [("mlp", [String]()), ("dlrm", ["--optimizer", "adam", "--lr", "0.002"])] {
            let dir = try RecDist.scratch("quality-\(model)")
            let out = try RecDist.ranks(2, ["train", "--data", data, "--model", model, "--batch-size", "128",
                                            "--metrics-out", dir + "/metrics.jsonl"] + extra, timeout: 500)
            #expect(out.status == 0, "\(out.all)")
            let records = try RecDist.metrics(dir + "/metrics.jsonl")
            let last = try #require(records.last)
            auc[model] = last["auc"] as? Double
            #expect(last["world_size"] as? Int == 2)
            oracle = last["oracle_auc"] as? Double ?? 0
            #expect(oracle > 0.75)
        }
        let mlp = try #require(auc["mlp"]), dlrm = try #require(auc["dlrm"])
        #expect(mlp > 0.6, "mlp AUC \(mlp)")
        #expect(dlrm > mlp + 0.02, "dlrm AUC \(dlrm) vs mlp \(mlp)")
        // The generator is hard enough to mean something (docs/quality.md): the dense-only mlp
        // sits at least 0.05 below the oracle, and one epoch of dlrm closes at least half of that
        // gap (measured: mlp 0.645, dlrm 0.784, oracle 0.830: 75%).
        #expect(oracle - mlp >= 0.05, "mlp AUC \(mlp) vs oracle \(oracle)")
        #expect(dlrm - mlp >= 0.5 * (oracle - mlp), "dlrm AUC \(dlrm) closes less than half of mlp \(mlp) -> oracle \(oracle)")
    }
}

/// Sharded embedding tables from the command line, under real mpirun ranks. Serialized: MPI
/// jobs share 2 cores.
@Suite(.serialized)
struct ShardedTablesCLITests {
    /// 26 tables of 50000 rows x 16 with Adam need about 255 MB per rank replicated: over a
    /// --memory-per-rank of 200M that is refused before any allocation (64, with the numbers);
    /// `auto` shards them, prints the plan, trains, and writes a checkpoint `predict` reads on one
    /// process.
    @Test func autoShardsWhatReplicatedCannotFit() throws {
        let dir = try RecDist.scratch("sharded-cli")
        let data = dir + "/synth.tsv"
        _ = try RecDist.single(["synth", "--rows", "3000", "--out", data])
        let common = ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "50000", "--steps", "6",
                      "--batch-size", "64", "--memory-per-rank", "200M"]
        let refused = try RecDist.ranks(2, common + ["--embedding-sharding", "replicated"])
        #expect(refused.status == 64, "\(refused.all)")
        #expect(refused.stderr.contains("more than --memory-per-rank 200.0 MiB") && refused.stderr.contains("--embedding-sharding auto"),
                "\(refused.all)")
        let trained = try RecDist.ranks(2, common + ["--embedding-sharding", "auto", "--checkpoint-dir", dir + "/ck"])
        #expect(trained.status == 0, "\(trained.all)")
        #expect(trained.all.contains("embedding plan (--embedding-sharding auto") && trained.all.contains("table-wise on rank 1"),
                "\(trained.all)")
        let predicted = try RecDist.single(["predict", "--checkpoint", dir + "/ck", "--input", data, "--limit", "5", "--out", "-"])
        #expect(predicted.status == 0, "\(predicted.all)")
        #expect(predicted.stdout.split(separator: "\n").count >= 5, "\(predicted.all)")
    }

    /// Under real ranks sharing a directory, row-sharded on 2 ranks: every rank writes its shard
    /// file, and the checkpoint scores, explains and exports exactly as the same run checkpointed
    /// through rank 0 (REC_DIST_FUNNEL_CHECKPOINTS=1); resumed on 3 ranks table-sharded and on
    /// one replicated, both give bitwise the same models.
    @Test func shardFilesEqualTheFunnel() throws {
        let dir = try RecDist.scratch("shard-files"), data = try RecDist.synthData(rows: 3000)
        let common = ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "5000", "--optimizer", "adam",
                      "--batch-size", "32", "--eval-every", "5"]
        for (name, funnel) in [("files", "0"), ("funnel", "1")] {
            let out = try RecDist.run("/bin/bash", [RecDist.packageRoot + "/launch.sh", "-np", "2", "--"] + common
                                      + ["--steps", "10", "--embedding-sharding", "row", "--checkpoint-dir", "\(dir)/\(name)"],
                                      environment: ["REC_DIST_FUNNEL_CHECKPOINTS": funnel])
            try #require(out.status == 0, "\(out.all)")
            let expected = funnel == "1" ? "the sharded rows travelling to it (REC_DIST_FUNNEL_CHECKPOINTS=1)" : "every rank writes its rows"
            #expect(out.all.contains(expected), "\(out.all)")
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/files/step-00000010").sorted()
        #expect(files.filter { $0.hasPrefix("shard-") } == ["shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors"])
        #expect(try String(contentsOfFile: dir + "/files/step-00000010/CHECKSUMS", encoding: .utf8).contains("shard-00001-of-00002.safetensors"))
        #expect(try !FileManager.default.contentsOfDirectory(atPath: dir + "/funnel/step-00000010").contains { $0.hasPrefix("shard-") })
        /// What a one-process command writes from checkpoint directory `name`.
        func outputs(_ name: String) throws -> [Data] {
            let ck = "\(dir)/\(name)"
            for command in [["predict", "--checkpoint", ck, "--input", data, "--limit", "500", "--out", ck + "-scores.csv"],
                            ["explain", "--checkpoint", ck, "--data", data, "--max-rows", "500", "--repeats", "1", "--json-out", ck + "-explain.json",
                             "--out", ck + "-explain.html"],
                            ["export", "--checkpoint", ck, "--out", ck + "-export"]] {
                let out = try RecDist.single(command)
                #expect(out.status == 0, "\(command[0]) \(name): \(out.all)")
            }
            return try [ck + "-scores.csv", ck + "-explain.json", ck + "-export/model.safetensors"].map { try Data(contentsOf: URL(fileURLWithPath: $0)) }
        }
        #expect(try outputs("files") == outputs("funnel"), "predict, explain or export differ")
        // Resumed elsewhere from either: the same models.
        for (ranks, plan) in [(3, ["--embedding-sharding", "table"]), (1, [])] {
            var resumed: [[Data]] = []
            for name in ["files", "funnel"] {
                let copy = "\(dir)/\(name)-\(ranks)"
                try FileManager.default.copyItem(atPath: "\(dir)/\(name)", toPath: copy)
                let out = try RecDist.ranks(ranks, common + ["--steps", "20", "--checkpoint-dir", copy, "--auto-resume"] + plan)
                try #require(out.status == 0 && out.all.contains("resuming from \(copy)/step-00000010"), "\(out.all)")
                resumed.append(try outputs("\(name)-\(ranks)"))
            }
            #expect(resumed[0] == resumed[1], "resumed on \(ranks) rank(s): predict, explain or export differ")
        }
        // A machine too small for the assembled tables (MPI_LOCALNRANKS shares this host's memory
        // over 10^5 ranks): refused before anything is allocated or written, saying what it needs.
        for command in [["predict", "--checkpoint", dir + "/files", "--input", data, "--out", dir + "/small.csv"],
                        ["export", "--checkpoint", dir + "/files", "--out", dir + "/small-export"]] {
            let out = try RecDist.run(RecDist.binary, command, environment: ["MPI_LOCALNRANKS": "100000"])
            #expect(out.status == 64 && out.stderr.contains("to score") && out.stderr.contains("in 2 per-rank shard files")
                    && out.stderr.contains("use a machine with more memory"), "\(command[0]): \(out.all)")
            #expect(!FileManager.default.fileExists(atPath: command.last!), "\(command[0]) left \(command.last!)")
        }
    }

    /// SIGUSR1 to mpirun (forwarded to the ranks, as SIGTERM from Slurm reaches them) stops a
    /// row-sharded run with a checkpoint in shard files (exit 75); --auto-resume continues it on
    /// 3 ranks table-sharded, writing 3 shard files.
    @Test func stopSignalCheckpointsShardFiles() throws {
        let dir = try RecDist.scratch("shard-stop"), data = try RecDist.synthData(rows: 3000)
        let common = ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "5000", "--batch-size", "16", "--eval-every", "5",
                      "--metrics-out", dir + "/m.jsonl", "--checkpoint-dir", dir + "/ck"]
        let job = try RecDist.start("/usr/bin/env", ["mpirun"] + (getuid() == 0 ? ["--allow-run-as-root"] : [])
                                    + ["--oversubscribe", "-np", "2", RecDist.binary] + common + ["--steps", "100000", "--embedding-sharding", "row"])
        FaultTests.waitFor(dir + "/m.jsonl", job)
        kill(job.process.processIdentifier, SIGUSR1)
        let stopped = job.wait(timeout: 60)
        #expect(stopped.status == 75 && stopped.stdout.contains("stopped by SIGUSR1"), "\(stopped.all)")
        let latest = try String(contentsOfFile: dir + "/ck/latest", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let files = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/ck/\(latest)")
        #expect(files.filter { $0.hasPrefix("shard-") }.sorted() == ["shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors"])
        let step = try #require(Int(latest.dropFirst("step-".count)))
        let resumed = try RecDist.ranks(3, common + ["--steps", "\(step + 5)", "--embedding-sharding", "table", "--auto-resume"])
        #expect(resumed.status == 0 && resumed.all.contains("resuming from \(dir)/ck/\(latest)"), "\(resumed.all)")
        let final = String(format: "%@/ck/step-%08d", dir, step + 5)
        #expect(try FileManager.default.contentsOfDirectory(atPath: final).filter { $0.hasPrefix("shard-") }.count == 3)
    }

    /// A disk that fills while the ranks write their shard files: the run stops naming the file
    /// and the disk, exit 1; nothing of the new checkpoint is left and the previous one, with
    /// `latest`, is intact.
    @Test func fullDiskDuringShardFiles() throws {
        guard getuid() == 0 else {
            Issue.record("this test mounts a small tmpfs and needs root")
            return
        }
        let dir = try RecDist.scratch("shard-full"), data = try RecDist.synthData(rows: 3000), tiny = dir + "/tiny"
        try FileManager.default.createDirectory(atPath: tiny, withIntermediateDirectories: true)
        // A checkpoint takes about 55 MB (two 26 MB shard files): one fits, two do not.
        let mount = try RecDist.run("/bin/mount", ["-t", "tmpfs", "-o", "size=80m", "tmpfs", tiny])
        try #require(mount.status == 0, "cannot mount a tmpfs: \(mount.all)")
        defer { _ = try? RecDist.run("/bin/umount", ["-l", tiny]) }
        let out = try RecDist.ranks(2, ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "10000", "--optimizer", "adam",
                                        "--batch-size", "32", "--steps", "10", "--checkpoint-every", "5", "--embedding-sharding", "row",
                                        "--checkpoint-dir", tiny + "/ck"])
        #expect(out.status == 1, "\(out.all)")
        #expect(out.stderr.contains("No space left on device") && out.stderr.contains("step-00000005 is intact"), "\(out.all)")
        #expect(out.stderr.contains(".safetensors"), "\(out.all)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: tiny + "/ck").filter { $0.hasPrefix("step-") || $0.contains(".tmp") }
                == ["step-00000005"])
        #expect(try String(contentsOfFile: tiny + "/ck/latest", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) == "step-00000005")
        let predicted = try RecDist.single(["predict", "--checkpoint", tiny + "/ck", "--input", data, "--limit", "5", "--out", "-"])
        #expect(predicted.status == 0, "\(predicted.all)")
    }
}
