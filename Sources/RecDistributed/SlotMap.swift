import RecCore

/// An open-addressing map from non-negative integer keys to 32-bit slots, allocated once for
/// up to `capacity` keys and cleared in time proportional to the keys it holds: the per-step
/// deduplication of embedding rows, which must not allocate.
final class SlotMap {
    private(set) var capacity: Int
    private var mask: Int
    private var keys: UnsafeMutablePointer<Int>      // -1: empty
    private var slots: UnsafeMutablePointer<Int32>
    private var filled: UnsafeMutablePointer<Int32>  // positions in use, for `clear`
    /// Keys held.
    private(set) var count = 0

    init(capacity: Int) {
        self.capacity = max(capacity, 1)
        (mask, keys, slots, filled) = Self.allocate(self.capacity)
    }

    deinit { release() }

    private static func allocate(_ capacity: Int)
        -> (Int, UnsafeMutablePointer<Int>, UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) {
        var positions = 16
        while positions < 2 * capacity { positions <<= 1 }
        let keys = UnsafeMutablePointer<Int>.allocate(capacity: positions)
        keys.initialize(repeating: -1, count: positions)
        let slots = UnsafeMutablePointer<Int32>.allocate(capacity: positions)
        slots.initialize(repeating: 0, count: positions)
        let filled = UnsafeMutablePointer<Int32>.allocate(capacity: capacity)
        filled.initialize(repeating: 0, count: capacity)
        return (positions - 1, keys, slots, filled)
    }

    private func release() {
        keys.deallocate()
        slots.deallocate()
        filled.deallocate()
    }

    /// Makes room for `capacity` keys; only while empty (a step sizes it before filling it).
    func reserve(_ capacity: Int) {
        precondition(count == 0, "SlotMap.reserve on a map in use")
        guard capacity > self.capacity else { return }
        release()
        self.capacity = capacity
        (mask, keys, slots, filled) = Self.allocate(capacity)
    }

    /// The slot of `key`, inserting it with slot `next` if absent (`inserted` says which).
    @inline(__always)
    func slot(for key: Int, orInsert next: Int32) -> (slot: Int32, inserted: Bool) {
        var p = Int(truncatingIfNeeded: SplitMix64.mix(UInt64(key))) & mask
        while true {
            let k = keys[p]
            if k == key { return (slots[p], false) }
            if k < 0 {
                precondition(count < capacity, "SlotMap: more than \(capacity) keys")
                keys[p] = key
                slots[p] = next
                filled[count] = Int32(p)
                count += 1
                return (next, true)
            }
            p = (p + 1) & mask
        }
    }

    /// Removes every key.
    @inline(__always)
    func clear() {
        for i in 0..<count { keys[Int(filled[i])] = -1 }
        count = 0
    }
}

/// A buffer that grows (without keeping its contents) when a step needs more than it has, and is
/// otherwise reused: sized by what the other ranks send, which is known only at run time.
final class GrowableBuffer<Element> {
    private(set) var pointer: UnsafeMutablePointer<Element>
    private(set) var capacity: Int

    init(capacity: Int) {
        self.capacity = max(capacity, 1)
        pointer = .allocate(capacity: self.capacity)
    }

    deinit { pointer.deallocate() }

    /// Makes room for `count` elements, discarding the contents if it must grow.
    @inline(__always)
    func reserve(_ count: Int) {
        guard count > capacity else { return }
        pointer.deallocate()
        capacity = max(count, capacity * 3 / 2)
        pointer = .allocate(capacity: capacity)
    }
}
