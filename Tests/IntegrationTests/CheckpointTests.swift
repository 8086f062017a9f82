import Foundation
import Testing

/// Checkpoints under real ranks: exact resume, signals, a full disk, non-finite steps, and the
/// weights read back by NumPy.
@Suite(.serialized)
struct CheckpointTests {
    static func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    static func finalFiles(_ root: String) throws -> (model: Data, optimizer: Data) {
        let latest = try String(contentsOfFile: root + "/latest", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return (try bytes("\(root)/\(latest)/model.safetensors"), try bytes("\(root)/\(latest)/optimizer.safetensors"))
    }

    /// Stopping after 12 steps and resuming gives bitwise the same model and optimizer state as
    /// 30 uninterrupted steps, with the same number of ranks.
    @Test(arguments: [("dlrm", "adam"), ("mlp", "momentum")])
    func resumeIsBitwiseIdentical(model: String, optimizer: String) throws {
        let data = try RecDist.synthData(rows: 2000)
        let common = ["train", "--data", data, "--model", model, "--optimizer", optimizer, "--hash-buckets", "400",
                      "--batch-size", "16", "--seed", "9"]
        let whole = try RecDist.scratch("whole"), parts = try RecDist.scratch("parts")
        var out = try RecDist.ranks(2, common + ["--steps", "30", "--checkpoint-dir", whole])
        #expect(out.status == 0, "\(out.all)")
        out = try RecDist.ranks(2, common + ["--steps", "12", "--checkpoint-dir", parts])
        #expect(out.status == 0, "\(out.all)")
        out = try RecDist.ranks(2, common + ["--steps", "30", "--checkpoint-dir", parts, "--auto-resume"])
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("resuming from \(parts)/step-00000012"))
        let a = try Self.finalFiles(whole), b = try Self.finalFiles(parts)
        #expect(a.model == b.model, "model.safetensors differs after resume")
        #expect(a.optimizer == b.optimizer, "optimizer.safetensors differs after resume")
        // The interrupted run's first part really differs from the end state.
        #expect(try Self.bytes(parts + "/step-00000012/model.safetensors") != a.model)
    }

    /// SIGTERM to the launcher: every rank stops at the same step, rank 0 writes a checkpoint,
    /// the job exits with 75, and --auto-resume then ends exactly where an uninterrupted run does.
    @Test func sigtermCheckpointsThenAutoResumeFinishes() throws {
        let data = try RecDist.synthData(rows: 2000)
        let common = ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "300", "--batch-size", "8",
                      "--bottom", "64,32", "--top", "64", "--steps", "800", "--seed", "4", "--log-every", "10"]
        let reference = try RecDist.scratch("sig-ref"), root = try RecDist.scratch("sig")
        var out = try RecDist.ranks(2, common + ["--checkpoint-dir", reference], timeout: 300)
        #expect(out.status == 0, "\(out.all)")

        let metrics = root + ".jsonl"
        let job = try RecDist.start("/bin/bash", [RecDist.packageRoot + "/launch.sh", "-np", "2", "--"] + common
                                    + ["--checkpoint-dir", root, "--eval-every", "20", "--metrics-out", metrics])
        // Wait for training to be under way (rank 0 has evaluated once), then ask it to stop.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, job.process.isRunning,
              ((try? String(contentsOfFile: metrics, encoding: .utf8)) ?? "").isEmpty { usleep(20_000) }
        kill(job.process.processIdentifier, SIGTERM)
        let finished = job.wait(timeout: 60)
        #expect(!finished.timedOut)
        #expect(finished.status == 75, "\(finished.all)")
        #expect(finished.stdout.contains("stopped by SIGTERM (relayed by launch.sh as SIGUSR1)"), "\(finished.all)")
        let stopped = try #require(try? String(contentsOfFile: root + "/latest", encoding: .utf8))
        #expect(stopped.hasPrefix("step-") && !stopped.contains("00000800"), "stopped at \(stopped)")

        out = try RecDist.ranks(2, common + ["--checkpoint-dir", root, "--auto-resume"], timeout: 300)
        #expect(out.status == 0, "\(out.all)")
        let a = try Self.finalFiles(reference), b = try Self.finalFiles(root)
        #expect(a.model == b.model && a.optimizer == b.optimizer, "resumed run differs from the uninterrupted one")
    }

    /// A run checkpointed on 2 ranks continues on 3 from the same global row, even when the new
    /// global batch does not divide that position.
    @Test func resumeOnADifferentNumberOfRanks() throws {
        let data = try RecDist.synthData(rows: 2000)
        let root = try RecDist.scratch("reshard")
        var out = try RecDist.ranks(2, ["train", "--data", data, "--batch-size", "6", "--steps", "10",
                                        "--checkpoint-dir", root, "--metrics-out", root + "/m.jsonl"])
        #expect(out.status == 0, "\(out.all)")
        out = try RecDist.ranks(3, ["train", "--data", data, "--batch-size", "5", "--epochs", "1",
                                    "--checkpoint-dir", root, "--auto-resume", "--metrics-out", root + "/m.jsonl"])
        #expect(out.status == 0, "\(out.all)")
        #expect(out.all.contains("will not match an uninterrupted run"))
        let records = try RecDist.metrics(root + "/m.jsonl")
        #expect(records.count == 2)
        // 1800 training rows: 120 on 2 ranks, then exactly the remaining 1680 on 3.
        #expect(records.last?["samples"] as? Int == 1800)
        #expect(records.last?["world_size"] as? Int == 3)
    }

    /// A checkpoint that does not fit on the disk leaves the previous one intact and stops the job.
    @Test func fullDiskKeepsThePreviousCheckpoint() throws {
        guard getuid() == 0 else {
            Issue.record("this test mounts a small tmpfs and needs root")
            return
        }
        let data = try RecDist.synthData(rows: 2000)
        let mountPoint = try RecDist.scratch("tinyfs")
        // One dlrm checkpoint with 300 buckets and Adam is about 7.4 MB: room for one, not two.
        let mount = try RecDist.run("/bin/mount", ["-t", "tmpfs", "-o", "size=10m", "tmpfs", mountPoint])
        try #require(mount.status == 0, "cannot mount a tmpfs: \(mount.all)")
        defer { _ = try? RecDist.run("/bin/umount", ["-l", mountPoint]) }
        let out = try RecDist.ranks(2, ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "300",
                                        "--steps", "20", "--checkpoint-every", "5", "--keep", "5",
                                        "--checkpoint-dir", mountPoint + "/ck"], timeout: 120)
        #expect(out.status == 1, "\(out.all)")
        #expect(out.stderr.contains("No space left on device"), "\(out.stderr)")
        #expect(out.stderr.contains("the previous checkpoint \(mountPoint)/ck/step-00000005 is intact"), "\(out.stderr)")
        // It is intact indeed: it validates and scores.
        let check = try RecDist.single(["predict", "--checkpoint", mountPoint + "/ck", "--input", data, "--limit", "5"])
        #expect(check.status == 0, "\(check.all)")
        #expect(check.stdout.split(separator: "\n").count == 6)
        let left = try FileManager.default.contentsOfDirectory(atPath: mountPoint + "/ck")
        #expect(!left.contains { $0.contains(".tmp") }, "temporary files left behind: \(left)")
    }

    /// A NaN loss stops training and names the step and the last good checkpoint; with
    /// --skip-nonfinite the bad steps are skipped on every rank and training finishes.
    @Test func nonFiniteStepsStopOrAreSkipped() throws {
        let data = try RecDist.synthData(rows: 2000)
        let root = try RecDist.scratch("nan")
        let common = ["train", "--data", data, "--optimizer", "sgd", "--lr", "1e30", "--steps", "12",
                      "--checkpoint-dir", root, "--checkpoint-every", "1"]
        var out = try RecDist.ranks(2, common)
        #expect(out.status == 1, "\(out.all)")
        #expect(out.stderr.contains("non-finite value at step"), "\(out.stderr)")
        #expect(out.stderr.contains("The last good checkpoint is \(root)/step-"), "\(out.stderr)")
        out = try RecDist.ranks(2, common.filter { $0 != "--checkpoint-every" && $0 != "1" }
                                    + ["--skip-nonfinite", "--checkpoint-dir", root + "-skip"])
        #expect(out.status == 0, "\(out.all)")
        #expect(out.all.contains("non-finite step(s)"), "\(out.all)")
    }

    /// `rec-dist export` writes the weights and a model description from which NumPy and the
    /// safetensors package (examples/score.py, generic over the description's ops) reproduce
    /// rec-dist's predictions, for every model: on raw Criteo TSV (hashing, log1p), on a prepared
    /// copy of it, and (ncf, two-tower: user and item fields) on a prepared MovieLens folder.
    @Test(arguments: ["mlp:tsv", "dlrm:tsv", "logreg:tsv", "wide-deep:tsv", "mlp:prepared", "dlrm:prepared",
                      "logreg:prepared", "wide-deep:prepared", "ncf:movies", "two-tower:movies", "dlrm:movies"])
    func numpyReproducesPredictions(variant: String) throws {
        let parts = variant.split(separator: ":").map(String.init)
        let model = parts[0], input = parts[1], prepared = input != "tsv"
        let data = input == "tsv" ? try RecDist.synthData(rows: 2000)
            : input == "prepared" ? try UsingModelData.preparedSynth(rows: 2000) : try UsingModelData.preparedMovieLens()
        let root = try RecDist.scratch("numpy-\(model)-\(input)")
        // These models train with tanh MLPs here: the description carries each MLP's activation.
        let extra = ["mlp", "dlrm"].contains(model) ? [] : ["--activation", "tanh"]
        var out = try RecDist.ranks(2, ["train", "--data", data, "--model", model, "--steps", "30", "--checkpoint-dir", root]
                                       + (prepared ? [] : ["--hash-buckets", "1000"]) + extra)   // a prepared dataset sizes its own tables
        #expect(out.status == 0, "\(out.all)")
        out = try RecDist.single(["predict", "--checkpoint", root, "--input", data, "--limit", "100"] + (prepared ? ["--split", "valid"] : []))
        #expect(out.status == 0, "\(out.all)")
        let ours = out.stdout.split(separator: "\n").dropFirst().compactMap { Double($0.split(separator: ",").last!) }
        out = try RecDist.single(["export", "--checkpoint", root, "--out", root + "/serving"])
        try #require(out.status == 0, "\(out.all)")
        let description = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: root + "/serving/model.json"))) as! [String: Any]
        #expect(description["model"] as? String == model)
        #expect((description["input"] as? [String: Any])?["kind"] as? String == (prepared ? "prepared" : "criteo-tsv"))
        let ops = (description["graph"] as! [[String: Any]]).map { $0["op"] as! String }
        #expect(ops.last == "sigmoid" && ops.contains("linear") && (model != "dlrm" || ops.contains("dot_interaction")), "\(ops)")
        let py = try RecDist.run(RecDist.python, [RecDist.packageRoot + "/examples/score.py", root + "/serving", data,
                                                  "--limit", "100"] + (prepared ? ["--split", "valid"] : []))
        try #require(py.status == 0, "examples/score.py failed (./launch.sh test creates .venv with safetensors and numpy): \(py.all)")
        let theirs = py.stdout.split(separator: "\n").compactMap { Double($0) }
        #expect(ours.count == 100 && theirs.count == 100)
        let worst = zip(ours, theirs).map { abs($0 - $1) }.max() ?? 1
        #expect(worst < 1e-5, "NumPy and rec-dist predictions differ by \(worst)")
        // Not trivially equal: the model's predictions vary across rows.
        #expect(Set(ours.map { ($0 * 1e4).rounded() }).count > 10)
    }

    /// export refuses what it cannot describe, naming the flag.
    @Test func exportNamesWhatIsMissing() throws {
        let out = try RecDist.single(["export", "--checkpoint", "/nonexistent/ck", "--out", "/tmp/x"])
        #expect(out.status == 1)
        #expect(out.stderr.contains("/nonexistent/ck") && out.stderr.contains("not a checkpoint"), "\(out.stderr)")
    }
}
