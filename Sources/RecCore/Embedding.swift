import CIntrinsics

/// Embedding tables for the categorical fields: field `f` has `rows(field: f)` rows, and the
/// tables are stored one after another in one flat (rowCount, dim) buffer outside the dense
/// parameters, because their gradients are sparse. Field `f`'s rows are
/// `firstRow(field: f) ..< firstRow(field: f) + rows(field: f)`.
///
/// A categorical value becomes a row in one of two ways (`Indexing`):
/// - `.hashed` (raw Criteo TSV): the value is a 32-bit hash; h maps to id 0 when missing
///   (h == 0) and to 1 + h mod (rows - 1) otherwise, so "missing" is its own id;
/// - `.direct` (prepared datasets, `rec-dist prepare`): the value already is an id in
///   `0..<rows(field:)`, assigned by a vocabulary or by the same hashing at prepare time.
///
/// Rows start uniform in ±0.05, Keras's `Embedding` default.
public struct EmbeddingTables: Sendable, Equatable {
    /// How a categorical value is turned into a row of its field's table.
    public enum Indexing: String, Sendable, Codable {
        /// Values are raw 32-bit hashes, reduced modulo the table size (0 = missing).
        case hashed
        /// Values are ids below the table size.
        case direct
    }

    /// Rows of each field's table.
    public let rowsPerField: [Int]
    /// `offsets[f]` is field f's first row; `offsets[fields]` is `rowCount`.
    public let offsets: [Int]
    public let dim: Int
    public let indexing: Indexing
    public var fields: Int { rowsPerField.count }
    /// Rows over all fields.
    public var rowCount: Int { offsets[rowsPerField.count] }

    /// `fields` hashed tables of `buckets` rows each (the raw Criteo TSV path).
    public init(fields: Int, buckets: Int, dim: Int) {
        precondition(buckets >= 2 && dim >= 1 && fields >= 1)
        self.init(rowsPerField: Array(repeating: buckets, count: fields), dim: dim, indexing: .hashed)
    }

    /// One table per entry of `rowsPerField`.
    public init(rowsPerField: [Int], dim: Int, indexing: Indexing) {
        precondition(!rowsPerField.isEmpty && dim >= 1, "need at least one field and dim >= 1")
        precondition(rowsPerField.allSatisfy { $0 >= (indexing == .hashed ? 2 : 1) },
                     "every table needs at least \(indexing == .hashed ? 2 : 1) rows: \(rowsPerField)")
        self.rowsPerField = rowsPerField
        var offsets = [0]
        for rows in rowsPerField { offsets.append(offsets.last! + rows) }
        self.offsets = offsets
        self.dim = dim
        self.indexing = indexing
    }

    /// Rows of field `field`'s table.
    @inline(__always)
    public func rows(field: Int) -> Int { rowsPerField[field] }

    /// The global index of field `field`'s first row.
    @inline(__always)
    public func firstRow(field: Int) -> Int { offsets[field] }

    /// The field whose table holds global row `row`.
    public func field(ofRow row: Int) -> Int {
        precondition(row >= 0 && row < rowCount, "row \(row) out of range 0..<\(rowCount)")
        var f = 0
        while offsets[f + 1] <= row { f += 1 }
        return f
    }

    /// The global row for field `field`'s raw hash `hash` (`.hashed` tables).
    @inline(__always)
    public func row(field: Int, hash: UInt32) -> Int {
        let id = hash == 0 ? 0 : 1 + Int(hash % UInt32(rowsPerField[field] - 1))
        return offsets[field] + id
    }

    /// The global row for field `field`'s value `value`: a hash or an id, per `indexing`.
    @inline(__always)
    public func row(field: Int, value: UInt32) -> Int {
        switch indexing {
        case .hashed:
            return row(field: field, hash: value)
        case .direct:
            precondition(Int(value) < rowsPerField[field],
                         "id \(value) of categorical field \(field) is outside its table of \(rowsPerField[field]) rows")
            return offsets[field] + Int(value)
        }
    }

    public func initialize(_ table: UnsafeMutablePointer<Float>, rng: inout RNG) {
        for i in 0..<(rowCount * dim) { table[i] = rng.uniform(-0.05, 0.05) }
    }

    /// Gathers each example's rows into `out` at slots `firstSlot ..< firstSlot + fields` of a
    /// (batch, slots, dim) tensor, and records the rows in `rows`, (batch, fields).
    /// categorical: (batch, fields) hashes or ids, per `indexing`.
    @inline(__always)
    public func lookup(categorical: UnsafePointer<UInt32>, batch: Int, table: UnsafePointer<Float>,
                       out: UnsafeMutablePointer<Float>, slots: Int, firstSlot: Int,
                       rows: UnsafeMutablePointer<Int>) {
        let dim = self.dim, fields = self.fields, n = batch * fields
        // Rows first, then the copies, each row's cache line requested `ahead` copies early: the
        // table is far larger than the caches, so the copy loop waits on memory otherwise.
        for i in 0..<n {
            rows[i] = row(field: i % fields, value: categorical[i])
        }
        let ahead = 16
        for i in 0..<min(ahead, n) { rd_prefetch(table + rows[i] * dim) }
        var i = 0
        for b in 0..<batch {
            let base = out + (b * slots + firstSlot) * dim
            for f in 0..<fields {
                if i + ahead < n { rd_prefetch(table + rows[i + ahead] * dim) }
                let dst = base + f * dim, src = table + rows[i] * dim
                if dim == 16 {
                    SIMDAccess.store(SIMDAccess.load(src, as: SIMD16<Float>.self), dst)
                } else {
                    for k in 0..<dim { dst[k] = src[k] }
                }
                i += 1
            }
        }
    }
}

/// Unaligned SIMD loads and stores of Float rows.
@usableFromInline
enum SIMDAccess {
    @inline(__always) @usableFromInline
    static func load<V: SIMD & BitwiseCopyable>(_ p: UnsafePointer<Float>, as _: V.Type) -> V where V.Scalar == Float {
        UnsafeRawPointer(p).loadUnaligned(as: V.self)
    }
    @inline(__always) @usableFromInline
    static func store<V: SIMD & BitwiseCopyable>(_ v: V, _ p: UnsafeMutablePointer<Float>) where V.Scalar == Float {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self)
    }
    /// The sum of the 16 lanes, as a tree.
    @inline(__always) @usableFromInline
    static func sum(_ v: SIMD16<Float>) -> Float {
        let a = v.lowHalf + v.highHalf
        let b = a.lowHalf + a.highHalf
        return (b[0] + b[1]) + (b[2] + b[3])
    }
}

/// DLRM's pairwise dot interaction.
///
/// t: (batch, slots, dim), slot 0 the bottom MLP's output and slots 1... the embeddings.
/// out: (batch, dim + slots·(slots-1)/2) = [t[0], then t[i]·t[j] for i in 1..<slots, j in 0..<i],
/// the ordering of the DLRM reference implementation. Without `passthrough` (a model with no
/// dense inputs, hence no bottom MLP) every slot is an embedding and out is the pairs only:
/// (batch, slots·(slots-1)/2).
///
/// The kernels take slot 0 and slots 1... from separate places (`first`, `rest`), so the model
/// needs no concatenated copy; `forward(t:...)` and `backward(t:...)` are the single-tensor form.
/// `dim == 16` (the Criteo configuration) runs on 16-wide SIMD rows; other widths on plain loops.
/// `naiveForward` and `naiveBackward` are the reference kernels the tests hold them to.
public struct DotInteraction: Sendable {
    public let slots: Int
    public let dim: Int
    public var pairs: Int { slots * (slots - 1) / 2 }
    /// Whether slot 0 is copied to the front of the output.
    public let passthrough: Bool
    public var outputSize: Int { (passthrough ? dim : 0) + pairs }

    public init(slots: Int, dim: Int, passthrough: Bool = true) {
        precondition(slots >= 2 || (passthrough && slots >= 1), "an interaction needs 2 slots, or 1 with passthrough")
        self.slots = slots
        self.dim = dim
        self.passthrough = passthrough
    }

    /// Floats of scratch `forward` needs: the transposed slots of one example, (dim, paddedSlots).
    public var scratchCount: Int { dim * paddedSlots }
    var paddedSlots: Int { (slots + 15) / 16 * 16 }   // whole 16-lane groups

    /// t: (batch, slots, dim) -> out: (batch, outputSize).
    @inline(__always)
    public func forward(t: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, batch: Int) {
        forward(first: t, firstStride: slots * dim, rest: t + dim, restStride: slots * dim, out: out, batch: batch)
    }

    /// The split form, with its own scratch (allocates; the model passes scratch instead).
    public func forward(first: UnsafePointer<Float>, firstStride: Int, rest: UnsafePointer<Float>, restStride: Int,
                        out: UnsafeMutablePointer<Float>, batch: Int) {
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: scratchCount)
        defer { scratch.deallocate() }
        forward(first: first, firstStride: firstStride, rest: rest, restStride: restStride, out: out, batch: batch,
                scratch: scratch)
    }

    /// Slot 0 of example b at `first + b·firstStride` (dim values); slots 1..<slots of example b
    /// contiguous at `rest + b·restStride` ((slots - 1)·dim values). out: (batch, outputSize).
    /// scratch: `scratchCount` floats.
    ///
    /// Each dot product is summed over k in order, exactly as the naive kernel sums it (so the
    /// results are bit for bit the naive ones); the vectorization is across pairs instead: the
    /// example's slots are transposed to (dim, slots) in scratch, and for each i the products
    /// with 4 slots j at a time accumulate in one 4-lane vector.
    @inline(__always)
    public func forward(first: UnsafePointer<Float>, firstStride: Int, rest: UnsafePointer<Float>, restStride: Int,
                        out: UnsafeMutablePointer<Float>, batch: Int, scratch: UnsafeMutablePointer<Float>) {
        let width = outputSize, dim = self.dim, slots = self.slots, padded = paddedSlots
        let tT = scratch   // (dim, padded): tT[k * padded + j] = slot j's k-th value
        for k in 0..<dim { for j in slots..<padded { tT[k * padded + j] = 0 } }
        for b in 0..<batch {
            let t0 = first + b * firstStride, te = rest + b * restStride
            let o = out + b * width
            for k in 0..<dim { tT[k * padded] = t0[k] }
            for j in 1..<slots {
                let tj = te + (j - 1) * dim
                for k in 0..<dim { tT[k * padded + j] = tj[k] }
            }
            var p = 0
            if passthrough {
                for k in 0..<dim { o[k] = t0[k] }
                p = dim
            }
            for i in 1..<slots {
                let ti = te + (i - 1) * dim
                // Slots j < i, 16, 8 or 4 at a time: several independent accumulators per k, so
                // the k-ordered additions of different pairs overlap instead of waiting on each
                // other.
                var j = 0
                while i - j > 8 {
                    Self.dots(SIMD16<Float>.self, ti, tT + j, padded: padded, dim: dim, lanes: i - j, o + p + j)
                    j += 16
                }
                if i - j > 4 {
                    Self.dots(SIMD8<Float>.self, ti, tT + j, padded: padded, dim: dim, lanes: i - j, o + p + j)
                    j += 8
                }
                if i - j > 0 {
                    Self.dots(SIMD4<Float>.self, ti, tT + j, padded: padded, dim: dim, lanes: i - j, o + p + j)
                }
                p += i
            }
        }
    }

    /// The dot products of slot `ti` (dim values) with the `V.scalarCount` slots whose transposed
    /// values start at `column` (row k at `column + k·padded`), each summed over k in order; the
    /// first min(lanes, V.scalarCount) of them stored at `dst`.
    @inline(__always)
    static func dots<V: SIMD & BitwiseCopyable>(_: V.Type, _ ti: UnsafePointer<Float>, _ column: UnsafePointer<Float>, padded: Int,
                              dim: Int, lanes: Int, _ dst: UnsafeMutablePointer<Float>) where V.Scalar == Float {
        var acc = V(repeating: 0)
        for k in 0..<dim {
            acc += V(repeating: ti[k]) * SIMDAccess.load(column + k * padded, as: V.self)
        }
        store(acc, lanes: lanes, dst)
    }

    /// Stores the first min(lanes, width) lanes of `v` at `dst`.
    @inline(__always)
    static func store<V: SIMD>(_ v: V, lanes: Int, _ dst: UnsafeMutablePointer<Float>) where V.Scalar == Float {
        if lanes >= v.scalarCount {
            UnsafeMutableRawPointer(dst).storeBytes(of: v, as: V.self)
        } else {
            for l in 0..<lanes { dst[l] = v[l] }
        }
    }

    /// dOut: (batch, outputSize) -> dT: (batch, slots, dim), overwritten.
    @inline(__always)
    public func backward(t: UnsafePointer<Float>, dOut: UnsafePointer<Float>,
                         dT: UnsafeMutablePointer<Float>, batch: Int) {
        backward(first: t, firstStride: slots * dim, rest: t + dim, restStride: slots * dim, dOut: dOut,
                 dFirst: dT, dFirstStride: slots * dim, dRest: dT + dim, dRestStride: slots * dim, batch: batch)
    }

    /// The split form of `backward(t:dOut:dT:batch:)`: inputs as in the split `forward`; the
    /// gradient of slot 0 goes to `dFirst + b·dFirstStride`, of slots 1... to
    /// `dRest + b·dRestStride` (contiguous), both overwritten.
    ///
    /// For i = 1, 2, ...: dT_i = Σ_{j<i} g_ij t_j is written once (nothing has touched it yet),
    /// and every dT_j (j < i) gains g_ij t_i; so no zeroing pass is needed.
    @inline(__always)
    public func backward(first: UnsafePointer<Float>, firstStride: Int, rest: UnsafePointer<Float>, restStride: Int,
                         dOut: UnsafePointer<Float>, dFirst: UnsafeMutablePointer<Float>, dFirstStride: Int,
                         dRest: UnsafeMutablePointer<Float>, dRestStride: Int, batch: Int) {
        let width = outputSize, dim = self.dim, slots = self.slots
        for b in 0..<batch {
            let t0 = first + b * firstStride, te = rest + b * restStride
            let d0 = dFirst + b * dFirstStride, de = dRest + b * dRestStride
            let g = dOut + b * width
            var p = passthrough ? dim : 0
            if dim == 16 {
                let v0 = SIMDAccess.load(t0, as: SIMD16<Float>.self)
                // Slot 0 is also copied to the output directly (with passthrough).
                var acc0 = passthrough ? SIMDAccess.load(g, as: SIMD16<Float>.self) : SIMD16<Float>(repeating: 0)
                for i in 1..<slots {
                    let ti = SIMDAccess.load(te + (i - 1) * 16, as: SIMD16<Float>.self)
                    let g0 = g[p]
                    p += 1
                    var acc = g0 * v0
                    acc0 += g0 * ti
                    for j in 1..<i {
                        let gij = g[p]
                        p += 1
                        let dj = de + (j - 1) * 16
                        acc += gij * SIMDAccess.load(te + (j - 1) * 16, as: SIMD16<Float>.self)
                        SIMDAccess.store(SIMDAccess.load(dj, as: SIMD16<Float>.self) + gij * ti, dj)
                    }
                    SIMDAccess.store(acc, de + (i - 1) * 16)
                }
                SIMDAccess.store(acc0, d0)
            } else {
                for k in 0..<dim { d0[k] = passthrough ? g[k] : 0 }
                for i in 1..<slots {
                    let ti = te + (i - 1) * dim, di = de + (i - 1) * dim
                    for k in 0..<dim { di[k] = 0 }
                    for j in 0..<i {
                        let gij = g[p]
                        p += 1
                        let tj = j == 0 ? t0 : te + (j - 1) * dim
                        let dj = j == 0 ? d0 : de + (j - 1) * dim
                        for k in 0..<dim {
                            di[k] += gij * tj[k]
                            dj[k] += gij * ti[k]
                        }
                    }
                }
            }
        }
    }

    /// The reference forward: one dot product per pair, t: (batch, slots, dim).
    public func naiveForward(t: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, batch: Int) {
        let width = outputSize
        for b in 0..<batch {
            let tb = t + b * slots * dim
            let ob = out + b * width
            if passthrough { for k in 0..<dim { ob[k] = tb[k] } }
            forEachPair { i, j, p in
                var s: Float = 0
                for k in 0..<dim { s += tb[i * dim + k] * tb[j * dim + k] }
                ob[p] = s
            }
        }
    }

    /// The reference backward: dT zeroed, then each pair's two contributions.
    public func naiveBackward(t: UnsafePointer<Float>, dOut: UnsafePointer<Float>,
                              dT: UnsafeMutablePointer<Float>, batch: Int) {
        let width = outputSize
        dT.update(repeating: 0, count: batch * slots * dim)
        for b in 0..<batch {
            let tb = t + b * slots * dim, db = dT + b * slots * dim, gb = dOut + b * width
            if passthrough { for k in 0..<dim { db[k] = gb[k] } }
            forEachPair { i, j, p in
                let g = gb[p]
                for k in 0..<dim {
                    db[i * dim + k] += g * tb[j * dim + k]
                    db[j * dim + k] += g * tb[i * dim + k]
                }
            }
        }
    }

    /// The reference kernels' walk over the pairs in output order: `body(i, j, p)` for i in
    /// 1..<slots, j < i, where p is the pair's column in a row of out (after the passthrough's
    /// `dim` columns, when there are any).
    func forEachPair(_ body: (_ i: Int, _ j: Int, _ p: Int) -> Void) {
        var p = passthrough ? dim : 0
        for i in 1..<slots {
            for j in 0..<i {
                body(i, j, p)
                p += 1
            }
        }
    }
}

extension EmbeddingTables {
    /// The rows of a batch's examples: rows[b · fields + t] is table t's row for the value in
    /// column `columns[t]` of example b. categorical: (batch, width).
    @inline(__always)
    public func gatherRows(categorical: UnsafePointer<UInt32>, width: Int, columns: [Int], batch: Int,
                           rows: UnsafeMutablePointer<Int>) {
        let fields = self.fields
        precondition(columns.count == fields)
        for b in 0..<batch {
            for t in 0..<fields {
                rows[b * fields + t] = row(field: t, value: categorical[b * width + columns[t]])
            }
        }
    }
}
