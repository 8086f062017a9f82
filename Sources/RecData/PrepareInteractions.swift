import Foundation
import RecCore

/// The interaction pipeline of `prepare` (MovieLens, Taobao, Amazon, DIGINETICA, and csv data
/// with --negatives or leave-last-out): every row is read into memory (its categorical keys,
/// dense values, label and timestamp), side features are joined in, rows are split (per user for
/// leave-last-out), vocabularies and statistics come from the training rows, and sampled
/// negatives are written after each positive.
///
/// Negatives: for a positive of user u, an item is drawn uniformly from the items of the training
/// split (seeded) and redrawn while it is a known positive of u (in any split); the negative row
/// is the positive row with the item and its item-side fields (`FieldRole.itemFeature`, taken
/// from the item's first training row) replaced, and label 0.
final class InteractionPreparer: PreparePipeline {
    let keyMode: KeyMode

    /// Columns that come from the input lines; the rest are joined side features.
    var inputCategorical = 0
    var inputDense = 0
    var side: [SideTable] = []

    // The rows: keys (n, C), dense (n, D), labels, timestamps, file and line of each.
    var keys: [UInt64] = []
    var dense: [Float] = []
    var labels: [Float] = []
    var timestamps: [Int64] = []
    var fileOf: [Int32] = []
    var lineOf: [Int32] = []
    var count = 0
    var counts: [String: Int] = [:]
    var lines: [Int] = []
    var headerLines: [Int] = []
    /// The raw values of the user and item fields by key (first spelling seen), and the item
    /// metadata of the side files (MovieLens titles and genres), for `users.tsv` and `items.tsv`.
    var userNames: [UInt64: String] = [:]
    var itemNames: [UInt64: String] = [:]
    var itemMetadata: [UInt64: (title: String, genres: String)] = [:]

    override init(options: PrepareOptions, layout: InputLayout, files: [MappedFile], output: AtomicDirectory,
                  log: @escaping @Sendable (String) -> Void) {
        if case .hash = options.encoding { keyMode = .criteoHash } else { keyMode = .key64 }
        super.init(options: options, layout: layout, files: files, output: output, log: log)
    }

    var c: Int { layout.categoricalNames.count }
    var d: Int { layout.denseNames.count }

    /// Prepares the inputs; with `applied`, every row is encoded like that dataset into the test split.
    func run(start: Date, applied: AppliedEncoding?) throws(DataError) -> (PreparedManifest, String?) {
        inputCategorical = layout.categoricalNames.count
        inputDense = layout.denseNames.count
        try loadSideTables(applied: applied)
        try applied?.check(layout, input: options.inputs[0])
        let badRows = BadRowLog(limit: options.maxBadRows, paths: options.inputs, rejectsPath: output.file("rejects.txt"))
        try parseInputs(badRows)
        guard count > 0 else {
            throw DataError(file: options.inputs[0], message: "no rows: every line was a header or a bad row", hint: "check the --input files")
        }
        joinSideFeatures()
        log("read \(count) interactions")

        // Users and items (all rows), for the manifest.
        var users = KeyTable(), items = KeyTable()
        let u = layout.userField, it = layout.itemField
        if let u, let it {
            for r in 0..<count {
                if keys[r * c + u] != 0 { users.add(keys[r * c + u]) }
                if keys[r * c + it] != 0 { items.add(keys[r * c + it]) }
            }
        }

        // Splits.
        let split = assignSplits()
        var trainRows = 0
        for s in split where s == 0 { trainRows += 1 }
        guard trainRows > 0 || applied != nil else {
            throw DataError(file: options.inputs[0], message: "the training split is empty (\(count) rows)",
                            hint: "check the split options")
        }

        // Vocabularies and statistics from the training rows.
        var statistics = DenseStatistics(fields: d)
        var tables = (0..<c).map { _ in KeyTable() }
        let vocabulary = options.encoding.isVocabulary && applied == nil
        dense.withUnsafeBufferPointer { values in
            for r in 0..<count where split[r] == 0 {
                if d > 0 { statistics.add(values.baseAddress! + r * d) }
                if vocabulary {
                    for f in 0..<c where keys[r * c + f] != 0 { tables[f].add(keys[r * c + f]) }
                }
            }
        }
        let mapper: CategoricalMapper
        var distinct: [Int]?
        switch options.encoding {
        case _ where applied != nil:
            mapper = applied!.mapper
        case .hash(let buckets):
            mapper = CategoricalMapper(hashBuckets: buckets, fields: c)
        case .vocabulary(let minCount):
            let vocabularies = tables.map { FieldVocabulary(counts: $0, minCount: minCount) }
            mapper = CategoricalMapper(vocabularies: vocabularies, minCount: minCount)
            distinct = vocabularies.map(\.distinct)
            try VocabularyFile.write(vocabularies, to: output.file(VocabularyFile.name))
        }
        tables = []
        if applied == nil { try writeCatalog(mapper: mapper) }
        let transformer = applied?.transformer ?? DenseEncoder(kind: options.denseTransform, statistics: statistics)
        let schema = applied?.schema
            ?? StreamingPreparer.schema(layout: layout, options: options, mapper: mapper, distinct: distinct, statistics: statistics)
        let schemaHash = PreparedManifest.schemaHash(schema)

        // Negative sampling: the training items, each with its first training row (item-side fields).
        var itemIndex = KeyTable()
        var universe: [UInt64] = [], representative: [Int] = []
        var known = KeyTable()
        if let u, let it {
            for r in 0..<count {
                let item = keys[r * c + it]
                if split[r] == 0 && item != 0 && itemIndex.find(item) == nil {
                    itemIndex.set(item, UInt32(universe.count))
                    universe.append(item)
                    representative.append(r)
                }
                if labels[r] == 1 { known.add(Self.pairKey(keys[r * c + u], item)) }
            }
        }
        let wantsNegatives = options.negatives > 0 || (options.split == .leaveLastOut && options.evalNegatives > 0)
        if wantsNegatives && universe.count < 2 {
            throw DataError(file: options.inputs[0], message: "cannot sample negatives: the training split has \(universe.count) distinct item(s)")
        }

        // Write.
        var writers: [PreparedSplitWriter] = []
        for name in PreparedManifest.splitNames {
            writers.append(try PreparedSplitWriter(path: output.file("\(name).rdp"), denseCount: d, categoricalCount: c,
                                                   schemaHash: schemaHash, split: name, rowsPerGroup: options.rowsPerGroup))
        }
        var rng = RNG(seed: options.seed, stream: 0x6E65_6761_7469_7665)   // "negative"
        let ids = UnsafeMutablePointer<UInt32>.allocate(capacity: max(c, 1))
        let transformed = UnsafeMutablePointer<Float>.allocate(capacity: max(d, 1))
        let negativeKeys = UnsafeMutablePointer<UInt64>.allocate(capacity: max(c, 1))
        let negativeDense = UnsafeMutablePointer<Float>.allocate(capacity: max(d, 1))
        defer {
            ids.deallocate(); transformed.deallocate(); negativeKeys.deallocate(); negativeDense.deallocate()
        }
        var positives = [0, 0, 0]
        var sampled = 0, unsampleable = 0
        let itemSideCategorical = layout.categoricalRoles.indices.filter { layout.categoricalRoles[$0].isItemSide }
        let itemSideDense = layout.denseRoles.indices.filter { layout.denseRoles[$0].isItemSide }
        try keys.withUnsafeBufferPointer { (keyBuffer: UnsafeBufferPointer<UInt64>) throws(DataError) in
            try dense.withUnsafeBufferPointer { (denseBuffer: UnsafeBufferPointer<Float>) throws(DataError) in
                let keyBase = keyBuffer.baseAddress ?? UnsafePointer(negativeKeys)
                let denseBase = denseBuffer.baseAddress ?? UnsafePointer(negativeDense)
                /// `origin` is the input row the values come from; `itemOrigin` the one the item-side
                /// dense values come from (another row for a sampled negative).
                func emit(split s: Int, label: Float, keys rowKeys: UnsafePointer<UInt64>, dense rowDense: UnsafePointer<Float>,
                          origin: Int, itemOrigin: Int) throws(DataError) {
                    mapper.map(rowKeys, into: ids)
                    if d > 0, let j = transformer.apply(rowDense, transformed, count: d) {
                        let r = layout.denseRoles[j].isItemSide ? itemOrigin : origin
                        throw transformer.problem(field: j, name: layout.denseNames[j], value: rowDense[j])
                            .dataError(file: options.inputs[Int(fileOf[r])], line: Int(lineOf[r]))
                    }
                    try writers[s].append(label: label, dense: transformed, categorical: ids)
                    if label == 1 { positives[s] += 1 }
                }
                for r in 0..<count {
                    let s = split[r]
                    try emit(split: s, label: labels[r], keys: keyBase + r * c, dense: denseBase + r * d, origin: r, itemOrigin: r)
                    guard labels[r] == 1, let u, let it else { continue }
                    let k = s == 0 || options.split != .leaveLastOut ? options.negatives : options.evalNegatives
                    if k == 0 { continue }
                    let user = keyBase[r * c + u]
                    for _ in 0..<k {
                        var choice = -1
                        for _ in 0..<100 {
                            let j = rng.nextInt(below: universe.count)
                            if known.find(Self.pairKey(user, universe[j])) == nil { choice = j; break }
                        }
                        guard choice >= 0 else { unsampleable += 1; continue }
                        negativeKeys.update(from: keyBase + r * c, count: c)
                        if d > 0 { negativeDense.update(from: denseBase + r * d, count: d) }
                        let source = representative[choice]
                        negativeKeys[it] = universe[choice]
                        for f in itemSideCategorical { negativeKeys[f] = keyBase[source * c + f] }
                        for j in itemSideDense { negativeDense[j] = denseBase[source * d + j] }
                        try emit(split: s, label: 0, keys: negativeKeys, dense: negativeDense, origin: r, itemOrigin: source)
                        sampled += 1
                    }
                }
            }
        }
        if unsampleable > 0 { log("warning: \(unsampleable) negatives could not be sampled (users who rated nearly every item)") }
        var headers: [PreparedSplitHeader] = []
        for writer in writers { headers.append(try writer.finish()) }
        let rejects = badRows.close()

        let seconds = Date().timeIntervalSince(start)
        let bytes = files.reduce(0) { $0 + $1.bytes.count }
        let group = options.split == .leaveLastOut ? 1 + options.evalNegatives : nil
        let manifest = PreparedManifest(
            createdBy: "rec-dist prepare",
            source: .init(format: options.format.rawValue, inputs: files.enumerated().map { i, file in
                .init(path: file.path, bytes: file.bytes.count, lines: lines[i], headerLines: headerLines[i], badRows: badRows.perFile[i])
            } + side.map { .init(path: $0.path, bytes: $0.bytes, lines: $0.lines, headerLines: $0.headerLines, badRows: 0) }),
            options: options, schema: schema,
            splits: output.keepSplits(PreparedManifest.splitNames.enumerated().map { k, name in
                .init(name: name, file: "\(name).rdp", rows: headers[k].rows, positives: positives[k], groupSize: k == 0 ? nil : group)
            }, applied: applied != nil),
            statistics: .init(lines: count + badRows.count, badRows: badRows.count, rows: headers.reduce(0) { $0 + $1.rows },
                              users: u == nil ? nil : users.count, items: it == nil ? nil : items.count,
                              counts: counts.isEmpty ? nil : counts, sampledNegatives: sampled, seconds: seconds,
                              megabytesPerSecond: Double(bytes) / 1e6 / max(seconds, 1e-9)),
            schemaHash: hex64(schemaHash))
        return (manifest, rejects)
    }

    /// Writes `users.tsv` (id, user) and `items.tsv` (id, item, title, genres) into the output:
    /// every distinct user and item value of the input with the id its rows carry (1 is the shared
    /// out-of-vocabulary id of values rarer than --min-count or absent from the training split),
    /// and the side file's title and genres where the format has them. `recommend` maps a user
    /// name to its id with the first and names the items it ranks with the second.
    func writeCatalog(mapper: CategoricalMapper) throws(DataError) {
        guard let u = layout.userField, let it = layout.itemField else { return }
        let scratch = UnsafeMutablePointer<UInt64>.allocate(capacity: max(c, 1))
        let ids = UnsafeMutablePointer<UInt32>.allocate(capacity: max(c, 1))
        defer { scratch.deallocate(); ids.deallocate() }
        func id(_ key: UInt64, field: Int) -> UInt32 {
            scratch.initialize(repeating: 0, count: max(c, 1))
            scratch[field] = key
            mapper.map(scratch, into: ids)
            return ids[field]
        }
        func clean(_ text: String) -> String {
            String(text.map { $0 == "\t" || $0 == "\n" || $0 == "\r" ? " " : $0 })
        }
        var users = "id\tuser\n"
        for (key, name) in userNames.sorted(by: { $0.value < $1.value }) {
            users += "\(id(key, field: u))\t\(clean(name))\n"
        }
        var items = "id\titem\ttitle\tgenres\n"
        for (key, name) in itemNames.sorted(by: { $0.value < $1.value }) {
            let meta = itemMetadata[key]
            items += "\(id(key, field: it))\t\(clean(name))\t\(clean(meta?.title ?? ""))\t\(clean(meta?.genres ?? ""))\n"
        }
        for (name, text) in [("users.tsv", users), ("items.tsv", items)] {
            let path = output.file(name)
            guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else {
                throw DataError(file: path, message: "cannot write", hint: "is the disk full?")
            }
        }
        log("wrote users.tsv (\(userNames.count) users) and items.tsv (\(itemNames.count) items\(itemMetadata.isEmpty ? "" : ", with titles and genres"))")
    }

    /// A key for the (user, item) pair, never 0.
    @inline(__always)
    static func pairKey(_ user: UInt64, _ item: UInt64) -> UInt64 {
        let h = SplitMix64.mix(user &* 0x9E37_79B9_7F4A_7C15 ^ (item << 1 | item >> 63))
        return h == 0 ? 1 : h
    }

    // MARK: - Reading

    func parseInputs(_ badRows: BadRowLog) throws(DataError) {
        let parser = RowParser(layout: layoutForInput, keyMode: keyMode)
        func column(of field: Int?) -> Int? {
            guard let field else { return nil }
            return layout.actions.firstIndex { $0 == .categorical(field) }
        }
        let userColumn = column(of: layout.userField), itemColumn = column(of: layout.itemField)
        var behaviorCounts: [UInt64: Int] = [:]
        var ratingCounts: [Double: Int] = [:]
        for (fileIndex, file) in files.enumerated() {
            let chunk = TextInput.chunks(of: file, fileIndex: fileIndex, targetBytes: Int.max / 4, threads: 1)[0]
            lines.append(chunk.lineCount)
            var bad: [BadRow] = []
            var headers = 0
            var sequence: Int64 = 0
            TextInput.forEachLine(in: chunk, of: file) { line, text in
                if line == 1 && parser.isHeader(text) { headers = 1; return true }
                if let problem = parser.parse(text, truncatedEnd: chunk.endsWithoutNewline && line == chunk.lineCount) {
                    bad.append(BadRow(file: fileIndex, line: line, problem: problem, text: Array(text)))
                    return bad.count + badRows.count <= options.maxBadRows
                }
                for f in 0..<inputCategorical { keys.append(parser.keys[f]) }
                if let userColumn, let u = layout.userField, parser.keys[u] != 0, userNames[parser.keys[u]] == nil {
                    userNames[parser.keys[u]] = String(decoding: parser.splitter.field(userColumn), as: UTF8.self)
                }
                if let itemColumn, let it = layout.itemField, parser.keys[it] != 0, itemNames[parser.keys[it]] == nil {
                    itemNames[parser.keys[it]] = String(decoding: parser.splitter.field(itemColumn), as: UTF8.self)
                }
                for _ in inputCategorical..<c { keys.append(0) }
                for j in 0..<inputDense { dense.append(parser.dense[j]) }
                for _ in inputDense..<d { dense.append(0) }
                let y: Float
                switch layout.label {
                case .binary: y = parser.label
                case .rating:
                    y = options.label!.isPositive(parser.rating) ? 1 : 0
                    ratingCounts[parser.rating, default: 0] += 1
                case .behavior:
                    y = options.positive!.contains { RowParser.key64(Array($0.utf8)) == parser.behaviorKey } ? 1 : 0
                    behaviorCounts[parser.behaviorKey, default: 0] += 1
                case .implicit: y = 1
                }
                labels.append(y)
                // Without timestamps, the line order is the time order.
                timestamps.append(layout.hasTimestamp ? parser.timestamp : sequence)
                sequence += 1
                fileOf.append(Int32(fileIndex))
                lineOf.append(Int32(truncatingIfNeeded: line))
                count += 1
                return true
            }
            headerLines.append(headers)
            try badRows.take(bad, write: true)
        }
        for name in RowParser.behaviorNames {
            if let n = behaviorCounts[RowParser.key64(Array(name.utf8))] { counts[name] = n }
        }
        for (rating, n) in ratingCounts {
            counts["rating=" + (rating == rating.rounded() ? String(Int(rating)) : String(rating))] = n
        }
    }

    /// The layout of the input lines alone (before side features were appended).
    var layoutForInput: InputLayout {
        var l = layout
        l.categoricalNames = Array(l.categoricalNames.prefix(inputCategorical))
        l.categoricalRoles = Array(l.categoricalRoles.prefix(inputCategorical))
        l.denseNames = Array(l.denseNames.prefix(inputDense))
        l.denseRoles = Array(l.denseRoles.prefix(inputDense))
        return l
    }

    /// The split of every row: 0 train, 1 valid, 2 test.
    func assignSplits() -> [Int] {
        var split = [Int](repeating: 0, count: count)
        let v = options.validFraction, t = options.testFraction
        switch options.split {
        case .random:
            for r in 0..<count {
                let coin = Preparer.splitCoin(seed: options.seed, file: Int(fileOf[r]), line: Int(lineOf[r]))
                split[r] = coin < 1 - v - t ? 0 : coin < 1 - t ? 1 : 2
            }
        case .contiguous:
            let trainEnd = Int((Double(count) * (1 - v - t)).rounded())
            let testEnd = trainEnd + Int((Double(count) * t).rounded())
            for r in 0..<count { split[r] = r < trainEnd ? 0 : r < testEnd ? 2 : 1 }
        case .time:
            let sorted = timestamps.sorted()
            func quantile(_ q: Double) -> Int64 {
                let k = Int((Double(count) * q).rounded(.down))
                return k >= count ? .max : sorted[k]
            }
            let validFrom = quantile(1 - v - t), testFrom = quantile(1 - t)
            for r in 0..<count { split[r] = timestamps[r] < validFrom ? 0 : timestamps[r] < testFrom ? 1 : 2 }
        case .files:
            for r in 0..<count { split[r] = Int(fileOf[r]) }
        case .none:
            for r in 0..<count { split[r] = 2 }
        case .leaveLastOut:
            let u = layout.userField!
            var byUser: [UInt64: [Int]] = [:]
            for r in 0..<count where labels[r] == 1 { byUser[keys[r * c + u], default: []].append(r) }
            for (_, rows) in byUser {
                guard rows.count >= 2 else { continue }
                let ordered = rows.sorted { timestamps[$0] != timestamps[$1] ? timestamps[$0] < timestamps[$1] : $0 < $1 }
                split[ordered[ordered.count - 1]] = 2
                if ordered.count >= 3 { split[ordered[ordered.count - 2]] = 1 }
            }
        }
        return split
    }
}
