import Foundation
import Testing

/// `rec-dist report` writes a page that a real browser renders, holding the run's curves.
struct ReportTests {
    @Test func reportRendersInHeadlessChromiumAndHoldsTheCurves() throws {
        let data = try RecDist.synthData(rows: 2000)
        let dir = try RecDist.scratch("report")
        var out = try RecDist.single(["train", "--data", data, "--model", "dlrm", "--hash-buckets", "300",
                                      "--batch-size", "32", "--eval-every", "20", "--metrics-out", dir + "/m.jsonl", "--checkpoint-dir", dir + "/ck"])
        #expect(out.status == 0, "\(out.all)")
        out = try RecDist.single(["report", "--metrics", dir + "/m.jsonl", "--checkpoint", dir + "/ck", "--out", dir + "/r.html"])
        #expect(out.status == 0, "\(out.all)")
        let html = try String(contentsOfFile: dir + "/r.html", encoding: .utf8)
        #expect(!html.contains("http://") && !html.contains("https://"), "the page must not need the network")

        // The embedded data are the metrics log's records, in order.
        let records = try RecDist.metrics(dir + "/m.jsonl")
        let start = try #require(html.range(of: "<script type=\"application/json\" id=\"metrics\">"))
        let end = try #require(html.range(of: "</script>", range: start.upperBound..<html.endIndex))
        let embedded = try JSONSerialization.jsonObject(with: Data(html[start.upperBound..<end.lowerBound].utf8)) as! [[String: Any]]
        #expect(embedded.count == records.count && records.count == 3)   // 1800 rows / 32: 57 steps, evaluated at 20, 40 and 57
        #expect(embedded.map { $0["step"] as? Int } == records.map { $0["step"] as? Int })
        #expect(embedded.map { $0["auc"] as? Double } == records.map { $0["auc"] as? Double })

        // A browser renders it: the DOM has one polyline per curve, and a screenshot has content.
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let browser = try #require(chromium, "headless Chromium is needed (./launch.sh test installs Debian's chromium)")
        let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1600"]
        let dom = try RecDist.run(browser, flags + ["--dump-dom", "file://" + dir + "/r.html"], timeout: 120)
        #expect(dom.status == 0, "\(dom.stderr)")
        let polylines = dom.stdout.components(separatedBy: "<polyline").count - 1
        #expect(polylines >= 9, "rendered DOM has \(polylines) curves")
        #expect(dom.stdout.contains("evaluation AUC"))
        let shot = try RecDist.run(browser, flags + ["--screenshot=" + dir + "/r.png", "file://" + dir + "/r.html"], timeout: 120)
        #expect(shot.status == 0, "\(shot.stderr)")
        let png = try Data(contentsOf: URL(fileURLWithPath: dir + "/r.png"))
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]) && png.count > 20_000, "screenshot of \(png.count) bytes")
    }

    @Test func reportRefusesAnotherFile() throws {
        let dir = try RecDist.scratch("report-bad")
        try "step,auc\n1,0.5\n".write(toFile: dir + "/m.csv", atomically: true, encoding: .utf8)
        let out = try RecDist.single(["report", "--metrics", dir + "/m.csv", "--out", dir + "/r.html"])
        #expect(out.status == 1)
        #expect(out.stderr.contains("m.csv:1"), "\(out.stderr)")
    }
}
