import Foundation
import RecCore

/// How training reads a prepared dataset (flags of `train`; ignored for TSV files).
public struct PreparedDataOptions: Sendable, Codable, Equatable {
    /// Shuffle each epoch (seeded by `--seed`); off: the split's stored order.
    public var shuffle: Bool = true
    /// 0: each epoch is a uniform permutation; W: windows of W rows (see `EpochOrder`).
    public var shuffleWindow: Int = 0
    /// The split evaluated on rank 0: "valid" or "test".
    public var evalSplit: String = "valid"
    /// Batches prefetched ahead of the step.
    public var prefetch: Int = 4
    /// Bytes of the mapped split a rank keeps resident before dropping its pages again (they stay
    /// in the page cache); bounds the resident size whatever the dataset's size.
    public var residentBytes: Int = 256 << 20

    public init() {}
}

extension PreparedBatchLoader: BatchSource {
    public var globalBatchSize: Int { shard.globalBatchSize }
}

extension PreparedDataset {
    /// Opens the training split for this rank: maps it, checks this rank's share of its row
    /// groups against their checksums (rank r checks groups r, r + N, ..., so together the ranks
    /// check all of them), and on rank 0 reads the evaluation split (checked in full; the test
    /// split when `evalSplit` is "valid" and that one is empty).
    ///
    /// The batches come from a `PreparedBatchLoader` over this rank's block-cyclic share of the
    /// epoch order's positions (shuffled with `seed`), which serves any data position, so a
    /// resumed run needs nothing more.
    public func trainingData(rank: Int, worldSize: Int, blockSize: Int, seed: UInt64,
                             options: PreparedDataOptions) throws -> TrainingData {
        let start = Date()
        let d = denseCount, c = categoricalCount
        let train = try open(split: "train")
        let n = train.header.rows
        guard n > 0 else {
            throw NotEnoughDataError("the training split of '\(directory)' is empty; re-run prepare with other split options")
        }
        try train.verify(groups: stride(from: rank, to: train.header.groupCount, by: worldSize), releaseEvery: options.residentBytes)
        let shard = BlockCyclicShard(rank: rank, worldSize: worldSize, blockSize: blockSize, rows: 0..<n)
        let order = EpochOrder(rows: n, shuffle: options.shuffle,
                               seed: SplitMix64.mix(seed ^ 0x5348_5546_464C_45), window: options.shuffleWindow)
        let loader = PreparedBatchLoader(split: train, shard: shard, order: order, prefetch: max(options.prefetch, 2),
                                         residentBudget: options.residentBytes)
        var notes: [String] = []
        if rank == 0 && loader.gathersWithReads {
            notes.append("the training split (\(train.byteCount >> 20) MB) is larger than --resident-data (\(options.residentBytes >> 20) MB) and each epoch is a full permutation: rows are read with pread; --shuffle-window reads window by window, much faster")
        }
        var eval = FeatureRowsBuffer(capacity: 0, denseWidth: d, categoricalWidth: c)
        var groupSize: Int?
        if rank == 0 {
            var name = options.evalSplit
            if name == "valid", let valid = manifest.split("valid"), valid.rows == 0,
               let test = manifest.split("test"), test.rows > 0 {
                notes.append("the valid split is empty: evaluating on the test split")
                name = "test"
            }
            let split = try open(split: name)
            groupSize = manifest.split(name)?.groupSize
            try split.verifyAll(releaseEvery: options.residentBytes)
            eval = FeatureRowsBuffer(capacity: split.header.rows, denseWidth: d, categoricalWidth: c)
            for r in 0..<split.header.rows { split.copyRow(r, to: eval, slot: r) }
            eval.count = split.header.rows
            split.releaseResidentPages()
        }
        var data = TrainingData(source: loader, eval: eval, evalGroupSize: groupSize)
        data.notes = notes
        data.details.append("mapped \(n) training rows (\(shard.localCount) per epoch on this rank, row groups verified) and read \(eval.count) evaluation rows in \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
        return data
    }
}
