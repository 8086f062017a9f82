import Foundation

/// The self-contained HTML page that `report` and `explain` write: one look (fonts, summary
/// cards, tables) around each page's own charts, and the page's data embedded as JSON.
enum HTMLPage {
    /// The page: `title`, a subtitle, a row of (label, value) cards, then `body`; `style` adds
    /// the page's own rules to the shared ones, `width` is the content's maximum width in pixels.
    static func render(title: String, subtitle: String, cards: [(String, String)], width: Int, style: String,
                       body: String) -> String {
        let cardHTML = cards.map { "<div class=\"card\"><div class=\"k\">\(escape($0.0))</div><div class=\"v\">\(escape($0.1))</div></div>" }.joined()
        return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(escape(title))</title>
        <style>
        body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #111827; background: #f9fafb; }
        main { max-width: \(width)px; margin: 0 auto; padding: 24px 32px 48px; }
        h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 10px; }
        .sub { color: #6b7280; margin-bottom: 18px; }
        .cards { display: flex; flex-wrap: wrap; gap: 10px; }
        .card { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px 14px; min-width: 110px; }
        .card .k { color: #6b7280; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
        .card .v { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
        table { border-collapse: collapse; background: #fff; width: 100%; font-variant-numeric: tabular-nums; font-size: 12.5px; }
        th, td { border-bottom: 1px solid #e5e7eb; padding: 5px 8px; text-align: right; }
        th { background: #f3f4f6; font-weight: 600; }
        \(style)
        </style></head>
        <body><main>
        <h1>\(escape(title))</h1>
        <div class="sub">\(escape(subtitle))</div>
        <div class="cards">\(cardHTML)</div>
        \(body)
        </main></body></html>
        """
    }

    /// `json` (a JSON value) in a `<script type="application/json">` element with this id, safe
    /// to embed (no `</` inside).
    static func embedded(_ json: Data, id: String) -> String {
        let text = String(decoding: json, as: UTF8.self).replacingOccurrences(of: "</", with: "<\\/")
        return "<script type=\"application/json\" id=\"\(id)\">\(text)</script>"
    }

    /// Text with the characters HTML gives a meaning escaped.
    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
