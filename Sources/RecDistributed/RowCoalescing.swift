import CIntrinsics
import RecCore

/// Summing embedding gradients per distinct row: the one first-appearance loop (`coalesce`), used
/// for a rank's own pairs and for what arrives from the other ranks.
extension GradientSync {
    /// Sums `local`'s pairs per distinct row, in order of first appearance. Writes either
    /// interleaved (row bits, values) records to `valuesOut`, or rows to `rowsOut` and values to
    /// `valuesOut`. Returns the number of distinct rows.
    func coalesceLocal(_ local: SparseGradient, rowsOut: UnsafeMutablePointer<Int32>?,
                               valuesOut: UnsafeMutablePointer<Float>, interleaved: Bool) -> Int {
        let dim = self.dim, stride = interleaved ? self.stride : dim, lead = interleaved ? 1 : 0
        let map = slotOfRow, pairRows = local.rows, pairValues = local.values
        var unique = 0
        coalesce(local.count, into: &unique, row: { pairRows[$0] }, values: { UnsafePointer(pairValues + $0 * dim) },
                 output: { valuesOut + $0 * stride + lead }) { slot, row in
            if interleaved { valuesOut[slot * stride] = Float(bitPattern: UInt32(bitPattern: row)) } else { rowsOut![slot] = row }
        }
        // Reset the map for the next step.
        for i in 0..<unique {
            let row = interleaved ? Int(Int32(bitPattern: valuesOut[i * stride].bitPattern)) : Int(rowsOut![i])
            map[row] = -1
        }
        return unique
    }

    /// Sums `n` (row, values) items into per-row sums, in order of first appearance: item `i` has
    /// row `row(i)` and `dim` values at `values(i)`; the sum of the `k`th distinct row goes to
    /// `output(k)`, and `first(k, row)` is told when that row first appears. `unique` counts the
    /// distinct rows (it may start above 0 to continue an earlier call); the row map holds their
    /// slots until the caller resets it.
    @inline(__always)
    private func coalesce(_ n: Int, into unique: inout Int, row: (Int) -> Int32, values: (Int) -> UnsafePointer<Float>,
                          output: (Int) -> UnsafeMutablePointer<Float>, first: (Int, Int32) -> Void) {
        let map = slotOfRow, limit = embeddingRows, dim = self.dim
        for i in 0..<n {
            // The map is as large as the table: ask for a later item's slot early.
            if i + Self.ahead < n { rd_prefetch(map + Int(row(i + Self.ahead))) }
            let row32 = row(i)
            let r = Int(row32)
            precondition(r >= 0 && r < limit, "embedding row \(r) out of range")
            let slot = Int(map[r])
            if slot < 0 {
                map[r] = Int32(truncatingIfNeeded: unique)
                first(unique, row32)
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
        let dim = self.dim, stride = self.stride
        let g = receive.pointer, v = values.pointer, map = slotOfRow
        var unique = 0
        switch embeddingExchange {
        case .rows:
            var pairs = 0
            for r in 0..<size { pairs += localCounts[r] }
            let distinct = rows
            if localSums {
                // (row bits, values) records, in rank order, each rank's block at its fixed place.
                for r in 0..<size {
                    let block = g + r * maxLocalPairs * stride
                    coalesce(localCounts[r], into: &unique, row: { Int32(bitPattern: block[$0 * stride].bitPattern) },
                             values: { UnsafePointer(block + $0 * stride + 1) }, output: { v + $0 * dim }, first: { distinct[$0] = $1 })
                }
            } else {
                let pairRows = receiveRows
                coalesce(pairs, into: &unique, row: { pairRows[$0] }, values: { UnsafePointer(g + $0 * dim) },
                         output: { v + $0 * dim }, first: { distinct[$0] = $1 })
            }
            for i in 0..<unique { map[Int(rows[i])] = -1 }
        case .dense:
            for row in 0..<embeddingRows {
                let src = g + row * stride
                if src[dim] > 0 {
                    rows[unique] = Int32(truncatingIfNeeded: row)
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
