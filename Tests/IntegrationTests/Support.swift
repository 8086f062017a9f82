import Foundation
import RecCore
import Synchronization
import Testing

/// Runs the real `rec-dist` binary, alone or under `mpirun`, and reads what it wrote.
enum RecDist {
    /// The binary built beside this test bundle (`swift test` builds it, as the tests depend on
    /// it), or `REC_DIST_BIN`.
    static let binary: String = {
        if let path = ProcessInfo.processInfo.environment["REC_DIST_BIN"] { return path }
        let here = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        var candidates = [here.appendingPathComponent("rec-dist").path]
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        candidates += ["release", "debug"].map { root.appendingPathComponent(".build/\($0)/rec-dist").path }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }()

    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    /// The tests' Python: the project's virtual environment, which `./launch.sh test` creates with
    /// scripts/requirements-test.txt (`$REC_DIST_PYTHON` overrides it).
    static var python: String {
        ProcessInfo.processInfo.environment["REC_DIST_PYTHON"] ?? packageRoot + "/.venv/bin/python3"
    }

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
        var seconds: Double
        var timedOut: Bool
        var all: String { stdout + stderr }
    }

    /// A process started in the background, its output going to files.
    final class Job {
        let process: Process
        let outPath: String, errPath: String
        /// The value of `REC_DIST_TEST_JOB` in the environment of the process and of everything it
        /// starts (launch.sh, mpirun in its own session, the ranks), so a timeout can find them all.
        let marker: String
        let start = Date()
        init(process: Process, outPath: String, errPath: String, marker: String) {
            self.process = process
            self.outPath = outPath
            self.errPath = errPath
            self.marker = marker
        }
        var stdout: String { (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "" }
        var stderr: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }

        /// Waits for the end, killing the process after `timeout` seconds.
        func wait(timeout: Double) -> Output {
            var timedOut = false
            while process.isRunning {
                if Date().timeIntervalSince(start) > timeout {
                    timedOut = true
                    // The whole process group (Foundation starts each child in its own).
                    kill(-process.processIdentifier, SIGKILL)
                    kill(process.processIdentifier, SIGKILL)
                    // launch.sh runs mpirun under setsid, outside that process group.
                    for pid in RecDist.processes(withEnvironment: "REC_DIST_TEST_JOB=" + marker) { kill(pid, SIGKILL) }
                    break
                }
                usleep(20_000)
            }
            if timedOut {
                // Foundation sees a child end when every copy of a socket it handed down is
                // closed; a descendant in another session (launch.sh's mpirun) may still hold
                // one. Don't wait for it forever: the test's own clean-up must get to run.
                let killed = Date()
                while process.isRunning && Date().timeIntervalSince(killed) < 10 { usleep(20_000) }
                if process.isRunning {
                    return Output(status: -1, stdout: stdout, stderr: stderr,
                                  seconds: Date().timeIntervalSince(start), timedOut: true)
                }
            }
            process.waitUntilExit()
            return Output(status: process.terminationStatus, stdout: stdout, stderr: stderr,
                          seconds: Date().timeIntervalSince(start), timedOut: timedOut)
        }
    }

    /// Starts `executable` with `arguments` in the background.
    static func start(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> Job {
        let dir = try scratch("run")
        let outPath = dir + "/stdout", errPath = dir + "/stderr"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["OPENBLAS_NUM_THREADS"] = "1"
        env["REC_DIST_BIN"] = binary
        let marker = UUID().uuidString
        env["REC_DIST_TEST_JOB"] = marker
        for (k, v) in environment { env[k] = v }
        process.environment = env
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        process.standardInput = FileHandle.nullDevice
        // The test runner blocks most signals in its threads, and a spawned process inherits the
        // mask: unblock the ones the launcher, mpirun and rec-dist rely on while spawning.
        var unblock = sigset_t(), previous = sigset_t()
        sigemptyset(&unblock)
        for s in [SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGCHLD, SIGHUP, SIGALRM] { sigaddset(&unblock, s) }
        pthread_sigmask(SIG_UNBLOCK, &unblock, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        try process.run()
        return Job(process: process, outPath: outPath, errPath: errPath, marker: marker)
    }

    /// Every process whose environment holds `variable` ("NAME=value"), read from /proc.
    static func processes(withEnvironment variable: String) -> [pid_t] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        let needle = Array(variable.utf8)
        return entries.compactMap { entry -> pid_t? in
            guard let pid = pid_t(entry), pid != getpid(),
                  let environ = FileManager.default.contents(atPath: "/proc/\(entry)/environ") else { return nil }
            return environ.split(separator: 0).contains { $0.elementsEqual(needle) } ? pid : nil
        }
    }

    /// Runs `executable` with `arguments`, killing it after `timeout` seconds.
    static func run(_ executable: String, _ arguments: [String], timeout: Double = 300,
                    environment: [String: String] = [:]) throws -> Output {
        try start(executable, arguments, environment: environment).wait(timeout: timeout)
    }

    /// `rec-dist ARGS` as one process, no launcher.
    static func single(_ arguments: [String], timeout: Double = 300) throws -> Output {
        try run(binary, arguments, timeout: timeout)
    }

    /// `./launch.sh -np N -- ARGS`: real MPI ranks through the project's launcher.
    static func ranks(_ n: Int, _ arguments: [String], timeout: Double = 300) throws -> Output {
        try run("/bin/bash", [packageRoot + "/launch.sh", "-np", "\(n)", "--"] + arguments, timeout: timeout)
    }

    /// `rec-dist ARGS` under /usr/bin/time: its output (without time's lines) and its peak RSS in
    /// MB (-1 when time did not report it). A signal that ends rec-dist is exit status 128 + signal.
    static func measured(_ arguments: [String], timeout: Double = 300) throws -> (out: Output, peakMB: Int) {
        var out = try run("/usr/bin/time", ["-f", "%M", binary] + arguments, timeout: timeout)
        var lines = out.stderr.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        while lines.last == "" { lines.removeLast() }
        let kb = Int(lines.last ?? "") ?? -1
        if kb >= 0 { lines.removeLast() }
        lines.removeAll { $0.hasPrefix("Command exited with non-zero status") || $0.hasPrefix("Command terminated by signal") }
        out.stderr = lines.joined(separator: "\n")
        return (out, kb < 0 ? -1 : kb / 1024)
    }

    /// A fresh directory under the system's temporary directory.
    static func scratch(_ name: String) throws -> String {
        let path = NSTemporaryDirectory() + "rec-dist-tests/\(name)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A synthetic dataset of `rows` rows, written once per test process.
    static func synthData(rows: Int) throws -> String {
        try DataCache.shared.path(rows: rows)
    }

    /// The metrics log's records.
    static func metrics(_ path: String) throws -> [[String: Any]] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return try text.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    /// A small prepared interactions dataset without dense fields, `dir`/interactions: `users`
    /// users with `perUser` events each over `items` items, one sampled negative per positive
    /// and 5 per held-out one.
    static func preparedInteractions(in dir: String, users: Int, perUser: Int, items: Int) throws -> String {
        var rows = "user,item,ts\n"
        for u in 0..<users { for k in 0..<perUser { rows += "u\(u),i\((u * 7 + k * 5) % items),\(u * 100 + k)\n" } }
        try rows.write(toFile: dir + "/interactions.csv", atomically: true, encoding: .utf8)
        try #"{"separator": ",", "header": true, "dense": [], "categorical": [], "user": "user", "item": "item", "timestamp": "ts"}"#
            .write(toFile: dir + "/schema.json", atomically: true, encoding: .utf8)
        let out = try single(["prepare", "--format", "csv", "--schema", dir + "/schema.json", "--input", dir + "/interactions.csv",
                              "--out", dir + "/interactions", "--negatives", "1", "--eval-negatives", "5"])
        try #require(out.status == 0, "\(out.all)")
        return dir + "/interactions"
    }

    /// CRC-32 (IEEE), as CHECKSUMS records it: computed here, apart from the code under test.
    static func crc32(_ data: Data) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc >> 1) ^ (0xEDB8_8320 & (0 &- (crc & 1))) }
        }
        return ~crc
    }

    /// Rewrites checkpoint `dir`'s CHECKSUMS for its files as they are now (a file gone: its line
    /// too), as a tamperer who knows the format would.
    static func rewriteChecksums(_ dir: String) throws {
        let listed = try String(contentsOfFile: dir + "/CHECKSUMS", encoding: .utf8).split(separator: "\n").map { String($0.split(separator: " ")[2]) }
        let lines = try listed.filter { FileManager.default.fileExists(atPath: dir + "/" + $0) }.map { name -> String in
            let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name))
            return String(format: "%08x %ld %@", crc32(data), data.count, name)
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: dir + "/CHECKSUMS", atomically: true, encoding: .utf8)
    }

    /// The float tensors of a checkpoint's model, by name: its model.safetensors, or, when its
    /// sharded tables are in per-rank shard files, the model.safetensors `rec-dist export`
    /// assembles from them (the same tensors a replicated checkpoint holds).
    static func checkpointTensors(_ directory: String) throws -> [String: [Float]] {
        let latest = try String(contentsOfFile: directory + "/latest", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        var weights = "\(directory)/\(latest)/model.safetensors"
        let files = try FileManager.default.contentsOfDirectory(atPath: "\(directory)/\(latest)")
        if files.contains(where: { $0.hasPrefix("shard-") && $0.hasSuffix(".safetensors") }) {
            let exported = try scratch("assembled")
            let export = try single(["export", "--checkpoint", directory, "--out", exported])
            #expect(export.status == 0, "export of the shard-file checkpoint \(directory): \(export.all)")
            weights = exported + "/model.safetensors"
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: weights))
        let length = Int(data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + length))) as! [String: Any]
        var out: [String: [Float]] = [:]
        for (name, info) in header where name != "__metadata__" {
            let offsets = (info as! [String: Any])["data_offsets"] as! [Int]
            let bytes = data.subdata(in: (8 + length + offsets[0])..<(8 + length + offsets[1]))
            out[name] = bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        }
        return out
    }

    /// The largest absolute difference between two checkpoints' tensors (which must match in names and sizes).
    static func maxDifference(_ a: [String: [Float]], _ b: [String: [Float]]) -> Float {
        #expect(Set(a.keys) == Set(b.keys))
        var worst: Float = 0
        for (name, x) in a {
            guard let y = b[name] else { continue }
            #expect(x.count == y.count, "tensor \(name)")
            for i in 0..<min(x.count, y.count) { worst = max(worst, abs(x[i] - y[i])) }
        }
        return worst
    }
}

/// Synthetic datasets shared by the tests of one process.
final class DataCache: @unchecked Sendable {
    static let shared = DataCache()
    private let lock = NSLock()
    private var paths: [Int: String] = [:]

    func path(rows: Int) throws -> String {
        lock.lock(); defer { lock.unlock() }
        if let p = paths[rows] { return p }
        let dir = try RecDist.scratch("synth")
        let path = "\(dir)/synth-\(rows).tsv"
        let out = try RecDist.single(["synth", "--rows", "\(rows)", "--out", path, "--seed", "7"])
        guard out.status == 0 else { throw TestDataError(message: out.all) }
        paths[rows] = path
        return path
    }
}

struct TestDataError: Error { var message: String }

/// SplitMix64 (RecCore's): seeded test decisions (mutations, values) that are a pure function of
/// the seed.
struct SeededRNG {
    var state: UInt64
    mutating func next() -> UInt64 {
        defer { state &+= SplitMix64.gamma }
        return SplitMix64.mix(state)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// Runs `body` for 0..<count, a few at a time (runs of the binary wait mostly on MPI's start-up),
/// and collects the problems it reports; a thrown error is one. Report problems this way, not
/// with #expect, which needs the test's own thread.
func concurrently(_ count: Int, width: Int = 4, _ body: @Sendable @escaping (Int) throws -> [String]) -> [String] {
    let problems = Mutex<[String]>([])
    let next = Mutex(0)
    DispatchQueue.concurrentPerform(iterations: width) { _ in
        while true {
            let i = next.withLock { n -> Int in n += 1; return n - 1 }
            guard i < count else { return }
            let found: [String]
            do { found = try body(i) } catch { found = ["case \(i): \(error)"] }
            if !found.isEmpty { problems.withLock { $0.append(contentsOf: found) } }
        }
    }
    return problems.withLock { $0 }
}
