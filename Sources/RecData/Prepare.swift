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
                if file.bytes.isEmpty {
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
            let bytes = first.bytes
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

/// One bad input row: where, what, and its bytes (for the rejects file).
struct BadRow: Sendable {
    var file: Int
    var line: Int
    var problem: LineProblem
    var text: [UInt8]
}

/// Counts bad rows in input order, enforces --max-bad-rows and writes the rejects file.
final class BadRowLog {
    let limit: Int
    let paths: [String]
    let rejectsPath: String
    private(set) var count = 0
    private(set) var perFile: [Int]
    private var handle: FileHandle?

    init(limit: Int, paths: [String], rejectsPath: String) {
        self.limit = limit
        self.paths = paths
        self.rejectsPath = rejectsPath
        perFile = Array(repeating: 0, count: paths.count)
    }

    deinit { try? handle?.close() }

    /// Takes the bad rows of the next chunk in input order. `write` adds them to the rejects file.
    func take(_ rows: [BadRow], write: Bool) throws(DataError) {
        for row in rows {
            count += 1
            let error = row.problem.dataError(file: paths[row.file], line: row.line)
            if count > limit {
                var e = error
                if limit > 0 {
                    e.hint = (e.hint.map { $0 + "; " } ?? "") + "this is bad row \(count), more than --max-bad-rows \(limit) allows"
                } else {
                    e.hint = (e.hint.map { $0 + "; " } ?? "") + "or skip bad rows with --max-bad-rows N (they go to rejects.txt)"
                }
                throw e
            }
            guard write else { continue }
            perFile[row.file] += 1
            if handle == nil {
                _ = FileManager.default.createFile(atPath: rejectsPath, contents: nil)
                handle = FileHandle(forWritingAtPath: rejectsPath)
            }
            var line = Data("\(error.description)\t".utf8)
            line.append(contentsOf: row.text)
            line.append(0x0A)
            handle?.write(line)
        }
    }

    /// Finishes the rejects file; returns its name inside the dataset, if any row was rejected.
    func close() -> String? {
        guard let handle else { return nil }
        try? handle.synchronize()
        try? handle.close()
        self.handle = nil
        return (rejectsPath as NSString).lastPathComponent
    }
}

/// Running sums of the dense values of the training rows.
struct DenseStatistics: Sendable {
    var count = 0
    var sum: [Double]
    var sumOfSquares: [Double]

    init(fields: Int) {
        sum = Array(repeating: 0, count: fields)
        sumOfSquares = Array(repeating: 0, count: fields)
    }

    @inline(__always)
    mutating func add(_ values: UnsafePointer<Float>) {
        count += 1
        for j in sum.indices {
            let v = Double(values[j])
            sum[j] += v
            sumOfSquares[j] += v * v
        }
    }

    mutating func merge(_ other: DenseStatistics) {
        count += other.count
        for j in sum.indices {
            sum[j] += other.sum[j]
            sumOfSquares[j] += other.sumOfSquares[j]
        }
    }

    var mean: [Double] { sum.map { count > 0 ? $0 / Double(count) : 0 } }
    var std: [Double] {
        sum.indices.map { j in
            guard count > 0 else { return 1 }
            let m = sum[j] / Double(count)
            return max(sumOfSquares[j] / Double(count) - m * m, 0).squareRoot()
        }
    }
}

/// Turns raw dense values into what the split files store.
struct DenseTransformer: Sendable {
    let kind: DenseTransformKind
    let mean: [Float]
    let inverseStd: [Float]
    /// `logTransform(i)` for the small non-negative integers (most of Criteo's counts): the same
    /// values, without a log1pf call each.
    let logTable: [Float]

    init(kind: DenseTransformKind, statistics: DenseStatistics) {
        self.init(kind: kind, mean: statistics.mean, std: statistics.std)
    }

    /// With the training split's mean and standard deviation per field (as the manifest records them).
    init(kind: DenseTransformKind, mean: [Double], std: [Double]) {
        self.kind = kind
        self.mean = mean.map(Float.init)
        inverseStd = std.map { $0 > 0 ? Float(1 / $0) : 1 }
        logTable = kind == .log1p ? (0..<4096).map { logTransform(Float($0)) } : []
    }

    /// raw: (fields) -> out: (fields).
    @inline(__always)
    func apply(_ raw: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count: Int) {
        switch kind {
        case .log1p:
            logTable.withUnsafeBufferPointer { table in
                for j in 0..<count {
                    let x = raw[j]
                    if x >= 0 && x < 4096, case let i = Int(x), Float(i) == x {
                        out[j] = table[i]
                    } else {
                        out[j] = logTransform(x)
                    }
                }
            }
        case .standardize: for j in 0..<count { out[j] = (raw[j] - mean[j]) * inverseStd[j] }
        case .none: out.update(from: raw, count: count)
        }
    }
}

/// Per-split column buffers for the rows of one chunk.
final class SplitRows {
    let capacity: Int
    let denseCount: Int
    let categoricalCount: Int
    var counts = [0, 0, 0]
    var positives = [0, 0, 0]
    let labels: [UnsafeMutablePointer<Float>]
    let dense: [UnsafeMutablePointer<Float>]
    let categorical: [UnsafeMutablePointer<UInt32>]

    init(capacity: Int, denseCount: Int, categoricalCount: Int) {
        self.capacity = capacity
        self.denseCount = denseCount
        self.categoricalCount = categoricalCount
        labels = (0..<3).map { _ in .allocate(capacity: max(capacity, 1)) }
        dense = (0..<3).map { _ in .allocate(capacity: max(capacity * denseCount, 1)) }
        categorical = (0..<3).map { _ in .allocate(capacity: max(capacity * categoricalCount, 1)) }
    }

    deinit {
        labels.forEach { $0.deallocate() }
        dense.forEach { $0.deallocate() }
        categorical.forEach { $0.deallocate() }
    }

    func reset() {
        counts = [0, 0, 0]
        positives = [0, 0, 0]
    }
}

/// The click-log pipeline: chunked, parallel, streaming, in input order.
final class StreamingPreparer {
    let options: PrepareOptions
    let layout: InputLayout
    let files: [MappedFile]
    let output: AtomicDirectory
    let log: @Sendable (String) -> Void
    let threads: Int
    var chunks: [TextChunk] = []
    /// Per chunk: the global index of its first data row (header lines excluded).
    var firstRow: [Int] = []
    var hasHeader: [Bool] = []
    var totalRows = 0
    var positiveKeys: [UInt64] = []

    init(options: PrepareOptions, layout: InputLayout, files: [MappedFile], output: AtomicDirectory,
         log: @escaping @Sendable (String) -> Void) {
        self.options = options
        self.layout = layout
        self.files = files
        self.output = output
        self.log = log
        threads = max(1, options.threads)
        positiveKeys = (options.positive ?? []).map { RowParser.key64(Array($0.utf8)) }
    }

    enum Pass { case timestamps, statistics, write }

    /// Per-thread state for one wave slot: a parser and what the pass accumulates.
    final class Slot {
        let parser: RowParser
        var counts: FieldCounters?
        var statistics: DenseStatistics
        var timestamps: [Int64] = []
        var bad: [BadRow] = []
        let rows: SplitRows
        let ids: UnsafeMutablePointer<UInt32>
        let transformed: UnsafeMutablePointer<Float>

        init(layout: InputLayout, keyMode: KeyMode, capacity: Int) {
            parser = RowParser(layout: layout, keyMode: keyMode)
            counts = nil
            statistics = DenseStatistics(fields: layout.denseNames.count)
            rows = SplitRows(capacity: capacity, denseCount: layout.denseNames.count, categoricalCount: layout.categoricalNames.count)
            ids = .allocate(capacity: max(layout.categoricalNames.count, 1))
            transformed = .allocate(capacity: max(layout.denseNames.count, 1))
        }

        deinit {
            ids.deallocate()
            transformed.deallocate()
        }
    }

    /// Prepares the inputs; with `applied`, every row is encoded like that dataset into the test split.
    func run(start: Date, applied: AppliedEncoding?) throws(DataError) -> (PreparedManifest, String?) {
        try applied?.check(layout, input: options.inputs[0])
        // Chunks and line counts.
        for (i, file) in files.enumerated() {
            let fileChunks = TextInput.chunks(of: file, fileIndex: i, targetBytes: options.chunkBytes, threads: threads)
            var header = false
            if let first = fileChunks.first {
                TextInput.forEachLine(in: first, of: file) { _, text in
                    header = RowParser(layout: layout, keyMode: .key64).isHeader(text)
                    return false
                }
            }
            hasHeader.append(header)
            chunks += fileChunks
        }
        for chunk in chunks {
            firstRow.append(totalRows)
            totalRows += chunk.lineCount - (chunk.firstLine == 1 && hasHeader[chunk.fileIndex] ? 1 : 0)
        }
        if totalRows == 0 {
            throw DataError(file: options.inputs[0], message: "no rows: the input has only a header", hint: "check the --input files")
        }
        let keyMode: KeyMode
        if case .hash = options.encoding { keyMode = .criteoHash } else { keyMode = .key64 }
        let capacity = chunks.map(\.lineCount).max() ?? 0
        let slots = (0..<min(threads, max(chunks.count, 1))).map { _ in Slot(layout: layout, keyMode: keyMode, capacity: capacity) }

        // Time split: thresholds from every row's timestamp.
        var timeThresholds: (valid: Int64, test: Int64) = (.max, .max)
        if options.split == .time {
            try runPass(.timestamps, slots: slots, splitOf: { _, _, _, _ in 0 }, mapper: nil, transformer: nil, writers: nil, badRows: nil)
            var all = slots.flatMap(\.timestamps)
            all.sort()
            func quantile(_ q: Double) -> Int64 {
                let k = Int((Double(all.count) * q).rounded(.down))
                return k >= all.count ? .max : all[k]
            }
            timeThresholds = (quantile(1 - options.validFraction - options.testFraction), quantile(1 - options.testFraction))
            for slot in slots { slot.timestamps = [] }
            log("time split: valid from timestamp \(timeThresholds.valid), test from \(timeThresholds.test)")
        }
        let options = self.options
        let total = totalRows
        let trainEnd = Int((Double(total) * (1 - options.validFraction - options.testFraction)).rounded())
        let testEnd = trainEnd + Int((Double(total) * options.testFraction).rounded())
        let thresholds = timeThresholds
        let splitOf: (Int, Int, Int, Int64) -> Int = { file, line, row, timestamp in
            switch options.split {
            case .random:
                let u = Preparer.splitCoin(seed: options.seed, file: file, line: line)
                return u < 1 - options.validFraction - options.testFraction ? 0 : u < 1 - options.testFraction ? 1 : 2
            case .contiguous:
                return row < trainEnd ? 0 : row < testEnd ? 2 : 1
            case .time:
                return timestamp < thresholds.valid ? 0 : timestamp < thresholds.test ? 1 : 2
            case .files:
                return file
            case .none:
                return 2
            case .leaveLastOut:
                preconditionFailure("leave-last-out runs in the interaction pipeline")
            }
        }

        // Statistics of the training split, when the encoding or the transform needs them.
        var statistics = DenseStatistics(fields: layout.denseNames.count)
        let mapper: CategoricalMapper
        var distinct: [Int]?
        let needsStatistics: Bool
        switch options.encoding {
        case _ where applied != nil: needsStatistics = false
        case .vocabulary: needsStatistics = true
        case .hash: needsStatistics = options.denseTransform == .standardize && !layout.denseNames.isEmpty
        }
        if needsStatistics {
            log("pass 1: \(options.encoding.isVocabulary ? "counting values" : "statistics") over \(total) rows")
            if options.encoding.isVocabulary {
                for slot in slots { slot.counts = FieldCounters(fields: layout.categoricalNames.count) }
            }
            try runPass(.statistics, slots: slots, splitOf: splitOf, mapper: nil, transformer: nil, writers: nil, badRows: nil)
            for slot in slots.dropFirst() { slots[0].statistics.merge(slot.statistics) }
            statistics = slots[0].statistics
        }
        switch options.encoding {
        case _ where applied != nil:
            mapper = applied!.mapper
        case .hash(let buckets):
            mapper = CategoricalMapper(hashBuckets: buckets, fields: layout.categoricalNames.count)
        case .vocabulary(let minCount):
            var vocabularies: [FieldVocabulary] = []
            for f in layout.categoricalNames.indices {
                var merged = slots[0].counts?.table(f) ?? KeyTable()
                for slot in slots.dropFirst() { if let other = slot.counts?.table(f) { merged.merge(other) } }
                vocabularies.append(FieldVocabulary(counts: merged, minCount: minCount))
            }
            for slot in slots { slot.counts = nil }
            mapper = CategoricalMapper(vocabularies: vocabularies, minCount: minCount)
            distinct = vocabularies.map(\.distinct)
            try VocabularyFile.write(vocabularies, to: output.file(VocabularyFile.name))
        }
        let transformer = applied?.transformer ?? DenseTransformer(kind: options.denseTransform, statistics: statistics)
        for slot in slots { slot.statistics = DenseStatistics(fields: layout.denseNames.count) }

        // The write pass.
        let schemaFields = applied?.schema
            ?? Self.schema(layout: layout, options: options, mapper: mapper, distinct: distinct, statistics: statistics)
        let schemaHash = PreparedManifest.schemaHash(schemaFields)
        var writers: [PreparedSplitWriter] = []
        for name in PreparedManifest.splitNames {
            writers.append(try PreparedSplitWriter(path: output.file("\(name).rdp"), denseCount: layout.denseNames.count,
                                                   categoricalCount: layout.categoricalNames.count, schemaHash: schemaHash,
                                                   split: name, rowsPerGroup: options.rowsPerGroup))
        }
        let badRows = BadRowLog(limit: options.maxBadRows, paths: options.inputs, rejectsPath: output.file("rejects.txt"))
        log("\(needsStatistics ? "pass 2" : "pass 1"): writing \(total) rows")
        let positives = try runPass(.write, slots: slots, splitOf: splitOf, mapper: mapper, transformer: transformer,
                                    writers: writers, badRows: badRows)
        var headers: [PreparedSplitHeader] = []
        for writer in writers { headers.append(try writer.finish()) }
        if !needsStatistics {
            for slot in slots.dropFirst() { slots[0].statistics.merge(slot.statistics) }
            statistics = slots[0].statistics
        }
        let rejects = badRows.close()
        if headers[0].rows == 0 && applied == nil {
            throw DataError(file: options.inputs[0], message: "the training split is empty (\(total) rows read, \(badRows.count) bad)",
                            hint: options.split == .time ? "all rows share the latest timestamps; use --split random" : "check the split options")
        }

        // The manifest, with the statistics of the write pass when there was no first pass (they
        // are descriptive then, and not part of the schema hash).
        let schema = applied?.schema
            ?? Self.schema(layout: layout, options: options, mapper: mapper, distinct: distinct, statistics: statistics)
        precondition(PreparedManifest.schemaHash(schema) == schemaHash)
        let seconds = Date().timeIntervalSince(start)
        let bytes = files.reduce(0) { $0 + $1.bytes.count }
        let inputs = files.enumerated().map { i, file in
            PreparedManifest.Input(path: file.path, bytes: file.bytes.count,
                                   lines: chunks.filter { $0.fileIndex == i }.reduce(0) { $0 + $1.lineCount },
                                   headerLines: hasHeader[i] ? 1 : 0, badRows: badRows.perFile[i])
        }
        let manifest = PreparedManifest(
            createdBy: "rec-dist prepare", source: .init(format: options.format.rawValue, inputs: inputs), options: options,
            schema: schema,
            splits: output.keepSplits(PreparedManifest.splitNames.enumerated().map { k, name in
                .init(name: name, file: "\(name).rdp", rows: headers[k].rows, positives: positives[k], groupSize: nil)
            }, applied: applied != nil),
            statistics: .init(lines: total, badRows: badRows.count, rows: headers.reduce(0) { $0 + $1.rows },
                              users: nil, items: nil, counts: nil, sampledNegatives: nil, seconds: seconds,
                              megabytesPerSecond: Double(bytes) / 1e6 / max(seconds, 1e-9)),
            schemaHash: hex64(schemaHash))
        return (manifest, rejects)
    }

    /// Runs one pass over every chunk, in waves of one chunk per slot; returns the positives per split (write pass).
    @discardableResult
    func runPass(_ pass: Pass, slots: [Slot], splitOf: @escaping (Int, Int, Int, Int64) -> Int,
                 mapper: CategoricalMapper?, transformer: DenseTransformer?,
                 writers: [PreparedSplitWriter]?, badRows: BadRowLog?) throws(DataError) -> [Int] {
        let countingLog = badRows ?? BadRowLog(limit: options.maxBadRows, paths: options.inputs, rejectsPath: "")
        var positives = [0, 0, 0]
        var waveStart = 0
        let this = UncheckedSendable(self)
        let slotsBox = UncheckedSendable(slots)
        let split = UncheckedSendable(splitOf)
        while waveStart < chunks.count {
            let n = min(slots.count, chunks.count - waveStart)
            let start = waveStart
            parallelFor(n, threads: n) { i in
                this.value.process(chunk: start + i, slot: slotsBox.value[i], pass: pass, splitOf: split.value,
                                   mapper: mapper, transformer: transformer)
            }
            for i in 0..<n {
                let slot = slots[i]
                try countingLog.take(slot.bad, write: pass == .write)
                slot.bad.removeAll(keepingCapacity: true)
                if pass == .write, let writers {
                    let rows = slot.rows
                    for k in 0..<3 where rows.counts[k] > 0 {
                        try writers[k].append(count: rows.counts[k], labels: rows.labels[k], dense: rows.dense[k],
                                              categorical: rows.categorical[k])
                        positives[k] += rows.positives[k]
                    }
                }
            }
            // Drop the wave's input pages from the process (they stay in the page cache), so
            // the resident size does not grow with the input.
            for i in 0..<n { files[chunks[waveStart + i].fileIndex].releasePages(chunks[waveStart + i].bytes) }
            waveStart += n
        }
        return positives
    }

    /// Parses one chunk for `pass` into its slot.
    func process(chunk index: Int, slot: Slot, pass: Pass, splitOf: (Int, Int, Int, Int64) -> Int,
                 mapper: CategoricalMapper?, transformer: DenseTransformer?) {
        let chunk = chunks[index]
        let file = files[chunk.fileIndex]
        let parser = slot.parser
        let rows = slot.rows
        rows.reset()
        let skipHeader = chunk.firstLine == 1 && hasHeader[chunk.fileIndex]
        let lastLine = chunk.firstLine + chunk.lineCount - 1
        let d = layout.denseNames.count, c = layout.categoricalNames.count
        let label = layout.label
        let rule = options.label
        let positiveKeys = self.positiveKeys
        let limit = options.maxBadRows
        var row = firstRow[index]
        TextInput.forEachLine(in: chunk, of: file) { line, text in
            if skipHeader && line == 1 { return true }
            defer { row += 1 }
            if let problem = parser.parse(text, truncatedEnd: chunk.endsWithoutNewline && line == lastLine) {
                slot.bad.append(BadRow(file: chunk.fileIndex, line: line, problem: problem, text: pass == .write ? Array(text) : []))
                return slot.bad.count <= limit
            }
            let split = splitOf(chunk.fileIndex, line, row, parser.timestamp)
            switch pass {
            case .timestamps:
                slot.timestamps.append(parser.timestamp)
            case .statistics:
                guard split == 0 else { return true }
                if d > 0 { slot.statistics.add(parser.dense) }
                if let counts = slot.counts { counts.add(parser.keys) }
            case .write:
                let y: Float
                switch label {
                case .binary: y = parser.label
                case .rating: y = rule!.isPositive(parser.rating) ? 1 : 0
                case .behavior: y = positiveKeys.contains(parser.behaviorKey) ? 1 : 0
                case .implicit: y = 1
                }
                let n = rows.counts[split]
                rows.labels[split][n] = y
                if d > 0 {
                    if split == 0 { slot.statistics.add(parser.dense) }
                    transformer!.apply(parser.dense, rows.dense[split] + n * d, count: d)
                }
                if c > 0 { mapper!.map(parser.keys, into: rows.categorical[split] + n * c) }
                rows.counts[split] = n + 1
                if y == 1 { rows.positives[split] += 1 }
            }
            return true
        }
    }

    /// The manifest's schema for a click-log layout.
    static func schema(layout: InputLayout, options: PrepareOptions, mapper: CategoricalMapper, distinct: [Int]?,
                       statistics: DenseStatistics) -> PreparedManifest.Schema {
        let mean = statistics.mean, std = statistics.std
        let encoding = options.encoding.isVocabulary ? "vocabulary" : "hash"
        return PreparedManifest.Schema(
            label: Preparer.labelDescription(layout, options),
            dense: layout.denseNames.indices.map { j in
                .init(name: layout.denseNames[j], role: layout.denseRoles[j], transform: options.denseTransform.rawValue,
                      mean: mean[j], std: std[j])
            },
            categorical: layout.categoricalNames.indices.map { f in
                .init(name: layout.categoricalNames[f], role: layout.categoricalRoles[f], encoding: encoding,
                      size: mapper.sizes[f], distinctValues: distinct?[f])
            },
            userField: layout.userField.map { layout.categoricalNames[$0] },
            itemField: layout.itemField.map { layout.categoricalNames[$0] })
    }
}

extension CategoricalEncoding {
    var isVocabulary: Bool {
        if case .vocabulary = self { return true }
        return false
    }
}
