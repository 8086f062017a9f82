import ArgumentParser
import RecData

/// `predict`'s flags for raw rows, which it encodes like the prepared dataset the checkpoint was
/// trained on; they do not apply to a prepared dataset.
struct RawRowsOptions: ParsableArguments {
    @Option(help: "Raw rows: their format (default: that of the dataset the checkpoint was trained on, which is the only one accepted).")
    var format: InputFormatKind?
    @Option(help: "Raw rows: encode them like this prepared dataset (default: the one the checkpoint was trained on, where it was then).")
    var like: String?

    /// The first of these flags given, without its dashes.
    var given: String? { format != nil ? "format" : like != nil ? "like" : nil }
}
