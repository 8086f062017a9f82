/// What the models with embedding tables (DLRM, logistic regression, Wide & Deep, NCF, two
/// towers) hold and do alike; each subclasses it and owns its layers and buffers besides.
///
/// It holds what `RecModel` asks for (the configuration, the parameter layout, the batch
/// capacity, the training context), the tables, the categorical fields they are looked up for
/// (`columns`, one table each, in table order) and the table rows the last forward looked up
/// (`rows`: (maxBatch, columns.count)), which the backward pass hands on as the sparse
/// gradient's rows.
public class EmbeddingModelBase {
    public let config: ModelConfig
    public let layout: ParameterLayout
    public let maxBatch: Int
    public var trainingContext: TrainingContext?
    let tables: EmbeddingTables
    let columns: [Int]
    let rows: UnsafeMutablePointer<Int>

    init(config: ModelConfig, maxBatch: Int, tables: EmbeddingTables, columns: [Int], layout: ParameterLayout) {
        self.config = config
        self.maxBatch = maxBatch
        self.tables = tables
        self.columns = columns
        self.layout = layout
        rows = .allocateZeroed(maxBatch * columns.count)
    }

    deinit { rows.deallocate() }

    public var embeddings: EmbeddingTables? { tables }

    /// Bytes of `rows`, for the models' `activationBytes`.
    var rowsBytes: Int { maxBatch * columns.count * MemoryLayout<Int>.size }

    /// The table rows of `columns` for the batch's examples, into `rows`.
    func gatherRows(_ batch: BatchView) {
        tables.gatherRows(categorical: batch.categorical, width: batch.categoricalWidth, columns: columns,
                          batch: batch.count, rows: rows)
    }

    /// Every model's seeding: `layers` in order from the dense stream (1), the tables from the
    /// embedding stream (2).
    func initialize(layers: [(any ParameterLayers)?], parameters: UnsafeMutablePointer<Float>,
                    embeddingTable: UnsafeMutablePointer<Float>, seed: UInt64) {
        var rng = RNG(seed: seed, stream: 1)
        for case let layer? in layers { layer.initialize(parameters, with: config.initializer, rng: &rng) }
        var embeddingRNG = RNG(seed: seed, stream: 2)
        tables.initialize(embeddingTable, rng: &embeddingRNG)
    }

    /// Completes the sparse gradient of `n` examples, whose values the model has written: its
    /// rows are the last forward's, one per (example, column); then reports it final.
    func finishSparse(_ sparse: SparseGradient, examples n: Int,
                      events: (BackwardEvent) throws -> Void) rethrows {
        sparse.rows.update(from: rows, count: n * columns.count)
        sparse.count = n * columns.count
        try events(.sparseFinal)
    }
}

/// A layer or a stack of layers that fills its parameters from an initializer.
protocol ParameterLayers {
    func initialize(_ parameters: UnsafeMutablePointer<Float>, with initializer: Initializer, rng: inout RNG)
}

extension Linear: ParameterLayers {}
extension MLPStack: ParameterLayers {}
