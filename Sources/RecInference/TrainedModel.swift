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
        public init(path: String, maxBatch: Int = 1024) throws {
            directory = try Checkpoint.resolve(path)
            let state = try Checkpoint.validate(directory)
            config = state.config.model
            training = state.config
            model = makeModel(config, maxBatch: maxBatch)
            parameters = FloatBuffer(count: model.layout.count)
            let tables = model.embeddings
            embeddingTable = FloatBuffer(count: (tables?.rowCount ?? 0) * (tables?.dim ?? 1))
            try CheckpointDirectory.readModelTensors(directory, layout: model.layout, parameters: parameters, tables: tables,
                                                     embeddingTable: embeddingTable,
                                                     cause: "they do not fit the model configuration the checkpoint itself records (a damaged or hand-edited checkpoint)")
        }

        /// Click probabilities for `rows`.
        public func predict(_ rows: CriteoRows) -> [Float] {
            Trainer.predictions(model: model, rows: rows, parameters: parameters.pointer, embeddingTable: embeddingTable.pointer)
        }
    }
}
