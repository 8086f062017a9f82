import Foundation
import RecCore

extension Trainer {
    /// Decides where the run starts. Rank 0 finds, validates and loads the checkpoint into
    /// `buffers`; every rank learns the outcome (the checkpoint's state, or nil to start fresh).
    func resumeState(into buffers: Checkpoint.Buffers) throws -> Checkpoint.State? {
        guard config.resume != nil || config.autoResume else { return nil }
        var failure: (any Error)?
        var payload = Data()
        if rank == 0 {
            do {
                if let state = try findAndLoad(into: buffers) { payload = try Checkpoint.jsonEncoder().encode(state) }
            } catch {
                failure = error
            }
        }
        try agree(failure, stage: "resuming from a checkpoint")
        let bytes = try communicator.broadcastBytes([UInt8](payload))
        guard !bytes.isEmpty else { return nil }
        // Non-finite metrics (a NaN logloss without evaluation rows, an infinite calibration
        // when every evaluation label is 0) travel as strings, as in trainer.json.
        var state = try Checkpoint.jsonDecoder().decode(Checkpoint.State.self, from: Data(bytes))
        if config.restartData == true {
            // --restart-data: the model, optimizer and step go on; the data starts at its first row.
            if rank == 0 { logger.info("--restart-data: the data starts from its first row (epoch 1), the model and optimizer continue from step \(state.step)") }
            (state.epoch, state.epochRowOffset, state.data) = (0, 0, nil)
        }
        return state
    }

    private func findAndLoad(into buffers: Checkpoint.Buffers) throws -> Checkpoint.State? {
        var found: (dir: String, state: Checkpoint.State)?
        if let resume = config.resume {
            let path: String
            if resume == "latest" {
                guard let root = config.checkpointDir else {
                    throw TrainingError.checkpoint(path: "latest", message: "--resume latest needs --checkpoint-dir")
                }
                path = root
            } else {
                path = resume
            }
            let dir = try Checkpoint.resolve(path)
            found = (dir, try Checkpoint.validate(dir))
        } else if let root = config.checkpointDir {
            found = Checkpoint.newestValid(root: root) { logger.warning("\($0)") }
            if found == nil { logger.info("no valid checkpoint in \(root): starting from scratch") }
        }
        guard let (dir, state) = found else { return nil }
        let saved = state.config
        guard saved.model == config.model else {
            throw TrainingError.checkpoint(path: dir, message: "it was written for a different model (\(describe(saved.model))) than this run asks for (\(describe(config.model))): \(Self.differences(saved.model, config.model)); pass the same model flags and data, or use a new --checkpoint-dir")
        }
        guard saved.optimizer.kind == config.optimizer.kind else {
            throw TrainingError.checkpoint(path: dir, message: "it holds \(saved.optimizer.kind.rawValue) optimizer state, this run asks for --optimizer \(config.optimizer.kind.rawValue)")
        }
        try Checkpoint.load(dir, state: state, into: buffers)
        resumedDirectory = dir
        let savedGlobal = saved.batchSize * state.worldSize, global = config.batchSize * worldSize
        logger.info("resuming from \(dir): step \(state.step), epoch \(state.epoch + 1), \(state.epochRowOffset) rows into it")
        if saved.optimizer.accumulate != config.optimizer.accumulate || saved.optimizer.schedule != config.optimizer.schedule
            || saved.optimizer.scaleByWorldSize != config.optimizer.scaleByWorldSize {
            logger.warning("the checkpoint was trained with --accumulate \(saved.optimizer.accumulate) and schedule \(saved.optimizer.schedule.summary)\(saved.optimizer.scaleByWorldSize ? " scaled by world size" : ""), this run uses --accumulate \(config.optimizer.accumulate) and \(config.optimizer.schedule.summary)\(config.optimizer.scaleByWorldSize ? " scaled by world size" : ""): training continues, but will not match an uninterrupted run")
        }
        if savedGlobal != global {
            logger.warning("the checkpoint was trained with a global batch of \(savedGlobal) (\(state.worldSize) x \(saved.batchSize)), this run uses \(global) (\(worldSize) x \(config.batchSize)): training continues from the same data position, but will not match an uninterrupted run")
        }
        return state
    }

    /// The configuration keys whose values differ, with both values ("hashBuckets: checkpoint
    /// 400, this run 300"), so that a mismatch the short descriptions do not show (the data's
    /// field count or vocabulary sizes) is said.
    static func differences(_ saved: ModelConfig, _ current: ModelConfig) -> String {
        func object(_ m: ModelConfig) -> [String: Any] {
            (try? JSONSerialization.jsonObject(with: JSONEncoder().encode(m))) as? [String: Any] ?? [:]
        }
        func text(_ value: Any?) -> String {
            guard let value, !(value is NSNull) else { return "none" }
            guard JSONSerialization.isValidJSONObject([value]), let data = try? JSONSerialization.data(withJSONObject: [value], options: [.sortedKeys]) else {
                return "\(value)"
            }
            let all = String(decoding: data, as: UTF8.self).dropFirst().dropLast()
            return all.count > 60 ? String(all.prefix(57)) + "..." : String(all)
        }
        let a = object(saved), b = object(current)
        let keys = Set(a.keys).union(b.keys).sorted().filter { text(a[$0]) != text(b[$0]) }
        return keys.map { "\($0): checkpoint \(text(a[$0])), this run \(text(b[$0]))" }.joined(separator: "; ")
    }

    private func describe(_ m: ModelConfig) -> String {
        switch m.kind {
        case .mlp: return "mlp \(m.hidden)"
        case .dlrm: return "dlrm buckets \(m.hashBuckets) dim \(m.embeddingDim) bottom \(m.bottom) top \(m.top)"
        case .logreg: return "logreg buckets \(m.hashBuckets)"
        case .wideDeep: return "wide-deep buckets \(m.hashBuckets) dim \(m.embeddingDim) hidden \(m.hidden)"
        case .ncf: return "ncf factors \(m.factors) dim \(m.embeddingDim) hidden \(m.hidden)"
        case .twoTower: return "two-tower dim \(m.embeddingDim) hidden \(m.hidden) factors \(m.factors)"
        }
    }
}
