import Foundation
import Testing
import RecData

@Suite struct SynthGeneratorTests {
    @Test func sameSeedSameBytesDifferentSeedDifferentBytes() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        for (name, seed) in [("a", 7), ("b", 7), ("c", 8)] {
            let path = directory.path("\(name).tsv")
            try SynthGenerator(seed: UInt64(seed)).write(rows: 500, to: path,
                                                       probabilitiesPath: SynthGenerator.defaultProbabilitiesPath(for: path))
        }
        let a = try contents(directory.path("a.tsv")), b = try contents(directory.path("b.tsv"))
        let c = try contents(directory.path("c.tsv"))
        #expect(a.count > 500 * 100)
        #expect(firstDifference(a, b) == nil)
        #expect(firstDifference(a, c) != nil)
        #expect(firstDifference(try contents(directory.path("a.tsv.probs")), try contents(directory.path("b.tsv.probs"))) == nil)
        #expect(firstDifference(try contents(directory.path("a.tsv.probs")), try contents(directory.path("c.tsv.probs"))) != nil)
        // Nothing but the two outputs per run is left behind (no temporary files).
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.url.path).sorted()
        #expect(names == ["a.tsv", "a.tsv.probs", "b.tsv", "b.tsv.probs", "c.tsv", "c.tsv.probs"])
    }

    @Test func rowDoesNotDependOnRowCount() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let generator = SynthGenerator(seed: 5)
        try generator.write(rows: 1000, to: directory.path("long.tsv"), probabilitiesPath: directory.path("long.probs"))
        try generator.write(rows: 100, to: directory.path("short.tsv"), probabilitiesPath: directory.path("short.probs"))
        let long = try contents(directory.path("long.tsv")), short = try contents(directory.path("short.tsv"))
        #expect(short.count < long.count)
        #expect(firstDifference(Array(long.prefix(short.count)), short) == nil)
        let longProbabilities = try contents(directory.path("long.probs"))
        let shortProbabilities = try contents(directory.path("short.probs"))
        #expect(firstDifference(Array(longProbabilities.prefix(shortProbabilities.count)), shortProbabilities) == nil)

        // Any range generates the same rows as the prefix it is part of.
        let whole = generator.generate(rows: 300)
        let middle = generator.generate(range: 120..<250)
        #expect(firstDifference(middle.rows, subset(whole.rows, Array(120..<250))) == nil)
        #expect(firstDifference(middle.probabilities, Array(whole.probabilities[120..<250])) == nil)
    }

    @Test func writeThenParseEqualsGenerate() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path("synth.tsv")
        let generator = SynthGenerator(seed: 42)
        try generator.write(rows: 3000, to: path, probabilitiesPath: SynthGenerator.defaultProbabilitiesPath(for: path))
        let parsed = try CriteoTSV.parse(try MappedFile(path: path))
        let (rows, probabilities) = generator.generate(rows: 3000)
        #expect(parsed.count == 3000)
        #expect(firstDifference(parsed, rows) == nil)

        let written = try SynthGenerator.readProbabilities(path: path + ".probs")
        #expect(written.count == 3000)
        let worst = zip(written, probabilities).map { abs($0 - $1) }.max() ?? 0
        #expect(worst <= 5e-7 + 1e-12)
        #expect(probabilities.allSatisfy { $0 > 0 && $0 < 1 })
    }

    /// The text looks like Criteo: integers, 8-digit lowercase hex, some empty fields, some
    /// negative I2, and vocabularies of very different sizes.
    @Test func formatAndDistributions() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path("synth.tsv")
        try SynthGenerator(seed: 9).write(rows: 5000, to: path, probabilitiesPath: nil)
        let text = String(decoding: try contents(path), as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 5001 && lines.last == "")
        var emptyCounts = [Int](repeating: 0, count: 40)
        var distinct = [Set<Substring>](repeating: [], count: 40)
        var negativeI2 = 0
        for line in lines.dropLast() {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            #expect(fields.count == 40)
            #expect(fields[0] == "0" || fields[0] == "1")
            for (column, field) in fields.enumerated() {
                if field.isEmpty {
                    emptyCounts[column] += 1
                    continue
                }
                distinct[column].insert(field)
                if (1...13).contains(column) {
                    #expect(Int(field) != nil, "I\(column) = \(field)")
                    if column == 2 && field.hasPrefix("-") { negativeI2 += 1 }
                    if column != 2 { #expect(!field.hasPrefix("-")) }
                } else if column > 13 {
                    #expect(field.count == 8 && field.allSatisfy { $0.isHexDigit && !$0.isUppercase }, "C\(column - 13) = \(field)")
                }
            }
        }
        #expect(emptyCounts[0] == 0)
        #expect(emptyCounts[1] > 1500)                           // I1 is often missing
        #expect(emptyCounts.reduce(0, +) > 5000)
        #expect(negativeI2 > 200 && negativeI2 < 700)            // about 8%
        #expect(distinct[13 + 9].count <= 5)                     // C9: 5 values
        #expect(distinct[13 + 3].count > 1500)                   // C3: 200k values, long tail
        #expect(distinct[13 + 6].count < distinct[13 + 3].count)
    }

    /// The hidden model has learnable signal of the intended strength: the oracle AUC is in
    /// 0.78...0.86, the click rate in 0.2...0.3, and a fixed score of the dense features alone is
    /// informative (AUC above 0.6) but clearly below the oracle, so most signal is categorical.
    @Test func signalStrength() {
        let generator = SynthGenerator(seed: 1)
        let (rows, probabilities) = generator.generate(rows: 50_000)
        let clickRate = rows.labels.reduce(0, +) / Float(rows.count)
        #expect(clickRate > 0.2 && clickRate < 0.3, "click rate \(clickRate)")

        let oracle = areaUnderROC(scores: probabilities, labels: rows.labels)
        #expect(oracle > 0.78 && oracle < 0.86, "oracle AUC \(oracle)")

        // The documented dense terms on I1..I10, with fixed weights (not fitted).
        let d = CriteoFormat.denseCount
        let denseScores = (0..<rows.count).map { r -> Double in
            func x(_ j: Int) -> Double { log1p(Double(max(rows.dense[r * d + j], 0))) }
            let bump = (x(2) - 2.3) / 0.6
            return 0.28 * x(0) + 0.7 * exp(-0.5 * bump * bump) - 0.2 * x(5)
                + 0.45 * tanh(1.5 * (x(6) - 1.2)) + 0.12 * x(8) + (x(9) > 0 ? 0.35 : 0)
        }
        let denseOnly = areaUnderROC(scores: denseScores, labels: rows.labels)
        #expect(denseOnly > 0.6, "dense-only AUC \(denseOnly)")
        #expect(denseOnly < oracle - 0.1, "dense-only AUC \(denseOnly), oracle \(oracle)")

        // A useless score is at chance, so the helper itself is not biased.
        let constant = areaUnderROC(scores: [Double](repeating: 0, count: rows.count), labels: rows.labels)
        #expect(abs(constant - 0.5) < 1e-12)
    }

    @Test func readProbabilitiesErrors() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        #expect(try SynthGenerator.readProbabilities(path: try directory.write("ok.probs", "0.5\n1\n0.000001\r\n")) == [0.5, 1, 0.000001])
        let path = try directory.write("bad.probs", "0.25\n0.5\n1.5\n")
        do {
            _ = try SynthGenerator.readProbabilities(path: path)
            Issue.record("reading a probability of 1.5 did not fail")
        } catch {
            #expect(error.description.contains("bad.probs:3: expected a probability in 0...1, found \"1.5\""), "\(error)")
        }
    }
}
