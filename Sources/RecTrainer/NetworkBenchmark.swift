import Foundation
import RecCore
import RecDistributed

/// `rec-dist bench --network`: times the three collectives a training step uses, on the job's own
/// ranks and links, over a range of message sizes. The figures calibrate the step cost model of
/// docs/scaling.md (a latency and a bandwidth per collective), and show at a glance whether a
/// cluster's network is what its data sheet says.
///
/// - `allreduce`: a Float sum of `bytes` per rank (the dense gradients).
/// - `allgatherv`: every rank contributes `bytes` and receives everyone's (the replicated tables'
///   row exchange).
/// - `alltoallv`: every rank sends `bytes` in total, split evenly over the other ranks (the
///   sharded tables' lookups and gradients).
///
/// Each measurement is the slowest rank's time of one call, after a barrier; the reported figure
/// is the median over the repetitions.
public enum NetworkBenchmark {
    public enum Collective: String, Sendable, Codable, CaseIterable {
        case allreduce, allgatherv, alltoallv
    }

    /// One collective at one size.
    public struct Measurement: Sendable, Codable {
        public var collective: Collective
        public var ranks: Int
        /// What one rank puts in: the allreduce buffer, its allgatherv block, its alltoallv total.
        public var bytes_per_rank: Int
        public var repetitions: Int
        public var median_ms: Double
        /// Lower and upper quartile of the repetitions.
        public var q1_ms: Double
        public var q3_ms: Double
    }

    public struct Report: Sendable, Codable {
        public var ranks: Int
        public var started: String
        public var load_average_start: String
        public var load_average_end: String
        public var measurements: [Measurement]
    }

    /// The default sizes: 8 B to 4 MiB per rank, by factors of 8 (and 1 and 2 MiB, where the
    /// dense buckets and the embedding exchanges of the standard cases lie).
    public static let defaultSizes = [8, 64, 512, 4096, 32_768, 262_144, 1 << 20, 2 << 20, 4 << 20]

    /// Measures every collective at every size, spending about `secondsPerPoint` on each (at least
    /// 5 and at most 1000 repetitions). Collective: every rank calls it with the same arguments.
    public static func run(communicator: any Communicator, sizes: [Int] = defaultSizes, secondsPerPoint: Double = 0.25,
                           progress: (String) -> Void = { _ in }) throws -> Report {
        precondition(sizes.allSatisfy { $0 >= 4 } && secondsPerPoint > 0)
        let n = communicator.size, rank = communicator.rank
        let loadStart = Benchmark.loadAverage()
        let largest = sizes.max() ?? 4
        // One send and one receive buffer for every call: the largest allgatherv receives n blocks.
        let send = UnsafeMutableRawBufferPointer.allocate(byteCount: largest, alignment: 64)
        let receive = UnsafeMutableRawBufferPointer.allocate(byteCount: largest * n, alignment: 64)
        defer { send.deallocate(); receive.deallocate() }
        send.initializeMemory(as: UInt8.self, repeating: 1)
        receive.initializeMemory(as: UInt8.self, repeating: 0)
        // Floats of a small value: the sums stay finite however often the buffer is reduced.
        send.withMemoryRebound(to: Float.self) { $0.update(repeating: 1e-3) }
        var sendCounts = [Int](repeating: 0, count: n), sendOffsets = sendCounts
        var receiveCounts = sendCounts, receiveOffsets = sendCounts

        var measurements: [Measurement] = []
        for collective in Collective.allCases {
            for bytes in sizes {
                progress("\(collective.rawValue) \(bytes) B per rank on \(n) rank(s)...")
                let call: () throws -> Void
                switch collective {
                case .allreduce:
                    let floats = UnsafeMutableBufferPointer(start: send.baseAddress!.assumingMemoryBound(to: Float.self), count: bytes / 4)
                    call = { try communicator.allreduceSum(floats) }
                case .allgatherv:
                    let counts = [Int](repeating: bytes, count: n), offsets = (0..<n).map { $0 * bytes }
                    let mine = UnsafeRawBufferPointer(start: send.baseAddress!, count: bytes)
                    let into = UnsafeMutableRawBufferPointer(start: receive.baseAddress!, count: bytes * n)
                    call = { try communicator.allgatherv(mine, into: into, counts: counts, displacements: offsets) }
                case .alltoallv:
                    // `bytes` split evenly over the other ranks (on 1 rank, to itself).
                    let peers = max(n - 1, 1), share = bytes / peers
                    var at = 0
                    for r in 0..<n {
                        sendCounts[r] = (r == rank && n > 1) ? 0 : share
                        sendOffsets[r] = at
                        at += sendCounts[r]
                        receiveCounts[r] = sendCounts[r]
                        receiveOffsets[r] = sendOffsets[r]
                    }
                    let total = at
                    let (sc, so, rc, ro) = (sendCounts, sendOffsets, receiveCounts, receiveOffsets)
                    call = {
                        try sc.withUnsafeBufferPointer { sc in try so.withUnsafeBufferPointer { so in
                            try rc.withUnsafeBufferPointer { rc in try ro.withUnsafeBufferPointer { ro in
                                try communicator.alltoallv(UnsafeRawBufferPointer(start: send.baseAddress!, count: total),
                                                           sendCounts: sc, sendDisplacements: so,
                                                           into: UnsafeMutableRawBufferPointer(start: receive.baseAddress!, count: total),
                                                           receiveCounts: rc, receiveDisplacements: ro)
                            } }
                        } }
                    }
                }
                measurements.append(try measure(collective, bytes: bytes, seconds: secondsPerPoint,
                                                communicator: communicator, call: call))
            }
        }
        return Report(ranks: n, started: ISO8601DateFormatter().string(from: Date()), load_average_start: loadStart,
                      load_average_end: Benchmark.loadAverage(), measurements: measurements)
    }

    /// Times `call` after a barrier, repeatedly: 2 untimed calls, then until `seconds` have passed
    /// (all ranks agree on the count through the first timed call's slowest time).
    private static func measure(_ collective: Collective, bytes: Int, seconds: Double,
                                communicator: any Communicator, call: () throws -> Void) throws -> Measurement {
        for _ in 0..<2 { try call() }
        func timed() throws -> Double {
            try communicator.barrier()
            let t0 = MonotonicClock.nanoseconds()
            try call()
            return Double(MonotonicClock.nanoseconds() - t0) / 1e6
        }
        let first = try communicator.allreduceMax([try timed()])[0]
        let repetitions = min(1000, max(5, Int(seconds * 1e3 / max(first, 1e-3))))
        var times = [Double](repeating: 0, count: repetitions)
        times[0] = first
        for i in 1..<repetitions { times[i] = try timed() }
        let slowest = try communicator.allreduceMax(times).sorted()
        func quantile(_ q: Double) -> Double { slowest[min(slowest.count - 1, Int(q * Double(slowest.count - 1) + 0.5))] }
        return Measurement(collective: collective, ranks: communicator.size, bytes_per_rank: bytes,
                           repetitions: repetitions, median_ms: Benchmark.median(slowest), q1_ms: quantile(0.25), q3_ms: quantile(0.75))
    }

    /// The report as a table: one row per size, one column per collective (median ms).
    public static func render(_ report: Report) -> String {
        var lines = ["rec-dist bench --network: \(report.ranks) rank(s); load average \(report.load_average_start) -> \(report.load_average_end)",
                     "  bytes/rank" + Collective.allCases.map { String(repeating: " ", count: max(1, 14 - $0.rawValue.count - 3)) + $0.rawValue + " ms" }.joined()]
        let sizes = Array(Set(report.measurements.map(\.bytes_per_rank))).sorted()
        for bytes in sizes {
            var line = String(repeating: " ", count: max(0, 12 - "\(bytes)".count)) + "\(bytes)"
            for c in Collective.allCases {
                let m = report.measurements.first { $0.collective == c && $0.bytes_per_rank == bytes }
                let text = m.map { String(format: "%.4f", $0.median_ms) } ?? "-"
                line += String(repeating: " ", count: max(1, 14 - text.count)) + text
            }
            lines.append(line)
        }
        lines.append("(median of the slowest rank's time per call; alltoallv: bytes/rank in total, split over the other ranks)")
        return lines.joined(separator: "\n")
    }
}
