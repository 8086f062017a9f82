import Foundation
import Testing

/// A real Slurm (slurmctld, slurmd and munged from Debian's packages, configured in a temporary
/// directory by scripts/slurm-local.sh) runs rec-dist jobs submitted through `launch.sh --slurm`.
/// Each test starts its own one-node cluster and stops its daemons by PID, also on failure.
/// Serialized: the node has 2 CPUs and each job takes both.
@Suite(.serialized, .enabled(if: Cluster.canRunPrivilegedTests,
                             "needs root: installs slurm-wlm and munge and runs their daemons (always run in CI)"))
struct SlurmTests {
    /// A 2-task training job through launch.sh completes: state COMPLETED, exit 0, metrics from
    /// 2 ranks, output and error files per job, and a checkpoint in the job's directory.
    @Test func trainingJobCompletes() throws {
        let cluster = try SlurmCluster.start()
        defer { cluster.stop() }
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("slurm-ok")
        let (job, submitted) = try cluster.submit([
            "--nodes", "1", "--ntasks-per-node", "2", "--time", "00:10:00", "--job-name", "ok",
            "--output-dir", dir, "--",
            "train", "--data", data, "--model", "dlrm", "--hash-buckets", "500", "--steps", "30",
            "--metrics-out", dir + "/metrics.jsonl",
        ])
        try #require(submitted.status == 0 && Int(job) != nil, "launch.sh --slurm: \(submitted.all)")
        #expect(submitted.stderr.contains("submitted job \(job)"))

        let fields = try cluster.waitForEnd(job, timeout: 180)
        let output = (try? String(contentsOfFile: "\(dir)/ok-\(job).out", encoding: .utf8)) ?? "(no output file)"
        let errors = (try? String(contentsOfFile: "\(dir)/ok-\(job).err", encoding: .utf8)) ?? "(no error file)"
        #expect(fields["JobState"] == "COMPLETED", "job \(job): \(fields)\n\(output)\n\(errors)\n\(cluster.logs)")
        #expect(fields["ExitCode"] == "0:0")
        #expect(fields["NumTasks"] == "2")
        #expect(output.contains("on 2 rank(s)"), "\(output)")
        #expect(output.contains("rec-dist exited with status 0"))

        let records = try RecDist.metrics(dir + "/metrics.jsonl")
        let last = try #require(records.last)
        #expect(last["world_size"] as? Int == 2)
        #expect(last["step"] as? Int == 30)
        #expect(last["auc"] as? Double != nil)
        // launch.sh gave the job its own checkpoint directory (for --auto-resume after a requeue).
        let tensors = try RecDist.checkpointTensors("\(dir)/ok-\(job)-checkpoints")
        #expect(!tensors.isEmpty)
    }

    /// Row-sharded tables under Slurm (ranks started by srun, lookups and gradients by alltoallv
    /// between them) train to the parameters of replicated tables under plain mpirun.
    @Test func shardedTablesJobEqualsReplicatedRun() throws {
        let cluster = try SlurmCluster.start()
        defer { cluster.stop() }
        let data = try RecDist.synthData(rows: 600)
        let dir = try RecDist.scratch("slurm-sharded")
        let args = ["train", "--data", data, "--eval-fraction", "0", "--model", "dlrm", "--hash-buckets", "500",
                    "--optimizer", "adam", "--batch-size", "8", "--steps", "25", "--seed", "4"]
        let (job, submitted) = try cluster.submit([
            "--nodes", "1", "--ntasks-per-node", "2", "--time", "00:10:00", "--job-name", "sharded",
            "--output-dir", dir, "--"] + args + ["--embedding-sharding", "row"])
        try #require(submitted.status == 0 && Int(job) != nil, "launch.sh --slurm: \(submitted.all)")
        let fields = try cluster.waitForEnd(job, timeout: 180)
        let output = (try? String(contentsOfFile: "\(dir)/sharded-\(job).out", encoding: .utf8)) ?? "(no output file)"
        #expect(fields["JobState"] == "COMPLETED", "job \(job): \(fields)\n\(output)\n\(cluster.logs)")
        #expect(output.contains("row-wise over 2 ranks"), "\(output)")

        let replicated = try RecDist.scratch("slurm-sharded-reference")
        let local = try RecDist.ranks(2, args + ["--checkpoint-dir", replicated], timeout: 180)
        #expect(local.status == 0, "\(local.all)")
        let a = try RecDist.checkpointTensors("\(dir)/sharded-\(job)-checkpoints"), b = try RecDist.checkpointTensors(replicated)
        #expect(!a.isEmpty)
        let diff = RecDist.maxDifference(a, b)
        #expect(diff < 1e-4, "row-sharded under Slurm differs from replicated under mpirun by \(diff)")
    }

    /// A rank that fails (a bad row in rank 1's shard) fails the job: state FAILED with rec-dist's
    /// exit code, not COMPLETED, and the error names the file and line.
    @Test func failingRankFailsTheJob() throws {
        let cluster = try SlurmCluster.start()
        defer { cluster.stop() }
        let dir = try RecDist.scratch("slurm-bad")
        let good = try String(contentsOfFile: try RecDist.synthData(rows: 250), encoding: .utf8)
        var lines = good.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var fields = lines[5].split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        fields[3] = "12x"   // batch 4 per rank: line 6 is in rank 1's first block
        lines[5] = fields.joined(separator: "\t")
        let path = dir + "/bad.tsv"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)

        let (job, submitted) = try cluster.submit([
            "--nodes", "1", "--ntasks-per-node", "2", "--time", "00:05:00", "--job-name", "bad",
            "--output-dir", dir, "--", "train", "--data", path, "--batch-size", "4",
        ])
        try #require(submitted.status == 0 && Int(job) != nil, "launch.sh --slurm: \(submitted.all)")
        let state = try cluster.waitForEnd(job, timeout: 120)
        let errors = (try? String(contentsOfFile: "\(dir)/bad-\(job).err", encoding: .utf8)) ?? ""
        #expect(state["JobState"] == "FAILED", "job \(job): \(state)\n\(errors)\n\(cluster.logs)")
        let exitCode = state["ExitCode"]?.split(separator: ":").first.flatMap { Int($0) }
        #expect(exitCode == 1, "ExitCode \(state["ExitCode"] ?? "?")")
        #expect(errors.contains("bad.tsv:6"), "\(errors)")
    }

    /// The time-limit path: the signal launch.sh's script asks for (SIGUSR1 to the batch shell,
    /// sent here by hand instead of waiting for a real limit) makes rank 0 write a checkpoint and
    /// rec-dist exit 75; the script requeues the job, and the second start resumes it
    /// (--auto-resume) and completes it, ending at the same step as an uninterrupted run.
    @Test func timeLimitSignalCheckpointsRequeuesAndResumes() throws {
        let cluster = try SlurmCluster.start()
        defer { cluster.stop() }
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("slurm-requeue")
        // Enough steps that the signal arrives mid-run: an idle machine trains this mlp at over
        // 100 K steps/s (12 K steps once finished before the signal landed).
        let steps = 400_000
        let (job, submitted) = try cluster.submit([
            "--nodes", "1", "--ntasks-per-node", "2", "--time", "00:20:00", "--job-name", "rq",
            "--output-dir", dir, "--",
            "train", "--data", data, "--model", "mlp", "--batch-size", "8", "--steps", "\(steps)",
            "--log-every", "50000", "--metrics-out", dir + "/metrics.jsonl",
        ])
        try #require(submitted.status == 0 && Int(job) != nil, "launch.sh --slurm: \(submitted.all)")
        let outPath = "\(dir)/rq-\(job).out"
        func output() -> String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }

        // Once the ranks train (their signal handlers are installed by then), signal the batch shell.
        let training = try Cluster.waitUntil(timeout: 120) {
            if output().contains("training mlp") { return true }
            return ["COMPLETED", "FAILED", "CANCELLED"].contains(try cluster.jobFields(job)["JobState"] ?? "")
        }
        try #require(training && output().contains("training mlp"), "job \(job) did not start training: \(output())\n\(cluster.logs)")
        let signal = try cluster.command("scancel", ["--signal=USR1", "--batch", job])
        #expect(signal.status == 0, "\(signal.output)")

        let state = try cluster.waitForEnd(job, timeout: 240)
        let text = output()
        let errors = (try? String(contentsOfFile: "\(dir)/rq-\(job).err", encoding: .utf8)) ?? ""
        #expect(state["JobState"] == "COMPLETED", "job \(job): \(state)\n\(text)\n\(errors)\n\(cluster.logs)")
        #expect(state["Restarts"] == "1", "\(state)")
        #expect(text.contains("time limit near"), "\(text)")
        #expect(text.contains("requeueing job \(job)"), "\(text)")
        #expect(text.contains("resuming from"), "\(text)")
        #expect((text + errors).contains("stopped by SIGTERM"), "\(text)\n\(errors)")
        #expect(errors.contains("exit code 75"), "\(errors)")
        let records = try RecDist.metrics(dir + "/metrics.jsonl")
        #expect(records.last?["step"] as? Int == steps)
    }
}
