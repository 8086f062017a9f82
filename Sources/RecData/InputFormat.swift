import Foundation

/// The raw formats `rec-dist prepare` reads.
public enum InputFormatKind: String, CaseIterable, Codable, Sendable {
    /// Criteo click logs: TAB, no header; label, I1-I13 (integers), C1-C26.
    case criteo
    /// Avazu CTR: CSV with a header in (at least) the first file; id (not a feature), click,
    /// hour (YYMMDDHH: becomes the categorical features weekday and hour), 21 categorical fields.
    case avazu
    /// MovieLens 100K `u.data` (or `u1.base`...): TAB; user, item, rating, timestamp. `u.user`
    /// (age, gender, occupation, zip) and `u.item` (release year, 19 genre flags; latin-1) from
    /// the same folder are joined in when present.
    case movielens100k = "movielens-100k"
    /// MovieLens `ratings.csv` (ml-latest-small, ml-25m...): CSV with header, CRLF allowed;
    /// userId, movieId, rating, timestamp.
    case movielens
    /// Taobao UserBehavior: CSV, no header; user, item, category, behavior (pv, buy, cart, fav),
    /// timestamp.
    case taobao
    /// Amazon-style interaction lists (SASRec's files): `user item` per line, each user's lines in
    /// time order (the line order stands for the timestamp); implicit feedback.
    case amazon
    /// DIGINETICA item views: `;`-separated with header; session_id, user_id (NA when anonymous),
    /// item_id, timeframe (ms), eventdate (YYYY-MM-DD); the session plays the user; implicit.
    case diginetica
    /// Any CSV/TSV described by a schema file (`--schema FILE`, see `GenericSchema`).
    case csv

    /// Formats whose rows are user-item interactions, prepared in memory (labels from ratings or
    /// behaviors, sampled negatives, per-user splits).
    public var isInteraction: Bool {
        switch self {
        case .criteo, .avazu, .csv: return false
        case .movielens100k, .movielens, .taobao, .amazon, .diginetica: return true
        }
    }

    /// Formats with no negative rows of their own: every row is a positive and negatives must be sampled.
    public var isImplicitOnly: Bool { self == .amazon || self == .diginetica }
}

/// What a prepared field means for the negative sampler: item-side fields of a sampled negative
/// come from the sampled item, everything else is copied from the positive row.
public enum FieldRole: String, Codable, Sendable {
    case user, item
    case userFeature = "user-feature"
    case itemFeature = "item-feature"
    case context

    var isItemSide: Bool { self == .item || self == .itemFeature }
}

/// Where a row's label comes from.
enum LabelSource: Sendable, Equatable {
    /// A 0/1 column.
    case binary
    /// A number (a rating), turned into 0/1 by `--label "rating>=4"`.
    case rating
    /// A string (a behavior), 1 when in `--positive`.
    case behavior
    /// None: every row is a positive (implicit feedback).
    case implicit
}

/// What one column of an input line becomes.
enum ColumnAction: Sendable, Equatable {
    case skip
    case label
    case rating
    case behavior
    /// Dense output `k`, any decimal number (empty: 0).
    case dense(Int)
    /// Dense output `k`, an integer (Criteo's I1-I13; empty: 0).
    case integerDense(Int)
    /// Categorical output `k` (empty or a missing marker: missing).
    case categorical(Int)
    /// Adds `value * scale` to the row's timestamp (an integer column).
    case timestamp(scale: Int64)
    /// Adds `days since 1970-01-01 * scale` to the timestamp (a `YYYY-MM-DD` column).
    case date(scale: Int64)
    /// Avazu's `hour`, YYMMDDHH: categorical outputs `weekday` and `hour`, and the timestamp (hours).
    case avazuHour(weekday: Int, hour: Int)
}

/// A resolved input layout: how each column of a line is read, and the fields it produces.
public struct InputLayout: Sendable {
    var format: InputFormatKind
    var separator: UInt8
    var quotes: Bool
    /// Columns per line.
    var columnCount: Int
    /// Column names, for messages (`"I3"`, `"click"`).
    var columnNames: [String]
    var actions: [ColumnAction]
    /// Whether the first line of an input file is a header: `.always`, `.never`, or detected by
    /// its first field being `headerFirstField`.
    var header: HeaderRule
    /// UTF-8 is checked unless the input is latin-1 (any bytes).
    var checkUTF8: Bool
    /// Values that mean "missing" in categorical columns, besides the empty field.
    var missingMarkers: [String]
    var label: LabelSource
    var hasTimestamp: Bool

    public var denseNames: [String]
    public var denseRoles: [FieldRole]
    public var categoricalNames: [String]
    public var categoricalRoles: [FieldRole]
    /// Index of the user / item field among the categorical fields.
    public var userField: Int?
    public var itemField: Int?

    enum HeaderRule: Sendable, Equatable {
        case never, always
        case detect(firstField: String)
    }

    /// The separator's name in messages.
    var separatorName: String {
        switch separator {
        case 0x09: return "tab"
        case UInt8(ascii: ","): return "comma"
        case UInt8(ascii: ";"): return "semicolon"
        case UInt8(ascii: " "): return "space"
        case UInt8(ascii: "|"): return "pipe"
        default: return "'\(Character(Unicode.Scalar(separator)))'"
        }
    }

    /// A description of a line's layout for hints.
    var layoutDescription: String {
        let names = columnNames.count <= 8 ? columnNames.joined(separator: ", ")
            : columnNames.prefix(3).joined(separator: ", ") + ", ..., " + columnNames.suffix(2).joined(separator: ", ")
        return "a \(format.rawValue) line is \(columnCount) \(separatorName)-separated fields: \(names)"
    }
}

extension InputLayout {
    /// The layout of a built-in format; `.csv` needs `schema` (and the first input's first line when the schema says `header`).
    static func builtIn(_ format: InputFormatKind) -> InputLayout {
        switch format {
        case .criteo:
            let names = (0..<CriteoFormat.fieldCount).map(CriteoFormat.fieldName)
            let actions: [ColumnAction] = [.label] + (0..<13).map { .integerDense($0) } + (0..<26).map { .categorical($0) }
            return InputLayout(format: format, separator: 0x09, quotes: false, columnCount: 40, columnNames: names,
                               actions: actions, header: .never, checkUTF8: true, missingMarkers: [], label: .binary,
                               hasTimestamp: false, denseNames: Array(names[1...13]), denseRoles: Array(repeating: .context, count: 13),
                               categoricalNames: Array(names[14...]), categoricalRoles: Array(repeating: .context, count: 26),
                               userField: nil, itemField: nil)
        case .avazu:
            let names = ["id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
                         "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
                         "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]
            var actions: [ColumnAction] = [.skip, .label, .avazuHour(weekday: 0, hour: 1)]
            actions += (0..<21).map { .categorical(2 + $0) }
            return InputLayout(format: format, separator: UInt8(ascii: ","), quotes: false, columnCount: 24, columnNames: names,
                               actions: actions, header: .detect(firstField: "id"), checkUTF8: true, missingMarkers: [],
                               label: .binary, hasTimestamp: true, denseNames: [], denseRoles: [],
                               categoricalNames: ["weekday", "hour"] + Array(names[3...]),
                               categoricalRoles: Array(repeating: .context, count: 23), userField: nil, itemField: nil)
        case .movielens100k:
            return InputLayout(format: format, separator: 0x09, quotes: false, columnCount: 4,
                               columnNames: ["user_id", "item_id", "rating", "timestamp"],
                               actions: [.categorical(0), .categorical(1), .rating, .timestamp(scale: 1)],
                               header: .never, checkUTF8: true, missingMarkers: [], label: .rating, hasTimestamp: true,
                               denseNames: [], denseRoles: [], categoricalNames: ["user", "item"],
                               categoricalRoles: [.user, .item], userField: 0, itemField: 1)
        case .movielens:
            return InputLayout(format: format, separator: UInt8(ascii: ","), quotes: true, columnCount: 4,
                               columnNames: ["userId", "movieId", "rating", "timestamp"],
                               actions: [.categorical(0), .categorical(1), .rating, .timestamp(scale: 1)],
                               header: .detect(firstField: "userId"), checkUTF8: true, missingMarkers: [], label: .rating,
                               hasTimestamp: true, denseNames: [], denseRoles: [], categoricalNames: ["user", "item"],
                               categoricalRoles: [.user, .item], userField: 0, itemField: 1)
        case .taobao:
            return InputLayout(format: format, separator: UInt8(ascii: ","), quotes: false, columnCount: 5,
                               columnNames: ["user_id", "item_id", "category_id", "behavior_type", "timestamp"],
                               actions: [.categorical(0), .categorical(1), .categorical(2), .behavior, .timestamp(scale: 1)],
                               header: .never, checkUTF8: true, missingMarkers: [], label: .behavior, hasTimestamp: true,
                               denseNames: [], denseRoles: [], categoricalNames: ["user", "item", "category"],
                               categoricalRoles: [.user, .item, .itemFeature], userField: 0, itemField: 1)
        case .amazon:
            return InputLayout(format: format, separator: UInt8(ascii: " "), quotes: false, columnCount: 2,
                               columnNames: ["user_id", "item_id"], actions: [.categorical(0), .categorical(1)],
                               header: .never, checkUTF8: true, missingMarkers: [], label: .implicit, hasTimestamp: false,
                               denseNames: [], denseRoles: [], categoricalNames: ["user", "item"],
                               categoricalRoles: [.user, .item], userField: 0, itemField: 1)
        case .diginetica:
            return InputLayout(format: format, separator: UInt8(ascii: ";"), quotes: false, columnCount: 5,
                               columnNames: ["session_id", "user_id", "item_id", "timeframe", "eventdate"],
                               actions: [.categorical(0), .categorical(1), .categorical(2), .timestamp(scale: 1), .date(scale: 86_400_000)],
                               header: .detect(firstField: "session_id"), checkUTF8: true, missingMarkers: ["NA"],
                               label: .implicit, hasTimestamp: true, denseNames: [], denseRoles: [],
                               categoricalNames: ["session", "user_id", "item"],
                               categoricalRoles: [.user, .userFeature, .item], userField: 0, itemField: 2)
        case .csv:
            preconditionFailure("the csv format's layout comes from its schema file")
        }
    }
}

/// The schema file of the generic `csv` format (JSON). Columns are named by the header (when
/// `header` is true) or by `columns`; columns no role names are skipped.
///
/// ```json
/// {
///   "separator": ",",                 // one character, or "tab"
///   "header": true,                   // the first line of each input file names the columns
///   "columns": ["user", "item", ...], // the names, when there is no header
///   "label": "click",                 // 0/1; or a rating (with --label "click>=4"); or a behavior (with --positive)
///   "dense": ["price"],
///   "categorical": ["category", "city"],
///   "user": "user", "item": "item",   // user and item ids (categorical fields of their own)
///   "user_features": ["city"], "item_features": ["category", "price"],
///   "timestamp": "ts",                // integer
///   "missing": ["NA"],                // categorical values that mean missing, besides ""
///   "encoding": "utf-8"               // or "latin-1" (any bytes accepted)
/// }
/// ```
public struct GenericSchema: Codable, Sendable, Equatable {
    public var separator: String = ","
    public var header: Bool = true
    public var columns: [String]?
    public var label: String?
    public var dense: [String]?
    public var categorical: [String]?
    public var user: String?
    public var item: String?
    public var userFeatures: [String]?
    public var itemFeatures: [String]?
    public var timestamp: String?
    public var missing: [String]?
    public var encoding: String?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case separator, header, columns, label, dense, categorical, user, item
        case userFeatures = "user_features", itemFeatures = "item_features"
        case timestamp, missing, encoding
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        separator = try c.decodeIfPresent(String.self, forKey: .separator) ?? ","
        header = try c.decodeIfPresent(Bool.self, forKey: .header) ?? true
        columns = try c.decodeIfPresent([String].self, forKey: .columns)
        label = try c.decodeIfPresent(String.self, forKey: .label)
        dense = try c.decodeIfPresent([String].self, forKey: .dense)
        categorical = try c.decodeIfPresent([String].self, forKey: .categorical)
        user = try c.decodeIfPresent(String.self, forKey: .user)
        item = try c.decodeIfPresent(String.self, forKey: .item)
        userFeatures = try c.decodeIfPresent([String].self, forKey: .userFeatures)
        itemFeatures = try c.decodeIfPresent([String].self, forKey: .itemFeatures)
        timestamp = try c.decodeIfPresent(String.self, forKey: .timestamp)
        missing = try c.decodeIfPresent([String].self, forKey: .missing)
        encoding = try c.decodeIfPresent(String.self, forKey: .encoding)
    }

    /// Reads and checks a schema file.
    public static func load(path: String) throws(DataError) -> GenericSchema {
        let hint = "the schema is a JSON object; see `rec-dist prepare --help` or the README's \"generic CSV\" section"
        let data: Data
        do { data = Data(try MappedFile.contents(of: path)) } catch {
            throw DataError(file: path, message: "cannot read the schema file: \(error.message)", hint: "check the --schema path")
        }
        do {
            return try JSONDecoder().decode(GenericSchema.self, from: data)
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw DataError(file: path, field: context.codingPath.map(\.stringValue).joined(separator: "."),
                            message: context.debugDescription, hint: hint)
        } catch let DecodingError.dataCorrupted(context) {
            throw DataError(file: path, message: "not valid JSON: \(context.debugDescription) \(context.underlyingError.map { "\($0)" } ?? "")", hint: hint)
        } catch {
            throw DataError(file: path, message: "cannot parse: \(error)", hint: hint)
        }
    }

    /// The layout for these rules, with `headerLine` (the first line of the first input) naming the
    /// columns when `header` is true.
    func layout(schemaPath: String, headerLine: String?) throws(DataError) -> InputLayout {
        func fail(_ message: String, _ hint: String? = nil) -> DataError {
            DataError(file: schemaPath, message: message, hint: hint)
        }
        let sep: UInt8
        switch separator {
        case "tab", "\t": sep = 0x09
        case let s where s.utf8.count == 1 && s != "\"" && s != "\n" && s != "\r": sep = s.utf8.first!
        default: throw fail("separator \"\(separator)\" must be one character (or \"tab\")")
        }
        var names: [String]
        if header {
            guard let headerLine else { throw fail("\"header\" is true but the first input has no lines") }
            names = headerLine.split(separator: Character(Unicode.Scalar(sep)), omittingEmptySubsequences: false).map {
                var s = String($0)
                if s.hasPrefix("\""), s.hasSuffix("\""), s.count >= 2 { s = String(s.dropFirst().dropLast()) }
                return s
            }
        } else {
            guard let columns, !columns.isEmpty else { throw fail("with \"header\": false, \"columns\" must name the columns in order") }
            names = columns
        }
        guard Set(names).count == names.count else { throw fail("column names repeat: \(names)") }
        func column(_ name: String, _ role: String) throws(DataError) -> Int {
            guard let k = names.firstIndex(of: name) else {
                throw fail("\(role) column \"\(name)\" is not among the columns \(names)", header ? "the names come from the first input's header line" : nil)
            }
            return k
        }
        var actions = [ColumnAction](repeating: .skip, count: names.count)
        var used = Set<Int>()
        func claim(_ k: Int, _ action: ColumnAction) throws(DataError) {
            guard used.insert(k).inserted else { throw fail("column \"\(names[k])\" has two roles") }
            actions[k] = action
        }
        var categoricalNames: [String] = [], categoricalRoles: [FieldRole] = []
        var denseNames: [String] = [], denseRoles: [FieldRole] = []
        let userFeatures = Set(self.userFeatures ?? []), itemFeatures = Set(self.itemFeatures ?? [])
        func role(_ name: String) -> FieldRole {
            itemFeatures.contains(name) ? .itemFeature : userFeatures.contains(name) ? .userFeature : .context
        }
        var userField: Int?, itemField: Int?
        if let user {
            try claim(try column(user, "user"), .categorical(categoricalNames.count))
            userField = categoricalNames.count
            categoricalNames.append(user); categoricalRoles.append(.user)
        }
        if let item {
            try claim(try column(item, "item"), .categorical(categoricalNames.count))
            itemField = categoricalNames.count
            categoricalNames.append(item); categoricalRoles.append(.item)
        }
        for name in categorical ?? [] {
            try claim(try column(name, "categorical"), .categorical(categoricalNames.count))
            categoricalNames.append(name); categoricalRoles.append(role(name))
        }
        for name in dense ?? [] {
            try claim(try column(name, "dense"), .dense(denseNames.count))
            denseNames.append(name); denseRoles.append(role(name))
        }
        for name in userFeatures.union(itemFeatures) where !categoricalNames.contains(name) && !denseNames.contains(name) {
            throw fail("\"\(name)\" is listed as a user or item feature but is neither dense nor categorical")
        }
        var labelSource = LabelSource.implicit
        if let label {
            try claim(try column(label, "label"), .label)
            labelSource = .binary   // refined by --label / --positive
        }
        if let timestamp { try claim(try column(timestamp, "timestamp"), .timestamp(scale: 1)) }
        guard !categoricalNames.isEmpty || !denseNames.isEmpty else { throw fail("the schema names no dense or categorical columns") }
        let latin1: Bool
        switch (encoding ?? "utf-8").lowercased() {
        case "utf-8", "utf8": latin1 = false
        case "latin-1", "latin1", "iso-8859-1": latin1 = true
        default: throw fail("encoding \"\(encoding ?? "")\" is not utf-8 or latin-1")
        }
        return InputLayout(format: .csv, separator: sep, quotes: sep != 0x09, columnCount: names.count, columnNames: names,
                           actions: actions, header: header ? .always : .never, checkUTF8: !latin1,
                           missingMarkers: missing ?? [], label: labelSource, hasTimestamp: timestamp != nil,
                           denseNames: denseNames, denseRoles: denseRoles, categoricalNames: categoricalNames,
                           categoricalRoles: categoricalRoles, userField: userField, itemField: itemField)
    }
}
