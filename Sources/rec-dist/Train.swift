import ArgumentParser
import Foundation
import Logging
import RecCore
import RecData
import RecDistributed
import RecMPI
import RecTrainer

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

    @OptionGroup(title: "Data") var dataOptions: TrainingDataOptions
    @OptionGroup(title: "Prepared data") var preparedData: PreparedDataFlags
    @OptionGroup(title: "Model") var shape: ModelShapeOptions
    @OptionGroup(title: "Training") var training: TrainingRunOptions
    @OptionGroup(title: "Optimizer") var optimization: OptimizerOptions
    @OptionGroup(title: "Learning-rate schedule") var schedule: ScheduleOptions
    @OptionGroup(title: "Step, memory and communication") var step: StepOptions
    @OptionGroup(title: "Evaluation") var evaluation: EvaluationOptions
    @OptionGroup(title: "Checkpoints") var checkpoints: CheckpointOptions
    @OptionGroup(title: "Progress and metrics") var output: ProgressOptions
    @OptionGroup(title: "Checks") var safety: SafetyOptions
    @OptionGroup var logging: LoggingOptions

    /// Checks across groups; each group validates its own flags.
    func validate() throws {
        if optimization.nesterov && step.optimizer != .momentum { throw ValidationError("--nesterov applies to --optimizer momentum only.") }
    }

    func makeConfig() throws -> TrainingConfig {
        let modelConfig = try shape.makeModelConfig(data: dataOptions.data, hashBuckets: step.hashBuckets)
        var optimizerConfig = OptimizerConfig(kind: step.optimizer, learningRate: optimization.lr)
        optimizerConfig.momentum = optimization.momentum
        optimizerConfig.nesterov = optimization.nesterov
        optimizerConfig.weightDecay = optimization.weightDecay ?? OptimizerConfig.defaultWeightDecay(for: step.optimizer)
        var lrSchedule = LearningRateSchedule(decay: schedule.lrSchedule, warmupSteps: schedule.warmupSteps)
        if let minLrRatio = schedule.minLrRatio { lrSchedule.minRatio = minLrRatio }
        if let lrDecayEvery = schedule.lrDecayEvery { lrSchedule.decayEvery = lrDecayEvery }
        if let lrDecayFactor = schedule.lrDecayFactor { lrSchedule.decayFactor = lrDecayFactor }
        optimizerConfig.schedule = lrSchedule
        optimizerConfig.scaleByWorldSize = optimization.scaleLrByWorldSize
        optimizerConfig.accumulate = optimization.accumulate
        optimizerConfig.clipNorm = optimization.clipNorm
        var config = TrainingConfig(dataPath: dataOptions.data, model: modelConfig, optimizer: optimizerConfig)
        config.evalPath = dataOptions.eval
        config.evalFraction = dataOptions.evalFraction
        config.loss = training.loss
        config.batchSize = training.batchSize
        config.epochs = training.epochs
        config.steps = training.steps
        config.seed = training.seed
        config.evalEvery = evaluation.evalEvery
        config.logEvery = output.logEvery
        config.metricsPath = output.metricsOut
        config.tensorBoardDir = output.tensorBoard
        config.checkpointDir = checkpoints.checkpointDir
        config.debug = safety.debug
        config.debugCheckEvery = safety.debugCheckEvery
        config.checkpointEvery = checkpoints.checkpointEvery
        config.checkpointEverySeconds = checkpoints.checkpointEverySeconds
        config.keep = checkpoints.keep
        config.selectionMetric = evaluation.selectMetric
        config.earlyStopPatience = evaluation.earlyStopPatience
        config.earlyStopMinDelta = evaluation.earlyStopPatience == nil ? nil : evaluation.earlyStopMinDelta
        config.rankingK = evaluation.k
        config.resume = checkpoints.resume
        config.autoResume = checkpoints.autoResume
        config.restartData = checkpoints.restartData ? true : nil
        config.skipNonFinite = safety.skipNonfinite
        config.continueOnCheckpointFailure = checkpoints.continueOnCheckpointFailure
        config.preparedData = preparedData.options
        config.bucketBytes = step.bucketKib == 1024 ? nil : step.bucketKib * 1024
        config.embeddingSharding = step.embeddingSharding == .replicated ? nil : step.embeddingSharding
        config.memoryPerRank = step.memoryPerRank?.bytes
        return config
    }

    func run() throws {
        BLASKernels.reexecWithNativeKernelsIfNeeded()
        GEMM.setThreads(step.blasThreads)
        let communicator = try MPIJob.start(collectiveTimeout: safety.collectiveTimeout)
        let rank = communicator.rank
        let progressMode = output.mode(debug: safety.debug)
        // Plain progress lines go to log files: every line says when.
        bootstrapLogging(logging, rank: rank, timestamps: progressMode == .lines)
        if safety.debug && rank == 0 {
            logger.info("debug mode: \(communicator.size) rank(s) on \(communicator.processorName), OpenBLAS \(GEMM.coreName) with \(GEMM.threads) thread(s)")
        }
        let config: TrainingConfig
        do {
            config = try makeConfig().resolvingPreparedData(configFile: shape.modelConfig)   // a prepared dataset shapes the model, checked
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

    func printSummary(_ result: TrainingResult, config: TrainingConfig, worldSize: Int) {
        var lines = ["", "done: \(result.steps) steps, \(result.samples) samples on \(worldSize) rank(s), \(Int(result.samplesPerSecond)) samples/s"]
        if let e = result.finalEvaluation, e.eval_rows == 0 {
            lines.append("final evaluation: none (no evaluation rows: --eval-fraction 0, or an empty evaluation split)")
        } else if let e = result.finalEvaluation {
            lines.append("final evaluation (\(e.eval_rows) rows): auc \(e.auc.map { String(format: "%.4f", $0) } ?? "n/a"), logloss \(String(format: "%.4f", e.logloss)), accuracy \(String(format: "%.4f", e.accuracy))" + (e.calibration.map { String(format: ", calibration %.4f", $0) } ?? "") + (e.rmse.map { String(format: ", rmse %.4f", $0) } ?? "") + (e.mae.map { String(format: ", mae %.4f", $0) } ?? "") + (e.oracle_auc.map { String(format: ", oracle auc %.4f", $0) } ?? ""))
            if let k = e.k, let protocolText = e.ranking_protocol, let hr = e.hit_rate_at_k, let ndcg = e.ndcg_at_k,
               let recall = e.recall_at_k, let mrr = e.mrr {
                lines.append("ranking (\(e.ranked_users ?? 0) users, \(protocolText)): " + String(format: "HR@%ld %.4f, NDCG@%ld %.4f, Recall@%ld %.4f, MRR %.4f", k, hr, k, ndcg, k, recall, mrr))
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
