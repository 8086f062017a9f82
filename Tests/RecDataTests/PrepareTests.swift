import Foundation
import RecCore
import Testing
@testable import RecData

/// The rows of one split, read back through the reader.
struct SplitContents: Equatable {
    var labels: [Float] = []
    var dense: [[Float]] = []
    var ids: [[UInt32]] = []

    init() {}

    init(_ dataset: PreparedDataset, _ name: String) throws {
        let reader = try dataset.open(split: name)
        try reader.verifyAll()
        for r in 0..<reader.header.rows {
            labels.append(reader.label(r))
            dense.append(Array(UnsafeBufferPointer(start: reader.dense(r), count: reader.header.denseCount)))
            ids.append(Array(UnsafeBufferPointer(start: reader.categorical(r), count: reader.header.categoricalCount)))
        }
    }
}

/// Runs prepare into `directory/name` and opens the result.
@discardableResult
func prepare(_ format: InputFormatKind, _ inputs: [String], in directory: TemporaryDirectory, name: String = "out",
             _ adjust: (inout PrepareOptions) -> Void = { _ in }) throws(DataError) -> PreparedDataset {
    var options = PrepareOptions(format: format, inputs: inputs, output: directory.path(name))
    adjust(&options)
    _ = try Preparer.run(options)
    return try PreparedDataset(directory: directory.path(name))
}

/// The description of the error `body` throws, or "" (and a recorded issue) when it does not.
func failure(_ body: () throws -> Void) -> String {
    do {
        try body()
    } catch let error as DataError {
        return error.description
    } catch {
        Issue.record("not a DataError: \(error)")
        return "\(error)"
    }
    Issue.record("no error")
    return ""
}

@Suite struct PrepareCriteoTests {
    /// raw TSV -> prepare -> reader gives exactly the parsed values: labels, dense values (as
    /// parsed, or log1p of them) and the ids `train` computes from the raw hashes, each row in the
    /// split its seeded coin chose, in input order.
    @Test(arguments: [DenseTransformKind.none, .log1p])
    func roundTripIsExact(transform: DenseTransformKind) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let raw = directory.path("synth.tsv")
        try SynthGenerator(seed: 21).write(rows: 2_500, to: raw, probabilitiesPath: nil)
        let parsed = try CriteoTSV.parse(try MappedFile(path: raw))
        let dataset = try prepare(.criteo, [raw], in: directory) { o in
            o.encoding = .hash(buckets: 1_000)
            o.denseTransform = transform
            o.validFraction = 0.2
            o.testFraction = 0.1
            o.seed = 5
            o.threads = 2
            o.chunkBytes = 40_000
            o.rowsPerGroup = 97
        }
        let tables = EmbeddingTables(fields: 26, buckets: 1_000, dim: 1)
        var expected = [SplitContents(), SplitContents(), SplitContents()]
        for r in 0..<parsed.count {
            let coin = Preparer.splitCoin(seed: 5, file: 0, line: r + 1)
            let s = coin < 0.7 ? 0 : coin < 0.9 ? 1 : 2
            expected[s].labels.append(parsed.labels[r])
            let dense = Array(parsed.dense[(r * 13)..<((r + 1) * 13)])
            expected[s].dense.append(transform == .none ? dense : dense.map(logTransform))
            expected[s].ids.append((0..<26).map { f in
                UInt32(tables.row(field: f, hash: parsed.categorical[r * 26 + f]) - tables.firstRow(field: f))
            })
        }
        for (k, name) in PreparedManifest.splitNames.enumerated() {
            let got = try SplitContents(dataset, name)
            #expect(got.labels == expected[k].labels, "\(name) labels")
            #expect(got.dense == expected[k].dense, "\(name) dense")
            #expect(got.ids == expected[k].ids, "\(name) ids")
            #expect(dataset.manifest.split(name)?.rows == expected[k].labels.count)
            #expect(dataset.manifest.split(name)?.positives == expected[k].labels.filter { $0 == 1 }.count)
        }
        #expect(expected[1].labels.count > 300 && expected[2].labels.count > 150)
        #expect(dataset.manifest.vocabularySizes == Array(repeating: 1_000, count: 26))
        #expect(dataset.manifest.statistics.lines == 2_500 && dataset.manifest.statistics.badRows == 0)
    }

    /// The same input and options give byte-identical splits whatever the threads and chunk
    /// sizes, for hashing and for vocabularies; another seed gives another split.
    @Test(arguments: [CategoricalEncoding.hash(buckets: 500), .vocabulary(minCount: 2)])
    func outputIsDeterministic(encoding: CategoricalEncoding) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let raw = directory.path("synth.tsv")
        try SynthGenerator(seed: 4).write(rows: 3_000, to: raw, probabilitiesPath: nil)
        var outputs: [[String: [UInt8]]] = []
        var manifests: [PreparedManifest] = []
        for (name, threads, chunk, seed) in [("a", 1, 1 << 20, UInt64(1)), ("b", 2, 30_000, 1), ("c", 2, 7_000, 1), ("d", 2, 30_000, 2)] {
            let dataset = try prepare(.criteo, [raw], in: directory, name: name) { o in
                o.encoding = encoding
                o.denseTransform = .standardize
                o.threads = threads
                o.chunkBytes = chunk
                o.seed = seed
                o.rowsPerGroup = 256
            }
            manifests.append(dataset.manifest)
            outputs.append(Dictionary(uniqueKeysWithValues: try PreparedManifest.splitNames.map {
                ($0, try contents(directory.path("\(name)/\($0).rdp")))
            }))
        }
        #expect(outputs[0] == outputs[1] && outputs[1] == outputs[2])
        #expect(manifests[0].schema == manifests[2].schema && manifests[0].splits == manifests[2].splits)
        #expect(outputs[3] != outputs[0], "another seed, another split")
        if case .vocabulary = encoding {
            let sizes = manifests[0].vocabularySizes
            #expect(sizes.allSatisfy { $0 >= 2 } && sizes.contains { $0 > 100 })
            #expect(manifests[0].schema.categorical.allSatisfy { ($0.distinctValues ?? 0) >= $0.size - 2 })
        }
    }

    @Test func contiguousSplitIsDLRMs() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let raw = directory.path("synth.tsv")
        try SynthGenerator(seed: 8).write(rows: 1_400, to: raw, probabilitiesPath: nil)
        let parsed = try CriteoTSV.parse(try MappedFile(path: raw))
        let dataset = try prepare(.criteo, [raw], in: directory) { o in
            o.split = .contiguous
            o.validFraction = PrepareOptions.dlrmHeldOutFraction
            o.testFraction = PrepareOptions.dlrmHeldOutFraction
            o.denseTransform = .none
            o.chunkBytes = 50_000
        }
        #expect(dataset.manifest.splits.map(\.rows) == [1_200, 100, 100])
        let firstDense = { (s: SplitContents) in s.dense.map { $0[4] } }
        let column = (0..<1_400).map { parsed.dense[$0 * 13 + 4] }
        #expect(firstDense(try SplitContents(dataset, "train")) == Array(column[0..<1_200]))
        #expect(firstDense(try SplitContents(dataset, "test")) == Array(column[1_200..<1_300]))
        #expect(firstDense(try SplitContents(dataset, "valid")) == Array(column[1_300..<1_400]))
    }
}

@Suite struct PrepareCSVTests {
    /// A csv dataset: label, a dense "x", a categorical "color", a timestamp.
    func write(_ directory: TemporaryDirectory, _ name: String, _ rows: [(Int, String, String, Int)], header: Bool = true) throws -> String {
        var text = header ? "click,x,color,ts\n" : ""
        for (label, x, color, ts) in rows { text += "\(label),\(x),\(color),\(ts)\n" }
        return try directory.write(name, text)
    }

    func schema(_ directory: TemporaryDirectory, _ extra: String = "") throws -> String {
        try directory.write("schema.json", """
        {"separator": ",", "header": true, "label": "click", "dense": ["x"], "categorical": ["color"], "timestamp": "ts"\(extra)}
        """)
    }

    /// Ids: 0 missing, 1 rare or unseen, then by training frequency; standardization uses the
    /// training file's statistics only.
    @Test func vocabularyAndStandardizationComeFromTheTrainingSplit() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var trainRows: [(Int, String, String, Int)] = []
        for (color, n) in [("red", 5), ("blue", 3), ("green", 1), ("", 2)] {
            for k in 0..<n { trainRows.append((k % 2, "\(k + 1)", color, k)) }
        }
        let train = try write(directory, "train.csv", trainRows)
        let test = try write(directory, "test.csv", [(1, "100", "red", 0), (0, "-2.5", "purple", 0), (1, "", "blue", 0)])
        let dataset = try prepare(.csv, [train, test], in: directory) { o in
            o.schema = try? schema(directory)
            o.split = .files
            o.encoding = .vocabulary(minCount: 2)
        }
        let field = dataset.manifest.schema.categorical[0]
        #expect(field.name == "color" && field.size == 4 && field.distinctValues == 3 && field.encoding == "vocabulary")
        let trained = try SplitContents(dataset, "train")
        #expect(trained.ids.map { $0[0] } == [2, 2, 2, 2, 2, 3, 3, 3, 1, 0, 0])
        let xs = trainRows.map { Double($0.1)! }
        let mean = xs.reduce(0, +) / Double(xs.count)
        let std = (xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(xs.count)).squareRoot()
        #expect(abs(dataset.manifest.schema.dense[0].mean - mean) < 1e-12)
        #expect(abs(dataset.manifest.schema.dense[0].std - std) < 1e-9)
        let tested = try SplitContents(dataset, "valid")   // the second file is the valid split
        #expect(tested.ids.map { $0[0] } == [2, 1, 3])
        let expected = [100.0, -2.5, 0.0].map { Float((Double(Float($0)) - mean) * (1 / std)) }   // in double precision
        #expect(tested.dense.map { $0[0] } == expected)
        #expect(tested.labels == [1, 0, 1])
        #expect(try SplitContents(dataset, "test").labels.isEmpty)
    }

    @Test func timeSplitOrdersByTimestamp() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let rows = (0..<100).map { i in (i % 2, "\(i)", "c\(i % 7)", (i * 37) % 100) }
        let input = try write(directory, "log.csv", rows)
        let dataset = try prepare(.csv, [input], in: directory) { o in
            o.schema = try? schema(directory)
            o.split = .time
            o.validFraction = 0.2
            o.testFraction = 0.1
            o.denseTransform = .none
        }
        #expect(dataset.manifest.splits.map(\.rows) == [70, 20, 10])
        // x is the row index; timestamps are a permutation of 0..<100.
        let times = { (name: String) in try SplitContents(dataset, name).dense.map { rows[Int($0[0])].3 } }
        let (train, valid, test) = (try times("train"), try times("valid"), try times("test"))
        #expect(train.max()! < valid.min()! && valid.max()! < test.min()!)
    }

    /// Leave-last-out: each user's last positive is the test row, the one before the valid row,
    /// each followed by its sampled negatives; no sampled negative is a known positive of its user.
    @Test func leaveLastOutWithNegatives() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var text = "user;item;time;genre\n"
        var positives: [Int: Set<Int>] = [:]
        var last: [Int: [Int]] = [:]
        var rng = SplitMix(seed: 3)
        for u in 0..<40 {
            let count = 1 + Int(rng.next() % 8)
            var seen: [(Int, Int)] = []
            for k in 0..<count {
                let item = Int(rng.next() % 30)
                let time = 1000 + Int(rng.next() % 1000) * 10 + k
                text += "u\(u);i\(item);\(time);g\(item % 4)\n"
                positives[u, default: []].insert(item)
                seen.append((time, item))
            }
            last[u] = seen.sorted { $0.0 < $1.0 }.map(\.1)
        }
        let input = try directory.write("log.csv", text)
        let schema = try directory.write("schema.json", """
        {"separator": ";", "user": "user", "item": "item", "categorical": ["genre"], "item_features": ["genre"], "timestamp": "time"}
        """)
        let dataset = try prepare(.csv, [input], in: directory) { o in
            o.schema = schema
            o.split = .leaveLastOut
            o.negatives = 2
            o.evalNegatives = 5
        }
        let m = dataset.manifest
        #expect(m.schema.userField == "user" && m.schema.itemField == "item")
        #expect(m.statistics.users == 40)
        // Ids back to names: vocabulary ids are assigned by frequency, so map through the rows.
        let train = try SplitContents(dataset, "train"), valid = try SplitContents(dataset, "valid"), test = try SplitContents(dataset, "test")
        let withTest = last.values.filter { $0.count >= 2 }.count, withValid = last.values.filter { $0.count >= 3 }.count
        #expect(m.split("test")?.rows == withTest * 6 && m.split("valid")?.rows == withValid * 6)
        #expect(m.split("test")?.groupSize == 6)
        for split in [valid, test] {
            for g in stride(from: 0, to: split.labels.count, by: 6) {
                #expect(split.labels[g] == 1 && split.labels[(g + 1)..<(g + 6)].allSatisfy { $0 == 0 })
                #expect(Set(split.ids[g..<(g + 6)].map { $0[0] }).count == 1, "one user per group")
            }
        }
        // Known positives in id space (all splits), and every negative avoids them.
        var known = Set<[UInt32]>()
        for s in [train, valid, test] {
            for (i, ids) in s.ids.enumerated() where s.labels[i] == 1 { known.insert([ids[0], ids[1]]) }
        }
        for s in [train, valid, test] {
            for (i, ids) in s.ids.enumerated() where s.labels[i] == 0 {
                #expect(!known.contains([ids[0], ids[1]]), "negative (user \(ids[0]), item \(ids[1])) is a known positive")
                #expect(ids[1] >= 2, "negatives are training items")
            }
        }
        #expect(train.labels.filter { $0 == 0 }.count == 2 * train.labels.filter { $0 == 1 }.count)
        // Item-side fields follow the sampled item: a genre id is always the one its item has.
        var genreOfItem: [UInt32: UInt32] = [:]
        for s in [train, valid, test] {
            for ids in s.ids where ids[1] > 1 {
                if let g = genreOfItem[ids[1]] { #expect(g == ids[2]) } else { genreOfItem[ids[1]] = ids[2] }
            }
        }
    }
}

@Suite struct PrepareFormatTests {
    @Test func avazuHourBecomesWeekdayAndHour() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let header = "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21"
        let row = { (click: Int, hour: String) in "10000169349117863715,\(click),\(hour),1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,a99f214a,96809ac8,711ee120,1,0,15704,320,50,1722,0,35,100084,79" }
        let train = try directory.write("train.csv", [header, row(1, "14102100"), row(0, "14102523")].joined(separator: "\n") + "\n")
        let more = try directory.write("dev.csv", row(0, "14103013") + "\n")
        let dataset = try prepare(.avazu, [train, more], in: directory) { o in
            o.split = .files
            o.encoding = .hash(buckets: 100)
        }
        #expect(dataset.manifest.schema.categorical.prefix(3).map(\.name) == ["weekday", "hour", "C1"])
        #expect(dataset.manifest.source.inputs.map(\.headerLines) == [1, 0])
        let id = { (text: String) in UInt32(1 + Int(Array(text.utf8).withUnsafeBytes { CriteoRows.hashCategorical($0) } % 99)) }
        let rows = try SplitContents(dataset, "train")
        // 2014-10-21 was a Tuesday (1, counting Monday as 0), 2014-10-25 a Saturday (5).
        #expect(rows.ids.map { [$0[0], $0[1]] } == [[id("1"), id("0")], [id("5"), id("23")]])
        #expect(rows.labels == [1, 0])
        #expect(try SplitContents(dataset, "valid").ids[0].prefix(3) == [id("3"), id("13"), id("1005")])
    }

    /// MovieLens 100K: ratings become labels with the rule, u.user and u.item are joined in.
    @Test func movielens100KJoinsSideFeatures() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let data = try directory.write("u.data", "1\t10\t5\t100\n2\t10\t3\t50\n1\t11\t4\t200\n2\t11\t1\t300\n1\t12\t2\t300\n")
        try directory.write("u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
        let flags = { (k: Int) in (0..<19).map { $0 == k ? "1" : "0" }.joined(separator: "|") }
        try directory.write("u.item", bytes: Array("10|Toy Story (1995)|01-Jan-1995||http://x|\(flags(3))\n11|Caf".utf8) + [0xE9]
                                + Array(" (1994)|01-Jan-1994||http://y|\(flags(5))\n12|Z|||http://z|\(flags(0))\n".utf8))
        let dataset = try prepare(.movielens100k, [data], in: directory) { o in
            o.split = .random
            o.validFraction = 0
            o.testFraction = 0
            o.denseTransform = .none
        }
        let m = dataset.manifest
        #expect(m.schema.categorical.map(\.name) == ["user", "item", "gender", "occupation", "zip_prefix", "year"])
        #expect(m.schema.dense.map(\.name).prefix(2) == ["age", "genre_unknown"])
        #expect(m.schema.dense.count == 20 && m.statistics.users == 2 && m.statistics.items == 3)
        #expect(m.statistics.counts?["rating=5"] == 1 && m.statistics.counts?["rating=1"] == 1)
        let rows = try SplitContents(dataset, "train")
        #expect(rows.labels == [1, 0, 1, 0, 0])
        #expect(rows.dense.map { $0[0] } == [24, 53, 24, 53, 24])
        #expect(rows.dense[0][1 + 3] == 1 && rows.dense[2][1 + 5] == 1 && rows.dense[4][1] == 1)
        #expect(rows.ids[0][2] != rows.ids[1][2], "M and F get different ids")
        #expect(rows.ids[4][5] == 0, "no release date: the year is missing")
    }

    @Test func taobaoBehaviorsBecomeLabels() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let input = try directory.write("ub.csv", "1,100,7,pv,10\n1,101,7,buy,20\n2,100,7,cart,30\n2,102,8,fav,40\n2,103,8,pv,50\n")
        let dataset = try prepare(.taobao, [input], in: directory) { o in
            o.positive = ["buy", "cart"]
            o.split = .random
            o.validFraction = 0
            o.testFraction = 0
        }
        #expect(try SplitContents(dataset, "train").labels == [0, 1, 1, 0, 0])
        #expect(dataset.manifest.statistics.counts == ["pv": 2, "buy": 1, "cart": 1, "fav": 1])
        #expect(dataset.manifest.schema.label == "behavior in buy,cart")
        let bad = try directory.write("bad.csv", "1,100,7,pv,10\n1,101,7,click,20\n")
        let text = failure { try prepare(.taobao, [bad], in: directory, name: "bad") }
        #expect(text.contains("bad.csv:2: field behavior_type: expected a behavior (pv, buy, cart or fav), found \"click\""), "\(text)")
    }
}

@Suite struct PrepareBadInputTests {
    static let good = criteoLine(label: "1", dense: Array(repeating: "7", count: 13), categorical: Array(repeating: "ab", count: 26))

    func criteo(_ text: [UInt8], maxBadRows: Int = 0) throws -> String {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try directory.write("bad.tsv", bytes: text)
        return failure { try prepare(.criteo, [path], in: directory) { $0.maxBadRows = maxBadRows } }
    }

    @Test func errorsNameFileLineAndField() throws {
        let good = Self.good
        let short = good.split(separator: "\t", omittingEmptySubsequences: false).dropLast().joined(separator: "\t")
        var text = try criteo(Array((good + "\n" + good + "\n" + short + "\n").utf8))
        #expect(text.contains("bad.tsv:3: expected 40 tab-separated fields, found 39"), "\(text)")
        var dense = Array(repeating: "1", count: 13)
        dense[2] = "1x2"
        text = try criteo(Array((good + "\n" + criteoLine(dense: dense) + "\n").utf8))
        #expect(text.contains("bad.tsv:2: field I3: expected an integer, found \"1x2\""), "\(text)")
        var categorical = Array(repeating: "ab", count: 26)
        categorical[1] = "a\u{FFFD}"
        var bytes = Array((good + "\n" + criteoLine(categorical: categorical) + "\n").utf8)
        if let at = bytes.firstIndex(of: 0xEF) { bytes.replaceSubrange(at..<(at + 3), with: [0xC3, 0x28]) }
        text = try criteo(bytes)
        #expect(text.contains("bad.tsv:2: field C2: invalid UTF-8"), "\(text)")
        text = try criteo([])
        #expect(text.contains("bad.tsv: no rows: the file is empty"), "\(text)")
        text = try criteo(Array((good + "\n" + good.prefix(30)).utf8))
        #expect(text.contains("bad.tsv:2: expected 40") && text.contains("the file ends in the middle of this line"), "\(text)")
        text = try criteo(Array((good + "\n\n" + good + "\n").utf8))
        #expect(text.contains("bad.tsv:2: empty line"), "\(text)")
        text = try criteo(Array((criteoLine(label: "2") + "\n").utf8))
        #expect(text.contains("bad.tsv:1: field label: expected 0 or 1, found \"2\""), "\(text)")
        #expect(text.contains("--max-bad-rows"), "the hint mentions skipping: \(text)")
    }

    @Test func badRowsAreSkippedCountedAndRejected() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let good = Self.good
        let lines = [good, "1\t2", good, criteoLine(label: "x"), good, good, "", good]
        let path = try directory.write("mixed.tsv", lines.joined(separator: "\n") + "\n")
        let dataset = try prepare(.criteo, [path], in: directory) { o in
            o.maxBadRows = 3
            o.validFraction = 0
            o.testFraction = 0
        }
        #expect(dataset.manifest.statistics.badRows == 3 && dataset.manifest.splits[0].rows == 5)
        #expect(dataset.manifest.source.inputs[0].badRows == 3)
        let rejects = try String(contentsOfFile: directory.path("out/rejects.txt"), encoding: .utf8)
        let rejected = rejects.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        #expect(rejected.count == 3)
        #expect(rejected[0].hasPrefix("\(path):2: expected 40") && rejected[0].hasSuffix("\t1\t2"))
        #expect(rejected[1].hasPrefix("\(path):4: field label"))
        #expect(rejected[2].hasPrefix("\(path):7: empty line"))
        let text = failure { try prepare(.criteo, [path], in: directory, name: "strict") { $0.maxBadRows = 2 } }
        #expect(text.contains("mixed.tsv:7: empty line") && text.contains("bad row 3, more than --max-bad-rows 2"), "\(text)")
        #expect(!FileManager.default.fileExists(atPath: directory.path("strict")))
    }

    @Test func existingOutputNeedsForceAndFailuresLeaveNothing() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try directory.write("rows.tsv", ([Self.good, Self.good].joined(separator: "\n")) + "\n")
        try prepare(.criteo, [path], in: directory) { $0.validFraction = 0; $0.testFraction = 0 }
        var text = failure { try prepare(.criteo, [path], in: directory) }
        #expect(text.contains("a prepared dataset already exists here") && text.contains("--force"), "\(text)")
        let replaced = try prepare(.criteo, [path], in: directory) { o in
            o.force = true
            o.encoding = .hash(buckets: 77)
            o.validFraction = 0
            o.testFraction = 0
        }
        #expect(replaced.manifest.vocabularySizes.first == 77)
        try FileManager.default.createDirectory(atPath: directory.path("notes"), withIntermediateDirectories: false)
        try directory.write("notes/todo.txt", "keep me")
        text = failure { try prepare(.criteo, [path], in: directory, name: "notes") { $0.force = true } }
        #expect(text.contains("is not a prepared dataset; refusing to replace it"), "\(text)")
        #expect(FileManager.default.fileExists(atPath: directory.path("notes/todo.txt")))
        // A failing prepare leaves neither the output nor its temporary directory.
        let bad = try directory.write("bad.tsv", "1\t2\n")
        _ = failure { try prepare(.criteo, [bad], in: directory, name: "failed") }
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.url.path)
        #expect(!names.contains { $0.contains("failed") }, "\(names)")
        // A dataset directory without a manifest (an interrupted prepare) is not a dataset.
        try FileManager.default.createDirectory(atPath: directory.path("half"), withIntermediateDirectories: false)
        text = failure { _ = try PreparedDataset(directory: directory.path("half")) }
        #expect(text.contains("no manifest") && text.contains("re-run `rec-dist prepare"), "\(text)")
    }

    /// A few hundred seeded corruptions of small files (flipped, deleted, inserted and
    /// duplicated bytes, truncations, stray separators, quotes and newlines): prepare either
    /// succeeds, with every rejected row counted, or fails with a DataError. Never a crash.
    @Test func corruptedInputsNeverCrash() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let criteoText = try String(contentsOfFile: {
            let p = directory.path("base.tsv")
            try SynthGenerator(seed: 2).write(rows: 12, to: p, probabilitiesPath: nil)
            return p
        }(), encoding: .utf8)
        let csvText = "click,x,color,ts\n1,2.5,\"red, dark\",10\n0,-1e3,blue,20\n1,,\"say \"\"hi\"\"\",30\n0,7,,40\n"
        let schema = try directory.write("schema.json", """
        {"separator": ",", "header": true, "label": "click", "dense": ["x"], "categorical": ["color"], "timestamp": "ts"}
        """)
        var rng = SplitMix(seed: 2024)
        var outcomes = (succeeded: 0, failed: 0, skipped: 0)
        let specials: [UInt8] = [0x09, 0x0A, 0x0D, 0x22, 0x2C, 0x2D, 0x2E, 0x30, 0x31, 0x65, 0x80, 0xC3, 0xFF, 0x00]
        for variant in 0..<300 {
            let csv = variant % 3 == 2
            var bytes = Array((csv ? csvText : criteoText).utf8)
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                let at = bytes.isEmpty ? 0 : Int(rng.next() % UInt64(bytes.count))
                switch rng.next() % 6 {
                case 0 where !bytes.isEmpty: bytes[at] ^= UInt8(1 << (rng.next() % 8))
                case 1 where !bytes.isEmpty: bytes.removeSubrange(at..<min(bytes.count, at + 1 + Int(rng.next() % 40)))
                case 2: bytes.insert(specials[Int(rng.next() % UInt64(specials.count))], at: at)
                case 3: bytes = Array(bytes.prefix(at))
                case 4 where !bytes.isEmpty: bytes.insert(contentsOf: bytes[at..<min(bytes.count, at + 50)], at: at)
                default: if !bytes.isEmpty { bytes[at] = specials[Int(rng.next() % UInt64(specials.count))] }
                }
            }
            let input = try directory.write("v\(variant).\(csv ? "csv" : "tsv")", bytes: bytes)
            let maxBad = Int(rng.next() % 4)
            do {
                let dataset = try prepare(csv ? .csv : .criteo, [input], in: directory, name: "o\(variant)") { o in
                    o.schema = csv ? schema : nil
                    o.maxBadRows = maxBad
                    o.threads = 2
                    o.chunkBytes = 512
                    o.rowsPerGroup = 4
                    o.encoding = variant % 2 == 0 ? .hash(buckets: 50) : .vocabulary(minCount: 1)
                }
                let m = dataset.manifest
                #expect(m.statistics.badRows <= maxBad)
                #expect(m.statistics.rows == m.statistics.lines - m.statistics.badRows, "variant \(variant)")
                for name in PreparedManifest.splitNames { _ = try SplitContents(dataset, name) }
                outcomes.succeeded += 1
                if m.statistics.badRows > 0 { outcomes.skipped += 1 }
            } catch let error as DataError {
                #expect(!error.description.isEmpty)
                outcomes.failed += 1
            } catch {
                Issue.record("variant \(variant): not a DataError: \(error)")
            }
            try? FileManager.default.removeItem(atPath: directory.path("o\(variant)"))
        }
        // Not vacuous: some variants fail, some skip rows, some pass.
        #expect(outcomes.failed > 20 && outcomes.skipped > 20 && outcomes.succeeded > outcomes.skipped, "\(outcomes)")
    }
}
