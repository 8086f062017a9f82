/// Hashed embedding tables for the categorical fields, one table of `buckets` rows per field,
/// all stored in one flat (fields · buckets, dim) buffer outside the dense parameters, because
/// their gradients are sparse.
///
/// A raw value hash h maps to id 0 when missing (h == 0) and to 1 + h mod (buckets - 1)
/// otherwise, so "missing" is its own id. Rows start uniform in ±0.05, Keras's `Embedding` default.
public struct EmbeddingTables: Sendable {
    public let fields: Int
    public let buckets: Int
    public let dim: Int
    public var rowCount: Int { fields * buckets }

    public init(fields: Int, buckets: Int, dim: Int) {
        precondition(buckets >= 2 && dim >= 1 && fields >= 1)
        self.fields = fields
        self.buckets = buckets
        self.dim = dim
    }

    /// The global row for field `field`'s raw hash `hash`.
    @inline(__always)
    public func row(field: Int, hash: UInt32) -> Int {
        let id = hash == 0 ? 0 : 1 + Int(hash % UInt32(buckets - 1))
        return field * buckets + id
    }

    public func initialize(_ table: UnsafeMutablePointer<Float>, rng: inout RNG) {
        for i in 0..<(rowCount * dim) { table[i] = rng.uniform(-0.05, 0.05) }
    }

    /// Gathers each example's rows into `out` at slots `firstSlot ..< firstSlot + fields` of a
    /// (batch, slots, dim) tensor, and records the rows in `rows`, (batch, fields).
    /// categorical: (batch, fields) hashes.
    @inline(__always)
    public func lookup(categorical: UnsafePointer<UInt32>, batch: Int, table: UnsafePointer<Float>,
                       out: UnsafeMutablePointer<Float>, slots: Int, firstSlot: Int,
                       rows: UnsafeMutablePointer<Int32>) {
        for b in 0..<batch {
            for f in 0..<fields {
                let r = row(field: f, hash: categorical[b * fields + f])
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
/// the ordering of the DLRM reference implementation.
public struct DotInteraction: Sendable {
    public let slots: Int
    public let dim: Int
    public var pairs: Int { slots * (slots - 1) / 2 }
    public var outputSize: Int { dim + pairs }

    public init(slots: Int, dim: Int) {
        self.slots = slots
        self.dim = dim
    }

    @inline(__always)
    public func forward(t: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, batch: Int) {
        let width = outputSize
        for b in 0..<batch {
            let tb = t + b * slots * dim
            let ob = out + b * width
            ob.update(from: tb, count: dim)
            var p = dim
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
            for k in 0..<dim { db[k] = gb[k] }
            var p = dim
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
