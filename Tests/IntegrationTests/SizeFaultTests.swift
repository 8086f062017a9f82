import Foundation
import Testing

/// Sizes beyond the machine, through the real binary: each is refused before anything large is
/// allocated (exit 64, a message naming the flag or field and the bytes, a small peak RSS), or,
/// when the data bounds the batch, trains.
@Suite(.serialized)
struct SizeFaultTests {
    @Test func sizesBeyondTheMachineAreRefused() throws {
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("sizes")
        let wide = dir + "/wide.json"
        try #"{"model": "dlrm", "bottom": [65536, 65536], "top": [65536]}"#.write(toFile: wide, atomically: true, encoding: .utf8)
        let cases: [(args: [String], names: [String])] = [
            (["train", "--data", data, "--hidden", "50000,50000"], ["--hidden", "dense parameters", "GiB"]),
            (["train", "--data", data, "--model-config", wide], ["hidden, bottom, top", "dense parameters", "GiB"]),
            (["train", "--data", data, "--model", "dlrm", "--hash-buckets", "5000000", "--memory-per-rank", "4G"],
             ["--memory-per-rank 4.0 GiB", "embedding rows", "--embedding-sharding"]),
            (["train", "--data", data, "--hidden", "4096,4096", "--memory-per-rank", "64M"], ["--memory-per-rank 64.0 MiB", "--hidden"]),
            (["bench", "--case", "mlp:1000000000000", "--windows", "1"], ["mlp:1000000000000", "activations", "TiB"]),
            (["bench", "--case", "dlrm:100000000", "--windows", "1"], ["dlrm:100000000", "TiB"]),
        ]
        for (args, names) in cases {
            let (out, peak) = try RecDist.measured(args + ["--steps", "1"].filter { _ in args[0] == "train" })
            #expect(out.status == 64, "\(args): \(out.all)")
            for name in names { #expect(out.stderr.contains(name), "\(args) should name \(name): \(out.stderr)") }
            #expect(!out.all.contains("failed to allocate") && peak > 0 && peak < 1024, "\(args): peak RSS \(peak) MB")
        }
    }

    /// A batch never exceeds the data: a huge --batch-size on a small file trains, with buffers for the file's rows.
    @Test func aBatchNeverExceedsTheData() throws {
        let data = try RecDist.synthData(rows: 2000)
        for model in ["mlp", "dlrm"] {
            let (out, peak) = try RecDist.measured(["train", "--data", data, "--model", model, "--batch-size", "1000000000000", "--steps", "2"])
            #expect(out.status == 0 && out.stdout.contains("done: 2 steps, 3600 samples"), "\(model): \(out.all)")
            #expect(peak < 1024, "\(model): peak RSS \(peak) MB")
        }
    }
}
