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
    @Option(help: "Where the embedding tables live: replicated (every rank holds every table), table (each table whole on one rank), row (every table's rows dealt over all ranks), auto (replicate what fits --memory-per-rank, shard the largest tables until every rank fits). Rank 0 prints the plan.")
    var embeddingSharding: EmbeddingSharding = .replicated
    @Option(parsing: .unconditional, help: "Memory each rank may use, e.g. 8G or 1536M (K, M, G, T: powers of 1024); the plan must fit it. Default: the host's available memory divided by its ranks.")
    var memoryPerRank: ByteCountArgument?

    func validate() throws {
        if let hashBuckets, hashBuckets < 2 || hashBuckets > 1 << 32 { throw outOfRange("--hash-buckets", hashBuckets, "use 2 to 4294967296 (the hashes are 32-bit)") }
        if blasThreads < 1 || blasThreads > 1024 { throw outOfRange("--blas-threads", blasThreads, "use 1 to 1024 threads per rank") }
        if bucketKib < 1 || bucketKib > 1 << 20 { throw outOfRange("--bucket-kib", bucketKib, "use 1 to 1048576, e.g. 1024 (1 MiB)") }
        if let memoryPerRank, memoryPerRank.bytes.map({ $0 < 1 << 20 || $0 > 1 << 50 }) ?? true {
            throw outOfRange("--memory-per-rank", memoryPerRank.text, "use 1M to 1024T, a number with K, M, G or T (powers of 1024), e.g. 8G or 1536M")
        }
    }
}

extension EmbeddingSharding: ExpressibleByArgument {}

/// A byte count with an optional binary suffix: `1048576`, `512M`, `8G`, `1.5T`. Any text
/// parses, so that `validate()` words every refusal (`-5`, `1P`, `abc`) as a range error.
struct ByteCountArgument: ExpressibleByArgument {
    /// nil: not a byte count below 2^62.
    let bytes: Int?
    let text: String

    init(argument: String) {
        text = argument
        let units: [Character: Double] = ["K": 1024, "M": 1024 * 1024, "G": 1024 * 1024 * 1024, "T": 1024 * 1024 * 1024 * 1024]
        var digits = Substring(argument.uppercased())
        if digits.hasSuffix("IB") { digits = digits.dropLast(2) } else if digits.hasSuffix("B") { digits = digits.dropLast() }
        var scale = 1.0
        if let last = digits.last, let unit = units[last] {
            scale = unit
            digits = digits.dropLast()
        }
        guard let value = Double(digits), value.isFinite, value >= 0, value * scale < 0x1p62 else {
            bytes = nil
            return
        }
        bytes = Int(value * scale)
    }
}
