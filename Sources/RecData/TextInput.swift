#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A run of whole lines of one input file, the unit of parallel parsing: it starts at the start
/// of a line and ends just after a `\n` (or at the end of the file).
struct TextChunk: Sendable {
    /// Index of the file in the prepare's input list.
    var fileIndex: Int
    /// Byte range in the file.
    var bytes: Range<Int>
    /// 1-based line number of the chunk's first line in its file.
    var firstLine: Int
    /// Lines in the chunk (a last line without `\n` counts).
    var lineCount: Int
    /// Whether the chunk's last line is the file's last line and has no `\n`.
    var endsWithoutNewline: Bool
}

extension MappedFile {
    /// The file's contents as text: without a leading UTF-8 byte-order mark (EF BB BF), which
    /// some editors and exporters write at the start of a file. Line 1 starts after it.
    public var text: UnsafeRawBufferPointer {
        let mark: [UInt8] = [0xEF, 0xBB, 0xBF]
        guard bytes.count >= 3, bytes[0] == mark[0], bytes[1] == mark[1], bytes[2] == mark[2] else { return bytes }
        return UnsafeRawBufferPointer(rebasing: bytes[3...])
    }
}

enum TextInput {
    /// Cuts `file`'s text (after any byte-order mark) into chunks of about `targetBytes`, each
    /// ending after a `\n`, and counts their lines (in parallel over `threads`).
    static func chunks(of file: MappedFile, fileIndex: Int, targetBytes: Int, threads: Int) -> [TextChunk] {
        let bytes = file.bytes
        guard let base = bytes.baseAddress, !file.text.isEmpty else { return [] }
        var bounds: [Range<Int>] = []
        var start = bytes.count - file.text.count
        while start < bytes.count {
            var end = min(start + targetBytes, bytes.count)
            if end < bytes.count {
                if let newline = memchr(base + end - 1, 0x0A, bytes.count - end + 1) {
                    end = UnsafeRawPointer(newline) - base + 1
                } else {
                    end = bytes.count
                }
            }
            bounds.append(start..<end)
            start = end
        }
        var counts = [Int](repeating: 0, count: bounds.count)
        counts.withUnsafeMutableBufferPointer { out in
            let out = UncheckedSendable(out)
            let input = UncheckedSendable(bytes)
            let bounds = bounds
            let mapped = UncheckedSendable(file)
            parallelFor(bounds.count, threads: threads) { i in
                out.value[i] = CriteoTSV.countLines(UnsafeRawBufferPointer(rebasing: input.value[bounds[i]]))
                mapped.value.releasePages(bounds[i])
            }
        }
        var chunks: [TextChunk] = []
        var line = 1
        let lastByte = bytes[bytes.count - 1]
        for (i, range) in bounds.enumerated() {
            chunks.append(TextChunk(fileIndex: fileIndex, bytes: range, firstLine: line, lineCount: counts[i],
                                    endsWithoutNewline: i == bounds.count - 1 && lastByte != 0x0A))
            line += counts[i]
        }
        return chunks
    }

    /// Calls `body(lineNumber, content, isLast)` for each line of `chunk`, content without its
    /// `\n` or `\r\n`. Stops early when `body` returns false.
    @inline(__always)
    static func forEachLine(in chunk: TextChunk, of file: MappedFile,
                            _ body: (Int, UnsafeRawBufferPointer) -> Bool) {
        let base = file.bytes.baseAddress! + chunk.bytes.lowerBound
        let end = file.bytes.baseAddress! + chunk.bytes.upperBound
        var cursor = base
        var line = chunk.firstLine
        while cursor < end {
            let lineEnd = memchr(cursor, 0x0A, end - cursor).map { UnsafeRawPointer($0) } ?? end
            var contentEnd = lineEnd
            if contentEnd > cursor && contentEnd.load(fromByteOffset: -1, as: UInt8.self) == 0x0D { contentEnd -= 1 }
            if !body(line, UnsafeRawBufferPointer(start: cursor, count: contentEnd - cursor)) { return }
            line += 1
            cursor = lineEnd + 1
        }
    }

    /// Whether `bytes` is valid UTF-8 (ASCII is checked eight bytes at a time first).
    static func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        let n = bytes.count
        var i = 0
        while i + 8 <= n {
            if base.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { break }
            i += 8
        }
        while i < n {
            let b0 = base.load(fromByteOffset: i, as: UInt8.self)
            if b0 < 0x80 { i += 1; continue }
            let length: Int
            let minimum: UInt32
            var scalar: UInt32
            switch b0 {
            case 0xC2...0xDF: length = 2; scalar = UInt32(b0 & 0x1F); minimum = 0x80
            case 0xE0...0xEF: length = 3; scalar = UInt32(b0 & 0x0F); minimum = 0x800
            case 0xF0...0xF4: length = 4; scalar = UInt32(b0 & 0x07); minimum = 0x10000
            default: return false
            }
            guard i + length <= n else { return false }
            for k in 1..<length {
                let b = base.load(fromByteOffset: i + k, as: UInt8.self)
                guard b & 0xC0 == 0x80 else { return false }
                scalar = scalar << 6 | UInt32(b & 0x3F)
            }
            if scalar < minimum || scalar > 0x10FFFF || (0xD800...0xDFFF).contains(scalar) { return false }
            i += length
        }
        return true
    }

    /// Parses an optional `-` and 1 to 18 decimal digits.
    @inline(__always)
    static func parseInteger(_ text: UnsafeRawBufferPointer) -> Int64? {
        guard let base = text.baseAddress, !text.isEmpty else { return nil }
        var k = 0
        let negative = base.load(as: UInt8.self) == UInt8(ascii: "-")
        if negative { k = 1 }
        let digits = text.count - k
        guard digits >= 1 && digits <= 18 else { return nil }
        var value: Int64 = 0
        while k < text.count {
            let d = base.load(fromByteOffset: k, as: UInt8.self) &- UInt8(ascii: "0")
            guard d <= 9 else { return nil }
            value = value &* 10 &+ Int64(d)
            k += 1
        }
        return negative ? -value : value
    }

    /// Powers of ten that are exact in a Double.
    static let exactPowers: [Double] = (0...22).map { pow(10, Double($0)) }

    /// Parses a decimal number: optional sign, digits with an optional `.`, optional exponent
    /// (`1`, `-2.5`, `260.0`, `.5`, `1e-3`). Returns nil for anything else, including `nan` and
    /// `inf` and values that overflow a Float. Up to 15 significant digits and exponents within
    /// ±22 are converted exactly (the Double is correctly rounded); longer forms go through strtod.
    static func parseDecimal(_ text: UnsafeRawBufferPointer) -> Double? {
        guard let base = text.baseAddress, !text.isEmpty, text.count < 64 else { return nil }
        let n = text.count
        var k = 0
        var negative = false
        let first = base.load(as: UInt8.self)
        if first == UInt8(ascii: "-") || first == UInt8(ascii: "+") {
            negative = first == UInt8(ascii: "-")
            k = 1
        }
        var mantissa: UInt64 = 0
        var significant = 0, digits = 0, scale = 0
        var seenPoint = false
        while k < n {
            let b = base.load(fromByteOffset: k, as: UInt8.self)
            if b == UInt8(ascii: ".") {
                if seenPoint { return nil }
                seenPoint = true
            } else if b &- UInt8(ascii: "0") <= 9 {
                digits += 1
                if mantissa != 0 || b != UInt8(ascii: "0") { significant += 1 }
                if significant <= 18 {
                    mantissa = mantissa &* 10 &+ UInt64(b &- UInt8(ascii: "0"))
                    if seenPoint { scale -= 1 }
                } else if !seenPoint {
                    scale += 1
                }
            } else {
                break
            }
            k += 1
        }
        guard digits > 0 else { return nil }
        if k < n {
            let b = base.load(fromByteOffset: k, as: UInt8.self)
            guard b == UInt8(ascii: "e") || b == UInt8(ascii: "E") else { return nil }
            k += 1
            var exponentNegative = false
            if k < n {
                let s = base.load(fromByteOffset: k, as: UInt8.self)
                if s == UInt8(ascii: "-") || s == UInt8(ascii: "+") {
                    exponentNegative = s == UInt8(ascii: "-")
                    k += 1
                }
            }
            var exponent = 0, exponentDigits = 0
            while k < n {
                let d = base.load(fromByteOffset: k, as: UInt8.self) &- UInt8(ascii: "0")
                guard d <= 9 else { return nil }
                if exponent < 10_000 { exponent = exponent * 10 + Int(d) }
                exponentDigits += 1
                k += 1
            }
            guard exponentDigits > 0 else { return nil }
            scale += exponentNegative ? -exponent : exponent
        }
        var value: Double
        if significant <= 15 && abs(scale) <= 22 {
            value = Double(mantissa)
            value = scale >= 0 ? value * exactPowers[scale] : value / exactPowers[-scale]
            if negative { value = -value }
        } else {
            var buffer = [CChar](repeating: 0, count: n + 1)
            for i in 0..<n { buffer[i] = CChar(bitPattern: base.load(fromByteOffset: i, as: UInt8.self)) }
            value = strtod(buffer, nil)
        }
        guard value.isFinite, abs(value) <= Double(Float.greatestFiniteMagnitude) else { return nil }
        return value
    }

    /// Whether `text`, which `parseDecimal` refused, is a well-formed decimal number whose value
    /// is beyond the float32 range (`1e39`, `-4e38`, `1e400`): for the error message only.
    static func isDecimalOutOfFloatRange(_ text: UnsafeRawBufferPointer) -> Bool {
        guard !text.isEmpty, text.count < 64 else { return false }
        // Only signs, digits, '.', and 'e'/'E': strtod would also accept "inf", "nan" and hex.
        let allowed = text.allSatisfy {
            $0 &- UInt8(ascii: "0") <= 9 || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E")
                || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "+")
        }
        guard allowed else { return false }
        var buffer = [CChar](repeating: 0, count: text.count + 1)
        for i in 0..<text.count { buffer[i] = CChar(bitPattern: text[i]) }
        return buffer.withUnsafeBufferPointer { c -> Bool in
            var end: UnsafeMutablePointer<CChar>?
            let value = strtod(c.baseAddress!, &end)
            guard let end, end - UnsafeMutablePointer(mutating: c.baseAddress!) == text.count else { return false }
            return !value.isFinite || abs(value) > Double(Float.greatestFiniteMagnitude)
        }
    }
}

/// Splits a line into fields at a one-byte separator, eight bytes at a time, with optional
/// RFC 4180 double quotes (a field that starts with `"` runs to the matching `"`; `""` inside is
/// one quote). Owns scratch space for up to `capacity` fields, so splitting never allocates.
final class FieldSplitter {
    let separator: UInt8
    let quotes: Bool
    let capacity: Int
    /// Field k is `bytes(k)`: `starts[k]..<ends[k]` in `base` (the line, or the unquoting scratch).
    private let starts: UnsafeMutablePointer<Int>
    private let ends: UnsafeMutablePointer<Int>
    private let inScratch: UnsafeMutablePointer<Bool>
    private let scratch: UnsafeMutablePointer<UInt8>
    private let scratchCapacity: Int
    private var line = UnsafeRawBufferPointer(start: nil, count: 0)
    /// Number of fields of the last line split (may exceed `capacity`; only the first `capacity` are kept).
    private(set) var count = 0
    /// Set when the last line had an unterminated quote or text after a closing quote.
    private(set) var quoteError = false
    /// Whether the last line had a byte with the high bit set (then its UTF-8 must be checked).
    private(set) var hasHighBytes = false

    init(separator: UInt8, quotes: Bool, capacity: Int) {
        self.separator = separator
        self.quotes = quotes
        self.capacity = capacity
        starts = .allocate(capacity: capacity + 1)
        ends = .allocate(capacity: capacity + 1)
        inScratch = .allocate(capacity: capacity + 1)
        scratchCapacity = 1 << 20
        scratch = .allocate(capacity: scratchCapacity)
    }

    deinit {
        starts.deallocate()
        ends.deallocate()
        inScratch.deallocate()
        scratch.deallocate()
    }

    /// The bytes of field `k` (k < min(count, capacity)).
    @inline(__always)
    func field(_ k: Int) -> UnsafeRawBufferPointer {
        if inScratch[k] {
            return UnsafeRawBufferPointer(start: UnsafeRawPointer(scratch) + starts[k], count: ends[k] - starts[k])
        }
        return UnsafeRawBufferPointer(start: line.baseAddress! + starts[k], count: ends[k] - starts[k])
    }

    /// Splits `line`; afterwards `count` is the number of fields.
    @inline(__always)
    func split(_ line: UnsafeRawBufferPointer) {
        self.line = line
        quoteError = false
        guard let base = line.baseAddress, !line.isEmpty else {
            count = 1
            starts[0] = 0
            ends[0] = 0
            inScratch[0] = true
            hasHighBytes = false
            return
        }
        let n = line.count
        let pattern = UInt64(separator) &* 0x0101_0101_0101_0101
        var fields = 0
        var fieldStart = 0
        var high: UInt64 = 0
        var i = 0
        var sawQuote = false
        while i + 8 <= n {
            let word = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            high |= word
            if quotes && LineParser.zeroBytes(word ^ 0x2222_2222_2222_2222) != 0 { sawQuote = true; break }
            var marks = LineParser.zeroBytes(word ^ pattern)
            while marks != 0 {
                let at = i + marks.trailingZeroBitCount >> 3
                if fields < capacity { starts[fields] = fieldStart; ends[fields] = at; inScratch[fields] = false }
                fields += 1
                fieldStart = at + 1
                marks &= marks &- 1
            }
            i += 8
        }
        if !sawQuote {
            while i < n {
                let b = base.load(fromByteOffset: i, as: UInt8.self)
                high |= UInt64(b)
                if quotes && b == UInt8(ascii: "\"") { sawQuote = true; break }
                if b == separator {
                    if fields < capacity { starts[fields] = fieldStart; ends[fields] = i; inScratch[fields] = false }
                    fields += 1
                    fieldStart = i + 1
                }
                i += 1
            }
        }
        if sawQuote {
            splitQuoted(base, n)
            return
        }
        if fields < capacity { starts[fields] = fieldStart; ends[fields] = n; inScratch[fields] = false }
        count = fields + 1
        hasHighBytes = high & 0x8080_8080_8080_8080 != 0
    }

    /// The byte-at-a-time path for lines with quotes.
    private func splitQuoted(_ base: UnsafeRawPointer, _ n: Int) {
        if n > scratchCapacity { quoteError = true; count = 0; return }
        var fields = 0
        var i = 0
        var used = 0
        var high = false
        while true {
            // One field from i.
            if i < n && base.load(fromByteOffset: i, as: UInt8.self) == UInt8(ascii: "\"") {
                i += 1
                let start = used
                var closed = false
                while i < n {
                    let b = base.load(fromByteOffset: i, as: UInt8.self)
                    if b >= 0x80 { high = true }
                    if b == UInt8(ascii: "\"") {
                        if i + 1 < n && base.load(fromByteOffset: i + 1, as: UInt8.self) == UInt8(ascii: "\"") {
                            scratch[used] = b; used += 1; i += 2
                            continue
                        }
                        closed = true
                        i += 1
                        break
                    }
                    scratch[used] = b; used += 1; i += 1
                }
                if !closed || (i < n && base.load(fromByteOffset: i, as: UInt8.self) != separator) {
                    quoteError = true
                    count = fields + 1
                    return
                }
                if fields < capacity { starts[fields] = start; ends[fields] = used; inScratch[fields] = true }
            } else {
                let start = i
                while i < n {
                    let b = base.load(fromByteOffset: i, as: UInt8.self)
                    if b == separator { break }
                    if b >= 0x80 { high = true }
                    if b == UInt8(ascii: "\"") { quoteError = true; count = fields + 1; return }
                    i += 1
                }
                if fields < capacity { starts[fields] = start; ends[fields] = i; inScratch[fields] = false }
            }
            fields += 1
            if i >= n { break }
            i += 1   // the separator
            if i == n {   // a trailing separator: one more, empty field
                if fields < capacity { starts[fields] = n; ends[fields] = n; inScratch[fields] = false }
                fields += 1
                break
            }
        }
        count = fields
        hasHighBytes = high
    }
}

/// Runs `body(i)` for i in 0..<count on up to `threads` threads (the calling thread included)
/// and returns when all are done.
func parallelFor(_ count: Int, threads: Int, _ body: @Sendable (Int) -> Void) {
    if count == 0 { return }
    if threads <= 1 || count == 1 {
        for i in 0..<count { body(i) }
        return
    }
    withoutActuallyEscaping(body) { body in
        let next = AtomicCounter()
        let worker: @Sendable () -> Void = {
            while true {
                let i = next.increment()
                if i >= count { return }
                body(i)
            }
        }
        let helpers = min(threads, count) - 1
        var handles: [pthread_t] = []
        for _ in 0..<helpers {
            let box = Unmanaged.passRetained(ThreadBody(worker))
            var handle = pthread_t()
            let ok = pthread_create(&handle, nil, { raw in
                let box = Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue()
                box.body()
                return nil
            }, box.toOpaque())
            if ok == 0 { handles.append(handle) } else { box.release() }
        }
        worker()
        for handle in handles { pthread_join(handle, nil) }
    }
}

/// A closure handed to a new thread.
final class ThreadBody: @unchecked Sendable {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// A counter shared between threads (a mutex; contention is one increment per work item).
final class AtomicCounter: @unchecked Sendable {
    private var value = 0
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    /// Returns the current value and adds one.
    func increment() -> Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        let v = value
        value += 1
        return v
    }
}

/// Wraps a value that the code guarantees is used safely across threads (disjoint indices of a
/// buffer, read-only sharing).
struct UncheckedSendable<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}
