import ArgumentParser
import Foundation
import RecData

extension DenseTransformKind: ExpressibleByArgument {}

/// A comma-separated list of names, e.g. `buy,cart`.
struct NameList: ExpressibleByArgument {
    var names: [String]
    init?(argument: String) {
        names = argument.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !names.isEmpty, names.allSatisfy({ !$0.isEmpty }) else { return nil }
    }
}

extension LabelRule: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
}

/// `prepare`'s encoding of the rows: categorical ids (vocabulary or hashing), dense transforms,
/// and what makes a label.
struct PrepareEncodingOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Vocabulary ids: values seen at least K times in the training split get their own id, rarer ones share one (default for interaction formats: 1).")
    var minCount: Int?
    @Option(parsing: .unconditional, help: "Hashed ids: M ids per field, as `train` hashes raw TSV (default for criteo, avazu, csv: 65536).")
    var hashBuckets: Int?
    @Option(help: "Dense transform: log1p, standardize (training-split mean and std) or none (default: log1p for criteo, else standardize).")
    var denseTransform: DenseTransformKind?
    @Option(help: "Explicit feedback: the label rule, e.g. \"rating>=4\" (default for MovieLens).")
    var label: LabelRule?
    @Option(help: "Behavior data: the positive behaviors, e.g. buy,cart (default for taobao: buy,cart,fav).")
    var positive: NameList?

    func validate() throws {
        if minCount != nil && hashBuckets != nil { throw ValidationError("--min-count and --hash-buckets exclude each other: choose one.") }
        if let minCount, minCount < 1 { throw outOfRange("--min-count", minCount, "use 1 or more") }
        if let hashBuckets, hashBuckets < 2 || hashBuckets > 1 << 30 { throw outOfRange("--hash-buckets", hashBuckets, "use 2 to 1073741824") }
    }

    /// The flags given, by name, for the check that --like takes none of them.
    var given: [(String, Bool)] {
        [("--min-count", minCount != nil), ("--hash-buckets", hashBuckets != nil), ("--dense-transform", denseTransform != nil),
         ("--label", label != nil), ("--positive", positive != nil)]
    }

    func apply(to options: inout PrepareOptions) {
        if let minCount { options.encoding = .vocabulary(minCount: minCount) }
        if let hashBuckets { options.encoding = .hash(buckets: hashBuckets) }
        if let denseTransform { options.denseTransform = denseTransform }
        if let label { options.label = label }
        if let positive { options.positive = positive.names }
    }
}
