import Foundation
import RecCore
import RecDistributed

extension Trainer {
    /// The run's model and, when the plan shards some table, its `ShardedEmbeddings`, with batch
    /// buffers for `maxBatch` rows.
    ///
    /// Nothing large is allocated before the model's bytes on one rank (`ModelMemory`: dense
    /// parameters, gradients and optimizer state, activations and step buffers at `maxBatch`
    /// rows, plus the tables' rows with their optimizer state as the plan places them,
    /// `EmbeddingPlanner`) are checked against `--memory-per-rank`, or by default the smallest
    /// over the ranks of the host's available memory divided by the ranks on the host. A model
    /// that cannot fit is refused here with the numbers. Every rank computes the same plan.
    func placeEmbeddings(maxBatch: Int) throws -> (model: any RecModel, sharding: ShardedEmbeddings?) {
        let memory = try agreedMemoryPerRank()
        let described = ModelMemory.memoryDescription(memory: memory, given: config.memoryPerRank != nil)
        let mode = config.embeddingSharding ?? .replicated
        guard let (plan, planner) = try ModelMemory(model: config.model, maxBatch: maxBatch)
            .plan(optimizer: config.optimizer, worldSize: worldSize, memory: memory, memoryDescription: described, mode: mode,
                  batchFlag: "--batch-size \(config.batchSize) (a batch never exceeds the rows a rank can fill)"),
            let tables = config.model.modelTables else {
            return (makeModel(config.model, maxBatch: maxBatch), nil)
        }
        if rank == 0 && (mode != .replicated || plan.isSharded) {
            let bytes = planner.bytesPerRank(plan)
            logger.info("embedding plan (--embedding-sharding \(mode.rawValue), \(ByteCount.format(memory)) per rank):\n\(plan.description)\n  needs per rank: \(bytes.map { ByteCount.format($0) }.joined(separator: ", ")) (tables, optimizer state and the rest)")
        }
        guard plan.isSharded else { return (makeModel(config.model, maxBatch: maxBatch), nil) }
        // The model with working tables has the replicated model's layout and activations, and
        // allocates no table.
        let working = makeModel(config.model.withWorkingTables(rows: maxBatch), maxBatch: maxBatch)
        let sharding = ShardedEmbeddings(tables: tables, plan: plan, columns: config.model.tableFields,
                                         width: config.model.categoricalFields, communicator: communicator,
                                         capacity: maxBatch, accumulate: config.optimizer.accumulate)
        return (working, sharding)
    }

    /// `--memory-per-rank`, or the least over all ranks of the host's available memory divided
    /// by the ranks on the host (Open MPI's and Slurm's local rank counts; 1 when unknown).
    func agreedMemoryPerRank() throws -> Int {
        if let memory = config.memoryPerRank { return memory }
        let mine = Double(ModelMemory.availableToThisRank().bytes)
        return Int(-(try communicator.allreduceMax([-mine]))[0])
    }
}
