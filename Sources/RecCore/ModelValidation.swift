/// A model configuration that cannot be built, naming the configuration key and the reason.
public struct ModelConfigError: Error, CustomStringConvertible, Equatable {
    /// The configuration-file key (snake_case) the problem is about.
    public var key: String
    public var message: String

    public init(key: String, _ message: String) {
        self.key = key
        self.message = message
    }

    public var description: String { "\(key): \(message)" }
}

extension ModelConfig {
    /// The widest MLP layer a configuration may ask for.
    public static let maxLayerWidth = 65_536

    /// Checks that the configuration describes a model that can be built, with the first
    /// problem's key and reason. Shapes that come from the data (field counts, vocabulary sizes)
    /// must have been filled in first.
    public func validate() throws(ModelConfigError) {
        func widths(_ key: String, _ w: [Int]) throws(ModelConfigError) {
            if let bad = w.first(where: { $0 < 1 || $0 > Self.maxLayerWidth }) {
                throw ModelConfigError(key: key, "layer width \(bad) is out of range: use 1 to \(Self.maxLayerWidth)")
            }
        }
        try widths("hidden", hidden)
        try widths("bottom", bottom)
        try widths("top", top)
        if embeddingDim < 1 || embeddingDim > 1024 { throw ModelConfigError(key: "embedding_dim", "\(embeddingDim) is out of range: use 1 to 1024") }
        if factors < 1 || factors > 1024 { throw ModelConfigError(key: "factors", "\(factors) is out of range: use 1 to 1024") }
        if hashBuckets < 2 || hashBuckets > 1 << 32 { throw ModelConfigError(key: "hash_buckets", "\(hashBuckets) is out of range: use 2 to 4294967296 (the hashes are 32-bit)") }
        let stacks = Self.stackNames(kind)
        for (name, _) in activations.sorted(by: { $0.key < $1.key }) where !stacks.contains(name) {
            throw ModelConfigError(key: "activation.\(name)", "\(kind.rawValue) has no MLP named '\(name)'; its MLPs: \(stacks.isEmpty ? "none" : stacks.joined(separator: ", "))")
        }
        for (name, rate) in dropout.sorted(by: { $0.key < $1.key }) {
            guard stacks.contains(name) else {
                throw ModelConfigError(key: "dropout.\(name)", "\(kind.rawValue) has no MLP named '\(name)'; its MLPs: \(stacks.isEmpty ? "none" : stacks.joined(separator: ", "))")
            }
            if !(rate >= 0 && rate < 1) { throw ModelConfigError(key: "dropout.\(name)", "rate \(rate) is outside [0, 1)") }
        }
        if let sizes = vocabularySizes {
            if sizes.count != categoricalFields {
                throw ModelConfigError(key: "vocabulary_sizes", "\(sizes.count) sizes for \(categoricalFields) categorical fields")
            }
            if let bad = sizes.firstIndex(where: { $0 < 1 }) {
                throw ModelConfigError(key: "vocabulary_sizes", "field \(bad) has \(sizes[bad]) rows; every table needs at least 1")
            }
        }
        func fields(_ key: String, _ f: [Int]?) throws(ModelConfigError) -> [Int] {
            guard let f, !f.isEmpty else {
                throw ModelConfigError(key: key, "\(kind.rawValue) needs \(key == "user_fields" ? "user" : "item")-side categorical fields; name them in the model config (e.g. \"\(key)\": [\"\(key == "user_fields" ? "user" : "item")\"]) or use a prepared dataset whose fields have user and item roles")
            }
            if let bad = f.first(where: { $0 < 0 || $0 >= categoricalFields }) {
                throw ModelConfigError(key: key, "field index \(bad) is outside the \(categoricalFields) categorical fields")
            }
            if Set(f).count != f.count { throw ModelConfigError(key: key, "a field is listed twice: \(f)") }
            return f
        }
        switch kind {
        case .mlp:
            if denseInputs < 1 { throw ModelConfigError(key: "model", "the mlp reads dense fields and the data has none; use another model") }
            if mlpDenseFeatures < 1 || mlpDenseFeatures > denseInputs {
                throw ModelConfigError(key: "dense_features", "\(mlpDenseFeatures) is out of range: the data has \(denseInputs) dense fields")
            }
        case .dlrm:
            if interactionSlots < 2 { throw ModelConfigError(key: "model", "dlrm needs at least two of: dense inputs, categorical fields") }
        case .logreg, .wideDeep:
            if categoricalFields < 1 { throw ModelConfigError(key: "model", "\(kind.rawValue) needs categorical fields") }
        case .ncf:
            let u = try fields("user_fields", userFields), i = try fields("item_fields", itemFields)
            if u.count != 1 { throw ModelConfigError(key: "user_fields", "ncf reads exactly one user field (the user id), got \(u.count)") }
            if i.count != 1 { throw ModelConfigError(key: "item_fields", "ncf reads exactly one item field (the item id), got \(i.count)") }
            if u == i { throw ModelConfigError(key: "item_fields", "the item field is the user field (\(u[0]))") }
            if hidden.isEmpty { throw ModelConfigError(key: "hidden", "ncf's MLP branch needs at least one layer") }
        case .twoTower:
            let u = try fields("user_fields", userFields), i = try fields("item_fields", itemFields)
            if let both = u.first(where: { i.contains($0) }) {
                throw ModelConfigError(key: "item_fields", "field \(both) is on both the user side and the item side")
            }
        }
        if let tables = modelTables {
            // Beyond this, memory decides (the run's plan checks it against each rank's).
            if tables.rowCount.multipliedReportingOverflow(by: tables.dim * 4).overflow {
                throw ModelConfigError(key: "hash_buckets", "the embedding tables (\(tables.rowCount) rows x \(tables.dim)) cannot be addressed; lower hash_buckets")
            }
        }
    }
}
