import Foundation
import RecCheckpoint
import RecCore
import RecData
import RecDistributed

/// Checkpoints of runs whose tables are sharded (`ShardedEmbeddings`), through rank 0 (the
/// funnel; when the ranks share the checkpoint directory each writes its own shard file instead:
/// `writePerRankCheckpoint`), and resuming from any checkpoint into sharded tables.
///
/// The funnel writes the same files as a replicated run's, in the same layout: each table whole
/// as `embedding.C<k>` and each embedding optimizer slot over all rows, in global row order. A
/// run resumes from either kind on any number of ranks and under any plan (each rank takes its
/// own rows of the new plan).
///
/// Rank 0 writes and reads the files; the sharded tables' rows travel between it and their
/// owners a chunk of rows at a time (`ShardedEmbeddings.collect` / `distribute`), so no shared
/// file system is needed and rank 0 holds one chunk of a sharded table, never the table. The
/// transfers follow one schedule every rank computes alike (`Checkpoint.ShardSchedule`); if
/// rank 0's writing fails part-way, it still completes the schedule before reporting, so no rank
/// is left in a collective.
extension Checkpoint {
    /// Rows per transfer: 256 Ki rows of 16 floats are 16 MiB.
    static let chunkRows = 1 << 18

    /// The transfers of one sharded checkpoint, in file order: each sharded table's values, then
    /// for each embedding optimizer slot each sharded table's state.
    struct ShardSchedule {
        struct Entry: Equatable { var slot: Int?; var table: Int; var rows: Range<Int> }
        let entries: [Entry]
        private(set) var next = 0

        init(sharding: ShardedEmbeddings, slots: Int) {
            var entries: [Entry] = []
            let sharded = sharding.plan.placements.indices.filter { sharding.plan.placements[$0] != .replicated }
            for slot in [nil] + (0..<slots).map(Optional.some) {
                for t in sharded {
                    for rows in sharding.chunks(table: t, chunk: Checkpoint.chunkRows) { entries.append(Entry(slot: slot, table: t, rows: rows)) }
                }
            }
            self.entries = entries
        }

        /// Runs the next transfer, which must be `expected`'s.
        mutating func take(_ expected: Entry) -> Entry {
            precondition(next < entries.count && entries[next] == expected, "sharded checkpoint transfers out of order")
            next += 1
            return expected
        }

        var remaining: ArraySlice<Entry> { entries[next...] }
    }

    /// This rank's per-row buffer for a schedule entry: the table storage, or an optimizer slot.
    static func localBuffer(_ entry: ShardSchedule.Entry, buffers: Buffers) -> (pointer: UnsafeMutablePointer<Float>, width: Int) {
        let sharding = buffers.sharding!
        guard let slot = entry.slot else { return (sharding.storage.pointer, sharding.dim) }
        let state = buffers.optimizer.stateSlots.embedding[slot]
        return (slotBase(state.buffer, buffers: buffers), state.perRow)
    }

    /// The first float of an embedding optimizer slot on this rank. A rank that holds no rows
    /// (a table of fewer rows than ranks, row-wise; fewer tables than ranks, table-wise) has
    /// empty slots without an address; it moves 0 rows of them, so the table storage's address,
    /// never read or written through here, stands in.
    static func slotBase(_ slot: UnsafeMutableBufferPointer<Float>, buffers: Buffers) -> UnsafeMutablePointer<Float> {
        slot.baseAddress ?? buffers.sharding!.storage.pointer
    }

    /// Rank 0's model tensor for table `t` of a sharded run: from its storage when replicated,
    /// else collected from the owners while the file is written.
    static func tableSource(_ t: Int, buffers: Buffers, schedule: UnsafeMutablePointer<ShardSchedule>,
                            chunk: UnsafeMutablePointer<Float>) -> SafeTensors.Source {
        let sharding = buffers.sharding!, tables = sharding.tables, dim = tables.dim
        let shape = [tables.rows(field: t), dim]
        if sharding.plan.placements[t] == .replicated {
            let base = sharding.plan.localBase(table: t, rank: 0)
            return SafeTensors.Source(name: "embedding.C\(t + 1)", shape: shape,
                                      values: UnsafeBufferPointer(start: sharding.storage.pointer + base * dim, count: shape[0] * dim))
        }
        return SafeTensors.Source(name: "embedding.C\(t + 1)", shape: shape) { write in
            try transfer(table: t, slot: nil, buffers: buffers, schedule: schedule, chunk: chunk, write: write)
        }
    }

    /// Rank 0's optimizer tensor for embedding slot `slot` over all tables, in global row order.
    static func stateSource(_ slot: Int, buffers: Buffers, schedule: UnsafeMutablePointer<ShardSchedule>,
                            chunk: UnsafeMutablePointer<Float>) -> SafeTensors.Source {
        let sharding = buffers.sharding!, tables = sharding.tables
        let state = buffers.optimizer.stateSlots.embedding[slot]
        return SafeTensors.Source(name: state.name, shape: [tables.rowCount * state.perRow]) { write in
            for t in 0..<tables.fields {
                if sharding.plan.placements[t] == .replicated {
                    let base = sharding.plan.localBase(table: t, rank: 0)
                    try write(UnsafeBufferPointer(start: state.buffer.baseAddress! + base * state.perRow, count: tables.rows(field: t) * state.perRow))
                } else {
                    try transfer(table: t, slot: slot, buffers: buffers, schedule: schedule, chunk: chunk, write: write)
                }
            }
        }
    }

    /// Rank 0: collects table `t`'s chunks of `slot` (nil: the values) and writes each.
    private static func transfer(table t: Int, slot: Int?, buffers: Buffers, schedule: UnsafeMutablePointer<ShardSchedule>,
                                 chunk: UnsafeMutablePointer<Float>, write: (UnsafeBufferPointer<Float>) throws -> Void) throws {
        let sharding = buffers.sharding!
        for rows in sharding.chunks(table: t, chunk: chunkRows) {
            let entry = schedule.pointee.take(ShardSchedule.Entry(slot: slot, table: t, rows: rows))
            let (local, width) = localBuffer(entry, buffers: buffers)
            try sharding.collect(table: t, rows: rows, from: local, width: width, into: chunk)
            try write(UnsafeBufferPointer(start: chunk, count: rows.count * width))
        }
    }

    /// Rank 0 writes a sharded run's checkpoint; the other ranks call `sendShards` at the same time.
    static func writeSharded(root: String, state: State, buffers: Buffers) throws -> String {
        let sharding = buffers.sharding!
        var schedule = ShardSchedule(sharding: sharding, slots: buffers.optimizer.stateSlots.embedding.count)
        let chunk = UnsafeMutablePointer<Float>.allocate(capacity: chunkRows * sharding.dim)
        defer { chunk.deallocate() }
        let result = Result {
            try withUnsafeMutablePointer(to: &schedule) { s in
                try write(root: root, state: state, buffers: buffers,
                          tables: (0..<sharding.tables.fields).map { tableSource($0, buffers: buffers, schedule: s, chunk: chunk) },
                          embeddingState: buffers.optimizer.stateSlots.embedding.indices.map { stateSource($0, buffers: buffers, schedule: s, chunk: chunk) })
            }
        }
        // Whatever happened, finish the transfers the other ranks are making.
        for entry in schedule.remaining {
            let (local, width) = localBuffer(entry, buffers: buffers)
            try sharding.collect(table: entry.table, rows: entry.rows, from: local, width: width, into: nil)
        }
        return try result.get()
    }

    /// Ranks other than 0: send this rank's rows and optimizer state while rank 0 writes.
    static func sendShards(buffers: Buffers) throws {
        let sharding = buffers.sharding!
        let schedule = ShardSchedule(sharding: sharding, slots: buffers.optimizer.stateSlots.embedding.count)
        for entry in schedule.entries {
            let (local, width) = localBuffer(entry, buffers: buffers)
            try sharding.collect(table: entry.table, rows: entry.rows, from: local, width: width, into: nil)
        }
    }

    // MARK: - Resuming

    /// Rank 0: checkpoint `dir`'s tables and embedding optimizer state (whole or in shard files),
    /// checked against this run's tables and optimizer.
    static func storedTables(_ dir: String, buffers: Buffers) throws -> CheckpointTables {
        try reported {
            try CheckpointTables(dir, tables: buffers.tables!, slots: buffers.optimizer.stateSlots.embedding.map { ($0.name, $0.perRow) },
                                 cause: "it was written for a different model configuration or with another --optimizer")
        }
    }

    /// Every rank: takes its rows of every table and embedding optimizer slot from checkpoint
    /// `dir` (read by rank 0, whichever way its tables were written; nil elsewhere), under this
    /// run's plan. Collective.
    static func receiveShards(from dir: String?, buffers: Buffers) throws {
        let sharding = buffers.sharding!, tables = sharding.tables
        let stored = try dir.map { try storedTables($0, buffers: buffers) }
        let slots = [(name: "embedding", width: tables.dim, buffer: sharding.storage.pointer)]
            + buffers.optimizer.stateSlots.embedding.map { ($0.name, $0.perRow, slotBase($0.buffer, buffers: buffers)) }
        let chunk = UnsafeMutablePointer<Float>.allocate(capacity: stored == nil ? 0 : chunkRows * (slots.map { $0.1 }.max() ?? 1))
        defer { chunk.deallocate() }
        for (base, width, local) in slots {
            for t in 0..<tables.fields {
                for rows in sharding.chunks(table: t, chunk: chunkRows) {
                    // Rank 0: the rows in place when the file holds them in order, else assembled.
                    let source = stored.map { stored in
                        stored.contiguous(base, table: t, rows: rows, width: width) ?? {
                            stored.read(base, table: t, rows: rows, width: width, into: chunk)
                            return UnsafePointer(chunk)
                        }()
                    }
                    try sharding.distribute(table: t, rows: rows, from: source, width: width, into: local)
                }
                stored?.releasePages()   // rank 0 keeps its own rows, not the whole checkpoint
            }
        }
    }

    /// Rank 0: a sharded checkpoint's dense tensors and dense optimizer state, after checking
    /// that its tables and embedding state have this model's shapes and that every value is
    /// finite (their rows move with `receiveShards`).
    static func loadDense(_ dir: String, state: State, into buffers: Buffers) throws {
        let tables = buffers.sharding!.tables
        try reported {
            try CheckpointDirectory.readModelTensors(dir, layout: buffers.layout, parameters: buffers.parameters, tables: tables,
                                                     embeddingTable: nil, cause: "it was written for a different model configuration")
        }
        let stored = try storedTables(dir, buffers: buffers)
        let path = dir + "/optimizer.safetensors"
        let file = try MappedFile(path: path)
        let (entries, metadata) = try reported { try SafeTensors.parseHeader(file.bytes, path: path) }
        let slots = buffers.optimizer.stateSlots
        let held = Set(entries.keys).subtracting(CheckpointTables.pieceNames(metadata))
        let expected = slots.dense.map { ($0.name, $0.buffer.count) } + (stored.isSharded ? [] : slots.embedding.map { ($0.name, tables.rowCount * $0.perRow) })
        guard held == Set(expected.map(\.0)) else {
            throw TrainingError.checkpoint(path: path, message: "optimizer state: it holds \(held.sorted()), this run's optimizer needs \(expected.map(\.0).sorted()); was it written with another --optimizer?")
        }
        for (name, count) in expected where entries[name]!.range.count != count * 4 {
            throw TrainingError.checkpoint(path: path, message: "optimizer state: \(name) has \(entries[name]!.range.count / 4) values, this model needs \(count)")
        }
        for slot in slots.dense { SafeTensors.copy(entries[slot.name]!, from: file.bytes, into: slot.buffer) }
        // Every value is checked here, before the rows travel: a collective cannot stop half-way.
        let model = try MappedFile(path: dir + "/model.safetensors")
        let (modelEntries, _) = try reported { try SafeTensors.parseHeader(model.bytes, path: dir + "/model.safetensors") }
        let tableNames = Set((0..<tables.fields).map { "embedding.C\($0 + 1)" })
        for (mapped, entries, name) in [(model, modelEntries.filter { !tableNames.contains($0.key) }, "model.safetensors"),
                                        (file, entries.filter { slots.dense.map(\.name).contains($0.key) }, "optimizer.safetensors")] {
            for (tensor, entry) in entries {
                let values = UnsafeBufferPointer(start: (mapped.bytes.baseAddress! + entry.range.lowerBound).assumingMemoryBound(to: Float.self),
                                                 count: entry.range.count / 4)
                try reported { try CheckpointDirectory.requireFinite(values, tensor: tensor, file: dir + "/" + name) }
            }
        }
        try reported {
            try stored.requireFinite("embedding", width: tables.dim)
            for slot in slots.embedding { try stored.requireFinite(slot.name, width: slot.perRow) }
        }
        do { try buffers.optimizer.restoreStep(state.optimizerStep) } catch {
            throw TrainingError.checkpoint(path: dir, message: "optimizer state: \(error)")
        }
    }
}
