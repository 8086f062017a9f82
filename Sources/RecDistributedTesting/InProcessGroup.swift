import Foundation
import RecDistributed

/// N ranks on N threads of one process: the test double for `MPICommunicator`.
///
/// Collectives combine the ranks' buffers in rank order, so results are deterministic.
/// Use `InProcessGroup.run(size:_:)` to run one closure per rank and collect the results.
public final class InProcessGroup: @unchecked Sendable {
    public let size: Int
    private let condition = NSCondition()
    private var arrived = 0
    private var generation = 0
    private var slots: [UnsafeMutableRawPointer?]
    private var lengths: [Int]

    public init(size: Int) {
        precondition(size >= 1)
        self.size = size
        slots = Array(repeating: nil, count: size)
        lengths = Array(repeating: 0, count: size)
    }

    /// One communicator per rank.
    public func communicator(rank: Int) -> InProcessCommunicator {
        InProcessCommunicator(group: self, rank: rank)
    }

    /// Runs `body` on `size` threads, one per rank, and returns the ranks' results in rank order.
    public static func run<T: Sendable>(size: Int, _ body: @escaping @Sendable (InProcessCommunicator) throws -> T)
        throws -> [T] {
        let group = InProcessGroup(size: size)
        let box = ResultBox<T>(count: size)
        let done = DispatchGroup()
        let lock = NSLock()
        for r in 0..<size {
            done.enter()
            let thread = Thread {
                let result = Result { try body(group.communicator(rank: r)) }
                lock.lock(); box.results[r] = result; lock.unlock()
                done.leave()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        done.wait()
        return try box.results.map { try $0!.get() }
    }

    func barrier() {
        condition.lock()
        let myGeneration = generation
        arrived += 1
        if arrived == size {
            arrived = 0
            generation += 1
            condition.broadcast()
        } else {
            while generation == myGeneration { condition.wait() }
        }
        condition.unlock()
    }

    /// Phase 1 of a collective: publish this rank's buffer; returns once all ranks have.
    func publish(rank: Int, _ pointer: UnsafeMutableRawPointer?, length: Int) {
        condition.lock()
        slots[rank] = pointer
        lengths[rank] = length
        condition.unlock()
        barrier()
    }

    func slot(_ rank: Int) -> (UnsafeMutableRawPointer?, Int) {
        condition.lock(); defer { condition.unlock() }
        return (slots[rank], lengths[rank])
    }
}

private final class ResultBox<T>: @unchecked Sendable {
    var results: [Result<T, any Error>?]
    init(count: Int) { results = Array(repeating: nil, count: count) }
}

/// One rank's view of an `InProcessGroup`.
///
/// Nonblocking collectives are deferred: `start...` only records the operation, `test` reports
/// completion without making progress, and `wait` (or any later blocking collective, which must
/// match after them) runs the recorded operations in the order they were started. So a caller
/// that touches a buffer before waiting for it sees wrong sums in tests, as it could under MPI.
public final class InProcessCommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    let group: InProcessGroup
    public var size: Int { group.size }

    private enum Pending {
        case allreduce(UnsafeMutableBufferPointer<Float>)
        /// counts and displacements are copied to `gatherTables` at `slot`.
        case allgatherv(UnsafeRawBufferPointer, UnsafeMutableRawBufferPointer, slot: Int)
    }
    private static let maxPending = 16
    private var pending: [(id: Int, operation: Pending)] = []
    private var nextRequest = 0
    private var completedThrough = -1
    /// (maxPending, 2, size): counts then displacements of each pending allgatherv.
    private let gatherTables: UnsafeMutablePointer<Int>
    /// Scratch for sums, grown when a larger allreduce comes (so steady state allocates nothing).
    private var scratch = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 16)
    private var scratchBytes = 64

    init(group: InProcessGroup, rank: Int) {
        self.group = group
        self.rank = rank
        pending.reserveCapacity(Self.maxPending)
        gatherTables = .allocate(capacity: Self.maxPending * 2 * group.size)
        gatherTables.initialize(repeating: 0, count: Self.maxPending * 2 * group.size)
    }

    deinit {
        gatherTables.deallocate()
        scratch.deallocate()
    }

    private func reduce<T>(_ buffer: UnsafeMutableBufferPointer<T>, _ combine: (T, T) -> T) {
        runPending(through: Int.max)
        reduceNow(buffer, combine)
    }

    private func reduceNow<T>(_ buffer: UnsafeMutableBufferPointer<T>, _ combine: (T, T) -> T) {
        group.publish(rank: rank, UnsafeMutableRawPointer(buffer.baseAddress), length: buffer.count)
        let bytes = max(buffer.count * MemoryLayout<T>.stride, 1)
        if bytes > scratchBytes {
            scratch.deallocate()
            scratch = .allocate(byteCount: bytes, alignment: 16)
            scratchBytes = bytes
        }
        let result = scratch.bindMemory(to: T.self, capacity: buffer.count)
        for r in 0..<size {
            let (p, n) = group.slot(r)
            precondition(n == buffer.count, "allreduce sizes differ: rank \(r) has \(n), rank \(rank) has \(buffer.count)")
            guard n > 0 else { continue }
            let other = p!.assumingMemoryBound(to: T.self)
            if r == 0 {
                result.initialize(from: other, count: n)
            } else {
                for i in 0..<n { result[i] = combine(result[i], other[i]) }
            }
        }
        group.barrier()   // everyone has read every buffer
        if buffer.count > 0 { buffer.baseAddress!.update(from: result, count: buffer.count) }
        group.barrier()
    }

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws { reduce(buffer, +) }
    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws { reduce(buffer, +) }
    public func allreduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) throws { reduce(buffer, max) }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        runPending(through: Int.max)
        group.publish(rank: rank, buffer.baseAddress, length: buffer.count)
        if rank != root {
            let (p, n) = group.slot(root)
            precondition(n == buffer.count, "broadcast sizes differ")
            if n > 0 { buffer.baseAddress!.copyMemory(from: p!, byteCount: n) }
        }
        group.barrier()
    }

    public func allgatherv(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer,
                           counts: [Int], displacements: [Int]) throws {
        runPending(through: Int.max)
        counts.withUnsafeBufferPointer { c in
            displacements.withUnsafeBufferPointer { d in gather(send, into: receive, counts: c, displacements: d) }
        }
    }

    private func gather(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer,
                        counts: UnsafeBufferPointer<Int>, displacements: UnsafeBufferPointer<Int>) {
        precondition(counts.count == size && counts[rank] == send.count)
        group.publish(rank: rank, UnsafeMutableRawPointer(mutating: send.baseAddress), length: send.count)
        for r in 0..<size {
            let (p, n) = group.slot(r)
            precondition(n == counts[r], "allgatherv: rank \(r) sent \(n) bytes, expected \(counts[r])")
            let destination = receive.baseAddress! + displacements[r]
            // The rank's own block already in place (a send aliasing it) is not copied.
            if n > 0 && UnsafeRawPointer(destination) != UnsafeRawPointer(p!) {
                destination.copyMemory(from: p!, byteCount: n)
            }
        }
        group.barrier()
    }

    public func barrier() throws {
        runPending(through: Int.max)
        group.barrier()
    }

    public func alltoallv(_ send: UnsafeRawBufferPointer, sendCounts: UnsafeBufferPointer<Int>,
                          sendDisplacements: UnsafeBufferPointer<Int>, into receive: UnsafeMutableRawBufferPointer,
                          receiveCounts: UnsafeBufferPointer<Int>, receiveDisplacements: UnsafeBufferPointer<Int>) throws {
        runPending(through: Int.max)
        precondition(sendCounts.count == size && sendDisplacements.count == size
                     && receiveCounts.count == size && receiveDisplacements.count == size)
        // Each rank publishes where its blocks are; every rank then pulls its own block from each.
        var descriptor = (UnsafeRawPointer?.none, sendCounts.baseAddress!, sendDisplacements.baseAddress!)
        descriptor.0 = send.baseAddress
        withUnsafeMutablePointer(to: &descriptor) { d in
            group.publish(rank: rank, UnsafeMutableRawPointer(d), length: 0)
            for s in 0..<size {
                let (p, _) = group.slot(s)
                let (base, counts, displacements) = p!.load(as: (UnsafeRawPointer?, UnsafePointer<Int>, UnsafePointer<Int>).self)
                precondition(counts[rank] == receiveCounts[s],
                             "alltoallv: rank \(s) sends \(counts[rank]) bytes to rank \(rank), which expects \(receiveCounts[s])")
                if counts[rank] > 0 {
                    (receive.baseAddress! + receiveDisplacements[s]).copyMemory(from: base! + displacements[rank], byteCount: counts[rank])
                }
            }
            group.barrier()   // every block has been read before any rank reuses its buffers
        }
    }

    public func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> CollectiveRequest {
        precondition(pending.count < Self.maxPending, "more than \(Self.maxPending) nonblocking collectives in flight")
        nextRequest += 1
        pending.append((nextRequest, .allreduce(buffer)))
        return CollectiveRequest(id: nextRequest)
    }

    public func startAllgatherv(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer,
                                counts: UnsafeBufferPointer<Int>, displacements: UnsafeBufferPointer<Int>) throws
        -> CollectiveRequest {
        precondition(counts.count == size && displacements.count == size)
        precondition(pending.count < Self.maxPending, "more than \(Self.maxPending) nonblocking collectives in flight")
        nextRequest += 1
        let slot = nextRequest % Self.maxPending
        let table = gatherTables + slot * 2 * size
        for r in 0..<size {
            table[r] = counts[r]
            table[size + r] = displacements[r]
        }
        pending.append((nextRequest, .allgatherv(send, receive, slot: slot)))
        return CollectiveRequest(id: nextRequest)
    }

    public func test(_ request: CollectiveRequest) throws -> Bool { request.id <= completedThrough }

    public func wait(_ request: CollectiveRequest) throws {
        precondition(request.id <= nextRequest, "wait for a request this communicator never started")
        runPending(through: request.id)
    }

    /// Runs the deferred collectives with ids up to `id`, in the order they were started.
    private func runPending(through id: Int) {
        while let first = pending.first, first.id <= id {
            pending.removeFirst()
            switch first.operation {
            case .allreduce(let buffer):
                reduceNow(buffer, +)
            case let .allgatherv(send, receive, slot):
                let table = gatherTables + slot * 2 * size
                gather(send, into: receive, counts: UnsafeBufferPointer(start: table, count: size),
                       displacements: UnsafeBufferPointer(start: table + size, count: size))
            }
            completedThrough = first.id
        }
    }

    public func abort(code: Int32) -> Never {
        fatalError("rank \(rank) aborted with code \(code)")
    }
}
