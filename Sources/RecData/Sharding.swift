/// Which training rows one rank holds: the rows are cut into consecutive blocks of `blockSize`
/// rows, and block `k` (counting from `rows.lowerBound`) belongs to rank `k % worldSize`.
///
/// With `G = worldSize * blockSize`, global batch `s` is the rows `[s*G, (s+1)*G)` (relative to
/// `rows.lowerBound`) and rank `r` holds the `r`-th block of it. So the sequence of global
/// batches, and therefore the averaged gradient of each step, is the same for any number of
/// ranks with the same global batch size: 1 rank with block 256 sees exactly what 2 ranks with
/// block 128 see together.
///
/// Only the last global batch may be partial; then some ranks hold fewer than `blockSize` rows
/// of it, possibly none. Every rank computes the same `stepsPerEpoch`, so all ranks run the
/// same number of collective operations.
///
/// ```
/// rows 0..<10, worldSize 2, blockSize 2 (G = 4):
///   step 0: rank 0 [0, 1]  rank 1 [2, 3]
///   step 1: rank 0 [4, 5]  rank 1 [6, 7]
///   step 2: rank 0 [8, 9]  rank 1 []
/// ```
public struct BlockCyclicShard: Sendable, Equatable {
    /// This rank, in `0..<worldSize`.
    public let rank: Int
    /// Number of ranks.
    public let worldSize: Int
    /// Rows per rank per step: the block asked for, or the number of rows when that is smaller (a
    /// larger block holds the same rows, and bounding it keeps the batch arithmetic from overflowing
    /// for a block such as `--batch-size 9223372036854775807`).
    public let blockSize: Int
    /// The global row indices being shared out.
    public let rows: Range<Int>

    /// Shares `rows` out in blocks of `blockSize` over `worldSize` ranks; this is rank `rank`'s part.
    public init(rank: Int, worldSize: Int, blockSize: Int, rows: Range<Int>) {
        precondition(worldSize >= 1, "worldSize must be at least 1, got \(worldSize)")
        precondition(rank >= 0 && rank < worldSize, "rank \(rank) out of range 0..<\(worldSize)")
        precondition(blockSize >= 1, "blockSize must be at least 1, got \(blockSize)")
        precondition(rows.lowerBound >= 0, "row indices must be nonnegative, got \(rows)")
        self.rank = rank
        self.worldSize = worldSize
        self.blockSize = min(blockSize, max(rows.count, 1))
        self.rows = rows
    }

    /// Rows in one global batch: `worldSize * blockSize`.
    public var globalBatchSize: Int { worldSize * blockSize }

    /// Whether this rank holds global row `row`.
    @inlinable
    public func contains(_ row: Int) -> Bool {
        guard rows.contains(row) else { return false }
        return ((row - rows.lowerBound) / blockSize) % worldSize == rank
    }

    /// Number of rows this rank holds.
    public var localCount: Int {
        let n = rows.count
        let g = globalBatchSize
        let fullSteps = n / g
        let rest = n - fullSteps * g
        return fullSteps * blockSize + min(max(rest - rank * blockSize, 0), blockSize)
    }

    /// Steps (global batches) per epoch: `ceil(rows.count / globalBatchSize)`, the same on every
    /// rank; 0 when there are no rows.
    public var stepsPerEpoch: Int {
        (rows.count + globalBatchSize - 1) / globalBatchSize
    }

    /// Number of rows in global batch `step` over all ranks: `globalBatchSize`, except possibly
    /// for the last step.
    public func globalBatchCount(step: Int) -> Int {
        precondition(step >= 0 && step < stepsPerEpoch, "step \(step) out of range 0..<\(stepsPerEpoch)")
        return min(globalBatchSize, rows.count - step * globalBatchSize)
    }

    /// The global row indices this rank uses at `step`; empty when the last, partial global
    /// batch ends before this rank's block.
    public func globalRows(step: Int) -> Range<Int> {
        precondition(step >= 0 && step < stepsPerEpoch, "step \(step) out of range 0..<\(stepsPerEpoch)")
        let start = min(rows.lowerBound + step * globalBatchSize + rank * blockSize, rows.upperBound)
        return start..<min(start + blockSize, rows.upperBound)
    }

    /// The indices into this rank's local rows (the rows it holds, in increasing global order,
    /// as `CriteoTSV.parse(_:selecting: shard.contains)` returns them) used at `step`.
    public func localRange(step: Int) -> Range<Int> {
        let start = step * blockSize
        return start..<(start + globalRows(step: step).count)
    }
}

/// Splitting a file's rows into training and evaluation rows.
public struct DataSplit: Sendable {
    /// Evaluation is the last `round(rowCount * evalFraction)` rows, training the rest.
    ///
    /// When `evalFraction > 0` and there are at least 2 rows, evaluation gets at least 1 row and
    /// training keeps at least 1. Taking the tail (rather than a random sample) keeps the split
    /// a pure function of the row count, and mirrors the usual Criteo protocol of evaluating on
    /// the last day.
    public static func trainEval(rowCount: Int, evalFraction: Double) -> (train: Range<Int>, eval: Range<Int>) {
        precondition(rowCount >= 0, "rowCount must be nonnegative, got \(rowCount)")
        precondition(evalFraction >= 0 && evalFraction <= 1, "evalFraction must be in 0...1, got \(evalFraction)")
        var evalCount = Int((Double(rowCount) * evalFraction).rounded())
        if evalFraction > 0 && rowCount >= 2 {
            evalCount = min(max(evalCount, 1), rowCount - 1)
        } else {
            evalCount = min(evalCount, max(rowCount - 1, 0))
        }
        let trainCount = rowCount - evalCount
        return (0..<trainCount, trainCount..<rowCount)
    }
}
