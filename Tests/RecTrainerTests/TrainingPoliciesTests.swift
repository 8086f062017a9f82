import Foundation
@testable import RecTrainer
import Testing

/// The loop's policies alone: when to evaluate and checkpoint, which checkpoint is the best,
/// when to stop early, which progress display; and the run state's data position.
struct TrainingPoliciesTests {
    static func record(step: Int, auc: Double?, logloss: Double = 0.5) -> EvaluationRecord {
        EvaluationRecord(step: step, epoch: 1, samples: 0, train_loss: nil, auc: auc, logloss: logloss, accuracy: 0.5,
                         mean_prediction: 0.5, mean_label: 0.5, eval_rows: 10, oracle_auc: nil, samples_per_s: 0,
                         elapsed_s: 0, world_size: 1, model: "mlp")
    }

    @Test func evaluationIsDueOnTheGridAndAtTheEnd() {
        let every3 = EvaluationPolicy(every: 3)
        #expect((1...7).filter { every3.isDue(step: $0, isLast: $0 == 7) } == [3, 6, 7])
        let atEnd = EvaluationPolicy(every: 0)
        #expect((1...7).filter { atEnd.isDue(step: $0, isLast: $0 == 7) } == [7])
    }

    @Test func checkpointIsDueOnTheGridOnRequestAtTheEndAndAtANewBest() {
        let p = CheckpointPolicy(everySteps: 4, everySeconds: 0, metric: .auc)
        #expect((1...10).filter { p.isDue(step: $0, requested: false, isLast: $0 == 10, newBest: false, stopping: false) } == [4, 8, 10])
        #expect(p.isDue(step: 5, requested: true, isLast: false, newBest: false, stopping: false))
        #expect(p.isDue(step: 5, requested: false, isLast: false, newBest: true, stopping: false))
        #expect(p.isDue(step: 5, requested: false, isLast: false, newBest: false, stopping: true))
        #expect(!CheckpointPolicy(everySteps: 0, everySeconds: 0, metric: .auc)
            .isDue(step: 4, requested: false, isLast: false, newBest: false, stopping: false))
        let timed = CheckpointPolicy(everySteps: 0, everySeconds: 30, metric: .auc)
        #expect(!timed.timerExpired(elapsed: 29.9) && timed.timerExpired(elapsed: 30))
        #expect(!p.timerExpired(elapsed: 1e9), "no timer without --checkpoint-every-seconds")
    }

    @Test func bestCheckpointFollowsTheMetricsDirection() {
        var state = RunState()
        let auc = CheckpointPolicy(everySteps: 0, everySeconds: 0, metric: .auc)
        auc.noteCandidate("step-1", record: Self.record(step: 1, auc: 0.70), in: &state)
        auc.noteCandidate("step-2", record: Self.record(step: 2, auc: 0.65), in: &state)
        auc.noteCandidate("step-3", record: Self.record(step: 3, auc: nil), in: &state)
        auc.noteCandidate("step-4", record: nil, in: &state)
        #expect(state.bestCheckpoint == "step-1" && state.bestMetric == 0.70)
        auc.noteCandidate("step-5", record: Self.record(step: 5, auc: 0.71), in: &state)
        #expect(state.bestCheckpoint == "step-5")

        var lower = RunState()
        let logloss = CheckpointPolicy(everySteps: 0, everySeconds: 0, metric: .logloss)
        logloss.noteCandidate("a", record: Self.record(step: 1, auc: 0.7, logloss: 0.4), in: &lower)
        logloss.noteCandidate("b", record: Self.record(step: 2, auc: 0.9, logloss: 0.5), in: &lower)
        logloss.noteCandidate("c", record: Self.record(step: 3, auc: 0.9, logloss: .nan), in: &lower)
        #expect(lower.bestCheckpoint == "a" && lower.bestMetric == 0.4)
    }

    @Test func earlyStopCountsEvaluationsWithoutImprovementBeyondTheMinDelta() {
        let policy = EarlyStopPolicy(metric: .auc, patience: 2, minDelta: 0.01)
        var state = RunState()
        var v = policy.judge(0.70, state: &state)
        #expect(!v.stop && v.improved && !v.missing && state.evaluationsSinceBest == 0)
        state.bestMetric = 0.70   // as the checkpoint of that evaluation records it
        v = policy.judge(0.705, state: &state)   // better, but by less than the min-delta
        #expect(!v.stop && v.improved && state.evaluationsSinceBest == 1 && state.earlyStopBest == 0.70)
        v = policy.judge(nil, state: &state)     // no finite metric: counts as no improvement
        #expect(v.stop && v.missing && !v.improved && state.evaluationsSinceBest == 2)

        var fresh = RunState()
        _ = policy.judge(0.5, state: &fresh)
        _ = policy.judge(0.4, state: &fresh)
        let recovered = policy.judge(0.6, state: &fresh)
        #expect(!recovered.stop && fresh.evaluationsSinceBest == 0 && fresh.earlyStopBest == 0.6)
        #expect(!policy.judge(.infinity, state: &fresh).improved, "an infinite metric is no improvement")
    }

    @Test func runStateAdvancesThroughEpochs() {
        var state = RunState()
        for _ in 0..<3 { state.advance(by: 40, epochRows: 100) }   // 40, 80, then 100 = the end (20 rows: counted as given)
        #expect(state.step == 3 && state.epoch == 1 && state.offset == 0 && state.samplesSeen == 120)
        #expect(state.completedEpochs == 1)
        state.advance(by: 40, epochRows: 100)
        #expect(state.epoch == 1 && state.offset == 40 && state.completedEpochs == 2)
    }

    @Test func progressBarOnlyWhenAPersonWatches() {
        func mode(_ env: [String: String], tty: Bool) -> ProgressMode {
            ProgressMode.automatic(environment: env, standardOutputIsTerminal: tty)
        }
        #expect(mode([:], tty: true) == .bar)
        #expect(mode([:], tty: false) == .lines)
        #expect(mode(["TERM": "dumb"], tty: true) == .lines)
        // Open MPI gives ranks a pseudo-terminal: isatty says nothing under mpirun.
        #expect(mode(["OMPI_COMM_WORLD_SIZE": "2"], tty: true) == .lines)
        // launch.sh says whether its own output is a terminal.
        #expect(mode(["OMPI_COMM_WORLD_SIZE": "2", "REC_DIST_TERMINAL": "1"], tty: true) == .bar)
        #expect(mode(["OMPI_COMM_WORLD_SIZE": "2", "REC_DIST_TERMINAL": "0"], tty: true) == .lines)
        #expect(mode(["REC_DIST_TERMINAL": "1", "TERM": "dumb"], tty: true) == .lines)
    }
}
