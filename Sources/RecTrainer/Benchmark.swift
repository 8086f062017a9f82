#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import RecCore
import RecData
import RecDistributed

/// `rec-dist bench`: measures, in one run and on every rank at once, the machine's sgemm rate on
/// each case's layer shapes, then the training step on synthetic rows (median samples/s over
/// timed windows after a warm-up, the step-time breakdown, efficiency against the sgemm rate,
/// peak RSS against the accounted buffers).
public enum Benchmark {
    /// Runs every case; every rank gets the same report (figures gathered over ranks).
    public static func run(options: BenchmarkOptions, communicator: any Communicator,
                           progress: (String) -> Void = { _ in }) throws -> BenchmarkReport {
        try communicator.requireSameConfiguration(options)
        let start = MonotonicClock.nanoseconds()
        let loadStart = loadAverage()
        Denormals.flushToZero()
        var results: [BenchmarkResult] = []
        let dataset = try options.dataPath.map { try PreparedDataset(directory: $0) }
        for benchCase in options.cases {
            progress("\(benchCase) on \(communicator.size) rank(s)...")
            func shaped(_ kind: ModelKind) throws -> ModelConfig {
                var config = ModelConfig.preset(kind)
                if kind == .ncf || kind == .twoTower {   // synthetic rows: fields 0 and 1 as user and item
                    config.userFields = [0]
                    config.itemFields = [1]
                }
                config.hashBuckets = options.hashBuckets
                if let dataset {   // the model the prepared data asks for, as `train` builds it
                    if kind == .mlp && dataset.denseCount == 0 {
                        throw TrainingError.modelConfig("--case \(benchCase) does not fit --data '\(dataset.directory)': it has no dense fields, and the mlp reads only dense fields; bench another model on it (dlrm, ncf, ...)")
                    }
                    config.denseInputs = dataset.denseCount
                    config.categoricalFields = dataset.categoricalCount
                    config.vocabularySizes = dataset.manifest.vocabularySizes
                    config.denseTransform = .identity
                    config.mlpDenseFeatures = min(config.mlpDenseFeatures, dataset.denseCount)
                    config = try config.withFieldRoles(dataset.manifest.schema, source: "--data '\(dataset.directory)'",
                                                       configuration: "--case \(benchCase)")
                }
                return config
            }
            // The model as `train` builds it (an existential opened into the generic step); with
            // sharded tables, its working tables and the sharded storage.
            let config = try shaped(benchCase.model), batch = benchCase.batchSize
            var sharding: ShardedEmbeddings?
            // Checked against the memory before anything large is allocated, as train does; the
            // rows come from the pool (or the loader's prefetch ring), and rank 0 may train alone
            // in a second model.
            let rowBytes = 4 * (1 + (dataset?.denseCount ?? CriteoFormat.denseCount) + (dataset?.categoricalCount ?? CriteoFormat.categoricalCount))
            let pooled = dataset == nil ? options.poolBatches : PreparedDataOptions().prefetch
            let footprint = ModelMemory(model: config, maxBatch: batch)
            let extra = ModelMemory.sum(ModelMemory.product(ModelMemory.product(pooled, batch), rowBytes),
                                        communicator.size > 1 && options.compareSingleRank ? footprint.activationBytes : 0)
            let memory = try options.memoryPerRank ?? {
                Int(-(try communicator.allreduceMax([-Double(ModelMemory.availableToThisRank().bytes)]))[0])
            }()
            let described = ModelMemory.memoryDescription(memory: memory, given: options.memoryPerRank != nil)
            let planned = try footprint.plan(optimizer: options.optimizer, worldSize: communicator.size, memory: memory, memoryDescription: described,
                                             mode: benchCase.sharding ?? .replicated, extraBytes: ("rows to train on", extra),
                                             batchFlag: "the batch of --case \(benchCase)")
            if let tables = config.modelTables, let plan = planned?.plan, plan.isSharded {
                sharding = ShardedEmbeddings(tables: tables, plan: plan, columns: config.tableFields, width: config.categoricalFields,
                                             communicator: communicator, capacity: batch)
            }
            let model = makeModel(sharding == nil ? config : config.withWorkingTables(rows: batch), maxBatch: batch)
            results.append(try runCase(model, benchCase, replicatedConfig: config, sharding: sharding,
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

    static func runCase<Model: RecModel>(_ model: Model, _ benchCase: BenchmarkCase, replicatedConfig: ModelConfig,
                                         sharding: ShardedEmbeddings?, options: BenchmarkOptions,
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
                                localSums: options.localSums, seed: options.seed, sharding: sharding)
        if rank == 0 {
            model.initialize(parameters: step.parameters.pointer, embeddingTable: step.embeddingTable.pointer,
                             seed: options.seed)
        }
        try communicator.broadcast(step.parameters.buffer, root: 0)
        if let sharding {
            sharding.initialize(seed: options.seed, zeroedColumns: replicatedConfig.zeroedEmbeddingColumns)
        } else if model.embeddings != nil {
            try communicator.broadcast(step.embeddingTable.buffer, root: 0)
        }
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
        let shardedBytes = try communicator.allreduceSum([Double(sharding?.lookupBytesSent ?? 0), Double(sharding?.gradientBytesSent ?? 0)])
            .map { Int($0) / n }
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
                     Double(timed.communicationCountsWait), Double(timed.embeddingExchange)]
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
            if model.embeddings != nil && sharding == nil {
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
            // Every rank has a copy for training alone (rank 0 alone, and all at once), with
            // whole tables.
            let alone = makeModel(replicatedConfig, maxBatch: model.maxBatch) as! Model
            let soloStep = TrainingStep(model: alone, communicator: LocalCommunicator(), optimizer: options.optimizer,
                                        loss: options.loss, batchSize: batch, bucketBytes: options.bucketBytes)
            soloStep.parameters.pointer.update(from: step.parameters.pointer, count: soloStep.parameters.count)
            if sharding == nil {
                soloStep.embeddingTable.pointer.update(from: step.embeddingTable.pointer, count: soloStep.embeddingTable.count)
            } else {
                alone.initialize(parameters: soloStep.parameters.pointer, embeddingTable: soloStep.embeddingTable.pointer, seed: options.seed)
            }
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
            embedding_rows: sharding?.tables.rowCount ?? model.embeddings?.rowCount ?? 0, embedding_exchange: step.sync.embeddingExchange.rawValue,
            embedding_sharding: sharding.map { s in Set(s.plan.placements.map { p -> String in
                switch p { case .replicated: "replicated"; case .table: "table"; case .row: "row" } }).sorted().joined(separator: "+") } ?? "replicated",
            bytes_sharded_lookup_per_step: shardedBytes[0], bytes_sharded_gradients_per_step: shardedBytes[1],
            comm_sharded_exchange_ms: parts[13],
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
