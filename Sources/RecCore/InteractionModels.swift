/// NeuMF (He et al. 2017, "Neural Collaborative Filtering"), for user-item implicit feedback:
///
///     p_u = P[user], q_i = Q[item]                     GMF embeddings, (factors)
///     m_u = M[user], n_i = N[item]                     MLP embeddings, (embeddingDim)
///     gmf = p_u ⊙ q_i                                  (factors)
///     h   = MLP([m_u, n_i])                            "mlp": 2E -> hidden..., activation after every layer
///     logit = predict([gmf, h])                        `predict`: (factors + hidden.last) -> 1
///
/// The user field is `config.userFields[0]`, the item field `config.itemFields[0]`; other fields
/// are not read. Each user's (item's) GMF and MLP embeddings share one table row,
/// (factors + embeddingDim) wide: [p | m], so one sparse gradient carries both and the rows
/// exchange and lazy optimizer rows work unchanged. Table 0 is the users', table 1 the items'.
public final class NCFModel: EmbeddingModelBase, RecModel {
    // columns: [user field, item field]; rows: (maxBatch, 2), user row, item row.
    let mlp: MLPStack
    let predict: Linear
    let x: FloatBuffer          // (maxBatch, 2E): [m_u, n_i]
    let dx: FloatBuffer         // (maxBatch, 2E)
    let z: FloatBuffer          // (maxBatch, factors + H): [gmf, h]
    let dz: FloatBuffer         // (maxBatch, factors + H)
    let logits: FloatBuffer     // (maxBatch)
    let gmfInputs: FloatBuffer  // (maxBatch, 2, factors): p_u and q_i, kept for the backward pass

    public init(config: ModelConfig, maxBatch: Int) {
        precondition(config.kind == .ncf && !config.hidden.isEmpty && config.factors >= 1)
        guard let u = config.userFields?.first, let i = config.itemFields?.first else {
            preconditionFailure("ncf needs a user field and an item field")
        }
        let e = config.embeddingDim, f = config.factors
        var layout = ParameterLayout()
        mlp = MLPStack("mlp", sizes: [2 * e] + config.hidden, hiddenActivation: config.activation("mlp"),
                       lastActivation: config.activation("mlp"), dropout: config.dropoutRate("mlp"),
                       maxBatch: maxBatch, layout: &layout)
        predict = Linear("predict", inputSize: f + config.hidden.last!, outputSize: 1, layout: &layout)
        x = FloatBuffer(count: maxBatch * 2 * e)
        dx = FloatBuffer(count: maxBatch * 2 * e)
        z = FloatBuffer(count: maxBatch * (f + config.hidden.last!))
        dz = FloatBuffer(count: maxBatch * (f + config.hidden.last!))
        logits = FloatBuffer(count: maxBatch)
        gmfInputs = FloatBuffer(count: maxBatch * 2 * f)
        super.init(config: config, maxBatch: maxBatch, tables: config.tables(fields: [u, i], dim: f + e), columns: [u, i],
                   layout: layout)
    }

    public var activationBytes: Int {
        mlp.activationBytes + (x.count + dx.count + z.count + dz.count + logits.count + gmfInputs.count) * 4 + rowsBytes
    }

    public func initialize(parameters: UnsafeMutablePointer<Float>, embeddingTable: UnsafeMutablePointer<Float>,
                           seed: UInt64) {
        initialize(layers: [mlp, predict], parameters: parameters, embeddingTable: embeddingTable, seed: seed)
    }

    public func forward(_ batch: BatchView, parameters: UnsafePointer<Float>,
                        embeddingTable: UnsafePointer<Float>) -> UnsafePointer<Float> {
        let n = batch.count, e = config.embeddingDim, f = config.factors, h = config.hidden.last!
        precondition(n <= maxBatch && batch.categoricalWidth == config.categoricalFields)
        let rowWidth = f + e, zWidth = f + h
        gatherRows(batch)
        let xp = x.pointer, zp = z.pointer, gp = gmfInputs.pointer
        for b in 0..<n {
            let pu = embeddingTable + rows[2 * b] * rowWidth, qi = embeddingTable + rows[2 * b + 1] * rowWidth
            let zb = zp + b * zWidth, xb = xp + b * 2 * e, gb = gp + b * 2 * f
            for k in 0..<f { zb[k] = pu[k] * qi[k]; gb[k] = pu[k]; gb[f + k] = qi[k] }
            for k in 0..<e { xb[k] = pu[f + k]; xb[e + k] = qi[f + k] }
        }
        mlp.forward(x: xp, batch: n, parameters: parameters, context: trainingContext)
        let out = mlp.output
        for b in 0..<n {
            let zb = zp + b * zWidth + f, hb = out + b * h
            for k in 0..<h { zb[k] = hb[k] }
        }
        predict.forward(x: zp, y: logits.pointer, batch: n, parameters: parameters)
        return UnsafePointer(logits.pointer)
    }

    public func backward(_ batch: BatchView, dLogits: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, sparse: SparseGradient,
                         events: (BackwardEvent) throws -> Void) rethrows {
        let n = batch.count, e = config.embeddingDim, f = config.factors, h = config.hidden.last!
        let rowWidth = f + e, zWidth = f + h
        precondition(sparse.capacity >= 2 * n && sparse.dim == rowWidth)
        // dz = dlogit · Wᵀ: (n, f + H); dW, db accumulated.
        predict.backward(x: z.pointer, dy: dLogits, dx: dz.pointer, batch: n, parameters: parameters,
                         gradients: gradients)
        try events(.denseFinal(from: predict.weightOffset))
        let dzp = dz.pointer, dOut = mlp.dOutput
        for b in 0..<n {
            let src = dzp + b * zWidth + f, dst = dOut + b * h
            for k in 0..<h { dst[k] = src[k] }
        }
        try mlp.backward(x: x.pointer, dx: dx.pointer, batch: n, parameters: parameters, gradients: gradients,
                         events: events)
        // User row: [dgmf ⊙ q_i, dm_u]; item row: [dgmf ⊙ p_u, dn_i].
        let v = sparse.values, dxp = dx.pointer, gp = gmfInputs.pointer
        for b in 0..<n {
            let pu = gp + b * 2 * f, qi = pu + f
            let du = v + 2 * b * rowWidth, di = du + rowWidth, dg = dzp + b * zWidth, dxb = dxp + b * 2 * e
            for k in 0..<f { du[k] = dg[k] * qi[k]; di[k] = dg[k] * pu[k] }
            for k in 0..<e { du[f + k] = dxb[k]; di[f + k] = dxb[e + k] }
        }
        try finishSparse(sparse, examples: n, events: events)
    }
}

/// Two towers, for retrieval:
///
///     u = user tower([e[id] for the user-side fields])    "user": (nu·E) -> hidden... -> factors (linear)
///     v = item tower([e[id] for the item-side fields])    "item": (ni·E) -> hidden... -> factors (linear)
///     logit = u · v
///
/// The tables are the user-side fields' (`config.userFields`, in order), then the item-side
/// fields' (`config.itemFields`), all `embeddingDim` wide. Because the logit is a dot product,
/// the item vectors can be computed once for the whole catalogue (`itemEmbeddings`) and a user's
/// top K found by ranking u · v over them.
public final class TwoTowerModel: EmbeddingModelBase, RecModel {
    // columns: the user-side fields, then the item-side fields; rows: (maxBatch, nu + ni).
    public let userTower: MLPStack
    public let itemTower: MLPStack
    let userCount: Int, itemCount: Int
    let xu: FloatBuffer, dxu: FloatBuffer   // (maxBatch, nu·E)
    let xi: FloatBuffer, dxi: FloatBuffer   // (maxBatch, ni·E)
    let logits: FloatBuffer                 // (maxBatch)

    public init(config: ModelConfig, maxBatch: Int) {
        precondition(config.kind == .twoTower && config.factors >= 1)
        let user = config.userFields ?? [], item = config.itemFields ?? []
        precondition(!user.isEmpty && !item.isEmpty, "two-tower needs user-side and item-side fields")
        userCount = user.count
        itemCount = item.count
        let e = config.embeddingDim
        var layout = ParameterLayout()
        userTower = MLPStack("user", sizes: [user.count * e] + config.hidden + [config.factors],
                             hiddenActivation: config.activation("user"), lastActivation: .linear,
                             dropout: config.dropoutRate("user"), maxBatch: maxBatch, layout: &layout)
        itemTower = MLPStack("item", sizes: [item.count * e] + config.hidden + [config.factors],
                             hiddenActivation: config.activation("item"), lastActivation: .linear,
                             dropout: config.dropoutRate("item"), maxBatch: maxBatch, layout: &layout)
        xu = FloatBuffer(count: maxBatch * user.count * e)
        dxu = FloatBuffer(count: maxBatch * user.count * e)
        xi = FloatBuffer(count: maxBatch * item.count * e)
        dxi = FloatBuffer(count: maxBatch * item.count * e)
        logits = FloatBuffer(count: maxBatch)
        super.init(config: config, maxBatch: maxBatch, tables: config.tables(fields: user + item, dim: e),
                   columns: user + item, layout: layout)
    }

    public var activationBytes: Int {
        userTower.activationBytes + itemTower.activationBytes
            + (xu.count + dxu.count + xi.count + dxi.count + logits.count) * 4 + rowsBytes
    }

    public func initialize(parameters: UnsafeMutablePointer<Float>, embeddingTable: UnsafeMutablePointer<Float>,
                           seed: UInt64) {
        initialize(layers: [userTower, itemTower], parameters: parameters, embeddingTable: embeddingTable, seed: seed)
    }

    /// Copies the rows of tables `first ..< first + count` of each example into x: (n, count·E).
    @inline(__always)
    func gather(first: Int, count: Int, n: Int, table: UnsafePointer<Float>, into x: UnsafeMutablePointer<Float>) {
        let e = config.embeddingDim, width = columns.count
        for b in 0..<n {
            for t in 0..<count {
                let src = table + rows[b * width + first + t] * e, dst = x + (b * count + t) * e
                for k in 0..<e { dst[k] = src[k] }
            }
        }
    }

    public func forward(_ batch: BatchView, parameters: UnsafePointer<Float>,
                        embeddingTable: UnsafePointer<Float>) -> UnsafePointer<Float> {
        let n = batch.count, k = config.factors
        precondition(n <= maxBatch && batch.categoricalWidth == config.categoricalFields)
        gatherRows(batch)
        gather(first: 0, count: userCount, n: n, table: embeddingTable, into: xu.pointer)
        gather(first: userCount, count: itemCount, n: n, table: embeddingTable, into: xi.pointer)
        userTower.forward(x: xu.pointer, batch: n, parameters: parameters, context: trainingContext)
        itemTower.forward(x: xi.pointer, batch: n, parameters: parameters, context: trainingContext)
        let u = userTower.output, v = itemTower.output, z = logits.pointer
        for b in 0..<n {
            var s: Float = 0
            for j in 0..<k { s += u[b * k + j] * v[b * k + j] }
            z[b] = s
        }
        return UnsafePointer(z)
    }

    public func backward(_ batch: BatchView, dLogits: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, sparse: SparseGradient,
                         events: (BackwardEvent) throws -> Void) rethrows {
        let n = batch.count, k = config.factors, e = config.embeddingDim, width = columns.count
        precondition(sparse.capacity >= n * width && sparse.dim == e)
        // du = dz · v, dv = dz · u: (n, factors).
        let u = userTower.output, v = itemTower.output, du = userTower.dOutput, dv = itemTower.dOutput
        for b in 0..<n {
            let g = dLogits[b]
            for j in 0..<k { du[b * k + j] = g * v[b * k + j]; dv[b * k + j] = g * u[b * k + j] }
        }
        // The item tower's tensors come after the user tower's: finish it first.
        try itemTower.backward(x: xi.pointer, dx: dxi.pointer, batch: n, parameters: parameters, gradients: gradients,
                               events: events)
        try userTower.backward(x: xu.pointer, dx: dxu.pointer, batch: n, parameters: parameters, gradients: gradients,
                               events: events)
        let values = sparse.values
        for b in 0..<n {
            for t in 0..<width {
                let src = t < userCount ? dxu.pointer + (b * userCount + t) * e
                                        : dxi.pointer + (b * itemCount + t - userCount) * e
                let dst = values + (b * width + t) * e
                for j in 0..<e { dst[j] = src[j] }
            }
        }
        try finishSparse(sparse, examples: n, events: events)
    }

    /// The item tower's output for `count` items: items is (count, itemFields.count), each row the
    /// values (ids, or raw hashes for hashed tables) of the item-side fields in `config.itemFields`
    /// order; out is (count, factors). Runs in batches of `maxBatch`, dropout off. Not for use
    /// while a training step is in flight (it shares the model's buffers).
    public func itemEmbeddings(items: UnsafePointer<UInt32>, count: Int, parameters: UnsafePointer<Float>,
                               embeddingTable: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
        towerOutputs(tower: itemTower, first: userCount, columns: Array(0..<itemCount), values: items, stride: itemCount,
                     count: count, parameters: parameters, embeddingTable: embeddingTable, out: out)
    }

    /// The user tower's output for `count` users: users is (count, userFields.count), out (count, factors).
    public func userEmbeddings(users: UnsafePointer<UInt32>, count: Int, parameters: UnsafePointer<Float>,
                               embeddingTable: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
        towerOutputs(tower: userTower, first: 0, columns: Array(0..<userCount), values: users, stride: userCount,
                     count: count, parameters: parameters, embeddingTable: embeddingTable, out: out)
    }

    /// Every item's vector when the item side is the item id alone (`itemFields.count == 1`):
    /// (rows of the item table, factors), row r for id r.
    public func allItemEmbeddings(parameters: UnsafePointer<Float>, embeddingTable: UnsafePointer<Float>) -> [Float] {
        precondition(itemCount == 1, "the item side has \(itemCount) fields: pass the catalogue to itemEmbeddings")
        precondition(tables.indexing == .direct, "hashed item ids: pass the catalogue's hashes to itemEmbeddings")
        let items = tables.rows(field: userCount)
        let ids = (0..<items).map { UInt32($0) }
        var out = [Float](repeating: 0, count: items * config.factors)
        ids.withUnsafeBufferPointer { idp in
            out.withUnsafeMutableBufferPointer { o in
                itemEmbeddings(items: idp.baseAddress!, count: items, parameters: parameters,
                               embeddingTable: embeddingTable, out: o.baseAddress!)
            }
        }
        return out
    }

    /// The tower's output for `count` rows whose field t's value is `values[b · stride + columns[t]]`.
    func towerOutputs(tower: MLPStack, first: Int, columns: [Int], values: UnsafePointer<UInt32>, stride: Int,
                      count: Int, parameters: UnsafePointer<Float>, embeddingTable: UnsafePointer<Float>,
                      out: UnsafeMutablePointer<Float>) {
        let e = config.embeddingDim, k = config.factors, x = first == 0 ? xu.pointer : xi.pointer
        let fields = columns.count
        var start = 0
        while start < count {
            let n = min(maxBatch, count - start)
            for b in 0..<n {
                for t in 0..<fields {
                    let r = tables.row(field: first + t, value: values[(start + b) * stride + columns[t]])
                    let src = embeddingTable + r * e, dst = x + (b * fields + t) * e
                    for j in 0..<e { dst[j] = src[j] }
                }
            }
            tower.forward(x: x, batch: n, parameters: parameters, context: nil)
            (out + start * k).update(from: tower.output, count: n * k)
            start += n
        }
    }
}
