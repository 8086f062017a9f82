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
        if windows < 1 || windows > 10_000 { throw outOfRange("--windows", windows, "use 1 to 10000 windows") }
        if warmupSteps < 0 || warmupSteps > 1_000_000 { throw outOfRange("--warmup-steps", warmupSteps, "use 0 to 1000000 steps") }
        if !(warmupSeconds >= 0 && warmupSeconds <= 3600) { throw outOfRange("--warmup-seconds", warmupSeconds, "use 0 to 3600 seconds") }
        if !(windowSeconds > 0 && windowSeconds <= 3600) { throw outOfRange("--window-seconds", windowSeconds, "use more than 0, up to 3600 seconds") }
        if !(sgemmSeconds > 0 && sgemmSeconds <= 3600) { throw outOfRange("--sgemm-seconds", sgemmSeconds, "use more than 0, up to 3600 seconds") }
    }
}
