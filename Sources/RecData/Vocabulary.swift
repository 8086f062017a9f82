/// An open-addressing hash table from nonzero 64-bit keys to 32-bit values (linear probing,
/// power-of-two capacity, at most half full), each key beside its value so a lookup costs one
/// cache miss. Used to count categorical values and then to map them to vocabulary ids; much
/// faster than a `Dictionary` for this one job.
struct KeyTable: Sendable {
    struct Slot: Sendable {
        var key: UInt64
        var value: UInt32
    }

    private(set) var slots: [Slot]
    private(set) var count = 0
    private(set) var mask: Int

    init(capacity: Int = 1024) {
        var size = 16
        while size < 2 * capacity { size <<= 1 }
        slots = [Slot](repeating: Slot(key: 0, value: 0), count: size)
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
        let inserted: Bool = slots.withUnsafeMutableBufferPointer { table in
            var i = KeyTable.slot(key, mask)
            while true {
                let k = table[i].key
                if k == key {
                    let (sum, overflow) = table[i].value.addingReportingOverflow(amount)
                    table[i].value = overflow ? .max : sum
                    return false
                }
                if k == 0 {
                    table[i] = Slot(key: key, value: amount)
                    return true
                }
                i = (i + 1) & mask
            }
        }
        if inserted {
            count += 1
            if 2 * count > slots.count { grow() }
        }
    }

    /// Sets `key`'s value.
    mutating func set(_ key: UInt64, _ value: UInt32) {
        precondition(key != 0)
        var i = KeyTable.slot(key, mask)
        while true {
            let k = slots[i].key
            if k == key { slots[i].value = value; return }
            if k == 0 {
                slots[i] = Slot(key: key, value: value)
                count += 1
                if 2 * count > slots.count { grow() }
                return
            }
            i = (i + 1) & mask
        }
    }

    /// `key`'s value, or nil.
    @inline(__always)
    func find(_ key: UInt64) -> UInt32? {
        slots.withUnsafeBufferPointer { KeyTable.find(key, in: $0.baseAddress!, mask: mask) }
    }

    /// `key`'s value in a table's slots, or nil.
    @inline(__always)
    static func find(_ key: UInt64, in table: UnsafePointer<Slot>, mask: Int) -> UInt32? {
        var i = slot(key, mask)
        while true {
            let k = table[i].key
            if k == key { return table[i].value }
            if k == 0 { return nil }
            i = (i + 1) & mask
        }
    }

    /// Adds every entry of `other` into this table.
    mutating func merge(_ other: KeyTable) {
        for s in other.slots where s.key != 0 { add(s.key, s.value) }
    }

    /// The (key, value) entries, in no particular order.
    var entries: [(key: UInt64, value: UInt32)] {
        slots.compactMap { $0.key == 0 ? nil : ($0.key, $0.value) }
    }

    private mutating func grow() {
        let old = slots
        slots = [Slot](repeating: Slot(key: 0, value: 0), count: old.count * 2)
        mask = slots.count - 1
        count = 0
        for s in old where s.key != 0 { set(s.key, s.value) }
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

    /// A stored vocabulary: `entries` map keys to ids `2 ..< 2 + entries.count`.
    init(entries: [(key: UInt64, value: UInt32)], distinct: Int) {
        var table = KeyTable(capacity: max(entries.count, 16))
        for entry in entries { table.set(entry.key, entry.value) }
        ids = table
        size = 2 + entries.count
        self.distinct = distinct
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
    /// Every field's vocabulary slots, one after another, with each field's start and mask: one
    /// flat array, so the per-row lookups touch no array headers or reference counts.
    private let slots: [KeyTable.Slot]
    private let starts: [Int]
    private let masks: [Int]

    init(hashBuckets: Int, fields: Int) {
        encoding = .hash(buckets: hashBuckets)
        vocabularies = []
        sizes = Array(repeating: hashBuckets, count: fields)
        modulo = FastModulo(UInt32(hashBuckets - 1))
        slots = []
        starts = []
        masks = []
    }

    init(vocabularies: [FieldVocabulary], minCount: Int) {
        encoding = .vocabulary(minCount: minCount)
        self.vocabularies = vocabularies
        sizes = vocabularies.map(\.size)
        modulo = FastModulo(1)
        var slots: [KeyTable.Slot] = [], starts: [Int] = [], masks: [Int] = []
        for v in vocabularies {
            starts.append(slots.count)
            masks.append(v.ids.mask)
            slots += v.ids.slots
        }
        self.slots = slots
        self.starts = starts
        self.masks = masks
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
            slots.withUnsafeBufferPointer { table in
                starts.withUnsafeBufferPointer { starts in
                    masks.withUnsafeBufferPointer { masks in
                        // Every field's first probe is a likely cache miss: issue all of them
                        // before using any (independent loads overlap), then finish the probes.
                        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: starts.count) { first in
                            for f in 0..<starts.count {
                                first[f] = table[starts[f] + KeyTable.slot(keys[f], masks[f])].key
                            }
                            for f in 0..<starts.count {
                                let key = keys[f]
                                if key == 0 {
                                    ids[f] = FieldVocabulary.missingID
                                } else if first[f] == 0 {
                                    ids[f] = FieldVocabulary.outOfVocabularyID
                                } else {
                                    ids[f] = KeyTable.find(key, in: table.baseAddress! + starts[f], mask: masks[f])
                                        ?? FieldVocabulary.outOfVocabularyID
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Frequency counts of every categorical field's values, in one open-addressing table per field
/// (keys beside their counts), for the first pass of a vocabulary. A row's fields are counted
/// together: their first probes are issued before any is used, so the cache misses overlap.
final class FieldCounters {
    private var tables: [UnsafeMutablePointer<KeyTable.Slot>]
    private var masks: [Int]
    private(set) var counts: [Int]

    init(fields: Int) {
        tables = (0..<fields).map { _ in
            let t = UnsafeMutablePointer<KeyTable.Slot>.allocate(capacity: 1024)
            t.initialize(repeating: KeyTable.Slot(key: 0, value: 0), count: 1024)
            return t
        }
        masks = Array(repeating: 1023, count: fields)
        counts = Array(repeating: 0, count: fields)
    }

    deinit {
        for t in tables { t.deallocate() }
    }

    /// Counts one row's keys: (fields); 0 (missing) is not counted.
    @inline(__always)
    func add(_ keys: UnsafePointer<UInt64>) {
        let fields = tables.count
        tables.withUnsafeBufferPointer { tables in
            masks.withUnsafeBufferPointer { masks in
                withUnsafeTemporaryAllocation(of: UInt64.self, capacity: fields) { first in
                    for f in 0..<fields { first[f] = tables[f][KeyTable.slot(keys[f], masks[f])].key }
                }
            }
        }
        for f in 0..<fields where keys[f] != 0 { add(keys[f], field: f) }
    }

    @inline(__always)
    private func add(_ key: UInt64, field f: Int) {
        let table = tables[f], mask = masks[f]
        var i = KeyTable.slot(key, mask)
        while true {
            let k = table[i].key
            if k == key {
                if table[i].value < .max { table[i].value += 1 }
                return
            }
            if k == 0 {
                table[i] = KeyTable.Slot(key: key, value: 1)
                counts[f] += 1
                if 2 * counts[f] > mask + 1 { grow(f) }
                return
            }
            i = (i + 1) & mask
        }
    }

    private func grow(_ f: Int) {
        let old = tables[f], oldSize = masks[f] + 1
        let size = oldSize * 2, mask = size - 1
        let table = UnsafeMutablePointer<KeyTable.Slot>.allocate(capacity: size)
        table.initialize(repeating: KeyTable.Slot(key: 0, value: 0), count: size)
        for j in 0..<oldSize where old[j].key != 0 {
            var i = KeyTable.slot(old[j].key, mask)
            while table[i].key != 0 { i = (i + 1) & mask }
            table[i] = old[j]
        }
        old.deallocate()
        tables[f] = table
        masks[f] = mask
    }

    /// Field `f`'s counts as a table.
    func table(_ f: Int) -> KeyTable {
        var t = KeyTable(capacity: counts[f])
        for j in 0...masks[f] where tables[f][j].key != 0 { t.add(tables[f][j].key, tables[f][j].value) }
        return t
    }
}
