import ArgumentParser
import RecCore

/// `train`'s loss and how long it trains: batch size, epochs or steps, seed.
struct TrainingRunOptions: ParsableArguments {
    @Option(help: "Loss: bce (binary cross-entropy) or mse (squared error on the sigmoid output).")
    var loss: Loss = .bce
    @Option(parsing: .unconditional, help: "Examples per rank per step (the global batch is this times the number of ranks). A batch never exceeds the data: buffers hold min(this, the training rows) rows.")
    var batchSize: Int = 128
    @Option(parsing: .unconditional, help: "Passes over the training rows.")
    var epochs: Int = 1
    @Option(parsing: .unconditional, help: "Train for exactly this many steps instead of --epochs.")
    var steps: Int?
    @Option(parsing: .unconditional, help: "Seed of the initialization.")
    var seed: UInt64 = 42

    func validate() throws {
        if batchSize < 1 { throw outOfRange("--batch-size", batchSize, "use a positive number of examples per rank, e.g. 128") }
        if epochs < 1 { throw outOfRange("--epochs", epochs, "use 1 or more") }
        if let steps, steps < 1 { throw outOfRange("--steps", steps, "use 1 or more") }
    }
}
