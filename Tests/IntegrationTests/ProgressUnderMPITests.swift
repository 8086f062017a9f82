import Foundation
import Testing

/// The plain progress lines of a train log: each log line is `TIME message`, TIME the line's UTC
/// time in ISO 8601 with milliseconds (`2026-12-05T12:34:56.789Z`).
enum ProgressLines {
    /// The messages of the `step N/M` lines in `text`, after checking that every log line there
    /// (progress, evaluation, notices) carries a well-formed timestamp within `from...to` (to the
    /// millisecond), in order. The summary's lines (from `done:` on) carry none.
    static func progress(_ text: String, from: Date, to: Date) throws -> [Substring] {
        let format = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        let body = text.components(separatedBy: "\ndone: ")[0]
        var last = from.addingTimeInterval(-0.001)
        var messages: [Substring] = []
        for line in body.split(separator: "\n") {
            let stamp = String(line.prefix(24))
            guard line.count > 25, stamp.wholeMatch(of: #/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/#) != nil,
                  line.dropFirst(24).first == " ", let time = try? format.parse(stamp) else {
                Issue.record("a log line without a leading timestamp: \(line.debugDescription)")
                continue
            }
            #expect(time >= last && time <= to.addingTimeInterval(0.001), "\(stamp) out of order or outside the run (\(from)...\(to))")
            last = time
            messages.append(line.dropFirst(25))
        }
        return messages.filter { $0.hasPrefix("step ") && !$0.hasPrefix("step time") }
    }
}

/// Under mpirun each rank gets a pseudo-terminal even when mpirun's output goes to a file: the
/// bar must not land in the file. Real mpirun (plain, and through launch.sh), output redirected.
struct ProgressUnderMPITests {
    /// Runs `command` with bash, standard output to `file`; returns the file's text.
    static func toFile(_ command: String, _ file: String) throws -> (status: Int32, text: String, all: String) {
        let out = try RecDist.run("/bin/bash", ["-c", command + " > '\(file)'"])
        return (out.status, (try? String(contentsOfFile: file, encoding: .utf8)) ?? "", out.all)
    }

    @Test func plainLinesInAFileUnderMpirun() throws {
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("progress-mpi")
        let train = [RecDist.binary, "train", "--data", data, "--steps", "40", "--log-every", "10", "--batch-size", "16"]
            .map { "'\($0)'" }.joined(separator: " ")
        let root = getuid() == 0 ? "--allow-run-as-root " : ""
        let mpirun = "mpirun \(root)--oversubscribe -np 2 "
        for (name, command) in [("mpirun", mpirun + train),
                                ("launch", "'\(RecDist.packageRoot)/launch.sh' -np 2 -- " + train.split(separator: " ").dropFirst().joined(separator: " "))] {
            let started = Date()
            let run = try Self.toFile(command, "\(dir)/\(name).log")
            #expect(run.status == 0, "\(name): \(run.all)")
            #expect(!run.text.contains("\r") && !run.text.contains("\u{1B}["), "\(name): terminal control characters in the file: \(run.text.debugDescription.prefix(600))")
            let lines = try ProgressLines.progress(run.text, from: started, to: Date())
            #expect(lines.map { String($0.prefix(11)) } == ["step 10/40 ", "step 20/40 ", "step 30/40 ", "step 40/40 "], "\(name): \(run.text)")
            #expect(run.text.contains("done: 40 steps"), "\(name): \(run.text)")
        }
        // The flag forces the bar, even into a file; and turns progress off.
        let bar = try Self.toFile(mpirun + train + " --progress bar", "\(dir)/bar.log")
        #expect(bar.status == 0 && bar.text.contains("\r") && bar.text.contains("40/40 100.0%"), "\(bar.text.debugDescription.prefix(600))")
        #expect(!bar.text.contains("Z step "), "no timestamps with the bar: \(bar.text.debugDescription.prefix(600))")
        let off = try Self.toFile(mpirun + train + " --progress off", "\(dir)/off.log")
        #expect(off.status == 0 && !off.text.contains("step 10/40") && off.text.contains("done: 40 steps"), "\(off.text)")
    }
}
