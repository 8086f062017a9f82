import Foundation
import RecCore

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
final class StreamingPreparer: PreparePipeline {
    let threads: Int
    var chunks: [TextChunk] = []
    /// Per chunk: the global index of its first data row (header lines excluded).
    var firstRow: [Int] = []
    var hasHeader: [Bool] = []
    var totalRows = 0
    var positiveKeys: [UInt64] = []

    override init(options: PrepareOptions, layout: InputLayout, files: [MappedFile], output: AtomicDirectory,
                  log: @escaping @Sendable (String) -> Void) {
        threads = max(1, options.threads)
        positiveKeys = (options.positive ?? []).map { RowParser.key64(Array($0.utf8)) }
        super.init(options: options, layout: layout, files: files, output: output, log: log)
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
        let transformer = applied?.transformer ?? DenseEncoder(kind: options.denseTransform, statistics: statistics)
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
                 mapper: CategoricalMapper?, transformer: DenseEncoder?,
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
                 mapper: CategoricalMapper?, transformer: DenseEncoder?) {
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
                if d > 0 {
                    if let j = transformer!.apply(parser.dense, rows.dense[split] + n * d, count: d) {
                        let problem = transformer!.problem(field: j, name: layout.denseNames[j], value: parser.dense[j])
                        slot.bad.append(BadRow(file: chunk.fileIndex, line: line, problem: problem, text: Array(text)))
                        return slot.bad.count <= limit
                    }
                    if split == 0 { slot.statistics.add(parser.dense) }
                }
                rows.labels[split][n] = y
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
