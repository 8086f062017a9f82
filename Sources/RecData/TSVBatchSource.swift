import Foundation
import RecCore

/// Batches from a raw Criteo TSV file (label, I1-I13, C1-C26): each rank parses only its
/// block-cyclic shard of the training rows into memory, at stable addresses for the run.
///
/// Training is the file's first rows and evaluation its tail (`DataSplit.trainEval`), unless a
/// separate evaluation file is given. A run resumed at a position that the global batch does not
/// divide also holds the shard of the rest of that epoch, so the resumed epoch reads exactly the
/// rows an uninterrupted run would.
public final class TSVBatchSource: BatchSource {
    let shard: BlockCyclicShard
    let store: FeatureRowsBuffer
    /// When resuming mid-epoch off the batch grid: the offset, and the shard of the rest of that epoch.
    let rest: (offset: Int, shard: BlockCyclicShard, store: FeatureRowsBuffer)?

    public var rows: Int { shard.rows.count }
    public var globalBatchSize: Int { shard.globalBatchSize }
    public var waitNanoseconds: UInt64 { 0 }

    init(shard: BlockCyclicShard, store: FeatureRowsBuffer,
         rest: (offset: Int, shard: BlockCyclicShard, store: FeatureRowsBuffer)?) {
        self.shard = shard
        self.store = store
        self.rest = rest
    }

    public func batch(epoch: Int, offset: Int) -> (batch: BatchView, globalCount: Int) {
        if offset % shard.globalBatchSize == 0 {
            let step = offset / shard.globalBatchSize
            return (store.view(shard.localRange(step: step)), shard.globalBatchCount(step: step))
        }
        guard let rest, offset >= rest.offset, (offset - rest.offset) % shard.globalBatchSize == 0 else {
            preconditionFailure("position \(offset) of epoch \(epoch) is not a batch boundary of this run")
        }
        let step = (offset - rest.offset) / shard.globalBatchSize
        return (rest.store.view(rest.shard.localRange(step: step)), rest.shard.globalBatchCount(step: step))
    }

    public func stop() {}

    /// Parses this rank's training rows of `path` (and, on rank 0, the evaluation rows: the file's
    /// held-out tail, or `evalPath`; with the tail, the true probabilities from `synth`'s side
    /// file when one matches the file).
    ///
    /// - Parameters:
    ///   - blockSize: rows per rank per global batch.
    ///   - resumeOffset: the data position the run starts at, in rows of its epoch.
    public static func load(path: String, evalPath: String?, evalFraction: Double, rank: Int, worldSize: Int,
                            blockSize: Int, resumeOffset: Int) throws -> TrainingData {
        let file = try MappedFile(path: path)
        let rowCount = CriteoTSV.countRows(file)
        let split = evalPath == nil
            ? DataSplit.trainEval(rowCount: rowCount, evalFraction: evalFraction)
            : (train: 0..<rowCount, eval: 0..<0)
        guard !split.train.isEmpty else {
            throw NotEnoughDataError("'\(path)' has \(rowCount) rows: nothing left to train on. "
                + "Use a larger file or a smaller --eval-fraction.")
        }
        let start = Date()
        let shard = BlockCyclicShard(rank: rank, worldSize: worldSize, blockSize: blockSize, rows: split.train)
        let train = try CriteoTSV.parse(file, selecting: shard.contains)
        precondition(train.count == shard.localCount)
        var rest: (offset: Int, shard: BlockCyclicShard, store: FeatureRowsBuffer)?
        if resumeOffset > 0 && resumeOffset % shard.globalBatchSize != 0 && resumeOffset < split.train.count {
            let rows = (split.train.lowerBound + resumeOffset)..<split.train.upperBound
            let s = BlockCyclicShard(rank: rank, worldSize: worldSize, blockSize: blockSize, rows: rows)
            rest = (resumeOffset, s, FeatureRowsBuffer(try CriteoTSV.parse(file, selecting: s.contains)))
        }
        var eval = CriteoRows()
        var oracle: [Double]?
        if rank == 0 {
            if let evalPath {
                eval = try CriteoTSV.parse(try MappedFile(path: evalPath))
            } else if !split.eval.isEmpty {
                let range = split.eval
                eval = try CriteoTSV.parse(file, selecting: { range.contains($0) })
                let sidePath = SynthGenerator.defaultProbabilitiesPath(for: path)
                if FileManager.default.fileExists(atPath: sidePath) {
                    let all = try SynthGenerator.readProbabilities(path: sidePath)
                    if all.count == rowCount { oracle = Array(all[range]) }
                }
            }
        }
        let source = TSVBatchSource(shard: shard, store: FeatureRowsBuffer(train), rest: rest)
        var data = TrainingData(source: source, eval: FeatureRowsBuffer(eval), oracle: oracle)
        data.details.append("loaded \(train.count) training rows (of \(split.train.count)) and \(eval.count) evaluation rows in \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
        return data
    }
}
