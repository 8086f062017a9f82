import Foundation
import RecData
import RecProtos
import RecTrainer
import SwiftProtobuf

/// Export as a standard ONNX model (`model.onnx`, opset 17, IR version 8) beside `model.json`.
///
/// The ONNX graph is a translation of `ModelExport.describe`'s op graph, so it computes what
/// `rec-dist predict` and `examples/score.py` compute, from the same inputs: the rows after the
/// preprocessing that `model.json`'s `input` section describes (hashing or vocabulary ids; for
/// raw Criteo TSV, the integer counts before log1p, which is in the graph).
///
/// - input `dense`: float32 [batch, dense fields], the dense values in `input.dense` order;
///   present only when the model reads dense values.
/// - input `categorical`: int64 [batch, categorical fields], the 32-bit hashes (Criteo TSV) or the
///   prepared dataset's ids, in `input.categorical` order; the graph maps them to table rows.
/// - output `probability`: float32 [batch, 1], the click probability (sigmoid applied).
///
/// `model.json` names this file as its `weights` (the initializers keep the tensor names the
/// description's ops use) and lists the inputs and output under `onnx`.
public enum ONNXExport {
    public static let opset = 17
    public static let irVersion = 8

    /// Writes `model.onnx` and `model.json` into `directory` (created if needed).
    public static func write(_ trained: Checkpoint.TrainedModel, dataset: PreparedDataset?, to directory: String) throws {
        var description = try ModelExport.describe(trained, dataset: dataset)
        let model = try self.model(description: description, tensors: trained.tensor(named:))
        description["weights"] = "model.onnx"
        description["onnx"] = self.interface(of: model)
        let path = directory + "/model.onnx"
        // Protobuf messages hold at most 2 GiB; the weights are nearly all of the file.
        let weightBytes = model.graph.initializer.reduce(0) { $0 + $1.rawData.count }
        guard weightBytes < Int(Int32.max) - (1 << 20) else {
            throw TrainingError.checkpoint(path: path, message: "the weights take \(weightBytes / (1 << 20)) MiB, over the 2 GiB an ONNX file holds; export --format safetensors, or train with fewer --hash-buckets or a smaller --embedding-dim")
        }
        let bytes: [UInt8]
        do { bytes = try model.serializedBytes() } catch {
            throw TrainingError.checkpoint(path: path, message: "cannot encode the ONNX model (\(error))")
        }
        let json = try ModelExport.json(description)
        try ModelExport.writeAll(to: directory) { files throws(DataError) in
            try files.stage(path, bytes)
            try files.stage(directory + "/model.json", json)
        }
    }

    /// The ONNX model computing `description`'s graph; `tensors` gives each weight by name.
    static func model(description: [String: Any], tensors: @escaping (String) -> ONNXGraphTranslator.Weight?) throws -> Onnx_ModelProto {
        guard let ops = description["graph"] as? [[String: Any]], let output = description["output"] as? String,
              let input = description["input"] as? [String: Any] else {
            throw ONNXGraphTranslator.Unsupported(message: "the model description has no graph, output or input section")
        }
        var translator = ONNXGraphTranslator(tensors: tensors)
        let dense = (input["dense"] as? [Any])?.count ?? 0
        let categorical = (input["categorical"] as? [Any])?.count ?? 0
        translator.define("dense", shape: [-1, dense])
        translator.define("categorical", shape: [-1, categorical])
        for op in ops { try translator.translate(op) }
        let read = Set(ops.flatMap { $0["inputs"] as? [String] ?? [] })

        var graph = Onnx_GraphProto()
        graph.name = "rec-dist " + (description["model"] as? String ?? "model")
        graph.node = translator.builder.nodes
        graph.initializer = translator.builder.initializers
        if read.contains("dense") {
            graph.input.append(ONNXGraphBuilder.valueInfo("dense", .float, batchThen: [dense],
                                                          doc: "dense values, in model.json input.dense order, before the graph's dense_transform"))
        }
        if read.contains("categorical") {
            graph.input.append(ONNXGraphBuilder.valueInfo("categorical", .int64, batchThen: [categorical],
                                                          doc: "categorical hashes or ids, in model.json input.categorical order"))
        }
        guard translator.onnxName(of: output) == output else {
            throw ONNXGraphTranslator.Unsupported(message: "the description's output '\(output)' is not computed by an op")
        }
        graph.output = [ONNXGraphBuilder.valueInfo(output, .float, batchThen: [1], doc: "click probability")]

        var model = Onnx_ModelProto()
        model.irVersion = Int64(irVersion)
        var opsetImport = Onnx_OperatorSetIdProto()
        opsetImport.domain = ""
        opsetImport.version = Int64(opset)
        model.opsetImport = [opsetImport]
        model.producerName = "rec-dist"
        model.producerVersion = String(ModelExport.version)
        model.docString = "rec-dist \(description["model"] as? String ?? "") model; preprocessing in model.json (input)"
        model.graph = graph
        return model
    }

    /// The inputs and output of `model`, for model.json's `onnx` section.
    static func interface(of model: Onnx_ModelProto) -> [String: Any] {
        func describe(_ info: Onnx_ValueInfoProto) -> [String: Any] {
            let tensor = info.type.tensorType
            let type = tensor.elemType == Int32(Onnx_TensorProto.DataType.int64.rawValue) ? "int64" : "float32"
            let shape: [Any] = tensor.shape.dim.map { d -> Any in
                if case .dimParam(let p)? = d.value { return p }
                return Int(d.dimValue)
            }
            return ["name": info.name, "type": type, "shape": shape, "description": info.docString]
        }
        return ["file": "model.onnx", "opset": opset, "ir_version": Int(model.irVersion),
                "inputs": model.graph.input.map(describe), "outputs": model.graph.output.map(describe)]
    }
}

extension Checkpoint.TrainedModel {
    /// The weight tensor `name` as the checkpoint's model.safetensors holds it: a layout entry
    /// (`mlp.0.weight`...) or an embedding table (`embedding.C1`...).
    func tensor(named name: String) -> ONNXGraphTranslator.Weight? {
        if let entry = model.layout.entry(named: name) {
            return .init(shape: entry.shape, values: UnsafeBufferPointer(start: parameters.pointer + entry.offset, count: entry.count))
        }
        guard let tables = model.embeddings, name.hasPrefix("embedding.C"),
              let field = Int(name.dropFirst("embedding.C".count)).map({ $0 - 1 }), (0..<tables.fields).contains(field) else { return nil }
        let rows = tables.rows(field: field)
        return .init(shape: [rows, tables.dim],
                     values: UnsafeBufferPointer(start: embeddingTable.pointer + tables.firstRow(field: field) * tables.dim, count: rows * tables.dim))
    }
}
