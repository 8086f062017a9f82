/// A batch of Criteo-shaped rows, borrowed from the loader's columnar arrays.
///
/// labels: (count), dense: (count, denseWidth) raw counts, categorical: (count, categoricalWidth)
/// 32-bit hashes of the raw values, 0 meaning "missing".
public struct BatchView {
    public var count: Int
    public var labels: UnsafePointer<Float>
    public var dense: UnsafePointer<Float>
    public var denseWidth: Int
    public var categorical: UnsafePointer<UInt32>
    public var categoricalWidth: Int

    public init(count: Int, labels: UnsafePointer<Float>, dense: UnsafePointer<Float>, denseWidth: Int,
                categorical: UnsafePointer<UInt32>, categoricalWidth: Int) {
        self.count = count
        self.labels = labels
        self.dense = dense
        self.denseWidth = denseWidth
        self.categorical = categorical
        self.categoricalWidth = categoricalWidth
    }
}

/// The embedding gradient of one batch, in sparse form: for each (example, field) the global row
/// it touched and the gradient of that row. Rows may repeat; the gradient sync coalesces them.
public final class SparseGradient {
    public let dim: Int
    public let capacity: Int
    /// Number of (row, gradient) pairs filled.
    public var count: Int = 0
    /// rows: (capacity) global embedding row indices (64-bit: the tables together may hold more
    /// than 2^31 rows).
    public let rows: UnsafeMutablePointer<Int>
    /// values: (capacity, dim).
    public let values: UnsafeMutablePointer<Float>

    public init(capacity: Int, dim: Int) {
        self.capacity = capacity
        self.dim = dim
        rows = .allocateZeroed(capacity)
        values = .allocateZeroed(capacity * dim)
    }

    deinit {
        rows.deallocate()
        values.deallocate()
    }

    /// Appends `other`'s pairs after this one's (gradient accumulation over micro-batches).
    @inline(__always)
    public func append(_ other: SparseGradient) {
        precondition(other.dim == dim && count + other.count <= capacity,
                     "SparseGradient.append: \(count) + \(other.count) pairs exceed the capacity \(capacity)")
        (rows + count).update(from: other.rows, count: other.count)
        (values + count * dim).update(from: other.values, count: other.count * dim)
        count += other.count
    }
}
