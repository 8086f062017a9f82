import Foundation
import RecCore

/// Feeds one rank's training batches from a memory-mapped prepared split, prefetching on a
/// background thread.
///
/// A step is named by its data position: the epoch, and the rows of the epoch already consumed
/// (counted over all ranks) when it starts, `offset`. Its global batch is the positions
/// `offset ..< offset + G` of that epoch's order (`EpochOrder`; G = worldSize × blockSize, fewer at
/// the end of the epoch), and this rank takes the `rank`-th block of `blockSize` of them. So the
/// rows of every global batch, and their order, are the same for any number of ranks, and a run
/// can resume at any position, even one that a different global batch left behind.
///
/// A thread fills a ring of `prefetch` batch buffers ahead of the trainer, gathering each row's
/// label, dense values and ids; `batch(epoch:offset:)` waits only when the ring is empty (the time
/// is in `waitNanoseconds`). Asking for another position than the next one restarts the prefetch
/// there. Nothing is allocated per step. Rows are read through the mapping, and the mapped pages
/// are dropped from the process whenever they grow by `residentBudget` (`ResidentMeter`); a full
/// shuffle of a split larger than the budget reads rows with pread instead, since nearly every row
/// would map new pages only to drop them again. Either way the resident size stays bounded.
public final class PreparedBatchLoader: @unchecked Sendable {
    public let split: PreparedSplitReader
    public let shard: BlockCyclicShard
    public let order: EpochOrder
    public var stepsPerEpoch: Int { shard.stepsPerEpoch }
    /// Rows of the split (positions per epoch).
    public var rows: Int { shard.rows.count }

    /// A data position: the epoch and the rows of it consumed before the step.
    struct Position: Equatable {
        var epoch: Int
        var offset: Int
    }

    private let slots: [FeatureRowsBuffer]
    private let condition = NSCondition()
    private var produced = 0          // sequence numbers [consumed, produced) are ready
    private var consumed = 0          // the sequence number the trainer takes next
    private var held = -1             // the sequence number whose slot the trainer is using
    private var cursor = Position(epoch: 0, offset: 0)     // what the producer makes next
    private var expected = Position(epoch: 0, offset: 0)   // what the trainer should ask for next
    private var generation = 0
    private var stopping = false
    private var running = false
    private var waited: UInt64 = 0
    private let meter: ResidentMeter
    /// A descriptor for `pread` gathers (full shuffles of splits larger than the budget), or -1.
    private let readDescriptor: Int32

    /// - Parameters:
    ///   - shard: this rank's block-cyclic share of the positions `0..<split.header.rows`.
    ///   - prefetch: batches kept ready (at least 2).
    ///   - residentBudget: bytes of mapped pages after which they are released.
    public init(split: PreparedSplitReader, shard: BlockCyclicShard, order: EpochOrder,
                prefetch: Int = 4, residentBudget: Int = 256 << 20) {
        precondition(shard.rows == 0..<split.header.rows && order.rows == split.header.rows)
        precondition(prefetch >= 2)
        self.split = split
        self.shard = shard
        self.order = order
        meter = ResidentMeter(split: split, budget: residentBudget)
        // Rows drawn uniformly from a split larger than the budget would fault a new page (and map
        // its neighbours) for nearly every column of every row, and those pages would be dropped
        // again before reuse: read such rows with pread instead (about 3x cheaper per row, measured).
        if order.shuffle && (order.window == 0 || order.window >= order.rows) && split.byteCount > residentBudget {
            readDescriptor = open(split.path, O_RDONLY | O_CLOEXEC)
        } else {
            readDescriptor = -1
        }
        // A rank's block never holds more rows than the split has.
        slots = (0..<prefetch).map { _ in
            FeatureRowsBuffer(capacity: min(shard.blockSize, shard.rows.count), denseWidth: split.header.denseCount,
                              categoricalWidth: split.header.categoricalCount)
        }
    }

    deinit {
        stop()
        if readDescriptor >= 0 { close(readDescriptor) }
    }

    /// Whether rows are gathered with pread rather than through the mapping.
    public var gathersWithReads: Bool { readDescriptor >= 0 }

    /// Nanoseconds `batch` spent waiting for the prefetch thread.
    public var waitNanoseconds: UInt64 {
        condition.lock()
        defer { condition.unlock() }
        return waited
    }

    /// Rows in the global batch that starts at `offset`.
    public func globalBatchCount(offset: Int) -> Int { min(shard.globalBatchSize, rows - offset) }

    /// The position after the step at `position`.
    func advance(_ position: Position) -> Position {
        let next = position.offset + shard.globalBatchSize
        return next >= rows ? Position(epoch: position.epoch + 1, offset: 0) : Position(epoch: position.epoch, offset: next)
    }

    /// This rank's rows of the step at (`epoch`, `offset`), and the size of the global batch. The
    /// view stays valid until the next call.
    public func batch(epoch: Int, offset: Int) -> (batch: BatchView, globalCount: Int) {
        precondition(epoch >= 0 && offset >= 0 && offset < rows, "position (\(epoch), \(offset)) out of range")
        let position = Position(epoch: epoch, offset: offset)
        condition.lock()
        if !running { start() }
        held = -1
        if position != expected {
            // Not where the prefetch was heading (a resume, or a skip): restart there.
            generation += 1
            produced = consumed
            cursor = position
            expected = position
        }
        condition.broadcast()
        if produced <= consumed {
            let t0 = DispatchTime.now().uptimeNanoseconds
            while produced <= consumed { condition.wait() }
            waited += DispatchTime.now().uptimeNanoseconds - t0
        }
        held = consumed
        consumed += 1
        expected = advance(position)
        condition.broadcast()
        let slot = slots[held % slots.count]
        condition.unlock()
        return (slot.view, globalBatchCount(offset: offset))
    }

    /// Global step `step` of a run that starts at epoch 0, offset 0 and never resumes.
    public func batch(step: Int) -> (batch: BatchView, globalCount: Int) {
        batch(epoch: step / stepsPerEpoch, offset: (step % stepsPerEpoch) * shard.globalBatchSize)
    }

    /// Stops the prefetch thread (also done on deinit).
    public func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        while running { condition.wait() }
        condition.unlock()
    }

    private func start() {
        running = true
        let thread = Thread { [unowned self] in self.produce() }
        thread.name = "rec-dist prefetch"
        thread.start()
    }

    /// Whether the next item's slot is free (called with the lock held): the items from the one
    /// the trainer holds (or takes next) up to `produced` occupy slots.
    private var canProduce: Bool {
        let lowest = held >= 0 ? held : consumed
        return produced < lowest + slots.count
    }

    private func produce() {
        var permutation: EpochPermutation?
        var permutationEpoch = -1
        condition.lock()
        while true {
            while !stopping && !canProduce { condition.wait() }
            if stopping { break }
            let sequence = produced
            let position = cursor
            let gen = generation
            condition.unlock()

            if position.epoch != permutationEpoch {
                permutation = order.epoch(position.epoch)
                permutationEpoch = position.epoch
            }
            fill(slots[sequence % slots.count], offset: position.offset, permutation: permutation!)

            condition.lock()
            if gen == generation && produced == sequence {
                produced = sequence + 1
                cursor = advance(position)
            }
            condition.broadcast()
        }
        running = false
        condition.broadcast()
        condition.unlock()
    }

    /// Gathers this rank's rows of the global batch at `offset` into `slot`.
    private func fill(_ slot: FeatureRowsBuffer, offset: Int, permutation: EpochPermutation) {
        let first = min(offset + shard.rank * shard.blockSize, rows)
        let positions = first..<min(first + shard.blockSize, rows)
        var k = 0
        if readDescriptor >= 0 {
            for position in positions {
                if !split.readRow(permutation.row(position), to: slot, slot: k, descriptor: readDescriptor) {
                    // A read error on a file that opened and verified: fall back to the mapping.
                    split.copyRow(permutation.row(position), to: slot, slot: k)
                }
                k += 1
            }
        } else {
            for position in positions {
                split.copyRow(permutation.row(position), to: slot, slot: k)
                k += 1
                meter.rowRead()
            }
        }
        slot.count = k
    }
}

/// Keeps the pages of a mapped split that the process holds near a budget: it samples the
/// process's resident file-backed memory (`/proc/self/statm`, one `pread`) every few rows and drops
/// the split's pages when they grew by the budget since the last drop. How much one row maps is not
/// predictable (fault-around, large page-cache folios map 64 KB to 2 MB per fault), so it is
/// measured: the sampling interval adapts to the growth per row seen so far.
final class ResidentMeter {
    let split: PreparedSplitReader
    let budget: Int
    private let statm: Int32
    private let pageSize: Int
    private var baseline = 0
    private var rowsSinceCheck = 0
    private var checkEvery = 8
    /// Where no /proc is readable: an estimate of 3 x 64 KB per row.
    private var estimated = 0

    init(split: PreparedSplitReader, budget: Int) {
        self.split = split
        self.budget = budget
        #if os(Linux)
        statm = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
        #else
        statm = -1
        #endif
        pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        baseline = residentFileBytes() ?? 0
    }

    deinit { if statm >= 0 { close(statm) } }

    /// Resident file-backed bytes of the process (statm's third field), or nil.
    func residentFileBytes() -> Int? {
        guard statm >= 0 else { return nil }
        var buffer = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let n = withUnsafeMutableBytes(of: &buffer) { pread(statm, $0.baseAddress!, 63, 0) }
        guard n > 0 else { return nil }
        return withUnsafeBytes(of: &buffer) { raw -> Int? in
            var field = 0, value = 0
            for i in 0..<n {
                let b = raw[i]
                if b == UInt8(ascii: " ") {
                    field += 1
                    if field == 3 { return value * pageSize }
                    value = 0
                } else if b &- UInt8(ascii: "0") <= 9 {
                    value = value * 10 + Int(b &- UInt8(ascii: "0"))
                }
            }
            return nil
        }
    }

    /// Counts one row read; samples and releases as needed.
    @inline(__always)
    func rowRead() {
        rowsSinceCheck += 1
        guard rowsSinceCheck >= checkEvery else { return }
        guard let now = residentFileBytes() else {
            estimated += rowsSinceCheck * 3 * 65_536
            rowsSinceCheck = 0
            if estimated >= budget {
                estimated = 0
                split.releaseResidentPages()
            }
            return
        }
        let growth = max(now - baseline, 0)
        // Aim to look again after about a quarter of the budget at the growth rate seen.
        let perRow = max(growth / rowsSinceCheck, 1)
        checkEvery = min(max(budget / 4 / perRow, 4), 4096)
        rowsSinceCheck = 0
        if growth >= budget {
            split.releaseResidentPages()
            baseline = residentFileBytes() ?? 0
        }
    }
}
