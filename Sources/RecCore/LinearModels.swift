/// Logistic regression, the baseline every CTR paper reports:
///
///     logit = b + Σ_f w_f[id_f] + transform(dense) · W
///
/// One weight per categorical id: each field's table is 1 wide (an `EmbeddingTables` of dim 1),
/// so its gradient is sparse like every embedding's, and the rows exchange and lazy optimizer
/// rows work unchanged. Dense parameters: `linear.weight` (denseInputs, 1) and `linear.bias` (1),
/// or only `bias` (1) without dense inputs. The id weights start at 0, W Glorot-uniform.
public final class LogisticRegressionModel: EmbeddingModelBase, RecModel {
    let linear: Linear?          // nil without dense inputs
    let biasOffset: Int          // the bias: linear's, or a lone `bias`
    let denseInput: FloatBuffer  // (maxBatch, denseInputs), transformed
    let logits: FloatBuffer      // (maxBatch)

    public init(config: ModelConfig, maxBatch: Int) {
        precondition(config.kind == .logreg && config.categoricalFields >= 1)
        let columns = Array(0..<config.categoricalFields)
        var layout = ParameterLayout()
        if config.denseInputs > 0 {
            let l = Linear("linear", inputSize: config.denseInputs, outputSize: 1, layout: &layout)
            linear = l
            biasOffset = l.biasOffset
        } else {
            linear = nil
            biasOffset = layout.add("bias", shape: [1])
        }
        denseInput = FloatBuffer(count: maxBatch * config.denseInputs)
        logits = FloatBuffer(count: maxBatch)
        super.init(config: config, maxBatch: maxBatch, tables: config.tables(fields: columns, dim: 1), columns: columns,
                   layout: layout)
    }

    public var activationBytes: Int { (denseInput.count + logits.count) * 4 + rowsBytes }

    public func initialize(parameters: UnsafeMutablePointer<Float>, embeddingTable: UnsafeMutablePointer<Float>,
                           seed: UInt64) {
        var rng = RNG(seed: seed, stream: 1)
        if let linear { linear.initialize(parameters, with: config.initializer, rng: &rng) }
        parameters[biasOffset] = 0
        embeddingTable.update(repeating: 0, count: tables.rowCount)
    }

    public func forward(_ batch: BatchView, parameters: UnsafePointer<Float>,
                        embeddingTable: UnsafePointer<Float>) -> UnsafePointer<Float> {
        let n = batch.count, fields = config.categoricalFields
        precondition(n <= maxBatch && batch.denseWidth == config.denseInputs && batch.categoricalWidth == fields)
        let z = logits.pointer
        if let linear {
            // z = transform(dense)·W + b: (n, 1).
            let x = denseInput.pointer, transform = config.denseTransform
            for i in 0..<(n * config.denseInputs) { x[i] = transform.apply(batch.dense[i]) }
            linear.forward(x: x, y: z, batch: n, parameters: parameters)
        } else {
            for b in 0..<n { z[b] = parameters[biasOffset] }
        }
        gatherRows(batch)
        for b in 0..<n {
            var s: Float = 0
            for f in 0..<fields { s += embeddingTable[rows[b * fields + f]] }
            z[b] += s
        }
        return UnsafePointer(z)
    }

    public func backward(_ batch: BatchView, dLogits: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, sparse: SparseGradient,
                         events: (BackwardEvent) throws -> Void) rethrows {
        let n = batch.count, fields = config.categoricalFields
        precondition(sparse.capacity >= n * fields && sparse.dim == 1)
        // d w_f[id_f] = dz for each (example, field).
        for b in 0..<n { for f in 0..<fields { sparse.values[b * fields + f] = dLogits[b] } }
        try finishSparse(sparse, examples: n, events: events)
        if let linear {
            linear.backward(x: denseInput.pointer, dy: dLogits, dx: nil, batch: n, parameters: parameters,
                            gradients: gradients)
        } else {
            var s: Float = 0
            for b in 0..<n { s += dLogits[b] }
            gradients[biasOffset] += s
        }
        try events(.denseFinal(from: 0))
    }
}

/// Wide & Deep (Cheng et al. 2016):
///
///     wide  = Σ_f w_f[id_f]                                  (a weight per categorical id)
///     deep  = MLP([transform(dense), e_1[id_1], ..., e_F[id_F]]) -> 1   (hidden, then linear)
///     logit = wide + deep
///
/// Each id's wide weight and deep embedding share one table row, (1 + embeddingDim) wide:
/// column 0 is the wide weight (starting at 0), columns 1... the embedding (uniform ±0.05). So
/// one sparse gradient carries both parts and the rows exchange and lazy optimizer rows work
/// unchanged. The deep MLP is the stack "deep": `deep.0` ... with `config.hidden` widths.
public final class WideDeepModel: EmbeddingModelBase, RecModel {
    let deep: MLPStack
    let x: FloatBuffer        // (maxBatch, D + F·E): the deep input
    let dx: FloatBuffer       // (maxBatch, D + F·E)
    let logits: FloatBuffer   // (maxBatch)

    public init(config: ModelConfig, maxBatch: Int) {
        precondition(config.kind == .wideDeep && config.categoricalFields >= 1)
        let columns = Array(0..<config.categoricalFields)
        var layout = ParameterLayout()
        let width = config.denseInputs + config.categoricalFields * config.embeddingDim
        deep = MLPStack("deep", sizes: [width] + config.hidden + [1], hiddenActivation: config.activation("deep"),
                        lastActivation: .linear, dropout: config.dropoutRate("deep"), maxBatch: maxBatch, layout: &layout)
        x = FloatBuffer(count: maxBatch * width)
        dx = FloatBuffer(count: maxBatch * width)
        logits = FloatBuffer(count: maxBatch)
        super.init(config: config, maxBatch: maxBatch, tables: config.tables(fields: columns, dim: 1 + config.embeddingDim),
                   columns: columns, layout: layout)
    }

    public var activationBytes: Int { deep.activationBytes + (x.count + dx.count + logits.count) * 4 + rowsBytes }

    public func initialize(parameters: UnsafeMutablePointer<Float>, embeddingTable: UnsafeMutablePointer<Float>,
                           seed: UInt64) {
        initialize(layers: [deep], parameters: parameters, embeddingTable: embeddingTable, seed: seed)
        let rowWidth = tables.dim
        for r in 0..<tables.rowCount { embeddingTable[r * rowWidth] = 0 }   // wide weights start at 0
    }

    public func forward(_ batch: BatchView, parameters: UnsafePointer<Float>,
                        embeddingTable: UnsafePointer<Float>) -> UnsafePointer<Float> {
        let n = batch.count, fields = config.categoricalFields, d = config.denseInputs, e = config.embeddingDim
        precondition(n <= maxBatch && batch.denseWidth == d && batch.categoricalWidth == fields)
        let width = d + fields * e, rowWidth = 1 + e, transform = config.denseTransform
        gatherRows(batch)
        let z = logits.pointer, xp = x.pointer
        for b in 0..<n {
            let xb = xp + b * width
            for j in 0..<d { xb[j] = transform.apply(batch.dense[b * d + j]) }
            var wide: Float = 0
            for f in 0..<fields {
                let row = embeddingTable + rows[b * fields + f] * rowWidth
                wide += row[0]
                let dst = xb + d + f * e
                for k in 0..<e { dst[k] = row[1 + k] }
            }
            z[b] = wide
        }
        deep.forward(x: xp, batch: n, parameters: parameters, context: trainingContext)
        let out = deep.output
        for b in 0..<n { z[b] += out[b] }
        return UnsafePointer(z)
    }

    public func backward(_ batch: BatchView, dLogits: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, sparse: SparseGradient,
                         events: (BackwardEvent) throws -> Void) rethrows {
        let n = batch.count, fields = config.categoricalFields, d = config.denseInputs, e = config.embeddingDim
        let width = d + fields * e, rowWidth = 1 + e
        precondition(sparse.capacity >= n * fields && sparse.dim == rowWidth)
        deep.dOutput.update(from: dLogits, count: n)
        try deep.backward(x: x.pointer, dx: dx.pointer, batch: n, parameters: parameters, gradients: gradients,
                          events: events)
        // Row (b, f): [dz (the wide weight), dx's slice of field f (the embedding)].
        let v = sparse.values, g = dx.pointer
        for b in 0..<n {
            for f in 0..<fields {
                let dst = v + (b * fields + f) * rowWidth, src = g + b * width + d + f * e
                dst[0] = dLogits[b]
                for k in 0..<e { dst[1 + k] = src[k] }
            }
        }
        try finishSparse(sparse, examples: n, events: events)
    }
}
