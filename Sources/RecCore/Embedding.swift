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
                       rows: UnsafeMutablePointer<Int32>) {
        let fields = self.fields
        for b in 0..<batch {
            for f in 0..<fields {
                let r = row(field: f, value: categorical[b * fields + f])
                rows[b * fields + f] = Int32(r)
                (out + (b * slots + firstSlot + f) * dim).update(from: table + r * dim, count: dim)
            }
        }
    }
}

/// DLRM's pairwise dot interaction.
///
/// t: (batch, slots, dim), slot 0 the bottom MLP's output and slots 1... the embeddings.
/// out: (batch, dim + slots·(slots-1)/2) = [t[0], then t[i]·t[j] for i in 1..<slots, j in 0..<i],
/// the ordering of the DLRM reference implementation. Without `passthrough` (a model with no
/// dense inputs, hence no bottom MLP) every slot is an embedding and out is the pairs only:
/// (batch, slots·(slots-1)/2).
public struct DotInteraction: Sendable {
    public let slots: Int
    public let dim: Int
    /// Whether slot 0 is copied to the front of the output.
    public let passthrough: Bool
    public var pairs: Int { slots * (slots - 1) / 2 }
    public var outputSize: Int { (passthrough ? dim : 0) + pairs }

    public init(slots: Int, dim: Int, passthrough: Bool = true) {
        precondition(slots >= 2 || (passthrough && slots >= 1), "an interaction needs 2 slots, or 1 with passthrough")
        self.slots = slots
        self.dim = dim
        self.passthrough = passthrough
    }

    @inline(__always)
    public func forward(t: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, batch: Int) {
        let width = outputSize
        for b in 0..<batch {
            let tb = t + b * slots * dim
            let ob = out + b * width
            var p = 0
            if passthrough {
                ob.update(from: tb, count: dim)
                p = dim
            }
            for i in 1..<slots {
                let ti = tb + i * dim
                for j in 0..<i {
                    let tj = tb + j * dim
                    var s: Float = 0
                    for k in 0..<dim { s += ti[k] * tj[k] }
                    ob[p] = s
                    p += 1
                }
            }
        }
    }

    /// dOut: (batch, outputSize) -> dT: (batch, slots, dim), overwritten.
    @inline(__always)
    public func backward(t: UnsafePointer<Float>, dOut: UnsafePointer<Float>,
                         dT: UnsafeMutablePointer<Float>, batch: Int) {
        let width = outputSize
        dT.update(repeating: 0, count: batch * slots * dim)
        for b in 0..<batch {
            let tb = t + b * slots * dim
            let db = dT + b * slots * dim
            let gb = dOut + b * width
            var p = 0
            if passthrough {
                for k in 0..<dim { db[k] = gb[k] }
                p = dim
            }
            for i in 1..<slots {
                let ti = tb + i * dim, dti = db + i * dim
                for j in 0..<i {
                    let g = gb[p]
                    p += 1
                    let tj = tb + j * dim, dtj = db + j * dim
                    for k in 0..<dim {
                        dti[k] += g * tj[k]
                        dtj[k] += g * ti[k]
                    }
                }
            }
        }
    }
}
