import CIntrinsics
import RecCore

/// Makes every rank's gradients the global batch's gradients, overlapping the communication with
/// the backward pass where it can.
///
/// **Dense gradients** (the flat buffer: the layout's parameters, then whatever control values
/// the caller appends to be summed with them, such as the step's loss and the trainer's stop and
/// checkpoint flags) are cut into buckets of whole tensors, about `bucketBytes` each, counted from
/// the end of the layout, and at most `maxBuckets` (a deep model with small buckets gets larger
/// ones, so the collectives in flight stay within what a communicator can hold): a model's backward pass finishes its layers in decreasing layout order, so each bucket is final
/// as soon as the backward pass of its layers is done, and its allreduce starts then
/// (`denseFinal(from:)`), in place. The 1/globalBatch scale is folded into the loss gradient, so
/// the sum is the average.
///
/// **Embedding gradients** (one (row, gradient) pair per example and field) are exchanged in one
/// of three ways, chosen once from the sizes:
///
/// - `.local` (1 rank): nothing to exchange; pairs are summed per distinct row.
/// - `.rows`: each rank sums its own pairs per distinct row (`localSums`, the default), then
///   every rank's rows and sums are allgathered (their count first, then (row, sums) records in
///   one allgatherv, the row as 64 bits: Horovod's sparse allreduce of deduplicated ids and
///   values) and summed per distinct row in rank order. Each rank sums its pairs straight into
///   its own fixed block of the receive buffer, which the allgatherv sends in place. A rank
///   never sends more than its pairs, and sends fewer whenever a row repeats in its batch
///   (dlrm at batch 1024: 6.7 K rows instead of 26.6 K pairs, 4x fewer bytes and 4x less
///   merging; docs/performance.md), so it is on by default;
///   the sums associate as (rank 0's partial) + (rank 1's partial), as on the `.dense` path.
///   With `localSums` off, the pairs go as they are, straight from the model's buffers, and
///   each row's sum is in global example order (kept to compare, and for `bench --no-local-sums`).
/// - `.dense`: when `ranks x maxLocalPairs` exceeds the table's rows, a gather could move more
///   than the whole table, so each rank scatters its summed rows into a dense (rows, dim + 1)
///   buffer (the last column counts the row's touches) and one allreduce sums it.
///
/// Either way every rank ends with the same distinct touched rows (`rows`, `rowCount`) and their
/// summed gradients (`values`), rows in the order the (rank-ordered) examples first touch them
/// (the `.dense` path lists them by increasing row).
///
/// Per step: `beginStep(gradients:)`, then (from the model's backward events) `denseFinal(from:)`
/// and `sparseFinal(_:)`, which may also be called late, then `finish()`. Nothing here allocates
/// after `init`. Not thread-safe: one per rank.
public final class GradientSync {
    /// How the embedding gradients travel between ranks.
    public enum EmbeddingExchange: String, Sendable, Codable {
        /// No embedding tables.
        case none
        /// One rank: the local sums are the global sums.
        case local
        /// Allgather of each rank's distinct (row, gradient) pairs.
        case rows
        /// Allreduce of a dense (rows, dim + 1) gradient-and-touch buffer.
        case dense
    }

    public let communicator: any Communicator
    /// Floats in the dense gradient buffer: the layout's parameters plus the caller's control values.
    public let denseCount: Int
    /// The dense buckets, in the order they are started (decreasing offsets).
    public let buckets: [Range<Int>]
    public let dim: Int
    public let embeddingRows: Int
    public let embeddingExchange: EmbeddingExchange
    /// `.rows`: sum each rank's pairs per distinct row before sending (default; see the type's notes).
    public let localSums: Bool
    /// Coalesced output: distinct rows (`rowCount` of them).
    public let rows: UnsafeMutablePointer<Int>
    /// Coalesced output: (rowCount, dim) summed gradients.
    public let values: FloatBuffer
    public internal(set) var rowCount = 0
    public internal(set) var traffic = Traffic()
    public var timing = Timing()

    let size: Int
    let me: Int
    let maxLocalPairs: Int
    /// Floats per exchanged record: the row (an Int64 in the first two floats' bytes) followed by
    /// `dim` gradient values.
    let stride: Int
    /// Floats per row of the `.dense` path's buffer: `dim` gradient values and the touch count.
    let denseWidth: Int
    let send: FloatBuffer          // .dense: (maxLocalPairs, stride) distinct rows
    let receive: FloatBuffer       // .rows: (size * maxLocalPairs, stride) records, or (.., dim) without local sums; .dense: (rows, denseWidth)
    let receiveRows: UnsafeMutablePointer<Int>      // .rows without localSums: (size * maxLocalPairs)
    let rowBytes: UnsafeMutablePointer<Int>         // (size)
    let rowOffsets: UnsafeMutablePointer<Int>       // (size)
    // This step's outgoing rows and gradients (.rows): the model's own buffers, or the local sums.
    var outRows: UnsafePointer<Int>?
    var outValues: UnsafePointer<Float>?
    /// Per table row: 1 + its slot among this step's distinct rows, 0 if the step has not touched it.
    let slotOfRow: UnsafeMutablePointer<Int32>
    let localCounts: UnsafeMutablePointer<Int>      // (size): distinct rows per rank
    let countBytes: UnsafeMutablePointer<Int>       // (size): 8 each
    let countOffsets: UnsafeMutablePointer<Int>     // (size)
    let pairBytes: UnsafeMutablePointer<Int>        // (size)
    let pairOffsets: UnsafeMutablePointer<Int>      // (size)

    // The step in progress.
    var gradients: UnsafeMutablePointer<Float>?
    var nextBucket = 0
    let bucketRequest: UnsafeMutablePointer<CollectiveRequest>
    let bucketStart: UnsafeMutablePointer<UInt64>
    let bucketDone: UnsafeMutablePointer<Bool>
    enum SparseStage { case idle, counting, counted, gathering, reducing, done }
    var sparseStage = SparseStage.idle
    var sparseRequest = CollectiveRequest(id: 0)
    var valuesRequest = CollectiveRequest(id: 0)
    var rowsArrived = false, valuesArrived = false
    var sparseStart: UInt64 = 0
    var localUnique = 0

    /// The most dense buckets: with the embedding exchange's two collectives and a sharded
    /// step's one, what is in flight stays under the 16 requests `MPICommunicator` and
    /// `InProcessCommunicator` hold.
    public static let maxBuckets = 8

    /// - Parameters:
    ///   - denseCount: floats in the dense gradient buffer (parameters + the caller's control values).
    ///   - boundaries: offsets where a bucket may end (the tensors' offsets); 0 and `denseCount`
    ///     are implied.
    ///   - bucketBytes: the smallest bucket, in bytes, except the one at offset 0 (the last);
    ///     doubled until there are at most `maxBuckets`.
    ///   - embeddingRows: rows of the embedding table (0 without one).
    ///   - maxLocalPairs: the most (row, gradient) pairs one rank produces per step.
    ///   - localSums: `.rows` path: send per-rank sums of distinct rows instead of every pair
    ///     (default: on).
    public init(communicator: any Communicator, denseCount: Int, boundaries: [Int] = [],
                bucketBytes: Int = 1 << 20, embeddingRows: Int, dim: Int, maxLocalPairs: Int,
                localSums: Bool = true) {
        self.localSums = localSums
        precondition(denseCount >= 0 && dim >= 1 && embeddingRows >= 0 && maxLocalPairs >= 0)
        self.communicator = communicator
        self.denseCount = denseCount
        self.dim = dim
        self.embeddingRows = embeddingRows
        self.maxLocalPairs = maxLocalPairs
        size = communicator.size
        me = communicator.rank
        stride = dim + 2
        denseWidth = dim + 1

        // Buckets from the end: grow each until it reaches bucketBytes at a boundary.
        var cuts = Set(boundaries.filter { $0 > 0 && $0 < denseCount })
        cuts.insert(0)
        let sortedCuts = cuts.sorted(by: >)
        var buckets: [Range<Int>] = []
        var smallest = max(bucketBytes, 1)
        repeat {
            buckets = []
            var upper = denseCount
            for cut in sortedCuts where (upper - cut) * 4 >= smallest || cut == 0 {
                if cut < upper { buckets.append(cut..<upper) }
                upper = cut
            }
            smallest *= 2
        } while buckets.count > Self.maxBuckets
        self.buckets = buckets

        let exchange: EmbeddingExchange
        if embeddingRows == 0 || maxLocalPairs == 0 {
            exchange = .none
        } else if size == 1 {
            exchange = .local
        } else if size * maxLocalPairs > embeddingRows {
            exchange = .dense
        } else {
            exchange = .rows
        }
        embeddingExchange = exchange

        let maxRows = max(min(size * maxLocalPairs, embeddingRows), 1)
        rows = .allocate(capacity: maxRows)
        rows.initialize(repeating: 0, count: maxRows)
        values = FloatBuffer(count: maxRows * dim)
        switch exchange {
        case .rows:
            // With local sums, (row, dim values) records, one allgatherv, each rank's block
            // at a fixed place (rank x maxLocalPairs records), where the rank sums its own pairs
            // (in place: no send buffer, no copy of its own block); without, the gradients only
            // (the rows travel in a second allgatherv, from the model's buffers).
            send = FloatBuffer(count: 0)
            receive = FloatBuffer(count: size * maxLocalPairs * (localSums ? stride : dim))
        case .dense:
            send = FloatBuffer(count: maxLocalPairs * stride)
            receive = FloatBuffer(count: embeddingRows * denseWidth)
        case .none, .local:
            send = FloatBuffer(count: 0)
            receive = FloatBuffer(count: 0)
        }
        let receiveRowCount = exchange == .rows && !localSums ? max(size * maxLocalPairs, 1) : 1
        receiveRows = .allocate(capacity: receiveRowCount)
        receiveRows.initialize(repeating: 0, count: receiveRowCount)
        let mapRows = exchange == .none ? 1 : embeddingRows
        // One slot per table row, 0 where none (huge pages: the rows a step touches are scattered
        // over it; only the pages touched take memory).
        slotOfRow = LargeAllocation.allocateZeroed(bytes: mapRows * 4).bindMemory(to: Int32.self, capacity: mapRows)
        localCounts = .allocate(capacity: size)
        localCounts.initialize(repeating: 0, count: size)
        countBytes = .allocate(capacity: size)
        countBytes.initialize(repeating: MemoryLayout<Int>.size, count: size)
        countOffsets = .allocate(capacity: size)
        for r in 0..<size { (countOffsets + r).initialize(to: r * MemoryLayout<Int>.size) }
        pairBytes = .allocate(capacity: size)
        pairBytes.initialize(repeating: 0, count: size)
        pairOffsets = .allocate(capacity: size)
        pairOffsets.initialize(repeating: 0, count: size)
        rowBytes = .allocate(capacity: size)
        rowBytes.initialize(repeating: 0, count: size)
        rowOffsets = .allocate(capacity: size)
        rowOffsets.initialize(repeating: 0, count: size)
        bucketRequest = .allocate(capacity: max(buckets.count, 1))
        bucketRequest.initialize(repeating: CollectiveRequest(id: 0), count: max(buckets.count, 1))
        bucketStart = .allocate(capacity: max(buckets.count, 1))
        bucketStart.initialize(repeating: 0, count: max(buckets.count, 1))
        bucketDone = .allocate(capacity: max(buckets.count, 1))
        bucketDone.initialize(repeating: false, count: max(buckets.count, 1))
    }

    /// For exchanging embedding gradients alone (`exchange(_:)`), with no dense buffer.
    public convenience init(communicator: any Communicator, embeddingRows: Int, dim: Int, maxLocalPairs: Int) {
        self.init(communicator: communicator, denseCount: 0, embeddingRows: embeddingRows, dim: dim,
                  maxLocalPairs: maxLocalPairs)
    }

    deinit {
        rows.deallocate()
        LargeAllocation.deallocate(UnsafeMutableRawPointer(slotOfRow),
                                   bytes: (embeddingExchange == .none ? 1 : embeddingRows) * 4)
        localCounts.deallocate()
        countBytes.deallocate()
        countOffsets.deallocate()
        pairBytes.deallocate()
        pairOffsets.deallocate()
        rowBytes.deallocate()
        rowOffsets.deallocate()
        receiveRows.deallocate()
        bucketRequest.deallocate()
        bucketStart.deallocate()
        bucketDone.deallocate()
    }

    /// Bytes of buffers this object allocated (for the memory accounting).
    public var bufferBytes: Int {
        let mapRows = embeddingExchange == .none ? 1 : embeddingRows
        let rowSlots = embeddingExchange == .rows && !localSums ? size * maxLocalPairs : 0
        return (values.count + send.count + receive.count) * 4 + mapRows * 4
            + (rowSlots + max(min(size * maxLocalPairs, embeddingRows), 1)) * MemoryLayout<Int>.size
    }

    // MARK: - One step

    /// Starts a step whose dense gradients are accumulated in `gradients` (denseCount floats).
    public func beginStep(gradients: UnsafeMutablePointer<Float>) {
        precondition(sparseStage == .idle || sparseStage == .done, "beginStep before finish()")
        self.gradients = gradients
        nextBucket = 0
        for b in 0..<buckets.count { bucketDone[b] = false }
        sparseStage = .idle
        rowCount = 0
        traffic = Traffic()
    }

    /// Every dense gradient at offsets >= `offset` is final: starts the allreduce of each bucket
    /// that lies entirely there, then advances the collectives in flight.
    ///
    /// Collectives must start in the same order on every rank, whatever the timing. The
    /// embedding pairs' allgatherv needs the counts first: it starts at the first dense event
    /// after `sparseFinal` that finds the counts arrived, and at the latest (waiting for the
    /// counts) just before the next bucket's allreduce or in `finish`. Which happens first on a
    /// rank depends on timing, but on every rank the pairs start after the buckets started
    /// before `sparseFinal` and before the ones started after it, so the order is the same.
    /// (Waiting for the counts at the first event would make every step meet the slowest rank
    /// twice, mid-backward and at the end.)
    @inline(__always)
    public func denseFinal(from offset: Int) throws {
        let t0 = MonotonicClock.nanoseconds()
        let startsBucket = nextBucket < buckets.count && buckets[nextBucket].lowerBound >= offset
        if sparseStage == .counting && !startsBucket { try advance(now: t0) }
        if sparseStage == .counted || (sparseStage == .counting && startsBucket) { try startPairs(now: t0) }
        while nextBucket < buckets.count && buckets[nextBucket].lowerBound >= offset {
            try startBucket(nextBucket, now: t0)
        }
        try advance(now: t0)
        timing.exposed += MonotonicClock.nanoseconds() - t0
    }

    private func startBucket(_ b: Int, now: UInt64) throws {
        let range = buckets[b]
        bucketStart[b] = now
        let t0 = MonotonicClock.nanoseconds()
        bucketRequest[b] = try communicator.startAllreduceSum(
            UnsafeMutableBufferPointer(start: gradients! + range.lowerBound, count: range.count))
        timing.starting += MonotonicClock.nanoseconds() - t0
        traffic.denseBytes += range.count * 4
        nextBucket = b + 1
    }

    /// The step's embedding pairs are final: sums them per distinct row and starts the exchange.
    public func sparseFinal(_ local: SparseGradient) throws {
        precondition(local.dim == dim && local.count <= maxLocalPairs, "more embedding pairs than maxLocalPairs")
        precondition(sparseStage == .idle, "sparseFinal twice in one step")
        let t0 = MonotonicClock.nanoseconds()
        switch embeddingExchange {
        case .none:
            sparseStage = .done
        case .local:
            rowCount = coalesceLocal(local, rowsOut: rows, valuesOut: values.pointer, interleaved: false)
            timing.coalescing += MonotonicClock.nanoseconds() - t0
            traffic.localRows = rowCount
            traffic.globalRows = rowCount
            sparseStage = .done
        case .rows:
            if localSums {
                let own = receive.pointer + me * maxLocalPairs * stride
                localUnique = coalesceLocal(local, rowsOut: nil, valuesOut: own, interleaved: true)
                timing.coalescing += MonotonicClock.nanoseconds() - t0
                outRows = nil
                outValues = UnsafePointer(own)
            } else {
                // Sent as they are: the model does not touch them again before finish().
                localUnique = local.count
                outRows = UnsafePointer(local.rows)
                outValues = UnsafePointer(local.values)
            }
            traffic.localRows = localUnique
            localCounts[me] = localUnique
            sparseStart = t0
            let s0 = MonotonicClock.nanoseconds()
            sparseRequest = try communicator.startAllgatherv(
                UnsafeRawBufferPointer(start: localCounts + me, count: MemoryLayout<Int>.size),
                into: UnsafeMutableRawBufferPointer(start: localCounts, count: size * MemoryLayout<Int>.size),
                counts: UnsafeBufferPointer(start: countBytes, count: size),
                displacements: UnsafeBufferPointer(start: countOffsets, count: size))
            timing.starting += MonotonicClock.nanoseconds() - s0
            traffic.embeddingSentBytes += MemoryLayout<Int>.size
            traffic.embeddingReceivedBytes += size * MemoryLayout<Int>.size
            sparseStage = .counting
        case .dense:
            let touched = coalesceLocal(local, rowsOut: nil, valuesOut: send.pointer, interleaved: true)
            traffic.localRows = touched
            let d = receive.pointer
            d.update(repeating: 0, count: embeddingRows * denseWidth)
            let s = send.pointer
            for i in 0..<touched {
                let dst = d + Self.row(of: s + i * stride) * denseWidth
                dst.update(from: s + i * stride + Self.rowFloats, count: dim)
                dst[dim] = 1
            }
            let s0 = MonotonicClock.nanoseconds()
            timing.coalescing += s0 - t0
            sparseStart = t0
            sparseRequest = try communicator.startAllreduceSum(receive.buffer)
            timing.starting += MonotonicClock.nanoseconds() - s0
            traffic.embeddingSentBytes += receive.count * 4
            traffic.embeddingReceivedBytes += receive.count * 4
            sparseStage = .reducing
        }
        try advance(now: MonotonicClock.nanoseconds())
        timing.exposed += MonotonicClock.nanoseconds() - t0
    }

    private func advance(now: UInt64) throws {
        let t0 = MonotonicClock.nanoseconds(), merged = timing.merging
        defer { timing.testing += MonotonicClock.nanoseconds() - t0 - (timing.merging - merged) }
        for b in 0..<nextBucket where !bucketDone[b] {
            if try communicator.test(bucketRequest[b]) {
                bucketDone[b] = true
                timing.hidden += now - bucketStart[b]
            }
        }
        switch sparseStage {
        case .counting:
            if try communicator.test(sparseRequest) {
                timing.hidden += now - sparseStart
                sparseStage = .counted
            }
        case .gathering:
            if !rowsArrived { rowsArrived = try communicator.test(sparseRequest) }
            if !valuesArrived { valuesArrived = try communicator.test(valuesRequest) }
            if rowsArrived && valuesArrived {
                timing.hidden += now - sparseStart
                sparseStage = .done
                try mergeReceived()
            }
        case .reducing:
            if try communicator.test(sparseRequest) {
                timing.hidden += now - sparseStart
                sparseStage = .done
                try mergeReceived()
            }
        case .idle, .counted, .done:
            break
        }
    }

    /// Waits for the counts if they have not arrived, then starts the pairs' allgatherv.
    private func startPairs(now: UInt64) throws {
        if sparseStage == .counting {
            timing.hidden += now - sparseStart
            let w = MonotonicClock.nanoseconds()
            try communicator.wait(sparseRequest)
            let waited = MonotonicClock.nanoseconds() - w
            timing.waiting += waited
            timing.countsWaiting += waited
            sparseStage = .counted
        }
        precondition(sparseStage == .counted)
        var total = 0, totalRows = 0
        // With local sums, one allgatherv of (row, values) records; else the rows and the
        // gradients in two.
        let recordFloats = localSums ? stride : dim
        for r in 0..<size {
            precondition(localCounts[r] >= 0 && localCounts[r] <= maxLocalPairs, "rank \(r) sends \(localCounts[r]) rows")
            pairBytes[r] = localCounts[r] * recordFloats * 4
            pairOffsets[r] = localSums ? r * maxLocalPairs * stride * 4 : total
            total += pairBytes[r]
            rowBytes[r] = localSums ? 0 : localCounts[r] * MemoryLayout<Int>.size
            rowOffsets[r] = totalRows
            totalRows += rowBytes[r]
        }
        precondition(total <= receive.count * 4, "sparse exchange overflow")
        sparseStart = now
        rowsArrived = localSums
        valuesArrived = false
        let s0 = MonotonicClock.nanoseconds()
        defer { timing.starting += MonotonicClock.nanoseconds() - s0 }
        if !localSums {
            sparseRequest = try communicator.startAllgatherv(
                UnsafeRawBufferPointer(start: outRows, count: rowBytes[me]),
                into: UnsafeMutableRawBufferPointer(start: receiveRows, count: totalRows),
                counts: UnsafeBufferPointer(start: rowBytes, count: size),
                displacements: UnsafeBufferPointer(start: rowOffsets, count: size))
        }
        valuesRequest = try communicator.startAllgatherv(
            UnsafeRawBufferPointer(start: outValues, count: pairBytes[me]),
            into: UnsafeMutableRawBufferPointer(start: receive.pointer, count: receive.count * 4),
            counts: UnsafeBufferPointer(start: pairBytes, count: size),
            displacements: UnsafeBufferPointer(start: pairOffsets, count: size))
        traffic.embeddingSentBytes += rowBytes[me] + pairBytes[me]
        traffic.embeddingReceivedBytes += totalRows + total
        sparseStage = .gathering
    }

    /// Waits for everything the step started (starting what has not been) and merges the
    /// embedding rows. Afterwards `gradients`, `rows`, `values` and `rowCount` are global.
    public func finish() throws {
        let t0 = MonotonicClock.nanoseconds()
        if gradients != nil {
            while nextBucket < buckets.count { try startBucket(nextBucket, now: t0) }
            for b in 0..<buckets.count where !bucketDone[b] {
                timing.hidden += t0 - bucketStart[b]
                let w = MonotonicClock.nanoseconds()
                try communicator.wait(bucketRequest[b])
                timing.waiting += MonotonicClock.nanoseconds() - w
                bucketDone[b] = true
            }
        }
        if sparseStage == .counting || sparseStage == .counted {
            try startPairs(now: t0)
            sparseStart = MonotonicClock.nanoseconds()
        }
        if sparseStage == .gathering || sparseStage == .reducing {
            let w = MonotonicClock.nanoseconds()
            if sparseStart < t0 { timing.hidden += t0 - sparseStart }
            if sparseStage == .reducing || !rowsArrived { try communicator.wait(sparseRequest) }
            if sparseStage == .gathering && !valuesArrived { try communicator.wait(valuesRequest) }
            timing.waiting += MonotonicClock.nanoseconds() - w
            sparseStage = .done
            try mergeReceived()
        }
        if sparseStage == .idle && embeddingExchange == .none { sparseStage = .done }
        precondition(sparseStage == .done || embeddingExchange == .none, "finish() before sparseFinal()")
        gradients = nil
        timing.exposed += MonotonicClock.nanoseconds() - t0
    }

    // MARK: - Embedding gradients alone

    /// Gathers every rank's sparse pairs and coalesces them into `rows`/`values`/`rowCount`.
    public func exchange(_ local: SparseGradient) throws {
        let savedGradients = gradients
        gradients = nil
        sparseStage = .idle
        rowCount = 0
        try sparseFinal(local)
        try finish()
        gradients = savedGradients
    }
}
