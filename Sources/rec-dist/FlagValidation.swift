import ArgumentParser

/// The usage error for a flag value outside its range, e.g.
/// `--batch-size 0 is out of range: use a positive number of examples per rank, e.g. 128.`
func outOfRange(_ flag: String, _ value: Any, _ allowed: String) -> ValidationError {
    ValidationError("\(flag) \(value) is out of range: \(allowed).")
}
