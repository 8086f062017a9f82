import Foundation
import Logging
import RecCore
import RecData
import RecDistributed
import RecDistributedTesting
import RecInference
@testable import RecTrainer
import Testing

/// The trainer's optimization features on N in-process ranks: every optimizer, schedule,
/// gradient accumulation and clipping gives the same model for N = 1, 2, 3 at the same global
/// batch; accumulation equals a K-times larger batch; a resumed run equals an uninterrupted one;
/// early stopping stops every rank at the same step. (Under real mpirun: IntegrationTests.)
@Suite(.serialized)
struct OptimizationTrainingTests {
    /// One setting under test: a name and how it changes the configuration.
    struct Setting: Sendable, CustomStringConvertible {
        var name: String
        var model: ModelKind = .dlrm
        var configure: @Sendable (inout TrainingConfig) -> Void
        var description: String { name }
    }

    static let data: String = {
        let path = try! InProcessTrainingTests.dataset(rows: 130)   // 130 = 10 x 12 + 10: a partial last batch
        return path
    }()

    static func config(_ data: String, model: ModelKind, optimizer: OptimizerKind = .adam) -> TrainingConfig {
        var modelConfig = ModelConfig(kind: model)
        modelConfig.hashBuckets = 97
        modelConfig.hidden = [16]
        modelConfig.bottom = [32, 16]
        modelConfig.top = [32]
        switch model {   // as InProcessTrainingTests: dropout where the model has it
        case .ncf: modelConfig.userFields = [0]; modelConfig.itemFields = [1]; modelConfig.dropout = ["mlp": 0.2]
        case .twoTower: modelConfig.userFields = [0, 2]; modelConfig.itemFields = [1, 3]
        case .wideDeep: modelConfig.dropout = ["deep": 0.2]; modelConfig.activations = ["deep": .tanh]
        default: break
        }
        var config = TrainingConfig(dataPath: data, model: modelConfig, optimizer: OptimizerConfig(kind: optimizer))
        config.evalFraction = 0
        config.steps = 14
        return config
    }

    /// Trains on `ranks` in-process ranks with `globalBatch` rows per micro-batch; returns the
    /// final model's tensors and the run's results.
    static func train(_ base: TrainingConfig, ranks: Int, globalBatch: Int, checkpoint: String? = nil,
                      configure: @escaping @Sendable (inout TrainingConfig) -> Void = { _ in })
        throws -> (tensors: [String: [Float]], results: [TrainingResult]) {
        let dir = checkpoint ?? NSTemporaryDirectory() + "rec-dist-optim-ck-\(UUID().uuidString.prefix(8))"
        let results = try InProcessGroup.run(size: ranks) { comm -> TrainingResult in
            var config = base
            config.batchSize = globalBatch / ranks
            config.checkpointDir = dir
            configure(&config)
            var logger = Logger(label: "test")
            logger.logLevel = .error
            return try Trainer(config: config, communicator: comm, logger: logger).run()
        }
        let (_, tensors) = try Checkpoint.readModel(at: dir)
        return (Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0.values) }), results)
    }

    static func worst(_ a: [String: [Float]], _ b: [String: [Float]]) -> Float {
        precondition(Set(a.keys) == Set(b.keys))
        var worst: Float = 0
        for (name, values) in a {
            for (x, y) in zip(values, b[name]!) { worst = max(worst, abs(x - y)) }
        }
        return worst
    }

    static let settings: [Setting] = [
        Setting(name: "adamw wd 0.05") { $0.optimizer = OptimizerConfig(kind: .adamw); $0.optimizer.weightDecay = 0.05 },
        Setting(name: "rowwise-adagrad lr 0.05") { $0.optimizer = OptimizerConfig(kind: .rowwiseAdagrad, learningRate: 0.05) },
        Setting(name: "sgd lr 0.1 wd 0.01") { $0.optimizer = OptimizerConfig(kind: .sgd, learningRate: 0.1); $0.optimizer.weightDecay = 0.01 },
        Setting(name: "nesterov wd 0.01") {
            $0.optimizer = OptimizerConfig(kind: .momentum, learningRate: 0.05)
            $0.optimizer.nesterov = true
            $0.optimizer.weightDecay = 0.01
        },
        Setting(name: "adagrad wd 0.01 lr 0.05") { $0.optimizer = OptimizerConfig(kind: .adagrad, learningRate: 0.05); $0.optimizer.weightDecay = 0.01 },
        Setting(name: "adam wd 0.01, mlp", model: .mlp) { $0.optimizer.weightDecay = 0.01 },
        Setting(name: "adam cosine, warmup 4") { $0.optimizer.schedule = LearningRateSchedule(decay: .cosine, warmupSteps: 4) },
        Setting(name: "momentum linear, warmup 3") {
            $0.optimizer = OptimizerConfig(kind: .momentum, learningRate: 0.05)
            $0.optimizer.schedule = LearningRateSchedule(decay: .linear, warmupSteps: 3)
        },
        Setting(name: "adam step decay every 5") {
            $0.optimizer.schedule = LearningRateSchedule(decay: .step)
            $0.optimizer.schedule.decayEvery = 5
            $0.optimizer.schedule.decayFactor = 0.3
        },
        Setting(name: "adam accumulate 3") { $0.optimizer.accumulate = 3 },
        Setting(name: "sgd accumulate 2, mlp", model: .mlp) { $0.optimizer = OptimizerConfig(kind: .sgd, learningRate: 0.1); $0.optimizer.accumulate = 2 },
        Setting(name: "sgd clip 0.05") { $0.optimizer = OptimizerConfig(kind: .sgd, learningRate: 0.5); $0.optimizer.clipNorm = 0.05 },
        Setting(name: "logreg rowwise-adagrad wd 0.01", model: .logreg) {
            $0.optimizer = OptimizerConfig(kind: .rowwiseAdagrad, learningRate: 0.1)
            $0.optimizer.weightDecay = 0.01
        },
        Setting(name: "wide-deep adamw clip 0.1 linear warmup", model: .wideDeep) {
            $0.optimizer = OptimizerConfig(kind: .adamw, learningRate: 0.003)
            $0.optimizer.clipNorm = 0.1
            $0.optimizer.schedule = LearningRateSchedule(decay: .linear, warmupSteps: 3)
        },
        Setting(name: "ncf (dropout) adam accumulate 3", model: .ncf) { $0.optimizer.accumulate = 3 },
        Setting(name: "two-tower rowwise-adagrad cosine", model: .twoTower) {
            $0.optimizer = OptimizerConfig(kind: .rowwiseAdagrad, learningRate: 0.1)
            $0.optimizer.schedule = LearningRateSchedule(decay: .cosine, warmupSteps: 2)
        },
        Setting(name: "adamw cosine warmup accumulate 2 clip 0.1") {
            $0.optimizer = OptimizerConfig(kind: .adamw)
            $0.optimizer.schedule = LearningRateSchedule(decay: .cosine, warmupSteps: 2)
            $0.optimizer.accumulate = 2
            $0.optimizer.clipNorm = 0.1
        },
    ]

    @Test(arguments: settings)
    func sameModelForOneTwoThreeRanks(_ setting: Setting) throws {
        let base = Self.config(Self.data, model: setting.model)
        let one = try Self.train(base, ranks: 1, globalBatch: 12, configure: setting.configure).tensors
        for n in [2, 3] {
            let other = try Self.train(base, ranks: n, globalBatch: 12, configure: setting.configure).tensors
            let worst = Self.worst(one, other)
            #expect(worst < 1e-5, "\(setting): N=\(n) differs by \(worst)")
        }
        // The setting matters: without it the model is far from this one.
        let plain = try Self.train(Self.config(Self.data, model: setting.model), ranks: 1, globalBatch: 12).tensors
        #expect(Self.worst(one, plain) > 1e-4, "\(setting) changes nothing")
    }

    /// K micro-batches of B rows per step equal one step on K x B rows, on 1 rank and on 2 and 3
    /// ranks (130 rows: 11 micro-batches of 12 per epoch, so the epoch's last step has 2 of
    /// them, 22 rows, as the 36-row batches leave 22 for the last step too).
    @Test(arguments: [OptimizerKind.sgd, .adam, .adagrad, .momentum])
    func accumulationEqualsALargerBatch(optimizer: OptimizerKind) throws {
        var base = Self.config(Self.data, model: .dlrm, optimizer: optimizer)
        base.steps = 8
        let large = try Self.train(base, ranks: 1, globalBatch: 36).tensors
        for n in [1, 2, 3] {
            let accumulated = try Self.train(base, ranks: n, globalBatch: 12) { $0.optimizer.accumulate = 3 }.tensors
            let worst = Self.worst(large, accumulated)
            #expect(worst < 1e-5, "\(optimizer): 3 x 12 rows on \(n) rank(s) differs from 36 rows by \(worst)")
        }
        let unaccumulated = try Self.train(base, ranks: 1, globalBatch: 12).tensors
        #expect(Self.worst(large, unaccumulated) > 1e-4)
    }

    /// With dropout, too: each example's mask follows its place in the step's rows, so 3 x 12
    /// rows with ncf's dropout equal 36 rows, on 1, 2 and 3 ranks.
    @Test func accumulationWithDropoutEqualsALargerBatch() throws {
        var base = Self.config(Self.data, model: .ncf, optimizer: .adam)
        base.steps = 8
        let large = try Self.train(base, ranks: 1, globalBatch: 36).tensors
        for n in [1, 2, 3] {
            let accumulated = try Self.train(base, ranks: n, globalBatch: 12) { $0.optimizer.accumulate = 3 }.tensors
            let worst = Self.worst(large, accumulated)
            #expect(worst < 1e-5, "ncf: 3 x 12 rows on \(n) rank(s) differs from 36 rows by \(worst)")
        }
    }

    /// The linear scaling rule: N ranks with --lr x and --scale-lr-by-world-size train the model
    /// 1 rank trains with lr N x.
    @Test func scaleLearningRateByWorldSize() throws {
        let base = Self.config(Self.data, model: .dlrm)
        for n in [2, 3] {
            let scaled = try Self.train(base, ranks: n, globalBatch: 12) { $0.optimizer.scaleByWorldSize = true }.tensors
            let reference = try Self.train(base, ranks: 1, globalBatch: 12) { $0.optimizer.learningRate *= Float(n) }.tensors
            #expect(Self.worst(scaled, reference) < 1e-5)
        }
    }

    /// Clipping in the step against a reference: after the gradients are global, an SGD step with
    /// lr 1 and --clip-norm C moves every dense parameter and every touched embedding row by
    /// exactly -g x C / (norm + 1e-6), with the norm over the dense and the embedding-row
    /// gradients together, computed in Double from the synchronized buffers; every rank sees the
    /// same norm.
    @Test(arguments: [1, 2, 3])
    func clippingInTheStepMatchesAReference(ranks: Int) throws {
        let results = try InProcessGroup.run(size: ranks) { comm -> [Double] in
            var modelConfig = ModelConfig(kind: .dlrm)
            modelConfig.hashBuckets = 97
            modelConfig.bottom = [32, 16]
            modelConfig.top = [32]
            let batch = 8
            let model = DLRMModel(config: modelConfig, maxBatch: batch)
            let step = TrainingStep(model: model, communicator: comm, optimizer: OptimizerConfig(kind: .sgd, learningRate: 1),
                                    loss: .bce, batchSize: batch)
            model.initialize(parameters: step.parameters.pointer, embeddingTable: step.embeddingTable.pointer, seed: 1)
            let pool = SyntheticBatches(rank: comm.rank, worldSize: comm.size, batchSize: batch, batches: 1, seed: 3)
            try step.computeGradients(pool.batch(0), globalCount: batch * comm.size)
            _ = try step.synchronize()
            let n = model.layout.count, dim = model.embeddings!.dim
            let dense = Array(UnsafeBufferPointer(start: step.gradients.pointer, count: n)).map(Double.init)
            let rows = Array(UnsafeBufferPointer(start: step.sync.rows, count: step.sync.rowCount))
            let rowGradients = Array(UnsafeBufferPointer(start: step.sync.values.pointer, count: rows.count * dim)).map(Double.init)
            let denseSquares = dense.reduce(0) { $0 + $1 * $1 }, rowSquares = rowGradients.reduce(0) { $0 + $1 * $1 }
            let norm = (denseSquares + rowSquares).squareRoot()
            let maxNorm = Float(norm / 4)
            let factor = Double(maxNorm) / (norm + 1e-6)
            let p0 = Array(step.parameters.buffer), e0 = Array(step.embeddingTable.buffer)
            step.clipNorm = maxNorm
            step.update()
            var worst = 0.0
            for i in 0..<n {
                let expected = Double(p0[i]) - factor * dense[i]
                worst = max(worst, abs(Double(step.parameters.pointer[i]) - expected))
            }
            for (k, r) in rows.enumerated() {
                for j in 0..<dim {
                    let expected = Double(e0[r * dim + j]) - factor * rowGradients[k * dim + j]
                    worst = max(worst, abs(Double(step.embeddingTable.pointer[r * dim + j]) - expected))
                }
            }
            return [norm, worst, rowSquares / (denseSquares + rowSquares)]
        }
        for r in results {
            #expect(r[0] == results[0][0], "every rank sees the same norm")
            #expect(r[1] < 1e-6, "largest deviation from the reference update: \(r[1])")
            #expect(r[2] > 1e-4, "the embedding rows' share of the squared norm, \(r[2]), is too small to show")
        }
    }

    /// A huge clip norm changes nothing, bit for bit.
    @Test func clippingAboveTheNormIsANoOp() throws {
        let base = Self.config(Self.data, model: .dlrm, optimizer: .sgd)
        let plain = try Self.train(base, ranks: 2, globalBatch: 12).tensors
        let clipped = try Self.train(base, ranks: 2, globalBatch: 12) { $0.optimizer.clipNorm = 1e9 }.tensors
        #expect(Self.worst(plain, clipped) == 0)
    }

    /// Interrupted at step 6 (the checkpoint the uninterrupted run wrote there) and resumed, a run
    /// with a schedule, accumulation, clipping and early-stopping state ends bitwise where the
    /// uninterrupted one does.
    @Test(arguments: [1, 2])
    func resumeEqualsUninterrupted(ranks: Int) throws {
        var base = Self.config(Self.data, model: .dlrm, optimizer: .adamw)
        base.evalFraction = 0.15
        base.evalEvery = 2
        base.checkpointEvery = 3
        base.keep = 10
        base.earlyStopPatience = 50
        base.optimizer.schedule = LearningRateSchedule(decay: .cosine, warmupSteps: 3)
        base.optimizer.accumulate = 2
        base.optimizer.clipNorm = 0.2
        let whole = NSTemporaryDirectory() + "rec-dist-optim-whole-\(UUID().uuidString.prefix(8))"
        _ = try Self.train(base, ranks: ranks, globalBatch: 12, checkpoint: whole)
        let parts = NSTemporaryDirectory() + "rec-dist-optim-parts-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: parts, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: whole + "/step-00000006", toPath: parts + "/step-00000006")
        let resumed = try Self.train(base, ranks: ranks, globalBatch: 12, checkpoint: parts) { $0.autoResume = true }
        #expect(resumed.results[0].resumedFrom == 6)
        for file in ["model.safetensors", "optimizer.safetensors"] {
            let a = try Data(contentsOf: URL(fileURLWithPath: whole + "/step-00000014/" + file))
            let b = try Data(contentsOf: URL(fileURLWithPath: parts + "/step-00000014/" + file))
            #expect(a == b, "\(file) differs after resume on \(ranks) rank(s)")
        }
        let state = try Checkpoint.validate(parts + "/step-00000014")
        #expect(state.earlyStopBest != nil && state.evaluationsSinceBest != nil)
        let wholeState = try Checkpoint.validate(whole + "/step-00000014")
        #expect(state.earlyStopBest == wholeState.earlyStopBest && state.evaluationsSinceBest == wholeState.evaluationsSinceBest)
    }

    /// An improvement must exceed a min-delta of 10 (never): after the first evaluation (step 2),
    /// patience 2 stops every rank after the evaluation at step 6; `best` is the checkpoint with
    /// the lowest logloss. Resumed from step 4, the run still stops at 6: the count of
    /// evaluations without improvement survives the checkpoint.
    @Test(arguments: [1, 2, 3])
    func earlyStoppingStopsEveryRankTogether(ranks: Int) throws {
        var base = Self.config(Self.data, model: .dlrm)
        base.steps = 14
        base.evalFraction = 0.15
        base.evalEvery = 2
        base.earlyStopPatience = 2
        base.earlyStopMinDelta = 10
        base.selectionMetric = .logloss
        base.keep = 10
        let dir = NSTemporaryDirectory() + "rec-dist-optim-early-\(UUID().uuidString.prefix(8))"
        let run = try Self.train(base, ranks: ranks, globalBatch: 12, checkpoint: dir)
        #expect(run.results.map(\.steps) == Array(repeating: 6, count: ranks))
        #expect(run.results[0].stoppedEarlyAt == 6)
        #expect(run.results.dropFirst().allSatisfy { $0.stoppedEarlyAt == 6 })
        // Every evaluation that beat the best so far was checkpointed: `best` has the lowest
        // logloss of the three evaluations.
        var loglosses: [String: Double] = [:]
        for name in Checkpoint.list(root: dir) {
            if let e = try Checkpoint.validate(dir + "/" + name).evaluation { loglosses[name] = e.logloss }
        }
        #expect(loglosses.keys.contains("step-00000002") && loglosses.keys.contains("step-00000006"))
        let best = try String(contentsOfFile: dir + "/best", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(best == loglosses.min { $0.value < $1.value }?.key)
        #expect(run.results[0].bestCheckpoint == dir + "/" + best)

        // Resume from step 4 (a run that checkpointed every 2 steps, otherwise the same).
        base.checkpointEvery = 2
        let every = NSTemporaryDirectory() + "rec-dist-optim-early-every-\(UUID().uuidString.prefix(8))"
        let run2 = try Self.train(base, ranks: ranks, globalBatch: 12, checkpoint: every)
        #expect(run2.results.map(\.steps) == Array(repeating: 6, count: ranks))
        let parts = NSTemporaryDirectory() + "rec-dist-optim-early-parts-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: parts, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: every + "/step-00000004", toPath: parts + "/step-00000004")
        let resumed = try Self.train(base, ranks: ranks, globalBatch: 12, checkpoint: parts) { $0.autoResume = true }
        #expect(resumed.results.map(\.steps) == Array(repeating: 6, count: ranks))
    }

    /// Without a min-delta, the metric's direction decides: auc up, logloss down.
    @Test func selectionMetricDirections() {
        #expect(SelectionMetric.auc.isBetter(0.8, than: 0.7))
        #expect(!SelectionMetric.logloss.isBetter(0.8, than: 0.7))
        #expect(SelectionMetric.logloss.isBetter(0.6, than: 0.7))
        #expect(SelectionMetric.rmse.isBetter(0.1, than: 0.2) && SelectionMetric.mae.isBetter(0.1, than: 0.2))
        for m in [SelectionMetric.hr, .ndcg, .recall, .mrr, .accuracy] { #expect(m.isBetter(0.5, than: 0.4)) }
        #expect(!SelectionMetric.auc.isBetter(0.75, than: 0.7, minDelta: 0.1))
        #expect(SelectionMetric.hr.isRanking && !SelectionMetric.auc.isRanking)
    }

    /// A ranking selection metric without a leave-last-out evaluation is refused on every rank.
    @Test func rankingMetricNeedsGroups() throws {
        var base = Self.config(Self.data, model: .mlp)
        base.evalFraction = 0.15
        base.selectionMetric = .ndcg
        #expect(throws: (any Error).self) { _ = try Self.train(base, ranks: 2, globalBatch: 12) }
    }
}
