import Foundation
import Testing

/// launch.sh's command lines and batch scripts (--dry-run: nothing runs).
struct LaunchScriptTests {
    static let launch = RecDist.packageRoot + "/launch.sh"

    func dryRun(_ arguments: [String]) throws -> RecDist.Output {
        try RecDist.run("/bin/bash", [Self.launch] + arguments, timeout: 30)
    }

    @Test func hostfileRunMapsBindsAndExportsTheEnvironment() throws {
        let out = try dryRun(["-np", "4", "--hostfile", RecDist.packageRoot + "/hostfiles/example-cluster",
                              "-x", "MY_VAR", "--mca", "oob_tcp_keepalive_time", "9", "--dry-run", "--",
                              "train", "--data", "x.tsv"])
        #expect(out.status == 0, "\(out.all)")
        let line = out.stdout
        #expect(line.contains("--hostfile"))
        #expect(line.contains("--map-by slot --bind-to core"))
        // A cut-off host ends the job in seconds, not at TCP's timeout; the user's value wins.
        #expect(line.contains("--mca oob_tcp_keepalive_time 9 "))
        #expect(!line.contains("oob_tcp_keepalive_time 5"))
        #expect(line.contains("--mca oob_tcp_keepalive_probes 3"))
        #expect(line.contains("-x OPENBLAS_NUM_THREADS=1 -x OMP_NUM_THREADS=1"))
        #expect(line.contains("-x MY_VAR"))
        #expect(line.contains("rec-dist train --data x.tsv"))
    }

    @Test func moreLocalRanksThanCoresOversubscribeUnbound() throws {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let out = try dryRun(["-np", "\(cores + 1)", "--dry-run", "--", "train", "--data", "x.tsv"])
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("--oversubscribe --bind-to none"))
    }

    @Test func slurmBatchScript() throws {
        let outDir = try RecDist.scratch("slurm-dry")
        let out = try dryRun(["--slurm", "--nodes", "2", "--ntasks-per-node", "4", "--time", "02:00:00",
                              "--partition", "cpu", "--account", "proj7", "--output-dir", outDir, "--dry-run", "--",
                              "train", "--data", "my data.tsv", "--model", "dlrm"])
        #expect(out.status == 0, "\(out.all)")
        let script = out.stdout
        for line in ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --time=02:00:00",
                     "#SBATCH --partition=cpu", "#SBATCH --account=proj7",
                     "#SBATCH --output=\(outDir)/%x-%j.out", "#SBATCH --error=\(outDir)/%x-%j.err",
                     "#SBATCH --signal=B:USR1@120", "#SBATCH --requeue", "#SBATCH --open-mode=append"] {
            #expect(script.contains(line + "\n"), "missing \(line) in:\n\(script)")
        }
        #expect(script.contains("srun --mpi=pmix --kill-on-bad-exit=1 "))
        #expect(script.contains("train --data my\\ data.tsv --model dlrm --checkpoint-dir \(outDir)/rec-dist-\"$SLURM_JOB_ID\"-checkpoints --auto-resume"))
        #expect(script.contains("scontrol requeue"))
        #expect(script.contains("exit \"$status\""))
        // Nothing was written or submitted.
        #expect(try FileManager.default.contentsOfDirectory(atPath: outDir).isEmpty)
        // The script is valid bash.
        let file = outDir + "/job.sbatch"
        try script.write(toFile: file, atomically: true, encoding: .utf8)
        let syntax = try RecDist.run("/bin/bash", ["-n", file], timeout: 30)
        #expect(syntax.status == 0, "\(syntax.all)")
    }

    @Test func slurmKeepsTheUsersCheckpointDirAndResumeChoice() throws {
        let out = try dryRun(["--slurm", "--nodes", "1", "--ntasks-per-node", "2", "--time", "4", "--no-requeue",
                              "--dry-run", "--", "train", "--data", "x.tsv", "--checkpoint-dir", "ck",
                              "--resume", "ck/step-00000010"])
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("--checkpoint-dir ck --resume ck/step-00000010 &"))
        #expect(!out.stdout.contains("--auto-resume"))
        #expect(out.stdout.contains("#SBATCH --no-requeue"))
        #expect(!out.stdout.contains("scontrol requeue"))
        // A limit under 8 minutes is warned a quarter of it ahead (4 minutes: 60 s), not 2 minutes.
        #expect(out.stdout.contains("#SBATCH --signal=B:USR1@60"))
    }

    @Test(arguments: [
        (["--slurm", "--nodes", "0", "--ntasks-per-node", "2", "--time", "1:00:00"], "--nodes"),
        (["--slurm", "--nodes", "1", "--ntasks-per-node", "2", "--time", "soon"], "--time"),
        (["--slurm", "--nodes", "1", "--ntasks-per-node", "2", "--time", "00:01:00", "--signal-lead", "90"], "--signal-lead"),
        (["--slurm", "--nodes", "1", "--ntasks-per-node", "2", "--time", "1:00:00", "--partition", "a b"], "--partition"),
        (["-np", "2", "--hostfile", "/nonexistent/hosts"], "hostfile"),
    ])
    func badLaunchOptionsAreRejected(arguments: [String], mention: String) throws {
        let out = try dryRun(arguments + ["--dry-run", "--", "train", "--data", "x.tsv"])
        #expect(out.status == 2, "\(out.all)")
        #expect(out.stderr.contains(mention), "\(out.stderr)")
    }
}

/// The test support itself: a job that outlives its timeout is killed with everything it started,
/// including mpirun, which launch.sh runs in a session of its own, and the ranks.
@Suite struct TestSupportTests {
    @Test func aTimedOutLaunchLeavesNoProcessBehind() throws {
        let data = try RecDist.synthData(rows: 2000)
        let job = try RecDist.start("/bin/bash", [RecDist.packageRoot + "/launch.sh", "-np", "2", "--", "train",
                                                  "--data", data, "--batch-size", "1", "--steps", "100000000"])
        let marker = "REC_DIST_TEST_JOB=" + job.marker
        // Wait until the ranks run, so the kill has mpirun and both ranks to find.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, RecDist.processes(withEnvironment: marker).count < 4 { usleep(50_000) }
        #expect(RecDist.processes(withEnvironment: marker).count >= 4, "launch.sh, mpirun and 2 ranks: \(job.stdout)")
        let out = job.wait(timeout: job.start.timeIntervalSinceNow.magnitude + 1)
        #expect(out.timedOut)
        var left = RecDist.processes(withEnvironment: marker)
        let settle = Date().addingTimeInterval(5)
        while !left.isEmpty, Date() < settle { usleep(50_000); left = RecDist.processes(withEnvironment: marker) }
        #expect(left.isEmpty, "still running after the timeout: \(left)")
    }
}
