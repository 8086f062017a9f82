import Testing
@testable import RecCore

// The optimized kernels against their naive references: the SIMD dot interaction (dim 16 and
// other widths, single-tensor and split forms), fused bias + activation against separate passes,
// and the 16-wide embedding row copy.

struct KernelTests {
    @Test("DotInteraction optimized kernels equal the naive ones, bit for bit",
          arguments: [(27, 16, 5), (5, 16, 3), (2, 16, 2), (27, 4, 3), (4, 7, 2), (3, 32, 2)])
    func interactionAgainstNaive(slots: Int, dim: Int, batch: Int) {
        var rng = RNG(seed: UInt64(slots * 100 + dim))
        let inter = DotInteraction(slots: slots, dim: dim)
        let t = GradCheck.floats(batch * slots * dim, &rng)
        let g = GradCheck.floats(batch * inter.outputSize, &rng)
        var fast = [Float](repeating: .nan, count: batch * inter.outputSize), naive = fast
        var dFast = [Float](repeating: .nan, count: batch * slots * dim), dNaive = dFast
        t.withUnsafeBufferPointer { pt in
            g.withUnsafeBufferPointer { pg in
                fast.withUnsafeMutableBufferPointer { inter.forward(t: pt.baseAddress!, out: $0.baseAddress!, batch: batch) }
                naive.withUnsafeMutableBufferPointer { inter.naiveForward(t: pt.baseAddress!, out: $0.baseAddress!, batch: batch) }
                dFast.withUnsafeMutableBufferPointer {
                    inter.backward(t: pt.baseAddress!, dOut: pg.baseAddress!, dT: $0.baseAddress!, batch: batch)
                }
                dNaive.withUnsafeMutableBufferPointer {
                    inter.naiveBackward(t: pt.baseAddress!, dOut: pg.baseAddress!, dT: $0.baseAddress!, batch: batch)
                }
            }
        }
        // The same sums in the same order: bit for bit (the N-rank equivalence tests rely on the
        // kernels' rounding not changing with the vectorization).
        #expect(fast == naive)
        #expect(dFast == dNaive)
    }

    /// The split form (slot 0 and slots 1... in separate buffers with their own strides, as
    /// DLRMModel uses it) gives exactly the single-tensor form's results.
    @Test(arguments: [16, 5])
    func interactionSplitForm(dim: Int) {
        let slots = 27, batch = 4, fields = slots - 1
        var rng = RNG(seed: 77)
        let inter = DotInteraction(slots: slots, dim: dim)
        let t = GradCheck.floats(batch * slots * dim, &rng)
        let g = GradCheck.floats(batch * inter.outputSize, &rng)
        // first: (batch, dim) padded to a stride of dim + 3; rest: (batch, fields, dim).
        let firstStride = dim + 3
        var first = [Float](repeating: 9, count: batch * firstStride)
        var rest = [Float](repeating: 0, count: batch * fields * dim)
        for b in 0..<batch {
            for k in 0..<dim { first[b * firstStride + k] = t[(b * slots) * dim + k] }
            for k in 0..<(fields * dim) { rest[b * fields * dim + k] = t[(b * slots + 1) * dim + k] }
        }
        var whole = [Float](repeating: 0, count: batch * inter.outputSize), split = whole
        var dWhole = [Float](repeating: 0, count: batch * slots * dim)
        var dFirst = [Float](repeating: 5, count: batch * firstStride), dRest = [Float](repeating: 5, count: batch * fields * dim)
        t.withUnsafeBufferPointer { pt in
            g.withUnsafeBufferPointer { pg in
                whole.withUnsafeMutableBufferPointer { inter.forward(t: pt.baseAddress!, out: $0.baseAddress!, batch: batch) }
                dWhole.withUnsafeMutableBufferPointer {
                    inter.backward(t: pt.baseAddress!, dOut: pg.baseAddress!, dT: $0.baseAddress!, batch: batch)
                }
                first.withUnsafeBufferPointer { pf in
                    rest.withUnsafeBufferPointer { pr in
                        split.withUnsafeMutableBufferPointer {
                            inter.forward(first: pf.baseAddress!, firstStride: firstStride, rest: pr.baseAddress!,
                                          restStride: fields * dim, out: $0.baseAddress!, batch: batch)
                        }
                        dFirst.withUnsafeMutableBufferPointer { df in
                            dRest.withUnsafeMutableBufferPointer { dr in
                                inter.backward(first: pf.baseAddress!, firstStride: firstStride, rest: pr.baseAddress!,
                                               restStride: fields * dim, dOut: pg.baseAddress!,
                                               dFirst: df.baseAddress!, dFirstStride: firstStride,
                                               dRest: dr.baseAddress!, dRestStride: fields * dim, batch: batch)
                            }
                        }
                    }
                }
            }
        }
        #expect(split == whole)
        for b in 0..<batch {
            #expect(Array(dFirst[(b * firstStride)..<(b * firstStride + dim)]) == Array(dWhole[(b * slots * dim)..<((b * slots + 1) * dim)]))
            #expect(Array(dFirst[(b * firstStride + dim)..<((b + 1) * firstStride)]) == [Float](repeating: 5, count: 3),
                    "the padding between rows must stay untouched")
            #expect(Array(dRest[(b * fields * dim)..<((b + 1) * fields * dim)])
                    == Array(dWhole[((b * slots + 1) * dim)..<((b + 1) * slots * dim)]))
        }
    }

    /// Fused bias + activation (forward) and activation + bias gradient (backward) equal the
    /// separate passes, bit for bit, for widths with and without a SIMD tail.
    @Test(arguments: Activation.allCases)
    func fusedBiasActivation(_ activation: Activation) {
        var rng = RNG(seed: 12)
        for columns in [1, 7, 8, 13, 64] {
            let rows = 5
            let pre = GradCheck.floats(rows * columns, &rng)
            let bias = GradCheck.floats(columns, &rng)
            let upstream = GradCheck.floats(rows * columns, &rng)
            // Separate passes.
            var y = pre
            for r in 0..<rows { for j in 0..<columns { y[r * columns + j] += bias[j] } }
            y.withUnsafeMutableBufferPointer { activation.forward($0.baseAddress!, count: $0.count) }
            var dy = upstream
            y.withUnsafeBufferPointer { py in
                dy.withUnsafeMutableBufferPointer { activation.backward(y: py.baseAddress!, dy: $0.baseAddress!, count: $0.count) }
            }
            var db = [Float](repeating: 0.25, count: columns)
            for r in 0..<rows { for j in 0..<columns { db[j] += dy[r * columns + j] } }
            // Fused.
            var yFused = pre
            bias.withUnsafeBufferPointer { pb in
                yFused.withUnsafeMutableBufferPointer {
                    activation.forwardAddingBias($0.baseAddress!, bias: pb.baseAddress!, rows: rows, columns: columns)
                }
            }
            var dyFused = upstream
            var dbFused = [Float](repeating: 0.25, count: columns)
            yFused.withUnsafeBufferPointer { py in
                dyFused.withUnsafeMutableBufferPointer { pd in
                    dbFused.withUnsafeMutableBufferPointer {
                        activation.backwardSummingBias(y: py.baseAddress!, dy: pd.baseAddress!, biasGradient: $0.baseAddress!,
                                                       rows: rows, columns: columns)
                    }
                }
            }
            #expect(yFused == y, "\(activation) forward, \(columns) columns")
            #expect(dyFused == dy, "\(activation) backward, \(columns) columns")
            #expect(dbFused == db, "\(activation) bias gradient, \(columns) columns")
        }
    }

    /// ReLU keeps NaN visible (the debug checks rely on it), forward and backward.
    @Test func reluPropagatesNaN() {
        var y: [Float] = [.nan, -1, 2, .nan, 0, 0, 0, 0, 0]
        let bias = [Float](repeating: 0, count: 9)
        bias.withUnsafeBufferPointer { pb in
            y.withUnsafeMutableBufferPointer {
                Activation.relu.forwardAddingBias($0.baseAddress!, bias: pb.baseAddress!, rows: 1, columns: 9)
            }
        }
        #expect(y[0].isNaN && y[3].isNaN && y[1] == 0 && y[2] == 2)
    }

    /// The 16-wide embedding row copy places the same rows as the generic copy.
    @Test func lookupDim16() {
        let fields = 3, buckets = 10, dim = 16, batch = 2
        let tables = EmbeddingTables(fields: fields, buckets: buckets, dim: dim)
        let table = (0..<(tables.rowCount * dim)).map { Float($0) }
        let categorical: [UInt32] = [0, 5, 77, 3, 0, 12]
        var out = [Float](repeating: -1, count: batch * fields * dim)
        var rows = [Int](repeating: -1, count: batch * fields)
        categorical.withUnsafeBufferPointer { pc in
            table.withUnsafeBufferPointer { pt in
                out.withUnsafeMutableBufferPointer { po in
                    rows.withUnsafeMutableBufferPointer { pr in
                        tables.lookup(categorical: pc.baseAddress!, batch: batch, table: pt.baseAddress!,
                                      out: po.baseAddress!, slots: fields, firstSlot: 0, rows: pr.baseAddress!)
                    }
                }
            }
        }
        for i in 0..<(batch * fields) {
            let r = tables.row(field: i % fields, hash: categorical[i])
            #expect(Int(rows[i]) == r)
            #expect(Array(out[(i * dim)..<((i + 1) * dim)]) == Array(table[(r * dim)..<((r + 1) * dim)]))
        }
    }
}
