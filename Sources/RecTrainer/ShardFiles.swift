import Foundation
import RecCheckpoint
import RecCore
import RecData
import RecDistributed

/// The tensors of a checkpoint with per-rank shard files (`CheckpointTables` reads them): which
/// of this rank's rows go where, as pieces of their tables with the global rows they hold.
extension Checkpoint {
    /// Tensors holding pieces of tables, and the files' `rows` metadata naming their rows.
    struct Pieces {
        var sources: [SafeTensors.Source] = []
        var rows: [String: [Int]] = [:]

        /// The `rows` metadata entry of a safetensors file (sorted keys: identical states give identical files).
        var metadata: [String: String] {
            guard let data = try? JSONSerialization.data(withJSONObject: rows, options: [.sortedKeys]) else { return [:] }
            return ["rows": String(decoding: data, as: UTF8.self)]
        }
    }

    /// This rank's pieces of `tables`: their values (`embedding.C<k>`) when `values`, and the
    /// state of each embedding optimizer slot (`<slot>.C<k>`) when `state`.
    static func pieces(tables: [Int], values: Bool, state: Bool, rank: Int, buffers: Buffers) -> Pieces {
        let sharding = buffers.sharding!, plan = sharding.plan
        var widths: [(base: String, width: Int, buffer: UnsafeMutablePointer<Float>)] = []
        if values { widths.append(("embedding", sharding.dim, sharding.storage.pointer)) }
        if state { widths += buffers.optimizer.stateSlots.embedding.map { ($0.name, $0.perRow, slotBase($0.buffer, buffers: buffers)) } }
        var pieces = Pieces()
        for (base, width, buffer) in widths {
            for t in tables {
                let rows: [Int]   // [first, stride, count]
                switch plan.placements[t] {
                case .replicated: rows = [0, 1, plan.rowsPerTable[t]]
                case .table(let owner): guard owner == rank else { continue }; rows = [0, 1, plan.rowsPerTable[t]]
                case .row: rows = [rank, plan.worldSize, plan.localRows(table: t, rank: rank)]
                }
                let name = "\(base).C\(t + 1)", start = buffer + plan.localBase(table: t, rank: rank) * width
                pieces.sources.append(SafeTensors.Source(name: name, shape: [rows[2], width], values: UnsafeBufferPointer(start: start, count: rows[2] * width)))
                pieces.rows[name] = rows
            }
        }
        return pieces
    }

    /// Rank 0: the dense files of a checkpoint with per-rank shard files, through `writer`: the
    /// replicated tables and their state are whole pieces in model.safetensors and
    /// optimizer.safetensors; the sharded ones are in the shard files, which carry model.safetensors'
    /// `shardSet` (`CheckpointTables.shardSetKey`).
    static func writeDenseFiles(_ writer: CheckpointWriter, state: State, buffers: Buffers, shardSet: String) throws {
        let plan = buffers.sharding!.plan
        let replicated = plan.placements.indices.filter { plan.placements[$0] == .replicated }
        let tables = pieces(tables: replicated, values: true, state: false, rank: 0, buffers: buffers)
        let embeddingState = pieces(tables: replicated, values: false, state: true, rank: 0, buffers: buffers)
        try writeFiles(writer, state: state, buffers: buffers, tables: tables.sources, embeddingState: embeddingState.sources,
                       modelRows: tables.metadata.merging([CheckpointTables.shardSetKey: shardSet]) { $1 }, optimizerRows: embeddingState.metadata)
    }

    /// Writes this rank's shard file of the checkpoint whose shard set is `shardSet` into its
    /// directory `directory` (fsynced) and returns its CRC-32 and size: its rows of every sharded
    /// table, then each embedding optimizer slot's.
    static func writeShardFile(in directory: String, rank: Int, shardSet: String, buffers: Buffers) throws -> (crc: UInt32, size: Int) {
        let plan = buffers.sharding!.plan
        let sharded = plan.placements.indices.filter { plan.placements[$0] != .replicated }
        let mine = pieces(tables: sharded, values: true, state: true, rank: rank, buffers: buffers)
        let name = CheckpointDirectory.shardName(rank: rank, of: plan.worldSize)
        let metadata = mine.metadata.merging(["format": "rec-dist-shard", CheckpointTables.shardSetKey: shardSet]) { $1 }
        return try reported {
            try CheckpointWriter.writeFile(directory + "/" + name) {
                try SafeTensors.write(mine.sources, metadata: metadata, to: $0)
            }
        }
    }
}
