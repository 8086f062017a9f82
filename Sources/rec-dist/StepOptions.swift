import ArgumentParser
import RecCore

/// The flags `train` and `bench` share, validated once.
struct StepOptions: ParsableArguments {
    @Option(help: "Optimizer: \(OptimizerKind.allCases.map(\.rawValue).joined(separator: ", ")).")
    var optimizer: OptimizerKind = .adam
    @Option(parsing: .unconditional, help: "Rows per embedding table for raw TSV or synthetic rows (hashing modulo this; a missing value is its own id; default 65536).")
    var hashBuckets: Int?
    @Option(parsing: .unconditional, help: "Dense gradient bucket size in KiB: each bucket's allreduce starts as soon as the backward pass has finished its layers (buckets end at tensor boundaries).")
    var bucketKib: Int = 1024
    @Option(parsing: .unconditional, help: "OpenBLAS threads per rank (default 1: one rank per core).")
    var blasThreads: Int = 1

    func validate() throws {
        func bad(_ flag: String, _ value: Any, _ allowed: String) -> ValidationError {
            ValidationError("\(flag) \(value) is out of range: \(allowed).")
        }
        if let hashBuckets, hashBuckets < 2 || hashBuckets > 1 << 26 { throw bad("--hash-buckets", hashBuckets, "use 2 to 67108864") }
        if blasThreads < 1 { throw bad("--blas-threads", blasThreads, "use 1 or more") }
        if bucketKib < 1 || bucketKib > 1 << 20 { throw bad("--bucket-kib", bucketKib, "use 1 to 1048576, e.g. 1024 (1 MiB)") }
    }
}
