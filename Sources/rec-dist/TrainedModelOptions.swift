import ArgumentParser
import RecCore
import RecData
import RecInference
import RecTrainer

/// `--checkpoint`, the trained model that `predict`, `recommend`, `explain` and `export` read,
/// and how they load it and the prepared dataset it was trained on.
struct TrainedModelOptions: ParsableArguments {
    @Option(help: "A checkpoint: a step-NNNNNNNN directory, or a --checkpoint-dir (its latest).")
    var checkpoint: String

    /// Sets this process up to score rows: OpenBLAS's native kernels, one thread, logging.
    func startScoring(_ logging: LoggingOptions, allToStandardError: Bool = false) {
        BLASKernels.reexecWithNativeKernelsIfNeeded()
        GEMM.setThreads(1)
        bootstrapLogging(logging, allToStandardError: allToStandardError)
    }

    /// The checkpoint's model, for batches of up to `maxBatch` rows.
    func load(maxBatch: Int) throws -> Checkpoint.TrainedModel {
        try Checkpoint.TrainedModel(path: checkpoint, maxBatch: maxBatch)
    }
}

extension Checkpoint.TrainedModel {
    /// The prepared dataset at `directory`, checked to be one this model reads (its schema).
    func openDataset(_ directory: String) throws -> PreparedDataset {
        let dataset = try PreparedDataset(directory: directory)
        try checkCompatible(with: dataset)
        return dataset
    }
}
