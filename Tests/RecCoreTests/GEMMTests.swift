import Testing
@testable import RecCore

// OpenBLAS's sgemm held to the naive kernel (and the naive kernel to a hand-computed product):
// random shapes including 1 and odd sizes, every transpose combination, padded leading
// dimensions, and alpha/beta in {1, 0.5} x {0, 1, 0.3}.

/// One row-major sgemm problem with padded leading dimensions.
struct GEMMProblem: CustomStringConvertible {
    var transA: Bool, transB: Bool
    var m: Int, n: Int, k: Int
    var lda: Int, ldb: Int, ldc: Int
    var alpha: Float, beta: Float
    var a: [Float], b: [Float], c: [Float]

    var description: String {
        "m \(m) n \(n) k \(k) transA \(transA) transB \(transB) lda \(lda) ldb \(ldb) ldc \(ldc) alpha \(alpha) beta \(beta)"
    }

    /// A problem with random A, B, C in [-1, 1) and each leading dimension padded by 0...3.
    init(m: Int, n: Int, k: Int, transA: Bool, transB: Bool, alpha: Float, beta: Float, rng: inout RNG) {
        self.m = m; self.n = n; self.k = k
        self.transA = transA; self.transB = transB
        self.alpha = alpha; self.beta = beta
        // Stored shapes: A is (m, k), or (k, m) when transposed; B is (k, n), or (n, k).
        let aRows = transA ? k : m, aCols = transA ? m : k
        let bRows = transB ? n : k, bCols = transB ? k : n
        lda = max(aCols, 1) + rng.nextInt(below: 4)
        ldb = max(bCols, 1) + rng.nextInt(below: 4)
        ldc = n + rng.nextInt(below: 4)
        a = GradCheck.floats(max(aRows * lda, 1), &rng)
        b = GradCheck.floats(max(bRows * ldb, 1), &rng)
        c = GradCheck.floats(m * ldc, &rng)
    }

    typealias Kernel = (Bool, Bool, Int, Int, Int, Float, UnsafePointer<Float>, Int,
                        UnsafePointer<Float>, Int, Float, UnsafeMutablePointer<Float>, Int) -> Void

    /// C after running `kernel` on a copy.
    func run(_ kernel: Kernel) -> [Float] {
        var out = c
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                out.withUnsafeMutableBufferPointer { pc in
                    kernel(transA, transB, m, n, k, alpha, pa.baseAddress!, lda, pb.baseAddress!, ldb,
                           beta, pc.baseAddress!, ldc)
                }
            }
        }
        return out
    }

    func blas() -> [Float] {
        run { GEMM.sgemm(transA: $0, transB: $1, m: $2, n: $3, k: $4, alpha: $5, a: $6, lda: $7,
                         b: $8, ldb: $9, beta: $10, c: $11, ldc: $12) }
    }

    func naive() -> [Float] {
        run { GEMM.naive(transA: $0, transB: $1, m: $2, n: $3, k: $4, alpha: $5, a: $6, lda: $7,
                         b: $8, ldb: $9, beta: $10, c: $11, ldc: $12) }
    }

    /// An independent Double reference, written from the definition of op(A)·op(B).
    func reference() -> [Double] {
        var out = c.map(Double.init)
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                out.withUnsafeMutableBufferPointer { out in
                    for i in 0..<m {
                        for j in 0..<n {
                            var s = 0.0
                            for p in 0..<k {
                                let aip = transA ? a[p * lda + i] : a[i * lda + p]
                                let bpj = transB ? b[j * ldb + p] : b[p * ldb + j]
                                s += Double(aip) * Double(bpj)
                            }
                            let prior = beta == 0 ? 0 : Double(beta) * out[i * ldc + j]
                            out[i * ldc + j] = Double(alpha) * s + prior
                        }
                    }
                }
            }
        }
        return out
    }
}

/// The ~30 shapes: edges (1, odd, the 64/65 blocking boundary) and random sizes in 1...70.
let gemmShapes: [(m: Int, n: Int, k: Int)] = {
    var shapes: [(m: Int, n: Int, k: Int)] = [
        (1, 1, 1), (1, 1, 70), (1, 70, 1), (70, 1, 1), (1, 17, 33), (33, 1, 17), (17, 33, 1),
        (3, 5, 7), (64, 64, 64), (65, 63, 67), (70, 70, 70), (2, 69, 3), (31, 1, 64),
    ]
    var rng = RNG(seed: 2024, stream: 7)
    while shapes.count < 30 {
        shapes.append((1 + rng.nextInt(below: 70), 1 + rng.nextInt(below: 70), 1 + rng.nextInt(below: 70)))
    }
    return shapes
}()

struct GEMMTests {
    /// max |x - ref| / max(|ref|, 1) over the m x n block of C, and whether the padding past n
    /// in each row of C kept its original value.
    static func compare(_ x: [Float], _ ref: [Double], _ p: GEMMProblem) -> (error: Double, paddingKept: Bool) {
        var error = 0.0, kept = true
        for i in 0..<p.m {
            for j in 0..<p.ldc {
                let idx = i * p.ldc + j
                if j < p.n {
                    let e = Double(x[idx]).isFinite ? abs(Double(x[idx]) - ref[idx]) / max(abs(ref[idx]), 1) : .infinity
                    error = max(error, e)
                } else if x[idx] != p.c[idx] {
                    kept = false
                }
            }
        }
        return (error, kept)
    }

    @Test("sgemm matches naive and a Double reference", arguments: [(false, false), (false, true), (true, false), (true, true)])
    func sgemmMatchesNaive(transA: Bool, transB: Bool) {
        var rng = RNG(seed: 11, stream: transA ? (transB ? 3 : 2) : (transB ? 1 : 0))
        var checked = 0
        for shape in gemmShapes {
            for alpha: Float in [1, 0.5] {
                for beta: Float in [0, 1, 0.3] {
                    let p = GEMMProblem(m: shape.m, n: shape.n, k: shape.k, transA: transA, transB: transB,
                                        alpha: alpha, beta: beta, rng: &rng)
                    let ref = p.reference()
                    let tolerance = 1e-5 * Double(p.k)
                    let blas = Self.compare(p.blas(), ref, p)
                    let naive = Self.compare(p.naive(), ref, p)
                    #expect(blas.error <= tolerance, "sgemm off by \(blas.error) for \(p)")
                    #expect(naive.error <= tolerance, "naive off by \(naive.error) for \(p)")
                    #expect(blas.paddingKept, "sgemm wrote past n in C for \(p)")
                    #expect(naive.paddingKept, "naive wrote past n in C for \(p)")
                    checked += 1
                }
            }
        }
        #expect(checked == gemmShapes.count * 6)
    }

    @Test("naive on a hand-computed 2x3 · 3x2 product, all transposes")
    func naiveByHand() {
        // A = [[1, 2, 3], [4, 5, 6]], B = [[7, 8], [9, 10], [11, 12]]; A·B = [[58, 64], [139, 154]].
        let a: [Float] = [1, 2, 3, 4, 5, 6], aT: [Float] = [1, 4, 2, 5, 3, 6]
        let b: [Float] = [7, 8, 9, 10, 11, 12], bT: [Float] = [7, 9, 11, 8, 10, 12]
        for (transA, transB) in [(false, false), (false, true), (true, false), (true, true)] {
            for kernel in ["naive", "sgemm"] {
                var c: [Float] = [1, 1, 1, 1]
                let pa = transA ? aT : a, pb = transB ? bT : b
                pa.withUnsafeBufferPointer { pa in
                    pb.withUnsafeBufferPointer { pb in
                        c.withUnsafeMutableBufferPointer { pc in
                            let run = kernel == "naive" ? GEMM.naive : GEMM.sgemm
                            run(transA, transB, 2, 2, 3, 2, pa.baseAddress!, transA ? 2 : 3,
                                pb.baseAddress!, transB ? 3 : 2, 0.5, pc.baseAddress!, 2)
                        }
                    }
                }
                // 2·A·B + 0.5·C
                #expect(c == [116.5, 128.5, 278.5, 308.5], "\(kernel) transA \(transA) transB \(transB)")
            }
        }
    }

    @Test("beta 0 ignores C (even NaN); k 0 scales C by beta")
    func betaZeroAndEmptyK() {
        var rng = RNG(seed: 5)
        for kernel in ["naive", "sgemm"] {
            let run = kernel == "naive" ? GEMM.naive : GEMM.sgemm
            let m = 7, n = 9, k = 5
            let a = GradCheck.floats(m * k, &rng), b = GradCheck.floats(k * n, &rng)
            var c = [Float](repeating: .nan, count: m * n)
            a.withUnsafeBufferPointer { pa in
                b.withUnsafeBufferPointer { pb in
                    c.withUnsafeMutableBufferPointer { pc in
                        run(false, false, m, n, k, 1, pa.baseAddress!, k, pb.baseAddress!, n, 0, pc.baseAddress!, n)
                    }
                }
            }
            #expect(c.allSatisfy { $0.isFinite }, "\(kernel): beta 0 must not read C")

            // k = 0 (e.g. a weight gradient over an empty batch): C = beta · C.
            var d: [Float] = [1, 2, 3, 4, 5, 6]
            let one: [Float] = [0]
            one.withUnsafeBufferPointer { p in
                d.withUnsafeMutableBufferPointer { pd in
                    run(true, false, 2, 3, 0, 1, p.baseAddress!, 2, p.baseAddress!, 3, 0.5, pd.baseAddress!, 3)
                }
            }
            #expect(d == [0.5, 1, 1.5, 2, 2.5, 3], "\(kernel): k 0")
        }
    }
}
