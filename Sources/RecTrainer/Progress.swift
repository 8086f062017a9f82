import Foundation
import RecData

/// The console of rank 0: plain lines, and a live status line (the progress bar) at the bottom,
/// redrawn in place with `\r`. A line printed while the bar shows clears it, prints, and draws
/// the bar again below, so log lines and the bar never mix.
///
/// Whether there is a bar at all is `ProgressMode`'s decision: a person watching a terminal gets
/// it; log files, pipes and Slurm's output files get plain periodic lines instead.
public final class Console: @unchecked Sendable {
    public static let shared = Console()

    private let lock = NSLock()
    private var status: String?

    /// The terminal's width in columns (100 when unknown).
    public var columns: Int {
        var size = winsize()
        if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 20 { return Int(size.ws_col) }
        return 100
    }

    /// Writes one line (a newline is added) to standard output or standard error, around the
    /// status line if one is showing.
    public func line(_ text: String, toStandardError: Bool = false) {
        lock.lock()
        defer { lock.unlock() }
        if status != nil { raw("\r\u{1B}[K", fd: STDOUT_FILENO) }
        raw(text + "\n", fd: toStandardError ? STDERR_FILENO : STDOUT_FILENO)
        if let status { raw(status, fd: STDOUT_FILENO) }
    }

    /// Shows `text` as the status line, replacing the previous one.
    public func showStatus(_ text: String) {
        lock.lock()
        defer { lock.unlock() }
        status = text
        raw("\r" + text + "\u{1B}[K", fd: STDOUT_FILENO)
    }

    /// Ends the status line: it stays on screen as the last state, and later lines go below it.
    public func endStatus() {
        lock.lock()
        defer { lock.unlock() }
        if status != nil { raw("\n", fd: STDOUT_FILENO) }
        status = nil
    }

    /// Writes `text` whole (a console that fails to take it is not worth failing the run for).
    private func raw(_ text: String, fd: Int32) {
        _ = Array(text.utf8).withUnsafeBytes { writeFully(fd, $0) }
    }
}

/// The figures of a progress report, and their two renderings: the live bar and the plain line.
public struct ProgressReport: Sendable {
    public var step: Int
    public var totalSteps: Int
    /// 1-based epoch in progress, and the number of epochs of the run.
    public var epoch: Int
    public var totalEpochs: Int
    public var samplesPerSecond: Double
    /// The mean training loss since the last evaluation (nil before the first step).
    public var loss: Double?
    /// Seconds left, estimated from the run's mean step time so far (nil when unknown).
    public var eta: Double?

    /// "1:05", "12:03:09", "--:--" when unknown.
    public static func duration(_ seconds: Double?) -> String {
        guard let seconds, seconds.isFinite, seconds >= 0 else { return "--:--" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60) : String(format: "%ld:%02ld", s / 60, s % 60)
    }

    /// The plain periodic line (log files, Slurm): `step 40/200  epoch 1/1  loss 0.5123  81234 samples/s  ETA 0:12`.
    public var line: String {
        "step \(step)/\(totalSteps)  epoch \(epoch)/\(totalEpochs)  loss \(loss.map { String(format: "%.4f", $0) } ?? "n/a")  \(Int(samplesPerSecond)) samples/s  ETA \(Self.duration(eta))"
    }

    /// The live bar, at most `width` columns:
    /// `epoch 1/3 ▕██████▌     ▏ 1234/5000  24.7%  81234 samples/s  loss 0.4567  ETA 0:32`.
    public func bar(width: Int) -> String {
        let fraction = totalSteps > 0 ? min(max(Double(step) / Double(totalSteps), 0), 1) : 0
        let head = "epoch \(epoch)/\(totalEpochs) "
        let tail = String(format: " %ld/%ld %5.1f%%  %ld samples/s  loss %@  ETA %@", step, totalSteps, fraction * 100,
                          Int(samplesPerSecond), loss.map { String(format: "%.4f", $0) } ?? "n/a", Self.duration(eta))
        let cells = max(10, min(40, width - 1 - head.count - tail.count - 2))
        let eighths = Int((fraction * Double(cells) * 8).rounded(.down))
        let partial = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"]
        var body = String(repeating: "█", count: eighths / 8)
        if eighths / 8 < cells { body += partial[eighths % 8] }
        body += String(repeating: " ", count: max(0, cells - body.count))
        let text = head + "▕" + body + "▏" + tail
        return text.count <= width - 1 ? text : String(text.prefix(width - 1))
    }
}
