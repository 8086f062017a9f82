import RecData

/// A checkpoint or safetensors file that cannot be written or read: the file, and what is wrong
/// with it or what to do. The trainer reports it as `TrainingError.checkpoint` with the same text.
public struct CheckpointError: Error, CustomStringConvertible {
    public var path: String
    public var message: String

    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { "checkpoint '\(path)': \(message)" }
}

extension CheckpointError {
    /// A file error met while writing or reading a checkpoint, with its text.
    public init(_ error: DataError) {
        self.init(path: error.file, message: error.message + (error.hint.map { " (\($0))" } ?? ""))
    }
}
