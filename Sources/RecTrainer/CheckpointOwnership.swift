import Foundation
import RecCheckpoint
import RecData

/// Whose checkpoints are whose: one run owns its `--checkpoint-dir` (a `CheckpointLock` held by
/// rank 0), every checkpoint names its run's lineage and its data, and pruning removes only
/// checkpoints of the run's own lineage.
extension Trainer {
    /// Rank 0 takes the lock of `--checkpoint-dir` for the run and removes what interrupted
    /// writes of dead processes left there. A fresh run (neither `--resume` nor `--auto-resume`)
    /// is refused in a directory that already holds checkpoints: its step numbers would replace
    /// theirs. Every rank learns the outcome; the lock is held until released or the process ends.
    func claimCheckpointDirectory() throws -> CheckpointLock? {
        guard let root = config.checkpointDir else { return nil }
        var failure: (any Error)?
        var lock: CheckpointLock?
        if rank == 0 {
            do {
                lock = try Self.lock(root)
                let removed = CheckpointDirectory.removeStaleTemporaries(root: root)
                if !removed.isEmpty { logger.info("removed what interrupted checkpoint writes left in \(root): \(removed.joined(separator: ", "))") }
                let existing = Checkpoint.list(root: root)
                if config.resume == nil && !config.autoResume, let newest = existing.last {
                    throw TrainingError.checkpointConflict(path: root, message: "it already holds \(existing.count) checkpoint(s) of an earlier run (newest \(newest)), which this run's would replace or prune. Continue that run with --auto-resume, or give this run a new --checkpoint-dir (or remove those checkpoints)")
                }
            } catch {
                lock?.release()
                lock = nil
                failure = error
            }
        }
        try agree(failure, stage: "claiming --checkpoint-dir")
        return lock
    }

    /// The lock of `root`; another run's lock is a conflict (a usage error), other failures
    /// are checkpoint errors.
    private static func lock(_ root: String) throws -> CheckpointLock {
        let result = Result { () throws(CheckpointError) in try CheckpointLock(root: root) }
        switch result {
        case let .success(lock): return lock
        case let .failure(error) where error.message.hasPrefix(CheckpointLock.heldElsewhere):
            throw TrainingError.checkpointConflict(path: error.path, message: error.message)
        case let .failure(error): throw TrainingError.checkpoint(path: error.path, message: error.message)
        }
    }

    /// The lineage this run's checkpoints carry (the resumed checkpoint's, or a new one) and, on
    /// rank 0, the identity of its data. A resume on data other than its checkpoint's is refused
    /// (every rank decides alike from the state and the rows) unless `--restart-data` started the
    /// data from its beginning.
    func identifyRun(resumed: Checkpoint.State?, data: TrainingData) throws -> (lineage: String, data: DataIdentity?) {
        let rows = data.source.rows
        var identity: DataIdentity?
        var failure: (any Error)?
        if rank == 0 {
            do {
                let current = try DataIdentity(path: config.dataPath, prepared: config.usesPreparedData, rows: rows)
                identity = current
                // An older checkpoint's fingerprint is compared with one taken the same way.
                let comparable = { (saved: DataIdentity) throws -> DataIdentity in
                    let scheme = saved.scheme ?? 1
                    return scheme == current.scheme ? current
                        : try DataIdentity(path: self.config.dataPath, prepared: self.config.usesPreparedData, rows: rows, scheme: scheme)
                }
                if let resumed, let saved = resumed.data, case let differences = saved.differences(from: try comparable(saved)), !differences.isEmpty {
                    throw TrainingError.checkpointConflict(path: config.resume ?? config.checkpointDir ?? "", message: "it was trained on other data: \(differences.joined(separator: "; ")). Resume it with the same --data, pass --restart-data to continue the model on this data from its first row, or use a new --checkpoint-dir")
                }
            } catch {
                failure = error
            }
        }
        try agree(failure, stage: "checking the data against the checkpoint")
        if let resumed, resumed.epochRowOffset >= rows {
            throw TrainingError.checkpointConflict(path: config.resume ?? config.checkpointDir ?? "", message: "its data position (\(resumed.epochRowOffset) rows into epoch \(resumed.epoch + 1)) lies beyond this data's \(rows) training rows: it was trained on other data. Resume it with the same --data, or pass --restart-data to start this data from its first row")
        }
        return (resumed?.lineage ?? UUID().uuidString, identity)
    }
}

extension Checkpoint {
    /// The lineage recorded in `dir/trainer.json`, or nil (unreadable, or an older checkpoint).
    static func lineage(of dir: String) -> String? {
        struct Lineage: Decodable { var lineage: String? }
        guard let bytes = try? MappedFile.contents(of: dir + "/trainer.json") else { return nil }
        return (try? jsonDecoder().decode(Lineage.self, from: Data(bytes)))?.lineage
    }

    /// Removes all but the newest `keep` checkpoints of `lineage`, never removing `protected`
    /// (the best) nor another run's checkpoints. Returns the names removed.
    @discardableResult
    static func prune(root: String, keep: Int, protected: String?, lineage: String) -> [String] {
        CheckpointDirectory.prune(root: root, keep: keep, protected: protected) { Self.lineage(of: root + "/" + $0) == lineage }
    }
}
