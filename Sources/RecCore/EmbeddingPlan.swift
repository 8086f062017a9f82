/// Where each embedding table lives over the ranks of a run (hybrid parallelism: the MLPs stay
/// data-parallel, the tables may be model-parallel).
///
/// - `.replicated`: every rank holds the whole table (the data-parallel default).
/// - `.table(owner:)`: the whole table lives on one rank.
/// - `.row`: the rows are dealt over all ranks cyclically: row r lives on rank r mod N, at
///   position r / N of that rank's part. Cyclic rather than in blocks, so that the frequent ids a
///   vocabulary numbers first spread over every rank.
///
/// A rank's own storage (`localRows(rank:)` rows of `dim`) holds the replicated tables first, in
/// table order (`replicatedRows` rows, at the same place on every rank, so their gradients can
/// be exchanged by row index as in pure data parallelism), then its parts of the sharded ones in
/// table order: the whole table when the rank owns it, its rows when the table is row-sharded.
/// `localBase(table:rank:)` is where a table's part begins. Row indices are 64-bit throughout, so
/// a table is limited by memory, not by 2^31.
public struct EmbeddingPlan: Sendable, Equatable, Codable, CustomStringConvertible {
    /// How one table is placed.
    public enum Placement: Sendable, Equatable, Codable {
        case replicated
        case table(owner: Int)
        case row
    }

    public let worldSize: Int
    /// One per table, in the model's table order.
    public let placements: [Placement]
    /// Rows of each table.
    public let rowsPerTable: [Int]
    /// Floats per row.
    public let dim: Int

    public init(worldSize: Int, placements: [Placement], rowsPerTable: [Int], dim: Int) {
        precondition(worldSize >= 1 && placements.count == rowsPerTable.count && dim >= 1)
        for p in placements {
            if case .table(let owner) = p { precondition(owner >= 0 && owner < worldSize, "owner \(owner) out of 0..<\(worldSize)") }
        }
        self.worldSize = worldSize
        self.placements = placements
        self.rowsPerTable = rowsPerTable
        self.dim = dim
    }

    /// Every table replicated: today's data parallelism.
    public static func replicated(_ tables: EmbeddingTables, worldSize: Int) -> EmbeddingPlan {
        EmbeddingPlan(worldSize: worldSize, placements: Array(repeating: .replicated, count: tables.fields),
                      rowsPerTable: tables.rowsPerField, dim: tables.dim)
    }

    /// Whether some table is not replicated (the step then exchanges rows by all-to-all).
    public var isSharded: Bool { placements.contains { $0 != .replicated } }

    /// Rows of table `table` stored on `rank`.
    public func localRows(table: Int, rank: Int) -> Int {
        let rows = rowsPerTable[table]
        switch placements[table] {
        case .replicated: return rows
        case .table(let owner): return owner == rank ? rows : 0
        case .row: return rank < rows ? (rows - rank + worldSize - 1) / worldSize : 0
        }
    }

    /// Rows `rank` stores over all tables.
    public func localRows(rank: Int) -> Int {
        (0..<placements.count).reduce(0) { $0 + localRows(table: $1, rank: rank) }
    }

    /// Rows of the replicated tables: the first rows of every rank's storage.
    public var replicatedRows: Int {
        zip(placements, rowsPerTable).reduce(0) { $0 + ($1.0 == .replicated ? $1.1 : 0) }
    }

    /// Where table `table`'s part begins in `rank`'s storage, in rows.
    public func localBase(table: Int, rank: Int) -> Int {
        let replicated = placements[table] == .replicated
        var base = replicated ? 0 : replicatedRows
        for t in 0..<table where (placements[t] == .replicated) == replicated {
            base += localRows(table: t, rank: rank)
        }
        return base
    }

    /// The rank holding row `row` of table `table` (nil: every rank, the table is replicated),
    /// and the row's index within that rank's part of the table.
    @inline(__always)
    public func locate(table: Int, row: Int) -> (owner: Int?, index: Int) {
        switch placements[table] {
        case .replicated: return (nil, row)
        case .table(let owner): return (owner, row)
        case .row: return (row % worldSize, row / worldSize)
        }
    }

    /// The row of table `table` that `rank`'s part holds at `index` (the inverse of `locate`).
    @inline(__always)
    public func row(table: Int, rank: Int, index: Int) -> Int {
        placements[table] == .row ? index * worldSize + rank : index
    }

    /// Bytes of embedding values `rank` stores.
    public func localBytes(rank: Int) -> Int { localRows(rank: rank) * dim * 4 }

    /// One line per run of consecutive tables of the same size and placement ("tables 0-12:
    /// 65536 rows x 16, row-wise over 2 ranks"), then one per rank with its rows and bytes.
    public var description: String {
        var lines: [String] = []
        func what(_ p: Placement) -> String {
            switch p {
            case .replicated: return "replicated on every rank"
            case .table(let owner): return "table-wise on rank \(owner)"
            case .row: return "row-wise over \(worldSize) ranks"
            }
        }
        var first = 0
        while first < placements.count {
            var last = first
            while last + 1 < placements.count && rowsPerTable[last + 1] == rowsPerTable[first]
                    && what(placements[last + 1]) == what(placements[first]) { last += 1 }
            let name = first == last ? "table \(first)" : "tables \(first)-\(last)"
            lines.append("  \(name): \(rowsPerTable[first]) rows x \(dim), \(what(placements[first]))")
            first = last + 1
        }
        for r in 0..<worldSize {
            lines.append("  rank \(r): \(localRows(rank: r)) rows, \(ByteCount.format(localBytes(rank: r))) of embedding values")
        }
        return lines.joined(separator: "\n")
    }
}

/// Byte counts for people.
public enum ByteCount {
    /// "1.5 GiB", "312.0 MiB", "4.0 KiB", "12 B".
    public static func format(_ bytes: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes), unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        guard unit > 0 else { return "\(bytes) B" }
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(units[unit])"
    }
}
