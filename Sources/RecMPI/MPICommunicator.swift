import CMPI
import RecDistributed

#if canImport(Glibc)
import Glibc
#endif

/// The Open MPI backend of `Communicator`, over MPI_COMM_WORLD.
///
/// Rank and size come from MPI itself, so `mpirun`, `srun --mpi=pmix` and a singleton
/// (`rec-dist train` with no launcher) all work. Errors are returned, not fatal
/// (`MPI_ERRORS_RETURN`), and come back as thrown `CommunicatorError`s. Call from one thread.
///
/// Failures of other ranks:
/// - a rank that dies is the launcher's business: `mpirun` notices and ends the job;
/// - a rank that is stuck (stopped, looping, deadlocked) is caught by the collective watchdog
///   when `collectiveTimeout` is set: every collective then runs as its nonblocking form, polled
///   with a deadline, and on timeout the job is aborted with a report naming the collective and
///   the ranks that never arrived (see `CollectiveWatchdog`). Off, collectives are the plain
///   blocking calls;
/// - `finalize()` waits for every rank for a bounded time (`finalizeTimeout`), so a rank that
///   stops on an error the others never learn about cannot leave them hanging: the job is aborted.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    /// Seconds a collective may wait for the other ranks before the job is aborted; nil: no limit
    /// (blocking collectives, no overhead). Non-root ranks allow 1.5 x as long, so rank 0, which
    /// knows which ranks are missing, reports first.
    public let collectiveTimeout: Double?
    /// Seconds `finalize()` waits for the other ranks to finish before aborting the job:
    /// the collective timeout if it is longer, else 5 s. Finishing is a matched collective too
    /// (every rank's last step is the same), so healthy runs never come near it.
    public var finalizeTimeout: Double
    private let comm: MPI_Comm
    /// A private duplicate of MPI_COMM_WORLD for the watchdog's notices and the finalize barrier.
    private var control: MPI_Comm?
    private let watchdog: CollectiveWatchdog
    /// Collectives issued so far (each chunk of a long buffer counts), numbering reports.
    private var sequence: Int64 = 0
    private var finalized = false

    /// Nonblocking collectives in flight: one slot per request (the request's id), allocated once.
    /// Iallgatherv's 32-bit counts and displacements must outlive the call, so each slot owns a
    /// pair of `size`-long arrays for them.
    static let maxRequests = 16
    private let requests: UnsafeMutablePointer<MPI_Request?>
    private let inUse: UnsafeMutablePointer<Bool>
    private let kinds: UnsafeMutablePointer<CollectiveKind>
    /// Each request's collective number, for the watchdog's reports.
    private let sequences: UnsafeMutablePointer<Int64>
    private let gatherCounts: UnsafeMutablePointer<Int32>
    /// (4, size): an alltoallv's 32-bit send counts, send displacements, receive counts and
    /// receive displacements, allocated once.
    private let alltoallTables: UnsafeMutablePointer<Int32>

    /// Initializes MPI (funneled threading: only the main thread calls MPI).
    ///
    /// - Parameter collectiveTimeout: seconds after which a collective that has not completed
    ///   aborts the job with a report; nil or 0 turns the watchdog off.
    public init(collectiveTimeout: Double? = nil) throws {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized == 0 {
            Self.setTuningDefaults()
            var provided: Int32 = 0
            let rc = MPI_Init_thread(nil, nil, rd_thread_funneled(), &provided)
            guard rc == rd_success() else {
                throw CommunicatorError(operation: "MPI_Init_thread", message: "error code \(rc)")
            }
        }
        comm = rd_comm_world()
        MPI_Comm_set_errhandler(comm, rd_errors_return())
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r)
        size = Int(s)
        let timeout = collectiveTimeout.flatMap { $0 > 0 ? $0 : nil }
        precondition(timeout.map { $0.isFinite } ?? true, "collectiveTimeout must be finite")
        self.collectiveTimeout = timeout
        finalizeTimeout = max(5, timeout ?? 0)
        var dup: MPI_Comm?
        let rc = MPI_Comm_dup(comm, &dup)
        guard rc == rd_success(), let dup else {
            throw CommunicatorError(operation: "MPI_Comm_dup", message: "error code \(rc)")
        }
        control = dup
        MPI_Comm_set_errhandler(control, rd_errors_return())
        watchdog = try CollectiveWatchdog(rank: rank, size: size, comm: dup, timeout: timeout)
        requests = .allocate(capacity: Self.maxRequests)
        requests.initialize(repeating: rd_request_null(), count: Self.maxRequests)
        inUse = .allocate(capacity: Self.maxRequests)
        inUse.initialize(repeating: false, count: Self.maxRequests)
        kinds = .allocate(capacity: Self.maxRequests)
        kinds.initialize(repeating: .allreduce, count: Self.maxRequests)
        sequences = .allocate(capacity: Self.maxRequests)
        sequences.initialize(repeating: 0, count: Self.maxRequests)
        gatherCounts = .allocate(capacity: Self.maxRequests * 2 * size)
        gatherCounts.initialize(repeating: 0, count: Self.maxRequests * 2 * size)
        alltoallTables = .allocate(capacity: 4 * size)
        alltoallTables.initialize(repeating: 0, count: 4 * size)
    }

    /// Open MPI settings rec-dist runs best with, as defaults: a setting given to `mpirun --mca`,
    /// `srun`'s environment or the shell (`OMPI_MCA_*`) wins. Set here, before MPI_Init, so
    /// they hold however the ranks are launched (launch.sh, mpirun by hand, srun, a singleton).
    ///
    /// - `coll_libnbc_iallreduce_algorithm 1` (ring): Open MPI's nonblocking allreduce picks
    ///   a binomial tree for in-place buffers, which first copies the whole buffer, reduces on
    ///   rank 0 only and sends the sum back (two dependent phases); the ring copies nothing
    ///   extra and splits the summing evenly between the ranks (docs/performance.md).
    static func setTuningDefaults() {
        setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "1", 0)
    }

    deinit {
        requests.deallocate()
        inUse.deallocate()
        kinds.deallocate()
        sequences.deallocate()
        gatherCounts.deallocate()
        alltoallTables.deallocate()
    }

    /// Ends MPI. Call once, after the last collective.
    ///
    /// First waits (at most `finalizeTimeout` seconds) until every rank has got here; a rank
    /// that does not (it is still in an earlier collective because it missed an error only this
    /// rank saw, or it is stuck) gets the job aborted with a report instead of a hang.
    public func finalize() {
        guard !finalized else { return }
        finalized = true
        if size > 1 {
            sequence += 1
            var request = rd_request_null()
            try? watchdog.started(sequence, .finalize)
            if MPI_Ibarrier(control, &request) == rd_success() {
                try? watchdog.wait(&request, kind: .finalize, sequence: sequence, limit: finalizeTimeout)
            }
            watchdog.close()
        }
        MPI_Comm_free(&control)
        MPI_Finalize()
    }

    /// The name of the host this rank runs on.
    public var processorName: String {
        var buffer = [CChar](repeating: 0, count: 256)
        var length: Int32 = 0
        MPI_Get_processor_name(&buffer, &length)
        return Self.string(buffer)
    }

    private func check(_ rc: Int32, _ operation: String) throws {
        guard rc != rd_success() else { return }
        var buffer = [CChar](repeating: 0, count: Int(rd_max_error_string()) + 1)
        var length: Int32 = 0
        MPI_Error_string(rc, &buffer, &length)
        throw CommunicatorError(operation: operation,
                                message: "\(Self.string(buffer)) (rank \(rank) of \(size))")
    }

    private static func string(_ buffer: [CChar]) -> String {
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Largest element count per MPI call: counts are 32-bit, and 1-4 MB messages are the
    /// fastest on shared memory, so long buffers go in chunks.
    static let chunk = 1 << 22

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        try allreduce(buffer, type: rd_float(), op: rd_op_sum())
    }

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {
        try allreduce(buffer, type: rd_double(), op: rd_op_sum())
    }

    public func allreduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) throws {
        try allreduce(buffer, type: rd_double(), op: rd_op_max())
    }

    /// Runs one collective: the blocking call, or with the watchdog on, the nonblocking one
    /// polled to completion with a deadline.
    @inline(__always)
    private func collective(_ kind: CollectiveKind, blocking: () -> Int32,
                            nonblocking: (UnsafeMutablePointer<MPI_Request?>) -> Int32) throws {
        sequence += 1
        guard let timeout = collectiveTimeout else {
            try check(blocking(), kind.name)
            return
        }
        try watchdog.started(sequence, kind)
        var request = rd_request_null()
        try check(nonblocking(&request), kind.name)
        try watchdog.wait(&request, kind: kind, sequence: sequence, limit: timeout)
    }

    private func allreduce<T>(_ buffer: UnsafeMutableBufferPointer<T>, type: MPI_Datatype, op: MPI_Op) throws {
        guard let base = buffer.baseAddress, size > 1 else { return }
        var start = 0
        while start < buffer.count {
            let n = min(Self.chunk, buffer.count - start)
            try collective(.allreduce,
                           blocking: { MPI_Allreduce(rd_in_place(), base + start, Int32(n), type, op, comm) },
                           nonblocking: { MPI_Iallreduce(rd_in_place(), base + start, Int32(n), type, op, comm, $0) })
            start += n
        }
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        guard let base = buffer.baseAddress, size > 1 else { return }
        var start = 0
        let chunkBytes = Self.chunk * 4
        while start < buffer.count {
            let n = min(chunkBytes, buffer.count - start)
            try collective(.broadcast,
                           blocking: { MPI_Bcast(base + start, Int32(n), rd_byte(), Int32(root), comm) },
                           nonblocking: { MPI_Ibcast(base + start, Int32(n), rd_byte(), Int32(root), comm, $0) })
            start += n
        }
    }

    public func allgatherv(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer,
                           counts: [Int], displacements: [Int]) throws {
        precondition(counts.count == size && displacements.count == size)
        precondition(counts[rank] == send.count)
        let c32 = counts.map { Int32($0) }, d32 = displacements.map { Int32($0) }
        let sendBase = Self.sendBuffer(send, receive, displacement: displacements[rank])
        // The count arrays must outlive a nonblocking call: it completes inside these closures.
        try c32.withUnsafeBufferPointer { c in
            try d32.withUnsafeBufferPointer { d in
                try collective(.allgatherv,
                               blocking: {
                                   MPI_Allgatherv(sendBase, Int32(send.count), rd_byte(), receive.baseAddress,
                                                  c.baseAddress, d.baseAddress, rd_byte(), comm)
                               },
                               nonblocking: {
                                   MPI_Iallgatherv(sendBase, Int32(send.count), rd_byte(), receive.baseAddress,
                                                   c.baseAddress, d.baseAddress, rd_byte(), comm, $0)
                               })
            }
        }
    }

    /// An allgatherv's send argument: MPI_IN_PLACE when `send` is the rank's own block of
    /// `receive` (MPI forbids passing it aliased), else `send` (never nil: MPI wants an address).
    private static func sendBuffer(_ send: UnsafeRawBufferPointer, _ receive: UnsafeMutableRawBufferPointer,
                                   displacement: Int) -> UnsafeRawPointer? {
        if let base = send.baseAddress, let r = receive.baseAddress, base == UnsafeRawPointer(r + displacement) {
            return UnsafeRawPointer(rd_in_place())
        }
        return send.baseAddress ?? UnsafeRawPointer(receive.baseAddress!)
    }

    public func alltoallv(_ send: UnsafeRawBufferPointer, sendCounts: UnsafeBufferPointer<Int>,
                          sendDisplacements: UnsafeBufferPointer<Int>, into receive: UnsafeMutableRawBufferPointer,
                          receiveCounts: UnsafeBufferPointer<Int>, receiveDisplacements: UnsafeBufferPointer<Int>) throws {
        precondition(sendCounts.count == size && sendDisplacements.count == size
                     && receiveCounts.count == size && receiveDisplacements.count == size)
        let t = alltoallTables
        for (k, table) in [sendCounts, sendDisplacements, receiveCounts, receiveDisplacements].enumerated() {
            for r in 0..<size {
                precondition(table[r] >= 0 && table[r] <= Int(Int32.max), "alltoallv: \(table[r]) bytes exceed MPI's 32-bit counts")
                t[k * size + r] = Int32(table[r])
            }
        }
        // MPI wants addresses even for empty buffers.
        let sendBase = send.baseAddress ?? UnsafeRawPointer(t)
        let receiveBase = receive.baseAddress ?? UnsafeMutableRawPointer(t)
        try collective(.alltoallv,
                       blocking: {
                           MPI_Alltoallv(sendBase, t, t + size, rd_byte(), receiveBase, t + 2 * size, t + 3 * size, rd_byte(), comm)
                       },
                       nonblocking: {
                           MPI_Ialltoallv(sendBase, t, t + size, rd_byte(), receiveBase, t + 2 * size, t + 3 * size, rd_byte(), comm, $0)
                       })
    }

    public func barrier() throws {
        try collective(.barrier, blocking: { MPI_Barrier(comm) }, nonblocking: { MPI_Ibarrier(comm, $0) })
    }

    // MARK: - Nonblocking collectives

    private func freeSlot(_ kind: CollectiveKind) throws -> Int {
        sequence += 1
        if collectiveTimeout != nil { try watchdog.started(sequence, kind) }
        for i in 0..<Self.maxRequests where !inUse[i] {
            inUse[i] = true
            kinds[i] = kind
            sequences[i] = sequence
            return i
        }
        preconditionFailure("more than \(Self.maxRequests) nonblocking collectives in flight")
    }

    public func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> CollectiveRequest {
        let slot = try freeSlot(.allreduce)
        precondition(buffer.count <= Int(Int32.max), "nonblocking allreduce of \(buffer.count) floats: use buckets")
        guard let base = buffer.baseAddress, size > 1 else {
            requests[slot] = rd_request_null()
            return CollectiveRequest(id: slot)
        }
        let rc = MPI_Iallreduce(rd_in_place(), base, Int32(buffer.count), rd_float(), rd_op_sum(), comm,
                                requests + slot)
        if rc != rd_success() { inUse[slot] = false }
        try check(rc, "MPI_Iallreduce")
        return CollectiveRequest(id: slot)
    }

    public func startAllgatherv(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer,
                                counts: UnsafeBufferPointer<Int>, displacements: UnsafeBufferPointer<Int>) throws
        -> CollectiveRequest {
        precondition(counts.count == size && displacements.count == size && counts[rank] == send.count)
        let slot = try freeSlot(.allgatherv)
        let c = gatherCounts + slot * 2 * size, d = c + size
        for r in 0..<size {
            precondition(displacements[r] + counts[r] <= Int(Int32.max), "allgatherv of more than 2 GB")
            c[r] = Int32(counts[r])
            d[r] = Int32(displacements[r])
        }
        let rc = MPI_Iallgatherv(Self.sendBuffer(send, receive, displacement: displacements[rank]), Int32(send.count),
                                 rd_byte(), receive.baseAddress, c, d, rd_byte(), comm, requests + slot)
        if rc != rd_success() { inUse[slot] = false }
        try check(rc, "MPI_Iallgatherv")
        return CollectiveRequest(id: slot)
    }

    public func test(_ request: CollectiveRequest) throws -> Bool {
        let slot = request.id
        precondition(inUse[slot], "test of a request that is not in flight")
        var flag: Int32 = 0
        try check(MPI_Test(requests + slot, &flag, rd_status_ignore()), "MPI_Test")
        if flag != 0 { inUse[slot] = false }
        return flag != 0
    }

    /// With the watchdog on, waits with its deadline (a stuck rank aborts the job with a report).
    public func wait(_ request: CollectiveRequest) throws {
        let slot = request.id
        precondition(inUse[slot], "wait for a request that is not in flight")
        inUse[slot] = false
        if let timeout = collectiveTimeout {
            try watchdog.wait(&requests[slot], kind: kinds[slot], sequence: sequences[slot], limit: timeout)
        } else {
            try check(MPI_Wait(requests + slot, rd_status_ignore()), "MPI_Wait")
        }
    }

    public func abort(code: Int32) -> Never {
        MPI_Abort(comm, code)
        exit(code)
    }
}
