import Testing
@testable import RecCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Whole-model checks, llm.c's test_gpt2 style: an independent Double forward of each model,
// written here from the architecture and reading the tensors by name from `model.layout`, must
// reproduce the logits; the analytic gradient of the mean BCE loss (dense parameters and every
// touched embedding row) must match central differences of that reference.

/// A small batch with owned, stable storage, so a `BatchView` can point into it.
final class ModelTestBatch {
    let count: Int, denseWidth: Int, categoricalWidth: Int
    let labels: UnsafeMutablePointer<Float>
    let dense: UnsafeMutablePointer<Float>
    let categorical: UnsafeMutablePointer<UInt32>

    /// Random raw counts (about a fifth zero and a fifth negative, the rest in [0, 50)), random
    /// 0/1 labels, and hashes with deliberate repeats: field 0 is the same value in every example,
    /// field 1 is missing (0) in examples 0 and 2, field 2 alternates 3 and 52 (the same row for
    /// 50 buckets), the rest are small random hashes (so rows collide), about a tenth missing.
    init(count: Int, denseWidth: Int, categoricalWidth: Int, rng: inout RNG) {
        self.count = count
        self.denseWidth = denseWidth
        self.categoricalWidth = categoricalWidth
        labels = .allocate(capacity: count)
        dense = .allocate(capacity: count * denseWidth)
        categorical = .allocate(capacity: max(count * categoricalWidth, 1))
        for b in 0..<count { labels[b] = rng.nextFloat() < 0.5 ? 0 : 1 }
        for i in 0..<(count * denseWidth) {
            let u = rng.nextFloat()
            dense[i] = u < 0.2 ? 0 : u < 0.4 ? -3 * rng.nextFloat() : rng.uniform(0, 50)
        }
        for b in 0..<count {
            for f in 0..<categoricalWidth {
                let h: UInt32
                switch f {
                case 0: h = 7
                case 1: h = b % 2 == 0 && b <= 2 ? 0 : 1 + UInt32(rng.nextInt(below: 1000))
                case 2: h = b % 2 == 0 ? 3 : 52
                default:
                    h = rng.nextFloat() < 0.1 ? 0
                        : rng.nextFloat() < 0.3 ? UInt32(truncatingIfNeeded: rng.next()) | 1
                        : 1 + UInt32(rng.nextInt(below: 4))
                }
                categorical[b * categoricalWidth + f] = h
            }
        }
        // Labels with both classes, so the gradient does not vanish in one direction.
        labels[0] = 0
        labels[count - 1] = 1
    }

    deinit {
        labels.deallocate()
        dense.deallocate()
        categorical.deallocate()
    }

    var view: BatchView {
        BatchView(count: count, labels: labels, dense: dense, denseWidth: denseWidth,
                  categorical: categorical, categoricalWidth: categoricalWidth)
    }
}

/// The independent Double forward of an `MLPModel` or `DLRMModel`, from the architecture.
struct ReferenceModel {
    let config: ModelConfig
    let layout: ParameterLayout
    let batch: ModelTestBatch
    var context: TrainingContext? = nil

    /// Offsets of `name.weight` (with its (in, out) shape) and `name.bias`, from the layout.
    func linear(_ name: String) -> (w: Int, inputs: Int, outputs: Int, bias: Int) {
        guard let w = layout.entry(named: "\(name).weight"), let b = layout.entry(named: "\(name).bias") else {
            fatalError("layout has no tensor \(name).weight / \(name).bias")
        }
        precondition(w.shape.count == 2 && b.shape == [w.shape[1]])
        return (w.offset, w.shape[0], w.shape[1], b.offset)
    }

    /// Runs the Linear layers `name.0`, `name.1`, ... over x: (n, in), the stack's activation
    /// (relu unless configured) after each one except the last unless `activateLast`, and the
    /// configured dropout after each hidden layer when `context` is set. `margin` tracks the
    /// smallest |ReLU input| seen.
    func mlp(_ name: String, layers: Int, x: [Double], reluLast: Bool, p: [Double], margin: inout Double) -> [Double] {
        let activation = config.activation(name), rate = config.dropoutRate(name)
        var h = x
        for l in 0..<layers {
            let lin = linear("\(name).\(l)")
            h = GradCheck.dense(h, batch: batch.count, inputs: lin.inputs, outputs: lin.outputs, p: p,
                                w: lin.w, bias: lin.bias)
            if l < layers - 1 || reluLast {
                for i in h.indices {
                    switch activation {
                    case .relu:
                        margin = min(margin, abs(h[i]))
                        h[i] = GradCheck.relu(h[i])
                    case .tanh: h[i] = tanh(h[i])
                    case .sigmoid: h[i] = 1 / (1 + exp(-h[i]))
                    case .linear: break
                    }
                }
            }
            if l < layers - 1, rate > 0, let context {
                let stream = Dropout.stream(name) &+ UInt64(l)
                for b in 0..<batch.count {
                    for j in 0..<lin.outputs {
                        let keep = Dropout.keep(seed: context.seed, stream: stream, step: context.step,
                                                example: context.firstExample + b, unit: j, rate: rate)
                        h[b * lin.outputs + j] *= keep ? 1 / Double(1 - rate) : 0
                    }
                }
            }
        }
        return h
    }

    /// Table t's row for example b (the model's tables read columns `columns`).
    func row(_ b: Int, _ t: Int) -> Int {
        config.modelTables!.row(field: t, value: batch.categorical[b * batch.categoricalWidth + columns[t]])
    }

    /// The categorical column each of the model's tables reads.
    var columns: [Int] { ModelVariant.columns(config) }

    /// log(1 + max(x, 0)) (or the value itself, for the identity transform) of the first `k`
    /// dense features: (n, k).
    func denseInput(_ k: Int) -> [Double] {
        var x: [Double] = []
        for b in 0..<batch.count {
            for j in 0..<k {
                let v = Double(batch.dense[b * batch.denseWidth + j])
                x.append(config.denseTransform == .log1p ? log1p(max(v, 0)) : v)
            }
        }
        return x
    }

    /// The logits: (n), given dense parameters `p` and the embedding table `e` (rows × dim).
    func logits(_ p: [Double], _ e: [Double], margin: inout Double) -> [Double] {
        switch config.kind {
        case .mlp:
            return mlp("mlp", layers: config.hidden.count + 1, x: denseInput(config.mlpDenseFeatures),
                       reluLast: false, p: p, margin: &margin)
        case .dlrm:
            let dim = config.embeddingDim, fields = config.categoricalFields
            let hasBottom = config.denseInputs > 0
            let bottom = hasBottom ? mlp("bottom", layers: config.bottom.count + 1, x: denseInput(config.denseInputs),
                                         reluLast: true, p: p, margin: &margin) : []
            let tables = config.embeddingTables
            // Per example: [t0, then t_i · t_j for i in 1..<slots, j in 0..<i], where t0 is the
            // bottom output and t_(1+f) field f's embedding row. Without dense inputs there is no
            // t0 and no pass-through: the slots are the fields' rows and the output is the pairs.
            let first = hasBottom ? 1 : 0
            let slots = fields + first, width = (hasBottom ? dim : 0) + slots * (slots - 1) / 2
            var interaction = [Double](repeating: 0, count: batch.count * width)
            bottom.withUnsafeBufferPointer { bottom in
                e.withUnsafeBufferPointer { e in
                    interaction.withUnsafeMutableBufferPointer { out in
                        for b in 0..<batch.count {
                            // Where vector s of example b starts: in `bottom` for the bottom slot, in `e` otherwise.
                            func vector(_ s: Int) -> UnsafePointer<Double> {
                                if hasBottom && s == 0 { return bottom.baseAddress! + b * dim }
                                let r = tables.row(field: s - first, value: batch.categorical[b * fields + s - first])
                                return e.baseAddress! + r * dim
                            }
                            var o = b * width
                            if hasBottom { for k in 0..<dim { out[o] = bottom[b * dim + k]; o += 1 } }
                            for i in 1..<slots {
                                let vi = vector(i)
                                for j in 0..<i {
                                    let vj = vector(j)
                                    var s = 0.0
                                    for k in 0..<dim { s += vi[k] * vj[k] }
                                    out[o] = s
                                    o += 1
                                }
                            }
                        }
                    }
                }
            }
            return mlp("top", layers: config.top.count + 1, x: interaction, reluLast: false, p: p, margin: &margin)
        case .logreg:
            let n = batch.count, fields = config.categoricalFields
            var z = [Double](repeating: 0, count: n)
            if config.denseInputs > 0 {
                let lin = linear("linear")
                z = GradCheck.dense(denseInput(config.denseInputs), batch: n, inputs: lin.inputs, outputs: 1, p: p,
                                    w: lin.w, bias: lin.bias)
            } else {
                let bias = layout.entry(named: "bias")!.offset
                for b in 0..<n { z[b] = p[bias] }
            }
            for b in 0..<n { for f in 0..<fields { z[b] += e[row(b, f)] } }
            return z
        case .wideDeep:
            let n = batch.count, fields = config.categoricalFields, d = config.denseInputs, dim = config.embeddingDim
            let dense = denseInput(d)
            var x: [Double] = [], wide = [Double](repeating: 0, count: n)
            for b in 0..<n {
                x += dense[(b * d)..<((b + 1) * d)]
                for f in 0..<fields {
                    let r = row(b, f) * (1 + dim)
                    wide[b] += e[r]
                    x += e[(r + 1)..<(r + 1 + dim)]
                }
            }
            let deep = mlp("deep", layers: config.hidden.count + 1, x: x, reluLast: false, p: p, margin: &margin)
            return (0..<n).map { wide[$0] + deep[$0] }
        case .ncf:
            let n = batch.count, f = config.factors, dim = config.embeddingDim, w = f + dim
            var gmf: [Double] = [], x: [Double] = []
            for b in 0..<n {
                let u = row(b, 0) * w, i = row(b, 1) * w
                for k in 0..<f { gmf.append(e[u + k] * e[i + k]) }
                x += e[(u + f)..<(u + w)]
                x += e[(i + f)..<(i + w)]
            }
            let h = mlp("mlp", layers: config.hidden.count, x: x, reluLast: true, p: p, margin: &margin)
            let last = config.hidden.last!
            var z: [Double] = []
            for b in 0..<n { z += gmf[(b * f)..<((b + 1) * f)] + h[(b * last)..<((b + 1) * last)] }
            let lin = linear("predict")
            return GradCheck.dense(z, batch: n, inputs: lin.inputs, outputs: 1, p: p, w: lin.w, bias: lin.bias)
        case .twoTower:
            let n = batch.count, dim = config.embeddingDim, k = config.factors
            let nu = config.userFields!.count, ni = config.itemFields!.count
            var xu: [Double] = [], xi: [Double] = []
            for b in 0..<n {
                for t in 0..<(nu + ni) {
                    let r = row(b, t) * dim
                    if t < nu { xu += e[r..<(r + dim)] } else { xi += e[r..<(r + dim)] }
                }
            }
            let u = mlp("user", layers: config.hidden.count + 1, x: xu, reluLast: false, p: p, margin: &margin)
            let v = mlp("item", layers: config.hidden.count + 1, x: xi, reluLast: false, p: p, margin: &margin)
            return (0..<n).map { b in (0..<k).reduce(0.0) { $0 + u[b * k + $1] * v[b * k + $1] } }
        }
    }

    /// The mean binary cross-entropy of the batch.
    func loss(_ p: [Double], _ e: [Double]) -> Double {
        var margin = Double.infinity
        let z = logits(p, e, margin: &margin)
        return (0..<batch.count).reduce(0) { $0 + GradCheck.bce(logit: z[$1], label: Double(batch.labels[$1])) }
            / Double(batch.count)
    }
}

/// A model with initialized parameters and embedding tables.
struct ModelUnderTest {
    let model: any RecModel
    let parameters: FloatBuffer
    let table: FloatBuffer

    init(_ config: ModelConfig, maxBatch: Int, seed: UInt64) {
        model = makeModel(config, maxBatch: maxBatch)
        parameters = FloatBuffer(count: model.layout.count)
        let dim = model.embeddings?.dim ?? 1
        table = FloatBuffer(count: (model.embeddings?.rowCount ?? 0) * dim)
        model.initialize(parameters: parameters.pointer, embeddingTable: table.pointer, seed: seed)
    }

    func forward(_ batch: ModelTestBatch) -> [Float] {
        let z = model.forward(batch.view, parameters: parameters.pointer, embeddingTable: table.pointer)
        return Array(UnsafeBufferPointer(start: z, count: batch.count))
    }

    /// Forward, BCE mean loss and backward into `gradients` (accumulated) and `sparse`
    /// (overwritten). Returns the loss.
    @discardableResult
    func step(_ batch: ModelTestBatch, gradients: FloatBuffer, sparse: SparseGradient) -> Double {
        let n = batch.count
        let z = model.forward(batch.view, parameters: parameters.pointer, embeddingTable: table.pointer)
        var dLogits = [Float](repeating: 0, count: n)
        let total = dLogits.withUnsafeMutableBufferPointer {
            Loss.bce.forwardBackward(logits: z, labels: batch.labels, count: n, scale: 1 / Float(n),
                                     dLogits: $0.baseAddress!)
        }
        dLogits.withUnsafeBufferPointer {
            model.backward(batch.view, dLogits: $0.baseAddress!, parameters: parameters.pointer,
                           gradients: gradients.pointer, sparse: sparse)
        }
        return total / Double(n)
    }
}

/// The model shapes under test: the two Criteo models on raw hashes, and the shapes a prepared
/// dataset gives (per-field vocabulary sizes with direct ids, already-transformed dense values,
/// other field counts, no dense inputs at all).
enum ModelVariant: String, CaseIterable, CustomTestStringConvertible {
    case mlp, dlrm, mlpPrepared, dlrmPrepared, dlrmNoDense
    case logreg, logregPrepared, logregNoDense, wideDeep, wideDeepPrepared, wideDeepTanh
    case ncf, ncfPrepared, ncfSigmoid, twoTower, twoTowerPrepared, twoTowerDeep
    case mlpDropout, wideDeepDropout, ncfDropout, twoTowerDropout

    var testDescription: String { rawValue }

    /// The categorical column each of the model's tables reads.
    static func columns(_ config: ModelConfig) -> [Int] {
        switch config.kind {
        case .mlp: return []
        case .dlrm, .logreg, .wideDeep: return Array(0..<config.categoricalFields)
        case .ncf: return [config.userFields![0], config.itemFields![0]]
        case .twoTower: return config.userFields! + config.itemFields!
        }
    }

    /// The dropout context the variant trains with (nil: no dropout).
    var context: TrainingContext? {
        rawValue.hasSuffix("Dropout") ? TrainingContext(seed: 9, step: 17, firstExample: 24) : nil
    }

    var config: ModelConfig {
        switch self {
        case .mlp, .mlpPrepared, .mlpDropout:
            var config = ModelConfig(kind: .mlp)
            config.hidden = [6, 5]
            config.mlpDenseFeatures = 10
            if self == .mlpPrepared {
                config.denseInputs = 11
                config.categoricalFields = 3
                config.denseTransform = .identity
            }
            if self == .mlpDropout { config.dropout = ["mlp": 0.3] }
            return config
        case .dlrm, .dlrmPrepared, .dlrmNoDense:
            var config = ModelConfig(kind: .dlrm)
            config.hashBuckets = 50
            config.embeddingDim = 4
            config.bottom = [8]
            config.top = [8]
            if self == .dlrmPrepared {
                config.denseInputs = 3
                config.categoricalFields = 5
                config.vocabularySizes = [2, 9, 50, 5, 17]
                config.denseTransform = .identity
            } else if self == .dlrmNoDense {
                config.denseInputs = 0
                config.categoricalFields = 4
                config.vocabularySizes = [3, 7, 60, 2]
                config.denseTransform = .identity
            }
            return config
        case .logreg, .logregPrepared, .logregNoDense:
            var config = ModelConfig(kind: .logreg)
            config.hashBuckets = 50
            if self == .logregPrepared {
                config.denseInputs = 3
                config.categoricalFields = 5
                config.vocabularySizes = [2, 9, 50, 5, 17]
                config.denseTransform = .identity
            } else if self == .logregNoDense {
                config.denseInputs = 0
                config.categoricalFields = 4
                config.vocabularySizes = [3, 7, 60, 2]
                config.denseTransform = .identity
            }
            return config
        case .wideDeep, .wideDeepPrepared, .wideDeepTanh, .wideDeepDropout:
            var config = ModelConfig(kind: .wideDeep)
            config.hashBuckets = 50
            config.embeddingDim = 3
            config.hidden = [8, 6]
            if self == .wideDeepPrepared {
                config.denseInputs = 3
                config.categoricalFields = 5
                config.vocabularySizes = [2, 9, 50, 5, 17]
                config.denseTransform = .identity
            }
            if self == .wideDeepTanh { config.activations = ["deep": .tanh] }
            if self == .wideDeepDropout { config.dropout = ["deep": 0.25] }
            return config
        case .ncf, .ncfPrepared, .ncfSigmoid, .ncfDropout:
            var config = ModelConfig(kind: .ncf)
            config.hashBuckets = 50
            config.embeddingDim = 4
            config.factors = 3
            config.hidden = [8, 5]
            config.userFields = [2]
            config.itemFields = [1]
            if self == .ncfPrepared {
                config.denseInputs = 0
                config.categoricalFields = 3
                config.vocabularySizes = [4, 30, 7]
                config.denseTransform = .identity
            }
            if self == .ncfSigmoid { config.activations = ["mlp": .sigmoid] }
            if self == .ncfDropout { config.dropout = ["mlp": 0.3] }
            return config
        case .twoTower, .twoTowerPrepared, .twoTowerDeep, .twoTowerDropout:
            var config = ModelConfig(kind: .twoTower)
            config.hashBuckets = 50
            config.embeddingDim = 3
            config.factors = 4
            config.hidden = [6]
            config.userFields = [0, 3]
            config.itemFields = [1, 2]
            if self == .twoTowerPrepared {
                config.denseInputs = 2
                config.categoricalFields = 4
                config.vocabularySizes = [5, 11, 40, 3]
                config.denseTransform = .identity
                config.userFields = [3]
                config.itemFields = [1, 2]
            }
            if self == .twoTowerDeep { config.hidden = [7, 5]; config.activations = ["user": .tanh] }
            if self == .twoTowerDropout { config.hidden = [8, 6]; config.dropout = ["item": 0.3, "user": 0.2] }
            return config
        }
    }

    /// A random batch for this variant (ids reduced below each table size when ids are direct).
    func batch(count: Int, rng: inout RNG) -> ModelTestBatch {
        let config = self.config
        let batch = ModelTestBatch(count: count, denseWidth: config.denseInputs,
                                   categoricalWidth: config.categoricalFields, rng: &rng)
        if let sizes = config.vocabularySizes {
            for b in 0..<count {
                for f in sizes.indices {
                    let i = b * sizes.count + f
                    batch.categorical[i] = UInt32(UInt64(batch.categorical[i]) % UInt64(sizes[f]))
                }
            }
        }
        return batch
    }
}

struct ModelGradientTests {
    static func config(_ kind: ModelKind) -> ModelConfig {
        switch kind {
        case .mlp: return ModelVariant.mlp.config
        case .dlrm: return ModelVariant.dlrm.config
        case .logreg: return ModelVariant.logreg.config
        case .wideDeep: return ModelVariant.wideDeep.config
        case .ncf: return ModelVariant.ncf.config
        case .twoTower: return ModelVariant.twoTower.config
        }
    }

    @Test("logits and every gradient against a Double reference", arguments: ModelVariant.allCases)
    func gradients(_ variant: ModelVariant) {
        let config = variant.config, kind = config.kind
        let n = 5
        // maxBatch above n: a partial batch must work.
        let m = ModelUnderTest(config, maxBatch: 8, seed: 42)
        let layout = m.model.layout
        var rng = RNG(seed: 43)
        // Non-zero biases, so no ReLU input sits exactly on the kink when a row's inputs are all 0.
        for entry in layout.entries where entry.name.hasSuffix(".bias") {
            for i in 0..<entry.count { m.parameters.pointer[entry.offset + i] = rng.uniform(-0.1, 0.1) }
        }
        let batch = variant.batch(count: n, rng: &rng)
        m.model.trainingContext = variant.context
        let reference = ReferenceModel(config: config, layout: layout, batch: batch, context: variant.context)
        let p = m.parameters.toArray().map(Double.init)
        let e = m.table.toArray().map(Double.init)

        // The expected tensors are all there, and nothing else.
        let expectedNames: [String] = {
            func names(_ prefix: String, _ layers: Int) -> [String] {
                (0..<layers).flatMap { ["\(prefix).\($0).weight", "\(prefix).\($0).bias"] }
            }
            switch kind {
            case .mlp: return names("mlp", config.hidden.count + 1)
            case .dlrm:
                return (config.denseInputs > 0 ? names("bottom", config.bottom.count + 1) : [])
                    + names("top", config.top.count + 1)
            case .logreg: return config.denseInputs > 0 ? names("linear", 1).map { $0.replacingOccurrences(of: "linear.0", with: "linear") } : ["bias"]
            case .wideDeep: return names("deep", config.hidden.count + 1)
            case .ncf: return names("mlp", config.hidden.count) + ["predict.weight", "predict.bias"]
            case .twoTower: return names("user", config.hidden.count + 1) + names("item", config.hidden.count + 1)
            }
        }()
        #expect(Set(layout.entries.map(\.name)) == Set(expectedNames))
        #expect(layout.count == layout.entries.reduce(0) { $0 + $1.count })

        // Forward.
        var margin = Double.infinity
        let expectedLogits = reference.logits(p, e, margin: &margin)
        #expect(margin > 1e-4, "a ReLU input is within \(margin) of the kink: finite differences are unreliable, pick another seed")
        let logits = m.forward(batch)
        GradCheck.expectClose(logits, expectedLogits, relative: 1e-4, floor: 1e-2, "\(variant) logits")

        // Backward of the mean BCE.
        let gradients = FloatBuffer(count: layout.count)
        let sparse = SparseGradient(capacity: n * max(config.categoricalFields, 1), dim: m.model.embeddings?.dim ?? 1)
        let loss = m.step(batch, gradients: gradients, sparse: sparse)
        let expectedLoss = reference.loss(p, e)
        #expect(abs(loss - expectedLoss) <= 1e-5 * max(1, expectedLoss), "loss \(loss), reference \(expectedLoss)")

        let numericDense = GradCheck.centralDifferences(p) { reference.loss($0, e) }
        let name = { (i: Int) -> String in
            guard let entry = layout.entry(containing: i) else { return "[\(i)]" }
            return "\(entry.name)[\(i - entry.offset)]"
        }
        GradCheck.expectClose(gradients.toArray(), numericDense, relative: 1e-3, floor: 1e-3,
                              "\(variant) dense gradient", names: name)
        // Not vacuous: most parameters get a visible gradient.
        let visible = numericDense.filter { abs($0) > 1e-5 }.count
        #expect(visible * 2 > layout.count, "only \(visible) of \(layout.count) gradients are non-negligible")

        guard let tables = m.model.embeddings else {
            #expect(sparse.count == 0, "a model without embeddings reports no sparse gradient")
            return
        }
        // Embeddings: the sparse pairs are one per (example, field), in order, and summed per row
        // they match the finite differences of every touched row.
        let fields = tables.fields, dim = tables.dim
        #expect(sparse.count == n * fields)
        #expect(tables == config.modelTables)
        var expectedRows: [Int] = []
        for b in 0..<n {
            for f in 0..<fields { expectedRows.append(reference.row(b, f)) }
        }
        #expect((0..<sparse.count).map { Int(sparse.rows[$0]) } == expectedRows)
        var summed: [Int: [Double]] = [:]
        for i in 0..<sparse.count {
            let r = Int(sparse.rows[i])
            var g = summed[r] ?? [Double](repeating: 0, count: dim)
            for k in 0..<dim { g[k] += Double(sparse.values[i * dim + k]) }
            summed[r] = g
        }
        let touched = summed.keys.sorted()
        #expect(touched.count < n * fields, "the batch was meant to repeat rows")
        if let t = reference.columns.firstIndex(of: 1) {
            #expect(touched.contains(tables.row(field: t, value: 0)), "the batch was meant to have a missing value")
        }
        let indices = touched.flatMap { r in (0..<dim).map { r * dim + $0 } }
        let numericRows = GradCheck.centralDifferences(e, indices: indices) { reference.loss(p, $0) }
        GradCheck.expectClose(touched.flatMap { summed[$0]! }, numericRows, relative: 1e-3, floor: 1e-3,
                              "\(variant) embedding gradient",
                              names: { "row \(touched[$0 / dim])[\($0 % dim)]" })
        let visibleRows = numericRows.filter { abs($0) > 1e-6 }.count
        #expect(visibleRows * 2 > numericRows.count, "only \(visibleRows) of \(numericRows.count) row gradients are non-negligible")
    }

    @Test("backward accumulates dense gradients and overwrites the sparse ones", arguments: ModelKind.allCases)
    func backwardAccumulates(_ kind: ModelKind) {
        let config = Self.config(kind)
        let m = ModelUnderTest(config, maxBatch: 5, seed: 3)
        var rng = RNG(seed: 4)
        let batch = ModelTestBatch(count: 5, denseWidth: config.denseInputs,
                                   categoricalWidth: config.categoricalFields, rng: &rng)
        let once = FloatBuffer(count: m.model.layout.count), twice = FloatBuffer(count: m.model.layout.count)
        let dim = m.model.embeddings?.dim ?? 1
        let sparseOnce = SparseGradient(capacity: 5 * config.categoricalFields, dim: dim)
        let sparseTwice = SparseGradient(capacity: 5 * config.categoricalFields, dim: dim)
        m.step(batch, gradients: once, sparse: sparseOnce)
        m.step(batch, gradients: twice, sparse: sparseTwice)
        m.step(batch, gradients: twice, sparse: sparseTwice)
        let expected = once.toArray().map { 2 * Double($0) }
        GradCheck.expectClose(twice.toArray(), expected, relative: 1e-6, floor: 1e-6, "\(kind) twice")
        #expect(once.toArray().contains { $0 != 0 })
        #expect(sparseTwice.count == sparseOnce.count)
        let values = { (s: SparseGradient) in Array(UnsafeBufferPointer(start: s.values, count: s.count * dim)) }
        #expect(values(sparseTwice) == values(sparseOnce), "sparse gradients are overwritten, not accumulated")
    }

    @Test("initialize: seeded, Glorot-uniform weights, zero biases, embeddings in ±0.05", arguments: ModelKind.allCases)
    func initialization(_ kind: ModelKind) {
        let config = Self.config(kind)
        let a = ModelUnderTest(config, maxBatch: 1, seed: 7)
        let b = ModelUnderTest(config, maxBatch: 1, seed: 7)
        let c = ModelUnderTest(config, maxBatch: 1, seed: 8)
        #expect(a.parameters.toArray() == b.parameters.toArray())
        #expect(a.table.toArray() == b.table.toArray())
        #expect(a.parameters.toArray() != c.parameters.toArray())
        if kind == .dlrm { #expect(a.table.toArray() != c.table.toArray()) }

        let values = a.parameters.toArray()
        for entry in a.model.layout.entries {
            let tensor = values[entry.offset..<(entry.offset + entry.count)]
            if entry.name.hasSuffix(".bias") {
                #expect(tensor.allSatisfy { $0 == 0 }, "\(entry.name) must start at zero")
            } else {
                #expect(entry.shape.count == 2)
                let limit = (6.0 / Double(entry.shape[0] + entry.shape[1])).squareRoot()
                let largest = tensor.map { abs(Double($0)) }.max() ?? 0
                #expect(largest <= limit, "\(entry.name): |w| up to \(largest), Glorot limit \(limit)")
                // The whole range is used (a much smaller scale would show), and values are not all equal.
                if entry.count >= 20 { #expect(largest > 0.5 * limit, "\(entry.name): |w| only up to \(largest) of \(limit)") }
                #expect(Set(tensor).count > entry.count / 2, "\(entry.name) looks constant")
                let mean = tensor.reduce(0.0) { $0 + Double($1) } / Double(entry.count)
                if entry.count >= 100 { #expect(abs(mean) < 0.2 * limit, "\(entry.name) mean \(mean)") }
            }
        }
        if kind == .dlrm {
            let table = a.table.toArray()
            #expect(table.count == config.categoricalFields * config.hashBuckets * config.embeddingDim)
            #expect(table.allSatisfy { abs($0) <= 0.05 })
            #expect((table.map { abs($0) }.max() ?? 0) > 0.045)
        }
    }
}

struct DropoutTests {
    /// The mask of a global example does not depend on which rank computes it: two halves of a
    /// batch (firstExample 0 and 4) give the rows of the whole batch; and about `rate` of the
    /// units are dropped, the others scaled by 1 / (1 - rate).
    @Test func maskIsAPureFunctionOfTheGlobalExample() {
        let rows = 8, columns = 300, rate: Float = 0.25
        let src = (0..<(rows * columns)).map { Float($0 % 7) + 1 }
        var whole = [Float](repeating: 0, count: rows * columns), halves = whole
        let context = TrainingContext(seed: 3, step: 11, firstExample: 0)
        src.withUnsafeBufferPointer { s in
            whole.withUnsafeMutableBufferPointer { w in
                Dropout.apply(s.baseAddress!, to: w.baseAddress!, rows: rows, columns: columns, rate: rate,
                              context: context, stream: 5)
            }
            halves.withUnsafeMutableBufferPointer { h in
                Dropout.apply(s.baseAddress!, to: h.baseAddress!, rows: 4, columns: columns, rate: rate,
                              context: context, stream: 5)
                var second = context
                second.firstExample = 4
                Dropout.apply(s.baseAddress! + 4 * columns, to: h.baseAddress! + 4 * columns, rows: 4, columns: columns,
                              rate: rate, context: second, stream: 5)
            }
        }
        #expect(whole == halves)
        let dropped = whole.filter { $0 == 0 }.count
        #expect(abs(Double(dropped) / Double(whole.count) - 0.25) < 0.03, "dropped \(dropped) of \(whole.count)")
        for i in whole.indices where whole[i] != 0 { #expect(abs(whole[i] - src[i] / 0.75) < 1e-5) }
        // Another step or seed gives another mask.
        var other = [Float](repeating: 0, count: rows * columns)
        src.withUnsafeBufferPointer { s in
            other.withUnsafeMutableBufferPointer { o in
                Dropout.apply(s.baseAddress!, to: o.baseAddress!, rows: rows, columns: columns, rate: rate,
                              context: TrainingContext(seed: 3, step: 12, firstExample: 0), stream: 5)
            }
        }
        #expect(other != whole)
    }

    /// Without a training context (evaluation, predict) the model with dropout computes exactly
    /// what the same model without dropout computes; with one, something else.
    @Test(arguments: [ModelVariant.mlpDropout, .wideDeepDropout, .ncfDropout, .twoTowerDropout])
    func offInEvaluation(_ variant: ModelVariant) {
        var plain = variant.config
        plain.dropout = [:]
        let a = ModelUnderTest(variant.config, maxBatch: 8, seed: 5), b = ModelUnderTest(plain, maxBatch: 8, seed: 5)
        var rng = RNG(seed: 6)
        let batch = variant.batch(count: 6, rng: &rng)
        #expect(a.forward(batch) == b.forward(batch))
        a.model.trainingContext = variant.context
        #expect(a.forward(batch) != b.forward(batch))
    }
}

struct TwoTowerRetrievalTests {
    /// The item vectors `itemEmbeddings` computes (and the user vectors) give back the model's
    /// logits as dot products, so top-K retrieval over precomputed item vectors ranks exactly as
    /// the model scores; `allItemEmbeddings` is the same for ids 0..<rows. More items than
    /// maxBatch, so the batching is covered.
    @Test func towerVectorsReproduceTheLogits() {
        var config = ModelConfig(kind: .twoTower)
        config.embeddingDim = 4
        config.factors = 5
        config.hidden = [6]
        config.denseInputs = 0
        config.categoricalFields = 3
        config.vocabularySizes = [7, 23, 5]
        config.denseTransform = .identity
        config.userFields = [0]
        config.itemFields = [1]
        let m = ModelUnderTest(config, maxBatch: 8, seed: 11)
        let model = m.model as! TwoTowerModel
        var rng = RNG(seed: 12)
        let n = 8
        let batch = ModelTestBatch(count: n, denseWidth: 0, categoricalWidth: 3, rng: &rng)
        for b in 0..<n {
            batch.categorical[b * 3] = UInt32(rng.nextInt(below: 7))
            batch.categorical[b * 3 + 1] = UInt32(rng.nextInt(below: 23))
            batch.categorical[b * 3 + 2] = UInt32(rng.nextInt(below: 5))
        }
        let logits = m.forward(batch)
        let all = model.allItemEmbeddings(parameters: m.parameters.pointer, embeddingTable: m.table.pointer)
        #expect(all.count == 23 * 5)
        var users = [UInt32](repeating: 0, count: n), items = [UInt32](repeating: 0, count: n)
        for b in 0..<n { users[b] = batch.categorical[b * 3]; items[b] = batch.categorical[b * 3 + 1] }
        var u = [Float](repeating: 0, count: n * 5), v = [Float](repeating: 0, count: n * 5)
        users.withUnsafeBufferPointer { p in
            u.withUnsafeMutableBufferPointer { o in
                model.userEmbeddings(users: p.baseAddress!, count: n, parameters: m.parameters.pointer,
                                     embeddingTable: m.table.pointer, out: o.baseAddress!)
            }
        }
        items.withUnsafeBufferPointer { p in
            v.withUnsafeMutableBufferPointer { o in
                model.itemEmbeddings(items: p.baseAddress!, count: n, parameters: m.parameters.pointer,
                                     embeddingTable: m.table.pointer, out: o.baseAddress!)
            }
        }
        for b in 0..<n {
            let dot = (0..<5).reduce(Float(0)) { $0 + u[b * 5 + $1] * v[b * 5 + $1] }
            let dotAll = (0..<5).reduce(Float(0)) { $0 + u[b * 5 + $1] * all[Int(items[b]) * 5 + $1] }
            #expect(abs(dot - logits[b]) <= 1e-5 * max(1, abs(logits[b])), "example \(b): \(dot) vs logit \(logits[b])")
            #expect(dot == dotAll)
        }
        #expect(Set(logits).count > n / 2)
    }
}
