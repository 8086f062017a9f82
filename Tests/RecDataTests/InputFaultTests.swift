import Foundation
import Synchronization
import Testing
@testable import RecData

/// Hostile input for prepare and the raw readers: values at the edge of float32, byte-order
/// marks. Each is either read correctly or refused with the file, line and field named.
@Suite struct InputFaultTests {
    static let schema = #"{"separator": ",", "header": true, "label": "click", "dense": ["price", "qty"], "categorical": ["city"]}"#

    /// 100 rows `click,price,qty,city`; `price` of row `special.row` (0-based) is `special.text`.
    static func clicks(_ special: (row: Int, text: String)? = nil) -> String {
        var text = "click,price,qty,city\n"
        for i in 0..<100 {
            let price = special?.row == i ? special!.text : String(format: "%.1f", Double(i % 7) / 10)
            text += "\(i % 2),\(price),\(i % 5),c\(i % 9)\n"
        }
        return text
    }

    /// A finite value far outside the training rows' range used to become -inf under
    /// standardization (exit 0); now its row is refused by file, line and field, or skipped into
    /// rejects.txt, and everything written is finite.
    @Test func standardizationNeverWritesInfinity() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let schema = try directory.write("schema.json", Self.schema)
        // Contiguous split: rows 0..<86 train, so row 95 (line 97) is a held-out row.
        let input = try directory.write("clicks.csv", Self.clicks((95, "-3e38")))
        func options(_ adjust: @escaping (inout PrepareOptions) -> Void) -> (inout PrepareOptions) -> Void {
            { o in
                o.schema = schema
                o.split = .contiguous
                o.denseTransform = .standardize
                adjust(&o)
            }
        }
        let message = failure { try prepare(.csv, [input], in: directory, options { _ in }) }
        #expect(message.hasPrefix("\(input):97: field price: "), "\(message)")
        #expect(message.contains("outside the float32 range"), "\(message)")
        let left = try FileManager.default.contentsOfDirectory(atPath: directory.url.path)
        #expect(Set(left) == ["schema.json", "clicks.csv"], "no partial dataset: \(left)")

        let dataset = try prepare(.csv, [input], in: directory, options { $0.maxBadRows = 1 })
        #expect(dataset.manifest.statistics.badRows == 1)
        var rows = 0
        for name in PreparedManifest.splitNames {
            let contents = try SplitContents(dataset, name)
            rows += contents.labels.count
            #expect(contents.dense.allSatisfy { $0.allSatisfy(\.isFinite) }, "\(name)")
        }
        #expect(rows == 99)
        let rejects = try String(contentsOfFile: directory.path("out/rejects.txt"), encoding: .utf8)
        #expect(rejects.hasPrefix("\(input):97: field price: ") && rejects.hasSuffix("1,-3e38,0,c5\n"), "\(rejects)")
    }

    /// A number beyond float32 is named as such, not as "not a number".
    @Test(arguments: ["1e39", "-4e38", "1e400"])
    func outOfRangeNumberIsNamed(_ text: String) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let schema = try directory.write("schema.json", Self.schema)
        let input = try directory.write("clicks.csv", Self.clicks((5, text)))
        let message = failure { try prepare(.csv, [input], in: directory) { $0.schema = schema } }
        #expect(message.hasPrefix("\(input):7: field price: \"\(text)\" is out of float32 range"), "\(message)")
        // Not-a-number text keeps its own message.
        let other = try directory.write("nan.csv", Self.clicks((5, "inf")))
        let nan = failure { try prepare(.csv, [other], in: directory, name: "nan") { $0.schema = schema } }
        #expect(nan.hasPrefix("\(other):7: field price: expected a number, found \"inf\""), "\(nan)")
    }

    /// A UTF-8 byte-order mark at the start of a file is skipped: the csv header names its first
    /// column correctly, and a BOM-prefixed file prepares (and parses) exactly like the file without it.
    @Test func byteOrderMarkIsSkipped() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let schema = try directory.write("schema.json", Self.schema)
        let plain = try directory.write("plain.csv", Self.clicks())
        let marked = try directory.write("marked.csv", bytes: [0xEF, 0xBB, 0xBF] + Array(Self.clicks().utf8))
        let a = try prepare(.csv, [plain], in: directory, name: "a") { $0.schema = schema; $0.seed = 3 }
        let b = try prepare(.csv, [marked], in: directory, name: "b") { $0.schema = schema; $0.seed = 3 }
        for name in PreparedManifest.splitNames {
            #expect(try SplitContents(a, name) == SplitContents(b, name), "\(name)")
        }
        #expect(b.manifest.statistics.lines == a.manifest.statistics.lines && b.manifest.statistics.badRows == 0)

        let tsv = directory.path("synth.tsv")
        try SynthGenerator(seed: 2).write(rows: 50, to: tsv, probabilitiesPath: nil)
        let markedTSV = try directory.write("marked.tsv", bytes: [0xEF, 0xBB, 0xBF] + Array(try Data(contentsOf: URL(fileURLWithPath: tsv))))
        let rows = try CriteoTSV.parse(try MappedFile(path: tsv))
        let markedRows = try CriteoTSV.parse(try MappedFile(path: markedTSV))
        #expect(CriteoTSV.countRows(try MappedFile(path: markedTSV)) == 50)
        #expect(rows.labels == markedRows.labels && rows.dense == markedRows.dense && rows.categorical == markedRows.categorical)
        // A file that holds only the mark has no rows.
        let empty = try directory.write("empty.csv", bytes: [0xEF, 0xBB, 0xBF])
        let message = failure { try prepare(.csv, [empty], in: directory, name: "e") { $0.schema = schema } }
        #expect(message.contains("the first input has no lines"), "\(message)")
    }

    /// A FIFO used to block `open` forever (waiting for a writer). Every reader goes through
    /// `MappedFile`, which refuses it at once by name, as it refuses devices.
    @Test func nonRegularFilesAreRefusedWithoutBlocking() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let fifo = directory.path("pipe")
        #expect(mkfifo(fifo, 0o600) == 0)
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<String?>(nil)
        Thread.detachNewThread {
            let message = failure { _ = try MappedFile(path: fifo) }
            result.withLock { $0 = message }
            done.signal()
        }
        if done.wait(timeout: .now() + 10) == .timedOut {
            Issue.record("opening a FIFO blocked for 10 s")
            // Unblock the reader so the test process can end.
            let writer = open(fifo, O_WRONLY | O_NONBLOCK)
            if writer >= 0 { close(writer) }
            done.wait()
        }
        let message = result.withLock { $0 } ?? ""
        #expect(message.hasPrefix("\(fifo): cannot read '\(fifo)': it is a FIFO (named pipe), not a regular file"), "\(message)")
        let device = failure { _ = try MappedFile(path: "/dev/zero") }
        #expect(device.hasPrefix("/dev/zero: cannot read '/dev/zero': it is a device"), "\(device)")
        // Small files (schemas, manifests) go through the same check.
        let schema = failure { _ = try GenericSchema.load(path: fifo) }
        #expect(schema.contains("it is a FIFO"), "\(schema)")
    }

    /// A path whose bytes are not UTF-8 reaches rec-dist repaired (U+FFFD), so it cannot be
    /// opened; the message says so instead of "No such file or directory".
    @Test func nonUTF8PathIsExplained() throws {
        let message = failure { _ = try MappedFile(path: "/tmp/caf\u{FFFD}-missing.tsv") }
        #expect(message.contains("holds bytes that are not UTF-8"), "\(message)")
        let plain = failure { _ = try MappedFile(path: "/tmp/no-such-file-\(UUID().uuidString).tsv") }
        #expect(plain.contains("No such file or directory"), "\(plain)")
    }
}
