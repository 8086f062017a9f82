import Foundation
import RecCheckpoint
import RecCore
import RecInference
@testable import RecTrainer
import Testing

/// Checkpoints of sharded runs written by every rank to its own shard file (in-process ranks
/// share the directory) against the same runs' checkpoints written through rank 0 (the funnel),
/// resumed at other numbers of ranks and plans, a rank failing to write, and damaged shard files.
struct PerRankCheckpointTests {
    static let data = Result { try InProcessTrainingTests.dataset(rows: 150) }

    static func train(ranks: Int, _ mode: EmbeddingSharding?, steps: Int, checkpoint: String, resume: Bool = false,
                      funnel: Bool = false, hashBuckets: Int = 97) throws -> [String: [Float]] {
        try ShardedTrainingTests.train(data: data.get(), model: .dlrm, ranks: ranks, sharding: mode, steps: steps,
                                       checkpoint: checkpoint, resume: resume, funnel: funnel, hashBuckets: hashBuckets)
    }

    /// Every embedding tensor of checkpoint `dir` (values and optimizer slots), by "<base>.C<k>",
    /// assembled in global row order; the slots and their widths are those the funnel-format
    /// checkpoint `reference` holds whole.
    static func tables(_ dir: String, reference: String) throws -> [String: [Float]] {
        let (model, _) = try CheckpointDirectory.readModel(reference)
        let tables = try #require(model.modelTables)
        let file = try Data(contentsOf: URL(fileURLWithPath: reference + "/optimizer.safetensors"))
        let (state, _) = try SafeTensors.decode(file, path: reference)
        let slots = state.filter { $0.name.hasPrefix("embedding.") }.map { ($0.name, $0.values.count / tables.rowCount) }
        let stored = try CheckpointTables(dir, tables: tables, slots: slots, cause: "test")
        var out: [String: [Float]] = [:]
        for (base, width) in [("embedding", tables.dim)] + slots {
            for t in 0..<tables.fields {
                var values = [Float](repeating: .nan, count: tables.rows(field: t) * width)
                values.withUnsafeMutableBufferPointer { stored.read(base, table: t, rows: 0..<tables.rows(field: t), width: width, into: $0.baseAddress!) }
                out["\(base).C\(t + 1)"] = values
            }
        }
        return out
    }

    /// (ranks, plan, hash buckets): 2 buckets on 3 ranks leave rank 2 no row of any table (a
    /// zero-row piece in its shard file).
    @Test(arguments: [(2, EmbeddingSharding.row, 97), (3, .row, 97), (2, .table, 97), (3, .table, 97), (3, .row, 2)])
    func perRankEqualsFunnel(ranks: Int, mode: EmbeddingSharding, hashBuckets: Int) throws {
        let perRank = ShardedTrainingTests.directory(), funnel = ShardedTrainingTests.directory()
        let a = try Self.train(ranks: ranks, mode, steps: 8, checkpoint: perRank, hashBuckets: hashBuckets)
        let b = try Self.train(ranks: ranks, mode, steps: 8, checkpoint: funnel, funnel: true, hashBuckets: hashBuckets)
        #expect(ShardedTrainingTests.worst(a, b) == 0, "N=\(ranks) \(mode)")
        let (dirA, dirB) = (try Checkpoint.resolve(perRank), try Checkpoint.resolve(funnel))
        // CHECKSUMS lists one shard file per rank (and validating checks them).
        _ = try Checkpoint.validate(dirA)
        #expect(try CheckpointDirectory.shardFiles(dirA) == (0..<ranks).map { CheckpointDirectory.shardName(rank: $0, of: ranks) })
        #expect(try CheckpointDirectory.shardFiles(dirB).isEmpty)
        // The per-rank model.safetensors holds no table: every row is in the shard files.
        let model = try SafeTensors.decode(Data(contentsOf: URL(fileURLWithPath: dirA + "/model.safetensors")), path: dirA)
        #expect(!model.tensors.contains { $0.name.hasPrefix("embedding.C") })
        // Values and optimizer state, row for row; NaN (a row no piece held) never compares equal.
        let (rowsA, rowsB) = (try Self.tables(dirA, reference: dirB), try Self.tables(dirB, reference: dirB))
        #expect(Set(rowsA.keys.map { $0.components(separatedBy: ".C").first! }) == ["embedding", "embedding.m", "embedding.v"])
        let differing = rowsB.keys.filter { rowsA[$0] != rowsB[$0] }.sorted()
        #expect(rowsA.count == rowsB.count && differing.isEmpty, "N=\(ranks) \(mode): \(differing.count) tensors differ, \(differing.prefix(4))")
        // What predict, recommend, explain and export score with.
        let (scoreA, scoreB) = (try Checkpoint.TrainedModel(path: perRank), try Checkpoint.TrainedModel(path: funnel))
        #expect(Array(scoreA.embeddingTable.buffer) == Array(scoreB.embeddingTable.buffer))
        #expect(Array(scoreA.parameters.buffer) == Array(scoreB.parameters.buffer))
        // export writes the same weights file from either.
        let (outA, outB) = (perRank + "/export", funnel + "/export")
        try ModelExport.write(scoreA, dataset: nil, to: outA)
        try ModelExport.write(scoreB, dataset: nil, to: outB)
        let exported = try [outA, outB].map { try Data(contentsOf: URL(fileURLWithPath: $0 + "/model.safetensors")) }
        #expect(exported[0] == exported[1], "the exports' model.safetensors differ (\(exported[0].count) and \(exported[1].count) bytes)")
    }

    /// 6 steps on one plan, 6 more on another number of ranks and another plan, from a
    /// per-rank checkpoint and from a funnel one: both equal 12 straight replicated steps.
    @Test func resumeEitherFormatElsewhere() throws {
        let reference = try Self.train(ranks: 1, nil, steps: 12, checkpoint: ShardedTrainingTests.directory())
        for (first, then, funnel) in [((3, EmbeddingSharding.table), (2, EmbeddingSharding.row), false),
                                      ((2, .row), (3, .table), true), ((3, .row), (1, nil), false)] {
            let dir = ShardedTrainingTests.directory()
            _ = try Self.train(ranks: first.0, first.1, steps: 6, checkpoint: dir, funnel: funnel)
            #expect(try CheckpointDirectory.shardFiles(Checkpoint.resolve(dir)).count == (funnel ? 0 : first.0))
            let resumed = try Self.train(ranks: then.0, then.1, steps: 12, checkpoint: dir, resume: true)
            #expect(ShardedTrainingTests.worst(reference, resumed) <= 1e-5, "\(first) -> \(then), funnel \(funnel)")
        }
    }

    /// Bitwise: resuming at another number of ranks and another plan from a per-rank checkpoint
    /// equals resuming the same way from the funnel checkpoint of the same run (the same state
    /// in other files), and resuming on the same ranks and plan equals the run never stopped.
    @Test func resumeIsBitwise() throws {
        let straight = try Self.train(ranks: 2, .row, steps: 12, checkpoint: ShardedTrainingTests.directory())
        let again = ShardedTrainingTests.directory()
        _ = try Self.train(ranks: 2, .row, steps: 6, checkpoint: again)
        #expect(ShardedTrainingTests.worst(straight, try Self.train(ranks: 2, .row, steps: 12, checkpoint: again, resume: true)) == 0)
        // The last: 2 hash buckets, so rank 2 of 3 receives no row.
        for (first, then, buckets) in [((2, EmbeddingSharding.row), (3, EmbeddingSharding?.some(.table)), 97), ((3, .table), (2, .row), 97),
                                       ((3, .row), (1, nil), 97), ((2, .table), (1, .row), 97), ((2, .row), (3, .row), 2)] {
            let (perRank, funnel) = (ShardedTrainingTests.directory(), ShardedTrainingTests.directory())
            _ = try Self.train(ranks: first.0, first.1, steps: 6, checkpoint: perRank, hashBuckets: buckets)
            _ = try Self.train(ranks: first.0, first.1, steps: 6, checkpoint: funnel, funnel: true, hashBuckets: buckets)
            let a = try Self.train(ranks: then.0, then.1, steps: 12, checkpoint: perRank, resume: true, hashBuckets: buckets)
            let b = try Self.train(ranks: then.0, then.1, steps: 12, checkpoint: funnel, resume: true, hashBuckets: buckets)
            #expect(ShardedTrainingTests.worst(a, b) == 0, "\(first) -> \(then)")
        }
    }

    /// A rank that cannot write its shard file: nothing is committed, the temporary directory is
    /// gone, the previous checkpoint and `latest` are untouched, and every rank stops (or, with
    /// --continue-on-checkpoint-failure, goes on) together.
    @Test(arguments: [false, true])
    func failingRankCommitsNothing(continueOnFailure: Bool) throws {
        let root = ShardedTrainingTests.directory()
        _ = try Self.train(ranks: 2, .row, steps: 3, checkpoint: root)
        let previous = try Checkpoint.resolve(root)
        let files = try FileManager.default.contentsOfDirectory(atPath: previous).sorted()
        let bytes = try files.map { try Data(contentsOf: URL(fileURLWithPath: previous + "/" + $0)) }
        let run = Result {
            try ShardedTrainingTests.train(data: Self.data.get(), model: .dlrm, ranks: 2, sharding: .row, steps: 6, checkpoint: root,
                                           resume: true, failingShardRank: 1, continueOnCheckpointFailure: continueOnFailure)
        }
        if continueOnFailure {
            #expect(throws: Never.self) { try run.get() }
        } else {
            #expect(throws: (any Error).self) { try run.get() }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.hasPrefix("step-") || $0.contains(".tmp") } == ["step-00000003"])
        #expect(CheckpointDirectory.latest(in: root) == "step-00000003")
        #expect(try files.map { try Data(contentsOf: URL(fileURLWithPath: previous + "/" + $0)) } == bytes)
        _ = try Checkpoint.validate(previous)
    }

    /// Rank 0 lists a shard file another rank reported only when it finds it in the temporary
    /// directory with the reported size (the ranks see the same directory); otherwise nothing is
    /// committed.
    @Test func commitChecksTheReportedShardFiles() throws {
        let root = ShardedTrainingTests.directory(), name = CheckpointDirectory.shardName(rank: 1, of: 2)
        for (written, reported) in [(nil, 8), (12, 8), (8, 8)] as [(Int?, Int)] {
            let writer = try CheckpointWriter(root: root, name: "step-00000001")
            if let written { try Data(count: written).write(to: URL(fileURLWithPath: writer.temporary + "/" + name)) }
            if written == reported {
                try writer.add(name, crc: 0, size: reported)
                _ = try writer.commit()
                #expect(CheckpointDirectory.latest(in: root) == "step-00000001")
                continue
            }
            let error = #expect(throws: CheckpointError.self, "written \(String(describing: written))") { try writer.add(name, crc: 0, size: reported) }
            #expect(error?.path.hasSuffix(name) == true && error?.message.contains("reported 8 bytes written") == true, "\(String(describing: error))")
            writer.abandon()
            #expect(CheckpointDirectory.latest(in: root) == nil)
            #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
        }
    }

    /// A shard file over 4 GiB (a sparse file here) is listed in CHECKSUMS with its whole size and
    /// the checkpoint validates; a 32-bit format once wrote 5 GiB + 1 as 1073741825 and the
    /// checkpoint of a 10 GiB model was refused as truncated right after it was written.
    @Test func shardFilesOver4GiBAreListedWhole() throws {
        let root = ShardedTrainingTests.directory(), name = CheckpointDirectory.shardName(rank: 1, of: 2)
        let size = 5 << 30 + 1
        let writer = try CheckpointWriter(root: root, name: "step-00000001")
        let path = writer.temporary + "/" + name
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        #expect(truncate(path, off_t(size)) == 0)
        try writer.add(name, crc: 0xab, size: size)
        let committed = try writer.commit()
        let checksums = try String(contentsOfFile: committed + "/CHECKSUMS", encoding: .utf8)
        #expect(checksums == "000000ab \(size) \(name)\n", "\(checksums)")
        try? FileManager.default.removeItem(atPath: root)
    }

    /// A truncated, flipped or missing shard file is refused naming it: by CHECKSUMS when
    /// validated, scored and resumed from, and (checksums recomputed, as a hand edit would) by its
    /// header or by the list of shard files when scored and resumed from.
    @Test(arguments: [false, true])
    func damagedShardIsNamed(recomputeChecksums: Bool) throws {
        let root = ShardedTrainingTests.directory()
        _ = try Self.train(ranks: 2, .row, steps: 3, checkpoint: root)
        let dir = try Checkpoint.resolve(root), name = CheckpointDirectory.shardName(rank: 1, of: 2)
        let path = dir + "/" + name
        let whole = try Data(contentsOf: URL(fileURLWithPath: path))
        var flipped = whole
        flipped[whole.count - 3] ^= 0x10
        // (what, contents: nil removes the file); a flipped value with recomputed checksums is a
        // valid file holding other weights, which nothing can tell apart.
        let damages: [(String, Data?)] = [whole.count / 2, 12, whole.count - 4].map { ("cut at \($0)", whole.prefix($0)) }
            + [("missing", nil)] + (recomputeChecksums ? [] : [("flipped", flipped)])
        for (damage, contents) in damages {
            if let contents { try contents.write(to: URL(fileURLWithPath: path)) } else { try FileManager.default.removeItem(atPath: path) }
            if recomputeChecksums { try CheckpointFuzzSupport.rewriteChecksums(dir) }
            for (what, attempt) in [("validate", { _ = try Checkpoint.validate(dir) }),
                                    ("score", { _ = try Checkpoint.TrainedModel(path: dir) }),
                                    ("resume", { _ = try Self.train(ranks: 3, .table, steps: 6, checkpoint: root, resume: true) })]
                as [(String, () throws -> Void)] {
                // With checksums that match, validating does not read the tensors; loading them does.
                if recomputeChecksums && what == "validate" && contents != nil { continue }
                let error = #expect(throws: (any Error).self, "\(what), \(damage)") { try attempt() }
                #expect("\(error.map { "\($0)" } ?? "")".contains(name), "\(what), \(damage): \(error.map { "\($0)" } ?? "")")
            }
            try whole.write(to: URL(fileURLWithPath: path))
            if recomputeChecksums { try CheckpointFuzzSupport.rewriteChecksums(dir) }
        }
        // Repaired, it loads: the refusals were the damage's.
        _ = try Checkpoint.TrainedModel(path: dir)
    }
}

/// CHECKSUMS as a hand edit would leave them: recomputed for every file the checkpoint holds.
enum CheckpointFuzzSupport {
    static func rewriteChecksums(_ dir: String) throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0 != "CHECKSUMS" }.sorted()
        let lines = try names.map { name -> String in
            let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name))
            var crc = CRC32()
            data.withUnsafeBytes { crc.update($0) }
            return String(format: "%08x %d %@", crc.value, data.count, name)
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: dir + "/CHECKSUMS", atomically: true, encoding: .utf8)
    }
}
