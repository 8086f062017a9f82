import Testing
@testable import RecCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Every optimizer is checked element by element against an independent scalar reference written
// in Double straight from Keras 3's formulas.

/// One optimizer configuration under test.
struct OptimizerCase: Sendable, CustomStringConvertible {
    var name: String
    var config: OptimizerConfig
    var description: String { name }

    static let all: [OptimizerCase] = {
        var nesterov = OptimizerConfig(kind: .momentum)
        nesterov.nesterov = true
        // Non-default hyperparameters, so that a hard-coded constant would show.
        var momentum = OptimizerConfig(kind: .momentum, learningRate: 0.05)
        momentum.momentum = 0.5
        var adam = OptimizerConfig(kind: .adam, learningRate: 0.003)
        adam.beta1 = 0.6
        adam.beta2 = 0.95
        adam.epsilon = 1e-5
        // A zero initial accumulator makes Adagrad's epsilon (inside the square root) matter.
        var adagrad = OptimizerConfig(kind: .adagrad, learningRate: 0.02)
        adagrad.initialAccumulator = 0
        // Weight decay: decoupled for AdamW, L2 for the rest. Large enough to show in 5 steps.
        var adamw = OptimizerConfig(kind: .adamw, learningRate: 0.01)
        adamw.weightDecay = 0.3
        adamw.beta1 = 0.7
        func decayed(_ kind: OptimizerKind, _ wd: Float, nesterov: Bool = false) -> OptimizerConfig {
            var c = OptimizerConfig(kind: kind, learningRate: 0.02)
            c.weightDecay = wd
            c.nesterov = nesterov
            return c
        }
        return [
            OptimizerCase(name: "sgd", config: OptimizerConfig(kind: .sgd)),
            OptimizerCase(name: "momentum", config: OptimizerConfig(kind: .momentum)),
            OptimizerCase(name: "nesterov", config: nesterov),
            OptimizerCase(name: "adam", config: OptimizerConfig(kind: .adam)),
            OptimizerCase(name: "adagrad", config: OptimizerConfig(kind: .adagrad)),
            OptimizerCase(name: "momentum(lr 0.05, mu 0.5)", config: momentum),
            OptimizerCase(name: "adam(lr 0.003, b1 0.6, b2 0.95, eps 1e-5)", config: adam),
            OptimizerCase(name: "adagrad(lr 0.02, initial 0)", config: adagrad),
            OptimizerCase(name: "adamw", config: OptimizerConfig(kind: .adamw)),
            OptimizerCase(name: "adamw(lr 0.01, wd 0.3, b1 0.7)", config: adamw),
            OptimizerCase(name: "sgd(wd 0.5)", config: decayed(.sgd, 0.5)),
            OptimizerCase(name: "momentum(wd 0.5)", config: decayed(.momentum, 0.5)),
            OptimizerCase(name: "nesterov(wd 0.5)", config: decayed(.momentum, 0.5, nesterov: true)),
            OptimizerCase(name: "adam(wd 0.5)", config: decayed(.adam, 0.5)),
            OptimizerCase(name: "adagrad(wd 0.5)", config: decayed(.adagrad, 0.5)),
        ]
    }()
}

/// Scalar Double reference of the update rules. `a` is velocity / m / accumulator, `b` is Adam's v.
struct ReferenceOptimizer {
    let config: OptimizerConfig
    var p: [Double]
    var a: [Double]
    var b: [Double]

    init(config: OptimizerConfig, parameters: [Float]) {
        self.config = config
        p = parameters.map(Double.init)
        let initialA = config.kind == .adagrad || config.kind == .rowwiseAdagrad ? Double(config.initialAccumulator) : 0
        a = Array(repeating: initialA, count: parameters.count)
        b = Array(repeating: 0, count: parameters.count)
    }

    /// Updates the elements in `indices` with gradient `g[i]`, as step `t` (1-based).
    mutating func apply(t: Int, gradients g: [Float], indices: some Sequence<Int>, learningRate: Float? = nil) {
        let lr = Double(learningRate ?? config.learningRate), mu = Double(config.momentum)
        let b1 = Double(config.beta1), b2 = Double(config.beta2), eps = Double(config.epsilon)
        let wd = Double(config.weightDecay)
        for i in indices {
            // AdamW: decoupled decay of the parameter; the others: L2 term in the gradient.
            let gi = Double(g[i]) + (config.kind == .adamw ? 0 : wd * p[i])
            if config.kind == .adamw { p[i] -= lr * wd * p[i] }
            switch config.kind {
            case .sgd:
                p[i] -= lr * gi
            case .momentum:
                a[i] = mu * a[i] - lr * gi
                p[i] += config.nesterov ? mu * a[i] - lr * gi : a[i]
            case .adam, .adamw:
                a[i] = b1 * a[i] + (1 - b1) * gi
                b[i] = b2 * b[i] + (1 - b2) * gi * gi
                let alpha = lr * (1 - pow(b2, Double(t))).squareRoot() / (1 - pow(b1, Double(t)))
                p[i] -= alpha * a[i] / (b[i].squareRoot() + eps)
            case .adagrad:
                a[i] += gi * gi
                p[i] -= lr * gi / (a[i] + eps).squareRoot()
            case .rowwiseAdagrad:
                fatalError("row-wise Adagrad has its own reference (RowwiseAdagradTests)")
            }
        }
    }

    /// The reference state in `Optimizer.stateBuffers()` order for one region.
    var state: [[Double]] {
        switch config.kind {
        case .sgd: return []
        case .momentum, .adagrad, .rowwiseAdagrad: return [a]
        case .adam, .adamw: return [a, b]
        }
    }
}

// MARK: - Helpers

/// Normal values; `spread` > 0 scales each by 10^(-spread * u), u uniform, so that some are tiny
/// (where Adam's epsilon matters), and every 17th value is exactly zero.
func randomValues(_ n: Int, _ rng: inout RNG, spread: Double = 0) -> [Float] {
    (0..<n).map { i in
        if spread > 0 && i % 17 == 16 { return 0 }
        return Float(rng.normal() * pow(10, -spread * rng.nextDouble()))
    }
}

/// `k` distinct values of 0..<n in random order.
func randomSubset(_ k: Int, of n: Int, _ rng: inout RNG) -> [Int] {
    var all = Array(0..<n)
    for i in stride(from: n - 1, to: 0, by: -1) { all.swapAt(i, rng.nextInt(below: i + 1)) }
    return Array(all.prefix(k))
}

func denseStep(_ opt: Optimizer, _ parameters: inout [Float], _ gradients: [Float]) {
    parameters.withUnsafeMutableBufferPointer { p in
        gradients.withUnsafeBufferPointer { g in opt.update(parameters: p, gradients: g) }
    }
}

func rowStep(_ opt: Optimizer, _ embeddings: inout [Float], _ rows: [Int], _ gradients: [Float]) {
    embeddings.withUnsafeMutableBufferPointer { e in
        rows.withUnsafeBufferPointer { r in
            gradients.withUnsafeBufferPointer { g in opt.updateRows(embeddings: e, rows: r, gradients: g) }
        }
    }
}

/// Expects `actual` to match `expected` within `relative * |e| + absolute` elementwise.
func expectClose(_ actual: [Float], _ expected: [Double], relative: Double, absolute: Double,
                 _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(actual.count == expected.count, "\(what): count", sourceLocation: sourceLocation)
    var failures = 0
    for (i, (x, e)) in zip(actual, expected).enumerated() {
        let error = abs(Double(x) - e)
        if !(error <= relative * abs(e) + absolute) {
            failures += 1
            if failures <= 3 {
                Issue.record("\(what)[\(i)] = \(x), expected \(e) (error \(error))", sourceLocation: sourceLocation)
            }
        }
    }
    #expect(failures == 0, "\(what): \(failures) of \(actual.count) elements differ", sourceLocation: sourceLocation)
}

/// Parameters: Float rounding of p (~6e-8 |p| per step) plus rounding of the update.
func expectParametersClose(_ actual: [Float], _ expected: [Double], _ what: String,
                           sourceLocation: SourceLocation = #_sourceLocation) {
    expectClose(actual, expected, relative: 1e-6, absolute: 1e-8, what, sourceLocation: sourceLocation)
}

/// State: relative, plus a floor at 1e-7 of the buffer's largest value (velocity and m can cancel).
func expectStateClose(_ opt: Optimizer, dense: ReferenceOptimizer, embedding: ReferenceOptimizer?,
                      sourceLocation: SourceLocation = #_sourceLocation) {
    let expected = dense.state + (embedding?.state ?? [])
    let actual = opt.stateBuffers().filter { embedding != nil || !$0.name.hasPrefix("embedding.") }
    #expect(actual.count == expected.count, "number of state buffers", sourceLocation: sourceLocation)
    for (buffer, reference) in zip(actual, expected) {
        let scale = reference.map(abs).max() ?? 0
        expectClose(buffer.values, reference, relative: 1e-5, absolute: 1e-7 * scale, buffer.name,
                    sourceLocation: sourceLocation)
    }
}

// MARK: - Tests

@Suite("Optimizers")
struct OptimizerTests {
    @Test("Keras default hyperparameters")
    func defaults() {
        #expect(OptimizerConfig(kind: .sgd).learningRate == 0.01)
        #expect(OptimizerConfig(kind: .momentum).learningRate == 0.01)
        #expect(OptimizerConfig(kind: .adam).learningRate == 0.001)
        #expect(OptimizerConfig(kind: .adagrad).learningRate == 0.001)
        #expect(OptimizerConfig(kind: .adam, learningRate: 0.5).learningRate == 0.5)
        let c = OptimizerConfig(kind: .adam)
        #expect(c.momentum == 0.9 && !c.nesterov)
        #expect(c.beta1 == 0.9 && c.beta2 == 0.999 && c.epsilon == 1e-7)
        #expect(c.initialAccumulator == 0.1)
        #expect(OptimizerKind(rawValue: "adagrad") == .adagrad)
        #expect(OptimizerKind.allCases.count == 6)
        #expect(OptimizerKind(rawValue: "rowwise-adagrad") == .rowwiseAdagrad)
        #expect(OptimizerConfig(kind: .adamw).learningRate == 0.001)
        #expect(OptimizerConfig.defaultWeightDecay(for: .adamw) == 0.004)
        #expect(OptimizerConfig.defaultWeightDecay(for: .adam) == 0)
        #expect(OptimizerConfig(kind: .adam).weightDecay == 0)
    }

    @Test("dense update matches the Double reference for 5 steps", arguments: OptimizerCase.all)
    func denseMatchesReference(_ c: OptimizerCase) {
        var rng = RNG(seed: 11, stream: 1)
        let n = 257  // not a multiple of any vector width
        var parameters = randomValues(n, &rng)
        var reference = ReferenceOptimizer(config: c.config, parameters: parameters)
        let opt = Optimizer(config: c.config, parameterCount: n, embeddingRows: 0, embeddingDim: 4)
        for t in 1...5 {
            let gradients = randomValues(n, &rng, spread: 5)
            denseStep(opt, &parameters, gradients)
            reference.apply(t: t, gradients: gradients, indices: 0..<n)
            #expect(opt.step == t)
            expectParametersClose(parameters, reference.p, "\(c) step \(t) parameters")
        }
        expectStateClose(opt, dense: reference, embedding: nil)
    }

    @Test("updateRows over every row, shuffled, matches the Double reference", arguments: OptimizerCase.all)
    func allRowsMatchReference(_ c: OptimizerCase) {
        var rng = RNG(seed: 12, stream: 2)
        let rows = 13, dim = 7, count = 3
        var parameters = randomValues(count, &rng)
        var embeddings = randomValues(rows * dim, &rng)
        var denseReference = ReferenceOptimizer(config: c.config, parameters: parameters)
        var reference = ReferenceOptimizer(config: c.config, parameters: embeddings)
        let opt = Optimizer(config: c.config, parameterCount: count, embeddingRows: rows, embeddingDim: dim)
        for t in 1...5 {
            let denseGradients = randomValues(count, &rng, spread: 5)
            denseStep(opt, &parameters, denseGradients)
            denseReference.apply(t: t, gradients: denseGradients, indices: 0..<count)

            let order = randomSubset(rows, of: rows, &rng)
            let rowGradients = randomValues(rows * dim, &rng, spread: 5)
            rowStep(opt, &embeddings, order, rowGradients)
            // Scatter the row gradients into table layout for the reference.
            var full = [Float](repeating: 0, count: rows * dim)
            for (i, r) in order.enumerated() {
                for j in 0..<dim { full[Int(r) * dim + j] = rowGradients[i * dim + j] }
            }
            reference.apply(t: t, gradients: full, indices: 0..<(rows * dim))
            expectParametersClose(parameters, denseReference.p, "\(c) step \(t) dense")
            expectParametersClose(embeddings, reference.p, "\(c) step \(t) embeddings")
        }
        expectStateClose(opt, dense: denseReference, embedding: reference)
    }

    @Test("updateRows on a subset is lazy: listed rows follow the reference, others are bit-identical",
          arguments: OptimizerCase.all)
    func lazySubset(_ c: OptimizerCase) {
        var rng = RNG(seed: 13, stream: 3)
        let rows = 40, dim = 9
        var embeddings = randomValues(rows * dim, &rng)
        var reference = ReferenceOptimizer(config: c.config, parameters: embeddings)
        let opt = Optimizer(config: c.config, parameterCount: 0, embeddingRows: rows, embeddingDim: dim)
        var empty: [Float] = []
        for t in 1...5 {
            denseStep(opt, &empty, [])
            let touched = randomSubset(1 + rng.nextInt(below: rows / 2), of: rows, &rng)
            let rowGradients = randomValues(touched.count * dim, &rng, spread: 3)
            let before = embeddings
            let stateBefore = opt.stateBuffers().filter { $0.name.hasPrefix("embedding.") }
            rowStep(opt, &embeddings, touched, rowGradients)

            var full = [Float](repeating: 0, count: rows * dim)
            var indices: [Int] = []
            for (i, r) in touched.enumerated() {
                for j in 0..<dim {
                    full[Int(r) * dim + j] = rowGradients[i * dim + j]
                    indices.append(Int(r) * dim + j)
                }
            }
            reference.apply(t: t, gradients: full, indices: indices)
            expectParametersClose(embeddings, reference.p, "\(c) step \(t) embeddings")

            let stateAfter = opt.stateBuffers().filter { $0.name.hasPrefix("embedding.") }
            #expect(stateAfter.count == ReferenceOptimizer(config: c.config, parameters: []).state.count)
            let touchedSet = Set(touched)
            for r in 0..<rows where !touchedSet.contains(r) {
                let range = r * dim ..< (r + 1) * dim
                #expect(embeddings[range].map(\.bitPattern) == before[range].map(\.bitPattern),
                        "\(c) step \(t): untouched row \(r) changed")
                for (old, new) in zip(stateBefore, stateAfter) {
                    #expect(new.values[range].map(\.bitPattern) == old.values[range].map(\.bitPattern),
                            "\(c) step \(t): state \(new.name) of untouched row \(r) changed")
                }
            }
        }
        expectStateClose(opt, dense: ReferenceOptimizer(config: c.config, parameters: []), embedding: reference)
    }

    @Test("updateRows equals the dense update with zero gradients elsewhere exactly for SGD and Adagrad, and not for momentum or Adam",
          arguments: OptimizerCase.all)
    func lazyEqualsDenseWhereExact(_ c: OptimizerCase) {
        var rng = RNG(seed: 14, stream: 4)
        let rows = 30, dim = 5
        var viaRows = randomValues(rows * dim, &rng)
        var viaDense = viaRows
        let sparse = Optimizer(config: c.config, parameterCount: 0, embeddingRows: rows, embeddingDim: dim)
        let dense = Optimizer(config: c.config, parameterCount: rows * dim, embeddingRows: 0, embeddingDim: dim)
        var empty: [Float] = []
        for _ in 1...5 {
            let touched = randomSubset(1 + rng.nextInt(below: rows - 1), of: rows, &rng)
            let rowGradients = randomValues(touched.count * dim, &rng)
            var full = [Float](repeating: 0, count: rows * dim)
            for (i, r) in touched.enumerated() {
                for j in 0..<dim { full[Int(r) * dim + j] = rowGradients[i * dim + j] }
            }
            denseStep(sparse, &empty, [])
            rowStep(sparse, &viaRows, touched, rowGradients)
            denseStep(dense, &viaDense, full)
        }
        let sameParameters = viaRows.map(\.bitPattern) == viaDense.map(\.bitPattern)
        let sameState = sparse.stateBuffers().filter { $0.name.hasPrefix("embedding.") }.map { $0.values.map(\.bitPattern) }
            == dense.stateBuffers().filter { !$0.name.hasPrefix("embedding.") }.map { $0.values.map(\.bitPattern) }
        switch c.config.kind {
        case .sgd where c.config.weightDecay == 0, .adagrad where c.config.weightDecay == 0:
            #expect(sameParameters)
            #expect(sameState)
        case .rowwiseAdagrad:
            Issue.record("not in OptimizerCase.all")
        default:
            // Lazy: untouched rows' state (and, with weight decay, the rows themselves) is not
            // decayed, so the trajectories differ.
            #expect(!sameParameters)
        }
    }

    @Test("Adam's first step moves each parameter by about lr * sign(g)")
    func adamFirstStep() {
        var rng = RNG(seed: 15, stream: 5)
        let n = 100
        let config = OptimizerConfig(kind: .adam, learningRate: 0.01)
        var parameters = randomValues(n, &rng)
        let start = parameters
        // |g| in [0.01, 100): far above epsilon, so the step is lr * sign(g) to ~1e-4 relative.
        let gradients = (0..<n).map { _ in
            Float((rng.nextInt(below: 2) == 0 ? -1.0 : 1.0) * pow(10, 4 * rng.nextDouble() - 2))
        }
        let opt = Optimizer(config: config, parameterCount: n, embeddingRows: 0, embeddingDim: 1)
        denseStep(opt, &parameters, gradients)
        for i in 0..<n {
            let moved = Double(parameters[i]) - Double(start[i])
            let expected = -0.01 * Double(gradients[i].sign == .minus ? -1 : 1)
            #expect(abs(moved - expected) <= 1e-3 * 0.01, "element \(i): moved \(moved), expected \(expected)")
        }
    }

    @Test("stateBuffers / loadState round trip continues exactly like an uninterrupted optimizer",
          arguments: OptimizerCase.all)
    func checkpointRoundTrip(_ c: OptimizerCase) throws {
        var rng = RNG(seed: 16, stream: 6)
        let count = 33, rows = 12, dim = 6
        var parameters = randomValues(count, &rng)
        var embeddings = randomValues(rows * dim, &rng)
        let original = Optimizer(config: c.config, parameterCount: count, embeddingRows: rows, embeddingDim: dim)
        func run(_ opt: Optimizer, _ p: inout [Float], _ e: inout [Float], seed: UInt64) {
            var r = RNG(seed: seed, stream: 7)
            for _ in 0..<3 {
                denseStep(opt, &p, randomValues(count, &r, spread: 2))
                let touched = randomSubset(1 + r.nextInt(below: rows), of: rows, &r)
                rowStep(opt, &e, touched, randomValues(touched.count * dim, &r, spread: 2))
            }
        }
        run(original, &parameters, &embeddings, seed: 1)

        let saved = original.stateBuffers()
        let restored = Optimizer(config: c.config, parameterCount: count, embeddingRows: rows, embeddingDim: dim)
        try restored.loadState(step: original.step, buffers: saved.reversed())
        #expect(restored.step == 3)
        #expect(restored.stateBuffers().map(\.name) == saved.map(\.name))
        #expect(restored.stateBuffers().map(\.values) == saved.map(\.values))

        var parameters2 = parameters, embeddings2 = embeddings
        run(original, &parameters, &embeddings, seed: 2)
        run(restored, &parameters2, &embeddings2, seed: 2)
        #expect(original.step == 6 && restored.step == 6)
        #expect(parameters.map(\.bitPattern) == parameters2.map(\.bitPattern))
        #expect(embeddings.map(\.bitPattern) == embeddings2.map(\.bitPattern))
        #expect(original.stateBuffers().map { $0.values.map(\.bitPattern) }
                == restored.stateBuffers().map { $0.values.map(\.bitPattern) })
    }

    @Test("state buffer names and sizes per kind")
    func stateLayout() {
        func layout(_ kind: OptimizerKind) -> [String] {
            Optimizer(config: OptimizerConfig(kind: kind), parameterCount: 5, embeddingRows: 3, embeddingDim: 2)
                .stateBuffers().map { "\($0.name):\($0.values.count)" }
        }
        #expect(layout(.sgd) == [])
        #expect(layout(.momentum) == ["velocity:5", "embedding.velocity:6"])
        #expect(layout(.adam) == ["m:5", "v:5", "embedding.m:6", "embedding.v:6"])
        #expect(layout(.adagrad) == ["accumulator:5", "embedding.accumulator:6"])
        #expect(layout(.adamw) == ["m:5", "v:5", "embedding.m:6", "embedding.v:6"])
        #expect(layout(.rowwiseAdagrad) == ["accumulator:5", "embedding.accumulator:3"])
        let adagrad = Optimizer(config: OptimizerConfig(kind: .adagrad), parameterCount: 5, embeddingRows: 3, embeddingDim: 2)
        #expect(adagrad.stateBuffers().allSatisfy { $0.values.allSatisfy { $0 == 0.1 } })
    }

    @Test("loadState rejects mismatched state and leaves the optimizer unchanged")
    func loadStateRejects() throws {
        let config = OptimizerConfig(kind: .adam)
        let opt = Optimizer(config: config, parameterCount: 4, embeddingRows: 3, embeddingDim: 2)
        var parameters: [Float] = [1, 2, 3, 4]
        denseStep(opt, &parameters, [0.5, -0.5, 0.25, 1])
        let good = opt.stateBuffers()
        let goodBits = good.map { $0.values.map(\.bitPattern) }

        var short = good
        short[1].values.removeLast()
        #expect(throws: OptimizerStateError.sizeMismatch(name: "v", expected: 4, actual: 3)) {
            try opt.loadState(step: 7, buffers: short)
        }
        var long = good
        long[3].values.append(0)
        #expect(throws: OptimizerStateError.sizeMismatch(name: "embedding.v", expected: 6, actual: 7)) {
            try opt.loadState(step: 7, buffers: long)
        }
        #expect(throws: OptimizerStateError.missingBuffer(name: "embedding.m")) {
            try opt.loadState(step: 7, buffers: good.filter { $0.name != "embedding.m" })
        }
        #expect(throws: OptimizerStateError.unexpectedBuffer(name: "velocity")) {
            try opt.loadState(step: 7, buffers: good + [(name: "velocity", values: [0, 0, 0, 0])])
        }
        #expect(throws: OptimizerStateError.unexpectedBuffer(name: "m")) {
            try opt.loadState(step: 7, buffers: good + [good[0]])
        }
        #expect(throws: OptimizerStateError.invalidStep(-1)) {
            try opt.loadState(step: -1, buffers: good)
        }
        // A momentum checkpoint does not fit an Adam optimizer.
        let momentum = Optimizer(config: OptimizerConfig(kind: .momentum), parameterCount: 4, embeddingRows: 3, embeddingDim: 2)
        #expect(throws: OptimizerStateError.self) {
            try opt.loadState(step: 7, buffers: momentum.stateBuffers())
        }
        #expect(opt.step == 1)
        #expect(opt.stateBuffers().map { $0.values.map(\.bitPattern) } == goodBits)

        // Same-shaped optimizer of another size: every buffer mismatches.
        let bigger = Optimizer(config: config, parameterCount: 5, embeddingRows: 3, embeddingDim: 2)
        #expect(throws: OptimizerStateError.self) { try bigger.loadState(step: 1, buffers: good) }
        #expect(!OptimizerStateError.missingBuffer(name: "m").description.isEmpty)
    }
}

// MARK: - Row-wise Adagrad, schedules with the optimizer, weight decay

@Suite("Row-wise Adagrad, AdamW and weight decay")
struct RowwiseAdagradTests {
    /// Double reference of row-wise Adagrad on a (rows, dim) table: one accumulator per row.
    struct Reference {
        var p: [Double]
        var acc: [Double]
        let dim: Int
        let lr: Double, eps: Double, wd: Double
        mutating func apply(row r: Int, gradients g: ArraySlice<Float>) {
            let base = r * dim
            let gs = (0..<dim).map { Double(g[g.startIndex + $0]) + wd * p[base + $0] }
            acc[r] += gs.reduce(0) { $0 + $1 * $1 } / Double(dim)
            for j in 0..<dim { p[base + j] -= lr * gs[j] / (acc[r] + eps).squareRoot() }
        }
    }

    @Test("row-wise Adagrad matches the Double reference on touched rows; untouched rows and accumulators stay bit-identical",
          arguments: [Float(0), 0.2])
    func rowwiseMatchesReference(weightDecay: Float) {
        var rng = RNG(seed: 21, stream: 9)
        let rows = 25, dim = 6, count = 11
        var config = OptimizerConfig(kind: .rowwiseAdagrad, learningRate: 0.05)
        config.initialAccumulator = 0.01
        config.weightDecay = weightDecay
        var dense = randomValues(count, &rng)
        var denseReference = ReferenceOptimizer(config: { var c = config; c.kind = .adagrad; return c }(), parameters: dense)
        var embeddings = randomValues(rows * dim, &rng)
        var reference = Reference(p: embeddings.map(Double.init), acc: Array(repeating: 0.01, count: rows), dim: dim,
                                  lr: 0.05, eps: Double(config.epsilon), wd: Double(weightDecay))
        let opt = Optimizer(config: config, parameterCount: count, embeddingRows: rows, embeddingDim: dim)
        for t in 1...6 {
            let dg = randomValues(count, &rng, spread: 3)
            denseStep(opt, &dense, dg)
            denseReference.apply(t: t, gradients: dg, indices: 0..<count)
            let touched = randomSubset(1 + rng.nextInt(below: rows - 1), of: rows, &rng)
            let g = randomValues(touched.count * dim, &rng, spread: 3)
            let before = embeddings
            let accBefore = opt.stateBuffers().first { $0.name == "embedding.accumulator" }!.values
            rowStep(opt, &embeddings, touched, g)
            for (i, r) in touched.enumerated() { reference.apply(row: Int(r), gradients: g[(i * dim)..<((i + 1) * dim)]) }
            expectParametersClose(embeddings, reference.p, "step \(t) rows")
            expectParametersClose(dense, denseReference.p, "step \(t) dense (element-wise Adagrad)")
            let acc = opt.stateBuffers().first { $0.name == "embedding.accumulator" }!.values
            expectClose(acc, reference.acc, relative: 1e-5, absolute: 0, "step \(t) row accumulators")
            let set = Set(touched)
            for r in 0..<rows where !set.contains(r) {
                #expect(embeddings[(r * dim)..<((r + 1) * dim)].map(\.bitPattern) == before[(r * dim)..<((r + 1) * dim)].map(\.bitPattern))
                #expect(acc[r].bitPattern == accBefore[r].bitPattern)
            }
        }
    }

    @Test("row-wise Adagrad with dim 1 follows element-wise Adagrad")
    func rowwiseDimOneIsAdagrad() {
        var rng = RNG(seed: 22, stream: 1)
        let rows = 50
        var a = randomValues(rows, &rng), b = a
        let rowwise = Optimizer(config: OptimizerConfig(kind: .rowwiseAdagrad, learningRate: 0.1), parameterCount: 0, embeddingRows: rows, embeddingDim: 1)
        let plain = Optimizer(config: OptimizerConfig(kind: .adagrad, learningRate: 0.1), parameterCount: 0, embeddingRows: rows, embeddingDim: 1)
        var empty: [Float] = []
        for _ in 0..<5 {
            let touched = randomSubset(20, of: rows, &rng)
            let g = randomValues(20, &rng)
            denseStep(rowwise, &empty, []); denseStep(plain, &empty, [])
            rowStep(rowwise, &a, touched, g); rowStep(plain, &b, touched, g)
        }
        for i in 0..<rows { #expect(abs(a[i] - b[i]) <= 1e-6 * max(1, abs(b[i])), "row \(i): \(a[i]) vs \(b[i])") }
    }

    @Test("AdamW decays decoupled, Adam with weight decay couples it: different trajectories, and AdamW with zero gradients only shrinks")
    func adamwIsDecoupled() {
        var w = OptimizerConfig(kind: .adamw, learningRate: 0.1)
        w.weightDecay = 0.5
        let opt = Optimizer(config: w, parameterCount: 3, embeddingRows: 0, embeddingDim: 1)
        var p: [Float] = [1, -2, 4]
        denseStep(opt, &p, [0, 0, 0])
        // m = v = 0: the Adam part is 0, the decay is p * (1 - lr * wd) = 0.95 p.
        #expect(p == [0.95, -1.9, 3.8])
        var l2 = OptimizerConfig(kind: .adam, learningRate: 0.1)
        l2.weightDecay = 0.5
        let coupled = Optimizer(config: l2, parameterCount: 3, embeddingRows: 0, embeddingDim: 1)
        var q: [Float] = [1, -2, 4]
        denseStep(coupled, &q, [0, 0, 0])
        // L2 through Adam: the gradient is 0.5 p, Adam's first step moves each by about lr * sign.
        for (x, start) in zip(q, [Float(1), -2, 4]) { #expect(abs(abs(x - start) - 0.1) < 1e-3) }
    }

    @Test("a learning rate set between steps is the one used (schedules), also for Adam's bias-corrected step")
    func learningRateIsSettable() {
        var rng = RNG(seed: 23, stream: 2)
        for kind in [OptimizerKind.sgd, .momentum, .adam, .adamw, .adagrad] {
            var config = OptimizerConfig(kind: kind, learningRate: 0.1)
            config.weightDecay = kind == .adamw ? 0.1 : 0
            let n = 40
            var p = randomValues(n, &rng)
            var reference = ReferenceOptimizer(config: config, parameters: p)
            let opt = Optimizer(config: config, parameterCount: n, embeddingRows: 0, embeddingDim: 1)
            let schedule = LearningRateSchedule(decay: .cosine, warmupSteps: 2)
            for t in 1...6 {
                let lr = schedule.rate(base: 0.1, step: t - 1, totalSteps: 6)
                opt.learningRate = lr
                let g = randomValues(n, &rng)
                denseStep(opt, &p, g)
                reference.apply(t: t, gradients: g, indices: 0..<n, learningRate: lr)
                // |p| ~ 1 and the steps cancel: Float rounding of p, not of the rate, bounds the error.
                expectClose(p, reference.p, relative: 1e-6, absolute: 1e-6, "\(kind) step \(t)")
            }
        }
    }
}
