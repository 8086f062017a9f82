import CIntrinsics
import RecCore

/// Summing embedding gradients per distinct row: the one first-appearance loop (`coalesce`), used
/// for a rank's own pairs and for what arrives from the other ranks.
extension GradientSync {
    /// Sums `local`'s pairs per distinct row, in order of first appearance. Writes either
    /// interleaved (row, values) records (`stride` floats each, see `row(of:)`) to `valuesOut`, or
    /// rows to `rowsOut` and values to `valuesOut`. Returns the number of distinct rows.
    func coalesceLocal(_ local: SparseGradient, rowsOut: UnsafeMutablePointer<Int>?,
                               valuesOut: UnsafeMutablePointer<Float>, interleaved: Bool) -> Int {
        let dim = self.dim, stride = interleaved ? self.stride : dim, lead = interleaved ? Self.rowFloats : 0
        let map = slotOfRow, pairRows = local.rows, pairValues = local.values
        var unique = 0
        coalesce(local.count, into: &unique, row: { pairRows[$0] }, values: { UnsafePointer(pairValues + $0 * dim) },
                 output: { valuesOut + $0 * stride + lead }) { slot, row in
            if interleaved { Self.setRow(row, of: valuesOut + slot * stride) } else { rowsOut![slot] = row }
        }
        // Reset the map for the next step.
        for i in 0..<unique {
            map[interleaved ? Self.row(of: valuesOut + i * stride) : rowsOut![i]] = 0
        }
        return unique
    }

    /// Floats an exchanged record's row takes: an Int64, so that the tables together may hold
    /// more than 2^31 rows.
    static let rowFloats = 2

    /// The row of the record at `record`.
    @inline(__always)
    static func row(of record: UnsafePointer<Float>) -> Int {
        Int(UnsafeRawPointer(record).loadUnaligned(as: Int64.self))
    }

    @inline(__always)
    static func setRow(_ row: Int, of record: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(record).storeBytes(of: Int64(row), as: Int64.self)
    }

    /// Sums `n` (row, values) items into per-row sums, in order of first appearance: item `i` has
    /// row `row(i)` and `dim` values at `values(i)`; the sum of the `k`th distinct row goes to
    /// `output(k)`, and `first(k, row)` is told when that row first appears. `unique` counts the
    /// distinct rows (it may start above 0 to continue an earlier call); the row map holds their
    /// slots until the caller resets it.
    @inline(__always)
    private func coalesce(_ n: Int, into unique: inout Int, row: (Int) -> Int, values: (Int) -> UnsafePointer<Float>,
                          output: (Int) -> UnsafeMutablePointer<Float>, first: (Int, Int) -> Void) {
        let map = slotOfRow, limit = embeddingRows, dim = self.dim
        for i in 0..<n {
            // The map is as large as the table: ask for a later item's slot early.
            if i + Self.ahead < n { rd_prefetch(map + row(i + Self.ahead)) }
            let r = row(i)
            precondition(r >= 0 && r < limit, "embedding row \(r) out of range")
            let slot = Int(map[r]) - 1
            if slot < 0 {
                map[r] = Int32(truncatingIfNeeded: unique + 1)
                first(unique, r)
                Self.copy(values(i), to: output(unique), dim)
                unique += 1
            } else {
                Self.add(values(i), to: output(slot), dim)
            }
        }
    }

    static let ahead = 16

    @inline(__always)
    static func copy(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, _ dim: Int) {
        if dim == 16 {
            UnsafeMutableRawPointer(dst).storeBytes(of: UnsafeRawPointer(src).loadUnaligned(as: SIMD16<Float>.self),
                                                    as: SIMD16<Float>.self)
        } else {
            for k in 0..<dim { dst[k] = src[k] }
        }
    }

    @inline(__always)
    static func add(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, _ dim: Int) {
        if dim == 16 {
            let sum = UnsafeRawPointer(dst).loadUnaligned(as: SIMD16<Float>.self)
                + UnsafeRawPointer(src).loadUnaligned(as: SIMD16<Float>.self)
            UnsafeMutableRawPointer(dst).storeBytes(of: sum, as: SIMD16<Float>.self)
        } else {
            for k in 0..<dim { dst[k] += src[k] }
        }
    }

    /// Merges the received blocks (.rows) or extracts the touched rows (.dense) into the output.
    func mergeReceived() throws {
        let t0 = MonotonicClock.nanoseconds()
        defer { timing.merging += MonotonicClock.nanoseconds() - t0 }
        let dim = self.dim, stride = self.stride, denseWidth = self.denseWidth
        let g = receive.pointer, v = values.pointer, map = slotOfRow
        var unique = 0
        switch embeddingExchange {
        case .rows:
            var pairs = 0
            for r in 0..<size { pairs += localCounts[r] }
            let distinct = rows
            if localSums {
                // (row, values) records, in rank order, each rank's block at its fixed place.
                for r in 0..<size {
                    let block = g + r * maxLocalPairs * stride
                    coalesce(localCounts[r], into: &unique, row: { Self.row(of: block + $0 * stride) },
                             values: { UnsafePointer(block + $0 * stride + Self.rowFloats) }, output: { v + $0 * dim },
                             first: { distinct[$0] = $1 })
                }
            } else {
                let pairRows = receiveRows
                coalesce(pairs, into: &unique, row: { pairRows[$0] }, values: { UnsafePointer(g + $0 * dim) },
                         output: { v + $0 * dim }, first: { distinct[$0] = $1 })
            }
            for i in 0..<unique { map[rows[i]] = 0 }
        case .dense:
            for row in 0..<embeddingRows {
                let src = g + row * denseWidth
                if src[dim] > 0 {
                    rows[unique] = row
                    (v + unique * dim).update(from: src, count: dim)
                    unique += 1
                }
            }
        case .none, .local:
            break
        }
        rowCount = unique
        traffic.globalRows = unique
    }
}
