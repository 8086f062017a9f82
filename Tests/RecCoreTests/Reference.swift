import Testing
@testable import RecCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Shared helpers for the GEMM, layer and model gradient tests: seeded random inputs, central
// finite differences in Double, and a comparison that names the worst element when it fails.

/// Test support for gradient checks. A namespace, so its names cannot collide with other tests'.
enum GradCheck {
    /// `n` floats uniform in [low, high) from `rng`.
    static func floats(_ n: Int, _ rng: inout RNG, _ low: Float = -1, _ high: Float = 1) -> [Float] {
        (0..<n).map { _ in rng.uniform(low, high) }
    }

    /// Like `floats`, but every value at least `gap` away from zero (keeps ReLU inputs off the kink).
    static func floatsAwayFromZero(_ n: Int, _ rng: inout RNG, _ bound: Float, gap: Float) -> [Float] {
        (0..<n).map { _ in
            let magnitude = rng.uniform(gap, bound)
            return rng.nextFloat() < 0.5 ? -magnitude : magnitude
        }
    }

    /// Central differences (f(x + h e_i) - f(x - h e_i)) / 2h of `f` at `x`, for each index in
    /// `indices` (all of `x` when nil), in the order given.
    static func centralDifferences(_ x: [Double], indices: [Int]? = nil, h: Double = 1e-6,
                                   _ f: ([Double]) -> Double) -> [Double] {
        var x = x
        return (indices ?? Array(x.indices)).map { i in
            let saved = x[i]
            x[i] = saved + h
            let plus = f(x)
            x[i] = saved - h
            let minus = f(x)
            x[i] = saved
            return (plus - minus) / (2 * h)
        }
    }

    /// The relative error |a - b| / max(|a|, |b|, floor).
    static func relativeError(_ a: Double, _ b: Double, floor: Double) -> Double {
        abs(a - b) / max(abs(a), abs(b), floor)
    }

    /// Expects `actual[i]` within `relative` of `expected[i]` for every i, measured by
    /// `relativeError(_:_:floor:)`; on failure reports how many elements missed and the worst one.
    /// Also fails on any non-finite value.
    static func expectClose(_ actual: [Double], _ expected: [Double], relative: Double, floor: Double,
                            _ what: String, names: ((Int) -> String)? = nil,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(actual.count == expected.count, "\(what): \(actual.count) values, expected \(expected.count)",
                sourceLocation: sourceLocation)
        var worst = -1, worstError = 0.0, misses = 0
        for i in 0..<min(actual.count, expected.count) {
            let a = actual[i], e = expected[i]
            let error = a.isFinite && e.isFinite ? relativeError(a, e, floor: floor) : .infinity
            if error > relative { misses += 1 }
            if error > worstError || worst < 0 { worst = i; worstError = error }
        }
        if misses > 0 {
            let name = names?(worst) ?? "[\(worst)]"
            Issue.record("""
                \(what): \(misses) of \(actual.count) values off by more than \(relative) (relative, floor \(floor)); \
                worst \(name): got \(actual[worst]), expected \(expected[worst]), error \(worstError)
                """, sourceLocation: sourceLocation)
        }
    }

    static func expectClose(_ actual: [Float], _ expected: [Double], relative: Double, floor: Double,
                            _ what: String, names: ((Int) -> String)? = nil,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        expectClose(actual.map(Double.init), expected, relative: relative, floor: floor, what, names: names,
                    sourceLocation: sourceLocation)
    }

    // MARK: Double references of the element-wise functions, written from their definitions.

    static func sigmoid(_ z: Double) -> Double { 1 / (1 + exp(-z)) }

    static func relu(_ z: Double) -> Double { z > 0 ? z : 0 }

    /// Binary cross-entropy of a logit: -y log σ(z) - (1 - y) log(1 - σ(z)), in its stable form.
    static func bce(logit z: Double, label y: Double) -> Double {
        max(z, 0) - z * y + log1p(exp(-abs(z)))
    }

    /// Squared error of the prediction σ(z).
    static func mse(logit z: Double, label y: Double) -> Double {
        let d = sigmoid(z) - y
        return d * d
    }

    /// y = x · W + b for x: (batch, inputs), W: (inputs, outputs) row-major at `w` in `p`, b at `bias`.
    /// (Unsafe pointers only so that the finite differences stay fast in debug builds.)
    static func dense(_ x: [Double], batch: Int, inputs: Int, outputs: Int, p: [Double], w: Int, bias: Int)
        -> [Double] {
        var y = [Double](repeating: 0, count: batch * outputs)
        x.withUnsafeBufferPointer { x in
            p.withUnsafeBufferPointer { p in
                y.withUnsafeMutableBufferPointer { y in
                    for r in 0..<batch {
                        for o in 0..<outputs {
                            var s = p[bias + o]
                            for i in 0..<inputs { s += x[r * inputs + i] * p[w + i * outputs + o] }
                            y[r * outputs + o] = s
                        }
                    }
                }
            }
        }
        return y
    }
}
