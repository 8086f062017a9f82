import Foundation
import Logging
import RecCore
import RecData
import RecDistributed
import RecDistributedTesting
import RecInference
import RecTrainer
import Testing

/// The trainer on N in-process ranks: the same global batch gives the same model for any N.
/// (The same property under real mpirun ranks is in IntegrationTests.)
struct InProcessTrainingTests {
    static func dataset(rows: Int) throws -> String {
        let dir = NSTemporaryDirectory() + "rec-dist-inprocess-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/synth.tsv"
        try SynthGenerator(seed: 5).write(rows: rows, to: path, probabilitiesPath: nil)
        return path
    }

    static func train(data: String, model: ModelKind, optimizer: OptimizerKind, ranks: Int, globalBatch: Int,
                      steps: Int, checkpointDir: String? = nil, resume: Bool = false,
                      evalFraction: Double = 0) throws -> [String: [Float]] {
        let checkpoint = checkpointDir ?? NSTemporaryDirectory() + "rec-dist-inprocess-ck-\(UUID().uuidString.prefix(8))"
        _ = try InProcessGroup.run(size: ranks) { comm -> Int in
            var modelConfig = ModelConfig(kind: model)
            modelConfig.hashBuckets = 97
            modelConfig.hidden = [16]
            modelConfig.bottom = [32, 16]
            modelConfig.top = [32]
            switch model {
            case .ncf: modelConfig.userFields = [0]; modelConfig.itemFields = [1]; modelConfig.dropout = ["mlp": 0.2]
            case .twoTower: modelConfig.userFields = [0, 2]; modelConfig.itemFields = [1, 3]
            case .wideDeep: modelConfig.dropout = ["deep": 0.2]; modelConfig.activations = ["deep": .tanh]
            default: break
            }
            var config = TrainingConfig(dataPath: data, model: modelConfig, optimizer: OptimizerConfig(kind: optimizer))
            config.evalFraction = evalFraction
            config.batchSize = globalBatch / ranks
            config.steps = steps
            config.checkpointDir = checkpoint
            if resume { config.resume = "latest" }
            var logger = Logger(label: "test")
            logger.logLevel = .error
            return try Trainer(config: config, communicator: comm, logger: logger).run().steps
        }
        let (_, tensors) = try Checkpoint.readModel(at: checkpoint)
        return Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0.values) })
    }

    /// The small MLPs keep every ReLU pre-activation of these runs at least 1.6e-5 from 0
    /// (measured with a probe over every step, example and unit), so rounding differences between
    /// N ranks (or OpenBLAS kernels: it passes with OPENBLAS_CORETYPE Prescott, Sandybridge, Haswell
    /// and SkylakeX) cannot flip a ReLU mask; see `DistributedTrainingTests` for why that matters.
    /// Averaging over the rank's rows instead of the global batch fails it by 1.5e-4 to 0.09.
    @Test(arguments: [(ModelKind.mlp, OptimizerKind.sgd), (.mlp, .adam), (.dlrm, .adam), (.dlrm, .momentum), (.dlrm, .adagrad),
                      (.logreg, .adagrad), (.wideDeep, .adam), (.ncf, .adam), (.twoTower, .momentum)])
    func sameModelForOneTwoThreeRanks(model: ModelKind, optimizer: OptimizerKind) throws {
        let data = try Self.dataset(rows: 130)   // 130 = 10 x 12 + 10: the last global batch is partial
        let one = try Self.train(data: data, model: model, optimizer: optimizer, ranks: 1, globalBatch: 12, steps: 14)
        for n in [2, 3] {
            let other = try Self.train(data: data, model: model, optimizer: optimizer, ranks: n, globalBatch: 12, steps: 14)
            #expect(Set(one.keys) == Set(other.keys))
            var worst: Float = 0
            for (name, values) in one {
                let o = try #require(other[name])
                for i in values.indices { worst = max(worst, abs(values[i] - o[i])) }
            }
            #expect(worst < 1e-5, "\(model) \(optimizer): N=\(n) differs by \(worst)")
        }
    }

    /// The new models (with dropout on in wide-deep and ncf) resume bitwise: 6 steps, then 8 more
    /// from the checkpoint, equal 14 straight; the dropout masks need no saved state. And the
    /// checkpoint serves `predict` (TrainedModel): probabilities in (0, 1) that depend on the row.
    @Test(arguments: [ModelKind.logreg, .wideDeep, .ncf, .twoTower])
    func resumeAndPredict(model: ModelKind) throws {
        let data = try Self.dataset(rows: 130)
        // The 13 evaluation rows are all negatives: calibration (mean prediction / mean label) is
        // undefined (absent from the record), and the checkpoint's state must still travel to the
        // ranks on resume.
        let straight = try Self.train(data: data, model: model, optimizer: .adam, ranks: 1, globalBatch: 12, steps: 14,
                                      evalFraction: 0.1)
        let dir = NSTemporaryDirectory() + "rec-dist-inprocess-resume-\(UUID().uuidString.prefix(8))"
        _ = try Self.train(data: data, model: model, optimizer: .adam, ranks: 1, globalBatch: 12, steps: 6, checkpointDir: dir,
                           evalFraction: 0.1)
        let resumed = try Self.train(data: data, model: model, optimizer: .adam, ranks: 2, globalBatch: 12, steps: 14,
                                     checkpointDir: dir, resume: true, evalFraction: 0.1)
        #expect(Set(straight.keys) == Set(resumed.keys))
        var worst: Float = 0
        for (name, values) in straight {
            let o = try #require(resumed[name])
            for i in values.indices { worst = max(worst, abs(values[i] - o[i])) }
        }
        #expect(worst < 1e-5, "\(model): resumed on 2 ranks differs by \(worst)")

        let trained = try Checkpoint.TrainedModel(path: dir)
        #expect(trained.config.kind == model)
        let rows = try CriteoTSV.parse(try MappedFile(path: data), selecting: { $0 < 20 })
        let p = trained.predict(rows)
        #expect(p.count == 20 && p.allSatisfy { $0 > 0 && $0 < 1 })
        #expect(Set(p).count > 10, "\(model) predictions barely depend on the row: \(p)")
    }
}
