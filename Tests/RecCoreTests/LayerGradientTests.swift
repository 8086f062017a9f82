import Testing
@testable import RecCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Each layer's Float forward against an independent Double reference, and its Float backward
// against central differences (in Double) of the objective Σ output · c for fixed random c.

struct LayerGradientTests {
    static let gradientTolerance = 1e-3
    static let gradientFloor = 1e-3

    // MARK: Linear

    @Test("Linear forward, dW, db, dx", arguments: [(7, 5, 4), (1, 3, 1), (13, 1, 6)])
    func linear(inputSize: Int, outputSize: Int, batch: Int) {
        var rng = RNG(seed: UInt64(100 + inputSize * 10 + outputSize))
        var layout = ParameterLayout()
        _ = layout.add("before", shape: [3])   // so the layer's offsets are not 0
        let layer = Linear("lin", inputSize: inputSize, outputSize: outputSize, layout: &layout)
        #expect(layout.entry(named: "lin.weight")?.shape == [inputSize, outputSize])
        #expect(layout.entry(named: "lin.bias")?.shape == [outputSize])
        let parameters = GradCheck.floats(layout.count, &rng)
        let x = GradCheck.floats(batch * inputSize, &rng, -2, 2)
        let c = GradCheck.floats(batch * outputSize, &rng)
        let w = layer.weightOffset, bias = layer.biasOffset

        // Float forward.
        var y = [Float](repeating: .nan, count: batch * outputSize)
        parameters.withUnsafeBufferPointer { p in
            x.withUnsafeBufferPointer { px in
                y.withUnsafeMutableBufferPointer { py in
                    layer.forward(x: px.baseAddress!, y: py.baseAddress!, batch: batch, parameters: p.baseAddress!)
                }
            }
        }
        // Double reference: y[r][o] = b[o] + Σ_i x[r][i] W[i][o].
        func reference(_ p: [Double], _ x: [Double]) -> [Double] {
            var y = [Double](repeating: 0, count: batch * outputSize)
            for r in 0..<batch {
                for o in 0..<outputSize {
                    var s = p[bias + o]
                    for i in 0..<inputSize { s += x[r * inputSize + i] * p[w + i * outputSize + o] }
                    y[r * outputSize + o] = s
                }
            }
            return y
        }
        let pd = parameters.map(Double.init), xd = x.map(Double.init), cd = c.map(Double.init)
        GradCheck.expectClose(y, reference(pd, xd), relative: 1e-5, floor: 1, "Linear forward")

        // Float backward into pre-filled gradients (it must accumulate) and a garbage dx (overwritten).
        let prior = GradCheck.floats(layout.count, &rng)
        var gradients = prior
        var dx = [Float](repeating: 1e3, count: batch * inputSize)
        parameters.withUnsafeBufferPointer { p in
            x.withUnsafeBufferPointer { px in
                c.withUnsafeBufferPointer { pc in
                    gradients.withUnsafeMutableBufferPointer { g in
                        dx.withUnsafeMutableBufferPointer { pdx in
                            layer.backward(x: px.baseAddress!, dy: pc.baseAddress!, dx: pdx.baseAddress!,
                                           batch: batch, parameters: p.baseAddress!, gradients: g.baseAddress!)
                        }
                    }
                }
            }
        }
        let objective = { (p: [Double], x: [Double]) -> Double in
            zip(reference(p, x), cd).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let accumulated = (0..<layout.count).map { Double(gradients[$0]) - Double(prior[$0]) }
        let numericW = GradCheck.centralDifferences(pd, indices: Array(w..<(w + inputSize * outputSize))) { objective($0, xd) }
        let numericB = GradCheck.centralDifferences(pd, indices: Array(bias..<(bias + outputSize))) { objective($0, xd) }
        let numericX = GradCheck.centralDifferences(xd) { objective(pd, $0) }
        GradCheck.expectClose(Array(accumulated[w..<(w + inputSize * outputSize)]), numericW,
                              relative: Self.gradientTolerance, floor: Self.gradientFloor, "Linear dW")
        GradCheck.expectClose(Array(accumulated[bias..<(bias + outputSize)]), numericB,
                              relative: Self.gradientTolerance, floor: Self.gradientFloor, "Linear db")
        GradCheck.expectClose(dx, numericX, relative: Self.gradientTolerance, floor: Self.gradientFloor, "Linear dx")
        #expect(Array(gradients[0..<3]) == Array(prior[0..<3]), "backward touched another tensor's gradient")

        // Without dx, the parameter gradients are the same and nothing else is needed.
        var gradients2 = [Float](repeating: 0, count: layout.count)
        parameters.withUnsafeBufferPointer { p in
            x.withUnsafeBufferPointer { px in
                c.withUnsafeBufferPointer { pc in
                    gradients2.withUnsafeMutableBufferPointer { g in
                        layer.backward(x: px.baseAddress!, dy: pc.baseAddress!, dx: nil,
                                       batch: batch, parameters: p.baseAddress!, gradients: g.baseAddress!)
                    }
                }
            }
        }
        GradCheck.expectClose(gradients2, accumulated, relative: 1e-5, floor: 1e-3, "Linear backward without dx")
    }

    // MARK: Activations

    @Test("Activation forward and backward", arguments: Activation.allCases)
    func activation(_ activation: Activation) {
        var rng = RNG(seed: 31, stream: UInt64(activation.rawValue.count))
        let n = 64
        // Off the ReLU kink: every |x| >= 0.05; a few wide values exercise saturation.
        var x = GradCheck.floatsAwayFromZero(n, &rng, 4, gap: 0.05)
        x += [-9, 9, 0.5, -0.5]
        let c = GradCheck.floats(x.count, &rng)
        func f(_ v: Double) -> Double {
            switch activation {
            case .relu: return GradCheck.relu(v)
            case .sigmoid: return GradCheck.sigmoid(v)
            case .tanh: return tanh(v)
            case .linear: return v
            }
        }
        var y = x
        y.withUnsafeMutableBufferPointer { activation.forward($0.baseAddress!, count: $0.count) }
        GradCheck.expectClose(y, x.map { f(Double($0)) }, relative: 1e-6, floor: 1e-6, "\(activation) forward")

        var dy = c
        y.withUnsafeBufferPointer { py in
            dy.withUnsafeMutableBufferPointer { activation.backward(y: py.baseAddress!, dy: $0.baseAddress!, count: $0.count) }
        }
        let cd = c.map(Double.init)
        let numeric = x.indices.map { i in
            GradCheck.centralDifferences([Double(x[i])]) { cd[i] * f($0[0]) }[0]
        }
        GradCheck.expectClose(dy, numeric, relative: Self.gradientTolerance, floor: Self.gradientFloor,
                              "\(activation) backward")
    }

    // MARK: DotInteraction

    @Test("DotInteraction output ordering, by hand")
    func dotInteractionOrdering() {
        // slots 3, dim 1: t = [2, 3, 5] -> [t0, t1·t0, t2·t0, t2·t1] = [2, 6, 10, 15].
        let small = DotInteraction(slots: 3, dim: 1)
        #expect(small.pairs == 3 && small.outputSize == 4)
        let t: [Float] = [2, 3, 5]
        var out = [Float](repeating: .nan, count: 4)
        t.withUnsafeBufferPointer { pt in
            out.withUnsafeMutableBufferPointer { small.forward(t: pt.baseAddress!, out: $0.baseAddress!, batch: 1) }
        }
        #expect(out == [2, 6, 10, 15])

        // slots 4, dim 2, two examples: t0 = (1, 10), t1 = (2, 0), t2 = (0, 3), t3 = (5, 7); the second
        // example is the first doubled, so its products are 4x.
        let inter = DotInteraction(slots: 4, dim: 2)
        #expect(inter.pairs == 6 && inter.outputSize == 8)
        let one: [Float] = [1, 10, 2, 0, 0, 3, 5, 7]
        let tt = one + one.map { 2 * $0 }
        var out2 = [Float](repeating: .nan, count: 16)
        tt.withUnsafeBufferPointer { pt in
            out2.withUnsafeMutableBufferPointer { inter.forward(t: pt.baseAddress!, out: $0.baseAddress!, batch: 2) }
        }
        // t1·t0 = 2, t2·t0 = 30, t2·t1 = 0, t3·t0 = 75, t3·t1 = 10, t3·t2 = 21
        let first: [Float] = [1, 10, 2, 30, 0, 75, 10, 21]
        #expect(Array(out2[0..<8]) == first)
        #expect(Array(out2[8..<16]) == [2, 20] + first[2...].map { 4 * $0 })
    }

    @Test("DotInteraction forward and dT",
          arguments: [(27, 4, 3, true), (5, 3, 2, true), (2, 1, 1, true), (4, 3, 2, false), (2, 2, 3, false)])
    func dotInteraction(slots: Int, dim: Int, batch: Int, passthrough: Bool) {
        var rng = RNG(seed: UInt64(7 * slots + dim))
        let inter = DotInteraction(slots: slots, dim: dim, passthrough: passthrough)
        let width = (passthrough ? dim : 0) + slots * (slots - 1) / 2
        #expect(inter.outputSize == width)
        let t = GradCheck.floats(batch * slots * dim, &rng)
        let c = GradCheck.floats(batch * width, &rng)

        // Reference: for each example, [t0 (with passthrough), then t_i · t_j for i in 1..<slots, j in 0..<i].
        func reference(_ t: [Double]) -> [Double] {
            var out: [Double] = []
            for b in 0..<batch {
                func v(_ s: Int, _ k: Int) -> Double { t[(b * slots + s) * dim + k] }
                if passthrough { for k in 0..<dim { out.append(v(0, k)) } }
                for i in 1..<slots {
                    for j in 0..<i { out.append((0..<dim).reduce(0) { $0 + v(i, $1) * v(j, $1) }) }
                }
            }
            return out
        }
        var out = [Float](repeating: .nan, count: batch * width)
        t.withUnsafeBufferPointer { pt in
            out.withUnsafeMutableBufferPointer { inter.forward(t: pt.baseAddress!, out: $0.baseAddress!, batch: batch) }
        }
        let td = t.map(Double.init), cd = c.map(Double.init)
        GradCheck.expectClose(out, reference(td), relative: 1e-5, floor: 1, "DotInteraction forward")

        var dT = [Float](repeating: 1e3, count: batch * slots * dim)   // garbage: backward overwrites
        t.withUnsafeBufferPointer { pt in
            c.withUnsafeBufferPointer { pc in
                dT.withUnsafeMutableBufferPointer {
                    inter.backward(t: pt.baseAddress!, dOut: pc.baseAddress!, dT: $0.baseAddress!, batch: batch)
                }
            }
        }
        let numeric = GradCheck.centralDifferences(td) { zip(reference($0), cd).reduce(0) { $0 + $1.0 * $1.1 } }
        GradCheck.expectClose(dT, numeric, relative: Self.gradientTolerance, floor: Self.gradientFloor,
                              "DotInteraction dT")
    }

    // MARK: EmbeddingTables

    @Test("EmbeddingTables row mapping")
    func embeddingRows() {
        let tables = EmbeddingTables(fields: 3, buckets: 50, dim: 4)
        #expect(tables.rowCount == 150)
        // Missing (hash 0) is id 0 of each field's table.
        #expect(tables.row(field: 0, hash: 0) == 0)
        #expect(tables.row(field: 1, hash: 0) == 50)
        #expect(tables.row(field: 2, hash: 0) == 100)
        // Others are 1 + h mod 49, offset by field · 50.
        #expect(tables.row(field: 0, hash: 1) == 2)
        #expect(tables.row(field: 0, hash: 48) == 49)
        #expect(tables.row(field: 0, hash: 49) == 1)
        #expect(tables.row(field: 1, hash: 49) == 51)
        #expect(tables.row(field: 2, hash: 98) == 101)
        #expect(tables.row(field: 1, hash: 123_456_789) == 50 + 1 + 15)
        #expect(tables.row(field: 2, hash: UInt32.max) == 100 + 1 + 38)
        // Every hash of field f lands in f's table, and a non-missing hash never lands on id 0.
        var rng = RNG(seed: 9)
        for _ in 0..<1000 {
            let f = rng.nextInt(below: 3)
            let h = UInt32(truncatingIfNeeded: rng.next())
            let r = tables.row(field: f, hash: h)
            #expect(r == f * 50 + (h == 0 ? 0 : 1 + Int(UInt64(h) % 49)))
        }
        // Two buckets: every non-missing hash shares id 1.
        let two = EmbeddingTables(fields: 2, buckets: 2, dim: 1)
        #expect(two.row(field: 1, hash: 0) == 2 && two.row(field: 1, hash: 12345) == 3)
        // Tables of 2^32 buckets (the most 32-bit hashes can fill): rows beyond 2^32 in all, as
        // the batch's row list carries them.
        let huge = EmbeddingTables(fields: 3, buckets: 1 << 32, dim: 1)
        #expect(huge.rowCount == 3 << 32)
        #expect(huge.row(field: 2, hash: UInt32.max) == (2 << 32) + 1 + Int(UInt32.max % UInt32.max))
        #expect(huge.row(field: 2, hash: UInt32.max - 1) == (2 << 32) + Int(UInt32.max))
        let categorical: [UInt32] = [7, 0, UInt32.max - 1, 0, 9, 1]
        var rows = [Int](repeating: -1, count: 6)
        categorical.withUnsafeBufferPointer { c in
            rows.withUnsafeMutableBufferPointer { huge.gatherRows(categorical: c.baseAddress!, width: 3, columns: [0, 1, 2], batch: 2, rows: $0.baseAddress!) }
        }
        #expect(rows == [8, 1 << 32, (2 << 32) + Int(UInt32.max), 0, (1 << 32) + 10, (2 << 32) + 2])
    }

    @Test("EmbeddingTables with per-field sizes and direct ids")
    func embeddingDirectRows() {
        let tables = EmbeddingTables(rowsPerField: [3, 1, 10], dim: 2, indexing: .direct)
        #expect(tables.fields == 3 && tables.rowCount == 14)
        #expect((0..<3).map { tables.firstRow(field: $0) } == [0, 3, 4])
        #expect((0..<3).map { tables.rows(field: $0) } == [3, 1, 10])
        #expect(tables.row(field: 0, value: 2) == 2)
        #expect(tables.row(field: 1, value: 0) == 3)
        #expect(tables.row(field: 2, value: 0) == 4 && tables.row(field: 2, value: 9) == 13)
        #expect((0..<14).map { tables.field(ofRow: $0) } == [0, 0, 0, 1] + Array(repeating: 2, count: 10))
        // Hashed tables with per-field sizes: 1 + h mod (rows - 1) inside each field's range.
        let hashed = EmbeddingTables(rowsPerField: [5, 2, 100], dim: 1, indexing: .hashed)
        #expect(hashed.row(field: 0, value: 0) == 0 && hashed.row(field: 0, value: 9) == 1 + 9 % 4)
        #expect(hashed.row(field: 1, value: 77) == 5 + 1)
        #expect(hashed.row(field: 2, value: 1000) == 7 + 1 + 1000 % 99)
        // A uniform hashed table is the Criteo TSV layout.
        #expect(EmbeddingTables(fields: 2, buckets: 4, dim: 3) == EmbeddingTables(rowsPerField: [4, 4], dim: 3, indexing: .hashed))
    }

    @Test("EmbeddingTables lookup places rows at the given slots")
    func embeddingLookup() {
        let fields = 3, buckets = 50, dim = 4, batch = 2, slots = fields + 2, firstSlot = 1
        let tables = EmbeddingTables(fields: fields, buckets: buckets, dim: dim)
        // Row r's k-th value is r + k/10, so any misplaced row shows.
        let table = (0..<(tables.rowCount * dim)).map { Float($0 / dim) + Float($0 % dim) / 10 }
        let categorical: [UInt32] = [0, 49, 7, 98, 0, UInt32.max]
        let expectedRows: [Int] = [0, 51, 108, 1, 50, 139]
        var out = [Float](repeating: -1, count: batch * slots * dim)
        var rows = [Int](repeating: -1, count: batch * fields)
        categorical.withUnsafeBufferPointer { pc in
            table.withUnsafeBufferPointer { pt in
                out.withUnsafeMutableBufferPointer { po in
                    rows.withUnsafeMutableBufferPointer { pr in
                        tables.lookup(categorical: pc.baseAddress!, batch: batch, table: pt.baseAddress!,
                                      out: po.baseAddress!, slots: slots, firstSlot: firstSlot, rows: pr.baseAddress!)
                    }
                }
            }
        }
        #expect(rows == expectedRows)
        for b in 0..<batch {
            for s in 0..<slots {
                let got = Array(out[((b * slots + s) * dim)..<((b * slots + s + 1) * dim)])
                if s >= firstSlot && s < firstSlot + fields {
                    let r = expectedRows[b * fields + s - firstSlot]
                    #expect(got == (0..<dim).map { Float(r) + Float($0) / 10 }, "example \(b) slot \(s)")
                } else {
                    #expect(got == [Float](repeating: -1, count: dim), "example \(b) slot \(s) must be untouched")
                }
            }
        }
    }

    // MARK: Losses

    @Test("Loss forwardBackward: dLogits, values and sum", arguments: Loss.allCases)
    func loss(_ loss: Loss) {
        var rng = RNG(seed: 77, stream: loss == .bce ? 0 : 1)
        var logits: [Float] = [0, 30, -30, 80, -80, 30, -30, 80, -80, 1e-3, -2.5, 4]
        var labels: [Float] = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0.25]
        logits += GradCheck.floats(20, &rng, -6, 6)
        labels += (0..<20).map { _ in rng.nextFloat() < 0.5 ? 0 : 1 }
        let scale: Float = 0.2
        func reference(_ z: Double, _ y: Double) -> Double {
            loss == .bce ? GradCheck.bce(logit: z, label: y) : GradCheck.mse(logit: z, label: y)
        }

        var dLogits = [Float](repeating: .nan, count: logits.count)
        let total = logits.withUnsafeBufferPointer { pz in
            labels.withUnsafeBufferPointer { py in
                dLogits.withUnsafeMutableBufferPointer {
                    loss.forwardBackward(logits: pz.baseAddress!, labels: py.baseAddress!, count: logits.count,
                                         scale: scale, dLogits: $0.baseAddress!)
                }
            }
        }
        let values = zip(logits, labels).map { loss.value(logit: $0, label: $1) }
        let expected = zip(logits, labels).map { reference(Double($0), Double($1)) }
        #expect(values.allSatisfy { $0.isFinite } && dLogits.allSatisfy { $0.isFinite } && total.isFinite)
        GradCheck.expectClose(values, expected, relative: 1e-5, floor: 1e-3, "\(loss) value")
        let sum = values.reduce(0, +)
        #expect(abs(total - sum) <= 1e-12 * max(1, abs(sum)), "returned \(total), Σ value = \(sum)")

        let numeric = logits.indices.map { i in
            Double(scale) * GradCheck.centralDifferences([Double(logits[i])]) { reference($0[0], Double(labels[i])) }[0]
        }
        GradCheck.expectClose(dLogits, numeric, relative: Self.gradientTolerance, floor: Self.gradientFloor,
                              "\(loss) dLogits")

        if loss == .bce {
            // The extremes, by hand: log(1 + e^-80) underflows to nothing next to 80.
            #expect(values[3] < 1e-30 && values[4] == 80 && values[7] == 80 && values[8] < 1e-30)
            #expect(abs(values[0] - log(2.0)) < 1e-15)
        }
    }
}
