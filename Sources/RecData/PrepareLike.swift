import Foundation

/// `vocabulary.bin` in a prepared dataset with vocabulary ids: every field's (value key, id)
/// pairs, so that rows prepared later (`prepare --like`, `predict` on raw rows) get exactly the ids
/// the training rows got. Hashed ids need no file: the bucket count in the options is enough.
///
/// Layout (little-endian): the magic `RDVOCAB1`; the field count (UInt64); per field its table
/// size, distinct training values and pair count (UInt64 each), then the pairs as (key: UInt64,
/// id: UInt64); at the end the XXH64 of everything before it.
enum VocabularyFile {
    static let name = "vocabulary.bin"
    static let magic = Array("RDVOCAB1".utf8)

    static func write(_ vocabularies: [FieldVocabulary], to path: String) throws(DataError) {
        var words: [UInt64] = [UInt64(vocabularies.count)]
        for v in vocabularies {
            let entries = v.ids.entries.sorted { $0.value < $1.value }
            words += [UInt64(v.size), UInt64(v.distinct), UInt64(entries.count)]
            for e in entries { words += [e.key, UInt64(e.value)] }
        }
        var bytes = magic
        words.withUnsafeBytes { bytes += $0 }
        let checksum = bytes.withUnsafeBytes { XXH64.hash($0) }
        withUnsafeBytes(of: checksum.littleEndian) { bytes += $0 }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw DataError(file: path, message: "cannot create: \(DataError.systemMessage(errno))") }
        defer { close(fd) }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            guard n > 0 else { throw DataError(file: path, message: "cannot write: \(DataError.systemMessage(errno))", hint: "is the disk full?") }
            offset += n
        }
        guard fsync(fd) == 0 else { throw DataError(file: path, message: "cannot write: \(DataError.systemMessage(errno))", hint: "is the disk full?") }
    }

    /// Reads and checks the file against the manifest's schema (field count and table sizes).
    static func read(_ path: String, schema: PreparedManifest.Schema, rerun: String) throws(DataError) -> [FieldVocabulary] {
        func fail(_ message: String) -> DataError { DataError(file: path, message: message, hint: rerun) }
        guard FileManager.default.fileExists(atPath: path) else {
            throw DataError(file: path, message: "no such file: the dataset's vocabularies were not stored (prepared by an older rec-dist?)",
                            hint: rerun)
        }
        let bytes = try MappedFile.contents(of: path)
        guard bytes.count >= magic.count + 16, (bytes.count - magic.count) % 8 == 0, Array(bytes.prefix(magic.count)) == magic else {
            throw fail("not a rec-dist vocabulary file")
        }
        let body = bytes.count - 8
        let stored = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: body, as: UInt64.self) }
        guard bytes.withUnsafeBytes({ XXH64.hash(UnsafeRawBufferPointer(rebasing: $0[..<body])) }) == UInt64(littleEndian: stored) else {
            throw fail("the checksum does not match: the file is damaged")
        }
        let words: [UInt64] = bytes.withUnsafeBytes { raw in
            (0..<(body - magic.count) / 8).map { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: magic.count + 8 * $0, as: UInt64.self)) }
        }
        var at = 0
        func next() throws(DataError) -> UInt64 {
            guard at < words.count else { throw fail("ends early") }
            defer { at += 1 }
            return words[at]
        }
        let fields = try next()
        guard fields == UInt64(schema.categorical.count) else {
            throw fail("holds \(fields) fields; the manifest has \(schema.categorical.count) categorical fields")
        }
        var vocabularies: [FieldVocabulary] = []
        for field in schema.categorical {
            let size = try next(), distinct = try next(), count = try next()
            guard size == UInt64(field.size), count + 2 == size, count <= UInt64(words.count) else {
                throw fail("field \(field.name): \(count) values for a table of \(size) ids; the manifest says \(field.size)")
            }
            var entries: [(key: UInt64, value: UInt32)] = []
            entries.reserveCapacity(Int(count))
            for _ in 0..<count {
                let key = try next(), id = try next()
                guard key != 0, id >= 2, id < size else { throw fail("field \(field.name): an entry with id \(id) outside 2..<\(size)") }
                entries.append((key, UInt32(id)))
            }
            vocabularies.append(FieldVocabulary(entries: entries, distinct: Int(distinct)))
        }
        guard at == words.count else { throw fail("has \(words.count - at) words after the last field") }
        return vocabularies
    }
}

/// The encoding of an existing prepared dataset, to apply to new rows (`prepare --like DIR`):
/// its schema (fields, label rule, transforms and their statistics), its categorical mapper (the
/// stored vocabularies or the same hashing) and its dense transformer.
struct AppliedEncoding {
    let reference: PreparedDataset
    let mapper: CategoricalMapper
    let transformer: DenseEncoder

    var schema: PreparedManifest.Schema { reference.manifest.schema }

    init(_ reference: PreparedDataset) throws(DataError) {
        self.reference = reference
        let manifest = reference.manifest
        let rerun = "prepare the original inputs again with this rec-dist (`rec-dist prepare ... --out \(reference.directory) --force`), then train on them"
        switch manifest.options.encoding {
        case .hash(let buckets):
            mapper = CategoricalMapper(hashBuckets: buckets, fields: manifest.schema.categorical.count)
        case .vocabulary(let minCount):
            let path = (reference.directory as NSString).appendingPathComponent(VocabularyFile.name)
            mapper = CategoricalMapper(vocabularies: try VocabularyFile.read(path, schema: manifest.schema, rerun: rerun), minCount: minCount)
        }
        transformer = DenseEncoder(kind: manifest.options.denseTransform,
                                       mean: manifest.schema.dense.map(\.mean), std: manifest.schema.dense.map(\.std))
    }

    /// Checks that the new rows have the reference's fields, in order (the side files joined in
    /// can differ, for example).
    func check(_ layout: InputLayout, input: String) throws(DataError) {
        let dense = schema.dense.map(\.name), categorical = schema.categorical.map(\.name)
        guard layout.denseNames == dense, layout.categoricalNames == categorical else {
            throw DataError(file: input, message: "these rows have dense fields \(layout.denseNames) and categorical fields \(layout.categoricalNames); '\(reference.directory)' has \(dense) and \(categorical)",
                            hint: "give rows of the same format and side files as the dataset was prepared from")
        }
    }

    /// The recorded path of side file `name` (e.g. `u.user`) of the reference, if it still exists.
    func sideFile(_ name: String) -> String? {
        let manifest = reference.manifest
        return manifest.source.inputs.dropFirst(manifest.options.inputs.count).map(\.path).first {
            ($0 as NSString).lastPathComponent == name && FileManager.default.fileExists(atPath: $0)
        }
    }
}

extension Preparer {
    /// `rec-dist prepare --like DIR`: encodes `inputs` exactly as the dataset at `reference` was
    /// encoded (same format, label rule, vocabulary ids or hashing, dense transforms with the
    /// training split's statistics, side files) into a new dataset at `output` whose one split,
    /// `test`, holds every row in input order: no split, no sampled negatives, unseen values get
    /// the out-of-vocabulary id. The result has the reference's schema hash, so a model trained on
    /// the reference reads it.
    public static func apply(like reference: String, inputs: [String], output: String, format: InputFormatKind? = nil,
                             maxBadRows: Int = 0, threads: Int? = nil, force: Bool = false,
                             log: @escaping @Sendable (String) -> Void = { _ in }) throws(DataError) -> Result {
        let dataset = try PreparedDataset(directory: reference)
        var options = dataset.manifest.options
        if let format, format != options.format {
            throw DataError(file: reference, message: "was prepared from \(options.format.rawValue) rows; \(format.rawValue) rows cannot be encoded like it",
                            hint: "give --format \(options.format.rawValue) rows, or a dataset prepared from \(format.rawValue) rows")
        }
        options.inputs = inputs
        options.output = output
        options.like = URL(fileURLWithPath: reference).standardizedFileURL.path
        options.split = .none
        options.validFraction = 0
        options.testFraction = 0
        options.negatives = 0
        options.evalNegatives = 0
        options.maxBadRows = maxBadRows
        if let threads { options.threads = threads }
        options.force = force
        return try run(options, log: log)
    }
}
