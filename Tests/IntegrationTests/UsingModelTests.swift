import Foundation
import Testing

/// Small datasets for the commands that use a trained model.
enum UsingModelData {
    /// A tiny MovieLens-100K folder (u.data, u.user, u.item in its formats): 40 users, 30 items.
    /// Items 1-6 are liked by everyone, the rest by half the users; u.item has titles and genres.
    static func movieLensFolder() throws -> String {
        let dir = try RecDist.scratch("tiny-ml")
        var seeded = Seeded(state: 12345)
        var data = ""
        var time = 880_000_000
        for user in 1...40 {
            for item in 1...30 where seeded.next() % 100 < 45 || item <= 3 {
                let liked = item <= 6 || (item + user) % 2 == 0
                let rating = liked ? 4 + Int(seeded.next() % 2) : 1 + Int(seeded.next() % 3)
                time += 1
                data += "\(user)\t\(item)\t\(rating)\t\(time)\n"
            }
        }
        try data.write(toFile: dir + "/u.data", atomically: true, encoding: .utf8)
        var users = ""
        for user in 1...40 { users += "\(user)|\(20 + user % 30)|\(user % 2 == 0 ? "M" : "F")|\(["student", "writer", "other"][user % 3])|\(10000 + user * 7)\n" }
        try users.write(toFile: dir + "/u.user", atomically: true, encoding: .utf8)
        var items = ""
        for item in 1...30 {
            var flags = [String](repeating: "0", count: 19)
            flags[1 + item % 18] = "1"
            items += "\(item)|Movie \(item) (19\(70 + item % 30))|01-Jan-19\(70 + item % 30)||http://x|" + flags.joined(separator: "|") + "\n"
        }
        try items.write(toFile: dir + "/u.item", atomically: true, encoding: .isoLatin1)
        return dir
    }

    /// The tiny MovieLens folder, prepared (leave-last-out, 4 evaluation negatives).
    static func preparedMovieLens() throws -> String {
        let folder = try movieLensFolder()
        let out = try RecDist.single(["prepare", "--format", "movielens-100k", "--input", folder + "/u.data",
                                      "--out", folder + "/prepared", "--eval-negatives", "4"])
        guard out.status == 0 else { throw TestDataError(message: out.all) }
        return folder + "/prepared"
    }

    /// A prepared copy of the synthetic dataset (criteo format, random split).
    static func preparedSynth(rows: Int) throws -> String {
        let data = try RecDist.synthData(rows: rows)
        let dir = try RecDist.scratch("prepared-synth") + "/data"
        let out = try RecDist.single(["prepare", "--format", "criteo", "--input", data, "--out", dir, "--hash-buckets", "1000"])
        guard out.status == 0 else { throw TestDataError(message: out.all) }
        return dir
    }

    /// xorshift, for reproducible test data.
    struct Seeded {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
    }

    /// AUC by counting pairs (the reference).
    static func auc(_ scores: [Double], _ labels: [Double]) -> Double {
        var wins = 0.0, pairs = 0.0
        for i in scores.indices where labels[i] == 1 {
            for j in scores.indices where labels[j] == 0 {
                pairs += 1
                wins += scores[i] > scores[j] ? 1 : scores[i] == scores[j] ? 0.5 : 0
            }
        }
        return wins / pairs
    }

    /// The rows of a CSV with a header, split on commas.
    static func csv(_ text: String) -> (header: [String], rows: [[String]]) {
        let lines = text.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        return (lines.first ?? [], Array(lines.dropFirst()))
    }
}

/// `rec-dist predict` on prepared datasets.
struct PredictPreparedTests {
    /// The probabilities predict writes for the valid split give exactly the AUC training
    /// reported on that split, and carry its labels.
    @Test func predictOnAPreparedSplitReproducesTheTrainingEvaluation() throws {
        let data = try UsingModelData.preparedSynth(rows: 3000)
        let dir = try RecDist.scratch("predict-prepared")
        var out = try RecDist.single(["train", "--data", data, "--model", "dlrm", "--steps", "40", "--batch-size", "64",
                                      "--metrics-out", dir + "/m.jsonl", "--checkpoint-dir", dir + "/ck"])
        try #require(out.status == 0, "\(out.all)")
        out = try RecDist.single(["predict", "--checkpoint", dir + "/ck", "--input", data, "--split", "valid", "--out", dir + "/s.csv"])
        try #require(out.status == 0, "\(out.all)")
        #expect(out.stderr.contains("rows/s"), "\(out.all)")
        let (header, rows) = UsingModelData.csv(try String(contentsOfFile: dir + "/s.csv", encoding: .utf8))
        #expect(header == ["split", "row", "label", "probability"])
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: data + "/manifest.json"))) as! [String: Any]
        let valid = (manifest["splits"] as! [[String: Any]]).first { $0["name"] as? String == "valid" }!
        #expect(rows.count == valid["rows"] as! Int)
        #expect(rows.enumerated().allSatisfy { $1[0] == "valid" && $1[1] == "\($0)" })
        #expect(rows.filter { $0[2] == "1" }.count == valid["positives"] as! Int)
        let auc = UsingModelData.auc(rows.map { Double($0[3])! }, rows.map { Double($0[2])! })
        let reported = try #require(RecDist.metrics(dir + "/m.jsonl").last?["auc"] as? Double)
        #expect(abs(auc - reported) < 1e-6, "predict's AUC \(auc), training's \(reported)")

        // --split all: every split, in order; --limit per split.
        out = try RecDist.single(["predict", "--checkpoint", dir + "/ck", "--input", data, "--split", "all", "--limit", "5"])
        #expect(out.status == 0, "\(out.all)")
        let all = UsingModelData.csv(out.stdout).rows
        #expect(all.map { $0[0] } == Array(repeating: "train", count: 5) + Array(repeating: "valid", count: 5) + Array(repeating: "test", count: 5))
        // The same scores as the full run (to float rounding: the batch size changes sgemm's blocking).
        for (a, b) in zip(all[5..<10], rows.prefix(5)) { #expect(abs(Double(a[3])! - Double(b[3])!) < 1e-6) }
    }

    /// A checkpoint of another dataset, or of raw TSV, is refused with what differs and what to do.
    @Test func predictRefusesACheckpointOfAnotherDataset() throws {
        let synth = try UsingModelData.preparedSynth(rows: 2000)
        let movies = try UsingModelData.preparedMovieLens()
        let tsv = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("predict-mismatch")
        var out = try RecDist.single(["train", "--data", movies, "--model", "dlrm", "--steps", "3", "--checkpoint-dir", dir + "/ml"])
        try #require(out.status == 0, "\(out.all)")
        out = try RecDist.single(["train", "--data", tsv, "--model", "dlrm", "--hash-buckets", "1000", "--steps", "3", "--checkpoint-dir", dir + "/tsv"])
        try #require(out.status == 0, "\(out.all)")

        out = try RecDist.single(["predict", "--checkpoint", dir + "/ml", "--input", synth])
        #expect(out.status == 1)
        #expect(out.stderr.contains("another schema") && out.stderr.contains(movies), "\(out.stderr)")
        out = try RecDist.single(["predict", "--checkpoint", dir + "/tsv", "--input", synth])
        #expect(out.status == 1)
        #expect(out.stderr.contains("raw Criteo TSV"), "\(out.stderr)")
        out = try RecDist.single(["predict", "--checkpoint", dir + "/ml", "--input", tsv])
        #expect(out.status == 1)
        #expect(out.stderr.contains("movielens-100k") && out.stderr.contains("\(tsv):1:"), "\(out.stderr)")
        out = try RecDist.single(["predict", "--checkpoint", dir + "/ml", "--input", movies, "--split", "nope"])
        #expect(out.status == 64)
        #expect(out.stderr.contains("--split nope"), "\(out.stderr)")
    }
}

/// `rec-dist predict` on raw rows of a checkpoint trained on a prepared dataset, and `prepare --like`.
struct PredictRawTests {
    /// Scores by (user id, item id) of the positive rows (label 1) of a predict output with --ids.
    static func positives(_ text: String) -> [String: Double] {
        let (header, rows) = UsingModelData.csv(text)
        let label = header.firstIndex(of: "label")!, p = header.firstIndex(of: "probability")!
        let u = header.firstIndex(of: "user_id")!, i = header.firstIndex(of: "item_id")!
        var scores: [String: Double] = [:]
        for row in rows where row[label] == "1" { scores[row[u] + "," + row[i]] = Double(row[p])! }
        return scores
    }

    /// Raw MovieLens rows score exactly as the same interactions in the prepared dataset the model
    /// was trained on: same vocabulary ids, standardized side features and label rule. A copy of
    /// the rows with no side files beside it uses the recorded ones; an unseen user gets the
    /// out-of-vocabulary id.
    @Test func rawRowsScoreAsTheirPreparedRows() throws {
        let prepared = try UsingModelData.preparedMovieLens()
        let folder = (prepared as NSString).deletingLastPathComponent
        let dir = try RecDist.scratch("predict-raw")
        var out = try RecDist.single(["train", "--data", prepared, "--model", "dlrm", "--steps", "30", "--checkpoint-dir", dir + "/ck"])
        try #require(out.status == 0, "\(out.all)")
        out = try RecDist.single(["predict", "--checkpoint", dir + "/ck", "--input", prepared, "--split", "all", "--ids", "--out", dir + "/prepared.csv"])
        try #require(out.status == 0, "\(out.all)")
        out = try RecDist.single(["predict", "--checkpoint", dir + "/ck", "--input", folder + "/u.data", "--ids", "--out", dir + "/raw.csv"])
        try #require(out.status == 0, "\(out.all)")
        #expect(out.stderr.contains("encoded") && out.stderr.contains("rows/s"), "\(out.all)")
        let rawText = try String(contentsOfFile: dir + "/raw.csv", encoding: .utf8)
        let lines = try String(contentsOfFile: folder + "/u.data", encoding: .utf8).split(separator: "\n")
        let (header, rows) = UsingModelData.csv(rawText)
        #expect(header == ["row", "label", "probability", "user_id", "item_id"])
        #expect(rows.count == lines.count && rows.enumerated().allSatisfy { $1[0] == "\($0)" })
        #expect(zip(rows, lines).allSatisfy { row, line in (row[1] == "1") == (Int(line.split(separator: "\t")[2])! >= 4) })
        let expected = Self.positives(try String(contentsOfFile: dir + "/prepared.csv", encoding: .utf8))
        let raw = Self.positives(rawText)
        #expect(raw.count == expected.count && raw.count > 100)
        for (pair, p) in raw {
            let q = try #require(expected[pair], "pair \(pair)")
            #expect(abs(p - q) < 1e-6, "pair \(pair): raw \(p), prepared \(q)")
        }

        // Elsewhere, no side files beside it, plus an unseen user: the first rows score as before.
        let copy = try RecDist.scratch("predict-raw-copy") + "/new.data"
        try (lines.prefix(20).joined(separator: "\n") + "\n999\t1\t5\t999999999\n").write(toFile: copy, atomically: true, encoding: .utf8)
        out = try RecDist.single(["predict", "--checkpoint", dir + "/ck", "--input", copy, "--ids"])
        try #require(out.status == 0, "\(out.all)")
        let fresh = UsingModelData.csv(out.stdout).rows
        #expect(fresh.count == 21)
        for (a, b) in zip(fresh.prefix(20), rows.prefix(20)) { #expect(abs(Double(a[2])! - Double(b[2])!) < 1e-6 && a[3] == b[3]) }
        #expect(fresh[20][3] == "1", "an unseen user gets the out-of-vocabulary id")
    }

    /// Flags that would change the encoding are refused with --like; a moved dataset is named with
    /// the fix; a bad row names its file and line and leaves nothing behind.
    @Test func badInputIsNamed() throws {
        let prepared = try UsingModelData.preparedMovieLens()
        let folder = (prepared as NSString).deletingLastPathComponent
        let dir = try RecDist.scratch("predict-raw-bad")
        var out = try RecDist.single(["prepare", "--like", prepared, "--input", folder + "/u.data", "--out", dir + "/x", "--min-count", "3"])
        #expect(out.status == 64 && out.stderr.contains("--min-count cannot be combined with --like"), "\(out.all)")
        out = try RecDist.single(["prepare", "--input", folder + "/u.data", "--out", dir + "/x"])
        #expect(out.status == 64 && out.stderr.contains("--format is required"), "\(out.all)")
        out = try RecDist.single(["prepare", "--like", prepared, "--format", "criteo", "--input", folder + "/u.data", "--out", dir + "/x"])
        #expect(out.status == 1 && out.stderr.contains("was prepared from movielens-100k rows"), "\(out.all)")
        try "1\t2\t5\t100\n3\tx\n".write(toFile: dir + "/bad.data", atomically: true, encoding: .utf8)
        out = try RecDist.single(["prepare", "--like", prepared, "--input", dir + "/bad.data", "--out", dir + "/x"])
        #expect(out.status == 1 && out.stderr.contains("\(dir)/bad.data:2"), "\(out.all)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/x"))
        out = try RecDist.single(["prepare", "--like", prepared, "--input", folder + "/u.data", "--out", dir + "/x"])
        let lineCount = try String(contentsOfFile: folder + "/u.data", encoding: .utf8).split(separator: "\n").count
        #expect(out.status == 0 && out.all.contains("test \(lineCount) rows"), "\(out.all)")

        out = try RecDist.single(["train", "--data", prepared, "--model", "ncf", "--steps", "3", "--checkpoint-dir", dir + "/ck"])
        try #require(out.status == 0, "\(out.all)")
        out = try RecDist.single(["predict", "--checkpoint", dir + "/ck", "--input", prepared, "--like", prepared])
        #expect(out.status == 64 && out.stderr.contains("--like applies to raw rows"), "\(out.all)")
        let moved = dir + "/moved"
        try FileManager.default.moveItem(atPath: prepared, toPath: moved)
        out = try RecDist.single(["predict", "--checkpoint", dir + "/ck", "--input", folder + "/u.data"])
        #expect(out.status == 1 && out.stderr.contains(prepared) && out.stderr.contains("--like DIR"), "\(out.all)")
        out = try RecDist.single(["predict", "--checkpoint", dir + "/ck", "--input", folder + "/u.data", "--like", moved, "--limit", "3"])
        #expect(out.status == 0 && UsingModelData.csv(out.stdout).rows.count == 3, "\(out.all)")
    }
}

/// Progress on rank 0: plain lines off a terminal, a live bar on one; --log-level everywhere.
struct ProgressTests {
    @Test func plainProgressLinesWhenNotATerminal() throws {
        let data = try RecDist.synthData(rows: 2000)
        let started = Date()
        let out = try RecDist.single(["train", "--data", data, "--steps", "40", "--log-every", "10", "--batch-size", "16"])
        #expect(out.status == 0, "\(out.all)")
        let lines = try ProgressLines.progress(out.stdout, from: started, to: Date())
        #expect(lines.count == 4, "\(out.stdout)")
        for (k, line) in lines.enumerated() {
            #expect(line.hasPrefix("step \((k + 1) * 10)/40  epoch 1/1  loss 0."), "\(line)")
            #expect(line.contains(" samples/s  ETA "), "\(line)")
        }
        #expect(lines.last?.hasSuffix("ETA 0:00") == true, "\(lines)")
        #expect(!out.stdout.contains("\r") && !out.stdout.contains("\u{1B}["), "no terminal control characters in a log file")

        // --log-level warning: no progress or evaluation lines, the summary still prints.
        let quiet = try RecDist.single(["train", "--data", data, "--steps", "20", "--log-level", "warning"])
        #expect(quiet.status == 0, "\(quiet.all)")
        #expect(!quiet.stdout.contains("step 1") && !quiet.stdout.contains("eval "), "\(quiet.stdout)")
        #expect(quiet.stdout.contains("done: 20 steps"), "\(quiet.stdout)")
    }

    /// Under a pseudo-terminal (util-linux `script`), the bar is redrawn in place with \r and the
    /// plain lines are gone; evaluation lines still print whole, above the bar.
    @Test func liveProgressBarOnATerminal() throws {
        let script = try #require(["/usr/bin/script", "/bin/script"].first { FileManager.default.isExecutableFile(atPath: $0) },
                                  "util-linux script is needed")
        let data = try RecDist.synthData(rows: 2000)
        let command = [RecDist.binary, "train", "--data", data, "--steps", "300", "--batch-size", "4", "--eval-every", "150"]
            .map { "'\($0)'" }.joined(separator: " ")
        let out = try RecDist.run(script, ["-q", "-e", "-c", command, "/dev/null"], environment: ["TERM": "xterm", "COLUMNS": "120"])
        #expect(out.status == 0, "\(out.all)")
        let text = out.stdout
        #expect(text.contains("\r"), "the bar is redrawn with carriage returns: \(text.debugDescription.prefix(600))")
        #expect(text.contains("epoch 1/1 ▕") && text.contains("300/300 100.0%"), "\(text.debugDescription.suffix(800))")
        #expect(text.contains("samples/s  loss 0.") && text.contains("ETA "), "\(text.debugDescription.suffix(800))")
        #expect(!text.split(separator: "\n").contains { $0.hasPrefix("step ") && $0.contains("/300") }, "no plain progress lines on a terminal: \(text.debugDescription.prefix(800))")
        // A log line clears the bar first ("\r" then erase-line) and starts at column 0.
        #expect(text.contains("\r\u{1B}[Keval  step 150"), "\(text.debugDescription.prefix(1500))")
        #expect(text.contains("done: 300 steps"))
    }
}

/// `rec-dist recommend` on a tiny MovieLens folder.
struct RecommendTests {
    struct Setup {
        var data: String
        var checkpoint: String
        var dir: String
        /// prepared user id of each user name, item name of each item id.
        var userIDs: [String: Int]
        var itemNames: [Int: String]
        var titles: [Int: String]
        /// predict's probabilities of the training rows: (user id, item id, label, probability).
        var trainRows: [(user: Int, item: Int, label: Int, probability: Double)]
    }

    static func setUp(model: String = "dlrm") throws -> Setup {
        let data = try UsingModelData.preparedMovieLens()
        let dir = try RecDist.scratch("recommend")
        var out = try RecDist.single(["train", "--data", data, "--model", model, "--steps", "60", "--batch-size", "32",
                                      "--checkpoint-dir", dir + "/ck"])
        guard out.status == 0 else { throw TestDataError(message: out.all) }
        out = try RecDist.single(["predict", "--checkpoint", dir + "/ck", "--input", data, "--split", "train", "--ids", "--out", dir + "/p.csv"])
        guard out.status == 0 else { throw TestDataError(message: out.all) }
        let (header, rows) = UsingModelData.csv(try String(contentsOfFile: dir + "/p.csv", encoding: .utf8))
        #expect(header == ["split", "row", "label", "probability", "user_id", "item_id"])
        func tsv(_ name: String) throws -> [[String]] {
            try String(contentsOfFile: data + "/" + name, encoding: .utf8).split(separator: "\n").dropFirst()
                .map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        }
        var userIDs: [String: Int] = [:], itemNames: [Int: String] = [:], titles: [Int: String] = [:]
        for f in try tsv("users.tsv") { userIDs[f[1]] = Int(f[0])! }
        for f in try tsv("items.tsv") where Int(f[0])! >= 2 { itemNames[Int(f[0])!] = f[1]; titles[Int(f[0])!] = f[2] }
        return Setup(data: data, checkpoint: dir + "/ck", dir: dir, userIDs: userIDs, itemNames: itemNames, titles: titles,
                     trainRows: rows.map { (Int($0[4])!, Int($0[5])!, Int($0[2])!, Double($0[3])!) })
    }

    /// recommend's (user, item) scores are the model's scores of the user's own training rows
    /// (built another way: rows as stored, scored by predict); the ranking is by score; seen
    /// items are left out on request; K beyond the catalog is clamped with a notice. two-tower
    /// ranks through its item index, the others through the full forward pass.
    @Test(arguments: ["dlrm", "two-tower", "ncf"])
    func topKMatchesScoringEachItemOneByOne(model: String) throws {
        let s = try Self.setUp(model: model)
        let user = "7", id = try #require(s.userIDs[user])
        let catalog = Set(s.trainRows.map(\.item))
        var out = try RecDist.single(["recommend", "--checkpoint", s.checkpoint, "--data", s.data, "--user", user,
                                      "--k", "1000", "--out", s.dir + "/all.csv"])
        try #require(out.status == 0, "\(out.all)")
        #expect(out.stderr.contains("--k 1000 is larger than the catalog (\(catalog.count) items)"), "\(out.stderr)")
        #expect(out.stderr.contains("scoring through the item index") == (model == "two-tower"), "\(out.stderr)")
        let (header, rows) = UsingModelData.csv(try String(contentsOfFile: s.dir + "/all.csv", encoding: .utf8))
        #expect(header == ["user", "rank", "item", "score", "title", "genres"])
        #expect(rows.count == catalog.count)
        #expect(rows.map { $0[1] } == (1...rows.count).map(String.init))
        let scores = rows.map { Double($0[3])! }
        #expect(zip(scores, scores.dropFirst()).allSatisfy { $0 >= $1 }, "ranked by score")
        var byName: [String: Double] = [:]
        for r in rows { byName[r[2]] = Double(r[3])! }
        let own = s.trainRows.filter { $0.user == id }
        #expect(own.count >= 5)
        for r in own {
            let name = try #require(s.itemNames[r.item])
            let score = try #require(byName[name], "item \(name) missing from the catalog")
            #expect(abs(score - r.probability) < 2e-5, "item \(name): recommend \(score), predict \(r.probability)")
        }
        // Titles and genres from u.item.
        #expect(rows.allSatisfy { $0[4] == "Movie \($0[2]) (19\(70 + Int($0[2])! % 30))" && !$0[5].isEmpty }, "\(rows.prefix(3))")

        // --exclude-seen: the best unseen items, in the same order.
        let seen = Set(own.map { s.itemNames[$0.item]! })
        out = try RecDist.single(["recommend", "--checkpoint", s.checkpoint, "--data", s.data, "--user", user, "--k", "5",
                                  "--exclude-seen", "--out", s.dir + "/unseen.csv"])
        try #require(out.status == 0, "\(out.all)")
        let unseen = UsingModelData.csv(try String(contentsOfFile: s.dir + "/unseen.csv", encoding: .utf8)).rows.map { $0[2] }
        #expect(unseen == Array(rows.map { $0[2] }.filter { !seen.contains($0) }.prefix(5)))

        // The table on standard output names the titles.
        out = try RecDist.single(["recommend", "--checkpoint", s.checkpoint, "--data", s.data, "--user", user, "--k", "3"])
        #expect(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("top 3 for user 7") && out.stdout.contains("Movie \(rows[0][2]) (19"), "\(out.stdout)")
    }

    /// Unknown users get the most popular items with a notice; batch mode writes every user's list;
    /// bad input is named.
    @Test func unknownUsersBatchModeAndBadInput() throws {
        let s = try Self.setUp()
        var positives: [String: Int] = [:]
        for r in s.trainRows where r.label == 1 { positives[s.itemNames[r.item]!, default: 0] += 1 }
        try "7\nnobody\n3\n".write(toFile: s.dir + "/users.txt", atomically: true, encoding: .utf8)
        var out = try RecDist.single(["recommend", "--checkpoint", s.checkpoint, "--data", s.data, "--users", s.dir + "/users.txt",
                                      "--k", "4", "--out", s.dir + "/batch.csv"])
        try #require(out.status == 0, "\(out.all)")
        #expect(out.stderr.contains("1 user(s) not in the training split") && out.stderr.contains("nobody"), "\(out.stderr)")
        let rows = UsingModelData.csv(try String(contentsOfFile: s.dir + "/batch.csv", encoding: .utf8)).rows
        #expect(rows.map { $0[0] } == ["7", "7", "7", "7", "nobody", "nobody", "nobody", "nobody", "3", "3", "3", "3"])
        let fallback = rows.filter { $0[0] == "nobody" }
        #expect(fallback.allSatisfy { $0[3] == "popular" })
        let counts = fallback.map { positives[$0[2]] ?? 0 }
        #expect(counts == counts.sorted(by: >) && counts[0] == positives.values.max(), "\(counts) vs \(positives.values.sorted(by: >).prefix(4))")

        out = try RecDist.single(["recommend", "--checkpoint", s.checkpoint, "--data", s.data, "--all-users", "--k", "2", "--out", s.dir + "/everyone.csv"])
        try #require(out.status == 0, "\(out.all)")
        let everyone = UsingModelData.csv(try String(contentsOfFile: s.dir + "/everyone.csv", encoding: .utf8)).rows
        #expect(Set(everyone.map { $0[0] }).count == Set(s.trainRows.map(\.user)).count && everyone.count == 2 * Set(everyone.map { $0[0] }).count)

        out = try RecDist.single(["recommend", "--checkpoint", s.checkpoint, "--data", s.data, "--user", "nobody"])
        #expect(out.status == 0 && out.stdout.contains("user nobody is not in the training split"), "\(out.all)")
        out = try RecDist.single(["recommend", "--checkpoint", s.checkpoint, "--data", s.data, "--all-users"])
        #expect(out.status == 64 && out.stderr.contains("--out"), "\(out.all)")
        out = try RecDist.single(["recommend", "--checkpoint", s.checkpoint, "--data", s.data, "--user", "7", "--k", "0"])
        #expect(out.status == 64 && out.stderr.contains("--k 0"), "\(out.all)")
        out = try RecDist.single(["recommend", "--checkpoint", s.checkpoint, "--data", try RecDist.synthData(rows: 2000), "--user", "7"])
        #expect(out.status == 1 && out.stderr.contains("not a directory"), "\(out.all)")
        let synth = try UsingModelData.preparedSynth(rows: 2000)
        out = try RecDist.single(["recommend", "--checkpoint", s.checkpoint, "--data", synth, "--user", "7"])
        #expect(out.status == 1 && out.stderr.contains("another schema"), "\(out.all)")
    }
}

/// `rec-dist explain` on a crafted dataset where one field decides the label.
struct ExplainTests {
    /// Criteo rows whose label is I2 > 50 (with 5% of labels flipped); every other field is noise.
    static func craftedData(rows: Int) throws -> String {
        let dir = try RecDist.scratch("explain-data")
        var rng = UsingModelData.Seeded(state: 99)
        var text = ""
        text.reserveCapacity(rows * 120)
        for _ in 0..<rows {
            let dense = (0..<13).map { _ in Int(rng.next() % 100) }
            var label = dense[1] > 50 ? 1 : 0
            if rng.next() % 100 < 5 { label = 1 - label }
            let cats = (0..<26).map { _ in String(rng.next() % 50, radix: 16) }
            text += "\(label)\t" + dense.map(String.init).joined(separator: "\t") + "\t" + cats.joined(separator: "\t") + "\n"
        }
        try text.write(toFile: dir + "/crafted.tsv", atomically: true, encoding: .utf8)
        return dir + "/crafted.tsv"
    }

    @Test func theDecisiveFieldRanksFirstAndNoiseIsNearZero() throws {
        let data = try Self.craftedData(rows: 6000)
        let dir = try RecDist.scratch("explain")
        var out = try RecDist.single(["train", "--data", data, "--model", "dlrm", "--hash-buckets", "200", "--epochs", "3",
                                      "--batch-size", "64", "--checkpoint-dir", dir + "/ck"])
        try #require(out.status == 0, "\(out.all)")
        out = try RecDist.single(["explain", "--checkpoint", dir + "/ck", "--data", data, "--repeats", "3",
                                  "--out", dir + "/explain.html", "--json-out", dir + "/explain.json"])
        try #require(out.status == 0, "\(out.all)")
        #expect(out.stdout.contains("rank  field") && out.stdout.contains("held-out rows"), "\(out.stdout)")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/explain.json"))) as! [String: Any]
        let fields = json["fields"] as! [[String: Any]]
        #expect(fields.count == 39 && json["rows"] as? Int == 600)
        #expect(fields[0]["field"] as? String == "I2", "\(fields.prefix(3))")
        let top = fields[0]["mean"] as! Double
        #expect(top > 0.2, "I2's AUC drop \(top)")
        for f in fields.dropFirst() {
            #expect(abs(f["mean"] as! Double) < 0.03, "\(f["field"]!) should be near zero: \(f)")
            #expect((f["drops"] as! [Double]).count == 3)
        }
        // The baseline is the model's AUC on those rows.
        #expect((json["baseline"] as! Double) > 0.85)

        // The chart renders in a browser: a bar per field and a readable page.
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let browser = try #require(chromium, "headless Chromium is needed (./launch.sh test installs Debian's chromium)")
        let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1400"]
        let dom = try RecDist.run(browser, flags + ["--dump-dom", "file://" + dir + "/explain.html"], timeout: 120)
        #expect(dom.status == 0, "\(dom.stderr)")
        #expect(dom.stdout.components(separatedBy: "<rect").count - 1 >= 39)
        #expect(dom.stdout.contains("Permutation importance"))
        let shot = try RecDist.run(browser, flags + ["--screenshot=" + dir + "/explain.png", "file://" + dir + "/explain.html"], timeout: 120)
        #expect(shot.status == 0, "\(shot.stderr)")
        let png = try Data(contentsOf: URL(fileURLWithPath: dir + "/explain.png"))
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]) && png.count > 20_000, "screenshot of \(png.count) bytes")
    }

    @Test func badInputIsNamed() throws {
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("explain-bad")
        var out = try RecDist.single(["train", "--data", data, "--steps", "5", "--checkpoint-dir", dir + "/ck"])
        try #require(out.status == 0, "\(out.all)")
        out = try RecDist.single(["explain", "--checkpoint", dir + "/ck", "--data", data, "--repeats", "0"])
        #expect(out.status == 64 && out.stderr.contains("--repeats 0"), "\(out.all)")
        out = try RecDist.single(["explain", "--checkpoint", dir + "/ck", "--data", try UsingModelData.preparedSynth(rows: 2000)])
        #expect(out.status == 1 && out.stderr.contains("raw Criteo TSV"), "\(out.all)")
        out = try RecDist.single(["explain", "--checkpoint", dir + "/nope", "--data", data])
        #expect(out.status == 1 && out.stderr.contains("not a checkpoint"), "\(out.all)")
    }
}
