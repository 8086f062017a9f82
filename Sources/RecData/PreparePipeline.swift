/// What both pipelines of `prepare` (`StreamingPreparer` for click logs, `InteractionPreparer`
/// for interaction data) start from: the options, the resolved input layout, the mapped inputs,
/// the output directory being written, and where progress lines go. `Preparer.run` picks the
/// pipeline; each subclass holds its own working state besides.
class PreparePipeline {
    let options: PrepareOptions
    var layout: InputLayout
    let files: [MappedFile]
    let output: AtomicDirectory
    let log: @Sendable (String) -> Void

    init(options: PrepareOptions, layout: InputLayout, files: [MappedFile], output: AtomicDirectory,
         log: @escaping @Sendable (String) -> Void) {
        self.options = options
        self.layout = layout
        self.files = files
        self.output = output
        self.log = log
    }
}
