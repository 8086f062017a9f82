import ArgumentParser
import Foundation
import Logging
import RecData

extension InputFormatKind: ExpressibleByArgument {}

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
    @OptionGroup(title: "Encoding") var encoding: PrepareEncodingOptions
    @OptionGroup(title: "Split and negatives") var splitting: PrepareSplitOptions
    @Option(parsing: .unconditional, help: "Skip up to N bad rows (counted, reported, written to DIR/rejects.txt) instead of failing on the first.")
    var maxBadRows: Int = 0
    @Option(parsing: .unconditional, help: "Parsing threads (default: the number of cores).")
    var threads: Int?
    @Flag(help: "Replace an existing prepared dataset at --out.")
    var force = false
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if maxBadRows < 0 { throw outOfRange("--max-bad-rows", maxBadRows, "use 0 (stop at the first bad row) or more") }
        if let threads, threads < 1 { throw outOfRange("--threads", threads, "use 1 or more") }
        if input.isEmpty { throw ValidationError("--input needs at least one file.") }
        if let like {
            let given = [("--schema", schema != nil)] + encoding.given + splitting.given
            if let flag = given.first(where: \.1)?.0 {
                throw ValidationError("\(flag) cannot be combined with --like: the rows get exactly the encoding of '\(like)'. Drop \(flag), or prepare a dataset of their own without --like.")
            }
            return
        }
        if splitting.split == SplitKind.none { throw ValidationError("--split none is what --like DIR does: every row into the test split, encoded like DIR.") }
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
        encoding.apply(to: &options)
        splitting.apply(to: &options)
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
