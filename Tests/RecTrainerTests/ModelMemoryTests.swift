import RecCore
import RecDistributed
@testable import RecTrainer
import Testing

/// The memory estimate made before allocating against what a training step then allocates.
struct ModelMemoryTests {
    static func config(_ kind: ModelKind) -> ModelConfig {
        var config = ModelConfig.preset(kind)
        config.hashBuckets = 1000
        if kind == .ncf || kind == .twoTower {
            config.userFields = [0]
            config.itemFields = [1]
        }
        return config
    }

    /// The model's activation bytes for any batch follow from the model built for 1 and 2 rows.
    @Test(arguments: ModelKind.allCases)
    func activationsAreTheModelsOwn(kind: ModelKind) {
        for batch in [1, 7, 300] {
            let built = makeModel(Self.config(kind), maxBatch: batch)
            let estimate = ModelMemory(model: Self.config(kind), maxBatch: batch)
            #expect(estimate.activationBytes == built.activationBytes, "\(kind) at \(batch) rows")
            #expect(estimate.denseParameters == built.layout.count)
        }
    }

    /// The estimate (the part outside the tables, plus the replicated rows as the planner counts
    /// them) covers every buffer the step allocates, and by no more than a third.
    @Test(arguments: ModelKind.allCases, [OptimizerKind.sgd, .adam, .rowwiseAdagrad])
    func theEstimateCoversTheStep(kind: ModelKind, optimizer: OptimizerKind) throws {
        for (batch, accumulate) in [(64, 1), (200, 3)] {
            var options = OptimizerConfig(kind: optimizer)
            options.accumulate = accumulate
            func allocated<Model: RecModel>(_ model: Model) -> Int {
                let step = TrainingStep(model: model, communicator: LocalCommunicator(), optimizer: options, loss: .bce,
                                        batchSize: batch, accumulate: accumulate)
                let parts = step.bufferBytes
                return parts.parameters + parts.gradients + parts.optimizerState + parts.activations
            }
            let actual = allocated(makeModel(Self.config(kind), maxBatch: batch))
            let memory = ModelMemory(model: Self.config(kind), maxBatch: batch)
            var estimate = memory.training(optimizer: options, worldSize: 1).total
            if let tables = memory.tables {
                let planner = EmbeddingPlanner(worldSize: 1, fixedBytes: estimate,
                                               stateFloatsPerRow: ModelMemory.stateFloats(optimizer, dim: tables.dim).row, memoryPerRank: .max)
                estimate = try planner.bytesPerRank(planner.plan(tables, mode: .replicated))[0]
            }
            #expect(estimate >= actual && estimate <= actual + actual / 3,
                    "\(kind) \(optimizer) batch \(batch) x \(accumulate): estimated \(estimate), allocated \(actual)")
        }
    }

    /// Sizes far beyond any machine saturate instead of overflowing.
    @Test func hugeSizesSaturate() {
        let memory = ModelMemory(model: Self.config(.dlrm), maxBatch: 1 << 62)
        #expect(memory.training(optimizer: OptimizerConfig(kind: .adam), worldSize: 4).total == .max)
        #expect(memory.inference.total == .max)
    }
}
