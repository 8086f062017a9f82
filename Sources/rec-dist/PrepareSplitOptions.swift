import ArgumentParser
import RecData

extension SplitKind: ExpressibleByArgument {}

/// `prepare`'s split of the rows into train, valid and test, and the negatives it samples.
struct PrepareSplitOptions: ParsableArguments {
    @Option(help: "Split: random, contiguous (train, then test, then valid: DLRM's), time, leave-last-out, files (default: random for click logs, leave-last-out for interactions).")
    var split: SplitKind?
    @Option(parsing: .unconditional, help: "Fraction of rows for validation (random, contiguous, time; default 0.1, contiguous 1/14).")
    var validFraction: Double?
    @Option(parsing: .unconditional, help: "Fraction of rows for test (default 0.1, contiguous 1/14).")
    var testFraction: Double?
    @Option(parsing: .unconditional, help: "Negatives sampled per positive, never a known positive of the user (default: 4 for amazon and diginetica, else 0).")
    var negatives: Int?
    @Option(parsing: .unconditional, help: "leave-last-out: negatives sampled per held-out positive in valid and test (default: 99).")
    var evalNegatives: Int?
    @Option(parsing: .unconditional, help: "Seed of the random split and the negative sampling (default: 1).")
    var seed: UInt64?

    func validate() throws {
        for (flag, value) in [("--valid-fraction", validFraction), ("--test-fraction", testFraction)] {
            if let value, !(value >= 0 && value < 1) { throw outOfRange(flag, value, "use a value in [0, 1)") }
        }
        if let negatives, negatives < 0 || negatives > 1000 { throw outOfRange("--negatives", negatives, "use 0 to 1000") }
        if let evalNegatives, evalNegatives < 0 || evalNegatives > 10_000 { throw outOfRange("--eval-negatives", evalNegatives, "use 0 to 10000") }
    }

    /// The flags given, by name, for the check that --like takes none of them.
    var given: [(String, Bool)] {
        [("--split", split != nil), ("--valid-fraction", validFraction != nil), ("--test-fraction", testFraction != nil),
         ("--negatives", negatives != nil), ("--eval-negatives", evalNegatives != nil), ("--seed", seed != nil)]
    }

    func apply(to options: inout PrepareOptions) {
        if let split { options.split = split }
        if options.split == .contiguous {
            options.validFraction = PrepareOptions.dlrmHeldOutFraction
            options.testFraction = PrepareOptions.dlrmHeldOutFraction
        }
        if let validFraction { options.validFraction = validFraction }
        if let testFraction { options.testFraction = testFraction }
        if let negatives { options.negatives = negatives }
        if let evalNegatives { options.evalNegatives = evalNegatives }
        if let seed { options.seed = seed }
    }
}
