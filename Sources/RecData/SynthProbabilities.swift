#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The synthetic dataset's side file of true click probabilities (`FILE.probs`), one per row,
/// from which `train` reports the oracle AUC of its evaluation split.
extension SynthGenerator {
    /// The path of the true-probability side file for a data file: `dataPath + ".probs"`.
    public static func defaultProbabilitiesPath(for dataPath: String) -> String {
        dataPath + ".probs"
    }

    /// Reads a probabilities side file: one decimal number in `0...1` per line (as `write`
    /// writes them). An empty file is zero rows.
    ///
    /// - Throws: `DataError` naming the line of a malformed number, or when the file cannot be read.
    public static func readProbabilities(path: String) throws(DataError) -> [Double] {
        let file = try MappedFile(path: path)
        let bytes = file.bytes
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return [] }
        var values: [Double] = []
        values.reserveCapacity(bytes.count / 9 + 1)
        let end = base + bytes.count
        var cursor = base
        var line = 0
        while cursor < end {
            line += 1
            let lineEnd = memchr(cursor, 0x0A, end - cursor).map { UnsafeRawPointer($0) } ?? end
            var contentEnd = lineEnd
            if contentEnd > cursor && contentEnd.load(fromByteOffset: -1, as: UInt8.self) == 0x0D { contentEnd -= 1 }
            let text = UnsafeRawBufferPointer(start: cursor, count: contentEnd - cursor)
            guard let value = parseProbability(text) else {
                throw DataError(file: path, line: line, message: "expected a probability in 0...1, found \(DataError.quote(text))",
                                hint: "the file holds one decimal number per line, like 0.123456, as the synth command writes it")
            }
            values.append(value)
            cursor = lineEnd + 1
        }
        return values
    }

    /// Parses `digits[.digits]` into a Double in 0...1, or nil.
    private static func parseProbability(_ text: UnsafeRawBufferPointer) -> Double? {
        var whole: Int = 0
        var fraction: Int = 0
        var scale = 1.0
        var digits = 0
        var fractionDigits = 0
        var seenPoint = false
        for byte in text {
            if byte == UInt8(ascii: ".") && !seenPoint {
                seenPoint = true
                continue
            }
            let digit = byte &- UInt8(ascii: "0")
            guard digit <= 9 else { return nil }
            digits += 1
            if seenPoint {
                if fractionDigits < 17 {
                    fraction = fraction * 10 + Int(digit)
                    scale *= 10
                    fractionDigits += 1
                }
            } else {
                guard whole <= 1 else { return nil }
                whole = whole * 10 + Int(digit)
            }
        }
        guard digits > 0 else { return nil }
        let value = Double(whole) + Double(fraction) / scale
        return value <= 1 ? value : nil
    }
}
