#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Binary-classification metrics for evaluation: exact ROC AUC, log loss, accuracy, calibration;
// and RMSE / MAE of the predicted probability against the label (ratings scaled to [0, 1]).
// A label counts as positive when it is >= 0.5 (AUC, accuracy); log loss uses the label value
// itself, so soft labels in [0, 1] are allowed there.

/// Evaluation metrics for binary classifiers. All results are computed in Double.
public enum Metrics {
    /// The probability clamp used by `logloss`, Keras's `backend.epsilon()`.
    public static let probabilityEpsilon: Double = 1e-7

    /// Exact ROC AUC, rank-based (Mann-Whitney U): the probability that a random positive scores
    /// higher than a random negative, ties counting one half (equivalently, tied scores get the
    /// average rank). O(n log n) time, O(n) extra memory.
    ///
    /// A label is positive when it is >= 0.5. Returns nil when only one class is present (AUC is
    /// undefined), and NaN when any score is NaN (e.g. a diverged model). `-0.0` ties with `0.0`.
    ///
    /// - Parameters:
    ///   - scores: `(n)` scores or probabilities; only their order matters.
    ///   - labels: `(n)` labels, 0 or 1.
    public static func auc(scores: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Float>) -> Double? {
        precondition(scores.count == labels.count, "Metrics.auc: \(scores.count) scores but \(labels.count) labels")
        var positives: [UInt64] = [], negatives: [UInt64] = []
        positives.reserveCapacity(scores.count)
        negatives.reserveCapacity(scores.count)
        for i in 0..<scores.count {
            let score = scores[i]
            if score.isNaN { return .nan }
            let key = UInt64(orderedBits(score + 0))  // + 0 turns -0.0 into +0.0
            if labels[i] >= 0.5 { positives.append(key) } else { negatives.append(key) }
        }
        return mannWhitney(positives: &positives, negatives: &negatives)
    }

    /// Exact ROC AUC of `scores` against `labels`; see `auc(scores:labels:)` on buffers.
    public static func auc(scores: [Float], labels: [Float]) -> Double? {
        scores.withUnsafeBufferPointer { s in labels.withUnsafeBufferPointer { l in auc(scores: s, labels: l) } }
    }

    /// Exact ROC AUC of Double scores (e.g. the oracle probabilities of synthetic data), compared
    /// at full Double precision; otherwise as `auc(scores:labels:)` on Float buffers.
    public static func auc(scores: [Double], labels: [Float]) -> Double? {
        precondition(scores.count == labels.count, "Metrics.auc: \(scores.count) scores but \(labels.count) labels")
        var positives: [UInt64] = [], negatives: [UInt64] = []
        positives.reserveCapacity(scores.count)
        negatives.reserveCapacity(scores.count)
        for (score, label) in zip(scores, labels) {
            if score.isNaN { return .nan }
            let key = orderedBits(score + 0)
            if label >= 0.5 { positives.append(key) } else { negatives.append(key) }
        }
        return mannWhitney(positives: &positives, negatives: &negatives)
    }

    /// Mean binary cross-entropy `-(y log p + (1 - y) log(1 - p))`, with `p` clamped to
    /// `[1e-7, 1 - 1e-7]` like Keras, summed in Double. NaN when empty.
    ///
    /// - Parameters:
    ///   - probabilities: `(n)` predicted probabilities of the positive class.
    ///   - labels: `(n)` labels in [0, 1].
    public static func logloss(probabilities: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Float>) -> Double {
        precondition(probabilities.count == labels.count,
                     "Metrics.logloss: \(probabilities.count) probabilities but \(labels.count) labels")
        let lo = probabilityEpsilon, hi = 1 - probabilityEpsilon
        var sum = 0.0
        for i in 0..<probabilities.count {
            let p = min(max(Double(probabilities[i]), lo), hi)
            let y = Double(labels[i])
            sum -= y * log(p) + (1 - y) * log(1 - p)
        }
        return sum / Double(probabilities.count)
    }

    /// Root mean squared error and mean absolute error of `predictions` against `labels`, summed
    /// in Double. NaN when empty. For ratings, both are in the labels' units (rec-dist's ratings
    /// are scaled to [0, 1] and predicted through the sigmoid, so 0.1 is a tenth of the scale).
    public static func errors(predictions: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Float>) -> (rmse: Double, mae: Double) {
        precondition(predictions.count == labels.count,
                     "Metrics.errors: \(predictions.count) predictions but \(labels.count) labels")
        var squares = 0.0, absolutes = 0.0
        for i in 0..<predictions.count {
            let d = Double(predictions[i]) - Double(labels[i])
            squares += d * d
            absolutes += abs(d)
        }
        let n = Double(predictions.count)
        return ((squares / n).squareRoot(), absolutes / n)
    }

    /// The fraction of examples with `(p >= 0.5) == (label >= 0.5)`. NaN when empty.
    public static func accuracy(probabilities: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Float>) -> Double {
        precondition(probabilities.count == labels.count,
                     "Metrics.accuracy: \(probabilities.count) probabilities but \(labels.count) labels")
        var correct = 0
        for i in 0..<probabilities.count where (probabilities[i] >= 0.5) == (labels[i] >= 0.5) {
            correct += 1
        }
        return Double(correct) / Double(probabilities.count)
    }

    // MARK: - AUC internals

    /// Maps a non-NaN float to an unsigned integer with the same order (IEEE total order).
    @inline(__always)
    static func orderedBits(_ x: Float) -> UInt32 {
        let bits = x.bitPattern
        return bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
    }

    @inline(__always)
    static func orderedBits(_ x: Double) -> UInt64 {
        let bits = x.bitPattern
        return bits & 0x8000_0000_0000_0000 != 0 ? ~bits : bits | 0x8000_0000_0000_0000
    }

    /// AUC = U / (nPos * nNeg), with U = #{pos > neg} + 0.5 #{pos == neg} over all pairs,
    /// counted exactly (as 2U in integers) by walking the two sorted key lists together.
    private static func mannWhitney(positives: inout [UInt64], negatives: inout [UInt64]) -> Double? {
        guard !positives.isEmpty, !negatives.isEmpty else { return nil }
        positives.sort()
        negatives.sort()
        var twiceU = 0
        var below = 0  // negatives with key < current key
        var i = 0
        while i < positives.count {
            let key = positives[i]
            var end = i + 1
            while end < positives.count && positives[end] == key { end += 1 }
            while below < negatives.count && negatives[below] < key { below += 1 }
            var notAbove = below  // negatives with key <= current key
            while notAbove < negatives.count && negatives[notAbove] == key { notAbove += 1 }
            twiceU += (end - i) * (below + notAbove)  // each: 2 * below + 1 * (tied)
            i = end
        }
        return Double(twiceU) / (2 * Double(positives.count) * Double(negatives.count))
    }
}

/// The metrics of one evaluation pass.
public struct EvaluationSummary: Sendable, Equatable, Codable {
    /// Number of examples.
    public var count: Int
    /// ROC AUC; nil when only one class was present. NaN if a prediction was NaN.
    public var auc: Double?
    /// Mean binary cross-entropy (Keras clamp). NaN when `count == 0`.
    public var logloss: Double
    /// Fraction classified correctly at threshold 0.5. NaN when `count == 0`.
    public var accuracy: Double
    /// Mean predicted probability (compare with `meanLabel` for calibration). NaN when `count == 0`.
    public var meanPrediction: Double
    /// Mean label, the positive rate. NaN when `count == 0`.
    public var meanLabel: Double
    /// Root mean squared error of the predicted probability against the label. NaN when empty.
    public var rmse: Double
    /// Mean absolute error of the predicted probability against the label. NaN when empty.
    public var mae: Double

    /// Calibration, mean prediction / mean label: 1 for a calibrated model, above 1 when it
    /// over-predicts. nil when no label is positive (or there are no rows): undefined then.
    public var calibration: Double? { meanLabel > 0 ? meanPrediction / meanLabel : nil }
}

/// Streaming accumulator for evaluation: append batches of (probability, label), then compute
/// every metric at once over all of them (AUC needs the whole set).
public struct BinaryEvaluation: Sendable {
    private var probabilities: [Float] = []
    private var labels: [Float] = []

    /// Creates an empty evaluation.
    public init() {}

    /// The number of examples appended so far.
    public var count: Int { probabilities.count }

    /// Reserves room for `count` examples in total, to avoid regrowth during a pass.
    public mutating func reserveCapacity(_ count: Int) {
        probabilities.reserveCapacity(count)
        labels.reserveCapacity(count)
    }

    /// Empties the evaluation, keeping its storage for the next pass.
    public mutating func removeAll() {
        probabilities.removeAll(keepingCapacity: true)
        labels.removeAll(keepingCapacity: true)
    }

    /// Appends one batch: `probabilities` and `labels` are `(batch)`.
    public mutating func append(probabilities: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Float>) {
        precondition(probabilities.count == labels.count,
                     "BinaryEvaluation.append: \(probabilities.count) probabilities but \(labels.count) labels")
        self.probabilities.append(contentsOf: probabilities)
        self.labels.append(contentsOf: labels)
    }

    /// All metrics over everything appended so far.
    public func summary() -> EvaluationSummary {
        probabilities.withUnsafeBufferPointer { p in
            labels.withUnsafeBufferPointer { y in
                var sumP = 0.0, sumY = 0.0
                for i in 0..<p.count {
                    sumP += Double(p[i])
                    sumY += Double(y[i])
                }
                let n = Double(p.count)
                let errors = Metrics.errors(predictions: p, labels: y)
                return EvaluationSummary(count: p.count,
                                         auc: Metrics.auc(scores: p, labels: y),
                                         logloss: Metrics.logloss(probabilities: p, labels: y),
                                         accuracy: Metrics.accuracy(probabilities: p, labels: y),
                                         meanPrediction: sumP / n, meanLabel: sumY / n,
                                         rmse: errors.rmse, mae: errors.mae)
            }
        }
    }
}
