/// The collectives rec-dist needs, and nothing more.
///
/// One real implementation per backend (`MPICommunicator` in RecMPI), `LocalCommunicator` for a
/// single process, and `InProcessGroup` for N ranks on threads in tests and debugging. Every call
/// is a collective: all ranks make the same calls in the same order with matching sizes.
/// Errors from the backend are thrown, never trapped.
public protocol Communicator: AnyObject {
    /// This process's rank in `0..<size`.
    var rank: Int { get }
    /// The number of ranks.
    var size: Int { get }

    /// Sums `buffer` element-wise over all ranks, in place; every rank gets the sum.
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws
    /// Sums `buffer` element-wise over all ranks, in place (for exact counters and checksums).
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws
    /// Element-wise maximum over all ranks, in place.
    func allreduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) throws
    /// Copies `root`'s `buffer` into every other rank's `buffer`.
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws
    /// Gathers variable-sized byte blocks: rank r's `send` lands in `receive` at
    /// `displacements[r]`, with `counts[r]` bytes. `counts` and `displacements` are in bytes
    /// and identical on all ranks. A `send` that starts exactly at the rank's own block of
    /// `receive` is already in place and is not copied (MPI_IN_PLACE).
    func allgatherv(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer,
                    counts: [Int], displacements: [Int]) throws
    /// Personalized all-to-all of byte blocks: rank r's `sendCounts[s]` bytes at
    /// `sendDisplacements[s]` of `send` land in rank s's `receive` at its `receiveDisplacements[r]`
    /// (with its `receiveCounts[r]` bytes, which must equal them). All four arrays have one entry
    /// per rank and are in bytes; each rank passes its own. `send` and `receive` must not overlap.
    func alltoallv(_ send: UnsafeRawBufferPointer, sendCounts: UnsafeBufferPointer<Int>,
                   sendDisplacements: UnsafeBufferPointer<Int>, into receive: UnsafeMutableRawBufferPointer,
                   receiveCounts: UnsafeBufferPointer<Int>, receiveDisplacements: UnsafeBufferPointer<Int>) throws
    /// Blocks until every rank has called it.
    func barrier() throws

    /// Starts an in-place allreduce-sum of `buffer` and returns at once. The buffer belongs to the
    /// collective until `wait` returns for the request: do not read or write it before.
    ///
    /// Nonblocking collectives are matched like blocking ones: every rank starts the same
    /// collectives in the same order. `test` and `wait` are local and may be called in any order.
    func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> CollectiveRequest
    /// Starts `allgatherv` and returns at once. `send` and `receive` belong to the collective until
    /// `wait` returns. `counts` and `displacements` (bytes, identical on all ranks, one per rank)
    /// are copied before this returns.
    func startAllgatherv(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer,
                         counts: UnsafeBufferPointer<Int>, displacements: UnsafeBufferPointer<Int>) throws
        -> CollectiveRequest
    /// Advances communication and reports whether `request` has completed (after which it must
    /// not be tested or waited for again). Never blocks on other ranks.
    func test(_ request: CollectiveRequest) throws -> Bool
    /// Blocks until `request` has completed.
    func wait(_ request: CollectiveRequest) throws
    /// Ends every rank of the job now with `code` (a fatal error on one rank).
    func abort(code: Int32) -> Never
}

/// A nonblocking collective in flight: an opaque ticket of the communicator that started it.
public struct CollectiveRequest: Sendable, Hashable {
    /// The communicator's own identifier (a slot index); meaningless to anyone else.
    public let id: Int
    public init(id: Int) { self.id = id }
}

/// An error raised by a communication backend.
public struct CommunicatorError: Error, CustomStringConvertible {
    /// The collective that failed, e.g. "MPI_Allreduce".
    public var operation: String
    /// The backend's own explanation.
    public var message: String
    public init(operation: String, message: String) {
        self.operation = operation
        self.message = message
    }
    public var description: String { "\(operation) failed: \(message)" }
}

extension Communicator {
    /// Allreduce of a few scalars, for agreement on counts and flags.
    public func allreduceSum(_ values: [Double]) throws -> [Double] {
        var v = values
        try v.withUnsafeMutableBufferPointer { try allreduceSum($0) }
        return v
    }

    /// Element-wise max of a few scalars over all ranks.
    public func allreduceMax(_ values: [Double]) throws -> [Double] {
        var v = values
        try v.withUnsafeMutableBufferPointer { try allreduceMax($0) }
        return v
    }

    /// Broadcasts a Float buffer from `root`.
    public func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, root: Int) throws {
        try broadcast(UnsafeMutableRawBufferPointer(buffer), root: root)
    }
}
