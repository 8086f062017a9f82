#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The update rules: the per-step scalars and the choice of kernel by kind, then the element-wise
// kernels, one plain loop each over unsafe pointers (vectorizable, no allocation): without weight
// decay, with it, and row-wise Adagrad's per-row rule.

extension Optimizer {
    /// Per-step scalars, computed once per call (powers in Double).
    struct Scalars {
        var lr: Float
        var mu: Float
        var b1: Float, oneMinusB1: Float
        var b2: Float, oneMinusB2: Float
        var alpha: Float
        var eps: Float
        /// Coupled L2 coefficient (`g += l2 * p`), and the decoupled decay `lr * wd` (AdamW).
        var l2: Float
        var decay: Float
    }

    func scalars() -> Scalars {
        let c = config
        let lr = learningRate
        var alpha = lr
        if c.kind == .adam || c.kind == .adamw {
            let t = Double(step)
            let b1 = Double(c.beta1), b2 = Double(c.beta2)
            alpha = Float(Double(lr) * (1 - pow(b2, t)).squareRoot() / (1 - pow(b1, t)))
        }
        let decoupled = c.decoupledWeightDecay
        return Scalars(lr: lr, mu: c.momentum,
                       b1: c.beta1, oneMinusB1: Float(1 - Double(c.beta1)),
                       b2: c.beta2, oneMinusB2: Float(1 - Double(c.beta2)),
                       alpha: alpha, eps: c.epsilon,
                       l2: decoupled ? 0 : c.weightDecay,
                       decay: decoupled ? Float(Double(lr) * Double(c.weightDecay)) : 0)
    }

    /// Applies one step to `n` contiguous elements: `p` parameters, `g` gradients, `a`/`b` the
    /// matching state slots (nil when the kind has none).
    @inline(__always)
    func apply(_ s: Scalars, _ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
               _ a: UnsafeMutablePointer<Float>?, _ b: UnsafeMutablePointer<Float>?, count n: Int) {
        // Without weight decay the original kernels run, bit for bit as before it existed.
        let decayed = s.l2 != 0
        switch config.kind {
        case .sgd:
            if decayed { Self.sgd(p, g, n, lr: s.lr, l2: s.l2) } else { Self.sgd(p, g, n, lr: s.lr) }
        case .momentum:
            if config.nesterov {
                if decayed { Self.nesterov(p, g, a!, n, lr: s.lr, mu: s.mu, l2: s.l2) } else { Self.nesterov(p, g, a!, n, lr: s.lr, mu: s.mu) }
            } else {
                if decayed { Self.momentum(p, g, a!, n, lr: s.lr, mu: s.mu, l2: s.l2) } else { Self.momentum(p, g, a!, n, lr: s.lr, mu: s.mu) }
            }
        case .adam, .adamw:
            if decayed || s.decay != 0 { Self.adam(p, g, a!, b!, n, s, l2: s.l2, decay: s.decay) } else { Self.adam(p, g, a!, b!, n, s) }
        case .adagrad, .rowwiseAdagrad:
            if decayed { Self.adagrad(p, g, a!, n, lr: s.lr, eps: s.eps, l2: s.l2) } else { Self.adagrad(p, g, a!, n, lr: s.lr, eps: s.eps) }
        }
    }

    // p: (n), g: (n)
    private static func sgd(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ n: Int, lr: Float) {
        for i in 0..<n {
            p[i] -= lr * g[i]
        }
    }

    // p, g, velocity: (n)
    private static func momentum(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                 _ velocity: UnsafeMutablePointer<Float>, _ n: Int, lr: Float, mu: Float) {
        for i in 0..<n {
            let v = mu * velocity[i] - lr * g[i]
            velocity[i] = v
            p[i] += v
        }
    }

    // p, g, velocity: (n)
    private static func nesterov(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                 _ velocity: UnsafeMutablePointer<Float>, _ n: Int, lr: Float, mu: Float) {
        for i in 0..<n {
            let step = lr * g[i]
            let v = mu * velocity[i] - step
            velocity[i] = v
            p[i] += mu * v - step
        }
    }

    // p, g, m, v: (n)
    private static func adam(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                             _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>,
                             _ n: Int, _ s: Scalars) {
        let b1 = s.b1, c1 = s.oneMinusB1, b2 = s.b2, c2 = s.oneMinusB2, alpha = s.alpha, eps = s.eps
        for i in 0..<n {
            let gi = g[i]
            let mi = b1 * m[i] + c1 * gi
            let vi = b2 * v[i] + c2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            p[i] -= alpha * mi / (vi.squareRoot() + eps)
        }
    }

    // p, g, accumulator: (n)
    private static func adagrad(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                _ accumulator: UnsafeMutablePointer<Float>, _ n: Int, lr: Float, eps: Float) {
        for i in 0..<n {
            let gi = g[i]
            let acc = accumulator[i] + gi * gi
            accumulator[i] = acc
            p[i] -= lr * gi / (acc + eps).squareRoot()
        }
    }

    // The same kernels with weight decay: `l2` adds `l2 * p` to the gradient, `decay` (AdamW)
    // shrinks `p` by `decay * p` before the step.

    // p: (n), g: (n)
    private static func sgd(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ n: Int, lr: Float, l2: Float) {
        for i in 0..<n {
            let gi = g[i] + l2 * p[i]
            p[i] -= lr * gi
        }
    }

    // p, g, velocity: (n)
    private static func momentum(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                 _ velocity: UnsafeMutablePointer<Float>, _ n: Int, lr: Float, mu: Float, l2: Float) {
        for i in 0..<n {
            let gi = g[i] + l2 * p[i]
            let v = mu * velocity[i] - lr * gi
            velocity[i] = v
            p[i] += v
        }
    }

    // p, g, velocity: (n)
    private static func nesterov(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                 _ velocity: UnsafeMutablePointer<Float>, _ n: Int, lr: Float, mu: Float, l2: Float) {
        for i in 0..<n {
            let step = lr * (g[i] + l2 * p[i])
            let v = mu * velocity[i] - step
            velocity[i] = v
            p[i] += mu * v - step
        }
    }

    // p, g, m, v: (n)
    private static func adam(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                             _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>,
                             _ n: Int, _ s: Scalars, l2: Float, decay: Float) {
        let b1 = s.b1, c1 = s.oneMinusB1, b2 = s.b2, c2 = s.oneMinusB2, alpha = s.alpha, eps = s.eps
        for i in 0..<n {
            let pi = p[i]
            let gi = g[i] + l2 * pi
            let mi = b1 * m[i] + c1 * gi
            let vi = b2 * v[i] + c2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            p[i] = (pi - decay * pi) - alpha * mi / (vi.squareRoot() + eps)
        }
    }

    // p, g, accumulator: (n)
    private static func adagrad(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                _ accumulator: UnsafeMutablePointer<Float>, _ n: Int, lr: Float, eps: Float, l2: Float) {
        for i in 0..<n {
            let gi = g[i] + l2 * p[i]
            let acc = accumulator[i] + gi * gi
            accumulator[i] = acc
            p[i] -= lr * gi / (acc + eps).squareRoot()
        }
    }

    /// Row-wise Adagrad on one row: `acc += mean_j(g_j^2)`, `p -= lr * g / sqrt(acc + eps)`.
    // p, g: (dim); accumulator: the row's one value
    @inline(__always)
    static func rowwiseAdagrad(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                                       _ accumulator: UnsafeMutablePointer<Float>, _ dim: Int,
                                       lr: Float, eps: Float, l2: Float) {
        var squares: Float = 0
        if l2 == 0 {
            for j in 0..<dim { squares += g[j] * g[j] }
        } else {
            for j in 0..<dim {
                let gj = g[j] + l2 * p[j]
                squares += gj * gj
            }
        }
        let acc = accumulator.pointee + squares / Float(dim)
        accumulator.pointee = acc
        let scale = lr / (acc + eps).squareRoot()
        if l2 == 0 {
            for j in 0..<dim { p[j] -= scale * g[j] }
        } else {
            for j in 0..<dim { p[j] -= scale * (g[j] + l2 * p[j]) }
        }
    }
}
