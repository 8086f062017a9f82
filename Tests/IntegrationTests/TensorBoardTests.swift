import Foundation
import Testing

/// `train --tensorboard DIR` on real MPI ranks, read back with TensorBoard's own reader
/// (scripts/read_tensorboard.py, the `tensorboard` pip package's EventAccumulator).
struct TensorBoardTests {
    /// Tags of an evaluation: `<section>/<metrics-out key>`.
    static let sections = ["eval", "train", "time"]
    /// Numbers of a metrics-out record that are not curves (the event's step, the run's constants).
    static let notScalars: Set = ["step", "world_size", "eval_rows", "k", "ranked_users"]

    /// Rank 0 alone writes one event file, and its scalars are the values --metrics-out wrote at
    /// each evaluation (to float32 precision), with the progress reports between them.
    @Test func tensorBoardReadsBackTheMetricsLog() throws {
        let dir = try RecDist.scratch("tensorboard")
        let out = try RecDist.ranks(2, ["train", "--data", try RecDist.synthData(rows: 20_000), "--model", "mlp",
                                        "--batch-size", "32", "--steps", "300", "--eval-every", "100",
                                        "--log-every", "50", "--clip-norm", "10",
                                        "--tensorboard", dir + "/tb", "--metrics-out", dir + "/m.jsonl"])
        try #require(out.status == 0, "\(out.all)")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/tb")
        #expect(files.count == 1 && files[0].hasPrefix("events.out.tfevents."), "\(files)")

        let py = try RecDist.run(RecDist.python, [RecDist.packageRoot + "/scripts/read_tensorboard.py", dir + "/tb"])
        try #require(py.status == 0, "scripts/read_tensorboard.py failed (./launch.sh test creates .venv with tensorboard): \(py.all)")
        let read = try JSONSerialization.jsonObject(with: Data(py.stdout.utf8)) as! [String: [[Double]]]
        let records = try RecDist.metrics(dir + "/m.jsonl")
        let steps = records.map { ($0["step"] as! NSNumber).doubleValue }
        #expect(steps == [100, 200, 300])

        // Every number of every record, at its step, under <section>/<key>.
        var worst = 0.0, compared = 0
        let keys = Set(records.flatMap { $0.compactMap { $0.value is NSNumber ? $0.key : nil } }).subtracting(Self.notScalars)
        for key in keys.sorted() {
            let tags = Self.sections.map { "\($0)/\(key)" }.filter { read[$0] != nil }
            try #require(tags.count == 1, "metrics-out key \(key): TensorBoard tags \(tags)")
            let points = read[tags[0]]!
            #expect(points.map { $0[0] } == steps, "\(tags[0]) steps")
            for (record, point) in zip(records, points) {
                let expected = (record[key] as! NSNumber).doubleValue
                let difference = abs(point[1] - expected)
                // Within one float32 unit in the last place: simple_value is a float32, and
                // Foundation's JSON parsing of the two sides may each be off in the last digit.
                #expect(difference <= Double(Float(expected).ulp),
                        "\(tags[0]) at step \(point[0]): TensorBoard \(point[1]), metrics-out \(expected)")
                worst = max(worst, difference / max(abs(expected), 1e-30))
                compared += 1
            }
        }
        #expect(keys.isSuperset(of: ["auc", "logloss", "train_loss", "lr", "grad_norm", "samples_per_s",
                                     "forward_ms", "backward_ms", "communication_ms", "optimizer_ms"]), "\(keys)")
        // Nothing else but the progress reports.
        let evaluationTags = Set(keys.flatMap { key in Self.sections.map { "\($0)/\(key)" } })
        let progress = Set(read.keys).subtracting(evaluationTags)
        #expect(progress == ["progress/train_loss", "progress/lr", "progress/samples_per_s"], "\(progress)")
        for tag in progress { #expect(read[tag]!.map { $0[0] } == [50, 100, 150, 200, 250, 300], "\(tag) steps") }
        // A progress report at an evaluation step has the same mean loss since the last evaluation.
        for (record, point) in zip(records, read["progress/train_loss"]!.filter { steps.contains($0[0]) }) {
            let loss = (record["train_loss"] as! NSNumber).doubleValue
            #expect(abs(point[1] - loss) <= Double(Float(loss).ulp), "progress/train_loss at step \(point[0])")
        }
        print("TensorBoard read-back: \(read.count) tags (\(evaluationTags.intersection(read.keys).count) per evaluation at steps \(steps.map { Int($0) }), \(progress.count) per progress report), \(compared) values against metrics-out, largest relative difference \(worst)")
    }

    /// An event file rank 0 cannot create stops every rank before the first step, naming the path
    /// and the flag.
    @Test func uncreatableEventFileStopsEveryRank() throws {
        let dir = try RecDist.scratch("bad-tensorboard")
        let blocker = dir + "/a-file"
        try "not a directory".write(toFile: blocker, atomically: true, encoding: .utf8)
        let out = try RecDist.ranks(2, ["train", "--data", try RecDist.synthData(rows: 250), "--batch-size", "4",
                                        "--tensorboard", blocker + "/tb"], timeout: 60)
        #expect(!out.timedOut)
        #expect(out.status != 0)
        #expect(out.stderr.contains(blocker + "/tb/events.out.tfevents.") && out.stderr.contains("--tensorboard"), "\(out.stderr)")
        #expect(!out.all.contains("step 1/"), "training started: \(out.all)")
    }
}
