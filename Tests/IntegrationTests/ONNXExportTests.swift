import Foundation
import Testing

/// `export --format onnx`: ONNX Runtime, fed the inputs model.json describes, reproduces
/// `rec-dist predict`, and onnx.checker accepts the file, for every model family.
@Suite(.serialized)
struct ONNXExportTests {
    /// For each model (on raw Criteo TSV: hashing and log1p in the graph; on a prepared copy:
    /// identity transform, vocabulary ids; on a prepared MovieLens folder: user and item fields),
    /// examples/score_onnx.py --check scores the rows that `predict` scored, within 1e-5.
    @Test(arguments: ["mlp:tsv", "dlrm:tsv", "logreg:tsv", "wide-deep:tsv", "dlrm:prepared", "wide-deep:prepared",
                      "ncf:movies", "two-tower:movies", "dlrm:movies"])
    func onnxRuntimeReproducesPredictions(variant: String) throws {
        let parts = variant.split(separator: ":").map(String.init)
        let model = parts[0], input = parts[1], prepared = input != "tsv"
        let data = input == "tsv" ? try RecDist.synthData(rows: 2000)
            : input == "prepared" ? try UsingModelData.preparedSynth(rows: 2000) : try UsingModelData.preparedMovieLens()
        let root = try RecDist.scratch("onnx-\(model)-\(input)")
        let extra = ["mlp", "dlrm"].contains(model) ? [] : ["--activation", "tanh"]
        var out = try RecDist.ranks(2, ["train", "--data", data, "--model", model, "--steps", "30", "--checkpoint-dir", root]
                                       + (prepared ? [] : ["--hash-buckets", "1000"]) + extra)   // a prepared dataset sizes its own tables
        #expect(out.status == 0, "\(out.all)")
        let split = prepared ? ["--split", "valid"] : []
        out = try RecDist.single(["predict", "--checkpoint", root, "--input", data, "--limit", "100"] + split)
        #expect(out.status == 0, "\(out.all)")
        let ours = out.stdout.split(separator: "\n").dropFirst().compactMap { Double($0.split(separator: ",").last!) }
        out = try RecDist.single(["export", "--checkpoint", root, "--out", root + "/onnx", "--format", "onnx"])
        try #require(out.status == 0, "\(out.all)")
        #expect(FileManager.default.fileExists(atPath: root + "/onnx/model.onnx"))
        #expect(!FileManager.default.fileExists(atPath: root + "/onnx/model.safetensors"))

        let description = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: root + "/onnx/model.json"))) as! [String: Any]
        let onnx = try #require(description["onnx"] as? [String: Any])
        let inputs = (onnx["inputs"] as! [[String: Any]]).map { $0["name"] as! String }
        // ncf and two-tower read only the ids, mlp only the dense values.
        #expect(inputs == (["ncf", "two-tower"].contains(model) ? ["categorical"] : model == "mlp" ? ["dense"] : ["dense", "categorical"]),
                "\(inputs)")
        let output = (onnx["outputs"] as! [[String: Any]])[0]
        let shape = output["shape"] as? [Any]
        #expect(output["name"] as? String == "probability" && shape?.first as? String == "batch" && shape?.last as? Int == 1, "\(output)")

        let py = try RecDist.run(RecDist.python, [RecDist.packageRoot + "/examples/score_onnx.py", root + "/onnx", data,
                                                  "--limit", "100", "--check"] + split)
        try #require(py.status == 0, "examples/score_onnx.py failed (./launch.sh test creates .venv with onnx and onnxruntime): \(py.all)")
        let theirs = py.stdout.split(separator: "\n").compactMap { Double($0) }
        #expect(ours.count == 100 && theirs.count == 100)
        let worst = zip(ours, theirs).map { abs($0 - $1) }.max() ?? 1
        print("onnx agreement \(variant): max |onnxruntime - predict| = \(worst) over \(theirs.count) rows")
        #expect(worst < 1e-5, "ONNX Runtime and rec-dist predictions differ by \(worst)")
        #expect(Set(ours.map { ($0 * 1e4).rounded() }).count > 10)
    }

    /// --format accepts only what it can write, naming the choices.
    @Test func unknownFormatIsRefused() throws {
        let out = try RecDist.single(["export", "--checkpoint", "/nonexistent/ck", "--out", "/tmp/x", "--format", "tflite"])
        #expect(out.status != 0)
        #expect(out.stderr.contains("safetensors") && out.stderr.contains("onnx"), "\(out.stderr)")
    }
}
