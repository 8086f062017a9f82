import Foundation
import Testing

/// A rank that dies or gets stuck ends the whole job quickly, with a message naming the rank;
/// the collective watchdog does not change what training computes. Under real `mpirun` ranks
/// through launch.sh. Serialized, with hard time limits; every path kills what it started.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct RankFailureTests {
    /// A run that is still training when the test strikes: tiny data, tiny steps, endless.
    static func endlessTraining(_ data: String) -> [String] {
        ["train", "--data", data, "--batch-size", "8", "--steps", "100000000", "--log-every", "100000000"]
    }

    /// SIGKILL one rank by PID mid-training: mpirun ends the job within 10 s, non-zero, naming
    /// the rank and the signal.
    @Test(arguments: [(ranks: 2, victim: 1), (ranks: 3, victim: 0)])
    func killedRankEndsTheJob(ranks: Int, victim: Int) throws {
        let data = try RecDist.synthData(rows: 2000)
        let job = try MPIJob(ranks: ranks, Self.endlessTraining(data))
        defer { job.cleanUp() }
        let pids = try job.waitUntilTraining()
        let pid = try #require(pids[victim], "rank PIDs: \(pids)")
        kill(pid, SIGKILL)
        let seconds = job.waitForExit(timeout: 30)
        let out = job.output()
        #expect(seconds != nil && seconds! < 10, "job still running \(seconds.map { String(format: "%.1f", $0) } ?? "> 30") s after the kill: \(out)")
        #expect(job.status != 0)
        #expect(out.contains("rank \(victim)") && out.contains("signal 9"), "\(out)")
    }

    /// A rank killed mid-run loses nothing that was checkpointed: --auto-resume from the last
    /// periodic checkpoint ends bitwise where an uninterrupted run ends.
    @Test func resumeAfterAKilledRankMatchesAnUninterruptedRun() throws {
        let data = try RecDist.synthData(rows: 2000)
        let common = ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "300", "--bottom", "32",
                      "--top", "32", "--batch-size", "8", "--steps", "4000", "--seed", "5", "--checkpoint-every", "25"]
        let reference = try RecDist.scratch("kill-ref"), root = try RecDist.scratch("kill")
        var out = try RecDist.ranks(2, common + ["--checkpoint-dir", reference], timeout: 100)
        #expect(out.status == 0, "\(out.all)")
        let job = try MPIJob(ranks: 2, common + ["--checkpoint-dir", root])
        defer { job.cleanUp() }
        let pids = try job.waitUntilTraining()
        // Let at least one periodic checkpoint land, then kill rank 1.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, !FileManager.default.fileExists(atPath: root + "/latest") { usleep(20_000) }
        kill(try #require(pids[1]), SIGKILL)
        #expect(job.waitForExit(timeout: 30) != nil)
        #expect(job.status != 0)
        let before = try String(contentsOfFile: root + "/latest", encoding: .utf8)
        #expect(!before.contains("00004000"), "the run finished before the kill; nothing was tested")
        out = try RecDist.ranks(2, common + ["--checkpoint-dir", root, "--auto-resume"], timeout: 100)
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("resuming from"))
        for file in ["model.safetensors", "optimizer.safetensors"] {
            let a = try Data(contentsOf: URL(fileURLWithPath: reference + "/step-00004000/" + file))
            let b = try Data(contentsOf: URL(fileURLWithPath: root + "/step-00004000/" + file))
            #expect(a == b, "\(file) differs from the uninterrupted run")
        }
    }

    /// SIGSTOP one rank: with --collective-timeout 3 the watchdog names the collective and the
    /// stuck rank, and the job ends (rank 0 reports after 3 s; if rank 0 itself is stuck, the
    /// others report after 4.5 s).
    @Test(arguments: [(ranks: 3, victim: 2), (ranks: 2, victim: 0)])
    func stoppedRankIsNamedByTheWatchdog(ranks: Int, victim: Int) throws {
        let data = try RecDist.synthData(rows: 2000)
        let job = try MPIJob(ranks: ranks, Self.endlessTraining(data) + ["--collective-timeout", "3"])
        defer { job.cleanUp() }
        let pids = try job.waitUntilTraining()
        let pid = try #require(pids[victim], "rank PIDs: \(pids)")
        kill(pid, SIGSTOP)
        let seconds = job.waitForExit(timeout: 30)
        let out = job.output()
        #expect(seconds != nil && seconds! < 15, "job still running \(seconds.map { String(format: "%.1f", $0) } ?? "> 30") s after the stop: \(out)")
        #expect(job.status != 0)
        #expect(out.contains("collective timeout: MPI_Allreduce #"), "\(out)")
        if victim == 0 {
            #expect(out.contains("rank 0 never arrived"), "\(out)")
        } else {
            // The stopped rank is among those named; under load a rank waiting on it in the ring
            // can be named beside it ("rank(s) 1, 2 never arrived").
            var named: [Int] = []
            if let line = out.split(separator: "\n").first(where: { $0.contains("never arrived") || $0.contains("stopped responding") }),
               let start = line.range(of: "rank(s) ") {
                let list = line[start.upperBound...].prefix { $0.isNumber || $0 == "," || $0 == " " }
                named = list.split(separator: ",").compactMap { Int(String($0).trimmingCharacters(in: .whitespaces)) }
            }
            #expect(named.contains(victim), "\(out)")
        }
    }

    /// The watchdog (nonblocking collectives, polled) trains exactly the same model: dlrm uses
    /// broadcast, allreduce and allgatherv. Two ranks: every sum has two terms, so bitwise.
    @Test func watchdogDoesNotChangeResults() throws {
        let data = try RecDist.synthData(rows: 250)
        var tensors: [[String: [Float]]] = []
        for timeout in ["0", "30"] {
            let dir = try RecDist.scratch("watchdog-\(timeout)")
            let out = try RecDist.ranks(2, ["train", "--data", data, "--eval-fraction", "0", "--model", "dlrm",
                                            "--hash-buckets", "500", "--batch-size", "6", "--steps", "25", "--seed", "3",
                                            "--checkpoint-dir", dir, "--collective-timeout", timeout], timeout: 120)
            #expect(out.status == 0, "\(out.all)")
            tensors.append(try RecDist.checkpointTensors(dir))
        }
        #expect(!tensors[0].isEmpty)
        #expect(RecDist.maxDifference(tensors[0], tensors[1]) == 0)
    }

    /// An error that only rank 0 sees (it cannot create the metrics file) while rank 1 already
    /// waits in the first step's allreduce: the job still ends, with the error named, instead of
    /// rank 0 waiting forever in MPI_Finalize.
    @Test func errorOnOneRankEndsTheJob() throws {
        let data = try RecDist.synthData(rows: 2000)
        let out = try RecDist.ranks(2, ["train", "--data", data, "--steps", "100", "--metrics-out", "/proc/rec-dist-no-such-dir/metrics.jsonl"],
                                    timeout: 60)
        #expect(!out.timedOut)
        #expect(out.status != 0)
        #expect(out.seconds < 20, "took \(out.seconds) s")
        #expect(out.stderr.contains("/proc/rec-dist-no-such-dir/metrics.jsonl"), "\(out.stderr)")
    }

    @Test func negativeTimeoutIsRejected() throws {
        let out = try RecDist.single(["train", "--data", "x.tsv", "--collective-timeout", "-1"], timeout: 30)
        #expect(out.status == 64)
        #expect(out.stderr.contains("--collective-timeout"), "\(out.stderr)")
    }
}

/// `./launch.sh -np N -- ARGS` started in the background, with its ranks' PIDs found through
/// /proc (a unique --metrics-out path marks them; OMPI_COMM_WORLD_RANK in their environment says
/// which rank each is).
final class MPIJob {
    let process = Process()
    let token: String
    let outURL: URL
    let errURL: URL
    let ranks: Int
    private(set) var status: Int32 = -1

    init(ranks: Int, _ arguments: [String]) throws {
        let dir = try RecDist.scratch("job")
        token = dir + "/metrics.jsonl"
        outURL = URL(fileURLWithPath: dir + "/stdout")
        errURL = URL(fileURLWithPath: dir + "/stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [RecDist.packageRoot + "/launch.sh", "-np", "\(ranks)", "--"] + arguments + ["--metrics-out", token]
        var env = ProcessInfo.processInfo.environment
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["REC_DIST_BIN"] = RecDist.binary
        process.environment = env
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        process.standardInput = FileHandle.nullDevice
        self.ranks = ranks
        try process.run()
    }

    func output() -> String {
        ((try? String(contentsOf: outURL, encoding: .utf8)) ?? "") + ((try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
    }

    /// This job's processes (mpirun and the ranks: their command lines carry the token), with
    /// each rank's number (from OMPI_COMM_WORLD_RANK in its environment; nil for mpirun).
    func processes() -> [(pid: pid_t, rank: Int?)] {
        var found: [(pid: pid_t, rank: Int?)] = []
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return found }
        for entry in entries {
            guard let pid = pid_t(entry), pid != process.processIdentifier,
                  let cmdline = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
            let argv = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard argv.contains(token) else { continue }
            var rank: Int?
            if argv.first?.hasSuffix("rec-dist") == true,
               let environ = FileManager.default.contents(atPath: "/proc/\(entry)/environ") {
                for variable in environ.split(separator: 0) {
                    let text = String(decoding: variable, as: UTF8.self)
                    if text.hasPrefix("OMPI_COMM_WORLD_RANK=") { rank = Int(text.dropFirst(21)) }
                }
            }
            found.append((pid, rank))
        }
        return found
    }

    /// This job's rank processes: rank -> PID.
    func rankPIDs() -> [Int: pid_t] {
        var ranks: [Int: pid_t] = [:]
        for p in processes() { if let rank = p.rank { ranks[rank] = p.pid } }
        return ranks
    }

    /// Waits until rank 0 has started the training loop and every rank is running; their PIDs.
    func waitUntilTraining(timeout: Double = 120) throws -> [Int: pid_t] {
        let start = Date()
        while Date().timeIntervalSince(start) < timeout {
            let pids = rankPIDs()
            if pids.count == ranks && output().contains("on \(ranks) rank(s)") {
                usleep(300_000)   // well inside the step loop
                return pids
            }
            if !process.isRunning { break }
            usleep(50_000)
        }
        throw TestDataError(message: "the job did not start training: \(output())")
    }

    /// Seconds until the launcher exited, or nil after `timeout`.
    func waitForExit(timeout: Double) -> Double? {
        let start = Date()
        while process.isRunning {
            if Date().timeIntervalSince(start) > timeout { return nil }
            usleep(20_000)
        }
        process.waitUntilExit()
        status = process.terminationStatus
        return Date().timeIntervalSince(start)
    }

    /// Kills whatever is left: stopped or running ranks, mpirun, the launcher.
    func cleanUp() {
        for _ in 0..<2 {
            for p in processes() {
                kill(p.pid, SIGKILL)
                kill(p.pid, SIGCONT)
            }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            usleep(100_000)
        }
        process.waitUntilExit()
    }
}
