import Foundation
import RecProtos

/// Translates the ops of `ModelExport.describe`'s graph into ONNX nodes, one op at a time, with
/// the semantics `examples/score.py` gives them. Each op's last node writes a tensor named after
/// the op's `output`; ops that change nothing (identity transform, concat of one matrix) only
/// rename. Shapes are tracked with -1 for the batch dimension.
struct ONNXGraphTranslator {
    /// A weight: its shape and float32 values (borrowed from the loaded checkpoint).
    struct Weight {
        var shape: [Int]
        var values: UnsafeBufferPointer<Float>
    }

    /// The description asks for something this translator does not know.
    struct Unsupported: Error, CustomStringConvertible {
        var message: String
        var description: String { "cannot translate the model description to ONNX: \(message); see Sources/RecTrainer/ONNXGraphTranslator.swift" }
    }

    var builder = ONNXGraphBuilder()
    private let tensors: (String) -> Weight?
    private var values: [String: (name: String, shape: [Int])] = [:]
    private var weightsAdded: Set<String> = []

    init(tensors: @escaping (String) -> Weight?) {
        self.tensors = tensors
    }

    /// Declares a graph input.
    mutating func define(_ value: String, shape: [Int]) {
        values[value] = (value, shape)
    }

    /// The ONNX tensor holding the description's value `value`, if an op computed it.
    func onnxName(of value: String) -> String? { values[value]?.name }

    mutating func translate(_ op: [String: Any]) throws {
        guard let kind = op["op"] as? String, let output = op["output"] as? String, let inputNames = op["inputs"] as? [String] else {
            throw Unsupported(message: "an op without op, inputs or output: \(op)")
        }
        let inputs = try inputNames.map { name in
            guard let v = values[name] else { throw Unsupported(message: "op \(kind) reads '\(name)' before any op writes it") }
            return v
        }
        func int(_ key: String) throws -> Int {
            guard let v = op[key] as? Int else { throw Unsupported(message: "op \(kind) has no integer '\(key)'") }
            return v
        }
        func string(_ key: String) throws -> String {
            guard let v = op[key] as? String else { throw Unsupported(message: "op \(kind) has no string '\(key)'") }
            return v
        }
        let x = inputs.first
        let result: (name: String, shape: [Int])
        switch kind {
        case "dense_transform":
            let columns = try int("columns")
            var v = x!
            if columns != v.shape[1] { v = slice(v, axis: 1, start: 0, stop: columns) }
            switch try string("transform") {
            case "identity": result = v
            case "log1p":
                let clamped = builder.node("Max", [v.name, builder.float(0)], hint: output)
                let shifted = builder.node("Add", [clamped, builder.float(1)], hint: output)
                result = (builder.node("Log", [shifted], output: output), v.shape)
            case let t: throw Unsupported(message: "dense transform '\(t)'")
            }
        case "linear":
            let weight = try string("weight"), bias = try string("bias")
            let shape = try addWeight(weight), biasShape = try addWeight(bias)
            guard shape.count == 2, biasShape == [shape[1]], x!.shape == [-1, shape[0]] else {
                throw Unsupported(message: "linear \(weight) \(shape) with bias \(biasShape) on input \(x!.shape)")
            }
            let activation = try string("activation")
            let onnxActivation = ["relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "linear": ""][activation]
            guard let onnxActivation else { throw Unsupported(message: "activation '\(activation)'") }
            var y = builder.node("Gemm", [x!.name, weight, bias], output: onnxActivation.isEmpty ? output : nil, hint: output)
            if !onnxActivation.isEmpty { y = builder.node(onnxActivation, [y], output: output) }
            result = (y, [-1, shape[1]])
        case "embedding":
            result = try embedding(op, ids: x!, output: output)
        case "dot_interaction":
            result = try dotInteraction(inputs, passthrough: op["passthrough"] as? Bool ?? false, output: output)
        case "sigmoid":
            result = (builder.node("Sigmoid", [x!.name], output: output), x!.shape)
        case "concat":
            var flat: [(name: String, shape: [Int])] = []
            for v in inputs { flat.append(flatten(v)) }
            result = flat.count == 1 ? flat[0]
                : (builder.node("Concat", flat.map { $0.name }, output: output, [ONNXGraphBuilder.attribute("axis", int: 1)]),
                   [-1, flat.map { $0.shape[1] }.reduce(0, +)])
        case "reduce_sum":
            let flat = flatten(x!)
            result = (builder.node("ReduceSum", [flat.name, builder.int64([1], shape: [1])], output: output,
                                   [ONNXGraphBuilder.attribute("keepdims", int: 1)]), [-1, 1])
        case "slice":
            result = slice(x!, axis: try int("axis"), start: try int("start"), stop: try int("stop"), output: output)
        case "take":
            let axis = try int("axis")
            var shape = x!.shape
            shape.remove(at: axis)
            result = (builder.node("Gather", [x!.name, builder.int64([Int64(try int("index"))], shape: [])], output: output,
                                   [ONNXGraphBuilder.attribute("axis", int: axis)]), shape)
        case "tensor_add":
            let tensor = try string("tensor")
            _ = try addWeight(tensor)
            result = (builder.node("Add", [x!.name, tensor], output: output), x!.shape)
        case "sum":
            result = (builder.node("Sum", inputs.map(\.name), output: output), inputs.map(\.shape).max { $0.count < $1.count }!)
        case "multiply":
            var product = x!.name
            for (i, v) in inputs.enumerated().dropFirst() {
                product = builder.node("Mul", [product, v.name], output: i == inputs.count - 1 ? output : nil, hint: output)
            }
            result = (product, x!.shape)
        case "dot":
            guard inputs.count == 2 else { throw Unsupported(message: "dot of \(inputs.count) inputs") }
            let product = builder.node("Mul", [inputs[0].name, inputs[1].name], hint: output)
            result = (builder.node("ReduceSum", [product, builder.int64([-1], shape: [1])], output: output,
                                   [ONNXGraphBuilder.attribute("keepdims", int: 1)]), Array(x!.shape.dropLast()) + [1])
        default:
            throw Unsupported(message: "op '\(kind)'")
        }
        values[output] = result
    }

    /// Adds the weight `name` as an initializer (once) and returns its shape.
    private mutating func addWeight(_ name: String) throws -> [Int] {
        guard let weight = tensors(name) else { throw Unsupported(message: "no weight tensor named '\(name)' in the checkpoint") }
        if weightsAdded.insert(name).inserted { builder.weight(name, shape: weight.shape, values: weight.values) }
        return weight.shape
    }

    private mutating func slice(_ v: (name: String, shape: [Int]), axis: Int, start: Int, stop: Int,
                                output: String? = nil) -> (name: String, shape: [Int]) {
        var shape = v.shape
        shape[axis] = stop - start
        let name = builder.node("Slice", [v.name, builder.int64([Int64(start)], shape: [1]), builder.int64([Int64(stop)], shape: [1]),
                                          builder.int64([Int64(axis)], shape: [1])], output: output, hint: "slice")
        return (name, shape)
    }

    /// (n, ...) to (n, product of the rest); a matrix as it is.
    private mutating func flatten(_ v: (name: String, shape: [Int])) -> (name: String, shape: [Int]) {
        if v.shape.count == 2 { return v }
        let width = v.shape.dropFirst().reduce(1, *)
        return (builder.node("Flatten", [v.name], hint: "flat", [ONNXGraphBuilder.attribute("axis", int: 1)]), [-1, width])
    }

    /// Table t reads categorical column `columns[t]`: hashed ids become row 0 for 0, else
    /// 1 + id mod (rows - 1); direct ids are the row. Output (n, tables, dim).
    private mutating func embedding(_ op: [String: Any], ids: (name: String, shape: [Int]), output: String) throws -> (name: String, shape: [Int]) {
        guard let tables = op["tables"] as? [String], let columns = op["columns"] as? [Int], let rows = op["rows"] as? [Int],
              let dim = op["dim"] as? Int, let indexing = op["indexing"] as? String,
              tables.count == columns.count, tables.count == rows.count, !tables.isEmpty else {
            throw Unsupported(message: "an embedding op without matching tables, columns and rows: \(op)")
        }
        var selected = builder.node("Gather", [ids.name, builder.int64(columns.map(Int64.init), shape: [columns.count])],
                                    hint: output + "_ids", [ONNXGraphBuilder.attribute("axis", int: 1)])
        switch indexing {
        case "direct": break
        case "hashed":
            let isEmpty = builder.node("Equal", [selected, builder.int64([0], shape: [])], hint: output + "_empty")
            let bucket = builder.node("Mod", [selected, builder.int64(rows.map { Int64($0 - 1) }, shape: [rows.count])], hint: output + "_bucket")
            let row = builder.node("Add", [bucket, builder.int64([1], shape: [])], hint: output + "_row")
            selected = builder.node("Where", [isEmpty, builder.int64([0], shape: []), row], hint: output + "_rows")
        default:
            throw Unsupported(message: "embedding indexing '\(indexing)'")
        }
        var vectors: [String] = []
        for (t, table) in tables.enumerated() {
            guard try addWeight(table) == [rows[t], dim] else { throw Unsupported(message: "table \(table) is not (\(rows[t]), \(dim))") }
            let row = builder.node("Gather", [selected, builder.int64([Int64(t)], shape: [1])], hint: table + "_row",
                                   [ONNXGraphBuilder.attribute("axis", int: 1)])
            vectors.append(builder.node("Gather", [table, row], hint: table + "_vector", [ONNXGraphBuilder.attribute("axis", int: 0)]))
        }
        let name = vectors.count == 1 ? builder.node("Identity", vectors, output: output)
            : builder.node("Concat", vectors, output: output, [ONNXGraphBuilder.attribute("axis", int: 1)])
        return (name, [-1, tables.count, dim])
    }

    /// DLRM's interaction: the inputs stacked into (n, slots, dim), the dot products of every pair
    /// (i, j), i > j, in the order i = 1.., j = 0..<i; with `passthrough`, slot 0 first.
    private mutating func dotInteraction(_ inputs: [(name: String, shape: [Int])], passthrough: Bool,
                                         output: String) throws -> (name: String, shape: [Int]) {
        guard let dim = inputs.first?.shape.last, inputs.allSatisfy({ $0.shape.last == dim && (2...3).contains($0.shape.count) }) else {
            throw Unsupported(message: "dot_interaction of \(inputs.map(\.shape))")
        }
        let stacked = inputs.map { v -> String in
            v.shape.count == 3 ? v.name : builder.node("Unsqueeze", [v.name, builder.int64([1], shape: [1])], hint: "slot")
        }
        let slots = inputs.map { $0.shape.count == 3 ? $0.shape[1] : 1 }.reduce(0, +)
        let t = stacked.count == 1 ? stacked[0]
            : builder.node("Concat", stacked, hint: output + "_stack", [ONNXGraphBuilder.attribute("axis", int: 1)])
        let transposed = builder.node("Transpose", [t], hint: output + "_t", [ONNXGraphBuilder.attribute("perm", ints: [0, 2, 1])])
        let products = builder.node("MatMul", [t, transposed], hint: output + "_z")
        let flat = builder.node("Flatten", [products], hint: output + "_flat", [ONNXGraphBuilder.attribute("axis", int: 1)])
        let pairs = (1..<slots).flatMap { i in (0..<i).map { j in Int64(i * slots + j) } }
        let lower = builder.node("Gather", [flat, builder.int64(pairs, shape: [pairs.count])], output: passthrough ? nil : output,
                                 hint: output + "_pairs", [ONNXGraphBuilder.attribute("axis", int: 1)])
        guard passthrough else { return (lower, [-1, pairs.count]) }
        let first = inputs[0].shape.count == 2 ? inputs[0].name
            : builder.node("Gather", [t, builder.int64([0], shape: [])], hint: output + "_first", [ONNXGraphBuilder.attribute("axis", int: 1)])
        return (builder.node("Concat", [first, lower], output: output, [ONNXGraphBuilder.attribute("axis", int: 1)]), [-1, dim + pairs.count])
    }
}
