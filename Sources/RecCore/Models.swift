#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The model families rec-dist trains.
public enum ModelKind: String, CaseIterable, Sendable, Codable {
    /// The seed's click model: log1p of the first dense features -> Dense(hidden, relu)... -> Dense(1): a logit (the loss and the predictions apply the sigmoid).
    case mlp
    /// DLRM (Naumov et al. 2019), Criteo Kaggle configuration: hashed embeddings, bottom MLP,
    /// pairwise dot interaction, top MLP.
    case dlrm
    /// Logistic regression: one weight per categorical id (a 1-wide embedding per field) plus a
    /// linear term over the dense inputs and a bias.
    case logreg
    /// Wide & Deep (Cheng et al. 2016): a wide linear part over the categorical ids plus a deep
    /// MLP over the dense inputs and the fields' embeddings; the two logits are summed.
    case wideDeep = "wide-deep"
    /// NeuMF (He et al. 2017): a GMF branch (user and item embeddings multiplied element-wise) and
    /// an MLP over the concatenated user and item embeddings, joined by the final linear layer.
    case ncf
    /// Two towers: an MLP over the user-side fields' embeddings and one over the item-side
    /// fields'; the logit is the dot product of their outputs.
    case twoTower = "two-tower"
}

/// How a model transforms its dense inputs before the first layer.
public enum DenseTransform: String, CaseIterable, Sendable, Codable {
    /// log(1 + max(x, 0)), DLRM's transform of Criteo's raw counts (the raw TSV path).
    case log1p
    /// None: the values were already transformed (a prepared dataset, `rec-dist prepare`).
    case identity
}

/// Everything that fixes a model's shapes. Stored in checkpoints.
public struct ModelConfig: Sendable, Codable, Equatable {
    public var kind: ModelKind
    /// mlp: hidden layer widths, e.g. [128] or [512, 256].
    public var hidden: [Int] = [128]
    /// mlp: how many of the leading dense features it reads (the seed model uses 10).
    public var mlpDenseFeatures: Int = 10
    /// Width of the raw dense input (Criteo: 13; a prepared dataset: its dense field count, maybe 0).
    public var denseInputs: Int = 13
    /// Number of categorical fields (Criteo: 26).
    public var categoricalFields: Int = 26
    /// dlrm: rows per embedding table when the categorical values are raw hashes.
    public var hashBuckets: Int = 65_536
    /// dlrm: rows of each field's table when the categorical values are prepared ids
    /// (`rec-dist prepare`; ids index the table directly). nil: raw hashes, `hashBuckets` rows each.
    public var vocabularySizes: [Int]? = nil
    /// What the model does to the dense inputs first.
    public var denseTransform: DenseTransform = .log1p
    /// dlrm: embedding width; also the bottom MLP's output width.
    public var embeddingDim: Int = 16
    /// dlrm: bottom MLP hidden widths (the output width is `embeddingDim`).
    public var bottom: [Int] = [512, 256, 64]
    /// dlrm: top MLP hidden widths (the output width is 1).
    public var top: [Int] = [512, 256]
    /// Weight initialization; biases start at zero.
    public var initializer: Initializer = .glorotUniform
    /// ncf: the GMF branch's width (NeuMF's predictive factors); two-tower: the width of both
    /// towers' outputs, whose dot product is the logit.
    public var factors: Int = 8
    /// ncf, two-tower: the categorical fields (indices) of the user side and of the item side.
    /// ncf reads exactly one of each. nil: taken from a prepared dataset's field roles.
    public var userFields: [Int]? = nil
    public var itemFields: [Int]? = nil
    /// Hidden activation per MLP, by stack name (`ModelConfig.stackNames`); absent: relu.
    public var activations: [String: Activation] = [:]
    /// Dropout rate after each hidden layer per MLP, by stack name; absent: 0 (off).
    public var dropout: [String: Float] = [:]

    public init(kind: ModelKind) { self.kind = kind }

    /// The configuration `--model kind` starts from: the kind's published or customary shape.
    public static func preset(_ kind: ModelKind) -> ModelConfig {
        var config = ModelConfig(kind: kind)
        switch kind {
        case .mlp, .dlrm, .logreg: break
        case .wideDeep:
            config.hidden = [256, 128]
        case .ncf:
            // NeuMF with 8 predictive factors: MLP embeddings of 32 per side, layers 64-32-16-8.
            config.embeddingDim = 32
            config.hidden = [32, 16, 8]
            config.factors = 8
        case .twoTower:
            config.embeddingDim = 32
            config.hidden = [64]
            config.factors = 32
        }
        return config
    }

    /// The names of the MLPs a model of `kind` has (keys of `activations` and `dropout`).
    public static func stackNames(_ kind: ModelKind) -> [String] {
        switch kind {
        case .mlp: return ["mlp"]
        case .dlrm: return ["bottom", "top"]
        case .logreg: return []
        case .wideDeep: return ["deep"]
        case .ncf: return ["mlp"]
        case .twoTower: return ["user", "item"]
        }
    }

    /// The hidden activation of stack `name`.
    public func activation(_ name: String) -> Activation { activations[name] ?? .relu }
    /// The dropout rate of stack `name`.
    public func dropoutRate(_ name: String) -> Float { dropout[name] ?? 0 }

    /// Tables for the categorical fields `fields` (in that order), `dim` wide, indexed as this
    /// configuration says (per-field vocabulary sizes, or `hashBuckets` rows of raw hashes).
    public func tables(fields: [Int], dim: Int) -> EmbeddingTables {
        if let sizes = vocabularySizes {
            precondition(sizes.count == categoricalFields,
                         "\(sizes.count) vocabulary sizes for \(categoricalFields) categorical fields")
            return EmbeddingTables(rowsPerField: fields.map { sizes[$0] }, dim: dim, indexing: .direct)
        }
        return EmbeddingTables(fields: fields.count, buckets: hashBuckets, dim: dim)
    }

    /// The table layout of this model's embeddings (nil for the mlp).
    public var modelTables: EmbeddingTables? {
        let all = Array(0..<categoricalFields)
        switch kind {
        case .mlp: return nil
        case .dlrm: return embeddingTables
        case .logreg: return tables(fields: all, dim: 1)
        case .wideDeep: return tables(fields: all, dim: 1 + embeddingDim)
        case .ncf: return tables(fields: [userFields?.first ?? 0, itemFields?.first ?? 0], dim: factors + embeddingDim)
        case .twoTower: return tables(fields: (userFields ?? []) + (itemFields ?? []), dim: embeddingDim)
        }
    }

    /// The embedding tables this configuration describes (dlrm).
    public var embeddingTables: EmbeddingTables {
        if let sizes = vocabularySizes {
            precondition(sizes.count == categoricalFields,
                         "\(sizes.count) vocabulary sizes for \(categoricalFields) categorical fields")
            return EmbeddingTables(rowsPerField: sizes, dim: embeddingDim, indexing: .direct)
        }
        return EmbeddingTables(fields: categoricalFields, buckets: hashBuckets, dim: embeddingDim)
    }

    /// dlrm: vectors entering the dot interaction: the bottom MLP's output (when there are dense
    /// inputs) and one embedding per categorical field.
    public var interactionSlots: Int { categoricalFields + (denseInputs > 0 ? 1 : 0) }

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
            let slots = interactionSlots
            let pairs = slots * (slots - 1) / 2
            let inter = Double(pairs * embeddingDim)
            let bottomFlops = denseInputs > 0 ? mlp([denseInputs] + bottom + [embeddingDim]) : 0
            return 6 * (bottomFlops + mlp([(denseInputs > 0 ? embeddingDim : 0) + pairs] + top + [1]) + inter)
        case .logreg:
            return 6 * Double(denseInputs + categoricalFields)
        case .wideDeep:
            return 6 * mlp([denseInputs + categoricalFields * embeddingDim] + hidden + [1])
        case .ncf:
            return 6 * (mlp([2 * embeddingDim] + hidden) + Double(factors + (hidden.last ?? 0)))
        case .twoTower:
            let u = (userFields ?? []).count * embeddingDim, i = (itemFields ?? []).count * embeddingDim
            return 6 * (mlp([u] + hidden + [factors]) + mlp([i] + hidden + [factors]) + Double(factors))
        }
    }

    enum CodingKeys: String, CodingKey {
        case kind, hidden, mlpDenseFeatures, denseInputs, categoricalFields, hashBuckets, vocabularySizes,
             denseTransform, embeddingDim, bottom, top, initializer, factors, userFields, itemFields, activations, dropout
    }

    /// Decodes a configuration; `vocabularySizes` and `denseTransform` may be absent (checkpoints
    /// written before prepared datasets existed), meaning raw hashes and log1p.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(ModelKind.self, forKey: .kind)
        hidden = try c.decode([Int].self, forKey: .hidden)
        mlpDenseFeatures = try c.decode(Int.self, forKey: .mlpDenseFeatures)
        denseInputs = try c.decode(Int.self, forKey: .denseInputs)
        categoricalFields = try c.decode(Int.self, forKey: .categoricalFields)
        hashBuckets = try c.decode(Int.self, forKey: .hashBuckets)
        vocabularySizes = try c.decodeIfPresent([Int].self, forKey: .vocabularySizes)
        denseTransform = try c.decodeIfPresent(DenseTransform.self, forKey: .denseTransform) ?? .log1p
        embeddingDim = try c.decode(Int.self, forKey: .embeddingDim)
        bottom = try c.decode([Int].self, forKey: .bottom)
        top = try c.decode([Int].self, forKey: .top)
        initializer = try c.decode(Initializer.self, forKey: .initializer)
        factors = try c.decodeIfPresent(Int.self, forKey: .factors) ?? 8
        userFields = try c.decodeIfPresent([Int].self, forKey: .userFields)
        itemFields = try c.decodeIfPresent([Int].self, forKey: .itemFields)
        activations = try c.decodeIfPresent([String: Activation].self, forKey: .activations) ?? [:]
        dropout = try c.decodeIfPresent([String: Float].self, forKey: .dropout) ?? [:]
    }
}

/// The transform DLRM applies to Criteo's counts: log(1 + max(x, 0)).
@inline(__always)
public func logTransform(_ x: Float) -> Float { log1pf(max(x, 0)) }

extension DenseTransform {
    /// The transformed value of one raw dense input.
    @inline(__always)
    public func apply(_ x: Float) -> Float {
        switch self {
        case .log1p: return logTransform(x)
        case .identity: return x
        }
    }
}

/// What a model's backward pass reports as it goes, so a caller can start communicating the
/// finished gradients while the rest of the backward pass runs.
public enum BackwardEvent: Sendable, Equatable {
    /// Every dense gradient at flat offsets >= `from` (to the end of the layout) is final for
    /// this backward pass. Models finish their layers in decreasing layout order.
    case denseFinal(from: Int)
    /// The sparse (embedding) gradient of this backward pass is complete.
    case sparseFinal
}

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
    /// Set by the trainer before each training forward (dropout masks depend on it); nil in
    /// evaluation and prediction, where dropout is off.
    var trainingContext: TrainingContext? { get set }

    /// Fills the parameters (and embedding tables) from `seed`.
    func initialize(parameters: UnsafeMutablePointer<Float>, embeddingTable: UnsafeMutablePointer<Float>,
                    seed: UInt64)
    /// Computes the logits of `batch`: (batch.count). Valid until the next forward.
    func forward(_ batch: BatchView, parameters: UnsafePointer<Float>,
                 embeddingTable: UnsafePointer<Float>) -> UnsafePointer<Float>
    /// Back-propagates dLogits: (batch.count) through the last `forward` of the same batch,
    /// accumulating dense gradients into `gradients` and overwriting `sparse` with the embedding
    /// gradients (when the model has embeddings). Calls `events` as parts of the gradient become
    /// final: `.denseFinal` after each layer, with decreasing offsets, ending with
    /// `.denseFinal(from: 0)`, and `.sparseFinal` once `sparse` is complete (models without
    /// embeddings report it too, with `sparse.count == 0`).
    func backward(_ batch: BatchView, dLogits: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                  gradients: UnsafeMutablePointer<Float>, sparse: SparseGradient,
                  events: (BackwardEvent) throws -> Void) rethrows
    /// Bytes of activation and scratch buffers the model allocated for `maxBatch` examples.
    var activationBytes: Int { get }
}

extension RecModel {
    /// `backward` without progress events.
    public func backward(_ batch: BatchView, dLogits: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, sparse: SparseGradient) {
        backward(batch, dLogits: dLogits, parameters: parameters, gradients: gradients, sparse: sparse,
                 events: { _ in })
    }
}

/// Builds the model `config` describes, with buffers for `maxBatch` examples.
public func makeModel(_ config: ModelConfig, maxBatch: Int) -> any RecModel {
    switch config.kind {
    case .mlp: return MLPModel(config: config, maxBatch: maxBatch)
    case .dlrm: return DLRMModel(config: config, maxBatch: maxBatch)
    case .logreg: return LogisticRegressionModel(config: config, maxBatch: maxBatch)
    case .wideDeep: return WideDeepModel(config: config, maxBatch: maxBatch)
    case .ncf: return NCFModel(config: config, maxBatch: maxBatch)
    case .twoTower: return TwoTowerModel(config: config, maxBatch: maxBatch)
    }
}

/// A stack of Linear layers with an activation after each hidden layer and `lastActivation`
/// after the final one; owns its activations and their gradients.
///
/// With a dropout rate p > 0, each hidden layer's output (not the final one) is multiplied by a
/// mask of 0 and 1/(1-p) (inverted dropout) during training, when `forward` gets a
/// `TrainingContext`; the mask is a pure function of (seed, step, global example, layer, unit)
/// (`Dropout`), so it is recomputed in the backward pass instead of stored, and does not depend
/// on the number of ranks.
public final class MLPStack {
    public let layers: [Linear]
    public let hiddenActivation: Activation
    public let lastActivation: Activation
    public let dropoutRate: Float
    let dropoutStream: UInt64
    let outputs: [FloatBuffer]   // outputs[l]: (maxBatch, layers[l].outputSize), after activation
    let dOutputs: [FloatBuffer]  // dOutputs[l]: same shape
    let dropped: [FloatBuffer]   // dropped[l]: outputs[l] after dropout (hidden layers, rate > 0 only)
    var masked = false           // whether the last forward applied dropout

    public init(_ name: String, sizes: [Int], hiddenActivation: Activation = .relu,
                lastActivation: Activation, dropout: Float = 0, maxBatch: Int, layout: inout ParameterLayout) {
        precondition(sizes.count >= 2)
        precondition(dropout >= 0 && dropout < 1, "dropout rate \(dropout) outside [0, 1)")
        var layers: [Linear] = []
        for l in 0..<(sizes.count - 1) {
            layers.append(Linear("\(name).\(l)", inputSize: sizes[l], outputSize: sizes[l + 1], layout: &layout))
        }
        self.layers = layers
        self.hiddenActivation = hiddenActivation
        self.lastActivation = lastActivation
        dropoutRate = dropout
        dropoutStream = Dropout.stream(name)
        outputs = layers.map { FloatBuffer(count: maxBatch * $0.outputSize) }
        dOutputs = layers.map { FloatBuffer(count: maxBatch * $0.outputSize) }
        dropped = layers.dropLast().map { FloatBuffer(count: dropout > 0 ? maxBatch * $0.outputSize : 0) }
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

    /// The input layer l + 1 reads: the dropped-out output of layer l while training, else its output.
    @inline(__always)
    func layerInput(_ l: Int) -> UnsafePointer<Float> {
        UnsafePointer(masked ? dropped[l].pointer : outputs[l].pointer)
    }

    /// x: (batch, inputSize) -> output: (batch, outputSize). `context` (training only) turns
    /// dropout on when the rate is positive.
    @inline(__always)
    public func forward(x: UnsafePointer<Float>, batch: Int, parameters: UnsafePointer<Float>,
                        context: TrainingContext? = nil) {
        masked = dropoutRate > 0 && context != nil
        var input = x
        for l in 0..<layers.count {
            let y = outputs[l].pointer
            layers[l].forward(x: input, y: y, batch: batch, parameters: parameters, activation: activation(l))
            if masked && l < layers.count - 1, let context {
                // dropped = y · mask / (1 - p), mask from (seed, step, example, layer, unit).
                Dropout.apply(y, to: dropped[l].pointer, rows: batch, columns: layers[l].outputSize,
                              rate: dropoutRate, context: context, stream: dropoutStream &+ UInt64(l))
            }
            input = l < layers.count - 1 ? layerInput(l) : UnsafePointer(y)
        }
        lastContext = context
    }
    var lastContext: TrainingContext?

    /// Consumes `dOutput` (batch, outputSize), accumulates parameter gradients and writes
    /// dx: (batch, inputSize) when given.
    /// Reports `.denseFinal(from: layer.weightOffset)` to `events` after each layer.
    @inline(__always)
    public func backward(x: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, batch: Int,
                         parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                         events: (BackwardEvent) throws -> Void = { _ in }) rethrows {
        for l in stride(from: layers.count - 1, through: 0, by: -1) {
            let input = l == 0 ? x : layerInput(l - 1)
            let dInput = l == 0 ? dx : dOutputs[l - 1].pointer
            layers[l].backward(x: input, y: outputs[l].pointer, dy: dOutputs[l].pointer, dx: dInput, batch: batch,
                               activation: activation(l), parameters: parameters, gradients: gradients)
            if masked && l > 0, let context = lastContext {
                // Through the dropout of layer l - 1: d(output) = d(dropped) · mask / (1 - p).
                Dropout.apply(dOutputs[l - 1].pointer, to: dOutputs[l - 1].pointer, rows: batch,
                              columns: layers[l - 1].outputSize, rate: dropoutRate, context: context,
                              stream: dropoutStream &+ UInt64(l - 1))
            }
            try events(.denseFinal(from: layers[l].weightOffset))
        }
    }

    /// Bytes of the activation buffers.
    public var activationBytes: Int {
        (outputs.reduce(0) { $0 + $1.count } + dOutputs.reduce(0) { $0 + $1.count } + dropped.reduce(0) { $0 + $1.count }) * 4
    }
}

/// The seed's click model: x = log1p(max(dense[0..<k], 0)) -> Dense(h, relu)... -> Dense(1) -> logit.
public final class MLPModel: RecModel {
    public let config: ModelConfig
    public let layout: ParameterLayout
    public var embeddings: EmbeddingTables? { nil }
    public let maxBatch: Int
    public var trainingContext: TrainingContext?
    let stack: MLPStack
    let input: FloatBuffer   // (maxBatch, k)

    public init(config: ModelConfig, maxBatch: Int) {
        precondition(config.kind == .mlp)
        precondition(config.mlpDenseFeatures >= 1 && config.mlpDenseFeatures <= config.denseInputs)
        self.config = config
        self.maxBatch = maxBatch
        var layout = ParameterLayout()
        stack = MLPStack("mlp", sizes: [config.mlpDenseFeatures] + config.hidden + [1],
                         hiddenActivation: config.activation("mlp"), lastActivation: .linear,
                         dropout: config.dropoutRate("mlp"), maxBatch: maxBatch, layout: &layout)
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
        let k = config.mlpDenseFeatures, x = input.pointer, transform = config.denseTransform
        for b in 0..<batch.count {
            for j in 0..<k { x[b * k + j] = transform.apply(batch.dense[b * batch.denseWidth + j]) }
        }
        stack.forward(x: x, batch: batch.count, parameters: parameters, context: trainingContext)
        return UnsafePointer(stack.output)
    }

    public func backward(_ batch: BatchView, dLogits: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, sparse: SparseGradient,
                         events: (BackwardEvent) throws -> Void) rethrows {
        sparse.count = 0
        try events(.sparseFinal)
        stack.dOutput.update(from: dLogits, count: batch.count)
        try stack.backward(x: input.pointer, dx: nil, batch: batch.count, parameters: parameters,
                           gradients: gradients, events: events)
    }

    public var activationBytes: Int { stack.activationBytes + input.count * 4 }
}

/// DLRM, Criteo Kaggle configuration (github.com/facebookresearch/dlrm):
///
///     dense (13) -> log1p -> bottom MLP 13-512-256-64-16 (relu) ---------------------\
///     26 categorical -> hashed embeddings (26 x 16) -> dot interaction of the 27 vectors (351)
///     [bottom output (16), interaction (351)] = 367 -> top MLP 367-512-256-1 (relu, then linear) -> logit
///
/// Any numbers of dense inputs and categorical fields work the same way, with per-field table
/// sizes (`ModelConfig.vocabularySizes`) for prepared datasets. With no dense inputs there is no
/// bottom MLP: the interaction is over the embeddings alone and the top MLP reads the pairs only.
///
/// The interaction reads the bottom output and the gathered embeddings where they are, and its
/// backward pass writes their gradients straight into the bottom MLP's output gradient and the
/// sparse gradient: no concatenated copy of the vectors.
public final class DLRMModel: RecModel {
    public let config: ModelConfig
    public let layout: ParameterLayout
    public let embeddings: EmbeddingTables?
    public let maxBatch: Int
    public var trainingContext: TrainingContext?
    let tables: EmbeddingTables
    let bottom: MLPStack?         // nil when there are no dense inputs
    let top: MLPStack
    let interaction: DotInteraction
    let firstEmbeddingSlot: Int   // 1 with a bottom MLP (slot 0 is its output), else 0
    let denseInput: FloatBuffer   // (maxBatch, denseInputs), transformed
    let embedded: FloatBuffer     // (maxBatch, fields, dim): the gathered embedding rows
    let interOut: FloatBuffer     // (maxBatch, interaction.outputSize)
    let dInterOut: FloatBuffer    // (maxBatch, interaction.outputSize)
    let interScratch: FloatBuffer // the interaction's per-example scratch
    let rows: UnsafeMutablePointer<Int32>   // (maxBatch, fields) rows looked up by the last forward

    public init(config: ModelConfig, maxBatch: Int) {
        precondition(config.kind == .dlrm)
        precondition(config.interactionSlots >= 2, "dlrm needs at least two of: dense inputs, categorical fields")
        self.config = config
        self.maxBatch = maxBatch
        let dim = config.embeddingDim, fields = config.categoricalFields
        let hasBottom = config.denseInputs > 0
        tables = config.embeddingTables
        embeddings = tables
        let slots = config.interactionSlots
        interaction = DotInteraction(slots: slots, dim: dim, passthrough: hasBottom)
        firstEmbeddingSlot = hasBottom ? 1 : 0
        var layout = ParameterLayout()
        bottom = hasBottom ? MLPStack("bottom", sizes: [config.denseInputs] + config.bottom + [dim],
                                      hiddenActivation: config.activation("bottom"),
                                      lastActivation: config.activation("bottom"), dropout: config.dropoutRate("bottom"),
                                      maxBatch: maxBatch, layout: &layout) : nil
        top = MLPStack("top", sizes: [interaction.outputSize] + config.top + [1],
                       hiddenActivation: config.activation("top"), lastActivation: .linear,
                       dropout: config.dropoutRate("top"), maxBatch: maxBatch, layout: &layout)
        self.layout = layout
        denseInput = FloatBuffer(count: maxBatch * config.denseInputs)
        embedded = FloatBuffer(count: maxBatch * fields * dim)
        interOut = FloatBuffer(count: maxBatch * interaction.outputSize)
        dInterOut = FloatBuffer(count: maxBatch * interaction.outputSize)
        interScratch = FloatBuffer(count: interaction.scratchCount)
        rows = .allocate(capacity: max(maxBatch * fields, 1))
        rows.initialize(repeating: 0, count: max(maxBatch * fields, 1))
    }

    deinit { rows.deallocate() }

    public var activationBytes: Int {
        (bottom?.activationBytes ?? 0) + top.activationBytes
            + (denseInput.count + embedded.count + interOut.count + dInterOut.count + maxBatch * config.categoricalFields) * 4 + interScratch.count * 4
    }

    public func initialize(parameters: UnsafeMutablePointer<Float>, embeddingTable: UnsafeMutablePointer<Float>,
                           seed: UInt64) {
        var rng = RNG(seed: seed, stream: 1)
        bottom?.initialize(parameters, with: config.initializer, rng: &rng)
        top.initialize(parameters, with: config.initializer, rng: &rng)
        var embeddingRNG = RNG(seed: seed, stream: 2)
        tables.initialize(embeddingTable, rng: &embeddingRNG)
    }

    public func forward(_ batch: BatchView, parameters: UnsafePointer<Float>,
                        embeddingTable: UnsafePointer<Float>) -> UnsafePointer<Float> {
        let n = batch.count, dim = config.embeddingDim, fields = config.categoricalFields
        precondition(n <= maxBatch && batch.denseWidth == config.denseInputs
                     && batch.categoricalWidth == config.categoricalFields)
        if let bottom {
            let x = denseInput.pointer, width = config.denseInputs, transform = config.denseTransform
            for i in 0..<(n * width) { x[i] = transform.apply(batch.dense[i]) }
            bottom.forward(x: x, batch: n, parameters: parameters, context: trainingContext)
        }
        tables.lookup(categorical: batch.categorical, batch: n, table: embeddingTable, out: embedded.pointer,
                      slots: fields, firstSlot: 0, rows: rows)
        // Slot 0 is the bottom MLP's output when there is one, else the first embedding.
        let e = embedded.pointer
        if let bottom {
            interaction.forward(first: bottom.output, firstStride: dim, rest: e, restStride: fields * dim,
                                out: interOut.pointer, batch: n, scratch: interScratch.pointer)
        } else {
            interaction.forward(first: e, firstStride: fields * dim, rest: e + dim, restStride: fields * dim,
                                out: interOut.pointer, batch: n, scratch: interScratch.pointer)
        }
        top.forward(x: interOut.pointer, batch: n, parameters: parameters, context: trainingContext)
        return UnsafePointer(top.output)
    }

    public func backward(_ batch: BatchView, dLogits: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, sparse: SparseGradient,
                         events: (BackwardEvent) throws -> Void) rethrows {
        let n = batch.count, dim = config.embeddingDim, fields = config.categoricalFields
        precondition(sparse.capacity >= n * fields && sparse.dim == dim)
        top.dOutput.update(from: dLogits, count: n)
        try top.backward(x: interOut.pointer, dx: dInterOut.pointer, batch: n, parameters: parameters,
                         gradients: gradients, events: events)
        // dT straight into the bottom MLP's output gradient (slot 0) and the sparse gradient.
        let e = embedded.pointer, v = sparse.values
        if let bottom {
            interaction.backward(first: bottom.output, firstStride: dim, rest: e, restStride: fields * dim,
                                 dOut: dInterOut.pointer, dFirst: bottom.dOutput, dFirstStride: dim,
                                 dRest: v, dRestStride: fields * dim, batch: n)
        } else {
            interaction.backward(first: e, firstStride: fields * dim, rest: e + dim, restStride: fields * dim,
                                 dOut: dInterOut.pointer, dFirst: v, dFirstStride: fields * dim,
                                 dRest: v + dim, dRestStride: fields * dim, batch: n)
        }
        sparse.rows.update(from: rows, count: n * fields)
        sparse.count = n * fields
        try events(.sparseFinal)
        try bottom?.backward(x: denseInput.pointer, dx: nil, batch: n, parameters: parameters, gradients: gradients,
                             events: events)
    }
}
