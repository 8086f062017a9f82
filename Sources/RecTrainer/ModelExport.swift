import Foundation
import RecCore
import RecData

/// Export for serving: the weights (`model.safetensors`, as in the checkpoint) and `model.json`,
/// a description from which a small program reproduces `rec-dist predict` exactly
/// (`examples/score.py` does, with NumPy).
///
/// `model.json` has three parts:
/// - `input`: how a row becomes the model's inputs. `dense` and `categorical` list the fields in
///   column order. For raw Criteo TSV, the label, then 13 integer columns (empty is 0), then 26
///   categorical strings, each hashed to 32 bits (`hash`: FNV-1a of the bytes, then murmur3's
///   finalizer; 0 for an empty field, 1 when the hash is 0). For a prepared dataset, rows are read
///   from its split files (already encoded: ids and transformed values; `prepared_split_format`
///   describes the binary layout) and each field lists its encoding, table size and transform
///   (mean/std for `standardize`), as `prepare` recorded them.
/// - `graph`: the forward pass as a list of ops over named values. The inputs are `dense`
///   (n, dense fields) float32 and `categorical` (n, categorical fields) uint32; each op reads
///   `inputs` and writes `output`. Ops: `dense_transform` (`transform`: log1p = log(1 + max(x, 0)),
///   or identity; `columns`: how many leading columns it keeps), `linear` (y = x @ weight + bias,
///   weight (in, out), then `activation`: relu, linear or sigmoid), `embedding` (`tables`: one
///   tensor per field; `indexing`: `direct` (the id is the row) or `hashed` (row 0 for hash 0,
///   else 1 + hash mod (rows - 1)); output (n, fields, dim)), `dot_interaction` (DLRM: the vectors
///   of `inputs` stacked into (n, slots, dim) in order; the dot products of every pair (i, j) with
///   i > j, in the order i = 1.., j = 0..<i; with `passthrough`, the first input is prepended to
///   them), and `sigmoid`. New models add op types: `concat` (along the last axis), `sum`,
///   `multiply` (elementwise) and `dot` (row-wise dot product) are reserved for wide-deep, ncf
///   and two-tower, and `examples/score.py` already implements them.
/// - `output`: the value holding the click probability, (n, 1).
public enum ModelExport {
    public static let formatName = "rec-dist model"
    public static let version = 1

    /// The description of `trained` as a JSON object (for `JSONSerialization`). `dataset` is the
    /// prepared dataset it was trained on, when there is one and it can be read.
    public static func describe(_ trained: Checkpoint.TrainedModel, dataset: PreparedDataset?) throws -> [String: Any] {
        let config = trained.config
        let layout = trained.model.layout
        var graph: [[String: Any]] = []

        func stack(_ prefix: String, input: String, lastActivation: String) -> String {
            let layers = layout.entries.filter { $0.name.hasPrefix(prefix + ".") && $0.name.hasSuffix(".weight") }
            var value = input
            for (l, entry) in layers.enumerated() {
                let name = String(entry.name.dropLast(".weight".count))
                let output = "\(prefix).\(l)"
                graph.append(["op": "linear", "inputs": [value], "output": output, "weight": entry.name, "bias": name + ".bias",
                              "shape": entry.shape, "activation": l == layers.count - 1 ? lastActivation : config.activation(prefix).rawValue])
                value = output
            }
            return value
        }

        let transform = config.denseTransform == .log1p ? "log1p" : "identity"
        switch config.kind {
        case .mlp:
            graph.append(["op": "dense_transform", "inputs": ["dense"], "output": "x", "transform": transform,
                          "columns": config.mlpDenseFeatures])
            let logit = stack("mlp", input: "x", lastActivation: "linear")
            graph.append(["op": "sigmoid", "inputs": [logit], "output": "probability"])
        case .dlrm:
            let tables = config.embeddingTables
            var vectors: [String] = []
            if config.denseInputs > 0 {
                graph.append(["op": "dense_transform", "inputs": ["dense"], "output": "x", "transform": transform,
                              "columns": config.denseInputs])
                vectors.append(stack("bottom", input: "x", lastActivation: "relu"))
            }
            graph.append(["op": "embedding", "inputs": ["categorical"], "output": "embedded",
                          "tables": (0..<config.categoricalFields).map { "embedding.C\($0 + 1)" },
                          "rows": (0..<config.categoricalFields).map { tables.rows(field: $0) }, "dim": config.embeddingDim,
                          "indexing": tables.indexing == .direct ? "direct" : "hashed"])
            vectors.append("embedded")
            graph.append(["op": "dot_interaction", "inputs": vectors, "output": "interaction", "passthrough": config.denseInputs > 0])
            let logit = stack("top", input: "interaction", lastActivation: "linear")
            graph.append(["op": "sigmoid", "inputs": [logit], "output": "probability"])
        case .logreg, .wideDeep, .ncf, .twoTower:
            throw TrainingError.checkpoint(path: trained.directory, message: "export does not describe \(config.kind.rawValue) models yet (mlp and dlrm only); its weights are in \(trained.directory)/model.safetensors")
        }

        var input: [String: Any]
        if let manifest = dataset?.manifest, config.vocabularySizes != nil || config.denseTransform == .identity {
            input = [
                "kind": "prepared",
                "dataset": dataset!.directory,
                "schema_hash": manifest.schemaHash,
                "label": manifest.schema.label,
                "dense": manifest.schema.dense.map { f -> [String: Any] in
                    ["name": f.name, "role": f.role.rawValue, "transform": f.transform, "mean": f.mean, "std": f.std,
                     "note": "applied by prepare; the split files hold transformed values"]
                },
                "categorical": manifest.schema.categorical.map { f -> [String: Any] in
                    ["name": f.name, "role": f.role.rawValue, "encoding": f.encoding, "size": f.size,
                     "missing_id": 0, "out_of_vocabulary_id": f.encoding == "vocabulary" ? 1 : NSNull()]
                },
                "user_field": manifest.schema.userField ?? NSNull(),
                "item_field": manifest.schema.itemField ?? NSNull(),
                "prepared_split_format": [
                    "header_bytes": PreparedSplitFormat.headerSize, "magic": "RECDPREP",
                    "header_fields": "rows u64 @16, dense count u32 @24, categorical count u32 @28, rows per group u32 @32 (little-endian)",
                    "groups": "group g at header_bytes + g * rows_per_group * 4 * (1 + dense + categorical); inside, r rows: labels float32 (r), dense float32 (r, dense), categorical uint32 (r, categorical)",
                ] as [String: Any],
            ]
        } else if config.vocabularySizes == nil && config.denseTransform == .log1p {
            input = [
                "kind": "criteo-tsv",
                "separator": "\t",
                "columns": "label, I1..I13, C1..C26",
                "label": "click",
                "dense": (1...CriteoFormat.denseCount).map { ["name": "I\($0)", "parse": "integer, empty = 0"] },
                "categorical": (1...CriteoFormat.categoricalCount).map { ["name": "C\($0)", "encoding": "hash", "hash": "fnv1a32+fmix32", "empty": 0] },
            ]
        } else {
            throw TrainingError.checkpoint(path: trained.directory, message: "it was trained on the prepared dataset '\(trained.training.dataPath)', which cannot be read; pass it with --data so its schema goes into the description")
        }
        return [
            "format": formatName,
            "version": version,
            "model": config.kind.rawValue,
            "weights": "model.safetensors",
            "checkpoint": trained.directory,
            "config": try JSONSerialization.jsonObject(with: JSONEncoder().encode(config)),
            "input": input,
            "graph": graph,
            "output": "probability",
        ]
    }

    /// Writes `model.safetensors` and `model.json` into `directory` (created if needed).
    public static func write(_ trained: Checkpoint.TrainedModel, dataset: PreparedDataset?, to directory: String) throws {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw TrainingError.checkpoint(path: directory, message: "cannot create the export directory (\(error.localizedDescription)); choose a writable --out")
        }
        let description = try describe(trained, dataset: dataset)
        let json = try JSONSerialization.data(withJSONObject: description, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        let weights = directory + "/model.safetensors"
        try? fm.removeItem(atPath: weights)
        try fm.copyItem(atPath: trained.directory + "/model.safetensors", toPath: weights)
        try (json + Data("\n".utf8)).write(to: URL(fileURLWithPath: directory + "/model.json"), options: .atomic)
    }
}
