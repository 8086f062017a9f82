import ArgumentParser

/// `bench`'s timing: the untimed warm-up, the timed windows, and the sgemm roofline's time.
struct BenchTimingOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Untimed warm-up steps (at least; warm-up also lasts at least --warmup-seconds).")
    var warmupSteps: Int = 20
    @Option(parsing: .unconditional, help: "Minimum warm-up time, seconds.")
    var warmupSeconds: Double = 1
    @Option(parsing: .unconditional, help: "Timed windows per case; the reported throughput is their median.")
    var windows: Int = 7
    @Option(parsing: .unconditional, help: "Target length of one timed window, seconds.")
    var windowSeconds: Double = 1
    @Option(parsing: .unconditional, help: "Time spent measuring sgemm on each case's layer shapes, seconds.")
    var sgemmSeconds: Double = 1

    func validate() throws {
        if windows < 1 { throw ValidationError("--windows must be at least 1.") }
        if warmupSteps < 0 { throw ValidationError("--warmup-steps must be 0 or more.") }
        if !(windowSeconds > 0) { throw ValidationError("--window-seconds must be positive.") }
        if !(sgemmSeconds > 0) { throw ValidationError("--sgemm-seconds must be positive.") }
    }
}
