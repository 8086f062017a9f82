import ArgumentParser
import Foundation
import Logging
import RecCore
import RecData
import RecInference
import RecTrainer

struct Recommend: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Top-K items for a user: the model scores the whole catalog with the user's fields.",
        discussion: """
        The catalog is every item of the prepared dataset's training split, each with its \
        item-side fields (MovieLens: year and genres); the user's own fields (MovieLens: age, \
        gender, occupation, zip) come from the user's training rows. Any model trained on the \
        dataset works; a model with an item index (two-tower) scores through it. Titles and \
        genres come from the dataset (`prepare` keeps MovieLens's u.item / movies.csv).

        A user who is not in the training split gets the most popular items (positive training \
        rows), with a notice. --k larger than the catalog returns the whole catalog, with a notice.

        Examples:
          rec-dist recommend --checkpoint runs/ml/checkpoints --data data/ml100k --user 196 --k 10 --exclude-seen
          rec-dist recommend --checkpoint runs/ml/checkpoints --data data/ml100k --all-users --out top10.csv
        """)

    @OptionGroup var model: TrainedModelOptions
    @Option(help: "The prepared dataset the model was trained on (its catalog and user features).")
    var data: String
    @OptionGroup(title: "Users") var recipients: RecommendTargetOptions
    @Option(parsing: .unconditional, help: "How many items to return.")
    var k: Int = 10
    @Flag(help: "Leave out the items the user has seen in the training split.")
    var excludeSeen = false
    @Option(help: "Write CSV (user,rank,item,score,title,genres) here; required with --users and --all-users.")
    var out: String?
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if k < 1 { throw outOfRange("--k", k, "use 1 or more") }
        if recipients.manyUsers && out == nil { throw ValidationError("--users and --all-users write a CSV: add --out FILE.") }
    }

    func run() throws {
        model.startScoring(logging, allToStandardError: true)
        try exitingOnError {
            let trained = try model.load(maxBatch: 1024)
            guard PreparedDataset.isDirectory(data) else {
                throw ValidationError("--data \(data) is not a directory: recommend needs the prepared dataset the model was trained on (`rec-dist prepare`).")
            }
            let dataset = try trained.openDataset(data)
            let catalog = try Catalog(dataset: dataset)
            let recommender = Recommender(catalog: catalog, trained: trained)
            var k = self.k
            if k > catalog.itemIDs.count {
                logger.notice("notice: --k \(k) is larger than the catalog (\(catalog.itemIDs.count) items): returning all of them")
                k = catalog.itemIDs.count
            }
            if recommender.usesItemIndex { logger.info("scoring through the item index (\(catalog.itemIDs.count) items)") }

            var targets: [String]
            if let user = recipients.user {
                targets = [user]
            } else if let users = recipients.users {
                guard let text = try? String(contentsOfFile: users, encoding: .utf8) else {
                    throw ValidationError("cannot read --users \(users): give a text file with one user id per line.")
                }
                targets = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                guard !targets.isEmpty else { throw ValidationError("--users \(users) lists no users (one user id per line).") }
            } else {
                targets = catalog.userNames.map(\.name)
            }
            if !catalog.hasUserNames && targets.contains(where: { !$0.hasPrefix("#") }) {
                logger.warning("\(data) has no users.tsv (prepared by an older rec-dist): user names cannot be looked up; re-run `rec-dist prepare` to get it, or pass prepared ids as #ID")
            }

            let writer = try out.map { try LineWriter(path: $0) }
            try writer?.write("user,rank,item,score,title,genres\n")
            var unknown: [String] = []
            var started = Date()
            for (n, name) in targets.enumerated() {
                let top: [(item: UInt32, score: Float)]
                let fallback: Bool
                if let id = catalog.userID(name) {
                    top = recommender.top(user: id, k: k, excludeSeen: excludeSeen)
                    fallback = false
                } else {
                    top = catalog.popular(k: k)
                    fallback = true
                    unknown.append(name)
                }
                if let writer {
                    for (rank, entry) in top.enumerated() {
                        let info = catalog.items[entry.item]
                        try writer.write("\(csvField(name)),\(rank + 1),\(csvField(catalog.name(of: entry.item))),\(fallback ? "popular" : String(format: "%.6g", Loss.sigmoid(entry.score))),\(csvField(info?.title ?? "")),\(csvField(info?.genres ?? ""))\n")
                    }
                } else {
                    printTable(user: name, top: top, catalog: catalog, fallback: fallback)
                }
                if targets.count > 1 && Date().timeIntervalSince(started) > 5 {
                    logger.info("\(n + 1)/\(targets.count) users")
                    started = Date()
                }
            }
            try writer?.close()
            if !unknown.isEmpty {
                let listed = unknown.prefix(5).joined(separator: ", ") + (unknown.count > 5 ? ", ..." : "")
                logger.notice("notice: \(unknown.count) user(s) not in the training split of \(data) (\(listed)): recommended the \(k) most popular items instead (score column 'popular')")
            }
            if let out, targets.count > 0 { logger.info("wrote the top \(k) of \(targets.count) user(s) to \(out)") }
        }
    }

    func printTable(user: String, top: [(item: UInt32, score: Float)], catalog: Catalog, fallback: Bool) {
        var lines: [String] = []
        if fallback {
            lines.append("user \(user) is not in the training split: the \(top.count) most popular items instead")
        } else {
            lines.append("top \(top.count) for user \(user)\(excludeSeen ? " (seen items excluded)" : "")")
        }
        let names = top.map { catalog.name(of: $0.item) }
        let width = max(4, names.map(\.count).max() ?? 4)
        func pad(_ s: String, _ w: Int, right: Bool = false) -> String {
            s.count >= w ? s : right ? String(repeating: " ", count: w - s.count) + s : s + String(repeating: " ", count: w - s.count)
        }
        let hasTitles = top.contains { catalog.items[$0.item]?.title.isEmpty == false }
        lines.append(pad("rank", 4, right: true) + "  " + pad("item", width) + "  " + pad(fallback ? "positives" : "score", 9, right: true)
                     + (hasTitles ? "  title  [genres]" : ""))
        for (rank, entry) in top.enumerated() {
            let info = catalog.items[entry.item]
            let score = fallback ? "\(Int(entry.score))" : String(format: "%.4f", Loss.sigmoid(entry.score))
            var line = pad("\(rank + 1)", 4, right: true) + "  " + pad(names[rank], width) + "  " + pad(score, 9, right: true)
            if hasTitles, let info { line += "  \(info.title)" + (info.genres.isEmpty ? "" : "  [\(info.genres)]") }
            lines.append(line)
        }
        Console.shared.line(lines.joined(separator: "\n"))
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
func csvField(_ text: String) -> String {
    guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return text }
    return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}
