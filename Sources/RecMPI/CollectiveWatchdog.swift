import CMPI
import Foundation
import RecDistributed

#if canImport(Glibc)
import Glibc
#endif

/// The collectives `MPICommunicator` issues, by the name a report gives them.
enum CollectiveKind: Int64 {
    case allreduce = 1, broadcast, allgatherv, barrier, finalize, alltoallv

    var name: String {
        switch self {
        case .allreduce: "MPI_Allreduce"
        case .broadcast: "MPI_Bcast"
        case .allgatherv: "MPI_Allgatherv"
        case .barrier: "MPI_Barrier"
        case .finalize: "MPI_Finalize"
        case .alltoallv: "MPI_Alltoallv"
        }
    }

    static func name(_ raw: Int64) -> String { CollectiveKind(rawValue: raw)?.name ?? "collective \(raw)" }
}

/// Seconds on the monotonic clock.
func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Waits for nonblocking collectives with a deadline, and names the ranks that never arrived.
///
/// Everything runs on the thread that calls MPI (`MPI_THREAD_FUNNELED`): the wait polls
/// `MPI_Test` (spinning for the first second, as a blocking collective would, then sleeping 1 ms
/// between polls) until the request completes or the deadline passes.
///
/// Who arrived: a rank that has waited for longer than `noticeAfter` sends a notice (the number k
/// and kind of the latest collective it has started, 16 bytes; with overlapped nonblocking
/// collectives it may be waiting for an earlier one) on a private duplicate of `MPI_COMM_WORLD`, and
/// repeats it every quarter timeout while it keeps waiting. Non-root ranks send theirs to rank 0,
/// rank 0 sends its own to every rank. Collectives that complete quickly (every step's, normally)
/// send nothing, so the cost in a healthy run is one `MPI_Test` on the posted notice receive per
/// collective, plus the polling itself.
///
/// On timeout, rank 0 (after `timeout` seconds) reports which ranks never announced collective #k
/// (stuck or dead), which announced it and then went quiet (stopped inside it), and which are in a
/// different collective with the same number (the ranks' call sequences diverged). The other ranks
/// wait 1.5 x as long, counted from when rank 0 announced itself if it did, so rank 0's report
/// comes first; if rank 0 never arrived they say so. The reporter then calls `MPI_Abort`, which
/// makes `mpirun` end every rank.
final class CollectiveWatchdog {
    let rank: Int
    let size: Int
    /// The private duplicate of `MPI_COMM_WORLD` that carries notices and the finalize barrier.
    let comm: MPI_Comm
    /// The collective timeout; nil when only `MPI_Finalize` is bounded (and no notices are sent).
    let timeout: Double?
    /// Tag of notice messages (only they use point-to-point traffic on `comm`).
    static let tag: Int32 = 7201
    /// Busy-poll this long before sleeping between polls. A blocking collective spins for as long
    /// as it waits, and libnbc's schedules advance only inside MPI_Test, so sleeping early slows
    /// every wait that is a little long (a rank a few ms behind, a busy machine); only waits this
    /// long (evaluation, checkpoints, a stuck rank) sleep, 1 ms at a time.
    static let spinSeconds = 1.0
    /// A gap this long between two polls means this process was not running (stopped).
    static let pauseSeconds = 0.5

    private let receiveBuffer: UnsafeMutablePointer<Int64>
    private var receiveRequest: MPI_Request?
    private let sendBuffers: UnsafeMutablePointer<Int64>
    private var sendRequests: [MPI_Request?]
    /// Per peer: the latest collective it announced, its kind, when we last heard from it, and
    /// when we first heard it announce that collective (monotonic seconds).
    private var peerSequence: [Int64]
    private var peerKind: [Int64]
    private var peerHeard: [Double]
    private var peerSince: [Double]
    /// The latest collective this rank has started (with overlapped nonblocking collectives it may
    /// wait for an earlier one): what its notices announce, as its arrival.
    private var startedSequence: Int64 = 0
    private var startedKind: CollectiveKind = .allreduce

    init(rank: Int, size: Int, comm: MPI_Comm, timeout: Double?) throws {
        self.rank = rank
        self.size = size
        self.comm = comm
        self.timeout = timeout
        receiveBuffer = .allocate(capacity: 2)
        receiveBuffer.initialize(repeating: 0, count: 2)
        sendBuffers = .allocate(capacity: 2 * size)
        sendBuffers.initialize(repeating: 0, count: 2 * size)
        sendRequests = Array(repeating: rd_request_null(), count: size)
        peerSequence = Array(repeating: 0, count: size)
        peerKind = Array(repeating: 0, count: size)
        peerHeard = Array(repeating: 0, count: size)
        peerSince = Array(repeating: 0, count: size)
        receiveRequest = rd_request_null()
        if timeout != nil && size > 1 { try postReceive() }
    }

    deinit {
        receiveBuffer.deallocate()
        sendBuffers.deallocate()
    }

    var notices: Bool { timeout != nil && size > 1 }

    private func postReceive() throws {
        let rc = MPI_Irecv(receiveBuffer, 2, rd_int64(), rd_any_source(), Self.tag, comm, &receiveRequest)
        guard rc == rd_success() else { throw CommunicatorError(operation: "MPI_Irecv", message: "error code \(rc) (collective watchdog)") }
    }

    /// Records that this rank has started collective `sequence` (every rank numbers its
    /// collectives alike, as they start the same ones in the same order), and takes in notices.
    func started(_ sequence: Int64, _ kind: CollectiveKind) throws {
        startedSequence = sequence
        startedKind = kind
        try drain()
    }

    /// Takes in every notice that has arrived.
    func drain() throws {
        guard notices else { return }
        var flag: Int32 = 0
        var status = MPI_Status()
        while true {
            let rc = MPI_Test(&receiveRequest, &flag, &status)
            guard rc == rd_success() else { throw CommunicatorError(operation: "MPI_Test", message: "error code \(rc) (collective watchdog)") }
            guard flag != 0 else { return }
            let source = Int(status.MPI_SOURCE)
            if source >= 0 && source < size {
                let now = monotonicSeconds()
                if receiveBuffer[0] != peerSequence[source] { peerSince[source] = now }
                peerSequence[source] = receiveBuffer[0]
                peerKind[source] = receiveBuffer[1]
                peerHeard[source] = now
            }
            try postReceive()
        }
    }

    /// Tells rank 0 (or, from rank 0, everyone) which collective this rank has reached.
    /// A destination whose previous notice is still in flight is skipped: this never blocks.
    private func announce() {
        var flag: Int32 = 0
        for peer in (rank == 0 ? Array(1..<size) : [0]) {
            if sendRequests[peer] != rd_request_null() {
                MPI_Test(&sendRequests[peer], &flag, rd_status_ignore())
                if flag == 0 { continue }
            }
            let buffer = sendBuffers + 2 * peer
            buffer[0] = startedSequence
            buffer[1] = startedKind.rawValue
            MPI_Isend(buffer, 2, rd_int64(), Int32(peer), Self.tag, comm, &sendRequests[peer])
        }
    }

    /// Polls `request` (collective number `sequence`, started earlier) until it completes; after
    /// `limit` seconds (1.5 x on non-root ranks when notices are on) reports the missing ranks and
    /// aborts the job. A peer has arrived when it has started collective `sequence` or a later one.
    func wait(_ request: inout MPI_Request?, kind: CollectiveKind, sequence: Int64, limit: Double) throws {
        var start = monotonicSeconds()
        let noticeAfter = min(0.05, limit / 10)
        let heartbeat = max(limit / 4, noticeAfter)
        var nextNotice = start + noticeAfter
        var graceGiven = false
        var deadline = start + limit
        var lastPoll = start
        var flag: Int32 = 0
        while true {
            let rc = MPI_Test(&request, &flag, rd_status_ignore())
            guard rc == rd_success() else {
                throw CommunicatorError(operation: kind.name, message: "MPI_Test returned error code \(rc) (rank \(rank) of \(size))")
            }
            if flag != 0 { return }
            let now = monotonicSeconds()
            let gap = now - lastPoll
            lastPoll = now
            if gap > Self.pauseSeconds {
                // This rank itself did not run (stopped, e.g. the whole job suspended with Ctrl-Z
                // and resumed): that time was not spent waiting for the others.
                start += gap
                deadline += gap
                nextNotice = now
            }
            if notices && now >= nextNotice {
                try drain()
                announce()
                nextNotice = now + heartbeat
            }
            if rank != 0 && notices {
                // Give rank 0 the first word: it knows who is missing.
                let base = peerSequence[0] >= sequence ? max(start, peerSince[0]) : start
                deadline = base + 1.5 * limit
            }
            if now >= deadline {
                try drain()
                if rank == 0 && notices && !graceGiven && missing(sequence, kind, now: now, heartbeat: heartbeat).never.count > 0 {
                    // A rank that arrived in the last moments has not announced itself yet.
                    graceGiven = true
                    deadline = now + noticeAfter + 0.05
                    continue
                }
                fail(kind: kind, sequence: sequence, waited: now - start, heartbeat: heartbeat)
            }
            if now - start > Self.spinSeconds { usleep(1000) }
        }
    }

    private func missing(_ sequence: Int64, _ kind: CollectiveKind, now: Double, heartbeat: Double)
        -> (never: [Int], quiet: [Int], elsewhere: [String]) {
        var never: [Int] = [], quiet: [Int] = [], elsewhere: [String] = []
        for peer in 0..<size where peer != rank {
            if peerSequence[peer] < sequence {
                never.append(peer)
            } else if peerSequence[peer] == sequence && peerKind[peer] != kind.rawValue {
                elsewhere.append("rank \(peer) is in \(CollectiveKind.name(peerKind[peer])) #\(sequence) instead (the ranks' collectives do not match)")
            } else if now - peerHeard[peer] > 2 * heartbeat + 0.1 {
                quiet.append(peer)
            }
        }
        return (never, quiet, elsewhere)
    }

    /// Reports why collective `sequence` did not complete, then ends the job.
    private func fail(kind: CollectiveKind, sequence: Int64, waited: Double, heartbeat: Double) -> Never {
        let what = kind == .finalize ? "\(kind.name) (#\(sequence), the end of the run)" : "\(kind.name) #\(sequence)"
        var message = (kind == .finalize ? "shutdown timeout: " : "collective timeout: ")
            + "\(what) waited \(String(format: "%.1f", waited)) s"
        func list(_ ranks: [Int]) -> String { ranks.map(String.init).joined(separator: ", ") }
        if !notices {
            message += " for the other ranks; at least one is still in an earlier collective or stuck "
                + "(an error that only some ranks saw?)"
        } else if rank == 0 {
            let m = missing(sequence, kind, now: monotonicSeconds(), heartbeat: heartbeat)
            var parts: [String] = []
            if !m.never.isEmpty { parts.append("rank(s) \(list(m.never)) never arrived (stuck or dead)") }
            if !m.quiet.isEmpty { parts.append("rank(s) \(list(m.quiet)) arrived but stopped responding (stopped or cut off)") }
            parts += m.elsewhere
            if parts.isEmpty { parts.append("every rank arrived but it did not complete (a network link or the MPI library failed?)") }
            message += "; " + parts.joined(separator: "; ")
        } else if peerSequence[0] >= sequence {
            message += " on rank \(rank); rank 0 arrived but did not report the missing ranks"
        } else {
            message += " on rank \(rank); rank 0 never arrived (stuck or dead), and other ranks may be missing too "
                + "(rank 0 keeps track of them)"
        }
        message += ". Aborting the job."
        let prefix = rank == 0 ? "" : "[rank \(rank)] "
        fflush(nil)
        let line = Array("\(prefix)error: \(message)\n".utf8)
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        MPI_Abort(rd_comm_world(), 1)
        exit(1)
    }

    /// Stops listening for notices (after the finalize barrier: no rank sends any more).
    func close() {
        guard notices else { return }
        try? drain()
        if receiveRequest != rd_request_null() {
            MPI_Cancel(&receiveRequest)
            MPI_Wait(&receiveRequest, rd_status_ignore())
        }
        for peer in 0..<size where sendRequests[peer] != rd_request_null() {
            MPI_Request_free(&sendRequests[peer])
        }
    }
}
