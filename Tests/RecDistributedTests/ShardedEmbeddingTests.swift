import Foundation
import Logging
import RecCore
import RecDistributed
import RecDistributedTesting
@testable import RecTrainer
import Testing

/// Sharded embedding tables against the replicated reference: the same global batches on N
/// in-process ranks, 25 steps, then every parameter and every table row compared.
struct ShardedEmbeddingTests {
    /// Four tables, one of 2 rows (fewer than 3 ranks), ids as prepared data has them.
    static func config(_ kind: ModelKind) -> ModelConfig {
        var c = ModelConfig.preset(kind)
        c.denseInputs = 3
        c.categoricalFields = 4
        c.vocabularySizes = [2, 40, 9, 25]
        c.denseTransform = .identity
        c.embeddingDim = 4
        c.hidden = [8]
        c.bottom = [8]
        c.top = [8]
        c.factors = 4
        switch kind {
        case .ncf: c.userFields = [1]; c.itemFields = [3]
        case .twoTower: c.userFields = [0, 1]; c.itemFields = [2, 3]
        default: break
        }
        return c
    }

    /// Global batch `step` of `global` rows: dense ~ U(-1, 1), ids below each table's size,
    /// labels 0/1 (a fixed function of the seed, so every run sees the same rows).
    struct Batches {
        let global: Int
        let labels: [Float], dense: [Float], ids: [UInt32]
        init(config: ModelConfig, global: Int, steps: Int) {
            self.global = global
            var rng = RNG(seed: 77)
            let n = global * steps
            labels = (0..<n).map { _ in rng.nextFloat() < 0.3 ? 1 : 0 }
            dense = (0..<(n * config.denseInputs)).map { _ in rng.uniform(-1, 1) }
            let sizes = config.vocabularySizes!
            ids = (0..<(n * config.categoricalFields)).map { i in
                // Skewed: low ids repeat within a batch, as real ids do.
                let size = sizes[i % config.categoricalFields]
                let u = rng.nextFloat()
                return UInt32(min(Int(u * u * Float(size)), size - 1))
            }
        }

        /// Rank `rank`'s rows of global batch `step` of `count` rows (the last one partial).
        func rows(step: Int, rank: Int, ranks: Int, count: Int) -> (start: Int, count: Int) {
            let local = (global + ranks - 1) / ranks
            let first = min(rank * local, count), last = min(first + local, count)
            return (step * global + first, last - first)
        }
    }

    /// Trains `steps` steps on `ranks` in-process ranks; returns the dense parameters and every
    /// table assembled in full from the ranks' storage.
    static func train(kind: ModelKind, optimizer: OptimizerConfig, ranks: Int, mode: EmbeddingSharding?,
                      steps: Int = 25, accumulate: Int = 1, memoryPerRank: Int = 1 << 40) throws -> (dense: [Float], tables: [Float]) {
        let config = config(kind)
        let global = 10, batches = Batches(config: config, global: global, steps: steps * accumulate)
        let results = try InProcessGroup.run(size: ranks) { comm -> ([Float], [Float], EmbeddingPlan?) in
            let local = (global + ranks - 1) / ranks
            let tables = config.modelTables!
            var sharding: ShardedEmbeddings?
            let model: any RecModel
            if let mode {
                var planner = EmbeddingPlanner(worldSize: ranks, fixedBytes: 0, stateFloatsPerRow: 0, memoryPerRank: memoryPerRank)
                planner.largeTableFraction = 0   // shard only what must be, so that the plans mix
                let plan = try planner.plan(tables, mode: mode)
                sharding = ShardedEmbeddings(tables: tables, plan: plan, columns: config.tableFields, width: config.categoricalFields,
                                             communicator: comm, capacity: local, accumulate: accumulate)
                model = makeModel(config.withWorkingTables(rows: local), maxBatch: local)
            } else {
                model = makeModel(config, maxBatch: local)
            }
            func run<M: RecModel>(_ m: M) throws -> ([Float], [Float], EmbeddingPlan?) {
                let step = TrainingStep(model: m, communicator: comm, optimizer: optimizer, loss: .bce, batchSize: local,
                                        accumulate: accumulate, seed: 3, sharding: sharding)
                m.initialize(parameters: step.parameters.pointer, embeddingTable: step.embeddingTable.pointer, seed: 11)
                sharding?.initialize(seed: 11, zeroedColumns: config.zeroedEmbeddingColumns)
                for s in 0..<steps {
                    var count = 0
                    for j in 0..<accumulate { count += s == steps - 1 && j == accumulate - 1 ? global - 3 : global }
                    let outcome = try step.run(step: s, micro: accumulate, globalCount: count) { j in
                        let size = s == steps - 1 && j == accumulate - 1 ? global - 3 : global   // a partial last batch
                        let (start, n) = batches.rows(step: s * accumulate + j, rank: comm.rank, ranks: ranks, count: size)
                        return batches.labels.withUnsafeBufferPointer { l in
                            batches.dense.withUnsafeBufferPointer { d in
                                batches.ids.withUnsafeBufferPointer { c in
                                    BatchView(count: n, labels: l.baseAddress! + start, dense: d.baseAddress! + start * config.denseInputs,
                                              denseWidth: config.denseInputs, categorical: c.baseAddress! + start * config.categoricalFields,
                                              categoricalWidth: config.categoricalFields)
                                }
                            }
                        }
                    }
                    #expect(outcome.isFinite)
                }
                return (step.parameters.toArray(), step.storage.toArray(), sharding?.plan)
            }
            return try run(model)
        }
        let dense = results[0].0
        guard let plan = results[0].2 else { return (dense, results[0].1) }
        // Assemble the full tables from the ranks' parts.
        let tables = config.modelTables!, dim = tables.dim
        var full = [Float](repeating: .nan, count: tables.rowCount * dim)
        for t in 0..<tables.fields {
            for row in 0..<tables.rows(field: t) {
                let (owner, index) = plan.locate(table: t, row: row)
                let r = owner ?? 0
                let at = (plan.localBase(table: t, rank: r) + index) * dim
                for k in 0..<dim { full[(tables.firstRow(field: t) + row) * dim + k] = results[r].1[at + k] }
            }
        }
        return (dense, full)
    }

    static func worst(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
    }

    static let models: [ModelKind] = [.dlrm, .wideDeep, .ncf, .twoTower, .logreg]

    @Test(arguments: models, OptimizerKind.allCases)
    func shardedEqualsReplicated(kind: ModelKind, optimizer: OptimizerKind) throws {
        var opt = OptimizerConfig(kind: optimizer, learningRate: 0.05)
        opt.weightDecay = optimizer == .adamw ? 0.01 : 0
        let reference = try Self.train(kind: kind, optimizer: opt, ranks: 1, mode: nil)
        for ranks in [1, 2, 3] {
            for mode in [EmbeddingSharding.table, .row] {
                let sharded = try Self.train(kind: kind, optimizer: opt, ranks: ranks, mode: mode)
                let dense = Self.worst(reference.dense, sharded.dense), tables = Self.worst(reference.tables, sharded.tables)
                #expect(dense <= 1e-5 && tables <= 1e-5, "\(kind) \(optimizer) N=\(ranks) \(mode): dense \(dense), tables \(tables)")
            }
        }
    }

    /// `auto` keeps small tables replicated and shards the large ones, whole tables dealt to
    /// balance the ranks; a plan that cannot fit is refused with the numbers.
    @Test func plannerPlacesByMemory() throws {
        let tables = EmbeddingTables(rowsPerField: [100, 1_000_000, 300, 2_000_000], dim: 4, indexing: .direct)
        let planner = EmbeddingPlanner(worldSize: 2, fixedBytes: 1 << 20, stateFloatsPerRow: 0, memoryPerRank: 40 << 20)
        let auto = try planner.plan(tables, mode: .auto)
        // Two large tables, too large to balance whole: row-wise.
        #expect(auto.placements == [.replicated, .row, .replicated, .row])
        #expect(planner.bytesPerRank(auto).allSatisfy { $0 <= 40 << 20 })
        // Six large tables of equal size: dealt whole, three to a rank.
        let many = try planner.plan(EmbeddingTables(rowsPerField: [100] + Array(repeating: 200_000, count: 6), dim: 4, indexing: .direct),
                                    mode: .auto)
        #expect(many.placements[0] == .replicated)
        #expect(many.placements.filter { $0 == .table(owner: 0) }.count == 3 && many.placements.filter { $0 == .table(owner: 1) }.count == 3)
        let row = try planner.plan(tables, mode: .row)
        #expect(abs(row.localRows(rank: 0) - row.localRows(rank: 1)) <= 4)
        #expect(row.localRows(rank: 0) + row.localRows(rank: 1) == tables.rowCount)
        #expect(throws: EmbeddingPlanError.self) { try planner.plan(tables, mode: .replicated) }
        do {
            _ = try planner.plan(tables, mode: .replicated)
        } catch {
            #expect(error.description.contains("--embedding-sharding replicated") && error.description.contains("--memory-per-rank 40.0 MiB"),
                    "\(error)")
        }
        let tooSmall = EmbeddingPlanner(worldSize: 2, fixedBytes: 1 << 20, stateFloatsPerRow: 0, memoryPerRank: 20 << 20)
        #expect(throws: EmbeddingPlanError.self) { try tooSmall.plan(tables, mode: .auto) }
    }

    /// `auto` with a budget that fits only some tables replicated mixes replicated and sharded
    /// tables in one step; with clipping and gradient accumulation on top.
    @Test(arguments: [1, 2, 3])
    func mixedPlanWithClippingAndAccumulation(ranks: Int) throws {
        var opt = OptimizerConfig(kind: .adam, learningRate: 0.05)
        opt.clipNorm = 0.05
        let reference = try Self.train(kind: .dlrm, optimizer: opt, ranks: 1, mode: nil, accumulate: 2)
        // 76 replicated rows of 20 bytes (4 floats and the exchange's slot) do not fit 1100 bytes;
        // without the 40-row table (720 bytes), its rows spread over the ranks do.
        let budget = ranks == 1 ? 1 << 40 : 1100   // one rank cannot shard: it must fit
        let sharded = try Self.train(kind: .dlrm, optimizer: opt, ranks: ranks, mode: .auto, accumulate: 2, memoryPerRank: budget)
        #expect(Self.worst(reference.dense, sharded.dense) <= 1e-5)
        #expect(Self.worst(reference.tables, sharded.tables) <= 1e-5)
    }
}

/// The trainer with sharded tables, through its checkpoints: the same model as replicated
/// training, and a resume on another number of ranks under another plan equal to a straight run.
struct ShardedTrainingTests {
    static func train(data: String, model: ModelKind, ranks: Int, sharding: EmbeddingSharding?, steps: Int,
                      checkpoint: String, resume: Bool = false, funnel: Bool = false, failingShardRank: Int? = nil,
                      continueOnCheckpointFailure: Bool = false, hashBuckets: Int = 97) throws -> [String: [Float]] {
        _ = try InProcessGroup.run(size: ranks) { comm -> Int in
            var modelConfig = ModelConfig(kind: model)
            modelConfig.hashBuckets = hashBuckets
            modelConfig.hidden = [16]
            modelConfig.bottom = [32, 16]
            modelConfig.top = [32]
            if model == .twoTower { modelConfig.userFields = [0, 2]; modelConfig.itemFields = [1, 3] }
            var config = TrainingConfig(dataPath: data, model: modelConfig, optimizer: OptimizerConfig(kind: .adam))
            config.evalFraction = 0.1
            config.evalEvery = 5
            config.batchSize = 12 / ranks
            config.steps = steps
            config.checkpointDir = checkpoint
            config.embeddingSharding = sharding
            if resume { config.resume = "latest" }
            config.continueOnCheckpointFailure = continueOnCheckpointFailure
            var logger = Logger(label: "test")
            logger.logLevel = .error
            let trainer = Trainer(config: config, communicator: comm, logger: logger)
            (trainer.funnelCheckpoints, trainer.failingShardRank) = (funnel, failingShardRank)
            return try trainer.run().steps
        }
        let (_, tensors) = try Checkpoint.readModel(at: checkpoint)
        return Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0.values) })
    }

    static func worst(_ a: [String: [Float]], _ b: [String: [Float]]) -> Float {
        #expect(Set(a.keys) == Set(b.keys))
        var worst: Float = 0
        for (name, values) in a {
            guard let other = b[name], other.count == values.count else { return .infinity }
            for i in values.indices { worst = max(worst, abs(values[i] - other[i])) }
        }
        return worst
    }

    static func directory() -> String { NSTemporaryDirectory() + "rec-dist-sharded-\(UUID().uuidString.prefix(8))" }

    @Test(arguments: [ModelKind.dlrm, .twoTower])
    func trainerShardedEqualsReplicated(model: ModelKind) throws {
        let data = try InProcessTrainingTests.dataset(rows: 150)
        let reference = try Self.train(data: data, model: model, ranks: 1, sharding: nil, steps: 12, checkpoint: Self.directory())
        for (ranks, mode) in [(2, EmbeddingSharding.row), (3, .table), (2, .table), (3, .row)] {
            let sharded = try Self.train(data: data, model: model, ranks: ranks, sharding: mode, steps: 12, checkpoint: Self.directory())
            let d = Self.worst(reference, sharded)
            #expect(d <= 1e-5, "\(model) N=\(ranks) \(mode): \(d)")
        }
    }

    /// 6 steps row-sharded on 2 ranks, then 6 more table-sharded on 3 ranks from its checkpoint
    /// (another plan, another number of ranks: the rows and their Adam moments move to their new
    /// owners), or replicated on one, equal 12 replicated steps on one rank.
    @Test func resumeReshards() throws {
        let data = try InProcessTrainingTests.dataset(rows: 150)
        let reference = try Self.train(data: data, model: .dlrm, ranks: 1, sharding: nil, steps: 12, checkpoint: Self.directory())
        let dir = Self.directory()
        _ = try Self.train(data: data, model: .dlrm, ranks: 2, sharding: .row, steps: 6, checkpoint: dir)
        let resumed = try Self.train(data: data, model: .dlrm, ranks: 3, sharding: .table, steps: 12, checkpoint: dir, resume: true)
        #expect(Self.worst(reference, resumed) <= 1e-5)
        // And back to one replicated rank.
        let other = Self.directory()
        _ = try Self.train(data: data, model: .dlrm, ranks: 2, sharding: .row, steps: 6, checkpoint: other)
        let replicatedAgain = try Self.train(data: data, model: .dlrm, ranks: 1, sharding: nil, steps: 12, checkpoint: other, resume: true)
        #expect(Self.worst(reference, replicatedAgain) <= 1e-5)
    }
}

/// The gradient the owners receive is the derivative of the loss by their rows: central finite
/// differences through the sharded lookup (the owner perturbs its stored row, every rank gathers
/// again, rank 0 recomputes the loss), on 2 ranks, rows sharded, smooth activations.
struct ShardedGradientTests {
    @Test func ownersGetTheLossGradientOfTheirRows() throws {
        var smooth = ShardedEmbeddingTests.config(.dlrm)
        smooth.activations = ["bottom": .tanh, "top": .tanh]
        let config = smooth, batch = 6, tables = config.modelTables!, dim = tables.dim
        let data = ShardedEmbeddingTests.Batches(config: config, global: batch, steps: 1)
        // Probes: (table, row, component), rows the batch touches, on both ranks.
        let probes: [(Int, Int, Int)] = (0..<3).flatMap { b in
            (0..<tables.fields).map { t in (t, Int(data.ids[b * config.categoricalFields + t]), (b + t) % dim) }
        }
        let results = try InProcessGroup.run(size: 2) { comm -> [(analytic: Float?, numeric: Double?)] in
            let plan = EmbeddingPlan(worldSize: 2, placements: Array(repeating: .row, count: tables.fields),
                                     rowsPerTable: tables.rowsPerField, dim: dim)
            let sharding = ShardedEmbeddings(tables: tables, plan: plan, columns: config.tableFields, width: config.categoricalFields,
                                             communicator: comm, capacity: batch)
            let model = makeModel(config.withWorkingTables(rows: batch), maxBatch: batch)
            let parameters = FloatBuffer(count: model.layout.count), gradients = FloatBuffer(count: model.layout.count)
            let working = FloatBuffer(count: model.embeddings!.rowCount * dim), dLogits = FloatBuffer(count: batch)
            let sparse = SparseGradient(capacity: batch * tables.fields, dim: dim)
            model.initialize(parameters: parameters.pointer, embeddingTable: working.pointer, seed: 5)
            sharding.initialize(seed: 5, zeroedColumns: 0)
            let n = comm.rank == 0 ? batch : 0
            func view() -> BatchView {
                data.labels.withUnsafeBufferPointer { l in data.dense.withUnsafeBufferPointer { d in data.ids.withUnsafeBufferPointer { c in
                    BatchView(count: n, labels: l.baseAddress!, dense: d.baseAddress!, denseWidth: config.denseInputs,
                              categorical: c.baseAddress!, categoricalWidth: config.categoricalFields)
                } } }
            }
            /// Rank 0's loss (mean over the batch) with the current rows; collective.
            func loss(backward: Bool) throws -> Double {
                let w = try sharding.gather(view(), into: working.pointer)
                let logits = model.forward(w, parameters: parameters.pointer, embeddingTable: working.pointer)
                let total = Loss.bce.forwardBackward(logits: logits, labels: w.labels, count: n, scale: 1 / Float(batch), dLogits: dLogits.pointer)
                if backward {
                    model.backward(w, dLogits: dLogits.pointer, parameters: parameters.pointer, gradients: gradients.pointer, sparse: sparse)
                    sharding.beginStep()
                    sharding.route(sparse)
                    try sharding.exchangeGradients()
                }
                return total / Double(batch)
            }
            _ = try loss(backward: true)
            var analytic: [Int: [Float]] = [:]
            for i in 0..<sharding.ownedCount {
                analytic[Int(sharding.ownedRows[i])] = Array(UnsafeBufferPointer(start: sharding.ownedValues + i * dim, count: dim))
            }
            var out: [(analytic: Float?, numeric: Double?)] = []
            let eps: Float = 1e-2
            for (t, row, k) in probes {
                let (owner, index) = plan.locate(table: t, row: row)
                let local = plan.localBase(table: t, rank: owner!) + index
                let mine = owner == comm.rank
                let p = sharding.storage.pointer + local * dim + k
                let saved = p.pointee
                if mine { p.pointee = saved + eps }
                let plus = try loss(backward: false)
                if mine { p.pointee = saved - eps }
                let minus = try loss(backward: false)
                if mine { p.pointee = saved }
                out.append((mine ? (analytic[local]?[k] ?? 0) : nil, comm.rank == 0 ? (plus - minus) / Double(2 * eps) : nil))
            }
            return out
        }
        var checked = 0
        for i in probes.indices {
            let numeric = try #require(results[0][i].numeric)
            let analytic = try #require(results[0][i].analytic ?? results[1][i].analytic)
            #expect(abs(Double(analytic) - numeric) <= 1e-2 * abs(numeric) + 2e-5, "probe \(probes[i]): analytic \(analytic), numeric \(numeric)")
            if abs(numeric) > 1e-4 { checked += 1 }
        }
        #expect(checked >= probes.count / 2, "too few probes with a gradient to compare")
    }
}
