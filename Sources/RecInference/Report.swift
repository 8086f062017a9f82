import Foundation

/// A self-contained HTML page about a training run: curves drawn as inline SVG (no scripts, no
/// network), the evaluation table and the run's configuration. The metrics are also embedded as
/// JSON (`<script type="application/json" id="metrics">`) so tools can read them back.
public enum Report {
    /// One series of a chart.
    struct Series {
        var name: String
        var color: String
        var points: [(x: Double, y: Double)]
        var dashed = false
    }

    /// Builds the page from the metrics log's records (one JSON object per evaluation) and,
    /// optionally, the run's configuration as pretty JSON.
    public static func html(records: [[String: Any]], title: String, configuration: String?) throws -> String {
        func number(_ r: [String: Any], _ key: String) -> Double? {
            if let d = r[key] as? Double, d.isFinite { return d }
            if let i = r[key] as? Int { return Double(i) }
            return nil
        }
        func series(_ key: String, _ name: String, _ color: String, dashed: Bool = false) -> Series {
            Series(name: name, color: color,
                   points: records.compactMap { r in number(r, "step").flatMap { s in number(r, key).map { (s, $0) } } },
                   dashed: dashed)
        }
        let last = records.last ?? [:]
        let model = (last["model"] as? String) ?? "?"
        let ranks = number(last, "world_size").map { String(Int($0)) } ?? "?"
        func fmt(_ v: Double?, _ digits: Int = 4) -> String { v.map { String(format: "%.\(digits)f", $0) } ?? "n/a" }

        var cards: [(String, String)] = [
            ("model", model), ("ranks", ranks),
            ("steps", number(last, "step").map { String(Int($0)) } ?? "?"),
            ("samples", number(last, "samples").map { String(Int($0)) } ?? "?"),
            ("final AUC", fmt(number(last, "auc"))), ("final logloss", fmt(number(last, "logloss"))),
            ("samples/s", number(last, "samples_per_s").map { String(Int($0)) } ?? "?"),
        ]
        if let oracle = number(last, "oracle_auc") { cards.append(("oracle AUC", fmt(oracle))) }

        var charts: [String] = []
        charts.append(chart(title: "Loss", yLabel: "loss", series: [
            series("train_loss", "training loss (mean since the previous evaluation)", "#2563eb"),
            series("logloss", "evaluation logloss", "#dc2626"),
        ]))
        var aucSeries = [series("auc", "evaluation AUC", "#059669")]
        let oracle = series("oracle_auc", "oracle AUC (true probabilities)", "#6b7280", dashed: true)
        if !oracle.points.isEmpty { aucSeries.append(oracle) }
        charts.append(chart(title: "AUC", yLabel: "AUC", series: aucSeries))
        charts.append(chart(title: "Accuracy and calibration", yLabel: "", series: [
            series("accuracy", "accuracy", "#7c3aed"),
            series("mean_prediction", "mean prediction", "#ea580c"),
            series("mean_label", "mean label", "#6b7280", dashed: true),
        ]))
        charts.append(chart(title: "Throughput", yLabel: "samples/s", series: [
            series("samples_per_s", "training samples/s (cumulative)", "#0891b2"),
        ]))
        let breakdown = [
            series("step_ms", "whole step", "#111827"),
            series("forward_ms", "forward", "#2563eb"),
            series("backward_ms", "backward", "#dc2626"),
            series("communication_ms", "communication (exposed)", "#d97706"),
            series("optimizer_ms", "optimizer", "#059669"),
        ]
        if breakdown.contains(where: { !$0.points.isEmpty }) {
            charts.append(chart(title: "Step time", yLabel: "ms per step", series: breakdown))
        }

        let columns = ["step", "epoch", "samples", "train_loss", "auc", "logloss", "accuracy", "mean_prediction",
                       "mean_label", "samples_per_s", "step_ms", "world_size"]
        var table = "<table><thead><tr>" + columns.map { "<th>\(HTMLPage.escape($0))</th>" }.joined() + "</tr></thead><tbody>"
        for r in records {
            table += "<tr>" + columns.map { key -> String in
                guard let v = number(r, key) else { return "<td>-</td>" }
                let integral = ["step", "epoch", "samples", "world_size", "samples_per_s"].contains(key)
                return "<td>\(integral ? String(Int(v)) : String(format: "%.4f", v))</td>"
            }.joined() + "</tr>"
        }
        table += "</tbody></table>"

        let json = try JSONSerialization.data(withJSONObject: records, options: [.sortedKeys])
        let configHTML = configuration.map { "<h2>Configuration</h2><pre>\(HTMLPage.escape($0))</pre>" } ?? ""
        return HTMLPage.render(title: title, subtitle: "rec-dist training report: \(records.count) evaluation(s)", cards: cards,
                               width: 1180, style: """
            .charts { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; margin-top: 18px; }
            .chart { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 12px 14px 8px; }
            .chart h3 { margin: 0 0 6px; font-size: 14px; }
            .legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; color: #374151; margin-top: 2px; }
            .legend i { display: inline-block; width: 14px; height: 3px; margin-right: 5px; vertical-align: middle; }
            svg text { font: 11px system-ui, sans-serif; fill: #6b7280; }
            pre { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 12px; overflow-x: auto; font-size: 12px; }
            """, body: """
            <div class="charts">\(charts.joined())</div>
            <h2>Evaluations</h2>
            \(table)
            \(configHTML)
            \(HTMLPage.embedded(json, id: "metrics"))
            """)
    }

    /// A line chart as inline SVG with axes, ticks and a legend.
    static func chart(title: String, yLabel: String, series: [Series]) -> String {
        let width = 540.0, height = 250.0, left = 56.0, right = 14.0, top = 10.0, bottom = 30.0
        let all = series.flatMap(\.points)
        guard !all.isEmpty else {
            return "<div class=\"chart\"><h3>\(HTMLPage.escape(title))</h3><p>no data</p></div>"
        }
        var (x0, x1) = (all.map(\.x).min()!, all.map(\.x).max()!)
        var (y0, y1) = (all.map(\.y).min()!, all.map(\.y).max()!)
        if x1 == x0 { x0 -= 1; x1 += 1 }
        if y1 == y0 { y0 -= abs(y0) * 0.05 + 1e-3; y1 += abs(y1) * 0.05 + 1e-3 }
        let pad = (y1 - y0) * 0.08
        y0 -= pad; y1 += pad
        func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * (width - left - right) }
        func py(_ y: Double) -> Double { top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom) }
        var svg = "<svg viewBox=\"0 0 \(Int(width)) \(Int(height))\" width=\"100%\" role=\"img\" aria-label=\"\(HTMLPage.escape(title))\">"
        for t in ticks(y0, y1) {
            svg += "<line x1=\"\(left)\" x2=\"\(width - right)\" y1=\"\(py(t))\" y2=\"\(py(t))\" stroke=\"#eef0f3\"/>"
            svg += "<text x=\"\(left - 6)\" y=\"\(py(t) + 4)\" text-anchor=\"end\">\(label(t))</text>"
        }
        for t in ticks(x0, x1) where t >= x0 && t <= x1 {
            svg += "<text x=\"\(px(t))\" y=\"\(height - 10)\" text-anchor=\"middle\">\(label(t))</text>"
        }
        svg += "<line x1=\"\(left)\" x2=\"\(width - right)\" y1=\"\(height - bottom)\" y2=\"\(height - bottom)\" stroke=\"#9ca3af\"/>"
        svg += "<line x1=\"\(left)\" x2=\"\(left)\" y1=\"\(top)\" y2=\"\(height - bottom)\" stroke=\"#9ca3af\"/>"
        svg += "<text x=\"\(width - right)\" y=\"\(height - 10)\" text-anchor=\"end\" style=\"font-weight:600\">step</text>"
        for s in series where !s.points.isEmpty {
            let points = s.points.map { String(format: "%.1f,%.1f", px($0.x), py($0.y)) }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\"\(s.dashed ? " stroke-dasharray=\"5 4\"" : "") points=\"\(points)\"><title>\(HTMLPage.escape(s.name))</title></polyline>"
            if s.points.count <= 60 {
                for p in s.points {
                    svg += "<circle cx=\"\(String(format: "%.1f", px(p.x)))\" cy=\"\(String(format: "%.1f", py(p.y)))\" r=\"2.5\" fill=\"\(s.color)\"/>"
                }
            }
        }
        svg += "</svg>"
        let legend = series.filter { !$0.points.isEmpty }.map {
            "<span><i style=\"background:\($0.color)\"></i>\(HTMLPage.escape($0.name))</span>"
        }.joined()
        return "<div class=\"chart\"><h3>\(HTMLPage.escape(title))\(yLabel.isEmpty ? "" : " <span style=\"color:#9ca3af;font-weight:400\">(\(HTMLPage.escape(yLabel)))</span>")</h3>\(svg)<div class=\"legend\">\(legend)</div></div>"
    }

    /// About five round tick values covering [lo, hi].
    static func ticks(_ lo: Double, _ hi: Double) -> [Double] {
        let raw = (hi - lo) / 5
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        var t = ceil(lo / step) * step, out: [Double] = []
        while t <= hi + step * 1e-9 && out.count < 12 { out.append(t); t += step }
        return out
    }

    static func label(_ v: Double) -> String {
        let a = abs(v)
        if a >= 1e6 { return String(format: "%.1fM", v / 1e6) }
        if a >= 1e4 { return String(format: "%.0fk", v / 1e3) }
        if a >= 100 || v == v.rounded() && a >= 1 { return String(format: "%.0f", v) }
        return String(format: "%.3g", v)
    }

}
