import RecCore

/// How a categorical value's bytes become its 64-bit key (0 is reserved for "missing").
enum KeyMode: Sendable {
    /// `CriteoRows.hashCategorical` (32 bits), as raw Criteo TSV training hashes values: a
    /// prepared dataset hashed into M buckets then gets exactly the ids the TSV path computes.
    case criteoHash
    /// A 64-bit hash of the bytes (never 0, `RowParser.key64`): the key of a vocabulary entry. Two
    /// distinct values share a key with probability about n² / 2⁶⁵ for n distinct values
    /// (about 3e-6 for 10⁷ values).
    case key64
}

/// What is wrong with one line; becomes a `DataError` once the file and line are known.
struct LineProblem: Error, Sendable {
    var field: String?
    var message: String
    var hint: String?

    func dataError(file: String, line: Int) -> DataError {
        DataError(file: file, line: line, field: field, message: message, hint: hint)
    }
}

/// Parses lines of one input layout into reusable scratch outputs (one parser per thread; nothing
/// is allocated per line).
final class RowParser {
    let layout: InputLayout
    let keyMode: KeyMode
    let splitter: FieldSplitter

    // Outputs of the last successful `parse`.
    var label: Float = 0
    var rating: Double = 0
    /// The key (`key64`) of the behavior column's bytes.
    var behaviorKey: UInt64 = 0
    var timestamp: Int64 = 0
    /// dense: (denseCount) raw values, before any transform.
    let dense: UnsafeMutablePointer<Float>
    /// keys: (categoricalCount); 0 means missing.
    let keys: UnsafeMutablePointer<UInt64>

    private let missing: [[UInt8]]
    private let denseCount: Int
    private let categoricalCount: Int
    /// Keys of the Taobao behaviors pv, buy, cart, fav, when the format checks them.
    private let knownBehaviors: [UInt64]?

    static let behaviorNames = ["pv", "buy", "cart", "fav"]

    init(layout: InputLayout, keyMode: KeyMode) {
        self.layout = layout
        self.keyMode = keyMode
        splitter = FieldSplitter(separator: layout.separator, quotes: layout.quotes, capacity: layout.columnCount + 1)
        denseCount = layout.denseNames.count
        categoricalCount = layout.categoricalNames.count
        dense = .allocateZeroed(denseCount)
        keys = .allocateZeroed(categoricalCount)
        missing = layout.missingMarkers.map { Array($0.utf8) }
        knownBehaviors = layout.format == .taobao ? Self.behaviorNames.map { RowParser.key64(Array($0.utf8)) } : nil
    }

    deinit {
        dense.deallocate()
        keys.deallocate()
    }

    /// The 64-bit key of `bytes`, never 0. Values of up to 16 bytes (nearly all categorical
    /// values) are read with two overlapping loads that stay inside the bytes (wyhash's trick),
    /// so (first 8 bytes, last 8 bytes, length) determines the value, and mixed with a
    /// multiplication and SplitMix64's finalizer; longer values use XXH64. A few nanoseconds a
    /// value, where XXH64 took about four times as long.
    @inline(__always)
    static func key64(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        let n = bytes.count
        var h: UInt64
        if n <= 16, let p = bytes.baseAddress {
            var a: UInt64 = 0, b: UInt64 = 0
            if n >= 8 {
                a = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
                b = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self))
            } else if n >= 4 {
                a = UInt64(UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)))
                b = UInt64(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self)))
            } else if n > 0 {
                a = UInt64(p.load(as: UInt8.self)) | UInt64(p.load(fromByteOffset: n / 2, as: UInt8.self)) << 8
                    | UInt64(p.load(fromByteOffset: n - 1, as: UInt8.self)) << 16
            }
            h = SplitMix64.mix((a &* 0x9E37_79B9_7F4A_7C15) ^ SplitMix64.mix(b ^ (UInt64(n) << 56) ^ 0x7265_632D_6469_7374))
        } else {
            h = XXH64.hash(bytes, seed: 0x7265_632D_6469_7374)
        }
        return h == 0 ? 1 : h
    }

    static func key64(_ bytes: [UInt8]) -> UInt64 { bytes.withUnsafeBytes { key64($0) } }

    /// The key of a categorical value's bytes (non-empty).
    @inline(__always)
    func key(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        switch keyMode {
        case .criteoHash: return UInt64(CriteoRows.hashCategorical(bytes))
        case .key64: return RowParser.key64(bytes)
        }
    }

    /// The key of a small non-negative integer's decimal spelling (derived categorical values).
    func key(ofInteger value: Int) -> UInt64 {
        var digits: [UInt8] = []
        var v = value
        repeat {
            digits.append(UInt8(ascii: "0") + UInt8(v % 10))
            v /= 10
        } while v > 0
        return digits.reversed().withUnsafeBytes { key($0) }
    }

    /// Precomputed keys of the hours 0...23 and weekdays 0...6 (Avazu).
    private lazy var smallIntegerKeys: [UInt64] = (0..<24).map { key(ofInteger: $0) }

    /// Whether the line is a header by the layout's rule (the first line of a file).
    func isHeader(_ line: UnsafeRawBufferPointer) -> Bool {
        switch layout.header {
        case .never: return false
        case .always: return true
        case .detect(let first):
            let bytes = Array(first.utf8)
            guard line.count >= bytes.count, Array(line.prefix(bytes.count)) == bytes else { return false }
            return line.count == bytes.count || line[bytes.count] == layout.separator
        }
    }

    /// Parses one line (without its line ending). `truncatedEnd` says the line is the file's last
    /// and has no line ending, which makes a short line look like a cut-off file.
    @inline(__always)
    func parse(_ line: UnsafeRawBufferPointer, truncatedEnd: Bool) -> LineProblem? {
        if line.isEmpty {
            return LineProblem(field: nil, message: "empty line",
                               hint: "remove empty lines; every line must be one row (\(layout.layoutDescription))")
        }
        splitter.split(line)
        if splitter.quoteError {
            return LineProblem(field: splitter.count <= layout.columnCount ? layout.columnNames[max(splitter.count - 1, 0)] : nil,
                               message: "unterminated or misplaced double quote",
                               hint: "a quoted field must start and end with \" (a quote inside is written \"\")")
        }
        if splitter.count != layout.columnCount {
            var hint = layout.layoutDescription
            if truncatedEnd && splitter.count < layout.columnCount {
                hint = "the file ends in the middle of this line (no line ending after it): was it cut off? " + hint
            }
            return LineProblem(field: nil,
                               message: "expected \(layout.columnCount) \(layout.separatorName)-separated fields, found \(splitter.count)",
                               hint: hint)
        }
        if layout.checkUTF8 && splitter.hasHighBytes {
            for k in 0..<layout.columnCount where !TextInput.isValidUTF8(splitter.field(k)) {
                return LineProblem(field: layout.columnNames[k], message: "invalid UTF-8: \(DataError.quote(splitter.field(k)))",
                                   hint: "the input must be UTF-8 text; for latin-1 files use the csv format with \"encoding\": \"latin-1\"")
            }
        }
        timestamp = 0
        for k in 0..<layout.columnCount {
            let action = layout.actions[k]
            let text = splitter.field(k)
            switch action {
            case .skip:
                continue
            case .categorical(let j):
                if text.isEmpty || isMissingMarker(text) {
                    keys[j] = 0
                } else {
                    keys[j] = key(text)
                }
            case .integerDense(let j):
                if text.isEmpty {
                    dense[j] = 0
                } else if let v = TextInput.parseInteger(text) {
                    dense[j] = Float(v)
                } else {
                    return problemInteger(k, text)
                }
            case .dense(let j):
                if text.isEmpty {
                    dense[j] = 0
                } else if let v = TextInput.parseDecimal(text) {
                    dense[j] = Float(v)
                } else if TextInput.isDecimalOutOfFloatRange(text) {
                    return LineProblem(field: layout.columnNames[k],
                                       message: "\(DataError.quote(text)) is out of float32 range (largest magnitude \(Float.greatestFiniteMagnitude))",
                                       hint: "dense values are stored as 32-bit floats; rescale the column, or leave the field empty (read as 0)")
                } else {
                    return LineProblem(field: layout.columnNames[k], message: "expected a number, found \(DataError.quote(text))",
                                       hint: "dense fields hold decimal numbers like 3, -0.5 or 1e-3, or nothing (read as 0)")
                }
            case .label:
                if text.count == 1 && (text[0] == UInt8(ascii: "0") || text[0] == UInt8(ascii: "1")) {
                    label = text[0] == UInt8(ascii: "1") ? 1 : 0
                    rating = Double(label)
                } else if layout.label == .rating, let v = TextInput.parseDecimal(text) {
                    rating = v
                } else if layout.label == .behavior, !text.isEmpty {
                    behaviorKey = RowParser.key64(text)
                } else if layout.format == .csv, layout.label == .binary, let v = TextInput.parseDecimal(text), v == 0 || v == 1 {
                    label = Float(v)
                    rating = v
                } else {
                    return LineProblem(field: layout.columnNames[k],
                                       message: text.isEmpty ? "the label is empty" : "expected 0 or 1, found \(DataError.quote(text))",
                                       hint: layout.label == .binary ? "the label is the click (0 or 1); for ratings use --label \"\(layout.columnNames[k])>=4\", for event names --positive"
                                                                     : "the label column must not be empty")
                }
            case .rating:
                guard let v = TextInput.parseDecimal(text) else {
                    return LineProblem(field: layout.columnNames[k],
                                       message: TextInput.isDecimalOutOfFloatRange(text)
                                           ? "rating \(DataError.quote(text)) is out of float32 range"
                                           : "expected a rating (a number), found \(DataError.quote(text))",
                                       hint: "ratings are numbers like 4 or 3.5")
                }
                rating = v
            case .behavior:
                let key = RowParser.key64(text)
                if let knownBehaviors, !knownBehaviors.contains(key) {
                    return LineProblem(field: layout.columnNames[k],
                                       message: "expected a behavior (pv, buy, cart or fav), found \(DataError.quote(text))",
                                       hint: "Taobao UserBehavior rows are user,item,category,behavior,timestamp")
                }
                behaviorKey = key
            case .timestamp(let scale):
                guard let v = TextInput.parseInteger(text) else {
                    return LineProblem(field: layout.columnNames[k], message: "expected an integer timestamp, found \(DataError.quote(text))",
                                       hint: "timestamps are whole numbers (for example unix seconds)")
                }
                timestamp &+= v &* scale
            case .date(let scale):
                guard let days = Self.parseDate(text) else {
                    return LineProblem(field: layout.columnNames[k], message: "expected a date YYYY-MM-DD, found \(DataError.quote(text))",
                                       hint: nil)
                }
                timestamp &+= Int64(days) &* scale
            case .avazuHour(let weekdayField, let hourField):
                guard let (days, hour) = Self.parseAvazuHour(text) else {
                    return LineProblem(field: layout.columnNames[k], message: "expected YYMMDDHH, found \(DataError.quote(text))",
                                       hint: "Avazu's hour column is year, month, day and hour, two digits each (14102100)")
                }
                keys[weekdayField] = smallIntegerKeys[Self.weekday(days: days)]
                keys[hourField] = smallIntegerKeys[hour]
                timestamp = Int64(days) * 24 + Int64(hour)
            }
        }
        return nil
    }

    @inline(__always)
    private func isMissingMarker(_ text: UnsafeRawBufferPointer) -> Bool {
        if missing.isEmpty { return false }
        for marker in missing where marker.count == text.count && marker.elementsEqual(text) { return true }
        return false
    }

    private func problemInteger(_ k: Int, _ text: UnsafeRawBufferPointer) -> LineProblem {
        let digitsOnly = text.allSatisfy { ($0 &- UInt8(ascii: "0")) <= 9 || $0 == UInt8(ascii: "-") }
        if digitsOnly && text.count > 18 {
            return LineProblem(field: layout.columnNames[k], message: "integer \(DataError.quote(text)) is too large",
                               hint: "integer fields must fit in 18 digits")
        }
        return LineProblem(field: layout.columnNames[k], message: "expected an integer, found \(DataError.quote(text))",
                           hint: "integer fields hold an optional '-' and decimal digits, or nothing")
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// 0 = Monday ... 6 = Sunday (1970-01-01 was a Thursday).
    static func weekday(days: Int) -> Int { ((days % 7) + 7 + 3) % 7 }

    static func digits(_ text: UnsafeRawBufferPointer, _ range: Range<Int>) -> Int? {
        var v = 0
        for k in range {
            let d = text[k] &- UInt8(ascii: "0")
            guard d <= 9 else { return nil }
            v = v * 10 + Int(d)
        }
        return v
    }

    static func validDate(_ year: Int, _ month: Int, _ day: Int) -> Bool {
        guard (1...12).contains(month), day >= 1 else { return false }
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
        let lengths = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        return day <= lengths[month - 1]
    }

    /// YYMMDDHH (20YY) -> (days since 1970-01-01, hour).
    static func parseAvazuHour(_ text: UnsafeRawBufferPointer) -> (Int, Int)? {
        guard text.count == 8, let yy = digits(text, 0..<2), let mm = digits(text, 2..<4), let dd = digits(text, 4..<6),
              let hh = digits(text, 6..<8), hh < 24, validDate(2000 + yy, mm, dd) else { return nil }
        return (daysFromCivil(year: 2000 + yy, month: mm, day: dd), hh)
    }

    /// YYYY-MM-DD -> days since 1970-01-01.
    static func parseDate(_ text: UnsafeRawBufferPointer) -> Int? {
        guard text.count == 10, text[4] == UInt8(ascii: "-"), text[7] == UInt8(ascii: "-"),
              let y = digits(text, 0..<4), let m = digits(text, 5..<7), let d = digits(text, 8..<10),
              validDate(y, m, d) else { return nil }
        return daysFromCivil(year: y, month: m, day: d)
    }
}
