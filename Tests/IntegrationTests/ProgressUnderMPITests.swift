import Foundation
import Testing

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
            let run = try Self.toFile(command, "\(dir)/\(name).log")
            #expect(run.status == 0, "\(name): \(run.all)")
            #expect(!run.text.contains("\r") && !run.text.contains("\u{1B}["), "\(name): terminal control characters in the file: \(run.text.debugDescription.prefix(600))")
            let lines = run.text.split(separator: "\n").filter { $0.hasPrefix("step ") && !$0.hasPrefix("step time") }
            #expect(lines.count == 4, "\(name): \(run.text)")
            #expect(run.text.contains("done: 40 steps"), "\(name): \(run.text)")
        }
        // The flag forces the bar, even into a file; and turns progress off.
        let bar = try Self.toFile(mpirun + train + " --progress bar", "\(dir)/bar.log")
        #expect(bar.status == 0 && bar.text.contains("\r") && bar.text.contains("40/40 100.0%"), "\(bar.text.debugDescription.prefix(600))")
        let off = try Self.toFile(mpirun + train + " --progress off", "\(dir)/off.log")
        #expect(off.status == 0 && !off.text.contains("step 10/40") && off.text.contains("done: 40 steps"), "\(off.text)")
    }
}
