#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A problem with a data file: it cannot be opened, read or written, or its contents do not
/// follow the expected format.
///
/// The description names the file, the 1-based line and the field when they are known, then
/// says what is wrong and, when there is one, what to do about it:
///
/// ```
/// data/x.tsv:17: field I3: expected an integer, found "1x2" (hint: integer fields hold an optional '-' and digits, or nothing)
/// ```
public struct DataError: Error, CustomStringConvertible, Equatable {
    /// The path of the file the problem is in.
    public var file: String
    /// The 1-based line number, when the problem is on one line.
    public var line: Int?
    /// The field name (for example `"I3"` or `"label"`), when the problem is in one field.
    public var field: String?
    /// What is wrong.
    public var message: String
    /// What the user can do about it, if there is something to say.
    public var hint: String?

    /// Creates an error; see the properties for the meaning of each part.
    public init(file: String, line: Int? = nil, field: String? = nil, message: String, hint: String? = nil) {
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        self.hint = hint
    }

    public var description: String {
        var text = file
        if let line { text += ":\(line)" }
        text += ": "
        if let field { text += "field \(field): " }
        text += message
        if let hint { text += " (hint: \(hint))" }
        return text
    }
}

extension DataError {
    /// The text of the C library's message for `errno` value `code`.
    static func systemMessage(_ code: Int32) -> String {
        String(cString: strerror(code))
    }

    /// Quotes up to 40 bytes of `bytes` for an error message, escaping what is not printable ASCII.
    static func quote(_ bytes: UnsafeRawBufferPointer) -> String {
        var text = "\""
        for (index, byte) in bytes.enumerated() {
            if index == 40 {
                text += "..."
                break
            }
            switch byte {
            case UInt8(ascii: "\""): text += "\\\""
            case UInt8(ascii: "\\"): text += "\\\\"
            case UInt8(ascii: "\t"): text += "\\t"
            case UInt8(ascii: "\r"): text += "\\r"
            case 0x20..<0x7F: text.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let digits = Array("0123456789abcdef".unicodeScalars)
                text += "\\x"
                text.unicodeScalars.append(digits[Int(byte >> 4)])
                text.unicodeScalars.append(digits[Int(byte & 0xF)])
            }
        }
        return text + "\""
    }
}
