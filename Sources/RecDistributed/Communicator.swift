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
    /// and identical on all ranks.
    func allgatherv(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer,
                    counts: [Int], displacements: [Int]) throws
    /// Blocks until every rank has called it.
    func barrier() throws
    /// Ends every rank of the job now with `code` (a fatal error on one rank).
    func abort(code: Int32) -> Never
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
