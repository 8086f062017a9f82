import Foundation
import RecCore
import RecData

/// The files of checkpoints under a root directory, whatever the run state they carry.
///
/// A checkpoint is a directory `step-NNNNNNNN` under the root, holding `model.safetensors` (the
/// dense tensors by layout name, and embedding tables; the metadata carries the model
/// configuration), `optimizer.safetensors`, `trainer.json`, and `CHECKSUMS`: size and CRC-32 of
/// each file, checked before anything is loaded. A run with sharded tables whose ranks share the
/// checkpoint directory also writes one `shard-RRRRR-of-NNNNN.safetensors` per rank with its rows
/// (`CheckpointTables` reads the tables whichever way they were written). `latest` (and `best`)
/// name a checkpoint by a line of text.
///
/// Writing is atomic (`CheckpointWriter`): the files go into a hidden temporary directory (an
/// `AtomicDirectory`), each is fsynced, the directory is renamed into place and the root fsynced;
/// then `latest` is replaced by rename. A crash or a full disk leaves the previous checkpoint intact.
public enum CheckpointDirectory {
    /// The files every checkpoint holds, each listed in `CHECKSUMS`.
    public static let files = ["model.safetensors", "optimizer.safetensors", "trainer.json"]

    /// The file rank `rank` of `ranks` writes its rows of the sharded tables to.
    public static func shardName(rank: Int, of ranks: Int) -> String {
        String(format: "shard-%05ld-of-%05ld.safetensors", rank, ranks)
    }

    /// (rank, ranks) of a `shardName`, or nil for any other name.
    static func parseShardName(_ name: String) -> (rank: Int, ranks: Int)? {
        let parts = name.split(separator: "-")
        guard parts.count == 4, parts[0] == "shard", parts[2] == "of", parts[3].hasSuffix(".safetensors"),
              let rank = Int(parts[1]), let ranks = Int(parts[3].dropLast(".safetensors".count)),
              ranks >= 1, rank < ranks, name == shardName(rank: rank, of: ranks) else { return nil }
        return (rank, ranks)
    }

    /// The directory name of the checkpoint after `step` optimizer steps.
    public static func name(step: Int) -> String { String(format: "step-%08ld", step) }

    // MARK: - Writing (`CheckpointWriter` writes a checkpoint's files)

    /// Replaces `root/file` with a line naming `target`, atomically.
    public static func writePointer(root: String, file: String, to target: String) throws(CheckpointError) {
        do { try replaceFile(at: root + "/" + file, with: Array((target + "\n").utf8)) } catch { throw CheckpointError(error) }
    }

    /// Removes all but the newest `keep` of the checkpoints `isOwn` accepts (the run's own
    /// lineage), never removing `protected` (the best) or a checkpoint `isOwn` refuses.
    /// Returns the names removed.
    @discardableResult
    public static func prune(root: String, keep: Int, protected: String?, isOwn: (String) -> Bool) -> [String] {
        let own = list(root: root).filter(isOwn)
        guard own.count > keep else { return [] }
        var removed: [String] = []
        for name in own.dropLast(keep) where name != protected {
            if (try? FileManager.default.removeItem(atPath: root + "/" + name)) != nil { removed.append(name) }
        }
        return removed
    }

    /// Removes what interrupted writes left under `root`: the hidden `.step-NNNNNNNN.tmp-PID`
    /// (and `.old-PID`) directories of processes that no longer run on this host. Call it while
    /// holding the directory's `CheckpointLock`. Returns the names removed.
    @discardableResult
    public static func removeStaleTemporaries(root: String) -> [String] {
        var removed: [String] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] where entry.hasPrefix(".step-") {
            let parts = entry.split(separator: ".")   // ["step-NNNNNNNN", "tmp-PID"]
            guard parts.count == 2, let dash = parts[1].lastIndex(of: "-"),
                  ["tmp", "old"].contains(parts[1][..<dash]), let pid = Int32(parts[1][parts[1].index(after: dash)...]),
                  pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            if (try? FileManager.default.removeItem(atPath: root + "/" + entry)) != nil { removed.append(entry) }
        }
        return removed
    }

    // MARK: - Reading

    /// The checkpoint directories under `root`, oldest first.
    public static func list(root: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return names.filter { $0.hasPrefix("step-") && $0.count == 13 && Int($0.dropFirst(5)) != nil }.sorted()
    }

    /// The name `root/latest` points to, if any.
    public static func latest(in root: String) -> String? {
        guard let text = try? String(contentsOfFile: root + "/latest", encoding: .utf8) else { return nil }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Resolves what `--resume` names: a checkpoint directory, or a root holding `latest`.
    public static func resolve(_ path: String) throws(CheckpointError) -> String {
        if FileManager.default.fileExists(atPath: path + "/CHECKSUMS") { return path }
        if let name = latest(in: path) {
            guard FileManager.default.fileExists(atPath: path + "/" + name) else {
                let newest = list(root: path).last
                throw CheckpointError(path: path, message: "'latest' names \(name), which does not exist (removed by hand, or the disk lost it); "
                                      + (newest.map { "the newest checkpoint there is \($0): pass --resume/--checkpoint \(path)/\($0)" } ?? "no checkpoint is left there"))
            }
            return path + "/" + name
        }
        throw CheckpointError(path: path, message: "not a checkpoint (no CHECKSUMS) and no 'latest' inside; pass a step-NNNNNNNN directory or the --checkpoint-dir of a previous run")
    }

    /// Checks a checkpoint's files against its CHECKSUMS: refuses anything missing, truncated or
    /// flipped with an error saying what is wrong. The per-rank shard files, when it has them,
    /// must be listed for every rank of one run.
    public static func verify(_ dir: String) throws(CheckpointError) {
        func fail(_ message: String) -> CheckpointError { damaged(dir, message) }
        let expected = try listed(dir)
        for file in files where expected[file] == nil { throw fail("CHECKSUMS does not list \(file)") }
        for (file, e) in expected.sorted(by: { $0.key < $1.key }) {
            let mapped: MappedFile
            do { mapped = try MappedFile(path: dir + "/" + file) } catch { throw fail("\(file) cannot be read (\(error))") }
            guard mapped.bytes.count == e.size else {
                throw fail("\(file) has \(mapped.bytes.count) bytes, CHECKSUMS says \(e.size) (truncated?)")
            }
            guard checksumDroppingPages(mapped) == e.crc else { throw fail("\(file) does not match its CRC-32 (corrupted)") }
        }
    }

    /// The CRC-32 of a mapped file, read 64 MiB at a time; each part's pages are let go once
    /// read, so verifying a checkpoint of many gigabytes does not add them to the process's
    /// resident set (they stay in the page cache).
    static func checksumDroppingPages(_ mapped: MappedFile) -> UInt32 {
        var crc = CRC32()
        let bytes = mapped.bytes, part = 64 << 20
        var at = 0
        while at < bytes.count {
            let n = min(part, bytes.count - at)
            crc.update(UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)]))
            mapped.releasePages(at..<(at + n))
            at += n
        }
        return crc.value
    }

    /// The files CHECKSUMS lists, with their CRC-32 and size (not checked against the files).
    static func listed(_ dir: String) throws(CheckpointError) -> [String: (crc: UInt32, size: Int)] {
        func fail(_ message: String) -> CheckpointError { damaged(dir, message) }
        guard let text = try? String(contentsOfFile: dir + "/CHECKSUMS", encoding: .utf8) else {
            throw fail("CHECKSUMS is missing or unreadable")
        }
        var expected: [String: (crc: UInt32, size: Int)] = [:]
        var shards: [(rank: Int, ranks: Int)] = []
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count == 3, let crc = UInt32(parts[0], radix: 16), let size = Int(parts[1]),
                  files.contains(String(parts[2])) || parseShardName(String(parts[2])) != nil,
                  expected[String(parts[2])] == nil else { throw fail("CHECKSUMS has a malformed line '\(line.prefix(80))'") }
            expected[String(parts[2])] = (crc, size)
            if let shard = parseShardName(String(parts[2])) { shards.append(shard) }
        }
        if let ranks = shards.map(\.ranks).max() {
            let missing = (0..<ranks).map { shardName(rank: $0, of: ranks) }.filter { expected[$0] == nil }
            guard missing.isEmpty, shards.count == ranks else {
                throw fail("CHECKSUMS lists \(shards.count) shard files, not one for each of \(ranks) ranks (missing \(missing.prefix(3).joined(separator: ", ")))")
            }
        }
        return expected
    }

    /// The per-rank shard files CHECKSUMS lists, in rank order (none: the tables are whole in
    /// model.safetensors and optimizer.safetensors).
    public static func shardFiles(_ dir: String) throws(CheckpointError) -> [String] {
        try listed(dir).keys.filter { parseShardName($0) != nil }.sorted()
    }

    /// The error for a damaged checkpoint, with what to do about it.
    public static func damaged(_ dir: String, _ message: String) -> CheckpointError {
        CheckpointError(path: dir, message: "\(message). The checkpoint is damaged; resume from an earlier one (they are listed in the directory) or start afresh")
    }

    /// Copies `dir/model.safetensors`'s dense tensors into the parameters (by `layout`) and the
    /// embedding tables (from wherever the checkpoint holds them: `CheckpointTables`), after
    /// checking that it holds exactly those tensors with those shapes; `cause` says what a mismatch
    /// means to the caller. Without `embeddingTable` the tables' shapes are checked and their
    /// values left where they are (a sharded run moves them to their ranks itself).
    public static func readModelTensors(_ dir: String, layout: ParameterLayout, parameters: FloatBuffer, tables: EmbeddingTables?,
                                        embeddingTable: FloatBuffer?, cause: String) throws {
        func fail(_ message: String) -> CheckpointError { CheckpointError(path: dir, message: message) }
        let modelFile = try MappedFile(path: dir + "/model.safetensors")
        let (entries, _) = try SafeTensors.parseHeader(modelFile.bytes, path: dir + "/model.safetensors")
        let tableNames = Set((0..<(tables?.fields ?? 0)).map { "embedding.C\($0 + 1)" })
        let expected = layout.entries.map { ($0.name, $0.shape, UnsafeMutableBufferPointer(start: parameters.pointer + $0.offset, count: $0.count)) }
        let dense = Set(entries.keys).subtracting(tableNames)
        guard dense == Set(expected.map(\.0)) else {
            let extra = dense.subtracting(expected.map(\.0)).sorted().prefix(3)
            let missing = Set(expected.map(\.0)).subtracting(dense).sorted().prefix(3)
            throw fail("its tensors do not match this model (missing \(Array(missing)), unexpected \(Array(extra))); \(cause)")
        }
        for (name, shape, _) in expected {
            let entry = entries[name]!
            guard entry.shape == shape else {
                throw fail("tensor \(name) has shape \(entry.shape), this model needs \(shape); \(cause)")
            }
        }
        let stored = try tables.map { try CheckpointTables(dir, tables: $0, cause: cause) }
        for (name, _, destination) in expected {
            SafeTensors.copy(entries[name]!, from: modelFile.bytes, into: destination)
            try requireFinite(UnsafeBufferPointer(destination), tensor: name, file: dir + "/model.safetensors")
        }
        guard let stored, let embeddingTable else { return }
        for f in 0..<stored.tables.fields {
            let rows = stored.tables.rows(field: f), dim = stored.tables.dim
            stored.read("embedding", table: f, rows: 0..<rows, width: dim, into: embeddingTable.pointer + stored.tables.firstRow(field: f) * dim)
        }
        try stored.requireFinite("embedding", width: stored.tables.dim)
    }

    /// Refuses a tensor holding NaN or an infinity, naming it: its checksums may be valid (a run
    /// that diverged, a hand edit), but no prediction or export made from it would be.
    public static func requireFinite(_ values: UnsafeBufferPointer<Float>, tensor: String, file: String) throws(CheckpointError) {
        guard let i = values.firstIndex(where: { !$0.isFinite }) else { return }
        throw CheckpointError(path: file, message: "tensor \(tensor) holds \(values[i]) at index \(i): its values must be finite (the run diverged before this checkpoint, or the file was edited); use an earlier checkpoint")
    }

    /// The model configuration and tensors of verified checkpoint `dir`: the dense tensors of
    /// `model.safetensors` and each embedding table whole as `embedding.C<k>`, in that file's
    /// order (the tables of a checkpoint with per-rank shard files assembled after them).
    public static func readModel(_ dir: String) throws -> (model: ModelConfig, tensors: [SafeTensors.Tensor]) {
        let file = dir + "/model.safetensors"
        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        var (tensors, metadata) = try SafeTensors.decode(data, path: file)
        guard metadata["format"] == "rec-dist", let json = metadata["model"],
              let model = try? JSONDecoder().decode(ModelConfig.self, from: Data(json.utf8)) else {
            throw CheckpointError(path: file, message: "no rec-dist model description in the metadata")
        }
        for tensor in tensors { try tensor.values.withUnsafeBufferPointer { try requireFinite($0, tensor: tensor.name, file: file) } }
        if let tables = model.modelTables, !(try shardFiles(dir)).isEmpty {
            let stored = try CheckpointTables(dir, tables: tables, cause: "the checkpoint's files do not fit the model it records (damaged or hand-edited)")
            try stored.requireFinite("embedding", width: tables.dim)
            let present = Set(tensors.map(\.name))
            for t in 0..<tables.fields where !present.contains("embedding.C\(t + 1)") {
                var values = [Float](repeating: 0, count: tables.rows(field: t) * tables.dim)
                values.withUnsafeMutableBufferPointer { stored.read("embedding", table: t, rows: 0..<tables.rows(field: t), width: tables.dim, into: $0.baseAddress!) }
                tensors.append(SafeTensors.Tensor(name: "embedding.C\(t + 1)", shape: [tables.rows(field: t), tables.dim], values: values))
            }
        }
        return (model, tensors)
    }

    // MARK: - trainer.json

    /// The encoder of `trainer.json`: sorted keys, non-finite numbers as strings.
    public static func jsonEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return encoder
    }

    /// Reads what `jsonEncoder()` writes.
    public static func jsonDecoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return decoder
    }
}
