import ArgumentParser

/// `train`'s guards and checks: non-finite steps, debug checks, the collective timeout.
struct SafetyOptions: ParsableArguments {
    @Flag(help: "Skip a step whose loss or gradient is NaN/Inf (on all ranks alike) instead of stopping.")
    var skipNonfinite = false
    @Flag(help: "Extra checks: NaN/Inf detection, a finite-difference gradient check at step 0 (1 rank), per-step timing; under mpirun, replica checksums.")
    var debug = false
    @Option(parsing: .unconditional, help: "With --debug under mpirun: compare replica checksums every this many steps.")
    var debugCheckEvery: Int = 10
    @Option(parsing: .unconditional, help: "Abort the job when a collective waits this many seconds for the other ranks, naming the missing ranks (0: off). Set it above the longest evaluation, checkpoint or data-loading skew.")
    var collectiveTimeout: Double = 0

    func validate() throws {
        if debugCheckEvery < 1 { throw outOfRange("--debug-check-every", debugCheckEvery, "use 1 or more") }
        if !(collectiveTimeout >= 0 && collectiveTimeout.isFinite) { throw outOfRange("--collective-timeout", collectiveTimeout, "use 0 (off) or a number of seconds, e.g. 60") }
    }
}
