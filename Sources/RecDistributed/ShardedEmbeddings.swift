import RecCore

/// The embedding tables of a run whose `EmbeddingPlan` shards some of them: this rank's storage
/// and the two all-to-all exchanges of a step.
///
/// The model never sees the real tables. It is built with working tables (`ModelConfig
/// .withWorkingTables(rows: capacity)`): `capacity` rows per table, enough for one batch.
/// Per batch:
///
/// 1. `gather`: every (example, table) id is turned into its table row and deduplicated per
///    table; the k-th distinct row of table t becomes working row `t·capacity + k` and the batch's
///    id is replaced by k (a copy of the categorical columns; the caller's batch is untouched).
///    Rows this rank stores (replicated tables, owned ones) are copied from `storage`; the others
///    are requested from their owners: the counts, then the row indices (on the owner), then the
///    vectors come back, three `alltoallv`s (a rank with nothing to ask still takes part).
/// 2. The model runs forward and backward on the working rows, data-parallel.
/// 3. `route`: its sparse gradient, pair by pair: rows of replicated tables go to `replicated`
///    (indices into the replicated part of `storage`, the same on every rank) for the usual
///    `GradientSync`; rows of sharded tables are summed per (owner, row) into the outgoing
///    records. With gradient accumulation this runs once per micro-batch.
/// 4. `exchangeGradients`: the outgoing records go to their owners (counts, then records, two
///    `alltoallv`s), and each owner sums what arrives per row in rank order into `ownedRows`,
///    `ownedValues`: the same association as the replicated `.rows` exchange (each rank's partial
///    sum, added in rank order), so sharding changes the numbers only where float addition is
///    not associative over how the rows were split.
///
/// The owner updates its rows with the step's optimizer, whose embedding state covers `storage`,
/// so optimizer state lives with the shard. Nothing allocates per step once the buffers sized by
/// the other ranks' requests have grown to the largest seen. Not thread-safe: one per rank.
public final class ShardedEmbeddings {
    public let plan: EmbeddingPlan
    /// The real tables (row counts, indexing of the raw categorical values).
    public let tables: EmbeddingTables
    /// The categorical column each table reads.
    public let columns: [Int]
    /// Examples per `gather`; also the working rows per table.
    public let capacity: Int
    /// This rank's rows: (plan.localRows(rank:), dim).
    public let storage: FloatBuffer
    /// The replicated tables' pairs of the step (rows: indices below `plan.replicatedRows`).
    public let replicated: SparseGradient
    /// After `exchangeGradients`: the distinct rows of `storage` this rank owns that the step
    /// touched, and their summed gradients (ownedCount, dim).
    public private(set) var ownedCount = 0
    public var ownedRows: UnsafePointer<Int> { UnsafePointer(owned.pointer) }
    public var ownedValues: UnsafeMutablePointer<Float> { ownedGradients.pointer }
    /// Bytes this rank sent in the step's exchanges (lookups and gradients), for `bench`.
    public private(set) var lookupBytesSent = 0
    public private(set) var gradientBytesSent = 0

    let communicator: any Communicator
    /// Floats per row.
    public let dim: Int
    let rank: Int, size: Int, width: Int
    /// bases[r][t]: where table t's part begins in rank r's storage.
    let bases: [[Int]]
    let maxPairs: Int

    // The working set of one batch.
    let workingRows: UnsafeMutablePointer<Int>       // (tables·capacity): row within its table
    let workingCounts: UnsafeMutablePointer<Int>     // (tables)
    let workingMap: SlotMap
    let remapped: UnsafeMutablePointer<UInt32>       // (capacity, width)

    // Lookup requests.
    let requestOwner: UnsafeMutablePointer<Int32>    // (tables·capacity), in request order
    let requestIndex: UnsafeMutablePointer<Int>
    let requestSlot: UnsafeMutablePointer<Int32>
    let sortedIndex: UnsafeMutablePointer<Int>       // by owner
    let sortedSlot: UnsafeMutablePointer<Int32>
    let answers: FloatBuffer                         // (tables·capacity, dim)
    let served = GrowableBuffer<Int>(capacity: 1)
    let replies = GrowableBuffer<Float>(capacity: 1)

    // Outgoing gradient records, summed per (owner, row).
    let outgoingMap: SlotMap
    let outgoingOwner: UnsafeMutablePointer<Int32>
    let outgoingIndex: UnsafeMutablePointer<Int>
    let outgoingValues: FloatBuffer
    var outgoingCount = 0
    let sendRecords: UnsafeMutableRawPointer         // (maxPairs, recordBytes), by owner
    let receiveRecords = GrowableBuffer<UInt8>(capacity: 1)
    let owned = GrowableBuffer<Int>(capacity: 1)
    let ownedGradients = GrowableBuffer<Float>(capacity: 1)   // (distinct owned rows, dim)
    let ownedMap: SlotMap
    var recordBytes: Int { 8 + dim * 4 }

    // Per-rank counts and displacements (bytes), and the count exchange's own.
    let sendCounts: UnsafeMutablePointer<Int>, sendOffsets: UnsafeMutablePointer<Int>
    let receiveCounts: UnsafeMutablePointer<Int>, receiveOffsets: UnsafeMutablePointer<Int>
    let countSend: UnsafeMutablePointer<Int>, countReceive: UnsafeMutablePointer<Int>
    let countBytes: UnsafeMutablePointer<Int>, countOffsets: UnsafeMutablePointer<Int>

    /// - Parameters:
    ///   - columns: the categorical column each table reads (`ModelConfig.tableFields`).
    ///   - width: the batches' categorical width.
    ///   - capacity: the most examples per batch.
    ///   - accumulate: the most micro-batches per step.
    public init(tables: EmbeddingTables, plan: EmbeddingPlan, columns: [Int], width: Int,
                communicator: any Communicator, capacity: Int, accumulate: Int = 1) {
        precondition(plan.placements.count == tables.fields && plan.rowsPerTable == tables.rowsPerField
                     && plan.dim == tables.dim && plan.worldSize == communicator.size, "the plan is for other tables or ranks")
        precondition(columns.count == tables.fields && Set(columns).count == columns.count && columns.allSatisfy { $0 < width },
                     "each table must read its own categorical column")
        self.tables = tables
        self.plan = plan
        self.columns = columns
        self.width = width
        self.capacity = max(capacity, 1)
        self.communicator = communicator
        rank = communicator.rank
        size = communicator.size
        dim = tables.dim
        let fields = tables.fields
        bases = (0..<size).map { r in (0..<fields).map { plan.localBase(table: $0, rank: r) } }
        storage = FloatBuffer(count: plan.localRows(rank: rank) * dim)
        let pairs = fields * self.capacity
        maxPairs = pairs * max(accumulate, 1)
        replicated = SparseGradient(capacity: maxPairs, dim: dim)

        workingRows = .allocate(capacity: pairs)
        workingRows.initialize(repeating: 0, count: pairs)
        workingCounts = .allocate(capacity: fields)
        workingCounts.initialize(repeating: 0, count: fields)
        workingMap = SlotMap(capacity: pairs)
        remapped = .allocate(capacity: self.capacity * width)
        remapped.initialize(repeating: 0, count: self.capacity * width)
        requestOwner = .allocate(capacity: pairs)
        requestIndex = .allocate(capacity: pairs)
        requestSlot = .allocate(capacity: pairs)
        sortedIndex = .allocate(capacity: pairs)
        sortedSlot = .allocate(capacity: pairs)
        answers = FloatBuffer(count: pairs * dim)

        outgoingMap = SlotMap(capacity: maxPairs)
        outgoingOwner = .allocate(capacity: maxPairs)
        outgoingIndex = .allocate(capacity: maxPairs)
        outgoingValues = FloatBuffer(count: maxPairs * dim)
        sendRecords = .allocate(byteCount: max(maxPairs * (8 + dim * 4), 1), alignment: 8)
        // Grown to what arrives; most steps receive about one batch's rows.
        ownedMap = SlotMap(capacity: maxPairs)
        ownedGradients.reserve(maxPairs * dim)
        owned.reserve(maxPairs)

        let ranks = communicator.size
        func table() -> UnsafeMutablePointer<Int> {
            let p = UnsafeMutablePointer<Int>.allocate(capacity: ranks)
            p.initialize(repeating: 0, count: ranks)
            return p
        }
        sendCounts = table(); sendOffsets = table(); receiveCounts = table(); receiveOffsets = table()
        countSend = table(); countReceive = table(); countBytes = table(); countOffsets = table()
        for r in 0..<size {
            countBytes[r] = MemoryLayout<Int>.size
            countOffsets[r] = r * MemoryLayout<Int>.size
        }
    }

    deinit {
        workingRows.deallocate(); workingCounts.deallocate(); remapped.deallocate()
        requestOwner.deallocate(); requestIndex.deallocate(); requestSlot.deallocate()
        sortedIndex.deallocate(); sortedSlot.deallocate()
        outgoingOwner.deallocate(); outgoingIndex.deallocate(); sendRecords.deallocate()
        for p in [sendCounts, sendOffsets, receiveCounts, receiveOffsets, countSend, countReceive, countBytes, countOffsets] {
            p.deallocate()
        }
    }

    /// Bytes of the buffers allocated at creation, `storage` included (for the memory accounting).
    public var bufferBytes: Int {
        let pairs = tables.fields * capacity
        return storage.count * 4 + replicated.capacity * (dim * 4 + 8) + pairs * (8 + 4 + 4 + 8 + 8 + 4 + 4 + dim * 4)
            + capacity * width * 4 + maxPairs * (4 + 8 + dim * 4 + recordBytes) + ownedGradients.capacity * 4
    }

    // MARK: - Initial values

    /// Fills `storage` with the values the replicated model starts from: the uniform ±0.05 stream
    /// of `EmbeddingTables.initialize` for `seed`, row by row over all tables in order (each rank
    /// draws every value and keeps its own rows), with the first `zeroedColumns` of every row 0.
    public func initialize(seed: UInt64, zeroedColumns: Int) {
        var rng = RNG(seed: seed, stream: 2)
        let s = storage.pointer
        for t in 0..<tables.fields {
            for row in 0..<tables.rows(field: t) {
                let (owner, index) = plan.locate(table: t, row: row)
                let keep = owner == nil || owner == rank
                let dst = s + (bases[rank][t] + index) * dim
                for k in 0..<dim {
                    let v = rng.uniform(-0.05, 0.05)
                    if keep { dst[k] = k < zeroedColumns ? 0 : v }
                }
            }
        }
    }

    // MARK: - Forward: the batch's rows

    /// Collects the rows `batch` needs into `working` ((tables·capacity, dim), the model's table)
    /// and returns the batch with its ids replaced by working ids. Collective: every rank calls it
    /// once per micro-batch, with 0 examples if it has none.
    public func gather(_ batch: BatchView, into working: UnsafeMutablePointer<Float>) throws -> BatchView {
        let n = batch.count, fields = tables.fields, dim = self.dim
        precondition(n <= capacity && batch.categoricalWidth == width, "a batch of \(n) x \(batch.categoricalWidth) for \(capacity) x \(width)")
        workingMap.clear()
        workingCounts.update(repeating: 0, count: fields)
        if n > 0 { remapped.update(from: batch.categorical, count: n * width) }
        var requests = 0
        let s = storage.pointer
        for b in 0..<n {
            for t in 0..<fields {
                let c = b * width + columns[t]
                let row = tables.row(field: t, value: batch.categorical[c]) - tables.firstRow(field: t)
                let next = Int32(t * capacity + workingCounts[t])
                let (slot, inserted) = workingMap.slot(for: tables.firstRow(field: t) + row, orInsert: next)
                if inserted {
                    workingCounts[t] += 1
                    workingRows[Int(slot)] = row
                    let (owner, index) = plan.locate(table: t, row: row)
                    if let owner, owner != rank {
                        requestOwner[requests] = Int32(owner)
                        requestIndex[requests] = bases[owner][t] + index
                        requestSlot[requests] = slot
                        requests += 1
                    } else {
                        (working + Int(slot) * dim).update(from: s + (bases[rank][t] + index) * dim, count: dim)
                    }
                }
                remapped[c] = UInt32(Int(slot) - t * capacity)
            }
        }
        try fetch(requests: requests, into: working)
        var view = batch
        view.categorical = UnsafePointer(remapped)
        return view
    }

    /// Asks the owners for the `requests` rows and copies their vectors into `working`.
    private func fetch(requests: Int, into working: UnsafeMutablePointer<Float>) throws {
        let dim = self.dim, word = MemoryLayout<Int>.size
        let owner = requestOwner, index = requestIndex, slot = requestSlot, sortedIndex = self.sortedIndex, sortedSlot = self.sortedSlot
        let (sent, received) = try sendByOwner(requests, itemBytes: word, owner: { Int(owner[$0]) }) { i, k in
            sortedIndex[k] = index[i]
            sortedSlot[k] = slot[i]
        }
        // The row indices to their owners.
        served.reserve(received)
        try exchange(sortedIndex, sendBytes: sent * word, into: served.pointer, receiveBytes: received * word)
        // The vectors back, in the order asked.
        replies.reserve(received * dim)
        let s = storage.pointer, out = replies.pointer, asked = served.pointer
        let localRows = storage.count / dim
        for i in 0..<received {
            let index = asked[i]
            precondition(index >= 0 && index < localRows, "a request for row \(index) of \(localRows) on rank \(rank)")
            (out + i * dim).update(from: s + index * dim, count: dim)
        }
        let bytes = dim * 4
        for r in 0..<size {
            sendCounts[r] = countReceive[r] * bytes; sendOffsets[r] = receiveOffsets[r] / word * bytes
            receiveCounts[r] = countSend[r] * bytes
        }
        var at = 0
        for r in 0..<size { receiveOffsets[r] = at; at += receiveCounts[r] }
        try exchange(out, sendBytes: received * bytes, into: answers.pointer, receiveBytes: sent * bytes)
        for k in 0..<sent {
            (working + Int(sortedSlot[k]) * dim).update(from: answers.pointer + k * dim, count: dim)
        }
        lookupBytesSent += size * word + sent * word + received * bytes
    }

    /// Orders `count` items by owner (a stable counting sort: `place(i, k)` puts item i at
    /// position k), tells every rank how many it gets, and sets the byte counts and offsets of an
    /// alltoallv of `itemBytes`-byte items. Returns the items sent and received.
    private func sendByOwner(_ count: Int, itemBytes: Int, owner: (Int) -> Int,
                             place: (_ item: Int, _ position: Int) -> Void) throws -> (sent: Int, received: Int) {
        countSend.update(repeating: 0, count: size)
        for i in 0..<count { countSend[owner(i)] += 1 }
        var at = 0
        for r in 0..<size { sendOffsets[r] = at; at += countSend[r] }
        for i in 0..<count {
            let r = owner(i)
            place(i, sendOffsets[r])
            sendOffsets[r] += 1
        }
        try exchangeCounts()
        var sent = 0, received = 0
        for r in 0..<size {
            sendCounts[r] = countSend[r] * itemBytes; sendOffsets[r] = sent * itemBytes; sent += countSend[r]
            receiveCounts[r] = countReceive[r] * itemBytes; receiveOffsets[r] = received * itemBytes; received += countReceive[r]
        }
        return (sent, received)
    }

    /// The alltoallv of `sendBytes` bytes from `send` into `receive` (`receiveBytes`), by the byte
    /// counts and offsets in `sendCounts`, `sendOffsets`, `receiveCounts` and `receiveOffsets`.
    private func exchange(_ send: UnsafeRawPointer, sendBytes: Int, into receive: UnsafeMutableRawPointer,
                          receiveBytes: Int) throws {
        try communicator.alltoallv(UnsafeRawBufferPointer(start: send, count: sendBytes),
                                   sendCounts: UnsafeBufferPointer(start: sendCounts, count: size),
                                   sendDisplacements: UnsafeBufferPointer(start: sendOffsets, count: size),
                                   into: UnsafeMutableRawBufferPointer(start: receive, count: receiveBytes),
                                   receiveCounts: UnsafeBufferPointer(start: receiveCounts, count: size),
                                   receiveDisplacements: UnsafeBufferPointer(start: receiveOffsets, count: size))
    }

    /// Every rank learns how many items each rank sends it: `countSend[r]` -> rank r's
    /// `countReceive[me]`.
    private func exchangeCounts() throws {
        try communicator.alltoallv(UnsafeRawBufferPointer(start: countSend, count: size * MemoryLayout<Int>.size),
                                   sendCounts: UnsafeBufferPointer(start: countBytes, count: size),
                                   sendDisplacements: UnsafeBufferPointer(start: countOffsets, count: size),
                                   into: UnsafeMutableRawBufferPointer(start: countReceive, count: size * MemoryLayout<Int>.size),
                                   receiveCounts: UnsafeBufferPointer(start: countBytes, count: size),
                                   receiveDisplacements: UnsafeBufferPointer(start: countOffsets, count: size))
    }

    // MARK: - Backward: the gradients to their owners

    /// Starts a step's gradients: no replicated pairs, no outgoing records.
    public func beginStep() {
        replicated.count = 0
        outgoingMap.clear()
        outgoingCount = 0
        ownedCount = 0
        lookupBytesSent = 0
        gradientBytesSent = 0
    }

    /// Sorts the model's pairs over working rows (of the last `gather`) into replicated pairs and
    /// per-owner sums.
    public func route(_ sparse: SparseGradient) {
        let dim = self.dim
        for i in 0..<sparse.count {
            let w = Int(sparse.rows[i])
            let t = w / capacity, row = workingRows[w]
            let g = sparse.values + i * dim
            let (owner, index) = plan.locate(table: t, row: row)
            guard let owner else {
                let k = replicated.count
                precondition(k < replicated.capacity, "more embedding pairs than the step was built for")
                replicated.rows[k] = bases[rank][t] + index
                (replicated.values + k * dim).update(from: g, count: dim)
                replicated.count = k + 1
                continue
            }
            let local = bases[owner][t] + index
            let (slot, inserted) = outgoingMap.slot(for: local * size + owner, orInsert: Int32(outgoingCount))
            let dst = outgoingValues.pointer + Int(slot) * dim
            if inserted {
                outgoingOwner[outgoingCount] = Int32(owner)
                outgoingIndex[outgoingCount] = local
                dst.update(from: g, count: dim)
                outgoingCount += 1
            } else {
                for k in 0..<dim { dst[k] += g[k] }
            }
        }
    }

    /// Sends the step's sums to their owners and sums what this rank receives per owned row, in
    /// rank order, into `ownedRows` / `ownedValues`. Collective.
    public func exchangeGradients() throws {
        let dim = self.dim, recordBytes = self.recordBytes
        let owner = outgoingOwner, index = outgoingIndex, values = outgoingValues.pointer, outgoing = sendRecords
        let (sent, received) = try sendByOwner(outgoingCount, itemBytes: recordBytes, owner: { Int(owner[$0]) }) { i, k in
            let record = outgoing + k * recordBytes
            record.storeBytes(of: Int64(index[i]), as: Int64.self)
            (record + 8).copyMemory(from: values + i * dim, byteCount: dim * 4)
        }
        receiveRecords.reserve(received * recordBytes)
        try exchange(sendRecords, sendBytes: sent * recordBytes, into: receiveRecords.pointer,
                     receiveBytes: received * recordBytes)
        gradientBytesSent = size * MemoryLayout<Int>.size + sent * recordBytes
        // Sum per row, in rank order (the records arrive grouped by sender).
        ownedMap.clear()
        ownedMap.reserve(received)
        owned.reserve(received)
        ownedGradients.reserve(received * dim)
        var distinct = 0
        let records = UnsafeRawPointer(receiveRecords.pointer), sums = ownedGradients.pointer
        let localRows = storage.count / dim
        for i in 0..<received {
            let record = records + i * recordBytes
            let local = Int(record.loadUnaligned(as: Int64.self))
            precondition(local >= plan.replicatedRows && local < localRows, "a gradient for row \(local) of \(localRows) on rank \(rank)")
            let (slot, inserted) = ownedMap.slot(for: local, orInsert: Int32(distinct))
            let dst = sums + Int(slot) * dim
            if inserted {
                owned.pointer[distinct] = local
                distinct += 1
                for k in 0..<dim { dst[k] = (record + 8 + k * 4).loadUnaligned(as: Float.self) }
            } else {
                for k in 0..<dim { dst[k] += (record + 8 + k * 4).loadUnaligned(as: Float.self) }
            }
        }
        ownedCount = distinct
    }
}
