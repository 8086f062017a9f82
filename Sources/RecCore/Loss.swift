#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@inline(__always) func _tanh(_ x: Double) -> Double { tanh(x) }

/// Training losses, each fused with the final sigmoid: the model emits logits z, the prediction
/// is p = sigmoid(z), and the loss's gradient is taken with respect to z.
public enum Loss: String, CaseIterable, Sendable, Codable {
    /// Binary cross-entropy, computed from the logit as max(z,0) - z·y + log(1 + e^-|z|),
    /// which is exact and finite for any z. dL/dz = p - y.
    case bce
    /// Squared error on the prediction, (p - y)². dL/dz = 2 (p - y) p (1 - p).
    case mse

    /// A numerically stable logistic function.
    @inline(__always)
    public static func sigmoid(_ z: Float) -> Float {
        if z >= 0 { return 1 / (1 + expf(-z)) }
        let e = expf(z)
        return e / (1 + e)
    }

    /// The loss of one example, in Double.
    @inline(__always)
    public func value(logit z: Float, label y: Float) -> Double {
        switch self {
        case .bce:
            let zd = Double(z), yd = Double(y)
            return max(zd, 0) - zd * yd + log1p(exp(-abs(zd)))
        case .mse:
            let d = Double(Loss.sigmoid(z)) - Double(y)
            return d * d
        }
    }

    /// Writes dLogits[i] = scale · dL/dz_i and returns Σ loss_i (unscaled), for `count` examples.
    /// `scale` is 1 / (global batch size): the mean over the global batch is folded in here, so
    /// summing the ranks' gradients gives the gradient of the global mean.
    @inline(__always)
    public func forwardBackward(logits: UnsafePointer<Float>, labels: UnsafePointer<Float>, count: Int,
                                scale: Float, dLogits: UnsafeMutablePointer<Float>) -> Double {
        var total = 0.0
        for i in 0..<count {
            let z = logits[i], y = labels[i]
            total += value(logit: z, label: y)
            let p = Loss.sigmoid(z)
            switch self {
            case .bce: dLogits[i] = scale * (p - y)
            case .mse: dLogits[i] = scale * 2 * (p - y) * p * (1 - p)
            }
        }
        return total
    }
}
