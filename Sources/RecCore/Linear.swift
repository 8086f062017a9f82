/// A fully connected layer, `y = x · W + b`.
///
/// `W` is stored (inputSize, outputSize) row-major, Keras's kernel layout, so the forward pass is
/// one sgemm with no transpose. Weights start from the model's `Initializer` (Glorot uniform by
/// default) and biases at zero, as Keras does.
public struct Linear: Sendable {
    public let name: String
    public let inputSize: Int
    public let outputSize: Int
    /// Offset of W, shape (inputSize, outputSize), in the flat parameter buffer.
    public let weightOffset: Int
    /// Offset of b, shape (outputSize), in the flat parameter buffer.
    public let biasOffset: Int

    /// Declares the layer's tensors `name.weight` and `name.bias` in `layout`.
    public init(_ name: String, inputSize: Int, outputSize: Int, layout: inout ParameterLayout) {
        self.name = name
        self.inputSize = inputSize
        self.outputSize = outputSize
        weightOffset = layout.add("\(name).weight", shape: [inputSize, outputSize])
        biasOffset = layout.add("\(name).bias", shape: [outputSize])
    }

    public func initialize(_ parameters: UnsafeMutablePointer<Float>, with initializer: Initializer,
                           rng: inout RNG) {
        initializer.fill(parameters + weightOffset, count: inputSize * outputSize,
                         fanIn: inputSize, fanOut: outputSize, rng: &rng)
        (parameters + biasOffset).update(repeating: 0, count: outputSize)
    }

    /// x: (batch, inputSize) -> y: (batch, outputSize).
    @inline(__always)
    public func forward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, batch: Int,
                        parameters: UnsafePointer<Float>) {
        let b = parameters + biasOffset
        for row in 0..<batch { (y + row * outputSize).update(from: b, count: outputSize) }
        GEMM.sgemm(transA: false, transB: false, m: batch, n: outputSize, k: inputSize,
                   alpha: 1, a: x, lda: inputSize, b: parameters + weightOffset, ldb: outputSize,
                   beta: 1, c: y, ldc: outputSize)
    }

    /// dy: (batch, outputSize). Accumulates dW += xᵀ·dy and db += Σ dy into `gradients`;
    /// writes dx = dy·Wᵀ, (batch, inputSize), when `dx` is given.
    @inline(__always)
    public func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch: Int,
                         parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        GEMM.sgemm(transA: true, transB: false, m: inputSize, n: outputSize, k: batch,
                   alpha: 1, a: x, lda: inputSize, b: dy, ldb: outputSize,
                   beta: 1, c: gradients + weightOffset, ldc: outputSize)
        let db = gradients + biasOffset
        for row in 0..<batch {
            let d = dy + row * outputSize
            for j in 0..<outputSize { db[j] += d[j] }
        }
        if let dx {
            GEMM.sgemm(transA: false, transB: true, m: batch, n: inputSize, k: outputSize,
                       alpha: 1, a: dy, lda: outputSize, b: parameters + weightOffset, ldb: outputSize,
                       beta: 0, c: dx, ldc: inputSize)
        }
    }
}

/// Element-wise activations, applied in place on a layer's output.
public enum Activation: String, CaseIterable, Sendable, Codable {
    case relu, sigmoid, tanh, linear

    /// y = f(y), in place, `count` elements.
    @inline(__always)
    public func forward(_ y: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .relu: for i in 0..<count { y[i] = max(y[i], 0) }
        case .sigmoid: for i in 0..<count { y[i] = Loss.sigmoid(y[i]) }
        case .tanh: for i in 0..<count { y[i] = Float(_tanh(Double(y[i]))) }
        case .linear: break
        }
    }

    /// dy *= f'(x), in place, written in terms of the activation's output y = f(x).
    @inline(__always)
    public func backward(y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .relu: for i in 0..<count where y[i] <= 0 { dy[i] = 0 }
        case .sigmoid: for i in 0..<count { dy[i] *= y[i] * (1 - y[i]) }
        case .tanh: for i in 0..<count { dy[i] *= 1 - y[i] * y[i] }
        case .linear: break
        }
    }
}
