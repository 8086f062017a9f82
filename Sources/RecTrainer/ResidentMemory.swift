#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// The process's resident memory, in bytes: VmRSS and VmHWM (the peak) from /proc/self/status on
/// Linux. getrusage's ru_maxrss is no substitute there: it would include the parent's size when
/// the process was spawned, as exec keeps the high-water mark of the image it replaces.
public enum ResidentMemory {
    /// The peak resident set size so far (VmHWM); ru_maxrss where /proc is absent.
    public static func peakBytes() -> Int {
        let v = statusField("VmHWM")
        if v > 0 { return v }
        var usage = rusage()
        #if os(Linux)
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return Int(usage.ru_maxrss) * 1024   // kilobytes on Linux
        #else
        getrusage(RUSAGE_SELF, &usage)
        return Int(usage.ru_maxrss)          // bytes on macOS
        #endif
    }

    /// The peak in MB (2^20 bytes).
    public static func peakMegabytes() -> Int { peakBytes() >> 20 }

    /// The current resident set size (VmRSS), or 0 where /proc is absent.
    public static func currentBytes() -> Int { statusField("VmRSS") }

    /// Resets the peak to the current size (Linux: write 5 to /proc/self/clear_refs).
    public static func resetPeak() {
        let fd = open("/proc/self/clear_refs", O_WRONLY)
        guard fd >= 0 else { return }
        _ = write(fd, "5", 1)
        close(fd)
    }

    /// The memory the host can give new allocations (MemAvailable of /proc/meminfo), in bytes;
    /// nil where /proc is absent.
    public static func availableBytes() -> Int? {
        let v = statusField("MemAvailable", file: "/proc/meminfo")
        return v > 0 ? v : nil
    }

    /// A "Name:   123 kB" field of /proc/self/status (or `file`), in bytes; 0 when absent.
    static func statusField(_ name: String, file: String = "/proc/self/status") -> Int {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            let digits = line.split(separator: " ").compactMap { Int($0) }
            return (digits.first ?? 0) * 1024
        }
        return 0
    }
}
