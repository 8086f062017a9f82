/// How a weight matrix is filled at the start of training.
public enum Initializer: String, CaseIterable, Sendable, Codable {
    /// Uniform in ±sqrt(6 / (fanIn + fanOut)): Keras's `glorot_uniform`, the default.
    case glorotUniform = "glorot-uniform"
    /// Uniform in ±sqrt(6 / fanIn): Keras's `he_uniform`, suited to ReLU stacks.
    case heUniform = "he-uniform"

    /// The half-width of the uniform distribution for a (fanIn, fanOut) matrix.
    public func limit(fanIn: Int, fanOut: Int) -> Float {
        switch self {
        case .glorotUniform: return (6.0 / Float(fanIn + fanOut)).squareRoot()
        case .heUniform: return (6.0 / Float(fanIn)).squareRoot()
        }
    }

    /// Fills `count` floats at `pointer` for a (fanIn, fanOut) matrix.
    public func fill(_ pointer: UnsafeMutablePointer<Float>, count: Int, fanIn: Int, fanOut: Int,
                     rng: inout RNG) {
        let a = limit(fanIn: fanIn, fanOut: fanOut)
        for i in 0..<count { pointer[i] = rng.uniform(-a, a) }
    }
}
