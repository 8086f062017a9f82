import Foundation
import RecCheckpoint
import RecCore
import RecData

/// Checkpoints of a run with sharded tables whose ranks share the checkpoint directory: every
/// rank writes its own rows to its own shard file, and rank 0 commits the checkpoint once all of
/// them are written (one atomic step, as for any checkpoint). When the ranks do not share the
/// directory, rank 0 writes the whole tables, their rows travelling to it (`writeSharded`).
extension Trainer {
    /// Whether every rank sees the checkpoint directory rank 0 writes to, decided once per run:
    /// rank 0 writes a marker holding a random nonce under `root`, every rank reads it back, and
    /// the answer is the AND over ranks (an error anywhere is a no). Collective.
    func sharesCheckpointDirectory(_ root: String, books: inout RunBooks) throws -> Bool {
        if let known = books.sharedCheckpointDirectory { return known }
        let nonce = String(UInt64.random(in: 1...UInt64.max), radix: 16)
        let marker = URL(fileURLWithPath: root).standardizedFileURL.path + "/.ranks-share-" + nonce
        var written = false
        if rank == 0 && !funnelCheckpoints {
            try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            written = (try? replaceFile(at: marker, with: Array(nonce.utf8))) != nil
        }
        let announced = String(decoding: try communicator.broadcastBytes(written ? Array(marker.utf8) : []), as: UTF8.self)
        let seen = !announced.isEmpty && (try? String(contentsOfFile: announced, encoding: .utf8)) == announced.components(separatedBy: "-").last
        let shared = try communicator.allreduceMax([seen ? 0 : 1])[0] == 0
        if rank == 0 {
            if written { unlink(marker) }
            let why = funnelCheckpoints ? "REC_DIST_FUNNEL_CHECKPOINTS=1" : "the ranks do not share the directory"
            logger.info(shared ? "checkpoints: every rank writes its rows of the sharded tables to its own file in \(root) (a directory all ranks share)"
                               : "checkpoints: rank 0 writes the whole tables to \(root), the sharded rows travelling to it (\(why))")
        }
        books.sharedCheckpointDirectory = shared
        return shared
    }

    /// Every rank: writes checkpoint `saved` (given on rank 0, nil elsewhere) with per-rank shard
    /// files. Rank 0 creates the temporary directory and announces it with the checkpoint's shard
    /// set (a random id every file of this checkpoint carries); every rank writes its
    /// shard file there (fsynced) and reports its size and CRC-32 to rank 0, which writes the
    /// dense files meanwhile, then commits only if every rank succeeded and it finds every shard
    /// file with its reported size, or removes the directory.
    /// Returns the checkpoint's path on rank 0. Collective, whatever fails on any rank.
    func writePerRankCheckpoint(root: String, saved: Checkpoint.State?, buffers: Checkpoint.Buffers) throws -> String? {
        var failure: (any Error)?
        var writer: CheckpointWriter?
        if let saved {
            do { writer = try CheckpointWriter(root: root, name: Checkpoint.name(step: saved.step)) } catch { failure = error }
        }
        let directory = String(decoding: try communicator.broadcastBytes(Array((writer?.temporary ?? "").utf8)), as: UTF8.self)
        let shardSet = String(decoding: try communicator.broadcastBytes(rank == 0 ? Array(UUID().uuidString.utf8) : []), as: UTF8.self)
        // Reports by rank: (written, CRC-32, size), exact in doubles, summed from one rank each.
        var reports = [Double](repeating: 0, count: 3 * worldSize)
        if !directory.isEmpty {
            do {
                if failingShardRank == rank {
                    throw TrainingError.checkpoint(path: directory + "/" + CheckpointDirectory.shardName(rank: rank, of: worldSize), message: "no space left on device (injected)")
                }
                let (crc, size) = try Checkpoint.writeShardFile(in: directory, rank: rank, shardSet: shardSet, buffers: buffers)
                reports.replaceSubrange(3 * rank..<3 * rank + 3, with: [1, Double(crc), Double(size)])
            } catch {
                failure = error
            }
        }
        if let writer, let saved, failure == nil {
            do { try Checkpoint.writeDenseFiles(writer, state: saved, buffers: buffers, shardSet: shardSet) } catch { failure = error }
        }
        reports = try communicator.allreduceSum(reports)
        guard let saved else {
            if let failure { throw failure }
            return nil
        }
        do {
            if let failure { throw failure }
            let failed = (0..<worldSize).filter { reports[3 * $0] != 1 }
            guard failed.isEmpty, let writer else {
                throw TrainingError.checkpoint(path: directory, message: "rank(s) \(failed.map(String.init).joined(separator: ", ")) could not write their shard files (each says why in its log); nothing was committed")
            }
            for r in 0..<worldSize {
                try writer.add(CheckpointDirectory.shardName(rank: r, of: worldSize), crc: UInt32(reports[3 * r + 1]), size: Int(reports[3 * r + 2]))
            }
            return try writer.commit()
        } catch {
            writer?.abandon()
            throw Checkpoint.failure(error, root: root, step: saved.step)
        }
    }
}
