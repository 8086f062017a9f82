#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import RecCore
import RecData
import RecDistributed

/// One benchmark case: a model at a per-rank batch size.
public struct BenchmarkCase: Sendable, Codable, Equatable, CustomStringConvertible {
    public var model: ModelKind
    public var batchSize: Int
    public init(model: ModelKind, batchSize: Int) {
        self.model = model
        self.batchSize = batchSize
    }
    /// `mlp:32` style.
    public init?(argument: String) {
        let parts = argument.split(separator: ":")
        guard parts.count == 2, let kind = ModelKind(rawValue: String(parts[0])), let b = Int(parts[1]), b >= 1 else {
            return nil
        }
        self.init(model: kind, batchSize: b)
    }
    public var description: String { "\(model.rawValue):\(batchSize)" }

    /// The standard cases: a small and a large batch of the mlp and of dlrm.
    public static let standard = [BenchmarkCase(model: .mlp, batchSize: 32), BenchmarkCase(model: .mlp, batchSize: 512),
                                  BenchmarkCase(model: .dlrm, batchSize: 128), BenchmarkCase(model: .dlrm, batchSize: 1024)]
}

/// How the benchmark runs.
public struct BenchmarkOptions: Sendable {
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

/// `rec-dist bench`: measures, in one run and on every rank at once, the machine's sgemm rate on
/// each case's layer shapes, then the training step on synthetic rows (median samples/s over
/// timed windows after a warm-up, the step-time breakdown, efficiency against the sgemm rate,
/// peak RSS against the accounted buffers).
public enum Benchmark {
    /// Runs every case; every rank gets the same report (figures gathered over ranks).
    public static func run(options: BenchmarkOptions, communicator: any Communicator,
                           progress: (String) -> Void = { _ in }) throws -> BenchmarkReport {
        let start = MonotonicClock.nanoseconds()
        let loadStart = loadAverage()
        Denormals.flushToZero()
        var results: [BenchmarkResult] = []
        let dataset = try options.dataPath.map { try PreparedDataset(directory: $0) }
        for benchCase in options.cases {
            progress("\(benchCase) on \(communicator.size) rank(s)...")
            func shaped(_ kind: ModelKind) -> ModelConfig {
                var config = ModelConfig.preset(kind)
                if kind == .ncf || kind == .twoTower {   // synthetic rows: fields 0 and 1 as user and item
                    config.userFields = [0]
                    config.itemFields = [1]
                }
                config.hashBuckets = options.hashBuckets
                if let dataset {   // the model the prepared data asks for, as `train` builds it
                    config.denseInputs = dataset.denseCount
                    config.categoricalFields = dataset.categoricalCount
                    config.vocabularySizes = dataset.manifest.vocabularySizes
                    config.denseTransform = .identity
                    config.mlpDenseFeatures = min(config.mlpDenseFeatures, max(dataset.denseCount, 1))
                    config = (try? config.withFieldRoles(dataset.manifest.schema)) ?? config
                }
                return config
            }
            // The model as `train` builds it (an existential opened into the generic step).
            results.append(try runCase(makeModel(shaped(benchCase.model), maxBatch: benchCase.batchSize), benchCase,
                                       options: options, dataset: dataset, communicator: communicator))
        }
        let formatter = ISO8601DateFormatter()
        return BenchmarkReport(
            ranks: communicator.size, cores: ProcessInfo.processInfo.activeProcessorCount,
            openblas_core: GEMM.coreName, openblas_threads: GEMM.threads,
            load_average_start: loadStart, load_average_end: loadAverage(),
            started: formatter.string(from: Date()),
            seconds: Double(MonotonicClock.nanoseconds() - start) / 1e9,
            options: ["warmup_steps": "\(options.warmupSteps)", "windows": "\(options.windows)",
                      "window_seconds": "\(options.windowSeconds)", "sgemm_seconds": "\(options.sgemmSeconds)",
                      "hash_buckets": "\(options.hashBuckets)", "bucket_bytes": "\(options.bucketBytes)",
                      "optimizer": options.optimizer.kind.rawValue, "loss": options.loss.rawValue,
                      "pool_batches": "\(options.poolBatches)", "local_sums": "\(options.localSums)",
                      "data": options.dataPath ?? "synthetic rows in memory",
                      "resident_data_bytes": "\(options.residentDataBytes)"],
            results: results)
    }

    // MARK: - One case

    static func runCase<Model: RecModel>(_ model: Model, _ benchCase: BenchmarkCase, options: BenchmarkOptions,
                                         dataset: PreparedDataset?, communicator: any Communicator) throws -> BenchmarkResult {
        let n = communicator.size, rank = communicator.rank, batch = benchCase.batchSize
        try communicator.barrier()
        ResidentMemory.resetPeak()
        let baseline = ResidentMemory.currentBytes()

        // The roofline: this case's sgemm shapes, on every rank at once.
        let shapes = gemmShapes(model, batch: batch)
        let (aggregate, rates) = try measureGEMM(shapes, seconds: options.sgemmSeconds, communicator: communicator)
        let gemmFlopsPerExample = shapes.reduce(0.0) { $0 + 2 * Double($1.m * $1.n * $1.k) } / Double(batch)
        var interactionFlops = 0.0
        if model.config.kind == .dlrm {
            let slots = model.config.categoricalFields + 1
            interactionFlops = 6 * Double(slots * (slots - 1) / 2 * model.config.embeddingDim)
        }

        // The step and its data.
        let step = TrainingStep(model: model, communicator: communicator, optimizer: options.optimizer,
                                loss: options.loss, batchSize: batch, bucketBytes: options.bucketBytes,
                                localSums: options.localSums, seed: options.seed)
        if rank == 0 {
            model.initialize(parameters: step.parameters.pointer, embeddingTable: step.embeddingTable.pointer,
                             seed: options.seed)
        }
        try communicator.broadcast(step.parameters.buffer, root: 0)
        if model.embeddings != nil { try communicator.broadcast(step.embeddingTable.buffer, root: 0) }
        let pool = try BenchBatches(dataset: dataset, rank: rank, worldSize: n, batchSize: batch, options: options)
        defer { pool.stop() }
        let globalCount = batch * n

        // Warm-up, then size the windows from the warm-up's pace (agreed by all ranks).
        // The step `train` runs, its batch fetched inside it (the data wait).
        var stepNumber = 0
        func oneStep() throws -> Int {
            let count = pool.nextGlobalCount
            _ = try step.run(step: stepNumber, globalCount: count) { _ in pool.next().batch }
            stepNumber += 1
            return count
        }
        // Every rank must run the same number of steps: the warm-up goes in rounds of
        // `warmupSteps` until the slowest rank has warmed up for `warmupSeconds`.
        let warmStart = MonotonicClock.nanoseconds()
        var warmSteps = 0
        var warmElapsed = 0.0
        repeat {
            for _ in 0..<max(options.warmupSteps, 1) { _ = try oneStep() }
            warmSteps += max(options.warmupSteps, 1)
            warmElapsed = try communicator.allreduceMax([Double(MonotonicClock.nanoseconds() - warmStart)])[0]
        } while warmElapsed / 1e9 < options.warmupSeconds
        let perStep = warmElapsed / Double(warmSteps)
        let wanted = try communicator.allreduceMax([Double(max(5, Int(options.windowSeconds * 1e9 / perStep)))])
        let stepsPerWindow = Int(wanted[0])

        // Timed windows. Each starts at a barrier; its time is the slowest rank's.
        let windows = options.windows
        var windowSeconds = [Double](repeating: 0, count: windows)
        var windowSamples = [Double](repeating: 0, count: windows)
        let before = step.phases
        for w in 0..<windows {
            try communicator.barrier()
            var samples = 0
            let t0 = MonotonicClock.nanoseconds()
            for _ in 0..<stepsPerWindow { samples += try oneStep() }
            windowSeconds[w] = Double(MonotonicClock.nanoseconds() - t0) / 1e9
            windowSamples[w] = Double(samples)
        }
        let traffic = step.sync.traffic   // the last timed step's
        let timed = step.phases - before
        let slowest = try communicator.allreduceMax(windowSeconds)
        let throughputs = zip(windowSamples, slowest).map { $0 / $1 }
        let samplesPerSecond = median(throughputs)
        let peakAfterTraining = ResidentMemory.peakBytes()

        // Breakdown: per step, mean over ranks.
        let perStepNs = Double(max(timed.steps, 1))
        var parts = [Double(timed.dataWait), Double(timed.forward), Double(timed.backward),
                     Double(timed.exposedCommunication), Double(timed.hiddenCommunication),
                     Double(timed.communicationWait), Double(timed.optimizer), Double(timed.total),
                     Double(timed.communicationCoalesce), Double(timed.communicationStart),
                     Double(timed.communicationTest), Double(timed.communicationMerge),
                     Double(timed.communicationCountsWait)]
            .map { $0 / perStepNs / 1e6 }
        // Each rank's own exposed communication and wait: who waits for whom.
        var perRank = [Double](repeating: 0, count: 2 * n)
        perRank[2 * rank] = parts[3]
        perRank[2 * rank + 1] = parts[5]
        try parts.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0) }
        try perRank.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0) }
        parts = parts.map { $0 / Double(n) }
        let other = parts[7] - (parts[0] + parts[1] + parts[2] + parts[3] + parts[6])

        // Communication alone (blocking), for comparison.
        var allreduceAlone: Double?
        var exchangeAlone: Double?
        if n > 1 {
            var times: [Double] = []
            for _ in 0..<9 {
                try communicator.barrier()
                let t0 = MonotonicClock.nanoseconds()
                try communicator.allreduceSum(step.gradients.buffer)
                times.append(Double(MonotonicClock.nanoseconds() - t0) / 1e6)
            }
            allreduceAlone = median(try communicator.allreduceMax(times))
            if model.embeddings != nil {
                let view = pool.next().batch
                _ = model.forward(view, parameters: step.parameters.pointer, embeddingTable: step.embeddingTable.pointer)
                model.backward(view, dLogits: step.dLogits.pointer, parameters: step.parameters.pointer,
                               gradients: step.gradients.pointer, sparse: step.sparse)
                times = []
                for _ in 0..<9 {
                    try communicator.barrier()
                    let t0 = MonotonicClock.nanoseconds()
                    try step.sync.exchange(step.sparse)
                    times.append(Double(MonotonicClock.nanoseconds() - t0) / 1e6)
                }
                exchangeAlone = median(try communicator.allreduceMax(times))
            }
        }

        // One rank alone against all ranks, in alternating windows.
        var single: Double?, paired: Double?, scaling: Double?, concurrent: Double?, concurrentScaling: Double?
        if n > 1 && options.compareSingleRank {
            // Every rank has a copy for training alone (rank 0 alone, and all at once).
            let alone = makeModel(model.config, maxBatch: model.maxBatch) as! Model
            let soloStep = TrainingStep(model: alone, communicator: LocalCommunicator(), optimizer: options.optimizer,
                                        loss: options.loss, batchSize: batch, bucketBytes: options.bucketBytes)
            soloStep.parameters.pointer.update(from: step.parameters.pointer, count: soloStep.parameters.count)
            soloStep.embeddingTable.pointer.update(from: step.embeddingTable.pointer, count: soloStep.embeddingTable.count)
            for _ in 0..<min(stepsPerWindow, 10) { _ = try soloStep.run(pool.next().batch, globalCount: batch) }
            var soloRates = [Double](), allRates = [Double](), ratios = [Double]()
            var concurrentRates = [Double](), concurrentRatios = [Double]()
            var flag: [Float] = [0]
            for _ in 0..<windows {
                // Rank 0 alone; the others sleep in a nonblocking collective until it is done.
                var soloSeconds = 0.0
                try flag.withUnsafeMutableBufferPointer { f in
                    if rank == 0 {
                        let t0 = MonotonicClock.nanoseconds()
                        for _ in 0..<stepsPerWindow { _ = try soloStep.run(pool.next().batch, globalCount: batch) }
                        soloSeconds = Double(MonotonicClock.nanoseconds() - t0) / 1e9
                        try communicator.wait(try communicator.startAllreduceSum(f))
                    } else {
                        let request = try communicator.startAllreduceSum(f)
                        var ts = timespec(tv_sec: 0, tv_nsec: 200_000)
                        while try !communicator.test(request) { nanosleep(&ts, nil) }
                    }
                }
                // Every rank alone, all at once: the machine shared, no communication.
                try communicator.barrier()
                let c0 = MonotonicClock.nanoseconds()
                for _ in 0..<stepsPerWindow { _ = try soloStep.run(pool.next().batch, globalCount: batch) }
                let concurrentSeconds = try communicator.allreduceMax([Double(MonotonicClock.nanoseconds() - c0) / 1e9])[0]
                // All ranks.
                try communicator.barrier()
                let t0 = MonotonicClock.nanoseconds()
                for _ in 0..<stepsPerWindow { _ = try oneStep() }
                let seconds = try communicator.allreduceMax([Double(MonotonicClock.nanoseconds() - t0) / 1e9])[0]
                let soloRate = try communicator.allreduceMax([soloSeconds > 0 ? Double(batch * stepsPerWindow) / soloSeconds : 0])[0]
                let allRate = Double(globalCount * stepsPerWindow) / seconds
                let concurrentRate = Double(n * batch * stepsPerWindow) / concurrentSeconds
                soloRates.append(soloRate)
                allRates.append(allRate)
                ratios.append(allRate / soloRate)
                concurrentRates.append(concurrentRate)
                concurrentRatios.append(concurrentRate / soloRate)
            }
            single = median(soloRates)
            paired = median(allRates)
            scaling = median(ratios)
            concurrent = median(concurrentRates)
            concurrentScaling = median(concurrentRatios)
        }

        // Memory.
        let sizes = step.bufferBytes
        let accounted = ["parameters": sizes.parameters, "gradients": sizes.gradients,
                         "optimizer_state": sizes.optimizerState, "activations": sizes.activations,
                         pool.accountingName: pool.bytes]
        let accountedTotal = accounted.values.reduce(0, +)
        let rss = try communicator.allreduceMax([Double(peakAfterTraining), Double(baseline)])
        let peak = Int(rss[0]), base = Int(rss[1])

        let executed = gemmFlopsPerExample + interactionFlops
        let achieved = executed * samplesPerSecond / Double(n) / 1e9
        return BenchmarkResult(
            model: benchCase.model.rawValue, batch_per_rank: batch, ranks: n, global_batch: globalCount,
            optimizer: options.optimizer.kind.rawValue, dense_parameters: model.layout.count,
            embedding_rows: model.embeddings?.rowCount ?? 0, embedding_exchange: step.sync.embeddingExchange.rawValue,
            dense_buckets: step.sync.buckets.map(\.count),
            flops_per_example: executed, nominal_flops_per_example: model.config.flopsPerExample,
            sgemm_gflops_per_rank: aggregate, sgemm_shapes: rates, steps_per_window: stepsPerWindow,
            windows: throughputs, samples_per_s: samplesPerSecond,
            step_ms: Double(globalCount) / samplesPerSecond * 1e3,
            data_wait_ms: parts[0], forward_ms: parts[1], backward_ms: parts[2], comm_exposed_ms: parts[3],
            comm_hidden_ms: parts[4], comm_wait_ms: parts[5],
            comm_coalesce_ms: parts[8], comm_start_ms: parts[9], comm_test_ms: parts[10], comm_merge_ms: parts[11],
            comm_counts_wait_ms: parts[12],
            comm_exposed_ms_by_rank: (0..<n).map { perRank[2 * $0] },
            comm_wait_ms_by_rank: (0..<n).map { perRank[2 * $0 + 1] }, optimizer_ms: parts[6], other_ms: max(other, 0),
            comm_exposed_fraction: parts[3] / max(parts[7], 1e-12),
            achieved_gflops_per_rank: achieved, efficiency: achieved / aggregate,
            allreduce_alone_ms: allreduceAlone,
            single_rank_samples_per_s: single, paired_samples_per_s: paired, scaling_vs_single_rank: scaling,
            concurrent_samples_per_s: concurrent, concurrent_scaling: concurrentScaling, embedding_exchange_alone_ms: exchangeAlone,
            bytes_dense_per_step: traffic.denseBytes, bytes_embedding_sent_per_step: traffic.embeddingSentBytes,
            bytes_embedding_received_per_step: traffic.embeddingReceivedBytes,
            embedding_rows_local: traffic.localRows, embedding_rows_global: traffic.globalRows,
            peak_rss_bytes: peak, baseline_rss_bytes: base, accounted_bytes: accountedTotal, accounted: accounted,
            rss_ratio: Double(peak) / Double(accountedTotal),
            rss_ratio_above_baseline: Double(peak - base) / Double(accountedTotal))
    }

    // MARK: - sgemm

    struct Shape {
        var m: Int, n: Int, k: Int, transA: Bool, transB: Bool, what: String
        /// As the step calls it: forward and dW accumulate (beta 1: onto the bias rows, into the
        /// gradients), dx overwrites (beta 0).
        var beta: Float { transB ? 0 : 1 }
    }

    /// The sgemm calls of one training step of `model` at `batch` rows: forward, dW and (where the
    /// model computes it) dx of every Linear layer.
    static func gemmShapes<Model: RecModel>(_ model: Model, batch: Int) -> [Shape] {
        var shapes: [Shape] = []
        func stack(_ name: String, _ sizes: [Int], firstNeedsDx: Bool) {
            for l in 0..<(sizes.count - 1) {
                let i = sizes[l], o = sizes[l + 1]
                shapes.append(Shape(m: batch, n: o, k: i, transA: false, transB: false, what: "\(name).\(l) forward"))
                shapes.append(Shape(m: i, n: o, k: batch, transA: true, transB: false, what: "\(name).\(l) dW"))
                if l > 0 || firstNeedsDx {
                    shapes.append(Shape(m: batch, n: i, k: o, transA: false, transB: true, what: "\(name).\(l) dx"))
                }
            }
        }
        let c = model.config
        switch c.kind {
        case .mlp:
            stack("mlp", [c.mlpDenseFeatures] + c.hidden + [1], firstNeedsDx: false)
        case .dlrm:
            let slots = c.categoricalFields + 1
            stack("bottom", [c.denseInputs] + c.bottom + [c.embeddingDim], firstNeedsDx: false)
            stack("top", [c.embeddingDim + slots * (slots - 1) / 2] + c.top + [1], firstNeedsDx: true)
        case .logreg:
            if c.denseInputs > 0 { stack("linear", [c.denseInputs, 1], firstNeedsDx: false) }
        case .wideDeep:
            stack("deep", [c.denseInputs + c.categoricalFields * c.embeddingDim] + c.hidden + [1], firstNeedsDx: true)
        case .ncf:
            stack("mlp", [2 * c.embeddingDim] + c.hidden, firstNeedsDx: true)
            stack("predict", [c.factors + (c.hidden.last ?? 0), 1], firstNeedsDx: true)
        case .twoTower:
            stack("user", [(c.userFields ?? []).count * c.embeddingDim] + c.hidden + [c.factors], firstNeedsDx: true)
            stack("item", [(c.itemFields ?? []).count * c.embeddingDim] + c.hidden + [c.factors], firstNeedsDx: true)
        }
        return shapes
    }

    /// Runs all shapes back to back for about `seconds` on every rank at once; returns the mean
    /// over ranks of the aggregate GFLOP/s, and each shape's own rate (rank 0's).
    static func measureGEMM(_ shapes: [Shape], seconds: Double,
                            communicator: any Communicator) throws -> (Double, [GEMMShapeRate]) {
        let maxA = shapes.map { $0.m * $0.k }.max() ?? 1
        let maxB = shapes.map { $0.k * $0.n }.max() ?? 1
        let maxC = shapes.map { $0.m * $0.n }.max() ?? 1
        let a = FloatBuffer(count: maxA), b = FloatBuffer(count: maxB), c = FloatBuffer(count: maxC)
        var rng = RNG(seed: 9, stream: UInt64(communicator.rank))
        // Small values: the accumulating calls add up over thousands of rounds.
        for i in 0..<maxA { a.pointer[i] = rng.uniform(-0.01, 0.01) }
        for i in 0..<maxB { b.pointer[i] = rng.uniform(-0.01, 0.01) }
        func call(_ s: Shape) {
            GEMM.sgemm(transA: s.transA, transB: s.transB, m: s.m, n: s.n, k: s.k, alpha: 1,
                       a: a.pointer, lda: s.transA ? s.m : s.k, b: b.pointer, ldb: s.transB ? s.k : s.n,
                       beta: s.beta, c: c.pointer, ldc: s.n)
        }
        let flopsPerRound = shapes.reduce(0.0) { $0 + 2 * Double($1.m * $1.n * $1.k) }
        // Each shape alone, briefly (a fifth of the budget), then the sequence as a step runs it.
        var rates: [GEMMShapeRate] = []
        try communicator.barrier()
        for s in shapes {
            let budget = UInt64(seconds * 0.2e9 / Double(shapes.count))
            call(s)
            var reps = 0
            let t0 = MonotonicClock.nanoseconds()
            while reps < 3 || MonotonicClock.nanoseconds() - t0 < budget {
                call(s)
                reps += 1
            }
            let dt = Double(MonotonicClock.nanoseconds() - t0)
            rates.append(GEMMShapeRate(m: s.m, n: s.n, k: s.k, transA: s.transA, transB: s.transB, what: s.what,
                                       gflops: 2 * Double(s.m * s.n * s.k) * Double(reps) / dt))
        }
        // The sequence: in 5 rounds, each rank's best round (transient load elsewhere on the
        // machine only slows rounds down), then the mean over ranks.
        var best = 0.0
        for _ in 0..<5 {
            try communicator.barrier()
            var rounds = 0
            let budget = UInt64(seconds * 0.8e9 / 5)
            let t0 = MonotonicClock.nanoseconds()
            while rounds < 2 || MonotonicClock.nanoseconds() - t0 < budget {
                for s in shapes { call(s) }
                rounds += 1
            }
            best = max(best, flopsPerRound * Double(rounds) / Double(MonotonicClock.nanoseconds() - t0))
        }
        let sum = try communicator.allreduceSum([best])
        return (sum[0] / Double(communicator.size), rates)
    }

    // MARK: - Helpers

    static func median(_ values: [Double]) -> Double {
        let s = values.sorted()
        guard !s.isEmpty else { return 0 }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// /proc/loadavg's first three fields.
    static func loadAverage() -> String {
        guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return "n/a" }
        return text.split(separator: " ").prefix(3).joined(separator: " ")
    }
}

/// Where the benchmark's batches come from: a pool of synthetic rows in memory (fetching is
/// free), or a prepared dataset through the trainer's loader (memory-mapped, shuffled,
/// prefetched on a thread: its wait is the step's data wait).
final class BenchBatches {
    private let synthetic: SyntheticBatches?
    private let loader: PreparedBatchLoader?
    private let globalBatch: Int
    private let prefetchBytes: Int
    private let residentBudget: Int
    private var step = 0

    init(dataset: PreparedDataset?, rank: Int, worldSize: Int, batchSize: Int, options: BenchmarkOptions) throws {
        globalBatch = batchSize * worldSize
        residentBudget = options.residentDataBytes
        if let dataset {
            let split = try dataset.open(split: "train")
            let rows = split.header.rows
            guard rows >= globalBatch else {
                throw TrainingError.notEnoughData("'\(options.dataPath ?? "")' has \(rows) training rows, fewer than one global batch of \(globalBatch)")
            }
            let shard = BlockCyclicShard(rank: rank, worldSize: worldSize, blockSize: batchSize, rows: 0..<rows)
            let order = EpochOrder(rows: rows, shuffle: true, seed: options.seed)
            let prefetch = PreparedDataOptions().prefetch
            loader = PreparedBatchLoader(split: split, shard: shard, order: order, prefetch: prefetch,
                                         residentBudget: options.residentDataBytes)
            prefetchBytes = prefetch * batchSize * 4 * (1 + dataset.denseCount + dataset.categoricalCount)
            synthetic = nil
        } else {
            synthetic = SyntheticBatches(rank: rank, worldSize: worldSize, batchSize: batchSize,
                                         batches: options.poolBatches, seed: options.seed)
            loader = nil
            prefetchBytes = 0
        }
    }

    /// The row count of the next step's global batch.
    var nextGlobalCount: Int {
        guard let loader else { return globalBatch }
        return loader.globalBatchCount(offset: (step % loader.stepsPerEpoch) * globalBatch)
    }

    /// The next step's batch and the global batch's row count (steps run on through epochs).
    @inline(__always)
    func next() -> (batch: BatchView, globalCount: Int) {
        defer { step += 1 }
        if let synthetic { return (synthetic.batch(step % synthetic.count), globalBatch) }
        return loader!.batch(step: step)
    }

    /// Bytes to account for: the pool, or the prefetch ring plus the resident budget of the mapping.
    var bytes: Int { synthetic?.bytes ?? prefetchBytes + residentBudget }
    var accountingName: String { synthetic == nil ? "prefetch_and_resident_data" : "batch_pool" }

    func stop() { loader?.stop() }
}

/// A fixed pool of synthetic Criteo rows for this rank, in the step's columnar layout: the rank's
/// block of each of `batches` global batches, generated once by `SynthGenerator` (so categorical
/// values follow its Zipf laws). `batch(i)` is a view into the pool: fetching costs nothing.
final class SyntheticBatches {
    let count: Int
    let batchSize: Int
    let labels: FloatBuffer
    let dense: FloatBuffer
    let categorical: UnsafeMutablePointer<UInt32>

    init(rank: Int, worldSize: Int, batchSize: Int, batches: Int, seed: UInt64) {
        count = batches
        self.batchSize = batchSize
        let rows = batches * batchSize
        labels = FloatBuffer(count: rows)
        dense = FloatBuffer(count: rows * CriteoFormat.denseCount)
        categorical = .allocate(capacity: rows * CriteoFormat.categoricalCount)
        let generator = SynthGenerator(seed: seed)
        for s in 0..<batches {
            let first = (s * worldSize + rank) * batchSize
            let block = generator.generate(range: first..<(first + batchSize)).rows
            let r0 = s * batchSize
            block.labels.withUnsafeBufferPointer { (labels.pointer + r0).update(from: $0.baseAddress!, count: batchSize) }
            block.dense.withUnsafeBufferPointer {
                (dense.pointer + r0 * CriteoFormat.denseCount).update(from: $0.baseAddress!, count: $0.count)
            }
            block.categorical.withUnsafeBufferPointer {
                (categorical + r0 * CriteoFormat.categoricalCount).initialize(from: $0.baseAddress!, count: $0.count)
            }
        }
    }

    deinit { categorical.deallocate() }

    var bytes: Int { (labels.count + dense.count) * 4 + count * batchSize * CriteoFormat.categoricalCount * 4 }

    @inline(__always)
    func batch(_ i: Int) -> BatchView {
        let r0 = i * batchSize
        return BatchView(count: batchSize, labels: labels.pointer + r0,
                         dense: dense.pointer + r0 * CriteoFormat.denseCount, denseWidth: CriteoFormat.denseCount,
                         categorical: categorical + r0 * CriteoFormat.categoricalCount,
                         categoricalWidth: CriteoFormat.categoricalCount)
    }
}
