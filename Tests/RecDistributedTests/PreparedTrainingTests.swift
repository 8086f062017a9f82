import Foundation
import Logging
import RecCore
import RecData
import RecDistributed
import RecDistributedTesting
import RecInference
import RecTrainer
import Testing

/// Training on prepared datasets, on in-process ranks.
struct PreparedTrainingTests {
    static func scratch() throws -> String {
        let dir = NSTemporaryDirectory() + "rec-dist-prepared-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Trains on `ranks` in-process ranks and returns the checkpoint's tensors.
    static func train(data: String, model: ModelKind, ranks: Int, globalBatch: Int, steps: Int,
                      shuffle: Bool = true, hashBuckets: Int = 97) throws -> [String: [Float]] {
        let checkpoint = try scratch() + "/ck"
        _ = try InProcessGroup.run(size: ranks) { comm -> Int in
            var modelConfig = ModelConfig(kind: model)
            modelConfig.hashBuckets = hashBuckets
            modelConfig.hidden = [16]
            modelConfig.bottom = [32, 16]
            modelConfig.top = [32]
            var config = TrainingConfig(dataPath: data, model: modelConfig, optimizer: OptimizerConfig(kind: .adam))
            config.evalFraction = 0
            config.batchSize = globalBatch / ranks
            config.steps = steps
            config.checkpointDir = checkpoint
            var options = PreparedDataOptions()
            options.shuffle = shuffle
            options.prefetch = 3
            config.preparedData = options
            var logger = Logger(label: "test")
            logger.logLevel = .error
            return try Trainer(config: try config.resolvingPreparedData(), communicator: comm, logger: logger).run().steps
        }
        let (_, tensors) = try Checkpoint.readModel(at: checkpoint)
        return Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0.values) })
    }

    static func maxDifference(_ a: [String: [Float]], _ b: [String: [Float]]) -> Float {
        #expect(Set(a.keys) == Set(b.keys))
        var worst: Float = 0
        for (name, x) in a {
            guard let y = b[name] else { continue }
            #expect(x.count == y.count, "\(name)")
            for i in 0..<min(x.count, y.count) { worst = max(worst, abs(x[i] - y[i])) }
        }
        return worst
    }

    /// The same global batch gives the same model on 1, 2 and 3 ranks from a prepared dataset with
    /// shuffled epochs (25 steps of 12 over 130 rows cross two epoch boundaries).
    @Test(arguments: [ModelKind.mlp, .dlrm])
    func sameModelForOneTwoThreeRanks(model: ModelKind) throws {
        let dir = try Self.scratch()
        let raw = dir + "/synth.tsv"
        try SynthGenerator(seed: 5).write(rows: 130, to: raw, probabilitiesPath: nil)
        var options = PrepareOptions(format: .criteo, inputs: [raw], output: dir + "/prepared")
        options.validFraction = 0.05
        options.testFraction = 0
        options.encoding = .vocabulary(minCount: 1)
        _ = try Preparer.run(options)
        let one = try Self.train(data: dir + "/prepared", model: model, ranks: 1, globalBatch: 12, steps: 25)
        for n in [2, 3] {
            let other = try Self.train(data: dir + "/prepared", model: model, ranks: n, globalBatch: 12, steps: 25)
            let diff = Self.maxDifference(one, other)
            #expect(diff < 1e-5, "\(model): N=\(n) differs by \(diff)")
        }
        let unshuffled = try Self.train(data: dir + "/prepared", model: model, ranks: 1, globalBatch: 12, steps: 25, shuffle: false)
        #expect(Self.maxDifference(one, unshuffled) > 1e-3, "shuffling changes the batches")
    }

    /// Prepared Criteo (hashed ids, log1p at prepare time, every row in train, no shuffling)
    /// trains exactly the model the raw TSV trains: the same ids, the same transformed values,
    /// the same batches.
    @Test(arguments: [ModelKind.mlp, .dlrm])
    func preparedCriteoTrainsTheSameModelAsRawTSV(model: ModelKind) throws {
        let dir = try Self.scratch()
        let raw = dir + "/synth.tsv"
        try SynthGenerator(seed: 9).write(rows: 200, to: raw, probabilitiesPath: nil)
        var options = PrepareOptions(format: .criteo, inputs: [raw], output: dir + "/prepared")
        options.validFraction = 0
        options.testFraction = 0
        options.encoding = .hash(buckets: 97)
        _ = try Preparer.run(options)
        let fromTSV = try Self.train(data: raw, model: model, ranks: 2, globalBatch: 16, steps: 20)
        let fromPrepared = try Self.train(data: dir + "/prepared", model: model, ranks: 2, globalBatch: 16, steps: 20, shuffle: false)
        #expect(Self.maxDifference(fromTSV, fromPrepared) == 0)
    }
}
