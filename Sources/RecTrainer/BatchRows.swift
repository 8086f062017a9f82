import Foundation
import RecData

extension Trainer {
    /// The rows one rank's batch buffers must hold, found before anything is allocated: a batch
    /// never exceeds the data. A rank's share of a global batch is at most `--batch-size` rows and
    /// at most the training rows (with fewer rows than `--batch-size`, rank 0 holds all of them
    /// and the other ranks none), so the training buffers are sized by the smaller; the
    /// evaluation's by the smaller of the evaluation batch and the evaluation rows. The counts are
    /// cheap: the TSV file's lines, or the prepared dataset's manifest. Data that cannot be read
    /// here keeps the flags' sizes: loading it reports the problem.
    func batchRows() -> (train: Int, eval: Int) {
        var rows: (train: Int, eval: Int)?
        if config.usesPreparedData {
            if let manifest = try? PreparedDataset(directory: config.dataPath).manifest, let train = manifest.split("train")?.rows {
                let name = config.preparedData?.evalSplit ?? PreparedDataOptions().evalSplit
                var eval = manifest.split(name)?.rows ?? 0
                if name == "valid" && eval == 0 { eval = manifest.split("test")?.rows ?? 0 }
                rows = (train, eval)
            }
        } else if let file = try? MappedFile(path: config.dataPath) {
            let split = DataSplit.trainEval(rowCount: CriteoTSV.countRows(file), evalFraction: config.evalFraction)
            var eval: Int? = split.eval.count
            if let evalPath = config.evalPath { eval = (try? MappedFile(path: evalPath)).map(CriteoTSV.countRows) }
            rows = (split.train.count, eval ?? config.evalBatchSize)
        }
        guard let rows else { return (config.batchSize, config.evalBatchSize) }
        return (max(min(config.batchSize, rows.train), 1), min(config.evalBatchSize, rows.eval))
    }
}
