import Foundation

/// Writes buffers to a file on a background thread, in order, with a small pool of buffers (the
/// producer blocks when all are in flight). Every 64 MB it calls fdatasync so the disk works
/// while the producer parses. A write error is reported by the next `submit` or `drain`.
final class BackgroundWriter: @unchecked Sendable {
    let fd: Int32
    let path: String
    let bufferBytes: Int
    private let condition = NSCondition()
    private var pending: [(UnsafeMutableRawPointer, Int)] = []
    private var free: [UnsafeMutableRawPointer] = []
    private var allocated = 0
    private let maxBuffers = 3
    private var failure: DataError?
    private var busy = false
    private var stopping = false
    private var thread: Thread?
    private var sinceSync = 0

    init(fd: Int32, path: String, bufferBytes: Int) {
        self.fd = fd
        self.path = path
        self.bufferBytes = bufferBytes
    }

    deinit {
        for buffer in free { buffer.deallocate() }
        for (buffer, _) in pending { buffer.deallocate() }
    }

    /// A buffer of `bufferBytes` to fill (waits while all are in flight).
    func takeBuffer() -> UnsafeMutableRawPointer {
        condition.lock()
        defer { condition.unlock() }
        while free.isEmpty && allocated >= maxBuffers { condition.wait() }
        if let buffer = free.popLast() { return buffer }
        allocated += 1
        return .allocate(byteCount: max(bufferBytes, 64), alignment: 64)
    }

    func returnBuffer(_ buffer: UnsafeMutableRawPointer) {
        condition.lock()
        free.append(buffer)
        condition.signal()
        condition.unlock()
    }

    /// Queues `count` bytes of `buffer` for writing; the buffer comes back to the pool afterwards.
    func submit(_ buffer: UnsafeMutableRawPointer, count: Int) throws(DataError) {
        condition.lock()
        if let failure {
            condition.unlock()
            throw failure
        }
        pending.append((buffer, count))
        if thread == nil {
            let t = Thread { [unowned self] in self.loop() }
            t.name = "rec-dist writer"
            thread = t
            t.start()
        }
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until everything queued is written.
    func drain() throws(DataError) {
        condition.lock()
        while (!pending.isEmpty || busy) && failure == nil { condition.wait() }
        let failure = self.failure
        condition.unlock()
        if let failure { throw failure }
    }

    /// Ends the thread (after the queue is written).
    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        while thread != nil && (busy || !pending.isEmpty) && failure == nil { condition.wait() }
        condition.unlock()
    }

    /// Writes `bytes` now, on the calling thread (the queue must be empty).
    func writeNow(_ bytes: UnsafeRawBufferPointer) throws(DataError) {
        if let message = writeAll(bytes) { throw message }
    }

    private func loop() {
        condition.lock()
        while true {
            while pending.isEmpty && !stopping { condition.wait() }
            if pending.isEmpty && stopping { break }
            let (buffer, count) = pending.removeFirst()
            busy = true
            condition.unlock()
            let error = failure == nil ? writeAll(UnsafeRawBufferPointer(start: buffer, count: count)) : nil
            sinceSync += count
            if sinceSync >= 64 << 20 {
                sinceSync = 0
                _ = fdatasync(fd)
            }
            condition.lock()
            busy = false
            if let error, failure == nil { failure = error }
            free.append(buffer)
            condition.broadcast()
        }
        thread = nil
        condition.broadcast()
        condition.unlock()
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) -> DataError? {
        writeFully(fd, bytes).map { DataError.writeFailed(path, code: $0) }
    }
}
