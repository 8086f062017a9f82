import Foundation
import Logging
import RecCore
import RecData
import RecDistributed
import RecDistributedTesting
import RecInference
import RecTrainer
import Testing

/// The direction of the implicit-feedback quality targets, fast: ncf trained briefly on
/// MovieLens 100K (leave-last-out, 99 sampled negatives per user) ranks the held-out items
/// better than the most-popular-items baseline. The full-length runs and their figures are in
/// docs/quality.md. Skipped when the shared data is not on this machine.
struct QualityTests {
    static let movielens = "/work/shared/data/movielens-100k/u.data"

    static func prepareMovieLens() throws -> String {
        let dir = NSTemporaryDirectory() + "rec-dist-quality-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var options = PrepareOptions(format: .movielens100k, inputs: [movielens], output: dir + "/ml100k")
        options.label = LabelRule(column: "rating", comparison: .greaterOrEqual, threshold: 1)   // every rating is an interaction
        options.negatives = 4
        _ = try Preparer.run(options)
        return dir + "/ml100k"
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: QualityTests.movielens)))
    func ncfBeatsMostPopularOnMovieLens() throws {
        let data = try Self.prepareMovieLens()
        var model = ModelConfig.preset(.ncf)
        model.embeddingDim = 16
        var config = TrainingConfig(dataPath: data, model: model, optimizer: OptimizerConfig(kind: .adam))
        config.batchSize = 256
        config.epochs = 2
        var logger = Logger(label: "test")
        logger.logLevel = .error
        let result = try Trainer(config: try config.resolvingPreparedData(), communicator: LocalCommunicator(),
                                 logger: logger).run()
        let e = try #require(result.finalEvaluation)
        let ncf = (hitRate: try #require(e.hit_rate_at_10), ndcg: try #require(e.ndcg_at_10))
        let popular = try PopularityBaseline.evaluate(path: data, split: "valid")
        #expect(popular.groups == 943)
        // Most-popular is a real baseline (far above the 0.1 of random ranking), and ncf beats it.
        #expect(popular.hitRate > 0.3, "most-popular HR@10 \(popular.hitRate)")
        #expect(ncf.hitRate > popular.hitRate + 0.05, "ncf HR@10 \(ncf.hitRate) vs most-popular \(popular.hitRate)")
        #expect(ncf.ndcg > popular.ndcg + 0.03, "ncf NDCG@10 \(ncf.ndcg) vs most-popular \(popular.ndcg)")
    }
}
