#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reading Criteo click logs in their original tab-separated text form.
///
/// Each line is one row of exactly 40 tab-separated fields (see `CriteoFormat`):
///
/// - the label: `0` or `1` (required);
/// - 13 integer fields: an optional `-` followed by digits, or empty (read as 0);
/// - 26 categorical fields: any bytes (Criteo uses 8 hex digits), or empty; stored as
///   `CriteoRows.hashCategorical` of the bytes, 0 when empty.
///
/// Lines end with `\n`; a `\r` before it is ignored, and the last line may lack its `\n`.
/// Empty lines are errors (they would shift every later row index, and row indices decide
/// which rank reads which row). Errors name the file, the 1-based line and the field.
public enum CriteoTSV {
    /// The number of rows in `file`: the number of lines, where a last line without `\n` counts
    /// and nothing after the final `\n` does. One `memchr` pass over the bytes.
    public static func countRows(_ file: MappedFile) -> Int {
        countLines(file.text)
    }

    /// Counts lines as `countRows` does.
    static func countLines(_ bytes: UnsafeRawBufferPointer) -> Int {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return 0 }
        let end = base + bytes.count
        var cursor = base
        var count = 0
        while cursor < end {
            count += 1
            guard let newline = memchr(cursor, 0x0A, end - cursor) else { break }
            cursor = UnsafeRawPointer(newline) + 1
        }
        return count
    }

    /// Parses every row of `file`.
    ///
    /// - Throws: `DataError` naming the file, line and field of the first malformed row, or
    ///   "no rows" for an empty file.
    public static func parse(_ file: MappedFile) throws(DataError) -> CriteoRows {
        try parse(file, selecting: { _ in true })
    }

    /// Parses the rows of `file` whose 0-based row index satisfies `selecting`, in file order.
    ///
    /// Every line is visited (a `memchr` for its end) so that row indices are exact, but only
    /// selected lines are split into fields and checked, so a rank that reads 1/N of the rows
    /// pays about 1/N of the parsing cost. `selecting` is called once per row, in increasing
    /// order. Empty lines are reported whether selected or not, so all ranks agree on them.
    ///
    /// - Throws: `DataError` naming the file, line and field of the first malformed selected row,
    ///   or "no rows" for an empty file.
    public static func parse(_ file: MappedFile, selecting: (Int) -> Bool) throws(DataError) -> CriteoRows {
        let bytes = file.text
        guard let base = bytes.baseAddress, !bytes.isEmpty else {
            throw DataError(file: file.path, message: "no rows: the file is empty",
                            hint: "expected Criteo TSV lines: label, I1..I13, C1..C26 separated by tabs")
        }
        let end = base + bytes.count

        // Pass 1: ask `selecting` about every row once, remember the answers in a bitmap, and
        // count them so the output can be allocated exactly.
        let rowCount = countLines(bytes)
        var bitmap = [UInt64](repeating: 0, count: (rowCount + 63) / 64)
        var selectedCount = 0
        for row in 0..<rowCount where selecting(row) {
            bitmap[row >> 6] |= 1 << UInt64(row & 63)
            selectedCount += 1
        }

        // Pass 2: walk the lines and parse the selected ones straight into the output arrays.
        var labels = [Float](repeating: 0, count: selectedCount)
        var dense = [Float](repeating: 0, count: selectedCount * CriteoFormat.denseCount)
        var categorical = [UInt32](repeating: 0, count: selectedCount * CriteoFormat.categoricalCount)
        var failure: LineError? = nil
        var failedLine = 0
        let parser = LineParser()
        defer { parser.deallocate() }

        labels.withUnsafeMutableBufferPointer { labelOut in
            dense.withUnsafeMutableBufferPointer { denseOut in
                categorical.withUnsafeMutableBufferPointer { categoricalOut in
                    var cursor = base
                    var row = 0
                    var out = 0
                    while cursor < end {
                        let lineEnd = memchr(cursor, 0x0A, end - cursor).map { UnsafeRawPointer($0) } ?? end
                        var contentEnd = lineEnd
                        if contentEnd > cursor && contentEnd.load(fromByteOffset: -1, as: UInt8.self) == 0x0D {
                            contentEnd -= 1
                        }
                        if contentEnd == cursor {
                            failure = .emptyLine
                            failedLine = row + 1
                            return
                        }
                        if bitmap[row >> 6] & (1 << UInt64(row & 63)) != 0 {
                            if let error = parser.parse(
                                UnsafeRawBufferPointer(start: cursor, count: contentEnd - cursor),
                                label: labelOut.baseAddress! + out,
                                dense: denseOut.baseAddress! + out * CriteoFormat.denseCount,
                                categorical: categoricalOut.baseAddress! + out * CriteoFormat.categoricalCount
                            ) {
                                failure = error
                                failedLine = row + 1
                                return
                            }
                            out += 1
                        }
                        row += 1
                        cursor = lineEnd + 1
                    }
                }
            }
        }
        if let failure {
            throw failure.dataError(file: file.path, line: failedLine)
        }
        return CriteoRows(labels: labels, dense: dense, categorical: categorical)
    }
}

/// What is wrong with one line; turned into a `DataError` once the line number is known.
enum LineError {
    case emptyLine
    case fieldCount(found: Int)
    case emptyLabel
    case badLabel(found: String)
    case badInteger(column: Int, found: String)
    case integerTooLarge(column: Int, found: String)

    func dataError(file: String, line: Int) -> DataError {
        let layout = "a Criteo row is 40 tab-separated fields: label, I1..I13, C1..C26"
        switch self {
        case .emptyLine:
            return DataError(file: file, line: line, message: "empty line",
                             hint: "remove empty lines; every line must be one row (\(layout))")
        case .fieldCount(let found):
            return DataError(file: file, line: line,
                             message: "expected \(CriteoFormat.fieldCount) tab-separated fields, found \(found)",
                             hint: layout + "; empty fields are allowed but their tabs are not optional")
        case .emptyLabel:
            return DataError(file: file, line: line, field: "label", message: "the label is empty",
                             hint: "the first field must be 0 or 1 (unlabeled test files cannot be used for training)")
        case .badLabel(let found):
            return DataError(file: file, line: line, field: "label", message: "expected 0 or 1, found \(found)",
                             hint: "the first field is the click label")
        case .badInteger(let column, let found):
            return DataError(file: file, line: line, field: CriteoFormat.fieldName(column),
                             message: "expected an integer, found \(found)",
                             hint: "integer fields hold an optional '-' and decimal digits, or nothing")
        case .integerTooLarge(let column, let found):
            return DataError(file: file, line: line, field: CriteoFormat.fieldName(column),
                             message: "integer \(found) is too large", hint: "integer fields must fit in 18 digits")
        }
    }
}

/// Splits one line (without its line ending) into fields and converts them. Keeps a scratch
/// array of tab positions so nothing is allocated per line.
struct LineParser {
    /// Offsets of the first `fieldCount - 1` tabs of the current line.
    private let tabs = UnsafeMutablePointer<Int>.allocate(capacity: CriteoFormat.fieldCount)

    func deallocate() { tabs.deallocate() }

    /// Parses `line` into one row of output, or says what is wrong with it.
    @inline(__always)
    func parse(_ line: UnsafeRawBufferPointer,
               label: UnsafeMutablePointer<Float>,
               dense: UnsafeMutablePointer<Float>,
               categorical: UnsafeMutablePointer<UInt32>) -> LineError? {
        let base = line.baseAddress!
        let length = line.count
        let maxTabs = CriteoFormat.fieldCount - 1

        // Find the tabs, eight bytes at a time: a byte of `word ^ 0x09...` is zero exactly where
        // `word` holds a tab, and `zeroBytes` marks such bytes with their high bit, exactly (no
        // false positives from borrows between bytes).
        var tabCount = 0
        var i = 0
        while i + 8 <= length {
            let word = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            var marks = LineParser.zeroBytes(word ^ 0x0909_0909_0909_0909)
            while marks != 0 {
                if tabCount < maxTabs { tabs[tabCount] = i + marks.trailingZeroBitCount >> 3 }
                tabCount += 1
                marks &= marks &- 1
            }
            i += 8
        }
        while i < length {
            if base.load(fromByteOffset: i, as: UInt8.self) == 0x09 {
                if tabCount < maxTabs { tabs[tabCount] = i }
                tabCount += 1
            }
            i += 1
        }
        if tabCount != maxTabs {
            return .fieldCount(found: tabCount + 1)
        }

        // Label.
        let labelEnd = tabs[0]
        if labelEnd == 0 { return .emptyLabel }
        let first = base.load(as: UInt8.self)
        if labelEnd != 1 || (first != UInt8(ascii: "0") && first != UInt8(ascii: "1")) {
            return .badLabel(found: DataError.quote(UnsafeRawBufferPointer(start: base, count: labelEnd)))
        }
        label.pointee = first == UInt8(ascii: "1") ? 1 : 0

        // Integer features.
        for j in 0..<CriteoFormat.denseCount {
            let start = tabs[j] + 1
            let stop = tabs[j + 1]
            if start == stop {
                dense[j] = 0
                continue
            }
            var k = start
            let negative = base.load(fromByteOffset: k, as: UInt8.self) == UInt8(ascii: "-")
            if negative { k += 1 }
            let digitCount = stop - k
            var value: Int64 = 0
            var valid = digitCount > 0
            while k < stop {
                let digit = base.load(fromByteOffset: k, as: UInt8.self) &- UInt8(ascii: "0")
                if digit > 9 {
                    valid = false
                    break
                }
                value = value &* 10 &+ Int64(digit)
                k += 1
            }
            let text = UnsafeRawBufferPointer(start: base + start, count: stop - start)
            if !valid { return .badInteger(column: 1 + j, found: DataError.quote(text)) }
            if digitCount > 18 { return .integerTooLarge(column: 1 + j, found: DataError.quote(text)) }
            dense[j] = Float(negative ? -value : value)
        }

        // Categorical features.
        for j in 0..<CriteoFormat.categoricalCount {
            let column = 1 + CriteoFormat.denseCount + j
            let start = tabs[column - 1] + 1
            let stop = column == maxTabs ? length : tabs[column]
            categorical[j] = CriteoRows.hashCategorical(UnsafeRawBufferPointer(start: base + start, count: stop - start))
        }
        return nil
    }

    /// The high bit of each byte of the result is set exactly where the byte of `x` is zero.
    @inline(__always)
    static func zeroBytes(_ x: UInt64) -> UInt64 {
        let low7: UInt64 = 0x7F7F_7F7F_7F7F_7F7F
        return ~(((x & low7) &+ low7) | x | low7)
    }
}
