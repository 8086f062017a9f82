/// How the embedding tables are to be placed over the ranks (`--embedding-sharding`).
public enum EmbeddingSharding: String, CaseIterable, Sendable, Codable {
    /// Every table on every rank (data parallelism).
    case replicated
    /// Each table whole on one rank, the tables dealt to balance bytes.
    case table
    /// Every table's rows dealt over all ranks.
    case row
    /// Replicate what fits, shard the largest tables until every rank fits its memory.
    case auto
}

/// A plan that cannot fit the memory it was given, with the numbers.
public struct EmbeddingPlanError: Error, CustomStringConvertible {
    public let description: String
}

/// Chooses an `EmbeddingPlan` and checks it against each rank's memory.
///
/// A rank's bytes are `fixedBytes` (dense parameters, their gradients and optimizer state,
/// activations and step buffers: everything that does not grow with the tables) plus, for each
/// table row it stores, the row's values and optimizer state, plus for a replicated row the
/// gradient exchange's 4-byte slot. `auto` shards every large table (more than
/// 1/`largeTableFraction` of a rank's memory: N copies of it buy nothing), keeps the small ones
/// replicated (a lookup in them needs no exchange), and while the fullest rank does not fit,
/// shards the largest replicated table too. The sharded tables are dealt largest first: whole
/// onto the least loaded rank when a table is at most half a fair share of the sharded bytes and
/// the rank can take it, else row-wise over all ranks (which balances bytes and lookups alike).
/// `table` deals whole tables largest first to the least loaded rank; `row` shards every table row-wise.
public struct EmbeddingPlanner: Sendable {
    public var worldSize: Int
    /// Bytes per rank outside the tables.
    public var fixedBytes: Int
    /// Optimizer state per embedding row, in floats (Adam: 2 x dim, row-wise Adagrad: 1).
    public var stateFloatsPerRow: Int
    /// The memory each rank may use, in bytes.
    public var memoryPerRank: Int
    /// `auto` shards a table larger than 1/`largeTableFraction` of `memoryPerRank` even when
    /// everything would fit replicated (0: only what must be sharded to fit).
    public var largeTableFraction = 100
    /// How messages name `memoryPerRank` (nil: "--memory-per-rank" and the bytes).
    public var memoryDescription: String?

    public init(worldSize: Int, fixedBytes: Int, stateFloatsPerRow: Int, memoryPerRank: Int) {
        self.worldSize = worldSize
        self.fixedBytes = fixedBytes
        self.stateFloatsPerRow = stateFloatsPerRow
        self.memoryPerRank = memoryPerRank
    }

    /// Bytes one stored row costs its rank.
    func rowBytes(dim: Int, replicated: Bool) -> Int { (dim + stateFloatsPerRow) * 4 + (replicated ? 4 : 0) }

    /// Bytes `plan` puts on each rank.
    public func bytesPerRank(_ plan: EmbeddingPlan) -> [Int] {
        (0..<plan.worldSize).map { rank in
            fixedBytes + plan.placements.indices.reduce(0) { sum, t in
                sum + plan.localRows(table: t, rank: rank) * rowBytes(dim: plan.dim, replicated: plan.placements[t] == .replicated)
            }
        }
    }

    /// The plan for `tables` under `mode`, or an error with the numbers when some rank would
    /// exceed `memoryPerRank`.
    public func plan(_ tables: EmbeddingTables, mode: EmbeddingSharding) throws(EmbeddingPlanError) -> EmbeddingPlan {
        let rows = tables.rowsPerField, dim = tables.dim, n = worldSize
        var placements = [EmbeddingPlan.Placement](repeating: .replicated, count: rows.count)
        let bySize = rows.indices.sorted { rows[$0] > rows[$1] || (rows[$0] == rows[$1] && $0 < $1) }
        func make() -> EmbeddingPlan { EmbeddingPlan(worldSize: n, placements: placements, rowsPerTable: rows, dim: dim) }
        func leastLoaded(_ plan: EmbeddingPlan) -> Int {
            let bytes = bytesPerRank(plan)
            return bytes.indices.min { bytes[$0] < bytes[$1] }!
        }
        switch mode {
        case .replicated:
            break
        case .row:
            placements = Array(repeating: .row, count: rows.count)
        case .table:
            var load = [Int](repeating: 0, count: n)
            for t in bySize {
                let owner = load.indices.min { load[$0] < load[$1] }!
                placements[t] = .table(owner: owner)
                load[owner] += rows[t] * rowBytes(dim: dim, replicated: false)
            }
        case .auto:
            guard n > 1 else { break }
            func bytes(_ t: Int) -> Int { rows[t] * rowBytes(dim: dim, replicated: false) }
            // Deals the sharded tables, largest first: whole onto the least loaded rank when the
            // table is at most half a fair share of the sharded bytes (so whole tables balance to
            // within half a share) and that rank can take it, else row-wise.
            func deal() {
                let sharded = bySize.filter { placements[$0] != .replicated }
                let share = sharded.reduce(0) { $0 + bytes($1) } / n
                for t in sharded { placements[t] = .row }
                for t in sharded where 2 * bytes(t) <= share {
                    var trial = placements
                    trial[t] = .table(owner: 0)
                    let owner = leastLoaded(EmbeddingPlan(worldSize: n, placements: trial, rowsPerTable: rows, dim: dim))
                    trial[t] = .table(owner: owner)
                    if bytesPerRank(EmbeddingPlan(worldSize: n, placements: trial, rowsPerTable: rows, dim: dim))[owner] <= memoryPerRank {
                        placements[t] = .table(owner: owner)
                    }
                }
            }
            // Large tables are sharded whether or not they would fit replicated: N copies of them
            // buy nothing. Then, while the fullest rank does not fit, the largest of the rest.
            for t in bySize where largeTableFraction > 0 && bytes(t) > memoryPerRank / largeTableFraction { placements[t] = .row }
            deal()
            for t in bySize where placements[t] == .replicated {
                if bytesPerRank(make()).max()! <= memoryPerRank { break }
                placements[t] = .row
                deal()
            }
        }
        let plan = make()
        let bytes = bytesPerRank(plan)
        if let worst = bytes.indices.max(by: { bytes[$0] < bytes[$1] }), bytes[worst] > memoryPerRank {
            let tablesBytes = bytes[worst] - fixedBytes
            var message = "the model needs \(ByteCount.format(bytes[worst])) on rank \(worst) with --embedding-sharding \(mode.rawValue) "
                + "(\(ByteCount.format(tablesBytes)) of embedding rows and their optimizer state, \(ByteCount.format(fixedBytes)) of dense parameters, activations and buffers), "
                + "more than \(memoryDescription ?? "--memory-per-rank \(ByteCount.format(memoryPerRank))")"
            if fixedBytes > memoryPerRank {
                message += "; the part outside the tables alone does not fit"
            } else if mode == .replicated || mode == .table {
                message += "; use --embedding-sharding auto or row, or more ranks"
            } else {
                let needed = (rows.reduce(0, +) * rowBytes(dim: dim, replicated: false) + (memoryPerRank - fixedBytes) - 1)
                    / max(memoryPerRank - fixedBytes, 1)
                message += "; even sharded over \(n) rank(s); it needs at least \(needed) ranks of this size, or smaller tables (--hash-buckets, --embedding-dim)"
            }
            throw EmbeddingPlanError(description: message)
        }
        return plan
    }
}
