/// The hook for models whose score separates into a user side and an item side (two-tower
/// retrieval models): `logit(user, item) = dot(userVector(user fields), itemVector(item fields))`.
///
/// `rec-dist recommend` scores a whole catalog with any model by running the full forward pass
/// once per (user, item) row. A model that conforms to this protocol is used through an item
/// index instead: the item vectors of the whole catalog are computed once, and each user costs
/// one user-tower pass and one matrix-vector product over the index. A model with a score bias
/// or a temperature folds it into the vectors (an extra constant coordinate).
///
/// Both methods read the fields of `batch` that belong to their side (the dataset's field roles:
/// `user`/`user-feature` fields for the user tower, `item`/`item-feature` fields for the item
/// tower) and ignore the others.
public protocol ItemIndexScoring: AnyObject {
    /// Width of the user and item vectors.
    var towerWidth: Int { get }
    /// out: (batch.count, towerWidth), the item vector of each row's item-side fields.
    func itemVectors(_ batch: BatchView, parameters: UnsafePointer<Float>, embeddingTable: UnsafePointer<Float>,
                     out: UnsafeMutablePointer<Float>)
    /// out: (batch.count, towerWidth), the user vector of each row's user-side fields.
    func userVectors(_ batch: BatchView, parameters: UnsafePointer<Float>, embeddingTable: UnsafePointer<Float>,
                     out: UnsafeMutablePointer<Float>)
}

/// Two-tower: the item tower's outputs are the index, the user tower's the query.
extension TwoTowerModel: ItemIndexScoring {
    public var towerWidth: Int { config.factors }

    public func itemVectors(_ batch: BatchView, parameters: UnsafePointer<Float>, embeddingTable: UnsafePointer<Float>,
                            out: UnsafeMutablePointer<Float>) {
        let values = Self.columns(config.itemFields ?? [], of: batch)
        itemEmbeddings(items: values, count: batch.count, parameters: parameters, embeddingTable: embeddingTable, out: out)
    }

    public func userVectors(_ batch: BatchView, parameters: UnsafePointer<Float>, embeddingTable: UnsafePointer<Float>,
                            out: UnsafeMutablePointer<Float>) {
        let values = Self.columns(config.userFields ?? [], of: batch)
        userEmbeddings(users: values, count: batch.count, parameters: parameters, embeddingTable: embeddingTable, out: out)
    }

    /// The values of categorical columns `fields` of each row: (batch.count, fields.count).
    static func columns(_ fields: [Int], of batch: BatchView) -> [UInt32] {
        var values = [UInt32](repeating: 0, count: max(batch.count * fields.count, 1))
        for b in 0..<batch.count {
            for (t, f) in fields.enumerated() { values[b * fields.count + t] = batch.categorical[b * batch.categoricalWidth + f] }
        }
        return values
    }
}
