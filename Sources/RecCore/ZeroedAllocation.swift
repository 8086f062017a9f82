extension UnsafeMutablePointer where Pointee: Numeric {
    /// A new buffer of `count` zeros; at least one element, so an empty buffer is still a
    /// valid pointer. Free it with `deallocate()`.
    public static func allocateZeroed(_ count: Int) -> UnsafeMutablePointer<Pointee> {
        let n = max(count, 1)
        let pointer = allocate(capacity: n)
        pointer.initialize(repeating: 0, count: n)
        return pointer
    }
}
