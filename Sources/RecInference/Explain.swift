import Foundation
import RecCheckpoint
import RecCore
import RecData
import RecTrainer

/// Permutation feature importance (Breiman 2001; scikit-learn's `permutation_importance`): the
/// evaluation metric on the rows as they are, then again with one field's column shuffled across
/// the rows, which breaks that field's link to the label while keeping its distribution. The
/// importance of the field is the loss of quality: baseline AUC minus shuffled AUC (or shuffled
/// logloss minus baseline logloss), repeated with `repeats` seeded permutations for a mean and a
/// spread (sample standard deviation).
public enum PermutationImportance {
    public enum Metric: String, CaseIterable, Sendable, Codable {
        case auc, logloss
    }

    /// A column of the rows: dense column `index` or categorical column `index`.
    public struct Field: Sendable, Equatable {
        public var name: String
        public var categorical: Bool
        public var index: Int
    }

    /// The fields a model reads, given the names of the rows' dense and categorical columns: the
    /// dense ones, then the categorical ones. The others are left out: shuffling a column the
    /// model does not read changes nothing.
    public static func fields(readBy config: ModelConfig, dense: [String], categorical: [String]) -> [Field] {
        let read: (dense: [Int], categorical: [Int])
        switch config.kind {
        case .mlp: read = (Array(0..<min(config.mlpDenseFeatures, dense.count)), [])
        case .ncf: read = ([], [config.userFields?.first, config.itemFields?.first].compactMap { $0 })
        case .twoTower: read = ([], (config.userFields ?? []) + (config.itemFields ?? []))
        case .dlrm, .logreg, .wideDeep: read = (Array(dense.indices), Array(categorical.indices))
        }
        return read.dense.map { Field(name: dense[$0], categorical: false, index: $0) }
            + read.categorical.map { Field(name: categorical[$0], categorical: true, index: $0) }
    }

    public struct Result: Sendable {
        public var field: Field
        /// Importance of each repeat (positive: the model got worse without the field).
        public var drops: [Double]
        public var mean: Double { drops.reduce(0, +) / Double(max(drops.count, 1)) }
        /// Sample standard deviation over the repeats (0 for one repeat).
        public var std: Double {
            guard drops.count > 1 else { return 0 }
            let m = mean
            return (drops.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(drops.count - 1)).squareRoot()
        }
    }

    /// The permutation of `count` rows for `field`'s `repeat`-th shuffle: Fisher-Yates with its
    /// own seeded stream, so a result can be reproduced (and checked) field by field.
    public static func permutation(count: Int, seed: UInt64, repeat r: Int, field: Int) -> [Int] {
        var rng = RNG(seed: seed &+ UInt64(r) &* 0x9E37_79B9_7F4A_7C15, stream: 0x6578_706C_0000 &+ UInt64(field))
        var p = Array(0..<count)
        if count > 1 {
            for i in stride(from: count - 1, to: 0, by: -1) { p.swapAt(i, rng.nextInt(below: i + 1)) }
        }
        return p
    }

    /// The metric of probabilities against labels (nil: AUC undefined, one class only).
    public static func evaluate(_ metric: Metric, probabilities: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Float>) -> Double? {
        switch metric {
        case .auc: return Metrics.auc(scores: probabilities, labels: labels)
        case .logloss: return Metrics.logloss(probabilities: probabilities, labels: labels)
        }
    }

    /// Runs the importance of every field in `fields` over `rows` (whose columns are shuffled in
    /// place and restored). `score(rows, out)` writes the probability of each row.
    ///
    /// - Returns: the baseline metric and one result per field, in the order of `fields`.
    public static func run(rows: FeatureRowsBuffer, fields: [Field], repeats: Int, seed: UInt64, metric: Metric,
                           progress: (Int, Int) -> Void = { _, _ in },
                           score: (FeatureRowsBuffer, UnsafeMutablePointer<Float>) -> Void) throws -> (baseline: Double, results: [Result]) {
        let n = rows.count
        let probabilities = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(n, 1))
        defer { probabilities.deallocate() }
        let labels = UnsafeBufferPointer(start: rows.labels, count: n)
        score(rows, probabilities.baseAddress!)
        guard let baseline = evaluate(metric, probabilities: UnsafeBufferPointer(probabilities), labels: labels) else {
            throw TrainingError.notEnoughData("the evaluation rows hold only one class (\(n) rows), so their AUC is undefined; use rows with both labels, or --metric logloss")
        }
        var results: [Result] = []
        for (k, field) in fields.enumerated() {
            let width = field.categorical ? rows.categoricalWidth : rows.denseWidth
            precondition(field.index >= 0 && field.index < width, "field \(field.name) out of range")
            // The metric's drop for each repeat of shuffling column `field.index` of `values`
            // (dense or categorical), which is restored afterwards.
            func permutationDrops<T>(_ values: UnsafeMutablePointer<T>) -> [Double] {
                let column = (0..<n).map { values[$0 * width + field.index] }
                var drops: [Double] = []
                for r in 0..<repeats {
                    let p = permutation(count: n, seed: seed, repeat: r, field: k)
                    for i in 0..<n { values[i * width + field.index] = column[p[i]] }
                    score(rows, probabilities.baseAddress!)
                    let value = evaluate(metric, probabilities: UnsafeBufferPointer(probabilities), labels: labels) ?? baseline
                    drops.append(metric == .auc ? baseline - value : value - baseline)
                }
                for i in 0..<n { values[i * width + field.index] = column[i] }
                return drops
            }
            let drops = field.categorical ? permutationDrops(rows.categorical) : permutationDrops(rows.dense)
            results.append(Result(field: field, drops: drops))
            progress(k + 1, fields.count)
        }
        return (baseline, results)
    }

    /// The results ranked: largest mean importance first (ties by name).
    public static func ranked(_ results: [Result]) -> [Result] {
        results.sorted { $0.mean != $1.mean ? $0.mean > $1.mean : $0.field.name < $1.field.name }
    }

    /// The ranked table as text.
    public static func table(_ ranked: [Result], metric: Metric, baseline: Double) -> String {
        let width = max(5, ranked.map(\.field.name.count).max() ?? 5)
        func pad(_ s: String, _ w: Int, right: Bool = true) -> String {
            s.count >= w ? s : right ? String(repeating: " ", count: w - s.count) + s : s + String(repeating: " ", count: w - s.count)
        }
        let what = metric == .auc ? "AUC drop" : "logloss rise"
        var lines = ["rank  " + pad("field", width, right: false) + "  kind         " + pad(what, 12) + "   ± std"]
        for (i, r) in ranked.enumerated() {
            lines.append(pad("\(i + 1)", 4) + "  " + pad(r.field.name, width, right: false) + "  " + pad(r.field.categorical ? "categorical" : "dense", 11, right: false)
                         + "  " + pad(String(format: "%+.5f", r.mean), 12) + "  " + String(format: "%.5f", r.std))
        }
        return lines.joined(separator: "\n")
    }

    /// A self-contained page (inline SVG, no scripts, no network): the ranked fields as
    /// horizontal bars of the mean importance with ±1 std whiskers and each repeat as a dot, the
    /// table, and the results as JSON (`<script type="application/json" id="importance">`).
    public static func html(_ ranked: [Result], metric: Metric, baseline: Double, title: String, subtitle: String,
                            details: [(String, String)]) throws -> String {
        let esc = HTMLPage.escape
        let rowHeight = 24.0, labelWidth = 170.0, valueWidth = 150.0, width = 1000.0, top = 34.0, bottom = 30.0
        let plotLeft = labelWidth, plotRight = width - valueWidth
        let height = top + bottom + rowHeight * Double(max(ranked.count, 1))
        var extremes: [Double] = [0]
        for r in ranked { extremes += [r.mean - r.std, r.mean + r.std] + r.drops }
        var lo: Double = extremes.min()!, hi: Double = extremes.max()!
        if hi - lo < 1e-9 { hi += 1e-3; lo -= 1e-3 }
        let pad = (hi - lo) * 0.06
        lo = Swift.min(lo - pad, 0.0)
        hi += pad
        let span: Double = hi - lo, plotWidth: Double = plotRight - plotLeft
        func px(_ v: Double) -> Double { plotLeft + (v - lo) / span * plotWidth }
        let f1 = { (v: Double) in String(format: "%.1f", v) }
        var svg = "<svg viewBox=\"0 0 \(Int(width)) \(Int(height))\" width=\"100%\" role=\"img\" aria-label=\"permutation importance\">"
        for t in Report.ticks(lo, hi) where t >= lo && t <= hi {
            svg += "<line x1=\"\(f1(px(t)))\" x2=\"\(f1(px(t)))\" y1=\"\(top - 6)\" y2=\"\(height - bottom)\" stroke=\"#eef0f3\"/>"
            svg += "<text x=\"\(f1(px(t)))\" y=\"\(height - 10)\" text-anchor=\"middle\">\(String(format: "%g", (t * 1e6).rounded() / 1e6 + 0.0))</text>"
        }
        svg += "<line x1=\"\(f1(px(0)))\" x2=\"\(f1(px(0)))\" y1=\"\(top - 10)\" y2=\"\(height - bottom)\" stroke=\"#6b7280\" stroke-width=\"1.2\"/>"
        svg += "<text x=\"\(f1(px(0)))\" y=\"\(top - 14)\" text-anchor=\"middle\" style=\"font-weight:600\">0</text>"
        let maxMean = max(ranked.map(\.mean).max() ?? 0, 1e-12)
        for (i, r) in ranked.enumerated() {
            let y = top + rowHeight * Double(i), mid = y + rowHeight / 2
            if i % 2 == 0 {
                svg += "<rect x=\"0\" y=\"\(f1(y))\" width=\"\(Int(width))\" height=\"\(Int(rowHeight))\" fill=\"#f9fafb\"/>"
            }
            let x0 = px(min(0, r.mean)), x1 = px(max(0, r.mean))
            // Strong fields in deep blue, weak ones paler; harmful (negative) ones in orange.
            let strength = max(0.25, min(1, r.mean / maxMean))
            let color = r.mean < 0 ? "#f59e0b" : String(format: "rgba(37,99,235,%.2f)", strength)
            svg += "<text x=\"\(labelWidth - 10)\" y=\"\(f1(mid + 4))\" text-anchor=\"end\" class=\"name\">\(esc(r.field.name))</text>"
            svg += "<rect x=\"\(f1(x0))\" y=\"\(f1(y + 5))\" width=\"\(f1(max(x1 - x0, 0.8)))\" height=\"\(Int(rowHeight - 10))\" rx=\"2\" fill=\"\(color)\"><title>\(esc(r.field.name)): \(String(format: "%+.5f ± %.5f", r.mean, r.std))</title></rect>"
            if r.std > 0 {
                let a = px(r.mean - r.std), b = px(r.mean + r.std)
                svg += "<line x1=\"\(f1(a))\" x2=\"\(f1(b))\" y1=\"\(f1(mid))\" y2=\"\(f1(mid))\" stroke=\"#111827\" stroke-width=\"1.2\"/>"
                svg += "<line x1=\"\(f1(a))\" x2=\"\(f1(a))\" y1=\"\(f1(mid - 5))\" y2=\"\(f1(mid + 5))\" stroke=\"#111827\" stroke-width=\"1.2\"/>"
                svg += "<line x1=\"\(f1(b))\" x2=\"\(f1(b))\" y1=\"\(f1(mid - 5))\" y2=\"\(f1(mid + 5))\" stroke=\"#111827\" stroke-width=\"1.2\"/>"
            }
            for d in r.drops {
                svg += "<circle cx=\"\(f1(px(d)))\" cy=\"\(f1(mid))\" r=\"2.2\" fill=\"#111827\" fill-opacity=\"0.45\"/>"
            }
            svg += "<text x=\"\(plotRight + 12)\" y=\"\(f1(mid + 4))\" class=\"value\">\(String(format: "%+.4f ± %.4f", r.mean, r.std))</text>"
        }
        svg += "</svg>"

        let what = metric == .auc ? "AUC drop" : "logloss rise"
        var table = "<table><thead><tr><th>rank</th><th class=\"l\">field</th><th class=\"l\">kind</th><th>\(what) (mean)</th><th>std</th><th class=\"l\">each repeat</th></tr></thead><tbody>"
        for (i, r) in ranked.enumerated() {
            table += "<tr><td>\(i + 1)</td><td class=\"l\">\(esc(r.field.name))</td><td class=\"l\">\(r.field.categorical ? "categorical" : "dense")</td><td>\(String(format: "%+.5f", r.mean))</td><td>\(String(format: "%.5f", r.std))</td><td class=\"l\">\(r.drops.map { String(format: "%+.5f", $0) }.joined(separator: " "))</td></tr>"
        }
        table += "</tbody></table>"
        let objects: [[String: Any]] = ranked.map {
            ["field": $0.field.name, "kind": $0.field.categorical ? "categorical" : "dense", "mean": $0.mean, "std": $0.std, "drops": $0.drops]
        }
        let json = try JSONSerialization.data(withJSONObject: ["metric": metric.rawValue, "baseline": baseline, "fields": objects] as [String: Any],
                                              options: [.sortedKeys])
        return HTMLPage.render(title: title, subtitle: subtitle, cards: details, width: 1100, style: """
            .sub { max-width: 900px; } .l { text-align: left; }
            .chart { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 14px 16px 8px; margin-top: 18px; }
            .chart h3 { margin: 0 0 4px; font-size: 14px; } .chart .note { color: #6b7280; font-size: 12px; margin-bottom: 6px; }
            svg text { font: 12px system-ui, sans-serif; fill: #6b7280; }
            svg text.name { fill: #111827; font-size: 12.5px; } svg text.value { fill: #374151; font-variant-numeric: tabular-nums; }
            """, body: """
            <div class="chart"><h3>Permutation importance: \(what) when the field is shuffled</h3>
            <div class="note">bars: mean over the repeats; whiskers: ±1 standard deviation; dots: each repeat. Baseline \(metric.rawValue) \(String(format: "%.4f", baseline)).</div>
            \(svg)</div>
            <h2>Fields, most important first</h2>
            \(table)
            \(HTMLPage.embedded(json, id: "importance"))
            """)
    }
}
