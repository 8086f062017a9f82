import Foundation
import RecCore
import Testing
@testable import RecData

@Suite struct ChecksumTests {
    /// The reference implementation's vectors (xxHash's sanity checks), including one long enough
    /// for the 32-byte stripes and one with a seed.
    @Test func xxh64MatchesTheReferenceVectors() {
        #expect(XXH64.hash("") == 0xEF46_DB37_51D8_E999)
        #expect(XXH64.hash("", seed: 1) == 0xD5AF_BA13_36A3_BE4B)
        #expect(XXH64.hash("a") == 0xD24E_C4F1_A98C_6E5B)
        #expect(XXH64.hash("abc") == 0x44BC_2CF5_AD77_0999)
        #expect(XXH64.hash("Nobody inspects the spammish repetition") == 0xFBCE_A83C_8A37_8BF1)
    }
}

@Suite struct PreparedSplitTests {
    /// Writes `rows` rows (row r: label r % 2, dense [r, -r/2], ids [r, 3r % 11, 7]) in groups of 7.
    func writeSplit(_ path: String, rows: Int, rowsPerGroup: Int = 7) throws -> PreparedSplitHeader {
        let writer = try PreparedSplitWriter(path: path, denseCount: 2, categoricalCount: 3, schemaHash: 0xABCD,
                                             split: "train", rowsPerGroup: rowsPerGroup)
        for r in 0..<rows {
            let dense: [Float] = [Float(r), -Float(r) / 2]
            let ids: [UInt32] = [UInt32(r), UInt32(3 * r % 11), 7]
            if r % 3 == 0 {
                try writer.append(label: Float(r % 2), dense: dense, categorical: ids)
            } else {
                try writer.append(count: 1, labels: [Float(r % 2)], dense: dense, categorical: ids)
            }
        }
        return try writer.finish()
    }

    @Test(arguments: [0, 1, 6, 7, 8, 20, 21])
    func roundTrip(rows: Int) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path("train.rdp")
        let header = try writeSplit(path, rows: rows)
        #expect(header.rows == rows && header.groupCount == (rows + 6) / 7)
        let reader = try PreparedSplitReader(path: path, expectedSchemaHash: 0xABCD)
        #expect(reader.header == header)
        #expect(try contents(path).count == header.fileSize)
        try reader.verifyAll()
        let out = FeatureRowsBuffer(capacity: max(rows, 1), denseWidth: 2, categoricalWidth: 3)
        for r in 0..<rows {
            #expect(reader.label(r) == Float(r % 2))
            #expect(reader.dense(r)[0] == Float(r) && reader.dense(r)[1] == -Float(r) / 2)
            #expect(reader.categorical(r)[0] == UInt32(r) && reader.categorical(r)[1] == UInt32(3 * r % 11)
                    && reader.categorical(r)[2] == 7)
            reader.copyRow(r, to: out, slot: rows - 1 - r)
        }
        for r in 0..<rows {
            let s = rows - 1 - r
            #expect(out.labels[s] == Float(r % 2) && out.dense[2 * s] == Float(r) && out.categorical[3 * s + 1] == UInt32(3 * r % 11))
        }
    }

    /// Every single-byte change anywhere in the file is caught when it is opened or verified.
    @Test func anyFlippedByteIsDetected() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path("train.rdp")
        _ = try writeSplit(path, rows: 20)
        let good = try contents(path)
        var rng = SplitMix(seed: 5)
        var offsets = Set([0, 8, 16, 56, 64, 100, 4087, 4088, good.count - 1, good.count - 8, 4096, 4096 + 28 * 4])
        while offsets.count < 150 { offsets.insert(Int(rng.next() % UInt64(good.count))) }
        for offset in offsets.sorted() {
            var bad = good
            bad[offset] ^= UInt8(1 << (rng.next() % 8))
            let target = directory.path("bad.rdp")
            try Data(bad).write(to: URL(fileURLWithPath: target))
            do {
                let reader = try PreparedSplitReader(path: target, expectedSchemaHash: 0xABCD)
                try reader.verifyAll()
                Issue.record("a flipped bit at byte \(offset) went unnoticed")
            } catch {
                #expect(error.description.contains("bad.rdp"), "\(error)")
                #expect(error.description.contains("re-run `rec-dist prepare`"), "\(error)")
            }
        }
    }

    @Test func truncatedAndUnfinishedFilesAreNamed() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path("train.rdp")
        _ = try writeSplit(path, rows: 20)
        let good = try contents(path)
        func failure(_ bytes: [UInt8], schema: UInt64 = 0xABCD) throws -> String {
            let target = directory.path("x.rdp")
            try Data(bytes).write(to: URL(fileURLWithPath: target))
            do {
                let reader = try PreparedSplitReader(path: target, expectedSchemaHash: schema)
                try reader.verifyAll()
            } catch {
                return error.description
            }
            Issue.record("no error")
            return ""
        }
        #expect(try failure(Array(good.dropLast(100))).contains("truncated"))
        #expect(try failure(Array(good.prefix(100))).contains("truncated"))
        #expect(try failure(good + [0]).contains("unexpected bytes after the end"))
        var unfinished = good
        for i in 0..<4096 { unfinished[i] = 0 }
        #expect(try failure(unfinished).contains("not completely written"))
        #expect(try failure(good, schema: 0x1234).contains("belongs to another prepared dataset"))
        var newer = good
        newer[8] = 9
        #expect(try failure(newer).contains("format version 9"))
        #expect(try failure([]).contains("truncated"))
    }
}

/// A tiny seeded generator for test decisions: RecCore's SplitMix64 sequence.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        defer { state &+= SplitMix64.gamma }
        return SplitMix64.mix(state)
    }
}
