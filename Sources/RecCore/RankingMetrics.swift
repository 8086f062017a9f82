#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Top-K ranking metrics over one evaluation pass, averaged over groups.
public struct RankingSummary: Sendable, Equatable, Codable {
    /// The cut-off K.
    public var k: Int
    /// Groups (users) evaluated.
    public var groups: Int
    /// Fraction of groups with at least one positive in the top K.
    public var hitRate: Double
    /// Mean NDCG@K with binary relevance: DCG = sum over positives in the top K of
    /// 1 / log2(rank + 2), divided by the ideal DCG (all positives first).
    public var ndcg: Double
    /// Mean fraction of a group's positives that are in the top K.
    public var recall: Double
    /// Mean reciprocal rank of the best-ranked positive, over the whole group (not cut at K).
    public var mrr: Double
}

/// Ranking metrics over groups of candidates, the leave-last-out protocol of NCF and SASRec: each
/// group holds one user's held-out positive(s) and sampled negatives, and a model ranks the
/// positives among them.
///
/// Ranks are 0-based and pessimistic about ties: a positive's rank is the number of negatives
/// scored at least as high, plus the positives scored strictly higher or tied and earlier in the
/// group. So a constant model ranks its positives last, not first.
public enum RankingMetrics {
    /// HR, NDCG, Recall at `k` and MRR over `scores` cut into consecutive groups of `groupSize`;
    /// a candidate is positive when its label is >= 0.5. Groups without a positive are skipped.
    /// nil without a complete group that has a positive.
    public static func evaluate(scores: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Float>,
                                groupSize: Int, k: Int) -> RankingSummary? {
        precondition(groupSize >= 1 && k >= 1)
        precondition(scores.count == labels.count, "RankingMetrics: \(scores.count) scores but \(labels.count) labels")
        var groups = 0
        var hits = 0.0, ndcg = 0.0, recall = 0.0, mrr = 0.0
        for g in 0..<(scores.count / groupSize) {
            let base = g * groupSize
            var positives = 0, inTopK = 0, best = Int.max
            var dcg = 0.0
            for i in base..<(base + groupSize) where labels[i] >= 0.5 {
                positives += 1
                let s = scores[i]
                var rank = 0
                for j in base..<(base + groupSize) where j != i {
                    if labels[j] >= 0.5 {
                        if scores[j] > s || (scores[j] == s && j < i) { rank += 1 }
                    } else if scores[j] >= s {
                        rank += 1
                    }
                }
                best = min(best, rank)
                if rank < k {
                    inTopK += 1
                    dcg += 1 / log2(Double(rank + 2))
                }
            }
            guard positives > 0 else { continue }
            groups += 1
            var ideal = 0.0
            for r in 0..<min(positives, k) { ideal += 1 / log2(Double(r + 2)) }
            if inTopK > 0 { hits += 1 }
            ndcg += dcg / ideal
            recall += Double(inTopK) / Double(positives)
            mrr += 1 / Double(best + 1)
        }
        guard groups > 0 else { return nil }
        let n = Double(groups)
        return RankingSummary(k: k, groups: groups, hitRate: hits / n, ndcg: ndcg / n, recall: recall / n, mrr: mrr / n)
    }

    /// Hit rate and NDCG at `k` when each group's first candidate is its only positive (the
    /// rest negatives). nil without a complete group.
    public static func atK(scores: UnsafeBufferPointer<Float>, groupSize: Int, k: Int) -> (hitRate: Double, ndcg: Double)? {
        precondition(groupSize >= 1 && k >= 1)
        var labels = [Float](repeating: 0, count: scores.count)
        for i in stride(from: 0, to: scores.count, by: groupSize) { labels[i] = 1 }
        return labels.withUnsafeBufferPointer { evaluate(scores: scores, labels: $0, groupSize: groupSize, k: k) }
            .map { ($0.hitRate, $0.ndcg) }
    }

    /// How a leave-last-out evaluation ranks, for the output: from the labels of the first group.
    public static func protocolDescription(labels: UnsafeBufferPointer<Float>, groupSize: Int) -> String {
        var positives = 0
        for i in 0..<min(groupSize, labels.count) where labels[i] >= 0.5 { positives += 1 }
        let negatives = groupSize - positives
        return "\(positives == 1 ? "1 held-out positive" : "\(positives) held-out positives") vs \(negatives) sampled negatives per user"
    }
}
