import Foundation

/// What `prepare` does to the dense values (the model then reads them as they are).
public enum DenseTransformKind: String, Codable, CaseIterable, Sendable {
    /// log(1 + max(x, 0)), as DLRM does to Criteo's counts.
    case log1p
    /// (x - mean) / std with the training split's mean and standard deviation (std 0 -> 1).
    case standardize
    /// The parsed values unchanged.
    case none
}

/// How rows are assigned to the train, valid and test splits.
public enum SplitKind: String, Codable, CaseIterable, Sendable {
    /// Each row independently, by a seeded hash of its file and line: the same rows for the same seed.
    case random
    /// In input order: the first rows train, then test, then valid (DLRM's Criteo protocol:
    /// 6 days of 7 train, the last day half test, half validation).
    case contiguous
    /// By timestamp: the oldest rows train, then valid, then test (quantiles of the timestamps).
    case time
    /// Per user: the last positive (by time) is the test row, the one before the valid row, the
    /// rest train; each held-out positive comes with `evalNegatives` sampled negatives (ranking).
    case leaveLastOut = "leave-last-out"
    /// One split per input file: the first is train, then valid, then test.
    case files
    /// Every row in the test split, in input order: rows encoded like an existing dataset
    /// (`prepare --like`), for scoring.
    case none
}

/// A label rule for explicit feedback, like `rating>=4`.
public struct LabelRule: Codable, Sendable, Equatable, CustomStringConvertible {
    public enum Comparison: String, Codable, Sendable, CaseIterable {
        case greaterOrEqual = ">=", lessOrEqual = "<=", equal = "==", notEqual = "!=", greater = ">", less = "<"
    }

    public var column: String
    public var comparison: Comparison
    public var threshold: Double

    public init(column: String, comparison: Comparison, threshold: Double) {
        self.column = column
        self.comparison = comparison
        self.threshold = threshold
    }

    /// Parses `NAME OP NUMBER` with OP one of >= > <= < == !=, e.g. `rating>=4`.
    public init?(_ text: String) {
        for comparison in Comparison.allCases {   // two-character operators first
            guard let range = text.range(of: comparison.rawValue) else { continue }
            let name = text[..<range.lowerBound].trimmingCharacters(in: .whitespaces)
            let number = text[range.upperBound...].trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty, let value = Double(number), value.isFinite else { return nil }
            self.init(column: name, comparison: comparison, threshold: value)
            return
        }
        return nil
    }

    @inline(__always)
    public func isPositive(_ value: Double) -> Bool {
        switch comparison {
        case .greaterOrEqual: return value >= threshold
        case .greater: return value > threshold
        case .lessOrEqual: return value <= threshold
        case .less: return value < threshold
        case .equal: return value == threshold
        case .notEqual: return value != threshold
        }
    }

    public var description: String {
        let number = threshold == threshold.rounded() && abs(threshold) < 1e15 ? String(Int(threshold)) : String(threshold)
        return "\(column)\(comparison.rawValue)\(number)"
    }
}

/// Everything `rec-dist prepare` was asked to do, with each format's defaults filled in. Written
/// to the manifest as the exact options used.
public struct PrepareOptions: Codable, Sendable, Equatable {
    public var format: InputFormatKind
    public var inputs: [String]
    public var output: String
    /// The generic csv format's schema file.
    public var schema: String?
    public var encoding: CategoricalEncoding
    public var denseTransform: DenseTransformKind
    /// Explicit feedback: which ratings are positives.
    public var label: LabelRule?
    /// Behavior data: which behaviors are positives.
    public var positive: [String]?
    public var split: SplitKind
    public var validFraction: Double
    public var testFraction: Double
    /// Sampled negatives per training positive (implicit feedback); never a known positive of the user.
    public var negatives: Int
    /// Sampled negatives per held-out positive in valid and test (leave-last-out ranking groups).
    public var evalNegatives: Int
    public var seed: UInt64
    /// Bad rows that may be skipped (and written to rejects.txt) before prepare fails.
    public var maxBadRows: Int
    /// Parsing threads.
    public var threads: Int
    public var rowsPerGroup: Int
    /// Bytes of input per unit of parallel work.
    public var chunkBytes: Int
    public var force: Bool
    /// `prepare --like`: the prepared dataset whose encoding these rows get (its vocabularies,
    /// hashing, transforms and statistics); nil for a dataset of its own.
    public var like: String?

    /// The defaults for `format`: categorical values hashed into 65,536 ids (as `train` does with
    /// raw TSV) for the click-log formats and a vocabulary of every training value for the
    /// interaction formats; log1p for Criteo, standardization otherwise; a random 80/10/10 split
    /// for click logs and leave-last-out (99 evaluation negatives) for interactions; `rating>=4`
    /// for MovieLens; `buy,cart,fav` for Taobao; 4 training negatives for the implicit-only formats.
    public init(format: InputFormatKind, inputs: [String], output: String) {
        self.format = format
        self.inputs = inputs
        self.output = output
        encoding = format.isInteraction ? .vocabulary(minCount: 1) : .hash(buckets: 65_536)
        denseTransform = format == .criteo ? .log1p : .standardize
        switch format {
        case .movielens100k, .movielens: label = LabelRule(column: "rating", comparison: .greaterOrEqual, threshold: 4)
        default: label = nil
        }
        positive = format == .taobao ? ["buy", "cart", "fav"] : nil
        split = format.isInteraction ? .leaveLastOut : .random
        validFraction = 0.1
        testFraction = 0.1
        negatives = format.isImplicitOnly ? 4 : 0
        evalNegatives = 99
        seed = 1
        maxBadRows = 0
        threads = max(1, ProcessInfo.processInfo.activeProcessorCount)
        rowsPerGroup = PreparedSplitFormat.defaultRowsPerGroup
        chunkBytes = 8 << 20
        force = false
    }

    /// The fractions of the contiguous split that DLRM uses for Criteo Kaggle: 1/14 test, 1/14 valid.
    public static let dlrmHeldOutFraction = 1.0 / 14.0
}
