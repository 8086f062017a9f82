#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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
public final class DLRMModel: EmbeddingModelBase, RecModel {
    // rows: (maxBatch, fields), the rows looked up by the last forward.
    let bottom: MLPStack?         // nil when there are no dense inputs
    let top: MLPStack
    let interaction: DotInteraction
    let firstEmbeddingSlot: Int   // 1 with a bottom MLP (slot 0 is its output), else 0
    let denseInput: FloatBuffer   // (maxBatch, denseInputs), transformed
    let embedded: FloatBuffer     // (maxBatch, fields, dim): the gathered embedding rows
    let interOut: FloatBuffer     // (maxBatch, interaction.outputSize)
    let dInterOut: FloatBuffer    // (maxBatch, interaction.outputSize)
    let interScratch: FloatBuffer // the interaction's per-example scratch

    public init(config: ModelConfig, maxBatch: Int) {
        precondition(config.kind == .dlrm)
        precondition(config.interactionSlots >= 2, "dlrm needs at least two of: dense inputs, categorical fields")
        let dim = config.embeddingDim, fields = config.categoricalFields
        let hasBottom = config.denseInputs > 0
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
        denseInput = FloatBuffer(count: maxBatch * config.denseInputs)
        embedded = FloatBuffer(count: maxBatch * fields * dim)
        interOut = FloatBuffer(count: maxBatch * interaction.outputSize)
        dInterOut = FloatBuffer(count: maxBatch * interaction.outputSize)
        interScratch = FloatBuffer(count: interaction.scratchCount)
        super.init(config: config, maxBatch: maxBatch, tables: config.embeddingTables, columns: Array(0..<fields),
                   layout: layout)
    }

    public var activationBytes: Int {
        (bottom?.activationBytes ?? 0) + top.activationBytes
            + (denseInput.count + embedded.count + interOut.count + dInterOut.count) * 4 + rowsBytes + interScratch.count * 4
    }

    public func initialize(parameters: UnsafeMutablePointer<Float>, embeddingTable: UnsafeMutablePointer<Float>,
                           seed: UInt64) {
        initialize(layers: [bottom, top], parameters: parameters, embeddingTable: embeddingTable, seed: seed)
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
        try finishSparse(sparse, examples: n, events: events)
        try bottom?.backward(x: denseInput.pointer, dx: nil, batch: n, parameters: parameters, gradients: gradients,
                             events: events)
    }
}
