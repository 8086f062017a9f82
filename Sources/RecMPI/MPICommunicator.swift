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
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    private let comm: MPI_Comm
    private var finalized = false

    /// Initializes MPI (funneled threading: only the main thread calls MPI).
    public init() throws {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        if initialized == 0 {
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
    }

    /// Ends MPI. Call once, after the last collective.
    public func finalize() {
        guard !finalized else { return }
        finalized = true
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

    private func allreduce<T>(_ buffer: UnsafeMutableBufferPointer<T>, type: MPI_Datatype, op: MPI_Op) throws {
        guard let base = buffer.baseAddress, size > 1 else { return }
        var start = 0
        while start < buffer.count {
            let n = min(Self.chunk, buffer.count - start)
            try check(MPI_Allreduce(rd_in_place(), base + start, Int32(n), type, op, comm), "MPI_Allreduce")
            start += n
        }
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        guard let base = buffer.baseAddress, size > 1 else { return }
        var start = 0
        let chunkBytes = Self.chunk * 4
        while start < buffer.count {
            let n = min(chunkBytes, buffer.count - start)
            try check(MPI_Bcast(base + start, Int32(n), rd_byte(), Int32(root), comm), "MPI_Bcast")
            start += n
        }
    }

    public func allgatherv(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer,
                           counts: [Int], displacements: [Int]) throws {
        precondition(counts.count == size && displacements.count == size)
        precondition(counts[rank] == send.count)
        let c32 = counts.map { Int32($0) }, d32 = displacements.map { Int32($0) }
        let rc = c32.withUnsafeBufferPointer { c in
            d32.withUnsafeBufferPointer { d in
                MPI_Allgatherv(send.baseAddress ?? UnsafeRawPointer(receive.baseAddress!), Int32(send.count),
                               rd_byte(), receive.baseAddress, c.baseAddress, d.baseAddress, rd_byte(), comm)
            }
        }
        try check(rc, "MPI_Allgatherv")
    }

    public func barrier() throws {
        try check(MPI_Barrier(comm), "MPI_Barrier")
    }

    public func abort(code: Int32) -> Never {
        MPI_Abort(comm, code)
        exit(code)
    }
}
