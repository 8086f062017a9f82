import RecCore
import RecDistributed

extension Benchmark {
    struct Shape {
        var m: Int, n: Int, k: Int, transA: Bool, transB: Bool, what: String
        /// As the step calls it: forward and dW accumulate (beta 1: onto the bias rows, into the
        /// gradients), dx overwrites (beta 0).
        var beta: Float { transB ? 0 : 1 }
    }

    /// The sgemm calls of one training step of `model` at `batch` rows: forward, dW and (where the
    /// model computes it) dx of every Linear layer.
    static func gemmShapes<Model: RecModel>(_ model: Model, batch: Int) -> [Shape] {
        var shapes: [Shape] = []
        func stack(_ name: String, _ sizes: [Int], firstNeedsDx: Bool) {
            for l in 0..<(sizes.count - 1) {
                let i = sizes[l], o = sizes[l + 1]
                shapes.append(Shape(m: batch, n: o, k: i, transA: false, transB: false, what: "\(name).\(l) forward"))
                shapes.append(Shape(m: i, n: o, k: batch, transA: true, transB: false, what: "\(name).\(l) dW"))
                if l > 0 || firstNeedsDx {
                    shapes.append(Shape(m: batch, n: i, k: o, transA: false, transB: true, what: "\(name).\(l) dx"))
                }
            }
        }
        let c = model.config
        switch c.kind {
        case .mlp:
            stack("mlp", [c.mlpDenseFeatures] + c.hidden + [1], firstNeedsDx: false)
        case .dlrm:
            let slots = c.categoricalFields + 1
            stack("bottom", [c.denseInputs] + c.bottom + [c.embeddingDim], firstNeedsDx: false)
            stack("top", [c.embeddingDim + slots * (slots - 1) / 2] + c.top + [1], firstNeedsDx: true)
        case .logreg:
            if c.denseInputs > 0 { stack("linear", [c.denseInputs, 1], firstNeedsDx: false) }
        case .wideDeep:
            stack("deep", [c.denseInputs + c.categoricalFields * c.embeddingDim] + c.hidden + [1], firstNeedsDx: true)
        case .ncf:
            stack("mlp", [2 * c.embeddingDim] + c.hidden, firstNeedsDx: true)
            stack("predict", [c.factors + (c.hidden.last ?? 0), 1], firstNeedsDx: true)
        case .twoTower:
            stack("user", [(c.userFields ?? []).count * c.embeddingDim] + c.hidden + [c.factors], firstNeedsDx: true)
            stack("item", [(c.itemFields ?? []).count * c.embeddingDim] + c.hidden + [c.factors], firstNeedsDx: true)
        }
        return shapes
    }

    /// Runs all shapes back to back for about `seconds` on every rank at once; returns the mean
    /// over ranks of the aggregate GFLOP/s, and each shape's own rate (rank 0's).
    static func measureGEMM(_ shapes: [Shape], seconds: Double,
                            communicator: any Communicator) throws -> (Double, [GEMMShapeRate]) {
        let maxA = shapes.map { $0.m * $0.k }.max() ?? 1
        let maxB = shapes.map { $0.k * $0.n }.max() ?? 1
        let maxC = shapes.map { $0.m * $0.n }.max() ?? 1
        let a = FloatBuffer(count: maxA), b = FloatBuffer(count: maxB), c = FloatBuffer(count: maxC)
        var rng = RNG(seed: 9, stream: UInt64(communicator.rank))
        // Small values: the accumulating calls add up over thousands of rounds.
        for i in 0..<maxA { a.pointer[i] = rng.uniform(-0.01, 0.01) }
        for i in 0..<maxB { b.pointer[i] = rng.uniform(-0.01, 0.01) }
        func call(_ s: Shape) {
            GEMM.sgemm(transA: s.transA, transB: s.transB, m: s.m, n: s.n, k: s.k, alpha: 1,
                       a: a.pointer, lda: s.transA ? s.m : s.k, b: b.pointer, ldb: s.transB ? s.k : s.n,
                       beta: s.beta, c: c.pointer, ldc: s.n)
        }
        let flopsPerRound = shapes.reduce(0.0) { $0 + 2 * Double($1.m * $1.n * $1.k) }
        // Each shape alone, briefly (a fifth of the budget), then the sequence as a step runs it.
        var rates: [GEMMShapeRate] = []
        try communicator.barrier()
        for s in shapes {
            let budget = UInt64(seconds * 0.2e9 / Double(shapes.count))
            call(s)
            var reps = 0
            let t0 = MonotonicClock.nanoseconds()
            while reps < 3 || MonotonicClock.nanoseconds() - t0 < budget {
                call(s)
                reps += 1
            }
            let dt = Double(MonotonicClock.nanoseconds() - t0)
            rates.append(GEMMShapeRate(m: s.m, n: s.n, k: s.k, transA: s.transA, transB: s.transB, what: s.what,
                                       gflops: 2 * Double(s.m * s.n * s.k) * Double(reps) / dt))
        }
        // The sequence: in 5 rounds, each rank's best round (transient load elsewhere on the
        // machine only slows rounds down), then the mean over ranks.
        var best = 0.0
        for _ in 0..<5 {
            try communicator.barrier()
            var rounds = 0
            let budget = UInt64(seconds * 0.8e9 / 5)
            let t0 = MonotonicClock.nanoseconds()
            while rounds < 2 || MonotonicClock.nanoseconds() - t0 < budget {
                for s in shapes { call(s) }
                rounds += 1
            }
            best = max(best, flopsPerRound * Double(rounds) / Double(MonotonicClock.nanoseconds() - t0))
        }
        let sum = try communicator.allreduceSum([best])
        return (sum[0] / Double(communicator.size), rates)
    }
}
