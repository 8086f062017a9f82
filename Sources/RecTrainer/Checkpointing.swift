import Foundation
import RecCheckpoint
import RecCore

extension Trainer {
    /// Rank 0 writes a checkpoint of the current state (once per step); all ranks agree on the
    /// outcome. A new best evaluation at this step becomes the `best` checkpoint.
    func writeCheckpoint(state: inout RunState, policy: CheckpointPolicy, buffers: Checkpoint.Buffers,
                         books: inout RunBooks) throws {
        guard let root = config.checkpointDir, books.checkpointedStep != state.step else { return }
        let perRank = try buffers.sharding != nil && sharesCheckpointDirectory(root, books: &books)
        var failure: (any Error)?
        if rank == 0 {
            do {
                let started = MonotonicClock.nanoseconds()
                let name = Checkpoint.name(step: state.step)
                let record = books.lastRecord.flatMap { $0.step == state.step ? $0 : nil }
                // `best` only ever names a checkpoint that was written and verified: a failed
                // write leaves the previous best in place.
                var candidate = state
                policy.noteCandidate(name, record: record, in: &candidate)
                let saved = Checkpoint.State(
                    formatVersion: Checkpoint.formatVersion, step: state.step, epoch: state.epoch, epochRowOffset: state.offset,
                    samplesSeen: state.samplesSeen, worldSize: worldSize, optimizerStep: buffers.optimizer.step,
                    evaluation: record, bestMetric: candidate.bestMetric, bestCheckpoint: candidate.bestCheckpoint, config: config,
                    earlyStopBest: state.earlyStopBest, evaluationsSinceBest: state.evaluationsSinceBest,
                    lineage: books.lineage, data: books.data)
                let path = perRank ? try writePerRankCheckpoint(root: root, saved: saved, buffers: buffers)!
                                   : try Checkpoint.write(root: root, state: saved, buffers: buffers)
                // Written and committed, every rank's rows included.
                let seconds = Double(MonotonicClock.nanoseconds() - started) / 1e9
                if candidate.bestCheckpoint == name {
                    try Checkpoint.reported { try CheckpointDirectory.verify(path) }
                    try Checkpoint.writePointer(root: root, file: "best", to: name)
                }
                state = candidate
                let removed = Checkpoint.prune(root: root, keep: config.keep, protected: state.bestCheckpoint, lineage: books.lineage)
                books.lastCheckpoint = path
                logger.info("checkpoint written to \(path) in \(String(format: "%.2f", seconds)) s\(removed.isEmpty ? "" : " (removed \(removed.joined(separator: ", ")))")")
            } catch {
                failure = error
            }
        } else if perRank {
            do { _ = try writePerRankCheckpoint(root: root, saved: nil, buffers: buffers) } catch { failure = error }
        } else if buffers.sharding != nil {
            do { try Checkpoint.sendShards(buffers: buffers) } catch { failure = error }
        }
        books.checkpointedStep = state.step
        books.lastCheckpointTime = Date()
        let verdict = try communicator.allreduceMax([failure == nil ? 0 : 1])
        if verdict[0] != 0 {
            if config.continueOnCheckpointFailure {
                if let failure { logger.warning("\(failure); training continues (--continue-on-checkpoint-failure)") }
                return
            }
            if let failure { throw failure }
            throw TrainingError.peerFailed(ranks: [0], stage: "checkpoint writing")
        }
    }
}
