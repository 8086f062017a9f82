/// An open-addressing hash table from nonzero 64-bit keys to 32-bit values (linear probing,
/// power-of-two capacity, at most half full). Used to count categorical values and then to map
/// them to vocabulary ids; much faster than a `Dictionary` for this one job.
struct KeyTable: Sendable {
    private(set) var keys: [UInt64]
    private(set) var values: [UInt32]
    private(set) var count = 0
    private var mask: Int

    init(capacity: Int = 1024) {
        var size = 16
        while size < 2 * capacity { size <<= 1 }
        keys = [UInt64](repeating: 0, count: size)
        values = [UInt32](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always)
    static func slot(_ key: UInt64, _ mask: Int) -> Int {
        // Keys are already hashes, but fold the high bits in (Criteo keys are 32-bit).
        Int(truncatingIfNeeded: (key ^ (key >> 29)) &* 0x9E37_79B9_7F4A_7C15 >> 20) & mask
    }

    /// Adds `amount` to `key`'s value (inserting it at 0 first), saturating at `UInt32.max`.
    @inline(__always)
    mutating func add(_ key: UInt64, _ amount: UInt32 = 1) {
        precondition(key != 0)
        var i = KeyTable.slot(key, mask)
        while true {
            let k = keys[i]
            if k == key {
                let (sum, overflow) = values[i].addingReportingOverflow(amount)
                values[i] = overflow ? .max : sum
                return
            }
            if k == 0 {
                keys[i] = key
                values[i] = amount
                count += 1
                if 2 * count > keys.count { grow() }
                return
            }
            i = (i + 1) & mask
        }
    }

    /// Sets `key`'s value.
    mutating func set(_ key: UInt64, _ value: UInt32) {
        precondition(key != 0)
        var i = KeyTable.slot(key, mask)
        while true {
            let k = keys[i]
            if k == key { values[i] = value; return }
            if k == 0 {
                keys[i] = key
                values[i] = value
                count += 1
                if 2 * count > keys.count { grow() }
                return
            }
            i = (i + 1) & mask
        }
    }

    /// `key`'s value, or nil.
    @inline(__always)
    func find(_ key: UInt64) -> UInt32? {
        var i = KeyTable.slot(key, mask)
        while true {
            let k = keys[i]
            if k == key { return values[i] }
            if k == 0 { return nil }
            i = (i + 1) & mask
        }
    }

    /// Adds every entry of `other` into this table.
    mutating func merge(_ other: KeyTable) {
        for i in other.keys.indices where other.keys[i] != 0 { add(other.keys[i], other.values[i]) }
    }

    /// The (key, value) entries, in no particular order.
    var entries: [(key: UInt64, value: UInt32)] {
        keys.indices.compactMap { keys[$0] == 0 ? nil : (keys[$0], values[$0]) }
    }

    private mutating func grow() {
        let oldKeys = keys, oldValues = values
        keys = [UInt64](repeating: 0, count: oldKeys.count * 2)
        values = [UInt32](repeating: 0, count: oldKeys.count * 2)
        mask = keys.count - 1
        count = 0
        for i in oldKeys.indices where oldKeys[i] != 0 { set(oldKeys[i], oldValues[i]) }
    }
}

/// How the categorical values of a prepared dataset become ids.
public enum CategoricalEncoding: Sendable, Equatable, Codable {
    /// `M` ids per field: 0 for a missing value, `1 + h mod (M - 1)` for a value with 32-bit hash h
    /// (the same ids `train` computes from raw Criteo TSV with `--hash-buckets M`).
    case hash(buckets: Int)
    /// A vocabulary per field from the training split: values seen at least `minCount` times get
    /// ids `2...` (most frequent first, ties by key), 0 is a missing value and 1 is shared by
    /// every rarer or unseen value (out of vocabulary).
    case vocabulary(minCount: Int)
}

/// One field's vocabulary: a map from value keys to ids, built from frequency counts.
struct FieldVocabulary: Sendable {
    /// Keys with count >= minCount -> ids 2...
    let ids: KeyTable
    /// Ids in use: 2 + kept values.
    let size: Int
    /// Distinct values counted.
    let distinct: Int

    static let missingID: UInt32 = 0
    static let outOfVocabularyID: UInt32 = 1

    /// Keeps the values counted at least `minCount` times, most frequent first (ties by key, so
    /// the result depends only on the counts).
    init(counts: KeyTable, minCount: Int) {
        var kept = counts.entries.filter { Int($0.value) >= minCount }
        kept.sort { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        var table = KeyTable(capacity: max(kept.count, 16))
        for (i, entry) in kept.enumerated() { table.set(entry.key, UInt32(2 + i)) }
        ids = table
        size = 2 + kept.count
        distinct = counts.count
    }

    /// The id of `key` (0 = missing).
    @inline(__always)
    func id(_ key: UInt64) -> UInt32 {
        if key == 0 { return FieldVocabulary.missingID }
        return ids.find(key) ?? FieldVocabulary.outOfVocabularyID
    }
}

/// `a mod d` for a fixed 32-bit divisor by multiplication (Lemire, Kaser and Kurz, "Faster
/// remainder by direct computation", 2019): exact for every 32-bit `a` and `d > 0`, and several
/// times faster than a division.
struct FastModulo: Sendable {
    let divisor: UInt64
    let multiplier: UInt64

    init(_ d: UInt32) {
        precondition(d > 0)
        divisor = UInt64(d)
        multiplier = (UInt64.max / UInt64(d)) &+ 1
    }

    @inline(__always)
    func remainder(_ a: UInt32) -> UInt32 {
        let low = multiplier &* UInt64(a)
        return UInt32(truncatingIfNeeded: low.multipliedFullWidth(by: divisor).high)
    }
}

/// Maps one row's categorical keys to ids, per the encoding.
struct CategoricalMapper: Sendable {
    let encoding: CategoricalEncoding
    let vocabularies: [FieldVocabulary]
    /// Ids per field (the embedding table sizes).
    let sizes: [Int]

    /// `buckets - 1`, for the hashed ids `1 + h mod (buckets - 1)`.
    let modulo: FastModulo

    init(hashBuckets: Int, fields: Int) {
        encoding = .hash(buckets: hashBuckets)
        vocabularies = []
        sizes = Array(repeating: hashBuckets, count: fields)
        modulo = FastModulo(UInt32(hashBuckets - 1))
    }

    init(vocabularies: [FieldVocabulary], minCount: Int) {
        encoding = .vocabulary(minCount: minCount)
        self.vocabularies = vocabularies
        sizes = vocabularies.map(\.size)
        modulo = FastModulo(1)
    }

    /// keys: (fields) -> ids: (fields).
    @inline(__always)
    func map(_ keys: UnsafePointer<UInt64>, into ids: UnsafeMutablePointer<UInt32>) {
        switch encoding {
        case .hash:
            for f in 0..<sizes.count {
                let h = UInt32(truncatingIfNeeded: keys[f])
                ids[f] = h == 0 ? 0 : 1 + modulo.remainder(h)
            }
        case .vocabulary:
            for f in 0..<sizes.count { ids[f] = vocabularies[f].id(keys[f]) }
        }
    }
}
