import Foundation
import RecCore
import RecDistributed

extension Trainer {
    /// The run's model and, when the plan shards some table, its `ShardedEmbeddings`.
    ///
    /// The plan is made before the tables are allocated, from what one rank would hold
    /// (`EmbeddingPlanner`): the tables' rows with their optimizer state, plus the parts that do
    /// not grow with them (dense parameters, gradients and state, activations, step buffers),
    /// against `--memory-per-rank`, or by default the smallest over the ranks of the host's
    /// available memory divided by the ranks on the host. A plan that cannot fit is refused here,
    /// with the numbers, before any large allocation. Every rank computes the same plan.
    func placeEmbeddings(maxBatch: Int) throws -> (model: any RecModel, sharding: ShardedEmbeddings?) {
        guard let tables = config.model.modelTables else { return (makeModel(config.model, maxBatch: maxBatch), nil) }
        let mode = config.embeddingSharding ?? .replicated
        // The model with working tables has the replicated model's layout and activations, and
        // allocates no table.
        let working = makeModel(config.model.withWorkingTables(rows: maxBatch), maxBatch: maxBatch)
        let kind = config.optimizer.kind
        let denseSlots: Int, rowSlots: Int
        switch kind {
        case .sgd: (denseSlots, rowSlots) = (0, 0)
        case .momentum, .adagrad: (denseSlots, rowSlots) = (1, tables.dim)
        case .rowwiseAdagrad: (denseSlots, rowSlots) = (1, 1)
        case .adam, .adamw: (denseSlots, rowSlots) = (2, 2 * tables.dim)
        }
        let pairs = maxBatch * tables.fields * config.optimizer.accumulate
        let fixed = working.layout.count * 4 * (2 + denseSlots) + working.activationBytes
            + pairs * (tables.dim + 1) * 4 * 4 + maxBatch * tables.fields * tables.dim * 4
        let memory = try agreedMemoryPerRank()
        let planner = EmbeddingPlanner(worldSize: worldSize, fixedBytes: fixed, stateFloatsPerRow: rowSlots, memoryPerRank: memory)
        let plan: EmbeddingPlan
        do {
            plan = try planner.plan(tables, mode: mode)
        } catch {
            let source = config.memoryPerRank == nil ? " (the host's available memory over its ranks; set --memory-per-rank to say otherwise)" : ""
            throw TrainingError.modelConfig("\(error.description)\(source)")
        }
        if rank == 0 && (mode != .replicated || plan.isSharded) {
            let bytes = planner.bytesPerRank(plan)
            logger.info("embedding plan (--embedding-sharding \(mode.rawValue), \(ByteCount.format(memory)) per rank):\n\(plan.description)\n  needs per rank: \(bytes.map { ByteCount.format($0) }.joined(separator: ", ")) (tables, optimizer state and the rest)")
        }
        guard plan.isSharded else { return (makeModel(config.model, maxBatch: maxBatch), nil) }
        let sharding = ShardedEmbeddings(tables: tables, plan: plan, columns: config.model.tableFields,
                                         width: config.model.categoricalFields, communicator: communicator,
                                         capacity: maxBatch, accumulate: config.optimizer.accumulate)
        return (working, sharding)
    }

    /// `--memory-per-rank`, or the least over all ranks of the host's available memory divided
    /// by the ranks on the host (Open MPI's and Slurm's local rank counts; 1 when unknown).
    func agreedMemoryPerRank() throws -> Int {
        if let memory = config.memoryPerRank { return memory }
        let environment = ProcessInfo.processInfo.environment
        let local = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"]
            .lazy.compactMap { environment[$0].flatMap { Int($0) } }.first ?? 1
        let available = ResidentMemory.availableBytes() ?? Int(ProcessInfo.processInfo.physicalMemory)
        let mine = Double(available / max(local, 1))
        return Int(-(try communicator.allreduceMax([-mine]))[0])
    }
}
