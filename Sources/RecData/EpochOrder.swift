import RecCore

/// A seeded permutation of `0..<count`, computed index by index with no table: a 4-round Feistel
/// network on the smallest even number of bits covering `count`, walking the cycle until the
/// value falls back into range (the domain is less than 4 x count, so that takes under 4 steps
/// on average). O(1) memory, whatever the number of rows.
public struct FeistelPermutation: Sendable, Equatable {
    public let count: Int
    let halfBits: UInt64
    let halfMask: UInt64
    let k0: UInt64, k1: UInt64, k2: UInt64, k3: UInt64

    public init(count: Int, seed: UInt64) {
        precondition(count >= 0)
        self.count = count
        var bits: UInt64 = 2
        while (1 << bits) < UInt64(max(count, 1)) { bits += 2 }
        halfBits = bits / 2
        halfMask = (1 << (bits / 2)) - 1
        var rng = RNG(seed: seed, stream: 0xFE15_7E1)
        k0 = rng.next()
        k1 = rng.next()
        k2 = rng.next()
        k3 = rng.next()
    }

    @inline(__always)
    func round(_ x: UInt64, _ key: UInt64) -> UInt64 {
        var z = (x ^ key) &* 0x9E37_79B9_7F4A_7C15
        z ^= z >> 29
        z = z &* 0xBF58_476D_1CE4_E5B9
        z ^= z >> 32
        return z & halfMask
    }

    @inline(__always)
    func encrypt(_ x: UInt64) -> UInt64 {
        var left = x >> halfBits, right = x & halfMask
        (left, right) = (right, left ^ round(right, k0))
        (left, right) = (right, left ^ round(right, k1))
        (left, right) = (right, left ^ round(right, k2))
        (left, right) = (right, left ^ round(right, k3))
        return left << halfBits | right
    }

    /// The image of `index` (in `0..<count`).
    @inline(__always)
    public func apply(_ index: Int) -> Int {
        precondition(index >= 0 && index < count, "index \(index) out of range 0..<\(count)")
        var x = encrypt(UInt64(index))
        while x >= UInt64(count) { x = encrypt(x) }
        return Int(x)
    }
}

/// The order in which each epoch visits the rows of a training split: position `p` of epoch `e`
/// is row `row(p)` of an `EpochPermutation`. The order depends only on (rows, seed, epoch,
/// window), never on the number of ranks, so with the same global batch every world size trains
/// on the same sequence of global batches: ranks then take block-cyclic slices of the positions
/// (`BlockCyclicShard` over `0..<rows`).
public struct EpochOrder: Sendable, Equatable {
    /// Rows of the split.
    public let rows: Int
    /// Whether epochs are shuffled; without, position p is row p.
    public let shuffle: Bool
    public let seed: UInt64
    /// 0: every epoch is a uniform permutation of all rows. W > 0: the rows are cut into windows of
    /// W consecutive rows; an epoch visits the windows in a random order and each window's rows in
    /// a random order, so reads stay inside one window at a time (a dataset far larger than memory
    /// is then read window by window instead of page by page at random).
    public let window: Int

    public init(rows: Int, shuffle: Bool, seed: UInt64, window: Int = 0) {
        precondition(rows >= 0 && window >= 0)
        self.rows = rows
        self.shuffle = shuffle
        self.seed = seed
        self.window = window
    }

    /// The permutation of epoch `epoch`.
    public func epoch(_ epoch: Int) -> EpochPermutation { EpochPermutation(order: self, epoch: epoch) }
}

/// One epoch's order of the rows (see `EpochOrder`).
public struct EpochPermutation: Sendable {
    let rows: Int
    let shuffle: Bool
    let window: Int
    let seed: UInt64
    let whole: FeistelPermutation?
    let windows: FeistelPermutation?
    /// With windows: the position (in visiting order) of the last, possibly short, window.
    let lastWindowSlot: Int
    let lastWindowRows: Int

    init(order: EpochOrder, epoch: Int) {
        rows = order.rows
        shuffle = order.shuffle
        window = order.window
        seed = SplitMix64.mix(order.seed ^ SplitMix64.mix(UInt64(epoch) &+ 0x5F1E))
        if !order.shuffle || order.rows == 0 {
            whole = nil
            windows = nil
            lastWindowSlot = 0
            lastWindowRows = 0
        } else if order.window == 0 || order.window >= order.rows {
            whole = FeistelPermutation(count: order.rows, seed: seed)
            windows = nil
            lastWindowSlot = 0
            lastWindowRows = 0
        } else {
            whole = nil
            let count = (order.rows + order.window - 1) / order.window
            let w = FeistelPermutation(count: count, seed: seed)
            windows = w
            var slot = 0
            while w.apply(slot) != count - 1 { slot += 1 }
            lastWindowSlot = slot
            lastWindowRows = order.rows - (count - 1) * order.window
        }
    }

    /// The row at position `position` of the epoch.
    @inline(__always)
    public func row(_ position: Int) -> Int {
        if !shuffle { return position }
        if let whole { return whole.apply(position) }
        let windows = self.windows!
        // Visiting order: full windows, with the short last window at slot `lastWindowSlot`.
        let before = lastWindowSlot * window
        let slot: Int, offset: Int
        if position < before {
            slot = position / window
            offset = position - slot * window
        } else if position < before + lastWindowRows {
            slot = lastWindowSlot
            offset = position - before
        } else {
            let rest = position - before - lastWindowRows
            slot = lastWindowSlot + 1 + rest / window
            offset = rest % window
        }
        let w = windows.apply(slot)
        let size = w == windows.count - 1 ? lastWindowRows : window
        let inner = FeistelPermutation(count: size, seed: seed ^ SplitMix64.mix(UInt64(w) &+ 1))
        return w * window + inner.apply(offset)
    }
}
