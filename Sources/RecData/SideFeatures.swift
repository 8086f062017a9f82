import Foundation
import RecCore

/// Side features of interaction data: the user and item files beside the interactions (MovieLens
/// `u.user`, `u.item`, `movies.csv`), read into tables keyed by id and joined into every row.
extension InteractionPreparer {
    /// Features keyed by a user or item id, from a side file.
    struct SideTable {
        var path: String
        var bytes: Int
        var lines: Int
        var headerLines: Int
        /// The categorical field (user or item) whose value is the key.
        var keyField: Int
        var index: KeyTable
        /// Per entry: the keys of the categorical side fields and the dense side values.
        var categoricalFields: [Int]
        var denseFields: [Int]
        var categorical: [UInt64]
        var dense: [Float]
        /// Entries read; `index` maps a key to its entry.
        var rows = 0
    }

    /// Reads the side files of the format (MovieLens `u.user`/`u.item`, `movies.csv`) found beside
    /// the first input, and appends their fields to the layout. Rows encoded like another dataset
    /// use the side files the dataset was prepared with where none lie beside the input.
    func loadSideTables(applied: AppliedEncoding?) throws(DataError) {
        let folder = (options.inputs[0] as NSString).deletingLastPathComponent
        func path(_ name: String) -> String? {
            let p = (folder as NSString).appendingPathComponent(name)
            return FileManager.default.fileExists(atPath: p) ? p : applied?.sideFile(name)
        }
        switch options.format {
        case .movielens100k:
            if let p = path("u.user") { side.append(try readUsers100K(p)) }
            if let p = path("u.item") { side.append(try readItems100K(p)) }
        case .movielens:
            if let p = path("movies.csv") { side.append(try readMovies(p)) }
        default:
            break
        }
        if !side.isEmpty {
            log("side features: " + side.map { ($0.path as NSString).lastPathComponent }.joined(separator: ", "))
        }
    }

    /// Adds a categorical (or dense) side field to the layout; returns its index.
    func addCategorical(_ name: String, _ role: FieldRole) -> Int {
        layout.categoricalNames.append(name)
        layout.categoricalRoles.append(role)
        return layout.categoricalNames.count - 1
    }

    func addDense(_ name: String, _ role: FieldRole) -> Int {
        layout.denseNames.append(name)
        layout.denseRoles.append(role)
        return layout.denseNames.count - 1
    }

    /// Reads a side file line by line: `body(line, splitter)` fills one entry or reports a problem.
    func readSide(_ path: String, separator: UInt8, quotes: Bool, columns: Int, utf8: Bool, header: String?,
                  _ body: (FieldSplitter) -> LineProblem?) throws(DataError) -> (bytes: Int, lines: Int, headers: Int) {
        let file = try MappedFile(path: path)
        guard !file.text.isEmpty else {
            throw DataError(file: path, message: "no rows: the file is empty", hint: "remove it, or restore it from the dataset's archive")
        }
        let chunk = TextInput.chunks(of: file, fileIndex: 0, targetBytes: Int.max / 4, threads: 1)[0]
        let splitter = FieldSplitter(separator: separator, quotes: quotes, capacity: columns + 1)
        var failure: DataError?
        var headers = 0
        TextInput.forEachLine(in: chunk, of: file) { line, text in
            if line == 1, let header, text.starts(with: Array(header.utf8)) { headers = 1; return true }
            if text.isEmpty && line == chunk.lineCount { return true }   // a blank last line (u.genre style)
            splitter.split(text)
            var problem: LineProblem?
            if splitter.quoteError {
                problem = LineProblem(field: nil, message: "unterminated or misplaced double quote", hint: nil)
            } else if splitter.count != columns {
                problem = LineProblem(field: nil, message: "expected \(columns) fields, found \(splitter.count)", hint: nil)
            } else if utf8 && splitter.hasHighBytes && !TextInput.isValidUTF8(text) {
                problem = LineProblem(field: nil, message: "invalid UTF-8", hint: nil)
            } else {
                problem = body(splitter)
            }
            if let problem {
                failure = problem.dataError(file: path, line: line)
                return false
            }
            return true
        }
        if let failure { throw failure }
        return (file.bytes.count, chunk.lineCount, headers)
    }

    /// The key of a side value, as the main parser would compute it.
    func sideKey(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        if bytes.isEmpty { return 0 }
        switch keyMode {
        case .criteoHash: return UInt64(CriteoRows.hashCategorical(bytes))
        case .key64: return RowParser.key64(bytes)
        }
    }

    /// MovieLens 100K `u.user`: user id | age | gender | occupation | zip code.
    func readUsers100K(_ path: String) throws(DataError) -> SideTable {
        let age = addDense("age", .userFeature)
        let gender = addCategorical("gender", .userFeature)
        let occupation = addCategorical("occupation", .userFeature)
        let zip = addCategorical("zip_prefix", .userFeature)
        var table = SideTable(path: path, bytes: 0, lines: 0, headerLines: 0, keyField: layout.userField!, index: KeyTable(),
                              categoricalFields: [gender, occupation, zip], denseFields: [age], categorical: [], dense: [])
        let info = try readSide(path, separator: UInt8(ascii: "|"), quotes: false, columns: 5, utf8: true, header: nil) { s in
            guard let years = TextInput.parseInteger(s.field(1)) else {
                return LineProblem(field: "age", message: "expected an integer, found \(DataError.quote(s.field(1)))", hint: nil)
            }
            table.index.set(sideKey(s.field(0)), UInt32(table.rows))
            table.rows += 1
            table.dense.append(Float(years))
            let z = s.field(4)
            table.categorical += [sideKey(s.field(2)), sideKey(s.field(3)),
                                  sideKey(UnsafeRawBufferPointer(rebasing: z[0..<min(3, z.count)]))]
            return nil
        }
        (table.bytes, table.lines, table.headerLines) = info
        return table
    }

    static let genres100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                             "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
                             "Thriller", "War", "Western"]

    /// MovieLens 100K `u.item` (latin-1): movie id | title | release date | video date | URL | 19 genre flags.
    func readItems100K(_ path: String) throws(DataError) -> SideTable {
        let year = addCategorical("year", .itemFeature)
        let genres = Self.genres100K.map { addDense("genre_" + $0, .itemFeature) }
        var table = SideTable(path: path, bytes: 0, lines: 0, headerLines: 0, keyField: layout.itemField!, index: KeyTable(),
                              categoricalFields: [year], denseFields: genres, categorical: [], dense: [])
        let info = try readSide(path, separator: UInt8(ascii: "|"), quotes: false, columns: 24, utf8: false, header: nil) { s in
            table.index.set(sideKey(s.field(0)), UInt32(table.rows))
            table.rows += 1
            let latin1Title = String(String.UnicodeScalarView(s.field(1).map { Unicode.Scalar($0) }))
            var genreNames: [String] = []
            for g in 0..<19 where s.field(5 + g).first == UInt8(ascii: "1") { genreNames.append(Self.genres100K[g]) }
            itemMetadata[sideKey(s.field(0))] = (latin1Title, genreNames.joined(separator: "|"))
            let date = s.field(2)   // 01-Jan-1995, or empty
            table.categorical.append(date.count >= 4 ? sideKey(UnsafeRawBufferPointer(rebasing: date[(date.count - 4)...])) : 0)
            for g in 0..<19 {
                let flag = s.field(5 + g)
                guard flag.count == 1, flag[0] == UInt8(ascii: "0") || flag[0] == UInt8(ascii: "1") else {
                    return LineProblem(field: "genre_" + Self.genres100K[g], message: "expected 0 or 1, found \(DataError.quote(flag))", hint: nil)
                }
                table.dense.append(flag[0] == UInt8(ascii: "1") ? 1 : 0)
            }
            return nil
        }
        (table.bytes, table.lines, table.headerLines) = info
        return table
    }

    /// MovieLens `movies.csv`: movieId, title (quoted when it has commas), genres (`|`-separated).
    /// The year in the title's trailing "(1995)" becomes a categorical field, each genre a 0/1 dense field.
    func readMovies(_ path: String) throws(DataError) -> SideTable {
        // First the genre names (sorted), so the dense fields are known.
        var names = Set<String>()
        _ = try readSide(path, separator: UInt8(ascii: ","), quotes: true, columns: 3, utf8: true, header: "movieId,") { s in
            for g in String(decoding: s.field(2), as: UTF8.self).split(separator: "|") { names.insert(String(g)) }
            return nil
        }
        let genreNames = names.sorted()
        let year = addCategorical("year", .itemFeature)
        let genreFields = genreNames.map { addDense("genre_" + $0, .itemFeature) }
        var table = SideTable(path: path, bytes: 0, lines: 0, headerLines: 0, keyField: layout.itemField!, index: KeyTable(),
                              categoricalFields: [year], denseFields: genreFields, categorical: [], dense: [])
        let position = Dictionary(uniqueKeysWithValues: genreNames.enumerated().map { ($1, $0) })
        let info = try readSide(path, separator: UInt8(ascii: ","), quotes: true, columns: 3, utf8: true, header: "movieId,") { s in
            table.index.set(sideKey(s.field(0)), UInt32(table.rows))
            table.rows += 1
            itemMetadata[sideKey(s.field(0))] = (String(decoding: s.field(1), as: UTF8.self), String(decoding: s.field(2), as: UTF8.self))
            let title = Array(s.field(1))
            var yearKey: UInt64 = 0
            var end = title.count
            while end > 0 && title[end - 1] == UInt8(ascii: " ") { end -= 1 }
            if end >= 6 && title[end - 1] == UInt8(ascii: ")") && title[end - 6] == UInt8(ascii: "(")
                && title[(end - 5)..<(end - 1)].allSatisfy({ ($0 &- UInt8(ascii: "0")) <= 9 }) {
                yearKey = Array(title[(end - 5)..<(end - 1)]).withUnsafeBytes { sideKey($0) }
            }
            table.categorical.append(yearKey)
            var flags = [Float](repeating: 0, count: genreNames.count)
            for g in String(decoding: s.field(2), as: UTF8.self).split(separator: "|") {
                if let k = position[String(g)] { flags[k] = 1 }
            }
            table.dense += flags
            return nil
        }
        (table.bytes, table.lines, table.headerLines) = info
        return table
    }

    /// Fills the side fields of every row from the side tables (missing entries stay missing / 0).
    func joinSideFeatures() {
        for table in side {
            let kc = table.categoricalFields.count, kd = table.denseFields.count
            for r in 0..<count {
                guard let entry = table.index.find(keys[r * c + table.keyField]) else { continue }
                let row = Int(entry)
                for (k, f) in table.categoricalFields.enumerated() { keys[r * c + f] = table.categorical[row * kc + k] }
                for (k, j) in table.denseFields.enumerated() { dense[r * d + j] = table.dense[row * kd + k] }
            }
        }
    }
}
