import Foundation
import Testing

/// The step cost model of docs/scaling.md (scripts/scaling_model.py) and its calibration
/// (`bench --network`). Timings are not asserted (docs/scaling.md records them); what a step
/// sends is, since the model's predictions at 2 to 1024 ranks rest on it.
@Suite(.serialized)
struct ScalingModelTests {
    /// The bytes the model says a step sends (dense allreduce, the replicated row exchange, the
    /// sharded lookups and gradients) equal what `bench` counted, within 4%, on 2 and 3 ranks.
    @Test(arguments: [2, 3])
    func predictedBytesEqualMeasured(ranks: Int) throws {
        let dir = try RecDist.scratch("scaling-bytes-\(ranks)")
        let report = dir + "/bench.json"
        let bench = try RecDist.ranks(ranks, ["bench", "--case", "dlrm:1024", "--case", "dlrm:1024:row",
                                              "--windows", "1", "--window-seconds", "0.05", "--warmup-steps", "2",
                                              "--warmup-seconds", "0.01", "--sgemm-seconds", "0.05",
                                              "--no-compare-single-rank", "--json-out", report], timeout: 240)
        try #require(bench.status == 0, "\(bench.all)")
        let model = try RecDist.run(RecDist.python, [RecDist.packageRoot + "/scripts/scaling_model.py", "bytes",
                                                     report, "--tolerance", "0.04"])
        #expect(model.status == 0, "\(model.all)")
        #expect(model.stdout.contains("sharded gradients"), "\(model.stdout)")
    }

    /// `bench --network` measures every collective at every size on every rank, and the model
    /// fits a positive latency and bandwidth to them.
    @Test func networkCalibrationFits() throws {
        let dir = try RecDist.scratch("scaling-network")
        let report = dir + "/net.json"
        let bench = try RecDist.ranks(2, ["bench", "--network", "--json-out", report], timeout: 240)
        try #require(bench.status == 0, "\(bench.all)")
        #expect(bench.stdout.contains("allgatherv ms"), "\(bench.stdout)")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any]
        let measurements = try #require(json?["measurements"] as? [[String: Any]])
        #expect(measurements.count == 27, "3 collectives x 9 sizes: \(measurements.count)")
        for m in measurements {
            #expect(m["ranks"] as? Int == 2)
            #expect((m["median_ms"] as? Double ?? 0) > 0, "\(m)")
        }
        let fit = try RecDist.run(RecDist.python, [RecDist.packageRoot + "/scripts/scaling_model.py", "fit", report])
        #expect(fit.status == 0, "\(fit.all)")
        #expect(fit.stdout.components(separatedBy: "Gbit/s").count - 1 == 6, "\(fit.stdout)")
    }
}
