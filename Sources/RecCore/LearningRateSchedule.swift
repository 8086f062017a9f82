#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The shape of the learning rate over a run.
public enum LearningRateDecay: String, CaseIterable, Sendable, Codable {
    /// The base rate throughout (after any warmup).
    case constant
    /// Linear decay from the base rate at the end of warmup to `minRatio x base` at the last step.
    case linear
    /// Half a cosine from the base rate at the end of warmup to `minRatio x base` at the last step.
    case cosine
    /// Multiply by `decayFactor` every `decayEvery` steps after warmup.
    case step
}

/// A learning-rate schedule: an optional linear warmup, then a decay.
///
/// The rate is a pure function of the step index, the run's total steps and the base rate, so a
/// checkpoint's step count is the schedule's whole state. With step index `s` (0 for the first
/// optimizer step), warmup `w` and total steps `T`:
///
/// - warmup, `s < w`: `base x (s + 1) / w` (the first step already moves; the step `w - 1` uses
///   the full base rate);
/// - after, with progress `q = (s - w) / (T - w)` in [0, 1):
///   - `constant`: `base`;
///   - `linear`: `base x (1 - (1 - minRatio) q)` (Hugging Face's `get_linear_schedule_with_warmup`
///     when `minRatio` is 0);
///   - `cosine`: `base x (minRatio + (1 - minRatio) (1 + cos(pi q)) / 2)`;
///   - `step`: `base x decayFactor ^ floor((s - w) / decayEvery)`.
public struct LearningRateSchedule: Sendable, Equatable, Codable {
    public var decay: LearningRateDecay = .constant
    /// Steps of linear warmup (0: none).
    public var warmupSteps: Int = 0
    /// `linear` and `cosine`: the final rate as a fraction of the base rate.
    public var minRatio: Double = 0
    /// `step`: decay every this many steps after warmup.
    public var decayEvery: Int = 1000
    /// `step`: the factor applied at each decay.
    public var decayFactor: Double = 0.1

    public init(decay: LearningRateDecay = .constant, warmupSteps: Int = 0) {
        self.decay = decay
        self.warmupSteps = warmupSteps
    }

    /// The rate of step `step` (0-based) of a run of `totalSteps` steps.
    public func rate(base: Float, step: Int, totalSteps: Int) -> Float {
        let b = Double(base)
        if step < warmupSteps {
            return Float(b * Double(step + 1) / Double(warmupSteps))
        }
        let after = step - warmupSteps
        let span = max(totalSteps - warmupSteps, 1)
        let q = min(Double(after) / Double(span), 1)
        switch decay {
        case .constant:
            return base
        case .linear:
            return Float(b * (1 - (1 - minRatio) * q))
        case .cosine:
            return Float(b * (minRatio + (1 - minRatio) * (1 + cos(Double.pi * q)) / 2))
        case .step:
            return Float(b * pow(decayFactor, Double(after / max(decayEvery, 1))))
        }
    }

    /// One line for logs: "cosine decay after 100 warmup steps".
    public var summary: String {
        var text: String
        switch decay {
        case .constant: text = "constant"
        case .linear, .cosine: text = "\(decay.rawValue) decay to \(minRatio) x lr"
        case .step: text = "x\(decayFactor) every \(decayEvery) steps"
        }
        if warmupSteps > 0 { text += " after \(warmupSteps) warmup steps" }
        return text
    }
}

/// Clipping by global norm (Pascanu et al.; PyTorch's `clip_grad_norm_`): every gradient, dense
/// and embedding rows together, is scaled by `maxNorm / (norm + 1e-6)` when the norm over all of
/// them exceeds `maxNorm`.
public enum GradientClipping {
    /// The L2 norm over the concatenation of `parts`, summed in Double.
    @inline(__always)
    public static func globalNorm(_ dense: UnsafeBufferPointer<Float>, _ rows: UnsafeBufferPointer<Float>) -> Double {
        (sumOfSquares(dense) + sumOfSquares(rows)).squareRoot()
    }

    /// Scales the buffers in place so their global norm is at most `maxNorm`; returns the norm
    /// before clipping. With sharded embedding tables, `sharded` is this rank's part of the
    /// sharded rows' gradients and `shardedSquares` the sum of squares of all ranks' parts (the
    /// caller allreduces it), so every rank computes the same norm.
    @inline(__always)
    @discardableResult
    public static func clip(_ dense: UnsafeMutableBufferPointer<Float>, _ rows: UnsafeMutableBufferPointer<Float>,
                            maxNorm: Float, sharded: UnsafeMutableBufferPointer<Float> = .init(start: nil, count: 0),
                            shardedSquares: Double = 0) -> Double {
        let norm = (sumOfSquares(UnsafeBufferPointer(dense)) + sumOfSquares(UnsafeBufferPointer(rows)) + shardedSquares).squareRoot()
        guard norm > Double(maxNorm) else { return norm }
        let factor = Float(Double(maxNorm) / (norm + 1e-6))
        scale(dense, by: factor)
        scale(rows, by: factor)
        scale(sharded, by: factor)
        return norm
    }

    @inline(__always)
    static func sumOfSquares(_ x: UnsafeBufferPointer<Float>) -> Double {
        guard let p = x.baseAddress else { return 0 }
        // Float partial sums over short blocks, added up in Double: vectorized, and accurate.
        var total = 0.0
        var start = 0
        let n = x.count
        while start < n {
            let end = min(start + 256, n)
            var s: Float = 0
            for i in start..<end { s += p[i] * p[i] }
            total += Double(s)
            start = end
        }
        return total
    }

    @inline(__always)
    static func scale(_ x: UnsafeMutableBufferPointer<Float>, by factor: Float) {
        guard let p = x.baseAddress else { return }
        for i in 0..<x.count { p[i] *= factor }
    }
}
