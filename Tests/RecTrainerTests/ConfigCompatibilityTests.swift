import Foundation
import RecCore
@testable import RecTrainer
import Testing

/// trainer.json written before the optimization options existed still decodes, with the
/// defaults that ran then; the new options round-trip.
struct ConfigCompatibilityTests {
    @Test func optimizerConfigWithoutTheNewKeysDecodesToTheOldBehaviour() throws {
        let old = #"{"kind":"adam","learningRate":0.001,"momentum":0.9,"nesterov":false,"beta1":0.9,"beta2":0.999,"epsilon":1e-07,"initialAccumulator":0.1}"#
        let config = try JSONDecoder().decode(OptimizerConfig.self, from: Data(old.utf8))
        #expect(config == OptimizerConfig(kind: .adam))
        #expect(config.weightDecay == 0 && config.accumulate == 1 && config.clipNorm == nil && !config.scaleByWorldSize)
        #expect(config.schedule == LearningRateSchedule())
    }

    @Test func newOptionsRoundTrip() throws {
        var config = OptimizerConfig(kind: .rowwiseAdagrad, learningRate: 0.05)
        config.weightDecay = 0.01
        config.schedule = LearningRateSchedule(decay: .step, warmupSteps: 7)
        config.schedule.decayEvery = 11
        config.schedule.decayFactor = 0.5
        config.clipNorm = 2
        config.accumulate = 4
        config.scaleByWorldSize = true
        let decoded = try JSONDecoder().decode(OptimizerConfig.self, from: JSONEncoder().encode(config))
        #expect(decoded == config)
        var training = TrainingConfig(dataPath: "x", model: ModelConfig(kind: .mlp), optimizer: config)
        training.earlyStopPatience = 3
        training.earlyStopMinDelta = 0.001
        training.rankingK = 20
        training.selectionMetric = .ndcg
        #expect(try JSONDecoder().decode(TrainingConfig.self, from: JSONEncoder().encode(training)) == training)
    }
}
