import RecCore

/// Makes every rank's gradients the global batch's gradients.
///
/// Dense gradients: one in-place allreduce-sum over the flat buffer (the 1/globalBatch scale is
/// folded into the loss gradient, so the sum is the average). Embedding gradients: each rank's
/// (row, gradient) pairs are allgathered in rank order (Horovod's sparse allreduce) and coalesced
/// into distinct rows with summed gradients, identically on every rank. Because rank r holds the
/// r-th block of each global batch, the gathered order is the global example order for any N.
public final class GradientSync {
    public let communicator: any Communicator
    public let dim: Int
    /// Floats per gathered pair: the row (bit pattern) followed by `dim` gradient values.
    private let stride: Int
    private let send: FloatBuffer
    private let receive: FloatBuffer
    private let slotOfRow: UnsafeMutablePointer<Int32>
    private let embeddingRows: Int
    /// Coalesced output: distinct rows, in order of first appearance.
    public let rows: UnsafeMutablePointer<Int32>
    /// Coalesced output: (rowCount, dim) summed gradients.
    public let values: FloatBuffer
    public private(set) var rowCount = 0
    private var counts: [Double]

    /// - Parameters:
    ///   - maxLocalPairs: the most (row, gradient) pairs one rank produces per step.
    public init(communicator: any Communicator, embeddingRows: Int, dim: Int, maxLocalPairs: Int) {
        self.communicator = communicator
        self.dim = dim
        self.embeddingRows = embeddingRows
        stride = dim + 1
        let n = communicator.size
        send = FloatBuffer(count: maxLocalPairs * stride)
        receive = FloatBuffer(count: n * maxLocalPairs * stride)
        slotOfRow = .allocate(capacity: max(embeddingRows, 1))
        slotOfRow.initialize(repeating: -1, count: max(embeddingRows, 1))
        let maxRows = max(min(n * maxLocalPairs, embeddingRows), 1)
        rows = .allocate(capacity: maxRows)
        rows.initialize(repeating: 0, count: maxRows)
        values = FloatBuffer(count: maxRows * dim)
        counts = Array(repeating: 0, count: n)
    }

    deinit {
        slotOfRow.deallocate()
        rows.deallocate()
    }

    /// Sums `gradients` over all ranks, in place.
    public func allreduce(_ gradients: UnsafeMutableBufferPointer<Float>) throws {
        try communicator.allreduceSum(gradients)
    }

    /// Gathers every rank's sparse pairs and coalesces them into `rows`/`values`/`rowCount`.
    public func exchange(_ local: SparseGradient) throws {
        precondition(local.dim == dim && local.count * stride <= send.count)
        let n = communicator.size, me = communicator.rank
        // Pack (row, gradient) pairs.
        let s = send.pointer
        for i in 0..<local.count {
            s[i * stride] = Float(bitPattern: UInt32(bitPattern: local.rows[i]))
            (s + i * stride + 1).update(from: local.values + i * dim, count: dim)
        }
        for r in 0..<n { counts[r] = r == me ? Double(local.count) : 0 }
        try counts.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0) }
        var byteCounts = [Int](repeating: 0, count: n), displacements = [Int](repeating: 0, count: n)
        var total = 0
        for r in 0..<n {
            byteCounts[r] = Int(counts[r]) * stride * 4
            displacements[r] = total
            total += byteCounts[r]
        }
        precondition(total <= receive.count * 4, "sparse exchange overflow")
        try communicator.allgatherv(UnsafeRawBufferPointer(start: s, count: local.count * stride * 4),
                                    into: UnsafeMutableRawBufferPointer(start: receive.pointer, count: receive.count * 4),
                                    counts: byteCounts, displacements: displacements)
        coalesce(pairs: total / (stride * 4))
    }

    private func coalesce(pairs: Int) {
        let g = receive.pointer, v = values.pointer
        var unique = 0
        for i in 0..<pairs {
            let row = Int(Int32(bitPattern: g[i * stride].bitPattern))
            precondition(row >= 0 && row < embeddingRows, "embedding row \(row) out of range")
            let src = g + i * stride + 1
            var slot = Int(slotOfRow[row])
            if slot < 0 {
                slot = unique
                slotOfRow[row] = Int32(slot)
                rows[slot] = Int32(row)
                unique += 1
                (v + slot * dim).update(from: src, count: dim)
            } else {
                let dst = v + slot * dim
                for k in 0..<dim { dst[k] += src[k] }
            }
        }
        for i in 0..<unique { slotOfRow[Int(rows[i])] = -1 }
        rowCount = unique
    }
}
