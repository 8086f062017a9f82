import RecCore
import RecData

/// Where the benchmark's batches come from: a pool of synthetic rows in memory (fetching is
/// free), or a prepared dataset through the trainer's loader (memory-mapped, shuffled,
/// prefetched on a thread: its wait is the step's data wait).
final class BenchBatches {
    private let synthetic: SyntheticBatches?
    private let loader: PreparedBatchLoader?
    private let globalBatch: Int
    private let prefetchBytes: Int
    private let residentBudget: Int
    private var step = 0

    init(dataset: PreparedDataset?, rank: Int, worldSize: Int, batchSize: Int, options: BenchmarkOptions) throws {
        globalBatch = batchSize * worldSize
        residentBudget = options.residentDataBytes
        if let dataset {
            let split = try dataset.open(split: "train")
            let rows = split.header.rows
            guard rows >= globalBatch else {
                throw TrainingError.notEnoughData("'\(options.dataPath ?? "")' has \(rows) training rows, fewer than one global batch of \(globalBatch)")
            }
            let shard = BlockCyclicShard(rank: rank, worldSize: worldSize, blockSize: batchSize, rows: 0..<rows)
            let order = EpochOrder(rows: rows, shuffle: true, seed: options.seed)
            let prefetch = PreparedDataOptions().prefetch
            loader = PreparedBatchLoader(split: split, shard: shard, order: order, prefetch: prefetch,
                                         residentBudget: options.residentDataBytes)
            prefetchBytes = prefetch * batchSize * 4 * (1 + dataset.denseCount + dataset.categoricalCount)
            synthetic = nil
        } else {
            synthetic = SyntheticBatches(rank: rank, worldSize: worldSize, batchSize: batchSize,
                                         batches: options.poolBatches, seed: options.seed)
            loader = nil
            prefetchBytes = 0
        }
    }

    /// The row count of the next step's global batch.
    var nextGlobalCount: Int {
        guard let loader else { return globalBatch }
        return loader.globalBatchCount(offset: (step % loader.stepsPerEpoch) * globalBatch)
    }

    /// The next step's batch and the global batch's row count (steps run on through epochs).
    @inline(__always)
    func next() -> (batch: BatchView, globalCount: Int) {
        defer { step += 1 }
        if let synthetic { return (synthetic.batch(step % synthetic.count), globalBatch) }
        return loader!.batch(step: step)
    }

    /// Bytes to account for: the pool, or the prefetch ring plus the resident budget of the mapping.
    var bytes: Int { synthetic?.bytes ?? prefetchBytes + residentBudget }
    var accountingName: String { synthetic == nil ? "prefetch_and_resident_data" : "batch_pool" }

    func stop() { loader?.stop() }
}

/// A fixed pool of synthetic Criteo rows for this rank, in the step's columnar layout: the rank's
/// block of each of `batches` global batches, generated once by `SynthGenerator` (so categorical
/// values follow its Zipf laws). `batch(i)` is a view into the pool: fetching costs nothing.
final class SyntheticBatches {
    let count: Int
    let batchSize: Int
    let labels: FloatBuffer
    let dense: FloatBuffer
    let categorical: UnsafeMutablePointer<UInt32>

    init(rank: Int, worldSize: Int, batchSize: Int, batches: Int, seed: UInt64) {
        count = batches
        self.batchSize = batchSize
        let rows = batches * batchSize
        labels = FloatBuffer(count: rows)
        dense = FloatBuffer(count: rows * CriteoFormat.denseCount)
        categorical = .allocate(capacity: rows * CriteoFormat.categoricalCount)
        let generator = SynthGenerator(seed: seed)
        for s in 0..<batches {
            let first = (s * worldSize + rank) * batchSize
            let block = generator.generate(range: first..<(first + batchSize)).rows
            let r0 = s * batchSize
            block.labels.withUnsafeBufferPointer { (labels.pointer + r0).update(from: $0.baseAddress!, count: batchSize) }
            block.dense.withUnsafeBufferPointer {
                (dense.pointer + r0 * CriteoFormat.denseCount).update(from: $0.baseAddress!, count: $0.count)
            }
            block.categorical.withUnsafeBufferPointer {
                (categorical + r0 * CriteoFormat.categoricalCount).initialize(from: $0.baseAddress!, count: $0.count)
            }
        }
    }

    deinit { categorical.deallocate() }

    var bytes: Int { (labels.count + dense.count) * 4 + count * batchSize * CriteoFormat.categoricalCount * 4 }

    @inline(__always)
    func batch(_ i: Int) -> BatchView {
        let r0 = i * batchSize
        return BatchView(count: batchSize, labels: labels.pointer + r0,
                         dense: dense.pointer + r0 * CriteoFormat.denseCount, denseWidth: CriteoFormat.denseCount,
                         categorical: categorical + r0 * CriteoFormat.categoricalCount,
                         categoricalWidth: CriteoFormat.categoricalCount)
    }
}
