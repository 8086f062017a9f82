import Foundation
import Testing

/// Optimizers, schedules, accumulation, clipping, metrics and early stopping end to end under
/// real `mpirun` ranks, through launch.sh. Serialized: MPI jobs share 2 cores.
@Suite(.serialized)
struct OptimizationTests {
    /// One family per case, each as in DistributedTrainingTests: the same global batch (12) gives
    /// the same parameters on 1, 2 and 3 ranks, over 25 steps that cross the epoch boundary.
    ///
    /// The dlrm cases use small MLPs (bottom 32-16, top 32; 2 dense buckets with --bucket-kib 16)
    /// so that no ReLU pre-activation sits within rounding distance of 0; see
    /// DistributedTrainingTests.sameParametersForOneTwoThreeRanks for why that matters. With the
    /// default MLPs the adamw case had a pre-activation of 3.7e-8 to 1.0e-7 depending on the
    /// rounding (1-3 ranks x OpenBLAS Prescott, Sandybridge, Haswell, SkylakeX): one rounding
    /// change from flipping. Measured with these sizes: the smallest |pre-activation| is 7.5e-6
    /// (adagrad with accumulation) to 1.3e-5 (adamw), 47x or more its spread over those 12
    /// roundings, and all 12 runs' parameters agree within 2.7e-7 (mlp: 7e-5, 4.5e-8); hence the
    /// tolerance of 1e-5.
    @Test(arguments: [
        ("optimizers", ["--model", "dlrm", "--hash-buckets", "500", "--bottom", "32,16", "--top", "32", "--bucket-kib", "16",
                        "--optimizer", "adamw", "--weight-decay", "0.05"]),
        ("optimizers", ["--model", "dlrm", "--hash-buckets", "500", "--bottom", "32,16", "--top", "32", "--bucket-kib", "16",
                        "--optimizer", "rowwise-adagrad", "--lr", "0.05", "--weight-decay", "0.001"]),
        ("schedules", ["--model", "dlrm", "--hash-buckets", "500", "--bottom", "32,16", "--top", "32", "--bucket-kib", "16",
                       "--optimizer", "adam", "--lr-schedule", "cosine", "--warmup-steps", "5", "--min-lr-ratio", "0.1"]),
        ("schedules", ["--model", "mlp", "--optimizer", "momentum", "--lr-schedule", "step", "--lr-decay-every", "8"]),
        ("accumulation and clipping", ["--model", "dlrm", "--hash-buckets", "500", "--bottom", "32,16", "--top", "32",
                                       "--bucket-kib", "16", "--optimizer", "adagrad", "--lr", "0.05",
                                       "--accumulate", "3", "--clip-norm", "0.1"]),
    ])
    func sameParametersForOneTwoThreeRanks(family: String, flags: [String]) throws {
        let data = try RecDist.synthData(rows: 250)
        var checkpoints: [Int: [String: [Float]]] = [:]
        for n in [1, 2, 3] {
            let dir = try RecDist.scratch("optim-equivalence-\(n)")
            let out = try RecDist.ranks(n, ["train", "--data", data, "--eval-fraction", "0", "--batch-size", "\(12 / n)",
                                            "--steps", "25", "--seed", "3", "--checkpoint-dir", dir] + flags, timeout: 240)
            #expect(out.status == 0, "N=\(n): \(out.all)")
            #expect(out.stdout.contains("on \(n) rank(s)"))
            checkpoints[n] = try RecDist.checkpointTensors(dir)
        }
        let one = try #require(checkpoints[1])
        for n in [2, 3] {
            let diff = RecDist.maxDifference(one, try #require(checkpoints[n]))
            #expect(diff < 1e-5, "\(family) \(flags): N=\(n) differs from N=1 by \(diff)")
        }
    }

    /// Stopped at step 8 (the checkpoint an uninterrupted run wrote there, copied) and resumed on 2
    /// ranks, a run with a warmup-cosine schedule, accumulation, clipping and AdamW ends with the
    /// same bytes as the uninterrupted run.
    @Test func resumeWithScheduleAndAccumulationIsBitwiseIdentical() throws {
        let data = try RecDist.synthData(rows: 2000)
        let common = ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "400", "--batch-size", "16",
                      "--seed", "9", "--steps", "20", "--optimizer", "adamw", "--lr-schedule", "cosine", "--warmup-steps", "4",
                      "--accumulate", "2", "--clip-norm", "0.5", "--checkpoint-every", "4", "--keep", "10"]
        let whole = try RecDist.scratch("optim-whole"), parts = try RecDist.scratch("optim-parts")
        var out = try RecDist.ranks(2, common + ["--checkpoint-dir", whole])
        #expect(out.status == 0, "\(out.all)")
        try FileManager.default.copyItem(atPath: whole + "/step-00000008", toPath: parts + "/step-00000008")
        out = try RecDist.ranks(2, common + ["--checkpoint-dir", parts, "--auto-resume"])
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("resuming from \(parts)/step-00000008"))
        for file in ["model.safetensors", "optimizer.safetensors"] {
            let a = try Data(contentsOf: URL(fileURLWithPath: whole + "/step-00000020/" + file))
            let b = try Data(contentsOf: URL(fileURLWithPath: parts + "/step-00000020/" + file))
            #expect(a == b, "\(file) differs after resume")
        }
    }

    /// Early stopping under mpirun: rank 0 decides, every rank stops after the same step and the
    /// job exits 0 (no rank left in a collective). A min-delta of 10 makes the decision certain:
    /// the evaluations at 4 and 6 do not improve on the one at 2.
    @Test(arguments: [2, 3])
    func earlyStoppingEndsEveryRank(ranks: Int) throws {
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("optim-early")
        let out = try RecDist.ranks(ranks, ["train", "--data", data, "--model", "dlrm", "--hash-buckets", "400",
                                            "--batch-size", "16", "--steps", "400", "--eval-every", "2",
                                            "--early-stop-patience", "2", "--early-stop-min-delta", "10",
                                            "--select-metric", "logloss", "--checkpoint-dir", dir,
                                            "--metrics-out", dir + "/metrics.jsonl"], timeout: 120)
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("done: 6 steps"), "\(out.stdout)")
        #expect(out.stdout.contains("stopped early at step 6"))
        #expect(out.stdout.contains("best checkpoint (logloss): \(dir)/step-0000000"))
        let records = try RecDist.metrics(dir + "/metrics.jsonl")
        #expect(records.map { $0["step"] as? Int } == [2, 4, 6])
        for r in records {
            #expect((r["calibration"] as? Double)?.isFinite == true)
            #expect((r["rmse"] as? Double).map { $0 > 0 && $0 < 1 } == true)
            #expect((r["mae"] as? Double).map { $0 > 0 && $0 < 1 } == true)
        }
    }

    /// Leave-last-out on MovieLens 100K with 99 sampled negatives per user (the NCF protocol),
    /// on 2 ranks: HR/NDCG/Recall@5, MRR and HR/NDCG@10 in the log line and the metrics, with the
    /// protocol stated; early stopping and the best checkpoint on NDCG@5.
    @Test(.enabled(if: SharedData.available, "the shared datasets (../shared/data) are not here"))
    func leaveLastOutRankingMetricsUnderMPI() throws {
        let dir = try RecDist.scratch("optim-ranking")
        let prepared = dir + "/prepared"
        let prep = try RecDist.single(["prepare", "--format", "movielens-100k", "--input", SharedData.path("movielens-100k/u.data"),
                                       "--out", prepared, "--eval-negatives", "99"], timeout: 120)
        #expect(prep.status == 0, "\(prep.all)")
        let out = try RecDist.ranks(2, ["train", "--data", prepared, "--model", "dlrm", "--steps", "30", "--batch-size", "64",
                                        "--embedding-dim", "8", "--bottom", "32", "--top", "32", "--eval-every", "10",
                                        "--k", "5", "--select-metric", "ndcg", "--early-stop-patience", "5",
                                        "--checkpoint-dir", dir + "/ck", "--metrics-out", dir + "/metrics.jsonl"], timeout: 240)
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("1 held-out positive vs 99 sampled negatives per user: HR@5 "), "\(out.stdout)")
        #expect(out.stdout.contains("HR@10 "))
        #expect(out.stdout.contains("best checkpoint (NDCG@5)"))
        let record = try #require(try RecDist.metrics(dir + "/metrics.jsonl").last)
        #expect(record["ranking_protocol"] as? String == "1 held-out positive vs 99 sampled negatives per user")
        #expect(record["k"] as? Int == 5)
        let users = try #require(record["ranked_users"] as? Int)
        #expect(users > 900 && users == (record["eval_rows"] as? Int ?? 0) / 100, "one group of 100 candidates per evaluated user")
        let hr = try #require(record["hit_rate_at_k"] as? Double), hr10 = try #require(record["hit_rate_at_10"] as? Double)
        let ndcg = try #require(record["ndcg_at_k"] as? Double), mrr = try #require(record["mrr"] as? Double)
        #expect(hr > 0 && hr <= hr10 && hr10 <= 1)
        #expect(ndcg <= hr && mrr > 0 && mrr <= 1)
        #expect(record["recall_at_k"] as? Double == hr, "one positive per user: recall is the hit rate")
    }

    @Test(arguments: [
        (["--weight-decay", "-1"], "--weight-decay"),
        (["--warmup-steps", "-2"], "--warmup-steps"),
        (["--lr-schedule", "exponential"], "cosine"),
        (["--min-lr-ratio", "0.1"], "--min-lr-ratio"),
        (["--lr-schedule", "cosine", "--min-lr-ratio", "2"], "--min-lr-ratio"),
        (["--lr-decay-every", "10"], "--lr-decay-every"),
        (["--lr-schedule", "step", "--lr-decay-factor", "0"], "--lr-decay-factor"),
        (["--accumulate", "0"], "--accumulate"),
        (["--clip-norm", "0"], "--clip-norm"),
        (["--early-stop-patience", "3"], "--eval-every"),
        (["--early-stop-patience", "0", "--eval-every", "5"], "--early-stop-patience"),
        (["--k", "0"], "--k"),
        (["--select-metric", "f1"], "ndcg"),
    ])
    func badFlagsAreRejectedBeforeAnyWork(flags: [String], mention: String) throws {
        let out = try RecDist.single(["train", "--data", "/nonexistent.tsv"] + flags)
        #expect(out.status == 64, "\(out.all)")
        #expect(out.stderr.contains(mention), "\(out.stderr)")
    }
}
