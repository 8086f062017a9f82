import Foundation
import Synchronization
import Testing

/// Seeded mutations of the data rec-dist reads, through the real binary: raw Criteo TSV (what
/// `prepare` and `train --data FILE` read) and prepared datasets (what `train --data DIR` reads),
/// including files truncated while rec-dist reads them. Whatever the mutation, the run ends with
/// a documented exit code (never a signal) and a peak RSS under 1 GB; a refusal names the file,
/// the line and, where one is at fault, the field; a refused `prepare` leaves nothing behind; and
/// what is accepted is read correctly: finite prepared values, the same training as the
/// unmutated rows where the rows are the same. The seed is printed in every failure.
@Suite(.serialized)
struct DataFuzzTests {
    static let seed: UInt64 = 0xDA7A_F022
    /// Exit codes the README documents for these commands.
    static let documented: Set<Int32> = [0, 1, 64, 74]
    static let maxPeakMB = 1024

    /// One mutation of a raw TSV file and what each command must make of it.
    struct RawMutation {
        var what: String
        var bytes: [UInt8]
        /// true: must be accepted; false: must be refused; nil: either.
        var prepareAccepts: Bool?
        var trainAccepts: Bool?
        /// A refusal names one of these 1-based lines (nil: the file alone, e.g. when it is empty).
        var lines: ClosedRange<Int>?
        /// ... and this field.
        var field: String?
        /// The rows are the base file's: an accepting command gives exactly the base's result.
        var sameRows = false
    }

    static func fieldName(_ f: Int) -> String { f == 0 ? "label" : f <= 13 ? "I\(f)" : "C\(f - 13)" }

    /// The mutations of `text` (a Criteo TSV file of whole lines), seeded by `rng`.
    static func rawMutations(_ text: [UInt8], rng: inout SeededRNG) -> [RawMutation] {
        let rows = text.split(separator: 0x0A, omittingEmptySubsequences: false).dropLast().map { Array($0) }
        var starts = [0]
        for row in rows { starts.append(starts.last! + row.count + 1) }
        func line(at offset: Int) -> Int { starts.lastIndex { $0 <= offset }! + 1 }
        func joined(_ rows: [[UInt8]]) -> [UInt8] { Array(rows.joined(separator: [0x0A])) + [0x0A] }
        func withField(_ l: Int, _ f: Int, _ value: [UInt8]) -> [UInt8] {
            var copy = rows
            var fields = copy[l - 1].split(separator: 0x09, omittingEmptySubsequences: false).map { Array($0) }
            fields[f] = value
            copy[l - 1] = Array(fields.joined(separator: [0x09]))
            return joined(copy)
        }
        func someLine() -> Int { 10 + rng.below(rows.count - 20) }
        var out: [RawMutation] = []
        for _ in 0..<4 {
            // At least 10 whole rows stay, so every split keeps rows.
            let offset = starts[10] + rng.below(text.count - starts[10])
            let clean = text[offset - 1] == 0x0A
            out.append(RawMutation(what: "truncated to \(offset) bytes", bytes: Array(text.prefix(offset)),
                                   prepareAccepts: clean ? true : nil, trainAccepts: clean ? true : nil, lines: line(at: offset - 1)...line(at: offset - 1)))
        }
        do {
            let l = someLine(), f = 1 + rng.below(38)
            let tabs = rows[l - 1].indices.filter { rows[l - 1][$0] == 0x09 }
            let fieldStart = starts[l - 1] + tabs[f - 1] + 1
            out.append(RawMutation(what: "truncated at the start of line \(l)'s \(fieldName(f))", bytes: Array(text.prefix(fieldStart)),
                                   prepareAccepts: false, trainAccepts: false, lines: l...l))
            out.append(RawMutation(what: "truncated in line \(l)'s \(fieldName(f))", bytes: Array(text.prefix(fieldStart + 1)),
                                   prepareAccepts: false, trainAccepts: false, lines: l...l))
        }
        out.append(RawMutation(what: "no final newline", bytes: Array(text.dropLast()), prepareAccepts: true, trainAccepts: true, sameRows: true))
        out.append(RawMutation(what: "empty file", bytes: [], prepareAccepts: false, trainAccepts: false))
        for _ in 0..<6 {
            let offset = rng.below(text.count), bit = rng.below(8)
            var bytes = text
            bytes[offset] ^= UInt8(1 << bit)
            let l = line(at: offset)
            out.append(RawMutation(what: "bit \(bit) of byte \(offset) (line \(l)) flipped", bytes: bytes, lines: l...(l + 1)))
        }
        for _ in 0..<2 {
            let offset = rng.below(text.count)
            var bytes = text
            bytes.insert(0x09, at: offset)
            let l = line(at: offset)
            out.append(RawMutation(what: "a tab inserted at byte \(offset) (line \(l))", bytes: bytes, prepareAccepts: false, trainAccepts: false, lines: l...l))
        }
        for _ in 0..<2 {
            let tabs = text.indices.filter { text[$0] == 0x09 }
            let offset = tabs[rng.below(tabs.count)]
            var bytes = text
            bytes.remove(at: offset)
            let l = line(at: offset)
            out.append(RawMutation(what: "the tab at byte \(offset) (line \(l)) removed", bytes: bytes, prepareAccepts: false, trainAccepts: false, lines: l...l))
        }
        var l = someLine()
        out.append(RawMutation(what: "line \(l)'s C17 is 4 MiB long", bytes: withField(l, 30, Array(repeating: 0x61, count: 4 << 20)),
                               prepareAccepts: true, trainAccepts: true))
        l = someLine()
        out.append(RawMutation(what: "line \(l) holds 1 Mi more tabs", bytes: withField(l, 30, Array(repeating: 0x09, count: 1 << 20)),
                               prepareAccepts: false, trainAccepts: false, lines: l...l))
        var f = 1 + rng.below(13)
        l = someLine()
        out.append(RawMutation(what: "a NUL byte in line \(l)'s \(fieldName(f))", bytes: withField(l, f, [0x31, 0x00, 0x32]),
                               prepareAccepts: false, trainAccepts: false, lines: l...l, field: fieldName(f)))
        l = someLine()
        out.append(RawMutation(what: "a NUL byte in line \(l)'s C5", bytes: withField(l, 18, [0x61, 0x00, 0x62]), prepareAccepts: true, trainAccepts: true))
        l = someLine()
        // Train hashes a categorical value's bytes, whatever they are; prepare wants UTF-8 text.
        out.append(RawMutation(what: "invalid UTF-8 in line \(l)'s C2", bytes: withField(l, 15, [0x61, 0xC3, 0x28]),
                               prepareAccepts: false, trainAccepts: true, lines: l...l, field: "C2"))
        out.append(RawMutation(what: "a UTF-8 byte-order mark", bytes: [0xEF, 0xBB, 0xBF] + text, prepareAccepts: true, trainAccepts: true, sameRows: true))
        out.append(RawMutation(what: "CRLF line ends", bytes: Array(rows.map { $0 + [0x0D] }.joined(separator: [0x0A])) + [0x0A],
                               prepareAccepts: true, trainAccepts: true, sameRows: true))
        for value in ["1e39", "-3e38", "99999999999999999999"] {
            f = 1 + rng.below(13)
            l = someLine()
            out.append(RawMutation(what: "line \(l)'s \(fieldName(f)) is \(value)", bytes: withField(l, f, Array(value.utf8)),
                                   prepareAccepts: false, trainAccepts: false, lines: l...l, field: fieldName(f)))
        }
        f = 1 + rng.below(13)
        l = someLine()
        out.append(RawMutation(what: "line \(l)'s \(fieldName(f)) is -999999999999999999", bytes: withField(l, f, Array("-999999999999999999".utf8)),
                               prepareAccepts: true, trainAccepts: true))
        l = someLine()
        out.append(RawMutation(what: "line \(l)'s label is 2", bytes: withField(l, 0, [0x32]), prepareAccepts: false, trainAccepts: false,
                               lines: l...l, field: "label"))
        l = someLine()
        var bytes = text
        bytes.insert(0x0A, at: starts[l - 1])
        out.append(RawMutation(what: "an empty line \(l)", bytes: bytes, prepareAccepts: false, trainAccepts: false, lines: l...l))
        return out
    }

    /// The problems of a prepared split file, read as the README lays it out: labels 0 or 1,
    /// finite dense values, ids below their table sizes.
    static func splitProblems(_ path: String, tableSizes: [Int]) throws -> [String] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return data.withUnsafeBytes { raw -> [String] in
            func u32(_ o: Int) -> Int { Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt32.self))) }
            let rows = Int(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self)))
            let d = u32(24), c = u32(28), perGroup = u32(32)
            guard c == tableSizes.count else { return ["\(path): \(c) categorical fields, the manifest has \(tableSizes.count)"] }
            var problems: [String] = []
            var offset = 4096, row = 0
            while row < rows {
                let n = min(perGroup, rows - row)
                for i in 0..<n {
                    let label = raw.loadUnaligned(fromByteOffset: offset + 4 * i, as: Float.self)
                    if label != 0 && label != 1 { problems.append("\(path): row \(row + i): label \(label)") }
                    for j in 0..<d {
                        let v = raw.loadUnaligned(fromByteOffset: offset + 4 * n + 4 * (i * d + j), as: Float.self)
                        if !v.isFinite { problems.append("\(path): row \(row + i): dense \(j) = \(v)") }
                    }
                    for j in 0..<c {
                        let id = Int(raw.loadUnaligned(fromByteOffset: offset + 4 * n * (1 + d) + 4 * (i * c + j), as: UInt32.self))
                        if id >= tableSizes[j] { problems.append("\(path): row \(row + i): id \(id) of field \(j) >= \(tableSizes[j])") }
                    }
                }
                offset += 4 * n * (1 + d + c)
                row += n
            }
            return Array(problems.prefix(5))
        }
    }

    /// The training loss and the final logloss a run wrote into its metrics log.
    static func result(_ metrics: String) throws -> [Double?] {
        guard let last = try RecDist.metrics(metrics).last else { throw TestDataError(message: "\(metrics) is empty") }
        return ["train_loss", "logloss"].map { last[$0] as? Double }
    }

    @Test func mutatedRawTSVEndsCleanly() throws {
        let base = try RecDist.synthData(rows: 300)
        let text = Array(try Data(contentsOf: URL(fileURLWithPath: base)))
        let reference = try RecDist.scratch("raw-reference")
        let prepared = try RecDist.single(["prepare", "--format", "criteo", "--input", base, "--out", reference + "/prepared"])
        try #require(prepared.status == 0, "\(prepared.all)")
        let trainArgs = ["--steps", "3", "--batch-size", "32"]
        let trained = try RecDist.single(["train", "--data", base, "--metrics-out", reference + "/m.jsonl"] + trainArgs)
        try #require(trained.status == 0, "\(trained.all)")
        let referenceResult = try Self.result(reference + "/m.jsonl")

        var rng = SeededRNG(state: Self.seed)
        let mutations = Self.rawMutations(text, rng: &rng)
        let accepted = Mutex(0)
        let problems = concurrently(mutations.count) { i in
            let m = mutations[i]
            let dir = try RecDist.scratch("raw-\(i)")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let path = dir + "/rows.tsv"
            try Data(m.bytes).write(to: URL(fileURLWithPath: path))
            let context = "seed \(String(Self.seed, radix: 16)), mutation \(i): \(m.what)"
            var problems: [String] = []
            func expect(_ ok: Bool, _ message: @autoclosure () -> String) { if !ok { problems.append("\(context): \(message())") } }
            /// The refusal's message names the file, one of the lines and the field.
            func expectNamed(_ out: RecDist.Output, _ command: String) {
                expect(out.stderr.contains(path), "\(command) should name \(path): \(out.stderr)")
                if let lines = m.lines {
                    expect(lines.contains { out.stderr.contains("\(path):\($0):") }, "\(command) should name line \(lines): \(out.stderr)")
                }
                if let field = m.field { expect(out.stderr.contains("field \(field)"), "\(command) should name field \(field): \(out.stderr)") }
            }

            let (prepare, preparePeak) = try RecDist.measured(["prepare", "--format", "criteo", "--input", path, "--out", dir + "/prepared"])
            expect(Self.documented.contains(prepare.status), "prepare exit \(prepare.status): \(prepare.all)")
            expect(preparePeak >= 0 && preparePeak < Self.maxPeakMB, "prepare peak RSS \(preparePeak) MB")
            if let accepts = m.prepareAccepts { expect((prepare.status == 0) == accepts, "prepare exit \(prepare.status): \(prepare.all)") }
            if prepare.status == 0 {
                let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/prepared/manifest.json"))) as! [String: Any]
                let sizes = ((manifest["schema"] as! [String: Any])["categorical"] as! [[String: Any]]).map { $0["size"] as! Int }
                for split in ["train", "valid", "test"] {
                    let found = try Self.splitProblems("\(dir)/prepared/\(split).rdp", tableSizes: sizes)
                    expect(found.isEmpty, "\(found)")
                    if m.sameRows {
                        let a = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/prepared/\(split).rdp"))
                        let b = try Data(contentsOf: URL(fileURLWithPath: "\(reference)/prepared/\(split).rdp"))
                        expect(a == b, "\(split).rdp differs from the unmutated file's")
                    }
                }
                try FileManager.default.removeItem(atPath: dir + "/prepared")
            } else {
                expectNamed(prepare, "prepare")
                let left = try FileManager.default.contentsOfDirectory(atPath: dir)
                expect(left == ["rows.tsv"], "prepare left \(left)")
            }

            let (train, trainPeak) = try RecDist.measured(["train", "--data", path, "--metrics-out", dir + "/m.jsonl"] + trainArgs)
            expect(Self.documented.contains(train.status), "train exit \(train.status): \(train.all)")
            expect(trainPeak >= 0 && trainPeak < Self.maxPeakMB, "train peak RSS \(trainPeak) MB")
            if let accepts = m.trainAccepts { expect((train.status == 0) == accepts, "train exit \(train.status): \(train.all)") }
            if train.status == 0 {
                let result = try Self.result(dir + "/m.jsonl")
                expect(result.allSatisfy { $0?.isFinite ?? true } && result[0] != nil, "train wrote \(result)")
                if m.sameRows { expect(result == referenceResult, "\(result), unmutated \(referenceResult)") }
                accepted.withLock { $0 += 1 }
            } else {
                expectNamed(train, "train")
            }
            return problems
        }
        #expect(problems.isEmpty, "\(problems.count) problems:\n\(problems.joined(separator: "\n"))")
        // Not vacuous.
        let trainAccepted = accepted.withLock { $0 }
        #expect(trainAccepted >= 8 && mutations.count - trainAccepted >= 12, "train accepted \(trainAccepted) of \(mutations.count)")
    }

    /// XXH64 (seed 0), as a split file's header checksum uses it.
    static func xxh64(_ bytes: [UInt8]) -> UInt64 {
        let p1: UInt64 = 0x9E37_79B1_85EB_CA87, p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F, p3: UInt64 = 0x1656_67B1_9E37_79F9
        let p4: UInt64 = 0x85EB_CA77_C2B2_AE63, p5: UInt64 = 0x27D4_EB2F_1656_67C5
        func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }
        func round(_ acc: UInt64, _ input: UInt64) -> UInt64 { rotl(acc &+ input &* p2, 31) &* p1 }
        func u64(_ i: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[i + $1]) << (8 * UInt64($1)) } }
        func u32(_ i: Int) -> UInt64 { (0..<4).reduce(0) { $0 | UInt64(bytes[i + $1]) << (8 * UInt64($1)) } }
        let n = bytes.count
        var i = 0, h: UInt64
        if n >= 32 {
            var v = [p1 &+ p2, p2, 0, 0 &- p1]
            while i + 32 <= n {
                for k in 0..<4 { v[k] = round(v[k], u64(i + 8 * k)) }
                i += 32
            }
            h = rotl(v[0], 1) &+ rotl(v[1], 7) &+ rotl(v[2], 12) &+ rotl(v[3], 18)
            for k in 0..<4 { h = (h ^ round(0, v[k])) &* p1 &+ p4 }
        } else {
            h = p5
        }
        h &+= UInt64(n)
        while i + 8 <= n { h = rotl(h ^ round(0, u64(i)), 27) &* p1 &+ p4; i += 8 }
        if i + 4 <= n { h = rotl(h ^ (u32(i) &* p1), 23) &* p2 &+ p3; i += 4 }
        while i < n { h = rotl(h ^ (UInt64(bytes[i]) &* p5), 11) &* p1; i += 1 }
        h ^= h >> 33; h &*= p2; h ^= h >> 29; h &*= p3; h ^= h >> 32
        return h
    }

    /// One mutation of prepared dataset `dir`, described for the failure message, with the names a
    /// refusal may give.
    static func mutatePrepared(_ dir: String, rng: inout SeededRNG) throws -> (what: String, names: [String]) {
        let splits = ["train.rdp", "valid.rdp", "test.rdp"]
        let file = splits[rng.below(splits.count)], path = dir + "/" + file
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        let groupCount = (0..<4).reduce(UInt64(0)) { $0 | UInt64(bytes[36 + $1]) << (8 * UInt64($1)) }
        let what: String
        switch rng.below(5) {
        case 0:
            let offset = rng.below(bytes.count)
            bytes = Array(bytes.prefix(offset))
            what = "\(file) truncated to \(offset) bytes"
        case 1:
            let offset = rng.below(bytes.count), bit = rng.below(8)
            bytes[offset] ^= UInt8(1 << bit)
            what = "\(file): bit \(bit) of byte \(offset) flipped"
        case 2:
            let offset = rng.below(2) == 0 ? rng.below(96) : 4088 + rng.below(8), bit = rng.below(8)
            bytes[offset] ^= UInt8(1 << bit)
            what = "\(file): header bit \(bit) of byte \(offset) flipped"
        case 3:
            // A header field set to another value, the header checksum recomputed.
            let fields: [(name: String, offset: Int, width: Int)] = [("rows", 16, 8), ("dense count", 24, 4), ("categorical count", 28, 4),
                                                                     ("rows per group", 32, 4), ("group count", 36, 4), ("checksum offset", 40, 8),
                                                                     ("file size", 48, 8), ("schema hash", 56, 8), ("split name", 64, 8)]
            let field = fields[rng.below(fields.count)]
            let old = (0..<field.width).reduce(UInt64(0)) { $0 | UInt64(bytes[field.offset + $1]) << (8 * UInt64($1)) }
            let values: [UInt64] = [0, 1, old &+ 1, old &- 1, 0xFFFF_FFFF, 1 << 63, UInt64.max, 1 << 40]
            let value = values[rng.below(values.count)]
            for k in 0..<field.width { bytes[field.offset + k] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(k))) }
            // The checksum covers the header's first 4088 bytes and the table of group checksums
            // at the end of the file (one per group of the unmutated header).
            let groups = Int(groupCount)
            let table = Array(bytes.suffix(8 * groups))
            let sum = Self.xxh64(Array(bytes[0..<4088]) + table)
            for k in 0..<8 { bytes[4088 + k] = UInt8(truncatingIfNeeded: sum >> (8 * UInt64(k))) }
            what = "\(file): header \(field.name) set to \(value) (header checksum recomputed)"
        default:
            let values: [Any] = [-1, 0, 1, 7, 1e15, UInt64(1) << 63, "x", NSNull()]
            let keys = ["rows", "positives", "group_size", "file", "version", "statistics"]
            let key = keys[rng.below(keys.count)]
            return try editManifest(dir, split: rng.below(3), key: key, value: key == "file" ? splits[rng.below(3)] : values[rng.below(values.count)])
        }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return (what, [file])
    }

    /// Sets `key` of split `split` in `dir`'s manifest.json (or the top-level `version`, or
    /// `statistics.rows`) to `value`, for `mutatePrepared`.
    static func editManifest(_ dir: String, split: Int, key: String, value: Any) throws -> (what: String, names: [String]) {
        let path = dir + "/manifest.json"
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        var splits = json["splits"] as! [[String: Any]], statistics = json["statistics"] as! [String: Any]
        var name = "splits[\(split)].\(key)"
        switch key {
        case "version": json["version"] = value; name = key
        case "statistics": statistics["rows"] = value; name = "statistics.rows"
        default: splits[split][key] = value
        }
        json["splits"] = splits
        json["statistics"] = statistics
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        return ("manifest.json \(name) = \(value)", ["manifest.json", "train.rdp", "valid.rdp", "test.rdp"])
    }

    @Test func mutatedPreparedDataEndsCleanly() throws {
        let root = try RecDist.scratch("prepared-fuzz")
        let base = root + "/base"
        let prepared = try RecDist.single(["prepare", "--format", "criteo", "--input", try RecDist.synthData(rows: 300), "--out", base])
        try #require(prepared.status == 0, "\(prepared.all)")
        let trainArgs = ["--steps", "3", "--batch-size", "32"]
        let reference = try RecDist.single(["train", "--data", base, "--metrics-out", root + "/m.jsonl"] + trainArgs)
        try #require(reference.status == 0, "\(reference.all)")
        let referenceResult = try Self.result(root + "/m.jsonl")

        var rng = SeededRNG(state: Self.seed ^ 1)
        // 24 seeded mutations, then the high bit of the header's row count, checksum offset and
        // file size (which used to trap before the header checksum was checked), and ranking
        // groups the evaluation split cannot have (it is not a leave-last-out split), which used
        // to trap or give ranking metrics of nonsense groups.
        var mutated: [(dir: String, what: String, names: [String])] = []
        let flips = [23, 47, 55], groupSizes: [Any] = [-1, 0, 1, 7]
        for i in 0..<(24 + flips.count + groupSizes.count) {
            let dir = root + "/m\(i)"
            try FileManager.default.copyItem(atPath: base, toPath: dir)
            switch i - 24 {
            case ..<0:
                let (what, names) = try Self.mutatePrepared(dir, rng: &rng)
                mutated.append((dir, what, names))
            case ..<flips.count:
                let path = dir + "/train.rdp"
                var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
                bytes[flips[i - 24]] ^= 0x80
                try bytes.write(to: URL(fileURLWithPath: path))
                mutated.append((dir, "train.rdp: bit 7 of byte \(flips[i - 24]) flipped", ["train.rdp"]))
            default:
                let (what, names) = try Self.editManifest(dir, split: 1, key: "group_size", value: groupSizes[i - 24 - flips.count])
                mutated.append((dir, what, names))
            }
        }
        let cases = mutated
        let accepted = Mutex<[String]>([])
        let problems = concurrently(cases.count) { i in
            let (dir, what, names) = cases[i]
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let context = "seed \(String(Self.seed ^ 1, radix: 16)), mutation \(i): \(what)"
            var problems: [String] = []
            let (out, peak) = try RecDist.measured(["train", "--data", dir, "--metrics-out", dir + "/m.jsonl"] + trainArgs)
            if !Self.documented.contains(out.status) { problems.append("\(context): exit \(out.status): \(out.all)") }
            if peak < 0 || peak >= Self.maxPeakMB { problems.append("\(context): peak RSS \(peak) MB") }
            if out.status == 0 {
                // Accepted: then it trained on the same rows as the unmutated dataset.
                if try Self.result(dir + "/m.jsonl") != referenceResult { problems.append("\(context): trained differently from the unmutated dataset") }
                accepted.withLock { $0.append(what) }
            } else if !names.contains(where: { out.stderr.contains("\(dir)/\($0)") }) {
                problems.append("\(context): should name one of \(names): \(out.stderr)")
            }
            return problems
        }
        #expect(problems.isEmpty, "\(problems.count) problems:\n\(problems.joined(separator: "\n"))")
        // Train never reads test.rdp, and the manifest's statistics and positives describe the
        // data without shaping it: those mutations may be accepted. Most are not.
        let all = accepted.withLock { $0 }
        #expect(all.count <= 12, "accepted: \(all)")
    }

    /// Waits until process `pid` has `path` memory-mapped (or 30 s passed); true if it has.
    static func waitForMapping(_ pid: pid_t, _ path: String, job: RecDist.Job) -> Bool {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, job.process.isRunning {
            if let maps = try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8), maps.contains(path) { return true }
            usleep(1000)
        }
        return false
    }

    /// A raw TSV file truncated while `train` or `prepare` reads it: one line naming the file and
    /// status 74, not a SIGBUS; prepare leaves nothing behind. (A prepared split truncated during
    /// training: `FaultTests.fileTruncatedUnderTheMap`.)
    @Test(arguments: ["train", "prepare"])
    func rawTSVTruncatedWhileRead(_ command: String) throws {
        let big = try RecDist.synthData(rows: 200_000)
        let dir = try RecDist.scratch("truncated-\(command)")
        let path = URL(fileURLWithPath: dir + "/rows.tsv").resolvingSymlinksInPath().path
        try FileManager.default.copyItem(atPath: big, toPath: path)
        let args = command == "train" ? ["train", "--data", path, "--steps", "2"]
                                      : ["prepare", "--format", "criteo", "--input", path, "--out", dir + "/prepared"]
        let job = try RecDist.start(RecDist.binary, args)
        let mapped = Self.waitForMapping(job.process.processIdentifier, path, job: job)
        #expect(truncate(path, 1 << 20) == 0)
        let out = job.wait(timeout: 60)
        try #require(mapped, "\(command) never mapped \(path): \(out.all)")
        #expect(out.status == 74, "\(out.all)")
        #expect(out.stderr.contains("error: \(path): the file shrank while rec-dist was reading it"), "\(out.all)")
        let left = try FileManager.default.contentsOfDirectory(atPath: dir)
        #expect(left == ["rows.tsv"], "left behind: \(left)")
    }
}
