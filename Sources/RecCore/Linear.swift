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

    /// x: (batch, inputSize) -> y = activation(x·W + b): (batch, outputSize).
    ///
    /// The bias is fused into the sgemm: y starts as the bias rows and the sgemm accumulates onto
    /// them (beta = 1, so OpenBLAS skips its zeroing pass; the rounding is that of b + x·W summed
    /// in OpenBLAS's order, as before). Then one SIMD pass applies the activation.
    @inline(__always)
    public func forward(x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, batch: Int,
                        parameters: UnsafePointer<Float>, activation: Activation = .linear) {
        let b = parameters + biasOffset
        for row in 0..<batch { Self.copyRow(b, to: y + row * outputSize, outputSize) }
        GEMM.sgemm(transA: false, transB: false, m: batch, n: outputSize, k: inputSize,
                   alpha: 1, a: x, lda: inputSize, b: parameters + weightOffset, ldb: outputSize,
                   beta: 1, c: y, ldc: outputSize)
        activation.forward(y, count: batch * outputSize)
    }

    @inline(__always)
    static func copyRow(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, _ n: Int) {
        var j = 0
        while j + 8 <= n {
            SIMDAccess.store(SIMDAccess.load(src + j, as: SIMD8<Float>.self), dst + j)
            j += 8
        }
        while j < n { dst[j] = src[j]; j += 1 }
    }

    /// dy: (batch, outputSize), the gradient of this layer's output y = activation(x·W + b).
    /// Turns dy into the gradient before the activation (in place, using y), accumulates
    /// dW += xᵀ·dy and db += Σ dy into `gradients` (activation and bias in one pass), and writes
    /// dx = dy·Wᵀ, (batch, inputSize), when `dx` is given. `y` may be nil for `.linear`.
    @inline(__always)
    public func backward(x: UnsafePointer<Float>, y: UnsafePointer<Float>?, dy: UnsafeMutablePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch: Int, activation: Activation,
                         parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        activation.backwardSummingBias(y: y, dy: dy, biasGradient: gradients + biasOffset,
                                       rows: batch, columns: outputSize)
        GEMM.sgemm(transA: true, transB: false, m: inputSize, n: outputSize, k: batch,
                   alpha: 1, a: x, lda: inputSize, b: dy, ldb: outputSize,
                   beta: 1, c: gradients + weightOffset, ldc: outputSize)
        if let dx {
            GEMM.sgemm(transA: false, transB: true, m: batch, n: inputSize, k: outputSize,
                       alpha: 1, a: dy, lda: outputSize, b: parameters + weightOffset, ldb: outputSize,
                       beta: 0, c: dx, ldc: inputSize)
        }
    }

    /// dy: (batch, outputSize), the gradient of y = x·W + b (no activation). Accumulates
    /// dW += xᵀ·dy and db += Σ dy into `gradients`; writes dx = dy·Wᵀ, (batch, inputSize), when
    /// `dx` is given.
    @inline(__always)
    public func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                         dx: UnsafeMutablePointer<Float>?, batch: Int,
                         parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        backward(x: x, y: nil, dy: UnsafeMutablePointer(mutating: dy), dx: dx, batch: batch, activation: .linear,
                 parameters: parameters, gradients: gradients)
    }
}

/// Element-wise activations, applied in place on a layer's output.
public enum Activation: String, CaseIterable, Sendable, Codable {
    case relu, sigmoid, tanh, linear

    /// y = f(y), in place, `count` elements.
    @inline(__always)
    public func forward(_ y: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .relu:
            // v < 0 ? 0 : v keeps a NaN visible, as max(v, 0) does.
            var i = 0
            while i + 8 <= count {
                var v = SIMDAccess.load(y + i, as: SIMD8<Float>.self)
                v.replace(with: 0, where: v .< 0)
                SIMDAccess.store(v, y + i)
                i += 8
            }
            while i < count { y[i] = y[i] < 0 ? 0 : y[i]; i += 1 }
        case .sigmoid: for i in 0..<count { y[i] = Loss.sigmoid(y[i]) }
        case .tanh: for i in 0..<count { y[i] = Float(_tanh(Double(y[i]))) }
        case .linear: break
        }
    }

    /// dy *= f'(x), in place, written in terms of the activation's output y = f(x).
    @inline(__always)
    public func backward(y: UnsafePointer<Float>, dy: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .relu: for i in 0..<count { dy[i] = y[i] <= 0 ? 0 : dy[i] }
        case .sigmoid: for i in 0..<count { dy[i] *= y[i] * (1 - y[i]) }
        case .tanh: for i in 0..<count { dy[i] *= 1 - y[i] * y[i] }
        case .linear: break
        }
    }

    /// y[r, j] = f(y[r, j] + bias[j]) for a (rows, columns) y, in one pass.
    @inline(__always)
    public func forwardAddingBias(_ y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>,
                                  rows: Int, columns: Int) {
        let wide = columns & ~7
        switch self {
        case .relu:
            // v < 0 ? 0 : v keeps a NaN visible, as max(v, 0) did.
            for r in 0..<rows {
                let row = y + r * columns
                var j = 0
                while j < wide {
                    var v = SIMDAccess.load(row + j, as: SIMD8<Float>.self) + SIMDAccess.load(bias + j, as: SIMD8<Float>.self)
                    v.replace(with: 0, where: v .< 0)
                    SIMDAccess.store(v, row + j)
                    j += 8
                }
                while j < columns { let v = row[j] + bias[j]; row[j] = v < 0 ? 0 : v; j += 1 }
            }
        case .linear:
            for r in 0..<rows { Self.add(bias, into: y + r * columns, count: columns) }
        case .sigmoid, .tanh:
            for r in 0..<rows {
                let row = y + r * columns
                Self.add(bias, into: row, count: columns)
                forward(row, count: columns)
            }
        }
    }

    /// dy *= f'(x) in place (from the output y; `y` may be nil for `.linear`) and
    /// biasGradient[j] += Σ_r dy[r, j] (rows in order), for a (rows, columns) dy, in one pass.
    @inline(__always)
    public func backwardSummingBias(y: UnsafePointer<Float>?, dy: UnsafeMutablePointer<Float>,
                                    biasGradient db: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
        let wide = columns & ~7
        switch self {
        case .relu:
            let y = y!
            for r in 0..<rows {
                let d = dy + r * columns, yr = y + r * columns
                var j = 0
                while j < wide {
                    var g = SIMDAccess.load(d + j, as: SIMD8<Float>.self)
                    g.replace(with: 0, where: SIMDAccess.load(yr + j, as: SIMD8<Float>.self) .<= 0)
                    SIMDAccess.store(g, d + j)
                    SIMDAccess.store(SIMDAccess.load(db + j, as: SIMD8<Float>.self) + g, db + j)
                    j += 8
                }
                while j < columns {
                    let g = yr[j] <= 0 ? 0 : d[j]
                    d[j] = g
                    db[j] += g
                    j += 1
                }
            }
        case .linear:
            for r in 0..<rows { Self.add(dy + r * columns, into: db, count: columns) }
        case .sigmoid, .tanh:
            for r in 0..<rows {
                let d = dy + r * columns
                backward(y: y! + r * columns, dy: d, count: columns)
                Self.add(d, into: db, count: columns)
            }
        }
    }

    /// target[j] += source[j] for j < count, eight lanes at a time.
    @inline(__always)
    static func add(_ source: UnsafePointer<Float>, into target: UnsafeMutablePointer<Float>, count: Int) {
        let wide = count & ~7
        var j = 0
        while j < wide {
            SIMDAccess.store(SIMDAccess.load(target + j, as: SIMD8<Float>.self) + SIMDAccess.load(source + j, as: SIMD8<Float>.self), target + j)
            j += 8
        }
        while j < count { target[j] += source[j]; j += 1 }
    }
}
