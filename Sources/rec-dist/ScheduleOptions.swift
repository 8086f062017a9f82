import ArgumentParser
import RecCore

/// `train`'s learning-rate schedule: warmup, then constant, linear, cosine or step decay.
struct ScheduleOptions: ParsableArguments {
    @Option(help: "Learning-rate schedule after warmup: \(LearningRateDecay.allCases.map(\.rawValue).joined(separator: ", ")) (linear and cosine decay to --min-lr-ratio x lr at the last step).")
    var lrSchedule: LearningRateDecay = .constant
    @Option(parsing: .unconditional, help: "Steps of linear warmup from lr/N to lr before the schedule (0: none).")
    var warmupSteps: Int = 0
    @Option(parsing: .unconditional, help: "linear, cosine: the final learning rate as a fraction of --lr.")
    var minLrRatio: Double?
    @Option(parsing: .unconditional, help: "step: multiply the learning rate by --lr-decay-factor every this many steps after warmup (default 1000).")
    var lrDecayEvery: Int?
    @Option(parsing: .unconditional, help: "step: the factor applied every --lr-decay-every steps (default 0.1).")
    var lrDecayFactor: Double?

    func validate() throws {
        if warmupSteps < 0 { throw outOfRange("--warmup-steps", warmupSteps, "use 0 (no warmup) or a positive step count") }
        if let minLrRatio {
            guard lrSchedule == .linear || lrSchedule == .cosine else { throw ValidationError("--min-lr-ratio applies to --lr-schedule linear or cosine only.") }
            if !(minLrRatio >= 0 && minLrRatio <= 1) { throw outOfRange("--min-lr-ratio", minLrRatio, "use a fraction of --lr in [0, 1]") }
        }
        if lrDecayEvery != nil || lrDecayFactor != nil {
            guard lrSchedule == .step else { throw ValidationError("--lr-decay-every and --lr-decay-factor apply to --lr-schedule step only.") }
        }
        if let lrDecayEvery, lrDecayEvery < 1 { throw outOfRange("--lr-decay-every", lrDecayEvery, "use a positive step count") }
        if let lrDecayFactor, !(lrDecayFactor > 0 && lrDecayFactor <= 1) { throw outOfRange("--lr-decay-factor", lrDecayFactor, "use a factor in (0, 1], e.g. 0.1") }
    }

}
