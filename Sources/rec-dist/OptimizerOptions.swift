import ArgumentParser

/// `train`'s optimizer settings besides `--optimizer` itself (a step flag, shared with `bench`).
struct OptimizerOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Learning rate (default: Keras's default for the optimizer).")
    var lr: Float?
    @Option(parsing: .unconditional, help: "momentum: the momentum coefficient.")
    var momentum: Float = 0.9
    @Flag(help: "momentum: use Nesterov momentum.")
    var nesterov = false
    @Option(parsing: .unconditional, help: "Weight decay: decoupled (p -= lr * wd * p) for adamw, L2 (g += wd * p) for the others; embedding rows decay only in the steps that touch them (default: 0.004 for adamw, else 0).")
    var weightDecay: Float?
    @Flag(help: "Multiply --lr by the number of ranks (the linear scaling rule for the N-times larger global batch).")
    var scaleLrByWorldSize = false
    @Option(parsing: .unconditional, help: "Gradient accumulation: micro-batches (global batches) per optimizer step; one step equals a step on a K-times larger batch.")
    var accumulate: Int = 1
    @Option(parsing: .unconditional, help: "Clip the gradients (dense and embedding rows, after the allreduce) to this global L2 norm (default: no clipping).")
    var clipNorm: Float?

    func validate() throws {
        if let lr, !(lr > 0 && lr.isFinite) { throw outOfRange("--lr", lr, "use a positive learning rate, e.g. 0.001") }
        if !(momentum >= 0 && momentum < 1) { throw outOfRange("--momentum", momentum, "use a value in [0, 1)") }
        if let weightDecay, !(weightDecay >= 0 && weightDecay.isFinite) { throw outOfRange("--weight-decay", weightDecay, "use 0 (off) or a small positive value, e.g. 0.0001") }
        if accumulate < 1 || accumulate > 4096 { throw outOfRange("--accumulate", accumulate, "use 1 (off) to 4096 micro-batches per step") }
        if let clipNorm, !(clipNorm > 0 && clipNorm.isFinite) { throw outOfRange("--clip-norm", clipNorm, "use a positive norm, e.g. 1.0, or leave it out") }
    }

}
