import ArgumentParser
import RecData
import RecTrainer

/// `train` flags for prepared datasets (`--data DIR`); they do not apply to TSV files.
struct PreparedDataFlags: ParsableArguments {
    @Flag(inversion: .prefixedNo, help: "Prepared data: shuffle each epoch (seeded by --seed; the order does not depend on the number of ranks).")
    var shuffle = true
    @Option(parsing: .unconditional, help: "Prepared data: shuffle within windows of this many consecutive rows, visited in random order (0: the whole split). Keeps reads local for data larger than memory.")
    var shuffleWindow: Int = 0
    @Option(help: "Prepared data: the split rank 0 evaluates, valid or test.")
    var evalSplit: String = "valid"
    @Option(parsing: .unconditional, help: "Prepared data: batches prefetched ahead of the step by a background thread.")
    var prefetch: Int = 4
    @Option(parsing: .unconditional, help: "Prepared data: MB of the mapped dataset a rank keeps resident before dropping those pages (they stay in the page cache).")
    var residentData: Int = 256

    func validate() throws {
        if shuffleWindow < 0 { throw outOfRange("--shuffle-window", shuffleWindow, "use 0 (whole split) or a row count") }
        if !["valid", "test"].contains(evalSplit) { throw ValidationError("--eval-split \(evalSplit): use valid or test.") }
        if prefetch < 2 || prefetch > 64 { throw outOfRange("--prefetch", prefetch, "use 2 to 64") }
        if residentData < 1 || residentData > 1 << 30 { throw outOfRange("--resident-data", residentData, "use 1 to 1073741824 MB") }
    }

    var options: PreparedDataOptions {
        var options = PreparedDataOptions()
        options.shuffle = shuffle
        options.shuffleWindow = shuffleWindow
        options.evalSplit = evalSplit
        options.prefetch = prefetch
        options.residentBytes = residentData << 20
        return options
    }
}
