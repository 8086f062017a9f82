import Foundation
import RecCheckpoint
import RecCore
import RecData
import RecTrainer

/// The most-popular-items baseline of leave-last-out evaluation: every candidate is scored by
/// how many positive training rows its item has, the same for every user, and ranked with the
/// same protocol and tie rule as a model (`RankingMetrics.atK`: ties count against the held-out
/// positive, so items never seen in training, all scored 0, rank last).
public enum PopularityBaseline {
    public struct Result: Sendable, Equatable {
        public var hitRate: Double
        public var ndcg: Double
        public var groups: Int
        public var split: String
    }

    /// Counts the positives per item id of the `train` split of the prepared dataset at `path`
    /// and ranks each group of its `split` (leave-last-out, with sampled negatives) by them.
    public static func evaluate(path: String, split: String = "test", k: Int = 10) throws -> Result {
        let dataset = try PreparedDataset(directory: path)
        let schema = dataset.manifest.schema
        guard let itemName = schema.itemField, let item = schema.categorical.firstIndex(where: { $0.name == itemName }) else {
            throw TrainingError.notEnoughData("'\(path)' has no item field; the most-popular baseline needs interaction data")
        }
        guard let groupSize = dataset.manifest.split(split)?.groupSize else {
            throw TrainingError.notEnoughData("the \(split) split of '\(path)' is not in leave-last-out groups; prepare with --split leave-last-out")
        }
        let train = try dataset.open(split: "train")
        var counts = [Float](repeating: 0, count: schema.categorical[item].size)
        for r in 0..<train.header.rows where train.label(r) == 1 {
            counts[Int(train.categorical(r)[item])] += 1
        }
        let eval = try dataset.open(split: split)
        var scores = [Float](repeating: 0, count: eval.header.rows)
        for r in 0..<eval.header.rows { scores[r] = counts[Int(eval.categorical(r)[item])] }
        let metrics = scores.withUnsafeBufferPointer { RankingMetrics.atK(scores: $0, groupSize: groupSize, k: k) }
        guard let metrics else { throw TrainingError.notEnoughData("the \(split) split of '\(path)' has no complete group") }
        return Result(hitRate: metrics.hitRate, ndcg: metrics.ndcg, groups: eval.header.rows / groupSize, split: split)
    }
}
