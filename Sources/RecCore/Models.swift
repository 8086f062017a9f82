#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The model families rec-dist trains.
public enum ModelKind: String, CaseIterable, Sendable, Codable {
    /// The seed's click model: log1p of the first dense features -> Dense(hidden, relu)... -> Dense(1, sigmoid).
    case mlp
    /// DLRM (Naumov et al. 2019), Criteo Kaggle configuration: hashed embeddings, bottom MLP,
    /// pairwise dot interaction, top MLP.
    case dlrm
}

/// Everything that fixes a model's shapes. Stored in checkpoints.
public struct ModelConfig: Sendable, Codable, Equatable {
    public var kind: ModelKind
    /// mlp: hidden layer widths, e.g. [128] or [512, 256].
    public var hidden: [Int] = [128]
    /// mlp: how many of the leading dense features it reads (the seed model uses 10).
    public var mlpDenseFeatures: Int = 10
    /// Width of the raw dense input (Criteo: 13).
    public var denseInputs: Int = 13
    /// Number of categorical fields (Criteo: 26).
    public var categoricalFields: Int = 26
    /// dlrm: rows per embedding table.
    public var hashBuckets: Int = 65_536
    /// dlrm: embedding width; also the bottom MLP's output width.
    public var embeddingDim: Int = 16
    /// dlrm: bottom MLP hidden widths (the output width is `embeddingDim`).
    public var bottom: [Int] = [512, 256, 64]
    /// dlrm: top MLP hidden widths (the output width is 1).
    public var top: [Int] = [512, 256]
    /// Weight initialization; biases start at zero.
    public var initializer: Initializer = .glorotUniform

    public init(kind: ModelKind) { self.kind = kind }

    /// Forward + backward FLOPs per example in the matrix multiplies (2 per multiply-add,
    /// backward twice the forward), for throughput and efficiency figures.
    public var flopsPerExample: Double {
        func mlp(_ sizes: [Int]) -> Double {
            zip(sizes, sizes.dropFirst()).reduce(0) { $0 + Double($1.0 * $1.1) }
        }
        switch kind {
        case .mlp:
            return 6 * mlp([mlpDenseFeatures] + hidden + [1])
        case .dlrm:
            let slots = categoricalFields + 1
            let inter = Double(slots * (slots - 1) / 2 * embeddingDim)
            return 6 * (mlp([denseInputs] + bottom + [embeddingDim])
                        + mlp([embeddingDim + slots * (slots - 1) / 2] + top + [1]) + inter)
        }
    }
}

/// The transform DLRM applies to Criteo's counts: log(1 + max(x, 0)).
@inline(__always)
public func logTransform(_ x: Float) -> Float { log1pf(max(x, 0)) }

/// A model with explicit forward and backward passes over externally owned flat buffers.
///
/// Dense parameters live in one flat buffer described by `layout`; embedding tables (if any) in a
/// second flat buffer of `embeddings.rowCount` rows. Activations and scratch are allocated once,
/// for up to `maxBatch` examples, so the training step does not allocate.
public protocol RecModel: AnyObject {
    var config: ModelConfig { get }
    var layout: ParameterLayout { get }
    /// The hashed embedding tables, or nil for models without them.
    var embeddings: EmbeddingTables? { get }
    var maxBatch: Int { get }

    /// Fills the parameters (and embedding tables) from `seed`.
    func initialize(parameters: UnsafeMutablePointer<Float>, embeddingTable: UnsafeMutablePointer<Float>,
                    seed: UInt64)
    /// Computes the logits of `batch`: (batch.count). Valid until the next forward.
    func forward(_ batch: BatchView, parameters: UnsafePointer<Float>,
                 embeddingTable: UnsafePointer<Float>) -> UnsafePointer<Float>
    /// Back-propagates dLogits: (batch.count) through the last `forward` of the same batch,
    /// accumulating dense gradients into `gradients` and overwriting `sparse` with the embedding
    /// gradients (when the model has embeddings).
    func backward(_ batch: BatchView, dLogits: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                  gradients: UnsafeMutablePointer<Float>, sparse: SparseGradient)
}

/// Builds the model `config` describes, with buffers for `maxBatch` examples.
public func makeModel(_ config: ModelConfig, maxBatch: Int) -> any RecModel {
    switch config.kind {
    case .mlp: return MLPModel(config: config, maxBatch: maxBatch)
    case .dlrm: return DLRMModel(config: config, maxBatch: maxBatch)
    }
}

/// A stack of Linear layers with an activation after each hidden layer and `lastActivation`
/// after the final one; owns its activations and their gradients.
public final class MLPStack {
    public let layers: [Linear]
    public let hiddenActivation: Activation
    public let lastActivation: Activation
    let outputs: [FloatBuffer]   // outputs[l]: (maxBatch, layers[l].outputSize), after activation
    let dOutputs: [FloatBuffer]  // dOutputs[l]: same shape

    public init(_ name: String, sizes: [Int], hiddenActivation: Activation = .relu,
                lastActivation: Activation, maxBatch: Int, layout: inout ParameterLayout) {
        precondition(sizes.count >= 2)
        var layers: [Linear] = []
        for l in 0..<(sizes.count - 1) {
            layers.append(Linear("\(name).\(l)", inputSize: sizes[l], outputSize: sizes[l + 1], layout: &layout))
        }
        self.layers = layers
        self.hiddenActivation = hiddenActivation
        self.lastActivation = lastActivation
        outputs = layers.map { FloatBuffer(count: maxBatch * $0.outputSize) }
        dOutputs = layers.map { FloatBuffer(count: maxBatch * $0.outputSize) }
    }

    public var inputSize: Int { layers[0].inputSize }
    public var outputSize: Int { layers[layers.count - 1].outputSize }
    /// The final output: (maxBatch, outputSize).
    public var output: UnsafeMutablePointer<Float> { outputs[layers.count - 1].pointer }
    /// Where the caller writes the gradient of the final output before `backward`.
    public var dOutput: UnsafeMutablePointer<Float> { dOutputs[layers.count - 1].pointer }

    func activation(_ l: Int) -> Activation { l == layers.count - 1 ? lastActivation : hiddenActivation }

    public func initialize(_ parameters: UnsafeMutablePointer<Float>, with initializer: Initializer,
                           rng: inout RNG) {
        for layer in layers { layer.initialize(parameters, with: initializer, rng: &rng) }
    }

    /// x: (batch, inputSize) -> output: (batch, outputSize).
    @inline(__always)
    public func forward(x: UnsafePointer<Float>, batch: Int, parameters: UnsafePointer<Float>) {
        var input = x
        for l in 0..<layers.count {
            let y = outputs[l].pointer
            layers[l].forward(x: input, y: y, batch: batch, parameters: parameters)
            activation(l).forward(y, count: batch * layers[l].outputSize)
            input = UnsafePointer(y)
        }
    }

    /// Consumes `dOutput` (batch, outputSize), accumulates parameter gradients and writes
    /// dx: (batch, inputSize) when given.
    @inline(__always)
    public func backward(x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, batch: Int,
                         parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        for l in stride(from: layers.count - 1, through: 0, by: -1) {
            let n = batch * layers[l].outputSize
            activation(l).backward(y: outputs[l].pointer, dy: dOutputs[l].pointer, count: n)
            let input = l == 0 ? x : UnsafePointer(outputs[l - 1].pointer)
            let dInput = l == 0 ? dx : dOutputs[l - 1].pointer
            layers[l].backward(x: input, dy: dOutputs[l].pointer, dx: dInput, batch: batch,
                               parameters: parameters, gradients: gradients)
        }
    }
}

/// The seed's click model: x = log1p(max(dense[0..<k], 0)) -> Dense(h, relu)... -> Dense(1) -> logit.
public final class MLPModel: RecModel {
    public let config: ModelConfig
    public let layout: ParameterLayout
    public var embeddings: EmbeddingTables? { nil }
    public let maxBatch: Int
    let stack: MLPStack
    let input: FloatBuffer   // (maxBatch, k)

    public init(config: ModelConfig, maxBatch: Int) {
        precondition(config.kind == .mlp)
        precondition(config.mlpDenseFeatures >= 1 && config.mlpDenseFeatures <= config.denseInputs)
        self.config = config
        self.maxBatch = maxBatch
        var layout = ParameterLayout()
        stack = MLPStack("mlp", sizes: [config.mlpDenseFeatures] + config.hidden + [1],
                         lastActivation: .linear, maxBatch: maxBatch, layout: &layout)
        self.layout = layout
        input = FloatBuffer(count: maxBatch * config.mlpDenseFeatures)
    }

    public func initialize(parameters: UnsafeMutablePointer<Float>, embeddingTable: UnsafeMutablePointer<Float>,
                           seed: UInt64) {
        var rng = RNG(seed: seed, stream: 1)
        stack.initialize(parameters, with: config.initializer, rng: &rng)
    }

    public func forward(_ batch: BatchView, parameters: UnsafePointer<Float>,
                        embeddingTable: UnsafePointer<Float>) -> UnsafePointer<Float> {
        precondition(batch.count <= maxBatch && batch.denseWidth == config.denseInputs)
        let k = config.mlpDenseFeatures, x = input.pointer
        for b in 0..<batch.count {
            for j in 0..<k { x[b * k + j] = logTransform(batch.dense[b * batch.denseWidth + j]) }
        }
        stack.forward(x: x, batch: batch.count, parameters: parameters)
        return UnsafePointer(stack.output)
    }

    public func backward(_ batch: BatchView, dLogits: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, sparse: SparseGradient) {
        stack.dOutput.update(from: dLogits, count: batch.count)
        stack.backward(x: input.pointer, dx: nil, batch: batch.count, parameters: parameters, gradients: gradients)
        sparse.count = 0
    }
}

/// DLRM, Criteo Kaggle configuration (github.com/facebookresearch/dlrm):
///
///     dense (13) -> log1p -> bottom MLP 13-512-256-64-16 (relu) ---------------------\
///     26 categorical -> hashed embeddings (26 x 16) -> dot interaction of the 27 vectors (351)
///     [bottom output (16), interaction (351)] = 367 -> top MLP 367-512-256-1 (relu, then linear) -> logit
public final class DLRMModel: RecModel {
    public let config: ModelConfig
    public let layout: ParameterLayout
    public let embeddings: EmbeddingTables?
    public let maxBatch: Int
    let tables: EmbeddingTables
    let bottom: MLPStack
    let top: MLPStack
    let interaction: DotInteraction
    let denseInput: FloatBuffer   // (maxBatch, 13), log-transformed
    let t: FloatBuffer            // (maxBatch, 27, dim): bottom output then embeddings
    let dT: FloatBuffer           // (maxBatch, 27, dim)
    let interOut: FloatBuffer     // (maxBatch, dim + 351)
    let dInterOut: FloatBuffer    // (maxBatch, dim + 351)
    let rows: UnsafeMutablePointer<Int32>   // (maxBatch, 26) rows looked up by the last forward

    public init(config: ModelConfig, maxBatch: Int) {
        precondition(config.kind == .dlrm)
        self.config = config
        self.maxBatch = maxBatch
        let dim = config.embeddingDim, fields = config.categoricalFields
        tables = EmbeddingTables(fields: fields, buckets: config.hashBuckets, dim: dim)
        embeddings = tables
        interaction = DotInteraction(slots: fields + 1, dim: dim)
        var layout = ParameterLayout()
        bottom = MLPStack("bottom", sizes: [config.denseInputs] + config.bottom + [dim],
                          lastActivation: .relu, maxBatch: maxBatch, layout: &layout)
        top = MLPStack("top", sizes: [interaction.outputSize] + config.top + [1],
                       lastActivation: .linear, maxBatch: maxBatch, layout: &layout)
        self.layout = layout
        denseInput = FloatBuffer(count: maxBatch * config.denseInputs)
        t = FloatBuffer(count: maxBatch * (fields + 1) * dim)
        dT = FloatBuffer(count: maxBatch * (fields + 1) * dim)
        interOut = FloatBuffer(count: maxBatch * interaction.outputSize)
        dInterOut = FloatBuffer(count: maxBatch * interaction.outputSize)
        rows = .allocate(capacity: maxBatch * fields)
        rows.initialize(repeating: 0, count: maxBatch * fields)
    }

    deinit { rows.deallocate() }

    public func initialize(parameters: UnsafeMutablePointer<Float>, embeddingTable: UnsafeMutablePointer<Float>,
                           seed: UInt64) {
        var rng = RNG(seed: seed, stream: 1)
        bottom.initialize(parameters, with: config.initializer, rng: &rng)
        top.initialize(parameters, with: config.initializer, rng: &rng)
        var embeddingRNG = RNG(seed: seed, stream: 2)
        tables.initialize(embeddingTable, rng: &embeddingRNG)
    }

    public func forward(_ batch: BatchView, parameters: UnsafePointer<Float>,
                        embeddingTable: UnsafePointer<Float>) -> UnsafePointer<Float> {
        let n = batch.count, dim = config.embeddingDim, slots = interaction.slots
        precondition(n <= maxBatch && batch.denseWidth == config.denseInputs
                     && batch.categoricalWidth == config.categoricalFields)
        let x = denseInput.pointer, width = config.denseInputs
        for i in 0..<(n * width) { x[i] = logTransform(batch.dense[i]) }
        bottom.forward(x: x, batch: n, parameters: parameters)
        let bottomOut = bottom.output
        for b in 0..<n { (t.pointer + b * slots * dim).update(from: bottomOut + b * dim, count: dim) }
        tables.lookup(categorical: batch.categorical, batch: n, table: embeddingTable, out: t.pointer,
                      slots: slots, firstSlot: 1, rows: rows)
        interaction.forward(t: t.pointer, out: interOut.pointer, batch: n)
        top.forward(x: interOut.pointer, batch: n, parameters: parameters)
        return UnsafePointer(top.output)
    }

    public func backward(_ batch: BatchView, dLogits: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, sparse: SparseGradient) {
        let n = batch.count, dim = config.embeddingDim, slots = interaction.slots, fields = config.categoricalFields
        precondition(sparse.capacity >= n * fields && sparse.dim == dim)
        top.dOutput.update(from: dLogits, count: n)
        top.backward(x: interOut.pointer, dx: dInterOut.pointer, batch: n, parameters: parameters,
                     gradients: gradients)
        interaction.backward(t: t.pointer, dOut: dInterOut.pointer, dT: dT.pointer, batch: n)
        for b in 0..<n {
            let src = dT.pointer + b * slots * dim
            (bottom.dOutput + b * dim).update(from: src, count: dim)
            (sparse.values + b * fields * dim).update(from: src + dim, count: fields * dim)
        }
        sparse.rows.update(from: rows, count: n * fields)
        sparse.count = n * fields
        bottom.backward(x: denseInput.pointer, dx: nil, batch: n, parameters: parameters, gradients: gradients)
    }
}
