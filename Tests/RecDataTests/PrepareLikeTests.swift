import Foundation
import Testing
@testable import RecData

/// `prepare --like DIR`: new rows get exactly the encoding of an existing dataset.
@Suite struct PrepareLikeTests {
    /// A csv click log: label, a dense "x", a categorical "color".
    func clickLog(_ directory: TemporaryDirectory, _ name: String, _ rows: [(Int, String, String)]) throws -> String {
        try directory.write(name, "click,x,color\n" + rows.map { "\($0.0),\($0.1),\($0.2)\n" }.joined())
    }

    func clickSchema(_ directory: TemporaryDirectory) throws -> String {
        try directory.write("schema.json", #"{"separator": ",", "header": true, "label": "click", "dense": ["x"], "categorical": ["color"]}"#)
    }

    /// The reference's own input, encoded like it, is the reference's rows in input order (the
    /// contiguous split keeps them in order: train, then test, then valid); new values get the
    /// out-of-vocabulary id and the dense values the reference's standardization.
    @Test func clickLogRowsGetTheReferenceEncoding() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let colors = ["red", "red", "blue", "green", "", "red", "blue", "teal"]
        let rows = (0..<40).map { i in (i % 3 == 0 ? 1 : 0, "\(Double(i) * 0.5 - 3)", colors[i % colors.count]) }
        let input = try clickLog(directory, "log.csv", rows)
        let reference = try prepare(.csv, [input], in: directory, name: "ref") { o in
            o.schema = try? clickSchema(directory)
            o.split = .contiguous
            o.validFraction = 0.2
            o.testFraction = 0.2
            o.encoding = .vocabulary(minCount: 2)
        }
        #expect(FileManager.default.fileExists(atPath: directory.path("ref/vocabulary.bin")))

        _ = try Preparer.apply(like: directory.path("ref"), inputs: [input], output: directory.path("same"))
        let same = try PreparedDataset(directory: directory.path("same"))
        #expect(same.manifest.splits.map(\.name) == ["test"])
        #expect(same.schemaHash == reference.schemaHash && same.manifest.schema == reference.manifest.schema)
        #expect(!FileManager.default.fileExists(atPath: directory.path("same/train.rdp")))
        let inOrder = try ["train", "test", "valid"].map { try SplitContents(reference, $0) }
        let applied = try SplitContents(same, "test")
        #expect(applied.labels == inOrder.flatMap(\.labels))
        #expect(applied.dense == inOrder.flatMap(\.dense))
        #expect(applied.ids == inOrder.flatMap(\.ids))

        // New rows: a known value keeps its id, an unseen one gets 1, a missing one 0.
        let newInput = try clickLog(directory, "new.csv", [(1, "7.25", "red"), (0, "-1", "purple"), (1, "0", "")])
        _ = try Preparer.apply(like: directory.path("ref"), inputs: [newInput], output: directory.path("new"))
        let new = try SplitContents(try PreparedDataset(directory: directory.path("new")), "test")
        let redID = try #require(inOrder[0].ids.first.map { $0[0] })
        #expect(new.ids == [[redID], [1], [0]])
        #expect(new.labels == [1, 0, 1])
        let field = reference.manifest.schema.dense[0]
        let expected = [7.25, -1.0, 0.0].map { Float((Double(Float($0)) - field.mean) * (1 / field.std)) }   // in double precision
        #expect(new.dense.map { $0[0] } == expected)
    }

    /// MovieLens: the label rule and the side files come from the reference; an input with no side
    /// files beside it uses the ones the reference was prepared with.
    @Test func interactionRowsGetTheReferenceEncodingAndSideFiles() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let lines = "1\t10\t5\t100\n2\t10\t3\t50\n1\t11\t4\t200\n2\t11\t1\t300\n1\t12\t2\t300\n"
        let data = try directory.write("u.data", lines)
        try directory.write("u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
        let flags = { (k: Int) in (0..<19).map { $0 == k ? "1" : "0" }.joined(separator: "|") }
        try directory.write("u.item", "10|A (1995)|01-Jan-1995||http://x|\(flags(3))\n11|B (1994)|01-Jan-1994||http://y|\(flags(5))\n12|Z|||http://z|\(flags(0))\n")
        let reference = try prepare(.movielens100k, [data], in: directory, name: "ref") { o in
            o.split = .random
            o.validFraction = 0
            o.testFraction = 0
        }
        try FileManager.default.createDirectory(atPath: directory.path("elsewhere"), withIntermediateDirectories: true)
        let copy = try directory.write("elsewhere/u.data", lines + "7\t10\t4\t400\n")
        _ = try Preparer.apply(like: directory.path("ref"), inputs: [copy], output: directory.path("new"))
        let new = try PreparedDataset(directory: directory.path("new"))
        #expect(new.schemaHash == reference.schemaHash)
        #expect(new.manifest.source.inputs.map { ($0.path as NSString).lastPathComponent } == ["u.data", "u.user", "u.item"])
        let expected = try SplitContents(reference, "train")
        let applied = try SplitContents(new, "test")
        #expect(Array(applied.labels.prefix(5)) == expected.labels)
        #expect(Array(applied.dense.prefix(5)) == expected.dense)
        #expect(Array(applied.ids.prefix(5)) == expected.ids)
        #expect(applied.labels[5] == 1 && applied.ids[5][0] == 1, "an unseen user gets the out-of-vocabulary id")
        #expect(applied.ids[5][1] == expected.ids[0][1], "item 10 keeps its id")
    }

    @Test func errorsNameTheFileAndWhatToDo() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let input = try clickLog(directory, "log.csv", (0..<20).map { ($0 % 2, "\($0)", "c\($0 % 3)") })
        try prepare(.csv, [input], in: directory, name: "ref") { o in
            o.schema = try? clickSchema(directory)
            o.encoding = .vocabulary(minCount: 1)
        }
        let ref = directory.path("ref"), vocabulary = directory.path("ref/vocabulary.bin")

        var message = failure { _ = try Preparer.apply(like: ref, inputs: [input], output: directory.path("a"), format: .criteo) }
        #expect(message.contains("was prepared from csv rows") && message.contains("criteo"), "\(message)")

        var bad = try contents(vocabulary)
        bad[20] ^= 0x40
        let good = try contents(vocabulary)
        try directory.write("ref/vocabulary.bin", bytes: bad)
        message = failure { _ = try Preparer.apply(like: ref, inputs: [input], output: directory.path("b")) }
        #expect(message.contains(vocabulary) && message.contains("checksum"), "\(message)")
        #expect(!FileManager.default.fileExists(atPath: directory.path("b")), "nothing is left behind")

        try FileManager.default.removeItem(atPath: vocabulary)
        message = failure { _ = try Preparer.apply(like: ref, inputs: [input], output: directory.path("c")) }
        #expect(message.contains(vocabulary) && message.contains("not stored") && message.contains("--force"), "\(message)")
        try directory.write("ref/vocabulary.bin", bytes: good)

        let wider = try directory.write("wider.csv", "click,x,color\n1,2,red,extra\n")
        message = failure { _ = try Preparer.apply(like: ref, inputs: [wider], output: directory.path("d")) }
        #expect(message.contains("\(wider):2"), "a bad row names its file and line: \(message)")

        message = failure {
            var options = PrepareOptions(format: .csv, inputs: [input], output: directory.path("e"))
            options.schema = directory.path("schema.json")
            options.split = .none
            _ = try Preparer.run(options)
        }
        #expect(message.contains("--like"), "\(message)")
    }
}
