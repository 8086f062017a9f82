import Foundation
import RecDistributed

/// What the ranks of one job must agree on before anything else.
extension Communicator {
    /// Rank `root`'s `bytes` on every rank (its length, then its bytes). Collective.
    func broadcastBytes(_ bytes: [UInt8], root: Int = 0) throws -> [UInt8] {
        var length = [Double(bytes.count)]
        try length.withUnsafeMutableBytes { try broadcast($0, root: root) }
        guard length[0] > 0 else { return [] }
        var received = rank == root ? bytes : [UInt8](repeating: 0, count: Int(length[0]))
        try received.withUnsafeMutableBytes { try broadcast($0, root: root) }
        return received
    }

    /// Every rank must run `configuration` as rank 0 has it: ranks started with other flags
    /// (mpirun's `-np 1 rec-dist train A : -np 1 rec-dist train B`, or a wrapper that builds each
    /// rank's command line) would meet in collectives of other sizes and trap or hang. Rank 0's
    /// configuration goes to every rank; the lowest rank that differs says how, and every rank
    /// stops alike with a `modelConfig` error (a usage error) naming the ranks and the first
    /// fields that differ. Collective: call it before any other.
    func requireSameConfiguration(_ configuration: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let mine = try encoder.encode(configuration)
        let first = try broadcastBytes(rank == 0 ? Array(mine) : [])
        var differences: [String] = []
        if rank != 0 {
            let theirs = flattened(try? JSONSerialization.jsonObject(with: Data(first))), ours = flattened(try? JSONSerialization.jsonObject(with: mine))
            for key in Set(theirs.keys).union(ours.keys).sorted() where theirs[key] != ours[key] {
                differences.append("\(key) \(ours[key] ?? "unset") (rank 0: \(theirs[key] ?? "unset"))")
            }
        }
        var flags = [Double](repeating: 0, count: size)
        flags[rank] = differences.isEmpty ? 0 : 1
        flags = try allreduceMax(flags)
        let differing = flags.indices.filter { flags[$0] != 0 }
        guard let reporter = differing.first else { return }
        let said = try broadcastBytes(rank == reporter ? Array(differences.prefix(4).joined(separator: ", ").utf8) : [], root: reporter)
        throw TrainingError.modelConfig("rank(s) \(differing.map(String.init).joined(separator: ", ")) were started with other flags than rank 0 (rank \(reporter): \(String(decoding: said, as: UTF8.self))); give every rank the same command line")
    }
}

/// A decoded JSON value as its leaves by key path ("model.hidden" -> "[64,32]").
private func flattened(_ value: Any?, prefix: String = "") -> [String: String] {
    guard let object = value as? [String: Any] else {
        guard let value else { return [:] }
        let text = (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]))
            .map { String(decoding: $0, as: UTF8.self) } ?? "\(value)"
        return [prefix: text]
    }
    var leaves: [String: String] = [:]
    for (key, inner) in object { leaves.merge(flattened(inner, prefix: prefix.isEmpty ? key : prefix + "." + key)) { a, _ in a } }
    return leaves
}
