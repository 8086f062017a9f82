import Foundation
import RecCore
import RecData
import RecDistributed

/// One benchmark case: a model at a per-rank batch size.
public struct BenchmarkCase: Sendable, Codable, Equatable, CustomStringConvertible {
    public var model: ModelKind
    public var batchSize: Int
    /// The tables' placement (nil: replicated, the default).
    public var sharding: EmbeddingSharding?
    public init(model: ModelKind, batchSize: Int, sharding: EmbeddingSharding? = nil) {
        self.model = model
        self.batchSize = batchSize
        self.sharding = sharding
    }
    /// `mlp:32` or, with a placement of the tables, `dlrm:1024:row`.
    public init?(argument: String) {
        let parts = argument.split(separator: ":")
        guard parts.count == 2 || parts.count == 3, let kind = ModelKind(rawValue: String(parts[0])), let b = Int(parts[1]), b >= 1 else {
            return nil
        }
        var sharding: EmbeddingSharding?
        if parts.count == 3 {
            guard let mode = EmbeddingSharding(rawValue: String(parts[2])), kind != .mlp else { return nil }
            sharding = mode
        }
        self.init(model: kind, batchSize: b, sharding: sharding)
    }
    public var description: String { "\(model.rawValue):\(batchSize)" + (sharding.map { ":\($0.rawValue)" } ?? "") }

    /// The standard cases: a small and a large batch of the mlp and of dlrm.
    public static let standard = [BenchmarkCase(model: .mlp, batchSize: 32), BenchmarkCase(model: .mlp, batchSize: 512),
                                  BenchmarkCase(model: .dlrm, batchSize: 128), BenchmarkCase(model: .dlrm, batchSize: 1024)]
}

/// How the benchmark runs.
public struct BenchmarkOptions: Sendable, Encodable {
    public var cases: [BenchmarkCase] = BenchmarkCase.standard
    /// Untimed steps before the windows (at least this many, and at least `warmupSeconds`).
    public var warmupSteps = 20
    public var warmupSeconds = 1.0
    /// Timed windows; throughput is the median over them.
    public var windows = 7
    /// Target length of one window.
    public var windowSeconds = 1.0
    /// Time spent measuring sgemm on the model's layer shapes, per case.
    public var sgemmSeconds = 1.0
    public var optimizer = OptimizerConfig(kind: .adam)
    public var loss = Loss.bce
    /// dlrm: rows per embedding table.
    public var hashBuckets = 65_536
    /// Dense gradient bucket size.
    public var bucketBytes = 1 << 20
    /// Global batches of synthetic rows held in memory and cycled through.
    public var poolBatches = 32
    public var seed: UInt64 = 42
    /// With several ranks: after the main windows, alternate windows of rank 0 training alone
    /// (the others sleeping) with windows of all ranks, so the scaling ratio compares like with
    /// like on a machine whose load changes.
    public var compareSingleRank = true
    /// Embedding exchange: send per-rank sums of distinct rows (GradientSync.localSums; on, as in
    /// training, unless turned off to compare).
    public var localSums = true
    /// A prepared dataset (`rec-dist prepare`) to read batches from, through the trainer's
    /// loader (memory-mapped, prefetched on a thread); nil: synthetic rows held in memory.
    public var dataPath: String?
    /// With `dataPath`: mapped pages a rank keeps resident before dropping them.
    public var residentDataBytes = 64 << 20
    /// The memory each rank may use (`--memory-per-rank`); nil: the host's available memory
    /// divided by its ranks. Each case must fit it.
    public var memoryPerRank: Int?
    public init() {}
}

/// One sgemm shape of a training step and the rate measured for it.
public struct GEMMShapeRate: Sendable, Codable {
    public var m: Int, n: Int, k: Int
    public var transA: Bool, transB: Bool
    public var what: String
    public var gflops: Double
}

/// Everything measured for one case, as written to the JSON report.
public struct BenchmarkResult: Sendable, Codable {
    public var model: String
    public var batch_per_rank: Int
    public var ranks: Int
    public var global_batch: Int
    public var optimizer: String
    public var dense_parameters: Int
    public var embedding_rows: Int
    public var embedding_exchange: String
    /// The tables' placement ("replicated", or the plan's modes, e.g. "row").
    public var embedding_sharding: String = "replicated"
    /// Sharded tables: bytes this rank sent per step fetching the batch's rows, and sending
    /// their gradients to the owners (mean over ranks); and the time in those exchanges.
    public var bytes_sharded_lookup_per_step: Int = 0
    public var bytes_sharded_gradients_per_step: Int = 0
    public var comm_sharded_exchange_ms: Double = 0
    public var dense_buckets: [Int]
    /// FLOPs per example actually executed: the step's sgemms plus the dot interaction.
    public var flops_per_example: Double
    /// `ModelConfig.flopsPerExample` (counts a first-layer dx that is never computed).
    public var nominal_flops_per_example: Double
    /// The step's sgemm shapes run back to back on every rank at once: aggregate GFLOP/s per rank
    /// (each rank's best of 5 rounds, mean over ranks), the roofline of the efficiency figure.
    public var sgemm_gflops_per_rank: Double
    public var sgemm_shapes: [GEMMShapeRate]
    public var steps_per_window: Int
    public var windows: [Double]
    /// Median over windows of global samples / slowest rank's window time.
    public var samples_per_s: Double
    public var step_ms: Double
    /// Per step, mean over the timed steps and over ranks.
    public var data_wait_ms: Double
    public var forward_ms: Double
    public var backward_ms: Double
    public var comm_exposed_ms: Double
    public var comm_hidden_ms: Double
    public var comm_wait_ms: Double
    /// Parts of `comm_exposed_ms` (per step, mean over ranks): summing the rank's own embedding
    /// pairs per row; inside the calls starting collectives; inside the progress calls (MPI_Test)
    /// between layers; merging the received rows; of `comm_wait_ms`, waiting for the other
    /// ranks' row counts. The rest of `comm_exposed_ms` minus these and `comm_wait_ms` is
    /// bookkeeping (clock reads, buffer sizes).
    public var comm_coalesce_ms: Double
    public var comm_start_ms: Double
    public var comm_test_ms: Double
    public var comm_merge_ms: Double
    public var comm_counts_wait_ms: Double
    /// `comm_exposed_ms` and `comm_wait_ms` of each rank, by rank.
    public var comm_exposed_ms_by_rank: [Double]
    public var comm_wait_ms_by_rank: [Double]
    public var optimizer_ms: Double
    public var other_ms: Double
    public var comm_exposed_fraction: Double
    /// Per rank: flops_per_example x samples/s / ranks.
    public var achieved_gflops_per_rank: Double
    public var efficiency: Double
    /// Blocking collectives alone, median of several runs (N > 1), for comparison.
    public var allreduce_alone_ms: Double?
    /// With --compare-single-rank (N > 1): alternating windows of rank 0 alone (its batch, a
    /// LocalCommunicator, the others asleep) and of all ranks; medians, and the median of the
    /// per-pair ratios (all ranks' samples/s over one rank's).
    public var single_rank_samples_per_s: Double?
    public var paired_samples_per_s: Double?
    public var scaling_vs_single_rank: Double?
    /// With --compare-single-rank (N > 1): a third window in each round, every rank training its
    /// own copy alone at once (no communication): N x its samples/s over one rank's alone. What
    /// sharing the machine (memory system, caches, clocks) costs, without any communication;
    /// `scaling_vs_single_rank / concurrent_scaling` is what the communication and the larger
    /// global batch's extra work (optimizer rows) leave of it.
    public var concurrent_samples_per_s: Double?
    public var concurrent_scaling: Double?
    public var embedding_exchange_alone_ms: Double?
    public var bytes_dense_per_step: Int
    public var bytes_embedding_sent_per_step: Int
    public var bytes_embedding_received_per_step: Int
    public var embedding_rows_local: Int
    public var embedding_rows_global: Int
    /// Bytes, max over ranks.
    public var peak_rss_bytes: Int
    public var baseline_rss_bytes: Int
    public var accounted_bytes: Int
    public var accounted: [String: Int]
    /// peak RSS / accounted bytes, and (peak - baseline) / accounted.
    public var rss_ratio: Double
    public var rss_ratio_above_baseline: Double
}

/// The machine and the load while the benchmark ran.
public struct BenchmarkReport: Sendable, Codable {
    public var ranks: Int
    public var cores: Int
    public var openblas_core: String
    public var openblas_threads: Int
    public var load_average_start: String
    public var load_average_end: String
    public var started: String
    public var seconds: Double
    public var options: [String: String]
    public var results: [BenchmarkResult]
}
