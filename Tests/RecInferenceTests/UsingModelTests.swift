import Foundation
import RecCore
import RecData
@testable import RecInference
import Testing

/// Permutation importance against a hand computation on a tiny model.
struct PermutationImportanceTests {
    @Test func matchesAHandComputation() throws {
        // 12 rows, 2 dense columns and 1 categorical; the "model" reads only dense column 0.
        let rows = FeatureRowsBuffer(capacity: 12, denseWidth: 2, categoricalWidth: 1)
        let x0: [Float] = [0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.95, 0.05, 0.6, 0.4, 0.55, 0.15]
        let labels: [Float] = [0, 1, 0, 1, 0, 1, 1, 0, 0, 1, 1, 0]
        for i in 0..<12 {
            rows.labels[i] = labels[i]
            rows.dense[2 * i] = x0[i]
            rows.dense[2 * i + 1] = Float(i)   // noise the model ignores
            rows.categorical[i] = UInt32(i % 3)
        }
        rows.count = 12
        func model(_ r: FeatureRowsBuffer, _ out: UnsafeMutablePointer<Float>) {
            for i in 0..<r.count { out[i] = 1 / (1 + exp(-4 * (r.dense[2 * i] - 0.5))) }
        }
        let fields = [PermutationImportance.Field(name: "x0", categorical: false, index: 0),
                      PermutationImportance.Field(name: "x1", categorical: false, index: 1),
                      PermutationImportance.Field(name: "c", categorical: true, index: 0)]
        let (baseline, results) = try PermutationImportance.run(rows: rows, fields: fields, repeats: 4, seed: 7, metric: .auc, score: model)

        // By hand: AUC of the unshuffled scores, then of x0 permuted by each repeat's permutation.
        func auc(_ s: [Float]) -> Double {
            var wins = 0.0, pairs = 0.0
            for i in 0..<12 where labels[i] == 1 {
                for j in 0..<12 where labels[j] == 0 { pairs += 1; wins += s[i] > s[j] ? 1 : s[i] == s[j] ? 0.5 : 0 }
            }
            return wins / pairs
        }
        let score = { (v: Float) -> Float in 1 / (1 + exp(-4 * (v - 0.5))) }
        let base = auc(x0.map(score))
        #expect(abs(baseline - base) < 1e-12)
        #expect(base == 1.0 - 2.0 / 36.0, "x0 misorders 0.6 (label 0) above 0.55 and 0.4 (label 1)")
        let expected = (0..<4).map { r -> Double in
            let p = PermutationImportance.permutation(count: 12, seed: 7, repeat: r, field: 0)
            return base - auc((0..<12).map { score(x0[p[$0]]) })
        }
        #expect(results[0].drops.count == 4)
        for r in 0..<4 { #expect(abs(results[0].drops[r] - expected[r]) < 1e-12, "repeat \(r)") }
        let mean = expected.reduce(0, +) / 4
        let std = (expected.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 3).squareRoot()
        #expect(abs(results[0].mean - mean) < 1e-12 && abs(results[0].std - std) < 1e-12)
        #expect(mean > 0.2)
        // Fields the model ignores change nothing, and the columns are restored afterwards.
        #expect(results[1].drops == [0, 0, 0, 0] && results[2].drops == [0, 0, 0, 0])
        #expect((0..<12).allSatisfy { rows.dense[2 * $0] == x0[$0] && rows.dense[2 * $0 + 1] == Float($0) && rows.categorical[$0] == UInt32($0 % 3) })
        #expect(PermutationImportance.ranked(results).map(\.field.name) == ["x0", "c", "x1"])
        // Permutations are permutations, and differ between repeats and fields.
        let p = PermutationImportance.permutation(count: 100, seed: 1, repeat: 0, field: 0)
        #expect(p.sorted() == Array(0..<100))
        #expect(p != PermutationImportance.permutation(count: 100, seed: 1, repeat: 1, field: 0))
        #expect(p != PermutationImportance.permutation(count: 100, seed: 1, repeat: 0, field: 1))
    }
}

/// A two-tower stand-in: logit = dot(u(user id), v(item id, genre flags)); no parameters.
final class FakeTwoTower: RecModel, ItemIndexScoring {
    let config: ModelConfig
    let layout = ParameterLayout()
    var embeddings: EmbeddingTables? { nil }
    let maxBatch: Int
    var trainingContext: TrainingContext?
    let userField: Int, itemField: Int, genres: [Int]
    let logits: UnsafeMutablePointer<Float>
    var activationBytes: Int { 0 }
    var towerWidth: Int { 4 }

    init(config: ModelConfig, maxBatch: Int, userField: Int, itemField: Int, genres: [Int]) {
        self.config = config
        self.maxBatch = maxBatch
        self.userField = userField
        self.itemField = itemField
        self.genres = genres
        logits = .allocate(capacity: maxBatch)
    }
    deinit { logits.deallocate() }

    func user(_ b: BatchView, _ i: Int) -> [Float] {
        let id = Float(b.categorical[i * b.categoricalWidth + userField])
        return (0..<4).map { sin(id * 1.3 + Float($0)) }
    }
    func item(_ b: BatchView, _ i: Int) -> [Float] {
        let id = Float(b.categorical[i * b.categoricalWidth + itemField])
        let g = genres.reduce(Float(0)) { $0 + b.dense[i * b.denseWidth + $1] * Float($1 % 5) }
        return (0..<4).map { cos(id * 0.7 + Float($0)) + 0.3 * g }
    }
    func initialize(parameters: UnsafeMutablePointer<Float>, embeddingTable: UnsafeMutablePointer<Float>, seed: UInt64) {}
    func forward(_ batch: BatchView, parameters: UnsafePointer<Float>, embeddingTable: UnsafePointer<Float>) -> UnsafePointer<Float> {
        for i in 0..<batch.count { logits[i] = zip(user(batch, i), item(batch, i)).reduce(0) { $0 + $1.0 * $1.1 } }
        return UnsafePointer(logits)
    }
    func backward(_ batch: BatchView, dLogits: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                  gradients: UnsafeMutablePointer<Float>, sparse: SparseGradient, events: (BackwardEvent) throws -> Void) rethrows {}
    func itemVectors(_ batch: BatchView, parameters: UnsafePointer<Float>, embeddingTable: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
        for i in 0..<batch.count { for (j, v) in item(batch, i).enumerated() { out[i * 4 + j] = v } }
    }
    func userVectors(_ batch: BatchView, parameters: UnsafePointer<Float>, embeddingTable: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
        for i in 0..<batch.count { for (j, v) in user(batch, i).enumerated() { out[i * 4 + j] = v } }
    }
}

/// The catalog and the recommender's two paths (full forward, item index) against scoring each
/// item one by one.
struct RecommenderTests {
    static func tinyMovieLens() throws -> PreparedDataset {
        let dir = NSTemporaryDirectory() + "rec-dist-recommender-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var data = "", t = 1000
        for user in 1...12 {
            for item in 1...15 where (user * 7 + item * 3) % 4 != 0 {
                t += 1
                data += "\(user)\t\(item)\t\((user + item) % 5 + 1)\t\(t)\n"
            }
        }
        try data.write(toFile: dir + "/u.data", atomically: true, encoding: .utf8)
        var items = ""
        for item in 1...15 {
            var flags = [String](repeating: "0", count: 19)
            flags[item % 19] = "1"
            flags[(item * 5) % 19] = "1"
            items += "\(item)|Film \(item) (1990)|01-Jan-1990||u|" + flags.joined(separator: "|") + "\n"
        }
        try items.write(toFile: dir + "/u.item", atomically: true, encoding: .utf8)
        var options = PrepareOptions(format: .movielens100k, inputs: [dir + "/u.data"], output: dir + "/prepared")
        options.evalNegatives = 3
        _ = try Preparer.run(options)
        return try PreparedDataset(directory: dir + "/prepared")
    }

    @Test func itemIndexAndFullForwardRankLikeScoringEachItemAlone() throws {
        let dataset = try Self.tinyMovieLens()
        let catalog = try Catalog(dataset: dataset)
        let schema = dataset.manifest.schema
        #expect(catalog.itemIDs.count == 15 && catalog.items.count == 15)
        #expect(catalog.items.values.contains { $0.title == "Film 3 (1990)" && $0.name == "3" })
        let genres = schema.dense.indices.filter { schema.dense[$0].name.hasPrefix("genre_") }
        #expect(catalog.itemSideDense == genres && catalog.itemSideCategorical.contains(catalog.itemField))
        var config = ModelConfig(kind: .dlrm)
        config.denseInputs = dataset.denseCount
        config.categoricalFields = dataset.categoricalCount
        let model = FakeTwoTower(config: config, maxBatch: 8, userField: catalog.userField, itemField: catalog.itemField, genres: genres)
        let none = FloatBuffer(count: 1)
        let indexed = Recommender(catalog: catalog, model: model, parameters: none.pointer, embeddingTable: none.pointer)
        #expect(indexed.usesItemIndex)

        // The reference: for one user, each catalog item's row built by hand from the training
        // split (the user's first row, the item's first row's item-side fields), scored alone.
        let train = try dataset.open(split: "train")
        let user = try #require(catalog.userID("5"))
        let userRow = (0..<train.header.rows).first { train.categorical($0)[catalog.userField] == user }!
        let one = FeatureRowsBuffer(capacity: 1, denseWidth: dataset.denseCount, categoricalWidth: dataset.categoricalCount)
        var reference: [(UInt32, Float)] = []
        for item in catalog.itemIDs {
            let itemRow = (0..<train.header.rows).first { train.categorical($0)[catalog.itemField] == item }!
            train.copyRow(userRow, to: one, slot: 0)
            for f in 0..<dataset.categoricalCount where schema.categorical[f].role == .item || schema.categorical[f].role == .itemFeature {
                one.categorical[f] = train.categorical(itemRow)[f]
            }
            for j in genres { one.dense[j] = train.dense(itemRow)[j] }
            one.count = 1
            reference.append((item, model.forward(one.view, parameters: none.pointer, embeddingTable: none.pointer)[0]))
        }
        reference.sort { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
        let viaIndex = indexed.top(user: user, k: 15, excludeSeen: false)
        #expect(viaIndex.map(\.item) == reference.map(\.0))
        for (a, b) in zip(viaIndex, reference) { #expect(abs(a.score - b.1) < 1e-5) }

        // The generic path (the full forward pass over candidate rows; the model seen as a plain RecModel).
        final class Plain: RecModel {
            let inner: FakeTwoTower
            init(_ inner: FakeTwoTower) { self.inner = inner }
            var config: ModelConfig { inner.config }
            var layout: ParameterLayout { inner.layout }
            var embeddings: EmbeddingTables? { nil }
            var maxBatch: Int { inner.maxBatch }
            var trainingContext: TrainingContext?
            var activationBytes: Int { 0 }
            func initialize(parameters: UnsafeMutablePointer<Float>, embeddingTable: UnsafeMutablePointer<Float>, seed: UInt64) {}
            func forward(_ batch: BatchView, parameters: UnsafePointer<Float>, embeddingTable: UnsafePointer<Float>) -> UnsafePointer<Float> {
                inner.forward(batch, parameters: parameters, embeddingTable: embeddingTable)
            }
            func backward(_ batch: BatchView, dLogits: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                          gradients: UnsafeMutablePointer<Float>, sparse: SparseGradient, events: (BackwardEvent) throws -> Void) rethrows {}
        }
        let generic = Recommender(catalog: catalog, model: Plain(model), parameters: none.pointer, embeddingTable: none.pointer)
        #expect(!generic.usesItemIndex)
        let viaForward = generic.top(user: user, k: 15, excludeSeen: false)
        #expect(viaForward.map(\.item) == reference.map(\.0))

        // Seen items (all of the user's training rows: no sampled negatives here) are left out.
        let seen = Set((0..<train.header.rows).filter { train.categorical($0)[catalog.userField] == user }.map { train.categorical($0)[catalog.itemField] })
        let unseen = indexed.top(user: user, k: 15, excludeSeen: true)
        #expect(unseen.map(\.item) == reference.map(\.0).filter { !seen.contains($0) })
        #expect(catalog.userID("nobody") == nil && catalog.userID("#\(user)") == user)
    }
}
