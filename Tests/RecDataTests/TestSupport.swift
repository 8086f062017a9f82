import Foundation
import RecData

/// A fresh directory under the system temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("RecDataTests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    /// The path of `name` inside the directory.
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    /// Writes `text` to `name` and returns its path.
    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        try write(name, bytes: Array(text.utf8))
    }

    /// Writes `bytes` to `name` and returns its path.
    @discardableResult
    func write(_ name: String, bytes: [UInt8]) throws -> String {
        let target = path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: target))
        return target
    }

    func remove() { try? FileManager.default.removeItem(at: url) }
}

/// The bytes of the file at `path`.
func contents(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// Area under the ROC curve of `scores` for 0/1 `labels`, O(n log n), ties counted as 1/2
/// (Mann-Whitney U with average ranks).
func areaUnderROC(scores: [Double], labels: [Float]) -> Double {
    precondition(scores.count == labels.count)
    let order = scores.indices.sorted { scores[$0] < scores[$1] }
    var positiveRankSum = 0.0
    var positives = 0.0
    var i = 0
    while i < order.count {
        var j = i
        while j + 1 < order.count && scores[order[j + 1]] == scores[order[i]] { j += 1 }
        let averageRank = Double(i + j) / 2 + 1
        for k in i...j where labels[order[k]] == 1 {
            positiveRankSum += averageRank
            positives += 1
        }
        i = j + 1
    }
    let negatives = Double(order.count) - positives
    return (positiveRankSum - positives * (positives + 1) / 2) / (positives * negatives)
}

/// Row `r` of `rows` as a standalone `CriteoRows`, for comparing subsets.
func subset(_ rows: CriteoRows, _ indices: [Int]) -> CriteoRows {
    let d = CriteoFormat.denseCount, c = CriteoFormat.categoricalCount
    var labels: [Float] = [], dense: [Float] = [], categorical: [UInt32] = []
    for r in indices {
        labels.append(rows.labels[r])
        dense.append(contentsOf: rows.dense[r * d..<(r + 1) * d])
        categorical.append(contentsOf: rows.categorical[r * c..<(r + 1) * c])
    }
    return CriteoRows(labels: labels, dense: dense, categorical: categorical)
}

/// Builds one TSV line from a label, 13 integer fields and 26 categorical fields (strings, so
/// tests can put anything in them).
func criteoLine(label: String = "0", dense: [String] = Array(repeating: "", count: 13),
                categorical: [String] = Array(repeating: "", count: 26)) -> String {
    ([label] + dense + categorical).joined(separator: "\t")
}

/// nil when `a == b`, else a short description of the first difference (so a failure does
/// not print two arrays of a million values).
func firstDifference<T: Equatable>(_ a: [T], _ b: [T]) -> String? {
    if a == b { return nil }
    if a.count != b.count { return "counts differ: \(a.count) vs \(b.count)" }
    let i = a.indices.first { a[$0] != b[$0] }!
    let differing = zip(a, b).filter { $0 != $1 }.count
    return "\(differing) values differ, first at index \(i): \(a[i]) vs \(b[i])"
}

/// nil when the rows are equal, else which array differs first and where.
func firstDifference(_ a: CriteoRows, _ b: CriteoRows) -> String? {
    if a.count != b.count { return "row counts differ: \(a.count) vs \(b.count)" }
    if let text = firstDifference(a.labels, b.labels) { return "labels: " + text }
    if let text = firstDifference(a.dense, b.dense) { return "dense: " + text }
    if let text = firstDifference(a.categorical, b.categorical) { return "categorical: " + text }
    return nil
}
