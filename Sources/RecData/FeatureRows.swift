import RecCore

/// Rows of any shape in owned, stable, columnar storage, for batches and evaluation sets:
/// labels: (capacity), dense: (capacity, denseWidth), categorical: (capacity, categoricalWidth).
/// The first `count` rows are valid. The storage never moves, so `BatchView`s into it stay valid
/// for the buffer's lifetime.
public final class FeatureRowsBuffer: @unchecked Sendable {
    public let capacity: Int
    public let denseWidth: Int
    public let categoricalWidth: Int
    /// Rows filled.
    public var count: Int = 0
    public let labels: UnsafeMutablePointer<Float>
    public let dense: UnsafeMutablePointer<Float>
    public let categorical: UnsafeMutablePointer<UInt32>

    public init(capacity: Int, denseWidth: Int, categoricalWidth: Int) {
        precondition(capacity >= 0 && denseWidth >= 0 && categoricalWidth >= 0)
        self.capacity = capacity
        self.denseWidth = denseWidth
        self.categoricalWidth = categoricalWidth
        labels = .allocateZeroed(capacity)
        dense = .allocateZeroed(capacity * denseWidth)
        categorical = .allocateZeroed(capacity * categoricalWidth)
    }

    /// A copy of Criteo rows (13 dense, 26 categorical hashes).
    public convenience init(_ rows: CriteoRows) {
        self.init(capacity: rows.count, denseWidth: CriteoFormat.denseCount, categoricalWidth: CriteoFormat.categoricalCount)
        count = rows.count
        rows.labels.withUnsafeBufferPointer { labels.update(from: $0.baseAddress!, count: rows.count) }
        rows.dense.withUnsafeBufferPointer { dense.update(from: $0.baseAddress!, count: $0.count) }
        rows.categorical.withUnsafeBufferPointer { categorical.update(from: $0.baseAddress!, count: $0.count) }
    }

    deinit {
        labels.deallocate()
        dense.deallocate()
        categorical.deallocate()
    }

    /// Rows `range` as a batch.
    @inline(__always)
    public func view(_ range: Range<Int>) -> BatchView {
        precondition(range.lowerBound >= 0 && range.upperBound <= count)
        return BatchView(count: range.count, labels: labels + range.lowerBound,
                         dense: dense + range.lowerBound * denseWidth, denseWidth: denseWidth,
                         categorical: categorical + range.lowerBound * categoricalWidth,
                         categoricalWidth: categoricalWidth)
    }

    /// All valid rows as a batch.
    public var view: BatchView { view(0..<count) }

    /// The labels of the valid rows.
    public var labelArray: [Float] { Array(UnsafeBufferPointer(start: labels, count: count)) }
}
