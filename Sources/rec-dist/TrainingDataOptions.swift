import ArgumentParser

/// `train`'s data: the training rows and where the evaluation rows come from.
struct TrainingDataOptions: ParsableArguments {
    @Option(help: "Training data: a Criteo-format TSV (label, I1-I13, C1-C26), or a directory written by `rec-dist prepare`.")
    var data: String
    @Option(help: "A separate evaluation file (default: hold out the last --eval-fraction of --data).")
    var eval: String?
    @Option(parsing: .unconditional, help: "Fraction of --data held out for evaluation, taken from the end of the file.")
    var evalFraction: Double = 0.1

    func validate() throws {
        if !(evalFraction >= 0 && evalFraction < 1) { throw outOfRange("--eval-fraction", evalFraction, "use a value in [0, 1)") }
    }
}
