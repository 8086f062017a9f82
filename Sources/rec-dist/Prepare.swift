import ArgumentParser
import Foundation
import Logging
import RecData

extension InputFormatKind: ExpressibleByArgument {}
extension DenseTransformKind: ExpressibleByArgument {}
extension SplitKind: ExpressibleByArgument {}

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

struct Prepare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Turn raw interaction logs into a prepared dataset that `train --data DIR` reads.",
        discussion: """
        Reads Criteo TSV, Avazu CSV, MovieLens (100K u.data with u.user/u.item; ratings.csv with \
        movies.csv), Taobao UserBehavior, Amazon user-item lists, DIGINETICA item views, or any CSV/TSV \
        described by --schema. Writes DIR/manifest.json (schema, vocabulary sizes, statistics, the \
        options) and DIR/{train,valid,test}.rdp (binary, columnar, checksummed) that ranks memory-map.

        Examples:
          rec-dist prepare --format criteo --input train.tsv --out data/criteo
          rec-dist prepare --format criteo --input train.tsv dev.tsv test.tsv --split files --out data/criteo
          rec-dist prepare --format movielens-100k --input ml-100k/u.data --label "rating>=4" --out data/ml
          rec-dist prepare --format taobao --input UserBehavior.csv --positive buy,cart --negatives 4 --out data/tb
          rec-dist prepare --format csv --schema schema.json --input log.csv --min-count 5 --out data/log

        --like DIR encodes new rows exactly as the dataset DIR was encoded (its format, label rule, \
        vocabulary ids or hashing, dense transforms with DIR's training statistics, side files): every \
        row goes to the one split `test`, in input order, with no sampled negatives; values DIR never \
        saw get the out-of-vocabulary id. A model trained on DIR scores the result:
          rec-dist prepare --like data/ml --input new-ratings.data --out data/ml-new
          rec-dist predict --checkpoint runs/ml/checkpoints --input data/ml-new --out scores.csv
        """)

    @Option(help: "Input format: \(InputFormatKind.allCases.map(\.rawValue).joined(separator: ", ")) (with --like: DIR's).")
    var format: InputFormatKind?
    @Option(help: "Encode the rows like this prepared dataset (its vocabularies, hashing, transforms and statistics) into one split, test, in input order.")
    var like: String?
    @Option(parsing: .upToNextOption, help: "Input file(s), read in order.")
    var input: [String]
    @Option(help: "Output directory (a new prepared dataset).")
    var out: String
    @Option(help: "csv: the schema file (JSON) naming the label, dense, categorical, user, item and timestamp columns.")
    var schema: String?
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
    @Option(help: "Split: random, contiguous (train, then test, then valid: DLRM's), time, leave-last-out, files (default: random for click logs, leave-last-out for interactions).")
    var split: SplitKind?
    @Option(parsing: .unconditional, help: "Fraction of rows for validation (random, contiguous, time; default 0.1, contiguous 1/14).")
    var validFraction: Double?
    @Option(parsing: .unconditional, help: "Fraction of rows for test (default 0.1, contiguous 1/14).")
    var testFraction: Double?
    @Option(parsing: .unconditional, help: "Negatives sampled per positive, never a known positive of the user (default: 4 for amazon and diginetica, else 0).")
    var negatives: Int?
    @Option(parsing: .unconditional, help: "leave-last-out: negatives sampled per held-out positive in valid and test (default: 99).")
    var evalNegatives: Int?
    @Option(parsing: .unconditional, help: "Seed of the random split and the negative sampling (default: 1).")
    var seed: UInt64?
    @Option(parsing: .unconditional, help: "Skip up to N bad rows (counted, reported, written to DIR/rejects.txt) instead of failing on the first.")
    var maxBadRows: Int = 0
    @Option(parsing: .unconditional, help: "Parsing threads (default: the number of cores).")
    var threads: Int?
    @Flag(help: "Replace an existing prepared dataset at --out.")
    var force = false
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if minCount != nil && hashBuckets != nil { throw ValidationError("--min-count and --hash-buckets exclude each other: choose one.") }
        if let minCount, minCount < 1 { throw ValidationError("--min-count \(minCount) is out of range: use 1 or more.") }
        if let hashBuckets, hashBuckets < 2 || hashBuckets > 1 << 30 { throw ValidationError("--hash-buckets \(hashBuckets) is out of range: use 2 to 1073741824.") }
        for (flag, value) in [("--valid-fraction", validFraction), ("--test-fraction", testFraction)] {
            if let value, !(value >= 0 && value < 1) { throw ValidationError("\(flag) \(value) is out of range: use a value in [0, 1).") }
        }
        if let negatives, negatives < 0 || negatives > 1000 { throw ValidationError("--negatives \(negatives) is out of range: use 0 to 1000.") }
        if let evalNegatives, evalNegatives < 0 || evalNegatives > 10_000 { throw ValidationError("--eval-negatives \(evalNegatives) is out of range: use 0 to 10000.") }
        if maxBadRows < 0 { throw ValidationError("--max-bad-rows \(maxBadRows) is out of range: use 0 (stop at the first bad row) or more.") }
        if let threads, threads < 1 { throw ValidationError("--threads \(threads) is out of range: use 1 or more.") }
        if input.isEmpty { throw ValidationError("--input needs at least one file.") }
        if let like {
            let given: [(String, Bool)] = [
                ("--schema", schema != nil), ("--min-count", minCount != nil), ("--hash-buckets", hashBuckets != nil),
                ("--dense-transform", denseTransform != nil), ("--label", label != nil), ("--positive", positive != nil),
                ("--split", split != nil), ("--valid-fraction", validFraction != nil), ("--test-fraction", testFraction != nil),
                ("--negatives", negatives != nil), ("--eval-negatives", evalNegatives != nil), ("--seed", seed != nil),
            ]
            if let flag = given.first(where: \.1)?.0 {
                throw ValidationError("\(flag) cannot be combined with --like: the rows get exactly the encoding of '\(like)'. Drop \(flag), or prepare a dataset of their own without --like.")
            }
            return
        }
        if split == SplitKind.none { throw ValidationError("--split none is what --like DIR does: every row into the test split, encoded like DIR.") }
        guard let format else {
            throw ValidationError("--format is required: one of \(InputFormatKind.allCases.map(\.rawValue).joined(separator: ", ")) (or --like DIR to encode rows like an existing dataset).")
        }
        if format == .csv && schema == nil { throw ValidationError("--format csv needs --schema FILE (see the README's \"generic CSV\" section).") }
        if format != .csv && schema != nil { throw ValidationError("--schema applies to --format csv only.") }
    }

    /// The options with this format's defaults for everything not given.
    func makeOptions() -> PrepareOptions {
        var options = PrepareOptions(format: format!, inputs: input, output: out)
        options.schema = schema
        if let minCount { options.encoding = .vocabulary(minCount: minCount) }
        if let hashBuckets { options.encoding = .hash(buckets: hashBuckets) }
        if let denseTransform { options.denseTransform = denseTransform }
        if let label { options.label = label }
        if let positive { options.positive = positive.names }
        if let split { options.split = split }
        if options.split == .contiguous {
            options.validFraction = PrepareOptions.dlrmHeldOutFraction
            options.testFraction = PrepareOptions.dlrmHeldOutFraction
        }
        if let validFraction { options.validFraction = validFraction }
        if let testFraction { options.testFraction = testFraction }
        if let negatives { options.negatives = negatives }
        if let evalNegatives { options.evalNegatives = evalNegatives }
        if let seed { options.seed = seed }
        options.maxBadRows = maxBadRows
        if let threads { options.threads = threads }
        options.force = force
        return options
    }

    func run() throws {
        bootstrapLogging(logging)
        let quiet = logging.logLevel > .info
        let log: @Sendable (String) -> Void = { line in if !quiet { logger.info("\(line)") } }
        let result = try exitingOnError {
            if let like {
                return try Preparer.apply(like: like, inputs: input, output: out, format: format, maxBadRows: maxBadRows,
                                          threads: threads, force: force, log: log)
            }
            return try Preparer.run(makeOptions(), log: log)
        }
        let m = result.manifest
        var lines = ["prepared \(result.directory): " + m.splits.map { "\($0.name) \($0.rows) rows (\($0.positives) positive)" }.joined(separator: ", ")]
        lines.append("fields: \(m.schema.dense.count) dense, \(m.schema.categorical.count) categorical (ids per field: \(m.vocabularySizes.map(String.init).joined(separator: ",")))")
        var stats = "read \(m.statistics.lines) rows in \(String(format: "%.2f", m.statistics.seconds)) s (\(String(format: "%.0f", m.statistics.megabytesPerSecond)) MB/s)"
        if let users = m.statistics.users, let items = m.statistics.items { stats += ", \(users) users, \(items) items" }
        if let n = m.statistics.sampledNegatives, n > 0 { stats += ", \(n) sampled negatives" }
        lines.append(stats)
        if m.statistics.badRows > 0 {
            lines.append("skipped \(m.statistics.badRows) bad row(s); see \(result.rejectsPath ?? "rejects.txt")")
        }
        logger.notice("\(lines.joined(separator: "\n"))")
    }
}
