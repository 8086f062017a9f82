import Foundation
import RecCore
import RecDistributed
import RecDistributedTesting
import Testing

/// The in-process N-rank communicator against serial references, and the gradient sync against
/// a dense accumulation of the same sparse gradients.
struct CommunicatorTests {
    @Test(arguments: [1, 2, 3, 4])
    func allreduceBroadcastAllgatherv(size: Int) throws {
        let results = try InProcessGroup.run(size: size) { comm -> ([Float], [Double], [UInt8], [UInt8]) in
            var floats = (0..<1000).map { Float($0 % 17) * Float(comm.rank + 1) }
            try floats.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
            let maxima = try comm.allreduceMax([Double(comm.rank), -Double(comm.rank)])
            var payload = [UInt8](repeating: UInt8(comm.rank), count: 5)
            if comm.rank == size - 1 { payload = [9, 8, 7, 6, 5] }
            try payload.withUnsafeMutableBytes { try comm.broadcast($0, root: size - 1) }
            // Rank r sends r + 1 bytes of value r.
            let counts = (0..<size).map { $0 + 1 }
            let displacements = counts.indices.map { counts[..<$0].reduce(0, +) }
            let send = [UInt8](repeating: UInt8(comm.rank), count: comm.rank + 1)
            var receive = [UInt8](repeating: 255, count: counts.reduce(0, +))
            try send.withUnsafeBytes { s in
                try receive.withUnsafeMutableBytes { r in
                    try comm.allgatherv(s, into: r, counts: counts, displacements: displacements)
                }
            }
            return (floats, maxima, payload, receive)
        }
        let factor = Float(size * (size + 1) / 2)
        let gathered = (0..<size).flatMap { [UInt8](repeating: UInt8($0), count: $0 + 1) }
        for (floats, maxima, payload, receive) in results {
            #expect(floats == (0..<1000).map { Float($0 % 17) * factor })
            #expect(maxima == [Double(size - 1), 0])
            #expect(payload == (size == 1 ? [9, 8, 7, 6, 5] : [9, 8, 7, 6, 5]))
            #expect(receive == gathered)
        }
    }

    /// Coalesced sparse gradients equal a dense scatter-add of every rank's pairs, on every rank:
    /// on a small table (the dense exchange from 2 ranks), and on 40 rows at the end of a table of
    /// more than 2^31 rows (the row-record exchange, rows beyond 32 bits; the row map's pages are
    /// mapped untouched, so this costs megabytes).
    @Test(arguments: [(1, 0, true), (2, 0, true), (3, 0, true), (1, 1 << 31 | 5, true), (2, 1 << 31 | 5, true),
                      (3, 1 << 31 | 5, true), (2, 1 << 31 | 5, false)])
    func sparseExchangeMatchesDenseAccumulation(size: Int, firstRow: Int, localSums: Bool) throws {
        let rows = 40, dim = 3, pairsPerRank = 25
        @Sendable func pairs(rank: Int) -> ([Int], [Float]) {
            var rng = RNG(seed: 11, stream: UInt64(rank))
            let r = (0..<(pairsPerRank - rank)).map { _ in rng.nextInt(below: rows) }
            let v = (0..<(r.count * dim)).map { _ in rng.uniform(-1, 1) }
            return (r, v)
        }
        var dense = [Double](repeating: 0, count: rows * dim)
        for rank in 0..<size {
            let (r, v) = pairs(rank: rank)
            for (i, row) in r.enumerated() { for k in 0..<dim { dense[row * dim + k] += Double(v[i * dim + k]) } }
        }
        let results = try InProcessGroup.run(size: size) { comm -> [Double] in
            let sync = GradientSync(communicator: comm, denseCount: 0, embeddingRows: firstRow + rows, dim: dim,
                                    maxLocalPairs: pairsPerRank, localSums: localSums)
            #expect(sync.embeddingExchange == (size == 1 ? .local : firstRow == 0 ? .dense : .rows))
            let local = SparseGradient(capacity: pairsPerRank, dim: dim)
            let (r, v) = pairs(rank: comm.rank)
            local.count = r.count
            for i in r.indices { local.rows[i] = firstRow + r[i] }
            for i in v.indices { local.values[i] = v[i] }
            var out = [Double](repeating: 0, count: rows * dim)
            for _ in 0..<2 {   // twice: the row map must be reset between steps
                try sync.exchange(local)
                out = [Double](repeating: 0, count: rows * dim)
                var seen = Set<Int>()
                for i in 0..<sync.rowCount {
                    let row = sync.rows[i] - firstRow
                    #expect(seen.insert(row).inserted, "row \(row) appears twice after coalescing")
                    #expect(row >= 0 && row < rows, "row \(sync.rows[i]) is not one of the pairs' rows")
                    guard row >= 0 && row < rows else { continue }
                    for k in 0..<dim { out[row * dim + k] = Double(sync.values.pointer[i * dim + k]) }
                }
            }
            return out
        }
        for out in results {
            for i in dense.indices { #expect(abs(out[i] - dense[i]) < 1e-5) }
        }
    }
}
