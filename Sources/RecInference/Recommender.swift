import Foundation
import RecCheckpoint
import RecCore
import RecData
import RecTrainer

/// The item catalog of a prepared dataset with user and item fields, for `recommend`: every
/// distinct item id of the training split with one representative row (its item-side fields),
/// each user's first training row (its user-side and context fields), what each user has seen,
/// item popularity, and the names and metadata `prepare` stored (`users.tsv`, `items.tsv`).
public final class Catalog {
    public let dataset: PreparedDataset
    public let userField: Int
    public let itemField: Int
    /// Item ids of the catalog, ascending (the out-of-vocabulary id 1 and missing 0 excluded).
    public let itemIDs: [UInt32]
    /// One row per catalog item (in `itemIDs` order): the item's first training row.
    public let itemRows: FeatureRowsBuffer
    /// Positive training rows per catalog item (for the popular-items fallback).
    public let popularity: [Int]
    /// Categorical and dense fields on the item side (roles `item` and `item-feature`).
    public let itemSideCategorical: [Int]
    public let itemSideDense: [Int]
    /// Training row of each user's first row, by user id.
    public let userRow: [UInt32: Int]
    /// Items each user has seen in the training split: all of them, or only the positives when
    /// the training split has sampled negatives (`prepare --negatives`: those were never seen).
    public let seen: [UInt32: Set<UInt32>]
    /// Names: user value -> id (`users.tsv`), item id -> (value, title, genres) (`items.tsv`).
    public let userIDs: [String: UInt32]
    public let items: [UInt32: ItemInfo]
    let train: PreparedSplitReader

    public struct ItemInfo: Sendable {
        public var name: String
        public var title: String
        public var genres: String
    }

    /// Reads the catalog of `dataset` (one pass over its training split).
    public init(dataset: PreparedDataset) throws {
        self.dataset = dataset
        let schema = dataset.manifest.schema
        let manifestPath = (dataset.directory as NSString).appendingPathComponent(PreparedDataset.manifestName)
        guard let userName = schema.userField, let itemName = schema.itemField,
              let u = schema.categorical.firstIndex(where: { $0.name == userName }),
              let it = schema.categorical.firstIndex(where: { $0.name == itemName }) else {
            throw DataError(file: manifestPath, message: "the dataset has no user and item fields, so there is no catalog to recommend from",
                            hint: "recommend needs interaction data (movielens, taobao, amazon, diginetica, or a csv schema with user and item roles)")
        }
        userField = u
        itemField = it
        itemSideCategorical = schema.categorical.indices.filter { schema.categorical[$0].role == .item || schema.categorical[$0].role == .itemFeature }
        itemSideDense = schema.dense.indices.filter { schema.dense[$0].role == .item || schema.dense[$0].role == .itemFeature }
        train = try dataset.open(split: "train")
        try train.verifyAll()
        let sampledNegatives = dataset.manifest.options.negatives > 0   // in the training split
        var firstRow: [UInt32: Int] = [:]
        var counts: [UInt32: Int] = [:]
        var userRow: [UInt32: Int] = [:]
        var seen: [UInt32: Set<UInt32>] = [:]
        for r in 0..<train.header.rows {
            let ids = train.categorical(r)
            let item = ids[it], user = ids[u], positive = train.label(r) > 0
            if item >= 2 {
                if firstRow[item] == nil { firstRow[item] = r }
                counts[item, default: 0] += positive ? 1 : 0
            }
            if user >= 2 {
                if userRow[user] == nil { userRow[user] = r }
                if positive || !sampledNegatives { seen[user, default: []].insert(item) }
            }
        }
        itemIDs = firstRow.keys.sorted()
        itemRows = FeatureRowsBuffer(capacity: itemIDs.count, denseWidth: dataset.denseCount, categoricalWidth: dataset.categoricalCount)
        for (k, item) in itemIDs.enumerated() { train.copyRow(firstRow[item]!, to: itemRows, slot: k) }
        itemRows.count = itemIDs.count
        popularity = itemIDs.map { counts[$0] ?? 0 }
        self.userRow = userRow
        self.seen = seen
        train.releaseResidentPages()

        // Names, when prepare stored them.
        func table(_ name: String) -> [[Substring]]? {
            let path = (dataset.directory as NSString).appendingPathComponent(name)
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
            return text.split(separator: "\n").dropFirst().map { $0.split(separator: "\t", omittingEmptySubsequences: false) }
        }
        var userIDs: [String: UInt32] = [:]
        for fields in table("users.tsv") ?? [] where fields.count >= 2 {
            if let id = UInt32(fields[0]) { userIDs[String(fields[1])] = id }
        }
        var items: [UInt32: ItemInfo] = [:]
        for fields in table("items.tsv") ?? [] where fields.count >= 4 {
            if let id = UInt32(fields[0]), id >= 2 {
                items[id] = ItemInfo(name: String(fields[1]), title: String(fields[2]), genres: String(fields[3]))
            }
        }
        self.userIDs = userIDs
        self.items = items
    }

    /// Whether `prepare` stored the user names (`users.tsv`).
    public var hasUserNames: Bool { !userIDs.isEmpty }

    /// The name of item `id` (its value in the input), or `#id` when unknown.
    public func name(of id: UInt32) -> String { items[id]?.name ?? "#\(id)" }

    /// The user id of `user`: its value in the input (`users.tsv`), or `#ID` for a raw id.
    /// nil when unknown or not in the training split.
    public func userID(_ user: String) -> UInt32? {
        var id: UInt32?
        if user.hasPrefix("#") { id = UInt32(user.dropFirst()) } else { id = userIDs[user] }
        guard let id, id >= 2, userRow[id] != nil else { return nil }
        return id
    }

    /// The users of the training split, by name (their values in the input, or `#id`).
    public var userNames: [(name: String, id: UInt32)] {
        var byID: [UInt32: String] = [:]
        for (name, id) in userIDs where id >= 2 { byID[id] = name }
        return userRow.keys.sorted().map { (byID[$0] ?? "#\($0)", $0) }
    }

    /// The rows scoring every catalog item for user `id`: the user's training row with its
    /// item-side fields replaced by each item's, into `out` (capacity >= catalog size).
    public func candidateRows(user id: UInt32, into out: FeatureRowsBuffer) {
        let row = userRow[id]!
        let d = dataset.denseCount, c = dataset.categoricalCount
        for k in 0..<itemIDs.count {
            train.copyRow(row, to: out, slot: k)
            for f in itemSideCategorical { out.categorical[k * c + f] = itemRows.categorical[k * c + f] }
            for j in itemSideDense { out.dense[k * d + j] = itemRows.dense[k * d + j] }
        }
        out.count = itemIDs.count
    }

    /// The `k` most popular catalog items (positive training rows; ties by id).
    public func popular(k: Int) -> [(item: UInt32, score: Float)] {
        let order = itemIDs.indices.sorted { popularity[$0] != popularity[$1] ? popularity[$0] > popularity[$1] : itemIDs[$0] < itemIDs[$1] }
        return order.prefix(k).map { (itemIDs[$0], Float(popularity[$0])) }
    }
}

/// Ranks a catalog for users with a trained model: the full forward pass over (user, item) rows,
/// or, for a model with an item index (`ItemIndexScoring`), item vectors computed once.
public final class Recommender {
    public let catalog: Catalog
    let model: any RecModel
    let parameters: UnsafePointer<Float>
    let embeddingTable: UnsafePointer<Float>
    let rows: FeatureRowsBuffer
    var logits: [Float]
    /// The item index: (catalog size, towerWidth), when the model has one.
    let index: [Float]?
    public var usesItemIndex: Bool { index != nil }

    public init(catalog: Catalog, model: any RecModel, parameters: UnsafePointer<Float>, embeddingTable: UnsafePointer<Float>) {
        self.catalog = catalog
        self.model = model
        self.parameters = parameters
        self.embeddingTable = embeddingTable
        let n = catalog.itemIDs.count
        rows = FeatureRowsBuffer(capacity: n, denseWidth: catalog.dataset.denseCount, categoricalWidth: catalog.dataset.categoricalCount)
        logits = [Float](repeating: 0, count: n)
        if let towers = model as? any ItemIndexScoring {
            var index = [Float](repeating: 0, count: n * towers.towerWidth)
            index.withUnsafeMutableBufferPointer { out in
                var start = 0
                while start < n {
                    let m = min(model.maxBatch, n - start)
                    towers.itemVectors(catalog.itemRows.view(start..<(start + m)), parameters: parameters,
                                       embeddingTable: embeddingTable, out: out.baseAddress! + start * towers.towerWidth)
                    start += m
                }
            }
            self.index = index
        } else {
            index = nil
        }
    }

    public convenience init(catalog: Catalog, trained: Checkpoint.TrainedModel) {
        self.init(catalog: catalog, model: trained.model, parameters: trained.parameters.pointer,
                  embeddingTable: trained.embeddingTable.pointer)
    }

    /// The logit of every catalog item for user `id` (in `catalog.itemIDs` order).
    public func scores(user id: UInt32) -> [Float] {
        let n = catalog.itemIDs.count
        if let index, let towers = model as? any ItemIndexScoring {
            let w = towers.towerWidth
            let one = FeatureRowsBuffer(capacity: 1, denseWidth: catalog.dataset.denseCount, categoricalWidth: catalog.dataset.categoricalCount)
            catalog.train.copyRow(catalog.userRow[id]!, to: one, slot: 0)
            one.count = 1
            var user = [Float](repeating: 0, count: w)
            user.withUnsafeMutableBufferPointer {
                towers.userVectors(one.view, parameters: parameters, embeddingTable: embeddingTable, out: $0.baseAddress!)
            }
            for k in 0..<n {
                var s: Float = 0
                for j in 0..<w { s += index[k * w + j] * user[j] }
                logits[k] = s
            }
            return logits
        }
        catalog.candidateRows(user: id, into: rows)
        var start = 0
        while start < n {
            let m = min(model.maxBatch, n - start)
            let out = model.forward(rows.view(start..<(start + m)), parameters: parameters, embeddingTable: embeddingTable)
            for i in 0..<m { logits[start + i] = out[i] }
            start += m
        }
        return logits
    }

    /// The `k` best items for user `id` by logit (ties by item id), without the items the user
    /// has seen when `excludeSeen`.
    public func top(user id: UInt32, k: Int, excludeSeen: Bool) -> [(item: UInt32, score: Float)] {
        let scores = scores(user: id)
        let seen = excludeSeen ? catalog.seen[id] ?? [] : []
        var candidates = catalog.itemIDs.indices.filter { !seen.contains(catalog.itemIDs[$0]) }
        candidates.sort { scores[$0] != scores[$1] ? scores[$0] > scores[$1] : catalog.itemIDs[$0] < catalog.itemIDs[$1] }
        return candidates.prefix(k).map { (catalog.itemIDs[$0], scores[$0]) }
    }
}
