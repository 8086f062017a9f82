import Foundation
import RecCheckpoint
import RecCore
import RecData
import RecTrainer

extension Checkpoint {
    /// A trained model ready to score: its configuration and weights, from a validated checkpoint.
    public final class TrainedModel {
        public let directory: String
        public let config: ModelConfig
        /// The whole training configuration (data path, the prepared dataset's schema hash...).
        public let training: TrainingConfig
        public let model: any RecModel
        public let parameters: FloatBuffer
        public let embeddingTable: FloatBuffer

        /// Loads the checkpoint at `path` (a step directory, or a root with `latest`) for
        /// scoring batches of up to `maxBatch` rows.
        ///
        /// A root may be written to while it is read: a training run moves `latest` on and prunes
        /// older checkpoints. If the checkpoint `latest` named fails to load and `latest` has
        /// moved on meanwhile (or the checkpoint is gone), the new `latest` is loaded instead (up
        /// to five times: a run writing a checkpoint every step can prune several in a row while
        /// one is validated, checked against the memory and read).
        public init(path: String, maxBatch: Int = 1024) throws {
            var directory = try Checkpoint.resolve(path)
            var loaded: Loaded?
            for attempt in 1...6 {
                do {
                    loaded = try Self.load(directory, maxBatch: maxBatch)
                    break
                } catch {
                    let name = (directory as NSString).lastPathComponent
                    guard attempt < 6, directory != path,
                          CheckpointDirectory.latest(in: path) != name || !FileManager.default.fileExists(atPath: directory) else {
                        throw error
                    }
                    directory = try Checkpoint.resolve(path)
                }
            }
            guard let loaded else { preconditionFailure("the last attempt returns or throws") }
            self.directory = directory
            (training, model, parameters, embeddingTable) = (loaded.training, loaded.model, loaded.parameters, loaded.embeddingTable)
            config = training.model
        }

        private typealias Loaded = (training: TrainingConfig, model: any RecModel, parameters: FloatBuffer, embeddingTable: FloatBuffer)

        /// Validates checkpoint `directory` and reads its weights into a model built from the
        /// configuration it records.
        private static func load(_ directory: String, maxBatch: Int) throws -> Loaded {
            let state = try Checkpoint.validate(directory)
            // Nothing large is allocated before the model is known to fit this machine.
            let bytes = ModelMemory(model: state.config.model, maxBatch: maxBatch).inference
            let available = ModelMemory.availableToThisRank()
            if bytes.total > available.bytes {
                let shards = try CheckpointDirectory.shardFiles(directory)
                let assembled = shards.isEmpty ? "" : " (its tables are in \(shards.count) per-rank shard files and are assembled whole to score)"
                throw TrainingError.modelConfig("the model in '\(directory)' (trainer.json: \(state.config.model.kind.rawValue)) needs \(ByteCount.format(bytes.total)) to score (\(bytes))\(assembled), more than the \(ByteCount.format(available.bytes)) of \(available.source); use a machine with more memory")
            }
            let model = makeModel(state.config.model, maxBatch: maxBatch)
            let parameters = FloatBuffer(count: model.layout.count)
            let tables = model.embeddings
            let embeddingTable = FloatBuffer(count: (tables?.rowCount ?? 0) * (tables?.dim ?? 1))
            try CheckpointDirectory.readModelTensors(directory, layout: model.layout, parameters: parameters, tables: tables,
                                                     embeddingTable: embeddingTable,
                                                     cause: "they do not fit the model configuration the checkpoint itself records (a damaged or hand-edited checkpoint)")
            return (state.config, model, parameters, embeddingTable)
        }

        /// Click probabilities for `rows`.
        public func predict(_ rows: CriteoRows) -> [Float] {
            Trainer.predictions(model: model, rows: rows, parameters: parameters.pointer, embeddingTable: embeddingTable.pointer)
        }
    }
}
