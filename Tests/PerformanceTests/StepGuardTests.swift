import AllocationCounter
import RecCore
import RecDistributed
import RecDistributedTesting
@testable import RecTrainer
import Testing

/// Guards for the training step that are not timed: after warm-up a step allocates nothing on
/// the heap, on 1 rank and on several (in-process) ranks, for every embedding exchange path.
struct StepAllocationTests {
    @Test func counterSeesAllocations() {
        guard rd_allocation_counter_available() != 0 else { return }
        rd_allocation_counter_start()
        var a = [Int](repeating: 1, count: 1000)
        a[7] = 3
        let b = Array(a.reversed())
        let n = rd_allocation_counter_stop()
        #expect(b[992] == 3)
        #expect(n >= 2, "the counting allocator is linked in but saw \(n) allocations")
    }

    /// A small model, so the test is quick; the code path is the one of the full-size model.
    static func model(_ kind: ModelKind, hashBuckets: Int, batch: Int) -> ModelConfig {
        var config = ModelConfig(kind: kind)
        config.hashBuckets = hashBuckets
        config.hidden = [32]
        config.bottom = [32, 16]
        config.top = [32, 16]
        config.userFields = [0, 5]
        config.itemFields = [1, 2]
        if kind == .ncf { config.userFields = [0]; config.itemFields = [1]; config.dropout = ["mlp": 0.2] }
        if kind == .wideDeep { config.dropout = ["deep": 0.1] }
        return config
    }

    /// Runs `warmup` steps, then counts the heap allocations of `counted` more on this thread.
    /// One OpenBLAS thread, as rec-dist runs (threaded OpenBLAS mallocs job tables per call).
    static func allocations<Model: RecModel>(_ model: Model, communicator: any Communicator, batch: Int,
                                             optimizer: OptimizerKind, localSums: Bool = true,
                                             warmup: Int = 3, counted: Int = 5) throws
        -> (allocations: UInt64, exchange: GradientSync.EmbeddingExchange) {
        try allocations(model, communicator: communicator, batch: batch, config: OptimizerConfig(kind: optimizer),
                        localSums: localSums, warmup: warmup, counted: counted)
    }

    /// As above, with a full optimizer configuration: weight decay, a schedule (the rate set
    /// before each step, as the trainer does) and clipping.
    static func allocations<Model: RecModel>(_ model: Model, communicator: any Communicator, batch: Int,
                                             config: OptimizerConfig, localSums: Bool = false,
                                             warmup: Int = 3, counted: Int = 5) throws
        -> (allocations: UInt64, exchange: GradientSync.EmbeddingExchange) {
        GEMM.setThreads(1)
        _ = rd_allocation_counter_set_library("libopenblas")   // OpenBLAS's own mallocs are not the step's
        let step = TrainingStep(model: model, communicator: communicator, optimizer: config,
                                loss: .bce, batchSize: batch, bucketBytes: 1024, localSums: localSums)
        step.clipNorm = config.clipNorm
        let optimizer = step.optimizer, schedule = config.schedule, base = config.learningRate
        func rate(_ s: Int) { optimizer.learningRate = schedule.rate(base: base, step: s, totalSteps: warmup + counted) }
        model.initialize(parameters: step.parameters.pointer, embeddingTable: step.embeddingTable.pointer, seed: 1)
        model.trainingContext = TrainingContext(seed: 1, step: 0, firstExample: 0)   // dropout on, where configured
        let pool = SyntheticBatches(rank: communicator.rank, worldSize: communicator.size, batchSize: batch,
                                    batches: 4, seed: 3)
        for s in 0..<warmup { rate(s); _ = try step.run(pool.batch(s % pool.count), globalCount: batch * communicator.size) }
        rd_allocation_counter_start()
        for s in 0..<counted { rate(warmup + s); _ = try step.run(pool.batch(s % pool.count), globalCount: batch * communicator.size) }
        return (UInt64(rd_allocation_counter_stop()), step.sync.embeddingExchange)
    }

    /// The later optimizers and options: AdamW, row-wise Adagrad, weight decay on
    /// each kind, warmup + cosine / step schedules, clipping. On 1 rank and on 2 in-process ranks.
    static let optimizationConfigs: [OptimizerConfig] = {
        func make(_ kind: OptimizerKind, wd: Float, _ decay: LearningRateDecay, clip: Float?) -> OptimizerConfig {
            var c = OptimizerConfig(kind: kind)
            c.weightDecay = wd
            c.schedule = LearningRateSchedule(decay: decay, warmupSteps: 2)
            c.clipNorm = clip
            return c
        }
        return [make(.adamw, wd: 0.01, .cosine, clip: 0.5), make(.rowwiseAdagrad, wd: 0, .linear, clip: nil),
                make(.rowwiseAdagrad, wd: 0.01, .step, clip: 0.1), make(.sgd, wd: 0.01, .constant, clip: 1e-3),
                make(.momentum, wd: 0.01, .cosine, clip: nil), make(.adam, wd: 0.01, .linear, clip: 0.2),
                make(.adagrad, wd: 0.01, .step, clip: 0.2)]
    }()

    @Test(arguments: optimizationConfigs)
    func optimizationOptionsAllocateNothing(config: OptimizerConfig) throws {
        guard rd_allocation_counter_available() != 0 else { return }
        let batch = 32
        let modelConfig = Self.model(.dlrm, hashBuckets: 1000, batch: batch)
        let one = try Self.allocations(DLRMModel(config: modelConfig, maxBatch: batch), communicator: LocalCommunicator(),
                                       batch: batch, config: config)
        #expect(one.allocations == 0, "\(config.kind) on 1 rank: \(one.allocations) heap allocations in 5 steps")
        let results = try InProcessGroup.run(size: 2) { comm in
            Int(try Self.allocations(DLRMModel(config: modelConfig, maxBatch: batch), communicator: comm,
                                     batch: batch, config: config).allocations)
        }
        #expect(results == [0, 0], "\(config.kind) on 2 ranks: \(results) heap allocations in 5 steps")
    }

    /// The trainer's gradient-accumulation pieces: appending a micro-batch's embedding pairs,
    /// clipping, the schedule.
    @Test func accumulationPiecesAllocateNothing() {
        guard rd_allocation_counter_available() != 0 else { return }
        let micro = SparseGradient(capacity: 64, dim: 8), accumulated = SparseGradient(capacity: 3 * 64, dim: 8)
        micro.count = 64
        let dense = FloatBuffer(count: 1000)
        var schedule = LearningRateSchedule(decay: .cosine, warmupSteps: 3)
        schedule.minRatio = 0.1
        var total: Float = 0
        rd_allocation_counter_start()
        for s in 0..<10 {
            accumulated.count = 0
            for _ in 0..<3 { accumulated.append(micro) }
            GradientClipping.clip(dense.buffer, UnsafeMutableBufferPointer(start: accumulated.values, count: accumulated.count * 8),
                                  maxNorm: 1)
            total += schedule.rate(base: 0.1, step: s, totalSteps: 10)
        }
        let n = rd_allocation_counter_stop()
        #expect(accumulated.count == 192 && total > 0)
        #expect(n == 0, "\(n) heap allocations")
    }

    /// The step as train runs it: 3 accumulated micro-batches, the control slots, a scheduled
    /// learning rate, clipping; on 1 rank and on 2 in-process ranks.
    @Test func accumulatedStepWithControlsAllocatesNothing() throws {
        guard rd_allocation_counter_available() != 0 else { return }
        let batch = 32
        let results = try InProcessGroup.run(size: 2) { comm -> [Int] in
            var counts: [Int] = []
            for communicator in [LocalCommunicator(), comm] as [any Communicator] {
                GEMM.setThreads(1)
                let model = DLRMModel(config: Self.model(.dlrm, hashBuckets: 1000, batch: batch), maxBatch: batch)
                var optimizer = OptimizerConfig(kind: .adamw)
                optimizer.clipNorm = 0.5
                let step = TrainingStep(model: model, communicator: communicator, optimizer: optimizer, loss: .bce,
                                        batchSize: batch, accumulate: 3, bucketBytes: 1024, seed: 7)
                model.initialize(parameters: step.parameters.pointer, embeddingTable: step.embeddingTable.pointer, seed: 1)
                let pool = SyntheticBatches(rank: communicator.rank, worldSize: communicator.size, batchSize: batch,
                                            batches: 3, seed: 3)
                let global = 3 * batch * communicator.size
                func run(_ s: Int) throws {
                    let outcome = try step.run(step: s, micro: 3, globalCount: global, stop: false, checkpoint: s == 4,
                                               learningRate: 0.001 / Float(s + 1)) { pool.batch($0) }
                    precondition(outcome.isFinite && outcome.checkpointRequested == (s == 4) && outcome.gradientNorm != nil)
                }
                for s in 0..<3 { try run(s) }
                rd_allocation_counter_start()
                for s in 3..<8 { try run(s) }
                counts.append(Int(rd_allocation_counter_stop()))
            }
            return counts
        }
        #expect(results == [[0, 0], [0, 0]], "heap allocations in 5 accumulated steps (1 rank, 2 ranks), by rank: \(results)")
    }

    /// Our GEMM calls allocate nothing, over shapes that take OpenBLAS's small-matrix kernels;
    /// what OpenBLAS itself allocates is counted apart. (Its AVX-512 small-matrix sgemm kernel
    /// mallocs a packing buffer for some shapes: the two-tower step's, on Cooperlake hosts.) Were
    /// the library's allocations not told apart, this fails on those hosts.
    @Test func gemmAllocatesNothingOfOurs() {
        guard rd_allocation_counter_available() != 0 else { return }
        #expect(rd_allocation_counter_set_library("libopenblas") == 1, "libopenblas is not loaded")
        GEMM.setThreads(1)
        let a = [Float](repeating: 0.5, count: 64 * 64), b = [Float](repeating: 0.25, count: 64 * 64)
        var c = [Float](repeating: 0, count: 64 * 64)
        var library: UInt64 = 0, ours: UInt64 = 0
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    for transA in [false, true] {
                        for transB in [false, true] {
                            for n in 1...40 {
                                rd_allocation_counter_start()
                                GEMM.sgemm(transA: transA, transB: transB, m: 32, n: n, k: 32, alpha: 1, a: a.baseAddress!, lda: 32,
                                           b: b.baseAddress!, ldb: transB ? 32 : n, beta: 0, c: c.baseAddress!, ldc: n)
                                ours += UInt64(rd_allocation_counter_stop())
                                library += UInt64(rd_allocation_counter_library_count())
                            }
                        }
                    }
                }
            }
        }
        print("GEMM: \(library) allocations by OpenBLAS in 160 products")
        #expect(ours == 0, "\(ours) allocations of ours in 160 products (\(library) by OpenBLAS)")
    }

    @Test(arguments: [(ModelKind.mlp, OptimizerKind.adam), (.mlp, .sgd), (.dlrm, .adam), (.dlrm, .momentum), (.dlrm, .adagrad),
                      (.logreg, .adagrad), (.wideDeep, .adam), (.ncf, .adam), (.twoTower, .adam)])
    func oneRankStepAllocatesNothing(kind: ModelKind, optimizer: OptimizerKind) throws {
        guard rd_allocation_counter_available() != 0 else { return }
        let batch = 32
        let config = Self.model(kind, hashBuckets: 1000, batch: batch)
        let result: (allocations: UInt64, exchange: GradientSync.EmbeddingExchange)
        switch kind {
        case .mlp: result = try Self.allocations(MLPModel(config: config, maxBatch: batch), communicator: LocalCommunicator(),
                                                 batch: batch, optimizer: optimizer)
        case .dlrm: result = try Self.allocations(DLRMModel(config: config, maxBatch: batch), communicator: LocalCommunicator(),
                                                  batch: batch, optimizer: optimizer)
        case .logreg: result = try Self.allocations(LogisticRegressionModel(config: config, maxBatch: batch),
                                                    communicator: LocalCommunicator(), batch: batch, optimizer: optimizer)
        case .wideDeep: result = try Self.allocations(WideDeepModel(config: config, maxBatch: batch),
                                                      communicator: LocalCommunicator(), batch: batch, optimizer: optimizer)
        case .ncf: result = try Self.allocations(NCFModel(config: config, maxBatch: batch),
                                                 communicator: LocalCommunicator(), batch: batch, optimizer: optimizer)
        case .twoTower: result = try Self.allocations(TwoTowerModel(config: config, maxBatch: batch),
                                                      communicator: LocalCommunicator(), batch: batch, optimizer: optimizer)
        }
        #expect(result.exchange == (kind == .mlp ? .none : .local))
        #expect(result.allocations == 0, "\(kind) \(optimizer): \(result.allocations) heap allocations in 5 steps")
    }

    /// Two and three in-process ranks: the overlapped dense buckets, and both embedding paths
    /// (1000 buckets: rows, with local sums (the default) and without; 20 buckets: 520 rows <
    /// ranks x 32 x 26 pairs, so dense).
    @Test(arguments: [(2, 1000, true), (3, 1000, true), (2, 1000, false), (3, 1000, false), (2, 20, true)])
    func severalRanksStepAllocatesNothing(ranks: Int, hashBuckets: Int, localSums: Bool) throws {
        guard rd_allocation_counter_available() != 0 else { return }
        let batch = 32
        let results = try InProcessGroup.run(size: ranks) { comm in
            let config = Self.model(.dlrm, hashBuckets: hashBuckets, batch: batch)
            let r = try Self.allocations(DLRMModel(config: config, maxBatch: batch), communicator: comm,
                                         batch: batch, optimizer: .adam, localSums: localSums)
            return [Int(r.allocations), r.exchange == .rows ? 1 : r.exchange == .dense ? 2 : 0]
        }
        for (rank, r) in results.enumerated() {
            #expect(r[1] == (hashBuckets == 20 ? 2 : 1))
            #expect(r[0] == 0, "rank \(rank) of \(ranks): \(r[0]) heap allocations in 5 steps")
        }
    }
}

/// Every sgemm shape of the standard models, at the standard batch sizes and at small ones (a
/// partial last batch), runs without a heap allocation (OpenBLAS's own kernels included).
struct GEMMAllocationTests {
    @Test func modelShapesDoNotAllocate() {
        guard rd_allocation_counter_available() != 0 else { return }
        GEMM.setThreads(1)
        var shapes: [(Int, Int, Int, Bool, Bool)] = []
        func stack(_ sizes: [Int], batch: Int) {
            for l in 0..<(sizes.count - 1) {
                let i = sizes[l], o = sizes[l + 1]
                shapes += [(batch, o, i, false, false), (i, o, batch, true, false), (batch, i, o, false, true)]
            }
        }
        for batch in [1, 3, 32, 128, 512, 1024] {
            stack([10, 128, 1], batch: batch)
            stack([13, 512, 256, 64, 16], batch: batch)
            stack([367, 512, 256, 1], batch: batch)
        }
        let a = FloatBuffer(count: 1024 * 512), b = FloatBuffer(count: 1024 * 512), c = FloatBuffer(count: 1024 * 512)
        var allocating: [String] = []
        for (m, n, k, ta, tb) in shapes {
            func call() {
                GEMM.sgemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 1, a: a.pointer, lda: ta ? m : k,
                           b: b.pointer, ldb: tb ? k : n, beta: 1, c: c.pointer, ldc: n)
            }
            call()
            rd_allocation_counter_start()
            call()
            if rd_allocation_counter_stop() != 0 { allocating.append("\(m)x\(n)x\(k) \(ta ? "T" : "N")\(tb ? "T" : "N")") }
        }
        #expect(allocating.isEmpty, "sgemm allocates (OpenBLAS \(GEMM.coreName)) for \(allocating)")
    }
}

/// The bytes each exchange path moves per step match its formula.
struct ExchangeTrafficTests {
    static let dim = 4

    /// Rank r's pairs: rows drawn from `rows`, with repeats.
    static func pairs(rank: Int, rows: Int, count: Int) -> [Int] {
        var rng = RNG(seed: 21, stream: UInt64(rank))
        return (0..<count).map { _ in rng.nextInt(below: rows) }
    }

    @Test(arguments: [(2, 400, false), (3, 400, false), (2, 400, true), (3, 400, true), (2, 30, false), (3, 40, true)])
    func bytesMatchFormula(ranks: Int, rows: Int, localSums: Bool) throws {
        let perRank = 25, dim = Self.dim, denseCount = 100
        let results = try InProcessGroup.run(size: ranks) { comm -> [Int] in
            let sync = GradientSync(communicator: comm, denseCount: denseCount, boundaries: [40, 70], bucketBytes: 4,
                                    embeddingRows: rows, dim: dim, maxLocalPairs: perRank, localSums: localSums)
            let local = SparseGradient(capacity: perRank, dim: dim)
            let mine = Self.pairs(rank: comm.rank, rows: rows, count: perRank)
            local.count = mine.count
            for i in mine.indices { local.rows[i] = mine[i] }
            for i in 0..<(mine.count * dim) { local.values[i] = 1 }
            let gradients = FloatBuffer(count: denseCount)
            sync.beginStep(gradients: gradients.pointer)
            try sync.denseFinal(from: 70)
            try sync.sparseFinal(local)
            try sync.denseFinal(from: 0)
            try sync.finish()
            let t = sync.traffic
            return [sync.embeddingExchange == .rows ? 1 : 2, t.denseBytes, t.embeddingSentBytes,
                    t.embeddingReceivedBytes, t.localRows, t.globalRows, sync.buckets.count]
        }
        // Rows each rank sends: its distinct rows with local sums, else every pair.
        let distinct = (0..<ranks).map { Set(Self.pairs(rank: $0, rows: rows, count: perRank)).count }
        let sent = localSums ? distinct : [Int](repeating: perRank, count: ranks)
        let union = Set((0..<ranks).flatMap { Self.pairs(rank: $0, rows: rows, count: perRank) }).count
        let dense = ranks * perRank > rows
        for (rank, r) in results.enumerated() {
            #expect(r[0] == (dense ? 2 : 1))
            #expect(r[1] == 4 * denseCount)
            #expect(r[6] == 3)   // buckets end at the boundaries 70 and 40
            let pair = 8 + 4 * dim               // a 64-bit row and its gradient values
            let denseRow = 4 * (dim + 1)         // the gradient values and the touch count
            if dense {
                #expect(r[2] == rows * denseRow && r[3] == rows * denseRow)
                #expect(r[4] == distinct[rank])
            } else {
                #expect(r[2] == 8 + sent[rank] * pair)
                #expect(r[3] == 8 * ranks + sent.reduce(0, +) * pair)
                #expect(r[4] == sent[rank])
            }
            #expect(r[5] == union)
        }
    }

    /// The dlrm step at a known configuration: dense allreduce of every parameter plus the extra
    /// slots (loss, stop and checkpoint requests: the step is the one train runs); embedding rows by the formula: with local sums (nil: the default, as train and
    /// bench run) the distinct rows counted from the batch, without them every pair (16 x 26 per
    /// rank).
    @Test(arguments: [nil, true, false] as [Bool?])
    func dlrmStepTraffic(localSums option: Bool?) throws {
        let localSums = option ?? true
        let batch = 16, ranks = 2
        let results = try InProcessGroup.run(size: ranks) { comm -> [Int] in
            let config = StepAllocationTests.model(.dlrm, hashBuckets: 5000, batch: batch)
            let model = DLRMModel(config: config, maxBatch: batch)
            let step = option.map {
                TrainingStep(model: model, communicator: comm, optimizer: OptimizerConfig(kind: .adagrad),
                             loss: .bce, batchSize: batch, localSums: $0)
            } ?? TrainingStep(model: model, communicator: comm, optimizer: OptimizerConfig(kind: .adagrad),
                              loss: .bce, batchSize: batch)
            #expect(step.sync.localSums == localSums && step.sync.embeddingExchange == .rows)
            let pool = SyntheticBatches(rank: comm.rank, worldSize: ranks, batchSize: batch, batches: 1, seed: 4)
            let view = pool.batch(0)
            _ = try step.run(view, globalCount: batch * ranks)
            var rows = Set<Int>()
            for b in 0..<batch {
                for f in 0..<config.categoricalFields {
                    rows.insert(model.embeddings!.row(field: f, hash: view.categorical[b * config.categoricalFields + f]))
                }
            }
            let t = step.sync.traffic
            return [t.denseBytes, t.embeddingSentBytes, t.embeddingReceivedBytes,
                    localSums ? rows.count : batch * config.categoricalFields, model.layout.count]
        }
        let pair = 8 + 4 * 16   // the 64-bit row and its 16 gradient values
        for r in results {
            #expect(r[0] == 4 * (r[4] + StepSlot.count))
            #expect(r[1] == 8 + r[3] * pair)
            #expect(r[2] == 8 * ranks + (results[0][3] + results[1][3]) * pair)
        }
    }
}

/// Nonblocking collectives give what the blocking ones give, whatever order they are waited in.
struct NonblockingCollectiveTests {
    @Test(arguments: [1, 2, 3])
    func nonblockingMatchesBlocking(size: Int) throws {
        let results = try InProcessGroup.run(size: size) { comm -> [[Float]] in
            let r = Float(comm.rank + 1)
            var a = (0..<50).map { Float($0) * r }, b = (0..<7).map { Float($0 * $0) + r }, c = [r, -r]
            var blockingA = a, blockingB = b, blockingC = c
            let counts = (0..<size).map { ($0 + 1) * 4 }
            let displacements = counts.indices.map { counts[..<$0].reduce(0, +) }
            let send = [Float](repeating: r, count: comm.rank + 1)
            var gathered = [Float](repeating: 0, count: counts.reduce(0, +) / 4)
            var blockingGathered = gathered
            try a.withUnsafeMutableBufferPointer { pa in
                try b.withUnsafeMutableBufferPointer { pb in
                    try c.withUnsafeMutableBufferPointer { pc in
                        try send.withUnsafeBytes { ps in
                            try gathered.withUnsafeMutableBytes { pg in
                                try counts.withUnsafeBufferPointer { pcount in
                                    try displacements.withUnsafeBufferPointer { pdisp in
                                        let ra = try comm.startAllreduceSum(pa)
                                        let rg = try comm.startAllgatherv(ps, into: pg, counts: pcount, displacements: pdisp)
                                        let rb = try comm.startAllreduceSum(pb)
                                        let rc = try comm.startAllreduceSum(pc)
                                        // Wait out of order; test may or may not report completion.
                                        try comm.wait(rb)
                                        if try !comm.test(rc) { try comm.wait(rc) }
                                        try comm.wait(rg)
                                        try comm.wait(ra)
                                    }
                                }
                            }
                        }
                    }
                }
            }
            try blockingA.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
            try blockingB.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
            try blockingC.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
            try send.withUnsafeBytes { ps in
                try blockingGathered.withUnsafeMutableBytes { pg in
                    try comm.allgatherv(ps, into: pg, counts: counts, displacements: displacements)
                }
            }
            return [a, blockingA, b, blockingB, c, blockingC, gathered, blockingGathered]
        }
        let total = Float(size * (size + 1) / 2)
        for r in results {
            #expect(r[0] == r[1] && r[0] == (0..<50).map { Float($0) * total })
            #expect(r[2] == r[3] && r[4] == r[5] && r[4] == [total, -total])
            #expect(r[6] == r[7] && r[6] == (0..<size).flatMap { [Float](repeating: Float($0 + 1), count: $0 + 1) })
        }
    }

    /// A blocking collective issued while nonblocking ones are pending matches after them.
    @Test func blockingAfterPendingKeepsOrder() throws {
        let results = try InProcessGroup.run(size: 2) { comm -> [Float] in
            var a: [Float] = [Float(comm.rank + 1)]
            var b: [Float] = [10 * Float(comm.rank + 1)]
            try a.withUnsafeMutableBufferPointer { pa in
                let request = try comm.startAllreduceSum(pa)
                try b.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
                try comm.wait(request)
            }
            return a + b
        }
        for r in results { #expect(r == [3, 30]) }
    }

    /// Bucketed, overlapped dense sums equal one blocking allreduce, bit for bit.
    @Test(arguments: [2, 3])
    func bucketedDenseSumEqualsBlocking(size: Int) throws {
        let results = try InProcessGroup.run(size: size) { comm -> [[Float]] in
            var rng = RNG(seed: 5, stream: UInt64(comm.rank))
            let values = (0..<1000).map { _ in rng.uniform(-1, 1) }
            let sync = GradientSync(communicator: comm, denseCount: 1000, boundaries: [100, 200, 500, 900],
                                    bucketBytes: 400, embeddingRows: 0, dim: 1, maxLocalPairs: 0)
            let g = FloatBuffer(count: 1000)
            g.assign(values)
            sync.beginStep(gradients: g.pointer)
            for offset in [900, 500, 200, 100, 0] { try sync.denseFinal(from: offset) }
            try sync.finish()
            var blocking = values
            try blocking.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
            return [g.toArray(), blocking, sync.buckets.map { Float($0.count) }]
        }
        for r in results {
            #expect(r[0] == r[1])
            #expect(r[2] == [100, 400, 300, 100, 100])
        }
    }

    /// A deep model with small buckets (a boundary every 10 floats, 4-byte buckets: 100 buckets
    /// asked for) gets at most `maxBuckets` larger ones, which tile the buffer, and the same sums;
    /// before, its collectives overflowed the communicator's requests and the rank trapped.
    @Test(arguments: [2, 3])
    func manySmallBucketsAreMerged(size: Int) throws {
        let results = try InProcessGroup.run(size: size) { comm -> [[Float]] in
            var rng = RNG(seed: 6, stream: UInt64(comm.rank))
            let values = (0..<1000).map { _ in rng.uniform(-1, 1) }
            let offsets = Array(stride(from: 990, through: 0, by: -10))
            let sync = GradientSync(communicator: comm, denseCount: 1000, boundaries: offsets,
                                    bucketBytes: 4, embeddingRows: 0, dim: 1, maxLocalPairs: 0)
            let g = FloatBuffer(count: 1000)
            g.assign(values)
            sync.beginStep(gradients: g.pointer)
            for offset in offsets { try sync.denseFinal(from: offset) }
            try sync.finish()
            var blocking = values
            try blocking.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
            return [g.toArray(), blocking, sync.buckets.flatMap { [Float]([Float($0.lowerBound), Float($0.upperBound)]) }]
        }
        for r in results {
            #expect(r[0] == r[1])
            let bounds = r[2]
            #expect(bounds.count / 2 >= 2 && bounds.count / 2 <= GradientSync.maxBuckets, "\(bounds.count / 2) buckets")
            // From the end of the buffer down to 0, each bucket ending where the previous began.
            #expect(bounds[1] == 1000 && bounds[bounds.count - 2] == 0)
            for k in stride(from: 2, to: bounds.count, by: 2) { #expect(bounds[k + 1] == bounds[k - 2]) }
        }
    }
}
