import ArgumentParser
import Foundation
import RecCore
import RecData
import RecDistributed
import RecMPI
import RecTrainer

extension BenchmarkCase: ExpressibleByArgument {}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure training speed: sgemm roofline, samples/s, step breakdown, memory.",
        discussion: """
        In one run, on every rank at once: the sgemm rate of each case's layer shapes (the \
        roofline), then training steps on synthetic rows held in memory: a warm-up, then timed \
        windows; throughput is the median window's global samples/s (the slowest rank's time). \
        Prints a table on rank 0 and writes the figures as JSON (--json-out).

        Examples:
          rec-dist bench                                   # the standard cases on 1 rank
          ./launch.sh -np 2 -- bench --json-out runs/bench-2.json
          rec-dist bench --case dlrm:1024 --windows 9
        """)

    @Option(name: .customLong("case"),
            help: "A case MODEL:BATCH (batch per rank); repeat for several (default: mlp:32 mlp:512 dlrm:128 dlrm:1024).")
    var cases: [BenchmarkCase] = []
    @OptionGroup(title: "Timing") var timing: BenchTimingOptions
    @Flag(inversion: .prefixedNo,
          help: "With several ranks, also alternate windows of rank 0 training alone with windows of all ranks (the scaling ratio).")
    var compareSingleRank = true
    @Flag(inversion: .prefixedNo,
          help: "Embedding exchange: each rank sums its pairs per distinct row before sending, as train does (--no-local-sums: send every pair, to compare).")
    var localSums = true
    @Option(help: "A prepared dataset directory (rec-dist prepare) to read batches from, memory-mapped and prefetched as train does (default: synthetic rows in memory).")
    var data: String?
    @Option(parsing: .unconditional, help: "With --data: MB of the mapped data a rank keeps resident before dropping pages.")
    var residentDataMb: Int = 64
    @Flag(help: "Instead of training steps: time allreduce, allgatherv and alltoallv over message sizes on these ranks and links (the latency and bandwidth the step cost model of docs/scaling.md is calibrated with).")
    var network = false
    @Option(help: "Write the report as JSON to this file (rank 0).")
    var jsonOut: String?
    @OptionGroup(title: "Step, memory and communication") var step: StepOptions
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if residentDataMb < 1 || residentDataMb > 1 << 30 { throw outOfRange("--resident-data-mb", residentDataMb, "use 1 to 1073741824 MB") }
    }

    func run() throws {
        BLASKernels.reexecWithNativeKernelsIfNeeded()
        GEMM.setThreads(step.blasThreads)
        let communicator = try MPIJob.start()
        var options = BenchmarkOptions()
        if !cases.isEmpty { options.cases = cases }
        options.warmupSteps = timing.warmupSteps
        options.warmupSeconds = timing.warmupSeconds
        options.windows = timing.windows
        options.windowSeconds = timing.windowSeconds
        options.sgemmSeconds = timing.sgemmSeconds
        options.optimizer = OptimizerConfig(kind: step.optimizer)
        options.hashBuckets = step.hashBuckets ?? options.hashBuckets
        options.bucketBytes = step.bucketKib * 1024
        options.compareSingleRank = compareSingleRank
        options.localSums = localSums
        options.dataPath = data
        options.residentDataBytes = residentDataMb << 20
        options.memoryPerRank = step.memoryPerRank?.bytes
        let rank = communicator.rank
        bootstrapLogging(logging, rank: rank)
        let quiet = logging.logLevel > .info
        let progress = { (line: String) in
            if rank == 0 && !quiet { FileHandle.standardError.write(Data((line + "\n").utf8)) }
        }
        if network {
            let report: NetworkBenchmark.Report
            do {
                report = try NetworkBenchmark.run(communicator: communicator, progress: progress)
            } catch {
                throw MPIJob.failedAlone(error, communicator: communicator)
            }
            if rank == 0 { print(NetworkBenchmark.render(report)) }
            try finish(report, communicator: communicator)
            return
        }
        let report: BenchmarkReport
        do {
            report = try Benchmark.run(options: options, communicator: communicator, progress: progress)
        } catch {
            throw MPIJob.failedAlone(error, communicator: communicator)
        }
        if rank == 0 { print(BenchmarkTable.render(report)) }
        try finish(report, communicator: communicator)
    }

    /// Writes `report` to --json-out (rank 0) and ends the job.
    private func finish(_ report: some Encodable, communicator: MPICommunicator) throws {
        if communicator.rank == 0 {
            if let path = jsonOut {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                do {
                    let url = URL(fileURLWithPath: path)
                    try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(),
                                                             withIntermediateDirectories: true)
                    try replaceFile(at: path, with: Array(try encoder.encode(report)))
                    print("report: \(path)")
                } catch {
                    printError("cannot write --json-out '\(path)': \(error)")
                    communicator.finalize()
                    throw ExitCode.failure
                }
            }
        }
        communicator.finalize()
    }
}

/// The human-readable summary of a benchmark report.
enum BenchmarkTable {
    static func render(_ report: BenchmarkReport) -> String {
        func label(_ r: BenchmarkResult) -> String {
            "\(r.model):\(r.batch_per_rank)" + (r.embedding_sharding == "replicated" ? "" : ":" + r.embedding_sharding)
        }
        func f(_ x: Double, _ d: Int) -> String { String(format: "%.\(d)f", x) }
        func pad(_ s: String, _ w: Int) -> String { s.count >= w ? s : String(repeating: " ", count: w - s.count) + s }
        var lines: [String] = []
        lines.append("rec-dist bench: \(report.ranks) rank(s) on \(report.cores) cores, OpenBLAS \(report.openblas_core) x \(report.openblas_threads) thread(s); load average \(report.load_average_start) -> \(report.load_average_end)")
        let header = ["case", "ranks", "samples/s", "step ms", "data", "fwd", "bwd", "comm exp", "comm hid", "optim",
                      "other", "sgemm GF/s", "achv GF/s", "eff", "peak RSS MB", "RSS/acct"]
        let widths = [16, 5, 11, 8, 6, 7, 7, 8, 8, 6, 6, 10, 9, 5, 11, 8]
        lines.append(zip(header, widths).map { pad($0, $1) }.joined(separator: " "))
        for r in report.results {
            let row = [label(r), "\(r.ranks)", f(r.samples_per_s, 0), f(r.step_ms, 3),
                       f(r.data_wait_ms, 3), f(r.forward_ms, 3), f(r.backward_ms, 3), f(r.comm_exposed_ms, 3),
                       f(r.comm_hidden_ms, 3), f(r.optimizer_ms, 3), f(r.other_ms, 3),
                       f(r.sgemm_gflops_per_rank, 1), f(r.achieved_gflops_per_rank, 1), f(r.efficiency * 100, 0) + "%",
                       f(Double(r.peak_rss_bytes) / 1e6, 1), f(r.rss_ratio, 2)]
            lines.append(zip(row, widths).map { pad($0, $1) }.joined(separator: " "))
        }
        lines.append("(times are ms per step, mean over timed steps and ranks; samples/s is the median of \(report.results.first?.windows.count ?? 0) windows)")
        for r in report.results {
            if let single = r.single_rank_samples_per_s, let paired = r.paired_samples_per_s, let ratio = r.scaling_vs_single_rank {
                var line = "\(r.model):\(r.batch_per_rank) alternating windows: 1 rank \(f(single, 0)) samples/s, \(r.ranks) ranks \(f(paired, 0)) samples/s, scaling x\(f(ratio, 2)) (median of per-pair ratios)"
                if let c = r.concurrent_samples_per_s, let cs = r.concurrent_scaling {
                    line += "; \(r.ranks) ranks each alone at once, no communication: \(f(c, 0)) samples/s, x\(f(cs, 2))"
                }
                lines.append(line)
            }
        }
        for r in report.results where r.comm_exposed_ms > 0 {
            lines.append("\(r.model):\(r.batch_per_rank) comm exposed \(f(r.comm_exposed_ms, 3)) ms (\(f(r.comm_exposed_fraction * 100, 1))%): coalesce \(f(r.comm_coalesce_ms, 3)), start \(f(r.comm_start_ms, 3)), test \(f(r.comm_test_ms, 3)), wait \(f(r.comm_wait_ms, 3)) (counts \(f(r.comm_counts_wait_ms, 3))), merge \(f(r.comm_merge_ms, 3)); by rank: exposed \(r.comm_exposed_ms_by_rank.map { f($0, 2) }.joined(separator: "/")), wait \(r.comm_wait_ms_by_rank.map { f($0, 2) }.joined(separator: "/"))")
        }
        for r in report.results where r.embedding_sharding != "replicated" {
            lines.append("\(label(r)) sharded tables: exchanges \(f(r.comm_sharded_exchange_ms, 3)) ms per step (of comm exposed); per step and rank \(r.bytes_sharded_lookup_per_step) B sent fetching rows, \(r.bytes_sharded_gradients_per_step) B sending gradients, \(r.bytes_dense_per_step) B dense")
        }
        for r in report.results {
            var line = "\(label(r)) exchange \(r.embedding_exchange), \(r.dense_buckets.count) dense bucket(s); per step \(r.bytes_dense_per_step) B dense"
            if r.embedding_exchange != "none" {
                line += ", embedding \(r.bytes_embedding_sent_per_step) B sent / \(r.bytes_embedding_received_per_step) B received (\(r.embedding_rows_local) local rows, \(r.embedding_rows_global) global)"
            }
            if let a = r.allreduce_alone_ms { line += "; alone: allreduce \(f(a, 3)) ms" }
            if let e = r.embedding_exchange_alone_ms { line += ", embedding exchange \(f(e, 3)) ms" }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }
}
