import Foundation
import RecCore
import RecData

extension TrainingConfig {
    /// Whether `dataPath` is a prepared dataset directory (rather than a TSV file).
    public var usesPreparedData: Bool { PreparedDataset.isDirectory(dataPath) }

    /// This configuration with the model shaped by the prepared dataset at `dataPath` (dense and
    /// categorical widths, per-field table sizes, no dense transform in the model: `prepare`
    /// applied it). For a TSV file, the configuration unchanged.
    ///
    /// The mlp reads the first `min(mlpDenseFeatures, dense fields)` dense fields.
    ///
    /// `configFile` (the `--model-config` file, if any) is named in a refusal beside the data.
    public func resolvingPreparedData(configFile: String? = nil) throws -> TrainingConfig {
        let configuration = configFile.map { "the model configuration of --model-config \($0)" } ?? "the model configuration"
        guard usesPreparedData else {
            do {
                try model.validate()
            } catch {
                throw TrainingError.modelConfig("\(configuration) does not fit '\(dataPath)' (13 dense, 26 categorical fields C1-C26): \(error)")
            }
            return self
        }
        let dataset = try PreparedDataset(directory: dataPath)
        var config = self
        let d = dataset.denseCount, c = dataset.categoricalCount
        config.model.denseInputs = d
        config.model.categoricalFields = c
        config.model.vocabularySizes = dataset.manifest.vocabularySizes
        config.model.denseTransform = .identity
        config.datasetSchemaHash = dataset.manifest.schemaHash
        switch model.kind {
        case .mlp:
            guard d > 0 else {
                throw TrainingError.notEnoughData("'\(dataPath)' has no dense fields, and the mlp reads only dense fields; use --model dlrm")
            }
            config.model.mlpDenseFeatures = min(model.mlpDenseFeatures, d)
        case .dlrm, .logreg, .wideDeep, .ncf, .twoTower:
            guard c > 0 else {
                throw TrainingError.notEnoughData("'\(dataPath)' has no categorical fields; \(model.kind.rawValue) needs embeddings, use --model mlp")
            }
            config.model = try config.model.withFieldRoles(dataset.manifest.schema, source: "the prepared dataset '\(dataPath)'",
                                                           configuration: configuration)
        }
        if evalPath != nil {
            throw TrainingError.notEnoughData("--eval applies to TSV data; a prepared dataset evaluates its own split (--eval-split valid or test)")
        }
        return config
    }
}

extension ModelConfig {
    /// This configuration with ncf's and two-tower's user and item fields taken from a prepared
    /// dataset's field roles where the configuration does not name them: ncf reads the `user`
    /// and the `item` field; two-tower's user side is the `user` and `user-feature` fields, its
    /// item side the `item` and `item-feature` fields (context fields are not read). Other
    /// models are returned unchanged. Then checks the configuration (`validate`); a refusal
    /// names `configuration` and `source`.
    public func withFieldRoles(_ schema: PreparedManifest.Schema, source: String = "the prepared dataset",
                               configuration: String = "the model configuration") throws -> ModelConfig {
        var config = self
        let roles = schema.categorical.map(\.role)
        switch kind {
        case .ncf:
            if config.userFields == nil, let u = roles.firstIndex(of: .user) { config.userFields = [u] }
            if config.itemFields == nil, let i = roles.firstIndex(of: .item) { config.itemFields = [i] }
        case .twoTower:
            if config.userFields == nil {
                let u = roles.indices.filter { roles[$0] == .user || roles[$0] == .userFeature }
                if !u.isEmpty { config.userFields = u }
            }
            if config.itemFields == nil {
                let i = roles.indices.filter { roles[$0] == .item || roles[$0] == .itemFeature }
                if !i.isEmpty { config.itemFields = i }
            }
        default:
            break
        }
        do {
            try config.validate()
        } catch {
            throw TrainingError.modelConfig("\(configuration) does not fit \(source) (fields: \(schema.categorical.map { "\($0.name) (\($0.role.rawValue))" }.joined(separator: ", "))): \(error)")
        }
        return config
    }
}
