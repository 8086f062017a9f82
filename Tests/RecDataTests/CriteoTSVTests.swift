import Foundation
import Testing
@testable import RecData

@Suite struct CriteoFormatTests {
    @Test func fieldNames() {
        #expect(CriteoFormat.fieldCount == 40)
        #expect(CriteoFormat.fieldName(0) == "label")
        #expect(CriteoFormat.fieldName(1) == "I1")
        #expect(CriteoFormat.fieldName(13) == "I13")
        #expect(CriteoFormat.fieldName(14) == "C1")
        #expect(CriteoFormat.fieldName(39) == "C26")
    }

    /// Pinned values (computed independently: FNV-1a 32, then MurmurHash3 fmix32), so the hash
    /// can never change silently between versions or platforms.
    @Test func categoricalHashIsPinned() {
        func hash(_ bytes: [UInt8]) -> UInt32 {
            bytes.withUnsafeBytes { CriteoRows.hashCategorical($0) }
        }
        #expect(hash([]) == 0)
        #expect(hash(Array("a".utf8)) == 0x1A80_B1B3)
        #expect(hash(Array("68fd1e64".utf8)) == 0x7309_4DE0)
        #expect(hash(Array("05db9164".utf8)) == 0x019F_B5BB)
        #expect(hash([0xFF, 0x00, 0x20, 0x78]) == 0xD6E2_537E)
    }
}

@Suite struct CountRowsTests {
    func count(_ text: String) throws -> Int {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let file = try MappedFile(path: try directory.write("rows.tsv", text))
        return CriteoTSV.countRows(file)
    }

    @Test func countsLines() throws {
        #expect(try count("") == 0)
        #expect(try count("a") == 1)
        #expect(try count("a\n") == 1)
        #expect(try count("a\nb") == 2)
        #expect(try count("a\nb\n") == 2)
        #expect(try count("a\r\nb\r\n") == 2)
        #expect(try count("a\r\nb") == 2)
        #expect(try count("\n") == 1)
        #expect(try count("a\n\nb\n") == 3)
    }

    @Test func countsMatchSynthRows() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path("synth.tsv")
        try SynthGenerator(seed: 3).write(rows: 777, to: path, probabilitiesPath: nil)
        #expect(CriteoTSV.countRows(try MappedFile(path: path)) == 777)
    }
}

@Suite struct ParseTests {
    @Test func parsesFieldsExactly() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var dense = Array(repeating: "", count: 13)
        dense[0] = "5"
        dense[1] = "-3"
        dense[4] = "1234567"
        dense[12] = "0"
        var categorical = Array(repeating: "", count: 26)
        categorical[0] = "68fd1e64"
        categorical[25] = "x y"
        let first = criteoLine(label: "1", dense: dense, categorical: categorical)
        let second = criteoLine(label: "0")
        let path = try directory.write("rows.tsv", first + "\r\n" + second)  // CRLF, no final newline
        let rows = try CriteoTSV.parse(try MappedFile(path: path))

        #expect(rows.count == 2)
        #expect(rows.labels == [1, 0])
        #expect(Array(rows.dense[0..<13]) == [5, -3, 0, 0, 1_234_567, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(rows.dense[13...].allSatisfy { $0 == 0 })
        #expect(rows.categorical[0] == 0x7309_4DE0)
        #expect(rows.categorical[25] == Array("x y".utf8).withUnsafeBytes { CriteoRows.hashCategorical($0) })
        #expect(rows.categorical[1..<25].allSatisfy { $0 == 0 })
        #expect(rows.categorical[26...].allSatisfy { $0 == 0 })
    }

    @Test func selectingKeepsFileOrder() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let lines = (0..<10).map { criteoLine(label: $0 % 3 == 0 ? "1" : "0", dense: ["\($0)"] + Array(repeating: "", count: 12)) }
        let path = try directory.write("rows.tsv", lines.joined(separator: "\n") + "\n")
        let file = try MappedFile(path: path)
        var asked: [Int] = []
        let rows = try CriteoTSV.parse(file, selecting: { row in
            asked.append(row)
            return row % 4 == 1
        })
        #expect(asked == Array(0..<10))
        #expect(rows.count == 3)
        #expect((0..<3).map { rows.dense[$0 * 13] } == [1, 5, 9])
        #expect(rows.labels == [0, 0, 1])
        #expect(try CriteoTSV.parse(file, selecting: { _ in false }).count == 0)
    }
}

@Suite struct BadInputTests {
    /// Writes `text` to a file named `bad.tsv`, parses it, and returns the error's description.
    func failure(_ text: String, selecting: @escaping (Int) -> Bool = { _ in true }) throws -> String {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let file = try MappedFile(path: try directory.write("bad.tsv", text))
        do {
            _ = try CriteoTSV.parse(file, selecting: selecting)
        } catch {
            return error.description
        }
        Issue.record("parsing did not fail")
        return ""
    }

    let good = criteoLine(label: "1", dense: Array(repeating: "7", count: 13), categorical: Array(repeating: "ab", count: 26))

    @Test func wrongFieldCount() throws {
        let short = Array(good.split(separator: "\t", omittingEmptySubsequences: false).dropLast()).joined(separator: "\t")
        let text = try failure(good + "\n" + good + "\n" + short + "\n")
        #expect(text.contains("bad.tsv:3:"), "\(text)")
        #expect(text.contains("expected 40 tab-separated fields, found 39"), "\(text)")
        let long = try failure(good + "\t\t\n")
        #expect(long.contains("bad.tsv:1:") && long.contains("found 42"), "\(long)")
    }

    @Test func nonNumericInteger() throws {
        var dense = Array(repeating: "1", count: 13)
        dense[2] = "1x2"
        let text = try failure(good + "\n" + criteoLine(dense: dense) + "\n")
        #expect(text.contains("bad.tsv:2: field I3: expected an integer, found \"1x2\""), "\(text)")
        #expect(text.contains("hint:"), "\(text)")

        dense[2] = "1"
        dense[12] = "-"
        #expect(try failure(criteoLine(dense: dense)).contains("bad.tsv:1: field I13: expected an integer, found \"-\""))
        dense[12] = "+4"
        #expect(try failure(criteoLine(dense: dense)).contains("field I13"))
        dense[12] = "1234567890123456789"
        #expect(try failure(criteoLine(dense: dense)).contains("field I13: integer \"1234567890123456789\" is too large"))
    }

    @Test func badLabel() throws {
        let two = try failure(good + "\n" + criteoLine(label: "2") + "\n")
        #expect(two.contains("bad.tsv:2: field label: expected 0 or 1, found \"2\""), "\(two)")
        let empty = try failure(criteoLine(label: ""))
        #expect(empty.contains("bad.tsv:1: field label: the label is empty"), "\(empty)")
        let long = try failure(criteoLine(label: "10"))
        #expect(long.contains("field label"), "\(long)")
    }

    @Test func emptyLineIsReportedEvenWhenNotSelected() throws {
        let text = try failure(good + "\n\n" + good + "\n", selecting: { $0 == 0 })
        #expect(text.contains("bad.tsv:2: empty line"), "\(text)")
    }

    @Test func badRowsAreOnlyCheckedWhenSelected() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try directory.write("mixed.tsv", good + "\n" + criteoLine(label: "x") + "\n" + good + "\n")
        let rows = try CriteoTSV.parse(try MappedFile(path: path), selecting: { $0 != 1 })
        #expect(rows.count == 2)
    }

    @Test func emptyFile() throws {
        let text = try failure("")
        #expect(text.contains("bad.tsv") && text.contains("no rows") && text.contains("hint:"), "\(text)")
    }

    @Test func missingFileAndDirectory() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let missing = directory.path("nope.tsv")
        #expect(throws: DataError.self) { try MappedFile(path: missing) }
        do {
            _ = try MappedFile(path: missing)
        } catch {
            #expect(error.file == missing)
            #expect(error.description.contains("cannot open '\(missing)': No such file or directory"), "\(error)")
            #expect(error.hint != nil)
        }
        do {
            _ = try MappedFile(path: directory.url.path)
            Issue.record("opening a directory did not fail")
        } catch {
            #expect(error.description.contains("is a directory"), "\(error)")
        }
    }

    @Test func emptyFileOpens() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let file = try MappedFile(path: try directory.write("empty.tsv", ""))
        #expect(file.bytes.count == 0)
        #expect(CriteoTSV.countRows(file) == 0)
    }

    @Test func descriptionFormat() {
        let error = DataError(file: "data/x.tsv", line: 17, field: "I3", message: "expected an integer, found \"1x2\"", hint: "fix it")
        #expect(error.description == "data/x.tsv:17: field I3: expected an integer, found \"1x2\" (hint: fix it)")
        #expect(DataError(file: "f", message: "m").description == "f: m")
        let quoted = [UInt8]([0x61, 0x09, 0xFF, 0x22]).withUnsafeBytes { DataError.quote($0) }
        #expect(quoted == #""a\t\xff\"""#)
    }
}
