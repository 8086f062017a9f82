import Foundation
import RecProtos

/// Accumulates the nodes and initializers of an ONNX graph: one call per node, constants named
/// and shared by value, weights stored little-endian as raw float32 data.
struct ONNXGraphBuilder {
    private(set) var nodes: [Onnx_NodeProto] = []
    private(set) var initializers: [Onnx_TensorProto] = []
    private var constants: [String: String] = [:]
    private var names: Set<String> = []

    /// Adds an `op` node reading `inputs`; its output is `output`, or a fresh name from `hint`.
    @discardableResult
    mutating func node(_ op: String, _ inputs: [String], output: String? = nil, hint: String = "v",
                       _ attributes: [Onnx_AttributeProto] = []) -> String {
        let name = output ?? fresh(hint)
        names.insert(name)
        var node = Onnx_NodeProto()
        node.opType = op
        node.name = "\(op)_\(nodes.count)"
        node.input = inputs
        node.output = [name]
        node.attribute = attributes
        nodes.append(node)
        return name
    }

    /// A float32 initializer named `name` (the weights keep their checkpoint names).
    mutating func weight(_ name: String, shape: [Int], values: UnsafeBufferPointer<Float>) {
        precondition(shape.reduce(1, *) == values.count, "\(name): \(values.count) values for shape \(shape)")
        names.insert(name)
        var tensor = Onnx_TensorProto()
        tensor.name = name
        tensor.dims = shape.map(Int64.init)
        tensor.dataType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        tensor.rawData = Data(buffer: values)
        initializers.append(tensor)
    }

    /// An int64 constant tensor (`shape` [] for a scalar), shared by every node that uses it.
    mutating func int64(_ values: [Int64], shape: [Int]) -> String {
        let key = "i64 \(shape) \(values)"
        if let name = constants[key] { return name }
        let name = fresh("const_i64")
        var tensor = Onnx_TensorProto()
        tensor.name = name
        tensor.dims = shape.map(Int64.init)
        tensor.dataType = Int32(Onnx_TensorProto.DataType.int64.rawValue)
        tensor.int64Data = values
        initializers.append(tensor)
        constants[key] = name
        names.insert(name)
        return name
    }

    /// A float32 scalar constant, shared.
    mutating func float(_ value: Float) -> String {
        let key = "f32 \(value.bitPattern)"
        if let name = constants[key] { return name }
        let name = fresh("const_f32")
        var tensor = Onnx_TensorProto()
        tensor.name = name
        tensor.dataType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        tensor.floatData = [value]
        initializers.append(tensor)
        constants[key] = name
        names.insert(name)
        return name
    }

    private func fresh(_ hint: String) -> String {
        var n = nodes.count + initializers.count
        while names.contains("\(hint)_\(n)") { n += 1 }
        return "\(hint)_\(n)"
    }

    static func attribute(_ name: String, int value: Int) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name
        a.type = .int
        a.i = Int64(value)
        return a
    }

    static func attribute(_ name: String, ints values: [Int]) -> Onnx_AttributeProto {
        var a = Onnx_AttributeProto()
        a.name = name
        a.type = .ints
        a.ints = values.map(Int64.init)
        return a
    }

    /// A graph input or output: a tensor of `elementType` whose first dimension is the symbolic
    /// batch size and whose others are `dims`.
    static func valueInfo(_ name: String, _ elementType: Onnx_TensorProto.DataType, batchThen dims: [Int],
                          doc: String) -> Onnx_ValueInfoProto {
        var shape = Onnx_TensorShapeProto()
        var batch = Onnx_TensorShapeProto.Dimension()
        batch.dimParam = "batch"
        shape.dim = [batch] + dims.map { d in
            var dim = Onnx_TensorShapeProto.Dimension()
            dim.dimValue = Int64(d)
            return dim
        }
        var tensor = Onnx_TypeProto.Tensor()
        tensor.elemType = Int32(elementType.rawValue)
        tensor.shape = shape
        var info = Onnx_ValueInfoProto()
        info.name = name
        info.type.tensorType = tensor
        info.docString = doc
        return info
    }
}
