import Foundation
import RecCheckpoint
import RecCore
import RecData
import RecTrainer

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
///   them), `sigmoid`, and for logreg, wide-deep, ncf and two-tower: `concat` (each input
///   flattened to (n, -1), joined along the last axis), `sum` and `multiply` (elementwise),
///   `dot` (row-wise dot product, (n, 1)), `reduce_sum` (over all but the first axis, (n, 1)),
///   `slice` (`axis`, `start`, `stop`), `take` (`axis`, `index`) and `tensor_add` (adds the
///   weight tensor `tensor`). An embedding op's `columns` are the categorical columns its tables
///   read, in table order. A new model is described by composing these, or by adding an op here
///   and in `examples/score.py`.
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
        func op(_ name: String, _ inputs: [String], _ output: String, _ extra: [String: Any] = [:]) {
            var o: [String: Any] = ["op": name, "inputs": inputs, "output": output]
            for (k, v) in extra { o[k] = v }
            graph.append(o)
        }
        /// The model's tables (table t reads categorical column columns[t]) as one embedding op.
        func embedding(_ output: String, columns: [Int]) {
            guard let tables = config.modelTables else { return }
            op("embedding", ["categorical"], output, [
                "tables": (0..<tables.fields).map { "embedding.C\($0 + 1)" }, "columns": columns,
                "rows": (0..<tables.fields).map { tables.rows(field: $0) }, "dim": tables.dim,
                "indexing": tables.indexing == .direct ? "direct" : "hashed"])
        }
        func denseInput() -> String? {
            guard config.denseInputs > 0 else { return nil }
            op("dense_transform", ["dense"], "x", ["transform": config.denseTransform == .log1p ? "log1p" : "identity",
                                                    "columns": config.denseInputs])
            return "x"
        }

        let transform = config.denseTransform == .log1p ? "log1p" : "identity"
        let allColumns = Array(0..<config.categoricalFields)
        let logit: String
        switch config.kind {
        case .mlp:
            op("dense_transform", ["dense"], "x", ["transform": transform, "columns": config.mlpDenseFeatures])
            logit = stack("mlp", input: "x", lastActivation: "linear")
        case .dlrm:
            var vectors: [String] = []
            if let x = denseInput() { vectors.append(stack("bottom", input: x, lastActivation: "relu")) }
            embedding("embedded", columns: allColumns)
            vectors.append("embedded")
            op("dot_interaction", vectors, "interaction", ["passthrough": config.denseInputs > 0])
            logit = stack("top", input: "interaction", lastActivation: "linear")
        case .logreg:
            // logit = transform(dense) @ W + b + sum of the fields' id weights.
            embedding("weights", columns: allColumns)
            op("reduce_sum", ["weights"], "wide")
            if let x = denseInput() {
                let linear = stack("linear", input: x, lastActivation: "linear")
                op("sum", [linear, "wide"], "logit")
            } else {
                op("tensor_add", ["wide"], "logit", ["tensor": "bias"])
            }
            logit = "logit"
        case .wideDeep:
            // Each table row is [wide weight | embedding].
            embedding("rows", columns: allColumns)
            op("slice", ["rows"], "wide_weights", ["axis": 2, "start": 0, "stop": 1])
            op("reduce_sum", ["wide_weights"], "wide")
            op("slice", ["rows"], "embedded", ["axis": 2, "start": 1, "stop": 1 + config.embeddingDim])
            op("concat", (denseInput().map { [$0] } ?? []) + ["embedded"], "deep_input")
            let deep = stack("deep", input: "deep_input", lastActivation: "linear")
            op("sum", ["wide", deep], "logit")
            logit = "logit"
        case .ncf:
            // Tables: the user's, then the item's; each row is [GMF factors | MLP embedding].
            let f = config.factors
            embedding("rows", columns: [config.userFields?.first ?? 0, config.itemFields?.first ?? 0])
            op("slice", ["rows"], "gmf_vectors", ["axis": 2, "start": 0, "stop": f])
            op("take", ["gmf_vectors"], "p_user", ["axis": 1, "index": 0])
            op("take", ["gmf_vectors"], "q_item", ["axis": 1, "index": 1])
            op("multiply", ["p_user", "q_item"], "gmf")
            op("slice", ["rows"], "mlp_vectors", ["axis": 2, "start": f, "stop": f + config.embeddingDim])
            op("concat", ["mlp_vectors"], "mlp_input")
            let h = stack("mlp", input: "mlp_input", lastActivation: config.activation("mlp").rawValue)
            op("concat", ["gmf", h], "z")
            logit = stack("predict", input: "z", lastActivation: "linear")
        case .twoTower:
            // Tables: the user-side fields', then the item-side fields'; logit = u . v.
            let user = config.userFields ?? [], item = config.itemFields ?? []
            embedding("rows", columns: user + item)
            op("slice", ["rows"], "user_rows", ["axis": 1, "start": 0, "stop": user.count])
            op("slice", ["rows"], "item_rows", ["axis": 1, "start": user.count, "stop": user.count + item.count])
            op("concat", ["user_rows"], "user_input")
            op("concat", ["item_rows"], "item_input")
            let u = stack("user", input: "user_input", lastActivation: "linear")
            let v = stack("item", input: "item_input", lastActivation: "linear")
            op("dot", [u, v], "logit")
            logit = "logit"
        }
        op("sigmoid", [logit], "probability")

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

    /// Writes `model.safetensors` and `model.json` into `directory` (created if needed). The
    /// weights are the checkpoint's model.safetensors, or, when its sharded tables are in per-rank
    /// shard files, the same file written from the assembled tables.
    public static func write(_ trained: Checkpoint.TrainedModel, dataset: PreparedDataset?, to directory: String) throws {
        let description = try describe(trained, dataset: dataset)
        let weights = try MappedFile(path: trained.directory + "/model.safetensors")
        let whole = try CheckpointDirectory.shardFiles(trained.directory).isEmpty
        var metadata = try SafeTensors.parseHeader(weights.bytes, path: trained.directory + "/model.safetensors").metadata
        metadata["rows"] = nil
        metadata[CheckpointTables.shardSetKey] = nil
        // The layout of a replicated run's model.safetensors: the dense tensors, each table whole.
        let tensors = whole ? [] : Checkpoint.denseSources(trained.model.layout, in: trained.parameters.pointer)
            + Checkpoint.wholeTableSources(trained.model.embeddings, in: trained.embeddingTable.pointer)
        let header = whole ? Data() : try SafeTensors.header(for: tensors, metadata: metadata)
        try writeAll(to: directory) { files throws(DataError) in
            if whole {
                try withExtendedLifetime(weights) { () throws(DataError) in try files.stage(directory + "/model.safetensors", weights.bytes) }
            } else {
                try files.stage(directory + "/model.safetensors") { (file) throws(DataError) in
                    try file.write([UInt8](header))
                    for tensor in tensors { try file.write(UnsafeRawBufferPointer(tensor.values!)) }
                }
            }
            try files.stage(directory + "/model.json", try json(description))
        }
    }

    /// Creates `directory` if needed and writes the files `body` stages into it, all or none: on
    /// a failure (a full disk) nothing new is left, and a directory this call created is removed.
    static func writeAll(to directory: String, _ body: (StagedFiles) throws(DataError) -> Void) throws {
        let created = !FileManager.default.fileExists(atPath: directory)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw TrainingError.checkpoint(path: directory, message: "cannot create the export directory (\(error.localizedDescription)); choose a writable --out")
        }
        let files = StagedFiles()
        do {
            try body(files)
            try files.commit()
        } catch {
            files.abandon()
            if created { try? FileManager.default.removeItem(atPath: directory) }
            throw error
        }
    }

    /// `description` as pretty-printed JSON with sorted keys.
    static func json(_ description: [String: Any]) throws(DataError) -> [UInt8] {
        do {
            return Array(try JSONSerialization.data(withJSONObject: description, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) + [0x0A]
        } catch {
            throw DataError(file: "model.json", message: "cannot encode the description: \(error.localizedDescription)")
        }
    }
}
