import Foundation
import Testing
@testable import RecCore

// Metrics are checked against direct, slow references: AUC against an O(n^2) count over all
// (positive, negative) pairs, log loss against the formula in Double.

/// AUC by definition: the fraction of (positive, negative) pairs ranked correctly, ties one half.
func pairwiseAUC<S: BinaryFloatingPoint>(_ scores: [S], _ labels: [Float]) -> Double? {
    var pairs = 0.0, correct = 0.0
    for i in scores.indices where labels[i] >= 0.5 {
        for j in scores.indices where labels[j] < 0.5 {
            pairs += 1
            if scores[i] > scores[j] { correct += 1 } else if scores[i] == scores[j] { correct += 0.5 }
        }
    }
    return pairs == 0 ? nil : correct / pairs
}

func referenceLogloss(_ p: [Float], _ y: [Float]) -> Double {
    var sum = 0.0
    for (pi, yi) in zip(p, y) {
        let q = min(max(Double(pi), 1e-7), 1 - 1e-7)
        sum += -(Double(yi) * log(q) + (1 - Double(yi)) * log(1 - q))
    }
    return sum / Double(p.count)
}

func logloss(_ p: [Float], _ y: [Float]) -> Double {
    p.withUnsafeBufferPointer { pp in y.withUnsafeBufferPointer { yy in Metrics.logloss(probabilities: pp, labels: yy) } }
}

func accuracy(_ p: [Float], _ y: [Float]) -> Double {
    p.withUnsafeBufferPointer { pp in y.withUnsafeBufferPointer { yy in Metrics.accuracy(probabilities: pp, labels: yy) } }
}

@Suite("Metrics")
struct MetricsTests {
    @Test("AUC equals the pairwise reference on data with many ties",
          arguments: [(n: 2, levels: 2), (n: 7, levels: 3), (n: 200, levels: 5), (n: 500, levels: 40), (n: 800, levels: 1000)])
    func aucMatchesPairwise(n: Int, levels: Int) {
        var rng = RNG(seed: UInt64(n * 1000 + levels), stream: 1)
        for trial in 0..<5 {
            let positiveRate = [0.5, 0.1, 0.9, 0.02, 0.5][trial]
            var labels: [Float] = [], scores: [Float] = []
            for _ in 0..<n {
                let y: Float = rng.nextDouble() < positiveRate ? 1 : 0
                // Quantized, informative, partly negative scores: many exact ties, -0.0 among them.
                let level = Float(rng.nextInt(below: levels)) + y * Float(levels) * 0.3
                var s = (level - Float(levels) / 2) / Float(levels)
                if s == 0 && rng.nextInt(below: 2) == 0 { s = -0.0 }
                if rng.nextInt(below: 50) == 0 { s = rng.nextInt(below: 2) == 0 ? .infinity : -.infinity }
                labels.append(y)
                scores.append(s)
            }
            let expected = pairwiseAUC(scores, labels)
            let actual = Metrics.auc(scores: scores, labels: labels)
            #expect((actual == nil) == (expected == nil), "n \(n) trial \(trial)")
            if let actual, let expected {
                #expect(abs(actual - expected) <= 1e-12, "n \(n) levels \(levels) trial \(trial): \(actual) vs \(expected)")
            }
            // The Double overload agrees on the same values and on finer ones.
            #expect(Metrics.auc(scores: scores.map(Double.init), labels: labels) == actual)
            let fine = scores.map { Double($0) + rng.nextDouble() * 1e-12 }
            let fineExpected = pairwiseAUC(fine, labels)
            if let fineActual = Metrics.auc(scores: fine, labels: labels), let fineExpected {
                #expect(abs(fineActual - fineExpected) <= 1e-12)
            }
        }
    }

    @Test("AUC edge cases: perfect, reversed, constant, single class, NaN")
    func aucEdgeCases() {
        let labels: [Float] = [0, 0, 1, 0, 1, 1]
        let perfect: [Float] = [0.1, 0.2, 0.7, 0.3, 0.8, 0.9]
        #expect(Metrics.auc(scores: perfect, labels: labels) == 1)
        #expect(Metrics.auc(scores: perfect.map { -$0 }, labels: labels) == 0)
        #expect(Metrics.auc(scores: [Float](repeating: 0.4, count: 6), labels: labels) == 0.5)
        #expect(Metrics.auc(scores: perfect, labels: [Float](repeating: 1, count: 6)) == nil)
        #expect(Metrics.auc(scores: perfect, labels: [Float](repeating: 0, count: 6)) == nil)
        #expect(Metrics.auc(scores: [Float](), labels: []) == nil)
        // Pairs (pos, neg): (0.5, 0.1) 1, (0.5, 0.5) 1/2, (0.9, 0.1) 1, (0.9, 0.5) 1 -> 3.5 / 4.
        #expect(Metrics.auc(scores: [0.1, 0.5, 0.5, 0.9], labels: [0, 1, 0, 1]) == 0.875)
        // Pairs: (0.5, 0.6) 0, (0.5, 0.5) 1/2, (0.9, 0.6) 1, (0.9, 0.5) 1 -> 2.5 / 4.
        #expect(Metrics.auc(scores: [0.6, 0.5, 0.5, 0.9], labels: [0, 1, 0, 1]) == 0.625)
        #expect(Metrics.auc(scores: [-0.0, 0.0] as [Float], labels: [0, 1]) == 0.5)
        #expect(Metrics.auc(scores: [0.1, .nan] as [Float], labels: [0, 1])!.isNaN)
        #expect(Metrics.auc(scores: [0.1, .nan] as [Double], labels: [0, 1])!.isNaN)
    }

    @Test("logloss equals the direct formula, with Keras's clamp")
    func loglossMatchesFormula() {
        var rng = RNG(seed: 3, stream: 3)
        var p = (0..<1000).map { _ in rng.nextFloat() }
        var y = (0..<1000).map { _ in Float(rng.nextInt(below: 2)) }
        p += [0, 1, 0, 1, 1e-9, 0.5]  // clamped: confident wrong answers cost -log(1e-7)
        y += [1, 0, 0, 1, 1, 0.25]    // soft label last
        let expected = referenceLogloss(p, y)
        #expect(abs(logloss(p, y) - expected) <= 1e-12 * expected)
        #expect(abs(logloss([0], [1]) - -log(1e-7)) <= 1e-12)
        #expect(abs(logloss([0.25], [1]) - -log(0.25)) <= 1e-15)
        #expect(abs(logloss([0.25, 0.9], [0, 0]) - -(log(0.75) + log(1 - Double(Float(0.9)))) / 2) <= 1e-12)
        #expect(logloss([], []).isNaN)
    }

    @Test("accuracy on a hand-worked example")
    func accuracyExample() {
        // predicted:  1    0    1    0     1    0
        // label:      1    0    0    1     1    0   -> 4 of 6 correct
        let p: [Float] = [0.9, 0.1, 0.5, 0.49, 0.7, 0.0]
        let y: [Float] = [1, 0, 0, 1, 1, 0]
        #expect(accuracy(p, y) == 4.0 / 6.0)
        #expect(accuracy([0.5], [0.5]) == 1)  // both sides use >= 0.5
        #expect(accuracy([], []).isNaN)
    }

    @Test("BinaryEvaluation over several batches equals the one-shot metrics")
    func streamingEqualsOneShot() throws {
        var rng = RNG(seed: 4, stream: 4)
        let n = 1234
        let y = (0..<n).map { _ in Float(rng.nextDouble() < 0.3 ? 1 : 0) }
        let p = y.map { label in Float((0.3 * rng.nextDouble() + 0.35 * Double(label) + 0.2) * 100).rounded() / 100 }
        var evaluation = BinaryEvaluation()
        var start = 0
        for size in [1, 100, 0, 500, 633] {
            p[start..<start + size].withUnsafeBufferPointer { pb in
                y[start..<start + size].withUnsafeBufferPointer { yb in evaluation.append(probabilities: pb, labels: yb) }
            }
            start += size
        }
        #expect(start == n && evaluation.count == n)

        let summary = evaluation.summary()
        let expected = EvaluationSummary(
            count: n, auc: Metrics.auc(scores: p, labels: y), logloss: logloss(p, y), accuracy: accuracy(p, y),
            meanPrediction: p.reduce(0.0) { $0 + Double($1) } / Double(n),
            meanLabel: y.reduce(0.0) { $0 + Double($1) } / Double(n),
            rmse: (zip(p, y).reduce(0.0) { $0 + (Double($1.0) - Double($1.1)) * (Double($1.0) - Double($1.1)) } / Double(n)).squareRoot(),
            mae: zip(p, y).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) } / Double(n))
        #expect(summary == expected)
        #expect(abs(summary.auc! - pairwiseAUC(p, y)!) <= 1e-12)
        #expect(summary.auc! > 0.8)
        #expect(abs(summary.logloss - referenceLogloss(p, y)) <= 1e-12)

        let decoded = try JSONDecoder().decode(EvaluationSummary.self, from: JSONEncoder().encode(summary))
        #expect(decoded == summary)

        evaluation.removeAll()
        #expect(evaluation.count == 0)
        #expect(evaluation.summary().auc == nil)
    }
}

@Suite struct RankingMetricsTests {
    func ranking(_ scores: [Float], group: Int, k: Int) -> (hitRate: Double, ndcg: Double)? {
        scores.withUnsafeBufferPointer { RankingMetrics.atK(scores: $0, groupSize: group, k: k) }
    }

    /// Groups of 4 (a positive, then 3 negatives): ranks 0, 2, 3 (a tie counts against the
    /// positive); a trailing partial group is ignored.
    @Test func hitRateAndNDCGByHand() throws {
        let scores: [Float] = [0.9, 0.1, 0.2, 0.3,   0.5, 0.9, 0.7, 0.1,   0.4, 0.4, 0.8, 0.6,   0.99, 0.0]
        let at2 = try #require(ranking(scores, group: 4, k: 2))
        #expect(abs(at2.hitRate - 1.0 / 3) < 1e-12)
        #expect(abs(at2.ndcg - 1.0 / 3) < 1e-12)
        let at10 = try #require(ranking(scores, group: 4, k: 10))
        #expect(at10.hitRate == 1)
        #expect(abs(at10.ndcg - (1 + 1 / log2(4.0) + 1 / log2(5.0)) / 3) < 1e-12)
        #expect(ranking([0.5, 0.5, 0.5], group: 3, k: 2)?.hitRate == 0, "a constant model ranks the positive last")
        #expect(ranking([0.5], group: 2, k: 1) == nil)
    }
}

@Suite struct GeneralRankingMetricsTests {
    /// Naive reference: sort each group by score descending, ties broken against positives
    /// (negatives first, then positives by index), and read the metrics off the sorted list.
    static func reference(_ scores: [Float], _ labels: [Float], group: Int, k: Int)
        -> (hr: Double, ndcg: Double, recall: Double, mrr: Double, groups: Int)? {
        var hr = 0.0, ndcg = 0.0, recall = 0.0, mrr = 0.0, groups = 0
        for g in 0..<(scores.count / group) {
            let idx = Array((g * group)..<((g + 1) * group))
            let positives = idx.filter { labels[$0] >= 0.5 }
            if positives.isEmpty { continue }
            groups += 1
            let order = idx.sorted { a, b in
                if scores[a] != scores[b] { return scores[a] > scores[b] }
                let pa = labels[a] >= 0.5, pb = labels[b] >= 0.5
                if pa != pb { return !pa }          // the negative goes first in a tie
                return a < b
            }
            let top = order.prefix(k)
            let hits = top.filter { labels[$0] >= 0.5 }.count
            hr += hits > 0 ? 1 : 0
            recall += Double(hits) / Double(positives.count)
            var dcg = 0.0, ideal = 0.0
            for (r, i) in top.enumerated() where labels[i] >= 0.5 { dcg += 1 / log2(Double(r) + 2) }
            for r in 0..<min(k, positives.count) { ideal += 1 / log2(Double(r) + 2) }
            ndcg += dcg / ideal
            let first = order.firstIndex { labels[$0] >= 0.5 }!
            mrr += 1 / Double(first + 1)
        }
        guard groups > 0 else { return nil }
        let n = Double(groups)
        return (hr / n, ndcg / n, recall / n, mrr / n, groups)
    }

    @Test(arguments: [(1, 10, 5), (1, 100, 10), (3, 20, 5), (2, 8, 1), (5, 12, 20)])
    func matchesNaiveReference(positives: Int, group: Int, k: Int) throws {
        var rng = RNG(seed: 41, stream: UInt64(group * 100 + k))
        let users = 60
        var scores: [Float] = [], labels: [Float] = []
        for _ in 0..<users {
            for j in 0..<group {
                // Coarse scores, so ties happen; some users without a positive (skipped).
                scores.append(Float(rng.nextInt(below: 8)) / 8)
                labels.append(j < positives && rng.nextDouble() > 0.1 ? 1 : 0)
            }
        }
        let got = try #require(scores.withUnsafeBufferPointer { s in
            labels.withUnsafeBufferPointer { l in RankingMetrics.evaluate(scores: s, labels: l, groupSize: group, k: k) }
        })
        let want = try #require(Self.reference(scores, labels, group: group, k: k))
        #expect(got.groups == want.groups)
        #expect(abs(got.hitRate - want.hr) < 1e-12)
        #expect(abs(got.ndcg - want.ndcg) < 1e-12)
        #expect(abs(got.recall - want.recall) < 1e-12)
        #expect(abs(got.mrr - want.mrr) < 1e-12)
        if positives == 1 {
            #expect(abs(got.recall - got.hitRate) < 1e-12, "one positive: recall is the hit rate")
        }
    }

    @Test func protocolIsStated() {
        let labels: [Float] = [1] + Array(repeating: 0, count: 99)
        #expect(labels.withUnsafeBufferPointer { RankingMetrics.protocolDescription(labels: $0, groupSize: 100) }
                == "1 held-out positive vs 99 sampled negatives per user")
    }

    @Test func errorsAndCalibrationByHand() {
        let p: [Float] = [0.5, 0.25, 1, 0], y: [Float] = [1, 0, 1, 0]
        let e = p.withUnsafeBufferPointer { pb in y.withUnsafeBufferPointer { yb in Metrics.errors(predictions: pb, labels: yb) } }
        #expect(abs(e.rmse - (0.3125 / 4).squareRoot()) < 1e-12)
        #expect(abs(e.mae - 0.75 / 4) < 1e-12)
        var evaluation = BinaryEvaluation()
        p.withUnsafeBufferPointer { pb in y.withUnsafeBufferPointer { yb in evaluation.append(probabilities: pb, labels: yb) } }
        #expect(abs(evaluation.summary().calibration! - (1.75 / 4) / 0.5) < 1e-12)
        var negativesOnly = BinaryEvaluation()
        p.withUnsafeBufferPointer { pb in [Float](repeating: 0, count: 4).withUnsafeBufferPointer { yb in negativesOnly.append(probabilities: pb, labels: yb) } }
        #expect(negativesOnly.summary().calibration == nil, "no positive label: calibration is undefined, not infinite")
    }
}
