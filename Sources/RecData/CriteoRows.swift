/// The layout of a Criteo click-log row (the Kaggle Display Advertising Challenge / Criteo 1TB
/// format): a 0/1 click label, 13 integer ("dense") features `I1`...`I13` and 26 categorical
/// features `C1`...`C26`, in that order, 40 fields in all.
public enum CriteoFormat {
    /// Number of integer features, `I1`...`I13`.
    public static let denseCount = 13
    /// Number of categorical features, `C1`...`C26`.
    public static let categoricalCount = 26
    /// Number of fields in a row: the label, then the dense, then the categorical features.
    public static let fieldCount = 1 + denseCount + categoricalCount

    /// The name of the field in 0-based `column`: `"label"`, `"I1"`...`"I13"`, `"C1"`...`"C26"`.
    public static func fieldName(_ column: Int) -> String {
        precondition(column >= 0 && column < fieldCount, "Criteo column \(column) out of range 0..<\(fieldCount)")
        if column == 0 { return "label" }
        if column <= denseCount { return "I\(column)" }
        return "C\(column - denseCount)"
    }
}

/// Criteo rows in memory, column-major by kind: one array per kind of field, rows in order.
///
/// - `labels[r]` is 0 or 1.
/// - `dense[r * 13 + j]` is feature `I(j+1)` of row `r`: the raw integer as a `Float` (not yet
///   log-transformed; an empty field is 0).
/// - `categorical[r * 26 + j]` is feature `C(j+1)` of row `r`: `hashCategorical` of the field's
///   bytes. An empty field is exactly 0 and a non-empty field is never 0, so a model can give
///   "missing" its own embedding row.
public struct CriteoRows: Sendable, Equatable {
    /// Number of rows.
    public var count: Int
    /// Click labels, 0 or 1; `count` values.
    public var labels: [Float]
    /// Integer features as floats, row-major `(count, 13)`.
    public var dense: [Float]
    /// Hashed categorical features, row-major `(count, 26)`; 0 means the field was empty.
    public var categorical: [UInt32]

    /// Creates an empty set of rows.
    public init() {
        count = 0
        labels = []
        dense = []
        categorical = []
    }

    /// Creates rows from arrays already in the layout above.
    public init(labels: [Float], dense: [Float], categorical: [UInt32]) {
        precondition(dense.count == labels.count * CriteoFormat.denseCount,
                     "dense has \(dense.count) values for \(labels.count) rows (expected \(labels.count * CriteoFormat.denseCount))")
        precondition(categorical.count == labels.count * CriteoFormat.categoricalCount,
                     "categorical has \(categorical.count) values for \(labels.count) rows (expected \(labels.count * CriteoFormat.categoricalCount))")
        self.count = labels.count
        self.labels = labels
        self.dense = dense
        self.categorical = categorical
    }

    /// Reserves room for `n` rows in every array.
    public mutating func reserveCapacity(_ n: Int) {
        labels.reserveCapacity(n)
        dense.reserveCapacity(n * CriteoFormat.denseCount)
        categorical.reserveCapacity(n * CriteoFormat.categoricalCount)
    }

    /// Appends `other`'s rows after these.
    public mutating func append(contentsOf other: CriteoRows) {
        count += other.count
        labels.append(contentsOf: other.labels)
        dense.append(contentsOf: other.dense)
        categorical.append(contentsOf: other.categorical)
    }

    /// The 32-bit hash of a categorical field's bytes: FNV-1a, then the MurmurHash3 `fmix32`
    /// finalizer (so that nearby strings spread over all bits, which matters when the caller
    /// reduces the hash modulo a table size).
    ///
    /// Empty bytes hash to 0; a non-empty field never does (a 0 hash is mapped to 1). The result
    /// depends only on the bytes, so it is the same on every run, rank and platform.
    @inlinable
    public static func hashCategorical(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        if bytes.isEmpty { return 0 }
        var h: UInt32 = 2_166_136_261
        for byte in bytes {
            h ^= UInt32(byte)
            h &*= 16_777_619
        }
        h = fmix32(h)
        return h == 0 ? 1 : h
    }

    /// The MurmurHash3 32-bit finalizer, a bijection on `UInt32`.
    @inlinable @inline(__always)
    static func fmix32(_ x: UInt32) -> UInt32 {
        var h = x
        h ^= h >> 16
        h &*= 0x85EB_CA6B
        h ^= h >> 13
        h &*= 0xC2B2_AE35
        h ^= h >> 16
        return h
    }
}
