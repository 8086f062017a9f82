import Foundation
import Testing

/// Faults a hostile user or a failing machine brings, through the real binary: two runs on one
/// checkpoint directory, a resume on other data, a stop with nothing saved, a full disk under
/// --continue-on-checkpoint-failure. Each ends with a documented exit code and a message naming
/// what to fix, and loses no checkpoint.
@Suite(.serialized)
struct FaultTests {
    /// Waits until `path` exists (or `job` ended, or 60 s passed).
    static func waitFor(_ path: String, _ job: RecDist.Job) {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, job.process.isRunning, !FileManager.default.fileExists(atPath: path) { usleep(20_000) }
    }

    /// A second run on a checkpoint directory in use is refused (exit 64) naming the process that
    /// holds it, and leaves the first run's checkpoints alone; the first run goes on.
    @Test func aSecondWriterIsRefused() throws {
        let data = try RecDist.synthData(rows: 2000)
        let root = try RecDist.scratch("two-writers") + "/ck"
        let common = ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "300", "--batch-size", "8",
                      "--checkpoint-dir", root, "--checkpoint-every", "10"]
        let first = try RecDist.start(RecDist.binary, common + ["--steps", "100000", "--seed", "1"])
        Self.waitFor(root + "/latest", first)
        let second = try RecDist.single(common + ["--steps", "20", "--seed", "2"])
        #expect(second.status == 64, "\(second.all)")
        #expect(second.stderr.contains("the checkpoint directory is in use: process \(first.process.processIdentifier) on "), "\(second.all)")
        #expect(first.process.isRunning, "the first run goes on")
        kill(first.process.processIdentifier, SIGTERM)
        let stopped = first.wait(timeout: 60)
        #expect(stopped.status == 75, "\(stopped.all)")
        // Every checkpoint left is the first run's (seed 1), and `latest` names its newest.
        let names = try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.hasPrefix("step-") }.sorted()
        #expect(!names.isEmpty)
        for name in names {
            let state = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(root)/\(name)/trainer.json"))) as! [String: Any]
            #expect((state["config"] as? [String: Any])?["seed"] as? Int == 1, "\(name)")
        }
        let latest = try String(contentsOfFile: root + "/latest", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(latest == names.last)
    }

    /// Resuming on other data is refused with exit 64, naming what differs.
    @Test func resumeOnOtherDataIsRefused() throws {
        let data = try RecDist.synthData(rows: 2000), other = try RecDist.synthData(rows: 1500)
        let root = try RecDist.scratch("other-data") + "/ck"
        let model = ["--model", "dlrm", "--hash-buckets", "300"]
        var out = try RecDist.single(["train", "--data", data, "--steps", "5", "--checkpoint-dir", root] + model)
        try #require(out.status == 0, "\(out.all)")
        out = try RecDist.single(["train", "--data", other, "--steps", "10", "--checkpoint-dir", root, "--auto-resume"] + model)
        #expect(out.status == 64, "\(out.all)")
        #expect(out.stderr.contains("it was trained on other data") && out.stderr.contains("1800 training rows, now 1350"), "\(out.all)")
        out = try RecDist.single(["train", "--data", other, "--steps", "10", "--checkpoint-dir", root, "--auto-resume", "--restart-data"] + model)
        #expect(out.status == 0, "\(out.all)")
    }

    /// SIGTERM without --checkpoint-dir: the run stops at a step boundary and says nothing was
    /// saved, with its own exit code (76), not the "checkpoint written" 75.
    @Test func sigtermWithNothingSaved() throws {
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("sigterm-unsaved")
        let job = try RecDist.start(RecDist.binary, ["train", "--data", data, "--steps", "1000000", "--eval-every", "5",
                                                     "--metrics-out", dir + "/m.jsonl"])
        Self.waitFor(dir + "/m.jsonl", job)
        kill(job.process.processIdentifier, SIGTERM)
        let out = job.wait(timeout: 60)
        #expect(out.status == 76, "\(out.all)")
        #expect(out.all.contains("nothing was saved"), "\(out.all)")
    }

    /// With --continue-on-checkpoint-failure on a full disk, `best` and the summary name only a
    /// checkpoint that was written: never one whose write failed.
    @Test func bestNamesOnlyAWrittenCheckpoint() throws {
        guard getuid() == 0 else {
            Issue.record("this test mounts a small tmpfs and needs root")
            return
        }
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("best-full"), mountPoint = dir + "/tiny"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        // One dlrm checkpoint with 300 buckets and Adam is about 7.4 MB: room for one, not two.
        let mount = try RecDist.run("/bin/mount", ["-t", "tmpfs", "-o", "size=10m", "tmpfs", mountPoint])
        try #require(mount.status == 0, "cannot mount a tmpfs: \(mount.all)")
        defer { _ = try? RecDist.run("/bin/umount", ["-l", mountPoint]) }
        let out = try RecDist.single(["train", "--data", data, "--model", "dlrm", "--hash-buckets", "300", "--steps", "60",
                                      "--eval-every", "10", "--checkpoint-every", "10", "--select-metric", "logloss", "--keep", "5",
                                      "--checkpoint-dir", mountPoint + "/ck", "--continue-on-checkpoint-failure",
                                      "--metrics-out", dir + "/m.jsonl"], timeout: 180)
        #expect(out.status == 0, "\(out.all)")
        #expect(out.all.contains("No space left on device") && out.all.contains("training continues"), "\(out.all)")
        // The test means something only if an evaluation after the first checkpoint was better.
        let losses = try RecDist.metrics(dir + "/m.jsonl").compactMap { $0["logloss"] as? Double }
        try #require(losses.count == 6 && losses.dropFirst().contains { $0 < losses[0] }, "\(losses)")
        let best = try String(contentsOfFile: mountPoint + "/ck/best", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(best == "step-00000010", "best names \(best)")
        #expect(FileManager.default.fileExists(atPath: mountPoint + "/ck/" + best + "/CHECKSUMS"))
        let summary = out.stdout.split(separator: "\n").first { $0.hasPrefix("best checkpoint") }.map(String.init) ?? ""
        #expect(summary.hasSuffix("/ck/step-00000010"), "\(summary)")
    }

    /// An evaluation without rows prints "n/a", writes null into the metrics log (never "NaN"
    /// strings or -nan), and the summary says there was no evaluation.
    @Test func evaluationWithoutRows() throws {
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("no-eval-rows")
        let out = try RecDist.single(["train", "--data", data, "--steps", "4", "--eval-every", "2", "--eval-fraction", "0",
                                      "--metrics-out", dir + "/m.jsonl"])
        #expect(out.status == 0, "\(out.all)")
        #expect(!out.all.lowercased().contains("nan"), "\(out.all)")
        #expect(out.stdout.contains("final evaluation: none (no evaluation rows"), "\(out.all)")
        let text = try String(contentsOfFile: dir + "/m.jsonl", encoding: .utf8)
        #expect(!text.contains("NaN") && !text.contains("Infinity"), "\(text)")
        let records = try RecDist.metrics(dir + "/m.jsonl")
        #expect(records.count == 2 && records.allSatisfy { $0["logloss"] is NSNull && $0["train_loss"] is Double }, "\(text)")
    }

    /// Every writer on a full disk: a sentence naming the path and "No space left on device",
    /// exit 1, and nothing partial left behind (no file, no half line, no half export).
    @Test func fullDiskForEveryWriter() throws {
        guard getuid() == 0 else {
            Issue.record("this test mounts a small tmpfs and needs root")
            return
        }
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("full-writers"), tiny = dir + "/tiny"
        var out = try RecDist.single(["train", "--data", data, "--model", "dlrm", "--hash-buckets", "300", "--steps", "5",
                                      "--checkpoint-dir", dir + "/ck", "--metrics-out", dir + "/m.jsonl"])
        try #require(out.status == 0, "\(out.all)")
        try FileManager.default.createDirectory(atPath: tiny, withIntermediateDirectories: true)
        let mount = try RecDist.run("/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", tiny])
        try #require(mount.status == 0, "cannot mount a tmpfs: \(mount.all)")
        defer { _ = try? RecDist.run("/bin/umount", ["-l", tiny]) }
        func expectFull(_ out: RecDist.Output, _ path: String, _ what: String) {
            #expect(out.status == 1, "\(what): \(out.all)")
            #expect(out.stderr.contains(path) && out.stderr.contains("No space left on device"), "\(what): \(out.all)")
            #expect(!out.stderr.contains("NSCocoaErrorDomain"), "\(what): \(out.all)")
        }
        out = try RecDist.single(["export", "--checkpoint", dir + "/ck", "--out", tiny + "/serving"])
        expectFull(out, tiny + "/serving/model.safetensors", "export")
        out = try RecDist.single(["export", "--checkpoint", dir + "/ck", "--out", tiny + "/onnx", "--format", "onnx"])
        expectFull(out, tiny + "/onnx/model.onnx", "export --format onnx")
        // 8 KiB left: less than the scores and the report take.
        let filler = tiny + "/filler"
        try Data(count: 56 * 1024).write(to: URL(fileURLWithPath: filler))
        out = try RecDist.single(["predict", "--checkpoint", dir + "/ck", "--input", data, "--out", tiny + "/scores.csv"])
        expectFull(out, tiny + "/scores.csv", "predict")
        out = try RecDist.single(["report", "--metrics", dir + "/m.jsonl", "--out", tiny + "/report.html"])
        expectFull(out, tiny + "/report.html", "report")
        try FileManager.default.removeItem(atPath: filler)
        let left = try FileManager.default.contentsOfDirectory(atPath: tiny)
        #expect(left.isEmpty, "partial files left: \(left)")
        _ = filler

        // The metrics log fills up during training: the run stops naming it, and the log ends
        // with a whole line.
        out = try RecDist.single(["train", "--data", data, "--steps", "100000", "--eval-every", "1", "--metrics-out", tiny + "/m.jsonl"],
                                 timeout: 120)
        #expect(out.status == 1, "\(out.all)")
        #expect(out.stderr.contains("metrics log '\(tiny)/m.jsonl': cannot append: No space left on device"), "\(out.all)")
        let log = try Data(contentsOf: URL(fileURLWithPath: tiny + "/m.jsonl"))
        #expect(log.count > 1000 && log.last == 0x0A, "\(log.count) bytes, last \(String(describing: log.last))")
    }

    /// Ctrl-C to launch.sh (SIGINT) checkpoints and stops like SIGTERM, and is named as SIGINT;
    /// under plain mpirun, SIGUSR1 to mpirun does the same (mpirun forwards it; a SIGTERM or
    /// SIGINT of its own kills the ranks, as the README says).
    @Test(arguments: ["launch.sh", "mpirun"])
    func stopSignalsCheckpoint(launcher: String) throws {
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("stop-\(launcher)")
        let train = ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "300", "--batch-size", "8", "--steps", "100000",
                     "--eval-every", "5", "--metrics-out", dir + "/m.jsonl", "--checkpoint-dir", dir + "/ck"]
        let job = launcher == "launch.sh"
            ? try RecDist.start("/bin/bash", [RecDist.packageRoot + "/launch.sh", "-np", "2", "--"] + train)
            : try RecDist.start("/usr/bin/env", ["mpirun"] + (getuid() == 0 ? ["--allow-run-as-root"] : []) + ["--oversubscribe", "-np", "2", RecDist.binary] + train)
        Self.waitFor(dir + "/m.jsonl", job)
        kill(job.process.processIdentifier, launcher == "launch.sh" ? SIGINT : SIGUSR1)
        let out = job.wait(timeout: 60)
        #expect(out.status == 75, "\(out.all)")
        let expected = launcher == "launch.sh" ? "stopped by SIGINT (relayed by launch.sh as SIGUSR2)" : "stopped by SIGUSR1"
        #expect(out.stdout.contains(expected) && out.stdout.contains("checkpoint written to \(dir)/ck/step-"), "\(out.all)")
    }

    /// `latest` naming a checkpoint that is gone says so (and names the newest one left), instead
    /// of calling a checkpoint damaged.
    @Test func latestNamingAMissingCheckpoint() throws {
        let data = try RecDist.synthData(rows: 2000)
        let root = try RecDist.scratch("latest-missing") + "/ck"
        var out = try RecDist.single(["train", "--data", data, "--steps", "4", "--checkpoint-every", "2", "--checkpoint-dir", root])
        try #require(out.status == 0, "\(out.all)")
        try FileManager.default.removeItem(atPath: root + "/step-00000004")
        out = try RecDist.single(["predict", "--checkpoint", root, "--input", data, "--limit", "3"])
        #expect(out.status == 1, "\(out.all)")
        #expect(out.stderr.contains("'latest' names step-00000004, which does not exist") && out.stderr.contains("the newest checkpoint there is step-00000002"), "\(out.all)")
        #expect(!out.stderr.contains("damaged"), "\(out.all)")
    }

    /// predict on a checkpoint directory while training writes and prunes it (a checkpoint every
    /// step, one kept): every read loads the checkpoint `latest` names, retrying once when it was
    /// pruned underneath.
    @Test func predictWhileTrainingPrunes() throws {
        let data = try RecDist.synthData(rows: 2000)
        let root = try RecDist.scratch("predict-pruning") + "/ck"
        let job = try RecDist.start(RecDist.binary, ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "2000", "--batch-size", "16",
                                                     "--steps", "100000", "--checkpoint-every", "1", "--keep", "1", "--checkpoint-dir", root])
        Self.waitFor(root + "/latest", job)
        var failures: [String] = []
        for _ in 0..<25 where job.process.isRunning {
            let out = try RecDist.single(["predict", "--checkpoint", root, "--input", data, "--limit", "2"])
            if out.status != 0 { failures.append(out.stderr) }
        }
        kill(job.process.processIdentifier, SIGTERM)
        let stopped = job.wait(timeout: 60)
        #expect(stopped.status == 75, "\(stopped.all)")
        #expect(failures.isEmpty, "\(failures.count) of 25 failed: \(failures.prefix(3))")
    }

    /// A prepared split truncated by another process during training ends the run with one line
    /// naming the file and status 74, not a SIGBUS crash.
    @Test func fileTruncatedUnderTheMap() throws {
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("truncated")
        var out = try RecDist.single(["prepare", "--format", "criteo", "--input", data, "--out", dir + "/prepared"])
        try #require(out.status == 0, "\(out.all)")
        let job = try RecDist.start(RecDist.binary, ["train", "--data", dir + "/prepared", "--steps", "10000000", "--batch-size", "16",
                                                     "--eval-every", "20", "--metrics-out", dir + "/m.jsonl"])
        Self.waitFor(dir + "/m.jsonl", job)
        usleep(300_000)
        #expect(truncate(dir + "/prepared/train.rdp", 4096) == 0)
        out = job.wait(timeout: 60)
        #expect(out.status == 74, "\(out.all)")
        #expect(out.stderr.contains("error: \(dir)/prepared/train.rdp: the file shrank while rec-dist was reading it"), "\(out.all)")
    }

    /// A negative number for any numeric flag is a range error naming the flag (exit 64), never
    /// "Missing value" (the parser used to read "-1" as another option).
    @Test func negativeNumbersAreRangeErrors() throws {
        let flags = ["--batch-size", "--epochs", "--steps", "--eval-every", "--log-every", "--keep", "--lr", "--hash-buckets",
                     "--embedding-dim", "--factors", "--dropout", "--momentum", "--accumulate", "--collective-timeout",
                     "--checkpoint-every", "--checkpoint-every-seconds", "--early-stop-patience", "--early-stop-min-delta", "--k",
                     "--debug-check-every", "--eval-fraction", "--dense-features", "--warmup-steps", "--clip-norm", "--weight-decay",
                     "--seed", "--bucket-kib", "--blas-threads", "--hidden", "--bottom", "--top", "--prefetch", "--resident-data",
                     "--shuffle-window"]
        for flag in flags {
            let out = try RecDist.single(["train", "--data", "x.tsv", flag, "-1"])
            #expect(out.status == 64 && out.stderr.contains(flag) && !out.stderr.contains("Missing value"), "\(flag): \(out.all)")
        }
        for args in [["predict", "--checkpoint", "ck", "--input", "x", "--limit", "-1"], ["bench", "--batch-size", "-1"]] {
            let out = try RecDist.single(args)
            #expect(out.status == 64 && !out.stderr.contains("Missing value"), "\(args): \(out.all)")
        }
    }
}
