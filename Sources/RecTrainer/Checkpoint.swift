import Foundation
import RecCore

/// A checkpoint directory: `model.safetensors` (the dense tensors by layout name, and each
/// field's embedding table as `embedding.C<k>`, shape (buckets, dim)), `optimizer.safetensors`
/// and `trainer.json` (the run's configuration, step and last evaluation).
///
/// Writing is atomic: everything goes into a temporary directory beside the target, each file is
/// fsynced, then the directory is renamed into place and the parent fsynced; a crash leaves either
/// the previous checkpoint or the new one, never half of one. `latest` names the newest.
public enum Checkpoint {
    public static let formatVersion = 1

    struct TrainerState: Codable {
        var formatVersion: Int
        var step: Int
        var worldSize: Int
        var config: TrainingConfig
        var optimizerStep: Int
        var evaluation: EvaluationRecord?
    }

    /// Writes step `step`'s checkpoint under `directory` and returns its path.
    static func write(directory: String, step: Int, worldSize: Int, config: TrainingConfig, layout: ParameterLayout,
                      parameters: FloatBuffer, embeddingTable: FloatBuffer?, embeddingTables: EmbeddingTables?,
                      optimizer: Optimizer, evaluation: EvaluationRecord?) throws -> String {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw TrainingError.checkpoint(path: directory, message: "cannot create the directory (\(error.localizedDescription)); choose a writable --checkpoint-dir")
        }
        let name = String(format: "step-%08d", step)
        let final = (directory as NSString).appendingPathComponent(name)
        let temporary = (directory as NSString).appendingPathComponent(".\(name).tmp-\(getpid())")
        try? fm.removeItem(atPath: temporary)
        do {
            try fm.createDirectory(atPath: temporary, withIntermediateDirectories: false)
            var tensors = layout.entries.map { e in
                SafeTensors.Tensor(name: e.name, shape: e.shape,
                                   values: Array(UnsafeBufferPointer(start: parameters.pointer + e.offset, count: e.count)))
            }
            if let table = embeddingTable, let t = embeddingTables {
                for f in 0..<t.fields {
                    tensors.append(SafeTensors.Tensor(name: "embedding.C\(f + 1)", shape: [t.buckets, t.dim],
                        values: Array(UnsafeBufferPointer(start: table.pointer + f * t.buckets * t.dim, count: t.buckets * t.dim))))
                }
            }
            let configJSON = String(decoding: try JSONEncoder().encode(config.model), as: UTF8.self)
            let metadata = ["format": "rec-dist", "format_version": "\(formatVersion)", "step": "\(step)", "model": configJSON]
            try writeSynced(try SafeTensors.encode(tensors, metadata: metadata), to: temporary + "/model.safetensors")
            let state = optimizer.stateBuffers().map { SafeTensors.Tensor(name: $0.name, shape: [$0.values.count], values: $0.values) }
            try writeSynced(try SafeTensors.encode(state, metadata: ["step": "\(optimizer.step)"]), to: temporary + "/optimizer.safetensors")
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
            let trainer = TrainerState(formatVersion: formatVersion, step: step, worldSize: worldSize, config: config,
                                       optimizerStep: optimizer.step, evaluation: evaluation)
            try writeSynced(try encoder.encode(trainer), to: temporary + "/trainer.json")
            try fsyncPath(temporary)
            if fm.fileExists(atPath: final) { try fm.removeItem(atPath: final) }
            guard rename(temporary, final) == 0 else {
                throw TrainingError.checkpoint(path: final, message: "rename failed: \(String(cString: strerror(errno)))")
            }
            try writeSynced(Data((name + "\n").utf8), to: directory + "/.latest.tmp")
            guard rename(directory + "/.latest.tmp", directory + "/latest") == 0 else {
                throw TrainingError.checkpoint(path: directory + "/latest", message: "rename failed: \(String(cString: strerror(errno)))")
            }
            try fsyncPath(directory)
        } catch let error as TrainingError {
            try? fm.removeItem(atPath: temporary)
            throw error
        } catch {
            try? fm.removeItem(atPath: temporary)
            throw TrainingError.checkpoint(path: final, message: "\(error.localizedDescription); the previous checkpoint, if any, is intact")
        }
        return final
    }

    /// Reads the dense tensors and embedding tables of a checkpoint directory (or of its
    /// `latest` checkpoint when given the parent directory).
    public static func readModel(at path: String) throws -> (model: ModelConfig, tensors: [SafeTensors.Tensor]) {
        var dir = path
        let latest = (path as NSString).appendingPathComponent("latest")
        if let name = try? String(contentsOfFile: latest, encoding: .utf8) {
            dir = (path as NSString).appendingPathComponent(name.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let file = (dir as NSString).appendingPathComponent("model.safetensors")
        guard let data = FileManager.default.contents(atPath: file) else {
            throw TrainingError.checkpoint(path: file, message: "cannot read the file; pass a checkpoint directory written by `rec-dist train --checkpoint-dir`")
        }
        let (tensors, metadata) = try SafeTensors.decode(data, path: file)
        guard metadata["format"] == "rec-dist", let json = metadata["model"],
              let model = try? JSONDecoder().decode(ModelConfig.self, from: Data(json.utf8)) else {
            throw TrainingError.checkpoint(path: file, message: "no rec-dist model description in the metadata")
        }
        return (model, tensors)
    }

    private static func writeSynced(_ data: Data, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw TrainingError.checkpoint(path: path, message: "cannot create: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        try data.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw TrainingError.checkpoint(path: path, message: "write failed: \(String(cString: strerror(errno)))")
                }
                done += n
            }
        }
        guard fsync(fd) == 0 else { throw TrainingError.checkpoint(path: path, message: "fsync failed: \(String(cString: strerror(errno)))") }
    }

    private static func fsyncPath(_ path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return }
        defer { close(fd) }
        _ = fsync(fd)
    }
}
