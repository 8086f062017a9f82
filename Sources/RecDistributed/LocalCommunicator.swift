/// The communicator of a single process: every collective is the identity.
public final class LocalCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {}
    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {}
    public func allreduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) throws {}
    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        precondition(root == 0, "root \(root) out of range for 1 rank")
    }
    public func allgatherv(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer,
                           counts: [Int], displacements: [Int]) throws {
        precondition(counts.count == 1 && counts[0] == send.count)
        let destination = receive.baseAddress.map { $0 + displacements[0] }
        if send.count > 0 && UnsafeRawPointer(destination) != send.baseAddress {   // else already in place
            destination!.copyMemory(from: send.baseAddress!, byteCount: send.count)
        }
    }
    public func alltoallv(_ send: UnsafeRawBufferPointer, sendCounts: UnsafeBufferPointer<Int>,
                          sendDisplacements: UnsafeBufferPointer<Int>, into receive: UnsafeMutableRawBufferPointer,
                          receiveCounts: UnsafeBufferPointer<Int>, receiveDisplacements: UnsafeBufferPointer<Int>) throws {
        precondition(sendCounts.count == 1 && receiveCounts.count == 1 && sendCounts[0] == receiveCounts[0])
        if sendCounts[0] > 0 {
            (receive.baseAddress! + receiveDisplacements[0]).copyMemory(from: send.baseAddress! + sendDisplacements[0],
                                                                         byteCount: sendCounts[0])
        }
    }
    public func barrier() throws {}
    /// One rank: the sum is the buffer itself, done at once.
    public func startAllreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> CollectiveRequest {
        CollectiveRequest(id: 0)
    }
    public func startAllgatherv(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer,
                                counts: UnsafeBufferPointer<Int>, displacements: UnsafeBufferPointer<Int>) throws
        -> CollectiveRequest {
        precondition(counts.count == 1 && counts[0] == send.count)
        let destination = receive.baseAddress.map { $0 + displacements[0] }
        if send.count > 0 && UnsafeRawPointer(destination) != send.baseAddress {   // else already in place
            destination!.copyMemory(from: send.baseAddress!, byteCount: send.count)
        }
        return CollectiveRequest(id: 0)
    }
    public func test(_ request: CollectiveRequest) throws -> Bool { true }
    public func wait(_ request: CollectiveRequest) throws {}
    public func abort(code: Int32) -> Never {
        exit(code)
    }
}
#if canImport(Glibc)
import Glibc
#endif
