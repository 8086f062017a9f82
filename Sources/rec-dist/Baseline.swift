import ArgumentParser
import Foundation
import RecInference
import RecTrainer

struct Baseline: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score a leave-last-out split with the most-popular-items baseline (HR@K, NDCG@K).",
        discussion: """
        Every candidate of each user's group (the held-out positive and its sampled negatives) is \
        scored by its number of positive rows in the training split; ranks, ties and metrics as in \
        `train`'s leave-last-out evaluation, so the figures compare directly.
        """)

    @Option(help: "A prepared dataset (rec-dist prepare, --split leave-last-out).")
    var data: String
    @Option(help: "The split to rank: valid or test.")
    var evalSplit: String = "test"
    @Option(parsing: .unconditional, help: "The cut-off K of HR@K and NDCG@K.")
    var k: Int = 10

    func validate() throws {
        if !["valid", "test"].contains(evalSplit) { throw ValidationError("--eval-split \(evalSplit): use valid or test.") }
        if k < 1 { throw outOfRange("--k", k, "use 1 or more") }
    }

    func run() throws {
        try exitingOnError {
            let r = try PopularityBaseline.evaluate(path: data, split: evalSplit, k: k)
            print(String(format: "most-popular on %@ (%ld users): HR@%ld %.4f, NDCG@%ld %.4f", r.split, r.groups, k, r.hitRate, k, r.ndcg))
        }
    }
}
