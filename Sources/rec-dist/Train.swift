import ArgumentParser
import Foundation
import Logging
import RecCore
import RecData
import RecDistributed
import RecMPI
import RecTrainer

/// `--progress`: a display, or `auto` to decide from the environment.
enum ProgressChoice: String, ExpressibleByArgument, CaseIterable {
    case auto, bar, lines, off
}

/// A comma-separated list of layer widths, e.g. `512,256`.
struct LayerWidths: ExpressibleByArgument {
    var widths: [Int]
    init?(argument: String) {
        let parts = argument.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        widths = parts.map { $0! }
    }
    var defaultValueDescription: String { widths.map(String.init).joined(separator: ",") }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model, as one rank or as one of N MPI ranks.",
        discussion: """
        Each rank reads and parses only its own block-cyclic shard of --data. Gradients are averaged \
        with an allreduce and every rank takes the same optimizer step; rank 0 evaluates on the \
        held-out rows and writes the checkpoint and the metrics log.

        Examples:
          rec-dist train --data data/synth.tsv --model mlp
          mpirun -np 2 rec-dist train --data data/synth.tsv --model dlrm --optimizer adagrad --lr 0.01
        """)

    @Option(help: "Training data: a Criteo-format TSV (label, I1-I13, C1-C26), or a directory written by `rec-dist prepare`.")
    var data: String
    @Option(help: "A separate evaluation file (default: hold out the last --eval-fraction of --data).")
    var eval: String?
    @Option(parsing: .unconditional, help: "Fraction of --data held out for evaluation, taken from the end of the file.")
    var evalFraction: Double = 0.1
    @Option(help: "Model: \(ModelKind.allCases.map(\.rawValue).joined(separator: ", ")) (default mlp); each name is a preset of the shape flags below, which override it.")
    var model: ModelKind?
    @Option(help: "A model configuration file (JSON, see the README); flags given explicitly override its values.")
    var modelConfig: String?
    @Option(parsing: .unconditional, help: "mlp: hidden widths (128); wide-deep: the deep MLP's (256,128); ncf: the MLP branch's (32,16,8); two-tower: each tower's (64).")
    var hidden: LayerWidths?
    @Option(parsing: .unconditional, help: "mlp: how many leading dense features to use (1-13; default 10).")
    var denseFeatures: Int?
    @Option(parsing: .unconditional, help: "Embedding dimension: dlrm (also the bottom MLP's output; 16), wide-deep (16), ncf's MLP branch (32), two-tower (32).")
    var embeddingDim: Int?
    @Option(parsing: .unconditional, help: "dlrm: bottom MLP hidden widths (512,256,64).")
    var bottom: LayerWidths?
    @Option(parsing: .unconditional, help: "dlrm: top MLP hidden widths (512,256).")
    var top: LayerWidths?
    @Option(parsing: .unconditional, help: "ncf: GMF predictive factors (8); two-tower: the towers' output width (32).")
    var factors: Int?
    @Option(help: "Hidden activation of every MLP: relu (default), sigmoid or tanh.")
    var activation: Activation?
    @Option(parsing: .unconditional, help: "Dropout rate after every hidden layer of every MLP, in [0, 1) (default 0); seeded, off in evaluation.")
    var dropout: Float?
    @Option(help: "Weight initializer: \(Initializer.allCases.map(\.rawValue).joined(separator: ", ")) (default glorot-uniform).")
    var initializer: Initializer?
    @Option(help: "Loss: bce (binary cross-entropy) or mse (squared error on the sigmoid output).")
    var loss: Loss = .bce
    @Option(parsing: .unconditional, help: "Learning rate (default: Keras's default for the optimizer).")
    var lr: Float?
    @Option(parsing: .unconditional, help: "momentum: the momentum coefficient.")
    var momentum: Float = 0.9
    @Flag(help: "momentum: use Nesterov momentum.")
    var nesterov = false
    @Option(parsing: .unconditional, help: "Weight decay: decoupled (p -= lr * wd * p) for adamw, L2 (g += wd * p) for the others; embedding rows decay only in the steps that touch them (default: 0.004 for adamw, else 0).")
    var weightDecay: Float?
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
    @Flag(help: "Multiply --lr by the number of ranks (the linear scaling rule for the N-times larger global batch).")
    var scaleLrByWorldSize = false
    @Option(parsing: .unconditional, help: "Gradient accumulation: micro-batches (global batches) per optimizer step; one step equals a step on a K-times larger batch.")
    var accumulate: Int = 1
    @Option(parsing: .unconditional, help: "Clip the gradients (dense and embedding rows, after the allreduce) to this global L2 norm (default: no clipping).")
    var clipNorm: Float?
    @Option(parsing: .unconditional, help: "Examples per rank per step (the global batch is this times the number of ranks). A batch never exceeds the data: buffers hold min(this, the training rows) rows.")
    var batchSize: Int = 128
    @Option(parsing: .unconditional, help: "Passes over the training rows.")
    var epochs: Int = 1
    @Option(parsing: .unconditional, help: "Train for exactly this many steps instead of --epochs.")
    var steps: Int?
    @Option(parsing: .unconditional, help: "Seed of the initialization.")
    var seed: UInt64 = 42
    @Option(parsing: .unconditional, help: "Evaluate every this many steps (0: only at the end).")
    var evalEvery: Int = 0
    @Option(parsing: .unconditional, help: "Print progress every this many steps (0: about 20 lines per run).")
    var logEvery: Int = 0
    @Option(help: "Append one JSON object per evaluation to this file.")
    var metricsOut: String?
    @Option(name: .customLong("tensorboard"),
            help: "Write the training curves as a TensorBoard event file into this directory (view with `tensorboard --logdir DIR`).")
    var tensorBoard: String?
    @Option(help: "Write checkpoints into this directory (step-NNNNNNNN/, with 'latest' and 'best' pointers); always one at the end.")
    var checkpointDir: String?
    @Option(parsing: .unconditional, help: "Also write a checkpoint every this many steps (0: off).")
    var checkpointEvery: Int = 0
    @Option(parsing: .unconditional, help: "Also write a checkpoint every this many seconds (0: off).")
    var checkpointEverySeconds: Double = 0
    @Option(parsing: .unconditional, help: "Keep this many recent checkpoints (the best one is kept besides).")
    var keep: Int = 3
    @Option(help: "Metric that selects the best checkpoint and drives early stopping: \(SelectionMetric.allCases.map(\.rawValue).joined(separator: ", ")) (logloss, rmse, mae: lower is better; hr, ndcg, recall at --k, and mrr need a leave-last-out evaluation split).")
    var selectMetric: SelectionMetric = .auc
    @Option(parsing: .unconditional, help: "Stop when --select-metric has not improved for this many evaluations in a row (needs --eval-every; default: never stop early).")
    var earlyStopPatience: Int?
    @Option(parsing: .unconditional, help: "With --early-stop-patience: an improvement must exceed this.")
    var earlyStopMinDelta: Double = 0
    @Option(parsing: .unconditional, help: "Leave-last-out evaluation: the cut-off K of HR@K, NDCG@K and Recall@K (HR@10 and NDCG@10 are always reported).")
    var k: Int = 10
    @Option(help: "Resume from a checkpoint: a step-NNNNNNNN directory, a checkpoint directory (its latest), or 'latest' (in --checkpoint-dir).")
    var resume: String?
    @Flag(help: "Resume from the newest valid checkpoint in --checkpoint-dir if there is one (damaged ones are skipped with a warning); start fresh otherwise.")
    var autoResume = false
    @Flag(help: "Resuming on data other than the checkpoint's (which is refused otherwise): keep the model, optimizer and step, and read the new --data from its first row.")
    var restartData = false
    @Flag(help: "Skip a step whose loss or gradient is NaN/Inf (on all ranks alike) instead of stopping.")
    var skipNonfinite = false
    @Flag(help: "Keep training when a checkpoint cannot be written (default: stop; the previous checkpoint stays intact).")
    var continueOnCheckpointFailure = false
    @Flag(help: "Extra checks: NaN/Inf detection, a finite-difference gradient check at step 0 (1 rank), per-step timing; under mpirun, replica checksums.")
    var debug = false
    @Option(parsing: .unconditional, help: "With --debug under mpirun: compare replica checksums every this many steps.")
    var debugCheckEvery: Int = 10
    @Option(help: "Progress on rank 0: bar (redrawn in place), lines (plain periodic lines; every log line starts with its UTC time), off, or auto: the bar when a person watches a terminal (launch.sh tells its ranks; under plain mpirun, lines), else lines.")
    var progress: ProgressChoice = .auto
    @Option(parsing: .unconditional, help: "Abort the job when a collective waits this many seconds for the other ranks, naming the missing ranks (0: off). Set it above the longest evaluation, checkpoint or data-loading skew.")
    var collectiveTimeout: Double = 0
    @OptionGroup var step: StepOptions
    @OptionGroup var preparedData: PreparedDataFlags
    @OptionGroup var logging: LoggingOptions

    var optimizer: OptimizerKind { step.optimizer }
    var hashBuckets: Int? { step.hashBuckets }
    var bucketKib: Int { step.bucketKib }
    var blasThreads: Int { step.blasThreads }

    func validate() throws {
        func bad(_ flag: String, _ value: Any, _ allowed: String) -> ValidationError {
            ValidationError("\(flag) \(value) is out of range: \(allowed).")
        }
        if batchSize < 1 { throw bad("--batch-size", batchSize, "use a positive number of examples per rank, e.g. 128") }
        if let lr, !(lr > 0 && lr.isFinite) { throw bad("--lr", lr, "use a positive learning rate, e.g. 0.001") }
        if epochs < 1 { throw bad("--epochs", epochs, "use 1 or more") }
        if let steps, steps < 1 { throw bad("--steps", steps, "use 1 or more") }
        if !(evalFraction >= 0 && evalFraction < 1) { throw bad("--eval-fraction", evalFraction, "use a value in [0, 1)") }
        if evalEvery < 0 { throw bad("--eval-every", evalEvery, "use 0 (only at the end) or a positive step count") }
        if logEvery < 0 { throw bad("--log-every", logEvery, "use 0 (automatic) or a positive step count") }
        if let denseFeatures, !(1...13).contains(denseFeatures) { throw bad("--dense-features", denseFeatures, "use 1 to 13") }
        if let embeddingDim, embeddingDim < 1 || embeddingDim > 1024 { throw bad("--embedding-dim", embeddingDim, "use 1 to 1024") }
        if let factors, factors < 1 || factors > 1024 { throw bad("--factors", factors, "use 1 to 1024") }
        if let dropout, !(dropout >= 0 && dropout < 1) { throw bad("--dropout", dropout, "use a rate in [0, 1)") }
        if activation == .linear { throw bad("--activation", "linear", "use relu, sigmoid or tanh") }
        if !(momentum >= 0 && momentum < 1) { throw bad("--momentum", momentum, "use a value in [0, 1)") }
        if debugCheckEvery < 1 { throw bad("--debug-check-every", debugCheckEvery, "use 1 or more") }
        if checkpointEvery < 0 { throw bad("--checkpoint-every", checkpointEvery, "use 0 (off) or a positive step count") }
        if !(checkpointEverySeconds >= 0) { throw bad("--checkpoint-every-seconds", checkpointEverySeconds, "use 0 (off) or a positive number of seconds") }
        if keep < 1 { throw bad("--keep", keep, "keep at least 1 checkpoint") }
        if (autoResume || resume == "latest" || checkpointEvery > 0 || checkpointEverySeconds > 0) && checkpointDir == nil {
            throw ValidationError("--auto-resume, --resume latest and --checkpoint-every(-seconds) need --checkpoint-dir.")
        }
        if autoResume && resume != nil { throw ValidationError("use either --resume or --auto-resume, not both.") }
        if restartData && resume == nil && !autoResume { throw ValidationError("--restart-data applies when resuming: add --resume or --auto-resume.") }
        if !(collectiveTimeout >= 0 && collectiveTimeout.isFinite) { throw bad("--collective-timeout", collectiveTimeout, "use 0 (off) or a number of seconds, e.g. 60") }
        if nesterov && optimizer != .momentum { throw ValidationError("--nesterov applies to --optimizer momentum only.") }
        if let weightDecay, !(weightDecay >= 0 && weightDecay.isFinite) { throw bad("--weight-decay", weightDecay, "use 0 (off) or a small positive value, e.g. 0.0001") }
        if warmupSteps < 0 { throw bad("--warmup-steps", warmupSteps, "use 0 (no warmup) or a positive step count") }
        if let minLrRatio {
            guard lrSchedule == .linear || lrSchedule == .cosine else { throw ValidationError("--min-lr-ratio applies to --lr-schedule linear or cosine only.") }
            if !(minLrRatio >= 0 && minLrRatio <= 1) { throw bad("--min-lr-ratio", minLrRatio, "use a fraction of --lr in [0, 1]") }
        }
        if lrDecayEvery != nil || lrDecayFactor != nil {
            guard lrSchedule == .step else { throw ValidationError("--lr-decay-every and --lr-decay-factor apply to --lr-schedule step only.") }
        }
        if let lrDecayEvery, lrDecayEvery < 1 { throw bad("--lr-decay-every", lrDecayEvery, "use a positive step count") }
        if let lrDecayFactor, !(lrDecayFactor > 0 && lrDecayFactor <= 1) { throw bad("--lr-decay-factor", lrDecayFactor, "use a factor in (0, 1], e.g. 0.1") }
        if accumulate < 1 || accumulate > 4096 { throw bad("--accumulate", accumulate, "use 1 (off) to 4096 micro-batches per step") }
        if let clipNorm, !(clipNorm > 0 && clipNorm.isFinite) { throw bad("--clip-norm", clipNorm, "use a positive norm, e.g. 1.0, or leave it out") }
        if let earlyStopPatience {
            if earlyStopPatience < 1 { throw bad("--early-stop-patience", earlyStopPatience, "use 1 or more evaluations") }
            if evalEvery == 0 { throw ValidationError("--early-stop-patience needs --eval-every N: with only the final evaluation there is nothing to compare.") }
        }
        if !(earlyStopMinDelta >= 0 && earlyStopMinDelta.isFinite) { throw bad("--early-stop-min-delta", earlyStopMinDelta, "use 0 or a small positive value") }
        if k < 1 { throw bad("--k", k, "use a positive cut-off, e.g. 10") }
    }

    /// The model: the preset of --model (or of the config file's `model`), then the config
    /// file's values, then the shape flags given explicitly.
    func makeModelConfig() throws -> ModelConfig {
        let file = try modelConfig.map { try ModelConfigFile(path: $0) }
        if let model, let fileModel = file?.model, model != fileModel {
            throw ValidationError("--model \(model.rawValue) conflicts with \"model\": \"\(fileModel.rawValue)\" in --model-config \(modelConfig!); drop one of them.")
        }
        var config = ModelConfig.preset(model ?? file?.model ?? .mlp)
        if let file {
            let names: [String]
            if PreparedDataset.isDirectory(data) {
                names = try PreparedDataset(directory: data).manifest.schema.categorical.map(\.name)
            } else {
                names = (1...26).map { "C\($0)" }
            }
            try file.apply(to: &config, fieldNames: names)
        }
        if let hidden { config.hidden = hidden.widths }
        if let denseFeatures { config.mlpDenseFeatures = denseFeatures }
        if let hashBuckets { config.hashBuckets = hashBuckets }
        if let embeddingDim { config.embeddingDim = embeddingDim }
        if let bottom { config.bottom = bottom.widths }
        if let top { config.top = top.widths }
        if let factors { config.factors = factors }
        if let initializer { config.initializer = initializer }
        for stack in ModelConfig.stackNames(config.kind) {
            if let activation { config.activations[stack] = activation }
            if let dropout { config.dropout[stack] = dropout }
        }
        return config
    }

    func makeConfig() throws -> TrainingConfig {
        let modelConfig = try makeModelConfig()
        var optimizerConfig = OptimizerConfig(kind: optimizer, learningRate: lr)
        optimizerConfig.momentum = momentum
        optimizerConfig.nesterov = nesterov
        optimizerConfig.weightDecay = weightDecay ?? OptimizerConfig.defaultWeightDecay(for: optimizer)
        var schedule = LearningRateSchedule(decay: lrSchedule, warmupSteps: warmupSteps)
        if let minLrRatio { schedule.minRatio = minLrRatio }
        if let lrDecayEvery { schedule.decayEvery = lrDecayEvery }
        if let lrDecayFactor { schedule.decayFactor = lrDecayFactor }
        optimizerConfig.schedule = schedule
        optimizerConfig.scaleByWorldSize = scaleLrByWorldSize
        optimizerConfig.accumulate = accumulate
        optimizerConfig.clipNorm = clipNorm
        var config = TrainingConfig(dataPath: data, model: modelConfig, optimizer: optimizerConfig)
        config.evalPath = eval
        config.evalFraction = evalFraction
        config.loss = loss
        config.batchSize = batchSize
        config.epochs = epochs
        config.steps = steps
        config.seed = seed
        config.evalEvery = evalEvery
        config.logEvery = logEvery
        config.metricsPath = metricsOut
        config.tensorBoardDir = tensorBoard
        config.checkpointDir = checkpointDir
        config.debug = debug
        config.debugCheckEvery = debugCheckEvery
        config.checkpointEvery = checkpointEvery
        config.checkpointEverySeconds = checkpointEverySeconds
        config.keep = keep
        config.selectionMetric = selectMetric
        config.earlyStopPatience = earlyStopPatience
        config.earlyStopMinDelta = earlyStopPatience == nil ? nil : earlyStopMinDelta
        config.rankingK = k
        config.resume = resume
        config.autoResume = autoResume
        config.restartData = restartData ? true : nil
        config.skipNonFinite = skipNonfinite
        config.continueOnCheckpointFailure = continueOnCheckpointFailure
        config.preparedData = preparedData.options
        config.bucketBytes = bucketKib == 1024 ? nil : bucketKib * 1024
        config.embeddingSharding = step.embeddingSharding == .replicated ? nil : step.embeddingSharding
        config.memoryPerRank = step.memoryPerRank?.bytes
        return config
    }

    func run() throws {
        BLASKernels.reexecWithNativeKernelsIfNeeded()
        GEMM.setThreads(blasThreads)
        let communicator = try MPIJob.start(collectiveTimeout: collectiveTimeout)
        let rank = communicator.rank
        let progressMode = progressMode()
        // Plain progress lines go to log files: every line says when.
        bootstrapLogging(logging, rank: rank, timestamps: progressMode == .lines)
        if debug && rank == 0 {
            logger.info("debug mode: \(communicator.size) rank(s) on \(communicator.processorName), OpenBLAS \(GEMM.coreName) with \(GEMM.threads) thread(s)")
        }
        let config: TrainingConfig
        do {
            config = try makeConfig().resolvingPreparedData()   // a prepared dataset shapes the model, checked
        } catch {
            // Every rank reads the same manifest, but if only this one failed the others must not wait.
            throw MPIJob.failedAlone(error, communicator: communicator)
        }
        let trainer = Trainer(config: config, communicator: communicator, logger: logger)
        trainer.progress = progressMode
        do {
            let result = try trainer.run()
            if rank == 0 { printSummary(result, config: config, worldSize: communicator.size) }
            if result.skippedSteps > 0 && rank == 0 { print("skipped \(result.skippedSteps) non-finite step(s)") }
            communicator.finalize()
        } catch let error as TrainingError {
            // These errors were agreed by every rank in a collective: all ranks stop cleanly, and
            // rank 0 speaks for them.
            if case .interrupted = error {
                communicator.finalize()
                if rank == 0 { print("\n\(error)") }
                // Every rank exits alike (mpirun reports any rank's status): by the flag, not by
                // what only rank 0 knows.
                throw ExitCode(config.checkpointDir == nil ? RecDist.interruptedUnsavedExitCode : RecDist.interruptedExitCode)
            }
            // Before finalize: if only rank 0 saw the error after all, finalize aborts the job.
            if rank == 0 { printError("\(error)", rank: rank) }
            communicator.finalize()
            // Another run's --checkpoint-dir, a checkpoint of other data, a model that does not fit
            // the data or the memory (--memory-per-rank): usage errors.
            if case .checkpointConflict = error { throw ExitCode.validationFailure }
            if case .modelConfig = error { throw ExitCode.validationFailure }
            throw ExitCode.failure
        } catch let error as DataError {
            // Data errors are raised before the agreement allreduce, so every rank reaches it.
            printError("\(error)", rank: rank)
            communicator.finalize()
            throw ExitCode.failure
        } catch {
            throw MPIJob.failedAlone(error, communicator: communicator)
        }
    }

    /// The progress display: as asked, or decided from the environment (never the bar with --debug,
    /// whose per-step lines would break it).
    func progressMode() -> ProgressMode {
        switch progress {
        case .bar: return .bar
        case .lines: return .lines
        case .off: return .off
        case .auto:
            if debug { return .lines }
            return ProgressMode.automatic(environment: ProcessInfo.processInfo.environment,
                                          standardOutputIsTerminal: isatty(STDOUT_FILENO) == 1)
        }
    }

    func printSummary(_ result: TrainingResult, config: TrainingConfig, worldSize: Int) {
        var lines = ["", "done: \(result.steps) steps, \(result.samples) samples on \(worldSize) rank(s), \(Int(result.samplesPerSecond)) samples/s"]
        if let e = result.finalEvaluation, e.eval_rows == 0 {
            lines.append("final evaluation: none (no evaluation rows: --eval-fraction 0, or an empty evaluation split)")
        } else if let e = result.finalEvaluation {
            lines.append("final evaluation (\(e.eval_rows) rows): auc \(e.auc.map { String(format: "%.4f", $0) } ?? "n/a"), logloss \(String(format: "%.4f", e.logloss)), accuracy \(String(format: "%.4f", e.accuracy))" + (e.calibration.map { String(format: ", calibration %.4f", $0) } ?? "") + (e.rmse.map { String(format: ", rmse %.4f", $0) } ?? "") + (e.mae.map { String(format: ", mae %.4f", $0) } ?? "") + (e.oracle_auc.map { String(format: ", oracle auc %.4f", $0) } ?? ""))
            if let k = e.k, let protocolText = e.ranking_protocol, let hr = e.hit_rate_at_k, let ndcg = e.ndcg_at_k,
               let recall = e.recall_at_k, let mrr = e.mrr {
                lines.append("ranking (\(e.ranked_users ?? 0) users, \(protocolText)): " + String(format: "HR@%d %.4f, NDCG@%d %.4f, Recall@%d %.4f, MRR %.4f", k, hr, k, ndcg, k, recall, mrr))
            }
        }
        if let s = result.stoppedEarlyAt { lines.append("stopped early at step \(s) (--early-stop-patience)") }
        if let best = result.bestCheckpoint { lines.append("best checkpoint (\(config.selectionMetric.label(k: config.rankingK ?? 10))): \(best)") }
        if let path = result.checkpointPath { lines.append("checkpoint: \(path)") }
        if let path = config.metricsPath { lines.append("metrics: \(path)") }
        if let path = config.tensorBoardDir { lines.append("tensorboard: \(path)") }
        print(lines.joined(separator: "\n"))
    }
}
