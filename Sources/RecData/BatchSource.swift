import RecCore

/// Where one rank's training batches come from, named by data position.
///
/// A step is named by its data position: the epoch, and the rows of that epoch already consumed
/// over all ranks when it starts (`offset`). Its global batch is the `globalBatchSize` rows from
/// `offset` (fewer at the end of the epoch), and this rank takes its block of them
/// (`BlockCyclicShard`). So which rows a rank reads is a pure function of (rank, ranks, seed,
/// epoch, offset), and a run resumes at any position, even one a different global batch left.
///
/// Two implementations: `TSVBatchSource` (raw Criteo TSV, the rank's rows parsed into memory) and
/// `PreparedBatchLoader` (a prepared split, memory-mapped, shuffled and prefetched on a thread).
public protocol BatchSource: AnyObject {
    /// Positions (rows) of one epoch, over all ranks.
    var rows: Int { get }
    /// Rows of a full global batch: ranks x rows per rank.
    var globalBatchSize: Int { get }
    /// This rank's rows of the global batch that starts `offset` rows into `epoch`, and that
    /// global batch's row count. The view stays valid until the next call.
    func batch(epoch: Int, offset: Int) -> (batch: BatchView, globalCount: Int)
    /// Nanoseconds `batch` spent waiting for rows (a prefetch thread), or 0.
    var waitNanoseconds: UInt64 { get }
    /// Stops background work; the source serves no more batches.
    func stop()
}

extension BatchSource {
    /// Rows in the global batch that starts at `offset`.
    public func globalBatchCount(offset: Int) -> Int { min(globalBatchSize, rows - offset) }

    /// Global batches from `offset` to the end of the epoch.
    public func batchesLeft(from offset: Int) -> Int { (rows - offset + globalBatchSize - 1) / globalBatchSize }

    /// Global batches in a whole epoch.
    public var batchesPerEpoch: Int { batchesLeft(from: 0) }
}

/// The data a training run reads: this rank's batch source and, on rank 0, the evaluation rows.
public struct TrainingData {
    public var source: any BatchSource
    /// The evaluation rows (rank 0; empty elsewhere).
    public var eval: FeatureRowsBuffer
    /// The evaluation rows' ranking groups (leave-last-out: one held-out positive and its
    /// sampled negatives per user), or nil.
    public var evalGroupSize: Int?
    /// The true probabilities of the evaluation rows, when a side file of `synth` has them.
    public var oracle: [Double]?
    /// Worth telling the user (rank 0 logs them), and details for --log-level debug.
    public var notes: [String] = []
    public var details: [String] = []

    public init(source: any BatchSource, eval: FeatureRowsBuffer, evalGroupSize: Int? = nil, oracle: [Double]? = nil) {
        self.source = source
        self.eval = eval
        self.evalGroupSize = evalGroupSize
        self.oracle = oracle
    }
}

/// The data cannot make a single step (an empty split, a file too small).
public struct NotEnoughDataError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
