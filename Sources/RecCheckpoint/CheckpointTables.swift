import Foundation
import RecCore
import RecData

/// A checkpoint's embedding tables and their optimizer state, read by global row whichever way
/// they were written:
///
/// - whole: each table as `embedding.C<k>` (rows, dim) in model.safetensors and each embedding
///   optimizer slot as one tensor over every table's rows in optimizer.safetensors (replicated
///   runs, and sharded runs whose ranks do not share the checkpoint directory);
/// - in pieces: a sharded run whose ranks share the directory writes each rank's rows to its own
///   `shard-RRRRR-of-NNNNN.safetensors` as `embedding.C<k>` (its rows of table k, (count, dim))
///   and `<slot>.C<k>` (their state, (count, perRow)); the replicated tables are whole pieces in
///   model.safetensors and optimizer.safetensors. Every file's metadata `rows` maps each piece to
///   the global rows it holds, `[first, stride, count]` (rows first, first + stride, ...), so
///   the tables are reassembled without knowing the plan that wrote them. model.safetensors and
///   every shard file carry the same metadata `shard_set`, a random id drawn for each checkpoint,
///   so a shard file of another checkpoint (another run's, or an earlier write of this step's)
///   is refused by name.
///
/// The files are mapped, not read: a piece is copied only when its rows are asked for. Every
/// piece is checked against the tables' shapes when the checkpoint is opened, and the pieces of a
/// table must hold each of its rows exactly once.
public final class CheckpointTables {
    /// Rows `first + i·stride` for i in 0..<count, `width` floats each, from byte `offset` of file
    /// `file`, where its tensor takes `bytes` bytes.
    struct Piece { var file: Int; var offset: Int; var bytes: Int; var shape: [Int]; var first: Int; var stride: Int; var count: Int }

    /// The metadata key of the id that ties a checkpoint's shard files to its model.safetensors.
    public static let shardSetKey = "shard_set"

    public let tables: EmbeddingTables
    /// Whether the tables are in per-rank shard files.
    public let isSharded: Bool
    let paths: [String]
    private let mapped: [MappedFile]
    /// By "<base>.C<k>": the values (base "embedding") or an optimizer slot's state of table k.
    private var pieces: [String: [Piece]] = [:]

    /// Opens checkpoint `dir`'s tables `tables` and, for each of `slots` (name, floats per row),
    /// that embedding optimizer slot's state (none: the values only). `cause` says what a
    /// mismatch means to the caller.
    public init(_ dir: String, tables: EmbeddingTables, slots: [(name: String, perRow: Int)] = [], cause: String) throws {
        self.tables = tables
        let shards = try CheckpointDirectory.shardFiles(dir)
        isSharded = !shards.isEmpty
        paths = ["model.safetensors", "optimizer.safetensors"].prefix(slots.isEmpty ? 1 : 2).map { dir + "/" + $0 } + shards.map { dir + "/" + $0 }
        var mapped: [MappedFile] = []
        var headers: [(entries: [String: SafeTensors.Entry], metadata: [String: String])] = []
        for path in paths {
            let file = try Self.map(path)
            headers.append(try SafeTensors.parseHeader(file.bytes, path: path))
            mapped.append(file)
        }
        self.mapped = mapped
        let bases = [("embedding", tables.dim)] + slots.map { ($0.name, $0.perRow) }
        if isSharded {
            let set = headers[0].metadata[Self.shardSetKey], firstShard = paths.count - shards.count
            for (k, header) in headers.enumerated() {
                if k >= firstShard {
                    guard header.metadata["format"] == "rec-dist-shard" else {
                        throw CheckpointError(path: paths[k], message: "its metadata 'format' is \(header.metadata["format"].map { "'\($0)'" } ?? "missing"), not 'rec-dist-shard'; the file is damaged or not a shard file of rec-dist")
                    }
                    guard header.metadata[Self.shardSetKey] == set else {
                        throw CheckpointDirectory.damaged(dir, "\(shards[k - firstShard]) belongs to another checkpoint (its \(Self.shardSetKey) is \(header.metadata[Self.shardSetKey] ?? "missing"), model.safetensors' is \(set ?? "missing")): a shard file copied in from another run or another checkpoint")
                    }
                    // Every tensor of a shard file is a piece of a table, with its rows named.
                    let named = Self.pieceNames(header.metadata)
                    if let unnamed = header.entries.keys.sorted().first(where: { !named.contains($0) }) {
                        throw CheckpointError(path: paths[k], message: "its metadata 'rows' does not say which rows tensor \(unnamed) holds; the file is damaged")
                    }
                }
                try index(file: k, header.entries, rows: header.metadata["rows"])
            }
        } else {
            // Whole: the tables in model.safetensors, each slot over all rows in optimizer.safetensors.
            for t in 0..<tables.fields {
                let name = "embedding.C\(t + 1)"
                guard let entry = headers[0].entries[name] else {
                    throw CheckpointError(path: dir, message: "its tensors do not match this model (missing [\"\(name)\"]); \(cause)")
                }
                guard entry.shape == [tables.rows(field: t), tables.dim] else {
                    throw CheckpointError(path: dir, message: "tensor \(name) has shape \(entry.shape), this model needs \([tables.rows(field: t), tables.dim]); \(cause)")
                }
                pieces[name] = [Piece(file: 0, offset: entry.range.lowerBound, bytes: entry.range.count, shape: entry.shape, first: 0, stride: 1,
                                      count: tables.rows(field: t))]
            }
            for (name, perRow) in slots {
                guard let entry = headers[1].entries[name], entry.range.count == tables.rowCount * perRow * 4 else {
                    throw CheckpointError(path: paths[1], message: "optimizer state: \(name) is missing or has \(headers[1].entries[name].map { $0.range.count / 4 } ?? 0) values, this model needs \(tables.rowCount * perRow); \(cause)")
                }
                for t in 0..<tables.fields {
                    pieces["\(name).C\(t + 1)"] = [Piece(file: 1, offset: entry.range.lowerBound + tables.firstRow(field: t) * perRow * 4,
                                                         bytes: tables.rows(field: t) * perRow * 4, shape: [tables.rows(field: t), perRow],
                                                         first: 0, stride: 1, count: tables.rows(field: t))]
                }
            }
        }
        for (base, width) in bases {
            for t in 0..<tables.fields { try check("\(base).C\(t + 1)", rows: tables.rows(field: t), width: width, cause: cause) }
        }
    }

    /// Indexes the pieces file `k`'s metadata `rows` names.
    private func index(file k: Int, _ entries: [String: SafeTensors.Entry], rows: String?) throws {
        guard let rows else { return }
        guard let map = (try? JSONSerialization.jsonObject(with: Data(rows.utf8))) as? [String: [Int]] else {
            throw CheckpointError(path: paths[k], message: "its metadata 'rows' is not a map of tensor names to [first, stride, count]; the file is damaged")
        }
        for (name, r) in map.sorted(by: { $0.key < $1.key }) {
            guard r.count == 3, r[0] >= 0, r[1] >= 1, r[2] >= 0, let entry = entries[name] else {
                throw CheckpointError(path: paths[k], message: "its metadata 'rows' gives tensor \(name) the rows \(r), which are not [first, stride, count] of a tensor of the file; the file is damaged")
            }
            pieces[name, default: []].append(Piece(file: k, offset: entry.range.lowerBound, bytes: entry.range.count, shape: entry.shape,
                                                  first: r[0], stride: r[1], count: r[2]))
        }
    }

    /// Checks that the pieces of `name` hold each of its `rows` rows exactly once, `width` floats each.
    private func check(_ name: String, rows: Int, width: Int, cause: String) throws {
        guard let parts = pieces[name], !parts.isEmpty else {
            throw CheckpointError(path: (paths[0] as NSString).deletingLastPathComponent,
                                  message: "no file of the checkpoint holds tensor \(name); \(cause)")
        }
        // N pieces take every Nth row each (N = 1: the whole table). The conditions are checked
        // in order, so a hand-edited count or stride never overflows the arithmetic.
        let stride = parts.count
        for p in parts {
            guard p.stride == stride, p.first < stride, p.count == (p.first < rows ? (rows - p.first + stride - 1) / stride : 0),
                  p.bytes == p.count * width * 4, p.shape == [p.count, width] else {
                throw CheckpointError(path: paths[p.file], message: "its piece of tensor \(name) (rows from \(p.first) every \(p.stride), \(p.count) of them, shape \(p.shape)) does not fit the other pieces or a table of \(rows) rows x \(width); \(cause)")
            }
        }
        guard Set(parts.map(\.first)).count == stride else {
            throw CheckpointError(path: paths[parts[0].file], message: "two pieces of tensor \(name) hold the same rows; the checkpoint is damaged")
        }
    }

    /// Copies rows `rows` of table `table`'s tensor `base` ("embedding": the values; an optimizer
    /// slot's name: its state) into `destination`, (rows.count, width) in row order.
    public func read(_ base: String, table: Int, rows: Range<Int>, width: Int, into destination: UnsafeMutablePointer<Float>) {
        for p in pieces["\(base).C\(table + 1)"]! {
            func index(atOrAbove row: Int) -> Int { min(p.count, max(0, (row - p.first + p.stride - 1) / p.stride)) }
            let lower = index(atOrAbove: rows.lowerBound), upper = index(atOrAbove: rows.upperBound)
            guard lower < upper else { continue }
            let source = (mapped[p.file].bytes.baseAddress! + p.offset).assumingMemoryBound(to: Float.self)
            if p.stride == 1 {
                (destination + (p.first + lower - rows.lowerBound) * width).update(from: source + lower * width, count: (upper - lower) * width)
                continue
            }
            for i in lower..<upper {
                (destination + (p.first + i * p.stride - rows.lowerBound) * width).update(from: source + i * width, count: width)
            }
        }
    }

    /// Rows `rows` of `base` in place when one piece holds them in order (a whole table), else nil.
    public func contiguous(_ base: String, table: Int, rows: Range<Int>, width: Int) -> UnsafePointer<Float>? {
        guard let parts = pieces["\(base).C\(table + 1)"], parts.count == 1 else { return nil }
        return UnsafePointer((mapped[parts[0].file].bytes.baseAddress! + parts[0].offset).assumingMemoryBound(to: Float.self)) + rows.lowerBound * width
    }

    /// Refuses a piece holding NaN or an infinity, naming its tensor and file.
    public func requireFinite(_ base: String, width: Int) throws(CheckpointError) {
        for t in 0..<tables.fields {
            let name = "\(base).C\(t + 1)"
            for p in pieces[name]! {
                let values = UnsafeBufferPointer(start: (mapped[p.file].bytes.baseAddress! + p.offset).assumingMemoryBound(to: Float.self),
                                                 count: p.count * width)
                try CheckpointDirectory.requireFinite(values, tensor: isSharded ? name : (p.file == 0 ? name : base), file: paths[p.file])
                mapped[p.file].releasePages(p.offset..<(p.offset + p.count * width * 4))
            }
        }
    }

    /// Lets every page of the files go from the process's resident set (they stay in the page
    /// cache): a reader that has copied some rows out calls it, so reading a checkpoint of many
    /// gigabytes does not keep them all resident.
    public func releasePages() {
        for file in mapped { file.releasePages(0..<file.bytes.count) }
    }

    /// The tensors a file's metadata `rows` names as pieces of tables.
    public static func pieceNames(_ metadata: [String: String]) -> Set<String> {
        guard let rows = metadata["rows"], let map = (try? JSONSerialization.jsonObject(with: Data(rows.utf8))) as? [String: Any] else { return [] }
        return Set(map.keys)
    }

    private static func map(_ path: String) throws(CheckpointError) -> MappedFile {
        do { return try MappedFile(path: path) } catch { throw CheckpointError(error) }
    }
}
