import Testing
import RecData

@Suite struct BlockCyclicShardTests {
    static let rowCounts = [0, 1, 7, 100, 101, 1003]
    static let worldSizes = [1, 2, 3]
    static let blockSizes = [1, 4, 32]

    /// The rows a shard holds, by brute force over its range.
    func heldRows(_ shard: BlockCyclicShard) -> [Int] {
        shard.rows.filter { shard.contains($0) }
    }

    @Test(arguments: rowCounts, [0, 5])
    func coverageAndStepOrder(rowCount: Int, offset: Int) {
        let rows = min(offset, rowCount)..<rowCount
        for worldSize in Self.worldSizes {
            for blockSize in Self.blockSizes {
                let shards = (0..<worldSize).map {
                    BlockCyclicShard(rank: $0, worldSize: worldSize, blockSize: blockSize, rows: rows)
                }
                let held = shards.map(heldRows)
                let context = "rows \(rows) worldSize \(worldSize) blockSize \(blockSize)"

                // Every training row is held exactly once, and nothing outside the range is.
                #expect(held.flatMap { $0 }.sorted() == Array(rows), "\(context)")
                for shard in shards {
                    #expect(!shard.contains(rows.lowerBound - 1) && !shard.contains(rows.upperBound), "\(context)")
                }
                #expect(shards.map(\.localCount) == held.map(\.count), "\(context)")

                // All ranks agree on the number of steps and on each global batch size.
                let steps = shards[0].stepsPerEpoch
                #expect(shards.allSatisfy { $0.stepsPerEpoch == steps }, "\(context)")
                let g = worldSize * blockSize
                #expect(steps == (rows.count + g - 1) / g, "\(context)")

                // Step s, concatenated over ranks, is global rows [s*G, min((s+1)*G, n)) in order.
                var covered = 0
                for step in 0..<steps {
                    let expected = Array((rows.lowerBound + step * g)..<min(rows.lowerBound + (step + 1) * g, rows.upperBound))
                    var concatenated: [Int] = []
                    for (rank, shard) in shards.enumerated() {
                        let local = shard.localRange(step: step)
                        #expect(local.lowerBound >= 0 && local.upperBound <= held[rank].count, "\(context) step \(step)")
                        concatenated += local.map { held[rank][$0] }
                        #expect(Array(shard.globalRows(step: step)) == local.map { held[rank][$0] }, "\(context) step \(step)")
                        #expect(shard.globalBatchCount(step: step) == expected.count, "\(context) step \(step)")
                    }
                    #expect(concatenated == expected, "\(context) step \(step)")
                    covered += expected.count
                }
                #expect(covered == rows.count, "\(context)")
                // Each rank's local ranges tile its local rows.
                for (rank, shard) in shards.enumerated() {
                    let total = (0..<steps).reduce(0) { $0 + shard.localRange(step: $1).count }
                    #expect(total == held[rank].count, "\(context) rank \(rank)")
                }
            }
        }
    }

    /// `parse(selecting: shard.contains)` returns exactly the shard's rows, in order.
    @Test func parseSelectingShard() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path("synth.tsv")
        try SynthGenerator(seed: 11).write(rows: 1003, to: path, probabilitiesPath: nil)
        let file = try MappedFile(path: path)
        let all = try CriteoTSV.parse(file)
        #expect(all.count == 1003)
        for rowCount in Self.rowCounts {
            let (train, _) = DataSplit.trainEval(rowCount: rowCount, evalFraction: 0.1)
            for worldSize in Self.worldSizes {
                for blockSize in Self.blockSizes {
                    for rank in 0..<worldSize {
                        let shard = BlockCyclicShard(rank: rank, worldSize: worldSize, blockSize: blockSize, rows: train)
                        let local = try CriteoTSV.parse(file, selecting: shard.contains)
                        #expect(firstDifference(local, subset(all, heldRows(shard))) == nil,
                                "rows \(train) worldSize \(worldSize) blockSize \(blockSize) rank \(rank)")
                        #expect(local.count == shard.localCount)
                    }
                }
            }
        }
    }

    @Test func documentedExample() {
        let shards = (0..<2).map { BlockCyclicShard(rank: $0, worldSize: 2, blockSize: 2, rows: 0..<10) }
        #expect(shards[0].stepsPerEpoch == 3)
        #expect((0..<3).map { shards[0].globalRows(step: $0) } == [0..<2, 4..<6, 8..<10])
        #expect((0..<3).map { shards[1].globalRows(step: $0) } == [2..<4, 6..<8, 10..<10])
        #expect(shards[1].localRange(step: 2).isEmpty)
        #expect(shards[0].localRange(step: 2) == 4..<6)
        #expect(shards[0].globalBatchCount(step: 2) == 2)
    }
}

@Suite struct DataSplitTests {
    @Test func tailIsEval() {
        func split(_ n: Int, _ f: Double) -> (Range<Int>, Range<Int>) {
            let s = DataSplit.trainEval(rowCount: n, evalFraction: f)
            return (s.train, s.eval)
        }
        #expect(split(0, 0.1) == (0..<0, 0..<0))
        #expect(split(1, 0.5) == (0..<1, 1..<1))
        #expect(split(2, 0.01) == (0..<1, 1..<2))
        #expect(split(10, 0.2) == (0..<8, 8..<10))
        #expect(split(10, 0) == (0..<10, 10..<10))
        #expect(split(10, 1) == (0..<1, 1..<10))
        #expect(split(1003, 0.1) == (0..<903, 903..<1003))
        #expect(split(1000, 0.0005) == (0..<999, 999..<1000))
    }
}
