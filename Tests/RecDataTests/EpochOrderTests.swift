import Foundation
import Testing
@testable import RecData

@Suite struct EpochOrderTests {
    @Test(arguments: [0, 1, 2, 3, 5, 16, 17, 100, 1000, 4097])
    func feistelIsAPermutation(count: Int) {
        for seed: UInt64 in [1, 2, 99] {
            let p = FeistelPermutation(count: count, seed: seed)
            let image = (0..<count).map(p.apply)
            #expect(image.sorted() == Array(0..<count), "count \(count) seed \(seed)")
        }
        if count >= 100 {
            let a = (0..<count).map(FeistelPermutation(count: count, seed: 1).apply)
            let b = (0..<count).map(FeistelPermutation(count: count, seed: 2).apply)
            #expect(a != b && a != Array(0..<count))
        }
    }

    @Test(arguments: [(1000, 0), (1000, 64), (1000, 999), (1000, 1000), (7, 3), (130, 12)])
    func epochsArePermutationsThatDifferPerEpoch(rows: Int, window: Int) {
        let order = EpochOrder(rows: rows, shuffle: true, seed: 7, window: window)
        let e0 = order.epoch(0), e1 = order.epoch(1)
        let first = (0..<rows).map(e0.row), second = (0..<rows).map(e1.row)
        #expect(first.sorted() == Array(0..<rows))
        #expect(second.sorted() == Array(0..<rows))
        #expect(first != second)
        #expect(first == (0..<rows).map(EpochOrder(rows: rows, shuffle: true, seed: 7, window: window).epoch(0).row))
        if window > 0 && window < rows {
            // Each window of positions is one window of rows.
            for start in stride(from: 0, to: rows, by: window) {
                let windows = Set(first[start..<min(start + window, rows)].map { $0 / window })
                #expect(windows.count <= 2, "positions \(start)... span windows \(windows)")
            }
            var visited: [Int] = []
            for row in first where visited.last != row / window { visited.append(row / window) }
            #expect(visited.count == (rows + window - 1) / window, "each window is visited in one run: \(visited)")
        }
        let plain = EpochOrder(rows: rows, shuffle: false, seed: 7).epoch(3)
        #expect((0..<rows).map(plain.row) == Array(0..<rows))
    }

    /// Over an epoch the ranks' rows are the training split, each row once, for N = 1, 2, 3; and
    /// global batch s (concatenated over ranks) is the same rows in the same order for every N.
    @Test(arguments: [0, 1, 12, 130, 1003])
    func shardsCoverTheSplitAndBatchesDoNotDependOnN(rows: Int) {
        let order = EpochOrder(rows: rows, shuffle: true, seed: 3)
        var reference: [[Int]]?
        for n in [1, 2, 3] {
            let shards = (0..<n).map { BlockCyclicShard(rank: $0, worldSize: n, blockSize: 12 / n, rows: 0..<rows) }
            var batches: [[Int]] = []
            var union: [Int] = []
            for epoch in 0..<2 {
                let permutation = order.epoch(epoch)
                for step in 0..<shards[0].stepsPerEpoch {
                    var batch: [Int] = []
                    for shard in shards { batch += shard.globalRows(step: step).map(permutation.row) }
                    #expect(batch.count == shards[0].globalBatchCount(step: step))
                    batches.append(batch)
                    if epoch == 0 { union += batch }
                }
            }
            #expect(union.sorted() == Array(0..<rows), "N=\(n)")
            if let reference {
                #expect(batches == reference, "N=\(n) sees other global batches than N=1")
            } else {
                reference = batches
            }
        }
    }
}

@Suite struct BatchLoaderTests {
    /// A prepared split whose dense value 0 is the row index.
    func split(rows: Int, in directory: TemporaryDirectory) throws -> PreparedSplitReader {
        let path = directory.path("train.rdp")
        let writer = try PreparedSplitWriter(path: path, denseCount: 1, categoricalCount: 2, schemaHash: 1,
                                             split: "train", rowsPerGroup: 16)
        for r in 0..<rows {
            try writer.append(label: Float(r % 2), dense: [Float(r)], categorical: [UInt32(r % 5), UInt32(r)])
        }
        try writer.finish()
        return try PreparedSplitReader(path: path)
    }

    /// The loader's batches for N = 1, 2, 3 ranks (global batch 12) concatenate to the same rows,
    /// cover the split each epoch, and carry each row's own values; through the mapping, and with
    /// preads (a split larger than the resident budget).
    @Test(arguments: [4096, 1 << 30])
    func loaderBatchesMatchTheEpochOrderForOneTwoThreeRanks(residentBudget: Int) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let rows = 130
        let reader = try split(rows: rows, in: directory)
        let order = EpochOrder(rows: rows, shuffle: true, seed: 11)
        var reference: [[Int]]?
        for n in [1, 2, 3] {
            let loaders = (0..<n).map { rank in
                PreparedBatchLoader(split: reader, shard: BlockCyclicShard(rank: rank, worldSize: n, blockSize: 12 / n, rows: 0..<rows),
                                    order: order, prefetch: 3, residentBudget: residentBudget)
            }
            #expect(loaders.allSatisfy { $0.gathersWithReads == (residentBudget == 4096) })
            var steps: [[Int]] = []
            for step in 0..<30 {
                var batch: [Int] = []
                var global = -1
                for loader in loaders {
                    let (view, count) = loader.batch(step: step)
                    global = count
                    for i in 0..<view.count {
                        let r = Int(view.dense[i])
                        #expect(view.labels[i] == Float(r % 2) && view.categorical[2 * i] == UInt32(r % 5)
                                && view.categorical[2 * i + 1] == UInt32(r))
                        batch.append(r)
                    }
                }
                #expect(batch.count == global)
                steps.append(batch)
            }
            loaders.forEach { $0.stop() }
            let perEpoch = loaders[0].stepsPerEpoch
            #expect(perEpoch == 11)
            #expect(steps[0..<perEpoch].flatMap { $0 }.sorted() == Array(0..<rows))
            #expect(steps[perEpoch..<(2 * perEpoch)].flatMap { $0 }.sorted() == Array(0..<rows))
            #expect(steps[0] != steps[perEpoch], "epochs are shuffled differently")
            if let reference { #expect(steps == reference, "N=\(n)") } else { reference = steps }
        }
    }

    /// Asking for a step out of sequence (a resume) restarts the prefetch there.
    @Test func outOfSequenceStepsRestartThePrefetch() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let reader = try split(rows: 50, in: directory)
        let shard = BlockCyclicShard(rank: 0, worldSize: 1, blockSize: 8, rows: 0..<50)
        let order = EpochOrder(rows: 50, shuffle: true, seed: 2)
        let sequential = PreparedBatchLoader(split: reader, shard: shard, order: order)
        var expected: [[Float]] = []
        for step in 0..<40 {
            let (view, _) = sequential.batch(step: step)
            expected.append(Array(UnsafeBufferPointer(start: view.dense, count: view.count)))
        }
        let jumping = PreparedBatchLoader(split: reader, shard: shard, order: order)
        for step in [0, 1, 17, 18, 3, 39, 2] {
            let (view, _) = jumping.batch(step: step)
            #expect(Array(UnsafeBufferPointer(start: view.dense, count: view.count)) == expected[step], "step \(step)")
        }
        #expect(expected[0] != expected[7], "the second epoch has another order")
    }
}
