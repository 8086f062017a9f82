import Foundation
import RecCore

/// `rec-dist prepare`: raw logs in, a prepared dataset directory out.
///
/// Click-log formats (criteo, avazu, csv) stream: the inputs are cut into chunks of whole lines,
/// parsed on all cores in waves, and the rows are appended in input order to the split files; a
/// first pass over the input runs only when it needs statistics of the training split (a
/// vocabulary, standardization) or timestamps (the time split). Interaction formats are read into
/// memory (about 20 bytes per interaction) because their labels, splits and negatives need every
/// interaction of a user (see `InteractionPreparer`).
///
/// Output goes to a hidden temporary directory beside `--out`, renamed into place at the end, so
/// an interrupted prepare never leaves a directory that looks like a finished dataset.
public enum Preparer {
    /// What a finished prepare reports.
    public struct Result: Sendable {
        public var manifest: PreparedManifest
        public var directory: String
        public var rejectsPath: String?
    }

    /// Runs `options` and returns the manifest written. `log` receives progress lines.
    public static func run(_ options: PrepareOptions, log: @escaping @Sendable (String) -> Void = { _ in }) throws(DataError) -> Result {
        try check(options)
        let output = try AtomicDirectory.preparing(path: options.output, force: options.force)
        do {
            let start = Date()
            var layout = try resolveLayout(options)
            try adjustLabel(&layout, options)
            let files = try options.inputs.map { (path: String) throws(DataError) -> MappedFile in
                let file = try MappedFile(path: path)
                if file.text.isEmpty {
                    throw DataError(file: path, message: "no rows: the file is empty",
                                    hint: "every --input must hold at least one row")
                }
                return file
            }
            var applied: AppliedEncoding?
            if let like = options.like {
                applied = try AppliedEncoding(PreparedDataset(directory: like))
                log("encoding the rows like \(like)")
            }
            let needsMemory = options.format.isInteraction || options.split == .leaveLastOut || options.negatives > 0
            var result: (PreparedManifest, String?)
            if needsMemory {
                result = try InteractionPreparer(options: options, layout: layout, files: files, output: output, log: log)
                    .run(start: start, applied: applied)
            } else {
                result = try StreamingPreparer(options: options, layout: layout, files: files, output: output, log: log)
                    .run(start: start, applied: applied)
            }
            try output.writeManifest(result.0)
            try output.commit()
            return Result(manifest: result.0, directory: options.output,
                          rejectsPath: result.1.map { (options.output as NSString).appendingPathComponent($0) })
        } catch {
            output.abandon()
            throw error
        }
    }

    /// Checks the combination of options before any work.
    static func check(_ options: PrepareOptions) throws(DataError) {
        func fail(_ message: String, _ hint: String? = nil) -> DataError {
            DataError(file: options.output, message: message, hint: hint)
        }
        if options.inputs.isEmpty { throw fail("no --input given") }
        if (options.split == .none) != (options.like != nil) {
            throw fail("--split none is for rows encoded like another dataset", "use `rec-dist prepare --like DIR`")
        }
        if options.format == .csv && options.schema == nil {
            throw fail("the csv format needs --schema FILE describing the columns", "see the README's \"generic CSV\" section")
        }
        if options.split == .files && options.inputs.count > 3 {
            throw fail("--split files maps the inputs to train, valid and test: give at most 3 inputs, not \(options.inputs.count)")
        }
        if !(options.validFraction >= 0 && options.testFraction >= 0 && options.validFraction + options.testFraction < 1) {
            throw fail("--valid-fraction \(options.validFraction) and --test-fraction \(options.testFraction) must be >= 0 with a sum below 1")
        }
        switch options.encoding {
        case .hash(let m) where m < 2 || m > 1 << 30: throw fail("--hash-buckets \(m) must be in 2...\(1 << 30)")
        case .vocabulary(let k) where k < 1: throw fail("--min-count \(k) must be at least 1")
        default: break
        }
        if options.negatives < 0 || options.evalNegatives < 0 { throw fail("--negatives and --eval-negatives must be >= 0") }
        if options.maxBadRows < 0 { throw fail("--max-bad-rows must be >= 0") }
        if options.rowsPerGroup < 1 { throw fail("rows per group must be >= 1") }
    }

    /// The layout of `options.format` (for csv, from the schema and the first input's header).
    static func resolveLayout(_ options: PrepareOptions) throws(DataError) -> InputLayout {
        guard options.format == .csv else { return InputLayout.builtIn(options.format) }
        let schema = try GenericSchema.load(path: options.schema!)
        var headerLine: String?
        if schema.header {
            let first = try MappedFile(path: options.inputs[0])
            let bytes = first.text
            if let base = bytes.baseAddress, !bytes.isEmpty {
                let end = memchr(base, 0x0A, bytes.count).map { UnsafeRawPointer($0) - base } ?? bytes.count
                var line = Array(UnsafeRawBufferPointer(start: base, count: end))
                if line.last == 0x0D { line.removeLast() }
                headerLine = String(decoding: line, as: UTF8.self)
            }
        }
        return try schema.layout(schemaPath: options.schema!, headerLine: headerLine)
    }

    /// Applies --label / --positive to the layout's label source, and checks they fit the format.
    static func adjustLabel(_ layout: inout InputLayout, _ options: PrepareOptions) throws(DataError) {
        func fail(_ message: String, _ hint: String? = nil) -> DataError {
            DataError(file: options.inputs.first ?? options.output, message: message, hint: hint)
        }
        if let rule = options.label {
            switch layout.label {
            case .rating:
                guard rule.column == "rating" else { throw fail("--label \"\(rule)\": this format's rating column is called \"rating\"") }
            case .binary where layout.format == .csv:
                let labelColumn = layout.columnNames[layout.actions.firstIndex(of: .label)!]
                guard rule.column == labelColumn else {
                    throw fail("--label \"\(rule)\" names \"\(rule.column)\", but the schema's label column is \"\(labelColumn)\"")
                }
                layout.label = .rating
            default:
                throw fail("--label applies to ratings (movielens, or a csv schema's label column); \(layout.format.rawValue) has \(layout.label == .binary ? "0/1 labels" : "no ratings")")
            }
        } else if layout.label == .rating {
            throw fail("explicit ratings need a label rule", "e.g. --label \"rating>=4\"")
        }
        if let positive = options.positive {
            if positive.isEmpty { throw fail("--positive names no behavior") }
            switch layout.label {
            case .behavior:
                if layout.format == .taobao, let unknown = positive.first(where: { !RowParser.behaviorNames.contains($0) }) {
                    throw fail("--positive \(unknown): Taobao behaviors are \(RowParser.behaviorNames.joined(separator: ", "))")
                }
            case .binary where layout.format == .csv && options.label == nil:
                layout.label = .behavior
            default:
                throw fail("--positive applies to behavior data (taobao, or a csv schema's label column)")
            }
        } else if layout.label == .behavior {
            throw fail("behavior data needs --positive", "e.g. --positive buy,cart")
        }
        if options.split == .time && !layout.hasTimestamp {
            throw fail("--split time needs a timestamp; \(layout.format.rawValue) has none", "use --split random or contiguous")
        }
        if (options.split == .leaveLastOut || options.negatives > 0) && (layout.userField == nil || layout.itemField == nil) {
            throw fail("--split leave-last-out and --negatives need user and item columns; \(layout.format.rawValue) has none",
                       layout.format == .csv ? "name them with \"user\" and \"item\" in the schema" : nil)
        }
    }

    /// How the label is described in the manifest.
    static func labelDescription(_ layout: InputLayout, _ options: PrepareOptions) -> String {
        switch layout.label {
        case .binary: return layout.format == .csv ? layout.columnNames[layout.actions.firstIndex(of: .label)!] : "click"
        case .rating: return options.label.map(String.init(describing:)) ?? "rating"
        case .behavior: return "behavior in " + (options.positive ?? []).joined(separator: ",")
        case .implicit: return "implicit (every input row is a positive)"
        }
    }

    /// A seeded hash of (file, line), uniform in [0, 1): the random split's coin.
    @inline(__always)
    static func splitCoin(seed: UInt64, file: Int, line: Int) -> Double {
        let x = SplitMix64.mix(seed ^ SplitMix64.mix(UInt64(file) << 40 ^ UInt64(line)))
        return Double(x >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }
}
