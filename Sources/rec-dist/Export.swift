import ArgumentParser
import Foundation
import Logging
import RecData
import RecInference
import RecTrainer

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export a checkpoint for serving: the safetensors weights or an ONNX model, and a JSON model description.",
        discussion: """
        Writes DIR/model.json: the model kind, its layers as a graph of ops (tensor names, shapes, \
        activations), the embedding tables (hashed or vocabulary ids) and the input preprocessing \
        (Criteo TSV hashing and log1p, or the prepared dataset's recorded encodings and transforms). \
        Beside it, with --format safetensors (the default), DIR/model.safetensors (the checkpoint's \
        weights): examples/score.py scores rows from these two files with NumPy alone, identically \
        to `rec-dist predict`. With --format onnx, DIR/model.onnx: a standard ONNX model (opset 17) \
        with inputs `dense` (float32 [batch, dense fields]; absent when the model reads none) and \
        `categorical` (int64 [batch, categorical fields]: the hashes or ids that model.json's input \
        section describes) and output `probability` (float32 [batch, 1]); model.json lists them \
        under `onnx`. examples/score_onnx.py scores rows with ONNX Runtime.

        Examples:
          rec-dist export --checkpoint runs/default/checkpoints --out serving/mlp
          python3 examples/score.py serving/mlp data/synth.tsv --limit 10
          rec-dist export --checkpoint runs/default/checkpoints --out serving/mlp-onnx --format onnx
          python3 examples/score_onnx.py serving/mlp-onnx data/synth.tsv --limit 10
        """)

    /// What carries the weights.
    enum Format: String, ExpressibleByArgument, CaseIterable {
        case safetensors, onnx
    }

    @OptionGroup var model: TrainedModelOptions
    @Option(help: "Output directory (created if needed).")
    var out: String
    @Option(help: "The prepared dataset the model was trained on (default: the path recorded in the checkpoint).")
    var data: String?
    @Option(help: "safetensors: model.safetensors for examples/score.py; onnx: model.onnx for ONNX Runtime and other ONNX servers.")
    var format: Format = .safetensors
    @OptionGroup var logging: LoggingOptions

    func run() throws {
        bootstrapLogging(logging)
        try exitingOnError {
            let trained = try model.load(maxBatch: 1)
            var dataset: PreparedDataset?
            let path = data ?? trained.training.dataPath
            if trained.config.vocabularySizes != nil || trained.config.denseTransform == .identity {
                guard PreparedDataset.isDirectory(path) else {
                    throw ValidationError("the checkpoint was trained on the prepared dataset '\(trained.training.dataPath)', which is not there any more: pass its current location with --data DIR.")
                }
                dataset = try trained.openDataset(path)
            }
            switch format {
            case .safetensors: try ModelExport.write(trained, dataset: dataset, to: out)
            case .onnx: try ONNXExport.write(trained, dataset: dataset, to: out)
            }
            logger.info("exported \(trained.config.kind.rawValue) from \(trained.directory) to \(out)/model.\(format.rawValue) and \(out)/model.json")
        }
    }
}
