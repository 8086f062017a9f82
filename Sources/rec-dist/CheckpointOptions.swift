import ArgumentParser

/// `train`'s checkpoints: where and how often they are written, how many are kept, and resuming.
struct CheckpointOptions: ParsableArguments {
    @Option(help: "Write checkpoints into this directory (step-NNNNNNNN/, with 'latest' and 'best' pointers); always one at the end.")
    var checkpointDir: String?
    @Option(parsing: .unconditional, help: "Also write a checkpoint every this many steps (0: off).")
    var checkpointEvery: Int = 0
    @Option(parsing: .unconditional, help: "Also write a checkpoint every this many seconds (0: off).")
    var checkpointEverySeconds: Double = 0
    @Option(parsing: .unconditional, help: "Keep this many recent checkpoints (the best one is kept besides).")
    var keep: Int = 3
    @Option(help: "Resume from a checkpoint: a step-NNNNNNNN directory, a checkpoint directory (its latest), or 'latest' (in --checkpoint-dir).")
    var resume: String?
    @Flag(help: "Resume from the newest valid checkpoint in --checkpoint-dir if there is one (damaged ones are skipped with a warning); start fresh otherwise.")
    var autoResume = false
    @Flag(help: "Resuming on data other than the checkpoint's (which is refused otherwise): keep the model, optimizer and step, and read the new --data from its first row.")
    var restartData = false
    @Flag(help: "Keep training when a checkpoint cannot be written (default: stop; the previous checkpoint stays intact).")
    var continueOnCheckpointFailure = false

    func validate() throws {
        if checkpointEvery < 0 { throw outOfRange("--checkpoint-every", checkpointEvery, "use 0 (off) or a positive step count") }
        if !(checkpointEverySeconds >= 0) { throw outOfRange("--checkpoint-every-seconds", checkpointEverySeconds, "use 0 (off) or a positive number of seconds") }
        if keep < 1 { throw outOfRange("--keep", keep, "keep at least 1 checkpoint") }
        if (autoResume || resume == "latest" || checkpointEvery > 0 || checkpointEverySeconds > 0) && checkpointDir == nil {
            throw ValidationError("--auto-resume, --resume latest and --checkpoint-every(-seconds) need --checkpoint-dir.")
        }
        if autoResume && resume != nil { throw ValidationError("use either --resume or --auto-resume, not both.") }
        if restartData && resume == nil && !autoResume { throw ValidationError("--restart-data applies when resuming: add --resume or --auto-resume.") }
    }
}
