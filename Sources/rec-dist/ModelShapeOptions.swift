import ArgumentParser
import Foundation
import RecCore
import RecData
import RecTrainer

/// A comma-separated list of layer widths, e.g. `512,256`.
struct LayerWidths: ExpressibleByArgument {
    var widths: [Int]
    init?(argument: String) {
        let parts = argument.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        widths = parts.map { $0! }
    }
    var defaultValueDescription: String { widths.map(String.init).joined(separator: ",") }
}

/// `train`'s model: a preset, a configuration file, and the shape flags that override both.
struct ModelShapeOptions: ParsableArguments {
    @Option(help: "Model: \(ModelKind.allCases.map(\.rawValue).joined(separator: ", ")) (default mlp); each name is a preset of the shape flags below, which override it.")
    var model: ModelKind?
    @Option(help: "A model configuration file (JSON, see the README); flags given explicitly override its values.")
    var modelConfig: String?
    @Option(parsing: .unconditional, help: "mlp: hidden widths (128); wide-deep: the deep MLP's (256,128); ncf: the MLP branch's (32,16,8); two-tower: each tower's (64).")
    var hidden: LayerWidths?
    @Option(parsing: .unconditional, help: "mlp: how many leading dense features to use (1-13; default 10).")
    var denseFeatures: Int?
    @Option(parsing: .unconditional, help: "Embedding dimension: dlrm (also the bottom MLP's output; 16), wide-deep (16), ncf's MLP branch (32), two-tower (32).")
    var embeddingDim: Int?
    @Option(parsing: .unconditional, help: "dlrm: bottom MLP hidden widths (512,256,64).")
    var bottom: LayerWidths?
    @Option(parsing: .unconditional, help: "dlrm: top MLP hidden widths (512,256).")
    var top: LayerWidths?
    @Option(parsing: .unconditional, help: "ncf: GMF predictive factors (8); two-tower: the towers' output width (32).")
    var factors: Int?
    @Option(help: "Hidden activation of every MLP: relu (default), sigmoid or tanh.")
    var activation: Activation?
    @Option(parsing: .unconditional, help: "Dropout rate after every hidden layer of every MLP, in [0, 1) (default 0); seeded, off in evaluation.")
    var dropout: Float?
    @Option(help: "Weight initializer: \(Initializer.allCases.map(\.rawValue).joined(separator: ", ")) (default glorot-uniform).")
    var initializer: Initializer?

    func validate() throws {
        for (flag, layers) in [("--hidden", hidden), ("--bottom", bottom), ("--top", top)] {
            if let bad = layers?.widths.first(where: { $0 > ModelConfig.maxLayerWidth }) {
                throw outOfRange(flag, bad, "use layer widths 1 to \(ModelConfig.maxLayerWidth)")
            }
        }
        if let denseFeatures, !(1...13).contains(denseFeatures) { throw outOfRange("--dense-features", denseFeatures, "use 1 to 13") }
        if let embeddingDim, embeddingDim < 1 || embeddingDim > 1024 { throw outOfRange("--embedding-dim", embeddingDim, "use 1 to 1024") }
        if let factors, factors < 1 || factors > 1024 { throw outOfRange("--factors", factors, "use 1 to 1024") }
        if let dropout, !(dropout >= 0 && dropout < 1) { throw outOfRange("--dropout", dropout, "use a rate in [0, 1)") }
        if activation == .linear { throw outOfRange("--activation", "linear", "use relu, sigmoid or tanh") }
    }

    /// The model: the preset of --model (or of the config file's `model`), then the config
    /// file's values, then the shape flags given explicitly (and `hashBuckets`, from the step
    /// flags). `data` names the categorical fields a config file may refer to.
    func makeModelConfig(data: String, hashBuckets: Int?) throws -> ModelConfig {
        let file = try modelConfig.map { try ModelConfigFile(path: $0) }
        if let model, let fileModel = file?.model, model != fileModel {
            throw ValidationError("--model \(model.rawValue) conflicts with \"model\": \"\(fileModel.rawValue)\" in --model-config \(modelConfig!); drop one of them.")
        }
        var config = ModelConfig.preset(model ?? file?.model ?? .mlp)
        let dataset = PreparedDataset.isDirectory(data) ? try PreparedDataset(directory: data) : nil
        if let file {
            try file.apply(to: &config, fieldNames: dataset?.manifest.schema.categorical.map(\.name) ?? (1...26).map { "C\($0)" },
                           data: data)
        }
        if let dataset { try requireFits(dataset, kind: config.kind, file: file, hashBuckets: hashBuckets) }
        if let hidden { config.hidden = hidden.widths }
        if let denseFeatures { config.mlpDenseFeatures = denseFeatures }
        if let hashBuckets { config.hashBuckets = hashBuckets }
        if let embeddingDim { config.embeddingDim = embeddingDim }
        if let bottom { config.bottom = bottom.widths }
        if let top { config.top = top.widths }
        if let factors { config.factors = factors }
        if let initializer { config.initializer = initializer }
        for stack in ModelConfig.stackNames(config.kind) {
            if let activation { config.activations[stack] = activation }
            if let dropout { config.dropout[stack] = dropout }
        }
        return config
    }

    /// Refuses sizes given explicitly (by a flag or the config file) that a prepared dataset
    /// decides itself: tables other than its vocabularies (`hash_buckets`, `--hash-buckets`), and
    /// an mlp reading more dense fields than it has. Left unsaid, they would be overridden silently.
    private func requireFits(_ dataset: PreparedDataset, kind: ModelKind, file: ModelConfigFile?, hashBuckets: Int?) throws {
        let sizes = dataset.manifest.vocabularySizes, named = "the prepared dataset '\(dataset.directory)'"
        let shown = sizes.count > 8 ? sizes.prefix(8).map(String.init).joined(separator: ", ") + ", ..." : sizes.map(String.init).joined(separator: ", ")
        if kind != .mlp, let h = hashBuckets ?? file?.hashBuckets, !sizes.allSatisfy({ $0 == h }) {
            let why = "\(h) does not fit \(named): its manifest.json sizes each table by its vocabulary (ids per field: \(shown))"
            if hashBuckets != nil {
                throw ValidationError("--hash-buckets \(why); drop --hash-buckets (it applies to raw TSV), or prepare the data again with --hash-buckets \(h).")
            }
            throw TrainingError.modelConfig("model config \(file!.path): hash_buckets: \(why); remove hash_buckets from \(file!.path), or prepare the data again with --hash-buckets \(h)")
        }
        let dense = dataset.denseCount
        // (A dataset without dense fields refuses the mlp itself.)
        if kind == .mlp, dense > 0, let k = denseFeatures ?? file?.denseFeatures, k > dense {
            if denseFeatures != nil { throw outOfRange("--dense-features", k, "\(named) has \(dense) dense field(s) (manifest.json); use 1 to \(dense)") }
            throw TrainingError.modelConfig("model config \(file!.path): dense_features: \(k) is more than the \(dense) dense field(s) of \(named) (manifest.json); use 1 to \(dense) in \(file!.path)")
        }
    }
}
