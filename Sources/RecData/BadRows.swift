import Foundation
import RecCore

/// One bad input row: where, what, and its bytes (for the rejects file).
struct BadRow: Sendable {
    var file: Int
    var line: Int
    var problem: LineProblem
    var text: [UInt8]
}

/// Counts bad rows in input order, enforces --max-bad-rows and writes the rejects file.
final class BadRowLog {
    let limit: Int
    let paths: [String]
    let rejectsPath: String
    private(set) var count = 0
    private(set) var perFile: [Int]
    private var handle: FileHandle?

    init(limit: Int, paths: [String], rejectsPath: String) {
        self.limit = limit
        self.paths = paths
        self.rejectsPath = rejectsPath
        perFile = Array(repeating: 0, count: paths.count)
    }

    deinit { try? handle?.close() }

    /// Takes the bad rows of the next chunk in input order. `write` adds them to the rejects file.
    func take(_ rows: [BadRow], write: Bool) throws(DataError) {
        for row in rows {
            count += 1
            let error = row.problem.dataError(file: paths[row.file], line: row.line)
            if count > limit {
                var e = error
                if limit > 0 {
                    e.hint = (e.hint.map { $0 + "; " } ?? "") + "this is bad row \(count), more than --max-bad-rows \(limit) allows"
                } else {
                    e.hint = (e.hint.map { $0 + "; " } ?? "") + "or skip bad rows with --max-bad-rows N (they go to rejects.txt)"
                }
                throw e
            }
            guard write else { continue }
            perFile[row.file] += 1
            if handle == nil {
                _ = FileManager.default.createFile(atPath: rejectsPath, contents: nil)
                handle = FileHandle(forWritingAtPath: rejectsPath)
            }
            var line = Data("\(error.description)\t".utf8)
            line.append(contentsOf: row.text)
            line.append(0x0A)
            handle?.write(line)
        }
    }

    /// Finishes the rejects file; returns its name inside the dataset, if any row was rejected.
    func close() -> String? {
        guard let handle else { return nil }
        try? handle.synchronize()
        try? handle.close()
        self.handle = nil
        return (rejectsPath as NSString).lastPathComponent
    }
}
