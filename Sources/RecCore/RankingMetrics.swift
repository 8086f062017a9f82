#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Ranking metrics over groups of candidates, the leave-last-out protocol of NCF and SASRec: each
/// group is one held-out positive (its first row) followed by sampled negatives, and a model
/// ranks the positive among them.
public enum RankingMetrics {
    /// Hit rate and NDCG at `k` over `scores` cut into consecutive groups of `groupSize`, the
    /// positive first in each. The positive's rank is the number of negatives scored at least as
    /// high (ties count against it, so a constant model scores 0, not 1); it is a hit when the
    /// rank is below `k`, and contributes 1 / log2(rank + 2) to the NDCG then. nil without a
    /// complete group.
    public static func atK(scores: UnsafeBufferPointer<Float>, groupSize: Int, k: Int) -> (hitRate: Double, ndcg: Double)? {
        precondition(groupSize >= 1 && k >= 1)
        let groups = scores.count / groupSize
        guard groups > 0 else { return nil }
        var hits = 0.0, gain = 0.0
        for g in 0..<groups {
            let base = g * groupSize
            let positive = scores[base]
            var rank = 0
            for j in 1..<groupSize where scores[base + j] >= positive { rank += 1 }
            if rank < k {
                hits += 1
                gain += 1 / log2(Double(rank + 2))
            }
        }
        return (hits / Double(groups), gain / Double(groups))
    }
}
