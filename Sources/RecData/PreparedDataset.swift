import Foundation

/// The readable description of a prepared dataset, `manifest.json`: where the data came from,
/// the exact options, the schema (fields, roles, vocabulary sizes, transforms), the splits with
/// their row counts, and statistics. `train` reads it to shape the model; people read it to know
/// what they are training on.
public struct PreparedManifest: Codable, Sendable, Equatable {
    public static let formatName = "rec-dist prepared dataset"
    public static let currentVersion = 1

    public var format: String = PreparedManifest.formatName
    public var version: Int = PreparedManifest.currentVersion
    public var createdBy: String
    public var source: Source
    /// The options of the run, defaults filled in.
    public var options: PrepareOptions
    public var schema: Schema
    public var splits: [Split]
    public var statistics: Statistics
    /// XXH64 of the schema, in hex; every split file's header carries the same value.
    public var schemaHash: String

    public struct Source: Codable, Sendable, Equatable {
        public var format: String
        public var inputs: [Input]
    }

    public struct Input: Codable, Sendable, Equatable {
        public var path: String
        public var bytes: Int
        public var lines: Int
        public var headerLines: Int
        public var badRows: Int
    }

    public struct Schema: Codable, Sendable, Equatable {
        /// How the label was made: "click", "rating>=4", "behavior in buy,cart", "implicit"...
        public var label: String
        public var dense: [DenseField]
        public var categorical: [CategoricalField]
        /// Names of the user and item fields (interaction data).
        public var userField: String?
        public var itemField: String?
    }

    public struct DenseField: Codable, Sendable, Equatable {
        public var name: String
        public var role: FieldRole
        /// "log1p" (log(1 + max(x, 0))), "standardize" ((x - mean) / std) or "none".
        public var transform: String
        /// Mean and standard deviation of the raw values over the training split.
        public var mean: Double
        public var std: Double
    }

    public struct CategoricalField: Codable, Sendable, Equatable {
        public var name: String
        public var role: FieldRole
        /// "hash" or "vocabulary".
        public var encoding: String
        /// Ids in use: the embedding table size. 0 is "missing"; with a vocabulary 1 is "out of vocabulary".
        public var size: Int
        /// Distinct values in the training split (vocabulary encoding).
        public var distinctValues: Int?
    }

    public struct Split: Codable, Sendable, Equatable {
        public var name: String
        public var file: String
        public var rows: Int
        public var positives: Int
        /// For ranking evaluation: rows come in groups of this size (one held-out positive, then
        /// its sampled negatives), one group per user.
        public var groupSize: Int?
    }

    public struct Statistics: Codable, Sendable, Equatable {
        /// Data lines read (headers excluded), bad rows skipped, rows written over all splits.
        public var lines: Int
        public var badRows: Int
        public var rows: Int
        /// Distinct users and items in the input (interaction data).
        public var users: Int?
        public var items: Int?
        /// Rows per behavior value (Taobao) or per label (explicit ratings), when meaningful.
        public var counts: [String: Int]?
        /// Negatives sampled (all splits).
        public var sampledNegatives: Int?
        public var seconds: Double
        public var megabytesPerSecond: Double
    }

    /// Split names in file order.
    public static let splitNames = ["train", "valid", "test"]

    /// The split named `name`, if present.
    public func split(_ name: String) -> Split? { splits.first { $0.name == name } }

    /// Per-field table sizes, for the model.
    public var vocabularySizes: [Int] { schema.categorical.map(\.size) }

    /// The value the split headers carry: a hash of what makes the stored rows interpretable
    /// (the label rule; field names, roles, encodings, table sizes and transforms, and the mean
    /// and std where standardization used them). Descriptive statistics are left out.
    static func schemaHash(_ schema: Schema) -> UInt64 {
        var text = "label=\(schema.label);user=\(schema.userField ?? "");item=\(schema.itemField ?? "")"
        for f in schema.dense {
            text += ";dense:\(f.name):\(f.role.rawValue):\(f.transform)"
            if f.transform == DenseTransformKind.standardize.rawValue { text += ":\(f.mean.bitPattern):\(f.std.bitPattern)" }
        }
        for f in schema.categorical { text += ";categorical:\(f.name):\(f.role.rawValue):\(f.encoding):\(f.size)" }
        return XXH64.hash(text)
    }

    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }

    static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return decoder
    }
}

/// A prepared dataset directory opened for training: the manifest, and the split files on demand.
public final class PreparedDataset: Sendable {
    public let directory: String
    public let manifest: PreparedManifest
    public let schemaHash: UInt64

    /// The manifest's file name inside a prepared dataset directory.
    public static let manifestName = "manifest.json"

    /// Whether `path` is a directory (a prepared dataset, or meant to be one) rather than a file.
    public static func isDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// Reads and checks `directory/manifest.json`.
    public init(directory: String) throws(DataError) {
        self.directory = directory
        let path = (directory as NSString).appendingPathComponent(Self.manifestName)
        let rerun = "re-run `rec-dist prepare --out \(directory)` (with --force to replace it)"
        guard FileManager.default.fileExists(atPath: path) else {
            throw DataError(file: path, message: FileManager.default.fileExists(atPath: directory)
                                ? "no manifest: '\(directory)' is not a prepared dataset (or its preparation did not finish)"
                                : "no such directory",
                            hint: "--data takes a Criteo TSV file or a directory written by `rec-dist prepare`; " + rerun)
        }
        let data = Data(try MappedFile.contents(of: path))
        let manifest: PreparedManifest
        do {
            manifest = try PreparedManifest.decoder().decode(PreparedManifest.self, from: data)
        } catch {
            throw DataError(file: path, message: "cannot read the manifest: \(error)", hint: rerun)
        }
        guard manifest.format == PreparedManifest.formatName else {
            throw DataError(file: path, message: "not a rec-dist manifest (format \"\(manifest.format)\")", hint: rerun)
        }
        guard manifest.version == PreparedManifest.currentVersion else {
            throw DataError(file: path, message: "manifest version \(manifest.version); this rec-dist reads version \(PreparedManifest.currentVersion)",
                            hint: rerun)
        }
        let hash = PreparedManifest.schemaHash(manifest.schema)
        guard hex64(hash) == manifest.schemaHash else {
            throw DataError(file: path, message: "the schema does not match its hash (was the manifest edited?)", hint: rerun)
        }
        // Ranking groups (one held-out positive and its sampled negatives) exist only in the
        // evaluation splits of a leave-last-out split, and tile their split exactly; evaluation
        // relies on that.
        for split in manifest.splits {
            guard let size = split.groupSize else { continue }
            guard size >= 1, split.name != "train", manifest.options.split == .leaveLastOut, split.rows % size == 0 else {
                throw DataError(file: path, message: "split \(split.name): group_size \(size) does not fit a split of \(split.rows) rows prepared with --split \(manifest.options.split.rawValue) (was the manifest edited?)",
                                hint: rerun)
            }
        }
        self.manifest = manifest
        schemaHash = hash
    }

    public var denseCount: Int { manifest.schema.dense.count }
    public var categoricalCount: Int { manifest.schema.categorical.count }

    /// Opens split `name` (checking its header, size and schema hash; not yet its row groups).
    public func open(split name: String) throws(DataError) -> PreparedSplitReader {
        guard let split = manifest.split(name) else {
            throw DataError(file: (directory as NSString).appendingPathComponent(Self.manifestName),
                            message: "no split named \"\(name)\"", hint: "the splits are \(manifest.splits.map(\.name))")
        }
        let reader = try PreparedSplitReader(path: (directory as NSString).appendingPathComponent(split.file),
                                             expectedSchemaHash: schemaHash)
        guard reader.header.rows == split.rows, reader.header.denseCount == denseCount,
              reader.header.categoricalCount == categoricalCount else {
            throw DataError(file: reader.path, message: "holds \(reader.header.rows) rows of \(reader.header.denseCount) + \(reader.header.categoricalCount) fields; the manifest says \(split.rows) rows of \(denseCount) + \(categoricalCount)",
                            hint: "re-run `rec-dist prepare` (with --force)")
        }
        return reader
    }
}
