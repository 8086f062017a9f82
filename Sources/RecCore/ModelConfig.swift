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
        switch kind {
        case .mlp: return nil
        case .dlrm: return embeddingTables
        case .logreg: return tables(fields: tableFields, dim: 1)
        case .wideDeep: return tables(fields: tableFields, dim: 1 + embeddingDim)
        case .ncf: return tables(fields: tableFields, dim: factors + embeddingDim)
        case .twoTower: return tables(fields: tableFields, dim: embeddingDim)
        }
    }

    /// The categorical field each embedding table reads, in table order (empty for the mlp).
    public var tableFields: [Int] {
        switch kind {
        case .mlp: return []
        case .dlrm, .logreg, .wideDeep: return Array(0..<categoricalFields)
        case .ncf: return [userFields?.first ?? 0, itemFields?.first ?? 0]
        case .twoTower: return (userFields ?? []) + (itemFields ?? [])
        }
    }

    /// The leading columns of every embedding row that start at zero instead of uniform ±0.05:
    /// all of logreg's weights, wide & deep's wide weight.
    public var zeroedEmbeddingColumns: Int {
        switch kind {
        case .logreg: return 1
        case .wideDeep: return 1
        case .mlp, .dlrm, .ncf, .twoTower: return 0
        }
    }

    /// This configuration with every table `rows` rows of ids: the shape of a sharded step's
    /// working tables, which hold only the rows a batch touches (`ShardedEmbeddings`).
    public func withWorkingTables(rows: Int) -> ModelConfig {
        var working = self
        working.vocabularySizes = Array(repeating: rows, count: categoricalFields)
        return working
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
