import RecCore

/// Moving whole tables between the ranks that store them and rank 0, for checkpoints: rank 0
/// writes and reads the files (so no shared file system is needed), a bounded range of rows at a
/// time (so rank 0 never holds more than that range of a sharded table).
///
/// A per-row buffer is laid out like `storage`: `width` floats per stored row (`dim` for the
/// values and most optimizer state, 1 for row-wise Adagrad's accumulator).
extension ShardedEmbeddings {
    /// The positions in `rank`'s part of table `table` of the rows in `rows` it stores: a
    /// contiguous range (cyclic row sharding keeps a range of rows contiguous on every rank).
    func localRange(table: Int, rows: Range<Int>, rank: Int) -> Range<Int> {
        switch plan.placements[table] {
        case .replicated: return rows
        case .table(let owner): return owner == rank ? rows : 0..<0
        case .row:
            func firstIndex(atOrAbove row: Int) -> Int { max(0, (row - rank + size - 1) / size) }
            let lower = firstIndex(atOrAbove: rows.lowerBound), upper = firstIndex(atOrAbove: rows.upperBound)
            return lower..<max(lower, upper)
        }
    }

    /// Collects rows `rows` of sharded table `table` from the ranks storing them into rank 0's
    /// `out` ((rows.count, width), in row order; nil on the other ranks, or on rank 0 to discard).
    /// `local`: this rank's per-row buffer. Collective.
    public func collect(table: Int, rows: Range<Int>, from local: UnsafePointer<Float>, width: Int,
                        into out: UnsafeMutablePointer<Float>?) throws {
        precondition(plan.placements[table] != .replicated, "replicated tables are whole on rank 0")
        let mine = localRange(table: table, rows: rows, rank: rank)
        let bytes = width * 4
        for r in 0..<size {
            sendCounts[r] = r == 0 ? mine.count * bytes : 0
            sendOffsets[r] = 0
            receiveCounts[r] = rank == 0 ? localRange(table: table, rows: rows, rank: r).count * bytes : 0
            receiveOffsets[r] = r == 0 ? 0 : receiveOffsets[r - 1] + receiveCounts[r - 1]
        }
        let received = rank == 0 ? rows.count : 0
        replies.reserve(received * width)
        try communicator.alltoallv(UnsafeRawBufferPointer(start: local + (bases[rank][table] + mine.lowerBound) * width, count: mine.count * bytes),
                                   sendCounts: UnsafeBufferPointer(start: sendCounts, count: size),
                                   sendDisplacements: UnsafeBufferPointer(start: sendOffsets, count: size),
                                   into: UnsafeMutableRawBufferPointer(start: replies.pointer, count: received * bytes),
                                   receiveCounts: UnsafeBufferPointer(start: receiveCounts, count: size),
                                   receiveDisplacements: UnsafeBufferPointer(start: receiveOffsets, count: size))
        guard rank == 0, let out else { return }
        // Rank r's block holds its rows of the range in order; put each in its place.
        let parts = replies.pointer
        for r in 0..<size {
            let range = localRange(table: table, rows: rows, rank: r)
            let block = parts + receiveOffsets[r] / 4
            for (k, index) in range.enumerated() {
                let row = plan.row(table: table, rank: r, index: index)
                (out + (row - rows.lowerBound) * width).update(from: block + k * width, count: width)
            }
        }
    }

    /// The reverse of `collect`: rank 0's rows `rows` of table `table` (`source`, (rows.count,
    /// width) in row order; nil on the other ranks) go to the ranks that store them, into their
    /// per-row buffer `local`. A replicated table's rows go to every rank. Collective.
    public func distribute(table: Int, rows: Range<Int>, from source: UnsafePointer<Float>?, width: Int,
                           into local: UnsafeMutablePointer<Float>) throws {
        let destination = local + (bases[rank][table] + localRange(table: table, rows: rows, rank: rank).lowerBound) * width
        if plan.placements[table] == .replicated {
            if rank == 0 { destination.update(from: source!, count: rows.count * width) }
            try communicator.broadcast(UnsafeMutableBufferPointer(start: destination, count: rows.count * width), root: 0)
            return
        }
        let bytes = width * 4
        let sending = rank == 0 ? rows.count : 0
        replies.reserve(sending * width)
        for r in 0..<size {
            sendCounts[r] = rank == 0 ? localRange(table: table, rows: rows, rank: r).count * bytes : 0
            sendOffsets[r] = r == 0 ? 0 : sendOffsets[r - 1] + sendCounts[r - 1]
            receiveCounts[r] = r == 0 ? localRange(table: table, rows: rows, rank: rank).count * bytes : 0
            receiveOffsets[r] = 0
        }
        if rank == 0, let source {
            // Each rank's rows of the range, in its order, in its block.
            for r in 0..<size {
                let block = replies.pointer + sendOffsets[r] / 4
                for (k, index) in localRange(table: table, rows: rows, rank: r).enumerated() {
                    let row = plan.row(table: table, rank: r, index: index)
                    (block + k * width).update(from: source + (row - rows.lowerBound) * width, count: width)
                }
            }
        }
        try communicator.alltoallv(UnsafeRawBufferPointer(start: replies.pointer, count: sending * bytes),
                                   sendCounts: UnsafeBufferPointer(start: sendCounts, count: size),
                                   sendDisplacements: UnsafeBufferPointer(start: sendOffsets, count: size),
                                   into: UnsafeMutableRawBufferPointer(start: destination, count: receiveCounts[0]),
                                   receiveCounts: UnsafeBufferPointer(start: receiveCounts, count: size),
                                   receiveDisplacements: UnsafeBufferPointer(start: receiveOffsets, count: size))
    }

    /// The row ranges (at most `chunk` rows each) checkpoints move table `table` in.
    public func chunks(table: Int, chunk: Int = 1 << 20) -> [Range<Int>] {
        stride(from: 0, to: tables.rows(field: table), by: chunk).map { $0..<min($0 + chunk, tables.rows(field: table)) }
    }
}
